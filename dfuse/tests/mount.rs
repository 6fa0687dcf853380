//! dfuse through a real mount: the real binary (foreground and daemonized,
//! and through mount.fuse3 as fstab does) over a real system, exercised with
//! ordinary syscalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use testkit::{bin_dir, wait_for, System};

fn dfuse_bin() -> PathBuf {
    let p = bin_dir().join("dfuse");
    assert!(
        p.exists(),
        "{} missing: cargo build --workspace --bins",
        p.display()
    );
    p
}

fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// The pid of the dfuse serving `mnt` (found by its command line).
fn dfuse_pid(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_dfuse = args
            .first()
            .is_some_and(|a| a.ends_with(b"dfuse") || a == b"dfuse");
        if is_dfuse && args.contains(&want) {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                return Some(pid);
            }
        }
    }
    None
}

/// A mount made by a test: unmounted and its daemon stopped on drop.
struct Mounted {
    path: PathBuf,
    child: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id() as i32)
            .or_else(|| dfuse_pid(&self.path));
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.path)
                .status();
        }
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

struct Env {
    sys: System,
    agent: PathBuf,
}

fn setup() -> Env {
    let (sys, agent) = testkit::posix_system();
    Env { sys, agent }
}

impl Env {
    fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.sys.path(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn dfuse(&self, args: &[&str]) -> Command {
        let mut c = Command::new(dfuse_bin());
        c.args(args)
            .env("DAOS_AGENT_DRPC_DIR", &self.agent)
            .stdin(Stdio::null());
        c
    }

    /// `dfuse` run to completion (daemonizing or failing).
    fn dfuse_out(&self, args: &[&str]) -> Output {
        self.dfuse(args).output().unwrap()
    }

    /// The container `fs` mounted by a daemonized dfuse on mountpoint `name`.
    fn mounted(&self, name: &str) -> Mounted {
        let m = self.mountpoint(name);
        let o = self.dfuse_out(&[m.to_str().unwrap(), "tank", "fs"]);
        assert!(o.status.success(), "{o:?}");
        Mounted {
            path: m,
            child: None,
        }
    }
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Every operation through a foreground dfuse, then SIGTERM.
/// O_DIRECT handles (direct I/O, parallel writes) and buffered ones on one
/// file see each other's data: dirty pages are written before a direct read,
/// and a direct write is not hidden by cached pages.
fn direct_and_buffered_agree(mnt: &Path) {
    use std::os::unix::fs::FileExt;
    let p = mnt.join("direct-mix");
    let buffered = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    buffered.write_all_at(&[b'a'; 8192], 0).unwrap();
    let direct = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .unwrap();
    // O_DIRECT wants aligned buffers: a page-aligned slice of a larger one.
    let mut raw = vec![0u8; 3 * 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + 8192];
    assert_eq!(direct.read_at(buf, 0).unwrap(), 8192);
    assert!(
        buf.iter().all(|b| *b == b'a'),
        "direct read sees buffered writes"
    );
    buf[..4096].fill(b'b');
    assert_eq!(direct.write_at(&buf[..4096], 0).unwrap(), 4096);
    let mut back = vec![0u8; 8192];
    buffered.read_exact_at(&mut back, 0).unwrap();
    assert!(
        back[..4096].iter().all(|b| *b == b'b'),
        "buffered read sees direct writes"
    );
    assert!(back[4096..].iter().all(|b| *b == b'a'));
}

fn flock_of(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = start;
    l.l_len = len;
    l
}

/// POSIX record locks belong to processes: a child locks bytes 0..100 of
/// `path`; this process sees the lock (F_GETLK names the child), cannot take
/// it, may lock the bytes after it, and gets it once the child exits.
fn fcntl_locks_between_processes(path: &Path) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut locked = [0i32; 2];
    let mut release = [0i32; 2];
    // SAFETY: plain pipe/fork; the child only calls async-signal-safe
    // functions (fcntl, write, read, _exit) before it exits.
    unsafe {
        assert_eq!(libc::pipe(locked.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(release.as_mut_ptr()), 0);
    }
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        unsafe {
            let l = flock_of(libc::F_WRLCK, 0, 100);
            let ok: u8 = (libc::fcntl(fd, libc::F_SETLK, &l) == 0).into();
            libc::write(locked[1], (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(release[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let mut ok = 0u8;
    assert_eq!(
        unsafe { libc::read(locked[0], (&mut ok as *mut u8).cast(), 1) },
        1
    );
    assert_eq!(ok, 1, "the child took its lock");
    let mut probe = flock_of(libc::F_WRLCK, 50, 10);
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETLK, &mut probe) }, 0);
    assert_eq!(i32::from(probe.l_type), libc::F_WRLCK);
    assert_eq!(probe.l_pid, child, "F_GETLK names the holder");
    let want = flock_of(libc::F_WRLCK, 50, 10);
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLK, &want) }, -1);
    let e = std::io::Error::last_os_error().raw_os_error();
    assert!(
        matches!(e, Some(libc::EAGAIN) | Some(libc::EACCES)),
        "{e:?}"
    );
    let after = flock_of(libc::F_WRLCK, 100, 10);
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLK, &after) }, 0);
    unsafe {
        libc::write(release[1], (&ok as *const u8).cast(), 1);
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        for p in [locked, release] {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
    // The child's exit released its lock: a blocking lock is granted now.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLKW, &want) }, 0);
}

fn exercise(mnt: &Path) {
    // create/write/read/stat
    let a = mnt.join("a.txt");
    fs::write(&a, b"hello dfuse").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"hello dfuse");
    let md = fs::metadata(&a).unwrap();
    assert_eq!(md.len(), 11);
    assert!(md.is_file());
    assert_eq!(
        errno_of(OpenOptions::new().write(true).create_new(true).open(&a)),
        libc::EEXIST
    );

    // mkdir/readdir across several dfs pages
    let d = mnt.join("dir");
    fs::create_dir(&d).unwrap();
    for i in 0..300 {
        fs::write(d.join(format!("f{i:03}")), format!("{i}")).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "f000");
    assert_eq!(names[299], "f299");
    assert_eq!(errno_of(fs::remove_dir(&d)), libc::ENOTEMPTY);

    // rename: in place, across directories, over a file, NOREPLACE, EXCHANGE
    fs::rename(&a, mnt.join("b.txt")).unwrap();
    assert!(!a.exists());
    fs::rename(mnt.join("b.txt"), d.join("b.txt")).unwrap();
    assert_eq!(fs::read(d.join("b.txt")).unwrap(), b"hello dfuse");
    fs::rename(d.join("b.txt"), d.join("f000")).unwrap();
    assert_eq!(fs::read(d.join("f000")).unwrap(), b"hello dfuse");
    let (p1, p2) = (cpath(&d.join("f001")), cpath(&d.join("f002")));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            p1.as_ptr(),
            libc::AT_FDCWD,
            p2.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            p1.as_ptr(),
            libc::AT_FDCWD,
            p2.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(fs::read_to_string(d.join("f001")).unwrap(), "2");
    assert_eq!(fs::read_to_string(d.join("f002")).unwrap(), "1");
    // A renamed file keeps its attributes reachable (the table follows it).
    fs::rename(d.join("f003"), mnt.join("moved")).unwrap();
    fs::set_permissions(mnt.join("moved"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(mnt.join("moved")).unwrap().mode() & 0o777,
        0o600
    );

    // symlink
    symlink("dir/f004", mnt.join("ln")).unwrap();
    assert_eq!(
        fs::read_link(mnt.join("ln")).unwrap(),
        Path::new("dir/f004")
    );
    assert_eq!(fs::read_to_string(mnt.join("ln")).unwrap(), "4");

    // hard link with nlink
    let h = mnt.join("h1");
    fs::write(&h, b"shared").unwrap();
    fs::hard_link(&h, mnt.join("h2")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fs::metadata(&h).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(&h).unwrap().ino(),
        fs::metadata(mnt.join("h2")).unwrap().ino()
    );
    fs::write(mnt.join("h2"), b"changed").unwrap();
    assert_eq!(fs::read(&h).unwrap(), b"changed");
    fs::remove_file(&h).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fs::metadata(mnt.join("h2")).unwrap().nlink(), 1);
    assert_eq!(fs::read(mnt.join("h2")).unwrap(), b"changed");

    // xattr
    let x = cpath(&mnt.join("h2"));
    let name = CString::new("user.color").unwrap();
    let r = unsafe { libc::setxattr(x.as_ptr(), name.as_ptr(), b"blue".as_ptr().cast(), 4, 0) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let mut buf = [0u8; 64];
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!(&buf[..n as usize], b"blue");
    let n = unsafe { libc::listxattr(x.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!(&buf[..n as usize], b"user.color\0");
    assert_eq!(unsafe { libc::removexattr(x.as_ptr(), name.as_ptr()) }, 0);
    let n = unsafe { libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );

    // truncate down and up
    let t = mnt.join("trunc");
    fs::write(&t, vec![7u8; 100_000]).unwrap();
    let f = OpenOptions::new().write(true).open(&t).unwrap();
    f.set_len(10).unwrap();
    f.set_len(20).unwrap();
    drop(f);
    let data = fs::read(&t).unwrap();
    assert_eq!(data.len(), 20);
    assert_eq!(&data[..10], &[7u8; 10]);
    assert_eq!(&data[10..], &[0u8; 10]);

    // unlink while open
    let u = mnt.join("open-unlinked");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&u)
        .unwrap();
    f.write_all(b"still here").unwrap();
    fs::remove_file(&u).unwrap();
    assert!(!u.exists());
    f.write_all(b", and more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here, and more");
    assert_eq!(f.metadata().unwrap().len(), 20);
    drop(f);

    // O_APPEND from two descriptors
    let ap = mnt.join("append");
    fs::write(&ap, b"").unwrap();
    let mut f1 = OpenOptions::new().append(true).open(&ap).unwrap();
    let mut f2 = OpenOptions::new().append(true).open(&ap).unwrap();
    f1.write_all(b"one ").unwrap();
    f2.write_all(b"two ").unwrap();
    f1.write_all(b"three").unwrap();
    drop((f1, f2));
    assert_eq!(fs::read(&ap).unwrap(), b"one two three");

    // sparse beyond 4 GiB
    let sp = mnt.join("sparse");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&sp)
        .unwrap();
    let far = 5u64 << 30;
    f.seek(SeekFrom::Start(far)).unwrap();
    f.write_all(b"end").unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), far + 3);
    let mut z = vec![1u8; 4096];
    f.seek(SeekFrom::Start(1 << 30)).unwrap();
    f.read_exact(&mut z).unwrap();
    assert!(z.iter().all(|b| *b == 0));
    let mut e = [0u8; 3];
    f.seek(SeekFrom::Start(far)).unwrap();
    f.read_exact(&mut e).unwrap();
    assert_eq!(&e, b"end");
    drop(f);

    // fallocate punch hole keeps the size
    let fa = mnt.join("falloc");
    fs::write(&fa, vec![9u8; 8192]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&fa).unwrap();
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    drop(f);
    let data = fs::read(&fa).unwrap();
    assert_eq!(data.len(), 8192);
    assert!(data[..4096].iter().all(|b| *b == 0));
    assert!(data[4096..].iter().all(|b| *b == 9));

    // ENAMETOOLONG; any bytes but / and NUL work
    let long = "x".repeat(256);
    assert_eq!(
        errno_of(fs::write(mnt.join(&long), b"")),
        libc::ENAMETOOLONG
    );
    let ok = "y".repeat(255);
    fs::write(mnt.join(&ok), b"").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd \xff\x01 name");
    fs::write(mnt.join(odd), b"o").unwrap();
    assert_eq!(fs::read(mnt.join(odd)).unwrap(), b"o");

    // mknod FIFO
    let fifo = cpath(&mnt.join("fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(mnt.join("fifo")).unwrap().file_type()
    ));

    // statfs
    let st = nix::sys::statvfs::statvfs(mnt).unwrap();
    assert!(st.blocks() > 0);
    assert!(st.blocks_free() <= st.blocks());
    assert_eq!(st.name_max(), 255);

    // mmap MAP_SHARED writes reach the file
    let mm = mnt.join("mmap");
    fs::write(&mm, vec![b'a'; 8192]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&mm).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), p.cast::<u8>().add(4096), 6);
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        libc::munmap(p, 8192);
    }
    drop(f);
    let data = fs::read(&mm).unwrap();
    assert_eq!(&data[4096..4102], b"mapped");

    // flock and fcntl locks between descriptors of one mount
    let lk = mnt.join("lock");
    fs::write(&lk, b"").unwrap();
    let l1 = fs::File::open(&lk).unwrap();
    let l2 = fs::File::open(&lk).unwrap();
    let fd1 = std::os::fd::AsRawFd::as_raw_fd(&l1);
    let fd2 = std::os::fd::AsRawFd::as_raw_fd(&l2);
    assert_eq!(
        unsafe { libc::flock(fd1, libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    assert_eq!(
        unsafe { libc::flock(fd2, libc::LOCK_EX | libc::LOCK_NB) },
        -1
    );
    assert_eq!(unsafe { libc::flock(fd1, libc::LOCK_UN) }, 0);
    assert_eq!(
        unsafe { libc::flock(fd2, libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    drop((l1, l2));
    fcntl_locks_between_processes(&lk);

    // real tools: cp -a a source tree in, compare
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(mnt.join("src-copy"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(mnt.join("src-copy"))
        .status()
        .unwrap();
    assert!(st.success());
    let o = Command::new("ls")
        .arg("-la")
        .arg(mnt.join("src-copy"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("fs.rs"));

    // Throughput, for the record (not asserted): 64 MiB through the page cache.
    let big = mnt.join("big");
    let chunk = vec![0x5au8; 1 << 20];
    let t0 = std::time::Instant::now();
    let mut f = fs::File::create(&big).unwrap();
    for _ in 0..64 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let wt = t0.elapsed();
    let t0 = std::time::Instant::now();
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&big)
        .unwrap();
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).unwrap_or(0);
        if k == 0 {
            break;
        }
        n += k;
    }
    assert_eq!(n, 64 << 20);
    direct_and_buffered_agree(mnt);
    eprintln!(
        "dfuse: 64 MiB written in {wt:?}, read back (O_DIRECT) in {:?}",
        t0.elapsed()
    );

    // rmdir
    fs::create_dir(mnt.join("empty")).unwrap();
    fs::remove_dir(mnt.join("empty")).unwrap();
    assert!(!mnt.join("empty").exists());
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn dfuse_mounts() {
    let env = setup();
    let dfuse = dfuse_bin();

    // Bad input: one clear line, non-zero exit, nothing mounted.
    let m = env.mountpoint("bad");
    let o = env.dfuse_out(&[m.to_str().unwrap(), "nopool", "fs"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("dfuse: ") && err.contains("nopool"),
        "{err}"
    );
    assert!(!is_mounted(&m));
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "nocont"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nocont"));
    assert!(!is_mounted(&m));
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "fs", "-o", "frobnicate"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("frobnicate"));
    fs::write(m.join("junk"), b"").unwrap();
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "fs"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert!(!is_mounted(&m));
    fs::remove_file(m.join("junk")).unwrap();
    let o = Command::new(&dfuse)
        .args([m.to_str().unwrap(), "tank", "fs"])
        .env("DAOS_AGENT_DRPC_DIR", env.sys.path("no-agent-here"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("daos_agent"),
        "{o:?}"
    );
    assert!(!is_mounted(&m));
    let v = env.dfuse_out(&["--version"]);
    assert!(v.status.success());

    // Foreground: every operation, then SIGTERM unmounts and exits 0.
    let mnt = env.mountpoint("fg");
    let log = fs::File::create(env.sys.path("dfuse-fg.log")).unwrap();
    let child = env
        .dfuse(&["-f", mnt.to_str().unwrap(), "tank", "fs"])
        .env("RUST_LOG", "info,dfuse::fs=debug")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut fg = Mounted {
        path: mnt.clone(),
        child: Some(child),
    };
    wait_for("foreground mount", Duration::from_secs(30), || {
        is_mounted(&mnt)
    });
    exercise(&mnt);
    // As root dfuse raises the mount's readahead past the 128 KiB the kernel
    // offers FUSE, so streaming reads keep several 1 MiB READs in flight.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(&mnt).unwrap().dev();
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        wait_for("readahead raised", Duration::from_secs(10), || {
            fs::read_to_string(&knob).is_ok_and(|v| {
                v.trim()
                    .parse::<u64>()
                    .is_ok_and(|kb| kb >= dfuse::daemon::READ_AHEAD_KB)
            })
        });
    }
    fs::write(mnt.join("last-words"), vec![b'z'; 300_000]).unwrap();
    // Removed objects are freed after the reply, and before dfuse exits.
    let doomed = mnt.join("doomed");
    fs::write(&doomed, vec![b'd'; 100_000]).unwrap();
    let doomed_dir = mnt.join("doomed-dir");
    fs::create_dir(&doomed_dir).unwrap();
    let doomed_inos = [&doomed, &doomed_dir].map(|p| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().ino()
    });
    fs::remove_file(&doomed).unwrap();
    fs::remove_dir(&doomed_dir).unwrap();
    let pid = fg.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = fg.child.as_mut().unwrap().wait().unwrap();
    let log = fs::read_to_string(env.sys.path("dfuse-fg.log")).unwrap();
    assert!(st.success(), "{st:?}: {log}");
    assert!(!is_mounted(&mnt));
    fg.child = None;
    drop(fg);
    assert!(log.contains("mounted"), "{log}");
    for ino in doomed_inos {
        assert!(log.contains(&format!("object freed ino={ino}")), "{log}");
    }
    assert!(!log.contains(" ERROR "), "{log}");
    assert!(!log.contains(" WARN "), "{log}");

    // Daemonized (--pool/--cont): exits 0 once mounted; data survived; a
    // second mount with caching off sees the same files; fusermount3 -u
    // ends the daemon.
    let mnt = env.mountpoint("bg");
    let o = env.dfuse_out(&[mnt.to_str().unwrap(), "--pool", "tank", "--cont", "fs"]);
    assert!(o.status.success(), "{o:?}");
    let bg = Mounted {
        path: mnt.clone(),
        child: None,
    };
    assert!(is_mounted(&mnt));
    assert_eq!(fs::read(mnt.join("dir/f000")).unwrap(), b"hello dfuse");
    assert_eq!(
        fs::read(mnt.join("last-words")).unwrap(),
        vec![b'z'; 300_000]
    );
    let nc = env.mountpoint("nocache");
    let o = env.dfuse_out(&[
        nc.to_str().unwrap(),
        "tank",
        "fs",
        "--disable-caching",
        "--multi-user",
    ]);
    assert!(o.status.success(), "{o:?}");
    let nc_m = Mounted {
        path: nc.clone(),
        child: None,
    };
    fs::write(mnt.join("from-bg"), b"v1").unwrap();
    assert_eq!(fs::read(nc.join("from-bg")).unwrap(), b"v1");
    fs::write(nc.join("from-nc"), b"direct").unwrap();
    assert_eq!(fs::read(nc.join("from-nc")).unwrap(), b"direct");
    // Without the write-back cache dfuse places O_APPEND writes itself, at
    // the stored size.
    let ap = nc.join("nc-append");
    fs::write(&ap, b"").unwrap();
    let mut f1 = OpenOptions::new().append(true).open(&ap).unwrap();
    let mut f2 = OpenOptions::new().append(true).open(&ap).unwrap();
    f1.write_all(b"one ").unwrap();
    f2.write_all(b"two ").unwrap();
    drop(f2);
    f1.write_all(b"three").unwrap();
    drop(f1);
    assert_eq!(fs::read(&ap).unwrap(), b"one two three");
    // Without the write-back cache the kernel leaves times to dfuse: a
    // write moves mtime and ctime (make and rsync rely on it).
    let before = fs::metadata(&ap).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    OpenOptions::new()
        .append(true)
        .open(&ap)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let after = fs::metadata(&ap).unwrap();
    assert!(
        after.modified().unwrap() > before.modified().unwrap()
            && (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "{before:?} {after:?}"
    );
    // With it, dfuse leaves the kernel's write-back of the times to the
    // write's epoch: the mount that asks the engines every time sees the
    // write's time; a time set later, even in the past, stands, until the
    // next write.
    let wb = mnt.join("wb-times");
    let start = std::time::SystemTime::now();
    fs::write(&wb, b"cached").unwrap();
    let seen = fs::metadata(nc.join("wb-times"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        seen >= start && seen <= std::time::SystemTime::now(),
        "{seen:?} vs {start:?}"
    );
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&wb)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        fs::metadata(nc.join("wb-times"))
            .unwrap()
            .modified()
            .unwrap(),
        old
    );
    OpenOptions::new()
        .append(true)
        .open(&wb)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let seen = fs::metadata(nc.join("wb-times"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(seen >= start, "{seen:?} vs {start:?}");
    // Times, mode and owner set on a file open through the mount are stored
    // together: at the latest when it is closed, before this mount reads or
    // changes names, or after the attribute timeout.
    let kept = mnt.join("kept-open");
    let mut f = fs::File::create(&kept).unwrap();
    f.write_all(b"data").unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    f.set_modified(old).unwrap();
    std::os::unix::fs::fchown(&f, Some(7), Some(8)).unwrap();
    let m = fs::metadata(&kept).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.modified().unwrap()),
        (0o600, 7, 8, old),
        "the mount shows them at once"
    );
    drop(f);
    let m = fs::metadata(nc.join("kept-open")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.modified().unwrap()),
        (0o600, 7, 8, old),
        "stored at close"
    );
    let f = OpenOptions::new().write(true).open(&kept).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o640))
        .unwrap();
    fs::rename(&kept, mnt.join("kept-renamed")).unwrap();
    let m = fs::metadata(nc.join("kept-renamed")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640, "stored before the rename");
    f.set_permissions(fs::Permissions::from_mode(0o604))
        .unwrap();
    wait_for("the attribute timeout", Duration::from_secs(10), || {
        fs::metadata(nc.join("kept-renamed")).unwrap().mode() & 0o7777 == 0o604
    });
    drop(f);
    // --multi-user: another user creates files as itself; mode bits hold.
    fs::set_permissions(env.sys.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(nc.join("pub")).unwrap();
    fs::set_permissions(nc.join("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |path: &Path| {
        use std::os::unix::process::CommandExt;
        Command::new("touch")
            .arg(path)
            .uid(65534)
            .gid(65534)
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(as_nobody(&nc.join("pub/mine")).success());
    let md = fs::metadata(nc.join("pub/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    assert!(!as_nobody(&nc.join("not-mine")).success());
    assert!(!nc.join("not-mine").exists());

    let pid = dfuse_pid(&mnt).expect("daemon pid");
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("daemon exit", Duration::from_secs(10), || {
        dfuse_pid(&mnt) != Some(pid)
    });
    assert!(!is_mounted(&mnt));
    drop(bg);
    drop(nc_m);

    // fstab: mount(8) runs `mount.fuse3 dfuse MNT -o OPTS` for the line
    // `dfuse MNT fuse3 defaults,_netdev,nofail,pool=tank,container=fs 0 0`;
    // mount.fuse3 finds `dfuse` on PATH and runs it with -o. (mount(8)
    // itself clears the environment, so the test calls the helper directly
    // to keep its private agent directory.)
    let pathdir = env.mountpoint("path");
    std::os::unix::fs::symlink(&dfuse, pathdir.join("dfuse")).unwrap();
    let path = format!(
        "{}:{}",
        pathdir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mnt = env.mountpoint("fstab");
    let o = Command::new("mount.fuse3")
        .arg("dfuse")
        .arg(&mnt)
        .args(["-o", "rw,_netdev,nofail,pool=tank,container=fs"])
        .env("PATH", &path)
        .env("DAOS_AGENT_DRPC_DIR", &env.agent)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let fstab_m = Mounted {
        path: mnt.clone(),
        child: None,
    };
    assert!(o.status.success(), "{o:?}");
    assert!(is_mounted(&mnt));
    assert_eq!(fs::read(mnt.join("from-nc")).unwrap(), b"direct");
    let pid = dfuse_pid(&mnt).expect("daemon pid");
    let st = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success());
    wait_for("daemon exit", Duration::from_secs(10), || {
        dfuse_pid(&mnt) != Some(pid)
    });
    drop(fstab_m);

    // /dev/fd/N: a /dev/fuse descriptor a privileged helper opened and
    // mounted is served as is; unmounting ends the daemon.
    let mnt = env.mountpoint("byfd");
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dev);
    nix::mount::mount(
        Some("dfuse"),
        &mnt,
        Some("fuse.daos"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(format!("fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions").as_str()),
    )
    .unwrap();
    // The child inherits the descriptor (std opens it close-on-exec).
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let child = env
        .dfuse(&["-f", &format!("/dev/fd/{fd}"), "tank", "fs"])
        .spawn()
        .unwrap();
    drop(dev);
    let mut byfd = Mounted {
        path: mnt.clone(),
        child: Some(child),
    };
    assert_eq!(fs::read(mnt.join("from-nc")).unwrap(), b"direct");
    let st = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success());
    let st = byfd.child.as_mut().unwrap().wait().unwrap();
    assert!(st.success(), "{st:?}");
    byfd.child = None;
    drop(byfd);
}

/// The largest real source tarball at hand: a crate from cargo's download
/// cache (every build of this workspace fills it).
fn source_tarball() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let mut best: Option<(u64, PathBuf)> = None;
    for reg in fs::read_dir(home.join("registry/cache")).unwrap().flatten() {
        for f in fs::read_dir(reg.path()).unwrap().flatten() {
            let len = f.metadata().unwrap().len();
            if f.path().extension().is_some_and(|e| e == "crate")
                && best.as_ref().is_none_or(|(l, _)| len > *l)
            {
                best = Some((len, f.path()));
            }
        }
    }
    best.expect("a .crate in cargo's registry cache").1
}

fn sh(dir: &Path, script: &str) -> String {
    let o = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What people do on a mount: unpack a real source tarball (checked against
/// the same tarball unpacked on local disk), build with make, commit with
/// git, and run a database.
#[test]
fn real_world_tools_work() {
    let env = setup();
    let m = env.mountpoint("rw");
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "fs"]);
    assert!(o.status.success(), "{o:?}");
    let _mounted = Mounted {
        path: m.clone(),
        child: None,
    };
    let tarball = source_tarball();
    let local = env.sys.path("local-copy");
    fs::create_dir_all(&local).unwrap();
    let unpack = format!("tar xzf {}", tarball.display());
    sh(&local, &unpack);
    sh(&m, &unpack);
    let sums = "find . -type f -print0 | sort -z | xargs -0 sha256sum";
    assert_eq!(
        sh(&m, sums),
        sh(&local, sums),
        "the tree unpacked on dfuse differs"
    );
    sh(&m, &format!("diff -r . {}", local.display()));
    // What the engines hold, seen through a second mount that caches
    // nothing, has the tarball's times, modes and owners: the changes tar
    // made to each open file were stored at its close.
    let fresh = env.mountpoint("rw-nocache");
    let o = env.dfuse_out(&[fresh.to_str().unwrap(), "tank", "fs", "--disable-caching"]);
    assert!(o.status.success(), "{o:?}");
    let _fresh_mounted = Mounted {
        path: fresh.clone(),
        child: None,
    };
    sh(&fresh, &format!("tar dzf {}", tarball.display()));

    fs::create_dir_all(m.join("proj")).unwrap();
    let proj = m.join("proj");
    fs::write(proj.join("Makefile"), "all: hello\nhello: main.o util.o\n\tcc -o hello main.o util.o\n%.o: %.c\n\tcc -c -o $@ $<\n").unwrap();
    fs::write(proj.join("util.c"), "int twice(int x) { return 2 * x; }\n").unwrap();
    fs::write(proj.join("main.c"), "#include <stdio.h>\nint twice(int);\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n").unwrap();
    sh(&proj, "make -s");
    assert_eq!(sh(&proj, "./hello").trim(), "42");
    sh(&proj, "git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm first && git status --porcelain && git log --oneline | wc -l");
    assert_eq!(sh(&proj, "git log --oneline | wc -l").trim(), "1");
    assert_eq!(sh(&proj, "git fsck --no-progress 2>&1 | wc -l").trim(), "0");

    let db = m.join("db.sqlite");
    let q = "create table t(a integer primary key, b text); \
             with recursive c(x) as (select 1 union all select x+1 from c limit 5000) insert into t select x, hex(randomblob(32)) from c; \
             select count(*), sum(a) from t; pragma integrity_check;";
    let out = Command::new("sqlite3").arg(&db).arg(q).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5000|12502500\nok"
    );
}

/// fsync, then `kill -9` of dfuse and of every engine: after the engines are
/// restarted and the container mounted again, the data is there; the dead
/// mount is cleared with `fusermount3 -u`.
#[test]
fn fsynced_data_survives_kill9_of_everything() {
    let env = setup();
    let m = env.mountpoint("crash");
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "fs"]);
    assert!(o.status.success(), "{o:?}");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    {
        let mut f = fs::File::create(m.join("precious")).unwrap();
        f.write_all(&data).unwrap();
        // Field changes to an open file wait for its close or fsync (see
        // dfuse.md): the fsync stores them.
        f.set_permissions(fs::Permissions::from_mode(0o640))
            .unwrap();
        f.set_modified(old).unwrap();
        f.sync_all().unwrap();
        std::mem::forget(f);
    }
    fs::create_dir(m.join("dir")).unwrap();
    fs::File::open(&m).unwrap().sync_all().unwrap();
    let dpid = dfuse_pid(&m).expect("dfuse running");
    let kill = |pid: i32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    kill(dpid);
    let epid = env.sys.engine_pid(0).expect("engine running");
    kill(epid);
    wait_for("engine to die", Duration::from_secs(10), || {
        env.sys.engine_pid(0).is_none()
    });
    let st = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!is_mounted(&m));
    wait_for("engine to restart", Duration::from_secs(60), || {
        env.sys.dmg(&["system", "start"]);
        env.sys.engine_pid(0).is_some_and(|p| p != epid)
    });
    env.sys.wait_joined(1);
    let o = env.dfuse_out(&[m.to_str().unwrap(), "tank", "fs"]);
    assert!(o.status.success(), "{o:?}");
    let _mounted = Mounted {
        path: m.clone(),
        child: None,
    };
    assert_eq!(fs::read(m.join("precious")).unwrap(), data);
    let meta = fs::metadata(m.join("precious")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.modified().unwrap(), old);
    assert!(m.join("dir").is_dir());

    // An engine restarting under a live mount: operations wait for it and
    // then succeed; the mount survives.
    let epid = env.sys.engine_pid(0).expect("engine running");
    kill(epid);
    wait_for("engine to die", Duration::from_secs(10), || {
        env.sys.engine_pid(0).is_none()
    });
    let path = m.join("written-while-down");
    let writer = std::thread::spawn(move || fs::write(&path, b"waited"));
    std::thread::sleep(Duration::from_secs(1));
    wait_for("engine to restart", Duration::from_secs(60), || {
        env.sys.dmg(&["system", "start"]);
        env.sys.engine_pid(0).is_some_and(|p| p != epid)
    });
    writer.join().unwrap().unwrap();
    assert_eq!(fs::read(m.join("written-while-down")).unwrap(), b"waited");
    assert_eq!(fs::read(m.join("precious")).unwrap(), data);
}

/// Lookups answered from dfuse's memory (statahead, names known absent from
/// a directory this mount made) agree with the engines: a second mount stats
/// a directory the first filled, in listing order, while changing some of
/// the names through itself on the way; then a fresh directory.
#[test]
fn lookups_from_memory_match_the_engines() {
    let env = setup();
    let a = env.mounted("la");
    let b = env.mounted("lb");
    let (da, db) = (a.path.join("d"), b.path.join("d"));
    fs::create_dir(&da).unwrap();
    for i in 0..300 {
        fs::write(da.join(format!("f{i:03}")), vec![7u8; i]).unwrap();
    }

    // B has never seen these names: every stat is a cold lookup, answered
    // from the entries fetched ahead once the pattern shows.
    let names: Vec<String> = fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 300);
    let size_of = |n: &str| n[1..].parse::<u64>().unwrap();
    for (k, n) in names.iter().enumerate() {
        if k == 100 {
            // Ahead of the stats: removed, chmod'ed and grown through B.
            fs::remove_file(db.join(&names[200])).unwrap();
            fs::set_permissions(
                db.join(&names[210]),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            let mut f = OpenOptions::new()
                .append(true)
                .open(db.join(&names[220]))
                .unwrap();
            f.write_all(b"more").unwrap();
        }
        let p = db.join(n);
        match k {
            200 => assert_eq!(errno_of(fs::symlink_metadata(&p)), libc::ENOENT, "{n}"),
            210 => {
                let m = fs::symlink_metadata(&p).unwrap();
                assert_eq!(m.mode() & 0o777, 0o600, "{n}");
                assert_eq!(m.len(), size_of(n), "{n}");
            }
            220 => assert_eq!(fs::symlink_metadata(&p).unwrap().len(), size_of(n) + 4),
            _ => assert_eq!(fs::symlink_metadata(&p).unwrap().len(), size_of(n), "{n}"),
        }
    }
    // Through A once its caches expired. (Not the size A wrote itself: with
    // the write-back cache the kernel keeps its own size of a file whose
    // inode it holds.)
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        errno_of(fs::symlink_metadata(da.join(&names[200]))),
        libc::ENOENT
    );
    assert_eq!(
        fs::symlink_metadata(da.join(&names[210])).unwrap().mode() & 0o777,
        0o600
    );

    // A directory B made: names B creates are found at once; a name A
    // creates in it is found by B once the negative timeout has passed.
    let nb = b.path.join("n");
    fs::create_dir(&nb).unwrap();
    assert_eq!(errno_of(fs::symlink_metadata(nb.join("x"))), libc::ENOENT);
    fs::write(nb.join("y"), b"y").unwrap();
    assert_eq!(fs::read(nb.join("y")).unwrap(), b"y");
    fs::rename(nb.join("y"), nb.join("z")).unwrap();
    assert_eq!(errno_of(fs::symlink_metadata(nb.join("y"))), libc::ENOENT);
    assert_eq!(fs::read(nb.join("z")).unwrap(), b"y");
    fs::hard_link(nb.join("z"), nb.join("w")).unwrap();
    assert_eq!(fs::symlink_metadata(nb.join("w")).unwrap().nlink(), 2);
    fs::create_dir(nb.join("sub")).unwrap();
    symlink("../z", nb.join("sub/l")).unwrap();
    assert_eq!(fs::read(nb.join("sub/l")).unwrap(), b"y");
    fs::write(a.path.join("n/x"), b"from a").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read(nb.join("x")).unwrap(), b"from a");

    // Unlinks through B of names whose files changed through A after B
    // looked them up: B's guess is stale, and what the name holds now is
    // removed, nothing else freed.
    let (sa, sb) = (a.path.join("s"), b.path.join("s"));
    fs::create_dir(&sa).unwrap();
    fs::write(sa.join("one"), b"one").unwrap();
    fs::write(sa.join("three"), b"three").unwrap();
    fs::write(sa.join("other"), b"other").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for n in ["one", "three"] {
        assert!(fs::symlink_metadata(sb.join(n)).is_ok());
    }
    fs::hard_link(sa.join("one"), sa.join("two")).unwrap();
    fs::rename(sa.join("other"), sa.join("three")).unwrap();
    fs::remove_file(sb.join("one")).unwrap();
    fs::remove_file(sb.join("three")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fs::read(sa.join("two")).unwrap(),
        b"one",
        "a linked file kept"
    );
    assert_eq!(fs::symlink_metadata(sa.join("two")).unwrap().nlink(), 1);
    for n in ["one", "three", "other"] {
        assert_eq!(
            errno_of(fs::symlink_metadata(sa.join(n))),
            libc::ENOENT,
            "{n}"
        );
    }

    // Listings are kept for the dentry timeout (by the kernel once read to
    // the end, by dfuse once read whole): a change through the same mount
    // shows in the next listing at once, one through another mount once the
    // timeout has passed.
    let list = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let glance = |d: &Path| {
        // One getdents, as `rm -rf` first looks at a directory.
        fs::read_dir(d).unwrap().next().unwrap().unwrap();
    };
    let (la, lb) = (a.path.join("l"), b.path.join("l"));
    fs::create_dir(&la).unwrap();
    for n in ["f0", "f1", "f2"] {
        fs::write(la.join(n), b"x").unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(list(&lb), ["f0", "f1", "f2"]);
    assert_eq!(list(&lb), ["f0", "f1", "f2"]);
    fs::write(lb.join("g"), b"g").unwrap();
    assert_eq!(list(&lb), ["f0", "f1", "f2", "g"]);
    glance(&lb);
    fs::remove_file(lb.join("f0")).unwrap();
    assert_eq!(list(&lb), ["f1", "f2", "g"]);
    glance(&lb);
    fs::rename(lb.join("f1"), lb.join("h")).unwrap();
    assert_eq!(list(&lb), ["f2", "g", "h"]);
    glance(&lb);
    fs::create_dir(lb.join("sub")).unwrap();
    assert_eq!(list(&lb), ["f2", "g", "h", "sub"]);
    fs::write(la.join("from-a"), b"a").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(list(&lb), ["f2", "from-a", "g", "h", "sub"]);
}

