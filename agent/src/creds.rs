//! Signed credentials for local processes, and the key that signs them.
//!
//! Invariant: the identity in a credential comes only from the kernel's record of
//! the connection (SO_PEERCRED: uid, gid, pid) and this host's user and group
//! databases; nothing the client sent is read. The signing key never leaves the
//! key file (mode 0600, refused if group or others may read it); the public key
//! beside it (`.pub`, SPKI PEM) is what engines verify with.
//!
//! Identity lookups go through the name service (passwd, group), which may block
//! on a directory server: callers run [`auth_sys`] on a blocking thread.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::{Gid, Group, Uid, User};
use proto::auth::CredSigner;
use proto::auth_pb::AuthSys;
use proto::drpc::PeerCred;
use proto::names::principal;
use proto::{DaosError, Der};

use crate::error::Error;

/// The user and group databases, as the credential builder needs them.
pub(crate) trait IdentityDb {
    /// The user name of `uid`; `None` if the database has no such user.
    fn user_name(&self, uid: u32) -> Result<Option<String>, DaosError>;
    /// The group name of `gid`; `None` if the database has no such group.
    fn group_name(&self, gid: u32) -> Result<Option<String>, DaosError>;
    /// Every group `user` is in, `gid` included (getgrouplist).
    fn group_list(&self, user: &str, gid: u32) -> Result<Vec<u32>, DaosError>;
}

/// This host's databases, through libc's name service.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemDb;

impl IdentityDb for SystemDb {
    fn user_name(&self, uid: u32) -> Result<Option<String>, DaosError> {
        User::from_uid(Uid::from_raw(uid))
            .map(|u| u.map(|u| u.name))
            .map_err(|e| {
                DaosError::new(
                    Der::MISC,
                    format!("looking up uid {uid} in the user database: {e}"),
                )
            })
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, DaosError> {
        Group::from_gid(Gid::from_raw(gid))
            .map(|g| g.map(|g| g.name))
            .map_err(|e| {
                DaosError::new(
                    Der::MISC,
                    format!("looking up gid {gid} in the group database: {e}"),
                )
            })
    }

    fn group_list(&self, user: &str, gid: u32) -> Result<Vec<u32>, DaosError> {
        let name = CString::new(user).map_err(|_| {
            DaosError::new(
                Der::INVAL,
                format!("user name {user:?} contains a NUL byte"),
            )
        })?;
        nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
            .map(|v| v.into_iter().map(Gid::as_raw).collect())
            .map_err(|e| {
                DaosError::new(
                    Der::MISC,
                    format!("listing the groups of user {user:?}: {e}"),
                )
            })
    }
}

/// Now, in ns since the epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Builds the identity of the process on the other end of a connection.
///
/// `user`/`uid` and `group`/`gid` are the peer's; `gids` are the other groups
/// the group database puts that user in (primary gid left out, sorted, no
/// duplicates) and `groups` the principals of those that have a name, in the
/// same order. A uid or primary gid the databases do not know is
/// `DER_NONEXIST`.
pub(crate) fn auth_sys(
    db: &impl IdentityDb,
    peer: PeerCred,
    machinename: &str,
    stamp: u64,
) -> Result<AuthSys, DaosError> {
    let user = db.user_name(peer.uid)?.ok_or_else(|| {
        DaosError::new(
            Der::NONEXIST,
            format!("uid {} is not in the user database", peer.uid),
        )
    })?;
    let group = db.group_name(peer.gid)?.ok_or_else(|| {
        DaosError::new(
            Der::NONEXIST,
            format!("gid {} is not in the group database", peer.gid),
        )
    })?;
    let mut gids: Vec<u32> = db
        .group_list(&user, peer.gid)?
        .into_iter()
        .filter(|g| *g != peer.gid)
        .collect();
    gids.sort_unstable();
    gids.dedup();
    let mut groups = Vec::with_capacity(gids.len());
    for g in &gids {
        match db.group_name(*g)? {
            Some(n) => groups.push(principal(&n)),
            None => tracing::debug!(
                uid = peer.uid,
                gid = g,
                "supplementary group has no name; principal left out"
            ),
        }
    }
    Ok(AuthSys {
        stamp,
        machinename: machinename.to_string(),
        user: principal(&user),
        group: principal(&group),
        groups,
        secctx: String::new(),
        uid: peer.uid,
        gid: peer.gid,
        gids,
        pid: peer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    })
}

/// Loads the signing key at `key_path`, generating it (mode 0600) if missing,
/// and writes its public key to `pub_path` (mode 0644). Blocking.
pub(crate) fn load_or_create_signer(key_path: &Path, pub_path: &Path) -> Result<CredSigner, Error> {
    let key_err = |msg: String| Error::Key {
        path: key_path.to_path_buf(),
        msg,
    };
    let signer = match fs::metadata(key_path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_err(format!(
                    "mode {mode:04o} lets other users read the signing key and forge credentials; run chmod 600 {}",
                    key_path.display()
                )));
            }
            let pem =
                fs::read_to_string(key_path).map_err(|e| key_err(format!("cannot read: {e}")))?;
            CredSigner::from_pem(&pem)
                .map_err(|e| key_err(format!("{}; remove it to have a new key generated", e.msg)))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_key(key_path)?,
        Err(e) => return Err(key_err(format!("cannot stat: {e}"))),
    };
    write_public_key(&signer, pub_path)?;
    Ok(signer)
}

