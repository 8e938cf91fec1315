//! Idempotent-producer deduplication in the log: duplicates get their original offsets,
//! gaps and fenced epochs are refused with nothing written, and the state survives a
//! crash, a clean restart, follower replication and truncation.

mod common;

use bytes::Bytes;
use common::*;
use sluice_storage::{LeaderEpoch, Offset};
use sluice_storage::{Log, RecordBatchBuilder};

fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..n {
        b.append(
            ts,
            None,
            Some(format!("p{pid}-s{}", seq + i as i32).as_bytes()),
            &[],
        );
    }
    b.build()
}

/// Appends seq 0.. in batches of 3 for producer 9, rolling segments along the way.
fn fill(log: &mut Log, clock: &TestClock, batches: i32) {
    for k in 0..batches {
        let info = log
            .append_as_leader(pbatch(9, 0, k * 3, 3, clock.now()), LeaderEpoch(0))
            .unwrap();
        assert!(!info.duplicate);
    }
}

#[test]
fn a_retried_batch_gets_its_original_offsets_and_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    log.append_as_leader(batch(0, 2, 10, clock.now()), LeaderEpoch(0))
        .unwrap();
    let first = log
        .append_as_leader(pbatch(9, 0, 0, 3, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert_eq!(
        (first.first_offset, first.last_offset),
        (Offset(2), Offset(4))
    );
    let end = log.log_end_offset();
    let retry = log
        .append_as_leader(pbatch(9, 0, 0, 3, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.first_offset, retry.last_offset),
        (Offset(2), Offset(4))
    );
    assert_eq!(log.log_end_offset(), end, "a duplicate writes nothing");

    // A gap, and a zombie from an older epoch, are refused and write nothing.
    let gap = log
        .append_as_leader(pbatch(9, 0, 7, 1, clock.now()), LeaderEpoch(0))
        .unwrap_err();
    assert_eq!(gap.reason(), "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert!(gap.to_string().contains("expected 3"), "{gap}");
    log.append_as_leader(pbatch(9, 1, 0, 1, clock.now()), LeaderEpoch(0))
        .unwrap();
    let zombie = log
        .append_as_leader(pbatch(9, 0, 3, 1, clock.now()), LeaderEpoch(0))
        .unwrap_err();
    assert_eq!(zombie.reason(), "INVALID_PRODUCER_EPOCH");
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn producer_state_survives_crash_and_clean_restart() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new();
        let mut log = open(dir.path(), small_config(), &clock);
        fill(&mut log, &clock, 200);
        assert!(log.segment_base_offsets().len() > 3, "several segments");
        let before = log.producer_state().clone();
        if clean {
            log.close().unwrap();
        } else {
            drop(log);
        }
        let mut log = open(dir.path(), small_config(), &clock);
        assert_eq!(log.producer_state(), &before, "clean={clean}");
        let retry = log
            .append_as_leader(pbatch(9, 0, 597, 3, clock.now()), LeaderEpoch(0))
            .unwrap();
        assert!(retry.duplicate, "clean={clean}");
        assert_eq!(retry.first_offset, 597);
        log.append_as_leader(pbatch(9, 0, 600, 3, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
}

#[test]
fn followers_rebuild_the_same_state_and_truncation_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let fdir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut leader = open(dir.path(), small_config(), &clock);
    let mut follower = open(fdir.path(), small_config(), &clock);
    fill(&mut leader, &clock, 100);
    while follower.log_end_offset() < leader.log_end_offset() {
        let chunk = leader
            .read(follower.log_end_offset(), usize::MAX, Offset(i64::MAX))
            .unwrap();
        follower.append_as_follower(chunk).unwrap();
    }
    assert_eq!(follower.producer_state(), leader.producer_state());

    // After truncating the last 5 batches the follower, promoted, expects seq 285 again.
    follower.truncate_to(Offset(285)).unwrap();
    assert_eq!(follower.log_end_offset(), 285);
    let err = follower
        .append_as_leader(pbatch(9, 0, 300, 3, clock.now()), LeaderEpoch(1))
        .unwrap_err();
    assert_eq!(err.reason(), "OUT_OF_ORDER_SEQUENCE_NUMBER");
    let info = follower
        .append_as_leader(pbatch(9, 0, 285, 3, clock.now()), LeaderEpoch(1))
        .unwrap();
    assert!(!info.duplicate);
    assert_eq!(info.first_offset, 285);
    // Batches before the cut are still recognised as duplicates.
    assert!(
        follower
            .append_as_leader(pbatch(9, 0, 282, 3, clock.now()), LeaderEpoch(1))
            .unwrap()
            .duplicate
    );
}

/// Review defect 5: a produce holding a retried batch and a new one used to answer with the
/// duplicate's offsets and silently drop the new batch. A leader now takes exactly one
/// batch per call (Kafka's rule for magic v2): the pair is refused and nothing is written.
#[test]
fn a_duplicate_followed_by_a_new_batch_in_one_append_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path().join("t-0"), Default::default()).unwrap();
    let first = pbatch(7, 0, 0, 1, 1_000);
    log.append_as_leader(first.clone(), LeaderEpoch(1)).unwrap();
    let second = pbatch(7, 0, 1, 1, 1_000);
    let mut both = first.to_vec();
    both.extend_from_slice(&second);
    let err = log
        .append_as_leader(both.into(), LeaderEpoch(1))
        .unwrap_err();
    assert_eq!(err.reason(), "INVALID_RECORD", "{err}");
    assert_eq!(log.log_end_offset(), 1, "nothing written");
    let info = log.append_as_leader(second, LeaderEpoch(1)).unwrap();
    assert_eq!((info.first_offset, info.duplicate), (Offset(1), false));
}
