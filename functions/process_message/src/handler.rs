//! `POST /conversations/{conversation_id}/messages`: parse, decide the turn, record it with its
//! events in one write, answer. Generic over the store, so tests drive it with either adapter.

use std::time::{Duration, Instant};

use lambda_http::{Body, Request, Response};
use salesloop::config::{StoreChoice, local_mode};
use salesloop::engine::{Engine, UserMessage};
use salesloop::http::{
    Action, ApiError, TenantSource, has_control_characters, is_blank, json_body, json_response,
    request_span, route, tenant,
};
use salesloop::llm::{LlmClient, LlmConfig};
use salesloop::model_cache::ModelCache;
use salesloop::privacy::TextStorage;
use salesloop::store::AnyStore;
use salesloop::{
    ConversationId, ConversationState, Exchange, MessageId, Millis, Reply, ReplySource, Store,
    StoreError, TenantId,
};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

/// The longest user message, in characters.
pub const MAX_TEXT_CHARS: usize = 4_000;

/// What a process keeps between invocations.
pub struct App<S> {
    pub store: S,
    pub engine: Engine,
    pub models: ModelCache,
    pub tenants: TenantSource,
    /// Writes replies when configured; templates otherwise, and whenever it fails.
    pub llm: Option<LlmClient>,
    /// Whether the store keeps the message text or only its hash.
    pub text_storage: TextStorage,
}

/// An LLM reply written for a turn decided in advance: it is used only if the recorded turn is
/// that turn with that strategy.
struct PreparedReply {
    turns_before: u32,
    strategy: String,
    text: String,
}

