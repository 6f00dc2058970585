//! Durable history, sequencing and the offline inbox.
//!
//! `ChatServer` sends [`Op`]s to the *writer* ([`writer`]), which works through them in
//! arrival order and answers with [`Event`]s, batched. The writer is the *sequencer*: it
//! hands out each room's next `seq` as it stores the message, checks `client_msg_id`s for
//! resends, and commits many messages in one transaction (group commit). Only after the
//! commit does `ChatServer` hear of a message, and only then does it deliver it and
//! acknowledge it, so nothing is seen or acknowledged that a crash could take back, and a
//! `seq` is never handed out twice.
//!
//! Where the writer runs depends on whether its work is short ([`StoreHandle`]): a store
//! that fsyncs every commit (SQLite with `--sync full`, [`Backend::commit_waits`]) or has an
//! age limit to apply (a scan of the table) gets a thread of its own, so `ChatServer` never
//! waits for the disk; otherwise (the default `--sync normal`, memory) it runs in line, on
//! `ChatServer`'s thread, each time `ChatServer` hands its gathered frames over.
//!
//! Reads travel the same queue, so a read sees every write sent before it and none sent
//! after: that is what lets a joining session get "history up to seq N" from the store and
//! "everything after N" live, with no gap and no duplicate.
//!
//! The backends ([`Backend`]) are SQLite ([`SqliteStore`], the default) and memory
//! ([`MemoryStore`], for tests and throwaway runs). They only store and look up; the
//! sequencing rules live in [`writer`], once.

mod clock;
mod memory;
mod sqlite;
pub mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

pub use clock::{Clock, ManualClock};
pub use memory::MemoryStore;
pub use sqlite::{SqliteStore, SyncMode};
pub use writer::StoreHandle;

use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::Frame;
use crate::server::room::HistoryEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store failure: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which store to use: `memory`, or `sqlite:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Memory,
    Sqlite(PathBuf),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "memory" => Ok(StoreSpec::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreSpec::Sqlite(path.into())),
            _ => Err(format!("'{s}': expected 'memory' or 'sqlite:PATH'")),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
        }
    }
}

/// How long history and the inbox are kept, and the clock that measures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room (0: no limit).
    pub max_messages: u64,
    /// Milliseconds a message is kept (0: no limit).
    pub max_age_ms: u64,
    /// Notifications kept per offline user; the oldest go first.
    pub inbox_max: usize,
    /// Milliseconds a stored notification waits for its user.
    pub inbox_ttl_ms: u64,
    /// What "now" is for expiry, age and `ts_ms`: the system clock but in tests.
    pub clock: Clock,
}

/// One chat message as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub room: RoomId,
    pub seq: Seq,
    pub user: UserId,
    pub client_msg_id: Option<String>,
    pub message_id: String,
    /// Unix milliseconds, for age-based retention.
    pub ts_ms: i64,
    /// The encoded `chat` frame, exactly as it was delivered.
    pub frame: Frame,
}

/// An earlier message found under the same (room, user, client_msg_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub seq: Seq,
    pub message_id: String,
    pub frame: Frame,
}

/// What a backend does. Every call runs on the store's thread (see [`StoreHandle`]).
pub trait Backend: Send + 'static {
    /// Whether a commit waits for the disk (an fsync). Such a backend gets a thread of its
    /// own; one whose commits return at once runs in line on `ChatServer`'s thread.
    fn commit_waits(&self) -> bool;
    /// Starts the transaction that the following writes join.
    fn begin(&mut self) -> StoreResult<()>;
    /// Makes the writes since `begin` durable (as durable as the backend is).
    fn commit(&mut self) -> StoreResult<()>;
    /// Drops the writes since `begin`.
    fn rollback(&mut self);

    /// The newest seq ever handed out in `room` (0: none), pruned messages included.
    fn last_seq(&mut self, room: &RoomId) -> StoreResult<Seq>;
    /// The message stored under this (room, user, client_msg_id), if any.
    fn find_original(
        &mut self,
        room: &RoomId,
        user: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Original>>;
    /// Stores a message whose seq is `last_seq(room) + 1`, and moves `last_seq` to it.
    fn insert(&mut self, message: &StoredMessage) -> StoreResult<()>;

    /// Up to `limit` messages with seq below `before` (below infinity when `None`), oldest
    /// first, and whether older ones exist.
    fn page_before(
        &mut self,
        room: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, bool)>;
    /// The messages with seq above `after`, oldest first, or `None` when some of them are no
    /// longer kept or there are more than `max`.
    fn since(
        &mut self,
        room: &RoomId,
        after: Seq,
        max: usize,
    ) -> StoreResult<Option<Vec<HistoryEntry>>>;

    /// Keeps a notification for `user` until `expires_ms`, dropping their oldest beyond `max`.
    fn inbox_put(
        &mut self,
        user: &UserId,
        frame: &Frame,
        expires_ms: i64,
        max: usize,
    ) -> StoreResult<()>;
    /// Removes and returns `user`'s stored notifications that have not expired, oldest first.
    fn inbox_take(&mut self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Frame>>;

    /// Every room with stored messages: the first retention pass after a start looks at all
    /// of them, so that a count limit lowered since the last run applies to rooms that stay
    /// quiet too. A store that starts empty has none.
    fn rooms(&mut self) -> StoreResult<Vec<RoomId>> {
        Ok(Vec::new())
    }

    /// Applies the retention policy. The count limit needs checking only in `written`, the
    /// rooms written since the last pass; the age limit applies to every room. A pass is
    /// bounded ([`PRUNE_ROWS`] rows for the count limit): rooms it did not finish are in
    /// [`Pruned::unfinished`], for a next pass soon.
    fn prune(&mut self, policy: &Retention, now_ms: i64, written: &[RoomId])
    -> StoreResult<Pruned>;
}

/// Most messages one retention pass deletes for the count limit: a pass holds the writer
/// (in line, `ChatServer` itself), and deleting costs ~5-20 µs a row (two B-trees).
pub const PRUNE_ROWS: usize = 500;

/// What a retention pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub messages: u64,
    pub notifications: u64,
    /// Rooms of `written` still over the count limit (the pass reached [`PRUNE_ROWS`]).
    pub unfinished: Vec<RoomId>,
}

/// Who is waiting for the outcome of an [`Op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// A WebSocket session.
    Session(SessionId),
    /// An HTTP request waiting in `ChatServer` under this number.
    Request(u64),
    /// `ChatServer` itself, filling a gap in a room's live messages (cluster mode).
    Fill,
}

