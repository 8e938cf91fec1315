//! Model-based property test of the partition log.
//!
//! Goal: every sequence of append / read / truncate / roll / retention / close-and-reopen /
//! crash-and-reopen leaves the on-disk log agreeing with a plain in-memory model.
//! Method: proptest generates op sequences against a tiny segment size (so rolls, index
//! entries and retention happen constantly); after every op the log's offsets, contents and
//! leader-epoch answers are compared with the model's.

use sluice_storage::{LeaderEpoch, Offset};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_storage::batch::batches;
use sluice_storage::{Log, LogConfig, RecordBatchBuilder};

#[derive(Debug, Clone)]
enum Op {
    /// Append one batch of records (value sizes) as leader; bump the epoch first if asked.
    Append {
        values: Vec<usize>,
        keyed: bool,
        bump_epoch: bool,
    },
    /// Append several batches in one call.
    AppendMany {
        batches: Vec<Vec<usize>>,
    },
    /// Read from a position chosen in [log start, log end] with a byte budget.
    Read {
        at: u16,
        max_bytes: usize,
    },
    /// Truncate to a position chosen in [0, log end + 2].
    Truncate {
        at: u16,
    },
    Roll,
    /// Advance the clock.
    Sleep {
        ms: i64,
    },
    /// Run retention with these limits.
    Retention {
        ms: Option<i64>,
        bytes: Option<i64>,
    },
    CloseReopen,
    CrashReopen,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(0usize..300, 1..6), any::<bool>(), prop::bool::weighted(0.15))
            .prop_map(|(values, keyed, bump_epoch)| Op::Append { values, keyed, bump_epoch }),
        1 => prop::collection::vec(prop::collection::vec(0usize..200, 1..4), 1..4)
            .prop_map(|batches| Op::AppendMany { batches }),
        3 => (any::<u16>(), 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Roll),
        1 => (1i64..5000).prop_map(|ms| Op::Sleep { ms }),
        1 => (prop::option::of(0i64..8000), prop::option::of(0i64..6000))
            .prop_map(|(ms, bytes)| Op::Retention { ms, bytes }),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
        1 => Just(Op::Flush),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct MBatch {
    epoch: i32,
    records: Vec<MRecord>,
}

impl MBatch {
    fn base(&self) -> i64 {
        self.records[0].offset
    }
    fn last(&self) -> i64 {
        self.records.last().unwrap().offset
    }
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<MBatch>,
    start: i64,
    end: i64,
    epoch: i32,
}

impl Model {
    fn records_from(&self, offset: i64) -> Vec<MRecord> {
        self.batches
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| r.offset >= offset)
            .cloned()
            .collect()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

fn decode(bytes: Bytes) -> Vec<(i32, MRecord)> {
    let mut out = Vec::new();
    for batch in batches(bytes) {
        let batch = batch.expect("stored batches are valid");
        let epoch = batch.header().partition_leader_epoch;
        for r in batch.records() {
            let r = r.expect("stored records are valid");
            out.push((
                epoch,
                MRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                },
            ));
        }
    }
    out
}

fn build(
    model_next: &mut i64,
    values: &[usize],
    keyed: bool,
    now: i64,
    epoch: i32,
) -> (Bytes, MBatch) {
    let mut b = RecordBatchBuilder::new();
    let mut recs = Vec::new();
    for (i, &len) in values.iter().enumerate() {
        let offset = *model_next + i as i64;
        let value: Vec<u8> = (0..len).map(|j| (offset as usize + j) as u8).collect();
        let key = keyed.then(|| format!("key-{offset}").into_bytes());
        let ts = now + i as i64;
        b.append(ts, key.as_deref(), Some(&value), &[]);
        recs.push(MRecord {
            offset,
            timestamp: ts,
            key,
            value,
        });
    }
    *model_next += values.len() as i64;
    (
        b.build(),
        MBatch {
            epoch,
            records: recs,
        },
    )
}

