//! Node configuration: Kafka key names, layered defaults < TOML file < `SLUICE_*`
//! environment < command-line flags, with the source of every value remembered
//! (`sluice config print`). Unknown keys and bad values are errors that name the key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built-in default.
    Default,
    /// The `--config` file.
    File,
    /// A `SLUICE_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// One known key.
pub struct Key {
    /// Kafka-style name.
    pub name: &'static str,
    /// Default value ("" = required / none).
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// Every node config key (controller and broker roles).
pub const KEYS: &[Key] = &[
    Key {
        name: "process.roles",
        default: "",
        doc: "controller or broker (set by the subcommand)",
    },
    Key {
        name: "node.id",
        default: "",
        doc: "this node's id (required)",
    },
    Key {
        name: "cluster.id",
        default: "sluice-dev",
        doc: "cluster id; brokers of another cluster are refused",
    },
    Key {
        name: "listeners",
        default: "127.0.0.1:9093",
        doc: "host:port this node serves gRPC on; default 127.0.0.1:9093 for controllers, 127.0.0.1:9092 for brokers (CONTROLLER:// or PLAINTEXT:// prefixes accepted)",
    },
    Key {
        name: "controller.quorum.voters",
        default: "",
        doc: "id@host:port,... of every controller (required)",
    },
    Key {
        name: "metadata.log.dir",
        default: "",
        doc: "directory of the controller's Raft log and snapshots (default: <log.dirs>/metadata)",
    },
    Key {
        name: "log.dirs",
        default: "./data",
        doc: "data directory",
    },
    Key {
        name: "broker.session.timeout.ms",
        default: "9000",
        doc: "fence a broker after this long without a heartbeat",
    },
    Key {
        name: "broker.heartbeat.interval.ms",
        default: "2000",
        doc: "how often brokers heartbeat",
    },
    Key {
        name: "controller.quorum.election.timeout.ms",
        default: "1000",
        doc:
            "a follower starts an election after a random [t/2, t] without hearing from the leader",
    },
    Key {
        name: "controller.quorum.heartbeat.interval.ms",
        default: "100",
        doc: "leader to follower heartbeats",
    },
    Key {
        name: "metadata.snapshot.interval.records",
        default: "5000",
        doc: "snapshot the metadata image (and purge the log) after this many log entries",
    },
    Key {
        name: "auto.leader.rebalance.enable",
        default: "true",
        doc: "the active controller moves leadership back to preferred replicas (Kafka's leader.imbalance.* keys)",
    },
    Key {
        name: "leader.imbalance.check.interval.seconds",
        default: "300",
        doc: "how often the active controller checks the leader balance",
    },
    Key {
        name: "leader.imbalance.per.broker.percentage",
        default: "10",
        doc: "a broker's share of preferred partitions it does not lead above which they are moved back",
    },
    Key {
        name: "num.partitions",
        default: "1",
        doc: "partitions of topics created without -p",
    },
    Key {
        name: "default.replication.factor",
        default: "1",
        doc: "replicas of topics created without -r",
    },
    Key {
        name: "advertised.listeners",
        default: "",
        doc: "host:port clients and followers use to reach this broker (default: listeners)",
    },
    Key {
        name: "replica.lag.time.max.ms",
        default: "30000",
        doc: "a follower not caught up for this long is removed from the ISR",
    },
    Key {
        name: "replica.fetch.max.bytes",
        default: "1048576",
        doc: "bytes a follower asks for per fetch",
    },
    Key {
        name: "replica.fetch.wait.max.ms",
        default: "500",
        doc: "how long a follower's fetch waits on the leader for new data",
    },
    Key {
        name: "replica.fetch.min.bytes",
        default: "1",
        doc: "record bytes a follower's fetch waits for before the leader answers (0: answer at once)",
    },
    Key {
        name: "replica.fetch.response.max.bytes",
        default: "10485760",
        doc: "record bytes a follower asks for per fetch across all its partitions from one leader",
    },
    Key {
        name: "log.segment.open.files.max",
        default: "0",
        doc: "segment files a broker keeps open at once, least recently used closed first (0: half the process's open-file limit)",
    },
    Key {
        name: "num.replica.fetchers",
        default: "1",
        doc: "fetch sessions a follower runs per leader broker; each carries its share of the partitions",
    },
    Key {
        name: "metrics.listener",
        default: "",
        doc: "host:port of the Prometheus endpoint (GET /metrics); default: the host of `listeners`, port + 200",
    },
    Key {
        name: "auto.create.topics.enable",
        default: "true",
        doc: "a Metadata request that asks for it (Kafka producers do) creates missing topics with num.partitions and default.replication.factor",
    },
    Key {
        name: "num.io.threads",
        default: "8",
        doc: "threads that run partitions' disk work; each partition is pinned to one",
    },
    Key {
        name: "max.connections",
        default: "10000",
        doc: "connections a broker serves at once; more wait until one closes (Kafka: unbounded)",
    },
    Key {
        name: "queued.max.request.bytes",
        default: "268435456",
        doc: "produce bytes received and not yet appended, over all connections; more wait (Kafka: unbounded)",
    },
    Key {
        name: "max.concurrent.streams",
        default: "1024",
        doc: "gRPC (HTTP/2) requests one connection may have open at once",
    },
    Key {
        name: "log.retention.check.interval.ms",
        default: "300000",
        doc: "how often brokers apply retention.ms / retention.bytes to their partitions",
    },
    Key {
        name: "offsets.retention.minutes",
        default: "10080",
        doc: "an empty group's committed offsets are deleted this long after their last commit (Kafka's default: 7 days)",
    },
    Key {
        name: "offsets.retention.check.interval.ms",
        default: "600000",
        doc: "how often group coordinators look for expired offsets",
    },
    Key {
        name: "offsets.topic.num.partitions",
        default: "12",
        doc: "partitions of __consumer_offsets (Kafka: 50; 12 spreads coordinators over a small cluster at a quarter of the open logs)",
    },
    Key {
        name: "offsets.topic.replication.factor",
        default: "3",
        doc: "replicas of __consumer_offsets; groups are unavailable until this many brokers are registered",
    },
    Key {
        name: "group.consumer.session.timeout.ms",
        default: "45000",
        doc: "a group member that does not heartbeat for this long is removed and its partitions reassigned",
    },
    Key {
        name: "group.consumer.heartbeat.interval.ms",
        default: "5000",
        doc: "how often group members are told to heartbeat",
    },
    Key {
        name: "group.min.session.timeout.ms",
        default: "6000",
        doc: "classic protocol (JoinGroup): the shortest session timeout a member may ask for",
    },
    Key {
        name: "group.max.session.timeout.ms",
        default: "1800000",
        doc: "classic protocol (JoinGroup): the longest session timeout a member may ask for",
    },
    Key {
        name: "group.initial.rebalance.delay.ms",
        default: "3000",
        doc: "classic protocol: how long the first rebalance of an empty group waits for more members (each new one extends it, up to the rebalance timeout)",
    },
    Key {
        name: "ssl.keystore.location",
        default: "",
        doc: "PEM file with this node's certificate chain and private key: every listener serves TLS only, and the node dials other nodes over TLS presenting it (reloaded when the file changes); empty = plaintext",
    },
    Key {
        name: "ssl.truststore.location",
        default: "",
        doc: "PEM CA certificates: the node verifies the nodes it dials (and client certificates, with ssl.client.auth) against them; required with ssl.keystore.location",
    },
    Key {
        name: "ssl.client.auth",
        default: "none",
        doc: "none, requested or required: whether TLS clients must present a certificate signed by the truststore's CAs",
    },
    Key {
        name: "sasl.enabled.mechanisms",
        default: "",
        doc: "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (comma-separated): Kafka connections must authenticate with one of them (PLAIN over TLS only) and gRPC calls must carry a user's credentials or a client certificate; needs TLS with ssl.client.auth=requested or required; empty = off",
    },
    Key {
        name: "authorizer.class.name",
        default: "",
        doc: "org.apache.kafka.metadata.authorizer.StandardAuthorizer (or acl): every request of both protocols is checked against the cluster's ACLs (sluice acl), default deny; needs TLS with ssl.client.auth=requested or required (nodes are known by their certificates and pass every check); empty = off",
    },
    Key {
        name: "super.users",
        default: "",
        doc: "with the authorizer: principals that pass every check, separated by ';' (User:admin;User:ops)",
    },
    Key {
        name: "allow.everyone.if.no.acl.found",
        default: "false",
        doc: "with the authorizer: a resource no ACL names is open to everyone (Kafka's key; false = default deny)",
    },
    Key {
        name: "request.timeout.ms",
        default: "5000",
        doc: "how long a metadata write may wait for the quorum",
    },
];

/// The effective configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    values: BTreeMap<String, (String, Source)>,
}

