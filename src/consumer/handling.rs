//! Handling one record, or one batch: the handler calls with their retries, then a skip,
//! a dead letter or a stop, as the policies say. Each is a future of its own, so that
//! many run side by side; what it comes to is a [`Finished`] per record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tracing::{Instrument, Span};

use super::schedule::{Queued, Stops, Ticket};
use super::worker::Worker;
use super::{BadRecordPolicy, HandlerErrorPolicy};
use crate::backend::Record;
use crate::error::Error;
use crate::handler::Context;
use crate::health::ConsumerHealth;
use crate::offsets::{OffsetStore, StoreError};
use crate::registry::{Call, DispatchError, SkipReason};
use crate::{BoxError, error_chain};

/// What became of a record.
pub(super) enum Outcome {
    /// Its handler succeeded, taking `elapsed`.
    Handled {
        elapsed: Duration,
        message_type: &'static str,
    },
    /// Skipped or dead-lettered, as the policies say.
    Skipped,
    /// The consumer stops with this error; the record is not handled.
    Stop(Error),
    /// Given up unhandled: the consumer stops, or gave its partition up.
    Cancelled,
}

/// A record's outcome, with what the consumer needs to note it.
pub(super) struct Finished {
    pub(super) ticket: Ticket,
    pub(super) stream: Arc<str>,
    pub(super) outcome: Outcome,
}

/// A handler call that failed: its error, the reason dead letters and metrics give, and
/// what the log says.
struct Failure {
    error: BoxError,
    /// `handler_error` or `panic`.
    reason: &'static str,
    what: &'static str,
}

impl Failure {
    /// The failure of a dispatch that did not skip, counting a panic.
    fn of(error: DispatchError, stream: &Arc<str>) -> Result<Self, SkipReason> {
        match error {
            DispatchError::Skipped(reason) => Err(reason),
            DispatchError::Handler(error) => Ok(Failure {
                error,
                reason: "handler_error",
                what: "handler failed",
            }),
            DispatchError::Panicked(panic) => {
                metrics::counter!("logpipe_handler_panics_total", "stream" => Arc::clone(stream))
                    .increment(1);
                Ok(Failure {
                    error: Box::new(panic),
                    reason: "panic",
                    what: "handler panicked",
                })
            }
        }
    }
}

/// Whether a handler failed because its record is handled already: an offset store's
/// transaction refused to mark it ([`StoreError::Fenced`]), since another consumer (the
/// partition's new owner) handled it or stored a position past it. Retrying cannot
/// succeed, and the record's effects exist: it counts as handled.
fn handled_elsewhere(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if matches!(error.downcast_ref(), Some(StoreError::Fenced { .. })) {
            return true;
        }
        next = error.source();
    }
    false
}

/// Counts a record (or batch) being retried while it lives; the consumer reports itself
/// retrying while any is.
struct Retrying<'a, S> {
    worker: &'a Worker<S>,
    stops: &'a Stops,
}

impl<'a, S: OffsetStore> Retrying<'a, S> {
    fn start(worker: &'a Worker<S>, stops: &'a Stops) -> Self {
        if worker.retrying.fetch_add(1, Ordering::SeqCst) == 0 {
            worker.report(ConsumerHealth::retrying);
        }
        Self { worker, stops }
    }
}

impl<S> Drop for Retrying<'_, S> {
    fn drop(&mut self) {
        // Progress again, unless the consumer is stopping (then it says so itself).
        let last = self.worker.retrying.fetch_sub(1, Ordering::SeqCst) == 1;
        if last
            && !self.stops.retries.is_cancelled()
            && let Some(health) = &self.worker.health
        {
            health.assigned();
        }
    }
}

/// One attempt at a record's handler: its call, from when it started.
pub(super) struct Attempt<'a> {
    started: Instant,
    /// The envelope's (type, version), once its handler was found.
    identity: (&'static str, u64),
    call: AttemptCall<'a>,
}

