//! One socket of the flood run: a sender, a reader, or one of the quiet pair: its setup and
//! its read loop.
//!
//! Every member is one task reading its socket; a sender (and the quiet pair's sender) also
//! has a writer task owning the socket's sink (`send.rs`), so sending never waits behind
//! reading. Frames are read as bytes (`wire.rs`), and every `chat` goes through a
//! [`ChatCheck`]; the setup and those checks are the ones `fanout` uses (`members/`).

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Shared;
use super::send;
use crate::conn::{self, JoinInfo, Ws};
use crate::members::{
    self, ChatCheck, ChatCounts, Phase, PhaseWatch, Schedule, SetupOutcome, UNKNOWN,
};
use crate::sending::{self, SendCount};
use crate::stats::{LatencyBatch, TimelineBatch};
use crate::wire::{self, Stamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Posts into the flood room, and reads it.
    Sender,
    /// Reads the flood room.
    #[default]
    Reader,
    /// Posts one chat every `--quiet-interval-ms` into the quiet room.
    QuietSender,
    /// Receives the quiet sender's chats and times them.
    QuietReader,
}

impl Role {
    fn in_flood(self) -> bool {
        matches!(self, Role::Sender | Role::Reader)
    }
}

/// How the server ended a member's connection.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The close frame's code; `None` when the connection ended without one.
    pub code: Option<u16>,
    pub reason: String,
    /// Nanoseconds since the tool's epoch.
    pub at_ns: u64,
    /// Time since the member's last delivery (or since the start of the flood).
    pub since_delivery_ns: u64,
    /// Messages the server had accepted (echoed to their senders) that it had not received.
    pub behind: u64,
    /// The last sample of its connection's queues before the close, when there was one:
    /// bytes its socket held unread, bytes the server's socket had not got across.
    pub unread: Option<u64>,
    pub unsent: Option<u64>,
}

/// What one member reports at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub role: Role,
    pub idx: usize,
    pub setup: SetupOutcome,
    pub closed: Option<Closed>,
    /// Had everything it was to get before the deadline.
    pub finished: bool,
    pub sent: u64,
    /// Own messages echoed: accepted by the server.
    pub echoes: u64,
    /// Own messages refused with `overloaded` (one error frame can stand for several).
    pub overloaded: u64,
    pub rate_limited: u64,
    pub errors: BTreeMap<String, u64>,
    pub chats: ChatCounts,
    /// Deliveries received during the flood (start to stop).
    pub measured: u64,
    /// The room's `seq` when it joined.
    pub base_seq: u64,
    pub last_seq: u64,
    /// Its longest time without a delivery, and when that gap ended (ns since the epoch).
    pub max_gap_ns: u64,
    pub max_gap_end_ns: u64,
}

/// One member: setup, then reading (and writing, for a sender) until done.
pub async fn member(
    sh: Arc<Shared>,
    idx: usize,
    role: Role,
    user: String,
    go: watch::Receiver<Phase>,
    step_timeout: f64,
) -> Outcome {
    let mut out = Outcome {
        role,
        idx,
        ..Outcome::default()
    };
    let room = if role.in_flood() {
        &sh.flood_room
    } else {
        &sh.quiet_room
    };
    let connector = if role == Role::Sender {
        &sh.senders_connector
    } else {
        &sh.readers_connector
    };
    let joined = members::join(
        &sh.setup,
        connector,
        &user,
        room,
        step_timeout,
        &go,
        |welcome, ws| {
            check_welcome(&sh, welcome);
            if let Ok(local) = ws.get_ref().local_addr() {
                sh.queues[idx].port.store(local.port(), Ordering::Relaxed);
            }
        },
        |_| count_member(&sh, role),
        &mut out.setup,
    )
    .await;
    let Some((ws, info)) = joined else {
        return out;
    };
    out.base_seq = info.last_seq;
    run_member(&sh, ws, info, go, &mut out).await;
    out
}

/// Warns once when the server announces a rate limit: most of the flood would be refused
/// with `rate_limited`, which measures the limit, not the server.
fn check_welcome(sh: &Shared, w: &conn::Welcome) {
    if w.rate_per_sec > 0.0 && !sh.warned_limit.swap(true, Ordering::Relaxed) {
        sh.progress.warn(format!(
            "the server limits each socket to {} messages/s (burst {}): the flood will mostly \
             be refused with rate_limited. Start the server with --rate-per-sec 0.",
            w.rate_per_sec, w.rate_burst
        ));
    }
}

/// Counts a joined sender in the flood room (under the setup's lock).
fn count_member(sh: &Shared, role: Role) {
    if role == Role::Sender {
        sh.room.seqs.add_sender();
        sh.room.senders_sending.fetch_add(1, Ordering::SeqCst);
    }
}

