//! Which leases a worker takes next, from what it sees in the store.

use std::collections::{BTreeMap, HashSet};

use super::Lease;

/// What a worker is to take in one round: free leases, and leases to steal from the
/// busiest worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free leases to take.
    pub take: Vec<Lease>,
    /// Leases held by the busiest worker to take from it.
    pub steal: Vec<Lease>,
}

/// What `me` should take of `leases` (every lease of its group in its streams) so that
/// the workers holding them converge to an even split:
///
/// - leases that are finished, or whose parents are not all finished, are left alone;
/// - the workers are the owners of leases that are not free, and `me`; each one's fair
///   share is the leasable count divided among them, rounded up;
/// - below its share, `me` takes free leases up to it;
/// - with none free and still below, it steals up to `max_steals` from the worker that
///   holds the most, while that one holds at least two more than `me` (so that two
///   workers never steal back and forth).
///
/// Partitions are considered in an order of `me`'s own, so that workers starting
/// together try different free leases first.
pub fn plan(me: &str, leases: &[Lease], max_steals: usize) -> Plan {
    let finished: HashSet<_> = leases
        .iter()
        .filter(|lease| lease.finished)
        .map(|lease| (&*lease.partition.stream, &*lease.partition.partition))
        .collect();
    let known: HashSet<_> = leases
        .iter()
        .map(|lease| (&*lease.partition.stream, &*lease.partition.partition))
        .collect();
    // A parent the store does not know (aged out of the stream) counts as finished.
    let leasable: Vec<&Lease> = leases
        .iter()
        .filter(|lease| !lease.finished)
        .filter(|lease| {
            lease.parents.iter().all(|parent| {
                let key = (&*lease.partition.stream, parent.as_str());
                finished.contains(&key) || !known.contains(&key)
            })
        })
        .collect();
    if leasable.is_empty() {
        return Plan::default();
    }
    let mut held: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    held.entry(me).or_default();
    for lease in &leasable {
        if let (false, Some(owner)) = (lease.free, &lease.owner) {
            held.entry(owner).or_default().push(lease);
        }
    }
    let share = leasable.len().div_ceil(held.len());
    let mut mine = held[me].len();
    let mut plan = Plan::default();
    let mut free: Vec<&Lease> = leasable.iter().copied().filter(|l| l.free).collect();
    free.sort_by_key(|lease| order_of(me, lease));
    for lease in free {
        if mine >= share {
            break;
        }
        plan.take.push(lease.clone());
        mine += 1;
    }
    if mine >= share || !plan.take.is_empty() {
        return plan;
    }
    let busiest = held
        .iter()
        .filter(|(owner, _)| **owner != me)
        .max_by_key(|(owner, leases)| (leases.len(), std::cmp::Reverse(**owner)));
    if let Some((_, theirs)) = busiest {
        let mut theirs = theirs.clone();
        theirs.sort_by_key(|lease| order_of(me, lease));
        let mut left = theirs.len();
        for lease in theirs.into_iter().take(max_steals) {
            if left < mine + 2 {
                break;
            }
            plan.steal.push(lease.clone());
            left -= 1;
            mine += 1;
        }
    }
    plan
}

/// A sort key of `lease` that differs from worker to worker.
fn order_of(me: &str, lease: &Lease) -> u64 {
    let key = format!(
        "{me}\n{}\n{}",
        lease.partition.stream, lease.partition.partition
    );
    crate::hash::fnv1a(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::PartitionRef;

    fn lease(partition: usize, owner: Option<&str>) -> Lease {
        Lease {
            partition: PartitionRef::new("s", partition.to_string()),
            owner: owner.map(str::to_owned),
            counter: 1,
            expires_at: None,
            free: owner.is_none(),
            parents: Vec::new(),
            finished: false,
            owner_switches: 0,
        }
    }

    /// Runs rounds of `plan` for `workers` in turn, applying each plan, until nobody
    /// changes anything; returns each worker's count and the rounds it took.
    fn converge(workers: &[&str], leases: &mut [Lease]) -> (HashMap<String, usize>, usize) {
        for round in 1..100 {
            let mut changed = false;
            for worker in workers {
                let plan = plan(worker, leases, 1);
                for chosen in plan.take.iter().chain(&plan.steal) {
                    let lease = leases
                        .iter_mut()
                        .find(|l| l.partition == chosen.partition)
                        .unwrap();
                    lease.owner = Some((*worker).to_owned());
                    lease.free = false;
                    changed = true;
                }
            }
            if !changed {
                let mut counts = HashMap::new();
                for lease in leases.iter() {
                    *counts.entry(lease.owner.clone().unwrap()).or_default() += 1;
                }
                return (counts, round);
            }
        }
        panic!("no convergence in 100 rounds: {leases:?}");
    }

    #[test]
    fn a_lone_worker_takes_every_free_lease() {
        let leases: Vec<_> = (0..4).map(|p| lease(p, None)).collect();
        let plan = plan("a", &leases, 1);
        assert_eq!(plan.take.len(), 4);
        assert!(plan.steal.is_empty());
    }

    #[test]
    fn workers_converge_to_an_even_split_from_one_holding_everything() {
        let mut leases: Vec<_> = (0..12).map(|p| lease(p, Some("a"))).collect();
        let (counts, _) = converge(&["a", "b", "c"], &mut leases);
        assert_eq!(
            counts.values().copied().collect::<HashSet<_>>(),
            HashSet::from([4])
        );
    }

    #[test]
    fn an_uneven_count_ends_at_most_one_apart_and_stops() {
        let mut leases: Vec<_> = (0..13).map(|p| lease(p, Some("a"))).collect();
        let (counts, _) = converge(&["a", "b", "c"], &mut leases);
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(max - min <= 1, "{counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 13);
    }

    #[test]
    fn a_worker_at_its_share_steals_nothing() {
        let mut leases: Vec<_> = (0..4).map(|p| lease(p, Some("a"))).collect();
        leases[3].owner = Some("b".to_owned());
        leases.push(lease(4, Some("b")));
        assert_eq!(plan("b", &leases, 1), Plan::default());
    }

    #[test]
    fn free_leases_are_taken_before_any_is_stolen() {
        let mut leases: Vec<_> = (0..4).map(|p| lease(p, Some("a"))).collect();
        leases.push(lease(4, None));
        let plan = plan("b", &leases, 1);
        assert_eq!(plan.take.len(), 1);
        assert!(plan.steal.is_empty());
    }

    #[test]
    fn children_wait_for_their_parents_to_finish() {
        let mut parent = lease(0, Some("a"));
        let mut child = lease(1, None);
        child.parents = vec!["0".to_owned()];
        let leases = [parent.clone(), child.clone()];
        let plan_now = plan("b", &leases, 1);
        assert!(plan_now.take.is_empty(), "{plan_now:?}");
        parent.finished = true;
        parent.owner = None;
        parent.free = true;
        let plan_after = plan("b", &[parent, child.clone()], 1);
        assert_eq!(plan_after.take, vec![child]);
    }

    #[test]
    fn a_parent_the_store_does_not_know_counts_as_finished() {
        let mut child = lease(1, None);
        child.parents = vec!["0".to_owned()];
        assert_eq!(plan("b", std::slice::from_ref(&child), 1).take, vec![child]);
    }

    #[test]
    fn expired_leases_of_a_dead_worker_are_free_and_it_is_not_counted() {
        let mut leases: Vec<_> = (0..4).map(|p| lease(p, Some("dead"))).collect();
        for lease in &mut leases {
            lease.free = true;
        }
        assert_eq!(plan("b", &leases, 1).take.len(), 4);
    }
}
