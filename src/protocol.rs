//! The wire protocol (v1): what clients send, what the server sends, error and close codes.
//!
//! This module knows JSON and nothing else: no actix, no sockets. `docs/PROTOCOL.md` is the
//! human description of the same thing; keep the two in step.
//!
//! Decoding goes through `serde_json::Value` and hand-written field extraction rather than a
//! derived `Deserialize`, because every kind of mistake must map to its own stable error code
//! and a message that names the offending field, which serde's derived errors do not give.
//! Encoding uses derived `Serialize` on borrowed structs, once per broadcast: the resulting
//! [`Frame`] is shared (reference-counted) by every recipient.

use bytestring::ByteString;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ids::{NAME_RULE, RoomId, Seq, UserId};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// An encoded server frame: JSON text, cheap to clone (a reference count, no copy).
pub type Frame = ByteString;

/// Largest `limit` accepted in a `history` request, and the default.
pub const HISTORY_PAGE_MAX: usize = 100;
pub const HISTORY_PAGE_DEFAULT: usize = 50;
/// Longest accepted `client_msg_id`, in characters.
pub const MAX_CLIENT_MSG_ID: usize = 64;
/// Longest `token` of a `refresh`, in characters: far above any real token (tokens are
/// ASCII, so characters are bytes).
pub const MAX_TOKEN_CHARS: usize = 8192;

/// A decoded client message. `room` is `None` when the client left `room_id` out; the session
/// fills in its default room (or reports `missing_field`).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Join {
        room: Option<RoomId>,
        /// The last seq the client saw in this room: it wants exactly what followed.
        since_seq: Option<Seq>,
    },
    Leave {
        room: Option<RoomId>,
    },
    Chat {
        room: Option<RoomId>,
        text: String,
        client_msg_id: Option<String>,
    },
    Typing {
        room: Option<RoomId>,
        is_typing: bool,
    },
    GetUsers {
        room: Option<RoomId>,
    },
    Private {
        to_user: UserId,
        content: String,
    },
    History {
        room: Option<RoomId>,
        before_seq: Option<Seq>,
        limit: usize,
    },
    Ping,
    Pong,
    /// A fresh token for the same user, before the socket's token lapses.
    Refresh {
        token: String,
    },
}

impl ClientMessage {
    /// The wire name of this message's type, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::Typing { .. } => "typing",
            ClientMessage::GetUsers { .. } => "get_users",
            ClientMessage::Private { .. } => "private",
            ClientMessage::History { .. } => "history",
            ClientMessage::Ping => "ping",
            ClientMessage::Pong => "pong",
            ClientMessage::Refresh { .. } => "refresh",
        }
    }
}

/// Every way a client frame can be wrong. Each maps to one stable wire `code`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("a message must be a JSON object")]
    NotAnObject,
    #[error("a message needs a string field `type`")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` {expected}")]
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`{field}` is longer than {max} characters")]
    TextTooLong { field: &'static str, max: usize },
    #[error("`{0}` must not be empty")]
    EmptyText(&'static str),
    #[error("room_id {NAME_RULE}")]
    InvalidRoom,
    #[error("{0} {NAME_RULE}")]
    InvalidUser(&'static str),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidJson(_) => ErrorCode::InvalidJson,
            DecodeError::NotAnObject => ErrorCode::NotAnObject,
            DecodeError::MissingType => ErrorCode::MissingType,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::MissingField(_) => ErrorCode::MissingField,
            DecodeError::InvalidField { .. } => ErrorCode::InvalidField,
            DecodeError::TextTooLong { .. } => ErrorCode::TextTooLong,
            DecodeError::EmptyText(_) => ErrorCode::EmptyText,
            DecodeError::InvalidRoom => ErrorCode::InvalidRoom,
            DecodeError::InvalidUser(_) => ErrorCode::InvalidUser,
        }
    }
}

