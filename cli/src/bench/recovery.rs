//! `sluice bench recovery`: how long a partition log takes to open again after a crash
//! (kill -9: no clean-shutdown marker) and after a clean stop, and to take its first
//! append. Writes `--total-bytes` of 1 KiB-record batches through the storage engine (in
//! this process, no cluster), as a broker's log would hold them, then reopens it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use sluice_storage::{LeaderEpoch, Log, LogConfig, RecordBatchBuilder};

use super::storage::bench_dir;
use super::{progress, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct RecoveryBenchArgs {
    /// Bytes of record batches in the log.
    #[arg(long, default_value_t = 2_469_606_195)]
    total_bytes: u64,
    /// `segment.bytes` of the log (Kafka's default, 1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// Size of one record value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Directory for the log (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Restart a whole broker instead (`sluice dev`, one controller, one broker): the
    /// `--total-bytes` partition plus `--partitions` one-batch partitions, killed -9 then
    /// stopped cleanly, timed until each partition takes a produce again.
    #[arg(long)]
    broker: bool,
    /// `--broker`: how many small partitions besides the full one.
    #[arg(long, default_value_t = 1000)]
    partitions: i32,
    #[command(flatten)]
    out: BenchOutput,
}

#[derive(Debug, Serialize)]
struct Row {
    phase: &'static str,
    open_ms: f64,
    first_append_ms: f64,
    segments: usize,
    segments_scanned: usize,
    recovery_point: i64,
    log_end_offset: i64,
}

pub fn run(args: RecoveryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.record_bytes > 0 && args.batch_records > 0,
        "empty batches"
    );
    if args.broker {
        anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
        let setup = super::restart::Setup {
            total_bytes: args.total_bytes,
            segment_bytes: args.segment_bytes,
            partitions: args.partitions,
            record_bytes: args.record_bytes,
            batch_records: args.batch_records,
            dir: args.dir.clone(),
        };
        let rows = super::restart::run(&setup)?;
        return super::restart::print(&rows, &setup, args.out.output);
    }
    let (dir, _tmp) = bench_dir(args.dir.as_ref())?;
    let log_dir = dir.join("bench-recovery-0");
    let _ = std::fs::remove_dir_all(&log_dir);
    let config = LogConfig {
        retention_ms: -1,
        segment_bytes: args.segment_bytes,
        ..LogConfig::default()
    };
    let value = vec![0x5au8; args.record_bytes];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut b = RecordBatchBuilder::with_capacity(args.batch_records * (args.record_bytes + 16));
    for _ in 0..args.batch_records {
        b.append(now_ms, None, Some(&value), &[]);
    }
    let batch: Bytes = b.build();
    let batches = args.total_bytes.div_ceil(batch.len() as u64);

    // A broker waits 30 s after a roll before its background fsync; here it need not.
    sluice_storage::set_roll_flush_delay(Duration::ZERO);
    let mut log = Log::open(&log_dir, config.clone())?;
    let pb = progress(batches * batch.len() as u64, "writing the log");
    for _ in 0..batches {
        log.append_as_leader(batch.clone(), LeaderEpoch(0))?;
        pb.inc(batch.len() as u64);
    }
    pb.finish_and_clear();
    // A broker's owner calls this on a timer: the background fsyncs of rolled segments
    // move the recovery point. Wait (bounded) for them as a broker running a while would.
    let deadline = Instant::now() + Duration::from_secs(120);
    while log.recovery_point().get() < log.active_base_offset() && Instant::now() < deadline {
        log.maybe_flush()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rows = Vec::new();
    // kill -9: the process is gone, the page cache and files stay; no marker written.
    drop(log);
    rows.push(reopen("unclean (kill -9)", &log_dir, &config, &batch)?);
    // What a log without a recovery point pays (the engine before #19 moved it on rolls,
    // or a lost checkpoint): every segment scanned.
    let _ = std::fs::remove_file(log_dir.join("recovery-point-offset-checkpoint"));
    rows.push(reopen(
        "unclean, no recovery point",
        &log_dir,
        &config,
        &batch,
    )?);
    let log = Log::open(&log_dir, config.clone())?;
    log.close()?;
    rows.push(reopen("clean stop", &log_dir, &config, &batch)?);
    let _ = std::fs::remove_dir_all(&log_dir);

    match args.out.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "recovery", "total_bytes": batches * batch.len() as u64,
                "segment_bytes": args.segment_bytes, "batch_bytes": batch.len(), "phases": rows,
            }))?
        ),
        OutputFormat::Table => {
            println!(
                "a {} MiB log ({} MiB segments, {}-byte batches)",
                (batches * batch.len() as u64) >> 20,
                args.segment_bytes >> 20,
                batch.len()
            );
            let t = rows
                .iter()
                .map(|r| {
                    vec![
                        r.phase.to_string(),
                        format!("{:.1}", r.open_ms),
                        format!("{:.2}", r.first_append_ms),
                        r.segments.to_string(),
                        r.segments_scanned.to_string(),
                        r.recovery_point.to_string(),
                        r.log_end_offset.to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "PHASE",
                        "OPEN MS",
                        "FIRST APPEND MS",
                        "SEGMENTS",
                        "SCANNED",
                        "RECOVERY POINT",
                        "LOG END"
                    ],
                    t
                )
            );
        }
    }
    Ok(())
}

fn reopen(
    phase: &'static str,
    dir: &PathBuf,
    config: &LogConfig,
    batch: &Bytes,
) -> anyhow::Result<Row> {
    let t = Instant::now();
    let mut log = Log::open(dir, config.clone()).context("reopening the log")?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let report = log.recovery_report().clone();
    let (recovery_point, log_end_offset) = (log.recovery_point().get(), log.log_end_offset().get());
    let segments = log.segment_count();
    let t = Instant::now();
    log.append_as_leader(batch.clone(), LeaderEpoch(0))?;
    let first_append_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(log);
    Ok(Row {
        phase,
        open_ms,
        first_append_ms,
        segments,
        segments_scanned: report.segments_scanned,
        recovery_point,
        log_end_offset,
    })
}