async fn run_member(
    sh: &Arc<Shared>,
    ws: Ws,
    info: JoinInfo,
    go: watch::Receiver<Phase>,
    out: &mut Outcome,
) {
    let idx = out.idx;
    let mut rx = Receiver {
        sh,
        idx: idx as u64,
        role: out.role,
        sender: None,
        chats: ChatCheck::new(&info),
        latency: LatencyBatch::new(idx),
        timeline: TimelineBatch::default(),
        last_delivery_ns: UNKNOWN,
        hard: None,
        frames: 0,
        quiet_delivered: 0,
    };
    match out.role {
        Role::Sender | Role::QuietSender => {
            let st = Arc::new(SendCount::default());
            rx.sender = Some(Arc::clone(&st));
            let (sink, mut stream) = ws.split();
            let writer = tokio::spawn(send::writer(
                Arc::clone(sh),
                out.role,
                idx,
                sink,
                Arc::clone(&st),
                go.clone(),
            ));
            read_loop(&mut rx, &mut stream, go, out).await;
            // Whatever happened, this sender is done: release its writer and its room.
            let clean = out.closed.is_none();
            if out.role == Role::Sender {
                st.complete(&sh.room.seqs, clean);
            } else {
                sh.quiet.done.store(true, Ordering::SeqCst);
            }
            rx.finish(out);
            let sink = sending::take_back(writer).await;
            out.sent = st.sent.load(Ordering::SeqCst);
            if let Some(sink) = sink
                && clean
            {
                conn::close_split_and_drain(sink, &mut stream).await;
            }
        }
        Role::Reader | Role::QuietReader => {
            let mut ws = ws;
            read_loop(&mut rx, &mut ws, go, out).await;
            rx.finish(out);
            if out.closed.is_none() {
                conn::close_and_drain(&mut ws).await;
            }
        }
    }
}

/// The member's read loop: until it has everything, the server closes it, or the deadline.
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
    let mut check = tokio::time::interval(Duration::from_millis(50));
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Not biased: under a flood the socket is always ready, and the deadline and the
        // check must still get their turn (the text path checks them too).
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if rx.on_text(t.as_bytes(), out) {
                        break;
                    }
                    // Frames already buffered are read without touching the socket, so
                    // tokio's budget never makes a flooded reader yield: yield here.
                    if rx.frames.is_multiple_of(128) {
                        tokio::task::yield_now().await;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    rx.closed(code, conn::close_reason(f.as_ref()), out);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    rx.closed(None, conn::ws_reason(&e), out);
                    break;
                }
                None => {
                    rx.closed(None, "connection ended".to_string(), out);
                    break;
                }
            },
            _ = check.tick(), if rx.hard.is_some() => {
                if rx.finished() {
                    out.finished = true;
                    break;
                }
            }
            p = phases.next(), if phases.watching() => match p {
                Some(Phase::Go(s)) => {
                    deadline.as_mut().reset(s.hard.into());
                    rx.go(s);
                }
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
    idx: u64,
    role: Role,
    sender: Option<Arc<SendCount>>,
    chats: ChatCheck,
    latency: LatencyBatch,
    timeline: TimelineBatch,
    /// When the last delivery came (ns since the epoch); the start until the first.
    last_delivery_ns: u64,
    /// The hard deadline, once the flood has started.
    hard: Option<Instant>,
    /// Text frames read, to check the clock every so often.
    frames: u64,
    /// The quiet reader: the quiet sender's chats received.
    quiet_delivered: u64,
}

