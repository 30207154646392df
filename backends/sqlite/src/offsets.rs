//! The SQLite offset store.

use std::path::Path;
use std::sync::LazyLock;
use std::time::SystemTime;

use logpipe_core::leases::LeaseFence;
use logpipe_core::time::millis;
use logpipe_core::{Context, OffsetStore, PartitionRef, Position, SequenceRank, StoreError};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::db::SqliteDb;

/// A SQLite error as an offset store's.
fn database_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database {
        store: "SQLite",
        source: Box::new(error),
    }
}

/// A sequence position `column` (or `?N`) as text that sorts in the order of
/// [`SequenceRank`]: the sequence number zero-padded to 130 digits, then `.` and the user
/// record's number zero-padded to 20 digits, or `~` (above them) for a whole record.
/// Meaningful only where [`is_sequence`] holds.
fn rank(column: &str) -> String {
    let (sequence_zeros, number_zeros) = ("0".repeat(130), "0".repeat(20));
    format!(
        "(substr('{sequence_zeros}' || CASE WHEN instr({column}, ':') > 0
                 THEN substr({column}, 1, instr({column}, ':') - 1) ELSE {column} END, -130)
          || CASE WHEN instr({column}, ':') > 0
                 THEN '.' || substr('{number_zeros}' || substr({column}, instr({column}, ':') + 1), -20)
                 ELSE '~' END)"
    )
}

/// Whether `column` holds a sequence position (`S` or `S:N`) rather than a starting
/// point such as `TRIM_HORIZON`.
fn is_sequence(column: &str) -> String {
    format!(
        "({column} GLOB '[0-9]*' AND {column} NOT GLOB '*[^0-9:]*'
          AND {column} NOT GLOB '*:*:*' AND {column} NOT GLOB '*:')"
    )
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
CREATE TABLE IF NOT EXISTS logpipe_handled (
    consumer_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    partition TEXT NOT NULL,
    position_offset INTEGER NOT NULL,
    position_sequence TEXT NOT NULL,
    handled_at_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, stream, partition, position_offset, position_sequence)
) WITHOUT ROWID;
";

/// Positions in a SQLite database (the table `logpipe_positions`).
///
/// The database runs in WAL mode with a busy timeout, so several processes can share it;
/// all work runs on Tokio's blocking threads. Clones share one connection.
///
/// Handlers whose own data lives in the same database can write their rows and a mark
/// that the record is handled in one transaction with
/// [`transaction`](SqliteOffsetStore::transaction) (or
/// [`transaction_batch`](SqliteOffsetStore::transaction_batch)): a record's effects then
/// happen exactly once, even if the process is killed, and whatever the consumer's
/// concurrency. The marks (table `logpipe_handled`) of records above a partition's
/// stored position are what a restarted consumer skips; storing a position deletes
/// those up to it.
///
/// Consumers of one group sharing the file fence each other off: a mark for a record
/// marked already or at or below the stored position, and a position behind the stored
/// one, fail with [`StoreError::Fenced`]; only [`reset`](OffsetStore::reset) moves a
/// position back.
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
        db.setup(SCHEMA).map_err(database_error)?;
        Ok(Self { db })
    }

    /// Runs `work` and marks the record being handled as handled in one SQLite
    /// transaction: either both are committed or neither is.
    ///
    /// Call it from a handler with the handler's [`Context`]. A consumer that starts
    /// again before it stored a position past the record skips it
    /// ([`OffsetStore::load_handled`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when the record is handled already: marked by another
    /// transaction, or at or below its partition's stored position (another consumer of
    /// the group got there); `work` is not run. [`StoreError::Database`] when `work` or
    /// the mark fails. The transaction is then rolled back.
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
        self.transaction_batch(std::slice::from_ref(context), work)
            .await
    }

    /// Runs `work` and marks every record of `contexts` as handled in one SQLite
    /// transaction, for a batch handler (`logpipe::BatchHandler`) that writes a batch's
    /// rows at once.
    ///
    /// # Errors
    ///
    /// As [`transaction`](Self::transaction): [`StoreError::Fenced`] when any of the
    /// records is handled already.
    pub async fn transaction_batch<R, F>(
        &self,
        contexts: &[Context],
        work: F,
    ) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let marks: Vec<(String, PartitionRef, Position)> = contexts
            .iter()
            .map(|c| (c.group.to_string(), c.partition.clone(), c.position.clone()))
            .collect();
        self.db
            .call(move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(database_error)?;
                // Marked first: a record handled already is refused before its work.
                if let Some(fenced) = write_marks(&tx, &marks).map_err(database_error)? {
                    return Err(fenced);
                }
                let result = work(&tx).map_err(database_error)?;
                tx.commit().map_err(database_error)?;
                Ok(result)
            })
            .await
    }
}

