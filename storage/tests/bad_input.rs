//! Bad input never changes the log.
//!
//! Goal: a batch with a wrong CRC, a lying length, an impossible record count, an oversized
//! batch, garbage bytes, and reads outside [log start, log end] each get a typed error naming
//! the problem (Kafka's reason), and the log is byte-for-byte what it was before.
//! Method: fill a log, snapshot its offsets and contents, throw each bad input at it, and
//! compare after every attempt.

mod common;

use bytes::Bytes;
use common::*;
use sluice_storage::{LeaderEpoch, Offset};
use sluice_storage::{Log, LogConfig, StorageError};

fn fix_crc(v: &mut [u8]) {
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
}

struct Fixture {
    _dir: tempfile::TempDir,
    log: Log,
    before: Vec<(i64, Bytes)>,
    end: i64,
    size: u64,
}

fn fixture(config: LogConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut log = open(dir.path(), config, &clock);
    for i in 0..6 {
        log.append_as_leader(batch(i, 4, 50, clock.now()), LeaderEpoch(3))
            .unwrap();
    }
    let before = read_all(&log);
    let end = log.log_end_offset();
    let size = log.size_bytes();
    Fixture {
        _dir: dir,
        log,
        before,
        end: end.get(),
        size,
    }
}

impl Fixture {
    fn assert_unchanged(&self, what: &str) {
        assert_eq!(self.log.log_end_offset(), self.end, "{what}: log end moved");
        assert_eq!(
            self.log.size_bytes(),
            self.size,
            "{what}: bytes were written"
        );
        assert_eq!(read_all(&self.log), self.before, "{what}: contents changed");
    }

    fn reject(&mut self, what: &str, input: Vec<u8>, reason: &str, mentions: &str) {
        let err = self
            .log
            .append_as_leader(Bytes::from(input), LeaderEpoch(3))
            .unwrap_err();
        assert_eq!(err.reason(), reason, "{what}: {err}");
        assert!(
            err.to_string().contains(mentions),
            "{what}: {err:?} should mention {mentions:?}"
        );
        self.assert_unchanged(what);
    }
}

#[test]
fn every_bad_batch_is_rejected_with_a_named_reason_and_changes_nothing() {
    let mut f = fixture(LogConfig::default());
    let good = batch(100, 3, 20, 1_700_000_000_000).to_vec();

    let mut wrong_crc = good.clone();
    let mid = wrong_crc.len() - 5;
    wrong_crc[mid] ^= 1;
    f.reject("wrong CRC", wrong_crc, "CORRUPT_MESSAGE", "CRC");

    let mut long = good.clone();
    long[8..12].copy_from_slice(&(good.len() as i32 * 2).to_be_bytes());
    f.reject("length beyond data", long, "CORRUPT_MESSAGE", "only");

    let mut short = good.clone();
    short[8..12].copy_from_slice(&10i32.to_be_bytes());
    f.reject(
        "length below header",
        short,
        "CORRUPT_MESSAGE",
        "smaller than",
    );

    for count in [-1i32, i32::MIN, 1_000_000, i32::MAX] {
        let mut v = good.clone();
        v[57..61].copy_from_slice(&count.to_be_bytes());
        fix_crc(&mut v);
        f.reject("absurd record count", v, "CORRUPT_MESSAGE", "record count");
    }

    let mut magic = good.clone();
    magic[16] = 1;
    f.reject("old magic", magic, "CORRUPT_MESSAGE", "magic");

    // Says gzip, holds plain records: the section does not decompress.
    let mut compressed = good.clone();
    compressed[22] |= 0x01;
    fix_crc(&mut compressed);
    f.reject(
        "claims gzip",
        compressed,
        "CORRUPT_MESSAGE",
        "gzip records section does not decompress",
    );
    let mut codec7 = good.clone();
    codec7[22] |= 0x07;
    fix_crc(&mut codec7);
    f.reject(
        "unknown codec",
        codec7,
        "UNSUPPORTED_COMPRESSION_TYPE",
        "codec 7",
    );

    f.reject("empty", Vec::new(), "CORRUPT_MESSAGE", "no record batch");
    f.reject(
        "garbage",
        (0..500u32).map(|i| (i * 7919 % 251) as u8).collect(),
        "CORRUPT_MESSAGE",
        "",
    );

    // A good batch followed by a bad one: all-or-nothing.
    let mut two = good.clone();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    two.extend_from_slice(&bad);
    f.reject("good then bad", two, "CORRUPT_MESSAGE", "CRC");

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    f.reject("trailing bytes", trailing, "CORRUPT_MESSAGE", "too few");

    // After all that, a good batch still appends at the old end.
    let info = f
        .log
        .append_as_leader(Bytes::from(good), LeaderEpoch(3))
        .unwrap();
    assert_eq!(info.first_offset, f.end);
}

#[test]
fn oversized_batch_is_message_too_large() {
    let mut f = fixture(LogConfig {
        max_message_bytes: 1000,
        ..LogConfig::default()
    });
    let big = batch(7, 10, 200, 1_700_000_000_000).to_vec();
    assert!(big.len() > 1000);
    f.reject(
        "oversized",
        big.clone(),
        "MESSAGE_TOO_LARGE",
        "max.message.bytes=1000",
    );
    // Replication copies what the leader accepted, whatever the limit is now (as Kafka).
    let end = f.log.log_end_offset();
    let mut replicated = big;
    replicated[0..8].copy_from_slice(&end.get().to_be_bytes());
    let info = f.log.append_as_follower(Bytes::from(replicated)).unwrap();
    assert_eq!(info.first_offset, end);
    let err = f
        .log
        .append_as_follower(Bytes::from(vec![0u8; 100]))
        .unwrap_err();
    assert!(
        matches!(err, StorageError::CorruptMessage { .. }),
        "{err:?}"
    );
}

#[test]
fn reads_outside_the_log_are_offset_out_of_range() {
    let mut f = fixture(small_config());
    f.log.truncate_fully_and_start_at(Offset(0)).unwrap();
    for i in 0..40 {
        f.log
            .append_as_leader(batch(i, 4, 50, 1_700_000_000_000), LeaderEpoch(1))
            .unwrap();
    }
    f.log.increment_log_start_offset(Offset(40)).unwrap();
    let end = f.log.log_end_offset();
    for offset in [-1i64, i64::MIN, 0, 39, (end + 1).get(), i64::MAX] {
        let err = f.log.read(Offset(offset), 1000, end).unwrap_err();
        assert_eq!(err.reason(), "OFFSET_OUT_OF_RANGE", "offset {offset}");
        assert!(err.to_string().contains(&offset.to_string()), "{err}");
    }
    assert!(
        f.log.read(end, 1000, end).unwrap().is_empty(),
        "the log end itself is empty, not an error"
    );
    assert!(!f.log.read(Offset(40), 1000, end).unwrap().is_empty());
}

#[test]
fn follower_append_must_continue_the_log() {
    let mut f = fixture(LogConfig::default());
    let mut b = batch(1, 2, 10, 1_700_000_000_000).to_vec();
    b[0..8].copy_from_slice(&(f.end + 5).to_be_bytes());
    let err = f.log.append_as_follower(Bytes::from(b)).unwrap_err();
    assert_eq!(err.reason(), "INVALID_REQUEST");
    assert!(err.to_string().contains("continues at"), "{err}");
    f.assert_unchanged("gap in follower append");
}
