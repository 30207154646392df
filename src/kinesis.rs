//! The Kinesis backend (`kinesis://?region=..&endpoint=..`), over the `logpipe-kinesis`
//! driver; and its settings, the `[kinesis]` table of the configuration.
//!
//! - Shards are partitions: [`PartitionRef`](crate::PartitionRef) `{ stream, partition: shard id }`, and
//!   positions are [`Position::Sequence`] sequence numbers.
//! - Records keep their partition key as their key; keyless messages get a random one.
//!   Kinesis records have no headers: headers (such as a dead-letter's origin and reason)
//!   are not written, and the consumer's log says where a dead-lettered record came
//!   from and why. The dead-lettered record's key and value are the original bytes.
//! - Positions are stored by default in SQLite (`sqlite://logpipe.db`), under the
//!   consumer group qualified by the region (`GROUP@REGION`, see
//!   `KinesisBackend::group_in_region`), the stream and the shard: the same stream name
//!   in two regions keeps two sets of positions. A stored position is a sequence number
//!   (go on after that record) or a starting point ([`ShardPosition`]).
//! - Credentials come from the standard AWS chain (environment, profile, instance role).
//!   The region is the URL's `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::admin::{format_time, millis, parse_time};
use crate::backend::{BackendError, BackendErrorKind, Position};
use crate::config::ConfigError;

/// Where a consumer of a Kinesis shard goes on, as an offset store keeps it: the text of
/// a [`Position::Sequence`].
///
/// Consumers store the sequence number of the last record handled. A sequence number
/// cannot be decremented to mean "this record and those after it", so the starting
/// points Kinesis offers are stored in forms of their own, which `logpipe offsets reset`
/// writes and a consumer honours when it starts:
///
/// | stored text | the consumer starts |
/// |---|---|
/// | `49680538823000460305650030634928846360478251554288173058` | just after that record |
/// | `TRIM_HORIZON` | at the oldest record kept |
/// | `AT_TIMESTAMP:2026-11-25T01:00:00.000Z` | at the first record that arrived then or later |
///
/// ```
/// use logpipe::kinesis::ShardPosition;
///
/// let position = ShardPosition::parse("TRIM_HORIZON").unwrap();
/// assert_eq!(position, ShardPosition::TrimHorizon);
/// assert_eq!(position.to_string(), "TRIM_HORIZON");
/// assert!(ShardPosition::parse("not a sequence number").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardPosition {
    /// Just after the record with this sequence number.
    After(String),
    /// At the oldest record kept (`TRIM_HORIZON`).
    TrimHorizon,
    /// At the first record that arrived at or after this time (`AT_TIMESTAMP`), to the
    /// millisecond.
    AtTimestamp(SystemTime),
}

const TRIM_HORIZON: &str = "TRIM_HORIZON";
const AT_TIMESTAMP: &str = "AT_TIMESTAMP:";

impl ShardPosition {
    /// Reads a stored position.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` for text that is none of the forms.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        if text == TRIM_HORIZON {
            return Ok(Self::TrimHorizon);
        }
        if let Some(time) = text.strip_prefix(AT_TIMESTAMP) {
            return parse_time(time).map(Self::at_timestamp).ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("{text:?} does not hold a UTC time like 2026-11-25T01:00:00Z"),
                )
            });
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Self::After(text.to_owned()));
        }
        Err(BackendError::new(
            BackendErrorKind::Rejected,
            format!(
                "{text:?} is not a Kinesis sequence number, {TRIM_HORIZON} or {AT_TIMESTAMP}TIME"
            ),
        ))
    }

    /// Reads a position of a shard.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` for an offset, or text that is none of the
    /// forms.
    pub fn from_position(position: &Position) -> Result<Self, BackendError> {
        match position {
            Position::Sequence(text) => Self::parse(text),
            Position::Offset(offset) => Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("Kinesis has sequence numbers, not offsets like {offset}"),
            )),
        }
    }

    /// The first record that arrived at or after `time` (kept to the millisecond, as
    /// stored).
    pub fn at_timestamp(time: SystemTime) -> Self {
        let whole_millis = u64::try_from(millis(time)).unwrap_or(0);
        Self::AtTimestamp(UNIX_EPOCH + Duration::from_millis(whole_millis))
    }

    /// The position to store.
    pub fn to_position(&self) -> Position {
        Position::Sequence(self.to_string())
    }
}

