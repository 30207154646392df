//! The operator commands of `logpipe` (`streams`, `produce`, `tail`, `offsets`, `lag`),
//! run as the real binary against the embedded log, the Kafka broker
//! (`LOGPIPE_TEST_KAFKA`) and kinesis-mock (`LOGPIPE_TEST_KINESIS`).

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logpipe::any::AnyBackend;
use logpipe::backend::{OutgoingRecord, ProducerBackend, Record, RecordHeader};
use logpipe::config::Config;
use logpipe::kinesis::KinesisBackend;
use logpipe::{Consumer, Context, Message, Registry, handler_fn};
use logpipe_kinesis::SdkApi;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{on_backends, program, service, unique};

/// The longest any one command or wait may take.
const WAIT: Duration = Duration::from_secs(120);

/// Where the commands of a test run: the variables naming a backend, and a directory
/// for SQLite files.
pub(crate) struct Setup {
    pub(crate) vars: Vec<(String, String)>,
    _dir: tempfile::TempDir,
    /// Kafka: a share of the broker, which a test restarting it waits for.
    _broker: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

impl Setup {
    pub(crate) fn embedded() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        Some(Self {
            vars: vec![(
                "LOGPIPE_BACKEND".into(),
                format!("sqlite://{}", db.display()),
            )],
            _dir: dir,
            _broker: None,
        })
    }

    pub(crate) fn kafka() -> Option<Self> {
        let (brokers, broker) = crate::kafka::broker_blocking()?;
        Some(Self {
            _broker: Some(broker),
            ..Self::kafka_alone(&brokers)
        })
    }

    /// Kafka at `brokers` without a share of the broker, for a test that holds it alone.
    pub(crate) fn kafka_alone(brokers: &str) -> Self {
        Self::with_vars(vec![(
            "LOGPIPE_BACKEND".into(),
            format!("kafka://{brokers}"),
        )])
    }

    /// Commands run with these variables (and no configuration file) only.
    pub(crate) fn with_vars(vars: Vec<(String, String)>) -> Self {
        Self {
            vars,
            _dir: tempfile::tempdir().unwrap(),
            _broker: None,
        }
    }

    /// Kafka, with positions in a SQLite file instead of the consumer groups.
    pub(crate) fn kafka_with_sqlite_positions() -> Option<Self> {
        let mut setup = Self::kafka()?;
        let positions = setup._dir.path().join("positions.db");
        setup.vars.push((
            "LOGPIPE_OFFSET_STORE".into(),
            format!("sqlite://{}", positions.display()),
        ));
        Some(setup)
    }

    /// `setup`, with positions in a schema of its own on the PostgreSQL test server.
    fn with_postgres_positions(setup: Option<Self>) -> Option<Self> {
        let server = service("LOGPIPE_TEST_POSTGRES")?;
        let mut setup = setup?;
        let schema = unique("ops").replace('-', "_");
        setup
            .vars
            .retain(|(name, _)| name != "LOGPIPE_OFFSET_STORE");
        setup.vars.push((
            "LOGPIPE_OFFSET_STORE".into(),
            format!("{server}?schema={schema}"),
        ));
        Some(setup)
    }

    /// Kafka, with positions in PostgreSQL.
    pub(crate) fn kafka_with_postgres_positions() -> Option<Self> {
        Self::with_postgres_positions(Self::kafka())
    }

    /// Kinesis, with positions in PostgreSQL.
    pub(crate) fn kinesis_with_postgres_positions() -> Option<Self> {
        Self::with_postgres_positions(Self::kinesis())
    }

    pub(crate) fn kinesis() -> Option<Self> {
        let endpoint = service("LOGPIPE_TEST_KINESIS")?;
        let dir = tempfile::tempdir().unwrap();
        let offsets = dir.path().join("offsets.db");
        Some(Self {
            vars: vec![
                (
                    "LOGPIPE_BACKEND".into(),
                    format!("kinesis://?region=us-east-1&endpoint={endpoint}"),
                ),
                (
                    "LOGPIPE_OFFSET_STORE".into(),
                    format!("sqlite://{}", offsets.display()),
                ),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ("LOGPIPE_KINESIS__POLL_INTERVAL_MS".into(), "100".into()),
            ],
            _dir: dir,
            _broker: None,
        })
    }

    pub(crate) fn is_kinesis(&self) -> bool {
        self.vars[0].1.starts_with("kinesis://")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(program("logpipe"));
        command
            .args(args)
            .env_remove("LOGPIPE_CONFIG")
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `logpipe ARGS` with `stdin`, waiting at most [`WAIT`].
    pub(crate) fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        wait_output(child, args)
    }

