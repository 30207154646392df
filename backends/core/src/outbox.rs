//! The transactional outbox: records written into an outbox table inside a service's own
//! database transaction, and read back by a relay that sends them once they committed.
//!
//! Writing a row is the store's own business (it takes the caller's transaction, of
//! whichever database library); this contract is what a relay needs: the committed rows
//! in the order they were written, their removal once sent, a lease so that one relay
//! sends at a time, and how much is waiting.

use std::future::Future;
use std::time::Duration;

use crate::{BoxError, OutgoingRecord};

/// The header a relayed record carries: the outbox row's id, in decimal, so that
/// consumers can tell a record sent again after a crash from a new one.
pub const OUTBOX_ID_HEADER: &str = "logpipe-outbox-id";

/// A committed row of the outbox, waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The row's id: rows are sent in the order of their ids.
    pub id: i64,
    /// The record to send.
    pub record: OutgoingRecord,
    /// When the row was written, in milliseconds since the Unix epoch.
    pub written_ms: i64,
}

/// How much an outbox holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStatus {
    /// Committed rows not sent yet.
    pub waiting: u64,
    /// How long the oldest of them has waited, in milliseconds (`None` when none waits).
    pub oldest_age_ms: Option<u64>,
}

/// What went wrong in an outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The outbox's database failed.
    #[error("{store} outbox failed")]
    Database {
        /// Which store, such as `SQLite`.
        store: &'static str,
        /// The database's error.
        #[source]
        source: BoxError,
    },
    /// A row cannot be read back as a record.
    #[error("outbox row {id} is corrupt: {why}")]
    Corrupt {
        /// The row's id.
        id: i64,
        /// What is wrong with it.
        why: String,
    },
}

/// The outbox table of one database, as a relay reads it.
///
/// Rows become visible in the order of their ids: a row is never returned while a row
/// of a lower id may still commit, so that records of one key leave in the order their
/// transactions wrote them.
pub trait OutboxStore: Send + Sync + 'static {
    /// Takes the relay lease for `owner`, or renews it, for `duration`: `true` when
    /// `owner` holds it now. One relay holds it at a time; it is free once released or
    /// expired.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] when the database fails.
    fn claim(
        &self,
        owner: &str,
        duration: Duration,
    ) -> impl Future<Output = Result<bool, OutboxError>> + Send;

    /// Gives the relay lease up, if `owner` holds it.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] when the database fails.
    fn release(&self, owner: &str) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// The oldest committed rows, at most `max`, in the order of their ids.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] when the database fails or a row is corrupt.
    fn waiting(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, OutboxError>> + Send;

    /// Removes the rows of `ids`, sent. Ids no longer there are passed over.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] when the database fails.
    fn remove(&self, ids: &[i64]) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Waits until a transaction that wrote rows may have committed, or for `timeout`,
    /// whichever comes first: a relay with nothing to send waits here before it looks
    /// again. The default waits for `timeout` (the outbox is polled); PostgreSQL's is
    /// woken by a notification.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    fn wait_for_rows(&self, timeout: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(timeout)
    }

    /// How many committed rows wait, and the age of the oldest.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] when the database fails.
    fn status(&self) -> impl Future<Output = Result<OutboxStatus, OutboxError>> + Send;
}
