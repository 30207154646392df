//! What concurrent handling buys: records a second through one consumer whose handler
//! awaits a 5 ms timer (a database write, say), at `concurrency` 1, 16, 64 and 256 with
//! `ordering = "key"` over 1,000 keys, against the ideal `min(concurrency, keys) / 5 ms`
//! and against the same waits with no consumer at all (tokio's timer alone, which wakes
//! later than asked);
//! a handler that does nothing at `concurrency` 256 against 1 (what the machinery costs
//! when handlers never wait); and SQLite inserts of 20,000 rows by a per-record handler
//! (one transaction each) against a `BatchHandler` (one transaction per 500).
//!
//! ```text
//! cargo bench --bench concurrency                        # the embedded log
//! tests/services/run cargo bench --bench concurrency     # and the Kafka broker
//! ```
//!
//! Each measurement reads records written before the clock starts, as a new group, and
//! times the handling only: from the first handler call to the last record handled (a
//! Kafka group's join is not the consumer's speed). At low concurrency, fewer records
//! are read (400 per call in flight, up to 20,000), so that a run takes seconds, not
//! minutes; records a second do not depend on the count. It prints criterion's figures,
//! then records a second and the ratios.

mod common;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{mean_ns, output_dir, unique};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use logpipe::backend::{Backend, StartFrom};
use logpipe::consumer::Ordering;
use logpipe::embedded::EmbeddedLog;
use logpipe::offsets::{MemoryOffsetStore, OffsetStore, SqliteOffsetStore};
use logpipe::{
    BatchError, Consumer, ConsumerOptions, Context, Message, Producer, Registry, batch_handler_fn,
    handler_fn,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Records written to each stream, and read at high concurrency.
const RECORDS: u64 = 20_000;
/// Keys the records are spread over.
const KEYS: u64 = 1_000;
/// What the timer handler waits.
const DELAY: Duration = Duration::from_millis(5);
/// Concurrency levels measured with the timer handler.
const LEVELS: [u32; 4] = [1, 16, 64, 256];
/// Records a batch handler gets at most.
const BATCH: u32 = 500;

/// A unit of work on one of [`KEYS`] keys.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "job", version = 1, key = "key")]
struct Job {
    key: String,
    n: i64,
}

/// Records read with the timer handler at `concurrency`.
fn records_at(concurrency: u32) -> u64 {
    (u64::from(concurrency) * 400).min(RECORDS)
}

/// Writes [`RECORDS`] jobs to a new stream of 4 partitions and returns its name.
fn fill<B: Backend + Clone>(runtime: &tokio::runtime::Runtime, backend: &B, what: &str) -> String {
    let stream = unique(what);
    runtime.block_on(async {
        backend.create_stream(&stream, 4).await.unwrap();
        let producer = Producer::new(backend.clone(), stream.as_str());
        let mut sends = JoinSet::new();
        for n in 0..RECORDS {
            let producer = producer.clone();
            let job = Job {
                key: format!("key-{}", n % KEYS),
                n: n as i64,
            };
            sends.spawn(async move { producer.send(&job).await.map(drop) });
        }
        while let Some(sent) = sends.join_next().await {
            sent.unwrap().unwrap();
        }
    });
    stream
}

/// When the first handler call started and the last record was handled.
#[derive(Default)]
struct Clock {
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    handled: AtomicU64,
}

impl Clock {
    fn start(&self) {
        self.first.lock().unwrap().get_or_insert_with(Instant::now);
    }

    /// Counts `records` handled; notes the time and cancels `stop` once `total` are.
    fn handled(&self, records: u64, total: u64, stop: &CancellationToken) {
        if self.handled.fetch_add(records, AtomicOrdering::SeqCst) + records >= total {
            self.last.lock().unwrap().get_or_insert_with(Instant::now);
            stop.cancel();
        }
    }

    /// From the first handler call to the last record handled.
    fn took(&self) -> Duration {
        let first = self.first.lock().unwrap().expect("records were handled");
        let last = self.last.lock().unwrap().expect("every record was handled");
        last - first
    }
}

/// What each measured handler does.
#[derive(Clone, Copy)]
enum Work {
    /// Awaits [`DELAY`].
    Timer,
    /// Nothing.
    Nothing,
}

/// Reads `total` records of `stream` as a new group with `concurrency` calls in flight,
/// and returns how long the handling took.
fn consume<B: Backend, S: OffsetStore>(
    runtime: &tokio::runtime::Runtime,
    backend: &B,
    store: S,
    stream: &str,
    registry: impl FnOnce(Arc<Clock>, CancellationToken) -> Registry,
    options: ConsumerOptions,
) -> Duration {
    let clock = Arc::new(Clock::default());
    let shutdown = CancellationToken::new();
    let registry = registry(Arc::clone(&clock), shutdown.clone());
    let group = unique("group");
    let reader = backend
        .open_consumer(&group, &[stream.to_owned()], StartFrom::Earliest)
        .unwrap();
    let consumer = Consumer::new(reader, store, registry, group.as_str()).with_options(options);
    runtime.block_on(consumer.run(shutdown)).unwrap();
    // Not the shutdown after it: storing positions and leaving the group.
    clock.took()
}

/// The waits of the timer handler with no consumer: `total` waits of [`DELAY`],
/// `concurrency` at a time, in one set of futures polled by one task as a consumer polls
/// its calls. What tokio's timer allows, the baseline of the timer measurements.
fn timers_alone(runtime: &tokio::runtime::Runtime, concurrency: u32, total: u64) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        let mut waits = FuturesUnordered::new();
        for _ in 0..total {
            if waits.len() == concurrency as usize {
                waits.next().await;
            }
            waits.push(tokio::time::sleep(DELAY));
        }
        while waits.next().await.is_some() {}
        start.elapsed()
    })
}

