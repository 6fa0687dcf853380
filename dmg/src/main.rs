//! dmg: parses the command line, sets up logging and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<ExitCode> {
    let cli = dmg::Cli::parse();
    // -d: debug for dmg and the gRPC stack, without the transport's frame-level noise.
    let filter = if cli.debug {
        EnvFilter::new("debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(anyhow::Error::msg)?;
    Ok(dmg::run(cli))
}
