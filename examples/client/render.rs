//! How server frames are shown: one line per event (several for a `history` page), control
//! characters escaped so a frame can never drive the terminal, times in local time, and close
//! codes in the words of `docs/PROTOCOL.md`. Pure functions of the frame, unit-tested.

use std::borrow::Cow;

use chrono::{DateTime, Local, TimeZone};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Replaces control characters (newlines, escape sequences, …) by their escaped form, so that a
/// frame always prints as one line and cannot drive the terminal.
pub fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// The string field `key` of `frame`, cleaned, or `?` when absent.
pub fn field<'a>(frame: &'a Value, key: &str) -> Cow<'a, str> {
    frame
        .get(key)
        .and_then(Value::as_str)
        .map_or(Cow::Borrowed("?"), clean)
}

/// `HH:MM` of an RFC 3339 timestamp in the time zone `tz`.
fn format_hhmm<Tz: TimeZone>(timestamp: &str, tz: &Tz) -> Option<String>
where
    Tz::Offset: std::fmt::Display,
{
    DateTime::parse_from_rfc3339(timestamp)
        .ok()
        .map(|t| t.with_timezone(tz).format("%H:%M").to_string())
}

/// `HH:MM` of an RFC 3339 timestamp in local time.
fn local_hhmm(timestamp: &str) -> Option<String> {
    format_hhmm(timestamp, &Local)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn render_chat(frame: &Value) -> String {
    let mut head = field(frame, "room_id").into_owned();
    if let Some(seq) = frame.get("seq").and_then(Value::as_u64) {
        head.push_str(&format!(" #{seq}"));
    }
    if let Some(time) = frame
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(local_hhmm)
    {
        head.push(' ');
        head.push_str(&time);
    }
    format!(
        "[{head}] {}: {}",
        field(frame, "user_id"),
        field(frame, "text")
    )
}

fn render_users(frame: &Value) -> String {
    let users: Vec<Cow<'_, str>> = frame
        .get("users")
        .and_then(Value::as_array)
        .map(|users| users.iter().filter_map(Value::as_str).map(clean).collect())
        .unwrap_or_default();
    if users.is_empty() {
        "(nobody)".to_owned()
    } else {
        users.join(", ")
    }
}

fn render_history(frame: &Value) -> String {
    let room = field(frame, "room_id");
    let messages: &[Value] = frame
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if messages.is_empty() {
        return format!("[{room}] no older messages");
    }
    let more = frame
        .get("has_more")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut lines = vec![format!(
        "[{room}] history: {}{}",
        plural(messages.len() as u64, "older message"),
        if more { " (/history for more)" } else { "" }
    )];
    for message in messages {
        match view(message) {
            View::Line(line) => lines.push(line),
            View::Hidden => {}
            View::Unknown => lines.push(clean(&message.to_string()).into_owned()),
        }
    }
    lines.join("\n")
}

/// How a frame from the server is shown: `None` when it is not shown at all (a `pong`, a
/// "stopped typing" notice), otherwise one line (several for a `history` page). Text that is
/// not JSON, and JSON that is not a frame of a known type, is shown as it came (with control
/// characters escaped).
pub fn render(raw: &str) -> Option<String> {
    let shown = serde_json::from_str::<Value>(raw).map_or(View::Unknown, |frame| view(&frame));
    match shown {
        View::Line(line) => Some(line),
        View::Hidden => None,
        View::Unknown => Some(clean(raw).into_owned()),
    }
}

/// How a parsed frame is shown.
enum View {
    Line(String),
    Hidden,
    /// Not a frame this client knows: show it raw.
    Unknown,
}

fn view(frame: &Value) -> View {
    let Some(kind) = frame.get("type").and_then(Value::as_str) else {
        return View::Unknown;
    };
    let room = || field(frame, "room_id");
    let user = || field(frame, "user_id");
    View::Line(match kind {
        "chat" => render_chat(frame),
        "welcome" => {
            let mut details = Vec::new();
            if let Some(id) = frame.get("session_id").and_then(Value::as_u64) {
                details.push(format!("session {id}"));
            }
            if let Some(server) = frame.get("server").and_then(Value::as_str) {
                details.push(clean(server).into_owned());
            }
            if details.is_empty() {
                format!("connected as {}", user())
            } else {
                format!("connected as {} ({})", user(), details.join(", "))
            }
        }
        "joined" => {
            let users = frame
                .get("users")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let history = frame.get("history").and_then(Value::as_u64).unwrap_or(0);
            format!(
                "joined {} ({}, {})",
                room(),
                plural(users as u64, "user"),
                plural(history, "history message")
            )
        }
        "left" => format!("left {}", room()),
        "user_joined" => format!("[{}] * {} joined", room(), user()),
        "user_left" => format!("[{}] * {} left", room(), user()),
        "typing" => {
            if frame.get("is_typing").and_then(Value::as_bool) != Some(true) {
                return View::Hidden;
            }
            format!("[{}] {} is typing…", room(), user())
        }
        "active_users" => format!("[{}] users: {}", room(), render_users(frame)),
        "private" => format!(
            "[private] {} -> you: {}",
            field(frame, "from"),
            field(frame, "message")
        ),
        "history" => render_history(frame),
        "error" => format!(
            "! error {}: {}",
            field(frame, "code"),
            field(frame, "message")
        ),
        // The `chat` echo already showed the message; its `ack` says it is stored; the
        // socket lives on after `refreshed` (the session handles it before it gets here).
        "pong" | "ack" | "refreshed" => return View::Hidden,
        _ => return View::Unknown,
    })
}

/// What a WebSocket close code means, in the words of `docs/PROTOCOL.md`.
fn describe_close(code: u16) -> &'static str {
    match code {
        1000 => "normal close",
        1001 => "server is shutting down",
        1002 => "protocol error",
        1003 => "unsupported data",
        1007 => "invalid data",
        1008 => "policy violation: sending too fast, slow down",
        1009 => "message too large",
        1011 => "internal server error",
        1012 => "server is restarting",
        1013 => "try again later",
        4001 => "slow consumer: this client did not read fast enough",
        4002 => "heartbeat timeout",
        4003 => "disconnected by an operator",
        4004 => "token expired",
        _ => "unknown close code",
    }
}

