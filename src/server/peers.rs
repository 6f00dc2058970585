//! Cluster mode: what this node tells the others and what they tell it, beside chats
//! ([`crate::cluster::peers`]): presence over nodes (a user is present in a room when any
//! node has them there; `user_joined` and `user_left` mark the first and the last over the
//! cluster), typing, private messages, notifications and kicks. Nodes that stop beating for
//! `--presence-ttl-secs` are taken as dead and their users leave.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;

use super::ChatServer;
use crate::cluster::peers::PeerEvent;
use crate::ids::{RoomId, UserId};
use crate::protocol::{Frame, ServerMessage, close_code, timestamp_now};

impl ChatServer {
    /// Tells the other nodes how many sockets `user` now has in `room_id` here.
    pub(super) fn tell_in_room(&self, room_id: &RoomId, user: &UserId) {
        let c = self.rooms.get(room_id).map_or(0, |r| r.sessions_of(user)) as u32;
        self.tell_peers(|n| PeerEvent::InRoom {
            n,
            r: room_id.clone(),
            u: user.clone(),
            c,
        });
    }

    /// Tells the other nodes how many sockets of `kind` `user` now has here.
    pub(super) fn tell_online(&self, user: &UserId, notifications: bool) {
        let c = match notifications {
            false => self.sessions.chat_sessions(user).len(),
            true => self.sessions.notification_sockets(user).len(),
        } as u32;
        self.tell_peers(|n| PeerEvent::Online {
            n,
            u: user.clone(),
            notifications,
            c,
        });
    }

    /// Publishes a node event (cluster mode only).
    pub(super) fn tell_peers(&self, event: impl FnOnce(String) -> PeerEvent) {
        if let Some(publisher) = &self.publisher {
            publisher.publish(&event(self.node_id.clone()));
        }
    }

    /// The room's present users over the cluster, sorted.
    pub(super) fn room_users(&self, room_id: &RoomId) -> Vec<UserId> {
        let mut users: Vec<UserId> = self
            .rooms
            .get(room_id)
            .map(|r| r.users().into_iter().cloned().collect())
            .unwrap_or_default();
        if self.cluster {
            users.extend(self.peers.users_in(room_id));
            users.sort_unstable();
            users.dedup();
        }
        users
    }

    /// Whether another node has `user` in `room_id`.
    pub(super) fn present_elsewhere(&self, room_id: &RoomId, user: &UserId) -> bool {
        self.cluster && self.peers.is_in(room_id, user)
    }

    /// Whether this node has `user` in the live room `room_id`.
    fn present_here(&self, room_id: &RoomId, user: &UserId) -> bool {
        self.rooms.get(room_id).is_some_and(|r| r.has_user(user))
    }

    /// This node's presence, for a newcomer.
    fn snapshot(&self) -> PeerEvent {
        let rooms: HashMap<RoomId, HashMap<UserId, u32>> = self
            .rooms
            .iter()
            .map(|(id, r)| {
                let users = r.user_sessions().map(|(u, n)| (u.clone(), n as u32));
                (id.clone(), users.collect())
            })
            .collect();
        PeerEvent::Snapshot {
            n: self.node_id.clone(),
            rooms,
            chat: self.sessions.socket_counts(false),
            notified: self.sessions.socket_counts(true),
        }
    }

    /// Announces to this node's members of `room_id` that `user`, present on no node any
    /// more (or on one now), left (or joined).
    fn announce(&mut self, room_id: &RoomId, user: &UserId, joined: bool) {
        if !self.rooms.contains_key(room_id) || self.present_here(room_id, user) {
            return;
        }
        let timestamp = timestamp_now();
        let frame = if joined {
            let message = format!("{user} joined the room");
            ServerMessage::UserJoined {
                user_id: user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode()
        } else {
            let message = format!("{user} left the room");
            ServerMessage::UserLeft {
                user_id: user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode()
        };
        self.fan_out(room_id, &frame, None);
    }

    /// Beats, and lets the users of nodes that stopped beating leave.
    pub(super) fn beat(&mut self) {
        self.tell_peers(|n| PeerEvent::Beat { n });
        for node in self.peers.silent(self.presence_ttl, Instant::now()) {
            log::warn!(
                "node={node} silent for {:?}: its users leave",
                self.presence_ttl
            );
            for (room, user) in self.peers.forget(&node) {
                self.announce(&room, &user, false);
            }
        }
    }

    /// The subscription is (back) up: say hello, so that everyone sends their presence, and
    /// send ours.
    pub(super) fn greet_peers(&mut self) {
        self.tell_peers(|n| PeerEvent::Hello { n });
        let snapshot = self.snapshot();
        self.tell_peers(|_| snapshot);
    }

    /// What another node says.
    pub(super) fn peer_event(&mut self, event: PeerEvent, ctx: &mut Context<Self>) {
        if !self.cluster || event.node() == self.node_id {
            return;
        }
        let now = Instant::now();
        self.peers.heard(event.node(), now);
        match event {
            PeerEvent::Hello { .. } => {
                let snapshot = self.snapshot();
                self.tell_peers(|_| snapshot);
            }
            PeerEvent::Snapshot {
                n,
                rooms,
                chat,
                notified,
            } => {
                let (left, joined) = self.peers.snapshot(&n, &rooms, &chat, &notified);
                for (room, user) in left {
                    self.announce(&room, &user, false);
                }
                for (room, user) in joined {
                    self.announce(&room, &user, true);
                }
            }
            PeerEvent::Beat { .. } => {}
            PeerEvent::Bye { n } => {
                for (room, user) in self.peers.forget(&n) {
                    self.announce(&room, &user, false);
                }
            }
            PeerEvent::InRoom { n, r, u, c } => {
                if let Some(joined) = self.peers.in_room(&n, &r, &u, c) {
                    self.announce(&r, &u, joined);
                }
            }
            PeerEvent::Online {
                n,
                u,
                notifications,
                c,
            } => self.peers.online(&n, &u, notifications, c),
            PeerEvent::Typing { r, u, t, .. } => {
                let frame = ServerMessage::Typing {
                    user_id: &u,
                    room_id: &r,
                    is_typing: t,
                }
                .encode();
                self.fan_out(&r, &frame, Some(&u));
            }
            PeerEvent::Private { to, f, .. } => {
                let frame = Frame::from(f);
                for target in self.sessions.chat_sessions(&to).to_vec() {
                    self.send(target, frame.clone());
                }
            }
            PeerEvent::Notify { to, f, .. } => {
                let frame = Frame::from(f);
                let users = match to {
                    Some(users) => users,
                    None => self.sessions.notified_users(),
                };
                let mut sockets = 0;
                for user in users {
                    for session in self.sessions.notification_sockets(&user).to_vec() {
                        self.send(session, frame.clone());
                        sockets += 1;
                    }
                }
                self.metrics.notifications_pushed(sockets);
            }
            PeerEvent::Kick { u, .. } => {
                for session in self.sessions.sessions_of(&u) {
                    self.close_session(
                        session,
                        close_code::DISCONNECTED,
                        "disconnected by operator",
                        ctx,
                    );
                }
            }
        }
    }
}
