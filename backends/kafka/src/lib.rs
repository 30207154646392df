//! The Apache Kafka backend of logpipe: records in and out over rdkafka, with partitions
//! and offsets, implementing the contract of `logpipe-core`.
//!
//! - [`KafkaClient`] connects to a cluster and writes records (idempotent, acknowledged
//!   by every in-sync replica, batched by librdkafka); it is a
//!   [`Backend`](logpipe_core::Backend), and answers the operators' tools
//!   ([`Admin`](logpipe_core::Admin));
//! - its consumers ([`KafkaConsumerBackend`], over the driver's [`KafkaConsumer`]) are
//!   members of consumer groups, whose rebalances wait until the application has stored
//!   its positions;
//! - [`GroupOffsets`] is the [`OffsetStore`](logpipe_core::OffsetStore) of positions
//!   committed to the consumer groups;
//! - [`KafkaSettings`] is the `[kafka]` table of a configuration, and [`KafkaUrl`]
//!   reads a `kafka://` URL.
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
//! client.flush().await;
//! # Ok(())
//! # }
//! ```

mod admin;
mod backend;
mod connection_log;
mod consumer;
mod error;
mod group_offsets;
mod lag;
mod producer;
mod settings;
mod url;

use rdkafka::config::RDKafkaLogLevel;

pub use admin::PartitionWatermarks;
pub use backend::KafkaConsumerBackend;
pub use connection_log::TARGET as CONNECTION_LOG_TARGET;
pub use consumer::{KafkaConsumer, KafkaEvent, KafkaRecord, SeekTo};
pub use error::{ErrorKind, KafkaError, SettingsLayer};
pub use group_offsets::{GroupOffsets, is_group_busy};
pub use lag::LAG_GAUGE;
pub use producer::{KafkaClient, Queued};
pub use settings::KafkaSettings;
pub use url::KafkaUrl;

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
