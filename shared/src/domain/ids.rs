//! Identifiers parsed once at the edge. Inside the domain an id is always valid, so store keys
//! built from them can never collide (no id contains the `#` that separates key parts).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may only hold the characters A-Z a-z 0-9 . _ -")]
    BadCharacter { kind: &'static str },
    #[error("{kind} needs at least one letter or digit")]
    NoAlphanumeric { kind: &'static str },
}

/// The longest id we accept, in bytes (all accepted characters are ASCII).
pub const MAX_ID_LEN: usize = 64;

/// Checks a name against the id rules (1 to 64 characters of `[A-Za-z0-9._-]`, at least one a
/// letter or digit): for names kept as plain strings (experiments, variants, strategies).
pub fn check(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            max: MAX_ID_LEN,
        });
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IdError::BadCharacter { kind });
    }
    // Ids such as "." or ".." or "-" are legal characters but look like path segments or
    // flags wherever an id ends up; refuse them.
    if !raw.bytes().any(|b| b.is_ascii_alphanumeric()) {
        return Err(IdError::NoAlphanumeric { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses an id: 1 to 64 characters of `[A-Za-z0-9._-]`, at least one of them a
            /// letter or digit.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check($kind, raw)?;
                Ok(Self(raw.to_owned()))
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

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The customer a request acts for; it comes from the authorizer, never from a request body.
    TenantId,
    "tenant"
);
id_type!(
    /// A conversation, named by the client.
    ConversationId,
    "conversation_id"
);
id_type!(
    /// The client's idempotency key for one user message.
    MessageId,
    "message_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_up_to_64_chars() {
        assert!(ConversationId::parse("c-42").is_ok());
        assert!(MessageId::parse("m.0001_A-z").is_ok());
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(
            ConversationId::parse(""),
            Err(IdError::Empty {
                kind: "conversation_id"
            })
        );
        assert!(matches!(
            ConversationId::parse(&"a".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
        for dots in [".", "..", "-", "._-"] {
            assert!(matches!(
                ConversationId::parse(dots),
                Err(IdError::NoAlphanumeric { .. })
            ));
        }
        for bad in ["a#b", "a/b", "a b", "é", "a\u{200b}", "a\0"] {
            assert!(
                matches!(MessageId::parse(bad), Err(IdError::BadCharacter { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn deserializing_applies_the_same_rules() {
        let ok: MessageId = serde_json::from_str("\"m1\"").unwrap();
        assert_eq!(ok.as_str(), "m1");
        assert!(serde_json::from_str::<MessageId>("\"m#1\"").is_err());
    }
}
