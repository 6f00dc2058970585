//! Hostile clients: what a well-behaved client never sends, sent by hand over raw sockets.
//! Each test is a repro of an attack that once cost the server memory, descriptors, log
//! space or bandwidth, and the bound that now holds.

use serde_json::json;

use crate::common::*;

/// `notification_type` becomes a CSS class in the browser chat: both push endpoints take
/// only the documented types, and name them when refusing another.
#[tokio::test]
async fn notification_types_outside_the_documented_set_are_refused() {
    let srv = TestServer::start();
    let mut n = Client::connect(&srv.url("/notifications/alice")).await;
    for bad in ["toast evil", "danger", "INFO", "info\"><img src=x>", ""] {
        let query: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
        let path = format!(
            "/send-notification/?user_id=alice&title=t&message=m&notification_type={query}"
        );
        let answer = http_post(srv.addr, &path, &[]).await;
        assert_api_error(&answer, 400, "invalid_field", bad);
        let message = answer.1["error"]["message"].as_str().unwrap().to_owned();
        for allowed in ["info", "success", "warning", "error"] {
            assert!(message.contains(allowed), "{message}");
        }
        let body = json!({"user_id": "alice", "title": "t", "message": "m",
                          "notification_type": bad});
        let answer = api(srv.addr, "POST", "/api/notifications", Some(&body)).await;
        assert_api_error(&answer, 400, "invalid_field", bad);
    }
    for good in ["info", "success", "warning", "error"] {
        let path =
            format!("/send-notification/?user_id=alice&title=t&message=m&notification_type={good}");
        let (status, answer) = http_post(srv.addr, &path, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(n.expect("notification").await["notification_type"], good);
    }
    // Nothing refused reached the socket: the next frame answers this ping.
    n.send(json!({"type": "ping"})).await;
    n.expect("pong").await;
}
