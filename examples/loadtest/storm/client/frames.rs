//! What a storm client does with each frame: `joined` (a first join, or a rejoin answered
//! `recovered: true` or `false`), `chat` (history after a rejoin, then live: every `seq`
//! through the room's checker, its own chats matched with their acks), `ack`, `error`.

use std::sync::atomic::Ordering;

use super::{Client, bump};
use crate::wire::{self, SeqChecker, SeqEvent};

impl Client<'_> {
    fn room_of(&self, f: &[u8]) -> Option<usize> {
        let id = wire::str_field(f, b"\"room_id\":\"")?;
        self.rooms
            .iter()
            .position(|r| self.sh.rooms[r.global].as_bytes() == id)
    }

    pub(super) fn on_frame(&mut self, f: &[u8]) -> Result<(), String> {
        match wire::frame_type(f) {
            Some(b"chat") => self.on_chat(f),
            Some(b"joined") => self.on_joined(f),
            Some(b"ack") => self.on_ack(f),
            Some(b"error") => self.on_error(f),
            _ => Ok(()),
        }
    }

    fn on_joined(&mut self, f: &[u8]) -> Result<(), String> {
        let Some(j) = self.room_of(f) else {
            return Ok(());
        };
        let last = wire::u64_field(f, b"\"last_seq\":").unwrap_or(0);
        let history = wire::u64_field(f, b"\"history\":").unwrap_or(0);
        let room = &mut self.rooms[j];
        room.history_left = history;
        room.ready = history == 0;
        match room.checker {
            None => {
                room.checker = Some(SeqChecker::new(last));
                room.check_history = false;
            }
            Some(_) if wire::find(f, b"\"recovered\":false").is_some() => {
                self.r.n.rejoins_not_recovered += 1;
                room.checker = Some(SeqChecker::new(last));
                room.check_history = false;
            }
            Some(_) => {
                self.r.n.rejoins_recovered += 1;
                room.check_history = true;
            }
        }
        Ok(())
    }

    fn on_chat(&mut self, f: &[u8]) -> Result<(), String> {
        let Some(j) = self.room_of(f) else {
            return Ok(());
        };
        let info = wire::parse_chat(f);
        let seq = info.seq.ok_or("a chat frame without a seq")?;
        if let Some(stamp) = info.stamp
            && stamp.sender == self.i as u64
            && let Some(seen) = self.echo.get_mut(stamp.msg_no as usize)
        {
            if *seen == 0 {
                *seen = seq;
            } else if *seen != seq {
                self.r.n.posted_twice += 1;
            }
        }
        let room = &mut self.rooms[j];
        if room.history_left > 0 {
            room.history_left -= 1;
            room.ready = room.history_left == 0;
            if !room.check_history {
                return Ok(());
            }
        }
        let Some(checker) = room.checker.as_mut() else {
            return Ok(());
        };
        match checker.observe(seq) {
            SeqEvent::InOrder => {}
            SeqEvent::Gap(n) => room.skipped += n,
            SeqEvent::Late => room.skipped = room.skipped.saturating_sub(1),
            SeqEvent::Duplicate => self.r.n.duplicated += 1,
        }
        Ok(())
    }

    fn on_ack(&mut self, f: &[u8]) -> Result<(), String> {
        let (id, seq) = wire::parse_ack(f).ok_or("an ack without client_msg_id or seq")?;
        let Some(msg_no) = id
            .strip_prefix(b"m")
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<usize>().ok())
        else {
            return Ok(());
        };
        let Some(acked) = self.ack.get_mut(msg_no) else {
            return Ok(());
        };
        if *acked == 0 {
            *acked = seq;
            self.r.n.chats_acked += 1;
            self.sh.acks.fetch_add(1, Ordering::Relaxed);
        } else if *acked != seq {
            self.r.n.ack_conflicts += 1;
        }
        if let Some(at) = self
            .pending
            .iter()
            .position(|p| p.msg_no as usize == msg_no)
        {
            let p = self.pending.swap_remove(at);
            self.sh.room_max_acked[self.rooms[p.room].global].fetch_max(seq, Ordering::SeqCst);
        }
        Ok(())
    }

    fn on_error(&mut self, f: &[u8]) -> Result<(), String> {
        let code = wire::str_field(f, b"\"code\":\"").unwrap_or(b"?");
        bump(&mut self.r.errors, &String::from_utf8_lossy(code));
        if let Some(id) = wire::str_field(f, b"\"client_msg_id\":\"") {
            for p in &mut self.pending {
                if id == format!("m{}", p.msg_no).as_bytes() {
                    p.sent = false;
                }
            }
        }
        Ok(())
    }
}
