//! The offset-store conformance suite on the PostgreSQL server of `tests/services`
//! (`LOGPIPE_TEST_POSTGRES`), each run in a schema of its own.

use logpipe_core::PartitionRef;
use logpipe_core::conformance::offsets::StoreSetup;
use logpipe_core::conformance::{StoreFeatures, service, unique};
use logpipe_postgres::{PgOffsetStore, PgStoreOptions};

/// The test server's URL with a new schema.
pub fn options() -> Option<PgStoreOptions> {
    let url = service("LOGPIPE_TEST_POSTGRES")?;
    let schema = unique("conformance").replace('-', "_");
    Some(format!("{url}?schema={schema}").parse().unwrap())
}

async fn postgres() -> Option<StoreSetup<PgOffsetStore>> {
    let options = options()?;
    let store = PgOffsetStore::connect(&options).await.unwrap();
    let stream = unique("people");
    let partitions = vec![
        PartitionRef::new(stream.as_str(), "0"),
        PartitionRef::new(stream.as_str(), "shardId-000000000001"),
    ];
    Some(StoreSetup {
        store,
        partitions,
        reopen: Some(Box::new(move || PgOffsetStore::connect_lazy(&options))),
    })
}

logpipe_core::store_tests!(
    postgres,
    StoreFeatures {
        sequences: true,
        fences: true,
    }
);

async fn lease_store() -> Option<logpipe_postgres::PgLeaseStore> {
    Some(PgOffsetStore::connect(&options()?).await.unwrap().leases())
}

logpipe_core::lease_tests!(lease_store);

#[tokio::test]
async fn positions_are_stored_only_under_the_current_lease() {
    let Some(options) = options() else {
        return;
    };
    let store = PgOffsetStore::connect(&options).await.unwrap();
    logpipe_core::conformance::leases::positions_are_stored_only_under_the_current_lease(
        store.clone(),
        store.leases(),
    )
    .await;
}

/// Writes outbox rows in transactions of its own, as a service does.
struct PgWriter {
    outbox: logpipe_postgres::PgOutbox,
}

impl logpipe_core::conformance::outbox::OutboxWriter for PgWriter {
    async fn write(&self, records: Vec<logpipe_core::OutgoingRecord>, commit: bool) {
        let mut tx = self.outbox.pool().begin().await.unwrap();
        for record in &records {
            self.outbox.write(&mut tx, record).await.unwrap();
        }
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
}

async fn outbox() -> Option<(logpipe_postgres::PgOutbox, PgWriter)> {
    let outbox = logpipe_postgres::PgOutbox::connect(&options()?)
        .await
        .unwrap();
    Some((outbox.clone(), PgWriter { outbox }))
}

logpipe_core::outbox_tests!(outbox);

/// A record of key `k` whose value is `n`.
fn record(n: u8) -> logpipe_core::OutgoingRecord {
    logpipe_core::OutgoingRecord {
        stream: "people".into(),
        key: Some(b"k".to_vec()),
        value: vec![n],
        headers: Vec::new(),
    }
}

/// A row of a lower id that commits after one of a higher id is still sent first: the
/// later row waits while the earlier transaction runs.
#[tokio::test]
async fn an_outbox_row_waits_for_the_transactions_begun_before_it() {
    use logpipe_core::outbox::OutboxStore;

    let Some((outbox, _)) = outbox().await else {
        return;
    };
    let mut first = outbox.pool().begin().await.unwrap();
    let first_id = outbox.write(&mut first, &record(1)).await.unwrap();
    let mut second = outbox.pool().begin().await.unwrap();
    let second_id = outbox.write(&mut second, &record(2)).await.unwrap();
    assert!(first_id < second_id);
    second.commit().await.unwrap();
    assert_eq!(
        outbox.waiting(10).await.unwrap(),
        [],
        "row 2 waits for row 1's transaction"
    );
    assert_eq!(outbox.status().await.unwrap().waiting, 1);
    first.commit().await.unwrap();
    assert_eq!(values_when_settled(&outbox, 2).await, [vec![1], vec![2]]);
}

/// The values of the first `count` rows waiting, once that many are settled (another
/// test's transaction on the server may hold them back a while).
async fn values_when_settled(outbox: &logpipe_postgres::PgOutbox, count: usize) -> Vec<Vec<u8>> {
    use logpipe_core::outbox::OutboxStore;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = outbox.waiting(count).await.unwrap();
        if rows.len() == count {
            return rows.into_iter().map(|row| row.record.value).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} rows settled",
            rows.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A transaction with an early xid whose row has a higher id is not sent before the
/// lower id of a later transaction, while a third transaction keeps both unsettled.
#[tokio::test]
async fn an_early_transaction_does_not_overtake_a_lower_id() {
    use logpipe_core::outbox::OutboxStore;

    let Some((outbox, _)) = outbox().await else {
        return;
    };
    let xid = "SELECT pg_current_xact_id()::text";
    // The early transaction takes its xid first, then one stays open.
    let mut early = outbox.pool().begin().await.unwrap();
    logpipe_postgres::sqlx::query(xid)
        .execute(&mut *early)
        .await
        .unwrap();
    let mut open = outbox.pool().begin().await.unwrap();
    logpipe_postgres::sqlx::query(xid)
        .execute(&mut *open)
        .await
        .unwrap();
    // A later transaction writes the lower id and commits; then the early one writes.
    let mut later = outbox.pool().begin().await.unwrap();
    outbox.write(&mut later, &record(1)).await.unwrap();
    later.commit().await.unwrap();
    outbox.write(&mut early, &record(2)).await.unwrap();
    early.commit().await.unwrap();
    assert_eq!(
        outbox.waiting(10).await.unwrap(),
        [],
        "row 2 does not overtake row 1"
    );
    open.commit().await.unwrap();
    assert_eq!(values_when_settled(&outbox, 2).await, [vec![1], vec![2]]);
}

/// A wait for rows returns when a transaction that wrote one commits, long before its
/// timeout (the relay's poll).
#[tokio::test]
async fn a_commit_wakes_a_wait_for_rows() {
    use std::time::Duration;

    use logpipe_core::outbox::OutboxStore;

    let Some((outbox, _)) = outbox().await else {
        return;
    };
    // The first wait starts listening and returns once it listens.
    tokio::time::timeout(
        Duration::from_secs(60),
        outbox.wait_for_rows(Duration::from_secs(600)),
    )
    .await
    .expect("the first wait returns once the listener listens");
    let waiting = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.wait_for_rows(Duration::from_secs(600)).await })
    };
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.write(&mut tx, &record(1)).await.unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the commit wakes the wait")
        .unwrap();
}
