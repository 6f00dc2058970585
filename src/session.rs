//! The WebSocket session actor: one per connection. The only module that knows
//! actix-web-actors.
//!
//! A session turns frames into [`ClientMessage`]s, answers what concerns only itself
//! (`ping`, bad input, rate limiting, oversize and binary frames, heartbeats) and sends the
//! rest to `ChatServer` as a typed [`ClientRequest`]. It writes whatever `ChatServer` sends it
//! ([`Outbound`]) to the socket as is: frames arrive encoded, and are never re-serialized here.
//!
//! It reports into the server's [`Metrics`]: itself (opened, closed and why), the frames it
//! reads (by type) and writes, and the frames it refuses.
//!
//! Its mailbox is bounded (`max_pending`): when the client stops reading, actix-web stops
//! polling this actor, the mailbox fills, and `ChatServer` treats the session as a slow
//! consumer.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytes::BytesMut;

use crate::config::Config;
use crate::ids::{RoomId, SessionId, UserId};
use crate::metrics::{Metrics, drop_reason};
use crate::protocol::{
    ClientMessage, DecodeError, ErrorCode, ServerMessage, close_code, decode, error_frame,
};
use crate::ratelimit::TokenBucket;
use crate::server::ChatServer;
use crate::server::messages::{Backlog, ClientRequest, Command, Disconnect, Outbound, SessionKind};

/// Answers the WebSocket handshake in `req` and starts `session` on the connection, with
/// frames over `max_frame_bytes` refused. Returns the session's address and the `101`
/// response; the actor runs once the response is sent (dropping the response drops it).
pub fn upgrade(
    session: ChatSession,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    max_frame_bytes: usize,
) -> Result<(Addr<ChatSession>, actix_web::HttpResponse), actix_web::Error> {
    ws::WsResponseBuilder::new(session, req, payload)
        .frame_size(max_frame_bytes)
        .start_with_addr()
}

pub struct ChatSession {
    id: SessionId,
    user: UserId,
    /// A chat socket, or a notification socket (which only answers pings).
    kind: SessionKind,
    /// The room named in the URL; messages that leave out `room_id` are about it.
    default_room: Option<RoomId>,
    server: Addr<ChatServer>,
    config: Arc<Config>,
    /// When the peer last showed signs of life (any frame, pong included).
    last_heard: Instant,
    bucket: TokenBucket,
    /// Rate-limited messages in a row; past `rate_strikes` the socket is closed with 1008.
    strikes: u32,
    /// A fragmented message being reassembled: its bytes so far and whether it is text.
    fragments: Option<(BytesMut, bool)>,
    /// Requests sent to `ChatServer` and not yet handled there. Bounded by `max_in_flight`,
    /// so one socket cannot pile work into `ChatServer`'s mailbox faster than it is done.
    /// Shared only with this thread's tasks that wait for those answers (see `on_text`).
    in_flight: Rc<Cell<usize>>,
    /// Frames `ChatServer` handed over that this session has not written yet.
    backlog: Backlog,
    metrics: Arc<Metrics>,
    /// Whether this session's end was counted (`socket_closed`): once per session.
    close_counted: bool,
}

impl ChatSession {
    pub fn new(
        id: SessionId,
        user: UserId,
        kind: SessionKind,
        default_room: Option<RoomId>,
        server: Addr<ChatServer>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = Instant::now();
        ChatSession {
            id,
            user,
            kind,
            default_room,
            server,
            bucket: TokenBucket::new(config.rate_per_sec, config.rate_burst, now),
            config,
            last_heard: now,
            strikes: 0,
            fragments: None,
            in_flight: Rc::default(),
            backlog: Backlog::default(),
            metrics,
            close_counted: false,
        }
    }

