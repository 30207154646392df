//! The Kafka backend against a real Apache Kafka broker (`tests/services/kafka`, address in
//! `LOGPIPE_TEST_KAFKA`). Every test uses topics and groups of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::backend::{Backend, StartFrom};
use logpipe::kafka::{KafkaClient, KafkaSettings};
use logpipe::offsets::OffsetStore;
use logpipe::{Consumer, ConsumerOptions, Producer, Record, Registry};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::killed::{MaxDuplicates, Scenario};
use crate::processes::{terminate, wait_for_exit};
use crate::scenarios::{Order, Seen, people_registry, send_people};
use crate::serve;
use crate::support::{Running, read_from_start, service, unique, wait_until, wait_until_blocking};

/// The longest any single wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// Tests take it shared; the test that restarts the broker takes it alone.
static BROKER: RwLock<()> = RwLock::const_new(());

/// The broker's address and a share of it, or `None` (skip) when it is not running.
pub(crate) async fn broker() -> Option<(String, RwLockReadGuard<'static, ()>)> {
    let address = service("LOGPIPE_TEST_KAFKA")?;
    Some((address, BROKER.read().await))
}

/// The same, for tests that are not async.
pub(crate) fn broker_blocking() -> Option<(String, RwLockReadGuard<'static, ()>)> {
    let address = service("LOGPIPE_TEST_KAFKA")?;
    Some((address, BROKER.blocking_read()))
}

/// Client settings that make group changes quick.
pub(crate) fn settings(brokers: &str) -> KafkaSettings {
    let mut settings = KafkaSettings::new(brokers);
    settings.topic_partitions = 3;
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        settings.consumer.insert(key.into(), value.into());
    }
    settings
}

pub(crate) fn client(brokers: &str) -> KafkaClient {
    KafkaClient::connect(settings(brokers)).unwrap()
}

/// Creates `topics` with 3 partitions each.
pub(crate) async fn create_topics(brokers: &str, topics: &[&str]) {
    let mut settings = settings(brokers);
    settings.create_topics = true;
    let client = KafkaClient::connect(settings).unwrap();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    client.ensure_topics(&topics).await.unwrap();
}

fn fast_options() -> ConsumerOptions {
    ConsumerOptions {
        commit_every: 10,
        commit_interval_ms: 100,
        retry_backoff_ms: 1,
        ..ConsumerOptions::default()
    }
}

/// A consumer of `topic` in `group`, with options that make it commit often, running in
/// a task of its own.
pub(crate) fn consume<S: OffsetStore>(
    client: &KafkaClient,
    group: &str,
    topic: &str,
    store: S,
    registry: Registry,
) -> Running {
    let backend = client
        .open_consumer(group, &[topic.to_owned()], StartFrom::Configured)
        .unwrap();
    Running::start(Consumer::new(backend, store, registry, group).with_options(fast_options()))
}

