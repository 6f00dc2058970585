//! Fuzzes `roomcast::protocol::decode`, the parser every client text frame goes through,
//! with the limits the server starts with.
//!
//! Asserted for every input: no panic; a decoded message's kind is a client message type
//! docs/PROTOCOL.md lists, equal to the input's `type`, and its fields are within the
//! documented bounds; an error's code is one of `ErrorCode::ALL`, with a message for people.
//!
//! Inputs longer than `--max-frame-bytes` are skipped: the session closes such a frame (1009)
//! before anything decodes it. Bytes that are not UTF-8 are decoded as their lossy
//! conversion: the session closes those too (1007), but byte-level mutations still reach the
//! parser that way.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::{
    ClientMessage, DecodeLimits, ErrorCode, HISTORY_PAGE_MAX, MAX_CLIENT_MSG_ID, decode,
};
use serde_json::Value;

/// What the server is started with when given no flags.
struct Limits {
    decode: DecodeLimits,
    max_frame_bytes: usize,
}

fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let config = roomcast::Config::parse_flags_only(["roomcast"]).expect("the defaults");
        Limits {
            decode: config.decode_limits(),
            max_frame_bytes: config.max_frame_bytes,
        }
    })
}

/// The client message types docs/PROTOCOL.md lists: the first column of the table under
/// "Messages the client sends".
fn documented_kinds() -> &'static [String] {
    static KINDS: OnceLock<Vec<String>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let section = doc
            .split("## Messages the client sends")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/PROTOCOL.md has a section on client messages");
        let kinds: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .map(str::to_owned)
            .collect();
        assert!(
            kinds.len() >= 9,
            "client message table not found: {kinds:?}"
        );
        kinds
    })
}

fn check(text: &str) {
    let limits = limits();
    if text.len() > limits.max_frame_bytes {
        return;
    }
    match decode(text, limits.decode) {
        Ok(msg) => check_message(text, &msg, limits.decode),
        Err(e) => {
            let wire = e.code().as_str();
            assert!(
                ErrorCode::ALL.iter().any(|c| c.as_str() == wire),
                "{wire} is not a documented code"
            );
            assert!(!e.to_string().is_empty(), "{wire} without a message");
        }
    }
}

fn check_message(text: &str, msg: &ClientMessage, limits: DecodeLimits) {
    let kind = msg.kind();
    assert!(
        documented_kinds().iter().any(|k| k == kind),
        "decoded to an undocumented kind {kind}"
    );
    let value: Value = serde_json::from_str(text).expect("decode accepted it, so it is JSON");
    assert_eq!(value["type"], kind, "decoded as another type than it names");
    let text_ok = |s: &str| !s.is_empty() && s.chars().count() <= limits.max_text_chars;
    match msg {
        ClientMessage::Chat {
            text,
            client_msg_id,
            ..
        } => {
            assert!(text_ok(text), "chat text out of bounds");
            if let Some(id) = client_msg_id {
                let n = id.chars().count();
                assert!((1..=MAX_CLIENT_MSG_ID).contains(&n), "client_msg_id of {n}");
            }
        }
        ClientMessage::Private { content, .. } => assert!(text_ok(content), "content bounds"),
        ClientMessage::History { limit, .. } => {
            assert!(
                (1..=HISTORY_PAGE_MAX).contains(limit),
                "history limit {limit}"
            )
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
