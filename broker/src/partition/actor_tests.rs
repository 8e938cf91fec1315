//! The actor with a real log in a temp dir: what a restarted replica answers.

use sluice_metadata::LeaderEpoch;
use sluice_storage::{Log, LogConfig, RecordBatchBuilder};

use sluice_metadata::BrokerId;

use super::*;
use crate::partition::state::{ReplicaState, Role};

fn batch(v: &[u8]) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    b.append(1_700_000_000_000, None, Some(v), &[]);
    b.build()
}

/// A log of `records` records written in leader epoch 0 by a previous process.
fn written_log(dir: &std::path::Path, records: usize) -> Log {
    let mut log = Log::open(dir, LogConfig::default()).unwrap();
    log.assign_leader_epoch(LeaderEpoch(0)).unwrap();
    for i in 0..records {
        log.append_as_leader(batch(format!("v{i}").as_bytes()), LeaderEpoch(0))
            .unwrap();
    }
    log.shutdown().unwrap();
    drop(log);
    Log::open(dir, LogConfig::default()).unwrap()
}

/// Review defect 12 of issue 12: a restarted leader whose followers have not fetched yet
/// answered ListOffsets(latest) with a stale HW of 0. With the HW from
/// `replication-offset-checkpoint` it answers that; without one it answers
/// OFFSET_NOT_AVAILABLE (retriable, KIP-207) until the HW reaches its epoch start — never
/// an offset below what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_never_answers_a_stale_latest_offset() {
    for (checkpointed, want) in [(Some(40), Some(40)), (None, None)] {
        let dir = tempfile::tempdir().unwrap();
        let log = written_log(dir.path(), 40);
        let leo = log.log_end_offset();
        assert_eq!(leo, 40);
        // Leader again in a new epoch, followers 2 and 3 not fetching yet.
        let role = Role::Leader {
            leader_epoch: 1,
            partition_epoch: 1,
            isr: BrokerId::from_wire(&[1, 2, 3]),
            replicas: BrokerId::from_wire(&[1, 2, 3]),
        };
        let replica = ReplicaState::new(
            BrokerId(1),
            role.clone(),
            checkpointed.unwrap_or(0),
            leo.get(),
        );
        let (part, task) = PartitionHandle::spawn(
            "t".into(),
            Default::default(),
            0,
            log,
            replica,
            LogConfig::default(),
        );
        part.set_role(role, LogConfig::default());
        let got = part
            .list_offset(-1, None)
            .await
            .map(|(_, offset, _)| offset);
        match want {
            Some(offset) => assert_eq!(got.ok(), Some(offset), "checkpointed {checkpointed:?}"),
            None => assert!(
                matches!(got, Err(BrokerError::OffsetNotAvailable { .. })),
                "checkpointed {checkpointed:?}: {got:?}"
            ),
        }
        part.close().await.ok();
        let _ = task.await;
    }
}

/// KIP-320: ListOffsets and OffsetForLeaderEpoch check the leader epoch the asker believes
/// current, as Fetch does: an older one is FENCED_LEADER_EPOCH (the asker is behind), a
/// newer one UNKNOWN_LEADER_EPOCH (this replica is behind); -1 or none skips the check.
#[tokio::test]
async fn offset_lookups_check_the_askers_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = written_log(dir.path(), 10);
    let (part, task) = sole_leader(log, 5);
    for (current, fenced, unknown) in [
        (None, false, false),
        (Some(-1), false, false),
        (Some(5), false, false),
        (Some(4), true, false),
        (Some(6), false, true),
    ] {
        for r in [
            part.list_offset(-1, current).await.map(|_| ()),
            part.epoch_end_offset(0, current).await.map(|_| ()),
        ] {
            assert_eq!(
                matches!(r, Err(BrokerError::FencedLeaderEpoch { .. })),
                fenced,
                "{current:?}: {r:?}"
            );
            assert_eq!(
                matches!(r, Err(BrokerError::UnknownLeaderEpoch { .. })),
                unknown,
                "{current:?}: {r:?}"
            );
            if !fenced && !unknown {
                assert!(r.is_ok(), "{current:?}: {r:?}");
            }
        }
    }
    // The epoch answered is the one that wrote the record found (Kafka's epochForOffset):
    // these records were written in epoch 0, while the replica now leads epoch 5.
    let (epoch, offset, _) = part.list_offset(-2, None).await.unwrap();
    assert_eq!((epoch, offset), (0, 0), "earliest");
    let (epoch, offset, _) = part.list_offset(0, None).await.unwrap();
    assert_eq!((epoch, offset), (0, 0), "by timestamp");
    part.close().await.ok();
    let _ = task.await;
}

/// A closed replica tells whoever waits on its offsets (an acks=all produce, a long poll)
/// at once, instead of leaving them to their timeouts.
#[tokio::test]
async fn closing_a_replica_wakes_its_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let log = written_log(dir.path(), 3);
    let (part, task) = sole_leader(log, 1);
    let mut rx = part.subscribe();
    assert!(rx.borrow_and_update().is_leader);
    part.close().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .expect("woken")
        .expect("the watch lives while handles do");
    assert!(!rx.borrow().is_leader, "no longer leading");
    assert!(matches!(
        part.list_offset(-1, None).await,
        Err(BrokerError::ReplicaClosed { .. })
    ));
    let _ = task.await;
}

/// A replica of `log` leading alone at `epoch`, with its HW at the log end.
fn sole_leader(log: Log, epoch: i32) -> (PartitionHandle, tokio::task::JoinHandle<()>) {
    let role = Role::Leader {
        leader_epoch: epoch,
        partition_epoch: epoch,
        isr: BrokerId::from_wire(&[1]),
        replicas: BrokerId::from_wire(&[1]),
    };
    let leo = log.log_end_offset().get();
    let replica = ReplicaState::new(BrokerId(1), role, leo, leo);
    PartitionHandle::spawn(
        "t".into(),
        Default::default(),
        0,
        log,
        replica,
        LogConfig::default(),
    )
}
