//! The page against the protocol's finer points (acks, `since_seq` on rejoin, errors that name
//! a chat), with the page's WebSocket replaced by a scripted one: the test plays the server
//! frame by frame, including frames a real server sends only on faults, and checks what the
//! page sends and shows.

use serde_json::{Value, json};

use crate::harness::{Page, Server, browser_test};

/// Replaces `WebSocket` with a fake the test drives: `window.__sockets` lists every socket
/// the page opened; `s.sent` holds the frames it sent; `s.__recv(obj)` delivers a frame;
/// `s.close(code)` ends it as the server would.
pub(crate) const FAKE_WEBSOCKET: &str = r#"
window.__sockets = [];
class FakeWebSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    window.__sockets.push(this);
    setTimeout(() => { this.readyState = 1; this.dispatchEvent(new Event('open')); }, 0);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(new CloseEvent('close', { code }));
  }
  __recv(frame) { this.dispatchEvent(new MessageEvent('message', { data: JSON.stringify(frame) })); }
}
for (const [k, v] of Object.entries({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 })) FakeWebSocket[k] = v;
window.WebSocket = FakeWebSocket;
"#;

/// The page's current chat socket: the newest one on `/ws` (with a query or without: a socket
/// with a token carries it as a protocol, and has none); `isChat(s)` says whether `s` is one.
pub(crate) const CHAT_SOCKET: &str = concat!(
    "const isChat = (s) => /\\/ws(\\?|$)/.test(String(s.url));",
    "const s = window.__sockets.filter(isChat).at(-1);"
);

/// Delivers `frames` on the current chat socket.
pub(crate) async fn deliver(page: &Page, frames: Value) {
    page.js(
        &format!("{CHAT_SOCKET} for (const f of arguments[0]) s.__recv(f); return null;"),
        vec![frames],
    )
    .await;
}

/// Waits until the current chat socket has sent a frame of type `ty` matching `pick`
/// (a JS expression over `f`), and returns it.
pub(crate) async fn sent(page: &Page, what: &str, pick: &str) -> Value {
    page.wait_for(
        what,
        &format!("{CHAT_SOCKET} return s ? (s.sent.find((f) => {pick}) || null) : null;"),
        vec![],
        |v| !v.is_null(),
    )
    .await
}

/// (seq, text, classes that matter) of every message shown, in order.
async fn wait_shown(page: &Page, want: Value) {
    page.wait_eq(
        &format!("messages {want}"),
        "return [...document.querySelectorAll('#messages li.msg')].map((li) => [
           li.dataset.seq === undefined ? null : Number(li.dataset.seq),
           li.querySelector('.text').textContent,
           ['pending', 'acked'].filter((c) => li.classList.contains(c)).join(' ')]);",
        vec![],
        want,
    )
    .await;
}

fn chat(seq: u64, user: &str, text: &str, cid: Option<&str>) -> Value {
    let mut f = json!({"type": "chat", "room_id": "r", "user_id": user, "text": text,
        "seq": seq, "message_id": format!("m-{seq}"), "timestamp": "2026-01-01T10:00:00.000Z"});
    if let Some(cid) = cid {
        f["client_msg_id"] = json!(cid);
    }
    f
}

fn ack(seq: u64, cid: &str) -> Value {
    json!({"type": "ack", "room_id": "r", "client_msg_id": cid,
        "message_id": format!("m-{seq}"), "seq": seq})
}

const WELCOME: &str = r#"{"type": "welcome", "user_id": "alice", "session_id": 1,
  "protocol": 1, "limits": {"max_text_chars": 4000}}"#;

/// Installs the scripted socket, picks the name `alice` and plays `welcome`; returns it.
pub(crate) async fn connect_scripted(page: &Page) -> Value {
    page.js(FAKE_WEBSOCKET, vec![]).await;
    page.clear("#name-input").await;
    page.type_into("#name-input", "alice\u{e007}").await;
    let welcome: Value = serde_json::from_str(WELCOME).unwrap();
    page.wait_for(
        "the chat socket",
        &format!("{CHAT_SOCKET} return !!s && s.readyState === 1;"),
        vec![],
        |v| *v == json!(true),
    )
    .await;
    deliver(page, json!([welcome.clone()])).await;
    page.wait_conn("connected").await;
    welcome
}

