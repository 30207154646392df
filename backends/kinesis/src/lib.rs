//! The AWS Kinesis driver of logpipe: records in and out over aws-sdk-kinesis, with
//! shards and sequence numbers. The `logpipe` crate adapts it to its backend traits
//! (feature `kinesis`).
//!
//! - [`KinesisProducer`] batches records into `PutRecords` calls (500 records, 5 MiB),
//!   keeps the order of records with the same partition key, retries only the records
//!   Kinesis refused, and resolves each send once its record is written.
//! - [`KinesisConsumer`] follows every shard of some streams: it finds new shards, reads a
//!   child shard only after its parents are read to their end, and rides out throttling
//!   and expired iterators without giving up a shard.
//! - [`KinesisApi`] is the handful of calls both make; [`SdkApi`] makes them with
//!   aws-sdk-kinesis, and a wrapper can change their answers (to test throttling).
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

mod api;
mod consumer;
mod error;
mod producer;

pub use api::{BoxFuture, ClientOptions, KinesisApi, PutRecordRequest, SdkApi, StartPosition};
pub use consumer::{
    ConsumerOptions, Event, InitialPosition, KinesisConsumer, ShardRecord, ShardRef,
};
pub use error::{
    BoxError, EXPIRED_ITERATOR, KinesisError, RESOURCE_NOT_FOUND, ServiceMessage,
    THROUGHPUT_EXCEEDED,
};
pub use producer::{
    Delivered, KinesisProducer, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_KEY_CHARS,
    MAX_RECORD_BYTES, ProducerOptions, WriteMode,
};

/// aws-sdk-kinesis, as this crate uses it.
pub use aws_sdk_kinesis as sdk;
