//! Which records may be handled now, and how far each partition is handled.
//!
//! Records wait per partition in the order read. The ordering mode groups them into
//! *units* (a partition, a key within a partition, or none): a unit's records run one
//! after another, in order, while records of other units run beside them. Partitions take
//! turns. A partition's *watermark* is its newest record below which every record is
//! handled (or skipped): the position a consumer may store, whatever finished above it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::options::{KeylessOrdering, Ordering};
use crate::backend::{PartitionRef, Position, Record};

/// Where a record sits in a [`Schedule`]: its partition's slot and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    slot: u64,
    seq: u64,
    /// Its unit (`None`: a record that waits for no other).
    unit: Option<u64>,
}

impl Ticket {
    /// The slot of the record's partition.
    pub(super) fn slot(&self) -> u64 {
        self.slot
    }
}

/// A record read and not handled yet.
pub(super) struct Queued {
    pub(super) record: Record,
    pub(super) ticket: Ticket,
    /// The batch handler that takes it, if one does.
    pub(super) batch: Option<usize>,
}

/// How a partition's handler calls are stopped: `retries` ends waits before a retry,
/// `calls` abandons calls under way.
#[derive(Clone)]
pub(super) struct Stops {
    pub(super) retries: CancellationToken,
    pub(super) calls: CancellationToken,
}

impl Stops {
    fn child_of(parent: &Stops) -> Self {
        Self {
            retries: parent.retries.child_token(),
            calls: parent.calls.child_token(),
        }
    }

    pub(super) fn new() -> Self {
        Self {
            retries: CancellationToken::new(),
            calls: CancellationToken::new(),
        }
    }
}

/// Records of one unit that are started or may start, and those that wait behind them.
struct Unit {
    /// Records runnable, running, or in a batch.
    active: u32,
    /// The batch handler whose open batch the unit's next records may join.
    collecting: Option<usize>,
    /// Records made runnable to join that batch and not taken yet, by number: they wait
    /// again if the batch starts without them.
    joining: Vec<u64>,
    /// Records waiting behind the active ones, by number.
    blocked: VecDeque<u64>,
}

/// Hashes unit ids, which are hashes of keys already (or fixed numbers of units alone
/// in their partition), by taking them as they are.
#[derive(Default)]
struct UnitHasher(u64);

impl Hasher for UnitHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// The numbers of a partition's records that may start, the oldest first: a heap, which
/// keeps its memory as records come and go (a tree allocates each time it empties and
/// fills again, which with one record at a time is every record).
#[derive(Default)]
struct Runnable(BinaryHeap<Reverse<u64>>);

impl Runnable {
    fn insert(&mut self, seq: u64) {
        self.0.push(Reverse(seq));
    }

    /// Takes `seq` out (rare: a record that was to join a batch); false if absent.
    fn remove(&mut self, seq: u64) -> bool {
        let before = self.0.len();
        self.0.retain(|Reverse(n)| *n != seq);
        self.0.len() < before
    }

    fn first(&self) -> Option<u64> {
        self.0.peek().map(|Reverse(seq)| *seq)
    }

