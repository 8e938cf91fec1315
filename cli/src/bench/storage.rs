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
    /// Rounds, each writing and reading the plain file and then the engine (A B A B …);
    /// the table shows the median round with min and max.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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
    /// The median round's MB/s (rounds alternate plain file and engine).
    mb_per_s: f64,
    mb_per_s_min: f64,
    mb_per_s_max: f64,
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
    rounds: usize,
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
        mb_per_s_min: bytes as f64 / s / 1e6,
        mb_per_s_max: bytes as f64 / s / 1e6,
        records_per_s: records as f64 / s,
        ratio_to_baseline: None,
    }
}

pub fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_bytes > 0, "--record-bytes must be positive");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        args.batch_bytes >= args.record_bytes,
        "--batch-bytes must hold one record"
    );
    let (dir, _tmp) = bench_dir(args.dir.as_ref())?;
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
    let mut samples: Vec<Phase> = Vec::new();
    for round in 0..args.rounds {
        let pb_label = |what: &str| format!("{what} {}/{}", round + 1, args.rounds);
        // A: plain file. Timed up to its fdatasync, so neither side leaves dirty pages for
        // the other to pay for (that made one run's ratio swing 0.55-1.44).
        let base_path = dir.join("baseline.dat");
        let pb = progress(total, &pb_label("plain write"));
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
            f.sync_data()?;
        }
        samples.push(phase("append", "plain file", total, records, t.elapsed()));
        pb.finish_and_clear();
        let pb = progress(total, &pb_label("plain read"));
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
        samples.push(phase("read", "plain file", total, records, t.elapsed()));
        pb.finish_and_clear();
        let _ = std::fs::remove_file(&base_path);

        // B: the storage engine, the same bytes, timed up to its flush (fdatasync).
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
        let pb = progress(total, &pb_label("log append"));
        let t = Instant::now();
        for _ in 0..batches {
            log.append_as_leader(batch.clone(), sluice_storage::LeaderEpoch(0))?;
            pb.inc(batch.len() as u64);
        }
        log.flush()?;
        samples.push(phase("append", "sluice log", total, records, t.elapsed()));
        pb.finish_and_clear();
        // Fetch-style reads of whole batches up to `read_bytes`.
        let pb = progress(total, &pb_label("log read"));
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
        samples.push(phase("read", "sluice log", total, records, t.elapsed()));
        pb.finish_and_clear();
        log.close()?;
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    // Per phase and subject: the median round, with the min and max MB/s beside it.
    let mut phases: Vec<Phase> = Vec::new();
    for (ph, subject) in [
        ("append", "plain file"),
        ("append", "sluice log"),
        ("read", "plain file"),
        ("read", "sluice log"),
    ] {
        let mut runs: Vec<&Phase> = samples
            .iter()
            .filter(|p| p.phase == ph && p.subject == subject)
            .collect();
        runs.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
        let median = runs[runs.len() / 2];
        phases.push(Phase {
            mb_per_s_min: runs[0].mb_per_s,
            mb_per_s_max: runs[runs.len() - 1].mb_per_s,
            ..phase(
                median.phase,
                median.subject,
                median.bytes,
                median.records,
                Duration::from_secs_f64(median.seconds),
            )
        });
    }
    for i in 0..phases.len() {
        if phases[i].subject == "sluice log" {
            let base = phases
                .iter()
                .find(|p| p.phase == phases[i].phase && p.subject == "plain file")
                .map(|p| p.mb_per_s);
            phases[i].ratio_to_baseline = base.map(|b| phases[i].mb_per_s / b);
        }
    }

    let report = Report {
        benchmark: "storage",
        total_bytes: total,
        record_bytes: args.record_bytes,
        batch_bytes: batch.len(),
        records_per_batch: per_batch,
        fsync: args.fsync,
        rounds: args.rounds,
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
                        format!("{:.1}-{:.1}", p.mb_per_s_min, p.mb_per_s_max),
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
                    &[
                        "PHASE",
                        "SUBJECT",
                        "MB/S",
                        "MIN-MAX",
                        "RECORDS/S",
                        "SECONDS",
                        "RATIO"
                    ],
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

/// `dir`, or a fresh temporary directory and the guard that removes it.
pub(super) fn bench_dir(dir: Option<&PathBuf>) -> anyhow::Result<(PathBuf, Option<TempDir>)> {
    Ok(match dir {
        Some(d) => (d.clone(), None),
        None => {
            let tmp = tempfile_dir()?;
            (tmp.0.clone(), Some(tmp))
        }
    })
}

pub(super) fn tempfile_dir() -> anyhow::Result<TempDir> {
    let base = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(TempDir(base))
}