/// Declares [`ErrorCode`] with each variant's wire name written once: the enum, its
/// `as_str`, its `Serialize` (the same string) and [`ErrorCode::ALL`] all come from this list,
/// so a new code cannot be left out of any of them.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)+) => {
        /// Stable error codes sent in `error` frames. Never renumber or rename: clients match
        /// on them. docs/PROTOCOL.md lists every one (a unit test checks it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as it is written on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json",
    NotAnObject => "not_an_object",
    MissingType => "missing_type",
    UnknownType => "unknown_type",
    MissingField => "missing_field",
    InvalidField => "invalid_field",
    TextTooLong => "text_too_long",
    EmptyText => "empty_text",
    InvalidRoom => "invalid_room",
    InvalidUser => "invalid_user",
    NotInRoom => "not_in_room",
    AlreadyJoined => "already_joined",
    TooManyRooms => "too_many_rooms",
    UserOffline => "user_offline",
    RateLimited => "rate_limited",
    Overloaded => "overloaded",
    BinaryUnsupported => "binary_unsupported",
    /// The history store failed: the message was not stored (no ack), or a read failed.
    StoreUnavailable => "store_unavailable",
    /// The server is shutting down: the request was not carried out (a chat was not stored);
    /// send it again once reconnected.
    ShuttingDown => "shutting_down",
    /// Cluster mode: messages of a room were lost between nodes and are no longer kept.
    HistoryGap => "history_gap",
    /// Cluster mode: the node is not connected to the cluster's Redis, so a `private` message
    /// for a user on another node was not delivered; send it again later.
    ClusterUnavailable => "cluster_unavailable",
    /// The socket's token does not grant this: joining the room, or chatting or typing in it.
    Forbidden => "forbidden",
    /// A `refresh` token that is malformed, forged, or fails `nbf`, `aud` or `iss`.
    TokenInvalid => "token_invalid",
    /// A `refresh` token that has already expired.
    TokenExpired => "token_expired",
    /// A `refresh` token for another user than the socket's.
    TokenUserMismatch => "token_user_mismatch",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Close codes roomcast uses beyond the standard ones (1000, 1001, 1008, 1009, 1011).
pub mod close_code {
    /// The socket stopped reading and its pending output passed the bound.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The peer answered no ping within the client timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// An operator disconnected the user (`POST /api/users/{user_id}/disconnect`).
    pub const DISCONNECTED: u16 = 4003;
    /// The socket's token expired (plus the leeway) without a `refresh`.
    pub const TOKEN_EXPIRED: u16 = 4004;
    /// The user opened more sockets of this kind than `--max-sockets-per-user`: the oldest
    /// goes.
    pub const TOO_MANY_SOCKETS: u16 = 4005;
}

/// Limits that shape what `decode` accepts.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_text_chars: usize,
}

/// Parses one client text frame.
pub fn decode(text: &str, limits: DecodeLimits) -> Result<ClientMessage, DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let Some(Value::String(kind)) = obj.get("type") else {
        return Err(DecodeError::MissingType);
    };
    let f = Fields(&obj);
    Ok(match kind.as_str() {
        "join" => ClientMessage::Join {
            room: f.room()?,
            since_seq: f.opt_u64("since_seq")?.map(Seq),
        },
        "leave" => ClientMessage::Leave { room: f.room()? },
        "chat" => ClientMessage::Chat {
            room: f.room()?,
            text: f.text("text", limits.max_text_chars)?,
            client_msg_id: f.client_msg_id()?,
        },
        "typing" => ClientMessage::Typing {
            room: f.room()?,
            is_typing: f.bool("is_typing")?,
        },
        "get_users" => ClientMessage::GetUsers { room: f.room()? },
        "private" => ClientMessage::Private {
            to_user: f.user("to_user")?,
            content: f.text("content", limits.max_text_chars)?,
        },
        "history" => ClientMessage::History {
            room: f.room()?,
            before_seq: f.opt_u64("before_seq")?.map(Seq),
            limit: match f.opt_u64("limit")? {
                None => HISTORY_PAGE_DEFAULT,
                Some(n @ 1..=100) => n as usize,
                Some(_) => {
                    return Err(DecodeError::InvalidField {
                        field: "limit",
                        expected: "must be an integer from 1 to 100",
                    });
                }
            },
        },
        "ping" => ClientMessage::Ping,
        "pong" => ClientMessage::Pong,
        "refresh" => ClientMessage::Refresh {
            token: f.text("token", MAX_TOKEN_CHARS)?,
        },
        other => return Err(DecodeError::UnknownType(truncate(other, 64))),
    })
}

/// What a frame that did not decode still says about itself, so that its error can name the
/// message it refuses: its `room_id` when that is a valid room name (`default_room`, the
/// URL's, when it has none), and a `chat`'s `client_msg_id` when valid.
pub fn error_context(
    text: &str,
    default_room: Option<&RoomId>,
) -> (Option<RoomId>, Option<String>) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return (None, None);
    };
    let f = Fields(&obj);
    let room = match f.room() {
        Ok(Some(room)) => Some(room),
        Ok(None) => default_room.cloned(),
        Err(_) => None,
    };
    let chat = obj.get("type").and_then(Value::as_str) == Some("chat");
    let client_msg_id = chat.then(|| f.client_msg_id().ok().flatten()).flatten();
    (room, client_msg_id)
}

