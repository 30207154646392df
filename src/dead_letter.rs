//! Dead-letter streams: where records that cannot be handled are kept for later.

use std::sync::Arc;

use crate::any::DynProducer;
use crate::backend::{
    BackendError, Delivery, OutgoingRecord, ProducerBackend, Record, RecordHeader,
};

/// Header naming the stream a dead-lettered record was read from.
pub const HEADER_STREAM: &str = "logpipe.original.stream";
/// Header naming its partition or shard.
pub const HEADER_PARTITION: &str = "logpipe.original.partition";
/// Header with its offset or sequence number.
pub const HEADER_POSITION: &str = "logpipe.original.position";
/// Header with why it was dead-lettered: a skip reason label (such as `malformed`),
/// `handler_error`, or `panic` (the handler panicked).
pub const HEADER_REASON: &str = "logpipe.reason";
/// Header with the error, as text.
pub const HEADER_ERROR: &str = "logpipe.error";

/// A stream that receives records a consumer could not handle, unchanged (same key and
/// value), with headers saying where they came from and why.
///
/// ```
/// use logpipe::{dead_letter::DeadLetter, embedded::EmbeddedLog};
///
/// # fn main() -> Result<(), logpipe::backend::BackendError> {
/// let log = EmbeddedLog::open_in_memory()?;
/// let dead_letter = DeadLetter::new(log, "people.dead-letter");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeadLetter {
    backend: Arc<dyn DynProducer>,
    stream: Arc<str>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl DeadLetter {
    /// Dead-letters to `stream` through `backend`.
    pub fn new<P: ProducerBackend>(backend: P, stream: impl Into<Arc<str>>) -> Self {
        Self {
            backend: Arc::new(backend),
            stream: stream.into(),
        }
    }

    /// The dead-letter stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Writes `record` with the original location, `reason` and `error` in headers.
    pub(crate) async fn send(
        &self,
        record: &Record,
        reason: &str,
        error: &str,
    ) -> Result<Delivery, BackendError> {
        let mut headers = record.headers.clone();
        let header = |name: &str, value: &str| RecordHeader {
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
        };
        headers.extend([
            header(HEADER_STREAM, &record.partition.stream),
            header(HEADER_PARTITION, &record.partition.partition),
            header(HEADER_POSITION, &record.position.to_string()),
            header(HEADER_REASON, reason),
            header(HEADER_ERROR, error),
        ]);
        let outgoing = OutgoingRecord {
            stream: Arc::clone(&self.stream),
            key: record.key.as_deref().map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            headers,
        };
        self.backend.enqueue_boxed(outgoing).await?.await
    }
}
