//! The embedded backend: a durable, partitioned log in one SQLite file (the crate
//! `logpipe-sqlite`).
//!
//! `sqlite://PATH` opens (or creates) the log in a file that a producer process and a
//! consumer process can use at the same time; `memory://` keeps it in memory, for tests.
//! Streams are created on first use with the log's default partition count.

pub use logpipe_sqlite::{EmbeddedConsumer, EmbeddedLog, EmbeddedOptions};
