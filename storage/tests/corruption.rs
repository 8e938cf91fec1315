//! Recovery from damaged files.
//!
//! Goal: whatever happened to the tail of a log — a flipped byte, a torn write, garbage
//! appended, a lost or garbled index — reopening keeps every intact batch before the damage,
//! drops the rest, rebuilds indexes, reports where it cut, and never serves corrupt bytes.
//! Method: write known batches, close cleanly or "crash" (drop without close), damage the
//! files directly, reopen, and compare what is readable with what was written.

mod common;

use sluice_storage::{LeaderEpoch, Offset};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::*;
use sluice_storage::batch::headers;
use sluice_storage::{Log, LogConfig};

/// Writes `n` batches of 3 records (offsets 3i..3i+2); returns their byte sizes.
fn fill(log: &mut Log, n: u32, clock: &TestClock) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let b = batch(i, 3, 40, clock.now());
            let size = b.len();
            log.append_as_leader(b, LeaderEpoch(1)).unwrap();
            size
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Shutdown {
    Clean,
    Crash,
}

fn setup(
    n: u32,
    config: LogConfig,
    how: Shutdown,
) -> (tempfile::TempDir, TestClock, Vec<(i64, bytes::Bytes)>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), config, &clock);
    fill(&mut log, n, &clock);
    let all = read_all(&log);
    match how {
        Shutdown::Clean => log.close().unwrap(),
        Shutdown::Crash => drop(log),
    }
    (dir, clock, all)
}

fn one_segment() -> LogConfig {
    LogConfig {
        index_interval_bytes: 256,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn last_batch_position(path: &std::path::Path) -> (u64, u64) {
    let data = std::fs::read(path).unwrap();
    let mut pos = 0u64;
    let mut last = (0, 0);
    for h in headers(&data) {
        last = (pos, h.size_bytes() as u64);
        pos += h.size_bytes() as u64;
    }
    last
}

#[test]
fn flipped_byte_in_last_batch_drops_only_that_batch() {
    for how in [Shutdown::Clean, Shutdown::Crash] {
        let (dir, clock, all) = setup(10, one_segment(), how);
        let seg = &segment_files(dir.path())[0];
        let (pos, size) = last_batch_position(seg);
        let f = OpenOptions::new().read(true).write(true).open(seg).unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, pos + size / 2).unwrap();
        f.write_all_at(&[byte[0] ^ 0x10], pos + size / 2).unwrap();

        let log = open(dir.path(), one_segment(), &clock);
        let report = log.recovery_report();
        assert_eq!(report.corruptions.len(), 1, "{how:?}: {report:?}");
        assert_eq!(report.corruptions[0].position, pos, "cut at the bad batch");
        assert_eq!(&report.corruptions[0].file, seg);
        assert!(report.corruptions[0].reason.contains("CRC"), "{report:?}");
        assert_eq!(log.log_end_offset(), 27);
        assert_eq!(read_all(&log), all[..27].to_vec(), "{how:?}");
        assert_eq!(std::fs::metadata(seg).unwrap().len(), pos);
    }
}

#[test]
fn file_cut_mid_batch_is_truncated_to_the_last_whole_batch() {
    for how in [Shutdown::Clean, Shutdown::Crash] {
        let (dir, clock, all) = setup(8, one_segment(), how);
        let seg = &segment_files(dir.path())[0];
        let (pos, size) = last_batch_position(seg);
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(pos + size - 7).unwrap();

        let mut log = open(dir.path(), one_segment(), &clock);
        assert_eq!(log.recovery_report().corruptions.len(), 1);
        assert!(log.recovery_report().corruptions[0].reason.contains("torn"));
        assert_eq!(read_all(&log), all[..21].to_vec());
        // The log continues cleanly after the cut.
        let info = log
            .append_as_leader(batch(99, 2, 10, clock.now()), LeaderEpoch(2))
            .unwrap();
        assert_eq!(info.first_offset, 21);
        assert_eq!(read_all(&log).len(), 23);
    }
}

#[test]
fn garbage_after_the_last_batch_is_dropped() {
    for how in [Shutdown::Clean, Shutdown::Crash] {
        for garbage in [
            vec![0u8; 5],
            vec![0xAB; 100],
            (0..200u8).collect::<Vec<_>>(),
        ] {
            let (dir, clock, all) = setup(5, one_segment(), how);
            let seg = &segment_files(dir.path())[0];
            let good_len = std::fs::metadata(seg).unwrap().len();
            OpenOptions::new()
                .append(true)
                .open(seg)
                .unwrap()
                .write_all(&garbage)
                .unwrap();

            let log = open(dir.path(), one_segment(), &clock);
            assert_eq!(log.recovery_report().corruptions.len(), 1, "{how:?}");
            assert_eq!(log.recovery_report().corruptions[0].position, good_len);
            assert_eq!(read_all(&log), all, "every intact batch kept");
            assert_eq!(std::fs::metadata(seg).unwrap().len(), good_len);
        }
    }
}

#[test]
fn deleted_index_is_rebuilt() {
    let (dir, clock, all) = setup(30, one_segment(), Shutdown::Clean);
    let seg = &segment_files(dir.path())[0];
    let index = seg.with_extension("index");
    let before = std::fs::read(&index).unwrap();
    assert!(before.len() >= 16, "several index entries were written");
    std::fs::remove_file(&index).unwrap();
    std::fs::remove_file(seg.with_extension("timeindex")).unwrap();

    let log = open(dir.path(), one_segment(), &clock);
    assert!(log.recovery_report().corruptions.is_empty());
    assert_eq!(read_all(&log), all);
    assert_eq!(
        std::fs::read(&index).unwrap(),
        before,
        "rebuilt index equals the original"
    );
    // Reads from the middle use the rebuilt index.
    let mid = log.read(Offset(45), 100, Offset(i64::MAX)).unwrap();
    let first = headers(&mid).next().unwrap();
    assert!(first.base_offset <= 45 && first.last_offset() >= 45);
}

#[test]
fn garbled_index_is_rebuilt() {
    type Garble = Box<dyn Fn(&mut Vec<u8>)>;
    let garbles: Vec<Garble> = vec![
        Box::new(|v| v.truncate(v.len() - 3)), // partial entry
        Box::new(|v| v.iter_mut().for_each(|b| *b = 0xff)), // positions past the end
        Box::new(|v| v.reverse()),             // not increasing
        Box::new(|v| v[4..8].copy_from_slice(&77u32.to_be_bytes())), // first entry not at 0
    ];
    for garble in garbles {
        let (dir, clock, all) = setup(30, one_segment(), Shutdown::Clean);
        let seg = &segment_files(dir.path())[0];
        let index = seg.with_extension("index");
        let original = std::fs::read(&index).unwrap();
        let mut v = original.clone();
        garble(&mut v);
        std::fs::write(&index, &v).unwrap();

        let log = open(dir.path(), one_segment(), &clock);
        assert_eq!(read_all(&log), all);
        assert_eq!(std::fs::read(&index).unwrap(), original);
    }
}

#[test]
fn corruption_in_a_middle_segment_after_a_crash_drops_every_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 60, &clock);
    let all = read_all(&log);
    drop(log); // crash: nothing was ever flushed, so every segment is scanned
    let segs = segment_files(dir.path());
    assert!(
        segs.len() >= 4,
        "test needs several segments, got {}",
        segs.len()
    );
    let victim = &segs[1];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(victim)
        .unwrap();
    f.write_all_at(&[0xEE, 0xEE], 300).unwrap();

    let log = open(dir.path(), small_config(), &clock);
    let report = log.recovery_report();
    assert_eq!(report.corruptions.len(), 1);
    assert_eq!(&report.corruptions[0].file, victim);
    assert_eq!(report.segments_deleted.len(), segs.len() - 2);
    let kept = read_all(&log);
    assert!(!kept.is_empty() && kept.len() < all.len());
    assert_eq!(
        kept,
        all[..kept.len()].to_vec(),
        "a prefix of what was written"
    );
    assert_eq!(log.log_end_offset(), kept.len() as i64);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn a_lost_tail_also_removes_its_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), one_segment(), &clock);
    log.append_as_leader(batch(0, 3, 10, clock.now()), LeaderEpoch(1))
        .unwrap();
    log.append_as_leader(batch(1, 3, 10, clock.now()), LeaderEpoch(2))
        .unwrap();
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
    drop(log);
    let seg = &segment_files(dir.path())[0];
    let (pos, _) = last_batch_position(seg);
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(pos + 20)
        .unwrap();

    let log = open(dir.path(), one_segment(), &clock);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(
        log.latest_epoch(),
        Some(LeaderEpoch(1)),
        "epoch 2 started in the lost tail"
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        (LeaderEpoch(1), Offset(3))
    );
}

