//! The `storm` scenario: a reconnect storm. `--clients` users in `--rooms` rooms keep posting
//! acknowledged chats while the server they talk to is restarted, gracefully (SIGTERM) and
//! with kill -9 (SIGKILL), and every client reconnects with jittered exponential backoff and
//! rejoins its rooms with `since_seq`.
//!
//! The tool owns the server: its command line comes after `--`
//! (`loadtest --url ws://127.0.0.1:9004 storm -- target/release/roomcast --bind
//! 127.0.0.1:9004 --store sqlite:/tmp/storm.db`). It is started before the run, stopped with
//! each `--restarts` signal in turn and started again with the same command line, so on the
//! same port and the same store; see `server.rs`.
//!
//! # Phases
//!
//! 1. Setup: every client connects and joins its rooms (`--setup-timeout`).
//! 2. Posting: each client posts `--rate` chats/s with a `client_msg_id`, at most `--window`
//!    unacknowledged. After `--warmup` s the first restart: its signal, the process's exit,
//!    the start of the new one, then the wait until every client is back (at most
//!    `--recover-timeout` s). `--restart-every` s after that the next restart, and so on;
//!    the posting goes on for `--restart-every` s after the last.
//! 3. Drain: no new chats; each client waits for its acks and for every `seq` acknowledged
//!    in its rooms, for at most `--drain` s. The server is then stopped with SIGTERM.
//!
//! What each client checks is in `client.rs`. `/metrics` is read every 250 ms for
//! `roomcast_store_reads_total` (each new process counts from 0): the store's reads per
//! second while the clients come back.
//!
//! Exit status 1 when a client did not recover exactly (a gap, a duplicate, a
//! `recovered: false`, an acknowledged chat missing or posted twice, a chat never
//! acknowledged), or did not come back after a restart within `--recover-timeout`. All back
//! within 10 s of the restart is the target (issue 14): reported, not a failure.
//!
//! # Files
//!
//! `args.rs`: the flags. `server.rs`: the server the tool owns. `client/`: one client, its
//! socket's life and backoff (`mod.rs`) and what it checks in each frame (`frames.rs`).
//! `reads.rs`: the store's reads from `/metrics`. `summary.rs`: the figures and their rows.

mod args;
mod client;
mod reads;
mod server;
mod summary;

pub use args::{HELP, StormArgs};
pub use server::{OwnedServer, Stop};
pub use summary::{StormSection, sections};

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::conn::Connector;
use crate::progress::spawn_rate_ticker;
use crate::report::{Connections, Latency, Report};
use crate::stats::{LatencySink, Percentiles, log_buckets, new_histogram};
use crate::{Ctx, ns_since};

use client::ClientResult;
use summary::{RestartOutcome, Tally};

/// Where the run is; clients read it at every wake-up.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Setup,
    Posting,
    /// No new chats; everything ends at the instant given.
    Draining(Instant),
}

/// One restart, as the clients report their return.
pub struct RestartTrack {
    epoch: Instant,
    /// The signal's time, ns since the epoch.
    t0_ns: AtomicU64,
    back: AtomicU64,
    last_back_ns: AtomicU64,
    recovery: LatencySink,
    /// Per client: the connection attempts it took to come back.
    attempts: LatencySink,
    /// Per client: its wait for the tool's connection slots while coming back.
    queued: LatencySink,
}

impl RestartTrack {
    fn new(epoch: Instant) -> RestartTrack {
        RestartTrack {
            epoch,
            t0_ns: AtomicU64::new(0),
            back: AtomicU64::new(0),
            last_back_ns: AtomicU64::new(0),
            recovery: LatencySink::new(8),
            attempts: LatencySink::new(8),
            queued: LatencySink::new(8),
        }
    }

    /// A client is back, at its attempt `tries`, having waited `queued` for connection slots.
    pub fn back(&self, now: Instant, tries: u32, queued: Duration) {
        let now_ns = ns_since(self.epoch, now);
        let us = now_ns.saturating_sub(self.t0_ns.load(Ordering::SeqCst)) / 1_000;
        let n = self.back.fetch_add(1, Ordering::SeqCst);
        self.last_back_ns.fetch_max(now_ns, Ordering::SeqCst);
        self.recovery.record(n as usize, &[us]);
        self.attempts.record(n as usize, &[u64::from(tries)]);
        self.queued.record(n as usize, &[queued.as_micros() as u64]);
    }
}