    /// Runs `logpipe ARGS` and checks that it succeeded; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "logpipe {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The JSON lines `logpipe ARGS` prints.
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args, "")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }

    pub(crate) fn config(&self) -> Config {
        Config::from_parts(Default::default(), self.vars.iter().cloned()).unwrap()
    }

    /// The backend, in this process (Kinesis with the emulator's dummy credentials).
    pub(crate) fn backend(&self, config: &Config) -> AnyBackend {
        if self.is_kinesis() {
            let endpoint = service("LOGPIPE_TEST_KINESIS").unwrap();
            let api = SdkApi::from_client(crate::kinesis::client(&endpoint));
            return AnyBackend::new(
                KinesisBackend::with_api(Arc::new(api), "us-east-1", config.kinesis.clone())
                    .unwrap(),
            );
        }
        config.open_backend().unwrap()
    }

    /// A new stream of `partitions` partitions holding `lines` as messages of type `t`
    /// version 1.
    pub(crate) fn stream_with(&self, what: &str, partitions: u32, lines: &str) -> String {
        let stream = unique(what);
        let count = partitions.to_string();
        self.ok(&["streams", "create", &stream, "--partitions", &count], "");
        if !lines.is_empty() {
            self.ok(
                &["produce", &stream, "--type", "t", "--version", "1"],
                lines,
            );
        }
        stream
    }

    /// Runs `logpipe offsets set`.
    fn set_position(&self, group: &str, stream: &str, partition: &str, position: &str) -> Output {
        let args = ["offsets", "set", "--group", group, stream];
        let at = ["--partition", partition, "--position", position];
        self.run(&[&args[..], &at[..]].concat(), "")
    }

    /// The partitions or shard ids of `stream`, in order.
    fn partitions(&self, stream: &str) -> Vec<String> {
        self.json_lines(&["streams", "describe", stream, "--json"])
            .iter()
            .map(|p| p["partition"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Waits for `child` to exit, reading its output meanwhile (so that it never blocks on
/// a full pipe), and kills it after [`WAIT`].
fn wait_output(child: Child, args: &[&str]) -> Output {
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match exited.recv_timeout(WAIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("logpipe {args:?} did not finish within {WAIT:?}");
        }
    }
}

on_backends!(
    [embedded, kafka, kinesis]
    streams_create_list_describe,
    produce_then_tail_shows_every_field,
    produce_takes_each_key_from_its_key_field,
    tail_without_from_beginning_shows_only_new_records,
    tail_validate_marks_messages_that_break_their_published_schema,
    offsets_set_then_show,
    offsets_reset,
    lag_counts_records_behind_the_group,
    replay_copies_exactly_the_range,
    replay_keeps_keys_values_and_headers,
);

// The same commands on positions kept in PostgreSQL.
on_backends!(
    [kafka_with_postgres_positions, kinesis_with_postgres_positions]
    offsets_set_then_show,
    offsets_reset,
    lag_counts_records_behind_the_group,
);

fn streams_create_list_describe(setup: Setup) {
    let stream = unique("streams");
    let created = setup.ok(&["streams", "create", &stream, "--partitions", "3"], "");
    assert!(created.contains(&stream), "{created}");
    let again = setup.run(&["streams", "create", &stream, "--partitions", "3"], "");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("cannot create {stream:?}")),
        "{again:?}"
    );
    let listed = setup.ok(&["streams", "list"], "");
    assert!(listed.lines().any(|line| line == stream), "{listed}");
    let partitions = setup.json_lines(&["streams", "describe", &stream, "--json"]);
    assert_eq!(partitions.len(), 3, "{partitions:?}");
    for partition in &partitions {
        assert_eq!(partition["stream"], stream.as_str());
    }
    let table = setup.ok(&["streams", "describe", &stream], "");
    assert_eq!(table.lines().count(), 4, "a header and 3 rows: {table}");

    let missing = setup.run(&["streams", "describe", &unique("missing")], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot describe"),
        "{missing:?}"
    );
}

/// Writes a record value (which need not be an envelope) with its headers, under the key
/// `k`, with the library.
fn write_raw(setup: &Setup, stream: &str, value: &[u8], headers: Vec<RecordHeader>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let backend = setup.backend(&setup.config());
        tokio::time::timeout(
            WAIT,
            backend.send(OutgoingRecord {
                stream: stream.into(),
                key: Some(b"k".to_vec()),
                value: value.to_vec(),
                headers,
            }),
        )
        .await
        .unwrap()
        .unwrap();
        backend.flush().await.unwrap();
    });
}