/// Marks each record handled, unless it is marked already or at or below its
/// partition's stored position (handled by another consumer): then the error for the
/// first such record.
fn write_marks(
    tx: &Transaction<'_>,
    marks: &[(String, PartitionRef, Position)],
) -> rusqlite::Result<Option<StoreError>> {
    let now_ms = millis(SystemTime::now());
    static MARK: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO logpipe_handled
                 (consumer_group, stream, partition, position_offset, position_sequence, handled_at_ms)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (
                 SELECT 1 FROM logpipe_positions AS stored
                 WHERE stored.consumer_group = ?1 AND stored.stream = ?2 AND stored.partition = ?3
                     AND ((?5 = '' AND stored.position_offset >= ?4)
                          OR (?5 <> '' AND {} AND {} >= {})))
             ON CONFLICT DO NOTHING",
            is_sequence("stored.position_sequence"),
            rank("stored.position_sequence"),
            rank("?5"),
        )
    });
    let mut statement = tx.prepare_cached(&MARK)?;
    for (group, partition, position) in marks {
        let (offset, sequence) = position.mark_columns();
        let marked = statement.execute(params![
            group,
            &*partition.stream,
            &*partition.partition,
            offset,
            sequence,
            now_ms
        ])?;
        if marked == 0 {
            // Marked already (the store "has" the record itself), else covered by the
            // stored position.
            let marked_already: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM logpipe_handled
                     WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                         AND position_offset = ?4 AND position_sequence = ?5)",
                )?
                .query_row(
                    params![
                        group,
                        &*partition.stream,
                        &*partition.partition,
                        offset,
                        sequence
                    ],
                    |row| row.get(0),
                )?;
            let stored = if marked_already {
                None
            } else {
                load_row(tx, group, partition)?
                    .and_then(|(offset, sequence)| Position::from_columns(offset, sequence))
            };
            let stored = stored.unwrap_or_else(|| position.clone());
            return Ok(Some(StoreError::Fenced {
                group: group.clone(),
                partition: partition.clone(),
                attempted: position.clone(),
                stored,
            }));
        }
    }
    Ok(None)
}

