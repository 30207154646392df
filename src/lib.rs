//! Versioned messages between services over Apache Kafka, AWS Kinesis or an embedded log,
//! wire-compatible with the Python library django-logpipe.
//!
//! A producer writes each message as an envelope naming its type and schema version
//! (`json:{"type":"person","version":2,"message":{...}}`). A consumer reads records,
//! runs the handler registered for each exact (type, version), and stores how far it
//! got, so that a restarted consumer goes on where it stopped.
//!
//! ```
//! use logpipe::offsets::MemoryOffsetStore;
//! use logpipe::{Consumer, Context, Message, Producer, Registry, embedded::EmbeddedLog, handler_fn};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Debug, Serialize, Deserialize, Message)]
//! #[logpipe(type = "person", version = 1, key = "uuid")]
//! struct PersonV1 {
//!     uuid: String,
//!     name: String,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let log = EmbeddedLog::open_in_memory()?;
//! let producer = Producer::new(log.clone(), "people");
//! producer.send(&PersonV1 { uuid: "6f1c".into(), name: "Joe".into() }).await?;
//!
//! let shutdown = CancellationToken::new();
//! let stop = shutdown.clone();
//! let registry = Registry::builder()
//!     .handle(handler_fn(move |person: PersonV1, _: Context| {
//!         let stop = stop.clone();
//!         async move {
//!             println!("hello, {}", person.name);
//!             stop.cancel();
//!             Ok::<_, std::convert::Infallible>(())
//!         }
//!     }))
//!     .build()?;
//! let store = MemoryOffsetStore::new();
//! Consumer::new(log.consumer(["people"]), store.clone(), registry, "greeter").run(shutdown).await?;
//! assert_eq!(store.positions("greeter").len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! The parts:
//! - [`envelope`]: the wire format, byte for byte as django-logpipe writes it;
//! - [`Message`] (with its derive) and [`Handler`]: message types and their handlers;
//! - [`Registry`]: (type, version) to handler, ignored types, bad-record reasons;
//! - [`Producer`], [`Consumer`], [`MultiConsumer`]: sending and consuming;
//! - [`backend`]: the traits a backend implements; [`embedded`]: the SQLite log;
//!   `kafka`: Apache Kafka (feature `kafka`);
//! - [`offsets`]: where consumer positions are stored; `postgres`: the PostgreSQL
//!   offset store and handler transactions (feature `postgres`);
//! - [`admin`]: streams, their partitions and positions, for operator tools;
//! - [`config`], [`run`], `cli`: configuration, [`register_consumer!`] and the programs.

pub mod admin;
pub mod any;
pub mod backend;
pub mod batch_handler;
mod catch_panic;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod embedded;
pub mod envelope;
mod error;
pub mod handler;
pub mod health;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
pub mod message;
pub mod multi;
pub mod offsets;
pub mod outbox;
mod outgoing;
#[cfg(feature = "postgres")]
pub mod postgres;
mod producer;
pub mod registry;
pub mod run;
#[cfg(feature = "schemas")]
pub mod schema;
#[cfg(feature = "cli")]
pub mod serve;

pub use backend::{Delivery, PartitionRef, Position, Record};
pub use batch_handler::{BatchError, BatchHandler, batch_handler_fn};
pub use consumer::{Consumer, ConsumerOptions};
pub use error::Error;
pub use handler::{Context, Handler, HandlerPanic, handler_fn};
pub use logpipe_derive::Message;
pub use message::{KeyValue, Message};
pub use multi::MultiConsumer;
pub use producer::Producer;
pub use registry::{Registry, RegistryError, SkipReason};

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

pub use logpipe_core::{BoxError, Bytes, error_chain};

/// Items the macros of this crate use. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
