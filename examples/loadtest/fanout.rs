//! The `fanout` scenario: rooms of members, some of them sending, every delivery checked.
//!
//! # Phases
//!
//! 1. Setup: one task per member connects (`/ws?user_id=…`), reads `welcome`, joins its room
//!    and registers. The run starts when every member has registered or failed, or when
//!    `--setup-timeout` passes (members not ready by then count as failed).
//! 2. Run: the main task publishes a [`Schedule`] (start, end of warm-up, stop, hard deadline)
//!    on a watch channel. Senders send from start to stop, either on a fixed-rate timer
//!    (`--rate`, open loop) or whenever their window of `--window` unacknowledged messages has
//!    room (closed loop; the echo of a message to its own sender acknowledges it, and so does an
//!    `error` such as `rate_limited`, which answers a dropped message).
//!
//!    With `--ack`, each chat carries a `client_msg_id` and the server's `ack` (sent after the
//!    message is committed to the store) releases the window instead of the echo. The sender
//!    checks that every message gets exactly one ack, whose `seq` equals its echo's
//!    ([`AckTracker`]), and measures send → ack: acknowledged, durable chats per second.
//! 3. Drain: after stop, a sender whose messages have all been acknowledged is done; when every
//!    sender of a room is done, the room's last accepted `seq` is known and published, and each
//!    member stops once it has seen that `seq`. The hard deadline (stop + `--drain`) ends
//!    everything regardless.
//!
//! # Per-connection work
//!
//! A member is one task reading its socket; a sender also has a writer task owning the socket's
//! sink, so sending never waits behind reading. For each frame the reader finds the type by a
//! byte search, and for a `chat` reads `seq` and the text's stamp in place (`wire.rs`). Its state
//! is a [`SeqChecker`], a few counters and two small batches (latency values, the per-second
//! count), flushed to the shared sinks every 128 latencies / 256 deliveries, or once a second.
//!
//! # Counting
//!
//! - expected deliveries = Σ over rooms of (messages the server accepted, i.e. echoed) ×
//!   (members of the room). If a sender loses its socket, the server may have accepted its last
//!   messages without the echo reaching it; the room's accepted count is then the highest `seq`
//!   any member saw (minus the room's `seq` at join), and the room's members wait for the hard
//!   deadline instead of stopping at the last echoed `seq`;
//! - lost = `seq` gaps not filled later + messages a member never received up to the room's
//!   last accepted `seq` (counted after every member is done); duplicated and out-of-order come
//!   from the same checker;
//! - deliveries during warm-up are checked but not measured: throughput counts deliveries
//!   received in [end of warm-up, stop), latency counts messages sent in that window.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::acks::{self, AckCounts, AckOutcome, AckTracker, Unsettled};
use crate::conn::{self, Connector, JoinInfo, Sink, Welcome, Ws};
use crate::members::{
    self, ChatCheck, ChatCounts, Phase, PhaseWatch, RoomSeqs, Schedule, Setup, SetupOutcome,
    count_error,
};
use crate::progress::{Progress, spawn_rate_ticker};
use crate::report::{
    AckSection, Connections, Deliveries, Latency, Messages, Report, TimelineSection,
};
use crate::sending::{self, SendCount, StampedText};
use crate::stats::{LatencyBatch, LatencySink, Percentiles, Timeline, TimelineBatch, log_buckets};
use crate::wire::{self, Stamp};
use crate::{Ctx, check_count, check_range, ns_since};

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Members per room (senders included).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Senders per room (they are members too).
    #[arg(long, default_value_t = 5)]
    pub senders: usize,
    /// Messages per second per sender (fixed rate). Without it, senders send as fast as the
    /// window allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Unacknowledged messages per sender when no --rate is given.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (deliveries still checked).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Pad each chat text to this many bytes (default: no padding, ~25 bytes).
    #[arg(long)]
    pub text_bytes: Option<usize>,
    /// Most messages sent in the whole run (split evenly over the senders).
    #[arg(long, default_value_t = 10_000_000)]
    pub max_messages: u64,
    /// Durable, acknowledged chats: send a `client_msg_id` with each chat, release the window
    /// on the server's `ack` (sent after the commit) instead of the echo, check one ack per
    /// message with the echo's seq, and measure acked chats/s and send → ack latency.
    #[arg(long)]
    pub ack: bool,
}

