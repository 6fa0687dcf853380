//! Signed credentials: daos_agent issues them, engines verify them.
//!
//! A credential is an encoded [`AuthSys`] (who the caller is, as the kernel told
//! the agent) plus an Ed25519 signature over exactly those bytes. The verifier
//! checks the signature against the agent's public key before it decodes the
//! token, so nothing a client wrote into the token is trusted.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use prost::Message;

use crate::auth_pb::{AuthSys, Credential, Flavor, Token};
use crate::der::{DaosError, Der};

/// Holds the agent's signing key.
pub struct CredSigner {
    key: SigningKey,
}

impl CredSigner {
    /// A fresh random key.
    pub fn generate() -> Self {
        CredSigner {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads a PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem(pem: &str) -> Result<Self, DaosError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|key| CredSigner { key })
            .map_err(|e| {
                DaosError::new(Der::INVAL, format!("not a PKCS#8 Ed25519 private key: {e}"))
            })
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, DaosError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|s| s.to_string())
            .map_err(|e| DaosError::new(Der::MISC, format!("encoding private key: {e}")))
    }

    /// The public key as SPKI PEM, for the verifiers.
    pub fn public_pem(&self) -> Result<String, DaosError> {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| DaosError::new(Der::MISC, format!("encoding public key: {e}")))
    }

    /// Hex of the public key: names the signer in [`Credential::origin`].
    pub fn key_id(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Signs `sys` into a credential.
    pub fn sign(&self, sys: &AuthSys) -> Credential {
        let data = sys.encode_to_vec();
        let sig = self.key.sign(&data);
        Credential {
            token: Some(Token {
                flavor: Flavor::AuthSys as i32,
                data,
            }),
            verifier: Some(Token {
                flavor: Flavor::AuthSys as i32,
                data: sig.to_bytes().to_vec(),
            }),
            origin: self.key_id(),
        }
    }
}

/// Parses an SPKI PEM Ed25519 public key.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, DaosError> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| DaosError::new(Der::INVAL, format!("not an SPKI Ed25519 public key: {e}")))
}

/// Checks the credential's signature with `key` and returns the identity in it.
pub fn verify(cred: &Credential, key: &VerifyingKey) -> Result<AuthSys, DaosError> {
    let bad = |m: &str| DaosError::new(Der::NO_PERM, format!("credential rejected: {m}"));
    let token = cred.token.as_ref().ok_or_else(|| bad("no token"))?;
    if token.flavor != Flavor::AuthSys as i32 {
        return Err(bad("token flavor is not AUTH_SYS"));
    }
    let verifier = cred.verifier.as_ref().ok_or_else(|| bad("no verifier"))?;
    let sig: [u8; 64] = verifier
        .data
        .as_slice()
        .try_into()
        .map_err(|_| bad("verifier is not a 64-byte signature"))?;
    key.verify(&token.data, &Signature::from_bytes(&sig))
        .map_err(|_| bad("signature does not match"))?;
    AuthSys::decode(token.data.as_slice()).map_err(|_| bad("token does not decode"))
}

/// The identity in a credential, without checking its signature: what a
/// server in insecure mode trusts (as DAOS's AUTH_SYS does without certificates).
pub fn identity_unverified(cred: &Credential) -> Result<AuthSys, DaosError> {
    let bad = |m: &str| DaosError::new(Der::NO_PERM, format!("credential rejected: {m}"));
    let token = cred.token.as_ref().ok_or_else(|| bad("no token"))?;
    if token.flavor != Flavor::AuthSys as i32 {
        return Err(bad("token flavor is not AUTH_SYS"));
    }
    AuthSys::decode(token.data.as_slice()).map_err(|_| bad("token does not decode"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let s = CredSigner::generate();
        let sys = AuthSys {
            user: "alice@".into(),
            uid: 1000,
            gid: 1000,
            machinename: "h".into(),
            ..Default::default()
        };
        let cred = s.sign(&sys);
        let key = verifying_key_from_pem(&s.public_pem().unwrap()).unwrap();
        assert_eq!(verify(&cred, &key).unwrap(), sys);

        // Claiming root in the token breaks the signature.
        let mut forged = cred.clone();
        let mut t = AuthSys::decode(forged.token.as_ref().unwrap().data.as_slice()).unwrap();
        t.uid = 0;
        forged.token.as_mut().unwrap().data = t.encode_to_vec();
        assert_eq!(verify(&forged, &key).unwrap_err().der, Der::NO_PERM);

        // Another agent's key does not verify.
        let other = CredSigner::generate();
        let okey = verifying_key_from_pem(&other.public_pem().unwrap()).unwrap();
        assert!(verify(&cred, &okey).is_err());

        // PEM round trip keeps the key.
        let again = CredSigner::from_pem(&s.to_pem().unwrap()).unwrap();
        assert_eq!(again.key_id(), s.key_id());
    }
}
