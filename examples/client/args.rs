//! The command line: flags (clap), the rule for room and user names, and the socket URL built
//! from `--url` and `--user`.

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

    /// The server's base URL; the client connects to URL/ws?user_id=USER.
    #[arg(long, env = "ROOMCAST_URL", default_value = "ws://127.0.0.1:8080")]
    pub url: String,

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

fn parse_room_arg(s: &str) -> Result<String, String> {
    if valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err(name_error("room", s))
    }
}

/// The multi-room socket URL for `user` on the server at `base`.
pub fn build_url(base: &str, user: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