impl fmt::Display for ShardPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::After(sequence) => f.write_str(sequence),
            Self::TrimHorizon => f.write_str(TRIM_HORIZON),
            Self::AtTimestamp(time) => write!(f, "{AT_TIMESTAMP}{}", format_time(millis(*time))),
        }
    }
}

/// Where a shard without a stored position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAt {
    /// The oldest record kept (`TRIM_HORIZON`). The default.
    #[default]
    TrimHorizon,
    /// Records written from now on (`LATEST`).
    Latest,
    /// Records written at or after `start_timestamp_ms` (`AT_TIMESTAMP`).
    AtTimestamp,
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KinesisWriteMode {
    /// `PutRecords` batches, in order per partition key. The default.
    #[default]
    Batched,
    /// One `PutRecord` at a time per partition key with `SequenceNumberForOrdering`, as
    /// django-logpipe writes.
    SequenceNumberForOrdering,
}

/// Kinesis settings: the keys of the `[kinesis]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisOptions {
    /// Where shards without a stored position start. Default `trim-horizon`.
    pub start_at: StartAt,
    /// The time for `start_at = "at-timestamp"`, in milliseconds since 1970.
    pub start_timestamp_ms: Option<u64>,
    /// Wait before reading a shard again that had nothing new, in milliseconds. Default
    /// 1000.
    pub poll_interval_ms: u64,
    /// How often new shards are looked for, in milliseconds. Default 10000.
    pub shard_discovery_interval_ms: u64,
    /// Most records one `GetRecords` call returns, 1 to 10000. Default 10000.
    pub max_records_per_call: u32,
    /// `batched` (default) or `sequence-number-for-ordering`.
    pub write_mode: KinesisWriteMode,
    /// Most records of one `PutRecords` call, 1 to 500. Default 500.
    pub batch_max_records: u32,
    /// Most bytes of one `PutRecords` call, 1 MiB to 5 MiB. Default 5 MiB.
    pub batch_max_bytes: u64,
    /// How long a batch waits for more records, in milliseconds. Default 0.
    pub batch_linger_ms: u64,
    /// Times a record is sent before its send fails. Default 10.
    pub max_send_attempts: u32,
    /// First wait after throttling, in milliseconds; it doubles. Default 100.
    pub retry_backoff_ms: u64,
    /// Longest wait after throttling, in milliseconds. Default 5000.
    pub max_retry_backoff_ms: u64,
    /// (stream, key) pairs remembered by `sequence-number-for-ordering`. Default 10000.
    pub ordering_cache_keys: u32,
}

impl Default for KinesisOptions {
    fn default() -> Self {
        Self {
            start_at: StartAt::TrimHorizon,
            start_timestamp_ms: None,
            poll_interval_ms: 1000,
            shard_discovery_interval_ms: 10_000,
            max_records_per_call: 10_000,
            write_mode: KinesisWriteMode::Batched,
            batch_max_records: 500,
            batch_max_bytes: 5 * 1024 * 1024,
            batch_linger_ms: 0,
            max_send_attempts: 10,
            retry_backoff_ms: 100,
            max_retry_backoff_ms: 5000,
            ordering_cache_keys: 10_000,
        }
    }
}

