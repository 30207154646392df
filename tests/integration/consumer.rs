//! The consumer on the embedded log: skipping, retrying, strict mode, dead-lettering,
//! batched positions, restarts and the minimum message lag.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use logpipe::backend::{
    BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, OutgoingRecord, PartitionRef,
    ProducerBackend, Record,
};
use logpipe::consumer::{BadRecordPolicy, HandlerErrorPolicy};
use logpipe::dead_letter::{DeadLetter, HEADER_REASON};
use logpipe::embedded::EmbeddedLog;
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{
    BoxError, Bytes, Consumer, ConsumerOptions, Context, Error, Message, Position, Producer,
    Registry, RegistryError, handler_fn,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::support::{Running, Seen, decode_vectors, read_records, vectors_registry, wait_until};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
struct PersonV1 {
    uuid: String,
}

fn person(uuid: &str) -> PersonV1 {
    PersonV1 {
        uuid: uuid.to_owned(),
    }
}

type Handled = Arc<Mutex<Vec<(String, i64)>>>;

/// A registry whose person handler records (uuid, offset), failing for `fail_uuid`
/// while `failures_left` is above zero.
fn people_registry(
    handled: &Handled,
    fail_uuid: Option<&str>,
    failures_left: Arc<AtomicU32>,
) -> Registry {
    let handled = Arc::clone(handled);
    let fail_uuid = fail_uuid.map(str::to_owned);
    Registry::builder()
        .handle(handler_fn(move |person: PersonV1, context: Context| {
            let should_fail = fail_uuid.as_deref() == Some(person.uuid.as_str())
                && failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if !should_fail {
                let Position::Offset(offset) = context.position else {
                    unreachable!()
                };
                handled.lock().unwrap().push((person.uuid, offset));
            }
            async move {
                if should_fail {
                    Err::<(), BoxError>("database unavailable".into())
                } else {
                    Ok(())
                }
            }
        }))
        .ignore("audit")
        .build()
        .unwrap()
}

fn always_ok(handled: &Handled) -> Registry {
    people_registry(handled, None, Arc::new(AtomicU32::new(0)))
}

/// A one-partition stream in a new in-memory log, so positions are easy to follow.
async fn log_with_stream(stream: &str) -> EmbeddedLog {
    let log = EmbeddedLog::open_in_memory().unwrap();
    log.ensure_stream(stream, 1).await.unwrap();
    log
}

async fn send_raw(log: &EmbeddedLog, stream: &str, value: &[u8]) {
    let record = OutgoingRecord {
        stream: stream.into(),
        key: None,
        value: value.to_vec(),
        headers: vec![],
    };
    log.send(record).await.unwrap();
}

fn fast_options() -> ConsumerOptions {
    ConsumerOptions {
        retry_backoff_ms: 1,
        commit_interval_ms: 10,
        ..ConsumerOptions::default()
    }
}

/// Runs `consumer` until `condition` holds, then shuts it down and returns how it ended.
async fn run_until<B, S>(
    consumer: Consumer<B, S>,
    what: &str,
    condition: impl FnMut() -> bool,
) -> Result<(), Error>
where
    B: logpipe::backend::ConsumerBackend,
    S: logpipe::offsets::OffsetStore,
{
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    wait_until(what, WAIT, condition).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the consumer stops on shutdown")
        .unwrap()
}

fn stored_offset(store: &MemoryOffsetStore, group: &str) -> Option<i64> {
    match store.positions(group).as_slice() {
        [] => None,
        [(_, Position::Offset(offset))] => Some(*offset),
        other => panic!("unexpected positions {other:?}"),
    }
}

fn counter(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    label: (&str, &str),
) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == name && key.key().labels().any(|l| (l.key(), l.value()) == label)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

#[test]
fn every_vector_record_is_handled_or_skipped_counted_and_its_position_stored() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let vectors = decode_vectors();
    let last = i64::try_from(vectors.len() - 1).unwrap();
    let seen = Seen::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let log = log_with_stream("vectors").await;
            for vector in &vectors {
                send_raw(&log, "vectors", &vector.value()).await;
            }
            let store = MemoryOffsetStore::new();
            let consumer = Consumer::new(
                log.consumer(["vectors"]),
                store.clone(),
                vectors_registry(&seen),
                "g",
            )
            .with_options(fast_options());
            run_until(consumer, "the last record's position is stored", || {
                stored_offset(&store, "g") == Some(last)
            })
            .await
            .unwrap();
            store
        })
    });
    assert_eq!(store.positions("g").len(), 1);
    let ok = vectors.iter().filter(|v| v.expect.outcome == "ok").count();
    assert_eq!(
        seen.lock().unwrap().len(),
        ok,
        "every ok vector is handled once"
    );
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(
            &snapshot,
            "logpipe_records_handled_total",
            ("type", "us-state")
        ),
        ok as u64
    );
    for reason in [
        "malformed",
        "invalid_envelope",
        "unknown_type",
        "unknown_version",
        "ignored",
        "validation",
    ] {
        let expected = vectors
            .iter()
            .filter(|v| v.expected_skip() == Some(reason))
            .count() as u64;
        let counted = counter(
            &snapshot,
            "logpipe_records_skipped_total",
            ("reason", reason),
        );
        assert_eq!(counted, expected, "records skipped as {reason}");
    }
}

