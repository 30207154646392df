//! What every offset store does: positions load back for their group only, a newer one
//! replaces an older, a batch is stored whole or not at all, large offsets and long
//! sequence numbers keep every digit, user records of aggregated Kinesis records are
//! ordered within their record, and positions outlive a reopened store.

use super::{StoreFeatures, unique};
use crate::{OffsetStore, PartitionRef, Position};

/// What a store's setup gives a scenario.
pub struct StoreSetup<S> {
    /// The store.
    pub store: S,
    /// Two or more partitions it may keep positions of.
    pub partitions: Vec<PartitionRef>,
    /// Opens the same store again; `None` for a store that keeps nothing across a
    /// reopen (the memory store).
    pub reopen: Option<Box<dyn Fn() -> S + Send + Sync>>,
}

async fn load<S: OffsetStore>(
    store: &S,
    group: &str,
    partition: &PartitionRef,
) -> Option<Position> {
    store.load(group, partition).await.expect("loading")
}

/// A group's stored positions load back; another group's do not show.
pub async fn positions_load_back_per_group<S: OffsetStore>(
    setup: StoreSetup<S>,
    _features: StoreFeatures,
) {
    let (store, partitions) = (setup.store, setup.partitions);
    let (group, other) = (unique("group"), unique("other"));
    assert_eq!(load(&store, &group, &partitions[0]).await, None);
    let positions = [
        (partitions[0].clone(), Position::Offset(41)),
        (partitions[1].clone(), Position::Offset(7)),
    ];
    store.store(&group, &positions).await.expect("storing");
    for (partition, position) in &positions {
        assert_eq!(
            load(&store, &group, partition).await.as_ref(),
            Some(position)
        );
        assert_eq!(load(&store, &other, partition).await, None, "another group");
    }
}

/// A position stored later replaces the one before, for its partition only.
pub async fn a_newer_position_replaces_the_older<S: OffsetStore>(
    setup: StoreSetup<S>,
    _features: StoreFeatures,
) {
    let (store, partitions) = (setup.store, setup.partitions);
    let group = unique("group");
    let first = [
        (partitions[0].clone(), Position::Offset(3)),
        (partitions[1].clone(), Position::Offset(4)),
    ];
    store.store(&group, &first).await.expect("storing");
    store
        .store(&group, &[(partitions[0].clone(), Position::Offset(8))])
        .await
        .expect("storing");
    assert_eq!(
        load(&store, &group, &partitions[0]).await,
        Some(Position::Offset(8))
    );
    assert_eq!(
        load(&store, &group, &partitions[1]).await,
        Some(Position::Offset(4))
    );
}

/// A position behind the stored one, stored later (by a consumer that lost its
/// partition), is refused by a store that fences, which keeps the newer position and
/// stores nothing of the batch; another store takes it.
pub async fn an_older_position_is_fenced_or_replaces<S: OffsetStore>(
    setup: StoreSetup<S>,
    features: StoreFeatures,
) {
    let (store, partitions) = (setup.store, setup.partitions);
    let group = unique("group");
    store
        .store(&group, &[(partitions[0].clone(), Position::Offset(8))])
        .await
        .expect("storing");
    let older = [
        (partitions[1].clone(), Position::Offset(2)),
        (partitions[0].clone(), Position::Offset(5)),
    ];
    let outcome = store.store(&group, &older).await;
    if features.fences {
        let err = outcome.expect_err("an older position is refused");
        assert!(matches!(err, crate::StoreError::Fenced { .. }), "{err:?}");
        assert_eq!(
            load(&store, &group, &partitions[0]).await,
            Some(Position::Offset(8))
        );
        assert_eq!(
            load(&store, &group, &partitions[1]).await,
            None,
            "nothing of a refused batch is stored"
        );
    } else {
        outcome.expect("storing");
        assert_eq!(
            load(&store, &group, &partitions[0]).await,
            Some(Position::Offset(5))
        );
    }
}

