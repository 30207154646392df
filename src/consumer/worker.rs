//! The worker: reads events, starts handler calls as the ordering allows (up to the
//! concurrency), notes what each came to, and stores positions in batches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use logpipe_core::leases::{LeaseFence, LeaseFences};
use tokio_util::sync::CancellationToken;

use super::ConsumerOptions;
use super::batches::OpenBatches;
use super::handling::{Finished, FirstPoll, Outcome};
use super::reader::Reader;
use super::schedule::{Queued, Schedule, Stops, Ticket};
use super::state::RunState;
use crate::backend::{ConsumerBackend, ConsumerEvent, PartitionRef, Position, Record};
use crate::dead_letter::DeadLetter;
use crate::error::Error;
use crate::error_chain;
use crate::health::ConsumerHealth;
use crate::offsets::{OffsetStore, StoreError};
use crate::registry::Registry;

/// Records read ahead and not started yet, at least, before reading pauses (a partition
/// holding a full window is paused before that).
const MAX_BUFFERED: usize = 10_000;
/// Records started in a row before the consumer lets other tasks run.
const RECORDS_PER_TURN: usize = 64;

/// A consumer's parts other than its backend, which the handler calls borrow.
pub(super) struct Worker<S> {
    pub(super) store: S,
    pub(super) registry: Arc<Registry>,
    pub(super) group: Arc<str>,
    pub(super) options: ConsumerOptions,
    pub(super) dead_letter: Option<DeadLetter>,
    pub(super) health: Option<ConsumerHealth>,
    /// The id this service's producers write in envelopes.
    pub(super) producer_id: Option<Arc<str>>,
    /// Records and batches being retried now.
    pub(super) retrying: AtomicUsize,
}

/// What a handler call comes to: one record's outcome, or a batch's.
enum Done {
    One(Finished),
    Batch(Vec<Finished>),
}

type Call<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

impl<S: OffsetStore> Worker<S> {
    /// The producer whose records are skipped: this service's, if it skips its own.
    pub(super) fn own_producer(&self) -> Option<&str> {
        self.producer_id
            .as_deref()
            .filter(|_| self.options.skip_own_records)
    }

    pub(super) fn report(&self, update: impl FnOnce(&ConsumerHealth)) {
        if let Some(health) = &self.health {
            update(health);
        }
    }

    /// Runs until `shutdown` or an error; then lets the handler calls in flight finish
    /// (for at most `drain_timeout_ms`) and stores the positions of what was handled.
    pub(super) async fn run<B: ConsumerBackend>(
        &self,
        backend: B,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let stops = Arc::new(Stops::new());
        let options = &self.options;
        let mut run = Run {
            worker: self,
            fences: backend.lease_fences(),
            reader: Reader::new(backend),
            state: RunState::new(options),
            schedule: Schedule::new(
                options.effective_ordering(),
                options.keyless_ordering,
                Duration::from_millis(options.min_message_lag_ms),
                options.partition_window(),
                Arc::clone(&stops),
            ),
            calls: FuturesUnordered::new(),
            batches: OpenBatches::new(
                options.batch_max_records as usize,
                Duration::from_millis(options.batch_linger_ms),
            ),
            stops,
        };
        let outcome = run.run_loop(shutdown).await;
        // Retries end now; calls under way may finish.
        run.stops.retries.cancel();
        for queued in run.batches.take_all(None) {
            run.schedule.finished(&queued.ticket);
        }
        let drained = run.drain(None).await;
        let stored = run.commit().await;
        if stored.is_ok() {
            // Positions are stored: the partitions may go to other consumers now.
            match run.reader.backend().await {
                Ok(backend) => backend.close().await,
                Err(err) => tracing::warn!("{}", error_chain(&err)),
            }
        }
        outcome.and(drained).and(stored)
    }
}

/// One run of a consumer: its backend, its records and the handler calls in flight.
struct Run<'a, B, S> {
    worker: &'a Worker<S>,
    /// The leases positions are stored under, for a backend whose partitions are leased.
    fences: Option<LeaseFences>,
    reader: Reader<B>,
    state: RunState,
    schedule: Schedule,
    calls: FuturesUnordered<Call<'a>>,
    batches: OpenBatches,
    /// The parent of every partition's stops.
    stops: Arc<Stops>,
}

