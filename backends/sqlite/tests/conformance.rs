//! The conformance suites on the embedded log, in a file and in memory, and on the
//! SQLite offset store.

use logpipe_core::PartitionRef;
use logpipe_core::conformance::offsets::StoreSetup;
use logpipe_core::conformance::{Features, StoreFeatures};
use logpipe_sqlite::{EmbeddedLog, SqliteOffsetStore};

/// The embedded log creates a stream on its first use.
const FEATURES: Features = Features {
    headers: true,
    offsets: true,
    creates_streams: true,
    random_keys: false,
    pauses: true,
};

/// A file of its own in Cargo's scratch directory for integration tests, which outlives
/// the test (the suites use the file from other tasks, and a store is opened again).
fn file(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-conformance");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(logpipe_core::conformance::unique(name))
}

mod file {
    use super::*;

    async fn log() -> Option<EmbeddedLog> {
        Some(EmbeddedLog::open(file("log.db")).unwrap())
    }

    logpipe_core::backend_tests!(log, FEATURES);
    logpipe_core::admin_tests!(log, FEATURES);
}

mod memory {
    use super::*;

    async fn log() -> Option<EmbeddedLog> {
        Some(EmbeddedLog::open_in_memory().unwrap())
    }

    logpipe_core::backend_tests!(log, FEATURES);
    logpipe_core::admin_tests!(log, FEATURES);
}

async fn store() -> Option<StoreSetup<SqliteOffsetStore>> {
    let path = file("positions.db");
    let reopen = move || SqliteOffsetStore::open(&path).unwrap();
    Some(StoreSetup {
        store: reopen(),
        partitions: vec![
            PartitionRef::new("people", "0"),
            PartitionRef::new("people", "1"),
        ],
        reopen: Some(Box::new(reopen)),
    })
}

logpipe_core::store_tests!(
    store,
    StoreFeatures {
        sequences: true,
        fences: true,
    }
);

async fn lease_store() -> Option<logpipe_sqlite::SqliteLeaseStore> {
    Some(logpipe_sqlite::SqliteLeaseStore::open(file("leases.db")).unwrap())
}

logpipe_core::lease_tests!(lease_store);

#[tokio::test]
async fn positions_are_stored_only_under_the_current_lease() {
    let path = file("fenced.db");
    logpipe_core::conformance::leases::positions_are_stored_only_under_the_current_lease(
        SqliteOffsetStore::open(&path).unwrap(),
        logpipe_sqlite::SqliteLeaseStore::open(&path).unwrap(),
    )
    .await;
}

/// Writes outbox rows over a connection of its own, as a service does.
struct SqliteWriter {
    path: std::path::PathBuf,
}

impl logpipe_core::conformance::outbox::OutboxWriter for SqliteWriter {
    async fn write(&self, records: Vec<logpipe_core::OutgoingRecord>, commit: bool) {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            let tx = conn.transaction().unwrap();
            for record in &records {
                logpipe_sqlite::SqliteOutbox::write(&tx, record).unwrap();
            }
            if commit {
                tx.commit().unwrap();
            }
        })
        .await
        .unwrap();
    }
}

async fn outbox() -> Option<(logpipe_sqlite::SqliteOutbox, SqliteWriter)> {
    let path = file("outbox.db");
    let outbox = logpipe_sqlite::SqliteOutbox::open(&path).unwrap();
    Some((outbox, SqliteWriter { path }))
}

logpipe_core::outbox_tests!(outbox);
