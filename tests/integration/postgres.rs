//! Positions in PostgreSQL (`LOGPIPE_TEST_POSTGRES`) with real processes: the example
//! service writes each person and its record's mark in one PostgreSQL transaction and is
//! SIGKILLed again and again while the producer sends, on Kafka and on Kinesis; a bad
//! store fails at start-up.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logpipe::postgres::sqlx::{self, AssertSqlSafe, PgPool};
use logpipe_core::conformance::{service, unique};

use crate::concurrency::Numbered;
use crate::killed::{People, RunningProgram};
use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, wait_until_blocking};

const WAIT: Duration = Duration::from_secs(120);

/// A position of each partition, as text, sorted by partition.
type Positions = Vec<(String, String)>;

/// A schema of its own on the test server, and a pool to read it.
pub(crate) struct Schema {
    /// The store's URL: the server's, with `?schema=`.
    pub url: String,
    pub name: String,
    pool: PgPool,
    pub runtime: tokio::runtime::Runtime,
}

impl Schema {
    /// `None` (skip the test) when the server is not running.
    pub fn new() -> Option<Self> {
        let server = service("LOGPIPE_TEST_POSTGRES")?;
        let name = unique("service").replace('-', "_");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = runtime
            .block_on(PgPool::connect(&server))
            .expect("the test server takes connections");
        Some(Self {
            url: format!("{server}?schema={name}"),
            name,
            pool,
            runtime,
        })
    }

    pub fn query<T>(&self, sql: String) -> Option<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        // Before the service made its table, there is nothing to read.
        self.runtime
            .block_on(sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool))
            .ok()
    }

    /// What the service's `people` table holds.
    pub fn people(&self) -> People {
        let rows: Vec<(i64, i64, i64)> = self
            .query(format!(
                "SELECT COUNT(*), COALESCE(SUM(applied), 0)::bigint, COALESCE(MAX(applied), 0)
                 FROM {}.people",
                self.name
            ))
            .unwrap_or_default();
        let (count, applied, most_applied) = rows.first().copied().unwrap_or((0, 0, 0));
        People {
            count,
            applied,
            most_applied,
        }
    }

    /// Each partition's stored position, and the position of the last record written to
    /// `people` from it, as text, sorted by partition.
    pub fn positions_and_last_records(&self, group: &str) -> (Positions, Positions) {
        let stored = self
            .query(format!(
                "SELECT partition, COALESCE(position_offset::text, position_sequence)
                 FROM {}.logpipe_positions WHERE consumer_group = '{group}' ORDER BY partition",
                self.name
            ))
            .unwrap();
        let last = self
            .query(format!(
                "SELECT partition, MAX(position::numeric)::text FROM {}.people
                 GROUP BY partition ORDER BY partition",
                self.name
            ))
            .unwrap();
        (stored, last)
    }

    fn marks(&self) -> i64 {
        let rows: Vec<(i64,)> = self
            .query(format!(
                "SELECT COUNT(*) FROM {}.logpipe_handled",
                self.name
            ))
            .unwrap();
        rows[0].0
    }
}

/// A number in `0..bound` that differs from run to run.
fn random_below(bound: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos) % bound
}

const PEOPLE: i64 = 5000;
const KILLS: usize = 5;

