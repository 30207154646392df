//! Errors of the Kinesis driver.

use std::sync::Arc;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

use logpipe_core::BoxError;

/// AWS error codes after which the same call may succeed later.
const RETRIABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ExpiredIteratorException",
];

/// The AWS error code of throttling by a shard's provisioned throughput.
pub const THROUGHPUT_EXCEEDED: &str = "ProvisionedThroughputExceededException";
/// The AWS error code of a shard iterator older than five minutes.
pub const EXPIRED_ITERATOR: &str = "ExpiredIteratorException";
/// The AWS error code of a stream, shard or sequence number that does not exist.
pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFoundException";

/// An error of the Kinesis driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KinesisError {
    /// Kinesis answered a call with an error, such as
    /// `ProvisionedThroughputExceededException` or `ResourceNotFoundException`.
    #[error("Kinesis {operation} failed with {code}")]
    Service {
        /// The API call, such as `GetRecords`.
        operation: &'static str,
        /// The AWS error code.
        code: String,
        /// The error as the SDK (or a wrapper of the API) reported it.
        #[source]
        source: BoxError,
    },
    /// Kinesis could not be reached, or the connection broke.
    #[error("could not reach Kinesis for {operation}")]
    Connection {
        /// The API call.
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// A call did not finish in time.
    #[error("Kinesis {operation} timed out")]
    Timeout {
        /// The API call.
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// A call failed in another way (such as a response that could not be read, or
    /// missing credentials).
    #[error("Kinesis {operation} failed")]
    Other {
        /// The API call.
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// A record is larger than Kinesis accepts (1 MiB, partition key included).
    #[error(
        "a record of {size} bytes (data and partition key) is over Kinesis' limit of {limit} bytes"
    )]
    RecordTooLarge {
        /// The record's data and partition key, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A partition key Kinesis would refuse.
    #[error("invalid partition key: {reason}")]
    InvalidKey {
        /// Why.
        reason: &'static str,
    },
    /// Kinesis refused a record each time it was sent.
    #[error("record not written to stream {stream} after {attempts} attempts: {code}: {message}")]
    Undeliverable {
        /// The stream.
        stream: String,
        /// How many times it was sent.
        attempts: u32,
        /// The last AWS error code for the record.
        code: String,
        /// The last error message for the record.
        message: String,
    },
    /// A request carrying this record failed; the same error failed the other records of
    /// the request.
    #[error("writing a batch to stream {stream} failed")]
    Batch {
        /// The stream.
        stream: String,
        /// The request's error.
        #[source]
        source: Arc<KinesisError>,
    },
    /// The producer's sending task stopped, so the record's fate is unknown.
    #[error("the Kinesis producer stopped before the record was written")]
    ProducerStopped,
    /// A shard that this consumer was not assigned.
    #[error("shard {shard} of stream {stream} is not assigned to this consumer")]
    NotAssigned {
        /// The stream.
        stream: String,
        /// The shard id.
        shard: String,
    },
    /// The options are not valid.
    #[error("invalid Kinesis option `{option}`: {message}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The message of a service error built by [`KinesisError::service`].
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceMessage {
    code: String,
    message: String,
}

impl KinesisError {
    /// An error as Kinesis answers it for `operation`, with AWS error `code`.
    ///
    /// Wrappers of [`KinesisApi`](crate::KinesisApi) use it to answer with an AWS error,
    /// such as tests that make a shard throttle.
    pub fn service(
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let code = code.into();
        KinesisError::Service {
            operation,
            source: Box::new(ServiceMessage {
                code: code.clone(),
                message: message.into(),
            }),
            code,
        }
    }

    /// Converts an SDK error of `operation`.
    pub fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match &error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("Unknown").to_owned();
                KinesisError::Service {
                    operation,
                    code,
                    source: Box::new(error),
                }
            }
            SdkError::DispatchFailure(_) => KinesisError::Connection {
                operation,
                source: Box::new(error),
            },
            SdkError::TimeoutError(_) => KinesisError::Timeout {
                operation,
                source: Box::new(error),
            },
            _ => KinesisError::Other {
                operation,
                source: Box::new(error),
            },
        }
    }

    /// The AWS error code, when Kinesis answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            KinesisError::Service { code, .. } => Some(code),
            KinesisError::Undeliverable { code, .. } => Some(code),
            KinesisError::Batch { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the same call may succeed when tried again later.
    pub fn is_retriable(&self) -> bool {
        match self {
            KinesisError::Service { code, .. } => RETRIABLE_CODES.contains(&code.as_str()),
            KinesisError::Connection { .. } | KinesisError::Timeout { .. } => true,
            KinesisError::Batch { source, .. } => source.is_retriable(),
            _ => false,
        }
    }

    /// Whether a shard's throughput was exceeded (or another limit hit).
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code(),
            Some(
                THROUGHPUT_EXCEEDED
                    | "LimitExceededException"
                    | "ThrottlingException"
                    | "KMSThrottlingException"
            )
        )
    }

    /// Whether a shard iterator expired.
    pub fn is_expired_iterator(&self) -> bool {
        self.code() == Some(EXPIRED_ITERATOR)
    }

    /// Whether a stream, shard or sequence number does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(RESOURCE_NOT_FOUND) || matches!(self, KinesisError::NotAssigned { .. })
    }

    /// Whether the request or record was refused as invalid (too large, bad key, bad
    /// argument, not allowed).
    pub fn is_rejected(&self) -> bool {
        match self {
            KinesisError::RecordTooLarge { .. }
            | KinesisError::InvalidKey { .. }
            | KinesisError::InvalidOption { .. } => true,
            KinesisError::Undeliverable { .. } => !self.is_retriable(),
            KinesisError::Service { .. } => !self.is_retriable() && !self.is_not_found(),
            _ => false,
        }
    }
}
