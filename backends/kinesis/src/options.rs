//! The `[kinesis]` table of the configuration: how a Kinesis backend reads and writes.

use std::num::NonZeroUsize;
use std::time::{Duration, UNIX_EPOCH};

use logpipe_core::SettingError;
use logpipe_core::leases::LeaseOptions;
use serde::Deserialize;

use crate::{InitialPosition, KinesisError, ProducerOptions, ReaderOptions, WriteMode};

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

/// The URL of a lease store (`[kinesis] leases`), shown ([`Debug`]) with its password as
/// `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LeaseStoreUrl(String);

impl LeaseStoreUrl {
    /// The URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL, password included: to open it, not to show it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LeaseStoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseStoreUrl")
            .field(&logpipe_core::redact_url(&self.0))
            .finish()
    }
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
    /// Where the consumer groups' shard leases are kept: `sqlite://PATH` (processes on
    /// one machine) or `postgres://..` (many machines). Default: the offset store, when
    /// it is one of these; with no lease store (a `memory://` offset store), every
    /// consumer reads every shard. Positions are fenced by the lease counter only when
    /// the leases are in the offset store's database.
    pub leases: Option<LeaseStoreUrl>,
    /// How long a lease of a shard lasts unless renewed, in milliseconds: what the
    /// shards of a process that died wait before another process of the group takes
    /// them. Default 10000.
    pub lease_duration_ms: u64,
    /// How often a consumer renews its leases and looks for shards to take, in
    /// milliseconds; at most a third of `lease_duration_ms`. Default 2000.
    pub lease_renewal_ms: u64,
    /// The name of this process among the consumers of a group (default: the host name
    /// and the process id), unique to each process. A second consumer of one group in
    /// the process is `NAME#2`, and so on.
    pub worker_id: Option<String>,
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
            leases: None,
            lease_duration_ms: 10_000,
            lease_renewal_ms: 2_000,
            worker_id: None,
        }
    }
}

impl KinesisOptions {
    /// Checks the values, naming the key (under `prefix`, such as `kinesis.`) of the
    /// first bad one. The ranges are the driver's ([`ProducerOptions::validate`],
    /// [`ReaderOptions::validate`]), named by the keys of this table.
    ///
    /// # Errors
    ///
    /// [`SettingError`] for a value out of its range, `at-timestamp` without
    /// `start_timestamp_ms`, or lease settings that [`LeaseOptions::validate`] refuses.
    pub fn validate(&self, prefix: &str) -> Result<(), SettingError> {
        let invalid =
            |key: &str, message: &str| Err(SettingError::new(format!("{prefix}{key}"), message));
        if self.start_at == StartAt::AtTimestamp && self.start_timestamp_ms.is_none() {
            return invalid("start_timestamp_ms", "start_at = \"at-timestamp\" needs it");
        }
        if self.ordering_cache_keys == 0 {
            return invalid("ordering_cache_keys", "must be at least 1");
        }
        let named = |error: KinesisError| match error {
            KinesisError::InvalidOption { option, message } => {
                let key = match option {
                    "max_batch_records" => "batch_max_records",
                    "max_batch_bytes" => "batch_max_bytes",
                    "max_attempts" => "max_send_attempts",
                    "shard_discovery_interval" => "shard_discovery_interval_ms",
                    other => other,
                };
                SettingError::new(format!("{prefix}{key}"), message)
            }
            other => SettingError::new(prefix.trim_end_matches('.'), other.to_string()),
        };
        self.producer_options().validate().map_err(named)?;
        self.reader_options().validate().map_err(named)?;
        self.lease_options().validate(prefix)
    }

    /// How the consumers of a group hold their leases of shards.
    pub fn lease_options(&self) -> LeaseOptions {
        LeaseOptions::from_settings(
            self.worker_id.as_deref(),
            self.lease_duration_ms,
            self.lease_renewal_ms,
        )
    }

    /// The driver's options of the producer.
    pub fn producer_options(&self) -> ProducerOptions {
        ProducerOptions {
            mode: match self.write_mode {
                KinesisWriteMode::Batched => WriteMode::Batched,
                KinesisWriteMode::SequenceNumberForOrdering => WriteMode::SequenceNumberForOrdering,
            },
            max_batch_records: self.batch_max_records as usize,
            max_batch_bytes: usize::try_from(self.batch_max_bytes).unwrap_or(usize::MAX),
            linger: Duration::from_millis(self.batch_linger_ms),
            max_attempts: self.max_send_attempts,
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            max_retry_backoff: Duration::from_millis(self.max_retry_backoff_ms),
            ordering_cache_keys: NonZeroUsize::new(self.ordering_cache_keys as usize)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The driver's options of the shard reader.
    pub fn reader_options(&self) -> ReaderOptions {
        ReaderOptions {
            initial_position: match self.start_at {
                StartAt::TrimHorizon => InitialPosition::TrimHorizon,
                StartAt::Latest => InitialPosition::Latest,
                StartAt::AtTimestamp => InitialPosition::AtTimestamp(
                    UNIX_EPOCH + Duration::from_millis(self.start_timestamp_ms.unwrap_or(0)),
                ),
            },
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            shard_discovery_interval: Duration::from_millis(self.shard_discovery_interval_ms),
            max_records_per_call: i32::try_from(self.max_records_per_call).unwrap_or(i32::MAX),
        }
    }
}
