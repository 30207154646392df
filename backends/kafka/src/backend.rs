//! The contract of `logpipe-core` over the driver: a [`KafkaClient`] is a [`Backend`]
//! whose consumers are members of consumer groups.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use logpipe_core::{
    Backend, BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery,
    DeliveryFuture, OutgoingRecord, PartitionRef, Position, ProducerBackend, Record, RecordHeader,
    StartFrom,
};

use crate::{ErrorKind, KafkaClient, KafkaConsumer, KafkaError, KafkaEvent, KafkaRecord, SeekTo};

impl From<KafkaError> for BackendError {
    fn from(error: KafkaError) -> Self {
        let kind = match error.kind() {
            ErrorKind::Connection => BackendErrorKind::Connection,
            ErrorKind::Timeout => BackendErrorKind::Timeout,
            ErrorKind::NotFound => BackendErrorKind::NotFound,
            ErrorKind::Rejected | ErrorKind::Config => BackendErrorKind::Rejected,
            _ => BackendErrorKind::Other,
        };
        let retriable = error.is_retriable();
        let backend = BackendError::new(kind, error.to_string()).with_source(error);
        if retriable {
            backend.retriable()
        } else {
            backend
        }
    }
}

impl ProducerBackend for KafkaClient {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
        let OutgoingRecord {
            stream,
            key,
            value,
            headers,
        } = record;
        logpipe_core::check_stream_name(&stream)?;
        let queued = {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_slice()))
                .collect();
            self.queue(&stream, key.as_deref(), &value, &headers)
                .await?
        };
        // librdkafka has its own copy: the record's memory goes back now rather than
        // after the round trip, while thousands of records may be waiting.
        drop((key, value, headers));
        Ok(DeliveryFuture::new(async move {
            let (partition, offset) = queued.acknowledged().await?;
            Ok(Delivery {
                partition: PartitionRef::new(stream, partition_name(partition)),
                position: Position::Offset(offset),
            })
        }))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        KafkaClient::flush(self).await;
        Ok(())
    }
}

impl Backend for KafkaClient {
    type Consumer = KafkaConsumerBackend;

    /// A member of consumer group `group` reading `streams`. `start` other than
    /// [`StartFrom::Configured`] sets `auto.offset.reset` for this consumer: a partition
    /// starts at the group's committed offset, else at its oldest or after its newest
    /// record. A missing topic is reported by the first
    /// [`next_event`](ConsumerBackend::next_event).
    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<KafkaConsumerBackend, BackendError> {
        // A pattern (`^...`) is librdkafka's, and matches topics of any name.
        for stream in streams.iter().filter(|stream| !stream.starts_with('^')) {
            logpipe_core::check_stream_name(stream)?;
        }
        let reset = match start {
            StartFrom::Earliest => Some("earliest"),
            StartFrom::Latest => Some("latest"),
            _ => None,
        };
        // A consumer of its own: a group of one, whose offsets are never committed.
        let group = if group.is_empty() {
            format!(
                "logpipe-private-{}-{}",
                std::process::id(),
                logpipe_core::time::millis(std::time::SystemTime::now())
            )
        } else {
            group.to_owned()
        };
        Ok(KafkaConsumerBackend {
            inner: self.consumer_with_reset(&group, streams, reset)?,
            partitions: HashMap::new(),
            client: self.clone(),
            streams: streams.to_vec(),
            group,
            reads_failing: false,
            last: None,
        })
    }
}

/// How often the brokers are asked for the metadata of the consumer's topics while reads
/// fail for want of a broker, to tell when they work again even though no record arrives.
const BROKERS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// A Kafka consumer as a [`ConsumerBackend`]: a member of a consumer group whose
/// rebalances wait until the logpipe's consumer has stored its positions.
///
/// librdkafka reconnects by itself and says nothing when the brokers answer again, so
/// after a connection or timeout error (brokers, a partition leader or the group
/// coordinator out of reach), [`next_event`](ConsumerBackend::next_event) also checks
/// every 5 seconds what the consumer's reads need, and reports
/// [`ConsumerEvent::ReadsSucceed`] once every partition of its topics has a leader and
/// its group coordinator answers (or any event comes). After any other retriable error
/// only an event ends the failure, so a consumer that cannot read still stalls.
#[derive(Debug)]
pub struct KafkaConsumerBackend {
    inner: KafkaConsumer,
    partitions: HashMap<(Arc<str>, i32), PartitionRef>,
    client: KafkaClient,
    /// The streams read.
    streams: Vec<String>,
    /// The consumer group.
    group: String,
    /// Whether the last event was an error whose end [`readable`] can tell.
    reads_failing: bool,
    /// The partition of the last record, which the next one likely shares.
    last: Option<(i32, PartitionRef)>,
}

