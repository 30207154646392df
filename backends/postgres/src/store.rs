//! The PostgreSQL offset store.

use std::sync::Arc;

use logpipe_core::leases::LeaseFence;
use logpipe_core::{Context, OffsetStore, PartitionRef, Position, SequenceRank, StoreError};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, SqlStr, Transaction};
use tokio::sync::OnceCell;

use crate::options::PgStoreOptions;
use crate::schema::Statements;

/// A PostgreSQL error as an offset store's, said once.
pub(crate) fn database_error(error: sqlx::Error) -> StoreError {
    StoreError::Database {
        store: "PostgreSQL",
        source: described(error),
    }
}

/// A PostgreSQL error, said once: the server's message and SQLSTATE, or what a pool
/// timeout means.
pub(crate) fn described(error: sqlx::Error) -> logpipe_core::BoxError {
    match &error {
        // The driver's text repeats the server's message and the server's source line.
        sqlx::Error::Database(database) => match database.code() {
            Some(code) => format!("{} (SQLSTATE {code})", database.message()).into(),
            None => database.message().into(),
        },
        sqlx::Error::PoolTimedOut => {
            "no connection within connect_timeout_ms: the server cannot be reached, or all pool_size connections are busy"
                .into()
        }
        _ => Box::new(error),
    }
}

/// Creates `schema` if it is missing, then runs `create` (statements that create tables
/// in it if they are missing), one process at a time.
pub(crate) async fn create_tables(
    pool: &PgPool,
    schema: &str,
    create: SqlStr,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One creator at a time: concurrent CREATE ... IF NOT EXISTS can collide.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('logpipe tables ' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    let schema_exists: bool =
        sqlx::query_scalar("SELECT to_regnamespace(quote_ident($1)) IS NOT NULL")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await?;
    if !schema_exists {
        // Only when missing, since `IF NOT EXISTS` still needs the database's CREATE
        // privilege.
        let create_schema = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        sqlx::raw_sql(AssertSqlSafe(create_schema))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::raw_sql(create).execute(&mut *tx).await?;
    tx.commit().await
}

/// Whether `error` is PostgreSQL's deadlock abort (SQLSTATE 40P01).
fn is_deadlock(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .is_some_and(|code| code == "40P01")
}

/// Whether `stored` is past `other` in the same partition (as the store's statements
/// compare them: sequence positions by [`SequenceRank`], a starting point below all).
fn is_past(stored: &Position, other: &Position) -> bool {
    match (stored, other) {
        (Position::Offset(stored), Position::Offset(other)) => stored > other,
        (Position::Sequence(stored), Position::Sequence(other)) => {
            SequenceRank::of(stored) > SequenceRank::of(other)
        }
        _ => false,
    }
}

/// Positions in PostgreSQL (the tables `logpipe_positions` and `logpipe_handled` of the
/// URL's `schema`), for any backend: `offset_store = "postgres://..."`.
///
/// Clones share one connection pool. The tables are created when the store is first
/// used, unless they exist (as after `logpipe offsets migrate`, for a service whose
/// database user may not create tables).
///
/// Handlers whose data lives in the same database write their rows in a transaction
/// from [`begin`](Self::begin) (or [`begin_batch`](Self::begin_batch)), which also marks
/// their records handled: the rows and the marks commit together or not at all, so a
/// record's effects happen exactly once, even if the process is killed, and whatever
/// the consumer's concurrency. As in [`SqliteOffsetStore`](https://docs.rs/logpipe-sqlite),
/// the marks of records above a partition's stored position are what a restarted
/// consumer skips, and storing a position forgets the marks up to it.
///
/// **Fencing.** A consumer that lost its partition without knowing (a process thought
/// dead, a rebalance it missed) cannot undo its successor's work: a mark for a record
/// that is marked already, or at or below the partition's stored position, fails the
/// transaction with [`StoreError::Fenced`]; so does storing a position behind the
/// stored one. Only an operator's [`reset`](OffsetStore::reset) moves a position back.
#[derive(Clone)]
pub struct PgOffsetStore {
    pool: PgPool,
    statements: Arc<Statements>,
    tables: Arc<OnceCell<()>>,
    /// Set once the table of leases is seen to exist (it is not dropped under a store).
    leases_kept: Arc<std::sync::atomic::AtomicBool>,
    options: Arc<PgStoreOptions>,
}

impl std::fmt::Debug for PgOffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOffsetStore")
            .field("url", &self.options.to_string())
            .finish_non_exhaustive()
    }
}

