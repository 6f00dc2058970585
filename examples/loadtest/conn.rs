//! Opening WebSocket connections and the few request/answer steps every scenario shares
//! (read `welcome`, `join` → `joined`).
//!
//! The server's address is resolved once in `main`; every connection is then a plain
//! `TcpStream::connect` to it (with `TCP_NODELAY`, since latency is what is measured) followed
//! by the WebSocket handshake on it. A semaphore bounds how many handshakes are in flight, so
//! ten thousand connections do not all hit the listen backlog at once. Connect latency is TCP
//! connect + WebSocket upgrade; the wait for `welcome` is not part of it.
//!
//! Tungstenite's default buffers are 128 KiB per direction per socket, sized for throughput
//! over few sockets; the tool sets smaller ones so that 10,000 idle connections cost the tool
//! little memory. Failures are reduced to a short reason (`HTTP 503`, `connection refused`,
//! `timeout`…) so that the report can group them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::target::Target;
use crate::wire;

pub type Ws = WebSocketStream<TcpStream>;

/// The sending half of a split socket, owned by a sender's writer task.
pub type Sink = SplitSink<Ws, Message>;

/// What `welcome` announced that the tool cares about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Welcome {
    /// 0 when the server does not rate limit.
    pub rate_per_sec: f64,
    pub rate_burst: u64,
    pub max_text_chars: Option<u64>,
}

/// An open, welcomed connection.
pub struct Opened {
    pub ws: Ws,
    pub connect_time: Duration,
    /// The wait for a slot among `--connect-concurrency` before connecting.
    pub queued: Duration,
    pub welcome: Welcome,
}

/// What `joined` said.
#[derive(Debug, Clone, Copy)]
pub struct JoinInfo {
    pub last_seq: u64,
    /// Number of history `chat` frames that follow `joined`.
    pub history: u64,
}

pub struct Connector {
    /// The nodes, used in turn (one for a single server).
    addrs: Vec<SocketAddr>,
    next: std::sync::atomic::AtomicUsize,
    target: Target,
    permits: Semaphore,
    timeout: Duration,
    config: WebSocketConfig,
}

impl Connector {
    /// `read_buffer` is tungstenite's read buffer per socket (it grows for larger frames);
    /// `write_buffer` is how many bytes of frames it gathers before writing them (0: each
    /// frame is written when it is sent; more is written on a flush).
    pub fn new(
        addrs: Vec<SocketAddr>,
        target: Target,
        concurrency: usize,
        timeout: Duration,
        read_buffer: usize,
        write_buffer: usize,
    ) -> Connector {
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(write_buffer)
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        Connector {
            addrs,
            next: std::sync::atomic::AtomicUsize::new(0),
            target,
            permits: Semaphore::new(concurrency.max(1)),
            timeout,
            config,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects to `path` (e.g. `/ws?user_id=NAME`) and, if `expect_welcome`, waits for the
    /// `welcome` frame. Each step is bounded by the connect timeout.
    pub async fn open(&self, path: &str, expect_welcome: bool) -> Result<Opened, String> {
        let asked = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let started = Instant::now();
        let queued = started - asked;
        let handshake = async {
            let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tcp = TcpStream::connect(self.addrs[turn % self.addrs.len()])
                .await
                .map_err(|e| io_reason(&e))?;
            tcp.set_nodelay(true).map_err(|e| io_reason(&e))?;
            tokio_tungstenite::client_async_with_config(
                self.target.ws_url(path),
                tcp,
                Some(self.config),
            )
            .await
            .map(|(ws, _response)| ws)
            .map_err(|e| ws_reason(&e))
        };
        let mut ws = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| "timeout (connect)".to_string())??;
        let connect_time = started.elapsed();
        let mut welcome = Welcome::default();
        if expect_welcome {
            let frame = tokio::time::timeout(self.timeout, next_text(&mut ws))
                .await
                .map_err(|_| "timeout (welcome)".to_string())??;
            let f = frame.as_bytes();
            if wire::frame_type(f) != Some(b"welcome") {
                return Err("first frame is not welcome".to_string());
            }
            welcome = Welcome {
                rate_per_sec: wire::f64_field(f, b"\"rate_per_sec\":").unwrap_or(0.0),
                rate_burst: wire::u64_field(f, b"\"rate_burst\":").unwrap_or(0),
                max_text_chars: wire::u64_field(f, b"\"max_text_chars\":"),
            };
        }
        Ok(Opened {
            ws,
            connect_time,
            queued,
            welcome,
        })
    }
}

/// The next text frame; pings are answered by tungstenite while reading. A close, the end of
/// the stream or an error is an `Err` with a short reason.
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(frame))) => return Err(close_reason(frame.as_ref())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_reason(&e)),
            None => return Err("connection ended".to_string()),
        }
    }
}

