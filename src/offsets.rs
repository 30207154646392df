//! Offset stores: where a consumer group records how far it got in each partition.
//!
//! Keys are (consumer group, stream, partition or shard). A position is stored only after
//! the record at it was handled or skipped, so a restarted consumer resumes just after it.
//! [`MemoryOffsetStore`] keeps positions in memory, [`SqliteOffsetStore`] in a SQLite
//! file (and can write a handler's own rows in the same transaction), `PgOffsetStore`
//! in PostgreSQL (the same, for PostgreSQL; feature `postgres`), and Kafka commits them
//! to the consumer group (`logpipe::kafka::GroupOffsets`).

pub use logpipe_core::{MemoryOffsetStore, OffsetStore, StoreError};
#[cfg(feature = "postgres")]
pub use logpipe_postgres::PgOffsetStore;
pub use logpipe_sqlite::SqliteOffsetStore;
