//! [`AnyOutbox`]: the outbox a configuration names, SQLite or PostgreSQL.

use std::time::Duration;

use logpipe_core::outbox::{OutboxError, OutboxRow, OutboxStatus, OutboxStore};

#[cfg(feature = "postgres")]
use super::PgOutbox;
use super::SqliteOutbox;

/// The outbox of `outbox.url`: a [`SqliteOutbox`] or a [`PgOutbox`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyOutbox {
    /// `sqlite://PATH`.
    Sqlite(SqliteOutbox),
    /// `postgres://...`.
    #[cfg(feature = "postgres")]
    Postgres(PgOutbox),
}

/// Runs `$call` on the outbox inside `$outbox`, whichever it is.
macro_rules! each {
    ($outbox:expr, $inner:ident => $call:expr) => {
        match $outbox {
            AnyOutbox::Sqlite($inner) => $call,
            #[cfg(feature = "postgres")]
            AnyOutbox::Postgres($inner) => $call,
        }
    };
}

impl OutboxStore for AnyOutbox {
    async fn claim(&self, owner: &str, duration: Duration) -> Result<bool, OutboxError> {
        each!(self, outbox => outbox.claim(owner, duration).await)
    }

    async fn release(&self, owner: &str) -> Result<(), OutboxError> {
        each!(self, outbox => outbox.release(owner).await)
    }

    async fn waiting(&self, max: usize) -> Result<Vec<OutboxRow>, OutboxError> {
        each!(self, outbox => outbox.waiting(max).await)
    }

    async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
        each!(self, outbox => outbox.remove(ids).await)
    }

    async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        each!(self, outbox => outbox.status().await)
    }
}
