//! Log policies: rolling, retention, timestamps, epochs, replication and flushing.
//!
//! Each test drives one policy with a controlled clock and small limits and checks what a
//! broker relies on: offsets, which segments exist, what reads and lookups answer.

mod common;

use bytes::Bytes;
use common::*;
use sluice_storage::{LeaderEpoch, Offset};
use sluice_storage::{Log, LogConfig, Validation};

#[test]
fn segments_roll_at_segment_bytes_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    for i in 0..50 {
        log.append_as_leader(batch(i, 3, 60, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
    let files = segment_files(dir.path());
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        files.len() as u64 >= total / 4096,
        "rolled into {} segments",
        files.len()
    );
    assert!(files.len() >= 3);
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 4096,
            "{} too big",
            f.display()
        );
    }
    let bases = log.segment_base_offsets();
    let names: Vec<String> = bases.iter().map(|b| format!("{b:020}.log")).collect();
    let on_disk: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, on_disk, "segment files are named by base offset");
    let all = read_all(&log);
    assert_eq!(all.len(), 150);
    assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as i64));
}

#[test]
fn segments_roll_at_segment_ms_of_record_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let cfg = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, &clock);
    let t0 = clock.now();
    log.append_as_leader(batch(0, 2, 10, t0), LeaderEpoch(0))
        .unwrap();
    log.append_as_leader(batch(1, 2, 10, t0 + 59_000), LeaderEpoch(0))
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0]);
    log.append_as_leader(batch(2, 2, 10, t0 + 61_000), LeaderEpoch(0))
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
}

