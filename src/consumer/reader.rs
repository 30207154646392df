//! A backend read that outlives the loop iterations that wait for it.
//!
//! A consumer waits for the next event beside handler calls and timers. Were the read
//! dropped whenever one of those came first, a slow read (a SQLite query, Kinesis calls)
//! would be started again and again and never finish while handlers keep completing. The
//! [`Reader`] owns the backend inside its read instead, so the read goes on across
//! iterations; the backend is taken back (interrupting the read, which is cancel-safe)
//! only when something must be done with it at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::backend::{BackendError, ConsumerBackend, ConsumerEvent, PartitionRef, Position};

/// How often at most a read is interrupted to tell the backend the positions stored (a
/// backend reports lag from them, which it measures every few seconds).
const TELL_EVERY: Duration = Duration::from_secs(1);

type Read<B> =
    Pin<Box<dyn Future<Output = (B, Option<Result<ConsumerEvent, BackendError>>)> + Send>>;

enum State<B> {
    Idle(B),
    Reading(Read<B>),
    /// Only while changing state.
    Moving,
}

/// A backend and the read under way on it, if any.
pub(super) struct Reader<B> {
    state: State<B>,
    /// Ends the read under way.
    interrupt: Arc<Notify>,
    /// An event read when the read was interrupted, for the next [`next`](Self::next).
    stashed: Option<Result<ConsumerEvent, BackendError>>,
    /// Positions stored since the backend was last told, told when it is idle (or
    /// [`TELL_EVERY`] at the latest).
    stored: Vec<(PartitionRef, Position)>,
    last_told: Instant,
    /// Partitions to pause once the backend is idle.
    to_pause: Vec<PartitionRef>,
}

impl<B: ConsumerBackend> Reader<B> {
    pub(super) fn new(backend: B) -> Self {
        Self {
            state: State::Idle(backend),
            interrupt: Arc::new(Notify::new()),
            stashed: None,
            stored: Vec::new(),
            last_told: Instant::now(),
            to_pause: Vec::new(),
        }
    }

    /// The next event, after waiting `backoff` (after a failed read).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a read dropped before it completes goes on, and the next call gets
    /// its event.
    pub(super) async fn next(
        &mut self,
        backoff: Option<Duration>,
    ) -> Result<ConsumerEvent, BackendError> {
        loop {
            if let Some(event) = self.stashed.take() {
                return event;
            }
            if let State::Idle(_) = self.state {
                self.start(backoff)?;
            }
            let State::Reading(read) = &mut self.state else {
                unreachable!("started above")
            };
            let (backend, event) = read.await;
            self.state = State::Idle(backend);
            if let Some(event) = event {
                return event;
            }
        }
    }

    /// Starts a read with the idle backend, telling it first what it was not told yet.
    fn start(&mut self, backoff: Option<Duration>) -> Result<(), BackendError> {
        let State::Idle(mut backend) = std::mem::replace(&mut self.state, State::Moving) else {
            unreachable!("called when idle")
        };
        let told = self.tell(&mut backend);
        let interrupt = Arc::clone(&self.interrupt);
        self.state = State::Reading(Box::pin(async move {
            if let Some(wait) = backoff {
                tokio::select! {
                    () = interrupt.notified() => return (backend, None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            let event = tokio::select! {
                biased;
                event = backend.next_event() => Some(event),
                () = interrupt.notified() => None,
            };
            (backend, event)
        }));
        told
    }

    /// Tells `backend` the positions stored and the partitions to pause since it was
    /// last told.
    fn tell(&mut self, backend: &mut B) -> Result<(), BackendError> {
        if !self.stored.is_empty() {
            backend.stored(&self.stored);
            self.stored.clear();
            self.last_told = Instant::now();
        }
        if self.to_pause.is_empty() {
            return Ok(());
        }
        let to_pause = std::mem::take(&mut self.to_pause);
        backend.pause(&to_pause)
    }

    /// The backend, idle: a read under way is interrupted (an event it got meanwhile is
    /// kept for [`next`](Self::next)).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend fails to pause partitions it was to pause.
    pub(super) async fn backend(&mut self) -> Result<&mut B, BackendError> {
        if let State::Reading(read) = &mut self.state {
            self.interrupt.notify_one();
            let (backend, event) = read.await;
            if event.is_some() {
                self.stashed = event;
            }
            self.state = State::Idle(backend);
        }
        let State::Idle(mut backend) = std::mem::replace(&mut self.state, State::Moving) else {
            unreachable!("idle now")
        };
        let told = self.tell(&mut backend);
        self.state = State::Idle(backend);
        told?;
        match &mut self.state {
            State::Idle(backend) => Ok(backend),
            _ => unreachable!("idle now"),
        }
    }

    /// Tells the backend these positions were stored: when it is next idle, or at
    /// [`tell_at`](Self::tell_at).
    pub(super) fn stored(&mut self, positions: Vec<(PartitionRef, Position)>) {
        self.stored.extend(positions);
    }

    /// When positions stored and not told yet are to be told, interrupting a read (with
    /// [`backend`](Self::backend)): [`TELL_EVERY`] after the last time.
    pub(super) fn tell_at(&self) -> Option<Instant> {
        (!self.stored.is_empty()).then(|| self.last_told + TELL_EVERY)
    }

    /// Pauses `partitions` when the backend is next idle: records of them read
    /// meanwhile are kept, as after any pause.
    pub(super) fn pause(&mut self, partitions: Vec<PartitionRef>) {
        self.to_pause.extend(partitions);
    }

    /// Resumes `partitions` now, interrupting a read (which may be waiting for them).
    pub(super) async fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        // A pause not applied yet is simply dropped.
        self.to_pause.retain(|p| !partitions.contains(p));
        self.backend().await?.resume(partitions)
    }
}