/// What the clients share.
pub struct Shared {
    pub connector: Arc<Connector>,
    pub epoch: Instant,
    run_id: String,
    pub rooms: Vec<String>,
    pub rooms_per_client: usize,
    pub rate: f64,
    pub window: usize,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Each connection step's bound (--connect-timeout).
    pub step: Duration,
    /// Nothing runs past this.
    pub hard: Instant,
    phase: AtomicU8,
    drain_until_ns: AtomicU64,
    /// The restart under way (1-based; 0 before the first).
    pub restart_no: AtomicUsize,
    /// Restarts whose new server is listening (`restart_no` while none is under way).
    pub started: AtomicUsize,
    pub restarts: Vec<RestartTrack>,
    /// Clients connected and joined before the first restart.
    pub joined: AtomicU64,
    /// Clients set up and not done sending (acks outstanding, or still posting).
    pub senders_active: AtomicU64,
    /// Per room: the highest acknowledged `seq`.
    pub room_max_acked: Vec<AtomicU64>,
    pub acks: AtomicU64,
    /// TCP connect + WebSocket upgrade, every attempt that opened.
    pub connect: LatencySink,
}

impl Shared {
    pub fn user_name(&self, i: usize) -> String {
        format!("lt{}u{i}", self.run_id)
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Setup,
            1 => Phase::Posting,
            _ => Phase::Draining(
                self.epoch + Duration::from_nanos(self.drain_until_ns.load(Ordering::SeqCst)),
            ),
        }
    }

    fn set_posting(&self) {
        self.phase.store(1, Ordering::SeqCst);
    }

    fn set_draining(&self, until: Instant) {
        self.drain_until_ns
            .store(ns_since(self.epoch, until), Ordering::SeqCst);
        self.phase.store(2, Ordering::SeqCst);
    }
}