#[tokio::test]
async fn a_failing_handler_is_retried_then_stops_and_its_record_is_handled_on_the_next_run() {
    let log = log_with_stream("people").await;
    let producer = Producer::new(log.clone(), "people");
    for uuid in ["a", "b", "c"] {
        producer.send(&person(uuid)).await.unwrap();
    }
    let store = MemoryOffsetStore::new();
    let handled = Handled::default();
    let options = ConsumerOptions {
        max_retries: 2,
        ..fast_options()
    };

    let failing = people_registry(&handled, Some("b"), Arc::new(AtomicU32::new(u32::MAX)));
    let consumer = Consumer::new(log.consumer(["people"]), store.clone(), failing, "g")
        .with_options(options.clone());
    let outcome = tokio::time::timeout(WAIT, consumer.run(CancellationToken::new()))
        .await
        .unwrap();
    match &outcome {
        Err(Error::Handler {
            position,
            attempts,
            message_type,
            ..
        }) => {
            assert_eq!(
                (position, *attempts, *message_type),
                (&Position::Offset(1), 3, "person")
            );
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    let source = std::error::Error::source(outcome.as_ref().unwrap_err())
        .unwrap()
        .to_string();
    assert_eq!(source, "database unavailable");
    assert_eq!(*handled.lock().unwrap(), vec![("a".to_owned(), 0)]);
    assert_eq!(
        stored_offset(&store, "g"),
        Some(0),
        "the failed record's position is not stored"
    );

    let consumer = Consumer::new(
        log.consumer(["people"]),
        store.clone(),
        always_ok(&handled),
        "g",
    )
    .with_options(options);
    run_until(consumer, "c is handled", || {
        handled.lock().unwrap().len() == 3
    })
    .await
    .unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        vec![
            ("a".to_owned(), 0),
            ("b".to_owned(), 1),
            ("c".to_owned(), 2)
        ]
    );
    assert_eq!(stored_offset(&store, "g"), Some(2));
}

#[tokio::test]
async fn a_handler_that_recovers_within_its_retries_handles_the_record_once() {
    let log = log_with_stream("people").await;
    Producer::new(log.clone(), "people")
        .send(&person("a"))
        .await
        .unwrap();
    let (store, handled) = (MemoryOffsetStore::new(), Handled::default());
    let registry = people_registry(&handled, Some("a"), Arc::new(AtomicU32::new(2)));
    let consumer = Consumer::new(log.consumer(["people"]), store.clone(), registry, "g")
        .with_options(ConsumerOptions {
            max_retries: 2,
            ..fast_options()
        });
    run_until(consumer, "a is handled", || {
        !handled.lock().unwrap().is_empty()
    })
    .await
    .unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![("a".to_owned(), 0)]);
    assert_eq!(stored_offset(&store, "g"), Some(0));
}

