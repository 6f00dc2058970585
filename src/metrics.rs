//! The server's metrics: one [`Metrics`] per running server, with its own Prometheus
//! `Registry` (no global statics: tests run many servers in one process and assert exact
//! values).
//!
//! Sessions and `ChatServer` report into it; `GET /metrics` renders it in the Prometheus text
//! format, and the live-stats sampler (`src/http/live.rs`) reads it once a second.
//!
//! | metric | labels | meaning |
//! | --- | --- | --- |
//! | `roomcast_connections` | `kind` (`chat`, `notifications`) | open WebSocket sessions (gauge) |
//! | `roomcast_rooms` | | rooms with at least one member (gauge) |
//! | `roomcast_users` | | users with at least one chat socket (gauge) |
//! | `roomcast_frames_received_total` | `type` | client frames, by message type, `invalid`, `binary` or `text_ping` |
//! | `roomcast_frames_sent_total` | | text frames written to sockets |
//! | `roomcast_deliveries_total` | | room frames queued to recipients by fan-out |
//! | `roomcast_frames_dropped_total` | `reason` | client frames refused without being acted on |
//! | `roomcast_sockets_closed_total` | `code`, `reason` | sessions ended, by close code |
//! | `roomcast_connections_refused_total` | | requests answered 503 because their connection came past the connection bound |
//! | `roomcast_rate_limited_total` | | frames refused by the rate limit |
//! | `roomcast_slow_consumers_closed_total` | | sessions closed for not reading |
//! | `roomcast_notifications_pushed_total` | | notification frames queued, one per socket |
//! | `roomcast_fanout_seconds` | | chat arrival to hand-over to the last recipient (histogram) |
//! | `roomcast_store_write_failures_total` | | history writes the store failed |
//! | `roomcast_store_reads_total` | | history reads `ChatServer` sent to the store (joins, `history` pages, API reads, cluster fills) |
//! | `roomcast_broker_up` | | cluster mode: 1 while subscribed to the cluster's channel, 0 while reconnecting |
//! | `roomcast_broker_reconnects_total` | | cluster mode: subscriptions lost (each followed by reconnecting) |
//! | `roomcast_store_state` | | the history store: 0 ok, 1 failing (its last batch failed), 2 down |
//!
//! Every method is cheap and never fails: a metric that cannot be registered or encoded is
//! logged, never a panic.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::server::messages::SessionKind;

/// Upper bounds of `roomcast_fanout_seconds`, 10 µs to 1 s.
pub const FANOUT_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Client frame types known in advance: shown (as 0) before any traffic.
const FRAME_TYPES: &[&str] = &[
    "join",
    "leave",
    "chat",
    "typing",
    "get_users",
    "private",
    "history",
    "ping",
    "pong",
    "refresh",
    "invalid",
    "binary",
    "text_ping",
];

/// Every (close code, reason) a session is counted under; shown (as 0) before any traffic.
const CLOSES: &[(&str, &str)] = &[
    ("1000", "peer"),
    ("1001", "shutdown"),
    ("1002", "protocol_error"),
    ("1006", "dropped"),
    ("1007", "invalid_utf8"),
    ("1008", "rate_limited"),
    ("1009", "too_big"),
    ("4001", "slow_consumer"),
    ("4002", "heartbeat_timeout"),
    ("4003", "server"),
    ("4004", "token_expired"),
    ("4005", "too_many_sockets"),
];

/// Drop reasons the session uses; shown (as 0) before any traffic.
pub mod drop_reason {
    /// Refused by the rate limit.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Larger than `--max-frame-bytes` (the socket is then closed with 1009).
    pub const TOO_BIG: &str = "too_big";
    /// Shed at admission: too many requests waiting for `ChatServer` (`--max-in-flight`),
    /// too many of the socket's chats waiting for the store, or a room whose readers the
    /// server is behind on.
    pub const OVERLOADED: &str = "overloaded";
    /// Not a valid client message (answered with an `error`).
    pub const INVALID: &str = "invalid";
    /// A binary frame (answered with `binary_unsupported`).
    pub const BINARY: &str = "binary";