/// Sends `join` and waits (at most `timeout`) for this room's `joined`; frames for other
/// rooms, presence and the like are skipped. The history frames that follow `joined` are left
/// to the caller (their number is in [`JoinInfo::history`]).
pub async fn join(ws: &mut Ws, room: &str, timeout: Duration) -> Result<JoinInfo, String> {
    let steps = async {
        ws.send(Message::text(wire::join_frame(room)))
            .await
            .map_err(|e| ws_reason(&e))?;
        loop {
            let t = next_text(ws).await?;
            let f = t.as_bytes();
            match wire::frame_type(f) {
                Some(b"joined")
                    if wire::str_field(f, b"\"room_id\":\"") == Some(room.as_bytes()) =>
                {
                    return Ok(JoinInfo {
                        last_seq: wire::u64_field(f, b"\"last_seq\":").unwrap_or(0),
                        history: wire::u64_field(f, b"\"history\":").unwrap_or(0),
                    });
                }
                Some(b"error") => {
                    let code = wire::str_field(f, b"\"code\":\"").unwrap_or(b"?");
                    return Err(format!("join refused: {}", String::from_utf8_lossy(code)));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, steps)
        .await
        .map_err(|_| "timeout (join)".to_string())?
}

/// Reads (and drops) frames until the server's close frame or the end of the stream: after
/// sending a close, so that the server's answer is read before the socket goes.
pub async fn drain_until_close<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(Ok(m)) = stream.next().await {
        if m.is_close() {
            break;
        }
    }
}

/// Closes a socket at the end of a run: sends a close frame and reads until the server's
/// answer, for at most a second.
pub async fn close_and_drain(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(None).await.is_ok() {
            drain_until_close(ws).await;
        }
    })
    .await;
}

/// [`close_and_drain`] for a split socket: `sink` is what the writer task handed back.
pub async fn close_split_and_drain(mut sink: Sink, stream: &mut SplitStream<Ws>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if sink.send(Message::Close(None)).await.is_ok() {
            drain_until_close(stream).await;
        }
    })
    .await;
}

/// Sends a close frame (bounded by `timeout`) and drops the connection.
pub async fn close(mut ws: Ws, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, ws.close(None)).await;
}

/// Why a read ended the connection: a close frame, an error, or the end of the stream.
/// `None` for any other frame (the connection goes on).
pub fn end_reason(item: Option<Result<Message, tungstenite::Error>>) -> Option<String> {
    match item {
        Some(Ok(Message::Close(f))) => Some(close_reason(f.as_ref())),
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(ws_reason(&e)),
        None => Some("connection ended".to_string()),
    }
}

/// A short, groupable description of a close frame.
pub fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        None => "closed by server (no code)".to_string(),
        Some(f) => {
            let code = u16::from(f.code);
            let meaning = match code {
                1000 => "normal",
                1001 => "going away",
                1008 => "policy: rate limit",
                1009 => "message too big",
                1011 => "server error",
                4001 => "slow consumer",
                4002 => "heartbeat timeout",
                _ => "",
            };
            format!("closed by server: {code} {meaning}")
                .trim_end()
                .to_string()
        }
    }
}

pub fn ws_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status().as_u16()),
        tungstenite::Error::Io(e) => io_reason(e),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "connection closed".to_string()
        }
        tungstenite::Error::Protocol(p) => format!("protocol: {p}"),
        other => {
            let mut s = other.to_string();
            s.truncate(80);
            s
        }
    }
}

pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset".to_string(),
        K::ConnectionAborted => "connection aborted".to_string(),
        K::BrokenPipe => "broken pipe".to_string(),
        K::TimedOut => "timeout".to_string(),
        K::AddrNotAvailable => "address not available (out of ports?)".to_string(),
        K::UnexpectedEof => "connection ended".to_string(),
        _ if e.raw_os_error() == Some(24) => "too many open files (raise ulimit -n)".to_string(),
        _ => {
            let mut s = e.to_string();
            s.truncate(80);
            s
        }
    }
}
