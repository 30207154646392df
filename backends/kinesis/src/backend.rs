//! The contract of `logpipe-core` over the driver: a [`KinesisBackend`] is a
//! [`Backend`] whose consumers read every shard of their streams.

use std::sync::Arc;

use logpipe_core::{
    Backend, BackendError, BackendErrorKind, ConsumerBackend, ConsumerEvent, Delivery,
    DeliveryFuture, OutgoingRecord, PartitionRef, Position, ProducerBackend, Record, StartFrom,
};

use crate::{
    ClientOptions, InitialPosition, KinesisApi, KinesisError, KinesisOptions, KinesisProducer,
    KinesisUrl, ReaderEvent, ReaderOptions, SdkApi, ShardPosition, ShardReader, ShardRef,
    StartPosition,
};

/// Maps a driver error to a [`BackendError`], keeping it as the source.
pub fn backend_error(error: KinesisError) -> BackendError {
    let kind = if error.is_not_found() {
        BackendErrorKind::NotFound
    } else {
        let inner = match &error {
            KinesisError::Batch { source, .. } => &**source,
            other => other,
        };
        match inner {
            KinesisError::Connection { .. } => BackendErrorKind::Connection,
            KinesisError::Timeout { .. } => BackendErrorKind::Timeout,
            _ if inner.is_rejected() => BackendErrorKind::Rejected,
            _ => BackendErrorKind::Other,
        }
    };
    let retriable = error.is_retriable();
    let mapped = BackendError::new(kind, "Kinesis").with_source(error);
    if retriable {
        mapped.retriable()
    } else {
        mapped
    }
}

/// A Kinesis backend: a producer and a factory of consumers sharing one client.
/// Clones share them.
#[derive(Clone)]
pub struct KinesisBackend {
    api: Arc<dyn KinesisApi>,
    producer: KinesisProducer,
    region: Arc<str>,
    options: KinesisOptions,
}

impl std::fmt::Debug for KinesisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBackend")
            .field("region", &self.region)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KinesisBackend {
    /// A backend in `region` (else `AWS_REGION`, else `AWS_DEFAULT_REGION`), at
    /// `endpoint` if given (an emulator), with credentials from the standard AWS
    /// chain. The client is built on first use.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` when no region is known or `options` are
    /// not valid.
    pub fn connect(
        region: Option<&str>,
        endpoint: Option<&str>,
        options: KinesisOptions,
    ) -> Result<Self, BackendError> {
        let region = region
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| {
                std::env::var("AWS_DEFAULT_REGION")
                    .ok()
                    .filter(|r| !r.is_empty())
            })
            .ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    "no AWS region: use kinesis://?region=REGION or set AWS_REGION",
                )
            })?;
        let api = SdkApi::new(ClientOptions {
            region: Some(region.clone()),
            endpoint: endpoint.map(str::to_owned),
        });
        Self::with_api(Arc::new(api), &region, options)
    }

    /// A backend making its calls through `api` (for example a client built by the
    /// caller with [`SdkApi::from_client`], or a wrapper
    /// of one), in `region`.
    ///
    /// # Errors
    ///
    /// [`BackendError`] of kind `Rejected` when `options` are not valid.
    pub fn with_api(
        api: Arc<dyn KinesisApi>,
        region: &str,
        options: KinesisOptions,
    ) -> Result<Self, BackendError> {
        // Check the reader's options now, so that building a consumer cannot fail.
        options.reader_options().validate().map_err(backend_error)?;
        let producer = KinesisProducer::new(Arc::clone(&api), options.producer_options())
            .map_err(backend_error)?;
        Ok(Self {
            api,
            producer,
            region: region.into(),
            options,
        })
    }

    /// The Kinesis calls this backend makes, for operator tools.
    pub fn api(&self) -> &Arc<dyn KinesisApi> {
        &self.api
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A consumer of every shard of `streams`, starting shards without a stored
    /// position at the configured `start_at`.
    pub fn consumer<I, S>(&self, streams: I) -> KinesisConsumer
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.consumer_from(streams, self.options.reader_options())
    }

    fn consumer_from<I, S>(&self, streams: I, options: ReaderOptions) -> KinesisConsumer
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        let reader = ShardReader::new(Arc::clone(&self.api), streams, options)
            .expect("the options were checked when the backend was made");
        KinesisConsumer { inner: reader }
    }

    /// A backend for a `kinesis://` URL (see [`KinesisUrl`]), with credentials from the
    /// standard AWS chain.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_url(url: &KinesisUrl, options: KinesisOptions) -> Result<Self, BackendError> {
        Self::connect(url.region.as_deref(), url.endpoint.as_deref(), options)
    }
}

