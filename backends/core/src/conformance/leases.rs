//! What every lease store does: a lease is taken by one worker at a time, renewed only
//! by its holder, free again when it expires or is given up, taken from its holder only
//! by a steal, which fences the holder off; a finished lease is never taken again.

use std::time::Duration;

use super::unique;
use crate::leases::{HeldLease, Lease, LeaseFence, LeaseStore, LeaseUnit};
use crate::{OffsetStore, PartitionRef, Position, StoreError};

const LONG: Duration = Duration::from_secs(60);

fn units(stream: &str, count: usize) -> Vec<LeaseUnit> {
    (0..count)
        .map(|n| LeaseUnit::new(PartitionRef::new(stream, n.to_string())))
        .collect()
}

async fn leases<L: LeaseStore>(store: &L, group: &str, stream: &str) -> Vec<Lease> {
    store
        .leases(group, &[stream.to_owned()])
        .await
        .expect("listing leases")
}

async fn lease<L: LeaseStore>(store: &L, group: &str, partition: &PartitionRef) -> Lease {
    leases(store, group, &partition.stream)
        .await
        .into_iter()
        .find(|lease| lease.partition == *partition)
        .expect("the lease is registered")
}

fn held(lease: &Lease) -> HeldLease {
    HeldLease {
        partition: lease.partition.clone(),
        counter: lease.counter,
    }
}

fn assert_lost<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::LeaseLost { .. })),
        "{what}: {result:?}"
    );
}

/// Registered leases are free and unowned, listed in partition order for their group
/// only; registering again changes nothing.
pub async fn registered_leases_are_free_and_listed_per_group<L: LeaseStore>(store: L) {
    let (group, other, stream) = (unique("group"), unique("other"), unique("stream"));
    let units = units(&stream, 3);
    store.register(&group, &units).await.expect("registering");
    store
        .register(&group, &units)
        .await
        .expect("registering again");
    let listed = leases(&store, &group, &stream).await;
    let partitions: Vec<_> = listed.iter().map(|l| l.partition.clone()).collect();
    let expected: Vec<_> = units.iter().map(|u| u.partition.clone()).collect();
    assert_eq!(partitions, expected);
    for lease in &listed {
        assert!(
            lease.free && lease.owner.is_none() && !lease.finished,
            "{lease:?}"
        );
        assert_eq!(lease.expires_at, None);
    }
    assert!(
        leases(&store, &other, &stream).await.is_empty(),
        "another group"
    );
}

/// Of two workers taking one free lease with the counter they saw, one gets it; the
/// other is told it lost.
pub async fn a_free_lease_is_taken_by_one_worker<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let unit = units(&stream, 1).remove(0);
    store
        .register(&group, std::slice::from_ref(&unit))
        .await
        .expect("registering");
    let seen = lease(&store, &group, &unit.partition).await;
    let taken = store
        .take(&group, &unit.partition, "a", seen.counter, LONG, false)
        .await
        .expect("taking a free lease");
    assert_eq!(taken.owner.as_deref(), Some("a"));
    assert!(taken.counter > seen.counter, "a take moves the counter");
    assert!(!taken.free);
    assert!(taken.expires_at.is_some());
    assert_lost(
        store
            .take(&group, &unit.partition, "b", seen.counter, LONG, false)
            .await,
        "a take with the counter seen before",
    );
    assert_lost(
        store
            .take(&group, &unit.partition, "b", taken.counter, LONG, false)
            .await,
        "a take of a held lease without stealing",
    );
    assert_eq!(lease(&store, &group, &unit.partition).await, taken);
}

/// Only the holder renews a lease; a renewal pushes its expiry on without moving the
/// counter.
pub async fn only_the_holder_renews_a_lease<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let unit = units(&stream, 1).remove(0);
    store
        .register(&group, std::slice::from_ref(&unit))
        .await
        .expect("registering");
    let seen = lease(&store, &group, &unit.partition).await;
    let taken = store
        .take(
            &group,
            &unit.partition,
            "a",
            seen.counter,
            Duration::from_secs(5),
            false,
        )
        .await
        .expect("taking");
    let renewed = store
        .renew(&group, "b", &[held(&taken)], LONG)
        .await
        .expect("renewing");
    assert!(renewed.is_empty(), "another worker renewed it: {renewed:?}");
    let renewed = store
        .renew(&group, "a", &[held(&taken)], LONG)
        .await
        .expect("renewing");
    assert_eq!(renewed, vec![held(&taken)]);
    let after = lease(&store, &group, &unit.partition).await;
    assert_eq!(after.counter, taken.counter);
    assert!(
        after.expires_at > taken.expires_at,
        "{after:?} after {taken:?}"
    );
}

