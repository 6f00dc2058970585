//! Notifications pushed over HTTP show as toasts.

use serde_json::json;

use crate::common::{TIMEOUT, http_post};
use crate::harness::{Server, browser_test};

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_notification_pushed_over_http_shows_as_a_toast() {
    browser_test(
        "a_notification_pushed_over_http_shows_as_a_toast",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            alice.connect_as("alice").await;
            alice
                .wait_eq(
                    "the notification socket open",
                    "return document.body.dataset.notify;",
                    vec![],
                    json!("connected"),
                )
                .await;

            let title = "Order <b>shipped</b>";
            let message = r#"Parcel 42 & <img src=x onerror="window.__pwned=1"> is on its way"#;
            let path = format!(
                "/send-notification/?user_id=alice&title={}&message={}&notification_type=success",
                encode(title),
                encode(message)
            );
            // The page's socket is open, but the server may register it a moment later: push
            // until one socket received it (an unsent push shows nothing, so none is doubled).
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            let notification = loop {
                let (status, body) = http_post(server.addr, &path, &[]).await;
                assert_eq!(status, 200, "{body}");
                if body["sent"] == true {
                    break body["notification"].clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no notification socket of alice received it: {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            let id = notification["id"].as_str().expect("an id").to_owned();

            alice
                .wait_eq(
                    "the toast",
                    "return [...document.querySelectorAll('#toasts div.toast')].map((t) =>
                   [t.dataset.id, t.querySelector('.toast-title').textContent,
                    t.querySelector('.toast-message').textContent]);",
                    vec![],
                    json!([[id, title, message]]),
                )
                .await;
            let inert = alice
                .js(
                    "return [document.querySelectorAll('#toasts b, #toasts img').length,
                         typeof window.__pwned];",
                    vec![],
                )
                .await;
            assert_eq!(inert, json!([0, "undefined"]));

            // Dismissed with its button.
            alice
                .click(&format!(
                    "#toasts div.toast[data-id=\"{id}\"] button.toast-dismiss"
                ))
                .await;
            alice
                .wait_eq(
                    "no toast",
                    "return document.querySelectorAll('#toasts .toast').length;",
                    vec![],
                    json!(0),
                )
                .await;
        },
    );
}
