//! Formatting an engine's storage, as `dmg storage format` asks.
//!
//! Format order: SCM mount, bulk devices, `daos_nvme.conf`, and the superblock
//! last (atomically). An engine is "formatted" exactly when its superblock exists,
//! so an interrupted format is simply repeated.

use std::path::{Path, PathBuf};

use prost::Message;
use proto::srv::{BdevConf, NvmeConf};
use proto::{DaosError, Der};
use serde::{Deserialize, Serialize};

use crate::config::{EngineConfig, Tier};
use crate::error::{io, Result};

pub const SUPERBLOCK: &str = "superblock";
pub const NVME_CONF: &str = "daos_nvme.conf";

/// Identity of a formatted engine, kept in its SCM mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Superblock {
    pub version: u32,
    pub uuid: String,
    pub system: String,
    pub instance_idx: u32,
}

/// Reads an engine's superblock: `Ok(None)` when there is none (not formatted);
/// an unreadable or corrupt one is an error, never "not formatted", so a format
/// cannot silently replace the identity of an engine that holds pools.
pub fn read_superblock(scm: &Path) -> Result<Option<Superblock>> {
    let p = scm.join(SUPERBLOCK);
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("reading superblock {}", p.display()), e)),
    };
    serde_json::from_slice(&data).map(Some).map_err(|e| {
        DaosError::new(
            Der::IO,
            format!(
                "superblock {} is corrupt ({e}): reformat with --force",
                p.display()
            ),
        )
    })
}

/// Mount points from /proc/self/mountinfo (field 5, octal escapes decoded).
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape(m) == want)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Total bytes of the filesystem at `p`.
pub fn fs_total(p: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(p)
        .ok()
        .map(|s| s.blocks() * s.fragment_size())
}

/// Size of a bulk device: the configured size of a file, the real size of a block device.
pub fn bdev_size(tier: &Tier, path: &Path) -> u64 {
    match tier {
        Tier::File { bdev_size, .. } => *bdev_size,
        _ => std::fs::File::open(path)
            .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
            .unwrap_or(0),
    }
}

/// Formats one engine's storage. `force` wipes what is there.
pub fn format_engine(idx: u32, e: &EngineConfig, system: &str, force: bool) -> Result<String> {
    let scm = e
        .scm()
        .ok_or_else(|| DaosError::new(Der::INVAL, format!("engine {idx}: no SCM tier")))?;
    let mount = scm.scm_mount().map(Path::to_path_buf).unwrap_or_default();
    if !force && read_superblock(&mount)?.is_some() {
        return Ok("already formatted".into());
    }
    match scm {
        Tier::Ram { scm_size, .. } => {
            std::fs::create_dir_all(&mount)
                .map_err(|err| io(format!("creating scm_mount {}", mount.display()), err))?;
            if is_mountpoint(&mount) {
                if force {
                    umount(&mount)?;
                    mount_tmpfs(&mount, *scm_size)?;
                }
            } else {
                mount_tmpfs(&mount, *scm_size)?;
            }
        }
        Tier::Dcpm { .. } => {
            if !is_mountpoint(&mount) {
                return Err(DaosError::new(
                    Der::INVAL,
                    format!("engine {idx}: scm_mount {} is not mounted: mount the pmem (fsdax) filesystem there first", mount.display()),
                ));
            }
            if force {
                // The superblock goes first: a crash mid-wipe leaves an engine that is
                // plainly unformatted, not one whose identity outlived its pools.
                match std::fs::remove_file(mount.join(SUPERBLOCK)) {
                    Ok(()) => proto::durable::fsync_dir(&mount)
                        .map_err(|e| io(format!("syncing {}", mount.display()), e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io(format!("removing superblock in {}", mount.display()), e))
                    }
                }
                wipe_dir(&mount)?;
            }
        }
        _ => unreachable_scm(idx)?,
    }
    let mut conf = NvmeConf::default();
    for tier in e.bdev_tiers() {
        for path in tier.bdev_list() {
            match tier {
                Tier::File { bdev_size, .. } => create_bdev_file(path, *bdev_size)?,
                Tier::Nvme { .. } => {
                    use std::os::unix::fs::FileTypeExt;
                    let md = std::fs::metadata(path)
                        .map_err(|err| io(format!("bdev {}", path.display()), err))?;
                    if !md.file_type().is_block_device() {
                        return Err(DaosError::new(
                            Der::INVAL,
                            format!("bdev {} is not a block device", path.display()),
                        ));
                    }
                }
                _ => {}
            }
            conf.devices.push(BdevConf {
                class: tier.class().into(),
                path: path.display().to_string(),
                size: if matches!(tier, Tier::File { .. }) {
                    bdev_size(tier, path)
                } else {
                    0
                },
            });
        }
    }
    proto::durable::write_atomic(&mount, NVME_CONF, &conf.encode_to_vec())
        .map_err(|err| io(format!("writing {}", mount.join(NVME_CONF).display()), err))?;
    let sb = Superblock {
        version: 1,
        uuid: uuid::Uuid::new_v4().to_string(),
        system: system.to_string(),
        instance_idx: idx,
    };
    let data = serde_json::to_vec_pretty(&sb).map_err(|err| io("encoding superblock", err))?;
    proto::durable::write_atomic(&mount, SUPERBLOCK, &data)
        .map_err(|err| io(format!("writing superblock in {}", mount.display()), err))?;
    Ok(format!(
        "formatted: SCM {} ({}), {} bulk device(s)",
        mount.display(),
        scm.class(),
        conf.devices.len()
    ))
}

fn unreachable_scm(idx: u32) -> Result<()> {
    Err(DaosError::new(
        Der::INVAL,
        format!("engine {idx}: the first tier must be ram or dcpm"),
    ))
}

fn mount_tmpfs(p: &Path, size: u64) -> Result<()> {
    let opts = format!("size={size},mode=0755");
    nix::mount::mount(
        Some("tmpfs"),
        p,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOATIME,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM {
            " (class ram mounts a tmpfs: run daos_server as root)"
        } else {
            ""
        };
        DaosError::new(
            Der::NO_PERM,
            format!(
                "mounting tmpfs of {size} bytes at {}: {e}{hint}",
                p.display()
            ),
        )
    })
}

fn umount(p: &Path) -> Result<()> {
    nix::mount::umount(p).map_err(|e| io(format!("unmounting {}", p.display()), e))
}

fn wipe_dir(p: &Path) -> Result<()> {
    let rd = std::fs::read_dir(p).map_err(|e| io(format!("reading {}", p.display()), e))?;
    for ent in rd.flatten() {
        let path = ent.path();
        let r = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

/// Creates (or re-creates) a sparse bulk file of `size` bytes.
fn create_bdev_file(p: &PathBuf, size: u64) -> Result<()> {
    if let Some(dir) = p.parent() {
        proto::durable::create_dir_all_durable(dir)
            .map_err(|e| io(format!("creating {}", dir.display()), e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(p)
        .map_err(|e| io(format!("creating bdev file {}", p.display()), e))?;
    f.set_len(size)
        .map_err(|e| io(format!("sizing bdev file {}", p.display()), e))?;
    f.sync_all()
        .map_err(|e| io(format!("syncing bdev file {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_unescape() {
        assert_eq!(super::unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
