//! `POST /conversations/{conversation_id}/messages`: parse, then one flow: read the
//! conversation, plan the turn once (the LLM's reply included), append it with its events in
//! one conditional write, answer. Generic over the store, so tests drive it with either adapter.
//!
//! The reply never waits on tracking (docs/spool.md): when the store cannot record the exchange
//! within the record budget (down, throttled past the retries, or slow), the message is
//! answered anyway, `"recorded": false`, and the exchange goes to the spool (an SQS FIFO
//! queue) to be recorded later, or, if the spool fails too, to one log line a command replays.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, Response};
use salesloop::clients::llm::LlmClient;
use salesloop::clients::sqs::FifoQueue;
use salesloop::domain::engine::{Engine, EngineError, UserMessage};
use salesloop::domain::privacy::TextStorage;
use salesloop::domain::spool::{LOG_MARKER, SPOOL_SCHEMA, SpooledExchange};
use salesloop::edge::emf::unrecorded_exchange;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    Action, TenantSource, has_control_characters, is_blank, json_body, json_text_response,
    request_span, route, tenant,
};
use salesloop::edge::settings::{ConfigError, MessageSettings};
use salesloop::service::tracking::UnrecordedAnswers;
use salesloop::service::{ConfigCache, ModelCache, Plan, ServiceError, record_message};
use salesloop::store::AnyStore;
use salesloop::{
    ConversationId, ConversationState, ExchangeDraft, MessageId, Millis, Reply, ReplySource, Store,
    TenantId,
};
use serde::{Deserialize, Serialize};
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
    /// Exchanges answered without a record, until they are counted in the store.
    pub unrecorded: UnrecordedAnswers,
    /// How long the store may take to record an exchange before the answer goes without it.
    pub record_budget: Duration,
    /// Where an unrecorded exchange goes; `None`: straight to the last resort.
    pub spool: Option<FifoQueue>,
    /// The last resort's log.
    pub last_resort: LastResort,
}

/// Where the last-resort lines go: standard output (CloudWatch Logs on Lambda), or a list a
/// test reads.
#[derive(Clone, Default)]
pub enum LastResort {
    #[default]
    Stdout,
    Memory(Arc<Mutex<Vec<String>>>),
}

impl LastResort {
    fn write(&self, line: String) {
        match self {
            LastResort::Stdout => {
                use std::io::Write;
                // One write of one line: Lambda's log capture keeps it whole.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
            }
            LastResort::Memory(lines) => lines.lock().unwrap_or_else(|p| p.into_inner()).push(line),
        }
    }
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
            models: ModelCache::with_budget(settings.api.cache_age, settings.api.cache_bytes),
            configs: ConfigCache::with_budget(settings.api.cache_age, settings.api.cache_bytes),
            tenants: settings.api.tenants.clone(),
            llm,
            text_storage: settings.text_storage,
            unrecorded: UnrecordedAnswers::default(),
            record_budget: settings.record_budget,
            spool: None,
            last_resort: LastResort::Stdout,
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
        let mut app = App::new(store?, &settings)?;
        if let Some(url) = &settings.spool_queue {
            let sdk = salesloop::clients::aws::sdk_config(settings.api.store.native_roots).await;
            app.spool = Some(FifoQueue::new(sdk, url.clone()));
        }
        Ok(app)
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
    let message = UserMessage {
        tenant: &tenant,
        conversation: &conversation,
        message_id: &message_id,
        text: &text,
        at: Millis::now(),
    };
    let memo = Mutex::new(Memo::default());
    let planner = TurnPlanner {
        app,
        message: message.clone(),
        stored_text: &stored_text,
        memo: &memo,
        started,
    };
    // Boxed, as are the fallbacks below: the handler's future stays small enough for any
    // thread's stack, whichever path it takes.
    let record = Box::pin(record_message(
        &app.store,
        &tenant,
        &conversation,
        &message_id,
        &stored_text,
        planner,
    ));
    let why = match within_budget(record, &memo, started, app.record_budget).await {
        Some(Ok(recorded)) => {
            app.unrecorded.flush(&app.store, &tenant).await;
            tracing::info!(
                turn = recorded.exchange.turn,
                duplicate = recorded.duplicate,
                strategy = %recorded.exchange.draft.strategy.name,
                "message answered"
            );
            return Ok(json_text_response(
                200,
                answer(
                    &conversation,
                    Some(recorded.exchange.turn),
                    &recorded.exchange.draft,
                ),
            ));
        }
        Some(Err(ServiceError::Store(e))) if e.is_transient() => e.to_string(),
        Some(Err(e)) => {
            if matches!(e, ServiceError::Store(_) | ServiceError::Contention(_)) {
                tracing::error!(error = %e, "recording the exchange failed");
            }
            return Err(e.into());
        }
        None => format!("the store took longer than {:?}", app.record_budget),
    };
    // The store cannot record it now: answer anyway, and hand the exchange on.
    let draft = Box::pin(degraded_draft(app, &message, &stored_text, &memo, started)).await;
    app.unrecorded.note(&tenant, &conversation, &message_id);
    let response = json_text_response(200, answer(&conversation, None, &draft));
    let record = SpooledExchange::new(tenant, conversation, draft);
    let spooled = match &app.spool {
        Some(spool) => Box::pin(spool.spool(&record)).await,
        None => Err("no spool is configured (SPOOL_QUEUE_URL)".to_owned()),
    };
    match spooled {
        Ok(()) => {
            tracing::warn!(error = %why, "the exchange was not recorded; spooled");
            println!("{}", unrecorded_exchange(false));
        }
        Err(e) => {
            tracing::error!(
                error = %why, spool_error = %e,
                "the exchange was not recorded and could not be spooled; logged"
            );
            app.last_resort.write(last_resort_line(&record));
        }
    }
    Ok(response)
}

