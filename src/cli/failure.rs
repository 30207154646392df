//! Why a command failed, and so its exit status.

use logpipe_core::{BackendError, BackendErrorKind};

use crate::error_chain;

/// Why a command failed, and so its exit status.
pub(super) enum Failure {
    /// The configuration is wrong (78).
    Config(String),
    /// The input is wrong (65).
    Data(String),
    /// The backend or the store failed (1).
    Failed(String),
}

impl Failure {
    /// The backend failed at `what`.
    pub(super) fn backend(what: &str, error: &BackendError) -> Self {
        Failure::Failed(format!("{what}: {}", reason(error)))
    }

    /// The backend failed at `what`, with something the command was given: bad input
    /// when the backend refused it (a position, a range it cannot take), else a failure.
    pub(super) fn given(what: &str, error: &BackendError) -> Self {
        let message = format!("{what}: {}", reason(error));
        if error.kind() == BackendErrorKind::Rejected {
            Failure::Data(message)
        } else {
            Failure::Failed(message)
        }
    }

    /// The offset store failed at `what`.
    pub(super) fn store(what: &str, error: &logpipe_core::StoreError) -> Self {
        Failure::Failed(format!("{what}: {}", reason(error)))
    }

    /// The exit status and the message to print.
    pub(super) fn status_and_message(self) -> (u8, String) {
        match self {
            Failure::Config(message) => (super::EXIT_CONFIG, message),
            Failure::Data(message) => (super::EXIT_DATA, message),
            Failure::Failed(message) => (1, message),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Failed(format!("input/output failed: {error}"))
    }
}

/// An error and its sources, each left out when the text so far already says it (the
/// drivers' errors often repeat their source in their own message).
pub(super) fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The configuration's backend could not be opened.
pub(super) fn cannot_open(url: &dyn std::fmt::Display, error: &BackendError) -> Failure {
    Failure::Config(format!(
        "cannot open the backend {url}: {}",
        error_chain(error)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_do_not_repeat_their_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create topic \"t\": {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("already exists")]
        struct Inner;
        let error = BackendError::new(BackendErrorKind::Other, "Kafka").with_source(Outer(Inner));
        assert_eq!(
            reason(&error),
            "backend error: Kafka: cannot create topic \"t\": already exists"
        );
    }

    #[test]
    fn a_refusal_of_the_backend_is_bad_input() {
        let refused = BackendError::new(BackendErrorKind::Rejected, "not an offset");
        assert!(matches!(Failure::given("set", &refused), Failure::Data(_)));
        let down = BackendError::new(BackendErrorKind::Connection, "down");
        assert!(matches!(Failure::given("set", &down), Failure::Failed(_)));
        assert!(matches!(
            Failure::backend("create", &refused),
            Failure::Failed(_)
        ));
    }
}
