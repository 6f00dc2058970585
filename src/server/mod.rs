//! `ChatServer`: the one actor that owns the shared state.
//!
//! It owns the rooms (members, the newest delivered seq, recent history), the sessions and
//! users ([`registry`]) and presence, and it alone changes room membership. Sessions send it
//! typed [`messages`]; it answers and broadcasts through each session's [`outbox`], which
//! gathers frames while the mailbox is being worked through and hands them over when it is
//! empty.
//!
//! The actor is split by concern; each file adds an `impl ChatServer` block, and the
//! handlers below only dispatch:
//! - [`membership`]: connect, join (from the window or a store read), admit, leave, remove a
//!   session, evict a slow consumer, kick a user.
//! - [`chat`]: chat messages (to the store and back: deliver, ack), private messages, typing.
//! - [`store_bridge`]: what comes back from the store thread (`StoreEvents`), history pages,
//!   the offline inbox, and the HTTP requests waiting for the store.
//! - [`queries`]: the HTTP API's questions and orders: rooms, one room, history, post,
//!   stats, notify.
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
//! - A session whose actor has stopped is forgotten only when its own `Disconnect` arrives.
//!   Its requests queued before that (say, chats it accepted just before closing) are still
//!   handled in order; frames for it on the way are simply dropped.

mod chat;
mod membership;
pub mod messages;
mod outbox;
mod peers;
mod queries;
pub mod registry;
mod replicas;
pub mod room;
mod store_bridge;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use crate::config::Config;
use crate::conn::ConnHandle;
use crate::ids::{RoomId, SessionId, UserId};
use crate::metrics::Metrics;
use crate::protocol::{AnnouncedLimits, ErrorCode, Frame, ServerMessage, error_frame};
use crate::store::writer::StoreEvents;
use crate::store::{Backend, StoreHandle, StoreState};
use messages::*;
use outbox::{Outbox, Outboxes, QueueBound};
use registry::Registry;
use room::Room;
use store_bridge::Waiter;

/// The limits `ChatServer` enforces, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// What may wait for one session before it is a slow consumer.
    pub queue: QueueBound,
    /// Chats one session may have waiting for the store; past it they are refused
    /// `overloaded`.
    pub max_in_store: usize,
    pub max_rooms_per_socket: usize,
    /// Sockets of one kind per user; past it the user's oldest is closed with 4005.
    pub max_sockets_per_user: usize,
    pub history_on_join: usize,
    pub history_keep: usize,
    /// `--retention-messages` (0: no count limit): the window keeps no more than the store.
    pub retention_messages: usize,
    /// `--retention-secs` in ms (0: no age limit; always 0 in a cluster, which applies none),
    /// measured by `clock`, the store's: the window keeps nothing the store deletes.
    pub retention_ms: i64,
    pub clock: crate::store::Clock,
    /// Most messages a `since_seq` join is given.
    pub recovery_max: usize,
    /// Offline users' notifications are stored (the inbox holds at least one).
    pub inbox: bool,
    pub slow_consumer_grace: Duration,
    pub announced: AnnouncedLimits,
}

impl ServerLimits {
    /// Most messages a room's in-memory window holds: `--history-keep`, and never more than
    /// the store keeps by count, so a join answered from the window (its history, or a
    /// `since_seq` recovery) never hands out what the store's retention deleted.
    pub fn window_keep(&self) -> usize {
        match self.retention_messages {
            0 => self.history_keep,
            n => self.history_keep.min(n),
        }
    }

