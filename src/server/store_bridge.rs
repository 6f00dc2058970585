//! The bridge to the store thread: what comes back from it ([`Event`]s, one `StoreEvents`
//! message per committed batch, in op order), the reads sent for history pages, the offline
//! inbox, and the HTTP requests that wait for the store.
//!
//! An HTTP request that needs the store registers a [`Waiter`] under a number and sends its
//! op tagged `Tag::Request(number)`; the event that comes back with that tag answers the
//! waiter's oneshot. Nothing waits inside the actor.

use tokio::sync::oneshot;

use super::ChatServer;
use super::messages::{ApiFailure, HistoryPage, Posted, Pushed, RoomDetail, RoomSummary};
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::{ErrorCode, Frame, ServerMessage};
use crate::store::{Event, Loaded, Op, Read, Tag};

/// An HTTP request waiting for the store.
pub(super) enum Waiter {
    Post(oneshot::Sender<Result<Posted, ApiFailure>>),
    History(oneshot::Sender<Result<HistoryPage, ApiFailure>>),
    Room(oneshot::Sender<Result<Option<RoomDetail>, ApiFailure>>),
    /// `GET /api/rooms` in a cluster: the rooms listed so far (or the first read's failure),
    /// and how many reads of rooms with members only on other nodes are still out (they
    /// share this waiter's tag).
    Rooms {
        tx: oneshot::Sender<Result<Vec<RoomSummary>, ApiFailure>>,
        rooms: Result<Vec<RoomSummary>, ApiFailure>,
        pending: usize,
    },
    /// A push whose offline users' copies are being stored; answered with `stored` filled in.
    Notify(oneshot::Sender<Pushed>, Pushed),
}

impl ChatServer {
    /// One outcome from the store thread.
    pub(super) fn store_event(&mut self, event: Event) {
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
            Event::Published { room, seq, frame } => self.published(room, seq, frame),
            Event::Subscribed(up) => self.subscribed(up),
            // Handled by the `StoreEvents` handler, which has the context it needs.
            Event::Peer(_) => {}
            Event::State(state) => {
                if state != self.store_state {
                    log::warn!("history store state={}", state.as_str());
                }
                self.store_state = state;
                self.metrics.set_store_state(state);
            }
        }
    }

    /// Registers an HTTP request that waits for the store; returns its tag.
    pub(super) fn wait(&mut self, waiter: Waiter) -> Tag {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, waiter);
        Tag::Request(id)
    }

    /// Sends a read whose answer an HTTP request waits for; answers it at once if the store
    /// has stopped.
    pub(super) fn read_for(&mut self, room: RoomId, read: Read, waiter: Waiter) {
        let tag = self.wait(waiter);
        self.metrics.store_read();
        if let Err(Op::Read { room, read, tag }) = self.store.send(Op::Read { room, read, tag }) {
            self.loaded(room, read, tag, Err("the history store has stopped".into()));
        }
    }

    /// The `history` command: a page of the room's messages before a seq, read from the
    /// store and sent as one `history` frame.
    pub(super) fn history(
        &mut self,
        session: SessionId,
        room_id: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) {
        if !self.check_member(session, &room_id) {
            return;
        }
        let op = Op::Read {
            room: room_id,
            read: Read::Before { before, limit },
            tag: Tag::Session(session),
        };
        self.metrics.store_read();
        if let Err(Op::Read { room, read, tag }) = self.store.send(op) {
            self.loaded(room, read, tag, Err("the history store has stopped".into()));
        }
    }

    /// A read came back: a join's history, a session's history page, or an HTTP request's.
    pub(super) fn loaded(
        &mut self,
        room: RoomId,
        read: Read,
        tag: Tag,
        result: Result<Loaded, String>,
    ) {
        match (tag, result) {
            (Tag::Fill, result) => self.filled(room, result),
            (Tag::Session(session), Ok(loaded)) => match read {
                Read::Before { .. } => self.send_history(session, &room, loaded),
                _ => {
                    self.joined_from_store(session, room.clone(), loaded);
                    self.room_awaited(&room);
                }
            },
            (Tag::Session(session), Err(e)) => match read {
                Read::Before { .. } => {
                    let msg = format!("cannot read history now: {e}");
                    self.send_error(session, ErrorCode::StoreUnavailable, &msg, Some(&room));
                }
                _ => {
                    self.join_failed(session, &room, &e);
                    self.room_awaited(&room);
                }
            },
            (Tag::Request(id), result) => match self.waiting.remove(&id) {
                Some(Waiter::History(tx)) => {
                    let _ = tx.send(match result {
                        // Unknown: no message ever, and no member on any node.
                        Ok(l) if self.room_detail(&room, l.last_seq).is_none() => {
                            Err(ApiFailure::UnknownRoom(room))
                        }
                        Ok(l) => Ok(HistoryPage {
                            room_id: room,
                            messages: l.entries.into_iter().map(|e| e.frame).collect(),
                            has_more: l.has_more,
                        }),
                        Err(e) => Err(ApiFailure::Store(e)),
                    });
                }
                // A room's newest seq the store could not say is not 0: the answer fails.
                Some(Waiter::Room(tx)) => {
                    let detail = result.map(|l| self.room_detail(&room, l.last_seq));
                    let _ = tx.send(detail.map_err(ApiFailure::Store));
                }
                Some(Waiter::Rooms {
                    tx,
                    mut rooms,
                    pending,
                }) => {
                    match (&mut rooms, result) {
                        (Ok(listed), Ok(l)) => listed.extend(self.room_summary(&room, l.last_seq)),
                        (Ok(_), Err(e)) => rooms = Err(ApiFailure::Store(e)),
                        (Err(_), _) => {}
                    }
                    if pending > 1 {
                        let pending = pending - 1;
                        self.waiting
                            .insert(id, Waiter::Rooms { tx, rooms, pending });
                    } else {
                        if let Ok(listed) = &mut rooms {
                            listed.sort_unstable_by(|a, b| a.room_id.cmp(&b.room_id));
                        }
                        let _ = tx.send(rooms);
                    }
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
            .filter(|s| self.sessions.contains(*s))
            .or_else(|| self.sessions.notification_sockets(&user).first().copied());
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
}
