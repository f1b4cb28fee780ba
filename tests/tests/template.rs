//! The infrastructure template's security rules, asserted on the template itself so that a later
//! edit cannot loosen them silently: least privilege per function (no wildcard action or
//! resource, only the DynamoDB actions each function's code calls, on the table and the index it
//! reads), end_conversation may invoke only feedback_loop, the API routes are the code's (in
//! the template and in `make run`'s router alike), and the table is the one the code expects,
//! with recovery, encryption and deletion protection on; server errors and slow replies raise
//! alarms, and the dashboard draws metrics the code prints. The LLM's settings reach
//! process_message alone, and so does the one secret read: `ssm:GetParameter` on the key's
//! parameter, granted only when there is one. The spool (an SQS FIFO queue and its dead-letter
//! queue, both encrypted) reaches its producer and its consumer alone: process_message may only
//! send to it, spool_consumer only take from it and send to the dead-letter queue, and no other
//! role has any SQS action but feedback_loop's send to its failure queue.

use std::collections::{BTreeMap, BTreeSet};

use salesloop::edge::admin::ADMIN_ROUTES;
use salesloop::edge::http::{Action, READ_ROUTES, ROUTES};
use salesloop::store::{MESSAGE_INDEX, START_INDEX, TIME_INDEX};
use salesloop_tests::workspace_root;
use serde_yaml::Value;

fn template() -> Value {
    let raw = std::fs::read_to_string(workspace_root().join("infra/template.yaml")).unwrap();
    serde_yaml::from_str(&raw).expect("the template is YAML")
}

fn resources(template: &Value) -> &serde_yaml::Mapping {
    template["Resources"].as_mapping().unwrap()
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    &template["Resources"][name]
}

/// A value as text: plain strings as they are, CloudFormation tags (`!GetAtt X.Arn`, `!Sub ...`,
/// `!Ref X`) as `tag value`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, text(&tagged.value)),
        Value::Sequence(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
    }
}

fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

/// The ARN of the LLM key's SSM parameter, as process_message's role is granted it: the one
/// resource a role names that is not of this stack, named whole by a parameter of the stack.
const LLM_KEY_ARN: &str = "!Sub arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${LlmApiKeyParameter}";

/// A statement as written, and the condition it is granted under: `!If [condition, statement,
/// !Ref AWS::NoValue]` (the only conditional form allowed) or none.
fn conditional(statement: &Value) -> (Option<String>, &Value) {
    match statement {
        Value::Tagged(tagged) if tagged.tag == "If" => {
            let branches = list(&tagged.value);
            assert_eq!(branches.len(), 3, "{statement:?}");
            assert_eq!(
                text(branches[2]),
                "!Ref AWS::NoValue",
                "a conditional statement grants nothing otherwise"
            );
            (Some(text(branches[0])), branches[1])
        }
        other => (None, other),
    }
}

/// Every statement of every inline policy of a role, with its condition (see [`conditional`]).
fn conditional_statements(role: &Value) -> Vec<(Option<String>, &Value)> {
    list(&role["Properties"]["Policies"])
        .into_iter()
        .flat_map(|policy| list(&policy["PolicyDocument"]["Statement"]))
        .map(conditional)
        .collect()
}

/// Every statement that grants, of every inline policy of a role, conditional or not:
/// (actions, resources). (A `Deny` only narrows; `admin_api_reaches_only_configuration_and_model_items`
/// pins the one there is.)
fn statements(role: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    conditional_statements(role)
        .into_iter()
        .filter(|(_, statement)| statement["Effect"].as_str() != Some("Deny"))
        .map(|(_, statement)| {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{statement:?}");
            assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none());
            (
                list(&statement["Action"]).into_iter().map(text).collect(),
                list(&statement["Resource"]).into_iter().map(text).collect(),
            )
        })
        .collect()
}

#[test]
fn no_statement_anywhere_grants_a_wildcard_action_or_resource() {
    let template = template();
    let mut roles = 0;
    for (name, resource) in resources(&template) {
        if resource["Type"].as_str() == Some("AWS::IAM::RolePolicy") {
            let role = text(&resource["Properties"]["RoleName"]);
            for policy in role_policies(&template, role.trim_start_matches("!Ref ")) {
                for (actions, resources) in statements(&policy) {
                    assert!(actions.iter().all(|a| !a.contains('*')), "{name:?}");
                    assert!(
                        resources
                            .iter()
                            .all(|r| r.starts_with("!GetAtt ") && !r.contains('*')),
                        "{name:?}: {resources:?}"
                    );
                }
            }
            continue;
        }
        if resource["Type"].as_str() != Some("AWS::IAM::Role") {
            continue;
        }
        roles += 1;
        for (actions, resources) in statements(resource) {
            for action in &actions {
                assert!(!action.contains('*'), "{name:?}: action {action}");
            }
            for arn in &resources {
                // A log group's streams are the one wildcard: the stream names are random.
                let allowed = arn.starts_with("!Sub ${") && arn.ends_with("Logs.Arn}");
                assert!(allowed || !arn.contains('*'), "{name:?}: resource {arn}");
                assert!(
                    arn.starts_with("!GetAtt ") || arn.starts_with("!Sub ${") || arn == LLM_KEY_ARN,
                    "{name:?}: resource {arn} does not name a resource of this stack"
                );
            }
        }
        let managed: Vec<String> = list(&resource["Properties"]["ManagedPolicyArns"])
            .into_iter()
            .map(text)
            .collect();
        assert_eq!(
            managed,
            ["!Sub arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"],
            "{name:?}: only X-Ray's write-only policy may be attached"
        );
    }
    assert_eq!(roles, 6, "one role per function");
    // No function lets SAM generate a role (which would attach broader managed policies).
    for (name, resource) in resources(&template) {
        if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
            assert!(resource["Properties"].get("Policies").is_none(), "{name:?}");
            assert!(
                text(&resource["Properties"]["Role"]).starts_with("!GetAtt "),
                "{name:?}"
            );
        }
    }
}

