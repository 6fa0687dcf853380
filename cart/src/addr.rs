//! Data-plane addresses: `tcp://host:port`, and the libfabric spellings
//! `ofi+<provider>://host:port` that DAOS engines report.
//!
//! Invariant: an [`Addr`] always holds a non-empty host and a port, and its
//! `Display` form parses back to an equal `Addr`; that form is the key under
//! which [`crate::Clients`] caches connections.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::error::CartError;

/// The transport a URI names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `tcp://`: TCP over tokio, always built in.
    Tcp,
    /// `ofi+<provider>://` (e.g. `ofi+tcp`, `ofi+verbs`, `ofi+tcp;ofi_rxm`):
    /// libfabric, which this build has no provider for.
    Ofi(String),
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Tcp => f.write_str("tcp"),
            Scheme::Ofi(p) => write!(f, "ofi+{p}"),
        }
    }
}

/// A parsed data-plane URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addr {
    scheme: Scheme,
    /// A name or an IP literal, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

impl Addr {
    /// Parses `scheme://host:port`; IPv6 literals go in brackets
    /// (`tcp://[::1]:20000`). Port 0 is accepted (for listening).
    pub fn parse(uri: &str) -> Result<Addr, CartError> {
        let bad = |reason: &str| CartError::Addr {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host:port"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            s => match s.strip_prefix("ofi+") {
                Some(p) if !p.is_empty() => Scheme::Ofi(p.to_string()),
                _ => return Err(bad("unknown scheme (want tcp:// or ofi+<provider>://)")),
            },
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("bad IPv6 literal in brackets"));
            }
            (h, p)
        } else {
            rest.rsplit_once(':').ok_or_else(|| bad("missing :port"))?
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if !rest.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(bad(
                "host must be a name, an IPv4 literal or a bracketed IPv6 literal",
            ));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("port must be a number from 0 to 65535"))?;
        Ok(Addr {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// The `tcp://` address of a socket address.
    pub fn tcp(sa: SocketAddr) -> Addr {
        Addr {
            scheme: Scheme::Tcp,
            host: sa.ip().to_string(),
            port: sa.port(),
        }
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for Addr {
    type Err = CartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Addr::parse(s)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self.host.parse::<IpAddr>(), Ok(IpAddr::V6(_))) {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        for uri in [
            "tcp://127.0.0.1:20000",
            "tcp://[::1]:31416",
            "tcp://engine-3.example_net:0",
            "ofi+tcp://10.0.0.1:31416",
            "ofi+verbs://10.0.0.1:31416",
            "ofi+tcp;ofi_rxm://10.0.0.1:31416",
        ] {
            let a = Addr::parse(uri).unwrap();
            assert_eq!(a.to_string(), uri);
            assert_eq!(a.to_string().parse::<Addr>().unwrap(), a);
        }
        let a = Addr::parse("tcp://[::1]:7").unwrap();
        assert_eq!((a.host(), a.port()), ("::1", 7));
        assert_eq!(
            Addr::parse("ofi+verbs://h:1").unwrap().scheme(),
            &Scheme::Ofi("verbs".into())
        );
        let sa: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(Addr::tcp(sa).to_string(), "tcp://[::1]:9");
    }

    #[test]
    fn rejects_bad_uris() {
        for uri in [
            "",
            "127.0.0.1:20000",
            "udp://127.0.0.1:1",
            "ofi+://h:1",
            "tcp://:1",
            "tcp://host",
            "tcp://host:65536",
            "tcp://host:-1",
            "tcp://host:1/path",
            "tcp://::1:1",
            "tcp://[nothex]:1",
            "tcp://[::1]1",
        ] {
            let e = Addr::parse(uri).unwrap_err();
            assert_eq!(e.to_daos().der, proto::Der::INVAL, "{uri}");
            assert!(e.to_string().contains(&format!("{uri:?}")), "{e}");
        }
    }
}
