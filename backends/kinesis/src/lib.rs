//! The AWS Kinesis backend of logpipe: records in and out over aws-sdk-kinesis, with
//! shards and sequence numbers, implementing the contract of `logpipe-core`.
//!
//! - [`KinesisBackend`] is a [`Backend`](logpipe_core::Backend): it writes records, makes
//!   consumers of some streams ([`KinesisConsumer`]) that read every shard, or, with a
//!   lease store ([`KinesisBackend::with_leases`]), share the shards among the consumers
//!   of a group, and answers the operators' tools ([`Admin`](logpipe_core::Admin)). Shards are partitions, and
//!   positions are sequence numbers, or the starting points of [`ShardPosition`].
//! - [`KinesisOptions`] is the `[kinesis]` table of a configuration, and [`KinesisUrl`]
//!   reads a `kinesis://?region=..&endpoint=..` URL.
//! - Underneath, the driver: [`KinesisProducer`] batches records into `PutRecords` calls
//!   (500 records, 5 MiB), keeps the order of records with the same partition key,
//!   retries only the records Kinesis refused, and resolves each send once its record is
//!   written; [`ShardReader`] follows every shard of some streams, finds new shards,
//!   reads a child shard only after its parents are read to their end, and rides out
//!   throttling and expired iterators without giving up a shard; [`KinesisApi`] is the
//!   handful of calls both make, [`SdkApi`] makes them with aws-sdk-kinesis, and a
//!   wrapper can change their answers (to test throttling).
//!
//! Kinesis records have no headers: headers (such as a dead-letter's origin and reason)
//! are not written, and the consumer's log says where a dead-lettered record came from.
//! Keyless records get a random partition key.
//!
//! Records aggregated by the Kinesis Producer Library (the magic bytes
//! [`AGGREGATED_RECORD_MAGIC`], a protobuf message, an MD5 digest) are read as the user
//! records they hold, each with its own partition key (and its explicit hash key in the
//! [`EXPLICIT_HASH_KEY_HEADER`] header) and position ([`ShardPosition::AfterUserRecord`]),
//! so that a consumer stopped inside one goes on at the next user record. One whose
//! digest or message is wrong is handed on as it is, a bad record to the consumer.
//!
//! ```no_run
//! use std::sync::Arc;
//! use logpipe_kinesis::{ClientOptions, KinesisProducer, ProducerOptions, SdkApi};
//!
//! # async fn example() -> Result<(), logpipe_kinesis::KinesisError> {
//! let api = Arc::new(SdkApi::new(ClientOptions {
//!     region: Some("us-east-1".into()),
//!     endpoint: None,
//! }));
//! let producer = KinesisProducer::new(api, ProducerOptions::default())?;
//! let written = producer.send("people", Some(b"6f1c"), b"json:{}".to_vec()).await?;
//! println!("{} {}", written.shard_id, written.sequence_number);
//! # Ok(())
//! # }
//! ```

mod admin;
mod aggregated;
mod api;
mod backend;
mod consumer;
mod error;
mod options;
mod position;
mod producer;
mod reader;
mod shard_record;
mod url;

pub use admin::KinesisRange;
pub use aggregated::AGGREGATED_RECORD_MAGIC;
pub use api::{
    ClientOptions, KinesisApi, PutRecordRequest, SdkApi, StartPosition, client_with_keys,
};
pub use backend::{KinesisBackend, backend_error};
pub use consumer::KinesisConsumer;
pub use error::{
    EXPIRED_ITERATOR, KinesisError, RESOURCE_NOT_FOUND, ServiceMessage, THROUGHPUT_EXCEEDED,
};
pub use logpipe_core::{BoxError, BoxFuture};
pub use options::{KinesisOptions, KinesisWriteMode, LeaseStoreUrl, StartAt};
pub use position::ShardPosition;
pub use producer::{
    Delivered, KinesisProducer, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_KEY_CHARS,
    MAX_RECORD_BYTES, ProducerOptions, WriteMode,
};
pub use reader::{InitialPosition, ReaderEvent, ReaderOptions, ShardReader, ShardRef};
pub use shard_record::{EXPLICIT_HASH_KEY_HEADER, ShardRecord, Subsequence};
pub use url::KinesisUrl;

/// aws-sdk-kinesis, as this crate uses it.
pub use aws_sdk_kinesis as sdk;
