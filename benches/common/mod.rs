//! What the benches share: where criterion writes, reading back its figures so that a
//! bench can print ratios against its baseline, the message the Kafka and Kinesis
//! benches send, and names of their own for streams.

use std::path::{Path, PathBuf};

use logpipe::Message;
use serde::{Deserialize, Serialize};

/// The message the Kafka and Kinesis benches send: about 210 bytes in its JSON envelope.
#[allow(dead_code, reason = "the concurrency bench sends jobs of its own")]
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
pub struct Person {
    pub uuid: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub city: String,
    pub age: u32,
    pub active: bool,
}

/// Message number `n`: the same but for its key.
#[allow(dead_code, reason = "the concurrency bench sends jobs of its own")]
pub fn person(n: u64) -> Person {
    Person {
        uuid: format!("6f1c2a4e-8b9d-4c3e-a1f0-{n:012}"),
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
        email: "grace.hopper@example.com".into(),
        city: "New York".into(),
        age: 85,
        active: true,
    }
}

/// Where criterion writes its figures.
pub fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

/// The mean time of one criterion measurement of this run, in nanoseconds.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = output_dir().join(group).join(id).join("new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["mean"]["point_estimate"].as_f64()
}

/// A stream or group name no other run uses.
#[allow(dead_code, reason = "the envelope bench names no streams")]
pub fn unique(what: &str) -> String {
    logpipe_core::conformance::unique(&format!("bench-{what}"))
}

/// Prints, for each group of measurements of `records` records, each measurement's
/// records a second and how fast logpipe (the measurement `logpipe`) is against it: above
/// 1, logpipe is faster.
#[allow(dead_code, reason = "the envelope bench prints its own table")]
pub fn print_speeds(groups: &[(&str, u64, &[&str])]) {
    println!(
        "\n{:<18} {:<20} {:>12} {:>14}",
        "group", "measurement", "records/s", "logpipe speed"
    );
    for (group, records, ids) in groups {
        let Some(logpipe) = mean_ns(group, "logpipe") else {
            continue;
        };
        for id in *ids {
            if let Some(ns) = mean_ns(group, id) {
                println!(
                    "{group:<18} {id:<20} {:>12.0} {:>13.2}x",
                    *records as f64 * 1e9 / ns,
                    ns / logpipe
                );
            }
        }
    }
}

/// Prints, for each group of measurements of `records` records, each measurement's
/// records a second and its speed against the group's `baseline` measurement: above 1,
/// it is faster.
#[allow(
    dead_code,
    reason = "only the PostgreSQL and outbox benches have baselines of their own"
)]
pub fn print_ratios(groups: &[(&str, u64, &str, &[&str])]) {
    println!(
        "\n{:<22} {:<18} {:>12} {:>10}",
        "group", "measurement", "records/s", "ratio"
    );
    for (group, records, baseline, ids) in groups {
        let Some(base) = mean_ns(group, baseline) else {
            continue;
        };
        for id in *ids {
            if let Some(ns) = mean_ns(group, id) {
                println!(
                    "{group:<22} {id:<18} {:>12.0} {:>9.2}x",
                    *records as f64 * 1e9 / ns,
                    base / ns
                );
            }
        }
    }
}

/// The runtime a bench runs in: two worker threads, as many as the test machines have
/// cores.
#[allow(dead_code, reason = "the envelope bench runs no runtime")]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A client of the test broker that creates the topics it writes to, or `None` (saying
/// so, with the command that would measure it) when `LOGPIPE_TEST_KAFKA` is not set.
#[cfg(feature = "kafka")]
#[allow(
    dead_code,
    reason = "only the benches of the embedded log and Kafka use it"
)]
pub fn test_kafka(
    runtime: &tokio::runtime::Runtime,
    bench: &str,
) -> Option<logpipe::kafka::KafkaClient> {
    let Ok(brokers) = std::env::var("LOGPIPE_TEST_KAFKA") else {
        eprintln!(
            "LOGPIPE_TEST_KAFKA is not set: Kafka is not measured (run `tests/services/run cargo bench --bench {bench}`)"
        );
        return None;
    };
    let mut settings = logpipe::kafka::KafkaSettings::new(brokers);
    settings.create_topics = true;
    // The client's background work starts inside the runtime.
    Some(runtime.block_on(async { logpipe::kafka::KafkaClient::connect(settings).unwrap() }))
}
