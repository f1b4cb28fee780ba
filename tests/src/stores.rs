//! The two stores that store-generic cases run on, and the registration that runs each case on
//! both, so that no case can be left off a store.
//!
//! A case is an `async fn case<B: Backend>(backend: &B)` (returning `()` or `Result<(), Failed>`).
//! A test binary names its cases once, in one [`store_cases!`](crate::store_cases) list, and
//! the macro makes one libtest-mimic trial per store from it: `embedded::case` on an SQLite file
//! in a temporary folder, `dynamodb::case` on a table of its own in DynamoDB Local. A case that
//! needs DynamoDB itself (its wire, its pages) goes in the `dynamodb` list and takes a
//! `&DynamoBackend`; a case that needs no store goes in the `plain` list. Every test binary that
//! uses the macro denies `dead_code`, so a case function that is in no list does not compile.
//!
//! DynamoDB Local is started once per test binary, by the first `dynamodb::` trial that runs,
//! and stopped when the run ends. Skipping those trials (`-- --skip dynamodb::`, which
//! `make unit` does) therefore runs the embedded half without Java. If the server cannot start,
//! every `dynamodb::` trial fails with the reason: it is never skipped silently.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use aws_sdk_dynamodb::types::AttributeValue;
pub use libtest_mimic::{Arguments, Conclusion, Failed, Trial};
use salesloop::Store;
use salesloop::store::{DynamoStore, EmbeddedStore};
use tokio::runtime::Runtime;

use crate::dynamo_local::DynamoLocal;

/// Opens another handle to one store: another SQLite connection to the same file, or another
/// client of the same table.
pub type Opener<S> = Box<dyn Fn() -> S + Send + Sync>;

/// One stored row (SQLite, with its table under `"table"`) or item (DynamoDB), read around the
/// adapter: column or attribute name to the value as text.
pub type RawItem = BTreeMap<String, String>;

/// How DynamoDB split a scan into pages: the items of each page and their total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages {
    pub items: Vec<usize>,
    /// Attribute names and values, in bytes, as DynamoDB sizes items (numbers by their digits).
    pub bytes: usize,
}

/// A kind of store the cases run against.
pub trait Backend: Send + Sync + 'static {
    type Store: Store + 'static;

    /// `embedded` or `dynamodb`, as the trials' names begin.
    const NAME: &'static str;

    /// A new, empty store.
    fn opener(&self) -> impl Future<Output = Opener<Self::Store>> + Send;

    /// Everything the store holds, read without the adapter, sorted.
    fn raw_items(&self, store: &Self::Store) -> impl Future<Output = Vec<RawItem>> + Send;

    /// DynamoDB's pages of a scan of the whole table (`index` `None`) or of one index: `None`
    /// for a store that reads without pages.
    fn pages(
        &self,
        store: &Self::Store,
        index: Option<&'static str>,
    ) -> impl Future<Output = Option<Pages>> + Send;

    /// One handle to a new, empty store.
    fn open(&self) -> impl Future<Output = Self::Store> + Send {
        async { (self.opener().await)() }
    }

    /// `handles` separate handles to one new, empty store.
    fn fresh(&self, handles: usize) -> impl Future<Output = Vec<Arc<Self::Store>>> + Send {
        async move {
            let open = self.opener().await;
            (0..handles).map(|_| Arc::new(open())).collect()
        }
    }
}

/// Embedded stores in temporary folders, removed when the backend drops (at the end of the run).
#[derive(Default)]
pub struct EmbeddedBackend {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Backend for EmbeddedBackend {
    type Store = EmbeddedStore;
    const NAME: &'static str = "embedded";

    async fn opener(&self) -> Opener<EmbeddedStore> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().to_owned();
        self.dirs.lock().expect("dirs").push(dir);
        // Create the file and its schema once, before handles race to open it.
        drop(EmbeddedStore::open_dir(&path).expect("open embedded store"));
        Box::new(move || EmbeddedStore::open_dir(&path).expect("open embedded store"))
    }

    async fn raw_items(&self, store: &EmbeddedStore) -> Vec<RawItem> {
        let db = rusqlite::Connection::open_with_flags(
            store.path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the store file");
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut items = Vec::new();
        for table in tables {
            let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
            let rows = statement
                .query_map([], |row| {
                    let mut item = RawItem::from([("table".to_owned(), table.clone())]);
                    for (i, name) in names.iter().enumerate() {
                        item.insert(name.clone(), sql_text(row.get_ref(i)?));
                    }
                    Ok(item)
                })
                .unwrap();
            items.extend(rows.map(Result::unwrap));
        }
        items.sort();
        items
    }

    async fn pages(&self, _: &EmbeddedStore, _: Option<&'static str>) -> Option<Pages> {
        None
    }
}

fn sql_text(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => format!("{b:?}"),
    }
}

/// DynamoDB stores, each on its own table of one DynamoDB Local server, started by the first
/// case that asks for it.
#[derive(Default)]
pub struct DynamoBackend {
    server: OnceLock<Result<Arc<DynamoLocal>, String>>,
}

impl DynamoBackend {
    /// The server, started on first use; panics (failing the case) if it cannot start.
    pub fn server(&self) -> Arc<DynamoLocal> {
        match self.server.get_or_init(start_kept) {
            Ok(server) => server.clone(),
            Err(why) => panic!(
                "DynamoDB Local could not start, so this DynamoDB case cannot run \
                 (`make tools` installs it; `-- --skip dynamodb::` runs the embedded half \
                 alone): {why}"
            ),
        }
    }
}

