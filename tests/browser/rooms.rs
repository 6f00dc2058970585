//! Several rooms on one page: each with its own history, members and unread count.

use serde_json::{Value, json};

use crate::harness::{Page, Server, browser_test};

/// The room list as (room, unread count shown, current?), in order.
async fn room_list(page: &Page) -> Value {
    page.js(
        "return [...document.querySelectorAll('#room-list li')].map((li) => {
           const badge = li.querySelector('.unread');
           return [li.dataset.room, badge.hidden ? 0 : Number(badge.dataset.unread),
                   li.classList.contains('current')];
         });",
        vec![],
    )
    .await
}

async fn wait_room_list(page: &Page, want: Value) {
    page.wait_eq(
        &format!("room list {want}"),
        "return [...document.querySelectorAll('#room-list li')].map((li) => {
           const badge = li.querySelector('.unread');
           return [li.dataset.room, badge.hidden ? 0 : Number(badge.dataset.unread),
                   li.classList.contains('current')];
         });",
        vec![],
        want,
    )
    .await;
}

async fn select(page: &Page, room: &str) {
    page.click(&format!(
        "#room-list li[data-room=\"{room}\"] button.room-select"
    ))
    .await;
    page.wait_eq(
        &format!("{room} selected"),
        "return document.getElementById('room-title').textContent;",
        vec![],
        json!(format!("# {room}")),
    )
    .await;
}

#[test]
fn rooms_keep_their_own_history_members_and_unread_counts() {
    browser_test(
        "rooms_keep_their_own_history_members_and_unread_counts",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            let bob = b.page("bob", &server.url("/")).await;
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;

            // Alice creates three rooms; the last one joined is the current one.
            for room in ["red", "green", "blue"] {
                alice.join(room).await;
            }
            wait_room_list(
                &alice,
                json!([["red", 0, false], ["green", 0, false], ["blue", 0, true]]),
            )
            .await;
            alice.say("blue one").await;
            alice.wait_messages(&[("alice", "blue one")]).await;

            // Bob talks in red and green while Alice looks at blue.
            bob.join("red").await;
            bob.say("red one").await;
            bob.say("red two").await;
            bob.join("green").await;
            bob.say("green one").await;
            bob.wait_messages(&[("bob", "green one")]).await;
            wait_room_list(
                &alice,
                json!([["red", 2, false], ["green", 1, false], ["blue", 0, true]]),
            )
            .await;
            // Blue still shows only its own message, and only Alice.
            alice.wait_messages(&[("alice", "blue one")]).await;
            alice.wait_members(&["alice"]).await;
            let title = alice.js("return document.title;", vec![]).await;
            assert_eq!(title, json!("(3) roomcast"));

            // Opening red: its history, its members, its count reset.
            select(&alice, "red").await;
            alice
                .wait_messages(&[("bob", "red one"), ("bob", "red two")])
                .await;
            alice.wait_members(&["alice", "bob"]).await;
            wait_room_list(
                &alice,
                json!([["red", 0, true], ["green", 1, false], ["blue", 0, false]]),
            )
            .await;

            // A new message in the room being read is not unread; one in another room is.
            select(&bob, "red").await;
            bob.say("red three").await;
            alice
                .wait_messages(&[("bob", "red one"), ("bob", "red two"), ("bob", "red three")])
                .await;
            select(&bob, "green").await;
            bob.say("green two").await;
            wait_room_list(
                &alice,
                json!([["red", 0, true], ["green", 2, false], ["blue", 0, false]]),
            )
            .await;

            select(&alice, "green").await;
            alice
                .wait_messages(&[("bob", "green one"), ("bob", "green two")])
                .await;
            select(&alice, "blue").await;
            alice.wait_messages(&[("alice", "blue one")]).await;

            // Leaving green from the list: gone for Alice, and Bob sees her leave.
            alice
                .click("#room-list li[data-room=\"green\"] button.room-leave")
                .await;
            wait_room_list(&alice, json!([["red", 0, false], ["blue", 0, true]])).await;
            bob.wait_members(&["bob"]).await;
            assert_eq!(
                room_list(&bob).await,
                json!([["red", 0, false], ["green", 0, true]])
            );
        },
    );
}
