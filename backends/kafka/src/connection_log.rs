//! What librdkafka says about the connections to the brokers, shared by every client of
//! one [`KafkaClient`](crate::KafkaClient). Each message is logged once at its level and
//! at debug while it repeats. A failing connection is said once per outage, at warn, on
//! the target [`TARGET`] (which the `logpipe` commands quiet, since their error says it);
//! the last failure is kept to explain the errors of calls that could not reach the
//! brokers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

/// How long a message logged once is logged at debug only when it comes again.
const REPEAT_QUIET: Duration = Duration::from_secs(300);

/// The tracing target of the lines about the state of the connections.
pub const TARGET: &str = "logpipe_kafka::connection";

/// Messages remembered at most; past it the oldest are forgotten.
const REMEMBERED: usize = 256;

/// The connection messages of one cluster's clients.
#[derive(Debug)]
pub(crate) struct ConnectionLog {
    brokers: String,
    /// Whether the clients said every broker is down, and nothing answered since.
    down: AtomicBool,
    /// Whether a connection failure is kept.
    failing: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When each message (without its thread and repeat counts) was last logged above
    /// debug.
    logged: HashMap<String, Instant>,
    /// The last reason a connection failed.
    last_failure: Option<String>,
    /// Whether a failure was logged at warn since the brokers last answered.
    reported: bool,
}

impl ConnectionLog {
    pub(crate) fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            down: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    /// A log line of librdkafka.
    pub(crate) fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let text = plain(message);
        if facility == "FAIL" {
            self.failed(text);
            return;
        }
        let level = if self.first_time(level, text) {
            level
        } else {
            RDKafkaLogLevel::Debug
        };
        crate::log_line(level, facility, text);
    }

    /// An error librdkafka reports.
    pub(crate) fn error(&self, error: &RdKafkaError, reason: &str) {
        let text = plain(reason);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            let first = !self.down.swap(true, Ordering::SeqCst);
            if first && !self.state().reported {
                tracing::warn!(target: TARGET, brokers = %self.brokers, "cannot reach the Kafka brokers: {text}");
            } else {
                tracing::debug!(target: TARGET, brokers = %self.brokers, "{text}");
            }
            return;
        }
        if is_connection_failure(error) {
            self.failed(text);
        } else if self.first_time(RDKafkaLogLevel::Warning, text) {
            tracing::warn!(target: "librdkafka", error = %error, "{text}");
        } else {
            tracing::debug!(target: "librdkafka", error = %error, "{text}");
        }
    }

    /// A request went through: the brokers answer. Cheap while they do.
    pub(crate) fn answered(&self) {
        if !self.failing.load(Ordering::Relaxed) && !self.down.load(Ordering::Relaxed) {
            return;
        }
        if self.failing.swap(false, Ordering::SeqCst) {
            let mut state = self.state();
            state.last_failure = None;
            state.reported = false;
        }
        if self.down.swap(false, Ordering::SeqCst) {
            // What failed during the outage is logged again if it fails again.
            self.state().logged.clear();
            tracing::info!(target: TARGET, brokers = %self.brokers, "the Kafka brokers answer again");
        }
    }

    /// A connection failed for `text`: kept, and logged at warn once per outage.
    fn failed(&self, text: &str) {
        let first = self.first_time(RDKafkaLogLevel::Warning, text);
        let mut state = self.state();
        state.last_failure = Some(text.to_owned());
        self.failing.store(true, Ordering::SeqCst);
        if first {
            state.reported = true;
            drop(state);
            tracing::warn!(target: TARGET, brokers = %self.brokers, "{text}");
        } else {
            drop(state);
            tracing::debug!(target: TARGET, brokers = %self.brokers, "{text}");
        }
    }

    /// The last reason a connection to a broker failed, if it has not answered since.
    pub(crate) fn last_failure(&self) -> Option<String> {
        self.state().last_failure.clone()
    }

    /// The bootstrap brokers.
    pub(crate) fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Whether `text` at `level` is to be logged at its level: debug lines always are,
    /// others unless they were logged in the last [`REPEAT_QUIET`].
    fn first_time(&self, level: RDKafkaLogLevel, text: &str) -> bool {
        if matches!(level, RDKafkaLogLevel::Debug) {
            return true;
        }
        let now = Instant::now();
        let mut state = self.state();
        if state
            .logged
            .get(text)
            .is_some_and(|at| now.duration_since(*at) < REPEAT_QUIET)
        {
            return false;
        }
        if state.logged.len() >= REMEMBERED {
            state
                .logged
                .retain(|_, at| now.duration_since(*at) < REPEAT_QUIET);
            if state.logged.len() >= REMEMBERED {
                state.logged.clear();
            }
        }
        state.logged.insert(text.to_owned(), now);
        true
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `error` says a connection to a broker failed (refused, broken, TLS or SASL).
pub(crate) fn is_connection_failure(error: &RdKafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::SaslAuthenticationFailed
        )
    )
}

/// `message` without librdkafka's thread prefix (`[thrd:...]: `) and its repeat count
/// (` (after 9ms in state UP, 1 identical error(s) suppressed)`), so that one message
/// from two clients, or again later, is the same text.
fn plain(message: &str) -> &str {
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(message, |(_, text)| text),
        None => message,
    };
    match message.rfind(" (after ") {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_from_two_clients_or_repeated_is_the_same_text() {
        let first = "[thrd:sasl_ssl://127.0.0.1:29094/bootstrap]: sasl_ssl://127.0.0.1:29094/bootstrap: SSL handshake failed: certificate verify failed (after 9ms in state SSL_HANDSHAKE)";
        let again = "sasl_ssl://127.0.0.1:29094/bootstrap: SSL handshake failed: certificate verify failed (after 8ms in state SSL_HANDSHAKE, 1 identical error(s) suppressed)";
        assert_eq!(plain(first), plain(again));
        assert_eq!(
            plain(first),
            "sasl_ssl://127.0.0.1:29094/bootstrap: SSL handshake failed: certificate verify failed"
        );
        assert_eq!(plain("1/1 brokers are down"), "1/1 brokers are down");
    }

    #[test]
    fn a_failure_is_kept_until_the_brokers_answer_and_logged_once() {
        let log = ConnectionLog::new("h:9092");
        let refused = "h:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)";
        log.log(RDKafkaLogLevel::Error, "FAIL", refused);
        assert!(log.state().reported, "logged at warn");
        assert!(!log.first_time(RDKafkaLogLevel::Warning, plain(refused)));
        assert!(log.first_time(RDKafkaLogLevel::Debug, plain(refused)));
        assert_eq!(log.last_failure().as_deref(), Some(plain(refused)));
        log.error(
            &RdKafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(log.down.load(Ordering::SeqCst));
        log.answered();
        assert!(!log.down.load(Ordering::SeqCst));
        assert_eq!(log.last_failure(), None);
        assert!(!log.state().reported);
        assert!(log.first_time(RDKafkaLogLevel::Warning, plain(refused)));
    }
}
