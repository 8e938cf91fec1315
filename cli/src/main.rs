//! `sluice`: one binary for every role (controller, broker, dev cluster) and every user
//! command (topics, produce, consume, groups, status, benchmarks). The command line is a
//! contract (DESIGN.md §11): scripts outside this repository rely on its commands, flags and
//! JSON fields.

mod bench;
mod cmd;
mod command_config;
mod config;
mod output;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use output::OutputFormat;

/// Sluice: a Kafka-style distributed commit log with a Raft metadata quorum.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// Log lines on stderr as `text` or `json` (one object per line); filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SLUICE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// A properties file with how to reach a secured cluster (librdkafka / Java client keys:
    /// `security.protocol=SSL`, `ssl.ca.location`, `ssl.certificate.location`,
    /// `ssl.key.location`), as Kafka's tools take it.
    #[arg(long, global = true, env = "SLUICE_COMMAND_CONFIG")]
    command_config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// Also show every node's log live on stdout, each line prefixed with the node
        /// (`broker-1 | ...`), as `docker compose up` does; the log files are kept too.
        #[arg(long)]
        logs: bool,
        /// TLS everywhere with node certificates, SASL (SCRAM and PLAIN) and ACLs (default
        /// deny): a throwaway CA and certificates in `<dir>/tls/`, a super-user `admin`, and
        /// `<dir>/admin.properties` (librdkafka / Java-client keys) for `kcat -F` and
        /// `sluice --command-config`.
        #[arg(long)]
        secure: bool,
        /// `table` for people, `json` for scripts.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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
        /// A header `KEY=VALUE` on every record (repeatable; order and duplicates kept;
        /// `KEY` alone gives a header without a value).
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Compress each batch: none, gzip, snappy, lz4 or zstd (Kafka's `compression.type`).
        #[arg(long, default_value = "none")]
        compression_type: String,
        #[command(flatten)]
        lines: cmd::data::LineFormat,
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
        /// Print each record with this format instead of the table or JSON (kcat's `-f`):
        /// %t topic, %p partition, %o offset, %k key, %s value, %T timestamp (ms),
        /// %h headers (`k=v,k2=v2`), %% a percent sign; \n, \t escapes.
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Cluster health.
    #[command(subcommand)]
    Cluster(StatusCommand),
    /// The metadata quorum: status, and online voter changes (KIP-853 style).
    #[command(subcommand)]
    Quorum(QuorumCommand),
    /// SCRAM users (SASL on the Kafka port, Basic credentials on gRPC).
    #[command(subcommand)]
    User(UserCommand),
    /// ACLs (Kafka's model and kafka-acls' flags), enforced with authorizer.class.name.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Client quotas: produce/fetch byte rates and request time, per user and client id.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Why each unhealthy partition is unhealthy, and what a forced election would lose.
    Doctor {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Preferred or unclean leader elections (Kafka's kafka-leader-election).
    LeaderElection {
        #[command(flatten)]
        election: cmd::election::ElectionArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// (dev clusters) SIGKILL the broker leading a partition, to watch failover.
    KillLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The dev cluster's directory (default: the one `sluice dev` uses for this port).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
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
        /// Time between faults.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// How long `pause-leader` keeps a leader stopped.
        #[arg(long, default_value = "5s")]
        pause: String,
        /// The dev cluster's directory (default: the one `sluice dev` uses for this port).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
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

/// Flags of a node role. Every config key can also be given as `--override key=value`
/// (Kafka's spelling) or as `SLUICE_KEY_NAME` in the environment.
#[derive(Debug, Args)]
struct NodeArgs {
    /// TOML configuration file (Kafka key names, e.g. `node.id = 1`).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// `node.id`.
    #[arg(long)]
    node_id: Option<String>,
    /// `listeners`: host:port to serve on.
    #[arg(long)]
    listeners: Option<String>,
    /// `controller.quorum.voters`: id@host:port,...
    #[arg(long)]
    controller_quorum_voters: Option<String>,
    /// `log.dirs`: data directory.
    #[arg(long)]
    log_dirs: Option<String>,
    /// `metadata.log.dir`: the controller's Raft directory.
    #[arg(long)]
    metadata_log_dir: Option<String>,
    /// Any config key as key=value (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl NodeArgs {
    fn load(&self, role: &str) -> anyhow::Result<config::NodeConfig> {
        let mut flags = vec![("process.roles".to_string(), role.to_string())];
        for (key, v) in [
            ("node.id", &self.node_id),
            ("listeners", &self.listeners),
            ("controller.quorum.voters", &self.controller_quorum_voters),
            ("log.dirs", &self.log_dirs),
            ("metadata.log.dir", &self.metadata_log_dir),
        ] {
            if let Some(v) = v {
                flags.push((key.to_string(), v.clone()));
            }
        }
        for o in &self.overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--override {o:?} must be key=value"))?;
            flags.push((k.trim().to_string(), v.trim().to_string()));
        }
        config::NodeConfig::load(self.config.as_deref(), &flags)
    }
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
    /// Add partitions (Kafka's CreatePartitions): new ones follow the (i + j) mod n placement;
    /// existing data does not move.
    Alter {
        name: String,
        /// The new partition count (larger than the current one).
        #[arg(long)]
        partitions: i32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Change topic configs.
    AlterConfig {
        name: String,
        /// key=value to set, repeatable.
        #[arg(short = 'c', long = "config")]
        configs: Vec<String>,
        /// Key to reset to its default, repeatable.
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
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
        /// Only this topic (default: every partition the group has committed).
        #[arg(long)]
        topic: Option<String>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum StatusCommand {
    /// Show status.
    Status {
        /// Refresh every N milliseconds until Ctrl-C (`cluster status` only).
        #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "2000")]
        watch: Option<u64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user, or sets a new password for one mechanism of an existing user.
    Create {
        /// User name (principal `User:NAME`).
        name: String,
        /// Password (salted and hashed here; the cluster keeps only SCRAM keys).
        #[arg(long)]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Deletes a user (every credential, or only --mechanism's); its sessions end.
    Delete {
        /// User name.
        name: String,
        /// Only this mechanism's credential.
        #[arg(long)]
        mechanism: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Lists users and their credentials' mechanisms and iterations.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Adds ACLs: each principal × operation × resource named.
    Add {
        #[command(flatten)]
        acl: cmd::acl::AclArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Removes the ACLs of the resources named (only the principals / operations named, if
    /// any).
    Remove {
        #[command(flatten)]
        acl: cmd::acl::AclArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Lists ACLs (all, or those of the resources / --principal named).
    List {
        #[command(flatten)]
        acl: cmd::acl::AclArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Sets or removes quotas of a user, a client id, or both (named or the default).
    Set {
        #[command(flatten)]
        entity: cmd::quota::EntityArgs,
        #[command(flatten)]
        set: cmd::quota::SetArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Lists quotas (all, or those of the entity named).
    List {
        #[command(flatten)]
        entity: cmd::quota::EntityArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum QuorumCommand {
    /// Leader, term, voters (with directory ids) and observers, with replication lag.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Adds a running controller (normally an observer on a new directory) to the voters.
    AddController {
        /// Its node.id.
        #[arg(long)]
        controller_id: i32,
        /// host:port of its listener.
        #[arg(long)]
        address: String,
        /// Print the voter set before and after and whether a majority stays up; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Removes a voter (lost disk, retired node); leadership moves if it is the active one.
    RemoveController {
        /// Its node.id.
        #[arg(long)]
        controller_id: i32,
        /// Print the voter set before and after and whether a majority stays up; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration and where each value came from.
    Print {
        #[command(flatten)]
        node: NodeArgs,
        /// `table` for people, `json` for scripts.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Controller(args) => cmd::controller::run(args.load("controller")?),
        Command::Topic(t) => cmd::runtime()?.block_on(async move {
            match t {
                TopicCommand::Create {
                    name,
                    partitions,
                    replicas,
                    configs,
                    cluster,
                } => {
                    cmd::topic::create(
                        &cluster.bootstrap,
                        cluster.output,
                        &name,
                        partitions,
                        replicas,
                        &configs,
                    )
                    .await
                }
                TopicCommand::List { cluster } => {
                    cmd::topic::list(&cluster.bootstrap, cluster.output).await
                }
                TopicCommand::Describe { name, cluster } => {
                    cmd::topic::describe(&cluster.bootstrap, cluster.output, &name).await
                }
                TopicCommand::Delete { name, cluster } => {
                    cmd::topic::delete(&cluster.bootstrap, cluster.output, &name).await
                }
                TopicCommand::Alter {
                    name,
                    partitions,
                    cluster,
                } => {
                    cmd::topic::alter_partitions(
                        &cluster.bootstrap,
                        cluster.output,
                        &name,
                        partitions,
                    )
                    .await
                }
                TopicCommand::AlterConfig {
                    name,
                    configs,
                    delete_configs,
                    cluster,
                } => {
                    cmd::topic::alter_config(
                        &cluster.bootstrap,
                        cluster.output,
                        &name,
                        &configs,
                        &delete_configs,
                    )
                    .await
                }
            }
        }),
        Command::User(UserCommand::Create {
            name,
            password,
            mechanism,
            iterations,
            cluster,
        }) => cmd::runtime()?.block_on(cmd::user::create(
            &cluster.bootstrap,
            cluster.output,
            &name,
            &password,
            &mechanism,
            iterations,
        )),
        Command::User(UserCommand::Delete {
            name,
            mechanism,
            cluster,
        }) => cmd::runtime()?.block_on(cmd::user::delete(
            &cluster.bootstrap,
            cluster.output,
            &name,
            mechanism.as_deref(),
        )),
        Command::Acl(AclCommand::Add { acl, cluster }) => {
            cmd::runtime()?.block_on(cmd::acl::add(&cluster.bootstrap, cluster.output, &acl))
        }
        Command::Acl(AclCommand::Remove { acl, cluster }) => {
            cmd::runtime()?.block_on(cmd::acl::remove(&cluster.bootstrap, cluster.output, &acl))
        }
        Command::Quota(QuotaCommand::Set {
            entity,
            set,
            cluster,
        }) => cmd::runtime()?.block_on(cmd::quota::set(
            &cluster.bootstrap,
            cluster.output,
            &entity,
            &set,
        )),
        Command::Quota(QuotaCommand::List { entity, cluster }) => cmd::runtime()?.block_on(
            cmd::quota::list(&cluster.bootstrap, cluster.output, &entity),
        ),
        Command::Acl(AclCommand::List { acl, cluster }) => {
            cmd::runtime()?.block_on(cmd::acl::list(&cluster.bootstrap, cluster.output, &acl))
        }
        Command::User(UserCommand::List { cluster }) => {
            cmd::runtime()?.block_on(cmd::user::list(&cluster.bootstrap, cluster.output))
        }
        Command::Quorum(QuorumCommand::Status { cluster }) => {
            cmd::runtime()?.block_on(cmd::quorum::status(&cluster.bootstrap, cluster.output))
        }
        Command::Quorum(QuorumCommand::AddController {
            controller_id,
            address,
            dry_run,
            cluster,
        }) => cmd::runtime()?.block_on(cmd::quorum::change(
            &cluster.bootstrap,
            cluster.output,
            cmd::quorum::Change::Add {
                id: controller_id,
                address,
            },
            dry_run,
        )),
        Command::Quorum(QuorumCommand::RemoveController {
            controller_id,
            dry_run,
            cluster,
        }) => cmd::runtime()?.block_on(cmd::quorum::change(
            &cluster.bootstrap,
            cluster.output,
            cmd::quorum::Change::Remove { id: controller_id },
            dry_run,
        )),
        Command::Config(ConfigCommand::Print { node, output }) => {
            let cfg = node.load("")?;
            print_config(&cfg, output)
        }
        Command::Dev {
            controllers,
            brokers,
            dir,
            base_port,
            logs,
            secure,
            output,
        } => cmd::dev::run(controllers, brokers, dir, base_port, logs, secure, output),
        Command::Broker(args) => cmd::broker::run(args.load("broker")?),
        Command::Produce {
            topic,
            acks,
            key_separator,
            partition,
            headers,
            compression_type,
            lines,
            cluster,
        } => cmd::runtime()?.block_on(cmd::data::produce(
            &cluster.bootstrap,
            cluster.output,
            &topic,
            &acks,
            key_separator.as_deref(),
            partition,
            &headers,
            &compression_type,
            &lines,
        )),
        Command::Consume {
            topic,
            group,
            from_beginning,
            partition,
            offset,
            max_records,
            timeout_ms,
            format,
            cluster,
        } => cmd::runtime()?.block_on(cmd::data::consume(
            &cluster.bootstrap,
            cluster.output,
            format.as_deref(),
            &topic,
            group.as_deref(),
            from_beginning,
            partition,
            offset,
            max_records,
            timeout_ms,
        )),
        Command::Group(g) => {
            let rt = cmd::runtime()?;
            match g {
                GroupCommand::List { cluster } => {
                    rt.block_on(cmd::group::list(&cluster.bootstrap, cluster.output))
                }
                GroupCommand::Describe { group, cluster } => rt.block_on(cmd::group::describe(
                    &cluster.bootstrap,
                    cluster.output,
                    &group,
                )),
                GroupCommand::ResetOffsets {
                    group,
                    to_earliest,
                    to_latest,
                    to_offset,
                    topic,
                    dry_run,
                    cluster,
                } => {
                    let to = match (to_earliest, to_latest, to_offset) {
                        (true, _, _) => cmd::group::ResetTo::Earliest,
                        (_, true, _) => cmd::group::ResetTo::Latest,
                        (_, _, Some(o)) => cmd::group::ResetTo::Offset(o),
                        _ => anyhow::bail!(
                            "reset-offsets needs one of --to-earliest, --to-latest, --to-offset O"
                        ),
                    };
                    rt.block_on(cmd::group::reset_offsets(
                        &cluster.bootstrap,
                        cluster.output,
                        &group,
                        to,
                        topic.as_deref(),
                        dry_run,
                    ))
                }
            }
        }
        Command::Cluster(StatusCommand::Status { watch, cluster }) => {
            cmd::runtime()?.block_on(cmd::cluster::status(
                &cluster.bootstrap,
                cluster.output,
                watch.map(std::time::Duration::from_millis),
            ))
        }
        Command::Doctor { topic, cluster } => cmd::runtime()?.block_on(cmd::doctor::run(
            &cluster.bootstrap,
            cluster.output,
            topic.as_deref(),
        )),
        Command::LeaderElection { election, cluster } => cmd::runtime()?.block_on(
            cmd::election::run(&cluster.bootstrap, cluster.output, &election),
        ),
        Command::KillLeader {
            topic,
            partition,
            dir,
            cluster,
        } => cmd::dev::kill_leader(&cluster.bootstrap, dir, &topic, partition, cluster.output),
        Command::Chaos {
            scenario,
            duration,
            interval,
            pause,
            dir,
            cluster,
        } => {
            let o = cmd::chaos::Options {
                scenario,
                duration: cmd::chaos::parse_duration(&duration)?,
                interval: cmd::chaos::parse_duration(&interval)?,
                pause: cmd::chaos::parse_duration(&pause)?,
                dir,
            };
            cmd::runtime()?.block_on(cmd::chaos::run(&cluster.bootstrap, cluster.output, o))
        }
    }
}

fn print_config(cfg: &config::NodeConfig, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            let v: Vec<_> = cfg
                .entries()
                .map(|(k, v, s, doc)| serde_json::json!({"key": k, "value": v, "source": s, "doc": doc}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        OutputFormat::Table => {
            let rows = cfg
                .entries()
                .map(|(k, v, s, _)| {
                    vec![
                        k.to_string(),
                        if v.is_empty() {
                            "-".into()
                        } else {
                            v.to_string()
                        },
                        format!("{s:?}").to_lowercase(),
                    ]
                })
                .collect();
            println!("{}", output::table(&["KEY", "VALUE", "SOURCE"], rows));
        }
    }
    Ok(())
}

/// Commands that run as long-lived nodes: their stdout/stderr may be a pipe to a parent that
/// went away, and that must never kill a broker or a controller.
fn is_node(c: &Command) -> bool {
    matches!(
        c,
        Command::Dev { .. } | Command::Controller(_) | Command::Broker(_)
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !is_node(&cli.command) {
        // A Unix tool whose reader goes away (`sluice consume … | head -3`) ends quietly, as
        // SIGPIPE's default does (status 141 in the shell), instead of panicking in
        // `println!`. Rust ignores SIGPIPE by default; sockets use MSG_NOSIGNAL either way.
        // SAFETY: called once at start-up, before any thread exists, restoring the default.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if let Some(file) = &cli.command_config {
        if let Err(e) = command_config::apply(file) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