/// `--key-field`: each line's key from its message, as django-logpipe's `KEY_FIELD`;
/// a line without one is refused (the lines before it are sent) unless `--allow-keyless`.
fn produce_takes_each_key_from_its_key_field(setup: Setup) {
    let stream = unique("keyfield");
    // One partition: the records in the order they were sent.
    setup.ok(&["streams", "create", &stream, "--partitions", "1"], "");
    let produce = |more: &[&str], lines: &str| {
        let mut args = vec![
            "produce",
            stream.as_str(),
            "--type",
            "person",
            "--version",
            "1",
            "--key-field",
            "uuid",
        ];
        args.extend_from_slice(more);
        setup.run(&args, lines)
    };
    let keyless = "{\"name\":\"nobody\"}\n";
    let refused = produce(
        &[],
        &format!("{{\"uuid\":\"a\",\"n\":0}}\n{keyless}{{\"uuid\":\"b\"}}\n"),
    );
    assert_eq!(refused.status.code(), Some(65), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("line 2") && said.contains("\"uuid\"") && said.contains("--allow-keyless"),
        "{said}"
    );
    let sent = produce(
        &[],
        "{\"uuid\":\"a\",\"n\":1}\n{\"uuid\":7,\"n\":2}\n{\"uuid\":\"a\",\"n\":3}\n",
    );
    assert!(sent.status.success(), "{sent:?}");
    let sent = produce(&["--allow-keyless"], keyless);
    assert!(sent.status.success(), "{sent:?}");

    let records = setup.json_lines(&[
        "tail",
        &stream,
        "--from-beginning",
        "--json",
        "--max",
        "5",
        "--timeout",
        "60",
    ]);
    let mut keys: Vec<(Value, Value)> = records
        .iter()
        .map(|r| (r["message"]["n"].clone(), r["key"].clone()))
        .collect();
    if setup.is_kinesis() {
        // Kinesis records always have a partition key: a random one for a keyless record.
        assert!(keys[4].1.is_string(), "{keys:?}");
        keys[4].1 = Value::Null;
    }
    assert_eq!(
        keys,
        [
            (0.into(), "a".into()),
            (1.into(), "a".into()),
            (2.into(), "7".into()),
            (3.into(), "a".into()),
            (Value::Null, Value::Null),
        ],
        "the refused run sent its first line only, each line has its own key: {records:?}"
    );
}

