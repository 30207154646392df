//! The consumer: a group member polled on a thread of its own, whose rebalances wait for
//! the application.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak, mpsc as std_mpsc};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc;

use crate::lag::Lag;
use crate::{KafkaClient, KafkaError, KafkaSettings, SettingsLayer};

/// Records handed over at most in one [`KafkaEvent::Records`].
const MAX_BATCH: usize = 1000;
/// Events waiting for the application, at most; past this the polling thread waits.
const EVENT_CAPACITY: usize = 4;
/// How long the polling thread sleeps at most when there is nothing to read. librdkafka,
/// a stop and a seek wake it at once; this bounds the wait should an event slip by.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long reading or committing offsets may take.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the commit thread waits after a failed commit before it tries again; it
/// doubles with each failure in a row, up to [`COMMIT_RETRY_MAX`].
const COMMIT_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between commits that keep failing.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A commit failing again with the same error is logged once every this many failures
/// (about every ten minutes at [`COMMIT_RETRY_MAX`]).
const COMMIT_FAILURE_LOG_EVERY: u32 = 64;

/// A partition of a stream: the stream name (without the topic prefix) and the partition.
pub type StreamPartition = (Arc<str>, i32);

/// A record read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The stream: the topic name without the prefix.
    pub stream: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, if the record has one.
    pub key: Option<Vec<u8>>,
    /// The value (empty for a null value).
    pub value: Vec<u8>,
    /// The headers, in order (none when [`KafkaConsumer::read_headers`] turned them off).
    pub headers: Vec<(String, Vec<u8>)>,
    /// When it was written, in milliseconds since the Unix epoch, if known.
    pub timestamp_ms: Option<i64>,
}

/// What a [`KafkaConsumer`] has to say next.
#[derive(Debug)]
#[non_exhaustive]
pub enum KafkaEvent {
    /// These partitions were assigned. Reading them starts where
    /// [`KafkaConsumer::seek`] says, once the next
    /// [`next_event`](KafkaConsumer::next_event) is called; a partition not sought starts
    /// at the group's committed offset, else per `auto.offset.reset`.
    Assigned(Vec<StreamPartition>),
    /// These partitions are being taken away. They stay this consumer's (and their offsets
    /// can be committed) until the next [`next_event`](KafkaConsumer::next_event) call.
    /// Every record of them read before was delivered before this event.
    Revoked(Vec<StreamPartition>),
    /// Records, in order within each partition.
    Records(Vec<KafkaRecord>),
}

/// Where [`KafkaConsumer::seek`] starts a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Just after this offset.
    After(i64),
    /// Where the group left off (its committed offset), else where `auto.offset.reset`
    /// says (the earliest record by default). librdkafka reads the committed offset as
    /// part of the assignment.
    Reset,
}

enum Reply {
    Seek {
        topic: String,
        partition: i32,
        offset: Offset,
    },
    /// The application is done with the last assignment or revocation.
    Done,
}

/// What the polling thread hands the application.
enum Handover {
    Records(Polled),
    Event(KafkaEvent),
}

type EventResult = Result<Handover, KafkaError>;

/// Records polled and not handed over yet. Their keys and values sit in one buffer, so
/// that the polling thread allocates once per batch; [`KafkaConsumer::next_event`] makes
/// each record's own copies on the application's thread, which frees them too (the
/// allocator takes a lock when a thread frees what another one allocated, record after
/// record).
#[derive(Default)]
struct Polled {
    bytes: Vec<u8>,
    records: Vec<PolledRecord>,
}

/// A [`KafkaRecord`] whose key and value are ranges of [`Polled::bytes`].
struct PolledRecord {
    stream: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    value: Range<usize>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp_ms: Option<i64>,
}

impl Polled {
    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// An empty batch with room for one as large as this.
    fn like(&self) -> Self {
        Self {
            bytes: Vec::with_capacity(self.bytes.len()),
            records: Vec::with_capacity(self.records.len()),
        }
    }

    fn into_records(self) -> Vec<KafkaRecord> {
        let Polled { bytes, records } = self;
        records
            .into_iter()
            .map(|r| KafkaRecord {
                stream: r.stream,
                partition: r.partition,
                offset: r.offset,
                key: r.key.map(|key| bytes[key].to_vec()),
                value: bytes[r.value].to_vec(),
                headers: r.headers,
                timestamp_ms: r.timestamp_ms,
            })
            .collect()
    }
}

