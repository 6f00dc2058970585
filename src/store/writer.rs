//! The store thread: sequences, stores and reads, in the order the ops arrive.
//!
//! Each turn takes every op that is waiting (up to [`MAX_BATCH`]) and runs them in one
//! transaction, so one commit (one fsync with SQLite's `synchronous=FULL`) covers as many
//! messages as arrived while the previous commit ran: the busier the server, the bigger the
//! batch. Only after the commit are the outcomes sent to `ChatServer`, in op order, as one
//! [`StoreEvents`] message. When anything in a batch fails, the whole transaction is rolled
//! back: every message in it is reported [`Event::NotStored`] (no seq, no ack), the reads are
//! answered again outside the transaction, and the thread goes on with the next batch.

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

/// The outcomes of one batch, in op order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreEvents(pub Vec<Event>);

/// `ChatServer`'s end of the store thread.
pub struct StoreHandle {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreHandle {
    /// Starts the thread. `events` receives every outcome; `prune_every` is how often the
    /// retention policy runs.
    pub fn start(
        backend: Box<dyn Backend>,
        events: Recipient<StoreEvents>,
        retention: Retention,
        prune_every: Duration,
    ) -> std::io::Result<Self> {
        Self::spawn(move |rx| {
            let mut writer = Writer {
                backend,
                seqs: HashMap::new(),
                written: HashSet::new(),
                retention,
                state: StoreState::Ok,
            };
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

    /// Starts a store thread running `work` on the ops it is sent: the SQLite/memory writer
    /// above, or the cluster's Redis store ([`crate::cluster`]).
    pub fn spawn(work: impl FnOnce(mpsc::Receiver<Op>) + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("roomcast-store".into())
            .spawn(move || work(rx))?;
        Ok(StoreHandle {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues an op; gives it back when the thread has stopped.
    pub fn send(&self, op: Op) -> Result<(), Op> {
        match &self.tx {
            Some(tx) => tx.send(op).map_err(|e| e.0),
            None => Err(op),
        }
    }

    /// Stops taking ops. The thread finishes what is queued, commits, and ends; join the
    /// returned handle to wait for that.
    pub fn close(&mut self) -> Option<JoinHandle<()>> {
        self.tx = None;
        self.thread.take()
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
                self.prune();
                next_prune = Instant::now() + prune_every;
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

    fn prune(&mut self) {
        let policy = &self.retention;
        let written: Vec<RoomId> = self.written.drain().collect();
        let result = self
            .backend
            .begin()
            .and_then(|()| self.backend.prune(policy, policy.clock.now_ms(), &written))
            .and_then(|pruned| self.backend.commit().map(|()| pruned));
        match result {
            Ok((0, 0)) => {}
            Ok((messages, notifications)) => {
                log::info!("retention: pruned messages={messages} notifications={notifications}")
            }
            Err(e) => {
                self.backend.rollback();
                // Those rooms are looked at again next time.
                self.written.extend(written);
                log::error!("retention prune failed: {e}");
            }
        }
    }
}
