//! The `[consumer]` table: how a consumer commits, retries and treats bad records.

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

/// How a consumer commits, retries and treats bad records.
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
    /// Do not handle a record younger than this, in milliseconds (django-logpipe's
    /// `MIN_MESSAGE_LAG_MS`). Only that record's partition waits. Default 0.
    pub min_message_lag_ms: u64,
    /// How long reads may keep failing, none succeeding, before the consumer reports
    /// itself stalled (not ready; see [`health`](crate::health)), in milliseconds.
    /// Default 60000.
    pub stalled_after_ms: u64,
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
            min_message_lag_ms: 0,
            stalled_after_ms: 60_000,
        }
    }
}

impl ConsumerOptions {
    /// Checks the values, naming the key (under `prefix`, such as `consumer.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a zero `commit_every` or `commit_interval_ms`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| ConfigError::invalid(format!("{prefix}{key}"), message);
        if self.commit_every == 0 {
            return Err(invalid("commit_every", "must be at least 1"));
        }
        if self.commit_interval_ms == 0 {
            return Err(invalid("commit_interval_ms", "must be at least 1"));
        }
        Ok(())
    }
}
