//! The durable store: one SQLite file, in WAL mode.
//!
//! Durability is chosen with [`SyncMode`]:
//! - `full` (the default): every commit fsyncs the write-ahead log. A message acknowledged
//!   to its sender survives a process crash and a power loss.
//! - `normal`: commits reach the OS but are fsynced only at checkpoints. What was
//!   acknowledged survives a process crash (the OS still has it); a power loss can take the
//!   last commits back, never corrupt the file.
//!
//! Either way one commit covers a whole batch (see [`super::writer`]), so the fsync is paid
//! once per batch, not per message.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Backend, Original, Retention, StoreResult, StoredMessage, to_i64};
use crate::ids::{RoomId, Seq, UserId};
use crate::protocol::Frame;
use crate::server::room::HistoryEntry;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync at every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash.
    Normal,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rooms (
    room_id  TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    room_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    user_id       TEXT NOT NULL,
    client_msg_id TEXT,
    message_id    TEXT NOT NULL,
    ts_ms         INTEGER NOT NULL,
    frame         TEXT NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_resend
    ON messages (room_id, user_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS inbox (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    frame      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_user ON inbox (user_id, id);
";

pub struct SqliteStore {
    conn: Connection,
    /// Rooms whose last seq moved in the open transaction; written once at commit.
    dirty: HashMap<RoomId, Seq>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, and checks that it is a roomcast
    /// database that can be written.
    pub fn open(path: &Path, sync: SyncMode) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let what = || format!("cannot use {} as the history database", path.display());
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(what)?;
        conn.busy_timeout(Duration::from_secs(2))
            .with_context(what)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .with_context(what)?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "{}: journal mode {mode}",
            what()
        );
        let level = match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)
            .with_context(what)?;
        conn.execute_batch(SCHEMA).with_context(what)?;
        // Prove it can be written now rather than at the first message. An empty
        // transaction is not enough: on a read-only file in WAL mode `BEGIN IMMEDIATE`
        // succeeds and only the first write fails. So write a row (room "" cannot exist:
        // room names are 1-64 characters) and roll it back.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO rooms (room_id, last_seq) VALUES ('', 0);
             ROLLBACK;",
        )
        .with_context(what)?;
        log::info!(
            "history store: sqlite {} (synchronous={level})",
            path.display()
        );
        Ok(SqliteStore {
            conn,
            dirty: HashMap::new(),
        })
    }
}

fn entry(seq: i64, frame: String) -> HistoryEntry {
    HistoryEntry {
        seq: Seq(seq as u64),
        frame: Frame::from(frame),
    }
}

impl Backend for SqliteStore {
    fn begin(&mut self) -> StoreResult<()> {
        self.dirty.clear();
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn commit(&mut self) -> StoreResult<()> {
        {
            let mut up = self.conn.prepare_cached(
                "INSERT INTO rooms (room_id, last_seq) VALUES (?1, ?2)
                 ON CONFLICT (room_id) DO UPDATE SET last_seq = excluded.last_seq",
            )?;
            for (room, seq) in &self.dirty {
                up.execute(params![room.as_str(), seq.0 as i64])?;
            }
        }
        self.conn.execute_batch("COMMIT")?;
        self.dirty.clear();
        Ok(())
    }

    fn rollback(&mut self) {
        self.dirty.clear();
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            log::debug!("rollback: {e}");
        }
    }

    fn last_seq(&mut self, room: &RoomId) -> StoreResult<Seq> {
        if let Some(seq) = self.dirty.get(room) {
            return Ok(*seq);
        }
        let seq: Option<i64> = self
            .conn
            .prepare_cached("SELECT last_seq FROM rooms WHERE room_id = ?1")?
            .query_row([room.as_str()], |r| r.get(0))
            .optional()?;
        Ok(Seq(seq.unwrap_or(0) as u64))
    }

