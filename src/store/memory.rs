//! The memory-only history store, for tests and throwaway runs.
//!
//! It keeps the newest `keep` messages of at most `max_rooms` rooms. When a new room would
//! pass that count, the room written least recently is forgotten, seq included: memory stays
//! bounded however many rooms are ever used, at the price that a forgotten room starts again
//! at seq 1. Nothing survives a restart. Use the durable store where that matters.

use std::collections::{HashMap, VecDeque};

use super::{HistoryStore, RoomSnapshot, StoreError};
use crate::ids::{RoomId, Seq};
use crate::server::room::HistoryEntry;

#[derive(Debug)]
struct RoomLog {
    last_seq: Seq,
    /// Oldest first, at most `keep` entries.
    entries: VecDeque<HistoryEntry>,
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
}

impl MemoryStore {
    pub fn new(keep: usize, max_rooms: usize) -> Self {
        MemoryStore {
            rooms: HashMap::new(),
            keep,
            max_rooms: max_rooms.max(1),
            clock: 0,
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

impl HistoryStore for MemoryStore {
    fn load(&mut self, room: &RoomId, keep: usize) -> Result<RoomSnapshot, StoreError> {
        Ok(match self.rooms.get(room) {
            None => RoomSnapshot::default(),
            Some(log) => RoomSnapshot {
                last_seq: log.last_seq,
                recent: log
                    .entries
                    .iter()
                    .skip(log.entries.len().saturating_sub(keep))
                    .cloned()
                    .collect(),
            },
        })
    }

    fn append(&mut self, room: &RoomId, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.clock += 1;
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.max_rooms {
            self.evict_one();
        }
        let log = self.rooms.entry(room.clone()).or_insert_with(|| RoomLog {
            last_seq: Seq(0),
            entries: VecDeque::new(),
            last_write: 0,
        });
        log.last_seq = entry.seq;
        log.last_write = self.clock;
        log.entries.push_back(entry.clone());
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
    ) -> Result<(Vec<HistoryEntry>, bool), StoreError> {
        let Some(log) = self.rooms.get(room) else {
            return Ok((Vec::new(), false));
        };
        let end = match before {
            Some(b) => log.entries.partition_point(|e| e.seq < b),
            None => log.entries.len(),
        };
        let start = end.saturating_sub(limit);
        Ok((log.entries.range(start..end).cloned().collect(), start > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    fn entry(seq: u64) -> HistoryEntry {
        HistoryEntry {
            seq: Seq(seq),
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    #[test]
    fn keeps_the_newest_and_the_seq() {
        let mut store = MemoryStore::new(3, 10);
        let r = room("r");
        for seq in 1..=5 {
            store.append(&r, &entry(seq)).unwrap();
        }
        let snap = store.load(&r, 2).unwrap();
        assert_eq!(snap.last_seq, Seq(5));
        assert_eq!(snap.recent, vec![entry(4), entry(5)]);
        let (page, more) = store.page_before(&r, Some(Seq(5)), 10).unwrap();
        assert_eq!(page, vec![entry(3), entry(4)]);
        assert!(!more);
        assert_eq!(store.load(&room("never"), 5).unwrap().last_seq, Seq(0));
    }

    #[test]
    fn forgets_the_least_recently_written_room_past_the_cap() {
        let mut store = MemoryStore::new(3, 2);
        store.append(&room("a"), &entry(1)).unwrap();
        store.append(&room("b"), &entry(1)).unwrap();
        store.append(&room("a"), &entry(2)).unwrap();
        store.append(&room("c"), &entry(1)).unwrap();
        assert_eq!(store.room_count(), 2);
        assert_eq!(store.load(&room("b"), 3).unwrap().last_seq, Seq(0));
        assert_eq!(store.load(&room("a"), 3).unwrap().last_seq, Seq(2));
    }
}
