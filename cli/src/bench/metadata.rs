//! `sluice bench metadata`: starts a local controller quorum, measures topic creations per
//! second, then kills the active controller (SIGKILL) over and over and measures the time
//! until a metadata write commits again (failover), as p50/p99/max.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::controller_client::ControllerClient;
use sluice_proto::v1::*;
use tonic::transport::{Channel, Endpoint};

use super::{progress_count, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct MetadataBenchArgs {
    /// Controllers in the quorum.
    #[arg(long, default_value_t = 3)]
    controllers: u64,
    /// Topics to create for the throughput phase.
    #[arg(long, default_value_t = 300)]
    topics: u32,
    /// Requests in flight during the throughput phase.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Leader failover trials.
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// `controller.quorum.election.timeout.ms` of the quorum under test.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Directory for the controllers' data (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Instead of the quorum phases: the image's cost at these partition counts (RF 3, 3
    /// brokers, in process): size, encode, decode, applying an ISR change and a fencing.
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<u32>,
    #[command(flatten)]
    out: BenchOutput,
}

struct Node {
    id: u64,
    port: u16,
    child: Option<Child>,
}

struct LocalQuorum {
    nodes: Vec<Node>,
    voters: String,
    dir: PathBuf,
    election_timeout_ms: u64,
    _tmp: Option<super::storage::TempDir>,
}

impl LocalQuorum {
    fn start(n: u64, dir: Option<PathBuf>, election_timeout_ms: u64) -> anyhow::Result<Self> {
        let (dir, tmp) = match dir {
            Some(d) => (d, None),
            None => {
                let t = super::storage::tempfile_dir()?;
                (t.0.clone(), Some(t))
            }
        };
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        drop(listeners);
        let voters = (1..=n)
            .map(|i| format!("{i}@127.0.0.1:{}", ports[i as usize - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut q = LocalQuorum {
            nodes: (1..=n)
                .map(|id| Node {
                    id,
                    port: ports[id as usize - 1],
                    child: None,
                })
                .collect(),
            voters,
            dir,
            election_timeout_ms,
            _tmp: tmp,
        };
        for id in 1..=n {
            q.spawn(id)?;
        }
        Ok(q)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let node = &mut self.nodes[id as usize - 1];
        let data: &Path = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join(format!("controller-{id}.log")))?;
        let child = Command::new(exe)
            .arg("controller")
            .args(["--node-id", &id.to_string()])
            .args(["--listeners", &format!("127.0.0.1:{}", node.port)])
            .args(["--controller-quorum-voters", &self.voters])
            .args([
                "--log-dirs",
                &data.join(format!("controller-{id}")).to_string_lossy(),
            ])
            .args([
                "--override",
                &format!(
                    "controller.quorum.election.timeout.ms={}",
                    self.election_timeout_ms
                ),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a controller")?;
        node.child = Some(child);
        Ok(())
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes[id as usize - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.nodes[id as usize - 1].port)
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }
}

impl Drop for LocalQuorum {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
}

async fn quorum_state(addr: &str) -> Option<DescribeQuorumResponse> {
    AdminClient::new(channel(addr))
        .describe_quorum(DescribeQuorumRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn create(addr: &str, name: &str) -> bool {
    let r = AdminClient::new(channel(addr))
        .create_topics(CreateTopicsRequest {
            topics: vec![TopicSpec {
                name: name.to_string(),
                num_partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
            }],
            validate_only: false,
        })
        .await;
    matches!(r, Ok(r) if r.get_ref().results.first().is_some_and(|x| x.error_code == 0))
}

async fn wait<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Registers and heartbeats one stand-in broker so topics can be placed.
async fn stand_in_broker(q: &LocalQuorum) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addrs: Vec<String> = q.running().iter().map(|i| q.addr(*i)).collect();
    let epoch = wait("broker registration", Duration::from_secs(30), || {
        let addrs = addrs.clone();
        async move {
            for a in &addrs {
                let r = ControllerClient::new(channel(a))
                    .register_broker(RegisterBrokerRequest {
                        broker_id: 1,
                        incarnation_id: format!("bench-{}", std::process::id()),
                        cluster_id: String::new(),
                        host: "127.0.0.1".into(),
                        port: 1,
                        rack: None,
                        log_dirs: vec![],
                        directory_id: "bench-metadata".into(),
                        ..Default::default()
                    })
                    .await;
                if let Ok(r) = r {
                    return Some(r.into_inner().broker_epoch);
                }
            }
            None
        }
    })
    .await?;
    // Heartbeats for the whole run; aborted when the benchmark ends.
    Ok(tokio::spawn(async move {
        loop {
            for a in &addrs {
                let _ = ControllerClient::new(channel(a))
                    .broker_heartbeat(BrokerHeartbeatRequest {
                        broker_id: 1,
                        broker_epoch: epoch,
                        current_metadata_offset: Some(epoch as u64),
                        want_fence: false,
                        want_shut_down: false,
                        directory_id: "bench-metadata".into(),
                        high_watermarks: vec![],
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    controllers: u64,
    election_timeout_ms: u64,
    topics_created: u32,
    concurrency: u32,
    topic_creations_per_s: f64,
    failover_trials: u32,
    failover_ms_p50: f64,
    failover_ms_p99: f64,
    failover_ms_max: f64,
    failover_ms: Vec<f64>,
}

pub fn run(args: MetadataBenchArgs) -> anyhow::Result<()> {
    if !args.partitions.is_empty() {
        let pb = progress_count(args.partitions.len() as u64, "image sizes");
        let mut rows = Vec::new();
        for &n in &args.partitions {
            rows.push(super::image::measure(n)?);
            pb.inc(1);
        }
        pb.finish_and_clear();
        return super::image::print(&rows, args.out.output);
    }
    anyhow::ensure!(
        args.controllers >= 3,
        "--controllers must be at least 3 to survive a leader kill"
    );
    let rt = crate::cmd::runtime()?;
    rt.block_on(async move {
        let mut q =
            LocalQuorum::start(args.controllers, args.dir.clone(), args.election_timeout_ms)?;
        let first = q.addr(1);
        wait("a leader", Duration::from_secs(30), || quorum_state(&first)).await?;
        let hb = stand_in_broker(&q).await?;
        let leader_addr = |q: &LocalQuorum, s: &DescribeQuorumResponse| q.addr(s.leader_id as u64);
        let s = wait("a leader", Duration::from_secs(30), || quorum_state(&first)).await?;
        let target = leader_addr(&q, &s);
        wait("the broker to be unfenced", Duration::from_secs(30), || {
            let t = target.clone();
            async move { create(&t, "warmup").await.then_some(()) }
        })
        .await?;
        // Phase 1: creations per second, `concurrency` requests in flight.
        let pb = progress_count(args.topics as u64, "create topics");
        let start = Instant::now();
        let mut next = 0u32;
        let mut inflight = tokio::task::JoinSet::new();
        let mut created = 0u32;
        while created < args.topics {
            while inflight.len() < args.concurrency as usize && next < args.topics {
                let addr = target.clone();
                let name = format!("bench-{next}");
                next += 1;
                inflight.spawn(async move { create(&addr, &name).await });
            }
            match inflight.join_next().await {
                Some(Ok(true)) => {
                    created += 1;
                    pb.inc(1);
                }
                Some(_) => anyhow::bail!("a topic creation failed during the throughput phase"),
                None => break,
            }
        }
        let creations_per_s = created as f64 / start.elapsed().as_secs_f64();
        pb.finish_and_clear();

        // Phase 2: failover.
        let pb = progress_count(args.trials as u64, "failover trials");
        let mut samples = Vec::new();
        for trial in 0..args.trials {
            let any = q.addr(q.running()[0]);
            let s = wait("a leader", Duration::from_secs(30), || quorum_state(&any)).await?;
            let leader = s.leader_id as u64;
            let killed = Instant::now();
            q.kill(leader);
            let survivors: Vec<String> = q.running().iter().map(|i| q.addr(*i)).collect();
            let name = format!("failover-{trial}");
            wait("a write after failover", Duration::from_secs(30), || {
                let survivors = survivors.clone();
                let name = name.clone();
                async move {
                    for a in &survivors {
                        if create(a, &name).await {
                            return Some(());
                        }
                    }
                    None
                }
            })
            .await?;
            samples.push(killed.elapsed().as_secs_f64() * 1000.0);
            q.spawn(leader)?;
            // Let the restarted node catch up before the next trial.
            let restarted = q.addr(leader);
            wait(
                "the restarted controller to catch up",
                Duration::from_secs(30),
                || async {
                    let s = quorum_state(&restarted).await?;
                    (s.voters.len() as u64 == args.controllers && s.max_follower_lag == 0)
                        .then_some(())
                },
            )
            .await?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        hb.abort();
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let report = Report {
            benchmark: "metadata",
            controllers: args.controllers,
            election_timeout_ms: args.election_timeout_ms,
            topics_created: created,
            concurrency: args.concurrency,
            topic_creations_per_s: creations_per_s,
            failover_trials: args.trials,
            failover_ms_p50: percentile(&sorted, 50.0),
            failover_ms_p99: percentile(&sorted, 99.0),
            failover_ms_max: sorted.last().copied().unwrap_or(0.0),
            failover_ms: samples,
        };
        match args.out.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            OutputFormat::Table => {
                println!(
                    "{} controllers, election timeout {} ms",
                    report.controllers, report.election_timeout_ms
                );
                println!(
                    "{}",
                    table(
                        &["METRIC", "VALUE"],
                        vec![
                            vec![
                                "topic creations/s".into(),
                                format!("{:.0}", report.topic_creations_per_s)
                            ],
                            vec!["failover trials".into(), report.failover_trials.to_string()],
                            vec![
                                "failover p50 ms".into(),
                                format!("{:.0}", report.failover_ms_p50)
                            ],
                            vec![
                                "failover p99 ms".into(),
                                format!("{:.0}", report.failover_ms_p99)
                            ],
                            vec![
                                "failover max ms".into(),
                                format!("{:.0}", report.failover_ms_max)
                            ],
                        ]
                    )
                );
            }
        }
        Ok(())
    })
}
