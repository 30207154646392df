//! Positions committed to Kafka consumer groups: through the group's members made by
//! one client while they run, and from outside the group while it has none.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logpipe_core::{
    BackendError, BackendErrorKind, OffsetStore, PartitionRef, Position, StoreError,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::backend::kafka_partition;
use crate::consumer::context::GroupContext;
use crate::consumer::{Member, OFFSETS_TIMEOUT};
use crate::{KafkaError, KafkaSettings, SettingsLayer};

/// Offsets committed to consumer groups, through the consumers of one [`KafkaClient`](crate::KafkaClient)
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

    pub(crate) fn register(&self, member: Member) {
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
    /// to read (one past the last record handled, unlike [`KafkaConsumer::stored`](crate::KafkaConsumer::stored)), through the consumers of `group` that hold the partitions.
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

    /// The offsets `group` committed for `partitions` of `stream` (the offset of the next
    /// record to read), asked from outside the group.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Offsets`] when the brokers cannot be asked.
    pub async fn committed_outside(
        &self,
        group: &str,
        stream: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        let topic = self.settings.topic(stream);
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&topic, *partition);
        }
        let consumer = outside_consumer(&self.settings, group)?;
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(list, OFFSETS_TIMEOUT))
                .await
                .map_err(|_| KafkaError::Closed)?
                .map_err(|source| offsets_error(group, "read", source))?;
        Ok(offsets_in(&committed, &topic, partitions))
    }

    /// Commits, for `group`, each (stream, partition, next offset) of `offsets` (the
    /// offset of the next record to read), from outside the group, all in one request.
    /// The group must have no active members: the broker refuses commits from outside a
    /// group in use ([`is_group_busy`]).
    ///
    /// # Errors
    ///
    /// [`KafkaError::Offsets`] when the broker refuses, such as when the group has active
    /// members; then none of the offsets is committed.
    pub async fn commit_outside(
        &self,
        group: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (stream, partition, next) in offsets {
            list.add_partition_offset(
                &self.settings.topic(stream),
                *partition,
                Offset::Offset(*next),
            )
            .map_err(|source| offsets_error(group, "committed", source))?;
        }
        let consumer = outside_consumer(&self.settings, group)?;
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Closed)?
            .map_err(|source| offsets_error(group, "committed", source))
    }
}

/// A consumer with `group.id` `group` that never joins the group.
pub(crate) fn outside_consumer(
    settings: &KafkaSettings,
    group: &str,
) -> Result<BaseConsumer, KafkaError> {
    settings
        .client_config(SettingsLayer::Consumer, Some(group))
        .create()
        .map_err(|source| KafkaError::Client {
            role: "consumer",
            source,
        })
}

/// Positions committed to the consumer group. The group's committed offset is the next
/// record to read, so a stored position `p` is committed as `p + 1`, and loads back as
/// the committed offset minus one.
///
/// While consumers of the group made by the same [`KafkaClient`](crate::KafkaClient)
/// run, positions go through the members that hold the partitions (a group takes commits
/// only from its members), and those consumers start each assigned partition at the
/// committed offset by themselves ([`resumed_by_backend`](OffsetStore::resumed_by_backend)).
/// With no member running here, positions are read and committed from outside the group,
/// which the broker allows only while the group has no active members at all (stop its
/// consumers first, as `logpipe offsets set` says).
impl OffsetStore for GroupOffsets {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        let number = kafka_partition(partition).map_err(|e| store_error(group, "loaded", e))?;
        let committed = if self.member(group, None).is_some() {
            self.committed(group, &partition.stream, number).await
        } else {
            self.committed_outside(group, &partition.stream, &[number])
                .await
                .map(|found| found.first().and_then(|(_, offset)| *offset))
        };
        let next = committed.map_err(|e| store_error(group, "loaded", e))?;
        Ok(next.map(|next| Position::Offset(next - 1)))
    }

    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        let mut offsets = Vec::with_capacity(positions.len());
        for (partition, position) in positions {
            let number = kafka_partition(partition).map_err(|e| store_error(group, "stored", e))?;
            let Position::Offset(offset) = position else {
                return Err(StoreError::Unsupported {
                    partition: partition.clone(),
                    position: position.clone(),
                    reason: "a Kafka consumer group commits offsets",
                });
            };
            offsets.push((partition.stream.as_ref(), number, offset.saturating_add(1)));
        }
        if offsets.is_empty() {
            return Ok(());
        }
        if self.member(group, None).is_some() {
            return self
                .commit(group, &offsets)
                .await
                .map_err(|e| store_error(group, "stored", e));
        }
        self.commit_outside(group, &offsets).await.map_err(|error| {
            let busy = is_group_busy(&error);
            let mapped = BackendError::from(error);
            let mapped = if busy {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    "the group has active members: stop its consumers first",
                )
                .with_source(mapped)
            } else {
                mapped
            };
            store_error(group, "stored", mapped)
        })
    }

    fn resumed_by_backend(&self) -> bool {
        true
    }
}

fn store_error(group: &str, action: &'static str, source: impl Into<BackendError>) -> StoreError {
    StoreError::Backend {
        group: group.to_owned(),
        action,
        source: source.into(),
    }
}

/// The offset of each of `partitions` of `topic` in `list`, `None` where it has none.
pub(crate) fn offsets_in(
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

pub(crate) fn offsets_error(group: &str, action: &'static str, source: RdKafkaError) -> KafkaError {
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