/// The stored position of `group` in `partition` as its two columns, read on `conn`.
fn load_row(
    conn: &rusqlite::Connection,
    group: &str,
    partition: &PartitionRef,
) -> rusqlite::Result<Option<(Option<i64>, Option<String>)>> {
    conn.prepare_cached(
        "SELECT position_offset, position_sequence FROM logpipe_positions
         WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3",
    )?
    .query_row(
        params![group, &*partition.stream, &*partition.partition],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

/// Deletes the marks of `group` in each partition up to its new position (`all`: every
/// mark of the partition, as when an operator moves the group).
fn forget_marks(
    tx: &Transaction<'_>,
    group: &str,
    positions: &[(PartitionRef, Position)],
    all: bool,
) -> rusqlite::Result<()> {
    static FORGET: LazyLock<String> = LazyLock::new(|| {
        format!(
            "DELETE FROM logpipe_handled
             WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3 AND (?4
                 OR (?6 = '' AND position_sequence = '' AND position_offset <= ?5)
                 OR (?6 <> '' AND position_sequence <> '' AND {} <= {}))",
            rank("position_sequence"),
            rank("?6"),
        )
    });
    let mut statement = tx.prepare_cached(&FORGET)?;
    for (partition, position) in positions {
        // A Kinesis starting point (TRIM_HORIZON) is below every sequence number.
        let (offset, sequence) = position.mark_columns();
        let starting_point = !sequence.is_empty() && SequenceRank::of(sequence).is_none();
        statement.execute(params![
            group,
            &*partition.stream,
            &*partition.partition,
            all || starting_point,
            offset,
            sequence
        ])?;
    }
    Ok(())
}

/// The error for the first of `fences` whose lease this file keeps with another owner or
/// counter now; `None` when each holds or is kept elsewhere (run in a write transaction,
/// so that no take comes between the check and the write).
fn check_fences(
    tx: &Transaction<'_>,
    group: &str,
    fences: &[(PartitionRef, LeaseFence)],
) -> rusqlite::Result<Option<StoreError>> {
    if fences.is_empty() {
        return Ok(None);
    }
    let leases_kept: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'logpipe_leases')",
        [],
        |row| row.get(0),
    )?;
    if !leases_kept {
        return Ok(None);
    }
    let mut statement = tx.prepare_cached(
        "SELECT owner, counter FROM logpipe_leases
         WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3",
    )?;
    for (partition, fence) in fences {
        let lease: Option<(Option<String>, i64)> = statement
            .query_row(
                params![group, &*partition.stream, &*partition.partition],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((owner, counter)) = lease
            && !fence.holds(owner.as_deref(), counter)
        {
            return Ok(Some(StoreError::lease_lost(group, partition, &fence.owner)));
        }
    }
    Ok(None)
}

/// Stores `positions`, none of them behind a stored one unless `reset` (an operator
/// moving the group back); then the error for the first that is.
fn write_positions(
    tx: &Transaction<'_>,
    group: &str,
    positions: &[(PartitionRef, Position)],
    reset: bool,
) -> rusqlite::Result<Option<StoreError>> {
    let now_ms = millis(SystemTime::now());
    static STORE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO logpipe_positions
                 (consumer_group, stream, partition, position_offset, position_sequence, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (consumer_group, stream, partition) DO UPDATE SET
                 position_offset = excluded.position_offset,
                 position_sequence = excluded.position_sequence,
                 updated_at_ms = excluded.updated_at_ms
             WHERE ?7 OR NOT CASE
                 WHEN position_offset IS NOT NULL AND excluded.position_offset IS NOT NULL
                     THEN position_offset > excluded.position_offset
                 WHEN position_sequence IS NOT NULL AND excluded.position_sequence IS NOT NULL
                     AND {}
                     THEN NOT {} OR {} > {}
                 ELSE 0
             END",
            is_sequence("position_sequence"),
            is_sequence("excluded.position_sequence"),
            rank("position_sequence"),
            rank("excluded.position_sequence"),
        )
    });
    let mut statement = tx.prepare_cached(&STORE)?;
    for (partition, position) in positions {
        let (offset, sequence) = match position {
            Position::Offset(offset) => (Some(*offset), None),
            Position::Sequence(sequence) => (None, Some(sequence.as_str())),
        };
        let stored = statement.execute(params![
            group,
            &*partition.stream,
            &*partition.partition,
            offset,
            sequence,
            now_ms,
            reset
        ])?;
        if stored == 0 {
            return Ok(Some(StoreError::Fenced {
                group: group.to_owned(),
                partition: partition.clone(),
                attempted: position.clone(),
                stored: load_row(tx, group, partition)?
                    .and_then(|(offset, sequence)| Position::from_columns(offset, sequence))
                    .unwrap_or_else(|| position.clone()),
            }));
        }
    }
    Ok(None)
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
            .call(move |conn| load_row(conn, &key_group, &key))
            .await
            .map_err(database_error)?;
        row.map(|row| {
            Position::from_columns(row.0, row.1).ok_or_else(|| StoreError::Corrupt {
                group: group.to_owned(),
                partition: partition.clone(),
            })
        })
        .transpose()
    }

    /// Stores every position, all or none; fails with [`StoreError::Fenced`] (storing
    /// none) when one is behind its stored position.
    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        self.write(group, positions, &[], false).await
    }

    /// Checks the fences against the leases in this file (`SqliteLeaseStore`) in the
    /// write transaction that stores the positions.
    async fn store_fenced(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
        fences: &[(PartitionRef, LeaseFence)],
    ) -> Result<(), StoreError> {
        self.write(group, positions, fences, false).await
    }

    /// Also moves positions back, and forgets every record marked handled in these
    /// partitions, so that they are handled again from the new positions.
    async fn reset(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        self.write(group, positions, &[], true).await
    }

    async fn load_handled(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Vec<Position>, StoreError> {
        let (key_group, key) = (group.to_owned(), partition.clone());
        self.db
            .call(move |conn| {
                static MARKS: LazyLock<String> = LazyLock::new(|| {
                    format!(
                        "SELECT position_offset, position_sequence FROM logpipe_handled
                         WHERE consumer_group = ?1 AND stream = ?2 AND partition = ?3
                         ORDER BY {}, position_offset",
                        rank("position_sequence")
                    )
                });
                let mut statement = conn.prepare_cached(&MARKS)?;
                let rows = statement
                    .query_map(params![key_group, &*key.stream, &*key.partition], |row| {
                        Ok(Position::from_mark_columns(row.get(0)?, row.get(1)?))
                    })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(database_error)
    }
}

impl SqliteOffsetStore {
    /// Stores `positions` and forgets the marks up to them, in one transaction; `all`
    /// (an operator's reset) may move positions back and forgets every mark of their
    /// partitions.
    async fn write(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
        fences: &[(PartitionRef, LeaseFence)],
        all: bool,
    ) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let (group, positions, fences) = (group.to_owned(), positions.to_vec(), fences.to_vec());
        self.db
            .call(move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(database_error)?;
                if let Some(lost) = check_fences(&tx, &group, &fences).map_err(database_error)? {
                    return Err(lost);
                }
                if let Some(fenced) =
                    write_positions(&tx, &group, &positions, all).map_err(database_error)?
                {
                    return Err(fenced);
                }
                forget_marks(&tx, &group, &positions, all).map_err(database_error)?;
                tx.commit().map_err(database_error)
            })
            .await
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

    async fn handled(store: &SqliteOffsetStore, partition: &PartitionRef) -> Vec<Position> {
        store.load_handled("g", partition).await.unwrap()
    }

    #[tokio::test]
    async fn a_transaction_marks_its_record_handled_or_nothing_when_it_fails() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let context = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(7));
        let failed = store
            .transaction(&context, |tx| {
                tx.execute("INSERT INTO no_such_table VALUES (1)", [])
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(handled(&store, &context.partition).await, []);

        store
            .transaction(&context, |tx| {
                tx.execute_batch("CREATE TABLE handled (n INTEGER)")
            })
            .await
            .unwrap();
        assert_eq!(
            handled(&store, &context.partition).await,
            [Position::Offset(7)]
        );
        // The mark is not a stored position: the consumer stores those.
        assert_eq!(store.load("g", &context.partition).await.unwrap(), None);
    }

    #[tokio::test]
    async fn storing_a_position_forgets_the_marks_up_to_it_and_a_reset_forgets_all() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let partition = PartitionRef::new("s", "0");
        let contexts: Vec<Context> = [3, 5, 9, 12]
            .into_iter()
            .map(|n| Context::new("g", partition.clone(), Position::Offset(n)))
            .collect();
        store
            .transaction_batch(&contexts, |_| Ok(()))
            .await
            .unwrap();
        let other_group = Context::new("h", partition.clone(), Position::Offset(4));
        store.transaction(&other_group, |_| Ok(())).await.unwrap();

        store
            .store("g", &[(partition.clone(), Position::Offset(5))])
            .await
            .unwrap();
        assert_eq!(
            handled(&store, &partition).await,
            [Position::Offset(9), Position::Offset(12)]
        );
        assert_eq!(
            store.load_handled("h", &partition).await.unwrap(),
            [Position::Offset(4)],
            "another group's marks stay"
        );
        store
            .reset("g", &[(partition.clone(), Position::Offset(2))])
            .await
            .unwrap();
        assert_eq!(handled(&store, &partition).await, []);
        assert_eq!(
            store.load("g", &partition).await.unwrap(),
            Some(Position::Offset(2))
        );
    }

    #[tokio::test]
    async fn sequence_numbers_are_compared_as_numbers() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let shard = PartitionRef::new("s", "shardId-000000000000");
        let sequence = |s: &str| Position::Sequence(s.to_owned());
        let long = "49590338271490256608559692538361571095921575989136588898";
        // User records of the aggregated record 10 come before 10 itself.
        let contexts: Vec<Context> = ["9", "10:1", "10:12", "10", long]
            .into_iter()
            .map(|s| Context::new("g", shard.clone(), sequence(s)))
            .collect();
        store
            .transaction_batch(&contexts, |_| Ok(()))
            .await
            .unwrap();
        assert_eq!(
            handled(&store, &shard).await,
            ["9", "10:1", "10:12", "10", long].map(sequence),
            "in position order"
        );
        store
            .store("g", &[(shard.clone(), sequence("10:12"))])
            .await
            .unwrap();
        assert_eq!(handled(&store, &shard).await, ["10", long].map(sequence));
        store
            .store("g", &[(shard.clone(), sequence("10"))])
            .await
            .unwrap();
        assert_eq!(handled(&store, &shard).await, [sequence(long)]);
        // A starting point (such as TRIM_HORIZON) is below every record: storing one
        // is an operator's reset, which forgets all.
        store
            .reset("g", &[(shard.clone(), sequence("TRIM_HORIZON"))])
            .await
            .unwrap();
        assert_eq!(handled(&store, &shard).await, []);
    }

    #[tokio::test]
    async fn a_record_handled_already_is_fenced_before_its_work_runs() {
        let store = SqliteOffsetStore::open_in_memory().unwrap();
        let partition = PartitionRef::new("s", "0");
        let record = Context::new("g", partition.clone(), Position::Offset(7));
        let create = |tx: &Transaction<'_>| tx.execute_batch("CREATE TABLE rows (n INTEGER)");
        store.transaction(&record, create).await.unwrap();
        let insert = |tx: &Transaction<'_>| tx.execute("INSERT INTO rows VALUES (1)", []).map(drop);
        // Marked by another consumer already.
        let again = store.transaction(&record, insert).await;
        assert!(matches!(again, Err(StoreError::Fenced { .. })), "{again:?}");
        // At or below the stored position: another consumer moved past it.
        store
            .store("g", &[(partition.clone(), Position::Offset(10))])
            .await
            .unwrap();
        let behind = Context::new("g", partition.clone(), Position::Offset(9));
        match store.transaction(&behind, insert).await {
            Err(StoreError::Fenced { stored, .. }) => assert_eq!(stored, Position::Offset(10)),
            other => panic!("{other:?}"),
        }
        let ahead = Context::new("g", partition.clone(), Position::Offset(11));
        store.transaction(&ahead, insert).await.unwrap();
        let rows: i64 = store
            .transaction(&Context::new("g", partition, Position::Offset(12)), |tx| {
                tx.query_row("SELECT COUNT(*) FROM rows", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(
            rows, 1,
            "only the record ahead of the stored position wrote"
        );
        // Sequence numbers compare by value: 9 is below 10 though longer as text is not.
        let shard = PartitionRef::new("s", "shardId-000000000000");
        let sequence = |s: &str| Position::Sequence(s.to_owned());
        store
            .store("g", &[(shard.clone(), sequence("10"))])
            .await
            .unwrap();
        let below = Context::new("g", shard.clone(), sequence("9"));
        assert!(matches!(
            store.transaction(&below, |_| Ok(())).await,
            Err(StoreError::Fenced { .. })
        ));
        let above = Context::new("g", shard, sequence("11"));
        store.transaction(&above, |_| Ok(())).await.unwrap();
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
            store.load_handled("g", &context.partition).await.unwrap(),
            [Position::Offset(3)]
        );
        // Record 4 was not marked: it can be handled again.
        let again = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(4));
        let rows: i64 = store
            .transaction(&again, |tx| {
                tx.query_row("SELECT COUNT(*) FROM handled", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(rows, 0, "the panicking transaction was rolled back");
    }
}
