//! Wake-ups of a waiting relay: a transaction that writes outbox rows notifies
//! [`CHANNEL`] when it commits (`pg_notify` in the write), and a task of the relay's
//! process listens on a connection of its own.
//!
//! A committed row may be held back by an older transaction still running (see the
//! outbox's module). Its notification came already, and the end of the older
//! transaction notifies nothing, so while rows are held back the relay looks again
//! after a short wait, doubling from [`FIRST_RECHECK`] to [`MAX_RECHECK`], instead of
//! waiting for its whole poll interval.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, oneshot};

/// The channel every outbox notifies, with its schema as the payload.
pub(super) const CHANNEL: &str = "logpipe_outbox";

/// The longest wait between attempts to listen again after the connection failed.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The first wait before looking again at rows held back by an older transaction.
const FIRST_RECHECK: Duration = Duration::from_millis(10);

/// The longest wait before looking again at rows held back by an older transaction.
const MAX_RECHECK: Duration = Duration::from_secs(1);

/// Wakes the relay of one outbox. The listening task starts with the first wait and ends
/// when the last clone of the outbox is dropped.
pub(super) struct Wakeups {
    /// A pool of one connection, the listener's, apart from the outbox's pool.
    pool: PgPool,
    schema: String,
    rows: Arc<Notify>,
    /// The next wait's bound while the last look found rows held back.
    recheck: Mutex<Option<Duration>>,
    /// Dropped with the outbox, which ends the listening task.
    listening: OnceLock<oneshot::Sender<()>>,
}

impl Wakeups {
    pub(super) fn new(pool: PgPool, schema: &str) -> Self {
        Self {
            pool,
            schema: schema.to_owned(),
            rows: Arc::new(Notify::new()),
            recheck: Mutex::new(None),
            listening: OnceLock::new(),
        }
    }

    /// Notes what the relay's last look found: rows held back by an older transaction
    /// (`true`), or none, or rows it may send (`false`).
    pub(super) fn looked(&self, held_back: bool) {
        let mut recheck = self.recheck.lock().unwrap_or_else(PoisonError::into_inner);
        *recheck = held_back.then(|| next_recheck(*recheck));
    }

    /// Waits until a transaction that wrote rows committed, or for `timeout` (shorter
    /// while rows are held back). Cancel safe: a notification that arrives meanwhile
    /// wakes the next wait.
    pub(super) async fn wait(&self, timeout: Duration) {
        let recheck = *self.recheck.lock().unwrap_or_else(PoisonError::into_inner);
        let timeout = recheck.map_or(timeout, |recheck| recheck.min(timeout));
        self.listening.get_or_init(|| {
            let (stop, stopped) = oneshot::channel();
            let task = listen(
                self.pool.clone(),
                self.schema.clone(),
                Arc::clone(&self.rows),
            );
            tokio::spawn(async move {
                tokio::select! {
                    () = task => {}
                    _ = stopped => {}
                }
            });
            stop
        });
        let _ = tokio::time::timeout(timeout, self.rows.notified()).await;
    }
}

/// The wait before looking again at rows held back, after `previous` (`None`: they
/// were not held back at the last look).
fn next_recheck(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_RECHECK, |wait| (wait * 2).min(MAX_RECHECK))
}

/// Listens on [`CHANNEL`] for ever, waking `rows` for each notification of `schema`,
/// and also whenever it (re)connected: rows may have been written while it did not
/// listen.
async fn listen(pool: PgPool, schema: String, rows: Arc<Notify>) {
    let mut retry = Duration::from_millis(500);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                retry = Duration::from_millis(500);
                rows.notify_one();
                let error = loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) if notification.payload() != schema => {}
                        // Ok(None): the connection was lost and made again.
                        Ok(_) => rows.notify_one(),
                        Err(error) => break error,
                    }
                };
                tracing::debug!(%error, "listening for outbox rows failed; polling until it listens again");
            }
            Err(error) => {
                tracing::debug!(%error, "cannot listen for outbox rows; polling until it can");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_rows_held_back_doubles_up_to_its_bound() {
        let mut waits = vec![];
        let mut wait = None;
        for _ in 0..9 {
            wait = Some(next_recheck(wait));
            waits.push(wait.unwrap().as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