impl KinesisOptions {
    /// Checks the values, naming the key (under `prefix`, such as `kinesis.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a value out of its range, or `at-timestamp` without
    /// `start_timestamp_ms`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| Err(ConfigError::invalid(format!("{prefix}{key}"), message));
        if self.start_at == StartAt::AtTimestamp && self.start_timestamp_ms.is_none() {
            return invalid("start_timestamp_ms", "start_at = \"at-timestamp\" needs it");
        }
        if self.shard_discovery_interval_ms == 0 {
            return invalid("shard_discovery_interval_ms", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.max_records_per_call) {
            return invalid("max_records_per_call", "must be 1 to 10000");
        }
        if !(1..=500).contains(&self.batch_max_records) {
            return invalid("batch_max_records", "must be 1 to 500");
        }
        if !(1024 * 1024..=5 * 1024 * 1024).contains(&self.batch_max_bytes) {
            return invalid(
                "batch_max_bytes",
                "must be 1048576 (1 MiB) to 5242880 (5 MiB)",
            );
        }
        if self.max_send_attempts == 0 {
            return invalid("max_send_attempts", "must be at least 1");
        }
        if self.ordering_cache_keys == 0 {
            return invalid("ordering_cache_keys", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(feature = "kinesis")]
pub use backend::{KinesisBackend, KinesisConsumer};
#[cfg(feature = "kinesis")]
pub(crate) use backend::{backend_error, start_position};

#[cfg(feature = "kinesis")]
mod backend {
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use logpipe_kinesis as driver;
    use logpipe_kinesis::{KinesisApi, KinesisError};

    use super::{KinesisOptions, KinesisWriteMode, ShardPosition, StartAt};
    use crate::backend::{
        BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery, OutgoingRecord,
        PartitionRef, Position, ProducerBackend, Record,
    };

    /// Where a reader starts from a stored position.
    pub(crate) fn start_position(position: &ShardPosition) -> driver::StartPosition {
        match position {
            ShardPosition::After(sequence) => {
                driver::StartPosition::AfterSequenceNumber(sequence.clone())
            }
            ShardPosition::TrimHorizon => driver::StartPosition::TrimHorizon,
            ShardPosition::AtTimestamp(time) => driver::StartPosition::AtTimestamp(*time),
        }
    }

    /// Maps a driver error to a [`BackendError`], keeping it as the source.
    pub(crate) fn backend_error(error: KinesisError) -> BackendError {
        let kind = if error.is_not_found() {
            BackendErrorKind::NotFound
        } else {
            let inner = match &error {
                KinesisError::Batch { source, .. } => &**source,
                other => other,
            };
            match inner {
                KinesisError::Connection { .. } => BackendErrorKind::Connection,
                KinesisError::Timeout { .. } => BackendErrorKind::Timeout,
                _ if inner.is_rejected() => BackendErrorKind::Rejected,
                _ => BackendErrorKind::Other,
            }
        };
        let retriable = error.is_retriable();
        let mapped = BackendError::new(kind, "Kinesis").with_source(error);
        if retriable {
            mapped.retriable()
        } else {
            mapped
        }
    }

    /// A Kinesis backend: a producer and a factory of consumers sharing one client.
    /// Clones share them.
    #[derive(Clone)]
    pub struct KinesisBackend {
        api: Arc<dyn KinesisApi>,
        producer: driver::KinesisProducer,
        region: Arc<str>,
        options: KinesisOptions,
    }

    impl std::fmt::Debug for KinesisBackend {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("KinesisBackend")
                .field("region", &self.region)
                .field("options", &self.options)
                .finish_non_exhaustive()
        }
    }

    impl KinesisBackend {
        /// A backend in `region` (else `AWS_REGION`, else `AWS_DEFAULT_REGION`), at
        /// `endpoint` if given (an emulator), with credentials from the standard AWS
        /// chain. The client is built on first use.
        ///
        /// # Errors
        ///
        /// [`BackendError`] of kind `Rejected` when no region is known or `options` are
        /// not valid.
        pub fn connect(
            region: Option<&str>,
            endpoint: Option<&str>,
            options: KinesisOptions,
        ) -> Result<Self, BackendError> {
            let region = region
                .map(str::to_owned)
                .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
                .or_else(|| {
                    std::env::var("AWS_DEFAULT_REGION")
                        .ok()
                        .filter(|r| !r.is_empty())
                })
                .ok_or_else(|| {
                    BackendError::new(
                        BackendErrorKind::Rejected,
                        "no AWS region: use kinesis://?region=REGION or set AWS_REGION",
                    )
                })?;
            let api = driver::SdkApi::new(driver::ClientOptions {
                region: Some(region.clone()),
                endpoint: endpoint.map(str::to_owned),
            });
            Self::with_api(Arc::new(api), &region, options)
        }

        /// A backend making its calls through `api` (for example a client built by the
        /// caller with [`SdkApi::from_client`](driver::SdkApi::from_client), or a wrapper
        /// of one), in `region`.
        ///
        /// # Errors
        ///
        /// [`BackendError`] of kind `Rejected` when `options` are not valid.
        pub fn with_api(
            api: Arc<dyn KinesisApi>,
            region: &str,
            options: KinesisOptions,
        ) -> Result<Self, BackendError> {
            // Check the consumer's options now, so that building a consumer cannot fail.
            driver::ConsumerOptions::validate(&consumer_options(&options))
                .map_err(backend_error)?;
            let producer =
                driver::KinesisProducer::new(Arc::clone(&api), producer_options(&options))
                    .map_err(backend_error)?;
            Ok(Self {
                api,
                producer,
                region: region.into(),
                options,
            })
        }

        /// The Kinesis calls this backend makes, for operator tools.
        pub fn api(&self) -> &Arc<dyn KinesisApi> {
            &self.api
        }

        /// The region.
        pub fn region(&self) -> &str {
            &self.region
        }

        /// The consumer group under which positions of `group` are stored: `GROUP@REGION`.
        pub fn group_in_region(&self, group: &str) -> String {
            format!("{group}@{}", self.region)
        }

        /// A consumer of every shard of `streams`.
        pub fn consumer<I, S>(&self, streams: I) -> KinesisConsumer
        where
            I: IntoIterator<Item = S>,
            S: Into<Arc<str>>,
        {
            let consumer = driver::KinesisConsumer::new(
                Arc::clone(&self.api),
                streams,
                consumer_options(&self.options),
            )
            .expect("the options were checked when the backend was made");
            KinesisConsumer { inner: consumer }
        }
    }

    fn producer_options(options: &KinesisOptions) -> driver::ProducerOptions {
        driver::ProducerOptions {
            mode: match options.write_mode {
                KinesisWriteMode::Batched => driver::WriteMode::Batched,
                KinesisWriteMode::SequenceNumberForOrdering => {
                    driver::WriteMode::SequenceNumberForOrdering
                }
            },
            max_batch_records: options.batch_max_records as usize,
            max_batch_bytes: usize::try_from(options.batch_max_bytes).unwrap_or(usize::MAX),
            linger: Duration::from_millis(options.batch_linger_ms),
            max_attempts: options.max_send_attempts,
            retry_backoff: Duration::from_millis(options.retry_backoff_ms),
            max_retry_backoff: Duration::from_millis(options.max_retry_backoff_ms),
            ordering_cache_keys: NonZeroUsize::new(options.ordering_cache_keys as usize)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }

    fn consumer_options(options: &KinesisOptions) -> driver::ConsumerOptions {
        driver::ConsumerOptions {
            initial_position: match options.start_at {
                StartAt::TrimHorizon => driver::InitialPosition::TrimHorizon,
                StartAt::Latest => driver::InitialPosition::Latest,
                StartAt::AtTimestamp => driver::InitialPosition::AtTimestamp(
                    UNIX_EPOCH + Duration::from_millis(options.start_timestamp_ms.unwrap_or(0)),
                ),
            },
            poll_interval: Duration::from_millis(options.poll_interval_ms),
            shard_discovery_interval: Duration::from_millis(options.shard_discovery_interval_ms),
            max_records_per_call: i32::try_from(options.max_records_per_call).unwrap_or(10_000),
        }
    }

    impl ProducerBackend for KinesisBackend {
        async fn send(&self, record: OutgoingRecord) -> Result<Delivery, BackendError> {
            if !record.headers.is_empty() {
                let headers: Vec<(&str, String)> = record
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.as_str(),
                            String::from_utf8_lossy(&h.value).into_owned(),
                        )
                    })
                    .collect();
                tracing::info!(stream = %record.stream, ?headers, "Kinesis records have no headers; writing the record without them");
            }
            let delivered = self
                .producer
                .send(&record.stream, record.key.as_deref(), record.value)
                .await
                .map_err(backend_error)?;
            Ok(Delivery {
                partition: PartitionRef::new(record.stream, delivered.shard_id),
                position: Position::Sequence(delivered.sequence_number),
            })
        }

        async fn flush(&self) -> Result<(), BackendError> {
            self.producer.flush().await;
            Ok(())
        }
    }

