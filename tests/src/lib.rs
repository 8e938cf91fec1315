//! Harness for multi-process tests: start real `sluice` processes on ports the test picks,
//! signal them (SIGKILL, SIGSTOP, SIGCONT), restart them from their own data directories, and
//! clean up every child and temp dir when the test ends — also when it fails (Drop).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

pub mod standin;

/// The `sluice` binary built by `cargo test --workspace` (next to the test executables).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("sluice");
    assert!(
        bin.exists(),
        "{} not found: run `cargo test --workspace` (or `cargo build -p sluice`) first",
        bin.display()
    );
    bin
}

/// Picks `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Polls `f` every 50 ms until it returns `Some`, or fails the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One controller process.
pub struct ControllerProc {
    /// `node.id`.
    pub id: u64,
    /// gRPC port.
    pub port: u16,
    /// Its data directory.
    pub dir: PathBuf,
    /// Where its output goes (default: the data directory's path with `.log`).
    pub log: Option<PathBuf>,
    /// Its `controller.quorum.voters`, when not the quorum's (a controller added later).
    pub voters: Option<String>,
    child: Option<Child>,
    stopped: bool,
}

impl ControllerProc {
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The OS pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.log
            .clone()
            .unwrap_or_else(|| self.dir.with_extension("log"))
    }
}

/// A metadata quorum of real `sluice controller` processes.
pub struct Quorum {
    /// The controllers by id.
    pub nodes: BTreeMap<u64, ControllerProc>,
    voters: String,
    extra: Vec<(String, String)>,
    _root: tempfile::TempDir,
}

impl Quorum {
    /// Starts `n` controllers (ids 1..=n) with extra `--override key=value` settings.
    pub fn start(n: u64, extra: &[(&str, &str)]) -> Self {
        Self::start_some(n, n, extra)
    }

    /// Declares `n` voters but starts only the first `running` of them.
    pub fn start_some(n: u64, running: u64, extra: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(n as usize);
        let voters = (1..=n)
            .map(|id| format!("{id}@127.0.0.1:{}", ports[id as usize - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut q = Quorum {
            nodes: BTreeMap::new(),
            voters,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _root: root,
        };
        for id in 1..=n {
            let dir = q._root.path().join(format!("controller-{id}"));
            q.nodes.insert(
                id,
                ControllerProc {
                    id,
                    port: ports[id as usize - 1],
                    dir,
                    log: None,
                    voters: None,
                    child: None,
                    stopped: false,
                },
            );
            if id <= running {
                q.spawn(id);
            }
        }
        q
    }

    /// (Re)starts controller `id` from its data directory.
    pub fn spawn(&mut self, id: u64) {
        let bin = sluice_bin();
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "controller {id} is already running");
        std::fs::create_dir_all(&node.dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg("controller")
            .args(["--node-id", &id.to_string()])
            .args(["--listeners", &node.addr()])
            .args([
                "--controller-quorum-voters",
                node.voters.as_deref().unwrap_or(&self.voters),
            ])
            .args(["--log-dirs", node.dir.to_str().expect("utf8 path")]);
        // Metrics on a port the kernel picks (these tests do not scrape them).
        cmd.args(["--override", "metrics.listener=127.0.0.1:0"]);
        for (k, v) in &self.extra {
            cmd.args(["--override", &format!("{k}={v}")]);
        }
        cmd.env("RUST_LOG", "info,openraft=warn,sled=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn sluice controller"));
        node.stopped = false;
    }

    /// Starts controller `id`, not among the quorum's voters, on a new port and an empty
    /// directory; it knows the voters plus itself, so it finds the formed quorum and waits
    /// as an observer until `quorum add-controller` adds it.
    pub fn spawn_new(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&id), "controller {id} exists");
        let port = free_ports(1)[0];
        let voters = format!("{},{id}@127.0.0.1:{port}", self.voters);
        self.nodes.insert(
            id,
            ControllerProc {
                id,
                port,
                dir: self._root.path().join(format!("controller-{id}")),
                log: None,
                voters: Some(voters),
                child: None,
                stopped: false,
            },
        );
        self.spawn(id);
    }

    /// SIGKILLs controller `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGSTOP (freeze) to controller `id`.
    pub fn pause(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let pid = node.pid().expect("running");
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        node.stopped = true;
    }

    /// Sends SIGCONT to controller `id`.
    pub fn resume(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let pid = node.pid().expect("running");
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
        node.stopped = false;
    }

    /// Deletes controller `id`'s data (it must be stopped).
    pub fn wipe(&mut self, id: u64) {
        let node = &self.nodes[&id];
        assert!(
            node.child.is_none(),
            "stop controller {id} before wiping it"
        );
        let _ = std::fs::remove_dir_all(&node.dir);
    }

