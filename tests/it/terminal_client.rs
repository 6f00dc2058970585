//! The terminal client (`examples/client/`), run as the real binary against a server in this
//! process: stdin piped (or a pseudo-terminal, for the prompt), stdout compared line by line.
//! Its tokens: a development token by default, `--token` and `--token-cmd` against a server
//! that checks them, refresh before the lapse, `4004` and `forbidden` shown.
//!
//! The binary is the one `cargo build --example client` leaves in `target/debug/examples/`,
//! beside this test binary's `deps/` folder. `cargo test --all-targets` builds examples only as
//! test harnesses, so `scripts/test` builds it first; a missing binary, or one older than its
//! sources, fails the test and says how to build it.

use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use tokio::process::Command;

use crate::common::*;

/// `server` in the `welcome` frame, as the client prints it.
const SERVER: &str = concat!("roomcast/", env!("CARGO_PKG_VERSION"));

/// The client binary, checked to exist and to be newer than every one of its sources.
fn client_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .join("examples")
        .join("client");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "no terminal client at {} ({e}): build it with `cargo build --example client` \
                 (scripts/test does)",
                bin.display()
            )
        });
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/client");
    for entry in std::fs::read_dir(&sources).expect("examples/client/ is readable") {
        let source = entry.expect("a directory entry").path();
        let changed = std::fs::metadata(&source)
            .and_then(|m| m.modified())
            .expect("a source's modification time");
        assert!(
            changed <= built,
            "{} is older than {}: rebuild it with `cargo build --example client`",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// A client process for user `u`, connected to `url`, with `args` after that.
fn client_command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(client_binary());
    command
        .args(["--url", url, "--user", "u"])
        .args(args)
        .env_remove("ROOMCAST_USER")
        .env_remove("ROOMCAST_URL")
        .env_remove("ROOMCAST_TOKEN")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// How a client run ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    /// Stdout's lines, with what varies from run to run replaced (see [`steady`]).
    lines: Vec<String>,
    stderr: String,
}

/// Runs the client with `input` as its whole stdin (then end of input) until it exits, which
/// it must within `TIMEOUT`.
async fn run_piped(url: &str, args: &[&str], input: &str) -> Ran {
    run_piped_command(client_command(url, args), input).await
}

/// [`run_piped`] with a command built by the caller (say, with an environment variable set).
async fn run_piped_command(mut command: Command, input: &str) -> Ran {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input.as_bytes())
        .await
        .expect("write the client's stdin");
    drop(stdin);
    finish(child).await
}

/// Waits (at most `TIMEOUT`) for a client started with piped stdout and stderr to exit.
async fn finish(child: tokio::process::Child) -> Ran {
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("the client exits by itself")
        .expect("wait for the client");
    Ran {
        code: output.status.code(),
        lines: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(steady)
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `line` with the session number (`session 7` → `session N`) and a chat line's local time
/// (`[r #1 09:15]` → `[r #1]`) taken out.
fn steady(line: &str) -> String {
    if let Some(rest) = line.strip_prefix("connected as u (session ")
        && let Some((_number, rest)) = rest.split_once(',')
    {
        return format!("connected as u (session N,{rest}");
    }
    if let Some(rest) = line.strip_prefix('[')
        && let Some((head, tail)) = rest.split_once(']')
        && let Some((head, time)) = head.rsplit_once(' ')
        && time.len() == 5
        && time.as_bytes()[2] == b':'
    {
        return format!("[{head}]{tail}");
    }
    line.to_owned()
}

fn connected() -> String {
    format!("connected as u (session N, {SERVER})")
}

#[tokio::test]
async fn piped_input_prints_the_join_and_the_echo_before_it_exits() {
    let srv = TestServer::start();
    let ran = run_piped(&srv.url(""), &["--room", "r"], "one line\n").await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[r #1] u: one line".into(),
        ],
        "{ran:?}"
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
    let (status, page) = api(srv.addr, "GET", "/api/rooms/r/history", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["text"], "one line", "{page}");
}

#[tokio::test]
async fn a_private_message_to_nobody_shows_pending_then_failed() {
    let srv = TestServer::start();
    let ran = run_piped(&srv.url(""), &["--room", "r"], "/msg nobody_here hi\n").await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[private, pending] you -> nobody_here: hi".into(),
            "[private, failed] you -> nobody_here: hi".into(),
            "! error user_offline: user 'nobody_here' is not online".into(),
        ],
        "{ran:?}"
    );
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: not sent: private message to nobody_here (user_offline)\n"
    );
}

