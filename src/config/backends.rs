//! The one list of the backends this build has, and of the offset stores: each entry
//! names a URL scheme, the backend crate behind it and the configuration table it reads.
//! It is the only code of this crate that knows which backends exist.
//!
//! Adding a backend takes a crate under `backends/` that implements the contract of
//! `logpipe-core` (and runs its conformance suites), one entry in `BACKENDS` (and in
//! `OFFSET_STORES` if it keeps positions), one field of [`Config`] for its table, and a
//! feature. An offset store alone (PostgreSQL) takes a crate and an entry in
//! `OFFSET_STORES`.

use futures_util::future::BoxFuture;
use logpipe_core::{BackendError, BackendErrorKind, MemoryOffsetStore, StoreError, error_chain};
use logpipe_sqlite::{EmbeddedLog, SqliteOffsetStore, SqliteUrl};

use super::{BackendUrl, Config, ConfigError, OffsetStoreUrl};
use crate::any::{AnyBackend, AnyOffsetStore};

/// A backend this build can open: its URL scheme, and how to check a URL of it, open it
/// with the configuration's settings, and pick the offset store it uses by default.
struct BackendEntry {
    scheme: &'static str,
    /// What is wrong with a URL of this scheme, if anything.
    check: fn(&str) -> Result<(), String>,
    open: fn(&str, &Config) -> Result<AnyBackend, BackendError>,
    /// The `offset_store` of a backend at this URL when the configuration names none.
    default_store: fn(&str) -> String,
}

/// An offset store this build can open: its URL scheme, how to check a URL of it (given
/// the backend's URL), and how to open it (given the backend, for a store that lives
/// in it).
struct StoreEntry {
    scheme: &'static str,
    check: fn(&str, &BackendUrl) -> Result<(), String>,
    open: fn(&str, &AnyBackend) -> BoxFuture<'static, Result<AnyOffsetStore, StoreError>>,
}

/// A store opened at once, as the open function of a [`StoreEntry`].
fn opened(
    store: Result<AnyOffsetStore, StoreError>,
) -> BoxFuture<'static, Result<AnyOffsetStore, StoreError>> {
    Box::pin(std::future::ready(store))
}

/// The PostgreSQL store: connects, and creates its tables if they are missing.
#[cfg(feature = "postgres")]
fn postgres_store(
    url: &str,
    _: &AnyBackend,
) -> BoxFuture<'static, Result<AnyOffsetStore, StoreError>> {
    let options: Result<logpipe_postgres::PgStoreOptions, _> = url.parse();
    Box::pin(async move {
        // Checked when the configuration was read, unless changed since.
        let options = options.map_err(|reason| StoreError::Database {
            store: "PostgreSQL",
            source: reason.into(),
        })?;
        Ok(AnyOffsetStore::new(
            logpipe_postgres::PgOffsetStore::connect(&options).await?,
        ))
    })
}

/// A store left out of this build by its feature: its URLs are refused, saying so.
#[cfg(not(feature = "postgres"))]
const fn store_not_built(scheme: &'static str) -> StoreEntry {
    StoreEntry {
        scheme,
        check: |url, _| {
            Err(format!(
                "{:?}: this program was built without the feature of this offset store",
                logpipe_core::redact_url(url)
            ))
        },
        open: |_, _| unreachable!("refused when the configuration was read"),
    }
}

/// A backend left out of this build by its feature: its URLs are refused, saying so.
#[cfg(not(all(feature = "kafka", feature = "kinesis")))]
const fn not_built(scheme: &'static str) -> BackendEntry {
    BackendEntry {
        scheme,
        check: |url| {
            Err(format!(
                "{url:?}: this program was built without the feature of this backend"
            ))
        },
        open: |url, _| {
            Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("{url:?}: this program was built without the feature of this backend"),
            ))
        },
        default_store: |_| "memory://".to_owned(),
    }
}

