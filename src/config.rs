//! Configuration: typed, with defaults, from a TOML file and `LOGPIPE_*` variables.
//!
//! ```toml
//! backend = "sqlite://logpipe.db"     # or "memory://"
//! offset_store = "sqlite://logpipe.db" # default: the backend's own file, or memory
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
//!
//! [embedded]
//! partitions = 4
//!
//! [kinesis]                            # for backend = "kinesis://?region=..&endpoint=.."
//! start_at = "trim-horizon"            # or "latest", "at-timestamp" (start_timestamp_ms)
//! write_mode = "batched"               # or "sequence-number-for-ordering"
//! ```
//!
//! With `backend = "kafka://h1:9092,h2:9092"` the `[kafka]` table applies (see
//! [`KafkaOptions`]); positions are then committed to the consumer group unless
//! `offset_store` names another store.
//!
//! Every key can be set by an environment variable: `LOGPIPE_` and the key in capitals,
//! with `__` between a table and its key (`LOGPIPE_BACKEND`,
//! `LOGPIPE_CONSUMER__MAX_RETRIES`). Variables win over the file. A bad value is an
//! error naming the key, and the variable it came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::consumer::ConsumerOptions;
use crate::embedded::EmbeddedOptions;
use crate::envelope::Format;
use crate::kinesis::KinesisOptions;

/// The variable naming the configuration file.
pub const CONFIG_FILE_VAR: &str = "LOGPIPE_CONFIG";
/// The file read when neither `--config` nor `LOGPIPE_CONFIG` names one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "logpipe.toml";
const ENV_PREFIX: &str = "LOGPIPE_";
/// Where a Kinesis backend stores positions unless `offset_store` says otherwise.
const DEFAULT_KINESIS_OFFSET_STORE: &str = "logpipe.db";

/// An error in the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the config file {path} is not valid TOML")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// A key has a bad value (or is unknown).
    #[error("invalid config key `{key}`{}: {message}", origin.as_ref().map(|var| format!(" (set by {var})")).unwrap_or_default())]
    Invalid {
        /// The key, such as `consumer.max_retries`.
        key: String,
        /// The environment variable that set it, if one did.
        origin: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A bad value of `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            origin: None,
            message: message.into(),
        }
    }

    /// The key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Where records live, chosen by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendUrl {
    /// `sqlite://PATH`: the embedded log in a SQLite file.
    Sqlite(PathBuf),
    /// `memory://`: the embedded log in memory.
    Memory,
    /// `kinesis://?region=REGION&endpoint=URL`: AWS Kinesis. Both parameters are
    /// optional: the region defaults to `AWS_REGION`, the endpoint to AWS's.
    Kinesis {
        /// The AWS region.
        region: Option<String>,
        /// Another endpoint than AWS's, such as an emulator.
        endpoint: Option<String>,
    },
    /// `kafka://HOST:PORT,HOST:PORT`: an Apache Kafka cluster, by its bootstrap brokers.
    Kafka(String),
}

/// Where positions are stored, chosen by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetStoreUrl {
    /// `sqlite://PATH`: the SQLite store.
    Sqlite(PathBuf),
    /// `memory://`: positions are forgotten when the process ends.
    Memory,
    /// `kafka://`: committed to the Kafka consumer group (with a `kafka://` backend only).
    Kafka,
}

fn split_url(url: &str) -> Result<(&str, &str), String> {
    url.split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL like sqlite://PATH or memory://"))
}

fn sqlite_path(rest: &str) -> Result<PathBuf, String> {
    if rest.is_empty() {
        return Err("sqlite:// needs a file path, such as sqlite://logpipe.db".to_owned());
    }
    Ok(PathBuf::from(rest))
}

