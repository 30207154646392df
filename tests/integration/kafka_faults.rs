//! Faults of a three-node Kafka cluster (`tests/services/kafka-cluster`, addresses in
//! `LOGPIPE_TEST_KAFKA_CLUSTER`): replication factor 3 and `min.insync.replicas` 2, so
//! that a node killed with kill -9 loses no acknowledged write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use logpipe::admin::Admin;
use logpipe::backend::{Backend, BackendError, OutgoingRecord, ProducerBackend, Record, StartFrom};
use logpipe::kafka::{KafkaClient, KafkaSettings};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::kafka_people::KafkaPeople;
use crate::killed::people;
use crate::processes::{terminate, wait_for_exit};
use crate::support::{read_from_start, service, unique};

/// The longest a group may take to handle what it was sent.
const WAIT: Duration = Duration::from_secs(180);

/// Tests that kill nodes take the cluster alone.
static CLUSTER: Mutex<()> = Mutex::new(());

/// The cluster, held alone: its addresses and its work directory. Dropped (at the end
/// of a test, passed or failed), it starts the nodes the test killed, so that the next
/// test finds every node up.
struct Cluster {
    brokers: String,
    dir: PathBuf,
    _alone: MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Not an assertion: a panic while a failed test unwinds would abort every test.
        if !restart_missing_nodes(&self.dir) {
            eprintln!("the cluster did not start again");
        }
    }
}

impl Cluster {
    /// The cluster, once no other test holds it, or `None` (skip) outside CI when it is
    /// not running.
    fn alone() -> Option<Self> {
        let brokers = service("LOGPIPE_TEST_KAFKA_CLUSTER")?;
        let dir =
            service("LOGPIPE_TEST_KAFKA_CLUSTER_DIR").expect("LOGPIPE_TEST_KAFKA_CLUSTER_DIR");
        Some(Self {
            brokers,
            dir: PathBuf::from(dir),
            _alone: CLUSTER.lock().unwrap_or_else(PoisonError::into_inner),
        })
    }
}

/// Every record of `stream` (all its partitions, from their start).
fn read_everything(
    runtime: &tokio::runtime::Runtime,
    client: &KafkaClient,
    stream: &str,
) -> Vec<Record> {
    let written: i64 = runtime
        .block_on(client.watermarks(stream))
        .unwrap()
        .iter()
        .map(|w| w.high - w.low)
        .sum();
    let consumer = client
        .open_consumer("", &[stream.to_owned()], StartFrom::Earliest)
        .unwrap();
    runtime.block_on(read_from_start(consumer, usize::try_from(written).unwrap()))
}

/// The node that leads `partition` of `topic`.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    let client: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = client
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .expect("the partition")
        .leader()
}

