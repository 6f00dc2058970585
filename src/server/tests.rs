//! `ChatServer` against a store that fails: every waiter is answered, the state is reported,
//! and a join overtaken by a second join of the same room is answered from the second's
//! `since_seq`. Real actors on a real actix system; the store is the memory backend behind
//! a switch that makes it fail or panic, and every test runs it both on a thread of its own
//! (as SQLite with `--sync full`) and in line on `ChatServer`'s thread (as the default).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::ChatServer;
use super::messages::*;
use super::room::HistoryEntry;
use crate::config::Config;
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::metrics::Metrics;
use crate::protocol::Frame;
use crate::store::{
    Backend, MemoryStore, Original, Pruned, Retention, StoreError, StoreResult, StoreState,
    StoredMessage,
};

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;
/// Panic in a retention pass only.
const PANIC_PRUNE: u8 = 3;

/// How long a test waits for any answer.
const WAIT: Duration = Duration::from_secs(10);

/// The memory store, made to fail (`FAIL`) or panic (`PANIC`) at the start of a batch.
struct Faulty {
    inner: MemoryStore,
    mode: Arc<AtomicU8>,
    /// Run it on a thread of its own (`true`) or in line.
    thread: bool,
}

/// Both ways a store runs: on its own thread, and in line.
const BOTH: [bool; 2] = [true, false];

impl Backend for Faulty {
    fn commit_waits(&self) -> bool {
        self.thread
    }
    fn begin(&mut self) -> StoreResult<()> {
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(StoreError::Backend("injected failure".into())),
            PANIC => panic!("injected panic"),
            _ => self.inner.begin(),
        }
    }
    fn commit(&mut self) -> StoreResult<()> {
        self.inner.commit()
    }
    fn rollback(&mut self) {
        self.inner.rollback()
    }
    fn last_seq(&mut self, room: &RoomId) -> StoreResult<Seq> {
        self.inner.last_seq(room)
    }
    fn find_original(
        &mut self,
        room: &RoomId,
        user: &UserId,
        id: &str,
    ) -> StoreResult<Option<Original>> {
        self.inner.find_original(room, user, id)
    }
    fn insert(&mut self, message: &StoredMessage) -> StoreResult<()> {
        self.inner.insert(message)
    }
    fn page_before(
        &mut self,
        room: &RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<(Vec<HistoryEntry>, bool)> {
        if self.mode.load(Ordering::SeqCst) != OK {
            return Err(StoreError::Backend("injected failure".into()));
        }
        self.inner.page_before(room, before, limit)
    }
    fn since(
        &mut self,
        room: &RoomId,
        after: Seq,
        max: usize,
    ) -> StoreResult<Option<Vec<HistoryEntry>>> {
        self.inner.since(room, after, max)
    }
    fn inbox_put(
        &mut self,
        user: &UserId,
        frame: &Frame,
        expires: i64,
        max: usize,
    ) -> StoreResult<()> {
        self.inner.inbox_put(user, frame, expires, max)
    }
    fn inbox_take(&mut self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Frame>> {
        self.inner.inbox_take(user, now_ms)
    }
    fn prune(&mut self, policy: &Retention, now: i64, written: &[RoomId]) -> StoreResult<Pruned> {
        if self.mode.load(Ordering::SeqCst) == PANIC_PRUNE {
            panic!("injected panic in retention");
        }
        self.inner.prune(policy, now, written)
    }
}

/// A session that forwards every frame it is handed to the test.
struct Probe(mpsc::UnboundedSender<Frame>);

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Outbound> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        match msg {
            Outbound::Frame(f) => {
                let _ = self.0.send(f);
            }
            Outbound::Batch(fs) => fs.into_iter().for_each(|f| {
                let _ = self.0.send(f);
            }),
            Outbound::Close { .. } => {}
        }
    }
}

fn start(mode: &Arc<AtomicU8>, thread: bool) -> Addr<ChatServer> {
    start_with(mode, thread, &Config::for_tests())
}

