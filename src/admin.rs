//! What the operators' tools ask of a backend: its streams and their partitions, where to
//! move a consumer group, how far behind a group is, and ranges of records to replay
//! (the [`Admin`] trait of `logpipe-core`, which every backend implements).

pub use logpipe_core::admin::{
    Admin, Boundary, Extent, Lag, PartitionInfo, RangeBound, RangeRead, covered_partitions,
};
