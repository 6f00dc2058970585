//! What this client sent and has no answer for yet ([`Pending`]), so that a message is shown
//! as sent only once the server says so, and so that piped input can wait, at its end, for
//! everything it sent.
//!
//! What counts as the answer, from `docs/PROTOCOL.md`:
//!
//! - A chat (always sent with a `client_msg_id`) is confirmed by its `ack` and by its echo
//!   (the `chat` frame itself, which is what shows it); the two come in either order. An
//!   `error` naming its `client_msg_id` means it failed.
//! - A private message has no positive answer: the server delivers it and tells the sender
//!   nothing, or answers `user_offline` naming `to_user`. So the client sends a `get_users`
//!   right after it, as a barrier: `ChatServer` handles one socket's requests in order and
//!   answers each synchronously, so when the barrier's answer (`active_users`, or
//!   `not_in_room` when the client is in no room) arrives without a `user_offline` before it,
//!   the private message was delivered. The barrier's answer is not shown.
//! - An `error` that names nothing (`rate_limited`, `overloaded`) may be about any frame in
//!   flight; a private message waiting for its barrier when one comes is reported "not
//!   confirmed", never "sent".
//! - `/users`, `/history` and `/leave` are answered by `active_users`, `history` and `left`
//!   (or an `error` naming the room: `forbidden` when the token does not open it). Joins are
//!   `State`'s business.
//! - A chat the token does not allow there (a read-only room) is answered with a `forbidden`
//!   error naming its `client_msg_id`: it failed, like any chat an error names.

use std::collections::VecDeque;

use serde_json::Value;

use crate::render::clean;

/// Requests sent and not answered yet.
#[derive(Debug, Default)]
pub struct Pending {
    /// Chats by `client_msg_id`, in the order sent.
    chats: Vec<Chat>,
    /// Private messages waiting for their barrier (or a `user_offline`), in the order sent.
    privates: Vec<Private>,
    /// `get_users` requests, in the order sent: their answers come back in that order.
    users: VecDeque<UsersAsk>,
    /// Rooms of `history` requests not answered yet.
    histories: Vec<String>,
    /// Rooms of `leave` requests not answered yet.
    leaves: Vec<String>,
    /// Numbers the private messages, so a barrier names the one it is for.
    next_private: u64,
}

#[derive(Debug)]
struct Chat {
    id: String,
    room: String,
    text: String,
    acked: bool,
    echoed: bool,
}

#[derive(Debug)]
struct Private {
    serial: u64,
    to: String,
    text: String,
    /// The code of an unattributed `error` that came while this waited: it may have been
    /// dropped.
    doubt: Option<String>,
}

#[derive(Debug)]
struct UsersAsk {
    room: String,
    /// The private message this `get_users` is the barrier of; `None` for `/users`.
    barrier_for: Option<u64>,
}

/// What a frame from the server means for the requests in flight.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The frame only answers a barrier the client sent on its own: do not show it.
    pub hide: bool,
    /// Lines to show before the frame's own: the new status of a message.
    pub lines: Vec<String>,
    /// Messages that failed or could not be confirmed, one description each.
    pub failed: Vec<String>,
}

impl Pending {
    /// Records a chat sent to `room`.
    pub fn chat(&mut self, id: &str, room: &str, text: &str) {
        self.chats.push(Chat {
            id: id.to_owned(),
            room: room.to_owned(),
            text: text.to_owned(),
            acked: false,
            echoed: false,
        });
    }

    /// Records a private message and its barrier, a `get_users` for `barrier_room`; returns
    /// the line that shows it as pending.
    pub fn private(&mut self, to: &str, text: &str, barrier_room: &str) -> String {
        self.next_private += 1;
        let private = Private {
            serial: self.next_private,
            to: to.to_owned(),
            text: text.to_owned(),
            doubt: None,
        };
        let line = private.line("pending");
        self.users.push_back(UsersAsk {
            room: barrier_room.to_owned(),
            barrier_for: Some(private.serial),
        });
        self.privates.push(private);
        line
    }

    /// Records a `get_users` for `/users ROOM`.
    pub fn users(&mut self, room: &str) {
        self.users.push_back(UsersAsk {
            room: room.to_owned(),
            barrier_for: None,
        });
    }

    pub fn history(&mut self, room: &str) {
        self.histories.push(room.to_owned());
    }

    pub fn leave(&mut self, room: &str) {
        self.leaves.push(room.to_owned());
    }

    /// What is still waiting for an answer, one description each (empty: nothing).
    pub fn waiting(&self) -> Vec<String> {
        let chats = self.chats.iter().map(|c| describe_chat(&c.room, &c.text));
        let privates = self.privates.iter().map(Private::describe);
        let users = (self.users.iter())
            .filter(|u| u.barrier_for.is_none())
            .map(|u| format!("/users {}", u.room));
        let histories = self.histories.iter().map(|r| format!("/history in {r}"));
        let leaves = self.leaves.iter().map(|r| format!("/leave {r}"));
        chats
            .chain(privates)
            .chain(users)
            .chain(histories)
            .chain(leaves)
            .collect()
    }

