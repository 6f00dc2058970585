//! What nodes tell each other beside chats, on the channel `roomcast:events`: presence
//! (who is in which room, who has a socket), typing, private messages, notifications and
//! kicks, plus the liveness that lets a node's users leave when it dies without a goodbye.
//!
//! Presence lives in the nodes, not in Redis keys: each node announces its own changes
//! (`InRoom` and `Online`, each carrying how many sockets the user now has there, so that the
//! API can count sockets over the cluster), answers a newcomer's `Hello` with a `Snapshot` of
//! its local presence, and beats every third of `--presence-ttl-secs`. A node not heard from for
//! `--presence-ttl-secs` is taken as dead: its users leave (`user_left` where they were in no
//! other node). A node that stops cleanly says `Bye`. [`Peers`] is the pure view one node
//! keeps of the others.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::CONNECT_TIMEOUT;
use crate::ids::{RoomId, UserId};

/// The channel of node-to-node events.
pub const EVENTS: &str = "roomcast:events";

/// Most events published in one round trip.
const MAX_PIPELINE: usize = 1024;

/// One event, as JSON on [`EVENTS`]. `n` is the sending node's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum PeerEvent {
    /// A node started or resubscribed: everyone answers with a snapshot.
    Hello { n: String },
    /// A node's whole local presence: per room, per user, the user's sockets there; per
    /// user, their chat and notification sockets.
    Snapshot {
        n: String,
        rooms: HashMap<RoomId, HashMap<UserId, u32>>,
        chat: HashMap<UserId, u32>,
        notified: HashMap<UserId, u32>,
    },
    /// The node is alive.
    Beat { n: String },
    /// The node stops: forget its users now.
    Bye { n: String },
    /// The user now has `c` sockets in the room on the node (0: they left it there).
    InRoom {
        n: String,
        r: RoomId,
        u: UserId,
        c: u32,
    },
    /// The user now has `c` sockets of a kind on the node (0: none left).
    Online {
        n: String,
        u: UserId,
        notifications: bool,
        c: u32,
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
            | PeerEvent::InRoom { n, .. }
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

/// Node -> how many sockets (of a user, in a room or of a kind) it has.
type Counts = HashMap<String, u32>;

/// One node's view of the others' presence. Pure: the caller announces what changed.
#[derive(Debug, Default)]
pub struct Peers {
    /// Node -> when it was last heard from.
    seen: HashMap<String, Instant>,
    /// Room -> user -> the other nodes where the user is in the room, with their sockets.
    rooms: HashMap<RoomId, HashMap<UserId, Counts>>,
    /// User -> the other nodes where the user has chat sockets.
    chat: HashMap<UserId, Counts>,
    /// User -> the other nodes where the user has notification sockets.
    notified: HashMap<UserId, Counts>,
}

/// Sets `node`'s count for `user`; returns `Some(true)` when the user went from no node to
/// one, `Some(false)` from some node to none, `None` when that did not change.
fn set(map: &mut HashMap<UserId, Counts>, user: &UserId, node: &str, sockets: u32) -> Option<bool> {
    if sockets == 0 {
        let counts = map.get_mut(user)?;
        counts.remove(node)?;
        if counts.is_empty() {
            map.remove(user);
            return Some(false);
        }
        return None;
    }
    let counts = map.entry(user.clone()).or_default();
    let first = counts.is_empty();
    counts.insert(node.to_owned(), sockets);
    first.then_some(true)
}

fn total(counts: &Counts) -> usize {
    counts.values().map(|c| *c as usize).sum()
}

/// One room as the other nodes have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomCount {
    pub users: usize,
    pub sockets: usize,
}

impl Peers {
    pub fn heard(&mut self, node: &str, now: Instant) {
        self.seen.insert(node.to_owned(), now);
    }

    /// `node` now has `sockets` sockets of `user` in `room`. `Some(true)`: no other node
    /// had the user there before; `Some(false)`: none has now; `None`: no change in presence.
    pub fn in_room(
        &mut self,
        node: &str,
        room: &RoomId,
        user: &UserId,
        sockets: u32,
    ) -> Option<bool> {
        let users = self.rooms.entry(room.clone()).or_default();
        let change = set(users, user, node, sockets);
        if users.is_empty() {
            self.rooms.remove(room);
        }
        change
    }

    /// `node` now has `sockets` sockets of a kind of `user`.
    pub fn online(&mut self, node: &str, user: &UserId, notifications: bool, sockets: u32) {
        let map = match notifications {
            false => &mut self.chat,
            true => &mut self.notified,
        };
        set(map, user, node, sockets);
    }

    /// Whether another node has `user` in `room`.
    pub fn is_in(&self, room: &RoomId, user: &UserId) -> bool {
        self.rooms.get(room).is_some_and(|u| u.contains_key(user))
    }

    /// The users other nodes have in `room`.
    pub fn users_in(&self, room: &RoomId) -> Vec<UserId> {
        self.rooms
            .get(room)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The users and sockets other nodes have in `room`.
    pub fn count(&self, room: &RoomId) -> RoomCount {
        self.rooms
            .get(room)
            .map_or_else(RoomCount::default, |users| RoomCount {
                users: users.len(),
                sockets: users.values().map(total).sum(),
            })
    }

    /// Every room another node has members in.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.keys()
    }

    /// Whether another node has a chat socket of `user`.
    pub fn has_chat(&self, user: &UserId) -> bool {
        self.chat.contains_key(user)
    }

