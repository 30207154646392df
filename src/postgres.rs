//! The PostgreSQL offset store (the crate `logpipe-postgres`, over sqlx).
//!
//! `offset_store = "postgres://USER:PASSWORD@HOST/DATABASE?schema=logpipe"` selects it
//! for any backend ([`PgStoreOptions`] lists the URL's parameters). A handler whose data
//! lives in the same database writes its rows in the transaction of
//! [`PgOffsetStore::begin`], which marks its record handled: the rows and the mark
//! commit together, so each record takes effect exactly once.
//!
//! ```no_run
//! use logpipe::postgres::{PgOffsetStore, sqlx};
//! use logpipe::{BoxError, Context};
//!
//! async fn save(store: &PgOffsetStore, context: &Context, uuid: &str) -> Result<(), BoxError> {
//!     let mut tx = store.begin(context).await?;
//!     sqlx::query("INSERT INTO people (uuid) VALUES ($1) ON CONFLICT DO NOTHING")
//!         .bind(uuid)
//!         .execute(&mut *tx)
//!         .await?;
//!     tx.commit().await?;
//!     Ok(())
//! }
//! ```

pub use logpipe_postgres::*;
