//! `POST /conversations/{conversation_id}/messages`: parse, then one flow: read the
//! conversation, plan the turn once (the LLM's reply included), append it with its events in
//! one conditional write, answer. Generic over the store, so tests drive it with either adapter.

use std::time::Instant;

use lambda_http::{Body, Request, Response};
use salesloop::clients::llm::LlmClient;
use salesloop::domain::engine::{Engine, EngineError, UserMessage};
use salesloop::domain::privacy::TextStorage;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    Action, TenantSource, has_control_characters, is_blank, json_body, json_response, request_span,
    route, tenant,
};
use salesloop::edge::settings::{ConfigError, MessageSettings};
use salesloop::service::tracking::FailedWrites;
use salesloop::service::{ConfigCache, ModelCache, Plan, ServiceError, record_message};
use salesloop::store::{AnyStore, FailedWrite};
use salesloop::{
    ConversationId, ConversationState, Exchange, ExchangeDraft, MessageId, Millis, Reply,
    ReplySource, Store, TenantId,
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
    /// Each tenant's experiments and playbook, cached as the models are.
    pub configs: ConfigCache,
    pub tenants: TenantSource,
    /// Writes replies when configured; templates otherwise, and whenever it fails.
    pub llm: Option<LlmClient>,
    /// Whether the store keeps the message text or only its hash.
    pub text_storage: TextStorage,
    /// Writes that failed, until they are counted in the store.
    pub failed_writes: FailedWrites,
}

impl<S> App<S> {
    /// The app for `settings` on an open store.
    pub fn new(store: S, settings: &MessageSettings) -> Result<Self, lambda_http::Error> {
        let engine = Engine::new(
            settings.threshold,
            settings.catalog.as_deref(),
            settings.detector.as_deref(),
        )
        .map_err(|e| match e {
            EngineError::Catalog(why) => ConfigError::new("PATTERN_CATALOG", why),
            EngineError::Detector(why) => ConfigError::new("PATTERN_DETECTOR", why),
        })?;
        let llm = match &settings.llm {
            Some(config) => Some(LlmClient::new(config.clone())?),
            None => None,
        };
        Ok(App {
            store,
            engine,
            models: ModelCache::new(settings.api.cache_age),
            configs: ConfigCache::new(settings.api.cache_age),
            tenants: settings.api.tenants.clone(),
            llm,
            text_storage: settings.text_storage,
            failed_writes: FailedWrites::default(),
        })
    }
}

impl App<AnyStore> {
    /// Settings, the store client, the LLM's key (read from SSM when `LLM_API_KEY_PARAMETER`
    /// names it: `crate::llm_key`) and the compiled catalog, from the environment: what a
    /// process builds once and serves every request from. A key that cannot be read is an
    /// error, which fails the init.
    pub async fn from_env(
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, lambda_http::Error> {
        let mut settings = MessageSettings::from_env(env)?;
        // The key's read and the store's warm-up read go out together.
        let (key, store) = tokio::join!(
            crate::llm_key::read_for(&settings),
            settings.api.store.open()
        );
        if let Some(key) = key? {
            crate::llm_key::set(&mut settings, key);
        }
        App::new(store?, &settings)
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
        return Err(ApiError::NotFound);
    }
    let tenant = tenant(request, tenants)?;
    let body: MessageBody = json_body(request)?;
    let message_id = MessageId::parse(&body.message_id)
        .map_err(|e| ApiError::InvalidMessageId(e.to_string()))?;
    let text = body.text.trim();
    if is_blank(text) {
        return Err(ApiError::InvalidText("text is empty".into()));
    }
    if has_control_characters(text) {
        return Err(ApiError::InvalidText(
            "text may not hold control characters other than tab and line breaks".into(),
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::InvalidText(format!(
            "text may hold at most {MAX_TEXT_CHARS} characters"
        )));
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
    let stored_text = app.text_storage.stored(&tenant, &text);
    let planner = TurnPlanner {
        app,
        message: UserMessage {
            tenant: &tenant,
            conversation: &conversation,
            message_id: &message_id,
            text: &text,
            at: Millis::now(),
        },
        stored_text: &stored_text,
        llm_asked: false,
        llm_reply: None,
        started,
    };
    let recorded = record_message(
        &app.store,
        &tenant,
        &conversation,
        &message_id,
        &stored_text,
        planner,
    )
    .await;
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(ServiceError::Store(e)) if e.is_transient() => {
            tracing::error!(error = %e, "recording the exchange failed");
            app.failed_writes.note(&tenant, FailedWrite::Exchange);
            return Err(ApiError::StoreUnavailable);
        }
        Err(e) => {
            if matches!(e, ServiceError::Store(_) | ServiceError::Contention(_)) {
                tracing::error!(error = %e, "recording the exchange failed");
            }
            return Err(e.into());
        }
    };
    app.failed_writes.flush(&app.store, &tenant).await;
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

/// Plans a turn on the state the service read: detection, decision and template under the
/// conversation's configuration and model (those it is pinned to, or the tenant's current ones
/// for a new conversation), then the LLM's reply when one is configured, asked once. If the append loses a race and the turn is
/// planned again, the LLM's reply is kept when the strategy is the same, and the template
/// answers otherwise.
struct TurnPlanner<'a, S> {
    app: &'a App<S>,
    message: UserMessage<'a>,
    stored_text: &'a str,
    /// Whether the LLM was asked (once per message, whatever it answered).
    llm_asked: bool,
    /// The strategy the LLM wrote for, and its text.
    llm_reply: Option<(String, String)>,
    started: Instant,
}

impl<S: Store> Plan for TurnPlanner<'_, S> {
    async fn plan(&mut self, state: &ConversationState) -> Result<ExchangeDraft, ServiceError> {
        let (app, tenant) = (self.app, self.message.tenant);
        let (store, pin) = (&app.store, state.summary().and_then(|s| s.pin.as_ref()));
        let (config, model) = match pin {
            Some(pin) => (
                app.configs
                    .version(store, tenant, pin.config_version)
                    .await?,
                app.models.version(store, tenant, pin.model_version).await?,
            ),
            // A conversation that started before pins existed ran under the built-in
            // configuration: it keeps it (and is pinned to it from this message on).
            None if state.turns() > 0 => (
                app.configs.version(store, tenant, 0).await?,
                app.models.current(store, tenant).await?,
            ),
            None => (
                app.configs.current(store, tenant).await?,
                app.models.current(store, tenant).await?,
            ),
        };
        let (mut draft, _) =
            app.engine
                .plan(&self.message, state, model.version, &model.model, &config);
        if let Some(llm) = &self.app.llm
            && !self.llm_asked
        {
            self.llm_asked = true;
            match llm
                .reply(self.message.text, &draft.strategy.name, &draft.reply.text)
                .await
            {
                Ok(text) => self.llm_reply = Some((draft.strategy.name.clone(), text)),
                Err(e) => {
                    tracing::warn!(error = %e, "LLM reply failed; answering with the template")
                }
            }
        }
        if let Some((strategy, text)) = &self.llm_reply
            && *strategy == draft.strategy.name
        {
            draft.reply = Reply {
                text: text.clone(),
                source: ReplySource::Llm,
            };
        }
        draft.user_text = self.stored_text.to_owned();
        draft.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(draft)
    }
}

fn answer(conversation: &ConversationId, exchange: &Exchange) -> serde_json::Value {
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
        "config_version": draft.config_version,
    })
}