#[test]
fn flushed_data_survives_a_crash_and_index_tail_loss() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config().fsync_every_append(), &clock);
    fill(&mut log, 40, &clock);
    assert_eq!(
        log.recovery_point(),
        log.log_end_offset(),
        "fsync per append"
    );
    let all = read_all(&log);
    drop(log);
    // Index entries are buffered; pretend the index files lost their tails entirely.
    for seg in segment_files(dir.path()) {
        std::fs::write(seg.with_extension("index"), b"").unwrap();
    }
    let log = open(dir.path(), small_config(), &clock);
    assert!(log.recovery_report().corruptions.is_empty());
    assert_eq!(read_all(&log), all);
}

#[test]
fn a_lying_index_entry_never_costs_good_data() {
    // The last index entry is moved into the middle of a batch: the tail check fails, but
    // the log itself is fine, so recovery must rebuild the index, not cut the log.
    let (dir, clock, all) = setup(30, one_segment(), Shutdown::Clean);
    let seg = &segment_files(dir.path())[0];
    let index = seg.with_extension("index");
    let mut v = std::fs::read(&index).unwrap();
    let n = v.len();
    let pos = u32::from_be_bytes(v[n - 4..].try_into().unwrap());
    v[n - 4..].copy_from_slice(&(pos + 13).to_be_bytes());
    std::fs::write(&index, &v).unwrap();

    let log = open(dir.path(), one_segment(), &clock);
    assert!(
        log.recovery_report().corruptions.is_empty(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(read_all(&log), all);
}
