//! The few Kinesis calls the driver makes, behind a trait that can be wrapped.

use std::time::SystemTime;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::put_record::PutRecordOutput;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use tokio::sync::OnceCell;

use logpipe_core::BoxFuture;

use crate::KinesisError;

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// At the oldest record kept.
    TrimHorizon,
    /// Just after the newest record: only records written from now on.
    Latest,
    /// At the first record written at or after this time.
    AtTimestamp(SystemTime),
    /// Just after the record with this sequence number.
    AfterSequenceNumber(String),
    /// At the record with this sequence number.
    AtSequenceNumber(String),
}

/// One `PutRecord` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordRequest {
    /// The stream.
    pub stream: String,
    /// The partition key.
    pub partition_key: String,
    /// The record data.
    pub data: Vec<u8>,
    /// The sequence number the record must come after in its shard
    /// (`SequenceNumberForOrdering`).
    pub sequence_number_for_ordering: Option<String>,
}

/// The Kinesis calls the driver makes.
///
/// [`SdkApi`] makes them with aws-sdk-kinesis. A wrapper can change what a call answers,
/// for example to answer `ProvisionedThroughputExceededException` (see
/// [`KinesisError::service`]) and so test how the driver copes with throttling.
pub trait KinesisApi: Send + Sync + 'static {
    /// `PutRecords` of `entries` (at most 500) to `stream`.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails as a whole.
    fn put_records(
        &self,
        stream: String,
        entries: Vec<PutRecordsRequestEntry>,
    ) -> BoxFuture<'_, Result<PutRecordsOutput, KinesisError>>;

    /// One `PutRecord`.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the record was not written.
    fn put_record(
        &self,
        request: PutRecordRequest,
    ) -> BoxFuture<'_, Result<PutRecordOutput, KinesisError>>;

    /// One page of `ListShards` of `stream` (the first when `next_token` is `None`).
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails.
    fn list_shards(
        &self,
        stream: String,
        next_token: Option<String>,
    ) -> BoxFuture<'_, Result<ListShardsOutput, KinesisError>>;

    /// `GetShardIterator` of a shard; returns the iterator.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails.
    fn get_shard_iterator(
        &self,
        stream: String,
        shard_id: String,
        start: StartPosition,
    ) -> BoxFuture<'_, Result<String, KinesisError>>;

    /// `GetRecords` from `iterator`, at most `limit` records.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails.
    fn get_records(
        &self,
        iterator: String,
        limit: i32,
    ) -> BoxFuture<'_, Result<GetRecordsOutput, KinesisError>>;

    /// The names of every stream (all pages of `ListStreams`). Operator tools use it; the
    /// default answers that the call is not available.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails or is not available.
    fn list_streams(&self) -> BoxFuture<'_, Result<Vec<String>, KinesisError>> {
        Box::pin(async { Err(not_available("ListStreams")) })
    }

    /// The status of `stream` (`CREATING`, `ACTIVE`, ...), from `DescribeStreamSummary`.
    /// Operator tools use it; the default answers that the call is not available.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails or is not available.
    fn stream_status(&self, stream: String) -> BoxFuture<'_, Result<String, KinesisError>> {
        let _ = stream;
        Box::pin(async { Err(not_available("DescribeStreamSummary")) })
    }

    /// `CreateStream` of `stream` with `shards` shards (provisioned). Operator tools use
    /// it; the default answers that the call is not available.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when the call fails or is not available.
    fn create_stream(
        &self,
        stream: String,
        shards: i32,
    ) -> BoxFuture<'_, Result<(), KinesisError>> {
        let _ = (stream, shards);
        Box::pin(async { Err(not_available("CreateStream")) })
    }
}

fn not_available(operation: &'static str) -> KinesisError {
    KinesisError::Other {
        operation,
        source: "this KinesisApi does not make this call".into(),
    }
}

/// Where the SDK client connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// The AWS region; `None` takes it from the standard AWS chain (`AWS_REGION`, the
    /// profile, ...).
    pub region: Option<String>,
    /// Another endpoint than AWS's, such as an emulator (`http://127.0.0.1:4567`).
    pub endpoint: Option<String>,
}

/// A client of `options` that signs its calls with fixed access keys instead of the
/// standard AWS chain, as an emulator (kinesis-mock, LocalStack) takes: any keys do
/// there. Without a region in `options`, `us-east-1`.
///
/// ```
/// use logpipe_kinesis::{ClientOptions, client_with_keys};
///
/// let options = ClientOptions {
///     region: Some("us-east-1".into()),
///     endpoint: Some("http://127.0.0.1:4567".into()),
/// };
/// let client = client_with_keys(&options, "test", "test");
/// assert_eq!(client.config().region().map(|r| r.as_ref()), Some("us-east-1"));
/// ```
pub fn client_with_keys(options: &ClientOptions, key_id: &str, secret: &str) -> Client {
    let mut config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new(
            options
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned()),
        ))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            key_id, secret, None, None, "logpipe",
        ));
    if let Some(endpoint) = &options.endpoint {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

/// [`KinesisApi`] over aws-sdk-kinesis. The client is built on first use, with
/// credentials from the standard AWS chain.
#[derive(Debug)]
pub struct SdkApi {
    options: ClientOptions,
    client: OnceCell<Client>,
}

impl SdkApi {
    /// An API that builds its client from `options` on first use.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            options,
            client: OnceCell::new(),
        }
    }

    /// An API over a client built by the caller.
    pub fn from_client(client: Client) -> Self {
        Self {
            options: ClientOptions::default(),
            client: OnceCell::new_with(Some(client)),
        }
    }

    /// The SDK client, built on first use.
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &self.options.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(endpoint) = &self.options.endpoint {
                    loader = loader.endpoint_url(endpoint.clone());
                }
                Client::new(&loader.load().await)
            })
            .await
    }
}

