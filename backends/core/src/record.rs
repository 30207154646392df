//! Records and where they sit: positions, partitions, headers, records read and written.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// Where a record sits in its partition or shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// A Kafka or embedded-log offset.
    Offset(i64),
    /// A Kinesis sequence number (`4968...`), the position of one user record inside an
    /// aggregated record (`4968...:3`: after its user record 3, see [`SequenceRank`]), or
    /// a starting point such as `TRIM_HORIZON`.
    Sequence(String),
}

/// Where a Kinesis position sits in its shard, as the SQLite and PostgreSQL offset stores
/// compare them (to refuse a position behind the stored one):
/// sequence numbers as the numbers they are; `SEQUENCE:N` (just after user record `N` of
/// the aggregated record `SEQUENCE`) after every earlier sequence number and before
/// `SEQUENCE` itself (after the whole record); a starting point (`TRIM_HORIZON`,
/// `AT_TIMESTAMP:...`) has no rank, and is below all.
///
/// ```
/// use logpipe_core::SequenceRank;
///
/// let rank = |text| SequenceRank::of(text).unwrap();
/// assert!(rank("99") < rank("100"));
/// assert!(rank("99") < rank("100:0"));
/// assert!(rank("100:2") < rank("100:10"));
/// assert!(rank("100:10") < rank("100"));
/// assert!(SequenceRank::of("TRIM_HORIZON").is_none());
/// assert!(SequenceRank::of("100:99999999999999999999999").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SequenceRank<'a> {
    /// The sequence number without leading zeros, by length then digits.
    sequence: (usize, &'a str),
    /// `(true, ..)` for the whole record, above `(false, user record number)` of any of
    /// its user records.
    within: (bool, (usize, &'a str)),
}

impl<'a> SequenceRank<'a> {
    /// The rank of `text`, unless it is a starting point (or no position at all).
    pub fn of(text: &'a str) -> Option<Self> {
        let number = |digits: &'a str| {
            let trimmed = digits.trim_start_matches('0');
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then_some((trimmed.len(), trimmed))
        };
        let (sequence, within) = match text.split_once(':') {
            // User record numbers are below 2^64 (KCL's sub-sequence numbers).
            Some((sequence, user_record)) if user_record.parse::<u64>().is_ok() => {
                (sequence, (false, number(user_record)?))
            }
            Some(_) => return None,
            None => (text, (true, (0, ""))),
        };
        Some(Self {
            sequence: number(sequence)?,
            within,
        })
    }
}

impl Position {
    /// The position as the two key columns a SQL store keeps a record's "handled" mark
    /// under: an offset with no sequence number (`""`), or a sequence number with offset
    /// 0. [`from_mark_columns`](Self::from_mark_columns) reads them back.
    ///
    /// ```
    /// use logpipe_core::Position;
    ///
    /// let sequence = Position::Sequence("4968".into());
    /// assert_eq!(sequence.mark_columns(), (0, "4968"));
    /// assert_eq!(Position::from_mark_columns(0, "4968".into()), sequence);
    /// assert_eq!(Position::from_mark_columns(7, String::new()), Position::Offset(7));
    /// ```
    pub fn mark_columns(&self) -> (i64, &str) {
        match self {
            Position::Offset(offset) => (*offset, ""),
            Position::Sequence(sequence) => (0, sequence.as_str()),
        }
    }

    /// A stored position from the two columns a SQL store keeps it in (an offset, or a
    /// sequence number); `None` unless exactly one is set.
    ///
    /// ```
    /// use logpipe_core::Position;
    ///
    /// assert_eq!(Position::from_columns(Some(4), None), Some(Position::Offset(4)));
    /// assert_eq!(Position::from_columns(None, None), None);
    /// ```
    pub fn from_columns(offset: Option<i64>, sequence: Option<String>) -> Option<Self> {
        match (offset, sequence) {
            (Some(offset), None) => Some(Position::Offset(offset)),
            (None, Some(sequence)) => Some(Position::Sequence(sequence)),
            _ => None,
        }
    }

    /// The position whose [`mark_columns`](Self::mark_columns) these are.
    pub fn from_mark_columns(offset: i64, sequence: String) -> Self {
        if sequence.is_empty() {
            Position::Offset(offset)
        } else {
            Position::Sequence(sequence)
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(offset) => write!(f, "{offset}"),
            Position::Sequence(sequence) => f.write_str(sequence),
        }
    }
}

/// One partition (Kafka, embedded log) or shard (Kinesis) of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    /// The stream (Kafka topic, Kinesis stream).
    pub stream: Arc<str>,
    /// The partition number or shard id, as text.
    pub partition: Arc<str>,
}

impl PartitionRef {
    /// A partition of `stream`.
    pub fn new(stream: impl Into<Arc<str>>, partition: impl Into<Arc<str>>) -> Self {
        Self {
            stream: stream.into(),
            partition: partition.into(),
        }
    }
}

impl fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.partition)
    }
}

/// A record header: a name and a value (Kafka headers; kept by the embedded log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordHeader {
    /// The header name.
    pub name: String,
    /// The header value.
    pub value: Vec<u8>,
}

/// A record read from a stream.
///
/// Its key and value are [`Bytes`]: a backend that reads many records at once may hand out
/// slices of one buffer, and copying a record (or its key into a [`Context`](crate::Context))
/// copies no bytes. Such a slice keeps the whole buffer alive: copy it
/// (`key.to_vec()`) to keep a few bytes of it for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition it was read from.
    pub partition: PartitionRef,
    /// Its position in that partition.
    pub position: Position,
    /// The record key, if it has one.
    pub key: Option<Bytes>,
    /// The record value: an envelope, or anything else a stream may hold.
    pub value: Bytes,
    /// The record headers (left out by a backend told that they are not wanted; see
    /// [`ConsumerBackend::want_headers`](crate::ConsumerBackend::want_headers)).
    pub headers: Vec<RecordHeader>,
    /// When the record was written, if the backend knows.
    pub timestamp: Option<SystemTime>,
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The stream to write to.
    pub stream: Arc<str>,
    /// The key; `None` spreads keyless records over partitions.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// Headers, where the backend supports them.
    pub headers: Vec<RecordHeader>,
}

/// Where a written record landed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The partition it was written to.
    pub partition: PartitionRef,
    /// Its position there.
    pub position: Position,
}
