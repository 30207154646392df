//! Where a consumer of a shard goes on, as an offset store keeps it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logpipe_core::time::{format_time, millis, parse_time};
use logpipe_core::{BackendError, BackendErrorKind, Position};

use crate::StartPosition;

/// Where a consumer of a Kinesis shard goes on, as an offset store keeps it: the text of
/// a [`Position::Sequence`].
///
/// Consumers store the sequence number of the last record handled. A sequence number
/// cannot be decremented to mean "this record and those after it", so the starting
/// points Kinesis offers are stored in forms of their own, which `logpipe offsets reset`
/// writes and a consumer honours when it starts:
///
/// | stored text | the consumer starts |
/// |---|---|
/// | `49680538823000460305650030634928846360478251554288173058` | just after that record |
/// | `49680538823000460305650030634928846360478251554288173058:3` | just after user record 3 of that aggregated record |
/// | `TRIM_HORIZON` | at the oldest record kept |
/// | `AT_TIMESTAMP:2026-11-25T01:00:00.000Z` | at the first record that arrived then or later |
///
/// ```
/// use logpipe_kinesis::ShardPosition;
///
/// let position = ShardPosition::parse("TRIM_HORIZON").unwrap();
/// assert_eq!(position, ShardPosition::TrimHorizon);
/// assert_eq!(position.to_string(), "TRIM_HORIZON");
/// assert!(ShardPosition::parse("not a sequence number").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardPosition {
    /// Just after the record with this sequence number (after all of its user records,
    /// if it is an aggregated record).
    After(String),
    /// Just after one user record of an aggregated record (KCL's sub-sequence number):
    /// the consumer reads the record again and hands on its user records after this one.
    AfterUserRecord {
        /// The aggregated record's sequence number.
        sequence: String,
        /// The number of the user record in it, from 0.
        subsequence: u64,
    },
    /// At the oldest record kept (`TRIM_HORIZON`).
    TrimHorizon,
    /// At the first record that arrived at or after this time (`AT_TIMESTAMP`), to the
    /// millisecond.
    AtTimestamp(SystemTime),
}

const TRIM_HORIZON: &str = "TRIM_HORIZON";
const AT_TIMESTAMP: &str = "AT_TIMESTAMP:";

impl ShardPosition {
    /// Reads a stored position.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` for text that is none of the forms.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        if text == TRIM_HORIZON {
            return Ok(Self::TrimHorizon);
        }
        if let Some(time) = text.strip_prefix(AT_TIMESTAMP) {
            return parse_time(time).map(Self::at_timestamp).ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("{text:?} does not hold a UTC time like 2026-11-25T01:00:00Z"),
                )
            });
        }
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if digits(text) {
            return Ok(Self::After(text.to_owned()));
        }
        if let Some((sequence, subsequence)) = text.split_once(':')
            && digits(sequence)
            && let Some(subsequence) = subsequence.parse().ok().filter(|_| digits(subsequence))
        {
            return Ok(Self::AfterUserRecord {
                sequence: sequence.to_owned(),
                subsequence,
            });
        }
        Err(BackendError::new(
            BackendErrorKind::Rejected,
            format!(
                "{text:?} is not a Kinesis sequence number, SEQUENCE:USER_RECORD, {TRIM_HORIZON} or {AT_TIMESTAMP}TIME"
            ),
        ))
    }

    /// Reads a position of a shard.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` for an offset, or text that is none of the
    /// forms.
    pub fn from_position(position: &Position) -> Result<Self, BackendError> {
        match position {
            Position::Sequence(text) => Self::parse(text),
            Position::Offset(offset) => Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("Kinesis has sequence numbers, not offsets like {offset}"),
            )),
        }
    }

    /// The first record that arrived at or after `time` (kept to the millisecond, as
    /// stored).
    pub fn at_timestamp(time: SystemTime) -> Self {
        let whole_millis = u64::try_from(millis(time)).unwrap_or(0);
        Self::AtTimestamp(UNIX_EPOCH + Duration::from_millis(whole_millis))
    }

    /// The position to store.
    pub fn to_position(&self) -> Position {
        Position::Sequence(self.to_string())
    }
}

impl fmt::Display for ShardPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::After(sequence) => f.write_str(sequence),
            Self::AfterUserRecord {
                sequence,
                subsequence,
            } => write!(f, "{sequence}:{subsequence}"),
            Self::TrimHorizon => f.write_str(TRIM_HORIZON),
            Self::AtTimestamp(time) => write!(f, "{AT_TIMESTAMP}{}", format_time(millis(*time))),
        }
    }
}

impl From<&ShardPosition> for StartPosition {
    /// Where a shard iterator starts for a stored position (at the aggregated record of
    /// a user record, whose user records up to it are then left out).
    fn from(position: &ShardPosition) -> Self {
        match position {
            ShardPosition::After(sequence) => StartPosition::AfterSequenceNumber(sequence.clone()),
            ShardPosition::AfterUserRecord { sequence, .. } => {
                StartPosition::AtSequenceNumber(sequence.clone())
            }
            ShardPosition::TrimHorizon => StartPosition::TrimHorizon,
            ShardPosition::AtTimestamp(time) => StartPosition::AtTimestamp(*time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shard_positions_read_back_as_they_were_written() {
        let time = parse_time("2026-11-25T01:02:03.456Z").unwrap();
        for (position, text) in [
            (ShardPosition::After("4968".to_owned()), "4968"),
            (
                ShardPosition::AfterUserRecord {
                    sequence: "4968".to_owned(),
                    subsequence: 12,
                },
                "4968:12",
            ),
            (ShardPosition::TrimHorizon, "TRIM_HORIZON"),
            (
                ShardPosition::at_timestamp(time),
                "AT_TIMESTAMP:2026-11-25T01:02:03.456Z",
            ),
        ] {
            assert_eq!(position.to_position(), Position::Sequence(text.to_owned()));
            assert_eq!(ShardPosition::parse(text).unwrap(), position);
        }
        // Kept to the millisecond, as stored.
        let finer = time + Duration::from_micros(700);
        assert_eq!(
            ShardPosition::at_timestamp(finer),
            ShardPosition::AtTimestamp(time)
        );
        for bad in [
            "",
            "49x",
            "AT_TIMESTAMP:yesterday",
            "LATEST",
            "4968:",
            ":3",
            "4968:+3",
            "4968:3:4",
            "4968:99999999999999999999999",
        ] {
            let err = ShardPosition::parse(bad).unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Rejected, "{bad}");
        }
        let offset = ShardPosition::from_position(&Position::Offset(4)).unwrap_err();
        assert!(
            offset.to_string().contains("not offsets like 4"),
            "{offset}"
        );
    }
}
