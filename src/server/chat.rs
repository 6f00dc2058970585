//! The chat path: a chat goes to the store, which sequences and commits it; when it comes
//! back stored it is recorded in the room's window, fanned out and acknowledged. Also the
//! messages that are never stored: private messages and typing.

use super::ChatServer;
use super::messages::{ApiFailure, Posted};
use super::room::HistoryEntry;
use super::store_bridge::Waiter;
use crate::cluster::peers::PeerEvent;
use crate::ids::{RoomId, SessionId, UserId};
use crate::metrics::drop_reason;
use crate::protocol::{ErrorCode, Frame, ServerMessage, timestamp_now};
use crate::store::{Append, Op, Stored, Tag};

/// Chats that may wait for the store at once (about 100 bytes each plus their text); past
/// it new chats are refused with `overloaded`.
const MAX_CHATS_IN_STORE: usize = 100_000;

impl ChatServer {
    /// The `chat` command: a member's message to the room.
    pub(super) fn chat(
        &mut self,
        session: SessionId,
        room_id: RoomId,
        text: String,
        client_msg_id: Option<String>,
    ) {
        if !self.sessions.is_in(session, &room_id) {
            let msg = format!("you are not in room '{room_id}'");
            let id = client_msg_id.as_deref();
            return self.send_chat_error(session, ErrorCode::NotInRoom, &msg, &room_id, id);
        }
        if self.room_saturated(&room_id) {
            self.metrics.frame_dropped(drop_reason::OVERLOADED);
            let msg = format!("room '{room_id}' is busy: its members are behind; send again later");
            let id = client_msg_id.as_deref();
            return self.send_chat_error(session, ErrorCode::Overloaded, &msg, &room_id, id);
        }
        let Some(entry) = self.sessions.get_mut(session) else {
            return;
        };
        if entry.in_store >= self.limits.max_in_store {
            self.metrics.frame_dropped(drop_reason::OVERLOADED);
            let msg = "too many of your messages wait to be stored; send again later";
            let id = client_msg_id.as_deref();
            return self.send_chat_error(session, ErrorCode::Overloaded, msg, &room_id, id);
        }
        entry.in_store += 1;
        let user = entry.user.clone();
        self.append(room_id, user, text, client_msg_id, Tag::Session(session));
    }

    /// Hands a chat message to the store, which sequences and commits it; it is delivered
    /// when [`Stored`] comes back ([`Self::stored`]).
    pub(super) fn append(
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
                    self.answered(session);
                    let msg = "the server is writing too slowly; send again later";
                    let id = client_msg_id.as_deref();
                    self.send_chat_error(session, ErrorCode::Overloaded, msg, &room, id);
                }
                Tag::Request(_) | Tag::Fill => {
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
    pub(super) fn stored(&mut self, e: Stored) {
        // In a cluster every node delivers from the cluster's channel (`replicas`), this one
        // included; here the sender is only answered.
        if !e.duplicate
            && !self.cluster
            && let Some(room) = self.rooms.get_mut(&e.room)
        {
            room.record(HistoryEntry {
                seq: e.seq,
                frame: e.frame.clone(),
                stored_ms: e.stored_ms,
            });
            // Timed when the flush hands it to its recipients.
            if self.fan_out(&e.room, &e.frame, None) > 0 {
                self.fanouts.push(e.received);
            }
        }
        match e.tag {
            Tag::Session(session) => {
                self.answered(session);
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
                self.finish_closing(session);
            }
            Tag::Fill => {}
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
    pub(super) fn not_stored(
        &mut self,
        room: RoomId,
        client_msg_id: Option<String>,
        tag: Tag,
        error: String,
    ) {
        log::warn!("message not stored room={room} client_msg_id={client_msg_id:?}: {error}");
        self.metrics.store_write_failed(1);
        match tag {
            Tag::Session(session) => {
                self.answered(session);
                let msg = format!("your message was not stored, send it again: {error}");
                let id = client_msg_id.as_deref();
                self.send_chat_error(session, ErrorCode::StoreUnavailable, &msg, &room, id);
                self.finish_closing(session);
            }
            Tag::Fill => {}
            Tag::Request(id) => {
                if let Some(Waiter::Post(tx)) = self.waiting.remove(&id) {
                    let _ = tx.send(Err(ApiFailure::Store(error)));
                }
            }
        }
    }

    /// One of `session`'s chats came back from the store (or never reached it).
    fn answered(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.get_mut(session) {
            entry.in_store = entry.in_store.saturating_sub(1);
        }
    }

    /// The `private` command: to every chat socket of `to_user`, never stored; an offline
    /// user is an error that names them.
    pub(super) fn private(&mut self, session: SessionId, to_user: UserId, content: String) {
        let Some(from) = self.sessions.user_of(session).cloned() else {
            return;
        };
        let targets = self.sessions.chat_sessions(&to_user).to_vec();
        let elsewhere = self.cluster && self.peers.has_chat(&to_user);
        let refusal = match (targets.is_empty(), elsewhere) {
            (true, false) => Some((
                ErrorCode::UserOffline,
                format!("user '{to_user}' is not online"),
            )),
            // Only on other nodes, and the way there is down: say so rather than drop it.
            (true, true) if !self.subscribed => Some((
                ErrorCode::ClusterUnavailable,
                format!(
                    "user '{to_user}' is on another node and this node cannot reach the \
                     cluster's Redis; send it again later"
                ),
            )),
            _ => None,
        };
        if let Some((code, message)) = refusal {
            let frame = ServerMessage::Error {
                code,
                message: &message,
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
        if elsewhere {
            self.tell_peers(|n| PeerEvent::Private {
                n,
                to: to_user.clone(),
                f: frame.to_string(),
            });
        }
    }

    /// The `typing` command: to the room's other users, never the typist's own sessions.
    pub(super) fn typing(&mut self, session: SessionId, room: RoomId, is_typing: bool) {
        if !self.check_member(session, &room) {
            return;
        }
        let Some(user) = self.sessions.user_of(session).cloned() else {
            return;
        };
        let frame = ServerMessage::Typing {
            user_id: &user,
            room_id: &room,
            is_typing,
        }
        .encode();
        self.fan_out(&room, &frame, Some(&user));
        self.tell_peers(|n| PeerEvent::Typing {
            n,
            r: room.clone(),
            u: user.clone(),
            t: is_typing,
        });
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