/// Kinesis positions compare as [`SequenceRank`](crate::SequenceRank) orders them:
/// sequence numbers by value, a user record of an aggregated record (`S:N`) after every
/// earlier sequence number and before `S` itself (the whole record). A store that fences
/// takes each step forward and refuses each step back, a starting point included.
pub async fn user_records_of_aggregated_records_are_ordered_within_their_record<S: OffsetStore>(
    setup: StoreSetup<S>,
    features: StoreFeatures,
) {
    if !(features.sequences && features.fences) {
        return;
    }
    let (store, partitions) = (setup.store, setup.partitions);
    let group = unique("group");
    let shard = &partitions[0];
    let sequence = |text: &str| Position::Sequence(text.to_owned());
    for forward in ["9", "10:0", "10:2", "10:10", "10", "11:0"] {
        store
            .store(&group, &[(shard.clone(), sequence(forward))])
            .await
            .unwrap_or_else(|err| panic!("{forward} is a step forward: {err}"));
        assert_eq!(load(&store, &group, shard).await, Some(sequence(forward)));
    }
    for back in ["10", "10:10", "9", "TRIM_HORIZON"] {
        let err = store
            .store(&group, &[(shard.clone(), sequence(back))])
            .await
            .expect_err(back);
        assert!(
            matches!(err, crate::StoreError::Fenced { .. }),
            "{back}: {err:?}"
        );
    }
    assert_eq!(load(&store, &group, shard).await, Some(sequence("11:0")));
}

/// A batch whose positions the store takes is stored whole; one with a position it
/// refuses (a sequence number in a store of offsets) fails and stores none of it.
pub async fn a_batch_is_stored_whole_or_not_at_all<S: OffsetStore>(
    setup: StoreSetup<S>,
    features: StoreFeatures,
) {
    let (store, partitions) = (setup.store, setup.partitions);
    let group = unique("group");
    let whole: Vec<(PartitionRef, Position)> = partitions
        .iter()
        .enumerate()
        .map(|(n, partition)| (partition.clone(), Position::Offset(10 + n as i64)))
        .collect();
    store.store(&group, &whole).await.expect("storing");
    for (partition, position) in &whole {
        assert_eq!(
            load(&store, &group, partition).await.as_ref(),
            Some(position)
        );
    }
    let mixed = [
        (partitions[0].clone(), Position::Offset(99)),
        (partitions[1].clone(), Position::Sequence("4968".into())),
    ];
    let outcome = store.store(&group, &mixed).await;
    if features.sequences {
        outcome.expect("a store of sequence numbers takes both");
        assert_eq!(
            load(&store, &group, &partitions[0]).await,
            Some(Position::Offset(99))
        );
        assert_eq!(
            load(&store, &group, &partitions[1]).await,
            Some(Position::Sequence("4968".into()))
        );
    } else {
        outcome.expect_err("a store of offsets refuses a sequence number");
        assert_eq!(
            load(&store, &group, &partitions[0]).await,
            Some(Position::Offset(10)),
            "no position of a refused batch is stored"
        );
    }
}

/// 64-bit offsets and Kinesis' 56-digit sequence numbers (where the store keeps them)
/// load back unchanged.
pub async fn large_offsets_and_long_sequence_numbers_keep_every_digit<S: OffsetStore>(
    setup: StoreSetup<S>,
    features: StoreFeatures,
) {
    let (store, partitions) = (setup.store, setup.partitions);
    let group = unique("group");
    let large = Position::Offset(i64::MAX - 1);
    store
        .store(&group, &[(partitions[0].clone(), large.clone())])
        .await
        .expect("storing");
    assert_eq!(load(&store, &group, &partitions[0]).await, Some(large));
    if features.sequences {
        let sequence =
            Position::Sequence("49590338271490256608559692538361571095921575989136588898".into());
        store
            .store(&group, &[(partitions[1].clone(), sequence.clone())])
            .await
            .expect("storing");
        assert_eq!(load(&store, &group, &partitions[1]).await, Some(sequence));
    }
}

/// Positions stored before a store is opened again load back from the new one.
pub async fn positions_survive_a_reopen<S: OffsetStore>(
    setup: StoreSetup<S>,
    _features: StoreFeatures,
) {
    let StoreSetup {
        store,
        partitions,
        reopen,
    } = setup;
    let Some(reopen) = reopen else {
        // A store that keeps positions in memory: nothing survives it, by design.
        return;
    };
    let group = unique("group");
    store
        .store(&group, &[(partitions[0].clone(), Position::Offset(12))])
        .await
        .expect("storing");
    drop(store);
    let reopened = reopen();
    assert_eq!(
        load(&reopened, &group, &partitions[0]).await,
        Some(Position::Offset(12))
    );
}
