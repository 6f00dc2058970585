//! How far a room's messages go, shared by its senders and its members: the senders not done
//! yet, the highest `seq` echoed to a sender, and, once every sender is done, the room's last
//! accepted `seq`, the one each member waits for before it stops.
//!
//! A sender is done when every message it sent has been answered (its echo, or an error), or
//! when its socket ends. If a socket ended first, the server may have accepted its last
//! messages without the echo reaching it: the last `seq` is then never published, and the
//! members wait for the hard deadline instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::UNKNOWN;

/// One room's senders and `seq`s.
pub struct RoomSeqs {
    /// Registered senders not done yet.
    senders_active: AtomicU64,
    /// A sender's socket ended before all its messages were answered: the room's last `seq`
    /// cannot be known from the echoes, so `final_seq` is never published.
    sender_lost: AtomicBool,
    /// Highest `seq` echoed to a sender: the newest message the server accepted.
    max_echo_seq: AtomicU64,
    /// Highest `seq` any member saw.
    seen_max: AtomicU64,
    /// The room's last accepted `seq`, once every sender is done (`UNKNOWN` until then).
    final_seq: AtomicU64,
    /// Notified when `final_seq` is published.
    done: Notify,
}

impl Default for RoomSeqs {
    fn default() -> RoomSeqs {
        RoomSeqs {
            senders_active: AtomicU64::new(0),
            sender_lost: AtomicBool::new(false),
            max_echo_seq: AtomicU64::new(0),
            seen_max: AtomicU64::new(0),
            final_seq: AtomicU64::new(UNKNOWN),
            done: Notify::new(),
        }
    }
}

impl RoomSeqs {
    /// A sender registered (during the setup).
    pub fn add_sender(&self) {
        self.senders_active.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether any registered sender is not done yet.
    pub fn has_senders(&self) -> bool {
        self.senders_active.load(Ordering::SeqCst) > 0
    }

    /// A sender is done; `clean` is false when its socket ended first. The last one done
    /// publishes the room's last `seq`, unless a socket ended.
    pub fn sender_done(&self, clean: bool) {
        if !clean {
            self.sender_lost.store(true, Ordering::SeqCst);
        }
        if self.senders_active.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.sender_lost.load(Ordering::SeqCst)
        {
            self.publish_final();
        }
    }

    /// Publishes the highest echoed `seq` as the room's last one, and wakes the members
    /// waiting for it. For a room without senders, at the start.
    pub fn publish_final(&self) {
        self.final_seq
            .store(self.max_echo_seq.load(Ordering::SeqCst), Ordering::SeqCst);
        self.done.notify_waiters();
    }

    /// A sender got the echo (or, with `--ack`, the ack) of one of its messages.
    pub fn echoed(&self, seq: u64) {
        self.max_echo_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// The highest `seq` echoed to a sender so far.
    pub fn max_echo_seq(&self) -> u64 {
        self.max_echo_seq.load(Ordering::SeqCst)
    }

    /// A member is done; `last` is the last `seq` it saw.
    pub fn saw(&self, last: u64) {
        self.seen_max.fetch_max(last, Ordering::SeqCst);
    }

    /// The highest `seq` any member saw.
    pub fn seen_max(&self) -> u64 {
        self.seen_max.load(Ordering::SeqCst)
    }

    /// Whether a member whose last `seq` is `last` has the room's last one (known only once
    /// every sender is done).
    pub fn has_last(&self, last: u64) -> bool {
        let f = self.final_seq.load(Ordering::Acquire);
        f != UNKNOWN && last >= f
    }

    /// Resolves when the room's last `seq` is published (create it before checking
    /// [`RoomSeqs::has_last`], so that a publication in between is not missed).
    pub fn published(&self) -> Notified<'_> {
        self.done.notified()
    }

    /// The last `seq` a member still open at the end should have: the room's last one (or,
    /// when it is not known, the highest echoed), or more if a member saw more.
    pub fn last_accepted(&self) -> u64 {
        let f = match self.final_seq.load(Ordering::SeqCst) {
            UNKNOWN => self.max_echo_seq(),
            f => f,
        };
        f.max(self.seen_max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with_senders(n: u64) -> RoomSeqs {
        let room = RoomSeqs::default();
        for _ in 0..n {
            room.add_sender();
        }
        room
    }

    #[test]
    fn the_last_sender_done_publishes_the_highest_echo() {
        let room = room_with_senders(2);
        room.echoed(7);
        room.echoed(5);
        room.sender_done(true);
        assert!(room.has_senders());
        assert!(!room.has_last(7), "not known while a sender is active");
        assert_eq!(room.last_accepted(), 7);
        room.sender_done(true);
        assert!(!room.has_senders());
        assert!(room.has_last(7) && !room.has_last(6));
        room.saw(9);
        assert_eq!(room.last_accepted(), 9, "a member saw more than was echoed");
    }

    #[test]
    fn a_lost_sender_keeps_the_last_seq_unknown() {
        let room = room_with_senders(2);
        room.echoed(3);
        room.sender_done(false);
        room.sender_done(true);
        assert!(!room.has_last(u64::MAX - 1));
        room.saw(4);
        assert_eq!(room.last_accepted(), 4);
    }

    #[test]
    fn a_room_without_senders_is_published_at_zero() {
        let room = RoomSeqs::default();
        room.publish_final();
        assert!(room.has_last(0));
        assert_eq!(room.last_accepted(), 0);
    }
}
