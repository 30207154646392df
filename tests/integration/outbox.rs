//! The transactional outbox: messages written in the service's own transaction (SQLite
//! and PostgreSQL), sent by the relay through the embedded log, Kafka and Kinesis.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use logpipe::Message;
use logpipe::outbox::{OUTBOX_ID_HEADER, Outbox, OutboxStore, Relay, RelayOptions, SqliteOutbox};
use logpipe::postgres::{PgOutbox, sqlx};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ops::{Setup, read_from_start, records_in};
use crate::support::{on_backends, unique};

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "counter", version = 1, key = "key")]
struct Change {
    key: String,
    n: u64,
}

/// Relay options for tests: a short poll and lease, a name of its own.
fn options() -> RelayOptions {
    let mut options = RelayOptions::default();
    options.poll_interval = Duration::from_millis(50);
    options.lease_duration = Duration::from_secs(2);
    options.owner = unique("relay");
    options
}

/// Waits until `outbox` has no row waiting.
async fn drained(outbox: &impl OutboxStore) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox.status().await.unwrap().waiting > 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox was not drained in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `(key, n)` of each record, and (where the backend keeps headers) that every
/// record carries a distinct outbox id.
fn changes_of(setup: &Setup, records: &[logpipe::Record]) -> Vec<(String, u64)> {
    let mut ids = HashSet::new();
    for record in records {
        let id = record.headers.iter().find(|h| h.name == OUTBOX_ID_HEADER);
        if !setup.is_kinesis() {
            let id = String::from_utf8(id.expect("the outbox id header").value.clone()).unwrap();
            assert!(ids.insert(id.clone()), "outbox id {id} twice");
        }
    }
    records
        .iter()
        .map(|record| {
            let value = std::str::from_utf8(&record.value).unwrap();
            let envelope: serde_json::Value =
                serde_json::from_str(value.strip_prefix("json:").unwrap()).unwrap();
            assert_eq!(envelope["producer"], "crm", "{value}");
            let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
            assert_eq!(envelope["message"]["key"], key.as_str());
            (key, envelope["message"]["n"].as_u64().unwrap())
        })
        .collect()
}

/// Per key, the numbers in the order they were read.
fn per_key(changes: &[(String, u64)]) -> BTreeMap<&str, Vec<u64>> {
    let mut keys: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, n) in changes {
        keys.entry(key).or_default().push(*n);
    }
    keys
}

on_backends!(
    [embedded, kafka, kinesis]
    a_sqlite_outbox_sends_what_committed_in_order_and_nothing_rolled_back,
);

fn a_sqlite_outbox_sends_what_committed_in_order_and_nothing_rolled_back(setup: Setup) {
    let stream = unique("outbox");
    setup.ok(&["streams", "create", &stream, "--partitions", "2"], "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let outbox = Outbox::new(SqliteOutbox::open(&path).unwrap()).with_producer_id("crm");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER)")
        .unwrap();
    // Thirty changes of three keys, one transaction each; every tenth rolls back.
    for n in 0..30_u64 {
        let key = ["a", "b", "c"][n as usize % 3];
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO counters VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET n = ?2",
            rusqlite::params![key, n as i64],
        )
        .unwrap();
        let id = outbox
            .send(&tx, &stream, &Change { key: key.into(), n })
            .unwrap();
        assert!(id > 0);
        if n % 10 == 9 {
            tx.rollback().unwrap();
        } else {
            tx.commit().unwrap();
        }
    }

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let shutdown = CancellationToken::new();
        let backend = setup.backend(&setup.config());
        let relay = tokio::spawn(
            Relay::new(outbox.table().clone(), backend)
                .with_options(options())
                .run(shutdown.clone()),
        );
        drained(outbox.table()).await;
        shutdown.cancel();
        relay.await.unwrap();
        assert_eq!(outbox.table().status().await.unwrap().oldest_age_ms, None);
    });
    assert_eq!(records_in(&setup, &stream), 27, "no record sent twice");
    let records = read_from_start(&setup, &stream, 27);
    let changes = changes_of(&setup, &records);
    let keys = per_key(&changes);
    let expected =
        |first: u64| -> Vec<u64> { (first..30).step_by(3).filter(|n| n % 10 != 9).collect() };
    assert_eq!(keys["a"], expected(0));
    assert_eq!(keys["b"], expected(1));
    assert_eq!(keys["c"], expected(2));
}

