//! The lease rules run for one consumer: renew, take, steal, expire, give up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::balance::plan;
use super::{HeldLease, LeaseStore, LeaseUnit};
use crate::{ConsumerEvent, PartitionRef, SettingError, StoreError, error_chain};

/// How a worker holds leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The worker's name in the store, unique among the workers of a group (such as the
    /// host name and process id).
    pub owner: String,
    /// How long a lease lasts unless renewed: what a dead worker's partitions wait
    /// before others take them.
    pub duration: Duration,
    /// How often leases are renewed and the store is looked at for leases to take; at
    /// most a third of `duration`, so that two renewals can fail before a lease expires.
    pub renew_every: Duration,
    /// Most leases taken from other workers in one round.
    pub max_steals: usize,
}

impl LeaseOptions {
    /// Options for `owner`: leases of 10 s, renewed every 2 s, one stolen a round.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            max_steals: 1,
        }
    }

    /// Options from a configuration's settings: `worker_id` (default
    /// [`default_owner`](Self::default_owner)), `lease_duration_ms` and `lease_renewal_ms`.
    pub fn from_settings(worker_id: Option<&str>, duration_ms: u64, renewal_ms: u64) -> Self {
        let mut options = Self::new(worker_id.map_or_else(Self::default_owner, str::to_owned));
        options.duration = Duration::from_millis(duration_ms);
        options.renew_every = Duration::from_millis(renewal_ms);
        options
    }

    /// This process's name: the host name and the process id, such as `web-1:4242`.
    pub fn default_owner() -> String {
        // Read once: every consumer opened asks, and the settings' checks too.
        static HOST: OnceLock<String> = OnceLock::new();
        let host = HOST.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .or_else(|| std::env::var("COMPUTERNAME").ok())
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| "localhost".to_owned())
        });
        format!("{host}:{}", std::process::id())
    }

    /// These options for the next consumer of `group` in this process: its owner is
    /// `owner` for the first, then `owner#2`, `owner#3`..., so that consumers of one
    /// group in one process share its partitions as processes do.
    #[must_use]
    pub fn in_process(mut self, group: &str) -> Self {
        static OPENED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
        let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
        let count = opened.entry(group.to_owned()).or_default();
        *count += 1;
        if *count > 1 {
            self.owner = format!("{}#{count}", self.owner);
        }
        self
    }

    /// Checks the values, naming the key (under `prefix`, such as `kinesis.`) of the
    /// first bad one: `lease_duration_ms`, `lease_renewal_ms` or `worker_id`.
    ///
    /// # Errors
    ///
    /// [`SettingError`] for an empty worker id, a zero renewal interval, or one longer
    /// than a third of the lease duration.
    pub fn validate(&self, prefix: &str) -> Result<(), SettingError> {
        if self.owner.trim().is_empty() {
            return Err(SettingError::new(
                format!("{prefix}worker_id"),
                "must not be empty",
            ));
        }
        if self.renew_every.is_zero() {
            return Err(SettingError::new(
                format!("{prefix}lease_renewal_ms"),
                "must be at least 1",
            ));
        }
        if self.renew_every * 3 > self.duration {
            return Err(SettingError::new(
                format!("{prefix}lease_duration_ms"),
                format!(
                    "must be at least three times lease_renewal_ms ({} ms)",
                    self.renew_every.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

/// What changed in the leases a worker holds since it was last asked: apply `lost`
/// first, then `taken` (a partition may be in both: lost, then taken again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseChanges {
    /// Partitions whose leases it took: it is to read them from their stored positions.
    pub taken: Vec<PartitionRef>,
    /// Partitions whose leases it lost (taken by another worker, or expired before a
    /// renewal succeeded): it is to stop handing their records to handlers, and not
    /// store their positions.
    pub lost: Vec<PartitionRef>,
}

impl LeaseChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty() && self.lost.is_empty()
    }

    /// Queues the consumer events of these changes behind `events`: `Lost` first, then
    /// `Assigned` (told even when empty if `first`, the consumer's first round: it is
    /// then in its group). A partition lost while its assignment is still queued is
    /// dropped from that assignment instead, since the consumer never saw it.
    pub fn queue_events(self, events: &mut VecDeque<ConsumerEvent>, first: bool) {
        let mut lost = Vec::new();
        for partition in self.lost {
            let mut unseen = false;
            for event in events.iter_mut() {
                if let ConsumerEvent::Assigned(queued) = event
                    && let Some(at) = queued.iter().position(|p| *p == partition)
                {
                    queued.remove(at);
                    unseen = true;
                }
            }
            if !unseen {
                lost.push(partition);
            }
        }
        if !lost.is_empty() {
            events.push_back(ConsumerEvent::Lost(lost));
        }
        if first || !self.taken.is_empty() {
            events.push_back(ConsumerEvent::Assigned(self.taken));
        }
    }
}

#[derive(Debug)]
struct Held {
    counter: u64,
    /// Until when the lease is surely this worker's: the start of the last successful
    /// take or renewal plus the duration, by this process's clock.
    valid_until: Instant,
}

/// One worker's leases of one group: call [`round`](Self::round) at
/// [`next_round_at`](Self::next_round_at), [`expire`](Self::expire) before handing
/// records on, and read what changed with [`changes`](Self::changes).
///
/// ```
/// use logpipe_core::leases::{LeaseOptions, LeaseUnit, Leaser};
/// # use logpipe_core::leases::{HeldLease, Lease, LeaseStore};
/// # use logpipe_core::{PartitionRef, StoreError};
/// # async fn example(store: impl LeaseStore) -> Result<(), StoreError> {
/// let mut leaser = Leaser::new(store, "billing", LeaseOptions::new("host-a:4242"));
/// let units = [LeaseUnit::new(PartitionRef::new("people", "0"))];
/// leaser.round(&units).await?;
/// for partition in leaser.changes().taken {
///     println!("reading {partition}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Leaser<L> {
    store: L,
    group: String,
    options: LeaseOptions,
    held: BTreeMap<PartitionRef, Held>,
    registered: BTreeSet<LeaseUnit>,
    next_round: Instant,
    changes: LeaseChanges,
}

impl<L: LeaseStore> Leaser<L> {
    /// A worker of `group` holding no lease yet; its first round is due at once.
    pub fn new(store: L, group: impl Into<String>, options: LeaseOptions) -> Self {
        Self {
            store,
            group: group.into(),
            options,
            held: BTreeMap::new(),
            registered: BTreeSet::new(),
            next_round: Instant::now(),
            changes: LeaseChanges::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &L {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &LeaseOptions {
        &self.options
    }

    /// Whether this worker holds the lease of `partition`.
    pub fn holds(&self, partition: &PartitionRef) -> bool {
        self.held.contains_key(partition)
    }

    /// The partitions whose leases this worker holds.
    pub fn held(&self) -> impl Iterator<Item = &PartitionRef> {
        self.held.keys()
    }

    /// Each lease held, until when it is surely this worker's, and the counter it was
    /// taken with.
    pub fn held_until(&self) -> impl Iterator<Item = (&PartitionRef, Instant, u64)> {
        self.held
            .iter()
            .map(|(partition, held)| (partition, held.valid_until, held.counter))
    }

    /// When [`round`](Self::round) or [`expire`](Self::expire) is next due.
    pub fn next_round_at(&self) -> Instant {
        self.held
            .values()
            .map(|held| held.valid_until)
            .fold(self.next_round, Instant::min)
    }

    /// Counts as lost the leases that may have expired in the store by now, because no
    /// renewal succeeded in time (the store failed, or this process was paused): another
    /// worker may hold them already.
    pub fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<_> = self
            .held
            .iter()
            .filter(|(_, held)| held.valid_until <= now)
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in expired {
            tracing::warn!(group = %self.group, %partition, "lease expired before it was renewed; no longer reading the partition");
            metrics::counter!("logpipe_leases_lost_total", "reason" => "expired").increment(1);
            self.lose(partition);
        }
    }

    /// The changes since the last call.
    pub fn changes(&mut self) -> LeaseChanges {
        std::mem::take(&mut self.changes)
    }

    /// One round of the rules: renews the leases held (those another worker took are
    /// lost; when the store fails, those that may have expired are), creates the leases
    /// of new `units`, and takes free leases and steals up to this worker's fair share. The next round is due
    /// [`renew_every`](LeaseOptions::renew_every) later, failed or not.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; what changed before is kept for
    /// [`changes`](Self::changes), and leases not renewed expire in time.
    pub async fn round(&mut self, units: &[LeaseUnit]) -> Result<(), StoreError> {
        self.next_round = Instant::now() + self.options.renew_every;
        // A lease past its local expiry is renewed as well: if nobody took it meanwhile
        // (its counter is unchanged), nobody else read its partition either. Only when
        // that cannot be known is it counted lost.
        if let Err(err) = self.renew().await {
            self.expire();
            return Err(err);
        }
        let new: Vec<_> = units
            .iter()
            .filter(|unit| !self.registered.contains(*unit))
            .cloned()
            .collect();
        if !new.is_empty() {
            self.store.register(&self.group, &new).await?;
            self.registered.extend(new);
        }
        let streams: BTreeSet<String> = units
            .iter()
            .map(|unit| unit.partition.stream.to_string())
            .collect();
        let streams: Vec<String> = streams.into_iter().collect();
        let leases = self.store.leases(&self.group, &streams).await?;
        let plan = plan(&self.options.owner, &leases, self.options.max_steals);
        let chosen = plan
            .take
            .into_iter()
            .map(|lease| (lease, false))
            .chain(plan.steal.into_iter().map(|lease| (lease, true)));
        for (lease, steal) in chosen {
            let started = Instant::now();
            let taken = self
                .store
                .take(
                    &self.group,
                    &lease.partition,
                    &self.options.owner,
                    lease.counter,
                    self.options.duration,
                    steal,
                )
                .await;
            match taken {
                Ok(taken) => {
                    let from = lease.owner.as_deref().unwrap_or("nobody");
                    tracing::info!(group = %self.group, partition = %taken.partition, from, steal, "lease taken");
                    let kind = if steal { "stolen" } else { "free" };
                    metrics::counter!("logpipe_leases_taken_total", "kind" => kind).increment(1);
                    self.held.insert(
                        taken.partition.clone(),
                        Held {
                            counter: taken.counter,
                            valid_until: started + self.options.duration,
                        },
                    );
                    // Lost earlier in this round (expired) and taken again, it stays in
                    // `lost` too: the consumer drops what it held of it, then starts
                    // it again from its stored position.
                    self.changes.taken.push(taken.partition);
                }
                Err(err @ StoreError::LeaseLost { .. }) => {
                    tracing::debug!(group = %self.group, "{}", error_chain(&err));
                }
                Err(err) => {
                    self.report_held();
                    return Err(err);
                }
            }
        }
        self.report_held();
        Ok(())
    }

    async fn renew(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let held = self.held_leases();
        let renewed = self
            .store
            .renew(
                &self.group,
                &self.options.owner,
                &held,
                self.options.duration,
            )
            .await?;
        for lease in held {
            if renewed.contains(&lease) {
                if let Some(held) = self.held.get_mut(&lease.partition) {
                    held.valid_until = started + self.options.duration;
                }
            } else {
                tracing::warn!(group = %self.group, partition = %lease.partition, "lease taken by another worker; no longer reading the partition");
                metrics::counter!("logpipe_leases_lost_total", "reason" => "taken").increment(1);
                self.lose(lease.partition);
            }
        }
        Ok(())
    }

    /// Marks the lease of `partition` finished (it was read to its end and its last
    /// position stored), so that its children may be taken; it is no longer held.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when this worker no longer holds it (it is lost then);
    /// [`StoreError::Database`] when the store fails.
    pub async fn finish(&mut self, partition: &PartitionRef) -> Result<(), StoreError> {
        let Some(held) = self.held.get(partition) else {
            return Err(self.lost_error(partition));
        };
        let lease = HeldLease {
            partition: partition.clone(),
            counter: held.counter,
        };
        match self
            .store
            .finish(&self.group, &self.options.owner, &lease)
            .await
        {
            Ok(()) => {
                self.held.remove(partition);
                self.report_held();
                Ok(())
            }
            Err(err @ StoreError::LeaseLost { .. }) => {
                self.lose(partition.clone());
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Gives up every lease held, so that other workers take them without waiting for
    /// them to expire (on shutdown, once positions are stored).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; the leases then expire in time.
    pub async fn release_all(&mut self) -> Result<(), StoreError> {
        let held = self.held_leases();
        self.held.clear();
        self.report_held();
        if held.is_empty() {
            return Ok(());
        }
        self.store
            .release(&self.group, &self.options.owner, &held)
            .await?;
        tracing::info!(group = %self.group, leases = held.len(), "leases given up");
        Ok(())
    }

    fn held_leases(&self) -> Vec<HeldLease> {
        self.held
            .iter()
            .map(|(partition, held)| HeldLease {
                partition: partition.clone(),
                counter: held.counter,
            })
            .collect()
    }

    fn lose(&mut self, partition: PartitionRef) {
        self.held.remove(&partition);
        let was_taken = self.changes.taken.len();
        self.changes.taken.retain(|p| *p != partition);
        // Taken and lost between two looks, the consumer never saw it taken (and saw it
        // lost already if it held it before).
        if self.changes.taken.len() == was_taken && !self.changes.lost.contains(&partition) {
            self.changes.lost.push(partition);
        }
    }

    fn lost_error(&self, partition: &PartitionRef) -> StoreError {
        StoreError::lease_lost(&self.group, partition, &self.options.owner)
    }

    fn report_held(&self) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("logpipe_leases_held", "group" => self.group.clone())
            .set(self.held.len() as f64);
    }
}
