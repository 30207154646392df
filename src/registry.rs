//! The registry: which handler runs for which (type, version), and which types are ignored.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use logpipe_core::BoxFuture;
use logpipe_core::hash::FnvBuildHasher;

use crate::BoxError;
use crate::batch_handler::BatchHandler;
use crate::catch_panic::{CatchPanic, catch};
use crate::envelope::{self, BodyError, DecodeError, MalformedError, json_scan};
use crate::handler::{Context, Handler, HandlerPanic};
use crate::message::Message;

mod erased;
mod upcast;

use erased::{ErasedBatch, ErasedHandler, Started, Typed, TypedBatch, refuse_own, set_envelope};
use upcast::{ErasedUpcaster, TypedUpcaster, Upcasting};

/// Why a record was skipped instead of handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// The value is not readable: no format prefix, an unknown format, bad JSON or
    /// MessagePack, an empty body.
    #[error("malformed record")]
    Malformed(#[source] MalformedError),
    /// The value is readable but not an envelope with `type`, `version` and `message`.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(&'static str),
    /// No handler is registered for the message type.
    #[error("unknown message type {message_type:?}")]
    UnknownType {
        /// The message type.
        message_type: String,
    },
    /// The type is known but no handler is registered for this version (or the version
    /// is not a non-negative integer).
    #[error("unknown version {version} of message type {message_type:?}")]
    UnknownVersion {
        /// The message type.
        message_type: String,
        /// The version as written.
        version: String,
    },
    /// The message type is ignored by this registry.
    #[error("ignored message type {message_type:?}")]
    Ignored {
        /// The message type.
        message_type: String,
    },
    /// The record was written by this service's own producer (its envelope's
    /// `producer` is the consumer's producer id) and the consumer skips its own records
    /// ([`skip_own_records`](crate::ConsumerOptions::skip_own_records)).
    #[error("own record (producer {producer:?})")]
    Own {
        /// The producer id.
        producer: String,
    },
    /// The message does not fit the Rust type registered for its (type, version).
    #[error("message type {message_type:?} version {version} failed validation")]
    Validation {
        /// The message type.
        message_type: String,
        /// The version.
        version: u64,
        /// What did not fit.
        #[source]
        source: BodyError,
    },
}

impl SkipReason {
    /// A short label for metrics and dead-letter headers: `malformed`, `invalid_envelope`,
    /// `unknown_type`, `unknown_version`, `ignored`, `own` or `validation`.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Malformed(_) => "malformed",
            SkipReason::InvalidEnvelope(_) => "invalid_envelope",
            SkipReason::UnknownType { .. } => "unknown_type",
            SkipReason::UnknownVersion { .. } => "unknown_version",
            SkipReason::Ignored { .. } => "ignored",
            SkipReason::Own { .. } => "own",
            SkipReason::Validation { .. } => "validation",
        }
    }

    /// Whether the record is skipped because it was configured so (an ignored type, an
    /// own record), nothing being wrong with it: such a skip is no error in strict mode
    /// and is never dead-lettered.
    pub fn is_deliberate(&self) -> bool {
        matches!(self, SkipReason::Ignored { .. } | SkipReason::Own { .. })
    }
}

/// Why [`Registry::dispatch`] did not handle a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The record is to be skipped.
    #[error("record skipped")]
    Skipped(#[from] SkipReason),
    /// The handler returned an error.
    #[error("handler failed")]
    Handler(#[source] BoxError),
    /// The handler, or the decoding of its message type, panicked.
    #[error("handler panicked")]
    Panicked(#[source] HandlerPanic),
}

/// A panic's message as the error of a dispatch.
fn panicked(message: String) -> DispatchError {
    DispatchError::Panicked(HandlerPanic::new(message))
}

/// The error of a batch, shared by each record it failed.
#[derive(Debug)]
struct BatchFailure(Arc<BoxError>);

impl fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the batch handler failed: {}", self.0)
    }
}