impl FromStr for BackendUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        match split_url(url)? {
            ("sqlite", rest) => Ok(BackendUrl::Sqlite(sqlite_path(rest)?)),
            ("memory", "") => Ok(BackendUrl::Memory),
            ("kinesis", rest) => kinesis_url(rest),
            ("kafka", brokers) => {
                let brokers = brokers.trim_end_matches('/');
                if brokers.is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
                    return Err(
                        "kafka:// needs brokers, such as kafka://h1:9092,h2:9092".to_owned()
                    );
                }
                Ok(BackendUrl::Kafka(brokers.to_owned()))
            }
            (scheme, _) => Err(format!(
                "unknown backend {scheme:?} (expected sqlite://, memory://, kafka:// or kinesis://)"
            )),
        }
    }
}

impl FromStr for OffsetStoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        match split_url(url)? {
            ("sqlite", rest) => Ok(OffsetStoreUrl::Sqlite(sqlite_path(rest)?)),
            ("memory", "") => Ok(OffsetStoreUrl::Memory),
            ("kafka", "") => Ok(OffsetStoreUrl::Kafka),
            (scheme, _) => Err(format!(
                "unknown offset store {scheme:?} (expected sqlite://, memory:// or kafka://)"
            )),
        }
    }
}

/// The part of `kinesis://?region=..&endpoint=..` after the scheme.
fn kinesis_url(rest: &str) -> Result<BackendUrl, String> {
    let query = match rest.split_once('?') {
        Some(("", query)) => query,
        None if rest.is_empty() => "",
        _ => {
            return Err(format!(
                "kinesis://{rest} has a host; use kinesis://?region=REGION&endpoint=URL"
            ));
        }
    };
    let (mut region, mut endpoint) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("kinesis:// parameter {pair:?} has no value"))?;
        if value.is_empty() {
            return Err(format!("kinesis:// parameter {name:?} is empty"));
        }
        match name {
            "region" => region = Some(value.to_owned()),
            "endpoint" => endpoint = Some(value.to_owned()),
            _ => {
                return Err(format!(
                    "unknown kinesis:// parameter {name:?} (expected region or endpoint)"
                ));
            }
        }
    }
    Ok(BackendUrl::Kinesis { region, endpoint })
}

macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(BackendUrl, OffsetStoreUrl);

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            BackendUrl::Memory => f.write_str("memory://"),
            BackendUrl::Kinesis { region, endpoint } => {
                f.write_str("kinesis://")?;
                let params: Vec<String> = [("region", region), ("endpoint", endpoint)]
                    .into_iter()
                    .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
                    .collect();
                if !params.is_empty() {
                    write!(f, "?{}", params.join("&"))?;
                }
                Ok(())
            }
            BackendUrl::Kafka(brokers) => write!(f, "kafka://{brokers}"),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where records live. Default `sqlite://logpipe.db`.
    pub backend: BackendUrl,
    /// Where positions are stored. Default: the backend's SQLite file, or memory for
    /// `memory://`.
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
    /// Embedded log settings.
    pub embedded: EmbeddedOptions,
    /// Kinesis settings.
    pub kinesis: KinesisOptions,
    /// Kafka settings, for a `kafka://` backend.
    pub kafka: KafkaOptions,
    /// Where `run_consumers` serves `/metrics`, `/healthz` and `/readyz`, as `IP:port`.
    /// Default none (not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Settings of the Kafka backend: the keys of the `[kafka]` table.
