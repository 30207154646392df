//! The outbox suite: what every [`OutboxStore`] must do, and how its rows are written.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::outbox::{OutboxRow, OutboxStatus, OutboxStore};
use crate::{OutgoingRecord, RecordHeader};

use super::unique;

/// Writes outbox rows the way a service does: in a transaction of its own database
/// library, which commits or rolls back.
pub trait OutboxWriter: Send + Sync + 'static {
    /// Writes `records` as rows of one transaction, then commits it (or rolls it back
    /// when `commit` is false).
    fn write(&self, records: Vec<OutgoingRecord>, commit: bool) -> impl Future<Output = ()> + Send;
}

fn record(stream: &str, key: &str, n: usize) -> OutgoingRecord {
    OutgoingRecord {
        stream: Arc::from(stream),
        key: (!key.is_empty()).then(|| key.as_bytes().to_vec()),
        value: format!("json:{{\"n\":{n}}}").into_bytes(),
        headers: vec![RecordHeader {
            name: "trace".to_owned(),
            value: vec![n as u8, 0, 255],
        }],
    }
}

/// The first `count` rows waiting, once that many are there: a store may hold committed
/// rows back a while (PostgreSQL, while older transactions run on the server).
async fn when_waiting<S: OutboxStore>(store: &S, count: usize) -> Vec<OutboxRow> {
    let deadline = std::time::Instant::now() + super::WAIT;
    loop {
        let rows = store.waiting(count).await.unwrap();
        if rows.len() >= count {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} rows came",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn records_of(rows: &[OutboxRow]) -> Vec<OutgoingRecord> {
    rows.iter().map(|row| row.record.clone()).collect()
}

/// Committed rows come back whole, in the order written; rolled-back ones never.
pub async fn committed_rows_come_back_in_order_and_rolled_back_ones_never<S, W>(
    (store, writer): (S, W),
) where
    S: OutboxStore,
    W: OutboxWriter,
{
    let stream = unique("outbox");
    let first: Vec<_> = (0..3).map(|n| record(&stream, "k", n)).collect();
    writer.write(first.clone(), true).await;
    writer.write(vec![record(&stream, "k", 99)], false).await;
    let second = vec![record(&stream, "", 3), record(&stream, "other", 4)];
    writer.write(second.clone(), true).await;

    let rows = when_waiting(&store, 5).await;
    assert_eq!(
        store.waiting(100).await.unwrap().len(),
        5,
        "no rolled-back row"
    );
    let expected: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(records_of(&rows), expected);
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let now = crate::time::millis(std::time::SystemTime::now());
    for row in &rows {
        assert!(
            (now - 60_000..=now + 60_000).contains(&row.written_ms),
            "{row:?}"
        );
    }
    // Reading does not take them away.
    assert_eq!(store.waiting(100).await.unwrap(), rows);
    assert_eq!(store.waiting(2).await.unwrap(), rows[..2]);
}

/// Removed rows are gone; the others stay, in order.
pub async fn removed_rows_are_gone_and_the_rest_stay<S, W>((store, writer): (S, W))
where
    S: OutboxStore,
    W: OutboxWriter,
{
    let stream = unique("outbox");
    writer
        .write((0..5).map(|n| record(&stream, "k", n)).collect(), true)
        .await;
    let rows = store.waiting(100).await.unwrap();
    assert_eq!(rows.len(), 5);
    store
        .remove(&[rows[0].id, rows[1].id, rows[3].id])
        .await
        .unwrap();
    let left = store.waiting(100).await.unwrap();
    assert_eq!(left, [rows[2].clone(), rows[4].clone()]);
    // Ids already removed, or never there, are passed over.
    store.remove(&[rows[0].id, -1]).await.unwrap();
    store.remove(&[]).await.unwrap();
    assert_eq!(store.waiting(100).await.unwrap(), left);
}

/// One relay holds the lease at a time, until it releases it or it expires.
pub async fn one_relay_holds_the_lease_until_released_or_expired<S, W>((store, _writer): (S, W))
where
    S: OutboxStore,
    W: OutboxWriter,
{
    let (a, b) = (unique("relay-a"), unique("relay-b"));
    let long = Duration::from_secs(60);
    assert!(store.claim(&a, long).await.unwrap());
    assert!(!store.claim(&b, long).await.unwrap());
    // The holder renews it.
    assert!(store.claim(&a, long).await.unwrap());
    store.release(&b).await.unwrap();
    assert!(
        !store.claim(&b, long).await.unwrap(),
        "only its holder releases it"
    );
    store.release(&a).await.unwrap();
    assert!(store.claim(&b, Duration::from_secs(2)).await.unwrap());
    assert!(!store.claim(&a, long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        store.claim(&a, long).await.unwrap(),
        "an expired lease is free"
    );
    store.release(&a).await.unwrap();
}

/// The status counts the committed rows and ages the oldest.
pub async fn the_status_counts_waiting_rows_and_ages_the_oldest<S, W>((store, writer): (S, W))
where
    S: OutboxStore,
    W: OutboxWriter,
{
    let empty = store.status().await.unwrap();
    assert_eq!(
        empty,
        OutboxStatus::default(),
        "the setup gives an empty outbox"
    );
    let stream = unique("outbox");
    writer
        .write((0..4).map(|n| record(&stream, "k", n)).collect(), true)
        .await;
    writer.write(vec![record(&stream, "k", 9)], false).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = store.status().await.unwrap();
    assert_eq!(status.waiting, 4);
    let age = status.oldest_age_ms.unwrap();
    assert!((0..60_000).contains(&age), "{status:?}");
    let ids: Vec<i64> = when_waiting(&store, status.waiting as usize)
        .await
        .iter()
        .map(|row| row.id)
        .collect();
    store.remove(&ids).await.unwrap();
    let drained = store.status().await.unwrap();
    assert_eq!(drained.waiting, 0, "{drained:?}");
    assert_eq!(drained.oldest_age_ms, None);
}

/// Runs the outbox suite: `$setup` is an `async fn() -> Option<(S, W)>` giving a store
/// and a writer of rows into the same, empty outbox (`None` skips, when its server is
/// not running outside CI).
#[macro_export]
macro_rules! outbox_tests {
    ($setup:ident) => {
        mod outbox {
            #[allow(unused_imports)]
            use super::*;
            $crate::outbox_tests!(@each $setup, [
                committed_rows_come_back_in_order_and_rolled_back_ones_never,
                removed_rows_are_gone_and_the_rest_stay,
                one_relay_holds_the_lease_until_released_or_expired,
                the_status_counts_waiting_rows_and_ages_the_oldest,
            ]);
        }
    };
    (@each $setup:ident, [$($scenario:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(setup) = super::$setup().await {
                    $crate::conformance::outbox::$scenario(setup).await;
                }
            }
        )*
    };
}
