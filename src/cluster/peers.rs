//! What nodes tell each other beside chats, on the channel `roomcast:events`: presence
//! (who is in which room, who has a socket), typing, private messages, notifications and
//! kicks, plus the liveness that lets a node's users leave when it dies without a goodbye.
//!
//! Presence lives in the nodes, not in Redis keys: each node announces its own changes
//! (`Joined`, `Left`, `Online`), answers a newcomer's `Hello` with a `Snapshot` of its local
//! presence, and beats every third of `--presence-ttl-secs`. A node not heard from for
//! `--presence-ttl-secs` is taken as dead: its users leave (`user_left` where they were in no
//! other node). A node that stops cleanly says `Bye`. [`Peers`] is the pure view one node
//! keeps of the others.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::CONNECT_TIMEOUT;
use crate::ids::{RoomId, UserId};

/// The channel of node-to-node events.
pub const EVENTS: &str = "roomcast:events";

/// One event, as JSON on [`EVENTS`]. `n` is the sending node's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum PeerEvent {
    /// A node started or resubscribed: everyone answers with a snapshot.
    Hello { n: String },
    /// A node's whole local presence.
    Snapshot {
        n: String,
        rooms: HashMap<RoomId, Vec<UserId>>,
        chat: Vec<UserId>,
        notified: Vec<UserId>,
    },
    /// The node is alive.
    Beat { n: String },
    /// The node stops: forget its users now.
    Bye { n: String },
    /// The user's first session on the node entered the room.
    Joined { n: String, r: RoomId, u: UserId },
    /// The user's last session on the node left the room.
    Left { n: String, r: RoomId, u: UserId },
    /// The user's first (`on`) or last (`!on`) socket of a kind on the node.
    Online {
        n: String,
        u: UserId,
        notifications: bool,
        on: bool,
    },
    Typing {
        n: String,
        r: RoomId,
        u: UserId,
        t: bool,
    },
    /// A private message for `to`'s chat sockets on every node.
    Private { n: String, to: UserId, f: String },
    /// A notification for the notification sockets of `to` (everyone's when `None`).
    Notify {
        n: String,
        to: Option<Vec<UserId>>,
        f: String,
    },
    /// Close every socket of the user (4003).
    Kick { n: String, u: UserId },
}

impl PeerEvent {
    pub fn node(&self) -> &str {
        match self {
            PeerEvent::Hello { n }
            | PeerEvent::Snapshot { n, .. }
            | PeerEvent::Beat { n }
            | PeerEvent::Bye { n }
            | PeerEvent::Joined { n, .. }
            | PeerEvent::Left { n, .. }
            | PeerEvent::Online { n, .. }
            | PeerEvent::Typing { n, .. }
            | PeerEvent::Private { n, .. }
            | PeerEvent::Notify { n, .. }
            | PeerEvent::Kick { n, .. } => n,
        }
    }
}

/// A user in a room.
pub type Presence = (RoomId, UserId);

/// One node's view of the others' presence. Pure: the caller announces what changed.
#[derive(Debug, Default)]
pub struct Peers {
    /// Node -> when it was last heard from.
    seen: HashMap<String, Instant>,
    /// Room -> user -> the other nodes where the user is in the room.
    rooms: HashMap<RoomId, HashMap<UserId, HashSet<String>>>,
    /// User -> the other nodes where the user has a chat socket.
    chat: HashMap<UserId, HashSet<String>>,
    /// User -> the other nodes where the user has a notification socket.
    notified: HashMap<UserId, HashSet<String>>,
}

fn add(map: &mut HashMap<UserId, HashSet<String>>, user: &UserId, node: &str) -> bool {
    let nodes = map.entry(user.clone()).or_default();
    let first = nodes.is_empty();
    nodes.insert(node.to_owned());
    first
}

fn remove(map: &mut HashMap<UserId, HashSet<String>>, user: &UserId, node: &str) -> bool {
    let Some(nodes) = map.get_mut(user) else {
        return false;
    };
    let was = nodes.remove(node);
    if nodes.is_empty() {
        map.remove(user);
        return was;
    }
    false
}

