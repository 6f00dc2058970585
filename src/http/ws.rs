//! The WebSocket upgrade endpoints: `/ws/{room_id}/{user_id}` and `/ws?user_id=NAME`.
//!
//! Names are checked before the upgrade (HTTP 400 with a JSON body); a WebSocket version other
//! than 13 is answered 426 with `Sec-WebSocket-Version: 13`. The session actor is created with
//! the upgrade, then admitted by `ChatServer` (`Connect`); a refusal (connection limit,
//! shutdown) turns into HTTP 503 instead of the upgrade, and the unstarted actor is dropped
//! with the response, never counted as a session.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::conn::ConnFd;
use crate::ids::{NAME_RULE, RoomId, Seq, SessionId, UserId};
use crate::server::messages::{Connect, SessionKind};
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
    let target = Some((room, since));
    start_session(req, payload, &state, user, SessionKind::Chat, target).await
}

#[derive(Deserialize)]
pub struct SinceQuery {
    since_seq: Option<u64>,
}

#[derive(Deserialize)]
pub struct SocketQuery {
    user_id: Option<String>,
}

pub async fn multi_socket(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<SocketQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let user = query
        .user_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing_user", "the query needs user_id=NAME"))?;
    let user = parse_user(user)?;
    start_session(req, payload, &state, user, SessionKind::Chat, None).await
}

/// `GET /notifications/{user_id}`: the user's notification socket.
pub async fn notification_socket(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&path.into_inner())?;
    start_session(req, payload, &state, user, SessionKind::Notifications, None).await
}

pub fn parse_user(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s)
        .ok_or_else(|| ApiError::bad_request("invalid_user", format!("user_id {NAME_RULE}")))
}

async fn start_session(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    user: UserId,
    kind: SessionKind,
    target: Option<(RoomId, Option<Seq>)>,
) -> Result<HttpResponse, ApiError> {
    let (room, since) = target.unzip();
    let since = since.flatten();
    let id = SessionId::next();
    let conn = req.conn_data::<ConnFd>().cloned();
    let session = ChatSession::new(
        id,
        user.clone(),
        kind,
        room.clone(),
        conn.clone(),
        state.server.clone(),
        Arc::clone(&state.config),
        Arc::clone(&state.metrics),
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
        Err(refused) => Err(ApiError::Unavailable(refused.to_string())),
    }
}
