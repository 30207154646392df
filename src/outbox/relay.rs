//! The relay: sends the committed rows of an outbox through a producer backend, in the
//! order they were written, and removes them once written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logpipe_core::leases::LeaseOptions;
use logpipe_core::outbox::{OUTBOX_ID_HEADER, OutboxRow, OutboxStore};
use logpipe_core::{RecordHeader, error_chain, send_all};
use tokio_util::sync::CancellationToken;

use crate::backend::ProducerBackend;
use crate::health::ConsumerHealth;

/// How a [`Relay`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayOptions {
    /// Rows sent at most in one batch. Default 500.
    pub batch_size: usize,
    /// How often an empty outbox is looked at again. Default 500 ms. A PostgreSQL
    /// outbox wakes the relay as soon as rows commit; this is its fallback.
    pub poll_interval: Duration,
    /// How long the relay lease lasts unless renewed; a relay that stops without
    /// releasing it (killed) is replaced by another once it expired. Default 10 s.
    pub lease_duration: Duration,
    /// The longest wait between attempts after a failure (the wait doubles from
    /// `poll_interval`). Default 30 s.
    pub max_backoff: Duration,
    /// This relay's name in the lease. Default: this process's name (host and process
    /// id, as consumers' leases name it) and the relay's number in the process, such as
    /// `web-1:4242#relay1`.
    pub owner: String,
}

impl Default for RelayOptions {
    fn default() -> Self {
        // Relays of one process need names of their own: a lease's holder renews it.
        static RELAYS: AtomicUsize = AtomicUsize::new(0);
        let number = RELAYS.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            lease_duration: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            owner: format!("{}#relay{number}", LeaseOptions::default_owner()),
        }
    }
}

/// Sends the committed rows of an outbox `O` through the producer backend `P`.
///
/// One relay of an outbox sends at a time (it holds the outbox's relay lease); others
/// wait as standbys and take over once it stops or its lease expires. Records of one key
/// leave in the order their rows were written. A row is removed once its record is
/// written; a relay killed in between sends it again (at least once), with the same
/// [`OUTBOX_ID_HEADER`].
#[derive(Debug)]
pub struct Relay<O, P> {
    outbox: O,
    producer: P,
    options: RelayOptions,
    health: Option<ConsumerHealth>,
}

impl<O: OutboxStore, P: ProducerBackend> Relay<O, P> {
    /// A relay of `outbox` through `producer`, with default options.
    pub fn new(outbox: O, producer: P) -> Self {
        Self {
            outbox,
            producer,
            options: RelayOptions::default(),
            health: None,
        }
    }

    /// Reports to `health`: ready while it sends (or stands by, or has nothing to send),
    /// not ready once sending (or the outbox's database) has failed for
    /// `lease_duration`, until a batch goes through again.
    #[must_use]
    pub fn with_health(mut self, health: ConsumerHealth) -> Self {
        self.health = Some(health);
        self
    }

