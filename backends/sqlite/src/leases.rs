//! The SQLite lease store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logpipe_core::leases::{HeldLease, Lease, LeaseStore, LeaseUnit};
use logpipe_core::time::millis;
use logpipe_core::{PartitionRef, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::SqliteDb;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logpipe_leases (
    consumer_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    partition TEXT NOT NULL,
    owner TEXT,
    counter INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER NOT NULL DEFAULT 0,
    parents TEXT NOT NULL DEFAULT '[]',
    finished INTEGER NOT NULL DEFAULT 0,
    owner_switches INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer_group, stream, partition)
) WITHOUT ROWID;
";

const COLUMNS: &str =
    "stream, partition, owner, counter, expires_at_ms, parents, finished, owner_switches";

fn database_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database {
        store: "SQLite",
        source: Box::new(error),
    }
}

/// Leases in a SQLite database (the table `logpipe_leases`), for the processes of a
/// group on one machine: the embedded log keeps its groups' leases in its own file.
///
/// Expiry is judged by the clock of the process that asks, which is the same for every
/// process on the machine. Clones share one connection.
#[derive(Clone)]
pub struct SqliteLeaseStore {
    db: SqliteDb,
}

impl std::fmt::Debug for SqliteLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLeaseStore").finish_non_exhaustive()
    }
}

impl SqliteLeaseStore {
    /// Opens the database at `path`, creating the file and table if needed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the file cannot be opened or the table not created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::init(SqliteDb::open(path.as_ref()).map_err(database_error)?)
    }

    /// A store in a private in-memory database.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when SQLite cannot create it.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(SqliteDb::open_in_memory().map_err(database_error)?)
    }

    pub(crate) fn init(db: SqliteDb) -> Result<Self, StoreError> {
        db.setup(SCHEMA).map_err(database_error)?;
        Ok(Self { db })
    }

    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection, i64) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.db
            .call(move |conn| f(conn, millis(SystemTime::now())))
            .await
            .map_err(database_error)
    }
}

