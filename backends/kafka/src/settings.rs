//! How to reach a Kafka cluster and how to use it: the `[kafka]` table.

use std::collections::BTreeMap;

use std::fmt;
use std::time::Duration;

use logpipe_core::{SettingError, is_secret_key, redact_value};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use serde::Deserialize;

use crate::{KafkaError, KafkaUrl, SettingsLayer};

/// How to reach a Kafka cluster and how to use it.
///
/// librdkafka properties come in three layers: [`global`](Self::global) for every client,
/// then [`producer`](Self::producer) or [`consumer`](Self::consumer) on top. They override
/// this crate's defaults:
///
/// - producer: `enable.idempotence=true`, `acks=all`, `linger.ms=5`,
///   `compression.type=none` (every Kafka client reads uncompressed batches, among them
///   kafka-python as django-logpipe installs it, which reads lz4, snappy and zstd only with
///   optional packages), `partitioner=murmur2_random` (the partitioner of the Java and
///   Python clients, so that one key lands on one partition whichever client wrote it;
///   keyless records are spread at random), `message.timeout.ms=30000` (a send the
///   brokers cannot take fails after 30 s, long enough for a leader election, where
///   librdkafka's own 300 s would hold its caller for five minutes);
/// - consumer: `enable.auto.commit=false`, `auto.offset.reset=earliest`,
///   `topic.metadata.refresh.interval.ms=10000` (partitions added later are read within
///   about ten seconds), `partition.assignment.strategy=cooperative-sticky` (a rebalance
///   moves only the partitions that change owner; the others are read on meanwhile),
///   left out under `group.protocol=consumer`, whose assignor is the broker's;
/// - both: `allow.auto.create.topics=false`.
///
/// In a configuration file these are the keys of the `[kafka]` table; the brokers come
/// from the `kafka://` URL, not from the table:
///
/// ```toml
/// [kafka]
/// topic_prefix = "prod."      # stream "people" is topic "prod.people"
/// create_topics = false       # true: create missing topics instead of failing
/// topic_partitions = -1       # of created topics; -1: the broker's default
/// topic_replication = -1      # of created topics; -1: the broker's default
/// request_timeout_ms = 10000  # how long metadata and admin requests wait for the brokers
///
/// [kafka.global]              # librdkafka properties of every client
/// "security.protocol" = "SASL_SSL"
/// [kafka.producer]            # of producers, on top of global
/// linger.ms = 20              # dotted keys are joined again: `linger.ms`
/// [kafka.consumer]            # of consumers, on top of global
/// "session.timeout.ms" = 30000
/// ```
///
/// [`Debug`] shows the values of secret properties ([`logpipe_core::is_secret_key`]), such
/// as `sasl.password`, as `***`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaSettings {
    /// The bootstrap brokers, `host:port` separated by commas (from the `kafka://` URL).
    #[serde(skip)]
    pub brokers: String,
    /// Put before every stream name to make its topic name. Default empty.
    pub topic_prefix: String,
    /// Create missing topics instead of failing. Default false.
    pub create_topics: bool,
    /// Partitions of created topics; -1 for the broker's default. Default -1.
    pub topic_partitions: i32,
    /// Replication factor of created topics; -1 for the broker's default. Default -1.
    pub topic_replication: i32,
    /// How long a metadata or admin request (checking a topic, listing, creating,
    /// watermarks) waits for the brokers, in milliseconds: a call that cannot reach them
    /// fails after it. Default 10000.
    pub request_timeout_ms: u64,
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

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |layer: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            layer
                .iter()
                .map(|(key, value)| (key.clone(), redact_value(key, value).to_owned()))
                .collect()
        };
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication", &self.topic_replication)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("global", &shown(&self.global))
            .field("producer", &shown(&self.producer))
            .field("consumer", &shown(&self.consumer))
            .finish()
    }
}

impl Default for KafkaSettings {
    /// No brokers yet, and this crate's defaults.
    fn default() -> Self {
        Self::new("")
    }
}

const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("compression.type", "none"),
    ("partitioner", "murmur2_random"),
    ("message.timeout.ms", "30000"),
    ("allow.auto.create.topics", "false"),
];

