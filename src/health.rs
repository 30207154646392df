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

use std::sync::{Arc, Mutex, PoisonError};

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
            Self::Stopped(None) => "stopped".to_owned(),
            Self::Stopped(Some(error)) => format!("stopped on an error: {error}"),
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: String,
    state: ConsumerState,
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
        let entries = self.lock();
        let ready = !entries.is_empty() && entries.iter().all(|entry| entry.state.is_ready());
        let mut text = String::new();
        for entry in entries.iter() {
            text.push_str(&entry.name);
            text.push_str(": ");
            text.push_str(&entry.state.describe());
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
