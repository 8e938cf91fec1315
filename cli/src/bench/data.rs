//! `sluice bench produce` / `sluice bench consume` against a running cluster (`sluice dev`):
//! 1 KiB records in batches, several requests in flight per partition, acks 1 or all;
//! records/s, MB/s and ack latency percentiles (hdrhistogram); then an end-to-end phase
//! (produce → consumer receives, acks=all) and a full read back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use sluice_client::{Admin, DataClient};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_storage::RecordBatchBuilder;

use super::{progress, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct DataBenchArgs {
    /// Any broker(s) of the cluster.
    #[arg(long, env = "SLUICE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use (created with `--partitions`/`--replicas` if missing).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Replication factor of a created topic.
    #[arg(long, default_value_t = 3)]
    replicas: i32,
    /// Bytes of record values to produce.
    #[arg(long, default_value_t = 256 << 20)]
    total_bytes: u64,
    /// Size of one record value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 64)]
    batch_records: usize,
    /// Requests in flight per partition.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Acks to benchmark: `1`, `all`, or `both`.
    #[arg(long, default_value = "both")]
    acks: String,
    /// `bench consume`: read as this consumer group (subscribe, commits) instead of by
    /// partition.
    #[arg(long)]
    group: Option<String>,
    /// `bench produce`: rounds of the acks=all comparison (raw batches, client, client
    /// idempotent), run interleaved so the page cache's writeback state is shared out
    /// evenly; rows show the median round with the min-max, and each round's client/raw
    /// ratio is printed.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[command(flatten)]
    out: BenchOutput,
}

#[derive(Debug, Serialize)]
struct Row {
    phase: String,
    records: u64,
    bytes: u64,
    seconds: f64,
    records_per_s: f64,
    mb_per_s: f64,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    latency_ms_p999: Option<f64>,
    latency_ms_max: Option<f64>,
    /// CPU seconds the dev cluster's processes (every controller and broker, from /proc)
    /// spent per GB this phase moved; None when no `sluice dev` cluster was found.
    cluster_cpu_s_per_gb: Option<f64>,
    /// CPU seconds this bench process (the clients) spent per GB.
    client_cpu_s_per_gb: Option<f64>,
    /// MB/s of every round of this phase, in the order they ran (`--rounds`); the row's
    /// other figures are the median round's.
    rounds_mb_per_s: Vec<f64>,
}

impl Row {
    /// A phase's row: throughput from the totals, latency percentiles from `h` (µs).
    fn new(
        phase: impl std::fmt::Display,
        records: u64,
        bytes: u64,
        secs: f64,
        h: Option<&hdrhistogram::Histogram<u64>>,
    ) -> Row {
        let ms = |q: f64| h.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        Row {
            phase: phase.to_string(),
            records,
            bytes,
            seconds: secs,
            records_per_s: records as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            latency_ms_p50: ms(0.5),
            latency_ms_p99: ms(0.99),
            latency_ms_p999: ms(0.999),
            latency_ms_max: h.map(|h| h.max() as f64 / 1000.0),
            cluster_cpu_s_per_gb: None,
            client_cpu_s_per_gb: None,
            rounds_mb_per_s: vec![bytes as f64 / secs / 1e6],
        }
    }

    /// The median round of a phase (by MB/s), carrying every round's MB/s.
    fn median(mut rounds: Vec<Row>) -> Row {
        let all: Vec<f64> = rounds.iter().map(|r| r.mb_per_s).collect();
        rounds.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
        let mut row = rounds.swap_remove(rounds.len() / 2);
        row.rounds_mb_per_s = all;
        row
    }
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pids of the `sluice dev` cluster behind `bootstrap` (empty if there is none).
fn cluster_pids(bootstrap: &str) -> Vec<u32> {
    let Ok((_, state)) = crate::cmd::dev::load_state(bootstrap, None) else {
        return Vec::new();
    };
    state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// CPU seconds (user + system) the processes have used so far; None for no processes or
/// one that is gone.
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut ticks = 0;
    for &pid in pids {
        ticks += super::idle::sample(pid).ok()?.cpu_ticks;
    }
    Some(ticks as f64 / 100.0)
}

/// Runs one phase and adds the CPU the cluster and this process spent per GB it moved,
/// so a change that is faster only because it burns more cores shows.
async fn with_cpu(
    pids: &[u32],
    phase: impl std::future::Future<Output = anyhow::Result<Row>>,
) -> anyhow::Result<Row> {
    let me = [std::process::id()];
    let (cluster0, client0) = (cpu_seconds(pids), cpu_seconds(&me));
    let mut row = phase.await?;
    let gb = (row.bytes as f64 / 1e9).max(1e-9);
    let per_gb = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / gb);
    row.cluster_cpu_s_per_gb = per_gb(cluster0, cpu_seconds(pids));
    row.client_cpu_s_per_gb = per_gb(client0, cpu_seconds(&me));
    Ok(row)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the raw produce phases share: one pre-built batch, how many of them each partition
/// gets, a progress bar and the latency histogram.
struct RawLoad {
    client: DataClient,
    partitions: i32,
    batch: Bytes,
    per_partition: u64,
    pb: indicatif::ProgressBar,
    hist: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
}

impl RawLoad {
    async fn new(args: &DataBenchArgs, topic: &str, label: &str) -> anyhow::Result<RawLoad> {
        let client = DataClient::connect(&args.bootstrap).await?;
        let partitions = client.partitions(topic)?;
        let value = vec![0x61u8; args.record_bytes];
        let mut b =
            RecordBatchBuilder::with_capacity(args.batch_records * (args.record_bytes + 16));
        for _ in 0..args.batch_records {
            b.append(now_ms(), None, Some(&value), &[]);
        }
        let batch: Bytes = b.build();
        let batches_total =
            (args.total_bytes / (args.record_bytes * args.batch_records) as u64).max(1);
        let per_partition = batches_total.div_ceil(partitions as u64);
        let pb = progress(
            per_partition * partitions as u64 * batch.len() as u64,
            label,
        );
        let hist = Arc::new(std::sync::Mutex::new(
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        ));
        Ok(RawLoad {
            client,
            partitions,
            batch,
            per_partition,
            pb,
            hist,
        })
    }
}

async fn produce_phase(
    args: &DataBenchArgs,
    topic: &str,
    acks: i32,
    label: &str,
) -> anyhow::Result<Row> {
    let RawLoad {
        client,
        partitions,
        batch,
        per_partition,
        pb,
        hist,
    } = RawLoad::new(args, topic, label).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let (_, addr) = client
            .leader(topic, p)
            .with_context(|| format!("{topic}-{p} has no leader"))?;
        let channel = data_channel(&addr).await?;
        for lane in 0..args.inflight {
            let mut broker = BrokerClient::new(channel.clone())
                .max_encoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
            let (batch, hist, pb, topic) =
                (batch.clone(), hist.clone(), pb.clone(), topic.to_string());
            let n = per_partition / args.inflight as u64
                + u64::from((lane as u64) < per_partition % args.inflight as u64);
            tasks.spawn(async move {
                for _ in 0..n {
                    let t = Instant::now();
                    broker
                        .produce(ProduceRequest {
                            topic: topic.clone(),
                            partition: p,
                            acks: Some(acks),
                            timeout_ms: 30_000,
                            payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
                    let us = t.elapsed().as_micros() as u64;
                    hist.lock().expect("histogram lock").record(us.max(1)).ok();
                    pb.inc(batch.len() as u64);
                }
                anyhow::Ok(n)
            });
        }
    }
    let mut sent = 0u64;
    while let Some(r) = tasks.join_next().await {
        sent += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let h = hist.lock().expect("histogram lock");
    let records = sent * args.batch_records as u64;
    let bytes = records * args.record_bytes as u64;
    Ok(Row::new(label, records, bytes, secs, Some(&h)))
}

/// Raw batches on one `ProduceStream` per partition, `--inflight` requests outstanding on
/// it (the broker appends them in order and answers in order): what one client gets from a
/// partition without many unary calls.
async fn produce_stream_phase(
    args: &DataBenchArgs,
    topic: &str,
    acks: i32,
    label: &str,
) -> anyhow::Result<Row> {
    let RawLoad {
        client,
        partitions,
        batch,
        per_partition,
        pb,
        hist,
    } = RawLoad::new(args, topic, label).await?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let (_, addr) = client
            .leader(topic, p)
            .with_context(|| format!("{topic}-{p} has no leader"))?;
        let mut broker = BrokerClient::new(data_channel(&addr).await?)
            .max_encoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
        let (batch, hist, pb, topic) = (batch.clone(), hist.clone(), pb.clone(), topic.to_string());
        let inflight = args.inflight.max(1);
        tasks.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(inflight);
            let mut answers = broker
                .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            // Send times of the requests not yet answered, oldest first (answers come in
            // request order).
            let mut sent = std::collections::VecDeque::new();
            let mut next = 0u64;
            let mut done = 0u64;
            while done < per_partition {
                if next < per_partition && sent.len() < inflight {
                    tx.send(ProduceRequest {
                        correlation_id: next,
                        topic: topic.clone(),
                        partition: p,
                        acks: Some(acks),
                        timeout_ms: 30_000,
                        payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("the produce stream closed"))?;
                    sent.push_back(Instant::now());
                    next += 1;
                    continue;
                }
                let r = answers
                    .message()
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .context("the produce stream ended early")?;
                anyhow::ensure!(r.error_code == 0, "produce failed: {}", r.error_message);
                let t: Instant = sent.pop_front().context("an answer nobody asked for")?;
                hist.lock()
                    .expect("histogram lock")
                    .record((t.elapsed().as_micros() as u64).max(1))
                    .ok();
                pb.inc(batch.len() as u64);
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut sent = 0u64;
    while let Some(r) = tasks.join_next().await {
        sent += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let h = hist.lock().expect("histogram lock");
    let records = sent * args.batch_records as u64;
    Ok(Row::new(
        label,
        records,
        records * args.record_bytes as u64,
        secs,
        Some(&h),
    ))
}

/// Produces through the client library's batching `Producer` (acks=all), idempotent or
/// not: the throughput a user of the library gets, and the cost of idempotence.
async fn client_produce_phase(
    args: &DataBenchArgs,
    topic: &str,
    idempotent: bool,
    label: &str,
) -> anyhow::Result<Row> {
    let producer = Arc::new(
        sluice_client::Producer::connect(
            &args.bootstrap,
            sluice_client::ProducerConfig {
                acks: -1,
                enable_idempotence: Some(idempotent),
                // Room for exactly `batch_records` records, as the raw phase sends.
                batch_size: args.batch_records
                    * sluice_client::producer::accumulator::record_size(
                        None,
                        Some(&vec![0; args.record_bytes]),
                        &[],
                    ),
                linger: Duration::from_millis(5),
                max_in_flight: args.inflight.clamp(1, 5),
                buffer_memory: 64 << 20,
                ..Default::default()
            },
        )
        .await?,
    );
    let records = (args.total_bytes / args.record_bytes as u64).max(1);
    let value = Bytes::from(vec![0x61u8; args.record_bytes]);
    let pb = progress(records * args.record_bytes as u64, label);
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, sluice_client::DeliveryFuture)>(100_000);
    let collector = {
        let pb = pb.clone();
        let record_bytes = args.record_bytes as u64;
        tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds");
            while let Some((t, f)) = rx.recv().await {
                f.await.map_err(|e| anyhow::anyhow!(e))?;
                h.record((t.elapsed().as_micros() as u64).max(1)).ok();
                pb.inc(record_bytes);
            }
            anyhow::Ok(h)
        })
    };
    let start = Instant::now();
    for _ in 0..records {
        let r = sluice_client::ProducerRecord {
            topic: topic.to_string(),
            value: Some(value.clone()),
            ..Default::default()
        };
        let f = producer.send(r).await?;
        tx.send((Instant::now(), f)).await.ok();
    }
    drop(tx);
    producer.flush().await;
    let h = collector.await??;
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let bytes = records * args.record_bytes as u64;
    Ok(Row::new(label, records, bytes, secs, Some(&h)))
}

/// Reads the topic as a consumer group through the client library's `Consumer`.
async fn group_consume_phase(
    args: &DataBenchArgs,
    topic: &str,
    group: &str,
) -> anyhow::Result<Row> {
    let mut c = sluice_client::Consumer::connect(
        &args.bootstrap,
        sluice_client::ConsumerConfig {
            group_id: Some(group.to_string()),
            auto_offset_reset: sluice_client::OffsetReset::Earliest,
            max_poll_records: 10_000,
            ..Default::default()
        },
    )
    .await?;
    let partitions = c
        .cluster()
        .wait_for_topic(topic, Duration::from_secs(5))
        .await?;
    let mut end = 0i64;
    for p in 0..partitions {
        end += sluice_client::consumer::list_offset(c.cluster(), topic, p, -1).await?;
    }
    c.subscribe(vec![topic.to_string()])?;
    let pb = progress(end.max(0) as u64, &format!("consume --group {group}"));
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle = Instant::now();
    while records < end as u64 && idle.elapsed() < Duration::from_secs(10) {
        let batch = c.poll(Duration::from_millis(500)).await?;
        if !batch.is_empty() {
            idle = Instant::now();
        }
        for r in &batch {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        records += batch.len() as u64;
        pb.inc(batch.len() as u64);
    }
    c.commit_sync().await?;
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    c.close().await?;
    Ok(Row::new(
        format!("consume --group {group}"),
        records,
        bytes,
        secs,
        None,
    ))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// End-to-end latency: one acks=all producer lane per partition stamps each batch's first
/// value with its send time (µs); a consumer per partition long-polls the leader and
/// records receive time − send time for every batch. Reported percentiles are end to end.
async fn e2e_phase(args: &DataBenchArgs, topic: &str) -> anyhow::Result<Row> {
    let mut client = DataClient::connect(&args.bootstrap).await?;
    let partitions = client.partitions(topic)?;
    let batch_bytes = (args.record_bytes * args.batch_records) as u64;
    let per_partition = ((args.total_bytes / 8) / batch_bytes / partitions as u64).max(10);
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let pb = progress(
        per_partition * partitions as u64 * batch_bytes,
        "end-to-end",
    );
    let mut consumers = tokio::task::JoinSet::new();
    let mut producers = tokio::task::JoinSet::new();
    let start = Instant::now();
    for p in 0..partitions {
        let from = client.list_offset(topic, p, -1).await?;
        let (_, addr) = client
            .leader(topic, p)
            .with_context(|| format!("{topic}-{p} has no leader"))?;
        let channel = data_channel(&addr).await?;
        let target = from + (per_partition * args.batch_records as u64) as i64;
        let mut reader = BrokerClient::new(channel.clone())
            .max_decoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
        let (hist, topic_c, pb_c) = (hist.clone(), topic.to_string(), pb.clone());
        consumers.spawn(async move {
            let mut at = from;
            while at < target {
                let r = reader
                    .fetch(FetchRequest {
                        topic: topic_c.clone(),
                        partition: p,
                        fetch_offset: at,
                        max_bytes: 4 << 20,
                        max_wait_ms: 200,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner();
                let received = now_us();
                for b in sluice_storage::batch::batches(r.record_batches) {
                    let b = b?;
                    if let Some(Ok(first)) = b.records().next() {
                        let sent: u64 = first
                            .value
                            .as_ref()
                            .and_then(|v| {
                                std::str::from_utf8(&v[..16.min(v.len())])
                                    .ok()?
                                    .parse()
                                    .ok()
                            })
                            .unwrap_or(received);
                        hist.lock()
                            .expect("histogram lock")
                            .record(received.saturating_sub(sent).max(1))
                            .ok();
                    }
                    pb_c.inc(b.size_bytes() as u64);
                    at = b.last_offset() + 1;
                }
            }
            anyhow::Ok(())
        });
        let mut writer = BrokerClient::new(channel)
            .max_encoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
        let (topic_p, record_bytes, batch_records) =
            (topic.to_string(), args.record_bytes, args.batch_records);
        producers.spawn(async move {
            let filler = vec![0x61u8; record_bytes];
            for _ in 0..per_partition {
                let mut b = RecordBatchBuilder::with_capacity(batch_records * (record_bytes + 16));
                let mut first = filler.clone();
                let stamp = format!("{:016}", now_us());
                first[..16.min(record_bytes)]
                    .copy_from_slice(&stamp.as_bytes()[..16.min(record_bytes)]);
                b.append(now_ms(), None, Some(&first), &[]);
                for _ in 1..batch_records {
                    b.append(now_ms(), None, Some(&filler), &[]);
                }
                writer
                    .produce(ProduceRequest {
                        topic: topic_p.clone(),
                        partition: p,
                        acks: Some(-1),
                        timeout_ms: 30_000,
                        payload: Some(produce_request::Payload::RecordBatch(b.build())),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = producers.join_next().await {
        r??;
    }
    while let Some(r) = consumers.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let h = hist.lock().expect("histogram lock");
    let records = per_partition * partitions as u64 * args.batch_records as u64;
    let bytes = records * args.record_bytes as u64;
    Ok(Row::new(
        "end-to-end acks=all (1 in flight)",
        records,
        bytes,
        secs,
        Some(&h),
    ))
}

/// How `consume_phase` reads: unary `Fetch`, one request in flight per partition, or one
/// `FetchStream` per partition (the broker reads ahead, several answers in flight).
#[derive(Clone, Copy, PartialEq)]
enum ReadMode {
    Unary,
    Stream,
    /// Fetch v12 on the leader's port (one port serves gRPC and Kafka).
    Kafka,
}

async fn consume_phase(args: &DataBenchArgs, topic: &str, mode: ReadMode) -> anyhow::Result<Row> {
    let mut client = DataClient::connect(&args.bootstrap).await?;
    let partitions = client.partitions(topic)?;
    let mut ends = Vec::new();
    for p in 0..partitions {
        ends.push((
            p,
            client.list_offset(topic, p, -2).await?,
            client.list_offset(topic, p, -1).await?,
        ));
    }
    let total: i64 = ends.iter().map(|(_, s, e)| e - s).sum();
    let pb = progress(total as u64 * args.record_bytes as u64, "consume");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (p, from, to) in ends {
        let (_, addr) = client.leader(topic, p).context("no leader")?;
        if let ReadMode::Kafka = mode {
            let (topic, pb) = (topic.to_string(), pb.clone());
            tasks.spawn(async move {
                super::kafka::fetch_range(&addr, &topic, p, (from, to), 4 << 20, &pb).await
            });
            continue;
        }
        let channel = data_channel(&addr).await?;
        let mut broker = BrokerClient::new(channel)
            .max_decoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
        let (topic, pb) = (topic.to_string(), pb.clone());
        tasks.spawn(async move {
            let (mut at, mut bytes, mut records) = (from, 0u64, 0u64);
            let req = |at| FetchRequest {
                topic: topic.clone(),
                partition: p,
                fetch_offset: at,
                max_bytes: 4 << 20,
                max_wait_ms: 100,
                ..Default::default()
            };
            let mut stream = match mode {
                ReadMode::Kafka => unreachable!("served above"),
                ReadMode::Stream => Some(
                    broker
                        .fetch_stream(req(at))
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .into_inner(),
                ),
                ReadMode::Unary => None,
            };
            while at < to {
                let r = match &mut stream {
                    Some(s) => s
                        .message()
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .context("the fetch stream ended")?,
                    None => broker
                        .fetch(req(at))
                        .await
                        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                        .into_inner(),
                };
                anyhow::ensure!(r.error_code == 0, "fetch failed: {}", r.error_message);
                for h in sluice_storage::batch::headers(&r.record_batches) {
                    records += h.records_count as u64;
                    at = h.next_offset();
                }
                bytes += r.record_batches.len() as u64;
                pb.inc(r.record_batches.len() as u64);
            }
            anyhow::Ok((records, bytes))
        });
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (r, b) = r??;
        records += r;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let phase = match mode {
        ReadMode::Unary => "consume",
        ReadMode::Stream => "consume stream",
        ReadMode::Kafka => "consume kafka",
    };
    Ok(Row::new(phase, records, bytes, secs, None))
}

/// Deletes the topic the bench named for itself (not one given with `--topic`), so runs
/// leave no data behind and the next run's writes do not wait for this one's writeback.
async fn drop_generated_topic(args: &DataBenchArgs, topic: &str) {
    if args.topic.is_some() {
        return;
    }
    let deleted = match Admin::connect(&args.bootstrap).await {
        Ok(admin) => admin.delete_topic(topic).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        eprintln!("could not delete the bench topic {topic}: {e}");
    }
}

async fn ensure_topic(args: &DataBenchArgs, topic: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.bootstrap).await?;
    match admin
        .create_topic(
            topic,
            args.partitions,
            args.replicas,
            vec![(
                "min.insync.replicas".into(),
                (args.replicas.min(2)).to_string(),
            )],
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    // Wait until every partition has a leader the client can see.
    let start = Instant::now();
    loop {
        let c = DataClient::connect(&args.bootstrap).await?;
        if c.partitions(topic)
            .is_ok_and(|n| (0..n).all(|p| c.leader(topic, p).is_some()))
        {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "topic {topic} has no leaders after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print(rows: &[Row], args: &DataBenchArgs) -> anyhow::Result<()> {
    match args.out.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "data", "record_bytes": args.record_bytes, "batch_records": args.batch_records,
                "inflight_per_partition": args.inflight, "partitions": args.partitions, "replicas": args.replicas, "phases": rows,
            }))?
        ),
        OutputFormat::Table => {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            let t = rows
                .iter()
                .map(|r| {
                    vec![
                        r.phase.clone(),
                        r.records.to_string(),
                        format!("{:.0}", r.records_per_s),
                        if r.rounds_mb_per_s.len() > 1 {
                            let min = r.rounds_mb_per_s.iter().copied().fold(f64::MAX, f64::min);
                            let max = r.rounds_mb_per_s.iter().copied().fold(0.0, f64::max);
                            format!("{:.1} ({min:.0}-{max:.0})", r.mb_per_s)
                        } else {
                            format!("{:.1}", r.mb_per_s)
                        },
                        f(r.latency_ms_p50),
                        f(r.latency_ms_p99),
                        f(r.latency_ms_p999),
                        f(r.latency_ms_max),
                        f(r.cluster_cpu_s_per_gb),
                        f(r.client_cpu_s_per_gb),
                    ]
                })
                .collect();
            println!(
                "{}-byte records, {} per batch, {} in flight per partition, {} partitions, RF {}",
                args.record_bytes,
                args.batch_records,
                args.inflight,
                args.partitions,
                args.replicas
            );
            println!(
                "{}",
                table(
                    &[
                        "PHASE",
                        "RECORDS",
                        "RECORDS/S",
                        "MB/S",
                        "P50 MS",
                        "P99 MS",
                        "P999 MS",
                        "MAX MS",
                        "CLUSTER CPU S/GB",
                        "CLIENT CPU S/GB"
                    ],
                    t
                )
            );
        }
    }
    Ok(())
}

/// `bench produce`: produce phases (acks 1 and/or all), then one consume pass.
pub fn run_produce(args: DataBenchArgs, consume_too: bool) -> anyhow::Result<()> {
    let rt = crate::cmd::runtime()?;
    rt.block_on(async {
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{}", std::process::id()));
        ensure_topic(&args, &topic).await?;
        let pids = cluster_pids(&args.bootstrap);
        let mut rows = Vec::new();
        let phases: Vec<(i32, &str)> = match args.acks.as_str() {
            "1" => vec![(1, "produce acks=1")],
            "all" | "-1" => vec![(-1, "produce acks=all")],
            "both" => vec![(1, "produce acks=1"), (-1, "produce acks=all")],
            other => anyhow::bail!("--acks {other:?}: use 1, all or both"),
        };
        anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
        for (acks, label) in phases {
            if acks == -1 {
                // Raw batches and the same load through the client library with
                // idempotence off and on, interleaved and rotated round by round (A B C,
                // B C A, C A B, ...): no phase always runs first, after the page cache has
                // absorbed the previous phase's writes, and each round's ratio compares
                // neighbours.
                let (mut raw, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..args.rounds {
                    for phase in 0..3 {
                        match (round + phase) % 3 {
                            0 => raw.push(
                                with_cpu(&pids, produce_phase(&args, &topic, acks, label)).await?,
                            ),
                            1 => off.push(
                                with_cpu(
                                    &pids,
                                    client_produce_phase(&args, &topic, false, "client acks=all"),
                                )
                                .await?,
                            ),
                            _ => on.push(
                                with_cpu(
                                    &pids,
                                    client_produce_phase(
                                        &args,
                                        &topic,
                                        true,
                                        "client acks=all idempotent",
                                    ),
                                )
                                .await?,
                            ),
                        }
                    }
                }
                let ratios = |client: &[Row]| -> Vec<f64> {
                    client
                        .iter()
                        .zip(&raw)
                        .map(|(c, r)| c.mb_per_s / r.mb_per_s)
                        .collect()
                };
                for (what, client) in [("client", &off), ("client idempotent", &on)] {
                    let r = ratios(client);
                    let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                    eprintln!(
                        "{what} / raw acks=all, per round: {} (median {:.2})",
                        each.join(" "),
                        median_of(r.clone())
                    );
                }
                let (off, on) = (Row::median(off), Row::median(on));
                eprintln!(
                    "idempotence cost: {:.1} % of throughput ({:.0} vs {:.0} MB/s)",
                    (1.0 - on.mb_per_s / off.mb_per_s) * 100.0,
                    on.mb_per_s,
                    off.mb_per_s
                );
                rows.push(Row::median(raw));
                rows.push(off);
                rows.push(on);
            } else {
                rows.push(with_cpu(&pids, produce_phase(&args, &topic, acks, label)).await?);
            }
            let stream_label = if acks == 1 {
                "produce stream acks=1"
            } else {
                "produce stream acks=all"
            };
            rows.push(
                with_cpu(
                    &pids,
                    produce_stream_phase(&args, &topic, acks, stream_label),
                )
                .await?,
            );
        }
        if args.record_bytes >= 16 {
            rows.push(with_cpu(&pids, e2e_phase(&args, &topic)).await?);
        }
        if consume_too {
            rows.push(with_cpu(&pids, consume_phase(&args, &topic, ReadMode::Unary)).await?);
        }
        drop_generated_topic(&args, &topic).await;
        print(&rows, &args)
    })
}

/// `bench consume`: reads a topic (default: produces 256 MiB with acks=1 first).
pub fn run_consume(args: DataBenchArgs) -> anyhow::Result<()> {
    let rt = crate::cmd::runtime()?;
    rt.block_on(async {
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{}", std::process::id()));
        ensure_topic(&args, &topic).await?;
        let pids = cluster_pids(&args.bootstrap);
        let mut rows = Vec::new();
        if args.topic.is_none() {
            rows.push(with_cpu(&pids, produce_phase(&args, &topic, 1, "fill acks=1")).await?);
        }
        match &args.group {
            Some(g) => rows.push(with_cpu(&pids, group_consume_phase(&args, &topic, g)).await?),
            None => {
                rows.push(with_cpu(&pids, consume_phase(&args, &topic, ReadMode::Unary)).await?);
                rows.push(with_cpu(&pids, consume_phase(&args, &topic, ReadMode::Stream)).await?);
                // The raw Kafka reader speaks plaintext only: skipped against a TLS cluster.
                if sluice_proto::tls::internal_client_tls().is_none() {
                    rows.push(
                        with_cpu(&pids, consume_phase(&args, &topic, ReadMode::Kafka)).await?,
                    );
                }
            }
        }
        drop_generated_topic(&args, &topic).await;
        print(&rows, &args)
    })
}

/// A connected channel to a broker with the data path's HTTP/2 windows and frame size, as
/// the client crate uses (the defaults, 64 KiB windows, cap one fetch stream well below
/// the machine).
pub(super) async fn data_channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(sluice_proto::transport::data_endpoint(addr)
        .map_err(anyhow::Error::msg)?
        .connect()
        .await?)
}
