//! Thin, safe wrappers over the syscalls the suites need and std does not offer: positional I/O
//! loops, `fallocate`, `copy_file_range`, `lseek` with `SEEK_DATA`/`SEEK_HOLE`, extended
//! attributes, `mmap` regions, directory streams with `telldir`/`seekdir`.
//!
//! Invariant: every `unsafe` block of the crate lives here, each with the reason it is sound;
//! callers get `io::Result`s whose errors carry the raw errno, so tests can compare errno values.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use nix::errno::Errno;

/// The errno of an I/O error, `None` for errors that did not come from a syscall.
pub fn errno_of(err: &io::Error) -> Option<Errno> {
    err.raw_os_error().map(Errno::from_raw)
}

/// The symbolic name of an error's errno (`"ENOENT"`), or its text for other errors.
pub fn errno_name(err: &io::Error) -> String {
    match errno_of(err) {
        Some(e) => format!("{e:?}"),
        None => err.to_string(),
    }
}

/// Renders the outcome of a syscall as `"OK"` or the errno name, for compact messages.
pub fn outcome_name<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "OK".to_string(),
        Err(e) => errno_name(e),
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret.unsigned_abs())
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cname(name: &str) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// Reads at `off` until `buf` is full or end of file; returns the bytes read.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let pos = off + done as u64;
        let pos = i64::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match nix::sys::uio::pread(fd, &mut buf[done..], pos) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `off`.
pub fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = off + done as u64;
        let pos = i64::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match nix::sys::uio::pwrite(fd, &buf[done..], pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwrite wrote 0 bytes",
                ))
            }
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `fallocate(2)` with raw mode flags (`FALLOC_FL_*`).
pub fn fallocate(fd: BorrowedFd<'_>, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
    let off = i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fallocate takes plain integers and a descriptor the borrow keeps open.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) }).map(|_| ())
}

/// One `copy_file_range(2)` call; returns the bytes copied (0 at end of the source).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut s = i64::try_from(src_off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut d = i64::try_from(dst_off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the offset pointers point at live locals; the descriptors are kept open by the
    // borrows for the duration of the call.
    cvt_size(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut s, dst.as_raw_fd(), &mut d, len, 0)
    })
}

/// `lseek(2)` with a raw whence (`SEEK_SET`, `SEEK_DATA`, `SEEK_HOLE`, ...).
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: lseek takes plain integers and a descriptor the borrow keeps open.
    let ret = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret.unsigned_abs())
    }
}

