//! The receive path's view of the wire: byte searches instead of JSON parsing, and the
//! per-receiver `seq` checker.
//!
//! A load tool that builds a `serde_json::Value` for every delivery spends more CPU than the
//! server it measures. Here every frame stays a `&[u8]`:
//!
//! - The frame type is read from `"type":"..."`. Server frames are flat objects (no nested
//!   objects besides `welcome`'s `limits`), and JSON escaping puts a backslash before every
//!   quote inside a string value, so the pattern `"key":` can only match a real key.
//! - The tool controls the chat text: [`encode_text`] writes `lt:{sender}:{msg_no}:{send_ns}`
//!   (optionally padded with `:xxx…`), only characters that JSON never escapes, so
//!   [`parse_chat`] finds `"text":"`, reads the stamp in place, skips to the end of the string
//!   and reads `"seq":` after it.
//!
//! [`SeqChecker`] keeps one receiver's view of one room: the last `seq` seen plus a short list
//! of gaps, so a late message (out of order) can be told from a duplicate without keeping every
//! `seq` ever seen.

/// Every text the tool sends starts with this.
pub const TEXT_PREFIX: &[u8] = b"lt:";

/// What the tool puts in a chat text (or a notification message): who sent it, which of that
/// sender's messages it is, and when it was sent (nanoseconds since the tool's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u64,
    pub msg_no: u64,
    pub send_ns: u64,
}

/// Writes the text for `stamp` into `out` (cleared first), padded with `:` and `x` up to
/// `pad_to` bytes when it is shorter. Only `[0-9a-z:]`: nothing JSON or a URL query escapes.
pub fn encode_text(out: &mut String, stamp: Stamp, pad_to: usize) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "lt:{}:{}:{}",
        stamp.sender, stamp.msg_no, stamp.send_ns
    );
    if out.len() < pad_to {
        out.push(':');
        while out.len() < pad_to {
            out.push('x');
        }
    }
}

/// Reads a stamp from bytes that start with [`TEXT_PREFIX`]; the stamp ends at `:`, `"`, `&`
/// or the end of the slice. `None` for anything else.
pub fn parse_stamp(b: &[u8]) -> Option<Stamp> {
    let rest = b.strip_prefix(TEXT_PREFIX)?;
    let (sender, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (msg_no, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (send_ns, rest) = parse_u64(rest)?;
    match rest.first() {
        None | Some(b':') | Some(b'"') | Some(b'&') => Some(Stamp {
            sender,
            msg_no,
            send_ns,
        }),
        Some(_) => None,
    }
}

/// Parses leading ASCII digits; `None` when there are none or the value overflows.
fn parse_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, &b[digits..]))
}

/// How common a byte is in the server's JSON frames: quotes, colons and commas are
/// everywhere, digits and hex letters fill timestamps and UUIDs, and letters like `x` or `q`
/// are rare.
fn commonness(b: u8) -> u8 {
    match b {
        b'"' | b':' | b',' => 9,
        b'0'..=b'9' | b'a'..=b'f' | b'-' => 6,
        b'x' | b'q' | b'z' | b'j' | b'k' | b'v' | b'w' | b'y' => 1,
        _ => 3,
    }
}

/// Position of the first occurrence of `needle` in `hay`. The scan looks for the needle's
/// rarest byte (see [`commonness`]) and checks the rest around it, so that, say, `"text":"`
/// is not tried at every quote of the frame.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let anchor = (0..needle.len()).min_by_key(|&i| commonness(needle[i]))?;
    let byte = needle[anchor];
    // Candidates for the anchor byte lie in [anchor, hay.len() - needle.len() + anchor].
    let last = hay.len() - needle.len() + anchor;
    let mut i = anchor;
    while i <= last {
        i += memchr(byte, &hay[i..=last])?;
        let start = i - anchor;
        // A plain loop: needles are a few bytes, a `memcmp` call per candidate costs more.
        if hay[start..start + needle.len()]
            .iter()
            .zip(needle)
            .all(|(a, b)| a == b)
        {
            return Some(start);
        }
        i += 1;
    }
    None
}

/// Position of the first `byte` in `hay`, eight bytes at a time (the receive path's hottest
/// loop: a byte-by-byte scan for quotes cost more than the rest of the frame handling).
pub fn memchr(byte: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(byte);
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A byte of `x` is zero where `hay` has `byte`; the lowest flagged byte is always a
        // true match (false positives can only follow a true one).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == byte)
        .map(|p| offset + p)
}

