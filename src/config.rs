//! One `Config` for the whole server: command-line flags, each with a `ROOMCAST_*` environment
//! variable and a default that suits development.
//!
//! Tests build a `Config` with [`Config::for_tests`] or [`Config::parse_flags_only`] and
//! change the fields they care about; neither reads `ROOMCAST_*` variables, so what the
//! caller's shell exports cannot change a test. `main` uses [`Config::parse`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::http::guard::{OriginRule, ProxyNet};
use crate::protocol::{AnnouncedLimits, DecodeLimits};
use crate::store::{Clock, Retention, StoreSpec, SyncMode};

/// roomcast: a realtime room server (WebSocket chat rooms with history, presence and typing).
#[derive(Debug, Clone, Parser)]
#[command(name = "roomcast", version, about)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the bound address is logged as
    /// `listening on http://ADDR`.
    #[arg(long, env = "ROOMCAST_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// HTTP worker threads (0: one per CPU core but one, which `ChatServer`'s thread has;
    /// at least one).
    #[arg(long, env = "ROOMCAST_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Serve the browser chat from this directory instead of the copy built into the binary
    /// (useful while editing the page).
    #[arg(long, env = "ROOMCAST_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Key that backends must send as `Authorization: Bearer KEY` to push notifications and
    /// use the HTTP API. Without one, those routes answer loopback clients only.
    #[arg(long, env = "ROOMCAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Most simultaneous WebSocket connections; past it upgrades get HTTP 503.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    /// Largest accepted WebSocket frame (or reassembled fragmented message), in bytes; larger
    /// ones close the socket with 1009.
    #[arg(long, env = "ROOMCAST_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Longest chat text or private message, in characters.
    #[arg(long, env = "ROOMCAST_MAX_TEXT_CHARS", default_value_t = 4000)]
    pub max_text_chars: usize,

    /// Most rooms one socket may be in at once.
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SOCKET", default_value_t = 32)]
    pub max_rooms_per_socket: usize,

    /// Chat messages sent to a new member on join.
    #[arg(long, env = "ROOMCAST_HISTORY_ON_JOIN", default_value_t = 50)]
    pub history_on_join: usize,

    /// Chat messages kept in memory per room (at least --history-on-join).
    #[arg(long, env = "ROOMCAST_HISTORY_KEEP", default_value_t = 100)]
    pub history_keep: usize,

    /// Sustained messages per second one socket may send (0 disables rate limiting).
    #[arg(long, env = "ROOMCAST_RATE_PER_SEC", default_value_t = 20.0)]
    pub rate_per_sec: f64,

    /// Messages one socket may send in a burst.
    #[arg(long, env = "ROOMCAST_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,

    /// Rate-limited messages in a row after which the socket is closed with 1008.
    #[arg(long, env = "ROOMCAST_RATE_STRIKES", default_value_t = 20)]
    pub rate_strikes: u32,

    /// Outbound bytes that may wait for one socket (handed to it, not yet written); past it
    /// the socket is a slow consumer and is closed with 4001.
    #[arg(long, env = "ROOMCAST_MAX_PENDING_BYTES", default_value_t = 1024 * 1024)]
    pub max_pending_bytes: usize,

    /// Outbound frames that may wait for one socket, a second bound beside the bytes (small
    /// frames cost memory of their own); also its mailbox capacity.
    #[arg(long, env = "ROOMCAST_MAX_PENDING", default_value_t = 16384)]
    pub max_pending: usize,

    /// Requests one socket may have waiting for the chat server; past it they are refused
    /// with `overloaded`.
    #[arg(long, env = "ROOMCAST_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// How long a slow consumer gets to take its close frame before its TCP connection is cut.
    #[arg(long, env = "ROOMCAST_SLOW_CONSUMER_GRACE_MS", default_value_t = 1000)]
    pub slow_consumer_grace_ms: u64,

    /// Seconds between server pings.
    #[arg(long, env = "ROOMCAST_HEARTBEAT_INTERVAL", default_value_t = 10.0)]
    pub heartbeat_interval: f64,

    /// Seconds of silence (no pong, no frame) after which a peer is dropped.
    #[arg(long, env = "ROOMCAST_CLIENT_TIMEOUT", default_value_t = 30.0)]
    pub client_timeout: f64,

    /// Seconds to wait for WebSockets to close on SIGINT/SIGTERM before cutting them (HTTP
    /// requests still under way then get at most one more second).
    #[arg(long, env = "ROOMCAST_SHUTDOWN_TIMEOUT", default_value_t = 3)]
    pub shutdown_timeout: u64,

    /// Where history, sequence numbers and the offline inbox live: `sqlite:PATH` (durable;
    /// the file and its folder are created if missing) or `memory` (lost on exit).
    #[arg(
        long,
        env = "ROOMCAST_STORE",
        default_value = "sqlite:./data/roomcast.db"
    )]
    pub store: StoreSpec,

    /// SQLite durability: `normal` fsyncs within 100 ms of a commit, off the commit path
    /// (acknowledged messages survive a process crash; a power loss can lose the last
    /// ~100 ms of them); `full` fsyncs every commit before anyone is told (they survive
    /// power loss too).
    #[arg(long, env = "ROOMCAST_SYNC", value_enum, default_value = "normal")]
    pub sync: SyncMode,

    /// Most messages a reconnecting client can be given with `since_seq`; a larger gap is
    /// answered with `recovered: false` and the recent history.
    #[arg(long, env = "ROOMCAST_RECOVERY_MAX", default_value_t = 1000)]
    pub recovery_max: usize,

    /// Messages kept per room in the store (0: no limit). Older ones are pruned in the
    /// background.
    #[arg(long, env = "ROOMCAST_RETENTION_MESSAGES", default_value_t = 100_000)]
    pub retention_messages: u64,

    /// Seconds a message is kept in the store (0: no limit).
    #[arg(long, env = "ROOMCAST_RETENTION_SECS", default_value_t = 0)]
    pub retention_secs: u64,

    /// Milliseconds between retention passes.
    #[arg(long, env = "ROOMCAST_PRUNE_INTERVAL_MS", default_value_t = 60_000)]
    pub prune_interval_ms: u64,

    /// Notifications kept per user while they have no notification socket (0: none kept).
    #[arg(long, env = "ROOMCAST_INBOX_MAX", default_value_t = 100)]
    pub inbox_max: usize,

    /// Seconds a stored notification waits for its user before it is dropped.
    #[arg(long, env = "ROOMCAST_INBOX_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub inbox_ttl_secs: u64,

    /// The clock the store measures expiry and retention by: the system's, except in tests,
    /// which move a [`ManualClock`](crate::store::ManualClock) instead of sleeping. Not a flag.
    #[arg(skip)]
    pub clock: Clock,

    /// Milliseconds (at least 1000) a client gets to send a request's head once connected,
    /// and again to send its body; past either the request is answered 408 and its
    /// connection closed (checked to within half a second).
    #[arg(long, env = "ROOMCAST_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// Connections kept for plain HTTP (API calls, pushes, health checks, upgrades under way)
    /// beyond `--max-connections`. All connections together are bounded by the sum (within
    /// the open-file limit); past it a request gets HTTP 503 and its connection is closed.
    #[arg(long, env = "ROOMCAST_MAX_HTTP_CONNECTIONS", default_value_t = 128)]
    pub max_http_connections: usize,

    /// Run as a node of the cluster that this Redis coordinates (`redis://HOST:PORT`):
    /// seqs, history, recovery and the inbox are shared through it, and every node delivers
    /// every room's chats. Without it the node runs alone on `--store`.
    #[arg(long, env = "ROOMCAST_CLUSTER", value_name = "REDIS_URL")]
    pub cluster: Option<String>,

    /// Sockets of one kind (chat, notifications) one user may have open on this node; the
    /// user's oldest is closed with 4005 when a newer one passes it.
    #[arg(long, env = "ROOMCAST_MAX_SOCKETS_PER_USER", default_value_t = 16)]
    pub max_sockets_per_user: usize,

    /// Cluster mode: seconds a node that died without a goodbye keeps its users present on
    /// the other nodes (nodes beat every third of it).
    #[arg(long, env = "ROOMCAST_PRESENCE_TTL_SECS", default_value_t = 30)]
    pub presence_ttl_secs: u64,

    // Transport hardening: who may open sockets, how fast, through which proxies, over TLS.
    // docs/DEPLOY.md says what each guards against.
    /// Origins whose pages may open WebSockets, comma-separated (`https://chat.example.com`),
    /// or `*` for any. Clients that send no `Origin` (programs) and this server's own pages
    /// are always allowed; with nothing listed, pages on this machine (`http://localhost:*`,
    /// `http://127.0.0.1:*`) too. `null` and `file://` only when listed. Others get 403.
    #[arg(long, env = "ROOMCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<OriginRule>,

    /// WebSocket upgrades per second one client address (an IPv6 /64) may make, sustained
    /// (0: no limit); past it HTTP 429 with `Retry-After`.
    #[arg(long, env = "ROOMCAST_CONN_RATE_PER_IP", default_value_t = 20.0)]
    pub conn_rate_per_ip: f64,

    /// WebSocket upgrades one client address may make at once.
    #[arg(long, env = "ROOMCAST_CONN_RATE_BURST", default_value_t = 40)]
    pub conn_rate_burst: u32,

    /// Apply `--conn-rate-per-ip` to loopback clients too (exempt by default, so local load
    /// tests and the clients of a proxy not in `--trusted-proxies` are not limited).
    #[arg(long, env = "ROOMCAST_CONN_RATE_LOOPBACK")]
    pub conn_rate_loopback: bool,

    /// Reverse proxies whose `X-Forwarded-For` (or `Forwarded`) names the client,
    /// comma-separated addresses or networks (`127.0.0.1,10.0.0.0/8`). Those headers are read
    /// only from these peers; the client is the rightmost address that is not one of them.
    /// Behind a proxy, set this or `--api-key`: otherwise every client is the proxy's
    /// address, loopback on the same host.
    #[arg(long, env = "ROOMCAST_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ProxyNet>,

    /// TLS certificate chain (PEM), with `--tls-key`: the server then speaks HTTPS and WSS
    /// only.
    #[arg(long, env = "ROOMCAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "ROOMCAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    // Identity (docs/SECURITY.md). Without --jwt-secret or --jwt-public-key the server is in
    // development mode: a socket names its user.
    /// Secret that signs tokens with HS256 (at least 32 bytes). Every WebSocket must then
    /// present a token whose `sub` is its user.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key that verifies tokens: RSA (RS256) or EC P-256 (ES256).
    /// Every WebSocket must then present a token whose `sub` is its user.
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// The `aud` tokens must carry. Without it, tokens that carry any `aud` are refused.
    #[arg(long, env = "ROOMCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The `iss` tokens must carry.
    #[arg(long, env = "ROOMCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Seconds of clock skew allowed on a token's `exp` and `nbf`; an open socket is closed
    /// (4004) this long after its token's `exp`.
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Room name prefixes (comma-separated) that only an explicit grant in a token opens;
    /// `''` for none.
    #[arg(
        long,
        env = "ROOMCAST_RESERVED_PREFIXES",
        value_delimiter = ',',
        default_value = "private:"
    )]
    pub reserved_prefixes: Vec<String>,
}

