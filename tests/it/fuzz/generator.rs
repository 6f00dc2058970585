//! The frames: valid client messages in a socket's rooms, mutated as JSON and as text,
//! random text, binary frames and pings, from a seeded xorshift generator.

use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::Limits;

/// xorshift64*: small, fast, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Spreads a small number over 64 bits (SplitMix64's finalizer).
pub(super) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Client message types, weighted: chats and joins are what change state.
#[rustfmt::skip]
const KINDS: &[&str] = &[
    "chat", "chat", "chat", "chat", "join", "join", "join", "leave", "leave", "typing",
    "get_users", "history", "private", "ping", "pong",
];
/// Fields a client message may have.
#[rustfmt::skip]
const FIELDS: &[&str] = &[
    "type", "room_id", "text", "client_msg_id", "is_typing", "since_seq", "before_seq", "limit",
    "to_user", "content",
];
/// Characters that tend to break things: control characters, JSON syntax, multi-byte,
/// combining, zero-width, right-to-left, the byte order mark, the last scalar values.
#[rustfmt::skip]
const ODD_CHARS: &[char] = &[
    '\0', '\u{1}', '\u{8}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '"', '\\', '/', '{', '}',
    '[', ']', ':', ',', 'é', 'ß', '中', '🎉', '\u{200b}', '\u{202e}', '\u{fffd}', '\u{301}',
    '\u{feff}', '\u{10ffff}', '\u{d7ff}', '\u{e000}',
];
/// Text spliced into a frame as it is: escapes JSON rejects (lone surrogates), numbers out of
/// every range, JSON syntax.
#[rustfmt::skip]
const RAW: &[&str] = &[
    "\\ud800", "\\udc00", "\\u0000", "\\uD83D\\uDE00", "18446744073709551616", "-1", "1e999",
    "-0", "0.5", "NaN", "Infinity", "null", "true", "{", "}", "[", "]", ",", ":", "\"", "\\",
    "\"type\":\"chat\"", "\u{feff}",
];

/// Makes one socket's frames.
pub(super) struct Generator {
    rng: Rng,
    limits: Limits,
    /// The socket's usual rooms.
    rooms: Vec<String>,
    /// Addressees of private messages: the socket's own user, and users never online.
    to_users: Vec<String>,
    /// For `client_msg_id`s never used before.
    fresh: u64,
}

impl Generator {
    pub(super) fn new(
        seed: u64,
        limits: Limits,
        rooms: Vec<String>,
        to_users: Vec<String>,
    ) -> Self {
        Generator {
            rng: Rng::new(seed),
            limits,
            rooms,
            to_users,
            fresh: 0,
        }
    }

    pub(super) fn frame(&mut self) -> Message {
        let text = match self.rng.below(100) {
            0..25 => Value::Object(self.message()).to_string(),
            25..80 => {
                let mut v = Value::Object(self.message());
                for _ in 0..=self.rng.below(3) {
                    self.mutate(&mut v);
                }
                let mut text = v.to_string();
                if self.rng.one_in(4) {
                    self.mutate_text(&mut text);
                }
                text
            }
            80..88 => {
                let mut text = Value::Object(self.message()).to_string();
                for _ in 0..=self.rng.below(3) {
                    self.mutate_text(&mut text);
                }
                text
            }
            88..95 => self.random_text(),
            95..98 => {
                let bytes = match self.rng.one_in(3) {
                    true => Value::Object(self.message()).to_string().into_bytes(),
                    false => (0..self.rng.below(256))
                        .map(|_| self.rng.next() as u8)
                        .collect(),
                };
                return Message::binary(bytes);
            }
            _ => {
                let payload: Vec<u8> = (0..self.rng.below(126))
                    .map(|_| self.rng.next() as u8)
                    .collect();
                return Message::Ping(payload.into());
            }
        };
        Message::text(self.fit(text))
    }

    /// Cuts `text` to the frame limit (at a character boundary): no frame may earn a 1009.
    fn fit(&self, mut text: String) -> String {
        let mut end = text.len().min(self.limits.max_frame_bytes);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text
    }

