//! The operators' calls on Kinesis: streams and their shards, where to move a group, how
//! far a reader is behind (counted by reading the shard), and ranges of records to
//! replay.
//!
//! A shard tells the range its sequence numbers fall in, not where its records are, and
//! no sequence number means "before the first record" or "at this time": moving a group
//! to its earliest record or to a time stores the starting points that shard iterators
//! take ([`ShardPosition::TrimHorizon`], [`ShardPosition::AtTimestamp`]).

use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::types::Record as SdkRecord;
use logpipe_core::admin::{covered_partitions, partition_count};
use logpipe_core::{
    Admin, BackendError, BackendErrorKind, Boundary, Extent, Lag, PartitionInfo, PartitionRef,
    Position, RangeBound, RangeRead, Record, error_chain,
};

use crate::consumer::shard_of;
use crate::shard_record::arrival;
use crate::{KinesisBackend, ShardPosition, ShardRecord, StartPosition, backend_error};

/// Most `GetRecords` calls that count the records behind a position in one shard; past
/// them the count is a lower bound.
const MAX_COUNT_CALLS: u32 = 20;
/// Most records one `GetRecords` call of the tools returns.
const RECORDS_PER_CALL: i32 = 10_000;
/// How long a stream may take to become active after it was created.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a range reader waits after a read error that may pass.
const READ_RETRY: Duration = Duration::from_millis(500);

/// What reading a shard on from a position found.
struct Behind {
    /// Records counted.
    records: u64,
    /// Whether that is all of them.
    exact: bool,
    /// How long ago the oldest unread record arrived.
    behind: Option<Duration>,
    /// The sequence number of the last record counted.
    last: Option<Position>,
}

fn rejected(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::Rejected, message)
}

