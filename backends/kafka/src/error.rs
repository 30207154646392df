//! What can go wrong talking to Kafka.

use crate::connection_log::{ConnectionLog, is_connection_failure};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

/// Which group of librdkafka settings a setting was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsLayer {
    /// Settings of every client (`[kafka.global]`).
    Global,
    /// Settings of producers (`[kafka.producer]`).
    Producer,
    /// Settings of consumers (`[kafka.consumer]`).
    Consumer,
    /// A default of this crate (a bug if it is refused).
    Default,
}

impl std::fmt::Display for SettingsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SettingsLayer::Global => "global",
            SettingsLayer::Producer => "producer",
            SettingsLayer::Consumer => "consumer",
            SettingsLayer::Default => "default",
        })
    }
}

/// What kind of failure a [`KafkaError`] is, in broad strokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad setting.
    Config,
    /// Brokers could not be reached or a connection broke.
    Connection,
    /// An operation did not finish in time.
    Timeout,
    /// A topic or partition does not exist.
    NotFound,
    /// The broker refused the request.
    Rejected,
    /// Anything else.
    Other,
}

/// An error of the Kafka driver. The librdkafka error, when there is one, is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// librdkafka refused a setting.
    #[error("invalid {layer} librdkafka setting `{key}`: {message}")]
    Setting {
        /// The group of settings it came from.
        layer: SettingsLayer,
        /// The librdkafka property, such as `linger.ms`.
        key: String,
        /// What librdkafka said.
        message: String,
        /// The librdkafka error.
        #[source]
        source: Box<RdKafkaError>,
    },
    /// A client could not be created.
    #[error("cannot create the Kafka {role}")]
    Client {
        /// `producer`, `consumer` or `admin client`.
        role: &'static str,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// A topic does not exist and topic creation is off.
    #[error("Kafka topic {topic:?} does not exist (create it, or turn on create_topics)")]
    TopicNotFound {
        /// The topic, with its prefix.
        topic: String,
    },
    /// The brokers could not be reached, or refused the connection (TLS, SASL).
    #[error("cannot reach the Kafka brokers at {brokers}: {reason}")]
    Unreachable {
        /// The bootstrap brokers.
        brokers: String,
        /// What failed: what librdkafka last said about a connection, else its error.
        reason: String,
        /// The librdkafka error of the request.
        #[source]
        source: Box<RdKafkaError>,
    },
    /// Topic metadata could not be read.
    #[error("cannot read the Kafka metadata{}", of_topic(topic))]
    Metadata {
        /// The topic, with its prefix; empty when every topic was asked for.
        topic: String,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// A topic could not be created.
    #[error("cannot create Kafka topic {topic:?}")]
    CreateTopic {
        /// The topic, with its prefix.
        topic: String,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// A record was not delivered.
    #[error("a record to Kafka topic {topic:?} was not delivered")]
    Delivery {
        /// The topic, with its prefix.
        topic: String,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// Reading records failed.
    #[error("reading from Kafka failed")]
    Consume {
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// Committing or reading committed offsets failed.
    #[error("the offsets of consumer group {group:?} could not be {action}")]
    Offsets {
        /// The consumer group.
        group: String,
        /// `committed` or `read`.
        action: &'static str,
        /// The librdkafka error.
        #[source]
        source: RdKafkaError,
    },
    /// No consumer of this process holds the partition, so its offset cannot be committed.
    #[error("no consumer of group {group:?} in this process is assigned {topic}/{partition}")]
    NotAssigned {
        /// The consumer group.
        group: String,
        /// The topic, with its prefix.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The consumer's polling thread has stopped.
    #[error("the Kafka consumer has stopped")]
    Closed,
    /// The consumer could not start (its topics could not be checked or subscribed to),
    /// and has stopped.
    #[error("the Kafka consumer could not start: {reason}")]
    NotStarted {
        /// Why.
        #[source]
        reason: Box<KafkaError>,
    },
}

impl KafkaError {
    /// The librdkafka error code, when there is one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            KafkaError::Setting { source, .. } | KafkaError::Unreachable { source, .. } => {
                source.rdkafka_error_code()
            }
            // An admin operation's refusal carries its code only here.
            KafkaError::CreateTopic {
                source: RdKafkaError::AdminOp(code),
                ..
            } => Some(*code),
            KafkaError::Client { source, .. }
            | KafkaError::Metadata { source, .. }
            | KafkaError::CreateTopic { source, .. }
            | KafkaError::Delivery { source, .. }
            | KafkaError::Consume { source, .. }
            | KafkaError::Offsets { source, .. } => source.rdkafka_error_code(),
            _ => None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KafkaError::Setting { .. } | KafkaError::Client { .. } => ErrorKind::Config,
            KafkaError::TopicNotFound { .. } | KafkaError::NotAssigned { .. } => {
                ErrorKind::NotFound
            }
            KafkaError::Closed => ErrorKind::Other,
            KafkaError::NotStarted { reason } => reason.kind(),
            KafkaError::Unreachable { .. } => ErrorKind::Connection,
            _ => self.code().map_or(ErrorKind::Other, code_kind),
        }
    }

    /// Whether the operation may succeed when tried again.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Setting { .. }
            | KafkaError::Client { .. }
            | KafkaError::TopicNotFound { .. }
            | KafkaError::NotAssigned { .. }
            | KafkaError::Closed
            | KafkaError::NotStarted { .. } => false,
            // A consumer reports passing trouble (a topic not yet in its metadata, a
            // broker going away) this way and goes on reading; only refusals are final.
            KafkaError::Consume { .. } => self.kind() != ErrorKind::Rejected,
            _ => self.code().is_some_and(code_is_retriable),
        }
    }
}

