//! [`AnyLeaseStore`]: a lease store whose type is chosen at run time.

use std::sync::Arc;
use std::time::Duration;

use super::{HeldLease, Lease, LeaseStore, LeaseUnit};
use crate::{BoxFuture, PartitionRef, StoreError};

/// Any [`LeaseStore`] behind a pointer, for a backend that is handed its group's lease
/// store by the configuration (a Kinesis backend's leases in SQLite or PostgreSQL).
/// Clones share the store.
///
/// ```
/// use logpipe_core::leases::{AnyLeaseStore, LeaseStore};
/// # fn example(store: impl LeaseStore) {
/// let store = AnyLeaseStore::new(store);
/// let shared = store.clone();
/// # }
/// ```
#[derive(Clone)]
pub struct AnyLeaseStore {
    inner: Arc<dyn DynLeaseStore>,
}

impl std::fmt::Debug for AnyLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyLeaseStore").finish_non_exhaustive()
    }
}

impl AnyLeaseStore {
    /// `store`, as a lease store whose type is chosen at run time.
    pub fn new<L: LeaseStore>(store: L) -> Self {
        Self {
            inner: Arc::new(store),
        }
    }
}

/// [`LeaseStore`] with boxed futures, so that it can be a trait object.
trait DynLeaseStore: Send + Sync {
    fn register<'a>(
        &'a self,
        group: &'a str,
        units: &'a [LeaseUnit],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn leases<'a>(
        &'a self,
        group: &'a str,
        streams: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Lease>, StoreError>>;
    #[allow(clippy::too_many_arguments)]
    fn take<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
        owner: &'a str,
        counter: u64,
        duration: Duration,
        steal: bool,
    ) -> BoxFuture<'a, Result<Lease, StoreError>>;
    fn renew<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a [HeldLease],
        duration: Duration,
    ) -> BoxFuture<'a, Result<Vec<HeldLease>, StoreError>>;
    fn release<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a [HeldLease],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn finish<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a HeldLease,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<L: LeaseStore> DynLeaseStore for L {
    fn register<'a>(
        &'a self,
        group: &'a str,
        units: &'a [LeaseUnit],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(LeaseStore::register(self, group, units))
    }

    fn leases<'a>(
        &'a self,
        group: &'a str,
        streams: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Lease>, StoreError>> {
        Box::pin(LeaseStore::leases(self, group, streams))
    }

    fn take<'a>(
        &'a self,
        group: &'a str,
        partition: &'a PartitionRef,
        owner: &'a str,
        counter: u64,
        duration: Duration,
        steal: bool,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        Box::pin(LeaseStore::take(
            self, group, partition, owner, counter, duration, steal,
        ))
    }

    fn renew<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a [HeldLease],
        duration: Duration,
    ) -> BoxFuture<'a, Result<Vec<HeldLease>, StoreError>> {
        Box::pin(LeaseStore::renew(self, group, owner, held, duration))
    }

    fn release<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a [HeldLease],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(LeaseStore::release(self, group, owner, held))
    }

    fn finish<'a>(
        &'a self,
        group: &'a str,
        owner: &'a str,
        held: &'a HeldLease,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(LeaseStore::finish(self, group, owner, held))
    }
}

impl LeaseStore for AnyLeaseStore {
    async fn register(&self, group: &str, units: &[LeaseUnit]) -> Result<(), StoreError> {
        self.inner.register(group, units).await
    }

    async fn leases(&self, group: &str, streams: &[String]) -> Result<Vec<Lease>, StoreError> {
        self.inner.leases(group, streams).await
    }

    async fn take(
        &self,
        group: &str,
        partition: &PartitionRef,
        owner: &str,
        counter: u64,
        duration: Duration,
        steal: bool,
    ) -> Result<Lease, StoreError> {
        self.inner
            .take(group, partition, owner, counter, duration, steal)
            .await
    }

    async fn renew(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
        duration: Duration,
    ) -> Result<Vec<HeldLease>, StoreError> {
        self.inner.renew(group, owner, held, duration).await
    }

    async fn release(
        &self,
        group: &str,
        owner: &str,
        held: &[HeldLease],
    ) -> Result<(), StoreError> {
        self.inner.release(group, owner, held).await
    }

    async fn finish(&self, group: &str, owner: &str, held: &HeldLease) -> Result<(), StoreError> {
        self.inner.finish(group, owner, held).await
    }
}