/// A member of a consumer group, polled on a thread of its own.
///
/// Rebalances are handed to the application as [`KafkaEvent::Assigned`] and
/// [`KafkaEvent::Revoked`], and the group waits until the application calls
/// [`next_event`](Self::next_event) again: positions are stored before partitions are
/// given up, and new partitions start where the application seeks them.
///
/// Dropping it leaves the group (in the background).
pub struct KafkaConsumer {
    group: String,
    events: mpsc::Receiver<EventResult>,
    replies: std_mpsc::Sender<Reply>,
    awaiting_reply: bool,
    stopping: Arc<AtomicBool>,
    wakeup: Arc<Wakeup>,
    read_headers: Arc<AtomicBool>,
    settings: Arc<KafkaSettings>,
    /// The stream name of each topic read.
    streams: StreamNames,
    /// Says (by closing) that the polling thread has left the group.
    left: std_mpsc::Receiver<()>,
    lag: Arc<Lag>,
}

/// How long dropping a consumer waits for it to leave its group.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

type StreamNames = Arc<Mutex<HashMap<String, Arc<str>>>>;

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    pub(crate) fn start(
        client: KafkaClient,
        group: &str,
        topics: Vec<String>,
    ) -> Result<Self, KafkaError> {
        let settings = Arc::clone(&client.inner_settings());
        let config = settings.client_config(SettingsLayer::Consumer, Some(group));
        let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let (replies, reply_rx) = std_mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let wakeup = Arc::new(Wakeup::default());
        let read_headers = Arc::new(AtomicBool::new(true));
        let assignment = Arc::new(Mutex::new(HashSet::new()));
        let streams = StreamNames::default();
        let lag = Arc::new(Lag::new(group, config.get("auto.offset.reset")));
        let context = GroupContext {
            settings: Arc::clone(&settings),
            events: event_tx,
            replies: Mutex::new(reply_rx),
            batch: Mutex::new(Polled::default()),
            assignment: Arc::clone(&assignment),
            commits: Commits::default(),
            stopping: Arc::clone(&stopping),
            wakeup: Arc::clone(&wakeup),
            read_headers: Arc::clone(&read_headers),
            streams: Arc::clone(&streams),
            lag: Arc::clone(&lag),
        };
        let mut consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|source| match source {
                RdKafkaError::ClientConfig(..) => {
                    settings.setting_error(SettingsLayer::Consumer, source)
                }
                source => KafkaError::Client {
                    role: "consumer",
                    source,
                },
            })?;
        let woken = Arc::clone(&wakeup);
        consumer.set_nonempty_callback(move || woken.wake());
        let consumer = Arc::new(consumer);
        client.offsets().register(Member {
            group: group.to_owned(),
            consumer: Arc::downgrade(&consumer),
            assignment,
        });
        let (left_tx, left) = std_mpsc::channel::<()>();
        let (committer, measurer) = (thread_name("commit", group), thread_name("lag", group));
        std::thread::Builder::new()
            .name(thread_name("kafka", group))
            .spawn(move || {
                std::thread::scope(|scope| {
                    let context = consumer.context();
                    // Ends the commit and lag threads however this closure ends (a panic
                    // included), so that the scope can join them and the consumer leaves.
                    let _stop = StopThreads(context);
                    let threads = std::thread::Builder::new()
                        .name(committer)
                        .spawn_scoped(scope, || commit_thread(&consumer))
                        .and_then(|_| {
                            std::thread::Builder::new()
                                .name(measurer)
                                .spawn_scoped(scope, || context.lag.run(&*consumer))
                        });
                    match threads {
                        Ok(_) => poll_thread(&client, &consumer, &topics),
                        Err(_) => {
                            context.report(KafkaError::Closed);
                        }
                    }
                    // No new measurement starts while the consumer leaves.
                    context.lag.close();
                    // What was stored last reaches the group before the consumer leaves.
                    commit_now(&consumer, &[]);
                });
                // The last owner closes the consumer, leaving the group; then `left_tx`
                // is dropped, which is the signal.
                drop(consumer);
                drop(left_tx);
            })
            .map_err(|_| KafkaError::Closed)?;
        Ok(Self {
            group: group.to_owned(),
            events,
            replies,
            awaiting_reply: false,
            stopping,
            wakeup,
            read_headers,
            settings,
            streams,
            left,
            lag,
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Waits for the next event. Calling it also tells the group that the last
    /// [`KafkaEvent::Assigned`] or [`KafkaEvent::Revoked`] was dealt with.
    ///
    /// Cancel-safe: dropping the future loses no event.
    ///
    /// # Errors
    ///
    /// [`KafkaError::TopicNotFound`] (and others from the start-up checks), then
    /// [`KafkaError::Closed`]; [`KafkaError::Consume`] when librdkafka reports a failure
    /// (often retriable).
    pub async fn next_event(&mut self) -> Result<KafkaEvent, KafkaError> {
        if std::mem::take(&mut self.awaiting_reply) {
            // The thread may have stopped; then there is nobody to tell.
            let _ = self.replies.send(Reply::Done);
        }
        let event = match self.events.recv().await.ok_or(KafkaError::Closed)?? {
            Handover::Records(polled) => {
                // The polling thread may be holding more records until these are taken.
                self.wakeup.wake();
                KafkaEvent::Records(polled.into_records())
            }
            Handover::Event(event) => event,
        };
        if let KafkaEvent::Assigned(_) | KafkaEvent::Revoked(_) = &event {
            self.awaiting_reply = true;
        }
        Ok(event)
    }

    /// Whether records come with their headers (they do unless told otherwise). Reading
    /// them costs librdkafka an allocation for every record, even one without headers;
    /// records already read keep theirs.
    pub fn read_headers(&self, read: bool) {
        self.read_headers.store(read, Ordering::Relaxed);
    }

    /// Starts `partition` of `stream` just after an offset, or where the group left off.
    /// Right after an assignment it takes effect before any record of the partition is
    /// read; later, as soon as the polling thread has handed over the records it is
    /// reading (those still come).
    ///
    /// # Errors
    ///
    /// [`KafkaError::Closed`] when the consumer has stopped.
    pub fn seek(
        &mut self,
        stream: &str,
        partition: i32,
        from: StartFrom,
    ) -> Result<(), KafkaError> {
        let offset = match from {
            StartFrom::After(offset) => Offset::Offset(offset + 1),
            StartFrom::Reset => Offset::Stored,
        };
        let topic = self.topic(stream);
        self.lag.sought(&(topic.clone(), partition), offset);
        self.replies
            .send(Reply::Seek {
                topic,
                partition,
                offset,
            })
            .map_err(|_| KafkaError::Closed)?;
        self.wakeup.wake();
        Ok(())
    }

    /// Tells the consumer the positions the application stored, for each (stream,
    /// partition, offset) the offset of the last record it handled (not the next one to
    /// read, unlike [`GroupOffsets::commit`]): the lag gauge [`LAG_GAUGE`](crate::LAG_GAUGE)
    /// counts the records after them. Cheap; call it once per batch of positions, not per
    /// record.
    pub fn stored<'a>(&self, positions: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let positions: Vec<((String, i32), i64)> = positions
            .into_iter()
            .map(|(stream, partition, offset)| ((self.topic(stream), partition), offset + 1))
            .collect();
        self.lag
            .stored(positions.iter().map(|(key, next)| (key, *next)));
    }

    /// The topic of `stream`: the one read under that name, else the configured one.
    fn topic(&self, stream: &str) -> String {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, name)| name.as_ref() == stream)
            .map_or_else(|| self.settings.topic(stream), |(topic, _)| topic.clone())
    }
}

