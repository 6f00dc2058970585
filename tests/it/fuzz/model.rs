//! What a socket's frames must be answered with: the model that classifies each frame as it
//! is drawn, the counts it expects, and the check against what came back.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use roomcast::protocol::{ClientMessage, ErrorCode, decode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::Limits;

/// What came back, until the barrier's `ack`.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) counts: Counts,
    /// Every `chat` frame, history included.
    pub(super) chats: u64,
    /// The history frames the `joined` frames announced.
    pub(super) announced_history: u64,
}

/// The answers counted alike on both sides.
#[derive(Debug, Default, Clone)]
pub(super) struct Counts {
    pub(super) errors: BTreeMap<String, u64>,
    /// Answers that are not errors, by type (`joined` and `chat` aside).
    pub(super) replies: BTreeMap<String, u64>,
    pub(super) ws_pongs: u64,
    /// `joined` and `left` frames by room, in order.
    pub(super) presence: BTreeMap<String, Vec<Presence>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    Joined,
    Left,
}

/// What a socket's frames must be answered with.
#[derive(Debug, Default)]
pub(super) struct Expected {
    pub(super) counts: Counts,
    /// Chats accepted (in a room the socket was in): the most live `chat` frames.
    pub(super) accepted_chats: u64,
    /// New chats posted in rooms the socket never left afterwards: the fewest.
    pub(super) certain_chats: u64,
    /// The barrier chat's `client_msg_id`.
    pub(super) barrier: String,
    /// Joins of a room the socket was in or joining: each is answered `already_joined`, or,
    /// when the first join still waits for the store, overtakes it (one `joined` comes, for
    /// the later join). Which one depends on timing, so only the most is known.
    pub(super) already_joined_max: u64,
    /// A few frames of each class, to show when a count is off.
    pub(super) samples: BTreeMap<String, Vec<String>>,
}

impl Expected {
    pub(super) fn check(&self, seen: &Observed, index: usize) {
        let samples = |keys: &mut dyn Iterator<Item = &String>| {
            keys.filter_map(|k| Some((k, self.samples.get(k)?)))
                .map(|(k, s)| format!("  {k}: {s:?}\n"))
                .collect::<String>()
        };
        let (want, got) = (&self.counts, &seen.counts);
        let mut got_errors = got.errors.clone();
        let already = got_errors.remove("already_joined").unwrap_or(0);
        assert!(
            already <= self.already_joined_max,
            "socket {index}: {already} already_joined, at most {} joins could be",
            self.already_joined_max
        );
        let got = &Counts {
            errors: got_errors,
            ..got.clone()
        };
        if want.errors != got.errors || want.replies != got.replies {
            let of = |m: &BTreeMap<String, u64>, k: &String| m.get(k).copied().unwrap_or(0);
            let differ: BTreeSet<&String> =
                [&want.errors, &got.errors, &want.replies, &got.replies]
                    .into_iter()
                    .flat_map(BTreeMap::keys)
                    .filter(|k| {
                        of(&want.errors, k) != of(&got.errors, k)
                            || of(&want.replies, k) != of(&got.replies, k)
                    })
                    .collect();
            panic!(
                "socket {index}: answers differ in {differ:?}\nwant errors {:?}\n got errors {:?}\n\
                 want replies {:?}\n got replies {:?}\nframes sent for these:\n{}",
                want.errors,
                got.errors,
                want.replies,
                got.replies,
                samples(&mut differ.iter().copied())
            );
        }
        assert_eq!(
            want.ws_pongs, got.ws_pongs,
            "socket {index}: WebSocket pongs"
        );
        for room in want.presence.keys().chain(got.presence.keys()) {
            let none = Vec::new();
            let (w, g) = (
                want.presence.get(room).unwrap_or(&none),
                got.presence.get(room).unwrap_or(&none),
            );
            assert!(
                presence_matches(w, g),
                "socket {index}: room {room}: joins and leaves {w:?}, answers {g:?}"
            );
        }
        let live = seen
            .chats
            .checked_sub(seen.announced_history)
            .unwrap_or_else(|| {
                panic!(
                    "socket {index}: {} chat frames, {} announced as history",
                    seen.chats, seen.announced_history
                )
            });
        assert!(
            (self.certain_chats..=self.accepted_chats).contains(&live),
            "socket {index}: {live} live chats; want {} to {}",
            self.certain_chats,
            self.accepted_chats
        );
    }
}

/// Whether `got` is `want` with only joins immediately followed by a leave left out (joins
/// whose store read came back after the leave).
fn presence_matches(want: &[Presence], got: &[Presence]) -> bool {
    let mut got = got.iter().peekable();
    for (i, event) in want.iter().enumerate() {
        if got.peek() == Some(&event) {
            got.next();
        } else if !(*event == Presence::Joined && want.get(i + 1) == Some(&Presence::Left)) {
            return false;
        }
    }
    got.next().is_none()
}

/// A socket as the server sees it, and what it must answer.
pub(super) struct Model {
    user: String,
    /// The other sockets' users: a private message to one would reach another socket.
    others: Vec<String>,
    /// Every room of this socket's starts with it.
    prefix: String,
    default_room: Option<String>,
    limits: Limits,
    /// Rooms joined, in order.
    rooms: Vec<String>,
    /// For each room joined: chats with a new `client_msg_id` (or none) since the join.
    epoch_chats: BTreeMap<String, u64>,
    /// (room, client_msg_id) of every chat accepted.
    posted: HashSet<(String, String)>,
    expected: Expected,
}

