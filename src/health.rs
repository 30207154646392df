//! Health of running consumers, as the consumers themselves report it.
//!
//! A [`Health`] is shared by every consumer of a process (each gets a
//! [`ConsumerHealth`] from [`Health::register`]) and read by whoever answers readiness
//! probes, such as `run_consumers --metrics-addr`.
//!
//! ```
//! use logpipe::health::Health;
//!
//! let health = Health::new();
//! let people = health.register("people");
//! assert!(!health.report().ready); // not started yet
//! people.started();
//! people.assigned();
//! assert!(health.report().ready);
//! people.stopped(Some("handler failed".to_owned()));
//! assert!(!health.report().ready);
//! ```
//!
//! # When a consumer counts as stalled
//!
//! A running consumer is not ready while it makes no progress:
//! - at once while a handler failed on a record and is being retried;
//! - when reading has kept failing for the consumer's
//!   [`stalled_after_ms`](crate::ConsumerOptions::stalled_after_ms) (default 60 s) with no
//!   read succeeding in between: the broker cannot be reached, a Kinesis shard is
//!   throttled or unreachable call after call. A read succeeds when the backend answers,
//!   with records or without, so an idle stream is not a stalled one. It is ready again
//!   as soon as a read succeeds.
//!
//! A consumer asked to stop (SIGTERM, or another consumer of the process failed) is not
//! ready either while it finishes the record in hand: [`ConsumerState::Stopping`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where one consumer is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Built, not running yet.
    NotStarted,
    /// Running, no partitions or shards assigned yet.
    Started,
    /// Running with its partitions or shards assigned.
    Assigned,
    /// Running, but a handler keeps failing on a record and is being retried: the
    /// consumer makes no progress.
    Retrying,
    /// Asked to stop (SIGTERM, or another consumer of the process failed): finishing the
    /// record in hand and storing its positions.
    Stopping,
    /// Stopped: cleanly (`None`) or on the error given.
    Stopped(Option<String>),
}

impl ConsumerState {
    /// Whether this state counts as ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Assigned)
    }

    fn describe(&self) -> String {
        match self {
            Self::NotStarted => "not started".to_owned(),
            Self::Started => "started, nothing assigned yet".to_owned(),
            Self::Assigned => "running".to_owned(),
            Self::Retrying => "stalled: retrying a failed handler".to_owned(),
            Self::Stopping => "stopping: finishing the record in hand".to_owned(),
            Self::Stopped(None) => "stopped".to_owned(),
            Self::Stopped(Some(error)) => format!("stopped on an error: {error}"),
        }
    }
}

/// Reads failing without a success in between.
#[derive(Debug, Clone)]
struct ReadFailure {
    /// What fails: `reading` (a consumer) or `sending` (the outbox relay).
    activity: &'static str,
    since: Instant,
    /// When the consumer counts as stalled if reads keep failing; never when `None` (a
    /// period too long for the clock).
    stalled_at: Option<Instant>,
    reason: String,
}

#[derive(Debug)]
struct Entry {
    name: String,
    state: ConsumerState,
    reads: Option<ReadFailure>,
}

impl Entry {
    /// Whether it is ready at `now`.
    fn is_ready(&self, now: Instant) -> bool {
        self.state.is_ready() && self.stalled_reads(now).is_none()
    }

    /// The failing reads that make a running consumer stalled at `now`.
    fn stalled_reads(&self, now: Instant) -> Option<&ReadFailure> {
        let running = matches!(self.state, ConsumerState::Started | ConsumerState::Assigned);
        self.reads
            .as_ref()
            .filter(|reads| running && reads.stalled_at.is_some_and(|at| at <= now))
    }

    fn describe(&self, now: Instant) -> String {
        match self.stalled_reads(now) {
            Some(reads) => format!(
                "stalled: {} has failed for {} s: {}",
                reads.activity,
                now.duration_since(reads.since).as_secs(),
                reads.reason
            ),
            None => self.state.describe(),
        }
    }
}

/// The health of every consumer of a process. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    entries: Arc<Mutex<Vec<Entry>>>,
}

/// The readiness of a process: ready when there is at least one consumer and every
/// consumer is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Whether every consumer is ready.
    pub ready: bool,
    /// One line per consumer: its name and its state.
    pub text: String,
}

impl Health {
    /// No consumers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a consumer named `name`, not started; its handle reports its state.
    pub fn register(&self, name: impl Into<String>) -> ConsumerHealth {
        let mut entries = self.lock();
        entries.push(Entry {
            name: name.into(),
            state: ConsumerState::NotStarted,
            reads: None,
        });
        ConsumerHealth {
            health: self.clone(),
            index: entries.len() - 1,
        }
    }

