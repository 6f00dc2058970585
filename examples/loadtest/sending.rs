//! What the `fanout` and `flood` senders share: the count of messages sent and answered, the
//! stamped texts, a fixed-rate clock, and the writer task that owns the socket's sink.
//!
//! A sender is a member (`members/`) whose socket is split: its read loop reads the echoes and
//! errors that answer its messages, and a writer task owns the sink, so sending never waits
//! behind reading. When the read loop ends, the writer hands the sink back to close the
//! socket. How fast to send (a window, a rate, as fast as the socket takes frames) is the
//! scenario's.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::conn::Sink;
use crate::members::RoomSeqs;
use crate::wire::{self, Stamp};

/// A sender's messages, shared by its reader (answers) and writer (sends).
#[derive(Default)]
pub struct SendCount {
    /// Counted before each send: the answer may be read before the send returns.
    pub sent: AtomicU64,
    /// Messages answered: by their echo (or their `ack`), or by an error (which can stand
    /// for several).
    pub answered: AtomicU64,
    /// The writer has stopped sending.
    pub writer_done: AtomicBool,
    /// The sender is done and its room knows it (set once).
    pub completed: AtomicBool,
}

impl SendCount {
    /// `n` messages were answered.
    pub fn answer(&self, n: u64, room: &RoomSeqs) {
        self.answered.fetch_add(n, Ordering::SeqCst);
        self.try_complete(room);
    }

    pub fn on_writer_done(&self, room: &RoomSeqs) {
        self.writer_done.store(true, Ordering::SeqCst);
        self.try_complete(room);
    }

    /// The writer has stopped and every message it sent has been answered.
    pub fn all_answered(&self) -> bool {
        self.writer_done.load(Ordering::SeqCst)
            && self.answered.load(Ordering::SeqCst) >= self.sent.load(Ordering::SeqCst)
    }

    fn try_complete(&self, room: &RoomSeqs) {
        if self.all_answered() {
            self.complete(room, true);
        }
    }

    /// Done, whether or not everything was answered; `clean` is false when the socket died.
    pub fn complete(&self, room: &RoomSeqs, clean: bool) {
        if !self.completed.swap(true, Ordering::SeqCst) {
            room.sender_done(clean);
        }
    }

    pub fn completed(&self) -> bool {
        self.completed.load(Ordering::Acquire)
    }
}

/// A sender's chat texts, each stamped (`wire::encode_text`) with the sender, the message's
/// number and its send time, in one buffer reused for every message.
pub struct StampedText {
    sender: u64,
    /// `--text-bytes` (0: no padding).
    pad_to: usize,
    buf: String,
}

impl StampedText {
    pub fn new(sender: usize, pad_to: usize) -> StampedText {
        StampedText {
            sender: sender as u64,
            pad_to,
            buf: String::with_capacity(pad_to.max(48)),
        }
    }

    /// The text of message `msg_no`, sent at `send_ns` (since the tool's epoch).
    #[inline]
    pub fn text(&mut self, msg_no: u64, send_ns: u64) -> &str {
        let stamp = Stamp {
            sender: self.sender,
            msg_no,
            send_ns,
        };
        wire::encode_text(&mut self.buf, stamp, self.pad_to);
        &self.buf
    }
}

/// An open-loop clock: a tick every `period` from `first`; ticks missed while a send was held
/// up come at once afterwards, so the offered rate does not drop when the server slows down.
pub fn fixed_rate(first: Instant, period: Duration) -> Interval {
    let mut iv = tokio::time::interval_at(first.into(), period);
    iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
    iv
}

/// Waits for the next tick of `ticks`; false when `stop` comes first.
pub async fn tick_before(ticks: &mut Interval, stop: Pin<&mut Sleep>) -> bool {
    tokio::select! {
        biased;
        _ = stop => false,
        _ = ticks.tick() => true,
    }
}

/// Takes the sink back from a writer task once the read loop is over: the writer has
/// stopped by then, or stops within 2 s; `None` if it did not, or panicked.
pub async fn take_back(writer: JoinHandle<Sink>) -> Option<Sink> {
    tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .ok()
        .and_then(Result::ok)
}
