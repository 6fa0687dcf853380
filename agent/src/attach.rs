//! Attach info: what a client needs to reach the system's engines, fetched from
//! the management servers over gRPC and cached.
//!
//! Invariants: the cache holds at most one response, the last one a server gave
//! with status 0 for the configured system; it is replaced only by another such
//! response. One refresh runs at a time (the slot's async mutex is held across
//! it), so a burst of clients after expiry costs the servers one call. A failed
//! refresh leaves the old copy in place; it is served with a warning, and the
//! servers are not asked again for a few seconds. A refresh dropped half way
//! (its client went away) changes nothing. The servers are always asked for
//! every rank, whatever the client's `all_ranks` says.

use std::future::Future;
use std::time::Duration;

use proto::mgmt::mgmt_svc_client::MgmtSvcClient;
use proto::mgmt::{GetAttachInfoReq, GetAttachInfoResp, PoolFindReq, PoolFindResp};
use proto::names::error_chain;
use proto::tls::TlsFiles;
use proto::{DaosError, Der};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{AccessPoint, CachePolicy, Config};
use crate::error::Error;

/// How long connecting to one access point may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one GetAttachInfo call may take once connected.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Where attach info comes from.
pub(crate) trait AttachSource: Send + Sync + 'static {
    /// Asks the servers for the attach info of system `sys`.
    fn fetch(&self, sys: &str)
        -> impl Future<Output = Result<GetAttachInfoResp, DaosError>> + Send;

    /// Asks the servers where pool `id` (UUID or label) of system `sys` runs its service.
    fn find_pool(
        &self,
        sys: &str,
        id: &str,
    ) -> impl Future<Output = Result<PoolFindResp, DaosError>> + Send;
}

/// The management servers, over gRPC, tried in the configured order.
pub(crate) struct GrpcSource {
    access_points: Vec<AccessPoint>,
    tls: Option<ClientTlsConfig>,
}

impl GrpcSource {
    /// Reads and checks the TLS material the config names (unless insecure). Blocking.
    pub(crate) fn new(cfg: &Config) -> Result<Self, Error> {
        let tls = if cfg.transport_config.allow_insecure {
            None
        } else {
            let t = &cfg.transport_config;
            let (ca_cert, cert, key) = (t.ca_cert_path(), t.cert_path(), t.key_path());
            let files = TlsFiles {
                ca_cert: Some(&ca_cert),
                cert: Some(&cert),
                key: Some(&key),
            };
            Some(files.client().map_err(Error::Tls)?)
        };
        Ok(GrpcSource {
            access_points: cfg.access_points(),
            tls,
        })
    }

