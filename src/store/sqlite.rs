//! The durable store: one SQLite file, in WAL mode.
//!
//! Durability is chosen with [`SyncMode`]:
//! - `normal` (the default): a commit reaches the OS page cache and is not fsynced by itself;
//!   the checkpoint thread (below) fsyncs the write-ahead log at most [`CHECKPOINT_EVERY`]
//!   after it. A message acknowledged to its sender survives a process crash (the OS still
//!   has it); a power loss (or a kernel or VM crash) can take back the commits of the last
//!   [`CHECKPOINT_EVERY`] or so, never corrupt the file; their seqs are not handed out
//!   again (`mark_open`).
//! - `full`: every commit fsyncs the write-ahead log before anyone is told. An acknowledged
//!   message also survives a power loss.
//!
//! Either way one commit covers a whole batch (see [`super::writer`]), so an fsync is paid
//! once per batch, not per message.
//!
//! **Checkpoints are kept off the commit path.** SQLite's automatic checkpoint copies the
//! log into the database inside the commit that crosses 1,000 pages, and every message
//! behind that commit waits for it and its two fsyncs. Here the writer's connection has it
//! turned off, and a thread of its own (`roomcast-ckpt`, with its own connection) does the
//! work. With `normal`, every [`CHECKPOINT_EVERY`] it fsyncs the log (what bounds the
//! power-loss window), and once the log is past [`CATCH_UP_FRAMES`] it runs `PASSIVE`
//! checkpoints, which copy what they can without taking the writer's lock, so the writer
//! never waits for them. With `full` it checkpoints every [`SyncMode::checkpoint_every`]. The
//! log starts over by itself when a checkpoint has copied all of it before the next commit;
//! under steady writes the thread chases it with passes one behind the other until that
//! happens ([`catch_up`]). Starting over costs the writer an fsync of the log's new header
//! (SQLite's own, inside the commit): copying only past [`CATCH_UP_FRAMES`] keeps that to once
//! per that many frames. (Copying at every tick made a quiet room's every commit start the
//! log over, and so wait for that fsync like `full`.)
//! Under writes so heavy that this fails too, the writer bounds it: past [`WAL_MAX_FRAMES`]
//! frames it runs a `RESTART` checkpoint itself between two batches (a stall of one
//! checkpoint, paid only under heavy load).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Backend, Original, PRUNE_ROWS, Pruned, Retention, StoreResult, StoredMessage, to_i64};
use crate::ids::{RoomId, Seq, UserId};
use crate::protocol::Frame;
use crate::server::room::HistoryEntry;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync at every commit: survives power loss.
    Full,
    /// fsync within 100 ms of a commit, off the commit path: survives a process crash; a
    /// power loss can lose the last ~100 ms (`CHECKPOINT_EVERY`; also `--help`'s text).
    Normal,
}

/// How often the checkpoint thread runs with [`SyncMode::Normal`]: the longest a commit
/// waits (plus one fsync) before the log holding it is fsynced.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How often it runs with [`SyncMode::Full`], whose commits fsync the log themselves. Each
/// checkpoint flushes the disk twice, and a commit's fsync that comes during one waits
/// behind it: ten a second cost `full` its tail on a busy disk.
pub const CHECKPOINT_EVERY_FULL: Duration = Duration::from_secs(1);

/// Frames (pages) the write-ahead log may hold before the writer makes it start over
/// (about 40 MB with 4 KiB pages).
pub const WAL_MAX_FRAMES: i32 = 10_000;

/// The log file is cut back to this size when it starts over, so that a burst that grew it
/// does not keep the disk space.
const WAL_KEEP_BYTES: i64 = 64 << 20;

/// `rooms` holds a floor under a room's last seq, written only when the age limit deletes
/// messages (which can be a room's newest): a commit writes the message's page and nothing
/// else, and `last_seq` is the newest message's seq or the floor, whichever is higher.
/// (Before, every commit also rewrote the room's row: one page in two of each commit.)
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
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value NOT NULL
) WITHOUT ROWID;
";

