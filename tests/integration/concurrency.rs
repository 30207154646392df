//! Concurrent handling, written once and run on the embedded log and on the real Kafka
//! broker: the ordering modes hold with many handler calls in flight, a failing key holds
//! back only itself, stored positions never pass a record not handled, and batch handlers
//! get bounded batches that are retried as a whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use logpipe::backend::{Backend, PartitionRef, Position, ProducerBackend};
use logpipe::consumer::{HandlerErrorPolicy, Ordering};
use logpipe::dead_letter::DeadLetter;
use logpipe::offsets::OffsetStore;
use logpipe::{
    BatchError, ConsumerOptions, Context, Message, Producer, Registry, batch_handler_fn, handler_fn,
};
use serde::{Deserialize, Serialize};

use crate::ops::Setup;
use crate::scenarios::World;
use crate::support::{Running, on_backends, read_from_start, unique, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// The `seq`th message of `key`.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "numbered", version = 1, key = "key")]
pub(crate) struct Numbered {
    pub(crate) key: String,
    pub(crate) seq: u32,
}

/// Sends `per_key` messages on each of `keys` keys (`k0`, `k1`, ...), each key's in
/// order, the keys side by side.
async fn send_numbered<B: ProducerBackend>(producer: &Producer<B>, keys: u32, per_key: u32) {
    join_all((0..keys).map(|k| async move {
        for seq in 0..per_key {
            let key = format!("k{k}");
            producer.send(&Numbered { key, seq }).await.unwrap();
        }
    }))
    .await;
}

/// A handler call's view of the others: how many run now, the most that ran at once,
/// and which keys or partitions have a call under way.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    units: Mutex<HashMap<String, usize>>,
    most_per_unit: AtomicUsize,
}

impl InFlight {
    fn enter(&self, unit: &str) {
        let now = self.now.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.most.fetch_max(now, AtomicOrdering::SeqCst);
        let mut units = self.units.lock().unwrap();
        let running = units.entry(unit.to_owned()).or_default();
        *running += 1;
        self.most_per_unit
            .fetch_max(*running, AtomicOrdering::SeqCst);
    }

    fn leave(&self, unit: &str) {
        self.now.fetch_sub(1, AtomicOrdering::SeqCst);
        *self.units.lock().unwrap().get_mut(unit).unwrap() -= 1;
    }

    fn most(&self) -> (usize, usize) {
        (
            self.most.load(AtomicOrdering::SeqCst),
            self.most_per_unit.load(AtomicOrdering::SeqCst),
        )
    }
}

/// What the handlers saw: each key's sequence numbers in the order handled, and each
/// partition's positions in that order.
#[derive(Default)]
struct Seen {
    by_key: Mutex<BTreeMap<String, Vec<u32>>>,
    by_partition: Mutex<BTreeMap<PartitionRef, Vec<Position>>>,
}

impl Seen {
    fn note(&self, message: &Numbered, context: &Context) {
        self.by_key
            .lock()
            .unwrap()
            .entry(message.key.clone())
            .or_default()
            .push(message.seq);
        self.by_partition
            .lock()
            .unwrap()
            .entry(context.partition.clone())
            .or_default()
            .push(context.position.clone());
    }