    /// The notification sockets other nodes last announced of `user`.
    pub fn notification_sockets_of(&self, user: &UserId) -> usize {
        self.notified.get(user).map_or(0, total)
    }

    /// The sockets (chat and notification) other nodes have of `user`.
    pub fn sockets_of(&self, user: &UserId) -> usize {
        self.chat.get(user).map_or(0, total) + self.notified.get(user).map_or(0, total)
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
        rooms: &HashMap<RoomId, HashMap<UserId, u32>>,
        chat: &HashMap<UserId, u32>,
        notified: &HashMap<UserId, u32>,
    ) -> (Vec<Presence>, Vec<Presence>) {
        let mut left = self.forget(node);
        let mut joined = Vec::new();
        for (room, users) in rooms {
            for (user, sockets) in users {
                if self.in_room(node, room, user, *sockets) == Some(true) {
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
        for (user, sockets) in chat {
            self.online(node, user, false, *sockets);
        }
        for (user, sockets) in notified {
            self.online(node, user, true, *sockets);
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
                if self.in_room(node, &room, &user, 0) == Some(false) {
                    gone.push((room.clone(), user));
                }
            }
        }
        for map in [&mut self.chat, &mut self.notified] {
            let users: Vec<UserId> = map.keys().cloned().collect();
            for user in users {
                set(map, &user, node, 0);
            }
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
                while let Ok(first) = rx.recv() {
                    if con.is_none()
                        && tried.is_none_or(|t| t.elapsed() > Duration::from_millis(250))
                    {
                        tried = Some(Instant::now());
                        con = client.get_connection_with_timeout(CONNECT_TIMEOUT).ok();
                    }
                    // Whatever queued meanwhile goes in one round trip (a reconnect storm
                    // announces thousands of joins at once).
                    let mut pipe = redis::pipe();
                    for payload in std::iter::once(first).chain(rx.try_iter().take(MAX_PIPELINE)) {
                        pipe.cmd("PUBLISH").arg(EVENTS).arg(payload).ignore();
                    }
                    let Some(c) = con.as_mut() else {
                        continue;
                    };
                    if pipe.query::<()>(c).is_err() {
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
        let (r, ann) = (room("r"), user("ann"));
        assert_eq!(p.in_room("a", &r, &ann, 1), Some(true));
        assert_eq!(p.in_room("b", &r, &ann, 1), None, "already present via a");
        assert_eq!(p.in_room("a", &r, &ann, 2), None, "a second tab on a");
        assert_eq!(
            p.count(&r),
            RoomCount {
                users: 1,
                sockets: 3
            }
        );
        assert_eq!(p.in_room("a", &r, &ann, 0), None, "still present via b");
        assert!(p.is_in(&r, &ann));
        assert_eq!(
            p.count(&r),
            RoomCount {
                users: 1,
                sockets: 1
            }
        );
        assert_eq!(p.in_room("b", &r, &ann, 0), Some(false));
        assert!(!p.is_in(&r, &ann));
        assert_eq!(p.in_room("b", &r, &ann, 0), None, "left once");
        assert_eq!(p.rooms().count(), 0, "an empty room is dropped");
    }

    #[test]
    fn a_forgotten_node_takes_its_users_with_it() {
        let mut p = Peers::default();
        p.in_room("a", &room("r"), &user("ann"), 1);
        p.in_room("a", &room("r"), &user("bob"), 1);
        p.in_room("b", &room("r"), &user("bob"), 2);
        p.online("a", &user("ann"), false, 1);
        p.online("a", &user("ann"), true, 2);
        assert_eq!(p.sockets_of(&user("ann")), 3);
        assert_eq!(p.notification_sockets_of(&user("ann")), 2);
        let mut gone = p.forget("a");
        gone.sort();
        assert_eq!(gone, [(room("r"), user("ann"))]);
        assert!(p.is_in(&room("r"), &user("bob")));
        assert_eq!(
            p.count(&room("r")),
            RoomCount {
                users: 1,
                sockets: 2
            }
        );
        assert!(!p.has_chat(&user("ann")));
        assert_eq!(p.notification_sockets_of(&user("ann")), 0);
        assert_eq!(p.sockets_of(&user("ann")), 0);
    }

    #[test]
    fn a_snapshot_replaces_a_node_and_reports_only_changes() {
        let mut p = Peers::default();
        p.in_room("a", &room("r"), &user("ann"), 1);
        p.in_room("a", &room("r"), &user("bob"), 1);
        let rooms = HashMap::from([(
            room("r"),
            HashMap::from([(user("bob"), 2), (user("cy"), 1)]),
        )]);
        let chat = HashMap::from([(user("bob"), 2)]);
        let (left, joined) = p.snapshot("a", &rooms, &chat, &HashMap::new());
        assert_eq!(left, [(room("r"), user("ann"))]);
        assert_eq!(joined, [(room("r"), user("cy"))]);
        assert!(p.has_chat(&user("bob")));
        assert_eq!(
            p.count(&room("r")),
            RoomCount {
                users: 2,
                sockets: 3
            }
        );
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
        let e = PeerEvent::InRoom {
            n: "x".into(),
            r: room("r"),
            u: user("ann"),
            c: 2,
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"k":"in_room","n":"x","r":"r","u":"ann","c":2}"#);
        assert_eq!(serde_json::from_str::<PeerEvent>(&text).unwrap(), e);
    }
}
