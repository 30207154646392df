//! Leases: how the processes of one consumer group share the partitions of a backend
//! that has no group coordinator of its own (the embedded log; partitions with parents,
//! as Kinesis shards have, are provided for).
//!
//! A lease per (group, stream, partition) names its owner and when it expires; its owner
//! renews it well before then. A worker takes leases that are free (never owned, given
//! up, or expired), and takes one at a time from the busiest worker while it holds
//! fewer than its fair share, so that N workers converge to an even split
//! ([`plan`](balance::plan)). Each take adds one to the lease's counter: a renewal, a
//! release or a finish by a worker that holds an older counter is refused, so a worker
//! that was thought dead (a paused process) finds out that it lost the lease instead of
//! going on. A partition with parents (a Kinesis child shard) is leased only once every
//! parent's lease is [finished](LeaseStore::finish).
//!
//! The [`Leaser`] runs these rules for one consumer over any [`LeaseStore`], and a
//! [`LeaseKeeper`] runs it on a task of its own beside the consumer; stores are
//! `SqliteLeaseStore` (processes on one machine) and `PgLeaseStore` (many machines).
//!
//! A worker learns that a lease was stolen at its next renewal: until then it may still
//! hand records of the partition to handlers, which its successor handles again (a
//! handler writing through a store's transaction applies them once).

mod any_store;
pub mod balance;
mod keeper;
mod leaser;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use any_store::AnyLeaseStore;
pub use keeper::LeaseKeeper;
pub use leaser::{LeaseChanges, LeaseOptions, Leaser};

use crate::{PartitionRef, StoreError};

/// A partition to be leased, and the partitions it continues (a Kinesis child shard's
/// parents), whose leases must be finished before it is taken.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseUnit {
    /// The partition.
    pub partition: PartitionRef,
    /// The partitions of the same stream it follows.
    pub parents: Vec<String>,
}

impl LeaseUnit {
    /// A partition without parents.
    pub fn new(partition: PartitionRef) -> Self {
        Self {
            partition,
            parents: Vec::new(),
        }
    }
}

/// A lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased partition.
    pub partition: PartitionRef,
    /// The worker holding it, unless it was never taken or was given up.
    pub owner: Option<String>,
    /// Goes up by one at every take, release and finish: a worker holding an older
    /// counter no longer holds the lease.
    pub counter: u64,
    /// When the lease expires unless renewed, by the store's clock; `None` when it has
    /// no owner.
    pub expires_at: Option<SystemTime>,
    /// Whether it is free to take now: no owner, or expired (by the store's clock).
    pub free: bool,
    /// The partitions it follows.
    pub parents: Vec<String>,
    /// Whether its partition was read to its end (a closed Kinesis shard): its children
    /// may be taken, and it is never taken again.
    pub finished: bool,
    /// How many times it was taken from another worker (expired or stolen; a lease
    /// given up and taken again does not count).
    pub owner_switches: u64,
}

/// A lease a worker holds: its partition and the counter it took it with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeldLease {
    /// The leased partition.
    pub partition: PartitionRef,
    /// The counter the lease had when this worker took it.
    pub counter: u64,
}

/// What a position of a leased partition is stored under: the worker that holds the
/// lease and the counter it took it with. A store that keeps the group's leases in its
/// own database stores the position only while the lease still has this owner and
/// counter ([`OffsetStore::store_fenced`](crate::OffsetStore::store_fenced)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseFence {
    /// The worker holding the lease.
    pub owner: Arc<str>,
    /// The counter it took the lease with.
    pub counter: u64,
}

/// The lease each partition of a consumer is (or was last) held under
/// ([`ConsumerBackend::lease_fences`](crate::ConsumerBackend::lease_fences)); `None` for
/// a partition never held.
pub type LeaseFences = Arc<dyn Fn(&PartitionRef) -> Option<LeaseFence> + Send + Sync>;

impl LeaseFence {
    /// Whether a lease of `owner` (`None`: no owner) and `counter`, as a store keeps it,
    /// is still the one this fence was taken under.
    pub fn holds(&self, owner: Option<&str>, counter: i64) -> bool {
        owner == Some(&*self.owner) && u64::try_from(counter).is_ok_and(|c| c == self.counter)
    }
}

/// Keeps the leases of consumer groups. Every change is a compare-and-set on the lease's
/// counter, so that two workers never both hold one lease.
pub trait LeaseStore: Send + Sync + 'static {
    /// Creates the leases of `units` of `group` that do not exist yet, without owner.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be written.
    fn register(
        &self,
        group: &str,
        units: &[LeaseUnit],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every lease of `group` in `streams`, sorted by partition.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn leases(
        &self,
        group: &str,
        streams: &[String],
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;

    /// Takes the lease of `partition` for `owner`, for `duration`, if its counter is
    /// still `counter` (as the caller last saw it) and it is not finished; unless
    /// `steal`, only if it is also [free](Lease::free). Returns the lease as taken.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when another worker changed it first, it is finished,
    /// or (without `steal`) it is held; [`StoreError::Database`] when the store fails.
    fn take(
        &self,
        group: &str,
        partition: &PartitionRef,
        owner: &str,
        counter: u64,
        duration: Duration,
        steal: bool,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send;

    /// Renews the leases `owner` holds for another `duration` from now, and returns
    /// those it still holds; the others were taken by other workers.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; none is renewed then.
    fn renew(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
        duration: Duration,
    ) -> impl Future<Output = Result<Vec<HeldLease>, StoreError>> + Send;

    /// Gives up leases `owner` holds, so that other workers take them at once; one it
    /// no longer holds is left as it is.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    fn release(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a lease `owner` holds finished (its partition was read to the end, and its
    /// last position stored), and gives it up.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when `owner` no longer holds it; [`StoreError::Database`]
    /// when the store fails.
    fn finish(
        &self,
        group: &str,
        owner: &str,
        held: &HeldLease,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
