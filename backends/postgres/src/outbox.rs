//! The PostgreSQL outbox: rows written in the caller's own transaction, read back by a
//! relay in the order of their ids.
//!
//! Ids are taken when a row is written, not when its transaction commits, so a row of a
//! lower id may commit after one of a higher id. Each row records its transaction
//! (`txid`, `pg_current_xact_id()`). A row is settled once its transaction is older than
//! every transaction still running (`pg_snapshot_xmin`), and the relay reads rows in id
//! order up to the first one not settled: a row is never sent before a visible row of a
//! lower id. A row of a lower id that is not visible yet belongs to a transaction still
//! running; when both rows are of one key, that transaction holds the key's row lock
//! (the message is written after the change it announces), so the other cannot have
//! committed. A long transaction anywhere on the server holds the relay back until it
//! ends; while rows are held back, it looks again within a second, not at its next poll.
//! Needs PostgreSQL 13 or later (`xid8`).
//!
//! A write notifies the channel `logpipe_outbox` (with the schema as payload) when its
//! transaction commits, which wakes a waiting relay at once; the relay also polls.

use std::sync::Arc;
use std::time::Duration;

use logpipe_core::outbox::{OutboxError, OutboxRow, OutboxStatus, OutboxStore};
use logpipe_core::{OutgoingRecord, RecordHeader};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, Row, SqlSafeStr, SqlStr};

use crate::options::PgStoreOptions;
use crate::store::{create_tables, described};

mod wakeups;

use wakeups::{CHANNEL, Wakeups};

fn database_error(error: sqlx::Error) -> OutboxError {
    OutboxError::Database {
        store: "PostgreSQL",
        source: described(error),
    }
}

/// The statements of an outbox whose tables are in one schema.
struct Statements {
    create: SqlStr,
    write: SqlStr,
    claim: SqlStr,
    release: SqlStr,
    waiting: SqlStr,
    remove: SqlStr,
    status: SqlStr,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let outbox = format!("\"{schema}\".logpipe_outbox");
        let relay = format!("\"{schema}\".logpipe_outbox_relay");
        let sql = |text: String| AssertSqlSafe(text).into_sql_str();
        // Whether a row's transaction is older than every one still running.
        let settled = "txid < pg_snapshot_xmin(pg_current_snapshot())";
        Self {
            create: sql(format!(
                "CREATE TABLE IF NOT EXISTS {outbox} (
                     id bigserial PRIMARY KEY,
                     txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                     stream text NOT NULL,
                     record_key bytea,
                     record_value bytea NOT NULL,
                     header_names text[] NOT NULL DEFAULT '{{}}',
                     header_values bytea[] NOT NULL DEFAULT '{{}}',
                     written_at timestamptz NOT NULL DEFAULT now()
                 );
                 CREATE TABLE IF NOT EXISTS {relay} (
                     name text PRIMARY KEY,
                     owner text NOT NULL,
                     expires_at timestamptz NOT NULL
                 );"
            )),
            // The notification is sent when the transaction commits, once however many
            // rows it wrote.
            write: sql(format!(
                "INSERT INTO {outbox} (stream, record_key, record_value, header_names, header_values)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id, pg_notify('{CHANNEL}', $6)::text"
            )),
            claim: sql(format!(
                "INSERT INTO {relay} AS held (name, owner, expires_at)
                 VALUES ('relay', $1, now() + $2 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE
                     SET owner = excluded.owner, expires_at = excluded.expires_at
                     WHERE held.owner = excluded.owner OR held.expires_at <= now()"
            )),
            release: sql(format!(
                "DELETE FROM {relay} WHERE name = 'relay' AND owner = $1"
            )),
            waiting: sql(format!(
                "SELECT id, stream, record_key, record_value, header_names, header_values,
                        (extract(epoch FROM written_at) * 1000)::bigint AS written_ms,
                        {settled} AS settled
                 FROM {outbox} ORDER BY id LIMIT $1"
            )),
            remove: sql(format!("DELETE FROM {outbox} WHERE id = ANY($1)")),
            status: sql(format!(
                "SELECT count(*),
                        (extract(epoch FROM now() - min(written_at)) * 1000)::bigint
                 FROM {outbox}"
            )),
        }
    }
}

