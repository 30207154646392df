//! The log: streams of partitioned records in SQLite tables, written in batches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use logpipe_core::hash::fnv1a;
use logpipe_core::time::millis;
use logpipe_core::{
    BackendError, BackendErrorKind, Delivery, DeliveryFuture, OutgoingRecord, PartitionRef,
    Position, ProducerBackend,
};
use rusqlite::{Connection, params};
use tokio::sync::{Notify, oneshot};

use crate::EmbeddedOptions;
use crate::db::SqliteDb;

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

/// A partitioned log in SQLite, usable as producer and consumer backend. Clones share it.
#[derive(Clone)]
pub struct EmbeddedLog {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: SqliteDb,
    pub(crate) options: EmbeddedOptions,
    /// Sends waiting to be written; one blocking task writes them in batches.
    queue: Mutex<WriteQueue>,
    /// Wakes consumers in this process when records were written.
    pub(crate) written: Notify,
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

pub(crate) fn storage_error(err: rusqlite::Error) -> BackendError {
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
        db.setup(SCHEMA).map_err(storage_error)?;
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
    /// the existing stream. ([`Admin::create_stream`](logpipe_core::Admin::create_stream)
    /// fails when the stream exists.)
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Storage` when SQLite fails, or `Rejected` for zero
    /// partitions.
    pub async fn ensure_stream(&self, stream: &str, partitions: u32) -> Result<u32, BackendError> {
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

    fn hand_over(&self, write: PendingWrite) {
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

/// The offset the next record written to `partition` of `stream` gets.
pub(crate) fn next_offset(
    conn: &rusqlite::Connection,
    stream: &str,
    partition: u32,
) -> rusqlite::Result<i64> {
    let last: Option<i64> = conn
        .prepare_cached(
            "SELECT MAX(record_offset) FROM logpipe_records WHERE stream = ?1 AND partition = ?2",
        )?
        .query_row(params![stream, partition], |row| row.get(0))?;
    Ok(last.map_or(0, |last| last + 1))
}

pub(crate) fn ensure_stream(
    conn: &Connection,
    stream: &str,
    partitions: u32,
) -> rusqlite::Result<u32> {
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
    let timestamp = millis(SystemTime::now());
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
            None => next_offset(&tx, &record.stream, partition)?,
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
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
        logpipe_core::check_stream_name(&record.stream)?;
        let (reply, delivered) = oneshot::channel();
        self.hand_over(PendingWrite::Record(record, reply));
        Ok(DeliveryFuture::new(async move {
            delivered.await.map_err(|_| {
                BackendError::new(BackendErrorKind::Storage, "the embedded log writer stopped")
            })?
        }))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        let (reply, flushed) = oneshot::channel();
        self.hand_over(PendingWrite::Flush(reply));
        flushed.await.map_err(|_| {
            BackendError::new(BackendErrorKind::Storage, "the embedded log writer stopped")
        })
    }
}
