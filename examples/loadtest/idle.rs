//! The `idle` scenario: many joined connections that say nothing, held for a while.
//!
//! It answers two questions: how fast can the server take connections (connect latency: TCP
//! connect + WebSocket upgrade, and the `join` round trip), and what does an idle connection
//! cost it (with `--server-pid`: RSS before connecting, once all are joined, at the end of the
//! hold, and after closing; RSS per connection = (end of hold − before) / joined).
//!
//! One task per connection: connect, `welcome`, `join` a room of `--room-size` members, then
//! read until released (reading keeps answering the server's heartbeat pings; presence frames
//! are dropped unread). A connection that the server closes during the hold counts as dropped.
//! `/health` is read before, during and after the hold when the server answers it.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

use crate::conn::{self, Connector};
use crate::report::{Connections, Health, IdleSection, KernelTcp, Report, TimelineSection};
use crate::stats::{Percentiles, Timeline, log_buckets, new_histogram};
use crate::{Ctx, check_count, check_range, ns_since};

#[derive(Debug, Clone, Args, Serialize)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Seconds to hold the connections once all are joined.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

impl IdleArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--connections", self.connections, 1, 200_000)?;
        check_count("--room-size", self.room_size, 1, 100_000)?;
        check_range("--duration", self.duration, 0.0, 3600.0)
    }
}

struct Shared {
    connector: Arc<Connector>,
    epoch: Instant,
    connect_hist: Mutex<Histogram<u64>>,
    join_hist: Mutex<Histogram<u64>>,
    joined: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Connections joined per second since the start.
    timeline: Timeline,
}

#[derive(Debug, Default)]
struct Outcome {
    connected: bool,
    joined: bool,
    failure: Option<String>,
    dropped: Option<String>,
}

fn record(h: &Mutex<Histogram<u64>>, d: Duration) {
    if let Ok(mut h) = h.lock() {
        h.saturating_record((d.as_micros() as u64).clamp(1, crate::stats::MAX_US));
    }
}

pub async fn run(ctx: &Ctx, a: &IdleArgs) -> anyhow::Result<Report> {
    let n = a.connections;
    ctx.check_fd_limit(n);
    let health_before = ctx.health().await;
    let rss_before = ctx.server_now().map(|s| s.rss_bytes);
    let kernel_before = kernel_tcp();
    let sh = Arc::new(Shared {
        connector: ctx.connector(4 * 1024),
        epoch: ctx.epoch,
        connect_hist: Mutex::new(new_histogram()),
        join_hist: Mutex::new(new_histogram()),
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        timeline: Timeline::new(
            (ctx.common.setup_timeout + a.duration + ctx.common.drain).ceil() as usize + 2,
        ),
    });
    let start = Instant::now();
    sh.timeline.start_at(ns_since(sh.epoch, start));
    let (release_tx, release_rx) = watch::channel(false);
    ctx.progress.counting("connecting", n as u64);
    let step = Duration::from_secs_f64(ctx.common.connect_timeout);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(idle_conn(
                Arc::clone(&sh),
                ctx.name("u", i),
                ctx.name("r", i / a.room_size),
                release_rx.clone(),
                step,
            ))
        })
        .collect();

    ctx.wait_for_setup(&sh.joined, &sh.failed, n, "connections joined")
        .await;
    let setup_secs = start.elapsed().as_secs_f64();
    let rss_connected = ctx.server_now().map(|s| s.rss_bytes);

    // Hold.
    let hold_start = Instant::now();
    let hold_end = hold_start + Duration::from_secs_f64(a.duration);
    ctx.progress.timed("holding", a.duration);
    loop {
        let now = Instant::now();
        if now >= hold_end {
            break;
        }
        ctx.progress.set(
            now.duration_since(hold_start).as_secs(),
            format!(
                "{} held, {} dropped",
                sh.joined.load(Ordering::Relaxed),
                sh.dropped.load(Ordering::Relaxed)
            ),
        );
        tokio::time::sleep((hold_end - now).min(Duration::from_millis(250))).await;
    }
    let held_secs = hold_start.elapsed().as_secs_f64();
    let rss_held = ctx.server_now().map(|s| s.rss_bytes);
    let kernel_held = kernel_tcp();
    let health_held = ctx.health().await;

    // Release and close.
    release_tx.send_replace(true);
    ctx.progress.counting("closing", n as u64);
    let guard = Instant::now() + step + Duration::from_secs(5);
    let (outcomes, stuck) = crate::members::collect(handles, guard, Some(&ctx.progress)).await;
    let health_after = settle(ctx, health_before).await;
    let rss_after = ctx.server_now().map(|s| s.rss_bytes);

    let mut r = Report::default();
    let mut conns = Connections {
        attempted: n as u64,
        ..Connections::default()
    };
    for o in &outcomes {
        conns.made += u64::from(o.connected);
        if !o.joined {
            conns.failed += 1;
            let reason = o.failure.clone().unwrap_or_else(|| "unknown".to_string());
            *conns.failure_reasons.entry(reason).or_default() += 1;
        }
        if let Some(d) = &o.dropped {
            conns.dropped += 1;
            *conns.drop_reasons.entry(d.clone()).or_default() += 1;
        }
    }
    if stuck > 0 {
        conns.failed += stuck;
        *conns
            .failure_reasons
            .entry("task did not finish in time".to_string())
            .or_default() += stuck;
    }
    let joined = sh.joined.load(Ordering::SeqCst);
    let connect = lock_clone(&sh.connect_hist);
    conns.connect_latency_us = Percentiles::of(&connect);
    conns.connect_buckets = log_buckets(&connect);
    if conns.failed > 0 {
        r.problems
            .push(format!("{} connections failed", conns.failed));
    }
    if conns.dropped > 0 {
        r.problems.push(format!(
            "{} connections were dropped while idle",
            conns.dropped
        ));
    }
    if health_before.is_some() && health_held.is_none() {
        ctx.progress.warn(format!(
            "/health did not answer while {joined} connections were held (is the server out of \
             file descriptors?)"
        ));
    }
    if let (Some(b), Some(h)) = (health_before, health_held)
        && h.connections < b.connections + joined
    {
        ctx.progress.warn(format!(
            "/health counted {} connections while {joined} were held (baseline {})",
            h.connections, b.connections
        ));
    }
    if let (Some(b), Some(after)) = (health_before, health_after)
        && after != b
    {
        ctx.progress.warn(format!(
            "/health after closing: {after:?}, not back to the baseline {b:?}"
        ));
    }
    r.connections = conns;
    let per_second_len = (setup_secs.ceil() as usize).max(1);
    r.timeline = Some(TimelineSection {
        what: "connections joined".to_string(),
        per_second: sh.timeline.snapshot(per_second_len),
        measure_from_s: 0.0,
        measure_to_s: per_second_len as f64,
    });
    r.idle = Some(IdleSection {
        connections: joined,
        room_size: a.room_size as u64,
        held_secs,
        join_latency_us: Percentiles::of(&lock_clone(&sh.join_hist)),
        rss_before_bytes: rss_before,
        rss_connected_bytes: rss_connected,
        rss_held_bytes: rss_held,
        rss_after_close_bytes: rss_after,
        rss_per_connection_bytes: match (rss_before, rss_held) {
            (Some(b), Some(h)) if joined > 0 => Some((h as f64 - b as f64) / joined as f64),
            _ => None,
        },
        kernel_tcp_before: kernel_before,
        kernel_tcp_held: kernel_held,
        health_before,
        health_held,
        health_after,
    });
    Ok(r)
}