impl FanoutArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--rooms", self.rooms, 1, 10_000)?;
        check_count("--clients", self.clients, 1, 100_000)?;
        check_count("--senders", self.senders, 0, self.clients)?;
        check_count("--rooms × --clients", self.rooms * self.clients, 1, 200_000)?;
        check_count("--window", self.window, 1, 100_000)?;
        if let Some(r) = self.rate {
            check_range("--rate", r, 0.001, 100_000.0)?;
        }
        check_range("--duration", self.duration, 0.1, 3600.0)?;
        check_range("--warmup", self.warmup, 0.0, 600.0)?;
        if let Some(b) = self.text_bytes {
            check_count("--text-bytes", b, 1, 60_000)?;
        }
        if self.max_messages == 0 {
            return Err("--max-messages must be at least 1".to_string());
        }
        Ok(())
    }
}

struct Room {
    name: String,
    /// Registered members (fixed once the setup closes).
    members: AtomicU64,
    /// Its senders, the highest echoed `seq`, its last `seq` once they are all done.
    seqs: RoomSeqs,
    /// Messages echoed to their senders: what the server accepted.
    echoes: AtomicU64,
    /// Lowest `last_seq` in the members' `joined`: where the run's messages start.
    base_seq: AtomicU64,
}

impl Room {
    /// Messages the server accepted in this room during the run: the echoes, or more if the
    /// members saw more (a sender that lost its socket misses the echoes of its last ones).
    fn accepted(&self) -> u64 {
        let echoes = self.echoes.load(Ordering::SeqCst);
        match self.base_seq.load(Ordering::SeqCst) {
            u64::MAX => echoes,
            // A new cluster room (see `wire::CLUSTER_SEQS_FROM`): its seqs start at the first
            // echo's, not after the joined `last_seq` of 0.
            0 if self.seqs.max_echo_seq() >= wire::CLUSTER_SEQS_FROM => echoes,
            base => echoes.max(self.seqs.seen_max().saturating_sub(base)),
        }
    }
}

/// A sender's flow control, shared by its reader (acks) and writer (sends).
struct SenderState {
    window: Semaphore,
    /// Sent and answered (by their echo, or by their `ack` with `--ack`, or by an error).
    count: SendCount,
    /// `--ack`: the `client_msg_id`s not settled yet.
    tracker: Mutex<AckTracker>,
}

