//! Consumer lag: how many records of each assigned partition the application has not
//! handled yet, exported as the gauge [`LAG_GAUGE`] every [`LAG_INTERVAL`].
//!
//! The lag of a partition is its end offset (the high watermark; the last stable offset
//! under `isolation.level=read_committed`, librdkafka's default) minus the offset of the
//! next record the application handles: the one after the position it stored last, else
//! where it sought the partition, else where the group left off (its committed offset),
//! else where `auto.offset.reset` starts it. Records read ahead but not handled count as
//! lag. The end offsets are asked from the brokers by a thread of the consumer's own, so
//! the gauge stays right while the application is busy or stuck. When the brokers cannot
//! be asked, the last values are set again (so the gauge does not go stale and drop out
//! of `/metrics` exactly when the brokers are out of reach).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The gauge the consumers set: records behind per `group`, `stream` and `partition`.
pub const LAG_GAUGE: &str = "logpipe_kafka_consumer_lag";
/// How often the lag of every assigned partition is measured and the gauge set.
pub(crate) const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long one question to the brokers may take: short, since a consumer leaving its
/// group waits for the measurement under way (which stops between questions).
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// A partition (full topic name, number).
type Key = (String, i32);

/// An assigned partition.
struct Tracked {
    stream: Arc<str>,
    /// The offset of the next record the application handles, once known.
    next: Option<i64>,
    /// The gauge's last value, once measured.
    last: Option<f64>,
}

/// The lag of one consumer's partitions.
pub(crate) struct Lag {
    group: Arc<str>,
    /// Whether a partition without a committed offset starts at its end
    /// (`auto.offset.reset=latest`) rather than at its oldest record.
    reset_to_end: bool,
    partitions: Mutex<HashMap<Key, Tracked>>,
    closed: Mutex<bool>,
    wake: Condvar,
}