#[test]
fn retention_by_time_deletes_only_expired_closed_segments_below_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let cfg = LogConfig {
        retention_ms: 10_000,
        ..small_config()
    };
    let mut log = open(dir.path(), cfg, &clock);
    for i in 0..30 {
        log.append_as_leader(batch(i, 3, 60, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
    let old_segments = log.segment_base_offsets();
    clock.advance(20_000);
    for i in 30..40 {
        log.append_as_leader(batch(i, 3, 60, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
    // Nothing is deleted past the high watermark.
    assert!(log.delete_retained_segments(Offset(0)).unwrap().is_empty());
    let hw = log.log_end_offset();
    let deleted = log.delete_retained_segments(hw).unwrap();
    assert!(!deleted.is_empty());
    assert!(deleted.iter().all(|b| old_segments.contains(b)));
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    assert!(start <= 90, "records newer than retention.ms survive");
    let err = log.read(start - 1, 100, hw).unwrap_err();
    assert_eq!(err.reason(), "OFFSET_OUT_OF_RANGE");
    // The active segment is never deleted, even when everything is expired.
    clock.advance(1_000_000);
    log.delete_retained_segments(hw).unwrap();
    assert_eq!(log.segment_base_offsets().len(), 1);
    assert_eq!(log.log_end_offset(), hw);
}

#[test]
fn retention_by_bytes_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let cfg = LogConfig {
        retention_bytes: 10_000,
        ..small_config()
    };
    let mut log = open(dir.path(), cfg, &clock);
    for i in 0..100 {
        log.append_as_leader(batch(i, 3, 60, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
    assert!(log.size_bytes() > 20_000);
    log.delete_retained_segments(log.log_end_offset()).unwrap();
    assert!(
        log.size_bytes() <= 10_000 + 4096,
        "size {}",
        log.size_bytes()
    );
    assert!(
        log.size_bytes() > 10_000 - 4096,
        "deleted too much: {}",
        log.size_bytes()
    );
    let kept = read_all(&log);
    assert_eq!(kept.first().unwrap().0, log.log_start_offset().get());
    assert_eq!(kept.last().unwrap().0, 299);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    let t0 = clock.now();
    for i in 0..60i64 {
        // Records i*3 .. i*3+2 have timestamps t0 + i*100 + {0,1,2}.
        log.append_as_leader(batch(i as u32, 3, 40, t0 + i * 100), LeaderEpoch(0))
            .unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(t0 - 5).unwrap(),
        Some((Offset(0), t0))
    );
    assert_eq!(
        log.offset_for_timestamp(t0 + 1).unwrap(),
        Some((Offset(1), t0 + 1))
    );
    assert_eq!(
        log.offset_for_timestamp(t0 + 3).unwrap(),
        Some((Offset(3), t0 + 100))
    );
    assert_eq!(
        log.offset_for_timestamp(t0 + 4_250).unwrap(),
        Some((Offset(129), t0 + 4_300))
    );
    assert_eq!(
        log.offset_for_timestamp(t0 + 5_902).unwrap(),
        Some((Offset(179), t0 + 5_902))
    );
    assert_eq!(log.offset_for_timestamp(t0 + 5_903).unwrap(), None);
}

#[test]
fn leader_rewrites_offsets_and_epoch_and_follower_copies_bytes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut leader = open(&dir.path().join("leader"), small_config(), &clock);
    let mut follower = open(&dir.path().join("follower"), small_config(), &clock);
    for (i, epoch) in [(0u32, 1), (1, 1), (2, 4), (3, 4), (4, 6)] {
        let info = leader
            .append_as_leader(batch(i, 5, 30, clock.now()), LeaderEpoch(epoch))
            .unwrap();
        assert_eq!(info.batches[0].partition_leader_epoch, epoch);
        assert_eq!(info.first_offset, i as i64 * 5);
    }
    // Replicate in fetch-sized chunks, as a follower would.
    let mut at = follower.log_end_offset();
    while at < leader.log_end_offset() {
        let bytes = leader.read(at, 300, leader.log_end_offset()).unwrap();
        let info = follower.append_as_follower(bytes).unwrap();
        at = info.last_offset + 1;
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(
        follower.leader_epochs().entries(),
        leader.leader_epochs().entries()
    );
    let l = leader.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap();
    let f = follower.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap();
    assert_eq!(l, f, "stored bytes are identical");
    // KIP-101: where does epoch 4 end? At the start of epoch 6.
    assert_eq!(
        leader.end_offset_for_epoch(LeaderEpoch(4)),
        (LeaderEpoch(4), Offset(20))
    );
    assert_eq!(
        leader.end_offset_for_epoch(LeaderEpoch(5)),
        (LeaderEpoch(4), Offset(20))
    );
    assert_eq!(
        leader.end_offset_for_epoch(LeaderEpoch(6)),
        (LeaderEpoch(6), Offset(25))
    );
    // Divergence: the follower led epoch 6 for a moment and wrote a batch nobody copied; the
    // leader of epoch 7 wrote different data at the same offsets.
    follower
        .append_as_leader(batch(50, 3, 10, clock.now()), LeaderEpoch(6))
        .unwrap();
    leader
        .append_as_leader(batch(60, 2, 10, clock.now()), LeaderEpoch(7))
        .unwrap();
    let (epoch, end) = leader.end_offset_for_epoch(follower.latest_epoch().unwrap());
    assert_eq!(
        (epoch, end),
        (LeaderEpoch(6), Offset(25)),
        "epoch 6 ends where epoch 7 starts"
    );
    follower.truncate_to(end).unwrap();
    assert_eq!(follower.log_end_offset(), 25);
    let bytes = leader
        .read(Offset(25), 1 << 20, leader.log_end_offset())
        .unwrap();
    follower.append_as_follower(bytes).unwrap();
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(7)));
    // An epoch newer than anything the leader knows is undefined (Kafka's answer).
    assert_eq!(
        leader.end_offset_for_epoch(LeaderEpoch(8)),
        (LeaderEpoch(-1), Offset(-1))
    );
}

#[test]
fn a_stale_leader_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(batch(0, 1, 10, clock.now()), LeaderEpoch(5))
        .unwrap();
    let err = log
        .append_as_leader(batch(1, 1, 10, clock.now()), LeaderEpoch(4))
        .unwrap_err();
    assert!(err.to_string().contains("older"), "{err}");
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn truncation_inside_a_batch_removes_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    for i in 0..10 {
        log.append_as_leader(batch(i, 4, 20, clock.now()), LeaderEpoch(0))
            .unwrap();
    }
    log.truncate_to(Offset(22)).unwrap();
    assert_eq!(log.log_end_offset(), 20, "batch 20..23 removed whole");
    log.truncate_to(Offset(20)).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    log.truncate_to(Offset(0)).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(0), Offset(0))
    );
    log.append_as_leader(batch(0, 1, 1, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn flush_policy_by_messages_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let cfg = LogConfig {
        flush_interval_messages: 10,
        flush_interval_ms: 5_000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, &clock);
    log.append_as_leader(batch(0, 4, 10, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert_eq!(log.recovery_point(), 0, "4 < flush.messages");
    log.append_as_leader(batch(1, 6, 10, clock.now()), LeaderEpoch(0))
        .unwrap();
    assert_eq!(log.recovery_point(), 10, "flushed at 10 records");
    log.append_as_leader(batch(2, 1, 10, clock.now()), LeaderEpoch(0))
        .unwrap();
    log.maybe_flush().unwrap();
    assert_eq!(log.recovery_point(), 10);
    clock.advance(5_000);
    log.maybe_flush().unwrap();
    assert_eq!(log.recovery_point(), 11, "flush.ms elapsed");
}

#[test]
fn stored_records_decode_to_what_was_produced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut b = sluice_storage::RecordBatchBuilder::new();
    b.append(
        clock.now(),
        Some(b"user-1"),
        Some(b"hello"),
        &[(b"trace", Some(b"abc"))],
    );
    b.append(clock.now() + 1, None, None, &[]);
    log.append_as_leader(b.build(), LeaderEpoch(2)).unwrap();
    let bytes = log.read(Offset(0), 1000, Offset(2)).unwrap();
    let batch = sluice_storage::RecordBatch::from_bytes(bytes, Validation::Full).unwrap();
    let recs: Vec<_> = batch.records().map(Result::unwrap).collect();
    assert_eq!(recs[0].key, Some(Bytes::from_static(b"user-1")));
    assert_eq!(recs[0].value, Some(Bytes::from_static(b"hello")));
    assert_eq!(recs[0].headers[0].value, Some(Bytes::from_static(b"abc")));
    assert_eq!(
        (recs[1].offset, recs[1].key.clone(), recs[1].value.clone()),
        (1, None, None)
    );
    // Reads honour the high watermark: nothing at or past it.
    assert!(log.read(Offset(0), 1000, Offset(0)).unwrap().is_empty());
}

/// Regression (found by t90 `all_nodes_crash_at_once_and_restart`): a replica elected
/// leader that wrote nothing keeps an epoch entry at its log end. Demoted, it fetched with
/// that epoch, was told to truncate to its own log end, and `truncate_to` returned early
/// without dropping the entry — so it fetched with it again, forever, and never rejoined
/// the ISR.
#[test]
fn truncating_to_the_log_end_drops_an_empty_epoch_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), small_config(), &clock);
    log.append_as_leader(batch(0, 5, 10, clock.now()), LeaderEpoch(1))
        .unwrap();
    // Elected at epoch 3, then demoted before writing anything.
    log.assign_leader_epoch(LeaderEpoch(3)).unwrap();
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(3)));
    let end = log.log_end_offset();
    // The new leader (epoch 4) says our histories agree up to our log end.
    log.truncate_to(end).unwrap();
    assert_eq!(log.log_end_offset(), end, "no record removed");
    assert_eq!(
        log.latest_epoch(),
        Some(LeaderEpoch(1)),
        "the empty epoch 3 is gone"
    );
    // It survives a restart too.
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
}

