//! The Kinesis backend against kinesis-mock (`LOGPIPE_TEST_KINESIS`, started by
//! `tests/services/kinesis/start`): round trips, per-key order under retries, resharding,
//! injected throttling and expired iterators, restarts, a killed process and bad records.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logpipe::backend::{OutgoingRecord, ProducerBackend};
use logpipe::kinesis::{KinesisBackend, KinesisOptions, KinesisWriteMode};
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{
    Consumer, ConsumerOptions, Context, Delivery, Message, Position, Producer, Registry, handler_fn,
};
use logpipe_kinesis::sdk::operation::get_records::GetRecordsOutput;
use logpipe_kinesis::sdk::operation::list_shards::ListShardsOutput;
use logpipe_kinesis::sdk::operation::put_record::PutRecordOutput;
use logpipe_kinesis::sdk::operation::put_records::PutRecordsOutput;
use logpipe_kinesis::sdk::types::{PutRecordsRequestEntry, PutRecordsResultEntry, StreamStatus};
use logpipe_kinesis::sdk::{self};
use logpipe_kinesis::{
    BoxFuture, EXPIRED_ITERATOR, KinesisApi, KinesisError, PutRecordRequest, SdkApi, StartPosition,
    THROUGHPUT_EXCEEDED,
};
use serde::{Deserialize, Serialize};

use crate::killed::{MaxDuplicates, Scenario};
use crate::support::{Running, service, unique, wait_until};

const WAIT: Duration = Duration::from_secs(60);
pub(crate) const REGION: &str = "us-east-1";

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "item", version = 1, key = "key")]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) n: u32,
}

/// A plain SDK client for the emulator, with dummy credentials and a fixed region.
pub fn client(endpoint: &str) -> sdk::Client {
    let options = logpipe_kinesis::ClientOptions {
        region: Some(REGION.into()),
        endpoint: Some(endpoint.into()),
    };
    logpipe_kinesis::client_with_keys(&options, "test", "test")
}

async fn wait_active(client: &sdk::Client, stream: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        let status = summary
            .stream_description_summary()
            .unwrap()
            .stream_status();
        if *status == StreamStatus::Active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} is not active after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_stream(client: &sdk::Client, stream: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(client, stream).await;
}

/// The emulator's endpoint, a client, and a new stream of `shards` shards; `None` (the
/// test is skipped) when the emulator is not running outside CI.
pub async fn fixture(prefix: &str, shards: i32) -> Option<(String, sdk::Client, String)> {
    let endpoint = service("LOGPIPE_TEST_KINESIS")?;
    let client = client(&endpoint);
    let stream = unique(prefix);
    create_stream(&client, &stream, shards).await;
    Some((endpoint, client, stream))
}

/// The `n` of every handled item, sorted.
fn handled_ns(handled: &Handled) -> Vec<u32> {
    let mut ns: Vec<u32> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|(_, n, _, _)| *n)
        .collect();
    ns.sort_unstable();
    ns
}

/// An iterator at the oldest record of the first shard of `stream`, from the plain SDK.
pub async fn first_shard_iterator(client: &sdk::Client, stream: &str) -> String {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shards.shards()[0].shard_id())
        .shard_iterator_type(sdk::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap()
}

/// Options that read and rediscover quickly.
pub(crate) fn fast() -> KinesisOptions {
    KinesisOptions {
        poll_interval_ms: 100,
        shard_discovery_interval_ms: 300,
        retry_backoff_ms: 10,
        max_retry_backoff_ms: 200,
        ..KinesisOptions::default()
    }
}

pub(crate) fn backend_over(api: Arc<dyn KinesisApi>, options: KinesisOptions) -> KinesisBackend {
    KinesisBackend::with_api(api, REGION, options).unwrap()
}

pub(crate) fn sdk_api(endpoint: &str) -> Arc<SdkApi> {
    Arc::new(SdkApi::from_client(client(endpoint)))
}

pub(crate) fn consumer_options() -> ConsumerOptions {
    ConsumerOptions {
        commit_interval_ms: 50,
        retry_backoff_ms: 1,
        ..ConsumerOptions::default()
    }
}

