//! The Apache Kafka driver of logpipe: records in and out over rdkafka, with partitions
//! and offsets. The `logpipe` crate adapts it to its backend traits (feature `kafka`).
