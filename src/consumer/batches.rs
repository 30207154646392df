//! Batches being filled: records of one batch handler from one partition, until the
//! batch is full or has waited long enough.

use std::time::{Duration, Instant};

use super::schedule::Queued;

/// A batch being filled.
struct Open {
    /// Its partition's slot and its batch handler.
    key: (u64, usize),
    records: Vec<Queued>,
    opened: Instant,
}

/// The batches being filled.
pub(super) struct OpenBatches {
    open: Vec<Open>,
    max_records: usize,
    linger: Duration,
}

impl OpenBatches {
    pub(super) fn new(max_records: usize, linger: Duration) -> Self {
        Self {
            open: Vec::new(),
            max_records,
            linger,
        }
    }

    /// Adds `queued` (a record of a batch handler) to its batch; returns the batch when
    /// that makes it full.
    pub(super) fn add(&mut self, queued: Queued) -> Option<Vec<Queued>> {
        let key = (
            queued.ticket.slot(),
            queued.batch.expect("a batch handler's record"),
        );
        let index = match self.open.iter().position(|open| open.key == key) {
            Some(index) => index,
            None => {
                self.open.push(Open {
                    key,
                    records: Vec::with_capacity(self.max_records.min(64)),
                    opened: Instant::now(),
                });
                self.open.len() - 1
            }
        };
        self.open[index].records.push(queued);
        (self.open[index].records.len() >= self.max_records)
            .then(|| self.open.swap_remove(index).records)
    }

    /// The batch that has waited longest, if it has waited long enough.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Vec<Queued>> {
        let (index, open) = self
            .open
            .iter()
            .enumerate()
            .min_by_key(|(_, open)| open.opened)?;
        (open.opened + self.linger <= now).then(|| self.open.swap_remove(index).records)
    }

    /// When the batch that has waited longest will have waited long enough.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.open.iter().map(|open| open.opened + self.linger).min()
    }

    /// Takes out the records of every batch of `slots` (every batch when `None`), which
    /// will not be handled.
    pub(super) fn take_all(&mut self, slots: Option<&[u64]>) -> Vec<Queued> {
        let mut taken = Vec::new();
        self.open.retain_mut(|open| {
            let take = slots.is_none_or(|ids| ids.contains(&open.key.0));
            if take {
                taken.append(&mut open.records);
            }
            !take
        });
        taken
    }
}
