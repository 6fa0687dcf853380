//! daos_engine: parses DAOS-style arguments and environment, then runs the engine.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The DAOS data plane engine. daos_server starts it; run by hand only to debug.
#[derive(Parser, Debug)]
#[command(name = "daos_engine", version = proto::VERSION)]
struct Cli {
    /// Number of targets (VOS shards, one thread each).
    #[arg(short = 't', long = "targets")]
    targets: u32,
    /// Number of helper streams: network threads beside the main one.
    #[arg(short = 'x', long = "xshelpernr", default_value_t = 0)]
    helpers: u32,
    /// System (group) name.
    #[arg(short = 'g', long = "group", default_value = proto::DEFAULT_SYS_NAME)]
    group: String,
    /// Directory of the dRPC sockets shared with daos_server.
    #[arg(short = 'd', long = "socket_dir")]
    socket_dir: PathBuf,
    /// The SCM mount this engine owns.
    #[arg(short = 's', long = "storage")]
    scm_mount: PathBuf,
    /// The bulk device config written by daos_server (daos_nvme.conf).
    #[arg(short = 'n', long = "nvme")]
    nvme_conf: Option<PathBuf>,
    /// Index of this engine in daos_server.yml.
    #[arg(short = 'I', long = "instance_idx", default_value_t = 0)]
    instance_idx: u32,
    /// First core to pin to.
    #[arg(short = 'f', long = "firstcore", default_value_t = 0)]
    first_core: u32,
    /// Fabric provider (else D_PROVIDER).
    #[arg(long, env = "D_PROVIDER", default_value = "ofi+tcp")]
    provider: String,
    /// Fabric interface (else D_INTERFACE).
    #[arg(long, env = "D_INTERFACE", default_value = "lo")]
    interface: String,
    /// Fabric port (else D_PORT).
    #[arg(long, env = "D_PORT")]
    port: u16,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging()?;
    let args = engine::EngineArgs {
        targets: cli.targets,
        nr_xs_helpers: cli.helpers,
        group: cli.group,
        socket_dir: cli.socket_dir,
        scm_mount: cli.scm_mount,
        nvme_conf: cli.nvme_conf,
        instance_idx: cli.instance_idx,
        first_core: cli.first_core,
        provider: cli.provider,
        fabric_iface: cli.interface,
        fabric_port: cli.port,
    };
    if args.targets == 0 || args.targets > 64 {
        anyhow::bail!(
            "-t/--targets must be between 1 and 64, got {}",
            args.targets
        );
    }
    if args.nr_xs_helpers > args.targets {
        anyhow::bail!(
            "-x/--xshelpernr ({}) must not exceed -t/--targets ({})",
            args.nr_xs_helpers,
            args.targets
        );
    }
    // The network runtime is DAOS's main stream plus its helper streams: on
    // a node the engine shares with clients, every extra worker adds
    // wake-ups to each request (docs/perf.md: one worker instead of two
    // doubled KV throughput at depth 64 on 2 vCPUs).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1 + args.nr_xs_helpers as usize)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!("cannot handle SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            s2.cancel();
        });
        let idx = args.instance_idx;
        engine::run(args, shutdown).await.map_err(|e| {
            tracing::error!(instance = idx, "engine failed: {e}");
            anyhow::anyhow!("daos_engine {idx}: {e}")
        })
    })
}

/// Logs go to D_LOG_FILE (else stderr) at the level of D_LOG_MASK (else RUST_LOG, else INFO).
fn init_logging() -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let level = std::env::var("D_LOG_MASK")
        .ok()
        .and_then(|m| proto::log_mask_level(&m))
        .unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match std::env::var_os("D_LOG_FILE") {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| anyhow::anyhow!("D_LOG_FILE {}: {e}", PathBuf::from(&p).display()))?;
            b.with_writer(std::sync::Mutex::new(f)).init();
        }
        None => b.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
