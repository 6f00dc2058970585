//! The writer: sequences, stores and reads, in the order the ops arrive, on a thread of its
//! own or in line on `ChatServer`'s thread (see [`StoreHandle`]).
//!
//! Each turn takes every op that is waiting (on the thread, up to [`MAX_BATCH`]) and runs
//! them in one transaction, so one commit (one fsync with SQLite's `synchronous=FULL`) covers
//! as many messages as arrived while the previous commit ran: the busier the server, the
//! bigger the batch. Only after the commit are the outcomes handed to `ChatServer`, in op
//! order (from the thread as one [`StoreEvents`] message). When anything in a batch fails,
//! the whole transaction is rolled back: every message in it is reported
//! [`Event::NotStored`] (no seq, no ack), the reads are answered again outside the
//! transaction, and the writer goes on with the next batch.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{
    Append, Backend, Event, Loaded, Op, Read, Retention, StoreError, StoreResult, StoreState,
    Stored, StoredMessage, to_i64,
};
use crate::ids::{RoomId, Seq};
use crate::protocol::{ServerMessage, timestamp_now};

/// Most ops handled in one transaction.
const MAX_BATCH: usize = 4096;
/// Rooms whose last seq the thread remembers before starting over (they are read back from
/// the backend on demand).
const MAX_CACHED_ROOMS: usize = 100_000;
/// How soon a retention pass follows one that left rooms over their count limit: passes of
/// [`super::PRUNE_ROWS`] rows this often delete ~25,000 rows a second, short stalls rather
/// than one long one.
const PRUNE_AGAIN: Duration = Duration::from_millis(20);

/// The outcomes of one batch, in op order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreEvents(pub Vec<Event>);

/// `ChatServer`'s end of the store: a thread of its own, or in line on `ChatServer`'s thread.
///
/// A store whose commit waits for the disk or the network (SQLite with `--sync full`,
/// Redis), or that has long work to do (an age limit, `--retention-secs`, whose pass scans
/// the table), runs on a thread of its own, so that `ChatServer` never waits for it: ops go
/// there over a channel and the outcomes come back as [`StoreEvents`]. A store whose commit
/// returns without waiting for anything (memory, SQLite with `--sync normal`: ~25-60 µs,
/// into the OS page cache) runs *in line*: ops wait in a queue and [`StoreHandle::turn`] runs
/// them as one transaction when `ChatServer` hands its gathered frames over (after its
/// mailbox is drained, or every 256 messages under a flood). The rules are the same code
/// ([`Writer::batch`]); what the in-line store saves is two thread wake-ups per chat, which
/// on a small machine are most of a quiet chat's latency.
pub struct StoreHandle {
    kind: Kind,
}

enum Kind {
    Thread {
        tx: Option<mpsc::Sender<Op>>,
        thread: Option<JoinHandle<()>>,
    },
    Inline(Box<Inline>),
}

/// The in-line store: the writer, the ops waiting for the next turn, and whether it failed
/// for good.
struct Inline {
    /// `None` once closed.
    writer: Option<Writer>,
    ops: Vec<Op>,
    /// Events from outside a turn (a retention pass that panicked), for the next turn.
    events: Vec<Event>,
    /// Set when a batch or a retention pass panicked: every op is answered as failed from
    /// then on.
    down: Option<String>,
    prune_every: Duration,
}