    /// Reads every shard of some Kinesis streams, parents before children.
    #[derive(Debug)]
    pub struct KinesisConsumer {
        inner: driver::KinesisConsumer,
    }

    impl ConsumerBackend for KinesisConsumer {
        async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
            match self.inner.next_event().await.map_err(backend_error)? {
                driver::Event::Assigned(shards) => Ok(ConsumerEvent::Assigned(
                    shards
                        .into_iter()
                        .map(|shard| PartitionRef::new(shard.stream, shard.shard_id))
                        .collect(),
                )),
                driver::Event::Records(records) => Ok(ConsumerEvent::Records(
                    records
                        .into_iter()
                        .map(|record| Record {
                            partition: PartitionRef::new(
                                record.shard.stream,
                                record.shard.shard_id,
                            ),
                            position: Position::Sequence(record.sequence_number),
                            key: Some(record.partition_key.into_bytes()),
                            value: record.data,
                            headers: Vec::new(),
                            timestamp: record.arrival,
                        })
                        .collect(),
                )),
                driver::Event::ReadsFailing { since, reason } => {
                    Ok(ConsumerEvent::ReadsFailing { since, reason })
                }
                driver::Event::ReadsSucceed => Ok(ConsumerEvent::ReadsSucceed),
                other => Err(BackendError::new(
                    BackendErrorKind::Other,
                    format!("unexpected Kinesis consumer event {other:?}"),
                )),
            }
        }

