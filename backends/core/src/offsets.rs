//! Offset stores: where a consumer group records how far it got in each partition.
//!
//! Keys are (consumer group, stream, partition or shard). A position is stored only after
//! the record at it was handled or skipped, so a restarted consumer resumes just after it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::leases::LeaseFence;
use crate::{BackendError, BoxError, PartitionRef, Position};

/// An error from an offset store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's database failed.
    #[error("{store} offset store failed")]
    Database {
        /// Which store, such as `SQLite`.
        store: &'static str,
        /// The database's error.
        #[source]
        source: BoxError,
    },
    /// A stored row is neither an offset nor a sequence number.
    #[error("the stored position of {partition} for group {group:?} is corrupt")]
    Corrupt {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: PartitionRef,
    },
    /// A store kept by the backend (Kafka consumer-group commits) failed.
    #[error("the positions of group {group:?} could not be {action} in the backend")]
    Backend {
        /// The consumer group.
        group: String,
        /// `loaded` or `stored`.
        action: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A position older than the one stored, or a record at or below the stored position
    /// (one its partition's new owner has handled), was refused: the writer is no longer
    /// the partition's owner (a consumer that lost it in a rebalance, or a process that
    /// was thought dead). Nothing of the write was stored.
    #[error(
        "the position {attempted} of {partition} for group {group:?} is handled already (the store has {stored}): another consumer owns the partition now"
    )]
    Fenced {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: PartitionRef,
        /// What was to be stored (or marked handled).
        attempted: Position,
        /// What the store holds: its position of the partition, or `attempted` itself when
        /// that record is marked handled already.
        stored: Position,
    },
    /// A lease was taken, renewed, given up or finished by a worker that does not hold
    /// it (any more): another worker changed it first.
    #[error("the lease of {partition} for group {group:?} is not held by {owner:?}")]
    LeaseLost {
        /// The consumer group.
        group: String,
        /// The leased partition.
        partition: PartitionRef,
        /// The worker that tried.
        owner: String,
    },
    /// The store cannot keep this kind of position (such as a Kinesis sequence number in
    /// a store of Kafka offsets).
    #[error("the position {position} of {partition} cannot be stored here: {reason}")]
    Unsupported {
        /// The partition.
        partition: PartitionRef,
        /// The position.
        position: Position,
        /// Why.
        reason: &'static str,
    },
}

impl StoreError {
    /// [`StoreError::LeaseLost`]: `owner` does not hold the lease of `partition` of
    /// `group`.
    pub fn lease_lost(group: &str, partition: &PartitionRef, owner: &str) -> Self {
        Self::LeaseLost {
            group: group.to_owned(),
            partition: partition.clone(),
            owner: owner.to_owned(),
        }
    }
}

/// Stores and loads consumer positions.
pub trait OffsetStore: Send + Sync + 'static {
    /// The last stored position of `group` in `partition`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Stores the positions of `group` in several partitions, all or none.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the positions could not be stored; none of them then are.
    fn store(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores positions as [`store`](Self::store) does, those of the partitions in
    /// `fences` only while their leases still have the fence's owner and counter: a
    /// worker that lost a lease (stolen, or expired and taken while it was paused)
    /// cannot store a position of its partition, even one ahead of the stored one. A
    /// store that keeps the group's leases in its own database (SQLite, PostgreSQL)
    /// checks them in the same transaction as it writes; a partition whose lease it does
    /// not keep is not checked. By default no fence is checked, as by a store that keeps
    /// no leases.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when a lease has another owner or counter now, and
    /// as [`store`](Self::store); none of the positions are stored then.
    fn store_fenced(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
        fences: &[(PartitionRef, LeaseFence)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = fences;
        self.store(group, positions)
    }

    /// Moves `group` to `positions` as an operator does (`logpipe offsets set`): stores
    /// them, and forgets every record marked handled in those partitions
    /// ([`load_handled`](Self::load_handled)), so that the records after the new
    /// positions are all handled again. By default the same as [`store`](Self::store).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the positions could not be stored; none of them then are.
    fn reset(
        &self,
        group: &str,
        positions: &[(PartitionRef, Position)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store(group, positions)
    }

    /// The positions after the stored one of `group` in `partition` whose records were
    /// handled already: a store that writes a record's effects and its mark in one
    /// transaction (`SqliteOffsetStore::transaction`) keeps them, so that a consumer
    /// handling records concurrently, whose stored position is the last one below which
    /// every record is handled, skips them after a restart instead of applying them
    /// twice. Storing a position forgets the marks up to it. None by default.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn load_handled(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> impl Future<Output = Result<Vec<Position>, StoreError>> + Send {
        let _ = (group, partition);
        std::future::ready(Ok(Vec::new()))
    }

    /// Whether the backend's consumers start each assigned partition from this store's
    /// positions by themselves, as a Kafka consumer starts from its group's committed
    /// offset. A consumer then seeks to no position instead of loading one first. False
    /// by default.
    fn resumed_by_backend(&self) -> bool {
        false
    }

    /// Whether positions outlive the process that stored them (true by default; false
    /// for [`MemoryOffsetStore`]), so that tools of other processes can read and move
    /// them.
    fn is_durable(&self) -> bool {
        true
    }
}

/// Positions kept in memory, for tests and for streams that are read from the start on
/// every run. Clones share the same positions.
///
/// ```
/// use logpipe_core::{MemoryOffsetStore, OffsetStore, PartitionRef, Position};
///
/// # tokio_test_block_on(async {
/// let store = MemoryOffsetStore::new();
/// let partition = PartitionRef::new("people", "0");
/// store.store("billing", &[(partition.clone(), Position::Offset(41))]).await?;
/// assert_eq!(store.load("billing", &partition).await?, Some(Position::Offset(41)));
/// assert_eq!(store.load("search", &partition).await?, None);
/// # Ok::<(), logpipe_core::StoreError>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryOffsetStore {
    positions: Arc<Mutex<HashMap<(String, PartitionRef), Position>>>,
}

impl MemoryOffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored position of `group`, sorted by partition.
    pub fn positions(&self, group: &str) -> Vec<(PartitionRef, Position)> {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<_> = positions
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, partition), position)| (partition.clone(), position.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}

impl OffsetStore for MemoryOffsetStore {
    async fn load(
        &self,
        group: &str,
        partition: &PartitionRef,
    ) -> Result<Option<Position>, StoreError> {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(positions
            .get(&(group.to_owned(), partition.clone()))
            .cloned())
    }

    fn is_durable(&self) -> bool {
        false
    }

    async fn store(&self, group: &str, new: &[(PartitionRef, Position)]) -> Result<(), StoreError> {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (partition, position) in new {
            positions.insert((group.to_owned(), partition.clone()), position.clone());
        }
        Ok(())
    }
}
