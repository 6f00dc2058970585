//! The `peer` scenario: the fan-out scenarios (A, B) against another chat server that speaks
//! bare text, so that roomcast and its peers (the actix example chat, a node `ws` server) are
//! measured by the same tool on the same machine in one run (docs/BENCHMARKS.md, "Peers").
//!
//! A peer has no seq, no join frame and no ack, so the tool brings its own:
//! - Each member opens `--path` (`{room}` replaced by its room) and, with `--join-text`, sends
//!   that text (e.g. `/join {room}` for the actix example) to enter its room.
//! - A sender's text is `lt|SENDER|N|SEND_NS`, N counting from 0 per sender; the tool finds
//!   `lt|` anywhere in a received text, so a peer that prefixes a name still works. Other
//!   texts (a peer's own notices) are ignored.
//! - Each receiver checks that every sender's N arrive in order, once each: a later N counts
//!   the skipped ones as lost, an earlier one as duplicated or out of order.
//! - The window (`--window`, closed loop) is released by the room's first member (a witness,
//!   never a sender) receiving the message, since a peer need not echo it to its sender.
//!   With `--rate`, senders send on a timer instead (open loop), as in `fanout`.
//! - Whether the peer echoes to the sender is seen, not assumed: expected deliveries count
//!   the sender itself only when it received its own messages.
//!
//! Deliveries/s count what members received between the warm-up's end and stop; latency is
//! send → receipt for messages sent in that window, at every receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::{Connections, Deliveries, Latency, Messages, Report};
use crate::stats::{LatencyBatch, LatencySink, Percentiles, log_buckets, new_histogram};
use crate::{Ctx, check_count, check_range};

#[derive(Debug, Clone, Args, Serialize)]
pub struct PeerArgs {
    /// The peer's WebSocket path; `{room}` is replaced by the member's room.
    #[arg(long, default_value = "/ws")]
    pub path: String,
    /// A text each member sends once connected to enter its room (`{room}` replaced), e.g.
    /// `/join {room}` for the actix example.
    #[arg(long)]
    pub join_text: Option<String>,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Members per room (senders included; the first member is never a sender).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Senders per room.
    #[arg(long, default_value_t = 5)]
    pub senders: usize,
    /// Closed loop: messages a sender may have on their way (released when the room's first
    /// member receives them).
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Open loop: messages per second per sender (0: closed loop with --window).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds of measured sending, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of sending before the measured window: checked, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait, after connecting, for the peer to have every member in its room.
    #[arg(long, default_value_t = 0.5)]
    pub settle: f64,
}

impl PeerArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--rooms", self.rooms, 1, 10_000)?;
        check_count("--clients", self.clients, 2, 10_000)?;
        check_count("--senders", self.senders, 1, self.clients - 1)?;
        check_count("--window", self.window, 1, 100_000)?;
        check_range("--rate", self.rate, 0.0, 1e6)?;
        check_range("--duration", self.duration, 0.1, 3600.0)?;
        check_range("--warmup", self.warmup, 0.0, 600.0)?;
        check_range("--settle", self.settle, 0.0, 60.0)
    }
}

const MARK: &str = "lt|";

/// One sent message, as found in a received text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    sender: usize,
    n: u64,
    send_ns: u64,
}

fn encode(s: Sent) -> String {
    format!("{MARK}{}|{}|{}", s.sender, s.n, s.send_ns)
}

/// The tool's message in `text`, wherever it starts.
fn decode(text: &str) -> Option<Sent> {
    let at = text.find(MARK)?;
    let mut parts = text[at + MARK.len()..].splitn(3, '|');
    let sender = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    let send_ns = parts.next()?.trim_end().parse().ok()?;
    Some(Sent { sender, n, send_ns })
}

/// One receiver's view of the senders of its room: the next N expected from each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Checker {
    next: Vec<u64>,
    received: u64,
    lost: u64,
    duplicated: u64,
}

impl Checker {
    fn new(senders: usize) -> Checker {
        Checker {
            next: vec![0; senders],
            ..Checker::default()
        }
    }