impl SenderState {
    fn new(window: usize) -> SenderState {
        SenderState {
            window: Semaphore::new(window),
            count: SendCount::default(),
            tracker: Mutex::new(AckTracker::new()),
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, AckTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An echo (an `ack` with `--ack`) or an error answered one of the messages.
    fn on_ack(&self, room: &Room) {
        self.window.add_permits(1);
        self.count.answer(1, &room.seqs);
    }
}

struct Shared {
    epoch: Instant,
    rooms: Vec<Room>,
    connector: Arc<Connector>,
    progress: Progress,
    rate: Option<f64>,
    window: usize,
    /// `--ack`.
    ack: bool,
    text_bytes: usize,
    per_sender_cap: u64,
    /// Nanoseconds since the epoch; `u64::MAX` until the run starts.
    measure_from_ns: AtomicU64,
    stop_ns: AtomicU64,
    latency: LatencySink,
    timeline: Timeline,
    /// `--ack`: send → ack, and acks per second.
    ack_latency: LatencySink,
    ack_timeline: Timeline,
    setup: Setup,
    warned_limit: AtomicBool,
    warned_rate_limited: AtomicBool,
    warned_text: AtomicBool,
}

impl Shared {
    /// Warns once if the server announces a rate limit this run will exceed.
    fn check_welcome(&self, w: &Welcome) {
        if w.rate_per_sec > 0.0
            && self.rate.is_none_or(|r| r > w.rate_per_sec)
            && !self.warned_limit.swap(true, Ordering::Relaxed)
        {
            self.progress.warn(format!(
                "the server limits each socket to {} messages/s (burst {}), and {}: messages past \
                 the limit are dropped with rate_limited errors. Start the server with \
                 --rate-per-sec 0 to measure throughput.",
                w.rate_per_sec,
                w.rate_burst,
                match self.rate {
                    None => "window mode sends as fast as echoes come back".to_string(),
                    Some(r) => format!("--rate is {r}/s per sender"),
                }
            ));
        }
        if let Some(max) = w.max_text_chars
            && self.text_bytes as u64 > max
            && !self.warned_text.swap(true, Ordering::Relaxed)
        {
            self.progress.warn(format!(
                "--text-bytes {} is over the server's max_text_chars {max}: it will refuse every \
                 message (text_too_long)",
                self.text_bytes
            ));
        }
    }

    fn on_rate_limited(&self) {
        if !self.warned_rate_limited.swap(true, Ordering::Relaxed) {
            self.progress.warn(
                "the server answered rate_limited: it is dropping messages past its per-socket \
                 rate limit (counted in the report). Restart it with --rate-per-sec 0 to measure \
                 raw throughput."
                    .to_string(),
            );
        }
    }
}

/// What one member task reports at the end.
#[derive(Debug, Default)]
struct Outcome {
    setup: SetupOutcome,
    dropped: Option<String>,
    sent: u64,
    rate_limited: u64,
    errors: BTreeMap<String, u64>,
    chats: ChatCounts,
    measured: u64,
    /// The room this member was in.
    room: usize,
    /// The last `seq` the member saw (when it ran).
    last_seq: Option<u64>,
    /// `--ack`, senders only: first acks received in the measured window, the tracker's
    /// counts and what it never settled.
    acks_measured: u64,
    ack_counts: AckCounts,
    unsettled: Unsettled,
    /// `ack` frames without a `client_msg_id` of the tool's or a `seq`.
    malformed_acks: u64,
}

pub async fn run(ctx: &Ctx, a: &FanoutArgs) -> anyhow::Result<Report> {
    let n = a.rooms * a.clients;
    ctx.check_fd_limit(n);
    let total_senders = (a.rooms * a.senders).max(1) as u64;
    let sh = Arc::new(Shared {
        epoch: ctx.epoch,
        rooms: (0..a.rooms)
            .map(|r| Room {
                name: ctx.name("r", r),
                members: AtomicU64::new(0),
                seqs: RoomSeqs::default(),
                echoes: AtomicU64::new(0),
                base_seq: AtomicU64::new(u64::MAX),
            })
            .collect(),
        connector: ctx.connector(8 * 1024),
        progress: ctx.progress.clone(),
        rate: a.rate,
        window: a.window,
        ack: a.ack,
        text_bytes: a.text_bytes.unwrap_or(0),
        per_sender_cap: (a.max_messages / total_senders).max(1),
        measure_from_ns: AtomicU64::new(u64::MAX),
        stop_ns: AtomicU64::new(u64::MAX),
        latency: LatencySink::new(ctx.threads * 4),
        timeline: Timeline::new((a.warmup + a.duration + ctx.common.drain).ceil() as usize + 2),
        ack_latency: LatencySink::new(ctx.threads * 4),
        ack_timeline: Timeline::new((a.warmup + a.duration + ctx.common.drain).ceil() as usize + 2),
        setup: Setup::new(),
        warned_limit: AtomicBool::new(false),
        warned_rate_limited: AtomicBool::new(false),
        warned_text: AtomicBool::new(false),
    });

    // Setup.
    let (go_tx, go_rx) = watch::channel(Phase::Setup);
    ctx.progress.counting("joining", n as u64);
    let mut handles = Vec::with_capacity(n);
    for r in 0..a.rooms {
        for c in 0..a.clients {
            let idx = r * a.clients + c;
            handles.push(tokio::spawn(member(
                Arc::clone(&sh),
                idx,
                r,
                c < a.senders,
                ctx.name("u", idx),
                go_rx.clone(),
                ctx.common.connect_timeout,
            )));
        }
    }
    let joined = sh
        .setup
        .wait_and_close(ctx, n, "members joined; running with those")
        .await;

    // Run.
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let stop = measure_from + Duration::from_secs_f64(a.duration);
    let sched = Schedule {
        start,
        stop,
        hard: stop + ctx.drain(),
    };
    for room in &sh.rooms {
        if !room.seqs.has_senders() {
            room.seqs.publish_final();
        }
    }
    sh.measure_from_ns
        .store(ns_since(sh.epoch, measure_from), Ordering::SeqCst);
    sh.stop_ns.store(ns_since(sh.epoch, stop), Ordering::SeqCst);
    sh.timeline.start_at(ns_since(sh.epoch, start));
    sh.ack_timeline.start_at(ns_since(sh.epoch, start));
    let ticker = if joined == 0 {
        go_tx.send_replace(Phase::Abort);
        None
    } else {
        go_tx.send_replace(Phase::Go(sched));
        ctx.progress.timed("fanout", a.warmup + a.duration);
        let sh2 = Arc::clone(&sh);
        let (w, d) = (a.warmup, a.warmup + a.duration);
        Some(spawn_rate_ticker(
            ctx.progress.clone(),
            start,
            "deliveries",
            move || sh2.timeline.total(),
            move |e| {
                if e < w {
                    "warm-up"
                } else if e < d {
                    "measuring"
                } else {
                    "draining"
                }
            },
        ))
    };

    // Collect.
    let (outcomes, stuck) =
        members::collect(handles, sched.hard + Duration::from_secs(3), None).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let ran_secs = start.elapsed().as_secs_f64();
    Ok(build_report(
        ctx, a, &sh, &outcomes, stuck, joined, ran_secs,
    ))
}

fn build_report(
    ctx: &Ctx,
    a: &FanoutArgs,
    sh: &Shared,
    outcomes: &[Outcome],
    stuck: u64,
    joined: u64,
    ran_secs: f64,
) -> Report {
    let mut r = Report::default();
    let mut conns = Connections {
        attempted: (a.rooms * a.clients) as u64,
        ..Connections::default()
    };
    let mut msgs = Messages::default();
    let mut del = Deliveries::default();
    let mut malformed = 0;
    let mut ack = AckSection::default();
    for o in outcomes {
        o.setup.add_to(&mut conns);
        if let Some(d) = &o.dropped {
            conns.dropped += 1;
            *conns.drop_reasons.entry(d.clone()).or_default() += 1;
        }
        msgs.sent += o.sent;
        msgs.rate_limited += o.rate_limited;
        for (k, v) in &o.errors {
            *msgs.other_errors.entry(k.clone()).or_default() += v;
        }
        del.measured += o.measured;
        // Messages after the last one seen, up to the room's last accepted one, never came.
        let tail = o.last_seq.map_or(0, |last| {
            sh.rooms[o.room].seqs.last_accepted().saturating_sub(last)
        });
        o.chats.add_to(&mut del, tail);
        malformed += o.chats.malformed;
        ack.measured += o.acks_measured;
        ack.acked += o.ack_counts.acked;
        ack.duplicated += o.ack_counts.duplicate;
        ack.unknown += o.ack_counts.unknown;
        ack.seq_mismatch += o.ack_counts.seq_mismatch;
        ack.echoed_not_acked += o.unsettled.echoed_not_acked;
        ack.acked_not_echoed += o.unsettled.acked_not_echoed;
        ack.unanswered += o.unsettled.unanswered;
        malformed += o.malformed_acks;
    }
    sh.setup.add_to(&mut conns, stuck);
    for room in &sh.rooms {
        let accepted = room.accepted();
        msgs.accepted += accepted;
        del.expected += accepted * room.members.load(Ordering::SeqCst);
    }
    del.measured_secs = a.duration;
    del.per_sec = del.measured as f64 / a.duration;
    let lat = sh.latency.merged();

    let p = &mut r.problems;
    if joined == 0 {
        p.push("no member could connect and join".to_string());
    }
    if conns.failed > 0 {
        p.push(format!("{} connections failed", conns.failed));
    }
    if conns.dropped > 0 {
        p.push(format!(
            "{} connections were dropped during the run",
            conns.dropped
        ));
    }
    if del.lost > 0 {
        p.push(format!("{} deliveries lost", del.lost));
    }
    if del.duplicated > 0 {
        p.push(format!("{} deliveries duplicated", del.duplicated));
    }
    if del.out_of_order > 0 {
        p.push(format!("{} deliveries out of order", del.out_of_order));
    }
    if malformed > 0 {
        p.push(format!(
            "{malformed} chat or ack frames without a readable seq (or client_msg_id)"
        ));
    }
    if a.ack {
        ack_problems(&ack, &msgs, p);
    }
    if del.received != del.expected {
        p.push(format!(
            "received {} deliveries, expected {} (accepted messages × room members)",
            del.received, del.expected
        ));
    }
    if joined > 0 && a.senders > 0 && msgs.sent == 0 {
        p.push("no message was sent".to_string());
    }
    if msgs.sent > msgs.accepted + msgs.rate_limited + msgs.other_errors.values().sum::<u64>() {
        ctx.progress.warn(format!(
            "{} messages were never answered (no echo, no error) before the hard deadline",
            msgs.sent - msgs.accepted - msgs.rate_limited - msgs.other_errors.values().sum::<u64>()
        ));
    }

    // The timeline up to the last busy second (at least to the stop).
    let mut per_second = sh
        .timeline
        .snapshot(ran_secs.ceil().max(a.warmup + a.duration) as usize + 1);
    let keep = per_second
        .iter()
        .rposition(|&v| v > 0)
        .map_or(0, |i| i + 1)
        .max((a.warmup + a.duration).ceil() as usize);
    per_second.truncate(keep);

    r.connections = conns;
    r.messages = Some(msgs);
    r.deliveries = Some(del);
    r.latency = Some(Latency {
        what: "send → delivery, messages sent after the warm-up".to_string(),
        us: Percentiles::of(&lat),
        buckets: log_buckets(&lat),
    });
    r.timeline = Some(TimelineSection {
        what: "deliveries".to_string(),
        per_second,
        measure_from_s: a.warmup,
        measure_to_s: a.warmup + a.duration,
    });
    if a.ack {
        let lat = sh.ack_latency.merged();
        ack.measured_secs = a.duration;
        ack.per_sec = ack.measured as f64 / a.duration;
        ack.latency = Latency {
            what: "send → ack, messages sent after the warm-up".to_string(),
            us: Percentiles::of(&lat),
            buckets: log_buckets(&lat),
        };
        let mut per_second = sh.ack_timeline.snapshot(keep);
        per_second.truncate(keep);
        ack.timeline = TimelineSection {
            what: "acks".to_string(),
            per_second,
            measure_from_s: a.warmup,
            measure_to_s: a.warmup + a.duration,
        };
        r.acks = Some(ack);
    }
    r
}

/// `--ack`: every message gets exactly one ack, with its echo's seq.
fn ack_problems(ack: &AckSection, msgs: &Messages, p: &mut Vec<String>) {
    if ack.duplicated > 0 {
        p.push(format!("{} acks duplicated", ack.duplicated));
    }
    if ack.unknown > 0 {
        p.push(format!(
            "{} acks for a client_msg_id that was never sent",
            ack.unknown
        ));
    }
    if ack.seq_mismatch > 0 {
        p.push(format!(
            "{} acks with a seq other than their echo's",
            ack.seq_mismatch
        ));
    }
    if ack.echoed_not_acked > 0 {
        p.push(format!(
            "{} messages were delivered but never acknowledged",
            ack.echoed_not_acked
        ));
    }
    if ack.acked_not_echoed > 0 {
        p.push(format!(
            "{} messages were acknowledged but their sender never got the echo",
            ack.acked_not_echoed
        ));
    }
    let errors = msgs.rate_limited + msgs.other_errors.values().sum::<u64>();
    if ack.unanswered > errors {
        p.push(format!(
            "{} messages got neither an ack nor an echo ({} were answered by errors)",
            ack.unanswered, errors
        ));
    }
}

/// Counts a joined member in its room (under the setup's lock).
fn count_member(room: &Room, is_sender: bool, info: &JoinInfo) {
    room.members.fetch_add(1, Ordering::SeqCst);
    room.base_seq.fetch_min(info.last_seq, Ordering::SeqCst);
    if is_sender {
        room.seqs.add_sender();
    }
}

/// One member: setup, then the read loop (and a writer task if it sends).
async fn member(
    sh: Arc<Shared>,
    idx: usize,
    room_idx: usize,
    is_sender: bool,
    user: String,
    go: watch::Receiver<Phase>,
    step_timeout: f64,
) -> Outcome {
    let mut out = Outcome {
        room: room_idx,
        ..Outcome::default()
    };
    let room = &sh.rooms[room_idx];
    let joined = members::join(
        &sh.setup,
        &sh.connector,
        &user,
        &room.name,
        step_timeout,
        &go,
        |welcome, _| sh.check_welcome(welcome),
        |info| count_member(room, is_sender, info),
        &mut out.setup,
    )
    .await;
    let Some((ws, info)) = joined else {
        return out;
    };
    run_member(&sh, idx, room_idx, is_sender, ws, info, go, &mut out).await;
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_member(
    sh: &Arc<Shared>,
    idx: usize,
    room_idx: usize,
    is_sender: bool,
    ws: Ws,
    info: JoinInfo,
    go: watch::Receiver<Phase>,
    out: &mut Outcome,
) {
    let room = &sh.rooms[room_idx];
    let sender = is_sender.then(|| Arc::new(SenderState::new(sh.window)));
    let mut rx = Receiver {
        sh,
        room,
        idx: idx as u64,
        sender: sender.as_deref(),
        chats: ChatCheck::new(&info),
        latency: LatencyBatch::new(idx),
        timeline: TimelineBatch::default(),
        ack_latency: LatencyBatch::new(idx),
        ack_timeline: TimelineBatch::default(),
    };
    match &sender {
        // A sender splits its socket: the writer task owns the sink, this task reads.
        Some(st) => {
            let (sink, mut stream) = ws.split();
            let writer = tokio::spawn(write_loop(
                Arc::clone(sh),
                room_idx,
                idx,
                sink,
                Arc::clone(st),
                go.clone(),
            ));
            read_loop(&mut rx, &mut stream, go, out).await;
            // Whatever happened, this sender is done: release its writer and its room.
            st.window.close();
            st.count.complete(&room.seqs, out.dropped.is_none());
            rx.finish(out);
            if sh.ack {
                let t = st.tracker();
                out.ack_counts = t.counts;
                out.unsettled = t.unsettled();
            }
            // The writer has stopped by now; take the sink back to close the socket.
            let sink = sending::take_back(writer).await;
            out.sent = st.count.sent.load(Ordering::SeqCst);
            if let Some(sink) = sink
                && out.dropped.is_none()
            {
                conn::close_split_and_drain(sink, &mut stream).await;
            }
        }
        // A plain member keeps its socket whole (no lock between two halves).
        None => {
            let mut ws = ws;
            read_loop(&mut rx, &mut ws, go, out).await;
            rx.finish(out);
            if out.dropped.is_none() {
                conn::close_and_drain(&mut ws).await;
            }
        }
    }
}

/// The member's read loop: until it has everything, the socket dies, or the hard deadline.
async fn read_loop<S>(
    rx: &mut Receiver<'_>,
    stream: &mut S,
    go: watch::Receiver<Phase>,
    out: &mut Outcome,
) where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut deadline = pin!(members::until_scheduled());
    let mut phases = PhaseWatch::new(go);
    let done = rx.room.seqs.published();
    let mut done = pin!(done);
    let mut final_seen = false;
    loop {
        tokio::select! {
            biased;
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if rx.on_text(t.as_bytes(), out) {
                        break;
                    }
                }
                other => {
                    if let Some(reason) = conn::end_reason(other) {
                        out.dropped = Some(reason);
                        break;
                    }
                }
            },
            _ = &mut done, if !final_seen => {
                final_seen = true;
                if rx.finished() {
                    break;
                }
            }
            p = phases.next(), if phases.watching() => match p {
                Some(Phase::Go(s)) => deadline.as_mut().reset(s.hard.into()),
                Some(Phase::Abort) => break,
                Some(Phase::Setup) | None => {}
            },
            _ = &mut deadline => break,
        }
    }
}

