//! Operator calls on any backend: list, create and describe streams, and find positions
//! by time. The `logpipe` program's `streams`, `offsets`, `lag` and `replay` commands use
//! them.
//!
//! Positions differ by backend. Kafka and the embedded log number records with offsets,
//! so the first and last offsets of a partition are known. Kinesis numbers them with
//! sequence numbers; a shard tells the range its sequence numbers fall in, not where its
//! records are, so [`PartitionInfo::earliest`] and [`PartitionInfo::latest`] are `None`
//! there and [`PartitionInfo::sequence_range`] is given instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::any::AnyBackend;
use crate::backend::{BackendError, BackendErrorKind, PartitionRef, Position};

/// A partition or shard of a stream, as [`AnyBackend::describe_stream`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// The partition or shard.
    pub partition: PartitionRef,
    /// The position of the oldest record kept, when known and the partition holds one.
    pub earliest: Option<Position>,
    /// The position of the newest record, when known and the partition holds one.
    pub latest: Option<Position>,
    /// The offset the next record written will get (Kafka's high watermark), where
    /// records have offsets.
    pub end_offset: Option<i64>,
    /// Kinesis: the shard's sequence-number range, starting and (for a closed shard)
    /// ending.
    pub sequence_range: Option<(String, Option<String>)>,
}

/// Where a timestamp falls in a partition: [`AnyBackend::positions_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PositionAt {
    /// The partition.
    pub partition: PartitionRef,
    /// The offset of the first record written at or after the timestamp, or `None` when
    /// no record is that recent.
    pub offset: Option<i64>,
}

fn not_found(stream: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::NotFound,
        format!("stream {stream:?} does not exist"),
    )
}

/// How far a reader of a Kinesis shard is behind its newest record:
/// [`AnyBackend::kinesis_behind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardBehind {
    /// Records after the reader's position that were counted.
    pub records: u64,
    /// Whether `records` is all of them (else reading stopped early and it is a lower
    /// bound).
    pub exact: bool,
    /// How long ago the oldest unread record arrived; `None` when none is unread.
    pub behind: Option<Duration>,
    /// The sequence number of the last record counted: the newest record of the shard
    /// when `exact`.
    pub last: Option<Position>,
}

