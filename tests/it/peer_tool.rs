//! The load tool's `peer` scenario, against a bare-text room server of the test's own (as
//! the actix example and a node `ws` server are): every message counted once, and a peer
//! that loses messages fails the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::loadtool::run_loadtest;

/// How the test's peer treats a text.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    /// To every other member of the room (the actix example's way).
    Others,
    /// To every member, the sender included.
    Everyone,
    /// To every other member, but every 50th text of the room to no one.
    Lossy,
}

type Rooms = Arc<Mutex<HashMap<String, Vec<(usize, mpsc::UnboundedSender<String>)>>>>;

/// Serves rooms (`/?room=NAME`) on 127.0.0.1 port 0 until the test ends; returns the port.
async fn start_peer(mode: Peer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let rooms: Rooms = Arc::default();
    let texts = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    tokio::spawn(async move {
        for id in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (rooms, texts) = (rooms.clone(), texts.clone());
            tokio::spawn(async move {
                let mut room = String::new();
                // The callback's error type is tungstenite's, whatever its size.
                #[allow(clippy::result_large_err)]
                let pick = |req: &Request, res: Response| {
                    let query = req.uri().query().unwrap_or_default();
                    room = query.strip_prefix("room=").unwrap_or("main").to_owned();
                    Ok(res)
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, pick).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                rooms
                    .lock()
                    .unwrap()
                    .entry(room.clone())
                    .or_default()
                    .push((id, tx));
                tokio::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if sink.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else {
                        continue;
                    };
                    let n = {
                        let mut texts = texts.lock().unwrap();
                        let n = texts.entry(room.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    if mode == Peer::Lossy && n % 50 == 0 {
                        continue;
                    }
                    for (member, tx) in rooms.lock().unwrap()[&room].iter() {
                        if *member != id || mode == Peer::Everyone {
                            let _ = tx.send(text.as_str().to_owned());
                        }
                    }
                }
                rooms
                    .lock()
                    .unwrap()
                    .get_mut(&room)
                    .unwrap()
                    .retain(|(m, _)| *m != id);
            });
        }
    });
    port
}

/// Runs `peer` against the test's peer in `mode`; returns the exit code and the report.
async fn run_peer(mode: Peer) -> (Option<i32>, Value) {
    let port = start_peer(mode).await;
    let dir = crate::common::temp_dir("peer-tool");
    let json = dir.join("peer.json");
    let args: Vec<String> = [
        "--url",
        &format!("ws://127.0.0.1:{port}"),
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--html",
        dir.join("peer.html").to_str().unwrap(),
        "peer",
        "--path",
        "/?room={room}",
        "--rooms",
        "2",
        "--clients",
        "5",
        "--senders",
        "2",
        "--window",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--settle",
        "0.2",
    ]
    .map(String::from)
    .to_vec();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_loadtest(&args)
    })
    .await
    .expect("the load tool ran");
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no report ({e}): {}\n{}", run.stdout, run.stderr));
    (
        run.code,
        serde_json::from_str(&report).expect("a JSON report"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_scenario_counts_every_delivery_of_a_peer_without_echo() {
    let (code, report) = run_peer(Peer::Others).await;
    let d = &report["deliveries"];
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    // Four receivers a message: the room's five members but its sender.
    assert_eq!(d["expected"].as_u64(), Some(sent * 4), "{d}");
    assert_eq!(d["received"], d["expected"], "{d}");
    assert_eq!(
        (d["lost"].as_u64(), d["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(d["measured"].as_u64().unwrap() > 0, "{d}");
    let what = report["latency"]["what"].as_str().unwrap();
    assert!(what.contains("does not echo"), "{what}");
    assert_eq!(code, Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_scenario_counts_the_sender_when_the_peer_echoes() {
    let (code, report) = run_peer(Peer::Everyone).await;
    let d = &report["deliveries"];
    let sent = report["messages"]["sent"].as_u64().unwrap();
    assert_eq!(d["expected"].as_u64(), Some(sent * 5), "{d}");
    assert_eq!(d["received"], d["expected"], "{d}");
    assert_eq!(code, Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_loses_messages_fails_the_run() {
    let (code, report) = run_peer(Peer::Lossy).await;
    let d = &report["deliveries"];
    let sent = report["messages"]["sent"].as_u64().unwrap();
    // Every 50th text of a room reached no one: four deliveries lost each.
    let lost = d["lost"].as_u64().unwrap();
    assert!(lost > 0 && lost % 4 == 0, "{d}");
    assert_eq!(d["received"].as_u64().unwrap() + lost, sent * 4, "{d}");
    assert_eq!(report["passed"], false);
    assert_eq!(code, Some(1), "{report}");
}
