//! Who the client is: the TCP peer, unless the peer is one of `--trusted-proxies`.
//!
//! A forwarding header (`X-Forwarded-For`, `Forwarded`) is text the client can write, so it
//! is read only on a request whose TCP peer is a trusted proxy, never otherwise. Each proxy
//! appends the address it got the request from, so the list ends with what the nearest
//! proxy saw; addresses further left were written by whoever came before it, the client
//! included. The client is therefore the rightmost address that is not itself a trusted
//! proxy: a client that sends `X-Forwarded-For: 127.0.0.1` gets `127.0.0.1, ITS_ADDRESS`
//! from the proxy, and is still `ITS_ADDRESS`.
//!
//! `X-Forwarded-For` is read when present (what nginx, HAProxy's `forwardfor`, Caddy,
//! Traefik and Envoy write); `Forwarded` (RFC 7239) only when it is absent. A proxy that
//! writes only `Forwarded` must therefore drop a client's `X-Forwarded-For`
//! (docs/DEPLOY.md). A trusted peer that sends neither is itself the client (a health check
//! from the proxy's machine). A hop that is not an address (`unknown`, an obfuscated
//! `_name`) makes the client unknown: `None`, which is no loopback client.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::HttpRequest;
use actix_web::http::header::{FORWARDED, HeaderMap, X_FORWARDED_FOR};

/// One entry of `--trusted-proxies`: an address (`127.0.0.1`, `::1`) or a network
/// (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    /// The network's address, its host bits cleared.
    addr: IpAddr,
    /// Leading bits that must match (32 or 128 for a single address).
    prefix: u8,
}

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("`{s}` is not an IP address or a network like `10.0.0.0/8`");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: peers are compared in their IPv4 form.
        let (addr, prefix) = match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (addr, prefix),
        };
        Ok(ProxyNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl ProxyNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// The client's address for `req` (see the module doc); `None` when unknown.
pub fn client_ip(req: &HttpRequest, trusted: &[ProxyNet]) -> Option<IpAddr> {
    resolve(
        req.peer_addr().map(|peer| peer.ip()),
        req.headers(),
        trusted,
    )
}

/// [`client_ip`] from the TCP peer and the request's headers.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[ProxyNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops = forwarded_hops(headers);
    if hops.is_empty() {
        return Some(peer);
    }
    // Right to left, past the trusted proxies; when every hop is one, the farthest.
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip) => continue,
            other => return *other,
        }
    }
    hops[0]
}

/// The addresses of the forwarding header, left to right (`None` for a hop that is not an
/// address); empty when the request has none.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
    };
    let xff = values(X_FORWARDED_FOR);
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .map(parse_hop)
            .collect();
    }
    // RFC 7239: `for=192.0.2.60;proto=http, for="[2001:db8::17]:4711"`.
    values(FORWARDED)
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|element| !element.trim().is_empty())
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| parse_hop(value))
        })
        .collect()
}

/// One hop: an address, maybe with a port, maybe quoted, an IPv6 one maybe in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<IpAddr>().ok()
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn nets(list: &[&str]) -> Vec<ProxyNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(peer: &str, trusted: &[&str], pairs: &[(&str, &str)]) -> Option<IpAddr> {
        resolve(Some(ip(peer)), &headers(pairs), &nets(trusted))
    }

    #[test]
    fn networks_parse_and_contain() {
        let net: ProxyNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.9")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: ProxyNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: ProxyNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let mapped: ProxyNet = "::ffff:192.168.0.0/112".parse().unwrap();
        assert!(mapped.contains(ip("192.168.7.7")));
        let all: ProxyNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "localhost",
            "10.0.0.0/x",
            "10.0.0",
        ] {
            let err = bad.parse::<ProxyNet>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn forwarding_headers_are_ignored_unless_the_peer_is_trusted() {
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client("127.0.0.1", &[], &xff), Some(ip("127.0.0.1")));
        assert_eq!(
            client("192.0.2.1", &["127.0.0.1"], &xff),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            client("127.0.0.1", &["127.0.0.1"], &xff),
            Some(ip("203.0.113.9"))
        );
        // The proxy itself, with no header.
        assert_eq!(
            client("127.0.0.1", &["127.0.0.1"], &[]),
            Some(ip("127.0.0.1"))
        );
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            client("::ffff:127.0.0.1", &["127.0.0.1"], &xff),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["127.0.0.1", "10.0.0.0/8"];
        // The client claimed to be loopback; the proxy appended what it saw.
        let spoof = [("x-forwarded-for", "127.0.0.1, 203.0.113.9")];
        assert_eq!(
            client("127.0.0.1", &trusted, &spoof),
            Some(ip("203.0.113.9"))
        );
        // Two proxies: the outer one (10.0.0.2) saw the client.
        let chain = [("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2")];
        assert_eq!(
            client("127.0.0.1", &trusted, &chain),
            Some(ip("203.0.113.9"))
        );
        // Several header lines are one list, in order.
        let lines = [
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9:4711, 10.0.0.2"),
        ];
        assert_eq!(
            client("127.0.0.1", &trusted, &lines),
            Some(ip("203.0.113.9"))
        );
        // Every hop trusted: the farthest.
        let internal = [("x-forwarded-for", "10.0.0.7, 10.0.0.2")];
        assert_eq!(
            client("127.0.0.1", &trusted, &internal),
            Some(ip("10.0.0.7"))
        );
        // A hop that is no address: unknown, not the proxy's loopback address.
        let junk = [("x-forwarded-for", "unknown")];
        assert_eq!(client("127.0.0.1", &trusted, &junk), None);
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let trusted = ["127.0.0.1"];
        let fwd = [(
            "forwarded",
            "for=198.51.100.1;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=127.0.0.1",
        )];
        assert_eq!(
            client("127.0.0.1", &trusted, &fwd),
            Some(ip("2001:db8:cafe::17"))
        );
        let fwd = [("forwarded", "for=203.0.113.9")];
        assert_eq!(client("127.0.0.1", &trusted, &fwd), Some(ip("203.0.113.9")));
        let hidden = [("forwarded", "for=_hidden")];
        assert_eq!(client("127.0.0.1", &trusted, &hidden), None);
        // X-Forwarded-For wins when both are there.
        let both = [
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(
            client("127.0.0.1", &trusted, &both),
            Some(ip("203.0.113.9"))
        );
    }
}