/// Shortest accepted `--heartbeat-interval` and `--client-timeout`, in seconds: a zero
/// period would make the heartbeat timer panic.
const MIN_PERIOD_SECS: f64 = 0.001;
/// Longest accepted `--heartbeat-interval`, `--client-timeout` and `--shutdown-timeout`, in
/// seconds (a day). Longer is a typo, and far longer (1e30, inf) overflows a `Duration` or
/// an `Instant`, which panics on a worker thread.
const MAX_PERIOD_SECS: f64 = 86_400.0;

/// Refuses a number of seconds that is not finite or not within
/// [`MIN_PERIOD_SECS`]..=[`MAX_PERIOD_SECS`], naming the flag.
fn check_period(flag: &str, secs: f64) -> Result<(), String> {
    if secs.is_finite() && (MIN_PERIOD_SECS..=MAX_PERIOD_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "--{flag} must be a number of seconds from {MIN_PERIOD_SECS} to {MAX_PERIOD_SECS}, \
             not {secs}"
        ))
    }
}

/// `--NAME` must be at least `min`.
fn at_least(name: &str, value: usize, min: usize) -> Result<(), String> {
    if value < min {
        return Err(format!("--{name} must be >= {min}, not {value}"));
    }
    Ok(())
}

fn as_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A per-second rate: a finite number, 0 for off.
fn check_rate(name: &str, value: f64) -> Result<(), String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "--{name} must be a finite number >= 0 (0: off), not {value}"
        ));
    }
    Ok(())
}

