//! The `notify` scenario: notification sockets and HTTP pushes.
//!
//! roomcast does not have its notification endpoint yet. The scenario first asks for
//! `/notifications/x` over plain HTTP: a 404 means the endpoint does not exist, and the tool
//! exits with status 2 and says so. Any other answer means it exists, and then:
//!
//! 1. `--sockets N` WebSocket connections to `/notifications/{user_i}` (no `welcome` assumed);
//! 2. `--pushes M` `POST /send-notification/?user_id=…&title=…&message=…`, round-robin over the
//!    users, from `--http-concurrency` tasks sharing the tool's HTTP client, so as many
//!    keep-alive HTTP/1.1 connections (optionally at `--rate` pushes/s in total). The
//!    `message` is a stamp (`lt:{user}:{push}:{send_ns}`);
//! 3. every socket looks for a stamp in each frame it receives (byte search, whatever the
//!    frame's shape), marks the push as received (a second time is a duplicate) and records
//!    push → receive latency. Pushes answered 2xx but never received by the end of the drain
//!    are lost.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Connector};
use crate::report::{Connections, Latency, NotifySection, Report, TimelineSection};
use crate::stats::{
    LatencyBatch, LatencySink, Percentiles, Timeline, TimelineBatch, log_buckets, new_histogram,
};
use crate::wire::{self, Stamp};
use crate::{Ctx, check_count, check_range, ns_since};

#[derive(Debug, Clone, Args, Serialize)]
pub struct NotifyArgs {
    /// Notification sockets (one user each).
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    /// Pushes to send, round-robin over the users.
    #[arg(long, default_value_t = 1000)]
    pub pushes: u64,
    /// Pushes per second in total (default: as fast as the HTTP connections go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep-alive HTTP connections sending pushes.
    #[arg(long, default_value_t = 4)]
    pub http_concurrency: usize,
}

impl NotifyArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--sockets", self.sockets, 1, 100_000)?;
        if !(1..=10_000_000).contains(&self.pushes) {
            return Err("--pushes must be between 1 and 10000000".to_string());
        }
        check_count("--http-concurrency", self.http_concurrency, 1, 1_000)?;
        if let Some(r) = self.rate {
            check_range("--rate", r, 0.001, 1_000_000.0)?;
        }
        Ok(())
    }
}

struct Shared {
    connector: Arc<Connector>,
    epoch: Instant,
    /// Per push: how many times it was received.
    seen: Vec<AtomicU8>,
    received: AtomicU64,
    duplicated: AtomicU64,
    joined: AtomicU64,
    failed: AtomicU64,
    latency: LatencySink,
    timeline: Timeline,
    connect_hist: Mutex<Histogram<u64>>,
}

#[derive(Default)]
struct Outcome {
    connected: bool,
    failure: Option<String>,
    dropped: Option<String>,
}