    pub fn from_config(c: &Config) -> Self {
        ServerLimits {
            max_connections: c.max_connections,
            queue: QueueBound {
                frames: c.max_pending,
                bytes: c.max_pending_bytes,
            },
            max_in_store: c.max_in_flight,
            max_rooms_per_socket: c.max_rooms_per_socket,
            max_sockets_per_user: c.max_sockets_per_user,
            history_on_join: c.history_on_join,
            history_keep: c.history_keep,
            retention_messages: usize::try_from(c.retention_messages).unwrap_or(usize::MAX),
            retention_ms: match c.cluster {
                Some(_) => 0,
                None => i64::try_from(c.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            },
            clock: c.clock.clone(),
            recovery_max: c.recovery_max,
            inbox: c.inbox_max > 0,
            slow_consumer_grace: Duration::from_millis(c.slow_consumer_grace_ms),
            announced: c.announced_limits(),
        }
    }
}

/// How `ChatServer` reaches a session: its outbox.
type Handle = Rc<Outbox>;

/// Frames gathered after which `ChatServer` flushes at once instead of waiting for its
/// mailbox to drain, which a flood would postpone forever.
const FLUSH_EVERY_FRAMES: usize = 16_384;

/// Messages handled after which `ChatServer` flushes at once, for the same reason.
const FLUSH_EVERY_MESSAGES: usize = 256;

/// A room sheds new chats when most of its readers have more than this fraction of the queue
/// bound waiting: early enough that what is already accepted (each sender's chats in flight
/// and in the store) still fits below the bound, so readers the server is behind on are not
/// closed as slow.
const SHED_AT: usize = 8;

/// A session that wrote to its socket within this long is still reading: if its queue grows,
/// the server is behind, not the reader. Generous, because a session writes only when its
/// worker thread gets to it, and under a flood the workers can be busy for most of a second
/// (measured: 0.7 s); a reader that stopped reading never writes again and drops out of the
/// count after this long.
const PROGRESS_WINDOW: Duration = Duration::from_secs(2);

pub struct ChatServer {
    limits: ServerLimits,
    /// Live sessions and their users.
    sessions: Registry<Handle>,
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
    /// Messages handled since the last flush.
    since_flush: usize,
    /// What `/health` reads, published after every message so that it never waits in the
    /// mailbox behind a flood.
    stats: watch::Sender<Stats>,
    store: StoreHandle,
    /// How the store is doing, as it last reported.
    store_state: StoreState,
    /// Chats sent to the store and not yet answered.
    chats_in_store: usize,
    /// When each chat fanned out since the last flush reached `ChatServer`.
    fanouts: Vec<Instant>,
    /// HTTP requests waiting for the store, by `Tag::Request` number.
    waiting: HashMap<u64, Waiter>,
    next_request: u64,
    metrics: Arc<Metrics>,
    /// Cluster mode: chats are delivered from the cluster's channel (`replicas`), not when
    /// this node's store answers.
    cluster: bool,
    /// Cluster mode: chats held per room while a gap is filled or a join's read is on its way.
    held: HashMap<RoomId, replicas::Held>,
    /// Cluster mode: the node is subscribed to the cluster's channel.
    subscribed: bool,
    /// Cluster mode: times the subscription was lost.
    broker_reconnects: u64,
    /// Cluster mode: this node's id in node events (random at start).
    node_id: String,
    /// Cluster mode: the other nodes' presence, as they told it.
    peers: crate::cluster::peers::Peers,
    /// Cluster mode: where node events are published.
    publisher: Option<crate::cluster::peers::Publisher>,
    /// Cluster mode: how long a silent node's users stay present.
    presence_ttl: Duration,
    /// Set by `Shutdown`: no new sessions.
    shutting_down: bool,
    slow_consumers_closed: u64,
}

impl ChatServer {
    pub fn new(limits: ServerLimits, store: StoreHandle, metrics: Arc<Metrics>) -> Self {
        ChatServer {
            limits,
            sessions: Registry::default(),
            rooms: HashMap::new(),
            evicted: HashMap::new(),
            outboxes: Outboxes::default(),
            flush_scheduled: false,
            since_flush: 0,
            stats: watch::Sender::new(Stats::default()),
            store,
            store_state: StoreState::Ok,
            chats_in_store: 0,
            fanouts: Vec::new(),
            waiting: HashMap::new(),
            next_request: 1,
            metrics,
            cluster: false,
            held: HashMap::new(),
            subscribed: false,
            broker_reconnects: 0,
            node_id: uuid::Uuid::new_v4().to_string(),
            peers: Default::default(),
            publisher: None,
            presence_ttl: Duration::from_secs(30),
            shutting_down: false,
            slow_consumers_closed: 0,
        }
    }

    /// Starts a `ChatServer` on the current arbiter with its store thread on `backend`.
    pub fn start_with(
        config: &Config,
        backend: Box<dyn Backend>,
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
        Ok(ctx.run(ChatServer::new(limits, store, metrics)))
    }

