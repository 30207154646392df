//! The `[embedded]` table of the configuration: the settings of an embedded log.

use logpipe_core::SettingError;
use logpipe_core::leases::LeaseOptions;

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
    /// How long a consumer group's lease of a partition lasts unless renewed, in
    /// milliseconds: what the partitions of a process that died wait before another
    /// process of the group takes them. Default 10000.
    pub lease_duration_ms: u64,
    /// How often a consumer renews its leases and looks for partitions to take, in
    /// milliseconds; at most a third of `lease_duration_ms`. Default 2000.
    pub lease_renewal_ms: u64,
    /// The name of this process among the consumers of a group (default: the host name
    /// and the process id), unique to each process: two processes of one name would
    /// both count every lease of the name as theirs. A second consumer of one group in
    /// the process is `NAME#2`, and so on.
    pub worker_id: Option<String>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            partitions: 4,
            poll_interval_ms: 100,
            max_poll_records: 500,
            lease_duration_ms: 10_000,
            lease_renewal_ms: 2_000,
            worker_id: None,
        }
    }
}

impl EmbeddedOptions {
    /// Checks the values, naming the key (under `prefix`, such as `embedded.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`SettingError`] for zero partitions or records a poll, or lease settings that
    /// [`LeaseOptions::validate`] refuses.
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
        self.lease_options().validate(prefix)
    }

    /// How the consumers of a group hold their leases.
    pub fn lease_options(&self) -> LeaseOptions {
        LeaseOptions::from_settings(
            self.worker_id.as_deref(),
            self.lease_duration_ms,
            self.lease_renewal_ms,
        )
    }
}
