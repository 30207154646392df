//! Handlers: the code that runs for each message of one (type, version).

use std::future::Future;
use std::marker::PhantomData;

use futures_util::TryFutureExt;

pub use logpipe_core::Context;

use crate::BoxError;
use crate::message::Message;

/// Handles messages of type `M`.
///
/// An error makes the consumer retry the message with backoff and then apply its
/// handler-error policy; the record's position is not stored until a handler succeeds.
/// Closures become handlers with [`handler_fn`].
///
/// ```
/// use logpipe::{BoxError, Context, Handler, Message};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 1, key = "uuid")]
/// struct PersonV1 { uuid: String, name: String }
///
/// struct SavePerson;
///
/// impl Handler<PersonV1> for SavePerson {
///     async fn handle(&self, person: PersonV1, context: Context) -> Result<(), BoxError> {
///         println!("{} from {} at {}", person.name, context.partition, context.position);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler<M: Message>: Send + Sync + 'static {
    /// Handles one message.
    ///
    /// # Errors
    ///
    /// Any error: the consumer retries the message and then applies its policy.
    fn handle(
        &self,
        message: M,
        context: Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A handler panicked (or the decoding of its message type did) on a record.
///
/// The consumer treats it as a failure of that record, as if the handler had returned
/// an error: it is logged and counted (`logpipe_handler_panics_total`), retried, then
/// the consumer stops or dead-letters the record (reason `panic`). The panic is never
/// resumed, so it never takes the process down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler panicked: {message}")]
pub struct HandlerPanic {
    message: String,
}

impl HandlerPanic {
    pub(crate) fn new(message: String) -> Self {
        Self { message }
    }

    /// The panic's message (`"a panic without a message"` when it was not text).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A handler made from an async closure; see [`handler_fn`].
pub struct HandlerFn<F, M> {
    f: F,
    message: PhantomData<fn(M)>,
}

/// Makes a handler from a closure that takes the message and its [`Context`].
///
/// ```
/// use logpipe::{Context, Message, handler_fn};
/// # #[derive(serde::Serialize, serde::Deserialize, Message)]
/// # #[logpipe(type = "person", version = 1)]
/// # struct PersonV1 { name: String }
///
/// let handler = handler_fn(|person: PersonV1, context: Context| async move {
///     println!("{} at {}", person.name, context.position);
///     Ok::<_, std::io::Error>(())
/// });
/// ```
pub fn handler_fn<M, F, Fut, E>(f: F) -> HandlerFn<F, M>
where
    M: Message,
    F: Fn(M, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    HandlerFn {
        f,
        message: PhantomData,
    }
}

impl<M, F, Fut, E> Handler<M> for HandlerFn<F, M>
where
    M: Message,
    F: Fn(M, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    // The closure's own future, not an `async` block around it, which would hold the
    // message and the context twice: every record's call moves and stores it.
    fn handle(
        &self,
        message: M,
        context: Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (self.f)(message, context).map_err(Into::into)
    }
}
