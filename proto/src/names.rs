//! Names every component checks the same way: pool labels, user/group
//! principals, `host[:port]` addresses, and error chains for messages.

/// Checks a pool label as DAOS does: 1 to 127 of letters, digits, `_ . : -`,
/// and not shaped like a UUID (labels and UUIDs share one namespace).
pub fn check_label(label: &str) -> Result<(), String> {
    let bad = |why: String| format!("invalid pool label {label:?}: {why}");
    if label.is_empty() || label.len() > 127 {
        return Err(bad("must be 1 to 127 characters".into()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c)))
    {
        return Err(bad(format!(
            "{c:?} is not allowed (letters, digits, '_', '.', ':' and '-' are)"
        )));
    }
    let groups: Vec<&str> = label.split('-').collect();
    let uuid_like = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if uuid_like {
        return Err(bad("a label cannot be a UUID".into()));
    }
    Ok(())
}

/// Checks a system name (`name` in every config file): 1 to 63 letters,
/// digits, `_`, `-` or `.`.
pub fn check_system_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!(
            "{name:?} is not a valid system name: use 1-63 letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// A user or group principal as DAOS writes them: `name@` (a domain after the
/// `@` is kept). Empty stays empty.
pub fn principal(name: &str) -> String {
    match name.trim() {
        "" => String::new(),
        t if t.contains('@') => t.to_string(),
        t => format!("{t}@"),
    }
}

/// Adds `port` to a host that has none and checks the one it has. IPv6
/// addresses come back as `[addr]:port`; a host with several colons must be
/// one (so a typo such as `a:b:c` is an error, not an address that never
/// connects), and spaces or `/` are refused.
pub fn with_port(host: &str, port: u16) -> Result<String, String> {
    let host = host.trim();
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!(
            "invalid host {host:?}: spaces and '/' are not allowed"
        ));
    }
    let addr = host_port(host, port)?;
    if let Some((v6, _)) = addr.strip_prefix('[').and_then(|r| r.split_once(']')) {
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "invalid host {host:?}: {v6:?} is not an IPv6 address"
            ));
        }
    }
    Ok(addr)
}

fn host_port(host: &str, port: u16) -> Result<String, String> {
    let check = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n != 0 => Ok(n),
            _ => Err(format!(
                "invalid port {p:?} in host {host:?}: expected 1-65535"
            )),
        }
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, tail)) = rest.split_once(']') else {
            return Err(format!("invalid host {host:?}: unbalanced '['"));
        };
        return match tail {
            "" => Ok(format!("[{addr}]:{port}")),
            t => match t.strip_prefix(':') {
                Some(p) => Ok(format!("[{addr}]:{}", check(p)?)),
                None => Err(format!("invalid host {host:?}: expected [address]:port")),
            },
        };
    }
    match host.matches(':').count() {
        0 if !host.is_empty() => Ok(format!("{host}:{port}")),
        1 => match host.split_once(':') {
            Some((h, p)) if !h.is_empty() => Ok(format!("{h}:{}", check(p)?)),
            _ => Err(format!("invalid host {host:?}: expected host[:port]")),
        },
        0 => Err("empty host name".into()),
        _ => Ok(format!("[{host}]:{port}")),
    }
}

/// Joins an error and its sources, skipping repeats ("transport error: tcp
/// connect error: Connection refused (os error 111)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label("tank").is_ok());
        assert!(check_label("a:b.c_d-e").is_ok());
        assert!(check_label("").is_err());
        assert!(check_label("a b").is_err());
        assert!(check_label(&"x".repeat(128)).is_err());
        assert!(check_label("8a05bf3a-a088-4a77-bb9f-df989fce7cc8").is_err());
    }

    #[test]
    fn principals() {
        assert_eq!(principal("alice"), "alice@");
        assert_eq!(principal("alice@"), "alice@");
        assert_eq!(principal("alice@lab"), "alice@lab");
        assert_eq!(principal(" "), "");
    }

    #[test]
    fn ports() {
        assert_eq!(with_port("h", 10001).unwrap(), "h:10001");
        assert_eq!(with_port("h:5", 10001).unwrap(), "h:5");
        assert_eq!(with_port("::1", 10001).unwrap(), "[::1]:10001");
        assert_eq!(with_port("[::1]:7", 10001).unwrap(), "[::1]:7");
        for bad in [
            "h:0",
            "h:x",
            ":5",
            "[::1",
            "[::1]x",
            "",
            "a:b:c",
            "http://h:1",
            "a b",
        ] {
            assert!(with_port(bad, 10001).is_err(), "{bad}");
        }
    }
}