enum AttemptCall<'a> {
    /// The handler's call, under way.
    Running(Call<'a>),
    /// What it came to (or why it did not start), not taken yet.
    Finished(Option<Result<(), DispatchError>>),
}

impl Future for Attempt<'_> {
    type Output = Result<(), DispatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.call {
            AttemptCall::Running(call) => Pin::new(call).poll(cx),
            AttemptCall::Finished(outcome) => Poll::Ready(
                outcome
                    .take()
                    .expect("an attempt is not polled after it finished"),
            ),
        }
    }
}

/// A record's first attempt, polled once.
pub(super) enum FirstPoll<'a> {
    /// Its handler succeeded at once, as handlers that do not wait do.
    Handled(Outcome),
    /// Its handler is under way, or failed, or did not start: the record's own future
    /// ([`Worker::handle_record`]) goes on from here.
    Unfinished { attempt: Attempt<'a>, span: Span },
}

impl<S: OffsetStore> Worker<S> {
    /// Starts the first attempt at `record` and polls it once, in the record's span.
    ///
    /// Most handlers finish there; only a record whose handler waits, fails or does not
    /// start needs a future of its own (with its retries and policies), which costs an
    /// allocation and the moves of a large future.
    pub(super) fn first_poll(&self, record: &Record, cx: &mut TaskContext<'_>) -> FirstPoll<'_> {
        let span = tracing::debug_span!(
            "record",
            stream = %record.partition.stream,
            partition = %record.partition.partition,
            position = %record.position,
            r#type = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        let (mut attempt, polled) = span.in_scope(|| {
            let mut attempt = self.attempt(record);
            if let AttemptCall::Running(call) = &attempt.call {
                span.record("type", call.message_type);
                span.record("version", call.version);
            }
            let polled = Pin::new(&mut attempt).poll(cx);
            (attempt, polled)
        });
        match polled {
            Poll::Ready(Ok(())) => FirstPoll::Handled(Outcome::Handled {
                elapsed: attempt.started.elapsed(),
                message_type: attempt.identity.0,
            }),
            Poll::Ready(failed) => {
                attempt.call = AttemptCall::Finished(Some(failed));
                FirstPoll::Unfinished { attempt, span }
            }
            Poll::Pending => FirstPoll::Unfinished { attempt, span },
        }
    }

