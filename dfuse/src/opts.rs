//! Command line and `-o` options, resolved into one [`Settings`], and the
//! caching knobs ([`Caching`]) with DAOS's defaults and container attributes.
//!
//! Invariant: every option a user can pass is either understood, accepted as
//! a no-op with a reason (fstab bookkeeping), or rejected with its name.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::error::{Error, Result};

/// `dfuse MOUNTPOINT [POOL CONT]`, DAOS's flags.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "dfuse",
    version,
    about = "Mount a DAOS POSIX container with FUSE",
    disable_version_flag = true
)]
pub struct Cli {
    /// Where to mount (an empty directory), or /dev/fd/N for a /dev/fuse
    /// descriptor that is already mounted.
    pub mountpoint: Option<PathBuf>,
    /// Pool label or UUID.
    #[arg(value_name = "POOL")]
    pub pool_arg: Option<String>,
    /// Container label or UUID.
    #[arg(value_name = "CONT")]
    pub cont_arg: Option<String>,
    /// Mount point (instead of the first argument).
    #[arg(short = 'm', long = "mountpoint", value_name = "PATH")]
    pub mountpoint_flag: Option<PathBuf>,
    /// Pool label or UUID.
    #[arg(long)]
    pub pool: Option<String>,
    /// Container label or UUID.
    #[arg(long = "container", visible_alias = "cont")]
    pub container: Option<String>,
    /// DAOS system name.
    #[arg(long = "sys-name")]
    pub sys_name: Option<String>,
    /// Stay in the foreground.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Worker threads serving requests [default: half the CPUs, at least 1].
    #[arg(short = 't', long = "thread-count")]
    pub thread_count: Option<usize>,
    /// Event queues (accepted for DAOS compatibility; requests share one runtime).
    #[arg(short = 'e', long = "eq-count")]
    pub eq_count: Option<usize>,
    /// One worker thread.
    #[arg(short = 'S', long)]
    pub singlethread: bool,
    /// Kernel caching on (the default).
    #[arg(long = "enable-caching", overrides_with = "disable_caching")]
    pub enable_caching: bool,
    /// No kernel caching: timeouts 0 and direct I/O (close-to-open coherence).
    #[arg(long = "disable-caching", overrides_with = "enable_caching")]
    pub disable_caching: bool,
    /// Write-back cache on (the default when caching is on).
    #[arg(long = "enable-wb-cache", overrides_with = "disable_wb_cache")]
    pub enable_wb_cache: bool,
    /// Write-back cache off.
    #[arg(long = "disable-wb-cache", overrides_with = "enable_wb_cache")]
    pub disable_wb_cache: bool,
    /// Serve several users: new files belong to the caller's uid/gid.
    #[arg(long = "multi-user")]
    pub multi_user: bool,
    /// Mount options, comma separated (pool=, container=, ro, allow_other...).
    #[arg(short = 'o', action = ArgAction::Append, value_name = "OPTS")]
    pub options: Vec<String>,
    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    pub version: (),
}

/// Kernel flags dfuse passes to the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    NoSuid,
    Suid,
    NoDev,
    Dev,
    NoExec,
    Exec,
    NoAtime,
    Atime,
    Sync,
    Async,
    DirSync,
}

/// Everything dfuse needs to mount.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mountpoint: PathBuf,
    pub pool: String,
    pub cont: String,
    pub sys: Option<String>,
    pub foreground: bool,
    pub threads: usize,
    pub caching: bool,
    pub wb_cache: bool,
    pub multi_user: bool,
    pub read_only: bool,
    pub allow_other: bool,
    pub flags: Vec<Flag>,
}

impl Settings {
    /// The descriptor number when the mount point is `/dev/fd/N`.
    pub fn fuse_fd(&self) -> Option<i32> {
        self.mountpoint
            .to_str()
            .and_then(|s| s.strip_prefix("/dev/fd/"))
            .and_then(|n| n.parse::<i32>().ok())
    }
}

/// Options fstab and mount(8) pass that only matter to them.
const BOOKKEEPING: &[&str] = &[
    "defaults",
    "_netdev",
    "nofail",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nodiratime",
    "diratime",
    "nostrictatime",
    "loud",
    "silent",
];