    /// Updates the requests in flight from a frame the server sent (`me` is this user).
    pub fn observe(&mut self, frame: &Value, me: &str) -> Outcome {
        let text = |key| frame.get(key).and_then(Value::as_str);
        let id = text("client_msg_id");
        match (text("type").unwrap_or(""), text("room_id")) {
            ("ack", _) => self.chat_answered(id, |c| c.acked = true),
            ("chat", _) if text("user_id") == Some(me) => {
                self.chat_answered(id, |c| c.echoed = true)
            }
            ("active_users", Some(room)) => return self.users_answered(room),
            ("history", Some(room)) => remove_first(&mut self.histories, room),
            ("left", Some(room)) => remove_first(&mut self.leaves, room),
            ("error", room) => return self.error(frame, room, id),
            _ => {}
        }
        Outcome::default()
    }

    fn chat_answered(&mut self, id: Option<&str>, mark: impl FnOnce(&mut Chat)) {
        if let Some(i) = self.chats.iter().position(|c| Some(c.id.as_str()) == id) {
            mark(&mut self.chats[i]);
            if self.chats[i].acked && self.chats[i].echoed {
                self.chats.remove(i);
            }
        }
    }

    /// The answer to the oldest `get_users` for `room`; a barrier's settles its message.
    fn users_answered(&mut self, room: &str) -> Outcome {
        let Some(i) = self.users.iter().position(|u| u.room == room) else {
            return Outcome::default();
        };
        let ask = self.users.remove(i).expect("the index was just found");
        let Some(serial) = ask.barrier_for else {
            return Outcome::default();
        };
        let mut outcome = Outcome {
            hide: true,
            ..Outcome::default()
        };
        // Gone already when a `user_offline` settled it.
        if let Some(i) = self.privates.iter().position(|p| p.serial == serial) {
            let private = self.privates.remove(i);
            match &private.doubt {
                None => outcome.lines.push(private.line("sent")),
                Some(code) => {
                    outcome.lines.push(private.line("not confirmed"));
                    let why = format!("not confirmed: the server dropped a request ({code})");
                    outcome
                        .failed
                        .push(format!("{} ({why})", private.describe()));
                }
            }
        }
        outcome
    }

    fn error(&mut self, frame: &Value, room: Option<&str>, id: Option<&str>) -> Outcome {
        let code = frame.get("code").and_then(Value::as_str).unwrap_or("");
        let mut outcome = Outcome::default();
        if let Some(id) = id {
            if let Some(i) = self.chats.iter().position(|c| c.id == id) {
                let chat = self.chats.remove(i);
                outcome.lines.push(format!(
                    "[{}, failed] you: {}",
                    chat.room,
                    clean(&chat.text)
                ));
                let what = describe_chat(&chat.room, &chat.text);
                outcome.failed.push(format!("{what} ({code})"));
            }
            return outcome;
        }
        match (code, room) {
            ("user_offline" | "cluster_unavailable", _) => {
                let to = frame.get("to_user").and_then(Value::as_str);
                if let Some(i) = self.privates.iter().position(|p| Some(p.to.as_str()) == to) {
                    let private = self.privates.remove(i);
                    outcome.lines.push(private.line("failed"));
                    outcome
                        .failed
                        .push(format!("{} ({code})", private.describe()));
                }
            }
            ("rate_limited" | "overloaded", _) => {
                for private in &mut self.privates {
                    private.doubt.get_or_insert_with(|| code.to_owned());
                }
            }
            ("not_in_room" | "forbidden", Some(room))
                if self.users.iter().any(|u| u.room == room) =>
            {
                return self.users_answered(room);
            }
            ("not_in_room", Some(room)) if self.leaves.iter().any(|r| r == room) => {
                remove_first(&mut self.leaves, room);
            }
            (_, Some(room)) => remove_first(&mut self.histories, room),
            _ => {}
        }
        outcome
    }
}

impl Private {
    fn line(&self, status: &str) -> String {
        format!(
            "[private, {status}] you -> {}: {}",
            self.to,
            clean(&self.text)
        )
    }

    fn describe(&self) -> String {
        format!("private message to {}", self.to)
    }
}

/// `chat "TEXT" in ROOM`, the text cut to 40 characters.
fn describe_chat(room: &str, text: &str) -> String {
    format!("chat \"{}\" in {room}", cut(text))
}

/// A line of input the client refused itself, as a failure names it.
pub fn describe_line(line: &str) -> String {
    format!("line \"{}\"", cut(line))
}

/// `text` cleaned for the terminal, cut to 40 characters.
fn cut(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    clean(&short).into_owned()
}

