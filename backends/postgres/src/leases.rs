//! The PostgreSQL lease store.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use logpipe_core::leases::{HeldLease, Lease, LeaseStore, LeaseUnit};
use logpipe_core::{PartitionRef, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};
use tokio::sync::OnceCell;

use crate::PgOffsetStore;
use crate::store::database_error;

/// Leases in PostgreSQL (the table `logpipe_leases` of the store's schema, beside its
/// positions), for the processes of a group on many machines. Expiry is judged by the
/// server's clock, so the workers' clocks need not agree. Made with
/// [`PgOffsetStore::leases`]; clones share the store's pool.
#[derive(Clone, Debug)]
pub struct PgLeaseStore {
    store: PgOffsetStore,
    sql: Arc<Statements>,
    table: Arc<OnceCell<()>>,
}

#[derive(Debug)]
struct Statements {
    register: SqlStr,
    list: SqlStr,
    take: SqlStr,
    renew: SqlStr,
    release: SqlStr,
    finish: SqlStr,
}

/// The columns a lease is read from, in `lease_from_row`'s order.
const COLUMNS: &str = "stream, partition, owner, counter,
    (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at_ms,
    parents, finished, owner_switches,
    (owner IS NULL OR expires_at <= now()) AS free";

impl Statements {
    fn new(schema: &str) -> Self {
        let leases = format!("\"{schema}\".logpipe_leases");
        let sql = |text: String| AssertSqlSafe(text).into_sql_str();
        // `$1` group, `$2` owner, `$3..$5` arrays of stream, partition, counter: the
        // leases `$2` holds with those counters.
        let held =
            "FROM UNNEST($3::text[], $4::text[], $5::bigint[]) AS held (stream, partition, counter)
             WHERE lease.consumer_group = $1 AND lease.stream = held.stream
                 AND lease.partition = held.partition AND lease.owner = $2
                 AND lease.counter = held.counter";
        Self {
            register: sql(format!(
                "INSERT INTO {leases} (consumer_group, stream, partition, parents)
                 SELECT $1, stream, partition, string_to_array(parents, E'\\n')
                 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS unit (stream, partition, parents)
                 ON CONFLICT DO NOTHING"
            )),
            list: sql(format!(
                "SELECT {COLUMNS} FROM {leases} WHERE consumer_group = $1 AND stream = ANY($2)"
            )),
            take: sql(format!(
                "UPDATE {leases} SET
                     owner_switches = owner_switches
                         + CASE WHEN owner IS NOT NULL AND owner <> $4 THEN 1 ELSE 0 END,
                     owner = $4,
                     counter = counter + 1,
                     expires_at = now() + $6 * interval '1 millisecond'
                 WHERE consumer_group = $1 AND stream = $2 AND partition = $3
                     AND counter = $5 AND NOT finished
                     AND ($7 OR owner IS NULL OR expires_at <= now())
                 RETURNING {COLUMNS}"
            )),
            renew: sql(format!(
                "UPDATE {leases} AS lease SET expires_at = now() + $6 * interval '1 millisecond'
                 {held}
                 RETURNING lease.stream, lease.partition, lease.counter"
            )),
            release: sql(format!(
                "UPDATE {leases} AS lease SET owner = NULL, counter = lease.counter + 1, expires_at = NULL
                 {held}"
            )),
            finish: sql(format!(
                "UPDATE {leases} AS lease SET finished = true, owner = NULL,
                     counter = lease.counter + 1, expires_at = NULL
                 {held}"
            )),
        }
    }
}

impl PgOffsetStore {
    /// The leases kept beside this store's positions, in the same schema.
    pub fn leases(&self) -> PgLeaseStore {
        PgLeaseStore {
            sql: Arc::new(Statements::new(&self.options().schema)),
            store: self.clone(),
            table: Arc::new(OnceCell::new()),
        }
    }
}

impl PgLeaseStore {
    /// Makes sure the tables exist, the leases' included, once per store.
    async fn table(&self) -> Result<(), StoreError> {
        self.table
            .get_or_try_init(|| async {
                let exists: bool = sqlx::query_scalar(self.store.statements().leases_exist.clone())
                    .fetch_one(self.store.pool())
                    .await
                    .map_err(database_error)?;
                if !exists {
                    self.store.migrate().await?;
                }
                Ok(())
            })
            .await
            .map(drop)
    }
}

fn unsigned(value: i64) -> u64 {
    value.max(0).unsigned_abs()
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn lease_from_row(row: &PgRow) -> Result<Lease, sqlx::Error> {
    let stream: String = row.try_get(0)?;
    let partition: String = row.try_get(1)?;
    let expires_at_ms: Option<i64> = row.try_get(4)?;
    Ok(Lease {
        partition: PartitionRef::new(stream, partition),
        owner: row.try_get(2)?,
        counter: unsigned(row.try_get(3)?),
        expires_at: expires_at_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(unsigned(ms))),
        parents: row.try_get(5)?,
        finished: row.try_get(6)?,
        owner_switches: unsigned(row.try_get(7)?),
        free: row.try_get(8)?,
    })
}

/// `held` as the arrays of stream, partition and counter the statements take.
fn columns(held: &[HeldLease]) -> (Vec<String>, Vec<String>, Vec<i64>) {
    (
        held.iter()
            .map(|l| l.partition.stream.to_string())
            .collect(),
        held.iter()
            .map(|l| l.partition.partition.to_string())
            .collect(),
        held.iter().map(|l| signed(l.counter)).collect(),
    )
}

impl LeaseStore for PgLeaseStore {
    async fn register(&self, group: &str, units: &[LeaseUnit]) -> Result<(), StoreError> {
        self.table().await?;
        let streams: Vec<String> = units
            .iter()
            .map(|u| u.partition.stream.to_string())
            .collect();
        let partitions: Vec<String> = units
            .iter()
            .map(|u| u.partition.partition.to_string())
            .collect();
        let parents: Vec<String> = units.iter().map(|u| u.parents.join("\n")).collect();
        sqlx::query(self.sql.register.clone())
            .bind(group)
            .bind(streams)
            .bind(partitions)
            .bind(parents)
            .execute(self.store.pool())
            .await
            .map_err(database_error)?;
        Ok(())
    }

    async fn leases(&self, group: &str, streams: &[String]) -> Result<Vec<Lease>, StoreError> {
        self.table().await?;
        let rows = sqlx::query(self.sql.list.clone())
            .bind(group)
            .bind(streams)
            .fetch_all(self.store.pool())
            .await
            .map_err(database_error)?;
        let mut leases = rows
            .iter()
            .map(lease_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(database_error)?;
        leases.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(leases)
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
        self.table().await?;
        let row = sqlx::query(self.sql.take.clone())
            .bind(group)
            .bind(&*partition.stream)
            .bind(&*partition.partition)
            .bind(owner)
            .bind(signed(counter))
            .bind(millis(duration))
            .bind(steal)
            .fetch_optional(self.store.pool())
            .await
            .map_err(database_error)?;
        match row {
            Some(row) => lease_from_row(&row).map_err(database_error),
            None => Err(StoreError::lease_lost(group, partition, owner)),
        }
    }

    async fn renew(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
        duration: Duration,
    ) -> Result<Vec<HeldLease>, StoreError> {
        self.table().await?;
        let (streams, partitions, counters) = columns(held);
        let rows = sqlx::query(self.sql.renew.clone())
            .bind(group)
            .bind(owner)
            .bind(streams)
            .bind(partitions)
            .bind(counters)
            .bind(millis(duration))
            .fetch_all(self.store.pool())
            .await
            .map_err(database_error)?;
        let renewed = rows
            .iter()
            .map(|row| {
                Ok(HeldLease {
                    partition: PartitionRef::new(
                        row.try_get::<String, _>(0)?,
                        row.try_get::<String, _>(1)?,
                    ),
                    counter: unsigned(row.try_get(2)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(database_error)?;
        Ok(held
            .iter()
            .filter(|lease| renewed.contains(lease))
            .cloned()
            .collect())
    }

    async fn release(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
    ) -> Result<(), StoreError> {
        self.table().await?;
        let (streams, partitions, counters) = columns(held);
        sqlx::query(self.sql.release.clone())
            .bind(group)
            .bind(owner)
            .bind(streams)
            .bind(partitions)
            .bind(counters)
            .execute(self.store.pool())
            .await
            .map_err(database_error)?;
        Ok(())
    }

    async fn finish(&self, group: &str, owner: &str, held: &HeldLease) -> Result<(), StoreError> {
        self.table().await?;
        let (streams, partitions, counters) = columns(std::slice::from_ref(held));
        let done = sqlx::query(self.sql.finish.clone())
            .bind(group)
            .bind(owner)
            .bind(streams)
            .bind(partitions)
            .bind(counters)
            .execute(self.store.pool())
            .await
            .map_err(database_error)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::lease_lost(group, &held.partition, owner))
        }
    }
}