/// What a handler saw: (key, n, shard, sequence number), in handling order.
type Handled = Arc<Mutex<Vec<(String, u32, String, String)>>>;

fn items_registry(handled: &Handled) -> Registry {
    let handled = Arc::clone(handled);
    Registry::builder()
        .handle(handler_fn(move |item: Item, context: Context| {
            let Position::Sequence(sequence) = context.position.clone() else {
                unreachable!("Kinesis positions are sequence numbers")
            };
            handled.lock().unwrap().push((
                item.key,
                item.n,
                context.partition.partition.to_string(),
                sequence,
            ));
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
        .build()
        .unwrap()
}

/// A consumer of the items of `stream`, with options that commit often and positions in
/// memory, running in a task of its own; what it handles.
fn consume_items(backend: &KinesisBackend, stream: &str) -> (Handled, Running) {
    let handled = Handled::default();
    let consumer = Consumer::new(
        backend.consumer([stream]),
        MemoryOffsetStore::new(),
        items_registry(&handled),
        "g",
    )
    .with_options(consumer_options());
    (handled, Running::start(consumer))
}

/// Waits until `handled` holds at least `count` records.
async fn wait_handled(handled: &Handled, count: usize) {
    wait_until(&format!("{count} records are handled"), WAIT, || {
        handled.lock().unwrap().len() >= count
    })
    .await;
}

/// The item `n`, under a key of its own.
fn item(n: u32) -> Item {
    Item {
        key: format!("key-{n}"),
        n,
    }
}

/// `per_key` items for each of `keys` keys, `n` counting up within a key; the keys take
/// turns, so one key's items are spread over the whole list.
fn keyed_items(keys: u32, per_key: u32) -> Vec<Item> {
    (0..per_key)
        .flat_map(|n| {
            (0..keys).map(move |k| Item {
                key: format!("key-{k}"),
                n,
            })
        })
        .collect()
}

/// Checks that the records of each key were written in the order of their `n`.
fn assert_written_in_order_per_key(delivered: Vec<(Item, Delivery)>, keys: usize) {
    let mut by_key: HashMap<String, Vec<(u32, String)>> = HashMap::new();
    for (item, delivery) in delivered {
        by_key
            .entry(item.key)
            .or_default()
            .push((item.n, delivery.position.to_string()));
    }
    assert_eq!(by_key.len(), keys);
    for (key, mut writes) in by_key {
        writes.sort_by_key(|(n, _)| *n);
        assert!(
            writes
                .windows(2)
                .all(|w| sequence_key(&w[0].1) < sequence_key(&w[1].1)),
            "{key} written out of order: {writes:?}"
        );
    }
}

/// Sends `items` all at once, so that they are batched; returns the deliveries. On a
/// one-thread runtime the sends start in the order of `items`.
async fn send_all(
    backend: &KinesisBackend,
    stream: &str,
    items: Vec<Item>,
) -> Vec<(Item, Delivery)> {
    let producer = Producer::new(backend.clone(), stream);
    let sends = items.into_iter().map(|item| {
        let producer = producer.clone();
        tokio::spawn(async move {
            let delivery = producer.send(&item).await.unwrap();
            (item, delivery)
        })
    });
    let mut delivered = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        delivered.push(
            tokio::time::timeout(WAIT, send)
                .await
                .expect("sent in time")
                .unwrap(),
        );
    }
    delivered
}

/// Compares Kinesis sequence numbers (decimal strings of any length).
fn sequence_key(sequence: &str) -> (usize, &str) {
    (sequence.len(), sequence)
}

/// Wraps the SDK and answers some calls as a throttled Kinesis would.
struct Flaky {
    inner: Arc<SdkApi>,
    put_calls: AtomicU32,
    get_calls: AtomicU32,
    /// Every how many `PutRecords` entries one is refused (0: none).
    refuse_every_entry: u32,
    /// Every how many `PutRecords` calls one is refused whole (0: none).
    refuse_every_put: u32,
    /// Every how many `GetRecords` calls one is throttled (0: none).
    throttle_every_get: u32,
    /// Whether every `GetRecords` call is throttled, for now.
    throttle_every_get_now: AtomicBool,
    /// Every how many `GetRecords` calls one answers an expired iterator (0: none).
    expire_every_get: u32,
    refused_entries: AtomicU32,
    refused_puts: AtomicU32,
    throttled_gets: AtomicU32,
    expired_gets: AtomicU32,
}

impl Flaky {
    fn new(endpoint: &str) -> Self {
        Self {
            inner: sdk_api(endpoint),
            put_calls: AtomicU32::new(0),
            get_calls: AtomicU32::new(0),
            refuse_every_entry: 0,
            refuse_every_put: 0,
            throttle_every_get: 0,
            throttle_every_get_now: AtomicBool::new(false),
            expire_every_get: 0,
            refused_entries: AtomicU32::new(0),
            refused_puts: AtomicU32::new(0),
            throttled_gets: AtomicU32::new(0),
            expired_gets: AtomicU32::new(0),
        }
    }

    fn every(count: u32, every: u32) -> bool {
        every != 0 && count % every == every - 1
    }
}

impl KinesisApi for Flaky {
    fn put_records(
        &self,
        stream: String,
        entries: Vec<PutRecordsRequestEntry>,
    ) -> BoxFuture<'_, Result<PutRecordsOutput, KinesisError>> {
        Box::pin(async move {
            let call = self.put_calls.fetch_add(1, Ordering::SeqCst);
            if Self::every(call, self.refuse_every_put) {
                self.refused_puts.fetch_add(1, Ordering::SeqCst);
                return Err(KinesisError::service(
                    "PutRecords",
                    THROUGHPUT_EXCEEDED,
                    "Rate exceeded for stream",
                ));
            }
            // Refuse some entries (writing only the others), as Kinesis does when some
            // shards of a request are over their limit.
            let refused: Vec<bool> = (0..entries.len() as u32)
                .map(|i| Self::every(call * 7 + i, self.refuse_every_entry))
                .collect();
            let written: Vec<_> = entries
                .into_iter()
                .zip(&refused)
                .filter(|(_, refused)| !**refused)
                .map(|(entry, _)| entry)
                .collect();
            let mut results = if written.is_empty() {
                Vec::new()
            } else {
                self.inner
                    .put_records(stream, written)
                    .await?
                    .records()
                    .to_vec()
            }
            .into_iter();
            let mut merged = Vec::new();
            let mut failed = 0;
            for refused in refused {
                if refused {
                    failed += 1;
                    self.refused_entries.fetch_add(1, Ordering::SeqCst);
                    merged.push(
                        PutRecordsResultEntry::builder()
                            .error_code(THROUGHPUT_EXCEEDED)
                            .error_message("Rate exceeded for shard")
                            .build(),
                    );
                } else {
                    merged.push(results.next().unwrap());
                }
            }
            Ok(PutRecordsOutput::builder()
                .set_records(Some(merged))
                .failed_record_count(failed)
                .build()
                .unwrap())
        })
    }

    fn put_record(
        &self,
        request: PutRecordRequest,
    ) -> BoxFuture<'_, Result<PutRecordOutput, KinesisError>> {
        self.inner.put_record(request)
    }

    fn list_shards(
        &self,
        stream: String,
        next_token: Option<String>,
    ) -> BoxFuture<'_, Result<ListShardsOutput, KinesisError>> {
        self.inner.list_shards(stream, next_token)
    }

    fn get_shard_iterator(
        &self,
        stream: String,
        shard_id: String,
        start: StartPosition,
    ) -> BoxFuture<'_, Result<String, KinesisError>> {
        self.inner.get_shard_iterator(stream, shard_id, start)
    }

    fn get_records(
        &self,
        iterator: String,
        limit: i32,
    ) -> BoxFuture<'_, Result<GetRecordsOutput, KinesisError>> {
        Box::pin(async move {
            let call = self.get_calls.fetch_add(1, Ordering::SeqCst);
            if Self::every(call, self.throttle_every_get)
                || self.throttle_every_get_now.load(Ordering::SeqCst)
            {
                self.throttled_gets.fetch_add(1, Ordering::SeqCst);
                return Err(KinesisError::service(
                    "GetRecords",
                    THROUGHPUT_EXCEEDED,
                    "Rate exceeded for shard",
                ));
            }
            if Self::every(call, self.expire_every_get) {
                self.expired_gets.fetch_add(1, Ordering::SeqCst);
                return Err(KinesisError::service(
                    "GetRecords",
                    EXPIRED_ITERATOR,
                    "Iterator expired",
                ));
            }
            self.inner.get_records(iterator, limit).await
        })
    }
}

