//! Wall-clock instants as UTC milliseconds since the Unix epoch, the unit of every event's `at`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn saturating_add_ms(self, ms: u64) -> Self {
        Millis(self.0.saturating_add(ms))
    }

    pub fn saturating_sub(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole seconds, the unit DynamoDB's TTL reads.
    pub fn as_epoch_seconds(self) -> u64 {
        self.0 / 1000
    }
}
