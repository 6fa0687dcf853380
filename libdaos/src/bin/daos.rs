//! `daos`: the DAOS user tool (pools and containers).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = libdaos::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("D_LOG_MASK")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(libdaos::cli::run(cli).await);
}
