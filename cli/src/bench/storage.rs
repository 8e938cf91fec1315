//! `sluice bench storage`: append N bytes of records through the partition log and read them
//! back, and in the same run write and read the same bytes with plain sequential file I/O as
//! the baseline. Reports MB/s, records/s and the ratio to the baseline.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use sluice_storage::{Log, LogConfig, RecordBatchBuilder};

use super::{progress, BenchOutput};
use crate::output::{table, OutputFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct StorageBenchArgs {
    /// Total bytes of record batches to append (and read back).
    #[arg(long, default_value_t = 1 << 30)]
    total_bytes: u64,
    /// Size of one record value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Target size of one record batch.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// Bytes asked for per read (a consumer fetch's max_bytes).
    #[arg(long, default_value_t = 1 << 20)]
    read_bytes: usize,
    /// fsync after every append (single-node durability mode) in both runs.
    #[arg(long)]
    fsync: bool,
    /// Directory for the files (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    out: BenchOutput,
}

#[derive(Debug, Serialize)]
struct Phase {
    phase: &'static str,
    subject: &'static str,
    bytes: u64,
    records: u64,
    seconds: f64,
    mb_per_s: f64,
    records_per_s: f64,
    ratio_to_baseline: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    total_bytes: u64,
    record_bytes: usize,
    batch_bytes: usize,
    records_per_batch: usize,
    fsync: bool,
    phases: Vec<Phase>,
}

fn phase(
    phase: &'static str,
    subject: &'static str,
    bytes: u64,
    records: u64,
    d: Duration,
) -> Phase {
    let s = d.as_secs_f64().max(1e-9);
    Phase {
        phase,
        subject,
        bytes,
        records,
        seconds: s,
        mb_per_s: bytes as f64 / s / 1e6,
        records_per_s: records as f64 / s,
        ratio_to_baseline: None,
    }
}

pub fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_bytes > 0, "--record-bytes must be positive");
    anyhow::ensure!(
        args.batch_bytes >= args.record_bytes,
        "--batch-bytes must hold one record"
    );
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile_dir()?;
            tmp.0.clone()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // One encoded batch, appended over and over: the log rewrites only its base offset and
    // epoch (outside the CRC), exactly as for producer input.
    let per_batch = (args.batch_bytes / (args.record_bytes + 20)).max(1);
    let value = vec![0x5au8; args.record_bytes];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut b = RecordBatchBuilder::with_capacity(args.batch_bytes + 256);
    for _ in 0..per_batch {
        b.append(now_ms, None, Some(&value), &[]);
    }
    let batch: Bytes = b.build();
    let batches = args.total_bytes.div_ceil(batch.len() as u64);
    let total = batches * batch.len() as u64;
    let records = batches * per_batch as u64;
    let mut phases = Vec::new();

    // Baseline write: the same bytes, sequentially, to one file.
    let base_path = dir.join("baseline.dat");
    let pb = progress(total, "baseline write");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&base_path)?;
        for _ in 0..batches {
            f.write_all(&batch)?;
            if args.fsync {
                f.sync_data()?;
            }
            pb.inc(batch.len() as u64);
        }
        phases.push(phase("append", "plain file", total, records, t.elapsed()));
        // Untimed: write the dirty pages back so the next phase starts from a clean cache.
        f.sync_all()?;
    }
    pb.finish_and_clear();

    // Baseline read: sequential reads of `read_bytes` into fresh buffers.
    let pb = progress(total, "baseline read");
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&base_path)?;
        let mut done = 0u64;
        loop {
            let mut buf = BytesMut::zeroed(args.read_bytes);
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            std::hint::black_box(buf.freeze());
            done += n as u64;
            pb.inc(n as u64);
        }
        anyhow::ensure!(done == total, "baseline read {done} of {total} bytes");
    }
    phases.push(phase("read", "plain file", total, records, t.elapsed()));
    pb.finish_and_clear();

    // Drop the baseline's pages before the engine runs, so both start from the same
    // page-cache state (dirty-page writeback would otherwise penalise whoever runs second).
    let _ = std::fs::remove_file(&base_path);

    // Storage engine append.
    let log_dir = dir.join("bench-0");
    let _ = std::fs::remove_dir_all(&log_dir);
    let mut config = LogConfig {
        retention_ms: -1,
        ..LogConfig::default()
    };
    if args.fsync {
        config = config.fsync_every_append();
    }
    let mut log = Log::open(&log_dir, config)?;
    let pb = progress(total, "log append");
    let t = Instant::now();
    for _ in 0..batches {
        log.append_as_leader(batch.clone(), sluice_storage::LeaderEpoch(0))?;
        pb.inc(batch.len() as u64);
    }
    phases.push(phase("append", "sluice log", total, records, t.elapsed()));
    log.flush()?; // untimed, as for the baseline
    pb.finish_and_clear();

    // Storage engine read: fetch-style reads of whole batches up to `read_bytes`.
    let pb = progress(total, "log read");
    let t = Instant::now();
    let end = log.log_end_offset();
    let mut offset = 0i64;
    let mut done = 0u64;
    while end > offset {
        let bytes = log.read(sluice_storage::Offset(offset), args.read_bytes, end)?;
        anyhow::ensure!(!bytes.is_empty(), "empty read at offset {offset}");
        let last = sluice_storage::batch::headers(&bytes)
            .last()
            .context("read returned no whole batch")?;
        offset = last.next_offset();
        done += bytes.len() as u64;
        pb.inc(bytes.len() as u64);
    }
    anyhow::ensure!(done == total, "log read {done} of {total} bytes");
    phases.push(phase("read", "sluice log", total, records, t.elapsed()));
    pb.finish_and_clear();
    log.close()?;

    for i in 0..phases.len() {
        if phases[i].subject == "sluice log" {
            let base = phases
                .iter()
                .find(|p| p.phase == phases[i].phase && p.subject == "plain file")
                .map(|p| p.mb_per_s);
            phases[i].ratio_to_baseline = base.map(|b| phases[i].mb_per_s / b);
        }
    }
    let _ = std::fs::remove_file(&base_path);
    let _ = std::fs::remove_dir_all(&log_dir);

    let report = Report {
        benchmark: "storage",
        total_bytes: total,
        record_bytes: args.record_bytes,
        batch_bytes: batch.len(),
        records_per_batch: per_batch,
        fsync: args.fsync,
        phases,
    };
    match args.out.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => {
            let rows = report
                .phases
                .iter()
                .map(|p| {
                    vec![
                        p.phase.to_string(),
                        p.subject.to_string(),
                        format!("{:.1}", p.mb_per_s),
                        format!("{:.0}", p.records_per_s),
                        format!("{:.3}", p.seconds),
                        p.ratio_to_baseline
                            .map_or("-".to_string(), |r| format!("{r:.2}")),
                    ]
                })
                .collect();
            println!(
                "{} MiB of {}-byte records in {}-byte batches ({} records/batch){}",
                total >> 20,
                args.record_bytes,
                batch.len(),
                per_batch,
                if args.fsync { ", fsync per append" } else { "" }
            );
            println!(
                "{}",
                table(
                    &["PHASE", "SUBJECT", "MB/S", "RECORDS/S", "SECONDS", "RATIO"],
                    rows
                )
            );
        }
    }
    Ok(())
}

/// A temporary directory removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn tempfile_dir() -> anyhow::Result<TempDir> {
    let base = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(TempDir(base))
}