#[test]
fn each_function_may_do_exactly_what_its_code_does() {
    let template = template();
    let table = "!GetAtt Table.Arn".to_owned();
    let index = |name: &str| format!("!Sub ${{Table.Arn}}/index/{name}");
    let expected: BTreeMap<&str, (&str, Grants)> = BTreeMap::from([
        (
            "ProcessMessageFunction",
            (
                "process_message",
                grants(&[
                    (
                        &["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"],
                        &[table.as_str(), index(MESSAGE_INDEX).as_str()],
                    ),
                    // The ADD on the tenant's tracking counter (exchanges answered without a
                    // record), `UnrecordedAnswers::flush`.
                    (&["dynamodb:UpdateItem"], &[table.as_str()]),
                    // An exchange the store did not record in time: to the spool, nothing else.
                    (&["sqs:SendMessage"], &["!GetAtt SpoolQueue.Arn"]),
                    // The LLM's key, when LlmApiKeyParameter names one (see below).
                    (&["ssm:GetParameter"], &[LLM_KEY_ARN]),
                ]),
            ),
        ),
        (
            "EndConversationFunction",
            (
                "end_conversation",
                grants(&[
                    (
                        &[
                            "dynamodb:Query",
                            "dynamodb:GetItem",
                            "dynamodb:PutItem",
                            "dynamodb:UpdateItem",
                        ],
                        &[table.as_str()],
                    ),
                    (
                        &["lambda:InvokeFunction"],
                        &["!GetAtt FeedbackLoopFunction.Arn"],
                    ),
                ]),
            ),
        ),
        (
            "FeedbackLoopFunction",
            (
                "feedback_loop",
                grants(&[
                    (
                        &[
                            "dynamodb:Query",
                            "dynamodb:GetItem",
                            "dynamodb:PutItem",
                            "dynamodb:DeleteItem",
                            "dynamodb:ConditionCheckItem",
                        ],
                        &[table.as_str(), index(TIME_INDEX).as_str()],
                    ),
                    // The pending list the schedule reads, and the marks a run clears.
                    (&["dynamodb:Query"], &[index(START_INDEX).as_str()]),
                    (&["dynamodb:UpdateItem"], &[table.as_str()]),
                    // The schedule's fan-out: itself, once per pending tenant (a policy of its
                    // own, `FeedbackFanOutPolicy`, attached to the role).
                    (
                        &["lambda:InvokeFunction"],
                        &["!GetAtt FeedbackLoopFunction.Arn"],
                    ),
                    (&["sqs:SendMessage"], &["!GetAtt FeedbackFailures.Arn"]),
                ]),
            ),
        ),
        (
            // Configuration and model versions only: the leading-key condition is pinned in
            // `admin_api_reaches_only_configuration_and_model_items`.
            "AdminApiFunction",
            (
                "admin_api",
                grants(&[(
                    &[
                        "dynamodb:Query",
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:ConditionCheckItem",
                    ],
                    &[table.as_str()],
                )]),
            ),
        ),
        (
            // process_message's append and counter add; takes from the spool, sends only to its
            // dead-letter queue.
            "SpoolConsumerFunction",
            (
                "spool_consumer",
                grants(&[
                    (
                        &["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"],
                        &[table.as_str(), index(MESSAGE_INDEX).as_str()],
                    ),
                    (&["dynamodb:UpdateItem"], &[table.as_str()]),
                    (
                        &[
                            "sqs:ReceiveMessage",
                            "sqs:DeleteMessage",
                            "sqs:GetQueueAttributes",
                        ],
                        &["!GetAtt SpoolQueue.Arn"],
                    ),
                    (&["sqs:SendMessage"], &["!GetAtt SpoolDeadLetterQueue.Arn"]),
                ]),
            ),
        ),
        (
            // Reads never write: GetItem and Query only.
            "ReadApiFunction",
            (
                "read_api",
                grants(&[(
                    &["dynamodb:Query", "dynamodb:GetItem"],
                    &[table.as_str(), index(START_INDEX).as_str()],
                )]),
            ),
        ),
    ]);
    // Every function of the template is pinned here.
    let functions: BTreeSet<&str> = resources(&template)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(name, _)| name.as_str().unwrap())
        .collect();
    assert_eq!(functions, expected.keys().copied().collect::<BTreeSet<_>>());
    for (function, (binary, want)) in &expected {
        let resource = resource(&template, function);
        assert_eq!(resource["Type"].as_str(), Some("AWS::Serverless::Function"));
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        assert_eq!(
            resource["Metadata"]["BuildProperties"]["Binary"].as_str(),
            Some(*binary)
        );
        let role_name = text(&resource["Properties"]["Role"])
            .trim_start_matches("!GetAtt ")
            .trim_end_matches(".Arn")
            .to_owned();
        let role = &self::resource(&template, &role_name);
        let log_group = text(&resource["Properties"]["LoggingConfig"]["LogGroup"]);
        let mut got = BTreeSet::new();
        let attached = role_policies(&template, &role_name);
        for (actions, resources) in statements(role)
            .into_iter()
            .chain(attached.iter().flat_map(statements))
        {
            for action in &actions {
                for arn in &resources {
                    if action.starts_with("logs:") {
                        // Logs go to this function's own group only.
                        assert_eq!(
                            arn,
                            &format!("!Sub ${{{}.Arn}}", log_group.trim_start_matches("!Ref ")),
                            "{function}"
                        );
                        continue;
                    }
                    got.insert((action.clone(), arn.clone()));
                }
            }
        }
        assert_eq!(
            &got, want,
            "{function}: the grants differ from the code's needs"
        );
    }
}

/// The `AWS::IAM::RolePolicy` resources attached to the role `role_name`, as a role's
/// `Properties.Policies` would hold them (so `statements` reads them alike).
fn role_policies(template: &Value, role_name: &str) -> Vec<Value> {
    resources(template)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::RolePolicy"))
        .filter(|(_, r)| text(&r["Properties"]["RoleName"]) == format!("!Ref {role_name}"))
        .map(|(_, r)| {
            let mut policies = serde_yaml::Mapping::new();
            policies.insert(
                "Policies".into(),
                Value::Sequence(vec![r["Properties"].clone()]),
            );
            let mut role = serde_yaml::Mapping::new();
            role.insert("Properties".into(), Value::Mapping(policies));
            Value::Mapping(role)
        })
        .collect()
}

