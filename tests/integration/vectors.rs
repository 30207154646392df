//! The golden wire vectors made by django-logpipe 1.6.0.

use logpipe::envelope::{self, Format, Header};
use logpipe::registry::DispatchError;
use logpipe::{Context, Message, PartitionRef, Position, Producer, embedded::EmbeddedLog};
use serde::{Deserialize, Serialize};

use crate::support::{Seen, decode_vectors, encode_vectors, read_records, vectors_registry};

/// A typed `us-state`, keyed by its code as the vectors' producer keyed it.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "us-state", version = 1, key = "code")]
struct UsState {
    code: String,
    name: String,
}

/// A message type without a key field.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "ping", version = 1)]
struct Ping {}

#[test]
fn every_encode_vector_encodes_to_its_exact_bytes() {
    for vector in encode_vectors() {
        let format: Format = vector.format.parse().unwrap();
        let producer = (!vector.producer_id.is_empty()).then_some(vector.producer_id.as_str());
        let header = Header {
            message_type: &vector.message_type,
            version: vector.version,
            producer,
        };
        let mut deserializer = serde_json::Deserializer::from_str(vector.message.get());
        let message = serde_transcode::Transcoder::new(&mut deserializer);
        let bytes = envelope::encode(format, &header, &message).unwrap();
        assert_eq!(
            hex::encode(&bytes),
            vector.value_hex,
            "vector {}",
            vector.name
        );
    }
}

#[tokio::test]
async fn the_producer_writes_the_vectors_bytes_and_keys() {
    let states: Vec<_> = encode_vectors()
        .into_iter()
        .filter(|v| v.message_type == "us-state")
        .collect();
    assert!(
        states.len() >= 4,
        "expected json and msgpack us-state vectors"
    );
    for vector in states {
        let log = EmbeddedLog::open_in_memory().unwrap();
        let mut producer =
            Producer::new(log.clone(), "states").with_format(vector.format.parse().unwrap());
        if !vector.producer_id.is_empty() {
            producer = producer.with_producer_id(&vector.producer_id);
        }
        let state: UsState = serde_json::from_str(vector.message.get()).unwrap();
        producer.send(&state).await.unwrap();
        let records = read_records(&log, "states", 1).await;
        assert_eq!(
            hex::encode(&records[0].value),
            vector.value_hex,
            "vector {}",
            vector.name
        );
        assert_eq!(
            records[0].key.as_deref(),
            Some(vector.key.as_bytes()),
            "vector {}",
            vector.name
        );
    }
}

/// django-logpipe sends a message without a key with an empty key, which pins all such
/// messages to one Kafka partition; this project sends them keyless instead.
#[tokio::test]
async fn a_keyless_message_gets_the_vector_value_and_no_key() {
    let vector = encode_vectors()
        .into_iter()
        .find(|v| v.name == "empty-key")
        .unwrap();
    let log = EmbeddedLog::open_in_memory().unwrap();
    Producer::new(log.clone(), "pings")
        .send(&Ping {})
        .await
        .unwrap();
    let records = read_records(&log, "pings", 1).await;
    assert_eq!(hex::encode(&records[0].value), vector.value_hex);
    assert_eq!(records[0].key, None);
}

#[tokio::test]
async fn every_decode_vector_gets_the_outcome_django_logpipe_gave_it() {
    let seen = Seen::default();
    let registry = vectors_registry(&seen);
    for vector in decode_vectors() {
        seen.lock().unwrap().clear();
        let context = Context::new(
            "group",
            PartitionRef::new("stream", "0"),
            Position::Offset(0),
        );
        let result = registry.dispatch(&vector.value(), context).await;
        match vector.expect.outcome.as_str() {
            "ok" => {
                assert!(result.is_ok(), "vector {}: {result:?}", vector.name);
                let expected = (
                    vector.expect.message_type.clone().unwrap(),
                    vector.expect.version.unwrap(),
                    vector.expect.producer.clone(),
                    vector.expect.message.clone().unwrap(),
                );
                assert_eq!(
                    *seen.lock().unwrap(),
                    vec![expected],
                    "vector {}",
                    vector.name
                );
            }
            "error" => {
                let expected = vector.expected_skip().unwrap();
                match result {
                    Err(DispatchError::Skipped(reason)) => assert_eq!(
                        reason.label(),
                        expected,
                        "vector {}: {reason:?}",
                        vector.name
                    ),
                    other => panic!(
                        "vector {}: expected a {expected} skip, got {other:?}",
                        vector.name
                    ),
                }
                assert!(
                    seen.lock().unwrap().is_empty(),
                    "vector {}: no handler may run",
                    vector.name
                );
            }
            other => panic!("vector {}: unknown outcome {other}", vector.name),
        }
    }
}

#[test]
fn envelopes_with_versions_that_are_not_integers_are_unknown_versions() {
    let registry = vectors_registry(&Seen::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for version in ["\"1\"", "1.0", "true", "-1", "null", "[1]"] {
        let value = format!(r#"json:{{"type":"us-state","version":{version},"message":{{}}}}"#);
        let context = Context::new(
            "group",
            PartitionRef::new("stream", "0"),
            Position::Offset(0),
        );
        let result = runtime.block_on(registry.dispatch(value.as_bytes(), context));
        let Err(DispatchError::Skipped(reason)) = result else {
            panic!("{version}: {result:?}")
        };
        assert_eq!(reason.label(), "unknown_version", "{version}");
    }
}

/// The message is parsed once, by the handler's type; bad JSON inside it must still be
/// told apart from a message that merely does not fit.
#[tokio::test]
async fn bad_json_inside_a_message_is_malformed_whatever_the_type() {
    let registry = vectors_registry(&Seen::default());
    for (value, expected) in [
        (
            &br#"json:{"type":"us-state","version":1,"message":{"code":}}"#[..],
            "malformed",
        ),
        (
            br#"json:{"type":"person","version":1,"message":{"uuid":"1",}}"#,
            "malformed",
        ),
        (
            br#"json:{"type":"nope","version":1,"message":[1,]}"#,
            "malformed",
        ),
        (
            br#"json:{"type":"audit","version":1,"message":tru}"#,
            "malformed",
        ),
        (
            br#"json:{"type":"us-state","version":7,"message":{"code"}}"#,
            "malformed",
        ),
        (
            br#"json:{"type":"person","version":1,"message":{"uuid":1}}"#,
            "validation",
        ),
        (
            br#"json:{"type":"us-state","version":1,"message":[]}"#,
            "validation",
        ),
    ] {
        let context = Context::new(
            "group",
            PartitionRef::new("stream", "0"),
            Position::Offset(0),
        );
        let result = registry.dispatch(value, context).await;
        let Err(DispatchError::Skipped(reason)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(
            reason.label(),
            expected,
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}