/// How far every room's seqs jump after a power loss ([`SqliteStore::open`]): more than any
/// room can commit in the window that a power loss can take back (100 ms and one fsync).
pub const POWER_LOSS_SKIP: i64 = 1_000_000;

/// This boot of the machine, as Linux names it; `None` elsewhere.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

/// Records this run in `meta` (its boot, its `--sync`, not yet closed cleanly), and makes
/// that durable before any seq is handed out. If the last run used `normal` and did not
/// close cleanly, and the machine has booted since (`boot` differs), it ended in a power
/// loss or an OS crash, which can take back its last ~100 ms of commits after their seqs
/// were seen: then `seq_floor` is raised above every seq kept plus [`POWER_LOSS_SKIP`], so
/// that every room, new ones too, goes on above any seq handed out before. (A process crash
/// on the same boot loses nothing: the OS still had the log.) Returns the new floor, if
/// raised.
fn mark_open(
    conn: &mut Connection,
    sync: SyncMode,
    boot: Option<&str>,
) -> rusqlite::Result<Option<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let get = |key: &str| {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .optional()
    };
    use rusqlite::types::Value as V;
    let unclean = matches!(get("clean")?, Some(V::Integer(0)));
    let was_normal = matches!(get("sync")?, Some(V::Text(s)) if s == "NORMAL");
    let rebooted = match (get("boot_id")?, boot) {
        (Some(V::Text(last)), Some(now)) => last != now,
        _ => false,
    };
    let mut raised = None;
    if unclean && was_normal && rebooted {
        let floor: i64 = tx.query_row(
            "SELECT max(
                 coalesce((SELECT max(seq) FROM messages), 0),
                 coalesce((SELECT max(last_seq) FROM rooms), 0),
                 coalesce((SELECT value FROM meta WHERE key = 'seq_floor'), 0)) + ?1",
            [POWER_LOSS_SKIP],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_floor', ?1)",
            [floor],
        )?;
        raised = Some(floor);
    }
    let mut put = tx.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    put.execute(params!["boot_id", boot.unwrap_or("")])?;
    put.execute(params!["sync", sync.pragma()])?;
    put.execute(params!["clean", 0])?;
    drop(put);
    tx.commit()?;
    // Durable now, with nothing else on the file yet: the log copied and fsynced.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(raised)
}

pub struct SqliteStore {
    /// Declared first so that it stops (and runs its last checkpoint) before `conn` closes.
    _checkpointer: Checkpointer,
    conn: Connection,
    /// Frames in the write-ahead log after the last commit (SQLite's WAL hook says).
    wal_frames: Arc<AtomicI32>,
    sync: SyncMode,
}

/// Waits on a lock in steps of 100 µs, up to about 2 s. SQLite's own busy timeout sleeps
/// 1, 2, 5, 10 ms… between tries, which turns a lock held for 0.3 ms into a 1-3 ms stall.
fn busy_wait(tries: i32) -> bool {
    if tries >= 20_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(100));
    true
}

/// Opens a connection to the database at `path` in WAL mode, with `sync`'s `synchronous`
/// level and [`busy_wait`].
fn connect(path: &Path, sync: SyncMode, flags: OpenFlags) -> anyhow::Result<Connection> {
    let what = || format!("cannot use {} as the history database", path.display());
    let mut conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(what)?;
    conn.busy_handler(Some(busy_wait)).with_context(what)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .with_context(what)?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "{}: journal mode {mode}",
        what()
    );
    conn.pragma_update(None, "synchronous", sync.pragma())
        .with_context(what)?;
    Ok(conn)
}

