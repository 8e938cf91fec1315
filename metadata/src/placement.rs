//! Replica placement and leader election — the rules every controller applies identically.

use crate::ids::{BrokerId, NO_LEADER};
use crate::image::PartitionState;

/// Replicas for partitions `first..first + count`: with the live brokers sorted by id as
/// `b[0..n)`, replica `j` of partition `i` is `b[(i + j) mod n]`; replica 0 is the preferred
/// leader. A replication factor above `n` is an error, never a silent shrink.
pub fn assign_replicas(
    live_sorted: &[BrokerId],
    first: i32,
    count: i32,
    replication_factor: i32,
) -> Result<Vec<Vec<BrokerId>>, String> {
    let n = live_sorted.len();
    if replication_factor < 1 {
        return Err(format!(
            "replication factor {replication_factor} must be at least 1"
        ));
    }
    if replication_factor as usize > n {
        return Err(format!(
            "replication factor {replication_factor} is larger than the {n} available brokers"
        ));
    }
    debug_assert!(
        live_sorted.windows(2).all(|w| w[0] < w[1]),
        "brokers must be sorted"
    );
    Ok((first..first + count)
        .map(|i| {
            (0..replication_factor)
                .map(|j| live_sorted[(i as usize + j as usize) % n])
                .collect()
        })
        .collect())
}

/// Chooses a leader from the ISR: the first replica, in replica order, that is in the ISR
/// and alive. With `unclean`, falls back to any alive replica (data may be lost). `None`
/// when nobody qualifies.
pub fn elect_leader(
    p: &PartitionState,
    is_alive: impl Fn(BrokerId) -> bool,
    unclean: bool,
) -> Option<(BrokerId, bool)> {
    if let Some(&b) = p
        .replicas
        .iter()
        .find(|&&r| p.isr.contains(&r) && is_alive(r))
    {
        return Some((b, false));
    }
    if unclean {
        if let Some(&b) = p.replicas.iter().find(|&&r| is_alive(r)) {
            return Some((b, true));
        }
    }
    None
}

/// Whether a partition currently has a leader.
pub fn has_leader(p: &PartitionState) -> bool {
    p.leader != NO_LEADER
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LeaderEpoch, PartitionEpoch};

    #[test]
    fn placement_follows_i_plus_j_mod_n() {
        let r = assign_replicas(&BrokerId::from_wire(&[1, 2, 3]), 0, 4, 3).unwrap();
        assert_eq!(
            r,
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]
        );
        let more = assign_replicas(&BrokerId::from_wire(&[1, 2, 3]), 4, 2, 2).unwrap();
        assert_eq!(more, vec![vec![2, 3], vec![3, 1]], "numbering continues");
        assert!(assign_replicas(&BrokerId::from_wire(&[1, 2]), 0, 1, 3)
            .unwrap_err()
            .contains("larger than"));
        assert!(assign_replicas(&BrokerId::from_wire(&[1, 2]), 0, 1, 0).is_err());
    }

    #[test]
    fn election_prefers_replica_order_within_isr() {
        let p = PartitionState {
            replicas: BrokerId::from_wire(&[3, 1, 2]),
            isr: BrokerId::from_wire(&[1, 2]),
            leader: BrokerId(3),
            leader_epoch: LeaderEpoch(4),
            partition_epoch: PartitionEpoch(9),
        };
        assert_eq!(
            elect_leader(&p, |b| b != 3, false),
            Some((BrokerId(1), false))
        );
        assert_eq!(
            elect_leader(&p, |b| b == 2, false),
            Some((BrokerId(2), false))
        );
        assert_eq!(elect_leader(&p, |b| b == 3, false), None);
        assert_eq!(
            elect_leader(&p, |b| b == 3, true),
            Some((BrokerId(3), true))
        );
    }
}
