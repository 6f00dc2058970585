//! The `churn` scenario: short-lived connections, one complete session each.
//!
//! A cycle is connect → `welcome` → `join` → `joined` → `chat` → own echo → `leave` → `left` →
//! close handshake. `--concurrency` workers run cycles until `--cycles` have been started
//! (with `--rate`, cycle *i* starts no earlier than *i / rate* seconds after the start). A
//! cycle fails if any step fails or takes longer than `--connect-timeout`; its reason is kept
//! (`join: timeout`, `echo: closed by server: 1008…`). Cycles rotate over `--rooms` rooms, so
//! joins also see history and other members' presence and chat (skipped while waiting).
//!
//! The server must end where it started: `/health` is read before and after (retried for up
//! to `--drain` seconds while sessions wind down) and its `connections`, `users` and `rooms`
//! must be back to the baseline. With `--server-pid`, RSS at start and end shows leaks that
//! counts do not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Connector, Ws};
use crate::report::{ChurnSection, Connections, Latency, Report, TimelineSection};
use crate::stats::{Percentiles, Timeline, TimelineBatch, log_buckets, new_histogram};
use crate::wire::{self, Stamp};
use crate::{Ctx, check_count, check_range, ns_since};

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    /// Cycles to run.
    #[arg(long, default_value_t = 1000)]
    pub cycles: u64,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Cycles started per second (default: as fast as the workers go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Rooms the cycles rotate over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Hard limit on the run, in seconds: cycles not started by then are not run.
    #[arg(long, default_value_t = 300.0)]
    pub max_duration: f64,
}

impl ChurnArgs {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000_000).contains(&self.cycles) {
            return Err("--cycles must be between 1 and 10000000".to_string());
        }
        check_count("--concurrency", self.concurrency, 1, 10_000)?;
        check_count("--rooms", self.rooms, 1, 100_000)?;
        if let Some(r) = self.rate {
            check_range("--rate", r, 0.001, 1_000_000.0)?;
        }
        check_range("--max-duration", self.max_duration, 1.0, 86_400.0)
    }
}

struct Shared {
    connector: Arc<Connector>,
    epoch: Instant,
    start: Instant,
    hard: Instant,
    cycles: u64,
    rate: Option<f64>,
    next: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    step: Duration,
    connect_hist: Mutex<Histogram<u64>>,
    cycle_hist: Mutex<Histogram<u64>>,
    echo_hist: Mutex<Histogram<u64>>,
    timeline: Timeline,
}

#[derive(Default)]
struct WorkerTally {
    connected: u64,
    failures: BTreeMap<String, u64>,
}

fn record(h: &Mutex<Histogram<u64>>, us: u64) {
    if let Ok(mut h) = h.lock() {
        h.saturating_record(us.clamp(1, crate::stats::MAX_US));
    }
}