impl SyncMode {
    /// How often the checkpoint thread runs.
    pub fn checkpoint_every(self) -> Duration {
        match self {
            SyncMode::Full => CHECKPOINT_EVERY_FULL,
            SyncMode::Normal => CHECKPOINT_EVERY,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

/// Past this many frames in the log, the checkpoint thread copies it into the database
/// (with `normal`; below it, it only fsyncs it), chasing it ([`catch_up`]).
const CATCH_UP_FRAMES: i32 = 1_000;
/// Passes one chase makes at most (with `--sync normal`; with `full`, whose commits fsync
/// themselves and would wait behind a chase's fsyncs, one pass only).
const CATCH_UP_PASSES: usize = 20;

/// One `PASSIVE` checkpoint, and, while the log is past [`CATCH_UP_FRAMES`], more at once
/// (at most `passes`) until one finds it as the last one left it. Under steady
/// writes every pass copies the log as it was when the pass began while commits land
/// behind it, so the log never starts over by itself, and it was left to the writer's
/// `RESTART` (a 2-3 ms stall of every chat, four times in a 12 s run of scenario B). A pass
/// right behind another copies only what landed during it; once one starts after a commit
/// and ends before the next, the whole log is in the database and the writer's next commit
/// starts it over, waiting for nothing.
fn catch_up(conn: &Connection, passes: usize) -> rusqlite::Result<()> {
    // A pass reports the log as it found it when it began: a pass that finds it as long as
    // the last one did saw no commit in between, so the log was all copied meanwhile.
    let mut last = None;
    for _ in 0..passes {
        let log = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i32>(1))?;
        log::trace!("checkpoint pass: log of {log} frames");
        if log <= CATCH_UP_FRAMES || last == Some(log) {
            break;
        }
        last = Some(log);
    }
    Ok(())
}

/// The checkpoint thread, on a connection of its own: every [`SyncMode::checkpoint_every`]
/// a `PASSIVE` checkpoint (chasing a long log, [`catch_up`]), or with `normal`, while the
/// log holds at most [`CATCH_UP_FRAMES`], an fsync of the log alone; and a last checkpoint
/// when the store closes.
struct Checkpointer {
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, sync: SyncMode, wal_frames: Arc<AtomicI32>) -> anyhow::Result<Self> {
        let conn = connect(path, sync, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let every = sync.checkpoint_every();
        // With `full` each commit fsyncs, and a chase's fsyncs would make them wait.
        let passes = match sync {
            SyncMode::Normal => CATCH_UP_PASSES,
            SyncMode::Full => 1,
        };
        let thread = std::thread::Builder::new()
            .name("roomcast-ckpt".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(every),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    let copy = last
                        || sync == SyncMode::Full
                        || wal_frames.load(Ordering::Relaxed) > CATCH_UP_FRAMES;
                    if !copy {
                        // Only the power-loss bound: the log's new frames to the disk.
                        if let Err(e) = std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
                            log::debug!("write-ahead log not synced: {e}");
                        }
                        continue;
                    }
                    match catch_up(&conn, passes) {
                        Ok(()) => {
                            if failing {
                                failing = false;
                                log::info!("checkpoints work again");
                            }
                        }
                        // The writer's bound on the log still holds (and fsyncs it).
                        Err(e) if !failing => {
                            failing = true;
                            log::warn!("checkpoint failed: {e}");
                        }
                        Err(_) => {}
                    }
                    if last {
                        break;
                    }
                }
            })
            .context("cannot start the checkpoint thread")?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, and checks that it is a roomcast
    /// database that can be written.
    pub fn open(path: &Path, sync: SyncMode) -> anyhow::Result<Self> {
        Self::open_on(path, sync, boot_id().as_deref())
    }

