//! `logpipe replay`: sends the records of a range of a stream again, to another stream,
//! with their keys, values and headers unchanged.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::SystemTime;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use logpipe_core::time::parse_time;
use logpipe_core::{Admin, OutgoingRecord, ProducerBackend, RangeBound, RangeRead};

use super::failure::Failure;
use super::ops::connect;
use crate::config::Config;
use logpipe_core::send_all;

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// The stream to read.
    stream: String,
    /// The first record: an offset (in every partition; Kafka and the embedded log), a
    /// UTC time such as `2026-11-25T01:00:00Z`, or `PARTITION:POSITION` to replay one
    /// partition from a record (Kinesis: `SHARD:SEQUENCE`).
    #[arg(long)]
    from: String,
    /// Where to stop, not included, in the same forms (default: the end of the stream
    /// when the replay starts).
    #[arg(long)]
    until: Option<String>,
    /// The stream to write to.
    #[arg(long)]
    to: String,
}

/// A bound as the operator writes it: an offset, a time, or `PARTITION:POSITION`.
fn bound(option: &str, text: &str) -> Result<RangeBound, Failure> {
    if let Ok(offset) = text.parse::<i64>() {
        return Ok(RangeBound::Offset(offset));
    }
    if let Some(time) = parse_time(text) {
        return Ok(RangeBound::Time(time));
    }
    match text.rsplit_once(':') {
        Some((partition, position)) if !partition.is_empty() && !position.is_empty() => {
            Ok(RangeBound::Record {
                partition: partition.to_owned(),
                position: position.to_owned(),
            })
        }
        _ => Err(Failure::Data(format!(
            "{option} {text:?} is neither an offset, a UTC time like 2026-11-25T01:00:00Z nor PARTITION:POSITION"
        ))),
    }
}

/// A progress bar on stderr when it is a terminal, else nothing.
fn progress(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} records ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} records ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

pub(super) async fn replay(config: Config, args: ReplayArgs) -> Result<(), Failure> {
    let from = bound("--from", &args.from)?;
    // Records written after the replay starts are not part of it.
    let until = match &args.until {
        Some(text) => bound("--until", text)?,
        None => RangeBound::Time(SystemTime::now()),
    };
    if args.to == args.stream {
        return Err(Failure::Data(
            "--to names the stream being read: a replay into itself would never end".to_owned(),
        ));
    }
    let backend = connect(&config)?;
    let mut range = backend
        .read_range(&args.stream, &from, &until)
        .await
        .map_err(|err| Failure::given(&format!("cannot replay {:?}", args.stream), &err))?;
    let to: Arc<str> = args.to.as_str().into();
    let bar = progress(range.total());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut sent = 0_u64;
    loop {
        let batch = tokio::select! {
            batch = range.next_batch() => batch,
            _ = &mut interrupted => {
                bar.abandon();
                return Err(Failure::Failed(format!("interrupted after {sent} records")));
            }
        };
        let batch = batch
            .map_err(|err| Failure::backend(&format!("cannot read {:?}", args.stream), &err))?;
        let Some(records) = batch else { break };
        let count = records.len() as u64;
        let records: Vec<_> = records
            .into_iter()
            .map(|record| OutgoingRecord {
                stream: Arc::clone(&to),
                key: record.key.map(Vec::from),
                value: record.value.into(),
                headers: record.headers,
            })
            .collect();
        send_all(&backend, records)
            .await
            .map_err(|err| Failure::backend(&format!("cannot write to {to:?}"), &err))?;
        sent += count;
        bar.inc(count);
    }
    backend
        .flush()
        .await
        .map_err(|err| Failure::backend(&format!("cannot write to {to:?}"), &err))?;
    bar.finish_and_clear();
    eprintln!(
        "logpipe: replayed {sent} records from {} to {to}",
        args.stream
    );
    Ok(())
}
