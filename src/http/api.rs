//! The JSON HTTP API under `/api`: notifications to users, lists or everyone; rooms, their
//! members and history; posting into a room as a backend; disconnecting a user.
//!
//! Every route is behind the access rule of [`super::access`], applied once to the whole
//! scope ([`require_access`]), before any body is read. Bodies are JSON objects read with the
//! sockets' field rules ([`Fields`]), so a field breaks a rule with the same code over HTTP as
//! over a socket. Extractor failures (body, query, path) become [`ApiError`]s through the
//! handlers set in [`mount`]. `docs/API.md` is the contract.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::notify::{limit_text, notification_type, push};
use super::ws::parse_user;
use super::{ApiError, AppState, access};
use crate::ids::{NAME_RULE, RoomId, Seq, UserId};
use crate::protocol::{DecodeError, Fields, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX, Notification};
use crate::server::messages::{
    Audience, DisconnectUser, GetRoom, ListRooms, PostMessage, Posted, ReadHistory, RoomDetail,
    RoomSummary,
};

/// Most users one notification may name in `user_ids`.
pub const MAX_USER_IDS: usize = 1000;

/// Who posts when a `POST /api/rooms/{room_id}/messages` names no `user_id`.
const SYSTEM_USER: &str = "system";

/// The reason sent with close code 4003.
const DISCONNECT_REASON: &str = "disconnected by operator";

/// Mounts the `/api` scope: its routes, the access rule, and extractor errors as JSON.
/// `body_limit` caps request bodies, in bytes.
pub fn mount(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.service(
        web::scope("/api")
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(|e, _| ApiError::from_json(&e).into()),
            )
            .app_data(
                web::QueryConfig::default().error_handler(|e, _| ApiError::from_query(&e).into()),
            )
            .app_data(
                web::PathConfig::default().error_handler(|e, _| ApiError::from_path(&e).into()),
            )
            .wrap(from_fn(require_access))
            .route("/notifications", web::post().to(notifications))
            .route("/rooms", web::get().to(list_rooms))
            .route("/rooms/{room_id}", web::get().to(get_room))
            .route("/rooms/{room_id}/messages", web::post().to(post_message))
            .route("/rooms/{room_id}/history", web::get().to(history))
            .route("/dev-token", web::post().to(super::dev_token::dev_token))
            .route("/users/{user_id}/disconnect", web::post().to(disconnect)),
    );
}

/// The access rule, for every route of the scope (unknown paths and methods included). A
/// refusal is a response, not an error, so whatever wraps the app sees its status.
async fn require_access(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<AppState>>() {
        Some(state) => access::check(req.request(), &state.config),
        None => Err(ApiError::Internal("no application state".into())),
    };
    match allowed {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refused) => Ok(req.error_response(refused).map_into_right_body()),
    }
}

/// A JSON body that must be an object.
fn object(body: web::Json<Value>) -> Result<Map<String, Value>, ApiError> {
    match body.into_inner() {
        Value::Object(obj) => Ok(obj),
        _ => Err(DecodeError::NotAnObject.into()),
    }
}

fn parse_room(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s)
        .ok_or_else(|| ApiError::bad_request("invalid_room", format!("room_id {NAME_RULE}")))
}

/// An optional string field: absent or `null` is `None`.
fn opt_string(f: &Fields, field: &'static str) -> Result<Option<String>, ApiError> {
    match f.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DecodeError::InvalidField {
            field,
            expected: "must be a string",
        }
        .into()),
    }
}

/// `user_id`, `user_ids` or `all: true`: exactly one. `all: false` counts as absent.
fn audience(f: &Fields) -> Result<Audience, ApiError> {
    let all = match f.get("all") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DecodeError::InvalidField {
                field: "all",
                expected: "must be true or false",
            }
            .into());
        }
    };
    let given = [f.get("user_id").is_some(), f.get("user_ids").is_some(), all];
    match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(ApiError::bad_request(
                "missing_field",
                "name the audience: `user_id`, `user_ids` or `\"all\": true`",
            ));
        }
        1 => {}
        _ => {
            return Err(ApiError::bad_request(
                "conflicting_fields",
                "give exactly one of `user_id`, `user_ids` and `\"all\": true`",
            ));
        }
    }
    if all {
        return Ok(Audience::Everyone);
    }
    if f.get("user_id").is_some() {
        return Ok(Audience::Users(vec![f.user("user_id")?]));
    }
    let list = match f.get("user_ids") {
        Some(Value::Array(list)) if (1..=MAX_USER_IDS).contains(&list.len()) => list,
        _ => {
            return Err(DecodeError::InvalidField {
                field: "user_ids",
                expected: "must be an array of 1 to 1000 user names",
            }
            .into());
        }
    };
    let mut users: Vec<UserId> = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let user = v.as_str().and_then(UserId::parse).ok_or_else(|| {
            ApiError::bad_request("invalid_user", format!("user_ids[{i}] {NAME_RULE}"))
        })?;
        if seen.insert(user.clone()) {
            users.push(user);
        }
    }
    Ok(Audience::Users(users))
}