/// Field extraction with precise errors. The HTTP API reads its JSON bodies with it too, so a
/// field breaks the same rule with the same code over HTTP as over a socket.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl Fields<'_> {
    /// The field, unless it is absent or `null`.
    pub fn get(&self, field: &'static str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    pub fn room(&self) -> Result<Option<RoomId>, DecodeError> {
        match self.get("room_id") {
            None => Ok(None),
            Some(Value::String(s)) => RoomId::parse(s).map(Some).ok_or(DecodeError::InvalidRoom),
            Some(_) => Err(DecodeError::InvalidRoom),
        }
    }

    pub fn user(&self, field: &'static str) -> Result<UserId, DecodeError> {
        match self.get(field) {
            None => Err(DecodeError::MissingField(field)),
            Some(Value::String(s)) => UserId::parse(s).ok_or(DecodeError::InvalidUser(field)),
            Some(_) => Err(DecodeError::InvalidUser(field)),
        }
    }

    pub fn text(&self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        match self.get(field) {
            None => Err(DecodeError::MissingField(field)),
            Some(Value::String(s)) if s.is_empty() => Err(DecodeError::EmptyText(field)),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(DecodeError::TextTooLong { field, max })
            }
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(DecodeError::InvalidField {
                field,
                expected: "must be a string",
            }),
        }
    }

    pub fn bool(&self, field: &'static str) -> Result<bool, DecodeError> {
        match self.get(field) {
            None => Err(DecodeError::MissingField(field)),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(DecodeError::InvalidField {
                field,
                expected: "must be true or false",
            }),
        }
    }

    pub fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(DecodeError::InvalidField {
                field,
                expected: "must be a non-negative integer",
            }),
        }
    }

    pub fn client_msg_id(&self) -> Result<Option<String>, DecodeError> {
        const FIELD: &str = "client_msg_id";
        match self.get(FIELD) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_CLIENT_MSG_ID => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(DecodeError::InvalidField {
                field: FIELD,
                expected: "must be a string of 1 to 64 characters",
            }),
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The current time as the protocol writes it: RFC 3339, UTC, milliseconds.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Limits announced to the client in `welcome`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AnnouncedLimits {
    pub max_text_chars: usize,
    pub max_frame_bytes: usize,
    pub max_rooms: usize,
    pub rate_per_sec: f64,
    pub rate_burst: u32,
}

/// Every frame the server sends. Borrowed fields: build one, encode it once, drop it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome {
        user_id: &'a UserId,
        session_id: u64,
        protocol: u32,
        server: &'a str,
        limits: &'a AnnouncedLimits,
    },
    Joined {
        room_id: &'a RoomId,
        user_id: &'a UserId,
        users: &'a [&'a UserId],
        last_seq: Seq,
        history: usize,
        /// Only when the join gave `since_seq`: whether the history that follows is exactly
        /// what came after it.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// A chat with a `client_msg_id` is stored: sent to its sender only.
    Ack {
        room_id: &'a RoomId,
        client_msg_id: &'a str,
        message_id: &'a str,
        seq: Seq,
    },
    Left {
        room_id: &'a RoomId,
    },
    Chat {
        user_id: &'a UserId,
        room_id: &'a RoomId,
        text: &'a str,
        timestamp: &'a str,
        message_id: &'a str,
        seq: Seq,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
    },
    UserJoined {
        user_id: &'a UserId,
        room_id: &'a RoomId,
        timestamp: &'a str,
        message: &'a str,
    },
    UserLeft {
        user_id: &'a UserId,
        room_id: &'a RoomId,
        timestamp: &'a str,
        message: &'a str,
    },
    Typing {
        user_id: &'a UserId,
        room_id: &'a RoomId,
        is_typing: bool,
    },
    ActiveUsers {
        users: &'a [&'a UserId],
        room_id: &'a RoomId,
    },
    Private {
        from: &'a UserId,
        to_user: &'a UserId,
        message: &'a str,
        timestamp: &'a str,
        message_id: &'a str,
    },
    History {
        room_id: &'a RoomId,
        messages: &'a [&'a serde_json::value::RawValue],
        has_more: bool,
    },
    Pong,
    /// The answer to a `refresh` that was accepted: the socket now lapses at the new
    /// token's `exp` (Unix seconds).
    Refreshed {
        expires_at: u64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        room_id: Option<&'a RoomId>,
        /// The `client_msg_id` of the `chat` this error is about, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
        /// The addressee of the `private` this error is about.
        #[serde(skip_serializing_if = "Option::is_none")]
        to_user: Option<&'a UserId>,
    },
}

