//! Starting and stopping the daemon: connect to the pool and container,
//! mount (or take a `/dev/fd/N` that is already mounted), tell whoever
//! waits that the mount is live, serve until unmounted, SIGTERM or SIGINT.
//!
//! Invariant: the caller hears "mounted" only after the kernel completed the
//! FUSE handshake, and hears an error with nothing left mounted otherwise.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dfs::Dfs;
use fuser::{Config, MountOption, Session, SessionACL};
use libdaos::{Daos, DaosOpts, PoolFlags};

use crate::error::{Error, Result};
use crate::fs::{Core, DfuseFs};
use crate::opts::{Caching, Flag, Settings, CACHE_ATTRS};

/// Checks that `path` is an empty directory (a `/dev/fd/N` is not checked).
pub fn check_mountpoint(s: &Settings) -> Result<()> {
    if s.fuse_fd().is_some() {
        return Ok(());
    }
    let p = &s.mountpoint;
    let bad = |reason: String| Error::MountPoint {
        path: p.clone(),
        reason,
    };
    let md = std::fs::metadata(p).map_err(|e| bad(e.to_string()))?;
    if !md.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let mut it = std::fs::read_dir(p).map_err(|e| bad(e.to_string()))?;
    if it.next().is_some() {
        return Err(bad("directory is not empty".into()));
    }
    Ok(())
}

/// Connects to the pool and container and mounts the namespace; the caching
/// settings come out with the container's `dfuse-*` attributes applied.
pub async fn connect(s: &Settings) -> Result<(Dfs, Caching)> {
    let mut opts = DaosOpts {
        retry_for: Duration::from_secs(20),
        ..DaosOpts::default()
    };
    if let Some(sys) = &s.sys {
        opts.sys = sys.clone();
    }
    let daos = Daos::with_opts(opts)
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let flags = if s.read_only {
        PoolFlags::ReadOnly
    } else {
        PoolFlags::ReadWrite
    };
    let pool = daos
        .pool_connect(&s.pool, flags)
        .await
        .map_err(|e| Error::Connect(format!("pool \"{}\": {e}", s.pool)))?;
    let cont = pool
        .open_container(&s.cont, !s.read_only)
        .await
        .map_err(|e| {
            Error::Connect(format!(
                "container \"{}\" in pool \"{}\": {e}",
                s.cont, s.pool
            ))
        })?;
    let mut caching = Caching::new(s.caching, s.wb_cache);
    let attrs = cont
        .get_attrs(&[])
        .await
        .map_err(|e| Error::Connect(format!("container \"{}\": attributes: {e}", s.cont)))?;
    let ours: Vec<_> = attrs
        .into_iter()
        .filter(|(n, _)| CACHE_ATTRS.contains(&n.as_str()))
        .collect();
    caching.apply_attrs(&ours)?;
    let dfs = Dfs::mount(cont)
        .await
        .map_err(|e| Error::Connect(format!("container \"{}\": dfs mount: {e}", s.cont)))?;
    Ok((dfs, caching))
}

