//! A [`Leaser`] on a task of its own, so that leases are renewed on time however busy
//! the consumer that reads the leased partitions is.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{LeaseChanges, LeaseFence, LeaseFences, LeaseStore, LeaseUnit, Leaser};
use crate::{BoxError, BoxFuture, PartitionRef, StoreError, error_chain};

/// Each lease held, or held before: until when it is surely this worker's (`None` once
/// it is not held), and the counter it was last held with, which fences the positions
/// stored after it was lost.
type Validity = Arc<Mutex<BTreeMap<PartitionRef, (Option<Instant>, u64)>>>;

/// Runs a [`Leaser`]'s rounds on a Tokio task and hands what changed to the consumer.
///
/// Dropping it stops the task without giving the leases up (they expire);
/// [`close`](Self::close) gives them up first.
pub struct LeaseKeeper {
    owner: Arc<str>,
    changes: mpsc::UnboundedReceiver<LeaseChanges>,
    valid: Validity,
    close: Option<mpsc::Sender<oneshot::Sender<()>>>,
    finish: mpsc::UnboundedSender<PartitionRef>,
    /// The rounds, until [`start`](Self::start) spawns them.
    /// (In a mutex only so that the keeper is `Sync`.)
    rounds: Mutex<Option<BoxFuture<'static, ()>>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("started", &self.task.is_some())
            .finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// Runs `leaser`'s rounds once [started](Self::start); `units` says before each
    /// round what is to be leased (such as every partition of the consumer's streams).
    /// A round or a `units` call that fails is logged and tried again at the next
    /// round; leases that could not be renewed meanwhile are lost when they may have
    /// expired.
    pub fn new<L, U, F>(mut leaser: Leaser<L>, mut units: U) -> Self
    where
        L: LeaseStore,
        U: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<Vec<LeaseUnit>, BoxError>> + Send,
    {
        let owner = Arc::from(leaser.options().owner.as_str());
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (close, mut closing) = mpsc::channel::<oneshot::Sender<()>>(1);
        let (finish, mut finishing) = mpsc::unbounded_channel::<PartitionRef>();
        let valid: Validity = Arc::default();
        let published = Arc::clone(&valid);
        let rounds = Box::pin(async move {
            let mut first = true;
            // Leases to mark finished at the next round, which is due at once after
            // one is asked for.
            let mut to_finish: Vec<PartitionRef> = Vec::new();
            let mut finish_asked = false;
            loop {
                let round_at = if finish_asked {
                    Instant::now()
                } else {
                    leaser.next_round_at()
                };
                tokio::select! {
                    closed = closing.recv() => {
                        // Shards read to their end just before are finished, not given up.
                        while let Ok(partition) = finishing.try_recv() {
                            to_finish.push(partition);
                        }
                        finish_all(&mut leaser, &mut to_finish).await;
                        if let Err(err) = leaser.release_all().await {
                            tracing::warn!("cannot give the leases up, they expire instead: {}", error_chain(&err));
                        }
                        publish(&published, &leaser);
                        if let Some(done) = closed {
                            let _ = done.send(());
                        }
                        return;
                    }
                    Some(partition) = finishing.recv() => {
                        to_finish.push(partition);
                        finish_asked = true;
                    }
                    // Due, or a lease is at its local expiry (renewing it at once keeps it
                    // if nobody took it), or leases are to be finished.
                    () = tokio::time::sleep_until(round_at.into()) => {
                        // Finished first, so that the round takes their children.
                        finish_all(&mut leaser, &mut to_finish).await;
                        finish_asked = false;
                        match units().await {
                            Ok(units) => {
                                if let Err(err) = leaser.round(&units).await {
                                    metrics::counter!("logpipe_lease_store_errors_total").increment(1);
                                    tracing::warn!("leases: {}; trying again at the next renewal", error_chain(&err));
                                }
                            }
                            Err(err) => {
                                tracing::warn!("leases: cannot list what to lease: {}", error_chain(&*err));
                                leaser.expire();
                            }
                        }
                        publish(&published, &leaser);
                        let changed = leaser.changes();
                        // The first round is told even when it took nothing: the consumer is
                        // then a member of its group, ready, with no partition yet.
                        if (first || !changed.is_empty()) && changes_tx.send(changed).is_err() {
                            return;
                        }
                        first = false;
                    }
                }
            }
        });
        Self {
            owner,
            changes,
            valid,
            close: Some(close),
            finish,
            rounds: Mutex::new(Some(rounds)),
            task: None,
        }
    }