impl std::error::Error for BatchFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

/// An error in how a registry was put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two handlers were registered for the same (type, version).
    #[error("two handlers are registered for message type {message_type:?} version {version}")]
    DuplicateHandler {
        /// The message type.
        message_type: String,
        /// The version.
        version: u64,
    },
    /// A message type breaks [`MESSAGE_TYPE_RULE`](logpipe_core::MESSAGE_TYPE_RULE):
    /// no producer of django-logpipe or logpipe could send it.
    #[error("{0}")]
    InvalidType(String),
    /// A message type was both given handlers and ignored.
    #[error("message type {0:?} is both handled and ignored")]
    HandledAndIgnored(String),
    /// Two upcasters were registered from the same (type, version).
    #[error("two upcasters are registered from message type {message_type:?} version {version}")]
    DuplicateUpcaster {
        /// The message type.
        message_type: String,
        /// The version they read.
        version: u64,
    },
    /// An upcaster does not turn a version of a type into a later version of the same
    /// type.
    #[error(
        "an upcaster must make a later version of the same message type, not {to_type:?} version {to} from {from_type:?} version {from}"
    )]
    UpcasterNotForward {
        /// The type it reads.
        from_type: String,
        /// The version it reads.
        from: u64,
        /// The type it makes.
        to_type: String,
        /// The version it makes.
        to: u64,
    },
    /// An upcaster makes a Rust type other than the one the entry of its target version
    /// takes (two types claim that version).
    #[error(
        "the upcaster from message type {message_type:?} version {from} makes {made}, but version {to} is taken as {expected}"
    )]
    UpcasterTypeMismatch {
        /// The message type.
        message_type: String,
        /// The version it reads.
        from: u64,
        /// The version it makes.
        to: u64,
        /// The Rust type it makes.
        made: &'static str,
        /// The Rust type the target version's handler (or upcaster) takes.
        expected: &'static str,
    },
    /// An upcaster makes a version that has neither a handler nor a further upcaster.
    #[error(
        "the upcaster from message type {message_type:?} version {from} makes version {to}, which has no handler or upcaster"
    )]
    UpcasterWithoutHandler {
        /// The message type.
        message_type: String,
        /// The version it reads.
        from: u64,
        /// The version it makes.
        to: u64,
    },
}

enum TypeEntry {
    Ignored,
    /// The handlers of each version; a type has few, so a list beats a map.
    Handled {
        name: &'static str,
        versions: Vec<VersionEntry>,
    },
}

/// The handler of one (type, version).
struct VersionEntry {
    version: u64,
    /// For a batch handler, the number that tells its batches from others'.
    batch: Option<usize>,
    handler: Arc<dyn ErasedHandler>,
}

/// Maps each (type, version) to its handler.
///
/// Several versions of one type live side by side: that is how a schema migrates (add
/// the v2 handler, switch producers to v2, later drop v1). An upcaster
/// ([`RegistryBuilder::upcast`]) lets the v2 handler take v1 records too.
///
/// ```
/// use logpipe::{Context, Message, Registry, handler_fn};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 1, key = "uuid")]
/// struct PersonV1 { uuid: String, name: String }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 2, key = "uuid")]
/// struct PersonV2 { uuid: String, first_name: String, last_name: String }
///
/// let registry = Registry::builder()
///     .handle(handler_fn(|p: PersonV1, _: Context| async move { Ok::<_, std::io::Error>(()) }))
///     .handle(handler_fn(|p: PersonV2, _: Context| async move { Ok::<_, std::io::Error>(()) }))
///     .ignore("audit")
///     .build()?;
/// assert_eq!(registry.handled(), vec![("person".to_string(), 1), ("person".to_string(), 2)]);
/// # Ok::<(), logpipe::RegistryError>(())
/// ```
pub struct Registry {
    /// Each type and what to do with it. A registry has few types: a list searched in
    /// order beats a hash map, whose hashing costs more than a few comparisons.
    types: Vec<(Box<str>, TypeEntry)>,
    /// How many batch handlers there are.
    batches: usize,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("handled", &self.handled())
            .field("ignored", &self.ignored())
            .finish()
    }
}

