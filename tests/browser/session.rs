//! Who the page is signed in as: the name is fixed until Sign out, and a reload signs in
//! again with the rooms, unread counts and private threads as they were, fetching nothing
//! twice.

use serde_json::{Value, json};

use crate::harness::{Page, Server, browser_test};

/// [name field disabled, Connect disabled, Sign out shown, Sign out's label, name shown].
const SIGN_IN_STATE: &str = "const n = document.getElementById('name-input');
const out = document.getElementById('disconnect-btn');
return [n.disabled, document.getElementById('connect-btn').disabled, !out.hidden,
        out.textContent, n.value];";

/// The room list as (room, unread shown, current?).
const ROOMS: &str = "return [...document.querySelectorAll('#room-list li')].map((li) => {
  const badge = li.querySelector('.unread');
  return [li.dataset.room, badge.hidden ? 0 : Number(badge.dataset.unread),
          li.classList.contains('current')];
});";

/// The sidebar's threads as (peer, unread shown, current?).
const THREADS: &str = "return [...document.querySelectorAll('#thread-list li')].map((li) => {
  const badge = li.querySelector('.unread');
  return [li.dataset.peer, badge.hidden ? 0 : Number(badge.dataset.unread),
          li.classList.contains('current')];
});";

#[test]
fn the_name_is_fixed_while_signed_in_and_sign_out_frees_it() {
    browser_test(
        "the_name_is_fixed_while_signed_in_and_sign_out_frees_it",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            let bob = b.page("bob", &server.url("/")).await;
            let before = alice.js(SIGN_IN_STATE, vec![]).await;
            assert_eq!(before.as_array().unwrap()[..3], [false, false, false]);
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;
            assert_eq!(
                alice.js(SIGN_IN_STATE, vec![]).await,
                json!([true, true, true, "Sign out", "alice"])
            );
            alice.join("den").await;
            bob.join("den").await;
            bob.wait_members(&["alice", "bob"]).await;

            // Sign out: disconnected, the rooms gone from the page, the name free again.
            alice.click("#disconnect-btn").await;
            alice.wait_conn("offline").await;
            alice
                .wait_eq(
                    "signed out",
                    SIGN_IN_STATE,
                    vec![],
                    json!([false, false, false, "Sign out", "alice"]),
                )
                .await;
            assert_eq!(alice.js(ROOMS, vec![]).await, json!([]));
            bob.wait_members(&["bob"]).await;

            // Another name is a new identity: none of Alice's rooms come with it.
            alice.connect_as("carol").await;
            assert_eq!(
                alice.text("#conn-detail").await,
                "as carol".to_owned(),
                "connected as carol"
            );
            assert_eq!(
                alice.js(SIGN_IN_STATE, vec![]).await,
                json!([true, true, true, "Sign out", "carol"])
            );
            assert_eq!(alice.js(ROOMS, vec![]).await, json!([]));
            bob.wait_members(&["bob"]).await;

            // And Alice's rooms were forgotten at Sign out: signing in as her starts empty.
            alice.click("#disconnect-btn").await;
            alice.wait_conn("offline").await;
            alice.connect_as("alice").await;
            assert_eq!(alice.js(ROOMS, vec![]).await, json!([]));
        },
    );
}

/// Records, in this window, every frame the page sends and receives on its chat socket
/// (`window.__wsLog`), from before the page starts: installed with `add_init_script`, so a
/// reloaded page is recorded from its first frame.
const WS_RECORDER: &str = r#"
(() => {
  const Real = window.WebSocket;
  window.__wsLog = { sent: [], received: [] };
  window.WebSocket = class extends Real {
    constructor(url, protocols) {
      super(url, protocols);
      if (!/\/ws(\?|$)/.test(String(url))) return;
      this.addEventListener('message', (ev) => {
        try { window.__wsLog.received.push(JSON.parse(ev.data)); } catch {}
      });
    }
    send(data) {
      if (/\/ws(\?|$)/.test(String(this.url))) {
        try { window.__wsLog.sent.push(JSON.parse(data)); } catch {}
      }
      super.send(data);
    }
  };
})();
"#;

