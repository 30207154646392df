//! Consumers of the embedded log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use logpipe_core::{
    Backend, BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, PartitionRef,
    Position, Record, RecordHeader, StartFrom,
};
use rusqlite::params;

use crate::EmbeddedLog;
use crate::log::{ensure_stream, next_offset, storage_error};

/// Reads every partition of some streams of an [`EmbeddedLog`].
#[derive(Debug)]
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    streams: Vec<Arc<str>>,
    /// Where a partition sought to no position starts.
    start: StartFrom,
    /// The next offset to read in each assigned partition.
    next_offsets: BTreeMap<(Arc<str>, u32), i64>,
    /// Partitions not read until resumed.
    paused: HashSet<(Arc<str>, u32)>,
    assigned: bool,
}

impl EmbeddedLog {
    /// A consumer of `streams` that is assigned every partition of them and starts
    /// each at its oldest record unless sought elsewhere.
    ///
    /// Each consumer reads on its own; two consumers of one stream both read every
    /// record. A stream that does not exist is created with the log's default
    /// partition count.
    pub fn consumer<I, S>(&self, streams: I) -> EmbeddedConsumer
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        EmbeddedConsumer {
            log: self.clone(),
            streams: streams.into_iter().map(Into::into).collect(),
            start: StartFrom::Earliest,
            next_offsets: BTreeMap::new(),
            paused: HashSet::new(),
            assigned: false,
        }
    }
}

/// The embedded log has no consumer groups: every consumer reads every partition, and
/// the group only names where positions are kept.
impl Backend for EmbeddedLog {
    type Consumer = EmbeddedConsumer;

    fn open_consumer(
        &self,
        _group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<EmbeddedConsumer, BackendError> {
        let mut consumer = self.consumer(streams.iter().map(String::as_str));
        consumer.start = start;
        Ok(consumer)
    }
}

impl EmbeddedConsumer {
    async fn assign(&mut self) -> Result<Vec<PartitionRef>, BackendError> {
        let streams = self.streams.clone();
        let default_partitions = self.log.inner.options.partitions;
        let counts = self
            .log
            .inner
            .db
            .call(move |conn| {
                streams
                    .iter()
                    .map(|stream| {
                        Ok((
                            Arc::clone(stream),
                            ensure_stream(conn, stream, default_partitions)?,
                        ))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(storage_error)?;
        let mut partitions = Vec::new();
        for (stream, count) in counts {
            for partition in 0..count {
                self.next_offsets
                    .insert((Arc::clone(&stream), partition), 0);
                partitions.push(PartitionRef::new(
                    Arc::clone(&stream),
                    partition.to_string(),
                ));
            }
        }
        self.assigned = true;
        Ok(partitions)
    }

    async fn read(&self) -> Result<Vec<Record>, BackendError> {
        let cursors: Vec<_> = self
            .next_offsets
            .iter()
            .filter(|(slot, _)| !self.paused.contains(*slot))
            .map(|(slot, next)| (slot.clone(), *next))
            .collect();
        let limit = self.log.inner.options.max_poll_records;
        self.log
            .inner
            .db
            .call(move |conn| {
                let mut records = Vec::new();
                for ((stream, partition), next) in cursors {
                    let mut statement = conn.prepare_cached(
                        "SELECT record_offset, record_key, record_value, headers, timestamp_ms FROM logpipe_records
                         WHERE stream = ?1 AND partition = ?2 AND record_offset >= ?3
                         ORDER BY record_offset LIMIT ?4",
                    )?;
                    let partition_ref = PartitionRef::new(Arc::clone(&stream), partition.to_string());
                    let rows = statement.query_map(params![&*stream, partition, next, limit], |row| {
                        let headers: Option<String> = row.get(3)?;
                        let timestamp_ms: i64 = row.get(4)?;
                        Ok(Record {
                            partition: partition_ref.clone(),
                            position: Position::Offset(row.get(0)?),
                            key: row.get(1)?,
                            value: row.get(2)?,
                            headers: headers
                                .and_then(|text| serde_json::from_str::<Vec<RecordHeader>>(&text).ok())
                                .unwrap_or_default(),
                            timestamp: Some(UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0).unsigned_abs())),
                        })
                    })?;
                    for row in rows {
                        records.push(row?);
                    }
                }
                Ok(records)
            })
            .await
            .map_err(storage_error)
    }
}

impl ConsumerBackend for EmbeddedConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        if !self.assigned {
            return self.assign().await.map(ConsumerEvent::Assigned);
        }
        let poll_interval = Duration::from_millis(self.log.inner.options.poll_interval_ms);
        loop {
            // Register for wake-ups before reading, so a write that lands in between is
            // not missed.
            let written = self.log.inner.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let records = self.read().await?;
            if let Some(last_by_partition) = last_offsets(&records) {
                for ((stream, partition), last) in last_by_partition {
                    self.next_offsets.insert((stream, partition), last + 1);
                }
                return Ok(ConsumerEvent::Records(records));
            }
            tokio::select! {
                () = written => {}
                () = tokio::time::sleep(poll_interval) => {}
            }
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        let slot = self.assigned_slot(partition)?;
        let next = match after {
            None if self.start == StartFrom::Latest => {
                let (stream, number) = (slot.0.to_string(), slot.1);
                self.log
                    .inner
                    .db
                    .call(move |conn| next_offset(conn, &stream, number))
                    .await
                    .map_err(storage_error)?
            }
            None => 0,
            Some(Position::Offset(offset)) => offset + 1,
            Some(Position::Sequence(sequence)) => {
                return Err(BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("the embedded log has offsets, not sequence numbers like {sequence:?}"),
                ));
            }
        };
        self.next_offsets.insert(slot, next);
        Ok(())
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            let slot = self.assigned_slot(partition)?;
            self.paused.insert(slot);
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            let slot = self.assigned_slot(partition)?;
            self.paused.remove(&slot);
        }
        Ok(())
    }
}

impl EmbeddedConsumer {
    /// The key of `partition` among the assigned ones.
    fn assigned_slot(&self, partition: &PartitionRef) -> Result<(Arc<str>, u32), BackendError> {
        partition
            .partition
            .parse::<u32>()
            .ok()
            .map(|number| (Arc::clone(&partition.stream), number))
            .filter(|slot| self.next_offsets.contains_key(slot))
            .ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::NotFound,
                    format!("partition {partition} is not assigned"),
                )
            })
    }
}

/// The last offset read of each partition, or `None` when nothing was read.
fn last_offsets(records: &[Record]) -> Option<HashMap<(Arc<str>, u32), i64>> {
    if records.is_empty() {
        return None;
    }
    let mut last = HashMap::new();
    for record in records {
        if let (Ok(partition), Position::Offset(offset)) =
            (record.partition.partition.parse::<u32>(), &record.position)
        {
            last.insert((Arc::clone(&record.partition.stream), partition), *offset);
        }
    }
    Some(last)
}
