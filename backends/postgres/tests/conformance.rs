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
