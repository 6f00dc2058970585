//! Hostile clients: what a well-behaved client never sends, sent by hand over raw sockets.
//! Each test is a repro of an attack that once cost the server memory, descriptors, log
//! space or bandwidth, and the bound that now holds.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::common::*;

/// How many refused messages an `error` frame reports: the number in "N messages dropped
/// since the last error", else one.
pub fn refusals_in(error: &Value) -> usize {
    let message = error["message"].as_str().unwrap_or_default();
    message
        .split("; ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" messages dropped since the last error"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

const CLOSE: u8 = 0x8;

/// A WebSocket connection driven byte by byte.
struct RawSocket {
    read: OwnedReadHalf,
    write: tokio::net::tcp::OwnedWriteHalf,
    /// Bytes read and not yet parsed into frames.
    buf: Vec<u8>,
}

/// The status, the response head (lowercased) and whatever followed it, after sending a
/// handshake for `path` with this `Sec-WebSocket-Version`.
async fn handshake(addr: SocketAddr, path: &str, version: &str) -> (u16, String, RawSocket) {
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (read, write) = stream.into_split();
    let mut socket = RawSocket {
        read,
        write,
        buf: Vec::new(),
    };
    while !socket.buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(
            socket.read_more().await,
            "the connection ended before the head"
        );
    }
    let at = socket
        .buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    let head = String::from_utf8(socket.buf.drain(..at + 4).collect()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), socket)
}

/// A masked frame header announcing `len` bytes, in the 64-bit length form.
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    out
}

/// A whole masked frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, opcode, payload.len() as u64);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

impl RawSocket {
    /// Reads more bytes; false when the connection ended or failed.
    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(TIMEOUT, self.read.read(&mut chunk))
            .await
            .expect("the server neither sent anything nor ended the connection in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame from the server (opcode, payload); `None` when the connection ended.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// Reads frames until the close frame; its code, or `None` if the connection ended
    /// without one.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await? {
                (CLOSE, p) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                (CLOSE, _) => return Some(1005),
                _ => continue,
            }
        }
    }
}

/// Announces `len` bytes in one frame's header, then sends payload slowly (64 KiB every
/// 10 ms, at most 32 MiB or 5 s) while reading, until the server closes or ends the
/// connection. Returns the close code (`None`: ended without one) and the bytes sent.
async fn announce_and_trickle(srv: &ChildServer, len: u64) -> (Option<u16>, usize) {
    const MAX_SENT: usize = 32 << 20;
    let (status, _, mut socket) = handshake(srv.addr, "/ws?user_id=big", "13").await;
    assert_eq!(status, 101);
    socket.write.write_all(&header(true, 1, len)).await.unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    loop {
        let trickling = sent < MAX_SENT && started.elapsed() < Duration::from_secs(5);
        tokio::select! {
            frame = socket.next_frame() => match frame {
                Some((CLOSE, p)) if p.len() >= 2 => {
                    return (Some(u16::from_be_bytes([p[0], p[1]])), sent)
                }
                Some(_) => {} // welcome
                None => return (None, sent),
            },
            _ = ticker.tick(), if trickling => {
                let write = socket.write.write_all(&chunk);
                match tokio::time::timeout(TIMEOUT, write).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    // The server closed: a reset may have taken its close frame with it.
                    Ok(Err(_)) => return (socket.close_code().await, sent),
                    Err(_) => panic!("the server stopped reading but did not close"),
                }
            }
        }
    }
}

