//! The embedded adapter: one SQLite file, for local runs with no server. Several processes may
//! share the file (they do under `cargo lambda watch`): every write runs in an immediate
//! transaction, so SQLite's file lock serialises writers across processes, and WAL mode lets
//! readers go on meanwhile. Transactions are short and run on the calling thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    ConversationEntry, ConversationLog, Lease, PendingMark, Store, StoreError, Tracked,
    TrackingCounts, Write, check_label_batch, from_json, to_json,
};
use crate::domain::config::TenantConfig;
use crate::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
use crate::domain::time::Millis;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    tenant TEXT NOT NULL, conversation TEXT NOT NULL, position INTEGER NOT NULL,
    message_id TEXT, kind TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, conversation, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS log_by_message
    ON log (tenant, conversation, message_id) WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS outcomes (
    tenant TEXT NOT NULL, at INTEGER NOT NULL, conversation TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, at, conversation)
);
CREATE TABLE IF NOT EXISTS counters (
    tenant TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS pending (
    tenant TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, last_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    tenant TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL, until INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS labels (
    tenant TEXT NOT NULL, conversation TEXT NOT NULL, turn INTEGER NOT NULL, pattern TEXT NOT NULL,
    cursor_key TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, conversation, turn, pattern)
);
CREATE INDEX IF NOT EXISTS labels_by_cursor ON labels (tenant, cursor_key);
CREATE TABLE IF NOT EXISTS conversations (
    tenant TEXT NOT NULL, started_at INTEGER NOT NULL, conversation TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    PRIMARY KEY (tenant, started_at, conversation)
);
CREATE TABLE IF NOT EXISTS models (
    tenant TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS configs (
    tenant TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, version)
);
";

const KIND_EXCHANGE: &str = "exchange";
const KIND_END: &str = "end";
const ENDED_COUNTER: &str = "ended_conversations";
const UNRECORDED_EXCHANGES: &str = "unrecorded_exchanges";
const RECOVERED_EXCHANGES: &str = "recovered_exchanges";

/// A store in one SQLite file.
pub struct EmbeddedStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

/// Marks the tenant pending (see `PendingMark`), in the caller's transaction.
fn mark_pending(tx: &Transaction<'_>, tenant: &TenantId, at: Millis) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO pending (tenant, seq, last_at) VALUES (?1, 1, ?2)
         ON CONFLICT (tenant) DO UPDATE
         SET seq = seq + 1, last_at = max(last_at, excluded.last_at)",
        params![tenant.as_str(), to_i64(at.0)],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (and creates, if needed) the store file `salesloop.sqlite3` in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        Self::open(&dir.join("salesloop.sqlite3"))
    }

    /// Opens (and creates, if needed) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(unavailable)?;
        // Another process may hold the write lock for a moment; wait for it rather than fail.
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(unavailable)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        // Files written before the conversation list existed: list their conversations once.
        let listed: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(unavailable)?;
        if listed < 1 {
            connection
                .execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT OR IGNORE INTO conversations
                         SELECT tenant, json_extract(body, '$.at'), conversation,
                                json_extract(body, '$.model_version')
                         FROM log WHERE position = 1 AND kind = 'exchange';
                     PRAGMA user_version = 1;
                     COMMIT;",
                )
                .map_err(unavailable)?;
        }
        // Files written before the pending list existed: every tenant with an ended
        // conversation is marked once, so the first scheduled run catches each one up.
        if listed < 2 {
            connection
                .execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT OR IGNORE INTO pending
                         SELECT tenant, 1, 0 FROM counters
                         WHERE name = 'ended_conversations';
                     PRAGMA user_version = 2;
                     COMMIT;",
                )
                .map_err(unavailable)?;
        }
        Ok(EmbeddedStore {
            connection: Mutex::new(connection),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction (SQLite rolls it back),
        // so the connection is still usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` in an immediate transaction: the write lock is taken up front, so two
    /// writers never both read a state and then both try to change it.
    fn write<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let value = work(&tx)?;
        tx.commit().map_err(unavailable)?;
        Ok(value)
    }

    fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        work(&self.lock())
    }
}

