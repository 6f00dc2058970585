//! Lines typed by the user: parsed into a [`Command`] here, with no state and no I/O, so every
//! spelling and every usage error is unit-tested. What a command does is `state.rs`'s business.

use crate::args::{name_error, valid_name};

/// The command list, shown by `/help` and at the end of `--help`.
pub const HELP: &str = "\
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

/// One line of user input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
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
pub fn parse_command(line: &str) -> Command {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
