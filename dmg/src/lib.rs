//! dmg: the DAOS admin CLI. It reads daos_control.yml, talks gRPC to
//! daos_server's management service (MgmtSvc) and prints tables for people or
//! DAOS's JSON envelope for scripts (`-j`).
//!
//! Dependency rule: this crate uses `proto` (the gRPC client and messages, DER
//! codes, size and rank formats) and no other crate of the workspace.
//!
//! Flow: parse ([`Cli`]), check the arguments and load every file a command
//! needs (config, certificates, ACL file) synchronously, then run the
//! requests on a single-threaded tokio runtime. Every command returns an
//! [`output::Outcome`] holding both renderings; only [`run`] prints.

mod cli;
mod config;
mod control;
mod error;
mod fanout;
mod hostlist;
mod output;
mod pool;
mod storage;
mod system;
mod table;
mod version;

use std::process::ExitCode;

pub use cli::Cli;
pub use error::Error;

use cli::{Command, StorageCommand, SystemCommand};
use config::ControlConfig;
use control::ControlClient;
use output::Outcome;

/// What every command needs to talk to the servers.
pub(crate) struct Context {
    pub client: ControlClient,
    /// The system name from daos_control.yml.
    pub sys_name: String,
}

/// A command with its arguments checked, ready to send.
enum Job {
    System(SystemCommand),
    Storage(StorageCommand),
    Pool(pool::Job),
    ServerVersion,
}

impl Job {
    async fn run(self, ctx: &Context) -> Result<Outcome, Error> {
        match self {
            Job::System(cmd) => system::run(cmd, ctx).await,
            Job::Storage(cmd) => storage::run(cmd, ctx).await,
            Job::Pool(job) => job.run(ctx).await,
            Job::ServerVersion => Ok(version::server_version(ctx).await),
        }
    }
}

/// Runs a parsed command line, prints its result and returns the exit code.
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    if output::emit(execute(cli), json) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn execute(cli: Cli) -> Result<Outcome, Error> {
    let job = match cli.command {
        Command::Version => return Ok(version::render_version()),
        Command::System(cmd) => Job::System(cmd),
        Command::Storage(cmd) => Job::Storage(cmd),
        Command::Pool(cmd) => Job::Pool(pool::Job::prepare(cmd)?),
        Command::ServerVersion => Job::ServerVersion,
    };
    let cfg = ControlConfig::resolve(cli.config_path.as_deref())?;
    let addrs = cfg.addresses(cli.host_list.as_deref())?;
    let client = ControlClient::new(&cfg, addrs, cli.insecure)?;
    tracing::debug!(hosts = ?client.addrs(), "servers");
    let ctx = Context {
        client,
        sys_name: cfg.name,
    };
    if let (Job::Pool(p), false) = (&job, cli.json) {
        if let Some(announce) = p.announce() {
            output::print_stdout(announce);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(job.run(&ctx))
}