fn bench_timers_alone(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("tokio_timer");
    configure(&mut group);
    for concurrency in LEVELS {
        let total = records_at(concurrency);
        group.throughput(Throughput::Elements(total));
        group.bench_function(format!("c{concurrency}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| timers_alone(runtime, concurrency, total))
                    .sum()
            })
        });
    }
    group.finish();
}

/// A registry whose job handler does `work`, stopping the consumer after `total`.
fn job_registry(work: Work, total: u64) -> impl FnOnce(Arc<Clock>, CancellationToken) -> Registry {
    move |clock, stop| {
        Registry::builder()
            .handle(handler_fn(move |job: Job, _: Context| {
                clock.start();
                let (clock, stop) = (Arc::clone(&clock), stop.clone());
                async move {
                    if let Work::Timer = work {
                        tokio::time::sleep(DELAY).await;
                    }
                    std::hint::black_box(job);
                    clock.handled(1, total, &stop);
                    Ok::<_, std::convert::Infallible>(())
                }
            }))
            .build()
            .unwrap()
    }
}

fn options(concurrency: u32) -> ConsumerOptions {
    ConsumerOptions {
        concurrency,
        ordering: Ordering::Key,
        ..ConsumerOptions::default()
    }
}

/// Measures the timer handler at each level, and the no-op handler at 1 and 256, on
/// `backend` (group names start with `name`).
fn bench_backend<B: Backend + Clone>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    backend: &B,
    name: &str,
) {
    let stream = fill(runtime, backend, name);
    let measurements = [
        ("timer", Work::Timer, LEVELS.as_slice()),
        ("noop", Work::Nothing, [1, 256].as_slice()),
    ];
    for (what, work, levels) in measurements {
        let mut group = c.benchmark_group(format!("{name}_{what}"));
        configure(&mut group);
        for &concurrency in levels {
            let total = match work {
                Work::Timer => records_at(concurrency),
                Work::Nothing => RECORDS,
            };
            group.throughput(Throughput::Elements(total));
            group.bench_function(format!("c{concurrency}"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let registry = job_registry(work, total);
                            let store = MemoryOffsetStore::new();
                            consume(
                                runtime,
                                backend,
                                store,
                                &stream,
                                registry,
                                options(concurrency),
                            )
                        })
                        .sum()
                })
            });
        }
        group.finish();
    }
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS jobs (key TEXT NOT NULL, n INTEGER NOT NULL)";
const INSERT: &str = "INSERT INTO jobs (key, n) VALUES (?1, ?2)";

