//! The embedded backend of logpipe: a durable, partitioned log in one SQLite file, and
//! the SQLite offset store. It implements the contract of `logpipe-core`.
//!
//! - [`EmbeddedLog`] (`sqlite://PATH`, or `memory://` for tests) keeps streams of
//!   partitioned records in a SQLite file that a producer process and a consumer process
//!   can use at the same time. Streams are created on first use with the log's default
//!   partition count. Sends are batched into transactions; consumers in the same process
//!   are woken at once, others poll every [`poll_interval_ms`](EmbeddedOptions::poll_interval_ms).
//!   Consumers of one group, in one process or many on the file, share the partitions
//!   through leases in the file ([`SqliteLeaseStore`]).
//! - [`SqliteOffsetStore`] keeps consumer positions in a SQLite table, and can write a
//!   handler's own rows and the record's position in one transaction
//!   ([`SqliteOffsetStore::transaction`]): exactly-once effects for SQLite-backed
//!   handlers.
//! - [`SqliteOutbox`]: a transactional outbox, written in the service's own
//!   `rusqlite::Transaction` and read by a relay.
//!
//! The database runs in WAL mode with a busy timeout, so several processes can share it;
//! all work runs on Tokio's blocking threads.
//!
//! ```
//! use logpipe_core::{ConsumerBackend, ConsumerEvent, OutgoingRecord, ProducerBackend};
//! use logpipe_sqlite::EmbeddedLog;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let log = EmbeddedLog::open_in_memory()?;
//! let delivery = log
//!     .send(OutgoingRecord { stream: "people".into(), key: Some(b"k".to_vec()), value: b"v".to_vec(), headers: vec![] })
//!     .await?;
//!
//! let mut consumer = log.consumer(["people"]);
//! let ConsumerEvent::Assigned(partitions) = consumer.next_event().await? else { panic!() };
//! for partition in &partitions {
//!     consumer.seek(partition, None).await?;
//! }
//! let ConsumerEvent::Records(records) = consumer.next_event().await? else { panic!() };
//! assert_eq!(records[0].value, &b"v"[..]);
//! assert_eq!(records[0].partition, delivery.partition);
//! # Ok::<(), logpipe_core::BackendError>(())
//! # }).unwrap();
//! ```

mod admin;
mod consumer;
mod db;
mod leases;
mod log;
mod offsets;
mod options;
mod outbox;
mod url;

pub use consumer::EmbeddedConsumer;
pub use leases::SqliteLeaseStore;
pub use log::EmbeddedLog;
pub use offsets::SqliteOffsetStore;
pub use options::EmbeddedOptions;
pub use outbox::SqliteOutbox;
pub use url::SqliteUrl;
