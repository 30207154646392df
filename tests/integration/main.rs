//! Integration tests: one binary, one module per area.

mod support;

mod cli;
mod concurrency;
mod consumer;
mod django_peer;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_compression;
#[cfg(feature = "kafka")]
mod kafka_django;
#[cfg(feature = "kafka")]
mod kafka_faults;
#[cfg(feature = "kafka")]
mod kafka_network;
#[cfg(feature = "kafka")]
mod kafka_people;
#[cfg(feature = "kafka")]
mod kafka_rebalance;
#[cfg(feature = "kafka")]
mod kafka_security;
mod killed;
mod kinesis;
mod kinesis_aggregated;
mod kinesis_django;
#[cfg(all(feature = "postgres", feature = "kafka"))]
mod kinesis_leases;
mod leases;
mod multi_consumer;
mod ops;
mod outbox;
mod own_records;
mod panics;
#[cfg(all(feature = "postgres", feature = "kafka"))]
mod postgres;
mod processes;
mod properties;
mod scenarios;
#[cfg(feature = "schemas")]
mod schema_compatibility;
#[cfg(feature = "schemas")]
mod schemas;
mod serve;
#[cfg(feature = "kafka")]
mod tcp_proxy;
mod vectors;
