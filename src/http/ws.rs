//! The WebSocket upgrade endpoints: `/ws/{room_id}/{user_id}`, `/ws?user_id=NAME` and
//! `/notifications/{user_id}`.
//!
//! Before the upgrade, in this order: names are checked (HTTP 400 with a JSON body); the
//! socket proves who it is ([`identify`]: its token, from `?token=` or a
//! `roomcast.token.<JWT>` WebSocket protocol, checked by [`crate::auth`]; 401 when missing
//! or refused, 403 when its `sub` is not the user the URL names); the room of
//! `/ws/{room}/{user}` must be one its grants open (403 `forbidden`). A WebSocket version
//! other than 13 is answered 426 with `Sec-WebSocket-Version: 13`. The session actor is
//! created with the upgrade, then admitted by `ChatServer` (`Connect`); a refusal
//! (connection limit, shutdown) turns into HTTP 503 instead of the upgrade, and the
//! unstarted actor is dropped with the response, never counted as a session.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::{self, AuthError, Credentials};
use crate::conn::ConnFd;
use crate::ids::{NAME_RULE, RoomId, Seq, SessionId, UserId};
use crate::server::messages::{Connect, Refused, SessionKind};
use crate::session::{self, ChatSession, UpgradeError};

pub async fn room_socket(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (room, user) = path.into_inner();
    let room = RoomId::parse(&room)
        .ok_or_else(|| ApiError::bad_request("invalid_room", format!("room_id {NAME_RULE}")))?;
    let user = parse_user(&user)?;
    let since = web::Query::<SinceQuery>::from_query(req.query_string())
        .map_err(|_| {
            ApiError::bad_request("invalid_query", "since_seq must be a non-negative integer")
        })?
        .since_seq
        .map(Seq);
    let credentials = identify(&req, &state, Some(user))?;
    // The socket is opened to be in this room: one its grants do not open is refused here.
    if !state.identity.access(&credentials.grants, &room).may_join() {
        return Err(ApiError::Forbidden(forbidden_room(&state, &room)));
    }
    let target = Some((room, since));
    start_session(req, payload, &state, credentials, SessionKind::Chat, target).await
}

/// Why joining `room` is refused, for people.
fn forbidden_room(state: &AppState, room: &RoomId) -> String {
    match state.identity.is_reserved(room) {
        true => format!("room '{room}' is reserved: joining it needs a grant in your token"),
        false => format!("your token does not grant room '{room}'"),
    }
}

#[derive(Deserialize)]
pub struct SinceQuery {
    since_seq: Option<u64>,
}

#[derive(Deserialize)]
pub struct SocketQuery {
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

pub async fn multi_socket(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<SocketQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let named = query.user_id.as_deref().map(parse_user).transpose()?;
    // In development mode a socket with no token must name its user; with a token, its
    // `sub` is the user.
    if named.is_none() && state.identity.is_development() && token(&req)?.is_none() {
        return Err(ApiError::bad_request(
            "missing_user",
            "the query needs user_id=NAME (or token=JWT)",
        ));
    }
    let credentials = identify(&req, &state, named)?;
    start_session(req, payload, &state, credentials, SessionKind::Chat, None).await
}

/// `GET /notifications/{user_id}`: the user's notification socket.
pub async fn notification_socket(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&path.into_inner())?;
    // Only the user's own token opens their inbox.
    let credentials = identify(&req, &state, Some(user))?;
    start_session(
        req,
        payload,
        &state,
        credentials,
        SessionKind::Notifications,
        None,
    )
    .await
}

pub fn parse_user(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s)
        .ok_or_else(|| ApiError::bad_request("invalid_user", format!("user_id {NAME_RULE}")))
}

/// Who the socket is: its token's credentials, or, in development mode without a token,
/// the user the URL names (`named`). See [`auth::Identity::authenticate`].
fn identify(
    req: &HttpRequest,
    state: &AppState,
    named: Option<UserId>,
) -> Result<Credentials, ApiError> {
    let token = token(req)?;
    let credentials = state.identity.authenticate(token.as_deref(), named);
    if let Err(e) = &credentials {
        log::warn!(
            "socket refused path={} peer={:?} code={}: {e}",
            req.path(),
            req.peer_addr(),
            e.code()
        );
    }
    Ok(credentials?)
}

/// The token the request carries, in `?token=` or as a `roomcast.token.<JWT>` WebSocket
/// protocol (for browsers, which cannot set headers and should not put tokens in URLs).
/// Given more than once, it is refused: which one was meant is not ours to guess.
fn token(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let lines = req
        .headers()
        .get_all(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok());
    let offer = auth::protocol_offer(lines);
    let mut given: Vec<String> = offer.tokens.into_iter().map(str::to_owned).collect();
    given.extend(query.into_inner().token);
    if given.len() > 1 {
        return Err(AuthError::Invalid(
            "the token was given more than once (in ?token= or the WebSocket protocols)".into(),
        )
        .into());
    }
    Ok(given.pop())
}

async fn start_session(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    credentials: Credentials,
    kind: SessionKind,
    target: Option<(RoomId, Option<Seq>)>,
) -> Result<HttpResponse, ApiError> {
    let (room, since) = target.unzip();
    let since = since.flatten();
    let id = SessionId::next();
    let conn = req.conn_data::<ConnFd>().cloned();
    let user = credentials.user.clone();
    let session = ChatSession::new(
        id,
        kind,
        room.clone(),
        conn.clone(),
        state.server.clone(),
        Arc::clone(&state.config),
        Arc::clone(&state.metrics),
        session::Identified {
            credentials,
            identity: Arc::clone(&state.identity),
        },
    );
    let backlog = session.backlog();
    let upgraded = session::upgrade(session, &req, payload, state.config.max_frame_bytes).map_err(
        |e| match e {
            UpgradeError::UnsupportedVersion(_) => ApiError::UpgradeRequired(e.to_string()),
            UpgradeError::NotWebSocket(e) => ApiError::bad_request("not_websocket", e),
        },
    )?;
    let admitted = state
        .server
        .send(Connect {
            session: id,
            user: user.clone(),
            kind,
            addr: upgraded.addr.clone().recipient(),
            backlog,
            conn,
            room,
            since,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match admitted {
        Ok(()) => {
            log::debug!("session open session={id} user={user}");
            Ok(upgraded.admit())
        }
        // Dropping `upgraded` drops the session unstarted: it never counts as a session.
        Err(Refused::ShuttingDown) => Err(ApiError::ShuttingDown),
        Err(refused @ Refused::Full) => Err(ApiError::Unavailable(refused.to_string())),
    }
}
