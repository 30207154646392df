//! The Apache Kafka driver of logpipe: records in and out over rdkafka, with partitions
//! and offsets. The `logpipe` crate adapts it to its backend traits (feature `kafka`).
//!
//! - [`KafkaClient`] connects to a cluster and writes records: idempotent, acknowledged by
//!   every in-sync replica, batched by librdkafka;
//! - [`KafkaConsumer`] reads as a member of a consumer group and reports assignments and
//!   revocations as [`KafkaEvent`]s, each one answered before the group moves on;
//! - [`GroupOffsets`] commits positions to the consumer group through the consumers that
//!   hold the partitions.
//!
//! Each consumer sets the gauge `logpipe_kafka_consumer_lag{group,stream,partition}`
//! (through the `metrics` facade) every five seconds: the records of each assigned
//! partition it has not handled yet, counted from the positions the application reports
//! with [`KafkaConsumer::stored`].
//!
//! Topic names go through [`KafkaSettings::topic_prefix`]: the stream `people` is the topic
//! `<prefix>people`. A stream name that starts with `^` is a regular expression matched
//! against whole topic names (librdkafka's pattern subscription).
//!
//! ```no_run
//! use logpipe_kafka::{KafkaClient, KafkaSettings};
//!
//! # async fn example() -> Result<(), logpipe_kafka::KafkaError> {
//! let client = KafkaClient::connect(KafkaSettings::new("127.0.0.1:9092"))?;
//! let (partition, offset) = client.send("people", Some(b"6f1c"), b"json:{}", &[]).await?;
//! client.flush().await?;
//! # Ok(())
//! # }
//! ```

mod admin;
mod consumer;
mod error;
mod lag;
mod producer;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;

pub use admin::{PartitionWatermarks, is_group_busy};
pub use consumer::{GroupOffsets, KafkaConsumer, KafkaEvent, KafkaRecord, StartFrom};
pub use error::{ErrorKind, KafkaError, SettingsLayer};
pub use lag::LAG_GAUGE;
pub use producer::{KafkaClient, Queued};

/// How to reach a Kafka cluster and how to use it.
///
/// librdkafka properties come in three layers: [`global`](Self::global) for every client,
/// then [`producer`](Self::producer) or [`consumer`](Self::consumer) on top. They override
/// this crate's defaults:
///
/// - producer: `enable.idempotence=true`, `acks=all`, `linger.ms=5`,
///   `compression.type=none` (every Kafka client reads uncompressed batches, among them
///   kafka-python as django-logpipe installs it, which reads lz4, snappy and zstd only with
///   optional packages), `partitioner=murmur2_random` (the partitioner of the Java and
///   Python clients, so that one key lands on one partition whichever client wrote it;
///   keyless records are spread at random);
/// - consumer: `enable.auto.commit=false`, `auto.offset.reset=earliest`,
///   `topic.metadata.refresh.interval.ms=10000` (partitions added later are read within
///   about ten seconds);
/// - both: `allow.auto.create.topics=false`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaSettings {
    /// The bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Put before every stream name to make its topic name. Default empty.
    pub topic_prefix: String,
    /// Create missing topics instead of failing. Default false.
    pub create_topics: bool,
    /// Partitions of created topics; -1 for the broker's default. Default -1.
    pub topic_partitions: i32,
    /// Replication factor of created topics; -1 for the broker's default. Default -1.
    pub topic_replication: i32,
    /// librdkafka properties of every client.
    pub global: BTreeMap<String, String>,
    /// librdkafka properties of producers.
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties of consumers.
    pub consumer: BTreeMap<String, String>,
}

const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("compression.type", "none"),
    ("partitioner", "murmur2_random"),
    ("allow.auto.create.topics", "false"),
];

const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("topic.metadata.refresh.interval.ms", "10000"),
    ("allow.auto.create.topics", "false"),
];

impl KafkaSettings {
    /// Settings for the cluster at `brokers` (`host:port`, comma-separated), with defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            create_topics: false,
            topic_partitions: -1,
            topic_replication: -1,
            global: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }

    /// The topic of `stream`: the prefix and the name, or a pattern (`^...`) unchanged.
    pub fn topic(&self, stream: &str) -> String {
        if stream.starts_with('^') {
            stream.to_owned()
        } else {
            format!("{}{stream}", self.topic_prefix)
        }
    }

    /// The stream of `topic`: its name without the prefix (unchanged when it has none).
    pub fn stream<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(&self.topic_prefix).unwrap_or(topic)
    }

    /// Checks every librdkafka property, as the clients would at start-up.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Setting`] naming the first bad property and its layer.
    pub fn validate(&self) -> Result<(), KafkaError> {
        for layer in [SettingsLayer::Producer, SettingsLayer::Consumer] {
            let config = self.client_config(layer, None);
            config
                .create_native_config()
                .map_err(|source| self.setting_error(layer, source))?;
        }
        Ok(())
    }

    /// The librdkafka configuration of a producer or consumer (the admin client uses the
    /// producer's), with `group.id` for consumers.
    fn client_config(&self, layer: SettingsLayer, group: Option<&str>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set_log_level(RDKafkaLogLevel::Warning);
        let (defaults, overrides) = match layer {
            SettingsLayer::Consumer => (CONSUMER_DEFAULTS, &self.consumer),
            _ => (PRODUCER_DEFAULTS, &self.producer),
        };
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        if let Some(group) = group {
            config.set("group.id", group);
        }
        for (key, value) in self.global.iter().chain(overrides) {
            config.set(key, value);
        }
        config
    }

    /// Turns librdkafka's refusal of a property into an error naming the layer it came
    /// from.
    fn setting_error(
        &self,
        layer: SettingsLayer,
        source: rdkafka::error::KafkaError,
    ) -> KafkaError {
        let (key, message) = match &source {
            rdkafka::error::KafkaError::ClientConfig(_, message, key, _) => {
                (key.clone(), message.clone())
            }
            other => (String::new(), other.to_string()),
        };
        let own = match layer {
            SettingsLayer::Consumer => &self.consumer,
            _ => &self.producer,
        };
        let layer = if own.contains_key(&key) {
            layer
        } else if self.global.contains_key(&key) {
            SettingsLayer::Global
        } else {
            SettingsLayer::Default
        };
        KafkaError::Setting {
            layer,
            key,
            message,
            source: Box::new(source),
        }
    }
}

/// Sends librdkafka's log lines and errors to `tracing`.
fn log_line(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_property_is_named_with_its_layer() {
        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings.producer.insert("linger.ms".into(), "soon".into());
        let err = settings.validate().unwrap_err();
        let KafkaError::Setting { layer, key, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (*layer, key.as_str()),
            (SettingsLayer::Producer, "linger.ms")
        );

        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings
            .global
            .insert("no.such.property".into(), "1".into());
        let err = settings.validate().unwrap_err();
        assert!(
            matches!(&err, KafkaError::Setting { layer: SettingsLayer::Global, key, .. } if key == "no.such.property"),
            "{err:?}"
        );
        assert!(!err.is_retriable());

        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings
            .consumer
            .insert("fetch.min.bytes".into(), "1".into());
        settings.validate().unwrap();
    }

    #[test]
    fn topics_take_the_prefix_and_patterns_do_not() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.topic_prefix = "prod.".into();
        assert_eq!(settings.topic("people"), "prod.people");
        assert_eq!(settings.topic("^prod\\..*"), "^prod\\..*");
        assert_eq!(settings.stream("prod.people"), "people");
        assert_eq!(settings.stream("other"), "other");
    }
}
