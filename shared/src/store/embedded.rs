//! The embedded adapter: one SQLite file, for local runs with no server. Several processes may
//! share the file (they do under `cargo lambda watch`): every write runs in an immediate
//! transaction, so SQLite's file lock serialises writers across processes, and WAL mode lets
//! readers go on meanwhile. Transactions are short and run on the calling thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    EndDecision, Ended, Lease, Recorded, Store, StoreError, decide_end, from_json, to_json,
};
use crate::conversation::{
    ConversationState, Cursor, EndRequest, Exchange, ExchangeDraft, MAX_TURNS, OutcomeRecord,
};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::model::ModelVersion;
use crate::time::Millis;

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
CREATE TABLE IF NOT EXISTS leases (
    tenant TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL, until INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS models (
    tenant TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, version)
);
";

const KIND_EXCHANGE: &str = "exchange";
const KIND_END: &str = "end";
const ENDED_COUNTER: &str = "ended_conversations";

/// A store in one SQLite file.
pub struct EmbeddedStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
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

fn all_exchanges(
    conn: &Connection,
    tenant: &TenantId,
    conversation: &ConversationId,
) -> Result<Vec<Exchange>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT body FROM log WHERE tenant = ?1 AND conversation = ?2 AND kind = ?3
             ORDER BY position",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(
            params![tenant.as_str(), conversation.as_str(), KIND_EXCHANGE],
            |row| row.get::<_, String>(0),
        )
        .map_err(unavailable)?;
    rows.map(|body| from_json(&body.map_err(unavailable)?))
        .collect()
}

fn load_model(body: &str) -> Result<ModelVersion, StoreError> {
    from_json(body)
}

impl Store for EmbeddedStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        self.read(|conn| tail(conn, tenant, conversation))
    }

    async fn exchanges(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<Exchange>, StoreError> {
        self.read(|conn| all_exchanges(conn, tenant, conversation))
    }

    async fn record_exchange<F>(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
        mut build: F,
    ) -> Result<Recorded, StoreError>
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send,
    {
        self.write(|tx| {
            let first: Option<String> = tx
                .query_row(
                    "SELECT body FROM log
                     WHERE tenant = ?1 AND conversation = ?2 AND message_id = ?3",
                    params![tenant.as_str(), conversation.as_str(), message_id.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            if let Some(body) = first {
                return Ok(Recorded {
                    exchange: from_json(&body)?,
                    duplicate: true,
                });
            }
            let state = tail(tx, tenant, conversation)?;
            if let ConversationState::Ended(record) = state {
                return Err(StoreError::Ended(record));
            }
            if state.turns() >= MAX_TURNS {
                return Err(StoreError::TooLong);
            }
            let exchange = state.next_exchange(build(&state));
            tx.execute(
                "INSERT INTO log (tenant, conversation, position, message_id, kind, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    tenant.as_str(),
                    conversation.as_str(),
                    exchange.turn,
                    message_id.as_str(),
                    KIND_EXCHANGE,
                    to_json(&exchange)?
                ],
            )
            .map_err(unavailable)?;
            Ok(Recorded {
                exchange,
                duplicate: false,
            })
        })
    }

    async fn end_conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        request: EndRequest,
    ) -> Result<Ended, StoreError> {
        self.write(|tx| {
            let existing = match tail(tx, tenant, conversation)? {
                ConversationState::Ended(record) => Some(*record),
                _ => None,
            };
            let exchanges = if existing.is_some() {
                Vec::new()
            } else {
                all_exchanges(tx, tenant, conversation)?
            };
            let record = match decide_end(conversation, &request, &exchanges, existing)? {
                EndDecision::Repeat(record) => {
                    return Ok(Ended {
                        record,
                        first_time: false,
                        ended_count: None,
                    });
                }
                EndDecision::Write(record) => record,
            };
            let body = to_json(&record)?;
            tx.execute(
                "INSERT INTO log (tenant, conversation, position, message_id, kind, body)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
                params![
                    tenant.as_str(),
                    conversation.as_str(),
                    record.turns + 1,
                    KIND_END,
                    body
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO outcomes (tenant, at, conversation, body) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tenant.as_str(),
                    to_i64(record.at.0),
                    conversation.as_str(),
                    body
                ],
            )
            .map_err(unavailable)?;
            let count: i64 = tx
                .query_row(
                    "INSERT INTO counters (tenant, name, value) VALUES (?1, ?2, 1)
                     ON CONFLICT (tenant, name) DO UPDATE SET value = value + 1
                     RETURNING value",
                    params![tenant.as_str(), ENDED_COUNTER],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(Ended {
                record,
                first_time: true,
                ended_count: Some(to_u64(count)),
            })
        })
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.read(|conn| {
            let count: Option<i64> = conn
                .query_row(
                    "SELECT value FROM counters WHERE tenant = ?1 AND name = ?2",
                    params![tenant.as_str(), ENDED_COUNTER],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            Ok(count.map(to_u64).unwrap_or(0))
        })
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

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        Ok(self.model_history(tenant, 1).await?.into_iter().next())
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<(), StoreError> {
        let body = to_json(model)?;
        self.write(|tx| {
            let current: Option<i64> = tx
                .query_row(
                    "SELECT MAX(version) FROM models WHERE tenant = ?1",
                    params![tenant.as_str()],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            if current.map(to_u64).unwrap_or(0) + 1 != model.version {
                return Err(StoreError::VersionConflict {
                    expected: model.version,
                });
            }
            tx.execute(
                "INSERT INTO models (tenant, version, body) VALUES (?1, ?2, ?3)",
                params![tenant.as_str(), to_i64(model.version), body],
            )
            .map_err(unavailable)?;
            Ok(())
        })
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT body FROM models WHERE tenant = ?1 ORDER BY version DESC LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![tenant.as_str(), to_i64(limit as u64)], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(unavailable)?;
            rows.map(|body| load_model(&body.map_err(unavailable)?))
                .collect()
        })
    }
}