impl Lag {
    /// The lag of a member of `group` whose `auto.offset.reset` is `reset` (librdkafka's
    /// default when `None`).
    pub(crate) fn new(group: &str, reset: Option<&str>) -> Self {
        Self {
            group: group.into(),
            reset_to_end: matches!(reset, Some("latest" | "largest" | "end")),
            partitions: Mutex::new(HashMap::new()),
            closed: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    fn partitions(&self) -> MutexGuard<'_, HashMap<Key, Tracked>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Partitions assigned, each with its stream name and the offset it starts at
    /// ([`Offset::Stored`]: where the group left off).
    pub(crate) fn assigned(&self, partitions: impl IntoIterator<Item = (Key, Arc<str>, Offset)>) {
        let mut tracked = self.partitions();
        for (key, stream, start) in partitions {
            let next = match start {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            tracked.insert(
                key,
                Tracked {
                    stream,
                    next,
                    last: None,
                },
            );
        }
    }

    /// The application moved an assigned partition to `start`.
    pub(crate) fn sought(&self, key: &Key, start: Offset) {
        if let Some(tracked) = self.partitions().get_mut(key) {
            tracked.next = match start {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
        }
    }

    /// The application stored its positions: for each partition, the offset of the next
    /// record it handles.
    pub(crate) fn stored<'a>(&self, positions: impl IntoIterator<Item = (&'a Key, i64)>) {
        let mut tracked = self.partitions();
        for (key, next) in positions {
            if let Some(partition) = tracked.get_mut(key) {
                partition.next = Some(next);
            }
        }
    }

    /// Partitions given up: their gauge drops to 0 (their new owner reports them) and is
    /// set no more.
    pub(crate) fn revoked(&self, keys: &[Key]) {
        let mut tracked = self.partitions();
        for key in keys {
            if let Some(partition) = tracked.remove(key) {
                self.gauge(&partition.stream, key.1).set(0.0);
            }
        }
    }

    fn gauge(&self, stream: &Arc<str>, partition: i32) -> metrics::Gauge {
        metrics::gauge!(
            LAG_GAUGE,
            "group" => Arc::clone(&self.group),
            "stream" => Arc::clone(stream),
            "partition" => partition.to_string(),
        )
    }

    /// Measures the lag every [`LAG_INTERVAL`] until [`close`](Self::close).
    pub(crate) fn run<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        loop {
            let closed = self
                .wake
                .wait_timeout_while(
                    self.closed.lock().unwrap_or_else(PoisonError::into_inner),
                    LAG_INTERVAL,
                    |closed| !*closed,
                )
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if *closed {
                return;
            }
            drop(closed);
            if let Err(error) = self.measure(consumer) {
                tracing::debug!(group = %self.group, %error, "measuring the consumer lag failed");
                self.publish(&HashMap::new(), &HashMap::new());
            }
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops [`run`](Self::run) (after the question to the brokers under way, if any).
    pub(crate) fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    /// Asks the brokers for the end offsets (and the start of partitions whose start is
    /// not known yet) and sets the gauges.
    fn measure<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
    ) -> rdkafka::error::KafkaResult<()> {
        let (keys, unknown): (Vec<Key>, Vec<Key>) = {
            let tracked = self.partitions();
            let keys = tracked.keys().cloned().collect();
            let unknown = tracked
                .iter()
                .filter(|(_, partition)| partition.next.is_none())
                .map(|(key, _)| key.clone())
                .collect();
            (keys, unknown)
        };
        if keys.is_empty() {
            return Ok(());
        }
        let stopped = || rdkafka::error::KafkaError::Canceled;
        let ends = offsets(&consumer.offsets_for_times(list(&keys, Offset::End)?, LAG_TIMEOUT)?);
        let mut starts = HashMap::new();
        if !unknown.is_empty() {
            if self.is_closed() {
                return Err(stopped());
            }
            let committed = offsets(
                &consumer.committed_offsets(list(&unknown, Offset::Invalid)?, LAG_TIMEOUT)?,
            );
            let uncommitted: Vec<Key> = unknown
                .into_iter()
                .filter(|key| !committed.contains_key(key))
                .collect();
            starts = committed;
            if self.reset_to_end {
                starts.extend(
                    uncommitted
                        .into_iter()
                        .filter_map(|key| Some((key.clone(), *ends.get(&key)?))),
                );
            } else if !uncommitted.is_empty() {
                if self.is_closed() {
                    return Err(stopped());
                }
                let oldest = consumer
                    .offsets_for_times(list(&uncommitted, Offset::Beginning)?, LAG_TIMEOUT)?;
                starts.extend(offsets(&oldest));
            }
        }
        self.publish(&ends, &starts);
        Ok(())
    }

    /// Sets the gauge of every partition still assigned whose end offset is known, from
    /// the next offset the application handles, else its start found in `starts` (kept
    /// as the next offset from then on). A partition whose end is not known gets its last
    /// value again.
    fn publish(&self, ends: &HashMap<Key, i64>, starts: &HashMap<Key, i64>) {
        let mut tracked = self.partitions();
        for (key, partition) in tracked.iter_mut() {
            if partition.next.is_none() {
                partition.next = starts.get(key).copied();
            }
            if let (Some(end), Some(next)) = (ends.get(key), partition.next) {
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 records
                let lag = (end - next).max(0) as f64;
                partition.last = Some(lag);
            }
            if let Some(last) = partition.last {
                self.gauge(&partition.stream, key.1).set(last);
            }
        }
    }
}

/// A list of `keys`, each with `offset` (a special offset stands for a time: the end, the
/// beginning).
fn list(keys: &[Key], offset: Offset) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::with_capacity(keys.len());
    for (topic, partition) in keys {
        list.add_partition_offset(topic, *partition, offset)?;
    }
    Ok(list)
}

/// The offsets an answer holds, leaving out partitions that failed or have none.
fn offsets(list: &TopicPartitionList) -> HashMap<Key, i64> {
    list.elements()
        .iter()
        .filter(|element| element.error().is_ok())
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => {
                Some(((element.topic().to_owned(), element.partition()), offset))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    fn key(partition: i32) -> Key {
        ("prefix.people".to_owned(), partition)
    }

    /// The gauge values recorded, by partition.
    fn gauges(snapshotter: &Snapshotter) -> Vec<(String, f64)> {
        let mut found: Vec<(String, f64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == LAG_GAUGE)
            .map(|(key, _, _, value)| {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|label| format!("{}={}", label.key(), label.value()))
                    .collect();
                let DebugValue::Gauge(value) = value else {
                    panic!("{LAG_GAUGE} is a gauge")
                };
                (labels.join(","), value.into_inner())
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Runs `test` with a recorder of its own and the lag of group `billing`, assigned
    /// partitions of stream `people` with these starts.
    fn with_lag(starts: &[Offset], test: impl FnOnce(&Lag, &Snapshotter)) {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let lag = Lag::new("billing", None);
            let stream: Arc<str> = "people".into();
            lag.assigned(
                (0..)
                    .zip(starts)
                    .map(|(partition, start)| (key(partition), Arc::clone(&stream), *start)),
            );
            test(&lag, &snapshotter);
        });
    }

    #[test]
    fn the_gauge_counts_from_the_next_record_to_handle_and_drops_to_0_on_revocation() {
        let starts = [Offset::Offset(10), Offset::Stored, Offset::Stored];
        with_lag(&starts, |lag, snapshotter| {
            let ends = HashMap::from([(key(0), 25), (key(1), 7), (key(2), 4)]);
            // Partition 1 starts where the group left off; partition 2 has no start yet.
            lag.publish(&ends, &HashMap::from([(key(1), 3)]));
            assert_eq!(
                gauges(snapshotter),
                [
                    ("group=billing,stream=people,partition=0".to_owned(), 15.0),
                    ("group=billing,stream=people,partition=1".to_owned(), 4.0),
                ]
            );

            // Positions stored; partition 2 starts at its oldest record. Then partition 1
            // is given up: its gauge drops from 2 to 0 and is not set again.
            lag.stored([(&key(0), 25), (&key(1), 5)]);
            lag.publish(&ends, &HashMap::from([(key(2), 4)]));
            lag.revoked(&[key(1)]);
            lag.publish(&HashMap::from([(key(1), 9), (key(2), 6)]), &HashMap::new());
            assert_eq!(
                gauges(snapshotter),
                [
                    ("group=billing,stream=people,partition=0".to_owned(), 0.0),
                    ("group=billing,stream=people,partition=1".to_owned(), 0.0),
                    ("group=billing,stream=people,partition=2".to_owned(), 2.0),
                ]
            );
        });
    }

    #[test]
    fn a_failed_measurement_sets_the_last_values_again() {
        with_lag(
            &[Offset::Offset(10), Offset::Offset(0)],
            |lag, snapshotter| {
                let stream: Arc<str> = "people".into();
                lag.publish(&HashMap::from([(key(0), 12), (key(1), 5)]), &HashMap::new());
                // Something else sets the gauges (as an idle timeout would drop them); a
                // measurement that fails sets the last values again, for partitions still
                // assigned only.
                lag.revoked(&[key(1)]);
                for partition in [0, 1] {
                    lag.gauge(&stream, partition).set(-1.0);
                }
                lag.publish(&HashMap::new(), &HashMap::new());
                assert_eq!(
                    gauges(snapshotter),
                    [
                        ("group=billing,stream=people,partition=0".to_owned(), 2.0),
                        ("group=billing,stream=people,partition=1".to_owned(), -1.0),
                    ]
                );
            },
        );
    }
}
