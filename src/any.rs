//! Backends and offset stores chosen at run time, from configuration URLs.

use crate::backend::{
    BackendError, ConsumerBackend, ConsumerEvent, Delivery, OutgoingRecord, PartitionRef, Position,
    ProducerBackend,
};
use crate::config::{BackendUrl, Config, OffsetStoreUrl};
use crate::embedded::{EmbeddedConsumer, EmbeddedLog};
use crate::offsets::{MemoryOffsetStore, OffsetStore, SqliteOffsetStore, StoreError};

/// The backend a [`Config`] names. Clones share connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyBackend {
    /// `sqlite://` or `memory://`.
    Embedded(EmbeddedLog),
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
        })
    }

    /// A consumer backend reading `streams`.
    pub fn consumer(&self, streams: &[String]) -> AnyConsumer {
        match self {
            AnyBackend::Embedded(log) => {
                AnyConsumer::Embedded(log.consumer(streams.iter().map(String::as_str)))
            }
        }
    }
}

impl ProducerBackend for AnyBackend {
    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, BackendError> {
        match self {
            AnyBackend::Embedded(log) => log.send(record).await,
        }
    }

    async fn flush(&self) -> Result<(), BackendError> {
        match self {
            AnyBackend::Embedded(log) => log.flush().await,
        }
    }
}

/// A consumer of an [`AnyBackend`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyConsumer {
    /// Of the embedded log.
    Embedded(EmbeddedConsumer),
}

impl ConsumerBackend for AnyConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.next_event().await,
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.seek(partition, after).await,
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
}

impl AnyOffsetStore {
    /// Opens the configured store (see [`Config::offset_store_url`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when it cannot be opened.
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        Ok(match config.offset_store_url() {
            OffsetStoreUrl::Sqlite(path) => AnyOffsetStore::Sqlite(SqliteOffsetStore::open(path)?),
            OffsetStoreUrl::Memory => AnyOffsetStore::Memory(MemoryOffsetStore::new()),
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
        }
    }
}