pub async fn run(ctx: &Ctx, a: &NotifyArgs) -> anyhow::Result<Report> {
    let probe = ctx
        .http
        .get(ctx.target.http_url("/notifications/x"))
        .timeout(Duration::from_secs_f64(ctx.common.connect_timeout))
        .send()
        .await
        .context("GET /notifications/x")?;
    if probe.status() == reqwest::StatusCode::NOT_FOUND {
        bail!("the server does not expose /notifications yet (GET /notifications/x answered 404)");
    }
    ctx.check_fd_limit(a.sockets + a.http_concurrency);
    let n = a.sockets;
    let sh = Arc::new(Shared {
        connector: ctx.connector(8 * 1024),
        epoch: ctx.epoch,
        seen: (0..a.pushes).map(|_| AtomicU8::new(0)).collect(),
        received: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: LatencySink::new(ctx.threads * 2),
        timeline: Timeline::new(3600),
        connect_hist: Mutex::new(new_histogram()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    ctx.progress.counting("connecting", n as u64);
    let sockets: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(socket(
                Arc::clone(&sh),
                format!("/notifications/{}", ctx.name("n", i)),
                stop_rx.clone(),
            ))
        })
        .collect();
    ctx.wait_for_setup(&sh.joined, &sh.failed, n, "notification sockets opened")
        .await;

    // Pushes.
    let start = Instant::now();
    sh.timeline.start_at(ns_since(sh.epoch, start));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    ctx.progress.counting("pushing", a.pushes);
    let mut pushers = Vec::new();
    for k in 0..a.http_concurrency {
        let (sh, ok, failures) = (Arc::clone(&sh), Arc::clone(&ok), Arc::clone(&failures));
        let http = ctx.http.clone();
        let users: Vec<String> = (0..n).map(|i| ctx.name("n", i)).collect();
        let url = reqwest::Url::parse(&ctx.target.http_url("/send-notification/"))
            .context("the push URL")?;
        let (pushes, step, rate) = (a.pushes, a.http_concurrency as u64, a.rate);
        let timeout = Duration::from_secs_f64(ctx.common.connect_timeout);
        pushers.push(tokio::spawn(async move {
            let mut text = String::new();
            let mut j = k as u64;
            while j < pushes {
                if let Some(r) = rate {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(j as f64 / r)).into(),
                    )
                    .await;
                }
                let user_idx = (j % users.len() as u64) as usize;
                wire::encode_text(
                    &mut text,
                    Stamp {
                        sender: user_idx as u64,
                        msg_no: j,
                        send_ns: ns_since(sh.epoch, Instant::now()),
                    },
                    0,
                );
                let mut target = url.clone();
                target
                    .query_pairs_mut()
                    .append_pair("user_id", &users[user_idx])
                    .append_pair("title", "loadtest")
                    .append_pair("message", &text);
                let result = http.post(target).timeout(timeout).send().await;
                let reason = match result {
                    Ok(resp) if resp.status().is_success() => {
                        // Read the (small) answer, so the connection goes back to the pool.
                        let _ = resp.bytes().await;
                        None
                    }
                    Ok(resp) => Some(format!("HTTP {}", resp.status().as_u16())),
                    Err(e) => Some(failure_reason(e)),
                };
                match reason {
                    None => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(r) => {
                        if let Ok(mut f) = failures.lock() {
                            *f.entry(r).or_default() += 1;
                        }
                    }
                }
                j += step;
            }
        }));
    }
    let progress = ctx.progress.clone();
    let (ok2, sh2) = (Arc::clone(&ok), Arc::clone(&sh));
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            progress.set(
                ok2.load(Ordering::Relaxed),
                format!("{} received", sh2.received.load(Ordering::Relaxed)),
            );
        }
    });
    let push_deadline = start
        + Duration::from_secs_f64(
            a.rate.map_or(0.0, |r| a.pushes as f64 / r) + ctx.common.setup_timeout,
        );
    for mut p in pushers {
        if tokio::time::timeout_at(push_deadline.into(), &mut p)
            .await
            .is_err()
        {
            p.abort();
        }
    }
    let push_secs = start.elapsed().as_secs_f64();
    // Drain: wait for the pushes still in flight.
    let drain_end = Instant::now() + ctx.drain();
    while sh.received.load(Ordering::Relaxed) < ok.load(Ordering::Relaxed)
        && Instant::now() < drain_end
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ticker.abort();
    stop_tx.send_replace(true);
    let mut outcomes = Vec::new();
    for mut s in sockets {
        match tokio::time::timeout(Duration::from_secs(5), &mut s).await {
            Ok(Ok(o)) => outcomes.push(o),
            _ => s.abort(),
        }
    }

    let mut r = Report::default();
    let mut conns = Connections {
        attempted: n as u64,
        ..Connections::default()
    };
    for o in &outcomes {
        conns.made += u64::from(o.connected);
        if let Some(f) = &o.failure {
            conns.failed += 1;
            *conns.failure_reasons.entry(f.clone()).or_default() += 1;
        }
        if let Some(d) = &o.dropped {
            conns.dropped += 1;
            *conns.drop_reasons.entry(d.clone()).or_default() += 1;
        }
    }
    conns.failed += (n - outcomes.len()) as u64;
    let connect = match sh.connect_hist.lock() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    };
    conns.connect_latency_us = Percentiles::of(&connect);
    conns.connect_buckets = log_buckets(&connect);
    let push_ok = ok.load(Ordering::SeqCst);
    let received = sh.received.load(Ordering::SeqCst);
    let duplicated = sh.duplicated.load(Ordering::SeqCst);
    let lost = push_ok.saturating_sub(received);
    let push_failure_reasons = failures.lock().map(|f| f.clone()).unwrap_or_default();
    let push_failed: u64 = push_failure_reasons.values().sum();
    for (cond, msg) in [
        (conns.failed > 0, format!("{} sockets failed", conns.failed)),
        (
            conns.dropped > 0,
            format!("{} sockets were dropped", conns.dropped),
        ),
        (push_failed > 0, format!("{push_failed} pushes failed")),
        (lost > 0, format!("{lost} notifications lost")),
        (
            duplicated > 0,
            format!("{duplicated} notifications duplicated"),
        ),
    ] {
        if cond {
            r.problems.push(msg);
        }
    }
    let lat = sh.latency.merged();
    r.connections = conns;
    r.latency = Some(Latency {
        what: "push sent → notification received".to_string(),
        us: Percentiles::of(&lat),
        buckets: log_buckets(&lat),
    });
    let secs = (start.elapsed().as_secs_f64().ceil() as usize).max(1);
    r.timeline = Some(TimelineSection {
        what: "notifications received".to_string(),
        per_second: sh.timeline.snapshot(secs),
        measure_from_s: 0.0,
        measure_to_s: secs as f64,
    });
    r.notify = Some(NotifySection {
        sockets: n as u64,
        pushes: a.pushes,
        push_ok,
        push_failed,
        push_failure_reasons,
        received,
        lost,
        duplicated,
        per_sec: push_ok as f64 / push_secs.max(0.001),
    });
    Ok(r)
}