/// Half the CPUs this process may run on, at least one. dfuse shares the
/// node's cores with the applications it serves (and, on a single-node
/// system, the engines): each extra runtime worker adds thread wake-ups to
/// every request (on 2 vCPUs, one worker instead of four halved the context
/// switches and cut dfuse's CPU per create from ~500 to ~370 µs), and only
/// large parallel transfers need more than one.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn set_once(slot: &mut Option<String>, what: &str, v: &str) -> Result<()> {
    match slot {
        Some(old) if old != v => Err(Error::Usage(format!(
            "{what} given twice: \"{old}\" and \"{v}\""
        ))),
        _ => {
            *slot = Some(v.to_string());
            Ok(())
        }
    }
}

/// Resolves the command line into [`Settings`]; the error names the bad input.
pub fn resolve(cli: Cli) -> Result<Settings> {
    let mut pool = None;
    let mut cont = None;
    let mut read_only = false;
    let mut allow_other = false;
    let mut flags = Vec::new();
    let mut unknown = Vec::new();
    for opt in cli.options.iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        match opt.split_once('=') {
            Some(("pool", v)) => set_once(&mut pool, "pool", v)?,
            Some(("container" | "cont", v)) => set_once(&mut cont, "container", v)?,
            // Naming and systemd bookkeeping: no meaning to the daemon.
            Some(("fsname" | "subtype" | "comment", _)) => {}
            Some((k, _)) if k.starts_with("x-") => {}
            Some(_) => unknown.push(opt.to_string()),
            None => match opt {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "allow_other" => allow_other = true,
                "default_permissions" => {}
                "nosuid" => flags.push(Flag::NoSuid),
                "suid" => flags.push(Flag::Suid),
                "nodev" => flags.push(Flag::NoDev),
                "dev" => flags.push(Flag::Dev),
                "noexec" => flags.push(Flag::NoExec),
                "exec" => flags.push(Flag::Exec),
                "noatime" => flags.push(Flag::NoAtime),
                "atime" => flags.push(Flag::Atime),
                "sync" => flags.push(Flag::Sync),
                "async" => flags.push(Flag::Async),
                "dirsync" => flags.push(Flag::DirSync),
                o if BOOKKEEPING.contains(&o) || o.starts_with("x-") => {}
                _ => unknown.push(opt.to_string()),
            },
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Usage(format!(
            "unknown mount option(s): {}",
            unknown.join(",")
        )));
    }
    if let Some(p) = &cli.pool {
        set_once(&mut pool, "pool", p)?;
    }
    if let Some(c) = &cli.container {
        set_once(&mut cont, "container", c)?;
    }
    let mut mountpoint = cli.mountpoint_flag.clone();
    let mut positional: Vec<String> = Vec::new();
    if let Some(m) = &cli.mountpoint {
        if mountpoint.is_none() {
            mountpoint = Some(m.clone());
        } else {
            // With -m the first positional is the pool.
            positional.push(m.to_string_lossy().into_owned());
        }
    }
    positional.extend(cli.pool_arg.iter().cloned());
    positional.extend(cli.cont_arg.iter().cloned());
    let mut it = positional.into_iter();
    if let Some(p) = it.next() {
        set_once(&mut pool, "pool", &p)?;
    }
    if let Some(c) = it.next() {
        set_once(&mut cont, "container", &c)?;
    }
    if let Some(extra) = it.next() {
        return Err(Error::Usage(format!("unexpected argument \"{extra}\"")));
    }
    let usage = |m: &str| Error::Usage(m.to_string());
    let mountpoint =
        mountpoint.ok_or_else(|| usage("no mount point given (dfuse MOUNTPOINT POOL CONT)"))?;
    let pool = pool
        .ok_or_else(|| usage("no pool given (dfuse MOUNTPOINT POOL CONT, --pool or -o pool=)"))?;
    let cont = cont.ok_or_else(|| {
        usage("no container given (dfuse MOUNTPOINT POOL CONT, --container or -o container=)")
    })?;
    let threads = if cli.singlethread {
        1
    } else {
        cli.thread_count.unwrap_or_else(default_threads).max(1)
    };
    let caching = !cli.disable_caching;
    Ok(Settings {
        mountpoint,
        pool,
        cont,
        sys: cli.sys_name.clone(),
        foreground: cli.foreground,
        threads,
        caching,
        wb_cache: caching && !cli.disable_wb_cache,
        multi_user: cli.multi_user,
        read_only,
        allow_other,
        flags,
    })
}

