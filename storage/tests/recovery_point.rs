//! The recovery point after rolls, in a test binary of its own: it sets the process-wide
//! delay of background roll fsyncs to zero, which other tests (that rely on nothing being
//! flushed) must not see.

mod common;

use common::*;
use sluice_storage::{LeaderEpoch, Log};

fn fill(log: &mut Log, n: u32, clock: &TestClock) {
    for i in 0..n {
        log.append_as_leader(batch(i, 3, 40, clock.now()), LeaderEpoch(1))
            .unwrap();
    }
}

/// Goal: after kill -9 only the segments written since the last roll are scanned, not the
/// whole log (Kafka flushes a rolled segment in the background and moves the recovery
/// point to the next segment's base; #19: a 2.3 GiB log took ~7 s to open, every segment
/// scanned). Method: small segments, no explicit flush; append until several segments
/// exist; let the owner's timer (`maybe_flush`) pick up the background fsyncs until the
/// recovery point reaches the active segment; crash; the reopen scans one segment and
/// keeps every batch. Without the background flush the recovery point stayed at 0.
#[test]
fn a_crash_after_rolls_scans_only_the_segments_after_the_recovery_point() {
    sluice_storage::set_roll_flush_delay(std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = small_config();
    let mut log = open(dir.path(), config.clone(), &clock);
    fill(&mut log, 60, &clock);
    let segments = log.segment_count();
    assert!(segments >= 4, "{segments} segments");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.recovery_point().get() < log.active_base_offset() {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery point {} never reached the active segment at {}",
            log.recovery_point().get(),
            log.active_base_offset()
        );
        log.maybe_flush().unwrap();
        std::thread::yield_now();
    }
    let all = read_all(&log);
    drop(log);
    let log = open(dir.path(), config, &clock);
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert_eq!(report.segments_scanned, 1, "{report:?}");
    assert_eq!(read_all(&log), all);
}

/// An idle partition after a roll: the owner is told when the rolled segment's background
/// fsync is done and moves the recovery point then, without another append (before, the
/// point moved only at the next append or `maybe_flush`, so a crash of an idle partition
/// rescanned its last rolled segment). Method: roll, append nothing more, wait (bounded) for
/// the notification, settle; the persisted point is the active segment's base and a crash
/// scans one segment.
#[test]
fn the_owner_is_told_when_a_roll_flush_is_done_and_settles_the_point_without_an_append() {
    sluice_storage::set_roll_flush_delay(std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = small_config();
    let mut log = open(dir.path(), config.clone(), &clock);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    log.on_roll_flushed(std::sync::Arc::new(move || {
        let _ = tx.lock().unwrap().send(());
    }));
    fill(&mut log, 60, &clock);
    assert!(log.segment_count() >= 4);
    let active = log.active_base_offset();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.recovery_point().get() < active {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "no roll-flush notification ({e}); recovery point {} < {active}",
                log.recovery_point().get()
            )
        });
        log.settle_roll_flushes().unwrap();
    }
    let all = read_all(&log);
    drop(log);
    let log = open(dir.path(), config, &clock);
    assert_eq!(log.recovery_report().segments_scanned, 1);
    assert_eq!(read_all(&log), all);
}
