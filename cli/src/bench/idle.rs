//! `sluice bench idle`: what idle partitions cost. Starts a local `sluice dev` cluster,
//! grows it to each `--partitions` count of idle RF-3 partitions (every one at full ISR),
//! then measures each broker over `--window-secs` with nothing produced (CPU as % of one
//! core, RSS, open fds, threads, from /proc) and, right after, the acks=all latency of a
//! busy 3-partition topic beside them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use sluice_client::Admin;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_storage::RecordBatchBuilder;
use tonic::transport::Endpoint;

use super::{progress_count, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct IdleBenchArgs {
    /// Idle partition counts to measure at, ascending (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1000,3000")]
    partitions: Vec<u32>,
    /// Partitions per idle topic.
    #[arg(long, default_value_t = 100)]
    partitions_per_topic: u32,
    /// Replication factor of the idle topics and the busy topic.
    #[arg(long, default_value_t = 3)]
    replicas: i32,
    /// Brokers of the cluster.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Controllers of the cluster.
    #[arg(long, default_value_t = 3)]
    controllers: u32,
    /// Seconds of idle measurement at each count.
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    /// A broker using less than this % of a core for 3 s is done with a creation (raise it
    /// to compare builds whose idle cost is above it).
    #[arg(long, default_value_t = 10.0)]
    quiet_pct: f64,
    /// Seconds to wait, once the brokers are quiet after a creation, before measuring.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Seconds of acks=all produce to the busy topic at each count (0: skip).
    #[arg(long, default_value_t = 5)]
    busy_secs: u64,
    /// Records (1 KiB each) per batch of the busy phase.
    #[arg(long, default_value_t = 16)]
    batch_records: usize,
    /// Longest wait for every partition to reach full ISR, per count.
    #[arg(long, default_value_t = 600)]
    isr_wait_secs: u64,
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
    idle_partitions: u32,
    replicas_per_broker: f64,
    broker_cpu_pct_avg: f64,
    broker_cpu_pct_max: f64,
    broker_rss_mib_avg: f64,
    rss_kib_per_replica: Option<f64>,
    broker_fds_avg: f64,
    broker_threads_avg: f64,
    controller_cpu_pct_avg: f64,
    /// From the first creation request until every partition is at full ISR and every
    /// broker quiet (its logs opened, its followers in their sessions).
    ready_secs: f64,
    busy_acks_all_p50_ms: Option<f64>,
    busy_acks_all_p99_ms: Option<f64>,
    busy_mb_per_s: Option<f64>,
}

/// The `sluice dev` child; SIGTERM (and the children's death signal) on drop.
pub(super) struct Dev {
    pub(super) child: Child,
    pub(super) _tmp: Option<super::storage::TempDir>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base port B with B.., B+100.., B+200.. free.
pub(super) fn free_base_port(brokers: u32, controllers: u32) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base: u16 = 20_000 + (rand::random::<u16>() % 30_000);
        let ports = (0..brokers)
            .map(|i| base + i as u16)
            .chain((0..controllers).map(|i| base + 100 + i as u16))
            .chain((0..brokers + controllers).map(|i| base + 200 + i as u16));
        let free = ports
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if free {
            return Ok(base);
        }
    }
    anyhow::bail!("found no free range of ports")
}

#[derive(Clone, Copy, Default)]
pub(super) struct ProcSample {
    pub(super) cpu_ticks: u64,
    rss_kib: u64,
    threads: u64,
    fds: u64,
}

/// CPU ticks (USER_HZ, 100/s), RSS, threads and open fds of `pid`, from /proc.
pub(super) fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15: indexes 11 and 12 after the name.
    let cpu_ticks = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_ticks,
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
    })
}

