//! Table tests of the replica rules, one test per rule, each naming the Kafka class or KIP
//! it follows; then a property test of the HW safety invariant over random event orders.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const ME: BrokerId = BrokerId(1);
const LAG: Duration = Duration::from_secs(10);

/// Broker ids from literals.
fn ids(v: &[i32]) -> Vec<BrokerId> {
    BrokerId::from_wire(v)
}

fn leader(epoch: i32, partition_epoch: i32, isr: &[i32], replicas: &[i32]) -> Role {
    Role::Leader {
        leader_epoch: epoch,
        partition_epoch,
        isr: ids(isr),
        replicas: ids(replicas),
    }
}

/// Leader 1 of replicas {1, 2, 3} at epoch 5 / partition epoch 10 with the given ISR and
/// log end offset.
fn leading(isr: &[i32], leo: i64, t0: Instant) -> ReplicaState {
    let mut s = ReplicaState::new(
        ME,
        Role::Follower {
            leader: BrokerId(2),
            leader_epoch: 4,
        },
        0,
        leo,
    );
    s.apply_role(leader(5, 10, isr, &[1, 2, 3]), leo, t0);
    s
}

fn committed(partition_epoch: i32, isr: &[i32]) -> AlterOutcome {
    AlterOutcome::Committed {
        leader_epoch: 5,
        partition_epoch,
        isr: ids(isr),
    }
}

#[test]
fn high_watermark_is_the_min_log_end_over_the_isr() {
    // Partition.maybeIncrementLeaderHW: (fetch offsets of 2 and 3, ISR) -> HW.
    let t0 = Instant::now();
    let cases: &[(&[i32], i64, i64, i64)] = &[
        (&[1, 2, 3], 40, 70, 40),
        (&[1, 2, 3], 100, 100, 100),
        (&[1, 2], 40, 0, 40),
        (&[1, 3], 40, 70, 70),
        (&[1], 0, 0, 100),
    ];
    for (isr, f2, f3, want) in cases {
        let mut s = leading(isr, 100, t0);
        s.on_follower_fetch(BrokerId(2), *f2, 100, t0);
        s.on_follower_fetch(BrokerId(3), *f3, 100, t0);
        assert_eq!(s.high_watermark(), *want, "isr {isr:?} f2 {f2} f3 {f3}");
    }
}

#[test]
fn high_watermark_waits_for_a_replica_whose_isr_addition_is_pending() {
    // Regression for the review's defect 1 (Kafka's maximalIsr, DESIGN §4). ISR {1, 2};
    // 3 caught up to the HW and its addition was proposed. Until the controller answers,
    // the HW must not pass 3's log end: once the addition commits, 3 may be elected and
    // everything acknowledged must be on it.
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 50, t0);
    s.on_follower_fetch(BrokerId(2), 50, 50, t0);
    s.on_follower_fetch(BrokerId(3), 50, 50, t0);
    assert_eq!(s.high_watermark(), 50);
    let p = s.propose_isr(50, t0, LAG).expect("3 caught up: expand");
    assert_eq!(p.isr, vec![1, 2, 3]);
    assert_eq!(s.maximal_isr(), vec![1, 2, 3]);
    // New appends reach 2 but not 3 while the proposal is in flight.
    s.on_follower_fetch(BrokerId(2), 80, 80, t0);
    assert_eq!(
        s.high_watermark(),
        50,
        "HW must wait for the pending member 3"
    );
    s.on_follower_fetch(BrokerId(3), 70, 80, t0);
    assert_eq!(s.high_watermark(), 70);
    // Committed: 3 is an ISR member now, as far as the HW already assumed.
    s.on_alter_partition(&p, committed(11, &[1, 2, 3]), 80);
    assert_eq!(s.isr(), &[1, 2, 3]);
    assert_eq!(s.high_watermark(), 70);
}