    /// The state of every consumer, in the order they were registered.
    pub fn states(&self) -> Vec<(String, ConsumerState)> {
        self.lock()
            .iter()
            .map(|entry| (entry.name.clone(), entry.state.clone()))
            .collect()
    }

    /// Whether every consumer is ready, with a line for each.
    pub fn report(&self) -> Report {
        self.report_at(Instant::now())
    }

    fn report_at(&self, now: Instant) -> Report {
        let entries = self.lock();
        let ready = !entries.is_empty() && entries.iter().all(|entry| entry.is_ready(now));
        let mut text = String::new();
        for entry in entries.iter() {
            text.push_str(&entry.name);
            text.push_str(": ");
            text.push_str(&entry.describe(now));
            text.push('\n');
        }
        if entries.is_empty() {
            text.push_str("no consumers\n");
        }
        Report { ready, text }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A state is one assignment: a panic elsewhere cannot leave it half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One consumer's handle on a [`Health`]. Dropping it before
/// [`stopped`](Self::stopped) was called marks the consumer stopped on an error (a
/// consumer that panicked, or whose future was dropped, is not ready).
#[derive(Debug)]
pub struct ConsumerHealth {
    health: Health,
    index: usize,
}

impl ConsumerHealth {
    fn set(&self, state: ConsumerState) {
        self.health.lock()[self.index].state = state;
    }

    fn set_reads(&self, reads: Option<ReadFailure>) {
        self.health.lock()[self.index].reads = reads;
    }

    /// The consumer runs.
    pub fn started(&self) {
        self.set(ConsumerState::Started);
    }

    /// Its partitions or shards are assigned, or it made progress again after retries.
    pub fn assigned(&self) {
        self.set(ConsumerState::Assigned);
    }

    /// A handler failed and is being retried.
    pub fn retrying(&self) {
        self.set(ConsumerState::Retrying);
    }

    /// Reads have failed since `since`, none succeeding since then, `reason` saying what
    /// failed last: the consumer counts as stalled once they failed for `stalled_after`.
    pub fn reads_failing(&self, since: Instant, reason: String, stalled_after: Duration) {
        self.set_reads(Some(ReadFailure {
            activity: "reading",
            since,
            stalled_at: since.checked_add(stalled_after),
            reason,
        }));
    }

    /// Sending (by the outbox relay) has failed since `since`, `reason` saying what
    /// failed last: not ready once it failed for `stalled_after`, until
    /// [`reads_succeed`](Self::reads_succeed).
    pub fn sends_failing(&self, since: Instant, reason: String, stalled_after: Duration) {
        self.set_reads(Some(ReadFailure {
            activity: "sending",
            since,
            stalled_at: since.checked_add(stalled_after),
            reason,
        }));
    }

    /// Reads (or sends) succeed (again).
    pub fn reads_succeed(&self) {
        self.set_reads(None);
    }

    /// The consumer was asked to stop and finishes what it is doing.
    pub fn stopping(&self) {
        self.set(ConsumerState::Stopping);
    }

    /// The consumer stopped, on `error` if there is one.
    pub fn stopped(&self, error: Option<String>) {
        self.set(ConsumerState::Stopped(error));
    }
}

impl Drop for ConsumerHealth {
    fn drop(&mut self) {
        let mut entries = self.health.lock();
        let state = &mut entries[self.index].state;
        if !matches!(state, ConsumerState::Stopped(_) | ConsumerState::NotStarted) {
            *state = ConsumerState::Stopped(Some("ended without stopping".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_failing_for_longer_than_allowed_stall_a_running_consumer_until_one_succeeds() {
        let health = Health::new();
        let people = health.register("people");
        people.started();
        people.assigned();
        let minute = Duration::from_secs(60);
        // Failing, but not for long yet.
        people.reads_failing(Instant::now(), "broker down".to_owned(), minute);
        assert_eq!(
            health.report(),
            Report {
                ready: true,
                text: "people: running\n".to_owned()
            }
        );
        let since = Instant::now();
        people.reads_failing(since, "broker down".to_owned(), minute);
        let later = since + Duration::from_secs(75);
        assert_eq!(
            health.report_at(later),
            Report {
                ready: false,
                text: "people: stalled: reading has failed for 75 s: broker down\n".to_owned()
            }
        );
        // Before anything is assigned too (the broker may never have answered).
        people.started();
        assert!(!health.report_at(later).ready);
        people.assigned();
        people.reads_succeed();
        assert!(health.report_at(later).ready);
        // A period past what the clock can hold never stalls it.
        people.reads_failing(since, "broker down".to_owned(), Duration::MAX);
        assert!(health.report_at(later).ready);
        // A stopped consumer says why it stopped.
        people.reads_failing(since, "broker down".to_owned(), minute);
        people.stopped(Some("handler failed".to_owned()));
        assert_eq!(
            health.report().text,
            "people: stopped on an error: handler failed\n"
        );
    }
}
