//! The client side of daos_agent's socket: attach info and credentials.
//!
//! A client never builds its own identity: it asks the local agent, which reads
//! the caller's uid/gid from the kernel and signs the result. The credential is
//! opaque here; engines verify it with the agent's public key.
//!
//! One [`AgentClient`] holds one connection and makes one call at a time.
//! After a call that broke the connection (I/O error, timeout, a reply out of
//! sequence) the next call connects afresh: [`DrpcClient`] does that, so a
//! restarted agent is picked up without a new client. The agent answers
//! failures in the response's `status`, which this module turns into
//! [`Error::Daos`]; dRPC failures get `proto`'s DER codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::auth_pb::{Credential, GetCredReq, GetCredResp};
use proto::drpc::{method, module, DrpcClient, DrpcError};
use proto::mgmt::{GetAttachInfoReq, GetAttachInfoResp, PoolFindReq, PoolFindResp};
use proto::{DaosError, Der};

use crate::error::Error;

/// The environment variable naming the agent's socket directory, as in DAOS.
pub const AGENT_DIR_ENV: &str = "DAOS_AGENT_DRPC_DIR";

/// How long one call to the agent may take: covers the agent asking every
/// access point in turn.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent socket path for socket directory `dir`, else `$DAOS_AGENT_DRPC_DIR`,
/// else DAOS's default directory.
pub fn socket_path(dir: Option<&Path>) -> PathBuf {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os(AGENT_DIR_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(proto::DEFAULT_AGENT_RUNTIME_DIR),
        },
    };
    dir.join(proto::AGENT_SOCK_NAME)
}

/// A connection to the local daos_agent.
pub struct AgentClient {
    conn: DrpcClient,
}

impl AgentClient {
    /// Connects to the agent whose socket directory is `dir` (see [`socket_path`]).
    pub async fn connect(dir: Option<&Path>) -> Result<Self, Error> {
        Self::connect_socket(&socket_path(dir)).await
    }

    /// Connects to the agent socket at `path`.
    pub async fn connect_socket(path: &Path) -> Result<Self, Error> {
        let conn = DrpcClient::connect(path)
            .await
            .map_err(|e| Error::AgentUnreachable {
                path: path.to_path_buf(),
                source: DaosError::from(e),
            })?
            .with_timeout(CALL_TIMEOUT);
        Ok(AgentClient { conn })
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        self.conn.path()
    }

    async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        module: i32,
        method: i32,
        req: &Req,
    ) -> Result<Resp, Error> {
        self.conn.call(module, method, req).await.map_err(|e| {
            // The agent went away: same advice as a failed connect.
            let gone = matches!(
                e,
                DrpcError::Connect { .. } | DrpcError::Closed | DrpcError::Io(_)
            );
            let (path, source) = (self.conn.path().to_path_buf(), DaosError::from(e));
            if gone {
                Error::AgentUnreachable { path, source }
            } else {
                Error::Agent { path, source }
            }
        })
    }

    /// The attach info of system `sys` (empty: the agent's system): the ranks'
    /// data-plane addresses and the client network hint. A nonzero `status`
    /// from the agent is an [`Error::Daos`] with that code.
    pub async fn get_attach_info(&mut self, sys: &str) -> Result<GetAttachInfoResp, Error> {
        let req = GetAttachInfoReq {
            sys: sys.to_string(),
            all_ranks: true,
        };
        let resp: GetAttachInfoResp = self
            .call(module::MGMT, method::GET_ATTACH_INFO, &req)
            .await?;
        check(resp.status, || {
            format!("daos_agent: attach info of system {sys:?}")
        })?;
        Ok(resp)
    }

    /// Where pool `id` (UUID or label) of system `sys` runs its service.
    pub async fn pool_find(&mut self, sys: &str, id: &str) -> Result<PoolFindResp, Error> {
        let req = PoolFindReq {
            sys: sys.to_string(),
            id: id.to_string(),
        };
        let resp: PoolFindResp = self.call(module::MGMT, method::POOL_FIND, &req).await?;
        check(resp.status, || format!("pool {id:?}"))?;
        Ok(resp)
    }

    /// A credential naming this process, signed by the agent.
    pub async fn request_credential(&mut self) -> Result<Credential, Error> {
        let resp: GetCredResp = self
            .call(module::SEC_AGENT, method::REQUEST_CREDS, &GetCredReq {})
            .await?;
        check(resp.status, || "daos_agent: credential".to_string())?;
        resp.cred.ok_or_else(|| {
            DaosError::new(
                Der::PROTO,
                "daos_agent: credential response carries no credential",
            )
            .into()
        })
    }
}