fn lock_clone(h: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    match h.lock() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

pub async fn run(ctx: &Ctx, a: &ChurnArgs) -> anyhow::Result<Report> {
    ctx.check_fd_limit(a.concurrency * 2);
    let health_before = ctx.health().await;
    let rss_start = ctx.server_now().map(|s| s.rss_bytes);
    let start = Instant::now();
    let hard = start + Duration::from_secs_f64(a.max_duration);
    let sh = Arc::new(Shared {
        connector: ctx.connector(8 * 1024),
        epoch: ctx.epoch,
        start,
        hard,
        cycles: a.cycles,
        rate: a.rate,
        next: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        step: Duration::from_secs_f64(ctx.common.connect_timeout),
        connect_hist: Mutex::new(new_histogram()),
        cycle_hist: Mutex::new(new_histogram()),
        echo_hist: Mutex::new(new_histogram()),
        timeline: Timeline::new(a.max_duration.ceil() as usize + 2),
    });
    sh.timeline.start_at(ns_since(sh.epoch, start));
    ctx.progress.counting("cycles", a.cycles);
    let rooms: Arc<Vec<String>> = Arc::new((0..a.rooms).map(|r| ctx.name("r", r)).collect());
    let names = Arc::new(ctx.run_id.clone());
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(&sh),
                Arc::clone(&rooms),
                Arc::clone(&names),
            ))
        })
        .collect();
    let progress = ctx.progress.clone();
    let sh2 = Arc::clone(&sh);
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let done = sh2.completed.load(Ordering::Relaxed);
            let failed = sh2.failed.load(Ordering::Relaxed);
            let secs = sh2.start.elapsed().as_secs_f64().max(0.001);
            progress.set(
                done + failed,
                format!("{:.0} cycles/s, {failed} failed", done as f64 / secs),
            );
        }
    });
    let guard = hard + sh.step * 5;
    let mut tally = WorkerTally::default();
    let mut stuck = 0u64;
    for mut h in workers {
        match tokio::time::timeout_at(guard.into(), &mut h).await {
            Ok(Ok(t)) => {
                tally.connected += t.connected;
                for (k, v) in t.failures {
                    *tally.failures.entry(k).or_default() += v;
                }
            }
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                h.abort();
                stuck += 1;
            }
        }
    }
    ticker.abort();
    let elapsed = start.elapsed().as_secs_f64();
    let started = sh.next.load(Ordering::SeqCst).min(a.cycles);
    let completed = sh.completed.load(Ordering::SeqCst);
    let failed = sh.failed.load(Ordering::SeqCst);
    ctx.progress.counting("settling", 1);
    let health_after = crate::idle::settle(ctx, health_before).await;
    let rss_end = ctx.server_now().map(|s| s.rss_bytes);

    let mut r = Report::default();
    let connect = lock_clone(&sh.connect_hist);
    let cycle = lock_clone(&sh.cycle_hist);
    let echo = lock_clone(&sh.echo_hist);
    let mut failure_reasons = tally.failures.clone();
    if started < a.cycles {
        *failure_reasons
            .entry("not started before --max-duration".to_string())
            .or_default() += a.cycles - started;
    }
    if stuck > 0 {
        *failure_reasons
            .entry("worker did not finish in time".to_string())
            .or_default() += stuck;
    }
    let connect_failures: u64 = tally
        .failures
        .iter()
        .filter(|(k, _)| k.starts_with("connect:"))
        .map(|(_, v)| v)
        .sum();
    r.connections = Connections {
        attempted: tally.connected + connect_failures,
        made: tally.connected,
        failed: connect_failures,
        dropped: 0,
        failure_reasons: tally
            .failures
            .iter()
            .filter(|(k, _)| k.starts_with("connect:"))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        drop_reasons: BTreeMap::new(),
        connect_latency_us: Percentiles::of(&connect),
        connect_buckets: log_buckets(&connect),
    };
    let not_done = a.cycles - completed;
    if not_done > 0 {
        r.problems.push(format!(
            "{not_done} of {} cycles did not complete ({failed} failed)",
            a.cycles
        ));
    }
    let back = match (health_before, health_after) {
        (Some(b), Some(h)) => Some(b == h),
        _ => None,
    };
    match back {
        Some(false) => r.problems.push(format!(
            "/health did not return to its baseline: before {:?}, after {:?}",
            health_before, health_after
        )),
        None => ctx.progress.warn(
            "/health was not available: cannot check the counts returned to baseline".to_string(),
        ),
        Some(true) => {}
    }
    r.latency = Some(Latency {
        what: "chat → own echo, per cycle".to_string(),
        us: Percentiles::of(&echo),
        buckets: log_buckets(&echo),
    });
    let secs = (elapsed.ceil() as usize).max(1);
    r.timeline = Some(TimelineSection {
        what: "cycles completed".to_string(),
        per_second: sh.timeline.snapshot(secs),
        measure_from_s: 0.0,
        measure_to_s: secs as f64,
    });
    r.churn = Some(ChurnSection {
        cycles: a.cycles,
        completed,
        failed: a.cycles - completed,
        failure_reasons,
        cycles_per_sec: completed as f64 / elapsed.max(0.001),
        cycle_latency_us: Percentiles::of(&cycle),
        rss_start_bytes: rss_start,
        rss_end_bytes: rss_end,
        health_before,
        health_after,
        back_to_baseline: back,
    });
    Ok(r)
}

