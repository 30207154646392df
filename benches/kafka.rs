//! Produce and consume throughput on a real Kafka broker through logpipe, beside plain
//! rdkafka doing the same on the same broker, in the same run, with 200-byte records.
//!
//! ```text
//! tests/services/run cargo bench --bench kafka
//! ```
//!
//! logpipe encodes each message into its envelope, and decodes each record and hands it
//! to a handler. Plain rdkafka (with logpipe's producer settings) is measured twice each
//! way: as the transport alone (sending a value encoded once, leaving each payload it
//! reads untouched), and doing the same job as logpipe with `serde_json` (encoding each
//! message into the same envelope, decoding each payload into the message), as an
//! application without logpipe must. The messages are built before the clock starts.
//! Every consumer commits its positions before it leaves, as a consumer that does not
//! read everything again after a restart must.
//! logpipe consumes once more with `concurrency = 256` (`logpipe_c256`), to show what
//! concurrent handling costs a handler that never waits. It is also measured with
//! `compression.type = "lz4"` turned on (`logpipe_lz4`;
//! its consume measurement reads a topic written that way), to show what the
//! uncompressed default costs or saves.
//!
//! It needs `LOGPIPE_TEST_KAFKA` (set by `tests/services/run`); without it, it says so and
//! measures nothing. It prints criterion's figures, then records per second and how fast
//! logpipe is against each measurement, then each consume measurement in its phases:
//! joining the group (until the first record), reading the records (first to last), and
//! leaving it; only the middle one is the clients' own work.

mod common;

use common::{Person, output_dir, person, unique};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use logpipe::backend::{Backend, StartFrom};
use logpipe::kafka::{KafkaClient, KafkaSettings};
use logpipe::{Consumer, ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Records sent in one produce measurement.
const PRODUCE: u64 = 20_000;
/// Records read in one consume measurement.
const CONSUME: u64 = 100_000;

/// The producer settings logpipe uses, for the rdkafka baseline.
fn raw_producer(brokers: &str) -> FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

/// A record value as an application without logpipe writes and reads it: `json:` and
/// this envelope.
#[derive(Serialize, Deserialize)]
struct Envelope<'a, M> {
    #[serde(rename = "type")]
    message_type: &'a str,
    version: u64,
    message: M,
}

/// The record value of `person`, encoded without logpipe.
fn raw_value(person: &Person) -> Vec<u8> {
    let mut value = b"json:".to_vec();
    let envelope = Envelope {
        message_type: Person::TYPE,
        version: Person::VERSION,
        message: person,
    };
    serde_json::to_writer(&mut value, &envelope).unwrap();
    value
}

/// Starts `send(n)` for every `n` below `count` at once, and waits until all succeeded.
fn all_at_once<F, E>(runtime: &tokio::runtime::Runtime, count: usize, send: impl Fn(usize) -> F)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Debug + Send + 'static,
{
    runtime.block_on(async {
        let mut sends = JoinSet::new();
        for n in 0..count {
            sends.spawn(send(n));
        }
        while let Some(sent) = sends.join_next().await {
            sent.unwrap().unwrap();
        }
    });
}

/// How long `iters` runs of `run` take.
fn timed(iters: u64, mut run: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    start.elapsed()
}

/// The phases of one consume measurement, from its start: until its first record was
/// read, until its last one, and until the member had left its group.
#[derive(Clone, Copy)]
struct Phases {
    first: Duration,
    last: Duration,
    end: Duration,
}

/// Notes a consume measurement's phases as its records are read.
struct PhaseClock {
    start: Instant,
    first: OnceLock<Duration>,
    last: OnceLock<Duration>,
}

impl PhaseClock {
    fn start() -> Self {
        Self {
            start: Instant::now(),
            first: OnceLock::new(),
            last: OnceLock::new(),
        }
    }

    /// Record number `read` (from 1) was read.
    fn read(&self, read: u64) {
        if read == 1 {
            let _ = self.first.set(self.start.elapsed());
        }
        if read == CONSUME {
            let _ = self.last.set(self.start.elapsed());
        }
    }

    fn finish(&self) -> Phases {
        Phases {
            first: self.first.get().copied().unwrap_or_default(),
            last: self.last.get().copied().unwrap_or_default(),
            end: self.start.elapsed(),
        }
    }
}

/// The phases of every consume measurement's runs, by measurement.
type PhaseLog = RefCell<BTreeMap<&'static str, Vec<Phases>>>;