#[test]
fn a_lost_alter_partition_answer_keeps_the_proposal_in_the_maximal_isr() {
    // The answer was lost (controller frozen, request timed out): the change may have
    // committed, so 3 still counts for the HW and the same proposal is sent again
    // (Kafka's AlterPartitionManager retries; only a definite error resets the state).
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 50, t0);
    s.on_follower_fetch(BrokerId(2), 50, 50, t0);
    s.on_follower_fetch(BrokerId(3), 50, 50, t0);
    let p = s.propose_isr(50, t0, LAG).unwrap();
    s.on_alter_partition(&p, AlterOutcome::Unknown, 50);
    assert_eq!(s.pending(), Some(&p));
    s.on_follower_fetch(BrokerId(2), 90, 90, t0);
    assert_eq!(s.high_watermark(), 50);
    assert_eq!(
        s.propose_isr(90, t0, LAG),
        Some(p.clone()),
        "resent as it was"
    );
    s.on_alter_partition(&p, AlterOutcome::Refused, 90);
    assert_eq!(s.pending(), None);
    assert_eq!(
        s.high_watermark(),
        90,
        "refused for good: back to the committed ISR"
    );
}

#[test]
fn a_committed_alter_partition_answer_applies_its_isr_and_partition_epoch() {
    // Review defect 3 (Kafka's Partition.handleAlterPartitionUpdate): the answer, not only
    // an exactly equal image, ends the pending state, and its partition epoch is the base of
    // the next proposal. The controller may answer a different ISR than proposed.
    let t0 = Instant::now();
    let mut s = leading(&[1, 2, 3], 10, t0);
    s.on_follower_fetch(BrokerId(2), 10, 10, t0);
    let later = t0 + LAG + Duration::from_secs(1);
    let p = s
        .propose_isr(10, later, LAG)
        .expect("3 never fetched: shrink");
    assert_eq!(p.isr, vec![1, 2]);
    assert_eq!(p.partition_epoch, 10);
    s.on_alter_partition(&p, committed(12, &[1, 2]), 10);
    assert_eq!(s.pending(), None);
    assert_eq!(
        s.role(),
        &leader(5, 12, &[1, 2], &[1, 2, 3]),
        "ISR and partition epoch from the answer"
    );
    // The image then catches up with an older partition epoch: stale, ignored.
    assert_eq!(
        s.apply_role(leader(5, 11, &[1, 2, 3], &[1, 2, 3]), 10, later),
        RoleChange::Stale
    );
    assert_eq!(s.isr(), &[1, 2]);
    // And the next proposal is based on epoch 12.
    s.on_follower_fetch(BrokerId(3), 10, 10, later);
    let q = s.propose_isr(10, later, LAG).expect("3 back: expand");
    assert_eq!((q.partition_epoch, q.isr.clone()), (12, ids(&[1, 2, 3])));
}

#[test]
fn metadata_past_the_proposals_partition_epoch_ends_it() {
    // The controller changed the partition (it fenced a replica) before answering us: the
    // image is authoritative and the proposal is void.
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 50, t0);
    s.on_follower_fetch(BrokerId(3), 50, 50, t0);
    s.on_follower_fetch(BrokerId(2), 50, 50, t0);
    let p = s.propose_isr(50, t0, LAG).unwrap();
    assert_eq!(
        s.apply_role(leader(5, 11, &[1], &[1, 2, 3]), 50, t0),
        RoleChange::IsrChanged
    );
    assert_eq!(s.pending(), None);
    // A late answer to the void proposal changes nothing.
    assert!(!s.on_alter_partition(&p, committed(11, &[1, 2, 3]), 50));
    assert_eq!(s.isr(), &[1]);
}

