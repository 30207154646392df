//! What every backend does with records: it writes them where it says, hands them to
//! consumers with their keys, values, headers, positions and times, keeps each key's
//! order, assigns partitions before their records, seeks to stored positions, and
//! pauses and resumes a partition without skipping or repeating a record.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Features, WAIT, partitions, read, read_all, unique};
use crate::{
    Backend, BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery,
    OutgoingRecord, PartitionRef, Position, Record, RecordHeader, StartFrom,
};

/// A new stream of `partitions` partitions.
async fn stream<B: Backend>(backend: &B, what: &str, partitions: u32) -> String {
    let stream = unique(what);
    backend
        .create_stream(&stream, partitions)
        .await
        .expect("creating the stream");
    stream
}

fn record(
    stream: &str,
    key: Option<&str>,
    value: String,
    headers: Vec<RecordHeader>,
) -> OutgoingRecord {
    OutgoingRecord {
        stream: stream.into(),
        key: key.map(|key| key.as_bytes().to_vec()),
        value: value.into_bytes(),
        headers,
    }
}

fn header(name: &str, value: &str) -> RecordHeader {
    RecordHeader {
        name: name.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

/// Hands `records` to the backend one after another, then waits until all are
/// written, and returns where each landed.
pub(crate) async fn send_in_order<B: Backend>(
    backend: &B,
    records: Vec<OutgoingRecord>,
) -> Vec<Delivery> {
    tokio::time::timeout(WAIT, crate::send_all(backend, records))
        .await
        .expect("every send within the wait")
        .expect("sending")
}

/// Records sent with keys (some keyless) and headers are read back from the partitions
/// and positions their deliveries named, with their keys, values, headers (where the
/// backend keeps them) and a write time; a key's records share one partition.
pub async fn round_trip_keeps_keys_values_headers_and_positions<B: Backend>(
    backend: B,
    features: Features,
) {
    let stream = stream(&backend, "round-trip", 3).await;
    let before = SystemTime::now();
    let sent: Vec<OutgoingRecord> = (0..30)
        .map(|n| {
            let key = (n % 5 != 4).then(|| format!("key-{}", n % 5));
            let headers = vec![header("n", &n.to_string()), header("empty", "")];
            record(
                &stream,
                key.as_deref(),
                format!("value {n} \u{e9}"),
                headers,
            )
        })
        .collect();
    let mut deliveries = Vec::new();
    for record in sent.clone() {
        deliveries.push(backend.send(record).await.expect("sending"));
    }
    backend.flush().await.expect("flushing");
    let after = SystemTime::now();
    let read = read_all(&backend, std::slice::from_ref(&stream), sent.len()).await;
    let by_place: HashMap<(PartitionRef, String), &Record> = read
        .iter()
        .map(|r| ((r.partition.clone(), r.position.to_string()), r))
        .collect();
    let mut key_partitions: HashMap<Vec<u8>, BTreeSet<PartitionRef>> = HashMap::new();
    for (record, delivery) in sent.iter().zip(&deliveries) {
        assert_eq!(&*delivery.partition.stream, stream.as_str());
        let place = (delivery.partition.clone(), delivery.position.to_string());
        let got = by_place
            .get(&place)
            .unwrap_or_else(|| panic!("no record at {place:?}, where a send landed"));
        match (&record.key, features.random_keys) {
            (None, true) => assert!(got.key.is_some(), "a random key at {place:?}"),
            (key, _) => assert_eq!(got.key.as_deref(), key.as_deref(), "key at {place:?}"),
        }
        assert_eq!(got.value, record.value, "value at {place:?}");
        let expected_headers = if features.headers {
            record.headers.clone()
        } else {
            Vec::new()
        };
        assert_eq!(got.headers, expected_headers, "headers at {place:?}");
        let written = got.timestamp.expect("a write time");
        let slack = Duration::from_secs(5);
        assert!(
            written + slack >= before && written <= after + slack,
            "written at {written:?}, sent between {before:?} and {after:?}"
        );
        if let Some(key) = &record.key {
            key_partitions
                .entry(key.clone())
                .or_default()
                .insert(delivery.partition.clone());
        }
    }
    for (key, partitions) in key_partitions {
        assert_eq!(partitions.len(), 1, "key {key:?} went to {partitions:?}");
    }
}

/// Records sent at once, handed to the backend in order, are read back in that order
/// within each key.
pub async fn records_of_one_key_stay_in_the_order_they_were_sent<B: Backend>(
    backend: B,
    _features: Features,
) {
    let stream = stream(&backend, "key-order", 3).await;
    let keys = 4;
    let sent: Vec<OutgoingRecord> = (0..200)
        .map(|n| {
            let key = format!("key-{}", n % keys);
            record(&stream, Some(&key), n.to_string(), Vec::new())
        })
        .collect();
    send_in_order(&backend, sent).await;
    let read = read_all(&backend, std::slice::from_ref(&stream), 200).await;
    let mut by_key: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    for record in read {
        let n = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
        by_key
            .entry(record.key.unwrap().into())
            .or_default()
            .push(n);
    }
    assert_eq!(by_key.len(), keys);
    for (key, numbers) in by_key {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, sorted, "key {key:?} read out of order");
    }
}

/// A consumer sought to a record's position reads on from the record after it.
pub async fn a_consumer_goes_on_after_the_position_it_is_sought_to<B: Backend>(
    backend: B,
    _features: Features,
) {
    let stream = stream(&backend, "seek", 1).await;
    let mut deliveries = Vec::new();
    for n in 0..10 {
        let sent = backend
            .send(record(&stream, Some("k"), n.to_string(), Vec::new()))
            .await;
        deliveries.push(sent.expect("sending"));
    }
    let mut consumer = backend
        .open_consumer(
            &unique("seek"),
            std::slice::from_ref(&stream),
            StartFrom::Earliest,
        )
        .expect("a consumer");
    let stored = &deliveries[3];
    let reading = async {
        loop {
            match consumer.next_event().await.expect("reading") {
                ConsumerEvent::Assigned(assigned) => {
                    for partition in &assigned {
                        consumer
                            .seek(partition, Some(&stored.position))
                            .await
                            .expect("seeking");
                    }
                }
                ConsumerEvent::Records(records) if !records.is_empty() => return records,
                _ => {}
            }
        }
    };
    let records = tokio::time::timeout(WAIT, reading).await.expect("records");
    let first = &records[0];
    assert_eq!(
        (&first.partition, &first.position),
        (&deliveries[4].partition, &deliveries[4].position),
        "the first record after {}",
        stored.position
    );
    assert_eq!(first.value, b"4".as_slice());
}

/// A new consumer is told of every partition of its stream before any record of it.
pub async fn partitions_are_assigned_before_their_records<B: Backend>(
    backend: B,
    _features: Features,
) {
    let stream = stream(&backend, "assigned", 3).await;
    let sent: Vec<OutgoingRecord> = (0..12)
        .map(|n| record(&stream, Some(&format!("k{n}")), n.to_string(), Vec::new()))
        .collect();
    send_in_order(&backend, sent).await;
    let expected: BTreeSet<PartitionRef> =
        partitions(&backend, &stream).await.into_iter().collect();
    assert_eq!(expected.len(), 3);
    let mut consumer = backend
        .open_consumer(
            &unique("assigned"),
            std::slice::from_ref(&stream),
            StartFrom::Earliest,
        )
        .expect("a consumer");
    let mut assigned = BTreeSet::new();
    let mut read = 0;
    let reading = async {
        while read < 12 {
            match consumer.next_event().await.expect("reading") {
                ConsumerEvent::Assigned(partitions) => {
                    for partition in partitions {
                        consumer.seek(&partition, None).await.expect("seeking");
                        assigned.insert(partition);
                    }
                }
                ConsumerEvent::Records(records) => {
                    for record in records {
                        assert!(
                            assigned.contains(&record.partition),
                            "a record of {} before its assignment",
                            record.partition
                        );
                        read += 1;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .expect("every record");
    assert_eq!(assigned, expected);
}

/// A stream name outside [`STREAM_NAME_RULE`](crate::STREAM_NAME_RULE) is refused at
/// the first call that takes it (creating, sending, opening a consumer), naming the
/// rule, whichever backend it is: a name the embedded log took would fail on Kafka or
/// Kinesis.
pub async fn a_stream_name_outside_the_rule_is_refused_naming_it<B: Backend>(
    backend: B,
    _features: Features,
) {
    for name in ["a/b c", "", "people\u{e9}"] {
        let refused = |what: &str, result: Result<(), BackendError>| {
            let error = result.expect_err(&format!("{what} {name:?} is refused"));
            assert_eq!(error.kind(), BackendErrorKind::Rejected, "{error}");
            assert!(
                error.to_string().contains(crate::STREAM_NAME_RULE),
                "{error}"
            );
        };
        refused("creating", backend.create_stream(name, 1).await);
        let record = OutgoingRecord {
            stream: name.into(),
            key: None,
            value: b"v".to_vec(),
            headers: Vec::new(),
        };
        refused("sending to", backend.enqueue(record).await.map(drop));
        let opened =
            backend.open_consumer(&unique("names"), &[name.to_owned()], StartFrom::Earliest);
        refused("reading", opened.map(drop));
    }
}

/// A stream that does not exist is `NotFound` when described, and its consumer says so
/// too (or creates it, on a backend that creates streams on first use).
pub async fn a_missing_stream_is_not_found_or_created<B: Backend>(backend: B, features: Features) {
    let missing = unique("missing");
    let described = backend.describe_stream(&missing).await;
    assert_eq!(
        described
            .map(|partitions| partitions.len())
            .unwrap_err()
            .kind(),
        BackendErrorKind::NotFound
    );
    let mut consumer = backend
        .open_consumer(
            &unique("missing"),
            std::slice::from_ref(&missing),
            StartFrom::Earliest,
        )
        .expect("a consumer");
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match consumer.next_event().await {
                Ok(ConsumerEvent::Assigned(partitions)) => return Ok(partitions),
                Ok(_) => {}
                Err(error) if error.is_retriable() => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("an answer within the wait");
    if features.creates_streams {
        assert!(!first.expect("the stream is created").is_empty());
        assert!(backend.describe_stream(&missing).await.is_ok());
    } else {
        let error = first.expect_err("a missing stream is an error");
        assert_eq!(error.kind(), BackendErrorKind::NotFound, "{error}");
        assert!(
            error_text(&error).contains(&missing),
            "{}",
            error_text(&error)
        );
    }
}

fn error_text(error: &BackendError) -> String {
    crate::error_chain(error)
}

/// A record read from one stream and written to another, as a dead-letter stream gets
/// it, keeps its key and value, and its headers with one more (where the backend keeps
/// headers).
pub async fn a_record_copied_to_another_stream_keeps_key_value_and_headers<B: Backend>(
    backend: B,
    features: Features,
) {
    let from = stream(&backend, "copied-from", 1).await;
    let to = stream(&backend, "copied-to", 1).await;
    let value = b"json:{\"type\":\"t\",\"version\":1,\"message\":{}}\xff".to_vec();
    let original = OutgoingRecord {
        stream: from.as_str().into(),
        key: Some(b"k-1".to_vec()),
        value: value.clone(),
        headers: vec![header("trace", "abc")],
    };
    backend.send(original).await.expect("sending");
    let read = read_all(&backend, std::slice::from_ref(&from), 1).await;
    let mut headers = read[0].headers.clone();
    headers.push(header("logpipe.reason", "malformed"));
    let copy = OutgoingRecord {
        stream: Arc::from(to.as_str()),
        key: read[0].key.as_deref().map(<[u8]>::to_vec),
        value: read[0].value.to_vec(),
        headers: headers.clone(),
    };
    backend.send(copy).await.expect("writing the copy");
    let copied = read_all(&backend, std::slice::from_ref(&to), 1).await;
    assert_eq!(copied[0].key.as_deref(), Some(&b"k-1"[..]));
    assert_eq!(copied[0].value, value);
    let expected = if features.headers {
        headers
    } else {
        Vec::new()
    };
    assert_eq!(copied[0].headers, expected);
}

/// Records with keys of their own, numbered from `from`, sent at once; where each landed.
async fn send_numbered<B: Backend>(
    backend: &B,
    stream: &str,
    numbers: std::ops::Range<u32>,
) -> Vec<(u32, Delivery)> {
    let sent = numbers
        .clone()
        .map(|n| record(stream, Some(&format!("key-{n}")), n.to_string(), Vec::new()))
        .collect();
    numbers.zip(send_in_order(backend, sent).await).collect()
}

/// The numbers sent to `partition`, in the order they were written there.
fn numbers_in(sent: &[(u32, Delivery)], partition: &PartitionRef) -> Vec<u32> {
    let mut numbers: Vec<&(u32, Delivery)> = sent
        .iter()
        .filter(|(_, delivery)| delivery.partition == *partition)
        .collect();
    // Offsets by value, sequence numbers (decimal, of any length) by length then digits.
    numbers.sort_by_key(|(_, delivery)| match &delivery.position {
        Position::Offset(offset) => (0, *offset, String::new()),
        Position::Sequence(sequence) => (sequence.len(), 0, sequence.clone()),
    });
    numbers.into_iter().map(|(n, _)| *n).collect()
}

/// The numbers (values) of `records` read from `partition`, in order.
fn numbers_read(records: &[Record], partition: &PartitionRef) -> Vec<u32> {
    records
        .iter()
        .filter(|record| record.partition == *partition)
        .map(|record| {
            std::str::from_utf8(&record.value)
                .ok()
                .and_then(|text| text.parse().ok())
                .expect("a number")
        })
        .collect()
}

/// A consumer that pauses a partition reads the others on without it; resumed, it reads
/// the paused partition from just after its last record, skipping and repeating none.
pub async fn a_paused_partition_goes_on_where_it_stopped_when_resumed<B: Backend>(
    backend: B,
    features: Features,
) {
    let stream = stream(&backend, "paused", 2).await;
    let before = send_numbered(&backend, &stream, 0..20).await;
    let mut consumer = backend
        .open_consumer(
            &unique("paused"),
            std::slice::from_ref(&stream),
            StartFrom::Earliest,
        )
        .expect("a consumer");
    let mut read_before = read(&mut consumer, before.len()).await;
    let paused = before[0].1.partition.clone();
    let other = partitions(&backend, &stream)
        .await
        .into_iter()
        .find(|p| *p != paused)
        .expect("a second partition");
    consumer
        .pause(std::slice::from_ref(&paused))
        .expect("pausing");

    // Records written after the pause: the other partition's arrive, the paused one's
    // (where the backend pauses) do not.
    let after = send_numbered(&backend, &stream, 20..60).await;
    let (paused_after, other_after) = (numbers_in(&after, &paused), numbers_in(&after, &other));
    assert!(
        !paused_after.is_empty() && !other_after.is_empty(),
        "both partitions got records: {after:?}"
    );
    let mut read_while_paused = Vec::new();
    let others_arrive = async {
        while numbers_read(&read_while_paused, &other).len() < other_after.len() {
            if let ConsumerEvent::Records(records) = consumer.next_event().await.expect("reading") {
                read_while_paused.extend(records);
            }
        }
    };
    tokio::time::timeout(WAIT, others_arrive)
        .await
        .expect("the other partition's records while one is paused");
    if features.pauses {
        let more = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let ConsumerEvent::Records(records) =
                    consumer.next_event().await.expect("reading")
                {
                    read_while_paused.extend(records);
                }
            }
        })
        .await;
        assert!(more.is_err());
        assert_eq!(
            numbers_read(&read_while_paused, &paused),
            Vec::<u32>::new(),
            "records of {paused} while it was paused"
        );
    }

    consumer
        .resume(std::slice::from_ref(&paused))
        .expect("resuming");
    read_before.extend(read_while_paused);
    let expected = numbers_in(&before, &paused)
        .into_iter()
        .chain(paused_after)
        .collect::<Vec<_>>();
    let resumed = async {
        while numbers_read(&read_before, &paused).len() < expected.len() {
            if let ConsumerEvent::Records(records) = consumer.next_event().await.expect("reading") {
                read_before.extend(records);
            }
        }
    };
    tokio::time::timeout(WAIT, resumed)
        .await
        .expect("the paused partition's records once resumed");
    assert_eq!(
        numbers_read(&read_before, &paused),
        expected,
        "{paused}: every record once, in order"
    );
    assert_eq!(
        numbers_read(&read_before, &other),
        numbers_in(&before, &other)
            .into_iter()
            .chain(other_after)
            .collect::<Vec<_>>(),
        "{other}: every record once, in order"
    );
}
