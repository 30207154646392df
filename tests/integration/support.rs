//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::{Arc, Mutex};

use logpipe::{Context, Message, Registry, handler_fn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The golden vectors made by django-logpipe, beside this repository.
pub fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    assert!(
        dir.join("encode.jsonl").exists(),
        "the golden vectors are missing from {}",
        dir.display()
    );
    dir
}

/// One line of `encode.jsonl`.
#[derive(Debug, Deserialize)]
pub struct EncodeVector {
    pub name: String,
    pub format: String,
    pub producer_id: String,
    #[serde(rename = "type")]
    pub message_type: String,
    pub version: u64,
    pub key: String,
    /// Raw, so that the order of its keys is kept.
    pub message: Box<RawValue>,
    pub value_hex: String,
}

/// One line of `decode.jsonl`.
#[derive(Debug, Deserialize)]
pub struct DecodeVector {
    pub name: String,
    pub value_hex: String,
    pub expect: Expect,
}

/// What django-logpipe made of a decode vector.
#[derive(Debug, Deserialize)]
pub struct Expect {
    pub outcome: String,
    pub message: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    pub version: Option<u64>,
    pub producer: Option<String>,
    pub logpipe_error: Option<String>,
}

impl DecodeVector {
    pub fn value(&self) -> Vec<u8> {
        hex::decode(&self.value_hex).unwrap()
    }

    /// The skip reason label this project gives the error django-logpipe raised.
    pub fn expected_skip(&self) -> Option<&'static str> {
        let error = self.expect.logpipe_error.as_deref()?;
        Some(match error.rsplit('.').next().unwrap() {
            "InvalidMessageError" => "invalid_envelope",
            "UnknownMessageTypeError" => "unknown_type",
            "UnknownMessageVersionError" => "unknown_version",
            "IgnoredMessageTypeError" => "ignored",
            "ValidationError" => "validation",
            "UnknownFormatError" | "ValueError" | "ParseError" | "TypeError" => "malformed",
            _ if error.starts_with("msgpack") => "malformed",
            _ => panic!("a vector names an error this test does not know: {error}"),
        })
    }
}

fn read_lines<T: serde::de::DeserializeOwned>(file: &str) -> Vec<T> {
    let text = std::fs::read_to_string(vectors_dir().join(file)).unwrap();
    let lines: Vec<T> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!lines.is_empty(), "{file} has no vectors");
    lines
}

pub fn encode_vectors() -> Vec<EncodeVector> {
    read_lines("encode.jsonl")
}

pub fn decode_vectors() -> Vec<DecodeVector> {
    read_lines("decode.jsonl")
}

/// A program built by Cargo for this package: a binary or an example.
pub fn program(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let profile = deps.parent().unwrap();
    [profile.join(name), profile.join("examples").join(name)]
        .into_iter()
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built in {}: run the tests with `cargo test`, which builds examples",
                profile.display()
            )
        })
}

