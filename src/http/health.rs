//! `GET /health`: liveness and the server's counts, as JSON.

use actix_web::{HttpResponse, web};

use super::{ApiError, AppState};
use crate::server::messages::GetStats;

pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state
        .server
        .send(GetStats)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "connections": stats.connections,
        "notification_sockets": stats.notification_sockets,
        "users": stats.users,
        "rooms": stats.rooms,
        "slow_consumers_closed": stats.slow_consumers_closed,
    })))
}
