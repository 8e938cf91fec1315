//! A whole cluster of real processes: controllers and brokers, with per-node kill, pause,
//! resume and restart, and access to each broker's data directory for verification.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{free_ports, sluice_bin};

struct Node {
    role: &'static str,
    port: u16,
    metrics_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// Controllers (ids 1..=c) and brokers (ids 1..=b) on test-picked loopback ports.
pub struct Cluster {
    controllers: BTreeMap<u16, Node>,
    brokers: BTreeMap<u16, Node>,
    voters: String,
    controller_overrides: Vec<String>,
    broker_overrides: Vec<String>,
    per_broker: BTreeMap<u16, Vec<String>>,
    /// Brokers given a `KAFKA://` listener of their own (their gRPC one becomes `GRPC://`).
    kafka_ports: BTreeMap<u16, u16>,
    /// Extra environment of each broker (fault injection).
    broker_env: BTreeMap<u16, Vec<(String, String)>>,
    /// `controller.quorum.voters` as each controller sees it (default: `voters`).
    controller_voters: BTreeMap<u16, String>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `c` controllers and `b` brokers with extra `--override` settings for each role.
    pub fn start(c: u16, b: u16, controller_overrides: &[&str], broker_overrides: &[&str]) -> Self {
        Self::start_with(c, b, controller_overrides, broker_overrides, |_| Vec::new())
    }

    /// `start`, plus overrides for each broker alone (e.g. its `advertised.listeners`).
    pub fn start_with(
        c: u16,
        b: u16,
        controller_overrides: &[&str],
        broker_overrides: &[&str],
        per_broker: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        Self::start_custom(
            c,
            b,
            controller_overrides,
            broker_overrides,
            per_broker,
            |_, _| None,
        )
    }

