//! salesloop's domain crate: what the three functions share, in four layers that import
//! downwards only.
//!
//! - `domain/`: the rules (patterns, decisions, experiments, learning, statistics, events).
//!   Pure: no I/O, and no store, HTTP or AWS crate.
//! - `store/`: the port (plain conditional reads and writes; a lost race is a value) and its
//!   adapters: DynamoDB, and the embedded SQLite file behind the `embedded` feature.
//! - `service/`: the flows over the port. A message is read state -> plan once -> one
//!   conditional append; an end likewise. The retry on a lost race lives here, once.
//! - `edge/`: what the functions face: HTTP glue, the API's errors (one mapping to status and
//!   code), EMF metrics, and each function's typed settings from the environment.
//!
//! `clients/` builds the outside clients (the AWS SDK's configuration, the optional LLM).

pub mod clients;
pub mod domain;
pub mod edge;
pub mod service;
pub mod store;

pub use domain::conversation::{
    ConversationState, Cursor, Detection, EndRequest, Exchange, ExchangeDraft, Outcome,
    OutcomeRecord, Reply, ReplySource, StrategyChoice,
};
pub use domain::events::{Event, EventBody};
pub use domain::ids::{ConversationId, IdError, MessageId, TenantId};
pub use domain::learning::ModelVersion;
pub use domain::model::{Beta, Model};
pub use domain::time::Millis;
pub use service::{Ended, Recorded, ServiceError};
#[cfg(feature = "embedded")]
pub use store::EmbeddedStore;
pub use store::{AnyStore, DynamoStore, Lease, PendingMark, Store, StoreError, Write};
