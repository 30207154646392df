//! The operator commands of `logpipe`: `produce`, `tail`, `streams`, `offsets` and `lag`.
//!
//! Each loads the configuration as `run_consumers` does and works on whichever backend it
//! names.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::{EXIT_CONFIG, EXIT_DATA, decode_to_json_line, encode_json_message};
use crate::admin::{PartitionInfo, format_time, millis, parse_time};
use crate::any::{AnyBackend, AnyOffsetStore};
use crate::backend::{
    BackendError, ConsumerBackend, ConsumerEvent, OutgoingRecord, PartitionRef, Position,
    ProducerBackend, Record,
};
use crate::config::{BackendUrl, Config, OffsetStoreUrl};
use crate::envelope::{self, Header};
use crate::error_chain;
use crate::offsets::OffsetStore;

/// Records sent at once by `produce`, at most.
const SEND_WINDOW: usize = 500;

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
    /// Send the records of a range of a stream again, to another stream.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// The stream to read.
    pub(super) stream: String,
    /// The first record: an offset (in every partition; Kafka and the embedded log), a
    /// UTC time such as `2026-11-25T01:00:00Z`, or `PARTITION:POSITION` to replay one
    /// partition from a record (Kinesis: `SHARD:SEQUENCE`).
    #[arg(long)]
    pub(super) from: String,
    /// Where to stop, not included, in the same forms (default: the end of the stream
    /// when the replay starts).
    #[arg(long)]
    pub(super) until: Option<String>,
    /// The stream to write to.
    #[arg(long)]
    pub(super) to: String,
}

