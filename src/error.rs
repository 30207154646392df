//! The crate's errors: [`Error`], and [`ConfigError`] for the configuration.

use std::path::PathBuf;

use logpipe_core::SettingError;

use crate::BoxError;
use crate::backend::{BackendError, PartitionRef, Position};
use crate::envelope::EncodeError;
use crate::offsets::StoreError;
use crate::registry::{RegistryError, SkipReason};

/// An error from a producer, consumer or runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message could not be encoded.
    #[error("cannot encode a {message_type:?} version {version} message")]
    Encode {
        /// The message type.
        message_type: &'static str,
        /// The version.
        version: u64,
        /// Why.
        #[source]
        source: EncodeError,
    },
    /// The backend failed.
    #[error("backend failed")]
    Backend(#[from] BackendError),
    /// The offset store failed.
    #[error("offset store failed")]
    Store(#[from] StoreError),
    /// The outbox failed.
    #[error("outbox failed")]
    Outbox(#[from] logpipe_core::outbox::OutboxError),
    /// A handler kept failing (returning an error or panicking; the source is then a
    /// [`HandlerPanic`](crate::HandlerPanic)) and the consumer's policy is to stop.
    #[error(
        "the handler for {message_type:?} version {version} failed on {partition} at {position} after {attempts} attempts"
    )]
    Handler {
        /// Where the record is.
        partition: PartitionRef,
        /// Its position; it was not stored, so a new run reads the record again.
        position: Position,
        /// The message type.
        message_type: &'static str,
        /// The version.
        version: u64,
        /// How many times the handler ran.
        attempts: u32,
        /// The handler's last error.
        #[source]
        source: BoxError,
    },
    /// A record was to be skipped and the consumer is in strict mode.
    #[error("record at {partition} {position} cannot be handled (strict mode)")]
    Skipped {
        /// Where the record is.
        partition: PartitionRef,
        /// Its position; it was not stored.
        position: Position,
        /// Why it would have been skipped.
        #[source]
        reason: SkipReason,
    },
    /// A record could not be written to the dead-letter stream.
    #[error("cannot dead-letter the record at {partition} {position}")]
    DeadLetter {
        /// Where the record is.
        partition: PartitionRef,
        /// Its position; it was not stored.
        position: Position,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// A consumer task panicked outside its handlers (a handler's panic is a
    /// [`Handler`](Self::Handler) failure instead).
    #[error("consumer {consumer:?} panicked: {message}")]
    Panicked {
        /// The consumer's name.
        consumer: String,
        /// The panic message.
        message: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A registry is invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// There is no consumer to run: none is registered, or none reads a stream.
    #[error("nothing to run: {0}")]
    NothingToRun(&'static str),
    /// A registered consumer could not be built.
    #[error("cannot build consumer {consumer:?}")]
    Build {
        /// The consumer's name.
        consumer: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

/// An error in the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the config file {path} is not valid TOML")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// A key has a bad value (or is unknown).
    #[error("invalid config key `{key}`{}: {message}", origin.as_ref().map(|var| format!(" (set by {var})")).unwrap_or_default())]
    Invalid {
        /// The key, such as `consumer.max_retries`.
        key: String,
        /// The environment variable that set it, if one did.
        origin: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl From<SettingError> for ConfigError {
    fn from(error: SettingError) -> Self {
        ConfigError::invalid(error.key(), error.message())
    }
}

impl ConfigError {
    /// A bad value of `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            origin: None,
            message: message.into(),
        }
    }

    /// The key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}
