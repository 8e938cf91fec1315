//! `sluice bench failover`: how fast many leaders move. Starts a local `sluice dev` cluster
//! with `--partitions` RF-3 partitions (min.insync.replicas 2), then stops the broker that
//! leads the most of them, by SIGKILL and (after it is back and the cluster is quiet) by
//! SIGTERM (a controlled shutdown), and measures, for every partition it led, the time from
//! the signal to its first acknowledged acks=all write elsewhere: p50, p99 and max (= all
//! writable again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sluice_client::{Admin, DataClient};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::{produce_request, MetadataResponse, ProduceRequest};
use tonic::transport::{Channel, Endpoint};

use super::idle::{admin_when_up, pids, start_dev, wait_full_isr, wait_quiet};
use super::{progress_count, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBenchArgs {
    /// RF-3 partitions in the cluster.
    #[arg(long, default_value_t = 10_000)]
    partitions: u32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 100)]
    partitions_per_topic: u32,
    /// Brokers of the cluster.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Controllers of the cluster.
    #[arg(long, default_value_t = 3)]
    controllers: u32,
    /// Partitions tried at once while waiting for them to be writable.
    #[arg(long, default_value_t = 512)]
    writers: usize,
    /// Longest wait for any phase (creation, failover, return to full ISR).
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
    /// A broker using less than this % of a core for 3 s is done with a creation.
    #[arg(long, default_value_t = 10.0)]
    quiet_pct: f64,
    /// The `sluice` binary that runs the cluster (default: this one), to compare builds.
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Directory for the cluster (default: a temporary directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    out: BenchOutput,
}

#[derive(Debug, Serialize)]
struct Row {
    signal: String,
    broker: i32,
    partitions_moved: usize,
    writable_ms_p50: f64,
    writable_ms_p99: f64,
    writable_ms_max: f64,
}

pub fn run(args: FailoverBenchArgs) -> anyhow::Result<()> {
    let (dev, dir, bootstrap) = start_dev(
        &[],
        args.brokers,
        args.controllers,
        args.sluice.clone(),
        args.dir.clone(),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(measure(&args, &dir, &bootstrap))?;
    drop(dev);
    print(&rows, &args)
}

/// The leader of every partition, by broker.
async fn leaders(admin: &Admin) -> anyhow::Result<HashMap<i32, Vec<(String, i32)>>> {
    let mut by: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
    for t in admin.describe_topics(vec![]).await? {
        if !t.name.starts_with("bench-failover-") {
            continue;
        }
        for (i, p) in t.partitions.iter().enumerate() {
            by.entry(p.leader_id)
                .or_default()
                .push((t.name.clone(), i as i32));
        }
    }
    Ok(by)
}

async fn measure(
    args: &FailoverBenchArgs,
    dir: &std::path::Path,
    bootstrap: &str,
) -> anyhow::Result<Vec<Row>> {
    let admin = admin_when_up(bootstrap, args.brokers).await?;
    let topics = args.partitions.div_ceil(args.partitions_per_topic.max(1));
    let pb = progress_count(u64::from(topics), "creating topics");
    for t in 0..topics {
        admin
            .create_topic(
                &format!("bench-failover-{t}"),
                args.partitions_per_topic as i32,
                3.min(args.brokers as i32),
                vec![("min.insync.replicas".into(), "2".into())],
            )
            .await
            .with_context(|| format!("creating bench-failover-{t}"))?;
        pb.set_position(u64::from(t + 1));
    }
    pb.finish_and_clear();
    let mut rows = Vec::new();
    for signal in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        wait_full_isr(&admin, args.wait_secs).await?;
        let (brokers, _) = pids(dir).await?;
        wait_quiet(&brokers, args.quiet_pct, args.wait_secs).await?;
        let by = leaders(&admin).await?;
        let (&victim, moved) = by
            .iter()
            .filter(|(b, _)| **b >= 0)
            .max_by_key(|(_, v)| v.len())
            .context("no partition has a leader")?;
        let moved = moved.clone();
        let pid = *brokers
            .get(victim as usize - 1)
            .context("the leading broker's pid is unknown")?;
        eprintln!(
            "{signal:?} to broker {victim} (pid {pid}), leader of {} partitions",
            moved.len()
        );
        let t0 = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        let times = writable_times(args, bootstrap, moved.clone(), t0).await?;
        let ms = |q: f64| {
            let i = ((times.len() as f64 - 1.0) * q).round() as usize;
            times[i].as_secs_f64() * 1000.0
        };
        rows.push(Row {
            signal: format!("{signal:?}"),
            broker: victim,
            partitions_moved: moved.len(),
            writable_ms_p50: ms(0.5),
            writable_ms_p99: ms(0.99),
            writable_ms_max: ms(1.0),
        });
        // `sluice dev` restarts it; the next phase starts from full ISR again.
    }
    wait_full_isr(&admin, args.wait_secs).await?;
    Ok(rows)
}