impl App<AnyStore> {
    /// Configuration, the store client and the compiled catalog, from the environment: what a
    /// process builds once and serves every request from.
    pub async fn from_env(
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, lambda_http::Error> {
        let store = StoreChoice::from_env(env)?.open().await?;
        let llm = match LlmConfig::from_env(env)? {
            Some(config) => Some(LlmClient::new(config)?),
            None => None,
        };
        Ok(App {
            store,
            engine: Engine::from_env(env)?,
            models: ModelCache::new(Duration::from_secs(30)),
            tenants: TenantSource {
                claim: env("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
                local: local_mode(env)?,
            },
            llm,
            text_storage: TextStorage::from_env(env)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message_id: String,
    text: String,
}

pub async fn handle<S: Store>(app: &App<S>, request: Request) -> Response<Body> {
    match respond(app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn respond<S: Store>(app: &App<S>, request: Request) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let parsed = parse_request(&request, &app.tenants)?;
    let span = request_span(&request, &parsed.tenant, &parsed.conversation);
    answer_message(app, parsed, started).instrument(span).await
}

/// A message request, checked: everything the handler takes from the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRequest {
    pub tenant: TenantId,
    pub conversation: ConversationId,
    pub message_id: MessageId,
    /// The text, trimmed: never empty, at most [`MAX_TEXT_CHARS`] characters.
    pub text: String,
}

/// Route, tenant and body of a request, checked without touching the store (so it can be
/// fuzzed on its own). Every refusal is an [`ApiError`] with a 4xx status.
pub fn parse_request(
    request: &Request,
    tenants: &TenantSource,
) -> Result<MessageRequest, ApiError> {
    let (conversation, action) = route(request)?;
    if action != Action::Message {
        return Err(ApiError::new(404, "not_found", "no such route"));
    }
    let tenant = tenant(request, tenants)?;
    let body: MessageBody = json_body(request)?;
    let message_id = MessageId::parse(&body.message_id)
        .map_err(|e| ApiError::bad_request("invalid_message_id", e.to_string()))?;
    let text = body.text.trim();
    if is_blank(text) {
        return Err(ApiError::bad_request("invalid_text", "text is empty"));
    }
    if has_control_characters(text) {
        return Err(ApiError::bad_request(
            "invalid_text",
            "text may not hold control characters other than tab and line breaks",
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request(
            "invalid_text",
            format!("text may hold at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(MessageRequest {
        tenant,
        conversation,
        message_id,
        text: text.to_owned(),
    })
}

async fn answer_message<S: Store>(
    app: &App<S>,
    parsed: MessageRequest,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let MessageRequest {
        tenant,
        conversation,
        message_id,
        text,
    } = parsed;
    let text = text.as_str();

    let stored_text = app.text_storage.stored(&tenant, text);
    let model = app.models.current(&app.store, &tenant).await;
    let assignment = app.engine.assign(&tenant, &conversation);
    let message = UserMessage {
        tenant: &tenant,
        conversation: &conversation,
        message_id: &message_id,
        text,
        at: Millis::now(),
    };
    let prepared = match &app.llm {
        Some(llm) => prepare_llm_reply(app, llm, &message, &model, &assignment).await,
        None => None,
    };
    let recorded = app
        .store
        .record_exchange(
            &tenant,
            &conversation,
            &message_id,
            |state: &ConversationState| {
                let (mut draft, _) =
                    app.engine
                        .plan(&message, state, model.version, &model.model, &assignment);
                if let Some(prepared) = &prepared
                    && prepared.turns_before == state.turns()
                    && prepared.strategy == draft.strategy.name
                {
                    draft.reply = Reply {
                        text: prepared.text.clone(),
                        source: ReplySource::Llm,
                    };
                }
                draft.user_text.clone_from(&stored_text);
                draft.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                draft
            },
        )
        .await;
    match recorded {
        Ok(recorded) => {
            if recorded.duplicate && recorded.exchange.draft.user_text != stored_text {
                return Err(ApiError::new(
                    409,
                    "message_id_reused",
                    "this message_id was already used for a different text",
                ));
            }
            tracing::info!(
                turn = recorded.exchange.turn,
                duplicate = recorded.duplicate,
                strategy = %recorded.exchange.draft.strategy.name,
                "message answered"
            );
            Ok(json_response(
                200,
                &answer(&conversation, &recorded.exchange),
            ))
        }
        Err(StoreError::Ended(_)) => Err(ApiError::new(
            409,
            "conversation_ended",
            "the conversation has ended",
        )),
        Err(StoreError::TooLong) => Err(ApiError::new(
            409,
            "conversation_too_long",
            "the conversation has reached its turn limit",
        )),
        Err(e) => {
            tracing::error!(error = %e, "recording the exchange failed");
            Err(ApiError::unavailable())
        }
    }
}

/// Decides the turn on the conversation as it stands and asks the LLM for its reply. Any
/// failure is logged and leaves the template reply in place; it never fails the request.
async fn prepare_llm_reply<S: Store>(
    app: &App<S>,
    llm: &LlmClient,
    message: &UserMessage<'_>,
    model: &salesloop::ModelVersion,
    assignment: &salesloop::experiments::Assignment,
) -> Option<PreparedReply> {
    let state = match app
        .store
        .conversation(message.tenant, message.conversation)
        .await
    {
        Ok(ConversationState::Ended(_)) => return None,
        Ok(state) => state,
        // The write that follows reports the outage.
        Err(_) => return None,
    };
    let (draft, _) = app
        .engine
        .plan(message, &state, model.version, &model.model, assignment);
    match llm
        .reply(message.text, &draft.strategy.name, &draft.reply.text)
        .await
    {
        Ok(text) => Some(PreparedReply {
            turns_before: state.turns(),
            strategy: draft.strategy.name,
            text,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "LLM reply failed; answering with the template");
            None
        }
    }
}

fn answer(conversation: &salesloop::ConversationId, exchange: &Exchange) -> serde_json::Value {
    let draft = &exchange.draft;
    json!({
        "conversation_id": conversation,
        "message_id": draft.message_id,
        "turn": exchange.turn,
        "patterns": draft.patterns.iter().map(|d| json!({
            "name": d.pattern, "confidence": d.confidence, "evidence": d.evidence,
        })).collect::<Vec<_>>(),
        "strategy": {"name": draft.strategy.name, "probability": draft.strategy.probability},
        "reply": {"text": draft.reply.text, "source": draft.reply.source},
        "experiments": draft.experiments,
        "model_version": draft.model_version,
    })
}
