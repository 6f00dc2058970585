//! The memory-only store, for tests and throwaway runs.
//!
//! It keeps the newest `keep` messages of at most `max_rooms` rooms. When a new room would
//! pass that count, the room written least recently is forgotten, seq included: memory stays
//! bounded however many rooms are ever used, at the price that a forgotten room starts again
//! at seq 1. Nothing survives a restart. Use the durable store where that matters.

use std::collections::{HashMap, VecDeque};

use super::{Backend, Original, Pruned, Retention, StoreResult, StoredMessage, to_i64};
use crate::ids::{RoomId, Seq, UserId};
use crate::protocol::Frame;
use crate::server::room::HistoryEntry;

#[derive(Debug)]
struct RoomLog {
    last_seq: Seq,
    /// Oldest first, at most `keep` entries.
    entries: VecDeque<StoredMessage>,
    /// Value of `MemoryStore::clock` at the last append, for eviction.
    last_write: u64,
}

#[derive(Debug)]
pub struct MemoryStore {
    rooms: HashMap<RoomId, RoomLog>,
    /// Messages kept per room.
    keep: usize,
    /// Rooms kept before the least recently written is forgotten.
    max_rooms: usize,
    /// Counts appends; orders rooms by recency without reading a clock.
    clock: u64,
    /// User -> (expiry in unix ms, notification), oldest first.
    inbox: HashMap<UserId, VecDeque<(i64, Frame)>>,
}

impl MemoryStore {
    pub fn new(keep: usize, max_rooms: usize) -> Self {
        MemoryStore {
            rooms: HashMap::new(),
            keep: keep.max(1),
            max_rooms: max_rooms.max(1),
            clock: 0,
            inbox: HashMap::new(),
        }
    }

    /// Rooms currently held.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn evict_one(&mut self) {
        if let Some(oldest) = self
            .rooms
            .iter()
            .min_by_key(|(_, log)| log.last_write)
            .map(|(id, _)| id.clone())
        {
            self.rooms.remove(&oldest);
        }
    }
}

fn entry(m: &StoredMessage) -> HistoryEntry {
    HistoryEntry {
        seq: m.seq,
        frame: m.frame.clone(),
        stored_ms: m.ts_ms,
    }
}

impl Backend for MemoryStore {
    fn commit_waits(&self) -> bool {
        false
    }

    fn rooms(&mut self) -> StoreResult<Vec<RoomId>> {
        Ok(self.rooms.keys().cloned().collect())
    }

    fn begin(&mut self) -> StoreResult<()> {
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        Ok(())
    }

    fn rollback(&mut self) {}

    fn last_seq(&mut self, room: &RoomId) -> StoreResult<Seq> {
        Ok(self.rooms.get(room).map_or(Seq(0), |log| log.last_seq))
    }