async fn wait_rooms(page: &Page, want: Value) {
    page.wait_eq(&format!("rooms {want}"), ROOMS, vec![], want)
        .await;
}

#[test]
fn a_reload_rejoins_the_rooms_with_since_seq_and_keeps_unread_counts_and_threads() {
    browser_test(
        "a_reload_rejoins_the_rooms_with_since_seq_and_keeps_unread_counts_and_threads",
        |b| async move {
            let server = Server::start();
            let alice = b
                .page_with_init_script("alice", WS_RECORDER, &server.url("/"))
                .await;
            let bob = b.page("bob", &server.url("/")).await;
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;
            alice.join("dev").await;
            alice.join("lobby").await;
            bob.join("dev").await;
            bob.say("d1").await;
            bob.say("d2").await;
            bob.join("lobby").await;
            bob.say("l1").await;
            bob.say("/msg alice psst").await;
            alice.wait_messages(&[("bob", "l1")]).await;
            alice
                .wait_eq(
                    "bob's private message",
                    THREADS,
                    vec![],
                    json!([["bob", 1, false]]),
                )
                .await;
            wait_rooms(&alice, json!([["dev", 2, false], ["lobby", 0, true]])).await;

            alice.reload().await;

            // Signed in again as alice, both rooms rejoined, counts and thread as they were.
            alice.wait_conn("connected").await;
            alice.wait_room_joined("dev").await;
            alice.wait_room_joined("lobby").await;
            wait_rooms(&alice, json!([["dev", 2, false], ["lobby", 0, true]])).await;
            assert_eq!(alice.js(THREADS, vec![]).await, json!([["bob", 1, false]]));
            alice.wait_messages(&[("bob", "l1")]).await;
            assert_eq!(alice.text("#conn-detail").await, "as alice".to_owned());

            // Each room was joined asking only for what came after what the page had, and
            // nothing it had came again.
            let log = alice.js("return window.__wsLog;", vec![]).await;
            let joins: Vec<&Value> = log["sent"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["type"] == "join")
                .collect();
            assert_eq!(
                joins,
                [
                    &json!({"type": "join", "room_id": "dev", "since_seq": 2}),
                    &json!({"type": "join", "room_id": "lobby", "since_seq": 1}),
                ]
            );
            let chats: Vec<&Value> = log["received"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["type"] == "chat")
                .collect();
            assert!(chats.is_empty(), "fetched again: {chats:?}");

            // Counting goes on from there.
            bob.join("dev").await;
            bob.say("d3").await;
            wait_rooms(&alice, json!([["dev", 3, false], ["lobby", 0, true]])).await;

            // Opening dev: the messages kept across the reload and the new one, the divider
            // above the first unread.
            alice
                .click("#room-list li[data-room=\"dev\"] button.room-select")
                .await;
            alice
                .wait_messages(&[("bob", "d1"), ("bob", "d2"), ("bob", "d3")])
                .await;
            let divider_before = alice
                .js(
                    "const d = document.querySelector('#messages li.unread-divider');
                     return d && d.nextElementSibling.dataset.seq;",
                    vec![],
                )
                .await;
            assert_eq!(divider_before, json!("1"));

            // The thread kept its message and its unread one.
            alice
                .click("#thread-list li[data-peer=\"bob\"] button.thread-select")
                .await;
            alice
                .wait_eq(
                    "the thread",
                    "return [...document.querySelectorAll('#messages li')]
                       .filter((li) => !li.classList.contains('date-divider'))
                       .map((li) => li.classList.contains('unread-divider') ? 'new'
                         : li.querySelector('.text').textContent);",
                    vec![],
                    json!(["new", "psst"]),
                )
                .await;
        },
    );
}
