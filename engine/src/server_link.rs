//! The engine's link to daos_server: join with NotifyReady and keep that
//! connection open for as long as the engine lives. The server reads the
//! connection's end as the engine's end. If the server goes away (restart, kill),
//! the engine keeps serving and joins again once a server listens, so a restarted
//! server re-adopts its engines.

use std::path::Path;
use std::time::Duration;

use proto::drpc::{method, module, DrpcClient};
use proto::srv::{NotifyReadyReq, NotifyReadyResp};
use tokio_util::sync::CancellationToken;

/// The server's dRPC socket in `socket_dir`.
pub fn server_sock(socket_dir: &Path) -> std::path::PathBuf {
    socket_dir.join("daos_server.sock")
}

/// Joins and stays joined; `on_join` gets the rank each time the server grants it.
pub async fn stay_joined(
    socket_dir: &Path,
    req: NotifyReadyReq,
    shutdown: CancellationToken,
    on_join: impl Fn(u32),
) {
    let path = server_sock(socket_dir);
    let mut warned = false;
    loop {
        let attempt = async {
            let mut c = DrpcClient::connect(&path)
                .await?
                .with_timeout(Duration::from_secs(30));
            let resp: NotifyReadyResp = c.call(module::SRV, method::NOTIFY_READY, &req).await?;
            Ok::<_, proto::drpc::DrpcError>((c, resp))
        };
        let r = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = attempt => r,
        };
        match r {
            Ok((mut c, resp)) if resp.status == 0 => {
                warned = false;
                tracing::info!(rank = resp.rank, uri = %req.uri, "joined the system");
                on_join(resp.rank);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = c.closed() => tracing::warn!("lost the connection to daos_server; will join again when it is back"),
                }
            }
            Ok((_, resp)) => {
                // Normal for a moment after a server restart (no leader yet): worth
                // one warning, not a line every half second.
                if !warned {
                    let why = proto::Der::from_code(resp.status)
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| resp.status.to_string());
                    tracing::warn!("daos_server refused the join: {why}; retrying");
                    warned = true;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "cannot reach daos_server at {}: {e}; retrying",
                        path.display()
                    );
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
