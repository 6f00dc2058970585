//! Several nodes on one Redis (`--cluster`): each test starts its own `redis-server` on a
//! free loopback port and real roomcast binaries against it, and talks to them over real
//! sockets. A missing `redis-server` is a failure (`scripts/test` installs it), never a skip.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// A `redis-server` of the test's own, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
    persistence: Vec<String>,
}

impl RedisServer {
    /// Without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// With the append-only file fsynced on every write: what is acknowledged survives a
    /// SIGKILL of Redis.
    pub fn start_durable() -> RedisServer {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    fn start_with(persistence: &[&str]) -> RedisServer {
        let dir = temp_dir("redis");
        // A free port: bind port 0, read it, let it go, and have Redis take it (another
        // process could take it between the two; then Redis fails and the test says so).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Self::spawn(port, &dir, persistence);
        let redis = RedisServer {
            child,
            port,
            dir,
            persistence: persistence.iter().map(|s| s.to_string()).collect(),
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path, persistence: &[&str]) -> Child {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(persistence)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): run scripts/test, which installs it")
            })
    }

    /// SIGKILLs Redis, then starts it again on the same port and files.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let persistence: Vec<&str> = self.persistence.iter().map(String::as_str).collect();
        self.child = Self::spawn(self.port, &self.dir, &persistence);
        self.wait_ready();
    }

    /// SIGKILLs Redis (`kill_and_restart` brings it back).
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL redis-server");
        self.child.wait().expect("redis-server ended");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(mut con) = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command.
    pub fn command(&self, args: &[&str]) -> redis::Value {
        let mut con = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(TIMEOUT))
            .expect("connect to the test's redis-server");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).expect("redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` nodes on `redis`.
fn nodes(redis: &RedisServer, n: usize) -> Vec<ChildServer> {
    nodes_with(redis, n, &[])
}

fn nodes_with(redis: &RedisServer, n: usize, args: &[&str]) -> Vec<ChildServer> {
    let url = redis.url();
    let base = ["--cluster", url.as_str(), "--rate-per-sec", "0"];
    (0..n)
        .map(|_| ChildServer::spawn(&[&base[..], args].concat()))
        .collect()
}

/// Waits until every node is subscribed to the cluster's channels (`/health`'s `broker`).
async fn wait_subscribed(nodes: &[ChildServer]) {
    for node in nodes {
        wait_broker(node, "up").await;
    }
}

/// POSTs `body` to `path` on `node` until the 200 answer satisfies `done` (the other nodes'
/// sockets are counted as they announce them, asynchronously); returns it.
async fn wait_api_post(
    node: &ChildServer,
    path: &str,
    body: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, answer) = api(node.addr, "POST", path, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        if done(&answer) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/health`'s `broker` is `state` on `node`.
async fn wait_broker(node: &ChildServer, state: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, health) = http_get(node.addr, "/health").await;
        if health["broker"] == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker never {state}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `get_users` until `want` are all listed (presence crosses nodes asynchronously).
async fn wait_users(c: &mut Client, room: &str, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        c.send(json!({"type": "get_users", "room_id": room})).await;
        let users = loop {
            let f = c.recv().await;
            if f["type"] == "active_users" {
                break f["users"].clone();
            }
        };
        if users == json!(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "users stayed {users}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next frame of `ty` (others skipped).
async fn next_of(c: &mut Client, ty: &str) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == ty {
            return f;
        }
    }
}

/// Joins `room` as `user` on `node`; returns the client and its `joined` (with history).
async fn join(node: &ChildServer, room: &str, user: &str) -> (Client, Joined) {
    let mut c = Client::connect(&node.url(&format!("/ws/{room}/{user}"))).await;
    c.expect("welcome").await;
    let joined = c.read_joined().await;
    (c, joined)
}

/// Reads until `n` chats have arrived (other frames skipped); returns them in order.
async fn chats(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let f = c.recv().await;
        if f["type"] == "chat" {
            got.push(f);
        }
    }
    got
}

fn seqs(chats: &[Value]) -> Vec<u64> {
    chats.iter().map(|c| c["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn every_member_on_every_node_gets_every_chat_once_in_one_order() {
    const PER_SENDER: usize = 30;
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        members.push(join(node, "r", &format!("u{i}")).await.0);
    }
    // Everyone is a member on its node before anyone posts: a barrier per client.
    for m in &mut members {
        m.send(json!({"type": "get_users"})).await;
        next_of(m, "active_users").await;
    }

    let mut senders = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        senders.push(tokio::spawn(async move {
            let (mut sink, mut stream) = m.split();
            let send = tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let id = format!("u{i}-{n}");
                    let chat = json!({"type": "chat", "text": id, "client_msg_id": id});
                    sink.send(chat).await.expect("send");
                }
                sink
            });
            let (mut chats, mut acks) = (Vec::new(), 0);
            while chats.len() < 3 * PER_SENDER || acks < PER_SENDER {
                let f = stream
                    .next_value()
                    .await
                    .expect("a frame before the timeout");
                match f["type"].as_str() {
                    Some("chat") => chats.push(f),
                    Some("ack") => acks += 1,
                    _ => {}
                }
            }
            let _sink = send.await.unwrap();
            chats
        }));
    }
    let mut orders = Vec::new();
    for s in senders {
        orders.push(s.await.unwrap());
    }
    let first = seqs(&orders[0]);
    assert!(
        first.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {first:?}"
    );
    let texts: BTreeSet<&str> = orders[0]
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3 * PER_SENDER, "each chat once");
    for (i, order) in orders.iter().enumerate() {
        assert_eq!(order, &orders[0], "member {i} saw another order");
    }
}

#[tokio::test]
async fn history_and_recovery_are_the_same_on_every_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let (mut a, _) = join(&nodes[0], "h", "ann").await;
    for n in 1..=5 {
        a.send(json!({"type": "chat", "text": format!("m{n}")}))
            .await;
    }
    let posted = chats(&mut a, 5).await;
    let all = seqs(&posted);

    // Joining on another node: the history posted on the first.
    let (_b, joined) = join(&nodes[1], "h", "bob").await;
    assert_eq!(joined.history_seqs(), all);
    assert_eq!(joined.frame["last_seq"].as_u64(), Some(all[4]));

    // Reconnecting to a third node after seeing the third: exactly the last two.
    let url = nodes[2].url(&format!("/ws/h/cy?since_seq={}", all[2]));
    let mut c = Client::connect(&url).await;
    c.expect("welcome").await;
    let recovered = c.read_joined().await;
    assert_eq!(recovered.frame["recovered"], true, "{}", recovered.frame);
    assert_eq!(recovered.history_seqs(), all[3..]);
    // And the API answers the same history on any node.
    for node in &nodes {
        let (status, page) = api(node.addr, "GET", "/api/rooms/h/history", None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(texts(&page), ["m1", "m2", "m3", "m4", "m5"]);
    }
}

#[tokio::test]
async fn a_resend_to_another_node_is_answered_with_the_original() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut a, _) = join(&nodes[0], "d", "ann").await;
    a.send(json!({"type": "chat", "text": "once", "client_msg_id": "same"}))
        .await;
    let ack = a.expect("ack").await;
    // The same user resends through another node (say, after a reconnect).
    let (mut again, _) = join(&nodes[1], "d", "ann").await;
    again
        .send(json!({"type": "chat", "text": "once", "client_msg_id": "same"}))
        .await;
    let second = again.expect("ack").await;
    assert_eq!(second["seq"], ack["seq"]);
    assert_eq!(second["message_id"], ack["message_id"]);
    let (_, page) = api(nodes[1].addr, "GET", "/api/rooms/d/history", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_node_that_loses_its_subscription_fills_the_gap_before_going_on() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut sender, _) = join(&nodes[0], "g", "ann").await;
    let (mut reader, _) = join(&nodes[1], "g", "bob").await;
    sender.send(json!({"type": "chat", "text": "before"})).await;
    let before = chats(&mut reader, 1).await;

    // Cut every subscriber's connection: what is published until they resubscribe is
    // never received by them, and must come from the room's stream.
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for n in 0..20 {
        sender
            .send(json!({"type": "chat", "text": format!("m{n}")}))
            .await;
    }
    let got = chats(&mut reader, 20).await;
    let mut want = vec![before[0]["seq"].as_u64().unwrap()];
    want.extend(seqs(&got));
    assert!(
        want.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {want:?}"
    );
    let texts: Vec<&str> = got.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..20).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected);
    // And nothing twice: a barrier shows no chat was queued after the last.
    reader.send(json!({"type": "get_users"})).await;
    assert_eq!(reader.recv().await["type"], "active_users");

    // Each node lost its subscription once, and says so.
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let (_, health) = http_get(node.addr, "/health").await;
            if health["broker"] == "up" && health["broker_reconnects"] == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{health}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, metrics) = http_get_raw(node.addr, "/metrics").await;
        assert!(
            metrics.contains("\nroomcast_broker_reconnects_total 1\n")
                && metrics.contains("\nroomcast_broker_up 1\n"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn what_a_node_missed_and_the_stream_no_longer_keeps_is_reported_as_a_gap() {
    const SENT: usize = 300;
    let redis = RedisServer::start();
    // Streams keep about 5 chats (trimmed a whole stream node at a time: at most ~105).
    let nodes = nodes_with(&redis, 2, &["--retention-messages", "5"]);
    wait_subscribed(&nodes).await;
    let (mut sender, _) = join(&nodes[0], "g", "ann").await;
    let (mut reader, _) = join(&nodes[1], "g", "bob").await;
    sender.send(json!({"type": "chat", "text": "before"})).await;
    let before = seqs(&chats(&mut reader, 1).await)[0];

    // The reader's node stops, its subscription is cut, and the room moves on without it.
    nodes[1].signal("STOP");
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut acked = Vec::new();
    for n in 0..SENT {
        let id = format!("m{n}");
        sender
            .send(json!({"type": "chat", "text": id, "client_msg_id": id}))
            .await;
        acked.push(next_of(&mut sender, "ack").await["seq"].as_u64().unwrap());
    }
    let last = *acked.last().unwrap();
    assert_eq!(acked, (before + 1..=last).collect::<Vec<u64>>());
    nodes[1].signal("CONT");

    // Back, the node fills the room from its stream: the lost seqs are named in one
    // `history_gap`, and what the stream still keeps follows, in order, once each.
    let gap = next_of(&mut reader, "error").await;
    assert_eq!(gap["code"], "history_gap", "{gap}");
    assert_eq!(gap["room_id"], "g");
    let message = gap["message"].as_str().unwrap();
    let range = message
        .strip_prefix("messages ")
        .and_then(|m| m.split_once(' '))
        .and_then(|(range, _)| range.split_once(".."))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("no seq range in {message:?}"));
    assert_eq!(range.0, before + 1, "{message}");
    assert!(
        range.1 >= last - 105 && range.1 < last - 4,
        "the stream keeps 5 to ~105: {message}"
    );
    let kept = chats(&mut reader, (last - range.1) as usize).await;
    assert_eq!(seqs(&kept), (range.1 + 1..=last).collect::<Vec<u64>>());
    assert_eq!(kept.last().unwrap()["text"], format!("m{}", SENT - 1));

    // Live delivery goes on, with nothing twice.
    sender.send(json!({"type": "chat", "text": "after"})).await;
    let after = chats(&mut reader, 1).await;
    assert_eq!(seqs(&after), [last + 1]);
    assert_eq!(after[0]["text"], "after");
}

#[tokio::test]
async fn a_node_exits_with_a_clear_error_when_redis_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let (code, stderr) = run_to_exit(&["--cluster", &url]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains(&url), "{stderr}");
}

/// Redis is SIGKILLed and restarted while a node carries traffic. With `appendfsync always`
/// nothing acknowledged is lost; chats refused meanwhile are never acknowledged, and their
/// resends (same `client_msg_id`) are stored once; the nodes reconnect by themselves.
#[tokio::test]
async fn killing_redis_under_traffic_loses_nothing_acknowledged() {
    const CHATS: usize = 60;
    let mut redis = RedisServer::start_durable();
    let nodes = nodes(&redis, 3);
    let (mut writer, _) = join(&nodes[0], "k", "ann").await;
    let (mut reader, _) = join(&nodes[1], "k", "bob").await;
    let (mut third, _) = join(&nodes[2], "k", "cy").await;

    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut refused = 0usize;
    for n in 0..CHATS {
        if n == CHATS / 3 {
            redis.kill_and_restart();
        }
        let id = format!("c{n}");
        // Send until acknowledged: a refusal (store_unavailable while Redis is away) is
        // answered with the chat's id and the chat is sent again.
        let seq = loop {
            writer
                .send(json!({"type": "chat", "text": id, "client_msg_id": id}))
                .await;
            let answer = loop {
                let f = writer.recv().await;
                if f["client_msg_id"] == id.as_str() && (f["type"] == "ack" || f["type"] == "error")
                {
                    break f;
                }
            };
            if answer["type"] == "ack" {
                break answer["seq"].as_u64().unwrap();
            }
            assert_eq!(answer["code"], "store_unavailable", "{answer}");
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        acked.push((id, seq));
    }
    // Killing Redis made at least one chat wait for it (the test would prove nothing else).
    assert!(refused > 0, "no chat was refused while Redis was down");

    // Every acknowledged chat is in the shared history once, in seq order, on both nodes.
    for node in &nodes {
        let mut before: Option<u64> = None;
        let mut stored: Vec<(String, u64)> = Vec::new();
        loop {
            let path = match before {
                None => "/api/rooms/k/history?limit=100".to_owned(),
                Some(b) => format!("/api/rooms/k/history?limit=100&before_seq={b}"),
            };
            let (status, page) = api(node.addr, "GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            let mut batch: Vec<(String, u64)> = page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["text"].as_str().unwrap().to_owned(),
                        m["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
            let more = page["has_more"] == true;
            before = batch.first().map(|(_, s)| *s);
            batch.append(&mut stored);
            stored = batch;
            if !more {
                break;
            }
        }
        assert_eq!(
            stored, acked,
            "the history holds every acknowledged chat once, in order"
        );
    }
    // The readers on the other nodes got them all too, once each, in order.
    for reader in [&mut reader, &mut third] {
        let got = chats(reader, CHATS).await;
        let got: Vec<(String, u64)> = got
            .iter()
            .map(|c| {
                (
                    c["text"].as_str().unwrap().to_owned(),
                    c["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, acked);
    }
}

#[tokio::test]
async fn the_api_counts_rooms_and_sockets_over_the_cluster_from_any_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    wait_subscribed(&nodes).await;
    // "lobby": ann with two sockets on node 0, bob on node 1. "attic": cy on node 2 only,
    // with one chat in it.
    let (_ann1, _) = join(&nodes[0], "lobby", "ann").await;
    let (_ann2, _) = join(&nodes[0], "lobby", "ann").await;
    let (mut bob, _) = join(&nodes[1], "lobby", "bob").await;
    let (mut cy, _) = join(&nodes[2], "attic", "cy").await;
    cy.send(json!({"type": "chat", "text": "up here", "client_msg_id": "a1"}))
        .await;
    let ack = next_of(&mut cy, "ack").await;
    let attic_seq = ack["seq"].as_u64().unwrap();
    // ann also has a notification socket, on node 2.
    let mut notes = Client::connect(&nodes[2].url("/notifications/ann")).await;
    // Until node 1 knows of that socket, a push from there counts ann as offline.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let push = json!({"user_id": "ann", "title": "t", "message": "hi"});
    loop {
        let (status, pushed) = api(nodes[1].addr, "POST", "/api/notifications", Some(&push)).await;
        assert_eq!(status, 200, "{pushed}");
        if pushed["reached"] == json!(["ann"]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pushed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let want = json!({"rooms": [
        {"room_id": "attic", "members": 1, "sockets": 1, "last_seq": attic_seq},
        {"room_id": "lobby", "members": 2, "sockets": 3, "last_seq": 0},
    ]});
    for node in &nodes {
        let rooms = wait_api(node.addr, "/api/rooms", |b| *b == want).await;
        assert_eq!(rooms, want, "GET /api/rooms on {}", node.addr);
    }
    // One room, asked where it has no member.
    let (status, attic) = api(nodes[0].addr, "GET", "/api/rooms/attic", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        attic,
        json!({"room_id": "attic", "members": ["cy"], "sockets": 1, "last_seq": attic_seq})
    );
    let (_, lobby) = api(nodes[2].addr, "GET", "/api/rooms/lobby", None).await;
    assert_eq!(
        lobby,
        json!({"room_id": "lobby", "members": ["ann", "bob"], "sockets": 3, "last_seq": 0})
    );

    // Disconnecting ann from node 1 closes her three sockets on nodes 0 and 2.
    let (status, closed) = api(nodes[1].addr, "POST", "/api/users/ann/disconnect", None).await;
    assert_eq!(status, 200);
    assert_eq!(closed, json!({"user_id": "ann", "sockets_closed": 3}));
    assert_eq!(notes.expect_close().await, 4003);
    let left = next_of(&mut bob, "user_left").await;
    assert_eq!(left["user_id"], "ann");
    let want = json!({"rooms": [
        {"room_id": "attic", "members": 1, "sockets": 1, "last_seq": attic_seq},
        {"room_id": "lobby", "members": 1, "sockets": 1, "last_seq": 0},
    ]});
    wait_api(nodes[2].addr, "/api/rooms", |b| *b == want).await;
}

#[tokio::test]
async fn presence_counts_users_over_the_cluster() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    wait_subscribed(&nodes).await;
    let (mut ann, _) = join(&nodes[0], "p", "ann").await;
    let (mut bob, _) = join(&nodes[1], "p", "bob").await;
    // Each sees both, whichever node they are on.
    wait_users(&mut bob, "p", &["ann", "bob"]).await;
    wait_users(&mut ann, "p", &["ann", "bob"]).await;

    // A second socket of bob's, on the other node: no second `user_joined`.
    let (bob2, joined) = join(&nodes[0], "p", "bob").await;
    assert_eq!(joined.frame["users"], json!(["ann", "bob"]));
    // bob leaves one node but is still on the other: no `user_left`; then leaves both.
    bob.close().await;
    ann.send(json!({"type": "get_users", "room_id": "p"})).await;
    let users = next_of(&mut ann, "active_users").await;
    assert_eq!(users["users"], json!(["ann", "bob"]));
    bob2.close().await;
    let left = next_of(&mut ann, "user_left").await;
    assert_eq!(left["user_id"], "bob");
    wait_users(&mut ann, "p", &["ann"]).await;
}

#[tokio::test]
async fn typing_private_messages_and_kicks_reach_users_on_other_nodes() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    wait_subscribed(&nodes).await;
    let (mut ann, _) = join(&nodes[0], "t", "ann").await;
    let (mut bob, _) = join(&nodes[1], "t", "bob").await;
    wait_users(&mut ann, "t", &["ann", "bob"]).await;

    ann.send(json!({"type": "typing", "is_typing": true})).await;
    let typing = next_of(&mut bob, "typing").await;
    assert_eq!(
        (typing["user_id"].as_str(), typing["is_typing"].as_bool()),
        (Some("ann"), Some(true))
    );

    ann.send(json!({"type": "private", "to_user": "bob", "content": "psst"}))
        .await;
    let private = next_of(&mut bob, "private").await;
    assert_eq!(
        (private["from"].as_str(), private["message"].as_str()),
        (Some("ann"), Some("psst"))
    );
    ann.send(json!({"type": "private", "to_user": "nobody", "content": "hi"}))
        .await;
    let error = next_of(&mut ann, "error").await;
    assert_eq!(error["code"], "user_offline");

    // An operator on the first node disconnects bob, who is on the second.
    let (status, _) = api(nodes[0].addr, "POST", "/api/users/bob/disconnect", None).await;
    assert_eq!(status, 200);
    assert_eq!(bob.expect_close().await, 4003);
    let left = next_of(&mut ann, "user_left").await;
    assert_eq!(left["user_id"], "bob");
}

#[tokio::test]
async fn a_notification_pushed_on_one_node_reaches_a_socket_on_another() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    wait_subscribed(&nodes).await;
    let mut socket = Client::connect(&nodes[1].url("/notifications/bob")).await;
    // Push through the first node until it knows bob's socket is on the second (that news
    // crosses asynchronously); pushes before that wait in bob's inbox.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let body = json!({"user_id": "bob", "title": "t", "message": "hello"});
        let (status, answer) = api(nodes[0].addr, "POST", "/api/notifications", Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
        if answer["reached"] == json!(["bob"]) {
            // The count covers the other node's socket.
            assert_eq!(answer["sockets"], 1, "{answer}");
            assert_eq!(answer["stored"], json!([]), "{answer}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never reached: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = next_of(&mut socket, "notification").await;
    assert_eq!(
        (got["title"].as_str(), got["message"].as_str()),
        (Some("t"), Some("hello"))
    );
    // The seed's endpoint on the first node says it was sent: a socket elsewhere got it.
    let path = "/send-notification/?user_id=bob&title=t2&message=again";
    let (status, answer) = api(nodes[0].addr, "POST", path, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["sent"], &answer["stored"]),
        (&json!(true), &json!(false))
    );
    // Pushes of the loop answered `offline` before the news crossed reached the socket live
    // too (README, "Run a cluster"): more "hello"s may come first, then "again".
    loop {
        let got = next_of(&mut socket, "notification").await;
        match got["message"].as_str() {
            Some("again") => break,
            other => assert_eq!(other, Some("hello"), "{got}"),
        }
    }
}

/// Resends are recognized while their original is kept: one whose original the stream
/// trimmed is a new chat, one whose original is kept is answered with it.
#[tokio::test]
async fn a_resend_whose_original_was_trimmed_is_stored_again() {
    const SENT: usize = 300;
    let redis = RedisServer::start();
    let nodes = nodes_with(&redis, 1, &["--retention-messages", "5"]);
    let (mut ann, _) = join(&nodes[0], "t", "ann").await;
    let (mut bob, _) = join(&nodes[0], "t", "bob").await;
    let mut acks = Vec::new();
    for n in 0..SENT {
        let id = format!("m{n}");
        ann.send(json!({"type": "chat", "text": id, "client_msg_id": id}))
            .await;
        acks.push(next_of(&mut ann, "ack").await);
    }
    let seq = |ack: &Value| ack["seq"].as_u64().unwrap();
    let last = seq(&acks[SENT - 1]);
    ann.send(json!({"type": "chat", "text": "m0", "client_msg_id": "m0"}))
        .await;
    let again = next_of(&mut ann, "ack").await;
    assert_eq!(seq(&again), last + 1, "{again}");
    assert_ne!(again["message_id"], acks[0]["message_id"]);
    let kept = format!("m{}", SENT - 1);
    ann.send(json!({"type": "chat", "text": kept, "client_msg_id": kept}))
        .await;
    let original = next_of(&mut ann, "ack").await;
    assert_eq!(seq(&original), last, "{original}");
    assert_eq!(original["message_id"], acks[SENT - 1]["message_id"]);
    // Bob got every chat once, the trimmed one's resend as a new chat, the kept one's not.
    let got = chats(&mut bob, SENT + 1).await;
    let first = seq(&acks[0]);
    assert_eq!(seqs(&got), (first..=last + 1).collect::<Vec<u64>>());
    assert_eq!(got[SENT]["text"], "m0");
    let (_, page) = api(nodes[0].addr, "GET", "/api/rooms/t/history?limit=3", None).await;
    assert_eq!(texts(&page), ["m298", "m299", "m0"], "{page}");
}

#[tokio::test]
async fn the_users_of_a_node_killed_with_sigkill_leave_within_the_presence_ttl() {
    let redis = RedisServer::start();
    let nodes = nodes_with(&redis, 2, &["--presence-ttl-secs", "1"]);
    wait_subscribed(&nodes).await;
    let (mut ann, _) = join(&nodes[0], "d", "ann").await;
    let (_bob, _) = join(&nodes[1], "d", "bob").await;
    wait_users(&mut ann, "d", &["ann", "bob"]).await;
    nodes[1].signal("KILL");
    let left = next_of(&mut ann, "user_left").await;
    assert_eq!(left["user_id"], "bob");
    wait_users(&mut ann, "d", &["ann"]).await;
}

/// A Redis without persistence restarts empty: a node that never saw the room still hands
/// out seqs above every seq handed out before, so none means two messages.
#[tokio::test]
async fn a_redis_that_lost_its_data_reuses_no_seq() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut a, _) = join(&nodes[0], "e", "ann").await;
    for n in 0..3 {
        a.send(json!({"type": "chat", "text": format!("before{n}")}))
            .await;
    }
    let before = seqs(&chats(&mut a, 3).await);
    redis.kill_and_restart();
    // The other node, which never saw the room, posts after the loss.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let after = loop {
        let body = json!({"text": "after"});
        let (status, posted) =
            api(nodes[1].addr, "POST", "/api/rooms/e/messages", Some(&body)).await;
        if status == 201 {
            break posted["seq"].as_u64().unwrap();
        }
        // Until the node has reconnected: 503 store_unavailable, nothing posted.
        assert_eq!(status, 503, "{posted}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never posted after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        after > before[2],
        "seq {after} after the loss, {before:?} before"
    );
}

/// Redis restarts while the nodes are quiet: once they are subscribed again (`/health` ok),
/// the first post through each node is stored, not refused on a connection that died with
/// the old Redis.
#[tokio::test]
async fn after_redis_restarts_under_a_quiet_node_its_first_post_is_stored() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    for node in &nodes {
        let (status, posted) = api(
            node.addr,
            "POST",
            "/api/rooms/q/messages",
            Some(&json!({"text": "before"})),
        )
        .await;
        assert_eq!(status, 201, "{posted}");
    }
    redis.kill_and_restart();
    wait_subscribed(&nodes).await;
    // Quiet for longer than a store connection may sit unchecked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (n, node) in nodes.iter().enumerate() {
        let (status, posted) = api(
            node.addr,
            "POST",
            "/api/rooms/q/messages",
            Some(&json!({"text": format!("after{n}")})),
        )
        .await;
        assert_eq!(status, 201, "node {n}: {posted}");
    }
    let (status, page) = api(nodes[0].addr, "GET", "/api/rooms/q/history", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(texts(&page), ["after0", "after1"], "Redis restarted empty");
}

/// Redis restarts from an RDB snapshot and loses the chats acknowledged after it. A node
/// that restarted too (it remembers no seq) still hands out none of the lost seqs again, and
/// a client that saw the lost chats rejoins with `since_seq` and is not told it recovered
/// exactly while missing the chats posted since.
#[tokio::test]
async fn a_redis_restored_from_a_snapshot_reuses_no_seq() {
    async fn post(node: &ChildServer, text: &str) -> u64 {
        let body = json!({ "text": text });
        let (status, posted) = api(node.addr, "POST", "/api/rooms/s/messages", Some(&body)).await;
        assert_eq!(status, 201, "{text}: {posted}");
        posted["seq"].as_u64().unwrap()
    }
    let mut redis = RedisServer::start();
    let first = nodes(&redis, 1);
    for text in ["a1", "a2", "a3"] {
        post(&first[0], text).await;
    }
    redis.command(&["SAVE"]);
    let mut lost = Vec::new();
    for text in ["b1", "b2", "b3"] {
        lost.push(post(&first[0], text).await);
    }
    drop(first);
    // Loads the snapshot: b1-b3 are gone from Redis, their seqs from its counter.
    redis.kill_and_restart();
    let second = nodes(&redis, 1);
    let after = post(&second[0], "c1").await;
    assert!(
        after > lost[2],
        "seq {after} after the restore; lost {lost:?}"
    );

    let url = second[0].url(&format!("/ws/s/cy?since_seq={}", lost[2]));
    let mut c = Client::connect(&url).await;
    c.expect("welcome").await;
    let joined = c.read_joined().await;
    let got: Vec<&str> = joined
        .history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(got.contains(&"c1"), "{} {got:?}", joined.frame);
    if joined.frame["recovered"] == true {
        assert_eq!(got, ["c1"], "{}", joined.frame);
    }
}

/// While a node knows it cannot reach Redis, a `private` for a user whose sockets are all on
/// other nodes is refused with `cluster_unavailable` naming the user, not dropped; one for a
/// user with a socket on this node is still delivered there. A notification pushed there
/// counts such a user offline (not reached), and this node's sockets as reached.
#[tokio::test]
async fn a_private_message_that_cannot_cross_nodes_is_refused_not_dropped() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut ann, _) = join(&nodes[0], "p", "ann").await;
    let (mut cy, _) = join(&nodes[0], "p", "cy").await;
    let (_bob, _) = join(&nodes[1], "p", "bob").await;
    let _bob_notes = Client::connect(&nodes[1].url("/notifications/bob")).await;
    let mut cy_notes = Client::connect(&nodes[0].url("/notifications/cy")).await;
    wait_users(&mut ann, "p", &["ann", "bob", "cy"]).await;
    let push = json!({"user_ids": ["bob", "cy"], "title": "t", "message": "hi"});
    wait_api_post(&nodes[0], "/api/notifications", &push, |b| {
        b["reached"] == json!(["bob", "cy"])
    })
    .await;
    next_of(&mut cy_notes, "notification").await;
    redis.kill();
    wait_broker(&nodes[0], "reconnecting").await;
    ann.send(json!({"type": "private", "to_user": "bob", "content": "psst"}))
        .await;
    let error = next_of(&mut ann, "error").await;
    assert_eq!(
        (&error["code"], &error["to_user"]),
        (&json!("cluster_unavailable"), &json!("bob")),
        "{error}"
    );
    ann.send(json!({"type": "private", "to_user": "cy", "content": "here"}))
        .await;
    let private = next_of(&mut cy, "private").await;
    assert_eq!(
        (&private["from"], &private["message"]),
        (&json!("ann"), &json!("here"))
    );

    let away = json!({"user_ids": ["bob", "cy"], "title": "t", "message": "away"});
    let (status, pushed) = api(nodes[0].addr, "POST", "/api/notifications", Some(&away)).await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(
        (
            &pushed["sockets"],
            &pushed["reached"],
            &pushed["offline"],
            &pushed["stored"]
        ),
        (&json!(1), &json!(["cy"]), &json!(["bob"]), &json!([])),
        "{pushed}"
    );
    // Earlier pushes (while waiting for node 1's announcement) may come first.
    while next_of(&mut cy_notes, "notification").await["message"] != "away" {}
}

/// Development mode (no JWT flag): the nodes share one signing key through Redis, so a
/// development token minted by one node opens a socket on another, as a balancer that sends
/// a reconnecting page elsewhere needs; a token from a server outside the cluster does not.
#[tokio::test]
async fn a_development_token_minted_by_one_node_is_accepted_by_the_others() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let mint = |node: &ChildServer, user: &str| {
        let (addr, body) = (node.addr, json!({"user_id": user, "rooms": ["lobby"]}));
        async move {
            let (status, body) = api(addr, "POST", "/api/dev-token", Some(&body)).await;
            assert_eq!(status, 200, "{body}");
            body["token"].as_str().expect("a token").to_owned()
        }
    };
    let token = mint(&nodes[0], "dana").await;
    for node in &nodes {
        let mut c = Client::connect(&node.url(&format!("/ws?token={token}"))).await;
        let welcome = c.expect("welcome").await;
        assert_eq!(welcome["user_id"], "dana", "{welcome}");
        // The token's grants hold on every node.
        c.join("lobby").await;
        c.send(json!({"type": "join", "room_id": "attic"})).await;
        c.expect_error("forbidden").await;
    }
    // A node started later takes the same key.
    let late = nodes_with(&redis, 1, &[]).remove(0);
    let mut c = Client::connect(&late.url(&format!("/ws?token={token}"))).await;
    assert_eq!(c.expect("welcome").await["user_id"], "dana");
    let from_late = mint(&late, "erin").await;
    let mut c = Client::connect(&nodes[1].url(&format!("/ws?token={from_late}"))).await;
    assert_eq!(c.expect("welcome").await["user_id"], "erin");

    let alone = ChildServer::spawn(&[]);
    let foreign = mint(&alone, "mallory").await;
    let refused = Client::refused(&nodes[0].url(&format!("/ws?token={foreign}"))).await;
    assert_api_error(
        &refused,
        401,
        "token_invalid",
        "a token of another server's key",
    );
}
