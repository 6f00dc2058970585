//! Cluster mode (`--cluster`): chats reach `ChatServer` from the cluster's channel
//! ([`crate::cluster::subscriber`]), whichever node stored them, and are delivered here in
//! seq order per room, each exactly once.
//!
//! - A seq at or below the room's newest is a duplicate (already delivered, or covered by the
//!   read a join was answered from): dropped.
//! - The next seq is delivered at once.
//! - A later seq means the channel lost something: it is held, and the gap is filled from
//!   the room's stream (a `since` read tagged `Tag::Fill`) before anything later is
//!   delivered. What the stream no longer has is reported to the room's members as a
//!   `history_gap` error, so they can reload history; delivery then goes on.
//! - A room with a join waiting for its store read holds what arrives for it, and the join
//!   delivers what its read did not cover.
//! - When the subscription comes back after a loss, every live room is filled the same way.

use std::collections::BTreeMap;

use super::ChatServer;
use super::room::HistoryEntry;
use crate::ids::{RoomId, Seq};
use crate::protocol::{ErrorCode, Frame, error_frame};
use crate::store::{Loaded, Op, Read, Tag};

/// Chats held for one room while its gap is filled, or its join's read is on its way; past
/// it the oldest are dropped and the members told of a gap.
const MAX_HELD: usize = 10_000;

/// A room's chats held back: their seqs come after a gap, or before the room is live.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub chats: BTreeMap<Seq, Frame>,
    /// A fill read is on its way.
    pub filling: bool,
    /// Joins whose store read for this (not yet live) room is on its way.
    pub joins: usize,
}

impl ChatServer {
    /// A chat from the cluster's channel.
    pub(super) fn published(&mut self, room_id: RoomId, seq: Seq, frame: Frame) {
        let Some(room) = self.rooms.get(&room_id) else {
            // Not live here: kept only for a join on its way.
            if let Some(held) = self.held.get_mut(&room_id)
                && held.joins > 0
            {
                hold(held, seq, frame);
            }
            return;
        };
        let last = room.last_seq();
        if seq <= last {
            return;
        }
        let waiting = self.held.get(&room_id).is_some_and(|h| !h.chats.is_empty());
        if seq == last.next() && !waiting {
            return self.deliver(&room_id, seq, frame);
        }
        let held = self.held.entry(room_id.clone()).or_default();
        hold(held, seq, frame);
        self.fill(&room_id);
    }