/// Builds a [`Registry`]; see [`Registry::builder`].
#[derive(Default)]
#[must_use]
pub struct RegistryBuilder {
    handlers: Vec<(&'static str, u64, Arc<dyn ErasedHandler>)>,
    upcasters: Vec<UpcasterEntry>,
    ignored: Vec<String>,
}

/// An upcaster as registered: what it reads and what it makes.
struct UpcasterEntry {
    from: (&'static str, u64),
    to: (&'static str, u64),
    /// The Rust type it makes, and its name.
    makes: (std::any::TypeId, &'static str),
    upcaster: Arc<dyn ErasedUpcaster>,
}

impl RegistryBuilder {
    /// Registers `handler` for messages of type `M` (its `TYPE` and `VERSION`).
    pub fn handle<M: Message, H: Handler<M>>(mut self, handler: H) -> Self {
        let erased = Arc::new(Typed::<M, H>::new(handler));
        self.handlers.push((M::TYPE, M::VERSION, erased));
        self
    }

    /// Registers a batch `handler` for messages of type `M`: a consumer hands it the
    /// records of `M`'s (type, version) many at a time (see [`BatchHandler`]).
    pub fn handle_batch<M: Message, H: BatchHandler<M>>(mut self, handler: H) -> Self {
        let erased = Arc::new(TypedBatch::<M, H>::new(handler));
        self.handlers.push((M::TYPE, M::VERSION, erased));
        self
    }

    /// Reads messages of `Old`'s (type, version) as `New`, a later version of the same
    /// type: each is decoded as `Old`, turned into `New` by `upcaster`, and handled as a
    /// `New` would be, by its handler or by a further upcaster, so that a chain v1 → v2
    /// → v3 ends at the v3 handler and old records need no handler of their own. The
    /// handler's [`Context::version`] is the version on the wire.
    ///
    /// A handler registered for `Old` itself wins over the upcaster from it: records of
    /// that version go to that handler, and the upcaster is not used for them.
    ///
    /// ```
    /// use logpipe::{Context, Message, Registry, handler_fn};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[logpipe(type = "person", version = 1, key = "uuid")]
    /// struct PersonV1 { uuid: String, name: String }
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[logpipe(type = "person", version = 2, key = "uuid")]
    /// struct PersonV2 { uuid: String, first_name: String, last_name: String }
    ///
    /// let registry = Registry::builder()
    ///     .upcast(|old: PersonV1| {
    ///         let (first, last) = old.name.split_once(' ').unwrap_or((&old.name, ""));
    ///         PersonV2 { uuid: old.uuid.clone(), first_name: first.into(), last_name: last.into() }
    ///     })
    ///     .handle(handler_fn(|p: PersonV2, context: Context| async move {
    ///         println!("{} {} (written as version {})", p.first_name, p.last_name, context.version);
    ///         Ok::<_, std::io::Error>(())
    ///     }))
    ///     .build()?;
    /// assert_eq!(registry.handled(), vec![("person".to_string(), 1), ("person".to_string(), 2)]);
    /// # Ok::<(), logpipe::RegistryError>(())
    /// ```
    pub fn upcast<Old, New, F>(self, upcaster: F) -> Self
    where
        Old: Message,
        New: Message,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.try_upcast(move |old: Old| Ok::<New, std::convert::Infallible>(upcaster(old)))
    }

    /// Like [`upcast`](Self::upcast), with an upcaster that may refuse a message: a
    /// refused record is skipped as a validation failure (label `validation`), with the
    /// upcaster's error as its reason, and dead-lettered if the consumer does that.
    ///
    /// An upcaster is to be a pure function of the message: a record it refuses is
    /// decoded and upcast once more to report why.
    pub fn try_upcast<Old, New, F, E>(mut self, upcaster: F) -> Self
    where
        Old: Message,
        New: Message,
        F: Fn(Old) -> Result<New, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.upcasters.push(UpcasterEntry {
            from: (Old::TYPE, Old::VERSION),
            to: (New::TYPE, New::VERSION),
            makes: (std::any::TypeId::of::<New>(), std::any::type_name::<New>()),
            upcaster: Arc::new(TypedUpcaster::<Old, New, F>::new(upcaster)),
        });
        self
    }

    /// Skips every message of `message_type`, whatever its version, with a debug log.
    pub fn ignore(mut self, message_type: impl Into<String>) -> Self {
        self.ignored.push(message_type.into());
        self
    }

    /// Builds the registry.
    ///
    /// # Errors
    ///
    /// [`RegistryError`] when two handlers share a (type, version), a type is both
    /// handled and ignored, two upcasters read one (type, version), or an upcaster does
    /// not make a later version of its type that is handled (by a handler or a further
    /// upcaster).
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut types: HashMap<Box<str>, TypeEntry, FnvBuildHasher> = HashMap::default();
        let mut batches = 0;
        for (message_type, version, handler) in self.handlers {
            logpipe_core::check_message_type(message_type).map_err(RegistryError::InvalidType)?;
            let entry = types
                .entry(message_type.into())
                .or_insert_with(|| TypeEntry::Handled {
                    name: message_type,
                    versions: Vec::new(),
                });
            let TypeEntry::Handled { versions, .. } = entry else {
                unreachable!("only handlers inserted so far")
            };
            if versions.iter().any(|entry| entry.version == version) {
                let message_type = message_type.to_owned();
                return Err(RegistryError::DuplicateHandler {
                    message_type,
                    version,
                });
            }
            let batch = handler.batch().map(|_| {
                batches += 1;
                batches - 1
            });
            versions.push(VersionEntry {
                version,
                batch,
                handler,
            });
        }
        add_upcasters(&mut types, self.upcasters)?;
        for message_type in self.ignored {
            match types.get(message_type.as_str()) {
                Some(TypeEntry::Handled { .. }) => {
                    return Err(RegistryError::HandledAndIgnored(message_type));
                }
                _ => {
                    types.insert(message_type.into(), TypeEntry::Ignored);
                }
            }
        }
        Ok(Registry {
            types: types.into_iter().collect(),
            batches,
        })
    }
}

/// Gives each version read through upcasters its entry, from the latest down, so that
/// each upcaster hands on to the entry of the version it makes.
fn add_upcasters(
    types: &mut HashMap<Box<str>, TypeEntry, FnvBuildHasher>,
    mut upcasters: Vec<UpcasterEntry>,
) -> Result<(), RegistryError> {
    for entry in &upcasters {
        let ((from_type, from), (to_type, to)) = (entry.from, entry.to);
        if from_type != to_type || to <= from {
            return Err(RegistryError::UpcasterNotForward {
                from_type: from_type.to_owned(),
                from,
                to_type: to_type.to_owned(),
                to,
            });
        }
        let same_source = upcasters.iter().filter(|other| other.from == entry.from);
        if same_source.count() > 1 {
            return Err(RegistryError::DuplicateUpcaster {
                message_type: from_type.to_owned(),
                version: from,
            });
        }
    }
    upcasters.sort_by_key(|entry| std::cmp::Reverse(entry.from.1));
    for UpcasterEntry {
        from,
        to,
        makes,
        upcaster,
    } in upcasters
    {
        let (message_type, version) = from;
        let without_handler = || RegistryError::UpcasterWithoutHandler {
            message_type: message_type.to_owned(),
            from: version,
            to: to.1,
        };
        let Some(TypeEntry::Handled { versions, .. }) = types.get_mut(message_type) else {
            return Err(without_handler());
        };
        let Some(next) = versions.iter().find(|entry| entry.version == to.1) else {
            return Err(without_handler());
        };
        let expected = next.handler.takes();
        if expected.0 != makes.0 {
            return Err(RegistryError::UpcasterTypeMismatch {
                message_type: message_type.to_owned(),
                from: version,
                to: to.1,
                made: makes.1,
                expected: expected.1,
            });
        }
        if versions.iter().any(|entry| entry.version == version) {
            // A handler of this version takes its records as they are.
            continue;
        }
        let (batch, next) = (next.batch, Arc::clone(&next.handler));
        versions.push(VersionEntry {
            version,
            batch,
            handler: Arc::new(Upcasting {
                step: upcaster,
                next,
            }),
        });
    }
    Ok(())
}

impl Registry {
    /// Starts an empty registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// What to do with messages of `message_type`.
    fn entry(&self, message_type: &str) -> Option<&TypeEntry> {
        self.types
            .iter()
            .find(|(name, _)| **name == *message_type)
            .map(|(_, entry)| entry)
    }