fn produce_then_tail_shows_every_field(setup: Setup) {
    let stream = unique("tail");
    setup.ok(&["streams", "create", &stream, "--partitions", "1"], "");
    let produce = [
        "produce",
        &stream,
        "--type",
        "person",
        "--version",
        "2",
        "--key",
        "k",
    ];
    let output = setup.run(&produce, "{\"uuid\":\"a1\",\"name\":\"Ann\"}\n");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("sent 1 records"));
    setup.ok(
        &[
            "produce",
            &stream,
            "--type",
            "pet",
            "--version",
            "1",
            "--key",
            "k",
        ],
        "{\"name\":\"Rex\"}\n",
    );
    write_raw(&setup, &stream, b"json:{not an envelope", Vec::new());
    setup.ok(&produce, "{\"uuid\":\"b2\",\"name\":\"Bob\"}\n\n");

    let bad = setup.run(&produce, "{\"uuid\":\"c3\"}\nnot json\n");
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 2"),
        "{bad:?}"
    );

    // Everything, in order, with the line before the bad one.
    let all = setup.json_lines(&[
        "tail",
        &stream,
        "--from-beginning",
        "--json",
        "--max",
        "5",
        "--timeout",
        "60",
    ]);
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[0]["type"], "person");
    assert_eq!(all[0]["version"], 2);
    assert_eq!(all[0]["key"], "k");
    assert_eq!(all[0]["format"], "json");
    assert_eq!(
        all[0]["message"],
        serde_json::json!({"uuid": "a1", "name": "Ann"})
    );
    assert_eq!(all[0]["stream"], stream.as_str());
    assert!(all[0]["timestamp_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(all[1]["type"], "pet");
    assert!(
        all[2]["malformed"].as_str().unwrap().len() > 3,
        "{:?}",
        all[2]
    );
    assert_eq!(all[2]["value"], "json:{not an envelope");
    assert_eq!(all[3]["message"]["name"], "Bob");
    assert_eq!(all[4]["message"]["uuid"], "c3");
    let positions: Vec<&str> = all
        .iter()
        .map(|r| r["position"].as_str().unwrap())
        .collect();
    let partition = all[0]["partition"].as_str().unwrap();
    assert!(all.iter().all(|r| r["partition"] == partition), "{all:?}");
    if !setup.is_kinesis() {
        assert_eq!(positions, ["0", "1", "2", "3", "4"]);
    }

    if let Some(db) = setup.vars[0].1.strip_prefix("sqlite://") {
        // A tail is a consumer of its own: it leases none of the log's partitions.
        let conn = rusqlite::Connection::open(db).unwrap();
        let leases: i64 = conn
            .query_row("SELECT COUNT(*) FROM logpipe_leases", [], |row| row.get(0))
            .unwrap_or(0);
        assert_eq!(leases, 0, "no lease is left by a tail");
    }

    // Only persons, and the malformed record, which is never hidden.
    let people = setup.json_lines(&[
        "tail",
        &stream,
        "--from-beginning",
        "--json",
        "--type",
        "person",
        "--max",
        "3",
        "--timeout",
        "60",
    ]);
    let names: Vec<&Value> = people.iter().map(|r| &r["message"]["name"]).collect();
    assert_eq!(
        names,
        [&Value::from("Ann"), &Value::Null, &Value::from("Bob")]
    );
    assert!(people[1]["malformed"].is_string());

    // The text form shows the same fields.
    let text = setup.ok(
        &[
            "tail",
            &stream,
            "--from-beginning",
            "--max",
            "3",
            "--timeout",
            "60",
        ],
        "",
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(&format!("{stream}/{partition}@{}", positions[0])),
        "{text}"
    );
    assert!(
        lines[0].contains("key=k person v2: {\"uuid\":\"a1\",\"name\":\"Ann\"}"),
        "{text}"
    );
    assert!(lines[2].contains("MALFORMED ("), "{text}");
}

fn tail_validate_marks_messages_that_break_their_published_schema(setup: Setup) {
    let stream = unique("validate");
    setup.ok(&["streams", "create", &stream, "--partitions", "1"], "");
    let produce = |version: &str, lines: &str| {
        let args = ["produce", &stream, "--type", "person", "--version", version];
        setup.ok(&args, lines);
    };
    // Valid, missing a required name, a name of the wrong type; then a version with no
    // published schema.
    produce(
        "1",
        "{\"uuid\":\"a1\",\"name\":\"Ann\"}\n{\"uuid\":\"b2\"}\n{\"uuid\":\"c3\",\"name\":5}\n",
    );
    produce("2", "{\"uuid\":\"d4\"}\n");
    let dir = tempfile::tempdir().unwrap();
    let mut schemas = logpipe::schema::Schemas::new();
    schemas.insert(
        "person",
        1,
        serde_json::json!({
            "type": "object",
            "properties": {"uuid": {"type": "string"}, "name": {"type": "string"}},
            "required": ["uuid", "name"],
        }),
    );
    schemas.export(dir.path()).unwrap();
    let folder = dir.path().to_str().unwrap();

    let tail = ["tail", &stream, "--from-beginning", "--timeout", "60"];
    let judged =
        setup.json_lines(&[&tail[..], &["--json", "--max", "4", "--validate", folder]].concat());
    let valid: Vec<&Value> = judged.iter().map(|r| &r["valid"]).collect();
    assert_eq!(
        valid,
        [
            &Value::Bool(true),
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Null
        ],
        "{judged:?}"
    );
    let violations = |r: &Value| r["violations"].as_array().unwrap().len();
    assert_eq!(violations(&judged[1]), 1, "{judged:?}");
    let missing = judged[1]["violations"][0].as_str().unwrap();
    assert!(
        missing.starts_with("/: ") && missing.contains("\"name\""),
        "{missing}"
    );
    let wrong_type = judged[2]["violations"][0].as_str().unwrap();
    assert!(wrong_type.starts_with("/name: "), "{wrong_type}");
    assert_eq!(judged[3]["violations"][0], "no published schema");
    // The record's own fields are all still there.
    assert_eq!(judged[2]["message"]["uuid"], "c3");

    // The text form marks the same records; --version shows only version 1.
    let text = setup.ok(
        &[
            &tail[..],
            &["--max", "3", "--version", "1", "--validate", folder],
        ]
        .concat(),
        "",
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("person v1: {"), "{text}");
    assert!(lines[1].contains("person v1 INVALID (/: "), "{text}");
    assert!(lines[2].contains("person v1 INVALID (/name: "), "{text}");
    let only_v2 = setup.ok(
        &[
            &tail[..],
            &["--max", "1", "--version", "2", "--validate", folder],
        ]
        .concat(),
        "",
    );
    assert!(only_v2.contains("person v2 UNPUBLISHED"), "{only_v2}");

    // A folder that is not one of schemas fails before anything is read.
    std::fs::write(dir.path().join("person").join("notes.txt"), "hello").unwrap();
    let bad = setup.run(&[&tail[..], &["--validate", folder]].concat(), "");
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("notes.txt"),
        "{bad:?}"
    );
}

fn tail_without_from_beginning_shows_only_new_records(setup: Setup) {
    let stream = unique("new");
    setup.ok(&["streams", "create", &stream, "--partitions", "2"], "");
    let produce = ["produce", &stream, "--type", "t", "--version", "1"];
    setup.ok(&produce, "{\"n\":\"old\"}\n");
    let mut tail = setup
        .command(&["tail", &stream, "--json", "--max", "1", "--timeout", "100"])
        .spawn()
        .unwrap();
    // The tail cannot say when it is reading, so new records go on until it saw one.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while tail.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the tail showed no new record");
        setup.ok(&produce, &format!("{{\"n\":\"new-{sent}\"}}\n"));
        sent += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let output = wait_output(tail, &["tail"]);
    assert!(output.status.success(), "{output:?}");
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    let n = shown["message"]["n"].as_str().unwrap();
    assert!(n.starts_with("new-"), "the tail showed {shown}");
}