    /// [`Self::open`] on the machine's boot `boot` (the tests' stand-in for a reboot).
    fn open_on(path: &Path, sync: SyncMode, boot: Option<&str>) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let what = || format!("cannot use {} as the history database", path.display());
        let mut conn = connect(
            path,
            sync,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)
            .with_context(what)?;
        // No automatic checkpoint inside a commit: the checkpoint thread does them. (The
        // automatic checkpoint is a WAL hook; the one below takes its place and tells
        // `begin` how long the log is.)
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .with_context(what)?;
        let wal_frames = Arc::new(AtomicI32::new(0));
        let frames = Arc::clone(&wal_frames);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(pages, Ordering::Relaxed);
            Ok(())
        }))
        .with_context(what)?;
        conn.execute_batch(SCHEMA).with_context(what)?;
        // This also proves it can be written now rather than at the first message.
        if let Some(floor) = mark_open(&mut conn, sync, boot).with_context(what)? {
            log::warn!(
                "the last run did not stop and the machine restarted since (a power loss or \
                 an OS crash): its last ~100 ms of chats may be lost, so every room's seqs \
                 go on above {floor}"
            );
        }
        let checkpointer =
            Checkpointer::start(path, sync, Arc::clone(&wal_frames)).with_context(what)?;
        let every = sync.checkpoint_every().as_millis();
        let ticks = match sync {
            SyncMode::Normal => {
                format!("log fsynced every {every} ms, copied past {CATCH_UP_FRAMES} frames")
            }
            SyncMode::Full => format!("checkpoint every {every} ms"),
        };
        log::info!(
            "history store: sqlite {} (synchronous={}, {ticks})",
            path.display(),
            sync.pragma(),
        );
        Ok(SqliteStore {
            conn,
            wal_frames,
            sync,
            _checkpointer: checkpointer,
        })
    }
}

/// A store that closes marks the run clean ([`mark_open`]); its checkpoint thread's last
/// checkpoint (it stops after this) makes the mark durable. A store dropped in the middle
/// of a batch (a panic) leaves the run unclean, which only matters if the machine also
/// restarted.
impl Drop for SqliteStore {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            return;
        }
        let marked = self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', 1)",
            [],
        );
        if let Err(e) = marked {
            log::warn!("the history store could not record a clean stop: {e}");
        }
    }
}

impl SqliteStore {
    /// Copies the whole log into the database so that it starts over: it grew past
    /// [`WAL_MAX_FRAMES`] because the checkpoint thread never finished between two commits
    /// (or its checkpoints fail). Busy or failing, it is tried again before the next batch.
    fn restart_wal(&mut self) {
        let started = std::time::Instant::now();
        let restart = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get::<_, i32>(0)?, r.get::<_, i32>(1)?))
            });
        match restart {
            // Not busy: all of it is in the database, and the next commit starts it over.
            Ok((0, log)) => {
                self.wal_frames.store(0, Ordering::Relaxed);
                log::debug!(
                    "write-ahead log of {log} frames copied in {:?}",
                    started.elapsed()
                );
            }
            Ok(_) => log::debug!("write-ahead log busy, not copied yet"),
            Err(e) => log::debug!("write-ahead log not copied: {e}"),
        }
    }
}

fn entry(seq: i64, frame: String, stored_ms: i64) -> HistoryEntry {
    HistoryEntry {
        seq: Seq(seq as u64),
        frame: Frame::from(frame),
        stored_ms,
    }
}

impl Backend for SqliteStore {
    /// `full` fsyncs in every commit; `normal` writes to the OS page cache.
    fn commit_waits(&self) -> bool {
        self.sync == SyncMode::Full
    }

    fn begin(&mut self) -> StoreResult<()> {
        if self.wal_frames.load(Ordering::Relaxed) > WAL_MAX_FRAMES {
            self.restart_wal();
        }
        // Cached, as every statement of a batch is: `execute_batch` parses its text anew.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    fn rollback(&mut self) {
        let rolled_back = self
            .conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = rolled_back {
            log::debug!("rollback: {e}");
        }
    }