/// The outbox table of a PostgreSQL database (`logpipe_outbox`, in the options' schema).
///
/// A service writes its rows with [`write`](Self::write) in its own transaction; a relay
/// reads them through [`OutboxStore`].
///
/// ```no_run
/// use logpipe_core::{OutgoingRecord, RecordHeader};
/// use logpipe_postgres::PgOutbox;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let outbox = PgOutbox::connect(&"postgres://app@db/people".parse()?).await?;
/// let mut tx = outbox.pool().begin().await?;
/// sqlx::query("UPDATE people SET name = 'Ann' WHERE id = 1").execute(&mut *tx).await?;
/// let record = OutgoingRecord { stream: "people".into(), key: None, value: b"json:{}".to_vec(), headers: vec![] };
/// outbox.write(&mut tx, &record).await?;
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgOutbox {
    pool: PgPool,
    statements: Arc<Statements>,
    schema: Arc<str>,
    wakeups: Arc<Wakeups>,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox").finish_non_exhaustive()
    }
}

impl PgOutbox {
    /// Connects, and creates the schema and the outbox tables if they are missing.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Database`] when the server cannot be reached, refuses the login,
    /// or the tables cannot be created.
    pub async fn connect(options: &PgStoreOptions) -> Result<Self, OutboxError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(options.connect.clone());
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(options.connect.clone());
        let outbox = Self {
            pool,
            statements: Arc::new(Statements::new(&options.schema)),
            schema: options.schema.as_str().into(),
            wakeups: Arc::new(Wakeups::new(listener_pool, &options.schema)),
        };
        create_tables(
            &outbox.pool,
            &options.schema,
            outbox.statements.create.clone(),
        )
        .await
        .map_err(database_error)?;
        Ok(outbox)
    }

    /// The connection pool, for a service's own transactions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes `record` as a row of the outbox in `tx`, the caller's transaction (or
    /// any connection of the database), and returns the row's id. The relay sees it once
    /// `tx` commits, and never if it rolls back.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Database`] when the row cannot be written.
    pub async fn write(
        &self,
        tx: &mut PgConnection,
        record: &OutgoingRecord,
    ) -> Result<i64, OutboxError> {
        let names: Vec<&str> = record.headers.iter().map(|h| h.name.as_str()).collect();
        let values: Vec<&[u8]> = record.headers.iter().map(|h| h.value.as_slice()).collect();
        let row = sqlx::query(self.statements.write.clone())
            .bind(&*record.stream)
            .bind(record.key.as_deref())
            .bind(&record.value)
            .bind(names)
            .bind(values)
            .bind(&*self.schema)
            .fetch_one(tx)
            .await
            .map_err(database_error)?;
        Ok(row.get(0))
    }
}

impl OutboxStore for PgOutbox {
    async fn claim(&self, owner: &str, duration: Duration) -> Result<bool, OutboxError> {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let done = sqlx::query(self.statements.claim.clone())
            .bind(owner)
            .bind(millis as f64)
            .execute(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, owner: &str) -> Result<(), OutboxError> {
        sqlx::query(self.statements.release.clone())
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(())
    }

    async fn waiting(&self, max: usize) -> Result<Vec<OutboxRow>, OutboxError> {
        let rows = sqlx::query(self.statements.waiting.clone())
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        // Up to the first row not settled: none is sent before a lower id.
        let settled = rows.iter().take_while(|row| row.get::<bool, _>(7)).count();
        self.wakeups.looked(settled == 0 && !rows.is_empty());
        rows.into_iter()
            .take(settled)
            .map(|row| {
                let id: i64 = row.get(0);
                let names: Vec<String> = row.get(4);
                let values: Vec<Vec<u8>> = row.get(5);
                if names.len() != values.len() {
                    return Err(OutboxError::Corrupt {
                        id,
                        why: "it has not as many header values as names".to_owned(),
                    });
                }
                let headers = names
                    .into_iter()
                    .zip(values)
                    .map(|(name, value)| RecordHeader { name, value })
                    .collect();
                Ok(OutboxRow {
                    id,
                    record: OutgoingRecord {
                        stream: row.get::<String, _>(1).into(),
                        key: row.get(2),
                        value: row.get(3),
                        headers,
                    },
                    written_ms: row.get(6),
                })
            })
            .collect()
    }

    async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(self.statements.remove.clone())
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(())
    }

    async fn wait_for_rows(&self, timeout: Duration) {
        self.wakeups.wait(timeout).await;
    }

    async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let (waiting, age): (i64, Option<i64>) = sqlx::query_as(self.statements.status.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(OutboxStatus {
            waiting: u64::try_from(waiting).unwrap_or(0),
            oldest_age_ms: age.map(|age| u64::try_from(age).unwrap_or(0)),
        })
    }
}