// One thread: spawned sends start in the order they were spawned, which is the order
// each key's records are sent in.
#[tokio::test]
async fn per_key_order_holds_when_batches_are_partly_refused_and_retried() {
    let Some((endpoint, _, stream)) = fixture("order", 4).await else {
        return;
    };
    let flaky = Arc::new(Flaky {
        refuse_every_entry: 3,
        refuse_every_put: 5,
        ..Flaky::new(&endpoint)
    });
    let backend = backend_over(flaky.clone(), fast());
    // 8 keys, 25 records each, all sent at once.
    let delivered = send_all(&backend, &stream, keyed_items(8, 25)).await;
    assert!(
        flaky.refused_entries.load(Ordering::SeqCst) > 0,
        "some entries were refused"
    );
    assert!(
        flaky.refused_puts.load(Ordering::SeqCst) > 0,
        "some calls were refused"
    );

    // Written in order per key: sequence numbers grow with n.
    assert_written_in_order_per_key(delivered, 8);

    // And read in order per key.
    let (handled, running) = consume_items(&backend, &stream);
    wait_handled(&handled, 200).await;
    running.stop().await;
    let mut read: HashMap<String, Vec<u32>> = HashMap::new();
    for (key, n, _, _) in handled.lock().unwrap().iter() {
        read.entry(key.clone()).or_default().push(*n);
    }
    assert_eq!(read.len(), 8);
    for (key, ns) in read {
        assert_eq!(ns, (0..25).collect::<Vec<_>>(), "{key}");
    }
}

