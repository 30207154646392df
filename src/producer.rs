//! The producer: encodes messages into envelopes and sends them.

use std::sync::Arc;

use crate::any::AnyBackend;
use crate::backend::{Delivery, DeliveryFuture, OutgoingRecord, ProducerBackend};
use crate::config::Config;
use crate::envelope::Format;
use crate::error::Error;
use crate::message::Message;
use crate::outgoing::record_of;

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
    /// partitions) and waits until the backend has written it: [`enqueue`](Self::enqueue),
    /// then its delivery. One call at a time makes one round trip to the broker per
    /// message; to send many, [`enqueue`](Self::enqueue) them or use
    /// [`send_all`](Self::send_all).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the message cannot be encoded; [`Error::Backend`] when it
    /// was not written.
    pub async fn send<M: Message>(&self, message: &M) -> Result<Delivery, Error> {
        Ok(self.enqueue(message).await?.await?)
    }

    /// Hands `message` to the backend and returns its delivery, to await later: a loop
    /// of `enqueue` calls sends as fast as concurrent sends, and records of one key keep
    /// the order of the calls. Waits only while the backend's buffer is full.
    ///
    /// ```
    /// # use logpipe::{Message, Producer, embedded::EmbeddedLog};
    /// # #[derive(serde::Serialize, serde::Deserialize, Message)]
    /// # #[logpipe(type = "person", version = 1, key = "uuid")]
    /// # struct PersonV1 { uuid: String, name: String }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let producer = Producer::new(EmbeddedLog::open_in_memory()?, "people");
    /// let mut deliveries = Vec::new();
    /// for n in 0..100 {
    ///     let person = PersonV1 { uuid: format!("{n}"), name: "Joe".into() };
    ///     deliveries.push(producer.enqueue(&person).await?);
    /// }
    /// for delivery in deliveries {
    ///     delivery.await?;
    /// }
    /// # Ok::<(), logpipe::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the message cannot be encoded; [`Error::Backend`] when the
    /// backend refuses it. The delivery fails with a
    /// [`BackendError`](crate::backend::BackendError) when it was not written.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes hands the message over or not; dropping
    /// the delivery does not withdraw a message handed over.
    pub async fn enqueue<M: Message>(&self, message: &M) -> Result<DeliveryFuture, Error> {
        let record = self.record(message)?;
        Ok(self.backend.enqueue(record).await?)
    }

    /// The record of `message`: its envelope, under its key.
    fn record<M: Message>(&self, message: &M) -> Result<OutgoingRecord, Error> {
        record_of(
            self.format,
            self.producer_id.as_deref(),
            Arc::clone(&self.stream),
            message,
        )
    }

    /// Sends every message of `messages`, handed over in order, and returns where each
    /// landed. All are encoded first: one that cannot be sends none.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when a message cannot be encoded; [`Error::Backend`] for the
    /// first message not written (those before it are still written).
    pub async fn send_all<'m, M: Message + 'm>(
        &self,
        messages: impl IntoIterator<Item = &'m M>,
    ) -> Result<Vec<Delivery>, Error> {
        let records = messages
            .into_iter()
            .map(|message| self.record(message))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(logpipe_core::send_all(&self.backend, records).await?)
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

impl Producer<AnyBackend> {
    /// A producer writing to `stream` of the backend `config` names, in its `format`
    /// and with its `producer_id`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend cannot be opened.
    pub fn from_config(config: &Config, stream: impl Into<Arc<str>>) -> Result<Self, Error> {
        let mut producer = Self::new(config.open_backend()?, stream).with_format(config.format);
        producer.producer_id.clone_from(&config.producer_id);
        Ok(producer)
    }
}