#[test]
fn an_answer_for_another_leader_epoch_changes_nothing() {
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 50, t0);
    s.on_follower_fetch(BrokerId(2), 50, 50, t0);
    s.on_follower_fetch(BrokerId(3), 50, 50, t0);
    let p = s.propose_isr(50, t0, LAG).unwrap();
    let stale = AlterOutcome::Committed {
        leader_epoch: 4,
        partition_epoch: 30,
        isr: ids(&[1]),
    };
    s.on_alter_partition(&p, stale, 50);
    assert_eq!(s.isr(), &[1, 2]);
}

#[test]
fn a_follower_not_caught_up_for_the_lag_time_leaves_the_isr() {
    // Partition.maybeShrinkIsr / ReplicaState.isCaughtUp, with replica.lag.time.max.ms 10 s.
    // (follower 2's fetches as (offset, leader LEO, seconds after t0); probe time) -> shrink?
    let t0 = Instant::now();
    /// (fetch offset, leader LEO, seconds after t0) of follower 2's fetches.
    type Fetches<'a> = &'a [(i64, i64, u64)];
    let cases: &[(Fetches, u64, bool)] = &[
        // Never fetched since the election: presumed caught up at the election.
        (&[], 9, false),
        (&[], 11, true),
        // At our log end now: in sync whatever the time.
        (&[(100, 100, 0)], 30, false),
        // Behind, but it reached the end we had at its previous fetch.
        (&[(50, 80, 1), (80, 120, 9)], 10, false),
        // Behind and never reached it.
        (&[(50, 80, 1), (60, 120, 9)], 10, true),
    ];
    for (fetches, probe, shrinks) in cases {
        let mut s = leading(&[1, 2], 100, t0);
        for (off, leo, at) in *fetches {
            s.on_follower_fetch(BrokerId(2), *off, *leo, t0 + Duration::from_secs(*at));
        }
        let leo = fetches.last().map_or(100, |f| f.1);
        let p = s.propose_isr(leo, t0 + Duration::from_secs(*probe), LAG);
        assert_eq!(
            p.as_ref().map(|p| p.isr.clone()),
            shrinks.then(|| ids(&[1])),
            "fetches {fetches:?} probe {probe}s"
        );
    }
}

#[test]
fn a_follower_joins_the_isr_only_past_the_hw_and_the_leader_epoch_start() {
    // Partition.isFollowerInSync: LEO >= HW and LEO >= leaderEpochStartOffset.
    let t0 = Instant::now();
    // We became leader with LEO 100; ISR {1, 2}; 2 has everything.
    let cases: &[(i64, bool)] = &[(40, false), (99, false), (100, true), (120, true)];
    for (f3, joins) in cases {
        let mut s = leading(&[1, 2], 100, t0);
        s.on_follower_fetch(BrokerId(2), 100, 100, t0);
        assert_eq!(s.high_watermark(), 100);
        s.on_follower_fetch(BrokerId(3), *f3, 130, t0);
        let p = s.propose_isr(130, t0, LAG);
        assert_eq!(p.is_some(), *joins, "follower 3 at {f3}");
    }
}

#[test]
fn followers_join_one_at_a_time_and_nothing_new_is_proposed_while_one_is_pending() {
    let t0 = Instant::now();
    let mut s = leading(&[1], 0, t0);
    s.on_follower_fetch(BrokerId(2), 0, 0, t0);
    s.on_follower_fetch(BrokerId(3), 0, 0, t0);
    let p = s.propose_isr(0, t0, LAG).unwrap();
    assert_eq!(p.isr, vec![1, 2]);
    assert_eq!(s.propose_isr(0, t0, LAG), Some(p.clone()));
    s.on_alter_partition(&p, committed(11, &[1, 2]), 0);
    let q = s.propose_isr(0, t0, LAG).unwrap();
    assert_eq!(q.isr, vec![1, 2, 3]);
}