/// A frame announcing 1 GiB (or 2^63 - 1 bytes, or 2^63) is refused from its header: the
/// server closes with 1009 (or the connection ends) without reading the payload, and its
/// memory does not grow with what the client sends.
#[tokio::test]
async fn a_frame_announcing_too_much_is_refused_from_its_header() {
    // Growth a server that buffered the payload would pass (the client sends up to 32 MiB).
    const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;
    // No heartbeat can end these connections within the test's timeouts.
    let srv = ChildServer::spawn(&["--heartbeat-interval", "60", "--client-timeout", "120"]);
    for len in [1 << 30, (1 << 63) - 1, 1 << 63] {
        let rss_before = srv.rss_kib();
        let (code, sent) = announce_and_trickle(&srv, len).await;
        let growth = srv.rss_kib().saturating_sub(rss_before);
        eprintln!("announced {len}: close {code:?} after {sent} bytes sent, RSS +{growth} KiB");
        assert!(
            code.is_none_or(|c| c == 1009),
            "announced {len}: closed with {code:?}"
        );
        assert!(
            growth < RSS_GROWTH_BOUND_KIB,
            "announced {len}: server RSS grew by {growth} KiB"
        );
    }
    // Announced, then nothing: refused at once, not at the heartbeat.
    for len in [(1 << 63) - 1, 1 << 63] {
        let (_, _, mut socket) = handshake(srv.addr, "/ws?user_id=stall", "13").await;
        socket.write.write_all(&header(true, 2, len)).await.unwrap();
        let code = socket.close_code().await;
        assert!(code.is_none_or(|c| c == 1009), "{len}: {code:?}");
    }
    let mut c = Client::connect(&srv.url("/ws?user_id=after")).await;
    c.expect("welcome").await;
    c.ping().await;
}

/// A fragmented message is refused as soon as a fragment's header would take it past the
/// limit, before that fragment's payload arrives.
#[tokio::test]
async fn a_fragment_past_the_limit_is_refused_from_its_header() {
    let srv = TestServer::with(|c| c.max_frame_bytes = 1024);
    let (status, _, mut socket) = handshake(srv.addr, "/ws?user_id=frag", "13").await;
    assert_eq!(status, 101);
    let first = frame(false, 1, &[b'a'; 600]);
    socket.write.write_all(&first).await.unwrap();
    // 600 so far; a continuation announcing 1 GiB more, and no payload.
    socket
        .write
        .write_all(&header(true, 0, 1 << 30))
        .await
        .unwrap();
    assert_eq!(socket.close_code().await, Some(1009));
}