    /// Every handled (type, version), sorted.
    pub fn handled(&self) -> Vec<(String, u64)> {
        let mut handled: Vec<_> = self
            .types
            .iter()
            .filter_map(|(name, entry)| match entry {
                TypeEntry::Handled { versions, .. } => Some(
                    versions
                        .iter()
                        .map(|entry| (name.to_string(), entry.version)),
                ),
                TypeEntry::Ignored => None,
            })
            .flatten()
            .collect();
        handled.sort();
        handled
    }

    /// Every ignored type, sorted.
    pub fn ignored(&self) -> Vec<String> {
        let mut ignored: Vec<_> = self
            .types
            .iter()
            .filter(|(_, entry)| matches!(entry, TypeEntry::Ignored))
            .map(|(name, _)| name.to_string())
            .collect();
        ignored.sort();
        ignored
    }

    /// Decodes a record value and runs the handler registered for its exact (type,
    /// version) once, or, for a version read through upcasters, the handler of the
    /// version they make.
    ///
    /// The context moves into the handler's call, with `message_type`, `version` and
    /// `producer` set from the envelope. The message is decoded into the handler's type
    /// only after its (type, version) matched.
    ///
    /// A panic in the handler, or in the decoding of its message type, is caught and
    /// returned as [`DispatchError::Panicked`]; it does not unwind into the caller.
    ///
    /// # Errors
    ///
    /// [`DispatchError::Skipped`] when the record is to be skipped (malformed, invalid,
    /// unknown, ignored, failed validation); [`DispatchError::Handler`] when the handler
    /// returned an error; [`DispatchError::Panicked`] when it panicked.
    pub async fn dispatch(&self, value: &[u8], context: Context) -> Result<(), DispatchError> {
        self.start(value, context, None)?.await
    }

