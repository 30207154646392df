//! The records read and not handled yet, partition by partition, taking turns.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{PartitionRef, Position, Record};

/// Records read but not handled yet, per partition, in order, and the position handled
/// last in each partition that is not stored yet. A partition whose oldest record is
/// younger than the minimum lag waits; the others go on. Partitions take turns, one
/// record at a time.
pub(super) struct ReadyQueue {
    lag: Duration,
    slots: Vec<Slot>,
    turn: usize,
    len: usize,
}

/// One partition of a [`ReadyQueue`].
struct Slot {
    partition: PartitionRef,
    waiting: VecDeque<Record>,
    /// The newest handled position, not yet stored.
    handled: Option<Position>,
}

impl Slot {
    fn new(partition: PartitionRef) -> Self {
        Self {
            partition,
            waiting: VecDeque::new(),
            handled: None,
        }
    }
}

impl ReadyQueue {
    pub(super) fn new(lag: Duration) -> Self {
        Self {
            lag,
            slots: Vec::new(),
            turn: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn slot(&mut self, partition: &PartitionRef) -> &mut Slot {
        let index = match self.slots.iter().position(|s| s.partition == *partition) {
            Some(index) => index,
            None => {
                self.slots.push(Slot::new(partition.clone()));
                self.slots.len() - 1
            }
        };
        &mut self.slots[index]
    }

    pub(super) fn extend(&mut self, records: Vec<Record>) {
        self.len += records.len();
        for record in records {
            self.slot(&record.partition).waiting.push_back(record);
        }
    }

    /// Drops the partitions' records and slots; their handled positions must be stored
    /// first.
    pub(super) fn remove(&mut self, revoked: &[PartitionRef]) {
        self.slots.retain(|slot| !revoked.contains(&slot.partition));
        self.len = self.slots.iter().map(|slot| slot.waiting.len()).sum();
    }

    /// Notes that `record` was handled. It is nearly always the last one popped, whose
    /// slot is at hand.
    pub(super) fn mark_handled(&mut self, record: &Record) {
        let slot = match self.turn.checked_sub(1) {
            Some(last)
                if self
                    .slots
                    .get(last)
                    .is_some_and(|s| s.partition == record.partition) =>
            {
                &mut self.slots[last]
            }
            _ => self.slot(&record.partition),
        };
        match &mut slot.handled {
            Some(position) => position.clone_from(&record.position),
            None => slot.handled = Some(record.position.clone()),
        }
    }

    /// The handled positions not stored yet.
    pub(super) fn handled(&self) -> Vec<(PartitionRef, Position)> {
        self.slots
            .iter()
            .filter_map(|slot| Some((slot.partition.clone(), slot.handled.clone()?)))
            .collect()
    }

    /// Forgets the handled positions, once stored.
    pub(super) fn forget_handled(&mut self) {
        for slot in &mut self.slots {
            slot.handled = None;
        }
    }

    /// When `record` may be handled, or `None` if it may be now.
    fn ripe_at(&self, record: &Record) -> Option<SystemTime> {
        if self.lag.is_zero() {
            return None;
        }
        record.timestamp.map(|written| written + self.lag)
    }

    /// The next record that may be handled now.
    pub(super) fn pop_ripe(&mut self) -> Option<Record> {
        // Without a minimum lag every record is ripe, whatever the time.
        let now = if self.lag.is_zero() {
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::now()
        };
        self.pop_ready(now)
    }

    fn pop_ready(&mut self, now: SystemTime) -> Option<Record> {
        let count = self.slots.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let ready = self.slots[index]
                .waiting
                .front()
                .is_some_and(|head| self.ripe_at(head).is_none_or(|at| at <= now));
            if ready {
                // `turn - 1` stays the slot of the record handed out.
                self.turn = index + 1;
                self.len -= 1;
                return self.slots[index].waiting.pop_front();
            }
        }
        None
    }

    /// When the first waiting record becomes ripe.
    pub(super) fn next_ripe_at(&self) -> Option<Instant> {
        let earliest = self
            .slots
            .iter()
            .filter_map(|slot| slot.waiting.front())
            .filter_map(|head| self.ripe_at(head))
            .min()?;
        let wait = earliest
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Some(Instant::now() + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: &str, offset: i64, timestamp: SystemTime) -> Record {
        Record {
            partition: PartitionRef::new("s", partition),
            position: Position::Offset(offset),
            key: None,
            value: Vec::new(),
            headers: Vec::new(),
            timestamp: Some(timestamp),
        }
    }

    #[test]
    fn partitions_take_turns_in_order() {
        let now = SystemTime::now();
        let mut queue = ReadyQueue::new(Duration::ZERO);
        queue.extend(vec![
            record("0", 0, now),
            record("0", 1, now),
            record("1", 0, now),
            record("1", 1, now),
        ]);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop_ready(now))
            .map(|r| format!("{}@{}", r.partition.partition, r.position))
            .collect();
        assert_eq!(order, ["0@0", "1@0", "0@1", "1@1"]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_young_record_holds_back_only_its_partition() {
        let now = SystemTime::now();
        let mut queue = ReadyQueue::new(Duration::from_secs(60));
        queue.extend(vec![
            record("young", 0, now),
            record("old", 0, now - Duration::from_secs(120)),
        ]);
        assert_eq!(
            queue.pop_ready(now).unwrap().partition.partition.as_ref(),
            "old"
        );
        assert!(queue.pop_ready(now).is_none());
        let ripe_in = queue.next_ripe_at().unwrap() - Instant::now();
        assert!(
            ripe_in > Duration::from_secs(50) && ripe_in <= Duration::from_secs(60),
            "{ripe_in:?}"
        );
        assert_eq!(
            queue
                .pop_ready(now + Duration::from_secs(60))
                .unwrap()
                .partition
                .partition
                .as_ref(),
            "young"
        );
    }
}
