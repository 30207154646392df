//! The embedded backend: a durable, partitioned log in one SQLite file.
//!
//! `sqlite://PATH` opens (or creates) the log in a file that a producer process and a
//! consumer process can use at the same time; `memory://` keeps it in memory, for tests.
//! Streams are created on first use with the log's default partition count.
//!
//! ```
//! use logpipe::embedded::EmbeddedLog;
//! use logpipe::backend::{ConsumerBackend, ConsumerEvent, OutgoingRecord, ProducerBackend};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let log = EmbeddedLog::open_in_memory()?;
//! let delivery = log
//!     .send(OutgoingRecord { stream: "people".into(), key: Some(b"k".to_vec()), value: b"v".to_vec(), headers: vec![] })
//!     .await?;
//!
//! let mut consumer = log.consumer(["people"]);
//! let ConsumerEvent::Assigned(partitions) = consumer.next_event().await? else { panic!() };
//! for partition in &partitions {
//!     consumer.seek(partition, None).await?;
//! }
//! let ConsumerEvent::Records(records) = consumer.next_event().await? else { panic!() };
//! assert_eq!(records[0].value, b"v");
//! assert_eq!(records[0].partition, delivery.partition);
//! # Ok::<(), logpipe::backend::BackendError>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use tokio::sync::{Notify, oneshot};

use crate::backend::{
    BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery, OutgoingRecord,
    PartitionRef, Position, ProducerBackend, Record, RecordHeader,
};
use crate::hash::fnv1a;
use crate::sqlite::SqliteDb;

mod admin;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logpipe_streams (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS logpipe_records (
    stream TEXT NOT NULL,
    partition INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    record_key BLOB,
    record_value BLOB NOT NULL,
    headers TEXT,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, partition, record_offset)
) WITHOUT ROWID;
";

/// Settings of an embedded log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedOptions {
    /// Partitions of a stream created on first use. Default 4.
    pub partitions: u32,
    /// How often a consumer looks for records written by other processes, in
    /// milliseconds (records from this process wake it at once). Default 100.
    pub poll_interval_ms: u64,
    /// Most records a consumer reads from one partition at a time. Default 500.
    pub max_poll_records: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            partitions: 4,
            poll_interval_ms: 100,
            max_poll_records: 500,
        }
    }
}

/// A partitioned log in SQLite, usable as producer and consumer backend. Clones share it.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: SqliteDb,
    options: EmbeddedOptions,
    /// Sends waiting to be written; one blocking task writes them in batches.
    queue: Mutex<WriteQueue>,
    /// Wakes consumers in this process when records were written.
    written: Notify,
    /// Spreads keyless records over partitions.
    round_robin: AtomicU64,
}

#[derive(Default)]
struct WriteQueue {
    pending: Vec<PendingWrite>,
    writing: bool,
}

enum PendingWrite {
    Record(
        OutgoingRecord,
        oneshot::Sender<Result<Delivery, BackendError>>,
    ),
    Flush(oneshot::Sender<()>),
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn storage_error(err: rusqlite::Error) -> BackendError {
    let retriable = matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let error =
        BackendError::new(BackendErrorKind::Storage, "embedded log SQLite error").with_source(err);
    if retriable { error.retriable() } else { error }
}

impl EmbeddedLog {
    /// Opens the log in the SQLite file at `path`, creating it if needed, with default
    /// options.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Storage` when the file cannot be opened or set up.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens the log in the SQLite file at `path` with `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](EmbeddedLog::open).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, BackendError> {
        let db = SqliteDb::open(path.as_ref()).map_err(storage_error)?;
        Self::init(db, options)
    }

    /// A log in memory, shared by the clones of the returned handle only.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Storage` when SQLite cannot create it.
    pub fn open_in_memory() -> Result<Self, BackendError> {
        Self::open_in_memory_with(EmbeddedOptions::default())
    }

    /// A log in memory with `options`.
    ///
    /// # Errors
    ///
    /// As [`open_in_memory`](EmbeddedLog::open_in_memory).
    pub fn open_in_memory_with(options: EmbeddedOptions) -> Result<Self, BackendError> {
        Self::init(SqliteDb::open_in_memory().map_err(storage_error)?, options)
    }