#[tokio::test]
async fn a_private_message_to_someone_online_shows_pending_then_sent() {
    let srv = TestServer::start();
    let mut bob = srv.client("bob").await;
    let ran = run_piped(&srv.url(""), &["--room", "r"], "/msg bob psst\n").await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[private, pending] you -> bob: psst".into(),
            "[private, sent] you -> bob: psst".into(),
        ],
        "{ran:?}"
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
    let private = bob.expect("private").await;
    assert_eq!(
        (&private["from"], &private["message"]),
        (&json!("u"), &json!("psst"))
    );
}

/// A token for [`silent_server`], so the client asks it for none.
const SILENT_TOKEN: &str = "never.checked.here";

fn welcome() -> serde_json::Value {
    json!({"type": "welcome", "user_id": "u", "session_id": 1, "server": "silent"})
}

fn joined_r() -> serde_json::Value {
    json!({"type": "joined", "room_id": "r", "user_id": "u", "users": ["u"], "history": 0})
}

/// A peer that accepts one WebSocket, sends `frames`, then never answers anything. It serves
/// no `POST /api/dev-token`: give its clients a token ([`SILENT_TOKEN`]), which it never checks.
/// The receiver says what close code the client sent (`None`: it went without a close frame).
async fn silent_server(
    frames: Vec<serde_json::Value>,
) -> (String, tokio::sync::oneshot::Receiver<Option<u16>>) {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        use futures_util::{SinkExt as _, StreamExt as _};
        for frame in frames {
            ws.send(frame.to_string().into()).await.expect("send");
        }
        // Read (and so answer the close) without ever answering a request.
        let mut code = None;
        while let Some(Ok(message)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
                code = frame.map(|f| u16::from(f.code));
            }
        }
        let _ = closed_tx.send(code);
    });
    (format!("ws://{addr}"), closed_rx)
}

#[tokio::test]
async fn piped_input_names_what_got_no_answer_and_exits_1() {
    // Only a peer that never answers can show this without racing a real server.
    let (url, _) = silent_server(vec![welcome(), joined_r()]).await;
    let args = ["--room", "r", "--timeout", "1", "--token", SILENT_TOKEN];
    let ran = run_piped(&url, &args, "hello\n").await;
    assert_eq!(
        ran.lines,
        [
            "connected as u (session N, silent)",
            "joined r (1 user, 0 history messages)"
        ],
        "{ran:?}"
    );
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: no answer from the server within 1 s for: chat \"hello\" in r\n"
    );
}

/// `--send` that gets no echo in time exits 1 naming it, and closes its socket properly
/// (1000) rather than dropping the connection.
#[tokio::test]
async fn send_that_times_out_closes_its_socket_before_exiting() {
    let (url, closed) = silent_server(vec![welcome(), joined_r()]).await;
    let args = [
        "--room",
        "r",
        "--timeout",
        "1",
        "--token",
        SILENT_TOKEN,
        "--send",
        "hello",
    ];
    let ran = run_piped(&url, &args, "").await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: --send: no echo for every message within 1 s\n"
    );
    let code = tokio::time::timeout(TIMEOUT, closed)
        .await
        .expect("the silent server saw the socket end")
        .expect("the silent server reported");
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn piped_input_gives_up_on_a_join_that_gets_no_answer() {
    let (url, _) = silent_server(vec![welcome()]).await;
    let args = ["--room", "r", "--timeout", "1", "--token", SILENT_TOKEN];
    let ran = run_piped(&url, &args, "hello\n").await;
    assert_eq!(ran.lines, ["connected as u (session N, silent)"], "{ran:?}");
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: no answer from the server within 1 s for: join r\n"
    );
}

