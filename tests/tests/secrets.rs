//! process_message's LLM key, read during init from an SSM Parameter Store SecureString
//! (`process_message::llm_key`), against moto's server (`salesloop_tests::moto`:
//! `scripts/moto.sh`, a pinned moto in `.venv-moto/` installed on first use) started here on a
//! free port and stopped with the run. A SecureString put through the SSM API is the key
//! `App::from_env` hands the LLM client, which sends it to a stand-in LLM; a missing parameter
//! or a plain String one stops init with an error that names the parameter and never holds a
//! value; a read that gets no answer gives up in time.
//!
//! What moto does not check, so these tests cannot either:
//! - IAM: any credentials read any parameter. The role's one grant (`ssm:GetParameter` on the
//!   parameter's ARN, process_message's role alone) is pinned by tests/tests/template.rs.
//! - KMS: a SecureString is stored as it was put; no key, key policy or `kms:ViaService`
//!   condition is evaluated (without decryption moto answers `kms:<key>:<value>`, so reading the
//!   exact value does show that the function asks for decryption).
//! - Request signatures, and GetParameter's throughput limit (throttling).
//!
//! The process's AWS settings (endpoint, region, credentials) are the environment, as on Lambda:
//! main sets them before any thread starts, then runs the trials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ssm::types::ParameterType;
use lambda_http::Body;
use libtest_mimic::{Arguments, Failed, Trial};
use process_message::handler::{App, handle};
use process_message::llm_key;
use salesloop::clients::aws::SdkConfig;
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::fake_llm::{LlmMode, fake_llm};
use salesloop_tests::moto::Moto;
use salesloop_tests::workspace_root;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// An SSM client of moto's, as an operator's `aws ssm put-parameter` would be.
fn ssm(moto: &Moto) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// A parameter name of this run's own.
fn parameter(name: &str) -> String {
    format!("/salesloop/test-{}/{name}", std::process::id())
}

async fn put(moto: &Moto, name: &str, value: &str, kind: ParameterType) {
    ssm(moto)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {name} into moto: {e:?}"));
}

/// process_message's environment on the embedded store in `dir`, with `pairs` added.
fn env(dir: &std::path::Path, pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut all: Vec<(String, String)> =
        vec![("SALESLOOP_DATA_DIR".to_owned(), dir.display().to_string())];
    all.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    move |name| all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

async fn init_reads_the_key_from_a_secure_string_and_the_llm_gets_it(moto: &Moto) {
    let name = parameter("llm-api-key");
    let key = format!("sk-from-ssm-{}", std::process::id());
    // Put from a file, a value keeps its line break: the key is the value trimmed.
    put(
        moto,
        &name,
        &format!("{key}\n"),
        ParameterType::SecureString,
    )
    .await;
    let (base, seen) = fake_llm(LlmMode::Answer).await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::from_env(&env(
        dir.path(),
        &[("LLM_BASE_URL", &base), ("LLM_API_KEY_PARAMETER", &name)],
    ))
    .await
    .unwrap_or_else(|e| panic!("init: {e}"));
    let body = json!({"message_id": "m-1", "text": "we are losing leads every week"});
    let path = "/conversations/c-ssm/messages";
    let response = handle(
        &app,
        request(
            Flavor::HttpApi,
            "POST",
            path,
            &body.to_string(),
            Some("acme"),
            &[],
        ),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(answer["reply"]["source"], "llm", "{answer}");
    let requests = seen.lock().unwrap().join("\n").to_ascii_lowercase();
    assert!(
        requests.contains(&format!("authorization: bearer {key}\r\n")),
        "the LLM got the parameter's value, decrypted and trimmed:\n{requests}"
    );

    // The ARN names the same parameter.
    let arn = format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}");
    let sdk = moto_sdk(&moto.endpoint());
    assert_eq!(llm_key::read(&sdk, &arn).await.unwrap(), key);
}

async fn a_missing_parameter_stops_init_with_an_error_that_names_it(_moto: &Moto) {
    let name = parameter("no-such-key");
    let dir = tempfile::tempdir().unwrap();
    let error = App::from_env(&env(
        dir.path(),
        &[
            ("LLM_BASE_URL", "https://llm.example.com/v1"),
            ("LLM_API_KEY_PARAMETER", &name),
        ],
    ))
    .await
    .err()
    .expect("init fails")
    .to_string();
    assert!(error.starts_with("LLM_API_KEY_PARAMETER: "), "{error}");
    assert!(error.contains(&name), "{error}");
    assert!(error.contains("ParameterNotFound"), "{error}");
}

async fn a_plain_string_parameter_is_refused_and_its_value_never_printed(moto: &Moto) {
    let name = parameter("plain-key");
    let value = format!("sk-plaintext-{}", std::process::id());
    put(moto, &name, &value, ParameterType::String).await;
    let dir = tempfile::tempdir().unwrap();
    let error = App::from_env(&env(
        dir.path(),
        &[
            ("LLM_BASE_URL", "https://llm.example.com/v1"),
            ("LLM_API_KEY_PARAMETER", &name),
        ],
    ))
    .await
    .err()
    .expect("init fails");
    let printed = format!("{error} {error:?}");
    assert!(printed.contains(&name), "{printed}");
    assert!(printed.contains("not a SecureString"), "{printed}");
    assert!(!printed.contains(&value), "the value printed: {printed}");
}

async fn without_an_llm_the_parameter_is_not_read(_moto: &Moto) {
    // The template passes the parameter whether or not an LLM is configured; with no base URL
    // replies come from templates, and a parameter that does not exist stops nothing.
    let dir = tempfile::tempdir().unwrap();
    let app = App::from_env(&env(
        dir.path(),
        &[("LLM_API_KEY_PARAMETER", &parameter("never-read"))],
    ))
    .await
    .unwrap_or_else(|e| panic!("init: {e}"));
    assert!(app.llm.is_none());
}

/// An SDK configuration of its own, pointed at `endpoint`.
fn moto_sdk(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "tests",
        )))
        .build()
}