impl KafkaError {
    /// The error of a metadata request about `topic` (empty: every topic) that failed
    /// with `source`: [`KafkaError::Unreachable`], saying why from what the clients last
    /// said about their connections, when no broker answered; else
    /// [`KafkaError::Metadata`].
    pub(crate) fn metadata(
        topic: &str,
        source: RdKafkaError,
        connections: &ConnectionLog,
    ) -> KafkaError {
        let unreachable = is_connection_failure(&source)
            || source.rdkafka_error_code().is_some_and(|code| {
                matches!(code_kind(code), ErrorKind::Connection | ErrorKind::Timeout)
            });
        if !unreachable {
            return KafkaError::Metadata {
                topic: topic.to_owned(),
                source,
            };
        }
        let reason = connections.last_failure().unwrap_or_else(|| {
            if source.rdkafka_error_code().map(code_kind) == Some(ErrorKind::Timeout) {
                "no broker answered in time".to_owned()
            } else {
                "no broker could be reached (a TLS or SASL listener closes the connection of a client of another security.protocol)".to_owned()
            }
        });
        KafkaError::Unreachable {
            brokers: connections.brokers().to_owned(),
            reason,
            source: Box::new(source),
        }
    }
}

/// ` of topic "name"`, or nothing for every topic.
fn of_topic(topic: &str) -> String {
    if topic.is_empty() {
        String::new()
    } else {
        format!(" of topic {topic:?}")
    }
}

fn code_kind(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue => {
            ErrorKind::Timeout
        }
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::NetworkException
        | C::Resolve
        | C::BrokerNotAvailable
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::WaitingForCoordinator => ErrorKind::Connection,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => ErrorKind::NotFound,
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::InvalidTopic
        | C::PolicyViolation
        | C::MessageBatchTooLarge
        | C::TopicAlreadyExists
        | C::InvalidPartitions
        | C::InvalidReplicationFactor => ErrorKind::Rejected,
        _ => ErrorKind::Other,
    }
}

fn code_is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(code_kind(code), ErrorKind::Timeout | ErrorKind::Connection)
        || matches!(
            code,
            C::QueueFull
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::RebalanceInProgress
                | C::CoordinatorLoadInProgress
                | C::KafkaStorageError
                | C::Retry
                | C::WaitCache
                | C::OutOfOrderSequenceNumber
        )
}
