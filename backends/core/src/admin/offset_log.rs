//! The parts of [`Admin`] that follow from offsets, for backends whose records have them
//! (Kafka, the embedded log): such a backend tells the offsets of its partitions
//! ([`Extent::Offsets`]) and where a time falls ([`Admin::offsets_at`]), and these
//! functions, which the provided methods of [`Admin`] call, do the rest.
//!
//! A stored position is the offset of the last record handled, so a group goes on at
//! offset `p + 1`; a group that should start at offset `n` stores `n - 1` (`-1` for the
//! first record).

use std::collections::HashMap;
use std::time::Duration;

use super::{
    Admin, Boundary, Extent, Lag, PartitionInfo, RangeBound, RangeRead, covered_partitions,
};
use crate::{
    BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, PartitionRef, Position, Record,
    error_chain,
};

/// How long a range reader waits after a read error that may pass.
const READ_RETRY: Duration = Duration::from_millis(500);

/// The first and next offsets of a partition.
fn offsets(info: &PartitionInfo) -> Result<(i64, i64), BackendError> {
    match &info.extent {
        Extent::Offsets { first, next } => Ok((*first, *next)),
        Extent::Sequences { .. } => Err(BackendError::new(
            BackendErrorKind::Rejected,
            format!("{} has sequence numbers, not offsets", info.partition),
        )),
    }
}

/// An offset as an operator writes it.
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected` for text that is not a whole number.
pub fn parse_position(text: &str) -> Result<Position, BackendError> {
    text.trim().parse().map(Position::Offset).map_err(|_| {
        BackendError::new(
            BackendErrorKind::Rejected,
            format!("position {text:?} is not an offset"),
        )
    })
}

/// The position to store so that a group goes on at `boundary` of `info`'s partition:
/// the offset before its oldest record, its newest record, or the record before the
/// first one written at or after a time (the newest when none is that recent).
///
/// # Errors
///
/// [`BackendError`] when the backend fails.
pub async fn position_at<A: Admin + ?Sized>(
    admin: &A,
    info: &PartitionInfo,
    boundary: Boundary,
) -> Result<Option<Position>, BackendError> {
    let (first, next) = offsets(info)?;
    let resume_at = match boundary {
        Boundary::Earliest => first,
        Boundary::Latest => next,
        Boundary::Time(time) => admin
            .offsets_at(
                &info.partition.stream,
                std::slice::from_ref(&info.partition),
                time,
            )
            .await?
            .first()
            .copied()
            .flatten()
            .unwrap_or(next),
    };
    Ok(Some(Position::Offset(resume_at - 1)))
}

/// How far a group at `after` is behind: the next offset written minus the next one it
/// reads (without a position, every record kept).
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected` when `after` is a sequence number.
pub fn lag(info: &PartitionInfo, after: Option<&Position>) -> Result<Lag, BackendError> {
    let (first, end) = offsets(info)?;
    let next = match after {
        Some(Position::Offset(offset)) => offset + 1,
        Some(Position::Sequence(sequence)) => {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("{sequence:?} is a sequence number, not an offset"),
            ));
        }
        None => first,
    };
    Ok(Lag {
        records: u64::try_from(end - next.max(first)).unwrap_or(0),
        exact: true,
        end_offset: Some(end),
        behind: None,
    })
}

/// The offset a bound falls at in each of `partitions`.
async fn offsets_of<A: Admin + ?Sized>(
    admin: &A,
    stream: &str,
    partitions: &[PartitionInfo],
    bound: &RangeBound,
) -> Result<Vec<i64>, BackendError> {
    let ends: Vec<i64> = partitions
        .iter()
        .map(|info| offsets(info).map(|(_, next)| next))
        .collect::<Result<_, _>>()?;
    let at = |offset: i64| ends.iter().map(|end| offset.min(*end)).collect();
    match bound {
        RangeBound::Offset(offset) => Ok(at(*offset)),
        RangeBound::Record { position, .. } => match parse_position(position)? {
            Position::Offset(offset) => Ok(at(offset)),
            Position::Sequence(_) => unreachable!("parse_position reads offsets only"),
        },
        RangeBound::Time(time) => {
            let refs: Vec<PartitionRef> = partitions.iter().map(|p| p.partition.clone()).collect();
            let found = admin.offsets_at(stream, &refs, *time).await?;
            Ok(found
                .into_iter()
                .zip(ends)
                .map(|(offset, end)| offset.unwrap_or(end))
                .collect())
        }
    }
}

