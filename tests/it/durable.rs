//! The durable store: seqs across restarts, acks after commit, idempotent resends, exact
//! recovery with `since_seq`, the offline inbox, retention, and faults.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roomcast::store::{ManualClock, StoreSpec};
use serde_json::{Value, json};

use crate::common::*;

fn sqlite(path: &Path) -> impl FnOnce(&mut roomcast::Config) {
    let spec = StoreSpec::Sqlite(path.to_owned());
    move |c| {
        c.store = spec;
        c.rate_per_sec = 0.0;
    }
}

fn db(name: &str) -> PathBuf {
    temp_dir(name).join("roomcast.db")
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().expect("a seq")
}

/// Sends a chat with a client id and returns (its `chat` echo, its `ack`), in whichever
/// order they come.
async fn post(c: &mut Client, room: &str, text: &str, id: &str) -> (Value, Value) {
    c.send(json!({"type": "chat", "room_id": room, "text": text, "client_msg_id": id}))
        .await;
    let (mut chat, mut ack) = (None, None);
    while chat.is_none() || ack.is_none() {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("chat") if f["client_msg_id"] == id => chat = Some(f),
            Some("ack") if f["client_msg_id"] == id => ack = Some(f),
            Some("user_joined" | "user_left") => {}
            _ => panic!("unexpected while posting {id}: {f}"),
        }
    }
    let (chat, ack) = (chat.unwrap(), ack.unwrap());
    assert_eq!(
        (&ack["seq"], &ack["message_id"], &ack["room_id"]),
        (&chat["seq"], &chat["message_id"], &chat["room_id"])
    );
    (chat, ack)
}

/// The next `chat` frame, skipping presence.
async fn next_chat(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("chat") => return f,
            Some("user_joined" | "user_left") => {}
            _ => panic!("expected a chat, got {f}"),
        }
    }
}

