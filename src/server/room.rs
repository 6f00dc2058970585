//! One room's live state: who is in it (users and their sessions), the newest seq delivered and
//! its window of recent history. Pure logic with no actix in it; `ChatServer` owns the rooms
//! and does the sending. `H` is the handle used to reach a session (a `Recipient` in the
//! server, a plain value in tests).

use std::collections::{HashMap, VecDeque};

use crate::ids::{Seq, SessionId, UserId};
use crate::protocol::Frame;

/// A chat message as kept in history: its position and its encoded frame, exactly as it was
/// sent live, so a replay is byte-for-byte what live members saw.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub seq: Seq,
    pub frame: Frame,
    /// When the store stored it (Unix ms by the store's clock, its `ts_ms`): age-based
    /// retention counts from here. A cluster, which applies no age limit, leaves it 0.
    pub stored_ms: i64,
}

/// What adding a session to a room changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The user was not in the room before: announce `user_joined`.
    FirstSessionOfUser,
    /// The user was already present through another session: no announcement.
    AnotherSession,
    /// This very session was already in the room: nothing changed.
    AlreadyIn,
}

/// What removing a session from a room changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// That was the user's last session here: announce `user_left`.
    LastSessionOfUser,
    /// The user is still present through another session.
    OtherSessionsRemain,
    /// The session was not in the room.
    NotIn,
}

#[derive(Debug)]
pub struct Room<H> {
    /// Each present user and the sessions through which they are present. A user with two
    /// tabs is one member with two entries.
    members: HashMap<UserId, Vec<(SessionId, H)>>,
    /// Sessions over all members, kept so counts need no walk.
    session_count: usize,
    /// The newest seq delivered in this room (0: none yet); the store hands seqs out.
    last_seq: Seq,
    /// The newest `keep` chat messages, oldest first.
    history: VecDeque<HistoryEntry>,
    /// Most history entries kept in memory.
    keep: usize,
}

impl<H> Room<H> {
    /// A room with no members that continues from `last_seq` with `history` (oldest first).
    pub fn new(last_seq: Seq, history: Vec<HistoryEntry>, keep: usize) -> Self {
        let mut history = VecDeque::from(history);
        while history.len() > keep {
            history.pop_front();
        }
        Room {
            members: HashMap::new(),
            session_count: 0,
            last_seq,
            history,
            keep,
        }
    }

    pub fn add(&mut self, user: &UserId, session: SessionId, handle: H) -> Added {
        match self.members.get_mut(user) {
            Some(sessions) if sessions.iter().any(|(s, _)| *s == session) => Added::AlreadyIn,
            Some(sessions) => {
                sessions.push((session, handle));
                self.session_count += 1;
                Added::AnotherSession
            }
            None => {
                self.members.insert(user.clone(), vec![(session, handle)]);
                self.session_count += 1;
                Added::FirstSessionOfUser
            }
        }
    }

    pub fn remove(&mut self, user: &UserId, session: SessionId) -> Removed {
        let Some(sessions) = self.members.get_mut(user) else {
            return Removed::NotIn;
        };
        let Some(pos) = sessions.iter().position(|(s, _)| *s == session) else {
            return Removed::NotIn;
        };
        sessions.swap_remove(pos);
        self.session_count -= 1;
        if sessions.is_empty() {
            self.members.remove(user);
            Removed::LastSessionOfUser
        } else {
            Removed::OtherSessionsRemain
        }
    }

    pub fn contains(&self, user: &UserId, session: SessionId) -> bool {
        self.members
            .get(user)
            .is_some_and(|s| s.iter().any(|(id, _)| *id == session))
    }

    /// Whether `user` has a session in the room.
    pub fn has_user(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    /// No sessions left: the room can be dropped from memory.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn user_count(&self) -> usize {
        self.members.len()
    }

    pub fn session_count(&self) -> usize {
        self.session_count
    }

    /// Present users, sorted by name.
    pub fn users(&self) -> Vec<&UserId> {
        let mut users: Vec<&UserId> = self.members.keys().collect();
        users.sort_unstable();
        users
    }

    /// How many sessions `user` has in the room.
    pub fn sessions_of(&self, user: &UserId) -> usize {
        self.members.get(user).map_or(0, Vec::len)
    }

