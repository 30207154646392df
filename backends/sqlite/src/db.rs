//! A SQLite connection used from async code without blocking the runtime.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `step` again while SQLite says the database is busy or locked without waiting
/// (as when another process switches a new file to WAL mode, or recovers its WAL), for
/// at most [`BUSY_TIMEOUT`].
fn retry_busy<R>(mut step: impl FnMut() -> rusqlite::Result<R>) -> rusqlite::Result<R> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(err)
                if matches!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// A shared SQLite connection whose work runs on Tokio's blocking threads.
#[derive(Clone)]
pub(crate) struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDb {
    /// Opens (creating if needed) a database file in WAL mode, so that readers and one
    /// writer in other processes can use it at the same time, with full fsync on commit.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self::from_connection(conn))
    }

    /// Runs the statements `sql` (creating tables), waiting for other processes that
    /// set the same file up at the same moment.
    pub(crate) fn setup(&self, sql: &str) -> rusqlite::Result<()> {
        self.call_blocking(|conn| retry_busy(|| conn.execute_batch(sql)))
    }

    /// A private in-memory database.
    pub(crate) fn open_in_memory() -> rusqlite::Result<Self> {
        Ok(Self::from_connection(Connection::open_in_memory()?))
    }

    fn from_connection(conn: Connection) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    /// Runs `f` on the connection, on the current thread. For blocking contexts only.
    pub(crate) fn call_blocking<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }

    /// Runs `f` on the connection on a blocking thread and waits for it without blocking
    /// the async runtime. A panic in `f` is resumed here.
    pub(crate) async fn call<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let db = self.clone();
        match tokio::task::spawn_blocking(move || db.call_blocking(f)).await {
            Ok(result) => result,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}
