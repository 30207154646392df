//! Wake-ups of a waiting relay: a transaction that writes outbox rows notifies
//! [`CHANNEL`] when it commits (`pg_notify` in the write), and a task of the relay's
//! process listens on a connection of its own.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, oneshot};

/// The channel every outbox notifies, with its schema as the payload.
pub(super) const CHANNEL: &str = "logpipe_outbox";

/// The longest wait between attempts to listen again after the connection failed.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Wakes the relay of one outbox. The listening task starts with the first wait and ends
/// when the last clone of the outbox is dropped.
pub(super) struct Wakeups {
    /// A pool of one connection, the listener's, apart from the outbox's pool.
    pool: PgPool,
    schema: String,
    rows: Arc<Notify>,
    /// Dropped with the outbox, which ends the listening task.
    listening: OnceLock<oneshot::Sender<()>>,
}

impl Wakeups {
    pub(super) fn new(pool: PgPool, schema: &str) -> Self {
        Self {
            pool,
            schema: schema.to_owned(),
            rows: Arc::new(Notify::new()),
            listening: OnceLock::new(),
        }
    }

    /// Waits until a transaction that wrote rows committed, or for `timeout`. Cancel
    /// safe: a notification that arrives meanwhile wakes the next wait.
    pub(super) async fn wait(&self, timeout: Duration) {
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