/// Kills node `node` of the cluster in `dir` with SIGKILL.
fn kill_node(dir: &Path, node: i32) {
    let pid = std::fs::read_to_string(dir.join(format!("node{node}/pid"))).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Starts the nodes of the cluster in `dir` that do not run, with their data; returns
/// whether the cluster is up.
#[must_use]
fn restart_missing_nodes(dir: &Path) -> bool {
    let started = Command::new(dir.parent().unwrap().join("start")).status();
    started.is_ok_and(|status| status.success())
}

const RECORDS: usize = 20_000;
const KEYS: usize = 100;
/// Records handed over before their deliveries are awaited.
const WINDOW: usize = 500;

#[test]
fn killing_a_partition_leader_during_keyed_sends_loses_and_repeats_no_acknowledged_record() {
    let Some(cluster) = Cluster::alone() else {
        return;
    };
    let (brokers, dir) = (cluster.brokers.as_str(), cluster.dir.as_path());
    let runtime = crate::support::runtime();
    let stream = unique("leader-killed");
    let mut settings = KafkaSettings::new(brokers);
    settings.topic_partitions = 3;
    let client = KafkaClient::connect(settings).unwrap();
    runtime.block_on(client.create_stream(&stream, 3)).unwrap();
    let leader = leader_of(brokers, &stream, 0);

    // Each key's records carry their sequence number; the leader dies after a tenth.
    let mut acknowledged: Vec<(String, usize)> = Vec::new();
    let mut failed = 0_usize;
    let mut killed_at = None;
    let mut first_ack_after_kill = None;
    runtime.block_on(async {
        let mut sequence = vec![0_usize; KEYS];
        for window in 0..RECORDS / WINDOW {
            if window == RECORDS / WINDOW / 10 {
                kill_node(dir, leader);
                killed_at = Some(Instant::now());
            }
            let mut deliveries = Vec::with_capacity(WINDOW);
            for n in 0..WINDOW {
                let key = (window * WINDOW + n) % KEYS;
                let seq = sequence[key];
                sequence[key] += 1;
                let record = OutgoingRecord {
                    stream: stream.as_str().into(),
                    key: Some(format!("k{key}").into_bytes()),
                    value: seq.to_string().into_bytes(),
                    headers: Vec::new(),
                };
                let delivery = client.enqueue(record).await.expect("handed over");
                deliveries.push((format!("k{key}"), seq, delivery));
            }
            for (key, seq, delivery) in deliveries {
                match delivery.await {
                    Ok(_) => {
                        if killed_at.is_some() && first_ack_after_kill.is_none() {
                            first_ack_after_kill = Some(Instant::now());
                        }
                        acknowledged.push((key, seq));
                    }
                    Err(error) => {
                        eprintln!("a send failed: {error}");
                        failed += 1;
                    }
                }
            }
        }
    });
    let recovery = first_ack_after_kill
        .zip(killed_at)
        .map(|(acked, killed)| acked.duration_since(killed));
    eprintln!(
        "node {leader} killed: {} of {RECORDS} sends acknowledged, {failed} failed; first acknowledgement after the kill in {recovery:?}",
        acknowledged.len()
    );
    assert!(restart_missing_nodes(dir), "the cluster starts again");

    // Everything written, read back: each acknowledged record once, each key in order.
    let records = read_everything(&runtime, &client, &stream);
    let mut seen: HashMap<(String, usize), usize> = HashMap::new();
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        let key = String::from_utf8(record.key.as_deref().unwrap().to_vec()).unwrap();
        let seq: usize = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
        if let Some(before) = last.insert(key.clone(), seq) {
            assert!(seq > before, "{key}: {seq} after {before}");
        }
        *seen.entry((key, seq)).or_default() += 1;
    }
    for record in &acknowledged {
        assert_eq!(
            seen.get(record),
            Some(&1),
            "acknowledged {record:?} is there once"
        );
    }
    assert!(seen.values().all(|n| *n == 1), "no record twice");
    assert!(
        records.len() <= acknowledged.len() + failed,
        "only what was sent"
    );
}

/// Sends one record of `stream` with `client`: the error, if it was not written.
async fn send_one(client: &KafkaClient, stream: &str, value: &str) -> Result<(), BackendError> {
    let record = OutgoingRecord {
        stream: stream.into(),
        key: Some(b"k".to_vec()),
        value: value.as_bytes().to_vec(),
        headers: Vec::new(),
    };
    ProducerBackend::send(client, record).await.map(drop)
}

