//! The store thread in cluster mode: the same [`Op`]s and [`Event`]s as the SQLite writer,
//! answered from Redis. Appends run the append script (seq, stream, publish in one step);
//! reads are stream ranges; the inbox is a list per user.
//!
//! A lost connection is reopened at the next op (at most every [`RETRY_EVERY`]); until then
//! every op is answered as failed at once (`store_unavailable`, never an ack), and the store
//! reports `failing` until an op succeeds again. A connection that sat idle is checked before
//! its next op ([`CHECK_AFTER_IDLE`]), so a Redis restarted while the node was quiet costs no
//! failed op.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use redis::streams::StreamRangeReply;

use super::{
    CHANNEL, CONNECT_TIMEOUT, EPOCH_KEY, FLOOR_KEY, REDIS_RUN_KEY, RESEND_TTL_SECS, entry_id,
    first_key, inbox_key, log_key, resend_key, seq_key, seq_of_entry,
};
use crate::ids::{RoomId, Seq};
use crate::protocol::{Frame, ServerMessage, timestamp_now};
use crate::server::room::HistoryEntry;
use crate::store::writer::{StoreEvents, failed};
use crate::store::{Append, Event, Loaded, Op, Read, Retention, StoreState, Stored};

/// How often a lost connection is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// A connection unused this long is checked with a `PING` before its next op: Redis may
/// have restarted meanwhile (or closed it under its `timeout` setting), and an op on a dead
/// connection would fail once before the connection is reopened.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Most ops answered in one message to `ChatServer`.
const MAX_BATCH: usize = 1024;

/// Rooms whose highest seen seq is remembered (the floor of their appends).
const MAX_FLOORS: usize = 100_000;

/// A seq no chat can have, written into a frame where its seq goes and replaced by the
/// script: `"seq":` followed by it appears once in an encoded chat (a text holding the same
/// characters is inside a JSON string, where the quotes are escaped).
const SEQ_MARK: &str = "\"seq\":18446744073709551615";

/// The store thread's state.
pub struct RedisStore {
    client: redis::Client,
    con: Option<redis::Connection>,
    /// When the connection was last handed to an op.
    used: Instant,
    /// When the connection was last tried, so a Redis that is down is not hammered.
    tried: Option<Instant>,
    script: redis::Script,
    /// `restarted.lua`, run on every new connection ([`RedisStore::check_restart`]).
    restarted: redis::Script,
    /// Room -> the highest seq this node has seen there.
    floors: HashMap<RoomId, Seq>,
    retention: Retention,
    state: StoreState,
}

