//! Room semantics: delivery, order, history, presence, typing, users, private messages,
//! isolation.

use serde_json::json;

use crate::common::*;

fn seq(v: &serde_json::Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// The seqs of a `history` page's messages, in the order given.
fn page_seqs(page: &serde_json::Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(seq)
        .collect()
}

#[tokio::test]
async fn seed_client_shapes_on_the_single_room_socket() {
    let srv = TestServer::start();
    let (mut bob, joined) = srv.room_client("lobby", "bob").await;
    assert_eq!(
        joined.frame,
        json!({"type": "joined", "room_id": "lobby", "user_id": "bob", "users": ["bob"],
               "last_seq": 0, "history": 0})
    );
    let (mut alice, _) = srv.room_client("lobby", "alice").await;

    let uj = bob.expect("user_joined").await;
    assert_eq!(uj["user_id"], "alice");
    assert_eq!(uj["room_id"], "lobby");
    assert_eq!(uj["message"], "alice joined the room");
    assert!(chrono::DateTime::parse_from_rfc3339(uj["timestamp"].as_str().unwrap()).is_ok());

    // The seed's client leaves room_id out.
    alice.send(json!({"type": "chat", "text": "hi"})).await;
    for c in [&mut alice, &mut bob] {
        let m = c.expect("chat").await;
        let keys: std::collections::BTreeSet<&str> =
            m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "message_id",
                "room_id",
                "seq",
                "text",
                "timestamp",
                "type",
                "user_id"
            ]
            .into()
        );
        assert_eq!(
            (m["user_id"].as_str(), m["text"].as_str()),
            (Some("alice"), Some("hi"))
        );
        assert_eq!((m["room_id"].as_str(), seq(&m)), (Some("lobby"), 1));
        uuid::Uuid::parse_str(m["message_id"].as_str().unwrap()).expect("message_id is a UUID");
        chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().unwrap()).expect("RFC 3339");
    }

    alice
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "typing", "user_id": "alice", "room_id": "lobby", "is_typing": true})
    );
    bob.send(json!({"type": "get_users"})).await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "active_users", "users": ["alice", "bob"], "room_id": "lobby"})
    );

    alice.close().await;
    let ul = bob.expect("user_left").await;
    assert_eq!(
        (ul["user_id"].as_str(), ul["message"].as_str()),
        (Some("alice"), Some("alice left the room"))
    );
}

#[tokio::test]
async fn every_member_gets_every_chat_once_in_one_order() {
    let srv = TestServer::start();
    let names = ["ann", "ben", "cat"];
    let mut clients = Vec::new();
    for name in names {
        let mut c = srv.client(name).await;
        c.join("r").await;
        clients.push(c);
    }
    // Drain the presence notices so only chats remain.
    clients[0].expect("user_joined").await;
    clients[0].expect("user_joined").await;
    clients[1].expect("user_joined").await;

    // All three post concurrently.
    const EACH: usize = 30;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Each posts all its messages, then reads; the three tasks run at once, so the
            // posts interleave at the server.
            for n in 0..EACH {
                c.chat("r", &format!("{i}:{n}")).await;
            }
            let mut got = Vec::new();
            while got.len() < EACH * 3 {
                let m = c.expect("chat").await;
                got.push((seq(&m), m["text"].as_str().unwrap().to_owned()));
            }
            // Nothing more (no duplicates) once ChatServer has answered a later request.
            c.sync("r").await;
            (got, c) // kept open until every task is done, so no one sees a user_left
        }));
    }
    let mut seen = Vec::new();
    let mut open = Vec::new();
    for t in tasks {
        let (got, c) = t.await.unwrap();
        seen.push(got);
        open.push(c);
    }
    // The same sequence for everyone, seq 1..=90 with no gap or repeat.
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    let seqs: Vec<u64> = seen[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=(EACH as u64 * 3)).collect::<Vec<_>>());
    // Each sender's own messages keep their order.
    for i in 0..3 {
        let mine: Vec<&str> = seen[0]
            .iter()
            .filter(|(_, t)| t.starts_with(&format!("{i}:")))
            .map(|(_, t)| t.as_str())
            .collect();
        let want: Vec<String> = (0..EACH).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, want);
    }
}

