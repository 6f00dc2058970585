//! The `flood` scenario: an open-loop flood into one room, and what it does to everyone else.
//!
//! `--senders S` sockets post into one room at a fixed total `--rate` (split evenly), or as
//! fast as each socket takes frames (`--rate 0`), with no window: nothing waits for an
//! answer, so the offered load does not drop when the server slows down. `--readers R` more
//! sockets in that room only read. A quiet pair in a room of its own sends one chat every
//! `--quiet-interval-ms` (100 ms) from one member to the other and times it: what the flood
//! costs a room that has nothing to do with it. `/health` is asked every `--health-every`
//! seconds, each probe its own request with a `--health-timeout`.
//!
//! It answers: does delivery keep flowing (the longest time any reader went without a
//! delivery, and each reader's longest gap), who gets closed and why (4001 slow consumer or
//! anything else), does memory stay bounded (the server's RSS over the run, `--server-pid`),
//! how many chats the server refused with `overloaded`, and do the quiet room and `/health`
//! stay responsive. Every delivery is still checked (lost, duplicated, out of order).
//!
//! # Who closed the readers
//!
//! A reader closed as a slow consumer either did not read (the tool was slow), or read
//! everything it was given while the server fell behind. To tell the two apart the tool
//! samples, every 250 ms, the kernel's queues of each reader's connection from
//! `/proc/net/tcp` (server and tool are on the same machine): the bytes the reader's socket
//! holds that the tool has not read yet, and the bytes the server's socket has written that
//! the reader's kernel has not taken. For each closed reader it reports those at the last
//! sample before the close, how long it had gone without a delivery, and how many accepted
//! messages it had not received. A reader with nothing unread that waited seconds for its
//! next delivery was not slow.
//!
//! # Phases
//!
//! 1. Setup: every member connects, reads `welcome` and joins; `/metrics` is read (the
//!    server's `overloaded` and slow-consumer counters).
//! 2. Flood: from the start to `--duration` seconds later (or until `--max-messages` are
//!    sent), senders send, the quiet pair talks, `/health` is probed.
//! 3. Drain: a sender is done once every message it sent is answered (its echo, or an error
//!    such as `overloaded`, which can stand for several); once all are, the room's last
//!    `seq` is known and each member stops when it has it. Everything ends `--drain` seconds
//!    after the flood at the latest. `/metrics` is read again.
//!
//! # Counting
//!
//! - A member closed by the server is expected to have everything up to where it was
//!   closed (its gaps count as lost); the others everything up to the room's last accepted
//!   `seq`, and what they lack at the end is lost (reported also as "missing at the end":
//!   the server still held it, or never sent it).
//! - A gap is the time between two deliveries to one member, from the start of the flood,
//!   up to its close or to the end of the sending, whichever comes first (a member that has
//!   everything waits without a delivery after that, which is no gap).
//! - Deliveries per second: deliveries to every member of the flood room received during the
//!   flood, divided by its length.

mod member;
mod probes;
mod render;
mod send;
mod summary;

pub use render::{charts, sections};
pub use summary::FloodSection;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use crate::conn::Connector;
use crate::members::{self, Phase, RoomSeqs, Schedule, Setup, UNKNOWN};
use crate::progress::{Progress, spawn_rate_ticker};
use crate::report::Report;
use crate::stats::{LatencySink, Timeline};
use crate::{Ctx, check_count, check_range, ns_since};

use member::{Outcome, Role};

#[derive(Debug, Clone, Args, Serialize)]
pub struct FloodArgs {
    /// Sockets posting into the flood room. They are members of it too, and read it.
    #[arg(long, default_value_t = 3)]
    pub senders: usize,
    /// Members of the flood room that only read.
    #[arg(long, default_value_t = 100)]
    pub readers: usize,
    /// Messages per second offered by all senders together (split evenly), with no window:
    /// nothing waits for an answer. 0: each sender sends as fast as its socket takes frames.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Seconds of flood.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Most messages sent in the whole run (split evenly over the senders); the flood ends
    /// early once they are sent.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_messages: u64,
    /// Pad each flood chat text to this many bytes (default: no padding, ~25 bytes).
    #[arg(long)]
    pub text_bytes: Option<usize>,
    /// Milliseconds between the quiet pair's chats, in a room of their own.
    #[arg(long, default_value_t = 100)]
    pub quiet_interval_ms: u64,
    /// Seconds between two `/health` probes during the flood.
    #[arg(long, default_value_t = 1.0)]
    pub health_every: f64,
    /// Seconds a `/health` probe may take before it counts as unanswered.
    #[arg(long, default_value_t = 2.0)]
    pub health_timeout: f64,
}

