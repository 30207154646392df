//! The consumer: a group member polled on a thread of its own (`poll`), whose
//! rebalances wait for the application (`context`), and whose commits go out from a
//! thread of their own (`commits`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak, mpsc as std_mpsc};
use std::time::Duration;

use logpipe_core::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::topic_partition_list::Offset;
use tokio::sync::mpsc;

use crate::connection_log::ConnectionLog;
use crate::lag::Lag;
use crate::{KafkaClient, KafkaError, KafkaSettings, SettingsLayer};

mod commits;
pub(crate) mod context;
mod poll;

use commits::{Commits, commit_now, commit_thread};
use context::GroupContext;
use poll::{Wakeup, poll_thread};

/// Records handed over at most in one [`KafkaEvent::Records`].
const MAX_BATCH: usize = 1000;
/// Events waiting for the application, at most; past this the polling thread waits.
const EVENT_CAPACITY: usize = 4;
/// How long reading or committing offsets may take.
pub(crate) const OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub key: Option<Bytes>,
    /// The value (empty for a null value).
    pub value: Bytes,
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
#[non_exhaustive]
pub enum SeekTo {
    /// Just after this offset.
    After(i64),
    /// Where the group left off (its committed offset), else where `auto.offset.reset`
    /// says (the earliest record by default). librdkafka reads the committed offset as
    /// part of the assignment.
    GroupOffset,
}

pub(crate) enum Reply {
    Seek {
        topic: String,
        partition: i32,
        offset: Offset,
    },
    /// Stop (`true`) or start again (`false`) fetching a partition.
    Pause {
        topic: String,
        partition: i32,
        paused: bool,
    },
    /// The application is done with the last assignment or revocation.
    Done,
}

/// What the polling thread hands the application.
pub(crate) enum Handover {
    Records(Polled),
    Event(KafkaEvent),
}

pub(crate) type EventResult = Result<Handover, KafkaError>;

/// Records polled and not handed over yet. Their keys and values sit in one buffer, so
/// that the polling thread allocates once per batch; [`KafkaConsumer::next_event`] hands
/// each record slices of it (the buffer is freed when the last of them is dropped).
#[derive(Default)]
pub(crate) struct Polled {
    bytes: Vec<u8>,
    pub(crate) records: Vec<PolledRecord>,
}

/// A [`KafkaRecord`] whose key and value are ranges of [`Polled::bytes`].
pub(crate) struct PolledRecord {
    pub(crate) stream: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Range<usize>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl Polled {
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// An empty batch with room for one as large as this.
    pub(crate) fn like(&self) -> Self {
        Self {
            bytes: Vec::with_capacity(self.bytes.len()),
            records: Vec::with_capacity(self.records.len()),
        }
    }

    fn into_records(self) -> Vec<KafkaRecord> {
        let Polled { bytes, records } = self;
        let bytes = Bytes::from(bytes);
        records
            .into_iter()
            .map(|r| KafkaRecord {
                stream: r.stream,
                partition: r.partition,
                offset: r.offset,
                key: r.key.map(|key| bytes.slice(key)),
                value: bytes.slice(r.value),
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

pub(crate) type StreamNames = Arc<Mutex<HashMap<String, Arc<str>>>>;

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins `group` to read `topics`; `reset`, when given, is the consumer's
    /// `auto.offset.reset`, over the settings.
    pub(crate) fn start(
        client: KafkaClient,
        group: &str,
        topics: Vec<String>,
        reset: Option<&str>,
    ) -> Result<Self, KafkaError> {
        let settings = Arc::clone(&client.inner_settings());
        let mut config = settings.client_config(SettingsLayer::Consumer, Some(group));
        if let Some(reset) = reset {
            config.set("auto.offset.reset", reset);
        }
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
            connections: client.connections(),
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
    pub fn seek(&mut self, stream: &str, partition: i32, to: SeekTo) -> Result<(), KafkaError> {
        let offset = match to {
            SeekTo::After(offset) => Offset::Offset(offset + 1),
            SeekTo::GroupOffset => Offset::Stored,
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

    /// Stops fetching `partition` of `stream` until [`resume`](Self::resume), as soon as
    /// the polling thread has handed over the records it is reading (those still come).
    /// librdkafka drops what it fetched ahead of the partition and fetches again from
    /// just after the last record read, so that nothing is skipped or read twice.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Closed`] when the consumer has stopped.
    pub fn pause(&mut self, stream: &str, partition: i32) -> Result<(), KafkaError> {
        self.set_paused(stream, partition, true)
    }

    /// Fetches `partition` of `stream` again after [`pause`](Self::pause), from just
    /// after the last record read.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Closed`] when the consumer has stopped.
    pub fn resume(&mut self, stream: &str, partition: i32) -> Result<(), KafkaError> {
        self.set_paused(stream, partition, false)
    }

    fn set_paused(&mut self, stream: &str, partition: i32, paused: bool) -> Result<(), KafkaError> {
        let topic = self.topic(stream);
        self.replies
            .send(Reply::Pause {
                topic,
                partition,
                paused,
            })
            .map_err(|_| KafkaError::Closed)?;
        self.wakeup.wake();
        Ok(())
    }

    /// Tells the consumer the positions the application stored, for each (stream,
    /// partition, offset) the offset of the last record it handled (not the next one to
    /// read, unlike [`GroupOffsets::commit`](crate::GroupOffsets::commit)): the lag gauge [`LAG_GAUGE`](crate::LAG_GAUGE)
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

/// A consumer of a group made by this client, through which the group takes commits.
pub(crate) struct Member {
    pub(crate) group: String,
    pub(crate) consumer: Weak<BaseConsumer<GroupContext>>,
    pub(crate) assignment: Arc<Mutex<HashSet<(String, i32)>>>,
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
        Arc::clone(&self.inner.settings)
    }

    fn connections(&self) -> Arc<ConnectionLog> {
        Arc::clone(&self.inner.connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_and_lag_threads_end_when_the_polling_function_panics() {
        let (events, _) = mpsc::channel(1);
        let context = GroupContext {
            settings: Arc::new(KafkaSettings::new("127.0.0.1:9")),
            connections: Arc::new(ConnectionLog::new("127.0.0.1:9")),
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