/// Review defect 9 of issue 12: a lost `leader-epoch-checkpoint` used to leave the epoch
/// cache empty, so this replica, as a follower, sent no last fetched epoch and skipped the
/// divergence check. Recovery now rebuilds it from the batch headers (Kafka's LogLoader).
#[test]
fn a_lost_epoch_checkpoint_is_rebuilt_from_the_batch_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    {
        let mut log = Log::open(&path, small_config()).unwrap();
        log.append_as_leader(batch(1, 3, 10, 1_000), LeaderEpoch(1))
            .unwrap();
        log.append_as_leader(batch(2, 2, 10, 1_000), LeaderEpoch(3))
            .unwrap();
        log.append_as_leader(batch(3, 4, 10, 1_000), LeaderEpoch(3))
            .unwrap();
        log.shutdown().unwrap();
    }
    std::fs::remove_file(path.join(sluice_storage::epoch::LEADER_EPOCH_CHECKPOINT)).unwrap();
    let log = Log::open(&path, small_config()).unwrap();
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(3)));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        (LeaderEpoch(1), Offset(3))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(2)),
        (LeaderEpoch(1), Offset(3))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        (LeaderEpoch(3), Offset(9))
    );
}

/// The epoch checkpoint is no longer fsynced at each change (a broker taking over thousands
/// of leaderships paid one fsync each): one torn by a power loss is rebuilt from the batch
/// headers instead of keeping the log from opening, and a flush makes it durable first.
#[test]
fn a_torn_epoch_checkpoint_is_rebuilt_and_a_flush_makes_epochs_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    {
        let mut log = Log::open(&path, small_config()).unwrap();
        log.append_as_leader(batch(1, 3, 10, 1_000), LeaderEpoch(1))
            .unwrap();
        assert!(log.assign_leader_epoch(LeaderEpoch(4)).unwrap());
        log.append_as_leader(batch(2, 2, 10, 1_000), LeaderEpoch(4))
            .unwrap();
        log.flush().unwrap();
        log.shutdown().unwrap();
    }
    std::fs::write(
        path.join(sluice_storage::epoch::LEADER_EPOCH_CHECKPOINT),
        b"0\n2\n1 0\n4",
    )
    .unwrap();
    let log = Log::open(&path, small_config()).unwrap();
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(4)));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        (LeaderEpoch(1), Offset(3))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(4)),
        (LeaderEpoch(4), Offset(5))
    );
}

