//! Real processes sharing one `sqlite://` file: the example service (whose `main` is
//! logpipe's `run_consumers`), the example producer, and the `run_consumers` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logpipe::embedded::EmbeddedLog;
use logpipe::{Message, Producer};
use serde::{Deserialize, Serialize};

use crate::killed::{MaxDuplicates, Scenario, people};
use crate::support::{program, wait_until_blocking};

const WAIT: Duration = Duration::from_secs(60);

/// A message type the example service ignores.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "audit", version = 1)]
struct Audit {
    n: u32,
}

fn service(db: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(program("people_service"));
    command
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(db.parent().unwrap())
        .stdin(Stdio::null());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command
}

/// Records covered by the stored positions of `group`: the sum of (offset + 1).
fn records_covered(db: &Path, group: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(position_offset + 1), 0) FROM logpipe_positions WHERE consumer_group = ?1",
        [group],
        |row| row.get(0),
    )
    .unwrap_or(0)
}

/// Records marked handled by a handler's own transaction and not yet below a stored
/// position.
fn records_marked(db: &Path, group: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM logpipe_handled WHERE consumer_group = ?1",
        [group],
        |row| row.get(0),
    )
    .unwrap_or(0)
}

pub(crate) fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

pub(crate) fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_until_blocking("the process exits", WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

#[test]
fn the_service_exits_0_on_sigterm_after_storing_the_positions_of_everything_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let producer = Command::new(program("people_producer"))
        .arg("100")
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env_remove("LOGPIPE_CONFIG")
        .status()
        .unwrap();
    assert!(producer.success());
    // Ignored records have no handler writing their positions: only the consumer's own
    // commits store them. Commits by count or time are pushed out of reach here, so the
    // positions past them can only come from the commit on shutdown.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let producer = Producer::new(EmbeddedLog::open(&db).unwrap(), "people");
        for n in 0..20 {
            producer.send(&Audit { n }).await.unwrap();
        }
    });
    let mut child = service(
        &db,
        &[
            ("LOGPIPE_CONSUMER__COMMIT_EVERY", "1000000"),
            ("LOGPIPE_CONSUMER__COMMIT_INTERVAL_MS", "3600000"),
            ("RUST_LOG", "logpipe=debug"),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let ignored = Arc::new(AtomicUsize::new(0));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let seen = Arc::clone(&ignored);
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains("ignored message type") {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            log.push(line);
        }
        log
    });
    wait_until_blocking("100 people are stored and 20 audits skipped", WAIT, || {
        people(&db).count == 100 && ignored.load(Ordering::SeqCst) == 20
    });
    assert_eq!(
        (
            records_covered(&db, "people_table"),
            records_marked(&db, "people_table")
        ),
        (0, 100),
        "only the handlers' own marks so far, no stored position"
    );
    terminate(&child);
    let status = wait_for_exit(&mut child);
    let log = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; log:\n{}",
        log.join("\n")
    );
    assert_eq!(
        (
            records_covered(&db, "people_table"),
            records_marked(&db, "people_table")
        ),
        (120, 0),
        "every record read is covered by a stored position, which replaces the marks"
    );
    assert!(
        log.iter().any(|line| line.contains("SIGTERM received")),
        "{}",
        log.join("\n")
    );
}

/// Kills `people_service` (with `extra_env`) with SIGKILL while it consumes from the
/// file `people_producer` writes to, and starts it again: the handlers' transactions
/// leave nothing lost and nothing applied twice. The producer sends `people` people.
fn killed_on_one_file(people: i64, extra_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let backend = format!("sqlite://{}", db.display());
    Scenario {
        people,
        kill_after: 300,
        // The handler writes its row and marks its record handled in one transaction.
        max_duplicates: MaxDuplicates::Fixed(0),
        db: &db,
        log: &dir.path().join("service.log"),
    }
    .run(|program| {
        let mut command = Command::new(program);
        command
            .env("LOGPIPE_BACKEND", &backend)
            .envs(extra_env.iter().copied())
            .env_remove("LOGPIPE_CONFIG")
            .current_dir(dir.path());
        command
    });
    assert_eq!(records_covered(&db, "people_table"), people);
}

#[test]
fn a_producer_and_a_consumer_process_share_one_file_and_a_kill_9_loses_and_duplicates_nothing() {
    killed_on_one_file(3000, &[]);
}

#[test]
fn a_consumer_with_64_handlers_in_flight_killed_with_kill_9_loses_and_duplicates_nothing() {
    // Records finish out of order here; those marked handled above the stored watermark
    // are skipped after the restart. More people: the service must still be busy when
    // it is killed.
    killed_on_one_file(
        10_000,
        &[
            ("LOGPIPE_CONSUMER__CONCURRENCY", "64"),
            ("LOGPIPE_CONSUMER__COMMIT_EVERY", "500"),
        ],
    );
}

#[test]
fn run_consumers_with_a_bad_config_value_exits_78_naming_the_key_and_variable() {
    let output = Command::new(program("run_consumers"))
        .env("LOGPIPE_CONSUMER__MAX_RETRIES", "lots")
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("consumer.max_retries") && stderr.contains("LOGPIPE_CONSUMER__MAX_RETRIES"),
        "{stderr}"
    );
}

#[test]
fn run_consumers_with_a_missing_config_file_exits_78_naming_the_file() {
    let output = Command::new(program("run_consumers"))
        .args(["--config", "/nonexistent/logpipe.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("/nonexistent/logpipe.toml"), "{stderr}");
}

#[test]
fn run_consumers_with_no_registered_consumers_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(program("run_consumers"))
        .env("LOGPIPE_BACKEND", "memory://")
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no consumers are registered"), "{stderr}");
}

#[test]
fn the_service_lists_its_registered_consumers() {
    let output = Command::new(program("people_service"))
        .arg("--list")
        .env_remove("LOGPIPE_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "people_table\npeople_webhook\n"
    );
}

#[test]
fn two_replicas_of_a_service_on_one_file_apply_each_record_once() {
    // The replicas share the partitions through the group's leases; while a lease
    // passes from one to the other, the handlers' transactions refuse a record the
    // other replica handled already.
    const PEOPLE: i64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let producer = Command::new(program("people_producer"))
        .arg(PEOPLE.to_string())
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env_remove("LOGPIPE_CONFIG")
        .status()
        .unwrap();
    assert!(producer.success());
    let replicas: Vec<Child> = (0..2)
        .map(|_| {
            service(&db, &[("LOGPIPE_CONSUMER__CONCURRENCY", "8")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until_blocking("every person is stored", WAIT, || {
        people(&db).count == PEOPLE
    });
    for mut replica in replicas {
        terminate(&replica);
        assert_eq!(wait_for_exit(&mut replica).code(), Some(0));
    }
    let stored = people(&db);
    assert_eq!(
        (stored.count, stored.applied),
        (PEOPLE, PEOPLE),
        "each person applied once by the two replicas together"
    );
}