/// Maps a response `status` to an error; an unknown nonzero code is DER_MISC.
fn check(status: i32, what: impl FnOnce() -> String) -> Result<(), Error> {
    if status == 0 {
        return Ok(());
    }
    let err = match Der::from_code(status) {
        Some(der) => DaosError::new(der, what()),
        None => DaosError::new(Der::MISC, format!("{} (unknown status {status})", what())),
    };
    Err(err.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message as _;
    use proto::auth_pb::Token;
    use proto::drpc::{ConnInfo, Handler, HandlerError};

    use super::*;

    /// An agent stand-in: answers attach info with `status`, and credentials
    /// with a fixed token (or none when `status` is nonzero).
    struct Fake {
        status: i32,
    }

    impl Handler for Fake {
        async fn handle(
            &self,
            c: ConnInfo,
            module: i32,
            method: i32,
            body: Vec<u8>,
        ) -> Result<Vec<u8>, HandlerError> {
            match (module, method) {
                (module::MGMT, method::GET_ATTACH_INFO) => {
                    let req = GetAttachInfoReq::decode(body.as_slice())?;
                    Ok(GetAttachInfoResp {
                        status: self.status,
                        sys: req.sys,
                        data_version: 9,
                        ..Default::default()
                    }
                    .encode_to_vec())
                }
                (module::SEC_AGENT, method::REQUEST_CREDS) => {
                    let cred = (self.status == 0).then(|| Credential {
                        token: Some(Token {
                            flavor: 1,
                            data: c.peer.uid.to_le_bytes().to_vec(),
                        }),
                        ..Default::default()
                    });
                    Ok(GetCredResp {
                        status: self.status,
                        cred,
                    }
                    .encode_to_vec())
                }
                _ => Err(HandlerError::UnknownModule),
            }
        }
    }

    async fn fake(status: i32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let l = proto::drpc::bind(&dir.path().join(proto::AGENT_SOCK_NAME)).unwrap();
        tokio::spawn(proto::drpc::serve(
            l,
            Arc::new(Fake { status }),
            std::future::pending(),
        ));
        let d = dir.path().to_path_buf();
        (dir, d)
    }

    #[test]
    fn socket_path_prefers_argument() {
        assert_eq!(
            socket_path(Some(Path::new("/a"))),
            Path::new("/a/daos_sock")
        );
        // The environment fallback is not tested here: tests share one process
        // environment.
    }

    #[tokio::test]
    async fn calls_and_status_mapping() {
        let (_d, dir) = fake(0).await;
        let mut c = AgentClient::connect(Some(&dir)).await.unwrap();
        assert_eq!(c.get_attach_info("s").await.unwrap().data_version, 9);
        let cred = c.request_credential().await.unwrap();
        assert_eq!(
            cred.token.unwrap().data,
            nix::unistd::getuid().as_raw().to_le_bytes()
        );

        let (_d, dir) = fake(Der::UNREACH.code()).await;
        let mut c = AgentClient::connect(Some(&dir)).await.unwrap();
        let e = c.get_attach_info("s").await.unwrap_err();
        assert_eq!(e.der(), Der::UNREACH);
        assert!(e.to_string().contains("DER_UNREACH"), "{e}");
        assert_eq!(
            c.request_credential().await.unwrap_err().der(),
            Der::UNREACH
        );

        let (_d, dir) = fake(-77777).await;
        let mut c = AgentClient::connect(Some(&dir)).await.unwrap();
        let e = c.get_attach_info("s").await.unwrap_err();
        assert_eq!(e.der(), Der::MISC);
        assert!(e.to_string().contains("-77777"), "{e}");
    }

    /// Knows no module: an agent too old or too new for this client.
    struct Nothing;

    impl Handler for Nothing {
        async fn handle(
            &self,
            _c: ConnInfo,
            _module: i32,
            _method: i32,
            _body: Vec<u8>,
        ) -> Result<Vec<u8>, HandlerError> {
            Err(HandlerError::UnknownMethod)
        }
    }

    #[tokio::test]
    async fn unknown_method_is_nosys() {
        let dir = tempfile::tempdir().unwrap();
        let l = proto::drpc::bind(&dir.path().join(proto::AGENT_SOCK_NAME)).unwrap();
        tokio::spawn(proto::drpc::serve(
            l,
            Arc::new(Nothing),
            std::future::pending(),
        ));
        let mut c = AgentClient::connect(Some(dir.path())).await.unwrap();
        let e = c.request_credential().await.unwrap_err();
        assert!(matches!(e, Error::Agent { .. }), "{e}");
        assert_eq!(e.der(), Der::NOSYS);
        // A status failure leaves the connection usable.
        assert_eq!(c.get_attach_info("s").await.unwrap_err().der(), Der::NOSYS);
    }

    #[tokio::test]
    async fn the_call_after_a_broken_connection_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let l = proto::drpc::bind(&dir.path().join(proto::AGENT_SOCK_NAME)).unwrap();
        tokio::spawn(async move {
            // The first connection is dropped after its first call, unanswered.
            let (mut s, _) = l.accept().await.unwrap();
            let _ = proto::drpc::read_frame::<_, proto::drpc::Call>(&mut s).await;
            drop(s);
            proto::drpc::serve(l, Arc::new(Fake { status: 0 }), std::future::pending()).await;
        });
        let mut c = AgentClient::connect(Some(dir.path())).await.unwrap();
        let e = c.get_attach_info("s").await.unwrap_err();
        assert!(matches!(e, Error::AgentUnreachable { .. }), "{e}");
        assert_eq!(e.der(), Der::UNREACH);
        assert!(e.to_string().contains("is daos_agent running?"), "{e}");
        assert_eq!(c.get_attach_info("s").await.unwrap().data_version, 9);
    }

    #[tokio::test]
    async fn missing_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = AgentClient::connect(Some(dir.path())).await.err().unwrap();
        assert_eq!(e.der(), Der::UNREACH);
        let msg = e.to_string();
        assert!(
            msg.contains("daos_agent not reachable at") && msg.contains("is daos_agent running?"),
            "{msg}"
        );
        assert!(
            msg.contains(&dir.path().join("daos_sock").display().to_string()),
            "{msg}"
        );
    }
}
