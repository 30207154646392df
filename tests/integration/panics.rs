//! A handler that panics, in the real program: `examples/panicking_handler.rs` (whose
//! `main` is logpipe's `run_consumers`) panics on the one order without a sku, on the
//! embedded log and on the Kafka broker.
//!
//! The panic is a failure of that record: retried, then under `stop` the process exits 1
//! with the positions of the records before it stored (a restart does not handle them
//! again), and under `dead-letter` the record goes to the dead-letter stream and every
//! other record is handled once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logpipe::dead_letter;

use crate::ops::Setup;
use crate::processes::{terminate, wait_for_exit};
use crate::serve::{get, sample_value, served_addr};
use crate::support::{
    header, on_backends, program, read_from_start, spawn_with_log, wait_until_blocking,
};

const WAIT: Duration = Duration::from_secs(60);

/// Orders 1 to 10; order 5 has no sku, and the handler panics on it.
const ORDERS: i64 = 10;
const BAD_ORDER: i64 = 5;
const PANIC_MESSAGE: &str = "every order has a sku";

fn orders() -> String {
    (1..=ORDERS)
        .map(|id| {
            if id == BAD_ORDER {
                format!("{{\"id\":{id}}}\n")
            } else {
                format!("{{\"id\":{id},\"sku\":\"S-{id}\"}}\n")
            }
        })
        .collect()
}

/// A new stream of one partition holding [`orders`], and a dead-letter stream.
fn streams(setup: &Setup) -> (String, String) {
    let stream = setup.stream_with("orders", 1, "");
    setup.ok(
        &["produce", &stream, "--type", "order", "--version", "1"],
        &orders(),
    );
    let dead = setup.stream_with("orders-dead", 1, "");
    (stream, dead)
}

/// The service reading `stream`, logging JSON lines, with fast retries and `env`;
/// returns it and its log lines.
fn start(
    setup: &Setup,
    db: &Path,
    stream: &str,
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new(program("panicking_handler"));
    command
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("LOGPIPE_CONFIG")
        .env("RUST_LOG", "info")
        .envs(setup.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ORDERS_DB", db)
        .env("ORDERS_STREAM", stream)
        .env("LOGPIPE_CONSUMER__MAX_RETRIES", "2")
        .env("LOGPIPE_CONSUMER__RETRY_BACKOFF_MS", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    spawn_with_log(command)
}

/// Every log line of a process that has exited.
fn all_lines(log: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = log.recv_timeout(WAIT) {
        lines.push(line);
    }
    lines
}

/// How many times each order was shipped (none before the service made its table).
fn shipped(db: &Path) -> BTreeMap<i64, i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let made: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'shipped')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    if !made {
        return BTreeMap::new();
    }
    let mut statement = conn.prepare("SELECT id, times FROM shipped").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Each of `ids` shipped once.
fn once(ids: impl IntoIterator<Item = i64>) -> BTreeMap<i64, i64> {
    ids.into_iter().map(|id| (id, 1)).collect()
}

/// Under `stop`: the process exits 1 naming the record; the orders before it are shipped
/// once and stay so over a restart, which stops on the same record again.
fn a_panic_stops_the_consumer_after_storing_the_positions_before_it(setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let (stream, _) = streams(&setup);
    for run in 1..=2 {
        let (mut child, log) = start(&setup, &db, &stream, &[]);
        let status = wait_for_exit(&mut child);
        let lines = all_lines(&log);
        assert_eq!(status.code(), Some(1), "run {run}: {lines:#?}");
        let retries = lines
            .iter()
            .filter(|line| line.contains("handler panicked; retrying"))
            .count();
        assert_eq!(retries, 2, "run {run}: {lines:#?}");
        let stopped = lines.iter().any(|line| {
            line.contains("handler panicked; stopping the consumer")
                && line.contains(&format!("{stream}/0"))
                && line.contains(PANIC_MESSAGE)
        });
        assert!(stopped, "run {run}: {lines:#?}");
        // The panic hook logs it too, as one JSON line with where it happened.
        let hooked = lines
            .iter()
            .find(|line| line.contains("panicked: every order"))
            .unwrap();
        let hooked: serde_json::Value = serde_json::from_str(hooked).unwrap();
        assert!(
            hooked["fields"]["location"]
                .as_str()
                .unwrap()
                .contains("panicking_handler.rs"),
            "{hooked}"
        );
        assert_eq!(shipped(&db), once(1..BAD_ORDER), "run {run}");
    }
}

/// Under `dead-letter`: the record is in the dead-letter stream, unchanged, with its
/// origin and the reason `panic`; every other order is shipped once; SIGTERM exits 0.
fn a_panicking_record_is_dead_lettered_and_the_others_are_handled(setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let (stream, dead) = streams(&setup);
    let env = [
        ("LOGPIPE_CONSUMER__ON_HANDLER_ERROR", "dead-letter"),
        ("LOGPIPE_DEAD_LETTER_STREAM", dead.as_str()),
    ];
    let (mut child, log) = start(&setup, &db, &stream, &env);
    let addr = served_addr(&log);
    let others = (1..=ORDERS).filter(|id| *id != BAD_ORDER);
    wait_until_blocking("every other order is shipped", WAIT, || {
        shipped(&db).len() == others.clone().count()
    });
    let (_, scrape) = get(addr, "/metrics");
    let panics = format!("logpipe_handler_panics_total{{stream=\"{stream}\"}}");
    assert_eq!(sample_value(&scrape, &panics), Some(3.0), "{scrape}");
    let dead_lettered =
        format!("logpipe_records_dead_lettered_total{{stream=\"{stream}\",reason=\"panic\"}}");
    assert_eq!(sample_value(&scrape, &dead_lettered), Some(1.0), "{scrape}");
    terminate(&child);
    let status = wait_for_exit(&mut child);
    assert!(status.success(), "{status}: {:#?}", all_lines(&log));
    assert_eq!(shipped(&db), once(others));

    let config = setup.config();
    let backend = setup.backend(&config);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let originals = runtime.block_on(read_from_start(
        backend
            .consumer(
                &crate::support::unique("read"),
                std::slice::from_ref(&stream),
            )
            .unwrap(),
        ORDERS as usize,
    ));
    let records = runtime.block_on(read_from_start(
        backend
            .consumer(&crate::support::unique("read"), &[dead])
            .unwrap(),
        1,
    ));
    let record = &records[0];
    let original = &originals[(BAD_ORDER - 1) as usize];
    assert_eq!(record.value, original.value);
    let header = |name: &str| header(record, name);
    assert_eq!(header(dead_letter::HEADER_STREAM), stream);
    assert_eq!(header(dead_letter::HEADER_PARTITION), "0");
    assert_eq!(
        header(dead_letter::HEADER_POSITION),
        original.position.to_string()
    );
    assert_eq!(header(dead_letter::HEADER_REASON), "panic");
    assert!(
        header(dead_letter::HEADER_ERROR).contains(PANIC_MESSAGE),
        "{}",
        header(dead_letter::HEADER_ERROR)
    );
}

on_backends!(
    [embedded, kafka]
    a_panic_stops_the_consumer_after_storing_the_positions_before_it,
    a_panicking_record_is_dead_lettered_and_the_others_are_handled,
);
