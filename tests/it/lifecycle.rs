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

/// With `--static-dir`, a path actix-files refuses (a hidden segment such as `/.secret` or
/// `/sub/.git/config`, even percent-encoded or reached by `..`; an encoded `/`), a directory
/// without an index and a path with no file all get the JSON 404 of any unknown path
/// (docs/API.md), as does another method: never the hidden file, never actix-files' own 400
/// or 405 in text/plain. The files themselves are served with their types.
#[tokio::test]
async fn static_dir_answers_hidden_and_refused_paths_with_the_json_404() {
    const SECRET: &str = "roomcast-test-secret-7f3a";
    let dir = temp_dir("static-404");
    std::fs::write(
        dir.join("index.html"),
        "<html><body>the test page</body></html>",
    )
    .unwrap();
    std::fs::write(dir.join("style.css"), "body { color: red }").unwrap();
    std::fs::write(dir.join(".secret"), SECRET).unwrap();
    std::fs::create_dir_all(dir.join("sub/.git")).unwrap();
    std::fs::write(dir.join("sub/.git/config"), SECRET).unwrap();
    let srv = TestServer::with(|c| c.static_dir = Some(dir.clone()));

    let (status, head, page) = http_request_with_head(srv.addr, "GET", "/", &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("the test page"), "{page}");
    let (status, head, css) = http_request_with_head(srv.addr, "GET", "/style.css", &[]).await;
    assert_eq!((status, css.as_str()), (200, "body { color: red }"));
    assert!(head.contains("content-type: text/css"), "{head}");

    let json_404 = |method: &str, path: &str, status: u16, head: &str, body: &str| {
        let what = format!("{method} {path}");
        assert!(
            !body.contains(SECRET),
            "{what} served the hidden file: {body}"
        );
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}\n\n{body}"
        );
        let body: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
        assert_api_error(&(status, body), 404, "not_found", &what);
    };
    for path in [
        "/no-such-page.html",
        "/.secret",
        "/%2esecret",
        "/sub/.git/config",
        "/sub/.git/",
        "/.git/config",
        "/sub%2f.git%2fconfig",
        "/sub",
        "/sub/",
    ] {
        let (status, head, body) = http_request_with_head(srv.addr, "GET", path, &[]).await;
        json_404("GET", path, status, &head, &body);
    }
    let (status, head, body) = http_request_with_head(srv.addr, "POST", "/index.html", &[]).await;
    json_404("POST", "/index.html", status, &head, &body);
    // `..` as it is on the wire: an HTTP client would resolve it before sending.
    let path = "/sub/../.secret";
    let answer = answer_then_close(
        srv.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    json_404(
        "GET",
        path,
        status.unwrap_or_else(|| panic!("{head}")),
        &head.to_ascii_lowercase(),
        body,
    );

    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
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