    fn count(&self) -> usize {
        self.by_key.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Asserts that each of `keys` keys had `per_key` records handled once each, in order.
    fn assert_each_key_in_order(&self, keys: u32, per_key: u32) {
        let by_key = self.by_key.lock().unwrap();
        assert_eq!(by_key.len(), keys as usize, "every key handled");
        for (key, seqs) in by_key.iter() {
            assert_eq!(
                seqs,
                &(0..per_key).collect::<Vec<_>>(),
                "{key}: each record once, in order"
            );
        }
    }

    /// The last position handled of each partition.
    fn last_positions(&self) -> BTreeMap<PartitionRef, Position> {
        self.by_partition
            .lock()
            .unwrap()
            .iter()
            .map(|(partition, positions)| {
                let last = positions.iter().map(offset).max().unwrap();
                (partition.clone(), Position::Offset(last))
            })
            .collect()
    }
}

/// The offset of a position of the embedded log or of Kafka.
fn offset(position: &Position) -> i64 {
    match position {
        Position::Offset(offset) => *offset,
        other => panic!("{other:?} is not an offset"),
    }
}

/// A handler that waits `delay(message)` and notes what it handled, with the calls in
/// flight counted per `unit(message, context)`.
fn noting_registry(
    seen: &Arc<Seen>,
    in_flight: &Arc<InFlight>,
    delay: fn(&Numbered) -> Duration,
    unit: fn(&Numbered, &Context) -> String,
) -> Registry {
    let (seen, in_flight) = (Arc::clone(seen), Arc::clone(in_flight));
    Registry::builder()
        .handle(handler_fn(move |message: Numbered, context: Context| {
            let (seen, in_flight) = (Arc::clone(&seen), Arc::clone(&in_flight));
            async move {
                let unit = unit(&message, &context);
                in_flight.enter(&unit);
                tokio::time::sleep(delay(&message)).await;
                seen.note(&message, &context);
                in_flight.leave(&unit);
                Ok::<_, std::convert::Infallible>(())
            }
        }))
        .build()
        .unwrap()
}

/// A delay of 0 to 5 ms, scattered over the records.
fn random_delay(message: &Numbered) -> Duration {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((&message.key, message.seq));
    Duration::from_micros(hash % 5_001)
}

fn by_key(message: &Numbered, _: &Context) -> String {
    message.key.clone()
}

fn by_partition(_: &Numbered, context: &Context) -> String {
    context.partition.to_string()
}

/// Asserts that the store holds, for every partition, the last position handled.
fn assert_stored(world: &World, group: &str, last: &BTreeMap<PartitionRef, Position>) {
    let group = world.backend.position_group(group);
    for (partition, position) in last {
        let stored = world
            .runtime
            .block_on(world.store.load(&group, partition))
            .unwrap();
        assert_eq!(
            stored.as_ref(),
            Some(position),
            "the stored position of {partition}"
        );
    }
}

/// What a [`noted_run`] saw, and the group it ran as.
struct NotedRun {
    seen: Arc<Seen>,
    in_flight: Arc<InFlight>,
    group: String,
}

/// Sends `per_key` numbered messages on each of `keys` keys to a new stream of
/// `partitions` partitions, and runs a consumer with `concurrency` and `ordering` until
/// every one is handled by a handler that waits `delay`, counting the calls in flight
/// per `unit`.
fn noted_run(
    world: &World,
    (partitions, keys, per_key): (u32, u32, u32),
    (concurrency, ordering): (u32, Ordering),
    delay: fn(&Numbered) -> Duration,
    unit: fn(&Numbered, &Context) -> String,
) -> NotedRun {
    let stream = world.stream("concurrent", partitions);
    let producer = Producer::new(world.backend.clone(), stream.as_str());
    world
        .runtime
        .block_on(send_numbered(&producer, keys, per_key));
    let (seen, in_flight) = (Arc::new(Seen::default()), Arc::new(InFlight::default()));
    let group = unique("concurrent");
    let registry = noting_registry(&seen, &in_flight, delay, unit);
    let consumer = world
        .consumer(&group, &stream, registry)
        .with_options(ConsumerOptions {
            concurrency,
            ordering,
            commit_interval_ms: 100,
            ..ConsumerOptions::default()
        });
    let total = (keys * per_key) as usize;
    world.run_until(consumer, "every record is handled", || {
        seen.count() >= total
    });
    NotedRun {
        seen,
        in_flight,
        group,
    }
}

/// With `ordering = "key"` and 256 handler calls in flight, 20,000 records over four
/// partitions and 500 keys, whose handlers take 0 to 5 ms each: every key's records are
/// handled once each and in order, many at once.
fn keys_stay_in_order_with_256_handlers_in_flight(setup: Setup) {
    let world = World::new(&setup);
    let run = noted_run(
        &world,
        (4, 500, 40),
        (256, Ordering::Key),
        random_delay,
        by_key,
    );
    run.seen.assert_each_key_in_order(500, 40);
    let (most, most_per_key) = run.in_flight.most();
    assert!(most > 16, "{most} handler calls at most in flight at once");
    assert!(most <= 256, "{most} in flight, above the concurrency");
    assert_eq!(most_per_key, 1, "one call at a time per key");
    assert_stored(&world, &run.group, &run.seen.last_positions());
}

/// With `ordering = "partition"`, records of one partition are handled one at a time in
/// order, while the partitions run side by side.
fn partitions_run_side_by_side_one_record_at_a_time(setup: Setup) {
    let world = World::new(&setup);
    let one_ms = |_: &Numbered| Duration::from_millis(1);
    let run = noted_run(
        &world,
        (4, 40, 10),
        (16, Ordering::Partition),
        one_ms,
        by_partition,
    );
    run.seen.assert_each_key_in_order(40, 10);
    for (partition, positions) in run.seen.by_partition.lock().unwrap().iter() {
        assert!(
            positions.iter().map(offset).is_sorted(),
            "{partition} handled in the order of its positions"
        );
    }
    let (most, most_per_partition) = run.in_flight.most();
    assert!(most > 1, "partitions run side by side ({most} at most)");
    assert_eq!(most_per_partition, 1, "one record at a time per partition");
    assert_stored(&world, &run.group, &run.seen.last_positions());
}

/// With `ordering = "unordered"`, records of one key run side by side; each is handled
/// once, and the stored position is the last record once all are.
fn unordered_records_of_one_key_run_side_by_side(setup: Setup) {
    let world = World::new(&setup);
    let run = noted_run(
        &world,
        (1, 1, 200),
        (32, Ordering::Unordered),
        random_delay,
        by_key,
    );
    let mut seqs = run.seen.by_key.lock().unwrap()["k0"].clone();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "each record once");
    let (_, most_of_one_key) = run.in_flight.most();
    assert!(
        most_of_one_key > 1,
        "records of one key ran side by side ({most_of_one_key} at most)"
    );
    assert_stored(&world, &run.group, &run.seen.last_positions());
}

