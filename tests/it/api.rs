//! The JSON HTTP API under `/api`, over real HTTP and real sockets.
//!
//! These servers have no API key, so the tests (on loopback) are served: that is the
//! "no key: loopback only" rule working. Non-loopback peers are refused with 403; the
//! integration tests cannot connect from such an address, so that case is a unit test of the
//! scope (`src/http/api.rs`).

use serde_json::{Value, json};

use crate::common::*;

async fn notification_socket(srv: &TestServer, user: &str) -> Client {
    Client::connect(&srv.url(&format!("/notifications/{user}"))).await
}

async fn notify(srv: &TestServer, body: Value) -> Value {
    let (status, answer) = api(srv.addr, "POST", "/api/notifications", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Posts `text` into `room` as `system`; returns the answer.
async fn post(srv: &TestServer, room: &str, body: Value) -> Value {
    let path = format!("/api/rooms/{room}/messages");
    let (status, answer) = api(srv.addr, "POST", &path, Some(&body)).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn get(srv: &TestServer, path: &str) -> Value {
    let (status, answer) = api(srv.addr, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_notification_reaches_every_socket_of_the_user_and_reports_the_offline() {
    let srv = TestServer::start();
    let mut tab1 = notification_socket(&srv, "alice").await;
    let mut tab2 = notification_socket(&srv, "alice").await;
    srv.wait_health("notification_sockets", 2).await;

    let answer = notify(
        &srv,
        json!({"user_id": "alice", "title": "Hello", "message": "Your order shipped",
               "notification_type": "success", "data": {"order": 42, "tags": ["a", "b"]}}),
    )
    .await;
    assert_eq!(answer["sockets"], 2);
    assert_eq!(answer["users"], 1);
    assert_eq!(answer["reached"], json!(["alice"]));
    assert_eq!(answer["offline"], json!([]));
    let sent = &answer["notification"];
    assert_eq!(sent["type"], "notification");
    assert_eq!(sent["title"], "Hello");
    assert_eq!(sent["message"], "Your order shipped");
    assert_eq!(sent["notification_type"], "success");
    assert_eq!(sent["data"], json!({"order": 42, "tags": ["a", "b"]}));
    uuid::Uuid::parse_str(sent["id"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(sent["timestamp"].as_str().unwrap()).unwrap();
    // Each socket got the very object the answer reports.
    assert_eq!(&tab1.recv().await, sent);
    assert_eq!(&tab2.recv().await, sent);

    // Nobody by that name has a notification socket.
    let answer = notify(
        &srv,
        json!({"user_id": "zed", "title": "t", "message": "m"}),
    )
    .await;
    assert_eq!(
        (
            &answer["sockets"],
            &answer["users"],
            &answer["reached"],
            &answer["offline"]
        ),
        (&json!(0), &json!(0), &json!([]), &json!(["zed"]))
    );
    assert_eq!(answer["stored"], json!(["zed"]));
    assert_eq!(answer["notification"]["notification_type"], "info");
    assert!(answer["notification"].get("data").is_none(), "{answer}");
    // alice's sockets got nothing more: their next frame answers their ping.
    for tab in [&mut tab1, &mut tab2] {
        tab.send_raw("ping").await;
        assert_eq!(tab.recv_text().await, "pong");
    }
}

#[tokio::test]
async fn a_list_is_deduplicated_and_split_into_reached_and_offline() {
    let srv = TestServer::start();
    let mut alice = notification_socket(&srv, "alice").await;
    // bob has a chat socket only: no notification socket, so he is offline for this.
    let mut bob = srv.client("bob").await;
    srv.wait_health("notification_sockets", 1).await;

    let answer = notify(
        &srv,
        json!({"user_ids": ["bob", "alice", "bob", "zed", "alice"], "all": false,
               "title": "t", "message": "m"}),
    )
    .await;
    assert_eq!(answer["sockets"], 1);
    assert_eq!(answer["users"], 1);
    assert_eq!(answer["reached"], json!(["alice"]));
    assert_eq!(
        answer["offline"],
        json!(["bob", "zed"]),
        "in the order asked"
    );
    assert_eq!(
        answer["stored"],
        json!(["bob", "zed"]),
        "kept in their inboxes"
    );
    assert_eq!(alice.recv().await, answer["notification"]);
    alice.send_raw("ping").await;
    assert_eq!(alice.recv_text().await, "pong", "alice got it once");
    bob.ping().await;
}

#[tokio::test]
async fn all_reaches_every_notification_socket() {
    let srv = TestServer::start();
    let mut bob = notification_socket(&srv, "bob").await;
    let mut alice1 = notification_socket(&srv, "alice").await;
    let mut alice2 = notification_socket(&srv, "alice").await;
    let mut carol = srv.client("carol").await;
    srv.wait_health("notification_sockets", 3).await;

    let answer = notify(
        &srv,
        json!({"all": true, "title": "Maintenance", "message": "at noon",
               "notification_type": "warning"}),
    )
    .await;
    assert_eq!(answer["sockets"], 3);
    assert_eq!(answer["users"], 2);
    assert_eq!(answer["reached"], json!(["alice", "bob"]), "sorted");
    assert_eq!(answer["offline"], json!([]));
    for n in [&mut bob, &mut alice1, &mut alice2] {
        assert_eq!(n.recv().await, answer["notification"]);
    }
    // A chat socket is not a notification socket.
    carol.ping().await;
}

#[tokio::test]
async fn a_backend_posts_into_a_room_and_every_member_gets_it() {
    let srv = TestServer::start();
    let (mut alice, _) = srv.room_client("lobby", "alice").await;
    let (mut bob, _) = srv.room_client("lobby", "bob").await;
    alice.expect("user_joined").await;
    let (_carol, _) = srv.room_client("attic", "carol").await;

    let posted = post(&srv, "lobby", json!({"text": "deploy finished"})).await;
    assert_eq!(posted["room_id"], "lobby");
    assert_eq!(posted["seq"], 1);
    assert_eq!(posted["duplicate"], false);
    uuid::Uuid::parse_str(posted["message_id"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(posted["timestamp"].as_str().unwrap()).unwrap();
    let a = alice.expect("chat").await;
    let b = bob.expect("chat").await;
    assert_eq!(a, b);
    assert_eq!(
        a,
        json!({"type": "chat", "user_id": "system", "room_id": "lobby",
               "text": "deploy finished", "timestamp": posted["timestamp"],
               "message_id": posted["message_id"], "seq": 1})
    );

    // As a named user, with a client_msg_id, which the frame echoes.
    let posted2 = post(
        &srv,
        "lobby",
        json!({"text": "hi", "user_id": "deploy-bot", "client_msg_id": "c-1"}),
    )
    .await;
    assert_eq!(posted2["seq"], 2);
    let a2 = alice.expect("chat").await;
    assert_eq!(bob.expect("chat").await, a2);
    assert_eq!(
        (
            &a2["user_id"],
            &a2["client_msg_id"],
            &a2["seq"],
            &a2["message_id"]
        ),
        (
            &json!("deploy-bot"),
            &json!("c-1"),
            &json!(2),
            &posted2["message_id"]
        )
    );

    // The same post again (same user, room and client_msg_id): 200, the original answer,
    // and nothing new reaches anyone.
    let body = json!({"text": "hi", "user_id": "deploy-bot", "client_msg_id": "c-1"});
    let (status, again) = api(srv.addr, "POST", "/api/rooms/lobby/messages", Some(&body)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    for field in ["seq", "message_id", "timestamp", "room_id"] {
        assert_eq!(again[field], posted2[field], "{field}");
    }

    // History holds both, as the members got them, oldest first.
    let page = get(&srv, "/api/rooms/lobby/history").await;
    assert_eq!(
        page,
        json!({"room_id": "lobby", "messages": [a, a2], "has_more": false})
    );

    // The room lists, sorted, with their counts; the room's detail names its members.
    assert_eq!(
        get(&srv, "/api/rooms").await,
        json!({"rooms": [
            {"room_id": "attic", "members": 1, "sockets": 1, "last_seq": 0},
            {"room_id": "lobby", "members": 2, "sockets": 2, "last_seq": 2},
        ]})
    );
    assert_eq!(
        get(&srv, "/api/rooms/lobby").await,
        json!({"room_id": "lobby", "members": ["alice", "bob"], "sockets": 2, "last_seq": 2})
    );
    // Nothing else reached the members.
    assert_eq!(alice.sync("lobby").await, ["alice", "bob"]);
    assert_eq!(bob.sync("lobby").await, ["alice", "bob"]);
}

#[tokio::test]
async fn history_pages_walk_back_with_before_seq() {
    let srv = TestServer::start();
    // Nobody is in the room: the messages go to the store, the room stays unlisted.
    for i in 1..=7 {
        let posted = post(&srv, "paged", json!({"text": format!("m{i}")})).await;
        assert_eq!(posted["seq"], i);
    }
    assert_eq!(get(&srv, "/api/rooms").await, json!({"rooms": []}));
    assert_eq!(
        get(&srv, "/api/rooms/paged").await,
        json!({"room_id": "paged", "members": [], "sockets": 0, "last_seq": 7})
    );

    let page = get(&srv, "/api/rooms/paged/history?limit=3").await;
    assert_eq!(page["room_id"], "paged");
    assert_eq!(seqs(&page), [5, 6, 7]);
    assert_eq!(texts(&page), ["m5", "m6", "m7"]);
    assert_eq!(page["has_more"], true);
    let page = get(&srv, "/api/rooms/paged/history?before_seq=5&limit=3").await;
    assert_eq!(seqs(&page), [2, 3, 4]);
    assert_eq!(texts(&page), ["m2", "m3", "m4"]);
    assert_eq!(page["has_more"], true);
    let page = get(&srv, "/api/rooms/paged/history?before_seq=2&limit=3").await;
    assert_eq!(seqs(&page), [1]);
    assert_eq!(texts(&page), ["m1"]);
    assert_eq!(page["has_more"], false);
    let page = get(&srv, "/api/rooms/paged/history").await;
    assert_eq!(seqs(&page), [1, 2, 3, 4, 5, 6, 7], "default limit 50");
    assert_eq!(page["has_more"], false);

    // With a member, the room is live again and its pages are the same.
    let (mut dave, joined) = srv.room_client("paged", "dave").await;
    assert_eq!(joined.history_seqs(), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(joined.frame["last_seq"], 7);
    let page = get(&srv, "/api/rooms/paged/history?before_seq=5&limit=3").await;
    assert_eq!(seqs(&page), [2, 3, 4]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["messages"][0], joined.history[1]);
    assert_eq!(dave.sync("paged").await, ["dave"]);
}

/// A room with a member is known though nothing was ever said in it: its history is an
/// empty page, not a 404; once the member leaves it is unknown again.
#[tokio::test]
async fn a_room_with_members_and_no_messages_has_an_empty_history() {
    let srv = TestServer::start();
    let (mut eve, joined) = srv.room_client("quiet", "eve").await;
    assert_eq!(joined.frame["last_seq"], 0);
    let page = get(&srv, "/api/rooms/quiet/history").await;
    assert_eq!(
        page,
        json!({"room_id": "quiet", "messages": [], "has_more": false})
    );
    let room = get(&srv, "/api/rooms/quiet").await;
    assert_eq!(room["members"], json!(["eve"]));
    eve.send(json!({"type": "leave", "room_id": "quiet"})).await;
    eve.expect("left").await;
    let answer = api(srv.addr, "GET", "/api/rooms/quiet/history", None).await;
    assert_api_error(&answer, 404, "unknown_room", "the member left");
}

#[tokio::test]
async fn unknown_rooms_are_404_and_bad_names_400() {
    let srv = TestServer::start();
    for path in ["/api/rooms/nowhere", "/api/rooms/nowhere/history"] {
        let answer = api(srv.addr, "GET", path, None).await;
        assert_api_error(&answer, 404, "unknown_room", path);
    }
    let long = "x".repeat(65);
    for path in [
        "/api/rooms/a%20b".to_owned(),
        "/api/rooms/a%20b/history".to_owned(),
        format!("/api/rooms/{long}"),
    ] {
        let answer = api(srv.addr, "GET", &path, None).await;
        assert_api_error(&answer, 400, "invalid_room", &path);
    }
    let answer = api(
        srv.addr,
        "POST",
        "/api/rooms/a%20b/messages",
        Some(&json!({"text": "hi"})),
    )
    .await;
    assert_api_error(&answer, 400, "invalid_room", "post into a bad room name");
    let answer = api(srv.addr, "POST", "/api/users/a%20b/disconnect", None).await;
    assert_api_error(&answer, 400, "invalid_user", "disconnect a bad user name");
}

#[tokio::test]
async fn history_queries_out_of_range_are_400() {
    let srv = TestServer::start();
    post(&srv, "lobby", json!({"text": "one"})).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "before_seq=0",
        "before_seq=-1",
        "before_seq=x",
        "before_seq=1.5",
    ] {
        let path = format!("/api/rooms/lobby/history?{query}");
        let answer = api(srv.addr, "GET", &path, None).await;
        assert_api_error(&answer, 400, "invalid_query", &path);
    }
    let page = get(&srv, "/api/rooms/lobby/history?limit=100&before_seq=1").await;
    assert_eq!(
        page,
        json!({"room_id": "lobby", "messages": [], "has_more": false})
    );
}

#[tokio::test]
async fn disconnect_closes_every_socket_of_the_user_with_4003() {
    let srv = TestServer::start();
    let (mut alice, _) = srv.room_client("lobby", "alice").await;
    let mut alice_n = notification_socket(&srv, "alice").await;
    let (mut bob, _) = srv.room_client("lobby", "bob").await;
    alice.expect("user_joined").await;
    srv.wait_health("connections", 3).await;

    let (status, answer) = api(srv.addr, "POST", "/api/users/alice/disconnect", None).await;
    assert_eq!(
        (status, answer),
        (200, json!({"user_id": "alice", "sockets_closed": 2}))
    );
    for socket in [&mut alice, &mut alice_n] {
        let (frame, texts) = socket.until_closed().await;
        let frame = frame.expect("a close frame");
        assert_eq!(u16::from(frame.code), 4003);
        assert_eq!(frame.reason.as_str(), "disconnected by operator");
        assert!(texts.is_empty(), "nothing before the close: {texts:?}");
    }
    let left = bob.expect("user_left").await;
    assert_eq!(
        (&left["user_id"], &left["room_id"]),
        (&json!("alice"), &json!("lobby"))
    );
    assert_eq!(bob.sync("lobby").await, ["bob"]);
    assert_eq!(
        get(&srv, "/api/rooms/lobby").await["members"],
        json!(["bob"])
    );
    srv.wait_health("connections", 1).await;

    let (status, answer) = api(srv.addr, "POST", "/api/users/alice/disconnect", None).await;
    assert_eq!(
        (status, answer),
        (200, json!({"user_id": "alice", "sockets_closed": 0}))
    );
    bob.ping().await;
}

#[tokio::test]
async fn bad_notification_bodies_get_their_codes() {
    let srv = TestServer::with(|c| c.max_text_chars = 10);
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let cases = [
        (json!({"title": "t", "message": "m"}), "missing_field"),
        (
            json!({"all": false, "title": "t", "message": "m"}),
            "missing_field",
        ),
        (
            json!({"user_id": "a", "all": true, "title": "t", "message": "m"}),
            "conflicting_fields",
        ),
        (
            json!({"user_id": "a", "user_ids": ["b"], "title": "t", "message": "m"}),
            "conflicting_fields",
        ),
        (
            json!({"all": "yes", "title": "t", "message": "m"}),
            "invalid_field",
        ),
        (
            json!({"user_id": "a b", "title": "t", "message": "m"}),
            "invalid_user",
        ),
        (
            json!({"user_id": 5, "title": "t", "message": "m"}),
            "invalid_user",
        ),
        (
            json!({"user_ids": "a", "title": "t", "message": "m"}),
            "invalid_field",
        ),
        (
            json!({"user_ids": [], "title": "t", "message": "m"}),
            "invalid_field",
        ),
        (
            json!({"user_ids": many, "title": "t", "message": "m"}),
            "invalid_field",
        ),
        (
            json!({"user_ids": ["a", 7], "title": "t", "message": "m"}),
            "invalid_user",
        ),
        (json!({"user_id": "a", "message": "m"}), "missing_field"),
        (json!({"user_id": "a", "title": "t"}), "missing_field"),
        (
            json!({"user_id": "a", "title": 5, "message": "m"}),
            "invalid_field",
        ),
        (
            json!({"user_id": "a", "title": "0123456789x", "message": "m"}),
            "text_too_long",
        ),
        (
            json!({"user_id": "a", "title": "t", "message": "0123456789x"}),
            "text_too_long",
        ),
        (
            json!({"user_id": "a", "title": "t", "message": "m", "notification_type": 1}),
            "invalid_field",
        ),
        (
            json!({"user_id": "a", "title": "t", "message": "m",
                   "notification_type": "0123456789x"}),
            "invalid_field",
        ),
        (
            json!({"user_id": "a", "title": "t", "message": "m", "data": [1]}),
            "invalid_field",
        ),
        (
            json!({"user_id": "a", "title": "t", "message": "m", "data": "x"}),
            "invalid_field",
        ),
        (json!(["user_id", "a"]), "not_an_object"),
    ];
    for (body, code) in cases {
        let answer = api(srv.addr, "POST", "/api/notifications", Some(&body)).await;
        assert_api_error(&answer, 400, code, &body.to_string());
    }
    // 1000 names are fine (all offline here).
    let answer = notify(
        &srv,
        json!({"user_ids": &many[..1000], "title": "t", "message": "m"}),
    )
    .await;
    assert_eq!(answer["offline"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn bad_message_bodies_get_the_sockets_codes() {
    let srv = TestServer::with(|c| c.max_text_chars = 10);
    let cases = [
        (json!({}), "missing_field"),
        (json!({"text": null}), "missing_field"),
        (json!({"text": ""}), "empty_text"),
        (json!({"text": "0123456789x"}), "text_too_long"),
        (json!({"text": 5}), "invalid_field"),
        (json!({"text": "hi", "user_id": "a b"}), "invalid_user"),
        (json!({"text": "hi", "user_id": ["a"]}), "invalid_user"),
        (
            json!({"text": "hi", "client_msg_id": "x".repeat(65)}),
            "invalid_field",
        ),
        (json!({"text": "hi", "client_msg_id": ""}), "invalid_field"),
        (json!({"text": "hi", "client_msg_id": 3}), "invalid_field"),
        (json!("hi"), "not_an_object"),
    ];
    for (body, code) in cases {
        let answer = api(srv.addr, "POST", "/api/rooms/lobby/messages", Some(&body)).await;
        assert_api_error(&answer, 400, code, &body.to_string());
    }
    // None of them was posted.
    let answer = api(srv.addr, "GET", "/api/rooms/lobby", None).await;
    assert_api_error(&answer, 404, "unknown_room", "nothing was posted");
    // Exactly the limit is fine, counted in characters.
    let posted = post(&srv, "lobby", json!({"text": "ééééééééé!"})).await;
    assert_eq!(posted["seq"], 1);
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_get_json_errors() {
    let srv = TestServer::with(|c| c.max_frame_bytes = 1024);
    let json_type = [("Content-Type", "application/json")];
    for path in ["/api/notifications", "/api/rooms/lobby/messages"] {
        let answer = api_raw(srv.addr, "POST", path, &json_type, "{nope").await;
        assert_api_error(&answer, 400, "invalid_json", path);
        let answer = api_raw(srv.addr, "POST", path, &json_type, "").await;
        assert_api_error(&answer, 400, "invalid_json", "an empty body");
        let body = json!({"user_id": "a", "title": "t", "message": "m", "text": "hi"}).to_string();
        let answer = api_raw(srv.addr, "POST", path, &[], &body).await;
        assert_api_error(&answer, 415, "unsupported_media_type", "no content type");
        let answer = api_raw(
            srv.addr,
            "POST",
            path,
            &[("Content-Type", "text/plain")],
            &body,
        )
        .await;
        assert_api_error(&answer, 415, "unsupported_media_type", "text/plain");
        // The limit is --max-frame-bytes (1024 here).
        let big = json!({"user_id": "a", "title": "t", "message": "m", "text": "x".repeat(2000)})
            .to_string();
        let answer = api_raw(srv.addr, "POST", path, &json_type, &big).await;
        assert_api_error(&answer, 413, "payload_too_large", "2 KB body");
    }
    // A body just under the limit is taken.
    let posted = post(&srv, "lobby", json!({ "text": "x".repeat(900) })).await;
    assert_eq!(posted["seq"], 1);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json_404s() {
    let srv = TestServer::start();
    for (method, path) in [
        ("GET", "/api"),
        ("GET", "/api/"),
        ("GET", "/api/nope"),
        ("GET", "/api/notifications"),
        ("DELETE", "/api/rooms"),
        ("POST", "/api/rooms"),
        ("PUT", "/api/rooms/lobby/messages"),
        ("GET", "/api/users/alice/disconnect"),
        ("GET", "/api/rooms/lobby/members"),
    ] {
        let answer = api(srv.addr, method, path, None).await;
        assert_api_error(&answer, 404, "not_found", &format!("{method} {path}"));
    }
}

#[tokio::test]
async fn with_an_api_key_every_route_needs_it() {
    let srv = TestServer::with(|c| c.api_key = Some("s3cret".into()));
    let routes: [(&str, &str, Option<Value>, u16); 7] = [
        (
            "POST",
            "/api/notifications",
            Some(json!({"all": true, "title": "t", "message": "m"})),
            200,
        ),
        ("GET", "/api/rooms", None, 200),
        (
            "POST",
            "/api/rooms/lobby/messages",
            Some(json!({"text": "hi"})),
            201,
        ),
        ("GET", "/api/rooms/lobby", None, 200),
        ("GET", "/api/rooms/lobby/history", None, 200),
        ("POST", "/api/users/alice/disconnect", None, 200),
        ("GET", "/api/nope", None, 404),
    ];
    for (method, path, body, ok) in &routes {
        let body = body.as_ref().map(Value::to_string).unwrap_or_default();
        let what = format!("{method} {path}");
        let mut headers = vec![("Content-Type", "application/json")];
        let answer = api_raw(srv.addr, method, path, &headers, &body).await;
        assert_api_error(
            &answer,
            401,
            "unauthorized",
            &format!("{what} without a key"),
        );
        for wrong in ["Bearer wrong", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
            headers.push(("Authorization", wrong));
            let answer = api_raw(srv.addr, method, path, &headers, &body).await;
            assert_api_error(
                &answer,
                401,
                "unauthorized",
                &format!("{what} with {wrong}"),
            );
            headers.pop();
        }
        headers.push(("Authorization", "Bearer s3cret"));
        let (status, answer) = api_raw(srv.addr, method, path, &headers, &body).await;
        assert_eq!(status, *ok, "{what} with the key: {answer}");
    }
    // The key is checked before the body is read.
    let answer = api_raw(
        srv.addr,
        "POST",
        "/api/notifications",
        &[("Content-Type", "application/json")],
        "{nope",
    )
    .await;
    assert_api_error(
        &answer,
        401,
        "unauthorized",
        "a malformed body without the key",
    );
    // /health stays open.
    assert_eq!(srv.health().await["status"], "ok");
}

/// Load balancers' health checks may send HEAD: the same status as GET, no body. Other
/// routes keep answering unknown methods with the JSON 404.
#[tokio::test]
async fn health_answers_head_without_a_body() {
    let srv = TestServer::start();
    let (status, head, body) = http_request_with_head(srv.addr, "HEAD", "/health", &[]).await;
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let (status, _, body) = http_request_with_head(srv.addr, "HEAD", "/api/rooms", &[]).await;
    assert_eq!((status, body.as_str()), (404, ""));
}

#[tokio::test]
async fn health_reports_status_uptime_and_counts() {
    let srv = TestServer::start();
    let (_alice, _) = srv.room_client("lobby", "alice").await;
    let _n = notification_socket(&srv, "bob").await;
    srv.wait_health("connections", 2).await;
    let h = srv.health().await;
    assert_eq!(h["status"], "ok");
    assert!(h["uptime_secs"].is_u64(), "{h}");
    assert_eq!(
        (
            &h["connections"],
            &h["notification_sockets"],
            &h["users"],
            &h["rooms"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(1)),
        "users counts users with a chat socket"
    );
}