/// Given `b` starting just after a string's opening quote, the index of its closing quote
/// (a quote preceded by an odd number of backslashes is escaped).
fn string_end(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let q = from + memchr(b'"', &b[from..])?;
        let backslashes = b[from..q].iter().rev().take_while(|&&c| c == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(q);
        }
        from = q + 1;
    }
}

/// The raw (still escaped) value of the string field `key` (given as `"key":"`).
pub fn str_field<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(frame, key)? + key.len();
    let len = string_end(&frame[start..])?;
    Some(&frame[start..start + len])
}

/// The value of the unsigned integer field `key` (given as `"key":`).
pub fn u64_field(frame: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(frame, key)? + key.len();
    parse_u64(&frame[start..]).map(|(v, _)| v)
}

/// The value of the number field `key` (given as `"key":`), as a float.
pub fn f64_field(frame: &[u8], key: &[u8]) -> Option<f64> {
    let start = find(frame, key)? + key.len();
    let len = frame[start..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
        .count();
    std::str::from_utf8(&frame[start..start + len])
        .ok()?
        .parse()
        .ok()
}

/// The frame's `type`, e.g. `b"chat"`.
pub fn frame_type(frame: &[u8]) -> Option<&[u8]> {
    // serde writes the tag first: `{"type":"chat",...`; fall back to a search otherwise.
    const KEY: &[u8] = b"\"type\":\"";
    if let Some(rest) = frame.strip_prefix(b"{").and_then(|r| r.strip_prefix(KEY)) {
        let end = string_end(rest)?;
        return Some(&rest[..end]);
    }
    str_field(frame, KEY)
}

/// What the tool needs from a `chat` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatInfo {
    /// `None` when the frame has no readable `seq` (a protocol violation).
    pub seq: Option<u64>,
    /// `None` when the text is not one of the tool's (someone else is talking in the room).
    pub stamp: Option<Stamp>,
}

const SEQ: &[u8] = b"\"seq\":";

/// Where `"seq":` starts, counted from the text's closing quote, in a roomcast `chat` frame.
const SEQ_AFTER_TEXT: usize =
    r#"","timestamp":"2026-11-22T09:15:02.123Z","message_id":"0b9c5a1e-4f7d-4c41-9a53-2f1d1c7d2b11","#
        .len();

/// Reads `text` and `seq` from a frame already known to be a `chat`.
pub fn parse_chat(frame: &[u8]) -> ChatInfo {
    const TEXT: &[u8] = b"\"text\":\"";
    let Some(text_start) = find(frame, TEXT).map(|i| i + TEXT.len()) else {
        return ChatInfo {
            seq: u64_field(frame, b"\"seq\":"),
            stamp: None,
        };
    };
    let body = &frame[text_start..];
    let stamp = parse_stamp(body);
    // Look for `seq` outside the text (after it, where serde puts it, else before it), so a
    // foreign text cannot fool the search.
    let after = string_end(body).map_or(&[][..], |end| &body[end..]);
    // Fast path: roomcast's field order and fixed-size timestamp and UUID put `"seq":` at a
    // known distance after the text.
    let seq = after
        .get(SEQ_AFTER_TEXT..)
        .and_then(|rest| rest.strip_prefix(SEQ))
        .and_then(parse_u64)
        .map(|(v, _)| v)
        .or_else(|| u64_field(after, SEQ))
        .or_else(|| u64_field(&frame[..text_start - TEXT.len()], SEQ));
    ChatInfo { seq, stamp }
}