/// A lease not renewed is free once it expires, and another worker takes it without
/// stealing; its former holder can then neither renew nor give it up.
pub async fn an_expired_lease_is_free_for_another_worker<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let unit = units(&stream, 1).remove(0);
    store
        .register(&group, std::slice::from_ref(&unit))
        .await
        .expect("registering");
    let seen = lease(&store, &group, &unit.partition).await;
    let old = store
        .take(
            &group,
            &unit.partition,
            "a",
            seen.counter,
            Duration::from_millis(300),
            false,
        )
        .await
        .expect("taking");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let expired = lease(&store, &group, &unit.partition).await;
    assert!(expired.free, "expired: {expired:?}");
    let new = store
        .take(&group, &unit.partition, "b", expired.counter, LONG, false)
        .await
        .expect("taking an expired lease");
    assert_eq!(new.owner.as_deref(), Some("b"));
    assert_eq!(new.owner_switches, old.owner_switches + 1);
    let renewed = store
        .renew(&group, "a", &[held(&old)], LONG)
        .await
        .expect("renewing");
    assert!(renewed.is_empty(), "the former holder renewed it");
    store
        .release(&group, "a", &[held(&old)])
        .await
        .expect("releasing");
    assert_eq!(lease(&store, &group, &unit.partition).await, new);
}

/// A steal takes a held lease with the counter seen; the former holder is fenced off:
/// it can neither renew, give up nor finish it.
pub async fn a_steal_fences_the_former_holder<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let unit = units(&stream, 1).remove(0);
    store
        .register(&group, std::slice::from_ref(&unit))
        .await
        .expect("registering");
    let seen = lease(&store, &group, &unit.partition).await;
    let old = store
        .take(&group, &unit.partition, "a", seen.counter, LONG, false)
        .await
        .expect("taking");
    let stolen = store
        .take(&group, &unit.partition, "b", old.counter, LONG, true)
        .await
        .expect("stealing");
    assert_eq!(stolen.owner.as_deref(), Some("b"));
    assert!(stolen.counter > old.counter);
    assert!(
        store
            .renew(&group, "a", &[held(&old)], LONG)
            .await
            .expect("renewing")
            .is_empty()
    );
    store
        .release(&group, "a", &[held(&old)])
        .await
        .expect("releasing");
    assert_lost(
        store.finish(&group, "a", &held(&old)).await,
        "a finish by the former holder",
    );
    assert_eq!(lease(&store, &group, &unit.partition).await, stolen);
}

/// A lease given up is free at once, with a new counter.
pub async fn a_released_lease_is_free_at_once<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let units = units(&stream, 2);
    store.register(&group, &units).await.expect("registering");
    let mut taken = Vec::new();
    for lease in leases(&store, &group, &stream).await {
        taken.push(
            store
                .take(&group, &lease.partition, "a", lease.counter, LONG, false)
                .await
                .expect("taking"),
        );
    }
    let held: Vec<_> = taken.iter().map(held).collect();
    store.release(&group, "a", &held).await.expect("releasing");
    for (before, after) in taken.iter().zip(leases(&store, &group, &stream).await) {
        assert!(after.free && after.owner.is_none(), "{after:?}");
        assert!(after.counter > before.counter);
        store
            .take(&group, &after.partition, "b", after.counter, LONG, false)
            .await
            .expect("taking a released lease");
    }
}

/// A finished lease keeps its parents, is free, and is never taken again, not even by
/// a steal.
pub async fn a_finished_lease_is_never_taken_again<L: LeaseStore>(store: L) {
    let (group, stream) = (unique("group"), unique("stream"));
    let parent = PartitionRef::new(stream.as_str(), "shardId-000000000000");
    let child = LeaseUnit {
        partition: PartitionRef::new(stream.as_str(), "shardId-000000000001"),
        parents: vec![parent.partition.to_string()],
    };
    store
        .register(&group, &[LeaseUnit::new(parent.clone()), child.clone()])
        .await
        .expect("registering");
    let seen = lease(&store, &group, &parent).await;
    let taken = store
        .take(&group, &parent, "a", seen.counter, LONG, false)
        .await
        .expect("taking");
    store
        .finish(&group, "a", &held(&taken))
        .await
        .expect("finishing");
    let finished = lease(&store, &group, &parent).await;
    assert!(
        finished.finished && finished.owner.is_none(),
        "{finished:?}"
    );
    assert_lost(
        store
            .take(&group, &parent, "b", finished.counter, LONG, false)
            .await,
        "taking a finished lease",
    );
    assert_lost(
        store
            .take(&group, &parent, "b", finished.counter, LONG, true)
            .await,
        "stealing a finished lease",
    );
    assert_eq!(
        lease(&store, &group, &child.partition).await.parents,
        child.parents
    );
}

