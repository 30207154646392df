//! `logpipe streams`: list, create and describe streams.

use clap::Subcommand;
use logpipe_core::{Admin, Extent, PartitionInfo, Position};

use super::failure::Failure;
use super::ops::connect;
use super::table::{print_table, show};
use crate::any::AnyBackend;
use crate::config::Config;

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

pub(super) async fn streams(config: Config, command: StreamsCommand) -> Result<(), Failure> {
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
            if json {
                for info in &partitions {
                    println!("{}", partition_json(info));
                }
                return Ok(());
            }
            let mut rows = vec![[
                "PARTITION".to_owned(),
                "EARLIEST".to_owned(),
                "LATEST".to_owned(),
                "RECORDS".to_owned(),
            ]];
            for info in &partitions {
                let (earliest, latest, records) = match &info.extent {
                    Extent::Sequences { starting, ending } => (
                        format!("from {starting}"),
                        ending
                            .as_ref()
                            .map_or_else(|| "open".to_owned(), |end| format!("closed at {end}")),
                        "-".to_owned(),
                    ),
                    Extent::Offsets { first, next } => (
                        show(info.extent.earliest().as_ref()),
                        show(info.extent.latest().as_ref()),
                        (next - first).max(0).to_string(),
                    ),
                };
                rows.push([
                    info.partition.partition.to_string(),
                    earliest,
                    latest,
                    records,
                ]);
            }
            print_table(&rows);
        }
    }
    Ok(())
}

/// The partitions of `stream`.
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
    let position = |p: Option<Position>| match p {
        None => serde_json::Value::Null,
        Some(Position::Offset(offset)) => offset.into(),
        Some(Position::Sequence(sequence)) => sequence.into(),
    };
    let (end_offset, starting, ending) = match &info.extent {
        Extent::Offsets { next, .. } => (Some(*next), None, None),
        Extent::Sequences { starting, ending } => {
            (None, Some(starting.as_str()), ending.as_deref())
        }
    };
    serde_json::json!({
        "stream": &*info.partition.stream,
        "partition": &*info.partition.partition,
        "earliest": position(info.extent.earliest()),
        "latest": position(info.extent.latest()),
        "end_offset": end_offset,
        "starting_sequence_number": starting,
        "ending_sequence_number": ending,
    })
}