/// A handler failing for one key (until told to recover) delays only that key: the
/// other keys' records, those after it in its partition too, are handled meanwhile, and
/// the stored position of its partition stays below it. Once it recovers, everything is
/// handled and stored.
fn a_failing_key_holds_back_only_itself_and_its_partitions_watermark(setup: Setup) {
    const STUCK_KEY: &str = "k3";
    const STUCK_SEQ: u32 = 5;
    let world = World::new(&setup);
    let stream = world.stream("stuck-key", 2);
    let producer = Producer::new(world.backend.clone(), stream.as_str());
    world.runtime.block_on(send_numbered(&producer, 10, 20));
    let seen = Arc::new(Seen::default());
    let failing = Arc::new(AtomicBool::new(true));
    let failed_at: Arc<Mutex<Option<(PartitionRef, Position)>>> = Arc::default();
    let registry = {
        let (seen, failing, failed_at) = (
            Arc::clone(&seen),
            Arc::clone(&failing),
            Arc::clone(&failed_at),
        );
        Registry::builder()
            .handle(handler_fn(move |message: Numbered, context: Context| {
                let stuck = message.key == STUCK_KEY
                    && message.seq == STUCK_SEQ
                    && failing.load(AtomicOrdering::SeqCst);
                if stuck {
                    *failed_at.lock().unwrap() =
                        Some((context.partition.clone(), context.position.clone()));
                } else {
                    seen.note(&message, &context);
                }
                async move {
                    if stuck {
                        Err::<(), logpipe::BoxError>("the database refuses this one".into())
                    } else {
                        Ok(())
                    }
                }
            }))
            .build()
            .unwrap()
    };
    let group = unique("stuck-key");
    let consumer = world
        .consumer(&group, &stream, registry)
        .with_options(ConsumerOptions {
            concurrency: 16,
            ordering: Ordering::Key,
            max_retries: u32::MAX,
            retry_backoff_ms: 1,
            max_retry_backoff_ms: 20,
            commit_every: 1,
            commit_interval_ms: 50,
            ..ConsumerOptions::default()
        });
    let position_group = world.backend.position_group(&group);
    world.runtime.block_on(async {
        let running = Running::start(consumer);
        wait_until(
            "every record but the stuck key's last 15 is handled",
            WAIT,
            || seen.count() >= 200 - 15,
        )
        .await;
        // Commits come every 50 ms; a few of them pass while the key stays stuck.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            seen.count(),
            185,
            "nothing of the stuck key after its failing record"
        );
        assert!(
            !seen.by_key.lock().unwrap()[STUCK_KEY].contains(&STUCK_SEQ),
            "the failing record is not handled"
        );
        let (partition, failed) = failed_at
            .lock()
            .unwrap()
            .clone()
            .expect("the record failed");
        let handled_after = seen.by_partition.lock().unwrap()[&partition]
            .iter()
            .filter(|position| offset(position) > offset(&failed))
            .count();
        assert!(
            handled_after > 0,
            "records after the failing one in its partition are handled meanwhile"
        );
        let stored = world.store.load(&position_group, &partition).await.unwrap();
        assert!(
            stored
                .as_ref()
                .is_none_or(|stored| offset(stored) < offset(&failed)),
            "{partition}: stored {stored:?}, not below the failing record at {failed}"
        );
        failing.store(false, AtomicOrdering::SeqCst);
        wait_until("every record is handled", WAIT, || seen.count() >= 200).await;
        running.stop().await;
    });
    seen.assert_each_key_in_order(10, 20);
    assert_stored(&world, &group, &seen.last_positions());
}