/// The master side of a pseudo-terminal, read on a thread of its own.
struct Pty {
    master: std::fs::File,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    /// What was read and not yet matched by [`Pty::until`].
    seen: String,
}

impl Pty {
    /// A new pseudo-terminal: its master, and its slave for the child.
    fn open() -> (Pty, OwnedFd) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the integers it is given; the null
        // name, termios and window size pointers mean "none".
        let ok = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(ok, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().expect("clone the master");
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            // Ends with an error (EIO) once every slave descriptor is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let pty = Pty {
            master,
            output,
            seen: String::new(),
        };
        (pty, slave)
    }

    /// Waits (at most `TIMEOUT`) until the terminal shows `text`; forgets what came up to it.
    fn until(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = self.seen.find(text) {
                self.seen.drain(..at + text.len());
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it shows {:?}",
                    self.seen
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.master, "{line}").expect("type into the terminal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_prompt_naming_the_current_room() {
    let srv = TestServer::start();
    let (mut pty, slave) = Pty::open();
    let mut child = client_command(&srv.url(""), &["--room", "r"])
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("start the client");
    tokio::task::block_in_place(|| {
        pty.until("joined r (1 user, 0 history messages)");
        pty.until("[r]> ");
        pty.type_line("/join dev");
        pty.until("joined dev (1 user, 0 history messages)");
        pty.until("[dev]> ");
        pty.type_line("/quit");
    });
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the client exits after /quit")
        .expect("wait for the client");
    assert!(status.success(), "{status}");
}

// ---- tokens ----

const SECRET: &str = "the terminal client tests' HS256 secret, 32+ bytes";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token for `sub` issued now, lapsing `secs` from now, with `extra` claims (grants).
fn token(sub: &str, secs: u64, extra: serde_json::Value) -> String {
    let now = unix_now();
    let mut claims = json!({"sub": sub, "iat": now, "exp": now + secs});
    if let serde_json::Value::Object(extra) = extra {
        claims.as_object_mut().unwrap().extend(extra);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &key).expect("signed")
}

/// A server that checks tokens signed with [`SECRET`], closing sockets `leeway` seconds after
/// their token's `exp`.
fn jwt_server(leeway: u64) -> TestServer {
    TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_leeway_secs = leeway;
    })
}

const EXPIRED_CLOSES: &str = r#"roomcast_sockets_closed_total{code="4004",reason="token_expired"}"#;

/// What a client sent to [`recording_server`]: the `POST /api/dev-token` request line and
/// body, and the socket's request target.
#[derive(Debug, PartialEq)]
struct Recorded {
    mint: (String, serde_json::Value),
    socket: String,
}