    /// `start_with`, plus each controller's own view of the voters: `voters_of(id, real)`
    /// gets the real `id@host:port,…` list and may return another (e.g. through proxies).
    pub fn start_custom(
        c: u16,
        b: u16,
        controller_overrides: &[&str],
        broker_overrides: &[&str],
        per_broker: impl Fn(u16) -> Vec<String>,
        voters_of: impl Fn(u16, &str) -> Option<String>,
    ) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * (c + b) as usize);
        let voters = (1..=c)
            .map(|i| format!("{i}@127.0.0.1:{}", ports[i as usize - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cl = Cluster {
            controllers: BTreeMap::new(),
            brokers: BTreeMap::new(),
            voters,
            controller_overrides: controller_overrides.iter().map(|s| s.to_string()).collect(),
            broker_overrides: broker_overrides.iter().map(|s| s.to_string()).collect(),
            per_broker: (1..=b).map(|i| (i, per_broker(i))).collect(),
            kafka_ports: BTreeMap::new(),
            controller_voters: BTreeMap::new(),
            broker_env: BTreeMap::new(),
            root,
        };
        for i in 1..=c {
            if let Some(v) = voters_of(i, &cl.voters) {
                cl.controller_voters.insert(i, v);
            }
        }
        for i in 1..=c {
            let dir = cl.root.path().join(format!("controller-{i}"));
            cl.controllers.insert(
                i,
                Node {
                    role: "controller",
                    port: ports[i as usize - 1],
                    metrics_port: ports[(c + b + i) as usize - 1],
                    dir,
                    child: None,
                    stopped: false,
                },
            );
            cl.spawn("controller", i);
        }
        for i in 1..=b {
            let dir = cl.root.path().join(format!("broker-{i}"));
            cl.brokers.insert(
                i,
                Node {
                    role: "broker",
                    port: ports[(c + i) as usize - 1],
                    metrics_port: ports[(2 * c + b + i) as usize - 1],
                    dir,
                    child: None,
                    stopped: false,
                },
            );
            cl.spawn("broker", i);
        }
        cl
    }

    fn node_mut(&mut self, role: &str, id: u16) -> &mut Node {
        match role {
            "controller" => self.controllers.get_mut(&id).expect("known controller"),
            _ => self.brokers.get_mut(&id).expect("known broker"),
        }
    }

    fn spawn(&mut self, role: &'static str, id: u16) {
        let voters = match role {
            "controller" => self
                .controller_voters
                .get(&id)
                .cloned()
                .unwrap_or_else(|| self.voters.clone()),
            _ => self.voters.clone(),
        };
        let overrides = if role == "controller" {
            self.controller_overrides.clone()
        } else {
            let mut o = self.broker_overrides.clone();
            o.extend(self.per_broker.get(&id).cloned().unwrap_or_default());
            o
        };
        let env = match role {
            "broker" => self.broker_env.get(&id).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        let kafka_port = self.kafka_ports.get(&id).copied();
        let port = self.node_mut(role, id).port;
        let listeners = match (role, kafka_port) {
            ("broker", Some(k)) => format!("GRPC://127.0.0.1:{port},KAFKA://127.0.0.1:{k}"),
            _ => format!("127.0.0.1:{port}"),
        };
        let node = self.node_mut(role, id);
        assert!(node.child.is_none(), "{role} {id} already running");
        std::fs::create_dir_all(&node.dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg(node.role)
            .args(["--node-id", &id.to_string()])
            .args(["--listeners", &listeners])
            .args(["--controller-quorum-voters", &voters])
            .args(["--log-dirs", node.dir.to_str().expect("utf8")])
            .args([
                "--override",
                &format!("metrics.listener=127.0.0.1:{}", node.metrics_port),
            ]);
        for o in overrides {
            cmd.args(["--override", &o]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info,openraft=warn,sled=warn,h2=warn")
            .env("SLUICE_FAULT_INJECTION", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn sluice"));
        node.stopped = false;
    }

    /// `host:port` of a node's Prometheus endpoint (`role` is "controller" or "broker").
    pub fn metrics_addr(&self, role: &str, id: u16) -> String {
        let node = match role {
            "controller" => &self.controllers[&id],
            _ => &self.brokers[&id],
        };
        format!("127.0.0.1:{}", node.metrics_port)
    }

    /// Sets an environment variable for the broker's next start.
    pub fn set_broker_env(&mut self, id: u16, key: &str, value: &str) {
        let env = self.broker_env.entry(id).or_default();
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }

    /// From the broker's next start, gRPC only on its port and the Kafka protocol only on
    /// `port` (`listeners=GRPC://…,KAFKA://…`).
    pub fn set_kafka_listener(&mut self, id: u16, port: u16) {
        self.kafka_ports.insert(id, port);
    }

    /// Restarts a broker from its own data directory.
    pub fn start_broker(&mut self, id: u16) {
        self.spawn("broker", id);
    }

    /// SIGKILLs a broker.
    pub fn kill_broker(&mut self, id: u16) {
        if let Some(mut c) = self.node_mut("broker", id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs a broker (controlled shutdown) and waits for it to exit.
    pub fn stop_broker(&mut self, id: u16) {
        if let Some(mut c) = self.node_mut("broker", id).child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// SIGSTOPs a broker.
    pub fn pause_broker(&mut self, id: u16) {
        let n = self.node_mut("broker", id);
        let pid = n.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        n.stopped = true;
    }

    /// The process id of a running broker.
    pub fn broker_pid(&self, id: u16) -> u32 {
        self.brokers[&id].child.as_ref().expect("running").id()
    }

    /// Sends `signal` to a running broker.
    pub fn signal_broker(&self, id: u16, signal: Signal) {
        let pid = self.brokers[&id].child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), signal).expect("signal");
    }

    /// SIGCONTs a broker.
    pub fn resume_broker(&mut self, id: u16) {
        let n = self.node_mut("broker", id);
        let pid = n.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
        n.stopped = false;
    }

    /// SIGKILLs a controller.
    pub fn kill_controller(&mut self, id: u16) {
        if let Some(mut c) = self.node_mut("controller", id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `controller.quorum.voters` of this cluster (`id@host:port,…`).
    pub fn voters(&self) -> &str {
        &self.voters
    }

    /// SIGSTOPs a controller (frozen: its connections stay open, nothing answers).
    pub fn pause_controller(&mut self, id: u16) {
        let n = self.node_mut("controller", id);
        let pid = n.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        n.stopped = true;
    }

    /// SIGCONTs a controller.
    pub fn resume_controller(&mut self, id: u16) {
        let n = self.node_mut("controller", id);
        let pid = n.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
        n.stopped = false;
    }

    /// Deletes a stopped controller's data directory: it restarts with an empty disk.
    pub fn wipe_controller(&mut self, id: u16) {
        let n = self.node_mut("controller", id);
        assert!(n.child.is_none(), "controller {id} must be stopped first");
        let _ = std::fs::remove_dir_all(&n.dir);
    }

    /// Sets the config overrides every controller gets from its next start on.
    pub fn set_controller_overrides(&mut self, overrides: &[&str]) {
        self.controller_overrides = overrides.iter().map(|s| s.to_string()).collect();
    }

    /// Restarts a controller from its own data directory.
    pub fn start_controller(&mut self, id: u16) {
        self.spawn("controller", id);
    }

    /// Restarts every node that is not running (after `stop_all` or kills).
    pub fn start_all(&mut self) {
        let cs: Vec<u16> = self.controllers.keys().copied().collect();
        let bs: Vec<u16> = self.brokers.keys().copied().collect();
        for id in cs {
            if self.controllers[&id].child.is_none() {
                self.spawn("controller", id);
            }
        }
        for id in bs {
            if self.brokers[&id].child.is_none() {
                self.spawn("broker", id);
            }
        }
    }

    /// The data directory of broker `id`.
    pub fn broker_dir(&self, id: u16) -> PathBuf {
        self.brokers[&id].dir.clone()
    }

    /// Address of broker `id`.
    pub fn broker_addr(&self, id: u16) -> String {
        format!("127.0.0.1:{}", self.brokers[&id].port)
    }

    /// All broker addresses, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .keys()
            .map(|i| self.broker_addr(*i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Address of controller `id`.
    pub fn controller_addr(&self, id: u16) -> String {
        format!("127.0.0.1:{}", self.controllers[&id].port)
    }

    /// The data directory of a broker's replica of `topic`-`partition`.
    pub fn replica_dir(&self, broker: u16, topic: &str, partition: i32) -> Option<PathBuf> {
        let prefix = format!("{topic}-{partition}-");
        std::fs::read_dir(&self.brokers[&broker].dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
    }

    /// Stops every process (SIGKILL; SIGCONT first for paused ones).
    pub fn stop_all(&mut self) {
        for n in self
            .controllers
            .values_mut()
            .chain(self.brokers.values_mut())
        {
            if let Some(mut c) = n.child.take() {
                if n.stopped {
                    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// A controller's log (for failure messages).
    pub fn controller_log(&self, id: u16) -> String {
        std::fs::read_to_string(self.controllers[&id].dir.with_extension("log")).unwrap_or_default()
    }

    /// A broker's log (for failure messages).
    pub fn broker_log(&self, id: u16) -> String {
        std::fs::read_to_string(self.brokers[&id].dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
