//! Running every registered consumer: [`register_consumer!`](crate::register_consumer)
//! and the `run_consumers` program.
//!
//! A service registers each consumer with a function that says what it reads and which
//! handlers it runs:
//!
//! ```no_run
//! use logpipe::config::Config;
//! use logpipe::run::ConsumerSpec;
//! use logpipe::{BoxError, Context, Message, Registry, handler_fn};
//! # #[derive(serde::Serialize, serde::Deserialize, Message)]
//! # #[logpipe(type = "person", version = 1)]
//! # struct PersonV1 { name: String }
//!
//! fn people(_config: &Config) -> Result<ConsumerSpec, BoxError> {
//!     let registry = Registry::builder()
//!         .handle(handler_fn(|person: PersonV1, _: Context| async move {
//!             println!("{}", person.name);
//!             Ok::<_, BoxError>(())
//!         }))
//!         .build()?;
//!     Ok(ConsumerSpec::new(["people"], registry))
//! }
//! logpipe::register_consumer!(people);
//!
//! fn main() -> std::process::ExitCode {
//!     logpipe::cli::run_consumers_main()
//! }
//! ```

use tokio_util::sync::CancellationToken;

use crate::BoxError;
use crate::backend::Backend;
use crate::config::Config;
use crate::consumer::Consumer;
use crate::dead_letter::DeadLetter;
use crate::error::Error;
use crate::health::Health;
use crate::multi::MultiConsumer;
use crate::outbox::Relay;
use crate::registry::Registry;

/// What a registered consumer reads and which handlers it runs.
#[derive(Debug)]
pub struct ConsumerSpec {
    streams: Vec<String>,
    registry: Registry,
    group: Option<String>,
}

impl ConsumerSpec {
    /// Reads `streams` with the handlers of `registry`. The consumer group is the name
    /// the consumer was registered under, unless [`with_group`](Self::with_group) says
    /// otherwise.
    ///
    /// A consumer given no streams is turned off: it is not run, which lets a service
    /// run a consumer only when its configuration asks for it.
    pub fn new<I, S>(streams: I, registry: Registry) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            streams: streams.into_iter().map(Into::into).collect(),
            registry,
            group: None,
        }
    }

    /// Uses `group` as the consumer group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// A consumer registered with [`register_consumer!`](crate::register_consumer).
#[derive(Debug)]
pub struct Registration {
    name: &'static str,
    build: fn(&Config) -> Result<ConsumerSpec, BoxError>,
}

impl Registration {
    /// A registration named `name`, built by `build`. Use the macro instead.
    pub const fn new(
        name: &'static str,
        build: fn(&Config) -> Result<ConsumerSpec, BoxError>,
    ) -> Self {
        Self { name, build }
    }

    /// The name it was registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

inventory::collect!(Registration);

/// Registers a consumer for [`run_registered`] and `run_consumers`, built by a function
/// `fn(&Config) -> Result<ConsumerSpec, BoxError>` when they start.
///
/// `register_consumer!(people)` registers it under the function's name;
/// `register_consumer!("crm-people", people)` under another name. Names must be unique.
#[macro_export]
macro_rules! register_consumer {
    ($build:ident) => {
        $crate::register_consumer!(::core::stringify!($build), $build);
    };
    ($name:expr, $build:expr) => {
        $crate::__private::inventory::submit! {
            $crate::run::Registration::new($name, $build)
        }
    };
}

/// Every registered consumer, sorted by name.
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|registration| registration.name);
    all
}

/// Builds every registered consumer from `config` and runs them until `shutdown` is
/// cancelled; then each finishes the record in hand and stores its positions.
///
/// # Errors
///
/// [`Error::NothingToRun`] when no consumer is registered or none reads a stream;
/// [`Error::Build`] when a consumer cannot be built or two share a name;
/// [`Error::Backend`] when the configured backend cannot be opened, [`Error::Config`]
/// naming `offset_store` when the store cannot; otherwise the first error a consumer stopped with.
pub async fn run_registered(config: &Config, shutdown: CancellationToken) -> Result<(), Error> {
    run_registered_with_health(config, shutdown, &Health::new()).await
}

/// [`run_registered`], each consumer reporting its state to `health` under its
/// registered name.
///
/// # Errors
///
/// As [`run_registered`].
pub async fn run_registered_with_health(
    config: &Config,
    shutdown: CancellationToken,
    health: &Health,
) -> Result<(), Error> {
    let backend = config.open_backend()?;
    let outbox = config.open_outbox().await?;
    let relay = outbox.map(|outbox| {
        tracing::info!(outbox = %config.outbox.url.as_ref().expect("an outbox has a URL"), backend = %config.backend, "starting the outbox relay");
        Relay::new(outbox, backend.clone())
            .with_options(config.outbox.relay_options())
            .with_health(health.register(RELAY_NAME))
    });
    let registrations = registered();
    if registrations.is_empty() {
        return match relay {
            Some(relay) => {
                relay.run(shutdown).await;
                Ok(())
            }
            None => Err(Error::NothingToRun(
                "no consumers are registered: link code that calls logpipe::register_consumer!",
            )),
        };
    }
    let store = config.open_offset_store(&backend).await?;
    config.probe_lease_store(&backend).await?;
    let mut multi = MultiConsumer::new();
    for pair in registrations.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(Error::Build {
                consumer: pair[0].name.to_owned(),
                source: "two consumers share this name".into(),
            });
        }
    }
    for registration in registrations {
        let spec = (registration.build)(config).map_err(|source| Error::Build {
            consumer: registration.name.to_owned(),
            source,
        })?;
        if spec.streams.is_empty() {
            tracing::info!(
                consumer = registration.name,
                "consumer reads no streams; not run"
            );
            continue;
        }
        let group = format!(
            "{}{}",
            config.group_prefix,
            spec.group.as_deref().unwrap_or(registration.name)
        );
        let group = backend.position_group(&group);
        tracing::info!(consumer = registration.name, %group, streams = ?spec.streams, backend = %config.backend, "starting consumer");
        let mut consumer = Consumer::new(
            backend.consumer(&group, &spec.streams)?,
            store.clone(),
            spec.registry,
            group,
        )
        .with_options(config.consumer.clone())
        .with_health(health.register(registration.name));
        if let Some(producer_id) = &config.producer_id {
            consumer = consumer.with_producer_id(producer_id.as_str());
        }
        if let Some(stream) = &config.dead_letter_stream {
            consumer = consumer.with_dead_letter(DeadLetter::new(backend.clone(), stream.as_str()));
        }
        multi.push(consumer);
    }
    let Some(relay) = relay else {
        if multi.is_empty() {
            return Err(Error::NothingToRun(
                "every registered consumer reads no streams",
            ));
        }
        return multi.run(shutdown).await;
    };
    // The relay stops with the consumers, also when one of them fails.
    let stop_relay = shutdown.child_token();
    let relaying = tokio::spawn(relay.run(stop_relay.clone()));
    let outcome = if multi.is_empty() {
        shutdown.cancelled().await;
        Ok(())
    } else {
        multi.run(shutdown).await
    };
    stop_relay.cancel();
    let _ = relaying.await;
    outcome
}

/// The name under which the outbox relay reports its health.
const RELAY_NAME: &str = "outbox-relay";

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM. Call it inside a Tokio runtime.
///
/// # Errors
///
/// An I/O error when the signal handlers cannot be installed.
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Both handlers are installed before this returns, so no signal is missed.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            }
            cancel.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received; shutting down");
            cancel.cancel();
        }
    });
    Ok(token)
}