    /// Sender `slot` (within the room) sent `n`.
    fn saw(&mut self, slot: usize, n: u64) {
        self.received += 1;
        let next = &mut self.next[slot];
        if n >= *next {
            self.lost += n - *next;
            *next = n + 1;
        } else {
            self.duplicated += 1;
        }
    }
}

/// Shared by every task.
struct Shared {
    args: PeerArgs,
    /// Per sender: messages sent.
    sent: Vec<AtomicU64>,
    /// Per sender: the witness's receipts release its window.
    windows: Vec<Semaphore>,
    /// Per sender: it has stopped sending (`sent` is final).
    done: Vec<AtomicBool>,
    /// Per sender: its own messages it received (the peer echoes).
    own: Vec<AtomicU64>,
    received: AtomicU64,
    measured: AtomicU64,
    duplicated: AtomicU64,
    latency: LatencySink,
    /// The tool's time zero (`Ctx::epoch`) and `--drain`.
    epoch: Instant,
    drain: Duration,
    /// (start, warm, stop) in the tool's ns; published once the run starts.
    schedule: watch::Receiver<Option<(u64, u64, u64)>>,
}

/// The global number of the `slot`th sender of `room`.
fn sender_id(args: &PeerArgs, room: usize, slot: usize) -> usize {
    room * args.senders + slot
}

