//! `ChatServer`: the one actor that owns the shared state.
//!
//! It owns the rooms (members, the newest delivered seq, recent history), the user map (user id ->
//! live sessions) and presence, and it alone changes room membership. Sessions send it typed
//! [`messages`]; it answers and broadcasts through each session's [`outbox`], which gathers
//! frames while the mailbox is being worked through and hands them over when it is empty.
//!
//! The rules that keep it fast and fair:
//! - A broadcast is encoded once; each recipient gets a clone of the same reference-counted
//!   bytes.
//! - It never blocks and never waits for a session. A session whose backlog (frames handed
//!   over, not yet written) would pass `max_pending` is a slow consumer: it is removed from
//!   every room at once (so nobody else waits for it), told to close with 4001, and its
//!   connection is cut after a grace period if it never takes that close frame.
//! - Handlers only queue frames; sending, and finding slow consumers, happens in
//!   [`ChatServer::flush`], so a handler never re-enters itself mid-iteration.
//! - It never touches the disk. Chat messages, history reads and the offline inbox go to the
//!   store thread ([`crate::store`]) as ops; the outcomes come back as [`StoreEvents`]. A
//!   chat is delivered and acknowledged only once it is committed with its seq.
//! - A join that the in-memory window cannot answer waits for a store read before the
//!   session becomes a member (see [`ChatServer::join`]); reads and writes share the store's
//!   queue, so what the read returns and what arrives live afterwards meet with no gap and
//!   no duplicate.
//! - A session whose actor has stopped is forgotten only when its own `Disconnect` arrives.
//!   Its requests queued before that (say, chats it accepted just before closing) are still
//!   handled in order; frames for it on the way are simply dropped.

pub mod messages;
mod outbox;
pub mod room;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use actix::prelude::*;

use crate::broker::Broker;
use crate::config::Config;
use crate::conn::{ConnFd, ConnHandle};
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{
    AnnouncedLimits, ErrorCode, Frame, PROTOCOL_VERSION, ServerMessage, close_code, error_frame,
    timestamp_now,
};
use crate::store::writer::StoreEvents;
use crate::store::{Append, Backend, Event, Loaded, Op, Read, StoreHandle, Stored, Tag};
use messages::*;
use outbox::{Outbox, Outboxes};
use room::{Added, HistoryEntry, Removed, Room};

/// Chats that may wait for the store at once (about 100 bytes each plus their text); past
/// it new chats are refused with `overloaded`.
const MAX_CHATS_IN_STORE: usize = 100_000;

/// The `server` field of `welcome`.
const SERVER_NAME: &str = concat!("roomcast/", env!("CARGO_PKG_VERSION"));

/// The limits `ChatServer` enforces, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Frames a session may have waiting before it is a slow consumer.
    pub max_pending: usize,
    pub max_rooms_per_socket: usize,
    pub history_on_join: usize,
    pub history_keep: usize,
    /// Most messages a `since_seq` join is given.
    pub recovery_max: usize,
    /// Offline users' notifications are stored (the inbox holds at least one).
    pub inbox: bool,
    pub slow_consumer_grace: Duration,
    pub announced: AnnouncedLimits,
}

impl ServerLimits {
    pub fn from_config(c: &Config) -> Self {
        ServerLimits {
            max_connections: c.max_connections,
            max_pending: c.max_pending,
            max_rooms_per_socket: c.max_rooms_per_socket,
            history_on_join: c.history_on_join,
            history_keep: c.history_keep,
            recovery_max: c.recovery_max,
            inbox: c.inbox_max > 0,
            slow_consumer_grace: Duration::from_millis(c.slow_consumer_grace_ms),
            announced: c.announced_limits(),
        }
    }
}

/// What `ChatServer` knows of one live session.
struct SessionEntry {
    user: UserId,
    kind: SessionKind,
    /// Where frames for this session are gathered; rooms hold clones of it.
    outbox: Rc<Outbox>,
    /// Rooms this session is in, in join order (a handful: bounded by `max_rooms_per_socket`),
    /// including those it is still joining.
    rooms: Vec<RoomId>,
    /// Rooms whose join waits for a store read: the session is not a member yet.
    joining: Vec<RoomId>,
    /// Kept to cut the connection if the session stops reading.
    conn: Option<ConnFd>,
}

type Handle = Rc<Outbox>;

/// An HTTP request waiting for the store.
enum Waiter {
    Post(oneshot::Sender<Result<Posted, ApiFailure>>),
    History(oneshot::Sender<Result<HistoryPage, ApiFailure>>),
    Room(oneshot::Sender<Option<RoomDetail>>),
    Notify(oneshot::Sender<Pushed>, Pushed),
}