fn seqs(seen: &Seen) -> Vec<u32> {
    seen.lock().unwrap().iter().map(|h| h.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_two_consumers_in_one_group_split_the_partitions_and_one_takes_over_from_the_other() {
    let Some((brokers, _broker)) = broker().await else {
        return;
    };
    let topic = unique("two-consumers");
    create_topics(&brokers, &[&topic]).await;
    let client = client(&brokers);
    let producer = Producer::new(client.clone(), topic.as_str());
    let group = unique("two-consumers");
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let mut a = consume(
        &client,
        &group,
        &topic,
        client.offsets(),
        people_registry(&seen_a),
    );
    let mut b = consume(
        &client,
        &group,
        &topic,
        client.offsets(),
        people_registry(&seen_b),
    );

    // Keep sending until both have handled something: then both are in the group.
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen_a.lock().unwrap().is_empty() || seen_b.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both consumers get partitions"
        );
        for (name, running) in [("a", &mut a), ("b", &mut b)] {
            if running.task.is_finished() {
                let outcome = (&mut running.task).await;
                panic!("consumer {name} stopped early: {outcome:?}");
            }
        }
        send_people(&producer, sent..sent + 6).await;
        sent += 6;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = sent;
    send_people(&producer, sent..sent + 60).await;
    sent += 60;
    let all_seen = |sent: u32| {
        let mut union: BTreeSet<u32> = seqs(&seen_a).into_iter().collect();
        union.extend(seqs(&seen_b));
        union.len() == sent as usize
    };
    wait_until("every message is handled", WAIT, || all_seen(sent)).await;
    let partitions = |seen: &Seen| -> BTreeSet<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|h| h.seq >= before)
            .map(|h| h.partition.partition.to_string())
            .collect()
    };
    let (of_a, of_b) = (partitions(&seen_a), partitions(&seen_b));
    assert!(
        !of_a.is_empty() && !of_b.is_empty(),
        "both read: {of_a:?} {of_b:?}"
    );
    assert!(
        of_a.is_disjoint(&of_b),
        "no partition read by both: {of_a:?} {of_b:?}"
    );
    assert_eq!(of_a.len() + of_b.len(), 3);

    a.stop().await;
    let handled_by_b = seen_b.lock().unwrap().len();
    send_people(&producer, sent..sent + 60).await;
    sent += 60;
    wait_until(
        "every message is handled after one consumer left",
        WAIT,
        || all_seen(sent),
    )
    .await;
    let taken_over: BTreeSet<String> = seen_b.lock().unwrap()[handled_by_b..]
        .iter()
        .map(|h| h.partition.partition.to_string())
        .collect();
    assert_eq!(
        taken_over.len(),
        3,
        "the remaining consumer reads every partition"
    );
    b.stop().await;
}

/// Reads `count` records of `topic` from the start, with a group of its own.
async fn read_topic(client: &KafkaClient, topic: &str, count: usize) -> Vec<Record> {
    let consumer = client
        .open_consumer(
            &unique("reader"),
            &[topic.to_owned()],
            StartFrom::Configured,
        )
        .unwrap();
    read_from_start(consumer, count).await
}

/// The broker's address and its scripts' directory, for a test that restarts it; `None`
/// (skip) when it is not running or not started by those scripts (outside CI).
fn restartable_broker() -> Option<(String, std::path::PathBuf)> {
    let brokers = service("LOGPIPE_TEST_KAFKA")?;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/kafka");
    if !scripts.join("work/broker.pid").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "under CI the broker must be the one tests/services/kafka/start runs"
        );
        eprintln!("skipping: the broker was not started by tests/services/kafka/start");
        return None;
    }
    Some((brokers, scripts))
}

/// Runs the broker's script `stop` or `start` (keeping its data).
fn broker_script(scripts: &Path, script: &str) {
    let status = Command::new(scripts.join(script))
        .env("KEEP_DATA", "1")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tests/services/kafka/{script}");
}

/// Stops the broker and starts it again, keeping its data.
fn restart_broker(scripts: &Path) {
    tokio::task::block_in_place(|| {
        broker_script(scripts, "stop");
        broker_script(scripts, "start");
    });
}

/// The broker stopped by [`StoppedBroker::stop`]; started again by
/// [`start`](StoppedBroker::start), or when dropped (a test that failed meanwhile).
pub(crate) struct StoppedBroker<'a> {
    scripts: &'a Path,
    started: bool,
}

impl<'a> StoppedBroker<'a> {
    pub(crate) fn stop(scripts: &'a Path) -> Self {
        broker_script(scripts, "stop");
        Self {
            scripts,
            started: false,
        }
    }

    pub(crate) fn start(mut self) {
        self.started = true;
        broker_script(self.scripts, "start");
    }
}

impl Drop for StoppedBroker<'_> {
    fn drop(&mut self) {
        if !self.started {
            broker_script(self.scripts, "start");
        }
    }
}

