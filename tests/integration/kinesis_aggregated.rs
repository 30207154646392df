//! KPL-aggregated records on kinesis-mock: records packed by the official Python library
//! aws-kinesis-agg (`tests/kpl/aggregate.py`, with `LOGPIPE_TEST_PYTHON_KPL` on the path of
//! the test virtualenv's interpreter) are read as their user records, in order, with
//! their keys; a consumer stopped inside an aggregated record goes on at the next user
//! record; corrupted aggregates are dead-lettered.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::consumer::BadRecordPolicy;
use logpipe::dead_letter::{DeadLetter, HEADER_REASON};
use logpipe::embedded::EmbeddedLog;
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{BoxError, Consumer, ConsumerOptions, Context, Position, Registry, handler_fn};
use logpipe_kinesis::sdk::{self, primitives::Blob};
use logpipe_kinesis::{EXPLICIT_HASH_KEY_HEADER, KinesisBackend};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::Deserialize;

use crate::kinesis::{Item, backend_over, consumer_options, fast, fixture, sdk_api};
use crate::support::{Running, read_from_start, read_records, service, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A user record to pack: partition key, explicit hash key, data.
struct UserRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: String,
}

/// An aggregated record as aggregate.py prints it, ready for `PutRecord`.
#[derive(Deserialize)]
struct Packed {
    partition_key: String,
    explicit_hash_key: Option<String>,
    /// Hex.
    data: String,
}