fn remove_first(rooms: &mut Vec<String>, room: &str) {
    if let Some(i) = rooms.iter().position(|r| r == room) {
        rooms.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offline(to: &str) -> Value {
        json!({"type": "error", "code": "user_offline", "message": format!("user '{to}' is not online"), "to_user": to})
    }

    fn users(room: &str) -> Value {
        json!({"type": "active_users", "room_id": room, "users": ["alice"]})
    }

    #[test]
    fn a_private_message_is_sent_when_its_barrier_comes_back_first() {
        let mut pending = Pending::default();
        let line = pending.private("bob", "psst", "lobby");
        assert_eq!(line, "[private, pending] you -> bob: psst");
        assert_eq!(pending.waiting(), ["private message to bob"]);
        let outcome = pending.observe(&users("lobby"), "alice");
        assert_eq!(
            outcome,
            Outcome {
                hide: true,
                lines: vec!["[private, sent] you -> bob: psst".into()],
                failed: vec![],
            }
        );
        assert!(pending.waiting().is_empty());
    }

    #[test]
    fn a_private_message_to_someone_offline_fails_and_its_barrier_stays_hidden() {
        let mut pending = Pending::default();
        pending.private("nobody", "hi", "lobby");
        let outcome = pending.observe(&offline("nobody"), "alice");
        assert!(!outcome.hide);
        assert_eq!(outcome.lines, ["[private, failed] you -> nobody: hi"]);
        assert_eq!(outcome.failed, ["private message to nobody (user_offline)"]);
        assert!(pending.waiting().is_empty());
        let outcome = pending.observe(&users("lobby"), "alice");
        assert_eq!((outcome.hide, outcome.lines.len()), (true, 0));
    }

    #[test]
    fn a_barrier_outside_any_room_is_answered_by_not_in_room() {
        let mut pending = Pending::default();
        pending.private("bob", "psst", "alice");
        let outcome = pending.observe(
            &json!({"type": "error", "code": "not_in_room", "message": "…", "room_id": "alice"}),
            "alice",
        );
        assert!(outcome.hide);
        assert_eq!(outcome.lines, ["[private, sent] you -> bob: psst"]);
    }

    #[test]
    fn users_answers_come_in_order_and_only_barriers_are_hidden() {
        let mut pending = Pending::default();
        pending.users("lobby");
        pending.private("bob", "psst", "lobby");
        assert_eq!(
            pending.waiting(),
            ["private message to bob", "/users lobby"]
        );
        assert_eq!(
            pending.observe(&users("lobby"), "alice"),
            Outcome::default()
        );
        assert!(pending.observe(&users("lobby"), "alice").hide);
    }

    #[test]
    fn an_unattributed_drop_makes_a_waiting_private_message_not_confirmed() {
        let mut pending = Pending::default();
        pending.private("bob", "psst", "lobby");
        let drop = json!({"type": "error", "code": "rate_limited", "message": "…"});
        assert_eq!(pending.observe(&drop, "alice"), Outcome::default());
        let outcome = pending.observe(&users("lobby"), "alice");
        assert_eq!(outcome.lines, ["[private, not confirmed] you -> bob: psst"]);
        assert_eq!(outcome.failed.len(), 1);
    }

    #[test]
    fn a_chat_waits_for_its_ack_and_its_echo_in_either_order() {
        let mut pending = Pending::default();
        pending.chat("c-1", "lobby", "one");
        pending.chat("c-2", "lobby", "two");
        let ack = |id| json!({"type": "ack", "room_id": "lobby", "client_msg_id": id, "seq": 1});
        let echo = |id| json!({"type": "chat", "room_id": "lobby", "user_id": "alice", "text": "x", "client_msg_id": id});
        pending.observe(&ack("c-1"), "alice");
        pending.observe(&echo("c-2"), "alice");
        assert_eq!(
            pending.waiting(),
            ["chat \"one\" in lobby", "chat \"two\" in lobby"]
        );
        pending.observe(&echo("c-1"), "alice");
        pending.observe(&ack("c-2"), "alice");
        assert!(pending.waiting().is_empty());
    }

    #[test]
    fn a_chat_error_names_the_message_that_failed() {
        let mut pending = Pending::default();
        pending.chat("c-1", "lobby", "hello");
        let error = json!({"type": "error", "code": "store_unavailable", "message": "…",
                           "room_id": "lobby", "client_msg_id": "c-1"});
        let outcome = pending.observe(&error, "alice");
        assert_eq!(outcome.lines, ["[lobby, failed] you: hello"]);
        assert_eq!(
            outcome.failed,
            ["chat \"hello\" in lobby (store_unavailable)"]
        );
        assert!(pending.waiting().is_empty());
    }

    #[test]
    fn history_and_leave_are_answered_by_room() {
        let mut pending = Pending::default();
        pending.history("lobby");
        pending.leave("dev");
        assert_eq!(pending.waiting(), ["/history in lobby", "/leave dev"]);
        pending.observe(
            &json!({"type": "history", "room_id": "lobby", "messages": []}),
            "alice",
        );
        pending.observe(&json!({"type": "left", "room_id": "dev"}), "alice");
        assert!(pending.waiting().is_empty());
    }

    #[test]
    fn long_texts_are_cut_in_descriptions() {
        let text = "x".repeat(50);
        assert_eq!(
            describe_chat("r", &text),
            format!("chat \"{}…\" in r", "x".repeat(40))
        );
    }
}