impl Peers {
    pub fn heard(&mut self, node: &str, now: Instant) {
        self.seen.insert(node.to_owned(), now);
    }

    /// `user` entered `room` on `node`; true when no other node had them there before.
    pub fn joined(&mut self, node: &str, room: &RoomId, user: &UserId) -> bool {
        add(self.rooms.entry(room.clone()).or_default(), user, node)
    }

    /// `user` left `room` on `node`; true when no other node has them there any more.
    pub fn left(&mut self, node: &str, room: &RoomId, user: &UserId) -> bool {
        let Some(users) = self.rooms.get_mut(room) else {
            return false;
        };
        let gone = remove(users, user, node);
        if users.is_empty() {
            self.rooms.remove(room);
        }
        gone
    }

    pub fn online(&mut self, node: &str, user: &UserId, notifications: bool, on: bool) {
        let map = match notifications {
            false => &mut self.chat,
            true => &mut self.notified,
        };
        if on {
            add(map, user, node);
        } else {
            remove(map, user, node);
        }
    }

    /// Whether another node has `user` in `room`.
    pub fn in_room(&self, room: &RoomId, user: &UserId) -> bool {
        self.rooms.get(room).is_some_and(|u| u.contains_key(user))
    }

    /// The users other nodes have in `room`.
    pub fn users_in(&self, room: &RoomId) -> Vec<UserId> {
        self.rooms
            .get(room)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether another node has a chat socket of `user`.
    pub fn has_chat(&self, user: &UserId) -> bool {
        self.chat.contains_key(user)
    }

    /// Whether another node has a notification socket of `user`.
    pub fn has_notifications(&self, user: &UserId) -> bool {
        self.notified.contains_key(user)
    }

    /// Users with a notification socket on another node.
    pub fn notified_users(&self) -> impl Iterator<Item = &UserId> {
        self.notified.keys()
    }

    /// Replaces what is known of `node` with its snapshot; returns the (room, user) pairs
    /// that left and joined as a result (present on no other node before or after).
    pub fn snapshot(
        &mut self,
        node: &str,
        rooms: &HashMap<RoomId, Vec<UserId>>,
        chat: &[UserId],
        notified: &[UserId],
    ) -> (Vec<Presence>, Vec<Presence>) {
        let mut left = self.forget(node);
        let mut joined = Vec::new();
        for (room, users) in rooms {
            for user in users {
                if self.joined(node, room, user) {
                    joined.push((room.clone(), user.clone()));
                }
            }
        }
        // Who was there before and is again did not leave and did not join.
        left.retain(|pair| {
            let back = joined.contains(pair);
            if back {
                joined.retain(|p| p != pair);
            }
            !back
        });
        for user in chat {
            self.online(node, user, false, true);
        }
        for user in notified {
            self.online(node, user, true, true);
        }
        self.seen.insert(node.to_owned(), Instant::now());
        (left, joined)
    }

    /// Forgets `node` (it said goodbye, or died); returns the (room, user) pairs that no
    /// other node has any more.
    pub fn forget(&mut self, node: &str) -> Vec<Presence> {
        self.seen.remove(node);
        let mut gone = Vec::new();
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let users: Vec<UserId> = self.rooms[&room].keys().cloned().collect();
            for user in users {
                if self.left(node, &room, &user) {
                    gone.push((room.clone(), user));
                }
            }
        }
        let users: Vec<UserId> = self.chat.keys().cloned().collect();
        for user in users {
            remove(&mut self.chat, &user, node);
        }
        let users: Vec<UserId> = self.notified.keys().cloned().collect();
        for user in users {
            remove(&mut self.notified, &user, node);
        }
        gone
    }

    /// Nodes not heard from within `ttl`.
    pub fn silent(&self, ttl: Duration, now: Instant) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > ttl)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Publishes node events from a thread of its own, reconnecting as needed; events that
