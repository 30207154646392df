//! Running many consumers in one process.

use std::collections::HashMap;

use logpipe_core::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::ConsumerBackend;
use crate::consumer::Consumer;
use crate::error::Error;
use crate::offsets::OffsetStore;

/// A consumer of any backend and store type, ready to run.
trait RunConsumer: Send {
    fn name(&self) -> String;
    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, Result<(), Error>>;
}

impl<B: ConsumerBackend, S: OffsetStore> RunConsumer for Consumer<B, S> {
    fn name(&self) -> String {
        self.group().to_owned()
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(Consumer::run(*self, shutdown))
    }
}

/// Runs several consumers, of any backends, side by side in one process.
///
/// Each consumer is a task of its own and yields after every batch of records, so
/// consumers take turns: a busy stream never holds up an idle one that gets a record,
/// and an idle one costs nothing while it waits. When one consumer stops with an error,
/// the others are shut down cleanly (storing their positions) and the first error is
/// returned.
///
/// ```no_run
/// # use logpipe::{Consumer, MultiConsumer, Registry, embedded::EmbeddedLog, offsets::MemoryOffsetStore};
/// # async fn example(people: Registry, orders: Registry) -> Result<(), logpipe::Error> {
/// let log = EmbeddedLog::open("logpipe.db")?;
/// let store = MemoryOffsetStore::new();
/// let mut multi = MultiConsumer::new();
/// multi.push(Consumer::new(log.consumer(["people"]), store.clone(), people, "crm"));
/// multi.push(Consumer::new(log.consumer(["orders"]), store, orders, "billing"));
/// multi.run(tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
#[derive(Default)]
pub struct MultiConsumer {
    consumers: Vec<Box<dyn RunConsumer>>,
}

impl std::fmt::Debug for MultiConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.consumers.iter().map(|c| c.name()).collect();
        f.debug_struct("MultiConsumer")
            .field("consumers", &names)
            .finish()
    }
}

impl MultiConsumer {
    /// No consumers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a consumer.
    pub fn push<B: ConsumerBackend, S: OffsetStore>(
        &mut self,
        consumer: Consumer<B, S>,
    ) -> &mut Self {
        self.consumers.push(Box::new(consumer));
        self
    }

    /// How many consumers there are.
    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Runs every consumer until `shutdown` is cancelled or one of them fails.
    ///
    /// # Errors
    ///
    /// The first error a consumer stopped with (see [`Consumer::run`]), or
    /// [`Error::Panicked`] when a consumer panicked.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let stop_all = shutdown.child_token();
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        for consumer in self.consumers {
            let name = consumer.name();
            let task = tasks.spawn(consumer.run(stop_all.clone()));
            names.insert(task.id(), name);
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|err| {
                let consumer = names.get(&err.id()).cloned().unwrap_or_default();
                Err(Error::Panicked {
                    consumer,
                    message: panic_message(err),
                })
            });
            if let Err(err) = result {
                tracing::error!(error = %crate::error_chain(&err), "a consumer stopped; stopping the others");
                stop_all.cancel();
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(panic) => crate::catch_panic::panic_message(&*panic),
        Err(err) => err.to_string(),
    }
}
