//! The HTTP API's error type: every failure is a 4xx/5xx with a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};

use crate::ids::RoomId;
use crate::protocol::DecodeError;
use crate::server::messages::ApiFailure;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; `code` is stable, like the WebSocket error codes.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No or a wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// No API key is configured and the client is not on this machine.
    #[error("{0}")]
    Forbidden(String),
    /// A WebSocket handshake from a page whose origin `--allowed-origins` does not allow.
    #[error("{0}")]
    OriginForbidden(String),
    /// A WebSocket's token is missing or refused (401), or is for another user (403).
    #[error(transparent)]
    Token(#[from] crate::auth::AuthError),
    /// No such route, or no such thing.
    #[error("{0}")]
    NotFound(String),
    /// The room has no members and no history.
    #[error("no room '{0}'")]
    UnknownRoom(RoomId),
    /// The request body is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The server cannot take it now (connection limit).
    #[error("{0}")]
    Unavailable(String),
    /// Too many WebSocket upgrades from this client address (`--conn-rate-per-ip`).
    #[error("too many connections from this address; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The request's body did not arrive within `--request-timeout-ms`.
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    /// A WebSocket handshake with a version other than 13.
    #[error("{0}")]
    UpgradeRequired(String),
    /// The history store failed.
    #[error("the history store failed: {0}")]
    StoreUnavailable(String),
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Something on our side failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::OriginForbidden(_) => "origin_forbidden",
            ApiError::Token(e) => e.code(),
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownRoom(_) => "unknown_room",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UpgradeRequired(_) => "unsupported_version",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What a rejected JSON body becomes (`JsonConfig`'s error handler).
    pub fn from_json(e: &JsonPayloadError) -> Self {
        use actix_web::error::PayloadError;
        match e {
            JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::PayloadTooLarge(
                format!("the body is {length} bytes; the limit is {limit}"),
            ),
            JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(format!(
                "the body is larger than the limit of {limit} bytes"
            )),
            JsonPayloadError::Payload(PayloadError::Overflow) => {
                ApiError::PayloadTooLarge("the body is larger than the limit".into())
            }
            JsonPayloadError::Payload(e) => match super::body_timed_out(e) {
                Some(ms) => ApiError::RequestTimeout(ms),
                None => ApiError::bad_request("invalid_body", e.to_string()),
            },
            JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
                "send the body as `Content-Type: application/json`".into(),
            ),
            JsonPayloadError::Deserialize(e) => {
                ApiError::bad_request("invalid_json", format!("invalid JSON: {e}"))
            }
            other => ApiError::bad_request("invalid_body", other.to_string()),
        }
    }

    /// What a rejected query string becomes (`QueryConfig`'s error handler).
    pub fn from_query(e: &QueryPayloadError) -> Self {
        ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
    }

    /// What a rejected path segment becomes (`PathConfig`'s error handler).
    pub fn from_path(e: &PathError) -> Self {
        ApiError::bad_request("invalid_path", format!("invalid path: {e}"))
    }
}

/// A field of a JSON body that breaks the sockets' rules gets the sockets' code.
impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::bad_request(e.code().as_str(), e.to_string())
    }
}

impl From<ApiFailure> for ApiError {
    fn from(f: ApiFailure) -> Self {
        match f {
            ApiFailure::UnknownRoom(room) => ApiError::UnknownRoom(room),
            ApiFailure::Store(e) => ApiError::StoreUnavailable(e),
            ApiFailure::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

/// `ChatServer` did not answer: it has stopped (the process is shutting down) or dropped
/// the request.
impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        match e {
            actix::MailboxError::Closed => ApiError::ShuttingDown,
            actix::MailboxError::Timeout => ApiError::Internal(e.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::OriginForbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Token(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Token(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::UnknownRoom(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::Unavailable(_) | ApiError::StoreUnavailable(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::UpgradeRequired(_) = self {
            // RFC 6455 §4.4: name the versions the server speaks.
            response.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
        }
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        if let ApiError::Token(e) = self
            && !e.is_forbidden()
        {
            // RFC 6750 §3: name the scheme; say when the token itself was the trouble.
            let challenge = match e {
                crate::auth::AuthError::Missing => r#"Bearer realm="roomcast""#,
                _ => r#"Bearer realm="roomcast", error="invalid_token""#,
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if let ApiError::Unavailable(_) | ApiError::RequestTimeout(_) = self {
            // The connection is not worth keeping: the server is full, or the client slow.
            response.force_close();
        }
        response.json(serde_json::json!({
            "error": {"code": self.code(), "message": self.to_string()}
        }))
    }
}
