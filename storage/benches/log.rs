//! Criterion benches of the partition log: append and sequential read, parameterised by
//! batch size, reporting bytes/s. `sluice bench storage` is the end-to-end version with a
//! plain-file baseline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_storage::{Log, LogConfig, RecordBatchBuilder};

const RECORD_BYTES: usize = 1024;

fn batch_of(bytes: usize) -> Bytes {
    let value = vec![7u8; RECORD_BYTES];
    let mut b = RecordBatchBuilder::with_capacity(bytes + 256);
    while b.size_bytes() + RECORD_BYTES + 16 <= bytes.max(RECORD_BYTES + 100) {
        b.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    b.build()
}

fn config() -> LogConfig {
    LogConfig {
        retention_ms: -1,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(3));
    for batch_bytes in [1024 + 100, 16 * 1024, 256 * 1024] {
        let batch = batch_of(batch_bytes);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(batch.len()),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut log = Log::open(dir.path().join("p-0"), config()).expect("open");
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append_as_leader(batch.clone(), sluice_storage::LeaderEpoch(0))
                            .expect("append");
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path().join("p-0"), config()).expect("open");
    let batch = batch_of(16 * 1024);
    while log.size_bytes() < 64 << 20 {
        log.append_as_leader(batch.clone(), sluice_storage::LeaderEpoch(0))
            .expect("append");
    }
    let end = log.log_end_offset();
    for max_bytes in [64 * 1024usize, 1 << 20, 4 << 20] {
        g.throughput(Throughput::Bytes(max_bytes as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(max_bytes),
            &max_bytes,
            |b, &max| {
                let mut offset = 0i64;
                b.iter(|| {
                    if end <= offset {
                        offset = 0;
                    }
                    let bytes = log
                        .read(sluice_storage::Offset(offset), max, end)
                        .expect("read");
                    let last = sluice_storage::batch::headers(&bytes)
                        .last()
                        .expect("a batch");
                    offset = last.next_offset();
                    bytes
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