    /// Address of controller `id`.
    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr()
    }

    /// Comma-separated addresses of the running controllers.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(ControllerProc::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The log file of controller `id` (for failure messages).
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].log_path()).unwrap_or_default()
    }
}

impl Drop for Quorum {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                if node.stopped {
                    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A gRPC channel to `addr` (lazy: connects on first use).
/// Over TLS once the test process dials with TLS (`sluice_proto::tls::set_internal_client_tls`).
pub fn channel(addr: &str) -> Channel {
    sluice_proto::transport::base_endpoint(addr)
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Admin client for one node.
pub fn admin(addr: &str) -> AdminClient<Channel> {
    AdminClient::new(channel(addr))
}

/// Controller-service client for one node.
pub fn controller(addr: &str) -> ControllerClient<Channel> {
    ControllerClient::new(channel(addr))
}

/// The leader as node `addr` reports it (through DescribeQuorum, forwarded to the leader),
/// with the Raft term.
pub async fn leader_of(addr: &str) -> Option<(u64, i64)> {
    let q = admin(addr)
        .describe_quorum(sluice_proto::v1::DescribeQuorumRequest {})
        .await
        .ok()?
        .into_inner();
    (q.leader_id >= 0).then_some((q.leader_id as u64, q.leader_epoch))
}

/// What a controller's own applied log holds, read through its WatchMetadata stream from
/// offset 0 until the stream goes idle. Returns the image and whether the stream had to
/// send a snapshot (part of the log was purged or replaced by an installed snapshot).
pub async fn image_of(addr: &str) -> Option<(sluice_metadata::MetadataImage, bool)> {
    use sluice_proto::v1::metadata_event::Event;
    let mut stream = controller(addr)
        .watch_metadata(sluice_proto::v1::WatchMetadataRequest {
            from_offset: 0,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut image = sluice_metadata::MetadataImage::default();
    let mut saw_snapshot = false;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .ok()?
            .ok()??;
        match ev.event? {
            Event::Snapshot(s) => {
                saw_snapshot = true;
                image = sluice_metadata::MetadataImage::decode(&s.image).ok()?;
            }
            Event::Records(r) => {
                for e in r.entries {
                    let batch = sluice_metadata::records::RecordBatch::decode(&e.record).ok()?;
                    image = image.apply(e.offset, &batch.records).0;
                }
            }
            // Sent only when the server has nothing more: we are caught up.
            Event::Heartbeat(_) => return Some((image, saw_snapshot)),
        }
    }
}

/// Creates a topic through node `addr`'s Admin service.
pub async fn create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
    rf: i32,
) -> Result<sluice_proto::v1::CreateTopicResult, tonic::Status> {
    let resp = admin(addr)
        .create_topics(sluice_proto::v1::CreateTopicsRequest {
            topics: vec![sluice_proto::v1::TopicSpec {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: rf,
                configs: Default::default(),
            }],
            validate_only: false,
        })
        .await?
        .into_inner();
    Ok(resp.results.into_iter().next().expect("one result"))
}

pub mod cluster;
pub mod proxy;

/// Reads every record of a replica's log from disk: (offset, value).
pub fn read_replica(dir: &Path) -> Vec<(i64, Vec<u8>)> {
    let log = sluice_storage::Log::open(dir, sluice_storage::LogConfig::default())
        .expect("open replica log");
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    let end = log.log_end_offset();
    while at < end {
        let bytes = log.read(at, 1 << 20, end).expect("read");
        if bytes.is_empty() {
            break;
        }
        for b in sluice_storage::batch::batches(bytes) {
            let b = b.expect("stored batches are valid");
            for r in b.records() {
                let r = r.expect("record");
                out.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
            }
            at = sluice_storage::Offset(b.last_offset() + 1);
        }
    }
    out
}

/// The current description of `topic` from the controllers (the authority on leaders/ISR).
pub async fn describe_topic(
    controller_addr: &str,
    topic: &str,
) -> Option<sluice_proto::v1::TopicDescription> {
    let r = admin(controller_addr)
        .describe_topics(sluice_proto::v1::DescribeTopicsRequest {
            names: vec![topic.to_string()],
        })
        .await
        .ok()?
        .into_inner();
    r.topics.into_iter().next().filter(|t| t.error_code == 0)
}

/// Creates a topic through a controller, waiting until enough brokers are unfenced.
pub async fn create_topic_with(
    controller_addr: &str,
    name: &str,
    partitions: i32,
    rf: i32,
    configs: &[(&str, &str)],
) {
    let configs: std::collections::HashMap<String, String> = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wait_for("topic creation", Duration::from_secs(60), || {
        let configs = configs.clone();
        async move {
            let r = admin(controller_addr)
                .create_topics(sluice_proto::v1::CreateTopicsRequest {
                    topics: vec![sluice_proto::v1::TopicSpec {
                        name: name.into(),
                        num_partitions: partitions,
                        replication_factor: rf,
                        configs,
                    }],
                    validate_only: false,
                })
                .await
                .ok()?
                .into_inner();
            (r.results[0].error_code == 0).then_some(())
        }
    })
    .await;
}

/// One encoded batch holding `values` (no keys).
pub fn batch_of(values: &[&[u8]]) -> bytes::Bytes {
    let mut b = sluice_storage::RecordBatchBuilder::new();
    for v in values {
        b.append(1_700_000_000_000, None, Some(v), &[]);
    }
    b.build()
}

/// `GET /metrics` over a plain socket; the body, or None when the node is down.
pub fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut s, request.as_bytes()).ok()?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A child process that is SIGKILLed and reaped when dropped, so a failing test leaves no
/// process behind.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which the kernel fixes at 100 for user space.
    Some(Duration::from_millis(ticks * 10))
}

/// A real `sluice dev` cluster in a temp dir on free ports, for the tests of the dev tools.
/// SIGTERMed (a clean stop) and its directory removed when dropped.
pub struct DevCluster {
    child: std::process::Child,
    dir: tempfile::TempDir,
    /// Its base port (broker 1's gRPC and Kafka port).
    pub base: u16,
    /// The lines `sluice dev` printed on stdout before its "ready" line.
    pub early: Vec<String>,
    /// The lines `sluice dev` prints on stdout after its "ready" line.
    pub stdout: std::sync::mpsc::Receiver<String>,
}

impl DevCluster {
    /// Starts `sluice dev --dir <temp> --base-port <free>` and waits (≤ 90 s) for "ready".
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`DevCluster::start`] with more `sluice dev` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let base = free_dev_base();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = std::process::Command::new(sluice_bin())
            .args([
                "dev",
                "--base-port",
                &base.to_string(),
                "-o",
                "json",
                "--dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sluice dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut dev = DevCluster {
            child,
            dir,
            base,
            early: Vec::new(),
            stdout: rx,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = dev
                .stdout
                .recv_timeout(left)
                .expect("sluice dev is ready within 90 s");
            if line.contains("\"ready\":true") {
                break;
            }
            // With `--logs` the nodes' lines come first; without it nothing else does.
            assert!(extra.contains(&"--logs"), "unexpected output: {line}");
            dev.early.push(line);
        }
        dev
    }

