//! The SQLite offset store.

use std::path::Path;
use std::time::SystemTime;

use logpipe_core::time::millis;
use logpipe_core::{Context, OffsetStore, PartitionRef, Position, StoreError};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::db::SqliteDb;

/// A SQLite error as an offset store's.
fn database_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database {
        store: "SQLite",
        source: Box::new(error),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logpipe_positions (
    consumer_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    partition TEXT NOT NULL,
    position_offset INTEGER,
    position_sequence TEXT,
    updated_at_ms INTEGER NOT NULL,
    CHECK ((position_offset IS NULL) <> (position_sequence IS NULL)),
    PRIMARY KEY (consumer_group, stream, partition)
) WITHOUT ROWID;
";

/// Positions in a SQLite database (the table `logpipe_positions`).
///
/// The database runs in WAL mode with a busy timeout, so several processes can share it;
/// all work runs on Tokio's blocking threads. Clones share one connection.
///
/// Handlers whose own data lives in the same database can make their writes and the
/// position write one transaction with [`transaction`](SqliteOffsetStore::transaction):
/// a record's effects then happen exactly once, even if the process is killed.
#[derive(Clone)]
pub struct SqliteOffsetStore {
    db: SqliteDb,
}

impl std::fmt::Debug for SqliteOffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOffsetStore").finish_non_exhaustive()
    }
}

impl SqliteOffsetStore {
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

    fn init(db: SqliteDb) -> Result<Self, StoreError> {
        db.call_blocking(|conn| conn.execute_batch(SCHEMA))
            .map_err(database_error)?;
        Ok(Self { db })
    }

    /// Runs `work` and stores the position of the record being handled in one SQLite
    /// transaction: either both are committed or neither is.
    ///
    /// Call it from a handler with the handler's [`Context`]. The consumer stores the same
    /// position again later, which changes nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when `work` or the position write fails; the transaction
    /// is then rolled back.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # use logpipe_core::{Context, StoreError};
    /// # use logpipe_sqlite::SqliteOffsetStore;
    /// # async fn handle(store: &SqliteOffsetStore, context: &Context) -> Result<(), StoreError> {
    /// store
    ///     .transaction(context, |tx| {
    ///         tx.execute("INSERT INTO people (uuid) VALUES ('6f1c')", [])?;
    ///         Ok(())
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn transaction<R, F>(&self, context: &Context, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let group = context.group.to_string();
        let position = (context.partition.clone(), context.position.clone());
        let result = self
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let result = work(&tx)?;
                write_positions(&tx, &group, std::slice::from_ref(&position))?;
                tx.commit()?;
                Ok::<_, rusqlite::Error>(result)
            })
            .await
            .map_err(database_error)?;
        Ok(result)
    }
}

fn write_positions(
    tx: &Transaction<'_>,
    group: &str,
    positions: &[(PartitionRef, Position)],
) -> rusqlite::Result<()> {
    let now_ms = millis(SystemTime::now());
    let mut statement = tx.prepare_cached(
        "INSERT INTO logpipe_positions
             (consumer_group, stream, partition, position_offset, position_sequence, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (consumer_group, stream, partition) DO UPDATE SET
             position_offset = excluded.position_offset,
             position_sequence = excluded.position_sequence,
             updated_at_ms = excluded.updated_at_ms",
    )?;
    for (partition, position) in positions {
        let (offset, sequence) = match position {
            Position::Offset(offset) => (Some(*offset), None),
            Position::Sequence(sequence) => (None, Some(sequence.as_str())),
        };
        statement.execute(params![
            group,
            &*partition.stream,
            &*partition.partition,
            offset,
            sequence,
            now_ms
        ])?;
    }
    Ok(())
}

impl OffsetStore for SqliteOffsetStore {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        let (key_group, key) = (group.to_owned(), partition.clone());
        let row = self
            .db
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT position_offset, position_sequence FROM logpipe_positions
                     WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3",
                )?
                .query_row(params![key_group, &*key.stream, &*key.partition], |row| {
                    Ok((
                        row.get::<_, Option<i64>>(0)?,
                        row.get::<_, Option<String>>(1)?,
                    ))
                })
                .optional()
            })
            .await
            .map_err(database_error)?;
        match row {
            None => Ok(None),
            Some((Some(offset), None)) => Ok(Some(Position::Offset(offset))),
            Some((None, Some(sequence))) => Ok(Some(Position::Sequence(sequence))),
            Some(_) => Err(StoreError::Corrupt {
                group: group.to_owned(),
                partition: partition.clone(),
            }),
        }
    }

    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let (group, positions) = (group.to_owned(), positions.to_vec());
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                write_positions(&tx, &group, &positions)?;
                tx.commit()
            })
            .await
            .map_err(database_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn positions_survive_reopening_and_keep_64_bit_offsets_and_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.db");
        let kafka = PartitionRef::new("people", "0");
        let kinesis = PartitionRef::new("people-stream", "shardId-000000000001");
        let sequence = "49590338271490256608559692538361571095921575989136588898".to_owned();
        {
            let store = SqliteOffsetStore::open(&path).unwrap();
            store
                .store(
                    "billing",
                    &[
                        (kafka.clone(), Position::Offset(i64::MAX - 1)),
                        (kinesis.clone(), Position::Sequence(sequence.clone())),
                    ],
                )
                .await
                .unwrap();
        }
        let store = SqliteOffsetStore::open(&path).unwrap();
        assert_eq!(
            store.load("billing", &kafka).await.unwrap(),
            Some(Position::Offset(i64::MAX - 1))
        );
        assert_eq!(
            store.load("billing", &kinesis).await.unwrap(),
            Some(Position::Sequence(sequence))
        );
        assert_eq!(store.load("search", &kafka).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_transaction_stores_no_position() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let context = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(7));
        let failed = store
            .transaction(&context, |tx| {
                tx.execute("INSERT INTO no_such_table VALUES (1)", [])
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.load("g", &context.partition).await.unwrap(), None);

        store
            .transaction(&context, |tx| {
                tx.execute_batch("CREATE TABLE handled (n INTEGER)")
            })
            .await
            .unwrap();
        assert_eq!(
            store.load("g", &context.partition).await.unwrap(),
            Some(Position::Offset(7))
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_transaction_rolls_it_back_and_leaves_the_store_usable() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let context = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(3));
        store
            .transaction(&context, |tx| {
                tx.execute_batch("CREATE TABLE handled (n INTEGER)")
            })
            .await
            .unwrap();
        let store_in_task = store.clone();
        let panicked = tokio::spawn(async move {
            let context = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(4));
            store_in_task
                .transaction(&context, |tx| -> rusqlite::Result<()> {
                    tx.execute("INSERT INTO handled VALUES (4)", [])?;
                    panic!("a bug in the handler")
                })
                .await
        })
        .await;
        assert!(panicked.unwrap_err().is_panic());
        assert_eq!(
            store.load("g", &context.partition).await.unwrap(),
            Some(Position::Offset(3))
        );
        let rows: i64 = store
            .transaction(&context, |tx| {
                tx.query_row("SELECT COUNT(*) FROM handled", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(rows, 0, "the panicking transaction was rolled back");
    }
}