/// The name of one of a consumer's threads: its `role` and `group`, cut to the 15
/// characters a thread name can have on Linux.
fn thread_name(role: &str, group: &str) -> String {
    format!("{role}-{group}").chars().take(15).collect()
}

/// Ends a consumer's commit and lag threads when dropped.
struct StopThreads<'a>(&'a GroupContext);

impl Drop for StopThreads<'_> {
    fn drop(&mut self) {
        self.0.lag.close();
        self.0.commits.close();
    }
}

impl Drop for KafkaConsumer {
    /// Stops the polling thread and waits (at most ten seconds) until it has left the
    /// group, so that a process that ends right after hands its partitions over at once
    /// instead of after `session.timeout.ms`. On a multi-threaded Tokio runtime the wait
    /// is done with `block_in_place`; on a current-thread runtime the consumer leaves in
    /// the background.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Unblocks a thread waiting for room for its next event, and one waiting for an
        // answer to a rebalance.
        self.events.close();
        let _ = self.replies.send(Reply::Done);
        self.wakeup.wake();
        let wait = || {
            let _ = self.left.recv_timeout(LEAVE_TIMEOUT);
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_) => {}
            Err(_) => wait(),
        }
    }
}

impl KafkaClient {
    fn inner_settings(&self) -> Arc<KafkaSettings> {
        Arc::clone(&self.offsets().settings)
    }
}

/// Wakes the polling thread when it sleeps: librdkafka when its queue gets something, the
/// application when it stops the consumer or asks for a seek.
#[derive(Default)]
struct Wakeup {
    woken: Mutex<bool>,
    condvar: Condvar,
}

impl Wakeup {
    fn wake(&self) {
        *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.condvar.notify_one();
    }