/// A peer that answers `POST /api/dev-token` with `status` (and, for 200, a token `tkn.x.y`),
/// then accepts one WebSocket, welcomes it and confirms a join of `r`; reports what it got.
async fn recording_server(status: u16) -> (String, tokio::sync::oneshot::Receiver<Recorded>) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept the POST");
        let mut http = tokio::io::BufReader::new(tcp);
        let mut request_line = String::new();
        http.read_line(&mut request_line).await.expect("a request");
        let mut length = 0;
        loop {
            let mut header = String::new();
            http.read_line(&mut header).await.expect("a header");
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        http.read_exact(&mut body).await.expect("the body");
        let answer = if status == 200 {
            json!({"token": "tkn.x.y", "user_id": "u", "expires_at": unix_now() + 3600})
        } else {
            json!({"error": {"code": "not_found", "message": "no such route"}})
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{answer}",
            answer.len()
        );
        http.get_mut()
            .write_all(response.as_bytes())
            .await
            .expect("answer");
        drop(http);

        let (tcp, _) = listener.accept().await.expect("accept the socket");
        let mut target = String::new();
        // The callback's type, error included, is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                        response| {
            target = request.uri().to_string();
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .expect("upgrade");
        let _ = tx.send(Recorded {
            mint: (
                request_line.trim().to_owned(),
                serde_json::from_slice(&body).expect("a JSON body"),
            ),
            socket: target,
        });
        for frame in [welcome(), joined_r()] {
            ws.send(frame.to_string().into()).await.expect("send");
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    (format!("ws://{addr}"), rx)
}

#[tokio::test]
async fn without_a_token_the_client_gets_a_development_token_and_sends_it() {
    let (url, recorded) = recording_server(200).await;
    let ran = run_piped(&url, &["--room", "r"], "").await;
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
    assert_eq!(
        recorded.await.expect("a client came"),
        Recorded {
            mint: (
                "POST /api/dev-token HTTP/1.1".into(),
                json!({"user_id": "u"})
            ),
            socket: "/ws?user_id=u&token=tkn.x.y".into(),
        }
    );

    // A real development server takes it: the client chats as before.
    let srv = TestServer::start();
    let ran = run_piped(&srv.url(""), &["--room", "r"], "with a dev token\n").await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[r #1] u: with a dev token".into(),
        ],
        "{ran:?}"
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
}

#[tokio::test]
async fn a_server_without_development_tokens_gets_the_user_named_in_the_url() {
    let (url, recorded) = recording_server(404).await;
    let ran = run_piped(&url, &["--room", "r"], "").await;
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
    assert_eq!(
        recorded.await.expect("a client came").socket,
        "/ws?user_id=u"
    );
}

#[tokio::test]
async fn with_tokens_the_client_sends_the_one_it_is_given() {
    let srv = jwt_server(30);
    let t = token("u", 600, json!({}));
    let ran = run_piped(&srv.url(""), &["--room", "r", "--token", &t], "hello\n").await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[r #1] u: hello".into(),
        ],
        "{ran:?}"
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");

    // The same from the environment.
    let mut command = client_command(&srv.url(""), &["--room", "r", "--send", "from env"]);
    command.env("ROOMCAST_TOKEN", &t);
    let ran = run_piped_command(command, "").await;
    assert_eq!(ran.lines.last().unwrap(), "[r #2] u: from env", "{ran:?}");
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");

    // Without one, the server refuses the socket, and the client says what to give it
    // (a token for another user is refused too, and never printed).
    let ran = run_piped(&srv.url(""), &["--room", "r"], "").await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("HTTP 401 Unauthorized: token_missing")
            && ran
                .stderr
                .ends_with("(give --token TOKEN or --token-cmd CMD)\n"),
        "{ran:?}"
    );
    let bobs = token("bob", 600, json!({}));
    let ran = run_piped(&srv.url(""), &["--room", "r", "--token", &bobs], "").await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains("?user_id=u&token=…: HTTP 403 Forbidden: token_user_mismatch"),
        "{ran:?}"
    );
    assert!(!ran.stderr.contains(&bobs), "{ran:?}");
}

#[tokio::test]
async fn a_chat_the_token_does_not_allow_fails_as_forbidden() {
    let srv = jwt_server(30);
    let t = token("u", 600, json!({"read_only": ["news"], "rooms": ["news"]}));
    let ran = run_piped(
        &srv.url(""),
        &["--room", "staff", "--room", "news", "--token", &t],
        "hi\n",
    )
    .await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "! error forbidden: your token does not grant room 'staff'".into(),
            "joined news (1 user, 0 history messages)".into(),
            "[news, failed] you: hi".into(),
            "! error forbidden: room 'news' is read-only for you".into(),
        ],
        "{ran:?}"
    );
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: not sent: join staff (forbidden); chat \"hi\" in news (forbidden)\n"
    );
}