impl PgOffsetStore {
    /// Connects to the server `options` names and creates the tables if they are
    /// missing, so that a wrong URL, password or server fails here.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the server cannot be reached, refuses the login,
    /// or the tables cannot be created.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use logpipe_postgres::PgOffsetStore;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PgOffsetStore::connect(&"postgres://app@db/people?schema=logpipe".parse()?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: &PgStoreOptions) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(options);
        store.tables().await?;
        Ok(store)
    }

    /// A store that connects when it is first used (and creates the tables then).
    /// Call it inside a Tokio runtime.
    pub fn connect_lazy(options: &PgStoreOptions) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(options.connect.clone());
        Self {
            pool,
            statements: Arc::new(Statements::new(&options.schema)),
            tables: Arc::new(OnceCell::new()),
            leases_kept: Arc::default(),
            options: Arc::new(options.clone()),
        }
    }

    /// Its statements.
    pub(crate) fn statements(&self) -> &Statements {
        &self.statements
    }

    /// The options it was made with.
    pub(crate) fn options(&self) -> &PgStoreOptions {
        &self.options
    }

    /// The connection pool, for a service's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema and the tables if they are missing (`logpipe offsets
    /// migrate`). Several processes may run it at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the server cannot be reached or refuses.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        create_tables(
            &self.pool,
            &self.options.schema,
            self.statements.create.clone(),
        )
        .await
        .map_err(database_error)
    }

    /// Makes sure the tables exist, once per store.
    async fn tables(&self) -> Result<(), StoreError> {
        self.tables
            .get_or_try_init(|| async {
                let exists: bool = sqlx::query_scalar(self.statements.exists.clone())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(database_error)?;
                if !exists {
                    self.migrate().await?;
                }
                Ok(())
            })
            .await
            .map(drop)
    }

    /// A transaction in which the record of `context` is marked handled: write the
    /// handler's rows in it, then commit. The rows and the mark commit together or
    /// neither does (dropping the transaction rolls it back). Call it from a handler
    /// with the handler's [`Context`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when the record is handled already: marked by another
    /// transaction, or at or below its partition's stored position (its partition has
    /// a new owner). [`StoreError::Database`] when the server fails.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it leaves nothing behind: the transaction is rolled back.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # use logpipe_core::Context;
    /// # use logpipe_postgres::PgOffsetStore;
    /// # async fn handle(store: &PgOffsetStore, context: &Context) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let mut tx = store.begin(context).await?;
    /// sqlx::query("INSERT INTO people (uuid, name) VALUES ($1, $2)")
    ///     .bind("6f1c")
    ///     .bind("Ada Lovelace")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin(
        &self,
        context: &Context,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.begin_batch(std::slice::from_ref(context)).await
    }

    /// [`begin`](Self::begin) for a batch handler: one transaction that marks every
    /// record of `contexts` handled.
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin): [`StoreError::Fenced`] when any of them is handled
    /// already.
    pub async fn begin_batch(
        &self,
        contexts: &[Context],
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.tables().await?;
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        let mut columns = MarkColumns::default();
        for context in contexts {
            columns.push(context);
        }
        let marked = columns.count(&self.statements.mark, &mut tx).await?;
        // A mark that waited for a row another transaction deleted (a successor storing
        // its position) went in; that position is visible now.
        let covered = columns.count(&self.statements.covered, &mut tx).await?;
        if marked < contexts.len() as i64 || covered > 0 {
            drop(tx);
            return Err(self.fenced_mark(contexts).await);
        }
        Ok(tx)
    }

    /// The error for marks that were refused: the first record at or below its
    /// partition's stored position, else the first (marked already).
    async fn fenced_mark(&self, contexts: &[Context]) -> StoreError {
        for context in contexts {
            match self.load(&context.group, &context.partition).await {
                Ok(Some(stored)) if !is_past(&context.position, &stored) => {
                    return fenced(context, stored);
                }
                Ok(_) => {}
                Err(err) => return err,
            }
        }
        let context = &contexts[0];
        fenced(context, context.position.clone())
    }

    /// Stores `positions` and forgets the marks up to them (`reset`: moving positions
    /// back, and forgetting every mark of their partitions), in one transaction.
    async fn write(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
        fences: &[(PartitionRef, LeaseFence)],
        reset: bool,
    ) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        self.tables().await?;
        // One row a partition (the last given wins, as in every store), in key order, so
        // that concurrent stores lock rows in the same order.
        let mut last: std::collections::BTreeMap<&PartitionRef, &Position> =
            std::collections::BTreeMap::new();
        for (partition, position) in positions {
            last.insert(partition, position);
        }
        let positions: Vec<(PartitionRef, Position)> = last
            .into_iter()
            .map(|(partition, position)| (partition.clone(), position.clone()))
            .collect();
        let positions = positions.as_slice();
        let mut streams = Vec::with_capacity(positions.len());
        let mut partitions = Vec::with_capacity(positions.len());
        let mut offsets = Vec::with_capacity(positions.len());
        let mut sequences = Vec::with_capacity(positions.len());
        for (partition, position) in positions {
            streams.push(&*partition.stream);
            partitions.push(&*partition.partition);
            match position {
                Position::Offset(offset) => {
                    offsets.push(Some(*offset));
                    sequences.push(None);
                }
                Position::Sequence(sequence) => {
                    offsets.push(None);
                    sequences.push(Some(sequence.as_str()));
                }
            }
        }
        // The lease store's renewal locks the leases in an order of its own: when it and
        // this check wait for each other, PostgreSQL aborts one, and a check aborted so
        // is tried again (a renewal aborted so is tried at the next round).
        let mut attempts = 0;
        let mut tx = loop {
            attempts += 1;
            let mut tx = self.pool.begin().await.map_err(database_error)?;
            match self.check_fences(&mut tx, group, fences).await {
                Ok(None) => break tx,
                Ok(Some(lost)) => return Err(lost),
                Err(error) if attempts < 3 && is_deadlock(&error) => {}
                Err(error) => return Err(database_error(error)),
            }
        };
        let stored: i64 = sqlx::query_scalar(self.statements.store.clone())
            .bind(group)
            .bind(&streams)
            .bind(&partitions)
            .bind(&offsets)
            .bind(&sequences)
            .bind(reset)
            .fetch_one(&mut *tx)
            .await
            .map_err(database_error)?;
        if stored < positions.len() as i64 {
            drop(tx);
            return Err(self.fenced_store(group, positions).await);
        }
        tx.commit().await.map_err(database_error)
    }

    /// The error for the first of `fences` whose lease this database keeps with another
    /// owner or counter now; `None` when each holds or is kept elsewhere. The leases
    /// checked stay locked against a take until `tx` ends.
    async fn check_fences(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        group: &str,
        fences: &[(PartitionRef, LeaseFence)],
    ) -> Result<Option<StoreError>, sqlx::Error> {
        if fences.is_empty() {
            return Ok(None);
        }
        use std::sync::atomic::Ordering;
        if !self.leases_kept.load(Ordering::Relaxed) {
            let kept: bool = sqlx::query_scalar(self.statements.leases_exist.clone())
                .fetch_one(&mut **tx)
                .await?;
            if !kept {
                return Ok(None);
            }
            self.leases_kept.store(true, Ordering::Relaxed);
        }
        let streams: Vec<&str> = fences.iter().map(|(p, _)| &*p.stream).collect();
        let partitions: Vec<&str> = fences.iter().map(|(p, _)| &*p.partition).collect();
        let leases: Vec<(String, String, Option<String>, i64)> =
            sqlx::query_as(self.statements.lease_fences.clone())
                .bind(group)
                .bind(&streams)
                .bind(&partitions)
                .fetch_all(&mut **tx)
                .await?;
        for (stream, partition, owner, counter) in leases {
            let fenced = fences
                .iter()
                .find(|(p, _)| *p.stream == *stream && *p.partition == *partition);
            if let Some((partition, fence)) = fenced
                && !fence.holds(owner.as_deref(), counter)
            {
                return Ok(Some(StoreError::lease_lost(group, partition, &fence.owner)));
            }
        }
        Ok(None)
    }

    /// The error for a store that was refused: the first position behind a stored one.
    async fn fenced_store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> StoreError {
        for (partition, attempted) in positions {
            match self.load(group, partition).await {
                Ok(Some(stored)) if is_past(&stored, attempted) => {
                    return StoreError::Fenced {
                        group: group.to_owned(),
                        partition: partition.clone(),
                        attempted: attempted.clone(),
                        stored,
                    };
                }
                Ok(_) => {}
                Err(err) => return err,
            }
        }
        // Moved on again since: a newer store won, which is what fencing is for.
        let (partition, attempted) = &positions[0];
        StoreError::Fenced {
            group: group.to_owned(),
            partition: partition.clone(),
            attempted: attempted.clone(),
            stored: attempted.clone(),
        }
    }
}