/// (action, resource) pairs a role grants.
type Grants = BTreeSet<(String, String)>;

fn grants(pairs: &[(&[&str], &[&str])]) -> Grants {
    pairs
        .iter()
        .flat_map(|(actions, resources)| {
            actions.iter().flat_map(move |a| {
                resources
                    .iter()
                    .map(move |r| ((*a).to_owned(), (*r).to_owned()))
            })
        })
        .collect()
}

#[test]
fn functions_run_on_arm64_al2023_at_128_mb_with_tracing_and_json_logs() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(text(&globals["Architectures"]), "arm64");
    assert_eq!(globals["MemorySize"].as_u64(), Some(128));
    assert_eq!(globals["Tracing"].as_str(), Some("Active"));
    for function in [
        "ProcessMessageFunction",
        "EndConversationFunction",
        "FeedbackLoopFunction",
        "ReadApiFunction",
        "SpoolConsumerFunction",
    ] {
        let properties = &resource(&template, function)["Properties"];
        assert!(
            properties.get("MemorySize").is_none(),
            "{function}: 128 MB from Globals"
        );
        assert_eq!(
            properties["LoggingConfig"]["LogFormat"].as_str(),
            Some("JSON")
        );
        let log_group = text(&properties["LoggingConfig"]["LogGroup"]);
        let group = resource(&template, log_group.trim_start_matches("!Ref "));
        assert!(
            group["Properties"]["RetentionInDays"]
                .as_mapping()
                .is_some()
                || !group["Properties"]["RetentionInDays"].is_null()
        );
    }
    // Each function gets only the environment it needs.
    let env = |function: &str| -> BTreeSet<String> {
        resource(&template, function)["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        env("ProcessMessageFunction"),
        set(&[
            "TABLE_NAME",
            "TENANT_CLAIM",
            "SALESLOOP_RETENTION_DAYS",
            "SALESLOOP_MESSAGE_TEXT",
            "LLM_BASE_URL",
            "LLM_MODEL",
            "LLM_TIMEOUT_MS",
            "LLM_API_KEY_PARAMETER",
            "RECORD_BUDGET_MS",
            "SPOOL_QUEUE_URL"
        ])
    );
    assert_eq!(
        env("SpoolConsumerFunction"),
        set(&[
            "TABLE_NAME",
            "SALESLOOP_RETENTION_DAYS",
            "SPOOL_DEAD_LETTER_QUEUE_URL"
        ])
    );
    assert_eq!(
        env("EndConversationFunction"),
        set(&[
            "TABLE_NAME",
            "TENANT_CLAIM",
            "SALESLOOP_RETENTION_DAYS",
            "FEEDBACK_EVERY",
            "FEEDBACK_FUNCTION",
            "SALESLOOP_MESSAGE_TEXT",
            "END_SHARDS"
        ])
    );
    assert_eq!(
        env("FeedbackLoopFunction"),
        set(&[
            "TABLE_NAME",
            "FEEDBACK_SETTLE_SECONDS",
            "FEEDBACK_FAN_OUT",
            "END_SHARDS"
        ])
    );
    assert_eq!(env("ReadApiFunction"), set(&["TABLE_NAME", "TENANT_CLAIM"]));
    assert_eq!(
        env("AdminApiFunction"),
        set(&[
            "TABLE_NAME",
            "TENANT_CLAIM",
            "ADMIN_SCOPE",
            "SALESLOOP_WARM_UP"
        ])
    );
    // Every API route requires the JWT authorizer, except the dashboard page (which holds no
    // data: the page sends the user's token with each read).
    let api = &resource(&template, "Api")["Properties"];
    assert_eq!(api["Auth"]["DefaultAuthorizer"].as_str(), Some("Jwt"));
    assert!(
        api["AccessLogSettings"]["DestinationArn"]
            .as_mapping()
            .is_some()
            || !api["AccessLogSettings"]["DestinationArn"].is_null()
    );
    for (function, paths) in routes_by_function() {
        let events = resource(&template, function)["Properties"]["Events"]
            .as_mapping()
            .unwrap();
        let mut routed = BTreeSet::new();
        for event in events.values() {
            assert_eq!(event["Type"].as_str(), Some("HttpApi"), "{function}");
            let method = event["Properties"]["Method"].as_str().unwrap();
            let path = text(&event["Properties"]["Path"]);
            let auth = &event["Properties"]["Auth"];
            if path == "/dashboard" {
                assert_eq!(auth["Authorizer"].as_str(), Some("NONE"));
            } else if *function == *"AdminApiFunction" {
                // The admin routes: the authorizer, and the admin scope in the token.
                assert_eq!(auth["Authorizer"].as_str(), Some("Jwt"), "{path}");
                assert_eq!(
                    list(&auth["AuthorizationScopes"])
                        .into_iter()
                        .map(text)
                        .collect::<Vec<_>>(),
                    ["!Ref AdminScope"],
                    "{path}"
                );
            } else {
                assert!(
                    auth.is_null(),
                    "{function} {path}: opts out of the authorizer"
                );
            }
            routed.insert(format!("{method} {path}"));
        }
        assert_eq!(
            routed, paths,
            "{function}: the template's routes differ from the code's"
        );
    }
}