fn fuse_config(s: &Settings) -> Config {
    let mut mo = vec![
        MountOption::FSName("dfuse".into()),
        MountOption::Subtype("daos".into()),
        MountOption::DefaultPermissions,
    ];
    mo.push(if s.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    for f in &s.flags {
        let o = match f {
            Flag::NoSuid => MountOption::NoSuid,
            Flag::Suid => MountOption::Suid,
            Flag::NoDev => MountOption::NoDev,
            Flag::Dev => MountOption::Dev,
            Flag::NoExec => MountOption::NoExec,
            Flag::Exec => MountOption::Exec,
            Flag::NoAtime => MountOption::NoAtime,
            Flag::Atime => MountOption::Atime,
            Flag::Sync => MountOption::Sync,
            Flag::Async => MountOption::Async,
            Flag::DirSync => MountOption::DirSync,
        };
        // The last of a conflicting pair wins, as with mount(8).
        let opposite = |a: &MountOption| {
            matches!(
                (a, &o),
                (MountOption::Suid, MountOption::NoSuid)
                    | (MountOption::NoSuid, MountOption::Suid)
                    | (MountOption::Dev, MountOption::NoDev)
                    | (MountOption::NoDev, MountOption::Dev)
                    | (MountOption::Exec, MountOption::NoExec)
                    | (MountOption::NoExec, MountOption::Exec)
                    | (MountOption::Atime, MountOption::NoAtime)
                    | (MountOption::NoAtime, MountOption::Atime)
                    | (MountOption::Sync, MountOption::Async)
                    | (MountOption::Async, MountOption::Sync)
            )
        };
        mo.retain(|a| !opposite(a) && *a != o);
        mo.push(o);
    }
    let mut c = Config::default();
    c.mount_options = mo;
    // Several users need the kernel to let them in.
    c.acl = if s.allow_other || s.multi_user {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(1);
    c
}

/// Mounts and serves until the filesystem is unmounted or a signal asks to
/// stop. `mounted` is called once: with `Ok` once the mount is live, or with
/// the reason it could not be.
pub fn run(s: &Settings, mounted: impl FnOnce(Result<()>)) -> Result<()> {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.threads)
        .thread_name("dfuse")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let m = Error::Fuse(format!("tokio runtime: {e}"));
            mounted(Err(m.clone()));
            return Err(m);
        }
    };
    let setup = rt.block_on(async {
        let (dfs, caching) = connect(s).await?;
        tracing::info!(?caching, pool = %s.pool, cont = %s.cont, "connected");
        Core::new(dfs, caching)
            .await
            .map_err(|e| Error::Connect(format!("container \"{}\": root directory: {e}", s.cont)))
    });
    let core = match setup {
        Ok(c) => Arc::new(c),
        Err(m) => {
            mounted(Err(m.clone()));
            return Err(m);
        }
    };
    let fs = DfuseFs::new(core.clone(), rt.handle().clone(), s.multi_user);
    let config = fuse_config(s);
    let session = match s.fuse_fd() {
        Some(fd) => {
            // SAFETY: the descriptor was handed to us to own (libfuse's
            // /dev/fd/N convention); nothing else in this process uses it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Session::from_fd(fs, fd, config.acl, config.clone())
        }
        None => Session::new(fs, &s.mountpoint, &config),
    };
    let mut session = match session {
        Ok(x) => x,
        Err(e) => {
            let m = Error::Fuse(format!("mount {}: {e}", s.mountpoint.display()));
            mounted(Err(m.clone()));
            return Err(m);
        }
    };
    tracing::info!(mountpoint = %s.mountpoint.display(), "mounted");
    mounted(Ok(()));
    if s.fuse_fd().is_none() {
        let mp = s.mountpoint.clone();
        let _ = std::thread::Builder::new()
            .name("dfuse-readahead".into())
            .spawn(move || raise_read_ahead(&mp));
    }
    let mut unmounter = session.unmount_callable();
    let mountpoint = s.mountpoint.clone();
    let by_fd = s.fuse_fd().is_some();
    let ending = core.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot catch signals: {e}");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal: unmounting");
        if by_fd {
            // Whoever mounted it unmounts it; closing the device ends the session.
            let _ = tokio::time::timeout(SETTLE_FOR, ending.settle()).await;
            std::process::exit(0);
        }
        let r = tokio::task::spawn_blocking(move || unmounter.unmount()).await;
        if !matches!(r, Ok(Ok(()))) {
            // Busy: detach now, the kernel finishes when the last user leaves.
            lazy_unmount(&mountpoint);
        }
    });
    let r = session.run();
    tracing::info!("session ended");
    // Objects of files removed just before the end are still being freed.
    let settled = rt.block_on(async { tokio::time::timeout(SETTLE_FOR, core.settle()).await });
    if settled.is_err() {
        tracing::warn!("gave up waiting for background frees after {SETTLE_FOR:?}");
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    r.map_err(|e| Error::Fuse(format!("fuse session: {e}")))
}

/// How long an ending daemon waits for its background frees.
const SETTLE_FOR: Duration = Duration::from_secs(30);

/// Kernel readahead the mount gets when dfuse may set it (as root): the
/// kernel offers FUSE 128 KiB and takes no more in the handshake, so a
/// streaming read would wait for one 128 KiB READ at a time; with 4 MiB it
/// keeps four 1 MiB READs in flight, spread over the file's targets.
pub const READ_AHEAD_KB: u64 = 4096;

/// Raises the mount's backing-device readahead to [`READ_AHEAD_KB`] (never
/// lowers it). The `stat` returns once the FUSE handshake is done, which
/// would otherwise reset the value; not being allowed (not root) is normal.
fn raise_read_ahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(m) => m.dev(),
        Err(e) => {
            tracing::debug!("readahead: stat {}: {e}", mountpoint.display());
            return;
        }
    };
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let now = std::fs::read_to_string(&knob)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match now {
        Some(kb) if kb >= READ_AHEAD_KB => {}
        _ => match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
            Ok(()) => tracing::info!(kb = READ_AHEAD_KB, "readahead raised"),
            Err(e) => tracing::debug!("readahead: {knob}: {e}"),
        },
    }
}

fn lazy_unmount(p: &Path) {
    if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!(mountpoint = %p.display(), "lazy unmount: {e}");
    }
}
