//! Replicas of a service sharing the partitions of one `sqlite://` file through the
//! group's leases: real `people_service` processes, started, killed, stopped and paused;
//! and, in one process, a consumer whose lease is stolen while its handler runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::killed::people;
use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, wait_until_blocking};

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: usize = 6;
const LEASE_MS: u64 = 6000;
const RENEWAL_MS: u64 = 1000;
/// The group of the service's table consumer.
const GROUP: &str = "people_table";

/// A replica of the service named `worker`, logging to `DIR/worker.log`.
fn replica(db: &Path, worker: &str) -> Child {
    let log = File::create(log_of(db, worker)).unwrap();
    Command::new(program("people_service"))
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env_remove("LOGPIPE_CONFIG")
        .env("LOGPIPE_EMBEDDED__PARTITIONS", PARTITIONS.to_string())
        .env("LOGPIPE_EMBEDDED__LEASE_DURATION_MS", LEASE_MS.to_string())
        .env("LOGPIPE_EMBEDDED__LEASE_RENEWAL_MS", RENEWAL_MS.to_string())
        .env("LOGPIPE_EMBEDDED__WORKER_ID", worker)
        .env("LOGPIPE_CONSUMER__CONCURRENCY", "8")
        .current_dir(db.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log_of(db: &Path, worker: &str) -> PathBuf {
    db.with_file_name(format!("{worker}.log"))
}

/// Sends people `first..first + count`.
fn produce(db: &Path, count: usize, first: usize) {
    let status = Command::new(program("people_producer"))
        .args([count.to_string(), first.to_string()])
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env("LOGPIPE_EMBEDDED__PARTITIONS", PARTITIONS.to_string())
        .env_remove("LOGPIPE_CONFIG")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the producer failed");
}

/// How many unexpired leases of the table group each worker holds, and how many rows
/// have an owner at all (expired or not).
fn owners(db: &Path) -> (BTreeMap<String, usize>, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut live = BTreeMap::new();
    let mut owned = 0;
    let Ok(mut select) = conn.prepare(
        "SELECT owner, expires_at_ms FROM logpipe_leases
         WHERE consumer_group = ?1 AND stream = 'people' AND owner IS NOT NULL",
    ) else {
        return (live, 0);
    };
    let rows = select
        .query_map([GROUP], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .unwrap();
    for row in rows {
        let (owner, expires_at_ms) = row.unwrap();
        owned += 1;
        if expires_at_ms > now {
            *live.entry(owner).or_default() += 1;
        }
    }
    (live, owned)
}

/// Waits until the live leases are held `expected` (worker, count), and until every
/// consumer a lease was stolen from has dropped the partition (it learns of the steal at
/// its next renewal, and until its consumer takes the loss in, it still hands records
/// it read of the partition to handlers); returns how long the split took.
fn wait_for_split(db: &Path, expected: &[(&str, usize)]) -> Duration {
    let workers: Vec<&str> = expected.iter().map(|(worker, _)| *worker).collect();
    let expected: BTreeMap<String, usize> = expected
        .iter()
        .map(|(worker, count)| ((*worker).to_owned(), *count))
        .collect();
    let started = Instant::now();
    wait_until_blocking(&format!("the leases are split {expected:?}"), WAIT, || {
        owners(db).0 == expected
    });
    let took = started.elapsed();
    wait_until_blocking("every steal is noticed by its victim", WAIT, || {
        let count = |text: &str| {
            workers
                .iter()
                .map(|worker| {
                    std::fs::read_to_string(log_of(db, worker))
                        .unwrap_or_default()
                        .matches(text)
                        .count()
                })
                .sum::<usize>()
        };
        count("steal=true") <= count("partition lost to another consumer")
    });
    took
}

/// Waits until `count` people are stored, and the table group's positions cover all of
/// them (so that a lease taken from a replica now repeats nothing).
fn wait_for_people(db: &Path, count: i64) {
    wait_until_blocking(&format!("{count} people are stored"), WAIT, || {
        people(db).count == count
    });
    wait_until_blocking(&format!("positions cover {count} records"), WAIT, || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.query_row(
            "SELECT COALESCE(SUM(position_offset + 1), 0) FROM logpipe_positions
             WHERE consumer_group = ?1 AND stream = 'people'",
            [GROUP],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
            == count
    });
}

/// `logpipe leases --json` shows every partition held by one of `owners`, with the
/// checkpoint stored, and the table form names them.
fn assert_leases_shown(db: &Path, owners: &[&str]) {
    let run = |json: bool| {
        let mut command = Command::new(program("logpipe"));
        command
            .args(["leases", "--group", GROUP, "people"])
            .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
            .env_remove("LOGPIPE_CONFIG");
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let lines: Vec<serde_json::Value> = run(true)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), PARTITIONS, "{lines:?}");
    wait_until_blocking("every partition has a checkpoint", WAIT, || {
        run(true)
            .lines()
            .all(|line| !line.contains("\"checkpoint\":null"))
    });
    for line in &lines {
        let owner = line["owner"].as_str().unwrap_or_default();
        assert!(owners.contains(&owner), "{line}");
        assert_eq!(line["free"], false, "{line}");
    }
    let table = run(false);
    assert!(
        table.starts_with("group people_table, stream people\nPARTITION  OWNER"),
        "{table}"
    );
    for owner in owners {
        assert!(table.contains(&format!(" {owner} ")), "{table}");
    }
}

pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

#[test]
fn replicas_split_the_partitions_evenly_and_apply_each_record_once_through_kill_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let a = replica(&db, "a");
    let mut b = replica(&db, "b");
    let two = wait_for_split(&db, &[("a", 3), ("b", 3)]);
    produce(&db, 10_000, 0);
    wait_for_people(&db, 10_000);
    assert_leases_shown(&db, &["a", "b"]);

    let mut c = replica(&db, "c");
    let three = wait_for_split(&db, &[("a", 2), ("b", 2), ("c", 2)]);
    produce(&db, 5_000, 10_000);
    wait_for_people(&db, 15_000);

    // A replica killed: its partitions wait for its leases to expire, then are taken.
    signal(&b, "-KILL");
    let killed_at = Instant::now();
    wait_for_exit(&mut b);
    wait_for_split(&db, &[("a", 3), ("c", 3)]);
    let after_kill = killed_at.elapsed();
    produce(&db, 5_000, 15_000);
    wait_for_people(&db, 20_000);

    // A replica stopped: it gives its leases up as it exits; none waits to expire.
    terminate(&c);
    let stopped_at = Instant::now();
    assert_eq!(wait_for_exit(&mut c).code(), Some(0));
    let given_up = owners(&db);
    assert!(
        !given_up.0.contains_key("c") && given_up.1 == given_up.0.values().sum::<usize>(),
        "the stopped replica's leases are given up, not left to expire: {given_up:?}"
    );
    wait_for_split(&db, &[("a", 6)]);
    let after_stop = stopped_at.elapsed();
    eprintln!(
        "even split: 2 replicas in {two:?}, a third in {three:?}; taken over after SIGKILL in {after_kill:?}, after SIGTERM in {after_stop:?} (leases of {LEASE_MS} ms renewed every {RENEWAL_MS} ms)"
    );

    let mut a = a;
    terminate(&a);
    assert_eq!(wait_for_exit(&mut a).code(), Some(0));
    let stored = people(&db);
    assert_eq!(
        (stored.count, stored.applied),
        (20_000, 20_000),
        "each person applied once by the replicas together"
    );
}

#[test]
fn a_paused_replica_loses_its_leases_and_applies_nothing_twice_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let mut a = replica(&db, "a");
    let mut b = replica(&db, "b");
    wait_for_split(&db, &[("a", 3), ("b", 3)]);
    produce(&db, 2_000, 0);
    wait_for_people(&db, 2_000);

    // Paused past its leases: the other replica takes every partition meanwhile.
    signal(&a, "-STOP");
    wait_for_split(&db, &[("b", 6)]);
    produce(&db, 3_000, 2_000);
    wait_for_people(&db, 5_000);
    signal(&a, "-CONT");
    // Awake, it finds its leases gone, and takes its share back from the other.
    wait_for_split(&db, &[("a", 3), ("b", 3)]);
    produce(&db, 3_000, 5_000);
    wait_for_people(&db, 8_000);
    for child in [&mut a, &mut b] {
        terminate(child);
        assert_eq!(wait_for_exit(child).code(), Some(0));
    }
    let log = std::fs::read_to_string(log_of(&db, "a")).unwrap();
    assert!(
        log.contains("no longer reading the partition"),
        "the woken replica says it lost its leases:\n{log}"
    );
    let stored = people(&db);
    assert_eq!((stored.count, stored.applied), (8_000, 8_000));
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, logpipe::Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
struct Person {
    uuid: String,
}

#[tokio::test]
async fn a_consumer_whose_lease_was_stolen_cannot_store_a_position_even_one_ahead() {
    use logpipe::backend::{Backend, StartFrom};
    use logpipe::embedded::{EmbeddedLog, EmbeddedOptions};
    use logpipe::offsets::{OffsetStore, SqliteOffsetStore};
    use logpipe::{Consumer, ConsumerOptions, Context, Position, Producer, Registry, handler_fn};
    use logpipe_core::PartitionRef;
    use logpipe_core::leases::LeaseStore;
    use logpipe_sqlite::SqliteLeaseStore;
    use std::sync::{Arc, Mutex};
    use tokio::sync::Semaphore;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    // Leases that outlast the test: the consumer does not learn of the steal.
    let options = EmbeddedOptions {
        partitions: 1,
        lease_duration_ms: 120_000,
        lease_renewal_ms: 60_000,
        worker_id: Some("a".into()),
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open_with(&db, options).unwrap();
    let producer = Producer::new(log.clone(), "people");
    for uuid in ["0", "1", "2"] {
        producer.send(&Person { uuid: uuid.into() }).await.unwrap();
    }
    // The handler of record 0 waits until it is let go on.
    let (started, go_on) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let registry = {
        let (started, go_on, handled) = (
            Arc::clone(&started),
            Arc::clone(&go_on),
            Arc::clone(&handled),
        );
        Registry::builder()
            .handle(handler_fn(move |person: Person, _: Context| {
                let (started, go_on, handled) = (
                    Arc::clone(&started),
                    Arc::clone(&go_on),
                    Arc::clone(&handled),
                );
                async move {
                    if person.uuid == "0" {
                        started.add_permits(1);
                        go_on.acquire().await.unwrap().forget();
                    }
                    handled.lock().unwrap().push(person.uuid);
                    Ok::<_, std::convert::Infallible>(())
                }
            }))
            .build()
            .unwrap()
    };
    let store = SqliteOffsetStore::open(&db).unwrap();
    let consumer = Consumer::new(
        log.open_consumer("g", &["people".to_owned()], StartFrom::default())
            .unwrap(),
        store.clone(),
        registry,
        "g",
    )
    .with_options(ConsumerOptions {
        commit_every: 1,
        commit_interval_ms: 10,
        ..ConsumerOptions::default()
    });
    let running = crate::support::Running::start(consumer);
    tokio::time::timeout(WAIT, started.acquire())
        .await
        .expect("record 0 is being handled")
        .unwrap()
        .forget();

    // Another worker steals the lease, and stores the position of its own record 0.
    let partition = PartitionRef::new("people", "0");
    let leases = SqliteLeaseStore::open(&db).unwrap();
    let lease = leases.leases("g", &["people".to_owned()]).await.unwrap();
    assert_eq!(lease[0].owner.as_deref(), Some("a"));
    leases
        .take("g", &partition, "b", lease[0].counter, WAIT, true)
        .await
        .unwrap();
    store
        .store("g", &[(partition.clone(), Position::Offset(0))])
        .await
        .unwrap();

    // The former holder handles on to record 2, and stores none of it.
    go_on.add_permits(1);
    crate::support::wait_until("the former holder handled every record", WAIT, || {
        handled.lock().unwrap().len() == 3
    })
    .await;
    running.stop().await;
    assert_eq!(
        store.load("g", &partition).await.unwrap(),
        Some(Position::Offset(0)),
        "the new holder's position stands"
    );
}