/// The last-resort line (docs/spool.md): the record under `record`, marked with
/// `salesloop_unrecorded`, in an EMF document that counts it as `ExchangesLogged`.
fn last_resort_line(record: &SpooledExchange) -> String {
    let mut line = unrecorded_exchange(true);
    line[LOG_MARKER] = json!(SPOOL_SCHEMA);
    line["record"] = serde_json::to_value(record).unwrap_or_default();
    line.to_string()
}

/// Runs `record` until it finishes or has spent `budget` since `started` outside the LLM's
/// calls; `None` when the budget ran out first (and the record, dropped, stops where it was:
/// an append already sent may still land, and the spooled copy is then a duplicate).
async fn within_budget<F: std::future::Future + Unpin>(
    mut record: F,
    memo: &Mutex<Memo>,
    started: Instant,
    budget: Duration,
) -> Option<F::Output> {
    let mut wait = budget;
    loop {
        tokio::select! {
            // The record first: one that is ready never starts the timer.
            biased;
            done = &mut record => return Some(done),
            () = tokio::time::sleep(wait) => {
                let llm = lock(memo).llm_time();
                let spent = started.elapsed().saturating_sub(llm);
                if spent >= budget {
                    return None;
                }
                wait = (budget - spent).max(Duration::from_millis(5));
            }
        }
    }
}

/// The draft of an answer the store could not record: the one planned for the append, if the
/// planner got that far (so what is spooled is what the prospect was answered), else one
/// decided now as for a new conversation, under the tenant's cached configuration and model
/// (the built-in ones and the priors when none is cached), with the LLM's reply when it
/// answered (or, if it was not asked yet, answers now).
async fn degraded_draft<S: Store>(
    app: &App<S>,
    message: &UserMessage<'_>,
    stored_text: &str,
    memo: &Mutex<Memo>,
    started: Instant,
) -> ExchangeDraft {
    if let Some(mut draft) = lock(memo).draft.take() {
        draft.user_text = stored_text.to_owned();
        return draft;
    }
    let config = app.configs.cached_or_builtin(message.tenant);
    let model = app.models.cached_or_priors(message.tenant);
    let (mut draft, _) = app.engine.plan(
        message,
        &ConversationState::New,
        model.version,
        &model.model,
        &config,
    );
    let asked = std::mem::replace(&mut lock(memo).llm_asked, true);
    let written = match (&app.llm, asked) {
        (Some(llm), false) => ask_llm(llm, message.text, &draft).await,
        _ => lock(memo).llm_reply.clone(),
    };
    if let Some((strategy, text)) = written
        && strategy == draft.strategy.name
    {
        draft.reply = Reply {
            text,
            source: ReplySource::Llm,
        };
    }
    draft.user_text = stored_text.to_owned();
    draft.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    draft
}

async fn ask_llm(llm: &LlmClient, text: &str, draft: &ExchangeDraft) -> Option<(String, String)> {
    match llm
        .reply(text, &draft.strategy.name, &draft.reply.text)
        .await
    {
        Ok(text) => Some((draft.strategy.name.clone(), text)),
        Err(e) => {
            tracing::warn!(error = %e, "LLM reply failed; answering with the template");
            None
        }
    }
}

