//! The handler's transaction, marks and fencing, on the PostgreSQL server of
//! `tests/services` (`LOGPIPE_TEST_POSTGRES`), each test in a schema of its own.

use std::time::Duration;

use logpipe_core::conformance::{service, unique};
use logpipe_core::{Context, OffsetStore, PartitionRef, Position, StoreError, error_chain};
use logpipe_postgres::{PgOffsetStore, PgStoreOptions};

/// A store in a new schema, with a table `people` of its own beside the store's.
async fn store() -> Option<(PgOffsetStore, String)> {
    let url = service("LOGPIPE_TEST_POSTGRES")?;
    let schema = unique("tx").replace('-', "_");
    let options: PgStoreOptions = format!("{url}?schema={schema}").parse().unwrap();
    let store = PgOffsetStore::connect(&options).await.unwrap();
    let table = format!("{schema}.people");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (n bigint PRIMARY KEY)"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    Some((store, table))
}

fn context(partition: &PartitionRef, position: Position) -> Context {
    Context::new("billing", partition.clone(), position)
}

async fn insert(tx: &mut sqlx::PgConnection, table: &str, n: i64) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES ($1)"
    )))
    .bind(n)
    .execute(tx)
    .await
    .unwrap();
}

async fn rows(store: &PgOffsetStore, table: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT n FROM {table} ORDER BY n"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_rows_and_the_mark_commit_together_or_not_at_all() {
    let Some((store, table)) = store().await else {
        return;
    };
    let partition = PartitionRef::new("people", "0");
    let mut tx = store
        .begin(&context(&partition, Position::Offset(3)))
        .await
        .unwrap();
    insert(&mut tx, &table, 3).await;
    tx.commit().await.unwrap();

    let mut tx = store
        .begin(&context(&partition, Position::Offset(4)))
        .await
        .unwrap();
    insert(&mut tx, &table, 4).await;
    drop(tx); // the handler failed before committing

    assert_eq!(rows(&store, &table).await, [3]);
    assert_eq!(
        store.load_handled("billing", &partition).await.unwrap(),
        [Position::Offset(3)]
    );
    assert_eq!(
        store.load("billing", &partition).await.unwrap(),
        None,
        "a mark is not a stored position: the consumer stores those"
    );
    // The record rolled back is handled again from the start.
    let mut tx = store
        .begin(&context(&partition, Position::Offset(4)))
        .await
        .unwrap();
    insert(&mut tx, &table, 4).await;
    tx.commit().await.unwrap();
    assert_eq!(rows(&store, &table).await, [3, 4]);
}

#[tokio::test]
async fn storing_a_position_forgets_the_marks_up_to_it_and_a_reset_forgets_all() {
    let Some((store, _)) = store().await else {
        return;
    };
    let partition = PartitionRef::new("people", "0");
    let contexts: Vec<Context> = [3, 5, 9, 12]
        .into_iter()
        .map(|n| context(&partition, Position::Offset(n)))
        .collect();
    store
        .begin_batch(&contexts)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let other_group = Context::new("search", partition.clone(), Position::Offset(4));
    store
        .begin(&other_group)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();

    store
        .store("billing", &[(partition.clone(), Position::Offset(5))])
        .await
        .unwrap();
    assert_eq!(
        store.load_handled("billing", &partition).await.unwrap(),
        [Position::Offset(9), Position::Offset(12)]
    );
    assert_eq!(
        store.load_handled("search", &partition).await.unwrap(),
        [Position::Offset(4)],
        "another group's marks stay"
    );
    store
        .reset("billing", &[(partition.clone(), Position::Offset(2))])
        .await
        .unwrap();
    assert_eq!(store.load_handled("billing", &partition).await.unwrap(), []);
    assert_eq!(
        store.load("billing", &partition).await.unwrap(),
        Some(Position::Offset(2)),
        "a reset moves a position back"
    );
}

