//! Records aggregated by the Kinesis Producer Library (and by the aggregation libraries
//! and agents that write its format, such as Fluent Bit): many user records packed in
//! one Kinesis record.
//!
//! Such a record is the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, then the
//! MD5 digest of the protobuf bytes. Each user record in it has its data, an index into
//! the record's table of partition keys and, optionally, one into its table of explicit
//! hash keys. A record without the magic bytes is a plain record. One with them whose
//! digest, protobuf or indexes are wrong is handed on as it is, so that the consumer's
//! bad-record policy skips or dead-letters it like any record that is no envelope.

use md5::{Digest, Md5};
use prost::Message;

/// The first bytes of an aggregated record.
pub const AGGREGATED_RECORD_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest that ends an aggregated record.
const DIGEST_LEN: usize = 16;

/// The protobuf message between the magic bytes and the digest.
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<PackedRecord>,
}

/// One user record in an [`AggregatedRecord`] (its tags, field 4, are not read).
#[derive(Clone, PartialEq, Message)]
struct PackedRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
}

/// One user record of an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRecord {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// What the data of a Kinesis record holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unpacked {
    /// One record, as written.
    Plain,
    /// The user records of an aggregated record, in the order they were packed.
    Aggregated(Vec<UserRecord>),
    /// The magic bytes, and then no valid aggregated record: why.
    Corrupt(&'static str),
}

/// Reads the data of a Kinesis record.
pub(crate) fn unpack(data: &[u8]) -> Unpacked {
    let Some(rest) = data.strip_prefix(&AGGREGATED_RECORD_MAGIC) else {
        return Unpacked::Plain;
    };
    let Some(split) = rest.len().checked_sub(DIGEST_LEN) else {
        return Unpacked::Corrupt("too short for an aggregated record");
    };
    let (message, digest) = rest.split_at(split);
    if Md5::digest(message).as_slice() != digest {
        return Unpacked::Corrupt("its MD5 digest does not match");
    }
    let Ok(aggregated) = AggregatedRecord::decode(message) else {
        return Unpacked::Corrupt("its protobuf message cannot be read");
    };
    let key = |table: &[String], index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|index| table.get(index))
            .cloned()
    };
    let mut records = Vec::with_capacity(aggregated.records.len());
    for packed in aggregated.records {
        let Some(partition_key) = key(&aggregated.partition_key_table, packed.partition_key_index)
        else {
            return Unpacked::Corrupt("a user record's partition key index is out of its table");
        };
        let explicit_hash_key = match packed.explicit_hash_key_index {
            None => None,
            Some(index) => match key(&aggregated.explicit_hash_key_table, index) {
                Some(key) => Some(key),
                None => {
                    return Unpacked::Corrupt(
                        "a user record's explicit hash key index is out of its table",
                    );
                }
            },
        };
        records.push(UserRecord {
            partition_key,
            explicit_hash_key,
            data: packed.data,
        });
    }
    Unpacked::Aggregated(records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An aggregated record of `records` (partition key, explicit hash key, data), as the
    /// KPL writes one.
    pub(crate) fn aggregate(records: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut message = AggregatedRecord {
            partition_key_table: Vec::new(),
            explicit_hash_key_table: Vec::new(),
            records: Vec::new(),
        };
        let index = |table: &mut Vec<String>, key: &str| {
            let found = table.iter().position(|k| k == key);
            found.unwrap_or_else(|| {
                table.push(key.to_owned());
                table.len() - 1
            }) as u64
        };
        for (key, hash_key, data) in records {
            let partition_key_index = index(&mut message.partition_key_table, key);
            let explicit_hash_key_index =
                hash_key.map(|hash_key| index(&mut message.explicit_hash_key_table, hash_key));
            message.records.push(PackedRecord {
                partition_key_index,
                explicit_hash_key_index,
                data: data.to_vec(),
            });
        }
        seal(&message.encode_to_vec())
    }

    /// The magic bytes, `message`, and its digest.
    fn seal(message: &[u8]) -> Vec<u8> {
        let mut data = AGGREGATED_RECORD_MAGIC.to_vec();
        data.extend_from_slice(message);
        data.extend_from_slice(&Md5::digest(message));
        data
    }

    #[test]
    fn an_aggregated_record_is_read_as_its_user_records_with_their_keys() {
        let data = aggregate(&[
            ("a", None, b"one"),
            ("b", Some("1701"), b"two"),
            ("a", Some("1701"), b""),
        ]);
        let Unpacked::Aggregated(records) = unpack(&data) else {
            panic!("not read as aggregated");
        };
        let read: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.partition_key.as_str(),
                    r.explicit_hash_key.as_deref(),
                    r.data.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                ("a", None, &b"one"[..]),
                ("b", Some("1701"), &b"two"[..]),
                ("a", Some("1701"), &b""[..]),
            ]
        );
    }

    #[test]
    fn records_without_the_magic_bytes_are_plain_and_broken_aggregates_corrupt() {
        assert_eq!(unpack(br#"json:{"type":"person"}"#), Unpacked::Plain);
        assert_eq!(unpack(b""), Unpacked::Plain);
        let good = aggregate(&[("a", None, b"one")]);
        let mut bad_digest = good.clone();
        *bad_digest.last_mut().unwrap() ^= 1;
        assert_eq!(
            unpack(&bad_digest),
            Unpacked::Corrupt("its MD5 digest does not match")
        );
        assert_eq!(
            unpack(&AGGREGATED_RECORD_MAGIC),
            Unpacked::Corrupt("too short for an aggregated record")
        );
        // A digest that matches bytes that are no protobuf message.
        assert_eq!(
            unpack(&seal(&[0xFF, 0xFF, 0xFF])),
            Unpacked::Corrupt("its protobuf message cannot be read")
        );
        let out_of_table = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: Vec::new(),
            records: vec![PackedRecord {
                partition_key_index: 1,
                explicit_hash_key_index: None,
                data: b"one".to_vec(),
            }],
        };
        assert_eq!(
            unpack(&seal(&out_of_table.encode_to_vec())),
            Unpacked::Corrupt("a user record's partition key index is out of its table")
        );
    }
}