async fn worker(sh: Arc<Shared>, rooms: Arc<Vec<String>>, run_id: Arc<String>) -> WorkerTally {
    let mut tally = WorkerTally::default();
    let mut tl = TimelineBatch::default();
    loop {
        let i = sh.next.fetch_add(1, Ordering::SeqCst);
        if i >= sh.cycles {
            break;
        }
        if let Some(rate) = sh.rate {
            let at = sh.start + Duration::from_secs_f64(i as f64 / rate);
            if at >= sh.hard {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if Instant::now() >= sh.hard {
            break;
        }
        let room = &rooms[(i % rooms.len() as u64) as usize];
        let user = format!("lt{run_id}c{i}");
        let t0 = Instant::now();
        let limit = sh.step * 4;
        let result = tokio::time::timeout(limit, cycle(&sh, i, &user, room, &mut tally)).await;
        match result {
            Ok(Ok(echo_us)) => {
                record(&sh.cycle_hist, t0.elapsed().as_micros() as u64);
                record(&sh.echo_hist, echo_us);
                sh.completed.fetch_add(1, Ordering::Relaxed);
                tl.count(&sh.timeline, ns_since(sh.epoch, Instant::now()));
            }
            Ok(Err(reason)) => {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                *tally.failures.entry(reason).or_default() += 1;
            }
            Err(_) => {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                *tally
                    .failures
                    .entry("cycle: timeout".to_string())
                    .or_default() += 1;
            }
        }
    }
    tl.flush(&sh.timeline);
    tally
}

/// One cycle; the own echo's latency in µs, or the failed step and why.
async fn cycle(
    sh: &Shared,
    i: u64,
    user: &str,
    room: &str,
    tally: &mut WorkerTally,
) -> Result<u64, String> {
    let opened = sh
        .connector
        .open(&format!("/ws?user_id={user}"), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tally.connected += 1;
    record(&sh.connect_hist, opened.connect_time.as_micros() as u64);
    let mut ws = opened.ws;
    conn::join(&mut ws, room, sh.step)
        .await
        .map_err(|e| format!("join: {e}"))?;

    let send_ns = ns_since(sh.epoch, Instant::now());
    let stamp = Stamp {
        sender: i,
        msg_no: 0,
        send_ns,
    };
    let mut text = String::new();
    wire::encode_text(&mut text, stamp, 0);
    ws.send(Message::text(wire::chat_frame(room, &text)))
        .await
        .map_err(|e| format!("chat: {}", conn::ws_reason(&e)))?;
    let echo_us = wait_for(&mut ws, sh.step, |f| match wire::frame_type(f) {
        Some(b"chat") if wire::parse_chat(f).stamp == Some(stamp) => Some(Ok(())),
        Some(b"error") => Some(Err(format!(
            "echo: error {}",
            String::from_utf8_lossy(wire::str_field(f, b"\"code\":\"").unwrap_or(b"?"))
        ))),
        _ => None,
    })
    .await
    .map_err(|e| format!("echo: {e}"))
    .and_then(|r| r)
    .map(|()| (ns_since(sh.epoch, Instant::now()) - send_ns) / 1_000)?;

    ws.send(Message::text(wire::leave_frame(room)))
        .await
        .map_err(|e| format!("leave: {}", conn::ws_reason(&e)))?;
    wait_for(&mut ws, sh.step, |f| match wire::frame_type(f) {
        Some(b"left") if wire::str_field(f, b"\"room_id\":\"") == Some(room.as_bytes()) => {
            Some(Ok(()))
        }
        Some(b"error") => Some(Err(format!(
            "leave: error {}",
            String::from_utf8_lossy(wire::str_field(f, b"\"code\":\"").unwrap_or(b"?"))
        ))),
        _ => None,
    })
    .await
    .map_err(|e| format!("leave: {e}"))
    .and_then(|r| r)?;

    // Close handshake: our close, then the server's.
    ws.close(None)
        .await
        .map_err(|e| format!("close: {}", conn::ws_reason(&e)))?;
    let closed = tokio::time::timeout(sh.step, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_close() => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(conn::ws_reason(&e)),
                None => return Ok(()),
            }
        }
    })
    .await;
    match closed {
        Ok(Ok(())) => Ok(echo_us),
        Ok(Err(e)) => Err(format!("close: {e}")),
        Err(_) => Err("close: timeout".to_string()),
    }
}

/// Reads text frames until `pick` returns `Some` (within `timeout`).
async fn wait_for<T>(
    ws: &mut Ws,
    timeout: Duration,
    mut pick: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, async {
        loop {
            let t = conn::next_text(ws).await?;
            if let Some(v) = pick(t.as_bytes()) {
                return Ok(v);
            }
        }
    })
    .await
    .map_err(|_| "timeout".to_string())?
}
