//! What the operators' tools ask of a backend: its streams and their partitions, where to
//! move a consumer group, how far behind a group is, and a range of records to replay.
//!
//! Positions differ by backend, and the answers say which kind they are: Kafka and the
//! embedded log number records with offsets ([`Extent::Offsets`]), so the first and the
//! next offset of a partition are known; a Kinesis shard tells only the range its
//! sequence numbers fall in ([`Extent::Sequences`]), and how far a reader is behind is
//! counted by reading ([`Lag::behind`]). Backends whose records have offsets get most of
//! this trait from [`offset_log`].

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::{BackendError, BackendErrorKind, PartitionRef, Position, Record};

pub mod offset_log;

/// A partition or shard of a stream, with what the backend tells of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition or shard.
    pub partition: PartitionRef,
    /// Where its records are.
    pub extent: Extent,
}

/// What a backend tells of the records of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    /// Records numbered by offsets (Kafka, the embedded log): `first` is the offset of the
    /// oldest record kept and `next` the one the next record written gets (Kafka's high
    /// watermark); the partition is empty when they are equal.
    Offsets {
        /// The offset of the oldest record kept.
        first: i64,
        /// The offset of the next record written.
        next: i64,
    },
    /// A Kinesis shard: the range its sequence numbers fall in, not where its records
    /// are.
    Sequences {
        /// The shard's starting sequence number.
        starting: String,
        /// A closed shard's ending sequence number; `None` while it is open.
        ending: Option<String>,
    },
}

impl Extent {
    /// The position of the oldest record kept, when the backend knows it and there is one.
    pub fn earliest(&self) -> Option<Position> {
        match self {
            Extent::Offsets { first, next } if next > first => Some(Position::Offset(*first)),
            _ => None,
        }
    }

    /// The position of the newest record, when the backend knows it and there is one.
    pub fn latest(&self) -> Option<Position> {
        match self {
            Extent::Offsets { first, next } if next > first => Some(Position::Offset(next - 1)),
            _ => None,
        }
    }
}

/// A point of a partition a consumer group can be moved to: `logpipe offsets reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Boundary {
    /// The oldest record kept: the group reads every record again.
    Earliest,
    /// Just after the newest record: the group skips every record written so far.
    Latest,
    /// The first record written at or after this time.
    Time(SystemTime),
}

/// How far a reader at a position is behind the newest record of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// Records after the position.
    pub records: u64,
    /// Whether `records` counts all of them; else it is a lower bound (a Kinesis shard is
    /// counted by reading it, and reading stops after a while).
    pub exact: bool,
    /// The offset the next record written gets, where records have offsets.
    pub end_offset: Option<i64>,
    /// Where records are counted by reading (Kinesis): how long ago the oldest unread
    /// record arrived, `Some(ZERO)` when none is unread.
    pub behind: Option<Duration>,
}

/// A bound of a range of records to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeBound {
    /// This offset in every partition (where records have offsets).
    Offset(i64),
    /// The first record written at or after this time, in every partition.
    Time(SystemTime),
    /// A record of one partition: its partition (or shard id) and its position as text.
    Record {
        /// The partition or shard id.
        partition: String,
        /// Its offset or sequence number.
        position: String,
    },
}

/// Reads a range of records, partition after partition or all at once.
pub trait RangeRead: Send {
    /// How many records the range holds, when the backend can tell before reading (for a
    /// progress bar).
    fn total(&self) -> Option<u64>;

    /// The next records of the range, in order within each partition; `None` once the
    /// range is read to its end. Retriable read errors are retried inside.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when reading fails in a way that trying again does not fix.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes may lose the batch it was reading; the
    /// reader is meant to be dropped with it (as a replay that is interrupted is).
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<Record>>, BackendError>> + Send;
}

/// The operator calls of a backend.
///
/// The provided methods suit a backend whose records have offsets ([`offset_log`]):
/// such a backend answers [`offsets_at`](Admin::offsets_at) and gets where to move a
/// group, how far behind it is, and positions as operators write them; a backend with
/// positions of another kind (Kinesis) provides its own.
pub trait Admin: Send + Sync {
    /// Reads a range of records for [`read_range`](Admin::read_range).
    type Range: RangeRead;

    /// The streams of the backend, sorted (Kafka: the topics with the configured prefix,
    /// without it).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend cannot be asked.
    fn list_streams(&self) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;

