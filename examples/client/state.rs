//! The client's view of its rooms ([`State`]): which rooms it is in or joining, the current
//! room, how far back `/history` has paged, the server's text limit, and (in `Pending`) what
//! was sent and not answered yet. Every frame from the server updates it ([`Seen`] says what
//! else to show); commands turn into a [`Step`] in `state/step.rs`. No I/O, so it is
//! unit-tested.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::pending::Pending;
use crate::render::clean;

/// `max_text_chars` until the server's `welcome` says otherwise.
const DEFAULT_MAX_TEXT_CHARS: usize = 4000;

mod step;

pub use step::Step;

/// The client's view of its rooms; updated by commands and by the frames the server sends.
#[derive(Debug)]
pub struct State {
    pub user: String,
    /// Rooms the server confirmed with `joined`, in that order.
    joined: Vec<String>,
    /// Rooms we sent `join` for and have no answer for yet.
    pub pending_joins: Vec<String>,
    pub current: Option<String>,
    /// Per room, the smallest `seq` shown so far: `/history` pages back from it.
    oldest_seq: HashMap<String, u64>,
    max_text_chars: usize,
    msg_id_prefix: String,
    msg_counter: u64,
    /// Requests sent and not answered yet.
    pending: Pending,
    /// The room last joined and how many of the history frames announced by its `joined` are
    /// still to come. Nothing comes between `joined` and its history (`docs/PROTOCOL.md`), so
    /// these are simply the next frames.
    history_to_come: Option<(String, u64)>,
}

/// What a frame from the server changes, besides the frame's own line.
#[derive(Debug, Default, PartialEq)]
pub struct Seen {
    /// The frame answers a request the client made on its own: do not show it.
    pub hide: bool,
    /// Lines to show before the frame's own: the new status of a message sent.
    pub before: Vec<String>,
    /// A note to show after it (the current room changed).
    pub note: Option<String>,
    /// Messages that failed or could not be confirmed, one description each.
    pub failed: Vec<String>,
}

