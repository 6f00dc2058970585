//! `ChatServer`: the one actor that owns the shared state.
//!
//! It owns the rooms (members, sequence counters, recent history), the user map (user id ->
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
//! - A session whose actor has stopped is forgotten only when its own `Disconnect` arrives.
//!   Its requests queued before that (say, chats it accepted just before closing) are still
//!   handled in order; frames for it on the way are simply dropped.

pub mod messages;
mod outbox;
pub mod room;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;

use crate::broker::Broker;
use crate::config::Config;
use crate::conn::{ConnFd, ConnHandle};
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::{
    AnnouncedLimits, ErrorCode, Frame, PROTOCOL_VERSION, ServerMessage, close_code, error_frame,
    timestamp_now,
};
use crate::store::HistoryStore;
use messages::*;
use outbox::{Outbox, Outboxes};
use room::{Added, HistoryEntry, Removed, Room};

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
    /// Rooms this session is in, in join order (a handful: bounded by `max_rooms_per_socket`).
    rooms: Vec<RoomId>,
    /// Kept to cut the connection if the session stops reading.
    conn: Option<ConnFd>,
}

type Handle = Rc<Outbox>;

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
    store: Box<dyn HistoryStore>,
    broker: Box<dyn Broker>,
    /// Set by `Shutdown`: no new sessions.
    shutting_down: bool,
    slow_consumers_closed: u64,
}

impl ChatServer {
    pub fn new(
        limits: ServerLimits,
        store: Box<dyn HistoryStore>,
        broker: Box<dyn Broker>,
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
            broker,
            shutting_down: false,
            slow_consumers_closed: 0,
        }
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

    fn join(&mut self, session: SessionId, room_id: RoomId) {
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
        let user = entry.user.clone();
        let outbox = Rc::clone(&entry.outbox);

        let room = Self::activate(
            &mut self.rooms,
            self.store.as_mut(),
            self.limits.history_keep,
            &room_id,
        );
        let added = room.add(&user, session, Rc::clone(&outbox));

        // `joined`, then the history, queued together: live frames for this room can only be
        // queued after them, so nothing is lost or doubled between history and live.
        let recent: Vec<&HistoryEntry> = room.recent(self.limits.history_on_join).collect();
        let joined = ServerMessage::Joined {
            room_id: &room_id,
            user_id: &user,
            users: &room.users(),
            last_seq: room.last_seq(),
            history: recent.len(),
        }
        .encode();
        self.outboxes.queue(session, &outbox, joined);
        for entry in recent {
            self.outboxes.queue(session, &outbox, entry.frame.clone());
        }

        if added == Added::FirstSessionOfUser {
            let timestamp = timestamp_now();
            let message = format!("{user} joined the room");
            let frame = ServerMessage::UserJoined {
                user_id: &user,
                room_id: &room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode();
            self.fan_out(&room_id, &frame, Some(&user));
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
        self.settle(ctx);
    }

    /// Removes a session that stopped reading, orders it closed with 4001, and cuts its
    /// connection when the grace period ends unless its `Disconnect` comes first.
    fn evict_slow(&mut self, session: SessionId, ctx: &mut Context<Self>) {
        let Some(entry) = self.remove_session(session) else {
            return;
        };
        self.slow_consumers_closed += 1;
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

    fn chat(
        &mut self,
        session: SessionId,
        room_id: RoomId,
        text: String,
        client_msg_id: Option<String>,
    ) {
        if !self.check_member(session, &room_id) {
            return;
        }
        let Some(user) = self.sessions.get(&session).map(|e| e.user.clone()) else {
            return;
        };
        self.post(&room_id, &user, &text, client_msg_id.as_deref());
    }

    /// The room's live state, loaded from the store if it has no members now.
    fn activate<'a>(
        rooms: &'a mut HashMap<RoomId, Room<Handle>>,
        store: &mut dyn HistoryStore,
        keep: usize,
        room_id: &RoomId,
    ) -> &'a mut Room<Handle> {
        match rooms.entry(room_id.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let snapshot = store.load(room_id, keep).unwrap_or_else(|e| {
                    log::error!("history load failed room={room_id}: {e}");
                    Default::default()
                });
                log::debug!("room active room={room_id} last_seq={}", snapshot.last_seq);
                v.insert(Room::new(snapshot.last_seq, snapshot.recent, keep))
            }
        }
    }

