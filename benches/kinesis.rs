//! Kinesis throughput through logpipe beside raw aws-sdk-kinesis calls on the same
//! emulator, in the same run.
//!
//! ```text
//! tests/services/run cargo bench --bench kinesis
//! ```
//!
//! Producer: 500 records through logpipe's `Producer` (sent at once, batched by the
//! backend) beside one raw `PutRecords` call carrying the same 500 records, and beside 500
//! raw `PutRecord` calls one after another (django-logpipe's way). Each measurement
//! writes to a fresh 4-shard stream (kinesis-mock slows down as a stream fills).
//!
//! Consumer: 1000 records of a 1-shard stream read from the start through logpipe's
//! `Consumer` (decoded and dispatched to a handler) beside raw `GetRecords` calls.
//!
//! With `LOGPIPE_TEST_PYTHON` (the test virtualenv), django-logpipe's own producer is
//! timed too, once, sending the same 500 messages through `tests/django_logpipe/peer.py`.
//!
//! Needs `LOGPIPE_TEST_KINESIS` (the emulator's endpoint); without it, it says so and
//! measures nothing.

mod common;

use common::{Person, mean_ns, output_dir, person, unique};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput};
use logpipe::envelope::{self, Format, Header};
use logpipe::kinesis::{KinesisBackend, KinesisOptions};
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{BoxError, Consumer, Context, Message, Producer, Registry, handler_fn};
use logpipe_kinesis::sdk::primitives::Blob;
use logpipe_kinesis::sdk::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use logpipe_kinesis::{SdkApi, sdk};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const REGION: &str = "us-east-1";
const WRITES: u64 = 500;
const READS: u64 = 1000;

/// The record value logpipe writes for `person(n)`, for the raw calls to write too.
fn value(n: u64) -> Vec<u8> {
    let header = Header {
        message_type: Person::TYPE,
        version: Person::VERSION,
        producer: None,
    };
    envelope::encode(Format::Json, &header, &person(n)).unwrap()
}

fn client(endpoint: &str) -> sdk::Client {
    let options = logpipe_kinesis::ClientOptions {
        region: Some(REGION.into()),
        endpoint: Some(endpoint.into()),
    };
    logpipe_kinesis::client_with_keys(&options, "bench", "bench")
}

async fn create_stream(client: &sdk::Client, shards: i32) -> String {
    let stream = unique("stream");
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .unwrap();
        if *summary
            .stream_description_summary()
            .unwrap()
            .stream_status()
            == StreamStatus::Active
        {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} is not active after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn backend(client: &sdk::Client) -> KinesisBackend {
    let options = KinesisOptions {
        poll_interval_ms: 50,
        ..KinesisOptions::default()
    };
    KinesisBackend::with_api(
        Arc::new(SdkApi::from_client(client.clone())),
        REGION,
        options,
    )
    .unwrap()
}

async fn raw_put_records(client: &sdk::Client, stream: &str) {
    let entries = (0..WRITES)
        .map(|n| {
            PutRecordsRequestEntry::builder()
                .partition_key(person(n).uuid)
                .data(Blob::new(value(n)))
                .build()
                .unwrap()
        })
        .collect();
    let output = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(output.failed_record_count(), Some(0));
}

async fn raw_put_record_each(client: &sdk::Client, stream: &str) {
    for n in 0..WRITES {
        client
            .put_record()
            .stream_name(stream)
            .partition_key(person(n).uuid)
            .data(Blob::new(value(n)))
            .send()
            .await
            .unwrap();
    }
}

async fn logpipe_send(backend: &KinesisBackend, stream: &str) {
    let producer = Producer::new(backend.clone(), stream);
    let sends: Vec<_> = (0..WRITES)
        .map(|n| {
            let producer = producer.clone();
            tokio::spawn(async move { producer.send(&person(n)).await.unwrap() })
        })
        .collect();
    for send in sends {
        send.await.unwrap();
    }
}

async fn raw_read(client: &sdk::Client, stream: &str) {
    let shard = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_owned();
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator()
        .unwrap()
        .to_owned();
    let mut read = 0;
    while read < READS {
        let page = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .unwrap();
        read += page.records().len() as u64;
        iterator = page.next_shard_iterator().unwrap().to_owned();
    }
}

async fn logpipe_read(backend: &KinesisBackend, stream: &str) {
    let handled = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let (count, stop) = (Arc::clone(&handled), shutdown.clone());
    let registry = Registry::builder()
        .handle(handler_fn(move |person: Person, _: Context| {
            std::hint::black_box(person);
            if count.fetch_add(1, Ordering::SeqCst) + 1 == READS {
                stop.cancel();
            }
            async { Ok::<_, BoxError>(()) }
        }))
        .build()
        .unwrap();
    let consumer = Consumer::new(
        backend.consumer([stream]),
        MemoryOffsetStore::new(),
        registry,
        unique("group"),
    );
    consumer.run(shutdown).await.unwrap();
    assert!(handled.load(Ordering::SeqCst) >= READS);
}

/// Times `write` into a fresh 4-shard stream per iteration, made before the clock starts.
fn time_writes(
    b: &mut Bencher,
    runtime: &Runtime,
    client: &sdk::Client,
    write: impl AsyncFn(&str),
) {
    b.iter_custom(|iters| {
        runtime.block_on(async {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let stream = create_stream(client, 4).await;
                let start = Instant::now();
                write(&stream).await;
                spent += start.elapsed();
            }
            spent
        })
    });
}

