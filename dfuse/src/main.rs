//! `dfuse`: parses, checks, daemonizes (unless `-f`) and runs.
//!
//! Without `-f` the process forks before any thread exists; the parent
//! waits on a pipe for the child to say the mount is live (exit 0) or why it
//! is not (exit 1, the reason on stderr).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use clap::Parser;
use dfuse::{check_mountpoint, resolve, run, Cli, Settings};
use nix::unistd::{fork, ForkResult};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let s = match resolve(cli).and_then(|s| check_mountpoint(&s).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dfuse: {e}");
            return ExitCode::from(2);
        }
    };
    if s.foreground {
        init_tracing();
        return match run(&s, |_| {}) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dfuse: {e}");
                ExitCode::FAILURE
            }
        };
    }
    daemonize(&s)
}

fn daemonize(s: &Settings) -> ExitCode {
    let (rd, wr) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dfuse: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: no other thread exists yet (nothing has started one), so the
    // child may run anything.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("dfuse: fork: {e}");
            ExitCode::FAILURE
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(wr);
            let mut msg = String::new();
            let mut f = std::fs::File::from(rd);
            if let Err(e) = f.read_to_string(&mut msg) {
                eprintln!("dfuse: waiting for the daemon: {e}");
                return ExitCode::FAILURE;
            }
            match msg.strip_prefix("ok") {
                Some(_) => ExitCode::SUCCESS,
                None if msg.is_empty() => {
                    eprintln!("dfuse: the daemon exited before the mount was ready");
                    ExitCode::FAILURE
                }
                None => {
                    eprintln!("dfuse: {}", msg.trim_end());
                    ExitCode::FAILURE
                }
            }
        }
        Ok(ForkResult::Child) => {
            drop(rd);
            let _ = nix::unistd::setsid();
            init_tracing();
            let mut pipe = Some(std::fs::File::from(wr));
            let r = run(s, |res| {
                if let Some(mut p) = pipe.take() {
                    let msg = match res {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let _ = p.write_all(msg.as_bytes());
                    if msg == "ok" {
                        detach_stdio();
                    }
                }
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// Points stdin and stdout at /dev/null and stderr at `D_LOG_FILE` (or
/// /dev/null), so the daemon holds no terminal or pipe of its caller.
fn detach_stdio() {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    let Ok(null) = null else { return };
    let log: Option<OwnedFd> = std::env::var_os("D_LOG_FILE").and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
            .map(OwnedFd::from)
    });
    let err_fd = log.as_ref().map_or(null.as_raw_fd(), |l| l.as_raw_fd());
    // SAFETY: dup2 onto the standard descriptors; both sources are open.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(err_fd, 2);
    }
    let _ = std::env::set_current_dir("/");
}
