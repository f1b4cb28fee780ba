//! salesloop's domain crate: what the three functions share. Domain modules do no I/O; the
//! store module holds the port and its DynamoDB and embedded adapters.

pub mod config;
pub mod conversation;
pub mod decision;
pub mod emf;
pub mod engine;
pub mod events;
pub mod experiments;
pub mod http;
pub mod ids;
pub mod learning;
pub mod llm;
pub mod model;
pub mod model_cache;
pub mod patterns;
pub mod privacy;
pub mod random;
pub mod stats;
pub mod store;
pub mod time;

pub use conversation::{
    ConversationState, Cursor, Detection, EndRequest, Exchange, ExchangeDraft, Outcome,
    OutcomeRecord, Reply, ReplySource, StrategyChoice,
};
pub use events::{Event, EventBody};
pub use ids::{ConversationId, IdError, MessageId, TenantId};
pub use model::{Beta, Model, ModelVersion};
pub use store::{AnyStore, DynamoStore, EmbeddedStore, Ended, Lease, Recorded, Store, StoreError};
pub use time::Millis;