#[test]
fn the_llm_settings_and_its_key_parameter_reach_process_message_alone() {
    let template = template();
    let parameters = &template["Parameters"];
    let parameter = |name: &str, field: &str| text(&parameters[name][field]);
    // An empty base URL or key parameter means none: templates answer, no key is read.
    assert_eq!(parameter("LlmBaseUrl", "Default"), "");
    assert_eq!(
        parameter("LlmBaseUrl", "AllowedPattern"),
        r"^(https://\S+)?$"
    );
    assert_eq!(parameter("LlmModel", "Default"), "gpt-4o-mini");
    assert_eq!(parameter("LlmApiKeyParameter", "Default"), "");
    // A full name (the leading slash): the grant's ARN is `parameter` followed by it.
    assert_eq!(
        parameter("LlmApiKeyParameter", "AllowedPattern"),
        "^(/[A-Za-z0-9_.-]+){0,15}$"
    );
    // The LLM's timeout: the code's default, and within both the code's range (1 to 60,000 ms)
    // and the function's timeout, which must leave time for the store.
    let timeout = &parameters["LlmTimeoutMs"];
    assert_eq!(timeout["Type"].as_str(), Some("Number"));
    assert_eq!(timeout["Default"].as_u64(), Some(2_000));
    let (min, max) = (timeout["MinValue"].as_u64(), timeout["MaxValue"].as_u64());
    let function_timeout_ms = template["Globals"]["Function"]["Timeout"].as_u64().unwrap() * 1000;
    assert!(
        resource(&template, "ProcessMessageFunction")["Properties"]
            .get("Timeout")
            .is_none()
    );
    assert!(matches!((min, max), (Some(1..), Some(max)) if max < function_timeout_ms - 1_000));

    // The LLM's variables reach process_message alone, each from its parameter; the key itself
    // is in no function's environment.
    let llm = [
        ("LLM_BASE_URL", "!Ref LlmBaseUrl"),
        ("LLM_MODEL", "!Ref LlmModel"),
        ("LLM_TIMEOUT_MS", "!Ref LlmTimeoutMs"),
        ("LLM_API_KEY_PARAMETER", "!Ref LlmApiKeyParameter"),
    ];
    assert!(template["Globals"]["Function"].get("Environment").is_none());
    let mut functions = 0;
    for (name, resource) in resources(&template) {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let variables = &resource["Properties"]["Environment"]["Variables"];
        assert!(variables.get("LLM_API_KEY").is_none(), "{name:?}");
        for (variable, value) in llm {
            if name.as_str() == Some("ProcessMessageFunction") {
                assert_eq!(text(&variables[variable]), value);
            } else {
                assert!(variables.get(variable).is_none(), "{name:?}: {variable}");
            }
        }
    }
    assert!(functions >= 4);

    // Secrets: one statement in the whole template reads any, process_message's, on the
    // parameter's ARN alone, and only under the condition that the parameter is set.
    assert_eq!(
        text(&template["Conditions"]["HasLlmApiKeyParameter"]),
        "!Not !Equals !Ref LlmApiKeyParameter,"
    );
    let mut secret_reads = Vec::new();
    for (name, resource) in resources(&template) {
        if resource["Type"].as_str() != Some("AWS::IAM::Role") {
            continue;
        }
        for (condition, statement) in conditional_statements(resource) {
            let actions: Vec<String> = list(&statement["Action"]).into_iter().map(text).collect();
            let secret = actions.iter().any(|a| {
                a.starts_with("ssm:") || a.starts_with("kms:") || a.starts_with("secretsmanager:")
            });
            if secret {
                secret_reads.push((
                    name.as_str().unwrap().to_owned(),
                    condition,
                    actions,
                    text(&statement["Resource"]),
                ));
            } else {
                assert_eq!(
                    condition, None,
                    "{name:?}: only the key's read is conditional"
                );
            }
        }
    }
    assert_eq!(
        secret_reads,
        [(
            "ProcessMessageRole".to_owned(),
            Some("HasLlmApiKeyParameter".to_owned()),
            vec!["ssm:GetParameter".to_owned()],
            LLM_KEY_ARN.to_owned(),
        )]
    );
    assert_eq!(
        text(&resource(&template, "ProcessMessageFunction")["Properties"]["Role"]),
        "!GetAtt ProcessMessageRole.Arn"
    );
}