pub struct ChatServer {
    limits: ServerLimits,
    sessions: HashMap<SessionId, SessionEntry>,
    /// User id -> that user's live chat sessions.
    users: HashMap<UserId, Vec<SessionId>>,
    /// User id -> that user's notification sockets.
    notified: HashMap<UserId, Vec<SessionId>>,
    /// Rooms with at least one member. An emptied room is removed; its history stays in the
    /// store, which brings it back when someone joins again.
    rooms: HashMap<RoomId, Room<Handle>>,
    /// Slow consumers told to close, whose connection is cut when their grace ends unless
    /// they stop first.
    evicted: HashMap<SessionId, ConnHandle>,
    /// Frames gathered for sessions since the last flush.
    outboxes: Outboxes,
    /// A flush is spawned and will run once the mailbox is drained.
    flush_scheduled: bool,
    store: StoreHandle,
    /// Chats sent to the store and not yet answered.
    chats_in_store: usize,
    /// When each chat fanned out since the last flush reached `ChatServer`.
    fanouts: Vec<std::time::Instant>,
    /// HTTP requests waiting for the store, by `Tag::Request` number.
    waiting: HashMap<u64, Waiter>,
    next_request: u64,
    broker: Box<dyn Broker>,
    metrics: Arc<Metrics>,
    /// Set by `Shutdown`: no new sessions.
    shutting_down: bool,
    slow_consumers_closed: u64,
}

impl ChatServer {
    pub fn new(
        limits: ServerLimits,
        store: StoreHandle,
        broker: Box<dyn Broker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ChatServer {
            limits,
            sessions: HashMap::new(),
            users: HashMap::new(),
            notified: HashMap::new(),
            rooms: HashMap::new(),
            evicted: HashMap::new(),
            outboxes: Outboxes::default(),
            flush_scheduled: false,
            store,
            chats_in_store: 0,
            fanouts: Vec::new(),
            waiting: HashMap::new(),
            next_request: 1,
            broker,
            metrics,
            shutting_down: false,
            slow_consumers_closed: 0,
        }
    }