fn flatten(
    prefix: &str,
    v: &toml::Value,
    out: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
        }
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        toml::Value::Float(f) => {
            out.insert(prefix.to_string(), f.to_string());
        }
        other => bail!("config key {prefix}: unsupported value {other}"),
    }
    Ok(())
}

fn env_name(key: &str) -> String {
    format!("SLUICE_{}", key.to_uppercase().replace(['.', '-'], "_"))
}

impl NodeConfig {
    /// Layers defaults, the file, the environment and `flags` (key → value).
    pub fn load(file: Option<&Path>, flags: &[(String, String)]) -> anyhow::Result<Self> {
        let mut c = NodeConfig::default();
        for k in KEYS {
            if !k.default.is_empty() {
                c.values
                    .insert(k.name.into(), (k.default.into(), Source::Default));
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let value: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            let mut flat = BTreeMap::new();
            flatten("", &value, &mut flat)?;
            for (k, v) in flat {
                c.set(&k, v, Source::File)
                    .with_context(|| format!("in {}", path.display()))?;
            }
        }
        for k in KEYS {
            if let Ok(v) = std::env::var(env_name(k.name)) {
                c.set(k.name, v, Source::Env)?;
            }
        }
        for (k, v) in flags {
            c.set(k, v.clone(), Source::Flag)?;
        }
        Ok(c)
    }

    fn set(&mut self, key: &str, value: String, source: Source) -> anyhow::Result<()> {
        if !KEYS.iter().any(|k| k.name == key) {
            bail!("unknown config key {key:?} (see `sluice config print` for the known keys)");
        }
        validate(key, &value).map_err(|why| {
            anyhow::anyhow!(
                "invalid value {value:?} for config key {key} (from {}): {why}",
                match source {
                    Source::Default => "the default",
                    Source::File => "the config file",
                    Source::Env => "the environment",
                    Source::Flag => "a flag",
                }
            )
        })?;
        self.values.insert(key.to_string(), (value, source));
        Ok(())
    }

    /// A value, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether `key` still has its built-in default.
    pub fn is_default(&self, key: &str) -> bool {
        self.values
            .get(key)
            .is_none_or(|(_, s)| *s == Source::Default)
    }

    /// A required value.
    pub fn require(&self, key: &str) -> anyhow::Result<&str> {
        self.get(key).with_context(|| {
            format!(
                "config key {key} is required (flag, {} or --config file)",
                env_name(key)
            )
        })
    }

    /// A `true`/`false` value; the error names the key.
    pub fn bool(&self, key: &str) -> anyhow::Result<bool> {
        let v = self.require(key)?;
        match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => anyhow::bail!("config key {key}={v:?} must be true or false"),
        }
    }

