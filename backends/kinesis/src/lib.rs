//! The AWS Kinesis driver of logpipe: records in and out over aws-sdk-kinesis, with
//! shards and sequence numbers. The `logpipe` crate adapts it to its backend traits
//! (feature `kinesis`).
