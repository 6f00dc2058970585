//! A terminal client for roomcast.
//!
//! It opens one multi-room socket (`{url}/ws?user_id=USER&token=TOKEN`, see `docs/PROTOCOL.md`),
//! joins the rooms given with `--room`, then sends every line typed on stdin as a chat message to the
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
//! [private, pending] you -> bob: see you
//! [private, sent] you -> bob: see you
//! [private, pending] you -> carol: hi
//! [private, failed] you -> carol: hi
//! ! error user_offline: user 'carol' is not online
//! ! error not_in_room: you are not in room 'x'
//! ```
//!
//! Times are shown in local time. Frames of unknown types, and frames that are not JSON at all,
//! are printed as they came.
//!
//! A message shows as sent only once the server has it. A chat appears when the server echoes
//! it (it is stored then); one the server refuses (a room the token opens read-only:
//! `forbidden`) appears as `[ROOM, failed] you: TEXT` before the error. A private message shows as pending, then sent or failed (see
//! `pending.rs` for how the client learns that a private message was delivered).
//!
//! When stdin and stdout are terminals, the last line is a prompt naming the current room,
//! `[lobby]> `. Lines typed are acted on once the rooms of `--room` are joined and their
//! history shown.
//!
//! # Piped input
//!
//! When stdin is not a terminal (`printf 'hello\n' | client --user u`), there is no prompt, and
//! at the end of input (or at `/quit`) the client waits for the answers to everything it sent
//! (joins, chats' `ack`s and echoes, private messages, `/users`, `/history`, `/leave`),
//! prints them, then closes and exits: 0 when everything was confirmed; 1 when something
//! failed (stderr names it: `not sent: private message to carol (user_offline)`), or when
//! answers were still missing after `--timeout SECS` (default 5; stderr names what was
//! waiting). Failed means: a chat or private message refused or not confirmed, a join
//! refused (`join staff (forbidden)`), or a line the client refused itself (too long, no room
//! to send it to, a bad command). An error that answers `/users`, `/history` or `/leave`
//! is shown and counts as its answer. Lines are sent as they are read, without waiting for
//! the answers to earlier ones: two `/history` lines in a row ask for the same page.
//!
//! # Tokens
//!
//! The socket carries a token (a JWT whose `sub` is `--user`) in `?token=`:
//!
//! - `--token TOKEN` (env `ROOMCAST_TOKEN`): one your application's backend gave you. It
//!   cannot be renewed by itself: at 80% of its lifetime the client says so, and the server
//!   closes the socket when it lapses (`4004 (token expired)`, exit 1).
//! - `--token-cmd CMD`: a shell command (`sh -c CMD`) that prints a fresh token on its first
//!   line of stdout, say `curl -s https://app.example/chat-token` or a script that asks your
//!   backend. Run at start (unless `--token` is given too) and again at 80% of each token's
//!   lifetime; the fresh token goes to the server as `refresh`. If it fails, the client says
//!   so (`! cannot get a fresh token: ...`) and tries again soon, while the token lasts.
//! - Neither, against a development server (no JWT option): the client gets a token for
//!   `--user` from `POST /api/dev-token` and a fresh one the same way before it lapses. A
//!   server without that route (older, or one that checks real tokens) or one that will not
//!   make one for this client (401, 403: `--api-key`, another machine) gets `?user_id=USER`
//!   alone, as development mode allows; a server that checks tokens then refuses the socket,
//!   and the client says to give `--token` or `--token-cmd`.
//!
//! Tokens are never printed: URLs in messages show `token=…`.
//!
//! # Usage
//!
//! ```text
//! cargo run --example client -- --user alice --room lobby [--room dev] [--url ws://HOST:PORT]
//!                               [--token TOKEN | --token-cmd CMD] [--quiet-typing]
//!                               [--send TEXT]... [--timeout SECS]
//! ```
//!
//! - `--user NAME` (env `ROOMCAST_USER`): your user name (with a token: its `sub`).
//! - `--room ROOM` (repeatable, default `lobby`): rooms to join; the last one is the current room.
//! - `--url URL` (env `ROOMCAST_URL`, default `ws://127.0.0.1:8080`): the server's base URL
//!   (`http://` is accepted as `ws://`). The client has no TLS: `wss://` and `https://` are
//!   refused at start (exit 2), as docs/DEPLOY.md says.
//! - `--token TOKEN` (env `ROOMCAST_TOKEN`), `--token-cmd CMD`: see [Tokens](#tokens).
//! - `--quiet-typing`: do not print typing notifications.
//! - `--send TEXT` (repeatable): script mode. Send each TEXT to the current room once all rooms
//!   are joined, wait until the server has echoed every one of them, then close and exit 0.
//!   Stdin is not read. Any `error` frame, a close, or `--timeout SECS` (default 10) passing
//!   first makes the client exit with status 1.
//! - `--timeout SECS`: with `--send`, the time the whole script may take (default 10); with
//!   piped input, the wait for answers at its end (default 5).
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
//! /quit           close the connection and exit (end of input and Ctrl-C do the same; with
//!                 piped input, /quit and its end first wait for the answers)
//! ```
//!
//! Unknown commands are answered locally with a hint and send nothing.
//!
//! # Exit status
//!
//! 0 after `/quit`, end of input, Ctrl-C, or a completed `--send` script. 1 when the connection
//! cannot be opened or is lost, and when the server closes it; the close code and its meaning
//! are printed (for example `1001 (server is shutting down)`, or `4004 (token expired)` when
//! the token lapsed unrefreshed). 1 too when piped input ends with a message failed or
//! unanswered (see above), and when `--token-cmd` fails at start. 2 for bad command-line
//! arguments.
//!
//! # Layout
//!
//! - `main.rs`: this page, logging, the exit status.
//! - `args.rs`: the flags, the name rule, the socket URL.
//! - `token.rs`: where the token comes from (`--token`, `--token-cmd`, a development token)
//!   and when to refresh it.
//! - `command.rs`: typed lines parsed into a `Command` (pure).
//! - `state.rs`: `State`, the rooms and the current room, updated by the server's frames;
//!   `state/step.rs`: what each command does, a `Step` (both pure).
//! - `pending.rs`: `Pending`, what was sent and not answered yet: a message's status, and
//!   what piped input waits for at its end (pure).
//! - `render.rs`: server frames and close codes as printed lines (pure).
//! - `connection.rs`: opening, writing to and closing the WebSocket.
//! - `terminal.rs`: reading stdin; `Screen`, printing lines under the prompt.
//! - `session.rs`: the loop over socket, stdin, Ctrl-C and token refreshes; the `--send`
//!   script; the wait at the end of piped input.

mod args;
mod command;
mod connection;
mod pending;
mod render;
mod session;
mod state;
mod terminal;
mod token;

use clap::Parser;

use crate::args::Args;

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let status = match session::run(args).await {
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