#[tokio::test]
async fn strict_mode_returns_a_bad_record_as_an_error_and_does_not_store_its_position() {
    let log = log_with_stream("people").await;
    Producer::new(log.clone(), "people")
        .send(&person("a"))
        .await
        .unwrap();
    send_raw(
        &log,
        "people",
        br#"json:{"type":"audit","version":1,"message":{}}"#,
    )
    .await;
    send_raw(&log, "people", b"json:{not json").await;
    Producer::new(log.clone(), "people")
        .send(&person("never"))
        .await
        .unwrap();
    let (store, handled) = (MemoryOffsetStore::new(), Handled::default());
    let consumer = Consumer::new(
        log.consumer(["people"]),
        store.clone(),
        always_ok(&handled),
        "g",
    )
    .with_options(ConsumerOptions {
        strict: true,
        ..fast_options()
    });
    let outcome = tokio::time::timeout(WAIT, consumer.run(CancellationToken::new()))
        .await
        .unwrap();
    match outcome {
        Err(Error::Skipped {
            position, reason, ..
        }) => {
            assert_eq!(
                (position, reason.label()),
                (Position::Offset(2), "malformed")
            );
        }
        other => panic!("expected a strict-mode error, got {other:?}"),
    }
    assert_eq!(*handled.lock().unwrap(), vec![("a".to_owned(), 0)]);
    // The ignored type before it is still skipped; the malformed record is not passed.
    assert_eq!(stored_offset(&store, "g"), Some(1));
}

/// A message type whose decoding panics on the name `"boom"` (a bug in a hand-written
/// `Deserialize`).
#[derive(Debug, Serialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
struct Fragile {
    uuid: String,
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let person = PersonV1::deserialize(deserializer)?;
        assert_ne!(person.uuid, "boom", "cannot decode boom");
        Ok(Self { uuid: person.uuid })
    }
}

