//! A bounded fuzz of a running server: 100,000 random and mutated frames over four sockets,
//! pipelined, every answer accounted for.
//!
//! A small xorshift generator, seeded with [`SEED`] (printed when the test fails), makes each
//! socket's frames: the client messages of docs/PROTOCOL.md with fields deleted, retyped,
//! nested past the parser's depth, huge numbers, unicode and control characters and long
//! strings (up to `--max-frame-bytes`), their text mutated as text, random text, binary
//! frames and WebSocket pings. Every frame is valid UTF-8 and within `--max-frame-bytes`, so
//! none deserves a close: every socket must stay open to the end. The rate limit is off and
//! the queue bounds high, so no refusal for volume (`rate_limited`, `overloaded`, 4001) can
//! come either.
//!
//! Accounting. Each frame is classified before it is sent: by `roomcast::protocol::decode`
//! with the server's limits (a decode error is answered by exactly one `error` with its
//! code), then by a model of the socket (its rooms, the `client_msg_id`s it posted). Each
//! socket has rooms of its own (`s{i}-…`) and is the only user in them, so its answers
//! depend on its own frames alone; a valid frame that would name another socket's room or
//! user is drawn again. Counted exactly: `error` frames by code (every code must be one of
//! `ErrorCode::ALL`), `pong`, `ack`, `left`, `active_users`, `history`, `private`, and
//! WebSocket pongs. Two classes depend on timing, and get bounds instead:
//! - `joined`: a join waits for a store read (always here: the room has no other member,
//!   so it is not live), and one followed by a `leave` of its room before the read returns is
//!   never answered (`ChatServer` drops the read's answer). Per room, the `joined` and `left`
//!   frames must be the model's joins and leaves with only such joins left out.
//! - live `chat` frames: a chat is fanned out only if its room is live when it is stored, and
//!   a close `leave` can beat that; a resent `client_msg_id` is recognized only while the
//!   store keeps its original. All `chat` frames less the history the `joined` frames
//!   announced must lie between the chats with a new `client_msg_id` (or none) posted in a
//!   room the socket did not leave afterwards, which must come, and all chats accepted.
//!
//! Each socket's answers end at a barrier: a chat with a `client_msg_id` of its own, whose
//! `ack` comes after every answer to the frames sent before it (a session answers in order,
//! `ChatServer` handles a session's requests in order, and the store answers reads and writes
//! in the order it got them). Then a `ping` must be answered by the very next frame, and a new
//! client is served normally.

mod generator;
mod model;

use roomcast::Config;
use roomcast::protocol::{DecodeLimits, ErrorCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use generator::{Generator, splitmix};
use model::{Expected, Model, Observed, Presence};

/// The generator's seed. Fixed, so the suite is reproducible; change it to explore other
/// inputs (open-ended exploration is the cargo-fuzz target's job, see fuzz/README.md).
const SEED: u64 = 0x2f6b_d1c3_9a4e_0057;
/// Frames sent in all, barriers aside.
const FRAMES: usize = 100_000;
const SOCKETS: usize = 4;
/// Frames fed to a socket between flushes.
const BURST: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_get_documented_answers() {
    let _seed = PrintSeedOnFailure;
    let mut config = Config::for_tests();
    config.shutdown_timeout = 1;
    config.rate_per_sec = 0.0;
    config.max_in_flight = 1_000_000;
    config.max_pending = 1_000_000;
    config.max_pending_bytes = 1 << 30;
    // Short join answers: joins are frequent here, and history frames would cost time
    // without exercising anything the fuzz is about.
    config.history_on_join = 5;
    config.history_keep = 10;
    config.recovery_max = 20;
    let limits = Limits {
        decode: config.decode_limits(),
        max_frame_bytes: config.max_frame_bytes,
        max_rooms: config.max_rooms_per_socket,
    };
    let srv = TestServer::with_config(config);

    let users: Vec<String> = (0..SOCKETS).map(|i| format!("fuzz-{i}")).collect();
    let plans: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let users = users.clone();
            tokio::task::spawn_blocking(move || Plan::generate(i, &users, limits))
        })
        .collect();
    let mut runs = Vec::new();
    for plan in plans {
        let plan = plan.await.expect("a plan");
        let client = match &plan.home {
            Some(home) => srv.room_client(home, &plan.user).await.0,
            None => srv.client(&plan.user).await,
        };
        runs.push(tokio::spawn(run(client, plan)));
    }
    for run in runs {
        run.await.expect("a socket's run");
    }

    // A clean client is served as usual.
    let mut clean = srv.client("clean").await;
    assert_eq!(clean.join("clean-room").await.frame["last_seq"], 0);
    let chat = json!({"type": "chat", "room_id": "clean-room", "text": "calm",
                      "client_msg_id": "k-1"});
    clean.send(chat).await;
    let mut answers = [clean.recv().await, clean.recv().await];
    answers.sort_by_key(|v| v["type"].as_str().map(str::to_owned));
    let [ack, chat] = answers;
    assert_eq!(
        (&ack["type"], &ack["client_msg_id"], &ack["seq"]),
        (&json!("ack"), &json!("k-1"), &json!(1)),
        "{ack}"
    );
    assert_eq!(
        (&chat["type"], &chat["text"], &chat["seq"]),
        (&json!("chat"), &json!("calm"), &json!(1)),
        "{chat}"
    );
    clean.ping().await;
}

/// Prints the seed when the test fails, wherever it failed.
struct PrintSeedOnFailure;