    /// Decodes a record value and starts its handler's call, as
    /// [`dispatch`](Self::dispatch) does, skipping a record written by producer `own`
    /// (with [`SkipReason::Own`]).
    ///
    /// # Errors
    ///
    /// [`DispatchError::Skipped`], or [`DispatchError::Panicked`] when decoding the
    /// message panicked.
    pub(crate) fn start(
        &self,
        value: &[u8],
        context: Context,
        own: Option<&str>,
    ) -> Result<Call<'_>, DispatchError> {
        let mut context = Some(context);
        let (identity, started) =
            catch(|| self.start_uncaught(value, &mut context, own)).map_err(panicked)??;
        let (message_type, version) = identity;
        let future = match started {
            Started::Call(call) => call,
            // A batch handler, called with a batch of one.
            Started::Message(batch, kept) => {
                let batch_call = batch.call_batch(vec![kept]);
                Box::pin(async move { batch_call.await.map_err(|error| error.into_parts().1) })
            }
        };
        Ok(Call {
            message_type,
            version,
            future: CatchPanic::new(future),
        })
    }

    /// The number of the batch handler that takes a record with this value, if a batch
    /// handler does: records with the same number may go in one batch.
    pub(crate) fn batch_of(&self, value: &[u8]) -> Option<usize> {
        if self.batches == 0 {
            return None;
        }
        let (message_type, version) = match value
            .strip_prefix(b"json:")
            .and_then(json_scan::scan_prefix)
        {
            Some(prefix) => (prefix.message_type, prefix.version),
            None => {
                let envelope = envelope::decode(value).ok()?;
                return self.batch_number(&envelope.message_type, envelope.version);
            }
        };
        self.batch_number(message_type, version)
    }

