//! The commit thread: each consumer's commits go out one at a time, each with the newest
//! offsets stored while the one before was on its way, and wait longer after each
//! failure in a row.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::context::GroupContext;

/// How long the commit thread waits after a failed commit before it tries again; it
/// doubles with each failure in a row, up to [`COMMIT_RETRY_MAX`].
const COMMIT_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between commits that keep failing.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A commit failing again with the same error is logged once every this many failures
/// (about every ten minutes at [`COMMIT_RETRY_MAX`]).
const COMMIT_FAILURE_LOG_EVERY: u32 = 64;

/// A member's commits, sent by its commit thread one at a time, each with the newest
/// offsets stored while the one before was on its way (a commit takes a round trip to the
/// group coordinator; sending one per store would queue them up). The answers come back
/// to the commit thread, so commits go on while the polling thread waits for the
/// application to take more records.
///
/// Only offsets of partitions the member owns are stored, sent, and sent again after a
/// failure: once a partition is released (given up or lost), none of its offsets leaves,
/// since the group may have newer ones from its new owner.
#[derive(Default)]
pub(crate) struct Commits {
    state: Mutex<CommitState>,
    /// Signalled when offsets are stored, a commit is answered, or the consumer stops.
    changed: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// The partitions whose offsets may be committed (full topic names).
    owned: HashSet<(String, i32)>,
    /// The next offset to commit of each partition.
    waiting: HashMap<(String, i32), i64>,
    in_flight: bool,
    /// The commits failing in a row.
    failures: Failures,
    /// The consumer has stopped: the commit thread ends.
    closed: bool,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Partitions assigned: their offsets may be committed from now on.
    pub(crate) fn own(&self, partitions: &[(String, i32)]) {
        self.lock().owned.extend(partitions.iter().cloned());
    }

    /// Partitions given up or lost: their waiting offsets are dropped and no more are
    /// taken.
    pub(crate) fn release(&self, partitions: &[(String, i32)]) {
        release(&mut self.lock(), partitions);
    }

    /// Stores the next offsets to commit of some partitions (those not owned are left
    /// out) and wakes the commit thread.
    pub(crate) fn store(&self, offsets: impl IntoIterator<Item = ((String, i32), i64)>) {
        let mut state = self.lock();
        let state = &mut *state;
        state.waiting.extend(
            offsets
                .into_iter()
                .filter(|(partition, _)| state.owned.contains(partition)),
        );
        self.changed.notify_all();
    }

