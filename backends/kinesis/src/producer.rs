//! The producer: batches records into `PutRecords` calls, keeping per-key order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use lru::LruCache;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::KinesisError;
use crate::api::{KinesisApi, PutRecordRequest};

/// Most bytes of one record, data and partition key together.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most records of one `PutRecords` call.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most bytes of one `PutRecords` call, data and partition keys together.
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Most characters of a partition key.
pub const MAX_KEY_CHARS: usize = 256;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteMode {
    /// `PutRecords` batches. A batch carries at most one record per partition key, and
    /// the next record of a key is sent only once the one before it is written, so
    /// records of one key are written in the order they were sent. The default.
    #[default]
    Batched,
    /// One `PutRecord` at a time per partition key, each with the sequence number of the
    /// key's previous record as `SequenceNumberForOrdering` (django-logpipe's way). The
    /// last sequence number of each (stream, key) is kept in an LRU cache.
    SequenceNumberForOrdering,
}

/// How a [`KinesisProducer`] batches and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOptions {
    /// How records are written. Default [`WriteMode::Batched`].
    pub mode: WriteMode,
    /// Most records a `PutRecords` call carries, 1 to 500. Default 500.
    pub max_batch_records: usize,
    /// Most bytes a `PutRecords` call carries, up to 5 MiB. Default 5 MiB.
    pub max_batch_bytes: usize,
    /// How long to wait for more records before sending a batch. Default zero: a batch
    /// goes out at once, and records sent meanwhile make up the next one.
    pub linger: Duration,
    /// Times a record is sent before it is an error to the caller. Default 10.
    pub max_attempts: u32,
    /// Wait after a throttled or failed call; it doubles on each failure in a row.
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// Longest wait between tries. Default 5 s.
    pub max_retry_backoff: Duration,
    /// (stream, key) pairs whose last sequence number is kept in
    /// [`WriteMode::SequenceNumberForOrdering`]. Default 10,000.
    pub ordering_cache_keys: NonZeroUsize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            mode: WriteMode::Batched,
            max_batch_records: MAX_BATCH_RECORDS,
            max_batch_bytes: MAX_BATCH_BYTES,
            linger: Duration::ZERO,
            max_attempts: 10,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(5),
            ordering_cache_keys: NonZeroUsize::new(10_000).expect("not zero"),
        }
    }
}

