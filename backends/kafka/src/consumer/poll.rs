//! The polling thread: polls librdkafka, batches the records it reads, and sleeps until
//! librdkafka, the application or a seek wakes it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::context::GroupContext;
use super::{MAX_BATCH, OFFSETS_TIMEOUT, Reply};
use crate::{KafkaClient, KafkaError};

/// How long the polling thread sleeps at most when there is nothing to read. librdkafka,
/// a stop and a seek wake it at once; this bounds the wait should an event slip by.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Wakes the polling thread when it sleeps: librdkafka when its queue gets something, the
/// application when it stops the consumer or asks for a seek.
#[derive(Default)]
pub(crate) struct Wakeup {
    woken: Mutex<bool>,
    condvar: Condvar,
}

impl Wakeup {
    pub(crate) fn wake(&self) {
        *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.condvar.notify_one();
    }

    /// Sleeps until woken (since the last sleep) or for `timeout`.
    pub(crate) fn sleep(&self, timeout: Duration) {
        let woken = self.woken.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut woken, _) = self
            .condvar
            .wait_timeout_while(woken, timeout, |woken| !*woken)
            .unwrap_or_else(PoisonError::into_inner);
        *woken = false;
    }
}

pub(crate) fn poll_thread(
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
    let subscribed = checked.and_then(|()| {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| KafkaError::Consume { source })
    });
    if let Err(reason) = subscribed {
        context.report(KafkaError::NotStarted {
            reason: Box::new(reason),
        });
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
                context.connections.answered();
                let mut count = context.push(&message, &mut last_stream);
                drop(message);
                while count < MAX_BATCH {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(message)) => count = context.push(&message, &mut last_stream),
                        Some(Err(source)) => {
                            if !read_failed(context, source) {
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
                if !read_failed(context, source) {
                    return;
                }
            }
        }
    }
}

/// Hands a read error to the application, unless librdkafka gets over it by itself: the
/// connection to one broker failed (`BrokerTransportFailure`, which the connection log
/// says once), and librdkafka reconnects and reads the partitions that broker led from
/// their new leaders meanwhile. Reported, each such error would count as a failed read
/// and hold up the records of every other partition. When no broker can be reached,
/// librdkafka says `AllBrokersDown`, which is handed over. Returns false when nobody
/// listens any more.
fn read_failed(context: &GroupContext, source: RdKafkaError) -> bool {
    if source.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure) {
        tracing::debug!(error = %source, "a broker connection failed; librdkafka connects again");
        return true;
    }
    context.report(KafkaError::Consume { source })
}

/// Applies seeks, pauses and resumes asked for outside a rebalance.
fn seek_now(consumer: &BaseConsumer<GroupContext>) {
    let replies = consumer
        .context()
        .replies
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while let Ok(reply) = replies.try_recv() {
        match reply {
            Reply::Seek {
                topic,
                partition,
                offset,
            } => {
                if let Err(source) = consumer.seek(&topic, partition, offset, OFFSETS_TIMEOUT) {
                    tracing::error!(topic, partition, error = %source, "seek failed");
                }
            }
            Reply::Pause {
                topic,
                partition,
                paused,
            } => set_paused(consumer, &[(topic, partition)], paused),
            Reply::Done => {}
        }
    }
}

/// Pauses or resumes fetching `partitions` (full topic names).
pub(super) fn set_paused(
    consumer: &BaseConsumer<GroupContext>,
    partitions: &[(String, i32)],
    paused: bool,
) {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    let done = if paused {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    if let Err(source) = done {
        tracing::error!(?partitions, paused, error = %source, "pausing or resuming failed");
    }
}
