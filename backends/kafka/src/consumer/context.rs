//! Rebalances: the consumer's context hands assignments and revocations to the
//! application as events, waits until it has dealt with them, and hands over the
//! records the polling thread read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc;

use super::commits::{Commits, commit_now};
use super::poll::{Wakeup, set_paused};
use super::{
    EventResult, Handover, MAX_BATCH, Polled, PolledRecord, Reply, StreamNames, StreamPartition,
};
use crate::connection_log::ConnectionLog;
use crate::lag::Lag;
use crate::{KafkaError, KafkaEvent, KafkaSettings};

/// What the application asked for while it dealt with a rebalance.
#[derive(Default)]
pub(crate) struct Handshake {
    /// Where partitions start.
    seeks: HashMap<(String, i32), Offset>,
    /// Partitions paused (`true`) or resumed, in the order asked.
    pauses: Vec<((String, i32), bool)>,
}

impl Handshake {
    /// Pauses and resumes what the application asked for, in order.
    fn apply_pauses(self, consumer: &BaseConsumer<GroupContext>) {
        for (partition, paused) in self.pauses {
            set_paused(consumer, &[partition], paused);
        }
    }
}

/// The consumer's context: turns rebalances into events and waits for the application.
pub(crate) struct GroupContext {
    pub(crate) settings: Arc<KafkaSettings>,
    /// What the clients of this cluster said about their connections.
    pub(crate) connections: Arc<ConnectionLog>,
    pub(crate) events: mpsc::Sender<EventResult>,
    pub(crate) replies: Mutex<std_mpsc::Receiver<Reply>>,
    /// Records polled and not yet handed over.
    pub(crate) batch: Mutex<Polled>,
    /// The partitions assigned now (full topic names).
    pub(crate) assignment: Arc<Mutex<HashSet<(String, i32)>>>,
    /// Offsets to commit.
    pub(crate) commits: Commits,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) wakeup: Arc<Wakeup>,
    /// Whether records are read with their headers.
    pub(crate) read_headers: Arc<AtomicBool>,
    /// Stream names of topics, made once.
    pub(crate) streams: StreamNames,
    /// The lag of the assigned partitions.
    pub(crate) lag: Arc<Lag>,
}

impl GroupContext {
    pub(crate) fn stream(&self, topic: &str) -> Arc<str> {
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
    pub(crate) fn push(
        &self,
        message: &BorrowedMessage<'_>,
        last: &mut Option<(String, Arc<str>)>,
    ) -> usize {
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
    pub(crate) fn hand_over(&self) -> bool {
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
    pub(crate) fn offer(&self) -> bool {
        let count = self
            .batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .len();
        let taken_all = self.events.capacity() == self.events.max_capacity();
        count == 0 || (count < MAX_BATCH && !taken_all) || self.hand_over()
    }

    pub(crate) fn report(&self, error: KafkaError) -> bool {
        self.hand_over() && self.events.blocking_send(Err(error)).is_ok()
    }

    /// Sends a rebalance event after the records read before it, and waits until the
    /// application has dealt with it. Returns the offsets it sought, and the partitions
    /// it paused (`true`) or resumed meanwhile, in order.
    pub(crate) fn handshake(&self, event: KafkaEvent) -> Handshake {
        let mut answer = Handshake::default();
        if self.stopping.load(Ordering::SeqCst) || !self.hand_over() {
            return answer;
        }
        if self
            .events
            .blocking_send(Ok(Handover::Event(event)))
            .is_err()
        {
            return answer;
        }
        let replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match replies.recv() {
                Ok(Reply::Seek {
                    topic,
                    partition,
                    offset,
                }) => {
                    answer.seeks.insert((topic, partition), offset);
                }
                Ok(Reply::Pause {
                    topic,
                    partition,
                    paused,
                }) => answer.pauses.push(((topic, partition), paused)),
                Ok(Reply::Done) | Err(_) => return answer,
            }
        }
    }

    pub(crate) fn partitions(&self, list: &TopicPartitionList) -> Vec<StreamPartition> {
        list.elements()
            .iter()
            .map(|e| (self.stream(e.topic()), e.partition()))
            .collect()
    }

    pub(crate) fn assignment(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connections.log(level, fac, log_message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        self.connections.error(&error, reason);
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
                let answer = self.handshake(KafkaEvent::Assigned(self.partitions(tpl)));
                for (topic, partition) in &elements {
                    let offset = answer
                        .seeks
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
                        answer.apply_pauses(consumer);
                    }
                    Err(source) => {
                        tracing::error!(error = %source, "assigning partitions failed");
                        self.report(KafkaError::Consume { source });
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handshake(KafkaEvent::Revoked(self.partitions(tpl)))
                    .apply_pauses(consumer);
                // librdkafka keeps a partition paused across a rebalance: one given up
                // here starts unpaused when it comes back.
                set_paused(consumer, &elements, false);
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
                set_paused(consumer, &lost, false);
                self.commits.release(&lost);
                self.lag.revoked(&lost);
            }
        }
    }
}
