//! The contract between logpipe and its backends.
//!
//! A backend moves record values: it knows nothing of envelopes or handlers. This crate
//! says what one provides, and every backend crate (`logpipe-kafka`, `logpipe-kinesis`,
//! `logpipe-sqlite`) implements it:
//!
//! - [`Record`], [`OutgoingRecord`], [`Delivery`], [`PartitionRef`] and [`Position`]:
//!   records read and written, and where they sit;
//! - [`ProducerBackend`] writes records, [`ConsumerBackend`] reads them as
//!   [`ConsumerEvent`]s, [`Admin`] answers the operators' tools, and [`Backend`] is all of
//!   them together with a consumer factory;
//! - [`OffsetStore`] keeps consumer positions ([`MemoryOffsetStore`] here, SQLite and
//!   Kafka consumer-group commits in their crates);
//! - [`leases`]: how the processes of a group share partitions where the backend has no
//!   group coordinator (the embedded log's partitions): [`leases::LeaseStore`] and the
//!   [`leases::Leaser`] that runs its rules;
//! - [`outbox`]: a transactional outbox, as a relay reads it
//!   ([`outbox::OutboxStore`]);
//! - [`BackendError`], [`StoreError`] and [`SettingError`]: what went wrong, whether to
//!   try again, and which setting is bad;
//! - [`Context`]: where a message came from, for handlers and for stores that write a
//!   position in the handler's own transaction;
//! - `conformance` (feature `conformance`): the suites every backend and every offset
//!   store runs from its own tests.
//!
//! Applications use these through the `logpipe` crate, which re-exports them.

pub mod admin;
mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod consumer;
mod context;
mod error;
pub mod hash;
pub mod leases;
mod names;
mod offsets;
pub mod outbox;
mod producer;
mod record;
mod redact;
mod setting;
pub mod time;

pub use admin::{Admin, Boundary, Extent, Lag, PartitionInfo, RangeBound, RangeRead};
pub use backend::Backend;
/// The shared byte buffer of record keys and values (re-exported from `bytes`).
pub use bytes::Bytes;
pub use consumer::{ConsumerBackend, ConsumerEvent, StartFrom};
pub use context::Context;
pub use error::{BackendError, BackendErrorKind, BoxError, error_chain};
pub use names::{MESSAGE_TYPE_RULE, STREAM_NAME_RULE, check_message_type, check_stream_name};
pub use offsets::{MemoryOffsetStore, OffsetStore, StoreError};
pub use producer::{DeliveryFuture, ProducerBackend, send_all};
pub use record::{
    Delivery, OutgoingRecord, PartitionRef, Position, Record, RecordHeader, SequenceRank,
};
pub use redact::{is_secret_key, redact_url, redact_value};
pub use setting::SettingError;

/// A boxed future, for the object-safe forms of the traits.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
