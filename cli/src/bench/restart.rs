//! `sluice bench recovery --broker`: how soon a whole broker serves again after kill -9 and
//! after a clean stop. Starts `sluice dev --controllers 1 --brokers 1`, fills one partition
//! with `--total-bytes` (1 GiB segments by default) and writes one batch to each of
//! `--partitions` more, kills the broker, and lets `sluice dev` restart it as it restarts
//! any node that died. Times count from the new broker process's start (from /proc, so the
//! supervisor's 1 s restart delay is not in them) to the first acks=1 produce each
//! partition accepts.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_storage::RecordBatchBuilder;

use super::idle::{admin_when_up, pids, start_dev};
use super::progress;
use crate::output::{table, OutputFormat};

const BIG: &str = "bench-restart-big";
const WIDE: &str = "bench-restart-wide";

#[derive(Debug, Serialize)]
pub struct Row {
    phase: &'static str,
    /// From the process's start until the full partition took a produce.
    big_partition_writable_ms: f64,
    /// Until the first of the many small partitions took one.
    first_partition_writable_ms: f64,
    /// Until every partition had.
    all_partitions_writable_ms: f64,
}

pub struct Setup {
    pub total_bytes: u64,
    pub segment_bytes: u64,
    pub partitions: i32,
    pub record_bytes: usize,
    pub batch_records: usize,
    /// Where `sluice dev` keeps the cluster (default: a temporary directory).
    pub dir: Option<std::path::PathBuf>,
}

fn batch(record_bytes: usize, records: usize) -> Bytes {
    let value = vec![0x5au8; record_bytes];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut b = RecordBatchBuilder::with_capacity(records * (record_bytes + 16));
    for _ in 0..records {
        b.append(now_ms, None, Some(&value), &[]);
    }
    b.build()
}

fn produce_request(topic: &str, partition: i32, batch: &Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Some(1),
        timeout_ms: 30_000,
        payload: Some(produce_request::Payload::RecordBatch(batch.clone())),
        ..Default::default()
    }
}

/// Milliseconds since process `pid` started (from its start time in /proc and the uptime
/// clock, both counted from boot at the kernel's tick resolution, 10 ms).
fn process_age_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state, field 3;
    // starttime is field 22.
    let after = stat.rsplit_once(')').context("/proc stat format")?.1;
    let ticks: f64 = after
        .split_whitespace()
        .nth(19)
        .context("/proc stat has no starttime")?
        .parse()?;
    // USER_HZ: /proc counts in 1/100 s on every Linux (part of the kernel's ABI).
    let hz = 100.0;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .context("/proc/uptime format")?
        .parse()?;
    Ok((uptime - ticks / hz) * 1e3)
}