#[tokio::test]
async fn a_panic_while_decoding_a_message_is_a_handler_failure_retried_then_dead_lettered() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let log = log_with_stream("fragile").await;
    let producer = Producer::new(log.clone(), "fragile");
    for uuid in ["a", "boom", "c"] {
        producer.send(&person(uuid)).await.unwrap();
    }
    let handled = Handled::default();
    let seen = Arc::clone(&handled);
    let registry = Registry::builder()
        .handle(handler_fn(move |person: Fragile, context: Context| {
            let Position::Offset(offset) = context.position else {
                unreachable!()
            };
            seen.lock().unwrap().push((person.uuid, offset));
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap();
    let store = MemoryOffsetStore::new();
    let options = ConsumerOptions {
        max_retries: 2,
        on_handler_error: HandlerErrorPolicy::DeadLetter,
        ..fast_options()
    };
    let consumer = Consumer::new(log.consumer(["fragile"]), store.clone(), registry, "g")
        .with_options(options)
        .with_dead_letter(DeadLetter::new(log.clone(), "fragile.dead"));
    run_until(consumer, "all positions are stored", || {
        stored_offset(&store, "g") == Some(2)
    })
    .await
    .unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        vec![("a".to_owned(), 0), ("c".to_owned(), 2)]
    );
    let dead = read_records(&log, "fragile.dead", 1).await;
    let reason = dead[0].headers.iter().find(|h| h.name == HEADER_REASON);
    assert_eq!(reason.map(|h| h.value.as_slice()), Some(&b"panic"[..]));
    let snapshot = snapshotter.snapshot().into_vec();
    let stream = ("stream", "fragile");
    assert_eq!(
        counter(&snapshot, "logpipe_handler_panics_total", stream),
        3
    );
    assert_eq!(
        counter(&snapshot, "logpipe_handler_retries_total", stream),
        2
    );
    assert_eq!(
        counter(&snapshot, "logpipe_handler_failures_total", stream),
        1
    );
}

/// An option that needs what the consumer was not given fails at start, naming its key:
/// a dead-letter policy without a dead-letter stream, skipping own records without a
/// producer id.
#[tokio::test]
async fn an_option_missing_what_it_needs_fails_at_start_naming_the_key() {
    let cases = [
        (
            ConsumerOptions {
                on_bad_record: BadRecordPolicy::DeadLetter,
                ..fast_options()
            },
            "consumer.dead_letter_stream",
        ),
        (
            ConsumerOptions {
                skip_own_records: true,
                ..fast_options()
            },
            "consumer.skip_own_records",
        ),
    ];
    for (options, key) in cases {
        let log = log_with_stream("people").await;
        let consumer = Consumer::new(
            log.consumer(["people"]),
            MemoryOffsetStore::new(),
            always_ok(&Handled::default()),
            "g",
        )
        .with_options(options);
        let err = consumer.run(CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[tokio::test]
async fn own_records_are_skipped_and_counted_and_never_dead_lettered_or_stopping() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let log = log_with_stream("people").await;
    let own = Producer::new(log.clone(), "people").with_producer_id("crm");
    let other = Producer::new(log.clone(), "people").with_producer_id("billing");
    let anonymous = Producer::new(log.clone(), "people");
    own.send(&person("own-1")).await.unwrap();
    other.send(&person("billing-1")).await.unwrap();
    own.send(&person("own-2")).await.unwrap();
    anonymous.send(&person("anonymous")).await.unwrap();
    own.send(&person("own-3")).await.unwrap();
    let handled = Handled::default();
    let store = MemoryOffsetStore::new();
    let options = ConsumerOptions {
        skip_own_records: true,
        strict: true,
        on_bad_record: BadRecordPolicy::DeadLetter,
        ..fast_options()
    };
    let consumer = Consumer::new(
        log.consumer(["people"]),
        store.clone(),
        always_ok(&handled),
        "g",
    )
    .with_options(options)
    .with_producer_id("crm")
    .with_dead_letter(DeadLetter::new(log.clone(), "people.dead"));
    run_until(consumer, "every position is stored", || {
        stored_offset(&store, "g") == Some(4)
    })
    .await
    .unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        vec![("billing-1".to_owned(), 1), ("anonymous".to_owned(), 3)]
    );
    let snapshot = snapshotter.snapshot().into_vec();
    let skipped: Vec<_> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "logpipe_records_skipped_total")
        .map(|(key, .., value)| {
            let reason = key.key().labels().find(|l| l.key() == "reason").unwrap();
            let DebugValue::Counter(n) = value else {
                panic!("not a counter: {value:?}")
            };
            (reason.value().to_owned(), *n)
        })
        .collect();
    assert_eq!(skipped, vec![("own".to_owned(), 3)]);
    let streams = logpipe::admin::Admin::list_streams(&log).await.unwrap();
    assert_eq!(streams, vec!["people"], "own records are not dead-lettered");
}

#[tokio::test]
async fn positions_are_stored_every_batch_and_on_shutdown() {
    let log = log_with_stream("people").await;
    let producer = Producer::new(log.clone(), "people");
    for n in 0..25 {
        producer.send(&person(&n.to_string())).await.unwrap();
    }
    let (store, handled) = (MemoryOffsetStore::new(), Handled::default());
    let options = ConsumerOptions {
        commit_every: 10,
        commit_interval_ms: 3_600_000,
        ..fast_options()
    };
    let consumer = Consumer::new(
        log.consumer(["people"]),
        store.clone(),
        always_ok(&handled),
        "g",
    )
    .with_options(options);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    wait_until("25 records are handled", WAIT, || {
        handled.lock().unwrap().len() == 25
    })
    .await;
    assert_eq!(
        stored_offset(&store, "g"),
        Some(19),
        "two full batches stored, the rest pending"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        stored_offset(&store, "g"),
        Some(24),
        "the rest is stored on shutdown"
    );
}

#[tokio::test]
async fn records_younger_than_the_minimum_lag_wait_for_it() {
    let log = log_with_stream("people").await;
    let handled_at = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&handled_at);
    let registry = Registry::builder()
        .handle(handler_fn(move |_: PersonV1, context: Context| {
            seen.lock()
                .unwrap()
                .push((context.timestamp.unwrap(), SystemTime::now()));
            async { Ok::<_, BoxError>(()) }
        }))
        .build()
        .unwrap();
    let consumer = Consumer::new(
        log.consumer(["people"]),
        MemoryOffsetStore::new(),
        registry,
        "g",
    )
    .with_options(ConsumerOptions {
        min_message_lag_ms: 300,
        ..fast_options()
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    let producer = Producer::new(log.clone(), "people");
    for n in 0..3 {
        producer.send(&person(&n.to_string())).await.unwrap();
    }
    wait_until("3 records are handled", WAIT, || {
        handled_at.lock().unwrap().len() == 3
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    for (written, handled) in handled_at.lock().unwrap().iter() {
        let lag = handled.duration_since(*written).unwrap();
        assert!(
            lag >= Duration::from_millis(300),
            "handled {lag:?} after it was written"
        );
    }
}

type Scripted = Result<ConsumerEvent, BackendError>;

/// A backend that hands out the events a test sends it, then waits.
struct ScriptedBackend(tokio::sync::mpsc::UnboundedReceiver<Scripted>);

impl ConsumerBackend for ScriptedBackend {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        match self.0.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    async fn seek(&mut self, _: &PartitionRef, _: Option<&Position>) -> Result<(), BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn failing_reads_make_a_consumer_stalled_until_a_read_succeeds() {
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let handled = Handled::default();
    let consumer = Consumer::new(
        ScriptedBackend(received),
        MemoryOffsetStore::new(),
        always_ok(&handled),
        "people",
    )
    // Stalled as soon as reads fail; how long they may fail first is the health
    // module's own test.
    .with_options(ConsumerOptions {
        stalled_after_ms: 0,
        ..fast_options()
    });
    let running = Running::start(consumer);
    let send = |event: Scripted| events.send(event).unwrap();
    send(Ok(ConsumerEvent::Assigned(vec![
        PartitionRef::new("people", "0"),
        PartitionRef::new("people", "1"),
    ])));
    assert_eq!(running.wait_ready(true).await, "people: running\n");

    // Errors that next_event returns, such as while the brokers cannot be reached.
    let down = BackendError::new(BackendErrorKind::Connection, "broker down").retriable();
    send(Err(down));
    let text = running.wait_ready(false).await;
    assert!(
        text.starts_with("people: stalled: reading has failed for ")
            && text.ends_with(" s: connection error: broker down\n"),
        "{text}"
    );
    // Any answer is a read that succeeded, records or none.
    send(Ok(ConsumerEvent::Records(Vec::new())));
    running.wait_ready(true).await;

    // Reads the backend retries by itself, such as a throttled Kinesis shard.
    send(Ok(ConsumerEvent::ReadsFailing {
        since: Instant::now(),
        reason: "shard 0 of people: throttled".to_owned(),
    }));
    let text = running.wait_ready(false).await;
    assert!(text.ends_with(": shard 0 of people: throttled\n"), "{text}");
    // Records of its other shards do not say that this one reads again.
    send(Ok(ConsumerEvent::Records(vec![Record {
        partition: PartitionRef::new("people", "1"),
        position: Position::Offset(0),
        key: None,
        value: Bytes::from_static(br#"json:{"type":"person","version":1,"message":{"uuid":"a"}}"#),
        headers: Vec::new(),
        timestamp: None,
    }])));
    wait_until("the record is handled", WAIT, || {
        handled.lock().unwrap().len() == 1
    })
    .await;
    assert!(!running.health.report().ready);
    send(Ok(ConsumerEvent::ReadsSucceed));
    assert_eq!(running.wait_ready(true).await, "people: running\n");
    let health = running.health.clone();
    running.stop().await;
    assert_eq!(health.report().text, "people: stopped\n");
}

/// A message whose type no producer of django-logpipe or logpipe could send.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = " ", version = 1)]
struct Blank {}

#[test]
fn a_registry_refuses_a_message_type_outside_the_rule_naming_it() {
    let refused = Registry::builder()
        .handle(handler_fn(|_: Blank, _: Context| async {
            Ok::<_, BoxError>(())
        }))
        .build()
        .unwrap_err();
    assert!(
        matches!(&refused, RegistryError::InvalidType(reason) if reason.contains(logpipe_core::MESSAGE_TYPE_RULE)),
        "{refused}"
    );
}

#[test]
fn a_registry_refuses_two_handlers_for_one_type_and_version() {
    let twice = Registry::builder()
        .handle(handler_fn(|_: PersonV1, _: Context| async {
            Ok::<_, BoxError>(())
        }))
        .handle(handler_fn(|_: PersonV1, _: Context| async {
            Ok::<_, BoxError>(())
        }))
        .build();
    assert_eq!(
        twice.unwrap_err(),
        RegistryError::DuplicateHandler {
            message_type: "person".into(),
            version: 1
        }
    );
    let both = Registry::builder()
        .handle(handler_fn(|_: PersonV1, _: Context| async {
            Ok::<_, BoxError>(())
        }))
        .ignore("person")
        .build();
    assert_eq!(
        both.unwrap_err(),
        RegistryError::HandledAndIgnored("person".into())
    );
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "thing", version = 1)]
struct ThingV1 {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "thing", version = 2)]
struct ThingV2 {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "thing", version = 3)]
struct ThingV3 {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "other", version = 2)]
struct OtherV2 {
    n: u32,
}

fn ok<M>(_: M, _: Context) -> std::future::Ready<Result<(), BoxError>> {
    std::future::ready(Ok(()))
}

#[test]
fn a_registry_refuses_upcasters_that_lead_nowhere_back_or_twice() {
    let nowhere = Registry::builder()
        .upcast(|v1: ThingV1| ThingV3 { n: v1.n })
        .handle(handler_fn(ok::<ThingV2>))
        .build();
    assert_eq!(
        nowhere.unwrap_err(),
        RegistryError::UpcasterWithoutHandler {
            message_type: "thing".into(),
            from: 1,
            to: 3
        }
    );
    let twice = Registry::builder()
        .upcast(|v1: ThingV1| ThingV2 { n: v1.n })
        .upcast(|v1: ThingV1| ThingV3 { n: v1.n })
        .handle(handler_fn(ok::<ThingV2>))
        .handle(handler_fn(ok::<ThingV3>))
        .build();
    assert_eq!(
        twice.unwrap_err(),
        RegistryError::DuplicateUpcaster {
            message_type: "thing".into(),
            version: 1
        }
    );
    let back = Registry::builder()
        .upcast(|v2: ThingV2| ThingV1 { n: v2.n })
        .handle(handler_fn(ok::<ThingV1>))
        .build();
    assert!(
        matches!(
            back,
            Err(RegistryError::UpcasterNotForward { from: 2, to: 1, .. })
        ),
        "{back:?}"
    );
    let across = Registry::builder()
        .upcast(|v1: ThingV1| OtherV2 { n: v1.n })
        .handle(handler_fn(ok::<OtherV2>))
        .build();
    assert!(
        matches!(&across, Err(RegistryError::UpcasterNotForward { to_type, .. }) if to_type == "other"),
        "{across:?}"
    );
    let ignored = Registry::builder()
        .upcast(|v1: ThingV1| ThingV2 { n: v1.n })
        .handle(handler_fn(ok::<ThingV2>))
        .ignore("thing")
        .build();
    assert_eq!(
        ignored.unwrap_err(),
        RegistryError::HandledAndIgnored("thing".into())
    );
}

#[test]
fn an_exact_handler_wins_over_an_upcaster_and_a_refusing_upcaster_is_a_validation_skip() {
    use logpipe::envelope::{Format, Header, encode};
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (by_v2, by_v3) = (Arc::clone(&handled), Arc::clone(&handled));
    let registry = Registry::builder()
        .try_upcast(|v1: ThingV1| match v1.n {
            0 => Err("zero is no thing"),
            n => Ok(ThingV2 { n }),
        })
        .upcast(|v2: ThingV2| ThingV3 { n: v2.n * 10 })
        .handle(handler_fn(move |v2: ThingV2, context: Context| {
            by_v2
                .lock()
                .unwrap()
                .push(("v2 handler", v2.n, context.version));
            ok((), context)
        }))
        .handle(handler_fn(move |v3: ThingV3, context: Context| {
            by_v3
                .lock()
                .unwrap()
                .push(("v3 handler", v3.n, context.version));
            ok((), context)
        }))
        .build()
        .unwrap();
    let record = |version: u64, n: u32| {
        let header = Header {
            message_type: "thing",
            version,
            producer: None,
        };
        encode(Format::Json, &header, &serde_json::json!({ "n": n })).unwrap()
    };
    let context = Context::new(
        "g",
        logpipe::PartitionRef::new("s", "0"),
        Position::Offset(0),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for value in [record(1, 4), record(2, 5), record(3, 6)] {
        runtime
            .block_on(registry.dispatch(&value, context.clone()))
            .unwrap();
    }
    // The v1 record goes to the v2 handler, which is exact for the version v1 is upcast
    // to; the v2 record to the v2 handler as it is; the v1 → v2 → v3 chain is not taken.
    assert_eq!(
        *handled.lock().unwrap(),
        [
            ("v2 handler", 4, 1),
            ("v2 handler", 5, 2),
            ("v3 handler", 6, 3)
        ]
    );
    let refused = runtime
        .block_on(registry.dispatch(&record(1, 0), context))
        .unwrap_err();
    let logpipe::registry::DispatchError::Skipped(reason) = refused else {
        panic!("not skipped: {refused:?}");
    };
    assert_eq!(reason.label(), "validation");
    assert!(
        logpipe::error_chain(&reason).contains("zero is no thing"),
        "{}",
        logpipe::error_chain(&reason)
    );
}

#[test]
fn a_record_an_upcaster_refuses_is_skipped_and_counted_as_a_validation_failure() {
    use logpipe::envelope::{Format, Header, encode};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let by_v2 = Arc::clone(&handled);
    let registry = Registry::builder()
        .try_upcast(|v1: ThingV1| match v1.n {
            0 => Err("zero is no thing"),
            n => Ok(ThingV2 { n }),
        })
        .handle(handler_fn(move |v2: ThingV2, context: Context| {
            by_v2.lock().unwrap().push(v2.n);
            ok((), context)
        }))
        .build()
        .unwrap();
    let header = Header {
        message_type: "thing",
        version: 1,
        producer: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let log = log_with_stream("things").await;
            for n in [0, 7] {
                let value = encode(Format::Json, &header, &serde_json::json!({ "n": n }));
                send_raw(&log, "things", &value.unwrap()).await;
            }
            let store = MemoryOffsetStore::new();
            let consumer = Consumer::new(log.consumer(["things"]), store.clone(), registry, "g")
                .with_options(fast_options());
            run_until(consumer, "both positions are stored", || {
                stored_offset(&store, "g") == Some(1)
            })
            .await
            .unwrap();
        });
    });
    assert_eq!(*handled.lock().unwrap(), [7]);
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(
            &snapshot,
            "logpipe_records_skipped_total",
            ("reason", "validation")
        ),
        1
    );
}