    /// Sleeps until woken (since the last sleep) or for `timeout`.
    fn sleep(&self, timeout: Duration) {
        let woken = self.woken.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut woken, _) = self
            .condvar
            .wait_timeout_while(woken, timeout, |woken| !*woken)
            .unwrap_or_else(PoisonError::into_inner);
        *woken = false;
    }
}

/// The consumer's context: turns rebalances into events and waits for the application.
struct GroupContext {
    settings: Arc<KafkaSettings>,
    events: mpsc::Sender<EventResult>,
    replies: Mutex<std_mpsc::Receiver<Reply>>,
    /// Records polled and not yet handed over.
    batch: Mutex<Polled>,
    /// The partitions assigned now (full topic names).
    assignment: Arc<Mutex<HashSet<(String, i32)>>>,
    /// Offsets to commit.
    commits: Commits,
    stopping: Arc<AtomicBool>,
    wakeup: Arc<Wakeup>,
    /// Whether records are read with their headers.
    read_headers: Arc<AtomicBool>,
    /// Stream names of topics, made once.
    streams: StreamNames,
    /// The lag of the assigned partitions.
    lag: Arc<Lag>,
}

impl GroupContext {
    fn stream(&self, topic: &str) -> Arc<str> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stream) = streams.get(topic) {
            return Arc::clone(stream);
        }
        let stream: Arc<str> = self.settings.stream(topic).into();
        streams.insert(topic.to_owned(), Arc::clone(&stream));
        stream
    }

    /// Adds `message` to the batch, and returns how many records the batch holds. `last`
    /// keeps the stream of the last topic seen, so that a run of records of one topic
    /// looks its stream up once.
    fn push(&self, message: &BorrowedMessage<'_>, last: &mut Option<(String, Arc<str>)>) -> usize {
        let topic = message.topic();
        let stream = match last {
            Some((last_topic, stream)) if last_topic == topic => Arc::clone(stream),
            _ => Arc::clone(&last.insert((topic.to_owned(), self.stream(topic))).1),
        };
        let headers = self
            .read_headers
            .load(Ordering::Relaxed)
            .then(|| message.headers())
            .flatten()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut batch = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        let key = message.key().map(|key| batch.append(key));
        let value = batch.append(message.payload().unwrap_or_default());
        batch.records.push(PolledRecord {
            stream,
            partition: message.partition(),
            offset: message.offset(),
            key,
            value,
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        });
        batch.records.len()
    }

    /// Hands the polled records over; false when nobody listens any more.
    fn hand_over(&self) -> bool {
        let batch = {
            let mut batch = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
            // The next batch is likely as large: room for it now saves growing it.
            let next = batch.like();
            std::mem::replace(&mut *batch, next)
        };
        batch.records.is_empty()
            || self
                .events
                .blocking_send(Ok(Handover::Records(batch)))
                .is_ok()
    }

    /// Hands the polled records over when there are [`MAX_BATCH`] or the application has
    /// taken all it was handed; otherwise more records may join them. False when nobody
    /// listens any more.
    fn offer(&self) -> bool {
        let count = self
            .batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .len();
        let taken_all = self.events.capacity() == self.events.max_capacity();
        count == 0 || (count < MAX_BATCH && !taken_all) || self.hand_over()
    }

    fn report(&self, error: KafkaError) -> bool {
        self.hand_over() && self.events.blocking_send(Err(error)).is_ok()
    }

    /// Sends a rebalance event after the records read before it, and waits until the
    /// application has dealt with it. Returns the offsets it sought.
    fn handshake(&self, event: KafkaEvent) -> HashMap<(String, i32), Offset> {
        let mut seeks = HashMap::new();
        if self.stopping.load(Ordering::SeqCst) || !self.hand_over() {
            return seeks;
        }
        if self
            .events
            .blocking_send(Ok(Handover::Event(event)))
            .is_err()
        {
            return seeks;
        }
        let replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
        while let Ok(Reply::Seek {
            topic,
            partition,
            offset,
        }) = replies.recv()
        {
            seeks.insert((topic, partition), offset);
        }
        seeks
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<StreamPartition> {
        list.elements()
            .iter()
            .map(|e| (self.stream(e.topic()), e.partition()))
            .collect()
    }

    fn assignment(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_line(level, fac, log_message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let elements: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let seeks = self.handshake(KafkaEvent::Assigned(self.partitions(tpl)));
                for (topic, partition) in &elements {
                    let offset = seeks
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or(Offset::Stored);
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                        tracing::error!(topic, partition, %error, "cannot set the start offset");
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match assigned {
                    Ok(()) => {
                        self.lag.assigned(tpl.elements().iter().map(|e| {
                            let key = (e.topic().to_owned(), e.partition());
                            (key, self.stream(e.topic()), e.offset())
                        }));
                        self.commits.own(&elements);
                        self.assignment().extend(elements);
                    }
                    Err(source) => {
                        tracing::error!(error = %source, "assigning partitions failed");
                        self.report(KafkaError::Consume { source });
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handshake(KafkaEvent::Revoked(self.partitions(tpl)));
                // What the application stored for these partitions reaches the group
                // before they are given up; after this commit, none of their offsets is
                // sent again (the group may take newer ones from their new owner).
                commit_now(consumer, &elements);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = unassigned {
                    tracing::error!(%error, "giving up partitions failed");
                }
                let mut assignment = self.assignment();
                if cooperative {
                    for element in &elements {
                        assignment.remove(element);
                    }
                } else {
                    assignment.clear();
                }
                self.lag.revoked(&elements);
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; giving up every partition");
                let _ = consumer.unassign();
                let lost: Vec<(String, i32)> = self.assignment().drain().collect();
                self.commits.release(&lost);
                self.lag.revoked(&lost);
            }
        }
    }
}

fn poll_thread(
    client: &KafkaClient,
    consumer: &Arc<BaseConsumer<GroupContext>>,
    topics: &[String],
) {
    let context = consumer.context();
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| KafkaError::Closed)
        .and_then(|runtime| runtime.block_on(client.ensure_topics(topics)));
    if let Err(error) = checked {
        context.report(error);
        return;
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(source) = consumer.subscribe(&names) {
        context.report(KafkaError::Consume { source });
        return;
    }
    tracing::debug!(?topics, "subscribed");
    let mut last_stream = None;
    // Whether the last poll found nothing. An empty poll may also have served an event
    // (a commit's answer) with records behind it, and librdkafka wakes the thread only
    // when its queue was empty: the thread sleeps after two empty polls in a row.
    let mut idle = false;
    while !context.stopping.load(Ordering::SeqCst) {
        seek_now(consumer);
        match consumer.poll(Duration::ZERO) {
            None if idle => {
                if !context.offer() {
                    return;
                }
                // Woken by librdkafka, or by the application taking records (then the
                // ones held here go next).
                context.wakeup.sleep(POLL_WAIT);
                idle = false;
            }
            None => idle = true,
            Some(Ok(message)) => {
                idle = false;
                let mut count = context.push(&message, &mut last_stream);
                drop(message);
                while count < MAX_BATCH {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(message)) => count = context.push(&message, &mut last_stream),
                        Some(Err(source)) => {
                            if !context.report(KafkaError::Consume { source }) {
                                return;
                            }
                            break;
                        }
                        None => break,
                    }
                }
                if !context.offer() {
                    return;
                }
            }
            Some(Err(source)) => {
                idle = false;
                if !context.report(KafkaError::Consume { source }) {
                    return;
                }
            }
        }
    }
}