    /// The gauge `ChatServer` needs to bound this session's pending frames.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    /// Closes with `code` and `description`; counted as `code` with the metric label `reason`.
    fn close(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: u16,
        reason: &'static str,
        description: &str,
    ) {
        self.count_close(code, reason);
        ctx.close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(description.to_owned()),
        }));
        ctx.stop();
    }

    /// Counts how this session ended, the first time only (a close may be followed by the end
    /// of the stream, and always by `stopped`).
    fn count_close(&mut self, code: u16, reason: &'static str) {
        if !self.close_counted {
            self.close_counted = true;
            self.metrics.socket_closed(code, reason);
        }
    }

    /// Writes one text frame to the socket.
    fn write(&self, ctx: &mut ws::WebsocketContext<Self>, frame: bytestring::ByteString) {
        ctx.text(frame);
        self.metrics.frames_sent(1);
    }

    fn send_error(&self, ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, message: &str) {
        self.write(ctx, error_frame(code, message, None));
    }

    /// Answers a client frame with an error and counts it dropped as `invalid`.
    fn refuse(&self, ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, message: &str) {
        self.metrics.frame_dropped(drop_reason::INVALID);
        self.send_error(ctx, code, message);
    }

    /// One complete text message from the client.
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.bucket.try_take(Instant::now()) {
            self.metrics.rate_limited();
            self.metrics.frame_dropped(drop_reason::RATE_LIMITED);
            self.strikes += 1;
            if self.strikes > self.config.rate_strikes {
                log::warn!("flood closed session={} user={}", self.id, self.user);
                return self.close(ctx, 1008, "rate_limited", "rate limit exceeded");
            }
            return self.send_error(
                ctx,
                ErrorCode::RateLimited,
                "rate limit exceeded; the message was dropped",
            );
        }
        self.strikes = 0;
        if self.kind == SessionKind::Notifications {
            return self.on_notification_socket_text(text, ctx);
        }

        let msg = match decode(text, self.config.decode_limits()) {
            Ok(msg) => msg,
            Err(e) => {
                log::warn!("bad frame session={} code={:?}: {e}", self.id, e.code());
                self.metrics.frame_received("invalid");
                return self.refuse(ctx, e.code(), &e.to_string());
            }
        };
        log::debug!("frame session={} type={}", self.id, msg.kind());
        self.metrics.frame_received(msg.kind());
        let is_ping = matches!(msg, ClientMessage::Ping);
        let command = match self.command_for(msg) {
            Ok(Some(command)) => command,
            Ok(None) if is_ping => return self.write(ctx, pong_frame()),
            Ok(None) => return,
            Err(e) => return self.refuse(ctx, e.code(), &e.to_string()),
        };
        if self.in_flight.get() >= self.config.max_in_flight {
            self.metrics.frame_dropped(drop_reason::OVERLOADED);
            return self.send_error(
                ctx,
                ErrorCode::Overloaded,
                "too many requests waiting for the server; the message was dropped",
            );
        }
        let request = self.server.send(ClientRequest {
            session: self.id,
            command,
        });
        // Wait for the answer in a task of this thread, not of this actor: actix skips a
        // message whose answer nobody awaits any more, so a future owned by the actor would
        // cancel the requests it sent just before stopping (a chat accepted, then lost).
        let in_flight = Rc::clone(&self.in_flight);
        in_flight.set(in_flight.get() + 1);
        actix_web::rt::spawn(async move {
            let _ = request.await;
            in_flight.set(in_flight.get() - 1);
        });
    }

    /// A notification socket answers the seed's text `ping` with `pong`, and a JSON `ping` with
    /// a JSON `pong`; it takes no other request.
    fn on_notification_socket_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if text.trim() == "ping" {
            self.metrics.frame_received("text_ping");
            return self.write(ctx, "pong".into());
        }
        let msg = decode(text, self.config.decode_limits());
        self.metrics
            .frame_received(msg.as_ref().map_or("invalid", |m| m.kind()));
        match msg {
            Ok(ClientMessage::Ping) => self.write(ctx, pong_frame()),
            Ok(ClientMessage::Pong) => {}
            Ok(other) => self.refuse(
                ctx,
                ErrorCode::UnknownType,
                &format!(
                    "a notification socket only receives notifications; `{}` is for /ws",
                    other.kind()
                ),
            ),
            Err(e) => self.refuse(ctx, e.code(), &e.to_string()),
        }
    }

    /// Maps a client message to a server command, filling in the default room. `Ok(None)` for
    /// `ping` and `pong`, which the session handles itself.
    fn command_for(&self, msg: ClientMessage) -> Result<Option<Command>, DecodeError> {
        let room = |r: Option<RoomId>| {
            r.or_else(|| self.default_room.clone())
                .ok_or(DecodeError::MissingField("room_id"))
        };
        Ok(Some(match msg {
            ClientMessage::Ping | ClientMessage::Pong => return Ok(None),
            ClientMessage::Join { room: r, since_seq } => Command::Join {
                room: room(r)?,
                since: since_seq,
            },
            ClientMessage::Leave { room: r } => Command::Leave { room: room(r)? },
            ClientMessage::Chat {
                room: r,
                text,
                client_msg_id,
            } => Command::Chat {
                room: room(r)?,
                text,
                client_msg_id,
            },
            ClientMessage::Typing { room: r, is_typing } => Command::Typing {
                room: room(r)?,
                is_typing,
            },
            ClientMessage::GetUsers { room: r } => Command::GetUsers { room: room(r)? },
            ClientMessage::Private { to_user, content } => Command::Private { to_user, content },
            ClientMessage::History {
                room: r,
                before_seq,
                limit,
            } => Command::History {
                room: room(r)?,
                before_seq,
                limit,
            },
        }))
    }

    /// A continuation frame: appends to the message being reassembled, within the size limit.
    fn on_fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (chunk, first_is_text, last) = match item {
            Item::FirstText(b) => (b, Some(true), false),
            Item::FirstBinary(b) => (b, Some(false), false),
            Item::Continue(b) => (b, None, false),
            Item::Last(b) => (b, None, true),
        };
        match (first_is_text, self.fragments.as_mut()) {
            (Some(is_text), _) => self.fragments = Some((BytesMut::from(&chunk[..]), is_text)),
            (None, Some((buf, _))) => buf.extend_from_slice(&chunk),
            (None, None) => {
                return self.close(
                    ctx,
                    1002,
                    "protocol_error",
                    "continuation frame without a first frame",
                );
            }
        }
        if self
            .fragments
            .as_ref()
            .is_some_and(|(buf, _)| buf.len() > self.config.max_frame_bytes)
        {
            self.fragments = None;
            self.metrics.frame_dropped(drop_reason::TOO_BIG);
            return self.close(ctx, 1009, "too_big", "message too big");
        }
        if last && let Some((buf, is_text)) = self.fragments.take() {
            if !is_text {
                return self.on_binary(ctx);
            }
            match std::str::from_utf8(&buf) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => {
                    self.metrics.frame_received("invalid");
                    self.metrics.frame_dropped(drop_reason::INVALID);
                    self.close(ctx, 1007, "invalid_utf8", "text message is not valid UTF-8")
                }
            }
        }
    }

    fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.metrics.frame_received("binary");
        self.metrics.frame_dropped(drop_reason::BINARY);
        self.send_error(
            ctx,
            ErrorCode::BinaryUnsupported,
            "binary frames are not supported; send JSON text frames",
        );
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.last_heard.elapsed() > self.config.client_timeout() {
            log::info!("heartbeat timeout session={} user={}", self.id, self.user);
            return self.close(
                ctx,
                close_code::HEARTBEAT_TIMEOUT,
                "heartbeat_timeout",
                "heartbeat timeout",
            );
        }
        ctx.ping(b"");
    }
}

