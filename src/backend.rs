//! The backend traits: bytes in, bytes out, with partitions and positions.
//!
//! A backend moves record values; it knows nothing of envelopes or handlers. These are
//! the contract of the crate `logpipe-core`, which every backend crate implements: the
//! embedded log ([`embedded`](crate::embedded)), Kafka and Kinesis.

pub use logpipe_core::{
    Backend, BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery,
    DeliveryFuture, OutgoingRecord, PartitionRef, Position, ProducerBackend, Record, RecordHeader,
    StartFrom,
};
