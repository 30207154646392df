//! The conformance suites: what every backend and every offset store must do, written
//! once against the traits of this crate and run by each implementation from its own
//! tests (feature `conformance`).
//!
//! A backend crate's test file names a function that makes a backend on a fresh
//! connection (or `None` to skip, when its server is not running outside CI) and what
//! the backend can do, and gets one test a scenario:
//!
//! ```text
//! use logpipe_core::conformance::Features;
//!
//! async fn backend() -> Option<EmbeddedLog> {
//!     Some(EmbeddedLog::open_in_memory().unwrap())
//! }
//!
//! logpipe_core::backend_tests!(backend, Features::default());
//! logpipe_core::admin_tests!(backend, Features::default());
//! ```
//!
//! Each macro makes a module named for its suite (`backend`, `admin`, `offsets`); run
//! a suite twice (on two setups) from two modules of the test file.
//!
//! and an offset store's tests do the same with [`store_tests!`](crate::store_tests), a lease
//! store's with [`lease_tests!`](crate::lease_tests), an outbox's with
//! [`outbox_tests!`](crate::outbox_tests).
//! Every scenario uses streams and groups of its own ([`unique`]), so the suites can run
//! side by side on one server, and bounds every wait by [`WAIT`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Backend, ConsumerBackend, ConsumerEvent, PartitionRef, Record, StartFrom};

pub mod admin;
pub mod backend;
pub mod leases;
pub mod offsets;
pub mod outbox;

/// The longest any wait of a scenario takes before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// What a backend can do, where backends differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Records keep their headers (Kinesis records have none).
    pub headers: bool,
    /// Records are numbered by offsets (Kafka, the embedded log), so a range can be
    /// bounded by one.
    pub offsets: bool,
    /// A consumer of a stream that does not exist creates it (the embedded log); else
    /// its first event is a `NotFound` error.
    pub creates_streams: bool,
    /// A keyless record is written with a random key, which its readers see (a Kinesis
    /// record always has a partition key).
    pub random_keys: bool,
    /// A consumer stops reading a partition it pauses
    /// ([`ConsumerBackend::pause`]); else pausing does
    /// nothing, and only what a pause and a resume must never do (skip or repeat a
    /// record) is checked.
    pub pauses: bool,
}

impl Default for Features {
    /// Headers, offsets, a `NotFound` error for a missing stream, keyless records read
    /// without a key, and pauses.
    fn default() -> Self {
        Self {
            headers: true,
            offsets: true,
            creates_streams: false,
            random_keys: false,
            pauses: true,
        }
    }
}

/// What an offset store can keep, where stores differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFeatures {
    /// Kinesis sequence numbers as well as offsets (Kafka group commits keep offsets).
    pub sequences: bool,
    /// A position behind the stored one is refused with
    /// [`StoreError::Fenced`](crate::StoreError::Fenced) (the PostgreSQL store); else
    /// it replaces the stored one.
    pub fences: bool,
}

/// A name no other scenario, test or run uses: `what`, the process id, the time and a
/// counter.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{what}-{}-{nanos}-{n}", std::process::id())
}

/// The address a test service wrote to the variable `var` (the tests run under
/// `tests/services/run`), or `None` to skip, with a message. Under `CI=true` a missing
/// service fails the run instead: CI never passes by skipping.
///
/// # Panics
///
/// Under `CI=true` when `var` is not set.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{var} is not set under CI=true: run the tests under tests/services/run")
        }
        _ => {
            eprintln!("skipping: {var} is not set (run the tests under tests/services/run)");
            None
        }
    }
}

/// Reads `count` records of `streams` from their oldest, with a consumer of a group of
/// its own, and checks that no more arrive right after.
///
/// # Panics
///
/// When the consumer fails or the records do not arrive within [`WAIT`].
pub async fn read_all<B: Backend>(backend: &B, streams: &[String], count: usize) -> Vec<Record> {
    let mut consumer = backend
        .open_consumer(&unique("reader"), streams, StartFrom::Earliest)
        .expect("a consumer");
    let records = read(&mut consumer, count).await;
    let more = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match consumer.next_event().await.expect("reading") {
                ConsumerEvent::Records(records) if !records.is_empty() => return records,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        more.is_err(),
        "more records than the {count} sent: {more:?}"
    );
    records
}

