//! The contract of `logpipe-core` over the driver: a [`KinesisBackend`] is a
//! [`Backend`] whose consumers read every shard of their streams, or share them through
//! leases.

use std::sync::Arc;

use logpipe_core::leases::{AnyLeaseStore, LeaseKeeper, Leaser};
use logpipe_core::{
    Backend, BackendError, BackendErrorKind, Delivery, DeliveryFuture, OutgoingRecord,
    PartitionRef, Position, ProducerBackend, StartFrom,
};

use crate::consumer::ListedUnits;
use crate::{
    ClientOptions, InitialPosition, KinesisApi, KinesisConsumer, KinesisError, KinesisOptions,
    KinesisProducer, KinesisUrl, ReaderOptions, SdkApi, ShardReader,
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
    /// Where consumer groups keep their shard leases, if anywhere.
    leases: Option<AnyLeaseStore>,
    /// Whether consumers store positions under their leases.
    fence_positions: bool,
}

impl std::fmt::Debug for KinesisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBackend")
            .field("region", &self.region)
            .field("options", &self.options)
            .field("leases", &self.leases.is_some())
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
            leases: None,
            fence_positions: true,
        })
    }

    /// This backend with its consumer groups' shard leases in `store`: the consumers of
    /// a group ([`Backend::open_consumer`]), in this process and others using the same
    /// store, share the shards of their streams, each shard read by one of them at a
    /// time, holding them as the `lease_*` settings and `worker_id` say.
    ///
    /// A consumer holds the shards it leases, and takes leases that are free (never
    /// taken, given up, or expired) and, while it holds fewer than its fair share, one a
    /// round from the busiest consumer, so that the group converges to an even split. A
    /// child shard is leased once its parents' leases are finished: a parent is finished
    /// when it was read to its end and its last position stored. A consumer that stops
    /// gives its leases up, once its positions are stored; those of a process that died
    /// are taken when they expire.
    #[must_use]
    pub fn with_leases(mut self, store: AnyLeaseStore) -> Self {
        self.leases = Some(store);
        self
    }

    /// Whether the consumers of its groups store positions under their leases
    /// ([`ConsumerBackend::lease_fences`](logpipe_core::ConsumerBackend::lease_fences)),
    /// which an offset store checks against the leases in its own database. True by
    /// default: the lease store is the offset store's database. Set it false when it is
    /// not, so that no lease rows left in the offset store's database (from an earlier
    /// setup) are taken for the group's.
    pub fn fencing_positions(mut self, fence: bool) -> Self {
        self.fence_positions = fence;
        self
    }

    /// Where its consumer groups keep their shard leases, if anywhere.
    pub fn lease_store(&self) -> Option<&AnyLeaseStore> {
        self.leases.as_ref()
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
        KinesisConsumer::new(self.reader(streams, options))
    }

    fn reader<I, S>(&self, streams: I, options: ReaderOptions) -> ShardReader
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        ShardReader::new(Arc::clone(&self.api), streams, options)
            .expect("the options were checked when the backend was made")
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

/// Kinesis has no consumer groups of its own. With a lease store
/// ([`with_leases`](KinesisBackend::with_leases)), the consumers of a group share the
/// shards through leases of the group qualified by region; without one (or for the group
/// `""`), every consumer reads every shard of its streams. The group also names where
/// positions are kept, qualified by region.
///
/// The leases are renewed on a task of their own, started by the first
/// [`next_event`](logpipe_core::ConsumerBackend::next_event).
impl Backend for KinesisBackend {
    type Consumer = KinesisConsumer;

    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<KinesisConsumer, BackendError> {
        for stream in streams {
            logpipe_core::check_stream_name(stream)?;
        }
        let mut options = self.options.reader_options();
        match start {
            StartFrom::Earliest => options.initial_position = InitialPosition::TrimHorizon,
            StartFrom::Latest => options.initial_position = InitialPosition::Latest,
            _ => {}
        }
        let streams = streams.iter().map(|s| Arc::from(s.as_str()));
        let Some(store) = self.leases.clone().filter(|_| !group.is_empty()) else {
            return Ok(self.consumer_from(streams, options));
        };
        let lease_options = self.options.lease_options().in_process(group);
        let units = Arc::new(ListedUnits::new(
            Arc::clone(&self.api),
            streams.collect(),
            options.shard_discovery_interval,
        ));
        let keeper = LeaseKeeper::new(Leaser::new(store, group, lease_options), units.lister());
        let reader = self.reader(Vec::<Arc<str>>::new(), options);
        Ok(KinesisConsumer::leased(
            reader,
            keeper,
            units,
            self.fence_positions,
        ))
    }

    /// `GROUP@REGION`: one stream name in two regions keeps two sets of positions.
    fn position_group(&self, group: &str) -> String {
        format!("{group}@{}", self.region)
    }
}

impl ProducerBackend for KinesisBackend {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, BackendError> {
        logpipe_core::check_stream_name(&record.stream)?;
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