fn fenced(context: &Context, stored: Position) -> StoreError {
    StoreError::Fenced {
        group: context.group.to_string(),
        partition: context.partition.clone(),
        attempted: context.position.clone(),
        stored,
    }
}

/// The marks of a batch as the arrays the mark statement takes.
#[derive(Default)]
struct MarkColumns<'a> {
    groups: Vec<&'a str>,
    streams: Vec<&'a str>,
    partitions: Vec<&'a str>,
    offsets: Vec<i64>,
    sequences: Vec<&'a str>,
}

impl<'a> MarkColumns<'a> {
    /// Runs `statement` (`mark` or `covered`) on the marks; its count.
    async fn count(
        &self,
        statement: &SqlStr,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(statement.clone())
            .bind(&self.groups)
            .bind(&self.streams)
            .bind(&self.partitions)
            .bind(&self.offsets)
            .bind(&self.sequences)
            .fetch_one(&mut **tx)
            .await
            .map_err(database_error)
    }

    fn push(&mut self, context: &'a Context) {
        let (offset, sequence) = context.position.mark_columns();
        self.groups.push(&context.group);
        self.streams.push(&context.partition.stream);
        self.partitions.push(&context.partition.partition);
        self.offsets.push(offset);
        self.sequences.push(sequence);
    }
}