// One thread: spawned sends start in the order they were spawned, which is the order
// each key's records are sent in.
#[tokio::test]
async fn the_sequence_number_for_ordering_mode_writes_each_key_in_order() {
    let Some((endpoint, _, stream)) = fixture("ordering-mode", 2).await else {
        return;
    };
    let options = KinesisOptions {
        write_mode: KinesisWriteMode::SequenceNumberForOrdering,
        ordering_cache_keys: 2,
        ..fast()
    };
    let backend = backend_over(sdk_api(&endpoint), options);
    let delivered = send_all(&backend, &stream, keyed_items(3, 10)).await;
    assert_written_in_order_per_key(delivered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_1_mib_is_refused_with_a_clear_error() {
    let Some(endpoint) = service("LOGPIPE_TEST_KINESIS") else {
        return;
    };
    let backend = backend_over(sdk_api(&endpoint), fast());
    let record = OutgoingRecord {
        stream: unique("too-large").into(),
        key: Some(b"k".to_vec()),
        value: vec![b'x'; 1024 * 1024],
        headers: vec![],
    };
    let err = backend.send(record).await.unwrap_err();
    assert_eq!(err.kind(), logpipe::backend::BackendErrorKind::Rejected);
    assert!(!err.is_retriable());
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("over Kinesis' limit"), "{source}");
}

/// The shards of `stream`, closed ones included.
pub(crate) async fn shards(client: &sdk::Client, stream: &str) -> Vec<sdk::types::Shard> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    listed.shards().to_vec()
}

/// Splits `shard` of `stream` in two halves of its hash key range.
pub(crate) async fn split(client: &sdk::Client, stream: &str, shard: &str) {
    let range = shards(client, stream)
        .await
        .iter()
        .find(|s| s.shard_id() == shard)
        .unwrap()
        .hash_key_range()
        .unwrap()
        .clone();
    let (start, end): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    let middle = start + (end - start) / 2 + 1;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .unwrap();
    wait_active(client, stream).await;
}