fn lease_from_row(row: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<Lease> {
    let stream: String = row.get(0)?;
    let partition: String = row.get(1)?;
    let owner: Option<String> = row.get(2)?;
    let expires_at_ms: i64 = row.get(4)?;
    let parents: String = row.get(5)?;
    let counter: i64 = row.get(3)?;
    let switches: i64 = row.get(7)?;
    Ok(Lease {
        partition: PartitionRef::new(stream, partition),
        free: owner.is_none() || expires_at_ms <= now,
        expires_at: owner
            .as_ref()
            .map(|_| UNIX_EPOCH + Duration::from_millis(expires_at_ms.max(0).unsigned_abs())),
        owner,
        counter: counter.max(0).unsigned_abs(),
        parents: serde_json::from_str(&parents).unwrap_or_default(),
        finished: row.get(6)?,
        owner_switches: switches.max(0).unsigned_abs(),
    })
}

fn counter_param(counter: u64) -> i64 {
    i64::try_from(counter).unwrap_or(i64::MAX)
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl LeaseStore for SqliteLeaseStore {
    async fn register(&self, group: &str, units: &[LeaseUnit]) -> Result<(), StoreError> {
        let group = group.to_owned();
        let units = units.to_vec();
        self.call(move |conn, _| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO logpipe_leases (consumer_group, stream, partition, parents)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?;
                for unit in &units {
                    let parents =
                        serde_json::to_string(&unit.parents).unwrap_or_else(|_| "[]".to_owned());
                    insert.execute(params![
                        group,
                        &*unit.partition.stream,
                        &*unit.partition.partition,
                        parents
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn leases(&self, group: &str, streams: &[String]) -> Result<Vec<Lease>, StoreError> {
        let group = group.to_owned();
        let streams = streams.to_vec();
        self.call(move |conn, now| {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM logpipe_leases WHERE consumer_group = ?1 AND stream = ?2"
            ))?;
            let mut found = Vec::new();
            for stream in &streams {
                let rows =
                    select.query_map(params![group, stream], |row| lease_from_row(row, now))?;
                for row in rows {
                    found.push(row?);
                }
            }
            found.sort_by(|a: &Lease, b| a.partition.cmp(&b.partition));
            Ok(found)
        })
        .await
    }

    async fn take(
        &self,
        group: &str,
        partition: &PartitionRef,
        owner: &str,
        counter: u64,
        duration: Duration,
        steal: bool,
    ) -> Result<Lease, StoreError> {
        let lost = StoreError::lease_lost(group, partition, owner);
        let (group, stream, number, owner) = (
            group.to_owned(),
            Arc::clone(&partition.stream),
            Arc::clone(&partition.partition),
            owner.to_owned(),
        );
        let taken = self
            .call(move |conn, now| {
                conn.query_row(
                    &format!(
                        "UPDATE logpipe_leases SET
                             owner_switches = owner_switches
                                 + (owner IS NOT NULL AND owner <> ?4),
                             owner = ?4,
                             counter = counter + 1,
                             expires_at_ms = ?6 + ?7
                         WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                             AND counter = ?5 AND NOT finished
                             AND (?8 OR owner IS NULL OR expires_at_ms <= ?6)
                         RETURNING {COLUMNS}"
                    ),
                    params![
                        group,
                        &*stream,
                        &*number,
                        owner,
                        counter_param(counter),
                        now,
                        duration_ms(duration),
                        steal
                    ],
                    |row| lease_from_row(row, now),
                )
                .optional()
            })
            .await?;
        taken.ok_or(lost)
    }

    async fn renew(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
        duration: Duration,
    ) -> Result<Vec<HeldLease>, StoreError> {
        let (group, owner, held) = (group.to_owned(), owner.to_owned(), held.to_vec());
        self.call(move |conn, now| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut renewed = Vec::new();
            {
                let mut update = tx.prepare_cached(
                    "UPDATE logpipe_leases SET expires_at_ms = ?6 + ?7
                     WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                         AND owner = ?4 AND counter = ?5",
                )?;
                for lease in held {
                    let changed = update.execute(params![
                        group,
                        &*lease.partition.stream,
                        &*lease.partition.partition,
                        owner,
                        counter_param(lease.counter),
                        now,
                        duration_ms(duration)
                    ])?;
                    if changed == 1 {
                        renewed.push(lease);
                    }
                }
            }
            tx.commit()?;
            Ok(renewed)
        })
        .await
    }

    async fn release(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
    ) -> Result<(), StoreError> {
        let (group, owner, held) = (group.to_owned(), owner.to_owned(), held.to_vec());
        self.call(move |conn, _| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE logpipe_leases SET owner = NULL, counter = counter + 1, expires_at_ms = 0
                     WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                         AND owner = ?4 AND counter = ?5",
                )?;
                for lease in held {
                    update.execute(params![
                        group,
                        &*lease.partition.stream,
                        &*lease.partition.partition,
                        owner,
                        counter_param(lease.counter)
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn finish(&self, group: &str, owner: &str, held: &HeldLease) -> Result<(), StoreError> {
        let lost = StoreError::lease_lost(group, &held.partition, owner);
        let (group, owner, held) = (group.to_owned(), owner.to_owned(), held.clone());
        let changed = self
            .call(move |conn, _| {
                conn.execute(
                    "UPDATE logpipe_leases SET finished = 1, owner = NULL, counter = counter + 1, expires_at_ms = 0
                     WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                         AND owner = ?4 AND counter = ?5",
                    params![
                        group,
                        &*held.partition.stream,
                        &*held.partition.partition,
                        owner,
                        counter_param(held.counter)
                    ],
                )
            })
            .await?;
        if changed == 1 { Ok(()) } else { Err(lost) }
    }
}