    /// Each present user with how many sessions they have in the room.
    pub fn user_sessions(&self) -> impl Iterator<Item = (&UserId, usize)> {
        self.members.iter().map(|(user, s)| (user, s.len()))
    }

    /// Every session in the room with its user and handle.
    pub fn sessions(&self) -> impl Iterator<Item = (&UserId, SessionId, &H)> {
        self.members
            .iter()
            .flat_map(|(user, sessions)| sessions.iter().map(move |(id, h)| (user, *id, h)))
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Appends a stored message (the store hands out seqs, in order) to the in-memory
    /// window, dropping the oldest past `keep`. A seq already seen is ignored.
    pub fn record(&mut self, entry: HistoryEntry) {
        if entry.seq <= self.last_seq {
            return;
        }
        self.last_seq = entry.seq;
        self.history.push_back(entry);
        if self.history.len() > self.keep {
            self.history.pop_front();
        }
    }

    /// The newest `n` messages, oldest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &HistoryEntry> {
        self.history
            .iter()
            .skip(self.history.len().saturating_sub(n))
    }

    /// Up to `limit` messages older than `before` (all when `None`), oldest first, and whether
    /// older ones remain in the window.
    pub fn page_before(&self, before: Option<Seq>, limit: usize) -> (Vec<&HistoryEntry>, bool) {
        let end = match before {
            Some(b) => self.history.partition_point(|e| e.seq < b),
            None => self.history.len(),
        };
        let start = end.saturating_sub(limit);
        (self.history.range(start..end).collect(), start > 0)
    }

    /// Every message after `after`, oldest first, when the window holds them all and they
    /// are at most `max`; `None` when the store must answer.
    pub fn catch_up(&self, after: Seq, max: usize) -> Option<Vec<&HistoryEntry>> {
        if after >= self.last_seq {
            return (after == self.last_seq).then(Vec::new);
        }
        if self.last_seq.0 - after.0 > max as u64 {
            return None;
        }
        let start = self.history.partition_point(|e| e.seq <= after);
        let first = self.history.get(start)?;
        (first.seq == after.next()).then(|| self.history.range(start..).collect())
    }

    /// Drops from the window the messages stored before `cutoff_ms`: age-based retention
    /// deletes them from the store at its next pass, and the window must never answer with
    /// what the store no longer has.
    pub fn expire_before(&mut self, cutoff_ms: i64) {
        while self
            .history
            .front()
            .is_some_and(|e| e.stored_ms < cutoff_ms)
        {
            self.history.pop_front();
        }
    }