#[test]
fn only_a_leader_with_every_replica_in_sync_at_its_log_end_is_settled() {
    // The ISR tick skips settled partitions, so settled must imply "nothing to propose at
    // any time": check both sides of that on every case.
    let t0 = Instant::now();
    let later = t0 + LAG * 3;
    // (ISR, fetch offsets of 2 and 3 (-1 = never fetched), settled)
    let cases: &[(&[i32], i64, i64, bool)] = &[
        (&[1, 2, 3], 100, 100, true),
        (&[1, 2, 3], 100, 90, false),
        (&[1, 2, 3], 100, -1, false),
        (&[1, 2], 100, 100, false),
        (&[1], -1, -1, false),
    ];
    for &(isr, f2, f3, want) in cases {
        let mut s = leading(isr, 100, t0);
        for (b, f) in [(2, f2), (3, f3)] {
            if f >= 0 {
                s.on_follower_fetch(BrokerId(b), f, 100, t0);
            }
        }
        assert_eq!(s.isr_settled(100), want, "{isr:?} {f2} {f3}");
        if want {
            assert_eq!(s.propose_isr(100, later, LAG), None, "{isr:?}");
        }
    }
    // A change pending is not settled; an append unsettles.
    let mut s = leading(&[1, 2, 3], 100, t0);
    s.on_follower_fetch(BrokerId(2), 100, 100, t0);
    s.on_follower_fetch(BrokerId(3), 100, 100, t0);
    assert!(s.isr_settled(100));
    assert!(!s.isr_settled(101));
    let mut s = leading(&[1, 2], 100, t0);
    s.on_follower_fetch(BrokerId(3), 100, 100, t0);
    assert!(s.propose_isr(100, t0, LAG).is_some());
    assert!(!s.isr_settled(100));
    // A follower is never settled.
    let f = ReplicaState::new(
        ME,
        Role::Follower {
            leader: BrokerId(2),
            leader_epoch: 4,
        },
        0,
        100,
    );
    assert!(!f.isr_settled(100));
}

#[test]
fn a_broker_that_is_not_a_replica_does_not_move_the_hw() {
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 100, t0);
    s.on_follower_fetch(BrokerId(2), 10, 100, t0);
    assert!(!s.on_follower_fetch(BrokerId(9), 100, 100, t0));
    assert_eq!(s.follower(BrokerId(9)), None);
    assert_eq!(s.high_watermark(), 10);
}

#[test]
fn a_new_leader_holds_the_hw_until_every_isr_member_fetches() {
    // Partition.makeLeader resets every follower to an unknown LEO; the HW stays until
    // each ISR member has fetched (and never moves backwards).
    let t0 = Instant::now();
    let mut s = ReplicaState::new(
        ME,
        Role::Follower {
            leader: BrokerId(2),
            leader_epoch: 4,
        },
        30,
        60,
    );
    assert_eq!(s.high_watermark(), 30);
    s.apply_role(leader(5, 10, &[1, 2, 3], &[1, 2, 3]), 60, t0);
    assert_eq!(s.high_watermark(), 30);
    s.on_follower_fetch(BrokerId(2), 60, 60, t0);
    assert_eq!(s.high_watermark(), 30);
    s.on_follower_fetch(BrokerId(3), 20, 60, t0);
    assert_eq!(s.high_watermark(), 30, "never backwards");
    s.on_follower_fetch(BrokerId(3), 60, 60, t0);
    assert_eq!(s.high_watermark(), 60);
}

#[test]
fn a_new_leaders_latest_offset_is_unknown_below_its_epoch_start() {
    // KIP-207: ListOffsets(latest) answers OFFSET_NOT_AVAILABLE while the HW is below the
    // leader epoch start offset.
    let t0 = Instant::now();
    let mut s = ReplicaState::new(
        ME,
        Role::Follower {
            leader: BrokerId(2),
            leader_epoch: 4,
        },
        30,
        60,
    );
    assert_eq!(
        s.known_high_watermark(),
        Some(30),
        "a follower answers nothing: n/a"
    );
    s.apply_role(leader(5, 10, &[1, 2], &[1, 2, 3]), 60, t0);
    assert_eq!(s.known_high_watermark(), None);
    s.on_follower_fetch(BrokerId(2), 60, 60, t0);
    assert_eq!(s.known_high_watermark(), Some(60));
}

