//! `POST /send-notification/`: the seed protocol's push endpoint.
//!
//! Query parameters `user_id`, `title`, `message` and `notification_type` (default `info`);
//! the answer is `{"sent": bool, "user_id": .., "notification": {..}}`, where `notification`
//! is exactly the frame the user's sockets received and `sent` says whether at least one did.
//! roomcast adds `stored`: the user had no socket open, and the notification waits in their
//! inbox for the next one.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::ws::parse_user;
use super::{ApiError, AppState, access};
use crate::protocol::Notification;
use crate::server::messages::{Audience, Notify};

#[derive(Deserialize)]
struct SendQuery {
    user_id: Option<String>,
    title: Option<String>,
    message: Option<String>,
    notification_type: Option<String>,
}

pub async fn send_notification(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    access::check(&req, &state.config)?;
    let query = web::Query::<SendQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?
        .into_inner();
    let user_id = query
        .user_id
        .ok_or_else(|| ApiError::bad_request("missing_field", "missing query parameter user_id"))?;
    let user = parse_user(&user_id)?;
    let max = state.config.max_text_chars;
    let text = |name: &'static str, value: Option<String>| {
        let value = value.ok_or_else(|| {
            ApiError::bad_request("missing_field", format!("missing query parameter {name}"))
        })?;
        if value.chars().count() > max {
            return Err(ApiError::bad_request(
                "text_too_long",
                format!("{name} is longer than {max} characters"),
            ));
        }
        Ok(value)
    };
    let title = text("title", query.title)?;
    let message = text("message", query.message)?;
    let notification_type = text(
        "notification_type",
        Some(query.notification_type.unwrap_or_else(|| "info".into())),
    )?;

    let notification = Notification::new(title, message, notification_type, None);
    let pushed = state
        .server
        .send(Notify {
            to: Audience::Users(vec![user.clone()]),
            frame: notification.encode(),
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    log::info!(
        "notification pushed user={user} sockets={} id={}",
        pushed.sockets,
        notification.id
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sent": pushed.sockets > 0,
        "stored": !pushed.stored.is_empty(),
        "user_id": user,
        "notification": notification,
    })))
}
