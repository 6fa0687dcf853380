//! Every wire format of the stack, defined once: the management gRPC service, the
//! dRPC envelope and its framing, the engine and agent messages, credentials and
//! the DER error codes that cross process boundaries.
//!
//! Dependency rule: this crate depends on no other crate of the workspace; every
//! other crate may depend on it.

pub mod auth;
pub mod der;
pub mod drpc;
pub mod durable;
pub mod names;
pub mod opcode;
pub mod tls;
pub mod units;

pub use der::{DaosError, Der};

/// Generated messages of `drpc.proto`.
pub mod drpc_pb {
    tonic::include_proto!("drpc");
}

/// Generated messages of `srv.proto` (daos_server <-> daos_engine).
pub mod srv {
    tonic::include_proto!("srv");
}

/// Generated messages of `auth.proto` (credentials).
pub mod auth_pb {
    tonic::include_proto!("auth");
}

/// Generated messages and services of `mgmt.proto` (the management gRPC API).
pub mod mgmt {
    tonic::include_proto!("mgmt");
}

/// Generated messages of `pool.proto` (pool map, pool and container services).
pub mod pool {
    tonic::include_proto!("pool");
}

/// Generated messages of `obj.proto` (object I/O and distributed transactions).
pub mod obj {
    tonic::include_proto!("obj");
}

/// The version every binary of the stack reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default management port (`port` in daos_server.yml and daos_control.yml).
pub const DEFAULT_MGMT_PORT: u16 = 10001;

/// The default system name.
pub const DEFAULT_SYS_NAME: &str = "daos_server";

/// The default path of the agent's socket directory.
pub const DEFAULT_AGENT_RUNTIME_DIR: &str = "/var/run/daos_agent";

/// The agent socket's file name inside its runtime directory.
pub const AGENT_SOCK_NAME: &str = "daos_sock";

/// DAOS log masks accepted in configs and in `D_LOG_MASK`.
pub const LOG_MASKS: &[&str] = &[
    "TRACE", "DEBUG", "DBUG", "INFO", "NOTE", "NOTICE", "WARN", "WARNING", "ERR", "ERROR", "CRIT",
    "ALRT", "EMRG", "EMIT", "DISABLED",
];

/// Maps a DAOS log mask (`INFO`, `DEBUG`, `ERR`, or `INFO,MGMT=DEBUG`: the first
/// item sets the level) to a `tracing` filter level.
pub fn log_mask_level(mask: &str) -> Option<&'static str> {
    let first = mask
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    Some(match first.as_str() {
        "TRACE" => "trace",
        "DEBUG" | "DBUG" => "debug",
        "INFO" => "info",
        // DAOS's NOTE/NOTICE sits between INFO and WARN; tracing has no such level.
        "NOTE" | "NOTICE" | "WARN" | "WARNING" => "warn",
        "ERR" | "ERROR" | "CRIT" | "ALRT" | "EMRG" | "EMIT" => "error",
        "DISABLED" => "off",
        _ => return None,
    })
}
