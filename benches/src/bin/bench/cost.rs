//! What an exchange costs: requests counted on the wire, write units from the stored items by
//! DynamoDB's size rules, and a price table per million messages.

use std::fmt::Write;
use std::time::{Duration, Instant};

use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{ConversationId, Outcome, TenantId};
use salesloop_benches::counting::{self, Requests, item_size};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::flows::Flows;

use crate::{Invocations, Section, fail, percentile};

/// Prices used (us-east-1, on-demand, list prices as AWS publishes them; the machine has no
/// internet, so they were not re-read on the day of the run).
const PRICES_DATE: &str = "AWS list prices for us-east-1 as of 2025-06 (Lambda, API Gateway pages; DynamoDB on-demand after its 2024-11-01 reduction); not re-read on the day of this run";
const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
const DYNAMODB_WRU: f64 = 0.625 / 1e6;
const DYNAMODB_RRU: f64 = 0.125 / 1e6;

fn text_of(chars: usize) -> String {
    let base = "We like the product, but honestly it looks too expensive for a team of our size and \
                we need to check the budget with finance before we can commit to anything. ";
    base.chars().cycle().take(chars).collect()
}

struct Measured {
    requests: Vec<(String, f64)>,
    item: f64,
    lsi_entry: f64,
    wcu: u64,
    latency: Duration,
}

/// `n` messages of `chars` characters to new conversations `{label}-{i}`. The requests counted on
/// the wire cover every message, so one that fails stops the bench.
async fn exchanges(
    app: &process_message::handler::App<DynamoStore>,
    requests: &Requests,
    counted: &mut Invocations,
    label: &str,
    chars: usize,
    n: usize,
) -> (Vec<(String, f64)>, Duration) {
    requests.take();
    let text = text_of(chars);
    let mut took = Vec::new();
    for i in 0..n {
        let event = salesloop_benches::http_api_event(
            &format!("/conversations/{label}-{i}/messages"),
            &serde_json::json!({"message_id": "m-1", "text": text}).to_string(),
        );
        let request = lambda_http::request::from_str(&event).expect("event");
        let t = Instant::now();
        let response = process_message::handler::handle(app, request).await;
        took.push(t.elapsed());
        let status = response.status().as_u16();
        if !counted.count(if status == 200 {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }) {
            fail(format!("{}: {label}-{i} answered {status}", counted.what));
        }
    }
    took.sort();
    let counts = requests
        .take()
        .into_iter()
        .map(|(op, count)| (op, count as f64 / n as f64))
        .collect();
    (counts, percentile(&took, 50.0))
}

