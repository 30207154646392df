//! The SQLite outbox: rows written in the caller's own `rusqlite::Transaction`, read
//! back by a relay.
//!
//! SQLite has one writer at a time, so rows commit in the order of their ids; ids are
//! never reused (`AUTOINCREMENT`), so a record sent again after a crash carries the id it
//! had the first time.

use std::path::Path;
use std::time::{Duration, SystemTime};

use logpipe_core::OutgoingRecord;
use logpipe_core::outbox::{OutboxError, OutboxRow, OutboxStatus, OutboxStore};
use logpipe_core::time::millis;
use rusqlite::{Connection, Transaction, params};

use crate::db::SqliteDb;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logpipe_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    record_key BLOB,
    record_value BLOB NOT NULL,
    headers TEXT,
    written_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logpipe_outbox_relay (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

fn database_error(error: rusqlite::Error) -> OutboxError {
    OutboxError::Database {
        store: "SQLite",
        source: Box::new(error),
    }
}

/// The outbox table of a SQLite database.
///
/// A service writes its rows with [`write`](Self::write) in its own transaction; a relay
/// reads them through [`OutboxStore`].
///
/// ```
/// use logpipe_core::OutgoingRecord;
/// use logpipe_core::outbox::OutboxStore;
/// use logpipe_sqlite::SqliteOutbox;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("app.db");
/// let outbox = SqliteOutbox::open(&path)?;
///
/// let mut conn = rusqlite::Connection::open(&path)?;
/// let tx = conn.transaction()?;
/// tx.execute("CREATE TABLE people (name TEXT)", [])?;
/// tx.execute("INSERT INTO people VALUES ('Ann')", [])?;
/// let record = OutgoingRecord { stream: "people".into(), key: None, value: b"json:{}".to_vec(), headers: vec![] };
/// SqliteOutbox::write(&tx, &record)?;
/// tx.commit()?;
///
/// assert_eq!(outbox.waiting(10).await?[0].record, record);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteOutbox {
    db: SqliteDb,
}

impl std::fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutbox").finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// Opens the database at `path`, creating the file and the outbox tables if needed.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Database`] when the file cannot be opened or the tables not
    /// created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OutboxError> {
        let db = SqliteDb::open(path.as_ref()).map_err(database_error)?;
        db.setup(SCHEMA).map_err(database_error)?;
        Ok(Self { db })
    }

    /// Creates the outbox tables on `conn` if they are missing, for a service that
    /// writes rows before any relay opened the file.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(SCHEMA)
    }

    /// Writes `record` as a row of the outbox in `tx`, the caller's transaction, and
    /// returns the row's id. The relay sees it once `tx` commits, and never if it rolls
    /// back.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Database`] when the row cannot be written (such as when the outbox
    /// tables do not exist: see [`create_tables`](Self::create_tables)).
    pub fn write(tx: &Transaction<'_>, record: &OutgoingRecord) -> Result<i64, OutboxError> {
        let headers = (!record.headers.is_empty())
            .then(|| serde_json::to_string(&record.headers).expect("headers serialize"));
        tx.execute(
            "INSERT INTO logpipe_outbox (stream, record_key, record_value, headers, written_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &*record.stream,
                record.key,
                record.value,
                headers,
                millis(SystemTime::now())
            ],
        )
        .map_err(database_error)?;
        Ok(tx.last_insert_rowid())
    }
}

/// The relay lease's row.
const RELAY: &str = "relay";

impl OutboxStore for SqliteOutbox {
    async fn claim(&self, owner: &str, duration: Duration) -> Result<bool, OutboxError> {
        let owner = owner.to_owned();
        let duration = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        self.db
            .call(move |conn| {
                let now = millis(SystemTime::now());
                let changed = conn.execute(
                    "INSERT INTO logpipe_outbox_relay (name, owner, expires_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
                     WHERE logpipe_outbox_relay.owner = excluded.owner
                        OR logpipe_outbox_relay.expires_ms <= ?4",
                    params![RELAY, owner, now.saturating_add(duration), now],
                )?;
                Ok(changed == 1)
            })
            .await
            .map_err(database_error)
    }

    async fn release(&self, owner: &str) -> Result<(), OutboxError> {
        let owner = owner.to_owned();
        self.db
            .call(move |conn| {
                conn.execute(
                    "DELETE FROM logpipe_outbox_relay WHERE name = ?1 AND owner = ?2",
                    params![RELAY, owner],
                )
                .map(drop)
            })
            .await
            .map_err(database_error)
    }

    async fn waiting(&self, max: usize) -> Result<Vec<OutboxRow>, OutboxError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .db
            .call(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT id, stream, record_key, record_value, headers, written_ms
                     FROM logpipe_outbox ORDER BY id LIMIT ?1",
                )?;
                let rows = statement.query_map([max], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, i64>(5)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(database_error)?;
        rows.into_iter()
            .map(|(id, stream, key, value, headers, written_ms)| {
                let headers = match headers {
                    None => Vec::new(),
                    Some(text) => {
                        serde_json::from_str(&text).map_err(|err| OutboxError::Corrupt {
                            id,
                            why: format!("its headers are not readable: {err}"),
                        })?
                    }
                };
                Ok(OutboxRow {
                    id,
                    record: OutgoingRecord {
                        stream: stream.into(),
                        key,
                        value,
                        headers,
                    },
                    written_ms,
                })
            })
            .collect()
    }

    async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
        let ids = ids.to_vec();
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut statement =
                        tx.prepare_cached("DELETE FROM logpipe_outbox WHERE id = ?1")?;
                    for id in ids {
                        statement.execute([id])?;
                    }
                }
                tx.commit()
            })
            .await
            .map_err(database_error)
    }

    async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let (waiting, oldest) = self
            .db
            .call(|conn| {
                conn.query_row(
                    "SELECT COUNT(*), MIN(written_ms) FROM logpipe_outbox",
                    [],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)),
                )
            })
            .await
            .map_err(database_error)?;
        let now = millis(SystemTime::now());
        Ok(OutboxStatus {
            waiting: u64::try_from(waiting).unwrap_or(0),
            oldest_age_ms: oldest.map(|oldest| u64::try_from(now - oldest).unwrap_or(0)),
        })
    }
}
