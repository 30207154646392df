//! The `[embedded]` table of the configuration: the settings of an embedded log.

use logpipe_core::SettingError;

/// Settings of an embedded log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedOptions {
    /// Partitions of a stream created on first use. Default 4.
    pub partitions: u32,
    /// How often a consumer looks for records written by other processes, in
    /// milliseconds (records from this process wake it at once). Default 100.
    pub poll_interval_ms: u64,
    /// Most records a consumer reads from one partition at a time. Default 500.
    pub max_poll_records: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            partitions: 4,
            poll_interval_ms: 100,
            max_poll_records: 500,
        }
    }
}

impl EmbeddedOptions {
    /// Checks the values, naming the key (under `prefix`, such as `embedded.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`SettingError`] for zero partitions or records a poll.
    pub fn validate(&self, prefix: &str) -> Result<(), SettingError> {
        if self.partitions == 0 {
            return Err(SettingError::new(
                format!("{prefix}partitions"),
                "must be at least 1",
            ));
        }
        if self.max_poll_records == 0 {
            return Err(SettingError::new(
                format!("{prefix}max_poll_records"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