/// The envelope of item `n` under `key`, as any producer writes it.
fn envelope(key: &str, n: u32) -> String {
    format!(r#"json:{{"type":"item","version":1,"message":{{"key":"{key}","n":{n}}}}}"#)
}

/// Packs `users` with aws-kinesis-agg, `per_record` to an aggregated record, spoiled as
/// `corrupt` says (see aggregate.py); `None` (skip) without the test virtualenv.
fn aggregate(
    users: &[UserRecord],
    per_record: usize,
    corrupt: Option<&str>,
) -> Option<Vec<Packed>> {
    let python = service("LOGPIPE_TEST_PYTHON")?;
    let packages = service("LOGPIPE_TEST_PYTHON_KPL")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kpl/aggregate.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--per-record", &per_record.to_string()])
        .env("PYTHONPATH", packages)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(how) = corrupt {
        command.args(["--corrupt", how]);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    for user in users {
        let line = serde_json::json!({
            "partition_key": user.partition_key,
            "explicit_hash_key": user.explicit_hash_key,
            "data": user.data,
        });
        writeln!(input, "{line}").unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "aggregate.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    Some(
        printed
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
    )
}

/// Puts `data` under `key` (and `explicit_hash_key`) and returns its sequence number.
async fn put(
    client: &sdk::Client,
    stream: &str,
    key: &str,
    explicit_hash_key: Option<&str>,
    data: Vec<u8>,
) -> String {
    client
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .set_explicit_hash_key(explicit_hash_key.map(str::to_owned))
        .data(Blob::new(data))
        .send()
        .await
        .unwrap()
        .sequence_number
}

/// Puts each aggregated record, in order; their sequence numbers.
async fn put_packed(client: &sdk::Client, stream: &str, packed: &[Packed]) -> Vec<String> {
    let mut sequences = Vec::new();
    for record in packed {
        sequences.push(
            put(
                client,
                stream,
                &record.partition_key,
                record.explicit_hash_key.as_deref(),
                hex::decode(&record.data).unwrap(),
            )
            .await,
        );
    }
    sequences
}

/// Items `from..=to`, under seven keys taking turns; every fifth with an explicit hash
/// key.
fn items(from: u32, to: u32) -> Vec<UserRecord> {
    (from..=to)
        .map(|n| {
            let key = format!("key-{}", n % 7);
            UserRecord {
                data: envelope(&key, n),
                partition_key: key,
                explicit_hash_key: (n % 5 == 0).then(|| format!("{}", u128::from(n) << 100)),
            }
        })
        .collect()
}

/// What a handler saw: (key, n, position), in handling order.
type Handled = Arc<Mutex<Vec<(String, u32, String)>>>;

/// A registry that records each item, failing (not retried) at item `fail_at`.
fn registry(handled: &Handled, fail_at: Option<u32>) -> Registry {
    let handled = Arc::clone(handled);
    Registry::builder()
        .handle(handler_fn(move |item: Item, context: Context| {
            let fail = fail_at == Some(item.n);
            if !fail {
                handled
                    .lock()
                    .unwrap()
                    .push((item.key, item.n, context.position.to_string()));
            }
            async move {
                if fail {
                    Err::<(), BoxError>("the database is down".into())
                } else {
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap()
}

fn backend(endpoint: &str) -> KinesisBackend {
    backend_over(sdk_api(endpoint), fast())
}

fn ns(handled: &Handled) -> Vec<u32> {
    handled.lock().unwrap().iter().map(|(_, n, _)| *n).collect()
}

#[tokio::test]
async fn aggregated_records_are_read_as_their_user_records_and_a_restart_inside_one_repeats_none() {
    let Some(packed) = aggregate(&items(1, 60), 10, None) else {
        return;
    };
    assert_eq!(packed.len(), 6, "ten user records to an aggregated record");
    let Some((endpoint, client, stream)) = fixture("kpl", 1).await else {
        return;
    };
    // A plain record first, then the aggregated ones.
    let plain = put(
        &client,
        &stream,
        "key-0",
        None,
        envelope("key-0", 0).into_bytes(),
    )
    .await;
    let sequences = put_packed(&client, &stream, &packed).await;
    let backend = backend(&endpoint);

    // Read as 61 records, in order, each with its own key, position and explicit hash key.
    let records = read_from_start(backend.consumer([stream.as_str()]), 61).await;
    let expected = items(1, 60);
    assert_eq!(records[0].position, Position::Sequence(plain.clone()));
    for (i, (record, user)) in records[1..].iter().zip(&expected).enumerate() {
        let (sequence, number) = (&sequences[i / 10], i % 10);
        let position = if number == 9 {
            sequence.clone()
        } else {
            format!("{sequence}:{number}")
        };
        assert_eq!(
            record.position,
            Position::Sequence(position),
            "item {}",
            i + 1
        );
        assert_eq!(record.key.as_deref(), Some(user.partition_key.as_bytes()));
        assert_eq!(record.value, user.data.as_bytes());
        let hash_key = record
            .headers
            .iter()
            .find(|header| header.name == EXPLICIT_HASH_KEY_HEADER)
            .map(|header| String::from_utf8(header.value.clone()).unwrap());
        assert_eq!(hash_key, user.explicit_hash_key, "item {}", i + 1);
    }

    // A consumer that stops at item 16 (user record 5 of the second aggregated record)
    // has stored the position after user record 4 of it.
    let store = MemoryOffsetStore::new();
    let options = ConsumerOptions {
        commit_every: 1,
        max_retries: 0,
        ..consumer_options()
    };
    let first = Handled::default();
    let consumer = Consumer::new(
        backend.consumer([stream.as_str()]),
        store.clone(),
        registry(&first, Some(16)),
        "g",
    )
    .with_options(options.clone());
    let stopped = tokio::time::timeout(WAIT, Running::start(consumer).task)
        .await
        .expect("the consumer stops at the failing record")
        .unwrap();
    assert!(stopped.is_err(), "{stopped:?}");
    assert_eq!(ns(&first), (0..16).collect::<Vec<_>>());
    let stored = store.positions("g");
    assert_eq!(
        stored
            .iter()
            .map(|(_, p)| p.to_string())
            .collect::<Vec<_>>(),
        [format!("{}:4", sequences[1])],
        "the position inside the aggregated record"
    );

    // Started again, it goes on at item 16: none repeated, none skipped.
    let second = Handled::default();
    let consumer = Consumer::new(
        backend.consumer([stream.as_str()]),
        store.clone(),
        registry(&second, None),
        "g",
    )
    .with_options(options);
    let running = Running::start(consumer);
    wait_until("items 16 to 60 are handled", WAIT, || {
        second.lock().unwrap().len() >= 45
    })
    .await;
    running.stop().await;
    assert_eq!(ns(&second), (16..=60).collect::<Vec<_>>());
    assert_eq!(
        store.positions("g")[0].1,
        Position::Sequence(sequences[5].clone()),
        "after the whole last aggregated record"
    );
}

#[tokio::test]
async fn corrupted_aggregates_are_dead_lettered_as_they_are_and_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let Some(good) = aggregate(&items(1, 3), 3, None) else {
        return;
    };
    let bad_digest = aggregate(&items(4, 5), 2, Some("digest")).unwrap();
    let bad_message = aggregate(&items(6, 7), 2, Some("message")).unwrap();
    let Some((endpoint, client, stream)) = fixture("kpl-corrupt", 1).await else {
        return;
    };
    put_packed(&client, &stream, &good).await;
    put_packed(&client, &stream, &bad_digest).await;
    put_packed(&client, &stream, &bad_message).await;
    put(
        &client,
        &stream,
        "key-1",
        None,
        envelope("key-1", 8).into_bytes(),
    )
    .await;

    let dead = EmbeddedLog::open_in_memory().unwrap();
    let handled = Handled::default();
    let consumer = Consumer::new(
        backend(&endpoint).consumer([stream.as_str()]),
        MemoryOffsetStore::new(),
        registry(&handled, None),
        "g",
    )
    .with_options(ConsumerOptions {
        on_bad_record: BadRecordPolicy::DeadLetter,
        ..consumer_options()
    })
    .with_dead_letter(DeadLetter::new(dead.clone(), "kpl.dead"));
    let running = Running::start(consumer);
    wait_until("the plain record after them is handled", WAIT, || {
        ns(&handled).contains(&8)
    })
    .await;
    running.stop().await;
    assert_eq!(ns(&handled), [1, 2, 3, 8]);
    let dead_lettered = read_records(&dead, "kpl.dead", 2).await;
    for (record, spoiled) in dead_lettered.iter().zip([&bad_digest[0], &bad_message[0]]) {
        assert_eq!(
            record.value,
            hex::decode(&spoiled.data).unwrap(),
            "kept as it was"
        );
        let reason = record.headers.iter().find(|h| h.name == HEADER_REASON);
        assert_eq!(reason.map(|h| h.value.as_slice()), Some(&b"malformed"[..]));
    }
    let corrupt: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "logpipe_kinesis_corrupt_aggregated_records_total")
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("not a counter: {other:?}"),
        })
        .sum();
    assert_eq!(corrupt, 2);
}
