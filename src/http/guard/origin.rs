//! Which web pages may open a WebSocket: the `Origin` header against `--allowed-origins`.
//!
//! A browser sends `Origin` with every WebSocket handshake, and a page cannot forge it; it
//! does not stop a page on another site from connecting (WebSockets are not bound by CORS).
//! Without this check any site a user visits could open a socket in their name, with their
//! cookies. Programs other than browsers send no `Origin`, or whatever they like: the check
//! is about pages, not a way to authenticate programs.
//!
//! Allowed, in order: no `Origin` at all; a listed origin; any origin but `null` and
//! `file://` when `*` is listed; a page of this very server (same origin: the `Origin`'s host
//! and port are the request's `Host`); and, when nothing is listed, pages on this machine
//! (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`, `https` too). `null`
//! (sandboxed frames, some `file:` pages, `data:` URLs) and `file://` are refused unless
//! listed as such, `*` or not: pages with no site of their own are never let in by a
//! wildcard.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One entry of `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: every origin but `null` and `file://` (those only when listed themselves).
    Any,
    /// `null`, the opaque origin.
    Null,
    /// `scheme://host[:port]`, compared without case and with the default port filled in.
    Exact(Origin),
}

/// A serialized origin, as compared: scheme and host lowercased, the port filled in for
/// `http` (80) and `https` (443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    /// A name, an IPv4 address, or an IPv6 address in brackets; empty for `file://`.
    host: String,
    port: Option<u16>,
}

impl FromStr for OriginRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "*" {
            return Ok(OriginRule::Any);
        }
        if s.eq_ignore_ascii_case("null") {
            return Ok(OriginRule::Null);
        }
        // An operator may well write `https://chat.example.com/`; a browser never sends the
        // slash.
        Origin::parse(s)
            .or_else(|| Origin::parse(s.strip_suffix('/')?))
            .map(OriginRule::Exact)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not an origin: write `scheme://host` or `scheme://host:port` \
                     (e.g. `https://chat.example.com`), `null` or `*`"
                )
            })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) if Some(port) != default_port(&self.scheme) => write!(f, ":{port}"),
            _ => Ok(()),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (the host of an IPv6 address in brackets) into the host and the port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')? + 1;
        let (host, rest) = s.split_at(end);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

impl Origin {
    /// Parses an origin as a browser serializes it: `scheme://host[:port]`, nothing after.
    pub fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        // An origin has no path, query, fragment or user.
        if !scheme_ok || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(rest)?;
        if host.is_empty() && (scheme != "file" || port.is_some()) {
            return None;
        }
        Some(Origin {
            port: port.or(default_port(&scheme)),
            host: host.to_ascii_lowercase(),
            scheme,
        })
    }

    fn is_web(&self) -> bool {
        default_port(&self.scheme).is_some()
    }

    /// Whether this is a page of the server that `host` (a request's `Host` header) names.
    fn is_same_origin(&self, host: &str) -> bool {
        let Some((host, port)) = split_host_port(host.trim()) else {
            return false;
        };
        self.is_web()
            && self.host.eq_ignore_ascii_case(host)
            && self.port == port.or(default_port(&self.scheme))
    }

    /// Whether this is a page served from this machine.
    fn is_loopback(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        self.is_web()
            && (self.host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
    }
}

/// `--allowed-origins`, ready to answer for each handshake.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    null: bool,
    listed: Vec<Origin>,
    /// Nothing listed: pages on this machine are allowed too.
    loopback: bool,
}

/// Why an `Origin` was refused, for the answer and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pages from origin `{0}` may not open WebSockets on this server (see --allowed-origins)")]
pub struct OriginRefused(pub String);

impl OriginPolicy {
    pub fn new(rules: &[OriginRule]) -> OriginPolicy {
        let mut policy = OriginPolicy {
            any: false,
            null: false,
            listed: Vec::new(),
            loopback: rules.is_empty(),
        };
        for rule in rules {
            match rule {
                OriginRule::Any => policy.any = true,
                OriginRule::Null => policy.null = true,
                OriginRule::Exact(origin) => policy.listed.push(origin.clone()),
            }
        }
        policy
    }

