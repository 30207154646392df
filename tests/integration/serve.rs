//! The example service's `--metrics-addr` endpoints, scraped while it runs on an
//! embedded log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logpipe::backend::{OutgoingRecord, ProducerBackend};
use logpipe::embedded::EmbeddedLog;
use logpipe::{Message, Producer};
use serde::{Deserialize, Serialize};

use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, spawn_with_log, wait_until_blocking};

const WAIT: Duration = Duration::from_secs(60);
const STREAM: &str = "people-serve";

/// The example service's version 1 person.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
pub(crate) struct Person {
    pub uuid: String,
    pub name: String,
}

/// Sends `people` (their names) and `malformed` records that are not envelopes.
fn send(db: &Path, names: &[&str], malformed: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = EmbeddedLog::open(db).unwrap();
        let producer = Producer::new(log.clone(), STREAM);
        for (n, name) in names.iter().enumerate() {
            let person = Person {
                uuid: format!("{name}-{n}"),
                name: (*name).to_owned(),
            };
            producer.send(&person).await.unwrap();
        }
        for _ in 0..malformed {
            let record = OutgoingRecord {
                stream: STREAM.into(),
                key: None,
                value: b"json:{not json".to_vec(),
                headers: vec![],
            };
            log.send(record).await.unwrap();
        }
    });
}

/// The service, logging JSON lines; returns it, its endpoints' address and its log lines.
/// It runs on `db` (an embedded log) and reads [`STREAM`] unless `extra_env` says
/// otherwise.
pub(crate) fn start(
    db: &Path,
    extra_env: &[(&str, &str)],
) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut command = Command::new(program("people_service"));
    command
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .env("LOGPIPE_BACKEND", format!("sqlite://{}", db.display()))
        .env("PEOPLE_STREAM", STREAM)
        .env("RUST_LOG", "info")
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(db.parent().unwrap())
        .stdin(Stdio::null());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let (child, received) = spawn_with_log(command);
    let addr = served_addr(&received);
    (child, addr, received)
}

/// The log lines left, up to the end of the process's stderr.
pub(crate) fn rest(log: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        match log.recv_timeout(WAIT) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr was not closed: {lines:?}"),
        }
    }
}

/// The address the endpoints are served at, from the JSON log line that says so: the
/// first with `http://` that `log` (a process's stderr) receives within a minute.
pub(crate) fn served_addr(log: &mpsc::Receiver<String>) -> SocketAddr {
    let line = loop {
        let line = log
            .recv_timeout(Duration::from_secs(60))
            .expect("the service logs where it serves");
        if line.contains("http://") {
            break line;
        }
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["level"], "INFO", "{line}");
    assert_eq!(entry["target"], "logpipe::cli", "{line}");
    assert!(entry["timestamp"].is_string(), "{line}");
    let message = entry["fields"]["message"]
        .as_str()
        .expect("a message field");
    let addr = message
        .rsplit_once("http://")
        .unwrap_or_else(|| panic!("no address in {line}"))
        .1;
    addr.parse().unwrap()
}

/// GETs `path`: the status and the body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` in a scrape, if there is one.
pub(crate) fn sample_value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

/// The value of the sample `name{labels}` in a scrape, 0 when absent.
fn sample(scrape: &str, series: &str) -> f64 {
    sample_value(scrape, series).unwrap_or(0.0)
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    sample(&body, series)
}

const HANDLED: &str = r#"logpipe_records_handled_total{stream="people-serve",type="person"}"#;
const SKIPPED: &str = r#"logpipe_records_skipped_total{stream="people-serve",reason="malformed"}"#;
const HANDLER_COUNT: &str = r#"logpipe_handler_seconds_count{stream="people-serve",type="person"}"#;
const RETRIES: &str = r#"logpipe_handler_retries_total{stream="people-serve"}"#;

#[test]
fn the_service_serves_metrics_and_probes_and_its_counters_move_as_records_are_handled_and_skipped()
{
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    send(&db, &["ada", "grace"], 0);
    let (mut child, addr, log) = start(
        &db,
        &[
            // A refused person is retried for as long as the test needs.
            ("LOGPIPE_CONSUMER__MAX_RETRIES", "1000000"),
            ("LOGPIPE_CONSUMER__RETRY_BACKOFF_MS", "5"),
            ("LOGPIPE_CONSUMER__MAX_RETRY_BACKOFF_MS", "5"),
        ],
    );
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "/nowhere").0, 404);
    wait_until_blocking("the consumer is ready", WAIT, || {
        get(addr, "/readyz").0 == 200
    });
    wait_until_blocking("2 handled records are counted", WAIT, || {
        metric(addr, HANDLED) == 2.0
    });
    assert_eq!(metric(addr, HANDLER_COUNT), 2.0, "handler latencies");
    assert_eq!(metric(addr, SKIPPED), 0.0);

    send(&db, &["edsger", "barbara", "donald"], 4);
    wait_until_blocking("5 handled and 4 skipped records are counted", WAIT, || {
        let (_, scrape) = get(addr, "/metrics");
        sample(&scrape, HANDLED) == 5.0 && sample(&scrape, SKIPPED) == 4.0
    });
    let (status, body) = get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "people_table: running\n"));

    // A person without a name: the handler fails and is retried; no progress is made.
    send(&db, &[" "], 0);
    wait_until_blocking("the retrying consumer is unready", WAIT, || {
        get(addr, "/readyz").0 == 503
    });
    let (_, body) = get(addr, "/readyz");
    assert!(body.contains("retrying"), "{body}");
    let retries = metric(addr, RETRIES);
    assert!(retries >= 1.0, "retries counted: {retries}");
    wait_until_blocking("more retries are counted", WAIT, || {
        metric(addr, RETRIES) > retries
    });
    assert_eq!(metric(addr, HANDLED), 5.0);

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
    let lines = rest(&log);
    for line in &lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|line| line.contains("SIGTERM received")),
        "{lines:?}"
    );
}

