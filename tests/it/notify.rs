//! Notification sockets and the seed's push endpoint.

use serde_json::json;

use crate::common::*;

async fn notification_socket(srv: &TestServer, user: &str) -> Client {
    Client::connect(&srv.url(&format!("/notifications/{user}"))).await
}

#[tokio::test]
async fn every_socket_of_the_user_gets_the_push_and_the_answer_matches() {
    let srv = TestServer::start();
    let mut tab1 = notification_socket(&srv, "alice").await;
    let mut tab2 = notification_socket(&srv, "alice").await;
    let mut bob = notification_socket(&srv, "bob").await;
    srv.wait_health("notification_sockets", 3).await;

    let (status, answer) = http_post(
        srv.addr,
        "/send-notification/?user_id=alice&title=Hello&message=Your%20order%20shipped",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // The seed's shape, plus roomcast's `stored`, and nothing else.
    let top: std::collections::BTreeSet<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(top, ["notification", "sent", "stored", "user_id"].into());
    assert_eq!(
        (&answer["sent"], &answer["stored"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(answer["user_id"], "alice");
    let sent = &answer["notification"];
    let keys: std::collections::BTreeSet<&str> = sent
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "message",
            "notification_type",
            "timestamp",
            "title",
            "type"
        ]
        .into()
    );
    assert_eq!(
        (
            sent["type"].as_str(),
            sent["title"].as_str(),
            sent["message"].as_str()
        ),
        (
            Some("notification"),
            Some("Hello"),
            Some("Your order shipped")
        )
    );
    assert_eq!(sent["notification_type"], "info", "the default type");
    uuid::Uuid::parse_str(sent["id"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(sent["timestamp"].as_str().unwrap()).unwrap();

    // Both of alice's sockets got exactly what the answer reports; bob got nothing.
    assert_eq!(&tab1.recv().await, sent);
    assert_eq!(&tab2.recv().await, sent);
    bob.send_raw("ping").await;
    assert_eq!(
        bob.recv_text().await,
        "pong",
        "bob's first frame answers his ping"
    );
}

#[tokio::test]
async fn a_push_to_a_user_without_a_socket_is_not_sent() {
    let srv = TestServer::start();
    // A chat socket is not a notification socket.
    let _chat = srv.client("carol").await;
    let (status, answer) = http_post(
        srv.addr,
        "/send-notification/?user_id=carol&title=t&message=m&notification_type=warning",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&answer["sent"], &answer["stored"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(answer["notification"]["notification_type"], "warning");
}

#[tokio::test]
async fn ping_is_answered_in_kind_and_chat_requests_are_refused() {
    let srv = TestServer::start();
    let mut n = notification_socket(&srv, "dave").await;
    n.send_raw("ping").await;
    assert_eq!(n.recv_text().await, "pong");
    n.send(json!({"type": "ping"})).await;
    assert_eq!(n.recv().await, json!({"type": "pong"}));
    n.send(json!({"type": "join", "room_id": "lobby"})).await;
    n.expect_error("unknown_type").await;
    n.send_raw("{nope").await;
    n.expect_error("invalid_json").await;
    // Still usable, and private messages are for chat sockets only.
    n.send_raw("ping").await;
    assert_eq!(n.recv_text().await, "pong");
    let mut eve = srv.client("eve").await;
    eve.send(json!({"type": "private", "to_user": "dave", "content": "hi"}))
        .await;
    eve.expect_error("user_offline").await;
}

#[tokio::test]
async fn bad_push_requests_get_a_json_400() {
    let srv = TestServer::with(|c| c.max_text_chars = 10);
    let cases = [
        ("/send-notification/?title=t&message=m", "missing_field"),
        ("/send-notification/?user_id=a&message=m", "missing_field"),
        ("/send-notification/?user_id=a&title=t", "missing_field"),
        (
            "/send-notification/?user_id=a%20b&title=t&message=m",
            "invalid_user",
        ),
        (
            "/send-notification/?user_id=a&title=t&message=0123456789x",
            "text_too_long",
        ),
    ];
    for (path, code) in cases {
        let (status, body) = http_post(srv.addr, path, &[]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    let (status, body) = srv
        .get_json("/send-notification/?user_id=a&title=t&message=m")
        .await;
    assert_eq!(status, 404, "GET is not the push method: {body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn with_an_api_key_pushes_need_it() {
    let srv = TestServer::with(|c| c.api_key = Some("s3cret".into()));
    let mut n = notification_socket(&srv, "frank").await;
    srv.wait_health("notification_sockets", 1).await;
    let path = "/send-notification/?user_id=frank&title=t&message=m";
    let (status, body) = http_post(srv.addr, path, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = http_post(srv.addr, path, &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    let (status, body) = http_post(srv.addr, path, &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!((status, body["sent"].as_bool()), (200, Some(true)));
    // Only the authorized push arrived.
    assert_eq!(n.recv().await["id"], body["notification"]["id"]);
    n.send_raw("ping").await;
    assert_eq!(n.recv_text().await, "pong");
}