impl OffsetStore for PgOffsetStore {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        self.tables().await?;
        let row: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as(self.statements.load.clone())
                .bind(group)
                .bind(&*partition.stream)
                .bind(&*partition.partition)
                .fetch_optional(&self.pool)
                .await
                .map_err(database_error)?;
        row.map(|(offset, sequence)| {
            Position::from_columns(offset, sequence).ok_or_else(|| StoreError::Corrupt {
                group: group.to_owned(),
                partition: partition.clone(),
            })
        })
        .transpose()
    }

    /// Stores every position in one statement, all or none; fails with
    /// [`StoreError::Fenced`] (storing none) when one is behind its stored position.
    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        self.write(group, positions, &[], false).await
    }

    /// Checks the fences against the leases in this database (`PgLeaseStore`), which
    /// stay locked against a take until the positions are written.
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
        self.tables().await?;
        let rows: Vec<(i64, String)> = sqlx::query_as(self.statements.marks.clone())
            .bind(group)
            .bind(&*partition.stream)
            .bind(&*partition.partition)
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(rows
            .into_iter()
            .map(|(offset, sequence)| Position::from_mark_columns(offset, sequence))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_as_the_statements_do() {
        let sequence = |s: &str| Position::Sequence(s.to_owned());
        assert!(is_past(&Position::Offset(5), &Position::Offset(4)));
        assert!(!is_past(&Position::Offset(4), &Position::Offset(4)));
        assert!(is_past(&sequence("10"), &sequence("9")));
        assert!(is_past(&sequence("10"), &sequence("TRIM_HORIZON")));
        assert!(!is_past(&sequence("TRIM_HORIZON"), &sequence("1")));
        assert!(!is_past(&sequence("10"), &Position::Offset(1)));
    }
}
