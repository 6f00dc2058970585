//! One storm client: a user with one socket in a few rooms, posting acknowledged chats at a
//! fixed rate, reconnecting with jittered exponential backoff whenever its socket ends, and
//! rejoining each room with `since_seq` = the last `seq` it saw there.
//!
//! What it checks, per room, over the whole run (every socket it had):
//!
//! - every `seq` once and in order (`wire::SeqChecker`), across reconnects: the history after
//!   a `recovered: true` rejoin must continue exactly from the last `seq` it had;
//! - `recovered: false` on a rejoin is counted (the client then starts the room over);
//! - each of its own chats appears at one `seq` only, and an acknowledged chat appears at the
//!   `seq` its `ack` named (a chat acked before a restart must be in the history after it);
//! - a chat not acknowledged when the socket ended is sent again, with the same
//!   `client_msg_id`, once the room is rejoined; by the end every chat must be acknowledged.
//!
//! A client is *back* after a restart when it has a new socket, its `welcome`, and every
//! room's `joined` with the history that follows it; the time from the restart's signal to
//! that moment is its recovery time.

mod frames;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::summary::Counts;
use super::{Phase, Shared};
use crate::conn::{self, Ws};
use crate::ns_since;
use crate::wire::{self, SeqChecker, Stamp};

/// What one client saw, handed back when it ends.
#[derive(Debug, Default)]
pub struct ClientResult {
    /// Connected and joined every room before the first restart.
    pub set_up: bool,
    /// Bit k: came back after restart k (counted from 0).
    pub back_for: u64,
    pub n: Counts,
    /// Why attempts failed or sockets ended, grouped.
    pub reasons: Vec<(String, u64)>,
    /// Error frames received, by code.
    pub errors: Vec<(String, u64)>,
}

impl ClientResult {
    /// Recovered exactly from every restart: nothing lost, doubled or left unacknowledged.
    pub fn exact(&self, restarts: usize) -> bool {
        let all_back = (0..restarts).all(|k| self.back_for & (1 << k) != 0);
        self.set_up && all_back && self.n.clean()
    }
}

fn bump(list: &mut Vec<(String, u64)>, key: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key.to_string(), 1)),
    }
}

/// A chat sent and not acknowledged yet.
struct Pending {
    msg_no: u64,
    /// Index into the client's rooms.
    room: usize,
    text: String,
    /// On the current socket (false: to be sent, or sent again).
    sent: bool,
}

/// One room as this client sees it.
struct RoomView {
    /// Index into `Shared::rooms`.
    global: usize,
    /// `None` until the first `joined`.
    checker: Option<SeqChecker>,
    /// History frames still to come after `joined` on this socket.
    history_left: u64,
    /// Whether those history frames are checked (a recovered rejoin) or skipped.
    check_history: bool,
    /// `joined` and its history received on this socket.
    ready: bool,
    /// Seqs skipped (a gap), less those that arrived late.
    skipped: u64,
}

/// splitmix64: the jitter's random numbers, seeded per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Full jitter: uniform in [0, min(cap, base × 2^(attempt-1))).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(unit.clamp(0.0, 1.0))
}

struct Client<'a> {
    sh: &'a Shared,
    i: usize,
    user: String,
    rooms: Vec<RoomView>,
    pending: Vec<Pending>,
    /// Per own message number: the seq its echo was seen at (0: not seen).
    echo: Vec<u64>,
    /// Per own message number: the seq its ack named (0: not acked).
    ack: Vec<u64>,
    next_room: usize,
    /// The restart whose recovery this client is in (1-based; 0: none).
    lost_for: usize,
    /// Time spent waiting for a slot of the tool's `--connect-concurrency` since the socket
    /// was lost.
    queued: Duration,
    done_sending: bool,
    rng: Rng,
    r: ClientResult,
}

/// How a socket ended.
enum End {
    /// The client has everything and is done.
    Finished,
    Lost(String),
}

