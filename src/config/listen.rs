//! `server.grpc_listen`: a TCP address, or `unix:PATH` for a Unix domain socket
//! (docs/in-pod.md: portcullis beside Envoy in one pod, no TCP hop).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// A Unix domain socket at this path (`unix:/run/portcullis/grpc.sock`).
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix("unix:") {
            Some("") => Err("unix: needs a path, e.g. unix:/run/portcullis/grpc.sock".into()),
            Some(path) => Ok(ListenAddr::Unix(PathBuf::from(path))),
            None => text
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|e| format!("{e}: write IP:PORT or unix:PATH")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Tcp(addr)
    }
}

impl ListenAddr {
    /// The TCP address, if it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) => Some(*addr),
            ListenAddr::Unix(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_addresses_parse_and_print_back() {
        for text in [
            "127.0.0.1:9191",
            "[::1]:0",
            "unix:/run/portcullis/grpc.sock",
            "unix:rel.sock",
        ] {
            let addr: ListenAddr = text.parse().expect(text);
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:/a.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/a.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("nowhere"
            .parse::<ListenAddr>()
            .unwrap_err()
            .contains("unix:PATH"));
    }
}