impl Actor for ChatSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.session_opened(self.kind);
        ctx.set_mailbox_capacity(self.config.max_pending);
        ctx.run_interval(self.config.heartbeat_interval(), |act, ctx| {
            act.heartbeat(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The one place a session says it is gone.
        self.server.do_send(Disconnect { session: self.id });
        // Ended without a close frame either way: the connection went (or was cut).
        self.count_close(ABNORMAL_CLOSURE, "dropped");
        self.metrics.session_closed(self.kind);
    }
}

impl Handler<Outbound> for ChatSession {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(frame) => {
                let bytes = frame.len();
                self.write(ctx, frame);
                self.backlog.written(1, bytes);
            }
            Outbound::Batch(frames) => {
                let n = frames.len();
                let bytes = frames.iter().map(|f| f.len()).sum();
                frames.into_iter().for_each(|f| ctx.text(f));
                self.metrics.frames_sent(n as u64);
                self.backlog.written(n, bytes);
            }
            Outbound::Close { code, reason } => {
                let label = match code {
                    1001 => "shutdown",
                    close_code::SLOW_CONSUMER => "slow_consumer",
                    _ => "server",
                };
                self.close(ctx, code, label, reason)
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for ChatSession {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.on_binary(ctx),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                // Counted as 1000 whatever code the peer chose, so a peer cannot add series.
                self.count_close(1000, "peer");
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                log::warn!("oversized frame session={} user={}", self.id, self.user);
                self.metrics.frame_dropped(drop_reason::TOO_BIG);
                self.close(ctx, 1009, "too_big", "message too big")
            }
            Err(ProtocolError::Io(e)) => {
                // The connection failed or ended mid-frame: nobody reads a close frame now.
                log::debug!("connection lost session={}: {e}", self.id);
                self.count_close(ABNORMAL_CLOSURE, "dropped");
                self.close(ctx, 1002, "protocol_error", "protocol error")
            }
            Err(e) => {
                log::warn!("protocol error session={}: {e}", self.id);
                self.close(ctx, 1002, "protocol_error", "protocol error")
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The peer's side of the stream ended (TCP closed without a close frame).
        ctx.stop();
    }
}

/// The code counted for a session that ended without a close frame (never sent on the wire).
const ABNORMAL_CLOSURE: u16 = 1006;

/// The `pong` frame, encoded once per process.
pub(crate) fn pong_frame() -> bytestring::ByteString {
    use std::sync::OnceLock;
    static PONG: OnceLock<bytestring::ByteString> = OnceLock::new();
    PONG.get_or_init(|| ServerMessage::Pong.encode()).clone()
}
