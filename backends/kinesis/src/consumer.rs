//! Consumers of Kinesis shards: every shard of some streams, or the shards a consumer
//! group's leases give them.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use logpipe_core::leases::{LeaseChanges, LeaseFences, LeaseKeeper, LeaseUnit};
use logpipe_core::{
    BackendError, BoxError, BoxFuture, ConsumerBackend, ConsumerEvent, PartitionRef, Position,
    Record,
};

use crate::reader::list_shards;
use crate::{
    KinesisApi, ReaderEvent, ShardPosition, ShardReader, ShardRecord, ShardRef, backend_error,
};

/// Reads the shards of some Kinesis streams, parents before children: every shard
/// ([`KinesisBackend::consumer`](crate::KinesisBackend::consumer)), or those its group's
/// leases give it (see [`KinesisBackend::with_leases`](crate::KinesisBackend::with_leases)).
#[derive(Debug)]
pub struct KinesisConsumer {
    reader: ShardReader,
    leases: Option<ShardLeases>,
}

/// The leases of a consumer of a group, and what it knows of each shard it holds.
struct ShardLeases {
    keeper: LeaseKeeper,
    held: BTreeMap<ShardRef, HeldShard>,
    /// The shards of the streams as last listed, shared with the keeper's rounds.
    units: Arc<ListedUnits>,
    /// Events of lease changes and finished shards not returned yet.
    events: VecDeque<ConsumerEvent>,
    assigned: bool,
    /// Shards given up as finished (revoked already), whose leases the keeper may
    /// still report lost: the consumer was told of them once.
    finishing: HashSet<PartitionRef>,
    /// Whether positions are stored under the leases (the lease store is the offset
    /// store's database).
    fence_positions: bool,
}

impl std::fmt::Debug for ShardLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLeases")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct HeldShard {
    /// The position of the last record handed on since the shard was sought.
    handed: Option<String>,
    /// The last position the consumer told stored since the shard was sought.
    stored: Option<String>,
    /// Read to its end: its lease is finished once `handed` is stored.
    ended: bool,
}

impl HeldShard {
    /// Whether every record handed on has its position stored.
    fn all_stored(&self) -> bool {
        self.handed.is_none() || self.handed == self.stored
    }
}

/// The shards of some streams as leased units, listed again every discovery interval,
/// or at once after a shard ended (its children are new).
pub(crate) struct ListedUnits {
    api: Arc<dyn KinesisApi>,
    streams: Vec<Arc<str>>,
    every: Duration,
    listed: Mutex<Option<(Instant, Vec<LeaseUnit>)>>,
    relist: AtomicBool,
}

impl ListedUnits {
    pub(crate) fn new(api: Arc<dyn KinesisApi>, streams: Vec<Arc<str>>, every: Duration) -> Self {
        Self {
            api,
            streams,
            every,
            listed: Mutex::new(None),
            relist: AtomicBool::new(false),
        }
    }

    /// The units as a function for a [`LeaseKeeper`].
    pub(crate) fn lister(
        self: &Arc<Self>,
    ) -> impl FnMut() -> BoxFuture<'static, Result<Vec<LeaseUnit>, BoxError>> + Send + 'static {
        let units = Arc::clone(self);
        move || {
            let units = Arc::clone(&units);
            Box::pin(async move { units.units().await })
        }
    }

    async fn units(&self) -> Result<Vec<LeaseUnit>, BoxError> {
        if !self.relist.swap(false, Ordering::Relaxed) {
            let listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, units)) = &*listed
                && at.elapsed() < self.every
            {
                return Ok(units.clone());
            }
        }
        let mut units = Vec::new();
        for stream in &self.streams {
            let shards = match list_shards(&*self.api, stream).await {
                Ok(shards) => shards,
                Err(err) => {
                    self.relist.store(true, Ordering::Relaxed);
                    // The shards last listed, so that the leases held are renewed while
                    // the stream cannot be listed (throttled, say).
                    let listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some((_, units)) = &*listed {
                        tracing::warn!(%stream, error = %err, "cannot list the shards; leasing those listed last");
                        return Ok(units.clone());
                    }
                    return Err(err.into());
                }
            };
            let known: HashSet<Arc<str>> = shards
                .iter()
                .map(|(shard, _)| Arc::clone(&shard.shard_id))
                .collect();
            for (shard, parents) in shards {
                units.push(LeaseUnit {
                    partition: partition_of(&shard),
                    // A parent no longer listed has aged out of the stream.
                    parents: parents
                        .iter()
                        .filter(|parent| known.contains(*parent))
                        .map(ToString::to_string)
                        .collect(),
                });
            }
        }
        *self.listed.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), units.clone()));
        Ok(units)
    }

    /// Whether `partition` was listed with parents: it then starts at its oldest record
    /// when no position is stored, so that nothing between parent and child is missed.
    fn has_parents(&self, partition: &PartitionRef) -> bool {
        let listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        listed.as_ref().is_some_and(|(_, units)| {
            units
                .iter()
                .any(|unit| unit.partition == *partition && !unit.parents.is_empty())
        })
    }
}