/// What the planner leaves behind for the answer that goes without a record.
#[derive(Default)]
struct Memo {
    /// Whether the LLM was asked (once per message, whatever it answered).
    llm_asked: bool,
    /// The strategy the LLM wrote for, and its text.
    llm_reply: Option<(String, String)>,
    /// Time spent in LLM calls, and the start of the one in flight.
    llm_spent: Duration,
    llm_since: Option<Instant>,
    /// The newest draft planned for an append.
    draft: Option<ExchangeDraft>,
}

impl Memo {
    fn llm_time(&self) -> Duration {
        self.llm_spent + self.llm_since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

fn lock(memo: &Mutex<Memo>) -> std::sync::MutexGuard<'_, Memo> {
    memo.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plans a turn on the state the service read: detection, decision and template under the
/// conversation's configuration and model (those it is pinned to, or the tenant's current ones
/// for a new conversation), then the LLM's reply when one is configured, asked once. If the
/// append loses a race and the turn is planned again, the LLM's reply is kept when the strategy
/// is the same, and the template answers otherwise.
struct TurnPlanner<'a, S> {
    app: &'a App<S>,
    message: UserMessage<'a>,
    stored_text: &'a str,
    memo: &'a Mutex<Memo>,
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
            && !std::mem::replace(&mut lock(self.memo).llm_asked, true)
        {
            lock(self.memo).llm_since = Some(Instant::now());
            let written = ask_llm(llm, self.message.text, &draft).await;
            let mut memo = lock(self.memo);
            if let Some(since) = memo.llm_since.take() {
                memo.llm_spent += since.elapsed();
            }
            memo.llm_reply = written;
        }
        if let Some((strategy, text)) = lock(self.memo).llm_reply.clone()
            && strategy == draft.strategy.name
        {
            draft.reply = Reply {
                text,
                source: ReplySource::Llm,
            };
        }
        // In place: the draft holds the text, which the stored form usually is.
        draft.user_text.clear();
        draft.user_text.push_str(self.stored_text);
        draft.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The memo's copy leaves the text out (the degraded answer puts the stored text back):
        // a message's text is the longest part of its draft.
        let user_text = std::mem::take(&mut draft.user_text);
        let mut stamped = draft.clone();
        draft.user_text = user_text;
        stamped.message_id = self.message.message_id.clone();
        lock(self.memo).draft = Some(stamped);
        Ok(draft)
    }
}

/// The answer: `turn` is the exchange's when it was recorded, null when it was not (the store
/// gives it one when the spooled record gets there). Written straight from the draft, its keys
/// in the order a JSON object map would sort them.
fn answer(conversation: &ConversationId, turn: Option<u32>, draft: &ExchangeDraft) -> String {
    #[derive(Serialize)]
    struct Answer<'a> {
        config_version: u64,
        conversation_id: &'a ConversationId,
        experiments: &'a std::collections::BTreeMap<String, String>,
        message_id: &'a MessageId,
        model_version: u64,
        patterns: Vec<Pattern<'a>>,
        recorded: bool,
        reply: ReplyOut<'a>,
        strategy: Strategy<'a>,
        turn: Option<u32>,
    }
    #[derive(Serialize)]
    struct Pattern<'a> {
        confidence: f64,
        evidence: &'a str,
        name: &'a str,
    }
    #[derive(Serialize)]
    struct ReplyOut<'a> {
        source: ReplySource,
        text: &'a str,
    }
    #[derive(Serialize)]
    struct Strategy<'a> {
        name: &'a str,
        probability: f64,
    }
    let answer = Answer {
        config_version: draft.config_version,
        conversation_id: conversation,
        experiments: &draft.experiments,
        message_id: &draft.message_id,
        model_version: draft.model_version,
        patterns: draft
            .patterns
            .iter()
            .map(|d| Pattern {
                confidence: d.confidence,
                evidence: &d.evidence,
                name: &d.pattern,
            })
            .collect(),
        recorded: turn.is_some(),
        reply: ReplyOut {
            source: draft.reply.source,
            text: &draft.reply.text,
        },
        strategy: Strategy {
            name: &draft.strategy.name,
            probability: draft.strategy.probability,
        },
        turn,
    };
    // Nothing in it can fail to serialize (string keys, finite numbers or null).
    serde_json::to_string(&answer).unwrap_or_default()
}