    /// Starts a `ChatServer` on the current arbiter with its store thread on `backend`.
    pub fn start_with(
        config: &Config,
        backend: Box<dyn Backend>,
        broker: Box<dyn Broker>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Addr<ChatServer>> {
        let ctx = Context::new();
        let store = StoreHandle::start(
            backend,
            ctx.address().recipient(),
            config.retention(),
            Duration::from_millis(config.prune_interval_ms),
        )?;
        let limits = ServerLimits::from_config(config);
        Ok(ctx.run(ChatServer::new(limits, store, broker, metrics)))
    }

    /// Queues one frame for one session.
    fn send(&mut self, session: SessionId, frame: Frame) {
        if let Some(entry) = self.sessions.get(&session) {
            self.outboxes.queue(session, &entry.outbox, frame);
        }
    }

    fn send_error(
        &mut self,
        session: SessionId,
        code: ErrorCode,
        message: &str,
        room: Option<&RoomId>,
    ) {
        self.send(session, error_frame(code, message, room));
    }

    /// An error about one `chat`: it names the room and the chat's `client_msg_id`, so the
    /// sender knows which message failed.
    fn send_chat_error(
        &mut self,
        session: SessionId,
        code: ErrorCode,
        message: &str,
        room: &RoomId,
        client_msg_id: Option<&str>,
    ) {
        let frame = ServerMessage::Error {
            code,
            message,
            room_id: Some(room),
            client_msg_id,
            to_user: None,
        }
        .encode();
        self.send(session, frame);
    }

    /// Queues `frame` for every session in `room` except those of `except`; returns how many.
    /// The frame's bytes are shared, not copied.
    fn fan_out(&mut self, room: &RoomId, frame: &Frame, except: Option<&UserId>) -> usize {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut queued = 0;
        for (user, session, outbox) in r.sessions() {
            if except != Some(user) {
                self.outboxes.queue(session, outbox, frame.clone());
                queued += 1;
            }
        }
        self.broker.publish(room, frame);
        self.metrics.deliveries(queued as u64);
        queued
    }

    /// Whether `session` is a member of `room`; answers `not_in_room` when it is not.
    fn check_member(&mut self, session: SessionId, room: &RoomId) -> bool {
        let member = self
            .sessions
            .get(&session)
            .is_some_and(|e| e.rooms.contains(room));
        if !member {
            let msg = format!("you are not in room '{room}'");
            self.send_error(session, ErrorCode::NotInRoom, &msg, Some(room));
        }
        member
    }

    /// Enters `room_id`. When the in-memory window holds what the session must be sent (the
    /// recent history, or everything after `since`), it becomes a member at once. Otherwise
    /// the join waits for a store read; the session becomes a member when the answer comes
    /// back ([`Self::joined_from_store`]).
    fn join(&mut self, session: SessionId, room_id: RoomId, since: Option<Seq>) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if entry.rooms.contains(&room_id) {
            let msg = format!("you are already in room '{room_id}'");
            return self.send_error(session, ErrorCode::AlreadyJoined, &msg, Some(&room_id));
        }
        if entry.rooms.len() >= self.limits.max_rooms_per_socket {
            let msg = format!(
                "a socket may be in at most {} rooms",
                self.limits.max_rooms_per_socket
            );
            return self.send_error(session, ErrorCode::TooManyRooms, &msg, Some(&room_id));
        }
        entry.rooms.push(room_id.clone());

        let on_join = self.limits.history_on_join;
        let from_memory = self.rooms.get(&room_id).and_then(|room| match since {
            None => {
                let recent: Vec<Frame> = room.recent(on_join).map(|e| e.frame.clone()).collect();
                (recent.len() == on_join || room.window_reaches_start()).then_some((recent, None))
            }
            Some(after) => room
                .catch_up(after, self.limits.recovery_max)
                .map(|entries| {
                    (
                        entries.into_iter().map(|e| e.frame.clone()).collect(),
                        Some(true),
                    )
                }),
        });
        if let Some((history, recovered)) = from_memory {
            return self.admit(session, &room_id, history, recovered);
        }
        let read = match since {
            None => Read::Recent(on_join),
            Some(after) => Read::Since {
                after,
                max: self.limits.recovery_max,
                fallback: on_join,
            },
        };
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.joining.push(room_id.clone());
        }
        let op = Op::Read {
            room: room_id.clone(),
            read,
            tag: Tag::Session(session),
        };
        if self.store.send(op).is_err() {
            self.join_failed(session, &room_id, "the history store has stopped");
        }
    }

    /// A store read for a join came back: make the session a member, if it still wants to be.
    fn joined_from_store(&mut self, session: SessionId, room_id: RoomId, loaded: Loaded) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(pos) = entry.joining.iter().position(|r| *r == room_id) else {
            return; // It left (or was evicted) meanwhile.
        };
        entry.joining.swap_remove(pos);
        let keep = self.limits.history_keep;
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| Room::new(loaded.last_seq, loaded.entries.clone(), keep));
        // Every commit sequenced before the read has been handled by now, and none after it.
        debug_assert_eq!(room.last_seq(), loaded.last_seq);
        let history = loaded.entries.into_iter().map(|e| e.frame).collect();
        self.admit(session, &room_id, history, loaded.recovered);
    }

    fn join_failed(&mut self, session: SessionId, room_id: &RoomId, error: &str) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.rooms.retain(|r| r != room_id);
            entry.joining.retain(|r| r != room_id);
        }
        let msg = format!("cannot join room '{room_id}' now: {error}");
        self.send_error(session, ErrorCode::StoreUnavailable, &msg, Some(room_id));
    }

    /// Makes `session` a member of the (live) room: `joined`, then `history`, queued together,
    /// so live frames for the room can only come after them; then `user_joined` to the others.
    fn admit(
        &mut self,
        session: SessionId,
        room_id: &RoomId,
        history: Vec<Frame>,
        recovered: Option<bool>,
    ) {
        let (Some(entry), Some(room)) = (self.sessions.get(&session), self.rooms.get_mut(room_id))
        else {
            return;
        };
        let user = entry.user.clone();
        let outbox = Rc::clone(&entry.outbox);
        let added = room.add(&user, session, Rc::clone(&outbox));
        let joined = ServerMessage::Joined {
            room_id,
            user_id: &user,
            users: &room.users(),
            last_seq: room.last_seq(),
            history: history.len(),
            recovered,
        }
        .encode();
        self.outboxes.queue(session, &outbox, joined);
        for frame in history {
            self.outboxes.queue(session, &outbox, frame);
        }
        if added == Added::FirstSessionOfUser {
            let timestamp = timestamp_now();
            let message = format!("{user} joined the room");
            let frame = ServerMessage::UserJoined {
                user_id: &user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode();
            self.fan_out(room_id, &frame, Some(&user));
        }
        log::debug!("joined session={session} user={user} room={room_id}");
    }

    /// Takes `session` out of `room_id`, announcing `user_left` if it was the user's last
    /// session there, and drops the room if it emptied.
    fn leave_room(&mut self, session: SessionId, user: &UserId, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let removed = room.remove(user, session);
        if room.is_empty() {
            self.rooms.remove(room_id);
            log::debug!("room emptied room={room_id}");
        } else if removed == Removed::LastSessionOfUser {
            let timestamp = timestamp_now();
            let message = format!("{user} left the room");
            let frame = ServerMessage::UserLeft {
                user_id: user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode();
            self.fan_out(room_id, &frame, None);
        }
    }

    /// Forgets a session entirely: every room, the user map. Returns its entry.
    fn remove_session(&mut self, session: SessionId) -> Option<SessionEntry> {
        let entry = self.sessions.remove(&session)?;
        let by_user = match entry.kind {
            SessionKind::Chat => &mut self.users,
            SessionKind::Notifications => &mut self.notified,
        };
        if let Entry::Occupied(mut o) = by_user.entry(entry.user.clone()) {
            o.get_mut().retain(|s| *s != session);
            if o.get().is_empty() {
                o.remove();
            }
        }
        for room in &entry.rooms {
            self.leave_room(session, &entry.user, room);
        }
        Some(entry)
    }

    /// Ends a handler: makes sure a flush will run once the mailbox is drained.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        self.metrics.set_rooms(self.rooms.len());
        self.metrics.set_users(self.users.len());
        if !self.flush_scheduled && !self.outboxes.is_empty() {
            self.flush_scheduled = true;
            // Spawned futures run after the mailbox is drained (see `outbox`).
            ctx.spawn(actix::fut::ready(()).map(|_, act: &mut Self, ctx| act.flush(ctx)));
        }
    }

    /// Hands the gathered frames to their sessions and evicts the slow consumers found doing
    /// so. Evicting announces `user_left`, which is flushed in turn.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        for session in self.outboxes.flush(self.limits.max_pending) {
            self.evict_slow(session, ctx);
        }
        // Fan-out time: from the chat reaching `ChatServer` to this hand-over to the last of
        // its recipients (the store's commit included).
        for received in self.fanouts.drain(..) {
            self.metrics.observe_fanout(received.elapsed());
        }
        self.settle(ctx);
    }

    /// Removes a session that stopped reading, orders it closed with 4001, and cuts its
    /// connection when the grace period ends unless its `Disconnect` comes first.
    fn evict_slow(&mut self, session: SessionId, ctx: &mut Context<Self>) {
        let Some(entry) = self.remove_session(session) else {
            return;
        };
        self.slow_consumers_closed += 1;
        self.metrics.slow_consumer_closed();
        log::warn!("slow consumer closed session={session} user={}", entry.user);
        entry
            .outbox
            .close(close_code::SLOW_CONSUMER, "slow consumer");
        match entry.conn.map(|c| c.duplicate()) {
            Some(Ok(conn)) => {
                self.evicted.insert(session, conn);
                ctx.run_later(self.limits.slow_consumer_grace, move |act, _| {
                    if let Some(conn) = act.evicted.remove(&session) {
                        conn.cut();
                    }
                });
            }
            Some(Err(e)) => log::debug!("slow consumer session={session}: {e}"),
            None => {}
        }
    }

    fn private(&mut self, session: SessionId, to_user: UserId, content: String) {
        let Some(from) = self.sessions.get(&session).map(|e| e.user.clone()) else {
            return;
        };
        let targets = self.users.get(&to_user).cloned().unwrap_or_default();
        if targets.is_empty() {
            let frame = ServerMessage::Error {
                code: ErrorCode::UserOffline,
                message: &format!("user '{to_user}' is not online"),
                room_id: None,
                client_msg_id: None,
                to_user: Some(&to_user),
            }
            .encode();
            return self.send(session, frame);
        }
        let timestamp = timestamp_now();
        let message_id = uuid::Uuid::new_v4().to_string();
        let frame = ServerMessage::Private {
            from: &from,
            to_user: &to_user,
            message: &content,
            timestamp: &timestamp,
            message_id: &message_id,
        }
        .encode();
        for target in targets {
            self.send(target, frame.clone());
        }
    }

    fn chat(
        &mut self,
        session: SessionId,
        room_id: RoomId,
        text: String,
        client_msg_id: Option<String>,
    ) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if !entry.rooms.contains(&room_id) {
            let msg = format!("you are not in room '{room_id}'");
            let id = client_msg_id.as_deref();
            return self.send_chat_error(session, ErrorCode::NotInRoom, &msg, &room_id, id);
        }
        let user = entry.user.clone();
        self.append(room_id, user, text, client_msg_id, Tag::Session(session));
    }

    /// Hands a chat message to the store, which sequences and commits it; it is delivered
    /// when [`Event::Stored`] comes back.
    fn append(
        &mut self,
        room: RoomId,
        user: UserId,
        text: String,
        client_msg_id: Option<String>,
        tag: Tag,
    ) {
        // The store's queue is bounded here: past the bound the disk is not keeping up, and
        // the sender is told to slow down rather than the queue growing without end.
        if self.chats_in_store >= MAX_CHATS_IN_STORE {
            return match tag {
                Tag::Session(session) => {
                    let msg = "the server is writing too slowly; send again later";
                    let id = client_msg_id.as_deref();
                    self.send_chat_error(session, ErrorCode::Overloaded, msg, &room, id);
                }
                Tag::Request(_) => {
                    let error = "the history store is overloaded".to_owned();
                    self.not_stored(room, client_msg_id, tag, error)
                }
            };
        }
        self.chats_in_store += 1;
        let op = Op::Append(Append {
            room,
            user,
            text,
            client_msg_id,
            tag,
            received: std::time::Instant::now(),
        });
        if let Err(Op::Append(a)) = self.store.send(op) {
            self.chats_in_store -= 1;
            let error = "the history store has stopped".to_owned();
            self.not_stored(a.room, a.client_msg_id, a.tag, error);
        }
    }

    /// A message is committed: deliver it to the room (unless it is a resend) and answer
    /// whoever sent it.
    fn stored(&mut self, e: Stored) {
        if !e.duplicate
            && let Some(room) = self.rooms.get_mut(&e.room)
        {
            room.record(HistoryEntry {
                seq: e.seq,
                frame: e.frame.clone(),
            });
            // Timed when the flush hands it to its recipients.
            if self.fan_out(&e.room, &e.frame, None) > 0 {
                self.fanouts.push(e.received);
            }
        }
        match e.tag {
            Tag::Session(session) => {
                if let Some(id) = &e.client_msg_id {
                    let ack = ServerMessage::Ack {
                        room_id: &e.room,
                        client_msg_id: id,
                        message_id: &e.message_id,
                        seq: e.seq,
                    }
                    .encode();
                    self.send(session, ack);
                }
            }
            Tag::Request(id) => {
                if let Some(Waiter::Post(tx)) = self.waiting.remove(&id) {
                    let _ = tx.send(Ok(Posted {
                        room_id: e.room,
                        message_id: e.message_id,
                        seq: e.seq,
                        timestamp: timestamp_of(&e.frame),
                        duplicate: e.duplicate,
                    }));
                }
            }
        }
    }

    /// A message could not be stored: no seq, no delivery, no ack; the sender is told.
    fn not_stored(&mut self, room: RoomId, client_msg_id: Option<String>, tag: Tag, error: String) {
        log::warn!("message not stored room={room} client_msg_id={client_msg_id:?}: {error}");
        self.metrics.store_write_failed(1);
        match tag {
            Tag::Session(session) => {
                let msg = format!("your message was not stored, send it again: {error}");
                let id = client_msg_id.as_deref();
                self.send_chat_error(session, ErrorCode::StoreUnavailable, &msg, &room, id);
            }
            Tag::Request(id) => {
                if let Some(Waiter::Post(tx)) = self.waiting.remove(&id) {
                    let _ = tx.send(Err(ApiFailure::Store(error)));
                }
            }
        }
    }

    /// Registers an HTTP request that waits for the store; returns its tag.
    fn wait(&mut self, waiter: Waiter) -> Tag {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, waiter);
        Tag::Request(id)
    }

    /// Sends a read whose answer an HTTP request waits for; answers it at once if the store
    /// has stopped.
    fn read_for(&mut self, room: RoomId, read: Read, waiter: Waiter) {
        let tag = self.wait(waiter);
        if let Err(Op::Read { room, read, tag }) = self.store.send(Op::Read { room, read, tag }) {
            self.loaded(room, read, tag, Err("the history store has stopped".into()));
        }
    }

    /// A read came back.
    fn loaded(&mut self, room: RoomId, read: Read, tag: Tag, result: Result<Loaded, String>) {
        match (tag, result) {
            (Tag::Session(session), Ok(loaded)) => match read {
                Read::Before { .. } => self.send_history(session, &room, loaded),
                _ => self.joined_from_store(session, room, loaded),
            },
            (Tag::Session(session), Err(e)) => match read {
                Read::Before { .. } => {
                    let msg = format!("cannot read history now: {e}");
                    self.send_error(session, ErrorCode::StoreUnavailable, &msg, Some(&room));
                }
                _ => self.join_failed(session, &room, &e),
            },
            (Tag::Request(id), result) => match self.waiting.remove(&id) {
                Some(Waiter::History(tx)) => {
                    let _ = tx.send(match result {
                        Ok(l) if l.last_seq == Seq(0) => Err(ApiFailure::UnknownRoom(room)),
                        Ok(l) => Ok(HistoryPage {
                            room_id: room,
                            messages: l.entries.into_iter().map(|e| e.frame).collect(),
                            has_more: l.has_more,
                        }),
                        Err(e) => Err(ApiFailure::Store(e)),
                    });
                }
                Some(Waiter::Room(tx)) => {
                    let detail = match (self.rooms.get(&room), result) {
                        (Some(live), _) => Some(room_detail(&room, live)),
                        (None, Ok(l)) if l.last_seq > Seq(0) => Some(RoomDetail {
                            room_id: room,
                            members: Vec::new(),
                            sockets: 0,
                            last_seq: l.last_seq,
                        }),
                        _ => None,
                    };
                    let _ = tx.send(detail);
                }
                _ => {}
            },
        }
    }

    fn send_history(&mut self, session: SessionId, room_id: &RoomId, loaded: Loaded) {
        let raw: Vec<&serde_json::value::RawValue> = loaded
            .entries
            .iter()
            .filter_map(|e| serde_json::from_str(&e.frame).ok())
            .collect();
        let frame = ServerMessage::History {
            room_id,
            messages: &raw,
            has_more: loaded.has_more,
        }
        .encode();
        self.send(session, frame);
    }

    /// Notifications that waited in the store for a user who just opened a socket.
    fn inbox_taken(&mut self, user: UserId, session: SessionId, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        // To the socket that asked; if it is already gone, to another of the user's; if none
        // is left, back into the inbox.
        let target = Some(session)
            .filter(|s| self.sessions.contains_key(s))
            .or_else(|| self.notified.get(&user).and_then(|v| v.first().copied()));
        match target {
            Some(target) => {
                log::debug!("inbox delivered user={user} notifications={}", frames.len());
                for frame in frames {
                    self.send(target, frame);
                }
            }
            None => {
                for frame in frames {
                    let users = vec![user.clone()];
                    let op = Op::InboxPut {
                        users,
                        frame,
                        tag: Tag::Request(0),
                    };
                    if self.store.send(op).is_err() {
                        log::warn!("inbox lost for user={user}: the store has stopped");
                    }
                }
            }
        }
    }

    fn history(&mut self, session: SessionId, room_id: RoomId, before: Option<Seq>, limit: usize) {
        if !self.check_member(session, &room_id) {
            return;
        }
        let op = Op::Read {
            room: room_id,
            read: Read::Before { before, limit },
            tag: Tag::Session(session),
        };
        if let Err(Op::Read { room, read, tag }) = self.store.send(op) {
            self.loaded(room, read, tag, Err("the history store has stopped".into()));
        }
    }
}