impl FloodArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--senders", self.senders, 1, 1_000)?;
        check_count("--readers", self.readers, 0, 100_000)?;
        check_range("--rate", self.rate, 0.0, 10_000_000.0)?;
        check_range("--duration", self.duration, 1.0, 3600.0)?;
        if self.max_messages == 0 {
            return Err("--max-messages must be at least 1".to_string());
        }
        if let Some(b) = self.text_bytes {
            check_count("--text-bytes", b, 1, 60_000)?;
        }
        if !(10..=60_000).contains(&self.quiet_interval_ms) {
            return Err(format!(
                "--quiet-interval-ms must be between 10 and 60000 (got {})",
                self.quiet_interval_ms
            ));
        }
        check_range("--health-every", self.health_every, 0.1, 60.0)?;
        check_range("--health-timeout", self.health_timeout, 0.1, 60.0)
    }

    /// Every socket the run opens.
    fn members(&self) -> usize {
        self.senders + self.readers + 2
    }
}

/// The kernel's queues of one member's connection, from the last `/proc/net/tcp` sample.
#[derive(Default)]
struct SocketQueues {
    /// The member's local port (0 until connected).
    port: AtomicU16,
    /// Bytes the member's socket holds that the tool has not read.
    unread: AtomicU64,
    /// Bytes the server's socket sent that the member's kernel has not acknowledged.
    unsent: AtomicU64,
    /// Whether the sampler found the connection at least once.
    seen: AtomicBool,
}

/// The flood room's senders, as a whole.
struct FloodRoom {
    /// Its senders, the highest echoed `seq`, its last `seq` once they are all done.
    seqs: RoomSeqs,
    /// Senders still sending.
    senders_sending: AtomicU64,
    /// When the last sender stopped sending (ns since the epoch).
    sending_ended_ns: AtomicU64,
}

impl FloodRoom {
    fn sender_stopped_sending(&self, now_ns: u64) {
        if self.senders_sending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.sending_ended_ns.store(now_ns, Ordering::SeqCst);
        }
    }
}

/// The quiet pair's sender, as its receiver sees it.
#[derive(Default)]
struct QuietState {
    sent: AtomicU64,
    /// Its chats echoed to it: accepted by the server.
    accepted: AtomicU64,
    /// It has stopped: every chat answered, or its socket ended.
    done: AtomicBool,
}

struct Shared {
    epoch: Instant,
    flood_room: String,
    quiet_room: String,
    progress: Progress,
    readers_connector: Arc<Connector>,
    senders_connector: Arc<Connector>,
    /// Messages per second per sender; `None`: as fast as the socket takes them.
    per_sender_rate: Option<f64>,
    per_sender_cap: u64,
    text_bytes: usize,
    quiet_interval: Duration,
    /// The member index whose stamps are the quiet sender's.
    quiet_sender_idx: u64,
    room: FloodRoom,
    quiet: QuietState,
    /// Nanoseconds since the epoch; `UNKNOWN` until the flood starts.
    start_ns: AtomicU64,
    stop_ns: AtomicU64,
    /// Send → delivery to a reader, flood room.
    latency: LatencySink,
    /// Deliveries per second to every member of the flood room.
    timeline: Timeline,
    /// Send → delivery to the quiet pair's receiver.
    quiet_latency: LatencySink,
    /// The quiet pair's worst latency (µs) per second of sending.
    quiet_worst: Vec<AtomicU64>,
    /// One per member, by index.
    queues: Vec<SocketQueues>,
    /// The readers' indexes.
    readers: std::ops::Range<usize>,
    /// Every member has ended: the queue sampler stops.
    members_done: AtomicBool,
    setup: Setup,
    warned_limit: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        ns_since(self.epoch, Instant::now())
    }
}