fn check_all(log: &Log, m: &Model) {
    assert_eq!(log.log_start_offset(), m.start, "log start");
    assert_eq!(log.log_end_offset(), m.end, "log end");
    // Read everything in small steps and compare with the model.
    let mut got = Vec::new();
    let mut at = m.start;
    while at < m.end {
        let bytes = log
            .read(Offset(at), 700, Offset(i64::MAX))
            .expect("read in range");
        assert!(
            !bytes.is_empty(),
            "read at {at} < end {} returned nothing",
            m.end
        );
        let recs = decode(bytes);
        let next = recs.last().unwrap().1.offset + 1;
        got.extend(recs.into_iter().filter(|(_, r)| r.offset >= at));
        at = next;
    }
    let want = m.records_from(m.start);
    let got_records: Vec<MRecord> = got.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got_records, want, "log contents differ from the model");
    // Every record carries the epoch of the leader that appended it.
    let want_epochs: Vec<i32> = m
        .batches
        .iter()
        .flat_map(|b| {
            b.records
                .iter()
                .filter(|r| r.offset >= m.start)
                .map(|_| b.epoch)
        })
        .collect();
    let got_epochs: Vec<i32> = got.iter().map(|(e, _)| *e).collect();
    assert_eq!(got_epochs, want_epochs, "stored leader epochs");
    // KIP-101: the end offset of each epoch is the start of the next higher epoch.
    for (i, b) in m.batches.iter().enumerate() {
        if b.last() < m.start {
            continue;
        }
        let expected_end = m.batches[i..]
            .iter()
            .find(|later| later.epoch > b.epoch)
            .map_or(m.end, |later| later.base());
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(b.epoch)),
            (LeaderEpoch(b.epoch), Offset(expected_end)),
            "end offset for epoch {}",
            b.epoch
        );
    }
}