pub async fn run(ctx: &Ctx, args: &PeerArgs) -> anyhow::Result<Report> {
    let senders = args.rooms * args.senders;
    let (schedule_tx, schedule) = watch::channel(None);
    let shared = Arc::new(Shared {
        args: args.clone(),
        sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        windows: (0..senders).map(|_| Semaphore::new(args.window)).collect(),
        own: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        done: (0..senders).map(|_| AtomicBool::new(false)).collect(),
        received: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        latency: LatencySink::new(ctx.threads * 4),
        epoch: ctx.epoch,
        drain: Duration::from_secs_f64(ctx.common.drain),
        schedule,
    });

    // Connect every member, in order; members past the setup timeout count as failed.
    let connector = ctx.connector(4096);
    let mut connections = Connections::default();
    let mut connect_us = new_histogram();
    let mut members = Vec::new();
    for room in 0..args.rooms {
        let name = format!("{}-{room}", ctx.run_id);
        for member in 0..args.clients {
            connections.attempted += 1;
            let path = args.path.replace("{room}", &name);
            match connector.open(&path, false).await {
                Ok(mut opened) => {
                    if let Some(join) = &args.join_text {
                        let text = join.replace("{room}", &name);
                        if let Err(e) = opened.ws.send(Message::text(text)).await {
                            *connections
                                .failure_reasons
                                .entry(e.to_string())
                                .or_default() += 1;
                            connections.failed += 1;
                            continue;
                        }
                    }
                    connections.made += 1;
                    let us = u64::try_from(opened.connect_time.as_micros()).unwrap_or(u64::MAX);
                    connect_us.saturating_record(us.max(1));
                    members.push((room, member, opened.ws));
                }
                Err(reason) => {
                    connections.failed += 1;
                    *connections.failure_reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    connections.connect_latency_us = Percentiles::of(&connect_us);
    connections.connect_buckets = log_buckets(&connect_us);
    // The peer puts members in their rooms asynchronously: let it finish.
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;

    let mut tasks = Vec::new();
    for (room, member, ws) in members {
        let shared = shared.clone();
        let slot = member.checked_sub(args.clients - args.senders);
        tasks.push(tokio::spawn(member_task(shared, room, member, slot, ws)));
    }
    let start = ctx.now_ns();
    let warm = start + (args.warmup * 1e9) as u64;
    let stop = warm + (args.duration * 1e9) as u64;
    let _ = schedule_tx.send(Some((start, warm, stop)));
    let deadline = Duration::from_secs_f64(args.warmup + args.duration + ctx.common.drain);
    let mut dropped = 0;
    let mut drop_reasons = std::collections::BTreeMap::new();
    let all = futures_util::future::join_all(tasks);
    let outcomes = tokio::time::timeout(deadline + Duration::from_secs(5), all)
        .await
        .unwrap_or_default();
    for outcome in outcomes {
        if let Ok(Some(reason)) = outcome {
            dropped += 1;
            *drop_reasons.entry(reason).or_insert(0u64) += 1;
        }
    }
    connections.dropped = dropped;
    connections.drop_reasons = drop_reasons;

    // Expected: every message sent, at every member of its room (the sender included when
    // the peer echoes).
    let echoes = shared.own.iter().any(|n| n.load(Ordering::Relaxed) > 0);
    let per_message = (args.clients - usize::from(!echoes)) as u64;
    let sent: u64 = shared.sent.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    let received = shared.received.load(Ordering::Relaxed);
    let duplicated = shared.duplicated.load(Ordering::Relaxed);
    let expected = sent * per_message;
    let measured_secs = (stop - warm) as f64 / 1e9;
    let measured = shared.measured.load(Ordering::Relaxed);
    let latency = shared.latency.merged();
    let mut report = Report {
        connections,
        messages: Some(Messages {
            sent,
            accepted: sent,
            ..Messages::default()
        }),
        deliveries: Some(Deliveries {
            expected,
            received,
            // Gaps later filled are not losses: count what never arrived.
            lost: expected.saturating_sub(received - duplicated),
            duplicated,
            out_of_order: 0,
            foreign: 0,
            measured,
            measured_secs,
            per_sec: measured as f64 / measured_secs,
        }),
        latency: Some(Latency {
            what: format!(
                "send → receipt at every member{}",
                if echoes {
                    " (the peer echoes to the sender)"
                } else {
                    " but the sender (the peer does not echo)"
                }
            ),
            us: Percentiles::of(&latency),
            buckets: log_buckets(&latency),
        }),
        ..Report::default()
    };
    let lost = report.deliveries.as_ref().map_or(0, |d| d.lost);
    if lost + duplicated > 0 {
        report.problems.push(format!(
            "{lost} of {expected} deliveries never arrived, {duplicated} came twice or late"
        ));
    }
    if report.connections.failed + report.connections.dropped > 0 {
        report.problems.push(format!(
            "{} connections failed and {} dropped",
            report.connections.failed, report.connections.dropped
        ));
    }
    Ok(report)
}

/// One member: reads until it has every message of its room's senders (or the deadline),
/// and sends if it is a sender (`slot`). Returns why its connection ended early, if it did.
async fn member_task(
    shared: Arc<Shared>,
    room: usize,
    member: usize,
    slot: Option<usize>,
    ws: Ws,
) -> Option<String> {
    let args = &shared.args;
    let mut schedule = shared.schedule.clone();
    let times = match schedule.wait_for(Option::is_some).await {
        Ok(guard) => *guard,
        Err(_) => None,
    };
    let Some((start, warm, stop)) = times else {
        return Some("no schedule".into());
    };
    let epoch = shared.epoch;
    let now_ns = move || crate::ns_since(epoch, Instant::now());
    let (mut sink, mut stream) = ws.split();
    let writer = slot.map(|slot| {
        let shared = shared.clone();
        let id = sender_id(&shared.args, room, slot);
        tokio::spawn(async move {
            let args = &shared.args;
            // As in `fanout`: senders spread over the period (golden-ratio offsets) so they
            // do not all send in the same instant; missed ticks are caught up (open loop).
            let mut tick = (args.rate > 0.0).then(|| {
                let period = Duration::from_secs_f64(1.0 / args.rate);
                let offset = period.mul_f64((id as f64 * 0.618_033_988_7).fract());
                let at = shared.epoch + Duration::from_nanos(start) + offset;
                let mut t = tokio::time::interval_at(at.into(), period);
                t.set_missed_tick_behavior(MissedTickBehavior::Burst);
                t
            });
            let mut n = 0u64;
            while now_ns() < stop {
                match &mut tick {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => {
                        let wait = shared.windows[id].acquire();
                        let left = Duration::from_nanos(stop.saturating_sub(now_ns()));
                        match tokio::time::timeout(left, wait).await {
                            Ok(Ok(permit)) => permit.forget(),
                            _ => break,
                        }
                    }
                }
                let text = encode(Sent {
                    sender: id,
                    n,
                    send_ns: now_ns(),
                });
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
                n += 1;
                shared.sent[id].fetch_add(1, Ordering::Relaxed);
            }
            shared.done[id].store(true, Ordering::Release);
            sink
        })
    });
    let first_sender = sender_id(args, room, 0);
    let mut checker = Checker::new(args.senders);
    let mut batch = LatencyBatch::new(room * args.clients + member);
    let deadline = tokio::time::Instant::now()
        + Duration::from_nanos(stop.saturating_sub(now_ns()))
        + shared.drain;
    let mut ended = None;
    let mut measured = 0u64;
    loop {
        // Done once every sender of the room has stopped and all its messages are in (this
        // member's own too, when the peer echoes them).
        if now_ns() >= stop {
            let all_in = (0..args.senders).all(|s| {
                let id = first_sender + s;
                if !shared.done[id].load(Ordering::Acquire) {
                    return false;
                }
                let not_echoed = Some(s) == slot && shared.own[id].load(Ordering::Relaxed) == 0;
                not_echoed || checker.next[s] >= shared.sent[id].load(Ordering::Relaxed)
            });
            if all_in {
                break;
            }
        }
        // Woken every 100 ms to check the condition above when nothing arrives.
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(100));
        let next = tokio::time::timeout_at(wake, stream.next()).await;
        let msg = match next {
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(f)))) => {
                ended = Some(conn::close_reason(f.as_ref()));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => {
                ended = Some(conn::ws_reason(&e));
                break;
            }
            Ok(None) => {
                ended = Some("connection ended".into());
                break;
            }
        };
        let Some(sent) = decode(&msg) else {
            continue;
        };
        let Some(s) = sent
            .sender
            .checked_sub(first_sender)
            .filter(|s| *s < args.senders)
        else {
            continue;
        };
        let now = now_ns();
        checker.saw(s, sent.n);
        if Some(s) == slot {
            shared.own[sent.sender].fetch_add(1, Ordering::Relaxed);
        }
        if member == 0 {
            shared.windows[sent.sender].add_permits(1);
        }
        if now >= warm && now < stop {
            measured += 1;
        }
        if sent.send_ns >= warm && sent.send_ns < stop {
            batch.push(&shared.latency, now.saturating_sub(sent.send_ns) / 1000);
        }
    }
    batch.flush(&shared.latency);
    shared
        .received
        .fetch_add(checker.received, Ordering::Relaxed);
    shared.measured.fetch_add(measured, Ordering::Relaxed);
    shared
        .duplicated
        .fetch_add(checker.duplicated, Ordering::Relaxed);
    if let Some(w) = writer
        && let Ok(sink) = w.await
        && let Ok(ws) = sink.reunite(stream)
    {
        conn::close(ws, Duration::from_secs(1)).await;
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_found_behind_a_peers_prefix() {
        let s = Sent {
            sender: 12,
            n: 7,
            send_ns: 123_456_789,
        };
        assert_eq!(decode(&encode(s)), Some(s));
        assert_eq!(decode(&format!("bob: {}", encode(s))), Some(s));
        assert_eq!(decode("Someone joined"), None);
        assert_eq!(decode("lt|x|1|2"), None);
    }

    #[test]
    fn the_checker_counts_gaps_as_lost_and_repeats_as_duplicated() {
        let mut c = Checker::new(2);
        for n in [0, 1, 3, 3, 2] {
            c.saw(0, n);
        }
        c.saw(1, 0);
        assert_eq!((c.received, c.lost, c.duplicated), (6, 1, 2));
        assert_eq!(c.next, [4, 1]);
    }
}