/// Reads the range `from..until` of `partitions` of `stream` with `consumer`, a consumer
/// of the stream that stores no positions.
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected` when the bounds name two partitions or a position
/// that is not an offset; other kinds when the backend fails.
pub async fn read_range<A: Admin + ?Sized, C: ConsumerBackend>(
    admin: &A,
    stream: &str,
    partitions: Vec<PartitionInfo>,
    from: &RangeBound,
    until: &RangeBound,
    consumer: C,
) -> Result<OffsetRange<C>, BackendError> {
    let partitions = covered_partitions(partitions, from, until)?;
    let starts = offsets_of(admin, stream, &partitions, from).await?;
    let ends = offsets_of(admin, stream, &partitions, until).await?;
    let mut ranges = HashMap::new();
    for ((info, start), end) in partitions.iter().zip(starts).zip(ends) {
        let (first, _) = offsets(info)?;
        ranges.insert(info.partition.clone(), (start.max(first), end));
    }
    let unfinished = ranges
        .iter()
        .filter(|(_, (start, end))| start < end)
        .map(|(partition, _)| partition.clone())
        .collect();
    let total = ranges
        .values()
        .map(|(start, end)| u64::try_from(end - start).unwrap_or(0))
        .sum();
    Ok(OffsetRange {
        consumer,
        ranges,
        unfinished,
        total,
    })
}

/// A range of records with offsets, read by a consumer that seeks each partition to the
/// start of its part; see [`read_range`].
#[derive(Debug)]
pub struct OffsetRange<C> {
    consumer: C,
    /// The offsets `start..end` of each partition covered.
    ranges: HashMap<PartitionRef, (i64, i64)>,
    /// The partitions whose end is not read yet.
    unfinished: Vec<PartitionRef>,
    total: u64,
}

impl<C: ConsumerBackend> RangeRead for OffsetRange<C> {
    fn total(&self) -> Option<u64> {
        Some(self.total)
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, BackendError> {
        while !self.unfinished.is_empty() {
            let event = match self.consumer.next_event().await {
                Ok(event) => event,
                Err(error) if error.is_retriable() => {
                    tracing::warn!(error = %error_chain(&error), "reading failed; trying again");
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match event {
                ConsumerEvent::Assigned(assigned) => {
                    for partition in assigned {
                        let (start, _) = self.ranges.get(&partition).copied().unwrap_or((0, 0));
                        let after = Position::Offset(start - 1);
                        self.consumer.seek(&partition, Some(&after)).await?;
                    }
                }
                ConsumerEvent::Records(records) => {
                    let mut batch = Vec::new();
                    for record in records {
                        let Position::Offset(offset) = record.position else {
                            continue;
                        };
                        let Some((_, end)) = self.ranges.get(&record.partition) else {
                            continue;
                        };
                        if offset + 1 >= *end {
                            self.unfinished.retain(|p| *p != record.partition);
                        }
                        if offset < *end {
                            batch.push(record);
                        }
                    }
                    if !batch.is_empty() {
                        return Ok(Some(batch));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(first: i64, next: i64) -> PartitionInfo {
        PartitionInfo {
            partition: PartitionRef::new("s", "0"),
            extent: Extent::Offsets { first, next },
        }
    }

    #[test]
    fn lag_counts_from_the_stored_position_or_the_oldest_record() {
        let info = info(3, 10);
        assert_eq!(lag(&info, None).unwrap().records, 7);
        assert_eq!(lag(&info, Some(&Position::Offset(7))).unwrap().records, 2);
        assert_eq!(lag(&info, Some(&Position::Offset(9))).unwrap().records, 0);
        // A position before the oldest record kept: the records kept are behind.
        assert_eq!(lag(&info, Some(&Position::Offset(0))).unwrap().records, 7);
        assert_eq!(lag(&info, None).unwrap().end_offset, Some(10));
        let sequence = Position::Sequence("4968".into());
        assert!(lag(&info, Some(&sequence)).is_err());
    }

    #[test]
    fn positions_are_whole_numbers() {
        assert_eq!(parse_position("-1").unwrap(), Position::Offset(-1));
        assert_eq!(parse_position("42").unwrap(), Position::Offset(42));
        let error = parse_position("4968x").unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Rejected);
    }
}
