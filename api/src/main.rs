// Event decoding allocates many small strings and JSON values; mimalloc handles that pattern
// markedly faster than the system allocator (profiles of replay showed malloc/free at about a
// third of the time). It is built without transparent huge pages; the workspace Cargo.toml says
// why.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    egec_api::cli::main().await
}
