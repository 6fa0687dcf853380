//! `daos_agent dump-attachinfo`: asks the running agent, through its socket as
//! a client would, for the attach info it serves, and renders it.

use std::fmt::Write as _;
use std::path::Path;

use proto::drpc::{method, module, DrpcClient};
use proto::mgmt::{GetAttachInfoReq, GetAttachInfoResp};
use proto::{DaosError, Der};

/// The attach info the agent at `sock` serves for `sys`; a nonzero status is an error.
pub async fn fetch(sock: &Path, sys: &str) -> Result<GetAttachInfoResp, DaosError> {
    let mut c = DrpcClient::connect(sock).await.map_err(|e| {
        DaosError::new(
            Der::UNREACH,
            format!(
                "daos_agent not reachable at {}: {e}; is it running?",
                sock.display()
            ),
        )
    })?;
    let req = GetAttachInfoReq {
        sys: sys.to_string(),
        all_ranks: true,
    };
    let resp: GetAttachInfoResp = c.call(module::MGMT, method::GET_ATTACH_INFO, &req).await?;
    DaosError::check(
        resp.status,
        &format!("attach info of system {sys:?} (the daos_agent log says why)"),
    )?;
    Ok(resp)
}

/// Human-readable rendering.
pub fn to_text(r: &GetAttachInfoResp) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "System: {}", r.sys);
    let _ = writeln!(s, "Data version: {}", r.data_version);
    let _ = writeln!(s, "Access points: {}", r.access_points.join(", "));
    let ms: Vec<String> = r.ms_ranks.iter().map(ToString::to_string).collect();
    let _ = writeln!(s, "MS ranks: {}", ms.join(", "));
    if let Some(h) = &r.client_net_hint {
        let _ = writeln!(
            s,
            "Client network hint: provider {}, interface {}, domain {}, CaRT timeout {}s",
            h.provider, h.interface, h.domain, h.crt_timeout
        );
    }
    let _ = writeln!(s, "Rank URIs:");
    for u in &r.rank_uris {
        let _ = writeln!(
            s,
            "  rank {}: {} ({}, {} contexts)",
            u.rank, u.uri, u.provider, u.nctxs
        );
    }
    s
}

/// JSON rendering (`-j`).
pub fn to_json(r: &GetAttachInfoResp) -> serde_json::Value {
    let hint = r.client_net_hint.clone().unwrap_or_default();
    let ranks: Vec<_> = r
        .rank_uris
        .iter()
        .map(|u| serde_json::json!({"rank": u.rank, "uri": u.uri, "provider": u.provider, "nctxs": u.nctxs}))
        .collect();
    serde_json::json!({
        "sys": r.sys,
        "data_version": r.data_version,
        "access_points": r.access_points,
        "ms_ranks": r.ms_ranks,
        "client_net_hint": {
            "provider": hint.provider,
            "interface": hint.interface,
            "domain": hint.domain,
            "crt_timeout": hint.crt_timeout,
        },
        "rank_uris": ranks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mgmt::{ClientNetHint, RankUri};

    #[test]
    fn renders() {
        let r = GetAttachInfoResp {
            sys: "daos_server".into(),
            rank_uris: vec![RankUri {
                rank: 1,
                uri: "tcp://10.0.0.1:31416".into(),
                provider: "ofi+tcp".into(),
                nctxs: 4,
            }],
            ms_ranks: vec![0, 1],
            client_net_hint: Some(ClientNetHint {
                provider: "ofi+tcp".into(),
                crt_timeout: 60,
                ..Default::default()
            }),
            data_version: 7,
            ..Default::default()
        };
        let t = to_text(&r);
        assert!(
            t.contains("System: daos_server") && t.contains("MS ranks: 0, 1"),
            "{t}"
        );
        assert!(
            t.contains("rank 1: tcp://10.0.0.1:31416 (ofi+tcp, 4 contexts)"),
            "{t}"
        );
        let j = to_json(&r);
        assert_eq!(j["rank_uris"][0]["uri"], "tcp://10.0.0.1:31416");
        assert_eq!(j["client_net_hint"]["crt_timeout"], 60);
    }
}
