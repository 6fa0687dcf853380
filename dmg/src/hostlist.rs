//! Host lists as DAOS writes them: `host1,host2:10002,node[1-4],[::1]:10001`.
//!
//! Every address this module returns is `host:port` (IPv6 hosts in brackets),
//! in the order given, without duplicates, so callers can connect to it as is.

/// Expands and normalises host list entries; a host without a port gets `port`.
pub fn resolve<S: AsRef<str>>(entries: &[S], port: u16) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        for part in split(entry.as_ref()) {
            for host in expand(part)? {
                let addr = proto::names::with_port(&host, port)?;
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
    }
    if out.is_empty() {
        return Err("the host list is empty".to_string());
    }
    Ok(out)
}

/// Splits a comma-separated list on the commas outside brackets.
pub fn split(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Expands numeric ranges in brackets, `node[01-03,7]` into `node01 node02 node03 node07`.
/// Brackets holding anything else (an IPv6 address) are left alone.
fn expand(host: &str) -> Result<Vec<String>, String> {
    let bad = || format!("invalid host range in {host:?}: expected e.g. node[1-4,7]");
    let Some(open) = host.find('[') else {
        return Ok(vec![host.to_string()]);
    };
    let Some(len) = host[open..].find(']') else {
        return Err(format!("invalid host {host:?}: unbalanced '['"));
    };
    let close = open + len;
    let inner = &host[open + 1..close];
    let is_range = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ',');
    if !is_range {
        return Ok(vec![host.to_string()]);
    }
    let (prefix, suffix) = (&host[..open], &host[close + 1..]);
    let mut out = Vec::new();
    for item in inner.split(',').filter(|i| !i.is_empty()) {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        let lo: u64 = lo.parse().map_err(|_| bad())?;
        let hi: u64 = hi.parse().map_err(|_| bad())?;
        if lo > hi || hi - lo >= 10_000 {
            return Err(bad());
        }
        for n in lo..=hi {
            for rest in expand(suffix)? {
                out.push(format!("{prefix}{n:0width$}{rest}"));
            }
        }
    }
    Ok(out)
}

/// Names to print for addresses: the host alone when every address has the same
/// port (as DAOS prints hosts), the full address otherwise.
pub fn display_names(addrs: &[String]) -> Vec<String> {
    let split_port = |a: &str| {
        a.rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.to_string()))
    };
    let parts: Vec<_> = addrs.iter().map(|a| split_port(a)).collect();
    let first_port = parts
        .first()
        .and_then(|p| p.as_ref())
        .map(|(_, p)| p.clone());
    let same_port = parts
        .iter()
        .all(|p| p.as_ref().map(|(_, port)| port) == first_port.as_ref());
    addrs
        .iter()
        .zip(parts)
        .map(|(addr, part)| match part {
            Some((host, _)) if same_port => host,
            _ => addr.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ports_ranges_and_ipv6() {
        let r = resolve(&["h1,h2:10002", "node[08-10]", "[::1]", "::1"], 10001).unwrap();
        assert_eq!(
            r,
            [
                "h1:10001",
                "h2:10002",
                "node08:10001",
                "node09:10001",
                "node10:10001",
                "[::1]:10001"
            ]
        );
        assert_eq!(
            resolve(&["n[1-2,5]:7"], 1).unwrap(),
            ["n1:7", "n2:7", "n5:7"]
        );
        assert_eq!(resolve(&["[fe80::1]:9"], 1).unwrap(), ["[fe80::1]:9"]);
    }

    #[test]
    fn rejects_bad_hosts() {
        for bad in [
            "h:0", "h:x", "h:70000", "n[3-1]", "n[1-", ":5", "[::1]x", ",",
        ] {
            assert!(resolve(&[bad], 10001).is_err(), "{bad}");
        }
        let e = resolve(&["h:x"], 10001).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("\"h:x\""), "{e}");
    }

    #[test]
    fn display_names_drop_a_shared_port() {
        let same = vec!["a:10001".to_string(), "b:10001".to_string()];
        assert_eq!(display_names(&same), ["a", "b"]);
        let mixed = vec!["a:10001".to_string(), "a:10002".to_string()];
        assert_eq!(display_names(&mixed), ["a:10001", "a:10002"]);
    }
}