fn room_detail(room_id: &RoomId, room: &Room<Handle>) -> RoomDetail {
    RoomDetail {
        room_id: room_id.clone(),
        members: room.users().into_iter().cloned().collect(),
        sockets: room.session_count(),
        last_seq: room.last_seq(),
    }
}

/// The `timestamp` of an encoded chat frame.
fn timestamp_of(frame: &Frame) -> String {
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: String,
    }
    serde_json::from_str::<Stamp>(frame)
        .map(|s| s.timestamp)
        .unwrap_or_default()
}

impl Actor for ChatServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // No capacity of its own: a `send` that finds a mailbox full waits and retries, and a
        // later request from the same session could overtake it. What bounds this mailbox is
        // each session's `max_in_flight` and the connection limit.
        ctx.set_mailbox_capacity(0);
        log::info!("chat server started");
    }
}

impl Handler<Connect> for ChatServer {
    type Result = Result<(), Refused>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        if self.sessions.len() >= self.limits.max_connections {
            log::warn!(
                "connection refused: limit {} reached",
                self.limits.max_connections
            );
            return Err(Refused::Full);
        }
        let welcome = ServerMessage::Welcome {
            user_id: &msg.user,
            session_id: msg.session.0,
            protocol: PROTOCOL_VERSION,
            server: SERVER_NAME,
            limits: &self.limits.announced,
        }
        .encode();
        let by_user = match msg.kind {
            SessionKind::Chat => &mut self.users,
            SessionKind::Notifications => &mut self.notified,
        };
        by_user
            .entry(msg.user.clone())
            .or_default()
            .push(msg.session);
        self.sessions.insert(
            msg.session,
            SessionEntry {
                user: msg.user.clone(),
                kind: msg.kind,
                outbox: Outbox::new(msg.addr, msg.backlog),
                rooms: Vec::new(),
                joining: Vec::new(),
                conn: msg.conn,
            },
        );
        match msg.kind {
            SessionKind::Chat => self.send(msg.session, welcome),
            // A notification socket gets notifications only, as the seed protocol's did,
            // starting with those that waited for the user.
            SessionKind::Notifications if self.limits.inbox => {
                let op = Op::InboxTake {
                    user: msg.user,
                    session: msg.session,
                };
                if self.store.send(op).is_err() {
                    log::warn!("inbox not read: the store has stopped");
                }
            }
            SessionKind::Notifications => {}
        }
        if let Some(room) = msg.room {
            self.join(msg.session, room, msg.since);
        }
        self.settle(ctx);
        Ok(())
    }
}

