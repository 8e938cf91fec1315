//! A replica's recovery point after a roll, in a test binary of its own: it sets the
//! process-wide delay of background roll fsyncs to zero.

use bytes::Bytes;
use sluice_broker::partition::{PartitionHandle, ReplicaState, Role};
use sluice_metadata::BrokerId;
use sluice_storage::{LeaderEpoch, Log, LogConfig, RecordBatchBuilder};

fn batch(i: usize) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    b.append(1_700_000_000_000, None, Some(&[i as u8; 200]), &[]);
    b.build()
}

fn persisted_recovery_point(dir: &std::path::Path) -> i64 {
    std::fs::read_to_string(dir.join("recovery-point-offset-checkpoint"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The base offset of the newest segment file in `dir`.
fn active_segment_base(dir: &std::path::Path) -> i64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        })
        .max()
        .expect("a segment file")
}

/// #19 follow-up: a partition that rolls and then goes idle used to keep its recovery point
/// (on disk) before the rolled segment until its next append or the retention timer (5 min
/// by default), so a kill -9 in between rescanned that whole segment (up to 1 GiB) at
/// start-up. Now the flusher's completion reaches the replica's actor, which persists the
/// point at once. Method: a leader replica with 1 KiB segments, appends that roll, then no
/// more appends and no retention call; the checkpoint file must reach the active segment's
/// base within a bounded wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_replica_persists_its_recovery_point_once_a_rolled_segment_is_flushed() {
    sluice_storage::set_roll_flush_delay(std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    log.assign_leader_epoch(LeaderEpoch(0)).unwrap();
    let role = Role::Leader {
        leader_epoch: 0,
        partition_epoch: 0,
        isr: vec![BrokerId(1)],
        replicas: vec![BrokerId(1)],
    };
    let replica = ReplicaState::new(BrokerId(1), role.clone(), 0, 0);
    let (part, task) = PartitionHandle::spawn(
        "t".into(),
        Default::default(),
        0,
        log,
        replica,
        config.clone(),
    );
    part.set_role(role, config);
    for i in 0..12 {
        part.append(batch(i), None).await.unwrap();
    }
    let active_base = active_segment_base(dir.path());
    assert!(
        active_base >= 6,
        "segments did not roll: active at {active_base}"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = persisted_recovery_point(dir.path());
    while seen < active_base {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the persisted recovery point stayed at {seen}, below the active segment's base {active_base}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seen = persisted_recovery_point(dir.path());
    }
    part.close().await.unwrap();
    drop(part);
    task.await.unwrap();
}
