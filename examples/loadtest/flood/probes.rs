//! What the flood run watches besides its sockets: `/health` probes, the server's counters
//! from `/metrics`, and the kernel's queues of each member's connection from `/proc/net/tcp`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::Shared;
use crate::Ctx;

/// One `/health` probe.
#[derive(Debug, Clone, Serialize)]
pub struct HealthProbe {
    /// Seconds since the start of the flood.
    pub at_s: f64,
    /// How long the answer took, when it came (200, body read) within the timeout.
    pub ms: Option<f64>,
    /// Why it counts as unanswered.
    pub error: Option<String>,
}

/// The probes started so far, collected by [`HealthProbes::finish`].
pub struct HealthProbes {
    ticker: JoinHandle<Vec<JoinHandle<()>>>,
    results: Arc<Mutex<Vec<HealthProbe>>>,
}

impl HealthProbes {
    /// Waits for the ticker (it stops at the end of the flood) and for every probe (each
    /// bounded by its timeout); the probes in the order they were sent.
    pub async fn finish(self) -> Vec<HealthProbe> {
        if let Ok(probes) = self.ticker.await {
            for p in probes {
                let _ = p.await;
            }
        }
        let mut v = self
            .results
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        v.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        v
    }
}

/// Sends `GET url` (`/health`) every `every` from `start` to `stop`, each probe a task of
/// its own, so one the server does not answer does not hold up the next.
pub fn spawn_health_probes(
    http: reqwest::Client,
    url: String,
    start: Instant,
    stop: Instant,
    every: Duration,
    timeout: Duration,
) -> HealthProbes {
    let results = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&results);
    let ticker = tokio::spawn(async move {
        let mut probes = Vec::new();
        let mut iv = tokio::time::interval_at(start.into(), every);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            let sent = Instant::now();
            if sent >= stop {
                break;
            }
            let (http, url, out) = (http.clone(), url.clone(), Arc::clone(&out));
            probes.push(tokio::spawn(async move {
                let answer = tokio::time::timeout(timeout, async {
                    let resp = http.get(&url).send().await.map_err(|e| short(&e))?;
                    let status = resp.status();
                    resp.bytes().await.map_err(|e| short(&e))?;
                    if status == reqwest::StatusCode::OK {
                        Ok(())
                    } else {
                        Err(format!("HTTP {}", status.as_u16()))
                    }
                })
                .await;
                let elapsed = sent.elapsed().as_secs_f64() * 1_000.0;
                let (ms, error) = match answer {
                    Ok(Ok(())) => (Some(elapsed), None),
                    Ok(Err(e)) => (None, Some(e)),
                    Err(_) => (None, Some(format!("no answer within {timeout:?}"))),
                };
                if let Ok(mut r) = out.lock() {
                    r.push(HealthProbe {
                        at_s: sent.duration_since(start).as_secs_f64(),
                        ms,
                        error,
                    });
                }
            }));
        }
        probes
    });
    HealthProbes { ticker, results }
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        "connect failed".to_string()
    } else {
        let mut s = e.to_string();
        s.truncate(80);
        s
    }
}

/// The server's counters the flood is about, from `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerCounters {
    /// Client frames refused `overloaded` (`roomcast_frames_dropped_total{reason="overloaded"}`).
    pub overloaded: u64,
    /// Sessions closed for not reading (`roomcast_slow_consumers_closed_total`).
    pub slow_consumers_closed: u64,
    /// Room frames queued to recipients (`roomcast_deliveries_total`).
    pub deliveries: u64,
    /// Text frames written to sockets (`roomcast_frames_sent_total`).
    pub frames_sent: u64,
}

impl ServerCounters {
    /// The growth from `before` to `self`.
    pub fn since(&self, before: &ServerCounters) -> ServerCounters {
        ServerCounters {
            overloaded: self.overloaded.saturating_sub(before.overloaded),
            slow_consumers_closed: self
                .slow_consumers_closed
                .saturating_sub(before.slow_consumers_closed),
            deliveries: self.deliveries.saturating_sub(before.deliveries),
            frames_sent: self.frames_sent.saturating_sub(before.frames_sent),
        }
    }

    /// Reads the counters from Prometheus text; `None` unless all are there.
    pub fn parse(text: &str) -> Option<ServerCounters> {
        let value = |name: &str| -> Option<u64> {
            text.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
                rest.trim().parse::<f64>().ok().map(|v| v as u64)
            })
        };
        Some(ServerCounters {
            overloaded: value(r#"roomcast_frames_dropped_total{reason="overloaded"}"#)?,
            slow_consumers_closed: value("roomcast_slow_consumers_closed_total")?,
            deliveries: value("roomcast_deliveries_total")?,
            frames_sent: value("roomcast_frames_sent_total")?,
        })
    }
}

/// The server's counters now, when `/metrics` answers within `timeout`.
pub async fn server_counters(ctx: &Ctx, timeout: Duration) -> Option<ServerCounters> {
    let resp = ctx
        .http
        .get(ctx.target.http_url("/metrics"))
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    if resp.status() != reqwest::StatusCode::OK {
        return None;
    }
    ServerCounters::parse(&resp.text().await.ok()?)
}

