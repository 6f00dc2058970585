//! The client's view of its rooms ([`State`]): which rooms it is in or joining, the current
//! room, how far back `/history` has paged, and the server's text limit. Commands turn into a
//! [`Step`] here, and every frame from the server updates it; no I/O, so it is unit-tested.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::command::{Command, HELP};
use crate::render::clean;

/// `max_text_chars` until the server's `welcome` says otherwise.
const DEFAULT_MAX_TEXT_CHARS: usize = 4000;

/// What to do for one command.
#[derive(Debug, PartialEq)]
pub enum Step {
    Nothing,
    Print(String),
    /// Send `frame`; print `echo` (if any) locally.
    Send {
        frame: Value,
        echo: Option<String>,
    },
    Quit,
}

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
        }
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

    /// A `chat` frame for `room` and its `client_msg_id`.
    pub fn chat_frame(&mut self, room: &str, text: &str) -> (Value, String) {
        self.msg_counter += 1;
        let id = format!("{}-{}", self.msg_id_prefix, self.msg_counter);
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

    fn current_or(&self, room: Option<String>) -> Result<String, Step> {
        room.or_else(|| self.current.clone())
            .ok_or_else(|| Step::Print("! you are not in any room: /join ROOM first".to_owned()))
    }

    fn switch_to(&mut self, room: String) -> Step {
        let note = format!("now talking in {room}");
        self.current = Some(room);
        Step::Print(note)
    }

    /// What to do for a command typed by the user.
    pub fn handle(&mut self, command: Command) -> Step {
        match command {
            Command::Nothing => Step::Nothing,
            Command::Quit => Step::Quit,
            Command::Help => Step::Print(HELP.to_owned()),
            Command::Usage(usage) => Step::Print(format!("! {usage}")),
            Command::Unknown(name) => Step::Print(format!(
                "! unknown command /{}: type /help for the list of commands",
                clean(&name)
            )),
            Command::Say(text) => {
                let room = match self.current_or(None) {
                    Ok(room) => room,
                    Err(step) => return step,
                };
                if let Some(error) = self.check_length(&text) {
                    return Step::Print(error);
                }
                Step::Send {
                    frame: self.chat_frame(&room, &text).0,
                    echo: None,
                }
            }
            Command::Join(room) => {
                if self.is_member(&room) {
                    self.switch_to(room)
                } else {
                    Step::Send {
                        frame: self.request_join(&room),
                        echo: None,
                    }
                }
            }
            Command::Room(room) => {
                if self.is_member(&room) {
                    self.switch_to(room)
                } else {
                    Step::Print(format!("! you are not in room {room}: /join {room} first"))
                }
            }
            Command::Leave(room) => match self.current_or(room) {
                Ok(room) if self.is_member(&room) => Step::Send {
                    frame: json!({"type": "leave", "room_id": room}),
                    echo: None,
                },
                Ok(room) => Step::Print(format!("! you are not in room {room}")),
                Err(step) => step,
            },
            Command::Users(room) => match self.current_or(room) {
                Ok(room) => Step::Send {
                    frame: json!({"type": "get_users", "room_id": room}),
                    echo: None,
                },
                Err(step) => step,
            },
            Command::Msg { to, text } => {
                if let Some(error) = self.check_length(&text) {
                    return Step::Print(error);
                }
                let echo = format!("[private] you -> {to}: {}", clean(&text));
                Step::Send {
                    frame: json!({"type": "private", "to_user": to, "content": text}),
                    echo: Some(echo),
                }
            }
            Command::History(limit) => {
                let room = match self.current_or(None) {
                    Ok(room) => room,
                    Err(step) => return step,
                };
                let mut frame = json!({"type": "history", "room_id": room});
                if let Some(before) = self.oldest_seq.get(&room) {
                    frame["before_seq"] = json!(before);
                }
                if let Some(limit) = limit {
                    frame["limit"] = json!(limit);
                }
                Step::Send { frame, echo: None }
            }
        }
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

    /// Updates the state from a frame the server sent; returns a note for the user, if any.
    pub fn observe(&mut self, frame: &Value) -> Option<String> {
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
                    "too_many_rooms" | "invalid_room" if self.pending_joins.contains(&room) => {
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
mod tests {
    use super::*;

    fn joined(room: &str) -> Value {
        json!({"type": "joined", "room_id": room, "users": ["alice"], "history": 0})
    }

    #[test]
    fn tracks_rooms_and_the_current_room() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.request_join("dev");
        assert_eq!(state.current.as_deref(), Some("dev"));
        state.observe(&joined("lobby"));
        state.observe(&joined("dev"));
        assert_eq!(state.joined, ["lobby", "dev"]);

        assert_eq!(
            state.handle(Command::Room("lobby".into())),
            Step::Print("now talking in lobby".into())
        );
        assert!(
            matches!(state.handle(Command::Room("nope".into())), Step::Print(p) if p.starts_with('!'))
        );
        let Step::Send { frame, .. } = state.handle(Command::Say("hi".into())) else {
            panic!("no chat")
        };
        assert_eq!(
            (frame["type"].as_str(), frame["room_id"].as_str()),
            (Some("chat"), Some("lobby"))
        );

        let note = state.observe(&json!({"type": "left", "room_id": "lobby"}));
        assert_eq!(note.as_deref(), Some("now talking in dev"));
        let note = state.observe(&json!({"type": "left", "room_id": "dev"}));
        assert_eq!(
            note.as_deref(),
            Some("you are not in any room now: /join ROOM")
        );
        assert!(matches!(
            state.handle(Command::Say("hi".into())),
            Step::Print(_)
        ));
    }

    #[test]
    fn a_failed_join_restores_the_current_room() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.observe(&joined("lobby"));
        let Step::Send { frame, .. } = state.handle(Command::Join("dev".into())) else {
            panic!("no join")
        };
        assert_eq!(frame, json!({"type": "join", "room_id": "dev"}));
        assert_eq!(state.current.as_deref(), Some("dev"));
        let note =
            state.observe(&json!({"type": "error", "code": "too_many_rooms", "message": "…"}));
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
        let note = state.observe(
            &json!({"type": "error", "code": "not_in_room", "message": "…", "room_id": "dev"}),
        );
        assert_eq!(note.as_deref(), Some("now talking in lobby"));
        assert!(!state.is_member("dev"));
        // An error about something else changes nothing.
        assert_eq!(
            state.observe(&json!({"type": "error", "code": "rate_limited", "message": "…"})),
            None
        );
        assert_eq!(state.current.as_deref(), Some("lobby"));
    }

    #[test]
    fn history_pages_back_from_the_oldest_message_seen() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.observe(&joined("lobby"));
        let Step::Send { frame, .. } = state.handle(Command::History(None)) else {
            panic!("no request")
        };
        assert_eq!(frame, json!({"type": "history", "room_id": "lobby"}));
        for seq in [51, 52] {
            state.observe(&json!({"type": "chat", "room_id": "lobby", "user_id": "bob", "text": "x", "seq": seq}));
        }
        let Step::Send { frame, .. } = state.handle(Command::History(Some(10))) else {
            panic!("no request")
        };
        assert_eq!(
            frame,
            json!({"type": "history", "room_id": "lobby", "before_seq": 51, "limit": 10})
        );
    }

    #[test]
    fn local_checks_send_nothing() {
        let mut state = State::new("alice");
        state.observe(&json!({"type": "welcome", "limits": {"max_text_chars": 5}}));
        state.request_join("lobby");
        assert!(matches!(
            state.handle(Command::Say("too long".into())),
            Step::Print(_)
        ));
        assert!(matches!(
            state.handle(Command::Unknown("x".into())),
            Step::Print(_)
        ));
        assert!(matches!(
            state.handle(Command::Leave(Some("dev".into()))),
            Step::Print(_)
        ));
        let Step::Send { echo, .. } = state.handle(Command::Msg {
            to: "bob".into(),
            text: "psst".into(),
        }) else {
            panic!("no private message")
        };
        assert_eq!(echo.as_deref(), Some("[private] you -> bob: psst"));
    }
}
