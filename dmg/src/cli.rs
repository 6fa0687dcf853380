//! dmg's command line, with DAOS's command names and flags. Values clap can
//! check alone (sizes, rank lists) are parsed here; checks that span flags live
//! with the commands, so their errors reach `-j` as JSON.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A rank list such as `0-3,5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankList(pub Vec<u32>);

fn rank_list(s: &str) -> Result<RankList, String> {
    proto::units::parse_ranks(s).map(RankList)
}

fn size(s: &str) -> Result<u64, String> {
    proto::units::parse_size(s)
}

/// The heading of the flags every subcommand accepts.
const GLOBAL: &str = "Global options";

/// dmg: administer a DAOS system: its ranks, storage and pools.
#[derive(Debug, Parser)]
#[command(name = "dmg", version = proto::VERSION, max_term_width = 100)]
pub struct Cli {
    /// Client config file (default /etc/daos/daos_control.yml if it exists)
    #[arg(short = 'o', long = "config-path", global = true, help_heading = GLOBAL, value_name = "FILE")]
    pub config_path: Option<PathBuf>,

    /// Servers to talk to, overriding the config's hostlist: h1[:port],h2,node[1-4]
    #[arg(short = 'l', long = "host-list", global = true, help_heading = GLOBAL, value_name = "HOSTS")]
    pub host_list: Option<String>,

    /// Plain-text gRPC, overriding transport_config.allow_insecure
    #[arg(short = 'i', long, global = true, help_heading = GLOBAL)]
    pub insecure: bool,

    /// Print the response as JSON
    #[arg(short = 'j', long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Debug logging on stderr
    #[arg(short = 'd', long, global = true, help_heading = GLOBAL)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ranks of the system: query, stop, start, the management service leader
    #[command(subcommand)]
    System(SystemCommand),
    /// Storage of the servers: scan, format, usage
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Pools: create, list, query, destroy, properties
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Print the version of each server
    ServerVersion,
    /// Print dmg's version
    Version,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show the state of the system's ranks
    Query {
        /// One row per rank, with its UUID, address and fault domain
        #[arg(short, long)]
        verbose: bool,
        /// Only these ranks, e.g. 0-3,5
        #[arg(short, long, value_name = "RANKS", value_parser = rank_list)]
        ranks: Option<RankList>,
    },
    /// Stop ranks (all by default)
    Stop {
        /// Skip the engines' PrepShutdown and kill them with SIGKILL
        #[arg(long)]
        force: bool,
        /// Only these ranks, e.g. 0-3,5
        #[arg(short, long, value_name = "RANKS", value_parser = rank_list)]
        ranks: Option<RankList>,
    },
    /// Start stopped ranks (all by default)
    Start {
        /// Only these ranks, e.g. 0-3,5
        #[arg(short, long, value_name = "RANKS", value_parser = rank_list)]
        ranks: Option<RankList>,
    },
    /// Show the management service leader and replicas
    LeaderQuery,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Show the storage of every host
    Scan {
        /// List each engine's SCM mount and NVMe devices
        #[arg(short, long)]
        verbose: bool,
    },
    /// Prepare every host's storage for its engines
    Format {
        /// Reformat storage that is already formatted
        #[arg(long)]
        force: bool,
    },
    /// Query storage
    #[command(subcommand)]
    Query(StorageQueryCommand),
}

#[derive(Debug, Subcommand)]
pub enum StorageQueryCommand {
    /// Show used and free space of every host
    Usage,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool
    Create(Box<PoolCreateArgs>),
    /// List the system's pools
    List {
        /// Add UUID, service replicas and per-tier columns
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show a pool's state and space
    Query {
        /// Pool label or UUID
        pool: String,
    },
    /// Destroy a pool
    Destroy {
        /// Pool label or UUID
        pool: String,
        /// Destroy even if some ranks cannot be reached (their shards are removed when they
        /// rejoin)
        #[arg(short, long)]
        force: bool,
        /// Also destroy the pool's containers (accepted; no effect until containers exist)
        #[arg(short, long)]
        recursive: bool,
    },
    /// Show pool properties
    GetProp {
        /// Pool label or UUID
        pool: String,
        /// Only these properties: name[,name...]
        names: Option<String>,
    },
    /// Set pool properties
    SetProp {
        /// Pool label or UUID
        pool: String,
        /// name:value[,name:value...]
        props: Option<String>,
        /// name:value[,name:value...] (same as the positional form)
        #[arg(short = 'P', long, value_name = "PROPS")]
        properties: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PoolCreateArgs {
    /// Pool label
    pub label: Option<String>,

    /// Pool label (same as the positional form)
    #[arg(long = "label", value_name = "LABEL")]
    pub label_flag: Option<String>,

    /// Total pool size, split over the storage tiers by --tier-ratio (e.g. 8GiB, 1T)
    #[arg(short = 'z', long, value_name = "SIZE", value_parser = size)]
    pub size: Option<u64>,

    /// Percentage of --size for each tier: SCM,NVMe (default 6,94)
    #[arg(short = 't', long, value_name = "RATIO")]
    pub tier_ratio: Option<String>,

    /// SCM size per rank (manual allocation)
    #[arg(short = 's', long, value_name = "SIZE", value_parser = size)]
    pub scm_size: Option<u64>,

    /// NVMe size per rank (manual allocation, with --scm-size)
    #[arg(short = 'n', long, value_name = "SIZE", value_parser = size)]
    pub nvme_size: Option<u64>,

    /// Number of ranks to use (default: all)
    #[arg(short = 'k', long, value_name = "N")]
    pub nranks: Option<u32>,

    /// Ranks to use, e.g. 0-3,5 (default: all)
    #[arg(short = 'r', long, value_name = "RANKS", value_parser = rank_list)]
    pub ranks: Option<RankList>,

    /// Number of pool service replicas
    #[arg(short = 'v', long, value_name = "N")]
    pub nsvc: Option<u32>,

    /// Pool properties: name:value[,name:value...]
    #[arg(short = 'P', long, value_name = "PROPS")]
    pub properties: Option<String>,

    /// Owner user, USER[@] (default: you)
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Owner group, GROUP[@] (default: your group)
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,

    /// File of access control entries, one per line, '#' comments
    #[arg(short = 'a', long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["dmg", "pool", "list", "-j", "-l", "h1", "-i", "-d"]).unwrap();
        assert!(cli.json && cli.insecure && cli.debug);
        assert_eq!(cli.host_list.as_deref(), Some("h1"));
    }

    #[test]
    fn ranks_and_sizes_parse() {
        let cli = Cli::try_parse_from(["dmg", "system", "query", "-r", "0-2,5"]).unwrap();
        match cli.command {
            Command::System(SystemCommand::Query { ranks, .. }) => {
                assert_eq!(ranks, Some(RankList(vec![0, 1, 2, 5])))
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["dmg", "system", "query", "-r", "x"]).is_err());
        assert!(Cli::try_parse_from(["dmg", "pool", "create", "t", "-z", "8XB"]).is_err());
    }
}
