//! The `[consumer]` table: how a consumer commits, retries, treats bad records, and how
//! many records it handles at once in which order.

use serde::Deserialize;

use crate::error::ConfigError;

/// What happens when a handler still fails after its retries. A handler that panics
/// fails the same way as one that returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerErrorPolicy {
    /// Stop this consumer with the error; the record's position is not stored, so the
    /// next run reads it again. The default.
    #[default]
    Stop,
    /// Write the record to the dead-letter stream and go on.
    DeadLetter,
}

/// What happens to a record that cannot be handled (malformed, invalid envelope,
/// unknown type or version, failed validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadRecordPolicy {
    /// Log it, count it and go on. The default.
    #[default]
    Skip,
    /// Write it to the dead-letter stream as well.
    DeadLetter,
}

/// Which records a consumer that handles several at once keeps in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// The records of one partition are handled one at a time, in order; partitions run
    /// side by side.
    Partition,
    /// The records of one key (within a partition) are handled in order; records of
    /// different keys run side by side. The default: a key names one entity, whose
    /// messages must not overtake each other.
    #[default]
    Key,
    /// Any record may run beside any other.
    Unordered,
}

/// How keyless records are ordered under [`Ordering::Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeylessOrdering {
    /// A partition's keyless records count as one key: handled in order. The default.
    #[default]
    Partition,
    /// Keyless records run beside anything.
    Unordered,
}

/// How a consumer commits, retries, treats bad records, and runs handlers side by side.
///
/// In a configuration file these are the keys of the `[consumer]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerOptions {
    /// Store positions after this many records. Default 100.
    pub commit_every: u32,
    /// Store positions at least this often while records are pending, in milliseconds.
    /// Default 1000.
    pub commit_interval_ms: u64,
    /// Times a failed handler is retried before the policy applies. Default 3.
    pub max_retries: u32,
    /// Wait before the first retry, in milliseconds; it doubles on each retry. Default 200.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries, in milliseconds. Default 10000.
    pub max_retry_backoff_ms: u64,
    /// What to do when a handler keeps failing. Default `stop`.
    pub on_handler_error: HandlerErrorPolicy,
    /// What to do with records that cannot be handled. Default `skip`.
    pub on_bad_record: BadRecordPolicy,
    /// Turn every record that would be skipped into an error that stops the consumer,
    /// with its position not stored (django-logpipe's `throw_errors`). Ignored message
    /// types are still skipped. Default false.
    pub strict: bool,
    /// Skip the records this service wrote itself: those whose envelope's `producer` is
    /// the consumer's producer id (the top-level `producer_id`, which this service's
    /// producers write), counted as skips of reason `own`. For services that keep one
    /// table in sync both ways over one stream, so that a change is not applied again
    /// when its own echo comes back. Default false.
    pub skip_own_records: bool,
    /// Do not handle a record younger than this, in milliseconds (django-logpipe's
    /// `MIN_MESSAGE_LAG_MS`). Only that record's partition waits. Default 0.
    pub min_message_lag_ms: u64,
    /// How long reads may keep failing, none succeeding, before the consumer reports
    /// itself stalled (not ready; see [`health`](crate::health)), in milliseconds.
    /// Default 60000.
    pub stalled_after_ms: u64,
    /// Handler calls in flight at once (a batch handler's call counts once). Default 1:
    /// one record at a time, in the order read.
    pub concurrency: u32,
    /// Which records wait for others when `concurrency` is above 1. Default `key`.
    pub ordering: Ordering,
    /// How keyless records are ordered under `ordering = "key"`. Default `partition`.
    pub keyless_ordering: KeylessOrdering,
    /// Records of one partition held at most between its stored position and the
    /// newest record read (waiting, being handled, or handled after a record still being
    /// handled); reading that partition pauses at this many, and goes on once half are
    /// done. Default: `8 × concurrency`, at least 1000 (enough that a partition resumed
    /// at half a window has records to hand out until a broker's next fetch arrives).
    pub max_in_flight_per_partition: Option<u32>,
    /// How long a consumer that stops, or gives partitions up, waits for the handler
    /// calls in flight (on those partitions) to finish, in milliseconds; past it they are
    /// abandoned and their records read again by the next owner. Records waiting to be
    /// retried are abandoned at once. Default 30000.
    pub drain_timeout_ms: u64,
    /// Records a batch handler gets at most in one call. Default 500.
    pub batch_max_records: u32,
    /// How long a batch handler's batch waits for more records after its first, in
    /// milliseconds. Default 0: a batch holds what is ready at once.
    pub batch_linger_ms: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            commit_every: 100,
            commit_interval_ms: 1000,
            max_retries: 3,
            retry_backoff_ms: 200,
            max_retry_backoff_ms: 10_000,
            on_handler_error: HandlerErrorPolicy::Stop,
            on_bad_record: BadRecordPolicy::Skip,
            strict: false,
            skip_own_records: false,
            min_message_lag_ms: 0,
            stalled_after_ms: 60_000,
            concurrency: 1,
            ordering: Ordering::Key,
            keyless_ordering: KeylessOrdering::Partition,
            max_in_flight_per_partition: None,
            drain_timeout_ms: 30_000,
            batch_max_records: 500,
            batch_linger_ms: 0,
        }
    }
}

impl ConsumerOptions {
    /// Checks the values, naming the key (under `prefix`, such as `consumer.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a zero `commit_every`, `commit_interval_ms`,
    /// `concurrency`, `max_in_flight_per_partition` or `batch_max_records`, or a
    /// `concurrency` above 65536.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| ConfigError::invalid(format!("{prefix}{key}"), message);
        let at_least_one = [
            ("commit_every", u64::from(self.commit_every)),
            ("commit_interval_ms", self.commit_interval_ms),
            ("concurrency", u64::from(self.concurrency)),
            (
                "max_in_flight_per_partition",
                self.max_in_flight_per_partition.map_or(1, u64::from),
            ),
            ("batch_max_records", u64::from(self.batch_max_records)),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(key, "must be at least 1"));
        }
        if self.concurrency > MAX_CONCURRENCY {
            return Err(invalid("concurrency", "must be at most 65536"));
        }
        Ok(())
    }

    /// Checks that a consumer that skips its own records knows its producer id.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `skip_own_records` (under `prefix`) when it is set
    /// and `producer_id` is `None`.
    pub(crate) fn check_producer_id(
        &self,
        prefix: &str,
        producer_id: Option<&str>,
    ) -> Result<(), ConfigError> {
        if self.skip_own_records && producer_id.is_none() {
            return Err(ConfigError::invalid(
                format!("{prefix}skip_own_records"),
                "needs `producer_id`, the id this service's producers write",
            ));
        }
        Ok(())
    }

    /// The records of one partition held at most (`max_in_flight_per_partition`, or its
    /// default).
    pub(crate) fn partition_window(&self) -> usize {
        self.max_in_flight_per_partition
            .unwrap_or_else(|| (8 * self.concurrency).max(1000)) as usize
    }

    /// The ordering that holds in effect: with one handler call at a time, records run
    /// in the order read, which needs no bookkeeping of keys.
    pub(crate) fn effective_ordering(&self) -> Ordering {
        if self.concurrency == 1 {
            Ordering::Partition
        } else {
            self.ordering
        }
    }
}

/// The most handler calls a consumer may have in flight.
const MAX_CONCURRENCY: u32 = 65_536;
