//! Integration tests: one binary, one module per area.

mod support;

mod cli;
mod consumer;
#[cfg(feature = "kafka")]
mod kafka;
mod killed;
mod kinesis;
mod kinesis_django;
mod multi_consumer;
mod ops;
mod processes;
mod properties;
mod serve;
mod vectors;
