//! The conformance suites on kinesis-mock (`LOGPIPE_TEST_KINESIS`): the backend and its
//! admin calls. Kinesis records have no headers and shards have no offsets.

use std::sync::Arc;

use logpipe_core::conformance::{Features, service};
use logpipe_kinesis::{ClientOptions, KinesisBackend, KinesisOptions, SdkApi, client_with_keys};

const REGION: &str = "us-east-1";

/// Kinesis as the emulator serves it: dummy credentials, a fixed region, quick polls.
async fn kinesis() -> Option<KinesisBackend> {
    let endpoint = service("LOGPIPE_TEST_KINESIS")?;
    let client = client_with_keys(
        &ClientOptions {
            region: Some(REGION.into()),
            endpoint: Some(endpoint),
        },
        "test",
        "test",
    );
    let api = Arc::new(SdkApi::from_client(client));
    let options = KinesisOptions {
        poll_interval_ms: 100,
        ..KinesisOptions::default()
    };
    Some(KinesisBackend::with_api(api, REGION, options).unwrap())
}

const FEATURES: Features = Features {
    headers: false,
    offsets: false,
    creates_streams: false,
    random_keys: true,
    pauses: true,
};

logpipe_core::backend_tests!(kinesis, FEATURES);
logpipe_core::admin_tests!(kinesis, FEATURES);