impl KafkaConsumerBackend {
    fn partition(&mut self, stream: &Arc<str>, partition: i32) -> PartitionRef {
        if let Some((number, last)) = &self.last
            && *number == partition
            && Arc::ptr_eq(&last.stream, stream)
        {
            return last.clone();
        }
        let found = self
            .partitions
            .entry((Arc::clone(stream), partition))
            .or_insert_with(|| PartitionRef::new(Arc::clone(stream), partition_name(partition)))
            .clone();
        self.last = Some((partition, found.clone()));
        found
    }

    fn record(&mut self, record: KafkaRecord) -> Record {
        Record {
            partition: self.partition(&record.stream, record.partition),
            position: Position::Offset(record.offset),
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(name, value)| RecordHeader { name, value })
                .collect(),
            timestamp: record
                .timestamp_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    fn partitions(&mut self, list: Vec<(Arc<str>, i32)>) -> Vec<PartitionRef> {
        list.iter().map(|(s, p)| self.partition(s, *p)).collect()
    }
}

/// Whether [`readable`] can tell that reads work again after `error`: a connection or
/// timeout error.
fn readable_tells_the_end(error: &KafkaError) -> bool {
    matches!(error.kind(), ErrorKind::Connection | ErrorKind::Timeout)
}

/// Returns once a consumer of `group` reading `streams` can read, checking every
/// [`BROKERS_CHECK_EVERY`]: every partition of the streams has a leader, and the group
/// coordinator answers (with the committed offset of a partition of the first stream
/// that is not a pattern).
async fn readable(client: &KafkaClient, group: &str, streams: &[String]) {
    loop {
        tokio::time::sleep(BROKERS_CHECK_EVERY).await;
        if !client.streams_led(streams).await.unwrap_or(false) {
            continue;
        }
        let coordinator = match streams.iter().find(|s| !s.starts_with('^')) {
            Some(stream) => client.offsets().committed(group, stream, 0).await.is_ok(),
            None => true,
        };
        if coordinator {
            return;
        }
    }
}

impl ConsumerBackend for KafkaConsumerBackend {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        let event = if self.reads_failing {
            tokio::select! {
                event = self.inner.next_event() => event,
                () = readable(&self.client, &self.group, &self.streams) => {
                    self.reads_failing = false;
                    return Ok(ConsumerEvent::ReadsSucceed);
                }
            }
        } else {
            self.inner.next_event().await
        };
        let event = event.map_err(|error| {
            self.reads_failing = readable_tells_the_end(&error);
            BackendError::from(error)
        })?;
        self.reads_failing = false;
        Ok(match event {
            KafkaEvent::Assigned(list) => ConsumerEvent::Assigned(self.partitions(list)),
            KafkaEvent::Revoked(list) => ConsumerEvent::Revoked(self.partitions(list)),
            KafkaEvent::Records(records) => {
                ConsumerEvent::Records(records.into_iter().map(|r| self.record(r)).collect())
            }
        })
    }

    fn want_headers(&mut self, wanted: bool) {
        self.inner.read_headers(wanted);
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        let number = kafka_partition(partition)?;
        let from = match after {
            None => SeekTo::GroupOffset,
            Some(Position::Offset(offset)) => SeekTo::After(*offset),
            Some(Position::Sequence(sequence)) => {
                return Err(BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("{partition}: {sequence:?} is a sequence number, not a Kafka offset"),
                ));
            }
        };
        Ok(self.inner.seek(&partition.stream, number, from)?)
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            let number = kafka_partition(partition)?;
            self.inner.pause(&partition.stream, number)?;
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            let number = kafka_partition(partition)?;
            self.inner.resume(&partition.stream, number)?;
        }
        Ok(())
    }

    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        self.inner
            .stored(positions.iter().filter_map(|(partition, position)| {
                let Position::Offset(offset) = position else {
                    return None;
                };
                Some((
                    &*partition.stream,
                    kafka_partition(partition).ok()?,
                    *offset,
                ))
            }));
    }
}

