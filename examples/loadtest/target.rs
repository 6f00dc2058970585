//! Where the load goes: parsing `--url` and the loopback rule.
//!
//! The tool runs on shared machines, so by default it only talks to this machine: a host must
//! be `localhost`, an address in 127.0.0.0/8, or `::1` (an IPv4-mapped `::ffff:127.x.y.z`
//! counts too). Anything else needs `--allow-remote`. The check is made twice: on the URL's host
//! here, and on the address it resolves to in `main` (so a `localhost` that resolves elsewhere
//! is refused as well).
//!
//! Only plain `ws://` (or `http://`, treated the same) is supported: the tool has no TLS.

use std::net::IpAddr;

/// A parsed `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix the server is mounted under, without a trailing slash (usually empty).
    pub base_path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("--url {url:?}: expected ws://HOST[:PORT]"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => {}
            "wss" | "https" => {
                return Err(format!(
                    "--url {url:?}: TLS ({scheme}://) is not supported by this tool; use ws://"
                ));
            }
            _ => {
                return Err(format!(
                    "--url {url:?}: the scheme must be ws:// or http://"
                ));
            }
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(format!("--url {url:?}: user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("--url {url:?}: unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("--url {url:?}: bad port")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("--url {url:?}: no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("--url {url:?}: bad port {p:?}"))?,
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        Ok(Target {
            host: host.to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// `host:port`, with brackets around an IPv6 address: for `Host` headers and resolving.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The WebSocket URL of `path` (which starts with `/`).
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}{}", self.authority(), self.base_path, path)
    }

    /// The plain HTTP URL of `path` (which starts with `/`).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority(), self.base_path, path)
    }
}

/// Whether `host` (a name or an address, brackets allowed) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().is_ok_and(is_loopback_ip)
}

pub fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted() {
        for h in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for h in [
            "example.com",
            "localhost.example.com",
            "mylocalhost",
            "10.0.0.1",
            "0.0.0.0",
            "128.0.0.1",
            "::",
            "::2",
            "fe80::1",
            "192.168.1.10",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn urls_parse() {
        let t = Target::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("127.0.0.1", 8080, "")
        );
        assert!(t.is_loopback());
        assert_eq!(
            t.ws_url("/ws?user_id=a"),
            "ws://127.0.0.1:8080/ws?user_id=a"
        );

        let t = Target::parse("http://[::1]:9000/chat/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("::1", 9000, "/chat")
        );
        assert_eq!(t.authority(), "[::1]:9000");
        assert_eq!(t.http_url("/health"), "http://[::1]:9000/chat/health");
        assert!(t.is_loopback());

        let t = Target::parse("ws://chat.example.com").unwrap();
        assert_eq!(t.port, 80);
        assert!(!t.is_loopback());

        for bad in [
            "127.0.0.1:8080",
            "wss://127.0.0.1",
            "ftp://127.0.0.1",
            "ws://:80",
            "ws://127.0.0.1:0",
            "ws://127.0.0.1:99999",
            "ws://u@127.0.0.1",
            "ws://[::1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
