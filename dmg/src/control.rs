//! The connection to daos_server's management service (MgmtSvc).
//!
//! Two ways to call: [`ControlClient::call_ms`] for requests the management
//! service leader answers (system and pool commands): hosts are tried in order
//! until one connects, and a "not leader" answer that names the leader is
//! retried there once; [`ControlClient::call_each`] for per-host requests
//! (storage, versions): every host is asked concurrently and each answer or
//! failure is kept. Certificates are read and checked when the client is built,
//! before any request, so nothing here touches files.

use std::future::Future;
use std::time::Duration;

use proto::der::DER_METADATA_KEY;
use proto::mgmt::mgmt_svc_client::MgmtSvcClient;
use proto::names::error_chain;
use proto::tls::TlsFiles;
use proto::{DaosError, Der};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, warn};

use crate::config::ControlConfig;
use crate::error::Error;

/// A connected management client.
pub type Client = MgmtSvcClient<Channel>;

/// How long a TCP (and TLS) connection may take before the host counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request may take: most answer at once; creating, destroying and
/// formatting touch storage on every engine.
#[derive(Debug, Clone, Copy)]
pub enum CallTimeout {
    Short,
    Long,
}

impl CallTimeout {
    fn duration(self) -> Duration {
        match self {
            CallTimeout::Short => Duration::from_secs(60),
            CallTimeout::Long => Duration::from_secs(300),
        }
    }
}

/// One host's answer to a per-host request.
#[derive(Debug)]
pub struct HostResult<R> {
    /// `host:port` as dmg addressed it.
    pub addr: String,
    pub result: Result<R, DaosError>,
}

/// The servers dmg may talk to and how.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addrs: Vec<String>,
    tls: Option<ClientTlsConfig>,
}

impl ControlClient {
    /// Builds a client for `addrs`; with `insecure` false, loads the certificates.
    pub fn new(cfg: &ControlConfig, addrs: Vec<String>, insecure: bool) -> Result<Self, Error> {
        let t = &cfg.transport_config;
        let tls = if insecure || t.allow_insecure {
            None
        } else {
            let files = TlsFiles {
                ca_cert: Some(&t.ca_cert),
                cert: Some(&t.cert),
                key: Some(&t.key),
            };
            Some(files.client().map_err(Error::Tls)?)
        };
        Ok(ControlClient { addrs, tls })
    }

    /// The addresses in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    async fn connect(&self, addr: &str) -> Result<Client, DaosError> {
        let unreachable = |msg: String| DaosError::new(Der::UNREACH, format!("{addr}: {msg}"));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| DaosError::new(Der::INVAL, format!("{addr}: {}", error_chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| DaosError::new(Der::INVAL, format!("{addr}: {}", error_chain(&e))))?;
        }
        debug!(%addr, tls = self.tls.is_some(), "connecting");
        // The connect timeout bounds TCP; this bounds the TLS and HTTP/2 handshakes too.
        match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(MgmtSvcClient::new(channel)),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Err(_) => Err(unreachable(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sends a request to the management service: the first host that connects,
    /// or the leader it names.
    pub async fn call_ms<R, F, Fut>(&self, timeout: CallTimeout, call: F) -> Result<R, DaosError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut failures = Vec::new();
        let mut last_refusal = None;
        for addr in &self.addrs {
            let client = match self.connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%addr, error = %e, "unreachable");
                    failures.push(e.msg);
                    continue;
                }
            };
            let err = match invoke(addr, timeout, call(client)).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            if !matches!(err.der, Der::NOTLEADER | Der::NOTREPLICA) {
                return Err(err);
            }
            if let Some(leader) = leader_hint(&err.msg).filter(|l| l != addr) {
                debug!(%addr, %leader, "not the leader; retrying at the leader");
                return match self.connect(&leader).await {
                    Ok(client) => invoke(&leader, timeout, call(client)).await,
                    Err(e) => Err(e),
                };
            }
            debug!(%addr, error = %err, "not the leader and no leader named; trying the next host");
            last_refusal = Some(err);
        }
        if let Some(err) = last_refusal {
            return Err(err);
        }
        Err(DaosError::new(
            Der::UNREACH,
            format!(
                "unable to reach any of [{}]: {}",
                self.addrs.join(","),
                failures.join("; ")
            ),
        ))
    }

    /// Sends a request to every host at once; results come back in host order.
    pub async fn call_each<R, F, Fut>(&self, timeout: CallTimeout, call: F) -> Vec<HostResult<R>>
    where
        R: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, addr) in self.addrs.iter().enumerate() {
            let (this, addr, call) = (self.clone(), addr.clone(), call.clone());
            tasks.spawn(async move {
                let result = match this.connect(&addr).await {
                    Ok(client) => invoke(&addr, timeout, call(client)).await,
                    Err(e) => Err(e),
                };
                (i, HostResult { addr, result })
            });
        }
        let mut slots: Vec<Option<HostResult<R>>> = self.addrs.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, r)) => {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                Err(e) => warn!(error = %e, "a host request task failed"),
            }
        }
        // A task that panicked leaves its slot empty: report the host as failed.
        slots
            .into_iter()
            .zip(&self.addrs)
            .map(|(slot, addr)| {
                slot.unwrap_or_else(|| HostResult {
                    addr: addr.clone(),
                    result: Err(DaosError::new(
                        Der::MISC,
                        format!("{addr}: request aborted"),
                    )),
                })
            })
            .collect()
    }
}

