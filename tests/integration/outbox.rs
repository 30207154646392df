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
    records.iter().map(change_of).collect()
}

/// The `(key, n)` of a record, checking that its envelope is the outbox's.
fn change_of(record: &logpipe::Record) -> (String, u64) {
    let value = std::str::from_utf8(&record.value).unwrap();
    let envelope: serde_json::Value =
        serde_json::from_str(value.strip_prefix("json:").unwrap()).unwrap();
    assert_eq!(envelope["producer"], "crm", "{value}");
    let key = String::from_utf8(record.key.as_deref().unwrap().to_vec()).unwrap();
    assert_eq!(envelope["message"]["key"], key.as_str());
    (key, envelope["message"]["n"].as_u64().unwrap())
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

/// A relay of a PostgreSQL outbox with nothing to send is woken by the commit of a
/// transaction that writes a row: the record arrives long before its next poll.
#[test]
fn a_postgres_relay_sends_a_committed_row_without_waiting_for_its_poll() {
    relay_before_its_poll("outbox-notify", async |counters, _, stream| {
        counters.count_up(stream, 1, 1).await;
    });
}

/// A committed row held back by an older transaction still running (it may yet commit a
/// row of a lower id) is sent soon after that transaction ends, not at the relay's next
/// poll: its notification came while it could not be sent.
#[test]
fn a_postgres_relay_sends_a_row_held_back_by_an_older_transaction_once_that_ends() {
    relay_before_its_poll("outbox-held", async |counters, setup, stream| {
        // A transaction with an id, older than the row's, still running.
        let mut older = counters.outbox.table().pool().begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *older)
            .await
            .unwrap();
        counters.count_up(stream, 1, 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            records_in(setup, stream),
            0,
            "nothing is sent while an older transaction may still write a lower id"
        );
        older.rollback().await.unwrap();
    });
}

/// Starts a relay of a PostgreSQL outbox that polls every ten minutes, lets it find
/// nothing, runs `write` (which commits one row to a new stream), and expects that row
/// sent within a minute: long before the next poll.
fn relay_before_its_poll(name: &str, write: impl AsyncFnOnce(&Counters, &Setup, &str)) {
    let Some(setup) = Setup::embedded() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(counters) = runtime.block_on(Counters::new()) else {
        return;
    };
    let stream = unique(name);
    setup.ok(&["streams", "create", &stream, "--partitions", "1"], "");
    let mut options = options();
    options.poll_interval = Duration::from_secs(600);
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let relay = Relay::new(
            counters.outbox.table().clone(),
            setup.backend(&setup.config()),
        )
        .with_options(options);
        let running = tokio::spawn(relay.run(shutdown.clone()));
        // The relay found nothing, and waits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        write(&counters, &setup, &stream).await;
        tokio::time::timeout(Duration::from_secs(60), drained(counters.outbox.table()))
            .await
            .expect("the row is sent before the next poll");
        shutdown.cancel();
        running.await.unwrap();
    });
    assert_eq!(records_in(&setup, &stream), 1);
}

