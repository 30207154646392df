//! Envelope encoding, and decoding plus dispatch to a handler, beside plain `serde_json`
//! on the same 200-byte message, measured in the same run.
//!
//! `cargo bench --bench envelope` prints criterion's figures, then the ratio of each
//! logpipe measurement to its baseline and the messages per second on one core, then the
//! same ratios measured in pairs: baseline and logpipe in turn, in many short rounds, so
//! that both see the same moments of a shared machine's load.

mod common;

use common::{mean_ns, output_dir};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use logpipe::envelope::{self, Format, Header};
use logpipe::{BoxError, Context, Message, PartitionRef, Position, Registry, handler_fn};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
struct Person {
    uuid: String,
    first_name: String,
    last_name: String,
    email: String,
    city: String,
    age: u32,
    active: bool,
    tags: Vec<String>,
}

/// The message of the Kafka and Kinesis benches, with tags: a 200-byte body.
fn person() -> Person {
    let base = common::person(0);
    Person {
        uuid: base.uuid,
        first_name: base.first_name,
        last_name: base.last_name,
        email: base.email,
        city: base.city,
        age: base.age,
        active: base.active,
        tags: vec!["navy".into(), "cobol".into(), "compilers".into()],
    }
}

/// Polls a future that never waits, as the benchmarked handlers never do.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the handler waited"),
    }
}

/// A measured job: one encode, or one decode and dispatch.
type Job<'a> = Box<dyn FnMut() + 'a>;

fn bench(c: &mut Criterion, paired: bool) {
    let message = person();
    let plain = serde_json::to_vec(&message).unwrap();
    println!("message size: {} bytes of JSON", plain.len());
    let header = Header {
        message_type: Person::TYPE,
        version: Person::VERSION,
        producer: Some("crm"),
    };

    let mut encode = c.benchmark_group("encode");
    encode.throughput(Throughput::Elements(1));
    encode.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&message)).unwrap())
    });
    encode.bench_function("logpipe_json", |b| {
        b.iter(|| envelope::encode(Format::Json, &header, black_box(&message)).unwrap())
    });
    encode.bench_function("logpipe_msgpack", |b| {
        b.iter(|| envelope::encode(Format::Msgpack, &header, black_box(&message)).unwrap())
    });
    encode.finish();

    let registry = Registry::builder()
        .handle(handler_fn(|person: Person, _: Context| {
            black_box(person);
            async { Ok::<_, BoxError>(()) }
        }))
        .build()
        .unwrap();
    let json = envelope::encode(Format::Json, &header, &message).unwrap();
    let msgpack = envelope::encode(Format::Msgpack, &header, &message).unwrap();
    let context = Context::new(
        "group",
        PartitionRef::new("people", "0"),
        Position::Offset(0),
    );

    let mut decode = c.benchmark_group("decode_dispatch");
    decode.throughput(Throughput::Elements(1));
    decode.bench_function("serde_json", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Person>(black_box(&plain)).unwrap()))
    });
    decode.bench_function("logpipe_json", |b| {
        b.iter(|| complete(registry.dispatch(black_box(&json), context.clone())).unwrap())
    });
    decode.bench_function("logpipe_msgpack", |b| {
        b.iter(|| complete(registry.dispatch(black_box(&msgpack), context.clone())).unwrap())
    });
    decode.finish();
    report();

    if paired {
        let encode_plain = || {
            black_box(serde_json::to_vec(black_box(&message)).unwrap());
        };
        let encode_json = || {
            black_box(envelope::encode(Format::Json, &header, black_box(&message)).unwrap());
        };
        let decode_plain = || {
            black_box(serde_json::from_slice::<Person>(black_box(&plain)).unwrap());
        };
        let dispatch = |value: &[u8]| {
            complete(registry.dispatch(black_box(value), context.clone())).unwrap();
        };
        print_paired(&mut [
            (
                "encode",
                "logpipe_json",
                Box::new(encode_plain),
                Box::new(encode_json),
            ),
            (
                "decode_dispatch",
                "logpipe_json",
                Box::new(decode_plain),
                Box::new(|| dispatch(&json)),
            ),
            (
                "decode_dispatch",
                "logpipe_msgpack",
                Box::new(decode_plain),
                Box::new(|| dispatch(&msgpack)),
            ),
        ]);
    }
}

/// Rounds of a paired measurement, and the calls of each job in one round: about ten
/// milliseconds, long enough that changing from one job to the other (whose code and
/// data the caches then hold) costs little, short enough that both see the same load.
/// Rounds of a millisecond made logpipe, the larger job, look 5-10% slower.
const ROUNDS: usize = 200;
const CALLS_PER_ROUND: u32 = 20_000;

/// The time `candidate` takes over the time `baseline` takes, round by round, the two
/// run in turn (which goes first alternates): its lower quartile, median and upper
/// quartile.
fn paired_ratio(baseline: &mut dyn FnMut(), candidate: &mut dyn FnMut()) -> [f64; 3] {
    let time = |job: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            job();
        }
        start.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            if round % 2 == 0 {
                let base = time(baseline);
                time(candidate) / base
            } else {
                let took = time(candidate);
                took / time(baseline)
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    [
        ratios[ROUNDS / 4],
        ratios[ROUNDS / 2],
        ratios[ROUNDS * 3 / 4],
    ]
}

/// Prints the paired ratio of each (group, measurement, baseline, candidate).
fn print_paired(pairs: &mut [(&str, &str, Job<'_>, Job<'_>)]) {
    println!(
        "\npaired with serde_json, {ROUNDS} rounds of {CALLS_PER_ROUND} calls each:\n{:<18} {:<16} {:>8} {:>18}",
        "group", "measurement", "ratio", "quartiles"
    );
    for (group, id, baseline, candidate) in pairs {
        let [low, median, high] = paired_ratio(baseline, candidate);
        println!("{group:<18} {id:<16} {median:>7.2}x {low:>8.2}x - {high:.2}x");
    }
}

fn report() {
    println!(
        "\n{:<18} {:<16} {:>10} {:>14} {:>8}",
        "group", "measurement", "ns/msg", "msgs/s/core", "ratio"
    );
    for group in ["encode", "decode_dispatch"] {
        let Some(baseline) = mean_ns(group, "serde_json") else {
            continue;
        };
        for id in ["serde_json", "logpipe_json", "logpipe_msgpack"] {
            if let Some(ns) = mean_ns(group, id) {
                println!(
                    "{group:<18} {id:<16} {ns:>10.1} {:>14.0} {:>7.2}x",
                    1e9 / ns,
                    ns / baseline
                );
            }
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // Only when benchmarking, and not under a profiler (`--profile-time`), which
    // measures one job alone.
    let arguments: Vec<String> = std::env::args().collect();
    let paired = arguments.iter().any(|argument| argument == "--bench")
        && !arguments
            .iter()
            .any(|argument| argument == "--profile-time");
    bench(&mut criterion, paired);
    criterion.final_summary();
}