/// One call of a batch handler: the partitions of its records, and the records as
/// (key, seq).
type BatchCall = (BTreeSet<PartitionRef>, Vec<(String, u32)>);

/// A batch handler gets batches of at most `batch_max_records` records of one
/// partition; a failing batch is retried as a whole; a `BatchError` naming one record
/// dead-letters only that one, and the rest count as handled; positions are stored
/// after the batches.
fn batch_handlers_get_bounded_batches_retried_as_a_unit(setup: Setup) {
    const REFUSED: (&str, u32) = ("k1", 7);
    let world = World::new(&setup);
    let stream = world.stream("batches", 2);
    let dead = world.stream("batches-dead", 1);
    let producer = Producer::new(world.backend.clone(), stream.as_str());
    world.runtime.block_on(send_numbered(&producer, 20, 50));
    let seen = Arc::new(Seen::default());
    let calls: Arc<Mutex<Vec<BatchCall>>> = Arc::default();
    let flaky_attempts = Arc::new(AtomicUsize::new(0));
    let registry = {
        let (seen, calls, flaky_attempts) = (
            Arc::clone(&seen),
            Arc::clone(&calls),
            Arc::clone(&flaky_attempts),
        );
        Registry::builder()
            .handle_batch(batch_handler_fn(move |batch: Vec<(Numbered, Context)>| {
                let (seen, calls, flaky_attempts) = (
                    Arc::clone(&seen),
                    Arc::clone(&calls),
                    Arc::clone(&flaky_attempts),
                );
                async move {
                    let partitions = batch.iter().map(|(_, c)| c.partition.clone()).collect();
                    let records: Vec<_> =
                        batch.iter().map(|(m, _)| (m.key.clone(), m.seq)).collect();
                    let attempt = {
                        let mut calls = calls.lock().unwrap();
                        calls.push((partitions, records.clone()));
                        calls
                            .iter()
                            .filter(|(_, earlier)| *earlier == records)
                            .count()
                    };
                    // The batch holding k0's record 13 fails twice, then succeeds.
                    if records.contains(&("k0".to_owned(), 13))
                        && flaky_attempts.fetch_add(1, AtomicOrdering::SeqCst) < 2
                    {
                        return Err(BatchError::all("the database is busy"));
                    }
                    if let Some(index) = records
                        .iter()
                        .position(|(key, seq)| key == REFUSED.0 && *seq == REFUSED.1)
                    {
                        // The others count as handled once the retries are spent.
                        if attempt == 3 {
                            for (i, (message, context)) in batch.iter().enumerate() {
                                if i != index {
                                    seen.note(message, context);
                                }
                            }
                        }
                        return Err(BatchError::records([index], "this row is refused"));
                    }
                    for (message, context) in &batch {
                        seen.note(message, context);
                    }
                    Ok(())
                }
            }))
            .build()
            .unwrap()
    };
    let group = unique("batches");
    let consumer = world
        .consumer(&group, &stream, registry)
        .with_options(ConsumerOptions {
            concurrency: 4,
            ordering: Ordering::Key,
            batch_max_records: 50,
            batch_linger_ms: 20,
            max_retries: 2,
            retry_backoff_ms: 1,
            commit_interval_ms: 100,
            on_handler_error: HandlerErrorPolicy::DeadLetter,
            ..ConsumerOptions::default()
        })
        .with_dead_letter(DeadLetter::new(world.backend.clone(), dead.as_str()));
    let dead_letters = world.runtime.block_on(async {
        let running = Running::start(consumer);
        wait_until("every record but the refused one is handled", WAIT, || {
            seen.count() >= 999
        })
        .await;
        let reader = world
            .backend
            .open_consumer(
                &unique("batches-dead-reader"),
                std::slice::from_ref(&dead),
                logpipe::backend::StartFrom::Earliest,
            )
            .unwrap();
        let dead_letters = read_from_start(reader, 1).await;
        running.stop().await;
        dead_letters
    });

    let calls = calls.lock().unwrap();
    assert!(
        calls
            .iter()
            .all(|(partitions, records)| partitions.len() == 1
                && !records.is_empty()
                && records.len() <= 50),
        "batches of one partition, at most 50 records each"
    );
    assert!(
        calls.iter().any(|(_, records)| records.len() > 1),
        "records come in batches"
    );
    let flaky: Vec<_> = calls
        .iter()
        .filter(|(_, records)| records.contains(&("k0".to_owned(), 13)))
        .collect();
    assert_eq!(flaky.len(), 3, "the failing batch is tried three times");
    assert!(
        flaky.windows(2).all(|pair| pair[0] == pair[1]),
        "and retried as a unit, the same records each time"
    );
    let refused: Vec<_> = dead_letters
        .iter()
        .map(|record| serde_json::from_slice::<serde_json::Value>(&record.value[5..]).unwrap())
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (
            refused[0]["message"]["key"].as_str(),
            refused[0]["message"]["seq"].as_u64()
        ),
        (Some(REFUSED.0), Some(u64::from(REFUSED.1))),
        "only the record the error names is dead-lettered"
    );
    let mut by_key = seen.by_key.lock().unwrap().clone();
    by_key
        .get_mut(REFUSED.0)
        .unwrap()
        .insert(REFUSED.1 as usize, REFUSED.1);
    for (key, seqs) in &by_key {
        assert_eq!(
            seqs,
            &(0..50).collect::<Vec<_>>(),
            "{key}: every other record once, in order"
        );
    }
    // Every partition's last record is handled (the refused one is not a last).
    assert_stored(&world, &group, &seen.last_positions());
}

