//! `POST /send-notification/`: the seed protocol's push endpoint.
//!
//! Query parameters `user_id`, `title`, `message` and `notification_type` (`info`, the
//! default, `success`, `warning` or `error`);
//! the answer is `{"sent": bool, "user_id": .., "notification": {..}}`, where `notification`
//! is exactly the frame the user's sockets received and `sent` says whether at least one did.
//! roomcast adds `stored`: the user had no socket open, and the notification waits in their
//! inbox for the next one.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::ws::parse_user;
use super::{ApiError, AppState, access};
use crate::protocol::{Frame, Notification, NotificationType};
use crate::server::messages::{Audience, Notify, Pushed};

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
        limit_text(name, value, max)
    };
    let title = text("title", query.title)?;
    let message = text("message", query.message)?;
    let notification_type = notification_type(query.notification_type.as_deref())?;

    let notification = Notification::new(title, message, notification_type, None);
    let (pushed, _) = push(&state, Audience::Users(vec![user.clone()]), &notification).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sent": !pushed.reached.is_empty(),
        "stored": !pushed.stored.is_empty(),
        "user_id": user,
        "notification": notification,
    })))
}

/// A notification's `notification_type`: one of the documented set (the default `info` when
/// absent), else a 400 `invalid_field` naming them.
pub(super) fn notification_type(value: Option<&str>) -> Result<NotificationType, ApiError> {
    let Some(value) = value else {
        return Ok(NotificationType::default());
    };
    NotificationType::parse(value).ok_or_else(|| {
        let allowed: Vec<&str> = NotificationType::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::bad_request(
            "invalid_field",
            format!("notification_type must be one of {}", allowed.join(", ")),
        )
    })
}

/// A notification's `title` or `message`: at most `max_text_chars` characters (empty is
/// allowed, as in the seed).
pub(super) fn limit_text(name: &str, value: String, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!("{name} is longer than {max} characters"),
        ));
    }
    Ok(value)
}

/// Encodes `notification` once and pushes it to the notification sockets of `to`. Returns
/// what it reached and the frame the sockets got, for the answer to carry.
pub(super) async fn push(
    state: &AppState,
    to: Audience,
    notification: &Notification,
) -> Result<(Pushed, Frame), ApiError> {
    let frame = notification.encode();
    let asked = match &to {
        Audience::Users(users) => users.len().to_string(),
        Audience::Everyone => "all".into(),
    };
    let pushed = state
        .server
        .send(Notify {
            to,
            frame: frame.clone(),
        })
        .await?;
    log::info!(
        "notification pushed asked={asked} users={} sockets={} id={}",
        pushed.reached.len(),
        pushed.sockets,
        notification.id
    );
    Ok((pushed, frame))
}