fn tail(
    conn: &Connection,
    tenant: &TenantId,
    conversation: &ConversationId,
) -> Result<ConversationState, StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT kind, body FROM log WHERE tenant = ?1 AND conversation = ?2
             ORDER BY position DESC LIMIT 1",
            params![tenant.as_str(), conversation.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    match row {
        None => Ok(ConversationState::New),
        Some((kind, body)) if kind == KIND_END => {
            Ok(ConversationState::Ended(Box::new(from_json(&body)?)))
        }
        Some((_, body)) => Ok(ConversationState::from(&from_json::<Exchange>(&body)?)),
    }
}

fn log(
    conn: &Connection,
    tenant: &TenantId,
    conversation: &ConversationId,
) -> Result<ConversationLog, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT kind, body FROM log WHERE tenant = ?1 AND conversation = ?2
             ORDER BY position",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![tenant.as_str(), conversation.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(unavailable)?;
    let mut log = ConversationLog::default();
    for row in rows {
        let (kind, body) = row.map_err(unavailable)?;
        if kind == KIND_END {
            log.end = Some(from_json(&body)?);
        } else {
            log.exchanges.push(from_json(&body)?);
        }
    }
    Ok(log)
}

fn counter(conn: &Connection, tenant: &TenantId, name: &str) -> Result<u64, StoreError> {
    let count: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE tenant = ?1 AND name = ?2",
            params![tenant.as_str(), name],
            |row| row.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    Ok(count.map(to_u64).unwrap_or(0))
}

/// The versioned tables: a document's whole history, one row per version.
#[derive(Clone, Copy)]
enum Versions {
    Models,
    Configs,
}

impl Versions {
    fn table(self) -> &'static str {
        match self {
            Versions::Models => "models",
            Versions::Configs => "configs",
        }
    }
}

fn newest_body(
    conn: &Connection,
    versions: Versions,
    tenant: &TenantId,
) -> Result<Option<String>, StoreError> {
    history_bodies(conn, versions, tenant, None, 1).map(|bodies| bodies.into_iter().next())
}

fn history_bodies(
    conn: &Connection,
    versions: Versions,
    tenant: &TenantId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT body FROM {} WHERE tenant = ?1 AND version < ?2
             ORDER BY version DESC LIMIT ?3",
            versions.table()
        ))
        .map_err(unavailable)?;
    let below = before.map_or(i64::MAX, to_i64);
    let rows = statement
        .query_map(
            params![tenant.as_str(), below, to_i64(limit as u64)],
            |row| row.get::<_, String>(0),
        )
        .map_err(unavailable)?;
    rows.map(|body| body.map_err(unavailable)).collect()
}

fn version_body(
    conn: &Connection,
    versions: Versions,
    tenant: &TenantId,
    version: u64,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        &format!(
            "SELECT body FROM {} WHERE tenant = ?1 AND version = ?2",
            versions.table()
        ),
        params![tenant.as_str(), to_i64(version)],
        |row| row.get(0),
    )
    .optional()
    .map_err(unavailable)
}

/// Inserts version `version` if `version - 1` is the newest (none for version 1).
fn publish_body(
    tx: &Transaction<'_>,
    versions: Versions,
    tenant: &TenantId,
    version: u64,
    body: &str,
) -> Result<Write, StoreError> {
    let table = versions.table();
    let current: Option<i64> = tx
        .query_row(
            &format!("SELECT MAX(version) FROM {table} WHERE tenant = ?1"),
            params![tenant.as_str()],
            |row| row.get(0),
        )
        .map_err(unavailable)?;
    if version == 0 || current.map(to_u64).unwrap_or(0) + 1 != version {
        return Ok(Write::Lost);
    }
    tx.execute(
        &format!("INSERT INTO {table} (tenant, version, body) VALUES (?1, ?2, ?3)"),
        params![tenant.as_str(), to_i64(version), body],
    )
    .map_err(unavailable)?;
    Ok(Write::Done)
}

