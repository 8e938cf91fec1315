//! Criterion bench of the batching producer's accumulator: 1 KiB records appended one by
//! one into a partition's batches of `batch.size` (16 KiB, Kafka's default, and 1 MiB),
//! each sealed batch taken, encoded with producer id and sequence (CRC included) and
//! completed, as the partition sender does. Bytes/s of record values; `sluice bench
//! produce` measures the whole client against the raw batches.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_client::producer::accumulator::{record_size, Append, PartitionAccumulator, Ready};
use sluice_record::Compression;

const RECORD_BYTES: usize = 1024;
const RECORDS: usize = 4096;

fn accumulate(c: &mut Criterion) {
    let mut g = c.benchmark_group("accumulate");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((RECORDS * RECORD_BYTES) as u64));
    let value = vec![7u8; RECORD_BYTES];
    let size = record_size(None, Some(&value), &[]);
    for batch_size in [16 * 1024, 1 << 20] {
        g.bench_with_input(
            BenchmarkId::from_parameter(batch_size),
            &batch_size,
            |b, &batch_size| {
                b.iter(|| {
                    let now = Instant::now();
                    let mut acc = PartitionAccumulator::new(batch_size, Duration::from_millis(5));
                    let mut deliveries = Vec::with_capacity(RECORDS);
                    let mut sequence = 0;
                    let mut send = |acc: &mut PartitionAccumulator, force: bool| {
                        while let Ready::Batch(mut batch) = acc.ready(now, force) {
                            batch.build(Compression::None, Some((1, 0, sequence)));
                            sequence += batch.records;
                            let bytes = batch.bytes.clone().expect("built");
                            batch.succeed(0, 0);
                            std::hint::black_box(bytes);
                        }
                    };
                    for _ in 0..RECORDS {
                        let appended = acc.append(
                            Append {
                                timestamp: 1_700_000_000_000,
                                key: None,
                                value: Some(&value),
                                headers: &[],
                                size,
                            },
                            || now,
                        );
                        deliveries.push(appended.delivery);
                        if appended.sealed {
                            send(&mut acc, false);
                        }
                    }
                    send(&mut acc, true);
                    deliveries
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, accumulate);
criterion_main!(benches);