    /// A value parsed as a number; the error names the key.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<T> {
        let v = self.require(key)?;
        v.trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("config key {key}={v:?} is not a valid number"))
    }

    /// Every value with its source, for `sluice config print`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, Source, &str)> {
        KEYS.iter().map(|k| match self.values.get(k.name) {
            Some((v, s)) => (k.name, v.as_str(), *s, k.doc),
            None => (k.name, "", Source::Default, k.doc),
        })
    }
}

/// Checks one value against its key's kind: durations (`*.ms`) and counts are
/// non-negative integers, addresses are `host:port`, voters are `id@host:port,…`.
fn validate(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    let default = KEYS
        .iter()
        .find(|k| k.name == key)
        .map_or("", |k| k.default);
    match key {
        "listeners" | "advertised.listeners" | "metrics.listener" => {
            if v.is_empty() && key != "listeners" {
                return Ok(());
            }
            // `listeners` and `advertised.listeners` may name several, comma-separated.
            for entry in v.split(',').map(str::trim) {
                if key == "metrics.listener" && entry != v {
                    return Err("one host:port".into());
                }
                let addr = strip_listener_scheme(entry);
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or("expected host:port, e.g. 127.0.0.1:9092")?;
                if host.is_empty() {
                    return Err("the host is empty (use 0.0.0.0 to listen everywhere)".into());
                }
                port.parse::<u16>()
                    .map_err(|_| format!("port {port:?} is not a number in 0..=65535"))?;
            }
            Ok(())
        }
        "controller.quorum.voters" => {
            if v.is_empty() {
                return Ok(());
            }
            parse_voters(v).map(|_| ()).map_err(|e| e.to_string())
        }
        _ if key.ends_with(".ms") => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(()),
            Ok(n) => Err(format!(
                "a duration in milliseconds cannot be negative ({n})"
            )),
            Err(_) => Err("expected a duration in milliseconds (an integer)".into()),
        },
        _ if !default.is_empty() && default.parse::<i64>().is_ok() => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(()),
            Ok(n) => Err(format!("must not be negative ({n})")),
            Err(_) => Err("expected an integer".into()),
        },
        "node.id" => v
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| "expected a non-negative integer".into()),
        _ => Ok(()),
    }
}