    fn init(db: SqliteDb, options: EmbeddedOptions) -> Result<Self, BackendError> {
        if options.partitions == 0 {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                "a stream needs at least one partition",
            ));
        }
        db.call_blocking(|conn| conn.execute_batch(SCHEMA))
            .map_err(storage_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                options,
                queue: Mutex::default(),
                written: Notify::new(),
                round_robin: AtomicU64::new(0),
            }),
        })
    }

    /// Creates `stream` with `partitions` partitions, or returns the partition count of
    /// the existing stream.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Storage` when SQLite fails, or `Rejected` for zero
    /// partitions.
    pub async fn create_stream(&self, stream: &str, partitions: u32) -> Result<u32, BackendError> {
        if partitions == 0 {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                "a stream needs at least one partition",
            ));
        }
        let stream = stream.to_owned();
        self.inner
            .db
            .call(move |conn| ensure_stream(conn, &stream, partitions))
            .await
            .map_err(storage_error)
    }

    /// A consumer of `streams` that is assigned every partition of them.
    ///
    /// Each consumer reads on its own; two consumers of one stream both read every record.
    pub fn consumer<I, S>(&self, streams: I) -> EmbeddedConsumer
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        EmbeddedConsumer {
            log: self.clone(),
            streams: streams.into_iter().map(Into::into).collect(),
            next_offsets: BTreeMap::new(),
            assigned: false,
        }
    }

    /// Writes everything queued, in one transaction a batch, until the queue is empty.
    fn drain_queue(&self) {
        loop {
            let batch = {
                let mut queue = self
                    .inner
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let records: Vec<&OutgoingRecord> = batch
                .iter()
                .filter_map(|write| match write {
                    PendingWrite::Record(record, _) => Some(record),
                    PendingWrite::Flush(_) => None,
                })
                .collect();
            let written = self.inner.db.call_blocking(|conn| {
                write_batch(
                    conn,
                    &records,
                    self.inner.options.partitions,
                    &self.inner.round_robin,
                )
            });
            let mut deliveries = match written {
                Ok(deliveries) => deliveries
                    .into_iter()
                    .map(Ok)
                    .collect::<Vec<_>>()
                    .into_iter(),
                Err(err) => {
                    let shared = Arc::new(err);
                    let failed = || {
                        let error = BackendError::new(
                            BackendErrorKind::Storage,
                            "the embedded log could not write a batch",
                        )
                        .with_source(SharedError(Arc::clone(&shared)));
                        Err(error)
                    };
                    (0..records.len())
                        .map(|_| failed())
                        .collect::<Vec<_>>()
                        .into_iter()
                }
            };
            for write in batch {
                match write {
                    PendingWrite::Record(_, reply) => {
                        let outcome = deliveries.next().expect("one outcome per record");
                        // The sender may have given up waiting; the record is written anyway.
                        let _ = reply.send(outcome);
                    }
                    PendingWrite::Flush(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
            self.inner.written.notify_waiters();
        }
    }

    fn enqueue(&self, write: PendingWrite) {
        let start_writer = {
            let mut queue = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(write);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            let log = self.clone();
            tokio::task::spawn_blocking(move || log.drain_queue());
        }
    }
}

/// A SQLite error shared by every record of a failed batch.
#[derive(Debug)]
struct SharedError(Arc<rusqlite::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ensure_stream(conn: &Connection, stream: &str, partitions: u32) -> rusqlite::Result<u32> {
    conn.execute(
        "INSERT OR IGNORE INTO logpipe_streams (name, partitions) VALUES (?1, ?2)",
        params![stream, partitions],
    )?;
    conn.query_row(
        "SELECT partitions FROM logpipe_streams WHERE name = ?1",
        [stream],
        |row| row.get(0),
    )
}

fn write_batch(
    conn: &mut Connection,
    records: &[&OutgoingRecord],
    default_partitions: u32,
    round_robin: &AtomicU64,
) -> rusqlite::Result<Vec<Delivery>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut partition_counts: HashMap<Arc<str>, u32> = HashMap::new();
    let mut next_offsets: HashMap<(Arc<str>, u32), i64> = HashMap::new();
    let mut deliveries = Vec::with_capacity(records.len());
    let timestamp = now_ms();
    for record in records {
        let partitions = match partition_counts.get(&record.stream) {
            Some(count) => *count,
            None => {
                let count = ensure_stream(&tx, &record.stream, default_partitions)?;
                partition_counts.insert(Arc::clone(&record.stream), count);
                count
            }
        };
        let partition = match record.key.as_deref() {
            Some(key) if !key.is_empty() => fnv1a(key) % u64::from(partitions),
            _ => round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions),
        } as u32;
        let slot = (Arc::clone(&record.stream), partition);
        let offset = match next_offsets.get(&slot) {
            Some(offset) => *offset,
            None => tx
                .prepare_cached(
                    "SELECT MAX(record_offset) FROM logpipe_records WHERE stream = ?1 AND partition = ?2",
                )?
                .query_row(params![&*record.stream, partition], |row| row.get::<_, Option<i64>>(0))?
                .map_or(0, |last| last + 1),
        };
        next_offsets.insert(slot, offset + 1);
        let headers = if record.headers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&record.headers).expect("headers serialize"))
        };
        tx.prepare_cached(
            "INSERT INTO logpipe_records
                 (stream, partition, record_offset, record_key, record_value, headers, timestamp_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            &*record.stream,
            partition,
            offset,
            record.key,
            record.value,
            headers,
            timestamp
        ])?;
        deliveries.push(Delivery {
            partition: PartitionRef::new(Arc::clone(&record.stream), partition.to_string()),
            position: Position::Offset(offset),
        });
    }
    tx.commit()?;
    Ok(deliveries)
}

impl ProducerBackend for EmbeddedLog {
    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, BackendError> {
        let (reply, delivered) = oneshot::channel();
        self.enqueue(PendingWrite::Record(record, reply));
        delivered.await.map_err(|_| {
            BackendError::new(BackendErrorKind::Storage, "the embedded log writer stopped")
        })?
    }

    async fn flush(&self) -> Result<(), BackendError> {
        let (reply, flushed) = oneshot::channel();
        self.enqueue(PendingWrite::Flush(reply));
        flushed.await.map_err(|_| {
            BackendError::new(BackendErrorKind::Storage, "the embedded log writer stopped")
        })
    }
}

/// Reads every partition of some streams of an [`EmbeddedLog`].
#[derive(Debug)]
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    streams: Vec<Arc<str>>,
    /// The next offset to read in each assigned partition.
    next_offsets: BTreeMap<(Arc<str>, u32), i64>,
    assigned: bool,
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
        let slot = partition
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
            })?;
        let next = match after {
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