/// Sets an extended attribute on a path (follows symlinks), `flags` as `XATTR_CREATE`/`REPLACE`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: both strings are NUL-terminated and live; value points at `value.len()` bytes.
    cvt(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

/// Sets an extended attribute through a descriptor.
pub fn fset_xattr(
    fd: BorrowedFd<'_>,
    name: &str,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: the name is NUL-terminated and live; value points at `value.len()` bytes.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

/// Reads an extended attribute of a path, sizing the buffer with a first query call.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path)?;
    let n = cname(name)?;
    loop {
        // SAFETY: a NULL buffer of size 0 asks only for the value's size.
        let size =
            cvt_size(unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf has `buf.len()` writable bytes.
        match cvt_size(unsafe {
            libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            // The value grew between the two calls: ask again.
            Err(e) if errno_of(&e) == Some(Errno::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Calls `getxattr` with a caller-sized buffer, to test the kernel's `ERANGE` contract.
pub fn get_xattr_into(path: &Path, name: &str, buf: &mut [u8]) -> io::Result<usize> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: buf has `buf.len()` writable bytes (a zero length only queries the size).
    cvt_size(unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Removes an extended attribute of a path.
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: both strings are NUL-terminated and live.
    cvt(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(|_| ())
}

/// Removes an extended attribute through a descriptor.
pub fn fremove_xattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: the name is NUL-terminated and live.
    cvt(unsafe { libc::fremovexattr(fd.as_raw_fd(), n.as_ptr()) }).map(|_| ())
}

/// Lists the extended attribute names of a path.
pub fn list_xattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path)?;
    loop {
        // SAFETY: a NULL buffer of size 0 asks only for the list's size.
        let size = cvt_size(unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf has `buf.len()` writable bytes.
        match cvt_size(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(e) if errno_of(&e) == Some(Errno::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A shared file mapping, unmapped on drop.
///
/// The mapping covers `[page_floor(off), off + len)` of the file; `as_slice`/`as_mut_slice`
/// expose exactly `[off, off + len)`. Callers keep `off + len` within the file size, since
/// touching a page wholly past end of file raises SIGBUS.
pub struct Mmap {
    base: NonNull<libc::c_void>,
    map_len: usize,
    skip: usize,
    len: usize,
}

impl Mmap {
    /// Maps `len > 0` bytes of `fd` at `off`, read-only or read-write (`MAP_SHARED`).
    pub fn map(fd: BorrowedFd<'_>, off: u64, len: usize, writable: bool) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let page = page_size() as u64;
        let start = off - off % page;
        let skip =
            usize::try_from(off - start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map_len = skip + len;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let file_off =
            libc::off_t::try_from(start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (NULL hint) aliases no Rust object; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mmap {
            base,
            map_len,
            skip,
            len,
        })
    }

    /// The mapped bytes `[off, off + len)`.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live for &self and covers skip + len bytes; other processes
        // may change the bytes underneath, which for u8 data is a value race, not UB in the
        // sense of invalid values.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<u8>().add(self.skip), self.len)
        }
    }

    /// The mapped bytes, writable (only for a mapping made with `writable`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for as_slice, and &mut self makes this the only Rust view of the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().cast::<u8>().add(self.skip), self.len)
        }
    }

    /// Writes dirty pages back to the file (`msync(MS_SYNC)`).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: base/map_len describe exactly the live mapping.
        cvt(unsafe { libc::msync(self.base.as_ptr(), self.map_len, libc::MS_SYNC) }).map(|_| ())
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: base/map_len describe exactly the mapping made in `map`, unmapped only here.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.map_len);
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

/// Monotonic clock in nanoseconds, comparable between processes of one boot.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live, writable timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec.unsigned_abs() * 1_000_000_000 + ts.tv_nsec.unsigned_abs()
}

/// A directory stream (`opendir`), for the tests of `telldir`/`seekdir`/`rewinddir`.
pub struct DirStream {
    dir: NonNull<libc::DIR>,
}

impl DirStream {
    /// Opens a directory stream.
    pub fn open(path: &Path) -> io::Result<DirStream> {
        let p = cpath(path)?;
        // SAFETY: p is NUL-terminated; the result is checked for NULL.
        let dir = unsafe { libc::opendir(p.as_ptr()) };
        NonNull::new(dir)
            .map(|dir| DirStream { dir })
            .ok_or_else(io::Error::last_os_error)
    }

    /// The next entry's name, `None` at the end of the stream.
    pub fn read(&mut self) -> io::Result<Option<Vec<u8>>> {
        Errno::clear();
        // SAFETY: the stream is live; the returned entry stays valid until the next call on the
        // stream, and its name is copied out before returning.
        let ent = unsafe { libc::readdir(self.dir.as_ptr()) };
        if ent.is_null() {
            return match Errno::last_raw() {
                0 => Ok(None),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        // SAFETY: ent is non-NULL and d_name is NUL-terminated within the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        Ok(Some(name.to_bytes().to_vec()))
    }

    /// Reads the entries left, skipping `.` and `..`.
    pub fn read_rest(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(name) = self.read()? {
            if name != b"." && name != b".." {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// The stream's position (`telldir`).
    pub fn tell(&mut self) -> io::Result<libc::c_long> {
        // SAFETY: the stream is live.
        let pos = unsafe { libc::telldir(self.dir.as_ptr()) };
        if pos < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(pos)
        }
    }

    /// Moves the stream to a position returned by `tell` (`seekdir`).
    pub fn seek(&mut self, pos: libc::c_long) {
        // SAFETY: the stream is live; seekdir accepts any value telldir returned on it.
        unsafe { libc::seekdir(self.dir.as_ptr(), pos) }
    }

    /// Restarts the stream (`rewinddir`).
    pub fn rewind(&mut self) {
        // SAFETY: the stream is live.
        unsafe { libc::rewinddir(self.dir.as_ptr()) }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream was opened in `open` and is closed only here.
        unsafe {
            libc::closedir(self.dir.as_ptr());
        }
    }
}

/// Takes ownership of a descriptor a syscall wrapper returned as a raw fd.
pub fn owned_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor freshly returned by a successful open-like call, which
    // nothing else owns or closes.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