#[tokio::test]
async fn a_new_member_gets_the_last_50_of_100_kept_then_live() {
    let srv = TestServer::with(|c| c.rate_per_sec = 0.0);
    let mut writer = srv.client("writer").await;
    writer.join("h").await;
    for n in 1..=120 {
        writer.chat("h", &format!("m{n}")).await;
    }
    for _ in 0..120 {
        writer.expect("chat").await;
    }
    let mut late = srv.client("late").await;
    let joined = late.join("h").await;
    assert_eq!(joined.frame["last_seq"], 120);
    assert_eq!(joined.frame["history"], 50);
    assert_eq!(joined.history_seqs(), (71..=120).collect::<Vec<_>>());
    assert_eq!(joined.history[0]["text"], "m71");
    assert_eq!(joined.history[0]["user_id"], "writer");
    // Older pages come from the store, which keeps more than the in-memory window (100),
    // oldest first.
    late.send(json!({"type": "history", "room_id": "h", "before_seq": 71, "limit": 60}))
        .await;
    let page = late.expect("history").await;
    assert_eq!(page_seqs(&page), (11..=70).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    late.send(json!({"type": "history", "room_id": "h", "before_seq": 11, "limit": 60}))
        .await;
    let page = late.expect("history").await;
    assert_eq!(page_seqs(&page), (1..=10).collect::<Vec<_>>());
    assert_eq!(page["has_more"], false);

    writer.chat("h", "live").await;
    let live = late.expect("chat").await;
    assert_eq!((seq(&live), live["text"].as_str()), (121, Some("live")));
}

#[tokio::test]
async fn history_sizes_are_configurable() {
    let srv = TestServer::with(|c| {
        c.history_on_join = 3;
        c.history_keep = 5;
    });
    let (mut a, _) = srv.room_client("k", "a").await;
    for n in 1..=9 {
        a.send(json!({"type": "chat", "text": format!("{n}")}))
            .await;
        a.expect("chat").await;
    }
    let (mut b, joined) = srv.room_client("k", "b").await;
    assert_eq!(joined.history_seqs(), [7, 8, 9]);
    // Memory holds history_keep=5; the page reaches past it into the store.
    b.send(json!({"type": "history", "limit": 7})).await;
    let page = b.expect("history").await;
    assert_eq!(page_seqs(&page), [3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn joining_while_others_post_loses_and_doubles_nothing() {
    let srv = TestServer::with(|c| {
        c.rate_per_sec = 0.0;
        c.max_in_flight = 1000; // the writer sends its 400 without waiting for echoes
    });
    let mut writer = srv.client("w").await;
    writer.join("busy").await;
    const TOTAL: u64 = 400;
    let post = tokio::spawn(async move {
        for n in 1..=TOTAL {
            writer.chat("busy", &format!("{n}")).await;
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        writer
    });
    // Join in the middle of the stream.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut late = srv.client("late").await;
    let joined = late.join("busy").await;
    let mut seqs = joined.history_seqs();
    let last = joined.frame["last_seq"].as_u64().unwrap();
    assert_eq!(
        seqs.last().copied().unwrap_or(0),
        last,
        "history ends at last_seq"
    );
    while seqs.last().copied().unwrap_or(0) < TOTAL {
        let m = late.expect("chat").await;
        seqs.push(seq(&m));
    }
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..=TOTAL).collect::<Vec<_>>(),
        "contiguous, no duplicate"
    );
    assert_eq!(
        first,
        last.saturating_sub(49).max(1),
        "the last 50, then live"
    );
    let _writer = post.await.unwrap();
    late.sync("busy").await;
}

#[tokio::test]
async fn presence_counts_users_not_sockets() {
    let srv = TestServer::start();
    let (mut bob, _) = srv.room_client("p", "bob").await;
    let (mut tab1, _) = srv.room_client("p", "alice").await;
    assert_eq!(bob.expect("user_joined").await["user_id"], "alice");

    let (mut tab2, joined) = srv.room_client("p", "alice").await;
    assert_eq!(joined.frame["users"], json!(["alice", "bob"]));
    // No second user_joined: the next frame bob sees is the barrier's answer.
    assert_eq!(bob.sync("p").await, ["alice", "bob"]);

    // Both tabs receive everything.
    bob.send(json!({"type": "chat", "text": "to both"})).await;
    assert_eq!(tab1.expect("chat").await["text"], "to both");
    assert_eq!(tab2.expect("chat").await["text"], "to both");
    assert_eq!(bob.expect("chat").await["text"], "to both");

    // One tab closing is not leaving.
    tab1.close().await;
    srv.wait_health("connections", 2).await;
    assert_eq!(bob.sync("p").await, ["alice", "bob"]);

    // The last tab dropping its TCP connection without a close frame is.
    tab2.drop_abruptly();
    let left = bob.expect("user_left").await;
    assert_eq!(
        (left["user_id"].as_str(), left["room_id"].as_str()),
        (Some("alice"), Some("p"))
    );
    assert_eq!(bob.sync("p").await, ["bob"]);
}

#[tokio::test]
async fn a_silent_peer_is_dropped_by_heartbeat() {
    let srv = TestServer::with(|c| {
        c.heartbeat_interval = 0.1;
        c.client_timeout = 0.5;
    });
    let (mut bob, _) = srv.room_client("hb", "bob").await;
    // This client never reads again, so it never answers the server's pings.
    let (ghost, _) = srv.room_client("hb", "ghost").await;
    assert_eq!(bob.expect("user_joined").await["user_id"], "ghost");
    // bob keeps reading (and so answers pings) while waiting.
    let left = bob.expect("user_left").await;
    assert_eq!(left["user_id"], "ghost");
    assert_eq!(bob.sync("hb").await, ["bob"], "bob, who answers, stays");
    drop(ghost);
}

#[tokio::test]
async fn typing_goes_to_others_only_and_is_never_stored() {
    let srv = TestServer::start();
    let mut alice = srv.client("alice").await;
    let mut alice2 = srv.client("alice").await;
    let mut bob = srv.client("bob").await;
    alice.join("t").await;
    alice2.join("t").await;
    bob.join("t").await;
    alice.expect("user_joined").await; // bob
    alice2.expect("user_joined").await; // bob

    alice
        .send(json!({"type": "typing", "room_id": "t", "is_typing": true}))
        .await;
    let t = bob.expect("typing").await;
    assert_eq!(
        (t["user_id"].as_str(), t["is_typing"].as_bool()),
        (Some("alice"), Some(true))
    );
    // Neither of alice's sockets got it: their next frame is the barrier's answer.
    alice.sync("t").await;
    alice2.sync("t").await;

    alice.chat("t", "one chat").await;
    alice
        .send(json!({"type": "typing", "room_id": "t", "is_typing": false}))
        .await;
    assert_eq!(bob.expect("chat").await["text"], "one chat");
    assert_eq!(bob.expect("typing").await["is_typing"], false);

    let mut carol = srv.client("carol").await;
    let joined = carol.join("t").await;
    assert_eq!(joined.frame["history"], 1, "only the chat was stored");
    assert_eq!(joined.history[0]["text"], "one chat");
}

#[tokio::test]
async fn get_users_answers_the_asker_only() {
    let srv = TestServer::start();
    let (mut a, _) = srv.room_client("u", "a").await;
    let (mut b, _) = srv.room_client("u", "b").await;
    a.expect("user_joined").await;
    assert_eq!(b.sync("u").await, ["a", "b"]);
    // Had b's answer been broadcast, it would reach a before a's own answer and chat.
    a.send(json!({"type": "get_users"})).await;
    a.chat("u", "after").await;
    assert_eq!(a.expect("active_users").await["users"], json!(["a", "b"]));
    assert_eq!(a.expect("chat").await["text"], "after");
    assert_eq!(b.expect("chat").await["text"], "after");
}

#[tokio::test]
async fn private_messages_reach_every_session_of_the_user() {
    let srv = TestServer::start();
    let mut alice1 = srv.client("alice").await;
    let mut alice2 = srv.client("alice").await;
    let mut bob = srv.client("bob").await;
    bob.join("x").await;

    bob.send(json!({"type": "private", "to_user": "alice", "content": "psst"}))
        .await;
    for a in [&mut alice1, &mut alice2] {
        let p = a.expect("private").await;
        assert_eq!(
            (p["from"].as_str(), p["message"].as_str()),
            (Some("bob"), Some("psst"))
        );
        assert_eq!(p["to_user"], "alice");
        chrono::DateTime::parse_from_rfc3339(p["timestamp"].as_str().unwrap()).unwrap();
    }
    // The sender gets no copy.
    bob.sync("x").await;

    bob.send(json!({"type": "private", "to_user": "nobody", "content": "hello?"}))
        .await;
    let e = bob.expect_error("user_offline").await;
    assert!(e["message"].as_str().unwrap().contains("nobody"));
    assert_eq!(e["to_user"], "nobody", "names the addressee");
}

#[tokio::test]
async fn rooms_are_isolated_and_emptied_rooms_are_removed() {
    let srv = TestServer::start();
    let mut a = srv.client("a").await;
    let mut b = srv.client("b").await;
    a.join("one").await;
    b.join("two").await;
    a.chat("one", "only for one").await;
    assert_eq!(a.expect("chat").await["room_id"], "one");
    b.chat("two", "only for two").await;
    assert_eq!(b.expect("chat").await["room_id"], "two");
    // Neither saw the other room's chat.
    a.sync("one").await;
    b.sync("two").await;
    let h = srv.health().await;
    assert_eq!(
        (h["rooms"].as_u64(), h["users"].as_u64()),
        (Some(2), Some(2))
    );

    a.send(json!({"type": "leave", "room_id": "one"})).await;
    assert_eq!(a.expect("left").await["room_id"], "one");
    srv.wait_health("rooms", 1).await;
    b.close().await;
    srv.wait_health("rooms", 0).await;
    srv.wait_health("users", 1).await;
    a.close().await;
    srv.wait_health("connections", 0).await;
    srv.wait_health("users", 0).await;

    // The room's history outlives its members.
    let mut c = srv.client("c").await;
    let joined = c.join("one").await;
    assert_eq!(joined.history_seqs(), [1]);
    assert_eq!(joined.history[0]["text"], "only for one");
}

#[tokio::test]
async fn one_socket_many_rooms() {
    let srv = TestServer::start();
    let mut a = srv.client("a").await;
    for r in ["r1", "r2", "r3"] {
        let j = a.join(r).await;
        assert_eq!(j.frame["room_id"], r);
    }
    for r in ["r1", "r2", "r3"] {
        a.chat(r, r).await;
        let m = a.expect("chat").await;
        assert_eq!(
            (m["room_id"].as_str(), m["text"].as_str(), seq(&m)),
            (Some(r), Some(r), 1)
        );
    }
    a.send(json!({"type": "leave", "room_id": "r2"})).await;
    a.expect("left").await;
    a.chat("r2", "gone").await;
    assert_eq!(a.expect_error("not_in_room").await["room_id"], "r2");
    // An error about a chat names the chat.
    a.send(json!({"type": "chat", "room_id": "r2", "text": "x", "client_msg_id": "lost-1"}))
        .await;
    a.expect_chat_error("not_in_room", "r2", "lost-1").await;
    a.chat("r3", "still here").await;
    assert_eq!(a.expect("chat").await["seq"], 2);
}

#[tokio::test]
async fn two_hundred_clients_get_all_twenty_messages_once_in_order() {
    let srv = TestServer::start();
    const CLIENTS: usize = 200;
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 5;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = srv.client(&format!("u{i}")).await;
        c.join("big").await;
        clients.push(c);
    }
    // Every client, once everyone is in: the presence notices are drained by reading to the
    // barrier below; then the senders post concurrently.
    let mut readers = Vec::new();
    let everyone_ready = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    for (i, mut c) in clients.into_iter().enumerate() {
        let is_sender = i < SENDERS;
        let everyone_ready = everyone_ready.clone();
        readers.push(tokio::spawn(async move {
            // Read past the user_joined notices of those who came later; after the barrier
            // no more can come, since everyone had joined before it.
            c.send(json!({"type": "get_users", "room_id": "big"})).await;
            let users = loop {
                let m = c.recv().await;
                match m["type"].as_str() {
                    Some("user_joined") => continue,
                    Some("active_users") => break m["users"].as_array().unwrap().len(),
                    _ => panic!("unexpected {m}"),
                }
            };
            assert_eq!(users, CLIENTS);
            everyone_ready.wait().await;
            if is_sender {
                for n in 0..PER_SENDER {
                    c.chat("big", &format!("{i}/{n}")).await;
                }
            }
            let mut got = Vec::new();
            while got.len() < SENDERS * PER_SENDER {
                let m = c.expect("chat").await;
                got.push((seq(&m), m["text"].as_str().unwrap().to_owned()));
            }
            c.sync("big").await;
            (got, c) // kept open until every task is done, so no one sees a user_left
        }));
    }
    let mut first: Option<Vec<(u64, String)>> = None;
    let mut open = Vec::new();
    for r in readers {
        let (got, c) = r.await.unwrap();
        open.push(c);
        assert_eq!(got.len(), SENDERS * PER_SENDER);
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(&got, f, "every client saw the same order"),
        }
    }
    let order = first.unwrap();
    let seqs: Vec<u64> = order.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
}