/// A push's failure, short and without its URL, so that failures group by cause.
fn failure_reason(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".to_string();
    }
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason.chars().take(120).collect()
}

async fn socket(sh: Arc<Shared>, path: String, mut stop: watch::Receiver<bool>) -> Outcome {
    let mut out = Outcome::default();
    let mut ws = match sh.connector.open(&path, false).await {
        Ok(o) => {
            if let Ok(mut h) = sh.connect_hist.lock() {
                h.saturating_record(
                    (o.connect_time.as_micros() as u64).clamp(1, crate::stats::MAX_US),
                );
            }
            o.ws
        }
        Err(e) => {
            sh.failed.fetch_add(1, Ordering::Relaxed);
            out.failure = Some(e);
            return out;
        }
    };
    out.connected = true;
    sh.joined.fetch_add(1, Ordering::Relaxed);
    let mut lat = LatencyBatch::new(path.len());
    let mut tl = TimelineBatch::default();
    let mut stopped = pin!(stop.wait_for(|s| *s));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now_ns = ns_since(sh.epoch, Instant::now());
                    let f = t.as_bytes();
                    let Some(stamp) = wire::find(f, wire::TEXT_PREFIX)
                        .and_then(|i| wire::parse_stamp(&f[i..]))
                    else {
                        continue;
                    };
                    let Some(seen) = usize::try_from(stamp.msg_no)
                        .ok()
                        .and_then(|i| sh.seen.get(i))
                    else {
                        continue;
                    };
                    if seen.fetch_add(1, Ordering::Relaxed) > 0 {
                        sh.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sh.received.fetch_add(1, Ordering::Relaxed);
                    }
                    tl.count(&sh.timeline, now_ns);
                    lat.push(&sh.latency, now_ns.saturating_sub(stamp.send_ns) / 1_000);
                }
                other => {
                    if let Some(reason) = conn::end_reason(other) {
                        out.dropped = Some(reason);
                        break;
                    }
                }
            },
            _ = &mut stopped => break,
        }
    }
    lat.flush(&sh.latency);
    tl.flush(&sh.timeline);
    if out.dropped.is_none() {
        conn::close(ws, Duration::from_secs(1)).await;
    }
    out
}