impl RedisStore {
    pub fn new(url: &str, retention: Retention) -> redis::RedisResult<Self> {
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            con: None,
            used: Instant::now(),
            tried: None,
            script: redis::Script::new(include_str!("append.lua")),
            restarted: redis::Script::new(include_str!("restarted.lua")),
            floors: HashMap::new(),
            retention,
            state: StoreState::Ok,
        })
    }

    /// Answers ops until `ChatServer` closes the channel.
    pub fn run(mut self, rx: mpsc::Receiver<Op>, events: Recipient<StoreEvents>) {
        while let Ok(first) = rx.recv() {
            let ops = std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1));
            let out = self.answer_all(ops);
            events.do_send(StoreEvents(out));
        }
        log::info!("cluster store closed");
    }

    /// The outcomes of `ops`, in op order. Consecutive appends go to Redis as one pipeline:
    /// one round trip, and with `appendfsync always` one fsync for all of them (Redis writes
    /// its append-only file once per event-loop turn, before it answers).
    fn answer_all(&mut self, ops: impl Iterator<Item = Op>) -> Vec<Event> {
        let mut out = Vec::new();
        let mut appends = Vec::new();
        for op in ops {
            match op {
                Op::Append(a) => appends.push(a),
                other => {
                    // A read after an append must see it: the appends go first.
                    self.append_all(std::mem::take(&mut appends), &mut out);
                    out.push(self.answer(other));
                }
            }
        }
        self.append_all(appends, &mut out);
        out
    }

    /// One op's outcome, with the store's state change (if any) before it.
    fn answer(&mut self, op: Op) -> Event {
        let result = match self.connection() {
            Ok(()) => self.apply(&op),
            Err(e) => Err(e),
        };
        match result {
            Ok(event) => {
                self.state = StoreState::Ok;
                event
            }
            Err(e) => {
                self.failed_with(&e);
                failed(op, &format!("the cluster's Redis failed: {e}"))
            }
        }
    }

    /// Notes a failure: a lost connection is dropped (reopened at the next op).
    fn failed_with(&mut self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            self.con = None;
        }
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
            // Someone flushed the scripts: load it again before the next append.
            self.con = None;
        }
        self.state = StoreState::Failing;
        log::warn!("cluster store: {e}");
    }

    /// Makes sure there is a connection for the next op: the open one (checked first if it
    /// sat idle, [`CHECK_AFTER_IDLE`]), or a new one.
    fn connection(&mut self) -> redis::RedisResult<()> {
        let idle = self.used.elapsed() >= CHECK_AFTER_IDLE;
        self.used = Instant::now();
        if let Some(con) = self.con.as_mut() {
            if !idle {
                return Ok(());
            }
            match redis::cmd("PING").query::<String>(con) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    log::info!(
                        "cluster store: the idle connection to Redis was lost ({e}); reconnecting"
                    );
                    self.con = None;
                    // Connect now: the lost connection says nothing about Redis today.
                    self.tried = None;
                }
            }
        }
        if self.tried.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected to Redis",
            )));
        }
        self.tried = Some(Instant::now());
        let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        con.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        // Appends are pipelined as EVALSHA, which has no fallback to the script's text: the
        // script is loaded on every new connection (a restarted Redis has forgotten it).
        self.script.prepare_invoke().load(&mut con)?;
        self.check_restart(&mut con)?;
        self.con = Some(con);
        Ok(())
    }

    /// On a new connection: if Redis restarted with a dataset that may miss acknowledged
    /// writes, raise the global seq floor (`restarted.lua`), so that no seq is handed out
    /// twice. `CONFIG` may be disabled (managed Redis): then the restart counts as lossy.
    fn check_restart(&mut self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let info: String = redis::cmd("INFO").arg("server").query(con)?;
        let Some(run_id) = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
        else {
            return Err(bad_reply("INFO server without a run_id"));
        };
        let config = |name: &str, con: &mut redis::Connection| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query::<Vec<String>>(con)
                .ok()
                .and_then(|v| v.get(1).cloned())
        };
        let durable = config("appendonly", con).as_deref() == Some("yes")
            && config("appendfsync", con).as_deref() == Some("always");
        let floor: redis::Value = self
            .restarted
            .key(REDIS_RUN_KEY)
            .key(FLOOR_KEY)
            .arg(run_id)
            .arg(if durable { "1" } else { "0" })
            .arg(self.retention.clock.now_ms())
            .invoke(con)?;
        if let redis::Value::BulkString(floor) = floor {
            log::warn!(
                "Redis restarted from a dataset that may miss acknowledged writes (run id \
                 {run_id}); every room's seqs continue above {}",
                String::from_utf8_lossy(&floor)
            );
        }
        Ok(())
    }

    fn con(&mut self) -> &mut redis::Connection {
        self.con.as_mut().expect("connection() succeeded before")
    }

    fn saw(&mut self, room: &RoomId, seq: Seq) {
        if self.floors.len() >= MAX_FLOORS {
            self.floors.clear();
        }
        let floor = self.floors.entry(room.clone()).or_default();
        *floor = (*floor).max(seq);
    }

    fn apply(&mut self, op: &Op) -> redis::RedisResult<Event> {
        Ok(match op {
            Op::Append(a) => {
                let mut outcomes = self.pipeline(std::slice::from_ref(a))?;
                outcomes
                    .pop()
                    .unwrap_or_else(|| Err(bad_reply("no answer")))?
            }
            Op::Read { room, read, tag } => Event::Loaded {
                room: room.clone(),
                read: *read,
                tag: *tag,
                result: Ok(self.read(room, *read)?),
            },
            Op::InboxPut { users, frame, tag } => {
                let ttl_ms = self.retention.inbox_ttl_ms;
                let expires = self.retention.clock.now_ms().saturating_add(ttl_ms as i64);
                let max = self.retention.inbox_max as isize;
                let mut pipe = redis::pipe();
                for user in users {
                    let key = inbox_key(user);
                    pipe.cmd("RPUSH")
                        .arg(&key)
                        .arg(format!("{expires}\n{frame}"));
                    pipe.cmd("LTRIM").arg(&key).arg(-max).arg(-1);
                    pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms);
                }
                pipe.query::<()>(self.con())?;
                Event::InboxStored {
                    tag: *tag,
                    users: users.clone(),
                    result: Ok(()),
                }
            }
            Op::InboxTake { user, session } => {
                let key = inbox_key(user);
                let (items,): (Vec<String>,) = redis::pipe()
                    .atomic()
                    .cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .cmd("DEL")
                    .arg(&key)
                    .ignore()
                    .query(self.con())?;
                let now = self.retention.clock.now_ms();
                let frames = items
                    .iter()
                    .filter_map(|item| {
                        let (expires, frame) = item.split_once('\n')?;
                        (expires.parse::<i64>().ok()? > now).then(|| Frame::from(frame))
                    })
                    .collect();
                Event::InboxTaken {
                    user: user.clone(),
                    session: *session,
                    frames,
                }
            }
        })
    }

    /// Runs `appends` as one pipeline and puts their outcomes in `out`, in order.
    fn append_all(&mut self, appends: Vec<Append>, out: &mut Vec<Event>) {
        if appends.is_empty() {
            return;
        }
        let outcomes = self.connection().and_then(|()| self.pipeline(&appends));
        match outcomes {
            Ok(outcomes) => {
                for (a, outcome) in appends.into_iter().zip(outcomes) {
                    out.push(match outcome {
                        Ok(event) => {
                            self.state = StoreState::Ok;
                            event
                        }
                        Err(e) => {
                            self.failed_with(&e);
                            failed(Op::Append(a), &format!("the cluster's Redis failed: {e}"))
                        }
                    });
                }
            }
            // Nothing came back: none of them is acknowledged (a resend finds those that
            // were stored).
            Err(e) => {
                self.failed_with(&e);
                let why = format!("the cluster's Redis failed: {e}");
                out.extend(appends.into_iter().map(|a| failed(Op::Append(a), &why)));
            }
        }
    }

    /// One round trip: the append script for each of `appends`, pipelined. The outer error
    /// is the connection's (no outcome known); the inner ones are each append's.
    fn pipeline(
        &mut self,
        appends: &[Append],
    ) -> redis::RedisResult<Vec<redis::RedisResult<Event>>> {
        let max_len = match self.retention.max_messages {
            0 => u64::MAX,
            n => n,
        };
        let now_ms = self.retention.clock.now_ms();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut drafts = Vec::with_capacity(appends.len());
        for a in appends {
            let draft = Draft::new(a);
            let resend = a
                .client_msg_id
                .as_deref()
                .map(|id| resend_key(&a.room, &a.user, id))
                .unwrap_or_default();
            let floor = self.floors.get(&a.room).copied().unwrap_or_default();
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(6)
                .arg(seq_key(&a.room))
                .arg(log_key(&a.room))
                .arg(first_key(&a.room))
                .arg(EPOCH_KEY)
                .arg(&resend)
                .arg(FLOOR_KEY)
                .arg(floor.0)
                .arg(format!("{}\"seq\":", draft.before))
                .arg(&draft.after)
                .arg(max_len)
                .arg(CHANNEL)
                .arg(a.room.as_str())
                .arg(RESEND_TTL_SECS)
                .arg(now_ms);
            drafts.push(draft);
        }
        let replies: Vec<redis::RedisResult<(u8, String, String)>> = pipe.query(self.con())?;
        if replies.len() != appends.len() {
            return Err(bad_reply("a pipeline's answers"));
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for ((a, draft), reply) in appends.iter().zip(drafts).zip(replies) {
            outcomes.push(reply.and_then(|(new, seq, original)| {
                self.appended(a, draft, (new == 0).then_some(original), &seq)
            }));
        }
        Ok(outcomes)
    }

    /// The outcome of one append the script answered: new, or a resend of `seq` whose
    /// stored frame is `original`.
    fn appended(
        &mut self,
        a: &Append,
        draft: Draft,
        original: Option<String>,
        seq: &str,
    ) -> redis::RedisResult<Event> {
        let seq = Seq(seq.parse().map_err(|_| bad_reply("the script's seq"))?);
        self.saw(&a.room, seq);
        let new = original.is_none();
        let (frame, message_id) = match original {
            None => {
                let frame = format!("{}\"seq\":{}{}", draft.before, seq.0, draft.after);
                (Frame::from(frame), draft.message_id)
            }
            Some(frame) => {
                let frame = Frame::from(frame);
                let original = message_id_of(&frame).unwrap_or_default();
                (frame, original)
            }
        };
        Ok(Event::Stored(Stored {
            room: a.room.clone(),
            seq,
            message_id,
            frame,
            client_msg_id: a.client_msg_id.clone(),
            tag: a.tag,
            received: a.received,
            stored_ms: 0,
            duplicate: !new,
        }))
    }

    fn read(&mut self, room: &RoomId, read: Read) -> redis::RedisResult<Loaded> {
        let loaded = match read {
            Read::Recent(n) => self.recent(room, n)?,
            Read::Since {
                after,
                max,
                fallback,
            } => match self.since(room, after, max)? {
                Some(loaded) => loaded,
                None => Loaded {
                    recovered: Some(false),
                    ..self.recent(room, fallback)?
                },
            },
            Read::Before { before, limit } => {
                let end = match before {
                    Some(b) => format!("({}", entry_id(b)),
                    None => "+".to_owned(),
                };
                let (last, reply): (Option<String>, StreamRangeReply) = redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(seq_key(room))
                    .cmd("XREVRANGE")
                    .arg(log_key(room))
                    .arg(end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit + 1)
                    .query(self.con())?;
                let mut newest_first = entries(reply);
                let has_more = newest_first.len() > limit;
                newest_first.truncate(limit);
                newest_first.reverse();
                Loaded {
                    last_seq: parse_seq(last)?,
                    entries: newest_first,
                    has_more,
                    recovered: None,
                }
            }
        };
        self.saw(room, loaded.last_seq);
        Ok(loaded)
    }

    /// The newest `n` chats.
    fn recent(&mut self, room: &RoomId, n: usize) -> redis::RedisResult<Loaded> {
        let (last, first, reply): (Option<String>, Option<String>, StreamRangeReply) =
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(seq_key(room))
                .cmd("GET")
                .arg(first_key(room))
                .cmd("XREVRANGE")
                .arg(log_key(room))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(n.max(1))
                .query(self.con())?;
        let mut entries = entries(reply);
        entries.truncate(n);
        entries.reverse();
        let first = parse_seq(first)?;
        let has_more = entries.first().is_some_and(|e| e.seq > first);
        Ok(Loaded {
            last_seq: parse_seq(last)?,
            entries,
            has_more,
            recovered: None,
        })
    }

    /// Every chat after `after`, if the stream still holds them all and they are at most
    /// `max`; `None` otherwise.
    fn since(
        &mut self,
        room: &RoomId,
        after: Seq,
        max: usize,
    ) -> redis::RedisResult<Option<Loaded>> {
        let start = format!("({}", entry_id(after));
        let (last, first, reply): (Option<String>, Option<String>, StreamRangeReply) =
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(seq_key(room))
                .cmd("GET")
                .arg(first_key(room))
                .cmd("XRANGE")
                .arg(log_key(room))
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(max + 1)
                .query(self.con())?;
        let (last, first) = (parse_seq(last)?, parse_seq(first)?);
        let entries = entries(reply);
        if after > last || entries.len() > max {
            return Ok(None);
        }
        // The room's seqs run without holes from `first`: what follows `after` must start at
        // the later of the two and end at the newest.
        let complete = match (entries.first(), entries.last()) {
            (None, _) => after == last,
            (Some(oldest), Some(newest)) => {
                oldest.seq == after.next().max(first) && newest.seq == last
            }
            (Some(_), None) => false,
        };
        Ok(complete.then_some(Loaded {
            last_seq: last,
            entries,
            has_more: false,
            recovered: Some(true),
        }))
    }
}