pub async fn run(sh: &Shared, i: usize) -> ClientResult {
    let k = sh.rooms_per_client;
    let n_rooms = sh.rooms.len();
    let rooms = (0..k)
        .map(|j| RoomView {
            // Client i's rooms: i mod rooms, then the ones rooms/k apart from it.
            global: (i + j * (n_rooms / k).max(1)) % n_rooms,
            checker: None,
            history_left: 0,
            check_history: false,
            ready: false,
            skipped: 0,
        })
        .collect();
    let mut c = Client {
        sh,
        i,
        user: sh.user_name(i),
        rooms,
        pending: Vec::new(),
        echo: Vec::new(),
        ack: Vec::new(),
        next_room: 0,
        lost_for: 0,
        queued: Duration::ZERO,
        done_sending: false,
        rng: Rng(0x5eed ^ ((i as u64) << 17) ^ ns_since(sh.epoch, Instant::now())),
        r: ClientResult::default(),
    };
    let mut attempt = 0u32;
    loop {
        if Instant::now() >= sh.hard || c.past_drain() {
            break;
        }
        if attempt > 0 {
            let unit = c.rng.unit();
            let wait = backoff(attempt, sh.backoff_base, sh.backoff_cap, unit);
            tokio::time::sleep_until((Instant::now() + wait).min(sh.hard).into()).await;
        }
        c.r.n.connect_attempts += 1;
        let path = format!("/ws?user_id={}", c.user);
        let asked = Instant::now();
        let ws = match sh.connector.open(&path, true).await {
            Ok(opened) => {
                let us = opened.connect_time.as_micros() as u64;
                sh.connect.record(i, &[us]);
                c.queued += opened.queued;
                opened.ws
            }
            Err(e) => {
                // Mostly the wait for a slot: a refused connection fails at once.
                c.queued += asked.elapsed();
                bump(&mut c.r.reasons, &format!("connect: {e}"));
                attempt += 1;
                continue;
            }
        };
        match c.session(ws, &mut attempt).await {
            End::Finished => {
                c.r.n.finished = 1;
                break;
            }
            End::Lost(reason) => {
                bump(&mut c.r.reasons, &reason);
                let restart = sh.restart_no.load(Ordering::SeqCst);
                if restart > 0 && c.r.back_for & (1 << (restart - 1)) == 0 {
                    c.lost_for = restart;
                    c.queued = Duration::ZERO;
                } else if !c.past_drain() {
                    c.r.n.unexpected_drops += 1;
                }
                for room in &mut c.rooms {
                    room.ready = false;
                }
                for p in &mut c.pending {
                    p.sent = false;
                }
                // 0 when the socket had come back: the backoff starts over.
                attempt += 1;
            }
        }
    }
    c.finish()
}

impl Client<'_> {
    fn past_drain(&self) -> bool {
        matches!(self.sh.phase(), Phase::Draining(until) if Instant::now() >= until)
    }

    /// One socket's life: joins, then reads and posts until it ends or the client is done.
    async fn session(&mut self, mut ws: Ws, attempt: &mut u32) -> End {
        let sh = self.sh;
        for j in 0..self.rooms.len() {
            let room = &sh.rooms[self.rooms[j].global];
            let frame = match self.rooms[j].checker.as_ref() {
                None => wire::join_frame(room),
                Some(c) => format!(
                    r#"{{"type":"join","room_id":"{room}","since_seq":{}}}"#,
                    c.last()
                ),
            };
            if let Err(e) = send(&mut ws, sh.step, frame).await {
                return End::Lost(format!("join: {e}"));
            }
        }
        let join_deadline = Instant::now() + sh.step * 2;
        let interval = Duration::from_secs_f64(1.0 / sh.rate);
        // The first tick comes at a random point of the first interval, so the clients'
        // chats spread evenly over time.
        let mut next_tick: Option<Instant> = None;
        let mut last_rx = Instant::now();
        loop {
            let back = self.rooms.iter().all(|r| r.ready);
            let phase = sh.phase();
            if back && let Phase::Draining(_) = phase {
                self.check_done_sending();
                if self.finished() {
                    conn::close(ws, sh.step).await;
                    return End::Finished;
                }
            }
            let mut wake = (last_rx + sh.step * 3).min(sh.hard);
            if !back {
                wake = wake.min(join_deadline);
            }
            if back && matches!(phase, Phase::Posting) && next_tick.is_none() {
                next_tick = Some(Instant::now() + interval.mul_f64(self.rng.unit()));
            }
            match (phase, next_tick) {
                (Phase::Posting, Some(tick)) if back => wake = wake.min(tick),
                (Phase::Draining(until), _) => {
                    wake = wake.min(until).min(Instant::now() + DRAIN_POLL);
                }
                _ => wake = wake.min(Instant::now() + SETUP_POLL),
            }
            let item = tokio::select! {
                item = ws.next() => Some(item),
                _ = tokio::time::sleep_until(wake.into()) => None,
            };
            let now = Instant::now();
            match item {
                Some(Some(Ok(Message::Text(t)))) => {
                    last_rx = now;
                    if let Err(e) = self.on_frame(t.as_bytes()) {
                        return End::Lost(e);
                    }
                    if !back && self.rooms.iter().all(|r| r.ready) {
                        let tries = std::mem::take(attempt);
                        if let Err(e) = self.on_back(&mut ws, now, tries).await {
                            return End::Lost(e);
                        }
                    }
                }
                Some(other) => {
                    last_rx = now;
                    if let Some(reason) = conn::end_reason(other) {
                        return End::Lost(reason);
                    }
                }
                None => {
                    if now >= sh.hard || self.past_drain() {
                        return End::Lost("run ended".to_string());
                    }
                    if now >= last_rx + sh.step * 3 {
                        return End::Lost("silent socket".to_string());
                    }
                    if !back && now >= join_deadline {
                        return End::Lost("join: timeout".to_string());
                    }
                    if let Some(tick) = next_tick
                        && back
                        && matches!(phase, Phase::Posting)
                        && now >= tick
                    {
                        next_tick = Some((tick + interval).max(now));
                        if let Err(e) = self.post(&mut ws).await {
                            return End::Lost(e);
                        }
                    }
                }
            }
        }
    }
}