impl<'a, B: ConsumerBackend, S: OffsetStore> Run<'a, B, S> {
    async fn run_loop(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let options = &self.worker.options;
        let concurrency = options.concurrency as usize;
        let commit_every = options.commit_every as usize;
        let max_buffered = MAX_BUFFERED.max(2 * options.partition_window());
        loop {
            let mut started = 0;
            while self.calls.len() < concurrency {
                let Some(queued) = self.schedule.pop() else {
                    break;
                };
                if queued.batch.is_some() {
                    if let Some(full) = self.batches.add(queued) {
                        self.start_batch(full);
                    }
                } else {
                    self.start_one(queued).await?;
                }
                if self.state.pending_records >= commit_every {
                    self.commit().await?;
                }
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                started += 1;
                if started % RECORDS_PER_TURN == 0 {
                    // Let the other consumers of this process have a turn.
                    tokio::task::yield_now().await;
                }
            }
            let now = Instant::now();
            while self.calls.len() < concurrency
                && let Some(batch) = self.batches.take_due(now)
            {
                self.start_batch(batch);
            }
            if self.state.commit_deadline().is_some_and(|at| at <= now) {
                self.commit().await?;
            }
            self.change_pauses().await?;
            if started > 0 {
                tokio::task::yield_now().await;
            }
            let wake_at = [
                self.schedule.next_ripe_at(),
                self.batches
                    .next_due()
                    .filter(|_| self.calls.len() < concurrency),
                self.state.commit_deadline(),
                self.reader.tell_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let can_read = self.schedule.waiting() < max_buffered;
            let backoff = self.state.read_backoff;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                event = self.reader.next(backoff), if can_read => self.on_read(event).await?,
                Some(done) = self.calls.next(), if !self.calls.is_empty() => {
                    self.note(done)?;
                    // Note every other call that is done as well, in one go.
                    while let Some(Some(done)) = self.calls.next().now_or_never() {
                        self.note(done)?;
                    }
                }
                () = sleep_until(wake_at), if wake_at.is_some() => {
                    if self.reader.tell_at().is_some_and(|at| at <= Instant::now()) {
                        self.reader.backend().await?;
                    }
                }
            }
        }
    }

    /// Starts one record's handler call. A call that completes at once (a handler that
    /// does not wait) is noted at once, without a future of the record's own and without
    /// joining the calls in flight.
    async fn start_one(&mut self, queued: Queued) -> Result<(), Error> {
        let worker = self.worker;
        let first = std::future::poll_fn(|cx| Poll::Ready(worker.first_poll(&queued.record, cx)));
        match first.await {
            FirstPoll::Handled(outcome) => {
                self.note_outcome(&queued.ticket, &queued.record.partition.stream, outcome)
            }
            FirstPoll::Unfinished { attempt, span } => {
                let stops = self.schedule.stops(&queued.ticket);
                let call = worker.handle_record(queued, stops, attempt, span);
                self.calls.push(Box::pin(call.map(Done::One)));
                Ok(())
            }
        }
    }

    fn start_batch(&mut self, batch: Vec<Queued>) {
        let tickets: Vec<_> = batch.iter().map(|queued| queued.ticket).collect();
        self.schedule.batch_started(&tickets);
        let stops = self.schedule.stops(&tickets[0]);
        let worker = self.worker;
        self.calls.push(Box::pin(async move {
            Done::Batch(worker.handle_batch(batch, stops).await)
        }));
    }

    /// Notes what a call came to: its records are done, or given up; the first error
    /// that stops the consumer is returned.
    fn note(&mut self, done: Done) -> Result<(), Error> {
        match done {
            Done::One(finished) => self.note_one(finished),
            Done::Batch(finished) => finished
                .into_iter()
                .map(|finished| self.note_one(finished))
                .fold(Ok(()), Result::and),
        }
    }

    fn note_one(&mut self, finished: Finished) -> Result<(), Error> {
        self.note_outcome(&finished.ticket, &finished.stream, finished.outcome)
    }

