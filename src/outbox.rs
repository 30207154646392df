//! The transactional outbox: a message written into the service's own database
//! transaction, and sent by a [`Relay`] once that transaction committed, so that a
//! change and its message happen together or not at all.
//!
//! [`Outbox::send`] writes the envelope (the bytes [`Producer::send`](crate::Producer)
//! would write, key included) as a row of the outbox table, in the caller's
//! `rusqlite::Transaction` ([`SqliteOutbox`]) or `sqlx` transaction ([`PgOutbox`],
//! feature `postgres`). Nothing is sent if the transaction rolls back. The relay sends
//! committed rows in the order they were written, through any producer backend, and
//! removes them once written. Delivery is at least once: after a crash between sending
//! and removing, rows are sent again, with the same id in the header
//! [`OUTBOX_ID_HEADER`] (where the backend keeps headers: Kafka and the embedded log).
//!
//! ```
//! use logpipe::outbox::{Outbox, Relay, SqliteOutbox};
//! use logpipe::{Message, embedded::EmbeddedLog};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[logpipe(type = "person", version = 1, key = "uuid")]
//! struct PersonV1 { uuid: String, name: String }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("app.db");
//! let outbox = Outbox::new(SqliteOutbox::open(&path)?).with_producer_id("crm");
//!
//! // The service's own change and its message, in one transaction.
//! let mut conn = rusqlite::Connection::open(&path)?;
//! let tx = conn.transaction()?;
//! tx.execute("CREATE TABLE people (uuid TEXT PRIMARY KEY, name TEXT)", [])?;
//! tx.execute("INSERT INTO people VALUES ('9a2e', 'Ann')", [])?;
//! outbox.send(&tx, "people", &PersonV1 { uuid: "9a2e".into(), name: "Ann".into() })?;
//! tx.commit()?;
//!
//! // The relay sends it, and the outbox is empty again.
//! let log = EmbeddedLog::open_in_memory()?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let relay = tokio::spawn(Relay::new(outbox.table().clone(), log.clone()).run(shutdown.clone()));
//! # use logpipe::outbox::OutboxStore;
//! while outbox.table().status().await?.waiting > 0 {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! shutdown.cancel();
//! relay.await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;

pub use logpipe_core::outbox::{
    OUTBOX_ID_HEADER, OutboxError, OutboxRow, OutboxStatus, OutboxStore,
};
#[cfg(feature = "postgres")]
pub use logpipe_postgres::PgOutbox;
pub use logpipe_sqlite::SqliteOutbox;

use crate::backend::OutgoingRecord;
use crate::envelope::Format;
use crate::error::Error;
use crate::message::Message;
use crate::outgoing::record_of;

mod any;
mod relay;

pub use any::AnyOutbox;
pub use relay::{Relay, RelayOptions};

/// Writes messages into an outbox table `T` ([`SqliteOutbox`], [`PgOutbox`]), inside the
/// caller's transactions.
#[derive(Debug, Clone)]
pub struct Outbox<T> {
    table: T,
    format: Format,
    producer_id: Option<String>,
}

impl<T> Outbox<T> {
    /// Writes into `table`, as JSON envelopes without a producer id.
    pub fn new(table: T) -> Self {
        Self {
            table,
            format: Format::Json,
            producer_id: None,
        }
    }

    /// Writes envelopes in `format`.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Writes `producer_id` into every envelope's `producer` key.
    #[must_use]
    pub fn with_producer_id(mut self, producer_id: impl Into<String>) -> Self {
        self.producer_id = Some(producer_id.into());
        self
    }

    /// The outbox table, which a [`Relay`] reads.
    pub fn table(&self) -> &T {
        &self.table
    }

    fn record<M: Message>(&self, stream: &str, message: &M) -> Result<OutgoingRecord, Error> {
        record_of(
            self.format,
            self.producer_id.as_deref(),
            Arc::from(stream),
            message,
        )
    }
}

impl Outbox<SqliteOutbox> {
    /// Writes `message`, for `stream`, into the outbox in `tx`, and returns its row's id.
    /// It is sent once `tx` commits, and never if `tx` rolls back.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the message cannot be encoded; [`Error::Outbox`] when the
    /// row cannot be written (such as when the database has no outbox table:
    /// [`SqliteOutbox::create_tables`]).
    pub fn send<M: Message>(
        &self,
        tx: &rusqlite::Transaction<'_>,
        stream: &str,
        message: &M,
    ) -> Result<i64, Error> {
        Ok(SqliteOutbox::write(tx, &self.record(stream, message)?)?)
    }
}

#[cfg(feature = "postgres")]
impl Outbox<PgOutbox> {
    /// Writes `message`, for `stream`, into the outbox in `tx` (a
    /// `sqlx::Transaction<Postgres>`, or any connection of the database), and returns
    /// its row's id. It is sent once `tx` commits, and never if `tx` rolls back.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the message cannot be encoded; [`Error::Outbox`] when the
    /// row cannot be written.
    pub async fn send<M: Message>(
        &self,
        tx: &mut logpipe_postgres::sqlx::PgConnection,
        stream: &str,
        message: &M,
    ) -> Result<i64, Error> {
        let record = self.record(stream, message)?;
        Ok(self.table.write(tx, &record).await?)
    }
}
