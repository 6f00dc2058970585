//! The live sessions `ChatServer` knows and the users they belong to: pure bookkeeping, no
//! actix in it, unit-tested like [`super::room::Room`].
//!
//! A session is a chat socket or a notification socket. Both kinds share one session map
//! (one connection limit, one eviction path), and each kind has its own user map, so private
//! messages reach a user's chat sockets and notifications reach their notification sockets.
//! The registry also keeps, per session, the rooms it is in or joining; the rooms themselves
//! (members, history) live in [`super::room::Room`]. `H` is the handle used to reach a
//! session (its outbox in the server, a plain value in tests).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::messages::SessionKind;
use crate::conn::ConnFd;
use crate::ids::{RoomId, SessionId, UserId};

/// What the server knows of one live session.
#[derive(Debug)]
pub struct SessionEntry<H> {
    pub user: UserId,
    pub kind: SessionKind,
    /// Where frames for this session go; rooms hold clones of it.
    pub handle: H,
    /// Rooms this session is in, in join order (bounded by the rooms-per-socket limit),
    /// including those it is still joining.
    pub rooms: Vec<RoomId>,
    /// Rooms whose join waits for a store read, with how many reads are on their way (a
    /// second join of the room sends its own): the session is not a member yet.
    pub joining: Vec<(RoomId, usize)>,
    /// Kept to cut the connection if the session stops reading.
    pub conn: Option<ConnFd>,
    /// The close order went out (see `closing`).
    pub close_sent: bool,
    /// Its chats sent to the store and not yet answered.
    pub in_store: usize,
    /// Set when the server closes the session (kick, shutdown): the close code and reason
    /// it gets once its chats in the store are answered. A closing session is in no room and
    /// in no user map, but is still live until its `Disconnect`.
    pub closing: Option<(u16, &'static str)>,
}

impl<H> SessionEntry<H> {
    pub fn new(user: UserId, kind: SessionKind, handle: H, conn: Option<ConnFd>) -> Self {
        SessionEntry {
            user,
            kind,
            handle,
            rooms: Vec::new(),
            joining: Vec::new(),
            conn,
            close_sent: false,
            in_store: 0,
            closing: None,
        }
    }
}

/// How a join of a room starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStart {
    /// The session was not in the room.
    New,
    /// Its join of the room still waits for the store: this later join overtakes it, and is
    /// the one to answer.
    Again,
}

/// Why a session may not start joining a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// It is in the room already, or joining it.
    AlreadyIn,
    /// It is in as many rooms as a socket may be.
    TooManyRooms,
    /// No such session (it is gone).
    Gone,
}

/// Every live session, by id, and each user's sessions of each kind.
#[derive(Debug)]
pub struct Registry<H> {
    sessions: HashMap<SessionId, SessionEntry<H>>,
    /// User id -> that user's chat sessions, oldest first.
    chat: HashMap<UserId, Vec<SessionId>>,
    /// User id -> that user's notification sockets, oldest first.
    notified: HashMap<UserId, Vec<SessionId>>,
    /// Sockets in `notified`, kept so the count needs no walk.
    notification_sockets: usize,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            sessions: HashMap::new(),
            chat: HashMap::new(),
            notified: HashMap::new(),
            notification_sockets: 0,
        }
    }
}

impl<H> Registry<H> {
    fn by_kind(&mut self, kind: SessionKind) -> &mut HashMap<UserId, Vec<SessionId>> {
        match kind {
            SessionKind::Chat => &mut self.chat,
            SessionKind::Notifications => &mut self.notified,
        }
    }

    /// Takes `session` out of its user map, if it is there.
    fn unlink(&mut self, session: SessionId, kind: SessionKind, user: &UserId) {
        if let Entry::Occupied(mut o) = self.by_kind(kind).entry(user.clone()) {
            let before = o.get().len();
            o.get_mut().retain(|s| *s != session);
            let removed = before - o.get().len();
            if o.get().is_empty() {
                o.remove();
            }
            if kind == SessionKind::Notifications {
                self.notification_sockets -= removed;
            }
        }
    }

