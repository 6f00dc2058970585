//! A terminal client for roomcast.
//!
//! It opens one multi-room socket (`{url}/ws?user_id=USER`, see `docs/PROTOCOL.md`), joins the
//! rooms given with `--room`, then sends every line typed on stdin as a chat message to the
//! *current room* (the room joined or switched to last) and prints what the server sends, one
//! line per event:
//!
//! ```text
//! connected as alice (session 17, roomcast/0.1.0)
//! joined lobby (2 users, 5 history messages)
//! [lobby #42 09:15] alice: hello
//! [lobby] * bob joined
//! [lobby] bob is typing…
//! [lobby] users: alice, bob
//! [private] bob -> you: psst
//! ! error not_in_room: you are not in room 'x'
//! ```
//!
//! Times are shown in local time. Frames of unknown types, and frames that are not JSON at all,
//! are printed as they came.
//!
//! # Usage
//!
//! ```text
//! cargo run --example client -- --user alice --room lobby [--room dev] [--url ws://HOST:PORT]
//!                               [--quiet-typing] [--send TEXT]... [--timeout SECS]
//! ```
//!
//! - `--user NAME` (env `ROOMCAST_USER`): your user name.
//! - `--room ROOM` (repeatable, default `lobby`): rooms to join; the last one is the current room.
//! - `--url URL` (env `ROOMCAST_URL`, default `ws://127.0.0.1:8080`): the server's base URL
//!   (`http://` and `https://` are accepted as `ws://` and `wss://`).
//! - `--quiet-typing`: do not print typing notifications.
//! - `--send TEXT` (repeatable): script mode. Send each TEXT to the current room once all rooms
//!   are joined, wait until the server has echoed every one of them, then close and exit 0.
//!   Stdin is not read. Any `error` frame, a close, or `--timeout SECS` (default 10) passing
//!   first makes the client exit with status 1.
//!
//! # Commands
//!
//! ```text
//! TEXT            send TEXT to the current room (start it with // to send a line beginning with /)
//! /join ROOM      join ROOM and make it the current room
//! /leave [ROOM]   leave ROOM (default: the current room)
//! /room ROOM      make ROOM, one you have joined, the current room
//! /users [ROOM]   list the users in ROOM (default: the current room)
//! /msg USER TEXT  send a private message to USER
//! /history [N]    show up to N (1-100, server default 50) messages of the current room older
//!                 than the oldest one shown so far
//! /help           show the commands
//! /quit           close the connection and exit (end of input and Ctrl-C do the same)
//! ```
//!
//! Unknown commands are answered locally with a hint and send nothing.
//!
//! # Exit status
//!
//! 0 after `/quit`, end of input, Ctrl-C, or a completed `--send` script. 1 when the connection
//! cannot be opened or is lost, and when the server closes it; the close code and its meaning
//! are printed (for example `1001 (server is shutting down)`). 2 for bad command-line arguments.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Local, TimeZone};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's side of the closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// `max_text_chars` until the server's `welcome` says otherwise.
const DEFAULT_MAX_TEXT_CHARS: usize = 4000;

const HELP: &str = "\
commands:
  TEXT            send TEXT to the current room (start it with // to send a line beginning with /)
  /join ROOM      join ROOM and make it the current room
  /leave [ROOM]   leave ROOM (default: the current room)
  /room ROOM      make ROOM, one you have joined, the current room
  /users [ROOM]   list the users in ROOM (default: the current room)
  /msg USER TEXT  send a private message to USER
  /history [N]    show up to N (1-100) older messages of the current room
  /help           show this help
  /quit           close the connection and exit (also end of input or Ctrl-C)";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// Terminal client for the roomcast chat server.
#[derive(Parser, Debug)]
#[command(name = "roomcast-client", version, after_help = HELP)]
struct Args {
    /// Your user name (1-64 characters of A-Z a-z 0-9 _ - . :).
    #[arg(short, long, env = "ROOMCAST_USER", value_parser = parse_user_arg)]
    user: String,

    /// A room to join; repeatable. The last one becomes the current room.
    #[arg(short, long = "room", value_name = "ROOM", default_value = "lobby",
          value_parser = parse_room_arg)]
    rooms: Vec<String>,

    /// The server's base URL; the client connects to URL/ws?user_id=USER.
    #[arg(long, env = "ROOMCAST_URL", default_value = "ws://127.0.0.1:8080")]
    url: String,

    /// Do not print "… is typing" notifications.
    #[arg(long)]
    quiet_typing: bool,

    /// Send TEXT to the current room after joining, wait for its echo and exit (repeatable).
    /// Stdin is not read in this mode.
    #[arg(long = "send", value_name = "TEXT",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    send: Vec<String>,

    /// With --send: give up (exit 1) when the echoes have not all arrived after SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

