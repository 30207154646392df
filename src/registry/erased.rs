//! Handlers with their message type erased, so that handlers of many types share one
//! list: a single handler starts its call on one message, a batch handler's message is
//! decoded and kept for a call on many.

use std::any::{Any, TypeId, type_name};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use logpipe_core::BoxFuture;

use crate::BoxError;
use crate::batch_handler::{BatchError, BatchHandler};
use crate::envelope::{Body, BodyError, json_scan};
use crate::handler::{Context, Handler};
use crate::message::Message;
use crate::registry::SkipReason;

/// What a handler does with a decoded message and its context.
pub(super) enum Started<'a> {
    /// A single handler's call on it, started.
    Call(BoxFuture<'a, Result<(), BoxError>>),
    /// A batch handler's message and context, kept for a call with others, and the
    /// handler.
    Message(&'a dyn ErasedBatch, Kept),
}

/// A batch handler's message `M` and its context, as `(M, Context)`: one allocation, and
/// small to move while the record's handler is found.
pub(super) type Kept = Box<dyn Any + Send>;

/// A handler of some message type.
///
/// The record's context waits in a slot, which the handler's call takes when it starts
/// (or the batch handler's message when it is kept); otherwise it is left there.
pub(super) trait ErasedHandler: Send + Sync {
    /// Decodes the message in `body` and starts the handler (or keeps the message).
    fn call<'a>(
        &'a self,
        body: &Body<'_>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BodyError>;

    /// Decodes the message at the start of `rest` (a JSON envelope from its `message`
    /// on), checks that the envelope ends as producers end it and was not written by
    /// producer `own` ([`SkipReason::Own`]), sets the context and starts the handler (or
    /// keeps the message). `None` when anything is unusual: then the full path decides.
    fn call_json_prefix<'a>(
        &'a self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Option<Context>,
    ) -> Option<Result<Started<'a>, SkipReason>>;

    /// Starts the handler on a message decoded already (the newer message an upcaster
    /// made), or keeps the message.
    ///
    /// # Errors
    ///
    /// The error of an upcaster on the way.
    fn take<'a>(
        &'a self,
        message: Box<dyn Any + Send>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BoxError>;

    /// The batch handler, if this is one (or the one an upcaster's messages go to).
    fn batch(&self) -> Option<&dyn ErasedBatch>;

    /// The Rust type of the messages it [takes](Self::take), and its name.
    fn takes(&self) -> (TypeId, &'static str);
}

/// A batch handler of some message type.
pub(super) trait ErasedBatch: Send + Sync {
    /// Calls the handler with messages it decoded ([`Started::Message`]).
    fn call_batch<'a>(&'a self, messages: Vec<Kept>) -> BoxFuture<'a, Result<(), BatchError>>;
}

