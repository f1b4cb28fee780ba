//! Every way an API request can fail, each with its status and stable code, mapped in one
//! place: the body is `{"error": {"code", "message"}}` (and `field` for a refused
//! configuration). A fault the caller may retry (the store
//! unavailable, writers contending) is a 503 with `Retry-After`; a permanent one (stored data
//! that cannot be read) is a 500 without it, so no client retries it forever.

use lambda_http::{Body, Response};
use serde_json::json;

use crate::domain::conversation::Outcome;
use crate::service::ServiceError;
use crate::service::admin::AdminError;
use crate::store::StoreError;

/// An API error. The message is for people; clients match on [`ApiError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("{0}")]
    InvalidConversationId(String),
    #[error("{0}")]
    InvalidMessageId(String),
    #[error("{0}")]
    InvalidText(String),
    #[error("{0}")]
    InvalidOutcome(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    InvalidReason(String),
    #[error("{0}")]
    InvalidLabels(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidCursor(String),
    #[error("{0}")]
    InvalidVersion(String),
    /// A configuration refused: the field at fault and why.
    #[error("{field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("the request carries no tenant claim")]
    Unauthenticated,
    #[error("this route needs the admin right")]
    Forbidden,
    #[error("{0}")]
    InvalidTenant(String),
    #[error("no such route")]
    NotFound,
    #[error("no conversation with this id")]
    ConversationNotFound,
    #[error("no model version {0}")]
    ModelNotFound(u64),
    #[error("no experiment named {0}")]
    ExperimentNotFound(String),
    #[error("the conversation has no turn {0}")]
    TurnNotFound(u32),
    /// The route exists, for the method given here only.
    #[error("use {0}")]
    MethodNotAllowed(&'static str),
    #[error("the conversation has ended")]
    ConversationEnded,
    #[error("the conversation has reached its turn limit")]
    ConversationTooLong,
    #[error("this message_id was already used for a different text")]
    MessageIdReused,
    #[error("the conversation already ended with outcome {0}")]
    OutcomeConflict(Outcome),
    #[error("turn {turn} already has a label for {pattern} with the other verdict")]
    LabelConflict { turn: u32, pattern: String },
    #[error("the current version is {current}: read it again, then send If-Match: \"{current}\"")]
    PreconditionFailed { current: u64 },
    #[error("send If-Match with the current version (GET it first)")]
    PreconditionRequired,
    #[error("the body may hold at most {0} bytes")]
    BodyTooLarge(usize),
    #[error("the store is unavailable; retry with the same request")]
    StoreUnavailable,
    #[error("stored data could not be read; retrying will not help")]
    Internal,
}

impl ApiError {
    /// One error of every kind: what the OpenAPI contract test checks the spec against. The
    /// test below keeps it whole.
    pub fn examples() -> Vec<ApiError> {
        use ApiError::*;
        vec![
            InvalidJson(String::new()),
            InvalidField(String::new()),
            InvalidConversationId(String::new()),
            InvalidMessageId(String::new()),
            InvalidText(String::new()),
            InvalidOutcome(String::new()),
            InvalidValue(String::new()),
            InvalidReason(String::new()),
            InvalidLabels(String::new()),
            InvalidQuery(String::new()),
            InvalidCursor(String::new()),
            InvalidVersion(String::new()),
            InvalidConfig {
                field: String::new(),
                reason: String::new(),
            },
            Unauthenticated,
            Forbidden,
            InvalidTenant(String::new()),
            NotFound,
            ConversationNotFound,
            ModelNotFound(1),
            ExperimentNotFound(String::new()),
            TurnNotFound(1),
            MethodNotAllowed("GET"),
            ConversationEnded,
            ConversationTooLong,
            MessageIdReused,
            OutcomeConflict(Outcome::Won),
            LabelConflict {
                turn: 1,
                pattern: String::new(),
            },
            PreconditionFailed { current: 1 },
            PreconditionRequired,
            BodyTooLarge(0),
            StoreUnavailable,
            Internal,
        ]
    }

    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            InvalidJson(_)
            | InvalidField(_)
            | InvalidConversationId(_)
            | InvalidMessageId(_)
            | InvalidText(_)
            | InvalidOutcome(_)
            | InvalidValue(_)
            | InvalidReason(_)
            | InvalidLabels(_)
            | InvalidQuery(_)
            | InvalidCursor(_)
            | InvalidVersion(_)
            | InvalidConfig { .. } => 400,
            Unauthenticated => 401,
            InvalidTenant(_) | Forbidden => 403,
            NotFound
            | ConversationNotFound
            | ModelNotFound(_)
            | ExperimentNotFound(_)
            | TurnNotFound(_) => 404,
            MethodNotAllowed(_) => 405,
            ConversationEnded
            | ConversationTooLong
            | MessageIdReused
            | OutcomeConflict(_)
            | LabelConflict { .. } => 409,
            PreconditionFailed { .. } => 412,
            BodyTooLarge(_) => 413,
            PreconditionRequired => 428,
            Internal => 500,
            StoreUnavailable => 503,
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            InvalidField(_) => "invalid_field",
            InvalidConversationId(_) => "invalid_conversation_id",
            InvalidMessageId(_) => "invalid_message_id",
            InvalidText(_) => "invalid_text",
            InvalidOutcome(_) => "invalid_outcome",
            InvalidValue(_) => "invalid_value",
            InvalidReason(_) => "invalid_reason",
            InvalidLabels(_) => "invalid_labels",
            InvalidQuery(_) => "invalid_query",
            InvalidCursor(_) => "invalid_cursor",
            InvalidVersion(_) => "invalid_version",
            InvalidConfig { .. } => "invalid_config",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            InvalidTenant(_) => "invalid_tenant",
            NotFound => "not_found",
            ConversationNotFound => "conversation_not_found",
            ModelNotFound(_) => "model_not_found",
            ExperimentNotFound(_) => "experiment_not_found",
            TurnNotFound(_) => "turn_not_found",
            MethodNotAllowed(_) => "method_not_allowed",
            ConversationEnded => "conversation_ended",
            ConversationTooLong => "conversation_too_long",
            MessageIdReused => "message_id_reused",
            OutcomeConflict(_) => "outcome_conflict",
            LabelConflict { .. } => "label_conflict",
            PreconditionFailed { .. } => "precondition_failed",
            PreconditionRequired => "precondition_required",
            BodyTooLarge(_) => "body_too_large",
            StoreUnavailable => "store_unavailable",
            Internal => "internal",
        }
    }

    /// Seconds after which the same request may succeed; only for faults that pass.
    pub fn retry_after_secs(&self) -> Option<u32> {
        matches!(self, ApiError::StoreUnavailable).then_some(1)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::InvalidConfig { field, .. } = &self {
            error["field"] = json!(field);
        }
        let body = json!({ "error": error }).to_string();
        let mut builder = Response::builder()
            .status(self.status())
            .header("content-type", "application/json");
        if let Some(secs) = self.retry_after_secs() {
            builder = builder.header("retry-after", secs.to_string());
        }
        if let ApiError::MethodNotAllowed(allowed) = &self {
            builder = builder.header("allow", *allowed);
        }
        if let ApiError::PreconditionFailed { current } = &self {
            builder = builder.header("etag", format!("\"{current}\""));
        }
        builder
            .body(Body::Text(body.clone()))
            .unwrap_or_else(|_| Response::new(Body::Text(body)))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable,
            StoreError::Corrupt(_) => ApiError::Internal,
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::Stale { current } => ApiError::PreconditionFailed { current },
            AdminError::Invalid(invalid) => ApiError::InvalidConfig {
                field: invalid.field,
                reason: invalid.reason,
            },
            AdminError::ExperimentNotFound(name) => ApiError::ExperimentNotFound(name),
            AdminError::ModelNotFound(version) => ApiError::ModelNotFound(version),
            AdminError::Service(e) => e.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound => ApiError::ConversationNotFound,
            ServiceError::Ended(_) => ApiError::ConversationEnded,
            ServiceError::TooLong => ApiError::ConversationTooLong,
            ServiceError::MessageIdReused => ApiError::MessageIdReused,
            ServiceError::OutcomeConflict(first) => ApiError::OutcomeConflict(first.outcome),
            ServiceError::InvalidLabels(e) => ApiError::InvalidLabels(e.to_string()),
            ServiceError::TurnNotFound(turn) => ApiError::TurnNotFound(turn),
            ServiceError::LabelConflict { turn, pattern } => {
                ApiError::LabelConflict { turn, pattern }
            }
            // Writers kept winning the race: the same request may succeed in a moment.
            ServiceError::Contention(_) => ApiError::StoreUnavailable,
            ServiceError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_faults_ask_for_a_retry() {
        let unavailable = ApiError::from(StoreError::Unavailable("throttled".into()));
        assert_eq!(
            (unavailable.status(), unavailable.retry_after_secs()),
            (503, Some(1))
        );
        let corrupt = ApiError::from(StoreError::Corrupt("bad json".into()));
        assert_eq!((corrupt.status(), corrupt.code()), (500, "internal"));
        assert_eq!(corrupt.retry_after_secs(), None);
        let response = corrupt.into_response();
        assert_eq!(response.status(), 500);
        assert!(response.headers().get("retry-after").is_none());
        let contention = ApiError::from(ServiceError::Contention(300));
        assert_eq!(contention.retry_after_secs(), Some(1));
    }

    #[test]
    fn the_examples_hold_every_kind_of_error_once() {
        // A new variant breaks this match until it is given a place here and in `examples`.
        fn kind(error: &ApiError) -> usize {
            use ApiError::*;
            match error {
                InvalidJson(_) => 0,
                InvalidField(_) => 1,
                InvalidConversationId(_) => 2,
                InvalidMessageId(_) => 3,
                InvalidText(_) => 4,
                InvalidOutcome(_) => 5,
                InvalidValue(_) => 6,
                InvalidReason(_) => 7,
                InvalidLabels(_) => 8,
                InvalidQuery(_) => 9,
                InvalidCursor(_) => 10,
                InvalidVersion(_) => 11,
                InvalidConfig { .. } => 12,
                Unauthenticated => 13,
                Forbidden => 14,
                InvalidTenant(_) => 15,
                NotFound => 16,
                ConversationNotFound => 17,
                ModelNotFound(_) => 18,
                ExperimentNotFound(_) => 19,
                TurnNotFound(_) => 20,
                MethodNotAllowed(_) => 21,
                ConversationEnded => 22,
                ConversationTooLong => 23,
                MessageIdReused => 24,
                OutcomeConflict(_) => 25,
                LabelConflict { .. } => 26,
                PreconditionFailed { .. } => 27,
                PreconditionRequired => 28,
                BodyTooLarge(_) => 29,
                StoreUnavailable => 30,
                Internal => 31,
            }
        }
        let kinds: Vec<usize> = ApiError::examples().iter().map(kind).collect();
        assert_eq!(kinds, (0..32).collect::<Vec<_>>());
        let codes: std::collections::BTreeSet<&str> =
            ApiError::examples().iter().map(ApiError::code).collect();
        assert_eq!(codes.len(), 32, "two kinds share a code");
    }

    #[test]
    fn a_wrong_method_names_the_right_one() {
        let response = ApiError::MethodNotAllowed("GET").into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET");
    }
}
