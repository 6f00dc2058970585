//! Where room history lives beyond ChatServer's in-memory window, behind one trait.
//!
//! `ChatServer` keeps each live room's newest messages in memory and calls the store to
//! record every new message, to load a room that comes back to life, and to read pages older
//! than its window. Only the memory implementation exists today; the durable SQLite one
//! plugs in behind the same trait.

mod memory;

pub use memory::MemoryStore;

use crate::ids::{RoomId, Seq};
use crate::server::room::HistoryEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store failure: {0}")]
    Backend(String),
}

/// What the store knows of a room when it is (re)activated.
#[derive(Debug, Default)]
pub struct RoomSnapshot {
    /// The newest seq ever handed out in the room (0: none).
    pub last_seq: Seq,
    /// The newest messages, oldest first, at most the number asked for.
    pub recent: Vec<HistoryEntry>,
}

/// History persistence. Calls are made from `ChatServer`'s thread and must be fast; a
/// backend that does I/O must do it elsewhere and answer from memory here.
pub trait HistoryStore: Send {
    /// The room's last seq and its newest `keep` messages.
    fn load(&mut self, room: &RoomId, keep: usize) -> Result<RoomSnapshot, StoreError>;

    /// Records one message; `entry.seq` is greater than every seq recorded before in `room`.
    fn append(&mut self, room: &RoomId, entry: &HistoryEntry) -> Result<(), StoreError>;

    /// Up to `limit` messages with seq below `before` (the newest when `None`), oldest first,
    /// and whether older ones exist.
    fn page_before(
        &mut self,
        room: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), StoreError>;
}