#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
    /// The stream to write to.
    stream: String,
    /// The message type.
    #[arg(long = "type")]
    message_type: String,
    /// The message version.
    #[arg(long)]
    version: u64,
    /// The key of every record (default: none, records spread over partitions).
    #[arg(long)]
    key: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct TailArgs {
    /// The stream to read.
    stream: String,
    /// Start at the oldest record kept (default: only records written from now on).
    #[arg(long)]
    from_beginning: bool,
    /// Show only messages of this type (malformed records are always shown).
    #[arg(long = "type")]
    message_type: Option<String>,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
    /// Stop after this many records shown.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub(super) enum StreamsCommand {
    /// List the streams.
    List,
    /// Create a stream.
    Create {
        /// The stream.
        stream: String,
        /// Partitions (Kinesis: shards).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Show the partitions or shards of a stream and their positions.
    Describe {
        /// The stream.
        stream: String,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct GroupArgs {
    /// The consumer group, without the configured `group_prefix`.
    #[arg(long)]
    group: String,
    /// The stream.
    stream: String,
}

#[derive(Debug, Subcommand)]
pub(super) enum OffsetsCommand {
    /// Show the stored position of each partition.
    Show {
        #[command(flatten)]
        target: GroupArgs,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Store an explicit position: the group goes on just after it.
    Set {
        #[command(flatten)]
        target: GroupArgs,
        /// The partition (Kinesis: shard id).
        #[arg(long)]
        partition: String,
        /// The position of the last record handled (an offset, or a Kinesis sequence
        /// number; on Kinesis also `TRIM_HORIZON` or `AT_TIMESTAMP:TIME`, where to start).
        #[arg(long)]
        position: String,
    },
    /// Move every partition to its earliest or latest record, or to a time.
    Reset {
        #[command(flatten)]
        target: GroupArgs,
        /// `earliest`, `latest`, or a UTC time such as `2026-11-25T01:00:00Z`.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Args)]
pub(super) struct LagArgs {
    #[command(flatten)]
    target: GroupArgs,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

/// Why a command failed, and so its exit status.
pub(super) enum Failure {
    /// The configuration is wrong (78).
    Config(String),
    /// The input is wrong (65).
    Data(String),
    /// The backend or the store failed (1).
    Failed(String),
}

impl Failure {
    pub(super) fn backend(what: &str, error: &BackendError) -> Self {
        Failure::Failed(format!("{what}: {}", reason(error)))
    }
}

/// An error and its sources, each left out when the text so far already says it (the
/// drivers' errors often repeat their source in their own message).
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Failed(format!("input/output failed: {error}"))
    }
}

/// Runs an operator command with the configuration at `config` (or the default places).
pub(super) fn run(command: OpsCommand, config: Option<&Path>) -> ExitCode {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("logpipe: {}", error_chain(&err));
            return ExitCode::from(EXIT_CONFIG);
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
            OpsCommand::Replay(args) => super::replay::replay(config, args).await,
        }
    });
    // Background work of the clients (Kinesis iterators, Kafka polling) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("logpipe: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Data(message)) => {
            eprintln!("logpipe: {message}");
            ExitCode::from(EXIT_DATA)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("logpipe: {message}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn connect(config: &Config) -> Result<AnyBackend, Failure> {
    AnyBackend::connect(config).map_err(|err| {
        Failure::Config(format!(
            "cannot open the backend {}: {}",
            config.backend,
            error_chain(&err)
        ))
    })
}

async fn produce(config: Config, args: ProduceArgs) -> Result<(), Failure> {
    let backend = connect(&config)?;
    let header = Header {
        message_type: &args.message_type,
        version: args.version,
        producer: config.producer_id.as_deref(),
    };
    let stream: Arc<str> = args.stream.as_str().into();
    let mut lines = stdin_lines();
    let mut line_number = 0_u64;
    let mut sender = InOrder::new(&backend);
    let mut window = Vec::with_capacity(SEND_WINDOW);
    loop {
        let line = lines.recv().await.transpose()?;
        if let Some(line) = &line {
            line_number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let value = encode_json_message(config.format, &header, line.as_bytes())
                .map_err(|reason| Failure::Data(format!("line {line_number}: {reason}")))?;
            window.push(OutgoingRecord {
                stream: Arc::clone(&stream),
                key: args.key.as_ref().map(|key| key.as_bytes().to_vec()),
                value,
                headers: Vec::new(),
            });
        }
        if window.len() == SEND_WINDOW || (line.is_none() && !window.is_empty()) {
            sender
                .send(std::mem::take(&mut window))
                .await
                .map_err(|err| Failure::backend(&format!("cannot write to {stream:?}"), &err))?;
        }
        if line.is_none() {
            break;
        }
    }
    backend
        .flush()
        .await
        .map_err(|err| Failure::backend("cannot flush", &err))?;
    eprintln!("logpipe: sent {} records to {stream}", sender.sent);
    Ok(())
}

/// Sends records in batches, each record handed to the backend in order.
pub(super) struct InOrder<'a> {
    backend: &'a AnyBackend,
    /// Records written so far.
    pub(super) sent: u64,
}

impl<'a> InOrder<'a> {
    pub(super) fn new(backend: &'a AnyBackend) -> Self {
        Self { backend, sent: 0 }
    }

    /// Sends `records` and waits until they are written.
    pub(super) async fn send(
        &mut self,
        mut records: Vec<OutgoingRecord>,
    ) -> Result<(), BackendError> {
        if self.sent == 0 && records.len() > 1 {
            // The first record goes alone: a backend's first send may wait (Kafka checks
            // the topic), and records behind it must not overtake it.
            let rest = records.split_off(1);
            send_in_order(self.backend, records).await?;
            self.sent = 1;
            records = rest;
        }
        let count = records.len() as u64;
        send_in_order(self.backend, records).await?;
        self.sent += count;
        Ok(())
    }
}

/// The lines of stdin, read on a thread of their own (reading stdin blocks).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (lines, received) = tokio::sync::mpsc::channel(SEND_WINDOW);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let failed = line.is_err();
            if lines.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    received
}

/// Sends `records` at once, each handed to the backend in order (so that records of one
/// key keep their order), and waits until all are written.
async fn send_in_order(
    backend: &AnyBackend,
    records: Vec<OutgoingRecord>,
) -> Result<(), BackendError> {
    type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send + 'a>>;
    let mut pending: Vec<Option<Sending<'_>>> = records
        .into_iter()
        .map(|record| {
            let send: Sending<'_> = Box::pin(async move { backend.send(record).await.map(drop) });
            Some(send)
        })
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        // Polled first in the order they were made.
        for slot in &mut pending {
            if let Some(send) = slot {
                match send.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => *slot = None,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

async fn tail(mut config: Config, args: TailArgs) -> Result<(), Failure> {
    // Where a reader starts without a position: the oldest record, or only new ones.
    config.kinesis.start_at = if args.from_beginning {
        crate::kinesis::StartAt::TrimHorizon
    } else {
        crate::kinesis::StartAt::Latest
    };
    config.kafka.consumer.insert(
        "auto.offset.reset".to_owned(),
        if args.from_beginning {
            "earliest"
        } else {
            "latest"
        }
        .to_owned(),
    );
    let backend = connect(&config)?;
    // A group of its own, whose positions are never stored.
    let group = format!(
        "logpipe-tail-{}-{}",
        std::process::id(),
        millis(SystemTime::now())
    );
    let mut consumer = backend
        .consumer(&group, std::slice::from_ref(&args.stream))
        .map_err(|err| Failure::backend(&format!("cannot read {:?}", args.stream), &err))?;
    let deadline = args
        .timeout
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs_f64(seconds.max(0.0)));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut shown = 0_u64;
    let mut stdout = std::io::stdout().lock();
    while args.max.is_none_or(|max| shown < max) {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, consumer.next_event())
                    .await
                    .ok(),
                None => Some(consumer.next_event().await),
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                pause_if_retriable(&args.stream, err).await?;
                continue;
            }
        };
        match event {
            ConsumerEvent::Assigned(partitions) => {
                for partition in partitions {
                    let after = if args.from_beginning {
                        None
                    } else {
                        latest_position(&backend, &partition).await?
                    };
                    consumer
                        .seek(&partition, after.as_ref())
                        .await
                        .map_err(|err| {
                            Failure::backend(&format!("cannot read {partition}"), &err)
                        })?;
                }
            }
            ConsumerEvent::Records(records) => {
                for record in records {
                    if args.max.is_some_and(|max| shown >= max) {
                        break;
                    }
                    if let Some(line) =
                        show_record(&record, args.message_type.as_deref(), args.json)
                    {
                        stdout.write_all(line.as_bytes())?;
                        stdout.flush()?;
                        shown += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Waits a little after a read error that may pass; any other is the command's failure.
pub(super) async fn pause_if_retriable(stream: &str, err: BackendError) -> Result<(), Failure> {
    if !err.is_retriable() {
        return Err(Failure::backend(&format!("cannot read {stream:?}"), &err));
    }
    tracing::warn!(error = %error_chain(&err), "reading failed; trying again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Where a reader of only new records starts in `partition`: after its newest record on
/// the embedded log (Kafka and Kinesis start at the end by their own settings).
async fn latest_position(
    backend: &AnyBackend,
    partition: &PartitionRef,
) -> Result<Option<Position>, Failure> {
    if !matches!(backend, AnyBackend::Embedded(_)) {
        return Ok(None);
    }
    let partitions = backend
        .describe_stream(&partition.stream)
        .await
        .map_err(|err| Failure::backend(&format!("cannot describe {}", partition.stream), &err))?;
    Ok(partitions
        .into_iter()
        .find(|info| info.partition == *partition)
        .and_then(|info| info.end_offset)
        .map(|end| Position::Offset(end - 1)))
}

/// A record as a line of text, or `None` when `only_type` filters it out. A record that
/// is not an envelope is shown with the reason.
fn show_record(record: &Record, only_type: Option<&str>, json: bool) -> Option<String> {
    let key = record
        .key
        .as_deref()
        .map(|key| String::from_utf8_lossy(key).into_owned());
    let timestamp = record.timestamp.map(millis);
    let (stream, partition) = (&record.partition.stream, &record.partition.partition);
    let position = record.position.to_string();
    let text = |value: &str| serde_json::to_string(value).expect("strings serialize");
    let json_prefix = || {
        format!(
            "{{\"stream\":{},\"partition\":{},\"position\":{},\"timestamp_ms\":{},\"key\":{},",
            text(stream),
            text(partition),
            text(&position),
            timestamp.map_or_else(|| "null".to_owned(), |t| t.to_string()),
            key.as_deref().map_or_else(|| "null".to_owned(), text),
        )
    };
    let human_prefix = || {
        format!(
            "{stream}/{partition}@{position} {} key={}",
            timestamp.map_or_else(|| "-".to_owned(), format_time),
            key.as_deref().unwrap_or("-"),
        )
    };
    let malformed = |reason: String| {
        Some(if json {
            format!(
                "{}\"malformed\":{},\"value\":{}}}\n",
                json_prefix(),
                text(&reason),
                text(&String::from_utf8_lossy(&record.value)),
            )
        } else {
            format!(
                "{} MALFORMED ({reason}): {}\n",
                human_prefix(),
                String::from_utf8_lossy(&record.value).escape_debug(),
            )
        })
    };
    let envelope = match envelope::decode(&record.value) {
        Ok(envelope) => envelope,
        Err(err) => return malformed(error_chain(&err)),
    };
    if only_type.is_some_and(|t| t != envelope.message_type) {
        return None;
    }
    if json {
        // The envelope's own JSON line, after the record's fields.
        return match decode_to_json_line(&record.value) {
            Ok(line) => Some(json_prefix() + &String::from_utf8_lossy(&line[1..])),
            Err(reason) => malformed(reason),
        };
    }
    let mut message = Vec::new();
    if let Err(err) = envelope.body.write_json(&mut message) {
        return malformed(format!("the message cannot be shown as JSON: {err}"));
    }
    Some(format!(
        "{} {} v{}: {}\n",
        human_prefix(),
        envelope.message_type,
        envelope.version,
        String::from_utf8_lossy(&message),
    ))
}

async fn streams(config: Config, command: StreamsCommand) -> Result<(), Failure> {
    let backend = connect(&config)?;
    match command {
        StreamsCommand::List => {
            let streams = backend
                .list_streams()
                .await
                .map_err(|err| Failure::backend("cannot list the streams", &err))?;
            for stream in streams {
                println!("{stream}");
            }
        }
        StreamsCommand::Create { stream, partitions } => {
            backend
                .create_stream(&stream, partitions)
                .await
                .map_err(|err| Failure::backend(&format!("cannot create {stream:?}"), &err))?;
            println!("created {stream} with {partitions} partitions");
        }
        StreamsCommand::Describe { stream, json } => {
            let partitions = describe(&backend, &stream).await?;
            let mut rows = vec![[
                "PARTITION".to_owned(),
                "EARLIEST".to_owned(),
                "LATEST".to_owned(),
                "RECORDS".to_owned(),
            ]];
            for info in &partitions {
                if json {
                    println!("{}", partition_json(info));
                    continue;
                }
                let (earliest, latest, records) = match (&info.sequence_range, info.end_offset) {
                    (Some((start, end)), _) => (
                        format!("from {start}"),
                        end.as_ref()
                            .map_or_else(|| "open".to_owned(), |end| format!("closed at {end}")),
                        "-".to_owned(),
                    ),
                    (None, end) => (
                        show(info.earliest.as_ref()),
                        show(info.latest.as_ref()),
                        match (&info.earliest, end) {
                            (Some(Position::Offset(first)), Some(end)) => (end - first).to_string(),
                            _ => "0".to_owned(),
                        },
                    ),
                };
                rows.push([
                    info.partition.partition.to_string(),
                    earliest,
                    latest,
                    records,
                ]);
            }
            if !json {
                print_table(&rows);
            }
        }
    }
    Ok(())
}

pub(super) async fn describe(
    backend: &AnyBackend,
    stream: &str,
) -> Result<Vec<PartitionInfo>, Failure> {
    backend
        .describe_stream(stream)
        .await
        .map_err(|err| Failure::backend(&format!("cannot describe {stream:?}"), &err))
}

fn partition_json(info: &PartitionInfo) -> serde_json::Value {
    let position = |p: Option<&Position>| match p {
        None => serde_json::Value::Null,
        Some(Position::Offset(offset)) => (*offset).into(),
        Some(Position::Sequence(sequence)) => sequence.as_str().into(),
    };
    serde_json::json!({
        "stream": &*info.partition.stream,
        "partition": &*info.partition.partition,
        "earliest": position(info.earliest.as_ref()),
        "latest": position(info.latest.as_ref()),
        "end_offset": info.end_offset,
        "starting_sequence_number": info.sequence_range.as_ref().map(|r| r.0.as_str()),
        "ending_sequence_number": info.sequence_range.as_ref().and_then(|r| r.1.as_deref()),
    })
}

fn show(position: Option<&Position>) -> String {
    position.map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Where a group's positions are kept.
enum Positions {
    /// An offset store (SQLite, memory).
    Store(AnyOffsetStore),
    /// Kafka consumer-group commits, read and written from outside the group.
    #[cfg(feature = "kafka")]
    KafkaGroup(crate::kafka::KafkaClient),
}

impl Positions {
    fn open(backend: &AnyBackend, config: &Config) -> Result<Self, Failure> {
        #[cfg(feature = "kafka")]
        if let (AnyBackend::Kafka(client), OffsetStoreUrl::Kafka) =
            (backend, config.offset_store_url())
        {
            return Ok(Positions::KafkaGroup(client.clone()));
        }
        if matches!(config.offset_store_url(), OffsetStoreUrl::Memory) {
            return Err(Failure::Config(
                "offset_store is memory://: its positions live only in the consumer's process"
                    .to_owned(),
            ));
        }
        let _ = backend;
        AnyOffsetStore::open(config)
            .map(Positions::Store)
            .map_err(|err| {
                Failure::Config(format!(
                    "cannot open the offset store: {}",
                    error_chain(&err)
                ))
            })
    }

    /// The stored position of `group` in each of `partitions`.
    async fn load(
        &self,
        group: &str,
        partitions: &[PartitionRef],
    ) -> Result<Vec<Option<Position>>, Failure> {
        let failed = |err: &(dyn std::error::Error + 'static)| {
            Failure::Failed(format!(
                "cannot read the positions of group {group:?}: {}",
                error_chain(err)
            ))
        };
        match self {
            Positions::Store(store) => {
                let mut found = Vec::with_capacity(partitions.len());
                for partition in partitions {
                    found.push(store.load(group, partition).await.map_err(|e| failed(&e))?);
                }
                Ok(found)
            }
            #[cfg(feature = "kafka")]
            Positions::KafkaGroup(client) => {
                let Some(first) = partitions.first() else {
                    return Ok(Vec::new());
                };
                let numbers = kafka_numbers(partitions)?;
                let committed = client
                    .group_committed(group, &first.stream, &numbers)
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(committed
                    .into_iter()
                    .map(|(_, next)| next.map(|next| Position::Offset(next - 1)))
                    .collect())
            }
        }
    }

    /// Stores `positions` for `group`.
    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), Failure> {
        match self {
            Positions::Store(store) => store.store(group, positions).await.map_err(|err| {
                Failure::Failed(format!(
                    "cannot store the positions of group {group:?}: {}",
                    error_chain(&err)
                ))
            }),
            #[cfg(feature = "kafka")]
            Positions::KafkaGroup(client) => {
                let Some((first, _)) = positions.first() else {
                    return Ok(());
                };
                let mut offsets = Vec::with_capacity(positions.len());
                for (partition, position) in positions {
                    let number = kafka_numbers(std::slice::from_ref(partition))?[0];
                    let Position::Offset(offset) = position else {
                        return Err(Failure::Data(format!("{position} is not a Kafka offset")));
                    };
                    offsets.push((number, offset + 1));
                }
                client
                    .group_commit(group, &first.stream, &offsets)
                    .await
                    .map_err(|err| {
                        let busy = if logpipe_kafka::is_group_busy(&err) {
                            " (the group has active members: stop its consumers first)"
                        } else {
                            ""
                        };
                        Failure::Failed(format!(
                            "cannot commit the positions of group {group:?}{busy}: {}",
                            error_chain(&err)
                        ))
                    })
            }
        }
    }
}

#[cfg(feature = "kafka")]
fn kafka_numbers(partitions: &[PartitionRef]) -> Result<Vec<i32>, Failure> {
    partitions
        .iter()
        .map(|p| {
            p.partition
                .parse()
                .map_err(|_| Failure::Data(format!("{p} is not a Kafka partition")))
        })
        .collect()
}

/// The group name under which positions are stored: prefixed, and `GROUP@REGION` on
/// Kinesis.
fn position_group(backend: &AnyBackend, config: &Config, group: &str) -> String {
    backend.position_group(format!("{}{group}", config.group_prefix))
}

async fn offsets(config: Config, command: OffsetsCommand) -> Result<(), Failure> {
    let backend = connect(&config)?;
    let positions = Positions::open(&backend, &config)?;
    match command {
        OffsetsCommand::Show { target, json } => {
            let group = position_group(&backend, &config, &target.group);
            let partitions = describe(&backend, &target.stream).await?;
            let refs: Vec<PartitionRef> = partitions.iter().map(|p| p.partition.clone()).collect();
            let stored = positions.load(&group, &refs).await?;
            let mut rows = vec![["PARTITION".to_owned(), "POSITION".to_owned()]];
            for (partition, position) in refs.iter().zip(stored) {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "group": group,
                            "stream": &*partition.stream,
                            "partition": &*partition.partition,
                            "position": position.as_ref().map(ToString::to_string),
                        })
                    );
                } else {
                    rows.push([partition.partition.to_string(), show(position.as_ref())]);
                }
            }
            if !json {
                println!("group {group}, stream {}", target.stream);
                print_table(&rows);
            }
        }
        OffsetsCommand::Set {
            target,
            partition,
            position,
        } => {
            let group = position_group(&backend, &config, &target.group);
            let partitions = describe(&backend, &target.stream).await?;
            let Some(info) = partitions
                .iter()
                .find(|info| *info.partition.partition == *partition)
            else {
                return Err(Failure::Data(format!(
                    "stream {:?} has no partition {partition:?}",
                    target.stream
                )));
            };
            let position = if info.sequence_range.is_some() {
                crate::kinesis::ShardPosition::parse(&position)
                    .map_err(|err| {
                        Failure::Data(format!("cannot set {}: {}", info.partition, reason(&err)))
                    })?
                    .to_position()
            } else {
                Position::Offset(position.parse().map_err(|_| {
                    Failure::Data(format!("position {position:?} is not an offset"))
                })?)
            };
            positions
                .store(&group, &[(info.partition.clone(), position.clone())])
                .await?;
            println!("group {group}: {} set to {position}", info.partition);
        }
        OffsetsCommand::Reset { target, to } => {
            let to = match to.as_str() {
                "earliest" => ResetTo::Earliest,
                "latest" => ResetTo::Latest,
                time => ResetTo::Time(parse_time(time).ok_or_else(|| {
                    Failure::Data(format!(
                        "--to {time:?} is not `earliest`, `latest` or a UTC time like 2026-11-25T01:00:00Z"
                    ))
                })?),
            };
            let group = position_group(&backend, &config, &target.group);
            let partitions = describe(&backend, &target.stream).await?;
            if partitions.iter().any(|p| p.end_offset.is_none()) {
                return reset_kinesis(&backend, &positions, &group, &partitions, to).await;
            }
            let next_offsets: Vec<i64> = match to {
                ResetTo::Earliest => partitions
                    .iter()
                    .map(|p| match &p.earliest {
                        Some(Position::Offset(first)) => *first,
                        _ => p.end_offset.unwrap_or(0),
                    })
                    .collect(),
                ResetTo::Latest => partitions
                    .iter()
                    .map(|p| p.end_offset.unwrap_or(0))
                    .collect(),
                ResetTo::Time(time) => {
                    let found = backend
                        .positions_at(&target.stream, time)
                        .await
                        .map_err(|err| Failure::backend("cannot find positions by time", &err))?;
                    partitions
                        .iter()
                        .map(|p| {
                            found
                                .iter()
                                .find(|f| f.partition == p.partition)
                                .and_then(|f| f.offset)
                                .unwrap_or(p.end_offset.unwrap_or(0))
                        })
                        .collect()
                }
            };
            let new: Vec<(PartitionRef, Position)> = partitions
                .iter()
                .zip(next_offsets)
                .map(|(p, next)| (p.partition.clone(), Position::Offset(next - 1)))
                .collect();
            positions.store(&group, &new).await?;
            for (partition, position) in &new {
                println!("group {group}: {partition} set to {position}");
            }
        }
    }
    Ok(())
}

/// Where `offsets reset` moves a group.
#[derive(Debug, Clone, Copy)]
enum ResetTo {
    Earliest,
    Latest,
    Time(SystemTime),
}

/// Kinesis: stores for every shard where its consumers start next. Kinesis tells no
/// sequence number before a shard's first record nor one for a time, so `earliest` and a
/// time are stored as the starting points a shard iterator takes (`TRIM_HORIZON`,
/// `AT_TIMESTAMP`); `latest` is the shard's newest record, found by reading the shard
/// from the stored position on (a shard without records keeps its position: there is
/// nothing to skip).
async fn reset_kinesis(
    backend: &AnyBackend,
    positions: &Positions,
    group: &str,
    partitions: &[PartitionInfo],
    to: ResetTo,
) -> Result<(), Failure> {
    use crate::kinesis::ShardPosition;

    let refs: Vec<PartitionRef> = partitions.iter().map(|p| p.partition.clone()).collect();
    let start = match to {
        ResetTo::Earliest => Some(ShardPosition::TrimHorizon),
        ResetTo::Time(time) => Some(ShardPosition::at_timestamp(time)),
        ResetTo::Latest => None,
    };
    let mut new = Vec::new();
    if let Some(start) = start {
        new = refs
            .into_iter()
            .map(|partition| (partition, start.to_position()))
            .collect();
    } else {
        let stored = positions.load(group, &refs).await?;
        for (partition, mut position) in refs.into_iter().zip(stored) {
            loop {
                let found = backend
                    .kinesis_behind(&partition, position.as_ref())
                    .await
                    .map_err(|err| Failure::backend(&format!("cannot read {partition}"), &err))?;
                if found.last.is_some() {
                    position = found.last;
                }
                if found.exact {
                    break;
                }
            }
            match position {
                Some(position) => new.push((partition, position)),
                None => println!("group {group}: {partition} holds no records; left as it is"),
            }
        }
    }
    positions.store(group, &new).await?;
    for (partition, position) in &new {
        println!("group {group}: {partition} set to {position}");
    }
    Ok(())
}

async fn lag(config: Config, args: LagArgs) -> Result<(), Failure> {
    let backend = connect(&config)?;
    let positions = Positions::open(&backend, &config)?;
    let group = position_group(&backend, &config, &args.target.group);
    let partitions = describe(&backend, &args.target.stream).await?;
    let refs: Vec<PartitionRef> = partitions.iter().map(|p| p.partition.clone()).collect();
    let stored = positions.load(&group, &refs).await?;
    let kinesis = matches!(config.backend, BackendUrl::Kinesis { .. });
    let mut rows = vec![[
        "PARTITION".to_owned(),
        "POSITION".to_owned(),
        if kinesis { "BEHIND" } else { "END" }.to_owned(),
        "LAG".to_owned(),
    ]];
    let mut total = 0_u64;
    let mut exact = true;
    for (info, position) in partitions.iter().zip(stored) {
        let (lag, lag_text, third, json) = if kinesis {
            let found = backend
                .kinesis_behind(&info.partition, position.as_ref())
                .await
                .map_err(|err| {
                    Failure::backend(&format!("cannot read {}", info.partition), &err)
                })?;
            exact &= found.exact;
            let behind_ms = found
                .behind
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            (
                found.records,
                format!("{}{}", found.records, if found.exact { "" } else { "+" }),
                found
                    .behind
                    .map_or_else(|| "0s".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
                serde_json::json!({
                    "lag": found.records,
                    "exact": found.exact,
                    "behind_ms": behind_ms.unwrap_or(0),
                }),
            )
        } else {
            let end = info.end_offset.unwrap_or(0);
            // Without a stored position a consumer starts at the oldest record kept.
            let next = match (&position, &info.earliest) {
                (Some(Position::Offset(offset)), _) => offset + 1,
                (None, Some(Position::Offset(first))) => *first,
                _ => end,
            };
            let lag = u64::try_from(end - next).unwrap_or(0);
            (
                lag,
                lag.to_string(),
                end.to_string(),
                serde_json::json!({"lag": lag, "end_offset": end}),
            )
        };
        total += lag;
        if args.json {
            let mut line = serde_json::json!({
                "group": group,
                "stream": &*info.partition.stream,
                "partition": &*info.partition.partition,
                "position": position.as_ref().map(ToString::to_string),
            });
            if let (Some(line), serde_json::Value::Object(more)) = (line.as_object_mut(), json) {
                line.extend(more);
            }
            println!("{line}");
        } else {
            rows.push([
                info.partition.partition.to_string(),
                show(position.as_ref()),
                third,
                lag_text,
            ]);
        }
    }
    if !args.json {
        println!(
            "group {group}, stream {}: {total}{} records behind",
            args.target.stream,
            if exact { "" } else { "+" }
        );
        print_table(&rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_do_not_repeat_their_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create topic \"t\": {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("already exists")]
        struct Inner;
        let error = BackendError::new(crate::backend::BackendErrorKind::Other, "Kafka")
            .with_source(Outer(Inner));
        assert_eq!(
            reason(&error),
            "backend error: Kafka: cannot create topic \"t\": already exists"
        );
    }
}