/// Awaits one call within its timeout and turns a failure into a DaosError.
async fn invoke<R>(
    addr: &str,
    timeout: CallTimeout,
    fut: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
) -> Result<R, DaosError> {
    let limit = timeout.duration();
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => {
            let mut err = DaosError::from_status(&status);
            // No DER code: the failure is the transport's, not the server's
            // answer, so name the host and the underlying cause.
            if status.metadata().get(DER_METADATA_KEY).is_none() {
                let mut msg = format!("{addr}: {}", status.message());
                if let Some(src) = std::error::Error::source(&status) {
                    msg = format!("{msg}: {}", error_chain(src));
                }
                err.msg = msg;
            }
            debug!(%addr, code = ?status.code(), error = %err, "request failed");
            Err(err)
        }
        Err(_) => Err(DaosError::new(
            Der::TIMEDOUT,
            format!("{addr}: no answer within {}s", limit.as_secs()),
        )),
    }
}

/// Finds `leader: host:port` in a "not leader" message.
pub fn leader_hint(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("leader: ")?;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(*c))
        .collect();
    let addr = addr.trim_end_matches([':', '.']);
    let (host, port) = addr.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)).then(|| addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportConfig;

    #[test]
    fn finds_the_leader_in_a_not_leader_message() {
        assert_eq!(
            leader_hint("not the leader; leader: 10.0.0.2:10001").as_deref(),
            Some("10.0.0.2:10001")
        );
        assert_eq!(
            leader_hint("MS replica (leader: [::1]:10001), try there").as_deref(),
            Some("[::1]:10001")
        );
        assert_eq!(leader_hint("no leader elected"), None);
        assert_eq!(leader_hint("leader: unknown"), None);
        assert_eq!(leader_hint("leader: h:0"), None);
    }

    fn secure_client(t: TransportConfig) -> Result<ControlClient, Error> {
        let cfg = ControlConfig {
            transport_config: t,
            ..ControlConfig::default()
        };
        ControlClient::new(&cfg, vec!["h:1".to_string()], false)
    }

    #[test]
    fn missing_certificates_name_the_key_and_path() {
        let t = TransportConfig {
            allow_insecure: false,
            ca_cert: "/nonexistent/ca.crt".into(),
            cert: "/nonexistent/admin.crt".into(),
            key: "/nonexistent/admin.key".into(),
        };
        let e = secure_client(t).unwrap_err();
        assert_eq!(e.der(), Der::INVAL);
        let e = e.to_string();
        assert!(e.contains("transport_config.ca_cert"), "{e}");
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
        assert!(e.contains("pass -i"), "{e}");
    }

    #[test]
    fn insecure_flag_skips_certificates() {
        let mut cfg = ControlConfig::default();
        cfg.transport_config.ca_cert = "/nonexistent/ca.crt".into();
        let addrs = vec!["h:1".to_string()];
        assert!(ControlClient::new(&cfg, addrs.clone(), false).is_err());
        let client = ControlClient::new(&cfg, addrs, true).unwrap();
        assert!(client.tls.is_none());
    }

    #[test]
    fn garbage_certificates_are_refused_early() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let t = TransportConfig {
            allow_insecure: false,
            ca_cert: junk.clone(),
            cert: junk.clone(),
            key: junk,
        };
        let e = secure_client(t).unwrap_err().to_string();
        assert!(
            e.contains("transport_config.ca_cert") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn unreachable_hosts_report_der_unreach() {
        let client = ControlClient {
            addrs: vec!["127.0.0.1:1".into()],
            tls: None,
        };
        let err = client
            .call_ms(CallTimeout::Short, |mut c: Client| async move {
                c.leader_query(proto::mgmt::LeaderQueryReq {}).await
            })
            .await
            .unwrap_err();
        assert_eq!(err.der, Der::UNREACH);
        assert!(
            err.msg.contains("unable to reach any of [127.0.0.1:1]"),
            "{err}"
        );
        let each = client
            .call_each(CallTimeout::Short, |mut c: Client| async move {
                c.server_version(proto::mgmt::ServerVersionReq {}).await
            })
            .await;
        assert_eq!(each.len(), 1);
        assert_eq!(each[0].result.as_ref().unwrap_err().der, Der::UNREACH);
    }
}
