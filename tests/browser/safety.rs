//! Text from users is text: markup in a message shows as typed and does nothing.

use serde_json::json;

use crate::harness::{Page, Server, browser_test};

const PAYLOAD: &str = r#"<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b> & "quotes" <svg onload="window.__pwned=3">"#;

/// Elements a payload could have created, anywhere in the page, and whether it ran.
async fn assert_inert(page: &Page) {
    let v = page
        .js(
            "return [document.querySelectorAll('img, svg, b, iframe, object, embed').length,
                     document.querySelectorAll('script').length,
                     typeof window.__pwned];",
            vec![],
        )
        .await;
    // The page itself has exactly one script element (app.js).
    assert_eq!(v, json!([0, 1, "undefined"]), "{}", page.label);
}

#[test]
fn an_html_payload_shows_as_typed_and_runs_nothing() {
    browser_test(
        "an_html_payload_shows_as_typed_and_runs_nothing",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            let bob = b.page("bob", &server.url("/")).await;
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;
            alice.join("xss").await;
            bob.join("xss").await;
            alice.wait_members(&["alice", "bob"]).await;

            alice.say(PAYLOAD).await;
            bob.wait_messages(&[("alice", PAYLOAD)]).await;
            alice.wait_messages(&[("alice", PAYLOAD)]).await;

            alice.say(&format!("/msg bob {PAYLOAD}")).await;
            bob.wait_eq(
            "the private payload",
            "return [...document.querySelectorAll('#privates li.in .text')].map((e) => e.textContent);",
            vec![],
            json!([PAYLOAD]),
        )
        .await;

            // A later message has gone through both pages, so an image error handler or a
            // script would have had its turn by now.
            alice.say("after").await;
            bob.wait_messages(&[("alice", PAYLOAD), ("alice", "after")])
                .await;
            alice
                .wait_messages(&[("alice", PAYLOAD), ("alice", "after")])
                .await;
            assert_inert(&alice).await;
            assert_inert(&bob).await;
        },
    );
}