impl Handler<Disconnect> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        // Dropping the handle of an evicted session closes our duplicate of its socket.
        self.evicted.remove(&msg.session);
        if let Some(entry) = self.remove_session(msg.session) {
            log::debug!("session gone session={} user={}", msg.session, entry.user);
        }
        self.settle(ctx);
    }
}

impl Handler<ClientRequest> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: ClientRequest, ctx: &mut Context<Self>) {
        let session = msg.session;
        match msg.command {
            Command::Join { room, since } => self.join(session, room, since),
            Command::Leave { room } => {
                if self.check_member(session, &room) {
                    let user = match self.sessions.get_mut(&session) {
                        Some(entry) => {
                            entry.rooms.retain(|r| *r != room);
                            entry.joining.retain(|r| *r != room);
                            entry.user.clone()
                        }
                        None => return,
                    };
                    self.leave_room(session, &user, &room);
                    let frame = ServerMessage::Left { room_id: &room }.encode();
                    self.send(session, frame);
                }
            }
            Command::Chat {
                room,
                text,
                client_msg_id,
            } => self.chat(session, room, text, client_msg_id),
            Command::Typing { room, is_typing } => {
                if self.check_member(session, &room) {
                    let Some(user) = self.sessions.get(&session).map(|e| e.user.clone()) else {
                        return;
                    };
                    let frame = ServerMessage::Typing {
                        user_id: &user,
                        room_id: &room,
                        is_typing,
                    }
                    .encode();
                    self.fan_out(&room, &frame, Some(&user));
                }
            }
            Command::GetUsers { room } => {
                if self.check_member(session, &room) {
                    // A session still joining sees the room as it is (possibly empty).
                    let users = self.rooms.get(&room).map(Room::users).unwrap_or_default();
                    let frame = ServerMessage::ActiveUsers {
                        users: &users,
                        room_id: &room,
                    }
                    .encode();
                    self.send(session, frame);
                }
            }
            Command::Private { to_user, content } => self.private(session, to_user, content),
            Command::History {
                room,
                before_seq,
                limit,
            } => self.history(session, room, before_seq, limit),
        }
        self.settle(ctx);
    }
}

