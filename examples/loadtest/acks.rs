//! `fanout --ack`: one sender's bookkeeping of its `client_msg_id`s.
//!
//! With `--ack` every chat carries `client_msg_id` = `c{msg_no}`, and the server answers the
//! sender with an `ack` (after the commit) as well as the `chat` echo, in either order. An
//! [`AckTracker`] keeps the messages that are not settled yet (sent, and missing their ack or
//! their echo), so it can tell, for every ack, whether it is the first one for a message the
//! sender sent, a duplicate or one it never asked for, and whether the ack's `seq` equals the
//! echo's. A message leaves the tracker when both have arrived; since acks come back in order
//! and the window bounds what is unanswered, the tracker stays about a window in size (plus
//! the messages answered by an `error`, which get neither).

use std::collections::HashMap;

/// The `client_msg_id` of a sender's message number `msg_no`.
pub fn client_msg_id(msg_no: u64) -> String {
    format!("c{msg_no}")
}

/// The message number in a `client_msg_id` the tool made; `None` for anything else.
pub fn msg_no_of(client_msg_id: &[u8]) -> Option<u64> {
    let digits = client_msg_id.strip_prefix(b"c")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    send_ns: u64,
    echo_seq: Option<u64>,
    ack_seq: Option<u64>,
}

/// What an ack turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The first ack of a message sent at `send_ns` (nanoseconds since the tool's epoch).
    First { send_ns: u64 },
    /// A second ack of the same message.
    Duplicate,
    /// An ack for a `client_msg_id` this sender never sent.
    Unknown,
}

/// Counts kept by an [`AckTracker`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckCounts {
    /// First acks.
    pub acked: u64,
    pub duplicate: u64,
    pub unknown: u64,
    /// Ack and echo of the same message disagree on `seq`.
    pub seq_mismatch: u64,
    /// Echoes that were not the first for their message (the delivery checker counts them
    /// too, as duplicates).
    pub duplicate_echo: u64,
}

/// What was never settled when the sender stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsettled {
    /// Echoed (so stored and delivered) but never acknowledged.
    pub echoed_not_acked: u64,
    /// Acknowledged but the echo never came.
    pub acked_not_echoed: u64,
    /// Neither: lost, or answered by an `error` (which names no `client_msg_id`).
    pub unanswered: u64,
}

#[derive(Debug, Default)]
pub struct AckTracker {
    pending: HashMap<u64, Pending>,
    /// Message numbers below this were sent.
    sent: u64,
    pub counts: AckCounts,
}

impl AckTracker {
    pub fn new() -> AckTracker {
        AckTracker::default()
    }

    /// Message `msg_no` (the next one) is about to be sent at `send_ns`.
    pub fn sent(&mut self, msg_no: u64, send_ns: u64) {
        self.sent = self.sent.max(msg_no + 1);
        self.pending.insert(
            msg_no,
            Pending {
                send_ns,
                echo_seq: None,
                ack_seq: None,
            },
        );
    }

    /// The sender's own `chat` came back with `seq`.
    pub fn echo(&mut self, msg_no: u64, seq: u64) {
        let Some(p) = self.pending.get_mut(&msg_no) else {
            // Settled before, or never sent: either way not the first echo of a live message.
            self.counts.duplicate_echo += 1;
            return;
        };
        if p.echo_seq.is_some() {
            self.counts.duplicate_echo += 1;
            return;
        }
        p.echo_seq = Some(seq);
        self.settle(msg_no);
    }

    /// An `ack` for `msg_no` with `seq` came back.
    pub fn ack(&mut self, msg_no: u64, seq: u64) -> AckOutcome {
        let Some(p) = self.pending.get_mut(&msg_no) else {
            return if msg_no < self.sent {
                self.counts.duplicate += 1;
                AckOutcome::Duplicate
            } else {
                self.counts.unknown += 1;
                AckOutcome::Unknown
            };
        };
        if p.ack_seq.is_some() {
            self.counts.duplicate += 1;
            return AckOutcome::Duplicate;
        }
        p.ack_seq = Some(seq);
        let send_ns = p.send_ns;
        self.counts.acked += 1;
        self.settle(msg_no);
        AckOutcome::First { send_ns }
    }

    /// Drops the message once it has both its echo and its ack, checking their seqs.
    fn settle(&mut self, msg_no: u64) {
        if let Some(&Pending {
            echo_seq: Some(e),
            ack_seq: Some(a),
            ..
        }) = self.pending.get(&msg_no)
        {
            if e != a {
                self.counts.seq_mismatch += 1;
            }
            self.pending.remove(&msg_no);
        }
    }

    /// What is still open.
    pub fn unsettled(&self) -> Unsettled {
        let mut u = Unsettled::default();
        for p in self.pending.values() {
            match (p.echo_seq, p.ack_seq) {
                (Some(_), None) => u.echoed_not_acked += 1,
                (None, Some(_)) => u.acked_not_echoed += 1,
                (None, None) => u.unanswered += 1,
                (Some(_), Some(_)) => {}
            }
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_round_trip() {
        for n in [0, 7, 123_456, u64::MAX] {
            assert_eq!(msg_no_of(client_msg_id(n).as_bytes()), Some(n));
        }
        for bad in [&b""[..], b"c", b"7", b"cx", b"c1x", b"d1", b"c-1"] {
            assert_eq!(msg_no_of(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ack_and_echo_settle_in_either_order() {
        let mut t = AckTracker::new();
        t.sent(0, 100);
        t.sent(1, 200);
        // Echo first, then ack.
        t.echo(0, 41);
        assert_eq!(t.ack(0, 41), AckOutcome::First { send_ns: 100 });
        // Ack first, then echo.
        assert_eq!(t.ack(1, 42), AckOutcome::First { send_ns: 200 });
        t.echo(1, 42);
        assert_eq!(t.unsettled(), Unsettled::default());
        assert_eq!(
            t.counts,
            AckCounts {
                acked: 2,
                ..AckCounts::default()
            }
        );
        assert!(t.pending.is_empty());
    }

    #[test]
    fn duplicates_unknowns_and_mismatches_are_counted() {
        let mut t = AckTracker::new();
        t.sent(0, 1);
        t.sent(1, 2);
        assert_eq!(t.ack(0, 5), AckOutcome::First { send_ns: 1 });
        // A second ack before the echo, and one after the message settled.
        assert_eq!(t.ack(0, 5), AckOutcome::Duplicate);
        t.echo(0, 5);
        assert_eq!(t.ack(0, 5), AckOutcome::Duplicate);
        // Never sent.
        assert_eq!(t.ack(9, 7), AckOutcome::Unknown);
        // Ack and echo disagree.
        t.echo(1, 6);
        assert_eq!(t.ack(1, 8), AckOutcome::First { send_ns: 2 });
        t.echo(1, 6);
        assert_eq!(
            t.counts,
            AckCounts {
                acked: 2,
                duplicate: 2,
                unknown: 1,
                seq_mismatch: 1,
                duplicate_echo: 1,
            }
        );
    }

    #[test]
    fn unsettled_messages_are_sorted_by_what_they_miss() {
        let mut t = AckTracker::new();
        for n in 0..4 {
            t.sent(n, n);
        }
        t.echo(0, 1);
        t.ack(1, 2);
        t.echo(3, 4);
        t.ack(3, 4);
        assert_eq!(
            t.unsettled(),
            Unsettled {
                echoed_not_acked: 1,
                acked_not_echoed: 1,
                unanswered: 1,
            }
        );
    }
}