    pub(crate) const ALL: &[&str] = &[RATE_LIMITED, TOO_BIG, OVERLOADED, INVALID, BINARY];
}

pub struct Metrics {
    registry: Registry,
    /// The children of `roomcast_connections`.
    chat_connections: IntGauge,
    notification_connections: IntGauge,
    rooms: IntGauge,
    users: IntGauge,
    frames_received: IntCounterVec,
    /// The pre-registered children of `frames_received`, to skip the label lookup.
    frames_received_known: Vec<(&'static str, IntCounter)>,
    frames_sent: IntCounter,
    deliveries: IntCounter,
    frames_dropped: IntCounterVec,
    sockets_closed: IntCounterVec,
    connections_refused: IntCounter,
    rate_limited: IntCounter,
    slow_consumers_closed: IntCounter,
    notifications_pushed: IntCounter,
    fanout: Histogram,
    store_write_failures: IntCounter,
    store_reads: IntCounter,
    store_state: IntGauge,
    broker_up: IntGauge,
    broker_reconnects: IntCounter,
}

/// What the live-stats sampler reads once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    pub chat_connections: i64,
    pub notification_connections: i64,
    pub users: i64,
    pub rooms: i64,
    pub frames_received: u64,
    pub frames_sent: u64,
    pub deliveries: u64,
    /// Cumulative counts of `roomcast_fanout_seconds`, one per bound of [`FANOUT_BUCKETS`],
    /// then the total (the `+Inf` bucket).
    pub fanout_buckets: Vec<u64>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let connections = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("roomcast_connections", "Open WebSocket sessions, by kind."),
                &["kind"],
            ),
        );
        let counter = |name: &str, help: &str| {
            register(&registry, IntCounter::with_opts(Opts::new(name, help)))
        };
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::with_opts(Opts::new(name, help)))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };

        let frames_received = counter_vec(
            "roomcast_frames_received_total",
            "Client frames received, by message type (`invalid`: undecodable, `binary`, \
             `text_ping`: a notification socket's text ping).",
            &["type"],
        );
        let frames_received_known = FRAME_TYPES
            .iter()
            .map(|&t| (t, frames_received.with_label_values(&[t])))
            .collect();
        let frames_dropped = counter_vec(
            "roomcast_frames_dropped_total",
            "Client frames refused without being acted on, by reason.",
            &["reason"],
        );
        for reason in drop_reason::ALL {
            frames_dropped.with_label_values(&[reason]);
        }
        let sockets_closed = counter_vec(
            "roomcast_sockets_closed_total",
            "Sessions ended, by close code and reason (1000 peer: the peer closed; \
             1006 dropped: the connection ended without a close frame).",
            &["code", "reason"],
        );
        for (code, reason) in CLOSES {
            sockets_closed.with_label_values(&[code, reason]);
        }
        let fanout = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "roomcast_fanout_seconds",
                    "Time from a chat reaching the chat server to its last recipient.",
                )
                .buckets(FANOUT_BUCKETS.to_vec()),
            ),
        );
        Arc::new(Metrics {
            chat_connections: connections.with_label_values(&["chat"]),
            notification_connections: connections.with_label_values(&["notifications"]),
            rooms: gauge("roomcast_rooms", "Rooms with at least one member."),
            users: gauge("roomcast_users", "Users with at least one chat socket."),
            frames_received,
            frames_received_known,
            frames_sent: counter(
                "roomcast_frames_sent_total",
                "Text frames written to sockets.",
            ),
            deliveries: counter(
                "roomcast_deliveries_total",
                "Room frames queued to recipients by fan-out.",
            ),
            frames_dropped,
            sockets_closed,
            connections_refused: counter(
                "roomcast_connections_refused_total",
                "Requests answered 503 because their connection came past the connection bound.",
            ),
            rate_limited: counter(
                "roomcast_rate_limited_total",
                "Client frames refused by the rate limit.",
            ),
            slow_consumers_closed: counter(
                "roomcast_slow_consumers_closed_total",
                "Sessions closed for not reading their frames.",
            ),
            notifications_pushed: counter(
                "roomcast_notifications_pushed_total",
                "Notification frames queued, one per notification socket reached.",
            ),
            fanout,
            store_write_failures: counter(
                "roomcast_store_write_failures_total",
                "History writes the store failed.",
            ),
            store_reads: counter(
                "roomcast_store_reads_total",
                "History reads sent to the store (joins, history pages, API reads, cluster fills).",
            ),
            broker_up: gauge(
                "roomcast_broker_up",
                "Cluster mode: 1 while subscribed to the cluster's channel, 0 while reconnecting.",
            ),
            broker_reconnects: counter(
                "roomcast_broker_reconnects_total",
                "Cluster mode: subscriptions to the cluster's channel lost, each followed by reconnecting.",
            ),
            store_state: gauge(
                "roomcast_store_state",
                "The history store: 0 ok, 1 failing (its last batch failed), 2 down (failed for good).",
            ),
            registry,
        })
    }

    fn connections_of(&self, kind: SessionKind) -> &IntGauge {
        match kind {
            SessionKind::Chat => &self.chat_connections,
            SessionKind::Notifications => &self.notification_connections,
        }
    }

    pub fn session_opened(&self, kind: SessionKind) {
        self.connections_of(kind).inc();
    }

    pub fn session_closed(&self, kind: SessionKind) {
        self.connections_of(kind).dec();
    }

    pub fn set_rooms(&self, n: usize) {
        self.rooms.set(as_i64(n));
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.set(i64::from(up));
    }

    pub fn broker_lost(&self) {
        self.broker_reconnects.inc();
    }

    pub fn set_store_state(&self, state: crate::store::StoreState) {
        use crate::store::StoreState;
        self.store_state.set(match state {
            StoreState::Ok => 0,
            StoreState::Failing => 1,
            StoreState::Down => 2,
        });
    }

    pub fn set_users(&self, n: usize) {
        self.users.set(as_i64(n));
    }

    pub fn frame_received(&self, kind: &'static str) {
        match self.frames_received_known.iter().find(|(t, _)| *t == kind) {
            Some((_, counter)) => counter.inc(),
            None => self.frames_received.with_label_values(&[kind]).inc(),
        }
    }

    pub fn frames_sent(&self, n: u64) {
        self.frames_sent.inc_by(n);
    }

    pub fn deliveries(&self, n: u64) {
        self.deliveries.inc_by(n);
    }

    pub fn frame_dropped(&self, reason: &'static str) {
        self.frames_dropped.with_label_values(&[reason]).inc();
    }

    pub fn socket_closed(&self, code: u16, reason: &'static str) {
        let mut buf = [0u8; 5];
        self.sockets_closed
            .with_label_values(&[format_u16(code, &mut buf), reason])
            .inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn slow_consumer_closed(&self) {
        self.slow_consumers_closed.inc();
    }

    pub fn notifications_pushed(&self, sockets: u64) {
        self.notifications_pushed.inc_by(sockets);
    }

    pub fn observe_fanout(&self, d: Duration) {
        self.fanout.observe(d.as_secs_f64());
    }

    pub fn store_write_failed(&self, n: u64) {
        self.store_write_failures.inc_by(n);
    }

    /// `ChatServer` sent a read (`Op::Read`) to the store.
    pub fn store_read(&self) {
        self.store_reads.inc();
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The figures the live-stats sampler needs, read now.
    pub(crate) fn sample(&self) -> Sample {
        let frames_received = self
            .frames_received
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum();
        let mut fanout_buckets: Vec<u64> = self
            .fanout
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|m| m.get_histogram().get_bucket())
            .map(|b| b.cumulative_count())
            .collect();
        fanout_buckets.push(self.fanout.get_sample_count());
        Sample {
            chat_connections: self.chat_connections.get(),
            notification_connections: self.notification_connections.get(),
            users: self.users.get(),
            rooms: self.rooms.get(),
            frames_received,
            frames_sent: self.frames_sent.get(),
            deliveries: self.deliveries.get(),
            fanout_buckets,
        }
    }
}

