//! Interoperability with django-logpipe 1.6 on the real Kafka broker, both ways, in JSON
//! and MessagePack, with a default django-logpipe install (kafka-python and no optional
//! codec package) reading what a default logpipe producer writes at volume.
//!
//! librdkafka compresses a batch only when that makes it smaller, so a test that awaits
//! each send (one record a batch) never writes a compressed batch. These tests send
//! thousands of records at once, as services do, check on the broker's own log that
//! they went out in batches of hundreds, and only then let django-logpipe read them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use logpipe::backend::{Backend, StartFrom};
use logpipe::kafka::KafkaClient;
use logpipe::{Consumer, ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::django_peer::{Peer, Received};
use crate::kafka::{
    StoredBatch, WAIT, broker_blocking, consume, create_topics, settings, stored_batches,
};
use crate::support::{Running, runtime, service, unique, wait_until};

/// The peer's `person` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
struct PeerV1 {
    uuid: String,
    name: String,
}

/// The peer's `person` v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
struct PeerV2 {
    uuid: String,
    first_name: String,
    last_name: String,
    age: u32,
    score: f64,
    active: bool,
    tags: Vec<String>,
    nickname: Option<String>,
}

/// The n-th person both sides send: (version, key, message), on five keys.
fn interop_person(n: u32) -> (u64, String, serde_json::Value) {
    let uuid = format!("u-{}", n % 5);
    if n.is_multiple_of(2) {
        let person = PeerV1 {
            uuid: uuid.clone(),
            name: format!("Name {n} \u{e9}\u{2028}"),
        };
        (1, uuid, serde_json::to_value(person).unwrap())
    } else {
        let person = PeerV2 {
            uuid: uuid.clone(),
            first_name: "First".into(),
            last_name: format!("Last {n}"),
            age: n,
            score: f64::from(n) / 4.0,
            active: n.is_multiple_of(3),
            tags: vec!["a".into(), "\u{e9}".into(), "\u{1f600}".into()],
            nickname: (n % 4 == 1).then(|| format!("nick {n}")),
        };
        (2, uuid, serde_json::to_value(person).unwrap())
    }
}

/// django-logpipe's Kafka settings for a peer on `brokers` writing `format`; its consumer
/// keeps kafka-python's defaults but for the group it needs.
fn peer(brokers: &str, format: &str) -> Option<Peer> {
    Peer::new(&format!(
        r#"    "KAFKA_BOOTSTRAP_SERVERS": ["{brokers}"],
    "KAFKA_CONSUMER_KWARGS": {{"group_id": "{group}"}},
    "OFFSET_BACKEND": "logpipe.backend.kafka.KafkaOffsetStore",
    "PRODUCER_ID": "django",
    "DEFAULT_FORMAT": "{format}","#,
        group = unique("django"),
    ))
}

/// Sends `count` interop people to `topic` all at once through a logpipe producer on
/// `client` (each send started without waiting for the one before), and returns the
/// partition each key went to.
fn send_at_once(
    runtime: &tokio::runtime::Runtime,
    client: KafkaClient,
    topic: &str,
    format: &str,
    count: u32,
) -> BTreeMap<String, String> {
    let producer = Producer::new(client, topic)
        .with_producer_id("rust")
        .with_format(format.parse().unwrap());
    runtime.block_on(async {
        let mut sends = JoinSet::new();
        for n in 0..count {
            let producer = producer.clone();
            sends.spawn(async move {
                let (version, key, message) = interop_person(n);
                let delivery = if version == 1 {
                    let person: PeerV1 = serde_json::from_value(message).unwrap();
                    producer.send(&person).await.unwrap()
                } else {
                    let person: PeerV2 = serde_json::from_value(message).unwrap();
                    producer.send(&person).await.unwrap()
                };
                (key, delivery.partition.partition.to_string())
            });
        }
        let mut partitions = BTreeMap::new();
        while let Some(sent) = sends.join_next().await {
            let (key, partition) = sent.unwrap();
            let earlier = partitions.insert(key.clone(), partition.clone());
            assert!(
                earlier.is_none_or(|earlier| earlier == partition),
                "key {key} went to two partitions"
            );
        }
        partitions
    })
}

/// What the reading side must receive of `count` interop people from `producer`: each
/// from the partition its key was written to.
fn expected(count: u32, producer: &str, partitions: &BTreeMap<String, String>) -> Vec<Received> {
    (0..count)
        .map(|n| {
            let (version, key, message) = interop_person(n);
            Received {
                message_type: "person".to_owned(),
                version,
                producer: Some(producer.to_owned()),
                partition: partitions[&key].clone(),
                key: Some(key),
                message,
            }
        })
        .collect()
}

/// Records logpipe sends at once in the tests where django-logpipe reads them.
const VOLUME: u32 = 3_000;

/// logpipe sends `VOLUME` people at once with the producer `settings`, and
/// django-logpipe (with `packages` added to its default install) reads every one, each
/// key from the partition logpipe wrote it to. Returns the batches the broker stored.
fn logpipe_to_django(
    format: &str,
    producer_settings: &[(&str, &str)],
    packages: Option<&Path>,
) -> Option<Vec<StoredBatch>> {
    let (brokers, _broker) = broker_blocking()?;
    let peer = peer(&brokers, format)?;
    let peer = match packages {
        Some(dir) => peer.with_packages(dir),
        None => peer,
    };
    let topic = unique(&format!("to-django-{format}"));
    let runtime = runtime();
    runtime.block_on(create_topics(&brokers, &[&topic]));
    let mut client_settings = settings(&brokers);
    for (key, value) in producer_settings {
        client_settings
            .producer
            .insert((*key).to_owned(), (*value).to_owned());
    }
    let client = KafkaClient::connect(client_settings).unwrap();
    let partitions = send_at_once(&runtime, client, &topic, format, VOLUME);
    let batches = stored_batches(&topic);
    let largest = batches.iter().map(|b| b.records).max().unwrap_or(0);
    assert!(
        largest >= 100,
        "the records were not sent in batches of hundreds: {batches:?}"
    );

    let mut got = peer.consume(&topic, VOLUME as usize);
    let mut expected = expected(VOLUME, "rust", &partitions);
    got.sort_by_key(|r| r.message.to_string());
    expected.sort_by_key(|r| r.message.to_string());
    assert!(
        got == expected,
        "django-logpipe read {} messages ({format}), not the {} logpipe sent (or from other partitions)",
        got.len(),
        expected.len()
    );
    Some(batches)
}

/// With the default settings, a default django-logpipe install reads everything: the
/// batches are not compressed with a codec kafka-python needs an optional package for.
fn default_logpipe_to_default_django(format: &str) {
    let Some(batches) = logpipe_to_django(format, &[], None) else {
        return;
    };
    assert!(
        batches.iter().all(|b| b.codec == "none"),
        "batches compressed by default: {batches:?}"
    );
}

#[test]
fn kafka_a_default_django_logpipe_reads_json_sent_at_volume_by_a_default_producer() {
    default_logpipe_to_default_django("json");
}

#[test]
fn kafka_a_default_django_logpipe_reads_msgpack_sent_at_volume_by_a_default_producer() {
    default_logpipe_to_default_django("msgpack");
}

#[test]
fn kafka_lz4_compression_turned_on_is_read_by_django_logpipe_with_the_lz4_package() {
    let Some(lz4) = service("LOGPIPE_TEST_PYTHON_LZ4") else {
        return;
    };
    let Some(batches) = logpipe_to_django(
        "json",
        &[("compression.type", "lz4")],
        Some(Path::new(&lz4)),
    ) else {
        return;
    };
    assert!(
        batches.iter().any(|b| b.codec == "lz4"),
        "no batch was compressed with lz4: {batches:?}"
    );
}

/// Records django-logpipe sends (one at a time, as it does) in the other direction.
const FROM_DJANGO: u32 = 200;

/// django-logpipe sends people, and logpipe reads every field of every one; a key lands
/// on the partition logpipe's own producer picks for it (the same murmur2 partitioner).
fn django_to_logpipe(format: &str) {
    let Some((brokers, _broker)) = broker_blocking() else {
        return;
    };
    let Some(peer) = peer(&brokers, format) else {
        return;
    };
    let topic = unique(&format!("from-django-{format}"));
    let runtime = runtime();
    runtime.block_on(create_topics(&brokers, &[&topic]));
    let input: String = (0..FROM_DJANGO)
        .map(|n| {
            let (version, _, message) = interop_person(n);
            let line =
                serde_json::json!({"type": "person", "version": version, "message": message});
            format!("{line}\n")
        })
        .collect();
    peer.run(&["send", &topic], &input);

    let got = Arc::new(Mutex::new(Vec::<Received>::new()));
    let note = |got: &Arc<Mutex<Vec<Received>>>, context: &Context, message: serde_json::Value| {
        got.lock().unwrap().push(Received {
            message_type: context.message_type.to_string(),
            version: context.version,
            producer: context.producer.as_deref().map(str::to_owned),
            key: context.key_str().map(str::to_owned),
            partition: context.partition.partition.to_string(),
            message,
        });
    };
    let (v1, v2) = (Arc::clone(&got), Arc::clone(&got));
    let registry = Registry::builder()
        .handle(handler_fn(move |p: PeerV1, context: Context| {
            note(&v1, &context, serde_json::to_value(p).unwrap());
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .handle(handler_fn(move |p: PeerV2, context: Context| {
            note(&v2, &context, serde_json::to_value(p).unwrap());
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap();
    let client = KafkaClient::connect(settings(&brokers)).unwrap();
    runtime.block_on(async {
        let group = unique("from-django");
        let running = consume(&client, &group, &topic, client.offsets(), registry);
        wait_until("every message from django-logpipe is handled", WAIT, || {
            got.lock().unwrap().len() >= FROM_DJANGO as usize
        })
        .await;
        running.stop().await;
    });
    let mut got = got.lock().unwrap().clone();
    let django_partitions: BTreeMap<String, String> = got
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.partition.clone()))
        .collect();
    let mut expected = expected(FROM_DJANGO, "django", &django_partitions);
    got.sort_by_key(|r| r.message.to_string());
    expected.sort_by_key(|r| r.message.to_string());
    assert_eq!(got, expected, "messages from django-logpipe ({format})");

    let logpipe_partitions = send_at_once(&runtime, client, &topic, format, 5);
    assert_eq!(
        logpipe_partitions, django_partitions,
        "logpipe puts a key on another partition than django-logpipe"
    );
}

#[test]
fn kafka_django_logpipe_json_messages_are_read_by_logpipe() {
    django_to_logpipe("json");
}

#[test]
fn kafka_django_logpipe_msgpack_messages_are_read_by_logpipe() {
    django_to_logpipe("msgpack");
}

/// A consumer that skips its own records judges django-logpipe's by their `PRODUCER_ID`
/// as it judges its own producers': a django-logpipe service configured with this
/// service's id writes records it skips, one with another id writes records it handles.
#[test]
fn kafka_skip_own_records_skips_django_logpipe_records_of_its_own_producer_id_only() {
    let Some((brokers, _broker)) = broker_blocking() else {
        return;
    };
    let django_peer = |producer_id: &str| {
        Peer::new(&format!(
            r#"    "KAFKA_BOOTSTRAP_SERVERS": ["{brokers}"],
    "PRODUCER_ID": "{producer_id}","#
        ))
    };
    let (Some(own), Some(other)) = (django_peer("crm"), django_peer("django")) else {
        return;
    };
    let topic = unique("own-from-django");
    let runtime = runtime();
    runtime.block_on(create_topics(&brokers, &[&topic]));
    // One key: one partition, read in the order sent, so the own records come first.
    let lines = |from: u32| -> String {
        (from..from + 20)
            .map(|n| {
                let message = serde_json::json!({"uuid": "u-0", "name": format!("name {n}")});
                let line = serde_json::json!({"type": "person", "version": 1, "message": message});
                format!("{line}\n")
            })
            .collect()
    };
    own.run(&["send", &topic], &lines(0));
    other.run(&["send", &topic], &lines(100));

    let handled = Arc::new(Mutex::new(Vec::<(Option<String>, String)>::new()));
    let noted = Arc::clone(&handled);
    let registry = Registry::builder()
        .handle(handler_fn(move |p: PeerV1, context: Context| {
            let producer = context.producer.as_deref().map(str::to_owned);
            noted.lock().unwrap().push((producer, p.name));
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap();
    let client = KafkaClient::connect(settings(&brokers)).unwrap();
    runtime.block_on(async {
        let group = unique("own-from-django");
        let backend = client
            .open_consumer(&group, std::slice::from_ref(&topic), StartFrom::Earliest)
            .unwrap();
        let consumer = Consumer::new(backend, client.offsets(), registry, group.as_str())
            .with_options(ConsumerOptions {
                skip_own_records: true,
                ..ConsumerOptions::default()
            })
            .with_producer_id("crm");
        let running = Running::start(consumer);
        wait_until(
            "the records of django-logpipe's other producer are handled",
            WAIT,
            || handled.lock().unwrap().len() >= 20,
        )
        .await;
        running.stop().await;
    });
    let expected: Vec<(Option<String>, String)> = (100..120)
        .map(|n| (Some("django".to_owned()), format!("name {n}")))
        .collect();
    assert_eq!(*handled.lock().unwrap(), expected);
}