    /// Waits until no commit is on its way, then takes the waiting offsets, if any, for a
    /// commit that the caller sends, and releases `giving_up` (whose offsets are taken
    /// this once more). With `for_offsets`, also waits until offsets wait; then `None`
    /// means the consumer stopped.
    pub(crate) fn take(
        &self,
        for_offsets: bool,
        giving_up: &[(String, i32)],
    ) -> Option<TopicPartitionList> {
        let mut state = self
            .changed
            .wait_while(self.lock(), |state| {
                !state.closed && (state.in_flight || (for_offsets && state.waiting.is_empty()))
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed || state.waiting.is_empty() {
            release(&mut state, giving_up);
            return None;
        }
        let waiting = std::mem::take(&mut state.waiting);
        release(&mut state, giving_up);
        state.in_flight = true;
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in waiting {
            // Only fails for an invalid offset, which `store` never gets.
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        Some(list)
    }

    /// Sends `list` (from [`take`](Self::take)) and waits for the answer. Returns how long
    /// to wait before the next commit: zero after a success.
    pub(crate) fn send(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        list: &TopicPartitionList,
    ) -> Duration {
        let result = consumer.commit(list, CommitMode::Sync);
        self.answered(list, result.map_err(|error| error.to_string()))
    }

    /// Takes the answer to the commit of `list`. Offsets that failed wait again, for
    /// partitions still owned, unless newer ones came meanwhile. Returns how long to wait
    /// before the next commit.
    pub(crate) fn answered(
        &self,
        list: &TopicPartitionList,
        result: Result<(), String>,
    ) -> Duration {
        let mut state = self.lock();
        let state = &mut *state;
        state.in_flight = false;
        let wait = match result {
            Ok(()) => {
                state.failures.succeeded();
                Duration::ZERO
            }
            Err(error) => {
                for element in list.elements() {
                    let partition = (element.topic().to_owned(), element.partition());
                    if let Offset::Offset(offset) = element.offset()
                        && state.owned.contains(&partition)
                    {
                        state.waiting.entry(partition).or_insert(offset);
                    }
                }
                state.failures.failed(error)
            }
        };
        self.changed.notify_all();
        wait
    }

    /// Ends the commit thread.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

fn release(state: &mut CommitState, partitions: &[(String, i32)]) {
    for partition in partitions {
        state.owned.remove(partition);
        state.waiting.remove(partition);
    }
}

/// Commits failing in a row: how long to wait before the next one, and what to log.
#[derive(Default)]
struct Failures {
    /// How many failed in a row.
    count: u32,
    /// The error of the last one, and how many in a row failed with it.
    last: Option<(String, u32)>,
}

impl Failures {
    /// A commit failed with `error`: logs it unless it is the same as the last one's
    /// (then once every [`COMMIT_FAILURE_LOG_EVERY`] failures) and returns how long to
    /// wait before the next commit.
    fn failed(&mut self, error: String) -> Duration {
        self.count = self.count.saturating_add(1);
        let repeats = match &mut self.last {
            Some((last, repeats)) if *last == error => {
                *repeats += 1;
                *repeats
            }
            last => {
                *last = Some((error, 1));
                1
            }
        };
        let wait = COMMIT_RETRY_WAIT
            .saturating_mul(1 << (self.count - 1).min(16))
            .min(COMMIT_RETRY_MAX);
        if let Some((error, _)) = &self.last
            && (repeats == 1 || repeats % COMMIT_FAILURE_LOG_EVERY == 0)
        {
            tracing::warn!(%error, failures = self.count, retry_in = ?wait, "committing offsets failed; trying again");
        }
        wait
    }

    /// A commit succeeded.
    fn succeeded(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "committing offsets works again");
        }
        *self = Self::default();
    }
}

/// Sends the stored offsets, one commit at a time, until the consumer stops, waiting
/// longer after each failure in a row.
pub(crate) fn commit_thread(consumer: &BaseConsumer<GroupContext>) {
    let commits = &consumer.context().commits;
    while let Some(list) = commits.take(true, &[]) {
        let wait = commits.send(consumer, &list);
        if !wait.is_zero() {
            let state = commits.lock();
            let _ = commits
                .changed
                .wait_timeout_while(state, wait, |state| !state.closed);
        }
    }
}

/// Commits the stored offsets now, after the commit on its way, and waits for the answer;
/// releases `giving_up`, whose offsets are sent this once more. A failure is logged:
/// those records are read again after a restart.
pub(crate) fn commit_now(consumer: &BaseConsumer<GroupContext>, giving_up: &[(String, i32)]) {
    let commits = &consumer.context().commits;
    if let Some(list) = commits.take(false, giving_up) {
        commits.send(consumer, &list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(number: i32) -> (String, i32) {
        ("prefix.people".to_owned(), number)
    }

    /// The (partition, offset) pairs of a list, sorted.
    fn offsets(list: &TopicPartitionList) -> Vec<(i32, Offset)> {
        let mut found: Vec<(i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        found.sort_by_key(|(partition, _)| *partition);
        found
    }

    #[test]
    fn offsets_of_partitions_given_up_are_never_sent_again() {
        let commits = Commits::default();
        commits.own(&[partition(0), partition(1)]);
        commits.store([(partition(0), 5), (partition(1), 7), (partition(2), 9)]);
        // Partition 2 is not owned: left out.
        let list = commits.take(true, &[]).expect("offsets wait");
        assert_eq!(
            offsets(&list),
            [(0, Offset::Offset(5)), (1, Offset::Offset(7))]
        );
        // Partition 1 is given up while the commit is on its way, which then fails:
        // only partition 0's offset waits again.
        commits.release(&[partition(1)]);
        commits.answered(&list, Err("coordinator unavailable".to_owned()));
        let list = commits.take(false, &[]).expect("the failed offset waits");
        assert_eq!(offsets(&list), [(0, Offset::Offset(5))]);

        // Revocation: the last commit takes partition 0's offset once more; after it
        // failed, nothing waits and newer offsets of partition 0 are not stored.
        commits.answered(&list, Ok(()));
        commits.store([(partition(0), 6)]);
        let list = commits.take(false, &[partition(0)]).expect("offsets wait");
        assert_eq!(offsets(&list), [(0, Offset::Offset(6))]);
        commits.answered(&list, Err("coordinator unavailable".to_owned()));
        commits.store([(partition(0), 8)]);
        assert!(commits.take(false, &[]).is_none());
    }

    #[test]
    fn failed_commits_wait_longer_each_time_up_to_a_limit() {
        let mut failures = Failures::default();
        let waits: Vec<Duration> = (0..10)
            .map(|_| failures.failed("coordinator unavailable".to_owned()))
            .collect();
        assert_eq!(waits[0], COMMIT_RETRY_WAIT);
        assert_eq!(waits[1], COMMIT_RETRY_WAIT * 2);
        assert_eq!(waits[2], COMMIT_RETRY_WAIT * 4);
        assert_eq!(waits[9], COMMIT_RETRY_MAX);
        assert_eq!(
            failures.last,
            Some(("coordinator unavailable".to_owned(), 10))
        );
        // Another error starts counting its repeats anew; a success starts over.
        failures.failed("not coordinator".to_owned());
        assert_eq!(failures.last, Some(("not coordinator".to_owned(), 1)));
        failures.succeeded();
        assert_eq!(failures.failed("timed out".to_owned()), COMMIT_RETRY_WAIT);
    }
}