/// Invalid UTF-8 closes with 1007 whether it comes whole or in fragments, and the metrics
/// count it as that, not as a dropped connection.
#[tokio::test]
async fn invalid_utf8_closes_1007_whole_or_fragmented() {
    let srv = TestServer::start();
    let bad = [b'{', 0xff, 0xfe, b'}'];
    let data = |fin: bool, opcode: Data, payload: &[u8]| {
        let header = FrameHeader {
            is_final: fin,
            opcode: OpCode::Data(opcode),
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(header, payload.to_vec().into()))
    };
    let mut whole = srv.client("whole").await;
    whole.send_message(data(true, Data::Text, &bad)).await;
    assert_eq!(whole.expect_close().await, 1007);
    let mut parts = srv.client("parts").await;
    parts.send_message(data(false, Data::Text, &bad[..2])).await;
    parts
        .send_message(data(true, Data::Continue, &bad[2..]))
        .await;
    assert_eq!(parts.expect_close().await, 1007);

    let closed = |code: u16, reason: &str| {
        format!(r#"roomcast_sockets_closed_total{{code="{code}",reason="{reason}"}}"#)
    };
    srv.wait_metric(&closed(1007, "invalid_utf8"), 2.0).await;
    srv.wait_metric(r#"roomcast_connections{kind="chat"}"#, 0.0)
        .await;
    let text = srv.metrics().await;
    for (series, want) in [
        (closed(1006, "dropped"), Some(0.0)),
        (closed(1002, "protocol_error"), Some(0.0)),
        (
            r#"roomcast_frames_received_total{type="invalid"}"#.into(),
            Some(2.0),
        ),
    ] {
        assert_eq!(metric_value(&text, &series), want, "{series} in\n{text}");
    }
}

/// An upgrade refused at the WebSocket limit (503) is not a session: nothing is counted
/// opened or closed for it.
#[tokio::test]
async fn refused_upgrades_are_not_counted_as_sessions() {
    let srv = TestServer::with(|c| c.max_connections = 1);
    let held = srv.client("held").await;
    for _ in 0..3 {
        let (status, body) = Client::refused(&srv.url("/ws?user_id=late")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable"))
        );
    }
    held.close().await;
    srv.wait_metric(r#"roomcast_connections{kind="chat"}"#, 0.0)
        .await;
    let text = srv.metrics().await;
    // Every documented close is shown, at 0 until counted.
    let closes: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("roomcast_sockets_closed_total{") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(
        closes,
        [r#"roomcast_sockets_closed_total{code="1000",reason="peer"} 1"#],
        "{text}"
    );
}

/// RFC 6455 §4.4: a handshake with a version other than 13 gets 426 Upgrade Required and
/// the version the server speaks.
#[tokio::test]
async fn other_websocket_versions_get_426_with_version_13() {
    let srv = TestServer::start();
    for version in ["8", "7", "14"] {
        let (status, head, mut socket) = handshake(srv.addr, "/ws?user_id=old", version).await;
        assert_eq!(status, 426, "version {version}: {head}");
        assert!(head.contains("sec-websocket-version: 13\r\n"), "{head}");
        while !socket.buf.ends_with(b"}") {
            assert!(socket.read_more().await, "the 426 body");
        }
        let body: Value = serde_json::from_slice(&socket.buf).expect("a JSON body");
        assert_eq!(body["error"]["code"], "unsupported_version", "{body}");
    }
    let (status, _, mut socket) = handshake(srv.addr, "/ws?user_id=new", "13").await;
    assert_eq!(status, 101);
    let (opcode, welcome) = socket.next_frame().await.expect("welcome");
    assert_eq!(opcode, 1);
    let welcome: Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome["type"], "welcome");
}

/// A client flooding past its rate limit gets far fewer error frames than refusals, yet
/// every refusal is reported (the frames' counts add up to what the metrics counted), and
/// the socket still works.
#[tokio::test]
async fn a_rate_limited_flood_gets_a_bounded_number_of_error_frames() {
    const SENT: usize = 5_000;
    let srv = TestServer::with(|c| {
        c.rate_per_sec = 0.001;
        c.rate_burst = 1;
        c.rate_strikes = 1_000_000;
    });
    let (flood, _) = srv.room_client("flood", "flooder").await;
    let (mut observer, _) = srv.room_client("flood", "observer").await;
    let (mut sink, mut stream) = flood.split();
    let reader = tokio::spawn(async move {
        // One chat passes (the burst of one); every other message is refused.
        let (mut chats, mut reported, mut errors) = (0, 0, 0);
        while chats + reported < SENT {
            let f = stream.next_value().await.expect("a frame");
            match (f["type"].as_str(), f["code"].as_str()) {
                (Some("chat"), _) => chats += 1,
                (Some("user_joined"), _) => {}
                (Some("error"), Some("rate_limited")) => {
                    errors += 1;
                    reported += refusals_in(&f);
                }
                _ => panic!("unexpected {f}"),
            }
        }
        (chats, reported, errors, stream)
    });
    for n in 0..SENT {
        sink.send(json!({"type": "chat", "text": format!("{n}")}))
            .await
            .expect("the flooder's socket stays open");
    }
    let (chats, reported, errors, mut stream) = reader.await.unwrap();
    let refused = srv.metric("roomcast_rate_limited_total").await as usize;
    eprintln!("{SENT} sent: {chats} passed, {refused} refused, {errors} error frames");
    assert_eq!((chats, refused), (1, SENT - 1));
    assert_eq!(
        reported, refused,
        "the error frames account for every refusal"
    );
    assert!(
        errors * 10 < refused,
        "{errors} error frames for {refused} refusals"
    );
    assert_eq!(
        srv.metric(r#"roomcast_frames_dropped_total{reason="rate_limited"}"#)
            .await as usize,
        refused
    );

    // Still open and delivering.
    assert_eq!(observer.expect("chat").await["text"], "0");
    observer.chat("flood", "still there?").await;
    assert_eq!(observer.expect("chat").await["text"], "still there?");
    let f = stream.next_value().await.expect("a frame");
    assert_eq!(
        (f["type"].as_str(), f["text"].as_str()),
        (Some("chat"), Some("still there?"))
    );
}

/// The same for messages past `--max-in-flight`: every `overloaded` refusal is reported, in
/// few frames, and the socket still works.
#[tokio::test]
async fn an_overloading_flood_gets_its_refusals_reported_in_few_frames() {
    const SENT: usize = 5_000;
    let srv = TestServer::with(|c| {
        c.rate_per_sec = 0.0;
        c.max_in_flight = 1;
    });
    let (flood, _) = srv.room_client("busy", "flooder").await;
    let (mut sink, mut stream) = flood.split();
    let reader = tokio::spawn(async move {
        let (mut chats, mut reported, mut errors) = (0, 0, 0);
        while chats + reported < SENT {
            let f = stream.next_value().await.expect("a frame");
            match (f["type"].as_str(), f["code"].as_str()) {
                (Some("chat"), _) => chats += 1,
                (Some("error"), Some("overloaded")) => {
                    errors += 1;
                    reported += refusals_in(&f);
                }
                _ => panic!("unexpected {f}"),
            }
        }
        (chats, reported, errors, stream)
    });
    for n in 0..SENT {
        sink.send(json!({"type": "chat", "text": format!("{n}")}))
            .await
            .expect("the flooder's socket stays open");
    }
    let (chats, reported, errors, mut stream) = reader.await.unwrap();
    let refused = srv
        .metric(r#"roomcast_frames_dropped_total{reason="overloaded"}"#)
        .await as usize;
    eprintln!("{SENT} sent: {chats} passed, {refused} refused, {errors} error frames");
    assert_eq!(
        reported, refused,
        "the error frames account for every refusal"
    );
    assert!(errors <= refused);
    if refused >= 1000 {
        assert!(
            errors * 10 < refused,
            "{errors} error frames for {refused} refusals"
        );
    }
    // Still usable: the session's own ping, then a chat through the server.
    sink.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(stream.next_value().await.expect("pong")["type"], "pong");
    sink.send(json!({"type": "chat", "text": "after"}))
        .await
        .unwrap();
    let f = stream.next_value().await.expect("a frame");
    assert_eq!(
        (f["type"].as_str(), f["text"].as_str()),
        (Some("chat"), Some("after"))
    );
}

/// A request whose head or body never finishes is answered and its connection closed, within
/// `--request-timeout-ms`: whether the handler reads the body (the API's JSON) or not (the
/// seed's push), chunked or with a length.
#[tokio::test]
async fn requests_that_never_finish_are_answered_and_closed() {
    // The shortest allowed: the head's deadline is kept to half a second.
    let srv = TestServer::with(|c| c.request_timeout_ms = 1000);
    let cases = [
        (
            "an API body that stops",
            "POST /api/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{\"user_id\":",
            "HTTP/1.1 408",
        ),
        (
            "a chunked API body that stops",
            "POST /api/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
            "HTTP/1.1 408",
        ),
        (
            "a chunked body the handler does not read",
            "POST /send-notification/?user_id=a&title=t&message=m HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            "HTTP/1.1 200",
        ),
        (
            "a body with a length the handler does not read",
            "POST /send-notification/?user_id=a&title=t&message=m HTTP/1.1\r\nHost: x\r\n\
             Content-Length: 100\r\n\r\nabc",
            "HTTP/1.1 200",
        ),
        (
            "a head that stops",
            "GET /health HTTP/1.1\r\nHost: x\r\n",
            "HTTP/1.1 408",
        ),
    ];
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|(_, request, _)| answer_then_close(srv.addr, request)),
    )
    .await;
    for ((what, _, status), answer) in cases.iter().zip(answers) {
        assert!(answer.starts_with(status), "{what}: {answer}");
        if status.ends_with("408") && answer.contains('{') {
            assert!(
                answer.contains(r#""code":"request_timeout""#),
                "{what}: {answer}"
            );
        }
    }
    srv.client("fine").await.ping().await;
}

/// actix-web bounds only the first request's head: on a keep-alive connection, a next
/// request whose head never finishes is cut off by the connection's watchdog.
#[tokio::test]
async fn a_later_request_head_that_never_finishes_is_closed() {
    let srv = TestServer::with(|c| c.request_timeout_ms = 1000);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).ends_with('}') {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .expect("the first answer")
            .unwrap();
        assert!(n > 0, "closed before the first answer");
        raw.extend_from_slice(&chunk[..n]);
    }
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // The connection is kept alive; the next head starts and stops.
    let answer = answer_then_close_on(s, "GET /health HTTP/1.1\r\nHost: x\r\n").await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// All connections together are bounded across workers: past the bound a request gets a
/// fast 503 (not a hang) and its connection is closed; once connections go, service resumes.
#[tokio::test]
async fn past_the_connection_bound_requests_get_503_and_service_resumes() {
    const IDLE: usize = 30;
    // 20 WebSockets plus 4 more for HTTP: 24 connections at most.
    let srv = ChildServer::spawn(&[
        "--max-connections",
        "20",
        "--max-http-connections",
        "4",
        "--request-timeout-ms",
        "60000",
    ]);
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // The server has accepted them all (it holds them beside its listeners): any new
    // connection is past the bound.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while srv.socket_count() <= IDLE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, head, body) = http_request_with_head(srv.addr, "GET", "/health", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, body) = Client::refused(&srv.url("/ws?user_id=late")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );

    // Once they go, service resumes (as soon as the server has seen them go).
    drop(idle);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let metrics = loop {
        let (status, body) = http_get_raw(srv.addr, "/metrics").await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "service did not resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let refused = metric_value(&metrics, "roomcast_connections_refused_total");
    assert!(refused.is_some_and(|n| n >= 2.0), "{metrics}");
    let mut c = Client::connect(&srv.url("/ws?user_id=next")).await;
    c.expect("welcome").await;
    c.ping().await;
}

/// `notification_type` becomes a CSS class in the browser chat: both push endpoints take
/// only the documented types, and name them when refusing another.
#[tokio::test]
async fn notification_types_outside_the_documented_set_are_refused() {
    let srv = TestServer::start();
    let mut n = Client::connect(&srv.url("/notifications/alice")).await;
    for bad in ["toast evil", "danger", "INFO", "info\"><img src=x>", ""] {
        let query: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
        let path = format!(
            "/send-notification/?user_id=alice&title=t&message=m&notification_type={query}"
        );
        let answer = http_post(srv.addr, &path, &[]).await;
        assert_api_error(&answer, 400, "invalid_field", bad);
        let message = answer.1["error"]["message"].as_str().unwrap().to_owned();
        for allowed in ["info", "success", "warning", "error"] {
            assert!(message.contains(allowed), "{message}");
        }
        let body = json!({"user_id": "alice", "title": "t", "message": "m",
                          "notification_type": bad});
        let answer = api(srv.addr, "POST", "/api/notifications", Some(&body)).await;
        assert_api_error(&answer, 400, "invalid_field", bad);
    }
    for good in ["info", "success", "warning", "error"] {
        let path =
            format!("/send-notification/?user_id=alice&title=t&message=m&notification_type={good}");
        let (status, answer) = http_post(srv.addr, &path, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(n.expect("notification").await["notification_type"], good);
    }
    // Nothing refused reached the socket: the next frame answers this ping.
    n.send(json!({"type": "ping"})).await;
    n.expect("pong").await;
}
