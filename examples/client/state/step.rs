//! What each command does ([`State::handle`]): the frames to send and what to print, or a
//! local answer when a command cannot be sent (no room, too long, not a member). A child of
//! `state.rs`, so it reads and records the state directly.

use serde_json::{Value, json};

use super::State;
use crate::command::{Command, HELP};
use crate::render::clean;

/// What to do for one command.
#[derive(Debug, PartialEq)]
pub enum Step {
    Nothing,
    Print(String),
    /// Send `frames`, in order; print `echo` (if any) locally.
    Send {
        frames: Vec<Value>,
        echo: Option<String>,
    },
    Quit,
}

impl State {
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
                    frames: vec![self.chat_frame(&room, &text).0],
                    echo: None,
                }
            }
            Command::Join(room) => {
                if self.is_member(&room) {
                    self.switch_to(room)
                } else {
                    Step::Send {
                        frames: vec![self.request_join(&room)],
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
                Ok(room) if self.is_member(&room) => {
                    self.pending.leave(&room);
                    Step::Send {
                        frames: vec![json!({"type": "leave", "room_id": room})],
                        echo: None,
                    }
                }
                Ok(room) => Step::Print(format!("! you are not in room {room}")),
                Err(step) => step,
            },
            Command::Users(room) => match self.current_or(room) {
                Ok(room) => {
                    self.pending.users(&room);
                    Step::Send {
                        frames: vec![json!({"type": "get_users", "room_id": room})],
                        echo: None,
                    }
                }
                Err(step) => step,
            },
            Command::Msg { to, text } => {
                if let Some(error) = self.check_length(&text) {
                    return Step::Print(error);
                }
                // The barrier (see `pending.rs`): any room answers it, in order; outside every
                // room, a room named like the user answers `not_in_room`, which does as well.
                let barrier_room = self.current.clone().unwrap_or_else(|| self.user.clone());
                let echo = self.pending.private(&to, &text, &barrier_room);
                Step::Send {
                    frames: vec![
                        json!({"type": "private", "to_user": to, "content": text}),
                        json!({"type": "get_users", "room_id": barrier_room}),
                    ],
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
                self.pending.history(&room);
                Step::Send {
                    frames: vec![frame],
                    echo: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::joined;

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
        let Step::Send { frames, .. } = state.handle(Command::Say("hi".into())) else {
            panic!("no chat")
        };
        assert_eq!(
            (frames[0]["type"].as_str(), frames[0]["room_id"].as_str()),
            (Some("chat"), Some("lobby"))
        );

        let note = state
            .observe(&json!({"type": "left", "room_id": "lobby"}))
            .note;
        assert_eq!(note.as_deref(), Some("now talking in dev"));
        let note = state
            .observe(&json!({"type": "left", "room_id": "dev"}))
            .note;
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
    fn history_pages_back_from_the_oldest_message_seen() {
        let mut state = State::new("alice");
        state.request_join("lobby");
        state.observe(&joined("lobby"));
        let Step::Send { frames, .. } = state.handle(Command::History(None)) else {
            panic!("no request")
        };
        assert_eq!(frames, [json!({"type": "history", "room_id": "lobby"})]);
        for seq in [51, 52] {
            state.observe(&json!({"type": "chat", "room_id": "lobby", "user_id": "bob", "text": "x", "seq": seq}));
        }
        let Step::Send { frames, .. } = state.handle(Command::History(Some(10))) else {
            panic!("no request")
        };
        assert_eq!(
            frames,
            [json!({"type": "history", "room_id": "lobby", "before_seq": 51, "limit": 10})]
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
        assert_eq!(echo.as_deref(), Some("[private, pending] you -> bob: psst"));
    }

    #[test]
    fn a_private_message_is_followed_by_its_barrier() {
        let mut state = State::new("alice");
        let msg = || Command::Msg {
            to: "bob".into(),
            text: "psst".into(),
        };
        let Step::Send { frames, .. } = state.handle(msg()) else {
            panic!("no private message")
        };
        // In no room: a room named like the user answers `not_in_room`, in order.
        assert_eq!(
            frames,
            [
                json!({"type": "private", "to_user": "bob", "content": "psst"}),
                json!({"type": "get_users", "room_id": "alice"}),
            ]
        );
        state.request_join("lobby");
        state.observe(&joined("lobby"));
        let Step::Send { frames, .. } = state.handle(msg()) else {
            panic!("no private message")
        };
        assert_eq!(frames[1], json!({"type": "get_users", "room_id": "lobby"}));
        assert_eq!(
            state.waiting(),
            ["private message to bob", "private message to bob"]
        );
        let not_in_alice =
            json!({"type": "error", "code": "not_in_room", "message": "…", "room_id": "alice"});
        let seen = state.observe(&not_in_alice);
        assert!(seen.hide);
        assert_eq!(seen.before, ["[private, sent] you -> bob: psst"]);
        assert_eq!(state.waiting(), ["private message to bob"]);
    }
}