/// Ends the chat socket as a dropped connection would (1006), waits for the page to open
/// socket number `sockets` by itself, plays `welcome` on it and returns the rejoin it sends.
async fn drop_and_rejoin(page: &Page, sockets: usize, welcome: &Value) -> Value {
    page.js(
        &format!("{CHAT_SOCKET} s.close(1006); return null;"),
        vec![],
    )
    .await;
    page.wait_conn("reconnecting").await;
    page.wait_for(
        "the new socket open",
        &format!(
            "{CHAT_SOCKET} return window.__sockets.filter(isChat).length === {sockets} && s.readyState === 1;"
        ),
        vec![],
        |v| *v == json!(true),
    )
    .await;
    deliver(page, json!([welcome])).await;
    page.wait_conn("connected").await;
    sent(page, "the rejoin", "f.type === 'join'").await
}

/// An error naming one of the page's chats (`client_msg_id`) marks that message failed at
/// once, and Retry sends it again with the same id.
#[test]
fn an_error_naming_a_chat_marks_it_failed_and_retry_resends_it() {
    browser_test(
        "an_error_naming_a_chat_marks_it_failed_and_retry_resends_it",
        |b| async move {
            let server = Server::start();
            let page = b.page("alice", &server.url("/")).await;
            connect_scripted(&page).await;
            page.type_into("#room-input", "r\u{e007}").await;
            sent(&page, "the join", "f.type === 'join'").await;
            deliver(
                &page,
                json!([{"type": "joined", "room_id": "r", "user_id": "alice",
                        "users": ["alice"], "last_seq": 0, "history": 0}]),
            )
            .await;
            page.wait_room_joined("r").await;

            page.say("doomed").await;
            let first = sent(&page, "the chat", "f.type === 'chat'").await;
            let cid = first["client_msg_id"].as_str().unwrap().to_owned();
            deliver(
                &page,
                json!([{"type": "error", "code": "store_unavailable", "room_id": "r",
                        "client_msg_id": cid, "message": "not stored"}]),
            )
            .await;
            // Marked failed because the server said so (the page's own 10 s fallback names no
            // code).
            let failed = format!(
                "#messages li.msg.pending.failed[data-client-msg-id='{cid}'][data-error-code='store_unavailable']"
            );
            page.wait_for(
                "the message marked failed",
                "return !!document.querySelector(arguments[0]);",
                vec![json!(failed)],
                |v| *v == json!(true),
            )
            .await;
            page.click(&format!("{failed} .retry-btn")).await;
            let sends = page
                .wait_for(
                    "the retry",
                    &format!(
                        "{CHAT_SOCKET} return s.sent.filter((f) => f.type === 'chat').map((f) => [f.client_msg_id, f.text]);"
                    ),
                    vec![],
                    |v| v.as_array().is_some_and(|a| a.len() == 2),
                )
                .await;
            assert_eq!(sends, json!([[cid, "doomed"], [cid, "doomed"]]));
            deliver(
                &page,
                json!([chat(1, "alice", "doomed", Some(&cid)), ack(1, &cid)]),
            )
            .await;
            wait_shown(&page, json!([[1, "doomed", "acked"]])).await;
        },
    );
}

