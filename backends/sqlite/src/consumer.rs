//! Consumers of the embedded log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use logpipe_core::leases::{LeaseChanges, LeaseFences, LeaseKeeper, LeaseUnit, Leaser};
use logpipe_core::{
    Backend, BackendError, BackendErrorKind, Bytes, ConsumerBackend, ConsumerEvent, PartitionRef,
    Position, Record, RecordHeader, StartFrom,
};
use rusqlite::{OptionalExtension, params};

use crate::log::{ensure_stream, next_offset, storage_error};
use crate::{EmbeddedLog, SqliteLeaseStore};

/// Reads the partitions of some streams of an [`EmbeddedLog`]: every partition
/// ([`EmbeddedLog::consumer`]), or those its group's leases give it
/// ([`Backend::open_consumer`]).
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
    /// The group's leases, for a consumer of a group.
    leases: Option<LeaseKeeper>,
    /// Events of lease changes not returned yet.
    events: VecDeque<ConsumerEvent>,
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
            leases: None,
            events: VecDeque::new(),
        }
    }

    /// The leases of the consumer groups of this log, in its own file (the table
    /// `logpipe_leases`).
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Storage` when the table cannot be created.
    pub fn leases(&self) -> Result<SqliteLeaseStore, BackendError> {
        SqliteLeaseStore::init(self.inner.db.clone()).map_err(|err| {
            BackendError::new(BackendErrorKind::Storage, "cannot set up the leases")
                .with_source(err)
        })
    }
}

/// A consumer of a group shares the partitions of its streams with the other consumers
/// of the group, in this process or others using the same file, through leases in the
/// file ([`EmbeddedLog::leases`]): each partition is read by one of them at a time, and
/// they converge to an even split. A consumer that stops gives its leases up; those of a
/// process that died are taken once they expire
/// ([`lease_duration_ms`](crate::EmbeddedOptions::lease_duration_ms)). A group named
/// `""` reads every partition, without leases.
///
/// The leases are renewed on a task of their own, started by the first
/// [`next_event`](ConsumerBackend::next_event).
impl Backend for EmbeddedLog {
    type Consumer = EmbeddedConsumer;

    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<EmbeddedConsumer, BackendError> {
        for stream in streams {
            logpipe_core::check_stream_name(stream)?;
        }
        let mut consumer = self.consumer(streams.iter().map(String::as_str));
        consumer.start = start;
        if !group.is_empty() {
            let options = self.inner.options.lease_options().in_process(group);
            let leaser = Leaser::new(self.leases()?, group, options);
            let log = self.clone();
            let streams = consumer.streams.clone();
            // Streams are created once; later rounds only read (a write would wait for
            // the file's lock, which handlers and producers hold often).
            let mut created = false;
            consumer.leases = Some(LeaseKeeper::new(leaser, move || {
                let (log, streams, create) = (log.clone(), streams.clone(), !created);
                created = true;
                async move {
                    let partitions = log.partitions_of(streams, create).await?;
                    Ok(partitions.into_iter().map(LeaseUnit::new).collect())
                }
            }));
        }
        Ok(consumer)
    }
}

impl EmbeddedLog {
    /// Every partition of `streams`; with `create`, the streams that do not exist yet
    /// are created first, else they have none.
    async fn partitions_of(
        &self,
        streams: Vec<Arc<str>>,
        create: bool,
    ) -> Result<Vec<PartitionRef>, BackendError> {
        let default_partitions = self.inner.options.partitions;
        let counts = self
            .inner
            .db
            .call(move |conn| {
                streams
                    .iter()
                    .map(|stream| {
                        let count = if create {
                            ensure_stream(conn, stream, default_partitions)?
                        } else {
                            conn.query_row(
                                "SELECT partitions FROM logpipe_streams WHERE name = ?1",
                                [&**stream],
                                |row| row.get(0),
                            )
                            .optional()?
                            .unwrap_or(0)
                        };
                        Ok((Arc::clone(stream), count))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(storage_error)?;
        Ok(counts
            .into_iter()
            .flat_map(|(stream, count)| {
                (0..count).map(move |n| PartitionRef::new(Arc::clone(&stream), n.to_string()))
            })
            .collect())
    }
}

impl EmbeddedConsumer {
    async fn assign(&mut self) -> Result<Vec<PartitionRef>, BackendError> {
        let partitions = self.log.partitions_of(self.streams.clone(), true).await?;
        for partition in &partitions {
            self.start_reading(partition);
        }
        self.assigned = true;
        Ok(partitions)
    }

    fn start_reading(&mut self, partition: &PartitionRef) {
        if let Ok(number) = partition.partition.parse::<u32>() {
            self.next_offsets
                .insert((Arc::clone(&partition.stream), number), 0);
        }
    }

    fn stop_reading(&mut self, partition: &PartitionRef) {
        if let Ok(number) = partition.partition.parse::<u32>() {
            let slot = (Arc::clone(&partition.stream), number);
            self.next_offsets.remove(&slot);
            self.paused.remove(&slot);
        }
    }

    /// Applies lease changes to what is read, and queues their events.
    fn note_lease_changes(&mut self, changes: LeaseChanges) {
        let first = !self.assigned;
        self.assigned = true;
        for partition in &changes.lost {
            self.stop_reading(partition);
        }
        for partition in &changes.taken {
            self.start_reading(partition);
        }
        changes.queue_events(&mut self.events, first);
    }

    async fn read(&self) -> Result<Vec<Record>, BackendError> {
        let cursors: Vec<_> = self
            .next_offsets
            .iter()
            .filter(|(slot, _)| !self.paused.contains(*slot))
            .filter(|((stream, number), _)| {
                self.leases.as_ref().is_none_or(|leases| {
                    leases.holds(&PartitionRef::new(Arc::clone(stream), number.to_string()))
                })
            })
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
                            key: row.get::<_, Option<Vec<u8>>>(1)?.map(Bytes::from),
                            value: row.get::<_, Vec<u8>>(2)?.into(),
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
        match self.leases.as_mut() {
            Some(leases) => leases.start(),
            None if !self.assigned => return self.assign().await.map(ConsumerEvent::Assigned),
            None => {}
        }
        let poll_interval = Duration::from_millis(self.log.inner.options.poll_interval_ms);
        loop {
            while let Some(changes) = self.leases.as_mut().and_then(LeaseKeeper::try_changes) {
                self.note_lease_changes(changes);
            }
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            // Register for wake-ups before reading, so a write that lands in between is
            // not missed.
            let inner = Arc::clone(&self.log.inner);
            let written = inner.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let records = self.read().await?;
            if let Some(last_by_partition) = last_offsets(&records) {
                for ((stream, partition), last) in last_by_partition {
                    self.next_offsets.insert((stream, partition), last + 1);
                }
                return Ok(ConsumerEvent::Records(records));
            }
            let lease_changes = async {
                match self.leases.as_mut() {
                    Some(leases) => leases.next_changes().await,
                    None => std::future::pending().await,
                }
            };
            let changes = tokio::select! {
                () = written => None,
                () = tokio::time::sleep(poll_interval) => None,
                Some(changes) = lease_changes => Some(changes),
            };
            if let Some(changes) = changes {
                self.note_lease_changes(changes);
            }
        }
    }

    fn lease_fences(&self) -> Option<LeaseFences> {
        self.leases.as_ref().map(LeaseKeeper::fences)
    }

    async fn close(&mut self) {
        if let Some(leases) = self.leases.as_mut() {
            leases.close().await;
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        let Some(slot) = self.slot_unless_lost(partition)? else {
            return Ok(());
        };
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
            if let Some(slot) = self.slot_unless_lost(partition)? {
                self.paused.insert(slot);
            }
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            if let Some(slot) = self.slot_unless_lost(partition)? {
                self.paused.remove(&slot);
            }
        }
        Ok(())
    }
}

impl EmbeddedConsumer {
    /// The key of `partition` among the assigned ones, or `None` for a partition whose
    /// lease was lost since it was assigned (a `Lost` event for it is on its way, and
    /// nothing of it is read meanwhile).
    fn slot_unless_lost(
        &self,
        partition: &PartitionRef,
    ) -> Result<Option<(Arc<str>, u32)>, BackendError> {
        match self.assigned_slot(partition) {
            Ok(slot) => Ok(Some(slot)),
            Err(_) if self.leases.is_some() => Ok(None),
            Err(err) => Err(err),
        }
    }

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
