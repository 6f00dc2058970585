//! Hostile clients: what a well-behaved client never sends, sent by hand over raw sockets.
//! Each test is a repro of an attack that once cost the server memory, descriptors, log
//! space or bandwidth, and the bound that now holds.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Writes `request` on a fresh connection and reads until the server ends the connection;
/// fails if it is still open after `TIMEOUT`.
async fn answer_then_close(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still open after {TIMEOUT:?}; got: {}",
                    String::from_utf8_lossy(&raw)
                )
            });
        match read {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&raw).into_owned(),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A request whose head or body never finishes is answered and its connection closed, within
/// `--request-timeout-ms`: whether the handler reads the body (the API's JSON) or not (the
/// seed's push), chunked or with a length.
#[tokio::test]
async fn requests_that_never_finish_are_answered_and_closed() {
    // The shortest allowed: the head's deadline is kept to half a second.
    let srv = TestServer::with(|c| c.request_timeout_ms = 1000);
    let cases = [
        (
            "an API body that stops",
            "POST /api/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{\"user_id\":",
            "HTTP/1.1 408",
        ),
        (
            "a chunked API body that stops",
            "POST /api/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
            "HTTP/1.1 408",
        ),
        (
            "a chunked body the handler does not read",
            "POST /send-notification/?user_id=a&title=t&message=m HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            "HTTP/1.1 200",
        ),
        (
            "a body with a length the handler does not read",
            "POST /send-notification/?user_id=a&title=t&message=m HTTP/1.1\r\nHost: x\r\n\
             Content-Length: 100\r\n\r\nabc",
            "HTTP/1.1 200",
        ),
        (
            "a head that stops",
            "GET /health HTTP/1.1\r\nHost: x\r\n",
            "HTTP/1.1 408",
        ),
    ];
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|(_, request, _)| answer_then_close(srv.addr, request)),
    )
    .await;
    for ((what, _, status), answer) in cases.iter().zip(answers) {
        assert!(answer.starts_with(status), "{what}: {answer}");
        if status.ends_with("408") && answer.contains('{') {
            assert!(
                answer.contains(r#""code":"request_timeout""#),
                "{what}: {answer}"
            );
        }
    }
    srv.client("fine").await.ping().await;
}

/// All connections together are bounded across workers: past the bound a request gets a
/// fast 503 (not a hang) and its connection is closed; once connections go, service resumes.
#[tokio::test]
async fn past_the_connection_bound_requests_get_503_and_service_resumes() {
    const IDLE: usize = 30;
    // 20 WebSockets plus 4 more for HTTP: 24 connections at most.
    let srv = ChildServer::spawn(&[
        "--max-connections",
        "20",
        "--max-http-connections",
        "4",
        "--request-timeout-ms",
        "60000",
    ]);
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // The server has accepted them all (it holds them beside its listeners): any new
    // connection is past the bound.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while srv.socket_count() <= IDLE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, head, body) = http_request_with_head(srv.addr, "GET", "/health", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, body) = Client::refused(&srv.url("/ws?user_id=late")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );

    // Once they go, service resumes (as soon as the server has seen them go).
    drop(idle);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let metrics = loop {
        let (status, body) = http_get_raw(srv.addr, "/metrics").await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "service did not resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let refused = metric_value(&metrics, "roomcast_connections_refused_total");
    assert!(refused.is_some_and(|n| n >= 2.0), "{metrics}");
    let mut c = Client::connect(&srv.url("/ws?user_id=next")).await;
    c.expect("welcome").await;
    c.ping().await;
}

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