/// The `chat` frame the tool sends. Room names and texts are built by the tool from characters
/// JSON never escapes, so plain formatting is exact.
pub fn chat_frame(room: &str, text: &str) -> String {
    debug_assert!(!room.contains(['"', '\\']) && !text.contains(['"', '\\']));
    format!(r#"{{"type":"chat","room_id":"{room}","text":"{text}"}}"#)
}

/// A `chat` frame with a `client_msg_id` (`fanout --ack`); the id is the tool's own, from
/// characters JSON never escapes.
pub fn chat_frame_with_id(room: &str, text: &str, client_msg_id: &str) -> String {
    debug_assert!(!client_msg_id.contains(['"', '\\']));
    format!(
        r#"{{"type":"chat","room_id":"{room}","text":"{text}","client_msg_id":"{client_msg_id}"}}"#
    )
}

/// What the tool needs from an `ack` frame: the raw `client_msg_id` and the `seq`.
pub fn parse_ack(frame: &[u8]) -> Option<(&[u8], u64)> {
    Some((
        str_field(frame, b"\"client_msg_id\":\"")?,
        u64_field(frame, SEQ)?,
    ))
}

/// How many messages an `error` frame refusing messages (`overloaded`, `rate_limited`)
/// stands for: the server answers a run of refusals with one error whose message says
/// `"...; N messages dropped since the last error"`; any other refusal is one message.
pub fn refused_count(frame: &[u8]) -> u64 {
    const TAIL: &[u8] = b" messages dropped";
    let Some(message) = str_field(frame, b"\"message\":\"") else {
        return 1;
    };
    let Some(end) = find(message, TAIL) else {
        return 1;
    };
    let digits = message[..end]
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    parse_u64(&message[end - digits..end]).map_or(1, |(n, _)| n.max(1))
}

/// The `join` frame.
pub fn join_frame(room: &str) -> String {
    format!(r#"{{"type":"join","room_id":"{room}"}}"#)
}

/// The `leave` frame.
pub fn leave_frame(room: &str) -> String {
    format!(r#"{{"type":"leave","room_id":"{room}"}}"#)
}

/// The verdict on one received `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// Exactly the previous one plus one.
    InOrder,
    /// Ahead of the expected one: this many were skipped (counted lost until they show up).
    Gap(u64),
    /// One of the skipped ones, arriving late: out of order, and no longer lost.
    Late,
    /// At or below the last one and not a skipped one: seen before.
    Duplicate,
}

/// Most gaps remembered per receiver. Past it the oldest gap is forgotten, and its messages,
/// if they ever arrive, are counted as duplicates instead of late.
const MAX_GAPS: usize = 32;

/// One receiver's `seq` bookkeeping for one room.
#[derive(Debug, Clone)]
pub struct SeqChecker {
    last: u64,
    /// Skipped ranges, inclusive, oldest first.
    gaps: Vec<(u64, u64)>,
}

/// Seqs at or above this come from a cluster (`epoch_ms × 1000 + n`); a single node's start
/// at 1 and stay far below it.
pub const CLUSTER_SEQS_FROM: u64 = 1_000_000_000_000_000;

impl SeqChecker {
    /// Starts after `last_seq` (the room's newest `seq` when this receiver joined, from
    /// `joined`), so even a lost first message is caught.
    pub fn new(last_seq: u64) -> Self {
        SeqChecker {
            last: last_seq,
            gaps: Vec::new(),
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// Messages skipped and still missing.
    #[cfg(test)]
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    pub fn observe(&mut self, seq: u64) -> SeqEvent {
        // A cluster's room starts its seqs above its Redis dataset's epoch (milliseconds ×
        // 1000), not at 1: in a room that had none, the first such seq starts the count.
        if self.last == 0 && self.gaps.is_empty() && seq >= CLUSTER_SEQS_FROM {
            self.last = seq;
            return SeqEvent::InOrder;
        }
        if seq == self.last.wrapping_add(1) {
            self.last = seq;
            return SeqEvent::InOrder;
        }
        if seq > self.last {
            let (lo, hi) = (self.last + 1, seq - 1);
            if self.gaps.len() == MAX_GAPS {
                self.gaps.remove(0);
            }
            self.gaps.push((lo, hi));
            self.last = seq;
            return SeqEvent::Gap(hi - lo + 1);
        }
        match self
            .gaps
            .iter()
            .position(|&(lo, hi)| lo <= seq && seq <= hi)
        {
            None => SeqEvent::Duplicate,
            Some(i) => {
                let (lo, hi) = self.gaps[i];
                match (seq == lo, seq == hi) {
                    (true, true) => {
                        self.gaps.remove(i);
                    }
                    (true, false) => self.gaps[i].0 = seq + 1,
                    (false, true) => self.gaps[i].1 = seq - 1,
                    (false, false) => {
                        self.gaps[i].1 = seq - 1;
                        self.gaps.insert(i + 1, (seq + 1, hi));
                    }
                }
                SeqEvent::Late
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_and_without_padding() {
        let stamp = Stamp {
            sender: 12,
            msg_no: 345,
            send_ns: 6_789_000_111,
        };
        let mut s = String::new();
        encode_text(&mut s, stamp, 0);
        assert_eq!(s, "lt:12:345:6789000111");
        assert_eq!(parse_stamp(s.as_bytes()), Some(stamp));
        for pad in [21, 22, 100, 4000] {
            encode_text(&mut s, stamp, pad);
            assert_eq!(s.len(), pad.max(20));
            assert_eq!(parse_stamp(s.as_bytes()), Some(stamp), "pad {pad}");
        }
    }

    #[test]
    fn stamp_rejects_foreign_texts() {
        for t in [
            &b"hello"[..],
            b"lt:",
            b"lt:1:2",
            b"lt:1:2:x",
            b"lt:1:2:3y",
            b"lt:a:2:3",
        ] {
            assert_eq!(parse_stamp(t), None, "{:?}", String::from_utf8_lossy(t));
        }
        // Inside a JSON frame the stamp ends at the closing quote.
        assert!(parse_stamp(b"lt:1:2:3\",\"seq\":4").is_some());
        assert_eq!(parse_stamp(b"lt:1:2:99999999999999999999999"), None);
    }

    #[test]
    fn chat_frames_are_read_without_json() {
        let f = br#"{"type":"chat","user_id":"u1","room_id":"r","text":"lt:1:2:3:xxxx","timestamp":"2026-11-22T09:15:02.123Z","message_id":"m","seq":43}"#;
        assert_eq!(frame_type(f), Some(&b"chat"[..]));
        let c = parse_chat(f);
        assert_eq!(c.seq, Some(43));
        assert_eq!(
            c.stamp,
            Some(Stamp {
                sender: 1,
                msg_no: 2,
                send_ns: 3
            })
        );
        // The server's real layout (fast path), with and without client_msg_id.
        let f = br#"{"type":"chat","user_id":"u1","room_id":"r","text":"lt:7:8:9","timestamp":"2026-11-22T09:15:02.123Z","message_id":"0b9c5a1e-4f7d-4c41-9a53-2f1d1c7d2b11","seq":123456}"#;
        assert_eq!(parse_chat(f).seq, Some(123456));
        let f = br#"{"type":"chat","user_id":"u1","room_id":"r","text":"lt:7:8:9","timestamp":"2026-11-22T09:15:02.123Z","message_id":"0b9c5a1e-4f7d-4c41-9a53-2f1d1c7d2b11","seq":5,"client_msg_id":"c"}"#;
        assert_eq!(parse_chat(f).seq, Some(5));
        // A foreign text that mimics a seq field does not fool the reader.
        let f = br#"{"type":"chat","user_id":"u","room_id":"r","text":"say \"seq\":7 \\","seq":9,"client_msg_id":"c"}"#;
        let c = parse_chat(f);
        assert_eq!((c.seq, c.stamp), (Some(9), None));
        // Field order does not matter.
        let f = br#"{"seq":5,"text":"lt:0:0:0","type":"chat"}"#;
        assert_eq!(frame_type(f), Some(&b"chat"[..]));
        assert_eq!(parse_chat(f).seq, Some(5));
    }

    #[test]
    fn ack_frames_and_chats_with_ids() {
        let f = br#"{"type":"ack","room_id":"r","client_msg_id":"c17","message_id":"0b9c5a1e-4f7d-4c41-9a53-2f1d1c7d2b11","seq":99}"#;
        assert_eq!(frame_type(f), Some(&b"ack"[..]));
        assert_eq!(parse_ack(f), Some((&b"c17"[..], 99)));
        assert_eq!(parse_ack(br#"{"type":"ack","seq":1}"#), None);
        assert_eq!(parse_ack(br#"{"type":"ack","client_msg_id":"c1"}"#), None);
        assert_eq!(
            chat_frame_with_id("r", "lt:1:2:3", "c2"),
            r#"{"type":"chat","room_id":"r","text":"lt:1:2:3","client_msg_id":"c2"}"#
        );
    }

    #[test]
    fn refusals_count_the_messages_they_stand_for() {
        let one = br#"{"type":"error","code":"overloaded","message":"too many requests waiting for the server; the message was dropped"}"#;
        assert_eq!(refused_count(one), 1);
        let many = br#"{"type":"error","code":"overloaded","message":"too many requests waiting for the server; 37 messages dropped since the last error"}"#;
        assert_eq!(refused_count(many), 37);
        let room = br#"{"type":"error","code":"overloaded","message":"room 'r' is busy: its members are behind; send again later","room_id":"r"}"#;
        assert_eq!(refused_count(room), 1);
        assert_eq!(refused_count(br#"{"type":"error","code":"x"}"#), 1);
        let zero = br#"{"type":"error","message":"0 messages dropped"}"#;
        assert_eq!(refused_count(zero), 1);
    }

    #[test]
    fn memchr_finds_the_first_byte() {
        let hay: Vec<u8> = (0..100u8).map(|i| b'a' + i % 20).collect();
        for (i, &b) in hay.iter().enumerate() {
            let expected = hay.iter().position(|&c| c == b);
            assert_eq!(memchr(b, &hay), expected, "{i}");
            assert_eq!(memchr(b, &hay[i..]), hay[i..].iter().position(|&c| c == b));
        }
        assert_eq!(memchr(b'"', b"abcdefgh\"\""), Some(8));
        assert_eq!(memchr(0x80, &[0x7f, 0x81, 0x80]), Some(2));
        assert_eq!(memchr(b'z', b""), None);
        assert_eq!(string_end(br#"a\"b\\"c"#), Some(6));
        assert_eq!(string_end(br#"\\\"x"#), None);
    }

    #[test]
    fn fields_of_other_frames() {
        let f = br#"{"type":"joined","room_id":"lobby","user_id":"a","users":["a","b"],"last_seq":42,"history":2}"#;
        assert_eq!(frame_type(f), Some(&b"joined"[..]));
        assert_eq!(str_field(f, b"\"room_id\":\""), Some(&b"lobby"[..]));
        assert_eq!(u64_field(f, b"\"last_seq\":"), Some(42));
        assert_eq!(u64_field(f, b"\"history\":"), Some(2));
        let w = br#"{"type":"welcome","limits":{"max_text_chars":4000,"rate_per_sec":20.5,"rate_burst":40}}"#;
        assert_eq!(f64_field(w, b"\"rate_per_sec\":"), Some(20.5));
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"xx\"seq\":1", b"\"seq\":"), Some(2));
        assert_eq!(find(b"\"seq\"", b"\"seq\":"), None);
        assert_eq!(find(b"qqq", b"q"), Some(0));
        assert_eq!(find(b"text\"text\":\"", b"\"text\":\""), Some(4));
    }

    #[test]
    fn seq_checker_counts_gaps_late_and_duplicates() {
        let mut c = SeqChecker::new(0);
        assert_eq!(c.observe(1), SeqEvent::InOrder);
        assert_eq!(c.observe(2), SeqEvent::InOrder);
        assert_eq!(c.observe(2), SeqEvent::Duplicate);
        assert_eq!(c.observe(6), SeqEvent::Gap(3)); // 3, 4, 5 missing
        assert_eq!(c.missing(), 3);
        assert_eq!(c.observe(4), SeqEvent::Late);
        assert_eq!(c.observe(4), SeqEvent::Duplicate);
        assert_eq!(c.observe(3), SeqEvent::Late);
        assert_eq!(c.observe(5), SeqEvent::Late);
        assert_eq!(c.missing(), 0);
        assert_eq!(c.observe(7), SeqEvent::InOrder);
        assert_eq!(c.observe(1), SeqEvent::Duplicate);
        assert_eq!(c.last(), 7);
    }

    #[test]
    fn seq_checker_starts_after_the_joined_last_seq() {
        let mut c = SeqChecker::new(42);
        assert_eq!(c.observe(44), SeqEvent::Gap(1));
        assert_eq!(c.observe(42), SeqEvent::Duplicate); // history, not live
        let mut c = SeqChecker::new(42);
        assert_eq!(c.observe(43), SeqEvent::InOrder);
    }

    #[test]
    fn seq_checker_forgets_old_gaps_beyond_its_bound() {
        let mut c = SeqChecker::new(0);
        for i in 0..(MAX_GAPS as u64 + 1) {
            assert_eq!(c.observe(2 * i + 2), SeqEvent::Gap(1));
        }
        assert_eq!(c.observe(1), SeqEvent::Duplicate); // the first gap was forgotten
        assert_eq!(c.observe(3), SeqEvent::Late);
    }
}
