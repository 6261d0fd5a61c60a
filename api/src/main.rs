// Event decoding allocates many small strings and JSON values; mimalloc handles that pattern
// markedly faster than the system allocator (profiles of replay showed malloc/free at about a
// third of the time). It runs without transparent huge pages (`huge_pages.rs` says why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    egec_api::huge_pages::disable_transparent_huge_pages();
    egec_api::cli::main().await
}
