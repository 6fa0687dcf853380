//! daos_agent against a real daos_server and engines: attach info through the
//! agent's socket, as libdaos gets it, with insecure and TLS transports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use libdaos::agent::AgentClient;
use testkit::{free_port, EngineSpec, System};

fn attach_info_matches_membership(sys: &mut System, access_points: &[String]) {
    sys.format();
    let rt = sys.start_agent_with(access_points);
    let members = sys.dmg_json(&["system", "query"]);
    let rt2 = rt.clone();
    let info = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut c = AgentClient::connect(Some(&rt2)).await.unwrap();
            let info = c.get_attach_info("daos_server").await.unwrap();
            // A credential from the same socket verifies with the agent's public key.
            let cred = c.request_credential().await.unwrap();
            let pem = std::fs::read_to_string(rt2.join("agent_cred.pub")).unwrap();
            let key = proto::auth::verifying_key_from_pem(&pem).unwrap();
            let who = proto::auth::verify(&cred, &key).unwrap();
            assert_eq!(who.uid, nix::unistd::getuid().as_raw());
            // Another system's name is refused.
            let e = c.get_attach_info("other_system").await.unwrap_err();
            assert_eq!(e.der(), proto::Der::INVAL, "{e}");
            info
        });
    assert_eq!(info.sys, "daos_server");
    let ranks: Vec<(u64, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["rank"].as_u64().unwrap(),
                m["fabric_uri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let got: Vec<(u64, String)> = info
        .rank_uris
        .iter()
        .map(|r| (u64::from(r.rank), r.uri.clone()))
        .collect();
    assert_eq!(got, ranks);
    assert_eq!(info.client_net_hint.unwrap().provider, "ofi+tcp");
}

#[test]
fn attach_info_through_the_agent() {
    let mut sys = System::new(&[
        EngineSpec::default(),
        EngineSpec {
            targets: 1,
            ..Default::default()
        },
    ]);
    // The first access point is dead: the agent moves on to the next.
    let aps = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", sys.port),
    ];
    attach_info_matches_membership(&mut sys, &aps);
}

#[test]
fn attach_info_through_the_agent_over_tls() {
    let mut sys = System::with_tls(&[EngineSpec::default()]);
    let aps = vec![format!("127.0.0.1:{}", sys.port)];
    attach_info_matches_membership(&mut sys, &aps);
}