/// Reads `count` records with `consumer`, seeking every partition assigned to where it
/// starts without a position.
///
/// # Panics
///
/// When the consumer fails or the records do not arrive within [`WAIT`].
pub async fn read<C: ConsumerBackend>(consumer: &mut C, count: usize) -> Vec<Record> {
    let mut records = Vec::new();
    let reading = async {
        while records.len() < count {
            match consumer.next_event().await.expect("reading") {
                ConsumerEvent::Assigned(partitions) => {
                    for partition in &partitions {
                        consumer.seek(partition, None).await.expect("seeking");
                    }
                }
                ConsumerEvent::Records(batch) => records.extend(batch),
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .unwrap_or_else(|_| panic!("{count} records within {WAIT:?}"));
    records
}

/// The partitions of `stream`, as the backend describes them.
///
/// # Panics
///
/// When the backend fails.
pub async fn partitions<B: Backend>(backend: &B, stream: &str) -> Vec<PartitionRef> {
    backend
        .describe_stream(stream)
        .await
        .expect("describing the stream")
        .into_iter()
        .map(|info| info.partition)
        .collect()
}

/// One test a scenario of [`backend`]: `backend_tests!(setup, features)`, where
/// `setup` names an `async fn() -> Option<impl Backend>` (`None` skips) and `features`
/// is a [`Features`] expression.
#[macro_export]
macro_rules! backend_tests {
    ($setup:ident, $features:expr) => {
        $crate::conformance_tests!(
            backend,
            $setup,
            $features,
            [
                round_trip_keeps_keys_values_headers_and_positions,
                records_of_one_key_stay_in_the_order_they_were_sent,
                a_consumer_goes_on_after_the_position_it_is_sought_to,
                partitions_are_assigned_before_their_records,
                a_missing_stream_is_not_found_or_created,
                a_stream_name_outside_the_rule_is_refused_naming_it,
                a_record_copied_to_another_stream_keeps_key_value_and_headers,
                a_paused_partition_goes_on_where_it_stopped_when_resumed,
            ]
        );
    };
}

/// One test a scenario of [`admin`]: `admin_tests!(setup, features)`, as
/// [`backend_tests!`](crate::backend_tests).
#[macro_export]
macro_rules! admin_tests {
    ($setup:ident, $features:expr) => {
        $crate::conformance_tests!(
            admin,
            $setup,
            $features,
            [
                streams_are_created_listed_and_described,
                lag_counts_the_records_after_a_position,
                a_group_moved_to_a_boundary_is_that_far_behind,
                positions_read_back_as_they_print,
                a_range_of_records_is_read_for_replay,
            ]
        );
    };
}

/// One test a scenario of [`offsets`]: `store_tests!(setup, features)`, where `setup`
/// names an `async fn() -> Option<StoreSetup<impl OffsetStore>>` (see
/// [`offsets::StoreSetup`]) and `features` is a [`StoreFeatures`] expression.
#[macro_export]
macro_rules! store_tests {
    ($setup:ident, $features:expr) => {
        $crate::conformance_tests!(
            offsets,
            $setup,
            $features,
            [
                positions_load_back_per_group,
                a_newer_position_replaces_the_older,
                an_older_position_is_fenced_or_replaces,
                a_batch_is_stored_whole_or_not_at_all,
                large_offsets_and_long_sequence_numbers_keep_every_digit,
                user_records_of_aggregated_records_are_ordered_within_their_record,
                positions_survive_a_reopen,
            ]
        );
    };
}

/// The tests of one suite. Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_tests {
    ($suite:ident, $setup:ident, $features:expr, [$($scenario:ident),* $(,)?]) => {
        mod $suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(setup) = super::$setup().await {
                        $crate::conformance::$suite::$scenario(setup, $features).await;
                    }
                }
            )*
        }
    };
}
