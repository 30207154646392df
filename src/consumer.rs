//! The consumer: reads records, dispatches them to handlers and stores positions.
//!
//! Delivery is at-least-once. A position is stored only after its record was handled (or
//! skipped, or dead-lettered, under the configured policies), and positions are stored in
//! batches: every [`commit_every`](ConsumerOptions::commit_every) records, every
//! [`commit_interval_ms`](ConsumerOptions::commit_interval_ms) while records are pending,
//! on revocation, and always when the consumer stops.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{
    BackendError, ConsumerBackend, ConsumerEvent, PartitionRef, Position, Record,
};
use crate::dead_letter::DeadLetter;
use crate::error::ConfigError;
use crate::error::Error;
use crate::handler::Context;
use crate::health::ConsumerHealth;
use crate::offsets::OffsetStore;
use crate::registry::{DispatchError, Registry, SkipReason};
use crate::{BoxError, error_chain};

/// Records read ahead and not yet handled, at most. Past this, reading pauses.
const MAX_BUFFERED: usize = 10_000;
/// Records handled in a row before the consumer lets other tasks run.
const RECORDS_PER_TURN: usize = 64;

/// What happens when a handler still fails after its retries. A handler that panics
/// fails the same way as one that returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerErrorPolicy {
    /// Stop this consumer with the error; the record's position is not stored, so the
    /// next run reads it again. The default.
    #[default]
    Stop,
    /// Write the record to the dead-letter stream and go on.
    DeadLetter,
}

/// What happens to a record that cannot be handled (malformed, invalid envelope,
/// unknown type or version, failed validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadRecordPolicy {
    /// Log it, count it and go on. The default.
    #[default]
    Skip,
    /// Write it to the dead-letter stream as well.
    DeadLetter,
}

/// How a consumer commits, retries and treats bad records.
///
/// In a configuration file these are the keys of the `[consumer]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerOptions {
    /// Store positions after this many records. Default 100.
    pub commit_every: u32,
    /// Store positions at least this often while records are pending, in milliseconds.
    /// Default 1000.
    pub commit_interval_ms: u64,
    /// Times a failed handler is retried before the policy applies. Default 3.
    pub max_retries: u32,
    /// Wait before the first retry, in milliseconds; it doubles on each retry. Default 200.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries, in milliseconds. Default 10000.
    pub max_retry_backoff_ms: u64,
    /// What to do when a handler keeps failing. Default `stop`.
    pub on_handler_error: HandlerErrorPolicy,
    /// What to do with records that cannot be handled. Default `skip`.
    pub on_bad_record: BadRecordPolicy,
    /// Turn every record that would be skipped into an error that stops the consumer,
    /// with its position not stored (django-logpipe's `throw_errors`). Ignored message
    /// types are still skipped. Default false.
    pub strict: bool,
    /// Do not handle a record younger than this, in milliseconds (django-logpipe's
    /// `MIN_MESSAGE_LAG_MS`). Only that record's partition waits. Default 0.
    pub min_message_lag_ms: u64,
    /// How long reads may keep failing, none succeeding, before the consumer reports
    /// itself stalled (not ready; see [`health`](crate::health)), in milliseconds.
    /// Default 60000.
    pub stalled_after_ms: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            commit_every: 100,
            commit_interval_ms: 1000,
            max_retries: 3,
            retry_backoff_ms: 200,
            max_retry_backoff_ms: 10_000,
            on_handler_error: HandlerErrorPolicy::Stop,
            on_bad_record: BadRecordPolicy::Skip,
            strict: false,
            min_message_lag_ms: 0,
            stalled_after_ms: 60_000,
        }
    }
}

impl ConsumerOptions {
    /// Checks the values, naming the key (under `prefix`, such as `consumer.`) of the
    /// first bad one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a zero `commit_every` or `commit_interval_ms`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| ConfigError::invalid(format!("{prefix}{key}"), message);
        if self.commit_every == 0 {
            return Err(invalid("commit_every", "must be at least 1"));
        }
        if self.commit_interval_ms == 0 {
            return Err(invalid("commit_interval_ms", "must be at least 1"));
        }
        Ok(())
    }
}

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
    store: S,
    registry: Arc<Registry>,
    group: Arc<str>,
    options: ConsumerOptions,
    dead_letter: Option<DeadLetter>,
    health: Option<ConsumerHealth>,
}

impl<B, S> std::fmt::Debug for Consumer<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group)
            .field("options", &self.options)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Whether the consumer goes on after a record.