fn offsets_set_then_show(setup: Setup) {
    let stream = setup.stream_with("offsets", 2, "");
    let group = unique("group");
    let partitions = setup.partitions(&stream);
    let shown = setup.json_lines(&["offsets", "show", "--group", &group, &stream, "--json"]);
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|p| p["position"].is_null()), "{shown:?}");

    let position = if setup.is_kinesis() {
        "49680538823000460305650030634928846360478251554288173058"
    } else {
        "41"
    };
    let output = setup.set_position(&group, &stream, &partitions[1], position);
    assert!(output.status.success(), "{output:?}");
    let shown = setup.json_lines(&["offsets", "show", "--group", &group, &stream, "--json"]);
    assert_eq!(shown[0]["position"], Value::Null, "{shown:?}");
    assert_eq!(shown[1]["partition"], partitions[1].as_str());
    assert_eq!(shown[1]["position"], position, "{shown:?}");
    if setup.is_kinesis() {
        // Positions of Kinesis consumers are kept as GROUP@REGION.
        assert_eq!(shown[1]["group"], format!("{group}@us-east-1"));
    }

    let bad = setup.set_position(&group, &stream, "nine", "1");
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no partition \"nine\""));
    let bad = setup.set_position(&group, &stream, &partitions[0], "4968x");
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    let said = if setup.is_kinesis() {
        "\"4968x\" is not a Kinesis sequence number"
    } else {
        "is not an offset"
    };
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(said),
        "{bad:?}"
    );
}

fn offsets_reset(setup: Setup) {
    let stream = setup.stream_with("reset", 1, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    let group = unique("group");
    let reset = |to: &str| {
        setup.run(
            &["offsets", "reset", "--group", &group, &stream, "--to", to],
            "",
        )
    };
    let position = || {
        setup.json_lines(&["offsets", "show", "--group", &group, &stream, "--json"])[0]["position"]
            .clone()
    };
    if setup.is_kinesis() {
        let lag =
            || setup.json_lines(&["lag", "--group", &group, &stream, "--json"])[0]["lag"].clone();
        // To the newest record: nothing is left to read.
        let output = reset("latest");
        assert!(output.status.success(), "{output:?}");
        let newest = position();
        assert!(newest.is_string(), "{newest}");
        assert_eq!(lag(), 0);
        // Records written after it are the ones behind. Arrival times of Kinesis
        // records may be kept to the second.
        std::thread::sleep(Duration::from_millis(1500));
        let before_4 = format_utc(SystemTime::now());
        std::thread::sleep(Duration::from_millis(1500));
        setup.ok(
            &["produce", &stream, "--type", "t", "--version", "1"],
            "{\"n\":4}\n",
        );
        assert_eq!(lag(), 1);
        assert!(reset("latest").status.success());
        assert_ne!(position(), newest);

        // To the oldest record: a starting point, which consumers honour.
        let output = reset("earliest");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(position(), "TRIM_HORIZON");
        assert_eq!(lag(), 4);
        consume(&setup, &stream, &group, 4);
        assert_eq!(
            lag(),
            0,
            "the consumer read the 4 records from the oldest on"
        );

        // To a time: from the first record that arrived then or later.
        let output = reset(&before_4);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(position(), format!("AT_TIMESTAMP:{before_4}"));
        assert_eq!(lag(), 1);
        consume(&setup, &stream, &group, 1);
        assert_eq!(lag(), 0, "the consumer read record 4, and only it");
        let bad = reset("yesterday");
        assert_eq!(bad.status.code(), Some(65));
        return;
    }
    for (to, expected) in [
        ("latest", "2"),
        ("earliest", "-1"),
        ("2100-01-01T00:00:00Z", "2"),
        ("2000-01-01T00:00:00Z", "-1"),
    ] {
        let output = reset(to);
        assert!(output.status.success(), "{to}: {output:?}");
        assert_eq!(position(), expected, "after a reset to {to}");
    }
    let bad = reset("yesterday");
    assert_eq!(bad.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("yesterday"));
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "t", version = 1)]
struct Numbered {
    n: u64,
}

/// A consumer's `run`, to await or spawn.
type ConsumerRun = Pin<Box<dyn Future<Output = Result<(), logpipe::Error>> + Send>>;