/// SQLite inserts, one transaction per record against one per batch of [`BATCH`], with
/// the positions in the same transactions.
fn bench_batches(c: &mut Criterion, runtime: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let log = runtime.block_on(async { EmbeddedLog::open(dir.join("batches.db")).unwrap() });
    let stream = fill(runtime, &log, "batches");
    let table = dir.join("jobs.db");
    rusqlite::Connection::open(&table)
        .unwrap()
        .execute(CREATE, [])
        .unwrap();
    let store = SqliteOffsetStore::open(&table).unwrap();
    let mut group = c.benchmark_group("sqlite_inserts");
    configure(&mut group);
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("per_record", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let rows = store.clone();
                    let registry = move |clock: Arc<Clock>, stop: CancellationToken| {
                        Registry::builder()
                            .handle(handler_fn(move |job: Job, context: Context| {
                                clock.start();
                                let (clock, stop, rows) =
                                    (Arc::clone(&clock), stop.clone(), rows.clone());
                                async move {
                                    rows.transaction(&context, move |tx| {
                                        tx.execute(INSERT, rusqlite::params![job.key, job.n])
                                    })
                                    .await?;
                                    clock.handled(1, RECORDS, &stop);
                                    Ok::<_, logpipe::BoxError>(())
                                }
                            }))
                            .build()
                            .unwrap()
                    };
                    consume(runtime, &log, store.clone(), &stream, registry, options(1))
                })
                .sum()
        })
    });
    group.bench_function("batch_500", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let rows = store.clone();
                    let registry = move |clock: Arc<Clock>, stop: CancellationToken| {
                        Registry::builder()
                            .handle_batch(batch_handler_fn(move |jobs: Vec<(Job, Context)>| {
                                clock.start();
                                let (clock, stop, rows) =
                                    (Arc::clone(&clock), stop.clone(), rows.clone());
                                async move {
                                    let count = jobs.len() as u64;
                                    let (jobs, contexts): (Vec<Job>, Vec<Context>) =
                                        jobs.into_iter().unzip();
                                    rows.transaction_batch(&contexts, move |tx| {
                                        let mut insert = tx.prepare_cached(INSERT)?;
                                        for job in &jobs {
                                            insert.execute(rusqlite::params![job.key, job.n])?;
                                        }
                                        Ok(())
                                    })
                                    .await?;
                                    clock.handled(count, RECORDS, &stop);
                                    Ok::<_, BatchError>(())
                                }
                            }))
                            .build()
                            .unwrap()
                    };
                    let options = ConsumerOptions {
                        batch_max_records: BATCH,
                        ..options(1)
                    };
                    consume(runtime, &log, store.clone(), &stream, registry, options)
                })
                .sum()
        })
    });
    group.finish();
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
}

/// Records a second of a measurement of `records` records, if it ran.
fn speed(group: &str, id: &str, records: u64) -> Option<f64> {
    Some(records as f64 * 1e9 / mean_ns(group, id)?)
}

fn report(backends: &[&str]) {
    println!(
        "\n{:<22} {:>6} {:>12} {:>10} {:>10} {:>10}",
        "timer handler (5 ms)", "calls", "records/s", "of ideal", "vs c1", "vs timer"
    );
    for name in ["tokio_timer"].iter().chain(backends) {
        let group = match *name {
            "tokio_timer" => name.to_string(),
            _ => format!("{name}_timer"),
        };
        let Some(serial) = speed(&group, "c1", records_at(1)) else {
            continue;
        };
        for concurrency in LEVELS {
            let id = format!("c{concurrency}");
            let alone = speed("tokio_timer", &id, records_at(concurrency));
            if let Some(speed) = speed(&group, &id, records_at(concurrency)) {
                let ideal = f64::from(concurrency).min(KEYS as f64) / DELAY.as_secs_f64();
                println!(
                    "{name:<22} {concurrency:>6} {speed:>12.0} {:>10.2} {:>9.1}x {:>9.2}x",
                    speed / ideal,
                    speed / serial,
                    alone.map_or(f64::NAN, |alone| speed / alone)
                );
            }
        }
    }
    println!(
        "\n{:<22} {:>14} {:>14} {:>10}",
        "no-op handler", "c1 records/s", "c256 records/s", "c256/c1"
    );
    for name in backends {
        let group = format!("{name}_noop");
        if let (Some(one), Some(many)) =
            (speed(&group, "c1", RECORDS), speed(&group, "c256", RECORDS))
        {
            println!("{name:<22} {one:>14.0} {many:>14.0} {:>9.2}x", many / one);
        }
    }
    if let (Some(each), Some(batched)) = (
        speed("sqlite_inserts", "per_record", RECORDS),
        speed("sqlite_inserts", "batch_500", RECORDS),
    ) {
        println!(
            "\nsqlite inserts: per record {each:.0} rows/s, batches of {BATCH} {batched:.0} rows/s: {:.1}x",
            batched / each
        );
    }
}

fn main() {
    let runtime = common::runtime();
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let dir = tempfile::tempdir().unwrap();
    let log = runtime.block_on(async { EmbeddedLog::open(dir.path().join("log.db")).unwrap() });
    bench_timers_alone(&mut criterion, &runtime);
    bench_backend(&mut criterion, &runtime, &log, "embedded");
    bench_batches(&mut criterion, &runtime, dir.path());
    let mut backends = vec!["embedded"];
    if let Some(client) = common::test_kafka(&runtime, "concurrency") {
        bench_backend(&mut criterion, &runtime, &client, "kafka");
        backends.push("kafka");
    }
    criterion.final_summary();
    report(&backends);
}