impl Receiver<'_> {
    fn go(&mut self, s: Schedule) {
        self.hard = Some(s.hard);
        self.last_delivery_ns = crate::ns_since(self.sh.epoch, s.start);
    }

    /// Whether the member has everything it will get.
    fn finished(&self) -> bool {
        let sh = self.sh;
        match self.role {
            Role::Sender | Role::Reader => {
                sh.room.seqs.has_last(self.chats.last())
                    && self.sender.as_ref().is_none_or(|s| s.completed())
            }
            Role::QuietSender => self.sender.as_ref().is_some_and(|s| s.all_answered()),
            Role::QuietReader => {
                sh.quiet.done.load(Ordering::Acquire)
                    && self.quiet_delivered >= sh.quiet.accepted.load(Ordering::Acquire)
            }
        }
    }

    /// The server ended the connection.
    fn closed(&mut self, code: Option<u16>, reason: String, out: &mut Outcome) {
        let now = self.sh.now_ns();
        let q = &self.sh.queues[self.idx as usize];
        let seen = q.seen.load(Ordering::Relaxed);
        out.closed = Some(Closed {
            code,
            reason,
            at_ns: now,
            since_delivery_ns: match self.last_delivery_ns {
                UNKNOWN => 0,
                t => now.saturating_sub(t),
            },
            behind: self
                .sh
                .room
                .seqs
                .max_echo_seq()
                .saturating_sub(self.chats.last()),
            unread: seen.then(|| q.unread.load(Ordering::Relaxed)),
            unsent: seen.then(|| q.unsent.load(Ordering::Relaxed)),
        });
    }

    /// Flushes the batches, closes the last gap, records how far the member got.
    fn finish(&mut self, out: &mut Outcome) {
        self.latency.flush(&self.sh.latency);
        self.timeline.flush(&self.sh.timeline);
        out.last_seq = self.chats.last();
        if !self.role.in_flood() {
            return;
        }
        self.sh.room.seqs.saw(self.chats.last());
        // The time from the last delivery to the close, or to the end of the sending.
        if self.last_delivery_ns != UNKNOWN {
            let end = out
                .closed
                .as_ref()
                .map_or_else(|| self.sh.now_ns(), |c| c.at_ns);
            let until = end.min(self.sh.room.sending_ended_ns.load(Ordering::SeqCst));
            self.gap_to(until, out);
        }
    }

    /// A delivery (or the end) at `now_ns`: the gap since the last one.
    fn gap_to(&mut self, now_ns: u64, out: &mut Outcome) {
        let gap = now_ns.saturating_sub(self.last_delivery_ns);
        if gap > out.max_gap_ns {
            out.max_gap_ns = gap;
            out.max_gap_end_ns = now_ns;
        }
    }

    /// Handles one text frame; true when the member is done.
    fn on_text(&mut self, f: &[u8], out: &mut Outcome) -> bool {
        self.frames += 1;
        if self.frames.is_multiple_of(256) && self.hard.is_some_and(|h| Instant::now() >= h) {
            return true;
        }
        match wire::frame_type(f) {
            Some(b"chat") => {}
            Some(b"error") => {
                self.on_error(f, out);
                return self.finished();
            }
            // Presence, typing and anything new: not the tool's business.
            _ => return false,
        }
        let Some(chat) = self.chats.read(f, self.sh.epoch, &mut out.chats) else {
            return false;
        };
        let now_ns = chat.now_ns;
        let Some(stamp) = chat.stamp else {
            return self.finished();
        };
        match self.role {
            Role::Sender | Role::Reader => self.on_flood_chat(chat.seq, stamp, now_ns, out),
            Role::QuietSender => {
                if stamp.sender == self.idx
                    && let Some(s) = &self.sender
                {
                    out.echoes += 1;
                    self.sh.quiet.accepted.fetch_add(1, Ordering::SeqCst);
                    s.answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            Role::QuietReader => {
                if stamp.sender == self.sh.quiet_sender_idx {
                    self.quiet_delivered += 1;
                    let us = now_ns.saturating_sub(stamp.send_ns) / 1_000;
                    self.sh.quiet_latency.record(0, &[us]);
                    let start = self.sh.start_ns.load(Ordering::Relaxed);
                    let second = stamp.send_ns.saturating_sub(start) / 1_000_000_000;
                    if let Some(w) = self.sh.quiet_worst.get(second as usize) {
                        w.fetch_max(us, Ordering::Relaxed);
                    }
                }
            }
        }
        self.finished()
    }

    fn on_flood_chat(&mut self, seq: u64, stamp: Stamp, now_ns: u64, out: &mut Outcome) {
        let sh = self.sh;
        self.timeline.count(&sh.timeline, now_ns);
        let (start, stop) = (
            sh.start_ns.load(Ordering::Relaxed),
            sh.stop_ns.load(Ordering::Relaxed),
        );
        if (start..stop).contains(&now_ns) {
            out.measured += 1;
        }
        if self.last_delivery_ns != UNKNOWN {
            self.gap_to(now_ns, out);
        }
        self.last_delivery_ns = now_ns;
        if stamp.sender == self.idx
            && let Some(s) = &self.sender
        {
            sh.room.seqs.echoed(seq);
            out.echoes += 1;
            s.answer(1, &sh.room.seqs);
        }
        if self.role == Role::Reader && stamp.send_ns >= start {
            self.latency
                .push(&sh.latency, now_ns.saturating_sub(stamp.send_ns) / 1_000);
        }
    }

    /// An `error`: for a sender, the answer to one or more of its messages.
    fn on_error(&mut self, f: &[u8], out: &mut Outcome) {
        let code = wire::str_field(f, b"\"code\":\"").unwrap_or(b"?");
        let n = match code {
            b"overloaded" | b"rate_limited" => wire::refused_count(f),
            _ => 1,
        };
        match code {
            b"overloaded" => out.overloaded += n,
            b"rate_limited" => out.rate_limited += n,
            _ => members::count_error(&mut out.errors, code),
        }
        if let Some(s) = &self.sender {
            match self.role {
                Role::Sender => s.answer(n, &self.sh.room.seqs),
                _ => {
                    s.answered.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
    }
}
