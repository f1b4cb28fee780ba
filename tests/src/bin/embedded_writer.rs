//! Appends messages to one conversation of an embedded store, as one of several processes
//! sharing the file: `embedded_writer <store file> <conversation> <writer name> <count>`.

use salesloop::{
    ConversationId, EmbeddedStore, ExchangeDraft, MessageId, Millis, Reply, ReplySource,
    StrategyChoice, TenantId,
};
use salesloop_tests::flows::Flows;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, conversation, writer, count] = args.as_slice() else {
        return Err("usage: embedded_writer <store file> <conversation> <writer> <count>".into());
    };
    let store = EmbeddedStore::open(std::path::Path::new(path))?;
    let tenant = TenantId::parse("local")?;
    let conversation = ConversationId::parse(conversation)?;
    for i in 0..count.parse::<u32>()? {
        let id = MessageId::parse(&format!("{writer}-{i}"))?;
        store
            .record_exchange(&tenant, &conversation, &id, |_| ExchangeDraft {
                message_id: id.clone(),
                at: Millis::now(),
                model_version: 0,
                user_text: format!("message {i} from {writer}"),
                reply: Reply {
                    text: "ok".into(),
                    source: ReplySource::Template,
                },
                strategy: StrategyChoice {
                    name: "ask_discovery_question".into(),
                    probability: 1.0,
                    context: "none".into(),
                },
                patterns: Vec::new(),
                experiments: Default::default(),
                latency_us: 0,
                config_version: 0,
                treatment: None,
                via: Default::default(),
            })
            .await?;
    }
    Ok(())
}
