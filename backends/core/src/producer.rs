//! Writing records.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{BackendError, Delivery, OutgoingRecord};

/// Writes records to streams.
///
/// Implementations batch internally; a record is handed over by
/// [`enqueue`](Self::enqueue) and is durably written once its [`DeliveryFuture`]
/// resolves.
pub trait ProducerBackend: Send + Sync + 'static {
    /// Hands `record` to the backend and returns its delivery, to await when the caller
    /// wants to know where it landed. Waits only while the backend's buffer is full.
    ///
    /// Records handed over by calls one after another (each awaited before the next
    /// starts) are written in that order within a partition, so records of one key keep
    /// the order of the calls, whether or not anyone awaits their deliveries.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the record cannot be handed over (too large, a key the
    /// backend refuses, the backend closed); its [`DeliveryFuture`] fails instead when
    /// it was handed over and not written. A record is never silently dropped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes hands the record over or not; dropping
    /// the [`DeliveryFuture`] does not withdraw a record handed over.
    fn enqueue(
        &self,
        record: OutgoingRecord,
    ) -> impl Future<Output = Result<DeliveryFuture, BackendError>> + Send;

    /// Writes one record and returns where it landed: [`enqueue`](Self::enqueue), then
    /// its delivery.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the record was not written; it is never silently dropped.
    fn send(
        &self,
        record: OutgoingRecord,
    ) -> impl Future<Output = Result<Delivery, BackendError>> + Send {
        async move { self.enqueue(record).await?.await }
    }

    /// Waits until every record handed over before this call is written.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when buffered records could not be written.
    fn flush(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// Hands `records` to `producer` one after another (so records of one key keep their
/// order), then waits until all are written, and returns where each landed.
///
/// # Errors
///
/// The first [`BackendError`]: of handing a record over (those before it are still
/// written) or of a delivery.
pub async fn send_all<P: ProducerBackend>(
    producer: &P,
    records: impl IntoIterator<Item = OutgoingRecord>,
) -> Result<Vec<Delivery>, BackendError> {
    let mut deliveries = Vec::new();
    for record in records {
        deliveries.push(producer.enqueue(record).await?);
    }
    let mut delivered = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        delivered.push(delivery.await?);
    }
    Ok(delivered)
}

/// Where a record handed to a backend landed, once it is written: a future that owns
/// what it waits for, so many can be held and awaited in any order.
pub struct DeliveryFuture {
    inner: Pin<Box<dyn Future<Output = Result<Delivery, BackendError>> + Send>>,
}

impl DeliveryFuture {
    /// The delivery that `future` resolves to.
    pub fn new(
        future: impl Future<Output = Result<Delivery, BackendError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery, BackendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture").finish_non_exhaustive()
    }
}