/// Parents of each shard of `stream`.
async fn parents(client: &sdk::Client, stream: &str) -> HashMap<String, Vec<String>> {
    shards(client, stream)
        .await
        .iter()
        .map(|s| {
            let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), parents)
        })
        .collect()
}

/// Checks that every record of a parent shard was handled before any of its children's.
fn assert_parents_first(
    handled: &[(String, u32, String, String)],
    parents: &HashMap<String, Vec<String>>,
) {
    for (child, its_parents) in parents {
        let first_child = handled.iter().position(|(_, _, shard, _)| shard == child);
        for parent in its_parents {
            let last_parent = handled.iter().rposition(|(_, _, shard, _)| shard == parent);
            if let (Some(first_child), Some(last_parent)) = (first_child, last_parent) {
                assert!(
                    last_parent < first_child,
                    "{child} was read before its parent {parent} was finished"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitting_shards_while_consuming_reads_every_record_and_parents_before_children() {
    let Some((endpoint, client, stream)) = fixture("split", 1).await else {
        return;
    };
    let backend = backend_over(sdk_api(&endpoint), fast());
    // Records in the parent, a split, records in the children: all before reading.
    send_all(&backend, &stream, (0..40).map(item).collect()).await;
    let parent = parents(&client, &stream).await.into_keys().next().unwrap();
    split(&client, &stream, &parent).await;
    send_all(&backend, &stream, (40..80).map(item).collect()).await;

    let (handled, running) = consume_items(&backend, &stream);
    wait_handled(&handled, 80).await;

    // Split a child while the consumer runs, and write to its children.
    let family = parents(&client, &stream).await;
    let child = family
        .iter()
        .find(|(_, parents)| parents.contains(&parent))
        .map(|(shard, _)| shard.clone())
        .unwrap();
    split(&client, &stream, &child).await;
    send_all(&backend, &stream, (80..120).map(item).collect()).await;
    wait_handled(&handled, 120).await;
    running.stop().await;

    let ns = handled_ns(&handled);
    let handled = handled.lock().unwrap().clone();
    assert_eq!(ns, (0..120).collect::<Vec<_>>(), "every record, once");
    let family = parents(&client, &stream).await;
    assert!(family.len() >= 5, "two splits made 5 shards: {family:?}");
    let shards_read: HashSet<_> = handled
        .iter()
        .map(|(_, _, shard, _)| shard.clone())
        .collect();
    assert!(
        shards_read.len() >= 4,
        "records came from parents and children: {shards_read:?}"
    );
    assert_parents_first(&handled, &family);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_expired_iterators_drop_no_shard_and_lose_no_record() {
    let Some((endpoint, _, stream)) = fixture("throttled", 4).await else {
        return;
    };
    let flaky = Arc::new(Flaky {
        refuse_every_put: 3,
        throttle_every_get: 3,
        expire_every_get: 4,
        ..Flaky::new(&endpoint)
    });
    let backend = backend_over(flaky.clone(), fast());
    send_all(&backend, &stream, (0..60).map(item).collect()).await;

    let (handled, running) = consume_items(&backend, &stream);
    wait_handled(&handled, 60).await;
    // Every shard is still followed after the errors: later records arrive too.
    wait_until("shards were throttled and iterators expired", WAIT, || {
        flaky.throttled_gets.load(Ordering::SeqCst) >= 4
            && flaky.expired_gets.load(Ordering::SeqCst) >= 4
    })
    .await;
    send_all(&backend, &stream, (60..100).map(item).collect()).await;
    wait_handled(&handled, 100).await;
    running.stop().await;

    let ns = handled_ns(&handled);
    let handled = handled.lock().unwrap().clone();
    assert_eq!(
        ns,
        (0..100).collect::<Vec<_>>(),
        "every record once, none lost"
    );
    let shards: HashSet<_> = handled
        .iter()
        .map(|(_, _, shard, _)| shard.clone())
        .collect();
    assert_eq!(shards.len(), 4, "records from every shard");
    assert!(flaky.refused_puts.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_throttled_without_end_make_the_consumer_stalled_until_they_read_again() {
    let Some((endpoint, _, stream)) = fixture("stalled", 2).await else {
        return;
    };
    let flaky = Arc::new(Flaky::new(&endpoint));
    let backend = backend_over(flaky.clone(), fast());
    let handled = Handled::default();
    let consumer = Consumer::new(
        backend.consumer([stream.as_str()]),
        MemoryOffsetStore::new(),
        items_registry(&handled),
        "items",
    )
    .with_options(ConsumerOptions {
        stalled_after_ms: 500,
        ..consumer_options()
    });
    let running = Running::start(consumer);
    running.wait_ready(true).await;

    flaky.throttle_every_get_now.store(true, Ordering::SeqCst);
    let text = running.wait_ready(false).await;
    assert!(
        text.starts_with("items: stalled: reading has failed for ")
            && text.contains(&format!(
                " of {stream}: Kinesis GetRecords failed with {THROUGHPUT_EXCEEDED}"
            )),
        "{text}"
    );

    flaky.throttle_every_get_now.store(false, Ordering::SeqCst);
    send_all(&backend, &stream, vec![item(1)]).await;
    wait_handled(&handled, 1).await;
    assert_eq!(running.wait_ready(true).await, "items: running\n");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_without_a_position_start_at_the_configured_timestamp() {
    let Some((endpoint, _, stream)) = fixture("at-timestamp", 2).await else {
        return;
    };
    let backend = backend_over(sdk_api(&endpoint), fast());
    send_all(&backend, &stream, (0..20).map(item).collect()).await;
    // Every record so far was acknowledged before this instant; the next ones arrive
    // after it.
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send_all(&backend, &stream, (20..30).map(item).collect()).await;

    let options = KinesisOptions {
        start_at: logpipe::kinesis::StartAt::AtTimestamp,
        start_timestamp_ms: Some(start),
        ..fast()
    };
    let backend = backend_over(sdk_api(&endpoint), options);
    let (handled, running) = consume_items(&backend, &stream);
    wait_handled(&handled, 10).await;
    running.stop().await;
    assert_eq!(
        handled_ns(&handled),
        (20..30).collect::<Vec<_>>(),
        "only records from the timestamp on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_process_killed_with_sigkill_loses_nothing() {
    let Some((endpoint, _, stream)) = fixture("people", 2).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("people.db");
    // The example service and producer over Kinesis; the service keeps its table and
    // its positions in `db`.
    let env = [
        (
            "LOGPIPE_BACKEND",
            format!("kinesis://?region={REGION}&endpoint={endpoint}"),
        ),
        ("LOGPIPE_OFFSET_STORE", format!("sqlite://{}", db.display())),
        ("LOGPIPE_KINESIS__POLL_INTERVAL_MS", "100".to_owned()),
        ("LOGPIPE_CONSUMER__COMMIT_INTERVAL_MS", "100".to_owned()),
        ("PEOPLE_STREAM", stream.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("RUST_LOG", "logpipe=info,logpipe_kinesis=info".to_owned()),
    ];
    let scenario = Scenario {
        people: 300,
        kill_after: 10,
        // The handler writes its row and the position in one SQLite transaction.
        max_duplicates: MaxDuplicates::Fixed(0),
        db: &db,
        log: &dir.path().join("service.log"),
    };
    tokio::task::block_in_place(|| {
        scenario.run(|program| {
            let mut command = Command::new(program);
            command
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env_remove("LOGPIPE_CONFIG")
                .env_remove("AWS_PROFILE")
                .current_dir(dir.path());
            command
        })
    });
    let conn = rusqlite::Connection::open(&db).unwrap();
    let groups: Vec<(String, String)> = conn
        .prepare("SELECT DISTINCT consumer_group, stream FROM logpipe_positions")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        groups,
        [("people_table@us-east-1".to_owned(), stream)],
        "positions are keyed by group and region, stream (and shard)"
    );
}
