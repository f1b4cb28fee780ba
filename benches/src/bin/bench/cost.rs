//! What an exchange costs: requests counted on the wire, write units from the stored items by
//! DynamoDB's size rules, and a price table per million messages; and what each read route
//! costs: its requests and the read units the server reports, with no write and no scan.

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
    turn: u32,
    requests: Vec<(String, f64)>,
    item: f64,
    lsi_entry: f64,
    /// The first turn's entry in the conversation list (keys only), when it writes one.
    list_entry: Option<f64>,
    wcu: u64,
    latency: Duration,
}

/// `n` messages of `chars` characters, turn `turn` of conversations `{label}-{i}`. The requests
/// counted on the wire cover every message, so one that fails stops the bench.
#[allow(clippy::too_many_arguments)]
async fn exchanges(
    app: &process_message::handler::App<DynamoStore>,
    requests: &Requests,
    counted: &mut Invocations,
    label: &str,
    chars: usize,
    n: usize,
    turn: u32,
) -> (Vec<(String, f64)>, Duration) {
    requests.take();
    let text = text_of(chars);
    let mut took = Vec::new();
    for i in 0..n {
        let event = salesloop_benches::http_api_event(
            &format!("/conversations/{label}-{i}/messages"),
            &serde_json::json!({"message_id": format!("m-{turn}"), "text": text}).to_string(),
        );
        let request = salesloop::edge::http::request_from_event(&event).expect("event");
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
            end_shards: 1,
        },
    );
    store.create_table().await.expect("the cost table");
    let mut app = salesloop_benches::nostore::app_with(store);
    app.models = salesloop::service::ModelCache::new(Duration::from_secs(30));
    let mut counted = Invocations::new("cost: process_message's handler on DynamoDB Local");
    // The first message of a process fills the model cache (one read, every 30 s per tenant).
    let (first, _) = exchanges(&app, &requests, &mut counted, "warm", 100, 1, 1).await;
    let n = 50;
    let mut measured = Vec::new();
    for (label, chars, turn) in [
        ("typical", 100usize, 1u32),
        ("typical", 100, 2),
        ("long", 2_000, 1),
        ("long", 2_000, 2),
    ] {
        let (counts, latency) =
            exchanges(&app, &requests, &mut counted, label, chars, n, turn).await;
        // The items those exchanges wrote, by DynamoDB's size rules.
        let mut sizes = Vec::new();
        let mut lsi = Vec::new();
        let mut listed = Vec::new();
        let position = format!("L#{turn:05}");
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
                let sk = item.get("sk").and_then(|v| v.as_s().ok());
                if pk.contains(&format!("#C#{label}-"))
                    && item.contains_key("mid")
                    && sk == Some(&position)
                {
                    sizes.push(item_size(item));
                    let keys_of = |names: &[&str]| -> std::collections::HashMap<_, _> {
                        item.iter()
                            .filter(|(k, _)| names.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    // An index entry: its keys, the table's keys and 100 bytes of overhead.
                    lsi.push(item_size(&keys_of(&["pk", "sk", "mid"])) + 100);
                    if item.contains_key("gsi2pk") {
                        listed.push(item_size(&keys_of(&["pk", "sk", "gsi2pk", "gsi2sk"])) + 100);
                    }
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        assert_eq!(sizes.len(), n, "one item per exchange");
        assert!(
            listed.len() == if turn == 1 { n } else { 0 },
            "only first turns are listed"
        );
        let item = sizes.iter().sum::<usize>() as f64 / n as f64;
        let lsi_entry = lsi.iter().sum::<usize>() as f64 / n as f64;
        let list_entry =
            (!listed.is_empty()).then(|| listed.iter().sum::<usize>() as f64 / n as f64);
        let wcu = listed
            .iter()
            .map(|s| s.div_ceil(1024) as u64)
            .max()
            .unwrap_or(0)
            + sizes
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
                turn,
                requests: counts,
                item,
                lsi_entry,
                list_entry,
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
        "| message | requests per exchange | exchange item | LSI entry (keys only) | list entry (keys only) | write units | budget |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|---|");
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
        let turn = if m.turn == 1 {
            "first turn"
        } else {
            "later turn"
        };
        let (list, parts) = match m.list_entry {
            Some(bytes) => (
                format!("{bytes:.0} B"),
                format!("{} item + 1 LSI + 1 list", m.wcu - 2),
            ),
            None => ("-".to_owned(), format!("{} item + 1 LSI", m.wcu - 1)),
        };
        let budget = match m.turn {
            1 => "later turns' budget + 1 unit: the conversation's entry in the list (issue 14)",
            _ => "one write request, at most 2 units (typical)",
        };
        let _ = writeln!(
            markdown,
            "| {label} ({chars} chars), {turn} | {reqs} | {:.0} B | {:.0} B | {list} | **{}** ({parts}) | {budget} |",
            m.item, m.lsi_entry, m.wcu,
        );
        summary.push([
            format!("writes per exchange, {label} ({chars} chars), {turn}"),
            format!("{writes:.0} write request, {} write units", m.wcu),
            match (*label, m.turn) {
                ("typical", 1) => "at most 3 units (2 + the list entry)".into(),
                ("typical", _) => "one request, at most 2 units".into(),
                _ => String::new(),
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
            "| {label} ({chars} chars), {} | ${lambda:.2} ({billed_ms:.0} ms billed: p50 against DynamoDB Local) | ${api:.2} | ${writes:.2} ({} WRU) | ${reads:.2} ({reads_per:.0} RRU) | **${:.2}** |",
            if m.turn == 1 {
                "first turn"
            } else {
                "later turn"
            },
            m.wcu,
            lambda + api + writes + reads
        );
        if *label == "typical" && m.turn > 1 {
            summary.push([
                "cost per million typical messages (later turns)".into(),
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
    reads(
        &app.store,
        &requests,
        &mut markdown,
        &mut summary,
        &mut counted,
    )
    .await;
    Section {
        markdown,
        summary,
        invocations: vec![counted],
    }
}

/// What each read route costs, counted on the wire: its requests by operation (no write, no
/// scan) and the read units DynamoDB reports for them. The table holds the 200 exchanges above
/// (100 two-turn conversations), 20 of them ended, and the model version one feedback run
/// published from those ends.
async fn reads(
    store: &DynamoStore,
    requests: &Requests,
    markdown: &mut String,
    summary: &mut Vec<[String; 4]>,
    counted: &mut Invocations,
) {
    let tenant = TenantId::parse("acme").expect("tenant");
    let now = salesloop::Millis::now().0;
    for i in 1..=20 {
        let conversation = ConversationId::parse(&format!("typical-{i}")).expect("id");
        let outcome = if i % 3 == 0 {
            Outcome::Won
        } else {
            Outcome::Lost
        };
        store
            .end_conversation(
                &tenant,
                &conversation,
                salesloop_tests::contract::end_request(outcome, now - 1_000),
            )
            .await
            .expect("end");
    }
    let feedback = feedback_loop::App::new(
        store.clone(),
        feedback_loop::run::Settings {
            settle_ms: 0,
            ..Default::default()
        },
    );
    feedback_loop::handle(
        &feedback,
        feedback_loop::Trigger::Tenant(tenant.clone()),
        "bench",
        &|_| {},
    )
    .await
    .expect("a feedback run");
    let app = read_api::handler::App {
        store: store.clone(),
        tenants: salesloop::edge::http::TenantSource {
            claim: "tenant_id".into(),
            local: false,
        },
    };
    let _ = writeln!(
        markdown,
        "## Cost of a read\n\nread_api's handler in the bench process on the same table: 100 \
         two-turn conversations, 21 of them ended, one model version. Requests are counted on \
         the wire by the same interceptor, which also asks each Query and GetItem for the \
         capacity it consumed (`ReturnConsumedCapacity`); the read units are DynamoDB Local's \
         own count. A read route may send Query and GetItem only: a write or a Scan fails the \
         bench.\n\n| route | requests | read units | write requests | scans |\n|---|---|---|---|---|"
    );
    for target in [
        "/conversations/typical-1",
        "/conversations?limit=20",
        "/conversations?limit=100",
        "/models",
        "/models/1",
        "/report",
        "/dashboard",
    ] {
        requests.take();
        requests.take_read_units();
        let mut event: serde_json::Value =
            serde_json::from_str(&salesloop_benches::http_api_event(target, "")).expect("event");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        event["rawPath"] = serde_json::json!(path);
        event["requestContext"]["http"]["path"] = serde_json::json!(path);
        event["rawQueryString"] = serde_json::json!(query);
        event["requestContext"]["http"]["method"] = serde_json::json!("GET");
        let request = salesloop::edge::http::request_from_event(&event.to_string()).expect("event");
        let status = read_api::handler::handle(&app, request)
            .await
            .status()
            .as_u16();
        if !counted.count(if status == 200 {
            Ok(())
        } else {
            Err(format!("GET {target}: status {status}"))
        }) {
            fail(format!("GET {target} answered {status}"));
        }
        let ops = requests.take();
        let units = requests.take_read_units();
        let writes: u64 = ops
            .iter()
            .filter(|(op, _)| !matches!(op.as_str(), "Query" | "GetItem"))
            .map(|(_, n)| n)
            .sum();
        let scans = ops.get("Scan").copied().unwrap_or(0);
        if writes > 0 {
            fail(format!(
                "GET {target} sent {ops:?}: a read may send Query and GetItem only"
            ));
        }
        let listed = if ops.is_empty() {
            "none".to_owned()
        } else {
            ops.iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            markdown,
            "| GET {target} | {listed} | {units:.1} | 0 | {scans} |"
        );
        summary.push([
            format!("read cost, GET {target}"),
            format!("{listed}; {units:.1} read units"),
            "no write unit, no scan".into(),
            String::new(),
        ]);
    }
    markdown.push('\n');
}
