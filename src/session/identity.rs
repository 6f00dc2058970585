//! What a session knows of who it is: its user, the rooms its token grants, and when the
//! token lapses.
//!
//! The session checks every `join`, `chat` and `typing` (and `get_users`, `history`) against
//! its grants before anything reaches `ChatServer`, which therefore never sees a request a
//! token does not allow, and knows nothing of tokens. A refused request is answered with a
//! `forbidden` error frame; the socket goes on.
//!
//! A socket opened with a token is closed with 4004 (`token_expired`) when the token lapses
//! (its `exp` plus the leeway): a timer started with the session, and started again by each
//! accepted `refresh`, whose token must be valid and for the same user. A refused `refresh`
//! is answered with an `error` frame (`token_invalid`, `token_expired`,
//! `token_user_mismatch`) and changes nothing: the socket lapses when its token does.

use std::sync::Arc;
use std::time::SystemTime;

use actix::{AsyncContext, SpawnHandle};

use super::{ChatSession, Ctx};
use crate::auth::{Access, AuthError, Credentials, Grants, Identity};
use crate::ids::RoomId;
use crate::metrics::drop_reason;
use crate::protocol::{ErrorCode, ServerMessage, close_code};
use crate::server::messages::Command;

/// Who a new session is, as its upgrade established, and the server's [`Identity`] that
/// checks its later `refresh` tokens.
pub struct Identified {
    pub credentials: Credentials,
    pub identity: Arc<Identity>,
}

/// A session's identity: what its token grants, and its lapse.
pub(super) struct SessionAuth {
    identity: Arc<Identity>,
    /// The rooms its newest token grants (none claimed: every room not reserved).
    grants: Grants,
    /// Its newest token's `exp` (Unix seconds); `None`: a development socket that named
    /// its user, which never lapses.
    expires_at: Option<u64>,
    /// The timer that closes the socket when its token lapses.
    lapse: Option<SpawnHandle>,
}

impl SessionAuth {
    pub(super) fn new(identified: Identified) -> (crate::ids::UserId, SessionAuth) {
        let Identified {
            credentials,
            identity,
        } = identified;
        let state = SessionAuth {
            identity,
            grants: credentials.grants,
            expires_at: credentials.expires_at,
            lapse: None,
        };
        (credentials.user, state)
    }
}

/// A request the socket's grants do not allow.
pub(super) struct Denied {
    room: RoomId,
    client_msg_id: Option<String>,
    message: String,
}

impl ChatSession {
    /// (Re)starts the timer that closes the socket when its token lapses.
    pub(super) fn schedule_lapse(&mut self, ctx: &mut Ctx) {
        if let Some(timer) = self.auth.lapse.take() {
            ctx.cancel_future(timer);
        }
        let Some(expires_at) = self.auth.expires_at else {
            return;
        };
        let after = self.auth.identity.lapses_in(expires_at, SystemTime::now());
        self.auth.lapse = Some(ctx.run_later(after, |act, ctx| act.token_lapsed(ctx)));
    }

    fn token_lapsed(&mut self, ctx: &mut Ctx) {
        log::info!("token expired session={} user={}", self.id, self.user);
        self.close(
            ctx,
            close_code::TOKEN_EXPIRED,
            "token_expired",
            "token expired",
        );
    }

    /// `{"type":"refresh","token":".."}`: a fresh token for the same user extends the
    /// socket's life (and its grants become the new token's); answered with `refreshed`.
    pub(super) fn on_refresh(&mut self, token: &str, ctx: &mut Ctx) {
        let checked = self
            .auth
            .identity
            .authenticate(Some(token), Some(self.user.clone()));
        let credentials = match checked {
            Ok(credentials) => credentials,
            Err(e) => return self.refuse_refresh(e, ctx),
        };
        let Some(expires_at) = credentials.expires_at else {
            // `authenticate` with a token always reads its `exp`.
            return self.refuse_refresh(AuthError::Invalid("no `exp`".into()), ctx);
        };
        log::debug!(
            "token refreshed session={} user={} expires_at={expires_at}",
            self.id,
            self.user
        );
        self.auth.grants = credentials.grants;
        self.auth.expires_at = Some(expires_at);
        self.schedule_lapse(ctx);
        self.write(ctx, ServerMessage::Refreshed { expires_at }.encode());
    }

    fn refuse_refresh(&mut self, e: AuthError, ctx: &mut Ctx) {
        let message =
            format!("refresh refused: {e}; the socket still closes when its token lapses");
        self.refuse(ctx, e.frame_code(), &message);
    }

    /// Whether the socket's grants allow `command`: `join` needs access to the room (as do
    /// `get_users` and `history`), `chat` and `typing` full access (not read-only).
    pub(super) fn check_grants(&self, command: &Command) -> Result<(), Denied> {
        let (room, post, client_msg_id) = match command {
            Command::Join { room, .. }
            | Command::GetUsers { room }
            | Command::History { room, .. } => (room, false, None),
            Command::Chat {
                room,
                client_msg_id,
                ..
            } => (room, true, client_msg_id.as_ref()),
            Command::Typing { room, .. } => (room, true, None),
            Command::Leave { .. } | Command::Private { .. } => return Ok(()),
        };
        let access = self.auth.identity.access(&self.auth.grants, room);
        let message = match access {
            Access::Full => return Ok(()),
            Access::ReadOnly if !post => return Ok(()),
            Access::ReadOnly => format!("room '{room}' is read-only for you"),
            Access::None if self.auth.identity.is_reserved(room) => {
                format!("room '{room}' is reserved: it needs a grant in your token")
            }
            Access::None => format!("your token does not grant room '{room}'"),
        };
        Err(Denied {
            room: room.clone(),
            client_msg_id: client_msg_id.cloned(),
            message,
        })
    }

    /// Answers a request the grants refuse with a `forbidden` error frame (with the room,
    /// and the chat's `client_msg_id`); the socket goes on.
    pub(super) fn forbid(&mut self, denied: Denied, ctx: &mut Ctx) {
        self.metrics.frame_dropped(drop_reason::INVALID);
        self.log_bad_frame(ErrorCode::Forbidden.as_str(), &denied.message);
        let frame = ServerMessage::Error {
            code: ErrorCode::Forbidden,
            message: &denied.message,
            room_id: Some(&denied.room),
            client_msg_id: denied.client_msg_id.as_deref(),
            to_user: None,
        }
        .encode();
        self.write(ctx, frame);
    }
}