/// The outbox service writes 5,000 changes through a PostgreSQL outbox while the relay
/// (`logpipe outbox relay`, to Kafka) is killed with SIGKILL and started again at random
/// moments: every committed change arrives, in order per key, none rolled back, and
/// only rows in flight at a kill arrive twice.
#[test]
fn a_relay_killed_again_and_again_loses_nothing_and_keeps_per_key_order() {
    use std::process::{Child, Command, Stdio};

    let (Some(kafka), Some(server)) = (
        Setup::kafka(),
        crate::support::service("LOGPIPE_TEST_POSTGRES"),
    ) else {
        return;
    };
    let stream = unique("outbox-kill");
    kafka.ok(&["streams", "create", &stream, "--partitions", "3"], "");
    let schema = unique("outbox").replace('-', "_");
    const BATCH: u64 = 100;
    let mut vars = kafka.vars.clone();
    vars.extend([
        (
            "LOGPIPE_OUTBOX__URL".to_owned(),
            format!("{server}?schema={schema}"),
        ),
        ("LOGPIPE_OUTBOX__BATCH_SIZE".to_owned(), BATCH.to_string()),
        (
            "LOGPIPE_OUTBOX__POLL_INTERVAL_MS".to_owned(),
            "20".to_owned(),
        ),
        (
            "LOGPIPE_OUTBOX__LEASE_DURATION_MS".to_owned(),
            "1000".to_owned(),
        ),
        ("LOGPIPE_PRODUCER_ID".to_owned(), "crm".to_owned()),
        ("COUNTERS_STREAM".to_owned(), stream.clone()),
        (
            "COUNTERS_TABLE".to_owned(),
            format!("\"{schema}\".counters"),
        ),
    ]);
    let command = |program: &str, args: &[&str]| {
        let mut command = Command::new(crate::support::program(program));
        command
            .args(args)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("LOGPIPE_CONFIG")
            .stdin(Stdio::null());
        command
    };
    let relay = || -> Child {
        command("logpipe", &["outbox", "relay"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The outbox's tables exist before the writer and the relay start.
    let status = command("logpipe", &["outbox", "status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    let writer = command("outbox_service", &["5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer_id = writer.id();
    let writer_done = std::thread::spawn(move || writer.wait_with_output().unwrap());
    // Kill the relay at random moments while the writer writes, at least five times.
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0_u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while kills < 5 || !writer_done.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the writer {writer_id} did not finish in time"
        );
        let mut running = relay();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(200 + (seed >> 33) % 1200));
        running.kill().unwrap();
        running.wait().unwrap();
        kills += 1;
    }
    let output = writer_done.join().unwrap();
    assert!(output.status.success(), "{output:?}");
    let committed: BTreeMap<String, u64> = serde_json::from_slice(&output.stdout).unwrap();
    let total: u64 = committed.values().sum();
    assert_eq!(total, 4500, "every tenth rolled back");

    // A last relay sends what waits, and stops on SIGTERM.
    let mut last = relay();
    crate::support::wait_until_blocking("the outbox is drained", Duration::from_secs(120), || {
        let status = command("logpipe", &["outbox", "status", "--json"])
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        status["waiting"] == 0
    });
    Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status()
        .unwrap();
    assert!(last.wait().unwrap().success());

    let duplicates = check_sent_at_least_once_in_order(&kafka, &stream, &committed);
    assert!(
        duplicates <= kills * BATCH,
        "{duplicates} records sent twice after {kills} kills of batches of {BATCH}"
    );
}

/// Checks that `stream` holds every change `committed` counts (per key) at least once,
/// the first of each outbox id in order per key; returns how many records repeat one.
fn check_sent_at_least_once_in_order(
    setup: &Setup,
    stream: &str,
    committed: &BTreeMap<String, u64>,
) -> u64 {
    let sent = records_in(setup, stream);
    let records = read_from_start(setup, stream, sent as usize);
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for record in &records {
        let id = record
            .headers
            .iter()
            .find(|header| header.name == OUTBOX_ID_HEADER)
            .expect("the outbox id header");
        if seen.insert(id.value.clone()) {
            firsts.push(record.clone());
        }
    }
    let changes: Vec<_> = firsts.iter().map(change_of).collect();
    let keys = per_key(&changes);
    assert_eq!(keys.len(), committed.len(), "every key's changes arrive");
    for (key, numbers) in keys {
        let expected: Vec<u64> = (1..=committed[key]).collect();
        assert_eq!(numbers, expected, "the changes of {key}, in order");
    }
    sent - firsts.len() as u64
}

/// The broker stops while the relay of `run_consumers` sends: the rows written meanwhile
/// wait, the relay's sends fail and it backs off (each wait longer, the failures
/// counted), `/readyz` says it cannot send; once the broker is back every committed
/// change is sent, in order per key, and the relay is ready again.
#[test]
fn a_broker_outage_holds_the_rows_until_the_broker_returns() {
    let Some((brokers, scripts, _alone)) = crate::kafka::broker_alone_blocking() else {
        return;
    };
    an_outage_holds_the_rows_until_the_brokers_return(&brokers, || {
        let stopped = crate::kafka::StoppedBroker::stop(&scripts);
        move || stopped.start()
    });
}

/// The same, for the brokers at `brokers` and an outage that `outage` begins; what it
/// returns ends it.
pub(crate) fn an_outage_holds_the_rows_until_the_brokers_return<End: FnOnce()>(
    brokers: &str,
    outage: impl FnOnce() -> End,
) {
    use std::process::{Command, Stdio};

    use crate::serve::{get, served_addr};
    use crate::support::{program, spawn_with_log, wait_until_blocking};

    let kafka = Setup::kafka_alone(brokers);
    let stream = unique("outbox-outage");
    kafka.ok(&["streams", "create", &stream, "--partitions", "3"], "");
    let dir = tempfile::tempdir().unwrap();
    let mut vars = kafka.vars.clone();
    vars.extend(
        [
            (
                "LOGPIPE_OUTBOX__URL",
                format!("sqlite://{}", dir.path().join("app.db").display()),
            ),
            ("LOGPIPE_OUTBOX__POLL_INTERVAL_MS", "50".to_owned()),
            ("LOGPIPE_OUTBOX__LEASE_DURATION_MS", "2000".to_owned()),
            // Sends fail after 3 s instead of librdkafka's 300 s.
            (
                "LOGPIPE_KAFKA__PRODUCER__MESSAGE__TIMEOUT__MS",
                "3000".to_owned(),
            ),
            ("LOGPIPE_PRODUCER_ID", "crm".to_owned()),
            ("COUNTERS_STREAM", stream.clone()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    let command = |program_name: &str| {
        let mut command = Command::new(program(program_name));
        command
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("LOGPIPE_CONFIG")
            .stdin(Stdio::null());
        command
    };
    let write = |count: &str| -> BTreeMap<String, u64> {
        let output = command("outbox_service").arg(count).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let waiting = || {
        let output = command("logpipe")
            .args(["outbox", "status", "--json"])
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        status["waiting"].as_u64().unwrap()
    };
    let wait = Duration::from_secs(120);

    let mut committed = write("200");
    let mut relay = command("run_consumers");
    relay
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    let (mut child, log) = spawn_with_log(relay);
    let addr = served_addr(&log);
    wait_until_blocking("the first rows are sent", wait, || waiting() == 0);

    let end_outage = outage();
    let began = std::time::Instant::now();
    for (key, count) in write("300") {
        *committed.entry(key).or_default() += count;
    }
    wait_until_blocking("the relay says it cannot send", wait, || {
        let (status, body) = get(addr, "/readyz");
        status == 503 && body.contains("outbox-relay: stalled: sending has failed for ")
    });
    let unready = began.elapsed();
    assert!(waiting() > 0, "the rows wait while the broker is down");
    // Two failures, the second wait longer than the first.
    let mut waits = Vec::new();
    while waits.len() < 2 {
        let line = log
            .recv_timeout(Duration::from_secs(60))
            .expect("the relay logs its failures");
        if line.contains("outbox relay failed") {
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            let wait = entry["fields"]["retry_in_ms"].as_u64();
            waits.push(wait.unwrap_or_else(|| panic!("no retry_in_ms: {line}")));
        }
    }
    assert!(waits[1] > waits[0], "the relay backs off: {waits:?}");

    end_outage();
    let ended = std::time::Instant::now();
    wait_until_blocking("the outbox is drained", wait, || waiting() == 0);
    wait_until_blocking("the relay is ready again", wait, || {
        get(addr, "/readyz") == (200, "outbox-relay: running\n".to_owned())
    });
    eprintln!(
        "outage: the relay unready after {unready:?}; drained and ready {:?} after the brokers were started again",
        ended.elapsed()
    );
    let (_, metrics) = get(addr, "/metrics");
    let failures = metrics
        .lines()
        .find_map(|line| line.strip_prefix("logpipe_outbox_send_failures_total "))
        .expect("the failures are counted");
    assert!(failures.parse::<u64>().unwrap() >= 2, "{metrics}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    assert_eq!(
        committed.values().sum::<u64>(),
        450,
        "every tenth rolled back"
    );
    check_sent_at_least_once_in_order(&kafka, &stream, &committed);
}

/// `run_consumers` with an `[outbox]` and no consumers runs the relay alone, says it is
/// ready, counts what it sent, and stops on SIGTERM; with a broker it cannot reach it
/// keeps the rows and says it is not ready.
#[test]
fn run_consumers_relays_the_outbox_and_is_unready_while_it_cannot_send() {
    use std::process::{Command, Stdio};

    use crate::serve::{get, served_addr};
    use crate::support::{program, spawn_with_log, wait_until_blocking};

    let dir = tempfile::tempdir().unwrap();
    let outbox_url = format!("sqlite://{}", dir.path().join("app.db").display());
    let stream = unique("outbox-run");
    let env = |backend: &str| {
        vec![
            ("LOGPIPE_OUTBOX__URL", outbox_url.clone()),
            ("LOGPIPE_OUTBOX__POLL_INTERVAL_MS", "20".to_owned()),
            ("LOGPIPE_OUTBOX__LEASE_DURATION_MS", "2000".to_owned()),
            ("LOGPIPE_BACKEND", backend.to_owned()),
            ("LOGPIPE_PRODUCER_ID", "crm".to_owned()),
            (
                "LOGPIPE_KAFKA__PRODUCER__MESSAGE__TIMEOUT__MS",
                "300".to_owned(),
            ),
            ("COUNTERS_STREAM", stream.clone()),
        ]
    };
    let write = |count: &str| {
        let output = Command::new(program("outbox_service"))
            .arg(count)
            .envs(env("memory://"))
            .env_remove("LOGPIPE_CONFIG")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    let waiting = || {
        let output = Command::new(program("logpipe"))
            .args(["outbox", "status", "--json"])
            .envs(env("memory://"))
            .env_remove("LOGPIPE_CONFIG")
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        status["waiting"].as_u64().unwrap()
    };
    let start = |backend: &str| {
        let mut command = Command::new(program("run_consumers"));
        command
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .envs(env(backend))
            .env("RUST_LOG", "info")
            .env_remove("LOGPIPE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, log) = spawn_with_log(command);
        let addr = served_addr(&log);
        (child, addr, log)
    };
    let stop = |child: &mut std::process::Child| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    let wait = Duration::from_secs(60);

    // A broker that is not there: the rows stay, and the relay is not ready.
    write("10");
    let (mut child, addr, _log) = start("kafka://127.0.0.1:1");
    wait_until_blocking("the relay is unready", wait, || {
        let (status, body) = get(addr, "/readyz");
        status == 503 && body.contains("outbox-relay: stalled: sending has failed for ")
    });
    wait_until_blocking("the failures are counted", wait, || {
        get(addr, "/metrics")
            .1
            .contains("logpipe_outbox_send_failures_total")
    });
    stop(&mut child);
    assert_eq!(waiting(), 9);

    // The embedded log: everything is sent, and the relay is ready.
    let log_url = format!("sqlite://{}", dir.path().join("log.db").display());
    let (mut child, addr, _log) = start(&log_url);
    wait_until_blocking("the outbox is drained", wait, || waiting() == 0);
    wait_until_blocking("the relay is ready", wait, || {
        get(addr, "/readyz") == (200, "outbox-relay: running\n".to_owned())
    });
    write("20");
    wait_until_blocking("the outbox is drained again", wait, || waiting() == 0);
    wait_until_blocking("27 sent are counted", wait, || {
        get(addr, "/metrics")
            .1
            .contains("logpipe_outbox_sent_total 27")
    });
    stop(&mut child);
    let records = crate::support::runtime().block_on(async {
        let log = logpipe::embedded::EmbeddedLog::open(dir.path().join("log.db")).unwrap();
        crate::support::read_records(&log, &stream, 27).await
    });
    assert_eq!(records.len(), 27);
}
