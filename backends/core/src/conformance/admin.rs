//! What every backend answers the operators' tools: streams created, listed and
//! described, how far a position is behind, where a group moved to a boundary stands,
//! positions as they print, and ranges of records for replay.

use std::time::{Duration, SystemTime};

use super::backend::send_in_order;
use super::{Features, unique};
use crate::{
    Backend, BackendErrorKind, Boundary, Delivery, OutgoingRecord, PartitionInfo, Position,
    RangeBound, RangeRead, Record,
};

/// A new stream of one partition holding `count` records `0`, `1`, ..., with where each
/// landed, and the times just before the first and just after the last was written.
async fn filled<B: Backend>(
    backend: &B,
    what: &str,
    count: usize,
) -> (String, Vec<Delivery>, SystemTime, SystemTime) {
    let stream = unique(what);
    backend
        .create_stream(&stream, 1)
        .await
        .expect("creating the stream");
    // Records written in the same millisecond as `before` would fall on both sides of it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let records = (0..count)
        .map(|n| OutgoingRecord {
            stream: stream.as_str().into(),
            key: Some(b"k".to_vec()),
            value: n.to_string().into_bytes(),
            headers: Vec::new(),
        })
        .collect();
    let deliveries = send_in_order(backend, records).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    (stream, deliveries, before, after)
}

async fn only_partition<B: Backend>(backend: &B, stream: &str) -> PartitionInfo {
    let mut partitions = backend.describe_stream(stream).await.expect("describing");
    assert_eq!(partitions.len(), 1);
    partitions.remove(0)
}

/// A stream created with two partitions is listed and described with two; creating it
/// again is refused.
pub async fn streams_are_created_listed_and_described<B: Backend>(backend: B, _features: Features) {
    let stream = unique("created");
    backend
        .create_stream(&stream, 2)
        .await
        .expect("creating the stream");
    let listed = backend.list_streams().await.expect("listing");
    assert!(listed.contains(&stream), "{stream} not in {listed:?}");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "streams are listed sorted");
    let described = backend.describe_stream(&stream).await.expect("describing");
    assert_eq!(described.len(), 2, "{described:?}");
    assert!(described.iter().all(|p| *p.partition.stream == *stream));
    let again = backend.create_stream(&stream, 2).await.unwrap_err();
    assert_eq!(again.kind(), BackendErrorKind::Rejected, "{again}");
    let zero = backend.create_stream(&unique("zero"), 0).await.unwrap_err();
    assert_eq!(zero.kind(), BackendErrorKind::Rejected, "{zero}");
}

/// Without a position every record kept is behind; after the third of five records, two
/// are.
pub async fn lag_counts_the_records_after_a_position<B: Backend>(backend: B, _features: Features) {
    let (stream, deliveries, _, _) = filled(&backend, "lag", 5).await;
    let partition = only_partition(&backend, &stream).await;
    let all = backend.lag(&partition, None).await.expect("lag");
    assert_eq!((all.records, all.exact), (5, true), "{all:?}");
    let some = backend
        .lag(&partition, Some(&deliveries[2].position))
        .await
        .expect("lag");
    assert_eq!((some.records, some.exact), (2, true), "{some:?}");
    let none = backend
        .lag(&partition, Some(&deliveries[4].position))
        .await
        .expect("lag");
    assert_eq!(none.records, 0, "{none:?}");
}

/// A group moved to the earliest record is behind by every record, to the latest by
/// none, and to a time by the records written since.
pub async fn a_group_moved_to_a_boundary_is_that_far_behind<B: Backend>(
    backend: B,
    _features: Features,
) {
    let (stream, _, before, after) = filled(&backend, "boundary", 4).await;
    let partition = only_partition(&backend, &stream).await;
    for (boundary, behind) in [
        (Boundary::Earliest, 4),
        (Boundary::Latest, 0),
        (Boundary::Time(before), 4),
        (Boundary::Time(after), 0),
    ] {
        let position = backend
            .position_at(&partition, boundary, None)
            .await
            .expect("a position");
        let lag = backend
            .lag(&partition, position.as_ref())
            .await
            .expect("lag");
        assert_eq!(lag.records, behind, "{boundary:?} stored as {position:?}");
    }
}

/// A position reads back as it prints; text that is no position is refused.
pub async fn positions_read_back_as_they_print<B: Backend>(backend: B, _features: Features) {
    let (_, deliveries, _, _) = filled(&backend, "positions", 2).await;
    for delivery in &deliveries {
        let text = delivery.position.to_string();
        assert_eq!(
            backend.parse_position(&text).expect("a position"),
            delivery.position
        );
    }
    let refused = backend.parse_position("not a position").unwrap_err();
    assert_eq!(refused.kind(), BackendErrorKind::Rejected);
}

async fn read_whole<R: RangeRead>(mut range: R) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some(batch) = tokio::time::timeout(super::WAIT, range.next_batch())
        .await
        .expect("a batch within the wait")
        .expect("reading the range")
    {
        records.extend(batch);
    }
    records
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect()
}

/// A range bounded by records of one partition holds the records from the first bound
/// to before the second; one bounded by times, the records written between them; one
/// bounded by offsets (where records have them), the records between those.
pub async fn a_range_of_records_is_read_for_replay<B: Backend>(backend: B, features: Features) {
    let (stream, deliveries, before, after) = filled(&backend, "range", 6).await;
    let at = |n: usize| RangeBound::Record {
        partition: deliveries[n].partition.partition.to_string(),
        position: deliveries[n].position.to_string(),
    };
    let records = read_whole(
        backend
            .read_range(&stream, &at(1), &at(4))
            .await
            .expect("a range"),
    )
    .await;
    assert_eq!(values(&records), ["1", "2", "3"]);
    let timed = backend
        .read_range(&stream, &RangeBound::Time(before), &RangeBound::Time(after))
        .await
        .expect("a range");
    assert_eq!(
        values(&read_whole(timed).await),
        ["0", "1", "2", "3", "4", "5"]
    );
    let offsets = backend
        .read_range(&stream, &RangeBound::Offset(2), &RangeBound::Offset(4))
        .await;
    if features.offsets {
        let range = offsets.expect("a range");
        assert_eq!(range.total(), Some(2));
        assert_eq!(values(&read_whole(range).await), ["2", "3"]);
    } else {
        let refused = offsets.map(drop).unwrap_err();
        assert_eq!(refused.kind(), BackendErrorKind::Rejected, "{refused}");
    }
    let position = |n: usize| match &deliveries[n].position {
        Position::Offset(offset) => offset.to_string(),
        Position::Sequence(sequence) => sequence.clone(),
    };
    let elsewhere = RangeBound::Record {
        partition: "no-such-partition".into(),
        position: position(0),
    };
    let refused = backend
        .read_range(&stream, &elsewhere, &at(2))
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(refused.kind(), BackendErrorKind::Rejected, "{refused}");
}
