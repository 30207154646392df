//! Operator calls: topics, their partitions and watermarks, offsets by time, and the
//! [`Admin`] answers of a [`KafkaClient`].

use std::sync::Arc;
use std::time::SystemTime;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use logpipe_core::admin::offset_log::{self, OffsetRange};
use logpipe_core::admin::partition_count;
use logpipe_core::time::millis;
use logpipe_core::{
    Admin, Backend, BackendError, Extent, PartitionInfo, PartitionRef, RangeBound, StartFrom,
};

use crate::backend::{KafkaConsumerBackend, kafka_partition, partition_name};
use crate::consumer::OFFSETS_TIMEOUT;
use crate::group_offsets::{offsets_error, offsets_in, outside_consumer};
use crate::{KafkaClient, KafkaError};

/// A partition of a topic with its watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionWatermarks {
    /// The partition number.
    pub partition: i32,
    /// The offset of the oldest record kept.
    pub low: i64,
    /// The offset the next record written will get.
    pub high: i64,
}

impl KafkaClient {
    /// Whether every partition of the topics of `streams` has a leader, asking the brokers
    /// for the metadata of these topics only. Patterns (`^...`) are left out; with none
    /// but patterns, whether the brokers answer.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Metadata`] when the brokers cannot be asked.
    pub async fn streams_led(&self, streams: &[String]) -> Result<bool, KafkaError> {
        let topics: Vec<String> = streams
            .iter()
            .map(|stream| self.settings().topic(stream))
            .filter(|topic| !topic.starts_with('^'))
            .collect();
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let client = inner.producer.client();
            let fetch = |topic: Option<&str>| {
                client
                    .fetch_metadata(topic, inner.settings.request_timeout())
                    .map_err(|source| {
                        KafkaError::metadata(topic.unwrap_or_default(), source, &inner.connections)
                    })
            };
            if topics.is_empty() {
                return fetch(None).map(|_| true);
            }
            for topic in &topics {
                let metadata = fetch(Some(topic))?;
                let led = metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0)
                });
                if !led {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|_| KafkaError::Closed)?
    }

    /// Creates `topic` with `partitions` partitions (-1: the broker's default) and the
    /// configured replication factor; an existing topic is an error unless `exists_ok`.
    pub(crate) async fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        exists_ok: bool,
    ) -> Result<(), KafkaError> {
        let new_topic = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(self.settings().topic_replication),
        );
        let options =
            AdminOptions::new().operation_timeout(Some(self.settings().request_timeout()));
        let results = self
            .inner
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|source| KafkaError::CreateTopic {
                topic: topic.to_owned(),
                source,
            })?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if exists_ok => {}
                Err((_, code)) => {
                    return Err(KafkaError::CreateTopic {
                        topic: topic.to_owned(),
                        source: RdKafkaError::AdminOp(code),
                    });
                }
            }
        }
        // Known to exist from now on: a record sent at once goes to librdkafka, which
        // waits for the topic's metadata to reach the broker it asks (right after the
        // creation it may not have yet, and a check of our own would call the topic
        // missing).
        self.mark_known(topic);
        Ok(())
    }

    /// The partitions of `stream` with their watermarks, by partition number.
    ///
    /// # Errors
    ///
    /// [`KafkaError::TopicNotFound`] when the topic does not exist;
    /// [`KafkaError::Metadata`] when the brokers cannot be asked.
    pub async fn watermarks(&self, stream: &str) -> Result<Vec<PartitionWatermarks>, KafkaError> {
        let topic = self.settings().topic(stream);
        let inner = Arc::clone(&self.inner);
        let name = topic.clone();
        tokio::task::spawn_blocking(move || {
            let client = inner.producer.client();
            let metadata = client
                .fetch_metadata(Some(&name), inner.settings.request_timeout())
                .map_err(|source| KafkaError::metadata(&name, source, &inner.connections))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| KafkaError::TopicNotFound {
                    topic: name.clone(),
                })?;
            let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            partitions
                .into_iter()
                .map(|partition| {
                    let (low, high) = client
                        .fetch_watermarks(&name, partition, inner.settings.request_timeout())
                        .map_err(|source| {
                            KafkaError::metadata(&name, source, &inner.connections)
                        })?;
                    Ok(PartitionWatermarks {
                        partition,
                        low,
                        high,
                    })
                })
                .collect()
        })
        .await
        .map_err(|_| KafkaError::Closed)?
    }

    /// For each of `partitions` of `stream`, the offset of the first record written at or
    /// after `timestamp_ms`, or `None` when there is none yet.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Offsets`] when the brokers cannot be asked.
    pub async fn offsets_for_time(
        &self,
        stream: &str,
        partitions: &[i32],
        timestamp_ms: i64,
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        let topic = self.settings().topic(stream);
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition_offset(&topic, *partition, Offset::Offset(timestamp_ms))
                .map_err(|source| offsets_error("", "read", source))?;
        }
        let consumer = outside_consumer(self.settings(), "logpipe-admin")?;
        let found =
            tokio::task::spawn_blocking(move || consumer.offsets_for_times(list, OFFSETS_TIMEOUT))
                .await
                .map_err(|_| KafkaError::Closed)?
                .map_err(|source| offsets_error("", "read", source))?;
        Ok(offsets_in(&found, &topic, partitions))
    }
}

