//! `GET /live/stats`: the server's figures as Server-Sent Events, once a second, for the
//! dashboard (`/dashboard`).
//!
//! One [`Sampler`] per server reads [`Metrics`] once a second, turns the figures into one
//! ready-encoded event (`data: {json}\n\n`) and publishes it on a `watch` channel; every
//! client stream clones those bytes. A client that falls behind skips to the newest event.
//! Clients get the newest event at once on connect. Streams end when the server shuts down
//! ([`Sampler::stop`], which drops the channel's sender) or when the client goes away.
//!
//! The event:
//!
//! ```json
//! {"ts": 1764000000000, "uptime_secs": 12, "connections": 3, "chat_connections": 2,
//!  "notification_connections": 1, "users": 2, "rooms": 1, "frames_in_per_sec": 4.0,
//!  "frames_out_per_sec": 8.0, "deliveries_per_sec": 6.0, "fanout_p99_ms": 0.045,
//!  "rss_bytes": 15925248}
//! ```
//!
//! Rates are the growth of the counters since the previous sample, per second;
//! `fanout_p99_ms` is the 99th percentile of the fan-outs observed since the previous sample
//! (from the histogram's buckets), `null` when there were none.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;

use super::{ApiError, AppState, access};
use crate::metrics::{FANOUT_BUCKETS, Metrics, Sample, quantile_of_delta};

/// How often the figures are sampled and sent.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The newest event, shared by every client stream.
#[derive(Clone)]
pub struct LiveFeed(watch::Receiver<Bytes>);

/// The task that samples the figures; stopping it ends every stream.
pub struct Sampler {
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `metrics` on the current actix runtime. The first event is ready at
    /// once.
    pub fn start(metrics: Arc<Metrics>, started: Instant) -> (Sampler, LiveFeed) {
        let mut figures = Figures::new(metrics, started);
        let (tx, rx) = watch::channel(figures.next_event());
        let task = actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate; that event is already out
            loop {
                ticks.tick().await;
                // Never fails: `AppState` keeps a receiver for as long as the server runs.
                let _ = tx.send(figures.next_event());
            }
        });
        (Sampler { task }, LiveFeed(rx))
    }

    /// Stops sampling; every open stream then ends.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// The previous sample, to turn counters into rates.
struct Figures {
    metrics: Arc<Metrics>,
    started: Instant,
    previous: Option<(Instant, Sample)>,
}

impl Figures {
    fn new(metrics: Arc<Metrics>, started: Instant) -> Self {
        Figures {
            metrics,
            started,
            previous: None,
        }
    }

    fn next_event(&mut self) -> Bytes {
        let now = Instant::now();
        let sample = self.metrics.sample();
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (elapsed, previous) = match &self.previous {
            Some((at, previous)) => (now.duration_since(*at).as_secs_f64(), previous),
            None => (0.0, &sample),
        };
        let stats = stats_json(
            previous,
            &sample,
            elapsed,
            ts_ms,
            self.started.elapsed().as_secs(),
            rss_bytes(),
        );
        self.previous = Some((now, sample));
        Bytes::from(format!("data: {stats}\n\n"))
    }
}

/// One event's figures: `now` against `previous`, taken `elapsed` seconds apart (0: no
/// previous sample, so every rate is 0).
fn stats_json(
    previous: &Sample,
    now: &Sample,
    elapsed: f64,
    ts_ms: u64,
    uptime_secs: u64,
    rss_bytes: Option<u64>,
) -> serde_json::Value {
    let rate = |before: u64, after: u64| {
        if elapsed > 0.0 {
            after.saturating_sub(before) as f64 / elapsed
        } else {
            0.0
        }
    };
    let p99_ms = quantile_of_delta(
        FANOUT_BUCKETS,
        &previous.fanout_buckets,
        &now.fanout_buckets,
        0.99,
    )
    .map(|secs| secs * 1000.0);
    let chat = now.chat_connections.max(0);
    let notifications = now.notification_connections.max(0);
    json!({
        "ts": ts_ms,
        "uptime_secs": uptime_secs,
        "connections": chat + notifications,
        "chat_connections": chat,
        "notification_connections": notifications,
        "users": now.users.max(0),
        "rooms": now.rooms.max(0),
        "frames_in_per_sec": rate(previous.frames_received, now.frames_received),
        "frames_out_per_sec": rate(previous.frames_sent, now.frames_sent),
        "deliveries_per_sec": rate(previous.deliveries, now.deliveries),
        "fanout_p99_ms": p99_ms,
        "rss_bytes": rss_bytes,
    })
}