/// Sets the envelope's fields in `context`, keeping its producer when unchanged.
pub(super) fn set_envelope(
    context: &mut Context,
    (message_type, version): (&'static str, u64),
    producer: Option<&str>,
) {
    context.message_type = message_type;
    context.version = version;
    if context.producer.as_deref() != producer {
        context.producer = producer.map(shared_producer);
    }
}

thread_local! {
    /// The producer id this thread last put in a context: the records of a stream mostly
    /// come from one producer, whose id is then shared instead of copied for each.
    static LAST_PRODUCER: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// `producer` as shared text, the one of the last record when it is the same.
fn shared_producer(producer: &str) -> Arc<str> {
    LAST_PRODUCER.with_borrow_mut(|last| match last {
        Some(shared) if **shared == *producer => Arc::clone(shared),
        _ => Arc::clone(last.insert(Arc::from(producer))),
    })
}

/// Refuses a record written by producer `own`, this service's own.
pub(super) fn refuse_own(own: Option<&str>, producer: Option<&str>) -> Result<(), SkipReason> {
    match (own, producer) {
        (Some(own), Some(producer)) if own == producer => Err(SkipReason::Own {
            producer: producer.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The message at the start of `rest`, for [`ErasedHandler::call_json_prefix`].
pub(super) fn decode_json_prefix<M: Message>(
    rest: &[u8],
    identity: (&'static str, u64),
    own: Option<&str>,
    context: &mut Context,
) -> Option<Result<M, SkipReason>> {
    let (message, producer) = json_scan::split_suffix(rest)?;
    let message = serde_json::from_slice::<M>(message).ok()?;
    if let Err(own) = refuse_own(own, producer) {
        return Some(Err(own));
    }
    set_envelope(context, identity, producer);
    Some(Ok(message))
}

/// A single handler of messages `M`.
pub(super) struct Typed<M, H> {
    handler: H,
    message: PhantomData<fn(M)>,
}

impl<M: Message, H: Handler<M>> Typed<M, H> {
    pub(super) fn new(handler: H) -> Self {
        Self {
            handler,
            message: PhantomData,
        }
    }

    fn start(&self, message: M, context: &mut Option<Context>) -> Started<'_> {
        Started::Call(Box::pin(self.handler.handle(message, take(context))))
    }
}

/// The message an upcaster made, of the type its target handler takes.
fn upcast_target<M: Message>(message: Box<dyn Any + Send>) -> M {
    *message
        .downcast::<M>()
        .expect("an upcaster hands on the message type of its target")
}

/// The context from its slot, where it waits until a call takes it.
pub(super) fn take(context: &mut Option<Context>) -> Context {
    context
        .take()
        .expect("a record's context is taken by one call")
}

impl<M: Message, H: Handler<M>> ErasedHandler for Typed<M, H> {
    fn call<'a>(
        &'a self,
        body: &Body<'_>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BodyError> {
        let message: M = body.deserialize()?;
        Ok(self.start(message, context))
    }

    fn call_json_prefix<'a>(
        &'a self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Option<Context>,
    ) -> Option<Result<Started<'a>, SkipReason>> {
        let message = decode_json_prefix::<M>(rest, identity, own, context.as_mut()?)?;
        Some(message.map(|message| self.start(message, context)))
    }

    fn take<'a>(
        &'a self,
        message: Box<dyn Any + Send>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BoxError> {
        Ok(self.start(upcast_target(message), context))
    }

    fn batch(&self) -> Option<&dyn ErasedBatch> {
        None
    }

    fn takes(&self) -> (TypeId, &'static str) {
        (TypeId::of::<M>(), type_name::<M>())
    }
}

/// A batch handler of messages `M`.
pub(super) struct TypedBatch<M, H> {
    handler: H,
    message: PhantomData<fn(M)>,
}

impl<M: Message, H: BatchHandler<M>> TypedBatch<M, H> {
    pub(super) fn new(handler: H) -> Self {
        Self {
            handler,
            message: PhantomData,
        }
    }

    fn keep(&self, message: M, context: &mut Option<Context>) -> Started<'_> {
        Started::Message(self, Box::new((message, take(context))))
    }
}

impl<M: Message, H: BatchHandler<M>> ErasedHandler for TypedBatch<M, H> {
    fn call<'a>(
        &'a self,
        body: &Body<'_>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BodyError> {
        let message: M = body.deserialize()?;
        Ok(self.keep(message, context))
    }

    fn call_json_prefix<'a>(
        &'a self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Option<Context>,
    ) -> Option<Result<Started<'a>, SkipReason>> {
        let message = decode_json_prefix::<M>(rest, identity, own, context.as_mut()?)?;
        Some(message.map(|message| self.keep(message, context)))
    }

    fn take<'a>(
        &'a self,
        message: Box<dyn Any + Send>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BoxError> {
        Ok(self.keep(upcast_target(message), context))
    }

    fn batch(&self) -> Option<&dyn ErasedBatch> {
        Some(self)
    }

    fn takes(&self) -> (TypeId, &'static str) {
        (TypeId::of::<M>(), type_name::<M>())
    }
}

impl<M: Message, H: BatchHandler<M>> ErasedBatch for TypedBatch<M, H> {
    fn call_batch<'a>(&'a self, messages: Vec<Kept>) -> BoxFuture<'a, Result<(), BatchError>> {
        let batch = messages
            .into_iter()
            .map(|kept| {
                *kept
                    .downcast::<(M, Context)>()
                    .expect("a batch handler is given the messages it decoded")
            })
            .collect();
        Box::pin(self.handler.handle_batch(batch))
    }
}