/// Applies seeks asked for outside a rebalance.
fn seek_now(consumer: &BaseConsumer<GroupContext>) {
    let replies = consumer
        .context()
        .replies
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while let Ok(reply) = replies.try_recv() {
        if let Reply::Seek {
            topic,
            partition,
            offset,
        } = reply
            && let Err(source) = consumer.seek(&topic, partition, offset, OFFSETS_TIMEOUT)
        {
            tracing::error!(topic, partition, error = %source, "seek failed");
        }
    }
}

struct Member {
    group: String,
    consumer: Weak<BaseConsumer<GroupContext>>,
    assignment: Arc<Mutex<HashSet<(String, i32)>>>,
}

/// A member's commits, sent by its commit thread one at a time, each with the newest
/// offsets stored while the one before was on its way (a commit takes a round trip to the
/// group coordinator; sending one per store would queue them up). The answers come back
/// to the commit thread, so commits go on while the polling thread waits for the
/// application to take more records.
///
/// Only offsets of partitions the member owns are stored, sent, and sent again after a
/// failure: once a partition is released (given up or lost), none of its offsets leaves,
/// since the group may have newer ones from its new owner.
#[derive(Default)]
struct Commits {
    state: Mutex<CommitState>,
    /// Signalled when offsets are stored, a commit is answered, or the consumer stops.
    changed: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// The partitions whose offsets may be committed (full topic names).
    owned: HashSet<(String, i32)>,
    /// The next offset to commit of each partition.
    waiting: HashMap<(String, i32), i64>,
    in_flight: bool,
    /// The commits failing in a row.
    failures: Failures,
    /// The consumer has stopped: the commit thread ends.
    closed: bool,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Partitions assigned: their offsets may be committed from now on.
    fn own(&self, partitions: &[(String, i32)]) {
        self.lock().owned.extend(partitions.iter().cloned());
    }