fn run(ops: Vec<Op>) {
    // Few open segment files: segments are closed and reopened all the time, which must
    // change nothing the model can see.
    sluice_storage::files::set_open_files_max(16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let clock_now = now.clone();
    let clock: sluice_storage::Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
    let open = |cfg: LogConfig| Log::open_with_clock(&path, cfg, clock.clone()).unwrap();
    let mut cfg = config();
    let mut log = open(cfg.clone());
    let mut m = Model {
        epoch: 1,
        ..Model::default()
    };
    for op in ops {
        match op {
            Op::Append {
                values,
                keyed,
                bump_epoch,
            } => {
                if bump_epoch {
                    m.epoch += 1;
                }
                let mut next = m.end;
                let (bytes, batch) = build(
                    &mut next,
                    &values,
                    keyed,
                    now.load(Ordering::SeqCst),
                    m.epoch,
                );
                let info = log.append_as_leader(bytes, LeaderEpoch(m.epoch)).unwrap();
                assert_eq!(
                    (info.first_offset, info.last_offset),
                    (Offset(m.end), Offset(next - 1))
                );
                m.end = next;
                m.batches.push(batch);
            }
            Op::AppendMany { batches } => {
                // A leader takes exactly one batch per call (Kafka's rule for magic v2): the
                // batches together are refused whole, then appended one by one.
                let mut next = m.end;
                let mut all = Vec::new();
                let mut built = Vec::new();
                for values in &batches {
                    let (bytes, batch) = build(
                        &mut next,
                        values,
                        false,
                        now.load(Ordering::SeqCst),
                        m.epoch,
                    );
                    all.extend_from_slice(&bytes);
                    built.push((bytes, batch));
                }
                if batches.len() > 1 {
                    let refused = log
                        .append_as_leader(Bytes::from(all), LeaderEpoch(m.epoch))
                        .unwrap_err();
                    assert_eq!(refused.reason(), "INVALID_RECORD", "{refused}");
                    assert_eq!(log.log_end_offset(), m.end, "nothing written");
                }
                for (bytes, batch) in built {
                    log.append_as_leader(bytes, LeaderEpoch(m.epoch)).unwrap();
                    m.batches.push(batch);
                }
                m.end = next;
            }
            Op::Read { at, max_bytes } => {
                let span = (m.end - m.start + 1) as u64;
                let offset = m.start + (at as u64 % span) as i64;
                let bytes = log
                    .read(Offset(offset), max_bytes, Offset(i64::MAX))
                    .unwrap();
                if offset == m.end {
                    assert!(bytes.is_empty());
                } else {
                    assert!(!bytes.is_empty(), "read at {offset} returned nothing");
                    let recs = decode(bytes.clone());
                    if recs.len() > 1 {
                        // More than one batch only when they fit the budget.
                        let nbatches = batches(bytes.clone()).count();
                        assert!(
                            nbatches == 1 || bytes.len() <= max_bytes,
                            "{} > {max_bytes}",
                            bytes.len()
                        );
                    }
                    let got: Vec<MRecord> = recs
                        .into_iter()
                        .map(|(_, r)| r)
                        .filter(|r| r.offset >= offset)
                        .collect();
                    assert_eq!(got[0].offset, offset, "read starts at the requested offset");
                    let want = m.records_from(offset);
                    assert_eq!(&want[..got.len()], &got[..]);
                }
                // Out-of-range reads are errors.
                assert!(log.read(Offset(m.end + 1), 100, Offset(i64::MAX)).is_err());
                if m.start > 0 {
                    assert!(log
                        .read(Offset(m.start - 1), 100, Offset(i64::MAX))
                        .is_err());
                }
            }
            Op::Truncate { at } => {
                let offset = (at as u64 % (m.end as u64 + 3)) as i64;
                log.truncate_to(Offset(offset)).unwrap();
                if offset <= m.start {
                    m.batches.clear();
                    m.start = offset.min(m.start);
                    m.end = m.start;
                } else if offset < m.end {
                    m.batches.retain(|b| b.last() < offset);
                    m.end = m
                        .batches
                        .last()
                        .map_or(m.start, |b| b.last() + 1)
                        .max(m.start);
                    if m.batches.last().is_none_or(|b| b.last() < m.start) {
                        m.batches.clear();
                    }
                }
            }
            Op::Roll => {
                let end = m.end;
                log.roll(Offset(end)).unwrap();
            }
            Op::Sleep { ms } => {
                now.fetch_add(ms, Ordering::SeqCst);
            }
            Op::Retention { ms, bytes } => {
                cfg.retention_ms = ms.unwrap_or(-1);
                cfg.retention_bytes = bytes.unwrap_or(-1);
                log.set_config(cfg.clone()).unwrap();
                let before = log.log_start_offset();
                let deleted = log.delete_retained_segments(Offset(m.end)).unwrap();
                let start = log.log_start_offset();
                assert!(start >= before, "log start went back");
                if deleted.is_empty() {
                    assert_eq!(start, before);
                }
                assert!(
                    start == m.end || m.batches.iter().any(|b| b.base() == start.get()),
                    "log start {start} is not a batch boundary"
                );
                m.start = start.get();
                m.batches.retain(|b| b.base() >= start.get());
            }
            Op::CloseReopen => {
                log.close().unwrap();
                log = open(cfg.clone());
                assert!(log.recovery_report().clean_shutdown);
                assert!(log.recovery_report().corruptions.is_empty());
            }
            Op::CrashReopen => {
                drop(log);
                log = open(cfg.clone());
                assert!(!log.recovery_report().clean_shutdown);
                assert!(
                    log.recovery_report().corruptions.is_empty(),
                    "{:?}",
                    log.recovery_report()
                );
            }
            Op::Flush => {
                log.flush().unwrap();
                assert_eq!(log.recovery_point(), m.end);
            }
        }
        check_all(&log, &m);
    }
    log.close().unwrap();
    let log = open(cfg.clone());
    check_all(&log, &m);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]
    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
