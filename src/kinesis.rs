//! The Kinesis backend (the crate `logpipe-kinesis`, over aws-sdk-kinesis).
//!
//! `backend = "kinesis://?region=..&endpoint=.."` selects it; the `[kinesis]` table is
//! [`KinesisOptions`].
//!
//! - Shards are partitions: [`PartitionRef`](crate::PartitionRef) `{ stream, partition:
//!   shard id }`, and positions are [`Position::Sequence`](crate::Position) sequence
//!   numbers, or the starting points of [`ShardPosition`].
//! - Records keep their partition key as their key; keyless messages get a random one.
//!   Kinesis records have no headers: headers (such as a dead-letter's origin and reason)
//!   are not written, and the consumer's log says where a dead-lettered record came
//!   from and why. The dead-lettered record's key and value are the original bytes.
//! - Positions are stored by default in SQLite (`sqlite://logpipe.db`), under the
//!   consumer group qualified by the region (`GROUP@REGION`, see
//!   [`Backend::position_group`](crate::backend::Backend::position_group)), the stream
//!   and the shard: the same stream name in two regions keeps two sets of positions.
//! - The consumers of a group share the shards through leases in `[kinesis] leases`, by
//!   default the offset store's database when it is SQLite or PostgreSQL (see
//!   [`KinesisBackend::with_leases`]).
//! - Credentials come from the standard AWS chain (environment, profile, instance role).
//!   The region is the URL's `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.

pub use logpipe_kinesis::*;
