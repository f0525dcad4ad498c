#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pixelpatrol::cli::main().await
}
