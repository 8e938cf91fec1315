//! Helpers shared by the storage integration tests.

#![allow(dead_code)]

use sluice_storage::Offset;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_storage::batch::batches;
use sluice_storage::{Clock, Log, LogConfig, RecordBatchBuilder};

/// A controllable clock starting at 2023-11-14.
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Arc::new(AtomicI64::new(1_700_000_000_000)))
    }
    pub fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// A batch of `n` records whose values name their batch and position.
pub fn batch(tag: u32, n: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for i in 0..n {
        let mut value = format!("b{tag}-r{i}-").into_bytes();
        value.resize(value_bytes.max(value.len()), b'x');
        b.append(
            timestamp + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.build()
}

/// Small segments and dense indexes so a few KiB exercise rolls and index entries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// Every (offset, value) readable from the log start to its end.
pub fn read_all(log: &Log) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    let end = log.log_end_offset();
    while at < end {
        let bytes = log.read(at, 64 * 1024, end).expect("read within range");
        assert!(!bytes.is_empty(), "no data at {at} < {end}");
        for b in batches(bytes) {
            let b = b.expect("served batches pass CRC");
            for r in b.records() {
                let r = r.expect("served records parse");
                if r.offset >= at.get() {
                    out.push((r.offset, r.value.unwrap_or_default()));
                }
            }
            at = Offset(b.last_offset() + 1);
        }
    }
    out
}

/// Segment `.log` files in base-offset order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Opens `dir` with `config` and the given clock.
pub fn open(dir: &Path, config: LogConfig, clock: &TestClock) -> Log {
    Log::open_with_clock(dir, config, clock.clock()).expect("open log")
}