impl Handler<StoreEvents> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: StoreEvents, ctx: &mut Context<Self>) {
        for event in msg.0 {
            match event {
                Event::Stored(stored) => {
                    self.chats_in_store -= 1;
                    self.stored(stored)
                }
                Event::NotStored {
                    room,
                    client_msg_id,
                    tag,
                    error,
                } => {
                    self.chats_in_store -= 1;
                    self.not_stored(room, client_msg_id, tag, error)
                }
                Event::Loaded {
                    room,
                    read,
                    tag,
                    result,
                } => self.loaded(room, read, tag, result),
                Event::InboxStored { tag, users, result } => {
                    if let Tag::Request(id) = tag
                        && let Some(Waiter::Notify(tx, mut pushed)) = self.waiting.remove(&id)
                    {
                        match result {
                            Ok(()) => pushed.stored = users,
                            Err(e) => log::warn!("notification not stored: {e}"),
                        }
                        let _ = tx.send(pushed);
                    }
                }
                Event::InboxTaken {
                    user,
                    session,
                    frames,
                } => self.inbox_taken(user, session, frames),
            }
        }
        self.settle(ctx);
    }
}

impl Handler<Shutdown> for ChatServer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) {
        self.shutting_down = true;
        log::info!("closing sessions={} for shutdown", self.sessions.len());
        // What is gathered goes first, then the close orders.
        self.outboxes.flush(usize::MAX);
        for entry in self.sessions.values() {
            entry.outbox.close(1001, "server shutting down");
        }
    }
}