    /// Partitions given up or lost: their waiting offsets are dropped and no more are
    /// taken.
    fn release(&self, partitions: &[(String, i32)]) {
        release(&mut self.lock(), partitions);
    }

    /// Stores the next offsets to commit of some partitions (those not owned are left
    /// out) and wakes the commit thread.
    fn store(&self, offsets: impl IntoIterator<Item = ((String, i32), i64)>) {
        let mut state = self.lock();
        let state = &mut *state;
        state.waiting.extend(
            offsets
                .into_iter()
                .filter(|(partition, _)| state.owned.contains(partition)),
        );
        self.changed.notify_all();
    }

    /// Waits until no commit is on its way, then takes the waiting offsets, if any, for a
    /// commit that the caller sends, and releases `giving_up` (whose offsets are taken
    /// this once more). With `for_offsets`, also waits until offsets wait; then `None`
    /// means the consumer stopped.
    fn take(&self, for_offsets: bool, giving_up: &[(String, i32)]) -> Option<TopicPartitionList> {
        let mut state = self
            .changed
            .wait_while(self.lock(), |state| {
                !state.closed && (state.in_flight || (for_offsets && state.waiting.is_empty()))
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed || state.waiting.is_empty() {
            release(&mut state, giving_up);
            return None;
        }
        let waiting = std::mem::take(&mut state.waiting);
        release(&mut state, giving_up);
        state.in_flight = true;
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in waiting {
            // Only fails for an invalid offset, which `store` never gets.
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        Some(list)
    }

    /// Sends `list` (from [`take`](Self::take)) and waits for the answer. Returns how long
    /// to wait before the next commit: zero after a success.
    fn send(&self, consumer: &BaseConsumer<GroupContext>, list: &TopicPartitionList) -> Duration {
        let result = consumer.commit(list, CommitMode::Sync);
        self.answered(list, result.map_err(|error| error.to_string()))
    }

    /// Takes the answer to the commit of `list`. Offsets that failed wait again, for
    /// partitions still owned, unless newer ones came meanwhile. Returns how long to wait
    /// before the next commit.
    fn answered(&self, list: &TopicPartitionList, result: Result<(), String>) -> Duration {
        let mut state = self.lock();
        let state = &mut *state;
        state.in_flight = false;
        let wait = match result {
            Ok(()) => {
                state.failures.succeeded();
                Duration::ZERO
            }
            Err(error) => {
                for element in list.elements() {
                    let partition = (element.topic().to_owned(), element.partition());
                    if let Offset::Offset(offset) = element.offset()
                        && state.owned.contains(&partition)
                    {
                        state.waiting.entry(partition).or_insert(offset);
                    }
                }
                state.failures.failed(error)
            }
        };
        self.changed.notify_all();
        wait
    }

    /// Ends the commit thread.
    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

fn release(state: &mut CommitState, partitions: &[(String, i32)]) {
    for partition in partitions {
        state.owned.remove(partition);
        state.waiting.remove(partition);
    }
}

/// Commits failing in a row: how long to wait before the next one, and what to log.
#[derive(Default)]
struct Failures {
    /// How many failed in a row.
    count: u32,
    /// The error of the last one, and how many in a row failed with it.
    last: Option<(String, u32)>,
}

impl Failures {
    /// A commit failed with `error`: logs it unless it is the same as the last one's
    /// (then once every [`COMMIT_FAILURE_LOG_EVERY`] failures) and returns how long to
    /// wait before the next commit.
    fn failed(&mut self, error: String) -> Duration {
        self.count = self.count.saturating_add(1);
        let repeats = match &mut self.last {
            Some((last, repeats)) if *last == error => {
                *repeats += 1;
                *repeats
            }
            last => {
                *last = Some((error, 1));
                1
            }
        };
        let wait = COMMIT_RETRY_WAIT
            .saturating_mul(1 << (self.count - 1).min(16))
            .min(COMMIT_RETRY_MAX);
        if let Some((error, _)) = &self.last
            && (repeats == 1 || repeats % COMMIT_FAILURE_LOG_EVERY == 0)
        {
            tracing::warn!(%error, failures = self.count, retry_in = ?wait, "committing offsets failed; trying again");
        }
        wait
    }

    /// A commit succeeded.
    fn succeeded(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "committing offsets works again");
        }
        *self = Self::default();
    }
}

/// Sends the stored offsets, one commit at a time, until the consumer stops, waiting
/// longer after each failure in a row.
fn commit_thread(consumer: &BaseConsumer<GroupContext>) {
    let commits = &consumer.context().commits;
    while let Some(list) = commits.take(true, &[]) {
        let wait = commits.send(consumer, &list);
        if !wait.is_zero() {
            let state = commits.lock();
            let _ = commits
                .changed
                .wait_timeout_while(state, wait, |state| !state.closed);
        }
    }
}

/// Commits the stored offsets now, after the commit on its way, and waits for the answer;
/// releases `giving_up`, whose offsets are sent this once more. A failure is logged:
/// those records are read again after a restart.
fn commit_now(consumer: &BaseConsumer<GroupContext>, giving_up: &[(String, i32)]) {
    let commits = &consumer.context().commits;
    if let Some(list) = commits.take(false, giving_up) {
        commits.send(consumer, &list);
    }
}

/// Offsets committed to consumer groups, through the consumers of one [`KafkaClient`]
/// that are members of them (a group only takes commits from its members). Clones share
/// the consumers.
///
/// Offsets here are Kafka's: the committed offset is that of the next record to read.
#[derive(Clone)]
pub struct GroupOffsets {
    settings: Arc<KafkaSettings>,
    members: Arc<Mutex<Vec<Member>>>,
}

impl std::fmt::Debug for GroupOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupOffsets").finish_non_exhaustive()
    }
}

