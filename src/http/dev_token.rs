//! `POST /api/dev-token`: a token for the bundled page, in development mode only.
//!
//! Body `{"user_id": "..", "rooms": [..]?, "read_only": [..]?, "ttl_secs": ..?}` (grants as
//! in a real token; `ttl_secs` 1 to 86400, default 3600); answer
//! `{"token", "user_id", "expires_at"}`. The token is signed with the development key that
//! `auth::Identity` made at start (so it is good on this server until it restarts), and is
//! accepted like a real one: `?token=` or the `roomcast.token.<JWT>` protocol.
//!
//! With `--jwt-secret` or `--jwt-public-key` the route does not exist (404 `not_found`): real
//! tokens come from the application's own backend. It answers clients on this machine only,
//! with or without `--api-key` (the `/api` scope's rule comes first): a development token is
//! for a page on this machine, never for anyone who holds the API key. A request that came
//! through a proxy (`Forwarded`, `X-Forwarded-For`) is refused too, since a proxy on this
//! machine would make a remote client look local.

use actix_web::http::header::{FORWARDED, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::auth::{DEV_TTL_DEFAULT, DEV_TTL_MAX, Grants, parse_patterns};
use crate::protocol::{DecodeError, Fields};

/// `POST /api/dev-token`.
pub async fn dev_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    if !state.identity.is_development() {
        return Err(ApiError::NotFound(
            "no development tokens: this server checks tokens from the application's backend"
                .into(),
        ));
    }
    let local = req.peer_addr().is_some_and(|peer| peer.ip().is_loopback());
    let x_forwarded_for = HeaderName::from_static("x-forwarded-for");
    let proxied = [FORWARDED, x_forwarded_for]
        .iter()
        .any(|h| req.headers().contains_key(h));
    if !local || proxied {
        log::warn!(
            "dev token refused peer={:?} proxied={proxied}",
            req.peer_addr()
        );
        return Err(ApiError::Forbidden(
            "development tokens are for clients on this machine only".into(),
        ));
    }
    let Value::Object(obj) = body.into_inner() else {
        return Err(DecodeError::NotAnObject.into());
    };
    let f = Fields(&obj);
    let user = f.user("user_id")?;
    let grants = Grants {
        rooms: patterns(&obj, "rooms")?,
        read_only: patterns(&obj, "read_only")?.unwrap_or_default(),
    };
    let ttl_secs = match f.opt_u64("ttl_secs")? {
        None => DEV_TTL_DEFAULT,
        Some(n @ 1..=DEV_TTL_MAX) => n,
        Some(_) => {
            return Err(DecodeError::InvalidField {
                field: "ttl_secs",
                expected: "must be an integer from 1 to 86400",
            }
            .into());
        }
    };
    let (token, expires_at) = state
        .identity
        .mint_dev_token(&user, &grants, ttl_secs)
        .ok_or_else(|| ApiError::Internal("no development key".into()))?
        .map_err(|e| ApiError::Internal(format!("signing a development token: {e}")))?;
    log::info!("dev token user={user} ttl_secs={ttl_secs}");
    Ok(HttpResponse::Ok().json(json!({
        "token": token,
        "user_id": user,
        "expires_at": expires_at,
    })))
}

/// An optional list of room patterns (`rooms`, `read_only`).
fn patterns(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<crate::auth::RoomPattern>>, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_field", message);
    let list = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format!("`{field}` must be an array of strings"))),
    };
    let names = list
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| invalid(format!("`{field}` must be an array of strings")))?;
    parse_patterns(field, &names).map(Some).map_err(invalid)
}

#[cfg(test)]
mod tests {
    //! The loopback rule, for peers the integration tests cannot be (they connect from
    //! loopback): requests built with a chosen peer address.

    use actix_web::test;
    use serde_json::{Value, json};

    use crate::config::Config;

    /// `POST /api/dev-token` from `peer` with `headers` to a fresh app; status and body.
    async fn call(config: Config, peer: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = test::TestRequest::post()
            .uri("/api/dev-token")
            .peer_addr(peer.parse().unwrap())
            .set_json(json!({"user_id": "alice"}));
        for header in headers {
            req = req.insert_header(*header);
        }
        super::super::call_app(config, req).await
    }

    const REMOTE: &str = "192.0.2.7:40000";
    const LOCAL: &str = "127.0.0.1:40000";

    #[actix_web::test]
    async fn only_loopback_clients_get_one_even_with_the_api_key() {
        let (status, body) = call(Config::for_tests(), LOCAL, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], "alice");

        let mut keyed = Config::for_tests();
        keyed.api_key = Some("k".into());
        let key = ("authorization", "Bearer k");
        let (status, body) = call(keyed.clone(), LOCAL, &[key]).await;
        assert_eq!(status, 200, "{body}");
        // The key opens the /api scope, not this route, to a remote client.
        let (status, body) = call(keyed.clone(), REMOTE, &[key]).await;
        assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
        // Without the key, the scope refuses first.
        let (status, _) = call(keyed, LOCAL, &[]).await;
        assert_eq!(status, 401);
        // Without a key, a remote client never reaches it.
        let (status, _) = call(Config::for_tests(), REMOTE, &[]).await;
        assert_eq!(status, 403);
    }

    #[actix_web::test]
    async fn a_local_proxy_does_not_make_a_remote_client_local() {
        for header in [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ] {
            let (status, body) = call(Config::for_tests(), LOCAL, &[header]).await;
            assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
        }
    }
}
