//! Why a command failed, and so its exit status.

use logpipe_core::{BackendError, BackendErrorKind};

use crate::error_chain;

/// Why a command failed, and so its exit status.
pub(super) enum Failure {
    /// The configuration is wrong (78).
    Config(String),
    /// The input is wrong (65).
    Data(String),
    /// The backend could not be reached, or did not answer in time (69).
    Unavailable(String),
    /// The backend or the store failed (1).
    Failed(String),
}

impl Failure {
    /// The backend failed at `what`: unavailable when it could not be reached or did not
    /// answer in time, else a failure.
    pub(super) fn backend(what: &str, error: &BackendError) -> Self {
        let message = format!("{what}: {}", error_chain(error));
        if is_unavailable(error) {
            Failure::Unavailable(message)
        } else {
            Failure::Failed(message)
        }
    }

    /// The backend failed at `what`, with something the command was given: bad input
    /// when the backend refused it (a position, a range it cannot take), else as
    /// [`Failure::backend`].
    pub(super) fn given(what: &str, error: &BackendError) -> Self {
        if error.kind() == BackendErrorKind::Rejected {
            Failure::Data(format!("{what}: {}", error_chain(error)))
        } else {
            Failure::backend(what, error)
        }
    }

    /// The offset store failed at `what`.
    pub(super) fn store(what: &str, error: &logpipe_core::StoreError) -> Self {
        Failure::Failed(format!("{what}: {}", error_chain(error)))
    }

    /// The exit status and the message to print.
    pub(super) fn status_and_message(self) -> (u8, String) {
        match self {
            Failure::Config(message) => (super::EXIT_CONFIG, message),
            Failure::Data(message) => (super::EXIT_DATA, message),
            Failure::Unavailable(message) => (super::EXIT_UNAVAILABLE, message),
            Failure::Failed(message) => (1, message),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Failed(format!("input/output failed: {error}"))
    }
}

/// Whether `error` says the backend could not be reached or did not answer in time.
pub(super) fn is_unavailable(error: &BackendError) -> bool {
    matches!(
        error.kind(),
        BackendErrorKind::Connection | BackendErrorKind::Timeout
    )
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
    fn a_message_does_not_repeat_its_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create topic \"t\": {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("already exists")]
        struct Inner;
        let error = BackendError::new(BackendErrorKind::Other, "Kafka").with_source(Outer(Inner));
        assert_eq!(
            error_chain(&error),
            "backend error: Kafka: cannot create topic \"t\": already exists"
        );
    }

    #[test]
    fn a_refusal_of_the_backend_is_bad_input() {
        let refused = BackendError::new(BackendErrorKind::Rejected, "not an offset");
        assert!(matches!(Failure::given("set", &refused), Failure::Data(_)));
        let down = BackendError::new(BackendErrorKind::Connection, "down");
        assert!(matches!(
            Failure::given("set", &down),
            Failure::Unavailable(_)
        ));
        let broken = BackendError::new(BackendErrorKind::Storage, "disk full");
        assert!(matches!(Failure::given("set", &broken), Failure::Failed(_)));
        assert!(matches!(
            Failure::backend("create", &refused),
            Failure::Failed(_)
        ));
    }
}
