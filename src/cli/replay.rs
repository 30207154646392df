//! `logpipe replay`: sends the records of a range of a stream again, to another stream,
//! with their keys, values and headers unchanged.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::SystemTime;

use indicatif::{ProgressBar, ProgressStyle};

use super::ops::{Failure, InOrder, ReplayArgs, connect, describe, pause_if_retriable};
use crate::admin::{PartitionInfo, millis, parse_time};
use crate::any::AnyBackend;
use crate::backend::{ConsumerBackend, ConsumerEvent, OutgoingRecord, PartitionRef, Position};
use crate::config::Config;

/// A bound of the range: an offset in every partition, a time, or a position in one
/// partition (`PARTITION:POSITION`; on Kinesis a shard id and a sequence number).
#[derive(Debug, Clone)]
enum Bound {
    Offset(i64),
    Time(SystemTime),
    In { partition: String, position: String },
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
    if let Some(time) = parse_time(text) {
        return Ok(Bound::Time(time));
    }
    match text.rsplit_once(':') {
        Some((partition, position)) if !partition.is_empty() && !position.is_empty() => {
            Ok(Bound::In {
                partition: partition.to_owned(),
                position: position.to_owned(),
            })
        }
        _ => Err(Failure::Data(format!(
            "{option} {text:?} is neither an offset, a UTC time like 2026-11-25T01:00:00Z nor PARTITION:POSITION"
        ))),
    }
}

/// The partitions a range covers: all, or the one its bounds name.
fn covered<'a>(
    partitions: &'a [PartitionInfo],
    from: &Bound,
    until: &Bound,
) -> Result<Vec<&'a PartitionInfo>, Failure> {
    let named = [from, until].into_iter().filter_map(|bound| match bound {
        Bound::In { partition, .. } => Some(partition.as_str()),
        _ => None,
    });
    let mut only = None;
    for partition in named {
        if only.is_some_and(|other| other != partition) {
            return Err(Failure::Data(format!(
                "--from and --until name two partitions, {} and {partition}: a range is in one",
                only.unwrap_or_default()
            )));
        }
        only = Some(partition);
    }
    let Some(only) = only else {
        return Ok(partitions.iter().collect());
    };
    match partitions.iter().find(|p| *p.partition.partition == *only) {
        Some(info) => Ok(vec![info]),
        None => Err(Failure::Data(format!(
            "the stream has no partition {only:?} (see `logpipe streams describe`)"
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
        None => Bound::Time(SystemTime::now()),
    };
    if args.to == args.stream {
        return Err(Failure::Data(
            "--to names the stream being read: a replay into itself would never end".to_owned(),
        ));
    }
    let backend = connect(&config)?;
    let partitions = describe(&backend, &args.stream).await?;
    let partitions: Vec<PartitionInfo> = covered(&partitions, &from, &until)?
        .into_iter()
        .cloned()
        .collect();
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
    bound: &Bound,
) -> Result<Vec<i64>, Failure> {
    let ends = partitions.iter().map(|p| p.end_offset.unwrap_or(0));
    match bound {
        Bound::Offset(offset) => Ok(ends.map(|end| (*offset).min(end)).collect()),
        Bound::In { position, .. } => {
            let offset: i64 = position
                .parse()
                .map_err(|_| Failure::Data(format!("{position:?} is not an offset")))?;
            Ok(ends.map(|end| offset.min(end)).collect())
        }
        Bound::Time(time) => {
            let found = backend
                .positions_at(stream, *time)
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
    let starts = offsets_of(backend, stream, partitions, &from).await?;
    let ends = offsets_of(backend, stream, partitions, &until).await?;
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

/// A Kinesis sequence number of a `SHARD:SEQUENCE` bound.
#[cfg(feature = "kinesis")]
fn sequence_number(position: &str) -> Result<&str, Failure> {
    if position.bytes().all(|b| b.is_ascii_digit()) {
        Ok(position)
    } else {
        Err(Failure::Data(format!(
            "{position:?} is not a Kinesis sequence number"
        )))
    }
}

/// Whether sequence number `a` comes at or after `b` in their shard (both are decimal
/// numbers of up to 128 digits).
#[cfg(feature = "kinesis")]
fn at_or_after(a: &str, b: &str) -> bool {
    (a.len(), a) >= (b.len(), b)
}

/// Kinesis: each shard from a time (its `AT_TIMESTAMP` iterator), or one shard from a
/// record (`AT_SEQUENCE_NUMBER`), until a time, a record or its newest record.
#[cfg(feature = "kinesis")]
async fn replay_kinesis(range: Range<'_>) -> Result<u64, Failure> {
    let (backend, partitions, to) = (range.backend, range.partitions, range.to);
    use logpipe_kinesis::StartPosition;

    let AnyBackend::Kinesis(kinesis) = backend else {
        return Ok(0);
    };
    let no_offsets = || {
        Failure::Data(
            "Kinesis has no offsets: --from and --until take a UTC time, or SHARD:SEQUENCE \
             for a record of one shard (such as shardId-000000000000:4968...)"
                .to_owned(),
        )
    };
    let start = match &range.from {
        Bound::Time(from) => StartPosition::AtTimestamp(*from),
        Bound::In { position, .. } => {
            StartPosition::AtSequenceNumber(sequence_number(position)?.to_owned())
        }
        Bound::Offset(_) => return Err(no_offsets()),
    };
    let past_end: Box<dyn Fn(&logpipe_kinesis::sdk::types::Record) -> bool> = match &range.until {
        Bound::Time(until) => {
            let until = *until;
            Box::new(move |record| {
                record
                    .approximate_arrival_timestamp()
                    .and_then(|at| SystemTime::try_from(*at).ok())
                    .is_some_and(|at| at >= until)
            })
        }
        Bound::In { position, .. } => {
            let until = sequence_number(position)?.to_owned();
            Box::new(move |record| at_or_after(record.sequence_number(), &until))
        }
        Bound::Offset(_) => return Err(no_offsets()),
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
                start.clone(),
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
                if past_end(record) {
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
