//! The command line: flags (clap), the rule for room and user names, and the URLs built from
//! `--url`: the socket's (with `--user` and the token) and the HTTP base for development
//! tokens.

use clap::Parser;

use crate::command::HELP;
use crate::render::clean;

/// Terminal client for the roomcast chat server.
#[derive(Parser, Debug)]
#[command(name = "roomcast-client", version, after_help = HELP)]
pub struct Args {
    /// Your user name (1-64 characters of A-Z a-z 0-9 _ - . :).
    #[arg(short, long, env = "ROOMCAST_USER", value_parser = parse_user_arg)]
    pub user: String,

    /// A room to join; repeatable. The last one becomes the current room.
    #[arg(short, long = "room", value_name = "ROOM", default_value = "lobby",
          value_parser = parse_room_arg)]
    pub rooms: Vec<String>,

    /// The server's base URL; the client connects to URL/ws?user_id=USER&token=TOKEN.
    /// Plain `ws://` (or `http://`) only: the client has no TLS.
    #[arg(long, env = "ROOMCAST_URL", default_value = "ws://127.0.0.1:8080",
          value_parser = parse_url_arg)]
    pub url: String,

    /// A token (JWT) for --user, from your application's backend, sent as `?token=`. Without
    /// it (and without --token-cmd) the client gets a development token from the server.
    #[arg(long, env = "ROOMCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A shell command (run with `sh -c`) that prints a fresh token for --user on stdout: run
    /// at start (unless --token is given) and before each token lapses, to refresh it.
    #[arg(long, value_name = "CMD",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub token_cmd: Option<String>,

    /// Do not print "… is typing" notifications.
    #[arg(long)]
    pub quiet_typing: bool,

    /// Send TEXT to the current room after joining, wait for its echo and exit (repeatable).
    /// Stdin is not read in this mode.
    #[arg(long = "send", value_name = "TEXT",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub send: Vec<String>,

    /// Give up (exit 1) when answers have not all arrived after SECS seconds: with --send,
    /// the echoes of its texts (default 10); with piped input, at its end, the answers to
    /// everything sent (default 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// Whether `name` is a valid room or user name: 1 to 64 characters of `A-Z a-z 0-9 _ - . :`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

pub fn name_error(kind: &str, name: &str) -> String {
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

/// `--url`: refused at once when it asks for TLS, which the client does not speak (it would
/// otherwise fail at connect time with tungstenite's "TLS support not compiled in").
fn parse_url_arg(s: &str) -> Result<String, String> {
    let scheme = s
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("wss" | "https") => Err(format!(
            "{}: TLS is not supported by this client; use ws:// (or http://) to a plain port",
            clean(s)
        )),
        _ => Ok(s.to_owned()),
    }
}

fn parse_room_arg(s: &str) -> Result<String, String> {
    if valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err(name_error("room", s))
    }
}

/// `base` with `http(s)://` spelled `ws(s)://`, and no trailing `/`.
fn ws_base(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_owned()
    }
}

/// The HTTP base of the server at `base` (`ws(s)://` spelled `http(s)://`), for
/// `POST /api/dev-token`.
pub fn http_base(base: &str) -> String {
    let base = ws_base(base);
    if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        base
    }
}

/// The multi-room socket URL for `user` on the server at `base`, with `token` when there is
/// one (the server then checks that it is `user`'s).
pub fn build_url(base: &str, user: &str, token: Option<&str>) -> String {
    // `user` is a valid name, so it needs no percent-encoding.
    let mut url = format!("{}/ws?user_id={user}", ws_base(base));
    if let Some(token) = token {
        url.push_str("&token=");
        url.push_str(&percent_encode(token));
    }
    url
}

/// `s` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) percent-encoded. A JWT
/// needs none; anything else pasted is sent as it was given.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` with the value of its `token=` parameter hidden, for messages: a token is a
/// password for as long as it lives.
pub fn redact(url: &str) -> String {
    let Some(at) = url.find("token=") else {
        return url.to_owned();
    };
    let start = at + "token=".len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    format!("{}…{}", &url[..start], &url[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls() {
        assert_eq!(
            build_url("ws://127.0.0.1:8080", "alice", None),
            "ws://127.0.0.1:8080/ws?user_id=alice"
        );
        assert_eq!(build_url("ws://h:1/", "a", None), "ws://h:1/ws?user_id=a");
        assert_eq!(build_url("http://h:1", "a", None), "ws://h:1/ws?user_id=a");
        assert_eq!(build_url("https://h", "a", None), "wss://h/ws?user_id=a");
        assert_eq!(
            build_url("ws://h:1", "a", Some("x.y_-z")),
            "ws://h:1/ws?user_id=a&token=x.y_-z"
        );
        assert_eq!(
            build_url("ws://h:1", "a", Some("a b&c")),
            "ws://h:1/ws?user_id=a&token=a%20b%26c"
        );
        assert_eq!(http_base("ws://h:1/"), "http://h:1");
        assert_eq!(http_base("wss://h/chat"), "https://h/chat");
        assert_eq!(http_base("http://h:1"), "http://h:1");
    }

    #[test]
    fn hides_tokens_in_urls() {
        assert_eq!(
            redact("ws://h/ws?user_id=a&token=secret"),
            "ws://h/ws?user_id=a&token=…"
        );
        assert_eq!(redact("ws://h/ws?token=s&x=1"), "ws://h/ws?token=…&x=1");
        assert_eq!(redact("ws://h/ws?user_id=a"), "ws://h/ws?user_id=a");
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
}