/// A member's receive-side state.
struct Receiver<'a> {
    sh: &'a Shared,
    room: &'a Room,
    idx: u64,
    sender: Option<&'a SenderState>,
    chats: ChatCheck,
    latency: LatencyBatch,
    timeline: TimelineBatch,
    ack_latency: LatencyBatch,
    ack_timeline: TimelineBatch,
}

impl Receiver<'_> {
    /// Flushes the batches and records how far this member got (its tail is counted once
    /// every member is done).
    fn finish(&mut self, out: &mut Outcome) {
        self.latency.flush(&self.sh.latency);
        self.timeline.flush(&self.sh.timeline);
        self.ack_latency.flush(&self.sh.ack_latency);
        self.ack_timeline.flush(&self.sh.ack_timeline);
        out.last_seq = Some(self.chats.last());
        self.room.seqs.saw(self.chats.last());
    }

    /// Whether the member has everything it will get: the room's last `seq` is known and seen.
    fn finished(&self) -> bool {
        self.room.seqs.has_last(self.chats.last())
            && self.sender.is_none_or(|s| s.count.completed())
    }

    /// Handles one text frame; true when the member is finished.
    fn on_text(&mut self, f: &[u8], out: &mut Outcome) -> bool {
        match wire::frame_type(f) {
            Some(b"chat") => {}
            Some(b"error") => {
                let code = wire::str_field(f, b"\"code\":\"").unwrap_or(b"?");
                if code == b"rate_limited" {
                    out.rate_limited += 1;
                    self.sh.on_rate_limited();
                } else {
                    count_error(&mut out.errors, code);
                }
                if let Some(s) = self.sender {
                    s.on_ack(self.room);
                }
                return self.finished();
            }
            Some(b"ack") if self.sh.ack => {
                if let Some(s) = self.sender {
                    self.on_ack_frame(f, s, out);
                }
                return self.finished();
            }
            // Presence, typing and anything new: not the tool's business.
            _ => return false,
        }
        let Some(chat) = self.chats.read(f, self.sh.epoch, &mut out.chats) else {
            return false;
        };
        let now_ns = chat.now_ns;
        self.timeline.count(&self.sh.timeline, now_ns);
        let from = self.sh.measure_from_ns.load(Ordering::Relaxed);
        let stop = self.sh.stop_ns.load(Ordering::Relaxed);
        if (from..stop).contains(&now_ns) {
            out.measured += 1;
        }
        if let Some(Stamp {
            sender,
            msg_no,
            send_ns,
        }) = chat.stamp
        {
            if sender == self.idx
                && let Some(s) = self.sender
            {
                self.room.seqs.echoed(chat.seq);
                self.room.echoes.fetch_add(1, Ordering::SeqCst);
                if self.sh.ack {
                    s.tracker().echo(msg_no, chat.seq);
                } else {
                    s.on_ack(self.room);
                }
            }
            if (from..stop).contains(&send_ns) {
                self.latency
                    .push(&self.sh.latency, now_ns.saturating_sub(send_ns) / 1_000);
            }
        }
        self.finished()
    }
}