/// Positions kept in the same database as the group's leases
/// ([`OffsetStore::store_fenced`]): stored under a lease's fence only while the lease has
/// that owner and counter. After a steal, the former holder's position is refused, even
/// one ahead of the stored one, and nothing of its batch is stored; the new holder's is
/// stored; a partition whose lease the database does not keep is not checked. Not part
/// of [`lease_tests!`](crate::lease_tests): call it with an offset store and a lease
/// store of one database.
pub async fn positions_are_stored_only_under_the_current_lease<S: OffsetStore, L: LeaseStore>(
    positions: S,
    leases: L,
) {
    let (group, stream) = (unique("group"), unique("people"));
    let partition = PartitionRef::new(stream.as_str(), "0");
    let unleased = PartitionRef::new(stream.as_str(), "1");
    leases
        .register(&group, &[LeaseUnit::new(partition.clone())])
        .await
        .expect("registering");
    let free = lease(&leases, &group, &partition).await;
    let a = leases
        .take(&group, &partition, "a", free.counter, LONG, false)
        .await
        .expect("taking");
    let fence = |partition: &PartitionRef, owner: &str, counter| {
        (
            partition.clone(),
            LeaseFence {
                owner: owner.into(),
                counter,
            },
        )
    };
    let load = |partition: PartitionRef| {
        let (positions, group) = (&positions, &group);
        async move { positions.load(group, &partition).await.expect("loading") }
    };
    positions
        .store_fenced(
            &group,
            &[(partition.clone(), Position::Offset(5))],
            &[fence(&partition, "a", a.counter)],
        )
        .await
        .expect("the holder stores");
    let b = leases
        .take(&group, &partition, "b", a.counter, LONG, true)
        .await
        .expect("stealing");
    for stale in [
        fence(&partition, "a", a.counter),
        fence(&partition, "c", b.counter),
    ] {
        let err = positions
            .store_fenced(
                &group,
                &[
                    (unleased.clone(), Position::Offset(3)),
                    (partition.clone(), Position::Offset(9)),
                ],
                &[stale],
            )
            .await
            .expect_err("a fence that is not the lease's now is refused");
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
        assert_eq!(load(partition.clone()).await, Some(Position::Offset(5)));
        assert_eq!(load(unleased.clone()).await, None, "nothing of the batch");
    }
    positions
        .store_fenced(
            &group,
            &[
                (partition.clone(), Position::Offset(9)),
                (unleased.clone(), Position::Offset(3)),
            ],
            &[fence(&partition, "b", b.counter), fence(&unleased, "z", 7)],
        )
        .await
        .expect("the new holder stores, and an unleased partition is not checked");
    assert_eq!(load(partition).await, Some(Position::Offset(9)));
    assert_eq!(load(unleased).await, Some(Position::Offset(3)));
}

/// One test a scenario of [`leases`](self): `lease_tests!(setup)`, where `setup` names
/// an `async fn() -> Option<impl LeaseStore>` (`None` skips).
#[macro_export]
macro_rules! lease_tests {
    ($setup:ident) => {
        mod leases {
            #[allow(unused_imports)]
            use super::*;
            $crate::lease_tests!(@each $setup, [
                registered_leases_are_free_and_listed_per_group,
                a_free_lease_is_taken_by_one_worker,
                only_the_holder_renews_a_lease,
                an_expired_lease_is_free_for_another_worker,
                a_steal_fences_the_former_holder,
                a_released_lease_is_free_at_once,
                a_finished_lease_is_never_taken_again,
            ]);
        }
    };
    (@each $setup:ident, [$($scenario:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(store) = super::$setup().await {
                    $crate::conformance::leases::$scenario(store).await;
                }
            }
        )*
    };
}