#[tokio::test]
async fn sequence_numbers_are_compared_as_numbers() {
    let Some((store, _)) = store().await else {
        return;
    };
    let shard = PartitionRef::new("people", "shardId-000000000000");
    let sequence = |s: &str| Position::Sequence(s.to_owned());
    let long = "49590338271490256608559692538361571095921575989136588898";
    // User records of the aggregated record 10 come before 10 itself.
    let contexts: Vec<Context> = ["9", "10:1", "10:12", "10", long]
        .into_iter()
        .map(|s| context(&shard, sequence(s)))
        .collect();
    store
        .begin_batch(&contexts)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(
        store.load_handled("billing", &shard).await.unwrap(),
        ["9", "10:1", "10:12", "10", long].map(sequence),
        "in position order"
    );
    store
        .store("billing", &[(shard.clone(), sequence("10:12"))])
        .await
        .unwrap();
    assert_eq!(
        store.load_handled("billing", &shard).await.unwrap(),
        ["10", long].map(sequence)
    );
    store
        .store("billing", &[(shard.clone(), sequence("10"))])
        .await
        .unwrap();
    assert_eq!(
        store.load_handled("billing", &shard).await.unwrap(),
        [sequence(long)]
    );
    // A record below the stored sequence number by value, above it as text.
    let fenced = store.begin(&context(&shard, sequence("9"))).await;
    assert!(
        matches!(fenced, Err(StoreError::Fenced { .. })),
        "{fenced:?}"
    );
}