/// What a broker listener serves, by its name in `listeners` / `advertised.listeners`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerName {
    /// `host:port` or `PLAINTEXT://host:port`: gRPC and the Kafka protocol on one port.
    Both,
    /// `GRPC://host:port`: gRPC only.
    Grpc,
    /// `KAFKA://host:port`: the Kafka protocol only.
    Kafka,
}

/// Parses a broker's `listeners` or `advertised.listeners` (`key`, for messages):
/// comma-separated `[NAME://]host:port` entries, NAME one of PLAINTEXT, GRPC, KAFKA.
pub fn parse_listener_list(key: &str, s: &str) -> anyhow::Result<Vec<(ListenerName, String)>> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = match entry.split_once("://") {
            None => (ListenerName::Both, entry),
            Some((n, a)) => (
                match n.to_ascii_uppercase().as_str() {
                    "PLAINTEXT" => ListenerName::Both,
                    "GRPC" => ListenerName::Grpc,
                    "KAFKA" => ListenerName::Kafka,
                    _ => anyhow::bail!(
                        "{key}: unknown listener name {n:?} in {entry:?}: PLAINTEXT:// (or none) serves gRPC and Kafka on one port, GRPC:// gRPC only, KAFKA:// Kafka only"
                    ),
                },
                a,
            ),
        };
        if out.iter().any(|(n, _)| *n == name) {
            anyhow::bail!("{key}: two {name:?} listeners ({s:?}); one of each at most");
        }
        out.push((name, addr.to_string()));
    }
    Ok(out)
}

/// `CONTROLLER://host:port` or `host:port` → `host:port`.
pub fn strip_listener_scheme(s: &str) -> &str {
    s.split_once("://").map_or(s, |(_, rest)| rest)
}

/// Parses Kafka's `controller.quorum.voters`: `1@host:port,2@host:port`.
pub fn parse_voters(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').with_context(|| {
            format!("controller.quorum.voters entry {part:?} is not id@host:port")
        })?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("controller.quorum.voters entry {part:?}: bad id"))?;
        if !addr.contains(':') {
            bail!("controller.quorum.voters entry {part:?}: address needs host:port");
        }
        if out.insert(id, addr.to_string()).is_some() {
            bail!("controller.quorum.voters names node {id} twice");
        }
    }
    if out.is_empty() {
        bail!("controller.quorum.voters is empty");
    }
    Ok(out)
}