impl Admin for KafkaClient {
    type Range = OffsetRange<KafkaConsumerBackend>;

    /// The topics with the configured prefix, without it; internal topics (`__...`) are
    /// left out.
    async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
        let inner = Arc::clone(&self.inner);
        let metadata = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(None, inner.settings.request_timeout())
        })
        .await
        .map_err(|_| KafkaError::Closed)?
        .map_err(|source| KafkaError::metadata("", source, &self.inner.connections))?;
        self.inner.connections.answered();
        let prefix = &self.settings().topic_prefix;
        let mut streams: Vec<String> = metadata
            .topics()
            .iter()
            .map(|topic| topic.name())
            .filter(|name| !name.starts_with("__") && name.starts_with(prefix.as_str()))
            .map(|name| self.settings().stream(name).to_owned())
            .collect();
        streams.sort();
        Ok(streams)
    }

    /// Creates the topic of `stream` with `partitions` partitions and the configured
    /// replication factor.
    async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), BackendError> {
        logpipe_core::check_stream_name(stream)?;
        let count = partition_count(partitions)?;
        Ok(self
            .create_topic_with(&self.settings().topic(stream), count, false)
            .await?)
    }

    async fn describe_stream(&self, stream: &str) -> Result<Vec<PartitionInfo>, BackendError> {
        Ok(self
            .watermarks(stream)
            .await?
            .into_iter()
            .map(|w| PartitionInfo {
                partition: PartitionRef::new(stream, partition_name(w.partition)),
                extent: Extent::Offsets {
                    first: w.low,
                    next: w.high,
                },
            })
            .collect())
    }

    /// Read by a consumer of a group of its own, `logpipe-replay-PID-TIME`, which commits
    /// nothing.
    async fn offsets_at(
        &self,
        stream: &str,
        partitions: &[PartitionRef],
        time: SystemTime,
    ) -> Result<Vec<Option<i64>>, BackendError> {
        let numbers = partitions
            .iter()
            .map(kafka_partition)
            .collect::<Result<Vec<i32>, _>>()?;
        let found = self
            .offsets_for_time(stream, &numbers, millis(time))
            .await?;
        Ok(found.into_iter().map(|(_, offset)| offset).collect())
    }

    async fn read_range(
        &self,
        stream: &str,
        from: &RangeBound,
        until: &RangeBound,
    ) -> Result<Self::Range, BackendError> {
        let partitions = self.describe_stream(stream).await?;
        let group = format!(
            "logpipe-replay-{}-{}",
            std::process::id(),
            millis(SystemTime::now())
        );
        let consumer = self.open_consumer(&group, &[stream.to_owned()], StartFrom::Earliest)?;
        offset_log::read_range(self, stream, partitions, from, until, consumer).await
    }
}