/// Whether `name` is a valid room or user name: 1 to 64 characters of `A-Z a-z 0-9 _ - . :`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn name_error(kind: &str, name: &str) -> String {
    format!(
        "invalid {kind} name '{}': use 1-64 characters of A-Z a-z 0-9 _ - . :",
        clean(name)
    )
}

fn parse_user_arg(s: &str) -> Result<String, String> {
    if valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err(name_error("user", s))
    }
}

fn parse_room_arg(s: &str) -> Result<String, String> {
    if valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err(name_error("room", s))
    }
}

/// The multi-room socket URL for `user` on the server at `base`.
fn build_url(base: &str, user: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_owned()
    };
    // `user` is a valid name, so it needs no percent-encoding.
    format!("{base}/ws?user_id={user}")
}

// ---------------------------------------------------------------------------------------------
// Input: commands
// ---------------------------------------------------------------------------------------------

/// One line of user input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Plain text for the current room.
    Say(String),
    Join(String),
    Leave(Option<String>),
    Room(String),
    Users(Option<String>),
    Msg {
        to: String,
        text: String,
    },
    History(Option<u32>),
    Quit,
    Help,
    /// An empty line: nothing to do.
    Nothing,
    /// A known command used wrongly; the message explains how to use it.
    Usage(String),
    /// An unknown command (its name, without the slash).
    Unknown(String),
}

/// Parses one line typed by the user.
fn parse_command(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Nothing;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line.to_owned());
    };
    if rest.starts_with('/') {
        // "//text" sends "/text".
        return Command::Say(rest.to_owned());
    }
    let (raw_name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let words: Vec<&str> = args.split_whitespace().collect();
    let name = raw_name.to_ascii_lowercase();
    match name.as_str() {
        "join" | "room" => match room_word(&words, &format!("/{name} ROOM")) {
            Ok(Some(room)) if name == "join" => Command::Join(room),
            Ok(Some(room)) => Command::Room(room),
            Ok(None) => Command::Usage(format!("usage: /{name} ROOM")),
            Err(usage) => usage,
        },
        "leave" => match room_word(&words, "/leave [ROOM]") {
            Ok(room) => Command::Leave(room),
            Err(usage) => usage,
        },
        "users" => match room_word(&words, "/users [ROOM]") {
            Ok(room) => Command::Users(room),
            Err(usage) => usage,
        },
        "msg" => {
            let args = args.trim_start();
            let (to, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            let text = text.trim_start();
            if to.is_empty() || text.trim().is_empty() {
                Command::Usage("usage: /msg USER TEXT".to_owned())
            } else if !valid_name(to) {
                Command::Usage(name_error("user", to))
            } else {
                Command::Msg {
                    to: to.to_owned(),
                    text: text.to_owned(),
                }
            }
        }
        "history" => match words.as_slice() {
            [] => Command::History(None),
            [n] => match n.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Command::History(Some(n)),
                _ => Command::Usage("usage: /history [N], N from 1 to 100".to_owned()),
            },
            _ => Command::Usage("usage: /history [N], N from 1 to 100".to_owned()),
        },
        "quit" | "exit" => Command::Quit,
        "help" | "?" => Command::Help,
        _ => Command::Unknown(raw_name.to_owned()),
    }
}