/// Every SQS action any role grants, with its role and resource.
fn sqs_grants(template: &Value) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for (name, resource) in resources(template) {
        if resource["Type"].as_str() != Some("AWS::IAM::Role") {
            continue;
        }
        for (actions, resources) in statements(resource) {
            for action in actions
                .iter()
                .filter(|a| a.to_lowercase().starts_with("sqs:"))
            {
                for arn in &resources {
                    found.insert((
                        name.as_str().unwrap().to_owned(),
                        action.clone(),
                        arn.clone(),
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn the_spool_is_fifo_encrypted_and_reaches_only_its_producer_and_consumer() {
    let template = template();
    // Every queue is encrypted at rest, and no queue policy opens one to anyone.
    let mut queues = BTreeSet::new();
    for (name, r) in resources(&template) {
        let kind = r["Type"].as_str().unwrap();
        // A queue policy would grant beside the roles.
        assert!(
            !matches!(
                kind,
                "AWS::SQS::QueuePolicy" | "AWS::SQS::QueueInlinePolicy"
            ),
            "{name:?}: {kind}"
        );
        if kind != "AWS::SQS::Queue" {
            continue;
        }
        queues.insert(name.as_str().unwrap());
        let p = &r["Properties"];
        let kms = p["KmsMasterKeyId"].as_str().is_some_and(|k| !k.is_empty());
        let managed = p["SqsManagedSseEnabled"].as_bool() == Some(true);
        assert!(kms || managed, "{name:?}: not encrypted at rest");
    }
    assert_eq!(
        queues,
        BTreeSet::from(["FeedbackFailures", "SpoolQueue", "SpoolDeadLetterQueue"])
    );

    // The spool: FIFO, one message group per conversation and the producer's deduplication id
    // (high-throughput FIFO), kept 14 days.
    let spool = &resource(&template, "SpoolQueue")["Properties"];
    assert_eq!(spool["FifoQueue"].as_bool(), Some(true));
    assert_eq!(spool["ContentBasedDeduplication"].as_bool(), Some(false));
    assert_eq!(spool["DeduplicationScope"].as_str(), Some("messageGroup"));
    assert_eq!(
        spool["FifoThroughputLimit"].as_str(),
        Some("perMessageGroupId")
    );
    assert_eq!(spool["MessageRetentionPeriod"].as_u64(), Some(1_209_600));
    // Its dead letters: FIFO too (SQS requires it), kept 14 days from their arrival, the end
    // of the line.
    let dead = &resource(&template, "SpoolDeadLetterQueue")["Properties"];
    assert_eq!(dead["FifoQueue"].as_bool(), Some(true));
    assert_eq!(dead["MessageRetentionPeriod"].as_u64(), Some(1_209_600));
    assert!(dead.get("RedrivePolicy").is_none());

    // A record the consumer could not store comes back after each visibility timeout, at least
    // 6 x the consumer's timeout (AWS's advice), and goes to the dead-letter queue only after
    // enough receives to outlast a store outage of hours.
    let redrive = &spool["RedrivePolicy"];
    assert_eq!(
        text(&redrive["deadLetterTargetArn"]),
        "!GetAtt SpoolDeadLetterQueue.Arn"
    );
    let consumer = &resource(&template, "SpoolConsumerFunction")["Properties"];
    let timeout = consumer["Timeout"]
        .as_u64()
        .expect("the consumer's own timeout");
    let visibility = spool["VisibilityTimeout"].as_u64().unwrap();
    assert!(
        visibility >= 6 * timeout,
        "{visibility} s < 6 x {timeout} s"
    );
    let receives = redrive["maxReceiveCount"].as_u64().unwrap();
    assert!((1..=1_000).contains(&receives));
    assert!(
        receives * visibility >= 6 * 3600,
        "{receives} receives x {visibility} s: a store outage of less than 6 hours moves good records to the dead-letter queue"
    );

    // The consumer's one event: the spool, in batches whose failures it reports one by one.
    let events = consumer["Events"].as_mapping().unwrap();
    assert_eq!(events.len(), 1);
    let event = events.values().next().unwrap();
    assert_eq!(event["Type"].as_str(), Some("SQS"));
    let p = &event["Properties"];
    assert_eq!(text(&p["Queue"]), "!GetAtt SpoolQueue.Arn");
    assert_eq!(p["BatchSize"].as_u64(), Some(10));
    assert_eq!(
        list(&p["FunctionResponseTypes"])
            .into_iter()
            .map(text)
            .collect::<Vec<_>>(),
        ["ReportBatchItemFailures"]
    );
    assert!(p["ScalingConfig"]["MaximumConcurrency"].as_u64().is_some());
    // No other function is fed by a queue, and only these two know a spool queue's URL.
    let variables =
        |function: &str| &resource(&template, function)["Properties"]["Environment"]["Variables"];
    for (name, r) in resources(&template) {
        let name = name.as_str().unwrap();
        if r["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        if name != "SpoolConsumerFunction" {
            for event in r["Properties"]["Events"].as_mapping().unwrap().values() {
                assert_ne!(event["Type"].as_str(), Some("SQS"), "{name}");
            }
        }
        let spool_variables: BTreeSet<String> = variables(name)
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .filter(|k| k.starts_with("SPOOL_"))
            .collect();
        let want: &[&str] = match name {
            "ProcessMessageFunction" => &["SPOOL_QUEUE_URL"],
            "SpoolConsumerFunction" => &["SPOOL_DEAD_LETTER_QUEUE_URL"],
            _ => &[],
        };
        assert_eq!(
            spool_variables,
            want.iter().map(|s| (*s).to_owned()).collect(),
            "{name}"
        );
    }
    let process_message = variables("ProcessMessageFunction");
    assert_eq!(text(&process_message["SPOOL_QUEUE_URL"]), "!Ref SpoolQueue");
    let consumer_env = variables("SpoolConsumerFunction");
    assert_eq!(
        text(&consumer_env["SPOOL_DEAD_LETTER_QUEUE_URL"]),
        "!Ref SpoolDeadLetterQueue"
    );
    assert_eq!(text(&consumer_env["TABLE_NAME"]), "!Ref Table");
    // The exchanges the consumer records expire as process_message's do.
    assert_eq!(
        text(&consumer_env["SALESLOOP_RETENTION_DAYS"]),
        text(&process_message["SALESLOOP_RETENTION_DAYS"])
    );
    // The store's budget (which counts every moment but the LLM's), the LLM's longest wait (asked
    // at most once per message) and the spool client's 1 s budget fit in the function's timeout.
    let budget: u64 = process_message["RECORD_BUDGET_MS"]
        .as_str()
        .expect("a string, as Lambda's environment holds")
        .parse()
        .unwrap();
    assert_eq!(budget, 1_000);
    let llm_max = template["Parameters"]["LlmTimeoutMs"]["MaxValue"]
        .as_u64()
        .unwrap();
    let function_timeout_ms = template["Globals"]["Function"]["Timeout"].as_u64().unwrap() * 1000;
    let spool_budget = 1_000;
    assert!(llm_max + budget + spool_budget < function_timeout_ms);

    // The whole template's SQS grants: process_message sends to the spool, spool_consumer takes
    // from it and sends to its dead-letter queue, feedback_loop sends to its failure queue.
    // Nothing else, on no other queue.
    let spool_queue = "!GetAtt SpoolQueue.Arn";
    let grant =
        |role: &str, action: &str, arn: &str| (role.to_owned(), action.to_owned(), arn.to_owned());
    assert_eq!(
        sqs_grants(&template),
        BTreeSet::from([
            grant("ProcessMessageRole", "sqs:SendMessage", spool_queue),
            grant("SpoolConsumerRole", "sqs:ReceiveMessage", spool_queue),
            grant("SpoolConsumerRole", "sqs:DeleteMessage", spool_queue),
            grant("SpoolConsumerRole", "sqs:GetQueueAttributes", spool_queue),
            grant(
                "SpoolConsumerRole",
                "sqs:SendMessage",
                "!GetAtt SpoolDeadLetterQueue.Arn"
            ),
            grant(
                "FeedbackLoopRole",
                "sqs:SendMessage",
                "!GetAtt FeedbackFailures.Arn"
            ),
        ])
    );
    assert_eq!(
        text(&resource(&template, "SpoolConsumerFunction")["Properties"]["Role"]),
        "!GetAtt SpoolConsumerRole.Arn"
    );

    // A dead letter raises an alarm at once; so does a record waiting more than 5 minutes.
    let alarm = |name: &str| -> (String, String, String, String, f64) {
        let r = resource(&template, name);
        assert_eq!(r["Type"].as_str(), Some("AWS::CloudWatch::Alarm"), "{name}");
        let p = &r["Properties"];
        assert_eq!(text(&p["AlarmActions"]), "!Ref AlarmTopic", "{name}");
        (
            text(&p["Namespace"]),
            text(&p["MetricName"]),
            text(&p["Dimensions"][0]["Value"]),
            text(&p["ComparisonOperator"]),
            p["Threshold"].as_f64().unwrap(),
        )
    };
    let (namespace, metric, queue, operator, threshold) = alarm("SpoolDeadLetterAlarm");
    assert_eq!(
        (namespace.as_str(), metric.as_str(), queue.as_str()),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "!GetAtt SpoolDeadLetterQueue.QueueName"
        )
    );
    assert!(
        (operator == "GreaterThanThreshold" && threshold == 0.0)
            || (operator == "GreaterThanOrEqualToThreshold" && threshold == 1.0),
        "the first dead letter: {operator} {threshold}"
    );
    let (namespace, metric, queue, operator, threshold) = alarm("SpoolBacklogAlarm");
    assert_eq!(
        (namespace.as_str(), metric.as_str(), queue.as_str()),
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "!GetAtt SpoolQueue.QueueName"
        )
    );
    assert_eq!(operator, "GreaterThanThreshold");
    assert!(threshold <= 300.0, "{threshold} s");
    // An exchange that only a log line holds raises an alarm at once: process_message's EMF
    // metric for it (`ExchangesLogged`).
    let (namespace, metric, function, operator, threshold) = alarm("UnrecordedLoggedAlarm");
    assert_eq!(
        (namespace.as_str(), metric.as_str(), function.as_str()),
        ("salesloop", "ExchangesLogged", "process_message")
    );
    assert_eq!(
        (operator.as_str(), threshold),
        ("GreaterThanThreshold", 0.0)
    );

    // The operator finds both queues in the stack's outputs.
    let outputs = &template["Outputs"];
    assert_eq!(text(&outputs["SpoolQueueUrl"]["Value"]), "!Ref SpoolQueue");
    assert_eq!(
        text(&outputs["SpoolDeadLetterQueueUrl"]["Value"]),
        "!Ref SpoolDeadLetterQueue"
    );
}

/// The function each of the code's routes belongs to (`salesloop::edge::http::ROUTES`): a new
/// action does not compile here until it has a function.
fn function_of(action: Action) -> (&'static str, &'static str) {
    match action {
        Action::Message => ("ProcessMessageFunction", "process_message"),
        Action::End | Action::Labels => ("EndConversationFunction", "end_conversation"),
    }
}

/// Every API function's routes (`METHOD /path`), as the code answers them: the write routes of
/// `salesloop::edge::http::ROUTES` and the read routes of `READ_ROUTES`, all read_api's.
fn routes_by_function() -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut routes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (segment, action) in ROUTES {
        routes
            .entry(function_of(action).0)
            .or_default()
            .insert(format!("POST /conversations/{{conversation_id}}/{segment}"));
    }
    for path in READ_ROUTES {
        routes
            .entry("ReadApiFunction")
            .or_default()
            .insert(format!("GET {path}"));
    }
    for (method, path) in admin_routes() {
        routes
            .entry("AdminApiFunction")
            .or_default()
            .insert(format!("{method} {path}"));
    }
    routes
}

/// Every admin route with its method: each of `ADMIN_ROUTES` as `admin_route` answers it.
fn admin_routes() -> Vec<(&'static str, &'static str)> {
    let methods = |path: &str| -> &'static [&'static str] {
        match path {
            "/experiments" => &["GET"],
            "/experiments/{name}" => &["PUT"],
            "/playbook" => &["GET", "PUT"],
            _ => &["POST"],
        }
    };
    let routes: Vec<(&str, &str)> = ADMIN_ROUTES
        .into_iter()
        .flat_map(|path| methods(path).iter().map(move |m| (*m, path)))
        .collect();
    // Each method is the one the code takes for that route, and no other.
    for path in ADMIN_ROUTES {
        let concrete = path
            .replace("{name}", "reply_tone")
            .replace("{version}", "3");
        for method in ["GET", "PUT", "POST", "DELETE"] {
            let request = lambda_http::http::Request::builder()
                .method(method)
                .uri(&concrete)
                .body(lambda_http::Body::Empty)
                .unwrap();
            let request = lambda_http::RequestExt::with_raw_http_path(request, &concrete);
            let answered = salesloop::edge::admin::admin_route(&request).is_ok();
            assert_eq!(answered, methods(path).contains(&method), "{method} {path}");
        }
    }
    routes
}

#[test]
fn admin_api_reaches_only_configuration_and_model_items() {
    let template = template();
    let role = resource(&template, "AdminApiRole");
    let (tables, denied): (Vec<&Value>, Vec<&Value>) = conditional_statements(role)
        .into_iter()
        .map(|(_, statement)| statement)
        .filter(|statement| text(&statement["Resource"]) == "!GetAtt Table.Arn")
        .partition(|statement| statement["Effect"].as_str() == Some("Allow"));
    assert_eq!(tables.len(), 1);
    // `T#*#CONFIG` also matches `T#acme#C#CONFIG`, a conversation named CONFIG: a Deny of every
    // key with three `#` (a conversation's) covers every action the Allow grants.
    assert_eq!(denied.len(), 1);
    assert_eq!(
        list(&denied[0]["Condition"]["ForAnyValue:StringLike"]["dynamodb:LeadingKeys"])
            .into_iter()
            .map(text)
            .collect::<Vec<_>>(),
        ["T#*#*#*"]
    );
    let actions = |statement: &Value| -> BTreeSet<String> {
        list(&statement["Action"]).into_iter().map(text).collect()
    };
    assert_eq!(actions(denied[0]), actions(tables[0]));
    let like = |pattern: &str, key: &str| {
        // IAM's StringLike: `*` matches any run of characters.
        let parts: Vec<&str> = pattern.split('*').collect();
        let mut rest = key;
        for (i, part) in parts.iter().enumerate() {
            match rest.find(part) {
                Some(at) if i > 0 || at == 0 => rest = &rest[at + part.len()..],
                _ => return false,
            }
        }
        parts
            .last()
            .is_none_or(|last| last.is_empty() || key.ends_with(last))
    };
    let allowed =
        |key: &str| (like("T#*#CONFIG", key) || like("T#*#MODEL", key)) && !like("T#*#*#*", key);
    for (key, ok) in [
        ("T#acme#CONFIG", true),
        ("T#acme#MODEL", true),
        ("T#acme#C#CONFIG", false),
        ("T#acme#C#MODEL", false),
        ("T#acme#C#c-1", false),
        ("T#acme#OUTCOME", false),
        ("T#acme#COUNTER", false),
        ("T#acme#LEASE", false),
        ("WARMUP", false),
    ] {
        assert_eq!(allowed(key), ok, "{key}");
    }
    let condition = &tables[0]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
    assert_eq!(
        list(condition).into_iter().map(text).collect::<Vec<_>>(),
        ["T#*#CONFIG", "T#*#MODEL"],
        "the tenants' configuration and model partitions, nothing else"
    );
    // The scope the template asks of admins is the one the code checks by default.
    assert_eq!(
        text(&template["Parameters"]["AdminScope"]["Default"]),
        salesloop::edge::admin::DEFAULT_ADMIN_SCOPE
    );
    let env = &resource(&template, "AdminApiFunction")["Properties"]["Environment"]["Variables"];
    assert_eq!(text(&env["ADMIN_SCOPE"]), "!Ref AdminScope");
    // No other function reads or writes the configuration but process_message (reads, on its
    // whole-table grant) and feedback_loop (reads): admin_api alone publishes it.
}

#[test]
fn make_run_routes_every_route_of_the_code_to_its_function() {
    // `cargo lambda watch` routes as `[workspace.metadata.lambda.watch.router]` says.
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let router: BTreeSet<&str> = manifest
        .lines()
        .skip_while(|line| line.trim() != "[workspace.metadata.lambda.watch.router]")
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let expected: BTreeSet<String> = ROUTES
        .into_iter()
        .map(|(segment, action)| {
            format!(
                r#""/conversations/{{conversation_id}}/{segment}" = [{{ method = "POST", function = "{}" }}]"#,
                function_of(action).1
            )
        })
        .chain(READ_ROUTES.into_iter().map(|path| {
            format!(r#""{path}" = [{{ method = "GET", function = "read_api" }}]"#)
        }))
        .chain(ADMIN_ROUTES.into_iter().map(|path| {
            let methods: Vec<String> = admin_routes()
                .into_iter()
                .filter(|(_, p)| *p == path)
                .map(|(m, _)| format!(r#"{{ method = "{m}", function = "admin_api" }}"#))
                .collect();
            format!(r#""{path}" = [{}]"#, methods.join(", "))
        }))
        .collect();
    assert_eq!(
        router,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[test]
fn the_table_is_the_one_the_code_expects_and_is_protected() {
    let template = template();
    let table = resource(&template, "Table");
    assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"));
    let p = &table["Properties"];
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(p["SSESpecification"]["SSEEnabled"].as_bool(), Some(true));
    assert_eq!(p["DeletionProtectionEnabled"].as_bool(), Some(true));
    assert_eq!(
        p["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
    assert_eq!(
        p["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    let keys = |schema: &Value| -> Vec<(String, String)> {
        list(schema)
            .into_iter()
            .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
            .collect()
    };
    let pair = |a: &str, b: &str| {
        vec![
            (a.to_owned(), "HASH".to_owned()),
            (b.to_owned(), "RANGE".to_owned()),
        ]
    };
    assert_eq!(keys(&p["KeySchema"]), pair("pk", "sk"));
    let lsi = &p["LocalSecondaryIndexes"][0];
    assert_eq!(lsi["IndexName"].as_str(), Some(MESSAGE_INDEX));
    assert_eq!(keys(&lsi["KeySchema"]), pair("pk", "mid"));
    assert_eq!(
        lsi["Projection"]["ProjectionType"].as_str(),
        Some("KEYS_ONLY")
    );
    let gsi = &p["GlobalSecondaryIndexes"][0];
    assert_eq!(gsi["IndexName"].as_str(), Some(TIME_INDEX));
    assert_eq!(keys(&gsi["KeySchema"]), pair("gsi1pk", "gsi1sk"));
    assert_eq!(text(&gsi["Projection"]["NonKeyAttributes"]), "body");
    let starts = &p["GlobalSecondaryIndexes"][1];
    assert_eq!(starts["IndexName"].as_str(), Some(START_INDEX));
    assert_eq!(keys(&starts["KeySchema"]), pair("gsi2pk", "gsi2sk"));
    assert_eq!(
        starts["Projection"]["ProjectionType"].as_str(),
        Some("KEYS_ONLY")
    );
    // The failure destination and the alarms on it exist.
    assert_eq!(
        text(
            &resource(&template, "FeedbackLoopFunction")["Properties"]["EventInvokeConfig"]["DestinationConfig"]
                ["OnFailure"]["Destination"]
        ),
        "!GetAtt FeedbackFailures.Arn"
    );
    let alarms: Vec<String> = resources(&template)
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|r| {
            format!(
                "{}:{}",
                text(&r["Properties"]["Namespace"]),
                text(&r["Properties"]["MetricName"])
            )
        })
        .collect();
    assert_eq!(
        alarms.iter().filter(|a| *a == "AWS/Lambda:Errors").count(),
        6
    );
    assert_eq!(
        alarms
            .iter()
            .filter(|a| *a == "AWS/Lambda:Throttles")
            .count(),
        6
    );
    assert!(alarms.contains(&"AWS/SQS:ApproximateNumberOfMessagesVisible".to_owned()));
}

/// The source files that print salesloop's EMF metrics: a metric the template watches must be
/// one of theirs.
fn emitted_metric(name: &str) -> bool {
    [
        "shared/src/edge/emf.rs",
        "functions/feedback_loop/src/report.rs",
    ]
    .iter()
    .map(|file| std::fs::read_to_string(workspace_root().join(file)).unwrap())
    .any(|source| source.contains(&format!("\"{name}\"")))
}

#[test]
fn prospects_getting_server_errors_or_slow_replies_raise_an_alarm() {
    let template = template();
    // (namespace, metric, dimension value) of every alarm, with its statistic.
    let alarms: Vec<(String, String, String, String)> = resources(&template)
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|r| {
            let p = &r["Properties"];
            assert_eq!(text(&p["AlarmActions"]), "!Ref AlarmTopic", "{p:?}");
            (
                text(&p["Namespace"]),
                text(&p["MetricName"]),
                text(&p["Dimensions"][0]["Value"]),
                text(
                    p.get("ExtendedStatistic")
                        .or(p.get("Statistic"))
                        .expect("a statistic"),
                ),
            )
        })
        .collect();
    let has = |namespace: &str, metric: &str, dimension: &str, statistic: &str| {
        alarms.contains(&(
            namespace.to_owned(),
            metric.to_owned(),
            dimension.to_owned(),
            statistic.to_owned(),
        ))
    };
    // A handler that answers 503 returns normally: Lambda's Errors cannot see it; these can.
    assert!(has("salesloop", "ServerErrors", "process_message", "Sum"));
    assert!(has("salesloop", "ServerErrors", "end_conversation", "Sum"));
    assert!(has("salesloop", "ServerErrors", "read_api", "Sum"));
    assert!(has("salesloop", "ServerErrors", "admin_api", "Sum"));
    assert!(has("AWS/Lambda", "Errors", "!Ref AdminApiFunction", "Sum"));
    assert!(has(
        "AWS/Lambda",
        "Throttles",
        "!Ref AdminApiFunction",
        "Sum"
    ));
    assert!(has("AWS/ApiGateway", "5xx", "!Ref Api", "Sum"));
    assert!(has(
        "AWS/Lambda",
        "Errors",
        "!Ref SpoolConsumerFunction",
        "Sum"
    ));
    assert!(has(
        "AWS/Lambda",
        "Throttles",
        "!Ref SpoolConsumerFunction",
        "Sum"
    ));
    assert!(has("salesloop", "Latency", "process_message", "p99"));
    let latency = resource(&template, "ProcessMessageLatencyP99");
    assert_eq!(
        text(&latency["Properties"]["Threshold"]),
        "!Ref LatencyP99AlarmMs"
    );
    assert_eq!(
        text(&template["Parameters"]["LatencyP99AlarmMs"]["Default"]),
        "1000"
    );
    for (namespace, metric, ..) in &alarms {
        if namespace == "salesloop" {
            assert!(emitted_metric(metric), "{metric} is printed by no code");
        }
    }
}

#[test]
fn the_dashboard_draws_latency_errors_tracking_and_learning_from_metrics_the_code_prints() {
    let template = template();
    let dashboard = resource(&template, "OperationsDashboard");
    assert_eq!(
        dashboard["Type"].as_str(),
        Some("AWS::CloudWatch::Dashboard")
    );
    let Value::Tagged(sub) = &dashboard["Properties"]["DashboardBody"] else {
        panic!("the body is a !Sub");
    };
    let body = sub.value[0].as_str().expect("the body's text");
    // With every ${...} replaced by a number, the body is the dashboard's JSON.
    let mut plain = String::new();
    let mut rest = body;
    while let Some(at) = rest.find("${") {
        plain.push_str(&rest[..at]);
        plain.push('1');
        rest = &rest[at + rest[at..].find('}').expect("a closing brace") + 1..];
    }
    plain.push_str(rest);
    let json: serde_json::Value = serde_json::from_str(&plain).expect("the body is JSON");
    let titles: Vec<&str> = json["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["properties"]["title"].as_str())
        .collect();
    for wanted in [
        "Latency",
        "Server errors",
        "tracking rate",
        "precision and recall",
        "Model versions",
        "Outcome correlation",
        "Alarms",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "{wanted} in {titles:?}"
        );
    }
    for metric in [
        "Latency",
        "ServerErrors",
        "ClientErrors",
        "EventTrackingRate",
        "PatternPrecision",
        "PatternRecall",
        "ModelUpdates",
        "OutcomesLearned",
        "OutcomeCorrelation",
    ] {
        assert!(body.contains(metric), "{metric} on the dashboard");
        assert!(emitted_metric(metric), "{metric} is printed by no code");
    }
    // The spool consumer's errors, and the spool's depth, age and dead letters.
    assert!(body.contains(r#"["...", "${SpoolConsumerFunction}"]"#));
    for (metric, queue) in [
        ("ApproximateNumberOfMessagesVisible", "SpoolQueue"),
        ("ApproximateAgeOfOldestMessage", "SpoolQueue"),
        ("ApproximateNumberOfMessagesVisible", "SpoolDeadLetterQueue"),
    ] {
        assert!(
            body.contains(&format!(
                r#"["AWS/SQS", "{metric}", "QueueName", "${{{queue}.QueueName}}""#
            )),
            "{metric} of {queue} on the dashboard"
        );
    }
    // Every alarm of the template is on it.
    for (name, r) in resources(&template) {
        if r["Type"].as_str() == Some("AWS::CloudWatch::Alarm") {
            let name = name.as_str().unwrap();
            assert!(body.contains(&format!("${{{name}.Arn}}")), "{name}");
        }
    }
}