/// A consumer of `group` built as `run_consumers` builds one, and the count of records
/// it handled; it stops by itself after `stop_after` records, if given.
async fn numbered_consumer(
    setup: &Setup,
    stream: &str,
    group: &str,
    stop_after: Option<usize>,
) -> (ConsumerRun, CancellationToken, Arc<AtomicUsize>) {
    let config = setup.config();
    let backend = setup.backend(&config);
    let store = config.open_offset_store(&backend).await.unwrap();
    let group = logpipe::backend::Backend::position_group(&backend, group);
    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let (seen, stop) = (Arc::clone(&handled), shutdown.clone());
    let registry = Registry::builder()
        .handle(handler_fn(move |_: Numbered, _: Context| {
            let now = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if stop_after == Some(now) {
                stop.cancel();
            }
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap();
    let consumer = Consumer::new(
        backend.consumer(&group, &[stream.to_owned()]).unwrap(),
        store,
        registry,
        group.as_str(),
    );
    (Box::pin(consumer.run(shutdown.clone())), shutdown, handled)
}

/// Runs a consumer of `group` until it handled `count` records, then stops it.
fn consume(setup: &Setup, stream: &str, group: &str, count: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (run, _, handled) = numbered_consumer(setup, stream, group, Some(count)).await;
        tokio::time::timeout(WAIT, run)
            .await
            .expect("the consumer catches up in time")
            .unwrap();
        assert_eq!(handled.load(Ordering::SeqCst), count);
    });
}

fn lag_counts_records_behind_the_group(setup: Setup) {
    let stream = setup.stream_with("lag", 2, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    let group = unique("group");
    let produce = ["produce", &stream, "--type", "t", "--version", "1"];
    let total = |setup: &Setup| -> i64 {
        setup
            .json_lines(&["lag", "--group", &group, &stream, "--json"])
            .iter()
            .map(|p| p["lag"].as_i64().unwrap())
            .sum()
    };
    // A group that never read is behind by every record kept.
    assert_eq!(total(&setup), 3);
    consume(&setup, &stream, &group, 3);
    assert_eq!(total(&setup), 0);
    setup.ok(&produce, "{\"n\":4}\n{\"n\":5}\n");
    assert_eq!(total(&setup), 2);
    if setup.is_kinesis() {
        // Counted exactly, with how long ago the oldest unread record arrived.
        let lines = setup.json_lines(&["lag", "--group", &group, &stream, "--json"]);
        assert!(lines.iter().all(|p| p["exact"] == true), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|p| p["lag"].as_u64() > Some(0) && p["behind_ms"].as_u64().is_some()),
            "{lines:?}"
        );
    }
    let table = setup.ok(&["lag", "--group", &group, &stream], "");
    assert!(table.contains("2 records behind"), "{table}");
    assert_eq!(
        table.lines().count(),
        4,
        "a title, a header and 2 rows: {table}"
    );
}

/// The `n` of every message in `stream`, in order (one partition), read with `tail`.
fn numbers_in(setup: &Setup, stream: &str, count: usize) -> Vec<u64> {
    let max = count.to_string();
    let shown = setup.json_lines(&[
        "tail",
        stream,
        "--from-beginning",
        "--json",
        "--max",
        &max,
        "--timeout",
        "60",
    ]);
    shown
        .iter()
        .map(|r| r["message"]["n"].as_u64().unwrap())
        .collect()
}

/// Records in `stream`, all partitions, counted by `lag` of a group that never read.
pub(crate) fn records_in(setup: &Setup, stream: &str) -> u64 {
    setup
        .json_lines(&["lag", "--group", &unique("count"), stream, "--json"])
        .iter()
        .map(|p| {
            if setup.is_kinesis() {
                assert_eq!(p["exact"], true, "{p}");
            }
            p["lag"].as_u64().unwrap()
        })
        .sum()
}

fn replay_copies_exactly_the_range(setup: Setup) {
    let stream = unique("replay");
    setup.ok(&["streams", "create", &stream, "--partitions", "1"], "");
    let produce = [
        "produce",
        &stream,
        "--type",
        "t",
        "--version",
        "1",
        "--key",
        "k",
    ];
    setup.ok(&produce, "{\"n\":1}\n{\"n\":2}\n");
    // Arrival times of Kinesis records may be kept to the second.
    std::thread::sleep(Duration::from_millis(1500));
    let middle = SystemTime::now();
    std::thread::sleep(Duration::from_millis(1500));
    setup.ok(&produce, "{\"n\":3}\n{\"n\":4}\n{\"n\":5}\n");
    let from = format_utc(middle);

    // From a time to the end.
    let copy = setup.stream_with("copy", 1, "");
    let output = setup.run(&["replay", &stream, "--from", &from, "--to", &copy], "");
    assert!(output.status.success(), "{output:?}");
    // One line on stderr: no progress bar when stderr is not a terminal.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!("logpipe: replayed 3 records from {stream} to {copy}\n")
    );
    assert_eq!(numbers_in(&setup, &copy, 3), [3, 4, 5]);
    assert_eq!(records_in(&setup, &copy), 3);

    // One partition from a record up to another, not included, as PARTITION:POSITION
    // (on Kinesis a shard id and a sequence number).
    let shown = setup.json_lines(&[
        "tail",
        &stream,
        "--from-beginning",
        "--json",
        "--max",
        "5",
        "--timeout",
        "60",
    ]);
    let at = |i: usize| {
        let record = &shown[i];
        format!(
            "{}:{}",
            record["partition"].as_str().unwrap(),
            record["position"].as_str().unwrap()
        )
    };
    let part = setup.stream_with("part", 1, "");
    setup.ok(
        &[
            "replay",
            &stream,
            "--from",
            &at(1),
            "--until",
            &at(3),
            "--to",
            &part,
        ],
        "",
    );
    assert_eq!(numbers_in(&setup, &part, 2), [2, 3]);
    assert_eq!(records_in(&setup, &part), 2);
    // The keys came along.
    let shown = setup.json_lines(&[
        "tail",
        &part,
        "--from-beginning",
        "--json",
        "--max",
        "1",
        "--timeout",
        "60",
    ]);
    assert_eq!(shown[0]["key"], "k");
    let refused = setup.run(&["replay", &stream, "--from", "nine:1", "--to", &part], "");
    assert_eq!(refused.status.code(), Some(65), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("has no partition \"nine\""),
        "{refused:?}"
    );

    if setup.is_kinesis() {
        let refused = setup.run(&["replay", &stream, "--from", "1", "--to", &copy], "");
        assert_eq!(refused.status.code(), Some(65), "{refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("SHARD:SEQUENCE"),
            "{refused:?}"
        );
        return;
    }
    // Offsets, in every partition: from the second record up to the fourth, not included.
    let offsets = setup.stream_with("offsets", 1, "");
    setup.ok(
        &[
            "replay", &stream, "--from", "1", "--until", "3", "--to", &offsets,
        ],
        "",
    );
    assert_eq!(numbers_in(&setup, &offsets, 2), [2, 3]);
    assert_eq!(records_in(&setup, &offsets), 2);
}

