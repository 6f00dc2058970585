//! `GET /health`: liveness and the server's counts, as JSON.
//!
//! The counts are the ones `ChatServer` published after its latest message, read without
//! sending it anything: a flood in its mailbox never delays a health check.

use actix_web::{HttpResponse, web};

use super::{ApiError, AppState};
use crate::store::StoreState;

pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = *state.stats.borrow();
    // Up, but without a working store it cannot take chats: a balancer should look elsewhere.
    let degraded = stats.store != StoreState::Ok || stats.subscribed == Some(false);
    let (mut answer, status) = match degraded {
        false => (HttpResponse::Ok(), "ok"),
        true => (HttpResponse::ServiceUnavailable(), "degraded"),
    };
    let broker = match stats.subscribed {
        None => "local",
        Some(true) => "up",
        Some(false) => "reconnecting",
    };
    Ok(answer.json(serde_json::json!({
        "status": status,
        "store": stats.store.as_str(),
        "broker": broker,
        "broker_reconnects": stats.broker_reconnects,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "connections": stats.connections,
        "notification_sockets": stats.notification_sockets,
        "users": stats.users,
        "rooms": stats.rooms,
        "slow_consumers_closed": stats.slow_consumers_closed,
    })))
}
