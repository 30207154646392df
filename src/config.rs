//! Configuration: typed, with defaults, from a TOML file and `LOGPIPE_*` variables.
//!
//! ```toml
//! backend = "sqlite://logpipe.db"     # or "memory://", "kafka://h1:9092", "kinesis://?region=.."
//! offset_store = "sqlite://logpipe.db" # default: the backend's own (see offset_store_url)
//! format = "json"                      # or "msgpack"
//! producer_id = "billing"
//! group_prefix = "prod-"
//! dead_letter_stream = "dead-letters"
//!
//! [consumer]
//! commit_every = 100
//! max_retries = 3
//! on_handler_error = "stop"            # or "dead-letter"
//! on_bad_record = "skip"               # or "dead-letter"
//! min_message_lag_ms = 0
//! concurrency = 1                      # handler calls in flight
//! ordering = "key"                     # or "partition", "unordered"
//!
//! [embedded]                           # the embedded log (logpipe::embedded::EmbeddedOptions)
//! partitions = 4
//!
//! [kafka]                              # for kafka:// (logpipe::kafka::KafkaSettings)
//! topic_prefix = "prod."
//!
//! [kinesis]                            # for kinesis:// (logpipe::kinesis::KinesisOptions)
//! start_at = "trim-horizon"            # or "latest", "at-timestamp" (start_timestamp_ms)
//! write_mode = "batched"               # or "sequence-number-for-ordering"
//! ```
//!
//! Each backend's table is the backend crate's own type, which checks its values and
//! names the key of a bad one; which URL schemes exist is said by [`any`](crate::any).
//!
//! Every key can be set by an environment variable: `LOGPIPE_` and the key in capitals,
//! with `__` between a table and its key (`LOGPIPE_BACKEND`,
//! `LOGPIPE_CONSUMER__MAX_RETRIES`). Variables win over the file. A bad value is an
//! error naming the key, and the variable it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::consumer::ConsumerOptions;
use crate::embedded::EmbeddedOptions;
use crate::envelope::Format;

mod backends;
mod outbox;
mod url;
mod variables;

pub use crate::error::ConfigError;
pub use outbox::OutboxSettings;
pub use url::{BackendUrl, OffsetStoreUrl, OutboxUrl};
use variables::{guess_value, retype_as_string, set_path};