    /// Handles one record from its first attempt on ([`first_poll`](Self::first_poll)):
    /// that attempt to its end, then retries, then its policy.
    pub(super) fn handle_record<'a>(
        &'a self,
        queued: Queued,
        stops: Arc<Stops>,
        attempt: Attempt<'a>,
        span: Span,
    ) -> impl Future<Output = Finished> + Send + 'a {
        let Queued { record, ticket, .. } = queued;
        let stream = Arc::clone(&record.partition.stream);
        // Built of combinators, not an `async` block, so that the record is kept once in
        // the future that each record's call moves.
        self.handle_in_span(record, stops, attempt)
            .instrument(span)
            .map(move |outcome| Finished {
                ticket,
                stream,
                outcome,
            })
    }

    /// The context of `record` for its handler, which each attempt's call takes.
    fn context_of(&self, record: &Record) -> Context {
        let mut context = Context::new(
            Arc::clone(&self.group),
            record.partition.clone(),
            record.position.clone(),
        );
        context.key.clone_from(&record.key);
        context.timestamp = record.timestamp;
        context
    }

    /// Starts an attempt at `record`'s handler.
    fn attempt(&self, record: &Record) -> Attempt<'_> {
        let started = Instant::now();
        match self
            .registry
            .start(&record.value, self.context_of(record), self.own_producer())
        {
            Ok(call) => Attempt {
                started,
                identity: (call.message_type, call.version),
                call: AttemptCall::Running(call),
            },
            Err(error) => Attempt {
                started,
                identity: ("", 0),
                call: AttemptCall::Finished(Some(Err(error))),
            },
        }
    }

    async fn handle_in_span(
        &self,
        record: Record,
        stops: Arc<Stops>,
        mut attempt: Attempt<'_>,
    ) -> Outcome {
        let stops = &*stops;
        let mut backoff = Duration::from_millis(self.options.retry_backoff_ms);
        let mut attempts = 1;
        let mut retrying = None;
        loop {
            let outcome = tokio::select! {
                biased;
                outcome = &mut attempt => outcome,
                () = stops.calls.cancelled() => return Outcome::Cancelled,
            };
            let elapsed = attempt.started.elapsed();
            let identity = attempt.identity;
            let failure =
                match outcome.map_err(|error| Failure::of(error, &record.partition.stream)) {
                    Ok(()) => {
                        return Outcome::Handled {
                            elapsed,
                            message_type: identity.0,
                        };
                    }
                    Err(Err(reason)) => return Box::pin(self.skip(&record, reason)).await,
                    Err(Ok(failure)) if handled_elsewhere(&*failure.error) => {
                        return self.handled_elsewhere(&record, &failure, elapsed, identity.0);
                    }
                    Err(Ok(failure)) => failure,
                };
            if attempts > self.options.max_retries {
                return Box::pin(self.handler_failed(record, identity, attempts, failure)).await;
            }
            self.log_retry(&record, attempts, &failure, backoff);
            retrying.get_or_insert_with(|| Retrying::start(self, stops));
            if !Box::pin(self.wait_to_retry(stops, backoff)).await {
                return Outcome::Cancelled;
            }
            backoff = (backoff * 2).min(Duration::from_millis(self.options.max_retry_backoff_ms));
            attempts += 1;
            attempt = self.attempt(&record);
        }
    }

    /// A record whose handler found it handled already: logged, counted
    /// (`logpipe_records_fenced_total`), and handled as far as positions go.
    fn handled_elsewhere(
        &self,
        record: &Record,
        failure: &Failure,
        elapsed: Duration,
        message_type: &'static str,
    ) -> Outcome {
        metrics::counter!("logpipe_records_fenced_total", "stream" => Arc::clone(&record.partition.stream))
            .increment(1);
        tracing::warn!(
            partition = %record.partition,
            position = %record.position,
            error = %error_chain(&*failure.error),
            "the record is handled already, by this partition's new owner; not handled again",
        );
        Outcome::Handled {
            elapsed,
            message_type,
        }
    }

    fn log_retry(&self, record: &Record, attempt: u32, failure: &Failure, backoff: Duration) {
        metrics::counter!("logpipe_handler_retries_total", "stream" => Arc::clone(&record.partition.stream))
            .increment(1);
        tracing::warn!(
            partition = %record.partition,
            position = %record.position,
            attempt,
            error = %error_chain(&*failure.error),
            ?backoff,
            "{}; retrying",
            failure.what,
        );
    }

    /// Waits `backoff` before a retry; false when the retry is called off.
    async fn wait_to_retry(&self, stops: &Stops, backoff: Duration) -> bool {
        tokio::select! {
            () = stops.retries.cancelled() => false,
            () = tokio::time::sleep(backoff) => true,
        }
    }

    /// Handles the records of one batch handler, read from one partition, in one call
    /// per attempt; then the policies, record by record.
    pub(super) async fn handle_batch(
        &self,
        batch: Vec<Queued>,
        stops: Arc<Stops>,
    ) -> Vec<Finished> {
        let span = tracing::debug_span!("batch", records = batch.len());
        self.handle_batch_in_span(batch, &stops)
            .instrument(span)
            .await
    }

    async fn handle_batch_in_span(&self, batch: Vec<Queued>, stops: &Stops) -> Vec<Finished> {
        let mut records: Vec<(Record, Ticket, Context)> = batch
            .into_iter()
            .map(|Queued { record, ticket, .. }| {
                let context = self.context_of(&record);
                (record, ticket, context)
            })
            .collect();
        let mut backoff = Duration::from_millis(self.options.retry_backoff_ms);
        let mut attempts = 0;
        let mut retrying = None;
        let outcomes = loop {
            attempts += 1;
            let started = Instant::now();
            let mut calls: Vec<(&[u8], &mut Context)> = records
                .iter_mut()
                .map(|(record, _, context)| (&record.value[..], context))
                .collect();
            let outcomes = tokio::select! {
                biased;
                outcomes = self.registry.dispatch_batch(&mut calls, self.own_producer()) => outcomes,
                () = stops.calls.cancelled() => return cancelled(&records),
            };
            let elapsed = started.elapsed();
            let failed = outcomes.iter().any(|outcome| match outcome {
                Err(DispatchError::Handler(error)) => !handled_elsewhere(&**error),
                Err(DispatchError::Panicked(_)) => true,
                _ => false,
            });
            if !failed || attempts > self.options.max_retries {
                break outcomes
                    .into_iter()
                    .map(|outcome| (outcome, elapsed))
                    .collect::<Vec<_>>();
            }
            let first_failure = outcomes
                .into_iter()
                .zip(&records)
                .find_map(|(outcome, (record, ..))| {
                    let failure = Failure::of(outcome.err()?, &record.partition.stream).ok()?;
                    Some((record, failure))
                })
                .expect("a record failed");
            self.log_retry(first_failure.0, attempts, &first_failure.1, backoff);
            retrying.get_or_insert_with(|| Retrying::start(self, stops));
            if !Box::pin(self.wait_to_retry(stops, backoff)).await {
                return cancelled(&records);
            }
            backoff = (backoff * 2).min(Duration::from_millis(self.options.max_retry_backoff_ms));
        };
        let mut finished = Vec::with_capacity(records.len());
        for ((record, ticket, context), (outcome, elapsed)) in records.into_iter().zip(outcomes) {
            let stream = Arc::clone(&record.partition.stream);
            let outcome = match outcome.map_err(|error| Failure::of(error, &stream)) {
                Ok(()) => Outcome::Handled {
                    elapsed,
                    message_type: context.message_type,
                },
                Err(Err(reason)) => self.skip(&record, reason).await,
                Err(Ok(failure)) if handled_elsewhere(&*failure.error) => {
                    self.handled_elsewhere(&record, &failure, elapsed, context.message_type)
                }
                Err(Ok(failure)) => {
                    let identity = (context.message_type, context.version);
                    self.handler_failed(record, identity, attempts, failure)
                        .await
                }
            };
            finished.push(Finished {
                ticket,
                stream,
                outcome,
            });
        }
        finished
    }

    async fn skip(&self, record: &Record, reason: SkipReason) -> Outcome {
        let deliberate = reason.is_deliberate();
        if self.options.strict && !deliberate {
            return Outcome::Stop(Error::Skipped {
                partition: record.partition.clone(),
                position: record.position.clone(),
                reason,
            });
        }
        let detail = error_chain(&reason);
        match reason {
            SkipReason::Ignored { .. } | SkipReason::Own { .. } => {
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
        if !deliberate
            && self.options.on_bad_record == BadRecordPolicy::DeadLetter
            && let Err(error) = self.dead_letter(record, reason.label(), &detail).await
        {
            return Outcome::Stop(error);
        }
        Outcome::Skipped
    }

    async fn handler_failed(
        &self,
        record: Record,
        (message_type, version): (&'static str, u64),
        attempts: u32,
        failure: Failure,
    ) -> Outcome {
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
            HandlerErrorPolicy::Stop => Outcome::Stop(Error::Handler {
                partition: record.partition,
                position: record.position,
                message_type,
                version,
                attempts,
                source: failure.error,
            }),
            HandlerErrorPolicy::DeadLetter => {
                match self.dead_letter(&record, failure.reason, &detail).await {
                    Ok(()) => Outcome::Skipped,
                    Err(error) => Outcome::Stop(error),
                }
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
}

/// Every record of a batch, given up.
fn cancelled(records: &[(Record, Ticket, Context)]) -> Vec<Finished> {
    records
        .iter()
        .map(|(record, ticket, _)| Finished {
            ticket: *ticket,
            stream: Arc::clone(&record.partition.stream),
            outcome: Outcome::Cancelled,
        })
        .collect()
}