/// The URL of the lease store of a Kinesis backend's consumer groups: `[kinesis] leases`,
/// else the offset store when it is a SQLite file or PostgreSQL; none otherwise (every
/// consumer then reads every shard).
#[cfg(feature = "kinesis")]
fn lease_store_url(config: &Config) -> Option<String> {
    if let Some(url) = &config.kinesis.leases {
        return Some(url.as_str().to_owned());
    }
    let store = config.offset_store_url();
    matches!(store.scheme(), "sqlite" | "postgres" | "postgresql")
        .then(|| store.as_str().to_owned())
}

/// A database a URL names, for leases or an outbox: a SQLite file or a PostgreSQL
/// database.
pub(crate) enum DatabaseAt {
    Sqlite(std::path::PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(Box<logpipe_postgres::PgStoreOptions>),
}

/// The database `url` names, or what is wrong with it; `what` says what it is for
/// (`leases`).
pub(crate) fn database_at(url: &str, what: &str) -> Result<DatabaseAt, String> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => match SqliteUrl::parse(url)? {
            SqliteUrl::File(path) => Ok(DatabaseAt::Sqlite(path)),
            _ => Err(format!("{url:?} is not sqlite://PATH")),
        },
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => url
            .parse()
            .map(|options| DatabaseAt::Postgres(Box::new(options))),
        _ => Err(format!(
            "{:?}: {what} are kept in sqlite://PATH or postgres://..",
            logpipe_core::redact_url(url)
        )),
    }
}

/// Whether the Kinesis lease store is the offset store's database (as by default),
/// where positions are stored under the leases' counters.
#[cfg(feature = "kinesis")]
fn leases_beside_positions(config: &Config) -> bool {
    let Some(leases) = &config.kinesis.leases else {
        return true;
    };
    let offsets = config.offset_store_url();
    match (
        database_at(leases.as_str(), "leases"),
        database_at(offsets.as_str(), "leases"),
    ) {
        (Ok(DatabaseAt::Sqlite(a)), Ok(DatabaseAt::Sqlite(b))) => {
            std::path::absolute(a).ok() == std::path::absolute(b).ok()
        }
        #[cfg(feature = "postgres")]
        (Ok(DatabaseAt::Postgres(a)), Ok(DatabaseAt::Postgres(b))) => a.same_tables(&b),
        _ => false,
    }
}

/// What is wrong with `url` as a lease store, if anything.
#[cfg(feature = "kinesis")]
pub(super) fn check_lease_store(url: &str) -> Result<(), String> {
    database_at(url, "leases").map(drop)
}

/// Opens the lease store of a Kinesis backend's consumer groups, if it has one
/// ([`lease_store_url`]). A PostgreSQL store connects on first use.
#[cfg(feature = "kinesis")]
fn open_lease_store(
    config: &Config,
) -> Result<Option<logpipe_core::leases::AnyLeaseStore>, BackendError> {
    use logpipe_core::leases::AnyLeaseStore;
    let Some(url) = lease_store_url(config) else {
        return Ok(None);
    };
    let at = database_at(&url, "leases").map_err(|message| {
        BackendError::new(
            BackendErrorKind::Rejected,
            format!("kinesis.leases: {message}"),
        )
    })?;
    match at {
        #[cfg(feature = "postgres")]
        DatabaseAt::Postgres(options) => {
            let store = logpipe_postgres::PgOffsetStore::connect_lazy(&options);
            Ok(Some(AnyLeaseStore::new(store.leases())))
        }
        DatabaseAt::Sqlite(path) => logpipe_sqlite::SqliteLeaseStore::open(path)
            .map(|store| Some(AnyLeaseStore::new(store)))
            .map_err(|err| {
                BackendError::new(BackendErrorKind::Storage, "kinesis.leases: cannot open")
                    .with_source(err)
            }),
    }
}

