//! Tracing setup for the daemon: level from `log_mask` (or `control_log_mask`),
//! `-d` forcing DEBUG, `RUST_LOG` overriding both; output to `log_file`
//! (appended) or stderr.
//!
//! The HTTP/2 and TLS libraries under tonic log every frame at DEBUG; unless
//! `RUST_LOG` says otherwise they are held at INFO or the agent's level,
//! whichever is quieter.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::error::Error;

const NOISY: &[&str] = &["h2", "hyper", "hyper_util", "tower", "rustls", "tonic"];

/// The filter for `level`, unless `RUST_LOG` is set.
fn filter(level: LevelFilter) -> EnvFilter {
    if let Ok(v) = std::env::var(EnvFilter::DEFAULT_ENV) {
        if !v.trim().is_empty() {
            return EnvFilter::builder()
                .with_default_directive(level.into())
                .parse_lossy(v);
        }
    }
    let quiet = level.min(LevelFilter::INFO);
    let mut f = EnvFilter::default().add_directive(level.into());
    for target in NOISY {
        if let Ok(d) = format!("{target}={quiet}").parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &Config, debug: bool) -> Result<(), Error> {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        config.log_level()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_target(false);
    // A second call (tests) keeps the first subscriber.
    match &config.log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io("log_file", path, e))?;
            let _ = builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
    Ok(())
}