    fn batch_number(&self, message_type: &str, version: u64) -> Option<usize> {
        match self.entry(message_type)? {
            TypeEntry::Handled { versions, .. } => {
                versions
                    .iter()
                    .find(|entry| entry.version == version)?
                    .batch
            }
            TypeEntry::Ignored => None,
        }
    }

    /// Decodes the values of `records` (which [`batch_of`](Self::batch_of) gave one
    /// number) and runs their batch handler once with those that decode: an outcome for
    /// each record, in order, as [`start`](Self::start)
    /// gives for one. A record the batch error names fails; the others are handled.
    pub(crate) async fn dispatch_batch(
        &self,
        records: &mut [(&[u8], &mut Context)],
        own: Option<&str>,
    ) -> Vec<Result<(), DispatchError>> {
        let mut outcomes: Vec<Result<(), DispatchError>> = Vec::with_capacity(records.len());
        let mut messages = Vec::new();
        let mut in_batch = Vec::new();
        let mut handler: Option<&dyn ErasedBatch> = None;
        for (index, (value, context)) in records.iter_mut().enumerate() {
            let mut slot = Some(context.clone());
            match catch(|| self.start_uncaught(value, &mut slot, own)) {
                Ok(Ok(((message_type, version), started))) => {
                    context.message_type = message_type;
                    context.version = version;
                    match started {
                        Started::Message(batch, kept) => {
                            handler = Some(batch);
                            messages.push(kept);
                            in_batch.push(index);
                            outcomes.push(Ok(()));
                        }
                        // Not a batch handler's record after all: handled on its own.
                        Started::Call(call) => outcomes.push(caught(CatchPanic::new(call).await)),
                    }
                }
                Ok(Err(reason)) => outcomes.push(Err(DispatchError::Skipped(reason))),
                Err(message) => outcomes.push(Err(panicked(message))),
            }
        }
        let Some(handler) = handler else {
            return outcomes;
        };
        let result = match catch(|| handler.call_batch(messages)) {
            Ok(call) => CatchPanic::new(call).await,
            Err(message) => Err(message),
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let (failed, source) = error.into_parts();
                let source: Arc<BoxError> = Arc::new(source);
                let failed = failed.unwrap_or_else(|| (0..in_batch.len()).collect());
                for index in failed.into_iter().filter_map(|i| in_batch.get(i)) {
                    let shared = BatchFailure(Arc::clone(&source));
                    outcomes[*index] = Err(DispatchError::Handler(Box::new(shared)));
                }
            }
            Err(message) => {
                let panic = HandlerPanic::new(message);
                for index in in_batch {
                    outcomes[index] = Err(DispatchError::Panicked(panic.clone()));
                }
            }
        }
        outcomes
    }

    /// The handler for an envelope of the usual shape (`json:`, keys in the order
    /// producers write them), started (or refused as this service's own) after one pass
    /// over the record; `None` for anything else, which
    /// [`start_uncaught`](Self::start_uncaught) then reads in full.
    fn start_usual_json<'a>(
        &'a self,
        value: &[u8],
        own: Option<&str>,
        context: &mut Option<Context>,
    ) -> Option<Result<(Identity, Started<'a>), SkipReason>> {
        let body = value.strip_prefix(b"json:")?;
        let prefix = json_scan::scan_prefix(body)?;
        let Some(TypeEntry::Handled { name, versions }) = self.entry(prefix.message_type) else {
            return None;
        };
        let entry = versions
            .iter()
            .find(|entry| entry.version == prefix.version)?;
        let identity = (*name, prefix.version);
        let started = entry.handler.call_json_prefix(
            &body[prefix.message_start..],
            identity,
            own,
            context,
        )?;
        Some(started.map(|started| (identity, started)))
    }

    /// Starts the handler of the record (or keeps its message for a batch) with the
    /// context in `context`, refusing a record of producer `own`; a panic unwinds.
    fn start_uncaught<'a>(
        &'a self,
        value: &[u8],
        context: &mut Option<Context>,
        own: Option<&str>,
    ) -> Result<(Identity, Started<'a>), SkipReason> {
        if let Some(started) = self.start_usual_json(value, own, context) {
            return started;
        }
        let envelope = match envelope::decode(value) {
            Ok(envelope) => envelope,
            Err(DecodeError::Malformed(err)) => return Err(SkipReason::Malformed(err)),
            Err(DecodeError::Invalid(why)) => return Err(SkipReason::InvalidEnvelope(why)),
            Err(DecodeError::InvalidVersion {
                message_type,
                version,
            }) => {
                return Err(match self.entry(&message_type) {
                    None => SkipReason::UnknownType { message_type },
                    Some(TypeEntry::Ignored) => SkipReason::Ignored { message_type },
                    Some(TypeEntry::Handled { .. }) => SkipReason::UnknownVersion {
                        message_type,
                        version,
                    },
                });
            }
        };
        let message_type = envelope.message_type.as_ref();
        // A message that is not even valid JSON makes the record malformed, whatever its
        // type. It is checked only here, on the way to a skip, so that a message that is
        // handled is parsed once.
        let skip = |reason: SkipReason| match envelope.body.check_syntax() {
            Ok(()) => reason,
            Err(malformed) => SkipReason::Malformed(malformed),
        };
        let owned = || message_type.to_owned();
        let (name, handler) = match self.entry(message_type) {
            None => {
                return Err(skip(SkipReason::UnknownType {
                    message_type: owned(),
                }));
            }
            Some(TypeEntry::Ignored) => {
                return Err(skip(SkipReason::Ignored {
                    message_type: owned(),
                }));
            }
            Some(TypeEntry::Handled { name, versions }) => {
                match versions
                    .iter()
                    .find(|entry| entry.version == envelope.version)
                {
                    Some(entry) => (*name, &entry.handler),
                    None => {
                        let version = envelope.version.to_string();
                        return Err(skip(SkipReason::UnknownVersion {
                            message_type: owned(),
                            version,
                        }));
                    }
                }
            }
        };
        refuse_own(own, envelope.producer.as_deref())?;
        let identity = (name, envelope.version);
        if let Some(context) = context {
            set_envelope(context, identity, envelope.producer.as_deref());
        }
        let started = handler.call(&envelope.body, context).map_err(|source| {
            skip(SkipReason::Validation {
                message_type: owned(),
                version: envelope.version,
                source,
            })
        })?;
        Ok((identity, started))
    }
}

/// The (type, version) of a record's envelope, whose handler was found.
type Identity = (&'static str, u64);

/// A record's handler call, started by [`Registry::start`]: the (type, version) of its
/// envelope, and the call, which comes to [`DispatchError::Handler`] or
/// [`DispatchError::Panicked`] when it fails.
pub(crate) struct Call<'a> {
    pub(crate) message_type: &'static str,
    pub(crate) version: u64,
    future: CatchPanic<BoxFuture<'a, Result<(), BoxError>>>,
}

impl Future for Call<'_> {
    type Output = Result<(), DispatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.future).poll(cx).map(caught)
    }
}

/// What a handler's call came to, from its output under [`CatchPanic`]: its error, or
/// the message of its panic.
fn caught(call: Result<Result<(), BoxError>, String>) -> Result<(), DispatchError> {
    match call {
        Ok(handled) => handled.map_err(DispatchError::Handler),
        Err(message) => Err(panicked(message)),
    }
}