    /// Adds a session. An id already present is replaced (ids are never reused, so this does
    /// not happen outside tests).
    pub fn insert(&mut self, session: SessionId, entry: SessionEntry<H>) {
        if self.sessions.contains_key(&session) {
            self.remove(session);
        }
        self.by_kind(entry.kind)
            .entry(entry.user.clone())
            .or_default()
            .push(session);
        if entry.kind == SessionKind::Notifications {
            self.notification_sockets += 1;
        }
        self.sessions.insert(session, entry);
    }

    /// Forgets a session; returns its entry (with the rooms it was in, for the caller to
    /// leave them). A user left with no session of that kind is forgotten too.
    pub fn remove(&mut self, session: SessionId) -> Option<SessionEntry<H>> {
        let entry = self.sessions.remove(&session)?;
        if entry.closing.is_none() {
            self.unlink(session, entry.kind, &entry.user);
        }
        Some(entry)
    }

    pub fn get(&self, session: SessionId) -> Option<&SessionEntry<H>> {
        self.sessions.get(&session)
    }

    pub fn get_mut(&mut self, session: SessionId) -> Option<&mut SessionEntry<H>> {
        self.sessions.get_mut(&session)
    }

    /// Marks a session as being closed by the server with `code`: it leaves its user map at
    /// once (so nothing new is addressed to it) and every room; the rooms it was in are
    /// returned, for the caller to announce its departure. Its entry stays until
    /// [`Self::remove`], so answers to what it already sent can still reach it.
    pub fn detach(
        &mut self,
        session: SessionId,
        code: u16,
        reason: &'static str,
    ) -> Option<Vec<RoomId>> {
        let entry = self.sessions.get_mut(&session)?;
        if entry.closing.is_some() {
            return Some(Vec::new());
        }
        entry.closing = Some((code, reason));
        entry.joining.clear();
        let rooms = std::mem::take(&mut entry.rooms);
        let (kind, user) = (entry.kind, entry.user.clone());
        self.unlink(session, kind, &user);
        Some(rooms)
    }

    pub fn contains(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    pub fn user_of(&self, session: SessionId) -> Option<&UserId> {
        self.sessions.get(&session).map(|e| &e.user)
    }

    /// Live sessions of both kinds.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (SessionId, &SessionEntry<H>)> {
        self.sessions.iter().map(|(id, e)| (*id, e))
    }

