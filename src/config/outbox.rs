//! The `[outbox]` table: which outbox `run_consumers` and `logpipe outbox relay` relay,
//! and how.

use std::time::Duration;

use serde::Deserialize;

use super::OutboxUrl;
use crate::error::ConfigError;
use crate::outbox::RelayOptions;

/// The `[outbox]` table of the configuration.
///
/// ```toml
/// [outbox]
/// url = "postgres://app@db/people"   # or sqlite://app.db
/// batch_size = 500
/// poll_interval_ms = 500
/// lease_duration_ms = 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// The outbox's database. Default none: no relay runs.
    pub url: Option<OutboxUrl>,
    /// Rows sent at most in one batch. Default 500.
    pub batch_size: u32,
    /// How often an empty outbox is looked at again, in milliseconds. Default 500.
    pub poll_interval_ms: u64,
    /// How long the relay lease lasts unless renewed, in milliseconds. Default 10000.
    pub lease_duration_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        let defaults = RelayOptions::default();
        Self {
            url: None,
            batch_size: u32::try_from(defaults.batch_size).unwrap_or(u32::MAX),
            poll_interval_ms: millis(defaults.poll_interval),
            lease_duration_ms: millis(defaults.lease_duration),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl OutboxSettings {
    /// Checks the values, naming the key (under `prefix`) of the first bad one.
    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive = [
            ("batch_size", u64::from(self.batch_size)),
            ("poll_interval_ms", self.poll_interval_ms),
            ("lease_duration_ms", self.lease_duration_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}{key}"),
                    "must be above 0",
                ));
            }
        }
        if self.poll_interval_ms >= self.lease_duration_ms {
            return Err(ConfigError::invalid(
                format!("{prefix}poll_interval_ms"),
                "must be below lease_duration_ms, so that the relay renews its lease in time",
            ));
        }
        Ok(())
    }

    /// The relay's options.
    pub fn relay_options(&self) -> RelayOptions {
        RelayOptions {
            batch_size: self.batch_size as usize,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            lease_duration: Duration::from_millis(self.lease_duration_ms),
            ..RelayOptions::default()
        }
    }
}
