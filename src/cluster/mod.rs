//! Several nodes as one server, through Redis (`--cluster redis://HOST:PORT`).
//!
//! Redis is the cluster's sequencer, its shared history and its fan-out:
//! - A chat is appended by one script ([`append.lua`](../../src/cluster/append.lua)) that, in
//!   one atomic step, checks for a resend, takes the room's next seq, adds the chat's frame to
//!   the room's stream and publishes it on the cluster's channel. So per room the seqs, the
//!   stream and the channel agree on one order, whichever node posted.
//! - Every node, the posting one included, delivers chats only from the channel
//!   ([`subscriber`]), in seq order per room: a node that misses channel traffic (a lost
//!   connection, a slow subscriber) sees a gap in a room's seqs and fills it from the room's
//!   stream before delivering anything later (`ChatServer`'s `published`).
//! - History, recovery (`since_seq`) and the offline inbox are read from Redis ([`store`]),
//!   so they are the same on every node.
//! - A chat is acknowledged once the script has run: it is in Redis. What Redis keeps across
//!   its own crash follows its persistence settings (see ARCHITECTURE.md, "Cluster").
//!
//! Keys (`R` a room, `U` a user; every key starts with `roomcast:`):
//!
//! | key | type | what | bound |
//! | --- | --- | --- | --- |
//! | `room:R:seq` | string | the room's newest seq | one per room |
//! | `room:R:first` | string | the room's first seq in this dataset | one per room |
//! | `room:R:log` | stream | the room's chats, entry id `SEQ-1`, field `f` the frame | `MAXLEN ~ --retention-messages` |
//! | `resend:R:U:ID` | string | the seq stored for a `client_msg_id`, for resends | expires after 24 h |
//! | `inbox:U` | list | `EXPIRES_MS\nFRAME`, the user's stored notifications | `--inbox-max`, expires after `--inbox-ttl-secs` |
//! | `epoch` | string | the Unix millisecond this dataset began; seqs start at `epoch × 1000 + 1` | one |
//! | `seq-floor` | string | every room's next seq is above it; raised to the restart's millisecond × 1000 when Redis restarted and may have lost writes | one |
//! | `redis-run` | string | the `run_id` of the Redis process this dataset was last seen on | one |
//! | `dev-key` | string | development mode only: the key development tokens are signed with, shared by the nodes (hex) | one |
//!
//! The channel `roomcast:chats` carries `R\nSEQ\nFRAME` for every chat.
//!
//! Seqs start at `epoch × 1000 + 1` rather than 1 so that a Redis that lost its data cannot
//! make a seq mean two messages: the new dataset's epoch is later, so its seqs are higher
//! than any handed out before (unless a room averaged a thousand chats a millisecond). And each
//! append carries the highest seq its node has seen in the room as a floor, so a Redis that
//! lost only its newest writes continues above what nodes saw. A node that restarted too has
//! no such memory: so every node, on every new connection, checks whether Redis restarted
//! with a dataset that may miss writes (loaded from an RDB snapshot, or from an append-only
//! file not fsynced at every write) and then raises a global floor to the restart's
//! millisecond × 1000, the same bound as a new epoch (`restarted.lua`). Seqs stay below
//! 2^53, exact in JavaScript.

pub mod peers;
pub mod store;
pub mod subscriber;

use std::time::Duration;

use crate::ids::{RoomId, Seq, UserId};

/// The channel every chat is published on.
pub const CHANNEL: &str = "roomcast:chats";

/// How long a node waits for Redis to answer a connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a resend key is kept: a chat resent later than this is stored again.
pub const RESEND_TTL_SECS: u64 = 24 * 3600;

pub(crate) fn seq_key(room: &RoomId) -> String {
    format!("roomcast:room:{room}:seq")
}

pub(crate) fn first_key(room: &RoomId) -> String {
    format!("roomcast:room:{room}:first")
}

pub(crate) fn log_key(room: &RoomId) -> String {
    format!("roomcast:room:{room}:log")
}