    /// Whether `session` is in `room`, or joining it.
    pub fn is_in(&self, session: SessionId, room: &RoomId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|e| e.rooms.contains(room))
    }

    /// Records that `session` enters `room` (a member at once, or joining), within the
    /// per-socket room limit.
    pub fn start_join(
        &mut self,
        session: SessionId,
        room: &RoomId,
        max_rooms: usize,
    ) -> Result<JoinStart, JoinRefused> {
        let entry = self.sessions.get_mut(&session).ok_or(JoinRefused::Gone)?;
        if entry.joining.iter().any(|(r, _)| r == room) {
            return Ok(JoinStart::Again);
        }
        if entry.rooms.contains(room) {
            return Err(JoinRefused::AlreadyIn);
        }
        if entry.rooms.len() >= max_rooms {
            return Err(JoinRefused::TooManyRooms);
        }
        entry.rooms.push(room.clone());
        Ok(JoinStart::New)
    }

    /// Marks `session`'s join of `room` as waiting for one more store read.
    pub fn wait_for_read(&mut self, session: SessionId, room: &RoomId) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if !entry.rooms.contains(room) {
            return;
        }
        match entry.joining.iter_mut().find(|(r, _)| r == room) {
            Some((_, reads)) => *reads += 1,
            None => entry.joining.push((room.clone(), 1)),
        }
    }

    /// A store read for `session`'s join of `room` came back: whether it is the one to
    /// answer, i.e. the session still waits and no later join's read is on its way (reads
    /// come back in the order they were sent, so the last one answers the last join). The
    /// session is no longer joining once its last read is back.
    pub fn finish_read(&mut self, session: SessionId, room: &RoomId) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let Some(pos) = entry.joining.iter().position(|(r, _)| r == room) else {
            return false;
        };
        entry.joining[pos].1 -= 1;
        if entry.joining[pos].1 > 0 {
            return false;
        }
        entry.joining.swap_remove(pos);
        true
    }

    /// Takes `room` off `session`'s rooms (left, or the join failed). Returns whether it was
    /// there.
    pub fn forget_room(&mut self, session: SessionId, room: &RoomId) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let before = entry.rooms.len();
        entry.rooms.retain(|r| r != room);
        entry.joining.retain(|(r, _)| r != room);
        entry.rooms.len() != before
    }

    /// `user`'s chat sessions, oldest first.
    pub fn chat_sessions(&self, user: &UserId) -> &[SessionId] {
        self.chat.get(user).map_or(&[], Vec::as_slice)
    }

    /// `user`'s notification sockets, oldest first.
    pub fn notification_sockets(&self, user: &UserId) -> &[SessionId] {
        self.notified.get(user).map_or(&[], Vec::as_slice)
    }

    /// Every session of `user`, chat sockets first.
    pub fn sessions_of(&self, user: &UserId) -> Vec<SessionId> {
        let mut all = self.chat_sessions(user).to_vec();
        all.extend_from_slice(self.notification_sockets(user));
        all
    }

    /// Users with at least one chat socket.
    pub fn chat_users(&self) -> usize {
        self.chat.len()
    }

    /// Notification sockets over all users.
    pub fn notification_socket_count(&self) -> usize {
        self.notification_sockets
    }

    /// Each user with chat sockets (or, with `notifications`, notification sockets) and
    /// how many they have.
    pub fn socket_counts(&self, notifications: bool) -> HashMap<UserId, u32> {
        let map = match notifications {
            false => &self.chat,
            true => &self.notified,
        };
        map.iter()
            .map(|(user, s)| (user.clone(), s.len() as u32))
            .collect()
    }

    /// Users with at least one notification socket, sorted.
    pub fn notified_users(&self) -> Vec<UserId> {
        let mut all: Vec<UserId> = self.notified.keys().cloned().collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn entry(name: &str, kind: SessionKind) -> SessionEntry<u32> {
        SessionEntry::new(user(name), kind, 0, None)
    }

    #[test]
    fn each_kind_has_its_own_user_map() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        r.insert(SessionId(2), entry("ann", SessionKind::Chat));
        r.insert(SessionId(3), entry("ann", SessionKind::Notifications));
        r.insert(SessionId(4), entry("bob", SessionKind::Notifications));
        assert_eq!(r.len(), 4);
        assert_eq!(r.chat_sessions(&user("ann")), [SessionId(1), SessionId(2)]);
        assert_eq!(r.notification_sockets(&user("ann")), [SessionId(3)]);
        assert!(r.chat_sessions(&user("bob")).is_empty());
        assert_eq!(r.chat_users(), 1, "bob has a notification socket only");
        assert_eq!(r.notification_socket_count(), 2);
        assert_eq!(r.notified_users(), [user("ann"), user("bob")]);
        assert_eq!(
            r.sessions_of(&user("ann")),
            [SessionId(1), SessionId(2), SessionId(3)]
        );
    }

    #[test]
    fn removing_the_last_session_forgets_the_user() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        r.insert(SessionId(2), entry("ann", SessionKind::Chat));
        assert_eq!(r.remove(SessionId(1)).unwrap().user, user("ann"));
        assert_eq!(r.chat_users(), 1);
        assert!(r.remove(SessionId(1)).is_none(), "removed once only");
        r.remove(SessionId(2));
        assert_eq!(r.chat_users(), 0);
        assert!(r.is_empty());
        assert!(r.sessions_of(&user("ann")).is_empty());
    }

    #[test]
    fn joins_are_bounded_and_never_doubled() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        assert_eq!(
            r.start_join(SessionId(1), &room("a"), 2),
            Ok(JoinStart::New)
        );
        assert_eq!(
            r.start_join(SessionId(1), &room("a"), 2),
            Err(JoinRefused::AlreadyIn)
        );
        assert_eq!(
            r.start_join(SessionId(1), &room("b"), 2),
            Ok(JoinStart::New)
        );
        assert_eq!(
            r.start_join(SessionId(1), &room("c"), 2),
            Err(JoinRefused::TooManyRooms)
        );
        assert_eq!(
            r.start_join(SessionId(9), &room("a"), 2),
            Err(JoinRefused::Gone)
        );
        assert!(r.is_in(SessionId(1), &room("b")));
        assert!(r.forget_room(SessionId(1), &room("a")));
        assert!(!r.forget_room(SessionId(1), &room("a")));
        assert!(!r.is_in(SessionId(1), &room("a")));
        assert_eq!(r.get(SessionId(1)).unwrap().rooms, [room("b")]);
    }

    #[test]
    fn a_store_read_counts_only_while_the_session_still_joins() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        r.start_join(SessionId(1), &room("a"), 5).unwrap();
        r.wait_for_read(SessionId(1), &room("a"));
        assert!(r.is_in(SessionId(1), &room("a")), "joining counts as in");
        assert!(r.finish_read(SessionId(1), &room("a")));
        assert!(!r.finish_read(SessionId(1), &room("a")), "answered once");

        // Left while the read was on its way: the answer is ignored.
        r.start_join(SessionId(1), &room("b"), 5).unwrap();
        r.wait_for_read(SessionId(1), &room("b"));
        r.forget_room(SessionId(1), &room("b"));
        assert!(!r.finish_read(SessionId(1), &room("b")));

        // A second join while the first waits: only the last read answers.
        r.start_join(SessionId(1), &room("d"), 5).unwrap();
        r.wait_for_read(SessionId(1), &room("d"));
        assert_eq!(
            r.start_join(SessionId(1), &room("d"), 5),
            Ok(JoinStart::Again)
        );
        r.wait_for_read(SessionId(1), &room("d"));
        assert!(
            !r.finish_read(SessionId(1), &room("d")),
            "the first is overtaken"
        );
        assert!(
            r.finish_read(SessionId(1), &room("d")),
            "the second answers"
        );
        assert_eq!(
            r.start_join(SessionId(1), &room("d"), 5),
            Err(JoinRefused::AlreadyIn)
        );

        // Gone entirely.
        r.start_join(SessionId(1), &room("c"), 5).unwrap();
        r.wait_for_read(SessionId(1), &room("c"));
        r.remove(SessionId(1));
        assert!(!r.finish_read(SessionId(1), &room("c")));
    }

    #[test]
    fn a_detached_session_is_live_but_unaddressable() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        r.insert(SessionId(2), entry("ann", SessionKind::Chat));
        r.start_join(SessionId(1), &room("a"), 5).unwrap();
        r.start_join(SessionId(1), &room("b"), 5).unwrap();
        r.wait_for_read(SessionId(1), &room("b"));
        assert_eq!(
            r.detach(SessionId(1), 4003, "kicked"),
            Some(vec![room("a"), room("b")])
        );
        assert_eq!(r.len(), 2, "still live until it disconnects");
        assert_eq!(r.chat_sessions(&user("ann")), [SessionId(2)]);
        assert!(!r.is_in(SessionId(1), &room("a")));
        assert!(!r.finish_read(SessionId(1), &room("b")), "its join is void");
        assert_eq!(r.get(SessionId(1)).unwrap().closing, Some((4003, "kicked")));
        assert_eq!(r.detach(SessionId(1), 1001, "again"), Some(vec![]), "once");
        assert_eq!(r.get(SessionId(1)).unwrap().closing, Some((4003, "kicked")));
        assert_eq!(r.user_of(SessionId(1)), Some(&user("ann")));
        r.remove(SessionId(1));
        assert_eq!(r.chat_sessions(&user("ann")), [SessionId(2)]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.detach(SessionId(9), 4003, "gone"), None);

        r.insert(SessionId(3), entry("ann", SessionKind::Notifications));
        r.insert(SessionId(4), entry("ann", SessionKind::Notifications));
        assert_eq!(r.notification_socket_count(), 2);
        r.detach(SessionId(3), 4003, "kicked");
        assert_eq!(r.notification_socket_count(), 1);
        r.remove(SessionId(3));
        r.remove(SessionId(4));
        assert_eq!(r.notification_socket_count(), 0);
    }

    #[test]
    fn a_reinserted_id_does_not_leave_a_stale_user_entry() {
        let mut r = Registry::default();
        r.insert(SessionId(1), entry("ann", SessionKind::Chat));
        r.insert(SessionId(1), entry("bob", SessionKind::Chat));
        assert!(r.chat_sessions(&user("ann")).is_empty());
        assert_eq!(r.chat_sessions(&user("bob")), [SessionId(1)]);
        assert_eq!(r.len(), 1);
    }
}
