//! What a WebSocket upgrade must pass before it reaches `ws.rs`: the per-IP connection rate
//! (`--conn-rate-per-ip`, 429 `rate_limited` with `Retry-After`) and then the page's origin
//! (`--allowed-origins`, 403 `origin_forbidden`). [`check_upgrade`] wraps the three upgrade
//! routes (`/ws`, `/ws/{room}/{user}`, `/notifications/{user}`) in `http::routes`.
//!
//! Both use the client's address as [`client_ip`] finds it: the TCP peer, or behind one of
//! `--trusted-proxies` the address its forwarding header names (`proxy`). The access rule of
//! `/api` and `/metrics` (`access.rs`) uses the same address.
//!
//! The rate counts attempts, admitted or not, so a refused origin costs its sender too.
//! Loopback clients are exempt unless `--conn-rate-loopback` (local load tests open
//! thousands of sockets at once). The buckets live in one [`ConnRate`] per server, shared by
//! the HTTP workers behind a mutex: HTTP-side bookkeeping taken for a few hundred
//! nanoseconds per upgrade, never touched by an actor. Its table is bounded
//! ([`MAX_TRACKED`] keys): IPv6 clients are counted by their /64, which is what one
//! subscriber usually holds, so one client cannot fill the table by walking its addresses.

mod origin;
mod proxy;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HOST, ORIGIN};
use actix_web::middleware::Next;
use actix_web::web;

pub use origin::{Origin, OriginPolicy, OriginRule};
pub use proxy::{ProxyNet, client_ip};

use super::ApiError;
use crate::config::Config;
use crate::ratelimit::TokenBucket;

/// Most client keys the rate table holds (two generations of half as many each). About
/// 64 bytes each: a few MiB at most.
pub const MAX_TRACKED: usize = 65_536;

/// The checks an upgrade passes, built once per server (`web::Data<UpgradeGuard>`, given to
/// every worker).
#[derive(Debug)]
pub struct UpgradeGuard {
    origins: OriginPolicy,
    trusted: Vec<ProxyNet>,
    /// `None`: `--conn-rate-per-ip 0`.
    rate: Option<ConnRate>,
}

impl UpgradeGuard {
    pub fn new(config: &Config) -> UpgradeGuard {
        UpgradeGuard {
            origins: OriginPolicy::new(&config.allowed_origins),
            trusted: config.trusted_proxies.clone(),
            rate: (config.conn_rate_per_ip > 0.0).then(|| {
                ConnRate::new(
                    config.conn_rate_per_ip,
                    config.conn_rate_burst,
                    config.conn_rate_loopback,
                )
            }),
        }
    }

    /// Whether this upgrade request may go on to its handler.
    fn check(&self, req: &actix_web::HttpRequest, now: Instant) -> Result<(), ApiError> {
        let client = client_ip(req, &self.trusted);
        if let Some(rate) = &self.rate
            && !rate.admit(client, now)
        {
            log::debug!("upgrade rate-limited client={client:?} path={}", req.path());
            return Err(ApiError::RateLimited {
                retry_after_secs: rate.retry_after_secs,
            });
        }
        let headers = req.headers();
        let origin = headers.get(ORIGIN).map(|v| v.as_bytes());
        let host = headers.get(HOST).and_then(|v| v.to_str().ok());
        self.origins.check(origin, host).map_err(|refused| {
            log::warn!(
                "upgrade refused origin={:?} client={client:?} path={}",
                refused.0,
                req.path()
            );
            ApiError::OriginForbidden(refused.to_string())
        })
    }
}

/// The middleware on the upgrade routes (`from_fn(check_upgrade)`). A refusal is a response,
/// so what wraps the routes (`bound_request`) sees its status.
pub async fn check_upgrade(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<UpgradeGuard>>() {
        Some(guard) => guard.check(req.request(), Instant::now()),
        // Refuse rather than let upgrades through unchecked.
        None => Err(ApiError::Internal("no upgrade guard configured".into())),
    };
    match allowed {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refused) => Ok(req.error_response(refused).map_into_right_body()),
    }
}

/// The per-client rate of upgrades: a [`TokenBucket`] per key in a bounded table.
#[derive(Debug)]
pub struct ConnRate {
    per_sec: f64,
    burst: u32,
    include_loopback: bool,
    /// What a refusal's `Retry-After` says: when the next token is due at the latest.
    retry_after_secs: u64,
    table: Mutex<RateTable>,
}

impl ConnRate {
    pub fn new(per_sec: f64, burst: u32, include_loopback: bool) -> ConnRate {
        ConnRate {
            per_sec,
            burst,
            include_loopback,
            retry_after_secs: (1.0 / per_sec).ceil().clamp(1.0, 86_400.0) as u64,
            table: Mutex::new(RateTable::new(MAX_TRACKED)),
        }
    }

    /// Takes a token for `client` (`None`: unknown, all such share one bucket); false when
    /// it has none left.
    pub fn admit(&self, client: Option<IpAddr>, now: Instant) -> bool {
        if client.is_some_and(|ip| ip.is_loopback()) && !self.include_loopback {
            return true;
        }
        // Nothing panics while the lock is held, so a poisoned lock's table is still whole.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .bucket(RateKey::of(client), || {
                TokenBucket::new(self.per_sec, self.burst, now)
            })
            .try_take(now)
    }
}

/// What the rate is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RateKey {
    V4(u32),
    /// The address's first 64 bits.
    V6(u64),
    Unknown,
}

impl RateKey {
    fn of(client: Option<IpAddr>) -> RateKey {
        match client.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => RateKey::V4(v4.into()),
            Some(IpAddr::V6(v6)) => RateKey::V6((u128::from(v6) >> 64) as u64),
            None => RateKey::Unknown,
        }
    }
}

