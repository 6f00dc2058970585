//! Connection state and a server restart under an open page.

use serde_json::{Value, json};

use roomcast::Config;

use crate::common::Client;
use crate::harness::{Server, browser_test};

#[test]
fn the_page_shows_its_connection_state_and_reconnects_after_a_restart() {
    browser_test(
        "the_page_shows_its_connection_state_and_reconnects_after_a_restart",
        |b| async move {
            let mut server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            alice.wait_conn("offline").await;
            alice.connect_as("alice").await;
            alice.join("ops").await;
            alice.say("before").await;
            alice.wait_messages(&[("alice", "before")]).await;

            server.stop();
            alice.wait_conn("reconnecting").await;
            // Written while the server is down: kept, and sent once it is back.
            alice.say("while down").await;
            server.start_again();
            alice.wait_conn("connected").await;
            alice.wait_room_joined("ops").await;

            // This server kept no history (memory store), so the page starts the room over
            // and delivers what was written meanwhile, once.
            let seen = alice.wait_messages(&[("alice", "while down")]).await;
            assert_eq!(seen[0]["seq"], 1);
            let mut rusty = Client::connect(&server.ws_url("/ws?user_id=rusty")).await;
            rusty.expect("welcome").await;
            let joined = rusty.join("ops").await;
            let texts: Vec<&Value> = joined.history.iter().map(|m| &m["text"]).collect();
            assert_eq!(texts, [&json!("while down")]);
            rusty.chat("ops", "after").await;
            alice
                .wait_messages(&[("alice", "while down"), ("rusty", "after")])
                .await;

            alice.click("#disconnect-btn").await;
            alice.wait_conn("offline").await;
        },
    );
}

/// A server whose history survives a restart.
// TODO(store): set `config.store` to a SQLite file in `dir` once `Config::store` lands; with
// the memory store a restarted server starts every room over at seq 1.
fn durable_config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_tests();
    config.store = roomcast::store::StoreSpec::Sqlite(dir.join("roomcast.db"));
    config
}

#[test]
fn after_a_restart_the_page_shows_what_was_sent_meanwhile_once_and_in_order() {
    browser_test(
        "after_a_restart_the_page_shows_what_was_sent_meanwhile_once_and_in_order",
        |b| async move {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("browser-restart-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = Server::with_config(durable_config(&dir));
            let alice = b.page("alice", &server.url("/")).await;
            alice.connect_as("alice").await;
            alice.join("ops").await;
            alice.say("one").await;
            alice.say("two").await;
            alice
                .wait_messages(&[("alice", "one"), ("alice", "two")])
                .await;

            server.stop();
            alice.wait_conn("reconnecting").await;
            alice.say("three (typed while down)").await;
            server.start_again();
            // Others post before (or while) the page comes back.
            let mut rusty = Client::connect(&server.ws_url("/ws?user_id=rusty")).await;
            rusty.expect("welcome").await;
            let joined = rusty.join("ops").await;
            // [1, 2], or [1, 2, 3] if the page was back first: kept across the restart.
            let kept = joined.history_seqs();
            assert!(
                kept.starts_with(&[1, 2]),
                "history lost in the restart: {kept:?}"
            );
            for text in ["four", "five", "six"] {
                rusty.chat("ops", text).await;
            }
            alice.wait_conn("connected").await;

            // Every message once, seqs without a gap; the page's own message somewhere
            // after "two", the others in the order they were sent.
            let seen = alice
                .wait_for(
                    "six messages",
                    "return [...document.querySelectorAll('#messages li.msg')].map((li) =>
                       [li.dataset.seq === undefined ? null : Number(li.dataset.seq),
                        li.dataset.user, li.querySelector('.text').textContent]);",
                    vec![],
                    |v| {
                        v.as_array().unwrap().len() == 6
                            && v.as_array().unwrap().iter().all(|m| m[0].is_u64())
                    },
                )
                .await;
            let seen = seen.as_array().unwrap();
            let seqs: Vec<u64> = seen.iter().map(|m| m[0].as_u64().unwrap()).collect();
            assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "{seen:?}");
            let texts: Vec<&str> = seen.iter().map(|m| m[2].as_str().unwrap()).collect();
            assert_eq!(&texts[..2], ["one", "two"]);
            let others: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| ["four", "five", "six"].contains(t))
                .collect();
            assert_eq!(others, ["four", "five", "six"]);
            assert_eq!(
                texts
                    .iter()
                    .filter(|t| **t == "three (typed while down)")
                    .count(),
                1
            );
            // No "the server restarted" notice: nothing was lost.
            let notices = alice
                .js(
                    "return [...document.querySelectorAll('#messages li.notice')]
                       .map((li) => li.textContent).filter((t) => t.includes('restarted'));",
                    vec![],
                )
                .await;
            assert_eq!(notices, json!([]));
            let _ = std::fs::remove_dir_all(&dir);
        },
    );
}

#[test]
fn own_messages_are_pending_until_acknowledged() {
    browser_test(
        "own_messages_are_pending_until_acknowledged",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            alice.connect_as("alice").await;
            alice.join("acks").await;
            alice.say("keep this").await;
            alice.say("and this").await;
            let acked = alice
                .wait_for(
                    "both messages acked",
                    "return [...document.querySelectorAll('#messages li.msg')].map((li) =>
                   [li.dataset.seq, li.classList.contains('acked'),
                    li.classList.contains('pending'), !!li.dataset.clientMsgId]);",
                    vec![],
                    |v| {
                        v.as_array()
                            .is_some_and(|a| a.len() == 2 && a.iter().all(|m| m[1] == true))
                    },
                )
                .await;
            assert_eq!(
                acked,
                json!([["1", true, false, true], ["2", true, false, true]])
            );
        },
    );
}

#[test]
fn the_member_list_is_marked_stale_while_reconnecting_and_refreshed_on_rejoin() {
    browser_test(
        "the_member_list_is_marked_stale_while_reconnecting_and_refreshed_on_rejoin",
        |b| async move {
            let mut server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            alice.connect_as("alice").await;
            alice.join("ops").await;
            let mut rusty = Client::connect(&server.ws_url("/ws?user_id=rusty")).await;
            rusty.expect("welcome").await;
            rusty.join("ops").await;
            alice.wait_members(&["alice", "rusty"]).await;
            let stale = "const m = document.getElementById('members');
                 return [m.classList.contains('stale'),
                         !document.getElementById('members-stale').hidden];";
            assert_eq!(alice.js(stale, vec![]).await, json!([false, false]));

            // Down: the list is what it was, marked as possibly out of date.
            server.stop();
            alice.wait_conn("reconnecting").await;
            alice
                .wait_eq("the list marked stale", stale, vec![], json!([true, true]))
                .await;
            alice.wait_members(&["alice", "rusty"]).await;

            // Back, without rusty (his client is gone with the old server): the rejoin
            // refreshes the list, no longer stale.
            drop(rusty);
            server.start_again();
            alice.wait_conn("connected").await;
            alice.wait_room_joined("ops").await;
            alice.wait_members(&["alice"]).await;
            assert_eq!(alice.js(stale, vec![]).await, json!([false, false]));
        },
    );
}
