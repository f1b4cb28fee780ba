//! What is kept of a user's message: the text (default), or with `SALESLOOP_MESSAGE_TEXT=hash`
//! only `sha256:<hex>` of the tenant and the text. Detection, the decision and the reply still
//! see the text in memory; the store, the events and the logs never do.
//!
//! The hash keeps idempotency working (a repeated `message_id` is compared by hash) and lets a
//! tenant match a message it still has. It is pseudonymisation, not anonymisation: a short or
//! guessable message can be found by hashing candidates. Evidence spans are kept either way;
//! they are cue phrases of the catalog as the user wrote them.

use sha2::{Digest, Sha256};

use crate::domain::ids::TenantId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextStorage {
    #[default]
    Text,
    Hash,
}

impl TextStorage {
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

/// Whether a stored text is the hash form (`sha256:` and 64 lower-case hex digits) rather than
/// the text itself.
pub fn is_hashed(stored: &str) -> bool {
    stored.len() == 71
        && stored.starts_with("sha256:")
        && stored[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        assert!(is_hashed(&hashed));
        assert!(!is_hashed("too expensive"));
        assert!(!is_hashed(&hashed.to_uppercase()));
    }
}
