//! The flows over the store port, one way: read the state, decide with the domain, make one
//! conditional write, answer. When the write loses a race (another writer took the position
//! first), the flow reads again and decides again: that retry lives here, once, for every
//! adapter. Idempotency and every conflict are decided here too, as values of [`ServiceError`].

pub mod admin;
pub mod end;
pub mod labels;
pub mod lru;
pub mod message;
pub mod models;
pub mod reads;
pub mod spool;
pub mod tracking;

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use end::{Ended, end_conversation};
pub use labels::{LabelsRecorded, record_labels};
pub use message::{Plan, PlanFn, Recorded, record_exchange, record_message};
pub use models::{ConfigCache, ModelCache, Published, builtin_config, publish_model};
pub use spool::{SpoolFailure, SpoolOutcome, record_spooled};

use crate::domain::conversation::OutcomeRecord;
use crate::domain::labels::LabelError;
use crate::store::StoreError;

/// Attempts before a writer that keeps losing races reports contention.
pub const MAX_ATTEMPTS: u32 = 300;

/// Why a flow did not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    #[error("conversation not found")]
    NotFound,
    #[error("conversation has ended")]
    Ended(Box<OutcomeRecord>),
    #[error(
        "conversation reached its limit of {} turns",
        crate::domain::conversation::MAX_TURNS
    )]
    TooLong,
    #[error("this message_id was already recorded with a different text")]
    MessageIdReused,
    #[error("conversation has already ended with outcome {}", .0.outcome)]
    OutcomeConflict(Box<OutcomeRecord>),
    #[error(transparent)]
    InvalidLabels(LabelError),
    #[error("the conversation has no turn {0}")]
    TurnNotFound(u32),
    /// A label with the other verdict is stored for this (turn, pattern).
    #[error("turn {turn} already has a label for {pattern} with the other verdict")]
    LabelConflict { turn: u32, pattern: String },
    /// Too many writers raced for the same item for too long; the caller may retry.
    #[error("gave up after {0} attempts lost to concurrent writers")]
    Contention(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A short randomised pause, growing with the attempt, so racing writers spread out.
async fn back_off(attempt: u32) {
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 8;
    let ms = u64::from(attempt.min(10)) * 2 + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
