// refinery embeds migration files with include_str!, which notices edits but not new files;
// rerunning on any change in the folder makes a new migration part of the next build.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
