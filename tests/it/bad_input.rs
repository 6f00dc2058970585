//! Bad input: each mistake gets its `error` code and the connection goes on; bad URLs get a
//! JSON 400; oversized frames close with 1009; nobody else is disturbed.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn each_mistake_gets_its_code_and_the_socket_stays_usable() {
    let srv = TestServer::with(|c| {
        c.max_text_chars = 20;
        c.max_rooms_per_socket = 2;
    });
    let (mut observer, _) = srv.room_client("room", "observer").await;
    let mut bad = srv.client("bad").await;
    bad.join("room").await;
    assert_eq!(observer.expect("user_joined").await["user_id"], "bad");

    let long = "x".repeat(21);
    let cases: Vec<(String, &str)> = vec![
        ("{oops".into(), "invalid_json"),
        ("".into(), "invalid_json"),
        ("[1, 2, 3]".into(), "not_an_object"),
        ("42".into(), "not_an_object"),
        (r#"{"text": "no type"}"#.into(), "missing_type"),
        (r#"{"type": "shout"}"#.into(), "unknown_type"),
        (
            r#"{"type": "chat", "room_id": "room"}"#.into(),
            "missing_field",
        ),
        (
            r#"{"type": "chat", "room_id": "room", "text": 12}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type": "chat", "room_id": "room", "text": ""}"#.into(),
            "empty_text",
        ),
        (
            json!({"type": "chat", "room_id": "room", "text": long}).to_string(),
            "text_too_long",
        ),
        (
            r#"{"type": "typing", "room_id": "room", "is_typing": "yes"}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type": "join", "room_id": "no spaces"}"#.into(),
            "invalid_room",
        ),
        (
            r#"{"type": "join", "room_id": "<script>"}"#.into(),
            "invalid_room",
        ),
        (
            r#"{"type": "private", "to_user": "a/b", "content": "x"}"#.into(),
            "invalid_user",
        ),
        (
            r#"{"type": "chat", "text": "which room?"}"#.into(),
            "missing_field",
        ),
        (
            r#"{"type": "chat", "room_id": "elsewhere", "text": "x"}"#.into(),
            "not_in_room",
        ),
        (
            r#"{"type": "typing", "room_id": "elsewhere", "is_typing": true}"#.into(),
            "not_in_room",
        ),
        (
            r#"{"type": "get_users", "room_id": "elsewhere"}"#.into(),
            "not_in_room",
        ),
        (
            r#"{"type": "leave", "room_id": "elsewhere"}"#.into(),
            "not_in_room",
        ),
        (
            r#"{"type": "join", "room_id": "room"}"#.into(),
            "already_joined",
        ),
        (
            r#"{"type": "history", "room_id": "room", "limit": 1000}"#.into(),
            "invalid_field",
        ),
    ];
    for (frame, code) in &cases {
        bad.send_raw(frame).await;
        let e = bad.expect_error(code).await;
        assert!(
            e.get("room_id").is_none() || e["room_id"].is_string(),
            "{e}"
        );
    }
    // Binary frames have their own answer.
    bad.send_message(Message::binary(vec![1u8, 2, 3])).await;
    bad.expect_error("binary_unsupported").await;

    // The rooms-per-socket limit: one more room fits, the next does not.
    bad.join("second").await;
    bad.send(json!({"type": "join", "room_id": "third"})).await;
    bad.expect_error("too_many_rooms").await;

    // Still usable, and the observer saw none of it: the valid chat is its first frame.
    bad.chat("room", "finally valid").await;
    assert_eq!(bad.expect("chat").await["text"], "finally valid");
    let m = observer.expect("chat").await;
    assert_eq!(
        (m["text"].as_str(), m["seq"].as_u64()),
        (Some("finally valid"), Some(1))
    );
    observer.sync("room").await;
}

/// A chat refused before it reaches the server still names its room and `client_msg_id`
/// (when they are valid), so the client knows which message failed; on the seed's socket the
/// room is the URL's.
#[tokio::test]
async fn a_refused_chat_names_its_room_and_client_msg_id() {
    let srv = TestServer::with(|c| c.max_text_chars = 20);
    let mut c = srv.client("ann").await;
    c.join("room").await;
    let long = "x".repeat(21);
    let cases = [
        (
            json!({"type": "chat", "room_id": "room", "text": "", "client_msg_id": "c1"}),
            "empty_text",
            json!("room"),
            json!("c1"),
        ),
        (
            json!({"type": "chat", "room_id": "room", "text": long, "client_msg_id": "c2"}),
            "text_too_long",
            json!("room"),
            json!("c2"),
        ),
        (
            json!({"type": "chat", "room_id": "room", "text": 5, "client_msg_id": "c3"}),
            "invalid_field",
            json!("room"),
            json!("c3"),
        ),
        // What is itself invalid is not echoed.
        (
            json!({"type": "chat", "room_id": "no spaces", "text": "", "client_msg_id": "c4"}),
            "invalid_room",
            json!(null),
            json!("c4"),
        ),
        (
            json!({"type": "chat", "room_id": "room", "text": "x", "client_msg_id": ""}),
            "invalid_field",
            json!("room"),
            json!(null),
        ),
        (
            json!({"type": "typing", "room_id": "room", "is_typing": 1, "client_msg_id": "c5"}),
            "invalid_field",
            json!("room"),
            json!(null),
        ),
    ];
    for (frame, code, room, id) in &cases {
        c.send(frame.clone()).await;
        let e = c.expect_error(code).await;
        assert_eq!(
            (&e["room_id"], &e["client_msg_id"]),
            (room, id),
            "{frame} -> {e}"
        );
    }
    // On /ws a chat must name its room: the error still names the chat.
    c.send(json!({"type": "chat", "text": "x", "client_msg_id": "c6"}))
        .await;
    let e = c.expect_error("missing_field").await;
    assert_eq!(
        (&e["room_id"], &e["client_msg_id"]),
        (&json!(null), &json!("c6")),
        "{e}"
    );
    c.send_raw("{oops").await;
    let e = c.expect_error("invalid_json").await;
    assert!(
        e.get("room_id").is_none() && e.get("client_msg_id").is_none(),
        "{e}"
    );

    let (mut seed, _) = srv.room_client("lobby", "bob").await;
    seed.send(json!({"type": "chat", "text": "", "client_msg_id": "s1"}))
        .await;
    seed.expect_chat_error("empty_text", "lobby", "s1").await;
}

#[tokio::test]
async fn bad_names_in_the_url_get_a_json_400() {
    let srv = TestServer::start();
    let cases = [
        ("/ws/bad%20room/alice", "invalid_room"),
        ("/ws/lobby/%3Cscript%3E", "invalid_user"),
        (&*format!("/ws/lobby/{}", "u".repeat(65)), "invalid_user"),
        ("/ws?user_id=no%20way", "invalid_user"),
        ("/ws", "missing_user"),
    ];
    for (path, code) in cases {
        let (status, body) = Client::refused(&srv.url(path)).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A plain GET (no upgrade) is a JSON 400 too.
    let (status, body) = srv.get_json("/ws?user_id=alice").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("not_websocket"))
    );
    // The server is still fine.
    srv.client("alice").await.ping().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_carry_on() {
    let srv = TestServer::with(|c| c.max_frame_bytes = 1024);
    let (mut big, _) = srv.room_client("r", "big").await;
    let (mut other, _) = srv.room_client("r", "other").await;
    big.expect("user_joined").await;

    // Just under the limit is fine (the text limit is what stops it, not the frame limit).
    let fits = json!({"type": "chat", "text": "y".repeat(900)}).to_string();
    assert!(fits.len() < 1024);
    big.send_raw(&fits).await;
    assert_eq!(big.expect("chat").await["seq"], 1);
    assert_eq!(other.expect("chat").await["seq"], 1);

    big.send_raw(&json!({"type": "chat", "text": "z".repeat(2000)}).to_string())
        .await;
    assert_eq!(big.expect_close().await, 1009);
    assert_eq!(other.expect("user_left").await["user_id"], "big");
    other
        .send(json!({"type": "chat", "text": "still here"}))
        .await;
    assert_eq!(
        other.expect("chat").await["seq"],
        2,
        "the big frame was not posted"
    );
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled_within_the_limit() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    let srv = TestServer::with(|c| c.max_frame_bytes = 1024);
    let (mut c, _) = srv.room_client("f", "frag").await;
    let text = json!({"type": "chat", "text": "in two parts"}).to_string();
    let (a, b) = text.split_at(10);
    let frame = |is_final: bool, opcode: Data, payload: &str| {
        let header = FrameHeader {
            is_final,
            opcode: OpCode::Data(opcode),
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(
            header,
            payload.as_bytes().to_vec().into(),
        ))
    };
    c.send_message(frame(false, Data::Text, a)).await;
    c.send_message(frame(true, Data::Continue, b)).await;
    assert_eq!(c.expect("chat").await["text"], "in two parts");

    // Fragments adding up past the limit close with 1009.
    let part = "p".repeat(600);
    c.send_message(frame(false, Data::Text, &part)).await;
    c.send_message(frame(true, Data::Continue, &part)).await;
    assert_eq!(c.expect_close().await, 1009);
}