/// The machine's TCP sockets and the memory their buffers hold, from `/proc/net/sockstat`
/// (both ends of every loopback connection count, the tool's too). RSS does not show it.
fn kernel_tcp() -> Option<KernelTcp> {
    let (sockets, buffer_bytes) = roomcast::procfs::tcp_socket_memory().ok()?;
    Some(KernelTcp {
        sockets,
        buffer_bytes,
    })
}

fn lock_clone(h: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    match h.lock() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Reads `/health` until it is back to `baseline` (at most `--drain` seconds); the last answer.
pub async fn settle(ctx: &Ctx, baseline: Option<Health>) -> Option<Health> {
    let deadline = Instant::now() + ctx.drain();
    loop {
        let h = ctx.health().await;
        if h.is_none() || h == baseline || Instant::now() >= deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn idle_conn(
    sh: Arc<Shared>,
    user: String,
    room: String,
    mut release: watch::Receiver<bool>,
    step: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    let setup = async {
        let opened = sh
            .connector
            .open(&format!("/ws?user_id={user}"), true)
            .await
            .map_err(|e| (e, false))?;
        record(&sh.connect_hist, opened.connect_time);
        let mut ws = opened.ws;
        let t = Instant::now();
        match conn::join(&mut ws, &room, step).await {
            Ok(_) => {
                record(&sh.join_hist, t.elapsed());
                Ok(ws)
            }
            Err(e) => {
                conn::close(ws, Duration::from_secs(1)).await;
                Err((e, true))
            }
        }
    };
    let mut rel = release.clone();
    let result = tokio::select! {
        r = setup => r,
        _ = rel.wait_for(|r| *r) => Err(("not joined before the hold ended".to_string(), false)),
    };
    let mut ws = match result {
        Ok(ws) => ws,
        Err((e, connected)) => {
            sh.failed.fetch_add(1, Ordering::Relaxed);
            out.connected = connected;
            out.failure = Some(e);
            return out;
        }
    };
    out.connected = true;
    out.joined = true;
    sh.joined.fetch_add(1, Ordering::Relaxed);
    let mut tl = crate::stats::TimelineBatch::default();
    tl.count(&sh.timeline, ns_since(sh.epoch, Instant::now()));
    tl.flush(&sh.timeline);

    let mut released = pin!(release.wait_for(|r| *r));
    loop {
        tokio::select! {
            m = ws.next() => {
                if let Some(reason) = conn::end_reason(m) {
                    out.dropped = Some(reason);
                    break;
                }
            }
            _ = &mut released => break,
        }
    }
    if out.dropped.is_some() {
        sh.dropped.fetch_add(1, Ordering::Relaxed);
        return out;
    }
    // Close handshake: send close, read until the server's close.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        }
    })
    .await;
    out
}
