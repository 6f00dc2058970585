//! Sending: a flood sender's open loop and the quiet pair's one chat per interval. Each
//! runs in a writer task that owns its socket's sink, beside the member's read loop; what
//! they share with `fanout`'s senders is in `sending.rs`.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::Shared;
use super::member::Role;
use crate::conn::Sink;
use crate::members::{self, Phase, Schedule};
use crate::sending::{self, SendCount, StampedText};
use crate::wire;

/// A sender's writer task: waits for the start, sends until the stop (a flood sender
/// floods, the quiet pair's sender sends its chats), hands the sink back.
pub async fn writer(
    sh: Arc<Shared>,
    role: Role,
    idx: usize,
    mut sink: Sink,
    st: Arc<SendCount>,
    mut go: watch::Receiver<Phase>,
) -> Sink {
    let sched = members::started(&mut go).await;
    if role == Role::Sender {
        if let Some(s) = sched {
            flood(&sh, idx, &mut sink, &st, s).await;
        }
        sh.room.sender_stopped_sending(sh.now_ns());
        st.on_writer_done(&sh.room.seqs);
    } else {
        if let Some(s) = sched {
            quiet(&sh, idx, &mut sink, &st, s).await;
        }
        st.writer_done.store(true, Ordering::SeqCst);
    }
    sink
}

/// Most frames one sender gathers before writing them out.
const BATCH: u64 = 256;

/// Sends until the stop or the cap. With a rate, each round sends what is due by now (so a
/// sender held up by a full socket catches up afterwards: open loop); without one, it sends
/// [`BATCH`] frames and flushes, as fast as the socket takes them.
async fn flood(sh: &Shared, idx: usize, sink: &mut Sink, st: &SendCount, s: Schedule) {
    let mut texts = StampedText::new(idx, sh.text_bytes);
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
                let text = texts.text(msg_no, send_ns);
                // Counted before the send: the answer may be read before `feed` returns.
                st.sent.fetch_add(1, Ordering::SeqCst);
                msg_no += 1;
                sink.feed(Message::text(wire::chat_frame(&sh.flood_room, text)))
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
async fn quiet(sh: &Shared, idx: usize, sink: &mut Sink, st: &SendCount, s: Schedule) {
    let mut ticks = sending::fixed_rate(s.start, sh.quiet_interval);
    let mut stop = pin!(tokio::time::sleep_until(s.stop.into()));
    let mut texts = StampedText::new(idx, 0);
    let mut msg_no = 0u64;
    while sending::tick_before(&mut ticks, stop.as_mut()).await {
        let text = texts.text(msg_no, sh.now_ns());
        msg_no += 1;
        st.sent.fetch_add(1, Ordering::SeqCst);
        sh.quiet.sent.fetch_add(1, Ordering::SeqCst);
        let frame = Message::text(wire::chat_frame(&sh.quiet_room, text));
        match tokio::time::timeout_at(s.hard.into(), sink.send(frame)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}
