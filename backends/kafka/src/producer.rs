//! The client: connections, topic checks and the producer.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::connection_log::ConnectionLog;
use crate::{GroupOffsets, KafkaConsumer};
use crate::{KafkaError, KafkaSettings, SettingsLayer};

/// How long `send` waits for room in librdkafka's queue when it is full.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `send` waits before trying a full queue again.
const QUEUE_RETRY: Duration = Duration::from_millis(100);
/// How often [`KafkaClient::flush`] counts the records not yet acknowledged.
const FLUSH_CHECK: Duration = Duration::from_millis(1);

/// Sends librdkafka's logs to `tracing`, through the cluster's [`ConnectionLog`].
#[derive(Debug, Clone)]
pub(crate) struct TracingContext(pub(crate) Arc<ConnectionLog>);

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

pub(crate) struct Inner {
    pub(crate) settings: Arc<KafkaSettings>,
    /// What the clients of this cluster said about their connections.
    pub(crate) connections: Arc<ConnectionLog>,
    pub(crate) producer: FutureProducer<TracingContext>,
    pub(crate) admin: AdminClient<TracingContext>,
    /// Topics known to exist (full names).
    known_topics: RwLock<HashSet<String>>,
    /// Keeps records in the order they were sent while some wait.
    order: SendOrder,
    pub(crate) offsets: GroupOffsets,
}

/// Hands records to librdkafka in the order they were sent. A send goes straight to
/// librdkafka only while no earlier one waits (for its topic to be checked, or for room
/// in librdkafka's queue); else it waits its turn behind them, first come first served.
#[derive(Default)]
struct SendOrder {
    /// Sends waiting for their turn or holding it.
    waiting: AtomicUsize,
    /// Taken in turn by the waiting sends (Tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
}

impl SendOrder {
    /// Counts a send as waiting until the guard is dropped (also when the send is).
    fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.waiting)
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A record in librdkafka's hands, on its way to the brokers; see [`KafkaClient::queue`].
#[must_use = "the record may not be written: wait for the acknowledgement"]
pub struct Queued {
    delivery: DeliveryFuture,
    connections: Arc<ConnectionLog>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").finish_non_exhaustive()
    }
}

impl Queued {
    /// Waits until the brokers acknowledged the record, and returns its partition and
    /// offset.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Delivery`] when the record was not written (such as after
    /// `message.timeout.ms`); [`KafkaError::is_retriable`] says whether sending it again
    /// may work. [`KafkaError::Closed`] when the client went away first.
    pub async fn acknowledged(self) -> Result<(i32, i64), KafkaError> {
        match self.delivery.await {
            Ok(Ok(delivery)) => {
                self.connections.answered();
                Ok((delivery.partition, delivery.offset))
            }
            Ok(Err((source, message))) => Err(KafkaError::Delivery {
                topic: rdkafka::Message::topic(&message).to_owned(),
                source,
            }),
            Err(_) => Err(KafkaError::Closed),
        }
    }
}

