//! Kafka with a compression codec turned on (`LOGPIPE_KAFKA__PRODUCER__COMPRESSION__TYPE`):
//! `logpipe produce` writes batches in that codec, and `logpipe tail` and a
//! `run_consumers` program (the example people service) read every record of them.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::kafka::stored_batches;
use crate::ops::Setup;
use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, wait_until_blocking};

const PEOPLE: usize = 500;

/// The rows of the service's table; none before it made it.
fn people_count(db: &std::path::Path) -> usize {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM people", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_or(0, |n| usize::try_from(n).unwrap())
}

fn written_and_read_with(codec: &str) {
    let Some(mut setup) = Setup::kafka() else {
        return;
    };
    setup.vars.push((
        "LOGPIPE_KAFKA__PRODUCER__COMPRESSION__TYPE".into(),
        codec.into(),
    ));
    let lines: String = (0..PEOPLE)
        .map(|n| format!("{{\"uuid\":\"p-{n}\",\"name\":\"Person {n}\"}}\n"))
        .collect();
    let stream = setup.stream_with(&format!("codec-{codec}"), 1, "");
    setup.ok(
        &["produce", &stream, "--type", "person", "--version", "1"],
        &lines,
    );
    let batches = stored_batches(&stream);
    assert!(
        batches.iter().any(|b| b.codec == codec && b.records > 1),
        "no {codec} batch of several records: {batches:?}"
    );

    let count = PEOPLE.to_string();
    let tail = setup.ok(
        &[
            "tail",
            &stream,
            "--from-beginning",
            "--max",
            &count,
            "--json",
        ],
        "",
    );
    let uuids: Vec<String> = tail
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["message"]["uuid"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..PEOPLE).map(|n| format!("p-{n}")).collect();
    assert_eq!(uuids, expected, "tail of the {codec} stream");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("people.db");
    let mut service = Command::new(program("people_service"))
        .envs(setup.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("LOGPIPE_CONFIG")
        .env("LOGPIPE_GROUP_PREFIX", format!("{stream}-"))
        .env("PEOPLE_STREAM", &stream)
        .env("PEOPLE_DB", &db)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_blocking(
        &format!("the service has every person of the {codec} stream"),
        Duration::from_secs(60),
        || people_count(&db) == PEOPLE,
    );
    terminate(&service);
    assert!(wait_for_exit(&mut service).success());
}

#[test]
fn kafka_gzip_batches_are_written_and_read_by_the_programs() {
    written_and_read_with("gzip");
}

#[test]
fn kafka_snappy_batches_are_written_and_read_by_the_programs() {
    written_and_read_with("snappy");
}

#[test]
fn kafka_lz4_batches_are_written_and_read_by_the_programs() {
    written_and_read_with("lz4");
}

#[test]
fn kafka_zstd_batches_are_written_and_read_by_the_programs() {
    written_and_read_with("zstd");
}
