//! The WebSocket session actor: one per connection. The only module that knows
//! actix-web-actors.
//!
//! A session reads its connection's frames itself ([`inbound`]: sizes checked from the frame
//! header, fragments reassembled, UTF-8 checked), turns messages into [`ClientMessage`]s,
//! answers what concerns only itself (`ping`, bad input, rate limiting, oversize and binary
//! frames, heartbeats) and sends the rest to `ChatServer` as a typed [`ClientRequest`]. It
//! writes whatever `ChatServer` sends it ([`Outbound`]) to the socket as is: frames arrive
//! encoded, and are never re-serialized here.
//!
//! It reports into the server's [`Metrics`]: itself (opened, closed and why), the frames it
//! reads (by type) and writes, and the frames it refuses. What a client can make it repeat
//! is throttled ([`throttle`]): error frames for its own refusals (`rate_limited`,
//! `overloaded`) and warnings about bad frames.
//!
//! Its mailbox is bounded (`max_pending`): when the client stops reading, actix-web stops
//! polling this actor, the mailbox fills, and `ChatServer` treats the session as a slow
//! consumer.
//!
//! Its user is its token's `sub` (or, in development mode, the name its URL gave): its
//! grants are checked here, before anything reaches `ChatServer`, and it closes with 4004
//! when its token lapses without a `refresh` ([`identity`]).

mod identity;
mod inbound;
mod throttle;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::header;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};

use crate::config::Config;
use crate::conn::ConnFd;
use crate::ids::{RoomId, SessionId, UserId};
use crate::metrics::{Metrics, drop_reason};
use crate::protocol::{
    ClientMessage, DecodeError, ErrorCode, ServerMessage, close_code, decode, error_context,
    error_frame,
};
use crate::ratelimit::TokenBucket;
use crate::server::ChatServer;
use crate::server::messages::{
    Backlog, ClientRequest, Command, Disconnect, InFlight, Outbound, SessionKind,
};
pub use identity::Identified;
use identity::SessionAuth;
use inbound::{Frames, Inbound, InboundError};
use throttle::{Throttle, Verdict};

/// A session's actor context.
type Ctx = ws::WebsocketContext<ChatSession>;

/// The one WebSocket version roomcast speaks (RFC 6455).
const WEBSOCKET_VERSION: &str = "13";

/// At most one error frame per this interval answers a socket's refused messages of one kind
/// (`rate_limited`, `overloaded`); the next says how many were dropped in between.
const REFUSAL_ERROR_INTERVAL: Duration = Duration::from_millis(100);

/// At most one warning per this interval about a socket's bad frames; the rest go to `debug`.
const BAD_FRAME_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a request could not be upgraded.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Not a valid WebSocket handshake.
    #[error("{0}")]
    NotWebSocket(String),
    /// A `Sec-WebSocket-Version` other than 13: answered 426 with the version roomcast speaks.
    #[error("unsupported WebSocket version {0:?}; this server speaks version 13")]
    UnsupportedVersion(String),
}

/// A session started on an upgraded connection, not yet admitted.
pub struct Upgraded {
    pub addr: Addr<ChatSession>,
    response: actix_web::HttpResponse,
    admitted: Rc<Cell<bool>>,
}

impl Upgraded {
    /// `ChatServer` admitted the session: the `101` response that runs it.
    pub fn admit(self) -> actix_web::HttpResponse {
        self.admitted.set(true);
        self.response
    }
}

// Dropping an `Upgraded` (a refused session) drops its response and the actor with it; the
// actor then stops without counting itself open or closed, and without `Disconnect`.

/// Answers the WebSocket handshake in `req` and creates `session` on the connection, reading
/// its frames within `max_frame_bytes`. The session runs once [`Upgraded::admit`]'s response
/// is sent.
pub fn upgrade(
    mut session: ChatSession,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    max_frame_bytes: usize,
) -> Result<Upgraded, UpgradeError> {
    let version = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // `roomcast.v1` is selected whenever it is offered (a browser fails a connection whose
    // offered protocols go unanswered); a `roomcast.token.<JWT>` offer never is.
    let mut response = match ws::handshake_with_protocols(req, &[crate::auth::SUBPROTOCOL]) {
        Err(ws::HandshakeError::UnsupportedVersion) => {
            return Err(UpgradeError::UnsupportedVersion(
                version.unwrap_or_default(),
            ));
        }
        Err(e) => return Err(UpgradeError::NotWebSocket(e.to_string())),
        // actix-web-actors also takes the drafts' versions 7 and 8.
        Ok(_) if version.as_deref() != Some(WEBSOCKET_VERSION) => {
            return Err(UpgradeError::UnsupportedVersion(
                version.unwrap_or_default(),
            ));
        }
        Ok(response) => response,
    };
    // actix-web-actors' own reader would buffer what the connection sends before checking
    // sizes (see `inbound`): it gets no bytes, and the session reads them itself.
    session.reader = Some(Box::new(Frames::new(payload, max_frame_bytes)));
    let admitted = Rc::clone(&session.admitted);
    let (addr, body) =
        ws::WebsocketContext::create_with_addr(session, futures_util::stream::empty());
    Ok(Upgraded {
        addr,
        response: response.streaming(body),
        admitted,
    })
}