/// Starts `people_service` with `env`, and the producer of [`PEOPLE`] people; SIGKILLs
/// the service [`KILLS`] times, each at a random moment after it made progress, starts
/// it again each time, then lets it finish and stops it with SIGTERM. Checks that every
/// person was applied exactly once, that the stored positions are those of the last
/// records, and that no mark is left.
fn killed_again_and_again(schema: &Schema, group: &str, env: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");
    let command = |name: &str| {
        let mut command = Command::new(program(name));
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LOGPIPE_OFFSET_STORE", &schema.url)
            .env_remove("LOGPIPE_CONFIG")
            .env_remove("AWS_PROFILE")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    };
    let start = || RunningProgram {
        child: command("people_service")
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
        log: &log,
    };
    let mut producer = RunningProgram {
        child: command("people_producer")
            .arg(PEOPLE.to_string())
            .spawn()
            .unwrap(),
        log: &log,
    };
    for kill in 1..=KILLS {
        let before = schema.people().count;
        let mut consumer = start();
        wait_until_blocking(&format!("progress before kill {kill}"), WAIT, || {
            schema.people().count > before
        });
        std::thread::sleep(Duration::from_millis(random_below(300)));
        consumer.child.kill().unwrap(); // SIGKILL: nothing is stored on the way out
        consumer.child.wait().unwrap();
        let at_kill = schema.people();
        assert!(
            at_kill.count < PEOPLE,
            "kill {kill} came after the service had everything: {at_kill:?}"
        );
        assert_eq!(at_kill.duplicates(), 0, "after kill {kill}");
    }
    let mut consumer = start();
    assert!(
        wait_for_exit(&mut producer.child).success(),
        "the producer sent everyone"
    );
    wait_until_blocking("every person is stored", WAIT, || {
        schema.people().count == PEOPLE
    });
    terminate(&consumer.child);
    assert_eq!(wait_for_exit(&mut consumer.child).code(), Some(0));
    let stored = schema.people();
    assert_eq!(
        (stored.count, stored.applied, stored.most_applied),
        (PEOPLE, PEOPLE, 1),
        "every person applied exactly once after {KILLS} kills"
    );
    let (positions, last_records) = schema.positions_and_last_records(group);
    assert!(!positions.is_empty());
    assert_eq!(
        positions, last_records,
        "the stored positions are the last records'"
    );
    assert_eq!(
        schema.marks(),
        0,
        "the stored positions replaced every mark"
    );
}

#[test]
fn kafka_with_positions_in_postgres_applies_each_record_once_through_repeated_kill_9() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let Some(topic) = crate::kafka::PeopleTopic::new("pg") else {
        return;
    };
    let env = [
        ("LOGPIPE_BACKEND", format!("kafka://{}", topic.brokers)),
        ("LOGPIPE_KAFKA__TOPIC_PREFIX", topic.prefix.clone()),
        ("LOGPIPE_GROUP_PREFIX", topic.prefix.clone()),
        (
            "LOGPIPE_KAFKA__CONSUMER__SESSION__TIMEOUT__MS",
            "6000".to_owned(),
        ),
        (
            "LOGPIPE_KAFKA__CONSUMER__HEARTBEAT__INTERVAL__MS",
            "500".to_owned(),
        ),
        // Records finish out of order: marks above the watermarks are what is skipped.
        ("LOGPIPE_CONSUMER__CONCURRENCY", "16".to_owned()),
        ("LOGPIPE_CONSUMER__COMMIT_EVERY", "100".to_owned()),
        ("RUST_LOG", "logpipe=info".to_owned()),
    ];
    killed_again_and_again(&schema, &format!("{}people_table", topic.prefix), &env);
}

#[test]
fn kinesis_with_positions_in_postgres_applies_each_record_once_through_repeated_kill_9() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let Some((endpoint, _, stream)) = schema
        .runtime
        .block_on(crate::kinesis::fixture("people", 2))
    else {
        return;
    };
    let env = [
        (
            "LOGPIPE_BACKEND",
            format!(
                "kinesis://?region={}&endpoint={endpoint}",
                crate::kinesis::REGION
            ),
        ),
        ("LOGPIPE_KINESIS__POLL_INTERVAL_MS", "100".to_owned()),
        ("LOGPIPE_CONSUMER__COMMIT_INTERVAL_MS", "100".to_owned()),
        ("LOGPIPE_CONSUMER__CONCURRENCY", "16".to_owned()),
        ("PEOPLE_STREAM", stream),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("RUST_LOG", "logpipe=info".to_owned()),
    ];
    let group = format!("people_table@{}", crate::kinesis::REGION);
    killed_again_and_again(&schema, &group, &env);
}

