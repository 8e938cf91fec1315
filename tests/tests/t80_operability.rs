//! Operability with real processes: Prometheus metrics through a failover, and a gRPC
//! client not written in Rust (Python grpcio) using reflection alone to produce and fetch.

use std::time::Duration;

use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const CONTROLLER: &[&str] = &["broker.session.timeout.ms=2000"];
const BROKER: &[&str] = &[
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=2000",
];

/// `sluice cluster status -o json`.
fn cluster_status(bootstrap: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(sluice_bin())
        .args(["cluster", "status", "-o", "json", "--bootstrap", bootstrap])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// The value of an unlabelled gauge in a scrape.
fn gauge(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Sum of `name` over the live brokers.
fn sum_over_brokers(c: &Cluster, alive: &[u16], name: &str) -> Option<f64> {
    let mut total = 0.0;
    for id in alive {
        total += gauge(&scrape(&c.metrics_addr("broker", *id))?, name)?;
    }
    Some(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_under_replicated_partitions_during_a_failover() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "m", 3, 3, &[]).await;
    // Every controller serves metrics; exactly one is the active controller.
    let active = wait_for("one active controller", WAIT, || async {
        let mut sum = 0.0;
        for id in 1..=3 {
            sum += gauge(
                &scrape(&c.metrics_addr("controller", id))?,
                "sluice_active_controller",
            )?;
        }
        (sum == 1.0).then_some(sum)
    })
    .await;
    assert_eq!(active, 1.0);
    wait_for("a healthy cluster (0 under-replicated)", WAIT, || async {
        (sum_over_brokers(&c, &[1, 2, 3], "sluice_leader_partitions")? == 3.0
            && sum_over_brokers(&c, &[1, 2, 3], "sluice_under_replicated_partitions")? == 0.0)
            .then_some(())
    })
    .await;
    // Produce so request metrics exist.
    let mut client = wait_for("client", WAIT, || async {
        sluice_client::DataClient::connect(&c.bootstrap())
            .await
            .ok()
    })
    .await;
    client.wait_for_topic("m", WAIT).await.unwrap();
    for p in 0..3 {
        client.produce("m", p, batch_of(&[b"x"]), -1).await.unwrap();
    }
    let leader_of_0 = client.leader("m", 0).unwrap().0 as u16;
    let body = scrape(&c.metrics_addr("broker", leader_of_0)).unwrap();
    assert!(
        body.contains("sluice_request_duration_seconds_bucket{request=\"produce\""),
        "produce latency histogram exported"
    );
    assert!(
        body.contains("sluice_messages_in_total{topic=\"m\"}"),
        "per-topic messages in"
    );

    // Kill one broker: the partitions it followed become under-replicated on their
    // leaders, and the count returns to zero once it is back in the ISR.
    c.kill_broker(3);
    wait_for("under-replicated partitions > 0", WAIT, || async {
        (sum_over_brokers(&c, &[1, 2], "sluice_under_replicated_partitions")? > 0.0).then_some(())
    })
    .await;
    // `sluice cluster status` shows the same picture: broker 3 fenced, partitions short.
    let status = wait_for("cluster status to show broker 3 fenced", WAIT, || async {
        let v = cluster_status(&c.bootstrap())?;
        let b3 = v["brokers"]
            .as_array()?
            .iter()
            .find(|b| b["id"] == 3)?
            .clone();
        (b3["fenced"] == true && v["under_replicated_partitions"].as_u64()? > 0).then_some(v)
    })
    .await;
    assert_eq!(status["controllers"].as_array().unwrap().len(), 3);
    assert_eq!(
        status["controllers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["role"] == "leader")
            .count(),
        1
    );
    assert_eq!(status["offline_partitions"], 0);
    let table = std::process::Command::new(sluice_bin())
        .args(["cluster", "status", "--bootstrap", &c.bootstrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    for col in [
        "CONTROLLER",
        "ROLE",
        "LAG",
        "BROKER",
        "FENCED",
        "LEADS",
        "UNDER-REPLICATED",
    ] {
        assert!(
            text.contains(col),
            "cluster status table has {col}:\n{text}"
        );
    }
    let body = scrape(&c.metrics_addr("broker", 1)).unwrap()
        + &scrape(&c.metrics_addr("broker", 2)).unwrap();
    assert!(
        body.contains("sluice_isr_shrinks_total"),
        "ISR shrinks counted"
    );
    c.start_broker(3);
    wait_for("under-replicated partitions back to 0", WAIT, || async {
        (sum_over_brokers(&c, &[1, 2, 3], "sluice_under_replicated_partitions")? == 0.0)
            .then_some(())
    })
    .await;
    let body: String = [1, 2, 3]
        .iter()
        .filter_map(|id| scrape(&c.metrics_addr("broker", *id)))
        .collect();
    assert!(
        body.contains("sluice_isr_expands_total"),
        "ISR expansions counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_produces_and_fetches_by_reflection_alone() {
    let c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "py", 1, 1, &[]).await;
    let mut client = wait_for("client", WAIT, || async {
        sluice_client::DataClient::connect(&c.bootstrap())
            .await
            .ok()
    })
    .await;
    client.wait_for_topic("py", WAIT).await.unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/reflect_produce_fetch.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([&c.broker_addr(1), "py", "hello from python"])
        .output()
        .expect("python3 runs (CI installs grpcio and grpcio-reflection)");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in [
        "sluice.v1.Broker",
        "sluice.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "reflection lists {s}: {services:?}");
    }
    assert_eq!(v["values"][0], "hello from python");
    // The Rust client reads the same record at the offset Python was given.
    let offset = v["offset"].as_i64().unwrap();
    let r = client.fetch("py", 0, offset, 100).await.unwrap();
    assert_eq!(
        r.records[0].value.as_deref(),
        Some(&b"hello from python"[..])
    );
}

/// Review defect 6 of issue 12: a `FetchStream` whose client went away kept long-polling
/// for ever on an idle partition (it noticed only when it had records to send). Method: open
/// a FetchStream on an idle topic at its leader, see `sluice_fetch_streams_open` count it,
/// drop the client, and the gauge must return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_stream_ends_when_its_client_leaves() {
    use sluice_proto::v1::broker_client::BrokerClient;
    let c = Cluster::start(3, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "idle", 1, 1, &[]).await;
    let metrics = c.metrics_addr("broker", 1);
    let open = || gauge(&scrape(&metrics)?, "sluice_fetch_streams_open");
    // The partition has a leader (a fetch is served) before the stream opens.
    wait_for("idle-0 served", WAIT, || async {
        BrokerClient::new(channel(&c.broker_addr(1)))
            .fetch(sluice_proto::v1::FetchRequest {
                topic: "idle".into(),
                partition: 0,
                ..Default::default()
            })
            .await
            .ok()
    })
    .await;
    let stream = wait_for("a FetchStream", WAIT, || async {
        BrokerClient::new(channel(&c.broker_addr(1)))
            .fetch_stream(sluice_proto::v1::FetchRequest {
                topic: "idle".into(),
                partition: 0,
                fetch_offset: 0,
                max_wait_ms: 200,
                ..Default::default()
            })
            .await
            .ok()
    })
    .await;
    wait_for("the stream counted", WAIT, || async {
        open().filter(|n| *n == 1.0)
    })
    .await;
    drop(stream);
    wait_for("the stream gone once its client left", WAIT, || async {
        open().filter(|n| *n == 0.0)
    })
    .await;
}

/// Goal (issue 18.2): `sluice dev --dir D` followed by `sluice kill-leader … --bootstrap B`
/// works without repeating `--dir`: dev leaves a pointer to D for its base port and the tool
/// says which cluster it found. Method: a real `sluice dev` in a temp dir on free ports, a
/// topic, then `kill-leader` with only `--bootstrap`; it must kill the leader's broker and
/// name the directory on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_finds_a_dev_cluster_started_with_dir_from_its_bootstrap_address() {
    let dev = DevCluster::start();
    let bootstrap = dev.bootstrap();
    let sluice = |args: &[&str]| {
        std::process::Command::new(sluice_bin())
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .output()
            .unwrap()
    };
    let created = sluice(&["topic", "create", "kl", "-p", "1", "-r", "3"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let killed = wait_for("kill-leader to find a leader", WAIT, || async {
        let out = sluice(&["kill-leader", "kl", "0", "-o", "json"]);
        out.status.success().then_some(out)
    })
    .await;
    let v: serde_json::Value = serde_json::from_slice(&killed.stdout).unwrap();
    assert!(v["pid"].as_u64().is_some_and(|p| p > 0), "{v}");
    let stderr = String::from_utf8_lossy(&killed.stderr);
    let canonical = dev.dir().canonicalize().unwrap();
    assert!(
        stderr.contains(&format!("using the dev cluster in {}", canonical.display())),
        "the tool names the cluster it found: {stderr}"
    );
    drop(dev);
}

/// Goal (issue 18.4): `sluice dev --logs` shows every node's log live, each line behind the
/// node's name (`broker-1     | …`, one column for all), like `docker compose up`, while the
/// log files stay complete and plain text; a node that dev restarts shows up again. Method:
/// a real `sluice dev --logs`; read its stdout until all six nodes have spoken; compare with
/// broker-1.log; SIGKILL broker 2 and wait for its restarted incarnation's "broker
/// listening" line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_logs_shows_every_node_live_behind_its_name() {
    let dev = DevCluster::start_with(&["--logs"]);
    let mut lines = dev.early.clone();
    let names = [
        "controller-1",
        "controller-2",
        "controller-3",
        "broker-1",
        "broker-2",
        "broker-3",
    ];
    let deadline = std::time::Instant::now() + WAIT;
    while !names
        .iter()
        .all(|n| lines.iter().any(|l| l.starts_with(&format!("{n} "))))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        lines.push(
            dev.stdout
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("every node shows its log: {lines:#?}")),
        );
    }
    let logs: Vec<&String> = lines.iter().filter(|l| l.contains(" | ")).collect();
    for l in &logs {
        assert_eq!(
            l.find(" | "),
            Some("controller-1".len()),
            "one prefix column: {l}"
        );
        assert!(!l.contains('\u{1b}'), "no colour codes in a pipe: {l}");
    }
    let file = std::fs::read_to_string(dev.dir().join("broker-1.log")).unwrap();
    assert!(!file.contains('\u{1b}'), "the log file is plain text");
    let shown = logs
        .iter()
        .find(|l| l.starts_with("broker-1 "))
        .expect("a broker-1 line");
    let (_, text) = shown.split_once(" | ").unwrap();
    assert!(file.contains(text), "the line shown is in the file: {text}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.dir().join("cluster.json")).unwrap()).unwrap();
    let pid = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "broker" && n["id"] == 2)
        .and_then(|n| n["pid"].as_i64())
        .expect("broker 2's pid");
    while dev.stdout.try_recv().is_ok() {}
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = dev
            .stdout
            .recv_timeout(left)
            .expect("the restarted broker 2 shows its log");
        if l.starts_with("broker-2 ") && l.contains("broker listening") {
            break;
        }
    }
}

/// `sluice bench produce --rounds 2 -o json` against a real cluster: every acks=all phase
/// (raw unary batches, raw batches on a ProduceStream, the client `Producer` with and
/// without idempotence) moves the whole load, the interleaved phases report both rounds,
/// and the topic the bench named for itself is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_reports_every_phase_per_round_and_removes_its_topic() {
    let c = Cluster::start(1, 1, CONTROLLER, BROKER);
    wait_for("the broker registered and unfenced", WAIT, || async {
        let v = cluster_status(&c.bootstrap())?;
        let brokers = v["brokers"].as_array()?;
        (brokers.len() == 1 && brokers[0]["fenced"] == false).then_some(())
    })
    .await;
    let record_bytes = 1024u64;
    let total = 2u64 << 20;
    let out = tokio::task::spawn_blocking({
        let bootstrap = c.bootstrap();
        move || {
            std::process::Command::new(sluice_bin())
                .args(["bench", "produce", "--bootstrap", &bootstrap])
                .args(["--partitions", "2", "--replicas", "1", "--acks", "all"])
                .args(["--batch-records", "16", "--rounds", "2", "-o", "json"])
                .args(["--total-bytes", &total.to_string()])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "bench produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = v["phases"].as_array().unwrap();
    let phase = |name: &str| {
        phases
            .iter()
            .find(|p| p["phase"] == name)
            .unwrap_or_else(|| panic!("no {name:?} phase in {v}"))
    };
    for name in [
        "produce acks=all",
        "client acks=all",
        "client acks=all idempotent",
        "produce stream acks=all",
    ] {
        let p = phase(name);
        let (records, bytes) = (p["records"].as_u64().unwrap(), p["bytes"].as_u64().unwrap());
        assert!(bytes >= total, "{name} moved {bytes} of {total} bytes");
        assert_eq!(bytes, records * record_bytes, "{name}");
        assert!(p["mb_per_s"].as_f64().unwrap() > 0.0, "{name}");
    }
    for name in [
        "produce acks=all",
        "client acks=all",
        "client acks=all idempotent",
    ] {
        let rounds = phase(name)["rounds_mb_per_s"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{name}: {rounds:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client / raw acks=all, per round:"),
        "{stderr}"
    );
    let topics = std::process::Command::new(sluice_bin())
        .args(["topic", "list", "-o", "json", "--bootstrap", &c.bootstrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&topics.stdout);
    assert!(topics.status.success(), "{listed}");
    assert!(
        !listed.contains("bench-"),
        "the bench's own topic is left behind: {listed}"
    );
}