/// This process's resident set size; `None` where `/proc` cannot tell (not Linux).
fn rss_bytes() -> Option<u64> {
    crate::procfs::rss_bytes(crate::procfs::Pid::Current).ok()
}

/// `GET /live/stats`.
pub async fn live_stats(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    access::check(&req, &state.config)?;
    let mut rx = state.live.0.clone();
    if rx.has_changed().is_err() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let first = rx.borrow_and_update().clone();
    let events = futures_util::stream::unfold((rx, Some(first)), |(mut rx, first)| async move {
        let event = match first {
            Some(event) => event,
            None => {
                rx.changed().await.ok()?;
                rx.borrow_and_update().clone()
            }
        };
        Some((Ok::<_, Infallible>(event), (rx, None)))
    });
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .streaming(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(frames_in: u64, frames_out: u64, deliveries: u64, fanout: &[u64]) -> Sample {
        Sample {
            chat_connections: 2,
            notification_connections: 1,
            users: 2,
            rooms: 1,
            frames_received: frames_in,
            frames_sent: frames_out,
            deliveries,
            fanout_buckets: fanout.to_vec(),
        }
    }

    #[test]
    fn rates_are_growth_per_second() {
        let n = FANOUT_BUCKETS.len() + 1;
        let before = sample(10, 100, 50, &vec![0; n]);
        let after = sample(14, 120, 56, &vec![0; n]);
        let v = stats_json(&before, &after, 2.0, 1, 5, Some(4096));
        assert_eq!(v["frames_in_per_sec"], 2.0);
        assert_eq!(v["frames_out_per_sec"], 10.0);
        assert_eq!(v["deliveries_per_sec"], 3.0);
        assert_eq!(v["connections"], 3);
        assert_eq!(v["chat_connections"], 2);
        assert_eq!(v["notification_connections"], 1);
        assert_eq!(v["fanout_p99_ms"], serde_json::Value::Null);
        assert_eq!(v["rss_bytes"], 4096);
        assert_eq!(v["uptime_secs"], 5);
    }

    #[test]
    fn the_first_sample_has_zero_rates() {
        let s = sample(10, 100, 50, &[0; 17]);
        let v = stats_json(&s, &s, 0.0, 1, 0, None);
        assert_eq!(v["frames_in_per_sec"], 0.0);
        assert_eq!(v["rss_bytes"], serde_json::Value::Null);
    }

    #[test]
    fn p99_comes_from_the_buckets_growth() {
        // 100 fan-outs, all in the 10-25 µs bucket (the second).
        let mut before = vec![0; FANOUT_BUCKETS.len() + 1];
        let mut after = before.clone();
        before[0] = 3;
        after[0] = 3;
        for c in &mut after[1..] {
            *c = 103;
        }
        for c in &mut before[1..] {
            *c = 3;
        }
        let v = stats_json(
            &sample(0, 0, 0, &before),
            &sample(0, 0, 0, &after),
            1.0,
            1,
            0,
            None,
        );
        let p99 = v["fanout_p99_ms"].as_f64().unwrap();
        // 99 of 100 into (0.010 ms, 0.025 ms].
        assert!((p99 - (0.010 + 0.015 * 0.99)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn reads_its_own_rss() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