/// Starts DynamoDB Local from a thread that lives as long as the process: the server is killed
/// when the thread that started it ends (`PR_SET_PDEATHSIG`), and libtest-mimic's worker
/// threads end before the run does.
fn start_kept() -> Result<Arc<DynamoLocal>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dynamodb-local".into())
        .spawn(move || {
            let _ = tx.send(DynamoLocal::start());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start a thread for DynamoDB Local: {e}"))?;
    let server = rx
        .recv()
        .map_err(|_| "the DynamoDB Local thread died".to_owned())??;
    Ok(Arc::new(server))
}

fn attribute_text(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attribute_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        other => format!("{other:?}").len(),
    }
}

impl Backend for DynamoBackend {
    type Store = DynamoStore;
    const NAME: &'static str = "dynamodb";

    async fn opener(&self) -> Opener<DynamoStore> {
        let store = self.server().fresh_store().await;
        Box::new(move || store.clone())
    }

    async fn raw_items(&self, store: &DynamoStore) -> Vec<RawItem> {
        let client = self.server().client();
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(store.table())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan the table");
            for item in page.items() {
                items.push(
                    item.iter()
                        .map(|(name, value)| (name.clone(), attribute_text(value)))
                        .collect(),
                );
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        items.sort();
        items
    }

    async fn pages(&self, store: &DynamoStore, index: Option<&'static str>) -> Option<Pages> {
        let client = self.server().client();
        let mut pages = Pages {
            items: Vec::new(),
            bytes: 0,
        };
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(store.table())
                .set_index_name(index.map(str::to_owned))
                // Global secondary indexes have no consistent reads.
                .set_consistent_read(index.is_none().then_some(true))
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan the table");
            pages.items.push(page.items().len());
            pages.bytes += page
                .items()
                .iter()
                .flat_map(|item| item.iter())
                .map(|(name, value)| name.len() + attribute_bytes(value))
                .sum::<usize>();
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Some(pages);
            }
        }
    }
}

/// What a case returns: nothing (it panics on failure) or libtest-mimic's result.
pub trait CaseResult {
    fn into_result(self) -> Result<(), Failed>;
}

impl CaseResult for () {
    fn into_result(self) -> Result<(), Failed> {
        Ok(())
    }
}

impl CaseResult for Result<(), Failed> {
    fn into_result(self) -> Result<(), Failed> {
        self
    }
}

/// The backends and the runtime a test binary's trials share.
pub struct Harness {
    runtime: Arc<Runtime>,
    embedded: Arc<EmbeddedBackend>,
    dynamodb: Arc<DynamoBackend>,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Harness {
            runtime: Arc::new(runtime),
            embedded: Arc::default(),
            dynamodb: Arc::default(),
        }
    }

    pub fn embedded(&self) -> Arc<EmbeddedBackend> {
        self.embedded.clone()
    }

    pub fn dynamodb(&self) -> Arc<DynamoBackend> {
        self.dynamodb.clone()
    }

    /// A trial that runs `case` on the shared runtime.
    pub fn trial<F, Fut>(&self, name: &str, case: F) -> Trial
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output: CaseResult>,
    {
        let runtime = self.runtime.clone();
        Trial::test(name, move || runtime.block_on(case()).into_result())
    }

    /// Runs the trials the command line selects, then stops DynamoDB Local if a case started
    /// it (before the caller exits: `process::exit` skips destructors).
    pub fn run(self, trials: Vec<Trial>) -> Conclusion {
        let conclusion = libtest_mimic::run(&Arguments::from_args(), trials);
        drop(self);
        conclusion
    }
}

/// Defines `$vis fn $name(harness: &Harness) -> Vec<Trial>`: every case in `stores` once per
/// store (`embedded::case`, `dynamodb::case`), every case in `dynamodb` on DynamoDB only
/// (`dynamodb::case`), and every case in `plain` once, with no store (`case`).
///
/// ```text
/// salesloop_tests::store_cases! {
///     fn trials;
///     stores: [a_case_on_any_store],
///     dynamodb: [a_case_on_dynamodb_itself],
///     plain: [a_case_without_a_store],
/// }
/// ```
#[macro_export]
macro_rules! store_cases {
    (
        $vis:vis fn $name:ident;
        stores: [$($both:ident),* $(,)?]
        $(, dynamodb: [$($dynamo:ident),* $(,)?])?
        $(, plain: [$($plain:ident),* $(,)?])?
        $(,)?
    ) => {
        /// One trial per case and store; see `salesloop_tests::store_cases!`.
        $vis fn $name(
            harness: &$crate::stores::Harness,
        ) -> ::std::vec::Vec<$crate::stores::Trial> {
            let mut trials = ::std::vec::Vec::new();
            $(
                let backend = harness.embedded();
                trials.push(harness.trial(
                    concat!("embedded::", stringify!($both)),
                    move || async move { $both(&*backend).await },
                ));
                let backend = harness.dynamodb();
                trials.push(harness.trial(
                    concat!("dynamodb::", stringify!($both)),
                    move || async move { $both(&*backend).await },
                ));
            )*
            $($(
                let backend = harness.dynamodb();
                trials.push(harness.trial(
                    concat!("dynamodb::", stringify!($dynamo)),
                    move || async move { $dynamo(&*backend).await },
                ));
            )*)?
            $($(
                trials.push(harness.trial(stringify!($plain), || $plain()));
            )*)?
            trials
        }
    };
}
