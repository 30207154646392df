//! The PostgreSQL offset store on the server of `tests/services` (`LOGPIPE_TEST_POSTGRES`),
//! in the same run (the calls one after another, as a consumer at concurrency 1 makes
//! them):
//!
//! - `positions`: 100 positions stored in one call, by [`PgOffsetStore`] and, as the
//!   baseline, by the SQLite store on a file;
//! - `handler`: one record's row written in PostgreSQL by an exactly-once handler (in
//!   the transaction of [`PgOffsetStore::begin`], which marks the record handled) and,
//!   as the baseline, the same row in a plain transaction of its own.
//!
//! `tests/services/run cargo bench --bench postgres` prints criterion's figures, then
//! records per second and the ratio of each measurement to its baseline.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{output_dir, runtime, unique};
use criterion::{Criterion, Throughput};
use logpipe::offsets::{OffsetStore, SqliteOffsetStore};
use logpipe::postgres::sqlx::{self, AssertSqlSafe, SqlStr};
use logpipe::postgres::{PgOffsetStore, PgStoreOptions};
use logpipe::{Context, PartitionRef, Position};

/// Positions a store call takes.
const BATCH: usize = 100;

/// `BATCH` partitions, each at `round`.
fn positions(partitions: &[PartitionRef], round: i64) -> Vec<(PartitionRef, Position)> {
    partitions
        .iter()
        .map(|partition| (partition.clone(), Position::Offset(round)))
        .collect()
}

/// The handlers' work: one row, then the commit.
async fn insert_and_commit(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    insert: SqlStr,
    n: i64,
) {
    sqlx::query(insert)
        .bind(n)
        .bind("Ada Lovelace")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn bench(c: &mut Criterion, server: &str) {
    let runtime = runtime();
    let schema = unique("pg").replace('-', "_");
    let options: PgStoreOptions = format!("{server}?schema={schema}").parse().unwrap();
    let store = runtime.block_on(PgOffsetStore::connect(&options)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteOffsetStore::open(dir.path().join("positions.db")).unwrap();
    let partitions: Vec<PartitionRef> = (0..BATCH)
        .map(|n| PartitionRef::new("people", n.to_string()))
        .collect();
    // Each store moves every position on; a fencing store refuses one that does not.
    let round = AtomicI64::new(0);

    let mut group = c.benchmark_group("positions");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    group.bench_function("sqlite", |b| {
        b.iter(|| {
            let batch = positions(&partitions, round.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(sqlite.store("billing", &batch)).unwrap()
        })
    });
    group.bench_function("logpipe", |b| {
        b.iter(|| {
            let batch = positions(&partitions, round.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(store.store("billing", &batch)).unwrap()
        })
    });
    group.finish();

    let table = format!("{schema}.people");
    runtime
        .block_on(
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE {table} (n bigint PRIMARY KEY, name text NOT NULL)"
            )))
            .execute(store.pool()),
        )
        .unwrap();
    let insert: SqlStr = sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES ($1, $2)"
    )));
    let next = AtomicI64::new(0);
    let partition = PartitionRef::new("people", "0");

    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.bench_function("plain_transaction", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let (store, insert) = (&store, insert.clone());
            runtime.block_on(async move {
                let tx = store.pool().begin().await.unwrap();
                insert_and_commit(tx, insert, n).await;
            })
        })
    });
    group.bench_function("logpipe", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let context = Context::new("search", partition.clone(), Position::Offset(n));
            let (store, insert) = (&store, insert.clone());
            runtime.block_on(async move {
                let tx = store.begin(&context).await.unwrap();
                insert_and_commit(tx, insert, n).await;
            })
        })
    });
    group.finish();
}

fn report() {
    common::print_ratios(&[
        (
            "positions",
            BATCH as u64,
            "sqlite",
            &["sqlite", "logpipe"][..],
        ),
        (
            "handler",
            1,
            "plain_transaction",
            &["plain_transaction", "logpipe"],
        ),
    ]);
}

fn main() {
    let Some(server) = std::env::var("LOGPIPE_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!(
            "LOGPIPE_TEST_POSTGRES is not set: run `tests/services/run cargo bench --bench postgres`"
        );
        return;
    };
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench(&mut criterion, &server);
    criterion.final_summary();
    report();
}
