//! Membership: sessions arriving and going, joining and leaving rooms, presence
//! announcements, and sessions removed by the server (slow consumers, kicks).
//!
//! A join that the room's in-memory window can answer (the recent history, or everything
//! after `since_seq`) makes the session a member at once. Otherwise it waits for a store
//! read, and the session becomes a member only when the answer comes back
//! ([`ChatServer::joined_from_store`]): reads and writes share the store's queue, so what
//! the read returns and what arrives live afterwards meet with no gap and no duplicate. (In
//! a cluster the live chats come from the channel, not the store's queue, and a room live
//! here is matched to the read by seq: `match_live_room`.)

use std::rc::Rc;

use actix::prelude::*;

use super::messages::{Connect, Refused, SessionKind};
use super::outbox::{Outbox, QueueBound};
use super::registry::{JoinRefused, JoinStart, SessionEntry};
use super::room::{Added, HistoryEntry, Removed, Room};
use super::{ChatServer, Handle};
use crate::cluster::peers::PeerEvent;
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::{
    ErrorCode, Frame, PROTOCOL_VERSION, ServerMessage, close_code, timestamp_now,
};
use crate::store::{Loaded, Op, Read, Tag};

/// The `server` field of `welcome`.
const SERVER_NAME: &str = concat!("roomcast/", env!("CARGO_PKG_VERSION"));