/// The variable naming the configuration file.
pub const CONFIG_FILE_VAR: &str = "LOGPIPE_CONFIG";
/// The file read when neither `--config` nor `LOGPIPE_CONFIG` names one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "logpipe.toml";
const ENV_PREFIX: &str = "LOGPIPE_";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where records live. Default `sqlite://logpipe.db`.
    pub backend: BackendUrl,
    /// Where positions are stored. Default: the backend's own choice (see
    /// [`offset_store_url`](Config::offset_store_url)).
    pub offset_store: Option<OffsetStoreUrl>,
    /// The envelope format producers write. Default `json`.
    pub format: Format,
    /// The producer id written into envelopes. Default none.
    pub producer_id: Option<String>,
    /// Put before every consumer's group name. Default empty.
    pub group_prefix: String,
    /// The stream that dead-letter policies write to. Default none.
    pub dead_letter_stream: Option<String>,
    /// Consumer settings.
    pub consumer: ConsumerOptions,
    /// Embedded log settings, for `sqlite://` and `memory://`.
    pub embedded: EmbeddedOptions,
    /// Kinesis settings, for `kinesis://`.
    #[cfg(feature = "kinesis")]
    pub kinesis: crate::kinesis::KinesisOptions,
    /// Kafka settings, for `kafka://` (the brokers come from the URL).
    #[cfg(feature = "kafka")]
    pub kafka: crate::kafka::KafkaSettings,
    /// Where `run_consumers` serves `/metrics`, `/healthz` and `/readyz`, as `IP:port`.
    /// Default none (not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The transactional outbox that `run_consumers` relays. Default none.
    pub outbox: OutboxSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: "sqlite://logpipe.db".parse().expect("a URL"),
            offset_store: None,
            format: Format::Json,
            producer_id: None,
            group_prefix: String::new(),
            dead_letter_stream: None,
            consumer: ConsumerOptions::default(),
            embedded: EmbeddedOptions::default(),
            #[cfg(feature = "kinesis")]
            kinesis: crate::kinesis::KinesisOptions::default(),
            #[cfg(feature = "kafka")]
            kafka: crate::kafka::KafkaSettings::default(),
            metrics_addr: None,
            outbox: OutboxSettings::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: the file at `path`, else the one `LOGPIPE_CONFIG`
    /// names, else `logpipe.toml` if it exists; then `LOGPIPE_*` variables on top.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the file cannot be read or parsed, or a value is bad.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from))
            .or_else(|| {
                Path::new(DEFAULT_CONFIG_FILE)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_CONFIG_FILE))
            });
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|source| ConfigError::Syntax { path, source })?;
                Some(table)
            }
            None => None,
        };
        Self::from_parts(file.unwrap_or_default(), std::env::vars())
    }

    /// Builds the configuration from a parsed file and environment variables (only
    /// `LOGPIPE_*` ones are read, `LOGPIPE_CONFIG` and the test services'
    /// `LOGPIPE_TEST_*` excepted).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad key.
    ///
    /// ```
    /// use logpipe::config::Config;
    ///
    /// let file: toml::Table = "[consumer]\nmax_retries = 5".parse().unwrap();
    /// let env = [("LOGPIPE_BACKEND".to_string(), "memory://".to_string())];
    /// let config = Config::from_parts(file, env)?;
    /// assert_eq!(config.consumer.max_retries, 5);
    /// assert_eq!(config.backend.as_str(), "memory://");
    ///
    /// let env = [("LOGPIPE_CONSUMER__MAX_RETRIES".to_string(), "many".to_string())];
    /// let err = Config::from_parts(toml::Table::new(), env).unwrap_err();
    /// assert_eq!(err.key(), Some("consumer.max_retries"));
    /// # Ok::<(), logpipe::config::ConfigError>(())
    /// ```
    pub fn from_parts(
        mut table: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Which key each variable set, and the variables whose value must stay text.
        let mut origins: HashMap<String, String> = HashMap::new();
        for (var, value) in env {
            let Some(key) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // `LOGPIPE_TEST_*` name the test services (tests/services), not settings.
            if var == CONFIG_FILE_VAR || key.is_empty() || key.starts_with("TEST_") {
                continue;
            }
            let path: Vec<String> = key
                .to_ascii_lowercase()
                .split("__")
                .map(str::to_owned)
                .collect();
            set_path(&mut table, &path, guess_value(&value)).map_err(|message| {
                ConfigError::Invalid {
                    key: path.join("."),
                    origin: Some(var.clone()),
                    message,
                }
            })?;
            origins.insert(path.join("."), var);
        }
        loop {
            let error = match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(
                table.clone(),
            )) {
                Ok(config) => {
                    config
                        .validate()
                        .map_err(|err| with_origin(err, &origins))?;
                    return Ok(config);
                }
                Err(error) => error,
            };
            let key = error.path().to_string();
            // A variable that looked like a number or boolean may be meant as text
            // (`LOGPIPE_PRODUCER_ID=42`): try it as text before giving up.
            if origins.contains_key(&key) && retype_as_string(&mut table, &key) {
                continue;
            }
            let message = error.into_inner().to_string();
            return Err(with_origin(
                ConfigError::Invalid {
                    key,
                    origin: None,
                    message,
                },
                &origins,
            ));
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.consumer.validate("consumer.")?;
        self.consumer
            .check_producer_id("consumer.", self.producer_id.as_deref())?;
        self.embedded.validate("embedded.")?;
        #[cfg(feature = "kinesis")]
        self.kinesis.validate("kinesis.")?;
        backends::check_urls(&self.backend, self.offset_store.as_ref())?;
        // With the URL's SASL user, if it has one, so that librdkafka checks them together.
        #[cfg(feature = "kafka")]
        match self.backend.as_str() {
            url if url.starts_with("kafka://") => backends::kafka_settings(url, self)?,
            _ => self.kafka.clone(),
        }
        .check("kafka.")?;
        #[cfg(feature = "kinesis")]
        if let Some(url) = &self.kinesis.leases {
            backends::check_lease_store(url.as_str())
                .map_err(|message| ConfigError::invalid("kinesis.leases", message))?;
        }
        self.outbox.validate("outbox.")?;
        if let Some(url) = &self.outbox.url {
            backends::database_at(url.as_str(), "outboxes")
                .map_err(|message| ConfigError::invalid("outbox.url", message))?;
        }
        if self.dead_letter_stream.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "dead_letter_stream",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// Opens the outbox of `outbox.url` (creating its tables if missing), if one is
    /// configured.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `outbox.url` when it cannot be opened.
    pub async fn open_outbox(&self) -> Result<Option<crate::outbox::AnyOutbox>, ConfigError> {
        use crate::outbox::AnyOutbox;
        let Some(url) = &self.outbox.url else {
            return Ok(None);
        };
        let invalid = |message: String| ConfigError::invalid("outbox.url", message);
        let cannot_open = |err: crate::outbox::OutboxError| {
            invalid(format!("cannot open {url}: {}", crate::error_chain(&err)))
        };
        let outbox = match backends::database_at(url.as_str(), "outboxes").map_err(invalid)? {
            backends::DatabaseAt::Sqlite(path) => {
                AnyOutbox::Sqlite(crate::outbox::SqliteOutbox::open(path).map_err(cannot_open)?)
            }
            #[cfg(feature = "postgres")]
            backends::DatabaseAt::Postgres(options) => AnyOutbox::Postgres(
                crate::outbox::PgOutbox::connect(&options)
                    .await
                    .map_err(cannot_open)?,
            ),
        };
        Ok(Some(outbox))
    }

    /// The offset store: the configured one, else the backend's choice: its own SQLite
    /// file for `sqlite://`, memory for `memory://`, the consumer group's commits for
    /// `kafka://`, and `sqlite://logpipe.db` for `kinesis://`.
    pub fn offset_store_url(&self) -> OffsetStoreUrl {
        self.offset_store
            .clone()
            .unwrap_or_else(|| backends::default_offset_store(&self.backend))
    }
}

