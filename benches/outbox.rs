//! The transactional outbox, in the same run:
//!
//! - `outbox_write_sqlite`, `outbox_write_postgres`: transactions that count a key up in
//!   a table of their own and commit, one after another, with the message written to the
//!   outbox (`outbox`) and, as the baseline, without it (`plain_transaction`);
//! - `relay_kafka`: 20,000 messages to the Kafka broker through a relay of a SQLite and
//!   of a PostgreSQL outbox, from the first row read to the last row removed, beside the
//!   same messages sent by a plain `Producer` (a loop of `enqueue`, then `flush`: its
//!   fastest way).
//!
//! SQLite is measured on a file; PostgreSQL and Kafka with the test services:
//! `tests/services/run cargo bench --bench outbox`. It prints criterion's figures, then
//! records a second and the ratio of each measurement to its baseline.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Person, output_dir, person, unique};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use logpipe::Producer;
use logpipe::admin::Admin;
use logpipe::kafka::KafkaClient;
use logpipe::outbox::{Outbox, OutboxStore, Relay, RelayOptions, SqliteOutbox};
use logpipe::postgres::sqlx::{self, AssertSqlSafe, SqlSafeStr, SqlStr};
use logpipe::postgres::{PgOutbox, PgStoreOptions};
use tokio_util::sync::CancellationToken;

/// Messages a relay measurement sends.
const RELAYED: u64 = 20_000;

/// Keys the writing transactions count up.
const KEYS: u64 = 100;

/// SQLite: a transaction on the service's own connection, with or without its message.
fn bench_sqlite_writes(group: &mut BenchmarkGroup<'_, WallTime>, dir: &std::path::Path) {
    let path = dir.join("app.db");
    let outbox = Outbox::new(SqliteOutbox::open(&path).unwrap());
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        .unwrap();
    let next = AtomicU64::new(0);
    let mut count_up = |with_message: bool| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO counters VALUES (?1, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1",
            [(n % KEYS).to_string()],
        )
        .unwrap();
        if with_message {
            outbox.send(&tx, "people", &person(n)).unwrap();
        }
        tx.commit().unwrap();
    };
    group.bench_function("plain_transaction", |b| b.iter(|| count_up(false)));
    group.bench_function("outbox", |b| b.iter(|| count_up(true)));
}

/// PostgreSQL: the same, in a sqlx transaction.
fn bench_postgres_writes(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    outbox: &Outbox<PgOutbox>,
    schema: &str,
) {
    let pool = outbox.table().pool();
    runtime
        .block_on(
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE \"{schema}\".counters (key text PRIMARY KEY, n bigint NOT NULL)"
            )))
            .execute(pool),
        )
        .unwrap();
    let upsert: SqlStr = AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".counters AS counter VALUES ($1, 1)
         ON CONFLICT (key) DO UPDATE SET n = counter.n + 1"
    ))
    .into_sql_str();
    let next = AtomicU64::new(0);
    let count_up = |with_message: bool| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(async {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(upsert.clone())
                .bind((n % KEYS).to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            if with_message {
                outbox.send(&mut tx, "people", &person(n)).await.unwrap();
            }
            tx.commit().await.unwrap();
        })
    };
    group.bench_function("plain_transaction", |b| b.iter(|| count_up(false)));
    group.bench_function("outbox", |b| b.iter(|| count_up(true)));
}