/// Registers `metric`. A failed registration is logged: the metric still counts, it is just
/// not rendered.
fn register<M, E>(registry: &Registry, metric: Result<M, E>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
    E: std::fmt::Display,
{
    // The names, help texts, labels and buckets are constants of this module and valid, so
    // construction cannot fail; the unit tests build every metric.
    let metric = metric.unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        log::error!("metric not registered: {e}");
    }
    metric
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Formats `n` in decimal into `buf`, without allocating.
fn format_u16(mut n: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// The `q` quantile (0 to 1) of the observations between two samples of a histogram, from
/// the growth of its cumulative bucket counts, interpolated linearly inside the bucket, as
/// Prometheus' `histogram_quantile` does. `bounds` are the finite upper bounds; `before` and
/// `after` hold one cumulative count per bound plus the total. `None` when nothing was
/// observed in between. An answer in the `+Inf` bucket is the highest finite bound.
pub fn quantile_of_delta(bounds: &[f64], before: &[u64], after: &[u64], q: f64) -> Option<f64> {
    if bounds.is_empty() || after.len() != bounds.len() + 1 || before.len() != after.len() {
        return None;
    }
    let delta: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total = *delta.last()?;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let i = delta.iter().position(|&c| c as f64 >= rank)?;
    if i == bounds.len() {
        return bounds.last().copied();
    }
    let (lower, below) = match i {
        0 => (0.0, 0),
        _ => (bounds[i - 1], delta[i - 1]),
    };
    let in_bucket = delta[i] - below;
    if in_bucket == 0 {
        return Some(bounds[i]);
    }
    let fraction = (rank - below as f64) / in_bucket as f64;
    Some(lower + (bounds[i] - lower) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn known_labels_show_zero_before_traffic() {
        let m = Metrics::new();
        let text = m.render();
        assert_eq!(
            value(&text, r#"roomcast_connections{kind="chat"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(&text, r#"roomcast_connections{kind="notifications"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(&text, r#"roomcast_frames_received_total{type="chat"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"roomcast_frames_dropped_total{reason="rate_limited"}"#
            ),
            Some(0.0)
        );
        assert_eq!(value(&text, "roomcast_fanout_seconds_count"), Some(0.0));
        assert_eq!(
            value(&text, "roomcast_store_write_failures_total"),
            Some(0.0)
        );
    }

    #[test]
    fn every_method_moves_its_metric() {
        let m = Metrics::new();
        m.session_opened(SessionKind::Chat);
        m.session_opened(SessionKind::Chat);
        m.session_opened(SessionKind::Notifications);
        m.session_closed(SessionKind::Chat);
        m.set_rooms(3);
        m.set_users(4);
        m.frame_received("chat");
        m.frame_received("something_new");
        m.frames_sent(5);
        m.deliveries(6);
        m.frame_dropped("too_big");
        m.socket_closed(4001, "slow_consumer");
        m.socket_closed(0, "zero");
        m.rate_limited();
        m.connection_refused();
        m.slow_consumer_closed();
        m.notifications_pushed(7);
        m.observe_fanout(Duration::from_micros(30));
        m.store_write_failed(2);
        m.store_read();
        let text = m.render();
        for (series, want) in [
            (r#"roomcast_connections{kind="chat"}"#, 1.0),
            (r#"roomcast_connections{kind="notifications"}"#, 1.0),
            ("roomcast_rooms", 3.0),
            ("roomcast_users", 4.0),
            (r#"roomcast_frames_received_total{type="chat"}"#, 1.0),
            (
                r#"roomcast_frames_received_total{type="something_new"}"#,
                1.0,
            ),
            ("roomcast_frames_sent_total", 5.0),
            ("roomcast_deliveries_total", 6.0),
            (r#"roomcast_frames_dropped_total{reason="too_big"}"#, 1.0),
            (
                r#"roomcast_sockets_closed_total{code="4001",reason="slow_consumer"}"#,
                1.0,
            ),
            (
                r#"roomcast_sockets_closed_total{code="0",reason="zero"}"#,
                1.0,
            ),
            ("roomcast_rate_limited_total", 1.0),
            ("roomcast_connections_refused_total", 1.0),
            ("roomcast_slow_consumers_closed_total", 1.0),
            ("roomcast_notifications_pushed_total", 7.0),
            (r#"roomcast_fanout_seconds_bucket{le="0.00001"}"#, 0.0),
            (r#"roomcast_fanout_seconds_bucket{le="0.00005"}"#, 1.0),
            ("roomcast_fanout_seconds_count", 1.0),
            ("roomcast_store_write_failures_total", 2.0),
            ("roomcast_store_reads_total", 1.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
        let sample = m.sample();
        assert_eq!(sample.chat_connections, 1);
        assert_eq!(sample.frames_received, 2);
        assert_eq!(sample.fanout_buckets.len(), FANOUT_BUCKETS.len() + 1);
        assert_eq!(sample.fanout_buckets.last(), Some(&1));
    }

    #[test]
    fn two_servers_do_not_share_metrics() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.rate_limited();
        assert_eq!(a.sample().frames_received, 0);
        assert!(a.render().contains("roomcast_rate_limited_total 1"));
        assert!(b.render().contains("roomcast_rate_limited_total 0"));
    }

    #[test]
    fn formats_close_codes() {
        let mut buf = [0; 5];
        assert_eq!(format_u16(0, &mut buf), "0");
        assert_eq!(format_u16(1000, &mut buf), "1000");
        assert_eq!(format_u16(u16::MAX, &mut buf), "65535");
    }

    const BOUNDS: &[f64] = &[1.0, 2.0, 4.0];

    #[test]
    fn no_observation_means_no_quantile() {
        assert_eq!(quantile_of_delta(BOUNDS, &[0; 4], &[0; 4], 0.99), None);
        assert_eq!(
            quantile_of_delta(BOUNDS, &[3, 5, 6, 6], &[3, 5, 6, 6], 0.99),
            None
        );
    }

    #[test]
    fn interpolates_inside_the_bucket_of_the_rank() {
        // 100 observations in the delta: 50 in (0,1], 40 in (1,2], 10 in (2,4].
        let before = [7, 7, 7, 7];
        let after = [57, 97, 107, 107];
        // p50: rank 50 is the last of the first bucket.
        assert_eq!(quantile_of_delta(BOUNDS, &before, &after, 0.5), Some(1.0));
        // p70: rank 70, 20 of 40 into (1,2].
        assert_eq!(quantile_of_delta(BOUNDS, &before, &after, 0.7), Some(1.5));
        // p99: rank 99, 9 of 10 into (2,4].
        let p99 = quantile_of_delta(BOUNDS, &before, &after, 0.99).unwrap();
        assert!((p99 - 3.8).abs() < 1e-9, "{p99}");
        // p25 within the first bucket, from 0.
        assert_eq!(quantile_of_delta(BOUNDS, &before, &after, 0.25), Some(0.5));
    }

    #[test]
    fn only_the_delta_counts() {
        // Before: 1000 slow observations; after: 10 more, all fast.
        let before = [0, 0, 0, 1000];
        let after = [10, 10, 10, 1010];
        assert_eq!(quantile_of_delta(BOUNDS, &before, &after, 0.99), Some(0.99));
    }

    #[test]
    fn the_infinite_bucket_answers_the_highest_bound() {
        let after = [0, 0, 1, 100];
        assert_eq!(quantile_of_delta(BOUNDS, &[0; 4], &after, 0.99), Some(4.0));
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        assert_eq!(quantile_of_delta(&[], &[], &[1], 0.99), None);
        assert_eq!(quantile_of_delta(BOUNDS, &[0; 3], &[1; 4], 0.99), None);
        // Counters that went backwards (a reset) count as no growth.
        assert_eq!(quantile_of_delta(BOUNDS, &[5; 4], &[1; 4], 0.99), None);
        // A quantile out of range is clamped.
        assert_eq!(
            quantile_of_delta(BOUNDS, &[0; 4], &[1, 1, 1, 1], 7.0),
            Some(1.0)
        );
    }
}
