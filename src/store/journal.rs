//! The chat log: where the default store (`--sync normal`) commits chats.
//!
//! A commit into SQLite cost the writer, in line on `ChatServer`'s thread, 25-60 µs per
//! batch of locks, page images and `pwrite`s, and its WAL's checkpoints ran beside it. Here
//! a batch's chats are encoded into one buffer and written to an append-only file with one
//! `write`: that is the commit. Like SQLite's `synchronous=NORMAL` commit it reaches the
//! OS page cache, not the disk, so an acknowledged chat survives a process crash (kill -9).
//!
//! The store's background thread (the *feeder*, in [`super::sqlite`]) receives each
//! committed batch ([`Feed`]) and fsyncs the chat log every 100 ms: a power loss can take
//! back about the last 100 ms, as with SQLite's commit before. Every second it inserts what
//! came since its last turn into SQLite in one transaction (a room's page written once for
//! all its chats of that second, not once per commit), fsyncs SQLite's log, and only then
//! tells the writer (`fed`) and deletes the chat log files it has fed completely. Until then
//! the writer keeps the chats in memory ([`ChatLog`]'s pending set) and answers reads from
//! SQLite and them together.
//!
//! At start, before anything else, the files a crash left are read and fed into SQLite
//! ([`read_file`]); a record already there is skipped.
//!
//! The files are `PATH-chats.N` beside the database `PATH`, N rising. Each starts with
//! [`MAGIC`], then records: the body's length (u32, little-endian), its CRC-32 (u32), and the
//! body: seq (u64), ts_ms (i64), then room, user, client_msg_id, message_id and frame, each
//! as a u32 length and UTF-8 bytes (client_msg_id's length is `u32::MAX` when it has none).
//! A record cut short (a crash in the middle of a write, a power loss) or failing its CRC
//! ends the file: nothing after it is read. After a failed write the writer goes on in a new
//! file, so a torn record can only be a file's last.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use super::{Original, StoredMessage};
use crate::ids::{RoomId, Seq, UserId};
use crate::protocol::Frame;
use crate::server::room::HistoryEntry;

/// The first bytes of every chat log file.
pub const MAGIC: &[u8; 8] = b"RCCHATS1";

/// A file past this size is closed and the next begun, so that the feeder can delete what it
/// has fed without waiting for a quiet moment.
const ROTATE_BYTES: u64 = 8 << 20;

/// A record's body longer than this is not a record (a frame is at most a few hundred KiB).
const MAX_RECORD: u32 = 64 << 20;

/// Committed chats on their way to SQLite.
#[derive(Debug)]
pub struct Feed {
    /// The file they were written to.
    pub file: u64,
    /// The batch's number: the writer forgets it once the feeder's `fed` reaches it.
    pub batch: u64,
    pub messages: Vec<StoredMessage>,
}

/// The chat log files beside the database `db`, oldest first, with their numbers.
pub fn files(db: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!("{}-chats.", file_name(db));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn file_name(db: &Path) -> String {
    db.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The path of chat log file `n` beside `db`.
pub fn path_of(db: &Path, n: u64) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(format!("-chats.{n}"));
    PathBuf::from(name)
}

/// The records of one file, in order, up to the first that is cut short or damaged; and
/// whether the file ended there (`true`) rather than cleanly.
pub fn read_file(path: &Path) -> io::Result<(Vec<StoredMessage>, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < MAGIC.len() {
        // Created, then the crash: nothing was written to it.
        return Ok((Vec::new(), !bytes.is_empty()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a roomcast chat log", path.display()),
        ));
    }
    let mut rest = &bytes[MAGIC.len()..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        match decode(rest) {
            Some((m, used)) => {
                out.push(m);
                rest = &rest[used..];
            }
            None => return Ok((out, true)),
        }
    }
    Ok((out, false))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends `m`'s record to `buf`.
pub fn encode(buf: &mut Vec<u8>, m: &StoredMessage) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&m.seq.0.to_le_bytes());
    buf.extend_from_slice(&m.ts_ms.to_le_bytes());
    put_str(buf, m.room.as_str());
    put_str(buf, m.user.as_str());
    match &m.client_msg_id {
        Some(id) => put_str(buf, id),
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    put_str(buf, &m.message_id);
    put_str(buf, &m.frame);
    let body = &buf[start + 8..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a little-endian u32, u64 or i64 off the front of a record.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<Option<&'a str>> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Some(None);
        }
        std::str::from_utf8(self.take(len as usize)?).ok().map(Some)
    }
    fn text(&mut self) -> Option<&'a str> {
        self.string()?
    }
}

