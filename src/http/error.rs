//! The HTTP API's error type: every failure is a 4xx/5xx with a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

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
    /// No such route, or no such thing.
    #[error("{0}")]
    NotFound(String),
    /// The server cannot take it now (connection limit, shutting down).
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(serde_json::json!({
            "error": {"code": self.code(), "message": self.to_string()}
        }))
    }
}
