//! Private conversations: one thread per person, opened like a room. While one is shown,
//! everything typed goes to that person until ✕ or Escape, and the page says so everywhere
//! a message's destination shows: the title, the placeholder, the colour, the Send button.

use serde_json::{Value, json};

use crate::harness::{ESCAPE, Page, Server, browser_test};

/// Where the page says a message goes: [title, placeholder, Send's label, composer in private
/// mode, the input's border colour, #private-mode shown].
const DESTINATION: &str = "const input = document.getElementById('message-input');
return [document.getElementById('room-title').textContent, input.placeholder,
        document.getElementById('send-btn').textContent,
        document.getElementById('composer').classList.contains('private'),
        getComputedStyle(input).borderTopColor,
        !document.getElementById('private-mode').hidden];";

/// The sidebar's threads as (peer, unread shown, current?).
const THREADS: &str = "return [...document.querySelectorAll('#thread-list li')].map((li) => {
  const badge = li.querySelector('.unread');
  return [li.dataset.peer, badge.hidden ? 0 : Number(badge.dataset.unread),
          li.classList.contains('current')];
});";

/// What #messages shows in a thread: private messages as (direction, text) and the unread
/// divider as "new".
const THREAD_SHOWN: &str = "return [...document.querySelectorAll('#messages li')]
  .filter((li) => !li.classList.contains('date-divider'))
  .map((li) => li.classList.contains('unread-divider') ? 'new'
    : [li.classList.contains('in') ? 'in' : 'out', li.querySelector('.text').textContent]);";

/// The private messages in the side list, as (direction, from, to, text).
const PRIVATES: &str = "return [...document.querySelectorAll('#privates li.private')].map((li) =>
  [li.classList.contains('in') ? 'in' : 'out', li.dataset.from, li.dataset.to,
   li.querySelector('.text').textContent]);";

async fn destination(page: &Page) -> Value {
    page.js(DESTINATION, vec![]).await
}

#[test]
fn private_mode_is_unmistakable_and_each_person_has_a_thread() {
    browser_test(
        "private_mode_is_unmistakable_and_each_person_has_a_thread",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            let bob = b.page("bob", &server.url("/")).await;
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;
            alice.join("lobby").await;
            bob.join("lobby").await;
            alice.wait_members(&["alice", "bob"]).await;

            let in_room = destination(&alice).await;
            assert_eq!(
                in_room.as_array().unwrap()[..4],
                json!(["# lobby", "Message #lobby", "Send to #lobby", false])
                    .as_array()
                    .unwrap()[..],
            );
            assert_eq!(in_room[5], false);

            // Clicking a member opens their thread: the title, the placeholder, the button and
            // the colour all say "bob".
            alice
                .click("#members li[data-user=\"bob\"] button.member-pm")
                .await;
            let private = destination(&alice).await;
            assert_eq!(
                private.as_array().unwrap()[..4],
                json!(["Private with bob", "Private to bob", "Send to bob", true])
                    .as_array()
                    .unwrap()[..],
            );
            assert_eq!(private[5], true);
            assert_ne!(private[4], in_room[4], "the composer changes colour");
            assert_eq!(alice.js(THREADS, vec![]).await, json!([["bob", 0, true]]));
            let lobby_current = alice
                .js(
                    "return document.querySelector('#room-list li[data-room=\"lobby\"]')
                       .classList.contains('current');",
                    vec![],
                )
                .await;
            assert_eq!(lobby_current, false, "the room is not what is shown");

            // It sticks: both go privately, none to the room.
            alice.say("one").await;
            alice.say("two").await;
            bob.wait_eq(
                "both private messages",
                PRIVATES,
                vec![],
                json!([["in", "alice", "bob", "one"], ["in", "alice", "bob", "two"]]),
            )
            .await;
            alice
                .wait_eq(
                    "the thread",
                    THREAD_SHOWN,
                    vec![],
                    json!([["out", "one"], ["out", "two"]]),
                )
                .await;

            // Escape: back to the room, and what is typed goes there.
            alice.keys(ESCAPE).await;
            alice
                .wait_eq("back in the room", DESTINATION, vec![], in_room.clone())
                .await;
            alice.say("for everyone").await;
            bob.wait_messages(&[("alice", "for everyone")]).await;
            alice.wait_messages(&[("alice", "for everyone")]).await;

            // Bob answers privately while Alice reads the room: an unread in his thread.
            bob.say("/msg alice three").await;
            alice
                .wait_eq(
                    "bob's thread unread",
                    THREADS,
                    vec![],
                    json!([["bob", 1, false]]),
                )
                .await;
            assert_eq!(
                alice.js("return document.title;", vec![]).await,
                json!("(1) roomcast")
            );
            // Bob has a thread with Alice too, from her messages and his.
            bob.wait_eq(
                "alice's thread",
                THREADS,
                vec![],
                json!([["alice", 2, false]]),
            )
            .await;

            // Selecting the thread in the sidebar, like a room: the conversation, with the
            // unread one under a divider, and the count gone.
            alice
                .click("#thread-list li[data-peer=\"bob\"] button.thread-select")
                .await;
            alice
                .wait_eq(
                    "the conversation",
                    THREAD_SHOWN,
                    vec![],
                    json!([["out", "one"], ["out", "two"], "new", ["in", "three"]]),
                )
                .await;
            assert_eq!(alice.js(THREADS, vec![]).await, json!([["bob", 0, true]]));
            assert_eq!(
                alice.text("#room-title").await,
                "Private with bob".to_owned()
            );
            // Nothing private among the room's messages.
            assert_eq!(alice.messages().await, json!([]));

            // ✕: back to the room; the thread stays in the list.
            alice.click("#private-cancel").await;
            alice
                .wait_eq("back in the room", DESTINATION, vec![], in_room)
                .await;
            assert_eq!(alice.js(THREADS, vec![]).await, json!([["bob", 0, false]]));
            alice.wait_messages(&[("alice", "for everyone")]).await;
        },
    );
}