pub struct ChatSession {
    id: SessionId,
    /// Who the socket is: its token's `sub`, or the name a development socket gave.
    user: UserId,
    /// What its token grants, and when it lapses.
    auth: SessionAuth,
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
    /// The connection's frames, until `started` reads them. Boxed: the session lives as long
    /// as its socket, and this is empty for all but its first moment.
    reader: Option<Box<Frames<actix_web::web::Payload>>>,
    /// The connection, to learn whether `ChatServer` cut it.
    conn: Option<ConnFd>,
    /// Set when `ChatServer` admitted the session; a refused one never counts as a session.
    admitted: Rc<Cell<bool>>,
    /// Error frames for messages refused by the rate limit, and for `max_in_flight`.
    rate_limited_errors: Throttle,
    overloaded_errors: Throttle,
    /// Warnings about bad frames.
    bad_frame_log: Throttle,
    /// Requests sent to `ChatServer` and not yet handled there. Bounded by `max_in_flight`,
    /// so one socket cannot pile work into `ChatServer`'s mailbox faster than it is done.
    in_flight: InFlight,
    /// Frames `ChatServer` handed over that this session has not written yet.
    backlog: Backlog,
    metrics: Arc<Metrics>,
    /// Whether this session's end was counted (`socket_closed`): once per session.
    close_counted: bool,
}

