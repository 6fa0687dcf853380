//! The agent's dRPC methods: credentials (SEC_AGENT/REQUEST_CREDS) and attach
//! info (MGMT/GET_ATTACH_INFO).
//!
//! Invariant: an application failure is answered, with its DER code in the
//! response's `status`; only an unknown module or method, or a body that does
//! not decode, fails the call at the dRPC level. The caller's identity is the
//! connection's [`ConnInfo::peer`], never the request body.

use std::sync::Arc;

use prost::Message as _;
use proto::auth::CredSigner;
use proto::auth_pb::{GetCredReq, GetCredResp};
use proto::drpc::{method, module, ConnInfo, Handler, HandlerError};
use proto::mgmt::{GetAttachInfoReq, GetAttachInfoResp, PoolFindReq, PoolFindResp};
use proto::{DaosError, Der};

use crate::attach::{AttachCache, AttachSource};
use crate::creds::{self, IdentityDb};

/// Serves one agent's dRPC socket.
pub(crate) struct AgentHandler<S, D> {
    /// The configured system name.
    sys_name: String,
    /// This host's name, stamped into credentials.
    machinename: String,
    signer: CredSigner,
    db: Arc<D>,
    attach: AttachCache<S>,
}

impl<S: AttachSource, D: IdentityDb + Send + Sync + 'static> AgentHandler<S, D> {
    pub(crate) fn new(
        sys_name: String,
        machinename: String,
        signer: CredSigner,
        db: D,
        attach: AttachCache<S>,
    ) -> Self {
        AgentHandler {
            sys_name,
            machinename,
            signer,
            db: Arc::new(db),
            attach,
        }
    }

    /// Signs the identity of the connection's peer.
    async fn request_creds(&self, conn: ConnInfo) -> GetCredResp {
        let db = self.db.clone();
        let host = self.machinename.clone();
        let peer = conn.peer;
        let built = tokio::task::spawn_blocking(move || {
            creds::auth_sys(&*db, peer, &host, creds::now_ns())
        })
        .await
        .unwrap_or_else(|e| {
            Err(DaosError::new(
                Der::MISC,
                format!("credential lookup task failed: {e}"),
            ))
        });
        match built {
            Ok(sys) => {
                tracing::debug!(
                    conn = conn.id,
                    uid = sys.uid,
                    gid = sys.gid,
                    pid = sys.pid,
                    "credential issued"
                );
                GetCredResp {
                    status: 0,
                    cred: Some(self.signer.sign(&sys)),
                }
            }
            Err(e) => {
                tracing::warn!(
                    conn = conn.id,
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid.unwrap_or_default(),
                    "credential refused: {e}"
                );
                GetCredResp {
                    status: e.der.code(),
                    cred: None,
                }
            }
        }
    }

    /// Where a pool's service runs, asked of the servers each time.
    async fn pool_find(&self, conn: ConnInfo, req: PoolFindReq) -> PoolFindResp {
        let sys = if req.sys.is_empty() {
            &self.sys_name
        } else {
            &req.sys
        };
        if *sys != self.sys_name {
            return PoolFindResp {
                status: Der::INVAL.code(),
                ..Default::default()
            };
        }
        match self.attach.find_pool(sys, &req.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(conn = conn.id, pool = %req.id, "pool find failed: {e}");
                PoolFindResp {
                    status: e.der.code(),
                    ..Default::default()
                }
            }
        }
    }

    /// The attach info of the configured system.
    async fn get_attach_info(&self, conn: ConnInfo, req: GetAttachInfoReq) -> GetAttachInfoResp {
        let failed = |e: &DaosError, sys: &str| GetAttachInfoResp {
            status: e.der.code(),
            sys: sys.to_string(),
            ..Default::default()
        };
        if !req.sys.is_empty() && req.sys != self.sys_name {
            let e = DaosError::new(
                Der::INVAL,
                format!(
                    "system {:?} requested, this agent serves {:?}",
                    req.sys, self.sys_name
                ),
            );
            tracing::warn!(
                conn = conn.id,
                pid = conn.peer.pid.unwrap_or_default(),
                "attach info refused: {e}"
            );
            return failed(&e, &req.sys);
        }
        match self.attach.get(&self.sys_name).await {
            Ok(mut resp) => {
                if resp.sys.is_empty() {
                    resp.sys = self.sys_name.clone();
                }
                tracing::debug!(
                    conn = conn.id,
                    pid = conn.peer.pid.unwrap_or_default(),
                    ranks = resp.rank_uris.len(),
                    "attach info served"
                );
                resp
            }
            Err(e) => {
                tracing::error!(
                    conn = conn.id,
                    pid = conn.peer.pid.unwrap_or_default(),
                    "attach info for system {:?} unavailable: {e}",
                    self.sys_name
                );
                failed(&e, &self.sys_name)
            }
        }
    }
}

