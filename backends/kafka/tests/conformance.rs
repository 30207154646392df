//! The conformance suites on the Kafka broker of `tests/services` (`LOGPIPE_TEST_KAFKA`):
//! the backend and its admin calls, and the consumer-group offset store.

use logpipe_core::conformance::offsets::StoreSetup;
use logpipe_core::conformance::{Features, StoreFeatures, service, unique};
use logpipe_core::{Admin, PartitionRef};
use logpipe_kafka::{GroupOffsets, KafkaClient, KafkaSettings};

/// Settings that make group changes quick.
fn settings(brokers: &str) -> KafkaSettings {
    let mut settings = KafkaSettings::new(brokers);
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        settings.consumer.insert(key.into(), value.into());
    }
    settings
}

async fn kafka() -> Option<KafkaClient> {
    let brokers = service("LOGPIPE_TEST_KAFKA")?;
    Some(KafkaClient::connect(settings(&brokers)).unwrap())
}

logpipe_core::backend_tests!(kafka, Features::default());
logpipe_core::admin_tests!(kafka, Features::default());

/// The offsets of a new two-partition topic, committed from outside the groups (no
/// consumer of them runs), and read again through a client of its own.
async fn group_offsets() -> Option<StoreSetup<GroupOffsets>> {
    let brokers = service("LOGPIPE_TEST_KAFKA")?;
    let client = KafkaClient::connect(settings(&brokers)).unwrap();
    let stream = unique("offsets");
    client.create_stream(&stream, 2).await.unwrap();
    let partitions = vec![
        PartitionRef::new(stream.as_str(), "0"),
        PartitionRef::new(stream.as_str(), "1"),
    ];
    let reopen = move || KafkaClient::connect(settings(&brokers)).unwrap().offsets();
    Some(StoreSetup {
        store: client.offsets(),
        partitions,
        reopen: Some(Box::new(reopen)),
    })
}

logpipe_core::store_tests!(
    group_offsets,
    StoreFeatures {
        sequences: false,
        fences: false,
    }
);