impl ServerMessage<'_> {
    /// Encodes the frame once; clone the result to hand it to many recipients.
    pub fn encode(&self) -> Frame {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // fallible Serialize impls.
        let json = serde_json::to_string(self).expect("server frames always serialize");
        ByteString::from(json)
    }
}

/// A notification's `notification_type`: one of a documented set, since pages use it as is
/// (the browser chat makes it a CSS class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    #[default]
    Info,
    Success,
    Warning,
    Error,
}

impl NotificationType {
    pub const ALL: [NotificationType; 4] = [
        NotificationType::Info,
        NotificationType::Success,
        NotificationType::Warning,
        NotificationType::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Info => "info",
            NotificationType::Success => "success",
            NotificationType::Warning => "warning",
            NotificationType::Error => "error",
        }
    }

    /// The type named exactly `s`, if it is one.
    pub fn parse(s: &str) -> Option<NotificationType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A `notification` frame, as the seed protocol shapes it, plus optional `data`. The HTTP
/// answer that reports a push carries this same object.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub message: String,
    pub notification_type: NotificationType,
    pub timestamp: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Notification {
    /// A new notification, stamped now with a fresh id.
    pub fn new(
        title: String,
        message: String,
        notification_type: NotificationType,
        data: Option<serde_json::Value>,
    ) -> Self {
        Notification {
            kind: "notification",
            title,
            message,
            notification_type,
            timestamp: timestamp_now(),
            id: uuid::Uuid::new_v4().to_string(),
            data,
        }
    }

    pub fn encode(&self) -> Frame {
        // A struct of strings and a JSON value always serializes.
        ByteString::from(serde_json::to_string(self).expect("notifications always serialize"))
    }
}