enum Flow {
    Continue,
    Stop,
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
            store,
            registry: registry.into(),
            group: group.into(),
            options: ConsumerOptions::default(),
            dead_letter: None,
            health: None,
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets where dead-lettered records go.
    #[must_use]
    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// Reports this consumer's state (started, assigned, retrying, failing reads,
    /// stopping, stopped) to `health`.
    #[must_use]
    pub fn with_health(mut self, health: ConsumerHealth) -> Self {
        self.health = Some(health);
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Runs until `shutdown` is cancelled or an error stops it; then stores the positions
    /// of every record handled so far.
    ///
    /// On shutdown the record being handled is finished; records read ahead but not
    /// handled are read again by the next run.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a policy needs a dead-letter stream and none is set;
    /// [`Error::Handler`] when a handler kept failing under the `stop` policy;
    /// [`Error::Skipped`] in strict mode; [`Error::Backend`], [`Error::Store`] or
    /// [`Error::DeadLetter`] when those fail.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        self.options.validate("consumer.")?;
        let needs_dead_letter = self.options.on_bad_record == BadRecordPolicy::DeadLetter
            || self.options.on_handler_error == HandlerErrorPolicy::DeadLetter;
        if needs_dead_letter && self.dead_letter.is_none() {
            return Err(ConfigError::invalid(
                "consumer.dead_letter_stream",
                "a dead-letter policy needs a dead-letter stream",
            )
            .into());
        }
        let Consumer {
            mut backend,
            store,
            registry,
            group,
            options,
            dead_letter,
            health,
        } = self;
        let worker = Worker {
            store,
            registry,
            group,
            options,
            dead_letter,
            health,
        };
        // Headers are only ever copied to the dead-letter stream.
        backend.want_headers(worker.dead_letter.is_some());
        let mut state = RunState::new(&worker.options);
        tracing::info!(group = %worker.group, "consumer started");
        worker.report(ConsumerHealth::started);
        // Not ready from the moment it is asked to stop, while it finishes the record in
        // hand.
        let stopping = async {
            shutdown.cancelled().await;
            worker.report(ConsumerHealth::stopping);
            std::future::pending().await
        };
        let outcome = tokio::select! {
            outcome = worker.run_loop(&mut backend, &mut state, &shutdown) => outcome,
            () = stopping => unreachable!("it waits for ever once it reported"),
        };
        let stored = worker.commit(&mut backend, &mut state).await;
        tracing::info!(group = %worker.group, ok = outcome.is_ok(), "consumer stopped");
        let outcome = outcome.and(stored);
        if let Some(health) = &worker.health {
            health.stopped(outcome.as_ref().err().map(|err| error_chain(err)));
        }
        outcome
    }
}

/// A consumer's parts other than its backend, so that handling can borrow them while the
/// backend is borrowed mutably.
struct Worker<S> {
    store: S,
    registry: Arc<Registry>,
    group: Arc<str>,
    options: ConsumerOptions,
    dead_letter: Option<DeadLetter>,
    health: Option<ConsumerHealth>,
}

impl<S: OffsetStore> Worker<S> {
    fn report(&self, update: impl FnOnce(&ConsumerHealth)) {
        if let Some(health) = &self.health {
            update(health);
        }
    }