/// The record at the front of `bytes` and its length, or `None` if it is cut short or
/// damaged.
fn decode(bytes: &[u8]) -> Option<(StoredMessage, usize)> {
    let mut head = Cursor(bytes);
    let len = head.u32()?;
    let crc = head.u32()?;
    if len > MAX_RECORD {
        return None;
    }
    let body = head.take(len as usize)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut c = Cursor(body);
    let seq = Seq(c.u64()?);
    let ts_ms = c.u64()? as i64;
    let room = RoomId::parse(c.text()?)?;
    let user = UserId::parse(c.text()?)?;
    let client_msg_id = c.string()?.map(str::to_owned);
    let message_id = c.text()?.to_owned();
    let frame = Frame::from(c.text()?);
    let m = StoredMessage {
        room,
        seq,
        user,
        client_msg_id,
        message_id,
        ts_ms,
        frame,
    };
    Some((m, 8 + len as usize))
}

/// (room, user, client_msg_id): what a resend is recognized by.
type ResendKey = (RoomId, UserId, Box<str>);

fn resend_key(m: &StoredMessage) -> Option<ResendKey> {
    let id = m.client_msg_id.as_deref()?;
    Some((m.room.clone(), m.user.clone(), Box::from(id)))
}

/// Creates chat log file `n` beside `db` (empty but for [`MAGIC`]).
fn create(db: &Path, n: u64) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path_of(db, n))?;
    file.write_all(MAGIC)?;
    Ok(file)
}

/// The writer's end: the open file, the batch being built, and the chats committed but not
/// yet fed into SQLite (and fsynced there), which reads must still see.
pub struct ChatLog {
    db: PathBuf,
    number: u64,
    file: File,
    size: u64,
    /// The batch being built: its records, and its messages.
    buf: Vec<u8>,
    staged: Vec<StoredMessage>,
    /// Batches committed so far.
    batches: u64,
    /// Committed (or staged in the batch being built), not yet fed: per room, in seq order,
    /// with their batch numbers.
    pending: HashMap<RoomId, VecDeque<(u64, StoredMessage)>>,
    /// The seqs of `pending`'s chats that have a `client_msg_id`, by (room, user, id): a
    /// resend is looked up once per chat, and a busy room holds a second of chats here.
    by_id: HashMap<ResendKey, Seq>,
    /// The feeder's word: every batch up to this one is in SQLite and fsynced.
    fed: Arc<AtomicU64>,
    /// What `pending` was last trimmed to.
    trimmed: u64,
    feed: SyncSender<Feed>,
    /// Set once the feeder is gone, so that it is said once.
    feeder_gone: bool,
}

impl ChatLog {
    /// Starts file `number` beside `db`; committed batches go to `feed`, and the feeder
    /// reports what is fed in `fed`.
    pub fn open(
        db: &Path,
        number: u64,
        fed: Arc<AtomicU64>,
        feed: SyncSender<Feed>,
    ) -> io::Result<Self> {
        Ok(ChatLog {
            db: db.to_owned(),
            number,
            file: create(db, number)?,
            size: MAGIC.len() as u64,
            buf: Vec::new(),
            staged: Vec::new(),
            batches: 0,
            pending: HashMap::new(),
            by_id: HashMap::new(),
            fed,
            trimmed: 0,
            feed,
            feeder_gone: false,
        })
    }

    /// Adds `m` to the batch being built. Reads see it at once, as they would see a row
    /// inserted in an open transaction (the writer may look up a seq or a resend within
    /// its batch).
    pub fn stage(&mut self, m: &StoredMessage) {
        encode(&mut self.buf, m);
        self.staged.push(m.clone());
        if let Some(key) = resend_key(m) {
            self.by_id.insert(key, m.seq);
        }
        self.pending
            .entry(m.room.clone())
            .or_default()
            .push_back((self.batches + 1, m.clone()));
    }

    /// Drops the batch being built.
    pub fn discard(&mut self) {
        self.buf.clear();
        // Each staged chat is the newest of its room's pending ones: last in, first out.
        for m in self.staged.drain(..).rev() {
            if let Some(key) = resend_key(&m) {
                self.by_id.remove(&key);
            }
            if let Some(q) = self.pending.get_mut(&m.room) {
                q.pop_back();
                if q.is_empty() {
                    self.pending.remove(&m.room);
                }
            }
        }
    }