/// How often a waiting client looks at the phase again, before the posting starts and while
/// it drains.
const SETUP_POLL: Duration = Duration::from_secs(1);
const DRAIN_POLL: Duration = Duration::from_millis(250);

async fn send(ws: &mut Ws, timeout: Duration, frame: String) -> Result<(), String> {
    match tokio::time::timeout(timeout, ws.send(Message::text(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(conn::ws_reason(&e)),
        Err(_) => Err("timeout (send)".to_string()),
    }
}

impl Client<'_> {
    /// Every room is joined again, on the connection attempt `tries` since the socket was
    /// lost: the restart's recovery ends here for this client; chats that were never
    /// acknowledged go again.
    async fn on_back(&mut self, ws: &mut Ws, now: Instant, tries: u32) -> Result<(), String> {
        let sh = self.sh;
        if self.lost_for > 0 {
            let k = self.lost_for - 1;
            self.lost_for = 0;
            if self.r.back_for & (1 << k) == 0 {
                self.r.back_for |= 1 << k;
                sh.restarts[k].back(now, tries, self.queued);
            }
        } else if !self.r.set_up && sh.restart_no.load(Ordering::SeqCst) == 0 {
            self.r.set_up = true;
            sh.joined.fetch_add(1, Ordering::SeqCst);
            sh.senders_active.fetch_add(1, Ordering::SeqCst);
        }
        self.resend(ws).await
    }

    /// Sends again every pending chat not on this socket, in its rooms that are ready.
    async fn resend(&mut self, ws: &mut Ws) -> Result<(), String> {
        for p in &mut self.pending {
            if p.sent || !self.rooms[p.room].ready {
                continue;
            }
            let room = &self.sh.rooms[self.rooms[p.room].global];
            let frame = wire::chat_frame_with_id(room, &p.text, &format!("m{}", p.msg_no));
            send(ws, self.sh.step, frame).await?;
            p.sent = true;
            self.r.n.chats_resent += 1;
        }
        Ok(())
    }

    /// A tick of the posting rate: what waits goes again, then a new chat if the window
    /// allows it.
    async fn post(&mut self, ws: &mut Ws) -> Result<(), String> {
        self.resend(ws).await?;
        if self.pending.len() >= self.sh.window {
            self.r.n.window_full_ticks += 1;
            return Ok(());
        }
        let j = self.next_room % self.rooms.len();
        self.next_room += 1;
        let msg_no = self.echo.len();
        self.echo.push(0);
        self.ack.push(0);
        let mut text = String::new();
        let stamp = Stamp {
            sender: self.i as u64,
            msg_no: msg_no as u64,
            send_ns: ns_since(self.sh.epoch, Instant::now()),
        };
        wire::encode_text(&mut text, stamp, 0);
        let room = &self.sh.rooms[self.rooms[j].global];
        let frame = wire::chat_frame_with_id(room, &text, &format!("m{msg_no}"));
        self.pending.push(Pending {
            msg_no: msg_no as u64,
            room: j,
            text,
            sent: true,
        });
        self.r.n.chats_sent += 1;
        send(ws, self.sh.step, frame).await
    }

    fn check_done_sending(&mut self) {
        if !self.done_sending && self.r.set_up && self.pending.is_empty() {
            self.done_sending = true;
            self.sh.senders_active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Done sending, every sender of the run done, and every room seen up to the highest
    /// `seq` anyone had acknowledged in it.
    fn finished(&self) -> bool {
        self.done_sending
            && self.sh.senders_active.load(Ordering::SeqCst) == 0
            && self.rooms.iter().all(|r| {
                let last = r.checker.as_ref().map_or(0, SeqChecker::last);
                last >= self.sh.room_max_acked[r.global].load(Ordering::SeqCst)
            })
    }

    fn finish(mut self) -> ClientResult {
        self.r.n.lost = self.rooms.iter().map(|r| r.skipped).sum();
        self.r.n.chats_unacked = self.pending.len() as u64;
        self.r.n.acked_missing = self
            .ack
            .iter()
            .zip(&self.echo)
            .filter(|&(&a, &e)| a != 0 && a != e)
            .count() as u64;
        // A room whose end was not reached: what it lacks up to the highest acked seq.
        for r in &self.rooms {
            let last = r.checker.as_ref().map_or(0, SeqChecker::last);
            let want = self.sh.room_max_acked[r.global].load(Ordering::SeqCst);
            self.r.n.lost += want.saturating_sub(last);
        }
        self.r
    }
}