    /// The newest message's seq (one step down the primary key), the floor that the age
    /// limit left in `rooms` when it deleted a room's every message, or the floor of every
    /// room after a power loss ([`mark_open`]), whichever is highest.
    fn last_seq(&mut self, room: &RoomId) -> StoreResult<Seq> {
        let seq: i64 = self
            .conn
            .prepare_cached(
                "SELECT max(
                     coalesce((SELECT max(seq) FROM messages WHERE room_id = ?1), 0),
                     coalesce((SELECT last_seq FROM rooms WHERE room_id = ?1), 0),
                     coalesce((SELECT value FROM meta WHERE key = 'seq_floor'), 0))",
            )?
            .query_row([room.as_str()], |r| r.get(0))?;
        Ok(Seq(seq as u64))
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
                "SELECT seq, frame, ts_ms FROM messages WHERE room_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3",
            )?
            .query_map(params![room.as_str(), before, limit as i64 + 1], |r| {
                Ok(entry(r.get(0)?, r.get(1)?, r.get(2)?))
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
                "SELECT seq, frame, ts_ms FROM messages WHERE room_id = ?1 AND seq > ?2
                 ORDER BY seq",
            )?
            .query_map(params![room.as_str(), to_i64(after.0)], |r| {
                Ok(entry(r.get(0)?, r.get(1)?, r.get(2)?))
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

    fn rooms(&mut self) -> StoreResult<Vec<RoomId>> {
        let names = self
            .conn
            .prepare("SELECT DISTINCT room_id FROM messages")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        // Only roomcast writes the table, and only valid names.
        Ok(names.iter().filter_map(|n| RoomId::parse(n)).collect())
    }

    fn prune(
        &mut self,
        policy: &Retention,
        now_ms: i64,
        written: &[RoomId],
    ) -> StoreResult<Pruned> {
        let mut messages = 0;
        let mut unfinished = Vec::new();
        if policy.max_messages > 0 {
            // One primary-key range per room written since the last pass: the cost follows
            // the traffic, not the size of the table. At most `PRUNE_ROWS` rows in all; the
            // rooms left over go to the next pass.
            let mut budget = PRUNE_ROWS;
            for (i, room) in written.iter().enumerate() {
                if budget == 0 {
                    unfinished.extend_from_slice(&written[i..]);
                    break;
                }
                let keep_from =
                    to_i64(self.last_seq(room)?.0).saturating_sub(to_i64(policy.max_messages));
                if keep_from > 0 {
                    let deleted = self
                        .conn
                        .prepare_cached(
                            "DELETE FROM messages WHERE room_id = ?1 AND seq IN
                             (SELECT seq FROM messages WHERE room_id = ?1 AND seq <= ?2
                              ORDER BY seq LIMIT ?3)",
                        )?
                        .execute(params![room.as_str(), keep_from, budget as i64])?;
                    messages += deleted as u64;
                    budget -= deleted.min(budget);
                    if budget == 0 {
                        unfinished.push(room.clone());
                    }
                }
            }
        }
        if policy.max_age_ms > 0 {
            let cutoff = now_ms.saturating_sub(to_i64(policy.max_age_ms));
            // The age limit can take a room's newest message, which is what `last_seq`
            // counts from: keep its seq as the room's floor first, so it is never handed out
            // again. (The count limit always keeps the newest.)
            self.conn.execute(
                "INSERT INTO rooms (room_id, last_seq)
                 SELECT room_id, max(seq) FROM messages WHERE ts_ms < ?1 GROUP BY room_id
                 ON CONFLICT (room_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                [cutoff],
            )?;
            messages += self
                .conn
                .execute("DELETE FROM messages WHERE ts_ms < ?1", [cutoff])?
                as u64;
        }
        let notifications =
            self.conn
                .execute("DELETE FROM inbox WHERE expires_ms <= ?1", [now_ms])? as u64;
        Ok(Pruned {
            messages,
            notifications,
            unfinished,
        })
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

    /// A retention policy by count only: `n` messages per room.
    fn keep_newest(n: u64) -> Retention {
        Retention {
            max_messages: n,
            max_age_ms: 0,
            inbox_max: 2,
            inbox_ttl_ms: 0,
            clock: Clock::System,
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
        let policy = keep_newest(3);
        // Only the rooms written since the last pass are looked at.
        assert_eq!(s.prune(&policy, 0, &[]).unwrap(), Pruned::default());
        assert_eq!(
            s.prune(&policy, 0, std::slice::from_ref(&room))
                .unwrap()
                .messages,
            2
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
        assert_eq!(s.prune(&by_age, 10, &[]).unwrap().messages, 1);
        s.commit().unwrap();
        let (page, more) = s.page_before(&room, None, 10).unwrap();
        assert_eq!(
            (page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), more),
            (vec![4, 5], false)
        );

        // An age pass that takes the room's every message, newest included, leaves its seq
        // behind: after reopening, the next message is still 6.
        s.begin().unwrap();
        assert_eq!(s.prune(&by_age, 100, &[]).unwrap().messages, 2);
        s.commit().unwrap();
        assert_eq!(s.page_before(&room, None, 10).unwrap(), (vec![], false));
        drop(s);
        let mut s = SqliteStore::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(s.last_seq(&room).unwrap(), Seq(5));
        s.begin().unwrap();
        s.insert(&msg(6, None)).unwrap();
        s.commit().unwrap();
        assert_eq!(s.last_seq(&room).unwrap(), Seq(6));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A pass deletes at most `PRUNE_ROWS` rows and names the rooms it did not finish; the
    /// next passes finish them, oldest rows first.
    #[test]
    fn a_retention_pass_is_bounded_and_the_next_goes_on() {
        let dir = tempdir();
        let mut s = SqliteStore::open(&dir.join("db"), SyncMode::Normal).unwrap();
        let (a, b) = (RoomId::parse("a").unwrap(), RoomId::parse("b").unwrap());
        let total = 2 * PRUNE_ROWS as u64 + 10;
        s.begin().unwrap();
        for seq in 1..=total {
            for room in [&a, &b] {
                let m = StoredMessage {
                    room: room.clone(),
                    ..msg(seq, None)
                };
                s.insert(&m).unwrap();
            }
        }
        s.commit().unwrap();
        let policy = keep_newest(5);
        let mut written = vec![a.clone(), b.clone()];
        let mut passes = Vec::new();
        while !written.is_empty() {
            s.begin().unwrap();
            let pruned = s.prune(&policy, 0, &written).unwrap();
            s.commit().unwrap();
            passes.push(pruned.messages);
            written = pruned.unfinished;
            assert!(passes.len() < 10, "{passes:?}");
        }
        assert_eq!(passes.iter().sum::<u64>(), 2 * (total - 5), "{passes:?}");
        assert!(passes.iter().all(|&n| n <= PRUNE_ROWS as u64), "{passes:?}");
        assert_eq!(passes.len(), 5, "{passes:?}");
        for room in [&a, &b] {
            let (page, more) = s.page_before(room, None, 10).unwrap();
            let seqs: Vec<u64> = page.iter().map(|e| e.seq.0).collect();
            assert_eq!((seqs, more), ((total - 4..=total).collect(), false));
        }
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

    /// Under writes so steady that the checkpoint thread never finishes between two
    /// commits, the writer still makes the log start over once it passes
    /// `WAL_MAX_FRAMES` (it used to grow without end).
    /// Marks the last run of the database at `path` as not closed cleanly, as a kill -9 or
    /// a power loss leaves it.
    fn unclean(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean'", [])
            .unwrap();
    }

    fn commit_one(s: &mut SqliteStore, room: &str) -> Seq {
        let room = RoomId::parse(room).unwrap();
        let seq = s.last_seq(&room).unwrap().next();
        s.begin().unwrap();
        s.insert(&StoredMessage {
            room: room.clone(),
            ..msg(seq.0, None)
        })
        .unwrap();
        s.commit().unwrap();
        seq
    }

    /// A run that did not stop, on a machine that has booted since, may have lost its last
    /// commits after their seqs were seen: every room, new ones too, goes on above
    /// everything kept plus `POWER_LOSS_SKIP`. A kill -9 on the same boot, a clean stop, or
    /// a last run with `--sync full` skips nothing.
    #[test]
    fn after_a_power_loss_no_seq_is_handed_out_again() {
        let dir = tempdir();
        let path = dir.join("db");
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, Some("boot-a")).unwrap();
        for _ in 0..3 {
            commit_one(&mut s, "r");
        }
        drop(s);
        // A kill -9 on the same boot: the OS kept everything.
        unclean(&path);
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, Some("boot-a")).unwrap();
        assert_eq!(commit_one(&mut s, "r"), Seq(4));
        drop(s);
        // A clean stop, then a reboot: nothing was lost either.
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, Some("boot-b")).unwrap();
        assert_eq!(commit_one(&mut s, "r"), Seq(5));
        drop(s);
        // The run on boot b did not stop, and the machine booted again: a power loss.
        unclean(&path);
        let floor = 5 + POWER_LOSS_SKIP as u64;
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, Some("boot-c")).unwrap();
        assert_eq!(commit_one(&mut s, "r"), Seq(floor + 1));
        assert_eq!(
            commit_one(&mut s, "new"),
            Seq(floor + 1),
            "a room first seen now"
        );
        drop(s);
        // Last run with `full`: every commit was on the disk before anyone saw it.
        let s = SqliteStore::open_on(&path, SyncMode::Full, Some("boot-c")).unwrap();
        drop(s);
        unclean(&path);
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, Some("boot-d")).unwrap();
        assert_eq!(commit_one(&mut s, "r"), Seq(floor + 2));
        drop(s);
        // Nor does a machine whose boot cannot be read (not Linux) skip.
        unclean(&path);
        let mut s = SqliteStore::open_on(&path, SyncMode::Normal, None).unwrap();
        assert_eq!(commit_one(&mut s, "r"), Seq(floor + 3));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_quiet_room_does_not_start_the_log_over_at_every_commit() {
        let dir = tempdir();
        let mut s = SqliteStore::open(&dir.join("db"), SyncMode::Normal).unwrap();
        let mut frames = Vec::new();
        for _ in 1..=4 {
            commit_one(&mut s, "r");
            frames.push(s.wal_frames.load(Ordering::Relaxed));
            // Past two ticks of the checkpoint thread: a thread that copied the small log
            // would have the next commit start it over (and fsync its header) on the
            // writer's path.
            std::thread::sleep(2 * CHECKPOINT_EVERY + Duration::from_millis(50));
        }
        assert!(frames.windows(2).all(|w| w[1] > w[0]), "{frames:?}");
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_log_starts_over_under_steady_writes() {
        let dir = tempdir();
        let mut s = SqliteStore::open(&dir.join("db"), SyncMode::Normal).unwrap();
        let text = "x".repeat(200);
        let (mut longest, mut restarts, mut before) = (0, 0, 0);
        for seq in 1..=15_000 {
            s.begin().unwrap();
            let mut m = msg(seq, None);
            m.frame = Frame::from(format!("{{\"seq\":{seq},\"text\":\"{text}\"}}"));
            s.insert(&m).unwrap();
            s.commit().unwrap();
            let frames = s.wal_frames.load(Ordering::Relaxed);
            if frames < before {
                restarts += 1;
            }
            (longest, before) = (longest.max(frames), frames);
        }
        // 15,000 commits write about 15,000 frames (one page each).
        assert!(
            restarts >= 1,
            "the log never started over ({longest} frames)"
        );
        assert!(longest < 3 * WAL_MAX_FRAMES, "{longest} frames");
        drop(s);
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