on_backends!(
    [embedded, kafka]
    keys_stay_in_order_with_256_handlers_in_flight,
    partitions_run_side_by_side_one_record_at_a_time,
    unordered_records_of_one_key_run_side_by_side,
    a_failing_key_holds_back_only_itself_and_its_partitions_watermark,
    batch_handlers_get_bounded_batches_retried_as_a_unit,
);

/// A second member joins a Kafka group while the first has about 256 handler calls in
/// flight: the first drains them and stores its watermarks before it lets its
/// partitions go, so nothing is lost, and no record of a key is handled by the first
/// member after the second handled one of that key.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_member_joining_while_256_calls_are_in_flight_takes_over_without_overlap() {
    use logpipe::Consumer;
    use logpipe::backend::StartFrom;

    const KEYS: u32 = 600;
    const PER_KEY: u32 = 20;
    let Some((brokers, _broker)) = crate::kafka::broker().await else {
        return;
    };
    let topic = unique("rebalance-in-flight");
    crate::kafka::create_topics(&brokers, &[&topic]).await;
    let client = crate::kafka::client(&brokers);
    let producer = Producer::new(client.clone(), topic.as_str());
    send_numbered(&producer, KEYS, PER_KEY).await;

    // Every handled record as (member, key, seq), in the order the calls finished.
    let handled: Arc<Mutex<Vec<(char, String, u32)>>> = Arc::default();
    let in_flight = Arc::new(InFlight::default());
    let group = unique("rebalance-in-flight");
    let member = |name: char| {
        let (handled, in_flight) = (Arc::clone(&handled), Arc::clone(&in_flight));
        let registry = Registry::builder()
            .handle(handler_fn(move |message: Numbered, _: Context| {
                let (handled, in_flight) = (Arc::clone(&handled), Arc::clone(&in_flight));
                async move {
                    in_flight.enter(&message.key);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.leave(&message.key);
                    handled
                        .lock()
                        .unwrap()
                        .push((name, message.key, message.seq));
                    Ok::<_, std::convert::Infallible>(())
                }
            }))
            .build()
            .unwrap();
        let backend = client
            .open_consumer(&group, std::slice::from_ref(&topic), StartFrom::Configured)
            .unwrap();
        Running::start(
            Consumer::new(backend, client.offsets(), registry, group.as_str()).with_options(
                ConsumerOptions {
                    concurrency: 256,
                    ordering: Ordering::Key,
                    commit_interval_ms: 100,
                    ..ConsumerOptions::default()
                },
            ),
        )
    };
    let first = member('a');
    wait_until("the first member has 200 calls in flight", WAIT, || {
        in_flight.now.load(AtomicOrdering::SeqCst) >= 200
    })
    .await;
    let second = member('b');
    let total = (KEYS * PER_KEY) as usize;
    let distinct = || {
        let handled = handled.lock().unwrap();
        let set: BTreeSet<(&str, u32)> = handled.iter().map(|(_, k, s)| (k.as_str(), *s)).collect();
        set.len()
    };
    wait_until("every record is handled", WAIT, || distinct() >= total).await;
    let second_handled_any = handled.lock().unwrap().iter().any(|(m, ..)| *m == 'b');
    first.stop().await;
    second.stop().await;

    assert!(second_handled_any, "the second member took partitions over");
    let handled = handled.lock().unwrap();
    let mut per_key: HashMap<&str, Vec<(char, u32)>> = HashMap::new();
    for (member, key, seq) in handled.iter() {
        per_key.entry(key).or_default().push((*member, *seq));
    }
    assert_eq!(per_key.len(), KEYS as usize, "nothing lost");
    for (key, calls) in &per_key {
        for name in ['a', 'b'] {
            let own: Vec<u32> = calls
                .iter()
                .filter(|(m, _)| *m == name)
                .map(|(_, s)| *s)
                .collect();
            assert!(
                own.is_sorted(),
                "{key}: member {name} handled it in order: {own:?}"
            );
        }
        if let Some(taken) = calls.iter().position(|(m, _)| *m == 'b') {
            assert!(
                calls[taken..].iter().all(|(m, _)| *m == 'b'),
                "{key}: the first member handled a record after the second took it over: {calls:?}"
            );
        }
    }
}
