//! The typed actor messages between sessions, the HTTP layer and `ChatServer`.
//!
//! One struct per interaction. `ChatServer` reaches sessions only through
//! `Recipient<Outbound>`, so it does not depend on the session type. The reply types are
//! internal and derive no `Serialize`: the HTTP layer has its own bodies (`http::api`,
//! `http::health`), so renaming a field here cannot change a public contract.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::conn::ConnFd;
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::Frame;

/// Frames and orders from `ChatServer` to one session. Every variant occupies one slot of the
/// session's bounded mailbox, which is how a slow consumer is detected.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Outbound {
    /// One encoded frame, shared with every other recipient.
    Frame(Frame),
    /// Several frames, in order: what `ChatServer` gathered for the session in one pass.
    Batch(Vec<Frame>),
    /// Close the socket with this code and reason, then stop.
    Close { code: u16, reason: &'static str },
}

/// What `ChatServer` handed to a session's mailbox and the session has not written yet, in
/// frames and in bytes, and when the session last wrote: `ChatServer` adds what it hands
/// over, the session subtracts what it writes. This is the session's outbound queue bound,
/// which the mailbox cannot count itself since one item may carry many frames; the progress
/// time tells a socket that stopped taking bytes from one that is merely behind.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<BacklogCounts>);

#[derive(Debug, Default)]
struct BacklogCounts {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    /// Milliseconds since [`progress_epoch`] when the session last wrote (0: never).
    wrote_at_ms: AtomicU64,
}

/// The instant progress times count from: the first use in this process.
fn progress_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // Never 0, so that 0 can mean "never wrote".
    u64::try_from(progress_epoch().elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

impl Backlog {
    /// Frames handed over and not yet written.
    pub fn frames(&self) -> usize {
        self.0.frames.load(Ordering::Relaxed)
    }

    /// Bytes of those frames.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// `ChatServer` handed `frames` frames of `bytes` bytes to the session.
    pub fn handed(&self, frames: usize, bytes: usize) {
        if self.0.wrote_at_ms.load(Ordering::Relaxed) == 0 {
            // A session that never wrote counts as having made progress when first fed.
            self.0.wrote_at_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.0.frames.fetch_add(frames, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The session wrote `frames` frames of `bytes` bytes to its socket.
    pub fn written(&self, frames: usize, bytes: usize) {
        self.0.frames.fetch_sub(frames, Ordering::Relaxed);
        self.0.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.0.wrote_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since the session last wrote (or was first handed something).
    pub fn since_progress(&self) -> Duration {
        let at = self.0.wrote_at_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(at.max(1)))
    }
}

/// How many of a session's requests `ChatServer` has not handled yet: the session counts one
/// up as it sends a request, and the request's [`Ticket`] counts it down when `ChatServer` is
/// done with it (dropping the request drops the ticket). So the bound on requests in flight
/// costs no answer from `ChatServer`'s thread back to the session's, which a `send` with a
/// reply would: one more thread wake-up per chat.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Requests sent and not yet handled.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight, until the returned ticket is dropped.
    pub fn ticket(&self) -> Ticket {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ticket(Arc::clone(&self.0))
    }
}

/// One request counted in its session's [`InFlight`]; dropping it counts the request handled.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Ticket {
    /// A ticket of its own count, for requests no session counts (tests).
    pub fn untracked() -> Ticket {
        InFlight::default().ticket()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Rooms, chat, presence, private messages (`/ws`, `/ws/{room}/{user}`).
    Chat,
    /// Receives the user's notifications; answers `ping` (`/notifications/{user}`).
    Notifications,
}

/// A new WebSocket session asks to be admitted. Refused when the server is full or stopping.
#[derive(Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct Connect {
    pub session: SessionId,
    pub user: UserId,
    pub kind: SessionKind,
    pub addr: Recipient<Outbound>,
    /// The session's count of frames not yet written.
    pub backlog: Backlog,
    /// The TCP connection, to cut it if the session stops reading.
    pub conn: Option<ConnFd>,
    /// The room named in the URL (`/ws/{room_id}/{user_id}`), joined at once.
    pub room: Option<RoomId>,
    /// `?since_seq=` on that URL.
    pub since: Option<Seq>,
}

/// Why a `Connect` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the server is at its connection limit")]
    Full,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A session has stopped (closed, dropped, timed out). Sent exactly once, from the session's
/// `stopped`; unknown ids (already evicted) are ignored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
}

/// A client request that concerns the server's shared state, already decoded and with its
/// room resolved by the session. Sent with `do_send`: it is handled even if the session has
/// stopped by then (a chat the session sent just before closing is still stored), and
/// nothing is answered on the session's thread but the frames it causes.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ClientRequest {
    pub session: SessionId,
    pub command: Command,
    /// Counts the request in flight until `ChatServer` has handled it.
    pub ticket: Ticket,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Join {
        room: RoomId,
        /// Deliver exactly the messages after this seq (recovery after a reconnect).
        since: Option<Seq>,
    },
    Leave {
        room: RoomId,
    },
    Chat {
        room: RoomId,
        text: String,
        client_msg_id: Option<String>,
    },
    Typing {
        room: RoomId,
        is_typing: bool,
    },
    GetUsers {
        room: RoomId,
    },
    Private {
        to_user: UserId,
        content: String,
    },
    History {
        room: RoomId,
        before_seq: Option<Seq>,
        limit: usize,
    },
}