/// Reads the `CONSUME` records of `topic` through plain rdkafka, as a new member of a new
/// group, handing each payload to `read`.
fn raw_consume(brokers: &str, topic: &str, read: impl Fn(&[u8])) -> Phases {
    let clock = PhaseClock::start();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("raw"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut done = 0;
    while done < CONSUME {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            read(rdkafka::Message::payload(&message.unwrap()).unwrap_or_default());
            done += 1;
            clock.read(done);
        }
    }
    // Its positions reach the group before it leaves, as logpipe's do: the job of a
    // consumer that does not read everything again after a restart.
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(consumer);
    clock.finish()
}

/// A logpipe client with its default settings, or with `compression.type` set.
fn client(brokers: &str, compression: Option<&str>) -> KafkaClient {
    let mut settings = KafkaSettings::new(brokers);
    settings.create_topics = true;
    settings.topic_partitions = 3;
    if let Some(codec) = compression {
        settings
            .producer
            .insert("compression.type".into(), codec.into());
    }
    KafkaClient::connect(settings).unwrap()
}

fn bench(c: &mut Criterion, runtime: &tokio::runtime::Runtime, brokers: &str, phases: &PhaseLog) {
    let lz4_client = client(brokers, Some("lz4"));
    let client = client(brokers, None);
    let topic: Arc<str> = unique("produce").into();
    runtime
        .block_on(client.ensure_topics(&[topic.to_string()]))
        .unwrap();
    let people: Arc<[Person]> = (0..PRODUCE).map(person).collect();
    let value: Arc<[u8]> = raw_value(&people[0]).into();
    println!("record value: {} bytes", value.len());
    let raw = raw_producer(brokers);
    let producer = Producer::new(client.clone(), Arc::clone(&topic));
    let lz4_producer = Producer::new(lz4_client.clone(), Arc::clone(&topic));
    let send_raw = |encode: bool| {
        let (raw, topic, people, value) = (&raw, &topic, &people, &value);
        move |n: usize| {
            let (raw, topic) = (raw.clone(), Arc::clone(topic));
            let (people, value) = (Arc::clone(people), Arc::clone(value));
            async move {
                let person = &people[n];
                let encoded = encode.then(|| raw_value(person));
                let record = FutureRecord::to(&topic)
                    .key(&person.uuid)
                    .payload(encoded.as_deref().unwrap_or(&value));
                let sent = raw.send(record, Duration::from_secs(60)).await;
                sent.map(drop).map_err(|(error, _)| error)
            }
        }
    };

    let mut produce = c.benchmark_group("kafka_produce");
    produce.throughput(Throughput::Elements(PRODUCE));
    produce.sample_size(10);
    produce.bench_function("rdkafka", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                all_at_once(runtime, people.len(), send_raw(false))
            })
        })
    });
    produce.bench_function("rdkafka_serde", |b| {
        b.iter_custom(|iters| timed(iters, || all_at_once(runtime, people.len(), send_raw(true))))
    });
    for (id, producer) in [("logpipe", &producer), ("logpipe_lz4", &lz4_producer)] {
        produce.bench_function(id, |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    all_at_once(runtime, people.len(), |n| {
                        let (producer, people) = (producer.clone(), Arc::clone(&people));
                        async move { producer.send(&people[n]).await.map(drop) }
                    })
                })
            })
        });
    }
    produce.finish();

    // Topics holding CONSUME records, read from the start by a new group each time: one
    // written with the default settings, one with lz4 compression.
    let fill = |client: &KafkaClient, name: &str| {
        let topic = unique(name);
        runtime
            .block_on(client.ensure_topics(std::slice::from_ref(&topic)))
            .unwrap();
        let filler = Producer::new(client.clone(), topic.as_str());
        all_at_once(runtime, CONSUME as usize, |n| {
            let filler = filler.clone();
            async move { filler.send(&person(n as u64)).await.map(drop) }
        });
        topic
    };
    let topic = fill(&client, "consume");
    let lz4_topic = fill(&lz4_client, "consume-lz4");

    let mut consume = c.benchmark_group("kafka_consume");
    consume.throughput(Throughput::Elements(CONSUME));
    consume.sample_size(10);
    let noted = |id: &'static str, run: Phases| {
        phases.borrow_mut().entry(id).or_default().push(run);
    };
    consume.bench_function("rdkafka", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let run = raw_consume(brokers, &topic, |payload| {
                    black_box(payload);
                });
                noted("rdkafka", run);
            })
        })
    });
    consume.bench_function("rdkafka_serde", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let run = raw_consume(brokers, &topic, |payload| {
                    let json = payload.strip_prefix(b"json:").unwrap();
                    let envelope: Envelope<'_, Person> = serde_json::from_slice(json).unwrap();
                    black_box((envelope.message_type, envelope.version, envelope.message));
                });
                noted("rdkafka_serde", run);
            })
        })
    });
    let consumers = [
        ("logpipe", &topic, 1),
        ("logpipe_c256", &topic, 256),
        ("logpipe_lz4", &lz4_topic, 1),
    ];
    for (id, topic, concurrency) in consumers {
        consume.bench_function(id, |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    let clock = Arc::new(PhaseClock::start());
                    let handled = Arc::new(AtomicU64::new(0));
                    let shutdown = CancellationToken::new();
                    let (counter, stop) = (Arc::clone(&handled), shutdown.clone());
                    let read = Arc::clone(&clock);
                    let registry = Registry::builder()
                        .handle(handler_fn(move |person: Person, _: Context| {
                            black_box(person);
                            let handled = counter.fetch_add(1, Ordering::Relaxed) + 1;
                            read.read(handled);
                            if handled == CONSUME {
                                stop.cancel();
                            }
                            async { Ok::<_, std::convert::Infallible>(()) }
                        }))
                        .build()
                        .unwrap();
                    let group = unique("logpipe");
                    let backend = client
                        .open_consumer(&group, std::slice::from_ref(topic), StartFrom::Configured)
                        .unwrap();
                    let consumer =
                        Consumer::new(backend, client.offsets(), registry, group.as_str())
                            .with_options(ConsumerOptions {
                                concurrency,
                                ..ConsumerOptions::default()
                            });
                    runtime.block_on(consumer.run(shutdown)).unwrap();
                    assert_eq!(handled.load(Ordering::Relaxed), CONSUME);
                    noted(id, clock.finish());
                })
            })
        });
    }
    consume.finish();
}