fn embedded_log(url: &str, config: &Config) -> Result<AnyBackend, BackendError> {
    let log = match SqliteUrl::parse(url)
        .map_err(|m| BackendError::new(BackendErrorKind::Rejected, m))?
    {
        SqliteUrl::File(path) => EmbeddedLog::open_with(path, config.embedded.clone())?,
        _ => EmbeddedLog::open_in_memory_with(config.embedded.clone())?,
    };
    Ok(AnyBackend::new(log))
}

/// The `[kafka]` settings for the `kafka://` backend `url`: its brokers and SASL user.
///
/// # Errors
///
/// The key to change, when the URL is bad or its user cannot be used with the settings.
#[cfg(feature = "kafka")]
pub(super) fn kafka_settings(
    url: &str,
    config: &Config,
) -> Result<logpipe_kafka::KafkaSettings, ConfigError> {
    let url = logpipe_kafka::KafkaUrl::parse(url)
        .map_err(|message| ConfigError::invalid("backend", message))?;
    Ok(config.kafka.clone().with_url(&url, "backend", "kafka.")?)
}

/// Every backend, by URL scheme.
const BACKENDS: &[BackendEntry] = &[
    BackendEntry {
        scheme: "sqlite",
        check: |url| SqliteUrl::parse(url).map(drop),
        open: embedded_log,
        default_store: str::to_owned,
    },
    BackendEntry {
        scheme: "memory",
        check: |url| SqliteUrl::parse(url).map(drop),
        open: embedded_log,
        default_store: |_| "memory://".to_owned(),
    },
    #[cfg(feature = "kafka")]
    BackendEntry {
        scheme: "kafka",
        check: |url| logpipe_kafka::KafkaUrl::parse(url).map(drop),
        open: |url, config| {
            let settings = kafka_settings(url, config)
                .map_err(|err| BackendError::new(BackendErrorKind::Rejected, err.to_string()))?;
            Ok(AnyBackend::new(logpipe_kafka::KafkaClient::connect(
                settings,
            )?))
        },
        default_store: |_| "kafka://".to_owned(),
    },
    #[cfg(not(feature = "kafka"))]
    not_built("kafka"),
    #[cfg(feature = "kinesis")]
    BackendEntry {
        scheme: "kinesis",
        check: |url| logpipe_kinesis::KinesisUrl::parse(url).map(drop),
        open: |url, config| {
            let url = logpipe_kinesis::KinesisUrl::parse(url)
                .map_err(|m| BackendError::new(BackendErrorKind::Rejected, m))?;
            let mut backend =
                logpipe_kinesis::KinesisBackend::connect_url(&url, config.kinesis.clone())?;
            if let Some(store) = open_lease_store(config)? {
                backend = backend
                    .with_leases(store)
                    .fencing_positions(leases_beside_positions(config));
            }
            Ok(AnyBackend::new(backend))
        },
        default_store: |_| "sqlite://logpipe.db".to_owned(),
    },
    #[cfg(not(feature = "kinesis"))]
    not_built("kinesis"),
];

