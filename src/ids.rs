//! Domain identifiers: `RoomId`, `UserId`, `SessionId` and `Seq`.
//!
//! Names that arrive from the network (`RoomId`, `UserId`) can only be built through
//! [`RoomId::parse`] / [`UserId::parse`], so every value of these types that crosses a module
//! line has already been validated. The rule is deliberately narrow (1-64 characters of
//! `A-Z a-z 0-9 _ - . :`): names show up in URLs, logs, metrics labels and Redis keys, and a
//! narrow rule keeps all of those safe without escaping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest accepted room or user name, in bytes (all allowed characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Human-readable statement of the naming rule, used in error messages.
pub const NAME_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ - . :";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the string is shared.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against the naming rule.
            pub fn parse(s: &str) -> Option<Self> {
                valid_name(s).then(|| Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Validated like [`Self::parse`]: a name that breaks the rule is an error.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(NAME_RULE))
            }
        }
    };
}

name_type!(
    /// The name of a room, as clients spell it.
    RoomId
);
name_type!(
    /// The name of a user. Several sessions (tabs, devices) may share one.
    UserId
);

/// One WebSocket connection. Unique for the life of the process: ids come from a counter,
/// never from chance, so two live sessions cannot collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The next unused id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A message's position in its room. Starts at 1; 0 means "no message yet".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "lobby", "room-1", "a.b:c_d", &"x".repeat(64)] {
            assert!(RoomId::parse(ok).is_some(), "{ok:?} should be valid");
        }
        for bad in [
            "",
            " ",
            "a b",
            "é",
            "a/b",
            "<script>",
            &"x".repeat(65),
            "tab\t",
        ] {
            assert!(UserId::parse(bad).is_none(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn session_ids_are_unique_and_increasing() {
        let a = SessionId::next();
        let b = SessionId::next();
        assert!(b > a);
    }
}
