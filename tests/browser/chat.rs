//! Talking in one room: messages both ways, history, members, typing, private messages.

use serde_json::{Value, json};

use crate::harness::{BACKSPACE, ENTER, browser_test};
use crate::harness::{Page, Server};

/// Opens the chat as `name` in a new window and connects.
async fn person(b: &crate::harness::Browser, server: &Server, name: &str) -> Page {
    let page = b.page(name, &server.url("/")).await;
    page.connect_as(name).await;
    page
}

fn seqs(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Users whose messages carry the class `own` on this page.
fn own_users(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["classes"].as_array().unwrap().contains(&json!("own")))
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_users_exchange_messages_both_ways_in_order() {
    browser_test(
        "two_users_exchange_messages_both_ways_in_order",
        |b| async move {
            let server = Server::start();
            let alice = person(&b, &server, "alice").await;
            let bob = person(&b, &server, "bob").await;
            alice.join("lobby").await;
            bob.join("lobby").await;

            alice.say("hello bob").await;
            alice.say("how are you?").await;
            bob.wait_messages(&[("alice", "hello bob"), ("alice", "how are you?")])
                .await;
            bob.say("fine, thanks").await;
            bob.say("and you?").await;
            alice
                .wait_messages(&[
                    ("alice", "hello bob"),
                    ("alice", "how are you?"),
                    ("bob", "fine, thanks"),
                    ("bob", "and you?"),
                ])
                .await;
            alice.say("great").await;
            let want = [
                ("alice", "hello bob"),
                ("alice", "how are you?"),
                ("bob", "fine, thanks"),
                ("bob", "and you?"),
                ("alice", "great"),
            ];
            let seen_by_alice = alice.wait_messages(&want).await;
            let seen_by_bob = bob.wait_messages(&want).await;

            assert_eq!(seqs(&seen_by_alice), [1, 2, 3, 4, 5]);
            assert_eq!(seqs(&seen_by_bob), [1, 2, 3, 4, 5]);
            assert_eq!(own_users(&seen_by_alice), ["alice"; 3]);
            assert_eq!(own_users(&seen_by_bob), ["bob"; 2]);
            // The input is cleared after each send.
            assert_eq!(
                alice
                    .js(
                        "return document.getElementById('message-input').value;",
                        vec![]
                    )
                    .await,
                json!("")
            );
        },
    );
}

#[test]
fn a_late_joiner_sees_the_history() {
    browser_test("a_late_joiner_sees_the_history", |b| async move {
        let server = Server::start();
        let alice = person(&b, &server, "alice").await;
        alice.join("history").await;
        for text in ["first", "second", "third"] {
            alice.say(text).await;
        }
        let want = [("alice", "first"), ("alice", "second"), ("alice", "third")];
        alice.wait_messages(&want).await;

        let bob = person(&b, &server, "bob").await;
        bob.join("history").await;
        let seen = bob.wait_messages(&want).await;
        assert_eq!(seqs(&seen), [1, 2, 3]);
        assert!(own_users(&seen).is_empty(), "{seen}");
        bob.wait_members(&["alice", "bob"]).await;
    });
}

/// The notices (`li.notice`) shown in the current room, as (user, text).
async fn notices(page: &Page) -> Value {
    page.js(
        "return [...document.querySelectorAll('#messages li.notice')]
           .map((li) => [li.dataset.user, li.querySelector('.text').textContent]);",
        vec![],
    )
    .await
}

#[test]
fn the_member_list_follows_joins_and_leaves() {
    browser_test("the_member_list_follows_joins_and_leaves", |b| async move {
        let server = Server::start();
        let alice = person(&b, &server, "alice").await;
        alice.join("hall").await;
        alice.wait_members(&["alice"]).await;

        let bob = person(&b, &server, "bob").await;
        bob.join("hall").await;
        alice.wait_members(&["alice", "bob"]).await;
        bob.wait_members(&["alice", "bob"]).await;

        bob.click("#leave-btn").await;
        alice.wait_members(&["alice"]).await;
        bob.wait_eq(
            "bob's room list to be empty",
            "return document.querySelectorAll('#room-list li').length;",
            vec![],
            json!(0),
        )
        .await;
        assert_eq!(
            notices(&alice).await,
            json!([["bob", "bob joined the room"], ["bob", "bob left the room"]])
        );

        // Back again: listed again, and a third notice.
        bob.join("hall").await;
        alice.wait_members(&["alice", "bob"]).await;
        alice
            .wait_eq(
                "three notices",
                "return document.querySelectorAll('#messages li.notice').length;",
                vec![],
                json!(3),
            )
            .await;
    });
}

#[test]
fn the_typing_indicator_appears_and_clears() {
    browser_test("the_typing_indicator_appears_and_clears", |b| async move {
        let server = Server::start();
        let alice = person(&b, &server, "alice").await;
        let bob = person(&b, &server, "bob").await;
        alice.join("desk").await;
        bob.join("desk").await;
        alice.wait_members(&["alice", "bob"]).await;

        let typing = "return document.getElementById('typing').textContent;";
        bob.type_into("#message-input", "hel").await;
        alice
            .wait_eq("bob typing", typing, vec![], json!("bob is typing…"))
            .await;
        // Bob's own page does not show himself typing.
        assert_eq!(bob.js(typing, vec![]).await, json!(""));

        // Emptying the input tells the others at once.
        bob.type_into("#message-input", &BACKSPACE.repeat(3)).await;
        alice
            .wait_eq("the indicator cleared", typing, vec![], json!(""))
            .await;

        // Typing again and sending: the indicator goes, the message comes.
        bob.type_into("#message-input", "hi").await;
        alice
            .wait_eq("bob typing again", typing, vec![], json!("bob is typing…"))
            .await;
        bob.type_into("#message-input", ENTER).await;
        alice.wait_messages(&[("bob", "hi")]).await;
        alice
            .wait_eq("the indicator cleared", typing, vec![], json!(""))
            .await;
    });
}

/// The private messages listed, as (direction, from, to, text).
const PRIVATES: &str = "return [...document.querySelectorAll('#privates li.private')].map((li) =>
  [li.classList.contains('in') ? 'in' : 'out', li.dataset.from, li.dataset.to,
   li.querySelector('.text').textContent]);";

#[test]
fn private_messages_go_both_ways() {
    browser_test("private_messages_go_both_ways", |b| async move {
        let server = Server::start();
        let alice = person(&b, &server, "alice").await;
        let bob = person(&b, &server, "bob").await;
        alice.join("pm").await;
        bob.join("pm").await;
        alice.wait_members(&["alice", "bob"]).await;

        // By the member list: click bob, type, Enter.
        alice
            .click("#members li[data-user=\"bob\"] button.member-pm")
            .await;
        assert_eq!(alice.text("#private-target").await, "bob");
        alice.say("just between us").await;
        bob.wait_eq(
            "alice's private message",
            PRIVATES,
            vec![],
            json!([["in", "alice", "bob", "just between us"]]),
        )
        .await;
        alice
            .wait_eq(
                "the sent copy",
                PRIVATES,
                vec![],
                json!([["out", "alice", "bob", "just between us"]]),
            )
            .await;

        // By command, from the keyboard.
        bob.say("/msg alice sure thing").await;
        alice
            .wait_eq(
                "bob's answer",
                PRIVATES,
                vec![],
                json!([
                    ["out", "alice", "bob", "just between us"],
                    ["in", "bob", "alice", "sure thing"]
                ]),
            )
            .await;

        // Nothing of it went to the room.
        alice.wait_messages(&[]).await;
        bob.wait_messages(&[]).await;
    });
}