pub async fn run(ctx: &Ctx, a: &FloodArgs) -> anyhow::Result<Report> {
    let n = a.members();
    ctx.check_fd_limit(n + 8);
    let seconds = (a.duration + ctx.common.drain).ceil() as usize + 2;
    let per_sender_rate = (a.rate > 0.0).then(|| a.rate / a.senders as f64);
    let sh = Arc::new(Shared {
        epoch: ctx.epoch,
        flood_room: ctx.name("flood", 0),
        quiet_room: ctx.name("quiet", 0),
        progress: ctx.progress.clone(),
        readers_connector: ctx.connector(64 * 1024),
        // Senders gather frames and write them in blocks (a syscall per frame would make
        // the tool, not the server, the limit at `--rate 0`).
        senders_connector: ctx.connector_with(64 * 1024, 32 * 1024),
        per_sender_rate,
        per_sender_cap: (a.max_messages / a.senders as u64).max(1),
        text_bytes: a.text_bytes.unwrap_or(0),
        quiet_interval: Duration::from_millis(a.quiet_interval_ms),
        quiet_sender_idx: (a.senders + a.readers) as u64,
        room: FloodRoom {
            seqs: RoomSeqs::default(),
            senders_sending: AtomicU64::new(0),
            sending_ended_ns: AtomicU64::new(UNKNOWN),
        },
        quiet: QuietState::default(),
        start_ns: AtomicU64::new(UNKNOWN),
        stop_ns: AtomicU64::new(UNKNOWN),
        latency: LatencySink::new(ctx.threads * 4),
        timeline: Timeline::new(seconds),
        quiet_latency: LatencySink::new(1),
        quiet_worst: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
        queues: (0..n).map(|_| SocketQueues::default()).collect(),
        readers: a.senders..a.senders + a.readers,
        members_done: AtomicBool::new(false),
        setup: Setup::new(),
        warned_limit: AtomicBool::new(false),
    });
    let counters_before = probes::server_counters(ctx, Duration::from_secs(5)).await;

    // Setup: senders, readers, then the quiet pair on the watcher's thread.
    let (go_tx, go_rx) = watch::channel(Phase::Setup);
    ctx.progress.counting("joining", n as u64);
    let flood_members = a.senders + a.readers;
    let handles: Vec<_> = (0..flood_members)
        .map(|idx| {
            let role = if idx < a.senders {
                Role::Sender
            } else {
                Role::Reader
            };
            tokio::spawn(member::member(
                Arc::clone(&sh),
                idx,
                role,
                ctx.name("u", idx),
                go_rx.clone(),
                ctx.common.connect_timeout,
            ))
        })
        .collect();
    let watcher = Watcher::start(ctx, a, Arc::clone(&sh), go_rx.clone())?;
    let joined = sh
        .setup
        .wait_and_close(ctx, n, "members joined; flooding with those")
        .await;

    // Flood.
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(a.duration);
    let sched = Schedule {
        start,
        stop,
        hard: stop + ctx.drain(),
    };
    sh.start_ns
        .store(ns_since(sh.epoch, start), Ordering::SeqCst);
    sh.stop_ns.store(ns_since(sh.epoch, stop), Ordering::SeqCst);
    sh.timeline.start_at(ns_since(sh.epoch, start));
    if !sh.room.seqs.has_senders() {
        sh.room.seqs.publish_final();
        sh.room
            .sending_ended_ns
            .store(ns_since(sh.epoch, start), Ordering::SeqCst);
    }
    let ticker = if joined == 0 {
        go_tx.send_replace(Phase::Abort);
        None
    } else {
        go_tx.send_replace(Phase::Go(sched));
        ctx.progress.timed("flood", a.duration);
        let sh2 = Arc::clone(&sh);
        let d = a.duration;
        Some(spawn_rate_ticker(
            ctx.progress.clone(),
            start,
            "deliveries",
            move || sh2.timeline.total(),
            move |e| if e < d { "flooding" } else { "draining" },
        ))
    };

    // Collect.
    let guard = sched.hard + Duration::from_secs(3);
    let (mut outcomes, mut stuck) = members::collect(handles, guard, None).await;
    if let Some(t) = ticker {
        t.abort();
    }
    sh.members_done.store(true, Ordering::SeqCst);
    let watched = watcher.finish(guard + Duration::from_secs(3)).await;
    match watched.quiet {
        Some(quiet) => outcomes.extend(quiet),
        None => stuck += 2,
    }
    let counters_after = probes::server_counters(ctx, Duration::from_secs(10)).await;
    let counters = match (counters_before, counters_after) {
        (Some(b), Some(a)) => Some(a.since(&b)),
        _ => None,
    };
    let ran_secs = start.elapsed().as_secs_f64();
    Ok(summary::build_report(
        a,
        &sh,
        &outcomes,
        summary::Extras {
            stuck,
            joined,
            ran_secs,
            health: watched.health,
            queues: watched.queues,
            counters,
        },
    ))
}