#[tokio::test]
async fn seqs_and_history_survive_a_restart() {
    let path = db("restart");
    let srv = TestServer::with(sqlite(&path));
    let (mut a, _) = srv.room_client("r", "a").await;
    for n in 1..=5 {
        let (chat, _) = post(&mut a, "r", &format!("m{n}"), &format!("c{n}")).await;
        assert_eq!(seq(&chat), n);
    }
    a.close().await;
    srv.stop().await;

    let srv = TestServer::with(sqlite(&path));
    let (mut b, joined) = srv.room_client("r", "b").await;
    assert_eq!(joined.frame["last_seq"], 5);
    assert_eq!(joined.history_seqs(), [1, 2, 3, 4, 5]);
    assert_eq!(joined.history[4]["text"], "m5");
    let (chat, _) = post(&mut b, "r", "after", "b1").await;
    assert_eq!(seq(&chat), 6, "the seq goes on, never reused");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn a_resend_gets_the_original_ack_and_posts_nothing_even_after_a_restart() {
    let path = db("resend");
    let srv = TestServer::with(sqlite(&path));
    let (mut a, _) = srv.room_client("r", "a").await;
    let (mut watcher, _) = srv.room_client("r", "w").await;
    let (_, first) = post(&mut a, "r", "once", "same").await;
    assert_eq!(watcher.expect("chat").await["text"], "once");

    // Again, same id: the original ack, no new chat anywhere.
    a.send(json!({"type": "chat", "room_id": "r", "text": "once", "client_msg_id": "same"}))
        .await;
    let again = a.expect("ack").await;
    assert_eq!(again, first);
    // The same id from another user is another message.
    let (chat, _) = post(&mut watcher, "r", "mine", "same").await;
    assert_eq!(seq(&chat), 2);
    assert_eq!(a.expect("chat").await["text"], "mine");
    a.close().await;
    watcher.close().await;
    srv.stop().await;

    let srv = TestServer::with(sqlite(&path));
    let (mut a, joined) = srv.room_client("r", "a").await;
    assert_eq!(joined.frame["last_seq"], 2);
    a.send(json!({"type": "chat", "room_id": "r", "text": "once", "client_msg_id": "same"}))
        .await;
    assert_eq!(a.expect("ack").await, first);
    let (chat, _) = post(&mut a, "r", "new", "next").await;
    assert_eq!(seq(&chat), 3, "the resend took no seq");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn since_seq_recovers_exactly_or_says_it_cannot() {
    let srv = TestServer::with(|c| {
        c.rate_per_sec = 0.0;
        c.recovery_max = 6;
        c.history_on_join = 3;
        c.history_keep = 4;
    });
    let (mut a, _) = srv.room_client("r", "a").await;
    post_numbered(&mut a, "r", 10).await;
    // From the in-memory window (it holds 7..10).
    let mut b = srv.client("b").await;
    b.send(json!({"type": "join", "room_id": "r", "since_seq": 7}))
        .await;
    let joined = b.read_joined().await;
    assert_eq!(joined.frame["recovered"], true);
    assert_eq!(joined.history_seqs(), [8, 9, 10]);
    // From the store (5 is older than the window).
    let mut c = Client::connect(&srv.url("/ws/r/c?since_seq=4")).await;
    c.expect("welcome").await;
    let joined = c.read_joined().await;
    assert_eq!(joined.frame["recovered"], true);
    assert_eq!(joined.history_seqs(), [5, 6, 7, 8, 9, 10]);
    // Up to date: nothing to send, and that is a full recovery.
    let mut d = srv.client("d").await;
    d.send(json!({"type": "join", "room_id": "r", "since_seq": 10}))
        .await;
    let joined = d.read_joined().await;
    assert_eq!(
        (joined.frame["recovered"].clone(), joined.history_seqs()),
        (json!(true), vec![])
    );
    // Too far back (8 missed, at most 6 given) or from the future: told so, recent history.
    for since in [2, 99] {
        let mut e = srv.client(&format!("e{since}")).await;
        e.send(json!({"type": "join", "room_id": "r", "since_seq": since}))
            .await;
        let joined = e.read_joined().await;
        assert_eq!(joined.frame["recovered"], false, "since {since}");
        assert_eq!(joined.history_seqs(), [8, 9, 10]);
    }
    // A plain join says nothing about recovery.
    let (_, joined) = srv.room_client("r", "f").await;
    assert!(joined.frame.get("recovered").is_none());
    // Live messages follow, once.
    post(&mut a, "r", "live", "c11").await;
    for client in [&mut b, &mut c, &mut d] {
        let live = next_chat(client).await;
        assert_eq!((seq(&live), live["text"].as_str()), (11, Some("live")));
    }
}

/// A reader that keeps leaving and rejoining with `since_seq` while a writer posts sees every
/// message exactly once, in order.
#[tokio::test]
async fn recovery_under_concurrent_posting_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 400;
    let path = db("concurrent");
    let srv = TestServer::with(sqlite(&path));
    let (mut writer, _) = srv.room_client("busy", "writer").await;
    let writing = tokio::spawn(async move {
        // At most 32 unacknowledged at a time (the in-flight limit refuses a flood), and every
        // ack in the end, so the writer stays connected until all are stored.
        let mut acks = 0;
        for n in 1..=TOTAL {
            writer
                .send(json!({"type": "chat", "text": format!("{n}"), "client_msg_id": format!("w{n}")}))
                .await;
            while n - acks >= 32 || (n == TOTAL && acks < TOTAL) {
                if writer.recv().await["type"] == "ack" {
                    acks += 1;
                }
            }
        }
        writer
    });

    let mut reader = srv.client("reader").await;
    let mut seen: Vec<u64> = Vec::new();
    let mut rounds = 0;
    while seen.last().copied() != Some(TOTAL) {
        rounds += 1;
        let since = seen.last().copied().unwrap_or(0);
        reader
            .send(json!({"type": "join", "room_id": "busy", "since_seq": since}))
            .await;
        let joined = reader.read_joined().await;
        assert_eq!(joined.frame["recovered"], true, "round {rounds}");
        seen.extend(joined.history_seqs());
        // Take a few live ones, then leave while the writer goes on.
        let mut live = 0;
        while live < 10 && seen.last().copied() != Some(TOTAL) {
            let f = reader.recv().await;
            match f["type"].as_str() {
                Some("chat") => {
                    seen.push(seq(&f));
                    live += 1;
                }
                Some("user_joined" | "user_left") => {}
                other => panic!("unexpected {other:?}: {f}"),
            }
        }
        reader
            .send(json!({"type": "leave", "room_id": "busy"}))
            .await;
        loop {
            let f = reader.recv().await;
            match f["type"].as_str() {
                Some("left") => break,
                // Live frames already on the way before the leave still count.
                Some("chat") => seen.push(seq(&f)),
                _ => {}
            }
        }
    }
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "after {rounds} rounds"
    );
    // Each round takes at most 10 live messages, so there are always rejoins; how many of
    // them happen while the writer is still posting depends on the machine.
    assert!(
        rounds >= 2,
        "the test must actually rejoin ({rounds} rounds)"
    );
    writing.await.unwrap().close().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

async fn notify(srv: &TestServer, user: &str, title: &str) -> Value {
    let (status, body) = http_post(
        srv.addr,
        &format!("/send-notification/?user_id={user}&title={title}&message=hi"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn notifications_for_an_offline_user_wait_and_are_delivered_once() {
    let path = db("inbox");
    let srv = TestServer::with(sqlite(&path));
    let first = notify(&srv, "olga", "one").await;
    assert_eq!(
        (&first["sent"], &first["stored"]),
        (&json!(false), &json!(true))
    );
    let second = notify(&srv, "olga", "two").await;
    srv.stop().await;

    // They survive a restart and arrive, in order, on the next socket.
    let srv = TestServer::with(sqlite(&path));
    let mut n1 = Client::connect(&srv.url("/notifications/olga")).await;
    let got = n1.expect("notification").await;
    assert_eq!(got, first["notification"]);
    assert_eq!(n1.expect("notification").await, second["notification"]);
    // Exactly once: a second socket gets nothing stored, only what is live.
    let mut n2 = Client::connect(&srv.url("/notifications/olga")).await;
    n2.send_raw("ping").await;
    assert_eq!(n2.recv_text().await, "pong");
    let live = notify(&srv, "olga", "three").await;
    assert_eq!(
        (&live["sent"], &live["stored"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(n1.expect("notification").await, live["notification"]);
    assert_eq!(n2.expect("notification").await, live["notification"]);
    n1.close().await;
    n2.close().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Expiry is measured by the store's clock, which the test holds: time moves when the test
/// says, by exactly as much, with no sleep and no race against a slow machine.
#[tokio::test]
async fn stored_notifications_expire() {
    let time = ManualClock::starting_now();
    let srv = TestServer::with(|c| {
        c.inbox_ttl_secs = 1;
        c.clock = time.clone().into();
    });
    let stale = notify(&srv, "late", "stale").await;
    assert_eq!(stale["stored"], true);
    time.advance(Duration::from_millis(600));
    let fresh = notify(&srv, "late", "fresh").await;
    assert_eq!(fresh["stored"], true);
    // "stale" is 1 s old: expired; "fresh" is 0.4 s old: still waiting.
    time.advance(Duration::from_millis(400));
    let mut n = Client::connect(&srv.url("/notifications/late")).await;
    assert_eq!(n.expect("notification").await, fresh["notification"]);
    n.send_raw("ping").await;
    assert_eq!(n.recv_text().await, "pong", "the expired one never comes");
}

#[tokio::test]
async fn retention_prunes_old_messages_but_not_the_seq() {
    let path = db("retention");
    let srv = TestServer::with(|c| {
        sqlite(&path)(c);
        c.retention_messages = 5;
        c.prune_interval_ms = 50;
        c.history_keep = 5;
        c.history_on_join = 5;
    });
    let (mut a, _) = srv.room_client("r", "a").await;
    post_numbered(&mut a, "r", 12).await;
    wait_pruned(srv.addr, "r", &[8, 9, 10, 11, 12]).await;
    // What was pruned cannot be recovered; the seq goes on.
    let mut b = srv.client("b").await;
    b.send(json!({"type": "join", "room_id": "r", "since_seq": 3}))
        .await;
    assert_eq!(b.read_joined().await.frame["recovered"], false);
    let (chat, _) = post(&mut a, "r", "m13", "c13").await;
    assert_eq!(seq(&chat), 13);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Waits until a retention pass has left exactly `want` in `room`'s history (read from the
/// store, through the API).
async fn wait_pruned(addr: std::net::SocketAddr, room: &str, want: &[u64]) {
    let path = format!("/api/rooms/{room}/history?limit=100");
    let seqs = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(seq)
            .collect()
    };
    let page = wait_api(addr, &path, |page| seqs(page) == want).await;
    assert_eq!(page["has_more"], false, "{page}");
}

/// Posts chats "m1".."mN" (ids "c1".."cN") to `room` through `c`, each acknowledged.
async fn post_numbered(c: &mut Client, room: &str, n: u64) {
    for n in 1..=n {
        post(c, room, &format!("m{n}"), &format!("c{n}")).await;
    }
}

/// A count limit lowered between two runs applies to every room at the first pass, quiet
/// ones included, not only to the rooms that get a new chat.
#[tokio::test]
async fn a_lowered_count_limit_applies_to_quiet_rooms_at_start() {
    let path = db("retention-start");
    let srv = TestServer::with(sqlite(&path));
    let (mut a, _) = srv.room_client("quiet", "a").await;
    post_numbered(&mut a, "quiet", 12).await;
    a.close().await;
    srv.stop().await;

    let srv = TestServer::with(|c| {
        sqlite(&path)(c);
        c.retention_messages = 4;
        c.prune_interval_ms = 50;
    });
    wait_pruned(srv.addr, "quiet", &[9, 10, 11, 12]).await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// While a member stays in the room, its in-memory window still holds what count-based
/// retention deleted from the store, unless the window is bounded by the same count: a join,
/// or a `since_seq` rejoin, must get what the store keeps, as `history` pages say.
#[tokio::test]
async fn a_live_room_hands_out_nothing_that_retention_deleted() {
    let path = db("retention-live");
    let srv = TestServer::with(|c| {
        sqlite(&path)(c);
        c.retention_messages = 3;
        c.prune_interval_ms = 50;
    });
    let (mut a, _) = srv.room_client("r", "a").await;
    post_numbered(&mut a, "r", 6).await;
    wait_pruned(srv.addr, "r", &[4, 5, 6]).await;
    // a stays in the room. Seqs 2 and 3 are gone: no recovery, and the recent history.
    let mut b = srv.client("b").await;
    b.send(json!({"type": "join", "room_id": "r", "since_seq": 1}))
        .await;
    let joined = b.read_joined().await;
    assert_eq!(joined.frame["recovered"], false);
    assert_eq!(joined.history_seqs(), [4, 5, 6]);
    let mut c = srv.client("c").await;
    c.send(json!({"type": "join", "room_id": "r"})).await;
    assert_eq!(c.read_joined().await.history_seqs(), [4, 5, 6]);
    // What the store keeps is still recovered from the window.
    let mut d = srv.client("d").await;
    d.send(json!({"type": "join", "room_id": "r", "since_seq": 4}))
        .await;
    let joined = d.read_joined().await;
    assert_eq!(joined.frame["recovered"], true);
    assert_eq!(joined.history_seqs(), [5, 6]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The same for age-based retention, on the store's clock, which the test holds.
#[tokio::test]
async fn a_live_room_hands_out_nothing_that_expired() {
    let time = ManualClock::starting_now();
    let path = db("retention-age-live");
    let srv = TestServer::with(|c| {
        sqlite(&path)(c);
        c.retention_secs = 10;
        c.prune_interval_ms = 50;
        c.clock = time.clone().into();
    });
    let (mut a, _) = srv.room_client("r", "a").await;
    post_numbered(&mut a, "r", 2).await;
    time.advance(Duration::from_secs(6));
    post(&mut a, "r", "m3", "c3").await;
    // m1 and m2 are 11 s old (past the limit), m3 5 s.
    time.advance(Duration::from_secs(5));
    wait_pruned(srv.addr, "r", &[3]).await;
    let mut b = srv.client("b").await;
    b.send(json!({"type": "join", "room_id": "r", "since_seq": 1}))
        .await;
    let joined = b.read_joined().await;
    assert_eq!(joined.frame["recovered"], false);
    assert_eq!(joined.history_seqs(), [3]);
    let mut c = srv.client("c").await;
    c.send(json!({"type": "join", "room_id": "r", "since_seq": 2}))
        .await;
    let joined = c.read_joined().await;
    assert_eq!(joined.frame["recovered"], true);
    assert_eq!(joined.history_seqs(), [3]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Sends chat "blocked" (id c2) to room r and expects it refused `store_unavailable`,
/// naming it.
async fn post_refused(c: &mut Client) {
    c.send(json!({"type": "chat", "room_id": "r", "text": "blocked", "client_msg_id": "c2"}))
        .await;
    c.expect_chat_error("store_unavailable", "r", "c2").await;
}

/// A disk that cannot take the commit (here a file-size limit on the real binary, which
/// fails the write-ahead log's next append as a full disk would) refuses the chat
/// `store_unavailable`: nothing posted, no seq used, and the server goes on (it used to be
/// killed by SIGXFSZ). Once there is room, the same id goes through, and after a kill -9 the
/// history holds every chat once.
#[tokio::test]
async fn a_full_disk_refuses_the_chat_and_the_server_goes_on() {
    let path = db("full-disk");
    let arg = format!("sqlite:{}", path.display());
    let args = ["--store", arg.as_str(), "--rate-per-sec", "0"];
    let server = ChildServer::spawn(&args);
    let mut a = Client::connect(&server.url("/ws/r/a")).await;
    a.expect("welcome").await;
    a.read_joined().await;
    let (_, ack) = post(&mut a, "r", "before", "c1").await;
    assert_eq!(ack["seq"], 1);

    // No file may grow past its size now: the log's next frame cannot be appended.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let full = std::fs::metadata(&wal).expect("the write-ahead log").len();
    server.limit_file_size(Some(full));
    post_refused(&mut a).await;
    assert_eq!(
        server.metric("roomcast_store_write_failures_total").await,
        1.0
    );
    server.limit_file_size(None);

    // Nothing was posted, no seq was used, and the same id now goes through.
    let (chat, ack) = post(&mut a, "r", "blocked", "c2").await;
    assert_eq!((seq(&chat), ack["seq"].as_u64()), (2, Some(2)));
    let (chat, _) = post(&mut a, "r", "after", "c3").await;
    assert_eq!(seq(&chat), 3);
    server.signal("KILL");
    drop(server);

    let server = ChildServer::spawn(&args);
    let mut b = Client::connect(&server.url("/ws/r/b")).await;
    b.expect("welcome").await;
    b.read_joined().await;
    let history = whole_history(&mut b, "r").await;
    let got: Vec<(u64, &str)> = history
        .iter()
        .map(|m| (seq(m), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(1, "before"), (2, "blocked"), (3, "after")]);
    drop(server);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn a_failed_write_sends_no_ack_and_the_server_goes_on() {
    let path = db("fault");
    let srv = TestServer::with(sqlite(&path));
    let (mut a, _) = srv.room_client("r", "a").await;
    let (_, ack) = post(&mut a, "r", "before", "c1").await;
    assert_eq!(ack["seq"], 1);

    // Another process takes the write lock: the server's next commit fails after its busy
    // timeout.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    post_refused(&mut a).await;
    assert_eq!(srv.metric("roomcast_store_write_failures_total").await, 1.0);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    // Nothing was posted, no seq was used, and the same id now goes through.
    let (chat, ack) = post(&mut a, "r", "blocked", "c2").await;
    assert_eq!((seq(&chat), ack["seq"].as_u64()), (2, Some(2)));
    a.send(json!({"type": "history", "room_id": "r"})).await;
    let page = a.expect("history").await;
    assert_eq!(texts(&page), ["before", "blocked"]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn an_unusable_database_path_stops_start_up_with_a_clear_error() {
    let (code, stderr) = run_to_exit(&["--store", "sqlite:/proc/roomcast/roomcast.db"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("/proc/roomcast"), "{stderr}");

    let dir = temp_dir("corrupt");
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![b'#'; 4096]).unwrap();
    let arg = format!("sqlite:{}", junk.display());
    let (code, stderr) = run_to_exit(&["--store", &arg]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not a database"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A database file that cannot be written stops start-up, naming it (it used to start and
/// then answer every chat `store_unavailable`). Root writes read-only files anyway, so the
/// binary runs as an unprivileged user (see `run_to_exit_unprivileged`).
#[tokio::test]
async fn a_read_only_database_stops_start_up_with_a_clear_error() {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;
    let path = db("read-only");
    // A real roomcast database: a server ran on it and stopped cleanly.
    TestServer::with(sqlite(&path)).stop().await;
    let dir = path.parent().unwrap();
    // Only the file is read-only; the folder is writable by anyone, so nothing else (such
    // as creating the -wal and -shm files beside it) stands in the way.
    std::fs::set_permissions(dir, Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, Permissions::from_mode(0o444)).unwrap();
    let arg = format!("sqlite:{}", path.display());
    let (code, stderr) = run_to_exit_unprivileged(&["--store", &arg]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("readonly database"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads a room's whole history through `history` pages, oldest first.
async fn whole_history(c: &mut Client, room: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"type": "history", "room_id": room, "limit": 100});
        if let Some(b) = before {
            req["before_seq"] = json!(b);
        }
        c.send(req).await;
        let page = c.expect("history").await;
        let mut messages = page["messages"].as_array().unwrap().clone();
        before = messages.first().map(seq);
        messages.extend(all);
        all = messages;
        if page["has_more"] != true {
            return all;
        }
    }
}

/// The crash test: SIGKILL mid-burst, restart on the same file, and then what a client does
/// after a crash: each writer resends every chat that got no ack, with the same
/// `client_msg_id`. Afterwards the room holds every chat exactly once, in seq order with no
/// gap: acknowledged ones at their acked seq; ones stored before the kill whose ack was lost
/// answered as duplicates (their stored seq and id, delivered to no one again); the rest
/// stored now. How many of the unacknowledged had been stored depends on where the kill
/// fell; each is checked whichever it is (and `a_resend_gets_the_original_ack_...` covers
/// the duplicate answer deterministically).
///
/// With the default `--sync normal` nothing is fsynced before the ack: what survives the
/// kill is in the OS page cache.
#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    chats_survive_sigkill("normal").await;
}

/// The same with `--sync full` (an fsync before each ack).
#[tokio::test]
async fn acknowledged_messages_survive_sigkill_with_sync_full() {
    chats_survive_sigkill("full").await;
}

async fn chats_survive_sigkill(sync: &str) {
    const WRITERS: usize = 4;
    const EACH: usize = 2000;
    /// At most this many chats unacknowledged per writer: the in-flight limit refuses a flood.
    const WINDOW: usize = 64;
    let path = db(&format!("crash-{sync}"));
    let arg = format!("sqlite:{}", path.display());
    let args = [
        "--store",
        arg.as_str(),
        "--rate-per-sec",
        "0",
        "--sync",
        sync,
    ];
    let server = ChildServer::spawn(&args);

    // (client_msg_id, seq, message_id) of every ack.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, String)>();
    let mut tasks = Vec::new();
    // How many chats each writer tried to send (ids w{w}-0 .. w{w}-{n-1}).
    let tried: Vec<_> = (0..WRITERS)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
        .collect();
    for (w, tried) in tried.iter().enumerate() {
        let mut c = Client::connect(&server.url(&format!("/ws/crash/w{w}"))).await;
        c.expect("welcome").await;
        c.read_joined().await;
        let acks = acks_tx.clone();
        let tried = std::sync::Arc::clone(tried);
        tasks.push(tokio::spawn(async move {
            let window = std::sync::Arc::new(tokio::sync::Semaphore::new(WINDOW));
            let (mut sink, mut stream) = c.split();
            let permits = window.clone();
            let sending = tokio::spawn(async move {
                for n in 0..EACH {
                    permits.acquire().await.unwrap().forget();
                    tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let id = format!("w{w}-{n}");
                    let msg = json!({"type": "chat", "text": id, "client_msg_id": id});
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            // Read acks until the connection dies.
            while let Some(f) = stream.next_value().await {
                match f["type"].as_str() {
                    Some("ack") => {
                        let id = f["client_msg_id"].as_str().unwrap().to_owned();
                        let message_id = f["message_id"].as_str().unwrap().to_owned();
                        let _ = acks.send((id, seq(&f), message_id));
                        window.add_permits(1);
                    }
                    Some("chat" | "user_joined" | "user_left") => {}
                    _ => panic!("writer {w}: unexpected {f}"),
                }
            }
            sending.abort();
        }));
    }
    drop(acks_tx);

    // Kill once a good part of the burst is acknowledged, while at least half of the
    // writers' windows is sent and not acknowledged. (On a busy machine the writers may not
    // run between a window's acks and the next check; killing then would catch nothing in
    // flight.)
    let mut acked: HashMap<String, (u64, String)> = HashMap::new();
    let unanswered = |acked: &HashMap<String, (u64, String)>| {
        let sent: usize = tried
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::SeqCst))
            .sum();
        sent.saturating_sub(acked.len())
    };
    while acked.len() < WRITERS * EACH / 4 || unanswered(&acked) < WRITERS * WINDOW / 2 {
        let (id, s, m) = tokio::time::timeout(TIMEOUT, acks_rx.recv())
            .await
            .expect("acks keep coming")
            .expect("writers alive");
        acked.insert(id, (s, m));
    }
    server.signal("KILL");
    // Acks already on their way count too.
    while let Ok(Some((id, s, m))) = tokio::time::timeout(TIMEOUT, acks_rx.recv()).await {
        acked.insert(id, (s, m));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(server);
    let tried: Vec<usize> = tried
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    let sent_ids = |w: usize| (0..tried[w]).map(move |n| format!("w{w}-{n}"));
    let unacked: Vec<Vec<String>> = (0..WRITERS)
        .map(|w| sent_ids(w).filter(|id| !acked.contains_key(id)).collect())
        .collect();
    assert!(
        unacked.iter().any(|ids| !ids.is_empty()),
        "the kill came mid-burst: some chat got no ack"
    );

    // Restart on the same file: every acknowledged chat is there, at its seq.
    let server = ChildServer::spawn(&args);
    let mut checker = Client::connect(&server.url("/ws/crash/checker")).await;
    checker.expect("welcome").await;
    let last_before = checker.read_joined().await.frame["last_seq"]
        .as_u64()
        .unwrap();
    let before = stored_chats(&mut checker, "crash", last_before).await;
    for (id, (s, m)) in &acked {
        assert_eq!(
            before.get(id),
            Some(&(*s, m.clone())),
            "acknowledged {id} is kept at its seq"
        );
    }
    let all_sent: std::collections::HashSet<String> = (0..WRITERS).flat_map(sent_ids).collect();
    for id in before.keys() {
        assert!(all_sent.contains(id), "{id} is stored but was never sent");
    }
    // It would only watch the resends go by.
    checker.close().await;

    // Each writer resends what got no ack, at most WINDOW at a time.
    let mut resent: HashMap<String, (u64, String)> = HashMap::new();
    let mut delivered: HashMap<String, (u64, String)> = HashMap::new();
    for (w, ids) in unacked.iter().enumerate() {
        let mut c = Client::connect(&server.url(&format!("/ws/crash/w{w}"))).await;
        c.expect("welcome").await;
        c.read_joined().await;
        for chunk in ids.chunks(WINDOW) {
            for id in chunk {
                c.send(json!({"type": "chat", "text": id, "client_msg_id": id}))
                    .await;
            }
            let mut answered = 0;
            while answered < chunk.len() {
                let f = c.recv().await;
                let id = f["client_msg_id"].as_str().map(str::to_owned);
                let (s, m) = (seq_of(&f), f["message_id"].as_str().map(str::to_owned));
                match (f["type"].as_str(), id, s, m) {
                    (Some("ack"), Some(id), Some(s), Some(m)) => {
                        assert!(resent.insert(id, (s, m)).is_none(), "two acks: {f}");
                        answered += 1;
                    }
                    // Its own chats come back to it as a member: stored, and delivered.
                    (Some("chat"), Some(id), Some(s), Some(m)) => {
                        assert!(
                            delivered.insert(id, (s, m)).is_none(),
                            "delivered twice: {f}"
                        );
                    }
                    (Some("user_joined" | "user_left"), ..) => {}
                    _ => panic!("writer {w} resending: unexpected {f}"),
                }
            }
        }
        c.close().await;
    }
    let mut duplicates = 0;
    for id in unacked.iter().flatten() {
        let answer = resent.get(id).unwrap_or_else(|| panic!("no ack for {id}"));
        match before.get(id) {
            Some(stored) => {
                duplicates += 1;
                assert_eq!(answer, stored, "{id} was stored: the original is answered");
                assert!(!delivered.contains_key(id), "{id} was delivered again");
            }
            None => {
                assert!(answer.0 > last_before, "{id} stored now, after the rest");
                assert_eq!(delivered.get(id), Some(answer), "{id} stored and delivered");
            }
        }
    }
    let resends: usize = unacked.iter().map(Vec::len).sum();
    eprintln!(
        "crash: {} acked before the kill; {resends} resent, of which {duplicates} had been \
         stored",
        acked.len()
    );

    // Every chat sent is stored exactly once, in seq order with no gap.
    let mut checker = Client::connect(&server.url("/ws/crash/checker")).await;
    checker.expect("welcome").await;
    let last = checker.read_joined().await.frame["last_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(last, last_before + (resends - duplicates) as u64);
    let after = stored_chats(&mut checker, "crash", last).await;
    let ids: std::collections::HashSet<String> = after.keys().cloned().collect();
    assert_eq!(ids, all_sent, "every chat sent, and nothing else");
    for (id, stored) in acked.iter().chain(&before).chain(&resent) {
        assert_eq!(after.get(id), Some(stored), "{id} kept as answered");
    }
    let (chat, _) = post(&mut checker, "crash", "after", "after").await;
    assert_eq!(seq(&chat), last + 1);
    drop(server);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn seq_of(v: &Value) -> Option<u64> {
    v["seq"].as_u64()
}

/// A room's whole history, which must be seqs 1..=`last` with no gap and no `client_msg_id`
/// twice; returns each id's (seq, message_id).
async fn stored_chats(c: &mut Client, room: &str, last: u64) -> HashMap<String, (u64, String)> {
    let history = whole_history(c, room).await;
    let seqs: Vec<u64> = history.iter().map(seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "seq order, no gap");
    let mut by_id = HashMap::new();
    for m in &history {
        let id = m["client_msg_id"].as_str().expect("every chat has an id");
        let message_id = m["message_id"].as_str().expect("a message id").to_owned();
        assert!(
            by_id.insert(id.to_owned(), (seq(m), message_id)).is_none(),
            "{id} stored twice"
        );
    }
    by_id
}