impl StoreHandle {
    /// Starts the store on `backend`: in line when every piece of its work is short (its
    /// commits do not wait, [`Backend::commit_waits`], and there is no age limit, whose pass
    /// scans the whole table), else on a thread that sends its outcomes to `events`.
    /// `prune_every` is how often the retention policy runs.
    pub fn start(
        backend: Box<dyn Backend>,
        events: Recipient<StoreEvents>,
        retention: Retention,
        prune_every: Duration,
    ) -> std::io::Result<Self> {
        let writer = Writer::new(backend, retention);
        if !writer.backend.commit_waits() && writer.retention.max_age_ms == 0 {
            return Ok(StoreHandle {
                kind: Kind::Inline(Box::new(Inline {
                    writer: Some(writer),
                    ops: Vec::new(),
                    events: Vec::new(),
                    down: None,
                    prune_every,
                })),
            });
        }
        Self::spawn(move |rx| {
            let mut writer = writer;
            // A panic (a bug, or a backend that cannot go on) must not leave anyone
            // waiting: what is queued, and everything sent afterwards, is answered as
            // failed, and `ChatServer` is told the store is down.
            let run = std::panic::AssertUnwindSafe(|| writer.run(&rx, &events, prune_every));
            if let Err(panic) = std::panic::catch_unwind(run) {
                let why = panic_message(&panic);
                log::error!("store thread failed: {why}; answering every op as failed");
                events.do_send(StoreEvents(vec![Event::State(StoreState::Down)]));
                answer_failed(&rx, &events, &format!("the history store failed: {why}"));
            }
        })
    }

    /// Starts a store thread running `work` on the ops it is sent: the SQLite writer above,
    /// or the cluster's Redis store ([`crate::cluster`]).
    pub fn spawn(work: impl FnOnce(mpsc::Receiver<Op>) + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("roomcast-store".into())
            .spawn(move || work(rx))?;
        Ok(StoreHandle {
            kind: Kind::Thread {
                tx: Some(tx),
                thread: Some(thread),
            },
        })
    }

    /// Queues an op; gives it back when the store has stopped. An in-line store runs it at
    /// the next [`Self::turn`].
    pub fn send(&mut self, op: Op) -> Result<(), Op> {
        match &mut self.kind {
            Kind::Thread { tx: Some(tx), .. } => tx.send(op).map_err(|e| e.0),
            Kind::Thread { tx: None, .. } => Err(op),
            Kind::Inline(inline) if inline.writer.is_none() => Err(op),
            Kind::Inline(inline) => {
                inline.ops.push(op);
                Ok(())
            }
        }
    }

    /// Whether ops (or events) wait for the next [`Self::turn`] (an in-line store only).
    pub fn pending(&self) -> bool {
        matches!(&self.kind, Kind::Inline(inline)
            if !inline.ops.is_empty() || !inline.events.is_empty())
    }

    /// An in-line store: runs every waiting op in one transaction and returns their
    /// outcomes, in op order, exactly as the thread would send them. A panic is caught: its
    /// ops, and every one after it, are answered as failed, and the store reports itself
    /// down. Nothing for a threaded store, whose outcomes come as [`StoreEvents`].
    pub fn turn(&mut self) -> Vec<Event> {
        let Kind::Inline(inline) = &mut self.kind else {
            return Vec::new();
        };
        let mut out = std::mem::take(&mut inline.events);
        if inline.ops.is_empty() {
            return out;
        }
        if let Some(why) = &inline.down {
            out.extend(inline.ops.drain(..).map(|op| failed(op, why)));
            return out;
        }
        let Some(writer) = inline.writer.as_mut() else {
            let why = "the history store has stopped";
            out.extend(inline.ops.drain(..).map(|op| failed(op, why)));
            return out;
        };
        let ops = &mut inline.ops;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.batch(ops))) {
            Ok(events) => out.extend(events),
            Err(panic) => {
                let why = inline.fail(&panic);
                out.push(Event::State(StoreState::Down));
                out.extend(inline.ops.drain(..).map(|op| failed(op, &why)));
            }
        }
        out
    }

    /// An in-line store: when its first retention pass is due (`ChatServer` runs
    /// [`Self::prune`] then). `None` for a store thread, which runs its own.
    pub fn prune_every(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Inline(inline) => Some(inline.prune_every),
            Kind::Thread { .. } => None,
        }
    }

    /// An in-line store: one retention pass; returns when the next is due.
    pub fn prune(&mut self) -> Option<Duration> {
        let Kind::Inline(inline) = &mut self.kind else {
            return None;
        };
        let every = inline.prune_every;
        let Some(writer) = inline.writer.as_mut().filter(|_| inline.down.is_none()) else {
            return Some(every);
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.prune(every))) {
            Ok(next) => Some(next),
            Err(panic) => {
                inline.fail(&panic);
                inline.events.push(Event::State(StoreState::Down));
                Some(every)
            }
        }
    }

    /// Stops taking ops. A thread finishes what is queued, commits, and ends; an in-line
    /// store (whose caller ran its last [`Self::turn`]) is closed on a thread of its own.
    /// Join the returned handle to wait for either.
    pub fn close(&mut self) -> Option<JoinHandle<()>> {
        match &mut self.kind {
            Kind::Thread { tx, thread } => {
                *tx = None;
                thread.take()
            }
            Kind::Inline(inline) => {
                let writer = inline.writer.take()?;
                // Closing SQLite runs a last checkpoint: not on `ChatServer`'s thread.
                std::thread::Builder::new()
                    .name("roomcast-store-close".into())
                    .spawn(move || {
                        drop(writer);
                        log::info!("store closed");
                    })
                    .ok()
            }
        }
    }
}

