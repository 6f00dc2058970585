//! Notifications pushed over HTTP show as toasts.

use serde_json::{Value, json};

use crate::common::{TIMEOUT, http_post};
use crate::harness::{Page, Server, browser_test};

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

/// Pushes the notification `path` describes; returns it once a socket received it. The page's
/// socket is open, but the server may register it a moment later: push until one socket
/// received it (an unsent push shows nothing, so none is doubled).
async fn push(server: &Server, path: &str) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = http_post(server.addr, path, &[]).await;
        assert_eq!(status, 200, "{body}");
        if body["sent"] == true {
            return body["notification"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification socket received it: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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
            let notification = push(&server, &path).await;
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

/// For every toast: whether it overlaps the message input or the Send button, and whether
/// each of those two is what the browser finds at its own centre (nothing on top of it).
const COVERED: &str = "
const rect = (e) => e.getBoundingClientRect();
const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
const targets = ['message-input', 'send-btn'].map((id) => document.getElementById(id));
targets[1].scrollIntoView({ block: 'center' });
const toasts = [...document.querySelectorAll('#toasts .toast')];
const onTop = targets.map((t) => {
  const r = rect(t);
  const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
  return hit === t || t.contains(hit);
});
return [toasts.length, toasts.some((toast) => targets.some((t) => overlap(rect(toast), rect(t)))),
        onTop];";

async fn wait_toasts(page: &Page, n: usize) {
    page.wait_eq(
        &format!("{n} toasts"),
        "return document.querySelectorAll('#toasts .toast').length;",
        vec![],
        json!(n),
    )
    .await;
}

#[test]
fn toasts_leave_the_composer_uncovered_and_each_can_be_dismissed() {
    browser_test(
        "toasts_leave_the_composer_uncovered_and_each_can_be_dismissed",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            alice.connect_as("alice").await;
            alice.join("desk").await;
            alice
                .wait_eq(
                    "the notification socket open",
                    "return document.body.dataset.notify;",
                    vec![],
                    json!("connected"),
                )
                .await;
            // As many as are kept (5), with long messages.
            let long = "Your export is ready and this message goes on and on, long enough to wrap over several lines in a narrow toast".replace(' ', "%20");
            let mut ids = Vec::new();
            for i in 0..5 {
                let n = push(
                    &server,
                    &format!("/send-notification/?user_id=alice&title=Export%20{i}&message={long}"),
                )
                .await;
                ids.push(n["id"].as_str().unwrap().to_owned());
            }
            wait_toasts(&alice, 5).await;

            // Desktop, a short window, a phone: never over the composer.
            for (width, height) in [(1200, 900), (1000, 640), (390, 844)] {
                alice.set_window_size(width, height).await;
                alice
                    .wait_eq(
                        &format!("the composer uncovered at {width}x{height}"),
                        COVERED,
                        vec![],
                        json!([5, false, [true, true]]),
                    )
                    .await;
            }

            // Each has its close button.
            for (i, id) in ids.iter().enumerate() {
                alice
                    .click(&format!(
                        "#toasts .toast[data-id=\"{id}\"] button.toast-dismiss"
                    ))
                    .await;
                wait_toasts(&alice, 4 - i).await;
            }
        },
    );
}
