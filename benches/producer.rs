//! Three ways to send many messages, on the embedded log and (with the test services) on
//! the Kafka broker, in the same run: a plain loop of `Producer::enqueue` then one
//! `flush`; every message sent at once by its own task (`JoinSet`), the fast way before
//! `enqueue`; and a loop of `send().await`, one round trip per message.
//!
//! ```text
//! cargo bench --bench producer                        # the embedded log
//! tests/services/run cargo bench --bench producer     # and the Kafka broker
//! ```
//!
//! The loops of `enqueue` and the concurrent sends write 20,000 messages a measurement;
//! the loop of `send().await` writes 500 (at one round trip each, 20,000 would take
//! minutes on Kafka); records a second do not depend on the count. It prints
//! criterion's figures, then records a second and the ratios.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Person, mean_ns, output_dir, person, unique};
use criterion::{Criterion, Throughput};
use logpipe::Producer;
use logpipe::backend::Backend;
use logpipe::embedded::EmbeddedLog;
use tokio::task::JoinSet;

/// Messages of a measurement of the enqueue loop and of the concurrent sends.
const MANY: u64 = 20_000;
/// Messages of a measurement of the send loop.
const SERIAL: u64 = 500;

/// The ways measured, with the messages of each measurement.
const WAYS: [(&str, u64); 3] = [
    ("enqueue_loop", MANY),
    ("concurrent_sends", MANY),
    ("send_loop", SERIAL),
];

/// Sends `people` the way `way` names.
async fn send<B: Backend + Clone>(producer: &Producer<B>, people: &Arc<[Person]>, way: &str) {
    match way {
        "enqueue_loop" => {
            for person in people.iter() {
                drop(producer.enqueue(person).await.unwrap());
            }
            producer.flush().await.unwrap();
        }
        "concurrent_sends" => {
            let mut sends = JoinSet::new();
            for n in 0..people.len() {
                let (producer, people) = (producer.clone(), Arc::clone(people));
                sends.spawn(async move { producer.send(&people[n]).await.map(drop) });
            }
            while let Some(sent) = sends.join_next().await {
                sent.unwrap().unwrap();
            }
        }
        _ => {
            for person in people.iter() {
                producer.send(person).await.unwrap();
            }
        }
    }
}

fn bench_backend<B: Backend + Clone>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    backend: &B,
    name: &str,
) {
    let stream = unique(name);
    runtime.block_on(backend.create_stream(&stream, 3)).unwrap();
    let producer = Producer::new(backend.clone(), stream.as_str());
    let mut group = c.benchmark_group(format!("{name}_produce"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    for (way, count) in WAYS {
        let people: Arc<[Person]> = (0..count).map(person).collect();
        group.throughput(Throughput::Elements(count));
        group.bench_function(way, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    runtime.block_on(send(&producer, &people, way));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn report(backends: &[&str]) {
    println!(
        "\n{:<18} {:<18} {:>12} {:>16}",
        "group", "measurement", "records/s", "enqueue speed"
    );
    for name in backends {
        let group = format!("{name}_produce");
        let speed = |way: &str, count: u64| Some(count as f64 * 1e9 / mean_ns(&group, way)?);
        let Some(enqueue) = speed("enqueue_loop", MANY) else {
            continue;
        };
        for (way, count) in WAYS {
            if let Some(speed) = speed(way, count) {
                println!(
                    "{group:<18} {way:<18} {speed:>12.0} {:>15.2}x",
                    enqueue / speed
                );
            }
        }
    }
}

fn main() {
    let runtime = common::runtime();
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let dir = tempfile::tempdir().unwrap();
    let log = runtime.block_on(async { EmbeddedLog::open(dir.path().join("log.db")).unwrap() });
    bench_backend(&mut criterion, &runtime, &log, "embedded");
    let mut backends = vec!["embedded"];
    if let Some(client) = common::test_kafka(&runtime, "producer") {
        bench_backend(&mut criterion, &runtime, &client, "kafka");
        backends.push("kafka");
    }
    criterion.final_summary();
    report(&backends);
}