impl<S: AttachSource, D: IdentityDb + Send + Sync + 'static> Handler for AgentHandler<S, D> {
    async fn handle(
        &self,
        conn: ConnInfo,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, HandlerError> {
        match (module, method) {
            (module::SEC_AGENT, method::REQUEST_CREDS) => {
                GetCredReq::decode(body.as_slice())?;
                Ok(self.request_creds(conn).await.encode_to_vec())
            }
            (module::MGMT, method::GET_ATTACH_INFO) => {
                let req = GetAttachInfoReq::decode(body.as_slice())?;
                Ok(self.get_attach_info(conn, req).await.encode_to_vec())
            }
            (module::MGMT, method::POOL_FIND) => {
                let req = PoolFindReq::decode(body.as_slice())?;
                Ok(self.pool_find(conn, req).await.encode_to_vec())
            }
            (module::SEC_AGENT | module::MGMT, _) => Err(HandlerError::UnknownMethod),
            _ => Err(HandlerError::UnknownModule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::drpc::PeerCred;

    struct OneUser;
    impl IdentityDb for OneUser {
        fn user_name(&self, uid: u32) -> Result<Option<String>, DaosError> {
            Ok((uid == 7).then(|| "u".to_string()))
        }
        fn group_name(&self, gid: u32) -> Result<Option<String>, DaosError> {
            Ok((gid == 8).then(|| "g".to_string()))
        }
        fn group_list(&self, _: &str, gid: u32) -> Result<Vec<u32>, DaosError> {
            Ok(vec![gid])
        }
    }

    struct Fixed(Result<GetAttachInfoResp, DaosError>);
    impl AttachSource for Fixed {
        async fn fetch(&self, _: &str) -> Result<GetAttachInfoResp, DaosError> {
            self.0.clone()
        }
        async fn find_pool(&self, _: &str, id: &str) -> Result<PoolFindResp, DaosError> {
            Err(DaosError::new(
                Der::NONEXIST,
                format!("pool {id:?} does not exist"),
            ))
        }
    }

    fn handler(src: Fixed) -> (AgentHandler<Fixed, OneUser>, CredSigner) {
        let signer = CredSigner::generate();
        let copy = CredSigner::from_pem(&signer.to_pem().unwrap()).unwrap();
        let cache = AttachCache::new(src, crate::config::CachePolicy::Forever);
        (
            AgentHandler::new("sys".into(), "host".into(), signer, OneUser, cache),
            copy,
        )
    }

    fn conn(uid: u32) -> ConnInfo {
        ConnInfo {
            id: 1,
            peer: PeerCred {
                uid,
                gid: 8,
                pid: Some(99),
            },
        }
    }

    #[tokio::test]
    async fn credential_is_the_peers_and_signed() {
        let (h, signer) = handler(Fixed(Err(DaosError::new(Der::UNREACH, "x"))));
        let body = h
            .handle(
                conn(7),
                module::SEC_AGENT,
                method::REQUEST_CREDS,
                Vec::new(),
            )
            .await
            .unwrap();
        let resp = GetCredResp::decode(body.as_slice()).unwrap();
        assert_eq!(resp.status, 0);
        let vk = proto::auth::verifying_key_from_pem(&signer.public_pem().unwrap()).unwrap();
        let sys = proto::auth::verify(&resp.cred.unwrap(), &vk).unwrap();
        assert_eq!(
            (
                sys.uid,
                sys.gid,
                sys.pid,
                sys.user.as_str(),
                sys.machinename.as_str()
            ),
            (7, 8, 99, "u@", "host")
        );

        let body = h
            .handle(
                conn(6),
                module::SEC_AGENT,
                method::REQUEST_CREDS,
                Vec::new(),
            )
            .await
            .unwrap();
        let resp = GetCredResp::decode(body.as_slice()).unwrap();
        assert_eq!((resp.status, resp.cred), (Der::NONEXIST.code(), None));
    }

    #[tokio::test]
    async fn attach_info_statuses() {
        let (h, _) = handler(Fixed(Err(DaosError::new(Der::UNREACH, "down"))));
        let call = |sys: &str| {
            GetAttachInfoReq {
                sys: sys.into(),
                all_ranks: false,
            }
            .encode_to_vec()
        };
        let body = h
            .handle(conn(7), module::MGMT, method::GET_ATTACH_INFO, call("sys"))
            .await
            .unwrap();
        assert_eq!(
            GetAttachInfoResp::decode(body.as_slice()).unwrap().status,
            Der::UNREACH.code()
        );
        let body = h
            .handle(
                conn(7),
                module::MGMT,
                method::GET_ATTACH_INFO,
                call("other"),
            )
            .await
            .unwrap();
        assert_eq!(
            GetAttachInfoResp::decode(body.as_slice()).unwrap().status,
            Der::INVAL.code()
        );

        let (h, _) = handler(Fixed(Ok(GetAttachInfoResp {
            data_version: 4,
            ..Default::default()
        })));
        let body = h
            .handle(conn(7), module::MGMT, method::GET_ATTACH_INFO, call(""))
            .await
            .unwrap();
        let r = GetAttachInfoResp::decode(body.as_slice()).unwrap();
        assert_eq!((r.status, r.sys.as_str(), r.data_version), (0, "sys", 4));
    }

    #[tokio::test]
    async fn unknown_calls_and_bad_bodies() {
        let (h, _) = handler(Fixed(Err(DaosError::new(Der::UNREACH, "x"))));
        assert!(matches!(
            h.handle(conn(7), 99, 1, vec![]).await,
            Err(HandlerError::UnknownModule)
        ));
        assert!(matches!(
            h.handle(conn(7), module::MGMT, 1, vec![]).await,
            Err(HandlerError::UnknownMethod)
        ));
        assert!(matches!(
            h.handle(conn(7), module::SEC_AGENT, method::POOL_CREATE, vec![])
                .await,
            Err(HandlerError::UnknownMethod)
        ));
        let r = h
            .handle(
                conn(7),
                module::MGMT,
                method::GET_ATTACH_INFO,
                vec![0xff, 0xff, 0xff],
            )
            .await;
        assert!(matches!(r, Err(HandlerError::BadPayload(_))));
    }
}