/// Most `GetRecords` calls [`AnyBackend::kinesis_behind`] makes for one shard.
#[cfg(feature = "kinesis")]
const MAX_COUNT_CALLS: u32 = 20;

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl AnyBackend {
    /// The streams of the backend (Kafka: topics with the configured prefix, without
    /// it), sorted.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend cannot be asked.
    pub async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
        match self {
            AnyBackend::Embedded(log) => log.list_streams().await,
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => kinesis
                .api()
                .list_streams()
                .await
                .map_err(crate::kinesis::backend_error),
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => Ok(client.list_streams().await?),
        }
    }

    /// Creates `stream` with `partitions` partitions (Kinesis: shards) and, on Kinesis,
    /// waits until it is active.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the stream exists already or the count is not valid (kind
    /// `Rejected` on the embedded log; Kafka and Kinesis say it their way), or the
    /// backend fails.
    pub async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), BackendError> {
        let count = i32::try_from(partitions)
            .ok()
            .filter(|count| *count > 0)
            .ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("{partitions} is not a valid partition count"),
                )
            })?;
        match self {
            AnyBackend::Embedded(log) => {
                if log.partition_spans(stream).await?.is_some() {
                    return Err(BackendError::new(
                        BackendErrorKind::Rejected,
                        format!("stream {stream:?} exists already"),
                    ));
                }
                log.create_stream(stream, count.unsigned_abs()).await?;
                Ok(())
            }
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => {
                kinesis
                    .api()
                    .create_stream(stream.to_owned(), count)
                    .await
                    .map_err(crate::kinesis::backend_error)?;
                // A new stream takes writes once it is active.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let status = kinesis
                        .api()
                        .stream_status(stream.to_owned())
                        .await
                        .map_err(crate::kinesis::backend_error)?;
                    if status == "ACTIVE" {
                        return Ok(());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            format!("stream {stream:?} is still {status} after 60 s"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => Ok(client.create_stream(stream, count).await?),
        }
    }

    /// The partitions (Kinesis: shards) of `stream` with what the backend tells of their
    /// positions, in partition order.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `NotFound` when the stream does not exist; other kinds
    /// when the backend fails.
    pub async fn describe_stream(&self, stream: &str) -> Result<Vec<PartitionInfo>, BackendError> {
        match self {
            AnyBackend::Embedded(log) => {
                let spans = log
                    .partition_spans(stream)
                    .await?
                    .ok_or_else(|| not_found(stream))?;
                Ok(spans
                    .into_iter()
                    .map(|span| {
                        offset_info(stream, &span.partition.to_string(), span.first, span.next)
                    })
                    .collect())
            }
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => {
                let mut shards = Vec::new();
                let mut token = None;
                loop {
                    let page = kinesis
                        .api()
                        .list_shards(stream.to_owned(), token.take())
                        .await
                        .map_err(crate::kinesis::backend_error)?;
                    for shard in page.shards() {
                        let range = shard.sequence_number_range().map(|range| {
                            (
                                range.starting_sequence_number().to_owned(),
                                range.ending_sequence_number().map(str::to_owned),
                            )
                        });
                        shards.push(PartitionInfo {
                            partition: PartitionRef::new(stream, shard.shard_id()),
                            earliest: None,
                            latest: None,
                            end_offset: None,
                            sequence_range: range,
                        });
                    }
                    match page.next_token() {
                        Some(next) => token = Some(next.to_owned()),
                        None => break,
                    }
                }
                Ok(shards)
            }
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => Ok(client
                .watermarks(stream)
                .await?
                .into_iter()
                .map(|w| offset_info(stream, &w.partition.to_string(), w.low, w.high))
                .collect()),
        }
    }

    /// For each partition of `stream`, the offset of the first record written at or
    /// after `time`. Kafka and the embedded log only: Kinesis starts readers at a time
    /// (its `AT_TIMESTAMP` iterators) but tells no position for it.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `NotFound` when the stream does not exist, `Rejected` on
    /// Kinesis; other kinds when the backend fails.
    pub async fn positions_at(
        &self,
        stream: &str,
        time: SystemTime,
    ) -> Result<Vec<PositionAt>, BackendError> {
        let at = millis(time);
        let partitions = self.describe_stream(stream).await?;
        match self {
            AnyBackend::Embedded(log) => {
                let mut found = Vec::with_capacity(partitions.len());
                for info in partitions {
                    let number = info.partition.partition.parse().unwrap_or(u32::MAX);
                    let offset = log.offset_at(stream, number, at).await?;
                    found.push(PositionAt {
                        partition: info.partition,
                        offset,
                    });
                }
                Ok(found)
            }
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(_) => Err(BackendError::new(
                BackendErrorKind::Rejected,
                "Kinesis tells no position for a time; start a reader at it instead",
            )),
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => {
                let numbers: Vec<i32> = partitions
                    .iter()
                    .filter_map(|info| info.partition.partition.parse().ok())
                    .collect();
                Ok(client
                    .offsets_for_time(stream, &numbers, at)
                    .await?
                    .into_iter()
                    .map(|(partition, offset)| PositionAt {
                        partition: PartitionRef::new(stream, partition.to_string()),
                        offset,
                    })
                    .collect())
            }
        }
    }
}

impl AnyBackend {
    /// Kinesis: how far a reader from the stored position `after` (see
    /// [`ShardPosition`](crate::kinesis::ShardPosition); else from the oldest record kept)
    /// in `partition` is behind the newest record, read with `GetRecords` (up to 20 calls
    /// of 10,000 records; past that the count is a lower bound).
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` on other backends or for a position that is
    /// not a sequence number; other kinds when Kinesis fails.
    pub async fn kinesis_behind(
        &self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<ShardBehind, BackendError> {
        #[cfg(feature = "kinesis")]
        if let AnyBackend::Kinesis(kinesis) = self {
            use crate::kinesis::{ShardPosition, start_position};
            let start = match after {
                None => logpipe_kinesis::StartPosition::TrimHorizon,
                Some(position) => start_position(&ShardPosition::from_position(position)?),
            };
            let api = kinesis.api();
            let error = crate::kinesis::backend_error;
            let mut iterator = Some(
                api.get_shard_iterator(
                    partition.stream.to_string(),
                    partition.partition.to_string(),
                    start,
                )
                .await
                .map_err(error)?,
            );
            let mut found = ShardBehind {
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
                let page = api.get_records(current, 10_000).await.map_err(error)?;
                if found.behind.is_none()
                    && let Some(first) = page.records().first()
                {
                    found.behind = first
                        .approximate_arrival_timestamp()
                        .and_then(|at| SystemTime::try_from(*at).ok())
                        .map(|at| SystemTime::now().duration_since(at).unwrap_or_default());
                }
                found.records += page.records().len() as u64;
                if let Some(last) = page.records().last() {
                    found.last = Some(Position::Sequence(last.sequence_number().to_owned()));
                }
                iterator = page.next_shard_iterator().map(str::to_owned);
                if page.millis_behind_latest() == Some(0) {
                    found.exact = true;
                    break;
                }
            }
            return Ok(found);
        }
        let _ = (partition, after);
        Err(BackendError::new(
            BackendErrorKind::Rejected,
            "records behind a position are counted this way on Kinesis only",
        ))
    }
}

/// A partition whose records have offsets `first..next`.
fn offset_info(stream: &str, partition: &str, first: i64, next: i64) -> PartitionInfo {
    let holds_records = next > first;
    PartitionInfo {
        partition: PartitionRef::new(stream, partition),
        earliest: holds_records.then_some(Position::Offset(first)),
        latest: holds_records.then_some(Position::Offset(next - 1)),
        end_offset: Some(next),
        sequence_range: None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` as a time, years 1970 to 9999.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let year: u16 = date.next()?.parse().ok()?;
    let (month, day): (u8, u8) = (date.next()?.parse().ok()?, date.next()?.parse().ok()?);
    let (time, fraction) = match time.split_once('.') {
        Some((time, fraction)) => (time, fraction),
        None => (time, ""),
    };
    let mut time = time.splitn(3, ':').map(str::parse::<u8>);
    let (hour, minute, second) = (time.next()?.ok()?, time.next()?.ok()?, time.next()?.ok()?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else if fraction.bytes().all(|b| b.is_ascii_digit()) {
        let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
        digits.parse::<u64>().ok()?
    } else {
        return None;
    };
    let days = u64::try_from(days_from_civil(
        i64::from(year),
        i64::from(month),
        i64::from(day),
    ))
    .ok()?;
    let seconds =
        days * 86_400 + u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second);
    Some(UNIX_EPOCH + Duration::from_millis(seconds * 1000 + millis))
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub(crate) fn format_time(millis: i64) -> String {
    let (days, rest) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_and_written_in_utc() {
        let time = parse_time("2026-11-25T01:02:03.456Z").unwrap();
        let ms = millis(time);
        assert_eq!(ms, 1_795_568_523_456);
        assert_eq!(format_time(ms), "2026-11-25T01:02:03.456Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            millis(parse_time("2000-02-29T00:00:00Z").unwrap()),
            951_782_400_000
        );
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_time("2026-11-25 01:02:03"), None);
        // Out of range or negative fields are refused, never overflow.
        for text in [
            "99999999999999-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-25T-1:02:03Z",
            "2026-11-25T01:02:03.-12Z",
        ] {
            assert_eq!(parse_time(text), None, "{text}");
        }
    }
}