/// A connection to a Kafka cluster: writes records and makes consumers. Clones share it.
///
/// Records are written by one idempotent producer (`acks=all`), batched by librdkafka
/// (`linger.ms`, `batch.size`, `compression.type`: see [`KafkaSettings`]).
#[derive(Clone)]
pub struct KafkaClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaClient")
            .field("brokers", &self.inner.settings.brokers)
            .field("topic_prefix", &self.inner.settings.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl KafkaClient {
    /// Creates the producer and admin clients. Nothing is sent to the brokers yet, so an
    /// unreachable cluster shows up on the first send.
    ///
    /// # Errors
    ///
    /// [`KafkaError::Setting`] when librdkafka refuses a property (whichever layer it
    /// came from), [`KafkaError::Client`] when a client cannot be created.
    pub fn connect(settings: KafkaSettings) -> Result<Self, KafkaError> {
        settings.validate()?;
        let config = settings.client_config(SettingsLayer::Producer, None);
        let connections = Arc::new(ConnectionLog::new(&settings.brokers));
        let producer = config
            .create_with_context(TracingContext(Arc::clone(&connections)))
            .map_err(|source| KafkaError::Client {
                role: "producer",
                source,
            })?;
        let admin = config
            .create_with_context(TracingContext(Arc::clone(&connections)))
            .map_err(|source| KafkaError::Client {
                role: "admin client",
                source,
            })?;
        let settings = Arc::new(settings);
        Ok(Self {
            inner: Arc::new(Inner {
                offsets: GroupOffsets::new(Arc::clone(&settings)),
                settings,
                connections,
                producer,
                admin,
                known_topics: RwLock::new(HashSet::new()),
                order: SendOrder::default(),
            }),
        })
    }

    /// The settings this client was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.inner.settings
    }

    /// Writes one record to `stream` and returns its partition and offset once the
    /// brokers acknowledged it. A keyless record goes to a random partition.
    ///
    /// # Errors
    ///
    /// [`KafkaError::TopicNotFound`] when the topic does not exist and `create_topics` is
    /// off; [`KafkaError::Delivery`] when the record was not written (such as after
    /// `message.timeout.ms`); [`KafkaError::is_retriable`] says whether sending it again
    /// may work.
    pub async fn send(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64), KafkaError> {
        self.queue(stream, key, value, headers)
            .await?
            .acknowledged()
            .await
    }

    /// The first half of [`send`](Self::send): hands one record to librdkafka, which
    /// copies it, and returns what waits for the brokers' acknowledgement. A caller can
    /// free its copy of the record in between.
    ///
    /// Records are handed to librdkafka in the order of the calls (of their first polls),
    /// even while some wait for a topic check or for room in librdkafka's queue, so that
    /// sends started one after another without waiting keep each key's order.
    ///
    /// # Errors
    ///
    /// [`KafkaError::TopicNotFound`] when the topic does not exist and `create_topics` is
    /// off; [`KafkaError::Delivery`] when librdkafka refused the record (such as when its
    /// queue stayed full for a minute).
    pub async fn queue(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Queued, KafkaError> {
        let settings = &self.inner.settings;
        let topic: Cow<'_, str> = if settings.topic_prefix.is_empty() {
            Cow::Borrowed(stream)
        } else {
            Cow::Owned(settings.topic(stream))
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(*value),
                });
            }
            record = record.headers(owned);
        }
        let order = &self.inner.order;
        if self.is_known(&topic) && order.waiting.load(Ordering::SeqCst) == 0 {
            match self.inner.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Queued {
                        delivery,
                        connections: Arc::clone(&self.inner.connections),
                    });
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                    record = again;
                }
                Err((source, _)) => {
                    return Err(KafkaError::Delivery {
                        topic: topic.into_owned(),
                        source,
                    });
                }
            }
        }
        // Sends made after this one wait behind it, in the order they were made.
        let _waiting = order.wait();
        let _turn = order.turn.lock().await;
        if !self.is_known(&topic) {
            self.ensure_topics(&[topic.to_string()]).await?;
        }
        let started = tokio::time::Instant::now();
        loop {
            match self.inner.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Queued {
                        delivery,
                        connections: Arc::clone(&self.inner.connections),
                    });
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                    if started.elapsed() < QUEUE_TIMEOUT =>
                {
                    record = again;
                    tokio::time::sleep(QUEUE_RETRY).await;
                }
                Err((source, _)) => {
                    return Err(KafkaError::Delivery {
                        topic: topic.into_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Waits until every record sent so far is acknowledged or has failed (its delivery
    /// says which).
    pub async fn flush(&self) {
        // librdkafka's own flush notices the last acknowledgement only up to 100 ms
        // late; the records not yet acknowledged are counted every millisecond instead.
        while self.inner.producer.in_flight_count() > 0 {
            tokio::time::sleep(FLUSH_CHECK).await;
        }
    }

    /// A consumer of `streams` in consumer group `group`. It checks that the topics exist
    /// (or creates them) and joins the group in the background; failures come out of
    /// [`KafkaConsumer::next_event`].
    ///
    /// # Errors
    ///
    /// [`KafkaError::Setting`] or [`KafkaError::Client`] when the consumer cannot be
    /// created.
    pub fn consumer<I, S>(&self, group: &str, streams: I) -> Result<KafkaConsumer, KafkaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let streams: Vec<String> = streams.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.consumer_with_reset(group, &streams, None)
    }

    /// [`consumer`](Self::consumer), with `auto.offset.reset` set to `reset` over the
    /// settings when one is given.
    pub(crate) fn consumer_with_reset(
        &self,
        group: &str,
        streams: &[String],
        reset: Option<&str>,
    ) -> Result<KafkaConsumer, KafkaError> {
        let topics = streams
            .iter()
            .map(|stream| self.inner.settings.topic(stream))
            .collect();
        KafkaConsumer::start(self.clone(), group, topics, reset)
    }

    /// Offsets committed to consumer groups, through this client's consumers.
    pub fn offsets(&self) -> GroupOffsets {
        self.inner.offsets.clone()
    }

    /// Makes sure the topics exist: checks their metadata once, and creates missing ones
    /// when `create_topics` is on. Patterns (`^...`) are not checked.
    ///
    /// # Errors
    ///
    /// [`KafkaError::TopicNotFound`], [`KafkaError::Metadata`] or
    /// [`KafkaError::CreateTopic`].
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), KafkaError> {
        let missing: Vec<String> = {
            let known = self
                .inner
                .known_topics
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            topics
                .iter()
                .filter(|topic| !topic.starts_with('^') && !known.contains(*topic))
                .cloned()
                .collect()
        };
        for topic in missing {
            if !self.topic_exists(&topic).await? {
                if !self.inner.settings.create_topics {
                    return Err(KafkaError::TopicNotFound { topic });
                }
                self.create_topic(&topic).await?;
            }
            self.mark_known(&topic);
        }
        Ok(())
    }

    /// Notes that `topic` exists: records for it go to librdkafka without a check.
    pub(crate) fn mark_known(&self, topic: &str) {
        self.inner
            .known_topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.to_owned());
    }

    /// Whether `topic` is known to exist.
    fn is_known(&self, topic: &str) -> bool {
        self.inner
            .known_topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(topic)
    }

    async fn topic_exists(&self, topic: &str) -> Result<bool, KafkaError> {
        let inner = Arc::clone(&self.inner);
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(Some(&name), inner.settings.request_timeout())
        })
        .await
        .map_err(|_| KafkaError::Closed)?
        .map_err(|source| KafkaError::metadata(topic, source, &self.inner.connections))?;
        self.inner.connections.answered();
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(false);
        };
        match found.error() {
            None => Ok(!found.partitions().is_empty()),
            Some(code) => {
                let code = RDKafkaErrorCode::from(code);
                if matches!(
                    code,
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                ) {
                    Ok(false)
                } else {
                    Err(KafkaError::Metadata {
                        topic: topic.to_owned(),
                        source: RdKafkaError::MetadataFetch(code),
                    })
                }
            }
        }
    }

    async fn create_topic(&self, topic: &str) -> Result<(), KafkaError> {
        self.create_topic_with(topic, self.inner.settings.topic_partitions, true)
            .await?;
        tracing::info!(topic, "created Kafka topic");
        Ok(())
    }
}