impl Model {
    pub(super) fn new(
        user: String,
        others: Vec<String>,
        prefix: String,
        home: Option<String>,
        limits: Limits,
    ) -> Model {
        Model {
            user,
            others,
            prefix,
            rooms: home.iter().cloned().collect(),
            epoch_chats: home.iter().map(|h| (h.clone(), 0)).collect(),
            default_room: home,
            limits,
            posted: HashSet::new(),
            expected: Expected::default(),
        }
    }

    /// Counts the answers to `frame`; false (and nothing counted) if it would reach beyond
    /// this socket's rooms and user: draw another.
    pub(super) fn count(&mut self, frame: &Message) -> bool {
        match frame {
            Message::Text(text) => self.text(text.as_str()),
            Message::Binary(bytes) => {
                self.error(ErrorCode::BinaryUnsupported, &format!("binary {bytes:?}"));
                true
            }
            Message::Ping(_) => {
                self.expected.counts.ws_pongs += 1;
                true
            }
            other => unreachable!("the generator makes no {other:?}"),
        }
    }

    fn text(&mut self, text: &str) -> bool {
        let msg = match decode(text, self.limits.decode) {
            Ok(msg) => msg,
            Err(e) => {
                self.error(e.code(), text);
                return true;
            }
        };
        use ClientMessage::*;
        let room = match &msg {
            Join { room, .. }
            | Leave { room }
            | Chat { room, .. }
            | Typing { room, .. }
            | GetUsers { room }
            | History { room, .. } => {
                let room = room.as_ref().map(|r| r.as_str().to_owned());
                match room.or_else(|| self.default_room.clone()) {
                    Some(room) if !room.starts_with(&self.prefix) => return false,
                    Some(room) => room,
                    None => {
                        self.error(ErrorCode::MissingField, text);
                        return true;
                    }
                }
            }
            Private { to_user, .. } if self.others.iter().any(|o| o == to_user.as_str()) => {
                return false;
            }
            Private { .. } | Ping | Pong | Refresh { .. } => String::new(),
        };
        let joined = self.rooms.contains(&room);
        match msg {
            Ping => self.reply("pong", text),
            Pong => {}
            // No fuzzed token is signed with the server's development secret.
            Refresh { .. } => self.error(ErrorCode::TokenInvalid, text),
            Private { to_user, .. } if to_user.as_str() == self.user => self.reply("private", text),
            Private { .. } => self.error(ErrorCode::UserOffline, text),
            Join { .. } if joined => {
                self.sample("already_joined", text);
                self.expected.already_joined_max += 1;
            }
            Join { .. } if self.rooms.len() >= self.limits.max_rooms => {
                self.error(ErrorCode::TooManyRooms, text)
            }
            Join { .. } => {
                self.presence(&room, Presence::Joined);
                self.epoch_chats.insert(room.clone(), 0);
                self.rooms.push(room);
            }
            _ if !joined => self.error(ErrorCode::NotInRoom, text),
            Leave { .. } => {
                self.presence(&room, Presence::Left);
                self.epoch_chats.remove(&room);
                self.rooms.retain(|r| *r != room);
                self.reply("left", text);
            }
            Chat { client_msg_id, .. } => {
                self.expected.accepted_chats += 1;
                if client_msg_id.is_some() {
                    self.reply("ack", text);
                }
                let new = client_msg_id.is_none_or(|id| self.posted.insert((room.clone(), id)));
                if new {
                    *self.epoch_chats.entry(room).or_default() += 1;
                }
            }
            Typing { .. } => {}
            GetUsers { .. } => self.reply("active_users", text),
            History { .. } => self.reply("history", text),
        }
        true
    }

    fn error(&mut self, code: ErrorCode, frame: &str) {
        let code = code.as_str().to_owned();
        self.sample(&code, frame);
        *self.expected.counts.errors.entry(code).or_default() += 1;
    }

    fn reply(&mut self, kind: &str, frame: &str) {
        self.sample(kind, frame);
        *self
            .expected
            .counts
            .replies
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    fn presence(&mut self, room: &str, event: Presence) {
        let events = self.expected.counts.presence.entry(room.to_owned());
        events.or_default().push(event);
    }

    fn sample(&mut self, class: &str, frame: &str) {
        let samples = self.expected.samples.entry(class.to_owned()).or_default();
        if samples.len() < 3 {
            samples.push(frame.chars().take(160).collect());
        }
    }

    /// The barrier: a chat with a `client_msg_id` never used, in a room the socket is in
    /// (joining one first if it is in none).
    pub(super) fn barrier(&mut self) -> Vec<Message> {
        let mut frames = Vec::new();
        let room = match self.rooms.first() {
            Some(room) => room.clone(),
            None => {
                let room = format!("{}barrier", self.prefix);
                frames.push(json!({"type": "join", "room_id": room}).to_string());
                room
            }
        };
        let id = (0..)
            .map(|n| format!("barrier-{n}"))
            .find(|id| !self.posted.iter().any(|(_, used)| used == id))
            .expect("a free id");
        frames.push(
            json!({"type": "chat", "room_id": room, "text": "barrier", "client_msg_id": id})
                .to_string(),
        );
        self.expected.barrier = id;
        for frame in &frames {
            assert!(self.text(frame), "the barrier stays in the socket's rooms");
        }
        frames.into_iter().map(Message::text).collect()
    }

    pub(super) fn finish(mut self) -> Expected {
        self.expected.certain_chats = self.epoch_chats.values().sum();
        self.expected
    }
}