pub(crate) fn resend_key(room: &RoomId, user: &UserId, client_msg_id: &str) -> String {
    format!("roomcast:resend:{room}:{user}:{client_msg_id}")
}

pub(crate) fn inbox_key(user: &UserId) -> String {
    format!("roomcast:inbox:{user}")
}

pub(crate) const EPOCH_KEY: &str = "roomcast:epoch";

/// Every room's seqs continue above this (`restarted.lua`).
pub(crate) const FLOOR_KEY: &str = "roomcast:seq-floor";

/// The run id of the Redis process the dataset was last seen on (`restarted.lua`).
pub(crate) const REDIS_RUN_KEY: &str = "roomcast:redis-run";

/// Development mode's signing key, shared by the nodes: a development token minted by one
/// node is then accepted by every other, as a balancer that sends a client's next socket
/// elsewhere needs. Deleting it voids every development token at the nodes' next start.
pub(crate) const DEV_KEY: &str = "roomcast:dev-key";

/// The stream entry id of a seq.
pub(crate) fn entry_id(seq: Seq) -> String {
    format!("{}-1", seq.0)
}

/// The seq of a stream entry id.
pub(crate) fn seq_of_entry(id: &str) -> Option<Seq> {
    id.split('-').next()?.parse().ok().map(Seq)
}

/// One message of the channel: `ROOM\nSEQ\nFRAME`.
pub fn parse_published(payload: &str) -> Option<(RoomId, Seq, &str)> {
    let mut parts = payload.splitn(3, '\n');
    let room = RoomId::parse(parts.next()?)?;
    let seq = Seq(parts.next()?.parse().ok()?);
    Some((room, seq, parts.next()?))
}

/// Checks at start that Redis answers at `url`, so that a node with a wrong address stops at
/// once with a message that names it.
pub fn check_reachable(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("--cluster {url}: not a Redis URL: {e}"))?;
    let mut con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("cannot reach the cluster's Redis at {url}: {e}"))?;
    redis::cmd("PING")
        .query::<String>(&mut con)
        .map_err(|e| anyhow::anyhow!("the cluster's Redis at {url} does not answer: {e}"))?;
    Ok(())
}

/// The cluster's development signing key: `candidate` (hex-encoded into Redis) if no node
/// set one yet, else the one set first. Every node of a cluster in development mode calls
/// this at start, so they all sign and check development tokens with the same key.
pub fn dev_secret(url: &str, candidate: &[u8]) -> anyhow::Result<Vec<u8>> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("--cluster {url}: not a Redis URL: {e}"))?;
    let mut con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("cannot reach the cluster's Redis at {url}: {e}"))?;
    let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
    let (stored,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(DEV_KEY)
        .arg(&hex)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(DEV_KEY)
        .query(&mut con)
        .map_err(|e| anyhow::anyhow!("the cluster's development key: {e}"))?;
    from_hex(&stored)
        .filter(|key| key.len() >= 32)
        .ok_or_else(|| anyhow::anyhow!("{DEV_KEY} in the cluster's Redis is not a key of ours"))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_decode_and_garbage_does_not() {
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }

    #[test]
    fn published_messages_split_into_room_seq_and_frame() {
        let (room, seq, frame) =
            parse_published("lobby\n1764000000000007\n{\"a\":\"x\\ny\"}").unwrap();
        assert_eq!(room.as_str(), "lobby");
        assert_eq!(seq, Seq(1_764_000_000_000_007));
        assert_eq!(frame, "{\"a\":\"x\\ny\"}");
        assert!(parse_published("lobby\nseven\n{}").is_none());
        assert!(parse_published("bad room\n1\n{}").is_none());
        assert!(parse_published("lobby\n1").is_none());
    }

    #[test]
    fn entry_ids_carry_the_seq() {
        assert_eq!(entry_id(Seq(42)), "42-1");
        assert_eq!(seq_of_entry("42-1"), Some(Seq(42)));
        assert_eq!(seq_of_entry("x-1"), None);
    }
}