impl Inline {
    /// The writer panicked: from now on every op is answered as failed. Returns why.
    fn fail(&mut self, panic: &Box<dyn std::any::Any + Send>) -> String {
        let why = format!("the history store failed: {}", panic_message(panic));
        log::error!("{why}; answering every op as failed");
        self.down = Some(why.clone());
        why
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.close() {
            let _ = thread.join();
        }
    }
}

struct Writer {
    backend: Box<dyn Backend>,
    /// Room -> newest seq handed out, so a busy room's seq is not read back every time.
    seqs: HashMap<RoomId, Seq>,
    /// Rooms written since the last retention pass (only they can have grown past the count
    /// limit).
    written: HashSet<RoomId>,
    retention: Retention,
    /// Reported to `ChatServer` on each change.
    state: StoreState,
}

/// What a panic carried, as text.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// After the store failed for good: answers every op as failed, at once, until `ChatServer`
/// closes the channel.
pub(crate) fn answer_failed(rx: &mpsc::Receiver<Op>, events: &Recipient<StoreEvents>, error: &str) {
    while let Ok(first) = rx.recv() {
        let mut out = vec![failed(first, error)];
        out.extend(rx.try_iter().take(MAX_BATCH).map(|op| failed(op, error)));
        events.do_send(StoreEvents(out));
    }
}

/// The outcome of `op` when nothing could be done for it.
pub(crate) fn failed(op: Op, error: &str) -> Event {
    let error = error.to_owned();
    match op {
        Op::Append(a) => Event::NotStored {
            room: a.room,
            client_msg_id: a.client_msg_id,
            tag: a.tag,
            error,
        },
        Op::Read { room, read, tag } => Event::Loaded {
            room,
            read,
            tag,
            result: Err(error),
        },
        Op::InboxPut { users, tag, .. } => Event::InboxStored {
            tag,
            users,
            result: Err(error),
        },
        Op::InboxTake { user, session } => Event::InboxTaken {
            user,
            session,
            frames: Vec::new(),
        },
    }
}

impl Writer {
    fn new(mut backend: Box<dyn Backend>, retention: Retention) -> Self {
        // The first pass checks every room against the count limit (it may have been lowered
        // since the last run); later passes only the rooms written since.
        let mut written = HashSet::new();
        if retention.max_messages > 0 {
            match backend.rooms() {
                Ok(rooms) => written.extend(rooms),
                Err(e) => log::warn!("retention: cannot list the rooms to check at start: {e}"),
            }
        }
        Writer {
            backend,
            seqs: HashMap::new(),
            written,
            retention,
            state: StoreState::Ok,
        }
    }

    fn run(
        &mut self,
        rx: &mpsc::Receiver<Op>,
        events: &Recipient<StoreEvents>,
        prune_every: Duration,
    ) {
        let mut next_prune = Instant::now() + prune_every;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut ops = vec![first];
                    while ops.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    // A panic in the batch leaves its unanswered ops in `ops`: they are answered
                    // as failed before the panic goes on to end the thread's normal work.
                    let batch = std::panic::AssertUnwindSafe(|| self.batch(&mut ops));
                    match std::panic::catch_unwind(batch) {
                        Ok(out) if out.is_empty() => {}
                        Ok(out) => events.do_send(StoreEvents(out)),
                        Err(panic) => {
                            let why =
                                format!("the history store failed: {}", panic_message(&panic));
                            let mut out = vec![Event::State(StoreState::Down)];
                            out.extend(ops.drain(..).map(|op| failed(op, &why)));
                            events.do_send(StoreEvents(out));
                            std::panic::resume_unwind(panic);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + self.prune(prune_every);
            }
        }
        log::info!("store closed");
    }