#[test]
fn pending_until_ack_and_a_rejoin_asks_for_what_it_missed() {
    browser_test(
        "pending_until_ack_and_a_rejoin_asks_for_what_it_missed",
        |b| async move {
            // The real server only serves the page; the socket is scripted.
            let server = Server::start();
            let page = b.page("alice", &server.url("/")).await;
            let welcome = connect_scripted(&page).await;

            // First join: no since_seq; the usual history.
            page.type_into("#room-input", "r\u{e007}").await;
            let join = sent(&page, "the join", "f.type === 'join'").await;
            assert_eq!(join, json!({"type": "join", "room_id": "r"}));
            deliver(
                &page,
                json!([
                    {"type": "joined", "room_id": "r", "user_id": "alice",
                     "users": ["alice", "bob"], "last_seq": 2, "history": 2},
                    chat(1, "bob", "a", None),
                    chat(2, "bob", "b", None),
                ]),
            )
            .await;
            page.wait_room_joined("r").await;

            // Sent: pending without a seq; echoed: pending at its seq; acked: acked.
            page.say("mine").await;
            let c1 = sent(&page, "the first chat", "f.type === 'chat'").await;
            let cid1 = c1["client_msg_id"]
                .as_str()
                .expect("a client_msg_id")
                .to_owned();
            assert_eq!(
                (c1["room_id"].as_str(), c1["text"].as_str()),
                (Some("r"), Some("mine"))
            );
            wait_shown(
                &page,
                json!([[1, "a", ""], [2, "b", ""], [null, "mine", "pending"]]),
            )
            .await;
            deliver(&page, json!([chat(3, "alice", "mine", Some(&cid1))])).await;
            wait_shown(
                &page,
                json!([[1, "a", ""], [2, "b", ""], [3, "mine", "pending"]]),
            )
            .await;
            deliver(&page, json!([ack(3, &cid1)])).await;
            wait_shown(
                &page,
                json!([[1, "a", ""], [2, "b", ""], [3, "mine", "acked"]]),
            )
            .await;

            // An ack that overtakes the echo: shown acked at its seq, once.
            page.say("second").await;
            let c2 = sent(
                &page,
                "the second chat",
                "f.type === 'chat' && f.text === 'second'",
            )
            .await;
            let cid2 = c2["client_msg_id"].as_str().unwrap().to_owned();
            assert_ne!(cid1, cid2);
            deliver(&page, json!([ack(4, &cid2)])).await;
            let acked_so_far = json!([
                [1, "a", ""],
                [2, "b", ""],
                [3, "mine", "acked"],
                [4, "second", "acked"]
            ]);
            wait_shown(&page, acked_so_far.clone()).await;
            deliver(&page, json!([chat(4, "alice", "second", Some(&cid2))])).await;
            wait_shown(&page, acked_so_far).await;

            // Echoed but not acked when the connection drops.
            page.say("third").await;
            let c3 = sent(
                &page,
                "the third chat",
                "f.type === 'chat' && f.text === 'third'",
            )
            .await;
            let cid3 = c3["client_msg_id"].as_str().unwrap().to_owned();
            deliver(&page, json!([chat(5, "alice", "third", Some(&cid3))])).await;
            wait_shown(
                &page,
                json!([
                    [1, "a", ""],
                    [2, "b", ""],
                    [3, "mine", "acked"],
                    [4, "second", "acked"],
                    [5, "third", "pending"]
                ]),
            )
            .await;
            // The page reconnects by itself and rejoins asking for what came after seq 5.
            let rejoin = drop_and_rejoin(&page, 2, &welcome).await;
            assert_eq!(
                rejoin,
                json!({"type": "join", "room_id": "r", "since_seq": 5})
            );
            deliver(
                &page,
                json!([
                    {"type": "joined", "room_id": "r", "user_id": "alice",
                     "users": ["alice", "bob"], "last_seq": 7, "history": 2, "recovered": true},
                    chat(6, "bob", "while away", None),
                    chat(7, "bob", "again", None),
                ]),
            )
            .await;

            // The unacked message goes again with the same client_msg_id (idempotent on
            // the server), and its original ack settles it; nothing shown twice, no gap.
            let resent = sent(&page, "the resend", "f.type === 'chat'").await;
            assert_eq!(resent["client_msg_id"], json!(cid3));
            assert_eq!(resent["text"], json!("third"));
            deliver(&page, json!([ack(5, &cid3)])).await;
            wait_shown(
                &page,
                json!([
                    [1, "a", ""],
                    [2, "b", ""],
                    [3, "mine", "acked"],
                    [4, "second", "acked"],
                    [5, "third", "acked"],
                    [6, "while away", ""],
                    [7, "again", ""]
                ]),
            )
            .await;
            // Recovered without a gap: no history page was asked for.
            let frames = page
                .js(
                    &format!("{CHAT_SOCKET} return s.sent.map((f) => f.type);"),
                    vec![],
                )
                .await;
            let types: Vec<&str> = frames
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(!types.contains(&"history"), "{types:?}");
            assert_eq!(
                types.iter().filter(|t| **t == "chat").count(),
                1,
                "{types:?}"
            );
        },
    );
}