/// Claims the version of [`ThingV2`] with another Rust type.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "thing", version = 2)]
struct OtherThingV2 {
    n: u32,
}

#[test]
fn an_upcaster_must_make_the_rust_type_its_target_takes_and_may_feed_a_batch_handler() {
    let mismatch = Registry::builder()
        .upcast(|v1: ThingV1| OtherThingV2 { n: v1.n })
        .handle(handler_fn(ok::<ThingV2>))
        .build();
    assert!(
        matches!(
            &mismatch,
            Err(RegistryError::UpcasterTypeMismatch { from: 1, to: 2, made, expected, .. })
                if made.ends_with("OtherThingV2") && expected.ends_with("::ThingV2")
        ),
        "{mismatch:?}"
    );

    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&batches);
    let registry = Registry::builder()
        .upcast(|v1: ThingV1| ThingV2 { n: v1.n + 100 })
        .handle_batch(logpipe::batch_handler_fn(
            move |things: Vec<(ThingV2, Context)>| {
                let got: Vec<(u32, u64)> = things.iter().map(|(t, c)| (t.n, c.version)).collect();
                seen.lock().unwrap().push(got);
                async { Ok::<_, logpipe::BatchError>(()) }
            },
        ))
        .build()
        .unwrap();
    let value = logpipe::envelope::encode(
        logpipe::envelope::Format::Json,
        &logpipe::envelope::Header {
            message_type: "thing",
            version: 1,
            producer: None,
        },
        &serde_json::json!({ "n": 1 }),
    )
    .unwrap();
    let context = Context::new(
        "g",
        logpipe::PartitionRef::new("s", "0"),
        Position::Offset(0),
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(registry.dispatch(&value, context))
        .unwrap();
    assert_eq!(*batches.lock().unwrap(), [vec![(101, 1)]]);
}