    fn report(&self, state: fn(&ConsumerHealth)) {
        if let Some(health) = &self.health {
            state(health);
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: RelayOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs until `shutdown` is cancelled (finishing the batch in hand, for at most
    /// `lease_duration`), then gives its lease up. Failures of the
    /// outbox's database or of the backend are logged, counted
    /// (`logpipe_outbox_send_failures_total`) and tried again after a backoff; rows not
    /// written stay in the outbox.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the relay without releasing its lease: another relay
    /// takes over once it expires, and the rows of a batch in flight may be sent again.
    pub async fn run(self, shutdown: CancellationToken) {
        let options = &self.options;
        let mut backoff: Option<Duration> = None;
        let mut last_status: Option<Instant> = None;
        tracing::info!(owner = %options.owner, "outbox relay started");
        self.report(ConsumerHealth::started);
        let mut failing_since: Option<Instant> = None;
        let mut abandoned = false;
        while !shutdown.is_cancelled() {
            let step = {
                let step = self.step(&mut last_status, &mut failing_since);
                tokio::pin!(step);
                tokio::select! {
                    step = &mut step => step,
                    () = shutdown.cancelled() => {
                        // The batch in hand is finished, for at most a lease's time; past
                        // it the relay stops without releasing its lease, so that no other
                        // relay sends those rows while this one's records may still land.
                        match tokio::time::timeout(options.lease_duration, &mut step).await {
                            Ok(step) => step,
                            Err(_) => {
                                tracing::warn!("the outbox relay stopped in the middle of a batch; its lease expires on its own");
                                abandoned = true;
                                break;
                            }
                        }
                    }
                }
            };
            if step.is_ok() {
                failing_since = None;
                self.report(ConsumerHealth::reads_succeed);
                self.report(ConsumerHealth::assigned);
            }
            let wait = match step {
                Ok(Step::Sent) => {
                    backoff = None;
                    continue;
                }
                Ok(Step::Idle) => {
                    backoff = None;
                    // Until rows are written, or the next poll.
                    tokio::select! {
                        () = self.outbox.wait_for_rows(options.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                    continue;
                }
                Ok(Step::Standby) => options.lease_duration / 2,
                Err(failure) => {
                    if let Some(health) = &self.health {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        health.sends_failing(since, failure.clone(), options.lease_duration);
                    }
                    metrics::counter!("logpipe_outbox_send_failures_total").increment(1);
                    let next = next_backoff(backoff, options);
                    // A number in JSON logs (tracing writes a u128 as text).
                    let retry_in_ms = u64::try_from(next.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(error = %failure, retry_in_ms, "outbox relay failed");
                    backoff = Some(next);
                    next
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => {}
            }
        }
        if !abandoned {
            match tokio::time::timeout(options.lease_duration, self.outbox.release(&options.owner))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %error_chain(&err), "the outbox relay lease could not be released")
                }
                Err(_) => tracing::warn!(
                    "releasing the outbox relay lease timed out; it expires on its own"
                ),
            }
        }
        tracing::info!(owner = %options.owner, "outbox relay stopped");
        if let Some(health) = &self.health {
            health.stopped(None);
        }
    }

    /// Claims the lease and sends one batch. A batch not written within a lease's time
    /// counts as failing from when it was handed over (or from an earlier failure,
    /// `failing_since`): a backend that does not answer holds sends without failing
    /// them (Kafka's for `message.timeout.ms`).
    async fn step(
        &self,
        last_status: &mut Option<Instant>,
        failing_since: &mut Option<Instant>,
    ) -> Result<Step, String> {
        let options = &self.options;
        let holds = self
            .outbox
            .claim(&options.owner, options.lease_duration)
            .await
            .map_err(|err| error_chain(&err))?;
        if !holds {
            return Ok(Step::Standby);
        }
        if last_status.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last_status = Some(Instant::now());
            let status = self
                .outbox
                .status()
                .await
                .map_err(|err| error_chain(&err))?;
            metrics::gauge!("logpipe_outbox_waiting").set(status.waiting as f64);
            metrics::gauge!("logpipe_outbox_oldest_age_seconds")
                .set(status.oldest_age_ms.map_or(0.0, |age| age as f64 / 1000.0));
        }
        let rows = self
            .outbox
            .waiting(options.batch_size)
            .await
            .map_err(|err| error_chain(&err))?;
        if rows.is_empty() {
            return Ok(Step::Idle);
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        if let Some(health) = &self.health {
            let since = *failing_since.get_or_insert_with(Instant::now);
            let reason = format!(
                "{} records handed to the backend are not written yet",
                ids.len()
            );
            health.sends_failing(since, reason, options.lease_duration);
        }
        // The lease is renewed while the batch is sent, so that no standby takes it
        // over meanwhile; if it is lost, this relay stops sending.
        let send = send_all(&self.producer, rows.into_iter().map(with_id_header));
        let keep_lease = async {
            loop {
                tokio::time::sleep(options.lease_duration / 3).await;
                match self
                    .outbox
                    .claim(&options.owner, options.lease_duration)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return "another relay took the lease".to_owned(),
                    Err(err) => return error_chain(&err),
                }
            }
        };
        tokio::select! {
            sent = send => sent.map_err(|err| error_chain(&err))?,
            lost = keep_lease => return Err(format!("the lease could not be kept while sending: {lost}")),
        };
        self.outbox
            .remove(&ids)
            .await
            .map_err(|err| error_chain(&err))?;
        metrics::counter!("logpipe_outbox_sent_total").increment(ids.len() as u64);
        Ok(Step::Sent)
    }
}

/// What one step of the relay did.
enum Step {
    /// Sent a batch: go on at once.
    Sent,
    /// Nothing was waiting.
    Idle,
    /// Another relay holds the lease.
    Standby,
}

/// The record of a row, with the row's id in [`OUTBOX_ID_HEADER`].
fn with_id_header(row: OutboxRow) -> crate::backend::OutgoingRecord {
    let mut record = row.record;
    record.headers.push(RecordHeader {
        name: OUTBOX_ID_HEADER.to_owned(),
        value: row.id.to_string().into_bytes(),
    });
    record
}

/// The wait after a failure that follows `previous`'s (`None` after a success): from
/// `poll_interval`, doubling, never above `max_backoff`.
fn next_backoff(previous: Option<Duration>, options: &RelayOptions) -> Duration {
    previous
        .map_or(options.poll_interval, |wait| wait * 2)
        .min(options.max_backoff)
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use logpipe_core::outbox::OutboxStore;
    use logpipe_core::{BackendError, DeliveryFuture, OutgoingRecord};
    use logpipe_sqlite::SqliteOutbox;

    use super::*;
    use crate::health::Health;

    /// A backend that takes records and never writes them, nor says they failed.
    struct Unanswering;

    impl ProducerBackend for Unanswering {
        async fn enqueue(&self, _: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
            Ok(DeliveryFuture::new(pending()))
        }

        async fn flush(&self) -> Result<(), BackendError> {
            pending().await
        }
    }

    /// Sends that neither succeed nor fail make the relay unready after a lease's time,
    /// as failures would; the row stays.
    #[tokio::test]
    async fn a_batch_the_backend_never_answers_makes_the_relay_unready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let outbox = SqliteOutbox::open(&path).unwrap();
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        let record = OutgoingRecord {
            stream: "people".into(),
            key: Some(b"k".to_vec()),
            value: b"json:{}".to_vec(),
            headers: vec![],
        };
        SqliteOutbox::write(&tx, &record).unwrap();
        tx.commit().unwrap();

        let health = Health::new();
        let options = RelayOptions {
            lease_duration: Duration::from_millis(300),
            ..RelayOptions::default()
        };
        let relay = Relay::new(outbox.clone(), Unanswering)
            .with_options(options)
            .with_health(health.register("outbox-relay"));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !health.report().text.contains("stalled") {
            assert!(Instant::now() < deadline, "the relay stays ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = health.report();
        let text = report.text;
        assert!(!report.ready);
        assert!(
            text.contains("outbox-relay: stalled: sending has failed for ")
                && text.contains("1 records handed to the backend are not written yet"),
            "{text}"
        );
        assert_eq!(outbox.status().await.unwrap().waiting, 1);
        shutdown.cancel();
        running.await.unwrap();
    }

    #[test]
    fn the_wait_after_failures_doubles_from_the_poll_interval_up_to_max_backoff() {
        let waits = |poll_ms: u64| {
            let options = RelayOptions {
                poll_interval: Duration::from_millis(poll_ms),
                max_backoff: Duration::from_secs(30),
                ..RelayOptions::default()
            };
            let mut wait = None;
            (0..8)
                .map(|_| {
                    wait = Some(next_backoff(wait, &options));
                    wait.unwrap().as_millis()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            waits(500),
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        // A poll interval longer than max_backoff (a relay woken by notifications).
        assert_eq!(waits(600_000), [30000; 8]);
    }
}