/// `compression.type`: `producer` (None) stores a batch in the producer's codec; a codec
/// recompresses batches of another one at the leader (Kafka's LogValidator), keeping the
/// records, their offsets and the producer fields.
#[test]
fn compression_type_keeps_or_recompresses_batches() {
    use sluice_storage::batch::batches;
    use sluice_storage::{Compression, RecordBatchBuilder};
    let build = |codec: Compression| {
        let mut b = RecordBatchBuilder::new().compression(codec);
        for i in 0..20 {
            b.append(1_000 + i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
        }
        b.build()
    };
    let stored_codecs = |config: LogConfig, input: Compression| {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new();
        let mut log = open(dir.path(), config, &clock);
        log.append_as_leader(build(input), LeaderEpoch(0)).unwrap();
        log.append_as_leader(build(input), LeaderEpoch(0)).unwrap();
        let bytes = log.read(Offset(0), 1 << 20, log.log_end_offset()).unwrap();
        batches(bytes)
            .map(|b| {
                let b = b.unwrap();
                let values: Vec<Bytes> = b.records().map(|r| r.unwrap().value.unwrap()).collect();
                (b.base_offset(), b.header().compression(), values.len())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stored_codecs(LogConfig::default(), Compression::Gzip),
        vec![(0, 1, 20), (20, 1, 20)],
        "producer: as sent"
    );
    let zstd = LogConfig {
        compression: Some(Compression::Zstd),
        ..LogConfig::default()
    };
    assert_eq!(
        stored_codecs(zstd.clone(), Compression::None),
        vec![(0, 4, 20), (20, 4, 20)]
    );
    assert_eq!(
        stored_codecs(zstd, Compression::Snappy),
        vec![(0, 4, 20), (20, 4, 20)]
    );
    let plain = LogConfig {
        compression: Some(Compression::None),
        ..LogConfig::default()
    };
    assert_eq!(
        stored_codecs(plain, Compression::Lz4),
        vec![(0, 0, 20), (20, 0, 20)],
        "uncompressed"
    );
}

/// The tail cache (storage/src/tail.rs): reads of the newest batches come from memory and
/// are byte-identical to what the files hold; a truncation or a follower append empties it.
#[test]
fn tail_reads_come_from_memory_and_match_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = LogConfig {
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone(), &clock);
    for i in 0..40u32 {
        log.append_as_leader(batch(i, 4, 100, clock.now()), LeaderEpoch(3))
            .unwrap();
    }
    let end = log.log_end_offset();
    assert!(
        log.reads_from_memory(Offset(0)),
        "all of it is newer than the cache's limits"
    );
    let mut cached = Vec::new();
    for at in 0..end.get() {
        for (max_bytes, upper) in [
            (1, end),
            (700, end),
            (1 << 20, end),
            (1 << 20, Offset(at + 5)),
        ] {
            cached.push(log.read(Offset(at), max_bytes, upper).unwrap());
        }
    }
    // A clean reopen starts with an empty cache: the same reads from the files.
    log.close().unwrap();
    let mut log = open(dir.path(), config.clone(), &clock);
    assert!(!log.reads_from_memory(Offset(0)));
    assert!(log.reads_from_memory(end), "the log end reads nothing");
    let mut i = 0;
    for at in 0..end.get() {
        for (max_bytes, upper) in [
            (1, end),
            (700, end),
            (1 << 20, end),
            (1 << 20, Offset(at + 5)),
        ] {
            let from_file = log.read(Offset(at), max_bytes, upper).unwrap();
            assert_eq!(
                from_file, cached[i],
                "read at {at}, max {max_bytes}, upper {upper}"
            );
            i += 1;
        }
    }
    // New appends are cached again from where the log ended.
    log.append_as_leader(batch(99, 2, 10, clock.now()), LeaderEpoch(3))
        .unwrap();
    assert!(log.reads_from_memory(end) && !log.reads_from_memory(Offset(end.get() - 1)));
    // Truncation empties the cache: the truncated batch is never served again.
    log.truncate_to(end).unwrap();
    log.append_as_leader(batch(7, 3, 10, clock.now()), LeaderEpoch(4))
        .unwrap();
    let got = log.read(end, 1 << 20, log.log_end_offset()).unwrap();
    let first = sluice_storage::batch::batches(got).next().unwrap().unwrap();
    assert_eq!(first.header().partition_leader_epoch, 4);
    assert_eq!(first.header().records_count, 3);
    // Entries older than the age limit go at the next maintenance call.
    clock.advance(sluice_storage::tail::TAIL_CACHE_AGE_MS + 1);
    log.maybe_flush().unwrap();
    assert!(!log.reads_from_memory(end));
}

/// The tail cache's limits: one log holds at most `TAIL_CACHE_BYTES_PER_LOG` (the oldest
/// entries go first) and never a batch above `TAIL_CACHE_BATCH_BYTES_MAX` (which restarts
/// the cache after it).
#[test]
fn tail_cache_keeps_to_its_limits() {
    use sluice_storage::tail::{TAIL_CACHE_BATCH_BYTES_MAX, TAIL_CACHE_BYTES_PER_LOG};
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    // ~20 KiB batches: a bit over the per-log budget in all.
    let n = (TAIL_CACHE_BYTES_PER_LOG / (20 * 1024)) as u32 + 4;
    for i in 0..n {
        log.append_as_leader(batch(i, 20, 1024, clock.now()), LeaderEpoch(1))
            .unwrap();
    }
    assert!(
        !log.reads_from_memory(Offset(0)),
        "the oldest batches were evicted"
    );
    assert!(log.reads_from_memory(Offset(log.log_end_offset().get() - 20)));
    let before_big = log.log_end_offset();
    log.append_as_leader(
        batch(1000, 1, TAIL_CACHE_BATCH_BYTES_MAX + 1, clock.now()),
        LeaderEpoch(1),
    )
    .unwrap();
    assert!(
        !log.reads_from_memory(before_big),
        "a big batch is read from the file"
    );
    assert!(
        !log.reads_from_memory(Offset(before_big.get() - 20)),
        "the cache restarted after it"
    );
    let after_big = log.log_end_offset();
    log.append_as_leader(batch(1001, 2, 10, clock.now()), LeaderEpoch(1))
        .unwrap();
    assert!(log.reads_from_memory(after_big));
    assert_eq!(
        read_all(&log).len() as i64,
        log.log_end_offset().get(),
        "every record reads back, from memory or file"
    );
}

/// Reads as file ranges (for `sendfile`) are the very bytes a read returns, for every cut;
/// ranges of big batches come back unread while their pages are cached, and small,
/// many-batch or evicted ranges come back in memory. A range stays readable after
/// retention deleted its segment.
#[test]
fn file_range_reads_are_the_bytes_of_reads() {
    use sluice_storage::records::{in_page_cache, FILE_RANGE_HEADERS_MAX, FILE_RANGE_MIN_BYTES};
    use sluice_storage::Records;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone(), &clock);
    // Big batches (40 KiB), then many small ones (1 KiB), then big ones again.
    let mut tag = 0;
    let mut append = |log: &mut Log, n: usize, value: usize| {
        for _ in 0..n {
            tag += 1;
            log.append_as_leader(batch(tag, 4, value / 4, clock.now()), LeaderEpoch(1))
                .unwrap();
        }
    };
    append(&mut log, 40, 40 << 10);
    let small_from = log.log_end_offset().get();
    append(&mut log, 2 * FILE_RANGE_HEADERS_MAX, 1 << 10);
    append(&mut log, 30, 40 << 10);
    let end = log.log_end_offset();
    // Reopened: the tail cache is empty, every read goes to the files.
    log.close().unwrap();
    let mut log = open(dir.path(), config.clone(), &clock);
    assert!(log.segment_count() > 1, "the reads cross segments");
    let (mut ranges, mut in_memory) = (0, 0);
    for at in (0..end.get()).step_by(3) {
        for (max_bytes, upper) in [
            (1, end),
            (100 << 10, end),
            (1 << 20, end),
            (1 << 20, Offset(at + 9)),
        ] {
            let want = log.read(Offset(at), max_bytes, upper).unwrap();
            let got = log.read_records(Offset(at), max_bytes, upper).unwrap();
            assert_eq!(
                got.len(),
                want.len(),
                "at {at}, max {max_bytes}, upper {upper}"
            );
            match &got {
                Records::File(r) => {
                    ranges += 1;
                    assert!(r.len() >= FILE_RANGE_MIN_BYTES);
                }
                Records::Memory(_) => in_memory += 1,
            }
            assert_eq!(
                got.into_bytes().unwrap(),
                want,
                "at {at}, max {max_bytes}, upper {upper}"
            );
        }
    }
    assert!(
        ranges > 0 && in_memory > 0,
        "{ranges} ranges, {in_memory} in memory"
    );
    // One small batch: in memory. A stretch of small batches longer than the header walk:
    // in memory, all of it.
    let one = log.read_records(Offset(small_from), 1, end).unwrap();
    assert!(matches!(one, Records::Memory(_)) && one.len() < FILE_RANGE_MIN_BYTES);
    let many = log.read_records(Offset(small_from), 1 << 20, end).unwrap();
    assert!(matches!(many, Records::Memory(_)), "{many:?}");
    assert!(many.len() >= FILE_RANGE_MIN_BYTES);
    // Pages evicted (flushed, then dropped from the page cache): read into memory.
    log.flush().unwrap();
    let Records::File(r) = log.read_records(Offset(0), 1 << 20, end).unwrap() else {
        panic!("a cached range of big batches");
    };
    let evict = |f: &std::fs::File| {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain advice call on an open fd.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    };
    evict(r.file());
    assert!(!in_page_cache(r.file(), r.position(), r.len()));
    let cold = log.read_records(Offset(0), 1 << 20, end).unwrap();
    assert!(matches!(cold, Records::Memory(_)), "{cold:?}");
    assert_eq!(cold.len(), r.len());
    assert!(
        in_page_cache(r.file(), r.position(), r.len()),
        "the read cached it again"
    );
    // The log start moves past the first segment, which is deleted: a range taken before still reads its bytes.
    let Records::File(kept) = log.read_records(Offset(0), 1 << 20, end).unwrap() else {
        panic!("a cached range of big batches");
    };
    let before = kept.read().unwrap();
    log.increment_log_start_offset(Offset(small_from)).unwrap();
    assert!(!kept.path().exists(), "the segment file is gone");
    assert_eq!(kept.read().unwrap(), before);
}
