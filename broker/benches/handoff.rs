//! Where a partition's disk work runs: the cost of handing one append (16 KiB and 1 MiB
//! batches) from an async task to the log and back, for each way to keep disk I/O off the
//! async workers, next to doing it inline (the forbidden baseline). `actor` is the real
//! path of `PartitionHandle::append` (queue, actor task, blocking hand-off, reply).
//!
//! `cargo bench -p sluice-broker --bench handoff`

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_broker::partition::{PartitionHandle, ReplicaState, Role};
use sluice_metadata::BrokerId;
use sluice_storage::{Log, LogConfig, RecordBatchBuilder};
use tokio::sync::oneshot;

fn batch_of(bytes: usize) -> Bytes {
    let value = vec![7u8; 1024];
    let mut b = RecordBatchBuilder::with_capacity(bytes + 256);
    while b.size_bytes() + 1024 + 16 <= bytes {
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn leader() -> Role {
    Role::Leader {
        leader_epoch: 0,
        partition_epoch: 0,
        isr: vec![BrokerId(1)],
        replicas: vec![BrokerId(1)],
    }
}

/// Runs `iters` appends one after another (one in flight, as a unary producer does) with
/// `append` and returns the time taken.
fn handoff(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("handoff");
    g.measurement_time(Duration::from_secs(3));
    for size in [16 << 10, 1 << 20] {
        let batch = batch_of(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));

        g.bench_with_input(BenchmarkId::new("inline", size), &batch, |b, batch| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut log = Log::open(dir.path().join("p-0"), config()).expect("open");
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append_as_leader(batch.clone(), sluice_storage::LeaderEpoch(0))
                            .expect("append");
                    }
                    start.elapsed()
                })
            })
        });

        g.bench_with_input(
            BenchmarkId::new("spawn_blocking", size),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut log = Some(Log::open(dir.path().join("p-0"), config()).expect("open"));
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut l = log.take().expect("home");
                            let batch = batch.clone();
                            l = tokio::task::spawn_blocking(move || {
                                l.append_as_leader(batch, sluice_storage::LeaderEpoch(0))
                                    .expect("append");
                                l
                            })
                            .await
                            .expect("join");
                            log = Some(l);
                        }
                        start.elapsed()
                    })
                })
            },
        );

        g.bench_with_input(
            BenchmarkId::new("dedicated_thread", size),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut log = Log::open(dir.path().join("p-0"), config()).expect("open");
                    let (tx, rx) = std_mpsc::sync_channel::<(Bytes, oneshot::Sender<()>)>(64);
                    let thread = std::thread::spawn(move || {
                        while let Ok((batch, reply)) = rx.recv() {
                            log.append_as_leader(batch, sluice_storage::LeaderEpoch(0))
                                .expect("append");
                            let _ = reply.send(());
                        }
                    });
                    let took = rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let (r_tx, r_rx) = oneshot::channel();
                            tx.send((batch.clone(), r_tx)).expect("send");
                            r_rx.await.expect("reply");
                        }
                        start.elapsed()
                    });
                    drop(tx);
                    thread.join().expect("thread");
                    took
                })
            },
        );

        g.bench_with_input(BenchmarkId::new("actor", size), &batch, |b, batch| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                rt.block_on(async {
                    let log = Log::open(dir.path().join("p-0"), config()).expect("open");
                    let replica = ReplicaState::new(BrokerId(1), leader(), 0, 0);
                    let (part, task) = PartitionHandle::spawn(
                        "t".into(),
                        Default::default(),
                        0,
                        log,
                        replica,
                        config(),
                    );
                    part.set_role(leader(), config());
                    let start = Instant::now();
                    for _ in 0..iters {
                        part.append(batch.clone(), None).await.expect("append");
                    }
                    let took = start.elapsed();
                    part.close().await.expect("close");
                    task.await.expect("actor");
                    took
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