    fn find_original(
        &mut self,
        room: &RoomId,
        user: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Original>> {
        Ok(self.rooms.get(room).and_then(|log| {
            log.entries
                .iter()
                .rev()
                .find(|m| m.user == *user && m.client_msg_id.as_deref() == Some(client_msg_id))
                .map(|m| Original {
                    seq: m.seq,
                    message_id: m.message_id.clone(),
                    frame: m.frame.clone(),
                })
        }))
    }

    fn insert(&mut self, message: &StoredMessage) -> StoreResult<()> {
        self.clock += 1;
        if !self.rooms.contains_key(&message.room) && self.rooms.len() >= self.max_rooms {
            self.evict_one();
        }
        let log = self
            .rooms
            .entry(message.room.clone())
            .or_insert_with(|| RoomLog {
                last_seq: Seq(0),
                entries: VecDeque::new(),
                last_write: 0,
            });
        log.last_seq = message.seq;
        log.last_write = self.clock;
        log.entries.push_back(message.clone());
        if log.entries.len() > self.keep {
            log.entries.pop_front();
        }
        Ok(())
    }

    fn page_before(
        &mut self,
        room: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, bool)> {
        let Some(log) = self.rooms.get(room) else {
            return Ok((Vec::new(), false));
        };
        let end = match before {
            Some(b) => log.entries.partition_point(|e| e.seq < b),
            None => log.entries.len(),
        };
        let start = end.saturating_sub(limit);
        Ok((
            log.entries.range(start..end).map(entry).collect(),
            start > 0,
        ))
    }

    fn since(
        &mut self,
        room: &RoomId,
        after: Seq,
        max: usize,
    ) -> StoreResult<Option<Vec<HistoryEntry>>> {
        let Some(log) = self.rooms.get(room) else {
            return Ok((after == Seq(0)).then(Vec::new));
        };
        // Up to date (or ahead): nothing follows, as in SQLite; and `after.next()` below
        // cannot overflow.
        if after >= log.last_seq {
            return Ok(Some(Vec::new()));
        }
        let start = log.entries.partition_point(|e| e.seq <= after);
        let oldest_kept = log.entries.front().map_or(log.last_seq.next(), |m| m.seq);
        if oldest_kept > after.next() || log.entries.len() - start > max {
            return Ok(None);
        }
        Ok(Some(log.entries.range(start..).map(entry).collect()))
    }

    fn inbox_put(
        &mut self,
        user: &UserId,
        frame: &Frame,
        expires_ms: i64,
        max: usize,
    ) -> StoreResult<()> {
        let queue = self.inbox.entry(user.clone()).or_default();
        queue.push_back((expires_ms, frame.clone()));
        while queue.len() > max {
            queue.pop_front();
        }
        Ok(())
    }

    fn inbox_take(&mut self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Frame>> {
        Ok(self
            .inbox
            .remove(user)
            .unwrap_or_default()
            .into_iter()
            .filter(|(expires, _)| *expires > now_ms)
            .map(|(_, frame)| frame)
            .collect())
    }

    fn prune(
        &mut self,
        policy: &Retention,
        now_ms: i64,
        _written: &[RoomId],
    ) -> StoreResult<Pruned> {
        // Every room: in memory the walk costs little, and rooms are few (`max_rooms`).
        let mut messages = 0;
        for log in self.rooms.values_mut() {
            let before = log.entries.len();
            if policy.max_messages > 0 {
                while log.entries.len() as u64 > policy.max_messages {
                    log.entries.pop_front();
                }
            }
            if policy.max_age_ms > 0 {
                let cutoff = now_ms.saturating_sub(to_i64(policy.max_age_ms));
                while log.entries.front().is_some_and(|m| m.ts_ms < cutoff) {
                    log.entries.pop_front();
                }
            }
            messages += (before - log.entries.len()) as u64;
        }
        let mut notifications = 0;
        self.inbox.retain(|_, queue| {
            let before = queue.len();
            queue.retain(|(expires, _)| *expires > now_ms);
            notifications += (before - queue.len()) as u64;
            !queue.is_empty()
        });
        Ok(Pruned {
            messages,
            notifications,
            unfinished: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Clock;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    fn msg(r: &str, seq: u64, cmid: Option<&str>) -> StoredMessage {
        StoredMessage {
            room: room(r),
            seq: Seq(seq),
            user: UserId::parse("u").unwrap(),
            client_msg_id: cmid.map(str::to_owned),
            message_id: format!("m{seq}"),
            ts_ms: seq as i64,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    fn seqs(entries: &[HistoryEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq.0).collect()
    }

    #[test]
    fn keeps_the_newest_pages_and_recovers_within_the_window() {
        let mut store = MemoryStore::new(3, 10);
        let r = room("r");
        for seq in 1..=5 {
            store.insert(&msg("r", seq, None)).unwrap();
        }
        assert_eq!(store.last_seq(&r).unwrap(), Seq(5));
        let (page, more) = store.page_before(&r, None, 2).unwrap();
        assert_eq!((seqs(&page), more), (vec![4, 5], true));
        let (page, more) = store.page_before(&r, Some(Seq(5)), 10).unwrap();
        assert_eq!((seqs(&page), more), (vec![3, 4], false));
        assert_eq!(
            store.since(&r, Seq(2), 10).unwrap().map(|e| seqs(&e)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(
            store.since(&r, Seq(5), 10).unwrap().map(|e| seqs(&e)),
            Some(vec![])
        );
        // Seq 2 is gone: what followed seq 1 cannot be given exactly.
        assert_eq!(store.since(&r, Seq(1), 10).unwrap(), None);
        assert_eq!(store.since(&r, Seq(2), 2).unwrap(), None);
        assert_eq!(store.last_seq(&room("never")).unwrap(), Seq(0));
        assert_eq!(
            store.since(&room("never"), Seq(0), 10).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn finds_resends_by_user_and_client_id() {
        let mut store = MemoryStore::new(10, 10);
        store.insert(&msg("r", 1, Some("c1"))).unwrap();
        let found = store
            .find_original(&room("r"), &UserId::parse("u").unwrap(), "c1")
            .unwrap();
        assert_eq!(
            found.map(|o| (o.seq, o.message_id)),
            Some((Seq(1), "m1".into()))
        );
        let other_user = UserId::parse("v").unwrap();
        assert!(
            store
                .find_original(&room("r"), &other_user, "c1")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn forgets_the_least_recently_written_room_past_the_cap() {
        let mut store = MemoryStore::new(3, 2);
        store.insert(&msg("a", 1, None)).unwrap();
        store.insert(&msg("b", 1, None)).unwrap();
        store.insert(&msg("a", 2, None)).unwrap();
        store.insert(&msg("c", 1, None)).unwrap();
        assert_eq!(store.room_count(), 2);
        assert_eq!(store.last_seq(&room("b")).unwrap(), Seq(0));
        assert_eq!(store.last_seq(&room("a")).unwrap(), Seq(2));
    }

    #[test]
    fn inbox_is_bounded_expires_and_is_taken_once() {
        let mut store = MemoryStore::new(3, 2);
        let u = UserId::parse("u").unwrap();
        for (i, expires) in [(1, 100), (2, 5), (3, 100), (4, 100)] {
            store
                .inbox_put(&u, &Frame::from(format!("n{i}")), expires, 3)
                .unwrap();
        }
        let taken = store.inbox_take(&u, 10).unwrap();
        assert_eq!(taken, vec![Frame::from("n3"), Frame::from("n4")]);
        assert!(store.inbox_take(&u, 10).unwrap().is_empty());
    }

    #[test]
    fn prunes_by_count_and_age() {
        let mut store = MemoryStore::new(100, 2);
        for seq in 1..=10 {
            store.insert(&msg("r", seq, None)).unwrap();
        }
        let policy = Retention {
            max_messages: 6,
            max_age_ms: 0,
            inbox_max: 10,
            inbox_ttl_ms: 10,
            clock: Clock::System,
        };
        assert_eq!(store.prune(&policy, 0, &[]).unwrap().messages, 4);
        let by_age = Retention {
            max_messages: 0,
            max_age_ms: 2,
            ..policy
        };
        // Messages older than ts 10 - 2 = 8 go.
        assert_eq!(store.prune(&by_age, 10, &[]).unwrap().messages, 3);
        let (page, _) = store.page_before(&room("r"), None, 100).unwrap();
        assert_eq!(seqs(&page), vec![8, 9, 10]);
        assert_eq!(store.last_seq(&room("r")).unwrap(), Seq(10));
    }
}