    /// Starts a `ChatServer` of a cluster node on the current arbiter: its store thread
    /// answers from the Redis at `url`, and a subscriber thread brings it every chat any node
    /// stores ([`crate::cluster`]).
    pub fn start_cluster(
        config: &Config,
        url: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Addr<ChatServer>> {
        if config.retention_secs > 0 {
            log::warn!(
                "--retention-secs is not applied in a cluster: the rooms' streams are trimmed \
                 by count only (--retention-messages)"
            );
        }
        let ctx = Context::new();
        let store = crate::cluster::store::RedisStore::new(url, config.retention())?;
        let events = ctx.address().recipient();
        let store = StoreHandle::spawn(move |rx| store.run(rx, events))?;
        crate::cluster::subscriber::start(url, ctx.address().recipient())?;
        let limits = ServerLimits::from_config(config);
        let mut server = ChatServer::new(limits, store, metrics);
        server.cluster = true;
        server.publisher = Some(crate::cluster::peers::Publisher::start(url)?);
        server.presence_ttl = Duration::from_secs(config.presence_ttl_secs.max(1));
        Ok(ctx.run(server))
    }

    // Delivery: every frame for a session goes through its outbox.

    /// Queues one frame for one session.
    fn send(&mut self, session: SessionId, frame: Frame) {
        if let Some(entry) = self.sessions.get(session) {
            self.outboxes.queue(session, &entry.handle, frame);
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

    /// Answers a request taken after shutdown began with `shutting_down`, naming its room
    /// and, for a chat, its `client_msg_id`.
    fn refuse_for_shutdown(&mut self, session: SessionId, command: &Command) {
        const WHY: &str = "the server is shutting down; send again once reconnected";
        let code = ErrorCode::ShuttingDown;
        match command {
            Command::Chat {
                room,
                client_msg_id,
                ..
            } => self.send_chat_error(session, code, WHY, room, client_msg_id.as_deref()),
            Command::Join { room, .. }
            | Command::Leave { room }
            | Command::Typing { room, .. }
            | Command::GetUsers { room }
            | Command::History { room, .. } => self.send_error(session, code, WHY, Some(room)),
            Command::Private { .. } => self.send_error(session, code, WHY, None),
        }
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
        self.metrics.deliveries(queued as u64);
        queued
    }

    /// Whether `session` is a member of `room`; answers `not_in_room` when it is not.
    fn check_member(&mut self, session: SessionId, room: &RoomId) -> bool {
        let member = self.sessions.is_in(session, room);
        if !member {
            let msg = format!("you are not in room '{room}'");
            self.send_error(session, ErrorCode::NotInRoom, &msg, Some(room));
        }
        member
    }

    /// Ends a handler: publishes the counts, and makes sure what it queued is flushed: at
    /// once when much is gathered, otherwise once the mailbox is drained.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        self.metrics.set_rooms(self.rooms.len());
        self.metrics.set_users(self.sessions.chat_users());
        let stats = self.stats();
        self.stats.send_if_modified(|old| {
            let changed = *old != stats;
            *old = stats;
            changed
        });
        if self.outboxes.is_empty() && !self.store.pending() {
            return;
        }
        self.since_flush += 1;
        if self.since_flush >= FLUSH_EVERY_MESSAGES || self.outboxes.frames() >= FLUSH_EVERY_FRAMES
        {
            return self.flush(ctx);
        }
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // Spawned futures run after the mailbox is drained (see `outbox`).
            ctx.spawn(actix::fut::ready(()).map(|_, act: &mut Self, ctx| act.flush(ctx)));
        }
    }

    /// Hands the gathered frames to their sessions and evicts the slow consumers found doing
    /// so. Evicting announces `user_left`, which is flushed in turn.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.since_flush = 0;
        // An in-line store commits here what the handlers since the last flush sent, as one
        // transaction, and what it stored goes out in this same hand-over.
        for event in self.store.turn() {
            self.store_event(event);
            if self.outboxes.frames() >= FLUSH_EVERY_FRAMES {
                self.hand_over(ctx);
            }
        }
        self.hand_over(ctx);
        self.settle(ctx);
    }

    /// Hands every outbox's frames to its session; evicts the slow consumers found.
    fn hand_over(&mut self, ctx: &mut Context<Self>) {
        for session in self.outboxes.flush(self.limits.queue) {
            self.evict_slow(session, ctx);
        }
        // Fan-out time: from the chat reaching `ChatServer` to this hand-over to the last of
        // its recipients (the store's commit included).
        for received in self.fanouts.drain(..) {
            self.metrics.observe_fanout(received.elapsed());
        }
    }

    /// Whether the server is behind on `room`: most of its sessions still read (wrote within
    /// the progress window) yet have over half their queue bound waiting. Then new chats are
    /// refused (`overloaded`) rather than letting the readers' queues fill until they are
    /// closed as slow. One reader that lags while the others keep up is not the server being
    /// behind, and never holds up the room: it is closed as a slow consumer when it reaches
    /// the bound.
    fn room_saturated(&self, room: &RoomId) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        let threshold = self.limits.queue.bytes / SHED_AT;
        let behind = r
            .sessions()
            .filter(|(_, _, outbox)| {
                outbox.queued_bytes() > threshold && outbox.progressing(PROGRESS_WINDOW)
            })
            .count();
        behind * 2 > r.session_count()
    }
}

impl ChatServer {
    /// An in-line store's retention pass, `after` from now, then the next when it says.
    fn prune_after(&mut self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |act, ctx| {
            if let Some(next) = act.store.prune() {
                act.prune_after(next, ctx);
            }
            // A pass that failed for good left the store's `down` for the next turn.
            act.settle(ctx);
        });
    }
}

