//! Overload: delivery keeps flowing while a room is flooded, and the server's own closes
//! (kicks, shutdown) answer every chat it stored before the close frame.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use roomcast::store::StoreSpec;
use serde_json::{Value, json};

use crate::common::*;

/// Every chat text of `room` in the store, through the history API.
async fn stored_texts(addr: SocketAddr, room: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            None => format!("/api/rooms/{room}/history?limit=100"),
            Some(b) => format!("/api/rooms/{room}/history?limit=100&before_seq={b}"),
        };
        let (status, page) = api(addr, "GET", &path, None).await;
        if status == 404 {
            return texts; // Nothing was ever stored.
        }
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().expect("messages");
        let mut batch: Vec<String> = messages
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_owned())
            .collect();
        batch.append(&mut texts);
        texts = batch;
        match (page["has_more"].as_bool(), messages.first()) {
            (Some(true), Some(oldest)) => before = oldest["seq"].as_u64(),
            _ => return texts,
        }
    }
}

/// The `client_msg_id`s acknowledged among `frames`.
fn acked(frames: &[Value]) -> BTreeSet<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "ack")
        .map(|f| f["client_msg_id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Sends `n` chats named `c1`.. `cn` (text = id) without reading anything.
async fn burst(c: &mut Client, room: &str, n: usize) {
    for i in 1..=n {
        let id = format!("c{i}");
        c.send(json!({"type": "chat", "room_id": room, "text": id, "client_msg_id": id}))
            .await;
    }
}

fn busy_config(path: &std::path::Path) -> impl FnOnce(&mut roomcast::Config) {
    let store = StoreSpec::Sqlite(path.to_owned());
    move |c| {
        c.store = store;
        c.rate_per_sec = 0.0;
        c.max_in_flight = 10_000;
    }
}

#[tokio::test]
async fn a_kick_acknowledges_every_chat_it_stored_before_the_close() {
    let dir = temp_dir("kick-acks");
    let srv = TestServer::with(busy_config(&dir.join("roomcast.db")));
    let (mut kicked, _) = srv.room_client("r", "k").await;
    let (mut watcher, _) = srv.room_client("r", "w").await;
    kicked.expect("user_joined").await;

    burst(&mut kicked, "r", 400).await;
    // Kick once the store has taken some of them.
    let mut first = kicked.recv().await;
    while first["type"] != "ack" {
        first = kicked.recv().await;
    }
    let (status, body) = api(srv.addr, "POST", "/api/users/k/disconnect", None).await;
    assert_eq!((status, body["sockets_closed"].as_u64()), (200, Some(1)));
    let (close, mut frames) = kicked.until_closed().await;
    frames.insert(0, first);
    assert_eq!(u16::from(close.expect("a close frame").code), 4003);

    // Presence changed at once for the others.
    let left = loop {
        let f = watcher.recv().await;
        if f["type"] == "user_left" {
            break f;
        }
    };
    assert_eq!(left["user_id"], "k");

    // What was stored was acknowledged to the kicked socket before its close frame, and
    // what was not stored was not acknowledged.
    let stored: BTreeSet<String> = stored_texts(srv.addr, "r").await.into_iter().collect();
    assert!(!stored.is_empty(), "some chats were stored before the kick");
    assert_eq!(acked(&frames), stored);
    srv.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_shutdown_acknowledges_every_chat_it_stored_before_the_close() {
    let dir = temp_dir("shutdown-acks");
    let path = dir.join("roomcast.db");
    let srv = TestServer::with(busy_config(&path));
    let (mut client, _) = srv.room_client("r", "s").await;

    burst(&mut client, "r", 400).await;
    // Stop once the store has taken some of them (on a busy machine the burst could still
    // be on its way, and the test would show nothing).
    let mut first = client.recv().await;
    while first["type"] != "ack" {
        first = client.recv().await;
    }
    let reader = tokio::spawn(async move { client.until_closed().await });
    srv.stop().await;
    let (close, mut frames) = reader.await.unwrap();
    assert_eq!(u16::from(close.expect("a close frame").code), 1001);
    frames.insert(0, first);

    let srv = TestServer::with(busy_config(&path));
    let stored: BTreeSet<String> = stored_texts(srv.addr, "r").await.into_iter().collect();
    assert!(
        !stored.is_empty(),
        "some chats were stored before the shutdown"
    );
    assert_eq!(acked(&frames), stored);
    srv.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Three flooders post into one room as fast as they can, with no window, while a member of
/// that room reads and a quiet pair talks in another room. Delivery keeps flowing to all of
/// them, `/health` answers, and the server's memory stays bounded.
#[tokio::test]
async fn a_flooded_room_stalls_neither_its_readers_nor_other_rooms() {
    const FLOOD_PER_SENDER: usize = 15_000;
    const QUIET_ROUNDS: usize = 20;
    const RSS_GROWTH_BOUND_KIB: u64 = 96 * 1024;

    let srv = ChildServer::spawn(&["--rate-per-sec", "0"]);
    let url = srv.url("/ws/");
    let mut reader = Client::connect(&format!("{url}flood/reader")).await;
    reader.expect("welcome").await;
    reader.read_joined().await;
    let (mut q1, mut q2) = (
        Client::connect(&format!("{url}quiet/q1")).await,
        Client::connect(&format!("{url}quiet/q2")).await,
    );
    for q in [&mut q1, &mut q2] {
        q.expect("welcome").await;
        q.read_joined().await;
    }
    q1.expect("user_joined").await;
    let rss_before = srv.rss_kib();

    // The reader counts what it gets; the flood is over when `done` is set.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let reader_task = tokio::spawn(async move {
        let (mut chats, mut closed) = (0usize, false);
        let (_sink, mut stream) = reader.split();
        loop {
            tokio::select! {
                f = stream.next_value() => match f {
                    Some(f) if f["type"] == "chat" => chats += 1,
                    Some(_) => {}
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = done_rx.changed() => break,
            }
        }
        (chats, closed)
    });

    let mut flooders = Vec::new();
    for n in 0..3 {
        let c = Client::connect(&format!("{url}flood/blaster{n}")).await;
        let (mut sink, mut stream) = c.split();
        // Each flooder drains what it gets, so it is never a slow consumer itself.
        let drain = tokio::spawn(async move {
            let mut overloaded = 0usize;
            while let Some(f) = stream.next_value().await {
                if f["code"] == "overloaded" {
                    overloaded += 1;
                }
            }
            overloaded
        });
        let text = "f".repeat(200);
        let send = tokio::spawn(async move {
            for _ in 0..FLOOD_PER_SENDER {
                if sink
                    .send(json!({"type": "chat", "text": text}))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            sink
        });
        flooders.push((send, drain));
    }

    // Meanwhile, in another room, each chat arrives (every wait is bounded by TIMEOUT).
    for i in 0..QUIET_ROUNDS {
        q1.send(json!({"type": "chat", "text": format!("q{i}")}))
            .await;
        let got = loop {
            let f = q2.recv().await;
            if f["type"] == "chat" {
                break f;
            }
        };
        assert_eq!(got["text"], format!("q{i}"));
        let (status, health) = http_get(srv.addr, "/health").await;
        assert_eq!(status, 200, "{health}");
    }
    let mut sinks = Vec::new();
    for (send, _) in &mut flooders {
        sinks.push(send.await.unwrap());
    }
    done_tx.send_replace(true);
    let rss_after = srv.rss_kib();

    let (during, closed) = reader_task.await.unwrap();
    assert!(!closed, "the flooded room's reader was closed");
    assert!(
        during > 0,
        "the flooded room's reader got nothing while the flood ran"
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_BOUND_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The drains would read the server's heartbeat pings for ever: stop them.
    drop(sinks);
    for (_, drain) in flooders {
        drain.abort();
    }
}