/// `POST /api/notifications`.
async fn notifications(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let obj = object(body)?;
    let f = Fields(&obj);
    let to = audience(&f)?;
    let max = state.config.max_text_chars;
    let required = |field: &'static str| -> Result<String, ApiError> {
        let value = opt_string(&f, field)?.ok_or(DecodeError::MissingField(field))?;
        limit_text(field, value, max)
    };
    let title = required("title")?;
    let message = required("message")?;
    let notification_type = notification_type(opt_string(&f, "notification_type")?.as_deref())?;
    let data = match f.get("data") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            return Err(DecodeError::InvalidField {
                field: "data",
                expected: "must be a JSON object",
            }
            .into());
        }
    };

    let notification = Notification::new(title, message, notification_type, data);
    let (pushed, frame) = push(&state, to, &notification).await?;
    // The answer embeds the very bytes the sockets got.
    let notification: &RawValue = serde_json::from_str(&frame)
        .map_err(|e| ApiError::Internal(format!("notification frame: {e}")))?;
    Ok(HttpResponse::Ok().json(PushAnswer {
        sockets: pushed.sockets,
        users: pushed.reached.len(),
        reached: &pushed.reached,
        offline: &pushed.offline,
        stored: &pushed.stored,
        notification,
    }))
}

/// The answer to `POST /api/notifications`. (A struct, not `json!`: `json!` would turn the
/// raw frame back into a `Value`.)
#[derive(Serialize)]
struct PushAnswer<'a> {
    sockets: usize,
    users: usize,
    reached: &'a [UserId],
    offline: &'a [UserId],
    /// The offline users whose copy waits in their inbox for their next socket.
    stored: &'a [UserId],
    notification: &'a RawValue,
}

/// `GET /api/rooms`.
async fn list_rooms(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rooms = state.server.send(ListRooms).await??;
    let rooms: Vec<RoomBody> = rooms.iter().map(RoomBody::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "rooms": rooms })))
}

/// `GET /api/rooms/{room_id}`.
async fn get_room(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = parse_room(&path)?;
    match state.server.send(GetRoom { room: room.clone() }).await?? {
        Some(detail) => Ok(HttpResponse::Ok().json(RoomDetailBody::from(&detail))),
        None => Err(ApiError::UnknownRoom(room)),
    }
}

/// `POST /api/rooms/{room_id}/messages`.
async fn post_message(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let room = parse_room(&path)?;
    let obj = object(body)?;
    let f = Fields(&obj);
    let text = f.text("text", state.config.max_text_chars)?;
    let user = match f.get("user_id") {
        None => UserId::parse(SYSTEM_USER).expect("\"system\" follows the naming rule"),
        Some(_) => f.user("user_id")?,
    };
    let client_msg_id = f.client_msg_id()?;
    let posted = state
        .server
        .send(PostMessage {
            room,
            user: user.clone(),
            text,
            client_msg_id,
        })
        .await??;
    log::info!(
        "api post room={} user={user} seq={} duplicate={}",
        posted.room_id,
        posted.seq,
        posted.duplicate
    );
    let mut answer = if posted.duplicate {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(answer.json(PostedBody::from(&posted)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    before_seq: Option<u64>,
    limit: Option<u64>,
}

/// `GET /api/rooms/{room_id}/history?before_seq=&limit=`.
async fn history(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let room = parse_room(&path)?;
    let limit = match query.limit {
        None => HISTORY_PAGE_DEFAULT,
        Some(n) if (1..=HISTORY_PAGE_MAX as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be an integer from 1 to {HISTORY_PAGE_MAX}"),
            ));
        }
    };
    let before = match query.before_seq {
        None => None,
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "before_seq must be a positive integer",
            ));
        }
        Some(n) => Some(Seq(n)),
    };
    let page = state
        .server
        .send(ReadHistory {
            room,
            before,
            limit,
        })
        .await??;
    // Each stored frame is a chat object already: embed it as it is.
    let messages = page
        .messages
        .iter()
        .map(|frame| serde_json::from_str::<&RawValue>(frame))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("stored frame: {e}")))?;
    Ok(HttpResponse::Ok().json(HistoryAnswer {
        room_id: &page.room_id,
        messages,
        has_more: page.has_more,
    }))
}