    /// Whether the window holds every message the room ever had (so nothing older exists).
    pub fn window_reaches_start(&self) -> bool {
        match self.history.front() {
            Some(oldest) => oldest.seq == Seq(1),
            None => self.last_seq == Seq(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn entry(seq: u64) -> HistoryEntry {
        HistoryEntry {
            stored_ms: seq as i64 * 1000,
            seq: Seq(seq),
            frame: Frame::from(format!("m{seq}")),
        }
    }

    #[test]
    fn presence_counts_users_not_sessions() {
        let mut room: Room<()> = Room::new(Seq(0), vec![], 10);
        let alice = user("alice");
        assert_eq!(
            room.add(&alice, SessionId(1), ()),
            Added::FirstSessionOfUser
        );
        assert_eq!(room.add(&alice, SessionId(2), ()), Added::AnotherSession);
        assert_eq!(room.add(&alice, SessionId(2), ()), Added::AlreadyIn);
        assert_eq!((room.user_count(), room.session_count()), (1, 2));

        assert_eq!(
            room.remove(&alice, SessionId(1)),
            Removed::OtherSessionsRemain
        );
        assert_eq!(room.remove(&alice, SessionId(1)), Removed::NotIn);
        assert!(!room.is_empty());
        assert_eq!(
            room.remove(&alice, SessionId(2)),
            Removed::LastSessionOfUser
        );
        assert!(room.is_empty());
        assert_eq!(room.session_count(), 0);
    }

    #[test]
    fn users_are_sorted_and_sessions_listed() {
        let mut room: Room<u8> = Room::new(Seq(0), vec![], 10);
        room.add(&user("zed"), SessionId(1), 1);
        room.add(&user("amy"), SessionId(2), 2);
        room.add(&user("amy"), SessionId(3), 3);
        let names: Vec<&str> = room.users().iter().map(|u| u.as_str()).collect();
        assert_eq!(names, ["amy", "zed"]);
        let mut handles: Vec<u8> = room.sessions().map(|(_, _, h)| *h).collect();
        handles.sort();
        assert_eq!(handles, [1, 2, 3]);
        assert!(room.contains(&user("amy"), SessionId(3)));
        assert!(!room.contains(&user("zed"), SessionId(3)));
    }

    #[test]
    fn seq_continues_and_window_is_bounded() {
        let mut room: Room<()> = Room::new(Seq(5), vec![entry(4), entry(5)], 3);
        for seq in [6, 7, 7, 8, 9, 3] {
            room.record(entry(seq));
        }
        assert_eq!(room.last_seq(), Seq(9));
        let kept: Vec<u64> = room.recent(100).map(|e| e.seq.0).collect();
        assert_eq!(kept, [7, 8, 9]);
        let last_two: Vec<u64> = room.recent(2).map(|e| e.seq.0).collect();
        assert_eq!(last_two, [8, 9]);
    }

    #[test]
    fn catches_up_from_the_window_only_when_it_has_everything() {
        let room: Room<()> = Room::new(Seq(10), (6..=10).map(entry).collect(), 10);
        let seqs = |v: Option<Vec<&HistoryEntry>>| {
            v.map(|v| v.iter().map(|e| e.seq.0).collect::<Vec<_>>())
        };
        assert_eq!(seqs(room.catch_up(Seq(7), 100)), Some(vec![8, 9, 10]));
        assert_eq!(seqs(room.catch_up(Seq(5), 100)), Some(vec![6, 7, 8, 9, 10]));
        assert_eq!(seqs(room.catch_up(Seq(10), 100)), Some(vec![]));
        // Seq 5 is not in the window, too many asked, or a seq from the future.
        assert_eq!(seqs(room.catch_up(Seq(4), 100)), None);
        assert_eq!(seqs(room.catch_up(Seq(7), 2)), None);
        assert_eq!(seqs(room.catch_up(Seq(11), 100)), None);
    }

    #[test]
    fn initial_history_is_trimmed_to_keep() {
        let room: Room<()> = Room::new(Seq(5), (1..=5).map(entry).collect(), 2);
        let kept: Vec<u64> = room.recent(10).map(|e| e.seq.0).collect();
        assert_eq!(kept, [4, 5]);
    }

    /// Entries stored before the cutoff leave (`entry(n)` is stored at n s); the window then
    /// no longer reaches the start, and a catch-up from before it goes to the store.
    #[test]
    fn expiring_drops_what_was_stored_before_the_cutoff() {
        let seqs = |v: Option<Vec<&HistoryEntry>>| {
            v.map(|entries| entries.iter().map(|e| e.seq.0).collect::<Vec<_>>())
        };
        let mut room: Room<()> = Room::new(Seq(5), (1..=5).map(entry).collect(), 10);
        room.expire_before(3000);
        let kept: Vec<u64> = room.recent(10).map(|e| e.seq.0).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert!(!room.window_reaches_start());
        assert_eq!(seqs(room.catch_up(Seq(1), 100)), None);
        assert_eq!(seqs(room.catch_up(Seq(2), 100)), Some(vec![3, 4, 5]));
        room.expire_before(i64::MAX);
        assert_eq!(room.recent(10).count(), 0);
        assert_eq!(room.last_seq(), Seq(5), "the seq stays");
    }

    #[test]
    fn pages_walk_backwards() {
        let room: Room<()> = Room::new(Seq(10), (1..=10).map(entry).collect(), 10);
        let (page, more) = room.page_before(None, 4);
        assert_eq!(
            page.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert!(more);
        let (page, more) = room.page_before(Some(Seq(7)), 4);
        assert_eq!(
            page.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert!(more);
        let (page, more) = room.page_before(Some(Seq(3)), 4);
        assert_eq!(page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [1, 2]);
        assert!(!more);
        let (page, more) = room.page_before(Some(Seq(1)), 4);
        assert!(page.is_empty() && !more);
        assert!(room.window_reaches_start());
        let trimmed: Room<()> = Room::new(Seq(10), (5..=10).map(entry).collect(), 10);
        assert!(!trimmed.window_reaches_start());
    }
}
