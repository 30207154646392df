//! The worker: reads events, hands records to their handlers one at a time, retries,
//! skips and dead-letters, and stores positions in batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::state::RunState;
use super::{BadRecordPolicy, ConsumerOptions, HandlerErrorPolicy};
use crate::backend::{BackendError, ConsumerBackend, ConsumerEvent, Record};
use crate::dead_letter::DeadLetter;
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

/// Whether the consumer goes on after a record.
enum Flow {
    Continue,
    Stop,
}

/// A consumer's parts other than its backend, so that handling can borrow them while the
/// backend is borrowed mutably.
pub(super) struct Worker<S> {
    pub(super) store: S,
    pub(super) registry: Arc<Registry>,
    pub(super) group: Arc<str>,
    pub(super) options: ConsumerOptions,
    pub(super) dead_letter: Option<DeadLetter>,
    pub(super) health: Option<ConsumerHealth>,
}

impl<S: OffsetStore> Worker<S> {
    pub(super) fn report(&self, update: impl FnOnce(&ConsumerHealth)) {
        if let Some(health) = &self.health {
            update(health);
        }
    }

    pub(super) async fn run_loop<B: ConsumerBackend>(
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

    pub(super) async fn commit<B: ConsumerBackend>(
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