impl Config {
    /// The defaults, bound to a free port on 127.0.0.1, for in-process tests.
    /// Never reads `ROOMCAST_*` variables (see [`Config::parse_flags_only`]).
    pub fn for_tests() -> Config {
        let mut c = Config::parse_flags_only(["roomcast"]).expect("the defaults parse");
        c.bind = "127.0.0.1:0".parse().expect("literal address");
        c.workers = 2;
        c.store = StoreSpec::Memory;
        c
    }

    /// Parses `args` (the program name first) as flags alone: every `ROOMCAST_*` variable
    /// is ignored. The derive reads the variables while it builds the command; they are
    /// dropped from every argument (`env(None)`) before anything is parsed, so no value can
    /// come from them.
    pub fn parse_flags_only<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(args)?;
        Config::from_arg_matches(&matches)
    }

    pub fn retention(&self) -> Retention {
        Retention {
            max_messages: self.retention_messages,
            max_age_ms: self.retention_secs.saturating_mul(1000),
            inbox_max: self.inbox_max,
            inbox_ttl_ms: self.inbox_ttl_secs.saturating_mul(1000),
            clock: self.clock.clone(),
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval)
    }

    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.client_timeout)
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_text_chars: self.max_text_chars,
        }
    }

    pub fn announced_limits(&self) -> AnnouncedLimits {
        AnnouncedLimits {
            max_text_chars: self.max_text_chars,
            max_frame_bytes: self.max_frame_bytes,
            max_rooms: self.max_rooms_per_socket,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
        }
    }

    /// The identity flags (the key file itself is read by `auth::Identity::from_config`).
    fn validate_identity(&self) -> Result<(), String> {
        use crate::auth::{MIN_SECRET_LEN, RoomPattern};
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return Err("give --jwt-secret or --jwt-public-key, not both".into());
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(format!(
                "--jwt-secret must be at least {MIN_SECRET_LEN} bytes (HS256's own size)"
            ));
        }
        let tokens = self.jwt_secret.is_some() || self.jwt_public_key.is_some();
        if !tokens && (self.jwt_audience.is_some() || self.jwt_issuer.is_some()) {
            return Err(
                "--jwt-audience and --jwt-issuer need --jwt-secret or --jwt-public-key".into(),
            );
        }
        if self.jwt_leeway_secs > MAX_PERIOD_SECS as u64 {
            return Err(format!(
                "--jwt-leeway-secs must be at most {MAX_PERIOD_SECS} seconds"
            ));
        }
        for prefix in self.reserved_prefixes.iter().filter(|p| !p.is_empty()) {
            if !matches!(
                RoomPattern::parse(&format!("{prefix}*")),
                Some(RoomPattern::Prefix(_))
            ) {
                return Err(format!(
                    "--reserved-prefixes: `{prefix}` is not the start of a room name \
                     (A-Z a-z 0-9 _ - . :)"
                ));
            }
        }
        Ok(())
    }

    /// Rejects combinations that cannot work, with a message for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_keep < self.history_on_join {
            return Err(format!(
                "--history-keep ({}) must be at least --history-on-join ({})",
                self.history_keep, self.history_on_join
            ));
        }
        check_period("heartbeat-interval", self.heartbeat_interval)?;
        check_period("client-timeout", self.client_timeout)?;
        if self.client_timeout <= self.heartbeat_interval {
            return Err("--client-timeout must be greater than --heartbeat-interval".into());
        }
        if self.shutdown_timeout as f64 > MAX_PERIOD_SECS {
            return Err(format!(
                "--shutdown-timeout must be at most {MAX_PERIOD_SECS} seconds, not {}",
                self.shutdown_timeout
            ));
        }
        // NaN or infinity would refill the bucket with NaN tokens and refuse everything.
        check_rate("rate-per-sec", self.rate_per_sec)?;
        if self.rate_per_sec > 0.0 {
            at_least("rate-burst", as_usize(self.rate_burst.into()), 1)?;
        }
        // Zero would refuse every chat, every join, every socket: a typo, not a setting.
        at_least("max-connections", self.max_connections, 1)?;
        at_least("max-text-chars", self.max_text_chars, 1)?;
        at_least("max-rooms-per-socket", self.max_rooms_per_socket, 1)?;
        at_least("rate-strikes", as_usize(self.rate_strikes.into()), 1)?;
        at_least("max-pending", self.max_pending, 1)?;
        at_least("max-pending-bytes", self.max_pending_bytes, 1024)?;
        at_least("max-in-flight", self.max_in_flight, 1)?;
        at_least("max-frame-bytes", self.max_frame_bytes, 128)?;
        at_least("max-sockets-per-user", self.max_sockets_per_user, 1)?;
        at_least("prune-interval-ms", as_usize(self.prune_interval_ms), 1)?;
        at_least(
            "request-timeout-ms",
            as_usize(self.request_timeout_ms),
            1000,
        )?;
        at_least("max-http-connections", self.max_http_connections, 1)?;
        at_least("presence-ttl-secs", as_usize(self.presence_ttl_secs), 1)?;
        check_rate("conn-rate-per-ip", self.conn_rate_per_ip)?;
        if self.conn_rate_per_ip > 0.0 {
            at_least("conn-rate-burst", as_usize(self.conn_rate_burst.into()), 1)?;
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(
                "--api-key (ROOMCAST_API_KEY) is set but empty: give a key, or unset it to \
                 allow loopback clients only"
                    .into(),
            );
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "--static-dir {}: not a directory (or not readable)",
                dir.display()
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together: give both or neither".into());
        }
        self.validate_identity()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses flags as the binary would, minus the environment.
    fn flags(args: &[&str]) -> Config {
        Config::parse_flags_only(std::iter::once("roomcast").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn defaults_are_valid() {
        Config::for_tests().validate().unwrap();
        let c = flags(&[]);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!((c.history_on_join, c.history_keep), (50, 100));
        assert_eq!(c.max_frame_bytes, 65536);
    }

    #[test]
    fn contradictions_are_rejected() {
        let mut c = Config::for_tests();
        c.history_keep = 10;
        assert!(c.validate().is_err());
        let mut c = Config::for_tests();
        c.client_timeout = 1.0;
        c.heartbeat_interval = 2.0;
        assert!(c.validate().is_err());
    }

    /// A limit of zero would refuse every chat, join or socket: refused at start, naming the
    /// flag and the value given (not another flag's).
    #[test]
    fn limits_that_would_refuse_everything_are_refused_naming_the_flag() {
        for (flag, value) in [
            ("max-connections", "0"),
            ("max-text-chars", "0"),
            ("max-rooms-per-socket", "0"),
            ("rate-strikes", "0"),
            ("rate-burst", "0"),
            ("conn-rate-burst", "0"),
            ("max-pending", "0"),
            ("max-pending-bytes", "1000"),
            ("max-in-flight", "0"),
            ("max-frame-bytes", "10"),
            ("max-sockets-per-user", "0"),
            ("prune-interval-ms", "0"),
            ("request-timeout-ms", "500"),
            ("max-http-connections", "0"),
            ("presence-ttl-secs", "0"),
        ] {
            let mut args = vec![format!("--{flag}={value}")];
            if flag == "conn-rate-burst" {
                args.push("--conn-rate-per-ip=5".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = flags(&args).validate().expect_err(flag);
            assert!(
                err.starts_with(&format!("--{flag} must be >= "))
                    && err.ends_with(&format!("not {value}")),
                "--{flag}={value}: {err}"
            );
        }
        for key in ["", "  "] {
            let err = flags(&["--api-key", key]).validate().unwrap_err();
            assert!(err.contains("--api-key"), "{err}");
        }
        let err = flags(&["--static-dir", "/no/such/dir"])
            .validate()
            .unwrap_err();
        assert!(err.contains("/no/such/dir"), "{err}");
        flags(&["--static-dir", "static", "--api-key", "k"])
            .validate()
            .unwrap();
    }

    /// Durations that `Duration::from_secs_f64` or `Instant + Duration` would panic on (on a
    /// worker thread, once a socket opens) are refused at start, naming the flag.
    #[test]
    fn unusable_durations_are_refused_naming_the_flag() {
        for flag in ["client-timeout", "heartbeat-interval"] {
            for value in ["inf", "-inf", "NaN", "-1", "0", "1e-12", "1e30", "86401"] {
                let c = flags(&[&format!("--{flag}={value}")]);
                let err = c.validate().expect_err(&format!("--{flag} {value}"));
                assert!(
                    err.contains(&format!("--{flag} ")),
                    "--{flag} {value}: {err}"
                );
            }
        }
        // The longest accepted ones still start.
        flags(&["--heartbeat-interval=3600", "--client-timeout=86400"])
            .validate()
            .unwrap();
        let err = flags(&["--shutdown-timeout=18446744073709551615"])
            .validate()
            .unwrap_err();
        assert!(err.contains("--shutdown-timeout"), "{err}");
        for value in ["inf", "NaN", "-1"] {
            let err = flags(&[&format!("--rate-per-sec={value}")])
                .validate()
                .unwrap_err();
            assert!(err.contains("--rate-per-sec"), "{value}: {err}");
        }
    }

    #[test]
    fn identity_flags_are_checked() {
        let secret = "--jwt-secret=0123456789abcdef0123456789abcdef";
        flags(&[secret]).validate().unwrap();
        flags(&[
            secret,
            "--jwt-audience=chat",
            "--jwt-issuer=https://auth.example",
        ])
        .validate()
        .unwrap();
        for bad in [
            &["--jwt-secret=too-short"][..],
            &[secret, "--jwt-public-key=/etc/roomcast/jwt.pem"],
            &["--jwt-audience=chat"],
            &["--jwt-issuer=https://auth.example"],
            &["--reserved-prefixes=ok:,not ok"],
            &[secret, "--jwt-leeway-secs=86401"],
        ] {
            assert!(flags(bad).validate().is_err(), "{bad:?}");
        }
        assert_eq!(flags(&[]).reserved_prefixes, ["private:"]);
        assert_eq!(flags(&[]).jwt_leeway_secs, 30);
        let two = flags(&["--reserved-prefixes=staff.,ops:"]);
        assert_eq!(two.reserved_prefixes, ["staff.", "ops:"]);
        // An empty value reserves nothing.
        let none = flags(&["--reserved-prefixes="]);
        none.validate().unwrap();
        assert!(none.reserved_prefixes.iter().all(String::is_empty));
    }

    /// Set by [`for_tests_ignores_the_environment`] in the child it runs.
    const CHILD: &str = "ROOMCAST_TEST_CONFIG_CHILD";

    /// `for_tests` ignores `ROOMCAST_*` variables. They cannot be set in this process:
    /// the environment is shared by every test running beside this one (which is why
    /// `set_var` is `unsafe` in edition 2024), so a variable set here could leak into other
    /// tests, and a read could race a write. Instead this test runs the test binary again,
    /// as a child whose environment holds the variables from its start, and has it run only
    /// [`for_tests_in_a_child_with_roomcast_variables`].
    #[test]
    fn for_tests_ignores_the_environment() {
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "config::tests::for_tests_in_a_child_with_roomcast_variables",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("ROOMCAST_API_KEY", "from-the-shell")
            .env("ROOMCAST_MAX_CONNECTIONS", "7")
            .env("ROOMCAST_STORE", "sqlite:/nonexistent/roomcast.db")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // It really ran (a wrong filter would pass with 0 tests).
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    /// On its own, checks the defaults; run by [`for_tests_ignores_the_environment`], also
    /// that the variables were there to be ignored.
    #[test]
    fn for_tests_in_a_child_with_roomcast_variables() {
        let c = Config::for_tests();
        assert_eq!(c.api_key, None);
        assert_eq!(c.max_connections, 25_000);
        assert_eq!(c.store, StoreSpec::Memory);
        let flags_only = flags(&[]);
        assert_eq!(
            (flags_only.api_key, flags_only.max_connections),
            (None, 25_000)
        );
        if std::env::var_os(CHILD).is_some() {
            let from_env = Config::try_parse_from(["roomcast"]).expect("the variables parse");
            assert_eq!(from_env.api_key.as_deref(), Some("from-the-shell"));
            assert_eq!(from_env.max_connections, 7);
        }
    }
}
