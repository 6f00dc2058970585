//! The process: start-up line, signals, the served page, health.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

async fn shuts_down_cleanly_on(signal: &str) {
    let mut srv = ChildServer::spawn(&[]);
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let mut c = Client::connect(&srv.url(&format!("/ws/room/{name}"))).await;
        c.expect("welcome").await;
        c.read_joined().await;
        clients.push(c);
    }
    srv.signal(signal);
    let started = Instant::now();
    for c in &mut clients {
        // Presence notices may precede the close; the close must be 1001.
        let (frame, _) = c.until_closed().await;
        assert_eq!(u16::from(frame.expect("a close frame").code), 1001);
    }
    let status = loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not exit after SIG{signal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    shuts_down_cleanly_on("TERM").await;
}

#[tokio::test]
async fn sigint_closes_every_socket_with_1001_and_exits_0() {
    shuts_down_cleanly_on("INT").await;
}

/// The chat page, its entry module and every module under static/js/, embedded and with
/// `--static-dir`, each with a JavaScript content type (a module with another type does not
/// run).
#[tokio::test]
async fn the_browser_chat_is_served_at_the_root_with_its_modules() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/static"));
    let mut modules: Vec<String> = std::fs::read_dir(dir.join("js"))
        .expect("static/js")
        .map(|e| format!("/js/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    modules.sort();
    assert!(modules.len() > 5, "{modules:?}");
    modules.push("/app.js".to_owned());
    for static_dir in [None, Some(dir.to_path_buf())] {
        let srv = TestServer::with(|c| c.static_dir = static_dir.clone());
        let (status, html) = http_get_raw(srv.addr, "/").await;
        assert_eq!(status, 200);
        assert!(
            html.contains("<html") && html.contains("<script type=\"module\" src=\"/app.js\""),
            "{html}"
        );
        for path in &modules {
            let (status, head, js) = http_request_with_head(srv.addr, "GET", path, &[]).await;
            assert_eq!(status, 200, "{static_dir:?} {path}");
            assert!(
                head.contains("content-type: text/javascript"),
                "{static_dir:?} {path}: {head}"
            );
            assert!(!js.is_empty(), "{path}");
        }
        let (status, css) = http_get_raw(srv.addr, "/style.css").await;
        assert_eq!((status, css.is_empty()), (200, false));
    }
}

#[tokio::test]
async fn health_reports_live_counts() {
    let srv = TestServer::start();
    let h = srv.health().await;
    assert_eq!(h["status"], "ok");
    assert_eq!(
        (h["connections"].as_u64(), h["rooms"].as_u64()),
        (Some(0), Some(0))
    );
    let (_a, _) = srv.room_client("r1", "a").await;
    let mut b = srv.client("b").await;
    b.join("r2").await;
    b.send(json!({"type": "join", "room_id": "r1"})).await;
    b.read_joined().await;
    let h = srv.health().await;
    assert_eq!(
        (
            h["connections"].as_u64(),
            h["users"].as_u64(),
            h["rooms"].as_u64()
        ),
        (Some(2), Some(2), Some(2))
    );
}