fn avg(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn run(args: IdleBenchArgs) -> anyhow::Result<()> {
    let mut counts = args.partitions.clone();
    counts.sort_unstable();
    let (dev, dir, bootstrap) = start_dev(
        &[],
        args.brokers,
        args.controllers,
        args.sluice.clone(),
        args.dir.clone(),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(measure(&args, &counts, &dir, &bootstrap))?;
    drop(dev);
    print(&rows, &args)
}

/// Starts `sluice dev` (the `sluice` binary given, else this one) in `dir` (else a
/// temporary directory) on free ports: the child, its directory and the bootstrap list.
pub(super) fn start_dev(
    env: &[(&str, &str)],
    brokers: u32,
    controllers: u32,
    sluice: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> anyhow::Result<(Dev, PathBuf, String)> {
    let (dir, tmp) = match dir {
        Some(d) => (d, None),
        None => {
            let t = super::storage::tempfile_dir()?;
            (t.0.join("cluster-bench"), Some(t))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let base = free_base_port(brokers, controllers)?;
    let log = std::fs::File::create(dir.join("dev.log"))?;
    let exe = match sluice {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let child = Command::new(exe)
        .arg("dev")
        .args(["--brokers", &brokers.to_string()])
        .args(["--controllers", &controllers.to_string()])
        .args(["--base-port", &base.to_string()])
        .arg("--dir")
        .arg(dir.join("cluster"))
        .args(["--output", "json"])
        .envs(env.iter().copied())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `sluice dev`")?;
    let dev = Dev { child, _tmp: tmp };
    let bootstrap = (0..brokers)
        .map(|i| format!("127.0.0.1:{}", base + i as u16))
        .collect::<Vec<_>>()
        .join(",");
    Ok((dev, dir, bootstrap))
}

/// An admin client once `brokers` brokers are registered and unfenced (60 s at most).
pub(super) async fn admin_when_up(bootstrap: &str, brokers: u32) -> anyhow::Result<Admin> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Admin::connect(bootstrap).await {
            Ok(a)
                if a.describe_cluster().await.is_ok_and(|c| {
                    c.brokers.iter().filter(|b| !b.fenced).count() == brokers as usize
                }) =>
            {
                return Ok(a)
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => anyhow::bail!("the cluster did not come up within 60 s"),
        }
    }
}

/// (broker pids, controller pids) from the dev cluster's `cluster.json`.
pub(super) async fn pids(dir: &std::path::Path) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let path = dir.join("cluster").join("cluster.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // `sluice dev` rewrites the file when it restarts a node: a read may catch it empty
        // or half written, and the next one will not.
        let state = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if let Some(state) = state {
            let of = |role: &str| -> Vec<u32> {
                state["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["role"] == role)
                    .filter_map(|n| n["pid"].as_u64().map(|p| p as u32))
                    .collect()
            };
            return Ok((of("broker"), of("controller")));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {} after 60 s (see dev.log there)",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn measure(
    args: &IdleBenchArgs,
    counts: &[u32],
    dir: &std::path::Path,
    bootstrap: &str,
) -> anyhow::Result<Vec<Row>> {
    let (brokers, controllers) = pids(dir).await?;
    let admin = admin_when_up(bootstrap, args.brokers).await?;
    let busy_topic = "bench-busy";
    admin
        .create_topic(
            busy_topic,
            3,
            args.replicas,
            vec![(
                "min.insync.replicas".into(),
                args.replicas.min(2).to_string(),
            )],
        )
        .await?;
    let mut created = 0u32;
    let mut rows: Vec<Row> = Vec::new();
    let mut baseline: Option<(f64, f64)> = None;
    for &n in counts {
        let t = Instant::now();
        let want_topics = n.div_ceil(args.partitions_per_topic.max(1));
        let pb = progress_count(u64::from(want_topics), "creating topics");
        while created < want_topics {
            admin
                .create_topic(
                    &format!("bench-idle-{created}"),
                    args.partitions_per_topic as i32,
                    args.replicas,
                    vec![],
                )
                .await
                .with_context(|| format!("creating bench-idle-{created}"))?;
            created += 1;
            pb.set_position(u64::from(created));
        }
        pb.finish_and_clear();
        wait_full_isr(&admin, args.isr_wait_secs).await?;
        // Creation goes on after the controller committed it: every broker opens its new
        // logs and its followers join their fetch sessions. Ready = quiet.
        wait_quiet(&brokers, args.quiet_pct, args.isr_wait_secs).await?;
        let full_isr_secs = t.elapsed().as_secs_f64();
        // Let creation's work (logs opened, ISR changes) settle.
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let before: Vec<ProcSample> = brokers
            .iter()
            .map(|p| sample(*p))
            .collect::<Result<_, _>>()?;
        let cbefore: Vec<ProcSample> = controllers
            .iter()
            .map(|p| sample(*p))
            .collect::<Result<_, _>>()?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.window_secs)).await;
        let secs = t0.elapsed().as_secs_f64();
        let after: Vec<ProcSample> = brokers
            .iter()
            .map(|p| sample(*p))
            .collect::<Result<_, _>>()?;
        let cafter: Vec<ProcSample> = controllers
            .iter()
            .map(|p| sample(*p))
            .collect::<Result<_, _>>()?;
        let pct = |b: &ProcSample, a: &ProcSample| {
            (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64 / 100.0 / secs * 100.0
        };
        let cpu: Vec<f64> = before.iter().zip(&after).map(|(b, a)| pct(b, a)).collect();
        let ccpu: Vec<f64> = cbefore
            .iter()
            .zip(&cafter)
            .map(|(b, a)| pct(b, a))
            .collect();
        let rss: Vec<f64> = after.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
        let total_partitions = (created * args.partitions_per_topic + 3) as f64;
        let replicas_per_broker =
            total_partitions * f64::from(args.replicas) / f64::from(args.brokers);
        let rss_avg = avg(&rss);
        let rss_kib_per_replica = match baseline {
            Some((rss0, r0)) if replicas_per_broker > r0 => {
                Some((rss_avg - rss0) * 1024.0 / (replicas_per_broker - r0))
            }
            _ => None,
        };
        if baseline.is_none() {
            baseline = Some((rss_avg, replicas_per_broker));
        }
        let (p50, p99, mbps) = if args.busy_secs > 0 {
            let (p50, p99, mbps) = busy_phase(args, bootstrap, busy_topic).await?;
            (Some(p50), Some(p99), Some(mbps))
        } else {
            (None, None, None)
        };
        rows.push(Row {
            idle_partitions: created * args.partitions_per_topic,
            replicas_per_broker,
            broker_cpu_pct_avg: avg(&cpu),
            broker_cpu_pct_max: cpu.iter().copied().fold(0.0, f64::max),
            broker_rss_mib_avg: rss_avg,
            rss_kib_per_replica,
            broker_fds_avg: avg(&after.iter().map(|s| s.fds as f64).collect::<Vec<_>>()),
            broker_threads_avg: avg(&after.iter().map(|s| s.threads as f64).collect::<Vec<_>>()),
            controller_cpu_pct_avg: avg(&ccpu),
            ready_secs: full_isr_secs,
            busy_acks_all_p50_ms: p50,
            busy_acks_all_p99_ms: p99,
            busy_mb_per_s: mbps,
        });
        eprintln!(
            "measured at {} idle partitions",
            created * args.partitions_per_topic
        );
    }
    Ok(rows)
}

/// Waits until every broker used under `--quiet-pct` of a core (ticks per second, USER_HZ
/// 100) for three seconds in a row: its share of a creation is done.
pub(super) async fn wait_quiet(
    brokers: &[u32],
    quiet_pct: f64,
    wait_secs: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let mut quiet = 0;
    let mut prev: Vec<ProcSample> = brokers
        .iter()
        .map(|p| sample(*p))
        .collect::<Result<_, _>>()?;
    while quiet < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "brokers still busy after {wait_secs} s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cur: Vec<ProcSample> = brokers
            .iter()
            .map(|p| sample(*p))
            .collect::<Result<_, _>>()?;
        let busiest = prev
            .iter()
            .zip(&cur)
            .map(|(a, b)| b.cpu_ticks.saturating_sub(a.cpu_ticks))
            .max()
            .unwrap_or(0);
        quiet = if (busiest as f64) < quiet_pct {
            quiet + 1
        } else {
            0
        };
        prev = cur;
    }
    Ok(())
}

/// Waits until every partition of every topic has its whole replica set in the ISR.
pub(super) async fn wait_full_isr(admin: &Admin, wait_secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let topics = admin.describe_topics(vec![]).await?;
        let (mut total, mut full) = (0usize, 0usize);
        for t in &topics {
            for p in &t.partitions {
                total += 1;
                if p.leader_id >= 0 && p.isr.len() == p.replicas.len() {
                    full += 1;
                }
            }
        }
        if total > 0 && full == total {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{full} of {total} partitions at full ISR after {wait_secs} s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// acks=all produce of `batch_records` × 1 KiB batches, one in flight per partition of
/// `topic`, for `busy_secs`: (p50 ms, p99 ms, MB/s).
async fn busy_phase(
    args: &IdleBenchArgs,
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let client = sluice_client::DataClient::connect(bootstrap).await?;
    let partitions = client.partitions(topic)?;
    let value = vec![0x61u8; 1024];
    let mut b = RecordBatchBuilder::with_capacity(args.batch_records * 1040);
    for _ in 0..args.batch_records {
        b.append(0, None, Some(&value), &[]);
    }
    let batch: Bytes = b.build();
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let until = Instant::now() + Duration::from_secs(args.busy_secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let (_, addr) = client
            .leader(topic, p)
            .with_context(|| format!("{topic}-{p} has no leader"))?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        let mut broker = BrokerClient::new(channel);
        let (batch, hist, topic) = (batch.clone(), hist.clone(), topic.to_string());
        tasks.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                broker
                    .produce(ProduceRequest {
                        topic: topic.clone(),
                        partition: p,
                        acks: Some(-1),
                        timeout_ms: 30_000,
                        payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
                hist.lock()
                    .expect("histogram lock")
                    .record((t.elapsed().as_micros() as u64).max(1))
                    .ok();
                sent += 1;
            }
            anyhow::Ok(sent)
        });
    }
    let mut batches = 0u64;
    while let Some(r) = tasks.join_next().await {
        batches += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let h = hist.lock().expect("histogram lock");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let bytes = batches * args.batch_records as u64 * 1024;
    Ok((ms(0.5), ms(0.99), bytes as f64 / secs / 1e6))
}

fn print(rows: &[Row], args: &IdleBenchArgs) -> anyhow::Result<()> {
    match args.out.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "idle", "brokers": args.brokers, "replicas": args.replicas,
                "window_secs": args.window_secs, "busy_secs": args.busy_secs,
                "batch_records": args.batch_records, "rows": rows,
            }))?
        ),
        OutputFormat::Table => {
            let f = |v: f64| format!("{v:.1}");
            let o = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            println!(
                "{}",
                table(
                    &[
                        "idle partitions",
                        "replicas/broker",
                        "broker CPU % avg",
                        "max",
                        "RSS MiB",
                        "KiB/replica",
                        "fds",
                        "threads",
                        "controller CPU %",
                        "ready s",
                        "busy acks=all p50 ms",
                        "p99 ms",
                        "MB/s",
                    ],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.idle_partitions.to_string(),
                                format!("{:.0}", r.replicas_per_broker),
                                f(r.broker_cpu_pct_avg),
                                f(r.broker_cpu_pct_max),
                                f(r.broker_rss_mib_avg),
                                o(r.rss_kib_per_replica),
                                format!("{:.0}", r.broker_fds_avg),
                                format!("{:.0}", r.broker_threads_avg),
                                f(r.controller_cpu_pct_avg),
                                f(r.ready_secs),
                                o(r.busy_acks_all_p50_ms),
                                o(r.busy_acks_all_p99_ms),
                                o(r.busy_mb_per_s),
                            ]
                        })
                        .collect(),
                )
            );
        }
    }
    Ok(())
}