/// What the watcher's thread saw.
struct Watched {
    /// The quiet pair's outcomes; `None` when the thread did not finish in time.
    quiet: Option<Vec<Outcome>>,
    health: Vec<probes::HealthProbe>,
    queues: Vec<probes::QueuePoint>,
}

/// A thread of its own, with its own runtime, for what measures the server beside the flood:
/// the quiet pair, the `/health` probes and the socket-queue sampler. On the flood's runtime
/// they would wait behind the readers' work, and their figures would be the tool's.
struct Watcher {
    done: tokio::sync::oneshot::Receiver<Watched>,
}

impl Watcher {
    fn start(
        ctx: &Ctx,
        a: &FloodArgs,
        sh: Arc<Shared>,
        mut go: watch::Receiver<Phase>,
    ) -> anyhow::Result<Watcher> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the watcher's runtime")?;
        let http = crate::http_client(&ctx.target, ctx.addr, ctx.common.connect_timeout)?;
        let url = ctx.target.http_url("/health");
        let addr = ctx.addr;
        let step = ctx.common.connect_timeout;
        let every = Duration::from_secs_f64(a.health_every);
        let timeout = Duration::from_secs_f64(a.health_timeout);
        let quiet: Vec<(usize, Role, String)> = [Role::QuietSender, Role::QuietReader]
            .into_iter()
            .enumerate()
            .map(|(k, role)| {
                let idx = a.senders + a.readers + k;
                (idx, role, ctx.name("u", idx))
            })
            .collect();
        let (tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("loadtest-watch".to_string())
            .spawn(move || {
                let watched = rt.block_on(async move {
                    let members: Vec<_> = quiet
                        .into_iter()
                        .map(|(idx, role, user)| {
                            let m =
                                member::member(Arc::clone(&sh), idx, role, user, go.clone(), step);
                            tokio::spawn(m)
                        })
                        .collect();
                    let watching = members::started(&mut go).await.map(|s| {
                        (
                            probes::spawn_health_probes(http, url, s.start, s.stop, every, timeout),
                            probes::spawn_queue_sampler(Arc::clone(&sh), addr, s.hard),
                        )
                    });
                    let mut quiet = Vec::new();
                    for m in members {
                        if let Ok(o) = m.await {
                            quiet.push(o);
                        }
                    }
                    let (health, queues) = match watching {
                        Some((health, sampler)) => {
                            (health.finish().await, sampler.await.unwrap_or_default())
                        }
                        None => (Vec::new(), Vec::new()),
                    };
                    Watched {
                        quiet: Some(quiet),
                        health,
                        queues,
                    }
                });
                let _ = tx.send(watched);
            })
            .context("cannot start the watcher's thread")?;
        Ok(Watcher { done })
    }

    /// What it saw, once the quiet pair has ended and the probes are in (or `until`).
    async fn finish(self, until: Instant) -> Watched {
        match tokio::time::timeout_at(until.into(), self.done).await {
            Ok(Ok(w)) => w,
            _ => Watched {
                quiet: None,
                health: Vec::new(),
                queues: Vec::new(),
            },
        }
    }
}