/// The text of a partition number, shared for the first ones (a send returns one).
pub(crate) fn partition_name(partition: i32) -> Arc<str> {
    static NAMES: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| (0..256).map(|p: i32| Arc::from(p.to_string())).collect());
    usize::try_from(partition)
        .ok()
        .and_then(|index| names.get(index))
        .cloned()
        .unwrap_or_else(|| partition.to_string().into())
}

pub(crate) fn kafka_partition(partition: &PartitionRef) -> Result<i32, BackendError> {
    partition.partition.parse().map_err(|_| {
        BackendError::new(
            BackendErrorKind::NotFound,
            format!("{partition} is not a Kafka partition"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a retriable error, an idle consumer learns that reads work again from the
    /// brokers' answer to a metadata request. Needs the broker of `tests/services`.
    #[tokio::test]
    async fn after_a_retriable_error_an_idle_consumer_reads_again_once_the_brokers_answer() {
        let brokers = match std::env::var("LOGPIPE_TEST_KAFKA") {
            Ok(brokers) if !brokers.is_empty() => brokers,
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("LOGPIPE_TEST_KAFKA is not set under CI=true")
            }
            _ => return eprintln!("skipping: LOGPIPE_TEST_KAFKA is not set"),
        };
        let unique = format!(
            "reads-again-{}-{}",
            std::process::id(),
            logpipe_core::time::millis(std::time::SystemTime::now())
        );
        let mut settings = crate::KafkaSettings::new(brokers);
        settings.create_topics = true;
        let client = KafkaClient::connect(settings).unwrap();
        let mut consumer = client
            .open_consumer(
                &unique,
                std::slice::from_ref(&unique),
                StartFrom::Configured,
            )
            .unwrap();
        let wait = Duration::from_secs(60);
        let first = tokio::time::timeout(wait, consumer.next_event()).await;
        let ConsumerEvent::Assigned(_) = first.unwrap().unwrap() else {
            panic!("the partition is assigned first")
        };
        // The topic is empty: the consumer has nothing more to say, so only the brokers'
        // answer can tell that reads work after a (here pretended) failure.
        consumer.reads_failing = true;
        let event = tokio::time::timeout(wait, consumer.next_event()).await;
        let event = event.unwrap().unwrap();
        assert!(
            matches!(event, ConsumerEvent::ReadsSucceed),
            "the brokers answered: {event:?}"
        );
        assert!(!consumer.reads_failing);
    }

    #[test]
    fn only_connection_and_timeout_errors_end_when_the_topics_and_coordinator_answer() {
        use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode as C};
        let consume = |code| KafkaError::Consume {
            source: RdKafkaError::MessageConsumption(code),
        };
        for code in [
            C::AllBrokersDown,
            C::LeaderNotAvailable,
            C::CoordinatorNotAvailable,
            C::RequestTimedOut,
        ] {
            assert!(readable_tells_the_end(&consume(code)), "{code:?}");
        }
        // Retriable, but brokers that answer do not tell that reading works again.
        for code in [C::KafkaStorageError, C::RebalanceInProgress] {
            assert!(consume(code).is_retriable(), "{code:?}");
            assert!(!readable_tells_the_end(&consume(code)), "{code:?}");
        }
    }

    #[test]
    fn errors_keep_their_source_and_say_whether_to_retry() {
        let error = BackendError::from(KafkaError::TopicNotFound {
            topic: "people".into(),
        });
        assert_eq!(error.kind(), BackendErrorKind::NotFound);
        assert!(!error.is_retriable());
        assert!(error.to_string().contains("people"));
        assert!(std::error::Error::source(&error).is_some());
    }
}