impl KinesisBackend {
    /// Reads `partition` from just after `after` (else from its oldest record) to its
    /// newest record, counting, in at most [`MAX_COUNT_CALLS`] calls.
    async fn count_behind(
        &self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<Behind, BackendError> {
        let after = after.map(ShardPosition::from_position).transpose()?;
        let start = after
            .as_ref()
            .map_or(StartPosition::TrimHorizon, StartPosition::from);
        // Inside an aggregated record: its user records up to this one are not behind.
        let mut handled_through = match after {
            Some(ShardPosition::AfterUserRecord {
                sequence,
                subsequence,
            }) => Some((sequence, subsequence)),
            _ => None,
        };
        let shard = shard_of(partition);
        let api = self.api();
        let mut iterator = Some(
            api.get_shard_iterator(
                partition.stream.to_string(),
                partition.partition.to_string(),
                start,
            )
            .await
            .map_err(backend_error)?,
        );
        let mut found = Behind {
            records: 0,
            exact: false,
            behind: None,
            last: None,
        };
        for _ in 0..MAX_COUNT_CALLS {
            let Some(current) = iterator.take() else {
                // A closed shard read to its end.
                found.exact = true;
                break;
            };
            let page = api
                .get_records(current, RECORDS_PER_CALL)
                .await
                .map_err(backend_error)?;
            if found.behind.is_none()
                && let Some(first) = page.records().first()
            {
                found.behind = arrival(first)
                    .map(|at| SystemTime::now().duration_since(at).unwrap_or_default());
            }
            let through = handled_through.take_if(|_| !page.records().is_empty());
            let user_records = ShardRecord::read_page(&shard, page.records(), through);
            found.records += user_records.len() as u64;
            if let Some(last) = user_records.last() {
                found.last = Some(last.position().to_position());
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
            if page.millis_behind_latest() == Some(0) {
                found.exact = true;
                break;
            }
        }
        Ok(found)
    }
}

impl Admin for KinesisBackend {
    type Range = KinesisRange;

    async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
        let mut streams = self.api().list_streams().await.map_err(backend_error)?;
        streams.sort();
        Ok(streams)
    }

    /// Creates the stream with `partitions` shards and waits (up to a minute) until it
    /// is active.
    async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), BackendError> {
        logpipe_core::check_stream_name(stream)?;
        let count = partition_count(partitions)?;
        let api = self.api();
        api.create_stream(stream.to_owned(), count)
            .await
            .map_err(backend_error)?;
        let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
        loop {
            let status = api
                .stream_status(stream.to_owned())
                .await
                .map_err(backend_error)?;
            if status == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::new(
                    BackendErrorKind::Timeout,
                    format!("stream {stream:?} is still {status} after {CREATE_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn describe_stream(&self, stream: &str) -> Result<Vec<PartitionInfo>, BackendError> {
        let mut shards = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .api()
                .list_shards(stream.to_owned(), token.take())
                .await
                .map_err(backend_error)?;
            for shard in page.shards() {
                let (starting, ending) = shard.sequence_number_range().map_or_else(
                    || (String::new(), None),
                    |range| {
                        (
                            range.starting_sequence_number().to_owned(),
                            range.ending_sequence_number().map(str::to_owned),
                        )
                    },
                );
                shards.push(PartitionInfo {
                    partition: PartitionRef::new(stream, shard.shard_id()),
                    extent: Extent::Sequences { starting, ending },
                });
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(shards)
    }

    /// A sequence number, `TRIM_HORIZON` or `AT_TIMESTAMP:TIME` ([`ShardPosition`]).
    fn parse_position(&self, text: &str) -> Result<Position, BackendError> {
        ShardPosition::parse(text).map(|position| position.to_position())
    }

    /// The earliest record and a time are the starting points `TRIM_HORIZON` and
    /// `AT_TIMESTAMP:TIME`; the latest is the shard's newest record, found by reading it
    /// from `stored` on (a shard without records keeps its position: `None`).
    async fn position_at(
        &self,
        partition: &PartitionInfo,
        boundary: Boundary,
        stored: Option<&Position>,
    ) -> Result<Option<Position>, BackendError> {
        match boundary {
            Boundary::Earliest => Ok(Some(ShardPosition::TrimHorizon.to_position())),
            Boundary::Time(time) => Ok(Some(ShardPosition::at_timestamp(time).to_position())),
            _ => {
                let mut position = stored.cloned();
                loop {
                    let found = self
                        .count_behind(&partition.partition, position.as_ref())
                        .await?;
                    if found.last.is_some() {
                        position = found.last;
                    }
                    if found.exact {
                        return Ok(position);
                    }
                }
            }
        }
    }

    /// Counted with `GetRecords` from `after` on: exact once it reaches the newest
    /// record, a lower bound past 20 calls of 10,000 records.
    async fn lag(
        &self,
        partition: &PartitionInfo,
        after: Option<&Position>,
    ) -> Result<Lag, BackendError> {
        let found = self.count_behind(&partition.partition, after).await?;
        Ok(Lag {
            records: found.records,
            exact: found.exact,
            end_offset: None,
            behind: Some(found.behind.unwrap_or_default()),
        })
    }

    /// Every shard from a time (its `AT_TIMESTAMP` iterator), or one shard from a record
    /// (`AT_SEQUENCE_NUMBER`, with [`RangeBound::Record`]), until a time, a record or its
    /// newest record. Offsets are refused: shards have none.
    async fn read_range(
        &self,
        stream: &str,
        from: &RangeBound,
        until: &RangeBound,
    ) -> Result<Self::Range, BackendError> {
        let start = match from {
            RangeBound::Time(time) => StartPosition::AtTimestamp(*time),
            RangeBound::Record { position, .. } => {
                StartPosition::AtSequenceNumber(sequence_number(position)?.to_owned())
            }
            _ => return Err(no_offsets()),
        };
        let end = match until {
            RangeBound::Time(time) => RangeEnd::Time(*time),
            RangeBound::Record { position, .. } => {
                RangeEnd::Sequence(sequence_number(position)?.to_owned())
            }
            _ => return Err(no_offsets()),
        };
        let partitions = covered_partitions(self.describe_stream(stream).await?, from, until)?;
        Ok(KinesisRange {
            backend: self.clone(),
            // Parents come before their children in shard-id order.
            shards: partitions.into_iter().map(|p| p.partition).rev().collect(),
            current: None,
            start,
            end,
        })
    }
}

fn no_offsets() -> BackendError {
    rejected(
        "Kinesis has no offsets: a range is bounded by a UTC time, or by SHARD:SEQUENCE \
         for a record of one shard (such as shardId-000000000000:4968...)",
    )
}

/// The sequence number of a `SHARD:SEQUENCE` bound.
fn sequence_number(position: &str) -> Result<&str, BackendError> {
    if !position.is_empty() && position.bytes().all(|b| b.is_ascii_digit()) {
        Ok(position)
    } else {
        Err(rejected(format!(
            "{position:?} is not a Kinesis sequence number"
        )))
    }
}

/// Whether sequence number `a` comes at or after `b` in their shard (both are decimal
/// numbers of up to 128 digits).
fn at_or_after(a: &str, b: &str) -> bool {
    (a.len(), a) >= (b.len(), b)
}

/// Where a range of a shard ends (not included).
#[derive(Debug, Clone)]
enum RangeEnd {
    /// At the first record that arrived at or after this time.
    Time(SystemTime),
    /// At the record with this sequence number.
    Sequence(String),
}

impl RangeEnd {
    fn reached(&self, record: &SdkRecord) -> bool {
        match self {
            RangeEnd::Time(until) => arrival(record).is_some_and(|at| at >= *until),
            RangeEnd::Sequence(until) => at_or_after(record.sequence_number(), until),
        }
    }
}

/// A range of records of Kinesis shards, read shard after shard with `GetRecords`; see
/// [`Admin::read_range`].
#[derive(Debug)]
pub struct KinesisRange {
    backend: KinesisBackend,
    /// The shards not started yet, the next one last.
    shards: Vec<PartitionRef>,
    /// The shard being read and its next iterator.
    current: Option<(PartitionRef, String)>,
    start: StartPosition,
    end: RangeEnd,
}

impl RangeRead for KinesisRange {
    /// Not known before reading: a shard does not tell how many records it holds.
    fn total(&self) -> Option<u64> {
        None
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, BackendError> {
        let api = self.backend.api();
        loop {
            let (shard, iterator) = match self.current.take() {
                Some(current) => current,
                None => {
                    let Some(shard) = self.shards.pop() else {
                        return Ok(None);
                    };
                    let iterator = api
                        .get_shard_iterator(
                            shard.stream.to_string(),
                            shard.partition.to_string(),
                            self.start.clone(),
                        )
                        .await
                        .map_err(backend_error)?;
                    (shard, iterator)
                }
            };
            let page = match api.get_records(iterator.clone(), RECORDS_PER_CALL).await {
                Ok(page) => page,
                Err(error) if error.is_retriable() => {
                    tracing::warn!(error = %error_chain(&error), "reading failed; trying again");
                    tokio::time::sleep(READ_RETRY).await;
                    self.current = Some((shard, iterator));
                    continue;
                }
                Err(error) => return Err(backend_error(error)),
            };
            let mut reached_end = page.millis_behind_latest() == Some(0);
            let mut batch = Vec::new();
            let shard_ref = shard_of(&shard);
            for record in page.records() {
                if self.end.reached(record) {
                    reached_end = true;
                    break;
                }
                batch.extend(
                    ShardRecord::read(&shard_ref, record, None)
                        .into_iter()
                        .map(Record::from),
                );
            }
            if !reached_end && let Some(next) = page.next_shard_iterator() {
                self.current = Some((shard, next.to_owned()));
            }
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_the_numbers_they_are() {
        assert!(at_or_after("100", "99"));
        assert!(at_or_after("100", "100"));
        assert!(!at_or_after("99", "100"));
        assert!(sequence_number("4968").is_ok());
        assert_eq!(
            sequence_number("49x").unwrap_err().kind(),
            BackendErrorKind::Rejected
        );
    }
}