    /// A valid client message, as docs/PROTOCOL.md shows them, in this socket's rooms.
    fn message(&mut self) -> Map<String, Value> {
        let kind = *self.rng.pick(KINDS);
        let mut m = Map::new();
        m.insert("type".into(), kind.into());
        if !matches!(kind, "private" | "ping" | "pong") && !self.rng.one_in(10) {
            m.insert("room_id".into(), self.rng.pick(&self.rooms).clone().into());
        }
        match kind {
            "join" if self.rng.one_in(3) => {
                let since = *self.rng.pick(&[0, 1, 3, 7, 20, u64::MAX, 1 << 53]);
                m.insert("since_seq".into(), since.into());
            }
            "chat" => {
                m.insert("text".into(), self.short_text().into());
                if self.rng.one_in(2) {
                    // Some repeat: a resend must be acknowledged again, and posted once.
                    let id = match self.rng.one_in(4) {
                        true => self.rng.below(40) as u64,
                        false => {
                            self.fresh += 1;
                            1000 + self.fresh
                        }
                    };
                    m.insert("client_msg_id".into(), format!("c-{id}").into());
                }
            }
            "typing" => {
                m.insert("is_typing".into(), self.rng.one_in(2).into());
            }
            "history" => {
                if self.rng.one_in(2) {
                    m.insert("before_seq".into(), self.rng.below(60).into());
                }
                if self.rng.one_in(2) {
                    m.insert("limit".into(), (1 + self.rng.below(100)).into());
                }
            }
            "private" => {
                m.insert(
                    "to_user".into(),
                    self.rng.pick(&self.to_users).clone().into(),
                );
                m.insert("content".into(), self.short_text().into());
            }
            _ => {}
        }
        m
    }

    /// One change to a message's JSON.
    fn mutate(&mut self, v: &mut Value) {
        let Value::Object(m) = v else {
            return;
        };
        let key = match self.rng.one_in(3) || m.is_empty() {
            true => (*self.rng.pick(FIELDS)).to_owned(),
            false => m
                .keys()
                .nth(self.rng.below(m.len()))
                .expect("a key")
                .clone(),
        };
        if self.rng.one_in(60) {
            let long = self.long_string();
            m.insert(key, long.into());
            return;
        }
        match self.rng.below(8) {
            0 => {
                m.remove(&key);
            }
            1 | 2 => {
                let value = self.value(0);
                m.insert(key, value);
            }
            // Another type's name, or the type field made something else.
            3 => {
                let kind = match self.rng.one_in(3) {
                    true => self.value(0),
                    false => (*self.rng.pick(KINDS)).into(),
                };
                m.insert("type".into(), kind);
            }
            4 => {
                let inner = m.remove(&key).unwrap_or(Value::Null);
                let depth = 1 + self.rng.below(200);
                m.insert(key, self.nest(inner, depth));
            }
            5 => {
                let mut s = m.get(&key).and_then(Value::as_str).unwrap_or("").to_owned();
                for _ in 0..=self.rng.below(3) {
                    let at = char_boundary(&s, self.rng.below(s.len() + 1));
                    s.insert(at, *self.rng.pick(ODD_CHARS));
                }
                m.insert(key, s.into());
            }
            6 => {
                let extra = self.random_string(12);
                let value = self.value(0);
                m.insert(extra, value);
            }
            _ => {
                *v = match self.rng.below(3) {
                    0 => Value::Array(vec![v.take()]),
                    1 => v.to_string().into(),
                    _ => self.value(0),
                }
            }
        }
    }

    /// One change to a frame's text.
    fn mutate_text(&mut self, text: &mut String) {
        let at = char_boundary(text, self.rng.below(text.len() + 1));
        match self.rng.below(6) {
            0 => text.truncate(at),
            1 => {
                let raw = *self.rng.pick(RAW);
                text.insert_str(at, raw);
            }
            2 => text.insert(at, *self.rng.pick(ODD_CHARS)),
            3 => {
                let end = char_boundary(text, at + self.rng.below(16));
                text.replace_range(at..end, "");
            }
            4 => {
                let end = char_boundary(text, at + self.rng.below(32));
                let copy = text[at..end].to_owned();
                text.insert_str(at, &copy);
            }
            _ => {
                *text = format!(
                    "{}{text}{}",
                    self.rng.pick(&[" ", "\u{feff}", "\n", ""]),
                    self.rng.pick(&[" ", "x", "}", ""])
                )
            }
        }
    }

