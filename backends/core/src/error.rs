//! Errors of backends, and the boxed error the traits carry.

use std::fmt;

/// A boxed error, as handlers and drivers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a backend, in broad strokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The server could not be reached or the connection broke.
    Connection,
    /// An operation did not finish in time.
    Timeout,
    /// A stream, partition or position does not exist.
    NotFound,
    /// The server refused the request (too large, not allowed, invalid).
    Rejected,
    /// Local storage failed (the embedded log's SQLite file).
    Storage,
    /// Anything else.
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Connection => "connection error",
            BackendErrorKind::Timeout => "timed out",
            BackendErrorKind::NotFound => "not found",
            BackendErrorKind::Rejected => "rejected",
            BackendErrorKind::Storage => "storage error",
            BackendErrorKind::Other => "backend error",
        })
    }
}

/// An error from a backend: what kind, what happened, whether trying again may help, and
/// the underlying error.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    retriable: bool,
    #[source]
    source: Option<BoxError>,
}

impl BackendError {
    /// A new error that is not retriable.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retriable: false,
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marks the error as one that may go away when the operation is tried again.
    pub fn retriable(mut self) -> Self {
        self.retriable = true;
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Whether trying the operation again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// An error and its sources, joined with `: `, for logs and messages; a source whose text
/// the message so far already holds is left out (errors often repeat their source in
/// their own message).
///
/// ```
/// use logpipe_core::{BackendError, BackendErrorKind, error_chain};
///
/// let io = std::io::Error::other("connection reset");
/// let error = BackendError::new(BackendErrorKind::Connection, "Kafka").with_source(io);
/// assert_eq!(error_chain(&error), "connection error: Kafka: connection reset");
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
