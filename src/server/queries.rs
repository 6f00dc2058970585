//! The HTTP API's questions and orders to `ChatServer`: counts, rooms, one room, history
//! pages, posting as a backend, and notifications. Answers that need the store wait on a
//! oneshot ([`super::store_bridge::Waiter`]), never in the actor. The reply types are
//! internal ([`super::messages`]); the HTTP layer converts them into its own bodies.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::ChatServer;
use super::messages::{
    ApiFailure, Audience, HistoryPage, Notify, PostMessage, Posted, Pushed, ReadHistory,
    RoomDetail, RoomSummary, Stats,
};
use super::room::Room;
use super::store_bridge::Waiter;
use crate::cluster::peers::PeerEvent;
use crate::ids::{RoomId, Seq, UserId};
use crate::store::{Op, Read, Tag};

impl ChatServer {
    pub(super) fn stats(&self) -> Stats {
        Stats {
            connections: self.sessions.len(),
            notification_sockets: self.sessions.notification_socket_count(),
            users: self.sessions.chat_users(),
            rooms: self.rooms.len(),
            slow_consumers_closed: self.slow_consumers_closed,
            store: self.store_state,
            subscribed: self.cluster.then_some(self.subscribed),
            broker_reconnects: self.broker_reconnects,
        }
    }