    fn pop_first(&mut self) {
        self.0.pop();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A record read and not yet below its partition's watermark.
struct Entry {
    position: Position,
    done: bool,
    /// The record, until it starts.
    queued: Option<Queued>,
}

/// One partition: its records, their units and its watermark.
struct Slot {
    id: u64,
    partition: PartitionRef,
    next_seq: u64,
    /// The number of the oldest record in `window`.
    base_seq: u64,
    /// Each record read and not yet below the watermark, by number from `base_seq`.
    window: VecDeque<Entry>,
    /// The watermark, when it moved since positions were last stored.
    handled: Option<Position>,
    /// Records that may start now, by number (the records stay in `window`).
    runnable: Runnable,
    units: HashMap<u64, Unit, BuildHasherDefault<UnitHasher>>,
    /// Records started (alone or in a batch) and not finished.
    started: usize,
    /// Positions marked handled by an earlier run (in a handler's transaction).
    handled_before: HashSet<Position>,
    paused: bool,
    revoked: bool,
    stops: Arc<Stops>,
}

/// The unit of `record` under `ordering` (`None`: it waits for no other). A key's unit
/// is its rapidhash (eight bytes a step, for every record); two keys that share a hash
/// are merely handled one after the other.
fn unit_of(record: &Record, ordering: Ordering, keyless: KeylessOrdering) -> Option<u64> {
    match (ordering, &record.key) {
        (Ordering::Partition, _) => Some(0),
        (Ordering::Unordered, _) => None,
        (Ordering::Key, Some(key)) => Some(rapidhash::v3::rapidhash_v3(key)),
        (Ordering::Key, None) => match keyless {
            KeylessOrdering::Partition => Some(KEYLESS),
            KeylessOrdering::Unordered => None,
        },
    }
}

impl Slot {
    /// Record `seq`, if it has not started.
    fn queued(&self, seq: u64) -> Option<&Queued> {
        let index = seq.checked_sub(self.base_seq)?;
        self.window.get(index as usize)?.queued.as_ref()
    }

    /// Takes record `seq` out to start it.
    fn take(&mut self, seq: u64) -> Option<Queued> {
        let index = seq.checked_sub(self.base_seq)?;
        self.window.get_mut(index as usize)?.queued.take()
    }

    /// Makes record `seq` (of `unit`, going to `batch`) runnable, or has it wait behind
    /// its unit.
    fn enqueue(&mut self, seq: u64, unit: Option<u64>, batch: Option<usize>) {
        let Some(unit) = unit else {
            self.runnable.insert(seq);
            return;
        };
        match self.units.get_mut(&unit) {
            None => {
                self.units.insert(
                    unit,
                    Unit {
                        active: 1,
                        collecting: None,
                        joining: Vec::new(),
                        blocked: VecDeque::new(),
                    },
                );
                self.runnable.insert(seq);
            }
            Some(state) => {
                let joins = state.blocked.is_empty()
                    && state.collecting.is_some()
                    && state.collecting == batch;
                if joins {
                    state.active += 1;
                    state.joining.push(seq);
                    self.runnable.insert(seq);
                } else {
                    state.blocked.push_back(seq);
                }
            }
        }
    }

    /// After a record of `unit` went into an open batch of `batch`: the unit's next
    /// records that go to the same batch may join it.
    fn collect(&mut self, unit: u64, batch: usize) {
        let Some(state) = self.units.get_mut(&unit) else {
            return;
        };
        state.collecting = Some(batch);
        while let Some(&next) = state.blocked.front() {
            let index = (next - self.base_seq) as usize;
            let joins = self.window[index]
                .queued
                .as_ref()
                .is_some_and(|queued| queued.batch == Some(batch));
            if !joins {
                break;
            }
            state.blocked.pop_front();
            state.active += 1;
            state.joining.push(next);
            self.runnable.insert(next);
        }
    }

    /// The batch the unit's records were joining started: those not in it wait again,
    /// in order, behind it.
    fn stop_collecting(&mut self, unit: u64) {
        let Some(state) = self.units.get_mut(&unit) else {
            return;
        };
        state.collecting = None;
        while let Some(seq) = state.joining.pop() {
            if self.runnable.remove(seq) {
                state.active -= 1;
                state.blocked.push_front(seq);
            }
        }
    }

    /// A record of `unit` finished (or was given up): the next one of the unit may start.
    fn release(&mut self, unit: u64) {
        let Some(state) = self.units.get_mut(&unit) else {
            return;
        };
        state.active -= 1;
        if state.active > 0 {
            return;
        }
        match state.blocked.pop_front() {
            Some(next) => {
                state.active = 1;
                state.collecting = None;
                self.runnable.insert(next);
            }
            None => {
                self.units.remove(&unit);
            }
        }
    }

    /// Marks record `seq` done and moves the watermark over the done records below.
    fn done(&mut self, seq: u64) {
        let Some(index) = seq.checked_sub(self.base_seq) else {
            return;
        };
        if let Some(entry) = self.window.get_mut(index as usize) {
            entry.done = true;
        }
        while self.window.front().is_some_and(|entry| entry.done) {
            let entry = self.window.pop_front().expect("checked");
            self.handled = Some(entry.position);
            self.base_seq += 1;
        }
    }

    fn waiting(&self) -> usize {
        self.runnable.len() + self.units.values().map(|u| u.blocked.len()).sum::<usize>()
    }
}

/// The unit of a partition's keyless records under [`Ordering::Key`].
const KEYLESS: u64 = u64::MAX;

/// The records read and not handled yet, and the watermarks, of every partition.
pub(super) struct Schedule {
    ordering: Ordering,
    keyless: KeylessOrdering,
    lag: Duration,
    window: usize,
    slots: Vec<Slot>,
    /// The slot whose turn is next.
    turn: usize,
    /// Records not started, in every slot.
    waiting: usize,
    next_id: u64,
    stops: Arc<Stops>,
}

impl Schedule {
    /// `lag` is the minimum age of a record before it starts; `window` the records a
    /// partition holds before it is paused; `stops` the parent of every partition's.
    pub(super) fn new(
        ordering: Ordering,
        keyless: KeylessOrdering,
        lag: Duration,
        window: usize,
        stops: Arc<Stops>,
    ) -> Self {
        Self {
            ordering,
            keyless,
            lag,
            window,
            slots: Vec::new(),
            turn: 0,
            waiting: 0,
            next_id: 0,
            stops,
        }
    }

    /// Records read and not started yet.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    fn index_of(&self, partition: &PartitionRef) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| !slot.revoked && slot.partition == *partition)
    }

    fn slot(&self, id: u64) -> Option<&Slot> {
        self.slots.iter().find(|slot| slot.id == id)
    }

    fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|slot| slot.id == id)
    }

    /// Makes `partition` one of this consumer's, with the positions an earlier run marked
    /// handled after its stored one. A partition already held keeps its records.
    pub(super) fn assign(&mut self, partition: &PartitionRef, handled_before: Vec<Position>) {
        if let Some(index) = self.index_of(partition) {
            self.slots[index].handled_before.extend(handled_before);
            return;
        }
        self.next_id += 1;
        self.slots.push(Slot {
            id: self.next_id,
            partition: partition.clone(),
            next_seq: 0,
            base_seq: 0,
            window: VecDeque::new(),
            handled: None,
            runnable: Runnable::default(),
            units: HashMap::default(),
            started: 0,
            handled_before: handled_before.into_iter().collect(),
            paused: false,
            revoked: false,
            stops: Arc::new(Stops::child_of(&self.stops)),
        });
    }

    /// Takes records read, in order within each partition; `batch_of` names the batch
    /// handler of a record, if any. Records of partitions not held are dropped. Returns
    /// how many were skipped as handled before: done at once, their positions are to be
    /// stored like those of handled records.
    pub(super) fn extend(
        &mut self,
        records: Vec<Record>,
        batch_of: impl Fn(&Record) -> Option<usize>,
    ) -> usize {
        let mut skipped = 0;
        let mut last: Option<usize> = None;
        for record in records {
            let index = match last {
                Some(index) if self.slots[index].partition == record.partition => index,
                _ => match self.index_of(&record.partition) {
                    Some(index) => index,
                    None => {
                        tracing::debug!(partition = %record.partition, "record of a partition not held (given up since it was read); dropped");
                        continue;
                    }
                },
            };
            last = Some(index);
            let slot = &mut self.slots[index];
            let seq = slot.next_seq;
            slot.next_seq += 1;
            if !slot.handled_before.is_empty() && slot.handled_before.remove(&record.position) {
                tracing::debug!(partition = %record.partition, position = %record.position, "handled before; skipped");
                slot.window.push_back(Entry {
                    position: record.position,
                    done: true,
                    queued: None,
                });
                slot.done(seq);
                skipped += 1;
                continue;
            }
            let unit = unit_of(&record, self.ordering, self.keyless);
            let batch = batch_of(&record);
            slot.window.push_back(Entry {
                position: record.position.clone(),
                done: false,
                queued: Some(Queued {
                    record,
                    ticket: Ticket {
                        slot: slot.id,
                        seq,
                        unit,
                    },
                    batch,
                }),
            });
            slot.enqueue(seq, unit, batch);
            self.waiting += 1;
        }
        skipped
    }

    /// The next record that may start now: the oldest runnable one of the next
    /// partition in turn whose oldest runnable record is old enough.
    pub(super) fn pop(&mut self) -> Option<Queued> {
        if self.waiting == 0 {
            return None;
        }
        let now = (!self.lag.is_zero()).then(SystemTime::now);
        let count = self.slots.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let slot = &mut self.slots[index];
            let Some(seq) = slot.runnable.first() else {
                continue;
            };
            let written = slot.queued(seq).and_then(|queued| queued.record.timestamp);
            if let (Some(now), Some(written)) = (now, written)
                && written + self.lag > now
            {
                continue;
            }
            slot.runnable.pop_first();
            let queued = slot.take(seq).expect("a runnable record is in the window");
            slot.started += 1;
            if let (Some(batch), Some(unit)) = (queued.batch, queued.ticket.unit) {
                if let Some(state) = slot.units.get_mut(&unit) {
                    state.joining.retain(|seq| *seq != queued.ticket.seq);
                }
                slot.collect(unit, batch);
            }
            self.turn = index + 1;
            self.waiting -= 1;
            return Some(queued);
        }
        None
    }

    /// When the first record held back by the minimum lag may start.
    pub(super) fn next_ripe_at(&self) -> Option<Instant> {
        if self.lag.is_zero() || self.waiting == 0 {
            return None;
        }
        let earliest = self
            .slots
            .iter()
            .filter_map(|slot| slot.queued(slot.runnable.first()?))
            .filter_map(|queued| queued.record.timestamp)
            .min()?
            + self.lag;
        let wait = earliest
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Some(Instant::now() + wait)
    }

    /// The stops of the partition of `ticket`.
    pub(super) fn stops(&self, ticket: &Ticket) -> Arc<Stops> {
        self.slot(ticket.slot)
            .map_or_else(|| Arc::clone(&self.stops), |slot| Arc::clone(&slot.stops))
    }

    /// A batch holding the records of `tickets` started: their units take no more
    /// records into it, and those of their records that were to join it wait again.
    pub(super) fn batch_started(&mut self, tickets: &[Ticket]) {
        for ticket in tickets {
            if let (Some(unit), Some(slot)) = (ticket.unit, self.slot_mut(ticket.slot)) {
                slot.stop_collecting(unit);
            }
        }
    }

    /// The record of `ticket` is handled (or skipped): the watermark may move.
    pub(super) fn done(&mut self, ticket: &Ticket) {
        if let Some(slot) = self.slot_mut(ticket.slot) {
            slot.done(ticket.seq);
        }
        self.finished(ticket);
    }

    /// The record of `ticket` was started and is given up unhandled (the consumer
    /// stops, or gave its partition up): the watermark stays below it.
    pub(super) fn finished(&mut self, ticket: &Ticket) {
        if let Some(slot) = self.slot_mut(ticket.slot) {
            slot.started -= 1;
            // A record released from waiting behind its unit stays counted as waiting.
            if let Some(unit) = ticket.unit {
                slot.release(unit);
            }
        }
    }

    /// Partitions to pause (holding a full window, not paused yet) and to resume (paused,
    /// and down to half a window); marks them so.
    pub(super) fn pauses(&mut self) -> (Vec<PartitionRef>, Vec<PartitionRef>) {
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for slot in self.slots.iter_mut().filter(|slot| !slot.revoked) {
            if !slot.paused && slot.window.len() >= self.window {
                slot.paused = true;
                pause.push(slot.partition.clone());
            } else if slot.paused && slot.window.len() <= self.window / 2 {
                slot.paused = false;
                resume.push(slot.partition.clone());
            }
        }
        (pause, resume)
    }

    /// Gives up `partitions`: their waiting records are dropped and retries of their
    /// records end. Returns their slots, to drain and then [`remove`](Self::remove).
    pub(super) fn revoke(&mut self, partitions: &[PartitionRef]) -> Vec<u64> {
        let mut revoked = Vec::new();
        for slot in &mut self.slots {
            if slot.revoked || !partitions.contains(&slot.partition) {
                continue;
            }
            let dropped = slot.waiting();
            self.waiting -= dropped;
            slot.runnable.clear();
            for unit in slot.units.values_mut() {
                unit.blocked.clear();
                unit.joining.clear();
            }
            for entry in &mut slot.window {
                entry.queued = None;
            }
            slot.revoked = true;
            slot.stops.retries.cancel();
            revoked.push(slot.id);
        }
        revoked
    }

    /// Records started and not finished in `slots` (every slot when `None`).
    pub(super) fn started(&self, slots: Option<&[u64]>) -> usize {
        self.slots
            .iter()
            .filter(|slot| slots.is_none_or(|ids| ids.contains(&slot.id)))
            .map(|slot| slot.started)
            .sum()
    }

    /// Abandons the handler calls under way in `slots` (every slot when `None`).
    pub(super) fn abandon(&self, slots: Option<&[u64]>) {
        match slots {
            None => self.stops.calls.cancel(),
            Some(ids) => {
                for slot in self.slots.iter().filter(|slot| ids.contains(&slot.id)) {
                    slot.stops.calls.cancel();
                }
            }
        }
    }

    /// Forgets revoked slots, once their positions are stored.
    pub(super) fn remove(&mut self, slots: &[u64]) {
        self.slots.retain(|slot| !slots.contains(&slot.id));
        self.turn = 0;
    }

    /// Each partition's watermark that moved since positions were last stored.
    pub(super) fn handled(&self) -> Vec<(PartitionRef, Position)> {
        self.slots
            .iter()
            .filter_map(|slot| Some((slot.partition.clone(), slot.handled.clone()?)))
            .collect()
    }

    /// Forgets the watermarks, once stored.
    pub(super) fn forget_handled(&mut self) {
        for slot in &mut self.slots {
            slot.handled = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bytes;

    fn record(partition: &str, offset: i64, key: Option<&str>, timestamp: SystemTime) -> Record {
        Record {
            partition: PartitionRef::new("s", partition),
            position: Position::Offset(offset),
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Bytes::new(),
            headers: Vec::new(),
            timestamp: Some(timestamp),
        }
    }

    fn schedule(ordering: Ordering, lag: Duration, window: usize) -> Schedule {
        Schedule::new(
            ordering,
            KeylessOrdering::Partition,
            lag,
            window,
            Arc::new(Stops::new()),
        )
    }

    /// Pops every record that may start now, as `partition@offset`.
    fn pop_all(schedule: &mut Schedule) -> Vec<(String, Ticket)> {
        std::iter::from_fn(|| schedule.pop())
            .map(|queued| {
                let name = format!(
                    "{}@{}",
                    queued.record.partition.partition, queued.record.position
                );
                (name, queued.ticket)
            })
            .collect()
    }

    fn names(popped: &[(String, Ticket)]) -> Vec<&str> {
        popped.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn partitions_take_turns_in_order() {
        let now = SystemTime::now();
        let mut schedule = schedule(Ordering::Unordered, Duration::ZERO, 100);
        schedule.assign(&PartitionRef::new("s", "0"), Vec::new());
        schedule.assign(&PartitionRef::new("s", "1"), Vec::new());
        schedule.extend(
            vec![
                record("0", 0, None, now),
                record("0", 1, None, now),
                record("1", 0, None, now),
                record("1", 1, None, now),
            ],
            |_| None,
        );
        assert_eq!(names(&pop_all(&mut schedule)), ["0@0", "1@0", "0@1", "1@1"]);
        assert_eq!(schedule.waiting(), 0);
    }

    #[test]
    fn a_young_record_holds_back_only_its_partition() {
        let now = SystemTime::now();
        let mut schedule = schedule(Ordering::Partition, Duration::from_secs(60), 100);
        schedule.assign(&PartitionRef::new("s", "young"), Vec::new());
        schedule.assign(&PartitionRef::new("s", "old"), Vec::new());
        schedule.extend(
            vec![
                record("young", 0, None, now),
                record("old", 0, None, now - Duration::from_secs(120)),
            ],
            |_| None,
        );
        assert_eq!(names(&pop_all(&mut schedule)), ["old@0"]);
        let ripe_in = schedule.next_ripe_at().unwrap() - Instant::now();
        assert!(
            ripe_in > Duration::from_secs(50) && ripe_in <= Duration::from_secs(60),
            "{ripe_in:?}"
        );
    }

    #[test]
    fn a_keys_next_record_waits_until_the_one_before_is_done() {
        let now = SystemTime::now();
        let mut schedule = schedule(Ordering::Key, Duration::ZERO, 100);
        schedule.assign(&PartitionRef::new("s", "0"), Vec::new());
        schedule.extend(
            vec![
                record("0", 0, Some("a"), now),
                record("0", 1, Some("a"), now),
                record("0", 2, Some("b"), now),
                record("0", 3, None, now),
                record("0", 4, None, now),
            ],
            |_| None,
        );
        // One of each key, and one keyless (the keyless ones share one unit).
        let first = pop_all(&mut schedule);
        assert_eq!(names(&first), ["0@0", "0@2", "0@3"]);
        schedule.done(&first[0].1);
        schedule.done(&first[2].1);
        assert_eq!(names(&pop_all(&mut schedule)), ["0@1", "0@4"]);
    }

    #[test]
    fn the_watermark_is_the_newest_record_below_which_all_are_done() {
        let now = SystemTime::now();
        let partition = PartitionRef::new("s", "0");
        let mut schedule = schedule(Ordering::Unordered, Duration::ZERO, 100);
        schedule.assign(&partition, Vec::new());
        schedule.extend((0..4).map(|n| record("0", n, None, now)).collect(), |_| {
            None
        });
        let started = pop_all(&mut schedule);
        schedule.done(&started[1].1);
        schedule.done(&started[2].1);
        assert!(schedule.handled().is_empty(), "offset 0 is still running");
        schedule.done(&started[0].1);
        assert_eq!(
            schedule.handled(),
            [(partition.clone(), Position::Offset(2))]
        );
        schedule.forget_handled();
        // Given up unhandled: the watermark stays below it.
        schedule.finished(&started[3].1);
        assert!(schedule.handled().is_empty());
    }

    #[test]
    fn records_marked_handled_by_an_earlier_run_are_skipped_and_count_as_done() {
        let now = SystemTime::now();
        let partition = PartitionRef::new("s", "0");
        let mut schedule = schedule(Ordering::Unordered, Duration::ZERO, 100);
        schedule.assign(&partition, vec![Position::Offset(0), Position::Offset(2)]);
        let skipped = schedule.extend((0..3).map(|n| record("0", n, None, now)).collect(), |_| {
            None
        });
        assert_eq!(skipped, 2, "two are to have their positions stored");
        let started = pop_all(&mut schedule);
        assert_eq!(names(&started), ["0@1"]);
        assert_eq!(
            schedule.handled(),
            [(partition.clone(), Position::Offset(0))]
        );
        schedule.done(&started[0].1);
        assert_eq!(schedule.handled(), [(partition, Position::Offset(2))]);
    }

    #[test]
    fn a_partition_is_paused_at_a_full_window_and_resumed_at_half() {
        let now = SystemTime::now();
        let partition = PartitionRef::new("s", "0");
        let mut schedule = schedule(Ordering::Partition, Duration::ZERO, 4);
        schedule.assign(&partition, Vec::new());
        schedule.extend((0..4).map(|n| record("0", n, None, now)).collect(), |_| {
            None
        });
        assert_eq!(schedule.pauses(), (vec![partition.clone()], Vec::new()));
        assert_eq!(schedule.pauses(), (Vec::new(), Vec::new()), "paused once");
        for _ in 0..2 {
            let (_, ticket) = pop_all(&mut schedule).remove(0);
            schedule.done(&ticket);
        }
        assert_eq!(schedule.pauses(), (Vec::new(), vec![partition]));
    }

    #[test]
    fn a_revoked_partition_drops_its_waiting_records() {
        let now = SystemTime::now();
        let partition = PartitionRef::new("s", "0");
        let mut schedule = schedule(Ordering::Partition, Duration::ZERO, 100);
        schedule.assign(&partition, Vec::new());
        schedule.extend((0..3).map(|n| record("0", n, None, now)).collect(), |_| {
            None
        });
        let (_, running) = pop_all(&mut schedule).remove(0);
        let slots = schedule.revoke(std::slice::from_ref(&partition));
        assert_eq!(schedule.waiting(), 0);
        assert_eq!(
            schedule.started(Some(&slots)),
            1,
            "the one running is drained"
        );
        schedule.done(&running);
        assert_eq!(
            schedule.handled(),
            [(partition.clone(), Position::Offset(0))]
        );
        schedule.remove(&slots);
        schedule.extend(vec![record("0", 3, None, now)], |_| None);
        assert_eq!(
            schedule.waiting(),
            0,
            "records of a partition not held are dropped"
        );
    }

    #[test]
    fn a_keys_records_join_its_open_batch_and_wait_again_once_it_starts() {
        let now = SystemTime::now();
        let mut schedule = schedule(Ordering::Key, Duration::ZERO, 100);
        schedule.assign(&PartitionRef::new("s", "0"), Vec::new());
        schedule.extend(
            (0..2).map(|n| record("0", n, Some("a"), now)).collect(),
            |_| Some(0),
        );
        // The first record opens the batch; the second may join it, but is not taken.
        let first = schedule.pop().unwrap().ticket;
        schedule.extend(vec![record("0", 2, Some("a"), now)], |_| Some(0));
        // The batch starts with the first record only: the others wait for it.
        schedule.batch_started(&[first]);
        assert!(
            pop_all(&mut schedule).is_empty(),
            "the key's batch is running"
        );
        schedule.done(&first);
        assert_eq!(names(&pop_all(&mut schedule)), ["0@1", "0@2"]);
    }
}
