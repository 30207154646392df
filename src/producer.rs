//! The producer: encodes messages into envelopes and sends them.

use std::sync::Arc;

use crate::backend::{Delivery, OutgoingRecord, ProducerBackend};
use crate::envelope::{self, Format, Header};
use crate::error::Error;
use crate::message::Message;

/// Sends messages to one stream.
///
/// ```
/// use logpipe::{Message, Producer, embedded::EmbeddedLog};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 1, key = "uuid")]
/// struct PersonV1 { uuid: String, name: String }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let producer = Producer::new(EmbeddedLog::open_in_memory()?, "people").with_producer_id("crm");
/// let delivery = producer.send(&PersonV1 { uuid: "6f1c".into(), name: "Joe".into() }).await?;
/// println!("written to {} at {}", delivery.partition, delivery.position);
/// producer.flush().await?;
/// # Ok::<(), logpipe::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Producer<B> {
    backend: B,
    stream: Arc<str>,
    format: Format,
    producer_id: Option<String>,
}

impl<B: ProducerBackend> Producer<B> {
    /// A producer writing JSON envelopes to `stream`, with no producer id.
    pub fn new(backend: B, stream: impl Into<Arc<str>>) -> Self {
        Self {
            backend,
            stream: stream.into(),
            format: Format::Json,
            producer_id: None,
        }
    }

    /// Writes envelopes in `format`.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Writes `producer_id` into every envelope's `producer` key.
    #[must_use]
    pub fn with_producer_id(mut self, producer_id: impl Into<String>) -> Self {
        self.producer_id = Some(producer_id.into());
        self
    }

    /// The stream this producer writes to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Sends `message` keyed by its key field (keyless messages are spread over
    /// partitions) and waits until the backend has written it.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the message cannot be encoded; [`Error::Backend`] when it
    /// was not written.
    pub async fn send<M: Message>(&self, message: &M) -> Result<Delivery, Error> {
        let header = Header {
            message_type: M::TYPE,
            version: M::VERSION,
            producer: self.producer_id.as_deref(),
        };
        let value =
            envelope::encode(self.format, &header, message).map_err(|source| Error::Encode {
                message_type: M::TYPE,
                version: M::VERSION,
                source,
            })?;
        let key = message
            .key()
            .filter(|key| !key.is_empty())
            .map(String::into_bytes);
        let record = OutgoingRecord {
            stream: Arc::clone(&self.stream),
            key,
            value,
            headers: Vec::new(),
        };
        Ok(self.backend.send(record).await?)
    }

    /// Waits until every message sent so far is written.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when buffered messages could not be written.
    pub async fn flush(&self) -> Result<(), Error> {
        Ok(self.backend.flush().await?)
    }
}
