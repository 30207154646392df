//! `logpipe offsets`: show and move the stored positions of a consumer group, in the
//! configured offset store, through the [`OffsetStore`] trait whichever it is.

use clap::{Args, Subcommand};
use logpipe_core::time::parse_time;
use logpipe_core::{Admin, Backend, Boundary, OffsetStore, PartitionInfo, PartitionRef, Position};

use super::failure::Failure;
use super::ops::connect;
use super::streams::describe;
use super::table::{print_table, show};
use crate::any::{AnyBackend, AnyOffsetStore};
use crate::config::Config;
use crate::error_chain;

#[derive(Debug, Args)]
pub(super) struct GroupArgs {
    /// The consumer group, without the configured `group_prefix`.
    #[arg(long)]
    group: String,
    /// The stream.
    pub(super) stream: String,
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
    /// Create the offset store's tables if they are missing (for a PostgreSQL store
    /// whose service may not create tables; every store also creates them on first use).
    Migrate,
    /// Move every partition to its earliest or latest record, or to a time.
    Reset {
        #[command(flatten)]
        target: GroupArgs,
        /// `earliest`, `latest`, or a UTC time such as `2026-11-25T01:00:00Z`.
        #[arg(long)]
        to: String,
    },
}

/// Opens the configured offset store, which must keep positions beyond one process.
async fn durable_store(config: &Config, backend: &AnyBackend) -> Result<AnyOffsetStore, Failure> {
    let store = config
        .open_offset_store(backend)
        .await
        .map_err(|err| Failure::Config(error_chain(&err)))?;
    if !store.is_durable() {
        return Err(Failure::Config(format!(
            "offset_store is {}: its positions live only in the consumer's process",
            config.offset_store_url()
        )));
    }
    Ok(store)
}

/// A group's positions in one stream: where they are kept, under which group name, and
/// the stream's partitions.
pub(super) struct Target {
    pub(super) backend: AnyBackend,
    store: AnyOffsetStore,
    /// The group name positions are kept under: prefixed, and `GROUP@REGION` on Kinesis.
    pub(super) group: String,
    pub(super) partitions: Vec<PartitionInfo>,
}

impl Target {
    /// Opens the backend and the offset store of `config` for `args`.
    pub(super) async fn open(config: &Config, args: &GroupArgs) -> Result<Self, Failure> {
        let backend = connect(config)?;
        let store = durable_store(config, &backend).await?;
        let group = backend.position_group(&format!("{}{}", config.group_prefix, args.group));
        let partitions = describe(&backend, &args.stream).await?;
        Ok(Self {
            backend,
            store,
            group,
            partitions,
        })
    }

    /// The stored position of each partition.
    pub(super) async fn load(&self) -> Result<Vec<Option<Position>>, Failure> {
        let mut found = Vec::with_capacity(self.partitions.len());
        for info in &self.partitions {
            let position = self
                .store
                .load(&self.group, &info.partition)
                .await
                .map_err(|err| {
                    Failure::store(
                        &format!("cannot read the positions of group {:?}", self.group),
                        &err,
                    )
                })?;
            found.push(position);
        }
        Ok(found)
    }

    /// Moves the group to `positions` (forgetting the records marked handled after
    /// them, so that they are handled again) and prints each.
    async fn store(&self, positions: &[(PartitionRef, Position)]) -> Result<(), Failure> {
        self.store
            .reset(&self.group, positions)
            .await
            .map_err(|err| {
                Failure::store(
                    &format!("cannot store the positions of group {:?}", self.group),
                    &err,
                )
            })?;
        for (partition, position) in positions {
            println!("group {}: {partition} set to {position}", self.group);
        }
        Ok(())
    }
}

pub(super) async fn offsets(config: Config, command: OffsetsCommand) -> Result<(), Failure> {
    match command {
        OffsetsCommand::Migrate => {
            let backend = connect(&config)?;
            let store = durable_store(&config, &backend).await?;
            drop(store);
            println!(
                "offset store {}: its tables are ready",
                config.offset_store_url()
            );
        }
        OffsetsCommand::Show { target, json } => {
            let found = Target::open(&config, &target).await?;
            let stored = found.load().await?;
            let mut rows = vec![["PARTITION".to_owned(), "POSITION".to_owned()]];
            for (info, position) in found.partitions.iter().zip(stored) {
                let partition = &info.partition;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "group": found.group,
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
                println!("group {}, stream {}", found.group, target.stream);
                print_table(&rows);
            }
        }
        OffsetsCommand::Set {
            target,
            partition,
            position,
        } => {
            let found = Target::open(&config, &target).await?;
            let Some(info) = found
                .partitions
                .iter()
                .find(|info| *info.partition.partition == *partition)
            else {
                return Err(Failure::Data(format!(
                    "stream {:?} has no partition {partition:?}",
                    target.stream
                )));
            };
            let position = found.backend.parse_position(&position).map_err(|err| {
                Failure::Data(format!(
                    "cannot set {}: {}",
                    info.partition,
                    error_chain(&err)
                ))
            })?;
            found.store(&[(info.partition.clone(), position)]).await?;
        }
        OffsetsCommand::Reset { target, to } => {
            let boundary = match to.as_str() {
                "earliest" => Boundary::Earliest,
                "latest" => Boundary::Latest,
                time => Boundary::Time(parse_time(time).ok_or_else(|| {
                    Failure::Data(format!(
                        "--to {time:?} is not `earliest`, `latest` or a UTC time like 2026-11-25T01:00:00Z"
                    ))
                })?),
            };
            let found = Target::open(&config, &target).await?;
            let stored = found.load().await?;
            let mut new = Vec::new();
            for (info, position) in found.partitions.iter().zip(stored) {
                let at = found
                    .backend
                    .position_at(info, boundary, position.as_ref())
                    .await
                    .map_err(|err| {
                        Failure::backend(&format!("cannot read {}", info.partition), &err)
                    })?;
                match at {
                    Some(at) => new.push((info.partition.clone(), at)),
                    None => println!(
                        "group {}: {} holds no records; left as it is",
                        found.group, info.partition
                    ),
                }
            }
            found.store(&new).await?;
        }
    }
    Ok(())
}
