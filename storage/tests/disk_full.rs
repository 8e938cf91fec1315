//! A full disk (ENOSPC part-way through a write, simulated by `sluice_storage::fault`) fails
//! the append, leaves the log exactly as it was, and appends work again once space returns.
//! Its own test binary: the switch is process-wide.

mod common;

use common::*;
use sluice_storage::LeaderEpoch;

#[test]
fn enospc_mid_append_leaves_the_log_unchanged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    log.append_as_leader(batch(0, 3, 50, clock.now()), LeaderEpoch(0))
        .unwrap();
    let before = read_all(&log);
    let size = log.size_bytes();

    sluice_storage::fault::set_disk_full(true);
    let err = log
        .append_as_leader(batch(1, 3, 50, clock.now()), LeaderEpoch(0))
        .unwrap_err();
    sluice_storage::fault::set_disk_full(false);
    assert_eq!(err.reason(), "KAFKA_STORAGE_ERROR");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(log.size_bytes(), size, "the partial write was cut off");
    assert_eq!(read_all(&log), before);
    let files: u64 = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(files, size, "nothing half-written on disk");

    // Space is back: the next append lands right after the last whole batch.
    let info = log
        .append_as_leader(batch(2, 3, 50, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert_eq!(info.first_offset, 3);
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert!(log.recovery_report().corruptions.is_empty());
    assert_eq!(read_all(&log).len(), 6);
}