/// Kernel caching: how long the kernel may trust what dfuse told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caching {
    pub attr: Duration,
    pub dentry: Duration,
    /// The entry timeout of names that are directories.
    pub dentry_dir: Duration,
    pub ndentry: Duration,
    /// Keep the page cache across opens when the file did not change.
    pub data: bool,
    /// Write-back cache in the kernel.
    pub wb: bool,
    /// Open files with direct I/O (no page cache).
    pub direct_io: bool,
}

/// The container attributes DAOS reads for caching.
pub const CACHE_ATTRS: &[&str] = &[
    "dfuse-attr-time",
    "dfuse-dentry-time",
    "dfuse-dentry-dir-time",
    "dfuse-ndentry-time",
    "dfuse-data-cache",
    "dfuse-direct-io-disable",
];

impl Caching {
    /// DAOS's defaults (1 s timeouts), or everything off.
    pub fn new(enabled: bool, wb: bool) -> Caching {
        if enabled {
            Caching {
                attr: Duration::from_secs(1),
                dentry: Duration::from_secs(1),
                dentry_dir: Duration::from_secs(1),
                ndentry: Duration::from_secs(1),
                data: true,
                wb,
                direct_io: false,
            }
        } else {
            Caching {
                attr: Duration::ZERO,
                dentry: Duration::ZERO,
                dentry_dir: Duration::ZERO,
                ndentry: Duration::ZERO,
                data: false,
                wb: false,
                direct_io: true,
            }
        }
    }

    /// Applies the container's `dfuse-*` attributes (only when caching is on:
    /// `--disable-caching` wins).
    pub fn apply_attrs(&mut self, attrs: &[(String, Vec<u8>)]) -> Result<()> {
        if self.direct_io {
            return Ok(());
        }
        let mut dentry_dir = None;
        for (name, value) in attrs {
            let v = String::from_utf8_lossy(value);
            let v = v.trim_end_matches('\0').trim();
            let bad = || Error::Usage(format!("container attribute {name}=\"{v}\" is not valid"));
            match name.as_str() {
                "dfuse-attr-time" => self.attr = parse_duration(v).ok_or_else(bad)?,
                "dfuse-dentry-time" => self.dentry = parse_duration(v).ok_or_else(bad)?,
                "dfuse-dentry-dir-time" => dentry_dir = Some(parse_duration(v).ok_or_else(bad)?),
                "dfuse-ndentry-time" => self.ndentry = parse_duration(v).ok_or_else(bad)?,
                "dfuse-data-cache" => match v {
                    "off" | "false" | "no" | "0" | "0s" => self.data = false,
                    "on" | "true" | "yes" | "otoc" => self.data = true,
                    _ => {
                        parse_duration(v).ok_or_else(bad)?;
                        self.data = true;
                    }
                },
                "dfuse-direct-io-disable" => match v {
                    "on" | "true" | "yes" | "1" => self.direct_io = false,
                    "off" | "false" | "no" | "0" => {}
                    _ => return Err(bad()),
                },
                _ => {}
            }
        }
        // As DAOS's dfuse: a directory's entry timeout is the entry timeout
        // unless set on its own.
        self.dentry_dir = dentry_dir.unwrap_or(self.dentry);
        Ok(())
    }
}

