//! Upcasters: a message of an older version turned into a newer one before a handler
//! runs, so that one handler serves every version still on the wire.
//!
//! A version read through upcasters has an entry of its own ([`Upcasting`]): it decodes
//! the older message, upcasts it, and hands the result on to the entry of the newer
//! version, which is a handler or upcasts again, so that a chain v1 → v2 → v3 ends at
//! the v3 handler.

use std::any::{Any, TypeId, type_name};
use std::marker::PhantomData;
use std::sync::Arc;

use super::erased::{ErasedBatch, ErasedHandler, Started, decode_json_prefix};
use crate::BoxError;
use crate::envelope::{Body, BodyError};
use crate::handler::Context;
use crate::message::Message;
use crate::registry::SkipReason;

/// An upcaster from one message type to another, with the types erased.
pub(super) trait ErasedUpcaster: Send + Sync {
    /// Decodes the older message in `body`.
    fn decode(&self, body: &Body<'_>) -> Result<Box<dyn Any + Send>, BodyError>;

    /// Decodes the older message at the start of `rest`, as
    /// [`ErasedHandler::call_json_prefix`] does; `None` when anything is unusual.
    fn decode_json_prefix(
        &self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Context,
    ) -> Option<Result<Box<dyn Any + Send>, SkipReason>>;

    /// Turns the older message (as decoded) into the newer one.
    fn upcast(&self, old: Box<dyn Any + Send>) -> Result<Box<dyn Any + Send>, BoxError>;

    /// The Rust type it reads, and its name.
    fn reads(&self) -> (TypeId, &'static str);
}

/// An upcaster from `Old` to `New`.
pub(super) struct TypedUpcaster<Old, New, F> {
    upcast: F,
    types: PhantomData<fn(Old) -> New>,
}

impl<Old, New, F> TypedUpcaster<Old, New, F> {
    pub(super) fn new(upcast: F) -> Self {
        Self {
            upcast,
            types: PhantomData,
        }
    }
}

impl<Old, New, F, E> ErasedUpcaster for TypedUpcaster<Old, New, F>
where
    Old: Message,
    New: Message,
    F: Fn(Old) -> Result<New, E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    fn decode(&self, body: &Body<'_>) -> Result<Box<dyn Any + Send>, BodyError> {
        Ok(Box::new(body.deserialize::<Old>()?))
    }

    fn decode_json_prefix(
        &self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Context,
    ) -> Option<Result<Box<dyn Any + Send>, SkipReason>> {
        let old = decode_json_prefix::<Old>(rest, identity, own, context)?;
        Some(old.map(|old| Box::new(old) as Box<dyn Any + Send>))
    }

    fn upcast(&self, old: Box<dyn Any + Send>) -> Result<Box<dyn Any + Send>, BoxError> {
        let old = *old
            .downcast::<Old>()
            .expect("an upcaster is given the messages it decoded, or its source's upcasts");
        let new = (self.upcast)(old).map_err(Into::into)?;
        Ok(Box::new(new))
    }

    fn reads(&self) -> (TypeId, &'static str) {
        (TypeId::of::<Old>(), type_name::<Old>())
    }
}

/// The entry of a version that no handler takes as it is: its messages are upcast by
/// `step` and handed on to `next`, the entry of the version `step` makes.
pub(super) struct Upcasting {
    pub(super) step: Arc<dyn ErasedUpcaster>,
    pub(super) next: Arc<dyn ErasedHandler>,
}

impl ErasedHandler for Upcasting {
    fn call<'a>(
        &'a self,
        body: &Body<'_>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BodyError> {
        let message = self.step.decode(body)?;
        self.take(message, context).map_err(BodyError::Upcast)
    }

    fn call_json_prefix<'a>(
        &'a self,
        rest: &[u8],
        identity: (&'static str, u64),
        own: Option<&str>,
        context: &mut Option<Context>,
    ) -> Option<Result<Started<'a>, SkipReason>> {
        let message = match self
            .step
            .decode_json_prefix(rest, identity, own, context.as_mut()?)?
        {
            Ok(message) => message,
            Err(own) => return Some(Err(own)),
        };
        // A refusal is reported by the full path, which upcasts again.
        self.take(message, context).ok().map(Ok)
    }

    fn take<'a>(
        &'a self,
        message: Box<dyn Any + Send>,
        context: &mut Option<Context>,
    ) -> Result<Started<'a>, BoxError> {
        let newer = self.step.upcast(message)?;
        self.next.take(newer, context)
    }

    fn batch(&self) -> Option<&dyn ErasedBatch> {
        self.next.batch()
    }

    fn takes(&self) -> (TypeId, &'static str) {
        self.step.reads()
    }
}