/// The leader's address of `topic`-`partition` in `md`.
fn leader_addr(md: &MetadataResponse, topic: &str, partition: i32) -> Option<String> {
    let t = md.topics.iter().find(|t| t.name == topic)?;
    let p = t.partitions.iter().find(|p| p.partition == partition)?;
    let b = md.brokers.iter().find(|b| b.broker_id == p.leader_id)?;
    Some(format!("{}:{}", b.host, b.port))
}

/// For each partition, the time from `t0` to its first acknowledged acks=all write (sorted).
/// Up to `--writers` partitions are tried at once, each on its own, against the leader named
/// by metadata refreshed every 100 ms, so the figure is the cluster's and not a client
/// walking through thousands of partitions one by one.
async fn writable_times(
    args: &FailoverBenchArgs,
    bootstrap: &str,
    partitions: Vec<(String, i32)>,
    t0: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = t0 + Duration::from_secs(args.wait_secs);
    let batch = {
        let mut b = sluice_storage::RecordBatchBuilder::new();
        b.append(0, None, Some(b"failover"), &[]);
        b.build()
    };
    let mut client = DataClient::connect(bootstrap).await?;
    let metadata = Arc::new(std::sync::RwLock::new(client.metadata()));
    let refresher = {
        let metadata = metadata.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if client.refresh().await.is_ok() {
                    *metadata.write().expect("metadata lock") = client.metadata();
                }
            }
        })
    };
    let channels: Arc<std::sync::Mutex<HashMap<String, Channel>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.writers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (topic, p) in partitions {
        let (metadata, channels, permits, batch) = (
            metadata.clone(),
            channels.clone(),
            permits.clone(),
            batch.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            loop {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{topic}-{p} not writable in time"
                );
                let addr = leader_addr(&metadata.read().expect("metadata lock"), &topic, p);
                if let Some(addr) = addr {
                    let channel = channels
                        .lock()
                        .expect("channels lock")
                        .entry(addr.clone())
                        .or_insert_with(|| {
                            Endpoint::from_shared(format!("http://{addr}"))
                                .expect("host:port")
                                .connect_lazy()
                        })
                        .clone();
                    let req = ProduceRequest {
                        topic: topic.clone(),
                        partition: p,
                        acks: Some(-1),
                        timeout_ms: 2_000,
                        payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
                        ..Default::default()
                    };
                    let ok = tokio::time::timeout(
                        Duration::from_secs(3),
                        BrokerClient::new(channel).produce(req),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
                    if ok {
                        return anyhow::Ok(t0.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut times = Vec::new();
    while let Some(r) = tasks.join_next().await {
        times.push(r??);
    }
    refresher.abort();
    times.sort();
    Ok(times)
}

fn print(rows: &[Row], args: &FailoverBenchArgs) -> anyhow::Result<()> {
    match args.out.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "failover", "partitions": args.partitions, "brokers": args.brokers,
                "rows": rows,
            }))?
        ),
        OutputFormat::Table => println!(
            "{}",
            table(
                &[
                    "signal",
                    "broker",
                    "partitions moved",
                    "writable p50 ms",
                    "p99 ms",
                    "all writable ms",
                ],
                rows.iter()
                    .map(|r| {
                        vec![
                            r.signal.clone(),
                            r.broker.to_string(),
                            r.partitions_moved.to_string(),
                            format!("{:.0}", r.writable_ms_p50),
                            format!("{:.0}", r.writable_ms_p99),
                            format!("{:.0}", r.writable_ms_max),
                        ]
                    })
                    .collect(),
            )
        ),
    }
    Ok(())
}