/// The client has no TLS: a `wss://` or `https://` URL is refused at start (exit 2), not
/// at connect time with an obscure error.
#[tokio::test]
async fn a_tls_url_is_refused_at_start() {
    for url in ["wss://127.0.0.1:1", "https://127.0.0.1:1"] {
        let ran = run_piped(url, &[], "").await;
        assert_eq!(ran.code, Some(2), "{ran:?}");
        assert!(
            ran.stderr.contains("TLS is not supported by this client"),
            "{ran:?}"
        );
    }
}

/// With piped input, a refused join fails the run too: exit 1, naming it.
#[tokio::test]
async fn piped_input_exits_1_when_a_join_is_refused() {
    let srv = TestServer::start();
    let ran = run_piped(&srv.url(""), &["--room", "r"], "/join private:x\n").await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr, "roomcast-client: not sent: join private:x (forbidden)\n",
        "{ran:?}"
    );
}

/// With piped input, a line the client refuses itself (here too long to send) fails the run.
#[tokio::test]
async fn piped_input_exits_1_when_a_line_cannot_be_sent() {
    let srv = TestServer::with(|c| c.max_text_chars = 5);
    let ran = run_piped(&srv.url(""), &["--room", "r"], "toolong\nok\n").await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: not sent: line \"toolong\" (message too long: 7 characters, the \
         limit is 5)\n",
        "{ran:?}"
    );
    assert!(ran.lines.contains(&"[r #1] u: ok".to_owned()), "{ran:?}");
}

#[tokio::test]
async fn a_token_cmd_refreshes_the_token_before_it_lapses() {
    let srv = jwt_server(0);
    let dir = temp_dir("token-cmd");
    // The first run prints a token of 5 s; every later one a token of 10 min.
    std::fs::write(dir.join("token0"), token("u", 5, json!({}))).unwrap();
    std::fs::write(dir.join("token1"), token("u", 600, json!({}))).unwrap();
    let cmd = format!(
        "cd '{}' && n=$(cat runs 2>/dev/null || echo 0) && echo $((n + 1)) > runs && \
         cat token$((n < 1 ? n : 1))",
        dir.display()
    );
    let first_exp = unix_now() + 5;
    let mut child = client_command(&srv.url(""), &["--room", "r", "--token-cmd", &cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    use tokio::io::AsyncWriteExt as _;
    stdin.write_all(b"before\n").await.expect("type");
    // Past the first token's exp (no leeway): the socket lives on with the fresh one.
    let past = first_exp + 2;
    tokio::time::sleep(std::time::Duration::from_secs(
        past.saturating_sub(unix_now()),
    ))
    .await;
    stdin.write_all(b"after\n").await.expect("type");
    drop(stdin);
    let ran = finish(child).await;
    assert_eq!(
        ran.lines,
        [
            connected(),
            "joined r (1 user, 0 history messages)".into(),
            "[r #1] u: before".into(),
            "[r #2] u: after".into(),
        ],
        "{ran:?}"
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(0), ""), "{ran:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap().trim(),
        "2",
        "run at start and once to refresh"
    );
    assert_eq!(srv.metric(EXPIRED_CLOSES).await, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_token_that_lapses_unrefreshed_ends_the_client_with_token_expired() {
    let srv = jwt_server(0);
    let t = token("u", 3, json!({}));
    let mut child = client_command(&srv.url(""), &["--room", "r", "--token", &t])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    // Stdin stays open: only the lapse ends it.
    let stdin = child.stdin.take().expect("piped stdin");
    let ran = finish(child).await;
    drop(stdin);
    assert_eq!(ran.lines.len(), 3, "{ran:?}");
    assert!(
        ran.lines[2].starts_with("! your token expires in ")
            && ran.lines[2]
                .ends_with(" s and cannot be renewed: give --token-cmd CMD to refresh it"),
        "{ran:?}"
    );
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        "roomcast-client: the server closed the connection: 4004 (token expired)\n"
    );
    assert_eq!(srv.metric(EXPIRED_CLOSES).await, 1.0);
}
