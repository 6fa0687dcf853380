//! Mutual TLS on the management channel: the one place certificate files are
//! read. Every certificate is checked against the system's CA; servers present
//! the name `server`, as DAOS's certificates do. Which component a peer is comes
//! from its certificate's common name (`admin`, `agent`, `server`), and servers
//! allow each component only its own calls ([`Component`]).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A certificate file that cannot be used, naming its config key.
#[derive(Debug, thiserror::Error)]
#[error("transport_config.{key} {path}: {msg}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: String,
    pub msg: String,
}

/// The files of one component: the CA, its certificate and its key.
pub struct TlsFiles<'a> {
    pub ca_cert: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
}

/// Reads a PEM file and checks it holds a block with `marker`: rustls skips what
/// is not PEM, so a wrong file would otherwise only show as a failed handshake.
fn pem(
    key: &'static str,
    path: Option<&Path>,
    marker: &str,
    what: &str,
) -> Result<Vec<u8>, TlsError> {
    let Some(path) = path else {
        return Err(TlsError {
            key,
            path: String::new(),
            msg: "is not set (or set allow_insecure: true)".into(),
        });
    };
    let err = |msg: String| TlsError {
        key,
        path: path.display().to_string(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(err(format!("no PEM {what} in the file")));
    }
    Ok(bytes)
}

impl TlsFiles<'_> {
    fn read(&self) -> Result<(Certificate, Identity), TlsError> {
        let ca = pem("ca_cert", self.ca_cert, "CERTIFICATE-----", "certificate")?;
        let cert = pem("cert", self.cert, "CERTIFICATE-----", "certificate")?;
        let key = pem("key", self.key, "PRIVATE KEY-----", "private key")?;
        Ok((Certificate::from_pem(ca), Identity::from_pem(cert, key)))
    }

    /// Client side: trust the CA, present our certificate, expect a server.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        let (ca, id) = self.read()?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(id)
            .domain_name("server");
        // Building an endpoint parses the PEM, so a bad file fails here, not at the first call.
        Endpoint::from_static("https://server")
            .tls_config(tls.clone())
            .map_err(|e| TlsError {
                key: "cert",
                path: self
                    .cert
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                msg: format!(
                    "unusable certificate or key: {}",
                    crate::names::error_chain(&e)
                ),
            })?;
        Ok(tls)
    }

    /// Server side: present our certificate, require clients signed by the CA.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        let (ca, id) = self.read()?;
        Ok(ServerTlsConfig::new().identity(id).client_ca_root(ca))
    }
}

/// A component of the system, as its certificate's common name names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// dmg: administration.
    Admin,
    /// daos_agent: attach info for clients.
    Agent,
    /// daos_server: raft and server-to-server calls.
    Server,
}

impl Component {
    fn from_cn(cn: &str) -> Option<Self> {
        match cn {
            "admin" => Some(Component::Admin),
            "agent" => Some(Component::Agent),
            "server" => Some(Component::Server),
            _ => None,
        }
    }
}

/// The component a TLS peer is, from the common name of its (CA-verified) leaf
/// certificate; `Err` explains why it is none.
pub fn peer_component<T>(req: &tonic::Request<T>) -> Result<Component, String> {
    let certs = req
        .peer_certs()
        .ok_or("the client presented no certificate")?;
    let leaf = certs.first().ok_or("the client presented no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .ok_or("client certificate has no common name")?;
    Component::from_cn(cn)
        .ok_or_else(|| format!("client certificate names {cn:?}, not admin, agent or server"))
}