/// One reading of the readers' connections.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueuePoint {
    /// Seconds since the start of the flood.
    pub t: f64,
    /// The most bytes any reader's socket held that the tool had not read.
    pub unread_max: u64,
    /// The most bytes the server's socket to any reader had sent and not had acknowledged.
    pub unsent_max: u64,
}

/// How often the queues are read.
const QUEUE_EVERY: Duration = Duration::from_millis(250);

/// Reads every member's connection queues from `/proc/net/tcp` (or `tcp6`) every 250 ms
/// until every member has ended or `until`, into [`Shared::queues`]; returns the readers' maxima over time. Nothing
/// when `/proc` cannot be read.
pub fn spawn_queue_sampler(
    sh: Arc<Shared>,
    server: SocketAddr,
    until: Instant,
) -> JoinHandle<Vec<QueuePoint>> {
    tokio::spawn(async move {
        let path = if server.is_ipv4() {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        let start = match sh.start_ns.load(Ordering::SeqCst) {
            super::UNKNOWN => 0,
            ns => ns,
        };
        let mut series = Vec::new();
        let mut iv = tokio::time::interval(QUEUE_EVERY);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Instant::now() < until && !sh.members_done.load(Ordering::SeqCst) {
            iv.tick().await;
            let Ok(text) = std::fs::read_to_string(path) else {
                break;
            };
            let queues = tcp_queues(&text);
            let (mut unread_max, mut unsent_max) = (0, 0);
            for (i, q) in sh.queues.iter().enumerate() {
                let port = q.port.load(Ordering::Relaxed);
                if port == 0 {
                    continue;
                }
                let Some(&(_, rx)) = queues.get(&(port, server.port())) else {
                    continue;
                };
                let tx = queues.get(&(server.port(), port)).map_or(0, |&(tx, _)| tx);
                q.unread.store(rx, Ordering::Relaxed);
                q.unsent.store(tx, Ordering::Relaxed);
                q.seen.store(true, Ordering::Relaxed);
                if sh.readers.contains(&i) {
                    unread_max = unread_max.max(rx);
                    unsent_max = unsent_max.max(tx);
                }
            }
            series.push(QueuePoint {
                t: sh.now_ns().saturating_sub(start) as f64 / 1e9,
                unread_max,
                unsent_max,
            });
        }
        series
    })
}

/// The queues of every TCP socket in the text of `/proc/net/tcp` or `/proc/net/tcp6`:
/// (local port, remote port) → (`tx_queue`, `rx_queue`), in bytes. For an established
/// connection `tx_queue` is what was sent and not acknowledged, `rx_queue` what arrived and
/// was not read.
pub fn tcp_queues(text: &str) -> HashMap<(u16, u16), (u64, u64)> {
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote) = (port(f.get(1)?)?, port(f.get(2)?)?);
            let (tx, rx) = f.get(4)?.split_once(':')?;
            let tx = u64::from_str_radix(tx, 16).ok()?;
            let rx = u64::from_str_radix(rx, 16).ok()?;
            Some(((local, remote), (tx, rx)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_read_per_connection() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0\n\
   1: 0100007F:2329 0100007F:A1B2 01 0001F400:00000000 01:00000014 00000000  1000        0 12 2 0 20 4 30 10 -1\n\
   2: 0100007F:A1B2 0100007F:2329 01 00000000:0003E800 00:00000000 00000000  1000        0 13 1 0 20 4 30 10 -1\n\
   garbage\n";
        let q = tcp_queues(text);
        assert_eq!(q.get(&(0x2329, 0xA1B2)), Some(&(128_000, 0)));
        assert_eq!(q.get(&(0xA1B2, 0x2329)), Some(&(0, 256_000)));
        assert_eq!(q.get(&(0x2329, 0)), Some(&(0, 0)));
        assert_eq!(q.len(), 3);
        let v6 = "sl local rem\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000010:00000020 00:0 0 0 0 0\n";
        assert_eq!(tcp_queues(v6).get(&(0x1F90, 0xC350)), Some(&(16, 32)));
    }

    #[test]
    fn counters_come_from_prometheus_text() {
        let text = "# HELP roomcast_frames_dropped_total x\n\
roomcast_frames_dropped_total{reason=\"overloaded\"} 12\n\
roomcast_frames_dropped_total{reason=\"rate_limited\"} 3\n\
roomcast_slow_consumers_closed_total 4\n\
roomcast_deliveries_total 1e6\n\
roomcast_frames_sent_total 999\n";
        let c = ServerCounters::parse(text).expect("all counters");
        assert_eq!(
            (
                c.overloaded,
                c.slow_consumers_closed,
                c.deliveries,
                c.frames_sent
            ),
            (12, 4, 1_000_000, 999)
        );
        let d = c.since(&ServerCounters {
            overloaded: 2,
            ..ServerCounters::default()
        });
        assert_eq!(d.overloaded, 10);
        assert!(ServerCounters::parse("roomcast_deliveries_total 1\n").is_none());
    }
}