impl Store for EmbeddedStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        self.read(|conn| tail(conn, tenant, conversation))
    }

    async fn find_message(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        self.read(|conn| {
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM log
                     WHERE tenant = ?1 AND conversation = ?2 AND message_id = ?3",
                    params![tenant.as_str(), conversation.as_str(), message_id.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            body.map(|body| from_json(&body)).transpose()
        })
    }

    async fn conversation_log(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        self.read(|conn| log(conn, tenant, conversation))
    }

    async fn append_exchange(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        exchange: &Exchange,
    ) -> Result<Write, StoreError> {
        let body = to_json(&exchange.stored())?;
        self.write(|tx| {
            // Both the position (primary key) and the message id (unique index) must be free.
            let inserted = tx
                .execute(
                    "INSERT INTO log (tenant, conversation, position, message_id, kind, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![
                        tenant.as_str(),
                        conversation.as_str(),
                        exchange.turn,
                        exchange.draft.message_id.as_str(),
                        KIND_EXCHANGE,
                        body
                    ],
                )
                .map_err(unavailable)?;
            // An exchange recorded late counts as recovered in the same write (`Store`).
            if inserted == 1 && !exchange.draft.via.is_direct() {
                tx.execute(
                    "INSERT INTO counters (tenant, name, value) VALUES (?1, ?2, 1)
                     ON CONFLICT (tenant, name) DO UPDATE SET value = value + 1",
                    params![tenant.as_str(), RECOVERED_EXCHANGES],
                )
                .map_err(unavailable)?;
            }
            if inserted == 1 && exchange.turn == 1 {
                tx.execute(
                    "INSERT INTO conversations (tenant, started_at, conversation, model_version)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![
                        tenant.as_str(),
                        to_i64(exchange.draft.at.0),
                        conversation.as_str(),
                        to_i64(exchange.draft.model_version)
                    ],
                )
                .map_err(unavailable)?;
            }
            Ok(if inserted == 1 {
                Write::Done
            } else {
                Write::Lost
            })
        })
    }

    async fn append_end(
        &self,
        tenant: &TenantId,
        record: &OutcomeRecord,
        ended_before: u64,
    ) -> Result<Write, StoreError> {
        let body = to_json(record)?;
        self.write(|tx| {
            if counter(tx, tenant, ENDED_COUNTER)? != ended_before {
                return Ok(Write::Lost);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO log (tenant, conversation, position, message_id, kind, body)
                     VALUES (?1, ?2, ?3, NULL, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![
                        tenant.as_str(),
                        record.conversation_id.as_str(),
                        record.turns + 1,
                        KIND_END,
                        body
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Ok(Write::Lost);
            }
            tx.execute(
                "INSERT INTO outcomes (tenant, at, conversation, body) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tenant.as_str(),
                    to_i64(record.at.0),
                    record.conversation_id.as_str(),
                    body
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO counters (tenant, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                params![tenant.as_str(), ENDED_COUNTER, to_i64(ended_before + 1)],
            )
            .map_err(unavailable)?;
            mark_pending(tx, tenant, record.at)?;
            Ok(Write::Done)
        })
    }

    async fn count_tracking(
        &self,
        tenant: &TenantId,
        what: Tracked,
        count: u64,
    ) -> Result<(), StoreError> {
        let name = match what {
            Tracked::Unrecorded => UNRECORDED_EXCHANGES,
            Tracked::Recovered => RECOVERED_EXCHANGES,
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO counters (tenant, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, name) DO UPDATE SET value = value + excluded.value",
                params![tenant.as_str(), name, to_i64(count)],
            )
            .map_err(unavailable)?;
            Ok(())
        })
    }

    async fn tracking_counts(&self, tenant: &TenantId) -> Result<TrackingCounts, StoreError> {
        self.read(|conn| {
            Ok(TrackingCounts {
                unrecorded: counter(conn, tenant, UNRECORDED_EXCHANGES)?,
                recovered: counter(conn, tenant, RECOVERED_EXCHANGES)?,
            })
        })
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.read(|conn| counter(conn, tenant, ENDED_COUNTER))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached("SELECT tenant FROM counters WHERE name = ?1 ORDER BY tenant")
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![ENDED_COUNTER], |row| row.get::<_, String>(0))
                .map_err(unavailable)?;
            rows.map(|raw| {
                let raw = raw.map_err(unavailable)?;
                TenantId::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
        })
    }

    async fn pending_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached("SELECT tenant FROM pending ORDER BY tenant")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(unavailable)?;
            rows.map(|raw| {
                let raw = raw.map_err(unavailable)?;
                TenantId::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
        })
    }

    async fn pending_marks(&self, tenant: &TenantId) -> Result<Vec<PendingMark>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT seq, last_at FROM pending WHERE tenant = ?1",
                params![tenant.as_str()],
                |row| {
                    Ok(PendingMark {
                        shard: 0,
                        seq: to_u64(row.get(0)?),
                        last_at: Millis(to_u64(row.get(1)?)),
                    })
                },
            )
            .optional()
            .map(|mark| mark.into_iter().collect())
            .map_err(unavailable)
        })
    }

    async fn clear_pending(
        &self,
        tenant: &TenantId,
        marks: &[PendingMark],
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut cleared = 0;
            for mark in marks {
                cleared += tx
                    .execute(
                        "DELETE FROM pending WHERE tenant = ?1 AND seq = ?2",
                        params![tenant.as_str(), to_i64(mark.seq)],
                    )
                    .map_err(unavailable)?;
            }
            Ok(cleared)
        })
    }

    async fn acquire_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let until = now.saturating_add_ms(ttl_ms);
        self.write(|tx| {
            let changed = tx
                .execute(
                    "INSERT INTO leases (tenant, name, holder, until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, name) DO UPDATE
                        SET holder = excluded.holder, until = excluded.until
                        WHERE leases.until < ?5 OR leases.holder = excluded.holder",
                    params![
                        tenant.as_str(),
                        name,
                        holder,
                        to_i64(until.0),
                        to_i64(now.0)
                    ],
                )
                .map_err(unavailable)?;
            Ok((changed == 1).then(|| Lease {
                tenant: tenant.clone(),
                name: name.to_owned(),
                holder: holder.to_owned(),
                until,
            }))
        })
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.write(|tx| {
            let deleted = tx
                .execute(
                    "DELETE FROM leases WHERE tenant = ?1 AND name = ?2 AND holder = ?3",
                    params![lease.tenant.as_str(), lease.name, lease.holder],
                )
                .map_err(unavailable)?;
            Ok(deleted == 1)
        })
    }

    async fn outcomes_since(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        let (at, conversation) = match after {
            Some(cursor) => (to_i64(cursor.at.0), cursor.conversation_id.as_str()),
            None => (-1, ""),
        };
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM outcomes
                     WHERE tenant = ?1 AND (at > ?2 OR (at = ?2 AND conversation > ?3))
                     ORDER BY at, conversation LIMIT ?4",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![tenant.as_str(), at, conversation, to_i64(limit as u64)],
                    |row| row.get::<_, String>(0),
                )
                .map_err(unavailable)?;
            rows.map(|body| from_json(&body.map_err(unavailable)?))
                .collect()
        })
    }

    async fn labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        self.read(|conn| {
            // SQLite compares text byte by byte, as Rust orders strings.
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM labels WHERE tenant = ?1 AND conversation = ?2
                     ORDER BY turn, pattern",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![tenant.as_str(), conversation.as_str()], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(unavailable)?;
            rows.map(|body| from_json(&body.map_err(unavailable)?))
                .collect()
        })
    }

    async fn put_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        labels: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        check_label_batch(conversation, labels)?;
        let rows = labels
            .iter()
            .map(|label| Ok((label, label.cursor().key(), to_json(label)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let newest = labels.iter().map(|label| label.at).max();
        self.write(|tx| {
            if let Some(at) = newest {
                mark_pending(tx, tenant, at)?;
            }
            // The transaction holds the write lock: every key is checked before any is written,
            // so a taken one leaves nothing behind.
            for (label, _, _) in &rows {
                let taken = tx
                    .query_row(
                        "SELECT 1 FROM labels
                         WHERE tenant = ?1 AND conversation = ?2 AND turn = ?3 AND pattern = ?4",
                        params![
                            tenant.as_str(),
                            conversation.as_str(),
                            label.turn,
                            label.pattern
                        ],
                        |_| Ok(()),
                    )
                    .optional()
                    .map_err(unavailable)?
                    .is_some();
                if taken {
                    return Ok(Write::Lost);
                }
            }
            for (label, cursor_key, body) in &rows {
                tx.execute(
                    "INSERT INTO labels (tenant, conversation, turn, pattern, cursor_key, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        tenant.as_str(),
                        conversation.as_str(),
                        label.turn,
                        label.pattern,
                        cursor_key,
                        body
                    ],
                )
                .map_err(unavailable)?;
            }
            Ok(Write::Done)
        })
    }

    async fn labels_since(
        &self,
        tenant: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        // The empty string sorts before every key.
        let after = after.map(LabelCursor::key).unwrap_or_default();
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM labels WHERE tenant = ?1 AND cursor_key > ?2
                     ORDER BY cursor_key LIMIT ?3",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![tenant.as_str(), after, to_i64(limit as u64)],
                    |row| row.get::<_, String>(0),
                )
                .map_err(unavailable)?;
            rows.map(|body| from_json(&body.map_err(unavailable)?))
                .collect()
        })
    }

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        self.read(|conn| newest_body(conn, Versions::Models, tenant))?
            .map(|body| from_json(&body))
            .transpose()
    }

    async fn served_model(&self, tenant: &TenantId) -> Result<Option<ServedModel>, StoreError> {
        self.read(|conn| newest_body(conn, Versions::Models, tenant))?
            .map(|body| from_json(&body))
            .transpose()
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<Write, StoreError> {
        let body = to_json(model)?;
        self.write(|tx| publish_body(tx, Versions::Models, tenant, model.version, &body))
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        self.read(|conn| history_bodies(conn, Versions::Models, tenant, before, limit))?
            .iter()
            .map(|body| from_json(body))
            .collect()
    }

    async fn model_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        self.read(|conn| version_body(conn, Versions::Models, tenant, version))?
            .map(|body| from_json(&body))
            .transpose()
    }

    async fn current_config(&self, tenant: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        self.read(|conn| newest_body(conn, Versions::Configs, tenant))?
            .map(|body| from_json(&body))
            .transpose()
    }

    async fn config_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<TenantConfig>, StoreError> {
        self.read(|conn| version_body(conn, Versions::Configs, tenant, version))?
            .map(|body| from_json(&body))
            .transpose()
    }

    async fn config_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TenantConfig>, StoreError> {
        self.read(|conn| history_bodies(conn, Versions::Configs, tenant, before, limit))?
            .iter()
            .map(|body| from_json(body))
            .collect()
    }

    async fn publish_config(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> Result<Write, StoreError> {
        let body = to_json(config)?;
        self.write(|tx| publish_body(tx, Versions::Configs, tenant, config.version, &body))
    }

    async fn conversations(
        &self,
        tenant: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        // Rows strictly before the cursor in (started_at, conversation) order, newest first.
        let (before_at, before_id) = match before {
            Some(cursor) => (to_i64(cursor.at.0), cursor.conversation_id.as_str()),
            None => (i64::MAX, ""),
        };
        let rows: Vec<(i64, String, i64)> = self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT started_at, conversation, model_version FROM conversations
                     WHERE tenant = ?1 AND started_at >= ?2
                       AND (started_at < ?3 OR (started_at = ?3 AND conversation < ?4))
                     ORDER BY started_at DESC, conversation DESC LIMIT ?5",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![
                        tenant.as_str(),
                        to_i64(since.0),
                        before_at,
                        before_id,
                        to_i64(limit as u64)
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(unavailable)?;
            rows.map(|row| row.map_err(unavailable)).collect()
        })?;
        rows.into_iter()
            .map(|(at, id, version)| {
                Ok(ConversationEntry {
                    conversation_id: ConversationId::parse(&id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    started_at: Millis(to_u64(at)),
                    model_version: to_u64(version),
                })
            })
            .collect()
    }
}