/// `90`, `90s`, `5m`, `2h`, `1d` (DAOS's time attribute syntax).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "" | "s" | "S" => 1,
        "m" | "M" => 60,
        "h" | "H" => 3600,
        "d" | "D" => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(mul)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> std::result::Result<Settings, String> {
        let mut v = vec!["dfuse"];
        v.extend_from_slice(args);
        resolve(Cli::try_parse_from(v).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn forms() {
        let s = parse(&["/mnt/d", "tank", "c1"]).unwrap();
        assert_eq!((s.pool.as_str(), s.cont.as_str()), ("tank", "c1"));
        let s = parse(&["/mnt/d", "--pool", "tank", "--cont", "c1", "-f"]).unwrap();
        assert_eq!((s.pool.as_str(), s.cont.as_str()), ("tank", "c1"));
        assert!(s.foreground);
        let s = parse(&[
            "/mnt/d",
            "-o",
            "rw,nosuid,nodev,noatime,_netdev,nofail,defaults,pool=tank,container=c1",
        ])
        .unwrap();
        assert_eq!((s.pool.as_str(), s.cont.as_str()), ("tank", "c1"));
        assert_eq!(s.flags, vec![Flag::NoSuid, Flag::NoDev, Flag::NoAtime]);
        let s = parse(&["-m", "/mnt/d", "tank", "c1", "-o", "ro,allow_other"]).unwrap();
        assert!(s.read_only && s.allow_other);
        assert_eq!(s.mountpoint, PathBuf::from("/mnt/d"));
        let e = parse(&["/mnt/d", "tank", "c1", "-o", "bogus,rw,frob=1"]).unwrap_err();
        assert_eq!(e, "unknown mount option(s): bogus,frob=1");
        assert!(parse(&["/mnt/d", "tank"])
            .unwrap_err()
            .contains("no container"));
        assert!(parse(&["/mnt/d", "tank", "c1", "--pool", "other"])
            .unwrap_err()
            .contains("pool given twice"));
        let s = parse(&["/mnt/d", "tank", "c1", "--disable-caching"]).unwrap();
        assert!(!s.caching && !s.wb_cache);
        let s = parse(&["/dev/fd/5", "tank", "c1", "-S", "-t", "8"]).unwrap();
        assert_eq!((s.fuse_fd(), s.threads), (Some(5), 1));
        assert_eq!(
            parse(&["/mnt/d", "tank", "c1", "-t", "3"]).unwrap().threads,
            3
        );
        let cpus = std::thread::available_parallelism().unwrap().get();
        let s = parse(&["/mnt/d", "tank", "c1"]).unwrap();
        assert_eq!(s.threads, (cpus / 2).max(1));
    }

    #[test]
    fn caching_attrs() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
        let mut c = Caching::new(true, true);
        c.apply_attrs(&[
            ("dfuse-attr-time".into(), b"10s".to_vec()),
            ("dfuse-ndentry-time".into(), b"0\0".to_vec()),
            ("dfuse-data-cache".into(), b"off".to_vec()),
        ])
        .unwrap();
        assert_eq!(c.attr, Duration::from_secs(10));
        assert_eq!(c.ndentry, Duration::ZERO);
        assert!(!c.data);
        assert!(c
            .apply_attrs(&[("dfuse-dentry-time".into(), b"soon".to_vec())])
            .is_err());
        let mut off = Caching::new(false, true);
        off.apply_attrs(&[("dfuse-attr-time".into(), b"10s".to_vec())])
            .unwrap();
        assert_eq!(off, Caching::new(false, false));
    }

    #[test]
    fn a_directorys_entry_timeout_follows_the_entry_timeout_unless_set() {
        let c = Caching::new(true, true);
        assert_eq!(c.dentry_dir, c.dentry);
        let mut c = Caching::new(true, true);
        c.apply_attrs(&[("dfuse-dentry-time".into(), b"7".to_vec())])
            .unwrap();
        assert_eq!(c.dentry_dir, Duration::from_secs(7));
        let mut c = Caching::new(true, true);
        // Either order.
        c.apply_attrs(&[
            ("dfuse-dentry-dir-time".into(), b"5m".to_vec()),
            ("dfuse-dentry-time".into(), b"2s".to_vec()),
        ])
        .unwrap();
        assert_eq!(
            (c.dentry, c.dentry_dir),
            (Duration::from_secs(2), Duration::from_secs(300))
        );
        assert!(c
            .apply_attrs(&[("dfuse-dentry-dir-time".into(), b"later".to_vec())])
            .is_err());
        assert_eq!(Caching::new(false, true).dentry_dir, Duration::ZERO);
    }
}
