//! The node's subscription to the cluster's channels, on a thread of its own: every chat any
//! node stores arrives here and goes to `ChatServer` as [`Event::Published`], and every node
//! event ([`super::peers`]) as [`Event::Peer`].
//!
//! When the connection is lost the thread tells `ChatServer` (`Subscribed(false)`), then
//! reconnects with backoff (100 ms doubling to 2 s) and resubscribes; once back it says
//! `Subscribed(true)`, and `ChatServer` fills every live room's gap from the rooms' streams,
//! since what was published meanwhile was never received. The thread ends when `ChatServer`
//! has stopped.

use std::time::Duration;

use actix::prelude::*;

use super::peers::{EVENTS, PeerEvent};
use super::{CHANNEL, CONNECT_TIMEOUT, parse_published};
use crate::protocol::Frame;
use crate::store::Event;
use crate::store::writer::StoreEvents;

/// How often a waiting subscriber checks that `ChatServer` still runs.
const POLL: Duration = Duration::from_millis(500);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the subscriber thread.
pub fn start(url: &str, events: Recipient<StoreEvents>) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    std::thread::Builder::new()
        .name("roomcast-subscriber".into())
        .spawn(move || run(client, events))?;
    Ok(())
}

fn run(client: redis::Client, events: Recipient<StoreEvents>) {
    let mut backoff = BACKOFF_MIN;
    let mut subscribed = false;
    while events.connected() {
        match listen(&client, &events, &mut subscribed) {
            Ok(()) => return, // ChatServer stopped.
            Err(e) => {
                if subscribed {
                    subscribed = false;
                    log::warn!("cluster subscription lost: {e}; reconnecting");
                    events.do_send(StoreEvents(vec![Event::Subscribed(false)]));
                    backoff = BACKOFF_MIN;
                } else {
                    log::debug!("cluster subscription: {e}; retry in {backoff:?}");
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Subscribes and forwards messages until the connection fails (an error) or `ChatServer`
/// stops (`Ok`).
fn listen(
    client: &redis::Client,
    events: &Recipient<StoreEvents>,
    subscribed: &mut bool,
) -> redis::RedisResult<()> {
    let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    let mut pubsub = con.as_pubsub();
    pubsub.subscribe(&[CHANNEL, EVENTS])?;
    pubsub.set_read_timeout(Some(POLL))?;
    *subscribed = true;
    log::info!("subscribed to {CHANNEL}");
    events.do_send(StoreEvents(vec![Event::Subscribed(true)]));
    loop {
        match pubsub.get_message() {
            Ok(msg) if msg.get_channel_name() == EVENTS => {
                match serde_json::from_slice::<PeerEvent>(msg.get_payload_bytes()) {
                    Ok(event) => events.do_send(StoreEvents(vec![Event::Peer(event)])),
                    Err(e) => log::warn!("node event skipped: {e}"),
                }
            }
            Ok(msg) => {
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                match parse_published(&payload) {
                    Some((room, seq, frame)) => {
                        let frame = Frame::from(frame.to_owned());
                        events.do_send(StoreEvents(vec![Event::Published { room, seq, frame }]));
                    }
                    None => log::warn!("cluster channel: unreadable message skipped"),
                }
            }
            Err(e) if e.is_timeout() => {
                if !events.connected() {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}