    /// Writes the batch being built: the commit. On failure nothing of it counts, and the
    /// next batch goes to a new file (this one may end in a torn record).
    pub fn commit(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            self.discard();
            if let Err(again) = self.next_file() {
                log::error!("cannot start a new chat log file: {again}");
            }
            return Err(e);
        }
        self.size += self.buf.len() as u64;
        self.buf.clear();
        self.batches += 1;
        let batch = self.batches;
        let messages = std::mem::take(&mut self.staged);
        let feed = Feed {
            file: self.number,
            batch,
            messages,
        };
        // Committed whatever the feeder does: a feeder that is gone (a bug) leaves them in
        // the file, fed at the next start, and in `pending` meanwhile.
        if self.feed.send(feed).is_err() && !self.feeder_gone {
            self.feeder_gone = true;
            log::error!("the history store's feeder has stopped; chats stay in its log");
        }
        if self.size > ROTATE_BYTES
            && let Err(e) = self.next_file()
        {
            log::warn!("cannot start a new chat log file (going on in this one): {e}");
        }
        Ok(())
    }

    fn next_file(&mut self) -> io::Result<()> {
        let file = create(&self.db, self.number + 1)?;
        self.number += 1;
        self.file = file;
        self.size = MAGIC.len() as u64;
        Ok(())
    }

    /// Forgets the chats that the feeder has put in SQLite (and fsynced).
    pub fn trim(&mut self) {
        let fed = self.fed.load(Ordering::Acquire);
        if fed <= self.trimmed {
            return;
        }
        self.trimmed = fed;
        let by_id = &mut self.by_id;
        self.pending.retain(|_, q| {
            while q.front().is_some_and(|(b, _)| *b <= fed) {
                if let Some(key) = q.pop_front().and_then(|(_, m)| resend_key(&m)) {
                    by_id.remove(&key);
                }
            }
            !q.is_empty()
        });
    }

    /// Chats staged or committed and not yet trimmed.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }

    /// The newest seq staged or committed in `room` that SQLite may not have yet.
    pub fn last_seq(&self, room: &RoomId) -> Option<Seq> {
        self.pending.get(room)?.back().map(|(_, m)| m.seq)
    }

    /// A chat staged or committed under (room, user, client_msg_id) that SQLite may not
    /// have yet.
    pub fn find(&self, room: &RoomId, user: &UserId, client_msg_id: &str) -> Option<Original> {
        let key = (room.clone(), user.clone(), Box::from(client_msg_id));
        let seq = *self.by_id.get(&key)?;
        let q = self.pending.get(room)?;
        let at = q.binary_search_by_key(&seq, |(_, m)| m.seq).ok()?;
        let m = &q[at].1;
        Some(Original {
            seq: m.seq,
            message_id: m.message_id.clone(),
            frame: m.frame.clone(),
        })
    }

    /// `room`'s chats staged or committed that SQLite may not have yet, with seqs in
    /// `range`, oldest first.
    pub fn entries(
        &self,
        room: &RoomId,
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = HistoryEntry> + '_ {
        self.pending
            .get(room)
            .into_iter()
            .flatten()
            .filter(move |(_, m)| range.contains(&m.seq.0))
            .map(|(_, m)| HistoryEntry {
                seq: m.seq,
                frame: m.frame.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: u64, cmid: Option<&str>, text: &str) -> StoredMessage {
        StoredMessage {
            room: RoomId::parse(room).unwrap(),
            seq: Seq(seq),
            user: UserId::parse("alice").unwrap(),
            client_msg_id: cmid.map(str::to_owned),
            message_id: format!("m-{seq}"),
            ts_ms: 1_700_000_000_000 + seq as i64,
            frame: Frame::from(format!("{{\"seq\":{seq},\"text\":\"{text}\"}}")),
        }
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-chatlog-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_file() {
        let dir = tempdir();
        let db = dir.join("rc.db");
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let mut log = ChatLog::open(&db, 7, Arc::default(), tx).unwrap();
        let written = [
            msg("a", 1, None, "héllo"),
            msg("b", 1, Some("c-1"), ""),
            msg("a", 2, Some(""), "x"),
        ];
        log.stage(&written[0]);
        log.stage(&written[1]);
        log.commit().unwrap();
        log.stage(&msg("a", 99, None, "discarded"));
        log.discard();
        log.stage(&written[2]);
        log.commit().unwrap();
        let feeds: Vec<Feed> = rx.try_iter().collect();
        assert_eq!(feeds.len(), 2);
        assert_eq!((feeds[0].file, feeds[0].batch, feeds[1].batch), (7, 1, 2));
        assert_eq!(feeds[0].messages, written[..2]);
        assert_eq!(feeds[1].messages, written[2..]);
        drop(log);

        assert_eq!(files(&db).unwrap(), vec![(7, path_of(&db, 7))]);
        let (read, torn) = read_file(&path_of(&db, 7)).unwrap();
        assert_eq!((read.as_slice(), torn), (&written[..], false));

        // A crash in the middle of the last record's write: the two before it are read.
        let full = std::fs::read(path_of(&db, 7)).unwrap();
        for cut in [full.len() - 1, full.len() - 20] {
            std::fs::write(path_of(&db, 7), &full[..cut]).unwrap();
            let (read, torn) = read_file(&path_of(&db, 7)).unwrap();
            assert_eq!(
                (read.as_slice(), torn),
                (&written[..2], true),
                "cut at {cut}"
            );
        }
        // A flipped byte in the second record: only the first is read.
        let mut bad = full.clone();
        let second = MAGIC.len() + 8 + u32::from_le_bytes(full[8..12].try_into().unwrap()) as usize;
        bad[second + 20] ^= 0x40;
        std::fs::write(path_of(&db, 7), &bad).unwrap();
        let (read, torn) = read_file(&path_of(&db, 7)).unwrap();
        assert_eq!((read.as_slice(), torn), (&written[..1], true));
        // Not a chat log at all.
        std::fs::write(path_of(&db, 7), b"SQLite format 3\0").unwrap();
        assert!(read_file(&path_of(&db, 7)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pending_chats_answer_reads_until_fed() {
        let dir = tempdir();
        let db = dir.join("rc.db");
        let (tx, _rx) = std::sync::mpsc::sync_channel(16);
        let fed = Arc::new(AtomicU64::new(0));
        let mut log = ChatLog::open(&db, 1, Arc::clone(&fed), tx).unwrap();
        let a = RoomId::parse("a").unwrap();
        let alice = UserId::parse("alice").unwrap();
        for seq in 1..=3 {
            log.stage(&msg("a", seq, Some(&format!("c-{seq}")), "t"));
            log.commit().unwrap();
        }
        assert_eq!(log.last_seq(&a), Some(Seq(3)));
        assert_eq!(log.find(&a, &alice, "c-2").map(|o| o.seq), Some(Seq(2)));
        assert_eq!(log.find(&a, &UserId::parse("bob").unwrap(), "c-2"), None);
        let seqs = |log: &ChatLog, r: std::ops::Range<u64>| -> Vec<u64> {
            log.entries(&a, r).map(|e| e.seq.0).collect()
        };
        assert_eq!(seqs(&log, 2..u64::MAX), [2, 3]);
        fed.store(2, Ordering::Release);
        log.trim();
        assert_eq!((seqs(&log, 0..u64::MAX), log.pending_len()), (vec![3], 1));
        assert_eq!(log.find(&a, &alice, "c-2"), None);
        fed.store(3, Ordering::Release);
        log.trim();
        assert_eq!((log.last_seq(&a), log.pending_len()), (None, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_big_file_is_followed_by_the_next() {
        let dir = tempdir();
        let db = dir.join("rc.db");
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let mut log = ChatLog::open(&db, 1, Arc::default(), tx).unwrap();
        let text = "y".repeat(4000);
        let mut seq = 0;
        while files(&db).unwrap().len() < 2 {
            seq += 1;
            log.stage(&msg("a", seq, None, &text));
            log.commit().unwrap();
            assert!(seq < 10_000, "never started a second file");
        }
        let last_of_first = rx.try_iter().last().unwrap();
        assert_eq!(
            last_of_first.file, 1,
            "the batch that filled it was written there"
        );
        log.stage(&msg("a", seq + 1, None, "next"));
        log.commit().unwrap();
        assert_eq!(rx.try_recv().unwrap().file, 2);
        let (first, torn) = read_file(&path_of(&db, 1)).unwrap();
        assert_eq!((first.len() as u64, torn), (seq, false));
        let _ = std::fs::remove_dir_all(dir);
    }
}