    /// A JSON value of any type: numbers at and past every limit, odd strings, containers.
    fn value(&mut self, depth: usize) -> Value {
        match self.rng.below(if depth < 3 { 10 } else { 7 }) {
            0 => Value::Null,
            1 => self.rng.one_in(2).into(),
            2 => json!(self.rng.below(300) as i64 - 50),
            3 => self
                .rng
                .pick(&[
                    json!(u64::MAX),
                    json!(i64::MIN),
                    json!(i64::MAX),
                    json!(9_007_199_254_740_993_u64),
                    json!(1e308),
                    json!(-1e308),
                    json!(5e-324),
                    json!(-0.0),
                    json!(0.5),
                ])
                .clone(),
            4 | 5 => self.random_string(20).into(),
            6 => match self.rng.below(3) {
                0 => (*self.rng.pick(KINDS)).into(),
                1 => self.rng.pick(&self.rooms).clone().into(),
                _ => self.rng.pick(&self.to_users).clone().into(),
            },
            7 => Value::Array(
                (0..self.rng.below(4))
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            8 => {
                let n = self.rng.below(4);
                Value::Object(
                    (0..n)
                        .map(|_| ((*self.rng.pick(FIELDS)).to_owned(), self.value(depth + 1)))
                        .collect(),
                )
            }
            _ => {
                let inner = self.value(depth + 1);
                let depth = 1 + self.rng.below(200);
                self.nest(inner, depth)
            }
        }
    }

    /// `inner` inside `depth` arrays and objects (past 128, more than the parser takes).
    fn nest(&mut self, inner: Value, depth: usize) -> Value {
        (0..depth).fold(inner, |v, _| match self.rng.one_in(2) {
            true => Value::Array(vec![v]),
            // Not `json!`, which would copy `v` at every level.
            false => Value::Object(Map::from_iter([("x".to_owned(), v)])),
        })
    }

    /// A string of 0 to `max` characters, odd ones included.
    fn random_string(&mut self, max: usize) -> String {
        (0..self.rng.below(max + 1)).map(|_| self.char()).collect()
    }

    /// A chat's text: mostly plain, sometimes odd, rarely empty.
    fn short_text(&mut self) -> String {
        match self.rng.one_in(3) {
            true => self.random_string(40),
            false => format!("hello {}", self.rng.below(1000)),
        }
    }

    fn char(&mut self) -> char {
        match self.rng.below(4) {
            0 => *self.rng.pick(ODD_CHARS),
            1 => loop {
                if let Some(c) = char::from_u32(self.rng.below(0x11_0000) as u32) {
                    break c;
                }
            },
            _ => (b' ' + self.rng.below(95) as u8) as char,
        }
    }

    /// A string at the text limit, just past it, or as long as a frame can carry.
    fn long_string(&mut self) -> String {
        let c = *self.rng.pick(&['x', 'é', '中', '🎉', '\u{1}', '"']);
        // What the character costs in JSON: control characters and quotes are escaped.
        let cost = match c {
            '\u{1}' => 6,
            '"' => 2,
            c => c.len_utf8(),
        };
        let max = self.limits.decode.max_text_chars;
        let most = (self.limits.max_frame_bytes - 512) / cost;
        let n = match self.rng.below(4) {
            0 => max,
            1 => max + 1,
            2 => max - 1,
            _ => most - self.rng.below(most / 2),
        };
        std::iter::repeat_n(c, n.min(most)).collect()
    }

    /// Text that is mostly not JSON: odd characters and raw JSON pieces.
    fn random_text(&mut self) -> String {
        let mut text = String::new();
        for _ in 0..self.rng.below(40) {
            match self.rng.one_in(3) {
                true => {
                    let raw = *self.rng.pick(RAW);
                    text.push_str(raw);
                }
                false => text.push(self.char()),
            }
        }
        text
    }
}

/// The nearest character boundary of `s` at or before `at`.
fn char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}