    /// Checks a handshake's `Origin` (`None`: no such header) against the policy; `host` is
    /// its `Host` header. An `Origin` that is not text is refused.
    pub fn check(&self, origin: Option<&[u8]>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(raw) = origin else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        let allowed = if text.eq_ignore_ascii_case("null") {
            self.null
        } else {
            match Origin::parse(text) {
                Some(origin) => {
                    self.listed.contains(&origin)
                        || (self.any && origin.scheme != "file")
                        || host.is_some_and(|host| origin.is_same_origin(host))
                        || (self.loopback && origin.is_loopback())
                }
                // Not an origin a browser sends: a program's, let in only by `*`.
                None => self.any && !text.to_ascii_lowercase().starts_with("file:"),
            }
        };
        if allowed {
            Ok(())
        } else {
            // Bounded: this text goes into a log line and an answer.
            Err(OriginRefused(text.chars().take(200).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> OriginPolicy {
        let rules: Vec<OriginRule> = rules.iter().map(|r| r.parse().unwrap()).collect();
        OriginPolicy::new(&rules)
    }

    fn allows(policy: &OriginPolicy, origin: Option<&str>, host: &str) -> bool {
        policy.check(origin.map(str::as_bytes), Some(host)).is_ok()
    }

    #[test]
    fn by_default_no_origin_same_origin_and_loopback_pages_are_allowed() {
        let p = policy(&[]);
        let host = "chat.example.com:8080";
        for origin in [
            None,
            Some("http://chat.example.com:8080"),
            Some("HTTP://Chat.Example.com:8080"),
            Some("http://localhost:3000"),
            Some("http://127.0.0.1:9999"),
            Some("https://localhost"),
            Some("http://[::1]:8080"),
        ] {
            assert!(allows(&p, origin, host), "{origin:?}");
        }
        for origin in [
            "https://evil.example",
            "http://chat.example.com", // port 80, not 8080
            "https://chat.example.com:8080.evil.example",
            "null",
            "file://",
            "chrome-extension://abcdef",
            "http://localhost.evil.example",
            "",
            "garbage",
            "http://chat.example.com:8080/path",
        ] {
            assert!(!allows(&p, Some(origin), host), "{origin}");
        }
        // Not text at all.
        assert!(p.check(Some(b"\xff\xfe"), Some(host)).is_err());
    }

    #[test]
    fn default_ports_are_filled_in_on_both_sides() {
        let p = policy(&[]);
        assert!(allows(
            &p,
            Some("https://chat.example.com"),
            "chat.example.com"
        ));
        assert!(allows(
            &p,
            Some("https://chat.example.com"),
            "chat.example.com:443"
        ));
        assert!(allows(
            &p,
            Some("http://chat.example.com:80"),
            "chat.example.com"
        ));
        assert!(!allows(
            &p,
            Some("https://chat.example.com"),
            "chat.example.com:80"
        ));
        assert!(allows(
            &p,
            Some("http://[2001:db8::1]:8080"),
            "[2001:db8::1]:8080"
        ));
    }

    #[test]
    fn a_list_replaces_loopback_but_keeps_same_origin() {
        let p = policy(&["https://chat.example.com/", "http://10.0.0.5:8080"]);
        let host = "roomcast.internal:8080";
        assert!(allows(&p, Some("https://chat.example.com"), host));
        assert!(allows(&p, Some("https://CHAT.example.com:443"), host));
        assert!(allows(&p, Some("http://10.0.0.5:8080"), host));
        assert!(allows(&p, Some("http://roomcast.internal:8080"), host));
        assert!(allows(&p, None, host));
        assert!(!allows(&p, Some("http://localhost:3000"), host));
        assert!(!allows(&p, Some("https://evil.example"), host));
        assert!(!allows(&p, Some("null"), host));
    }

    #[test]
    fn null_and_file_only_when_listed_and_star_allows_every_other() {
        let p = policy(&["null", "file://"]);
        assert!(allows(&p, Some("null"), "h"));
        assert!(allows(&p, Some("file://"), "h"));
        assert!(!allows(&p, Some("https://evil.example"), "h"));
        let p = policy(&["*"]);
        for origin in ["https://evil.example", "http://x.example:8080", "garbage"] {
            assert!(allows(&p, Some(origin), "h"), "{origin}");
        }
        for origin in ["null", "NULL", "file://", "FILE://", "file:///etc"] {
            assert!(!allows(&p, Some(origin), "h"), "{origin}");
        }
        let p = policy(&["*", "null", "file://"]);
        for origin in ["https://evil.example", "null", "file://"] {
            assert!(allows(&p, Some(origin), "h"), "{origin}");
        }
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        for bad in [
            "chat.example.com",
            "https://",
            "https://x.example/path",
            "https://x.example:port",
            "https://user@x.example",
            "://x",
        ] {
            let err = bad.parse::<OriginRule>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!(
            "https://Chat.Example.com:443".parse::<OriginRule>(),
            "https://chat.example.com".parse::<OriginRule>()
        );
    }
}
