//! The consumer: reads records, dispatches them to handlers and stores positions.
//!
//! Delivery is at-least-once. A partition's stored position is its *watermark*: the
//! newest record below which every record was handled (or skipped, or dead-lettered,
//! under the configured policies), never past a record still in flight or being retried.
//! Positions are stored in batches: every [`commit_every`](ConsumerOptions::commit_every)
//! records, every [`commit_interval_ms`](ConsumerOptions::commit_interval_ms) while
//! records are pending, on revocation, and always when the consumer stops.
//!
//! One handler call runs at a time by default. With
//! [`concurrency`](ConsumerOptions::concurrency) above 1, up to that many run at once, in
//! the consumer's own task, and [`ordering`](ConsumerOptions::ordering) says which
//! records wait for others: those of a partition, of a key, or none. A record being
//! retried holds up only the records that wait for it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio_util::sync::CancellationToken;

use crate::backend::ConsumerBackend;
use crate::dead_letter::DeadLetter;
use crate::error::{ConfigError, Error};
use crate::error_chain;
use crate::health::ConsumerHealth;
use crate::offsets::OffsetStore;
use crate::registry::Registry;

mod batches;
mod handling;
mod options;
mod reader;
mod schedule;
mod state;
mod worker;

pub use options::{
    BadRecordPolicy, ConsumerOptions, HandlerErrorPolicy, KeylessOrdering, Ordering,
};
use worker::Worker;

/// Reads records from a backend and runs the handlers of a [`Registry`], storing
/// positions in an [`OffsetStore`] under a consumer group.
///
/// ```no_run
/// use logpipe::{Consumer, Registry, embedded::EmbeddedLog, offsets::SqliteOffsetStore};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn example(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
/// let log = EmbeddedLog::open("logpipe.db")?;
/// let store = SqliteOffsetStore::open("logpipe.db")?;
/// let consumer = Consumer::new(log.consumer(["people"]), store, registry, "billing");
/// let shutdown = CancellationToken::new();
/// consumer.run(shutdown).await?; // until `shutdown.cancel()`
/// # Ok(())
/// # }
/// ```
pub struct Consumer<B, S> {
    backend: B,
    worker: Worker<S>,
}

impl<B, S> std::fmt::Debug for Consumer<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.worker.group)
            .field("options", &self.worker.options)
            .field("registry", &self.worker.registry)
            .finish_non_exhaustive()
    }
}

impl<B: ConsumerBackend, S: OffsetStore> Consumer<B, S> {
    /// A consumer of `backend` for consumer group `group`, with default options.
    pub fn new(
        backend: B,
        store: S,
        registry: impl Into<Arc<Registry>>,
        group: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            backend,
            worker: Worker {
                store,
                registry: registry.into(),
                group: group.into(),
                options: ConsumerOptions::default(),
                dead_letter: None,
                health: None,
                producer_id: None,
                retrying: AtomicUsize::new(0),
            },
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.worker.options = options;
        self
    }

    /// Sets where dead-lettered records go.
    #[must_use]
    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.worker.dead_letter = Some(dead_letter);
        self
    }

    /// Reports this consumer's state (started, assigned, retrying, failing reads,
    /// stopping, stopped) to `health`.
    #[must_use]
    pub fn with_health(mut self, health: ConsumerHealth) -> Self {
        self.worker.health = Some(health);
        self
    }

    /// Sets the id this service's producers write in envelopes (the top-level
    /// `producer_id`), which [`skip_own_records`](ConsumerOptions::skip_own_records)
    /// skips.
    #[must_use]
    pub fn with_producer_id(mut self, producer_id: impl Into<Arc<str>>) -> Self {
        self.worker.producer_id = Some(producer_id.into());
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.worker.group
    }

    /// Runs until `shutdown` is cancelled or an error stops it; then stores the positions
    /// of every record handled so far.
    ///
    /// On shutdown the handler calls in flight are finished (for at most
    /// [`drain_timeout_ms`](ConsumerOptions::drain_timeout_ms)); records waiting to be
    /// retried, and records read ahead but not handled, are read again by the next run.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when an option is not valid, a policy needs a dead-letter
    /// stream and none is set, or `skip_own_records` is set without a producer id; [`Error::Handler`] when a handler kept failing under the
    /// `stop` policy; [`Error::Skipped`] in strict mode; [`Error::Backend`],
    /// [`Error::Store`] or [`Error::DeadLetter`] when those fail.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the consumer without storing the positions of what it
    /// handled since it last stored them: those records are handled again. Cancel
    /// `shutdown` instead for a clean stop.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Consumer {
            mut backend,
            worker,
        } = self;
        worker.options.validate("consumer.")?;
        let needs_dead_letter = worker.options.on_bad_record == BadRecordPolicy::DeadLetter
            || worker.options.on_handler_error == HandlerErrorPolicy::DeadLetter;
        if needs_dead_letter && worker.dead_letter.is_none() {
            return Err(ConfigError::invalid(
                "consumer.dead_letter_stream",
                "a dead-letter policy needs a dead-letter stream",
            )
            .into());
        }
        worker
            .options
            .check_producer_id("consumer.", worker.producer_id.as_deref())?;
        // Headers are only ever copied to the dead-letter stream.
        backend.want_headers(worker.dead_letter.is_some());
        tracing::info!(group = %worker.group, "consumer started");
        worker.report(ConsumerHealth::started);
        // Not ready from the moment it is asked to stop, while it finishes the records
        // in hand.
        let stopping = async {
            shutdown.cancelled().await;
            worker.report(ConsumerHealth::stopping);
            std::future::pending::<()>().await
        };
        let outcome = tokio::select! {
            outcome = worker.run(backend, &shutdown) => outcome,
            () = stopping => unreachable!("it waits for ever once it reported"),
        };
        tracing::info!(group = %worker.group, ok = outcome.is_ok(), "consumer stopped");
        if let Some(health) = &worker.health {
            health.stopped(outcome.as_ref().err().map(|err| error_chain(err)));
        }
        outcome
    }
}