/// Encodes an `error` frame.
pub fn error_frame(code: ErrorCode, message: &str, room: Option<&RoomId>) -> Frame {
    ServerMessage::Error {
        code,
        message,
        room_id: room,
        client_msg_id: None,
        to_user: None,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_types_are_a_closed_set_written_as_named() {
        for t in NotificationType::ALL {
            assert_eq!(NotificationType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for bad in ["", "Info", "info ", "toast evil", "danger"] {
            assert_eq!(NotificationType::parse(bad), None, "{bad:?}");
        }
        assert_eq!(NotificationType::default(), NotificationType::Info);
    }

    const LIMITS: DecodeLimits = DecodeLimits { max_text_chars: 10 };

    fn code_of(text: &str) -> ErrorCode {
        decode(text, LIMITS).expect_err(text).code()
    }

    #[test]
    fn decodes_the_seed_client_messages() {
        assert_eq!(
            decode(r#"{"type":"chat","text":"hi"}"#, LIMITS),
            Ok(ClientMessage::Chat {
                room: None,
                text: "hi".into(),
                client_msg_id: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"typing","is_typing":true}"#, LIMITS),
            Ok(ClientMessage::Typing {
                room: None,
                is_typing: true
            })
        );
        assert_eq!(
            decode(r#"{"type":"get_users"}"#, LIMITS),
            Ok(ClientMessage::GetUsers { room: None })
        );
        assert_eq!(
            decode(
                r#"{"type":"private","to_user":"bob","content":"x"}"#,
                LIMITS
            ),
            Ok(ClientMessage::Private {
                to_user: UserId::parse("bob").unwrap(),
                content: "x".into()
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_null_is_absent() {
        assert_eq!(
            decode(
                r#"{"type":"join","room_id":"r1","extra":[1,2],"since":null}"#,
                LIMITS
            ),
            Ok(ClientMessage::Join {
                room: RoomId::parse("r1"),
                since_seq: None,
            })
        );
        assert_eq!(
            decode(r#"{"type":"chat","room_id":null,"text":"a"}"#, LIMITS)
                .unwrap()
                .kind(),
            "chat"
        );
    }

    #[test]
    fn every_mistake_has_its_code() {
        use ErrorCode::*;
        let cases = [
            ("{not json", InvalidJson),
            ("", InvalidJson),
            ("[1,2]", NotAnObject),
            ("\"chat\"", NotAnObject),
            (r#"{"text":"x"}"#, MissingType),
            (r#"{"type":7}"#, MissingType),
            (r#"{"type":"dance"}"#, UnknownType),
            (r#"{"type":"chat"}"#, MissingField),
            (r#"{"type":"chat","text":5}"#, InvalidField),
            (r#"{"type":"chat","text":""}"#, EmptyText),
            (r#"{"type":"chat","text":"01234567890"}"#, TextTooLong),
            (
                r#"{"type":"chat","text":"a","client_msg_id":3}"#,
                InvalidField,
            ),
            (r#"{"type":"typing"}"#, MissingField),
            (r#"{"type":"typing","is_typing":"yes"}"#, InvalidField),
            (r#"{"type":"join","room_id":"a b"}"#, InvalidRoom),
            (r#"{"type":"join","room_id":12}"#, InvalidRoom),
            (r#"{"type":"private","content":"x"}"#, MissingField),
            (
                r#"{"type":"private","to_user":"../x","content":"x"}"#,
                InvalidUser,
            ),
            (r#"{"type":"history","limit":0}"#, InvalidField),
            (r#"{"type":"history","before_seq":-1}"#, InvalidField),
            (r#"{"type":"refresh"}"#, MissingField),
            (r#"{"type":"refresh","token":""}"#, EmptyText),
            (r#"{"type":"refresh","token":7}"#, InvalidField),
        ];
        for (text, code) in cases {
            assert_eq!(code_of(text), code, "for {text}");
        }
    }

    #[test]
    fn refresh_carries_a_token_and_is_answered_with_its_expiry() {
        assert_eq!(
            decode(r#"{"type":"refresh","token":"a.b.c"}"#, LIMITS),
            Ok(ClientMessage::Refresh {
                token: "a.b.c".into()
            })
        );
        // The token is not held to `max_text_chars`, but to its own bound.
        let long = format!(
            r#"{{"type":"refresh","token":"{}"}}"#,
            "t".repeat(MAX_TOKEN_CHARS)
        );
        assert!(decode(&long, LIMITS).is_ok());
        let too_long = format!(
            r#"{{"type":"refresh","token":"{}"}}"#,
            "t".repeat(MAX_TOKEN_CHARS + 1)
        );
        assert_eq!(code_of(&too_long), ErrorCode::TextTooLong);
        assert_eq!(
            &*ServerMessage::Refreshed {
                expires_at: 1700000000
            }
            .encode(),
            r#"{"type":"refreshed","expires_at":1700000000}"#
        );
    }

    #[test]
    fn text_limit_counts_characters_not_bytes() {
        // Ten two-byte characters are within a ten-character limit.
        let ok = format!(r#"{{"type":"chat","text":"{}"}}"#, "é".repeat(10));
        assert!(decode(&ok, LIMITS).is_ok());
    }

    #[test]
    fn chat_frame_keeps_the_seed_fields() {
        let user = UserId::parse("alice").unwrap();
        let room = RoomId::parse("lobby").unwrap();
        let frame = ServerMessage::Chat {
            user_id: &user,
            room_id: &room,
            text: "<b>hi</b>",
            timestamp: "2026-11-22T09:15:02.123Z",
            message_id: "id-1",
            seq: Seq(7),
            client_msg_id: None,
        }
        .encode();
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"chat","user_id":"alice","room_id":"lobby","text":"<b>hi</b>",
                "timestamp":"2026-11-22T09:15:02.123Z","message_id":"id-1","seq":7})
        );
    }

    #[test]
    fn error_codes_are_snake_case() {
        let frame = error_frame(ErrorCode::NotInRoom, "nope", None);
        assert_eq!(
            &*frame,
            r#"{"type":"error","code":"not_in_room","message":"nope"}"#
        );
    }

    #[test]
    fn every_error_code_is_distinct_snake_case_and_documented() {
        let doc = include_str!("../docs/PROTOCOL.md");
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let wire = code.as_str();
            assert!(seen.insert(wire), "{wire} is listed twice");
            assert!(
                wire.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{wire} is not snake_case"
            );
            assert_eq!(serde_json::to_value(code).unwrap(), wire);
            assert!(
                doc.contains(&format!("`{wire}`")),
                "docs/PROTOCOL.md does not list the error code `{wire}`"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = timestamp_now();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
    }
}