impl State {
    pub fn new(user: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            user: user.to_owned(),
            joined: Vec::new(),
            pending_joins: Vec::new(),
            current: None,
            oldest_seq: HashMap::new(),
            max_text_chars: DEFAULT_MAX_TEXT_CHARS,
            msg_id_prefix: format!("rc-{:x}-{nanos:x}", std::process::id()),
            msg_counter: 0,
            pending: Pending::default(),
            history_to_come: None,
        }
    }

    /// Whether a join is unanswered, or its history still coming.
    pub fn joining(&self) -> bool {
        !self.pending_joins.is_empty() || self.history_to_come.is_some()
    }

    /// What is still waiting for an answer, one description each (empty: nothing).
    pub fn waiting(&self) -> Vec<String> {
        let joins = self.pending_joins.iter().map(|room| format!("join {room}"));
        let history = (self.history_to_come.iter())
            .map(|(room, left)| format!("{left} history messages of {room}"));
        joins.chain(history).chain(self.pending.waiting()).collect()
    }

    fn is_member(&self, room: &str) -> bool {
        self.joined
            .iter()
            .chain(&self.pending_joins)
            .any(|r| r == room)
    }

    /// Records a `join` for `room`, makes it current, and returns the frame to send.
    pub fn request_join(&mut self, room: &str) -> Value {
        self.pending_joins.push(room.to_owned());
        self.current = Some(room.to_owned());
        json!({"type": "join", "room_id": room})
    }

    /// A `chat` frame for `room` and its `client_msg_id`, recorded as waiting for its answer.
    pub fn chat_frame(&mut self, room: &str, text: &str) -> (Value, String) {
        self.msg_counter += 1;
        let id = format!("{}-{}", self.msg_id_prefix, self.msg_counter);
        self.pending.chat(&id, room, text);
        (
            json!({"type": "chat", "room_id": room, "text": text, "client_msg_id": id}),
            id,
        )
    }

    /// An error message when `text` is longer than the server allows.
    pub fn check_length(&self, text: &str) -> Option<String> {
        let len = text.chars().count();
        (len > self.max_text_chars).then(|| {
            format!(
                "! message too long: {len} characters, the limit is {}",
                self.max_text_chars
            )
        })
    }

    fn note_seq(&mut self, room: &str, seq: Option<u64>) {
        if let Some(seq) = seq {
            let oldest = self.oldest_seq.entry(room.to_owned()).or_insert(seq);
            *oldest = (*oldest).min(seq);
        }
    }

    /// Falls back to another room when the current one is gone; returns a note for the user.
    fn fix_current(&mut self) -> Option<String> {
        if self
            .current
            .as_deref()
            .is_some_and(|room| self.is_member(room))
        {
            return None;
        }
        self.current = self.joined.last().or(self.pending_joins.last()).cloned();
        Some(match &self.current {
            Some(room) => format!("now talking in {room}"),
            None => "you are not in any room now: /join ROOM".to_owned(),
        })
    }

    /// Updates the state from a frame the server sent.
    pub fn observe(&mut self, frame: &Value) -> Seen {
        let kind = frame.get("type").and_then(Value::as_str);
        let room = frame.get("room_id").and_then(Value::as_str);
        // An error naming a room being joined, and no chat, is about the join.
        let about_a_join = kind == Some("error")
            && frame.get("client_msg_id").is_none()
            && room.is_some_and(|room| self.pending_joins.iter().any(|r| r == room));
        let note = self.observe_rooms(frame);
        if about_a_join {
            // Refused (not `already_joined`, which leaves the room joined): it failed.
            let room = room.unwrap_or_default();
            let failed = match self.is_member(room) {
                true => Vec::new(),
                false => {
                    let code = frame.get("code").and_then(Value::as_str).unwrap_or("");
                    vec![format!("join {} ({code})", clean(room))]
                }
            };
            return Seen {
                note,
                failed,
                ..Seen::default()
            };
        }
        let outcome = self.pending.observe(frame, &self.user);
        Seen {
            hide: outcome.hide,
            before: outcome.lines,
            note,
            failed: outcome.failed,
        }
    }

    /// Updates the rooms from a frame the server sent; returns a note for the user, if any.
    fn observe_rooms(&mut self, frame: &Value) -> Option<String> {
        if let Some((_, left)) = &mut self.history_to_come {
            *left -= 1;
            if *left == 0 {
                self.history_to_come = None;
            }
        }
        let kind = frame.get("type").and_then(Value::as_str)?;
        let room = frame.get("room_id").and_then(Value::as_str);
        match (kind, room) {
            ("welcome", _) => {
                if let Some(max) = frame
                    .pointer("/limits/max_text_chars")
                    .and_then(Value::as_u64)
                {
                    self.max_text_chars = usize::try_from(max).unwrap_or(usize::MAX);
                }
                None
            }
            ("joined", Some(room)) => {
                let history = frame.get("history").and_then(Value::as_u64).unwrap_or(0);
                self.history_to_come = (history > 0).then(|| (room.to_owned(), history));
                self.pending_joins.retain(|r| r != room);
                if !self.joined.iter().any(|r| r == room) {
                    self.joined.push(room.to_owned());
                }
                if self.current.is_none() {
                    self.current = Some(room.to_owned());
                }
                None
            }
            ("left", Some(room)) => {
                self.joined.retain(|r| r != room);
                self.pending_joins.retain(|r| r != room);
                self.oldest_seq.remove(room);
                self.fix_current()
            }
            ("chat", Some(room)) => {
                self.note_seq(room, frame.get("seq").and_then(Value::as_u64));
                None
            }
            ("history", Some(room)) => {
                let seqs: Vec<u64> = frame
                    .get("messages")
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(|c| c.get("seq").and_then(Value::as_u64))
                            .collect()
                    })
                    .unwrap_or_default();
                self.note_seq(room, seqs.into_iter().min());
                None
            }
            ("error", room) => {
                let code = frame.get("code").and_then(Value::as_str).unwrap_or("");
                let join_only = matches!(code, "too_many_rooms" | "already_joined");
                // The room the error is about; errors that only answer `join` may leave it out,
                // and the server answers in order, so then it is the oldest pending join.
                let room = match room {
                    Some(room) => room.to_owned(),
                    None if join_only => self.pending_joins.first().cloned()?,
                    None => return None,
                };
                match code {
                    "already_joined" => {
                        self.pending_joins.retain(|r| *r != room);
                        if !self.joined.contains(&room) {
                            self.joined.push(room);
                        }
                        None
                    }
                    "too_many_rooms" | "invalid_room" | "store_unavailable" | "forbidden"
                        if self.pending_joins.contains(&room) =>
                    {
                        self.pending_joins.retain(|r| *r != room);
                        self.fix_current()
                    }
                    // The server knows best (say, a `join` was dropped by the rate limit).
                    "not_in_room" if self.is_member(&room) => {
                        self.joined.retain(|r| *r != room);
                        self.pending_joins.retain(|r| *r != room);
                        self.oldest_seq.remove(&room);
                        self.fix_current()
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::Command;

    pub fn joined(room: &str) -> Value {
        json!({"type": "joined", "room_id": room, "users": ["alice"], "history": 0})
    }

    #[test]
    fn a_failed_join_restores_the_current_room() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.observe(&joined("lobby"));
        let Step::Send { frames, .. } = state.handle(Command::Join("dev".into())) else {
            panic!("no join")
        };
        assert_eq!(frames, [json!({"type": "join", "room_id": "dev"})]);
        assert_eq!(state.current.as_deref(), Some("dev"));
        let note = (state
            .observe(&json!({"type": "error", "code": "too_many_rooms", "message": "…"})))
        .note;
        assert_eq!(note.as_deref(), Some("now talking in lobby"));
        assert!(state.pending_joins.is_empty());
    }

    #[test]
    fn the_server_decides_membership() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.request_join("dev");
        state.observe(&joined("lobby"));
        // The `join` for dev was dropped (say, by the rate limit).
        let note = (state.observe(
            &json!({"type": "error", "code": "not_in_room", "message": "…", "room_id": "dev"}),
        ))
        .note;
        assert_eq!(note.as_deref(), Some("now talking in lobby"));
        assert!(!state.is_member("dev"));
        // An error about something else changes nothing.
        assert_eq!(
            state.observe(&json!({"type": "error", "code": "rate_limited", "message": "…"})),
            Seen::default()
        );
        assert_eq!(state.current.as_deref(), Some("lobby"));
    }

    #[test]
    fn a_join_is_done_once_its_history_came() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        assert!(state.joining());
        state.observe(
            &json!({"type": "joined", "room_id": "lobby", "users": ["alice"], "history": 2}),
        );
        assert_eq!(state.waiting(), ["2 history messages of lobby"]);
        let chat =
            json!({"type": "chat", "room_id": "lobby", "user_id": "bob", "text": "x", "seq": 1});
        state.observe(&chat);
        assert!(state.joining());
        state.observe(&chat);
        assert!(!state.joining());
        assert!(state.waiting().is_empty());
    }

    #[test]
    fn a_join_the_store_could_not_answer_is_not_waited_for() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        assert_eq!(state.waiting(), ["join lobby"]);
        let seen = state.observe(&json!({"type": "error", "code": "store_unavailable",
                                         "message": "…", "room_id": "lobby"}));
        assert_eq!(
            seen.note.as_deref(),
            Some("you are not in any room now: /join ROOM")
        );
        assert!(state.waiting().is_empty());
    }
}
