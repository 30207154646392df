//! The operator commands of `logpipe`: `produce`, `tail`, `streams`, `offsets`, `lag`,
//! `leases`, `replay` and `outbox`, one module each.
//!
//! Each loads the configuration as `run_consumers` does and works on whichever backend it
//! names, through the traits of `logpipe-core` only.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use logpipe_core::Admin;

use super::failure::{Failure, cannot_open, is_unavailable};
use super::lag::{LagArgs, lag};
use super::leases::{LeasesArgs, leases};
use super::offsets::{OffsetsCommand, offsets};
use super::outbox::{OutboxCommand, outbox};
use super::produce::{ProduceArgs, produce};
use super::replay::{ReplayArgs, replay};
use super::streams::{StreamsCommand, streams};
use super::tail::{TailArgs, tail};
use crate::any::AnyBackend;
use crate::config::Config;
use crate::error_chain;

/// The operator commands.
#[derive(Debug, Subcommand)]
pub(super) enum OpsCommand {
    /// Send messages read as JSON lines on stdin, as envelopes of one type and version.
    Produce(ProduceArgs),
    /// Print records of a stream as they arrive, decoded.
    Tail(TailArgs),
    /// List, create and describe streams.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Show and move the stored positions of a consumer group.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// How far a consumer group is behind, per partition or shard.
    Lag(LagArgs),
    /// Who holds each partition of a consumer group of the embedded log, and its
    /// checkpoint.
    Leases(LeasesArgs),
    /// Send the records of a range of a stream again, to another stream.
    Replay(ReplayArgs),
    /// Relay the transactional outbox, or show what waits in it.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

/// Runs an operator command with the configuration at `config` (or the default places),
/// its Kafka requests waiting `request_timeout` when given.
pub(super) fn run(
    command: OpsCommand,
    config: Option<&Path>,
    request_timeout: Option<Duration>,
) -> ExitCode {
    let config = match Config::load(config) {
        #[cfg(feature = "kafka")]
        Ok(mut config) => {
            if let Some(timeout) = request_timeout {
                config.kafka.request_timeout_ms = u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
            }
            config
        }
        #[cfg(not(feature = "kafka"))]
        Ok(config) => {
            let _ = request_timeout;
            config
        }
        Err(err) => {
            eprintln!("logpipe: {}", error_chain(&err));
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("logpipe: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            OpsCommand::Produce(args) => produce(config, args).await,
            OpsCommand::Tail(args) => tail(config, args).await,
            OpsCommand::Streams(command) => streams(config, command).await,
            OpsCommand::Offsets(command) => offsets(config, command).await,
            OpsCommand::Lag(args) => lag(config, args).await,
            OpsCommand::Leases(args) => leases(config, args).await,
            OpsCommand::Replay(args) => replay(config, args).await,
            OpsCommand::Outbox(command) => outbox(config, command).await,
        }
    });
    // Background work of the clients (Kinesis iterators, Kafka polling) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (status, message) = failure.status_and_message();
            eprintln!("logpipe: {message}");
            ExitCode::from(status)
        }
    }
}

/// Looks `stream` up, so that a command fails before it reads or writes anything when the
/// backend cannot be reached or does not answer in time (`what` says what it was to do,
/// such as `cannot read`). Any other answer, such as a stream that does not exist, is
/// left to the command (Kafka may create the stream, a tail waits for it).
pub(super) async fn reach(backend: &AnyBackend, stream: &str, what: &str) -> Result<(), Failure> {
    match backend.describe_stream(stream).await {
        Err(err) if is_unavailable(&err) => {
            Err(Failure::backend(&format!("{what} {stream:?}"), &err))
        }
        _ => Ok(()),
    }
}

/// Opens the configured backend.
pub(super) fn connect(config: &Config) -> Result<AnyBackend, Failure> {
    config
        .open_backend()
        .map_err(|err| cannot_open(&config.backend, &err))
}
