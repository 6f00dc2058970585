//! A member's setup: connect, read `welcome`, join the room, and register before the setup
//! closes.
//!
//! The main task waits for every member to register or fail, or for `--setup-timeout`, then
//! closes the [`Setup`]: a member that joins after that is turned away (and closes its
//! socket), so that the counts the run starts with are the ones it ends with.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;

use super::{Phase, setup_over};
use crate::Ctx;
use crate::conn::{self, Connector, JoinInfo, Welcome, Ws};
use crate::report::Connections;
use crate::stats::{Percentiles, log_buckets, new_histogram};

/// The setup's shared bookkeeping: who joined, who failed, how long connecting took.
pub struct Setup {
    /// TCP connect + upgrade, µs, every member that got that far.
    connect_hist: Mutex<Histogram<u64>>,
    /// Set when the main task stops waiting: no member registers after it.
    closed: Mutex<bool>,
    joined: AtomicU64,
    failed: AtomicU64,
}

/// How a member's setup went, in its outcome.
#[derive(Debug, Default)]
pub struct SetupOutcome {
    /// The socket was open (TCP and upgrade), whether or not it joined.
    pub connected: bool,
    /// It joined and registered: it is in the run.
    pub member: bool,
    /// Why it is not a member.
    pub failure: Option<String>,
}

impl SetupOutcome {
    /// Counts the member in the report's connections (made; failed, and why); whether it is
    /// in the run.
    pub fn add_to(&self, conns: &mut Connections) -> bool {
        conns.made += u64::from(self.connected);
        if !self.member {
            conns.failed += 1;
            let reason = self
                .failure
                .clone()
                .unwrap_or_else(|| "unknown".to_string());
            *conns.failure_reasons.entry(reason).or_default() += 1;
        }
        self.member
    }
}

const LATE: &str = "not ready before --setup-timeout";

impl Setup {
    pub fn new() -> Setup {
        Setup {
            connect_hist: Mutex::new(new_histogram()),
            closed: Mutex::new(false),
            joined: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Counts a joined member, unless the setup is closed; whether it was counted. `count`
    /// does the scenario's own counting (room members, senders), under the same lock, so
    /// that it is all done or none of it.
    pub fn register(&self, count: impl FnOnce()) -> bool {
        let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return false;
        }
        count();
        self.joined.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Waits until all `n` members have joined or failed, or `--setup-timeout` passes (the
    /// warning names them `what`), then closes the setup; how many joined.
    pub async fn wait_and_close(&self, ctx: &Ctx, n: usize, what: &str) -> u64 {
        ctx.wait_for_setup(&self.joined, &self.failed, n, what)
            .await;
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.joined.load(Ordering::SeqCst)
    }

    /// Puts the connect latencies in the report's connections, and counts the member tasks
    /// that did not finish by the hard deadline (`stuck`) as failed.
    pub fn add_to(&self, conns: &mut Connections, stuck: u64) {
        let connect = self
            .connect_hist
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        conns.connect_latency_us = Percentiles::of(&connect);
        conns.connect_buckets = log_buckets(&connect);
        if stuck > 0 {
            conns.failed += stuck;
            *conns
                .failure_reasons
                .entry("task did not finish by the hard deadline".to_string())
                .or_default() += stuck;
        }
    }

    fn record_connect(&self, d: Duration) {
        if let Ok(mut h) = self.connect_hist.lock() {
            let us = d.as_micros() as u64;
            h.saturating_record(us.clamp(1, crate::stats::MAX_US));
        }
    }
}

/// Sets up one member: connects as `user` through `connector`, hands the `welcome` and the
/// socket to `opened` (warnings, bookkeeping), joins `room` (each step bounded by
/// `step_timeout` seconds) and registers with `setup`, `count` doing the scenario's
/// counting. Gives up when the setup is over first. How it went goes in `out`; on failure
/// the socket is closed and the failure counted in `setup`.
#[allow(clippy::too_many_arguments)]
pub async fn join(
    setup: &Setup,
    connector: &Connector,
    user: &str,
    room: &str,
    step_timeout: f64,
    go: &watch::Receiver<Phase>,
    opened: impl FnOnce(&Welcome, &Ws),
    count: impl FnOnce(&JoinInfo),
    out: &mut SetupOutcome,
) -> Option<(Ws, JoinInfo)> {
    let steps = async {
        let o = connector
            .open(&format!("/ws?user_id={user}"), true)
            .await
            .map_err(|e| (e, false))?;
        setup.record_connect(o.connect_time);
        opened(&o.welcome, &o.ws);
        let mut ws = o.ws;
        let info = match conn::join(&mut ws, room, Duration::from_secs_f64(step_timeout)).await {
            Ok(i) => i,
            Err(e) => {
                conn::close(ws, Duration::from_secs(1)).await;
                return Err((e, true));
            }
        };
        if !setup.register(|| count(&info)) {
            conn::close(ws, Duration::from_secs(1)).await;
            return Err((LATE.to_string(), true));
        }
        Ok((ws, info))
    };
    let result = tokio::select! {
        r = steps => r,
        _ = setup_over(go.clone()) => Err((LATE.to_string(), false)),
    };
    match result {
        Ok(joined) => {
            out.connected = true;
            out.member = true;
            Some(joined)
        }
        Err((reason, connected)) => {
            setup.failed.fetch_add(1, Ordering::Relaxed);
            out.connected = connected;
            out.failure = Some(reason);
            None
        }
    }
}