fn start_with(mode: &Arc<AtomicU8>, thread: bool, config: &Config) -> Addr<ChatServer> {
    let backend = Box::new(Faulty {
        inner: MemoryStore::new(100, 100),
        mode: Arc::clone(mode),
        thread,
    });
    ChatServer::start_with(config, backend, Metrics::new()).unwrap()
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn join(session: SessionId, room_name: &str, since: Option<Seq>) -> ClientRequest {
    ClientRequest {
        session,
        command: Command::Join {
            room: room(room_name),
            since,
        },
        ticket: Ticket::untracked(),
    }
}

fn post(room_name: &str, text: &str) -> PostMessage {
    PostMessage {
        room: room(room_name),
        user: user("api"),
        text: text.into(),
        client_msg_id: None,
    }
}

async fn ask<M>(server: &Addr<ChatServer>, msg: M) -> M::Result
where
    M: Message + Send + 'static,
    M::Result: Send,
    ChatServer: Handler<M>,
{
    tokio::time::timeout(WAIT, server.send(msg))
        .await
        .expect("ChatServer answered in time")
        .expect("ChatServer is running")
}

/// Connects a probe session as `name`; returns its id and the frames it receives.
async fn connect(
    server: &Addr<ChatServer>,
    name: &str,
) -> (SessionId, mpsc::UnboundedReceiver<Frame>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let session = SessionId::next();
    let probe = Probe(tx).start();
    let connect = Connect {
        session,
        user: user(name),
        kind: SessionKind::Chat,
        addr: probe.recipient(),
        backlog: Backlog::default(),
        conn: None,
        room: None,
        since: None,
    };
    ask(server, connect).await.expect("admitted");
    (session, rx)
}

/// The next frame of `type` (others skipped), as JSON.
async fn next_of(rx: &mut mpsc::UnboundedReceiver<Frame>, ty: &str) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a frame in time")
            .expect("the probe is alive");
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        if v["type"] == ty {
            return v;
        }
    }
}

#[actix::test]
async fn a_failing_store_answers_every_request_and_says_so_until_it_recovers() {
    for thread in BOTH {
        let mode = Arc::new(AtomicU8::new(OK));
        let server = start(&mode, thread);
        assert_eq!(ask(&server, post("r", "one")).await.unwrap().seq, Seq(1));
        assert_eq!(ask(&server, GetStats).await.store, StoreState::Ok);

        mode.store(FAIL, Ordering::SeqCst);
        let failed = ask(&server, post("r", "two")).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");
        let page = ReadHistory {
            room: room("r"),
            before: None,
            limit: 10,
        };
        let failed = ask(&server, page).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");
        // A room not live here is known by the store only: its failure is the answer, not
        // "unknown room".
        let failed = ask(&server, GetRoom { room: room("r") }).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");
        assert_eq!(ask(&server, GetStats).await.store, StoreState::Failing);

        mode.store(OK, Ordering::SeqCst);
        let posted = ask(&server, post("r", "three")).await.unwrap();
        assert_eq!(posted.seq, Seq(2), "the failed chat took no seq");
        let detail = ask(&server, GetRoom { room: room("r") }).await.unwrap();
        assert_eq!(detail.map(|d| d.last_seq), Some(Seq(2)));
        assert_eq!(ask(&server, GetStats).await.store, StoreState::Ok);
    }
}

#[actix::test]
async fn a_store_that_panics_answers_what_it_held_and_everything_after() {
    for thread in BOTH {
        let mode = Arc::new(AtomicU8::new(OK));
        let server = start(&mode, thread);
        let (alice, mut frames) = connect(&server, "alice").await;
        mode.store(PANIC, Ordering::SeqCst);

        // The op in the batch that panicked, and those sent after, all get an answer.
        let failed = ask(&server, post("r", "lost")).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");
        assert_eq!(ask(&server, GetStats).await.store, StoreState::Down);
        let failed = ask(&server, post("r", "after")).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");

        // A join that needs a store read is refused, not left waiting.
        ask(&server, join(alice, "r", None)).await;
        let error = next_of(&mut frames, "error").await;
        assert_eq!(error["code"], "store_unavailable", "{error}");
        assert_eq!(error["room_id"], "r");
    }
}