pub async fn run(ctx: &Ctx, a: &StormArgs, mut server: OwnedServer) -> anyhow::Result<Report> {
    ctx.check_fd_limit(a.clients + 64);
    let secs = Duration::from_secs_f64;
    let n = a.restarts.len() as u32;
    let per_restart = secs(a.server_stop_timeout + a.server_start_timeout + a.recover_timeout)
        + secs(a.restart_every);
    let hard = Instant::now()
        + ctx.setup_timeout()
        + secs(a.warmup)
        + per_restart * n
        + ctx.drain()
        + Duration::from_secs(10);
    let sh = Arc::new(Shared {
        connector: ctx.connector(8 * 1024),
        epoch: ctx.epoch,
        run_id: ctx.run_id.clone(),
        rooms: (0..a.rooms).map(|r| ctx.name("r", r)).collect(),
        rooms_per_client: a.rooms_per_client,
        rate: a.rate,
        window: a.window,
        backoff_base: Duration::from_millis(a.backoff_base_ms),
        backoff_cap: Duration::from_millis(a.backoff_cap_ms),
        step: secs(ctx.common.connect_timeout),
        hard,
        phase: AtomicU8::new(0),
        drain_until_ns: AtomicU64::new(0),
        restart_no: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        restarts: (0..n).map(|_| RestartTrack::new(ctx.epoch)).collect(),
        joined: AtomicU64::new(0),
        senders_active: AtomicU64::new(0),
        room_max_acked: (0..a.rooms).map(|_| AtomicU64::new(0)).collect(),
        acks: AtomicU64::new(0),
        connect: LatencySink::new(8),
    });

    ctx.progress.counting("joined", a.clients as u64);
    let clients: Vec<_> = (0..a.clients)
        .map(|i| {
            let sh = Arc::clone(&sh);
            tokio::spawn(async move { client::run(&sh, i).await })
        })
        .collect();
    let none_failed = AtomicU64::new(0);
    ctx.wait_for_setup(&sh.joined, &none_failed, a.clients, "clients joined")
        .await;

    let reads = reads::Sampler::start(ctx, Arc::clone(&sh));
    let posting_start = Instant::now();
    sh.set_posting();
    let total = a.warmup + a.restart_every * f64::from(n + 1);
    ctx.progress.timed("storm", total);
    let ticker = {
        let sh = Arc::clone(&sh);
        let sh2 = Arc::clone(&sh);
        spawn_rate_ticker(
            ctx.progress.clone(),
            posting_start,
            "acks",
            move || sh.acks.load(Ordering::Relaxed),
            move |_| match sh2.restart_no.load(Ordering::Relaxed) {
                0 => "posting",
                _ => "posting / restarting",
            },
        )
    };

    let mut problems = Vec::new();
    let mut outcomes = Vec::new();
    let mut next_at = posting_start + secs(a.warmup);
    for (k, &how) in a.restarts.iter().enumerate() {
        tokio::time::sleep_until(next_at.into()).await;
        let expected = sh.joined.load(Ordering::SeqCst);
        let track = &sh.restarts[k];
        let t0 = Instant::now();
        track.t0_ns.store(ns_since(ctx.epoch, t0), Ordering::SeqCst);
        sh.restart_no.store(k + 1, Ordering::SeqCst);
        let stopped = server.stop(how).await?;
        if let Err(e) = server.spawn().await {
            problems.push(format!(
                "the server did not start again after {}: {e:#}",
                how.name()
            ));
            break;
        }
        let ready = Instant::now();
        sh.started.store(k + 1, Ordering::SeqCst);
        let deadline = t0 + secs(a.recover_timeout);
        while track.back.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let back = track.back.load(Ordering::SeqCst);
        let all_back = (back >= expected).then(|| {
            let last = ctx.epoch + Duration::from_nanos(track.last_back_ns.load(Ordering::SeqCst));
            last.saturating_duration_since(t0)
        });
        let window_end = t0 + all_back.unwrap_or_else(|| secs(a.recover_timeout));
        let hist = track.recovery.merged();
        outcomes.push(RestartOutcome {
            signal: how.name().to_string(),
            at_secs: t0.duration_since(posting_start).as_secs_f64(),
            server_exit_secs: stopped.exit_secs,
            server_status: stopped.status,
            killed_after_timeout: stopped.killed_after_timeout,
            down_secs: ready.duration_since(t0).as_secs_f64(),
            expected,
            back,
            all_back_secs: all_back.map(|d| d.as_secs_f64()),
            recovery_us: Percentiles::of(&hist),
            attempts: Percentiles::of(&track.attempts.merged()),
            slot_wait_us: Percentiles::of(&track.queued.merged()),
            store_reads: reads.window(t0, window_end).await,
        });
        if back < expected {
            problems.push(format!(
                "{} of {expected} clients were not back {}s after the {} restart",
                expected - back,
                a.recover_timeout,
                how.name()
            ));
        }
        next_at = Instant::now() + secs(a.restart_every);
    }
    tokio::time::sleep_until(next_at.into()).await;
    let drain_until = Instant::now() + ctx.drain();
    sh.set_draining(drain_until);
    ctx.progress.counting("draining", 1);

    let mut tally = Tally::default();
    let guard = drain_until + sh.step * 2;
    for mut h in clients {
        match tokio::time::timeout_at(guard.into(), &mut h).await {
            Ok(Ok(result)) => tally.add(&result, a.restarts.len()),
            Ok(Err(_)) => tally.add(&ClientResult::default(), a.restarts.len()),
            Err(_) => {
                h.abort();
                tally.add(&ClientResult::default(), a.restarts.len());
            }
        }
    }
    ticker.abort();
    let waiting = sh.senders_active.load(Ordering::SeqCst);
    if waiting > 0 {
        ctx.progress.warn(format!(
            "{waiting} clients still waited for acks when the drain ended: the others waited \
             with them for the rooms' last seqs"
        ));
    }
    let timeline = reads.finish(posting_start).await;
    match server.stop(Stop::Term).await {
        Ok(s) if s.killed_after_timeout => ctx.progress.warn(format!(
            "the server took longer than --server-stop-timeout to stop at the end: {}",
            s.status
        )),
        Ok(_) => {}
        Err(e) => ctx
            .progress
            .warn(format!("stopping the server at the end: {e:#}")),
    }

    let mut r = Report::default();
    let set_up = tally.set_up;
    if set_up < a.clients as u64 {
        problems.push(format!(
            "{} of {} clients did not connect and join before the first restart",
            a.clients as u64 - set_up,
            a.clients
        ));
    }
    let not_exact = a.clients as u64 - tally.exact;
    if not_exact > 0 {
        problems.push(format!(
            "{not_exact} of {} clients did not recover exactly ({} got recovered: false, {} \
             seqs lost, {} duplicated, {} chats posted twice, {} acked chats missing, {} \
             never acknowledged)",
            a.clients,
            tally.clients_not_recovered,
            tally.n.lost,
            tally.n.duplicated,
            tally.n.posted_twice,
            tally.n.acked_missing,
            tally.n.chats_unacked
        ));
    }
    r.problems = problems;
    let connect = sh.connect.merged();
    let mut all = new_histogram();
    for t in &sh.restarts {
        let _ = all.add(t.recovery.merged());
    }
    r.latency = Some(Latency {
        what: "restart signal → client back (rejoined with its history), every restart".to_string(),
        us: Percentiles::of(&all),
        buckets: log_buckets(&all),
    });
    r.timeline = Some(timeline);
    r.connections = Connections {
        attempted: tally.n.connect_attempts,
        made: tally.n.connect_attempts - tally.connect_failures(),
        failed: tally.connect_failures(),
        dropped: tally.drops(),
        failure_reasons: tally.reasons_where(true),
        drop_reasons: tally.reasons_where(false),
        connect_latency_us: Percentiles::of(&connect),
        connect_buckets: log_buckets(&connect),
    };
    r.storm = Some(StormSection::new(a, &tally, outcomes, &server));
    Ok(r)
}