#[test]
fn a_follower_takes_the_leaders_hw_bounded_by_its_own_log_end() {
    let t0 = Instant::now();
    let mut s = ReplicaState::new(
        ME,
        Role::Follower {
            leader: BrokerId(2),
            leader_epoch: 4,
        },
        0,
        0,
    );
    let cases: &[(i64, i64, i64)] = &[(10, 5, 5), (10, 20, 10), (3, 20, 10), (30, 20, 20)];
    for (leader_hw, leo, want) in cases {
        s.follow_high_watermark(*leader_hw, *leo);
        assert_eq!(
            s.high_watermark(),
            *want,
            "leader HW {leader_hw}, LEO {leo}"
        );
    }
    s.clamp_high_watermark(12);
    assert_eq!(s.high_watermark(), 12, "truncated below the HW");
    assert!(
        !s.on_follower_fetch(BrokerId(3), 12, 12, t0),
        "followers track nobody"
    );
}

#[test]
fn becoming_follower_drops_leader_state() {
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 50, t0);
    s.on_follower_fetch(BrokerId(2), 50, 50, t0);
    s.on_follower_fetch(BrokerId(3), 50, 50, t0);
    s.propose_isr(50, t0, LAG).unwrap();
    let r = Role::Follower {
        leader: BrokerId(2),
        leader_epoch: 6,
    };
    assert_eq!(s.apply_role(r.clone(), 50, t0), RoleChange::BecameFollower);
    assert_eq!(s.apply_role(r, 50, t0), RoleChange::Unchanged);
    assert_eq!(s.pending(), None);
    assert_eq!(s.follower(BrokerId(2)), None);
    assert_eq!(s.propose_isr(50, t0, LAG), None);
}

#[test]
fn divergence_check_of_a_follower_fetch() {
    // KIP-320/595 (Partition.validateFetchOffsetAndMaybeGetDivergingEpoch). Our epochs:
    // 3 covers [0, 40), 5 covers [40, 100); log start 10, log end 100.
    let lookup = |e: i32| -> (i64, i64) {
        match e {
            e if e >= 5 => (5, 100),
            3 | 4 => (3, 40),
            _ => (-1, -1),
        }
    };
    let none = None;
    let cases: &[(Option<i32>, i64, Option<DivergingEpoch>)] = &[
        // Same epoch, within it.
        (Some(5), 70, none),
        (Some(5), 100, none),
        // Its epoch 5 goes on past our end.
        (
            Some(5),
            120,
            Some(DivergingEpoch {
                leader_epoch: 5,
                end_offset: 100,
            }),
        ),
        // It wrote in epoch 4, which we never had: back to the end of our epoch 3.
        (
            Some(4),
            60,
            Some(DivergingEpoch {
                leader_epoch: 3,
                end_offset: 40,
            }),
        ),
        (Some(3), 40, none),
        // Newer than anything of ours (review defect 9): our latest epoch and its end.
        (
            Some(9),
            130,
            Some(DivergingEpoch {
                leader_epoch: 5,
                end_offset: 100,
            }),
        ),
        // Older than any epoch we know (review defect 9: was skipped): keep nothing past
        // our log start.
        (
            Some(1),
            30,
            Some(DivergingEpoch {
                leader_epoch: -1,
                end_offset: 10,
            }),
        ),
        (Some(1), 10, none),
        // No epoch given: only a position past our end is refused.
        (None, 100, none),
        (
            None,
            101,
            Some(DivergingEpoch {
                leader_epoch: 5,
                end_offset: 100,
            }),
        ),
    ];
    for (last, offset, want) in cases {
        assert_eq!(
            diverging_epoch(*last, *offset, lookup, 10, 100, Some(5)),
            *want,
            "last fetched epoch {last:?}, fetch offset {offset}"
        );
    }
}

