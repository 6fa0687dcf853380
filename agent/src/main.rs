//! `daos_agent`: parses the command line and config, starts tracing, and runs
//! the agent until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agent::config::DEFAULT_CONFIG_PATH;
use agent::Config;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The DAOS client-node agent: credentials and attach info for local clients.
#[derive(Debug, Parser)]
#[command(name = "daos_agent", version = proto::VERSION)]
struct Cli {
    /// Path to the agent configuration file (default /etc/daos/daos_agent.yml if present).
    #[arg(short = 'o', long = "config-path", global = true)]
    config_path: Option<PathBuf>,
    /// Talk to the servers without TLS (transport_config.allow_insecure: true).
    #[arg(short = 'i', long, global = true)]
    insecure: bool,
    /// Log at DEBUG level.
    #[arg(short, long, global = true)]
    debug: bool,
    /// JSON output (version, dump-attachinfo).
    #[arg(short, long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the agent (the default when no command is given).
    Start(StartArgs),
    /// Print the version.
    Version,
    /// Ask the running agent for the attach info it serves.
    DumpAttachinfo,
}

#[derive(Debug, Default, Args)]
struct StartArgs {
    /// Directory of the agent socket (overrides runtime_dir).
    #[arg(short = 's', long = "runtime_dir")]
    runtime_dir: Option<PathBuf>,
    /// Log file (overrides log_file).
    #[arg(short = 'l', long = "logfile")]
    logfile: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Version) => version(cli.json),
        Some(Command::DumpAttachinfo) => dump_attachinfo(&cli),
        Some(Command::Start(args)) => start(&cli, args),
        None => start(&cli, &StartArgs::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daos_agent: {}", proto::names::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn version(json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::json!({ "name": "daos_agent", "version": proto::VERSION })
        );
    } else {
        println!("daos_agent version {}", proto::VERSION);
    }
    Ok(())
}

/// The config: `-o`, else the default file if present, else the defaults; with
/// the command-line overrides applied and validated.
fn load_config(cli: &Cli, args: &StartArgs) -> anyhow::Result<(Config, String)> {
    let (mut cfg, origin) = match &cli.config_path {
        Some(p) => (Config::from_file(p)?, p.display().to_string()),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
            Config::from_file(Path::new(DEFAULT_CONFIG_PATH))?,
            DEFAULT_CONFIG_PATH.to_string(),
        ),
        None => (Config::default(), "built-in defaults".to_string()),
    };
    if cli.insecure {
        cfg.transport_config.allow_insecure = true;
    }
    if let Some(d) = &args.runtime_dir {
        cfg.runtime_dir = d.clone();
    }
    if let Some(f) = &args.logfile {
        cfg.log_file = Some(f.clone());
    }
    cfg.validate(&origin)?;
    Ok((cfg, origin))
}

fn start(cli: &Cli, args: &StartArgs) -> anyhow::Result<()> {
    let (cfg, origin) = load_config(cli, args)?;
    agent::logging::init(&cfg, cli.debug)?;
    tracing::info!("config: {origin}");
    for w in cfg.warnings() {
        tracing::warn!("config {origin}: {w}");
    }
    let logs_to_file = cfg.log_file.is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        // Handlers go in before the socket exists, so a signal never meets the
        // default action once clients can see the agent.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let token = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            token.cancel();
        });
        agent::run(cfg, shutdown).await.map_err(anyhow::Error::from)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if let (Err(e), true) = (&result, logs_to_file) {
        tracing::error!(
            "daos_agent failed: {}",
            proto::names::error_chain(e.as_ref())
        );
    }
    result
}

fn dump_attachinfo(cli: &Cli) -> anyhow::Result<()> {
    let (cfg, _) = load_config(cli, &StartArgs::default())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let resp = rt.block_on(agent::dump::fetch(&cfg.socket_path(), &cfg.name))?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&agent::dump::to_json(&resp))?
        );
    } else {
        print!("{}", agent::dump::to_text(&resp));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["daos_agent", "start", "-o", "/x.yml", "-d", "-s", "/run/a"]);
        assert!(c.debug);
        assert!(matches!(
            c.command,
            Some(Command::Start(StartArgs {
                runtime_dir: Some(_),
                ..
            }))
        ));
        let c = Cli::parse_from(["daos_agent", "-j", "version"]);
        assert!(c.json && matches!(c.command, Some(Command::Version)));
    }
}
