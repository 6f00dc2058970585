//! Who may push notifications and use the HTTP API.
//!
//! With `--api-key` (`ROOMCAST_API_KEY`) set, a request must carry
//! `Authorization: Bearer KEY` (401 otherwise). Without a key, only clients on this machine
//! (loopback addresses) are served (403 otherwise), so a server started with its defaults is
//! not an open relay.
//!
//! "The client" is the address [`guard::client_ip`] finds: the TCP peer, or behind one of
//! `--trusted-proxies` the address the proxy forwarded for. Behind a proxy on this machine
//! that is not listed there, every request comes from loopback and is served: such a
//! deployment needs `--trusted-proxies` or `--api-key` (docs/DEPLOY.md).

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use super::{ApiError, guard};
use crate::config::Config;

pub fn check(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    match &config.api_key {
        Some(key) => {
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            match given {
                Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
                Some(_) => Err(ApiError::Unauthorized("wrong API key".into())),
                None => Err(ApiError::Unauthorized(
                    "send the API key as `Authorization: Bearer KEY`".into(),
                )),
            }
        }
        None => match guard::client_ip(req, &config.trusted_proxies) {
            Some(client) if client.is_loopback() => Ok(()),
            _ => Err(ApiError::Forbidden(
                "no API key is configured, so only local clients may use this route".into(),
            )),
        },
    }
}

/// The credentials of an `Authorization: Bearer ...` value; the scheme's name is
/// case-insensitive (RFC 9110, 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

/// Compares without stopping at the first difference, so timing does not reveal how much of
/// a guess was right. `subtle` rather than a hand-written fold: a fold has no early exit
/// only until an optimizer sees that it may add one, while `subtle` passes the result
/// through an optimization barrier (a volatile read) for exactly this purpose. The length is
/// not hidden (a mismatch answers at once): it says nothing of the key's bytes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::{bearer, constant_time_eq};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k", "bearer k", "BEARER k", "Bearer  k"] {
            assert_eq!(bearer(value), Some("k"), "{value:?}");
        }
        for value in ["Basic k", "Bearerk", "Bearer", "k"] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }

    #[test]
    fn compares_keys() {
        // Equal.
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        // Different, at the end and at the start.
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        // Different lengths, one a prefix of the other either way.
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