        async fn seek(
            &mut self,
            partition: &PartitionRef,
            after: Option<&Position>,
        ) -> Result<(), BackendError> {
            let shard = driver::ShardRef {
                stream: Arc::clone(&partition.stream),
                shard_id: Arc::clone(&partition.partition),
            };
            let sought = match after {
                None => self.inner.seek(&shard, None),
                Some(position) => {
                    let start = start_position(&ShardPosition::from_position(position)?);
                    self.inner.seek_to(&shard, start)
                }
            };
            sought.map_err(backend_error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shard_positions_read_back_as_they_were_written() {
        let time = parse_time("2026-11-25T01:02:03.456Z").unwrap();
        for (position, text) in [
            (ShardPosition::After("4968".to_owned()), "4968"),
            (ShardPosition::TrimHorizon, "TRIM_HORIZON"),
            (
                ShardPosition::at_timestamp(time),
                "AT_TIMESTAMP:2026-11-25T01:02:03.456Z",
            ),
        ] {
            assert_eq!(position.to_position(), Position::Sequence(text.to_owned()));
            assert_eq!(ShardPosition::parse(text).unwrap(), position);
        }
        // Kept to the millisecond, as stored.
        let finer = time + Duration::from_micros(700);
        assert_eq!(
            ShardPosition::at_timestamp(finer),
            ShardPosition::AtTimestamp(time)
        );
        for bad in ["", "49x", "AT_TIMESTAMP:yesterday", "LATEST"] {
            let err = ShardPosition::parse(bad).unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Rejected, "{bad}");
        }
        let offset = ShardPosition::from_position(&Position::Offset(4)).unwrap_err();
        assert!(
            offset.to_string().contains("not offsets like 4"),
            "{offset}"
        );
    }
}
