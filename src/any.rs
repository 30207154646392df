//! Backends and offset stores chosen at run time, from configuration URLs.

use crate::backend::{
    BackendError, ConsumerBackend, ConsumerEvent, Delivery, OutgoingRecord, PartitionRef, Position,
    ProducerBackend,
};
use crate::config::{BackendUrl, Config, OffsetStoreUrl};
use crate::embedded::{EmbeddedConsumer, EmbeddedLog};
#[cfg(feature = "kinesis")]
use crate::kinesis::{KinesisBackend, KinesisConsumer};
use crate::offsets::{MemoryOffsetStore, OffsetStore, SqliteOffsetStore, StoreError};

/// The backend a [`Config`] names. Clones share connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyBackend {
    /// `sqlite://` or `memory://`.
    Embedded(EmbeddedLog),
    /// `kinesis://`.
    #[cfg(feature = "kinesis")]
    Kinesis(KinesisBackend),
    /// `kafka://`.
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::KafkaClient),
}

impl AnyBackend {
    /// Opens the configured backend.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when it cannot be opened.
    pub fn connect(config: &Config) -> Result<Self, BackendError> {
        let options = config.embedded.clone();
        Ok(match &config.backend {
            BackendUrl::Sqlite(path) => {
                AnyBackend::Embedded(EmbeddedLog::open_with(path, options)?)
            }
            BackendUrl::Memory => AnyBackend::Embedded(EmbeddedLog::open_in_memory_with(options)?),
            #[cfg(feature = "kinesis")]
            BackendUrl::Kinesis { region, endpoint } => {
                AnyBackend::Kinesis(KinesisBackend::connect(
                    region.as_deref(),
                    endpoint.as_deref(),
                    config.kinesis.clone(),
                )?)
            }
            #[cfg(not(feature = "kinesis"))]
            BackendUrl::Kinesis { .. } => {
                return Err(BackendError::new(
                    crate::backend::BackendErrorKind::Rejected,
                    "kinesis:// needs logpipe built with the `kinesis` feature",
                ));
            }
            #[cfg(feature = "kafka")]
            BackendUrl::Kafka(brokers) => {
                AnyBackend::Kafka(crate::kafka::connect(config, brokers)?)
            }
            #[cfg(not(feature = "kafka"))]
            BackendUrl::Kafka(_) => {
                return Err(BackendError::new(
                    crate::backend::BackendErrorKind::Other,
                    "this program was built without the `kafka` feature",
                ));
            }
        })
    }

    /// A consumer backend reading `streams` for consumer group `group` (Kafka consumers
    /// join the group; the embedded log has no groups).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the consumer cannot be created.
    pub fn consumer(&self, group: &str, streams: &[String]) -> Result<AnyConsumer, BackendError> {
        let _ = group;
        Ok(match self {
            AnyBackend::Embedded(log) => {
                AnyConsumer::Embedded(log.consumer(streams.iter().map(String::as_str)))
            }
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => {
                AnyConsumer::Kinesis(kinesis.consumer(streams.iter().map(String::as_str)))
            }
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => {
                AnyConsumer::Kafka(crate::kafka::consumer(client, group, streams)?)
            }
        })
    }

    /// The offset store `config` names, sharing this backend where the store lives in it
    /// (Kafka consumer-group commits go through the consumers of this backend).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when it cannot be opened.
    pub fn offset_store(&self, config: &Config) -> Result<AnyOffsetStore, StoreError> {
        match (self, config.offset_store_url()) {
            #[cfg(feature = "kafka")]
            (AnyBackend::Kafka(client), OffsetStoreUrl::Kafka) => {
                Ok(AnyOffsetStore::Kafka(client.offsets()))
            }
            _ => AnyOffsetStore::open(config),
        }
    }

    /// The consumer group under which `group`'s positions are stored: `group` itself,
    /// or `GROUP@REGION` on Kinesis (see [`KinesisBackend::group_in_region`]).
    pub fn position_group(&self, group: String) -> String {
        match self {
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => kinesis.group_in_region(&group),
            _ => group,
        }
    }
}

