//! Who a client is: the identity in the credential its agent signed.
//!
//! Invariant: with agent keys configured (`DAOS_AGENT_KEY_DIR`: a directory
//! of the agents' `*.pub` Ed25519 keys, as daos_agent writes them), only a
//! credential signed by one of them is believed; without (insecure mode, as
//! DAOS's AUTH_SYS without certificates), the identity is taken as given.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use proto::auth_pb::{AuthSys, Credential};
use proto::{DaosError, Der};

pub const AGENT_KEY_DIR_ENV: &str = "DAOS_AGENT_KEY_DIR";

#[derive(Default)]
pub struct Verifier {
    /// Key id (hex of the public key, the credential's `origin`) -> key.
    keys: Option<BTreeMap<String, VerifyingKey>>,
}

impl Verifier {
    /// Loads the keys of `dir`, or trusts credentials as given when `None`.
    pub fn load(dir: Option<&Path>) -> Result<Verifier, DaosError> {
        let Some(dir) = dir else {
            return Ok(Verifier { keys: None });
        };
        let mut keys = BTreeMap::new();
        let rd = std::fs::read_dir(dir).map_err(|e| {
            DaosError::new(
                Der::INVAL,
                format!("agent key directory {}: {e}", dir.display()),
            )
        })?;
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().and_then(|x| x.to_str()) != Some("pub") {
                continue;
            }
            let pem = std::fs::read_to_string(&p)
                .map_err(|e| DaosError::new(Der::INVAL, format!("{}: {e}", p.display())))?;
            let k = proto::auth::verifying_key_from_pem(&pem)
                .map_err(|e| DaosError::new(Der::INVAL, format!("{}: {}", p.display(), e.msg)))?;
            let id: String = k.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            keys.insert(id, k);
        }
        tracing::info!(dir = %dir.display(), keys = keys.len(), "agent keys loaded");
        Ok(Verifier { keys: Some(keys) })
    }

    /// The identity a credential proves.
    pub fn identify(&self, cred: &Credential) -> Result<AuthSys, DaosError> {
        match &self.keys {
            None => proto::auth::identity_unverified(cred),
            Some(keys) => {
                let key = keys.get(&cred.origin).ok_or_else(|| {
                    DaosError::new(
                        Der::NO_PERM,
                        format!(
                            "credential signed by an unknown agent key {:?}",
                            cred.origin
                        ),
                    )
                })?;
                proto::auth::verify(cred, key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::auth::CredSigner;

    fn cred(s: &CredSigner) -> Credential {
        s.sign(&AuthSys {
            user: "alice@".into(),
            uid: 1000,
            ..Default::default()
        })
    }

    #[test]
    fn only_known_agent_keys_are_believed() {
        let d = tempfile::tempdir().unwrap();
        let good = CredSigner::generate();
        let other = CredSigner::generate();
        std::fs::write(d.path().join("agent_cred.pub"), good.public_pem().unwrap()).unwrap();
        std::fs::write(d.path().join("notes.txt"), "not a key").unwrap();
        let v = Verifier::load(Some(d.path())).unwrap();
        assert_eq!(v.identify(&cred(&good)).unwrap().user, "alice@");
        assert_eq!(v.identify(&cred(&other)).unwrap_err().der, Der::NO_PERM);
        let mut forged = cred(&good);
        if let Some(t) = forged.token.as_mut() {
            t.data.push(0);
        }
        assert_eq!(v.identify(&forged).unwrap_err().der, Der::NO_PERM);
        // Insecure: the identity is taken as given.
        let open = Verifier::load(None).unwrap();
        assert_eq!(open.identify(&cred(&other)).unwrap().user, "alice@");
        assert!(Verifier::load(Some(&d.path().join("missing"))).is_err());
    }
}
