//! The test harness: a real server on 127.0.0.1 port 0 (in-process, or the real binary as a
//! child), real WebSocket clients, and a timeout on every receive.
//!
//! Tests talk to the server only through these helpers, so the internals can change without
//! rewriting tests.

#![allow(dead_code)] // each test module uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use roomcast::Config;
use roomcast::procfs::{self, Pid};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single receive may wait. Generous: machines are shared and noisy, and a
/// timeout here means "it never came", not "it was slow".
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A server running in this process, on its own thread and actix system.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::with(|_| {})
    }

    /// Starts a server with the test defaults changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests();
        config.shutdown_timeout = 1;
        tweak(&mut config);
        Self::with_config(config)
    }

    /// Starts a server with exactly `config`.
    pub fn with_config(config: Config) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let running = roomcast::start(config).await.expect("server starts");
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                ready_tx
                    .send((running.addr, stop_tx))
                    .expect("test is waiting");
                let _ = stop_rx.await;
                running.shutdown().await;
            })
        });
        let (addr, stop) = ready_rx
            .recv_timeout(TIMEOUT)
            .expect("server started in time");
        TestServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts the server down as SIGTERM would (sockets closed with 1001, the store committed
    /// and closed) and waits until it has.
    pub async fn stop(self) {
        tokio::task::spawn_blocking(move || self.stop_blocking())
            .await
            .expect("join");
    }

    /// [`TestServer::stop`], for code that is not async.
    pub fn stop_blocking(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread ended cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects `/ws/{room}/{user}` and reads `welcome`, `joined` and the history.
    pub async fn room_client(&self, room: &str, user: &str) -> (Client, Joined) {
        let mut c = Client::connect(&self.url(&format!("/ws/{room}/{user}"))).await;
        c.expect("welcome").await;
        let joined = c.read_joined().await;
        (c, joined)
    }

    /// Connects `/ws?user_id={user}` and reads `welcome`.
    pub async fn client(&self, user: &str) -> Client {
        let mut c = Client::connect(&self.url(&format!("/ws?user_id={user}"))).await;
        let welcome = c.expect("welcome").await;
        assert_eq!(welcome["user_id"], user);
        c
    }

    /// `GET path` over plain HTTP; returns the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        http_get(self.addr, path).await
    }

    /// The counts `/health` reports.
    pub async fn health(&self) -> Value {
        let (status, body) = self.get_json("/health").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls `/health` until `field` equals `want` (state settles asynchronously after a
    /// socket closes); fails after `TIMEOUT`.
    pub async fn wait_health(&self, field: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let h = self.health().await;
            if h[field] == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/health {field} stayed {} (want {want})",
                h[field]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What `joined` said, and the history frames that followed it.
#[derive(Debug)]
pub struct Joined {
    pub frame: Value,
    pub history: Vec<Value>,
}

impl Joined {
    pub fn history_seqs(&self) -> Vec<u64> {
        self.history
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client. Every receive has a timeout.
pub struct Client {
    ws: Ws,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    /// Tries to connect and returns the HTTP refusal (status, JSON body) expected instead.
    pub async fn refused(url: &str) -> (u16, Value) {
        match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
        {
            Ok(_) => panic!("{url} was upgraded, expected a refusal"),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let json = serde_json::from_slice(body).unwrap_or_else(|e| {
                    panic!(
                        "refusal body is not JSON ({e}): {}",
                        String::from_utf8_lossy(body)
                    )
                });
                (resp.status().as_u16(), json)
            }
            Err(e) => panic!("{url}: unexpected error {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.send_message(Message::text(text)).await;
    }

    pub async fn send_message(&mut self, msg: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// Splits into a sending half and a receiving half, for tests that must do both at once
    /// (say, keep reading acks while a burst is being sent).
    pub fn split(self) -> (ClientSink, ClientStream) {
        let (sink, stream) = self.ws.split();
        (ClientSink(sink), ClientStream(stream))
    }

    pub async fn chat(&mut self, room: &str, text: &str) {
        self.send(json!({"type": "chat", "room_id": room, "text": text}))
            .await;
    }

    /// The next text frame, as JSON. Control frames are skipped (tungstenite answers pings).
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next text frame as it came, not parsed.
    pub async fn recv_text(&mut self) -> String {
        // One deadline for the call: the server's pings must not keep extending it.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no frame arrived in time")
                .expect("the connection ended")
                .expect("read failed");
            match msg {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Close(c) => panic!("closed while waiting for a frame: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a `{ty}` frame, got {v}");
        v
    }

    /// The next frame must be an `error` with this code; returns it.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// Expects an `error` with `code` about one chat: it names the chat's room and its
    /// `client_msg_id`.
    pub async fn expect_chat_error(
        &mut self,
        code: &str,
        room: &str,
        client_msg_id: &str,
    ) -> Value {
        let e = self.expect_error(code).await;
        assert_eq!(
            (&e["room_id"], &e["client_msg_id"]),
            (&json!(room), &json!(client_msg_id)),
            "{e}"
        );
        e
    }

    /// Reads `joined` and the history frames it announces.
    pub async fn read_joined(&mut self) -> Joined {
        let frame = self.expect("joined").await;
        let n = frame["history"].as_u64().expect("joined.history") as usize;
        let mut history = Vec::with_capacity(n);
        for _ in 0..n {
            history.push(self.expect("chat").await);
        }
        Joined { frame, history }
    }

    pub async fn join(&mut self, room: &str) -> Joined {
        self.send(json!({"type": "join", "room_id": room})).await;
        self.read_joined().await
    }

    /// A barrier through `ChatServer`: asks for `room`'s users and returns the answer, which
    /// must be the very next frame. Everything `ChatServer` sent this session before handling
    /// the request has then been read, so "nothing else arrived" can be asserted without
    /// sleeping.
    pub async fn sync(&mut self, room: &str) -> Vec<String> {
        self.send(json!({"type": "get_users", "room_id": room}))
            .await;
        let v = self.expect("active_users").await;
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect()
    }

    /// A barrier through the session alone: `ping` must be answered by the next frame.
    pub async fn ping(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Reads until the server closes; returns the close frame (None: the TCP connection ended
    /// without one) and the text frames read before it.
    pub async fn until_closed(&mut self) -> (Option<CloseFrame>, Vec<Value>) {
        let mut texts = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the server did not close in time")
            {
                None | Some(Err(_)) => return (None, texts),
                Some(Ok(Message::Close(c))) => return (c, texts),
                Some(Ok(Message::Text(t))) => {
                    texts.push(serde_json::from_str(t.as_str()).expect("server frames are JSON"))
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for a close frame and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        let (frame, _) = self.until_closed().await;
        u16::from(frame.expect("a close frame").code)
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close arrives, so the server has seen it.
        let _ = tokio::time::timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Drops the TCP connection without a close frame, as a crashed client would.
    pub fn drop_abruptly(self) {
        drop(self.ws);
    }
}

/// `GET path`; returns the status and the JSON body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get_raw(addr, path).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// `GET path`; returns the status and the body as text.
pub async fn http_get_raw(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// `POST path` with extra headers and an empty body; returns the status and the JSON body.
pub async fn http_post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) = http_request(addr, "POST", path, headers, "").await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body as text.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_exchange(addr, method, path, headers, body).await;
    (status, body)
}

/// An HTTP client for one request (or one event stream), made for each: a client's pool
/// would outlive the test's tokio runtime, and a kept-alive connection would count among the
/// server's sockets. No proxy, whatever the caller's environment says; a bounded connect.
/// Reads are bounded by the callers, with `TIMEOUT` around each.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// `method path` with `headers` (and `Connection: close`, so the server closes its end when
/// it has answered); `body` is sent as it is, with its length.
fn http_builder(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = http_client()
        .request(method, format!("http://{addr}{path}"))
        .header(reqwest::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// The status line and headers of `response`, lowercased, one per line, as they would read
/// on the wire (`http/1.1 200 ok`, `content-type: text/html`).
fn head_of(response: &reqwest::Response) -> String {
    let mut head = format!("{:?} {}", response.version(), response.status());
    for (name, value) in response.headers() {
        head.push_str(&format!(
            "\r\n{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    head.to_ascii_lowercase()
}

/// One HTTP/1.1 request on a fresh connection; returns the status, the response head (status
/// line and headers, lowercased) and the body as text. The whole exchange has a timeout.
async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let request = http_builder(addr, method, path, headers).body(body.to_owned());
    let exchange = async {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let head = head_of(&response);
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let body = String::from_utf8(body.to_vec())
            .unwrap_or_else(|e| panic!("{method} {path}: the body is not UTF-8: {e}"));
        (status, head, body)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {TIMEOUT:?}"))
}

/// The real binary as a child process, for what needs a process: signals, RSS.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Runs the real binary on 127.0.0.1 port 0 with `args`, on the memory store unless
    /// `args` name one.
    pub fn spawn(args: &[&str]) -> ChildServer {
        let store: &[&str] = if args.contains(&"--store") {
            &[]
        } else {
            &["--store", "memory"]
        };
        let mut child = roomcast_command(&[store, args].concat());
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("the server printed its address")
            .parse()
            .expect("a socket address");
        ChildServer { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_bytes(Pid::Of(self.child.id())).expect("the server's RSS") / 1024
    }

    /// Open sockets of the server process (listener included).
    pub fn socket_count(&self) -> usize {
        procfs::socket_inodes(Pid::Of(self.child.id()))
            .expect("the server's descriptors")
            .len()
    }

    /// Waits until the server holds `want` sockets; fails after `TIMEOUT`.
    pub async fn wait_sockets(&self, want: usize) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.socket_count() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server holds {} sockets, want {want}",
                self.socket_count()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Sets the server's file-size limit (`RLIMIT_FSIZE`, as `ulimit -f` would), or lifts it
    /// with `None`: a write that would grow a file past it fails, as on a full disk.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        let new = libc::rlimit {
            rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a plain system call on our own child, with a valid `rlimit`.
        let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// The value of `series` in the server's `/metrics` now (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (status, body) = http_get_raw(self.addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        metric_value(&body, series).unwrap_or(0.0)
    }

    /// Sends signal `sig` ("TERM", "INT", "KILL", "STOP", "CONT") at once: with a system call, not by
    /// running `kill`, whose start-up would give the server milliseconds more to work.
    pub fn signal(&self, sig: &str) {
        let signo = match sig {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "KILL" => libc::SIGKILL,
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            other => panic!("no signal {other} here"),
        };
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: a plain system call. `pid` is our child, not yet waited for, so it cannot
        // name another process.
        let sent = unsafe { libc::kill(pid, signo) };
        assert_eq!(sent, 0, "kill -{sig}: {}", std::io::Error::last_os_error());
    }
}

/// Starts the real binary on 127.0.0.1 port 0 with `args`, stderr piped.
fn roomcast_command(args: &[&str]) -> Child {
    roomcast_command_builder(args)
        .spawn()
        .expect("spawn roomcast")
}

/// The command [`roomcast_command`] runs: the binary configured by `args` alone. It
/// inherits no `ROOMCAST_*` variable from whoever runs the tests (each flag has one, and a
/// `ROOMCAST_API_KEY` in a shell would otherwise change what the server answers).
fn roomcast_command_builder(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROOMCAST_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs the real binary with `args` until it exits (it must, within `TIMEOUT`); returns its
/// exit code and what it wrote to stderr.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    wait_for_exit(roomcast_command(args), args)
}

/// The user the binary runs as when the tests run as root: `nobody`.
const UNPRIVILEGED: u32 = 65534;

/// [`run_to_exit`], as a user whom file permissions bind. Root may write any file, so when
/// the tests run as root the binary runs as `nobody` (uid and gid 65534, no supplementary
/// groups); otherwise as the tests' own user.
pub fn run_to_exit_unprivileged(args: &[&str]) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let mut command = roomcast_command_builder(args);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn roomcast as an unprivileged user: {e}"));
    wait_for_exit(child, args)
}

/// Waits (up to `TIMEOUT`) for `child` to exit; returns its exit code and its stderr.
fn wait_for_exit(mut child: Child, args: &[&str]) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                .expect("read stderr");
            return (status.code(), stderr);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("roomcast {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct ClientSink(futures_util::stream::SplitSink<Ws, Message>);

impl ClientSink {
    /// Sends one JSON frame; `Err` once the connection is gone.
    pub async fn send(&mut self, v: Value) -> Result<(), ()> {
        match tokio::time::timeout(TIMEOUT, self.0.send(Message::text(v.to_string()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Sends `messages` in order (any kind: text, binary, ping) and flushes once after the
    /// last, so a burst costs few system calls; `Err` once the connection is gone.
    pub async fn send_all(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), ()> {
        for message in messages {
            match tokio::time::timeout(TIMEOUT, self.0.feed(message)).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
        }
        match tokio::time::timeout(TIMEOUT, self.0.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

pub struct ClientStream(futures_util::stream::SplitStream<Ws>);

impl ClientStream {
    /// The next text frame as JSON; `None` when the connection ends, fails or goes quiet for
    /// `TIMEOUT`.
    pub async fn next_value(&mut self) -> Option<Value> {
        // One deadline for the call: the server's pings must not keep extending it.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message of any kind as it came (control frames and the close included);
    /// `None` when the connection ends or fails without a close frame, or goes quiet for
    /// `TIMEOUT`.
    pub async fn next_message(&mut self) -> Option<Message> {
        match tokio::time::timeout(TIMEOUT, self.0.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_))) | Ok(None) | Err(_) => None,
        }
    }
}

/// Writes `request` on a fresh connection and reads until the server ends the connection;
/// fails if it is still open after `TIMEOUT`. For what an HTTP client would not send as it
/// is (a `..` segment, a broken head).
pub async fn answer_then_close(addr: SocketAddr, request: &str) -> String {
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    answer_then_close_on(stream, request).await
}

/// [`answer_then_close`] on a connection already open.
pub async fn answer_then_close_on(mut s: TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(TIMEOUT, s.write_all(request.as_bytes()))
        .await
        .expect("write timed out")
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still open after {TIMEOUT:?}; got: {}",
                    String::from_utf8_lossy(&raw)
                )
            });
        match read {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&raw).into_owned(),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A fresh empty folder under the system's temp folder.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to the JSON API under `/api`: `body`, when given, is sent as
/// `application/json`. Returns the status and the JSON answer (every `/api` answer is JSON).
/// Polls `GET path` at `addr` until `want` holds of its 200 answer (what crosses nodes, or
/// a background pass, arrives asynchronously); returns the answer.
pub async fn wait_api(addr: SocketAddr, path: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = api(addr, "GET", path, None).await;
        assert_eq!(status, 200, "{body}");
        if want(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} stayed {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    match body {
        Some(body) => {
            api_raw(
                addr,
                method,
                path,
                &[("Content-Type", "application/json")],
                &body.to_string(),
            )
            .await
        }
        None => api_raw(addr, method, path, &[], "").await,
    }
}

/// A request with these headers and this body as it is; the status and the JSON answer.
pub async fn api_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, text) = http_request(addr, method, path, headers, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {text}"));
    (status, json)
}

/// Asserts a JSON error answer: this status, this code, and a message for people.
#[track_caller]
pub fn assert_api_error(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    let (got, body) = answer;
    assert_eq!(
        (*got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{what}: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// `method path` with extra headers and no body; returns the status, the response head
/// (status line and headers, lowercased) and the body as text.
pub async fn http_request_with_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    http_exchange(addr, method, path, headers, "").await
}

/// The value of one series (`name{labels}` exactly as rendered) in Prometheus text.
/// The `text` of every message of a history page (HTTP or WebSocket), in order.
pub fn texts(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl TestServer {
    /// `GET /metrics` from loopback, which must answer 200; returns the text.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get_raw(self.addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The value of `series` in `/metrics` now (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Polls `/metrics` until `series` equals `want` (sessions report as they start and
    /// stop, asynchronously); fails after `TIMEOUT`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let got = self.metric(series).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed {got} (want {want})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Server-Sent Events stream: the body of a `GET`, read as it arrives and split into
/// events at blank lines. Every read has a timeout.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    /// Bytes read and not yet returned as events.
    buf: Vec<u8>,
    /// The body ended (or failed: the server went away).
    ended: bool,
    /// The response head (lowercased).
    pub head: String,
    pub status: u16,
}

impl SseClient {
    /// `GET path` with `headers`; reads the response head.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let request = http_builder(addr, "GET", path, headers)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no answer within {TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let head = head_of(&response);
        assert!(
            status != 200 || !head.contains("content-length:"),
            "an event stream has no length: {head}"
        );
        SseClient {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            ended: false,
            head,
            status,
        }
    }

    /// Reads more of the body; false when it has ended. A failed read (the server went
    /// away mid-stream) ends it too.
    async fn read_more(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout(TIMEOUT, self.body.next())
            .await
            .expect("no data arrived in time")
        {
            Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
            Some(Err(_)) | None => self.ended = true,
        }
        !self.ended
    }

    /// Takes the first complete event (up to and including the blank line that ends it)
    /// out of `buf`. Lines may end in `\n` or `\r\n`.
    fn take_event(&mut self) -> Option<String> {
        let find = |sep: &[u8]| {
            self.buf
                .windows(sep.len())
                .position(|w| w == sep)
                .map(|at| at + sep.len())
        };
        let end = [find(b"\n\n"), find(b"\r\n\r\n")]
            .into_iter()
            .flatten()
            .min()?;
        let event: Vec<u8> = self.buf.drain(..end).collect();
        Some(String::from_utf8(event).expect("UTF-8 events"))
    }

    /// The next event's `data`, as JSON; `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<Value> {
        loop {
            while let Some(event) = self.take_event() {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue; // a comment or a retry line
                }
                return Some(
                    serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {data}")),
                );
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads events until one satisfies `want`; returns it. Fails if the stream ends or no
    /// event arrives within `TIMEOUT` of the previous one, or after 30 s in all.
    pub async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + 2 * TIMEOUT;
        loop {
            let event = self
                .next_event()
                .await
                .unwrap_or_else(|| panic!("the stream ended before {what}"));
            if want(&event) {
                return event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event showed {what}; last: {event}"
            );
        }
    }
}

/// An address of this machine that is not loopback, to be a "remote" client of a server
/// bound to 0.0.0.0 (the address a packet to a public address would leave from; nothing is
/// sent). `None` on a machine without a route.
pub fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