/// The chat socket's reconnects are paced with jittered exponential backoff ("full jitter":
/// uniformly random below min(5 s, 250 ms × 2^(n-1))), which starts over only after a stable
/// connection; each reconnect of a flapping connection rejoins with `since_seq`.
#[test]
fn reconnects_back_off_with_full_jitter_and_each_rejoins_with_since_seq() {
    browser_test(
        "reconnects_back_off_with_full_jitter_and_each_rejoins_with_since_seq",
        |b| async move {
            let server = Server::start();
            let page = b.page("alice", &server.url("/")).await;
            let welcome = connect_scripted(&page).await;
            page.type_into("#room-input", "r\u{e007}").await;
            sent(&page, "the join", "f.type === 'join'").await;
            deliver(
                &page,
                json!([
                    {"type": "joined", "room_id": "r", "user_id": "alice",
                     "users": ["alice", "bob"], "last_seq": 1, "history": 1},
                    chat(1, "bob", "a", None),
                ]),
            )
            .await;
            page.wait_room_joined("r").await;

            // The socket drops twice in a row; each new one rejoins from the last seq seen.
            for (sockets, last, next) in [(2, 1, 2), (3, 2, 3)] {
                let rejoin = drop_and_rejoin(&page, sockets, &welcome).await;
                assert_eq!(
                    rejoin,
                    json!({"type": "join", "room_id": "r", "since_seq": last})
                );
                deliver(
                    &page,
                    json!([
                        {"type": "joined", "room_id": "r", "user_id": "alice",
                         "users": ["alice", "bob"], "last_seq": next, "history": 1,
                         "recovered": true},
                        chat(next, "bob", "more", None),
                    ]),
                )
                .await;
                page.wait_room_joined("r").await;
            }

            // The delays themselves, from the page's own module: below the ceiling, and
            // spread over all of it (equal jitter would never go below half).
            page.js(
                "import('/js/connection.js').then((m) => { window.__connection = m; }); return null;",
                vec![],
            )
            .await;
            page.wait_eq(
                "connection.js imported",
                "return !!window.__connection;",
                vec![],
                json!(true),
            )
            .await;
            let delays = page
                .js(
                    "const m = window.__connection;
                     return [1, 2, 3, 6, 7, 12, 40].map((n) => {
                       const ceiling = Math.min(5000, 250 * 2 ** (n - 1));
                       const d = Array.from({ length: 400 }, () => m.backoff(n));
                       return [n, d.every((x) => x >= 0 && x < ceiling),
                               Math.min(...d) < ceiling / 4, Math.max(...d) > ceiling / 2];
                     });",
                    vec![],
                )
                .await;
            for row in delays.as_array().unwrap() {
                assert_eq!(row.as_array().unwrap()[1..], [true, true, true], "{row}");
            }
            // The count starts over after a connection that lasted 10 s, not before.
            let counts = page
                .js(
                    "const m = window.__connection;
                     return [m.attemptsAfterLoss(4, 1000, 11000), m.attemptsAfterLoss(4, 1000, 10999),
                             m.attemptsAfterLoss(4, 0, 99999)];",
                    vec![],
                )
                .await;
            assert_eq!(counts, json!([0, 4, 4]));
        },
    );
}