impl KinesisApi for SdkApi {
    fn put_records(
        &self,
        stream: String,
        entries: Vec<PutRecordsRequestEntry>,
    ) -> BoxFuture<'_, Result<PutRecordsOutput, KinesisError>> {
        Box::pin(async move {
            self.client()
                .await
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("PutRecords", err))
        })
    }

    fn put_record(
        &self,
        request: PutRecordRequest,
    ) -> BoxFuture<'_, Result<PutRecordOutput, KinesisError>> {
        Box::pin(async move {
            self.client()
                .await
                .put_record()
                .stream_name(request.stream)
                .partition_key(request.partition_key)
                .data(Blob::new(request.data))
                .set_sequence_number_for_ordering(request.sequence_number_for_ordering)
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("PutRecord", err))
        })
    }

    fn list_shards(
        &self,
        stream: String,
        next_token: Option<String>,
    ) -> BoxFuture<'_, Result<ListShardsOutput, KinesisError>> {
        Box::pin(async move {
            let call = self.client().await.list_shards();
            // The stream name must not be given with a continuation token.
            let call = match next_token {
                Some(token) => call.next_token(token),
                None => call.stream_name(stream),
            };
            call.send()
                .await
                .map_err(|err| KinesisError::from_sdk("ListShards", err))
        })
    }

    fn get_shard_iterator(
        &self,
        stream: String,
        shard_id: String,
        start: StartPosition,
    ) -> BoxFuture<'_, Result<String, KinesisError>> {
        Box::pin(async move {
            let call = self
                .client()
                .await
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard_id);
            let call = match start {
                StartPosition::TrimHorizon => {
                    call.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                StartPosition::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
                StartPosition::AtTimestamp(at) => call
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from(at)),
                StartPosition::AfterSequenceNumber(sequence) => call
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(sequence),
                StartPosition::AtSequenceNumber(sequence) => call
                    .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .starting_sequence_number(sequence),
            };
            let output = call
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("GetShardIterator", err))?;
            output.shard_iterator.ok_or_else(|| KinesisError::Other {
                operation: "GetShardIterator",
                source: "the answer has no shard iterator".into(),
            })
        })
    }

    fn get_records(
        &self,
        iterator: String,
        limit: i32,
    ) -> BoxFuture<'_, Result<GetRecordsOutput, KinesisError>> {
        Box::pin(async move {
            self.client()
                .await
                .get_records()
                .shard_iterator(iterator)
                .limit(limit)
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("GetRecords", err))
        })
    }

    fn list_streams(&self) -> BoxFuture<'_, Result<Vec<String>, KinesisError>> {
        Box::pin(async move {
            let client = self.client().await;
            let mut names: Vec<String> = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let call = client.list_streams();
                // Pages follow the token, or (where none is given, as in older servers
                // and emulators) the last name of the page before.
                let call = match (token.take(), names.last()) {
                    (Some(token), _) => call.next_token(token),
                    (None, Some(last)) => call.exclusive_start_stream_name(last.clone()),
                    (None, None) => call,
                };
                let page = call
                    .send()
                    .await
                    .map_err(|err| KinesisError::from_sdk("ListStreams", err))?;
                let before = names.len();
                names.extend(page.stream_names().iter().cloned());
                if !page.has_more_streams() || names.len() == before {
                    break;
                }
                token = page.next_token().map(str::to_owned);
            }
            names.sort();
            Ok(names)
        })
    }

    fn create_stream(
        &self,
        stream: String,
        shards: i32,
    ) -> BoxFuture<'_, Result<(), KinesisError>> {
        Box::pin(async move {
            self.client()
                .await
                .create_stream()
                .stream_name(stream)
                .shard_count(shards)
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("CreateStream", err))?;
            Ok(())
        })
    }

    fn stream_status(&self, stream: String) -> BoxFuture<'_, Result<String, KinesisError>> {
        Box::pin(async move {
            let output = self
                .client()
                .await
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .map_err(|err| KinesisError::from_sdk("DescribeStreamSummary", err))?;
            Ok(output
                .stream_description_summary()
                .map(|summary| summary.stream_status().as_str().to_owned())
                .unwrap_or_default())
        })
    }
}
