//! Records as read from a shard: a plain Kinesis record, or one user record of an
//! aggregated record, with the position a consumer stores after handling it.

use std::time::SystemTime;

use aws_sdk_kinesis::types::Record as SdkRecord;
use logpipe_core::{Record, RecordHeader};

use crate::aggregated::{Unpacked, unpack};
use crate::{ShardPosition, ShardRef};

/// The header that carries a user record's explicit hash key, when the aggregated
/// record it came in gave it one.
pub const EXPLICIT_HASH_KEY_HEADER: &str = "kinesis-explicit-hash-key";

/// A record read from a shard: a Kinesis record, or one of the user records of an
/// aggregated record (see [`Subsequence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRecord {
    /// Its shard.
    pub shard: ShardRef,
    /// Its sequence number (that of the aggregated record it came in).
    pub sequence_number: String,
    /// Where it sits in the aggregated record it came in; `None` for a plain record.
    pub subsequence: Option<Subsequence>,
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, if the aggregated record it came in gave it one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
    /// When Kinesis received it (`ApproximateArrivalTimestamp`).
    pub arrival: Option<SystemTime>,
}

/// Where a user record sits in the aggregated record it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsequence {
    /// Its number in the record, from 0 (KCL's sub-sequence number).
    pub number: u64,
    /// Whether it is the record's last user record.
    pub last: bool,
}

/// When Kinesis received `record` (`ApproximateArrivalTimestamp`).
pub(crate) fn arrival(record: &SdkRecord) -> Option<SystemTime> {
    record
        .approximate_arrival_timestamp()
        .and_then(|at| SystemTime::try_from(*at).ok())
}

impl ShardRecord {
    /// The records a page of `records` read from `shard` holds, in order (see
    /// [`read`](Self::read)); `handled_through`, a position inside an aggregated
    /// record, applies to the first record if it is that one.
    pub(crate) fn read_page(
        shard: &ShardRef,
        records: &[SdkRecord],
        handled_through: Option<(String, u64)>,
    ) -> Vec<Self> {
        let mut handled_through = handled_through;
        let mut read = Vec::with_capacity(records.len());
        for record in records {
            let through = handled_through
                .take()
                .filter(|(sequence, _)| sequence == record.sequence_number())
                .map(|(_, through)| through);
            read.extend(Self::read(shard, record, through));
        }
        read
    }

    /// The records `record` of `shard` holds: its user records if it is an aggregated
    /// record (those numbered up to `handled_through` left out, as handled before), else
    /// itself. A record with the aggregation magic bytes that is no valid aggregated
    /// record is logged, counted in `logpipe_kinesis_corrupt_aggregated_records_total`,
    /// and handed on as it is.
    pub(crate) fn read(
        shard: &ShardRef,
        record: &SdkRecord,
        handled_through: Option<u64>,
    ) -> Vec<Self> {
        let arrival = arrival(record);
        let plain = || Self {
            shard: shard.clone(),
            sequence_number: record.sequence_number().to_owned(),
            subsequence: None,
            partition_key: record.partition_key().unwrap_or_default().to_owned(),
            explicit_hash_key: None,
            data: record.data().as_ref().to_vec(),
            arrival,
        };
        let user_records = match unpack(record.data().as_ref()) {
            Unpacked::Plain => return vec![plain()],
            Unpacked::Corrupt(reason) => {
                tracing::warn!(
                    stream = %shard.stream,
                    shard = %shard.shard_id,
                    sequence_number = record.sequence_number(),
                    "a record with the KPL aggregation magic bytes is no aggregated record ({reason}); handing it on as it is"
                );
                metrics::counter!("logpipe_kinesis_corrupt_aggregated_records_total").increment(1);
                return vec![plain()];
            }
            Unpacked::Aggregated(user_records) => user_records,
        };
        let count = user_records.len() as u64;
        user_records
            .into_iter()
            .zip(0u64..)
            .filter(|(_, number)| handled_through.is_none_or(|through| *number > through))
            .map(|(user_record, number)| Self {
                shard: shard.clone(),
                sequence_number: record.sequence_number().to_owned(),
                subsequence: Some(Subsequence {
                    number,
                    last: number + 1 == count,
                }),
                partition_key: user_record.partition_key,
                explicit_hash_key: user_record.explicit_hash_key,
                data: user_record.data,
                arrival,
            })
            .collect()
    }

    /// The position a consumer stores after handling it: its sequence number for a
    /// plain record and the last user record of an aggregated one (the whole record is
    /// handled then), else [`ShardPosition::AfterUserRecord`].
    pub fn position(&self) -> ShardPosition {
        match self.subsequence {
            Some(Subsequence {
                number,
                last: false,
            }) => ShardPosition::AfterUserRecord {
                sequence: self.sequence_number.clone(),
                subsequence: number,
            },
            _ => ShardPosition::After(self.sequence_number.clone()),
        }
    }
}

impl From<ShardRecord> for Record {
    /// The record as the consumer core handles it: partition key as key, explicit hash
    /// key (if any) as the [`EXPLICIT_HASH_KEY_HEADER`] header.
    fn from(record: ShardRecord) -> Self {
        let position = record.position().to_position();
        Record {
            partition: crate::consumer::partition_of(&record.shard),
            position,
            key: Some(record.partition_key.into_bytes().into()),
            value: record.data.into(),
            headers: record
                .explicit_hash_key
                .map(|key| RecordHeader {
                    name: EXPLICIT_HASH_KEY_HEADER.to_owned(),
                    value: key.into_bytes(),
                })
                .into_iter()
                .collect(),
            timestamp: record.arrival,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_kinesis::primitives::Blob;

    use super::*;
    use crate::aggregated::tests::aggregate;

    fn sdk_record(sequence: &str, key: &str, data: Vec<u8>) -> SdkRecord {
        SdkRecord::builder()
            .sequence_number(sequence)
            .partition_key(key)
            .data(Blob::new(data))
            .build()
            .unwrap()
    }

    #[test]
    fn user_records_get_positions_inside_their_record_and_the_last_the_record_s() {
        let shard = ShardRef {
            stream: Arc::from("people"),
            shard_id: Arc::from("shardId-000000000000"),
        };
        let data = aggregate(&[
            ("a", None, b"0"),
            ("b", Some("1701"), b"1"),
            ("c", None, b"2"),
        ]);
        let record = sdk_record("4968", "outer", data);
        let read = |through| -> Vec<(String, String, Vec<RecordHeader>)> {
            ShardRecord::read(&shard, &record, through)
                .into_iter()
                .map(Record::from)
                .map(|r| {
                    (
                        r.position.to_string(),
                        String::from_utf8(r.key.unwrap().into()).unwrap(),
                        r.headers,
                    )
                })
                .collect()
        };
        let hash_key = vec![RecordHeader {
            name: EXPLICIT_HASH_KEY_HEADER.to_owned(),
            value: b"1701".to_vec(),
        }];
        assert_eq!(
            read(None),
            [
                ("4968:0".to_owned(), "a".to_owned(), vec![]),
                ("4968:1".to_owned(), "b".to_owned(), hash_key.clone()),
                ("4968".to_owned(), "c".to_owned(), vec![]),
            ]
        );
        // Resumed after user record 0: it is not handed on again.
        assert_eq!(read(Some(0)).len(), 2);
        assert_eq!(read(Some(0))[0].0, "4968:1");
        let plain = sdk_record("4969", "k", b"json:{}".to_vec());
        let read = ShardRecord::read(&shard, &plain, None);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].position(), ShardPosition::After("4969".to_owned()));
        assert_eq!(read[0].partition_key, "k");
    }
}