/// Runs the example service with `offset_store` and returns its exit code and stderr.
fn start_with_store(offset_store: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(program("people_service"))
        .env("LOGPIPE_BACKEND", "memory://")
        .env("LOGPIPE_OFFSET_STORE", offset_store)
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_url_an_unreachable_server_or_a_wrong_password_fails_at_start_up_with_78_naming_offset_store()
 {
    let Some(server) = service("LOGPIPE_TEST_POSTGRES") else {
        return;
    };
    let wrong_password = server.replacen(":logpipe-test-password@", ":not-the-password@", 1);
    assert_ne!(wrong_password, server);
    // (URL, what the error says, the password, whether it shows the URL)
    for (url, reason, secret, shows_url) in [
        (
            "postgres://app:s3cret@127.0.0.1/x?pool_size=lots".to_owned(),
            "pool_size = \"lots\"",
            "s3cret",
            false,
        ),
        (
            "postgres://app:s3cret@127.0.0.1:1/x?connect_timeout_ms=1000".to_owned(),
            "the server cannot be reached",
            "s3cret",
            true,
        ),
        (
            wrong_password,
            "password authentication failed",
            "not-the-password",
            true,
        ),
    ] {
        let (code, stderr) = start_with_store(&url);
        assert_eq!(code, Some(78), "{stderr}");
        assert!(
            stderr.contains("offset_store") && stderr.contains(reason),
            "{stderr}"
        );
        assert!(!stderr.contains(secret), "the password is shown: {stderr}");
        assert_eq!(stderr.contains(":***@"), shows_url, "{stderr}");
    }
}

#[test]
fn a_batch_handler_writes_each_batch_with_its_marks_in_one_postgres_transaction() {
    use logpipe::embedded::EmbeddedLog;
    use logpipe::postgres::PgOffsetStore;
    use logpipe::{BatchError, Consumer, ConsumerOptions, Context, Producer, Registry};
    use std::sync::{Arc, Mutex};

    const RECORDS: i64 = 2000;
    let Some(schema) = Schema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let table = format!("{}.numbered", schema.name);
    let batch_sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    runtime.block_on(async {
        let log = EmbeddedLog::open(dir.path().join("log.db")).unwrap();
        let producer = Producer::new(log.clone(), "numbered");
        for seq in 0..RECORDS as u32 {
            let key = format!("k{}", seq % 20);
            producer.enqueue(&Numbered { key, seq }).await.unwrap();
        }
        producer.flush().await.unwrap();
        let store = PgOffsetStore::connect(&schema.url.parse().unwrap())
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {table} (seq bigint PRIMARY KEY, key text NOT NULL)"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        let insert: Arc<str> = format!(
            "INSERT INTO {table} (seq, key) SELECT * FROM UNNEST($1::bigint[], $2::text[])"
        )
        .into();
        let registry = {
            let (store, sizes) = (store.clone(), Arc::clone(&batch_sizes));
            Registry::builder()
                .handle_batch(logpipe::batch_handler_fn(
                    move |batch: Vec<(Numbered, Context)>| {
                        let (store, sizes, insert) =
                            (store.clone(), Arc::clone(&sizes), Arc::clone(&insert));
                        async move {
                            let size = batch.len();
                            let contexts: Vec<Context> =
                                batch.iter().map(|(_, c)| c.clone()).collect();
                            let (seqs, keys): (Vec<i64>, Vec<String>) = batch
                                .into_iter()
                                .map(|(m, _)| (i64::from(m.seq), m.key))
                                .unzip();
                            let mut tx = store
                                .begin_batch(&contexts)
                                .await
                                .map_err(BatchError::all)?;
                            sqlx::query(AssertSqlSafe(&*insert))
                                .bind(seqs)
                                .bind(keys)
                                .execute(&mut *tx)
                                .await
                                .map_err(BatchError::all)?;
                            tx.commit().await.map_err(BatchError::all)?;
                            sizes.lock().unwrap().push(size);
                            Ok(())
                        }
                    },
                ))
                .build()
                .unwrap()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let consumer = Consumer::new(
            log.consumer(["numbered"]),
            store.clone(),
            registry,
            "batches",
        )
        .with_options(ConsumerOptions {
            concurrency: 4,
            batch_max_records: 100,
            batch_linger_ms: 20,
            ..ConsumerOptions::default()
        });
        let run = tokio::spawn(consumer.run(shutdown.clone()));
        crate::support::wait_until("every record is written", WAIT, || {
            batch_sizes.lock().unwrap().iter().sum::<usize>() as i64 >= RECORDS
        })
        .await;
        shutdown.cancel();
        run.await.unwrap().unwrap();
    });
    let sizes = batch_sizes.lock().unwrap().clone();
    assert_eq!(
        sizes.iter().sum::<usize>() as i64,
        RECORDS,
        "each record committed in one batch, once"
    );
    let rows: Vec<(i64, i64)> = schema
        .query(format!("SELECT COUNT(*), COUNT(DISTINCT seq) FROM {table}"))
        .unwrap();
    assert_eq!(rows[0], (RECORDS, RECORDS));
    assert!(sizes.iter().all(|size| *size <= 100), "{sizes:?}");
    assert!(sizes.iter().any(|size| *size > 1), "{sizes:?}");
    let partitions: Vec<(String, String)> = schema
        .query(format!(
            "SELECT partition, position_offset::text FROM {}.logpipe_positions
             WHERE consumer_group = 'batches' ORDER BY partition",
            schema.name
        ))
        .unwrap();
    assert!(!partitions.is_empty());
    let last: i64 = partitions
        .iter()
        .map(|(_, offset)| offset.parse::<i64>().unwrap() + 1)
        .sum();
    assert_eq!(last, RECORDS, "the stored positions cover every record");
    assert_eq!(
        schema.marks(),
        0,
        "the stored positions replaced every mark"
    );
}

#[test]
fn a_record_fenced_by_a_successor_counts_as_handled_and_the_consumer_goes_on() {
    use logpipe::embedded::EmbeddedLog;
    use logpipe::offsets::OffsetStore;
    use logpipe::postgres::PgOffsetStore;
    use logpipe::{BoxError, Consumer, Context, Position, Producer, Registry, handler_fn};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    let Some(schema) = Schema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = format!("{}.fenced", schema.name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (outcome, stored) = runtime.block_on(async {
        let log = EmbeddedLog::open(dir.path().join("log.db")).unwrap();
        let producer = Producer::new(log.clone(), "fenced");
        // One key: one partition, offsets 0 to 9.
        for seq in 0..10 {
            let key = "k".to_owned();
            producer.send(&Numbered { key, seq }).await.unwrap();
        }
        let store = PgOffsetStore::connect(&schema.url.parse().unwrap())
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {table} (seq bigint PRIMARY KEY)"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        let insert: Arc<str> = format!("INSERT INTO {table} VALUES ($1)").into();
        let handled = Arc::new(AtomicI64::new(0));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let registry = {
            let (store, handled, stop) = (store.clone(), Arc::clone(&handled), shutdown.clone());
            Registry::builder()
                .handle(handler_fn(move |message: Numbered, context: Context| {
                    let (store, handled, stop, insert) = (
                        store.clone(),
                        Arc::clone(&handled),
                        stop.clone(),
                        Arc::clone(&insert),
                    );
                    async move {
                        if message.seq == 0 {
                            // Meanwhile the partition's new owner got to offset 5.
                            let successor = [(context.partition.clone(), Position::Offset(5))];
                            store.store(&context.group, &successor).await?;
                        }
                        if handled.fetch_add(1, Ordering::SeqCst) == 9 {
                            stop.cancel();
                        }
                        let mut tx = store.begin(&context).await?;
                        sqlx::query(AssertSqlSafe(&*insert))
                            .bind(i64::from(message.seq))
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        Ok::<_, BoxError>(())
                    }
                }))
                .build()
                .unwrap()
        };
        let consumer = Consumer::new(log.consumer(["fenced"]), store.clone(), registry, "fenced");
        let outcome = consumer.run(shutdown).await;
        let partitions = logpipe::admin::Admin::describe_stream(&log, "fenced")
            .await
            .unwrap();
        let mut stored = Vec::new();
        for info in partitions {
            if let Some(position) = store.load("fenced", &info.partition).await.unwrap() {
                stored.push(position);
            }
        }
        (outcome, stored)
    });
    outcome.expect("the consumer went on past the fenced records");
    let rows: Vec<(i64,)> = schema
        .query(format!("SELECT seq FROM {table} ORDER BY seq"))
        .unwrap();
    assert_eq!(
        rows.into_iter().map(|(seq,)| seq).collect::<Vec<_>>(),
        [6, 7, 8, 9],
        "records 0 to 5 were the successor's"
    );
    assert_eq!(stored, [Position::Offset(9)]);
}