/// Waits until `condition` holds, checking every 20 ms, for at most `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same, for blocking code.
pub fn wait_until_blocking(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `count` records of `stream` from the start, in partition order.
pub async fn read_records(
    log: &logpipe::embedded::EmbeddedLog,
    stream: &str,
    count: usize,
) -> Vec<logpipe::Record> {
    read_from_start(log.consumer([stream]), count).await
}

/// Reads `count` records with `consumer`, every partition from where it starts without a
/// position, waiting at most 60 s; checks that no more came.
pub async fn read_from_start(
    mut consumer: impl logpipe::backend::ConsumerBackend,
    count: usize,
) -> Vec<logpipe::Record> {
    use logpipe::backend::ConsumerEvent;
    let mut records = Vec::new();
    let read = async {
        while records.len() < count {
            match consumer.next_event().await.unwrap() {
                ConsumerEvent::Assigned(partitions) => {
                    for partition in &partitions {
                        consumer.seek(partition, None).await.unwrap();
                    }
                }
                ConsumerEvent::Records(batch) => records.extend(batch),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the records arrive in time");
    assert_eq!(records.len(), count, "more records than expected");
    records
}

/// The vectors' `us-state` v1 serializer accepts any object.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "us-state", version = 1)]
pub struct AnyState(pub Map<String, Value>);

/// The vectors' `person` v1 serializer requires a string `uuid`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
pub struct VectorPerson {
    pub uuid: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What the vector handlers saw.
pub type Seen = Arc<Mutex<Vec<(String, u64, Option<String>, Value)>>>;

/// The handlers behind the decode vectors, recording (type, version, producer, message)
/// of every message they handle.
pub fn vectors_registry(seen: &Seen) -> Registry {
    let (states, people) = (Arc::clone(seen), Arc::clone(seen));
    Registry::builder()
        .handle(handler_fn(move |state: AnyState, context: Context| {
            let entry = (
                context.message_type.to_string(),
                context.version,
                context.producer.as_deref().map(str::to_owned),
                Value::Object(state.0),
            );
            states.lock().unwrap().push(entry);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .handle(handler_fn(move |person: VectorPerson, context: Context| {
            let entry = (
                context.message_type.to_string(),
                context.version,
                context.producer.as_deref().map(str::to_owned),
                serde_json::to_value(&person).unwrap(),
            );
            people.lock().unwrap().push(entry);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .ignore("audit")
        .build()
        .unwrap()
}

/// The address a `tests/services` script put in a variable (skip outside CI when it is
/// missing), and a name no other test or run uses.
pub use logpipe_core::conformance::{service, unique};

/// Starts `command` with its stderr read line by line on a thread of its own; returns
/// the process and its lines.
pub fn spawn_with_log(
    mut command: std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    (child, received)
}

/// The value of header `name` of `record`, as text.
///
/// # Panics
///
/// When the record has no such header, or its value is not UTF-8.
pub fn header(record: &logpipe::Record, name: &str) -> String {
    let found = record.headers.iter().find(|h| h.name == name);
    let found = found.unwrap_or_else(|| panic!("no {name} header in {record:?}"));
    String::from_utf8(found.value.clone()).unwrap()
}

/// A multi-threaded runtime of two workers, for tests that are not async.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A consumer running in a task of its own, reporting its state under its group's name
/// to a [`Health`](logpipe::health::Health) of its own.
pub struct Running {
    pub health: logpipe::health::Health,
    shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), logpipe::Error>>,
}

impl Running {
    /// Runs `consumer`. Call it inside a runtime.
    pub fn start<B, S>(consumer: logpipe::Consumer<B, S>) -> Self
    where
        B: logpipe::backend::ConsumerBackend,
        S: logpipe::offsets::OffsetStore,
    {
        let health = logpipe::health::Health::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let name = consumer.group().to_owned();
        let consumer = consumer.with_health(health.register(&name));
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        Self {
            health,
            shutdown,
            task,
        }
    }

    /// Waits until the report says ready (or not), and returns its text.
    pub async fn wait_ready(&self, ready: bool) -> String {
        wait_until(
            &format!("ready is {ready}"),
            Duration::from_secs(60),
            || self.health.report().ready == ready,
        )
        .await;
        self.health.report().text
    }

    /// Stops the consumer (which stores its positions) and checks that it ended well.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the consumer stops on shutdown")
            .unwrap()
            .expect("the consumer stops without an error");
    }
}

/// Runs each scenario `fn(Setup)` as a test on each backend named (`embedded`, `kafka`,
/// `kinesis`: the constructors of [`Setup`](crate::ops::Setup)), in a module of that
/// name; a backend whose service is not running skips it (outside CI).
macro_rules! on_backends {
    ([] $($scenario:ident),* $(,)?) => {};
    ([$backend:ident $(, $rest:ident)*] $($scenario:ident),* $(,)?) => {
        mod $backend {
            $(#[test]
            fn $scenario() {
                if let Some(setup) = crate::ops::Setup::$backend() {
                    super::$scenario(setup);
                }
            })*
        }
        crate::support::on_backends!([$($rest),*] $($scenario),*);
    };
}
pub(crate) use on_backends;