#[tokio::test]
async fn an_old_owner_cannot_mark_a_record_its_successor_covered_or_store_an_older_position() {
    let Some((store, table)) = store().await else {
        return;
    };
    let partition = PartitionRef::new("people", "1");
    // The new owner handled up to offset 10 and stored it.
    store
        .store("billing", &[(partition.clone(), Position::Offset(10))])
        .await
        .unwrap();
    // The old owner wakes up with record 7 in hand.
    let err = store
        .begin(&context(&partition, Position::Offset(7)))
        .await
        .unwrap_err();
    match &err {
        StoreError::Fenced {
            attempted, stored, ..
        } => assert_eq!(
            (attempted, stored),
            (&Position::Offset(7), &Position::Offset(10))
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("another consumer owns the partition"),
        "{err}"
    );
    // ... and with its watermark of 8.
    let err = store
        .store("billing", &[(partition.clone(), Position::Offset(8))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert_eq!(
        store.load("billing", &partition).await.unwrap(),
        Some(Position::Offset(10)),
        "the position did not move back"
    );
    // A batch with one fenced record marks none of it.
    let batch = [
        context(&partition, Position::Offset(11)),
        context(&partition, Position::Offset(9)),
    ];
    assert!(matches!(
        store.begin_batch(&batch).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(store.load_handled("billing", &partition).await.unwrap(), []);
    // Records past the stored position are still the new owner's to handle.
    let mut tx = store
        .begin(&context(&partition, Position::Offset(11)))
        .await
        .unwrap();
    insert(&mut tx, &table, 11).await;
    tx.commit().await.unwrap();
    assert_eq!(rows(&store, &table).await, [11]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_handling_one_record_at_once_apply_it_once() {
    let Some((store, table)) = store().await else {
        return;
    };
    let partition = PartitionRef::new("people", "2");
    let record = context(&partition, Position::Offset(5));
    let mut first = store.begin(&record).await.unwrap();
    insert(&mut first, &table, 5).await;
    // The second owner's mark waits for the first transaction to end.
    let second = tokio::spawn({
        let (store, record) = (store.clone(), record.clone());
        async move { store.begin(&record).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second mark waits for the first");
    first.commit().await.unwrap();
    let second = second.await.unwrap();
    assert!(
        matches!(second, Err(StoreError::Fenced { .. })),
        "{second:?}"
    );
    assert_eq!(rows(&store, &table).await, [5]);
}

#[tokio::test]
async fn a_store_whose_tables_were_made_by_migrate_uses_them_and_migrate_runs_twice() {
    let Some(url) = service("LOGPIPE_TEST_POSTGRES") else {
        return;
    };
    let schema = unique("migrated").replace('-', "_");
    let options: PgStoreOptions = format!("{url}?schema={schema}").parse().unwrap();
    let store = PgOffsetStore::connect_lazy(&options);
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    let partition = PartitionRef::new("people", "0");
    store
        .store("billing", &[(partition.clone(), Position::Offset(1))])
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        tables, 3,
        "logpipe_positions, logpipe_handled and logpipe_leases"
    );
}

#[tokio::test]
async fn a_wrong_password_or_an_unreachable_server_fails_on_connect_without_showing_the_password() {
    let Some(url) = service("LOGPIPE_TEST_POSTGRES") else {
        return;
    };
    let wrong = url.replacen(":logpipe-test-password@", ":not-the-password@", 1);
    assert_ne!(wrong, url, "the test URL carries the test password");
    let err = PgOffsetStore::connect(&wrong.parse().unwrap())
        .await
        .unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("password authentication failed"), "{chain}");
    assert!(!chain.contains("not-the-password"), "{chain}");

    let unreachable: PgStoreOptions = "postgres://app:s3cret@127.0.0.1:1/x?connect_timeout_ms=2000"
        .parse()
        .unwrap();
    let err = PgOffsetStore::connect(&unreachable).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(!chain.contains("s3cret"), "{chain}");
    assert!(format!("{:?}", PgOffsetStore::connect_lazy(&unreachable)).contains("app:***@"));
}

#[tokio::test]
async fn tls_is_taken_from_the_url_and_a_server_certificate_is_checked_when_asked() {
    let (Some(url), Some(ca)) = (
        service("LOGPIPE_TEST_POSTGRES"),
        service("LOGPIPE_TEST_POSTGRES_CA"),
    ) else {
        return;
    };
    let tls_in_use = |store: PgOffsetStore| async move {
        sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let plain = PgOffsetStore::connect(&format!("{url}?sslmode=disable").parse().unwrap())
        .await
        .unwrap();
    assert!(!tls_in_use(plain).await);
    for checked in [
        format!("{url}?sslmode=require"),
        format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let store = PgOffsetStore::connect(&checked.parse().unwrap())
            .await
            .unwrap();
        assert!(tls_in_use(store).await, "{checked}");
    }
    // The test certificate is self-signed: without it as the root, it is refused.
    let unknown = format!("{url}?sslmode=verify-full&connect_timeout_ms=3000");
    let err = PgOffsetStore::connect(&unknown.parse().unwrap())
        .await
        .unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("certificate"), "{chain}");
    assert!(!chain.contains("logpipe-test-password"), "{chain}");
}

#[tokio::test]
async fn the_pool_size_and_the_statement_timeout_come_from_the_url() {
    let Some(url) = service("LOGPIPE_TEST_POSTGRES") else {
        return;
    };
    let options: PgStoreOptions = format!("{url}?pool_size=3&statement_timeout_ms=200")
        .parse()
        .unwrap();
    let store = PgOffsetStore::connect(&options).await.unwrap();
    assert_eq!(store.pool().options().get_max_connections(), 3);
    let slow = sqlx::query("SELECT pg_sleep(5)")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(slow.to_string().contains("statement timeout"), "{slow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_waiting_on_a_successor_storing_its_position_is_fenced_once_that_commits() {
    let Some((store, table)) = store().await else {
        return;
    };
    let schema = table.strip_suffix(".people").unwrap();
    let partition = PartitionRef::new("people", "3");
    let record = context(&partition, Position::Offset(7));
    // The successor handled record 7 ...
    store.begin(&record).await.unwrap().commit().await.unwrap();
    // ... and is storing its position past it, which deletes the mark, not committed yet.
    let mut successor = store.pool().begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {schema}.logpipe_handled WHERE partition = '3';
         INSERT INTO {schema}.logpipe_positions (consumer_group, stream, partition, position_offset)
             VALUES ('billing', 'people', '3', 10)"
    )))
    .execute(&mut *successor)
    .await
    .unwrap();
    // The old owner's mark for record 7 waits for the deleted row.
    let old_owner = tokio::spawn({
        let (store, record) = (store.clone(), record.clone());
        async move { store.begin(&record).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!old_owner.is_finished(), "the old owner's mark waits");
    successor.commit().await.unwrap();
    let outcome = old_owner.await.unwrap();
    assert!(
        matches!(outcome, Err(StoreError::Fenced { .. })),
        "{outcome:?}"
    );
}