impl Handler<CloseStore> for ChatServer {
    type Result = Option<std::thread::JoinHandle<()>>;

    fn handle(&mut self, _: CloseStore, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.close()
    }
}

impl Handler<Notify> for ChatServer {
    type Result = ResponseFuture<Pushed>;

    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) -> Self::Result {
        let users: Vec<UserId> = match msg.to {
            Audience::Users(users) => users,
            Audience::Everyone => {
                let mut all: Vec<UserId> = self.notified.keys().cloned().collect();
                all.sort_unstable();
                all
            }
        };
        let mut pushed = Pushed::default();
        for user in users {
            let Some(sockets) = self.notified.get(&user) else {
                pushed.offline.push(user);
                continue;
            };
            for session in sockets {
                if let Some(entry) = self.sessions.get(session) {
                    self.outboxes
                        .queue(*session, &entry.outbox, msg.frame.clone());
                    pushed.sockets += 1;
                }
            }
            pushed.reached.push(user);
        }
        self.metrics.notifications_pushed(pushed.sockets as u64);
        self.settle(ctx);
        if pushed.offline.is_empty() || !self.limits.inbox {
            return Box::pin(std::future::ready(pushed));
        }
        // The offline users' copies are kept; the answer waits until they are committed.
        let users = pushed.offline.clone();
        let (tx, rx) = oneshot::channel();
        let fallback = pushed.clone();
        let tag = self.wait(Waiter::Notify(tx, pushed));
        let op = Op::InboxPut {
            users,
            frame: msg.frame,
            tag,
        };
        if self.store.send(op).is_err()
            && let Tag::Request(id) = tag
        {
            self.waiting.remove(&id);
        }
        Box::pin(async move { rx.await.unwrap_or(fallback) })
    }
}