    /// Records and fans out one chat of a live room.
    fn deliver(&mut self, room_id: &RoomId, seq: Seq, frame: Frame) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.record(HistoryEntry {
            seq,
            frame: frame.clone(),
            // No age limit in a cluster (see `ServerLimits::from_config`).
            stored_ms: 0,
        });
        // Timed (`roomcast_fanout_seconds`) from here, its delivery's start on this node: the
        // append's round trip through Redis happened elsewhere, perhaps on another node.
        if self.fan_out(room_id, &frame, None) > 0 {
            self.fanouts.push(std::time::Instant::now());
        }
    }

    /// Asks the store for what follows the room's newest seq, unless a fill is on its way.
    fn fill(&mut self, room_id: &RoomId) {
        let Some(last) = self.rooms.get(room_id).map(|r| r.last_seq()) else {
            return;
        };
        let held = self.held.entry(room_id.clone()).or_default();
        if held.filling {
            return;
        }
        held.filling = true;
        let op = Op::Read {
            room: room_id.clone(),
            read: Read::Since {
                after: last,
                max: self.limits.recovery_max,
                // When the stream no longer has it all: its newest, to go on from after
                // the gap.
                fallback: self.limits.recovery_max,
            },
            tag: Tag::Fill,
        };
        self.metrics.store_read();
        if self.store.send(op).is_err() {
            held.filling = false;
        }
    }

    /// A fill read came back: deliver what it found, then what was held, in order.
    pub(super) fn filled(&mut self, room_id: RoomId, result: Result<Loaded, String>) {
        if let Some(held) = self.held.get_mut(&room_id) {
            held.filling = false;
        }
        if !self.rooms.contains_key(&room_id) {
            self.forget_held(&room_id);
            return;
        }
        match result {
            Ok(loaded) if loaded.recovered == Some(true) => {
                // Exactly what followed the room's newest seq, without holes: the first may
                // be well past it (a room's first seq in a dataset is its epoch's).
                for entry in loaded.entries {
                    let last = self.rooms.get(&room_id).map(|r| r.last_seq());
                    if last.is_some_and(|last| entry.seq > last) {
                        self.deliver(&room_id, entry.seq, entry.frame);
                    }
                }
            }
            Ok(loaded) => self.skip_gap(&room_id, loaded.entries),
            Err(e) => {
                // The store is failing: try again with the next chat that arrives.
                log::warn!("gap in room={room_id} not filled: {e}");
                return;
            }
        }
        self.release_held(&room_id);
    }

    /// Delivers the held chats that follow on, in order; if a gap remains, fills it.
    fn release_held(&mut self, room_id: &RoomId) {
        loop {
            let Some(last) = self.rooms.get(room_id).map(|r| r.last_seq()) else {
                return self.forget_held(room_id);
            };
            let Some(held) = self.held.get_mut(room_id) else {
                return;
            };
            // Drop what is already delivered.
            while held
                .chats
                .first_key_value()
                .is_some_and(|(s, _)| *s <= last)
            {
                held.chats.pop_first();
            }
            match held.chats.first_key_value() {
                Some((seq, _)) if *seq == last.next() => {
                    let (seq, frame) = held.chats.pop_first().expect("just seen");
                    self.deliver(room_id, seq, frame);
                }
                Some(_) => return self.fill(room_id),
                None => {
                    if !held.filling && held.joins == 0 {
                        self.held.remove(room_id);
                    }
                    return;
                }
            }
        }
    }

    /// The store no longer has all the room missed: tell its members which seqs are lost,
    /// then deliver what the stream still `kept` (its newest chats, oldest first) and go on
    /// with what is held.
    fn skip_gap(&mut self, room_id: &RoomId, kept: Vec<HistoryEntry>) {
        let Some(last) = self.rooms.get(room_id).map(|r| r.last_seq()) else {
            return;
        };
        let kept: Vec<HistoryEntry> = kept.into_iter().filter(|e| e.seq > last).collect();
        let first_held = self
            .held
            .get(room_id)
            .and_then(|h| h.chats.first_key_value().map(|(s, _)| *s));
        // The first seq still to be had: the stream's oldest kept, or else the oldest held.
        let Some(resume) = kept.first().map(|e| e.seq).or(first_held) else {
            return;
        };
        let from = last.next();
        if resume > from {
            let to = resume.0 - 1;
            log::warn!(
                "room={room_id} lost seqs {}..{to} from the cluster's channel and stream",
                from.0
            );
            let message = format!(
                "messages {}..{to} of this room could not be delivered; load the room's history to see what is still kept",
                from.0
            );
            let frame = error_frame(ErrorCode::HistoryGap, &message, Some(room_id));
            self.fan_out(room_id, &frame, None);
        }
        if kept.is_empty() {
            // Nothing kept after the gap: the oldest held chat comes next.
            if let Some((seq, frame)) = self.held.get_mut(room_id).and_then(|h| h.chats.pop_first())
            {
                self.deliver(room_id, seq, frame);
            }
        }
        for entry in kept {
            self.deliver(room_id, entry.seq, entry.frame);
        }
    }

    /// A join sends a store read for a room not live here: hold its chats meanwhile.
    pub(super) fn await_room(&mut self, room_id: &RoomId) {
        if self.cluster && !self.rooms.contains_key(room_id) {
            self.held.entry(room_id.clone()).or_default().joins += 1;
        }
    }

    /// A join's store read came back (and the join was handled): deliver what was held for
    /// the room after what the read covered.
    pub(super) fn room_awaited(&mut self, room_id: &RoomId) {
        let Some(held) = self.held.get_mut(room_id) else {
            return;
        };
        held.joins = held.joins.saturating_sub(1);
        if self.rooms.contains_key(room_id) {
            self.release_held(room_id);
        } else if held.joins == 0 && !held.filling {
            self.held.remove(room_id);
        }
    }

    fn forget_held(&mut self, room_id: &RoomId) {
        if let Some(held) = self.held.get(room_id)
            && held.joins == 0
            && !held.filling
        {
            self.held.remove(room_id);
        }
    }

    /// The channel subscription was lost or is back. Back, every live room catches up on
    /// what was published meanwhile.
    pub(super) fn subscribed(&mut self, up: bool) {
        if self.subscribed && !up {
            self.broker_reconnects += 1;
            self.metrics.broker_lost();
        }
        self.metrics.set_broker_up(up);
        self.subscribed = up;
        if up {
            self.greet_peers();
            let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
            for room in rooms {
                self.fill(&room);
            }
        }
    }
}

fn hold(held: &mut Held, seq: Seq, frame: Frame) {
    held.chats.insert(seq, frame);
    if held.chats.len() > MAX_HELD {
        held.chats.pop_first();
    }
}
