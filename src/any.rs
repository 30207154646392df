//! Backends, consumers, offset stores and ranges whose types are chosen at run time: the
//! traits of `logpipe-core` behind pointers.
//!
//! The configuration opens the backend and the offset store its URLs name as these
//! ([`Config::open_backend`](crate::config::Config::open_backend),
//! [`Config::open_offset_store`](crate::config::Config::open_offset_store)), so that the
//! consumer, the runner and the `logpipe` tool work on any backend through the traits
//! and never ask which one they have.

use std::sync::Arc;

use logpipe_core::leases::{LeaseFence, LeaseFences};
use logpipe_core::{
    Admin, Backend, BackendError, Boundary, ConsumerBackend, ConsumerEvent, DeliveryFuture, Lag,
    OffsetStore, OutgoingRecord, PartitionInfo, PartitionRef, Position, ProducerBackend,
    RangeBound, RangeRead, Record, StartFrom, StoreError,
};

mod dynamic;

pub(crate) use dynamic::DynProducer;
use dynamic::{DynBackend, DynConsumer, DynOffsetStore, DynRange};

/// The backend a configuration names, or any [`Backend`] wrapped with
/// [`AnyBackend::new`].
/// Clones share connections.
#[derive(Clone)]
pub struct AnyBackend {
    inner: Arc<dyn DynBackend>,
}

impl std::fmt::Debug for AnyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyBackend").finish_non_exhaustive()
    }
}

impl AnyBackend {
    /// `backend`, as a backend whose type is chosen at run time.
    pub fn new<B: Backend>(backend: B) -> Self {
        Self {
            inner: Arc::new(backend),
        }
    }

    /// A consumer reading `streams` for consumer group `group`, starting where the
    /// backend's settings say ([`Backend::open_consumer`] with [`StartFrom::Configured`]).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the consumer cannot be created.
    pub fn consumer(&self, group: &str, streams: &[String]) -> Result<AnyConsumer, BackendError> {
        Backend::open_consumer(self, group, streams, StartFrom::Configured)
    }

    /// The backend inside, when it is a `B`.
    pub fn downcast_ref<B: Backend>(&self) -> Option<&B> {
        self.inner.as_any().downcast_ref()
    }
}

impl ProducerBackend for AnyBackend {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
        self.inner.enqueue_boxed(record).await
    }

    async fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush_boxed().await
    }
}

impl Admin for AnyBackend {
    type Range = AnyRange;

    async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
        self.inner.list_streams().await
    }

    async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), BackendError> {
        self.inner.create_stream(stream, partitions).await
    }

    async fn describe_stream(&self, stream: &str) -> Result<Vec<PartitionInfo>, BackendError> {
        self.inner.describe_stream(stream).await
    }

    fn parse_position(&self, text: &str) -> Result<Position, BackendError> {
        self.inner.parse_position(text)
    }

    async fn position_at(
        &self,
        partition: &PartitionInfo,
        boundary: Boundary,
        stored: Option<&Position>,
    ) -> Result<Option<Position>, BackendError> {
        self.inner.position_at(partition, boundary, stored).await
    }

    async fn lag(
        &self,
        partition: &PartitionInfo,
        after: Option<&Position>,
    ) -> Result<Lag, BackendError> {
        self.inner.lag(partition, after).await
    }

    async fn read_range(
        &self,
        stream: &str,
        from: &RangeBound,
        until: &RangeBound,
    ) -> Result<AnyRange, BackendError> {
        self.inner.read_range(stream, from, until).await
    }
}

impl Backend for AnyBackend {
    type Consumer = AnyConsumer;

    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<AnyConsumer, BackendError> {
        self.inner.open_consumer(group, streams, start)
    }

    fn position_group(&self, group: &str) -> String {
        self.inner.position_group(group)
    }
}

/// A consumer of an [`AnyBackend`].
pub struct AnyConsumer {
    inner: Box<dyn DynConsumer>,
}

impl std::fmt::Debug for AnyConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyConsumer").finish_non_exhaustive()
    }
}

impl AnyConsumer {
    /// `consumer`, as a consumer whose type is chosen at run time.
    pub fn new<C: ConsumerBackend>(consumer: C) -> Self {
        Self {
            inner: Box::new(consumer),
        }
    }
}

impl ConsumerBackend for AnyConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        self.inner.next_event_boxed().await
    }

    fn want_headers(&mut self, wanted: bool) {
        self.inner.want_headers(wanted);
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        self.inner.seek_boxed(partition, after).await
    }

    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        self.inner.stored(positions);
    }

    fn lease_fences(&self) -> Option<LeaseFences> {
        self.inner.lease_fences()
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        self.inner.pause(partitions)
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        self.inner.resume(partitions)
    }

    async fn close(&mut self) {
        self.inner.close_boxed().await;
    }
}

/// The offset store a configuration names, or any [`OffsetStore`] wrapped with
/// [`AnyOffsetStore::new`]. Clones share it.
#[derive(Clone)]
pub struct AnyOffsetStore {
    inner: Arc<dyn DynOffsetStore>,
}

impl std::fmt::Debug for AnyOffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyOffsetStore").finish_non_exhaustive()
    }
}

impl AnyOffsetStore {
    /// `store`, as a store whose type is chosen at run time.
    pub fn new<S: OffsetStore>(store: S) -> Self {
        Self {
            inner: Arc::new(store),
        }
    }

    /// The store inside, when it is an `S` (such as a `SqliteOffsetStore`, for its
    /// transactions).
    pub fn downcast_ref<S: OffsetStore>(&self) -> Option<&S> {
        self.inner.as_any().downcast_ref()
    }
}

impl OffsetStore for AnyOffsetStore {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        self.inner.load_boxed(group, partition).await
    }

    async fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        self.inner.store_boxed(group, positions).await
    }

    async fn store_fenced(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
        fences: &[(PartitionRef, LeaseFence)],
    ) -> Result<(), StoreError> {
        self.inner
            .store_fenced_boxed(group, positions, fences)
            .await
    }

    async fn reset(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> Result<(), StoreError> {
        self.inner.reset_boxed(group, positions).await
    }

    async fn load_handled(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Vec<Position>, StoreError> {
        self.inner.load_handled_boxed(group, partition).await
    }

    fn resumed_by_backend(&self) -> bool {
        self.inner.resumed_by_backend()
    }

    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }
}

/// A range of records of an [`AnyBackend`], for replay.
pub struct AnyRange {
    inner: Box<dyn DynRange>,
}

impl std::fmt::Debug for AnyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyRange").finish_non_exhaustive()
    }
}

impl RangeRead for AnyRange {
    fn total(&self) -> Option<u64> {
        self.inner.total()
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, BackendError> {
        self.inner.next_batch_boxed().await
    }
}
