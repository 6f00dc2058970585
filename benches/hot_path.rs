//! Benchmarks of the per-message path: decoding a client frame, encoding a broadcast once
//! (against encoding it per recipient), `ChatServer` fanning a chat out to N in-process
//! recipients, and the store committing one chat (what a chat waits for at a light load,
//! where a batch is one chat).
//!
//! Run: `cargo bench --bench hot_path`. Figures and the machine they came from are in
//! docs/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::Config;
use roomcast::ids::{RoomId, Seq, SessionId, UserId};
use roomcast::metrics::Metrics;
use roomcast::protocol::{self, DecodeLimits, ServerMessage};
use roomcast::server::ChatServer;
use roomcast::server::messages::{
    Backlog, ClientRequest, Command, Connect, InFlight, Outbound, SessionKind,
};
use roomcast::store::{Backend, MemoryStore, SqliteStore, StoredMessage, SyncMode};

fn decode(c: &mut Criterion) {
    let limits = DecodeLimits {
        max_text_chars: 4000,
    };
    let frame = r#"{"type":"chat","room_id":"lobby","text":"hello, this is a fairly ordinary chat line","client_msg_id":"c-12345"}"#;
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chat", |b| {
        b.iter(|| protocol::decode(black_box(frame), limits).unwrap())
    });
    g.bench_function("invalid_json", |b| {
        b.iter(|| protocol::decode(black_box(r#"{"type":"chat","text":"#), limits).unwrap_err())
    });
    g.finish();
}

/// An ordinary chat as the server sends it.
fn chat<'a>(user: &'a UserId, room: &'a RoomId) -> ServerMessage<'a> {
    ServerMessage::Chat {
        user_id: user,
        room_id: room,
        text: "hello, this is a fairly ordinary chat line",
        timestamp: "2026-11-22T09:15:02.123Z",
        message_id: "0b9c5a1e-4f7d-4c41-9a53-2f1d1c7d2b11",
        seq: Seq(42),
        client_msg_id: None,
    }
}

fn encode(c: &mut Criterion) {
    let user = UserId::parse("alice").unwrap();
    let room = RoomId::parse("lobby").unwrap();
    let msg = || chat(&user, &room);
    let mut g = c.benchmark_group("broadcast_100");
    g.throughput(Throughput::Elements(100));
    // What roomcast does: one encode, then a reference-counted clone per recipient.
    g.bench_function("encode_once", |b| {
        b.iter(|| {
            let frame = msg().encode();
            for _ in 0..100 {
                black_box(frame.clone());
            }
        })
    });
    // The alternative it avoids: serializing for every recipient.
    g.bench_function("encode_per_recipient", |b| {
        b.iter(|| {
            for _ in 0..100 {
                black_box(msg().encode());
            }
        })
    });
    g.finish();
}

/// A stand-in session: counts frames and tells the bench when the expected number arrived.
struct Sink {
    backlog: Backlog,
    delivered: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
    done: Arc<tokio::sync::Notify>,
}

impl Actor for Sink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(100_000);
    }
}

