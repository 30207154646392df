//! The backend traits: bytes in, bytes out, with partitions and positions.
//!
//! A backend moves record values; it knows nothing of envelopes or handlers. Kafka, Kinesis
//! and the [embedded log](crate::embedded) implement these traits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::BoxError;

/// Where a record sits in its partition or shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// A Kafka or embedded-log offset.
    Offset(i64),
    /// A Kinesis sequence number.
    Sequence(String),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(offset) => write!(f, "{offset}"),
            Position::Sequence(sequence) => f.write_str(sequence),
        }
    }
}

/// One partition (Kafka, embedded log) or shard (Kinesis) of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    /// The stream (Kafka topic, Kinesis stream).
    pub stream: Arc<str>,
    /// The partition number or shard id, as text.
    pub partition: Arc<str>,
}

impl PartitionRef {
    /// A partition of `stream`.
    pub fn new(stream: impl Into<Arc<str>>, partition: impl Into<Arc<str>>) -> Self {
        Self {
            stream: stream.into(),
            partition: partition.into(),
        }
    }
}

impl fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.partition)
    }
}

/// A record header: a name and a value (Kafka headers; kept by the embedded log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordHeader {
    /// The header name.
    pub name: String,
    /// The header value.
    pub value: Vec<u8>,
}

/// A record read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition it was read from.
    pub partition: PartitionRef,
    /// Its position in that partition.
    pub position: Position,
    /// The record key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The record value: an envelope, or anything else a stream may hold.
    pub value: Vec<u8>,
    /// The record headers (left out by a backend told that they are not wanted; see
    /// [`ConsumerBackend::want_headers`]).
    pub headers: Vec<RecordHeader>,
    /// When the record was written, if the backend knows.
    pub timestamp: Option<SystemTime>,
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The stream to write to.
    pub stream: Arc<str>,
    /// The key; `None` spreads keyless records over partitions.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// Headers, where the backend supports them.
    pub headers: Vec<RecordHeader>,
}

/// Where a written record landed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The partition it was written to.
    pub partition: PartitionRef,
    /// Its position there.
    pub position: Position,
}

/// What went wrong in a backend, in broad strokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The server could not be reached or the connection broke.
    Connection,
    /// An operation did not finish in time.
    Timeout,
    /// A stream, partition or position does not exist.
    NotFound,
    /// The server refused the request (too large, not allowed, invalid).
    Rejected,
    /// Local storage failed (the embedded log's SQLite file).
    Storage,
    /// Anything else.
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Connection => "connection error",
            BackendErrorKind::Timeout => "timed out",
            BackendErrorKind::NotFound => "not found",
            BackendErrorKind::Rejected => "rejected",
            BackendErrorKind::Storage => "storage error",
            BackendErrorKind::Other => "backend error",
        })
    }
}

/// An error from a backend: what kind, what happened, whether trying again may help, and
/// the underlying error.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    retriable: bool,
    #[source]
    source: Option<BoxError>,
}

impl BackendError {
    /// A new error that is not retriable.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retriable: false,
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marks the error as one that may go away when the operation is tried again.
    pub fn retriable(mut self) -> Self {
        self.retriable = true;
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Whether trying the operation again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// Writes records to streams.
///
/// Implementations batch internally; `send` resolves once the record is durably written.
pub trait ProducerBackend: Send + Sync + 'static {
    /// Writes one record and returns where it landed.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the record was not written; it is never silently dropped.
    fn send(
        &self,
        record: OutgoingRecord,
    ) -> impl Future<Output = Result<Delivery, BackendError>> + Send;

    /// Waits until every record sent before this call is written.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when buffered records could not be written.
    fn flush(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// What a consumer backend has to say next.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// These partitions are now this consumer's; it should [`seek`](ConsumerBackend::seek)
    /// each to its stored position before records of it are delivered.
    Assigned(Vec<PartitionRef>),
    /// These partitions are no longer this consumer's; positions of records handled from
    /// them should be stored now.
    Revoked(Vec<PartitionRef>),
    /// Records, in order within each partition.
    Records(Vec<Record>),
    /// Reads the backend retries by itself keep failing (a Kinesis shard throttled or
    /// unreachable): none succeeded since `since`; `reason` says what failed last. Sent
    /// again when `since` changes, and followed by
    /// [`ReadsSucceed`](Self::ReadsSucceed) once they work again.
    ReadsFailing {
        /// When the failures began.
        since: Instant,
        /// What failed last.
        reason: String,
    },
    /// Reads work again, after [`ReadsFailing`](Self::ReadsFailing) or after retriable
    /// errors from [`next_event`](ConsumerBackend::next_event) (such as when the brokers
    /// answer again while no record arrives).
    ReadsSucceed,
}

/// Reads records from the partitions assigned to it.
pub trait ConsumerBackend: Send + 'static {
    /// Waits for the next event.
    ///
    /// The future must be cancel-safe: dropping it before it completes loses no records.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when reading failed; [`BackendError::is_retriable`] says whether
    /// calling again may succeed.
    fn next_event(&mut self) -> impl Future<Output = Result<ConsumerEvent, BackendError>> + Send;

    /// Says whether the records' headers are wanted. A backend for which reading them
    /// costs (Kafka) may leave them out when they are not; they are wanted until said
    /// otherwise. A [`Consumer`](crate::Consumer) wants them only when it has a
    /// dead-letter stream, whose records keep them.
    fn want_headers(&mut self, wanted: bool) {
        let _ = wanted;
    }

    /// Reads `partition` from just after `after`, or from the configured start (such as the
    /// earliest record) when `after` is `None`.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the partition is not assigned or the position is not valid.
    fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Tells the backend that the consumer stored these positions (the last record handled
    /// of each partition, once per batch), for a backend that reports how far behind the
    /// consumer is. Does nothing by default.
    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        let _ = positions;
    }
}
