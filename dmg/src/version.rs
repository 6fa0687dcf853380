//! `dmg version` and `dmg server-version`: dmg's own version, and each
//! host's daos_server version.

use proto::mgmt::{ServerVersionReq, ServerVersionResp};
use serde_json::json;

use crate::control::{CallTimeout, Client};
use crate::fanout::HostAnswers;
use crate::output::Outcome;
use crate::table::group_rows;
use crate::Context;

/// Renders `dmg version`.
pub fn render_version() -> Outcome {
    Outcome::ok(
        format!("dmg version {}\n", proto::VERSION),
        json!({ "version": proto::VERSION }),
    )
}

pub async fn server_version(ctx: &Context) -> Outcome {
    let results = ctx
        .client
        .call_each(CallTimeout::Short, |mut c: Client| async move {
            c.server_version(ServerVersionReq {}).await
        })
        .await;
    render_server_version(&HostAnswers::new(results))
}

/// Renders `dmg server-version`: one line per version, naming the hosts
/// unless every host asked runs it.
pub fn render_server_version(answers: &HostAnswers<ServerVersionResp>) -> Outcome {
    let rows = answers
        .ok
        .iter()
        .map(|(host, r)| (host.clone(), vec![r.version.clone()]))
        .collect();
    let groups = group_rows(rows);
    let everyone = groups.len() == 1 && answers.errors.is_empty();
    let mut text = String::new();
    for (hosts, version) in groups {
        let version = version.concat();
        if everyone {
            text.push_str(&format!("daos_server version {version}\n"));
        } else {
            text.push_str(&format!("{hosts}: daos_server version {version}\n"));
        }
    }
    text.push_str(&answers.errors_text());
    let json = json!({
        "hosts": answers.ok.iter().map(|(host, r)| json!({
            "host": host,
            "reported_host": r.host,
            "version": r.version,
        })).collect::<Vec<_>>(),
        "host_errors": answers.errors_json(),
    });
    Outcome::ok(text, json).with_failure(answers.failure("server-version failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HostResult;
    use crate::output::Envelope;
    use proto::{DaosError, Der};
    use serde_json::Value;

    fn answer(addr: &str, version: &str) -> HostResult<ServerVersionResp> {
        HostResult {
            addr: addr.into(),
            result: Ok(ServerVersionResp {
                version: version.into(),
                host: "node".into(),
            }),
        }
    }

    #[test]
    fn versions() {
        let o = render_version();
        assert_eq!(o.text, format!("dmg version {}\n", proto::VERSION));
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["response"]["version"], proto::VERSION);

        let same = HostAnswers::new(vec![answer("a:1", "0.1.0"), answer("b:1", "0.1.0")]);
        assert_eq!(
            render_server_version(&same).text,
            "daos_server version 0.1.0\n"
        );

        let mixed = HostAnswers::new(vec![
            answer("a:1", "0.1.0"),
            answer("b:1", "0.2.0"),
            HostResult {
                addr: "c:1".into(),
                result: Err(DaosError::new(Der::UNREACH, "c:1: refused")),
            },
        ]);
        let o = render_server_version(&mixed);
        assert!(o
            .text
            .starts_with("a: daos_server version 0.1.0\nb: daos_server version 0.2.0\nErrors:\n"));
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["status"], -1006);
        assert_eq!(v["response"]["hosts"][1]["version"], "0.2.0");
    }
}