    /// Runs `ops` in one transaction and returns their outcomes; `ops` is left empty.
    fn batch(&mut self, ops: &mut Vec<Op>) -> Vec<Event> {
        let now = self.retention.clock.now_ms();
        let attempt = self
            .backend
            .begin()
            .and_then(|()| {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops.iter() {
                    out.push(self.apply(op, now)?);
                }
                Ok(out)
            })
            .and_then(|out| self.backend.commit().map(|()| out));
        match attempt {
            Ok(mut out) => {
                ops.clear();
                self.report(StoreState::Ok, &mut out);
                out
            }
            Err(e) => {
                self.backend.rollback();
                // Seqs handed out in the failed transaction were never stored.
                self.seqs.clear();
                log::error!("store write failed, {} ops not stored: {e}", ops.len());
                // Popped one by one (from the reversed list, so in op order), so that a panic
                // here leaves the ops not yet answered in `ops`.
                let mut out: Vec<Event> = Vec::with_capacity(ops.len());
                ops.reverse();
                while let Some(op) = ops.pop() {
                    out.push(self.fail(op, &e, now));
                }
                self.report(StoreState::Failing, &mut out);
                out
            }
        }
    }

    /// Adds a state change to a batch's outcomes, when the state changed.
    fn report(&mut self, state: StoreState, out: &mut Vec<Event>) {
        if self.state != state {
            self.state = state;
            out.push(Event::State(state));
        }
    }

    fn apply(&mut self, op: &Op, now: i64) -> StoreResult<Event> {
        Ok(match op {
            Op::Append(a) => self.append(a, now)?,
            Op::Read { room, read, tag } => Event::Loaded {
                room: room.clone(),
                read: *read,
                tag: *tag,
                result: Ok(self.read(room, *read)?),
            },
            Op::InboxPut { users, frame, tag } => {
                let expires = now.saturating_add(to_i64(self.retention.inbox_ttl_ms));
                for user in users {
                    self.backend
                        .inbox_put(user, frame, expires, self.retention.inbox_max)?;
                }
                Event::InboxStored {
                    tag: *tag,
                    users: users.clone(),
                    result: Ok(()),
                }
            }
            Op::InboxTake { user, session } => Event::InboxTaken {
                user: user.clone(),
                session: *session,
                frames: self.backend.inbox_take(user, now)?,
            },
        })
    }

    /// The outcome of `op` when its batch failed: writes are reported not done; reads are
    /// answered again on their own.
    fn fail(&mut self, op: Op, error: &StoreError, now: i64) -> Event {
        let error = error.to_string();
        match op {
            Op::Append(a) => Event::NotStored {
                room: a.room,
                client_msg_id: a.client_msg_id,
                tag: a.tag,
                error,
            },
            Op::Read { room, read, tag } => {
                let result = self.read(&room, read).map_err(|e| e.to_string());
                Event::Loaded {
                    room,
                    read,
                    tag,
                    result,
                }
            }
            Op::InboxPut { users, tag, .. } => Event::InboxStored {
                tag,
                users,
                result: Err(error),
            },
            // What waits stays stored for the next socket.
            Op::InboxTake { user, session } => {
                let frames = self.backend.inbox_take(&user, now).unwrap_or_default();
                Event::InboxTaken {
                    user,
                    session,
                    frames,
                }
            }
        }
    }