/// Writes a fresh key to `path` without ever exposing a partial file there:
/// it is written to a private temporary file, synced, then linked into place.
/// If another process created the key meanwhile, that key is used instead.
fn generate_key(path: &Path) -> Result<CredSigner, Error> {
    let key_err = |msg: String| Error::Key {
        path: path.to_path_buf(),
        msg,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("credential key directory", dir, e))?;
    }
    let signer = CredSigner::generate();
    let pem = signer.to_pem().map_err(|e| key_err(e.msg))?;
    let tmp = tmp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(key = %path.display(), "generated a new credential signing key");
            Ok(signer)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = fs::read_to_string(path).map_err(|e| key_err(format!("cannot read: {e}")))?;
            CredSigner::from_pem(&pem).map_err(|e| key_err(e.msg))
        }
        Err(e) => Err(key_err(format!("cannot write a new key: {e}"))),
    }
}

/// Writes the public key (SPKI PEM, mode 0644) unless the file already holds it.
fn write_public_key(signer: &CredSigner, path: &Path) -> Result<(), Error> {
    let pem = signer.public_pem().map_err(|e| Error::Key {
        path: path.to_path_buf(),
        msg: e.msg,
    })?;
    if fs::read_to_string(path).is_ok_and(|old| old == pem) {
        return Ok(());
    }
    let tmp = tmp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(|e| Error::io("credential public key", path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use prost::Message as _;

    /// A user and group database in memory.
    #[derive(Default)]
    struct FakeDb {
        users: HashMap<u32, &'static str>,
        groups: HashMap<u32, &'static str>,
        members: HashMap<&'static str, Vec<u32>>,
    }

    impl IdentityDb for FakeDb {
        fn user_name(&self, uid: u32) -> Result<Option<String>, DaosError> {
            Ok(self.users.get(&uid).map(|s| s.to_string()))
        }
        fn group_name(&self, gid: u32) -> Result<Option<String>, DaosError> {
            Ok(self.groups.get(&gid).map(|s| s.to_string()))
        }
        fn group_list(&self, user: &str, gid: u32) -> Result<Vec<u32>, DaosError> {
            let mut v = vec![gid];
            v.extend(self.members.get(user).cloned().unwrap_or_default());
            Ok(v)
        }
    }

    fn db() -> FakeDb {
        FakeDb {
            users: HashMap::from([(1000, "alice"), (1001, "bob")]),
            groups: HashMap::from([(1000, "alice"), (27, "sudo"), (100, "users"), (1001, "bob")]),
            members: HashMap::from([("alice", vec![100, 27, 1000, 100, 555])]),
        }
    }

    #[test]
    fn builds_identity_from_peer_and_databases() {
        let peer = PeerCred {
            uid: 1000,
            gid: 1000,
            pid: Some(42),
        };
        let s = auth_sys(&db(), peer, "node1", 7).unwrap();
        assert_eq!(s.user, "alice@");
        assert_eq!(s.group, "alice@");
        assert_eq!((s.uid, s.gid, s.pid, s.stamp), (1000, 1000, 42, 7));
        assert_eq!(s.machinename, "node1");
        // Primary left out, sorted, deduplicated; 555 has no name.
        assert_eq!(s.gids, vec![27, 100, 555]);
        assert_eq!(s.groups, vec!["sudo@", "users@"]);
    }

    #[test]
    fn peer_gid_is_the_primary_group() {
        // bob runs with alice's group as his effective gid (newgrp, setgid binary):
        // the kernel's gid is what counts.
        let s = auth_sys(
            &db(),
            PeerCred {
                uid: 1001,
                gid: 1000,
                pid: None,
            },
            "h",
            0,
        )
        .unwrap();
        assert_eq!(
            (s.user.as_str(), s.group.as_str(), s.pid),
            ("bob@", "alice@", 0)
        );
        assert!(s.gids.is_empty());
    }

    #[test]
    fn unknown_uid_or_gid_is_nonexist() {
        let e = auth_sys(
            &db(),
            PeerCred {
                uid: 4242,
                gid: 1000,
                pid: None,
            },
            "h",
            0,
        )
        .unwrap_err();
        assert_eq!(e.der, Der::NONEXIST);
        assert!(e.msg.contains("4242"), "{e}");
        let e = auth_sys(
            &db(),
            PeerCred {
                uid: 1000,
                gid: 4343,
                pid: None,
            },
            "h",
            0,
        )
        .unwrap_err();
        assert_eq!(e.der, Der::NONEXIST);
        assert!(e.msg.contains("4343"), "{e}");
    }

    #[test]
    fn system_db_knows_this_process() {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = SystemDb
            .user_name(uid)
            .unwrap()
            .expect("the test runs as a known user");
        let s = auth_sys(
            &SystemDb,
            PeerCred {
                uid,
                gid,
                pid: Some(1),
            },
            "h",
            now_ns(),
        )
        .unwrap();
        assert_eq!(s.user, format!("{name}@"));
        assert!(s.stamp > 0);
        assert!(!s.gids.contains(&gid));
    }

    #[test]
    fn key_is_generated_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sub/agent_cred.key");
        let public = key.with_extension("pub");
        let s1 = load_or_create_signer(&key, &public).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&public).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let vk =
            proto::auth::verifying_key_from_pem(&fs::read_to_string(&public).unwrap()).unwrap();

        // A restart keeps the key, so credentials stay verifiable.
        let s2 = load_or_create_signer(&key, &public).unwrap();
        assert_eq!(s1.key_id(), s2.key_id());
        let sys = AuthSys {
            uid: 5,
            ..Default::default()
        };
        assert_eq!(proto::auth::verify(&s2.sign(&sys), &vk).unwrap(), sys);

        // A lost public key is rewritten from the private one.
        fs::remove_file(&public).unwrap();
        load_or_create_signer(&key, &public).unwrap();
        assert!(fs::read_to_string(&public).unwrap().contains("PUBLIC KEY"));
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(key.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn readable_or_broken_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        load_or_create_signer(&key, &key.with_extension("pub")).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_signer(&key, &key.with_extension("pub"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("credential_key") && e.contains("chmod 600"),
            "{e}"
        );

        fs::write(&key, "not a key").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create_signer(&key, &key.with_extension("pub"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("PKCS#8"), "{e}");
    }

    #[test]
    fn signed_identity_verifies_and_tampering_fails() {
        let signer = CredSigner::generate();
        let vk = proto::auth::verifying_key_from_pem(&signer.public_pem().unwrap()).unwrap();
        let sys = auth_sys(
            &db(),
            PeerCred {
                uid: 1000,
                gid: 1000,
                pid: Some(9),
            },
            "n",
            1,
        )
        .unwrap();
        let cred = signer.sign(&sys);
        assert_eq!(proto::auth::verify(&cred, &vk).unwrap(), sys);
        let mut forged = cred.clone();
        let mut t = AuthSys::decode(forged.token.as_ref().unwrap().data.as_slice()).unwrap();
        t.gids.push(0);
        forged.token.as_mut().unwrap().data = t.encode_to_vec();
        assert_eq!(
            proto::auth::verify(&forged, &vk).unwrap_err().der,
            Der::NO_PERM
        );
    }
}
