//! The receive path's check of a room's `chat` stream, the part every member does the same
//! way: skip the history `joined` announced, read `seq` and the stamp in place (`wire.rs`),
//! put `seq` through the member's [`SeqChecker`], and count.
//!
//! It runs for every delivery (millions per second), so it allocates nothing and the
//! counters are plain fields of the member's outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::conn::JoinInfo;
use crate::ns_since;
use crate::report::Deliveries;
use crate::wire::{self, SeqChecker, SeqEvent, Stamp};

/// One member's checks of its room's chats.
#[derive(Debug)]
pub struct ChatCheck {
    checker: SeqChecker,
    /// History frames still to come after `joined`: not part of the run.
    skip_history: u64,
}

/// What a member's [`ChatCheck`] counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChatCounts {
    /// Chats with a readable `seq`, after the history.
    pub received: u64,
    /// `seq`s skipped (lost unless they come late).
    pub gap_lost: u64,
    /// Skipped `seq`s that came after all: out of order.
    pub late: u64,
    pub duplicated: u64,
    /// Chats without a readable `seq`.
    pub malformed: u64,
    /// Chats whose text is not the tool's.
    pub foreign: u64,
}

/// A chat the member received.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub seq: u64,
    /// The tool's stamp; `None` for someone else's text (counted foreign).
    pub stamp: Option<Stamp>,
    /// When it was read: nanoseconds since the tool's epoch.
    pub now_ns: u64,
}

impl ChatCheck {
    /// Starts after the room's `seq` at join, skipping the history that follows `joined`.
    pub fn new(info: &JoinInfo) -> ChatCheck {
        ChatCheck {
            checker: SeqChecker::new(info.last_seq),
            skip_history: info.history,
        }
    }

    /// The last `seq` seen.
    pub fn last(&self) -> u64 {
        self.checker.last()
    }

    /// Checks and counts a frame already known to be a `chat`: `None` for a history frame
    /// and for one without a readable `seq`.
    #[inline]
    pub fn read(&mut self, f: &[u8], epoch: Instant, counts: &mut ChatCounts) -> Option<Delivery> {
        if self.skip_history > 0 {
            self.skip_history -= 1;
            return None;
        }
        let now_ns = ns_since(epoch, Instant::now());
        let chat = wire::parse_chat(f);
        let Some(seq) = chat.seq else {
            counts.malformed += 1;
            return None;
        };
        match self.checker.observe(seq) {
            SeqEvent::InOrder => {}
            SeqEvent::Gap(n) => counts.gap_lost += n,
            SeqEvent::Late => counts.late += 1,
            SeqEvent::Duplicate => counts.duplicated += 1,
        }
        counts.received += 1;
        if chat.stamp.is_none() {
            counts.foreign += 1;
        }
        Some(Delivery {
            seq,
            stamp: chat.stamp,
            now_ns,
        })
    }
}

impl ChatCounts {
    /// Adds a member's counts to the report's; `tail` is what it never received up to the
    /// `seq` it should have reached (lost, like the gaps not filled later).
    pub fn add_to(&self, del: &mut Deliveries, tail: u64) {
        del.received += self.received;
        del.lost += (self.gap_lost + tail).saturating_sub(self.late);
        del.out_of_order += self.late;
        del.duplicated += self.duplicated;
        del.foreign += self.foreign;
    }
}

/// Counts an `error` frame's `code` (other than the ones the scenario counts itself).
pub fn count_error(errors: &mut BTreeMap<String, u64>, code: &[u8]) {
    *errors
        .entry(String::from_utf8_lossy(code).into_owned())
        .or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(seq: u64, text: &str) -> String {
        format!(r#"{{"type":"chat","room_id":"r","user_id":"u","text":"{text}","seq":{seq}}}"#)
    }

    #[test]
    fn history_is_skipped_then_every_seq_is_checked_and_counted() {
        let epoch = Instant::now();
        let mut check = ChatCheck::new(&JoinInfo {
            last_seq: 10,
            history: 1,
        });
        let mut counts = ChatCounts::default();
        let mut read =
            |seq: u64, text: &str| check.read(chat(seq, text).as_bytes(), epoch, &mut counts);
        assert!(read(10, "lt:0:0:5").is_none(), "history");
        let d = read(11, "lt:3:7:5").expect("a delivery");
        assert_eq!(
            (d.seq, d.stamp.map(|s| (s.sender, s.msg_no))),
            (11, Some((3, 7)))
        );
        assert!(read(14, "hello").is_some_and(|d| d.stamp.is_none()));
        assert!(read(12, "lt:3:8:5").is_some());
        assert!(read(12, "lt:3:8:5").is_some());
        assert!(
            check
                .read(br#"{"type":"chat","text":"x"}"#, epoch, &mut counts)
                .is_none()
        );
        assert_eq!(check.last(), 14);
        let c = counts;
        assert_eq!(
            (
                c.received,
                c.gap_lost,
                c.late,
                c.duplicated,
                c.malformed,
                c.foreign
            ),
            (4, 2, 1, 1, 1, 1)
        );

        let mut del = Deliveries::default();
        c.add_to(&mut del, 3);
        // Two skipped, one of them came late, and three never came at all.
        assert_eq!((del.received, del.lost, del.out_of_order), (4, 4, 1));
    }
}