    async fn connect(&self, ap: &AccessPoint) -> Result<MgmtSvcClient<Channel>, DaosError> {
        let unreach = |what: &str, e: &dyn std::error::Error| {
            DaosError::new(Der::UNREACH, format!("{what} {ap}: {}", error_chain(e)))
        };
        let mut ep = Endpoint::from_shared(ap.uri(self.tls.is_some()))
            .map_err(|e| DaosError::new(Der::INVAL, format!("access point {ap}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RPC_TIMEOUT);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| unreach("TLS setup for", &e))?;
        }
        let channel = ep
            .connect()
            .await
            .map_err(|e| unreach("connecting to", &e))?;
        Ok(MgmtSvcClient::new(channel))
    }

    async fn fetch_one(&self, ap: &AccessPoint, sys: &str) -> Result<GetAttachInfoResp, DaosError> {
        let req = GetAttachInfoReq {
            sys: sys.to_string(),
            all_ranks: true,
        };
        let resp = self
            .connect(ap)
            .await?
            .get_attach_info(req)
            .await
            .map_err(|st| {
                let e = DaosError::from_status(&st);
                DaosError::new(e.der, format!("GetAttachInfo from {ap}: {}", e.msg))
            })?
            .into_inner();
        DaosError::check(resp.status, &format!("GetAttachInfo from {ap}"))?;
        if !resp.sys.is_empty() && resp.sys != sys {
            return Err(DaosError::new(
                Der::INVAL,
                format!(
                    "server {ap} is in system {:?}, not {sys:?}: check `name` in daos_agent.yml",
                    resp.sys
                ),
            ));
        }
        Ok(resp)
    }

    async fn find_pool_one(
        &self,
        ap: &AccessPoint,
        req: PoolFindReq,
    ) -> Result<PoolFindResp, DaosError> {
        let resp = self
            .connect(ap)
            .await?
            .pool_find(req)
            .await
            .map_err(|st| {
                let e = DaosError::from_status(&st);
                DaosError::new(e.der, format!("PoolFind from {ap}: {}", e.msg))
            })?
            .into_inner();
        DaosError::check(resp.status, &format!("PoolFind from {ap}"))?;
        Ok(resp)
    }
}

/// Failures after which the next access point may do better.
fn try_next(der: Der) -> bool {
    matches!(
        der,
        Der::UNREACH
            | Der::TIMEDOUT
            | Der::NOTLEADER
            | Der::NOTREPLICA
            | Der::AGAIN
            | Der::BUSY
            | Der::SHUTDOWN
    )
}

impl AttachSource for GrpcSource {
    async fn fetch(&self, sys: &str) -> Result<GetAttachInfoResp, DaosError> {
        let mut failures = Vec::new();
        for ap in &self.access_points {
            match self.fetch_one(ap, sys).await {
                Ok(r) => {
                    tracing::debug!(%ap, ranks = r.rank_uris.len(), data_version = r.data_version, "fetched attach info");
                    return Ok(r);
                }
                Err(e) if try_next(e.der) => {
                    tracing::debug!(%ap, "access point did not answer: {e}");
                    failures.push(e.msg);
                }
                Err(e) => return Err(e),
            }
        }
        Err(DaosError::new(
            Der::UNREACH,
            format!(
                "no access point answered for system {sys:?} ({})",
                failures.join("; ")
            ),
        ))
    }

    async fn find_pool(&self, sys: &str, id: &str) -> Result<PoolFindResp, DaosError> {
        let mut failures = Vec::new();
        for ap in &self.access_points {
            let req = PoolFindReq {
                sys: sys.to_string(),
                id: id.to_string(),
            };
            match self.find_pool_one(ap, req).await {
                Ok(r) => return Ok(r),
                Err(e) if try_next(e.der) => failures.push(e.msg),
                Err(e) => return Err(e),
            }
        }
        Err(DaosError::new(
            Der::UNREACH,
            format!(
                "no access point answered for pool {id:?} ({})",
                failures.join("; ")
            ),
        ))
    }
}

struct Cached {
    resp: GetAttachInfoResp,
    fetched: Instant,
    /// When the last refresh of this copy failed: no new attempt before
    /// [`RETRY_AFTER_FAILURE`] has passed, so clients are not each held up
    /// by servers that are down.
    failed: Option<Instant>,
}

/// How long a stale copy is served without asking again after a failed refresh.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Attach info, cached per [`CachePolicy`].
pub(crate) struct AttachCache<S> {
    source: S,
    policy: CachePolicy,
    slot: Mutex<Option<Cached>>,
}

impl<S: AttachSource> AttachCache<S> {
    pub(crate) fn new(source: S, policy: CachePolicy) -> Self {
        AttachCache {
            source,
            policy,
            slot: Mutex::new(None),
        }
    }

    /// Where pool `id` runs its service; never cached (pools come and go).
    pub(crate) async fn find_pool(&self, sys: &str, id: &str) -> Result<PoolFindResp, DaosError> {
        self.source.find_pool(sys, id).await
    }

    /// The attach info of `sys`: cached if fresh, else fetched; the stale copy
    /// if the fetch fails (or failed less than [`RETRY_AFTER_FAILURE`] ago).
    pub(crate) async fn get(&self, sys: &str) -> Result<GetAttachInfoResp, DaosError> {
        let ttl = match self.policy {
            CachePolicy::Disabled => return self.source.fetch(sys).await,
            CachePolicy::Forever => None,
            CachePolicy::For(d) => Some(d),
        };
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if ttl.is_none_or(|ttl| c.fetched.elapsed() < ttl) {
                return Ok(c.resp.clone());
            }
            if c.failed.is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE) {
                return Ok(c.resp.clone());
            }
        }
        match self.source.fetch(sys).await {
            Ok(resp) => {
                *slot = Some(Cached {
                    resp: resp.clone(),
                    fetched: Instant::now(),
                    failed: None,
                });
                Ok(resp)
            }
            Err(e) => match slot.as_mut() {
                Some(c) => {
                    c.failed = Some(Instant::now());
                    tracing::warn!(
                        age_s = c.fetched.elapsed().as_secs(),
                        "attach info refresh failed, serving the cached copy: {e}"
                    );
                    Ok(c.resp.clone())
                }
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Answers with `data_version` = the call number, or fails while `down` is set.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
        down: std::sync::atomic::AtomicBool,
    }

    impl AttachSource for Arc<Counting> {
        async fn fetch(&self, sys: &str) -> Result<GetAttachInfoResp, DaosError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.down.load(Ordering::SeqCst) {
                return Err(DaosError::new(Der::UNREACH, "down"));
            }
            Ok(GetAttachInfoResp {
                sys: sys.into(),
                data_version: n.into(),
                ..Default::default()
            })
        }
        async fn find_pool(&self, _: &str, _: &str) -> Result<PoolFindResp, DaosError> {
            Err(DaosError::new(Der::NOSYS, "not used"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cache_expires_and_serves_stale_on_failure() {
        let src = Arc::new(Counting::default());
        let c = AttachCache::new(src.clone(), CachePolicy::For(Duration::from_secs(60)));
        assert_eq!(c.get("s").await.unwrap().data_version, 1);
        assert_eq!(c.get("s").await.unwrap().data_version, 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        src.down.store(true, Ordering::SeqCst);
        // Refresh fails: the stale copy is served, and not asked for again
        // until RETRY_AFTER_FAILURE has passed.
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        assert_eq!(src.calls.load(Ordering::SeqCst), 3);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        assert_eq!(src.calls.load(Ordering::SeqCst), 4);
        src.down.store(false, Ordering::SeqCst);
        // Servers back, but the last failure is recent: still the old copy.
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert_eq!(c.get("s").await.unwrap().data_version, 5);
        assert_eq!(c.get("s").await.unwrap().data_version, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn forever_and_disabled() {
        let src = Arc::new(Counting::default());
        let c = AttachCache::new(src.clone(), CachePolicy::Forever);
        c.get("s").await.unwrap();
        tokio::time::advance(Duration::from_secs(1 << 30)).await;
        assert_eq!(c.get("s").await.unwrap().data_version, 1);

        let src = Arc::new(Counting::default());
        let c = AttachCache::new(src.clone(), CachePolicy::Disabled);
        assert_eq!(c.get("s").await.unwrap().data_version, 1);
        assert_eq!(c.get("s").await.unwrap().data_version, 2);
        src.down.store(true, Ordering::SeqCst);
        assert_eq!(c.get("s").await.unwrap_err().der, Der::UNREACH);
    }

    #[tokio::test]
    async fn nothing_cached_and_servers_down_is_an_error() {
        let src = Arc::new(Counting {
            down: true.into(),
            ..Default::default()
        });
        let c = AttachCache::new(src, CachePolicy::Forever);
        assert_eq!(c.get("s").await.unwrap_err().der, Der::UNREACH);
    }

    #[test]
    fn missing_tls_files_name_the_key() {
        let cfg = Config {
            transport_config: crate::config::TransportConfig {
                allow_insecure: false,
                ca_cert: Some("/nonexistent/ca.crt".into()),
                ..Default::default()
            },
            ..Config::default()
        };
        let e = GrpcSource::new(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("transport_config.ca_cert /nonexistent/ca.crt")
                && e.contains("allow_insecure"),
            "{e}"
        );
    }

    #[test]
    fn non_pem_tls_files_are_refused_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let cfg = Config {
            transport_config: crate::config::TransportConfig {
                allow_insecure: false,
                ca_cert: Some(junk.clone()),
                cert: Some(junk.clone()),
                key: Some(junk),
            },
            ..Config::default()
        };
        let e = GrpcSource::new(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("transport_config.ca_cert") && e.contains("no PEM certificate"),
            "{e}"
        );
    }
}