///
/// ```toml
/// [kafka]
/// topic_prefix = "prod."      # stream "people" is topic "prod.people"
/// create_topics = false       # true: create missing topics instead of failing
/// topic_partitions = -1       # of created topics; -1: the broker's default
/// topic_replication = -1      # of created topics; -1: the broker's default
///
/// [kafka.global]              # librdkafka properties of every client
/// "security.protocol" = "SASL_SSL"
/// [kafka.producer]            # of producers, on top of global
/// linger.ms = 20              # dotted keys are joined again: `linger.ms`
/// [kafka.consumer]            # of consumers, on top of global
/// "session.timeout.ms" = 30000
/// ```
///
/// A variable sets a property too: `LOGPIPE_KAFKA__PRODUCER__LINGER__MS=20`. Properties
/// are checked by librdkafka at start-up; a bad one is an error naming its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaOptions {
    /// Put before every stream name to make its topic name. Default empty.
    pub topic_prefix: String,
    /// Create missing topics instead of failing. Default false.
    pub create_topics: bool,
    /// Partitions of created topics; -1 for the broker's default. Default -1.
    pub topic_partitions: i32,
    /// Replication factor of created topics; -1 for the broker's default. Default -1.
    pub topic_replication: i32,
    /// librdkafka properties of every client.
    #[serde(deserialize_with = "librdkafka_properties")]
    pub global: BTreeMap<String, String>,
    /// librdkafka properties of producers.
    #[serde(deserialize_with = "librdkafka_properties")]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties of consumers.
    #[serde(deserialize_with = "librdkafka_properties")]
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            topic_prefix: String::new(),
            create_topics: false,
            topic_partitions: -1,
            topic_replication: -1,
            global: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