    /// Its `--dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `127.0.0.1:<base>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A base port B where B..B+2, B+100..B+102 and B+200..B+205 are all free (what
/// `sluice dev` with 3 + 3 nodes uses).
pub fn free_dev_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    (0..500u64)
        .map(|i| 20_000 + ((seed.wrapping_add(i * 7919)) % 20_000) as u16)
        .find(|&b| {
            (0..3)
                .chain(100..103)
                .chain(200..206)
                .map(|o| std::net::TcpListener::bind(("127.0.0.1", b + o)))
                .collect::<Vec<_>>()
                .iter()
                .all(Result::is_ok)
        })
        .expect("no free port block for sluice dev")
}

/// kcat with `args`, bounded by 30 s: (success, stdout, stderr).
pub fn kcat(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("30")
        .arg("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (scripts/test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice ARGS` (the binary under test), bounded by 60 s: (success, stdout, stderr).
pub fn sluice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(sluice_bin())
        .args(args)
        .output()
        .expect("sluice runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice ARGS`, which must succeed: its stdout (the panic names the args and stderr).
pub fn must(args: &[&str]) -> String {
    let (ok, out, err) = sluice(args);
    assert!(ok, "sluice {args:?}: {out}\n{err}");
    out
}

/// Runs `tests/py/SCRIPT ARGS` with python3 (bounded by `timeout_s`), which must succeed and
/// print one JSON document: that document.
pub fn py_report(script: &str, args: &[&str], timeout_s: u32) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .arg("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON report")
}

/// The record values of `sluice consume -o json` output (one JSON document per line).
pub fn consumed_values(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["value"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `sluice ARGS` with `input` on stdin (`sluice produce`), bounded by 60 s: (success, stdout,
/// stderr).
pub fn sluice_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(sluice_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `<dev dir>/FILE.properties` with librdkafka keys for `user` over SASL_SSL with
/// `mechanism` (what kcat -F and `sluice --command-config` read); its path.
pub fn sasl_properties(
    dev: &DevCluster,
    file: &str,
    user: &str,
    mechanism: &str,
    password: &str,
) -> String {
    let path = dev.dir().join(format!("{file}.properties"));
    std::fs::write(
        &path,
        format!(
            "bootstrap.servers={}\nsecurity.protocol=SASL_SSL\nsasl.mechanism={mechanism}\nsasl.username={user}\nsasl.password={password}\nssl.ca.location={}\n",
            dev.bootstrap(),
            dev.dir().join("tls/ca.pem").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}
