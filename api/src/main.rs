#[tokio::main]
async fn main() -> std::process::ExitCode {
    egec_api::cli::main().await
}
