//! `logpipe replay`: sends the records of a range of a stream again, to another stream,
//! with their keys, values and headers unchanged.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::SystemTime;

use indicatif::{ProgressBar, ProgressStyle};

use super::ops::{Failure, InOrder, ReplayArgs, connect, describe, parse_time, pause_if_retriable};
use crate::admin::{PartitionInfo, millis};
use crate::any::AnyBackend;
use crate::backend::{ConsumerBackend, ConsumerEvent, OutgoingRecord, PartitionRef, Position};
use crate::config::Config;

/// A bound of the range: an offset in every partition, or a time.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Offset(i64),
    Time(SystemTime),
}

/// What to replay: the partitions of the stream read, the bounds, the stream written.
struct Range<'a> {
    backend: &'a AnyBackend,
    partitions: &'a [PartitionInfo],
    from: Bound,
    until: Bound,
    to: &'a Arc<str>,
}

fn bound(option: &str, text: &str) -> Result<Bound, Failure> {
    if let Ok(offset) = text.parse::<i64>() {
        return Ok(Bound::Offset(offset));
    }
    parse_time(text).map(Bound::Time).ok_or_else(|| {
        Failure::Data(format!(
            "{option} {text:?} is neither an offset nor a UTC time like 2026-11-25T01:00:00Z"
        ))
    })
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
        None => Bound::Time(SystemTime::now()),
    };
    if args.to == args.stream {
        return Err(Failure::Data(
            "--to names the stream being read: a replay into itself would never end".to_owned(),
        ));
    }
    let backend = connect(&config)?;
    let partitions = describe(&backend, &args.stream).await?;
    let to: Arc<str> = args.to.as_str().into();
    let range = Range {
        backend: &backend,
        partitions: &partitions,
        from,
        until,
        to: &to,
    };
    let sent = match &backend {
        #[cfg(feature = "kinesis")]
        AnyBackend::Kinesis(_) => replay_kinesis(range).await?,
        _ => replay_offsets(range, &args.stream).await?,
    };
    eprintln!(
        "logpipe: replayed {sent} records from {} to {to}",
        args.stream
    );
    Ok(())
}

/// The offset a bound falls at in each partition.
async fn offsets_of(
    backend: &AnyBackend,
    stream: &str,
    partitions: &[PartitionInfo],
    bound: Bound,
) -> Result<Vec<i64>, Failure> {
    let ends = partitions.iter().map(|p| p.end_offset.unwrap_or(0));
    match bound {
        Bound::Offset(offset) => Ok(ends.map(|end| offset.min(end)).collect()),
        Bound::Time(time) => {
            let found = backend
                .positions_at(stream, time)
                .await
                .map_err(|err| Failure::backend("cannot find positions by time", &err))?;
            Ok(partitions
                .iter()
                .zip(ends)
                .map(|(p, end)| {
                    found
                        .iter()
                        .find(|f| f.partition == p.partition)
                        .and_then(|f| f.offset)
                        .unwrap_or(end)
                })
                .collect())
        }
    }
}

/// Kafka and the embedded log: each partition from its start offset to its end offset.
async fn replay_offsets(range: Range<'_>, stream: &str) -> Result<u64, Failure> {
    let Range {
        backend,
        partitions,
        from,
        until,
        to,
    } = range;
    let starts = offsets_of(backend, stream, partitions, from).await?;
    let ends = offsets_of(backend, stream, partitions, until).await?;
    let mut ranges: HashMap<PartitionRef, (i64, i64)> = HashMap::new();
    for ((info, start), end) in partitions.iter().zip(starts).zip(ends) {
        let first = match &info.earliest {
            Some(Position::Offset(first)) => *first,
            _ => 0,
        };
        ranges.insert(info.partition.clone(), (start.max(first), end));
    }
    let mut unfinished: Vec<PartitionRef> = ranges
        .iter()
        .filter(|(_, (start, end))| start < end)
        .map(|(partition, _)| partition.clone())
        .collect();
    let total = ranges
        .values()
        .map(|(start, end)| u64::try_from(end - start).unwrap_or(0))
        .sum();
    let bar = progress(Some(total));
    let mut sender = InOrder::new(backend);
    // A group of its own, whose positions are never stored.
    let group = format!(
        "logpipe-replay-{}-{}",
        std::process::id(),
        millis(SystemTime::now())
    );
    let mut consumer = backend
        .consumer(&group, &[stream.to_owned()])
        .map_err(|err| Failure::backend(&format!("cannot read {stream:?}"), &err))?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !unfinished.is_empty() {
        let event = tokio::select! {
            event = consumer.next_event() => event,
            _ = &mut interrupted => {
                bar.abandon();
                return Err(Failure::Failed(format!("interrupted after {} records", sender.sent)));
            }
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                pause_if_retriable(stream, err).await?;
                continue;
            }
        };
        match event {
            ConsumerEvent::Assigned(assigned) => {
                for partition in assigned {
                    let (start, _) = ranges.get(&partition).copied().unwrap_or((0, 0));
                    let after = Position::Offset(start - 1);
                    consumer
                        .seek(&partition, Some(&after))
                        .await
                        .map_err(|err| {
                            Failure::backend(&format!("cannot read {partition}"), &err)
                        })?;
                }
            }
            ConsumerEvent::Records(records) => {
                let mut batch = Vec::new();
                for record in records {
                    let Position::Offset(offset) = record.position else {
                        continue;
                    };
                    let Some((_, end)) = ranges.get(&record.partition) else {
                        continue;
                    };
                    if offset + 1 >= *end {
                        unfinished.retain(|p| *p != record.partition);
                    }
                    if offset < *end {
                        batch.push(OutgoingRecord {
                            stream: Arc::clone(to),
                            key: record.key,
                            value: record.value,
                            headers: record.headers,
                        });
                    }
                }
                send_batch(&mut sender, &bar, to, batch).await?;
            }
            _ => {}
        }
    }
    flush(backend, to).await?;
    bar.finish_and_clear();
    Ok(sender.sent)
}