    /// Starts the rounds on a task of the current Tokio runtime, unless started already.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(&mut self) {
        let rounds = self
            .rounds
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rounds) = rounds {
            self.task = Some(tokio::spawn(rounds));
        }
    }

    /// The next changes of the leases held: those of the first round (even if empty),
    /// then each that changed something.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: no change is lost when the future is dropped.
    pub async fn next_changes(&mut self) -> Option<LeaseChanges> {
        self.changes.recv().await
    }

    /// Changes of the leases held that are waiting, without waiting for more.
    pub fn try_changes(&mut self) -> Option<LeaseChanges> {
        self.changes.try_recv().ok()
    }

    /// Whether the lease of `partition` is held and surely not expired now: records of a
    /// partition whose lease is not are not to be handed on.
    pub fn holds(&self, partition: &PartitionRef) -> bool {
        valid_now(&self.valid, partition)
    }

    /// [`holds`](Self::holds) as a function to hand on, such as to a reader that is to
    /// read only partitions whose leases are held.
    pub fn holds_fn(&self) -> impl Fn(&PartitionRef) -> bool + Send + Sync + 'static {
        let valid = Arc::clone(&self.valid);
        move |partition| valid_now(&valid, partition)
    }

    /// The fences to store positions under: each partition's lease as this worker last
    /// held it (the store tells whether it still is); `None` for one it never held.
    pub fn fences(&self) -> LeaseFences {
        let (valid, owner) = (Arc::clone(&self.valid), Arc::clone(&self.owner));
        Arc::new(move |partition| {
            let valid = valid.lock().unwrap_or_else(PoisonError::into_inner);
            valid.get(partition).map(|(_, counter)| LeaseFence {
                owner: Arc::clone(&owner),
                counter: *counter,
            })
        })
    }

    /// Marks the lease of `partition` finished (it was read to its end and its last
    /// position stored), so that its children may be taken, at a round due at once; one
    /// that cannot be marked for a failing store is tried again at each round. It is no
    /// longer held then, and not reported lost.
    pub fn finish(&self, partition: PartitionRef) {
        // The rounds ended only when the consumer is going away.
        let _ = self.finish.send(partition);
    }

    /// Gives every lease up (once the positions of their partitions are stored), so that
    /// other workers take them at once, and stops the task.
    pub async fn close(&mut self) {
        if self.task.is_none() {
            return;
        }
        if let Some(close) = self.close.take() {
            let (done, wait) = oneshot::channel();
            if close.send(done).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Marks the leases of `partitions` finished; those the store failed to mark are kept
/// to be tried again, and those lost are dropped (the leaser reports them lost).
async fn finish_all<L: LeaseStore>(leaser: &mut Leaser<L>, partitions: &mut Vec<PartitionRef>) {
    let mut again = Vec::new();
    for partition in partitions.drain(..) {
        match leaser.finish(&partition).await {
            Ok(()) => {
                tracing::info!(%partition, "lease finished: the partition was read to its end")
            }
            Err(err @ StoreError::LeaseLost { .. }) => {
                tracing::warn!("cannot finish a lease: {}", error_chain(&err));
            }
            Err(err) => {
                metrics::counter!("logpipe_lease_store_errors_total").increment(1);
                tracing::warn!(
                    "cannot finish a lease: {}; trying again at the next renewal",
                    error_chain(&err)
                );
                again.push(partition);
            }
        }
    }
    *partitions = again;
}

fn valid_now(valid: &Validity, partition: &PartitionRef) -> bool {
    let valid = valid.lock().unwrap_or_else(PoisonError::into_inner);
    matches!(valid.get(partition), Some((Some(until), _)) if *until > Instant::now())
}

fn publish<L: LeaseStore>(valid: &Validity, leaser: &Leaser<L>) {
    let mut valid = valid.lock().unwrap_or_else(PoisonError::into_inner);
    for (until, _) in valid.values_mut() {
        *until = None;
    }
    for (partition, until, counter) in leaser.held_until() {
        valid.insert(partition.clone(), (Some(until), counter));
    }
}
