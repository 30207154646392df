//! The object-safe forms of the backend traits, behind [`AnyBackend`](super::AnyBackend)
//! and its consumers, stores and ranges: each method boxes its future, and every type
//! that implements a trait of `logpipe-core` implements its form here.

use std::any::Any;

use logpipe_core::leases::{LeaseFence, LeaseFences};
use logpipe_core::{
    Backend, BackendError, Boundary, BoxFuture, ConsumerBackend, ConsumerEvent, DeliveryFuture,
    Lag, OffsetStore, OutgoingRecord, PartitionInfo, PartitionRef, Position, ProducerBackend,
    RangeBound, RangeRead, Record, StartFrom, StoreError,
};

use super::{AnyConsumer, AnyRange};

/// A [`ProducerBackend`] behind a pointer.
pub(crate) trait DynProducer: Send + Sync {
    fn enqueue_boxed(
        &self,
        record: OutgoingRecord,
    ) -> BoxFuture<'_, Result<DeliveryFuture, BackendError>>;
    fn flush_boxed(&self) -> BoxFuture<'_, Result<(), BackendError>>;
}

impl<P: ProducerBackend> DynProducer for P {
    fn enqueue_boxed(
        &self,
        record: OutgoingRecord,
    ) -> BoxFuture<'_, Result<DeliveryFuture, BackendError>> {
        Box::pin(self.enqueue(record))
    }

    fn flush_boxed(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.flush())
    }
}

/// A [`Backend`] behind a pointer.
pub(super) trait DynBackend: DynProducer {
    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<AnyConsumer, BackendError>;
    fn position_group(&self, group: &str) -> String;
    fn list_streams(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;
    fn create_stream<'a>(
        &'a self,
        stream: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn describe_stream<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PartitionInfo>, BackendError>>;
    fn parse_position(&self, text: &str) -> Result<Position, BackendError>;
    fn position_at<'a>(
        &'a self,
        partition: &'a PartitionInfo,
        boundary: Boundary,
        stored: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Option<Position>, BackendError>>;
    fn lag<'a>(
        &'a self,
        partition: &'a PartitionInfo,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Lag, BackendError>>;
    fn read_range<'a>(
        &'a self,
        stream: &'a str,
        from: &'a RangeBound,
        until: &'a RangeBound,
    ) -> BoxFuture<'a, Result<AnyRange, BackendError>>;
    fn as_any(&self) -> &dyn Any;
}

impl<B: Backend> DynBackend for B {
    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<AnyConsumer, BackendError> {
        Backend::open_consumer(self, group, streams, start).map(AnyConsumer::new)
    }

    fn position_group(&self, group: &str) -> String {
        Backend::position_group(self, group)
    }

    fn list_streams(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(logpipe_core::Admin::list_streams(self))
    }

    fn create_stream<'a>(
        &'a self,
        stream: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(logpipe_core::Admin::create_stream(self, stream, partitions))
    }

    fn describe_stream<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PartitionInfo>, BackendError>> {
        Box::pin(logpipe_core::Admin::describe_stream(self, stream))
    }

    fn parse_position(&self, text: &str) -> Result<Position, BackendError> {
        logpipe_core::Admin::parse_position(self, text)
    }

    fn position_at<'a>(
        &'a self,
        partition: &'a PartitionInfo,
        boundary: Boundary,
        stored: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Option<Position>, BackendError>> {
        Box::pin(logpipe_core::Admin::position_at(
            self, partition, boundary, stored,
        ))
    }

    fn lag<'a>(
        &'a self,
        partition: &'a PartitionInfo,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Lag, BackendError>> {
        Box::pin(logpipe_core::Admin::lag(self, partition, after))
    }

    fn read_range<'a>(
        &'a self,
        stream: &'a str,
        from: &'a RangeBound,
        until: &'a RangeBound,
    ) -> BoxFuture<'a, Result<AnyRange, BackendError>> {
        Box::pin(async move {
            let range = logpipe_core::Admin::read_range(self, stream, from, until).await?;
            Ok(AnyRange {
                inner: Box::new(range),
            })
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A [`ConsumerBackend`] behind a pointer.
pub(super) trait DynConsumer: Send {
    fn next_event_boxed(&mut self) -> BoxFuture<'_, Result<ConsumerEvent, BackendError>>;
    fn want_headers(&mut self, wanted: bool);
    fn seek_boxed<'a>(
        &'a mut self,
        partition: &'a PartitionRef,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn stored(&mut self, positions: &[(PartitionRef, Position)]);
    fn lease_fences(&self) -> Option<LeaseFences>;
    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError>;
    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError>;
    fn close_boxed(&mut self) -> BoxFuture<'_, ()>;
}

impl<C: ConsumerBackend> DynConsumer for C {
    fn next_event_boxed(&mut self) -> BoxFuture<'_, Result<ConsumerEvent, BackendError>> {
        Box::pin(self.next_event())
    }

    fn want_headers(&mut self, wanted: bool) {
        ConsumerBackend::want_headers(self, wanted);
    }

    fn seek_boxed<'a>(
        &'a mut self,
        partition: &'a PartitionRef,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.seek(partition, after))
    }

    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        ConsumerBackend::stored(self, positions);
    }

    fn lease_fences(&self) -> Option<LeaseFences> {
        ConsumerBackend::lease_fences(self)
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        ConsumerBackend::pause(self, partitions)
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        ConsumerBackend::resume(self, partitions)
    }

    fn close_boxed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(ConsumerBackend::close(self))
    }
}

/// An [`OffsetStore`] behind a pointer.
pub(super) trait DynOffsetStore: Send + Sync {
    fn load_boxed<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
    ) -> BoxFuture<'a, Result<Option<Position>, StoreError>>;
    fn store_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn store_fenced_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
        fences: &'a [(PartitionRef, LeaseFence)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn reset_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn load_handled_boxed<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
    ) -> BoxFuture<'a, Result<Vec<Position>, StoreError>>;
    fn resumed_by_backend(&self) -> bool;
    fn is_durable(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<S: OffsetStore> DynOffsetStore for S {
    fn load_boxed<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
    ) -> BoxFuture<'a, Result<Option<Position>, StoreError>> {
        Box::pin(self.load(group, partition))
    }

    fn store_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.store(group, positions))
    }

    fn store_fenced_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
        fences: &'a [(PartitionRef, LeaseFence)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.store_fenced(group, positions, fences))
    }

    fn reset_boxed<'a>(
        &'a self,
        group: &'a str,
        positions: &'a [(PartitionRef, Position)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.reset(group, positions))
    }

    fn load_handled_boxed<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
    ) -> BoxFuture<'a, Result<Vec<Position>, StoreError>> {
        Box::pin(self.load_handled(group, partition))
    }

    fn resumed_by_backend(&self) -> bool {
        OffsetStore::resumed_by_backend(self)
    }

    fn is_durable(&self) -> bool {
        OffsetStore::is_durable(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A [`RangeRead`] behind a pointer.
pub(super) trait DynRange: Send {
    fn total(&self) -> Option<u64>;
    fn next_batch_boxed(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, BackendError>>;
}

impl<R: RangeRead> DynRange for R {
    fn total(&self) -> Option<u64> {
        RangeRead::total(self)
    }

    fn next_batch_boxed(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, BackendError>> {
        Box::pin(self.next_batch())
    }
}