/// A chat's frame before the script gives it a seq: the text on each side of the seq.
struct Draft {
    message_id: String,
    before: String,
    after: String,
}

impl Draft {
    fn new(a: &Append) -> Draft {
        let timestamp = timestamp_now();
        let message_id = uuid::Uuid::new_v4().to_string();
        let marked = ServerMessage::Chat {
            user_id: &a.user,
            room_id: &a.room,
            text: &a.text,
            timestamp: &timestamp,
            message_id: &message_id,
            seq: Seq(u64::MAX),
            client_msg_id: a.client_msg_id.as_deref(),
        }
        .encode();
        let (before, after) = marked
            .split_once(SEQ_MARK)
            .expect("an encoded chat holds its seq once");
        Draft {
            before: before.to_owned(),
            after: after.to_owned(),
            message_id,
        }
    }
}

fn bad_reply(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, what))
}

fn parse_seq(v: Option<String>) -> redis::RedisResult<Seq> {
    match v {
        None => Ok(Seq(0)),
        Some(s) => s.parse().map(Seq).map_err(|_| bad_reply("a seq")),
    }
}

/// A stream range as history entries, in the range's order.
fn entries(reply: StreamRangeReply) -> Vec<HistoryEntry> {
    reply
        .ids
        .into_iter()
        .filter_map(|e| {
            let seq = seq_of_entry(&e.id)?;
            let frame: String = e.get("f")?;
            Some(HistoryEntry {
                seq,
                frame: Frame::from(frame),
                // No age limit in a cluster (see `ServerLimits::from_config`).
                stored_ms: 0,
            })
        })
        .collect()
}

/// The `message_id` of an encoded chat.
fn message_id_of(frame: &Frame) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        message_id: String,
    }
    serde_json::from_str::<Id>(frame).ok().map(|i| i.message_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    #[test]
    fn the_seq_mark_splits_an_encoded_chat_once_whatever_the_text() {
        let room = RoomId::parse("r").unwrap();
        let user = UserId::parse("u").unwrap();
        let text = format!("{SEQ_MARK} and \"seq\":18446744073709551615");
        let frame = ServerMessage::Chat {
            user_id: &user,
            room_id: &room,
            text: &text,
            timestamp: "t",
            message_id: "m",
            seq: Seq(u64::MAX),
            client_msg_id: None,
        }
        .encode();
        assert_eq!(frame.matches(SEQ_MARK).count(), 1, "{frame}");
        let (before, after) = frame.split_once(SEQ_MARK).unwrap();
        let real = format!("{before}\"seq\":7{after}");
        let v: serde_json::Value = serde_json::from_str(&real).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["text"], text.as_str());
    }
}
