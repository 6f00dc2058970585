//! Identity over real sockets: tokens checked before the upgrade (401/403 with their codes),
//! in `?token=` or the `roomcast.token.<JWT>` WebSocket protocol; grants (forbidden and
//! read-only rooms, reserved prefixes); expiry (close 4004) and `refresh`; development
//! tokens; RS256 and ES256 public keys.
//!
//! Tokens are minted here with `jsonwebtoken`. The RSA and EC key pairs under
//! `tests/it/keys/` exist for these tests only.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomcast::Config;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::{Client, TIMEOUT, TestServer, api, assert_api_error};

/// A WebSocket without the harness's `Client`, for handshakes with chosen headers.
type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "the integration tests' HS256 secret, 32+ bytes";
const AUDIENCE: &str = "roomcast-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub`, expiring `secs` from now (negative: in the past), for [`AUDIENCE`].
fn claims(sub: &str, secs: i64) -> Value {
    json!({"sub": sub, "exp": now().saturating_add_signed(secs), "aud": AUDIENCE})
}

fn sign_with(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("signed")
}

/// A token the [`jwt_server`] accepts.
fn token(claims: &Value) -> String {
    sign_with(claims, SECRET)
}

/// A server that requires HS256 tokens for [`AUDIENCE`], with no leeway (so a token lapses
/// at its `exp`).
fn jwt_server() -> TestServer {
    TestServer::with(jwt_config)
}

fn jwt_config(c: &mut Config) {
    c.jwt_secret = Some(SECRET.into());
    c.jwt_audience = Some(AUDIENCE.into());
    c.jwt_leeway_secs = 0;
}

/// Connects and reads `welcome`, which must name `user`.
async fn open(server: &TestServer, path: &str, user: &str) -> Client {
    let mut c = Client::connect(&server.url(path)).await;
    let welcome = c.expect("welcome").await;
    assert_eq!(welcome["user_id"], user, "{path}");
    c
}

#[track_caller]
fn assert_refused(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_api_error(answer, status, code, what);
}