/// Reads a table of librdkafka properties: nested tables are joined with dots, and
/// numbers and booleans become text.
fn librdkafka_properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    fn flatten(
        prefix: &str,
        table: toml::Table,
        out: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Table(inner) => {
                    flatten(&key, inner, out)?;
                    continue;
                }
                other => {
                    return Err(format!(
                        "`{key}`: {} is not a property value",
                        other.type_str()
                    ));
                }
            };
            out.insert(key, text);
        }
        Ok(())
    }
    let table = toml::Table::deserialize(deserializer)?;
    let mut out = BTreeMap::new();
    flatten("", table, &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: BackendUrl::Sqlite(PathBuf::from("logpipe.db")),
            offset_store: None,
            format: Format::Json,
            producer_id: None,
            group_prefix: String::new(),
            dead_letter_stream: None,
            consumer: ConsumerOptions::default(),
            embedded: EmbeddedOptions::default(),
            kinesis: KinesisOptions::default(),
            kafka: KafkaOptions::default(),
            metrics_addr: None,
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
    /// assert_eq!(config.backend, logpipe::config::BackendUrl::Memory);
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
        self.kinesis.validate("kinesis.")?;
        if self.embedded.partitions == 0 {
            return Err(ConfigError::invalid(
                "embedded.partitions",
                "must be at least 1",
            ));
        }
        if self.embedded.max_poll_records == 0 {
            return Err(ConfigError::invalid(
                "embedded.max_poll_records",
                "must be at least 1",
            ));
        }
        self.validate_kafka()?;
        if self.dead_letter_stream.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "dead_letter_stream",
                "must not be empty",
            ));
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let kafka_backend = matches!(self.backend, BackendUrl::Kafka(_));
        if self.offset_store == Some(OffsetStoreUrl::Kafka) && !kafka_backend {
            return Err(ConfigError::invalid(
                "offset_store",
                "kafka:// stores positions in a Kafka consumer group; it needs a kafka:// backend",
            ));
        }
        #[cfg(feature = "kafka")]
        if kafka_backend {
            crate::kafka::validate(self)?;
        }
        #[cfg(not(feature = "kafka"))]
        if kafka_backend {
            return Err(ConfigError::invalid(
                "backend",
                "this program was built without the `kafka` feature",
            ));
        }
        Ok(())
    }

    /// The offset store: the configured one, else the backend's SQLite file, memory for
    /// `memory://`, the consumer group's commits for `kafka://`, and
    /// `sqlite://logpipe.db` for Kinesis.
    pub fn offset_store_url(&self) -> OffsetStoreUrl {
        match (&self.offset_store, &self.backend) {
            (Some(url), _) => url.clone(),
            (None, BackendUrl::Sqlite(path)) => OffsetStoreUrl::Sqlite(path.clone()),
            (None, BackendUrl::Memory) => OffsetStoreUrl::Memory,
            (None, BackendUrl::Kinesis { .. }) => {
                OffsetStoreUrl::Sqlite(PathBuf::from(DEFAULT_KINESIS_OFFSET_STORE))
            }
            (None, BackendUrl::Kafka(_)) => OffsetStoreUrl::Kafka,
        }
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

/// Reads a variable's text as a TOML integer, float or boolean when it is one.
fn guess_value(text: &str) -> toml::Value {
    if let Ok(number) = text.parse::<i64>() {
        return toml::Value::Integer(number);
    }
    if let Ok(flag) = text.parse::<bool>() {
        return toml::Value::Boolean(flag);
    }
    if let Ok(number) = text
        .parse::<f64>()
        .map_err(drop)
        .and_then(|n| if n.is_finite() { Ok(n) } else { Err(()) })
    {
        return toml::Value::Float(number);
    }
    toml::Value::String(text.to_owned())
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("split always yields one part");
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Turns the non-text value at the dotted `key` into text; false if it was text already.
fn retype_as_string(table: &mut toml::Table, key: &str) -> bool {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        let Some(value) = current.get_mut(part) else {
            return false;
        };
        if parts.peek().is_none() {
            let text = match value {
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return false,
            };
            *value = toml::Value::String(text);
            return true;
        }
        let Some(next) = value.as_table_mut() else {
            return false;
        };
        current = next;
    }
    false
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
        assert_eq!(
            config.offset_store_url(),
            OffsetStoreUrl::Sqlite("logpipe.db".into())
        );
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
                ("LOGPIPE_TEST_KAFKA", "127.0.0.1:39092"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.backend, BackendUrl::Memory);
        assert_eq!(config.consumer.commit_every, 7);
        assert!(config.consumer.strict);
        assert_eq!(config.producer_id.as_deref(), Some("42"));
        assert_eq!(
            config.consumer.on_bad_record,
            crate::consumer::BadRecordPolicy::DeadLetter
        );
        assert_eq!(config.offset_store_url(), OffsetStoreUrl::Memory);
    }

    #[test]
    fn bad_values_name_their_key_and_variable() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
        let cases: &[Case<'_>] = &[
            ("backend = \"postgres://x\"", &[], "backend", None),
            ("backend = \"sqlite://\"", &[], "backend", None),
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
        }
    }

    #[test]
    fn kinesis_urls_take_an_optional_region_and_endpoint_and_store_positions_in_sqlite() {
        let config = Config::from_parts(
            toml::Table::new(),
            env(&[(
                "LOGPIPE_BACKEND",
                "kinesis://?region=eu-west-1&endpoint=http://127.0.0.1:4567",
            )]),
        )
        .unwrap();
        let url = BackendUrl::Kinesis {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:4567".into()),
        };
        assert_eq!(config.backend, url);
        assert_eq!(
            url.to_string(),
            "kinesis://?region=eu-west-1&endpoint=http://127.0.0.1:4567"
        );
        assert_eq!(
            config.offset_store_url(),
            OffsetStoreUrl::Sqlite("logpipe.db".into())
        );
        for bare in ["kinesis://", "kinesis://?"] {
            assert_eq!(
                bare.parse::<BackendUrl>().unwrap(),
                BackendUrl::Kinesis {
                    region: None,
                    endpoint: None
                }
            );
        }
        let file: toml::Table = "offset_store = \"memory://\"\n[kinesis]\nwrite_mode = \"sequence-number-for-ordering\"\npoll_interval_ms = 50"
            .parse()
            .unwrap();
        let config = Config::from_parts(file, env(&[("LOGPIPE_BACKEND", "kinesis://")])).unwrap();
        assert_eq!(config.offset_store_url(), OffsetStoreUrl::Memory);
        assert_eq!(config.kinesis.poll_interval_ms, 50);
        assert_eq!(
            config.kinesis.write_mode,
            crate::kinesis::KinesisWriteMode::SequenceNumberForOrdering
        );
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