impl Handler<Outbound> for Sink {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _: &mut Self::Context) {
        let n = match msg {
            Outbound::Frame(f) => {
                let bytes = f.len();
                black_box(f);
                (1, bytes)
            }
            Outbound::Batch(v) => (v.len(), v.iter().map(|f| f.len()).sum()),
            Outbound::Close { .. } => (0, 0),
        };
        let (n, bytes) = n;
        self.backlog.written(n, bytes);
        let total = self.delivered.fetch_add(n, Ordering::Relaxed) + n;
        if total >= self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

fn fan_out(c: &mut Criterion) {
    const CHATS: usize = 100;
    let mut g = c.benchmark_group("chatserver_fan_out");
    g.measurement_time(Duration::from_secs(5));
    for members in [10usize, 100, 1000] {
        g.throughput(Throughput::Elements((members * CHATS) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(members),
            &members,
            |b, &members| {
                let sys = System::new();
                let room = RoomId::parse("bench").unwrap();
                let delivered = Arc::new(AtomicUsize::new(0));
                let target = Arc::new(AtomicUsize::new(usize::MAX));
                let done = Arc::new(tokio::sync::Notify::new());
                let (server, poster) = sys.block_on(async {
                    let mut config = Config::for_tests();
                    config.max_pending = 100_000;
                    let store = Box::new(MemoryStore::new(100, 100));
                    let server = ChatServer::start_with(&config, store, Metrics::new()).unwrap();
                    // Setup frames: each member gets `welcome` and `joined`, and a `user_joined`
                    // for every member after it. Wait for all of them before measuring.
                    target.store(members * 2 + members * (members - 1) / 2, Ordering::Relaxed);
                    let setup_done = done.notified();
                    let mut poster = None;
                    for i in 0..members {
                        let backlog = Backlog::default();
                        let sink = Sink {
                            backlog: backlog.clone(),
                            delivered: delivered.clone(),
                            target: target.clone(),
                            done: done.clone(),
                        }
                        .start();
                        let session = SessionId::next();
                        poster.get_or_insert(session);
                        server
                            .send(Connect {
                                session,
                                user: UserId::parse(&format!("u{i}")).unwrap(),
                                kind: SessionKind::Chat,
                                addr: sink.recipient(),
                                backlog,
                                conn: None,
                                room: Some(room.clone()),
                                since: None,
                            })
                            .await
                            .unwrap()
                            .unwrap();
                    }
                    setup_done.await;
                    (server, poster.unwrap())
                });
                // The first member posts; every member, itself included, receives each chat.
                // Its requests are counted in flight, as a session counts them.
                let in_flight = InFlight::default();
                b.iter_custom(|iters| {
                    sys.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let base = delivered.load(Ordering::Relaxed);
                            target.store(base + members * CHATS, Ordering::Relaxed);
                            let all_delivered = done.notified();
                            for n in 0..CHATS {
                                server.do_send(ClientRequest {
                                    session: poster,
                                    command: Command::Chat {
                                        room: room.clone(),
                                        text: format!("message {n}"),
                                        client_msg_id: None,
                                    },
                                    ticket: in_flight.ticket(),
                                });
                            }
                            all_delivered.await;
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    g.finish();
}

/// One transaction of one chat on each backend, as the store thread runs it at a light load:
/// `BEGIN`, the insert, `COMMIT` (and with `--sync full` the fsync). SQLite's files are in
/// the system's temporary folder, so `sqlite_full` measures that disk's fsync.
fn store_commit(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("roomcast-bench-{}", std::process::id()));
    // Scenario B's shape: one chat per commit, the rooms taking turns.
    let rooms: Vec<RoomId> = (0..50)
        .map(|i| RoomId::parse(&format!("bench-{i}")).unwrap())
        .collect();
    let user = UserId::parse("alice").unwrap();
    let frame = chat(&user, &rooms[0]).encode();
    let mut g = c.benchmark_group("store_commit");
    g.throughput(Throughput::Elements(1));
    let backends = [
        ("memory", None),
        ("sqlite_normal", Some(SyncMode::Normal)),
        ("sqlite_full", Some(SyncMode::Full)),
    ];
    for (name, sync) in backends {
        let mut store: Box<dyn Backend> = match sync {
            None => Box::new(MemoryStore::new(100, 100)),
            Some(sync) => {
                Box::new(SqliteStore::open(&dir.join(format!("{name}.db")), sync).unwrap())
            }
        };
        let mut seq = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                store.begin().unwrap();
                store
                    .insert(&StoredMessage {
                        room: rooms[(seq % 50) as usize].clone(),
                        seq: Seq(seq / 50 + 1),
                        user: user.clone(),
                        client_msg_id: None,
                        message_id: format!("m{seq}"),
                        ts_ms: 0,
                        frame: frame.clone(),
                    })
                    .unwrap();
                store.commit().unwrap();
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, decode, encode, fan_out, store_commit);
criterion_main!(benches);