/// A retention pass that panics (on `ChatServer`'s own thread, in line) takes the store
/// down, not the server: the state says so, and every later op is answered as failed.
#[actix::test]
async fn a_retention_pass_that_panics_takes_the_store_down_not_the_server() {
    for thread in BOTH {
        let mode = Arc::new(AtomicU8::new(OK));
        let config = Config {
            prune_interval_ms: 20,
            ..Config::for_tests()
        };
        let server = start_with(&mode, thread, &config);
        assert_eq!(ask(&server, post("r", "one")).await.unwrap().seq, Seq(1));
        mode.store(PANIC_PRUNE, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + WAIT;
        while ask(&server, GetStats).await.store != StoreState::Down {
            assert!(tokio::time::Instant::now() < deadline, "thread={thread}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let failed = ask(&server, post("r", "two")).await;
        assert!(matches!(failed, Err(ApiFailure::Store(_))), "{failed:?}");
    }
}

#[actix::test]
async fn a_second_join_while_the_first_waits_for_the_store_is_answered_from_its_own_since() {
    for thread in BOTH {
        let mode = Arc::new(AtomicU8::new(OK));
        let server = start(&mode, thread);
        for n in 1..=5 {
            ask(&server, post("r", &format!("m{n}"))).await.unwrap();
        }
        // Nobody is in `r`: both joins need the store. The second asks for what followed seq 3.
        let (bob, mut frames) = connect(&server, "bob").await;
        for since in [None, Some(Seq(3))] {
            server.do_send(join(bob, "r", since));
        }
        let joined = next_of(&mut frames, "joined").await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(joined["history"], 2, "{joined}");
        let m4 = next_of(&mut frames, "chat").await;
        let m5 = next_of(&mut frames, "chat").await;
        assert_eq!((m4["seq"].as_u64(), m5["seq"].as_u64()), (Some(4), Some(5)));

        // One membership, one `joined`: a barrier shows nothing else was queued.
        let users = ClientRequest {
            session: bob,
            command: Command::GetUsers { room: room("r") },
            ticket: Ticket::untracked(),
        };
        ask(&server, users).await;
        let next = tokio::time::timeout(WAIT, frames.recv())
            .await
            .unwrap()
            .unwrap();
        let next: serde_json::Value = serde_json::from_str(&next).unwrap();
        assert_eq!(next["type"], "active_users", "{next}");
        assert_eq!(next["users"], serde_json::json!(["bob"]));
    }
}

/// A request taken after shutdown began (its socket not yet closed) is answered
/// `shutting_down`, naming its room and `client_msg_id`; the chat is not stored.
#[actix::test]
async fn a_chat_taken_during_shutdown_is_answered_shutting_down_and_not_stored() {
    let mode = Arc::new(AtomicU8::new(OK));
    let server = start(&mode, false);
    let (alice, mut frames) = connect(&server, "alice").await;
    ask(&server, join(alice, "r", None)).await;
    next_of(&mut frames, "joined").await;
    ask(&server, Shutdown).await;
    let chat = ClientRequest {
        session: alice,
        command: Command::Chat {
            room: room("r"),
            text: "late".into(),
            client_msg_id: Some("c1".into()),
        },
        ticket: Ticket::untracked(),
    };
    ask(&server, chat).await;
    let error = next_of(&mut frames, "error").await;
    assert_eq!(
        (&error["code"], &error["room_id"], &error["client_msg_id"]),
        (&"shutting_down".into(), &"r".into(), &"c1".into()),
        "{error}"
    );
    let page = ReadHistory {
        room: room("r"),
        before: None,
        limit: 10,
    };
    let stored = ask(&server, page).await;
    assert!(
        !matches!(&stored, Ok(page) if !page.messages.is_empty()),
        "{stored:?}"
    );
}
