//! `GET /metrics`: every metric in the Prometheus text format (version 0.0.4). Same access
//! rule as the push endpoint: the API key when one is configured, else loopback clients only.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, AppState, access};

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE_TEXT_FORMAT: &str = "text/plain; version=0.0.4";

pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    access::check(&req, &state.config)?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, CONTENT_TYPE_TEXT_FORMAT))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(state.metrics.render()))
}
