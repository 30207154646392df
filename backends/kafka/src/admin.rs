//! Operator calls: topics, their partitions and watermarks, and the committed offsets of
//! consumer groups read and written from outside the group.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::producer::METADATA_TIMEOUT;
use crate::{KafkaClient, KafkaError, SettingsLayer};

/// How long reading or committing a group's offsets may take.
const GROUP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The streams of the cluster: topic names without the prefix, of the topics that
    /// have it, sorted. Internal topics (`__...`) are left out.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Metadata`] when the brokers cannot be asked.
    pub async fn list_streams(&self) -> Result<Vec<String>, KafkaError> {
        let inner = Arc::clone(&self.inner);
        let metadata = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(None, METADATA_TIMEOUT)
        })
        .await
        .map_err(|_| KafkaError::Closed)?
        .map_err(|source| KafkaError::Metadata {
            topic: String::new(),
            source,
        })?;
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
                    .fetch_metadata(topic, METADATA_TIMEOUT)
                    .map_err(|source| KafkaError::Metadata {
                        topic: topic.unwrap_or_default().to_owned(),
                        source,
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

    /// Creates the topic of `stream` with `partitions` partitions and the configured
    /// replication factor.
    ///
    /// # Errors
    ///
    /// [`KafkaError::CreateTopic`] when the cluster refuses, such as when the topic exists.
    pub async fn create_stream(&self, stream: &str, partitions: i32) -> Result<(), KafkaError> {
        self.create_topic_with(&self.settings().topic(stream), partitions, false)
            .await
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
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
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
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
                .map_err(|source| KafkaError::Metadata {
                    topic: name.clone(),
                    source,
                })?;
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
                        .fetch_watermarks(&name, partition, METADATA_TIMEOUT)
                        .map_err(|source| KafkaError::Metadata {
                            topic: name.clone(),
                            source,
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
        let consumer = self.outside_consumer("logpipe-admin")?;
        let found =
            tokio::task::spawn_blocking(move || consumer.offsets_for_times(list, GROUP_TIMEOUT))
                .await
                .map_err(|_| KafkaError::Closed)?
                .map_err(|source| offsets_error("", "read", source))?;
        Ok(offsets_in(&found, &topic, partitions))
    }

    /// The offsets `group` committed for `partitions` of `stream` (the offset of the next
    /// record to read), asked from outside the group.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Offsets`] when the brokers cannot be asked.
    pub async fn group_committed(
        &self,
        group: &str,
        stream: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        let topic = self.settings().topic(stream);
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&topic, *partition);
        }
        let consumer = self.outside_consumer(group)?;
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(list, GROUP_TIMEOUT))
                .await
                .map_err(|_| KafkaError::Closed)?
                .map_err(|source| offsets_error(group, "read", source))?;
        Ok(offsets_in(&committed, &topic, partitions))
    }

    /// Commits, for `group`, the offset of the next record to read in each of `offsets`
    /// (partition, next offset) of `stream`, from outside the group. The group must have
    /// no active members: the broker refuses commits from outside a group in use.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Offsets`] when the broker refuses, such as when the group has active
    /// members.
    pub async fn group_commit(
        &self,
        group: &str,
        stream: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), KafkaError> {
        let topic = self.settings().topic(stream);
        let mut list = TopicPartitionList::new();
        for (partition, next) in offsets {
            list.add_partition_offset(&topic, *partition, Offset::Offset(*next))
                .map_err(|source| offsets_error(group, "committed", source))?;
        }
        let consumer = self.outside_consumer(group)?;
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Closed)?
            .map_err(|source| offsets_error(group, "committed", source))
    }

    /// A consumer with `group.id` `group` that never joins the group.
    fn outside_consumer(&self, group: &str) -> Result<BaseConsumer, KafkaError> {
        self.settings()
            .client_config(SettingsLayer::Consumer, Some(group))
            .create()
            .map_err(|source| KafkaError::Client {
                role: "consumer",
                source,
            })
    }
}

/// The offset of each of `partitions` of `topic` in `list`, `None` where it has none.
fn offsets_in(
    list: &TopicPartitionList,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i32, Option<i64>)> {
    partitions
        .iter()
        .map(|partition| {
            let offset = list
                .find_partition(topic, *partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            (*partition, offset)
        })
        .collect()
}

fn offsets_error(group: &str, action: &'static str, source: RdKafkaError) -> KafkaError {
    KafkaError::Offsets {
        group: group.to_owned(),
        action,
        source,
    }
}

/// Whether `error` is the broker's refusal of a commit from outside a group with active
/// members.
pub fn is_group_busy(error: &KafkaError) -> bool {
    matches!(
        error.code(),
        Some(
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
        )
    )
}