    /// Sequences, records and fans out one chat message from `user`.
    fn post(
        &mut self,
        room_id: &RoomId,
        user: &UserId,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Posted {
        let room = Self::activate(
            &mut self.rooms,
            self.store.as_mut(),
            self.limits.history_keep,
            room_id,
        );
        let seq = room.next_seq();
        let timestamp = timestamp_now();
        let message_id = uuid::Uuid::new_v4().to_string();
        let frame = ServerMessage::Chat {
            user_id: user,
            room_id,
            text,
            timestamp: &timestamp,
            message_id: &message_id,
            seq,
            client_msg_id,
        }
        .encode();
        let entry = HistoryEntry {
            seq,
            frame: frame.clone(),
        };
        if let Err(e) = self.store.append(room_id, &entry) {
            log::error!("history append failed room={room_id} seq={seq}: {e}");
        }
        room.record(entry);
        self.fan_out(room_id, &frame, None);
        if self.rooms.get(room_id).is_some_and(Room::is_empty) {
            self.rooms.remove(room_id);
        }
        Posted {
            room_id: room_id.clone(),
            message_id,
            seq,
            timestamp,
            duplicate: false,
        }
    }

    fn private(&mut self, session: SessionId, to_user: UserId, content: String) {
        let Some(from) = self.sessions.get(&session).map(|e| e.user.clone()) else {
            return;
        };
        let targets = self.users.get(&to_user).cloned().unwrap_or_default();
        if targets.is_empty() {
            let msg = format!("user '{to_user}' is not online");
            return self.send_error(session, ErrorCode::UserOffline, &msg, None);
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

    fn history(&mut self, session: SessionId, room_id: RoomId, before: Option<Seq>, limit: usize) {
        if !self.check_member(session, &room_id) {
            return;
        }
        let (entries, has_more) = self.page(&room_id, before, limit);
        let raw: Vec<&serde_json::value::RawValue> = entries
            .iter()
            .filter_map(|e| serde_json::from_str(&e.frame).ok())
            .collect();
        let frame = ServerMessage::History {
            room_id: &room_id,
            messages: &raw,
            has_more,
        }
        .encode();
        self.send(session, frame);
    }

    /// Up to `limit` messages before `before`, oldest first, and whether older ones exist.
    fn page(
        &mut self,
        room_id: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> (Vec<HistoryEntry>, bool) {
        // The in-memory window answers when it holds the whole page or reaches back to the
        // room's first message; otherwise the store, which may keep more, does.
        if let Some(room) = self.rooms.get(room_id) {
            let (window, window_more) = room.page_before(before, limit);
            if window.len() == limit || room.window_reaches_start() {
                return (window.into_iter().cloned().collect(), window_more);
            }
        }
        self.store
            .page_before(room_id, before, limit)
            .unwrap_or_else(|e| {
                log::error!("history page failed room={room_id}: {e}");
                (Vec::new(), false)
            })
    }

    /// The room's newest seq, from memory or the store; `None` when it never had a message.
    fn known_last_seq(&mut self, room_id: &RoomId) -> Option<Seq> {
        let seq = match self.rooms.get(room_id) {
            Some(room) => return Some(room.last_seq()),
            None => self
                .store
                .load(room_id, 0)
                .map(|s| s.last_seq)
                .unwrap_or_default(),
        };
        (seq > Seq(0)).then_some(seq)
    }
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
                user: msg.user,
                kind: msg.kind,
                outbox: Outbox::new(msg.addr, msg.backlog),
                rooms: Vec::new(),
                conn: msg.conn,
            },
        );
        // A notification socket gets notifications only, as the seed protocol's did.
        if msg.kind == SessionKind::Chat {
            self.send(msg.session, welcome);
        }
        if let Some(room) = msg.room {
            self.join(msg.session, room);
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
            Command::Join { room } => self.join(session, room),
            Command::Leave { room } => {
                if self.check_member(session, &room) {
                    let user = match self.sessions.get_mut(&session) {
                        Some(entry) => {
                            entry.rooms.retain(|r| *r != room);
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
                    let Some(r) = self.rooms.get(&room) else {
                        return;
                    };
                    let frame = ServerMessage::ActiveUsers {
                        users: &r.users(),
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

impl Handler<Notify> for ChatServer {
    type Result = MessageResult<Notify>;

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
        self.settle(ctx);
        MessageResult(pushed)
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

impl Handler<GetRoom> for ChatServer {
    type Result = Option<RoomDetail>;

    fn handle(&mut self, msg: GetRoom, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(room) = self.rooms.get(&msg.room) {
            return Some(RoomDetail {
                room_id: msg.room,
                members: room.users().into_iter().cloned().collect(),
                sockets: room.session_count(),
                last_seq: room.last_seq(),
            });
        }
        let last_seq = self.known_last_seq(&msg.room)?;
        Some(RoomDetail {
            room_id: msg.room,
            members: Vec::new(),
            sockets: 0,
            last_seq,
        })
    }
}

impl Handler<ReadHistory> for ChatServer {
    type Result = Result<HistoryPage, ApiFailure>;

    fn handle(&mut self, msg: ReadHistory, _ctx: &mut Context<Self>) -> Self::Result {
        if self.known_last_seq(&msg.room).is_none() {
            return Err(ApiFailure::UnknownRoom(msg.room));
        }
        let (entries, has_more) = self.page(&msg.room, msg.before, msg.limit);
        Ok(HistoryPage {
            room_id: msg.room,
            messages: entries.into_iter().map(|e| e.frame).collect(),
            has_more,
        })
    }
}

impl Handler<PostMessage> for ChatServer {
    type Result = Result<Posted, ApiFailure>;

    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err(ApiFailure::ShuttingDown);
        }
        let posted = self.post(
            &msg.room,
            &msg.user,
            &msg.text,
            msg.client_msg_id.as_deref(),
        );
        self.settle(ctx);
        Ok(posted)
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