impl ChatSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        kind: SessionKind,
        default_room: Option<RoomId>,
        conn: Option<ConnFd>,
        server: Addr<ChatServer>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        identified: Identified,
    ) -> Self {
        let now = Instant::now();
        let (user, auth) = SessionAuth::new(identified);
        ChatSession {
            id,
            user,
            auth,
            kind,
            default_room,
            server,
            bucket: TokenBucket::new(config.rate_per_sec, config.rate_burst, now),
            config,
            last_heard: now,
            strikes: 0,
            reader: None,
            conn,
            admitted: Rc::default(),
            rate_limited_errors: Throttle::new(REFUSAL_ERROR_INTERVAL),
            overloaded_errors: Throttle::new(REFUSAL_ERROR_INTERVAL),
            bad_frame_log: Throttle::new(BAD_FRAME_LOG_INTERVAL),
            in_flight: InFlight::default(),
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

    /// Counts the end of a session whose connection ended without a close frame: the slow
    /// consumer `ChatServer` cut (4001), or a connection that went (1006).
    fn count_lost_connection(&mut self) {
        match self.conn.as_ref().is_some_and(ConnFd::was_cut) {
            true => self.count_close(close_code::SLOW_CONSUMER, "slow_consumer"),
            false => self.count_close(ABNORMAL_CLOSURE, "dropped"),
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
    fn refuse(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, message: &str) {
        self.refuse_about(ctx, code, message, (None, None));
    }

    /// Refuses a frame that did not make a request, naming what it still says about itself
    /// ([`error_context`]).
    fn refuse_undecoded(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        text: &str,
        e: DecodeError,
    ) {
        let (room, id) = error_context(text, self.default_room.as_ref());
        let about = (room.as_ref(), id.as_deref());
        self.refuse_about(ctx, e.code(), &e.to_string(), about);
    }

    /// [`Self::refuse`], naming the room and `client_msg_id` the frame was about.
    fn refuse_about(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: ErrorCode,
        message: &str,
        (room, client_msg_id): (Option<&RoomId>, Option<&str>),
    ) {
        self.metrics.frame_dropped(drop_reason::INVALID);
        self.log_bad_frame(code.as_str(), message);
        let frame = ServerMessage::Error {
            code,
            message,
            room_id: room,
            client_msg_id,
            to_user: None,
        };
        self.write(ctx, frame.encode());
    }

    /// Logs a bad frame: a warning for the first, then at most one per
    /// `BAD_FRAME_LOG_INTERVAL` with the count since the last; the others at `debug`.
    fn log_bad_frame(&mut self, code: &str, what: &str) {
        let (id, user) = (self.id, &self.user);
        match self.bad_frame_log.event(Instant::now()) {
            Verdict::Pass { held: 0 } => {
                log::warn!("bad frame session={id} user={user} code={code}: {what}")
            }
            Verdict::Pass { held } => log::warn!(
                "bad frame session={id} user={user} code={code}: {what} \
                 ({held} more since the last warning)"
            ),
            Verdict::Hold { .. } => log::debug!("bad frame session={id} code={code}: {what}"),
        }
    }

    fn errors_for(&mut self, refusal: Refusal) -> &mut Throttle {
        match refusal {
            Refusal::RateLimited => &mut self.rate_limited_errors,
            Refusal::Overloaded => &mut self.overloaded_errors,
        }
    }

    /// Answers a message the session refused itself. At most one error frame per
    /// `REFUSAL_ERROR_INTERVAL` (per kind of refusal) goes out, saying how many messages were
    /// dropped since the last; refusals in between are reported by one frame when the
    /// interval ends. Every refusal is counted in the metrics by the caller.
    fn answer_refusal(&mut self, refusal: Refusal, ctx: &mut ws::WebsocketContext<Self>) {
        let now = Instant::now();
        match self.errors_for(refusal).event(now) {
            Verdict::Pass { held: 0 } => {
                self.send_error(ctx, refusal.code(), &refusal.message(None))
            }
            Verdict::Pass { held } => {
                self.send_error(ctx, refusal.code(), &refusal.message(Some(held + 1)))
            }
            Verdict::Hold { first: true, until } => {
                ctx.run_later(until.saturating_duration_since(now), move |act, ctx| {
                    act.report_refusals(refusal, ctx)
                });
            }
            Verdict::Hold { first: false, .. } => {}
        }
    }

    /// Sends the error frame for the refusals held back, if any.
    fn report_refusals(&mut self, refusal: Refusal, ctx: &mut ws::WebsocketContext<Self>) {
        let held = self.errors_for(refusal).flush(Instant::now());
        if held > 0 {
            self.send_error(ctx, refusal.code(), &refusal.message(Some(held)));
        }
    }

    /// One complete text message from the client.
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.bucket.try_take(Instant::now()) {
            self.metrics.rate_limited();
            self.metrics.frame_dropped(drop_reason::RATE_LIMITED);
            self.strikes += 1;
            if self.strikes > self.config.rate_strikes {
                log::warn!("flood closed session={} user={}", self.id, self.user);
                self.report_refusals(Refusal::RateLimited, ctx);
                return self.close(ctx, 1008, "rate_limited", "rate limit exceeded");
            }
            return self.answer_refusal(Refusal::RateLimited, ctx);
        }
        self.strikes = 0;
        if self.kind == SessionKind::Notifications {
            return self.on_notification_socket_text(text, ctx);
        }

        let msg = match decode(text, self.config.decode_limits()) {
            Ok(msg) => msg,
            Err(e) => {
                self.metrics.frame_received("invalid");
                return self.refuse_undecoded(ctx, text, e);
            }
        };
        log::debug!("frame session={} type={}", self.id, msg.kind());
        self.metrics.frame_received(msg.kind());
        if let ClientMessage::Refresh { token } = &msg {
            return self.on_refresh(token, ctx);
        }
        let is_ping = matches!(msg, ClientMessage::Ping);
        let command = match self.command_for(msg) {
            Ok(Some(command)) => command,
            Ok(None) if is_ping => return self.write(ctx, pong_frame()),
            Ok(None) => return,
            Err(e) => return self.refuse_undecoded(ctx, text, e),
        };
        if let Err(denied) = self.check_grants(&command) {
            return self.forbid(denied, ctx);
        }
        if self.in_flight.count() >= self.config.max_in_flight {
            self.metrics.frame_dropped(drop_reason::OVERLOADED);
            return self.answer_refusal(Refusal::Overloaded, ctx);
        }
        // `do_send`, not `send`: no answer comes back (the ticket counts the request down),
        // and actix never skips it, whereas it skips a `send` whose answer nobody awaits any
        // more (a chat accepted just before the session stopped, then lost).
        self.server.do_send(ClientRequest {
            session: self.id,
            command,
            ticket: self.in_flight.ticket(),
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
            Ok(ClientMessage::Refresh { token }) => self.on_refresh(&token, ctx),
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
    /// `ping`, `pong` and `refresh`, which the session handles itself.
    fn command_for(&self, msg: ClientMessage) -> Result<Option<Command>, DecodeError> {
        let room = |r: Option<RoomId>| {
            r.or_else(|| self.default_room.clone())
                .ok_or(DecodeError::MissingField("room_id"))
        };
        Ok(Some(match msg {
            ClientMessage::Ping | ClientMessage::Pong | ClientMessage::Refresh { .. } => {
                return Ok(None);
            }
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
        if !self.admitted.get() {
            // Refused: started only to be stopped, as its response is dropped.
            return ctx.stop();
        }
        self.metrics.session_opened(self.kind);
        ctx.set_mailbox_capacity(self.config.max_pending);
        if let Some(reader) = self.reader.take() {
            ctx.add_stream(*reader);
        }
        ctx.run_interval(self.config.heartbeat_interval(), |act, ctx| {
            act.heartbeat(ctx)
        });
        self.schedule_lapse(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.admitted.get() {
            return;
        }
        // The one place a session says it is gone.
        self.server.do_send(Disconnect { session: self.id });
        self.count_lost_connection();
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
                    close_code::TOO_MANY_SOCKETS => "too_many_sockets",
                    _ => "server",
                };
                self.close(ctx, code, label, reason)
            }
        }
    }
}

impl StreamHandler<Result<Inbound, InboundError>> for ChatSession {
    fn handle(&mut self, item: Result<Inbound, InboundError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Inbound::Text(text)) => self.on_text(&text, ctx),
            Ok(Inbound::Binary) => self.on_binary(ctx),
            Ok(Inbound::Ping(payload)) => ctx.pong(&payload),
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close(reason)) => {
                // Counted as 1000 whatever code the peer chose, so a peer cannot add series.
                self.count_close(1000, "peer");
                ctx.close(reason);
                ctx.stop();
            }
            Err(e @ InboundError::TooBig { .. }) => {
                log::warn!(
                    "oversized message session={} user={}: {e}",
                    self.id,
                    self.user
                );
                self.metrics.frame_dropped(drop_reason::TOO_BIG);
                self.close(ctx, 1009, "too_big", "message too big")
            }
            Err(e @ InboundError::InvalidUtf8) => {
                self.metrics.frame_received("invalid");
                self.metrics.frame_dropped(drop_reason::INVALID);
                self.log_bad_frame("invalid_utf8", &e.to_string());
                self.close(ctx, 1007, "invalid_utf8", "text message is not valid UTF-8")
            }
            Err(InboundError::Protocol(e)) => {
                self.metrics.frame_received("invalid");
                self.metrics.frame_dropped(drop_reason::INVALID);
                self.log_bad_frame("protocol_error", &e.to_string());
                self.close(ctx, 1002, "protocol_error", "protocol error")
            }
            Err(InboundError::Lost(e)) => {
                // The connection failed or ended mid-frame: nobody reads a close frame now.
                log::debug!("connection lost session={}: {e}", self.id);
                self.count_lost_connection();
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The peer's side of the stream ended (TCP closed without a close frame).
        ctx.stop();
    }
}

/// actix-web-actors' reader, which the context requires. It is given no bytes (the session
/// reads the connection itself, see `upgrade`), so nothing arrives here, and its end at once
/// must not stop the session.
impl StreamHandler<Result<ws::Message, ProtocolError>> for ChatSession {
    fn handle(&mut self, _: Result<ws::Message, ProtocolError>, _: &mut Self::Context) {}

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// A message the session refuses itself, answered with throttled error frames.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Past the rate limit.
    RateLimited,
    /// Past `max_in_flight`.
    Overloaded,
}

impl Refusal {
    fn code(self) -> ErrorCode {
        match self {
            Refusal::RateLimited => ErrorCode::RateLimited,
            Refusal::Overloaded => ErrorCode::Overloaded,
        }
    }

    /// The error message for the one message just refused (`None`), or for a count of them
    /// since the last error frame. A count is always said as a count, one included, so a
    /// summary reads the same whatever it holds.
    fn message(self, dropped: Option<u64>) -> String {
        let why = match self {
            Refusal::RateLimited => "rate limit exceeded",
            Refusal::Overloaded => "too many requests waiting for the server",
        };
        match dropped {
            None => format!("{why}; the message was dropped"),
            Some(n) => format!("{why}; {n} messages dropped since the last error"),
        }
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