pub fn describe_close_frame(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "the server closed the connection (no close code)".to_owned(),
        Some(frame) => {
            let code = u16::from(frame.code);
            let meaning = describe_close(code);
            let mut text = format!("the server closed the connection: {code} ({meaning})");
            // A reason that only repeats the meaning ("token expired") is not said twice.
            if !frame.reason.is_empty() && frame.reason.as_str() != meaning {
                text.push_str(&format!(": {}", clean(frame.reason.as_str())));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use serde_json::json;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    const TS: &str = "2026-11-22T09:15:02.123Z";

    fn shown(frame: &Value) -> Option<String> {
        render(&frame.to_string())
    }

    fn hhmm() -> String {
        local_hhmm(TS).expect("valid timestamp")
    }

    #[test]
    fn formats_time_in_the_given_zone() {
        assert_eq!(format_hhmm(TS, &Utc).as_deref(), Some("09:15"));
        let plus_two = FixedOffset::east_opt(2 * 3600).expect("valid offset");
        assert_eq!(format_hhmm(TS, &plus_two).as_deref(), Some("11:15"));
        assert_eq!(format_hhmm("yesterday", &Utc), None);
    }

    #[test]
    fn renders_chat() {
        let frame = json!({"type": "chat", "user_id": "alice", "room_id": "lobby", "text": "hello",
                           "timestamp": TS, "message_id": "x", "seq": 42, "client_msg_id": "c-1"});
        assert_eq!(
            shown(&frame),
            Some(format!("[lobby #42 {}] alice: hello", hhmm()))
        );
        let bare = json!({"type": "chat", "user_id": "alice", "room_id": "lobby", "text": "hi"});
        assert_eq!(shown(&bare).as_deref(), Some("[lobby] alice: hi"));
        let broken = json!({"type": "chat", "seq": "forty-two", "timestamp": 7});
        assert_eq!(shown(&broken).as_deref(), Some("[?] ?: ?"));
    }

    #[test]
    fn renders_presence_typing_and_users() {
        let joined =
            json!({"type": "user_joined", "user_id": "bob", "room_id": "lobby", "timestamp": TS});
        assert_eq!(shown(&joined).as_deref(), Some("[lobby] * bob joined"));
        let left =
            json!({"type": "user_left", "user_id": "bob", "room_id": "lobby", "timestamp": TS});
        assert_eq!(shown(&left).as_deref(), Some("[lobby] * bob left"));
        let typing =
            json!({"type": "typing", "user_id": "bob", "room_id": "lobby", "is_typing": true});
        assert_eq!(shown(&typing).as_deref(), Some("[lobby] bob is typing…"));
        let stopped =
            json!({"type": "typing", "user_id": "bob", "room_id": "lobby", "is_typing": false});
        assert_eq!(shown(&stopped), None);
        let users = json!({"type": "active_users", "users": ["alice", "bob"], "room_id": "lobby"});
        assert_eq!(shown(&users).as_deref(), Some("[lobby] users: alice, bob"));
    }

    #[test]
    fn renders_replies() {
        let joined = json!({"type": "joined", "room_id": "lobby", "user_id": "alice",
                            "users": ["alice", "bob"], "last_seq": 42, "history": 5});
        assert_eq!(
            shown(&joined).as_deref(),
            Some("joined lobby (2 users, 5 history messages)")
        );
        let alone = json!({"type": "joined", "room_id": "dev", "users": ["alice"], "history": 1});
        assert_eq!(
            shown(&alone).as_deref(),
            Some("joined dev (1 user, 1 history message)")
        );
        assert_eq!(
            shown(&json!({"type": "left", "room_id": "lobby"})).as_deref(),
            Some("left lobby")
        );
        let private = json!({"type": "private", "from": "alice", "to_user": "bob", "message": "psst",
                             "timestamp": TS, "message_id": "x"});
        assert_eq!(
            shown(&private).as_deref(),
            Some("[private] alice -> you: psst")
        );
        let error = json!({"type": "error", "code": "not_in_room",
                           "message": "you are not in room 'x'", "room_id": "x"});
        assert_eq!(
            shown(&error).as_deref(),
            Some("! error not_in_room: you are not in room 'x'")
        );
        let welcome = json!({"type": "welcome", "user_id": "alice", "session_id": 17, "protocol": 1,
                             "server": "roomcast/0.1.0", "limits": {}});
        assert_eq!(
            shown(&welcome).as_deref(),
            Some("connected as alice (session 17, roomcast/0.1.0)")
        );
        assert_eq!(shown(&json!({"type": "pong"})), None);
        let ack = json!({"type": "ack", "room_id": "r", "client_msg_id": "c-1", "message_id": "m", "seq": 3});
        assert_eq!(shown(&ack), None);
    }

    #[test]
    fn renders_history_pages() {
        let page = json!({"type": "history", "room_id": "lobby", "has_more": true, "messages": [
            {"type": "chat", "user_id": "a", "room_id": "lobby", "text": "one", "seq": 1},
            {"type": "chat", "user_id": "b", "room_id": "lobby", "text": "two", "seq": 2}]});
        assert_eq!(
            shown(&page).as_deref(),
            Some(
                "[lobby] history: 2 older messages (/history for more)\n[lobby #1] a: one\n[lobby #2] b: two"
            )
        );
        let empty =
            json!({"type": "history", "room_id": "lobby", "messages": [], "has_more": false});
        assert_eq!(shown(&empty).as_deref(), Some("[lobby] no older messages"));
    }

    #[test]
    fn unknown_frames_print_raw_and_control_characters_are_escaped() {
        let odd = json!({"type": "weather", "sky": "blue"});
        assert_eq!(shown(&odd), Some(odd.to_string()));
        let raw = r#"{"type": "weather", "sky": "blue", "also": 1}"#;
        assert_eq!(render(raw).as_deref(), Some(raw));
        assert_eq!(render("[1, 2]").as_deref(), Some("[1, 2]"));
        assert_eq!(
            render(r#"{"no": "type"}"#).as_deref(),
            Some(r#"{"no": "type"}"#)
        );
        assert_eq!(render("not json {").as_deref(), Some("not json {"));
        assert_eq!(render("bell\u{7}").as_deref(), Some(r"bell\u{7}"));
        let sneaky =
            json!({"type": "chat", "user_id": "eve", "room_id": "lobby", "text": "a\nb\u{1b}[2J"});
        assert_eq!(
            shown(&sneaky).as_deref(),
            Some(r"[lobby] eve: a\nb\u{1b}[2J")
        );
    }

    #[test]
    fn describes_close_codes() {
        assert_eq!(describe_close(1001), "server is shutting down");
        assert_eq!(
            describe_close(4001),
            "slow consumer: this client did not read fast enough"
        );
        assert_eq!(describe_close(4999), "unknown close code");
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "shutdown".into(),
        };
        assert_eq!(
            describe_close_frame(Some(&frame)),
            "the server closed the connection: 1001 (server is shutting down): shutdown"
        );
        let lapsed = CloseFrame {
            code: CloseCode::from(4004),
            reason: "token expired".into(),
        };
        assert_eq!(
            describe_close_frame(Some(&lapsed)),
            "the server closed the connection: 4004 (token expired)"
        );
        assert_eq!(shown(&json!({"type": "refreshed", "expires_at": 1})), None);
    }
}