    async fn run_loop<B: ConsumerBackend>(
        &self,
        backend: &mut B,
        state: &mut RunState,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let commit_every = self.options.commit_every as usize;
        loop {
            let mut handled_this_turn = 0;
            while let Some(record) = state.queue.pop_ripe() {
                if let Flow::Stop = self.process(record, state, shutdown).await? {
                    return Ok(());
                }
                if state.pending_records >= commit_every {
                    self.commit(backend, state).await?;
                }
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                handled_this_turn += 1;
                if handled_this_turn % RECORDS_PER_TURN == 0 {
                    // Let the other consumers of this process have a turn.
                    tokio::task::yield_now().await;
                }
            }
            tokio::task::yield_now().await;
            let ripe_at = state.queue.next_ripe_at();
            let commit_at = state.commit_deadline();
            let read_backoff = state.read_backoff;
            let can_read = state.queue.len() < MAX_BUFFERED;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = sleep_until(commit_at), if commit_at.is_some() => self.commit(backend, state).await?,
                () = sleep_until(ripe_at), if ripe_at.is_some() => {}
                event = read_after(backend, read_backoff), if can_read => match event {
                    Ok(event) => {
                        if state.read_backoff.take().is_some() {
                            state.read_errors_since = None;
                            self.report_reads(state, None);
                        }
                        self.on_event(backend, event, state).await?;
                    }
                    Err(err) if err.is_retriable() => {
                        let wait = state.next_read_backoff();
                        let reason = error_chain(&err);
                        tracing::warn!(error = %reason, ?wait, "reading failed; trying again");
                        state.read_errors_since.get_or_insert_with(Instant::now);
                        self.report_reads(state, Some(reason));
                    }
                    Err(err) => return Err(err.into()),
                },
            }
        }
    }

    async fn on_event<B: ConsumerBackend>(
        &self,
        backend: &mut B,
        event: ConsumerEvent,
        state: &mut RunState,
    ) -> Result<(), Error> {
        match event {
            ConsumerEvent::Assigned(partitions) => {
                for partition in partitions {
                    // A store the backend resumes from by itself (Kafka's group commits)
                    // is not asked: the backend starts where the group left off.
                    let position = if self.store.resumed_by_backend() {
                        None
                    } else {
                        self.store.load(&self.group, &partition).await?
                    };
                    tracing::info!(%partition, position = ?position, "partition assigned");
                    backend.seek(&partition, position.as_ref()).await?;
                }
                self.report(ConsumerHealth::assigned);
            }
            ConsumerEvent::Revoked(partitions) => {
                self.commit(backend, state).await?;
                for partition in &partitions {
                    tracing::info!(%partition, "partition revoked");
                }
                state.queue.remove(&partitions);
            }
            ConsumerEvent::Records(records) => state.queue.extend(records),
            ConsumerEvent::ReadsFailing { since, reason } => {
                state.backend_failing_since = Some(since);
                self.report_reads(state, Some(reason));
            }
            ConsumerEvent::ReadsSucceed => {
                state.read_errors_since = None;
                state.backend_failing_since = None;
                self.report_reads(state, None);
            }
        }
        Ok(())
    }

    /// Reports since when reads have been failing (the earlier of the errors
    /// `next_event` returned and what the backend says), or that they succeed.
    fn report_reads(&self, state: &mut RunState, reason: Option<String>) {
        if let Some(reason) = reason {
            state.read_failure = reason;
        }
        let since = state
            .read_errors_since
            .into_iter()
            .chain(state.backend_failing_since)
            .min();
        let stalled_after = Duration::from_millis(self.options.stalled_after_ms);
        self.report(|health| match since {
            Some(since) => health.reads_failing(since, state.read_failure.clone(), stalled_after),
            None => health.reads_succeed(),
        });
    }

    async fn process(
        &self,
        record: Record,
        state: &mut RunState,
        shutdown: &CancellationToken,
    ) -> Result<Flow, Error> {
        let span = tracing::debug_span!(
            "record",
            stream = %record.partition.stream,
            partition = %record.partition.partition,
            position = %record.position,
            r#type = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        self.process_in_span(record, state, shutdown)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        mut record: Record,
        state: &mut RunState,
        shutdown: &CancellationToken,
    ) -> Result<Flow, Error> {
        let mut context = Context::new(
            Arc::clone(&self.group),
            record.partition.clone(),
            record.position.clone(),
        );
        // The key moves to the context (each attempt's handler gets a copy of it) and
        // back to the record for the paths that need the whole record again.
        context.key = record.key.take();
        context.timestamp = record.timestamp;
        let mut backoff = Duration::from_millis(self.options.retry_backoff_ms);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            let outcome = self.registry.dispatch(&record.value, &mut context).await;
            let elapsed = started.elapsed();
            if attempts == 1 && !context.message_type.is_empty() {
                let span = tracing::Span::current();
                span.record("type", context.message_type);
                span.record("version", context.version);
            }
            let failure = match outcome {
                Ok(()) => {
                    let metrics =
                        state.handled_metrics(&record.partition.stream, context.message_type);
                    metrics.seconds.record(elapsed);
                    metrics.total.increment(1);
                    if state.retrying {
                        state.retrying = false;
                        self.report(ConsumerHealth::assigned);
                    }
                    state.mark(&record);
                    return Ok(Flow::Continue);
                }
                Err(DispatchError::Skipped(reason)) => {
                    record.key = context.key.take();
                    return self.skip(record, reason, state).await;
                }
                Err(DispatchError::Handler(error)) => Failure {
                    error,
                    reason: "handler_error",
                    what: "handler failed",
                },
                Err(DispatchError::Panicked(panic)) => {
                    metrics::counter!("logpipe_handler_panics_total", "stream" => Arc::clone(&record.partition.stream))
                        .increment(1);
                    Failure {
                        error: Box::new(panic),
                        reason: "panic",
                        what: "handler panicked",
                    }
                }
            };
            if attempts > self.options.max_retries {
                record.key = context.key.take();
                return self
                    .handler_failed(record, context, attempts, failure, state)
                    .await;
            }
            metrics::counter!("logpipe_handler_retries_total", "stream" => Arc::clone(&record.partition.stream))
                .increment(1);
            tracing::warn!(
                partition = %record.partition,
                position = %record.position,
                attempt = attempts,
                error = %error_chain(&*failure.error),
                ?backoff,
                "{}; retrying",
                failure.what,
            );
            if !state.retrying {
                state.retrying = true;
                self.report(ConsumerHealth::retrying);
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Flow::Stop),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(self.options.max_retry_backoff_ms));
        }
    }

    async fn skip(
        &self,
        record: Record,
        reason: SkipReason,
        state: &mut RunState,
    ) -> Result<Flow, Error> {
        let ignored = matches!(reason, SkipReason::Ignored { .. });
        if self.options.strict && !ignored {
            return Err(Error::Skipped {
                partition: record.partition,
                position: record.position,
                reason,
            });
        }
        let detail = error_chain(&reason);
        match reason {
            SkipReason::Ignored { .. } => {
                tracing::debug!(reason = reason.label(), "{detail}; skipped")
            }
            SkipReason::Validation { .. } => {
                tracing::warn!(reason = reason.label(), "{detail}; skipped")
            }
            _ => tracing::error!(reason = reason.label(), "{detail}; skipped"),
        }
        metrics::counter!(
            "logpipe_records_skipped_total",
            "stream" => Arc::clone(&record.partition.stream),
            "reason" => reason.label(),
        )
        .increment(1);
        if !ignored && self.options.on_bad_record == BadRecordPolicy::DeadLetter {
            self.dead_letter(&record, reason.label(), &detail).await?;
        }
        state.mark(&record);
        Ok(Flow::Continue)
    }

    async fn handler_failed(
        &self,
        record: Record,
        context: Context,
        attempts: u32,
        failure: Failure,
        state: &mut RunState,
    ) -> Result<Flow, Error> {
        metrics::counter!("logpipe_handler_failures_total", "stream" => Arc::clone(&record.partition.stream)).increment(1);
        let detail = error_chain(&*failure.error);
        let policy = self.options.on_handler_error;
        tracing::error!(
            partition = %record.partition,
            position = %record.position,
            attempts,
            error = %detail,
            "{}; {}",
            failure.what,
            match policy {
                HandlerErrorPolicy::Stop => "stopping the consumer",
                HandlerErrorPolicy::DeadLetter => "dead-lettering the record",
            },
        );
        match policy {
            HandlerErrorPolicy::Stop => Err(Error::Handler {
                partition: record.partition,
                position: record.position,
                message_type: context.message_type,
                version: context.version,
                attempts,
                source: failure.error,
            }),
            HandlerErrorPolicy::DeadLetter => {
                self.dead_letter(&record, failure.reason, &detail).await?;
                state.mark(&record);
                if state.retrying {
                    state.retrying = false;
                    self.report(ConsumerHealth::assigned);
                }
                Ok(Flow::Continue)
            }
        }
    }

    async fn dead_letter(&self, record: &Record, reason: &str, detail: &str) -> Result<(), Error> {
        let dead_letter = self
            .dead_letter
            .as_ref()
            .expect("checked when the consumer started");
        dead_letter
            .send(record, reason, detail)
            .await
            .map_err(|source| Error::DeadLetter {
                partition: record.partition.clone(),
                position: record.position.clone(),
                source,
            })?;
        metrics::counter!(
            "logpipe_records_dead_lettered_total",
            "stream" => Arc::clone(&record.partition.stream),
            "reason" => reason.to_owned(),
        )
        .increment(1);
        Ok(())
    }

    async fn commit<B: ConsumerBackend>(
        &self,
        backend: &mut B,
        state: &mut RunState,
    ) -> Result<(), Error> {
        state.last_commit = Instant::now();
        if state.pending_records == 0 {
            return Ok(());
        }
        let positions = state.queue.handled();
        self.store.store(&self.group, &positions).await?;
        backend.stored(&positions);
        metrics::histogram!("logpipe_commit_seconds")
            .record(state.last_commit.elapsed().as_secs_f64());
        tracing::debug!(
            partitions = positions.len(),
            records = state.pending_records,
            "positions stored"
        );
        state.queue.forget_handled();
        state.pending_records = 0;
        Ok(())
    }
}

