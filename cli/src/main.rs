//! `sluice`: one binary for every role (controller, broker, dev cluster) and every user
//! command (topics, produce, consume, groups, status, benchmarks). The command line is a
//! contract (DESIGN.md §11): scripts outside this repository rely on its commands, flags and
//! JSON fields.

mod bench;
mod output;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use output::OutputFormat;

/// Sluice: a Kafka-style distributed commit log with a Raft metadata quorum.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every command that talks to a cluster.
#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Comma-separated HOST:PORT list of any brokers or controllers to start from.
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster (controllers + brokers) as child processes.
    Dev {
        /// Number of controllers (Raft voters).
        #[arg(long, default_value_t = 3)]
        controllers: u16,
        /// Number of brokers.
        #[arg(long, default_value_t = 3)]
        brokers: u16,
        /// Data directory for every node.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Brokers listen on B, B+1, ...; controllers on B+100, ...; metrics on B+200, ...
        #[arg(long, default_value_t = 9092)]
        base_port: u16,
    },
    /// Run one controller node.
    Controller(NodeArgs),
    /// Run one broker node.
    Broker(NodeArgs),
    /// Create, list, describe, delete topics and change their configs.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per stdin line.
    Produce {
        /// Topic to write to.
        topic: String,
        /// 0, 1 or all.
        #[arg(long, default_value = "all")]
        acks: String,
        /// Split each line into key and value at the first occurrence of this string.
        #[arg(long)]
        key_separator: Option<String>,
        /// Write every record to this partition.
        #[arg(long)]
        partition: Option<i32>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Consume records and print them.
    Consume {
        /// Topic to read.
        topic: String,
        /// Consumer group (commits offsets).
        #[arg(long)]
        group: Option<String>,
        /// Start at the earliest offset when there is no committed one.
        #[arg(long)]
        from_beginning: bool,
        /// Read only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Start offset (with --partition).
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
        /// Stop after this many records.
        #[arg(long)]
        max_records: Option<u64>,
        /// Stop when no record arrives for this long.
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Cluster health.
    #[command(subcommand)]
    Cluster(StatusCommand),
    /// Metadata quorum status.
    #[command(subcommand)]
    Quorum(StatusCommand),
    /// (dev clusters) SIGKILL the broker leading a partition, to watch failover.
    KillLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Fault injection against a dev cluster under load, with a scorecard.
    Chaos {
        /// Scenario name.
        #[arg(long)]
        scenario: String,
        /// How long to run.
        #[arg(long, default_value = "60s")]
        duration: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Benchmarks with progress, a results table and `--output json`.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(short = 'p', long)]
        partitions: Option<i32>,
        #[arg(short = 'r', long)]
        replicas: Option<i32>,
        /// key=value topic config, repeatable.
        #[arg(short = 'c', long = "config")]
        configs: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Describe a topic: partitions, leaders, ISR, epochs, configs.
    Describe {
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Delete a topic.
    Delete {
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Change topic configs.
    AlterConfig {
        name: String,
        #[arg(short = 'c', long = "config", required = true)]
        configs: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Describe a group with LAG per partition.
    Describe {
        group: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Reset a group's committed offsets.
    ResetOffsets {
        group: String,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum StatusCommand {
    /// Show status.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration and where each value came from.
    Print {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

/// A command whose implementation lands with a later issue: say so and fail, never pretend.
fn not_yet(what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`sluice {what}` is not yet available in this build")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Dev { .. } => not_yet("dev"),
        Command::Controller(_) => not_yet("controller"),
        Command::Broker(_) => not_yet("broker"),
        Command::Topic(_) => not_yet("topic"),
        Command::Produce { .. } => not_yet("produce"),
        Command::Consume { .. } => not_yet("consume"),
        Command::Group(_) => not_yet("group"),
        Command::Cluster(_) => not_yet("cluster status"),
        Command::Quorum(_) => not_yet("quorum status"),
        Command::KillLeader { .. } => not_yet("kill-leader"),
        Command::Chaos { .. } => not_yet("chaos"),
        Command::Config(_) => not_yet("config print"),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