const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("topic.metadata.refresh.interval.ms", "10000"),
    ("allow.auto.create.topics", "false"),
];

/// Consumer properties of the classic group protocol that `group.protocol = "consumer"`
/// (KIP-848) leaves to the broker.
const BROKER_SIDE_UNDER_CONSUMER_PROTOCOL: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

/// The assignor of the classic group protocol, unless `partition.assignment.strategy` or
/// `group.protocol = "consumer"` (whose assignor is the broker's) says otherwise.
const CLASSIC_ASSIGNOR: (&str, &str) = ("partition.assignment.strategy", "cooperative-sticky");

/// Whether a consumer of `config` uses the consumer group protocol of KIP-848.
fn uses_consumer_protocol(config: &ClientConfig) -> bool {
    config
        .get("group.protocol")
        .is_some_and(|protocol| protocol.eq_ignore_ascii_case("consumer"))
}

impl KafkaSettings {
    /// Settings for the cluster at `brokers` (`host:port`, comma-separated), with defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            create_topics: false,
            topic_partitions: -1,
            topic_replication: -1,
            request_timeout_ms: 10_000,
            global: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }

    /// These settings for the cluster of `url`: its brokers, and its SASL user and
    /// password as `sasl.username` and `sasl.password` when it has them. With a user,
    /// `[kafka.global]` must name a mechanism that takes a password (`sasl.mechanism`:
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`), and `security.protocol` is
    /// `SASL_SSL` unless set to `SASL_PLAINTEXT`. `url_key` is the configuration key of
    /// the URL and `prefix` that of this table (such as `kafka.`), for the errors.
    ///
    /// # Errors
    ///
    /// [`SettingError`] naming the key to change when the URL's user cannot be used with
    /// these settings: another user set in a table, no mechanism or one that takes no
    /// password, a protocol that sends no credentials. It never holds the password.
    pub fn with_url(
        mut self,
        url: &KafkaUrl,
        url_key: &str,
        prefix: &str,
    ) -> Result<Self, SettingError> {
        self.brokers = url.brokers().to_owned();
        let Some((user, password)) = url.credentials() else {
            return Ok(self);
        };
        for (layer, properties) in [
            ("global", &self.global),
            ("producer", &self.producer),
            ("consumer", &self.consumer),
        ] {
            if let Some(key) = ["sasl.username", "sasl.password"]
                .into_iter()
                .find(|key| properties.contains_key(*key))
            {
                return Err(SettingError::new(
                    url_key,
                    format!(
                        "the kafka:// URL has a SASL user and {prefix}{layer}.{key} is set too; set them in one place"
                    ),
                ));
            }
        }
        let mechanism_key = format!("{prefix}global.sasl.mechanism");
        match self.global.get("sasl.mechanism").map(String::as_str) {
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {}
            Some(other) => {
                return Err(SettingError::new(
                    mechanism_key,
                    format!(
                        "is {other}, which takes no password; a kafka:// URL with a user needs PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                    ),
                ));
            }
            None => {
                return Err(SettingError::new(
                    mechanism_key,
                    "must be set for a kafka:// URL with a user: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
        }
        let protocol = self
            .global
            .entry("security.protocol".to_owned())
            .or_insert_with(|| "SASL_SSL".to_owned());
        if !protocol.eq_ignore_ascii_case("SASL_SSL")
            && !protocol.eq_ignore_ascii_case("SASL_PLAINTEXT")
        {
            return Err(SettingError::new(
                format!("{prefix}global.security.protocol"),
                format!(
                    "is {protocol}, which sends no SASL credentials; a kafka:// URL with a user needs SASL_SSL (or SASL_PLAINTEXT)"
                ),
            ));
        }
        self.global
            .insert("sasl.username".to_owned(), user.to_owned());
        self.global
            .insert("sasl.password".to_owned(), password.to_owned());
        Ok(self)
    }

    /// The topic of `stream`: the prefix and the name, or a pattern (`^...`) unchanged.
    pub fn topic(&self, stream: &str) -> String {
        if stream.starts_with('^') {
            stream.to_owned()
        } else {
            format!("{}{stream}", self.topic_prefix)
        }
    }

    /// The stream of `topic`: its name without the prefix (unchanged when it has none).
    pub fn stream<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(&self.topic_prefix).unwrap_or(topic)
    }

    /// How long a metadata or admin request waits ([`request_timeout_ms`](Self::request_timeout_ms)).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks the settings as the `[kafka]` table of a configuration (whose keys are
    /// under `prefix`, such as `kafka.`): the topic counts, and every librdkafka property
    /// as the clients would at start-up.
    ///
    /// # Errors
    ///
    /// [`SettingError`] naming the first bad key, such as `kafka.producer.linger.ms`.
    pub fn check(&self, prefix: &str) -> Result<(), SettingError> {
        for (key, value) in [
            ("topic_partitions", self.topic_partitions),
            ("topic_replication", self.topic_replication),
        ] {
            if value == 0 || value < -1 {
                return Err(SettingError::new(
                    format!("{prefix}{key}"),
                    "must be at least 1, or -1 for the broker's default",
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(SettingError::new(
                format!("{prefix}request_timeout_ms"),
                "must be at least 1",
            ));
        }
        match self.validate() {
            Ok(()) => Ok(()),
            Err(KafkaError::Setting {
                layer,
                key,
                message,
                ..
            }) => Err(match layer {
                SettingsLayer::Default => SettingError::new(prefix.trim_end_matches('.'), message),
                layer => SettingError::new(format!("{prefix}{layer}.{key}"), message),
            }),
            Err(other) => Err(SettingError::new(
                prefix.trim_end_matches('.'),
                other.to_string(),
            )),
        }
    }

    /// Checks every librdkafka property, as the clients would at start-up.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Setting`] naming the first bad property and its layer.
    pub fn validate(&self) -> Result<(), KafkaError> {
        for layer in [SettingsLayer::Producer, SettingsLayer::Consumer] {
            let config = self.client_config(layer, None);
            config
                .create_native_config()
                .map_err(|source| self.setting_error(layer, source))?;
            if layer == SettingsLayer::Consumer
                && uses_consumer_protocol(&config)
                && let Some((key, value)) = BROKER_SIDE_UNDER_CONSUMER_PROTOCOL
                    .iter()
                    .find_map(|key| Some((*key, config.get(key)?)))
            {
                // librdkafka refuses these only when the consumer is created.
                let refused = rdkafka::error::KafkaError::ClientConfig(
                    rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                    "is not supported with group.protocol = consumer, where the broker sets the session, heartbeats and assignor (group.consumer.* broker settings, or group.remote.assignor); remove it".to_owned(),
                    key.to_owned(),
                    value.to_owned(),
                );
                return Err(self.setting_error(layer, refused));
            }
        }
        Ok(())
    }

    /// The librdkafka configuration of a producer or consumer (the admin client uses the
    /// producer's), with `group.id` for consumers.
    pub(crate) fn client_config(&self, layer: SettingsLayer, group: Option<&str>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set_log_level(RDKafkaLogLevel::Warning);
        let (defaults, overrides) = match layer {
            SettingsLayer::Consumer => (CONSUMER_DEFAULTS, &self.consumer),
            _ => (PRODUCER_DEFAULTS, &self.producer),
        };
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        if let Some(group) = group {
            config.set("group.id", group);
        }
        for (key, value) in self.global.iter().chain(overrides) {
            config.set(key, value);
        }
        if layer == SettingsLayer::Consumer
            && !uses_consumer_protocol(&config)
            && config.get(CLASSIC_ASSIGNOR.0).is_none()
        {
            config.set(CLASSIC_ASSIGNOR.0, CLASSIC_ASSIGNOR.1);
        }
        config
    }

    /// Turns librdkafka's refusal of a property into an error naming the layer it came
    /// from.
    pub(crate) fn setting_error(
        &self,
        layer: SettingsLayer,
        source: rdkafka::error::KafkaError,
    ) -> KafkaError {
        let (key, message, source) = match source {
            rdkafka::error::KafkaError::ClientConfig(result, message, key, value) => {
                // librdkafka quotes the value it refuses; a secret one is not shown.
                let (message, value) = if is_secret_key(&key) && !value.is_empty() {
                    (message.replace(&value, "***"), "***".to_owned())
                } else {
                    (message, value)
                };
                let source = rdkafka::error::KafkaError::ClientConfig(
                    result,
                    message.clone(),
                    key.clone(),
                    value,
                );
                (key, message, source)
            }
            other => (String::new(), other.to_string(), other),
        };
        let own = match layer {
            SettingsLayer::Consumer => &self.consumer,
            _ => &self.producer,
        };
        let layer = if own.contains_key(&key) {
            layer
        } else if self.global.contains_key(&key) {
            SettingsLayer::Global
        } else {
            SettingsLayer::Default
        };
        KafkaError::Setting {
            layer,
            key,
            message,
            source: Box::new(source),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_property_is_named_with_its_layer() {
        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings.producer.insert("linger.ms".into(), "soon".into());
        let err = settings.validate().unwrap_err();
        let KafkaError::Setting { layer, key, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (*layer, key.as_str()),
            (SettingsLayer::Producer, "linger.ms")
        );

        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings
            .global
            .insert("no.such.property".into(), "1".into());
        let err = settings.validate().unwrap_err();
        assert!(
            matches!(&err, KafkaError::Setting { layer: SettingsLayer::Global, key, .. } if key == "no.such.property"),
            "{err:?}"
        );
        assert!(!err.is_retriable());

        let mut settings = KafkaSettings::new("127.0.0.1:9");
        settings
            .consumer
            .insert("fetch.min.bytes".into(), "1".into());
        settings.validate().unwrap();
    }

    #[test]
    fn the_table_is_checked_naming_each_key_under_its_prefix() {
        let table: KafkaSettings = toml::from_str(
            "topic_prefix = \"prod.\"\n[producer]\nlinger.ms = 20\n\"compression.type\" = \"zstd\"\n[consumer.session.timeout]\nms = 30000",
        )
        .unwrap();
        assert_eq!(table.topic("people"), "prod.people");
        assert_eq!(table.producer["linger.ms"], "20");
        assert_eq!(table.producer["compression.type"], "zstd");
        assert_eq!(table.consumer["session.timeout.ms"], "30000");
        table.check("kafka.").unwrap();

        let mut settings = KafkaSettings::new("b:9092");
        settings.producer.insert("linger.ms".into(), "soon".into());
        assert_eq!(
            settings.check("kafka.").unwrap_err().key(),
            "kafka.producer.linger.ms"
        );
        let mut settings = KafkaSettings::new("b:9092");
        settings.global.insert("no.such".into(), "1".into());
        assert_eq!(
            settings.check("kafka.").unwrap_err().key(),
            "kafka.global.no.such"
        );
        let mut settings = KafkaSettings::new("b:9092");
        settings.topic_partitions = 0;
        assert_eq!(
            settings.check("kafka.").unwrap_err().key(),
            "kafka.topic_partitions"
        );
        let refused = toml::from_str::<KafkaSettings>("brokers = \"b:9092\"");
        assert!(refused.unwrap_err().to_string().contains("unknown field"));
        let refused = toml::from_str::<KafkaSettings>("[producer]\n\"linger.ms\" = [1]");
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("not a property value")
        );
    }

    #[test]
    fn consumers_rebalance_cooperatively_unless_the_broker_assigns() {
        let assignor = |settings: &KafkaSettings| {
            settings
                .client_config(SettingsLayer::Consumer, Some("g"))
                .get("partition.assignment.strategy")
                .map(str::to_owned)
        };
        let mut settings = KafkaSettings::new("b:9092");
        assert_eq!(assignor(&settings).as_deref(), Some("cooperative-sticky"));
        settings
            .consumer
            .insert("partition.assignment.strategy".into(), "range".into());
        assert_eq!(assignor(&settings).as_deref(), Some("range"));

        // Under the consumer protocol the broker assigns: no assignor is set, and one set
        // by the user is refused at start-up, as are the session and heartbeat settings.
        let mut settings = KafkaSettings::new("b:9092");
        settings
            .global
            .insert("group.protocol".into(), "consumer".into());
        assert_eq!(assignor(&settings), None);
        settings.check("kafka.").unwrap();
        for (key, named) in [
            ("session.timeout.ms", "kafka.consumer.session.timeout.ms"),
            (
                "partition.assignment.strategy",
                "kafka.consumer.partition.assignment.strategy",
            ),
        ] {
            let mut refused = settings.clone();
            refused.consumer.insert(key.into(), "6000".into());
            let err = refused.check("kafka.").unwrap_err();
            assert_eq!(err.key(), named);
            assert!(
                err.to_string().contains("group.protocol = consumer"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_url_user_becomes_the_sasl_user_of_a_mechanism_that_takes_a_password() {
        let url = KafkaUrl::parse("kafka://app:s3cret@h1:9092").unwrap();
        let with = |global: &[(&str, &str)]| {
            let mut settings = KafkaSettings::default();
            for (key, value) in global {
                settings.global.insert((*key).into(), (*value).into());
            }
            settings.with_url(&url, "backend", "kafka.")
        };
        let settings = with(&[("sasl.mechanism", "SCRAM-SHA-512")]).unwrap();
        assert_eq!(settings.brokers, "h1:9092");
        assert_eq!(settings.global["sasl.username"], "app");
        assert_eq!(settings.global["sasl.password"], "s3cret");
        assert_eq!(settings.global["security.protocol"], "SASL_SSL");
        settings.check("kafka.").unwrap();
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("\"sasl.password\": \"***\""),
            "{shown}"
        );
        let plaintext = with(&[
            ("sasl.mechanism", "PLAIN"),
            ("security.protocol", "SASL_PLAINTEXT"),
        ]);
        assert_eq!(
            plaintext.unwrap().global["security.protocol"],
            "SASL_PLAINTEXT"
        );

        for (global, key, says) in [
            (&[][..], "kafka.global.sasl.mechanism", "must be set"),
            (
                &[("sasl.mechanism", "GSSAPI")][..],
                "kafka.global.sasl.mechanism",
                "takes no password",
            ),
            (
                &[("sasl.mechanism", "PLAIN"), ("security.protocol", "SSL")][..],
                "kafka.global.security.protocol",
                "sends no SASL credentials",
            ),
            (
                &[("sasl.mechanism", "PLAIN"), ("sasl.username", "other")][..],
                "backend",
                "kafka.global.sasl.username is set too",
            ),
        ] {
            let err = with(global).unwrap_err();
            assert_eq!(err.key(), key, "{global:?}: {err}");
            assert!(err.message().contains(says), "{global:?}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let without = KafkaUrl::parse("kafka://h1:9092").unwrap();
        let settings = KafkaSettings::default()
            .with_url(&without, "backend", "kafka.")
            .unwrap();
        assert!(!settings.global.contains_key("security.protocol"));
    }

    #[test]
    fn a_refused_secret_property_is_named_without_its_value() {
        let mut settings = KafkaSettings::new("b:9092");
        settings
            .producer
            .insert("sasl.password".into(), "t0ken-x".into());
        let refused = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"t0ken-x\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "t0ken-x".into(),
        );
        let err = settings.setting_error(SettingsLayer::Producer, refused);
        let mut shown = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            shown.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("t0ken-x"), "{shown}");
        let shown = format!("{settings:?}");
        assert!(shown.contains("\"sasl.password\": \"***\""), "{shown}");
        assert!(!shown.contains("t0ken-x"), "{shown}");
    }

    #[test]
    fn topics_take_the_prefix_and_patterns_do_not() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.topic_prefix = "prod.".into();
        assert_eq!(settings.topic("people"), "prod.people");
        assert_eq!(settings.topic("^prod\\..*"), "^prod\\..*");
        assert_eq!(settings.stream("prod.people"), "people");
        assert_eq!(settings.stream("other"), "other");
    }
}