    /// Every room with a member on any node, sorted by id. Rooms with members only on other
    /// nodes (cluster mode) take their newest seq from the store.
    pub(super) fn list_rooms(&mut self) -> ResponseFuture<Result<Vec<RoomSummary>, ApiFailure>> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .keys()
            .filter_map(|id| self.room_summary(id, Seq(0)))
            .collect();
        let elsewhere: Vec<RoomId> = match self.cluster {
            true => self
                .peers
                .rooms()
                .filter(|r| !self.rooms.contains_key(*r))
                .cloned()
                .collect(),
            false => Vec::new(),
        };
        if elsewhere.is_empty() {
            rooms.sort_unstable_by(|a, b| a.room_id.cmp(&b.room_id));
            return Box::pin(std::future::ready(Ok(rooms)));
        }
        let (tx, rx) = oneshot::channel();
        let pending = elsewhere.len();
        let rooms = Ok(rooms);
        let tag = self.wait(Waiter::Rooms { tx, rooms, pending });
        for room in elsewhere {
            let op = Op::Read {
                room,
                read: Read::Recent(0),
                tag,
            };
            if let Err(Op::Read { room, read, tag }) = self.store.send(op) {
                self.loaded(room, read, tag, Err("the history store has stopped".into()));
            }
        }
        answer(rx, Err(store_stopped()))
    }

    /// One room's counts over the cluster, if anyone is in it. `stored` is its newest seq
    /// in the store, for a room with no members on this node.
    pub(super) fn room_summary(&self, room_id: &RoomId, stored: Seq) -> Option<RoomSummary> {
        let detail = self.room_detail(room_id, stored)?;
        (!detail.members.is_empty()).then_some(RoomSummary {
            room_id: detail.room_id,
            members: detail.members.len(),
            sockets: detail.sockets,
            last_seq: detail.last_seq,
        })
    }

    /// One room as the cluster has it: its members on every node, their sockets, and its
    /// newest seq (`stored` for a room with no members here). `None` when it has neither
    /// members nor messages.
    pub(super) fn room_detail(&self, room_id: &RoomId, stored: Seq) -> Option<RoomDetail> {
        let live = self.rooms.get(room_id);
        let members = self.room_users(room_id);
        let last_seq = live.map_or(stored, Room::last_seq);
        if members.is_empty() && last_seq == Seq(0) {
            return None;
        }
        let elsewhere = match self.cluster {
            true => self.peers.count(room_id).sockets,
            false => 0,
        };
        Some(RoomDetail {
            room_id: room_id.clone(),
            members,
            sockets: live.map_or(0, Room::session_count) + elsewhere,
            last_seq,
        })
    }

    /// One room: live here or on another node, or known to the store only (no members), or
    /// unknown (`None`).
    pub(super) fn get_room(
        &mut self,
        room: RoomId,
    ) -> ResponseFuture<Result<Option<RoomDetail>, ApiFailure>> {
        if self.rooms.contains_key(&room) {
            return Box::pin(std::future::ready(Ok(self.room_detail(&room, Seq(0)))));
        }
        // No members here: the store knows the room's newest seq.
        let (tx, rx) = oneshot::channel();
        self.read_for(room, Read::Recent(0), Waiter::Room(tx));
        answer(rx, Err(store_stopped()))
    }

    pub(super) fn read_history(
        &mut self,
        msg: ReadHistory,
    ) -> ResponseFuture<Result<HistoryPage, ApiFailure>> {
        let (tx, rx) = oneshot::channel();
        let read = Read::Before {
            before: msg.before,
            limit: msg.limit,
        };
        self.read_for(msg.room, read, Waiter::History(tx));
        answer(rx, Err(store_stopped()))
    }

    /// A backend posts into a room: the chat path, answered once committed.
    pub(super) fn post_message(
        &mut self,
        msg: PostMessage,
    ) -> ResponseFuture<Result<Posted, ApiFailure>> {
        if self.shutting_down {
            return Box::pin(std::future::ready(Err(ApiFailure::ShuttingDown)));
        }
        let (tx, rx) = oneshot::channel();
        let tag = self.wait(Waiter::Post(tx));
        self.append(msg.room, msg.user, msg.text, msg.client_msg_id, tag);
        answer(rx, Err(store_stopped()))
    }

    /// Queues one encoded notification for every notification socket of the users named;
    /// the offline users' copies go to their inbox, and the answer waits until they are
    /// committed.
    pub(super) fn notify(&mut self, msg: Notify) -> ResponseFuture<Pushed> {
        let to = match &msg.to {
            Audience::Users(users) => Some(users.clone()),
            Audience::Everyone => None,
        };
        let users: Vec<UserId> = match msg.to {
            Audience::Users(users) => users,
            Audience::Everyone => {
                let mut all = self.sessions.notified_users();
                // Other nodes' users only while the way to them is up (below).
                if self.cluster && self.subscribed {
                    all.extend(self.peers.notified_users().cloned());
                    all.sort_unstable();
                    all.dedup();
                }
                all
            }
        };
        // Other nodes deliver to their own sockets: counted as they last announced them.
        self.tell_peers(|n| PeerEvent::Notify {
            n,
            to,
            f: msg.frame.to_string(),
        });
        let mut pushed = Pushed::default();
        // This node's sockets: its own metric (the other nodes count theirs).
        let mut local = 0;
        for user in users {
            let mut sockets = 0;
            for session in self.sessions.notification_sockets(&user) {
                if let Some(entry) = self.sessions.get(*session) {
                    self.outboxes
                        .queue(*session, &entry.handle, msg.frame.clone());
                    sockets += 1;
                }
            }
            // While this node cannot reach Redis, what it publishes reaches no other node:
            // a user with sockets only there is not reached (offline, and kept in the inbox
            // if the store can).
            let elsewhere = match self.cluster && self.subscribed {
                true => self.peers.notification_sockets_of(&user),
                false => 0,
            };
            if sockets + elsewhere == 0 {
                pushed.offline.push(user);
                continue;
            }
            local += sockets;
            pushed.sockets += sockets + elsewhere;
            pushed.reached.push(user);
        }
        self.metrics.notifications_pushed(local as u64);
        if pushed.offline.is_empty() || !self.limits.inbox {
            return Box::pin(std::future::ready(pushed));
        }
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
        answer(rx, fallback)
    }
}

fn store_stopped() -> ApiFailure {
    ApiFailure::Store("the history store has stopped".into())
}

/// How long an HTTP request waits for the store before it is answered as failed. The store
/// answers every op, even after failing for good; this bounds a store that hangs (a disk that
/// stopped answering).
const STORE_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Awaits an answer that the store thread will cause; the store stopping, or not answering
/// within [`STORE_ANSWER_TIMEOUT`], answers `stopped`.
fn answer<T: 'static>(rx: oneshot::Receiver<T>, stopped: T) -> ResponseFuture<T> {
    Box::pin(async move {
        match tokio::time::timeout(STORE_ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => stopped,
        }
    })
}