/// The time a relay of `outbox` takes to send what waits in it to `client` and remove
/// it, from its start until nothing waits; `fill` writes the rows first, untimed.
async fn relay_once<O: OutboxStore + Clone>(
    outbox: &O,
    client: &KafkaClient,
    fill: impl AsyncFnOnce(),
) -> Duration {
    fill().await;
    let shutdown = CancellationToken::new();
    let mut options = RelayOptions::default();
    options.poll_interval = Duration::from_millis(5);
    let relay = Relay::new(outbox.clone(), client.clone()).with_options(options);
    let start = Instant::now();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    // The first row waiting, by its id: cheap, beside the relay's own reads.
    while !outbox.waiting(1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    running.await.unwrap();
    elapsed
}

/// The messages of a relay measurement.
fn people() -> Vec<Person> {
    (0..RELAYED).map(person).collect()
}

fn bench_relays(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    client: &KafkaClient,
    dir: &std::path::Path,
    postgres: Option<&Outbox<PgOutbox>>,
) {
    let stream = unique("outbox-relay");
    runtime.block_on(client.create_stream(&stream, 3)).unwrap();
    let people = people();
    let mut group = c.benchmark_group("relay_kafka");
    group.throughput(Throughput::Elements(RELAYED));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));

    let producer = Producer::new(client.clone(), stream.as_str());
    group.bench_function("producer", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                runtime.block_on(async {
                    for person in &people {
                        drop(producer.enqueue(person).await.unwrap());
                    }
                    producer.flush().await.unwrap();
                });
            }
            start.elapsed()
        })
    });

    let path = dir.join("relayed.db");
    let sqlite = Outbox::new(SqliteOutbox::open(&path).unwrap());
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    group.bench_function("sqlite_outbox", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    runtime.block_on(relay_once(sqlite.table(), client, async || {
                        let tx = conn.transaction().unwrap();
                        for person in &people {
                            sqlite.send(&tx, &stream, person).unwrap();
                        }
                        tx.commit().unwrap();
                    }))
                })
                .sum()
        })
    });

    if let Some(outbox) = postgres {
        group.bench_function("postgres_outbox", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        runtime.block_on(relay_once(outbox.table(), client, async || {
                            let mut tx = outbox.table().pool().begin().await.unwrap();
                            for person in &people {
                                outbox.send(&mut tx, &stream, person).await.unwrap();
                            }
                            tx.commit().await.unwrap();
                        }))
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

fn report() {
    let writes = &["plain_transaction", "outbox"][..];
    common::print_ratios(&[
        ("outbox_write_sqlite", 1, "plain_transaction", writes),
        ("outbox_write_postgres", 1, "plain_transaction", writes),
        (
            "relay_kafka",
            RELAYED,
            "producer",
            &["producer", "sqlite_outbox", "postgres_outbox"],
        ),
    ]);
}

fn main() {
    let runtime = common::runtime();
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let dir = tempfile::tempdir().unwrap();

    let mut group = criterion.benchmark_group("outbox_write_sqlite");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    bench_sqlite_writes(&mut group, dir.path());
    group.finish();

    let postgres = match std::env::var("LOGPIPE_TEST_POSTGRES") {
        Ok(server) if !server.is_empty() => {
            let schema = unique("outbox").replace('-', "_");
            let options: PgStoreOptions = format!("{server}?schema={schema}").parse().unwrap();
            let outbox = Outbox::new(runtime.block_on(PgOutbox::connect(&options)).unwrap());
            let mut group = criterion.benchmark_group("outbox_write_postgres");
            group.throughput(Throughput::Elements(1));
            group.sample_size(30);
            bench_postgres_writes(&mut group, &runtime, &outbox, &schema);
            group.finish();
            // The relay measurements start with an empty outbox.
            runtime
                .block_on(
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "DELETE FROM \"{schema}\".logpipe_outbox"
                    )))
                    .execute(outbox.table().pool()),
                )
                .unwrap();
            Some(outbox)
        }
        _ => {
            eprintln!(
                "LOGPIPE_TEST_POSTGRES is not set: PostgreSQL is not measured (run `tests/services/run cargo bench --bench outbox`)"
            );
            None
        }
    };
    if let Some(client) = common::test_kafka(&runtime, "outbox") {
        bench_relays(
            &mut criterion,
            &runtime,
            &client,
            dir.path(),
            postgres.as_ref(),
        );
    }
    criterion.final_summary();
    report();
}