#[tokio::test]
async fn sockets_without_a_good_token_are_refused_before_the_upgrade() {
    let server = jwt_server();
    let alice = claims("alice", 600);
    let forged = sign_with(&alice, "another secret, not the server's, 32+ bytes");
    let expired = token(&claims("alice", -60));
    let mut elsewhere = alice.clone();
    elsewhere["aud"] = "another-service".into();
    let elsewhere = token(&elsewhere);

    for path in [
        "/ws",
        "/ws?user_id=alice",
        "/ws/lobby/alice",
        "/notifications/alice",
    ] {
        let refused = Client::refused(&server.url(path)).await;
        assert_refused(&refused, 401, "token_missing", path);
    }
    for (t, code) in [
        (forged.as_str(), "token_invalid"),
        (expired.as_str(), "token_expired"),
        (elsewhere.as_str(), "token_audience"),
        ("not-a-jwt", "token_invalid"),
    ] {
        for path in ["/ws", "/ws/lobby/alice", "/notifications/alice"] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = server.url(&format!("{path}{sep}token={t}"));
            assert_refused(&Client::refused(&url).await, 401, code, path);
        }
    }
    // Nothing was admitted.
    assert_eq!(server.health().await["connections"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_token_opens_its_own_users_sockets_only() {
    let server = jwt_server();
    let t = token(&claims("alice", 600));

    for path in [
        format!("/ws/lobby/bob?token={t}"),
        format!("/ws?user_id=bob&token={t}"),
        // Her inbox is hers alone.
        format!("/notifications/bob?token={t}"),
    ] {
        let refused = Client::refused(&server.url(&path)).await;
        assert_refused(&refused, 403, "token_user_mismatch", &path);
    }

    // The user is the token's `sub`, named in the URL or not.
    let mut multi = open(&server, &format!("/ws?token={t}"), "alice").await;
    multi.join("lobby").await;
    open(&server, &format!("/ws?user_id=alice&token={t}"), "alice").await;
    let mut single = Client::connect(&server.url(&format!("/ws/lobby/alice?token={t}"))).await;
    single.expect("welcome").await;
    assert_eq!(single.read_joined().await.frame["user_id"], "alice");
    assert_eq!(multi.sync("lobby").await, ["alice"]);

    let mut inbox = Client::connect(&server.url(&format!("/notifications/alice?token={t}"))).await;
    inbox.send_raw("ping").await;
    assert_eq!(inbox.recv_text().await, "pong");
    server.stop().await;
}

/// Connects to `url` offering `protocols` in `Sec-WebSocket-Protocol`. Returns the
/// socket and the protocol the server selected, or the HTTP refusal.
async fn connect_offering(
    url: &str,
    protocols: &str,
) -> Result<(RawSocket, Option<String>), (u16, Value)> {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocols.parse().expect("a header value"),
    );
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
    {
        Ok((ws, response)) => {
            let selected = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ASCII").to_owned());
            Ok((ws, selected))
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body).expect("a JSON refusal");
            Err((response.status().as_u16(), json))
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The next text frame of a raw socket, as JSON.
async fn next_json(ws: &mut RawSocket) -> Value {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no frame in time")
            .expect("the connection ended")
            .expect("read failed");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

#[tokio::test]
async fn the_token_may_come_as_a_websocket_protocol_and_roomcast_v1_is_selected() {
    let server = jwt_server();
    let t = token(&claims("alice", 600));

    let (mut ws, selected) = connect_offering(
        &server.url("/ws"),
        &format!("roomcast.v1, roomcast.token.{t}"),
    )
    .await
    .expect("upgraded");
    assert_eq!(selected.as_deref(), Some("roomcast.v1"));
    assert_eq!(next_json(&mut ws).await["user_id"], "alice");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    // The protocol's token is checked like any other.
    let forged = sign_with(
        &claims("alice", 600),
        "not the server's secret, 32+ bytes..",
    );
    let refused = connect_offering(
        &server.url("/ws/lobby/alice"),
        &format!("roomcast.v1, roomcast.token.{forged}"),
    )
    .await
    .expect_err("refused");
    assert_refused(&refused, 401, "token_invalid", "forged, as a protocol");
    // Without a token, offering the protocol is not enough.
    let refused = connect_offering(&server.url("/ws"), "roomcast.v1")
        .await
        .expect_err("refused");
    assert_refused(&refused, 401, "token_missing", "roomcast.v1 alone");
    // One token, given once.
    let twice = connect_offering(
        &server.url(&format!("/ws?token={t}")),
        &format!("roomcast.v1, roomcast.token.{t}"),
    )
    .await
    .expect_err("refused");
    assert_refused(&twice, 401, "token_invalid", "?token= and the protocol");
    server.stop().await;

    // In development mode, roomcast.v1 is selected too.
    let dev = TestServer::start();
    let (mut ws, selected) = connect_offering(&dev.url("/ws?user_id=carol"), "roomcast.v1")
        .await
        .expect("upgraded");
    assert_eq!(selected.as_deref(), Some("roomcast.v1"));
    assert_eq!(next_json(&mut ws).await["user_id"], "carol");
    dev.stop().await;
}

#[tokio::test]
async fn grants_refuse_rooms_with_an_error_frame_and_the_socket_goes_on() {
    let server = jwt_server();
    let mut grants = claims("alice", 600);
    grants["rooms"] = json!(["lobby", "support:*"]);
    grants["read_only"] = json!(["news"]);
    let t = token(&grants);
    let mut alice = open(&server, &format!("/ws?token={t}"), "alice").await;

    // A room outside the grants.
    alice
        .send(json!({"type": "join", "room_id": "staff"}))
        .await;
    let e = alice.expect_error("forbidden").await;
    assert_eq!(e["room_id"], "staff", "{e}");
    alice
        .send(json!({"type": "chat", "room_id": "staff", "text": "hi", "client_msg_id": "c-0"}))
        .await;
    alice.expect_chat_error("forbidden", "staff", "c-0").await;

    // A read-only room: joined, but no chat, no typing.
    let joined = alice.join("news").await;
    assert_eq!(joined.frame["room_id"], "news");
    alice
        .send(json!({"type": "chat", "room_id": "news", "text": "hi", "client_msg_id": "c-1"}))
        .await;
    alice.expect_chat_error("forbidden", "news", "c-1").await;
    alice
        .send(json!({"type": "typing", "room_id": "news", "is_typing": true}))
        .await;
    assert_eq!(alice.expect_error("forbidden").await["room_id"], "news");
    // Nothing reached the room: the barrier's answer is the next frame, and no history.
    assert_eq!(alice.sync("news").await, ["alice"]);
    let (status, page) = api(server.addr, "GET", "/api/rooms/news/history", None).await;
    assert!(status == 404 || page["messages"] == json!([]), "{page}");

    // Permitted rooms still work afterwards, by name and by prefix.
    for room in ["lobby", "support:42"] {
        alice.join(room).await;
        alice
            .send(json!({"type": "chat", "room_id": room, "text": "hello", "client_msg_id": room}))
            .await;
        let mut got = [alice.recv().await, alice.recv().await];
        got.sort_by_key(|f| f["type"].as_str().map(str::to_owned));
        assert_eq!(
            (&got[0]["type"], &got[1]["type"]),
            (&json!("ack"), &json!("chat"))
        );
        assert_eq!(got[1]["room_id"], room);
    }

    // The single-room socket's room is checked before the upgrade.
    let refused = Client::refused(&server.url(&format!("/ws/staff/alice?token={t}"))).await;
    assert_refused(&refused, 403, "forbidden", "/ws/staff/alice");
    server.stop().await;
}

#[tokio::test]
async fn reserved_rooms_need_an_explicit_grant_in_both_modes() {
    let server = jwt_server();
    let with_rooms = |rooms: Value| {
        let mut c = claims("alice", 600);
        c["rooms"] = rooms;
        token(&c)
    };
    for t in [
        token(&claims("alice", 600)), // no `rooms`: anything but reserved rooms
        with_rooms(json!(["*"])),
        with_rooms(json!(["priv*", "lobby"])),
    ] {
        let mut c = open(&server, &format!("/ws?token={t}"), "alice").await;
        c.send(json!({"type": "join", "room_id": "private:alice-bob"}))
            .await;
        assert_eq!(
            c.expect_error("forbidden").await["room_id"],
            "private:alice-bob"
        );
        c.join("lobby").await;
    }
    let t = with_rooms(json!(["private:alice-*"]));
    let mut c = open(&server, &format!("/ws?token={t}"), "alice").await;
    c.join("private:alice-bob").await;
    c.send(json!({"type": "join", "room_id": "private:bob-carol"}))
        .await;
    c.expect_error("forbidden").await;
    server.stop().await;

    // Development mode: no token, no grants, so no reserved room.
    let dev = TestServer::start();
    let mut bob = dev.client("bob").await;
    bob.send(json!({"type": "join", "room_id": "private:x"}))
        .await;
    bob.expect_error("forbidden").await;
    bob.join("lobby").await;
    let refused = Client::refused(&dev.url("/ws/private:x/bob")).await;
    assert_refused(
        &refused,
        403,
        "forbidden",
        "/ws/private:x/bob in development mode",
    );
    dev.stop().await;
}

#[tokio::test]
async fn a_socket_whose_token_lapses_is_closed_with_4004() {
    let server = jwt_server();
    let t = token(&claims("alice", 4));
    let mut chat = Client::connect(&server.url(&format!("/ws/lobby/alice?token={t}"))).await;
    chat.expect("welcome").await;
    chat.read_joined().await;
    let mut inbox = Client::connect(&server.url(&format!("/notifications/alice?token={t}"))).await;

    // A refresh that is refused changes nothing.
    let stale = token(&claims("alice", -60));
    chat.send(json!({"type": "refresh", "token": stale})).await;
    chat.expect_error("token_expired").await;

    assert_eq!(chat.expect_close().await, 4004);
    assert_eq!(inbox.expect_close().await, 4004);
    // Both were counted by their reason.
    server
        .wait_metric(
            r#"roomcast_sockets_closed_total{code="4004",reason="token_expired"}"#,
            2.0,
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn refresh_before_expiry_keeps_the_socket_open_past_the_first_exp() {
    let server = jwt_server();
    let first = claims("alice", 4);
    let first_exp = first["exp"].as_u64().unwrap();
    let mut alice = open(&server, &format!("/ws?token={}", token(&first)), "alice").await;
    alice.join("lobby").await;
    // A witness whose token expires a second after alice's first: its close proves that
    // alice's first token has lapsed on the server.
    let mut late = claims("alice", 0);
    late["exp"] = (first_exp + 1).into();
    let mut witness = open(&server, &format!("/ws?token={}", token(&late)), "alice").await;

    // Refused refreshes: forged, another user, expired. Each answered, nothing changes.
    let fresh = claims("alice", 600);
    alice
        .send(json!({"type": "refresh", "token": sign_with(&fresh, "someone else's secret, 32+ bytes")}))
        .await;
    alice.expect_error("token_invalid").await;
    alice
        .send(json!({"type": "refresh", "token": token(&claims("bob", 600))}))
        .await;
    alice.expect_error("token_user_mismatch").await;
    alice
        .send(json!({"type": "refresh", "token": token(&claims("alice", -5))}))
        .await;
    alice.expect_error("token_expired").await;

    alice
        .send(json!({"type": "refresh", "token": token(&fresh)}))
        .await;
    let refreshed = alice.expect("refreshed").await;
    assert_eq!(refreshed["expires_at"], fresh["exp"]);

    assert_eq!(witness.expect_close().await, 4004);
    assert!(
        now() > first_exp,
        "the witness lapsed after alice's first token"
    );
    // Alice's socket is still open and works.
    alice.ping().await;
    alice.chat("lobby", "still here").await;
    assert_eq!(alice.expect("chat").await["text"], "still here");
    assert_eq!(alice.sync("lobby").await, ["alice"]);
    server.stop().await;
}

#[tokio::test]
async fn dev_tokens_are_minted_for_loopback_in_development_mode_only() {
    let dev = TestServer::start();
    let (status, body) = api(
        dev.addr,
        "POST",
        "/api/dev-token",
        Some(&json!({"user_id": "dana", "rooms": ["lobby", "team:*"], "ttl_secs": 60})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "dana");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    assert!((now() + 55..=now() + 60).contains(&expires_at), "{body}");
    let t = body["token"].as_str().expect("a token");

    let mut dana = open(&dev, &format!("/ws?token={t}"), "dana").await;
    dana.join("team:red").await;
    dana.send(json!({"type": "join", "room_id": "attic"})).await;
    dana.expect_error("forbidden").await;
    let refused = Client::refused(&dev.url(&format!("/ws?user_id=erin&token={t}"))).await;
    assert_refused(
        &refused,
        403,
        "token_user_mismatch",
        "another user's dev token",
    );
    let refused = Client::refused(&dev.url("/ws?token=forged.not.signed")).await;
    assert_refused(
        &refused,
        401,
        "token_invalid",
        "a bad token in development mode",
    );

    // The default lifetime is an hour; bad bodies get the API's codes.
    let (_, body) = api(
        dev.addr,
        "POST",
        "/api/dev-token",
        Some(&json!({"user_id": "dana"})),
    )
    .await;
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    assert!(
        (now() + 3595..=now() + 3600).contains(&expires_at),
        "{body}"
    );
    for (body, code) in [
        (json!({}), "missing_field"),
        (json!({"user_id": "a b"}), "invalid_user"),
        (json!({"user_id": "dana", "ttl_secs": 0}), "invalid_field"),
        (
            json!({"user_id": "dana", "ttl_secs": 86401}),
            "invalid_field",
        ),
        (
            json!({"user_id": "dana", "rooms": "lobby"}),
            "invalid_field",
        ),
        (
            json!({"user_id": "dana", "rooms": ["a b"]}),
            "invalid_field",
        ),
    ] {
        let answer = api(dev.addr, "POST", "/api/dev-token", Some(&body)).await;
        assert_api_error(&answer, 400, code, &body.to_string());
    }
    dev.stop().await;

    // With real keys there are no development tokens.
    let server = jwt_server();
    let answer = api(
        server.addr,
        "POST",
        "/api/dev-token",
        Some(&json!({"user_id": "dana"})),
    )
    .await;
    assert_api_error(&answer, 404, "not_found", "dev-token with --jwt-secret");
    server.stop().await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/keys");
    let private = |alg: Algorithm| {
        let (file, rsa) = match alg {
            Algorithm::RS256 => ("rs256-private.pem", true),
            _ => ("es256-private.pem", false),
        };
        let pem = std::fs::read(format!("{keys}/{file}")).expect("a test key");
        match rsa {
            true => EncodingKey::from_rsa_pem(&pem).expect("an RSA key"),
            false => EncodingKey::from_ec_pem(&pem).expect("an EC key"),
        }
    };
    let sign = |alg: Algorithm, claims: &Value| {
        jsonwebtoken::encode(&Header::new(alg), claims, &private(alg)).expect("signed")
    };
    let alice = claims("alice", 600);
    for (alg, public, other) in [
        (Algorithm::RS256, "rs256-public.pem", Algorithm::ES256),
        (Algorithm::ES256, "es256-public.pem", Algorithm::RS256),
    ] {
        let server = TestServer::with(|c| {
            c.jwt_public_key = Some(format!("{keys}/{public}").into());
            c.jwt_audience = Some(AUDIENCE.into());
        });
        open(
            &server,
            &format!("/ws?token={}", sign(alg, &alice)),
            "alice",
        )
        .await;
        for (t, what) in [
            (sign(other, &alice), "signed by the other key"),
            (token(&alice), "HS256"),
        ] {
            let refused = Client::refused(&server.url(&format!("/ws?token={t}"))).await;
            assert_refused(&refused, 401, "token_invalid", what);
        }
        server.stop().await;
    }
}