#[test]
fn acks_all_is_done_once_the_hw_passes_the_batch_with_enough_isr() {
    // Partition.checkEnoughReplicasReachOffset.
    let t0 = Instant::now();
    let mut s = leading(&[1, 2], 100, t0);
    s.on_follower_fetch(BrokerId(2), 60, 100, t0);
    let cases: &[(i64, usize, AcksAll)] = &[
        (59, 2, AcksAll::Done),
        (60, 2, AcksAll::Waiting),
        (99, 1, AcksAll::Waiting),
        (59, 3, AcksAll::NotEnoughReplicasAfterAppend),
    ];
    for (last, min_isr, want) in cases {
        assert_eq!(
            s.acks_all(*last, *min_isr),
            *want,
            "last {last} min {min_isr}"
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// The leader appends n records.
    Append(i64),
    /// Follower 2 or 3 fetches at an offset up to the leader's LEO (fraction in 0..=100).
    Fetch(BrokerId, u8),
    /// An ISR tick, `secs` after the previous one.
    Tick(u64),
    /// The controller answers the pending proposal.
    Answer(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..20).prop_map(Op::Append),
        (2..=3, 0u8..=100).prop_map(|(b, f)| Op::Fetch(BrokerId(b), f)),
        (0u64..15).prop_map(Op::Tick),
        (0u8..3).prop_map(Op::Answer),
    ]
}

proptest! {
    /// Whatever the order of appends, fetches, ISR ticks and controller answers: the HW
    /// never moves back, never passes the log end, and every offset below it is on every
    /// member of every ISR the controller may have committed (committed plus pending).
    #[test]
    fn every_offset_below_the_hw_is_on_every_replica_that_may_be_in_the_isr(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut leo = 0i64;
        let mut follower_leo = [0i64; 4];
        let mut s = leading(&[1, 2, 3], 0, t0);
        let mut partition_epoch = 10;
        let mut sent: Option<AlterIsr> = None;
        let mut hw = 0;
        for op in ops {
            match op {
                Op::Append(n) => {
                    leo += n;
                    s.maybe_advance_high_watermark(leo);
                }
                Op::Fetch(b, frac) => {
                    // A follower fetches at or past what it already has.
                    let at = follower_leo[b.get() as usize]
                        + (leo - follower_leo[b.get() as usize]) * frac as i64 / 100;
                    follower_leo[b.get() as usize] = at;
                    s.on_follower_fetch(b, at, leo, now);
                }
                Op::Tick(secs) => {
                    now += Duration::from_secs(secs);
                    if let Some(p) = s.propose_isr(leo, now, LAG) {
                        sent = Some(p);
                    }
                }
                Op::Answer(k) => {
                    if let Some(p) = sent.take() {
                        let outcome = match k {
                            0 => {
                                partition_epoch += 1;
                                AlterOutcome::Committed {
                                    leader_epoch: 5,
                                    partition_epoch,
                                    isr: p.isr.clone(),
                                }
                            }
                            1 => AlterOutcome::Refused,
                            _ => AlterOutcome::Unknown,
                        };
                        s.on_alter_partition(&p, outcome, leo);
                    }
                }
            }
            prop_assert!(s.high_watermark() >= hw, "HW went back");
            hw = s.high_watermark();
            prop_assert!(hw <= leo);
            let mut may_be_isr = s.maximal_isr();
            if let Some(p) = &sent {
                may_be_isr.extend(p.isr.iter().copied());
            }
            for b in may_be_isr.into_iter().filter(|b| *b != ME) {
                prop_assert!(
                    follower_leo[b.get() as usize] >= hw,
                    "HW {} past broker {}'s log end {}", hw, b, follower_leo[b.get() as usize]
                );
            }
        }
    }
}