/// Writes `batch` to `to` and moves the progress bar on.
async fn send_batch(
    sender: &mut InOrder<'_>,
    bar: &ProgressBar,
    to: &str,
    batch: Vec<OutgoingRecord>,
) -> Result<(), Failure> {
    let count = batch.len() as u64;
    sender
        .send(batch)
        .await
        .map_err(|err| Failure::backend(&format!("cannot write to {to:?}"), &err))?;
    bar.inc(count);
    Ok(())
}

async fn flush(backend: &AnyBackend, to: &str) -> Result<(), Failure> {
    use crate::backend::ProducerBackend;
    backend
        .flush()
        .await
        .map_err(|err| Failure::backend(&format!("cannot write to {to:?}"), &err))
}

/// Kinesis: each shard from a time (its `AT_TIMESTAMP` iterator) until a time or its
/// newest record.
#[cfg(feature = "kinesis")]
async fn replay_kinesis(range: Range<'_>) -> Result<u64, Failure> {
    let (backend, partitions, to) = (range.backend, range.partitions, range.to);
    use logpipe_kinesis::StartPosition;

    let AnyBackend::Kinesis(kinesis) = backend else {
        return Ok(0);
    };
    let (Bound::Time(from), Bound::Time(until)) = (range.from, range.until) else {
        return Err(Failure::Data(
            "Kinesis has no offsets: --from and --until take UTC times".to_owned(),
        ));
    };
    let api = kinesis.api();
    let failed =
        |what: String| move |err| Failure::backend(&what, &crate::kinesis::backend_error(err));
    let bar = progress(None);
    let mut sender = InOrder::new(backend);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Parents come before their children in shard-id order.
    for info in partitions {
        let shard = &info.partition;
        let mut iterator = Some(
            api.get_shard_iterator(
                shard.stream.to_string(),
                shard.partition.to_string(),
                StartPosition::AtTimestamp(from),
            )
            .await
            .map_err(failed(format!("cannot read {shard}")))?,
        );
        while let Some(current) = iterator.take() {
            let page = tokio::select! {
                page = api.get_records(current, 10_000) => page,
                _ = &mut interrupted => {
                    bar.abandon();
                    return Err(Failure::Failed(format!("interrupted after {} records", sender.sent)));
                }
            };
            let page = page.map_err(failed(format!("cannot read {shard}")))?;
            let mut batch = Vec::new();
            let mut reached_end = page.millis_behind_latest() == Some(0);
            for record in page.records() {
                let arrival = record
                    .approximate_arrival_timestamp()
                    .and_then(|at| SystemTime::try_from(*at).ok());
                if arrival.is_some_and(|at| at >= until) {
                    reached_end = true;
                    break;
                }
                batch.push(OutgoingRecord {
                    stream: Arc::clone(to),
                    key: record.partition_key().map(|key| key.as_bytes().to_vec()),
                    value: record.data().as_ref().to_vec(),
                    headers: Vec::new(),
                });
            }
            send_batch(&mut sender, &bar, to, batch).await?;
            if !reached_end {
                iterator = page.next_shard_iterator().map(str::to_owned);
            }
        }
    }
    flush(backend, to).await?;
    bar.finish_and_clear();
    Ok(sender.sent)
}