/// One room of `GET /api/rooms` (docs/API.md).
#[derive(Serialize)]
struct RoomBody<'a> {
    room_id: &'a RoomId,
    members: usize,
    sockets: usize,
    last_seq: Seq,
}

impl<'a> From<&'a RoomSummary> for RoomBody<'a> {
    fn from(r: &'a RoomSummary) -> Self {
        RoomBody {
            room_id: &r.room_id,
            members: r.members,
            sockets: r.sockets,
            last_seq: r.last_seq,
        }
    }
}

/// The answer to `GET /api/rooms/{room_id}` (docs/API.md).
#[derive(Serialize)]
struct RoomDetailBody<'a> {
    room_id: &'a RoomId,
    members: &'a [UserId],
    sockets: usize,
    last_seq: Seq,
}

impl<'a> From<&'a RoomDetail> for RoomDetailBody<'a> {
    fn from(r: &'a RoomDetail) -> Self {
        RoomDetailBody {
            room_id: &r.room_id,
            members: &r.members,
            sockets: r.sockets,
            last_seq: r.last_seq,
        }
    }
}

/// The answer to `POST /api/rooms/{room_id}/messages` (docs/API.md).
#[derive(Serialize)]
struct PostedBody<'a> {
    room_id: &'a RoomId,
    message_id: &'a str,
    seq: Seq,
    timestamp: &'a str,
    duplicate: bool,
}

impl<'a> From<&'a Posted> for PostedBody<'a> {
    fn from(p: &'a Posted) -> Self {
        PostedBody {
            room_id: &p.room_id,
            message_id: &p.message_id,
            seq: p.seq,
            timestamp: &p.timestamp,
            duplicate: p.duplicate,
        }
    }
}

#[derive(Serialize)]
struct HistoryAnswer<'a> {
    room_id: &'a RoomId,
    messages: Vec<&'a RawValue>,
    has_more: bool,
}

/// `POST /api/users/{user_id}/disconnect`.
async fn disconnect(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = parse_user(&path)?;
    let closed = state
        .server
        .send(DisconnectUser {
            user: user.clone(),
            reason: DISCONNECT_REASON,
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "sockets_closed": closed })))
}

#[cfg(test)]
mod tests {
    //! The access rule as the `/api` scope applies it, for peers the integration tests cannot
    //! be (they connect from loopback): requests built with a chosen peer address.

    use actix_web::test;
    use serde_json::Value;

    use crate::config::Config;

    const REMOTE: &str = "192.0.2.7:40000";
    const LOCAL: &str = "127.0.0.1:40000";

    /// One request to a fresh app (the real routes, a real `ChatServer`); status and body.
    async fn call(api_key: Option<&str>, req: test::TestRequest) -> (u16, Value) {
        let mut config = Config::for_tests();
        config.api_key = api_key.map(Into::into);
        super::super::call_app(config, req).await
    }

    fn get(path: &str, peer: &str) -> test::TestRequest {
        test::TestRequest::get()
            .uri(path)
            .peer_addr(peer.parse().unwrap())
    }

    #[actix_web::test]
    async fn without_a_key_only_loopback_peers_are_served() {
        let (status, body) = call(None, get("/api/rooms", LOCAL)).await;
        assert_eq!((status, body), (200, serde_json::json!({"rooms": []})));

        for req in [
            get("/api/rooms", REMOTE),
            get("/api/rooms/lobby/history", REMOTE),
            get("/api/no-such-route", REMOTE),
            // Refused before the body is read: this malformed body is never looked at.
            test::TestRequest::post()
                .uri("/api/notifications")
                .peer_addr(REMOTE.parse().unwrap())
                .insert_header(("content-type", "application/json"))
                .set_payload("{nope"),
            test::TestRequest::post()
                .uri("/api/users/bob/disconnect")
                .peer_addr(REMOTE.parse().unwrap()),
        ] {
            let (status, body) = call(None, req).await;
            assert_eq!(status, 403, "{body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
        }
        // No peer address at all (not a TCP connection) is not loopback either.
        let (status, _) = call(None, test::TestRequest::get().uri("/api/rooms")).await;
        assert_eq!(status, 403);
    }

    #[actix_web::test]
    async fn with_a_key_any_peer_is_served_with_it() {
        let (status, body) = call(Some("k"), get("/api/rooms", REMOTE)).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &"unauthorized".into())
        );
        let (status, _) = call(Some("k"), get("/api/rooms", LOCAL)).await;
        assert_eq!(status, 401, "loopback needs the key too once one is set");
        let req = get("/api/rooms", REMOTE).insert_header(("authorization", "Bearer k"));
        let (status, body) = call(Some("k"), req).await;
        assert_eq!((status, body), (200, serde_json::json!({"rooms": []})));
    }
}