impl KinesisConsumer {
    /// A consumer of every shard `reader` finds.
    pub(crate) fn new(reader: ShardReader) -> Self {
        Self {
            reader,
            leases: None,
        }
    }

    /// A consumer of the shards whose leases `keeper` holds, among `units`; `reader`
    /// finds no shard of its own.
    /// A consumer of the shards `keeper` leases; with `fence_positions`, their
    /// positions are stored under the leases ([`ConsumerBackend::lease_fences`]).
    pub(crate) fn leased(
        mut reader: ShardReader,
        keeper: LeaseKeeper,
        units: Arc<ListedUnits>,
        fence_positions: bool,
    ) -> Self {
        let holds = keeper.holds_fn();
        reader.read_only_while(move |shard| holds(&partition_of(shard)));
        Self {
            reader,
            leases: Some(ShardLeases {
                keeper,
                held: BTreeMap::new(),
                units,
                events: VecDeque::new(),
                assigned: false,
                finishing: HashSet::new(),
                fence_positions,
            }),
        }
    }

    /// Whether `partition` is to be left alone: its lease was lost since it was assigned
    /// (a `Lost` event for it is on its way, and nothing of it is read meanwhile).
    fn lost(&self, partition: &PartitionRef) -> bool {
        self.leases
            .as_ref()
            .is_some_and(|leases| !leases.held.contains_key(&shard_of(partition)))
    }
}

impl ShardLeases {
    /// Applies lease changes to what is read, and queues their events.
    fn apply(&mut self, reader: &mut ShardReader, mut changes: LeaseChanges) {
        let first = !self.assigned;
        self.assigned = true;
        // A shard revoked as finished is not lost too; taken again (its lease had
        // lapsed before it was finished), it is read again from its stored position,
        // and ends at once.
        changes
            .lost
            .retain(|partition| !self.finishing.contains(partition));
        for partition in &changes.taken {
            self.finishing.remove(partition);
        }
        for partition in &changes.lost {
            let shard = shard_of(partition);
            reader.remove(&shard);
            self.held.remove(&shard);
        }
        for partition in &changes.taken {
            let shard = shard_of(partition);
            reader.add(shard.clone(), self.units.has_parents(partition));
            self.held.insert(shard, HeldShard::default());
        }
        changes.queue_events(&mut self.events, first);
    }

    /// Notes the records handed on.
    fn handed(&mut self, records: &[ShardRecord]) {
        for record in records {
            if let Some(held) = self.held.get_mut(&record.shard) {
                held.handed = Some(record.position().to_string());
            }
        }
    }

    /// Notes shards read to their end: those whose records handed on all have their
    /// positions stored are finished at once, the others once the last one is.
    fn ended(&mut self, reader: &mut ShardReader, shards: Vec<ShardRef>) {
        self.units.relist.store(true, Ordering::Relaxed);
        for shard in shards {
            let Some(held) = self.held.get_mut(&shard) else {
                continue;
            };
            held.ended = true;
            if held.all_stored() {
                self.finish(reader, &shard);
            }
        }
    }

    /// Notes the positions stored, and finishes the leases of ended shards whose last
    /// record's position is stored now.
    fn stored(&mut self, reader: &mut ShardReader, positions: &[(PartitionRef, Position)]) {
        for (partition, position) in positions {
            let shard = shard_of(partition);
            let (Some(held), Position::Sequence(stored)) = (self.held.get_mut(&shard), position)
            else {
                continue;
            };
            held.stored = Some(stored.clone());
            if held.ended && held.all_stored() {
                self.finish(reader, &shard);
            }
        }
    }