/// What to read from a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The newest `n` messages (a join without `since_seq`).
    Recent(usize),
    /// Every message after `after`, at most `max` (a join with `since_seq`). When that cannot
    /// be answered, the newest `fallback` instead, with `recovered: false`.
    Since {
        after: Seq,
        max: usize,
        fallback: usize,
    },
    /// A page before a seq (the `history` message, the history API).
    Before { before: Option<Seq>, limit: usize },
}

/// A chat message to sequence and store.
#[derive(Debug)]
pub struct Append {
    pub room: RoomId,
    pub user: UserId,
    pub text: String,
    pub client_msg_id: Option<String>,
    pub tag: Tag,
    /// When `ChatServer` received it, for the fan-out time.
    pub received: Instant,
}

/// Work for the store thread.
#[derive(Debug)]
pub enum Op {
    Append(Append),
    Read {
        room: RoomId,
        read: Read,
        tag: Tag,
    },
    /// Keep a notification for users with no socket open.
    InboxPut {
        users: Vec<UserId>,
        frame: Frame,
        tag: Tag,
    },
    /// A notification socket opened: hand over what waits for its user.
    InboxTake {
        user: UserId,
        session: SessionId,
    },
}

/// What the store thread answers, in the order of the ops.
#[derive(Debug)]
pub enum Event {
    /// A message is committed with its seq.
    Stored(Stored),
    /// A message could not be stored: it gets no seq and no ack.
    NotStored {
        room: RoomId,
        client_msg_id: Option<String>,
        tag: Tag,
        error: String,
    },
    Loaded {
        room: RoomId,
        read: Read,
        tag: Tag,
        result: Result<Loaded, String>,
    },
    InboxStored {
        tag: Tag,
        users: Vec<UserId>,
        result: Result<(), String>,
    },
    InboxTaken {
        user: UserId,
        session: SessionId,
        frames: Vec<Frame>,
    },
    /// The store's health changed (sent on each change only).
    State(StoreState),
    /// Cluster mode: a chat committed by any node, as the cluster's channel carried it. Every
    /// node, the one that stored it included, delivers chats from these only, in seq order.
    Published {
        room: RoomId,
        seq: Seq,
        frame: Frame,
    },
    /// Cluster mode: the node's subscription to the cluster's channel was lost (`false`) or
    /// is back (`true`). Back, every live room's gap since its last seq must be filled.
    Subscribed(bool),
    /// Cluster mode: what another node says (presence, typing, private messages,
    /// notifications, kicks).
    Peer(crate::cluster::peers::PeerEvent),
}

/// How the store is doing, as `/health` and the metrics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreState {
    /// Its last batch committed.
    #[default]
    Ok,
    /// Its last batch failed; it goes on trying with the next one.
    Failing,
    /// The store thread failed for good (it panicked): every op is answered as failed at once,
    /// and the process shuts down so that a supervisor restarts it.
    Down,
}

impl StoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Failing => "failing",
            StoreState::Down => "down",
        }
    }
}

/// A committed message, or the original of a resend.
#[derive(Debug)]
pub struct Stored {
    pub room: RoomId,
    pub seq: Seq,
    pub message_id: String,
    pub frame: Frame,
    pub client_msg_id: Option<String>,
    pub tag: Tag,
    /// When `ChatServer` received it.
    pub received: Instant,
    /// When the store stored it: its `ts_ms` (0 in a cluster, which has no age limit).
    pub stored_ms: i64,
    /// It was a resend of a message stored before: nothing new was stored, and these are
    /// the original's seq, id and frame.
    pub duplicate: bool,
}