/// Pushes one encoded `notification` frame to the notification sockets of `to`.
#[derive(Message)]
#[rtype(result = "Pushed")]
pub struct Notify {
    pub to: Audience,
    pub frame: Frame,
}

/// Who a notification is for.
#[derive(Debug, Clone)]
pub enum Audience {
    Users(Vec<UserId>),
    /// Every user with a notification socket open.
    Everyone,
}

/// What a `Notify` reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Notification sockets the frame was queued for.
    pub sockets: usize,
    /// Users with at least one such socket, in the order asked (sorted for `Everyone`).
    pub reached: Vec<UserId>,
    /// Users asked for who had none.
    pub offline: Vec<UserId>,
    /// Of the offline users, those for whom the notification was stored, to be delivered
    /// when they next open a notification socket.
    pub stored: Vec<UserId>,
}

/// Close every session with 1001 and refuse new ones: the process is stopping.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Counts for health checks and tests.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live WebSocket sessions of every kind.
    pub connections: usize,
    /// Of which notification sockets.
    pub notification_sockets: usize,
    /// Users with at least one chat socket (notification sockets alone do not count).
    pub users: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Sessions closed for not reading, since start.
    pub slow_consumers_closed: u64,
    /// How the history store is doing.
    pub store: crate::store::StoreState,
    /// Cluster mode: whether the node is subscribed to the cluster's channel (`None` alone).
    pub subscribed: Option<bool>,
    /// Cluster mode: times the subscription was lost since start.
    pub broker_reconnects: u64,
}

/// A receiver of the counts `ChatServer` publishes after every message: `/health` reads it
/// without waiting in the mailbox.
#[derive(Message)]
#[rtype(result = "tokio::sync::watch::Receiver<Stats>")]
pub struct WatchStats;

/// `GET /api/rooms`: every room with at least one member. Fails when the store could not
/// say the newest seq of a room whose members are all on other nodes.
#[derive(Message)]
#[rtype(result = "Result<Vec<RoomSummary>, ApiFailure>")]
pub struct ListRooms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub room_id: RoomId,
    /// Users present (a user with two sockets counts once).
    pub members: usize,
    /// Sockets present.
    pub sockets: usize,
    /// The room's newest seq (0: none yet).
    pub last_seq: Seq,
}

/// `GET /api/rooms/{room_id}`: one room's members. `None` when the room is unknown: no
/// members and no history. Fails when the store, asked for a room not live here, failed.
#[derive(Message)]
#[rtype(result = "Result<Option<RoomDetail>, ApiFailure>")]
pub struct GetRoom {
    pub room: RoomId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDetail {
    pub room_id: RoomId,
    /// Present users, sorted.
    pub members: Vec<UserId>,
    pub sockets: usize,
    pub last_seq: Seq,
}

/// `GET /api/rooms/{room_id}/history`: up to `limit` chat messages with seq below `before`
/// (the newest when `None`), oldest first.
#[derive(Message)]
#[rtype(result = "Result<HistoryPage, ApiFailure>")]
pub struct ReadHistory {
    pub room: RoomId,
    pub before: Option<Seq>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub room_id: RoomId,
    /// Each message as its encoded `chat` frame (a JSON object), oldest first.
    pub messages: Vec<Frame>,
    /// Older messages exist.
    pub has_more: bool,
}

/// `POST /api/rooms/{room_id}/messages`: a backend posts as `user`, who need not be a
/// member. The message takes the chat path: next seq, history, fan-out to every member.
#[derive(Message)]
#[rtype(result = "Result<Posted, ApiFailure>")]
pub struct PostMessage {
    pub room: RoomId,
    pub user: UserId,
    pub text: String,
    pub client_msg_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub room_id: RoomId,
    pub message_id: String,
    pub seq: Seq,
    pub timestamp: String,
    /// The same (user, room, client_msg_id) was posted before: this is its original answer
    /// and nothing new was posted.
    pub duplicate: bool,
}

/// Why an API request to `ChatServer` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiFailure {
    #[error("no room '{0}'")]
    UnknownRoom(RoomId),
    #[error("the history store failed: {0}")]
    Store(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// `POST /api/users/{user_id}/disconnect`: closes every socket of the user (chat and
/// notification) with [`crate::protocol::close_code::DISCONNECTED`]. Answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DisconnectUser {
    pub user: UserId,
    pub reason: &'static str,
}

/// Stop the store once what is queued is committed; answers the thread to join.
#[derive(Message)]
#[rtype(result = "Option<std::thread::JoinHandle<()>>")]
pub struct CloseStore;