/// Every offset store, by URL scheme.
const OFFSET_STORES: &[StoreEntry] = &[
    StoreEntry {
        scheme: "sqlite",
        check: |url, _| match SqliteUrl::parse(url)? {
            SqliteUrl::File(_) => Ok(()),
            _ => Err(format!("{url:?} is not sqlite://PATH")),
        },
        open: |url, _| match SqliteUrl::parse(url) {
            Ok(SqliteUrl::File(path)) => {
                opened(SqliteOffsetStore::open(path).map(AnyOffsetStore::new))
            }
            _ => unreachable!("checked when the configuration was read"),
        },
    },
    StoreEntry {
        scheme: "memory",
        check: |url, _| SqliteUrl::parse(url).map(drop),
        open: |_, _| opened(Ok(AnyOffsetStore::new(MemoryOffsetStore::new()))),
    },
    #[cfg(feature = "postgres")]
    StoreEntry {
        scheme: "postgres",
        check: |url, _| url.parse::<logpipe_postgres::PgStoreOptions>().map(drop),
        open: postgres_store,
    },
    #[cfg(feature = "postgres")]
    StoreEntry {
        scheme: "postgresql",
        check: |url, _| url.parse::<logpipe_postgres::PgStoreOptions>().map(drop),
        open: postgres_store,
    },
    #[cfg(not(feature = "postgres"))]
    store_not_built("postgres"),
    #[cfg(not(feature = "postgres"))]
    store_not_built("postgresql"),
    #[cfg(feature = "kafka")]
    StoreEntry {
        scheme: "kafka",
        check: |url, backend| {
            if url != "kafka://" {
                return Err(
                    "kafka:// takes nothing after the scheme: the brokers are the backend's"
                        .to_owned(),
                );
            }
            if backend.scheme() != "kafka" {
                return Err(
                    "kafka:// stores positions in a Kafka consumer group; it needs a kafka:// backend"
                        .to_owned(),
                );
            }
            Ok(())
        },
        open: |_, backend| {
            let client = backend
                .downcast_ref::<logpipe_kafka::KafkaClient>()
                .expect("checked when the configuration was read");
            opened(Ok(AnyOffsetStore::new(client.offsets())))
        },
    },
];

fn backend_entry(url: &BackendUrl) -> Option<&'static BackendEntry> {
    BACKENDS.iter().find(|entry| entry.scheme == url.scheme())
}

fn schemes<T>(entries: &[T], scheme: fn(&T) -> &'static str) -> String {
    entries
        .iter()
        .map(|entry| format!("{}://", scheme(entry)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the backend URL and the offset store URL of a configuration.
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming `backend` or `offset_store`.
pub(super) fn check_urls(
    backend: &BackendUrl,
    store: Option<&OffsetStoreUrl>,
) -> Result<(), ConfigError> {
    let entry = backend_entry(backend).ok_or_else(|| {
        ConfigError::invalid(
            "backend",
            format!(
                "unknown backend {:?} (expected {})",
                backend.scheme(),
                schemes(BACKENDS, |e| e.scheme)
            ),
        )
    })?;
    (entry.check)(backend.as_str()).map_err(|message| ConfigError::invalid("backend", message))?;
    if let Some(store) = store {
        let entry = OFFSET_STORES
            .iter()
            .find(|entry| entry.scheme == store.scheme())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "offset_store",
                    format!(
                        "unknown offset store {:?} (expected {})",
                        store.scheme(),
                        schemes(OFFSET_STORES, |e| e.scheme)
                    ),
                )
            })?;
        (entry.check)(store.as_str(), backend)
            .map_err(|message| ConfigError::invalid("offset_store", message))?;
    }
    Ok(())
}

/// The offset store of a backend at `backend` when the configuration names none.
pub(super) fn default_offset_store(backend: &BackendUrl) -> OffsetStoreUrl {
    let url = backend_entry(backend).map_or_else(
        || "memory://".to_owned(),
        |entry| (entry.default_store)(backend.as_str()),
    );
    url.parse().expect("the list names URLs")
}

impl Config {
    /// Opens the backend this configuration names, with its table's settings.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when it cannot be opened.
    pub fn open_backend(&self) -> Result<AnyBackend, BackendError> {
        let entry = backend_entry(&self.backend).ok_or_else(|| {
            BackendError::new(
                BackendErrorKind::Rejected,
                format!("unknown backend {}", self.backend),
            )
        })?;
        (entry.open)(self.backend.as_str(), self)
    }

