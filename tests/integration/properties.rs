//! Property tests of the envelope codec.

use logpipe::envelope::{self, Format, Header};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        // Characters Python escapes or that need care: line separators, controls, quotes.
        "[\u{2028}\u{2029}\u{0}-\u{1f}\"\\\\/é東🚀]{0,8}".prop_map(Value::String),
        // Text that looks like the end of an envelope, which a reader going backwards
        // from the end must not take for it.
        "(,\"producer\":\"[a-z]{0,3}\"\\}?|[ ,:}\"]){1,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode_in_both_formats(
        message in json_value(),
        message_type in any::<String>(),
        version in any::<u64>(),
        producer in proptest::option::of(any::<String>()),
        msgpack in any::<bool>(),
    ) {
        let format = if msgpack { Format::Msgpack } else { Format::Json };
        let header = Header { message_type: &message_type, version, producer: producer.as_deref() };
        let bytes = envelope::encode(format, &header, &message).unwrap();
        let decoded = envelope::decode(&bytes).unwrap();
        prop_assert_eq!(decoded.format, format);
        prop_assert_eq!(decoded.message_type.as_ref(), message_type.as_str());
        prop_assert_eq!(decoded.version, version);
        prop_assert_eq!(decoded.producer.as_deref(), producer.as_deref());
        prop_assert_eq!(decoded.body.deserialize::<Value>().unwrap(), message);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        prefix in prop_oneof![Just(&b""[..]), Just(&b"json:"[..]), Just(&b"msgpack:"[..])],
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let value = [prefix, &bytes[..]].concat();
        if let Ok(decoded) = envelope::decode(&value) {
            // Whatever decoded must also be usable without panicking.
            let _ = decoded.body.deserialize::<Value>();
            let _ = decoded.body.write_json(Vec::new());
        }
    }

    #[test]
    fn decoding_mutated_envelopes_never_panics(
        message in json_value(),
        msgpack in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let format = if msgpack { Format::Msgpack } else { Format::Json };
        let header = Header { message_type: "t", version: 1, producer: None };
        let mut bytes = envelope::encode(format, &header, &message).unwrap();
        for (index, byte) in flips {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(decoded) = envelope::decode(&bytes) {
            let _ = decoded.body.deserialize::<Value>();
            let _ = decoded.body.write_json(Vec::new());
        }
    }
}

/// A message type that accepts any JSON value, to compare what arrives.
#[derive(Debug, serde::Serialize, serde::Deserialize, logpipe::Message)]
#[logpipe(type = "any", version = 7)]
struct AnyValue(Value);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Envelopes in the usual key order take a one-pass path (with or without
    /// whitespace); reordered keys and extra keys take the full one. Both must hand the
    /// handler the same message and producer.
    #[test]
    fn every_envelope_shape_reaches_the_handler_unchanged(
        message in json_value(),
        producer in proptest::option::of("[a-z0-9\\\\\"]{0,6}"),
        shape in 0..5u8,
    ) {
        use std::sync::{Arc, Mutex};
        use logpipe::{Context, PartitionRef, Position, Registry, handler_fn};

        let mut envelope = serde_json::Map::new();
        envelope.insert("type".into(), Value::from("any"));
        envelope.insert("version".into(), Value::from(7));
        envelope.insert("message".into(), message.clone());
        if let Some(producer) = &producer {
            envelope.insert("producer".into(), Value::from(producer.as_str()));
        }
        let header = Header { message_type: "any", version: 7, producer: producer.as_deref() };
        let value = match shape {
            0 => envelope::encode(Format::Json, &header, &message).unwrap(),
            1 => format!("json:{}", serde_json::to_string_pretty(&Value::Object(envelope)).unwrap()).into_bytes(),
            2 => {
                envelope.insert("trace".into(), Value::from("x"));
                format!("json:{}", Value::Object(envelope)).into_bytes()
            }
            3 => {
                // The usual key order, with whitespace around everything.
                let producer = producer
                    .as_ref()
                    .map(|producer| format!(" , \"producer\" : {}", Value::from(producer.as_str())))
                    .unwrap_or_default();
                format!("json:{{ \"type\" : \"any\" , \"version\" : 7 , \"message\" : {message}{producer} }} ").into_bytes()
            }
            _ => envelope::encode(Format::Msgpack, &header, &message).unwrap(),
        };
        let seen = Arc::new(Mutex::new(None));
        let store = Arc::clone(&seen);
        let registry = Registry::builder()
            .handle(handler_fn(move |any: AnyValue, context: Context| {
                *store.lock().unwrap() = Some((any.0, context.producer.as_deref().map(str::to_owned)));
                async { Ok::<_, std::convert::Infallible>(()) }
            }))
            .build()
            .unwrap();
        let context = Context::new("g", PartitionRef::new("s", "0"), Position::Offset(0));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(registry.dispatch(&value, context)).unwrap();
        prop_assert_eq!(seen.lock().unwrap().take(), Some((message, producer)));
    }
}
