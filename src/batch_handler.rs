//! Batch handlers: code that handles many messages of one (type, version) in one call,
//! such as a multi-row insert.

use std::future::Future;
use std::marker::PhantomData;

use crate::BoxError;
use crate::handler::Context;
use crate::message::Message;

/// Handles messages of type `M` a batch at a time.
///
/// A consumer collects up to [`batch_max_records`](crate::ConsumerOptions::batch_max_records)
/// records of `M`'s (type, version) from one partition, waiting at most
/// [`batch_linger_ms`](crate::ConsumerOptions::batch_linger_ms) after the first, and calls
/// the handler once with all of them, each with its [`Context`], in the order read.
/// Ordering holds between batches as between records: a record that must wait for
/// another (its key's, or its partition's) is not in a batch beside it unless it comes
/// after it in the same batch.
///
/// Success handles the whole batch. An error retries the whole batch with backoff; once
/// the retries are spent, the handler-error policy applies to each of its records, or
/// only to those a [`BatchError::records`] names (the others count as handled).
/// Positions are stored after the batch, as after single records.
///
/// ```
/// use logpipe::{BatchError, BatchHandler, Context, Message};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 1, key = "uuid")]
/// struct PersonV1 { uuid: String, name: String }
///
/// struct SavePeople;
///
/// impl BatchHandler<PersonV1> for SavePeople {
///     async fn handle_batch(&self, people: Vec<(PersonV1, Context)>) -> Result<(), BatchError> {
///         println!("inserting {} people at once", people.len());
///         Ok(())
///     }
/// }
/// ```
pub trait BatchHandler<M: Message>: Send + Sync + 'static {
    /// Handles a batch of messages, in the order they were read.
    ///
    /// # Errors
    ///
    /// A [`BatchError`]: for the whole batch, or naming the records that failed.
    fn handle_batch(
        &self,
        batch: Vec<(M, Context)>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

/// Why a batch handler failed: an error, and which records of the batch it concerns.
///
/// Any error converts into one for the whole batch, so `?` works in a batch handler.
#[derive(Debug)]
pub struct BatchError {
    /// The indices in the batch of the records that failed; `None`: all of them.
    failed: Option<Vec<usize>>,
    source: BoxError,
}

impl BatchError {
    /// The whole batch failed.
    pub fn all(error: impl Into<BoxError>) -> Self {
        Self {
            failed: None,
            source: error.into(),
        }
    }

    /// Only the records at `indices` of the batch failed; the others are handled.
    pub fn records(indices: impl IntoIterator<Item = usize>, error: impl Into<BoxError>) -> Self {
        Self {
            failed: Some(indices.into_iter().collect()),
            source: error.into(),
        }
    }

    /// The indices of the records that failed, or `None` when all did.
    pub fn failed(&self) -> Option<&[usize]> {
        self.failed.as_deref()
    }

    /// The error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    pub(crate) fn into_parts(self) -> (Option<Vec<usize>>, BoxError) {
        (self.failed, self.source)
    }
}

impl<E: Into<BoxError>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self::all(error)
    }
}

/// A batch handler made from an async closure; see [`batch_handler_fn`].
pub struct BatchHandlerFn<F, M> {
    f: F,
    message: PhantomData<fn(M)>,
}

/// Makes a batch handler from a closure that takes the batch.
///
/// ```
/// use logpipe::{BatchError, Context, Message, batch_handler_fn};
/// # #[derive(serde::Serialize, serde::Deserialize, Message)]
/// # #[logpipe(type = "person", version = 1)]
/// # struct PersonV1 { name: String }
///
/// let handler = batch_handler_fn(|people: Vec<(PersonV1, Context)>| async move {
///     println!("{} people", people.len());
///     Ok::<_, BatchError>(())
/// });
/// ```
pub fn batch_handler_fn<M, F, Fut>(f: F) -> BatchHandlerFn<F, M>
where
    M: Message,
    F: Fn(Vec<(M, Context)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BatchError>> + Send,
{
    BatchHandlerFn {
        f,
        message: PhantomData,
    }
}

impl<M, F, Fut> BatchHandler<M> for BatchHandlerFn<F, M>
where
    M: Message,
    F: Fn(Vec<(M, Context)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BatchError>> + Send,
{
    fn handle_batch(
        &self,
        batch: Vec<(M, Context)>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        (self.f)(batch)
    }
}