    /// Checks that the lease store of a Kinesis backend (`[kinesis] leases`, or the
    /// offset store's database), if it has one, answers, so that a wrong address or
    /// password fails at start-up rather than at every renewal; warns when it is not the
    /// offset store's database, whose positions are then not fenced by the lease counter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `kinesis.leases` (its URL shown without the
    /// password) when the store cannot be read.
    pub async fn probe_lease_store(&self, backend: &AnyBackend) -> Result<(), ConfigError> {
        #[cfg(feature = "kinesis")]
        if let Some(store) = backend
            .downcast_ref::<logpipe_kinesis::KinesisBackend>()
            .and_then(logpipe_kinesis::KinesisBackend::lease_store)
        {
            use logpipe_core::leases::LeaseStore;
            store.leases("", &[]).await.map_err(|err| {
                let url = lease_store_url(self).unwrap_or_default();
                ConfigError::invalid(
                    "kinesis.leases",
                    format!(
                        "cannot open {}: {}",
                        logpipe_core::redact_url(&url),
                        error_chain(&err)
                    ),
                )
            })?;
            if let Some(leases) = &self.kinesis.leases
                && !leases_beside_positions(self)
            {
                tracing::warn!(
                    leases = %logpipe_core::redact_url(leases.as_str()),
                    offset_store = %logpipe_core::redact_url(self.offset_store_url().as_str()),
                    "kinesis.leases is not the offset store's database: positions are fenced by their order only, not by the lease counter (leave kinesis.leases unset, or point both at one database)"
                );
            }
        }
        #[cfg(not(feature = "kinesis"))]
        let _ = backend;
        Ok(())
    }

    /// Opens the offset store this configuration names (else the backend's default,
    /// [`offset_store_url`](Self::offset_store_url)), sharing `backend` where the store
    /// lives in it (Kafka consumer-group commits).
    ///
    /// A store in a database server connects here, so that a wrong address or password
    /// fails at start-up.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `offset_store` (its URL shown without the
    /// password) when it cannot be opened.
    pub async fn open_offset_store(
        &self,
        backend: &AnyBackend,
    ) -> Result<AnyOffsetStore, ConfigError> {
        let url = self.offset_store_url();
        let cannot_open = |reason: String| {
            ConfigError::invalid("offset_store", format!("cannot open {url}: {reason}"))
        };
        let entry = OFFSET_STORES
            .iter()
            .find(|entry| entry.scheme == url.scheme())
            .ok_or_else(|| cannot_open("unknown offset store".to_owned()))?;
        (entry.open)(url.as_str(), backend)
            .await
            .map_err(|err| cannot_open(error_chain(&err)))
    }
}

#[cfg(all(test, feature = "kinesis", feature = "postgres"))]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::from_parts(toml::Table::new(), env).unwrap()
    }

    #[test]
    fn positions_are_fenced_by_lease_counters_only_where_the_leases_share_their_database() {
        let kinesis = ("LOGPIPE_BACKEND", "kinesis://?region=us-east-1");
        let pg = "postgres://app:a@db.internal:5432/crm?schema=logpipe";
        for (pairs, beside) in [
            (vec![kinesis], true),
            (
                vec![
                    kinesis,
                    ("LOGPIPE_KINESIS__LEASES", "sqlite://./logpipe.db"),
                ],
                true,
            ),
            (
                vec![kinesis, ("LOGPIPE_KINESIS__LEASES", "sqlite://leases.db")],
                false,
            ),
            (
                vec![
                    kinesis,
                    ("LOGPIPE_OFFSET_STORE", pg),
                    (
                        "LOGPIPE_KINESIS__LEASES",
                        "postgres://other:b@db.internal/crm?schema=logpipe&pool_size=2",
                    ),
                ],
                true,
            ),
            (
                vec![
                    kinesis,
                    ("LOGPIPE_OFFSET_STORE", pg),
                    (
                        "LOGPIPE_KINESIS__LEASES",
                        "postgres://app:a@db.internal/crm?schema=leases",
                    ),
                ],
                false,
            ),
            (
                vec![
                    kinesis,
                    ("LOGPIPE_OFFSET_STORE", pg),
                    ("LOGPIPE_KINESIS__LEASES", "sqlite://logpipe.db"),
                ],
                false,
            ),
        ] {
            assert_eq!(
                leases_beside_positions(&config(&pairs)),
                beside,
                "{pairs:?}"
            );
        }
    }
}