/// Kinesis has no consumer groups here: every consumer reads every shard of its
/// streams, and the group only names where positions are kept, qualified by region.
impl Backend for KinesisBackend {
    type Consumer = KinesisConsumer;

    fn open_consumer(
        &self,
        _group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<KinesisConsumer, BackendError> {
        let mut options = self.options.reader_options();
        match start {
            StartFrom::Earliest => options.initial_position = InitialPosition::TrimHorizon,
            StartFrom::Latest => options.initial_position = InitialPosition::Latest,
            _ => {}
        }
        Ok(self.consumer_from(streams.iter().map(String::as_str), options))
    }

    /// `GROUP@REGION`: one stream name in two regions keeps two sets of positions.
    fn position_group(&self, group: &str) -> String {
        format!("{group}@{}", self.region)
    }
}

impl ProducerBackend for KinesisBackend {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
        if !record.headers.is_empty() {
            let headers: Vec<(&str, String)> = record
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.as_str(),
                        String::from_utf8_lossy(&h.value).into_owned(),
                    )
                })
                .collect();
            tracing::info!(stream = %record.stream, ?headers, "Kinesis records have no headers; writing the record without them");
        }
        let delivered = self
            .producer
            .enqueue(&record.stream, record.key.as_deref(), record.value)
            .map_err(backend_error)?;
        let stream = record.stream;
        Ok(DeliveryFuture::new(async move {
            let delivered = delivered.await.map_err(backend_error)?;
            Ok(Delivery {
                partition: PartitionRef::new(stream, delivered.shard_id),
                position: Position::Sequence(delivered.sequence_number),
            })
        }))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        self.producer.flush().await;
        Ok(())
    }
}

/// Reads every shard of some Kinesis streams, parents before children.
#[derive(Debug)]
pub struct KinesisConsumer {
    inner: ShardReader,
}

impl ConsumerBackend for KinesisConsumer {
    async fn next_event(&mut self) -> Result<ConsumerEvent, BackendError> {
        match self.inner.next_event().await.map_err(backend_error)? {
            ReaderEvent::Assigned(shards) => Ok(ConsumerEvent::Assigned(
                shards
                    .into_iter()
                    .map(|shard| PartitionRef::new(shard.stream, shard.shard_id))
                    .collect(),
            )),
            ReaderEvent::Records(records) => Ok(ConsumerEvent::Records(
                records
                    .into_iter()
                    .map(|record| Record {
                        partition: PartitionRef::new(record.shard.stream, record.shard.shard_id),
                        position: Position::Sequence(record.sequence_number),
                        key: Some(record.partition_key.into_bytes()),
                        value: record.data,
                        headers: Vec::new(),
                        timestamp: record.arrival,
                    })
                    .collect(),
            )),
            ReaderEvent::ReadsFailing { since, reason } => {
                Ok(ConsumerEvent::ReadsFailing { since, reason })
            }
            ReaderEvent::ReadsSucceed => Ok(ConsumerEvent::ReadsSucceed),
        }
    }

    async fn seek(
        &mut self,
        partition: &PartitionRef,
        after: Option<&Position>,
    ) -> Result<(), BackendError> {
        let shard = shard_of(partition);
        let sought = match after {
            None => self.inner.seek(&shard, None),
            Some(position) => {
                let start = StartPosition::from(&ShardPosition::from_position(position)?);
                self.inner.seek_to(&shard, start)
            }
        };
        sought.map_err(backend_error)
    }

    fn pause(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            self.inner
                .pause(&shard_of(partition))
                .map_err(backend_error)?;
        }
        Ok(())
    }

    fn resume(&mut self, partitions: &[PartitionRef]) -> Result<(), BackendError> {
        for partition in partitions {
            self.inner
                .resume(&shard_of(partition))
                .map_err(backend_error)?;
        }
        Ok(())
    }
}

/// The shard a partition names.
fn shard_of(partition: &PartitionRef) -> ShardRef {
    ShardRef {
        stream: Arc::clone(&partition.stream),
        shard_id: Arc::clone(&partition.partition),
    }
}