impl Receiver<'_> {
    /// `--ack`: the server committed one of this sender's messages.
    fn on_ack_frame(&mut self, f: &[u8], s: &SenderState, out: &mut Outcome) {
        let Some((msg_no, seq)) =
            wire::parse_ack(f).and_then(|(id, seq)| Some((acks::msg_no_of(id)?, seq)))
        else {
            out.malformed_acks += 1;
            return;
        };
        let outcome = s.tracker().ack(msg_no, seq);
        let AckOutcome::First { send_ns } = outcome else {
            return;
        };
        // The ack may come before the echo: the room's last seq must cover it either way,
        // or the room could be declared finished before this message reaches its members.
        self.room.seqs.echoed(seq);
        let now_ns = ns_since(self.sh.epoch, Instant::now());
        self.ack_timeline.count(&self.sh.ack_timeline, now_ns);
        let from = self.sh.measure_from_ns.load(Ordering::Relaxed);
        let stop = self.sh.stop_ns.load(Ordering::Relaxed);
        if (from..stop).contains(&now_ns) {
            out.acks_measured += 1;
        }
        if (from..stop).contains(&send_ns) {
            self.ack_latency
                .push(&self.sh.ack_latency, now_ns.saturating_sub(send_ns) / 1_000);
        }
        s.on_ack(self.room);
    }
}

