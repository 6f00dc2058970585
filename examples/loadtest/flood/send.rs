//! Sending: a flood sender's open loop and the quiet pair's one chat per interval. Each
//! runs in a writer task that owns its socket's sink, beside the member's read loop.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use super::{FloodRoom, Phase, Schedule, Shared};
use crate::conn::Ws;
use crate::wire::{self, Stamp};

/// A flood sender's flow, shared by its reader (answers) and writer (sends).
#[derive(Default)]
pub struct SenderState {
    pub sent: AtomicU64,
    /// Messages answered: by their echo, or by an error (which can stand for several).
    pub answered: AtomicU64,
    pub writer_done: AtomicBool,
    pub completed: AtomicBool,
}

impl SenderState {
    pub fn answer(&self, n: u64, room: &FloodRoom) {
        self.answered.fetch_add(n, Ordering::SeqCst);
        self.try_complete(room);
    }

    pub fn on_writer_done(&self, room: &FloodRoom) {
        self.writer_done.store(true, Ordering::SeqCst);
        self.try_complete(room);
    }

    fn try_complete(&self, room: &FloodRoom) {
        if self.writer_done.load(Ordering::SeqCst)
            && self.answered.load(Ordering::SeqCst) >= self.sent.load(Ordering::SeqCst)
        {
            self.complete(room, true);
        }
    }

    /// Done, whether or not everything was answered; `clean` is false when the socket died.
    pub fn complete(&self, room: &FloodRoom, clean: bool) {
        if !self.completed.swap(true, Ordering::SeqCst) {
            room.sender_done(clean);
        }
    }
}

/// A flood sender's writer: waits for the start, floods until the stop, hands the sink back.
pub async fn flood_writer(
    sh: Arc<Shared>,
    idx: usize,
    mut sink: SplitSink<Ws, Message>,
    st: Arc<SenderState>,
    mut go: watch::Receiver<Phase>,
) -> SplitSink<Ws, Message> {
    let sched = match go.wait_for(|p| !matches!(p, Phase::Setup)).await {
        Ok(p) => match *p {
            Phase::Go(s) => Some(s),
            _ => None,
        },
        Err(_) => None,
    };
    if let Some(s) = sched {
        flood(&sh, idx, &mut sink, &st, s).await;
    }
    sh.room.sender_stopped_sending(sh.now_ns());
    st.on_writer_done(&sh.room);
    sink
}

/// Most frames one sender gathers before writing them out.
const BATCH: u64 = 256;

/// Sends until the stop or the cap. With a rate, each round sends what is due by now (so a
/// sender held up by a full socket catches up afterwards: open loop); without one, it sends
/// [`BATCH`] frames and flushes, as fast as the socket takes them.
async fn flood(
    sh: &Shared,
    idx: usize,
    sink: &mut SplitSink<Ws, Message>,
    st: &SenderState,
    s: Schedule,
) {
    let mut text = String::with_capacity(sh.text_bytes.max(48));
    let mut msg_no = 0u64;
    while msg_no < sh.per_sender_cap {
        let now = Instant::now();
        if now >= s.stop {
            break;
        }
        let due = match sh.per_sender_rate {
            None => BATCH,
            Some(rate) => {
                let by_now = (now.duration_since(s.start).as_secs_f64() * rate) as u64 + 1;
                if by_now <= msg_no {
                    let next = s.start + Duration::from_secs_f64(msg_no as f64 / rate);
                    tokio::time::sleep_until(next.min(s.stop).into()).await;
                    continue;
                }
                (by_now - msg_no).min(BATCH)
            }
        };
        let n = due.min(sh.per_sender_cap - msg_no);
        let send_ns = sh.now_ns();
        let round = async {
            for _ in 0..n {
                wire::encode_text(
                    &mut text,
                    Stamp {
                        sender: idx as u64,
                        msg_no,
                        send_ns,
                    },
                    sh.text_bytes,
                );
                // Counted before the send: the answer may be read before `feed` returns.
                st.sent.fetch_add(1, Ordering::SeqCst);
                msg_no += 1;
                sink.feed(Message::text(wire::chat_frame(&sh.flood_room, &text)))
                    .await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout_at(s.hard.into(), round).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        // A socket that always takes more would keep this task on its thread.
        tokio::task::yield_now().await;
    }
}

/// The quiet pair's sender: one chat every `--quiet-interval-ms` from the start to the stop,
/// whatever happens to the answers (a late tick is caught up).
pub async fn quiet_writer(
    sh: Arc<Shared>,
    idx: usize,
    mut sink: SplitSink<Ws, Message>,
    st: Arc<SenderState>,
    mut go: watch::Receiver<Phase>,
) -> SplitSink<Ws, Message> {
    let sched = match go.wait_for(|p| !matches!(p, Phase::Setup)).await {
        Ok(p) => match *p {
            Phase::Go(s) => Some(s),
            _ => None,
        },
        Err(_) => None,
    };
    if let Some(s) = sched {
        let mut iv = tokio::time::interval_at(s.start.into(), sh.quiet_interval);
        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let stop = tokio::time::sleep_until(s.stop.into());
        let mut stop = pin!(stop);
        let mut text = String::new();
        let mut msg_no = 0u64;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = iv.tick() => {}
            }
            wire::encode_text(
                &mut text,
                Stamp {
                    sender: idx as u64,
                    msg_no,
                    send_ns: sh.now_ns(),
                },
                0,
            );
            msg_no += 1;
            st.sent.fetch_add(1, Ordering::SeqCst);
            sh.quiet.sent.fetch_add(1, Ordering::SeqCst);
            let frame = Message::text(wire::chat_frame(&sh.quiet_room, &text));
            match tokio::time::timeout_at(s.hard.into(), sink.send(frame)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    }
    st.writer_done.store(true, Ordering::SeqCst);
    sink
}
