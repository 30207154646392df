//! What one run of a consumer keeps track of besides its records: positions not stored,
//! read failures, and the metrics of the records handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ConsumerOptions;

/// The metrics of the records of one stream and message type that were handled,
/// registered once rather than for every record.
pub(super) struct HandledMetrics {
    pub(super) stream: Arc<str>,
    pub(super) message_type: &'static str,
    pub(super) seconds: metrics::Histogram,
    pub(super) total: metrics::Counter,
}

/// What one run of a consumer keeps track of.
pub(super) struct RunState {
    /// One entry for each (stream, message type) handled so far: few.
    pub(super) handled: Vec<HandledMetrics>,
    /// Records handled (or skipped) since positions were last stored.
    pub(super) pending_records: usize,
    pub(super) last_commit: Instant,
    pub(super) commit_interval: Duration,
    pub(super) read_backoff: Option<Duration>,
    /// Since when `next_event` has returned retriable errors, no event in between.
    pub(super) read_errors_since: Option<Instant>,
    /// Since when the backend says its own reads have been failing.
    pub(super) backend_failing_since: Option<Instant>,
    /// What failed last, of those.
    pub(super) read_failure: String,
}

impl RunState {
    pub(super) fn new(options: &ConsumerOptions) -> Self {
        Self {
            handled: Vec::new(),
            pending_records: 0,
            last_commit: Instant::now(),
            commit_interval: Duration::from_millis(options.commit_interval_ms),
            read_backoff: None,
            read_errors_since: None,
            backend_failing_since: None,
            read_failure: String::new(),
        }
    }

    pub(super) fn handled_metrics(
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

    pub(super) fn commit_deadline(&self) -> Option<Instant> {
        (self.pending_records > 0).then(|| self.last_commit + self.commit_interval)
    }

    pub(super) fn next_read_backoff(&mut self) -> Duration {
        let wait = self
            .read_backoff
            .map_or(Duration::from_millis(100), |last| {
                (last * 2).min(Duration::from_secs(5))
            });
        self.read_backoff = Some(wait);
        wait
    }
}
