//! `sluice bench …`: benchmarks with a progress bar, a results table and `--output json`.

mod data;
mod failover;
mod idle;
mod image;
mod kafka;
mod metadata;
mod recovery;
mod restart;
mod storage;

use clap::Subcommand;

use crate::output::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append and read back through the storage engine vs. plain sequential file I/O.
    Storage(storage::StorageBenchArgs),
    /// Metadata quorum: topic creations/s and leader failover time.
    Metadata(metadata::MetadataBenchArgs),
    /// Produce throughput and ack latency against a running cluster (then reads it back).
    Produce(data::DataBenchArgs),
    /// Consume throughput against a running cluster.
    Consume(data::DataBenchArgs),
    /// What idle partitions cost each broker (CPU, RSS, fds, threads) and the acks=all
    /// latency of a busy topic beside them, on a `sluice dev` cluster it starts.
    Idle(idle::IdleBenchArgs),
    /// Time until every partition a stopped broker led is writable again (SIGKILL and
    /// SIGTERM), on a `sluice dev` cluster with many partitions it starts.
    Failover(failover::FailoverBenchArgs),
    /// How long a partition log takes to open again after kill -9 and after a clean stop
    /// (in process, no cluster).
    Recovery(recovery::RecoveryBenchArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::Metadata(args) => metadata::run(args),
        BenchCommand::Produce(args) => data::run_produce(args, true),
        BenchCommand::Consume(args) => data::run_consume(args),
        BenchCommand::Idle(args) => idle::run(args),
        BenchCommand::Failover(args) => failover::run(args),
        BenchCommand::Recovery(args) => recovery::run(args),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal (CI, pipes).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let pb = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>16} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A counting progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_count(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let pb = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>16} [{bar:40}] {pos}/{len} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Output format flag for benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOutput {
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}
