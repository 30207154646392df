//! A bad setting of a backend's configuration table, named by its key.

/// A setting with a bad value, such as `kinesis.batch_max_records` above 500.
///
/// Backends check their own settings and say which key is wrong; the configuration that
/// read the table adds where the value came from (a file, a variable).
///
/// ```
/// use logpipe_core::SettingError;
///
/// let error = SettingError::new("kafka.topic_partitions", "must be at least 1");
/// assert_eq!(error.key(), "kafka.topic_partitions");
/// assert_eq!(error.to_string(), "`kafka.topic_partitions`: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct SettingError {
    key: String,
    message: String,
}

impl SettingError {
    /// A bad value of `key`, and what is wrong with it.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key, such as `kafka.producer.linger.ms`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}
