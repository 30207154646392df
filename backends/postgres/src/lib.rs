//! The PostgreSQL offset store of logpipe: consumer positions in the service's own
//! database, for any backend, and exactly-once effects for handlers that write to it.
//! It implements the offset-store contract of `logpipe-core` over [sqlx].
//!
//! - [`PgOffsetStore`] (`offset_store = "postgres://USER@HOST/DATABASE?schema=logpipe"`,
//!   [`PgStoreOptions`]) keeps positions in the table `logpipe_positions`, keyed by
//!   (group, stream, partition or shard): offsets as `bigint`, Kinesis sequence numbers
//!   as text, with `updated_at`. Several processes can share it.
//! - [`PgOffsetStore::begin`] gives a handler a [`sqlx::Transaction`] in which its
//!   record is marked handled: the handler's rows and the mark commit together, or
//!   neither does, and a consumer that lost its partition is fenced off.
//! - [`PgLeaseStore`] ([`PgOffsetStore::leases`]) keeps the leases by which the
//!   processes of a consumer group share partitions (`logpipe_core::leases`), beside the
//!   positions.
//! - [`PgOutbox`]: a transactional outbox, written in the service's own transaction and
//!   read by a relay in the order the rows were written.
//!
//! ```no_run
//! use logpipe_core::{Context, OffsetStore, PartitionRef, Position};
//! use logpipe_postgres::PgOffsetStore;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let store = PgOffsetStore::connect(&"postgres://app@127.0.0.1/people".parse()?).await?;
//! let partition = PartitionRef::new("people", "0");
//! store.store("billing", &[(partition.clone(), Position::Offset(41))]).await?;
//! assert_eq!(store.load("billing", &partition).await?, Some(Position::Offset(41)));
//! # Ok(())
//! # }
//! ```

mod leases;
mod options;
mod outbox;
mod schema;
mod store;

pub use leases::PgLeaseStore;
pub use options::PgStoreOptions;
pub use outbox::PgOutbox;
/// The sqlx this crate is built with, whose [`Transaction`](sqlx::Transaction) the
/// handlers get.
pub use sqlx;
pub use store::PgOffsetStore;