/// cannot be published while Redis is away are dropped (presence is repaired by the
/// snapshots exchanged when subscriptions come back).
#[derive(Clone)]
pub struct Publisher(mpsc::Sender<String>);

impl Publisher {
    pub fn start(url: &str) -> anyhow::Result<Publisher> {
        let client = redis::Client::open(url)?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("roomcast-publisher".into())
            .spawn(move || {
                let mut con: Option<redis::Connection> = None;
                let mut tried: Option<Instant> = None;
                while let Ok(payload) = rx.recv() {
                    if con.is_none()
                        && tried.is_none_or(|t| t.elapsed() > Duration::from_millis(250))
                    {
                        tried = Some(Instant::now());
                        con = client.get_connection_with_timeout(CONNECT_TIMEOUT).ok();
                    }
                    let Some(c) = con.as_mut() else {
                        continue;
                    };
                    let sent = redis::cmd("PUBLISH")
                        .arg(EVENTS)
                        .arg(&payload)
                        .query::<i64>(c);
                    if sent.is_err() {
                        con = None;
                    }
                }
            })?;
        Ok(Publisher(tx))
    }

    pub fn publish(&self, event: &PeerEvent) {
        match serde_json::to_string(event) {
            Ok(payload) => {
                let _ = self.0.send(payload);
            }
            Err(e) => log::warn!("node event not encoded: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn presence_counts_users_over_nodes() {
        let mut p = Peers::default();
        assert!(p.joined("a", &room("r"), &user("ann")));
        assert!(
            !p.joined("b", &room("r"), &user("ann")),
            "already present via a"
        );
        assert!(
            !p.left("a", &room("r"), &user("ann")),
            "still present via b"
        );
        assert!(p.in_room(&room("r"), &user("ann")));
        assert!(p.left("b", &room("r"), &user("ann")));
        assert!(!p.in_room(&room("r"), &user("ann")));
        assert!(!p.left("b", &room("r"), &user("ann")), "left once");
    }

    #[test]
    fn a_forgotten_node_takes_its_users_with_it() {
        let mut p = Peers::default();
        p.joined("a", &room("r"), &user("ann"));
        p.joined("a", &room("r"), &user("bob"));
        p.joined("b", &room("r"), &user("bob"));
        p.online("a", &user("ann"), false, true);
        p.online("a", &user("ann"), true, true);
        let mut gone = p.forget("a");
        gone.sort();
        assert_eq!(gone, [(room("r"), user("ann"))]);
        assert!(p.in_room(&room("r"), &user("bob")));
        assert!(!p.has_chat(&user("ann")));
        assert!(!p.has_notifications(&user("ann")));
    }

    #[test]
    fn a_snapshot_replaces_a_node_and_reports_only_changes() {
        let mut p = Peers::default();
        p.joined("a", &room("r"), &user("ann"));
        p.joined("a", &room("r"), &user("bob"));
        let rooms = HashMap::from([(room("r"), vec![user("bob"), user("cy")])]);
        let (left, joined) = p.snapshot("a", &rooms, &[user("bob")], &[]);
        assert_eq!(left, [(room("r"), user("ann"))]);
        assert_eq!(joined, [(room("r"), user("cy"))]);
        assert!(p.has_chat(&user("bob")));
    }

    #[test]
    fn silent_nodes_are_found() {
        let mut p = Peers::default();
        let t0 = Instant::now();
        p.heard("a", t0);
        p.heard("b", t0 + Duration::from_secs(5));
        assert_eq!(
            p.silent(Duration::from_secs(3), t0 + Duration::from_secs(6)),
            ["a"]
        );
    }

    #[test]
    fn events_are_json_with_a_kind() {
        let e = PeerEvent::Joined {
            n: "x".into(),
            r: room("r"),
            u: user("ann"),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"k":"joined","n":"x","r":"r","u":"ann"}"#);
        assert_eq!(serde_json::from_str::<PeerEvent>(&text).unwrap(), e);
    }
}
