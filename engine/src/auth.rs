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
            DaosError::new(Der::INVAL, format!("agent key directory {}: {e}", dir.display()))
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
                        format!("credential signed by an unknown agent key {:?}", cred.origin),
                    )
                })?;
                proto::auth::verify(cred, key)
            }
        }
    }
}