impl ProducerBackend for AnyBackend {
    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, BackendError> {
        match self {
            AnyBackend::Embedded(log) => log.send(record).await,
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => kinesis.send(record).await,
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => ProducerBackend::send(client, record).await,
        }
    }

    async fn flush(&self) -> Result<(), BackendError> {
        match self {
            AnyBackend::Embedded(log) => log.flush().await,
            #[cfg(feature = "kinesis")]
            AnyBackend::Kinesis(kinesis) => kinesis.flush().await,
            #[cfg(feature = "kafka")]
            AnyBackend::Kafka(client) => ProducerBackend::flush(client).await,
        }
    }
}

/// A consumer of an [`AnyBackend`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyConsumer {
    /// Of the embedded log.
    Embedded(EmbeddedConsumer),
    /// Of Kinesis.
    #[cfg(feature = "kinesis")]
    Kinesis(KinesisConsumer),
    /// Of Kafka.
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::KafkaConsumerBackend),
}

impl ConsumerBackend for AnyConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.next_event().await,
            #[cfg(feature = "kinesis")]
            AnyConsumer::Kinesis(consumer) => consumer.next_event().await,
            #[cfg(feature = "kafka")]
            AnyConsumer::Kafka(consumer) => consumer.next_event().await,
        }
    }

    fn want_headers(&mut self, wanted: bool) {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.want_headers(wanted),
            #[cfg(feature = "kinesis")]
            AnyConsumer::Kinesis(consumer) => consumer.want_headers(wanted),
            #[cfg(feature = "kafka")]
            AnyConsumer::Kafka(consumer) => consumer.want_headers(wanted),
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.seek(partition, after).await,
            #[cfg(feature = "kinesis")]
            AnyConsumer::Kinesis(consumer) => consumer.seek(partition, after).await,
            #[cfg(feature = "kafka")]
            AnyConsumer::Kafka(consumer) => consumer.seek(partition, after).await,
        }
    }

    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.stored(positions),
            #[cfg(feature = "kinesis")]
            AnyConsumer::Kinesis(consumer) => consumer.stored(positions),
            #[cfg(feature = "kafka")]
            AnyConsumer::Kafka(consumer) => consumer.stored(positions),
        }
    }
}

/// The offset store a [`Config`] names. Clones share it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyOffsetStore {
    /// `sqlite://`.
    Sqlite(SqliteOffsetStore),
    /// `memory://`.
    Memory(MemoryOffsetStore),
    /// `kafka://`: commits to the consumer group.
    #[cfg(feature = "kafka")]
    Kafka(crate::kafka::GroupOffsets),
}

impl AnyOffsetStore {
    /// Opens the configured store (see [`Config::offset_store_url`]). A store that lives
    /// in the backend (`kafka://`) comes from [`AnyBackend::offset_store`] instead.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when it cannot be opened.
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        Ok(match config.offset_store_url() {
            OffsetStoreUrl::Sqlite(path) => AnyOffsetStore::Sqlite(SqliteOffsetStore::open(path)?),
            OffsetStoreUrl::Memory => AnyOffsetStore::Memory(MemoryOffsetStore::new()),
            OffsetStoreUrl::Kafka => {
                return Err(StoreError::Backend {
                    group: String::new(),
                    action: "loaded",
                    source: BackendError::new(
                        crate::backend::BackendErrorKind::Other,
                        "kafka:// positions live in the consumer group; open the store with AnyBackend::offset_store",
                    ),
                });
            }
        })
    }
}

impl OffsetStore for AnyOffsetStore {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        match self {
            AnyOffsetStore::Sqlite(store) => store.load(group, partition).await,
            AnyOffsetStore::Memory(store) => store.load(group, partition).await,
            #[cfg(feature = "kafka")]
            AnyOffsetStore::Kafka(store) => store.load(group, partition).await,
        }
    }

    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        match self {
            AnyOffsetStore::Sqlite(store) => store.store(group, positions).await,
            AnyOffsetStore::Memory(store) => store.store(group, positions).await,
            #[cfg(feature = "kafka")]
            AnyOffsetStore::Kafka(store) => store.store(group, positions).await,
        }
    }
}