    /// Notes what became of the record of `ticket`, read from `stream`.
    fn note_outcome(
        &mut self,
        ticket: &Ticket,
        stream: &Arc<str>,
        outcome: Outcome,
    ) -> Result<(), Error> {
        match outcome {
            Outcome::Handled {
                elapsed,
                message_type,
            } => {
                let metrics = self.state.handled_metrics(stream, message_type);
                metrics.seconds.record(elapsed);
                metrics.total.increment(1);
                self.schedule.done(ticket);
                self.state.pending_records += 1;
                Ok(())
            }
            Outcome::Skipped => {
                self.schedule.done(ticket);
                self.state.pending_records += 1;
                Ok(())
            }
            Outcome::Stop(error) => {
                self.schedule.finished(ticket);
                Err(error)
            }
            Outcome::Cancelled => {
                self.schedule.finished(ticket);
                Ok(())
            }
        }
    }

    async fn on_read(
        &mut self,
        event: Result<ConsumerEvent, crate::backend::BackendError>,
    ) -> Result<(), Error> {
        match event {
            Ok(event) => {
                if self.state.read_backoff.take().is_some() {
                    self.state.read_errors_since = None;
                    self.report_reads(None);
                }
                self.on_event(event).await
            }
            Err(err) if err.is_retriable() => {
                let wait = self.state.next_read_backoff();
                let reason = error_chain(&err);
                tracing::warn!(error = %reason, ?wait, "reading failed; trying again");
                self.state
                    .read_errors_since
                    .get_or_insert_with(Instant::now);
                self.report_reads(Some(reason));
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn on_event(&mut self, event: ConsumerEvent) -> Result<(), Error> {
        let worker = self.worker;
        match event {
            ConsumerEvent::Assigned(partitions) => {
                for partition in partitions {
                    // A store the backend resumes from by itself (Kafka's group commits)
                    // is not asked: the backend starts where the group left off.
                    let (position, handled_before) = if worker.store.resumed_by_backend() {
                        (None, Vec::new())
                    } else {
                        (
                            worker.store.load(&worker.group, &partition).await?,
                            worker.store.load_handled(&worker.group, &partition).await?,
                        )
                    };
                    tracing::info!(%partition, position = ?position, "partition assigned");
                    self.schedule.assign(&partition, handled_before);
                    self.reader
                        .backend()
                        .await?
                        .seek(&partition, position.as_ref())
                        .await?;
                }
                worker.report(ConsumerHealth::assigned);
            }
            ConsumerEvent::Revoked(partitions) => {
                let slots = self.schedule.revoke(&partitions);
                for queued in self.batches.take_all(Some(&slots)) {
                    self.schedule.finished(&queued.ticket);
                }
                let drained = self.drain(Some(&slots)).await;
                self.commit().await?;
                self.schedule.remove(&slots);
                for partition in &partitions {
                    tracing::info!(%partition, "partition revoked");
                }
                drained?;
            }
            ConsumerEvent::Lost(partitions) => {
                // Another consumer owns them now and reads on from its stored position:
                // nothing more of them is handled here, and no position stored.
                let slots = self.schedule.revoke(&partitions);
                for queued in self.batches.take_all(Some(&slots)) {
                    self.schedule.finished(&queued.ticket);
                }
                self.schedule.abandon(Some(&slots));
                let drained = self.drain(Some(&slots)).await;
                self.schedule.remove(&slots);
                for partition in &partitions {
                    metrics::counter!("logpipe_partitions_lost_total", "stream" => Arc::clone(&partition.stream))
                        .increment(1);
                    tracing::warn!(%partition, "partition lost to another consumer; its positions since the last store are not stored");
                }
                drained?;
            }
            ConsumerEvent::Records(records) => {
                let registry = &worker.registry;
                let batch_of = |record: &Record| registry.batch_of(&record.value);
                // Records skipped as handled before move the watermark too: their
                // positions are stored, so that a partition whose last records were
                // all handled before (a closed Kinesis shard) has its end stored.
                self.state.pending_records += self.schedule.extend(records, batch_of);
            }
            ConsumerEvent::ReadsFailing { since, reason } => {
                self.state.backend_failing_since = Some(since);
                self.report_reads(Some(reason));
            }
            ConsumerEvent::ReadsSucceed => {
                self.state.read_errors_since = None;
                self.state.backend_failing_since = None;
                self.report_reads(None);
            }
        }
        Ok(())
    }

    /// Reports since when reads have been failing (the earlier of the errors
    /// `next_event` returned and what the backend says), or that they succeed.
    fn report_reads(&mut self, reason: Option<String>) {
        let state = &mut self.state;
        if let Some(reason) = reason {
            state.read_failure = reason;
        }
        let since = state
            .read_errors_since
            .into_iter()
            .chain(state.backend_failing_since)
            .min();
        let stalled_after = Duration::from_millis(self.worker.options.stalled_after_ms);
        self.worker.report(|health| match since {
            Some(since) => health.reads_failing(since, state.read_failure.clone(), stalled_after),
            None => health.reads_succeed(),
        });
    }

    /// Pauses the partitions holding a full window and resumes those down to half.
    async fn change_pauses(&mut self) -> Result<(), Error> {
        let (pause, resume) = self.schedule.pauses();
        if !pause.is_empty() {
            tracing::debug!(?pause, "partitions hold a full window; pausing them");
            self.reader.pause(pause);
        }
        if !resume.is_empty() {
            tracing::debug!(?resume, "partitions resumed");
            self.reader.resume(&resume).await?;
        }
        Ok(())
    }

    /// Waits until the records started in `slots` (every slot when `None`) are finished,
    /// noting what every call comes to meanwhile; past `drain_timeout_ms` the calls still
    /// under way there are abandoned. Returns the first error that would stop the
    /// consumer.
    async fn drain(&mut self, slots: Option<&[u64]>) -> Result<(), Error> {
        let timeout = Duration::from_millis(self.worker.options.drain_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut abandoned = false;
        let mut first = Ok(());
        while self.schedule.started(slots) > 0 {
            tokio::select! {
                done = self.calls.next() => match done {
                    Some(done) => first = first.and(self.note(done)),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.into()), if !abandoned => {
                    tracing::warn!(
                        records = self.schedule.started(slots),
                        ?timeout,
                        "handlers still running after the drain timeout; abandoning them, their records are read again"
                    );
                    self.schedule.abandon(slots);
                    abandoned = true;
                }
            }
        }
        first
    }

    /// Stores each partition's watermark that moved.
    async fn commit(&mut self) -> Result<(), Error> {
        self.state.last_commit = Instant::now();
        if self.state.pending_records == 0 {
            return Ok(());
        }
        let positions = self.schedule.handled();
        if !positions.is_empty() {
            let fences: Vec<(PartitionRef, LeaseFence)> = match &self.fences {
                Some(fence_of) => positions
                    .iter()
                    .filter_map(|(partition, _)| Some((partition.clone(), fence_of(partition)?)))
                    .collect(),
                None => Vec::new(),
            };
            let stored =
                store_positions(&self.worker.store, &self.worker.group, positions, &fences).await?;
            metrics::histogram!("logpipe_commit_seconds")
                .record(self.state.last_commit.elapsed().as_secs_f64());
            tracing::debug!(
                partitions = stored.len(),
                records = self.state.pending_records,
                "positions stored"
            );
            self.schedule.forget_handled();
            self.reader.stored(stored);
        }
        self.state.pending_records = 0;
        Ok(())
    }
}

/// Stores `positions` of `group`, each under its lease's fence, if any, and returns
/// those stored. One behind its stored position (another consumer of the group, sharing
/// the store, got further), or whose lease was lost, is left as it is, with a warning,
/// and the others are stored one by one: what this consumer handled there is covered
/// already, or is handled again by the lease's new owner.
async fn store_positions<S: OffsetStore>(
    store: &S,
    group: &str,
    positions: Vec<(PartitionRef, Position)>,
    fences: &[(PartitionRef, LeaseFence)],
) -> Result<Vec<(PartitionRef, Position)>, Error> {
    match store.store_fenced(group, &positions, fences).await {
        Err(StoreError::Fenced { .. } | StoreError::LeaseLost { .. }) => {}
        Ok(()) => return Ok(positions),
        Err(other) => return Err(other.into()),
    }
    let mut stored = Vec::with_capacity(positions.len());
    for position in positions {
        let fence: Vec<_> = fences
            .iter()
            .filter(|(partition, _)| *partition == position.0)
            .cloned()
            .collect();
        match store
            .store_fenced(group, std::slice::from_ref(&position), &fence)
            .await
        {
            Err(refused @ (StoreError::Fenced { .. } | StoreError::LeaseLost { .. })) => {
                metrics::counter!("logpipe_positions_fenced_total", "stream" => Arc::clone(&position.0.stream))
                    .increment(1);
                tracing::warn!(partition = %position.0, "{}; not stored", error_chain(&refused));
            }
            Ok(()) => stored.push(position),
            Err(other) => return Err(other.into()),
        }
    }
    Ok(stored)
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