#[test]
fn a_directorys_entry_timeout_is_its_own() {
    let env = setup();
    // Names kept for a minute, except those of directories: DAOS's
    // dfuse-dentry-dir-time, read when the container is mounted.
    for (k, v) in [("dfuse-dentry-time", "60"), ("dfuse-dentry-dir-time", "0")] {
        env.sys
            .daos_ok(&["container", "set-attr", "tank", "fs", k, v]);
    }
    let a = env.mounted("ta");
    let b = env.mounted("tb");
    fs::create_dir(a.path.join("d")).unwrap();
    fs::write(a.path.join("f"), b"f").unwrap();
    assert!(fs::symlink_metadata(b.path.join("d")).unwrap().is_dir());
    assert!(fs::symlink_metadata(b.path.join("f")).unwrap().is_file());
    fs::rename(a.path.join("d"), a.path.join("d2")).unwrap();
    fs::rename(a.path.join("f"), a.path.join("f2")).unwrap();
    // B asks again for the directory's name at once, and keeps the file's.
    assert_eq!(
        errno_of(fs::symlink_metadata(b.path.join("d"))),
        libc::ENOENT
    );
    assert!(fs::symlink_metadata(b.path.join("d2")).unwrap().is_dir());
    assert!(fs::symlink_metadata(b.path.join("f")).is_ok());
}