/// The answer to a [`Read`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The room's newest committed seq when the read ran.
    pub last_seq: Seq,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Older messages exist before `entries`.
    pub has_more: bool,
    /// For [`Read::Since`]: whether `entries` is exactly what followed `after`.
    pub recovered: Option<bool>,
}

/// Opens the backend `spec` names, creating the SQLite file and its folder if missing. Fails
/// when it cannot be opened, is not a database, or cannot be written.
pub fn open(spec: &StoreSpec, sync: SyncMode, keep: usize) -> anyhow::Result<Box<dyn Backend>> {
    Ok(match spec {
        StoreSpec::Memory => Box::new(MemoryStore::new(keep, MEMORY_MAX_ROOMS)),
        StoreSpec::Sqlite(path) => Box::new(SqliteStore::open(path, sync)?),
    })
}

/// Rooms the memory store keeps before forgetting the least recently written.
const MEMORY_MAX_ROOMS: usize = 10_000;

/// A seq, count or number of milliseconds as the store's `i64` (SQLite's integer),
/// saturating: a value past `i64::MAX` means "beyond anything stored", never a negative
/// number (a bare `as` cast turned `before_seq` 2^63 into "before seq -2^63", and a huge
/// retention limit into "delete everything").
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::parse("r").unwrap()
    }

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            room: room(),
            seq: Seq(seq),
            user: UserId::parse("u").unwrap(),
            client_msg_id: None,
            message_id: format!("m{seq}"),
            ts_ms: 1_000 + seq as i64,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    /// Runs `check` on both backends (SQLite on a fresh temp file), each holding seqs 1..=5
    /// of room `r`: the contract is one, so every case must come out the same.
    fn on_both_backends(check: impl Fn(&str, &mut dyn Backend)) {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-store-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let backends: [(&str, Box<dyn Backend>); 2] = [
            ("memory", Box::new(MemoryStore::new(100, 10))),
            (
                "sqlite",
                Box::new(SqliteStore::open(&dir.join("db"), SyncMode::Normal).unwrap()),
            ),
        ];
        for (name, mut backend) in backends {
            backend.begin().unwrap();
            for seq in 1..=5 {
                backend.insert(&message(seq)).unwrap();
            }
            backend.commit().unwrap();
            check(name, &mut *backend);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn seqs(page: &[HistoryEntry]) -> Vec<u64> {
        page.iter().map(|e| e.seq.0).collect()
    }

    /// "Before a seq past everything" is the newest page on both backends, up to and past
    /// 2^63 (where SQLite's i64 ends).
    #[test]
    fn a_page_before_a_huge_seq_is_the_newest_page_on_both_backends() {
        on_both_backends(|name, b| {
            for before in [6, 1 << 62, (1 << 63) - 1, 1 << 63, u64::MAX] {
                let (page, more) = b.page_before(&room(), Some(Seq(before)), 3).unwrap();
                assert_eq!(
                    (seqs(&page), more),
                    (vec![3, 4, 5], true),
                    "{name} {before}"
                );
            }
            let (page, more) = b.page_before(&room(), None, 3).unwrap();
            assert_eq!((seqs(&page), more), (vec![3, 4, 5], true), "{name} None");
            for after in [5, 1 << 63, u64::MAX] {
                let since = b.since(&room(), Seq(after), 10).unwrap();
                assert_eq!(since, Some(vec![]), "{name} since {after}");
            }
        });
    }

    /// Retention limits too large for an i64 mean "keep everything", not "delete all".
    #[test]
    fn huge_retention_limits_keep_everything_on_both_backends() {
        on_both_backends(|name, b| {
            let policy = Retention {
                max_messages: u64::MAX,
                max_age_ms: u64::MAX,
                inbox_max: 10,
                inbox_ttl_ms: u64::MAX,
                clock: Clock::System,
            };
            b.begin().unwrap();
            assert_eq!(
                b.prune(&policy, 10_000, std::slice::from_ref(&room()))
                    .unwrap(),
                Pruned::default(),
                "{name}"
            );
            b.commit().unwrap();
            let (page, _) = b.page_before(&room(), None, 10).unwrap();
            assert_eq!(seqs(&page), [1, 2, 3, 4, 5], "{name}");
        });
    }

    #[test]
    fn specs_parse() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!(
            "sqlite:./data/x.db".parse(),
            Ok(StoreSpec::Sqlite("./data/x.db".into()))
        );
        assert!("sqlite:".parse::<StoreSpec>().is_err());
        assert!("redis://x".parse::<StoreSpec>().is_err());
        assert_eq!(
            StoreSpec::Sqlite("a/b.db".into()).to_string(),
            "sqlite:a/b.db"
        );
    }
}
