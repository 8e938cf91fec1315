//! `sluice dev`: a local cluster (controllers + brokers) as child processes, and
//! `sluice kill-leader` for watching failover on it.
//!
//! Ports with base port B: brokers B, B+1, …; controllers B+100, …; Prometheus metrics
//! B+200, … (brokers first, then controllers). Data, logs and `cluster.json` (nodes, ports, pids) live in `--dir`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use sluice_client::{Admin, DataClient};

use crate::output::{table, OutputFormat};

/// The running dev cluster's directory and `cluster.json`: `dir`, else the one found from
/// the bootstrap ports (the default directory of a port, or the pointer `sluice dev --dir`
/// leaves there, see [`pointer_file`]). Says on stderr which cluster it found.
pub fn load_state(
    bootstrap: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let ports: Vec<u16> = bootstrap
                .split(',')
                .filter_map(|a| a.rsplit_once(':'))
                .filter_map(|(_, p)| p.parse().ok())
                .collect();
            anyhow::ensure!(!ports.is_empty(), "--bootstrap must be host:port[,…]");
            let found = ports.iter().find_map(|&p| {
                let d = default_dir(p);
                if d.join("cluster.json").exists() {
                    return Some(d);
                }
                let pointer: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(pointer_file(p)).ok()?).ok()?;
                let d = PathBuf::from(pointer["dir"].as_str()?);
                d.join("cluster.json").exists().then_some(d)
            });
            let d = found.unwrap_or_else(|| default_dir(ports[0]));
            eprintln!("using the dev cluster in {}", d.display());
            d
        }
    };
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).with_context(|| {
            format!(
                "no dev cluster state in {} (is `sluice dev` running? use --dir)",
                dir.display()
            )
        })?)?;
    Ok((dir, state))
}

/// Pid of the dev-cluster node with this role and gRPC port, from `cluster.json`.
pub fn pid_of(state: &serde_json::Value, role: &str, port: u16) -> Option<i32> {
    state["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["role"] == role && n["port"] == port)?["pid"]
        .as_u64()
        .map(|p| p as i32)
}

/// Where `sluice dev` keeps a cluster with base port `base_port` unless `--dir` says otherwise.
pub fn default_dir(base_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-dev-{base_port}"))
}

/// Where `sluice dev --dir D` leaves a pointer to D for tools that only know the bootstrap
/// address (`kill-leader`, `chaos`): `{"dir": D, "pid": <sluice dev>}`.
pub fn pointer_file(base_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-dev-{base_port}.json"))
}

/// Whether `pid` is still a `sluice broker` listening on `port` (not a reused pid).
fn is_our_broker(pid: i32, port: u16) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_sluice = args.first().is_some_and(|a| {
        a.rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("sluice"))
    });
    let listens = args.iter().any(|a| a.ends_with(&format!(":{port}")));
    is_sluice && args.iter().any(|a| a == "broker") && listens
}

struct Proc {
    role: &'static str,
    id: u16,
    port: u16,
    log: PathBuf,
    child: Child,
    args: Vec<String>,
}

/// Where the nodes' output goes besides their log files.
#[derive(Clone, Copy)]
enum Echo {
    /// Only the files.
    Off,
    /// Also stdout, each line prefixed with the node, padded to this width.
    Prefixed(usize),
}

/// Copies a node's output, line by line, to its log file and to stdout behind `prefix`.
/// Lines from several nodes never interleave (each is written under the stdout lock). When
/// stdout goes away (the reader of `sluice dev --logs | ...` quits) the file alone goes on.
fn tee(mut from: impl std::io::Read, mut file: std::fs::File, prefix: String) {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(&mut from);
    let mut line = Vec::new();
    let mut echo = true;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = file.write_all(&line);
        if echo {
            let mut out = std::io::stdout().lock();
            echo = out
                .write_all(prefix.as_bytes())
                .and_then(|()| out.write_all(&line))
                .and_then(|()| {
                    if line.ends_with(b"\n") {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                })
                .and_then(|()| out.flush())
                .is_ok();
        }
    }
}