impl Drop for PrintSeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fuzz: failed with SEED = {SEED:#x} (tests/it/fuzz.rs)");
        }
    }
}

/// The server's limits, as the generator and the model need them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    decode: DecodeLimits,
    max_frame_bytes: usize,
    max_rooms: usize,
}

/// Sends a socket's frames while reading its answers, then checks them.
async fn run(client: Client, plan: Plan) {
    let Plan {
        index,
        user,
        frames,
        expected,
        ..
    } = plan;
    let (mut sink, mut stream) = client.split();
    let sender = tokio::spawn(async move {
        let mut frames = frames.into_iter().peekable();
        while frames.peek().is_some() {
            let burst: Vec<Message> = frames.by_ref().take(BURST).collect();
            let sent = sink.send_all(burst).await;
            assert!(
                sent.is_ok(),
                "socket {index}: the connection went while sending"
            );
        }
        sink
    });
    let observed = read_answers(&mut stream, index, &user, &expected.barrier).await;
    let mut sink = sender.await.expect("the sender");
    expected.check(&observed, index);

    // Nothing else was on its way: a ping's answer is the next frame.
    assert!(
        sink.send(json!({"type": "ping"})).await.is_ok(),
        "socket {index}: send"
    );
    loop {
        match stream.next_message().await {
            Some(Message::Text(t)) => {
                assert_eq!(
                    t.as_str(),
                    r#"{"type":"pong"}"#,
                    "socket {index}: after the barrier"
                );
                break;
            }
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("socket {index}: after the barrier, {other:?}"),
        }
    }
}

/// Reads and counts a socket's answers up to the barrier's `ack`. Fails on a frame that is
/// not JSON, an error code not in `ErrorCode::ALL`, a type the socket cannot be sent (say,
/// another user's presence), a close, and `TIMEOUT` without a frame.
async fn read_answers(
    stream: &mut ClientStream,
    index: usize,
    user: &str,
    barrier: &str,
) -> Observed {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut seen = Observed::default();
    loop {
        let message = stream.next_message().await.unwrap_or_else(|| {
            panic!("socket {index}: the connection ended or went quiet; so far {seen:?}")
        });
        let text = match message {
            Message::Text(text) => text,
            Message::Pong(_) => {
                seen.counts.ws_pongs += 1;
                continue;
            }
            Message::Ping(_) | Message::Frame(_) => continue,
            other => panic!("socket {index}: {other:?} before the barrier"),
        };
        let v: Value = serde_json::from_str(text.as_str())
            .unwrap_or_else(|e| panic!("socket {index}: not JSON ({e}): {text}"));
        let kind = v["type"]
            .as_str()
            .unwrap_or_else(|| panic!("socket {index}: no type: {v}"));
        let room = || v["room_id"].as_str().expect("a room_id").to_owned();
        match kind {
            "error" => {
                let code = v["code"].as_str().unwrap_or_default();
                assert!(
                    codes.contains(&code),
                    "socket {index}: undocumented code: {v}"
                );
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
                *seen.counts.errors.entry(code.to_owned()).or_default() += 1;
            }
            "joined" => {
                seen.counts
                    .presence
                    .entry(room())
                    .or_default()
                    .push(Presence::Joined);
                seen.announced_history += v["history"].as_u64().expect("joined.history");
            }
            "chat" => {
                assert_eq!(v["user_id"], user, "socket {index}: another's chat: {v}");
                seen.chats += 1;
            }
            "left" | "pong" | "ack" | "active_users" | "history" | "private" => {
                if kind == "left" {
                    seen.counts
                        .presence
                        .entry(room())
                        .or_default()
                        .push(Presence::Left);
                }
                *seen.counts.replies.entry(kind.to_owned()).or_default() += 1;
                if kind == "ack" && v["client_msg_id"] == barrier {
                    return seen;
                }
            }
            _ => panic!("socket {index}: unexpected frame {v}"),
        }
    }
}

/// A socket's frames and what they must be answered with.
struct Plan {
    index: usize,
    user: String,
    /// The room in the socket's URL (`/ws/{room}/{user}`), for the first socket only.
    home: Option<String>,
    frames: Vec<Message>,
    expected: Expected,
}

impl Plan {
    fn generate(index: usize, users: &[String], limits: Limits) -> Plan {
        let user = users[index].clone();
        let prefix = format!("s{index}-");
        let home = (index == 0).then(|| format!("{prefix}home"));
        let mut rooms: Vec<String> = ["a", "b", "c", "d", "e"]
            .map(|r| format!("{prefix}{r}"))
            .into();
        rooms.extend(home.clone());
        let to_users = vec![user.clone(), "nobody".into(), format!("ghost.{index}")];
        let seed = SEED ^ splitmix(index as u64 + 1);
        let mut generator = Generator::new(seed, limits, rooms, to_users);
        let others = users.iter().filter(|u| **u != user).cloned().collect();
        let mut model = Model::new(user.clone(), others, prefix, home.clone(), limits);
        let mut frames = Vec::with_capacity(FRAMES / SOCKETS + 2);
        for _ in 0..FRAMES / SOCKETS {
            frames.push(draw_counted(&mut generator, &mut model));
        }
        frames.extend(model.barrier());
        Plan {
            index,
            user,
            home,
            frames,
            expected: model.finish(),
        }
    }
}

/// Draws frames until one the model can account for (one that stays within the socket's
/// rooms and users).
fn draw_counted(generator: &mut Generator, model: &mut Model) -> Message {
    loop {
        let frame = generator.frame();
        if model.count(&frame) {
            return frame;
        }
    }
}