#[test]
fn the_service_stops_with_status_1_when_a_handler_keeps_failing_under_the_stop_policy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let (mut child, addr, log) = start(
        &db,
        &[
            ("LOGPIPE_CONSUMER__MAX_RETRIES", "1"),
            ("LOGPIPE_CONSUMER__RETRY_BACKOFF_MS", "1"),
        ],
    );
    wait_until_blocking("the consumer is ready", WAIT, || {
        get(addr, "/readyz").0 == 200
    });
    send(&db, &["ada", ""], 0);
    let status = wait_for_exit(&mut child);
    let lines = rest(&log);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        lines.iter().any(|line| line.contains("has no name")),
        "{lines:?}"
    );
}

/// Accepts the next call of the service's webhook (waiting at most [`WAIT`]) and reads
/// it: the connection, to answer on, and the request's body.
fn webhook_call(webhook: &TcpListener) -> (TcpStream, String) {
    webhook.set_nonblocking(true).unwrap();
    let mut accepted = None;
    wait_until_blocking("the webhook is called", WAIT, || {
        match webhook.accept() {
            Ok((call, _)) => accepted = Some(call),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("{err}"),
        }
        accepted.is_some()
    });
    let call = accepted.unwrap();
    call.set_nonblocking(false).unwrap();
    call.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = BufReader::new(call.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        request.read_line(&mut line).unwrap();
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    request.read_exact(&mut body).unwrap();
    (call, String::from_utf8(body).unwrap())
}

/// The stored position of `group` in partition 0 of the stream.
fn stored_offset(db: &Path, group: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT position_offset FROM logpipe_positions WHERE consumer_group = ?1 AND partition = '0'",
        [group],
        |row| row.get(0),
    )
    .ok()
}

#[test]
fn readyz_names_the_consumer_that_failed_while_the_others_finish_then_the_service_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logpipe.db");
    let webhook = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/people", webhook.local_addr().unwrap());
    let (mut child, addr, log) = start(
        &db,
        &[
            ("PEOPLE_WEBHOOK_URL", &url),
            ("LOGPIPE_EMBEDDED__PARTITIONS", "1"),
            ("LOGPIPE_CONSUMER__MAX_RETRIES", "0"),
        ],
    );
    wait_until_blocking("both consumers are ready", WAIT, || {
        get(addr, "/readyz").0 == 200
    });
    assert_eq!(
        get(addr, "/readyz").1,
        "people_table: running\npeople_webhook: running\n"
    );
    // The webhook consumer posts ada, and waits for the answer.
    send(&db, &["ada"], 0);
    let (mut call, body) = webhook_call(&webhook);
    assert!(body.contains(r#""name":"ada""#), "{body}");
    // people_table refuses a person without a name and stops; the process stops the
    // others, which first finish the record in hand: the webhook call.
    send(&db, &[" "], 0);
    // The 503 comes as soon as people_table stopped; the webhook consumer says it is
    // stopping once the stop reached it.
    let stopping = "people_webhook: stopping: finishing the record in hand";
    wait_until_blocking("readyz names both", WAIT, || {
        let (status, body) = get(addr, "/readyz");
        status == 503 && body.lines().nth(1) == Some(stopping)
    });
    let (_, body) = get(addr, "/readyz");
    let lines: Vec<&str> = body.lines().collect();
    assert!(
        lines[0].starts_with("people_table: stopped on an error: ")
            && lines[0].contains("has no name"),
        "{body}"
    );
    assert_eq!(lines[1..], [stopping], "{body}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the service waits for the webhook"
    );
    assert_eq!(stored_offset(&db, "people_webhook"), None);

    call.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    drop(call);
    let status = wait_for_exit(&mut child);
    let lines = rest(&log);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    // The webhook consumer stored the position of the record it finished.
    assert_eq!(stored_offset(&db, "people_webhook"), Some(0));
}

#[test]
fn a_metrics_address_that_is_not_ip_and_port_fails_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(program("people_service"))
        .env("LOGPIPE_BACKEND", "memory://")
        .env("LOGPIPE_METRICS_ADDR", "localhost")
        .env_remove("LOGPIPE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("metrics_addr") && stderr.contains("LOGPIPE_METRICS_ADDR"),
        "{stderr}"
    );
}