/// The broker to a test of its own (the other Kafka tests wait), with its address and
/// its scripts' directory, for a test that stops it; `None` (skip) as
/// [`restartable_broker`] says.
pub(crate) fn broker_alone_blocking() -> Option<(
    String,
    std::path::PathBuf,
    tokio::sync::RwLockWriteGuard<'static, ()>,
)> {
    let (brokers, scripts) = restartable_broker()?;
    Some((brokers, scripts, BROKER.blocking_write()))
}

/// The `seq` of each record's `message`, in the order read.
fn seqs_read(records: &[Record]) -> Vec<u32> {
    records
        .iter()
        .map(|record| {
            let body: serde_json::Value =
                serde_json::from_slice(record.value.strip_prefix(b"json:").unwrap()).unwrap();
            u32::try_from(body["message"]["seq"].as_u64().unwrap()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sends_across_a_broker_restart_either_land_exactly_once_or_fail() {
    let Some((brokers, scripts)) = restartable_broker() else {
        return;
    };
    // Alone: the other Kafka tests wait while the broker is down.
    let _alone = BROKER.write().await;
    let topic = unique("broker-restart");
    create_topics(&brokers, &[&topic]).await;
    let client = client(&brokers);
    let producer = Producer::new(client.clone(), topic.as_str());
    const COUNT: u32 = 600;
    let ok = Arc::new(Mutex::new(BTreeMap::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (ok, failed, producer) = (Arc::clone(&ok), Arc::clone(&failed), producer.clone());
        tokio::spawn(async move {
            let mut sends = tokio::task::JoinSet::new();
            for seq in 0..COUNT {
                let producer = producer.clone();
                sends.spawn(async move { (seq, producer.send(&Order { seq }).await) });
                if seq % 20 == 19 {
                    while let Some(done) = sends.join_next().await {
                        match done.unwrap() {
                            (seq, Ok(delivery)) => {
                                ok.lock().unwrap().insert(seq, delivery.position);
                            }
                            (_, Err(_)) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    wait_until("some sends succeeded", WAIT, || {
        ok.lock().unwrap().len() >= 100
    })
    .await;
    restart_broker(&scripts);
    tokio::time::timeout(Duration::from_secs(600), sending)
        .await
        .expect("every send ends")
        .unwrap();
    let ok = ok.lock().unwrap().clone();
    assert_eq!(ok.len() + failed.load(Ordering::SeqCst), COUNT as usize);
    assert!(ok.len() > 100, "sends after the restart succeed too");

    let records = read_topic(&client, &topic, ok.len()).await;
    let mut found: BTreeMap<u32, usize> = BTreeMap::new();
    for seq in seqs_read(&records) {
        *found.entry(seq).or_default() += 1;
    }
    for seq in ok.keys() {
        assert_eq!(
            found.get(seq),
            Some(&1),
            "a successful send is there exactly once: {seq}"
        );
    }
    assert!(found.values().all(|n| *n == 1), "no record twice");
}

/// Records handed over one after another by `Producer::enqueue` while the broker
/// restarts, their deliveries awaited on the side: each delivery succeeds or fails,
/// each record delivered is there once, and each key's records are in the order of
/// the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_enqueued_across_a_broker_restart_keep_each_keys_order() {
    let Some((brokers, scripts)) = restartable_broker() else {
        return;
    };
    let _alone = BROKER.write().await;
    let topic = unique("enqueue-restart");
    create_topics(&brokers, &[&topic]).await;
    let client = client(&brokers);
    let producer = Producer::new(client.clone(), topic.as_str());
    const COUNT: u32 = 1200;
    let ok = Arc::new(Mutex::new(BTreeMap::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tokio::spawn(async move {
            let mut deliveries = tokio::task::JoinSet::new();
            for seq in 0..COUNT {
                let person = crate::scenarios::PersonV1 {
                    uuid: format!("key-{}", seq % 6),
                    seq,
                };
                match producer.enqueue(&person).await {
                    Ok(delivery) => {
                        deliveries.spawn(async move { (seq, delivery.await) });
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if seq % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            while let Some(done) = deliveries.join_next().await {
                match done.unwrap() {
                    (seq, Ok(delivery)) => {
                        ok.lock().unwrap().insert(seq, delivery.partition);
                    }
                    (_, Err(_)) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    // Part of the records are handed over before the broker stops.
    tokio::time::sleep(Duration::from_millis(600)).await;
    restart_broker(&scripts);
    tokio::time::timeout(Duration::from_secs(600), sending)
        .await
        .expect("every delivery ends")
        .unwrap();
    let ok = ok.lock().unwrap().clone();
    assert_eq!(ok.len() + failed.load(Ordering::SeqCst), COUNT as usize);
    assert!(ok.len() > 100, "records are delivered: {}", ok.len());

    let records = read_topic(&client, &topic, ok.len()).await;
    let mut by_key: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    for (record, seq) in records.iter().zip(seqs_read(&records)) {
        by_key
            .entry(record.key.as_deref().unwrap().to_vec())
            .or_default()
            .push(seq);
    }
    let mut found: Vec<u32> = by_key.values().flatten().copied().collect();
    found.sort_unstable();
    let delivered: Vec<u32> = ok.keys().copied().collect();
    assert!(
        delivered.iter().all(|seq| found.binary_search(seq).is_ok()),
        "every record delivered is there"
    );
    assert!(
        found.windows(2).all(|pair| pair[0] < pair[1]),
        "no record twice"
    );
    for (key, seqs) in &by_key {
        assert!(
            seqs.is_sorted(),
            "{}: records in the order handed over: {seqs:?}",
            String::from_utf8_lossy(key)
        );
    }
}

/// A record batch in the broker's log: how many records and which compression codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredBatch {
    pub(crate) records: u64,
    pub(crate) codec: String,
}

/// Every record batch of `topic` in the test broker's log, read with Kafka's own
/// `DumpLogSegments` tool.
pub(crate) fn stored_batches(topic: &str) -> Vec<StoredBatch> {
    let kafka = service("LOGPIPE_TEST_KAFKA_DIR").expect("the broker's directory");
    let kafka = Path::new(&kafka);
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(kafka.join("data")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let is_partition = name
            .rsplit_once('-')
            .is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok());
        if is_partition {
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "log") {
                    segments.push(file.display().to_string());
                }
            }
        }
    }
    assert!(!segments.is_empty(), "no log segments of {topic}");
    let output = Command::new("java")
        .arg("-cp")
        .arg(kafka.join("lib/*"))
        .arg("kafka.tools.DumpLogSegments")
        .arg("--files")
        .arg(segments.join(","))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "DumpLogSegments failed: {text}");
    let field = |line: &str, name: &str| -> String {
        let mut words = line.split_whitespace();
        words.find(|word| *word == name);
        words.next().unwrap_or_default().to_owned()
    };
    text.lines()
        .filter(|line| line.starts_with("baseOffset:"))
        .map(|line| StoredBatch {
            records: field(line, "count:").parse().unwrap(),
            codec: field(line, "compresscodec:"),
        })
        .collect()
}

/// For a test that is not async and runs the example service: the broker, a topic prefix
/// of its own with the 3-partition stream `people` under it, and a runtime for async calls.
/// Kept for the whole test: it holds the test's share of the broker.
pub(crate) struct PeopleTopic {
    pub(crate) brokers: String,
    pub(crate) prefix: String,
    runtime: tokio::runtime::Runtime,
    _broker: RwLockReadGuard<'static, ()>,
}

impl PeopleTopic {
    /// `None` (skip the test) when the broker is not running.
    pub(crate) fn new(name: &str) -> Option<Self> {
        let (brokers, broker) = broker_blocking()?;
        let prefix = format!("{}.", unique(name));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(create_topics(&brokers, &[&format!("{prefix}people")]));
        Some(Self {
            brokers,
            prefix,
            runtime,
            _broker: broker,
        })
    }
}

/// The partitions of the topic [`killed_service`] makes.
const KILLED_PARTITIONS: [i32; 3] = [0, 1, 2];

/// Kills the example service with SIGKILL while it consumes a 3-partition topic, with
/// `store_env` saying where positions go, and starts it again (see [`Scenario`]).
/// `group_commits`: positions go to the service's consumer group, and the duplicates
/// allowed are the records handled at the kill past the offsets the group committed;
/// else none. The producer sends `people` people.
fn killed_service(group_commits: bool, people: i64, store_env: &[(&'static str, String)]) {
    let Some(topic) = PeopleTopic::new("kill") else {
        return;
    };
    // The records covered by the group's committed offsets: the topic is new, so each
    // partition's records start at offset 0.
    let covered = || {
        let mut settings = KafkaSettings::new(topic.brokers.clone());
        settings.topic_prefix.clone_from(&topic.prefix);
        let client = KafkaClient::connect(settings).unwrap();
        let group = format!("{}people_table", topic.prefix);
        let committed = topic
            .runtime
            .block_on(
                client
                    .offsets()
                    .committed_outside(&group, "people", &KILLED_PARTITIONS),
            )
            .unwrap();
        committed.iter().filter_map(|(_, offset)| *offset).sum()
    };
    let max_duplicates = if group_commits {
        MaxDuplicates::NotStored(&covered)
    } else {
        MaxDuplicates::Fixed(0)
    };
    let (brokers, prefix) = (&topic.brokers, &topic.prefix);
    let dir = tempfile::tempdir().unwrap();
    // The example service and producer, with topic and group names of their own.
    let mut env = vec![
        ("LOGPIPE_BACKEND", format!("kafka://{brokers}")),
        ("LOGPIPE_KAFKA__TOPIC_PREFIX", prefix.clone()),
        ("LOGPIPE_GROUP_PREFIX", prefix.clone()),
        (
            "LOGPIPE_KAFKA__CONSUMER__SESSION__TIMEOUT__MS",
            "6000".to_owned(),
        ),
        (
            "LOGPIPE_KAFKA__CONSUMER__HEARTBEAT__INTERVAL__MS",
            "500".to_owned(),
        ),
    ];
    env.extend_from_slice(store_env);
    Scenario {
        people,
        kill_after: 300,
        max_duplicates,
        db: &dir.path().join("people.db"),
        log: &dir.path().join("service.log"),
    }
    .run(|program| {
        let mut command = Command::new(program);
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "logpipe=debug,logpipe_kafka=debug")
            .env_remove("LOGPIPE_CONFIG")
            .current_dir(dir.path());
        command
    });
}

#[test]
fn kafka_a_consumer_process_killed_with_sigkill_and_restarted_loses_nothing() {
    // The handler writes its row and the position in one SQLite transaction (the
    // service's table, `people.db` in its directory), so a kill leaves no record handled
    // past its stored position.
    killed_service(
        false,
        3000,
        &[("LOGPIPE_OFFSET_STORE", "sqlite://people.db".to_owned())],
    );
}

#[test]
fn kafka_with_positions_committed_to_the_group_a_killed_consumer_loses_nothing() {
    // Positions are stored every `commit_every` records and sent to the group one commit
    // at a time. What a kill leaves handled but not committed is read again, and only
    // that: the records handled at the kill past the offsets the group holds then.
    killed_service(
        true,
        3000,
        &[("LOGPIPE_OFFSET_STORE", "kafka://".to_owned())],
    );
}

#[test]
fn kafka_a_killed_consumer_with_64_handlers_in_flight_loses_and_repeats_nothing() {
    // The handlers' transactions mark each record handled, whatever finished before it;
    // the restarted service skips the marked ones above the stored watermark.
    // More people: with its calls in flight the service is quick, and must still be busy
    // when it is killed.
    killed_service(
        false,
        20_000,
        &[
            ("LOGPIPE_OFFSET_STORE", "sqlite://people.db".to_owned()),
            ("LOGPIPE_CONSUMER__CONCURRENCY", "64".to_owned()),
        ],
    );
}

#[test]
fn kafka_a_killed_consumer_with_64_handlers_in_flight_repeats_only_what_is_above_its_watermarks() {
    // The group holds each partition's watermark: records handled above it when the
    // service is killed (finished beside a record still in flight) are read again, and
    // only those.
    killed_service(
        true,
        20_000,
        &[
            ("LOGPIPE_OFFSET_STORE", "kafka://".to_owned()),
            ("LOGPIPE_CONSUMER__CONCURRENCY", "64".to_owned()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitions_added_to_a_topic_later_are_read_too() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    let Some((brokers, _broker)) = broker().await else {
        return;
    };
    let topic = unique("grows");
    let mut one_partition = settings(&brokers);
    one_partition.create_topics = true;
    one_partition.topic_partitions = 1;
    let client = KafkaClient::connect(one_partition).unwrap();
    client
        .ensure_topics(std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), topic.as_str());
    send_people(&producer, 0..6).await;
    let seen = Seen::default();
    let group = unique("grows");
    let running = consume(
        &client,
        &group,
        &topic,
        client.offsets(),
        people_registry(&seen),
    );
    wait_until("the first partition is read", WAIT, || {
        seen.lock().unwrap().len() >= 6
    })
    .await;

    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let added = admin
        .create_partitions(&[NewPartitions::new(&topic, 3)], &AdminOptions::new())
        .await
        .unwrap();
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    // Written straight to the new partitions once the producer sees them.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (partition, seq) in [(1, 100), (2, 101)] {
        let value = serde_json::to_vec(&serde_json::json!({
            "type": "order", "version": 1, "message": {"seq": seq}
        }))
        .unwrap();
        let value = [b"json:".as_slice(), &value].concat();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let record = FutureRecord::<(), [u8]>::to(&topic)
                .partition(partition)
                .payload(&value);
            match raw.send(record, Duration::from_secs(10)).await {
                Ok(_) => break,
                Err((error, _)) => {
                    assert!(tokio::time::Instant::now() < deadline, "{error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    wait_until(
        "the records of the new partitions are handled",
        WAIT,
        || {
            let seen = seen.lock().unwrap();
            [100, 101]
                .iter()
                .all(|seq| seen.iter().any(|h| h.seq == *seq))
        },
    )
    .await;
    running.stop().await;
    let partitions: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.partition.partition.to_string())
        .collect();
    assert_eq!(partitions.len(), 3, "{partitions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_consumer_subscribed_by_pattern_reads_every_matching_topic() {
    let Some((brokers, _broker)) = broker().await else {
        return;
    };
    let base = unique("pattern");
    let (first, second) = (format!("{base}.a"), format!("{base}.b"));
    create_topics(&brokers, &[&first, &second]).await;
    let client = client(&brokers);
    send_people(&Producer::new(client.clone(), first.as_str()), 0..10).await;
    send_people(&Producer::new(client.clone(), second.as_str()), 10..20).await;
    let seen = Seen::default();
    let group = unique("pattern");
    let pattern = format!("^{}\\..*", base.replace('-', "\\-"));
    let running = consume(
        &client,
        &group,
        &pattern,
        client.offsets(),
        people_registry(&seen),
    );
    wait_until("both topics are read", WAIT, || {
        seen.lock().unwrap().len() >= 20
    })
    .await;
    running.stop().await;
    let mut handled = seqs(&seen);
    handled.sort_unstable();
    assert_eq!(handled, (0..20).collect::<Vec<_>>());
}

/// The lag gauges of `group` for the three partitions of `people` in a scrape of `addr`
/// (`None` for a partition not reported).
fn lag_gauges(addr: std::net::SocketAddr, group: &str) -> [Option<f64>; 3] {
    let (status, scrape) = serve::get(addr, "/metrics");
    assert_eq!(status, 200);
    [0, 1, 2].map(|partition| {
        let series = format!(
            r#"logpipe_kafka_consumer_lag{{group="{group}",stream="people",partition="{partition}"}}"#
        );
        serve::sample_value(&scrape, &series)
    })
}

/// Runs the example service on a 3-partition topic with `store_env` saying where
/// positions go, and follows its lag gauges on `/metrics`: 0 everywhere once it caught
/// up, then the records behind a person its handler refuses (and retries meanwhile).
fn lag_is_reported_per_partition(store_env: &[(&str, &str)]) {
    const MORE: u32 = 5;
    let Some(topic) = PeopleTopic::new("lag") else {
        return;
    };
    let (brokers, prefix, runtime) = (&topic.brokers, &topic.prefix, &topic.runtime);
    let mut settings = settings(brokers);
    settings.topic_prefix.clone_from(prefix);
    let producer = Producer::new(KafkaClient::connect(settings).unwrap(), "people");
    let send = |uuid: &str, name: &str| -> usize {
        let person = serve::Person {
            uuid: uuid.to_owned(),
            name: name.to_owned(),
        };
        let delivery = runtime.block_on(producer.send(&person)).unwrap();
        delivery.partition.partition.parse().unwrap()
    };
    for n in 0..20 {
        send(&format!("person-{n}"), &format!("Person {n}"));
    }

    let dir = tempfile::tempdir().unwrap();
    let backend = format!("kafka://{brokers}");
    let mut env = vec![
        ("LOGPIPE_BACKEND", backend.as_str()),
        ("LOGPIPE_KAFKA__TOPIC_PREFIX", prefix.as_str()),
        ("LOGPIPE_GROUP_PREFIX", prefix.as_str()),
        ("PEOPLE_STREAM", "people"),
        // A refused person is retried for as long as the test needs.
        ("LOGPIPE_CONSUMER__MAX_RETRIES", "1000000"),
        ("LOGPIPE_CONSUMER__RETRY_BACKOFF_MS", "5"),
        ("LOGPIPE_CONSUMER__MAX_RETRY_BACKOFF_MS", "5"),
    ];
    env.extend_from_slice(store_env);
    let (mut child, addr, _log) = serve::start(&dir.path().join("people.db"), &env);
    let group = format!("{prefix}people_table");
    wait_until_blocking("the consumer caught up: no lag anywhere", WAIT, || {
        lag_gauges(addr, &group) == [Some(0.0); 3]
    });
    let (_, scrape) = serve::get(addr, "/metrics");
    assert!(
        scrape.contains("# TYPE logpipe_kafka_consumer_lag gauge"),
        "{scrape}"
    );

    // Refused, so it stays unhandled; so do the updates of the same person after it.
    let stuck = send("stuck", " ");
    let mut expected = [Some(0.0); 3];
    expected[stuck] = Some(1.0);
    wait_until_blocking("the refused person is behind", WAIT, || {
        lag_gauges(addr, &group) == expected
    });
    for n in 0..MORE {
        assert_eq!(
            send("stuck", &format!("Name {n}")),
            stuck,
            "one key, one partition"
        );
    }
    expected[stuck] = Some(f64::from(MORE + 1));
    wait_until_blocking(&format!("{} records are behind", MORE + 1), WAIT, || {
        lag_gauges(addr, &group) == expected
    });

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}

#[test]
fn kafka_lag_per_partition_with_positions_committed_to_the_group() {
    lag_is_reported_per_partition(&[("LOGPIPE_OFFSET_STORE", "kafka://")]);
}

#[test]
fn kafka_lag_per_partition_with_positions_stored_in_sqlite() {
    lag_is_reported_per_partition(&[("LOGPIPE_OFFSET_STORE", "sqlite://people.db")]);
}