impl Handler<GetStats> for ChatServer {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(Stats {
            connections: self.sessions.len(),
            notification_sockets: self.notified.values().map(Vec::len).sum(),
            users: self.users.len(),
            rooms: self.rooms.len(),
            slow_consumers_closed: self.slow_consumers_closed,
        })
    }
}

impl Handler<ListRooms> for ChatServer {
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _ctx: &mut Context<Self>) -> Self::Result {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|(id, room)| RoomSummary {
                room_id: id.clone(),
                members: room.user_count(),
                sockets: room.session_count(),
                last_seq: room.last_seq(),
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room_id.cmp(&b.room_id));
        MessageResult(rooms)
    }
}

/// Awaits an answer that the store thread will cause; the store stopping answers `stopped`.
fn answer<T: 'static>(rx: oneshot::Receiver<T>, stopped: T) -> ResponseFuture<T> {
    Box::pin(async move { rx.await.unwrap_or(stopped) })
}

impl Handler<GetRoom> for ChatServer {
    type Result = ResponseFuture<Option<RoomDetail>>;

    fn handle(&mut self, msg: GetRoom, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(room) = self.rooms.get(&msg.room) {
            return Box::pin(std::future::ready(Some(room_detail(&msg.room, room))));
        }
        // No members: the store knows whether it ever had messages.
        let (tx, rx) = oneshot::channel();
        self.read_for(msg.room, Read::Recent(0), Waiter::Room(tx));
        answer(rx, None)
    }
}

impl Handler<ReadHistory> for ChatServer {
    type Result = ResponseFuture<Result<HistoryPage, ApiFailure>>;

    fn handle(&mut self, msg: ReadHistory, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let read = Read::Before {
            before: msg.before,
            limit: msg.limit,
        };
        self.read_for(msg.room, read, Waiter::History(tx));
        answer(
            rx,
            Err(ApiFailure::Store("the history store has stopped".into())),
        )
    }
}

impl Handler<PostMessage> for ChatServer {
    type Result = ResponseFuture<Result<Posted, ApiFailure>>;

    fn handle(&mut self, msg: PostMessage, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(std::future::ready(Err(ApiFailure::ShuttingDown)));
        }
        let (tx, rx) = oneshot::channel();
        let tag = self.wait(Waiter::Post(tx));
        self.append(msg.room, msg.user, msg.text, msg.client_msg_id, tag);
        answer(
            rx,
            Err(ApiFailure::Store("the history store has stopped".into())),
        )
    }
}

impl Handler<DisconnectUser> for ChatServer {
    type Result = usize;

    fn handle(&mut self, msg: DisconnectUser, ctx: &mut Context<Self>) -> usize {
        let mut sessions: Vec<SessionId> = Vec::new();
        for by_user in [&self.users, &self.notified] {
            sessions.extend(by_user.get(&msg.user).into_iter().flatten());
        }
        // What is gathered for them goes first, then the close order. Each session is
        // forgotten at once, so presence updates now, not when the socket finishes closing.
        self.outboxes.flush(usize::MAX);
        for session in &sessions {
            if let Some(entry) = self.remove_session(*session) {
                entry.outbox.close(close_code::DISCONNECTED, msg.reason);
            }
        }
        log::info!("disconnected user={} sockets={}", msg.user, sessions.len());
        self.settle(ctx);
        sessions.len()
    }
}