fn bench(c: &mut Criterion, runtime: &Runtime, endpoint: &str) {
    let client = client(endpoint);
    let backend = backend(&client);

    let mut producer = c.benchmark_group("kinesis_producer");
    producer.throughput(Throughput::Elements(WRITES));
    producer.sample_size(10);
    producer.bench_function("raw_put_records", |b| {
        time_writes(b, runtime, &client, async |stream| {
            raw_put_records(&client, stream).await;
        });
    });
    producer.bench_function("logpipe", |b| {
        time_writes(b, runtime, &client, async |stream| {
            logpipe_send(&backend, stream).await;
        });
    });
    producer.bench_function("raw_put_record_each", |b| {
        time_writes(b, runtime, &client, async |stream| {
            raw_put_record_each(&client, stream).await;
        });
    });
    producer.finish();

    let stream = runtime.block_on(async {
        let stream = create_stream(&client, 1).await;
        for _ in 0..READS / WRITES {
            raw_put_records(&client, &stream).await;
        }
        stream
    });
    let mut consumer = c.benchmark_group("kinesis_consumer");
    consumer.throughput(Throughput::Elements(READS));
    consumer.sample_size(10);
    consumer.bench_function("raw_get_records", |b| {
        b.iter(|| runtime.block_on(raw_read(&client, &stream)))
    });
    consumer.bench_function("logpipe", |b| {
        b.iter(|| runtime.block_on(logpipe_read(&backend, &stream)))
    });
    consumer.finish();
}

/// Records a second django-logpipe's producer sends, timed by the peer script.
fn django_logpipe_send_rate(
    runtime: &Runtime,
    client: &sdk::Client,
    endpoint: &str,
) -> Option<f64> {
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())?;
    let stream = runtime.block_on(create_stream(client, 4));
    let dir = std::env::temp_dir().join(unique("django"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bench_settings.py"),
        r#"SECRET_KEY = "bench"
INSTALLED_APPS = ["logpipe"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGPIPE = {
    "PRODUCER_BACKEND": "logpipe.backend.kinesis.Producer",
    "CONSUMER_BACKEND": "logpipe.backend.kinesis.Consumer",
    "OFFSET_BACKEND": "logpipe.backend.kinesis.ModelOffsetStore",
    "KINESIS_REGION": "us-east-1",
}
"#,
    )
    .unwrap();
    let lines: String = (0..WRITES)
        .map(|n| {
            let p = person(n);
            let message = serde_json::json!({
                "uuid": p.uuid, "first_name": p.first_name, "last_name": p.last_name,
                "age": p.age, "score": 0.5, "active": true, "tags": [p.email, p.city],
            });
            serde_json::json!({"type": "person", "version": 2, "message": message}).to_string()
                + "\n"
        })
        .collect();
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_logpipe/peer.py");
    let mut child = std::process::Command::new(python)
        .arg(peer)
        .args(["send", &stream])
        .env("DJANGO_SETTINGS_MODULE", "bench_settings")
        .env("PYTHONPATH", &dir)
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "the peer script failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last()?).ok()?;
    Some(last["count"].as_f64()? / last["seconds"].as_f64()?)
}

fn report(django_rate: Option<f64>) {
    common::print_speeds(&[
        (
            "kinesis_producer",
            WRITES,
            &["raw_put_records", "logpipe", "raw_put_record_each"],
        ),
        ("kinesis_consumer", READS, &["raw_get_records", "logpipe"]),
    ]);
    if let (Some(rate), Some(logpipe)) = (django_rate, mean_ns("kinesis_producer", "logpipe")) {
        let logpipe_rate = WRITES as f64 * 1e9 / logpipe;
        println!(
            "{:<18} {:<20} {:>12.0} {:>13.2}x   (measured once)",
            "kinesis_producer",
            "django_logpipe",
            rate,
            logpipe_rate / rate
        );
    }
}

fn main() {
    let Some(endpoint) = std::env::var("LOGPIPE_TEST_KINESIS")
        .ok()
        .filter(|e| !e.is_empty())
    else {
        eprintln!(
            "LOGPIPE_TEST_KINESIS is not set: run `tests/services/run cargo bench --bench kinesis`"
        );
        return;
    };
    let runtime = Runtime::new().unwrap();
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut criterion, &runtime, &endpoint);
    criterion.final_summary();
    let django_rate = django_logpipe_send_rate(&runtime, &client(&endpoint), &endpoint);
    report(django_rate);
}