impl ProducerOptions {
    /// Checks the options.
    ///
    /// # Errors
    ///
    /// [`KinesisError::InvalidOption`] naming the first bad option.
    pub fn validate(&self) -> Result<(), KinesisError> {
        let invalid =
            |option, message: String| Err(KinesisError::InvalidOption { option, message });
        if !(1..=MAX_BATCH_RECORDS).contains(&self.max_batch_records) {
            return invalid(
                "max_batch_records",
                format!("must be 1 to {MAX_BATCH_RECORDS}"),
            );
        }
        if !(MAX_RECORD_BYTES..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return invalid(
                "max_batch_bytes",
                format!("must be {MAX_RECORD_BYTES} to {MAX_BATCH_BYTES}"),
            );
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivered {
    /// The shard.
    pub shard_id: String,
    /// The record's sequence number there.
    pub sequence_number: String,
}

/// Writes records to Kinesis streams. Clones share one sending task.
///
/// [`send`](KinesisProducer::send) resolves once the record is written (or could not
/// be); records sent meanwhile are batched together.
#[derive(Clone)]
pub struct KinesisProducer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    api: Arc<dyn KinesisApi>,
    options: ProducerOptions,
    next_id: AtomicU64,
    sender: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

impl std::fmt::Debug for KinesisProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisProducer")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

enum Command {
    Send(Pending),
    /// Answer once every record with an id below this one is resolved.
    Flush(u64, oneshot::Sender<()>),
}

struct Pending {
    id: u64,
    stream: Arc<str>,
    key: String,
    data: Vec<u8>,
    attempts: u32,
    reply: oneshot::Sender<Result<Delivered, KinesisError>>,
}

impl Pending {
    fn size(&self) -> usize {
        self.data.len() + self.key.len()
    }
}

/// What became of one record of a call.
enum Outcome {
    Written(Delivered),
    /// Try again later; the code and message say why.
    Retry(String, String),
    Failed(KinesisError),
}

impl KinesisProducer {
    /// A producer making its calls through `api`.
    ///
    /// # Errors
    ///
    /// [`KinesisError::InvalidOption`] when `options` are not valid.
    pub fn new(api: Arc<dyn KinesisApi>, options: ProducerOptions) -> Result<Self, KinesisError> {
        options.validate()?;
        Ok(Self {
            inner: Arc::new(ProducerInner {
                api,
                options,
                next_id: AtomicU64::new(0),
                sender: Mutex::new(None),
            }),
        })
    }

    /// Writes `data` to `stream` under `key` (a random key when `None`) and returns
    /// where it landed. Records of one key are written in the order they were sent.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue) and its delivery.
    pub async fn send(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        data: Vec<u8>,
    ) -> Result<Delivered, KinesisError> {
        self.enqueue(stream, key, data)?.await
    }

    /// Hands `data` for `stream` under `key` (a random key when `None`) to the writing
    /// task at once and returns its delivery, to await later. Records of one key are
    /// written in the order they were handed over.
    ///
    /// # Errors
    ///
    /// [`KinesisError::RecordTooLarge`] or [`KinesisError::InvalidKey`] at once for a
    /// record Kinesis would refuse. The delivery fails with
    /// [`KinesisError::Undeliverable`] when Kinesis refused it on every try, or
    /// [`KinesisError::Batch`] when its request failed and could not be retried.
    pub fn enqueue(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        data: Vec<u8>,
    ) -> Result<impl Future<Output = Result<Delivered, KinesisError>> + Send + 'static, KinesisError>
    {
        let key = match key {
            Some(key) => {
                let key = std::str::from_utf8(key).map_err(|_| KinesisError::InvalidKey {
                    reason: "a Kinesis partition key must be UTF-8 text",
                })?;
                if key.is_empty() {
                    random_key()
                } else if key.chars().count() > MAX_KEY_CHARS {
                    return Err(KinesisError::InvalidKey {
                        reason: "a Kinesis partition key has at most 256 characters",
                    });
                } else {
                    key.to_owned()
                }
            }
            None => random_key(),
        };
        let size = data.len() + key.len();
        if size > MAX_RECORD_BYTES {
            return Err(KinesisError::RecordTooLarge {
                size,
                limit: MAX_RECORD_BYTES,
            });
        }
        let (reply, written) = oneshot::channel();
        let stream: Arc<str> = stream.into();
        self.command(|next_id| {
            Command::Send(Pending {
                id: next_id.fetch_add(1, Ordering::SeqCst),
                stream,
                key,
                data,
                attempts: 0,
                reply,
            })
        });
        Ok(async move { written.await.unwrap_or(Err(KinesisError::ProducerStopped)) })
    }

    /// Waits until every record sent before this call is written or failed.
    pub async fn flush(&self) {
        let (reply, flushed) = oneshot::channel();
        self.command(|next_id| Command::Flush(next_id.load(Ordering::SeqCst), reply));
        // A stopped task has nothing left to write.
        let _ = flushed.await;
    }

    /// Builds a command under the lock that orders commands, so that ids reach the task
    /// in order, and hands it to the task (started on first use).
    fn command(&self, build: impl FnOnce(&AtomicU64) -> Command) {
        let mut sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let command = build(&self.inner.next_id);
        let command = match sender.as_ref() {
            Some(tx) => match tx.send(command) {
                Ok(()) => return,
                Err(mpsc::error::SendError(command)) => command,
            },
            None => command,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = SendTask::new(Arc::clone(&self.inner.api), self.inner.options.clone());
        tokio::spawn(task.run(rx));
        let _ = tx.send(command);
        *sender = Some(tx);
    }
}

fn random_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The last sequence number written per (stream, partition key).
type OrderingCache = Arc<Mutex<LruCache<(Arc<str>, String), String>>>;

/// The task that writes every record of a producer.
struct SendTask {
    api: Arc<dyn KinesisApi>,
    options: ProducerOptions,
    queues: HashMap<Arc<str>, VecDeque<Pending>>,
    unresolved: BTreeSet<u64>,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    backoff: Option<Duration>,
    ordering: OrderingCache,
}

impl SendTask {
    fn new(api: Arc<dyn KinesisApi>, options: ProducerOptions) -> Self {
        let ordering = Arc::new(Mutex::new(LruCache::new(options.ordering_cache_keys)));
        Self {
            api,
            options,
            queues: HashMap::new(),
            unresolved: BTreeSet::new(),
            flushes: Vec::new(),
            backoff: None,
            ordering,
        }
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Send(pending) => {
                self.unresolved.insert(pending.id);
                self.queues
                    .entry(Arc::clone(&pending.stream))
                    .or_default()
                    .push_back(pending);
            }
            Command::Flush(upto, reply) => self.flushes.push((upto, reply)),
        }
    }

    fn answer_flushes(&mut self) {
        let oldest = self.unresolved.first().copied().unwrap_or(u64::MAX);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(upto, _)| *upto <= oldest);
        self.flushes = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut open = true;
        loop {
            self.answer_flushes();
            let idle = self.queues.values().all(VecDeque::is_empty);
            if idle {
                if !open {
                    return;
                }
                match commands.recv().await {
                    Some(command) => self.accept(command),
                    None => open = false,
                }
                if !self.options.linger.is_zero() {
                    tokio::time::sleep(self.options.linger).await;
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.accept(command);
            }
            self.answer_flushes();
            if let Some(wait) = self.backoff {
                tokio::time::sleep(wait).await;
                while let Ok(command) = commands.try_recv() {
                    self.accept(command);
                }
            }
            self.round().await;
        }
    }

    /// Sends one batch per stream, all at once, and settles their records.
    async fn round(&mut self) {
        let mut calls = JoinSet::new();
        for (stream, queue) in &mut self.queues {
            let batch = take_batch(queue, &self.options);
            if batch.is_empty() {
                continue;
            }
            let api = Arc::clone(&self.api);
            let stream = Arc::clone(stream);
            let mode = self.options.mode;
            let ordering = Arc::clone(&self.ordering);
            calls.spawn(async move {
                let outcomes = match mode {
                    WriteMode::Batched => put_records(&*api, &stream, &batch).await,
                    WriteMode::SequenceNumberForOrdering => {
                        put_each(&api, &stream, &batch, &ordering).await
                    }
                };
                (stream, batch, outcomes)
            });
        }
        let mut throttled = false;
        while let Some(joined) = calls.join_next().await {
            let (stream, batch, outcomes) = match joined {
                Ok(done) => done,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            };
            let mut retry = Vec::new();
            for (mut pending, outcome) in batch.into_iter().zip(outcomes) {
                pending.attempts += 1;
                match outcome {
                    Outcome::Written(delivered) => {
                        metrics::counter!("logpipe_kinesis_records_written_total").increment(1);
                        self.unresolved.remove(&pending.id);
                        let _ = pending.reply.send(Ok(delivered));
                    }
                    Outcome::Retry(code, message)
                        if pending.attempts >= self.options.max_attempts =>
                    {
                        tracing::error!(%stream, attempts = pending.attempts, %code, %message, "record not written; giving up");
                        self.unresolved.remove(&pending.id);
                        let _ = pending.reply.send(Err(KinesisError::Undeliverable {
                            stream: stream.to_string(),
                            attempts: pending.attempts,
                            code,
                            message,
                        }));
                    }
                    Outcome::Retry(code, message) => {
                        tracing::debug!(%stream, attempts = pending.attempts, %code, %message, "record not written; trying again");
                        metrics::counter!("logpipe_kinesis_write_retries_total", "code" => code.clone()).increment(1);
                        throttled = true;
                        retry.push(pending);
                    }
                    Outcome::Failed(err) => {
                        self.unresolved.remove(&pending.id);
                        let _ = pending.reply.send(Err(err));
                    }
                }
            }
            // Retried records go back to the front, ahead of the later records of their
            // keys, in their order.
            let queue = self.queues.entry(stream).or_default();
            for pending in retry.into_iter().rev() {
                queue.push_front(pending);
            }
        }
        self.backoff = if throttled {
            let next = self
                .backoff
                .map_or(self.options.retry_backoff, |last| last * 2)
                .min(self.options.max_retry_backoff);
            // Up to a quarter of jitter, so that producers do not retry in step.
            Some(next + next.mul_f64(fastrand::f64() / 4.0))
        } else {
            None
        };
        self.queues.retain(|_, queue| !queue.is_empty());
    }
}

/// Takes the next batch off `queue`: the oldest record of each key, in queue order,
/// within the batch limits. Later records of a key wait for the next batch.
fn take_batch(queue: &mut VecDeque<Pending>, options: &ProducerOptions) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut keys = HashSet::new();
    let mut rest = VecDeque::with_capacity(queue.len());
    for pending in queue.drain(..) {
        let first_of_key = keys.insert(pending.key.clone());
        let fits = batch.len() < options.max_batch_records
            && bytes + pending.size() <= options.max_batch_bytes;
        if first_of_key && fits {
            bytes += pending.size();
            batch.push(pending);
        } else {
            rest.push_back(pending);
        }
    }
    *queue = rest;
    batch
}

async fn put_records(api: &dyn KinesisApi, stream: &str, batch: &[Pending]) -> Vec<Outcome> {
    let entries = batch
        .iter()
        .map(|pending| {
            PutRecordsRequestEntry::builder()
                .partition_key(pending.key.clone())
                .data(Blob::new(pending.data.clone()))
                .build()
                .expect("partition key and data are set")
        })
        .collect();
    match api.put_records(stream.to_owned(), entries).await {
        Ok(output) => {
            let results = output.records();
            if results.len() != batch.len() {
                let error = Arc::new(KinesisError::Other {
                    operation: "PutRecords",
                    source: format!("{} results for {} records", results.len(), batch.len()).into(),
                });
                return batch_failed(stream, batch.len(), &error);
            }
            results
                .iter()
                .map(|result| {
                    match (
                        result.shard_id(),
                        result.sequence_number(),
                        result.error_code(),
                    ) {
                        (Some(shard), Some(sequence), None) => Outcome::Written(Delivered {
                            shard_id: shard.to_owned(),
                            sequence_number: sequence.to_owned(),
                        }),
                        (_, _, code) => Outcome::Retry(
                            code.unwrap_or("Unknown").to_owned(),
                            result.error_message().unwrap_or_default().to_owned(),
                        ),
                    }
                })
                .collect()
        }
        Err(err) if err.is_retriable() => {
            tracing::warn!(%stream, error = %err, "PutRecords failed; trying again");
            let code = err.code().unwrap_or("RequestFailed").to_owned();
            let message = logpipe_core::error_chain(&err);
            batch
                .iter()
                .map(|_| Outcome::Retry(code.clone(), message.clone()))
                .collect()
        }
        Err(err) => batch_failed(stream, batch.len(), &Arc::new(err)),
    }
}

fn batch_failed(stream: &str, count: usize, error: &Arc<KinesisError>) -> Vec<Outcome> {
    (0..count)
        .map(|_| {
            Outcome::Failed(KinesisError::Batch {
                stream: stream.to_owned(),
                source: Arc::clone(error),
            })
        })
        .collect()
}

/// One `PutRecord` per record (each of another key), all at once, each ordered after the
/// key's previous record.
async fn put_each(
    api: &Arc<dyn KinesisApi>,
    stream: &Arc<str>,
    batch: &[Pending],
    ordering: &OrderingCache,
) -> Vec<Outcome> {
    let mut calls = JoinSet::new();
    for (index, pending) in batch.iter().enumerate() {
        let slot = (Arc::clone(stream), pending.key.clone());
        let previous = ordering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&slot)
            .cloned();
        let request = PutRecordRequest {
            stream: stream.to_string(),
            partition_key: pending.key.clone(),
            data: pending.data.clone(),
            sequence_number_for_ordering: previous,
        };
        let (api, ordering) = (Arc::clone(api), Arc::clone(ordering));
        calls.spawn(async move {
            let outcome = match api.put_record(request).await {
                Ok(output) => {
                    let delivered = Delivered {
                        shard_id: output.shard_id().to_owned(),
                        sequence_number: output.sequence_number().to_owned(),
                    };
                    ordering
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .put(slot, delivered.sequence_number.clone());
                    Outcome::Written(delivered)
                }
                Err(err) if err.is_retriable() => Outcome::Retry(
                    err.code().unwrap_or("RequestFailed").to_owned(),
                    logpipe_core::error_chain(&err),
                ),
                Err(err) => Outcome::Failed(err),
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((index, outcome)) => outcomes[index] = Some(outcome),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("one outcome per record"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: u64, key: &str, size: usize) -> Pending {
        let (reply, _) = oneshot::channel();
        Pending {
            id,
            stream: "s".into(),
            key: key.to_owned(),
            data: vec![0; size],
            attempts: 0,
            reply,
        }
    }

    fn ids(pendings: &[Pending]) -> Vec<u64> {
        pendings.iter().map(|p| p.id).collect()
    }

    #[test]
    fn a_batch_takes_the_oldest_record_of_each_key_and_leaves_the_rest_in_order() {
        let mut queue: VecDeque<_> = [(0, "a"), (1, "a"), (2, "b"), (3, "c"), (4, "b"), (5, "a")]
            .into_iter()
            .map(|(id, key)| pending(id, key, 10))
            .collect();
        let options = ProducerOptions::default();
        assert_eq!(ids(&take_batch(&mut queue, &options)), [0, 2, 3]);
        assert_eq!(ids(&take_batch(&mut queue, &options)), [1, 4]);
        assert_eq!(ids(&take_batch(&mut queue, &options)), [5]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_keeps_to_the_record_and_byte_limits() {
        let options = ProducerOptions {
            max_batch_records: 2,
            max_batch_bytes: MAX_RECORD_BYTES,
            ..ProducerOptions::default()
        };
        let mut queue: VecDeque<_> = (0..3).map(|id| pending(id, &id.to_string(), 10)).collect();
        assert_eq!(ids(&take_batch(&mut queue, &options)), [0, 1]);
        let mut queue: VecDeque<_> = (0..3)
            .map(|id| pending(id, &id.to_string(), MAX_RECORD_BYTES / 2))
            .collect();
        assert_eq!(ids(&take_batch(&mut queue, &options)), [0]);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn options_out_of_kinesis_limits_are_refused() {
        let too_many = ProducerOptions {
            max_batch_records: 501,
            ..ProducerOptions::default()
        };
        assert!(matches!(
            too_many.validate(),
            Err(KinesisError::InvalidOption {
                option: "max_batch_records",
                ..
            })
        ));
        assert!(ProducerOptions::default().validate().is_ok());
    }

    #[test]
    fn throttling_and_expiry_are_retriable_and_not_found_is_not() {
        let throttled =
            KinesisError::service("GetRecords", crate::THROUGHPUT_EXCEEDED, "slow down");
        assert!(throttled.is_retriable() && throttled.is_throttling());
        let expired = KinesisError::service("GetRecords", crate::EXPIRED_ITERATOR, "old");
        assert!(expired.is_retriable() && expired.is_expired_iterator());
        let missing = KinesisError::service("ListShards", crate::RESOURCE_NOT_FOUND, "no stream");
        assert!(!missing.is_retriable() && missing.is_not_found() && !missing.is_rejected());
        let invalid = KinesisError::service("PutRecords", "InvalidArgumentException", "bad");
        assert!(!invalid.is_retriable() && invalid.is_rejected());
    }
}