impl ChatServer {
    /// Admits a new session, unless the server is full or stopping. A chat socket is greeted
    /// with `welcome` (and joins the URL's room, if any); a notification socket is sent what
    /// waited in the user's inbox.
    pub(super) fn connect(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Result<(), Refused> {
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        if self.sessions.len() >= self.limits.max_connections {
            log::warn!(
                "connection refused: limit {} reached",
                self.limits.max_connections
            );
            return Err(Refused::Full);
        }
        let outbox = Outbox::new(msg.addr, msg.backlog);
        let entry = SessionEntry::new(msg.user.clone(), msg.kind, outbox, msg.conn);
        self.sessions.insert(msg.session, entry);
        let notifications = msg.kind == SessionKind::Notifications;
        let mine = match notifications {
            false => self.sessions.chat_sessions(&msg.user),
            true => self.sessions.notification_sockets(&msg.user),
        };
        let sockets = mine.len();
        // Past the per-user limit the oldest socket goes: a user who opens a new tab keeps
        // the tab in front of them, and a forgotten one makes room.
        if sockets > self.limits.max_sockets_per_user {
            let oldest = mine[0];
            log::info!(
                "too many sockets user={} closing session={oldest}",
                msg.user
            );
            self.close_session(
                oldest,
                close_code::TOO_MANY_SOCKETS,
                "too many sockets",
                ctx,
            );
        }
        self.tell_online(&msg.user, notifications);
        match msg.kind {
            SessionKind::Chat => {
                let welcome = ServerMessage::Welcome {
                    user_id: &msg.user,
                    session_id: msg.session.0,
                    protocol: PROTOCOL_VERSION,
                    server: SERVER_NAME,
                    limits: &self.limits.announced,
                }
                .encode();
                self.send(msg.session, welcome);
            }
            // A notification socket gets notifications only, as the seed protocol's did,
            // starting with those that waited for the user.
            SessionKind::Notifications if self.limits.inbox => {
                let op = Op::InboxTake {
                    user: msg.user,
                    session: msg.session,
                };
                if self.store.send(op).is_err() {
                    log::warn!("inbox not read: the store has stopped");
                }
            }
            SessionKind::Notifications => {}
        }
        if let Some(room) = msg.room {
            self.join(msg.session, room, msg.since);
        }
        Ok(())
    }

    /// A session stopped: forget it.
    pub(super) fn disconnect(&mut self, session: SessionId) {
        // Dropping the handle of an evicted session closes our duplicate of its socket.
        self.evicted.remove(&session);
        if let Some(entry) = self.remove_session(session) {
            log::debug!("session gone session={session} user={}", entry.user);
        }
    }

    /// Enters `room_id`. When the in-memory window holds what the session must be sent (the
    /// recent history, or everything after `since`), it becomes a member at once. Otherwise
    /// the join waits for a store read; the session becomes a member when the answer comes
    /// back ([`Self::joined_from_store`]).
    pub(super) fn join(&mut self, session: SessionId, room_id: RoomId, since: Option<Seq>) {
        let max_rooms = self.limits.max_rooms_per_socket;
        // A join that overtakes one still waiting for the store goes to the store too: the
        // answer to the first read is then dropped, and this one's answers it.
        let overtaking = match self.sessions.start_join(session, &room_id, max_rooms) {
            Ok(start) => start == JoinStart::Again,
            Err(JoinRefused::Gone) => return,
            Err(JoinRefused::AlreadyIn) => {
                let msg = format!("you are already in room '{room_id}'");
                return self.send_error(session, ErrorCode::AlreadyJoined, &msg, Some(&room_id));
            }
            Err(JoinRefused::TooManyRooms) => {
                let msg = format!("a socket may be in at most {max_rooms} rooms");
                return self.send_error(session, ErrorCode::TooManyRooms, &msg, Some(&room_id));
            }
        };

        // What age-based retention deletes at its next pass leaves the window first.
        if self.limits.retention_ms > 0
            && let Some(room) = self.rooms.get_mut(&room_id)
        {
            let now = self.limits.clock.now_ms();
            room.expire_before(now.saturating_sub(self.limits.retention_ms));
        }
        if !overtaking && let Some((history, recovered)) = self.history_from_window(&room_id, since)
        {
            return self.admit(session, &room_id, history, recovered);
        }
        let on_join = self.limits.history_on_join;
        let read = match since {
            None => Read::Recent(on_join),
            Some(after) => Read::Since {
                after,
                max: self.limits.recovery_max,
                fallback: on_join,
            },
        };
        self.sessions.wait_for_read(session, &room_id);
        self.await_room(&room_id);
        let op = Op::Read {
            room: room_id.clone(),
            read,
            tag: Tag::Session(session),
        };
        self.metrics.store_read();
        if self.store.send(op).is_err() {
            self.join_failed(session, &room_id, "the history store has stopped");
        }
    }

    /// What a joining session must be sent, if the live room's window holds all of it: the
    /// recent history (`recovered: None`), or everything after `since` (`Some(true)`).
    fn history_from_window(
        &self,
        room_id: &RoomId,
        since: Option<Seq>,
    ) -> Option<(Vec<Frame>, Option<bool>)> {
        let room = self.rooms.get(room_id)?;
        let on_join = self.limits.history_on_join;
        match since {
            None => {
                let recent: Vec<Frame> = room.recent(on_join).map(|e| e.frame.clone()).collect();
                (recent.len() == on_join || room.window_reaches_start()).then_some((recent, None))
            }
            Some(after) => room
                .catch_up(after, self.limits.recovery_max)
                .map(|entries| {
                    let frames = entries.into_iter().map(|e| e.frame.clone()).collect();
                    (frames, Some(true))
                }),
        }
    }

    /// A store read for a join came back: make the session a member, if it still wants to be.
    pub(super) fn joined_from_store(
        &mut self,
        session: SessionId,
        room_id: RoomId,
        loaded: Loaded,
    ) {
        if !self.sessions.finish_read(session, &room_id) {
            return; // It left (or was evicted, or is gone) meanwhile.
        }
        let (entries, recovered) = match self.rooms.get(&room_id) {
            // In a cluster the room can already be live here, its chats coming from the
            // channel while the read went to the stream: see `match_live_room`.
            Some(room) if self.cluster => {
                match_live_room(room, loaded, self.limits.history_on_join)
            }
            Some(room) => {
                // One node: reads and writes share the store's queue, so every commit
                // sequenced before the read has been handled by now, and none after it.
                debug_assert_eq!(room.last_seq(), loaded.last_seq);
                (loaded.entries, loaded.recovered)
            }
            None => {
                let keep = self.limits.window_keep();
                let room = Room::new(loaded.last_seq, loaded.entries.clone(), keep);
                self.rooms.insert(room_id.clone(), room);
                (loaded.entries, loaded.recovered)
            }
        };
        let history = entries.into_iter().map(|e| e.frame).collect();
        self.admit(session, &room_id, history, recovered);
    }

    pub(super) fn join_failed(&mut self, session: SessionId, room_id: &RoomId, error: &str) {
        self.sessions.forget_room(session, room_id);
        let msg = format!("cannot join room '{room_id}' now: {error}");
        self.send_error(session, ErrorCode::StoreUnavailable, &msg, Some(room_id));
    }

    /// Makes `session` a member of the (live) room: `joined`, then `history`, queued together,
    /// so live frames for the room can only come after them; then `user_joined` to the others.
    fn admit(
        &mut self,
        session: SessionId,
        room_id: &RoomId,
        history: Vec<Frame>,
        recovered: Option<bool>,
    ) {
        let (Some(entry), Some(room)) = (self.sessions.get(session), self.rooms.get_mut(room_id))
        else {
            return;
        };
        let user = entry.user.clone();
        let outbox: Handle = Rc::clone(&entry.handle);
        let on_join = self.limits.history_on_join;
        let (history, recovered) = fit_history(history, recovered, on_join, self.limits.queue);
        let added = room.add(&user, session, Rc::clone(&outbox));
        let last_seq = room.last_seq();
        // Present over the cluster: here, and on the other nodes.
        let users = self.room_users(room_id);
        let users: Vec<&UserId> = users.iter().collect();
        let joined = ServerMessage::Joined {
            room_id,
            user_id: &user,
            users: &users,
            last_seq,
            history: history.len(),
            recovered,
        }
        .encode();
        self.outboxes.queue(session, &outbox, joined);
        for frame in history {
            self.outboxes.queue(session, &outbox, frame);
        }
        if added != Added::AlreadyIn {
            self.tell_in_room(room_id, &user);
        }
        // `user_joined` marks the user's first session in the room over the cluster.
        if added == Added::FirstSessionOfUser && !self.present_elsewhere(room_id, &user) {
            let timestamp = timestamp_now();
            let message = format!("{user} joined the room");
            let frame = ServerMessage::UserJoined {
                user_id: &user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode();
            self.fan_out(room_id, &frame, Some(&user));
        }
        log::debug!("joined session={session} user={user} room={room_id}");
    }

    /// The `leave` command: out of the room, answered with `left`.
    pub(super) fn leave(&mut self, session: SessionId, room: RoomId) {
        if !self.check_member(session, &room) {
            return;
        }
        let Some(user) = self.sessions.user_of(session).cloned() else {
            return;
        };
        self.sessions.forget_room(session, &room);
        self.leave_room(session, &user, &room);
        let frame = ServerMessage::Left { room_id: &room }.encode();
        self.send(session, frame);
    }

    /// The `get_users` command: the room's present users.
    pub(super) fn get_users(&mut self, session: SessionId, room: RoomId) {
        if !self.check_member(session, &room) {
            return;
        }
        // A session still joining sees the room as it is (possibly empty).
        let users = self.room_users(&room);
        let users: Vec<&UserId> = users.iter().collect();
        let frame = ServerMessage::ActiveUsers {
            users: &users,
            room_id: &room,
        }
        .encode();
        self.send(session, frame);
    }

    /// Takes `session` out of `room_id`, announcing `user_left` if it was the user's last
    /// session there, and drops the room if it emptied.
    fn leave_room(&mut self, session: SessionId, user: &UserId, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let removed = room.remove(user, session);
        let emptied = room.is_empty();
        if emptied {
            self.rooms.remove(room_id);
            log::debug!("room emptied room={room_id}");
        }
        if removed != Removed::NotIn {
            self.tell_in_room(room_id, user);
        }
        // `user_left` marks the user's last session in the room over the cluster.
        if !emptied
            && removed == Removed::LastSessionOfUser
            && !self.present_elsewhere(room_id, user)
        {
            let timestamp = timestamp_now();
            let message = format!("{user} left the room");
            let frame = ServerMessage::UserLeft {
                user_id: user,
                room_id,
                timestamp: &timestamp,
                message: &message,
            }
            .encode();
            self.fan_out(room_id, &frame, None);
        }
    }

    /// Forgets a session entirely: every room, the user map. Returns its entry.
    fn remove_session(&mut self, session: SessionId) -> Option<SessionEntry<Handle>> {
        let entry = self.sessions.remove(session)?;
        for room in &entry.rooms {
            self.leave_room(session, &entry.user, room);
        }
        self.tell_online(&entry.user, entry.kind == SessionKind::Notifications);
        Some(entry)
    }

    /// Removes a session that stopped reading, orders it closed with 4001, and cuts its
    /// connection when the grace period ends unless its `Disconnect` comes first.
    pub(super) fn evict_slow(&mut self, session: SessionId, ctx: &mut Context<Self>) {
        let Some(entry) = self.remove_session(session) else {
            return;
        };
        self.slow_consumers_closed += 1;
        self.metrics.slow_consumer_closed();
        let (frames, bytes, since) = entry.handle.backlog_state();
        log::warn!(
            "slow consumer closed session={session} user={} backlog_frames={frames} \
             backlog_bytes={bytes} since_last_write_ms={}",
            entry.user,
            since.as_millis()
        );
        entry
            .handle
            .close_now(close_code::SLOW_CONSUMER, "slow consumer");
        match entry.conn.map(|c| c.duplicate()) {
            Some(Ok(conn)) => {
                self.evicted.insert(session, conn);
                ctx.run_later(self.limits.slow_consumer_grace, move |act, _| {
                    if let Some(conn) = act.evicted.remove(&session) {
                        conn.cut();
                    }
                });
            }
            Some(Err(e)) => log::debug!("slow consumer session={session}: {e}"),
            None => {}
        }
    }

    /// Closes every socket of `user` (chat and notification) with 4003, on every node;
    /// returns how many over the cluster (the other nodes' as their presence announced them).
    pub(super) fn disconnect_user(
        &mut self,
        user: &UserId,
        reason: &'static str,
        ctx: &mut Context<Self>,
    ) -> usize {
        let sessions = self.sessions.sessions_of(user);
        let elsewhere = match self.cluster {
            true => self.peers.sockets_of(user),
            false => 0,
        };
        self.tell_peers(|n| PeerEvent::Kick { n, u: user.clone() });
        for session in &sessions {
            self.close_session(*session, close_code::DISCONNECTED, reason, ctx);
        }
        log::info!(
            "disconnected user={user} sockets={} here, {elsewhere} elsewhere",
            sessions.len()
        );
        sessions.len() + elsewhere
    }

    /// The server closes a session (kick, shutdown). It leaves every room and its user map at
    /// once, so presence changes now and nothing new is addressed to it. Its chats already in
    /// the store are still answered (`ack`, or an error naming the `client_msg_id`); then the
    /// close order goes through its outbox, behind every frame queued for it before, under
    /// the same queue bound as any frame. If the store has not answered within the
    /// slow-consumer grace, the close goes anyway: those chats were never acknowledged.
    pub(super) fn close_session(
        &mut self,
        session: SessionId,
        code: u16,
        reason: &'static str,
        ctx: &mut Context<Self>,
    ) {
        let Some(rooms) = self.sessions.detach(session, code, reason) else {
            return;
        };
        if let Some(entry) = self.sessions.get(session) {
            let (user, kind) = (entry.user.clone(), entry.kind);
            for room in &rooms {
                self.leave_room(session, &user, room);
            }
            self.tell_online(&user, kind == SessionKind::Notifications);
        }
        if !self.finish_closing(session) {
            ctx.run_later(self.limits.slow_consumer_grace, move |act, ctx| {
                act.send_close(session);
                act.settle(ctx);
            });
        }
    }

    /// Sends a closing session its close order if nothing of it waits for the store any
    /// more. Returns whether the order went (now or before).
    pub(super) fn finish_closing(&mut self, session: SessionId) -> bool {
        match self.sessions.get(session) {
            Some(entry) if entry.closing.is_some() && entry.in_store > 0 => false,
            _ => {
                self.send_close(session);
                true
            }
        }
    }

    /// Queues a closing session's close order behind its frames, once.
    fn send_close(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.get_mut(session) else {
            return;
        };
        let (Some((code, reason)), false) = (entry.closing, entry.close_sent) else {
            return;
        };
        entry.close_sent = true;
        let handle = Rc::clone(&entry.handle);
        self.outboxes.close(session, &handle, code, reason);
    }
}

/// A join's read, answered by the cluster's stream, made to fit `room`, which is live here
/// and was fed by the channel meanwhile: the joiner's history must end exactly at the live
/// room's newest seq, the first chat it gets live being the next, or it would get a chat
/// twice or miss one.
/// - Chats the read saw that the channel has not brought yet are left out: they arrive
///   live after `joined`.
/// - Chats the channel delivered while the read was on its way are added from the room's
///   window. If the window no longer holds them all (more than `--history-keep` arrived in a
///   read's round trip), the joiner gets the window's newest instead, and a `since_seq` join
///   is answered `recovered: false`.
///
/// A plain join's history stays the newest `on_join`.
fn match_live_room<H>(
    room: &Room<H>,
    loaded: Loaded,
    on_join: usize,
) -> (Vec<HistoryEntry>, Option<bool>) {
    let live = room.last_seq();
    let Loaded {
        mut entries,
        last_seq: read,
        recovered,
        ..
    } = loaded;
    entries.retain(|e| e.seq <= live);
    if read < live {
        match room.catch_up(read, usize::MAX) {
            Some(missed) => entries.extend(missed.into_iter().cloned()),
            None => {
                let newest = room.recent(on_join).cloned().collect();
                return (newest, recovered.map(|_| false));
            }
        }
    }
    if recovered.is_none() && entries.len() > on_join {
        entries.drain(..entries.len() - on_join);
    }
    (entries, recovered)
}

/// A join's history cut to what a socket may be handed at once: at most half its queue bound
/// (`--max-pending` frames, `--max-pending-bytes`), leaving the rest to `joined` and to what
/// else waits for it. Handed over whole, a larger one would close the socket as a slow
/// consumer (4001) before it read anything, and a client that reconnects with the same
/// `since_seq` would be closed again every time. A recovery that does not fit is given up
/// (`recovered: false`) for the recent history (`on_join` messages); a history that still
/// does not fit keeps its newest messages.
fn fit_history(
    mut history: Vec<Frame>,
    recovered: Option<bool>,
    on_join: usize,
    bound: QueueBound,
) -> (Vec<Frame>, Option<bool>) {
    let (max_frames, max_bytes) = (bound.frames / 2, bound.bytes / 2);
    let bytes: usize = history.iter().map(|f| f.len()).sum();
    if history.len() <= max_frames && bytes <= max_bytes {
        return (history, recovered);
    }
    let recovered = match recovered {
        Some(true) => {
            history.drain(..history.len().saturating_sub(on_join));
            Some(false)
        }
        other => other,
    };
    let (mut kept, mut kept_bytes) = (0, 0);
    for frame in history.iter().rev() {
        if kept == max_frames || kept_bytes + frame.len() > max_bytes {
            break;
        }
        kept += 1;
        kept_bytes += frame.len();
    }
    history.drain(..history.len() - kept);
    (history, recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, len: usize) -> Vec<Frame> {
        (0..n).map(|i| Frame::from(format!("{i:0len$}"))).collect()
    }

    #[test]
    fn a_history_within_half_the_bound_is_left_whole() {
        let bound = QueueBound {
            frames: 10,
            bytes: 1000,
        };
        let (h, r) = fit_history(frames(5, 100), Some(true), 3, bound);
        assert_eq!((h, r), (frames(5, 100), Some(true)));
    }

    #[test]
    fn a_recovery_too_large_becomes_the_recent_history_that_fits() {
        // Six of 100 bytes against a 500-byte half: not a recovery; the newest three (the
        // recent history) fit.
        let bound = QueueBound {
            frames: 100,
            bytes: 1000,
        };
        let (h, r) = fit_history(frames(6, 100), Some(true), 3, bound);
        assert_eq!((h, r), (frames(6, 100)[3..].to_vec(), Some(false)));
        // By frames: ten against a half of four; the recent three fit.
        let bound = QueueBound {
            frames: 8,
            bytes: 1 << 20,
        };
        let (h, r) = fit_history(frames(10, 1), Some(true), 3, bound);
        assert_eq!((h, r), (frames(10, 1)[7..].to_vec(), Some(false)));
    }

    #[test]
    fn a_history_too_large_keeps_its_newest() {
        let bound = QueueBound {
            frames: 100,
            bytes: 500,
        };
        let (h, r) = fit_history(frames(5, 100), None, 50, bound);
        assert_eq!((h, r), (frames(5, 100)[3..].to_vec(), None));
        let (h, r) = fit_history(frames(5, 100), Some(false), 50, bound);
        assert_eq!((h, r), (frames(5, 100)[3..].to_vec(), Some(false)));
    }

    fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<HistoryEntry> {
        seqs.map(|s| HistoryEntry {
            seq: Seq(s),
            frame: Frame::from(format!("m{s}")),
            stored_ms: 0,
        })
        .collect()
    }

    fn read(last: u64, seqs: std::ops::RangeInclusive<u64>, recovered: Option<bool>) -> Loaded {
        Loaded {
            last_seq: Seq(last),
            entries: entries(seqs),
            has_more: false,
            recovered,
        }
    }

    fn seqs(matched: &(Vec<HistoryEntry>, Option<bool>)) -> (Vec<u64>, Option<bool>) {
        (matched.0.iter().map(|e| e.seq.0).collect(), matched.1)
    }

    /// The room live here has delivered up to 17; the read ran after 18 was stored, whose
    /// chat the channel has not brought yet: 18 comes live, not in the history too.
    #[test]
    fn a_read_ahead_of_the_live_room_leaves_the_rest_to_the_channel() {
        let room: Room<()> = Room::new(Seq(17), entries(1..=17), 50);
        let plain = match_live_room(&room, read(18, 1..=18, None), 50);
        assert_eq!(seqs(&plain), ((1..=17).collect(), None));
        let since = match_live_room(&room, read(18, 11..=18, Some(true)), 50);
        assert_eq!(seqs(&since), ((11..=17).collect(), Some(true)));
    }

    /// The read ran before 11 was stored, and the channel delivered 11 and 12 to the live
    /// room before the answer came back: the joiner gets them from the window.
    #[test]
    fn a_read_behind_the_live_room_is_completed_from_its_window() {
        let room: Room<()> = Room::new(Seq(12), entries(1..=12), 50);
        let plain = match_live_room(&room, read(10, 1..=10, None), 50);
        assert_eq!(seqs(&plain), ((1..=12).collect(), None));
        // A plain join still gets the newest `on_join`.
        let plain = match_live_room(&room, read(10, 1..=10, None), 4);
        assert_eq!(seqs(&plain), ((9..=12).collect(), None));
        let since = match_live_room(&room, read(10, 6..=10, Some(true)), 50);
        assert_eq!(seqs(&since), ((6..=12).collect(), Some(true)));
    }

    /// More arrived during the read than the window keeps: the window's newest, and a
    /// recovery is not exact.
    #[test]
    fn a_read_the_window_cannot_bridge_gives_the_windows_newest() {
        let room: Room<()> = Room::new(Seq(100), entries(91..=100), 10);
        let since = match_live_room(&room, read(80, 71..=80, Some(true)), 50);
        assert_eq!(seqs(&since), ((91..=100).collect(), Some(false)));
        let plain = match_live_room(&room, read(80, 71..=80, None), 5);
        assert_eq!(seqs(&plain), ((96..=100).collect(), None));
    }

    /// The usual case: read and live room agree.
    #[test]
    fn a_read_that_matches_the_live_room_is_kept_as_it_is() {
        let room: Room<()> = Room::new(Seq(5), entries(1..=5), 50);
        let since = match_live_room(&room, read(5, 3..=5, Some(true)), 50);
        assert_eq!(seqs(&since), ((3..=5).collect(), Some(true)));
        let lost = match_live_room(&room, read(5, 4..=5, Some(false)), 50);
        assert_eq!(seqs(&lost), ((4..=5).collect(), Some(false)));
    }
}