    fn append(&mut self, a: &Append, now: i64) -> StoreResult<Event> {
        if let Some(id) = &a.client_msg_id
            && let Some(original) = self.backend.find_original(&a.room, &a.user, id)?
        {
            return Ok(Event::Stored(Stored {
                room: a.room.clone(),
                seq: original.seq,
                message_id: original.message_id,
                frame: original.frame,
                client_msg_id: a.client_msg_id.clone(),
                tag: a.tag,
                received: a.received,
                stored_ms: now,
                duplicate: true,
            }));
        }
        let last = match self.seqs.get(&a.room) {
            Some(seq) => *seq,
            None => self.backend.last_seq(&a.room)?,
        };
        let seq = last.next();
        let timestamp = timestamp_now();
        let message_id = uuid::Uuid::new_v4().to_string();
        let frame = ServerMessage::Chat {
            user_id: &a.user,
            room_id: &a.room,
            text: &a.text,
            timestamp: &timestamp,
            message_id: &message_id,
            seq,
            client_msg_id: a.client_msg_id.as_deref(),
        }
        .encode();
        self.backend.insert(&StoredMessage {
            room: a.room.clone(),
            seq,
            user: a.user.clone(),
            client_msg_id: a.client_msg_id.clone(),
            message_id: message_id.clone(),
            ts_ms: now,
            frame: frame.clone(),
        })?;
        if self.seqs.len() >= MAX_CACHED_ROOMS {
            self.seqs.clear();
        }
        self.seqs.insert(a.room.clone(), seq);
        if self.retention.max_messages > 0 && !self.written.contains(&a.room) {
            self.written.insert(a.room.clone());
        }
        Ok(Event::Stored(Stored {
            room: a.room.clone(),
            seq,
            message_id,
            frame,
            client_msg_id: a.client_msg_id.clone(),
            tag: a.tag,
            received: a.received,
            stored_ms: now,
            duplicate: false,
        }))
    }

    fn read(&mut self, room: &RoomId, read: Read) -> StoreResult<Loaded> {
        let last_seq = self.backend.last_seq(room)?;
        let recent = |backend: &mut Box<dyn Backend>, n: usize, recovered: Option<bool>| {
            let (entries, has_more) = backend.page_before(room, None, n)?;
            Ok(Loaded {
                last_seq,
                entries,
                has_more,
                recovered,
            })
        };
        match read {
            Read::Recent(n) => recent(&mut self.backend, n, None),
            Read::Before { before, limit } => {
                let (entries, has_more) = self.backend.page_before(room, before, limit)?;
                Ok(Loaded {
                    last_seq,
                    entries,
                    has_more,
                    recovered: None,
                })
            }
            Read::Since {
                after,
                max,
                fallback,
            } => {
                // A client ahead of the room (it saw seqs this store never handed out) cannot
                // be brought up to date: it is told so and gets the recent history.
                if after > last_seq {
                    return recent(&mut self.backend, fallback, Some(false));
                }
                match self.backend.since(room, after, max)? {
                    Some(entries) => Ok(Loaded {
                        last_seq,
                        has_more: after > Seq(0),
                        entries,
                        recovered: Some(true),
                    }),
                    None => recent(&mut self.backend, fallback, Some(false)),
                }
            }
        }
    }

    /// One retention pass; returns when the next is due: soon when this one left rooms over
    /// the count limit, else after `every`.
    fn prune(&mut self, every: Duration) -> Duration {
        let policy = &self.retention;
        let written: Vec<RoomId> = self.written.drain().collect();
        let result = self
            .backend
            .begin()
            .and_then(|()| self.backend.prune(policy, policy.clock.now_ms(), &written))
            .and_then(|pruned| self.backend.commit().map(|()| pruned));
        match result {
            Ok(pruned) => {
                if pruned.messages > 0 || pruned.notifications > 0 {
                    log::debug!(
                        "retention: pruned messages={} notifications={}",
                        pruned.messages,
                        pruned.notifications
                    );
                }
                if pruned.unfinished.is_empty() {
                    return every;
                }
                self.written.extend(pruned.unfinished);
                PRUNE_AGAIN.min(every)
            }
            Err(e) => {
                self.backend.rollback();
                // Those rooms are looked at again next time.
                self.written.extend(written);
                log::error!("retention prune failed: {e}");
                every
            }
        }
    }
}