#[test]
fn with_two_of_three_nodes_down_a_send_fails_retriably_and_sending_works_again_when_they_return() {
    let Some(cluster) = Cluster::alone() else {
        return;
    };
    let (brokers, dir) = (cluster.brokers.as_str(), cluster.dir.as_path());
    let runtime = crate::support::runtime();
    let stream = unique("quorum-lost");
    let mut settings = KafkaSettings::new(brokers);
    // Shorter than the default 30 s, to keep the test short.
    settings
        .producer
        .insert("message.timeout.ms".into(), "5000".into());
    let client = KafkaClient::connect(settings).unwrap();
    runtime.block_on(client.create_stream(&stream, 1)).unwrap();
    runtime
        .block_on(send_one(&client, &stream, "before"))
        .expect("written with every node up");

    // Below min.insync.replicas (and the controllers' quorum): the send is refused.
    let survivor = leader_of(brokers, &stream, 0);
    let down: Vec<i32> = (1..=3).filter(|node| *node != survivor).collect();
    for node in &down {
        kill_node(dir, *node);
    }
    let started = Instant::now();
    let refused = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                send_one(&client, &stream, "during"),
            )
            .await
        })
        .expect("an answer, not a hang");
    let error = refused.expect_err("a send below min.insync.replicas fails");
    eprintln!(
        "nodes {down:?} down: the send failed after {:?}: {error}",
        started.elapsed()
    );
    assert!(error.is_retriable(), "{error}");

    assert!(restart_missing_nodes(dir), "the cluster starts again");
    let restarted = Instant::now();
    loop {
        match runtime.block_on(send_one(&client, &stream, "after")) {
            Ok(()) => break,
            Err(error) => assert!(
                restarted.elapsed() < Duration::from_secs(120),
                "no send went through within 120 s of the restart: {error}"
            ),
        }
    }
    eprintln!(
        "sending works again {:?} after the nodes restarted",
        restarted.elapsed()
    );

    // What was acknowledged is there, before the outage and after it.
    let records = read_everything(&runtime, &client, &stream);
    let values: Vec<&[u8]> = records.iter().map(|r| &*r.value).collect();
    assert_eq!(values.first(), Some(&&b"before"[..]), "{values:?}");
    assert_eq!(values.last(), Some(&&b"after"[..]), "{values:?}");
}

/// The partition of `__consumer_offsets` that holds `group` (of 3, as the cluster has):
/// Kafka's `abs(group.hashCode()) % partitions`, so its leader is the group's
/// coordinator.
fn offsets_partition_of(group: &str) -> i32 {
    let hash = group.encode_utf16().fold(0_i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % 3
}

#[test]
fn killing_the_group_coordinator_while_two_processes_consume_loses_nothing() {
    const PEOPLE: usize = 3000;
    let Some(cluster) = Cluster::alone() else {
        return;
    };
    let (brokers, dir) = (cluster.brokers.as_str(), cluster.dir.as_path());
    let example = KafkaPeople::new(brokers, "coordinator", 3, &[]);
    let db = example.db();
    example.send(0, PEOPLE);
    let logs = ["member0.log", "member1.log"];
    let members: Vec<Child> = logs.iter().map(|log| example.service(&[], log)).collect();
    example.wait_until("both members hold partitions", WAIT, &logs, || {
        logs.iter()
            .all(|log| example.log(log).contains("partition assigned"))
    });
    example.wait_until("the group handles the first people", WAIT, &logs, || {
        people(&db).count >= i64::try_from(PEOPLE / 2).unwrap()
    });

    let group = example.group();
    let coordinator = leader_of(brokers, "__consumer_offsets", offsets_partition_of(&group));
    kill_node(dir, coordinator);
    let killed = Instant::now();
    example.send(PEOPLE, PEOPLE);
    example.wait_until(
        "the group handles everyone after the coordinator died",
        WAIT,
        &logs,
        || people(&db).count == i64::try_from(2 * PEOPLE).unwrap(),
    );
    let recovered = killed.elapsed();
    for mut member in members {
        terminate(&member);
        assert_eq!(wait_for_exit(&mut member).code(), Some(0));
    }
    assert!(restart_missing_nodes(dir), "the cluster starts again");
    let stored = people(&db);
    eprintln!(
        "coordinator (node {coordinator}) killed: every person handled {recovered:?} later; {} repeated applications",
        stored.duplicates()
    );
    // At most, per member: the records handled since its last answered commit (fewer
    // than commit_every, 100) and the batch on its way.
    assert!(
        stored.duplicates() <= 2 * 2 * 100,
        "repeats bounded by the commit batches: {stored:?}"
    );
}

#[test]
fn with_two_of_three_nodes_down_the_outbox_relay_is_unready_and_sends_every_row_when_they_return() {
    let Some(cluster) = Cluster::alone() else {
        return;
    };
    let (brokers, dir) = (cluster.brokers.as_str(), cluster.dir.as_path());
    crate::outbox::an_outage_holds_the_rows_until_the_brokers_return(brokers, || {
        // Two nodes of three, whichever lead: below min.insync.replicas for every
        // partition.
        for node in [1, 2] {
            kill_node(dir, node);
        }
        move || assert!(restart_missing_nodes(dir), "the cluster starts again")
    });
}