/// The optional single room argument of a command, or the usage error to show.
fn room_word(words: &[&str], usage: &str) -> Result<Option<String>, Command> {
    match words {
        [] => Ok(None),
        [room] if valid_name(room) => Ok(Some((*room).to_owned())),
        [room] => Err(Command::Usage(name_error("room", room))),
        _ => Err(Command::Usage(format!("usage: {usage}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Output: rendering server frames
// ---------------------------------------------------------------------------------------------

/// Replaces control characters (newlines, escape sequences, …) by their escaped form, so that a
/// frame always prints as one line and cannot drive the terminal.
fn clean(s: &str) -> Cow<'_, str> {
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
fn field<'a>(frame: &'a Value, key: &str) -> Cow<'a, str> {
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
fn render(raw: &str) -> Option<String> {
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
        // The `chat` echo already showed the message; its `ack` says it is stored.
        "pong" | "ack" => return View::Hidden,
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
        _ => "unknown close code",
    }
}

fn describe_close_frame(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "the server closed the connection (no close code)".to_owned(),
        Some(frame) => {
            let code = u16::from(frame.code);
            let mut text = format!(
                "the server closed the connection: {code} ({})",
                describe_close(code)
            );
            if !frame.reason.is_empty() {
                text.push_str(&format!(": {}", clean(frame.reason.as_str())));
            }
            text
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client state
// ---------------------------------------------------------------------------------------------

/// What to do for one command.
#[derive(Debug, PartialEq)]
enum Step {
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
struct State {
    user: String,
    /// Rooms the server confirmed with `joined`, in that order.
    joined: Vec<String>,
    /// Rooms we sent `join` for and have no answer for yet.
    pending_joins: Vec<String>,
    current: Option<String>,
    /// Per room, the smallest `seq` shown so far: `/history` pages back from it.
    oldest_seq: HashMap<String, u64>,
    max_text_chars: usize,
    msg_id_prefix: String,
    msg_counter: u64,
}

impl State {
    fn new(user: &str) -> Self {
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
    fn request_join(&mut self, room: &str) -> Value {
        self.pending_joins.push(room.to_owned());
        self.current = Some(room.to_owned());
        json!({"type": "join", "room_id": room})
    }

    /// A `chat` frame for `room` and its `client_msg_id`.
    fn chat_frame(&mut self, room: &str, text: &str) -> (Value, String) {
        self.msg_counter += 1;
        let id = format!("{}-{}", self.msg_id_prefix, self.msg_counter);
        (
            json!({"type": "chat", "room_id": room, "text": text, "client_msg_id": id}),
            id,
        )
    }

    /// An error message when `text` is longer than the server allows.
    fn check_length(&self, text: &str) -> Option<String> {
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
    fn handle(&mut self, command: Command) -> Step {
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
    fn observe(&mut self, frame: &Value) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// Prints one line on stdout; a closed stdout (e.g. `| head`) is not an error worth a panic.
fn out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn describe_connect_error(url: &str, error: tungstenite::Error) -> anyhow::Error {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let detail = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<Value>(body).ok())
                .and_then(|body| {
                    let error = body.get("error")?;
                    Some(format!(
                        "{}: {}",
                        field(error, "code"),
                        field(error, "message")
                    ))
                });
            let mut text = format!("the server refused the connection to {url}: HTTP {status}");
            if let Some(detail) = detail {
                text.push_str(&format!(": {detail}"));
            } else if status.as_u16() == 503 {
                text.push_str(" (the server is full or shutting down)");
            }
            anyhow!(text)
        }
        error => anyhow!("cannot connect to {url}: {error}"),
    }
}

async fn connect(url: &str) -> anyhow::Result<Ws> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
        Err(_) => bail!(
            "cannot connect to {url}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Err(error)) => Err(describe_connect_error(url, error)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

async fn send_json(ws: &mut Ws, frame: &Value) -> anyhow::Result<()> {
    log::debug!("-> {frame}");
    ws.send(Message::text(frame.to_string()))
        .await
        .context("lost the connection while sending")
}

/// Starts the close handshake with 1000 and waits (briefly) for the server's answer.
async fn close(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(message)) = ws.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Reads stdin line by line on its own task. The channel closes at end of input.
fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    log::warn!("cannot read stdin: {error}");
                    break;
                }
            }
        }
    });
    rx
}

async fn next_line(lines: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `--send` script: its texts, then the `client_msg_id`s still waiting for their echo.
struct Script {
    texts: Vec<String>,
    awaiting: Option<HashSet<String>>,
}

enum Flow {
    Continue,
    Quit,
}

struct Client {
    ws: Ws,
    state: State,
    quiet_typing: bool,
    script: Option<Script>,
}

impl Client {
    async fn on_line(&mut self, line: &str) -> anyhow::Result<Flow> {
        match self.state.handle(parse_command(line)) {
            Step::Nothing => {}
            Step::Print(text) => out(&text),
            Step::Send { frame, echo } => {
                send_json(&mut self.ws, &frame).await?;
                if let Some(echo) = echo {
                    out(&echo);
                }
            }
            Step::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    async fn on_message(&mut self, message: Message) -> anyhow::Result<Flow> {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(bytes) => {
                out(&format!("<binary frame, {} bytes>", bytes.len()));
                Ok(Flow::Continue)
            }
            Message::Close(frame) => {
                let text = describe_close_frame(frame.as_ref());
                // Keep reading briefly so tungstenite sends and flushes its reply to the close.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = self.ws.next().await {}
                })
                .await;
                Err(anyhow!(text))
            }
            // tungstenite answers pings by itself; its pongs are flushed as we keep reading.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Flow::Continue),
        }
    }

    async fn on_text(&mut self, raw: &str) -> anyhow::Result<Flow> {
        log::debug!("<- {raw}");
        let frame = serde_json::from_str::<Value>(raw).unwrap_or(Value::Null);
        let note = self.state.observe(&frame);
        let kind = frame.get("type").and_then(Value::as_str);
        let hidden = self.quiet_typing && kind == Some("typing");
        if !hidden && let Some(line) = render(raw) {
            out(&line);
        }
        if let Some(note) = note {
            out(&note);
        }
        if self.script.is_some() {
            return self.advance_script(&frame, kind).await;
        }
        Ok(Flow::Continue)
    }

    /// Moves the `--send` script on after a frame from the server: once every room is joined,
    /// send the texts; once all of them came back, quit.
    async fn advance_script(&mut self, frame: &Value, kind: Option<&str>) -> anyhow::Result<Flow> {
        let Some(script) = &mut self.script else {
            return Ok(Flow::Continue);
        };
        if kind == Some("error") {
            bail!("--send: the server answered with an error");
        }
        if let Some(awaiting) = &mut script.awaiting {
            let mine = kind == Some("chat")
                && frame.get("user_id").and_then(Value::as_str) == Some(self.state.user.as_str());
            if let Some(id) = frame
                .get("client_msg_id")
                .and_then(Value::as_str)
                .filter(|_| mine)
            {
                awaiting.remove(id);
            }
            return Ok(if awaiting.is_empty() {
                Flow::Quit
            } else {
                Flow::Continue
            });
        }
        if !self.state.pending_joins.is_empty() {
            return Ok(Flow::Continue);
        }
        let room = self
            .state
            .current
            .clone()
            .context("--send: not in any room")?;
        let mut awaiting = HashSet::new();
        for text in std::mem::take(&mut script.texts) {
            if let Some(error) = self.state.check_length(&text) {
                bail!("--send: {}", error.trim_start_matches("! "));
            }
            let (frame, id) = self.state.chat_frame(&room, &text);
            send_json(&mut self.ws, &frame).await?;
            awaiting.insert(id);
        }
        let flow = if awaiting.is_empty() {
            Flow::Quit
        } else {
            Flow::Continue
        };
        script.awaiting = Some(awaiting);
        Ok(flow)
    }

    async fn run(
        &mut self,
        mut lines: Option<mpsc::Receiver<String>>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut ctrl_c_armed = true;
        let timeout = tokio::time::sleep(deadline);
        tokio::pin!(timeout);
        let scripted = self.script.is_some();
        loop {
            let flow = tokio::select! {
                incoming = self.ws.next() => match incoming {
                    Some(Ok(message)) => self.on_message(message).await?,
                    Some(Err(error)) => bail!("lost the connection: {error}"),
                    None => bail!("the server closed the connection without a close frame"),
                },
                line = next_line(&mut lines) => match line {
                    Some(line) => self.on_line(&line).await?,
                    None => Flow::Quit, // end of input
                },
                result = &mut ctrl_c, if ctrl_c_armed => {
                    ctrl_c_armed = false;
                    match result {
                        Ok(()) if scripted => bail!("--send: interrupted"),
                        Ok(()) => Flow::Quit,
                        Err(error) => {
                            log::warn!("cannot listen for Ctrl-C: {error}");
                            Flow::Continue
                        }
                    }
                },
                () = &mut timeout, if scripted => {
                    bail!("--send: no echo for every message within {} s", deadline.as_secs())
                },
            };
            if matches!(flow, Flow::Quit) {
                close(&mut self.ws).await;
                return Ok(());
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        user,
        rooms,
        url,
        quiet_typing,
        send,
        timeout,
    } = args;
    let url = build_url(&url, &user);
    let mut ws = connect(&url).await?;
    let mut state = State::new(&user);
    let mut seen = HashSet::new();
    for room in rooms.iter().filter(|room| seen.insert(room.as_str())) {
        let frame = state.request_join(room);
        send_json(&mut ws, &frame).await?;
    }
    // The last room given is the current one, even when it was also given earlier.
    state.current = rooms.last().cloned();

    let script = (!send.is_empty()).then_some(Script {
        texts: send,
        awaiting: None,
    });
    let lines = if script.is_some() {
        None
    } else {
        Some(spawn_stdin_reader())
    };
    let mut client = Client {
        ws,
        state,
        quiet_typing,
        script,
    };
    client.run(lines, Duration::from_secs(timeout)).await
}

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let status = match run(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("roomcast-client: {error:#}");
            1
        }
    };
    // The task reading stdin is stuck in a blocking read that cannot be cancelled; exit
    // directly instead of waiting for the runtime to shut down.
    std::process::exit(status);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

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
    }

    #[test]
    fn builds_urls() {
        assert_eq!(
            build_url("ws://127.0.0.1:8080", "alice"),
            "ws://127.0.0.1:8080/ws?user_id=alice"
        );
        assert_eq!(build_url("ws://h:1/", "a"), "ws://h:1/ws?user_id=a");
        assert_eq!(build_url("http://h:1", "a"), "ws://h:1/ws?user_id=a");
        assert_eq!(build_url("https://h", "a"), "wss://h/ws?user_id=a");
    }

    #[test]
    fn validates_names() {
        assert!(valid_name("lobby") && valid_name("A-z_0.9:x") && valid_name(&"x".repeat(64)));
        assert!(
            !valid_name("")
                && !valid_name("a b")
                && !valid_name("é")
                && !valid_name(&"x".repeat(65))
        );
    }

    #[test]
    fn parses_text_and_commands() {
        use Command::*;
        assert_eq!(parse_command("hello there"), Say("hello there".into()));
        assert_eq!(
            parse_command("//not a command"),
            Say("/not a command".into())
        );
        assert_eq!(parse_command("hi\r"), Say("hi".into()));
        assert_eq!(parse_command("   "), Nothing);
        assert_eq!(parse_command("/join dev"), Join("dev".into()));
        assert_eq!(parse_command("/JOIN  dev "), Join("dev".into()));
        assert_eq!(parse_command("/leave"), Leave(None));
        assert_eq!(parse_command("/leave dev"), Leave(Some("dev".into())));
        assert_eq!(parse_command("/room lobby"), Room("lobby".into()));
        assert_eq!(parse_command("/users"), Users(None));
        assert_eq!(parse_command("/users dev"), Users(Some("dev".into())));
        assert_eq!(
            parse_command("/msg bob  psst,  quietly"),
            Msg {
                to: "bob".into(),
                text: "psst,  quietly".into()
            }
        );
        assert_eq!(parse_command("/history"), History(None));
        assert_eq!(parse_command("/history 20"), History(Some(20)));
        assert_eq!(parse_command("/quit"), Quit);
        assert_eq!(parse_command("/help"), Help);
        assert_eq!(
            parse_command("/frobnicate now"),
            Unknown("frobnicate".into())
        );
        assert_eq!(parse_command("/"), Unknown(String::new()));
    }

    #[test]
    fn rejects_bad_command_arguments() {
        for line in [
            "/join",
            "/join a b",
            "/join bad!room",
            "/room",
            "/leave a b",
            "/users a b",
            "/msg",
            "/msg bob",
            "/msg bob   ",
            "/msg b@d hi",
            "/history 0",
            "/history 101",
            "/history ten",
            "/history 1 2",
        ] {
            assert!(matches!(parse_command(line), Command::Usage(_)), "{line}");
        }
    }

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
