//! Brokers with real processes: produce and consume through the cluster, the CLI contract for
//! produce/consume, and bad input on the data plane.

use std::time::Duration;

use sluice_client::DataClient;
use sluice_proto::status::error_code;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);

async fn client(bootstrap: &str) -> DataClient {
    wait_for("metadata from the brokers", WAIT, || async {
        DataClient::connect(bootstrap).await.ok()
    })
    .await
}

/// Goal: records produced with acks=all to a replicated topic are all consumed back, in
/// order per partition, through any broker; the CLI speaks the documented JSON. Method:
/// 3 controllers + 3 brokers, a 3-partition RF=3 topic, 300 keyed records through the client
/// library, then the `sluice produce`/`sluice consume` commands with `--output json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_through_the_cluster() {
    let c = Cluster::start(3, 3, &[], &[]);
    create_topic_with(
        &c.controller_addr(1),
        "orders",
        3,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let mut cl = client(&c.bootstrap()).await;
    let mut acked = vec![Vec::new(); 3];
    for i in 0..300u32 {
        let key = format!("customer-{}", i % 17);
        let p = sluice_client::partition_for_key(key.as_bytes(), 3);
        let mut b = sluice_storage::RecordBatchBuilder::new();
        b.append(
            1_700_000_000_000,
            Some(key.as_bytes()),
            Some(format!("order-{i}").as_bytes()),
            &[],
        );
        let r = match cl.produce("orders", p, b.build(), -1).await {
            Ok(r) => r,
            Err(e) => {
                let logs: Vec<String> = (1..=3u16)
                    .map(|b| {
                        c.broker_log(b)
                            .lines()
                            .map(|l| l.chars().take(200).collect::<String>())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .collect();
                panic!(
                    "acks=all produce: {e:?}\nmetadata: {:?}\n{}",
                    cl.metadata(),
                    logs.join("\n-----\n")
                );
            }
        };
        acked[p as usize].push((r.base_offset, format!("order-{i}")));
    }
    for p in 0..3 {
        let mut got = Vec::new();
        let mut at = cl.list_offset("orders", p, -2).await.unwrap();
        let end = cl.list_offset("orders", p, -1).await.unwrap();
        assert_eq!(end as usize, acked[p as usize].len(), "HW of partition {p}");
        while at < end {
            let r = cl.fetch("orders", p, at, 500).await.unwrap();
            for rec in r.records {
                got.push((
                    rec.offset,
                    String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                ));
                at = rec.offset + 1;
            }
        }
        assert_eq!(
            got, acked[p as usize],
            "partition {p} reads back what was acknowledged"
        );
    }

    // The CLI contract: one JSON line per record in, per record out.
    let input: String = (0..20).map(|i| format!("k{i}:v{i}\n")).collect();
    let mut child = std::process::Command::new(sluice_bin())
        .args([
            "produce",
            "cli-topic",
            "--key-separator",
            ":",
            "--acks",
            "all",
            "-o",
            "json",
            "--bootstrap",
            &c.bootstrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "unknown topic must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"));
    create_topic_with(&c.controller_addr(2), "cli-topic", 2, 3, &[]).await;
    let mut child = std::process::Command::new(sluice_bin())
        .args([
            "produce",
            "cli-topic",
            "--key-separator",
            ":",
            "-o",
            "json",
            "--bootstrap",
            &c.bootstrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert!(lines
        .iter()
        .all(|l| l["partition"].is_i64() && l["offset"].is_i64()));
    let out = std::process::Command::new(sluice_bin())
        .args([
            "consume",
            "cli-topic",
            "--from-beginning",
            "--max-records",
            "20",
            "--timeout-ms",
            "10000",
            "-o",
            "json",
            "--bootstrap",
            &c.bootstrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut records: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 20);
    records.sort_by_key(|r| r["key"].as_str().unwrap()[1..].parse::<u32>().unwrap());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["key"], format!("k{i}"));
        assert_eq!(r["value"], format!("v{i}"));
        for field in ["partition", "offset", "timestamp"] {
            assert!(r[field].is_i64(), "{field} missing in {r}");
        }
        // Same key, same partition as Kafka's murmur2 partitioner.
        assert_eq!(
            r["partition"].as_i64().unwrap() as i32,
            sluice_client::partition_for_key(format!("k{i}").as_bytes(), 2)
        );
    }
}

/// Goal: bad data-plane input gets a clear gRPC status with Kafka's reason, the broker keeps
/// serving and stored data is unchanged. Method: throw each bad request at the leader of a
/// one-partition topic and compare its offsets before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let c = Cluster::start(1, 1, &[], &[]);
    create_topic_with(
        &c.controller_addr(1),
        "t",
        1,
        1,
        &[("max.message.bytes", "2000")],
    )
    .await;
    let mut cl = client(&c.bootstrap()).await;
    cl.produce("t", 0, batch_of(&[b"first", b"second"]), -1)
        .await
        .unwrap();
    let leader = wait_for("a leader", WAIT, || async {
        let mut cl = DataClient::connect(&c.bootstrap()).await.ok()?;
        cl.refresh().await.ok()?;
        cl.leader("t", 0).map(|(_, a)| a)
    })
    .await;
    let mut broker = BrokerClient::new(channel(&leader));
    let produce = |payload: produce_request::Payload, partition: i32, topic: &str, acks: i32| {
        ProduceRequest {
            topic: topic.into(),
            partition,
            acks: Some(acks),
            payload: Some(payload),
            ..Default::default()
        }
    };
    let good = batch_of(&[b"x"]);
    let mut wrong_crc = good.to_vec();
    let n = wrong_crc.len();
    wrong_crc[n - 2] ^= 0x55;
    let big = batch_of(&[&[7u8; 3000]]);
    let empty_records = RecordList {
        records: vec![Record::default(); 100_000],
        ..Default::default()
    };
    use produce_request::Payload::{RecordBatch as Batch, Records};
    let cases: Vec<(&str, ProduceRequest, ErrorCode)> = vec![
        (
            "unknown topic",
            produce(Batch(good.clone()), 0, "nope", -1),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "unknown partition",
            produce(Batch(good.clone()), 7, "t", -1),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "negative partition",
            produce(Batch(good.clone()), -1, "t", -1),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "wrong CRC",
            produce(Batch(wrong_crc.into()), 0, "t", -1),
            ErrorCode::CorruptMessage,
        ),
        (
            "garbage",
            produce(Batch(vec![0xde; 300].into()), 0, "t", -1),
            ErrorCode::CorruptMessage,
        ),
        (
            "oversized",
            produce(Batch(big), 0, "t", -1),
            ErrorCode::MessageTooLarge,
        ),
        (
            "100k empty records",
            produce(Records(empty_records), 0, "t", -1),
            ErrorCode::RecordListTooLarge,
        ),
        (
            "bad acks",
            produce(Batch(good.clone()), 0, "t", 5),
            ErrorCode::InvalidRequiredAcks,
        ),
    ];
    for (what, req, code) in cases {
        let err = broker.produce(req).await.expect_err(what);
        assert_eq!(error_code(&err), code, "{what}: {}", err.message());
        assert!(
            err.message().starts_with(code.as_str_name()),
            "{what}: {}",
            err.message()
        );
    }
    let fetch = |offset: i64| FetchRequest {
        topic: "t".into(),
        partition: 0,
        fetch_offset: offset,
        max_bytes: 1000,
        ..Default::default()
    };
    for offset in [-1i64, 3, i64::MAX] {
        let err = broker.fetch(fetch(offset)).await.expect_err("out of range");
        assert_eq!(
            error_code(&err),
            ErrorCode::OffsetOutOfRange,
            "{offset}: {}",
            err.message()
        );
    }
    let err = broker
        .fetch(FetchRequest {
            max_bytes: -5,
            ..fetch(0)
        })
        .await
        .expect_err("negative max_bytes");
    assert_eq!(error_code(&err), ErrorCode::InvalidFetchSize);
    // Nothing changed; the broker still serves.
    assert_eq!(cl.list_offset("t", 0, -1).await.unwrap(), 2);
    let r = broker.fetch(fetch(0)).await.unwrap().into_inner();
    let values: Vec<_> = sluice_storage::batch::batches(r.record_batches)
        .flat_map(|b| {
            b.unwrap()
                .records()
                .map(|r| r.unwrap().value.unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        values,
        vec![
            bytes::Bytes::from_static(b"first"),
            bytes::Bytes::from_static(b"second")
        ]
    );
    cl.produce("t", 0, good, -1).await.unwrap();
    assert_eq!(cl.list_offset("t", 0, -1).await.unwrap(), 3);
}

/// A child process killed and reaped on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn health_of(addr: &str) -> Option<i32> {
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel(addr));
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sluice.v1.Broker".into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_a_node_is_ready() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let (controller_port, broker_port) = (ports[0], ports[1]);
    let voters = format!("1@127.0.0.1:{controller_port}");
    let spawn = |role: &str, port: u16| {
        Proc(
            std::process::Command::new(sluice_bin())
                .args([
                    role,
                    "--node-id",
                    "1",
                    "--listeners",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(["--controller-quorum-voters", &voters])
                .args(["--override", "metrics.listener=127.0.0.1:0", "--log-dirs"])
                .arg(dir.path().join(role))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    // The broker starts first: no controller to register with, so it is not ready.
    let _broker = spawn("broker", broker_port);
    let addr = format!("127.0.0.1:{broker_port}");
    let status = wait_for("the broker's health endpoint", WAIT, || health_of(&addr)).await;
    assert_eq!(status, ServingStatus::NotServing as i32);
    let _controller = spawn("controller", controller_port);
    wait_for("SERVING once registered and unfenced", WAIT, || async {
        (health_of(&addr).await? == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    let caddr = format!("127.0.0.1:{controller_port}");
    let controller_health = |addr: String| async move {
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel(&addr));
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sluice.v1.Controller".into(),
            })
            .await
            .ok()?;
        Some(r.into_inner().status)
    };
    wait_for("the single-voter controller SERVING", WAIT, || {
        controller_health(caddr.clone())
    })
    .await;
    // A controller whose two fellow voters never start has no quorum: NOT_SERVING.
    let lonely = free_ports(3);
    let voters3 = format!(
        "1@127.0.0.1:{},2@127.0.0.1:{},3@127.0.0.1:{}",
        lonely[0], lonely[1], lonely[2]
    );
    let _lonely = Proc(
        std::process::Command::new(sluice_bin())
            .args(["controller", "--node-id", "1"])
            .args(["--listeners", &format!("127.0.0.1:{}", lonely[0])])
            .args(["--controller-quorum-voters", &voters3])
            .args(["--override", "metrics.listener=127.0.0.1:0", "--log-dirs"])
            .arg(dir.path().join("lonely"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let status = wait_for("the lonely controller's health", WAIT, || {
        controller_health(format!("127.0.0.1:{}", lonely[0]))
    })
    .await;
    assert_eq!(
        status,
        ServingStatus::NotServing as i32,
        "no quorum, not ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_retention_change_deletes_old_segments_on_a_live_topic() {
    let c = Cluster::start(1, 1, &[], &["log.retention.check.interval.ms=300"]);
    create_topic_with(
        &c.controller_addr(1),
        "ret",
        1,
        1,
        &[("segment.bytes", "4096")],
    )
    .await;
    let mut client = wait_for("client", WAIT, || async {
        DataClient::connect(&c.bootstrap()).await.ok()
    })
    .await;
    client.wait_for_topic("ret", WAIT).await.unwrap();
    let value = vec![b'v'; 1000];
    // Records stamped now: `batch_of`'s fixed 2023 timestamps are older than the default
    // `retention.ms` (7 days), so time retention could delete closed segments while this
    // loop runs (it did, once, on a loaded machine).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for _ in 0..40 {
        let mut b = sluice_storage::RecordBatchBuilder::new();
        b.append(now, None, Some(&value), &[]);
        client.produce("ret", 0, b.build(), -1).await.unwrap();
    }
    assert_eq!(
        client.list_offset("ret", 0, -2).await.unwrap(),
        0,
        "nothing deleted yet"
    );
    let admin = sluice_client::Admin::connect(&c.bootstrap()).await.unwrap();
    admin
        .alter_topic_configs("ret", vec![("retention.bytes".into(), Some("8192".into()))])
        .await
        .unwrap();
    let bootstrap = c.bootstrap();
    let start = wait_for("the log start offset to move", WAIT, || {
        let bootstrap = bootstrap.clone();
        async move {
            let mut client = DataClient::connect(&bootstrap).await.ok()?;
            let o = client.list_offset("ret", 0, -2).await.ok()?;
            (o > 0).then_some(o)
        }
    })
    .await;
    assert!(
        start >= 30,
        "about 8 KiB of 40 KiB kept; log start is {start}"
    );
    let end = client.list_offset("ret", 0, -1).await.unwrap();
    assert_eq!(end, 40, "retention never touches the log end");
}

/// Goal: once a broker's own metadata names it the leader of a partition, it accepts a
/// produce for that partition instead of answering NOT_LEADER with a hint that names
/// itself (a client following that hint would loop). Method: 1 controller + 1 broker; a
/// 300-partition topic (the broker opens 300 logs after its metadata already lists them);
/// as soon as the broker's Metadata answer lists the topic, one acks=1 produce to every
/// partition at once; every one must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_accepts_produce_as_soon_as_its_metadata_names_it_leader() {
    const PARTITIONS: i32 = 300;
    let c = Cluster::start(1, 1, &[], &[]);
    let mut broker = BrokerClient::new(channel(&c.broker_addr(1)));
    let metadata = |mut b: BrokerClient<tonic::transport::Channel>| async move {
        b.metadata(MetadataRequest {
            topics: vec!["wide".into()],
            allow_auto_topic_creation: false,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
    };
    wait_for("the broker to be registered and unfenced", WAIT, || async {
        metadata(broker.clone())
            .await
            .filter(|m| m.brokers.iter().any(|b| b.broker_id == 1))
    })
    .await;
    let created = create_topic(&c.controller_addr(1), "wide", PARTITIONS, 1)
        .await
        .expect("create the topic");
    assert_eq!(created.error_code, 0, "{}", created.error_message);
    let led = wait_for("the broker's metadata to list the topic", WAIT, || async {
        let m = metadata(broker.clone()).await?;
        let t = m.topics.into_iter().find(|t| t.name == "wide")?;
        (t.partitions.len() == PARTITIONS as usize && t.partitions.iter().all(|p| p.leader_id == 1))
            .then_some(t.partitions.len())
    })
    .await;
    assert_eq!(led, PARTITIONS as usize);
    let mut sends = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let mut b = broker.clone();
        sends.spawn(async move {
            b.produce(ProduceRequest {
                topic: "wide".into(),
                partition: p,
                acks: Some(1),
                timeout_ms: 10_000,
                payload: Some(produce_request::Payload::RecordBatch(batch_of(&[b"v"]))),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("partition {p}: {:?} {}", error_code(&s), s.message()))
        });
    }
    let failed: Vec<String> = sends
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failed.is_empty(),
        "{} produces refused: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    broker
        .metadata(MetadataRequest::default())
        .await
        .expect("still serving");
}

/// Goal (issue 18.1): a command whose reader goes away (`sluice consume … | head -3`) exits
/// quietly, as Unix tools do (SIGPIPE, status 141 in a shell), instead of panicking with
/// "failed printing to stdout". Method: 3000 records in a topic; `sluice consume
/// --from-beginning` with its stdout on a pipe that is closed after the first line; the
/// process must end by SIGPIPE (or success) and print no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_reader_goes_away_exits_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let c = Cluster::start(1, 1, &[], &[]);
    create_topic_with(&c.controller_addr(1), "piped", 1, 1, &[]).await;
    let mut cl = client(&c.bootstrap()).await;
    // Far more output than a pipe buffers (64 KiB): the consumer is still writing when its
    // reader goes away. (With less, it could write everything into the pipe first and then
    // wait for new records, never writing again: `tail -f | head -1` does the same.)
    for chunk in 0..30 {
        let values: Vec<String> = (0..100)
            .map(|i| format!("value-{chunk}-{i}-{}", "x".repeat(200)))
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        cl.produce("piped", 0, batch_of(&refs), 1)
            .await
            .expect("acks=1 produce");
    }
    let mut child = std::process::Command::new(sluice_bin())
        .args([
            "consume",
            "piped",
            "--from-beginning",
            "--bootstrap",
            &c.bootstrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = ChildGuard(child);
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "the consumer printed something");
    // The reader is gone now (the BufReader and the pipe's read end were dropped).
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(
        status.success() || status.signal() == Some(13),
        "ended by SIGPIPE or cleanly: {status:?}\n{err}"
    );
}

/// Goal (issue 18.3): record headers through the CLI, in order and with duplicates, and
/// kcat-style `--format` for consume. Method: `sluice produce --header a=1 --header a=2
/// --header b` writes one keyed record; `consume -o json` shows the three headers in order,
/// the gRPC API returns the same, and `--format '%k|%s|%h|%p:%o\n'` prints them as text. A
/// header with an empty key is refused with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_through_the_cli_and_the_format_string_prints_them() {
    use std::io::Write;
    let c = Cluster::start(1, 1, &[], &[]);
    create_topic_with(&c.controller_addr(1), "h", 1, 1, &[]).await;
    let b = c.bootstrap();
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(sluice_bin())
            .args(args)
            .args(["--bootstrap", &b])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    wait_for("the topic to be produced to", WAIT, || async {
        let out = run(
            &[
                "produce",
                "h",
                "--key-separator",
                ":",
                "--header",
                "a=1",
                "--header",
                "a=2",
                "--header",
                "b",
            ],
            "k:v\n",
        );
        out.status.success().then_some(())
    })
    .await;
    let out = run(
        &[
            "consume",
            "h",
            "--from-beginning",
            "--max-records",
            "1",
            "-o",
            "json",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rec["headers"],
        serde_json::json!([
            {"key": "a", "value": "1"},
            {"key": "a", "value": "2"},
            {"key": "b", "value": null}
        ])
    );
    let mut cl = client(&b).await;
    let got = cl.fetch("h", 0, 0, 1 << 20).await.unwrap();
    let headers: Vec<(String, Option<Vec<u8>>)> = got.records[0]
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("a".to_string(), Some(b"1".to_vec())),
            ("a".to_string(), Some(b"2".to_vec())),
            ("b".to_string(), None)
        ],
        "the same over gRPC"
    );
    let out = run(
        &[
            "consume",
            "h",
            "--from-beginning",
            "--max-records",
            "1",
            "--format",
            "%k|%s|%h|%p:%o\\n",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k|v|a=1,a=2,b|0:0\n");
    let out = run(&["produce", "h", "--header", "=x"], "v\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the key is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Per-line headers, Kafka console producer style; a bad line stops produce after the
    // lines before it are written, and the error names it.
    let out = run(
        &[
            "produce",
            "h",
            "--parse-headers",
            "--key-separator",
            "=",
            "--header",
            "all=1",
            "--null-marker",
            "NULL",
        ],
        "x:1,x:2,y:NULL\tk2=v2\nNULL\tv3\nno delimiter\nnever\tnever\n",
    );
    assert!(!out.status.success(), "a bad line fails the command");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: no headers delimiter"), "{err}");
    let out = run(
        &[
            "consume",
            "h",
            "--from-beginning",
            "--max-records",
            "3",
            "--timeout-ms",
            "3000",
            "-o",
            "json",
        ],
        "",
    );
    let recs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert_eq!(recs[1]["key"], "k2");
    assert_eq!(recs[1]["value"], "v2");
    assert_eq!(
        recs[1]["headers"],
        serde_json::json!([
            {"key": "all", "value": "1"},
            {"key": "x", "value": "1"},
            {"key": "x", "value": "2"},
            {"key": "y", "value": null}
        ])
    );
    assert_eq!(recs[2]["value"], "v3");
    assert_eq!(
        recs[2]["headers"],
        serde_json::json!([{"key": "all", "value": "1"}])
    );
}

/// Goal: a consumer whose broker is gone waits between retries instead of spinning (Kafka's
/// `retry.backoff.ms`): it used to burn over half a core asking again at once. Method: a
/// `sluice consume` reading a topic of a 1 + 1 cluster; stop the cluster; over the next 3 s
/// the consumer may use at most a fifth of one core (it is waiting, not working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_broker_is_gone_does_not_spin() {
    let mut c = Cluster::start(1, 1, &[], &[]);
    create_topic_with(&c.controller_addr(1), "gone", 1, 1, &[]).await;
    let mut cl = client(&c.bootstrap()).await;
    cl.produce("gone", 0, batch_of(&[b"one"]), 1)
        .await
        .expect("acks=1 produce");
    let mut child = ChildGuard(
        std::process::Command::new(sluice_bin())
            .args([
                "consume",
                "gone",
                "--from-beginning",
                "--bootstrap",
                &c.bootstrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "one");
    c.stop_all();
    // Measure from now: its fetches fail at once, so a spinning consumer shows in the window.
    let before = cpu_time(child.id()).expect("the consumer runs");
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_time(child.id()).expect("the consumer still runs") - before;
    let share = used.as_secs_f64() / start.elapsed().as_secs_f64();
    assert!(
        share < 0.2,
        "the consumer used {:.0} % of a core while its broker was gone",
        share * 100.0
    );
}

/// Segment `.log` files a process has open now.
fn open_segment_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                // Segments are named by their base offset (20 digits); not the node's own log.
                .filter(|p| {
                    p.file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Goal: a broker with more replicas than `log.segment.open.files.max` keeps at most that
/// many segment files open and still serves every partition: data written before its files
/// were closed reads back whole, and appends after a reopen land after it (issue #14:
/// replicas beyond the open-file limit). Method: 1 broker with a limit of 16 and a
/// 40-partition topic; two rounds of one batch per partition, reading every partition back
/// after each; the broker's `/proc/PID/fd` is checked after each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_more_replicas_than_open_files_serves_them_all() {
    let c = Cluster::start(1, 1, &[], &["log.segment.open.files.max=16"]);
    create_topic_with(&c.controller_addr(1), "many", 40, 1, &[]).await;
    let mut cl = client(&c.bootstrap()).await;
    let pid = c.broker_pid(1);
    for round in 0..2 {
        for p in 0..40 {
            let mut b = sluice_storage::RecordBatchBuilder::new();
            b.append(
                1_700_000_000_000,
                None,
                Some(format!("r{round}-p{p}").as_bytes()),
                &[],
            );
            let r = cl.produce("many", p, b.build(), -1).await.unwrap();
            assert_eq!(r.base_offset, round, "partition {p}, round {round}");
        }
        let open = open_segment_files(pid);
        assert!(
            open <= 16,
            "round {round}: {open} segment files open, limit 16"
        );
        for p in 0..40 {
            let r = cl.fetch("many", p, 0, 1 << 20).await.unwrap();
            let got: Vec<String> = r
                .records
                .iter()
                .map(|rec| String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap())
                .collect();
            let want: Vec<String> = (0..=round).map(|r| format!("r{r}-p{p}")).collect();
            assert_eq!(got, want, "partition {p} after round {round}");
        }
        let open = open_segment_files(pid);
        assert!(
            open <= 16,
            "round {round}, after reads: {open} segment files open"
        );
    }
}
