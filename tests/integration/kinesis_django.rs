//! Interoperability with django-logpipe 1.6's Kinesis backend, both ways, in JSON and
//! MessagePack, on kinesis-mock. django-logpipe runs in the test virtualenv
//! (`LOGPIPE_TEST_PYTHON`) with the peer script `tests/django_logpipe/peer.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::envelope::Format;
use logpipe::kinesis::{KinesisBackend, KinesisOptions};
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{Consumer, ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use logpipe_kinesis::SdkApi;
use logpipe_kinesis::sdk;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::kinesis::{first_shard_iterator, fixture};
use crate::support::{service, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// The peer script's `person` v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
struct Person {
    uuid: String,
    first_name: String,
    last_name: String,
    age: i64,
    score: f64,
    active: bool,
    tags: Vec<String>,
    nickname: Option<String>,
}

fn people() -> Vec<Person> {
    (0..12)
        .map(|n| Person {
            uuid: format!("6f1c2a4e-{n:04}"),
            first_name: ["Grace", "Zoë ☃", "line\u{2028}separator", " spaced "][n % 4].to_owned(),
            last_name: ["Hopper", "quote \" and \\", "Ünïcode", ""][n % 4].to_owned(),
            age: 20 + n as i64,
            score: n as f64 / 3.0 - 1.5,
            active: n % 2 == 0,
            tags: (0..n % 3).map(|t| format!("tag-{t}")).collect(),
            nickname: (n % 2 == 1).then(|| format!("nick {n}")),
        })
        .collect()
}

/// A Django settings module for django-logpipe's Kinesis backend, in `dir`.
fn write_settings(dir: &Path, format: Format) {
    let format = match format {
        Format::Json => "json",
        Format::Msgpack => "msgpack",
    };
    let settings = format!(
        r#"SECRET_KEY = "interop"
INSTALLED_APPS = ["logpipe"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
LOGPIPE = {{
    "PRODUCER_BACKEND": "logpipe.backend.kinesis.Producer",
    "CONSUMER_BACKEND": "logpipe.backend.kinesis.Consumer",
    "OFFSET_BACKEND": "logpipe.backend.kinesis.ModelOffsetStore",
    "KINESIS_REGION": "us-east-1",
    "KINESIS_FETCH_LIMIT": 100,
    "DEFAULT_FORMAT": "{format}",
    "PRODUCER_ID": "django-crm",
}}
"#
    );
    std::fs::write(dir.join("interop_settings.py"), settings).unwrap();
}

/// Runs the peer script with `args`, feeding it `stdin`, and returns its output.
async fn python(python: &str, endpoint: &str, dir: &Path, args: &[&str], stdin: String) -> Output {
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/django_logpipe/peer.py");
    let mut command = Command::new(python);
    command
        .arg(peer)
        .args(args)
        .env("DJANGO_SETTINGS_MODULE", "interop_settings")
        .env("PYTHONPATH", dir)
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        // The script gives up after its own deadline, so this wait ends.
        child.wait_with_output().unwrap()
    });
    let output = tokio::time::timeout(WAIT * 2, run).await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn backend(endpoint: &str) -> KinesisBackend {
    let options = KinesisOptions {
        poll_interval_ms: 100,
        ..KinesisOptions::default()
    };
    let api = Arc::new(SdkApi::from_client(crate::kinesis::client(endpoint)));
    KinesisBackend::with_api(api, "us-east-1", options).unwrap()
}

/// The first record value of `stream`'s first shard, as raw bytes.
async fn first_value(client: &sdk::Client, stream: &str) -> Vec<u8> {
    let iterator = first_shard_iterator(client, stream).await;
    let page = client
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    page.records()[0].data().as_ref().to_vec()
}

/// A line the peer prints for each message django-logpipe handed it.
#[derive(Debug, Deserialize)]
struct Received {
    #[serde(rename = "type")]
    message_type: String,
    version: u64,
    producer: Option<String>,
    key: String,
    message: Person,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_logpipe_reads_every_field_logpipe_writes_in_json_and_msgpack() {
    let Some(python_path) = service("LOGPIPE_TEST_PYTHON") else {
        return;
    };
    for format in [Format::Json, Format::Msgpack] {
        let Some((endpoint, client, stream)) = fixture("to-django", 1).await else {
            return;
        };
        let producer = Producer::new(backend(&endpoint), stream.as_str())
            .with_format(format)
            .with_producer_id("rust-svc");
        let sent = people();
        for person in &sent {
            producer.send(person).await.unwrap();
        }
        let prefix: &[u8] = if format == Format::Json {
            b"json:"
        } else {
            b"msgpack:"
        };
        assert!(first_value(&client, &stream).await.starts_with(prefix));

        let dir = tempfile::tempdir().unwrap();
        write_settings(dir.path(), format);
        let count = sent.len().to_string();
        let output = python(
            &python_path,
            &endpoint,
            dir.path(),
            &["consume", &stream, "--count", &count, "--timeout", "60"],
            String::new(),
        )
        .await;
        let stdout = String::from_utf8(output.stdout).unwrap();
        // Every line but the last (the count and time) is a message.
        let lines: Vec<&str> = stdout.lines().collect();
        let received: Vec<Received> = lines[..lines.len() - 1]
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(received.len(), sent.len(), "{format:?}");
        for (person, got) in sent.iter().zip(&received) {
            assert_eq!(&got.message, person, "{format:?}");
            assert_eq!(got.key, person.uuid, "{format:?}");
            assert_eq!(got.producer.as_deref(), Some("rust-svc"));
            assert_eq!((got.message_type.as_str(), got.version), ("person", 2));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_reads_every_field_django_logpipe_writes_in_json_and_msgpack() {
    let Some(python_path) = service("LOGPIPE_TEST_PYTHON") else {
        return;
    };
    for format in [Format::Json, Format::Msgpack] {
        let Some((endpoint, client, stream)) = fixture("from-django", 1).await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        write_settings(dir.path(), format);
        let lines: String = people()
            .iter()
            .map(|person| {
                let line = serde_json::json!({"type": "person", "version": 2, "message": person});
                line.to_string() + "\n"
            })
            .collect();
        python(
            &python_path,
            &endpoint,
            dir.path(),
            &["send", &stream],
            lines,
        )
        .await;
        let prefix: &[u8] = if format == Format::Json {
            b"json:"
        } else {
            b"msgpack:"
        };
        assert!(
            first_value(&client, &stream).await.starts_with(prefix),
            "{format:?}"
        );

        type Seen = Arc<Mutex<Vec<(Person, Option<Vec<u8>>, Option<String>, &'static str, u64)>>>;
        let seen = Seen::default();
        let handled = Arc::clone(&seen);
        let registry = Registry::builder()
            .handle(handler_fn(move |person: Person, context: Context| {
                handled.lock().unwrap().push((
                    person,
                    context.key.clone(),
                    context.producer.as_deref().map(str::to_owned),
                    context.message_type,
                    context.version,
                ));
                async { Ok::<_, std::convert::Infallible>(()) }
            }))
            .build()
            .unwrap();
        let backend = backend(&endpoint);
        let consumer = Consumer::new(
            backend.consumer([stream.as_str()]),
            MemoryOffsetStore::new(),
            registry,
            "g",
        )
        .with_options(ConsumerOptions::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        let expected = people();
        wait_until("every person is handled", WAIT, || {
            seen.lock().unwrap().len() >= expected.len()
        })
        .await;
        shutdown.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), expected.len(), "{format:?}");
        for ((person, key, producer, message_type, version), sent) in seen.iter().zip(&expected) {
            assert_eq!(person, sent, "{format:?}");
            assert_eq!(key.as_deref(), Some(sent.uuid.as_bytes()));
            assert_eq!(producer.as_deref(), Some("django-crm"));
            assert_eq!((*message_type, *version), ("person", 2));
        }
    }
}