async fn a_read_that_gets_no_answer_gives_up_within_its_timeout(_moto: &Moto) {
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let name = parameter("silent");
    let started = Instant::now();
    let error = llm_key::read(&moto_sdk(&endpoint), &name)
        .await
        .expect_err("no answer");
    let waited = started.elapsed();
    assert!(
        waited < llm_key::READ_TIMEOUT + Duration::from_millis(500),
        "{waited:?}"
    );
    assert_eq!(error.variable, "LLM_API_KEY_PARAMETER");
    assert!(error.message.contains(&name), "{error}");
}

type Case = for<'a> fn(&'a Moto) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        [$((stringify!($case), (|moto| Box::pin($case(moto))) as Case)),*]
    };
}

fn main() {
    let args = Arguments::from_args();
    let cases = cases![
        init_reads_the_key_from_a_secure_string_and_the_llm_gets_it,
        a_missing_parameter_stops_init_with_an_error_that_names_it,
        a_plain_string_parameter_is_refused_and_its_value_never_printed,
        without_an_llm_the_parameter_is_not_read,
        a_read_that_gets_no_answer_gives_up_within_its_timeout,
    ];
    if args.list {
        let trials = cases.map(|(name, _)| Trial::test(name, || Ok(())));
        libtest_mimic::run(&args, trials.into()).exit();
    }
    // Never skipped: if moto cannot start, the run fails and says why.
    let moto = match Moto::start() {
        Ok(moto) => Arc::new(moto),
        Err(why) => {
            eprintln!("error: moto could not start, so these tests cannot run: {why}");
            std::process::exit(1);
        }
    };
    let config = workspace_root().join("target/no-such-aws-config");
    // SAFETY: no other thread exists yet: the runtime and the trials start below.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL_SSM", moto.endpoint());
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", &config);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &config);
        for name in ["AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"] {
            std::env::remove_var(name);
        }
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let trials: Vec<Trial> = cases
        .into_iter()
        .map(|(name, case)| {
            let (moto, runtime): (Arc<Moto>, Arc<Runtime>) = (moto.clone(), runtime.clone());
            Trial::test(name, move || -> Result<(), Failed> {
                runtime.block_on(case(&moto));
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(moto);
    conclusion.exit();
}