/// A PostgreSQL outbox in a schema of its own, with a `counters` table beside it.
struct Counters {
    outbox: Outbox<PgOutbox>,
    schema: String,
}

impl Counters {
    /// `None` when the server is not running outside CI.
    async fn new() -> Option<Self> {
        let server = crate::support::service("LOGPIPE_TEST_POSTGRES")?;
        let schema = unique("outbox").replace('-', "_");
        let options = format!("{server}?schema={schema}").parse().unwrap();
        let table = PgOutbox::connect(&options).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".counters (key text PRIMARY KEY, n bigint NOT NULL)"
        )))
        .execute(table.pool())
        .await
        .unwrap();
        let outbox = Outbox::new(table).with_producer_id("crm");
        Some(Self { outbox, schema })
    }

    /// `writers` tasks at once, each counting up `each` times one of three keys in
    /// transactions that update the key's row and send its new value; every tenth
    /// transaction rolls back. Returns how many committed per key.
    async fn count_up(&self, stream: &str, writers: usize, each: usize) -> BTreeMap<String, u64> {
        let upsert = format!(
            "INSERT INTO \"{}\".counters AS counter VALUES ($1, 1)
             ON CONFLICT (key) DO UPDATE SET n = counter.n + 1 RETURNING n",
            self.schema
        );
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let (outbox, stream, upsert) =
                    (self.outbox.clone(), stream.to_owned(), upsert.clone());
                tokio::spawn(async move {
                    let mut committed = BTreeMap::<String, u64>::new();
                    for n in 0..each {
                        let key = ["a", "b", "c"][(writer + n) % 3].to_owned();
                        let mut tx = outbox.table().pool().begin().await.unwrap();
                        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(upsert.clone()))
                            .bind(&key)
                            .fetch_one(&mut *tx)
                            .await
                            .unwrap();
                        let change = Change {
                            key: key.clone(),
                            n: value as u64,
                        };
                        outbox.send(&mut tx, &stream, &change).await.unwrap();
                        if n % 10 == 9 {
                            tx.rollback().await.unwrap();
                        } else {
                            tx.commit().await.unwrap();
                            *committed.entry(key).or_default() += 1;
                        }
                    }
                    committed
                })
            })
            .collect();
        let mut total = BTreeMap::new();
        for task in tasks {
            for (key, count) in task.await.unwrap() {
                *total.entry(key).or_default() += count;
            }
        }
        total
    }
}

/// Relays `counters`' outbox to `setup`'s backend with `relays` relays at once, until it
/// is empty, while `writers` write; then checks that each committed change was sent once,
/// in order per key, and none rolled back.
fn relay_counters(setup: &Setup, relays: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(counters) = runtime.block_on(Counters::new()) else {
        return;
    };
    let stream = unique("outbox");
    setup.ok(&["streams", "create", &stream, "--partitions", "3"], "");
    let committed = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let running: Vec<_> = (0..relays)
            .map(|_| {
                let relay = Relay::new(
                    counters.outbox.table().clone(),
                    setup.backend(&setup.config()),
                );
                tokio::spawn(relay.with_options(options()).run(shutdown.clone()))
            })
            .collect();
        let committed = counters.count_up(&stream, 4, 50).await;
        drained(counters.outbox.table()).await;
        shutdown.cancel();
        for relay in running {
            relay.await.unwrap();
        }
        committed
    });
    let total: u64 = committed.values().sum();
    assert_eq!(total, 4 * 45);
    assert_eq!(records_in(setup, &stream), total, "no record sent twice");
    let records = read_from_start(setup, &stream, total as usize);
    let changes = changes_of(setup, &records);
    for (key, numbers) in per_key(&changes) {
        let expected: Vec<u64> = (1..=committed[key]).collect();
        assert_eq!(
            numbers, expected,
            "the changes of {key}, in order, each once"
        );
    }
}

#[test]
fn a_postgres_outbox_sends_concurrent_writers_changes_in_commit_order_to_kafka() {
    if let Some(setup) = Setup::kafka() {
        relay_counters(&setup, 1);
    }
}

#[test]
fn two_relays_of_one_postgres_outbox_send_each_row_once() {
    if let Some(setup) = Setup::embedded() {
        relay_counters(&setup, 2);
    }
}
