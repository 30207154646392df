//! Reading records.

use std::future::Future;
use std::time::Instant;

use crate::leases::LeaseFences;
use crate::{BackendError, PartitionRef, Position, Record};

/// What a consumer backend has to say next.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// These partitions are now this consumer's; it should [`seek`](ConsumerBackend::seek)
    /// each to its stored position before records of it are delivered.
    Assigned(Vec<PartitionRef>),
    /// These partitions are no longer this consumer's; positions of records handled from
    /// them should be stored now.
    Revoked(Vec<PartitionRef>),
    /// These partitions were taken by another consumer without a hand-off (a lease
    /// that expired while this process was paused or cut off, or that another worker
    /// stole): their records not handled yet are to be dropped, and their positions
    /// not stored, since the new owner reads on from its own stored position.
    Lost(Vec<PartitionRef>),
    /// Records, in order within each partition.
    Records(Vec<Record>),
    /// Reads the backend retries by itself keep failing (a Kinesis shard throttled or
    /// unreachable): none succeeded since `since`; `reason` says what failed last. Sent
    /// again when `since` changes, and followed by
    /// [`ReadsSucceed`](Self::ReadsSucceed) once they work again.
    ReadsFailing {
        /// When the failures began.
        since: Instant,
        /// What failed last.
        reason: String,
    },
    /// Reads work again, after [`ReadsFailing`](Self::ReadsFailing) or after retriable
    /// errors from [`next_event`](ConsumerBackend::next_event) (such as when the brokers
    /// answer again while no record arrives).
    ReadsSucceed,
}

/// Reads records from the partitions assigned to it.
pub trait ConsumerBackend: Send + 'static {
    /// Waits for the next event.
    ///
    /// The future must be cancel-safe: dropping it before it completes loses no records.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when reading failed; [`BackendError::is_retriable`] says whether
    /// calling again may succeed.
    fn next_event(&mut self) -> impl Future<Output = Result<ConsumerEvent, BackendError>> + Send;

    /// Says whether the records' headers are wanted. A backend for which reading them
    /// costs (Kafka) may leave them out when they are not; they are wanted until said
    /// otherwise. A `logpipe::Consumer` wants them only when it has a
    /// dead-letter stream, whose records keep them.
    fn want_headers(&mut self, wanted: bool) {
        let _ = wanted;
    }

    /// Reads `partition` from just after `after`, or from the configured start (such as the
    /// earliest record) when `after` is `None`.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the partition is not assigned or the position is not valid.
    fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Tells the backend that the consumer stored these positions (the last record handled
    /// of each partition, once per batch), for a backend that reports how far behind the
    /// consumer is. Does nothing by default.
    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        let _ = positions;
    }

    /// How the positions of this consumer's partitions are fenced, for a backend whose
    /// consumers share their partitions through leases: the lease each partition is (or
    /// was last) held under, which positions of it are stored under
    /// ([`OffsetStore::store_fenced`](crate::OffsetStore::store_fenced)), so that a worker
    /// that lost a lease without knowing cannot store a position of its partition.
    /// Asked once, before the first read. `None` by default.
    fn lease_fences(&self) -> Option<LeaseFences> {
        None
    }

    /// Gives the consumer's partitions up, once the consumer stored its last positions
    /// and before it is dropped: a backend whose partitions are leased gives its leases
    /// up, so that other workers of the group take them at once instead of waiting for
    /// them to expire. Does nothing by default.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Stops reading `partitions` until [`resume`](Self::resume): a consumer whose
    /// records of one partition wait (behind a key whose handler is retried) reads the
    /// others on without holding more of that one. Records read before the call may
    /// still be delivered; none is skipped or delivered twice across a pause and a
    /// resume. A partition revoked while paused is not paused when it is assigned again.
    ///
    /// By default nothing is paused, and the consumer bounds what it holds by reading
    /// less of everything.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend cannot pause them.
    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        let _ = partitions;
        Ok(())
    }

    /// Reads `partitions` again after [`pause`](Self::pause), from just after the last
    /// record delivered. Does nothing by default.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend cannot resume them.
    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        let _ = partitions;
        Ok(())
    }
}

/// Where a consumer starts a partition for which no position is stored (and which it
/// does not follow from a parent, as a Kinesis child shard follows its parents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Where the backend's settings say (Kafka's `auto.offset.reset`, Kinesis'
    /// `start_at`; the embedded log's oldest record). The default.
    #[default]
    Configured,
    /// At the oldest record kept.
    Earliest,
    /// After the newest record: only records written from now on.
    Latest,
}