impl Actor for ChatServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // No capacity of its own: a `send` that finds a mailbox full waits and retries, and a
        // later request from the same session could overtake it. What bounds this mailbox is
        // each session's `max_in_flight` and the connection limit.
        ctx.set_mailbox_capacity(0);
        if let Some(first) = self.store.prune_every() {
            // An in-line store's retention runs here; a store thread runs its own.
            self.prune_after(first, ctx);
        }
        if self.cluster {
            // Beat a third of the presence TTL, and let silent nodes' users leave.
            let every = (self.presence_ttl / 3).max(Duration::from_millis(100));
            ctx.run_interval(every, |act, ctx| {
                act.beat();
                act.settle(ctx);
            });
        }
        log::info!("chat server started node={}", self.node_id);
    }
}

// The handlers: a table of contents. Each calls the method that lives with its concern, then
// `settle`s so that what it queued is flushed.

impl Handler<Connect> for ChatServer {
    type Result = Result<(), Refused>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.connect(msg, ctx);
        self.settle(ctx);
        result
    }
}

impl Handler<Disconnect> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.disconnect(msg.session);
        self.settle(ctx);
    }
}

impl Handler<ClientRequest> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: ClientRequest, ctx: &mut Context<Self>) {
        let session = msg.session;
        if self.shutting_down {
            // Its socket is closing with 1001 (the rooms are gone already): say why, so that
            // a chat is known not stored, and is sent again after reconnecting.
            self.refuse_for_shutdown(session, &msg.command);
            return self.settle(ctx);
        }
        match msg.command {
            Command::Join { room, since } => self.join(session, room, since),
            Command::Leave { room } => self.leave(session, room),
            Command::Chat {
                room,
                text,
                client_msg_id,
            } => self.chat(session, room, text, client_msg_id),
            Command::Typing { room, is_typing } => self.typing(session, room, is_typing),
            Command::GetUsers { room } => self.get_users(session, room),
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
                crate::store::Event::Peer(peer) => self.peer_event(peer, ctx),
                event => self.store_event(event),
            }
            // A batch can carry thousands of chats: flush within it when much is gathered.
            self.settle(ctx);
        }
    }
}

impl Handler<Shutdown> for ChatServer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        self.tell_peers(|n| crate::cluster::peers::PeerEvent::Bye { n });
        log::info!("closing sessions={} for shutdown", self.sessions.len());
        // Every socket goes: no presence announcements to sockets that are all closing.
        self.rooms.clear();
        let sessions: Vec<SessionId> = self.sessions.entries().map(|(id, _)| id).collect();
        for session in sessions {
            self.close_session(session, 1001, "server shutting down", ctx);
        }
        self.settle(ctx);
    }
}

impl Handler<CloseStore> for ChatServer {
    type Result = Option<std::thread::JoinHandle<()>>;

    fn handle(&mut self, _: CloseStore, ctx: &mut Context<Self>) -> Self::Result {
        // An in-line store commits and answers what is still queued first.
        self.flush(ctx);
        self.store.close()
    }
}

impl Handler<Notify> for ChatServer {
    type Result = ResponseFuture<Pushed>;

    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.notify(msg);
        self.settle(ctx);
        answer
    }
}

impl Handler<GetStats> for ChatServer {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<WatchStats> for ChatServer {
    type Result = MessageResult<WatchStats>;

    fn handle(&mut self, _: WatchStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats.subscribe())
    }
}

impl Handler<ListRooms> for ChatServer {
    type Result = ResponseFuture<Result<Vec<RoomSummary>, ApiFailure>>;

    fn handle(&mut self, _: ListRooms, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.list_rooms();
        self.settle(ctx);
        answer
    }
}

impl Handler<GetRoom> for ChatServer {
    type Result = ResponseFuture<Result<Option<RoomDetail>, ApiFailure>>;

    fn handle(&mut self, msg: GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.get_room(msg.room);
        self.settle(ctx);
        answer
    }
}

impl Handler<ReadHistory> for ChatServer {
    type Result = ResponseFuture<Result<HistoryPage, ApiFailure>>;

    fn handle(&mut self, msg: ReadHistory, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.read_history(msg);
        self.settle(ctx);
        answer
    }
}

impl Handler<PostMessage> for ChatServer {
    type Result = ResponseFuture<Result<Posted, ApiFailure>>;

    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.post_message(msg);
        self.settle(ctx);
        answer
    }
}

impl Handler<DisconnectUser> for ChatServer {
    type Result = usize;

    fn handle(&mut self, msg: DisconnectUser, ctx: &mut Context<Self>) -> usize {
        let closed = self.disconnect_user(&msg.user, msg.reason, ctx);
        self.settle(ctx);
        closed
    }
}