fn report() {
    common::print_speeds(&[
        (
            "kafka_produce",
            PRODUCE,
            &["rdkafka", "rdkafka_serde", "logpipe", "logpipe_lz4"],
        ),
        (
            "kafka_consume",
            CONSUME,
            &[
                "rdkafka",
                "rdkafka_serde",
                "logpipe",
                "logpipe_c256",
                "logpipe_lz4",
            ],
        ),
    ]);
}

/// Prints the median of each consume measurement's phases, and how fast logpipe reads
/// against each once the group is joined: above 1, logpipe is faster.
fn print_phases(phases: &PhaseLog) {
    let medians: BTreeMap<&str, [f64; 3]> = phases
        .borrow()
        .iter()
        .map(|(id, runs)| {
            let median = |phase: fn(&Phases) -> f64| {
                let mut values: Vec<f64> = runs.iter().map(phase).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let join = median(|run| run.first.as_secs_f64());
            let read = median(|run| (run.last - run.first).as_secs_f64());
            let leave = median(|run| (run.end - run.last).as_secs_f64());
            (*id, [join, read, leave])
        })
        .collect();
    let Some([_, logpipe_read, _]) = medians.get("logpipe").copied() else {
        return;
    };
    println!(
        "\nkafka_consume phases, medians of {} runs each:\n{:<16} {:>9} {:>16} {:>10} {:>14}",
        phases.borrow().values().map(Vec::len).min().unwrap_or(0),
        "measurement",
        "join ms",
        "read records/s",
        "leave ms",
        "logpipe read"
    );
    for (id, [join, read, leave]) in medians {
        println!(
            "{id:<16} {:>9.0} {:>16.0} {:>10.0} {:>13.2}x",
            join * 1e3,
            (CONSUME - 1) as f64 / read,
            leave * 1e3,
            read / logpipe_read
        );
    }
}

fn main() {
    let Ok(brokers) = std::env::var("LOGPIPE_TEST_KAFKA") else {
        eprintln!(
            "LOGPIPE_TEST_KAFKA is not set: run `tests/services/run cargo bench --bench kafka`"
        );
        return;
    };
    let runtime = common::runtime();
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let phases = PhaseLog::default();
    bench(&mut criterion, &runtime, &brokers, &phases);
    criterion.final_summary();
    report();
    print_phases(&phases);
}