fn spawn(
    role: &'static str,
    id: u16,
    port: u16,
    args: Vec<String>,
    dir: &Path,
    echo: Echo,
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let log = dir.join(format!("{role}-{id}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let (stdout, stderr) = match echo {
        Echo::Off => (Stdio::from(file.try_clone()?), Stdio::from(file)),
        Echo::Prefixed(_) => (Stdio::piped(), Stdio::piped()),
    };
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .args(&args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // Own process group: a Ctrl-C typed at the terminal reaches only `sluice dev`, which
    // then stops brokers before controllers.
    cmd.process_group(0);
    // Children die with `sluice dev`, even if it is SIGKILLed.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {role} {id}"))?;
    if let Echo::Prefixed(width) = echo {
        let prefix = format!("{:<width$} | ", format!("{role}-{id}"));
        let file = std::fs::OpenOptions::new().append(true).open(&log)?;
        if let Some(out) = child.stdout.take() {
            let (file, prefix) = (file.try_clone()?, prefix.clone());
            std::thread::spawn(move || tee(out, file, prefix));
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || tee(err, file, prefix));
        }
    }
    Ok(Proc {
        role,
        id,
        port,
        log,
        child,
        args,
    })
}

/// Runs the dev cluster until Ctrl-C / SIGTERM.
pub fn run(
    controllers: u16,
    brokers: u16,
    dir: Option<PathBuf>,
    base_port: u16,
    logs: bool,
    secure: bool,
    out: OutputFormat,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        controllers >= 1 && brokers >= 1,
        "need at least one controller and one broker"
    );
    anyhow::ensure!(
        base_port as u32 + 200 + (brokers + controllers) as u32 <= 65535,
        "--base-port too high"
    );
    let metrics_port = |role: &str, i: u16| match role {
        "broker" => base_port + 200 + i - 1,
        _ => base_port + 200 + brokers + i - 1,
    };
    let dir = dir.unwrap_or_else(|| default_dir(base_port));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let voters = (1..=controllers)
        .map(|i| format!("{i}@127.0.0.1:{}", base_port + 100 + i - 1))
        .collect::<Vec<_>>()
        .join(",");
    let rf = brokers.min(3);
    let bootstrap = (0..brokers)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect::<Vec<_>>()
        .join(",");
    let pki = if secure {
        let pki = super::dev_pki::ensure(&dir, controllers, brokers, &bootstrap)?;
        // This process checks readiness over mutual TLS too, as the admin client.
        sluice_proto::tls::set_internal_client_tls(&sluice_proto::tls::ClientTls {
            ca: Some(pki.ca.clone()),
            certificate: Some(pki.admin.clone()),
            key: None,
        })
        .map_err(|e| anyhow::anyhow!(e))?;
        Some(pki)
    } else {
        None
    };
    let tls_args = |role: &str, i: u16| -> Vec<String> {
        let Some(pki) = &pki else { return Vec::new() };
        vec![
            "--override".into(),
            format!("ssl.keystore.location={}", pki.keystore(role, i).display()),
            "--override".into(),
            format!("ssl.truststore.location={}", pki.ca.display()),
            // Nodes must present their certificates (node identity); clients may, and
            // authenticate with SASL (or Basic credentials on gRPC) otherwise.
            "--override".into(),
            "ssl.client.auth=requested".into(),
            "--override".into(),
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN".into(),
            // ACLs, default deny; the dev super-user may do anything.
            "--override".into(),
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
            "--override".into(),
            format!("super.users=User:{}", pki.user.0),
        ]
    };
    let echo = if logs {
        let width = format!("controller-{}", controllers.max(brokers)).len();
        Echo::Prefixed(width)
    } else {
        Echo::Off
    };
    let mut procs = Vec::new();
    for i in 1..=controllers {
        let port = base_port + 100 + i - 1;
        procs.push(spawn(
            "controller",
            i,
            port,
            vec![
                "--node-id".into(),
                i.to_string(),
                "--listeners".into(),
                format!("127.0.0.1:{port}"),
                "--controller-quorum-voters".into(),
                voters.clone(),
                "--log-dirs".into(),
                dir.join(format!("controller-{i}")).display().to_string(),
                "--override".into(),
                format!("default.replication.factor={rf}"),
                "--override".into(),
                "num.partitions=3".into(),
                "--override".into(),
                format!(
                    "metrics.listener=127.0.0.1:{}",
                    metrics_port("controller", i)
                ),
            ]
            .into_iter()
            .chain(tls_args("controller", i))
            .collect(),
            &dir,
            echo,
        )?);
    }
    for i in 1..=brokers {
        let port = base_port + i - 1;
        procs.push(spawn(
            "broker",
            i,
            port,
            vec![
                "--node-id".into(),
                i.to_string(),
                "--listeners".into(),
                format!("127.0.0.1:{port}"),
                "--controller-quorum-voters".into(),
                voters.clone(),
                "--log-dirs".into(),
                dir.join(format!("broker-{i}")).display().to_string(),
                "--override".into(),
                "replica.lag.time.max.ms=10000".into(),
                "--override".into(),
                format!("offsets.topic.replication.factor={}", brokers.min(3)),
                "--override".into(),
                "group.consumer.session.timeout.ms=10000".into(),
                "--override".into(),
                "group.consumer.heartbeat.interval.ms=1000".into(),
                "--override".into(),
                format!("metrics.listener=127.0.0.1:{}", metrics_port("broker", i)),
            ]
            .into_iter()
            .chain(tls_args("broker", i))
            .collect(),
            &dir,
            echo,
        )?);
    }
    let write_state = |procs: &[Proc]| -> anyhow::Result<()> {
        let nodes: Vec<_> = procs
            .iter()
            .map(|p| json!({"role": p.role, "id": p.id, "host": "127.0.0.1", "port": p.port, "metrics_port": metrics_port(p.role, p.id), "pid": p.child.id(), "log": p.log}))
            .collect();
        let mut state = json!({"bootstrap": bootstrap, "dir": dir, "nodes": nodes});
        if let Some(pki) = &pki {
            state["command_config"] = json!(pki.properties);
        }
        std::fs::write(dir.join("cluster.json"), serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    };
    write_state(&procs)?;
    if dir != default_dir(base_port) {
        std::fs::write(
            pointer_file(base_port),
            serde_json::to_vec(&json!({
                "dir": dir.canonicalize().unwrap_or_else(|_| dir.clone()),
                "pid": std::process::id()
            }))?,
        )?;
    }
    let rt = super::runtime()?;
    let ready = rt.block_on(async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(admin) = Admin::connect(&bootstrap).await {
                if let Ok(c) = admin.describe_cluster().await {
                    if c.brokers.len() == brokers as usize && c.brokers.iter().all(|b| !b.fenced) {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    // The super-user's SCRAM credentials (set on every start; this process is `User:admin`
    // by its certificate until then).
    let super_user = match (&pki, ready) {
        (Some(pki), true) => rt.block_on(async {
            let (user, password) = &pki.user;
            let upsertions = sluice_metadata::scram::ScramMechanism::ALL
                .into_iter()
                .map(|m| super::user::upsertion(user, m, password, 4096))
                .collect();
            let req = sluice_proto::v1::AlterUserScramCredentialsRequest {
                deletions: Vec::new(),
                upsertions,
            };
            let admin = Admin::connect(&bootstrap)
                .await
                .map_err(|e| e.to_string())?;
            let r = admin
                .alter_user_scram_credentials(req)
                .await
                .map_err(|e| e.to_string())?;
            match r.results.iter().find(|x| x.error_code != 0) {
                Some(x) => Err(x.error_message.clone()),
                None => Ok(()),
            }
        }),
        _ => Ok(()),
    };
    if let Err(e) = super_user {
        for p in &mut procs {
            let _ = p.child.kill();
        }
        anyhow::bail!("creating the super-user admin: {e}");
    }
    if !ready {
        for p in &mut procs {
            let _ = p.child.kill();
        }
        anyhow::bail!(
            "the cluster did not become ready within 60 s; see the logs in {}",
            dir.display()
        );
    }
    match out {
        OutputFormat::Json => println!("{}", {
            let mut j = json!({"bootstrap": bootstrap, "dir": dir, "ready": true});
            if let Some(pki) = &pki {
                j["command_config"] = json!(pki.properties);
            }
            j
        }),
        OutputFormat::Table => {
            let rows = procs
                .iter()
                .map(|p| {
                    vec![
                        p.role.to_string(),
                        p.id.to_string(),
                        format!("127.0.0.1:{}", p.port),
                        p.child.id().to_string(),
                        p.log.display().to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["ROLE", "ID", "ADDRESS", "PID", "LOG"], rows));
            println!("\nbootstrap: {bootstrap}");
            println!("data:      {}", dir.display());
            if let Some(pki) = &pki {
                println!(
                    "secure:    TLS + SASL (user admin); clients use {} (kcat -F …, sluice --command-config …)",
                    pki.properties.display()
                );
            }
            println!(
                "ready — try: sluice topic create demo -p 3 -r {rf} --bootstrap {}",
                bootstrap.split(',').next().unwrap_or("")
            );
            println!("Ctrl-C stops the cluster.");
        }
    }
    // Supervise: a node that dies (a crash, `sluice kill-leader`, `sluice chaos`) is
    // restarted from its own data directory a second later, like a process manager would.
    rt.block_on(async {
        let stop = super::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let mut changed = false;
            for p in procs.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    eprintln!(
                        "{} {} exited ({status}); restarting it in 1 s",
                        p.role, p.id
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match spawn(p.role, p.id, p.port, p.args.clone(), &dir, echo) {
                        Ok(np) => {
                            *p = np;
                            changed = true;
                        }
                        Err(e) => eprintln!("restarting {} {} failed: {e:#}", p.role, p.id),
                    }
                }
            }
            if changed {
                if let Err(e) = write_state(&procs) {
                    eprintln!("writing cluster.json: {e:#}");
                }
            }
        }
    });
    eprintln!("stopping: brokers first (controlled shutdown), then controllers");
    for role in ["broker", "controller"] {
        for p in procs.iter().filter(|p| p.role == role) {
            let _ = kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
        }
        let start = Instant::now();
        for p in procs.iter_mut().filter(|p| p.role == role) {
            while start.elapsed() < Duration::from_secs(15) {
                if p.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
    let _ = std::fs::remove_file(dir.join("cluster.json"));
    remove_pointer(base_port);
    Ok(())
}

/// Removes the pointer of `base_port` if it is ours.
fn remove_pointer(base_port: u16) {
    let path = pointer_file(base_port);
    let ours = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["pid"] == std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// `sluice kill-leader TOPIC PARTITION`: SIGKILLs the dev-cluster broker leading it.
pub fn kill_leader(
    bootstrap: &str,
    dir: Option<PathBuf>,
    topic: &str,
    partition: i32,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let (leader_id, addr) = rt.block_on(async {
        let client = DataClient::connect(bootstrap).await?;
        client.partitions(topic)?;
        client
            .leader(topic, partition)
            .with_context(|| format!("{topic}-{partition} has no leader right now"))
    })?;
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("leader address")?;
    let (dir, state) = load_state(bootstrap, dir)?;
    let pid = pid_of(&state, "broker", port).with_context(|| {
        format!(
            "broker {leader_id} at {addr} is not part of the dev cluster in {}",
            dir.display()
        )
    })?;
    // cluster.json may be stale (the node restarted, the pid was reused): kill only the
    // sluice broker on that port.
    anyhow::ensure!(
        is_our_broker(pid, port),
        "pid {pid} from {} is no longer the sluice broker on port {port}; not killing it",
        dir.join("cluster.json").display()
    );
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing pid {pid}"))?;
    match out {
        OutputFormat::Json => println!("{}", json!({"topic": topic, "partition": partition, "killed_broker": leader_id, "pid": pid})),
        OutputFormat::Table => println!("killed broker {leader_id} (pid {pid}), leader of {topic}-{partition}; watch: sluice topic describe {topic}"),
    }
    Ok(())
}