/// A map that keeps at most `2 * half` keys, and those used lately: new keys go into
/// `current`; when it is full it becomes `previous` (the old `previous` is dropped), and a
/// key found in `previous` moves back into `current`. A key unused for a whole generation is
/// forgotten, which costs it nothing: it starts again with a full bucket, which is what an
/// idle client's bucket holds anyway. Pure, for the unit tests.
#[derive(Debug)]
struct RateTable {
    current: HashMap<RateKey, TokenBucket>,
    previous: HashMap<RateKey, TokenBucket>,
    half: usize,
}

impl RateTable {
    fn new(max: usize) -> RateTable {
        RateTable {
            current: HashMap::new(),
            previous: HashMap::new(),
            half: (max / 2).max(1),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn bucket(&mut self, key: RateKey, new: impl FnOnce() -> TokenBucket) -> &mut TokenBucket {
        if !self.current.contains_key(&key) {
            let bucket = self.previous.remove(&key).unwrap_or_else(new);
            if self.current.len() >= self.half {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key, bucket);
        }
        self.current
            .get_mut(&key)
            .expect("the key was inserted just above if it was missing")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_client_has_its_own_burst_and_loopback_is_exempt() {
        let t0 = Instant::now();
        let rate = ConnRate::new(1.0, 3, false);
        let a = ip("203.0.113.9");
        assert_eq!((0..5).filter(|_| rate.admit(a, t0)).count(), 3);
        assert!(rate.admit(ip("203.0.113.10"), t0), "another address");
        assert!((0..100).all(|_| rate.admit(ip("127.0.0.1"), t0)));
        assert!((0..100).all(|_| rate.admit(ip("::1"), t0)));
        // One second later, one more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..5).filter(|_| rate.admit(a, t1)).count(), 1);
        assert_eq!(rate.retry_after_secs, 1);
    }

    #[test]
    fn loopback_counts_when_asked_and_unknown_clients_share_a_bucket() {
        let t0 = Instant::now();
        let rate = ConnRate::new(0.5, 2, true);
        assert_eq!(
            (0..5).filter(|_| rate.admit(ip("127.0.0.1"), t0)).count(),
            2
        );
        assert_eq!((0..5).filter(|_| rate.admit(None, t0)).count(), 2);
        assert_eq!(rate.retry_after_secs, 2);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let t0 = Instant::now();
        let rate = ConnRate::new(1.0, 2, false);
        assert!(rate.admit(ip("2001:db8:1:2::1"), t0));
        assert!(rate.admit(ip("2001:db8:1:2::ffff"), t0));
        assert!(!rate.admit(ip("2001:db8:1:2:abcd::1"), t0), "same /64");
        assert!(rate.admit(ip("2001:db8:1:3::1"), t0), "another /64");
        // An IPv4-mapped address is its IPv4 address.
        assert!(rate.admit(ip("::ffff:198.51.100.1"), t0));
        assert!(rate.admit(ip("198.51.100.1"), t0));
        assert!(!rate.admit(ip("198.51.100.1"), t0));
    }

    fn flags(args: &[&str]) -> Result<Config, String> {
        Config::parse_flags_only(std::iter::once("roomcast").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_flags_parse_and_contradictions_are_refused() {
        let c = flags(&[]).unwrap();
        assert_eq!((c.conn_rate_per_ip, c.conn_rate_burst), (20.0, 40));
        assert!(!c.conn_rate_loopback);
        assert!(c.allowed_origins.is_empty() && c.trusted_proxies.is_empty());
        assert!(c.tls_cert.is_none() && c.tls_key.is_none());

        let c = flags(&[
            "--allowed-origins",
            "https://chat.example.com,null",
            "--trusted-proxies=127.0.0.1,10.0.0.0/8",
            "--conn-rate-loopback",
        ])
        .unwrap();
        assert_eq!(c.allowed_origins.len(), 2);
        assert_eq!(c.allowed_origins[1], OriginRule::Null);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.conn_rate_loopback);
        c.validate().unwrap();

        let err = flags(&["--allowed-origins", "chat.example.com"]).unwrap_err();
        assert!(err.contains("`chat.example.com` is not an origin"), "{err}");
        let err = flags(&["--trusted-proxies", "10.0.0.0/40"]).unwrap_err();
        assert!(err.contains("`10.0.0.0/40`"), "{err}");
        for (args, flag) in [
            (["--conn-rate-per-ip", "NaN"], "--conn-rate-per-ip"),
            (["--conn-rate-burst", "0"], "--conn-rate-burst"),
        ] {
            let err = flags(&args).unwrap().validate().unwrap_err();
            assert!(err.starts_with(flag), "{err}");
        }
        // 0 disables the rate, whatever the burst.
        flags(&["--conn-rate-per-ip=0", "--conn-rate-burst=0"])
            .unwrap()
            .validate()
            .unwrap();
        let err = flags(&["--tls-key", "k.pem"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("--tls-cert and --tls-key"), "{err}");
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_keys_in_use() {
        let t0 = Instant::now();
        let mut table = RateTable::new(8);
        let new = || TokenBucket::new(1.0, 1, t0);
        // A key in use: its bucket is empty.
        assert!(table.bucket(RateKey::V4(1), new).try_take(t0));
        for n in 100..10_000 {
            table.bucket(RateKey::V4(n), new);
            assert!(table.len() <= 8, "{} keys", table.len());
            if n % 3 == 0 {
                // Used every few inserts, it survives every generation: still empty.
                assert!(!table.bucket(RateKey::V4(1), new).try_take(t0), "at {n}");
            }
        }
    }
}