    /// Gives the shard up as finished: its children may be taken; its partition is
    /// revoked, every position of it stored.
    fn finish(&mut self, reader: &mut ShardReader, shard: &ShardRef) {
        let partition = partition_of(shard);
        self.keeper.finish(partition.clone());
        self.finishing.insert(partition.clone());
        reader.remove(shard);
        self.held.remove(shard);
        self.events
            .push_back(ConsumerEvent::Revoked(vec![partition]));
    }
}

impl ConsumerBackend for KinesisConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        let Self { reader, leases } = self;
        let Some(leases) = leases else {
            loop {
                let event = reader.next_event().await.map_err(backend_error)?;
                if let Some(event) = consumer_event(event) {
                    return Ok(event);
                }
            }
        };
        leases.keeper.start();
        loop {
            while let Some(changes) = leases.keeper.try_changes() {
                leases.apply(reader, changes);
            }
            if let Some(event) = leases.events.pop_front() {
                return Ok(event);
            }
            let event = tokio::select! {
                Some(changes) = leases.keeper.next_changes() => {
                    leases.apply(reader, changes);
                    continue;
                }
                event = reader.next_event() => event.map_err(backend_error)?,
            };
            match &event {
                ReaderEvent::Records(records) => leases.handed(records),
                ReaderEvent::Finished(shards) => {
                    leases.ended(reader, shards.clone());
                    continue;
                }
                _ => {}
            }
            if let Some(event) = consumer_event(event) {
                return Ok(event);
            }
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        if self.lost(partition) {
            return Ok(());
        }
        let shard = shard_of(partition);
        let after = after.map(ShardPosition::from_position).transpose()?;
        let sought = self.reader.seek(&shard, after.as_ref());
        if let Some(held) = self
            .leases
            .as_mut()
            .and_then(|leases| leases.held.get_mut(&shard))
        {
            *held = HeldShard::default();
        }
        sought.map_err(backend_error)
    }

    fn stored(&mut self, positions: &[(PartitionRef, Position)]) {
        if let Some(leases) = self.leases.as_mut() {
            leases.stored(&mut self.reader, positions);
        }
    }

    fn lease_fences(&self) -> Option<LeaseFences> {
        self.leases
            .as_ref()
            .filter(|leases| leases.fence_positions)
            .map(|leases| leases.keeper.fences())
    }

    async fn close(&mut self) {
        if let Some(leases) = self.leases.as_mut() {
            leases.keeper.close().await;
        }
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            if !self.lost(partition) {
                self.reader
                    .pause(&shard_of(partition))
                    .map_err(backend_error)?;
            }
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            if !self.lost(partition) {
                self.reader
                    .resume(&shard_of(partition))
                    .map_err(backend_error)?;
            }
        }
        Ok(())
    }
}

/// The consumer's event for a reader's, if it has one.
fn consumer_event(event: ReaderEvent) -> Option<ConsumerEvent> {
    Some(match event {
        ReaderEvent::Assigned(shards) => {
            ConsumerEvent::Assigned(shards.iter().map(partition_of).collect())
        }
        ReaderEvent::Records(records) => {
            ConsumerEvent::Records(records.into_iter().map(Record::from).collect())
        }
        ReaderEvent::ReadsFailing { since, reason } => {
            ConsumerEvent::ReadsFailing { since, reason }
        }
        ReaderEvent::ReadsSucceed => ConsumerEvent::ReadsSucceed,
        ReaderEvent::Finished(_) => return None,
    })
}

/// The shard a partition names.
pub(crate) fn shard_of(partition: &PartitionRef) -> ShardRef {
    ShardRef {
        stream: Arc::clone(&partition.stream),
        shard_id: Arc::clone(&partition.partition),
    }
}

/// The partition of a shard.
pub(crate) fn partition_of(shard: &ShardRef) -> PartitionRef {
    PartitionRef::new(Arc::clone(&shard.stream), Arc::clone(&shard.shard_id))
}