    fn find_original(
        &mut self,
        room: &RoomId,
        user: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Original>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, message_id, frame FROM messages
                 WHERE room_id = ?1 AND user_id = ?2 AND client_msg_id = ?3",
            )?
            .query_row(params![room.as_str(), user.as_str(), client_msg_id], |r| {
                Ok(Original {
                    seq: Seq(r.get::<_, i64>(0)? as u64),
                    message_id: r.get(1)?,
                    frame: Frame::from(r.get::<_, String>(2)?),
                })
            })
            .optional()?)
    }

    fn insert(&mut self, m: &StoredMessage) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO messages
                 (room_id, seq, user_id, client_msg_id, message_id, ts_ms, frame)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                m.room.as_str(),
                m.seq.0 as i64,
                m.user.as_str(),
                m.client_msg_id,
                m.message_id,
                m.ts_ms,
                &*m.frame,
            ])?;
        self.dirty.insert(m.room.clone(), m.seq);
        Ok(())
    }

    fn page_before(
        &mut self,
        room: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, bool)> {
        let before = before.map_or(i64::MAX, |s| to_i64(s.0));
        let mut page = self
            .conn
            .prepare_cached(
                "SELECT seq, frame FROM messages WHERE room_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3",
            )?
            .query_map(params![room.as_str(), before, limit as i64 + 1], |r| {
                Ok(entry(r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let more = page.len() > limit;
        page.truncate(limit);
        page.reverse();
        Ok((page, more))
    }

    fn since(
        &mut self,
        room: &RoomId,
        after: Seq,
        max: usize,
    ) -> StoreResult<Option<Vec<HistoryEntry>>> {
        let last = self.last_seq(room)?;
        if last <= after {
            return Ok(Some(Vec::new()));
        }
        // Every seq in (after, last] must still be there, and not too many of them.
        if last.0 - after.0 > max as u64 {
            return Ok(None);
        }
        let entries = self
            .conn
            .prepare_cached(
                "SELECT seq, frame FROM messages WHERE room_id = ?1 AND seq > ?2 ORDER BY seq",
            )?
            .query_map(params![room.as_str(), to_i64(after.0)], |r| {
                Ok(entry(r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let complete = entries.len() as u64 == last.0 - after.0
            && entries.first().is_some_and(|e| e.seq == after.next());
        Ok(complete.then_some(entries))
    }

    fn inbox_put(
        &mut self,
        user: &UserId,
        frame: &Frame,
        expires_ms: i64,
        max: usize,
    ) -> StoreResult<()> {
        self.conn
            .prepare_cached("INSERT INTO inbox (user_id, expires_ms, frame) VALUES (?1, ?2, ?3)")?
            .execute(params![user.as_str(), expires_ms, &**frame])?;
        self.conn
            .prepare_cached(
                "DELETE FROM inbox WHERE user_id = ?1 AND id NOT IN
                 (SELECT id FROM inbox WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2)",
            )?
            .execute(params![user.as_str(), max as i64])?;
        Ok(())
    }

    fn inbox_take(&mut self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Frame>> {
        let frames = self
            .conn
            .prepare_cached(
                "SELECT frame FROM inbox WHERE user_id = ?1 AND expires_ms > ?2 ORDER BY id",
            )?
            .query_map(params![user.as_str(), now_ms], |r| {
                Ok(Frame::from(r.get::<_, String>(0)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        self.conn
            .prepare_cached("DELETE FROM inbox WHERE user_id = ?1")?
            .execute([user.as_str()])?;
        Ok(frames)
    }

    fn prune(
        &mut self,
        policy: &Retention,
        now_ms: i64,
        written: &[RoomId],
    ) -> StoreResult<(u64, u64)> {
        let mut messages = 0;
        if policy.max_messages > 0 {
            // One primary-key range per room written since the last pass: the cost follows
            // the traffic, not the size of the table.
            for room in written {
                let keep_from =
                    to_i64(self.last_seq(room)?.0).saturating_sub(to_i64(policy.max_messages));
                if keep_from > 0 {
                    messages += self
                        .conn
                        .prepare_cached("DELETE FROM messages WHERE room_id = ?1 AND seq <= ?2")?
                        .execute(params![room.as_str(), keep_from])?
                        as u64;
                }
            }
        }
        if policy.max_age_ms > 0 {
            let cutoff = now_ms.saturating_sub(to_i64(policy.max_age_ms));
            messages += self
                .conn
                .execute("DELETE FROM messages WHERE ts_ms < ?1", [cutoff])?
                as u64;
        }
        let notifications =
            self.conn
                .execute("DELETE FROM inbox WHERE expires_ms <= ?1", [now_ms])? as u64;
        Ok((messages, notifications))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Clock;

    fn msg(seq: u64, cmid: Option<&str>) -> StoredMessage {
        StoredMessage {
            room: RoomId::parse("r").unwrap(),
            seq: Seq(seq),
            user: UserId::parse("u").unwrap(),
            client_msg_id: cmid.map(str::to_owned),
            message_id: format!("m{seq}"),
            ts_ms: seq as i64,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    #[test]
    fn survives_reopening_and_keeps_the_seq() {
        let dir = tempdir();
        let path = dir.join("sub/roomcast.db");
        let room = RoomId::parse("r").unwrap();
        {
            let mut s = SqliteStore::open(&path, SyncMode::Normal).unwrap();
            s.begin().unwrap();
            for seq in 1..=5 {
                s.insert(&msg(seq, Some(&format!("c{seq}")))).unwrap();
            }
            assert_eq!(s.last_seq(&room).unwrap(), Seq(5));
            s.commit().unwrap();
            // A rolled-back write leaves nothing behind.
            s.begin().unwrap();
            s.insert(&msg(6, None)).unwrap();
            s.rollback();
        }
        let mut s = SqliteStore::open(&path, SyncMode::Full).unwrap();
        assert_eq!(s.last_seq(&room).unwrap(), Seq(5));
        let (page, more) = s.page_before(&room, Some(Seq(5)), 2).unwrap();
        assert_eq!(
            (page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), more),
            (vec![3, 4], true)
        );
        let since = s.since(&room, Seq(3), 10).unwrap().unwrap();
        assert_eq!(since.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(s.since(&room, Seq(0), 2).unwrap(), None);
        let u = UserId::parse("u").unwrap();
        let original = s.find_original(&room, &u, "c2").unwrap().unwrap();
        assert_eq!((original.seq, original.message_id.as_str()), (Seq(2), "m2"));

        s.begin().unwrap();
        let policy = Retention {
            max_messages: 3,
            max_age_ms: 0,
            inbox_max: 2,
            inbox_ttl_ms: 0,
            clock: Clock::System,
        };
        // Only the rooms written since the last pass are looked at.
        assert_eq!(s.prune(&policy, 0, &[]).unwrap(), (0, 0));
        assert_eq!(
            s.prune(&policy, 0, std::slice::from_ref(&room)).unwrap(),
            (2, 0)
        );
        s.commit().unwrap();
        assert_eq!(s.since(&room, Seq(1), 10).unwrap(), None);
        assert_eq!(s.last_seq(&room).unwrap(), Seq(5));

        // By age, in every room whether written or not: ts_ms is the seq here, so at time
        // 10 with a limit of 6 ms, seqs below 4 go (3 is left after the count pass).
        let by_age = Retention {
            max_messages: 0,
            max_age_ms: 6,
            ..policy
        };
        s.begin().unwrap();
        assert_eq!(s.prune(&by_age, 10, &[]).unwrap(), (1, 0));
        s.commit().unwrap();
        let (page, more) = s.page_before(&room, None, 10).unwrap();
        assert_eq!(
            (page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), more),
            (vec![4, 5], false)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn inbox_keeps_the_newest_and_hands_them_over_once() {
        let dir = tempdir();
        let mut s = SqliteStore::open(&dir.join("db"), SyncMode::Normal).unwrap();
        let u = UserId::parse("u").unwrap();
        s.begin().unwrap();
        for (i, expires) in [(1, 100), (2, 100), (3, 5), (4, 100)] {
            s.inbox_put(&u, &Frame::from(format!("n{i}")), expires, 3)
                .unwrap();
        }
        s.commit().unwrap();
        assert_eq!(
            s.inbox_take(&u, 10).unwrap(),
            [Frame::from("n2"), Frame::from("n4")]
        );
        assert!(s.inbox_take(&u, 10).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempdir();
        let path = dir.join("junk.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = SqliteStore::open(&path, SyncMode::Full).err().unwrap();
        assert!(format!("{err:#}").contains("not a database"), "{err:#}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-sqlite-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
