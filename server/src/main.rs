//! daos_server: parses the command line, loads the config, sets up logging and
//! runs the server until SIGTERM/SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::config::ServerConfig;
use tokio_util::sync::CancellationToken;

/// The DAOS control plane server.
#[derive(Parser, Debug)]
#[command(name = "daos_server", version = proto::VERSION)]
struct Cli {
    /// Log at debug level to stderr as well.
    #[arg(short = 'd', long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the server (and its engines) from a config file.
    Start {
        /// Path to daos_server.yml.
        #[arg(
            short = 'o',
            long = "config",
            default_value = "/etc/daos/daos_server.yml"
        )]
        config: PathBuf,
    },
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.cmd {
        Cmd::Version => {
            println!("daos_server version {}", proto::VERSION);
            return Ok(());
        }
        Cmd::Start { config } => config,
    };
    let cfg = match ServerConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR: daos_server: {e}");
            std::process::exit(1);
        }
    };
    init_logging(&cfg, cli.debug)?;
    let engine_bin = engine_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = format!("0.0.0.0:{}", cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding the control port {addr}"))?;
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                tracing::error!("cannot handle SIGTERM");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            s2.cancel();
        });
        server::run(cfg, listener, engine_bin, shutdown)
            .await
            .map_err(|e| {
                tracing::error!("daos_server failed: {e}");
                anyhow::anyhow!("daos_server: {e}")
            })
    })
}

/// daos_engine sits next to daos_server (as cargo and packages install them).
fn engine_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating daos_server")?;
    let bin = me.with_file_name("daos_engine");
    if bin.exists() {
        return Ok(bin);
    }
    anyhow::bail!(
        "daos_engine not found at {}: install it next to daos_server",
        bin.display()
    )
}

/// Logs go to control_log_file (else stderr) at control_log_mask; RUST_LOG overrides.
fn init_logging(cfg: &ServerConfig, debug: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let level = if debug {
        "debug"
    } else {
        proto::log_mask_level(&cfg.control_log_mask).unwrap_or("info")
    };
    // openraft is chatty at info; its state changes we log ourselves.
    let default = format!("{level},openraft=warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match &cfg.control_log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("control_log_file {}", p.display()))?;
            b.with_writer(std::sync::Mutex::new(f)).init();
        }
        None => b.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