impl GroupOffsets {
    pub(crate) fn new(settings: Arc<KafkaSettings>) -> Self {
        Self {
            settings,
            members: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn register(&self, member: Member) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|m| m.consumer.strong_count() > 0);
        members.push(member);
    }

    /// A live consumer of `group` that is not stopping, holding `partition` of `topic`
    /// when one is given.
    fn member(
        &self,
        group: &str,
        partition: Option<(&str, i32)>,
    ) -> Option<Arc<BaseConsumer<GroupContext>>> {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members
            .iter()
            .filter(|m| m.group == group)
            .filter_map(|m| Some((m, m.consumer.upgrade()?)))
            .filter(|(_, consumer)| !consumer.context().stopping.load(Ordering::SeqCst))
            .filter(|(m, _)| {
                partition.is_none_or(|(topic, partition)| {
                    m.assignment
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&(topic.to_owned(), partition))
                })
            })
            .map(|(_, consumer)| consumer)
            .next()
    }

    /// The committed offset of `group` in `partition` of `stream`: the offset of the next
    /// record to read, or `None` when the group has committed none.
    ///
    /// # Errors
    ///
    /// [`KafkaError::NotAssigned`] when no consumer of `group` was made by this client;
    /// [`KafkaError::Offsets`] when the broker cannot be asked.
    pub async fn committed(
        &self,
        group: &str,
        stream: &str,
        partition: i32,
    ) -> Result<Option<i64>, KafkaError> {
        let topic = self.settings.topic(stream);
        let not_assigned = || KafkaError::NotAssigned {
            group: group.to_owned(),
            topic: topic.clone(),
            partition,
        };
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        // The coordinator may be moving or loading (right after a broker restart, say):
        // ask again for a while before giving up, through whichever member is live then.
        let mut wait = Duration::from_millis(100);
        let committed = loop {
            let consumer = self.member(group, None).ok_or_else(not_assigned)?;
            let list = list.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                consumer.committed_offsets(list, OFFSETS_TIMEOUT)
            })
            .await
            .map_err(|_| KafkaError::Closed)?
            .map_err(|source| KafkaError::Offsets {
                group: group.to_owned(),
                action: "read",
                source,
            });
            match outcome {
                Err(error) if error.is_retriable() && wait < OFFSETS_TIMEOUT => {
                    tracing::warn!(group, %error, "reading committed offsets failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                outcome => break outcome?,
            }
        };
        Ok(committed
            .find_partition(&topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            }))
    }

    /// Commits, for each (stream, partition, next offset), the offset of the next record
    /// to read (one past the last record handled, unlike [`KafkaConsumer::stored`]), through the consumers of `group` that hold the partitions.
    ///
    /// It returns without waiting for the broker: each consumer sends its commits one at
    /// a time, the next one as soon as the broker answered the last, with the newest
    /// offsets stored meanwhile. Before a consumer gives up partitions or leaves the group,
    /// it waits for the answer to what was stored. A failed commit is logged and sent
    /// again unless newer offsets came (at worst, records are read again, never skipped).
    ///
    /// # Errors
    ///
    /// [`KafkaError::NotAssigned`] when no consumer of this client holds a partition;
    /// then none of the offsets is committed.
    pub async fn commit(
        &self,
        group: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<(), KafkaError> {
        // Every partition's member first: either all offsets are stored or none.
        let mut found = Vec::with_capacity(offsets.len());
        for &(stream, partition, next) in offsets {
            let topic = self.settings.topic(stream);
            let consumer = self
                .member(group, Some((&topic, partition)))
                .ok_or_else(|| KafkaError::NotAssigned {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    partition,
                })?;
            found.push((consumer, (topic, partition), next));
        }
        for (consumer, partition, next) in found {
            consumer.context().commits.store([(partition, next)]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(number: i32) -> (String, i32) {
        ("prefix.people".to_owned(), number)
    }

    /// The (partition, offset) pairs of a list, sorted.
    fn offsets(list: &TopicPartitionList) -> Vec<(i32, Offset)> {
        let mut found: Vec<(i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        found.sort_by_key(|(partition, _)| *partition);
        found
    }

    #[test]
    fn offsets_of_partitions_given_up_are_never_sent_again() {
        let commits = Commits::default();
        commits.own(&[partition(0), partition(1)]);
        commits.store([(partition(0), 5), (partition(1), 7), (partition(2), 9)]);
        // Partition 2 is not owned: left out.
        let list = commits.take(true, &[]).expect("offsets wait");
        assert_eq!(
            offsets(&list),
            [(0, Offset::Offset(5)), (1, Offset::Offset(7))]
        );
        // Partition 1 is given up while the commit is on its way, which then fails:
        // only partition 0's offset waits again.
        commits.release(&[partition(1)]);
        commits.answered(&list, Err("coordinator unavailable".to_owned()));
        let list = commits.take(false, &[]).expect("the failed offset waits");
        assert_eq!(offsets(&list), [(0, Offset::Offset(5))]);

        // Revocation: the last commit takes partition 0's offset once more; after it
        // failed, nothing waits and newer offsets of partition 0 are not stored.
        commits.answered(&list, Ok(()));
        commits.store([(partition(0), 6)]);
        let list = commits.take(false, &[partition(0)]).expect("offsets wait");
        assert_eq!(offsets(&list), [(0, Offset::Offset(6))]);
        commits.answered(&list, Err("coordinator unavailable".to_owned()));
        commits.store([(partition(0), 8)]);
        assert!(commits.take(false, &[]).is_none());
    }

    #[test]
    fn failed_commits_wait_longer_each_time_up_to_a_limit() {
        let mut failures = Failures::default();
        let waits: Vec<Duration> = (0..10)
            .map(|_| failures.failed("coordinator unavailable".to_owned()))
            .collect();
        assert_eq!(waits[0], COMMIT_RETRY_WAIT);
        assert_eq!(waits[1], COMMIT_RETRY_WAIT * 2);
        assert_eq!(waits[2], COMMIT_RETRY_WAIT * 4);
        assert_eq!(waits[9], COMMIT_RETRY_MAX);
        assert_eq!(
            failures.last,
            Some(("coordinator unavailable".to_owned(), 10))
        );
        // Another error starts counting its repeats anew; a success starts over.
        failures.failed("not coordinator".to_owned());
        assert_eq!(failures.last, Some(("not coordinator".to_owned(), 1)));
        failures.succeeded();
        assert_eq!(failures.failed("timed out".to_owned()), COMMIT_RETRY_WAIT);
    }

    #[test]
    fn the_commit_and_lag_threads_end_when_the_polling_function_panics() {
        let (events, _) = mpsc::channel(1);
        let context = GroupContext {
            settings: Arc::new(KafkaSettings::new("127.0.0.1:9")),
            events,
            replies: Mutex::new(std_mpsc::channel().1),
            batch: Mutex::default(),
            assignment: Arc::default(),
            commits: Commits::default(),
            stopping: Arc::default(),
            wakeup: Arc::default(),
            read_headers: Arc::default(),
            streams: StreamNames::default(),
            lag: Arc::new(Lag::new("billing", None)),
        };
        // Never connects: the lag of no partition asks no broker.
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "billing")
            .create()
            .unwrap();
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|scope| {
                let _stop = StopThreads(&context);
                scope.spawn(|| while context.commits.take(true, &[]).is_some() {});
                scope.spawn(|| context.lag.run(&consumer));
                panic!("the polling function failed");
            });
        }));
        // Without the guard, the scope would wait for both threads forever.
        assert!(ended.is_err());
    }

    #[test]
    fn thread_names_fit_in_15_characters() {
        assert_eq!(thread_name("commit", "billing"), "commit-billing");
        assert_eq!(thread_name("kafka", "a-very-long-group"), "kafka-a-very-lo");
    }
}
