//! What is kept of a user's message: the text (default), or with `SALESLOOP_MESSAGE_TEXT=hash`
//! only `sha256:<hex>` of the tenant and the text. Detection, the decision and the reply still
//! see the text in memory; the store, the events and the logs never do.
//!
//! The hash keeps idempotency working (a repeated `message_id` is compared by hash) and lets a
//! tenant match a message it still has. It is pseudonymisation, not anonymisation: a short or
//! guessable message can be found by hashing candidates. Evidence spans are kept either way;
//! they are cue phrases of the catalog as the user wrote them.

use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::ids::TenantId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextStorage {
    #[default]
    Text,
    Hash,
}

impl TextStorage {
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<TextStorage, ConfigError> {
        match env("SALESLOOP_MESSAGE_TEXT")
            .filter(|v| !v.is_empty())
            .as_deref()
        {
            None | Some("text") => Ok(TextStorage::Text),
            Some("hash") => Ok(TextStorage::Hash),
            Some(_) => Err(ConfigError {
                variable: "SALESLOOP_MESSAGE_TEXT",
                message: "must be text or hash".into(),
            }),
        }
    }

    /// The form in which `text` is stored.
    pub fn stored(self, tenant: &TenantId, text: &str) -> String {
        match self {
            TextStorage::Text => text.to_owned(),
            TextStorage::Hash => {
                let mut hasher = Sha256::new();
                hasher.update(tenant.as_str().as_bytes());
                hasher.update([0u8]);
                hasher.update(text.as_bytes());
                let digest = hasher.finalize();
                let mut out = String::with_capacity(7 + 64);
                out.push_str("sha256:");
                for byte in digest.iter() {
                    out.push_str(&format!("{byte:02x}"));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_per_tenant_and_hide_the_text() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let hashed = TextStorage::Hash.stored(&acme, "too expensive");
        assert!(
            hashed.starts_with("sha256:") && hashed.len() == 71,
            "{hashed}"
        );
        assert!(!hashed.contains("expensive"));
        assert_eq!(hashed, TextStorage::Hash.stored(&acme, "too expensive"));
        assert_ne!(hashed, TextStorage::Hash.stored(&globex, "too expensive"));
        assert_eq!(TextStorage::Text.stored(&acme, "hi"), "hi");
        let env = |v: &'static str| move |_: &str| Some(v.to_owned());
        assert_eq!(TextStorage::from_env(&env("hash")), Ok(TextStorage::Hash));
        assert!(TextStorage::from_env(&env("plain")).is_err());
    }
}