pub async fn section(server: &DynamoLocal) -> Section {
    let requests = Requests::default();
    let client = counting::client(&server.endpoint(), &requests);
    let table = format!("salesloop-cost-{}", std::process::id());
    let store = DynamoStore::new(
        client.clone(),
        DynamoStoreConfig {
            table: table.clone(),
            retention: Some(Duration::from_secs(90 * 24 * 3600)),
        },
    );
    store.create_table().await.expect("the cost table");
    let mut app = salesloop_benches::nostore::app_with(store);
    app.models = salesloop::service::ModelCache::new(Duration::from_secs(30));
    let mut counted = Invocations::new("cost: process_message's handler on DynamoDB Local");
    // The first message of a process fills the model cache (one read, every 30 s per tenant).
    let (first, _) = exchanges(&app, &requests, &mut counted, "warm", 100, 1).await;
    let n = 50;
    let mut measured = Vec::new();
    for (label, chars) in [("typical", 100usize), ("long", 2_000)] {
        let (counts, latency) = exchanges(&app, &requests, &mut counted, label, chars, n).await;
        // The items those exchanges wrote, by DynamoDB's size rules.
        let mut sizes = Vec::new();
        let mut lsi = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in page.items() {
                let pk = item
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                if pk.contains(&format!("#C#{label}-")) && item.contains_key("mid") {
                    sizes.push(item_size(item));
                    let keys: std::collections::HashMap<_, _> = item
                        .iter()
                        .filter(|(k, _)| matches!(k.as_str(), "pk" | "sk" | "mid"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    // An index entry: its keys, the table's keys and 100 bytes of overhead.
                    lsi.push(item_size(&keys) + 100);
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        assert_eq!(sizes.len(), n, "one item per exchange");
        let item = sizes.iter().sum::<usize>() as f64 / n as f64;
        let lsi_entry = lsi.iter().sum::<usize>() as f64 / n as f64;
        let wcu = sizes
            .iter()
            .map(|s| s.div_ceil(1024) as u64)
            .max()
            .unwrap_or(0)
            + lsi
                .iter()
                .map(|s| s.div_ceil(1024) as u64)
                .max()
                .unwrap_or(0);
        measured.push((
            label,
            chars,
            Measured {
                requests: counts,
                item,
                lsi_entry,
                wcu,
                latency,
            },
        ));
    }
    // An end: its item and its entry in the outcome index.
    let tenant = TenantId::parse("acme").expect("tenant");
    let conversation = ConversationId::parse("typical-0").expect("id");
    requests.take();
    app.store
        .end_conversation(
            &tenant,
            &conversation,
            salesloop_tests::contract::end_request(Outcome::Won, 1_800_000_000_000),
        )
        .await
        .expect("end");
    let end_requests = requests.take();

    let mut markdown = String::from("## Cost per exchange\n\n");
    let _ = writeln!(
        markdown,
        "process_message's handler in the bench process on a DynamoDB Local table, {n} messages \
         of each size to new conversations (the steady state: the tenant's model is cached, as \
         it is for 30 s per tenant per instance). Requests are counted on the wire by an SDK \
         interceptor (`benches/src/counting.rs`); item sizes are those of the stored items by \
         DynamoDB's rules (attribute names + values; an index entry adds the table's keys and \
         100 bytes). Cache misses add one model read per tenant per 30 s per instance (the first \
         message here sent {}).\n",
        first
            .iter()
            .map(|(op, c)| format!("{c:.0} {op}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        markdown,
        "| message | requests per exchange | exchange item | LSI entry (keys only) | write units | budget |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for (label, chars, m) in &measured {
        let reqs = m
            .requests
            .iter()
            .map(|(op, c)| format!("{c:.2} {op}"))
            .collect::<Vec<_>>()
            .join(", ");
        let writes: f64 = m
            .requests
            .iter()
            .filter(|(op, _)| {
                matches!(
                    op.as_str(),
                    "PutItem"
                        | "UpdateItem"
                        | "TransactWriteItems"
                        | "BatchWriteItem"
                        | "DeleteItem"
                )
            })
            .map(|(_, c)| c)
            .sum();
        let _ = writeln!(
            markdown,
            "| {label} ({chars} chars) | {reqs} | {:.0} B | {:.0} B | **{}** ({} item + 1 LSI) | one write request, at most 2 units (typical) |",
            m.item,
            m.lsi_entry,
            m.wcu,
            m.wcu - 1
        );
        summary.push([
            format!("writes per exchange, {label} ({chars} chars)"),
            format!("{writes:.0} write request, {} write units", m.wcu),
            if *label == "typical" {
                "one request, at most 2 units".into()
            } else {
                String::new()
            },
            String::new(),
        ]);
    }
    let _ = writeln!(
        markdown,
        "\nAn end (end_conversation) was {}: the end item is written once to the table and \
         once to the outcome index (it projects the record).\n",
        end_requests
            .iter()
            .map(|(op, c)| format!("{c} {op}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Price per million messages.
    let _ = writeln!(markdown, "Per million messages (prices: {PRICES_DATE}):\n");
    let _ = writeln!(
        markdown,
        "| message | Lambda arm64 128 MB (billed ms × GB-s + request) | HTTP API | DynamoDB writes | DynamoDB reads | total |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|");
    for (label, chars, m) in &measured {
        let billed_ms = (m.latency.as_secs_f64() * 1e3).ceil();
        let lambda = 1e6 * (billed_ms / 1e3 * 0.125 * LAMBDA_ARM_GB_SECOND + LAMBDA_REQUEST);
        let api = 1e6 * HTTP_API_REQUEST;
        let writes = 1e6 * m.wcu as f64 * DYNAMODB_WRU;
        // Strongly consistent reads of items under 4 KB: one read unit per read request.
        let reads_per: f64 = m
            .requests
            .iter()
            .filter(|(op, _)| matches!(op.as_str(), "Query" | "GetItem"))
            .map(|(_, c)| c)
            .sum();
        let reads = 1e6 * reads_per * DYNAMODB_RRU;
        let _ = writeln!(
            markdown,
            "| {label} ({chars} chars) | ${lambda:.2} ({billed_ms:.0} ms billed: p50 against DynamoDB Local) | ${api:.2} | ${writes:.2} ({} WRU) | ${reads:.2} ({reads_per:.0} RRU) | **${:.2}** |",
            m.wcu,
            lambda + api + writes + reads
        );
        if *label == "typical" {
            summary.push([
                "cost per million typical messages".into(),
                format!("${:.2}", lambda + api + writes + reads),
                String::new(),
                "Lambda + HTTP API + DynamoDB on-demand".into(),
            ]);
        }
    }
    let _ = writeln!(
        markdown,
        "\nLambda prices: arm64 ${LAMBDA_ARM_GB_SECOND}/GB-s, $0.20 per million requests; HTTP API \
         $1.00 per million requests (first 300 million); DynamoDB on-demand $0.625 per million \
         write request units, $0.125 per million read request units. Storage, logs and data \
         transfer are left out. Against real DynamoDB (single-digit ms per request) the billed \
         duration is lower than DynamoDB Local's here.\n"
    );
    Section {
        markdown,
        summary,
        invocations: vec![counted],
    }
}