/// Waits for `sluice dev` to have restarted its broker: a broker pid other than `old`.
async fn restarted_broker(dir: &Path, old: u32) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (brokers, _) = pids(dir).await?;
        if let Some(&p) = brokers.iter().find(|&&p| p != old) {
            if std::path::Path::new(&format!("/proc/{p}")).exists() {
                return Ok(p);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the broker was not restarted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client of the broker at `addr` once it listens again (before `deadline`).
async fn reconnect(
    addr: &str,
    deadline: Instant,
) -> anyhow::Result<BrokerClient<tonic::transport::Channel>> {
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(200))
            .connect()
            .await
        {
            Ok(c) => return Ok(BrokerClient::new(c)),
            Err(_) => {
                anyhow::ensure!(Instant::now() < deadline, "the broker did not listen again");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Produces to every partition until each has taken one batch; the process age of `pid`
/// when the big partition, the first wide one and the last wide one did. The big partition
/// is probed on its own, beside the wide ones: a produce to a replica that is still opening
/// waits for it (up to the leadership take-up wait), and must not hold back the others.
async fn time_until_writable(
    addr: &str,
    pid: u32,
    wide: i32,
    probe: &Bytes,
) -> anyhow::Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let big = async {
        loop {
            let mut client = reconnect(addr, deadline).await?;
            if client.produce(produce_request(BIG, 0, probe)).await.is_ok() {
                return process_age_ms(pid);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the big partition still refuses produce after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let wide = async {
        let mut first = None;
        let mut waiting: HashSet<i32> = (0..wide).collect();
        loop {
            let client = reconnect(addr, deadline).await?;
            let mut tries = tokio::task::JoinSet::new();
            for &p in waiting.iter().take(256) {
                let mut c = client.clone();
                let req = produce_request(WIDE, p, probe);
                tries.spawn(async move { (p, c.produce(req).await.is_ok()) });
            }
            while let Some(r) = tries.join_next().await {
                let (p, ok) = r?;
                if ok {
                    waiting.remove(&p);
                    if first.is_none() {
                        first = Some(process_age_ms(pid)?);
                    }
                }
            }
            if let (Some(f), true) = (first, waiting.is_empty()) {
                return Ok((f, process_age_ms(pid)?));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} partitions still refuse produce after 120 s",
                waiting.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (b, (f, last)) = tokio::try_join!(big, wide)?;
    Ok((b, f, last.max(b)))
}

pub fn run(setup: &Setup) -> anyhow::Result<Vec<Row>> {
    // The recovery point follows a roll at once here, as it has 30 s after a roll on a
    // broker that has run a while.
    let (dev, dir, bootstrap) = start_dev(
        &[("SLUICE_ROLL_FLUSH_DELAY_MS", "0")],
        1,
        1,
        None,
        setup.dir.clone(),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(async {
        let admin = admin_when_up(&bootstrap, 1).await?;
        admin
            .create_topic(
                BIG,
                1,
                1,
                vec![("segment.bytes".into(), setup.segment_bytes.to_string())],
            )
            .await?;
        admin
            .create_topic(WIDE, setup.partitions, 1, vec![])
            .await?;
        let addr = bootstrap
            .split(',')
            .next()
            .context("no broker")?
            .to_string();
        let mut client = BrokerClient::new(super::data::data_channel(&addr).await?)
            .max_encoding_message_size(sluice_proto::transport::MESSAGE_BYTES_MAX);
        let probe = batch(100, 1);
        // Every partition has its leader before the fill starts.
        let (brokers, _) = pids(&dir).await?;
        time_until_writable(&addr, brokers[0], setup.partitions, &probe)
            .await
            .context("the topics never became writable")?;
        let big = batch(setup.record_bytes, setup.batch_records);
        let batches = setup.total_bytes.div_ceil(big.len() as u64);
        let pb = progress(batches * big.len() as u64, "filling one partition");
        for _ in 0..batches {
            client
                .produce(produce_request(BIG, 0, &big))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            pb.inc(big.len() as u64);
        }
        pb.finish_and_clear();
        // The recovery point of the full partition reaches its active segment (the
        // rolled segments are fsynced), as on a broker that has run a while.
        let broker_dir = dir.join("cluster").join("broker-1");
        let part_dir = find_partition_dir(&broker_dir, BIG)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let active = active_base(&part_dir)?;
            let point = std::fs::read_to_string(part_dir.join("recovery-point-offset-checkpoint"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if point >= active {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "recovery point {point} never reached the active segment {active}"
            );
            // The partition moves its recovery point when it next appends (or at its next
            // retention check) after the background fsync of a rolled segment finished.
            client
                .produce(produce_request(BIG, 0, &probe))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut rows = Vec::new();
        let mut pid = brokers[0];
        use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
        for (phase, signal, forget_recovery_point) in [
            ("broker kill -9", SIGKILL, false),
            // What a broker without a recovery point pays: every segment scanned.
            ("broker kill -9, no recovery point", SIGKILL, true),
            ("broker clean stop", SIGTERM, false),
        ] {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
            if forget_recovery_point {
                // Gone before the supervisor restarts the broker (1 s after the kill).
                let _ = std::fs::remove_file(part_dir.join("recovery-point-offset-checkpoint"));
            }
            pid = restarted_broker(&dir, pid).await?;
            let (big_ms, first_ms, all_ms) =
                time_until_writable(&addr, pid, setup.partitions, &probe).await?;
            rows.push(Row {
                phase,
                big_partition_writable_ms: big_ms,
                first_partition_writable_ms: first_ms,
                all_partitions_writable_ms: all_ms,
            });
        }
        anyhow::Ok(rows)
    });
    drop(dev);
    rows
}

/// `<broker dir>/<topic>-0-<topic id>`.
fn find_partition_dir(broker_dir: &Path, topic: &str) -> anyhow::Result<std::path::PathBuf> {
    let prefix = format!("{topic}-0-");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for dir in [broker_dir.to_path_buf(), broker_dir.join("data")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        return Ok(e.path());
                    }
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {prefix}* directory in {}",
            broker_dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Base offset of the newest segment (the largest `<base>.log`).
fn active_base(part_dir: &Path) -> anyhow::Result<i64> {
    Ok(std::fs::read_dir(part_dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        })
        .max()
        .unwrap_or(0))
}

pub fn print(rows: &[Row], setup: &Setup, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "recovery", "broker": true, "total_bytes": setup.total_bytes,
                "segment_bytes": setup.segment_bytes, "partitions": setup.partitions + 1,
                "phases": rows,
            }))?
        ),
        OutputFormat::Table => {
            println!(
                "one broker: a {} MiB partition ({} MiB segments) and {} one-batch partitions; ms from the new process's start",
                setup.total_bytes >> 20,
                setup.segment_bytes >> 20,
                setup.partitions
            );
            let t = rows
                .iter()
                .map(|r| {
                    vec![
                        r.phase.to_string(),
                        format!("{:.0}", r.big_partition_writable_ms),
                        format!("{:.0}", r.first_partition_writable_ms),
                        format!("{:.0}", r.all_partitions_writable_ms),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "PHASE",
                        "FULL PARTITION WRITABLE MS",
                        "FIRST PARTITION MS",
                        "ALL PARTITIONS MS"
                    ],
                    t
                )
            );
        }
    }
    Ok(())
}
