//! Writing records.

use std::future::Future;

use crate::{BackendError, Delivery, OutgoingRecord};

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
