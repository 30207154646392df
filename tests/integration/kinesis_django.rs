//! Interoperability with django-logpipe 1.6's Kinesis backend, both ways, in JSON and
//! MessagePack, on kinesis-mock. django-logpipe runs in the test virtualenv
//! (`LOGPIPE_TEST_PYTHON`) with the peer script `tests/django_logpipe/peer.py`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::envelope::Format;
use logpipe::kinesis::{KinesisBackend, KinesisOptions};
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{Consumer, ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use logpipe_kinesis::SdkApi;
use logpipe_kinesis::sdk;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::django_peer::{Peer, Received};
use crate::kinesis::{first_shard_iterator, fixture};
use crate::support::wait_until;

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

/// `count` people, with fields that test the encoders' corners.
fn people(count: usize) -> Vec<Person> {
    (0..count)
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

/// django-logpipe's Kinesis backend on kinesis-mock at `endpoint`, writing `format`, or
/// `None` (skip) without the test virtualenv.
fn peer(endpoint: &str, format: Format) -> Option<Peer> {
    let format = match format {
        Format::Json => "json",
        Format::Msgpack => "msgpack",
    };
    let peer = Peer::new(&format!(
        r#"    "PRODUCER_BACKEND": "logpipe.backend.kinesis.Producer",
    "CONSUMER_BACKEND": "logpipe.backend.kinesis.Consumer",
    "OFFSET_BACKEND": "logpipe.backend.kinesis.ModelOffsetStore",
    "KINESIS_REGION": "us-east-1",
    "KINESIS_FETCH_LIMIT": 100,
    "DEFAULT_FORMAT": "{format}",
    "PRODUCER_ID": "django-crm","#
    ))?;
    // django-logpipe has no endpoint setting: boto3 takes it from the environment.
    Some(
        peer.env("AWS_ENDPOINT_URL_KINESIS", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    )
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

/// Records logpipe sends at once (each send started without waiting for the one before,
/// so that they go out in `PutRecords` calls of many records) for django-logpipe to read.
const VOLUME: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_logpipe_reads_every_field_logpipe_writes_at_volume_in_json_and_msgpack() {
    for format in [Format::Json, Format::Msgpack] {
        let Some((endpoint, client, stream)) = fixture("to-django", 1).await else {
            return;
        };
        let Some(peer) = peer(&endpoint, format) else {
            return;
        };
        let producer = Producer::new(backend(&endpoint), stream.as_str())
            .with_format(format)
            .with_producer_id("rust-svc");
        let sent = people(VOLUME);
        let mut sends = JoinSet::new();
        for person in sent.clone() {
            let producer = producer.clone();
            sends.spawn(async move { producer.send(&person).await.unwrap() });
        }
        while let Some(delivery) = sends.join_next().await {
            delivery.unwrap();
        }
        let prefix: &[u8] = if format == Format::Json {
            b"json:"
        } else {
            b"msgpack:"
        };
        assert!(first_value(&client, &stream).await.starts_with(prefix));

        let received = tokio::task::spawn_blocking(move || peer.consume(&stream, VOLUME))
            .await
            .unwrap();
        assert_eq!(received.len(), sent.len(), "{format:?}");
        let mut received: Vec<(Person, Received)> = received
            .into_iter()
            .map(|got| (serde_json::from_value(got.message.clone()).unwrap(), got))
            .collect();
        received.sort_by(|a, b| a.0.uuid.cmp(&b.0.uuid));
        for (person, (got, line)) in sent.iter().zip(&received) {
            assert_eq!(got, person, "{format:?}");
            assert_eq!(
                line.key.as_deref(),
                Some(person.uuid.as_str()),
                "{format:?}"
            );
            assert_eq!(line.producer.as_deref(), Some("rust-svc"));
            assert_eq!((line.message_type.as_str(), line.version), ("person", 2));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_reads_every_field_django_logpipe_writes_in_json_and_msgpack() {
    for format in [Format::Json, Format::Msgpack] {
        let Some((endpoint, client, stream)) = fixture("from-django", 1).await else {
            return;
        };
        let Some(peer) = peer(&endpoint, format) else {
            return;
        };
        let lines: String = people(12)
            .iter()
            .map(|person| {
                let line = serde_json::json!({"type": "person", "version": 2, "message": person});
                line.to_string() + "\n"
            })
            .collect();
        let send_to = stream.clone();
        tokio::task::spawn_blocking(move || peer.run(&["send", &send_to], &lines))
            .await
            .unwrap();
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
                    context.key.as_deref().map(<[u8]>::to_vec),
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
        let expected = people(12);
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