/// A handler call that failed: its error, the reason dead letters and metrics give, and
/// what the log says.
struct Failure {
    error: BoxError,
    /// `handler_error` or `panic`.
    reason: &'static str,
    what: &'static str,
}

/// Waits `backoff` (after a retriable read error), then reads the next event.
async fn read_after<B: ConsumerBackend>(
    backend: &mut B,
    backoff: Option<Duration>,
) -> Result<ConsumerEvent, BackendError> {
    if let Some(wait) = backoff {
        tokio::time::sleep(wait).await;
    }
    backend.next_event().await
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The metrics of the records of one stream and message type that were handled,
/// registered once rather than for every record.
struct HandledMetrics {
    stream: Arc<str>,
    message_type: &'static str,
    seconds: metrics::Histogram,
    total: metrics::Counter,
}

/// What one run of a consumer keeps track of.
struct RunState {
    queue: ReadyQueue,
    /// One entry for each (stream, message type) handled so far: few.
    handled: Vec<HandledMetrics>,
    /// Records handled (or skipped) since positions were last stored.
    pending_records: usize,
    last_commit: Instant,
    commit_interval: Duration,
    read_backoff: Option<Duration>,
    /// Since when `next_event` has returned retriable errors, no event in between.
    read_errors_since: Option<Instant>,
    /// Since when the backend says its own reads have been failing.
    backend_failing_since: Option<Instant>,
    /// What failed last, of those.
    read_failure: String,
    /// Whether a handler failed on the record in hand and is being retried.
    retrying: bool,
}

impl RunState {
    fn new(options: &ConsumerOptions) -> Self {
        Self {
            queue: ReadyQueue::new(Duration::from_millis(options.min_message_lag_ms)),
            handled: Vec::new(),
            pending_records: 0,
            last_commit: Instant::now(),
            commit_interval: Duration::from_millis(options.commit_interval_ms),
            read_backoff: None,
            read_errors_since: None,
            backend_failing_since: None,
            read_failure: String::new(),
            retrying: false,
        }
    }

    fn mark(&mut self, record: &Record) {
        self.queue.mark_handled(record);
        self.pending_records += 1;
    }

    fn handled_metrics(
        &mut self,
        stream: &Arc<str>,
        message_type: &'static str,
    ) -> &HandledMetrics {
        let found = self
            .handled
            .iter()
            .position(|m| m.stream == *stream && m.message_type == message_type);
        let index = found.unwrap_or_else(|| {
            self.handled.push(HandledMetrics {
                stream: Arc::clone(stream),
                message_type,
                seconds: metrics::histogram!(
                    "logpipe_handler_seconds",
                    "stream" => Arc::clone(stream),
                    "type" => message_type,
                ),
                total: metrics::counter!(
                    "logpipe_records_handled_total",
                    "stream" => Arc::clone(stream),
                    "type" => message_type,
                ),
            });
            self.handled.len() - 1
        });
        &self.handled[index]
    }

    fn commit_deadline(&self) -> Option<Instant> {
        (self.pending_records > 0).then(|| self.last_commit + self.commit_interval)
    }

    fn next_read_backoff(&mut self) -> Duration {
        let wait = self
            .read_backoff
            .map_or(Duration::from_millis(100), |last| {
                (last * 2).min(Duration::from_secs(5))
            });
        self.read_backoff = Some(wait);
        wait
    }
}

/// Records read but not handled yet, per partition, in order, and the position handled
/// last in each partition that is not stored yet. A partition whose oldest record is
/// younger than the minimum lag waits; the others go on. Partitions take turns, one
/// record at a time.
struct ReadyQueue {
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
    fn new(lag: Duration) -> Self {
        Self {
            lag,
            slots: Vec::new(),
            turn: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
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

    fn extend(&mut self, records: Vec<Record>) {
        self.len += records.len();
        for record in records {
            self.slot(&record.partition).waiting.push_back(record);
        }
    }

    /// Drops the partitions' records and slots; their handled positions must be stored
    /// first.
    fn remove(&mut self, revoked: &[PartitionRef]) {
        self.slots.retain(|slot| !revoked.contains(&slot.partition));
        self.len = self.slots.iter().map(|slot| slot.waiting.len()).sum();
    }

    /// Notes that `record` was handled. It is nearly always the last one popped, whose
    /// slot is at hand.
    fn mark_handled(&mut self, record: &Record) {
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
    fn handled(&self) -> Vec<(PartitionRef, Position)> {
        self.slots
            .iter()
            .filter_map(|slot| Some((slot.partition.clone(), slot.handled.clone()?)))
            .collect()
    }

    /// Forgets the handled positions, once stored.
    fn forget_handled(&mut self) {
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
    fn pop_ripe(&mut self) -> Option<Record> {
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
    fn next_ripe_at(&self) -> Option<Instant> {
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
