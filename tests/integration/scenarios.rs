//! The consumer's scenarios, written once and run on every backend, with consumers built
//! as `run_consumers` builds them: the backend and the offset store a configuration
//! names ([`Setup`]). Scenarios only one backend has (Kafka rebalances, Kinesis
//! resharding and throttling) are in that backend's own module; what every backend does
//! underneath the consumer is its crate's conformance suite.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::admin::Admin;
use logpipe::any::{AnyBackend, AnyConsumer, AnyOffsetStore};
use logpipe::backend::{
    Backend, OutgoingRecord, PartitionRef, Position, ProducerBackend, RecordHeader,
};
use logpipe::consumer::{BadRecordPolicy, HandlerErrorPolicy};
use logpipe::dead_letter::{self, DeadLetter};
use logpipe::offsets::OffsetStore;
use logpipe::{Consumer, ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use serde::{Deserialize, Serialize};

use crate::ops::Setup;
use crate::support::{
    AnyState, Running, VectorPerson, decode_vectors, header, on_backends, read_from_start, runtime,
    unique, wait_until,
};

const WAIT: Duration = Duration::from_secs(90);

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
pub(crate) struct PersonV1 {
    pub(crate) uuid: String,
    pub(crate) seq: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
pub(crate) struct PersonV2 {
    pub(crate) uuid: String,
    pub(crate) seq: u32,
    pub(crate) name: String,
}

/// Keyless.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "order", version = 1)]
pub(crate) struct Order {
    pub(crate) seq: u32,
}

/// A message of the dead-letter scenario; its handler fails on `n == 13`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "item", version = 1, key = "key")]
struct Item {
    key: String,
    n: u32,
}

/// One handled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handled {
    pub(crate) message_type: &'static str,
    pub(crate) version: u64,
    pub(crate) key: Option<String>,
    pub(crate) seq: u32,
    pub(crate) partition: PartitionRef,
    pub(crate) position: Position,
}

pub(crate) type Seen = Arc<Mutex<Vec<Handled>>>;

fn note(seen: &Seen, context: &Context, seq: u32) {
    seen.lock().unwrap().push(Handled {
        message_type: context.message_type,
        version: context.version,
        key: context.key_str().map(str::to_owned),
        seq,
        partition: context.partition.clone(),
        position: context.position.clone(),
    });
}

/// Handlers of both person versions and of orders, noting each message in `seen`.
pub(crate) fn people_registry(seen: &Seen) -> Registry {
    let (v1, v2, orders) = (Arc::clone(seen), Arc::clone(seen), Arc::clone(seen));
    Registry::builder()
        .handle(handler_fn(move |p: PersonV1, context: Context| {
            note(&v1, &context, p.seq);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .handle(handler_fn(move |p: PersonV2, context: Context| {
            assert_eq!(p.name, format!("name {}", p.seq));
            note(&v2, &context, p.seq);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .handle(handler_fn(move |o: Order, context: Context| {
            note(&orders, &context, o.seq);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap()
}

/// The backend and offset store of a setup's configuration, opened as `run_consumers`
/// opens them, and a runtime to work in.
pub(crate) struct World {
    pub(crate) backend: AnyBackend,
    pub(crate) store: AnyOffsetStore,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl World {
    pub(crate) fn new(setup: &Setup) -> Self {
        let runtime = runtime();
        let config = setup.config();
        // The backend's clients start inside the runtime.
        let backend = runtime.block_on(async { setup.backend(&config) });
        let store = runtime
            .block_on(config.open_offset_store(&backend))
            .unwrap();
        Self {
            backend,
            store,
            runtime,
        }
    }

    /// The same configuration opened again: a new process, as far as the backend and
    /// the store can tell.
    pub(crate) fn reopened(setup: &Setup, world: Self) -> Self {
        drop(world);
        Self::new(setup)
    }

    /// A new stream of `partitions` partitions.
    pub(crate) fn stream(&self, what: &str, partitions: u32) -> String {
        let stream = unique(what);
        self.runtime
            .block_on(self.backend.create_stream(&stream, partitions))
            .unwrap();
        stream
    }

    /// A consumer of `stream` for `group` (stored as `run_consumers` stores it), with
    /// options that commit often.
    pub(crate) fn consumer(
        &self,
        group: &str,
        stream: &str,
        registry: Registry,
    ) -> Consumer<AnyConsumer, AnyOffsetStore> {
        let group = self.backend.position_group(group);
        let backend = self.backend.consumer(&group, &[stream.to_owned()]).unwrap();
        Consumer::new(backend, self.store.clone(), registry, group).with_options(ConsumerOptions {
            commit_every: 10,
            commit_interval_ms: 100,
            retry_backoff_ms: 1,
            ..ConsumerOptions::default()
        })
    }

    /// Runs `consumer` until `condition` holds, then stops it (storing its positions).
    pub(crate) fn run_until(
        &self,
        consumer: Consumer<AnyConsumer, AnyOffsetStore>,
        what: &str,
        condition: impl FnMut() -> bool,
    ) {
        self.runtime.block_on(async {
            let running = Running::start(consumer);
            wait_until(what, WAIT, condition).await;
            running.stop().await;
        });
    }

    /// Runs `consumer` while reading the first `count` records of its dead-letter
    /// stream `dead`, until `condition` holds; then stops it and returns them.
    pub(crate) fn run_reading_dead_letters(
        &self,
        consumer: Consumer<AnyConsumer, AnyOffsetStore>,
        dead: &str,
        count: usize,
        what: &str,
        condition: impl FnMut() -> bool,
    ) -> Vec<logpipe::Record> {
        self.runtime.block_on(async {
            let running = Running::start(consumer);
            let reader = self
                .backend
                .open_consumer(
                    &unique("dead-reader"),
                    &[dead.to_owned()],
                    logpipe::backend::StartFrom::Earliest,
                )
                .unwrap();
            let dead_letters = read_from_start(reader, count).await;
            wait_until(what, WAIT, condition).await;
            running.stop().await;
            dead_letters
        })
    }
}

/// Sends people `seqs` one after another, on six keys, even ones as version 1 and odd
/// ones as version 2.
pub(crate) async fn send_people<B: ProducerBackend>(
    producer: &Producer<B>,
    seqs: std::ops::Range<u32>,
) {
    for seq in seqs {
        let uuid = format!("key-{}", seq % 6);
        if seq.is_multiple_of(2) {
            producer.send(&PersonV1 { uuid, seq }).await.unwrap();
        } else {
            let name = format!("name {seq}");
            producer.send(&PersonV2 { uuid, seq, name }).await.unwrap();
        }
    }
}

/// People of two versions on six keys and keyless orders are each handled once, each
/// key's in the order sent and from one partition; keyless messages are spread over
/// partitions; once the consumer stopped, the store holds the last record handled of
/// every partition.
fn messages_of_several_types_round_trip_in_each_keys_order(setup: Setup) {
    let world = World::new(&setup);
    let stream = world.stream("round-trip", 3);
    let producer = Producer::new(world.backend.clone(), stream.as_str()).with_producer_id("tests");
    let keyless_partitions: BTreeSet<PartitionRef> = world.runtime.block_on(async {
        send_people(&producer, 0..60).await;
        let mut partitions = BTreeSet::new();
        for seq in 100..130 {
            partitions.insert(producer.send(&Order { seq }).await.unwrap().partition);
        }
        partitions
    });
    assert!(
        keyless_partitions.len() > 1,
        "keyless messages are spread over partitions, not pinned to one: {keyless_partitions:?}"
    );
    let seen = Seen::default();
    let group = unique("round-trip");
    world.run_until(
        world.consumer(&group, &stream, people_registry(&seen)),
        "90 messages are handled",
        || seen.lock().unwrap().len() >= 90,
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 90, "each message handled once");
    let count = |t: &str, v: u64| {
        seen.iter()
            .filter(|h| h.message_type == t && h.version == v)
            .count()
    };
    assert_eq!(
        (count("person", 1), count("person", 2), count("order", 1)),
        (30, 30, 30)
    );
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut partitions_of_key: HashMap<String, BTreeSet<PartitionRef>> = HashMap::new();
    for handled in seen.iter().filter(|h| h.message_type == "person") {
        let key = handled.key.clone().expect("people have keys");
        assert_eq!(key, format!("key-{}", handled.seq % 6));
        by_key.entry(key.clone()).or_default().push(handled.seq);
        partitions_of_key
            .entry(key)
            .or_default()
            .insert(handled.partition.clone());
    }
    assert_eq!(by_key.len(), 6);
    for (key, order) in &by_key {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            order, &sorted,
            "messages of {key} handled in the order sent"
        );
        assert_eq!(partitions_of_key[key].len(), 1, "one key, one partition");
    }
    if !setup.is_kinesis() {
        // Kinesis gives keyless records random partition keys, which readers see.
        assert!(
            seen.iter()
                .filter(|h| h.message_type == "order")
                .all(|h| h.key.is_none())
        );
    }
    let mut last: BTreeMap<PartitionRef, Position> = BTreeMap::new();
    for handled in &seen {
        last.insert(handled.partition.clone(), handled.position.clone());
    }
    let stored_group = world.backend.position_group(&group);
    for (partition, position) in last {
        let stored = world
            .runtime
            .block_on(world.store.load(&stored_group, &partition))
            .unwrap();
        assert_eq!(stored, Some(position), "the stored position of {partition}");
    }
}

/// A consumer started again, on a new connection and a store opened again, handles only
/// the records written since it stopped.
fn a_restarted_consumer_goes_on_after_its_stored_positions(setup: Setup) {
    let world = World::new(&setup);
    let stream = world.stream("restart", 3);
    let group = unique("restart");
    let producer = Producer::new(world.backend.clone(), stream.as_str());
    world.runtime.block_on(send_people(&producer, 0..30));
    let first = Seen::default();
    world.run_until(
        world.consumer(&group, &stream, people_registry(&first)),
        "the first 30 are handled",
        || first.lock().unwrap().len() >= 30,
    );
    assert_eq!(first.lock().unwrap().len(), 30);
    world.runtime.block_on(send_people(&producer, 30..60));
    drop(producer);

    let world = World::reopened(&setup, world);
    let second = Seen::default();
    world.run_until(
        world.consumer(&group, &stream, people_registry(&second)),
        "the next 30 are handled",
        || second.lock().unwrap().len() >= 30,
    );
    let mut handled: Vec<u32> = second.lock().unwrap().iter().map(|h| h.seq).collect();
    handled.sort_unstable();
    assert_eq!(
        handled,
        (30..60).collect::<Vec<_>>(),
        "only the records written since"
    );
}

/// Records that cannot be handled (the golden vectors' bad ones, written raw with a
/// header of their own) and one whose handler keeps failing go to the dead-letter
/// stream unchanged: key and value, and where the backend keeps headers their own
/// headers and headers naming their origin and why; the good records around them are
/// handled, none stalls its partition.
fn bad_records_and_failing_handlers_are_dead_lettered_with_their_origin(setup: Setup) {
    let world = World::new(&setup);
    let stream = world.stream("bad-records", 2);
    let dead = world.stream("bad-records-dead", 1);
    let vectors = decode_vectors();
    let mut expected: BTreeMap<Vec<u8>, (Option<Vec<u8>>, &'static str)> = BTreeMap::new();
    world.runtime.block_on(async {
        for (index, vector) in vectors.iter().enumerate() {
            let record = OutgoingRecord {
                stream: stream.as_str().into(),
                key: Some(format!("k{index}").into_bytes()),
                value: vector.value(),
                headers: vec![RecordHeader {
                    name: "trace".into(),
                    value: index.to_string().into_bytes(),
                }],
            };
            if let Some(reason) = vector.expected_skip().filter(|reason| *reason != "ignored") {
                expected.insert(record.value.clone(), (record.key.clone(), reason));
            }
            world.backend.send(record).await.unwrap();
        }
        let producer = Producer::new(world.backend.clone(), stream.as_str());
        for n in 0..20 {
            let item = Item {
                key: format!("i{n}"),
                n,
            };
            let delivery = producer.send(&item).await.unwrap();
            if n == 13 {
                let value = logpipe::envelope::encode(
                    logpipe::envelope::Format::Json,
                    &logpipe::envelope::Header {
                        message_type: "item",
                        version: 1,
                        producer: None,
                    },
                    &item,
                )
                .unwrap();
                expected.insert(value, (Some(b"i13".to_vec()), "handler_error"));
                drop(delivery);
            }
        }
    });
    assert!(expected.len() > 1);

    let items = Arc::new(Mutex::new(Vec::new()));
    let handled = Arc::clone(&items);
    let registry = Registry::builder()
        .handle(handler_fn(|_: AnyState, _: Context| async {
            Ok::<_, std::convert::Infallible>(())
        }))
        .handle(handler_fn(|_: VectorPerson, _: Context| async {
            Ok::<_, std::convert::Infallible>(())
        }))
        .handle(handler_fn(move |item: Item, _: Context| {
            let failed = item.n == 13;
            if !failed {
                handled.lock().unwrap().push(item.n);
            }
            async move {
                if failed {
                    Err::<(), logpipe::BoxError>(format!("item {} is refused", item.n).into())
                } else {
                    Ok(())
                }
            }
        }))
        .ignore("audit")
        .build()
        .unwrap();
    let consumer = world
        .consumer(&unique("bad-records"), &stream, registry)
        .with_options(ConsumerOptions {
            max_retries: 1,
            retry_backoff_ms: 1,
            commit_interval_ms: 100,
            on_bad_record: BadRecordPolicy::DeadLetter,
            on_handler_error: HandlerErrorPolicy::DeadLetter,
            ..ConsumerOptions::default()
        })
        .with_dead_letter(DeadLetter::new(world.backend.clone(), dead.as_str()));
    let dead_letters = world.run_reading_dead_letters(
        consumer,
        &dead,
        expected.len(),
        "the good items are handled",
        || items.lock().unwrap().len() == 19,
    );

    let headers = !setup.is_kinesis();
    let mut origins = BTreeSet::new();
    for record in &dead_letters {
        let (key, reason) = expected.get(&*record.value).unwrap_or_else(|| {
            panic!(
                "an unexpected dead letter {:?}",
                String::from_utf8_lossy(&record.value)
            )
        });
        assert_eq!(record.key.as_deref(), key.as_deref());
        if !headers {
            assert!(record.headers.is_empty());
            continue;
        }
        let header = |name: &str| header(record, name);
        assert_eq!(header(dead_letter::HEADER_STREAM), stream);
        assert_eq!(header(dead_letter::HEADER_REASON), *reason);
        if *reason != "handler_error" {
            header("trace");
        }
        origins.insert((
            header(dead_letter::HEADER_PARTITION),
            header(dead_letter::HEADER_POSITION),
        ));
    }
    let mut values: Vec<&[u8]> = dead_letters.iter().map(|r| &*r.value).collect();
    values.sort();
    values.dedup();
    assert_eq!(
        values.len(),
        expected.len(),
        "each bad record dead-lettered once"
    );
    if headers {
        assert_eq!(
            origins.len(),
            expected.len(),
            "each from a place of its own"
        );
    }
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 3, key = "uuid")]
struct PersonV3 {
    uuid: String,
    seq: u32,
    first_name: String,
    last_name: String,
}

/// People written in versions 1, 2 and 3 are all handled by the one v3 handler, through
/// the upcasters v1 → v2 → v3, each with the version it was written in in its context,
/// in each key's order; a v1 person the first upcaster refuses is dead-lettered as a
/// validation failure.
fn an_upcast_chain_hands_every_version_to_the_latest_handler(setup: Setup) {
    let world = World::new(&setup);
    let stream = world.stream("upcast", 2);
    let dead = world.stream("upcast-dead", 1);
    let refused = 99;
    world.runtime.block_on(async {
        let producer = Producer::new(world.backend.clone(), stream.as_str());
        for seq in 0..30u32 {
            let uuid = format!("key-{}", seq % 4);
            match seq % 3 {
                0 => producer.send(&PersonV1 { uuid, seq }).await,
                1 => {
                    let name = format!("name {seq}");
                    producer.send(&PersonV2 { uuid, seq, name }).await
                }
                _ => {
                    let (first_name, last_name) = ("name".to_owned(), seq.to_string());
                    let person = PersonV3 {
                        uuid,
                        seq,
                        first_name,
                        last_name,
                    };
                    producer.send(&person).await
                }
            }
            .unwrap();
        }
        let uuid = "key-0".to_owned();
        let person = PersonV1 { uuid, seq: refused };
        producer.send(&person).await.unwrap();
    });
    let seen = Seen::default();
    let noted = Arc::clone(&seen);
    let registry = Registry::builder()
        .try_upcast(move |old: PersonV1| {
            if old.seq == refused {
                return Err(format!("person {} has no name", old.seq));
            }
            let name = format!("name {}", old.seq);
            Ok(PersonV2 {
                uuid: old.uuid,
                seq: old.seq,
                name,
            })
        })
        .upcast(|old: PersonV2| {
            let (first, last) = old.name.split_once(' ').unwrap();
            PersonV3 {
                first_name: first.to_owned(),
                last_name: last.to_owned(),
                uuid: old.uuid,
                seq: old.seq,
            }
        })
        .handle(handler_fn(move |p: PersonV3, context: Context| {
            assert_eq!(
                (p.first_name.as_str(), p.last_name),
                ("name", p.seq.to_string())
            );
            note(&noted, &context, p.seq);
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap();
    let consumer = world
        .consumer(&unique("upcast"), &stream, registry)
        .with_options(ConsumerOptions {
            commit_interval_ms: 100,
            on_bad_record: BadRecordPolicy::DeadLetter,
            ..ConsumerOptions::default()
        })
        .with_dead_letter(DeadLetter::new(world.backend.clone(), dead.as_str()));
    let dead_letters =
        world.run_reading_dead_letters(consumer, &dead, 1, "every person is handled", || {
            seen.lock().unwrap().len() == 30
        });
    let seen = seen.lock().unwrap();
    let mut seqs: Vec<u32> = seen.iter().map(|h| h.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..30).collect::<Vec<_>>(),
        "each person handled once"
    );
    for handled in seen.iter() {
        assert_eq!(handled.message_type, "person");
        assert_eq!(
            handled.version,
            u64::from(handled.seq % 3 + 1),
            "the version on the wire"
        );
    }
    let mut by_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for handled in seen.iter() {
        by_key
            .entry(handled.key.as_deref().unwrap())
            .or_default()
            .push(handled.seq);
    }
    for seqs in by_key.values() {
        assert!(seqs.is_sorted(), "in each key's order: {seqs:?}");
    }
    // Kinesis records carry no headers: there the reason is in the log only.
    if !setup.is_kinesis() {
        assert_eq!(
            header(&dead_letters[0], dead_letter::HEADER_REASON),
            "validation"
        );
    }
}

on_backends!(
    [embedded, kafka, kinesis]
    messages_of_several_types_round_trip_in_each_keys_order,
    a_restarted_consumer_goes_on_after_its_stored_positions,
    bad_records_and_failing_handlers_are_dead_lettered_with_their_origin,
    an_upcast_chain_hands_every_version_to_the_latest_handler,
);

// Kafka keeps positions in its consumer groups by default; in SQLite they survive too.
on_backends!(
    [kafka_with_sqlite_positions, kafka_with_postgres_positions, kinesis_with_postgres_positions]
    a_restarted_consumer_goes_on_after_its_stored_positions,
);