/// A sender's writer: waits for the start, sends until the stop, hands the sink back.
async fn write_loop(
    sh: Arc<Shared>,
    room_idx: usize,
    idx: usize,
    mut sink: Sink,
    st: Arc<SenderState>,
    mut go: watch::Receiver<Phase>,
) -> Sink {
    if let Some(s) = members::started(&mut go).await {
        send_loop(&sh, room_idx, idx, &mut sink, &st, s).await;
    }
    st.count.on_writer_done(&sh.rooms[room_idx].seqs);
    sink
}

async fn send_loop(
    sh: &Shared,
    room_idx: usize,
    idx: usize,
    sink: &mut Sink,
    st: &SenderState,
    s: Schedule,
) {
    let room = &sh.rooms[room_idx];
    let mut stop = pin!(tokio::time::sleep_until(s.stop.into()));
    let mut texts = StampedText::new(idx, sh.text_bytes);
    // Fixed rate: senders are spread over the period (golden-ratio offsets) so they do not
    // all send in the same instant; missed ticks are caught up (open loop).
    let mut ticker = sh.rate.map(|rate| {
        let period = Duration::from_secs_f64(1.0 / rate);
        let offset = period.mul_f64((idx as f64 * 0.618_033_988_7).fract());
        sending::fixed_rate(s.start + offset, period)
    });
    let mut msg_no = 0u64;
    while msg_no < sh.per_sender_cap {
        match &mut ticker {
            Some(iv) => {
                if !sending::tick_before(iv, stop.as_mut()).await {
                    break;
                }
            }
            None => {
                let permit = tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    p = st.window.acquire() => p,
                };
                match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
            }
        }
        let now = Instant::now();
        if now >= s.stop {
            break;
        }
        let send_ns = ns_since(sh.epoch, now);
        let text = texts.text(msg_no, send_ns);
        let frame = if sh.ack {
            st.tracker().sent(msg_no, send_ns);
            wire::chat_frame_with_id(&room.name, text, &acks::client_msg_id(msg_no))
        } else {
            wire::chat_frame(&room.name, text)
        };
        msg_no += 1;
        // Counted before the send: the echo may be read before `send` returns.
        st.count.sent.fetch_add(1, Ordering::SeqCst);
        match tokio::time::timeout_at(s.hard.into(), sink.send(Message::text(frame))).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}