fn with_origin(error: ConfigError, origins: &HashMap<String, String>) -> ConfigError {
    match error {
        ConfigError::Invalid {
            key,
            origin: None,
            message,
        } => {
            let origin = origins.get(&key).cloned();
            ConfigError::Invalid {
                key,
                origin,
                message,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file_and_no_variables() {
        let config = Config::from_parts(toml::Table::new(), env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.offset_store_url().as_str(), "sqlite://logpipe.db");
    }

    #[test]
    fn variables_override_the_file_and_keep_text_text() {
        let file: toml::Table =
            "backend = \"sqlite://a.db\"\n[consumer]\ncommit_every = 7\nstrict = false"
                .parse()
                .unwrap();
        let config = Config::from_parts(
            file,
            env(&[
                ("LOGPIPE_BACKEND", "memory://"),
                ("LOGPIPE_CONSUMER__STRICT", "true"),
                ("LOGPIPE_PRODUCER_ID", "42"),
                ("LOGPIPE_CONSUMER__ON_BAD_RECORD", "dead-letter"),
                ("LOGPIPE_CONFIG", "ignored.toml"),
                ("LOGPIPE_TEST_KINESIS", "http://127.0.0.1:1"),
                ("LOGPIPE_TEST_KAFKA", "127.0.0.1:29092"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.backend.as_str(), "memory://");
        assert_eq!(config.consumer.commit_every, 7);
        assert!(config.consumer.strict);
        assert_eq!(config.producer_id.as_deref(), Some("42"));
        assert_eq!(
            config.consumer.on_bad_record,
            crate::consumer::BadRecordPolicy::DeadLetter
        );
        assert_eq!(config.offset_store_url().as_str(), "memory://");
    }

    #[test]
    fn concurrency_and_ordering_come_from_the_consumer_table() {
        let file: toml::Table =
            "[consumer]\nconcurrency = 256\nordering = \"partition\"\nbatch_max_records = 50"
                .parse()
                .unwrap();
        let config = Config::from_parts(
            file,
            env(&[("LOGPIPE_CONSUMER__KEYLESS_ORDERING", "unordered")]),
        )
        .unwrap();
        let consumer = &config.consumer;
        assert_eq!(
            (
                consumer.concurrency,
                consumer.ordering,
                consumer.keyless_ordering
            ),
            (
                256,
                crate::consumer::Ordering::Partition,
                crate::consumer::KeylessOrdering::Unordered
            )
        );
        assert_eq!(consumer.batch_max_records, 50);
    }

    #[test]
    fn bad_values_name_their_key_and_variable() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
        let cases: &[Case<'_>] = &[
            ("backend = \"postgres://x\"", &[], "backend", None),
            ("backend = \"sqlite://\"", &[], "backend", None),
            (
                "",
                &[("LOGPIPE_BACKEND", "kafka://app:s3cret@h:9092")],
                "kafka.global.sasl.mechanism",
                None,
            ),
            (
                "[kafka.global]\n\"sasl.mechanism\" = \"PLAIN\"\n\"security.protocol\" = \"PLAINTEXT\"",
                &[("LOGPIPE_BACKEND", "kafka://app:s3cret@h:9092")],
                "kafka.global.security.protocol",
                None,
            ),
            (
                "",
                &[("LOGPIPE_BACKEND", "kafka://app@h:9092")],
                "backend",
                Some("LOGPIPE_BACKEND"),
            ),
            (
                "",
                &[("LOGPIPE_CONSUMER__MAX_RETRIES", "-1")],
                "consumer.max_retries",
                Some("LOGPIPE_CONSUMER__MAX_RETRIES"),
            ),
            (
                "",
                &[("LOGPIPE_FORMAT", "pickle")],
                "format",
                Some("LOGPIPE_FORMAT"),
            ),
            (
                "[consumer]\non_handler_error = \"ignore\"",
                &[],
                "consumer.on_handler_error",
                None,
            ),
            (
                "[consumer]\ncommit_every = 0",
                &[],
                "consumer.commit_every",
                None,
            ),
            (
                "[consumer]\nconcurrency = 0",
                &[],
                "consumer.concurrency",
                None,
            ),
            (
                "",
                &[("LOGPIPE_CONSUMER__ORDERING", "by-key")],
                "consumer.ordering",
                Some("LOGPIPE_CONSUMER__ORDERING"),
            ),
            (
                "[consumer]\nmax_in_flight_per_partition = 0",
                &[],
                "consumer.max_in_flight_per_partition",
                None,
            ),
            (
                "[consumer]\nskip_own_records = true",
                &[],
                "consumer.skip_own_records",
                None,
            ),
            (
                "[embedded]\npartitions = 0",
                &[],
                "embedded.partitions",
                None,
            ),
            (
                "",
                &[("LOGPIPE_EMBEDDED__PARTITIONS", "0")],
                "embedded.partitions",
                Some("LOGPIPE_EMBEDDED__PARTITIONS"),
            ),
            ("backend = \"kinesis://aws\"", &[], "backend", None),
            ("backend = \"kafka://\"", &[], "backend", None),
            ("offset_store = \"kafka://\"", &[], "offset_store", None),
            (
                "offset_store = \"postgres://app:s3cret@db/x?pool_size=0\"",
                &[],
                "offset_store",
                None,
            ),
            (
                "",
                &[(
                    "LOGPIPE_OFFSET_STORE",
                    "postgres://app:s3cret@db/x?sslmode=sometimes",
                )],
                "offset_store",
                Some("LOGPIPE_OFFSET_STORE"),
            ),
            (
                "backend = \"kafka://b:9092\"\n[kafka.producer]\nlinger.ms = \"soon\"",
                &[],
                "kafka.producer.linger.ms",
                None,
            ),
            (
                "",
                &[("LOGPIPE_KAFKA__GLOBAL__NO__SUCH", "1")],
                "kafka.global.no.such",
                Some("LOGPIPE_KAFKA__GLOBAL__NO__SUCH"),
            ),
            (
                "[kafka]\ntopic_partitions = 0",
                &[],
                "kafka.topic_partitions",
                None,
            ),
            (
                "",
                &[("LOGPIPE_KAFKA__REQUEST_TIMEOUT_MS", "0")],
                "kafka.request_timeout_ms",
                Some("LOGPIPE_KAFKA__REQUEST_TIMEOUT_MS"),
            ),
            ("backend = \"kinesis://?zone=eu\"", &[], "backend", None),
            (
                "[kinesis]\nstart_at = \"at-timestamp\"",
                &[],
                "kinesis.start_timestamp_ms",
                None,
            ),
            (
                "",
                &[("LOGPIPE_KINESIS__BATCH_MAX_RECORDS", "501")],
                "kinesis.batch_max_records",
                Some("LOGPIPE_KINESIS__BATCH_MAX_RECORDS"),
            ),
            (
                "[kinesis]\nstart_at = \"earliest\"",
                &[],
                "kinesis.start_at",
                None,
            ),
            (
                "[kinesis]\nmax_records_per_call = 0",
                &[],
                "kinesis.max_records_per_call",
                None,
            ),
            (
                "[kinesis]\nleases = \"memory://\"",
                &[],
                "kinesis.leases",
                None,
            ),
            (
                "[kinesis]\nleases = \"redis://app:s3cret@cache\"",
                &[],
                "kinesis.leases",
                None,
            ),
            (
                "",
                &[("LOGPIPE_KINESIS__LEASE_RENEWAL_MS", "5000")],
                "kinesis.lease_duration_ms",
                None,
            ),
            (
                "[kinesis]\nworker_id = \" \"",
                &[],
                "kinesis.worker_id",
                None,
            ),
        ];
        for (file, vars, key, origin) in cases {
            let err = Config::from_parts(file.parse().unwrap(), env(vars)).unwrap_err();
            let ConfigError::Invalid {
                key: got,
                origin: got_origin,
                ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!(
                (got.as_str(), got_origin.as_deref()),
                (*key, *origin),
                "{file} {vars:?}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn a_lease_store_password_is_never_shown() {
        let file: toml::Table = "[kinesis]\nleases = \"postgres://app:s3cret@db/x\""
            .parse()
            .unwrap();
        let config = Config::from_parts(file, env(&[])).unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("postgres://app:***@db/x"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn an_outbox_is_a_sqlite_file_or_a_postgres_database_with_sane_timings() {
        let file: toml::Table = "[outbox]\nurl = \"postgres://app:s3cret@db/x\"\nbatch_size = 50"
            .parse()
            .unwrap();
        let config = Config::from_parts(file, env(&[])).unwrap();
        assert_eq!(config.outbox.relay_options().batch_size, 50);
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        for (var, value, key) in [
            ("LOGPIPE_OUTBOX__URL", "kafka://h:9092", "outbox.url"),
            ("LOGPIPE_OUTBOX__URL", "memory://", "outbox.url"),
            ("LOGPIPE_OUTBOX__BATCH_SIZE", "0", "outbox.batch_size"),
            (
                "LOGPIPE_OUTBOX__POLL_INTERVAL_MS",
                "20000",
                "outbox.poll_interval_ms",
            ),
        ] {
            let err = Config::from_parts(toml::Table::new(), env(&[(var, value)])).unwrap_err();
            assert_eq!(err.key(), Some(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn each_backend_has_its_default_offset_store() {
        for (backend, store) in [
            ("sqlite://data/log.db", "sqlite://data/log.db"),
            ("memory://", "memory://"),
            ("kafka://h1:9092,h2:9092", "kafka://"),
            ("kinesis://?region=eu-west-1", "sqlite://logpipe.db"),
        ] {
            let config =
                Config::from_parts(toml::Table::new(), env(&[("LOGPIPE_BACKEND", backend)]))
                    .unwrap();
            assert_eq!(config.offset_store_url().as_str(), store, "{backend}");
        }
        let file: toml::Table = "offset_store = \"memory://\"\n[kinesis]\nwrite_mode = \"sequence-number-for-ordering\"\npoll_interval_ms = 50"
            .parse()
            .unwrap();
        let config = Config::from_parts(file, env(&[("LOGPIPE_BACKEND", "kinesis://")])).unwrap();
        assert_eq!(config.offset_store_url().as_str(), "memory://");
        assert_eq!(config.kinesis.poll_interval_ms, 50);
        assert_eq!(
            config.kinesis.write_mode,
            crate::kinesis::KinesisWriteMode::SequenceNumberForOrdering
        );
    }

    #[test]
    fn the_kafka_table_is_read_with_dotted_properties_and_variables() {
        let file: toml::Table = "backend = \"kafka://h1:9092\"\n[kafka]\ntopic_prefix = \"prod.\"\n[kafka.producer]\nlinger.ms = 20"
            .parse()
            .unwrap();
        let config = Config::from_parts(
            file,
            env(&[("LOGPIPE_KAFKA__CONSUMER__SESSION__TIMEOUT__MS", "30000")]),
        )
        .unwrap();
        assert_eq!(config.kafka.topic_prefix, "prod.");
        assert_eq!(config.kafka.producer["linger.ms"], "20");
        assert_eq!(config.kafka.consumer["session.timeout.ms"], "30000");
    }

    #[test]
    fn unknown_keys_are_errors() {
        for (file, vars) in [
            ("colour = 1", &[][..]),
            ("", &[("LOGPIPE_CONSUMER__RETRIES", "1")][..]),
        ] {
            let err = Config::from_parts(file.parse().unwrap(), env(vars)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("unknown field"), "{text}");
        }
    }
}
