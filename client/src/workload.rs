//! The fault-suite workload: one idempotent producer writes uniquely numbered records
//! (value = decimal number, partition = number mod partitions, so values increase with the
//! offset in every partition) with acks=all, while a consumer reads along. Every send, its
//! outcome and its latency are recorded for [`crate::verify::check`] and for `sluice chaos`
//! timelines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::consumer::list_offset;
use crate::verify::{Outcome, Read, Send};
use crate::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord, Result,
};

/// When one acknowledgement (or failure) arrived and how long the send took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Time since the workload started.
    pub at: Duration,
    /// Send-to-outcome latency.
    pub latency: Duration,
    /// Whether it was acknowledged.
    pub ok: bool,
    /// The partition it was sent to.
    pub partition: i32,
}

/// A running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<Vec<Send>>,
    reader: tokio::task::JoinHandle<Vec<Read>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    acked: Arc<AtomicU64>,
    started: Instant,
}

/// Records outstanding at most (bounds memory and keeps latencies meaningful).
const OUTSTANDING_MAX: usize = 2_000;

impl Workload {
    /// Starts writing to `topic` (which must exist with `partitions` partitions).
    pub async fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        producer: ProducerConfig,
        pace: Option<Duration>,
    ) -> Result<Self> {
        let p = Producer::connect(bootstrap, producer).await?;
        let mut consumer = Consumer::connect(
            bootstrap,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        )
        .await?;
        consumer.assign((0..partitions).map(|i| (topic.to_string(), i)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let sender = {
            let (stop, samples, acked, topic) = (
                stop.clone(),
                samples.clone(),
                acked.clone(),
                topic.to_string(),
            );
            tokio::spawn(async move {
                let sends = Arc::new(Mutex::new(Vec::<Send>::new()));
                let inflight = Arc::new(tokio::sync::Semaphore::new(OUTSTANDING_MAX));
                let mut v = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let permit = inflight.clone().acquire_owned().await.expect("open");
                    let partition = (v % partitions as u64) as i32;
                    let record =
                        ProducerRecord::new(topic.clone(), v.to_string()).partition(partition);
                    let t = Instant::now();
                    let fut = p.send(record).await;
                    let (sends, samples, acked) = (sends.clone(), samples.clone(), acked.clone());
                    let value = v;
                    tokio::spawn(async move {
                        let outcome = match fut {
                            Ok(f) => match f.await {
                                Ok(m) => Outcome::Ack {
                                    partition: m.partition,
                                    offset: m.offset,
                                },
                                Err(_) => Outcome::Failed,
                            },
                            Err(_) => Outcome::Failed,
                        };
                        let ok = matches!(outcome, Outcome::Ack { .. });
                        if ok {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        samples.lock().expect("samples").push(Sample {
                            at: started.elapsed(),
                            latency: t.elapsed(),
                            ok,
                            partition,
                        });
                        sends.lock().expect("sends").push(Send {
                            value,
                            partition,
                            outcome,
                        });
                        drop(permit);
                    });
                    v += 1;
                    if let Some(d) = pace {
                        tokio::time::sleep(d).await;
                    }
                }
                p.flush().await;
                // Wait for every outcome.
                let _ = inflight.acquire_many(OUTSTANDING_MAX as u32).await;
                let mut out = std::mem::take(&mut *sends.lock().expect("sends"));
                out.sort_by_key(|s| s.value);
                out
            })
        };
        let reader = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut reads = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(batch) = consumer.poll(Duration::from_millis(200)).await {
                        for r in batch {
                            if let Some(v) = parse(&r.value) {
                                reads.push(Read {
                                    partition: r.partition,
                                    offset: r.offset,
                                    value: v,
                                });
                            }
                        }
                    }
                }
                reads
            })
        };
        Ok(Workload {
            stop,
            sender,
            reader,
            samples,
            acked,
            started,
        })
    }

    /// A copy of the samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    /// Sends acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the workload started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until `n` more sends are acknowledged (or `timeout`); whether they were.
    pub async fn wait_for_acks(&self, n: u64, timeout: Duration) -> bool {
        let target = self.acked() + n;
        let start = Instant::now();
        while self.acked() < target {
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops sending, waits for every outcome, and returns sends, reads and samples.
    pub async fn stop(self) -> (Vec<Send>, Vec<Read>, Vec<Sample>) {
        self.stop.store(true, Ordering::SeqCst);
        let sends = self.sender.await.unwrap_or_default();
        let reads = self.reader.await.unwrap_or_default();
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples"));
        (sends, reads, samples)
    }
}

fn parse(v: &Option<bytes::Bytes>) -> Option<u64> {
    std::str::from_utf8(v.as_deref()?).ok()?.parse().ok()
}

/// Reads every partition of `topic` from its log start to its current end.
pub async fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Read>> {
    let mut c = Consumer::connect(
        bootstrap,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 10_000,
            ..ConsumerConfig::default()
        },
    )
    .await?;
    let mut ends = Vec::new();
    for p in 0..partitions {
        ends.push(list_offset(c.cluster(), topic, p, -1).await?);
    }
    c.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    let mut out = Vec::new();
    let start = Instant::now();
    loop {
        let done = (0..partitions).all(|p| {
            c.position(&(topic.to_string(), p))
                .is_some_and(|pos| pos >= ends[p as usize])
        });
        if done || start.elapsed() >= timeout {
            break;
        }
        for r in c.poll(Duration::from_millis(500)).await? {
            if let Some(v) = parse(&r.value) {
                out.push(Read {
                    partition: r.partition,
                    offset: r.offset,
                    value: v,
                });
            }
        }
    }
    Ok(out)
}