    /// Creates `stream` with `partitions` partitions (Kinesis: shards), and waits until
    /// it takes writes.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` when the stream exists already or the count is
    /// not valid; other kinds when the backend fails.
    fn create_stream(
        &self,
        stream: &str,
        partitions: u32,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The partitions of `stream` and where their records are, in partition order
    /// (Kinesis: parents before children).
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `NotFound` when the stream does not exist; other kinds
    /// when the backend fails.
    fn describe_stream(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Vec<PartitionInfo>, BackendError>> + Send;

    /// For each of `partitions` of `stream`, in order, the offset of the first record
    /// written at or after `time`; `None` where no record is that recent. By default the
    /// backend tells none (kind `Rejected`): its records have no offsets.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend fails or has no offsets.
    fn offsets_at(
        &self,
        stream: &str,
        partitions: &[PartitionRef],
        time: SystemTime,
    ) -> impl Future<Output = Result<Vec<Option<i64>>, BackendError>> + Send {
        let _ = (stream, partitions, time);
        std::future::ready(Err(BackendError::new(
            BackendErrorKind::Rejected,
            "this backend tells no offsets for a time",
        )))
    }

    /// Reads a position as an operator writes it (by default an offset; on Kinesis a
    /// sequence number or a starting point such as `TRIM_HORIZON`).
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` saying what the backend's positions look like.
    fn parse_position(&self, text: &str) -> Result<Position, BackendError> {
        offset_log::parse_position(text)
    }

    /// The position to store for a group so that it goes on at `boundary` of
    /// `partition`, where `stored` is the group's position now. `None` when there is
    /// nothing to store (a Kinesis shard without records keeps its position).
    ///
    /// By default, for records with offsets, the offset before the boundary's record
    /// ([`offset_log::position_at`]).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend fails.
    fn position_at(
        &self,
        partition: &PartitionInfo,
        boundary: Boundary,
        stored: Option<&Position>,
    ) -> impl Future<Output = Result<Option<Position>, BackendError>> + Send {
        let _ = stored;
        offset_log::position_at(self, partition, boundary)
    }

    /// How far a group at position `after` (`None`: no position stored, so it starts at
    /// the oldest record kept) is behind the newest record of `partition`.
    ///
    /// By default, for records with offsets, counted from the partition's extent
    /// ([`offset_log::lag`]).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend fails or `after` is not one of its positions.
    fn lag(
        &self,
        partition: &PartitionInfo,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<Lag, BackendError>> + Send {
        std::future::ready(offset_log::lag(partition, after))
    }

    /// The records of `stream` from `from` until `until` (not included), for replay.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` for bounds the backend cannot take (such as an
    /// offset on Kinesis) or that name two partitions; other kinds when it fails.
    fn read_range(
        &self,
        stream: &str,
        from: &RangeBound,
        until: &RangeBound,
    ) -> impl Future<Output = Result<Self::Range, BackendError>> + Send;
}

/// A partition count asked of [`Admin::create_stream`], as the `i32` that Kafka and
/// Kinesis take.
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected` for zero, or a count above `i32::MAX`.
pub fn partition_count(partitions: u32) -> Result<i32, BackendError> {
    i32::try_from(partitions)
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| {
            BackendError::new(
                BackendErrorKind::Rejected,
                format!("{partitions} is not a valid partition count"),
            )
        })
}

/// The partitions a range covers: every one, or the one its [`RangeBound::Record`] bounds
/// name.
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected` when the bounds name two partitions, or one the
/// stream does not have.
pub fn covered_partitions(
    partitions: Vec<PartitionInfo>,
    from: &RangeBound,
    until: &RangeBound,
) -> Result<Vec<PartitionInfo>, BackendError> {
    let rejected = |message: String| BackendError::new(BackendErrorKind::Rejected, message);
    let mut only: Option<&str> = None;
    for bound in [from, until] {
        if let RangeBound::Record { partition, .. } = bound {
            if let Some(other) = only.filter(|other| *other != partition) {
                return Err(rejected(format!(
                    "the bounds name two partitions, {other} and {partition}: a range is in one"
                )));
            }
            only = Some(partition);
        }
    }
    let Some(only) = only else {
        return Ok(partitions);
    };
    let kept: Vec<PartitionInfo> = partitions
        .into_iter()
        .filter(|info| *info.partition.partition == *only)
        .collect();
    if kept.is_empty() {
        return Err(rejected(format!("the stream has no partition {only:?}")));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions() -> Vec<PartitionInfo> {
        (0..3)
            .map(|p| PartitionInfo {
                partition: PartitionRef::new("s", p.to_string()),
                extent: Extent::Offsets { first: 0, next: 5 },
            })
            .collect()
    }

    #[test]
    fn a_range_covers_every_partition_or_the_one_its_bounds_name() {
        let record = |partition: &str| RangeBound::Record {
            partition: partition.into(),
            position: "1".into(),
        };
        let all = covered_partitions(partitions(), &RangeBound::Offset(1), &RangeBound::Offset(3));
        assert_eq!(all.unwrap().len(), 3);
        let one = covered_partitions(partitions(), &record("1"), &RangeBound::Offset(3)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(&*one[0].partition.partition, "1");
        let two = covered_partitions(partitions(), &record("1"), &record("2")).unwrap_err();
        assert!(two.to_string().contains("two partitions"), "{two}");
        let none = covered_partitions(partitions(), &record("7"), &RangeBound::Offset(3));
        assert_eq!(none.unwrap_err().kind(), BackendErrorKind::Rejected);
    }

    #[test]
    fn an_extent_of_offsets_knows_its_oldest_and_newest_records() {
        let full = Extent::Offsets { first: 2, next: 5 };
        assert_eq!(full.earliest(), Some(Position::Offset(2)));
        assert_eq!(full.latest(), Some(Position::Offset(4)));
        let empty = Extent::Offsets { first: 5, next: 5 };
        assert_eq!((empty.earliest(), empty.latest()), (None, None));
        let shard = Extent::Sequences {
            starting: "1".into(),
            ending: None,
        };
        assert_eq!((shard.earliest(), shard.latest()), (None, None));
    }
}