/// The first `count` records of `stream`, read with the library from the oldest on.
pub(crate) fn read_from_start(setup: &Setup, stream: &str, count: usize) -> Vec<Record> {
    let mut config = setup.config();
    config
        .kafka
        .consumer
        .insert("auto.offset.reset".into(), "earliest".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let backend = setup.backend(&config);
        let consumer = backend
            .consumer(&unique("reader"), &[stream.to_owned()])
            .unwrap();
        crate::support::read_from_start(consumer, count).await
    })
}

fn replay_keeps_keys_values_and_headers(setup: Setup) {
    let stream = setup.stream_with("headers", 1, "");
    let value = br#"json:{"type":"t","version":1,"message":{"n":1},"producer":"billing"}"#;
    let headers = vec![
        RecordHeader {
            name: "trace-id".into(),
            value: b"4bf92f35".to_vec(),
        },
        RecordHeader {
            name: "raw".into(),
            value: vec![0, 159, 255],
        },
    ];
    write_raw(&setup, &stream, value, headers.clone());
    let copy = setup.stream_with("headers-copy", 1, "");
    setup.ok(
        &[
            "replay",
            &stream,
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            &copy,
        ],
        "",
    );
    let copied = read_from_start(&setup, &copy, 1);
    assert_eq!(copied[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(copied[0].value, &value[..], "the value, envelope and all");
    if setup.is_kinesis() {
        // Kinesis records have no headers: none were written, none are made up.
        assert_eq!(copied[0].headers, []);
    } else {
        assert_eq!(copied[0].headers, headers);
    }
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.fffZ`, computed with `date`, which the machine has.
fn format_utc(time: SystemTime) -> String {
    let millis = time.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let output = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", millis / 1000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    format!(
        "{}.{:03}Z",
        String::from_utf8(output.stdout).unwrap().trim(),
        millis % 1000
    )
}

#[test]
fn tail_ends_cleanly_on_ctrl_c() {
    let setup = Setup::embedded().unwrap();
    let stream = setup.stream_with("interrupt", 1, "{\"n\":1}\n");
    let mut tail = setup
        .command(&["tail", &stream, "--from-beginning"])
        .spawn()
        .unwrap();
    // Once it printed the record, it is reading and listening for Ctrl-C.
    let mut stdout = tail.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = Vec::new();
        let mut byte = [0_u8];
        while std::io::Read::read(&mut stdout, &mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            first.push(byte[0]);
        }
        let _ = line_tx.send(String::from_utf8_lossy(&first).into_owned());
    });
    let first = line_rx.recv_timeout(WAIT).expect("tail prints the record");
    assert!(first.contains("t v1: {\"n\":1}"), "{first}");
    let sent = Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = wait_output(tail, &["tail"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn kafka_offsets_set_refuses_a_group_with_active_members() {
    let Some(setup) = Setup::kafka() else {
        return;
    };
    let stream = setup.stream_with("busy", 1, "{\"n\":1}\n");
    let group = unique("group");
    let set = || setup.set_position(&group, &stream, "0", "0");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (run, shutdown, handled) = numbered_consumer(&setup, &stream, &group, None).await;
        let task = tokio::spawn(run);
        crate::support::wait_until("the consumer handled the record", WAIT, || {
            handled.load(Ordering::SeqCst) == 1
        })
        .await;
        let refused = tokio::task::block_in_place(set);
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("active members"), "{stderr}");
        shutdown.cancel();
        let stopped = tokio::time::timeout(WAIT, task).await;
        stopped
            .expect("the consumer stops in time")
            .unwrap()
            .unwrap();
    });
    let output = set();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_bad_configuration_exits_78_naming_the_key() {
    let setup = Setup::embedded().unwrap();
    let mut command = setup.command(&["streams", "list"]);
    command.env("LOGPIPE_BACKEND", "postgres://db");
    let output = wait_output(command.spawn().unwrap(), &["streams", "list"]);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("backend"),
        "{output:?}"
    );

    let missing = setup.run(
        &["--config", "/nonexistent/logpipe.toml", "streams", "list"],
        "",
    );
    assert_eq!(missing.status.code(), Some(78), "{missing:?}");
}

#[test]
fn offsets_migrate_creates_the_tables_of_a_postgres_store_and_refuses_a_memory_one() {
    let Some(setup) = Setup::with_postgres_positions(Setup::embedded()) else {
        return;
    };
    let (_, store) = setup
        .vars
        .iter()
        .find(|(name, _)| name == "LOGPIPE_OFFSET_STORE")
        .unwrap();
    let schema = store.rsplit_once("schema=").unwrap().1.to_owned();
    let stdout = setup.ok(&["offsets", "migrate"], "");
    assert!(stdout.contains("its tables are ready"), "{stdout}");
    assert!(
        stdout.contains(":***@") && !stdout.contains("logpipe-test-password"),
        "{stdout}"
    );
    let server = service("LOGPIPE_TEST_POSTGRES").unwrap();
    let tables: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = logpipe::postgres::sqlx::PgPool::connect(&server)
            .await
            .unwrap();
        logpipe::postgres::sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    assert_eq!(
        tables,
        ["logpipe_handled", "logpipe_leases", "logpipe_positions"]
    );

    let memory = Setup::embedded().unwrap();
    let mut command = memory.command(&["offsets", "migrate"]);
    command.env("LOGPIPE_BACKEND", "memory://");
    let output = wait_output(command.spawn().unwrap(), &["offsets", "migrate"]);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("live only in the consumer's process"),
        "{output:?}"
    );
}

/// Every one-shot command on a backend that nothing answers at fails soon, with status 69
/// and one line naming where it looked.
#[test]
fn a_backend_that_cannot_be_reached_fails_with_69_in_one_line() {
    let dead = [
        (
            "kafka://127.0.0.1:1",
            "cannot reach the Kafka brokers at 127.0.0.1:1: ",
        ),
        (
            "kinesis://?region=us-east-1&endpoint=http://127.0.0.1:1",
            "could not reach Kinesis",
        ),
    ];
    for (backend, says) in dead {
        let setup = Setup::with_vars(vec![
            ("LOGPIPE_BACKEND".into(), backend.into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]);
        let commands: [(&[&str], &str); 5] = [
            (&["streams", "list"], ""),
            (&["streams", "describe", "people"], ""),
            (
                &["produce", "people", "--type", "person", "--version", "1"],
                "{\"name\":\"Ann\"}\n",
            ),
            (
                &["tail", "people", "--from-beginning", "--timeout", "60"],
                "",
            ),
            // A shorter wait for the brokers (Kinesis has none to shorten).
            (&["--request-timeout", "2", "streams", "list"], ""),
        ];
        for (args, stdin) in commands {
            let output = setup.run(args, stdin);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(69),
                "{backend} {args:?}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{backend} {args:?}: {stderr}");
            assert!(
                stderr.starts_with("logpipe: ") && stderr.contains(says),
                "{backend} {args:?}: {stderr}"
            );
        }
    }
}

/// A stream name or a type that Kafka, Kinesis or django-logpipe would refuse is refused
/// on the embedded log too, naming the rule.
#[test]
fn names_outside_the_rule_are_refused_on_the_embedded_log_naming_it() {
    let setup = Setup::embedded().unwrap();
    for args in [
        &["streams", "create", "a/b c"][..],
        &["produce", "a b", "--type", "t", "--version", "1"],
        &["tail", "a b", "--timeout", "1"],
    ] {
        let refused = setup.run(args, "{}\n");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            stderr.contains(logpipe_core::STREAM_NAME_RULE),
            "{args:?}: {stderr}"
        );
    }
    let refused = setup.run(
        &["produce", "people", "--type", "", "--version", "1"],
        "{}\n",
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(logpipe_core::MESSAGE_TYPE_RULE), "{stderr}");
}
