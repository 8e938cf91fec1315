//! Client guarantees with real processes: the idempotent producer across leader kills
//! (no loss, no duplicates, order kept), replayed batches, consumer groups rebalancing on a
//! member's death and surviving the coordinator's, and group bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use sluice_proto::status::error_code;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const CONTROLLER: &[&str] = &["broker.session.timeout.ms=2000"];
const BROKER: &[&str] = &[
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=3000",
    "group.consumer.session.timeout.ms=3000",
    "group.consumer.heartbeat.interval.ms=300",
    "offsets.topic.num.partitions=3",
];

async fn partition_leader(c: &Cluster, topic: &str, p: usize) -> Option<(i32, i32, usize)> {
    for id in 1..=3 {
        if let Some(t) = describe_topic(&c.controller_addr(id), topic).await {
            let ps = &t.partitions[p];
            return Some((ps.leader_id, ps.leader_epoch, ps.isr.len()));
        }
    }
    None
}

/// Consumes every partition of `topic` from the start until `n` records were read.
async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<(i32, i64, String)> {
    let mut c = Consumer::connect(
        bootstrap,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("consumer");
    c.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < WAIT {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.push((r.partition, r.offset, v));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_leader_kills_without_loss_or_duplicates() {
    const N: usize = 50_000;
    const PARTITIONS: i32 = 3;
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(
        &c.controller_addr(1),
        "ids",
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let producer = wait_for("producer", WAIT, || async {
        Producer::connect(
            &c.bootstrap(),
            ProducerConfig {
                request_timeout: Duration::from_secs(5),
                retry_backoff: Duration::from_millis(50),
                ..ProducerConfig::default()
            },
        )
        .await
        .ok()
    })
    .await;
    assert!(
        producer.producer_id().0 >= 0,
        "idempotence is on by default"
    );
    let producer = Arc::new(producer);
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = {
        let producer = producer.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut futures = Vec::with_capacity(N);
            for n in 0..N {
                let r = ProducerRecord::new("ids", format!("{n}")).partition(n as i32 % PARTITIONS);
                futures.push(producer.send(r).await.expect("send"));
                if n % 500 == 499 {
                    // Pace the producer so the kills land mid-stream.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut results = Vec::with_capacity(N);
            for f in futures {
                let r = f.await;
                acked.fetch_add(1, Ordering::Relaxed);
                results.push(r);
            }
            results
        })
    };
    // Kill the leader of a partition three times while records flow.
    let mut kills = 0;
    for round in 0..3usize {
        let p = round % PARTITIONS as usize;
        let (leader, epoch, _) = wait_for("a leader", WAIT, || async {
            partition_leader(&c, "ids", p).await.filter(|l| l.0 >= 0)
        })
        .await;
        c.kill_broker(leader as u16);
        kills += 1;
        wait_for("a new leader", WAIT, || async {
            partition_leader(&c, "ids", p)
                .await
                .filter(|l| l.0 >= 0 && l.1 > epoch)
        })
        .await;
        c.start_broker(leader as u16);
        wait_for("the ISR to be complete", WAIT, || async {
            partition_leader(&c, "ids", p).await.filter(|l| l.2 == 3)
        })
        .await;
    }
    let results = tokio::time::timeout(Duration::from_secs(180), sender)
        .await
        .expect("all sends complete")
        .unwrap();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).take(3).collect();
    assert!(
        failed.is_empty(),
        "every record is acknowledged: {failed:?}"
    );
    // Acknowledged offsets are distinct per partition.
    let mut acked_at = BTreeSet::new();
    for r in results.iter().flatten() {
        assert!(
            acked_at.insert((r.partition, r.offset)),
            "offset {r:?} acknowledged twice"
        );
    }

    let records = read_all(&c.bootstrap(), "ids", PARTITIONS, N).await;
    let mut seen = BTreeMap::new();
    let mut last_in_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for (p, offset, v) in &records {
        let n: usize = v.parse().unwrap();
        assert_eq!(
            n as i32 % PARTITIONS,
            *p,
            "record {n} in the wrong partition"
        );
        if let Some(prev) = seen.insert(n, (*p, *offset)) {
            panic!("record {n} stored twice: at {prev:?} and {:?}", (p, offset));
        }
        if let Some(&last) = last_in_partition.get(p) {
            assert!(n > last, "partition {p}: {n} after {last} (reordered)");
        }
        last_in_partition.insert(*p, n);
        assert!(
            acked_at.contains(&(*p, *offset)),
            "offset {p}/{offset} was not the acknowledged one"
        );
    }
    assert_eq!(
        seen.len(),
        N,
        "every acknowledged record is readable ({kills} leader kills)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_gets_its_original_offset_and_a_gap_is_refused() {
    let c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "r", 1, 1, &[]).await;
    let mut b = BrokerClient::new(channel(&c.broker_addr(1)));
    let pid = wait_for("a producer id", WAIT, || {
        let mut b = b.clone();
        async move {
            b.init_producer_id(InitProducerIdRequest::default())
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    let other = b
        .init_producer_id(InitProducerIdRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        pid.producer_id, other.producer_id,
        "producer ids are unique"
    );
    let batch = |seq: i32, values: &[&str]| {
        let mut bb = sluice_storage::RecordBatchBuilder::new().producer(
            pid.producer_id,
            pid.producer_epoch as i16,
            seq,
        );
        for v in values {
            bb.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
        }
        bb.build()
    };
    let produce = |bytes: bytes::Bytes| ProduceRequest {
        topic: "r".into(),
        partition: 0,
        acks: Some(-1),
        payload: Some(produce_request::Payload::RecordBatch(bytes)),
        ..Default::default()
    };
    let first = wait_for("the first produce", WAIT, || {
        let mut b = b.clone();
        let req = produce(batch(0, &["a", "b", "c"]));
        async move { b.produce(req).await.ok() }
    })
    .await
    .into_inner();
    b.produce(produce(batch(3, &["d"]))).await.unwrap();
    let replay = b
        .produce(produce(batch(0, &["a", "b", "c"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (replay.base_offset, replay.last_offset),
        (first.base_offset, first.last_offset),
        "a replayed batch is answered with its original offsets"
    );
    let gap = b.produce(produce(batch(9, &["x"]))).await.unwrap_err();
    assert_eq!(
        error_code(&gap),
        ErrorCode::OutOfOrderSequenceNumber,
        "{gap:?}"
    );
    assert!(gap.message().contains("expected 4"), "{}", gap.message());
    let stored = read_all(&c.bootstrap(), "r", 1, 4).await;
    let values: Vec<&str> = stored.iter().map(|(_, _, v)| v.as_str()).collect();
    assert_eq!(
        values,
        ["a", "b", "c", "d"],
        "nothing stored twice, nothing after the gap"
    );
}

/// A `sluice consume --group` process whose JSON lines are collected.
struct CliConsumer {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: tempfile::NamedTempFile,
}

impl CliConsumer {
    fn start(bootstrap: &str, topic: &str, group: &str) -> Self {
        let log = tempfile::NamedTempFile::new().expect("consumer log file");
        let mut child = Command::new(sluice_bin())
            .args([
                "consume",
                topic,
                "--group",
                group,
                "--from-beginning",
                "-o",
                "json",
            ])
            .args(["--timeout-ms", "120000", "--bootstrap", bootstrap])
            .env("RUST_LOG", "info,h2=warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("consumer log handle"))
            .spawn()
            .expect("spawn consumer");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        CliConsumer {
            child,
            lines,
            reader: Some(reader),
            log,
        }
    }

    /// SIGKILLs the consumer and returns every value it printed before it died.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        self.values()
    }

    /// For failure messages: per partition, how many records and the highest offset
    /// this consumer printed, then the tail of its log.
    fn report(&self) -> String {
        let mut seen = BTreeMap::<i64, (usize, i64)>::new();
        for v in self.lines.lock().unwrap().iter() {
            let e = seen
                .entry(v["partition"].as_i64().unwrap_or(-1))
                .or_default();
            e.0 += 1;
            e.1 = e.1.max(v["offset"].as_i64().unwrap_or(-1));
        }
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "pid {}: (partition, (records, highest offset)) {seen:?}\n{}",
            self.child.id(),
            tail.join("\n")
        )
    }

    fn values(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for CliConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice group describe G -o json`.
fn describe_group(bootstrap: &str, group: &str) -> Option<serde_json::Value> {
    let out = Command::new(sluice_bin())
        .args([
            "group",
            "describe",
            group,
            "-o",
            "json",
            "--bootstrap",
            bootstrap,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// member id → partitions, from a describe document.
fn owners(d: &serde_json::Value) -> BTreeMap<String, Vec<i64>> {
    let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in d["partitions"].as_array().unwrap() {
        if let Some(id) = p["consumer_id"].as_str() {
            m.entry(id.to_string())
                .or_default()
                .push(p["partition"].as_i64().unwrap());
        }
    }
    m
}

async fn produce_range(producer: &Producer, from: usize, to: usize) {
    let mut fs = Vec::new();
    for n in from..to {
        fs.push(
            producer
                .send(ProducerRecord::new("g", format!("{n}")).key(format!("k{n}")))
                .await
                .unwrap(),
        );
    }
    for f in fs {
        f.await.expect("acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_rebalance_on_member_death_and_survive_coordinator_loss() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(
        &c.controller_addr(1),
        "g",
        6,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let bootstrap = c.bootstrap();
    let producer = wait_for("producer", WAIT, || async {
        Producer::connect(&bootstrap, ProducerConfig::default())
            .await
            .ok()
    })
    .await;
    produce_range(&producer, 0, 3000).await;

    let mut consumers: Vec<CliConsumer> = (0..3)
        .map(|_| CliConsumer::start(&bootstrap, "g", "grp"))
        .collect();
    let committed_history = Arc::new(Mutex::new(BTreeMap::<i64, i64>::new()));
    let check_monotonic = |d: &serde_json::Value| {
        let mut h = committed_history.lock().unwrap();
        for p in d["partitions"].as_array().unwrap() {
            if let Some(o) = p["current_offset"].as_i64() {
                let part = p["partition"].as_i64().unwrap();
                let prev = h.insert(part, o).unwrap_or(-1);
                assert!(
                    o >= prev,
                    "partition {part}: committed offset went back from {prev} to {o}"
                );
            }
        }
    };
    let d = wait_for("three members with two partitions each", WAIT, || async {
        let d = describe_group(&bootstrap, "grp")?;
        check_monotonic(&d);
        let o = owners(&d);
        (o.len() == 3 && o.values().all(|ps| ps.len() == 2)).then_some(d)
    })
    .await;
    assert_eq!(d["members"], 3);

    // kill -9 one member: its partitions move to the others within the session timeout
    // plus a rebalance.
    // What it printed before dying counts: the group committed those offsets, so the
    // others rightly start after them.
    let killed_values = consumers.remove(0).kill();
    let t0 = Instant::now();
    wait_for("two members owning all six partitions", WAIT, || async {
        let d = describe_group(&bootstrap, "grp")?;
        check_monotonic(&d);
        let o = owners(&d);
        (o.len() == 2 && o.values().map(Vec::len).sum::<usize>() == 6).then_some(())
    })
    .await;
    let moved_after = t0.elapsed();
    assert!(
        moved_after < Duration::from_secs(3 + 5),
        "partitions moved after {moved_after:?} (session timeout 3 s)"
    );

    // Kill the coordinator's broker: the group keeps consuming.
    let mut b = BrokerClient::new(channel(&c.broker_addr(1)));
    let coordinator = b
        .find_coordinator(FindCoordinatorRequest {
            group_id: "grp".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .coordinator
        .unwrap()
        .broker_id;
    c.kill_broker(coordinator as u16);
    produce_range(&producer, 3000, 4000).await;
    let all: BTreeSet<String> = (0..4000).map(|n| n.to_string()).collect();
    let t0 = Instant::now();
    loop {
        let got: BTreeSet<String> = consumers
            .iter()
            .flat_map(CliConsumer::values)
            .chain(killed_values.iter().cloned())
            .collect();
        if got.is_superset(&all) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let missing: Vec<&String> = all.difference(&got).collect();
            let reports: Vec<String> = consumers.iter().map(CliConsumer::report).collect();
            let mut brokers = String::new();
            for id in 1..=3u16 {
                let log = c.broker_log(id);
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("group"))
                    .collect();
                let from = lines.len().saturating_sub(30);
                brokers += &format!("broker {id}:\n{}\n", lines[from..].join("\n"));
            }
            panic!(
                "timed out after 90s waiting for every record consumed at least once (coordinator \
                 {coordinator} killed): {} of 4000 missing, first {:?}\ngroup: {}\n\
                 consumers:\n{}\n{brokers}",
                missing.len(),
                &missing[..missing.len().min(20)],
                describe_group(&bootstrap, "grp").unwrap_or_default(),
                reports.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.start_broker(coordinator as u16);
    let d = wait_for("offsets committed up to the end", WAIT, || async {
        let d = describe_group(&bootstrap, "grp")?;
        check_monotonic(&d);
        let lag: i64 = d["partitions"]
            .as_array()?
            .iter()
            .map(|p| p["lag"].as_i64().unwrap_or(1))
            .sum();
        (lag == 0).then_some(d)
    })
    .await;
    assert_eq!(d["partitions"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bad_input_and_zombie_commits_are_refused_without_changes() {
    let c = Cluster::start(
        1,
        1,
        CONTROLLER,
        &[BROKER, &["offsets.topic.replication.factor=1"]].concat(),
    );
    create_topic_with(&c.controller_addr(1), "z", 2, 1, &[]).await;
    let bootstrap = c.bootstrap();
    let mut consumer = wait_for("consumer", WAIT, || async {
        Consumer::connect(
            &bootstrap,
            ConsumerConfig {
                group_id: Some("zg".into()),
                auto_offset_reset: OffsetReset::Earliest,
                enable_auto_commit: false,
                ..ConsumerConfig::default()
            },
        )
        .await
        .ok()
    })
    .await;
    consumer.subscribe(vec!["z".into()]).unwrap();
    wait_for("an assignment", WAIT, || {
        let ready = consumer.member().1 > 0;
        async move { ready.then_some(()) }
    })
    .await;
    consumer.poll(Duration::from_millis(200)).await.unwrap();
    consumer
        .commit_offsets(vec![(("z".into(), 0), 0)])
        .await
        .unwrap();
    let (member, epoch) = consumer.member();

    let coordinator = sluice_client::consumer::find_coordinator(consumer.cluster(), "zg")
        .await
        .unwrap();
    let mut b = BrokerClient::new(channel(&coordinator));
    let commit =
        |member: &str, epoch: i32, topic: &str, partition: i32, offset: i64| OffsetCommitRequest {
            group_id: "zg".into(),
            member_id: member.into(),
            member_epoch: epoch,
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                topic: topic.into(),
                partition,
                committed_offset: offset,
                ..Default::default()
            }],
        };
    // A zombie with an older epoch, and an unknown member.
    let stale = b
        .offset_commit(commit(&member, epoch - 1, "z", 0, 5))
        .await
        .unwrap_err();
    assert_eq!(error_code(&stale), ErrorCode::StaleMemberEpoch, "{stale:?}");
    let unknown = b
        .offset_commit(commit("nobody", 1, "z", 0, 5))
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&unknown),
        ErrorCode::UnknownMemberId,
        "{unknown:?}"
    );
    assert!(
        unknown.message().contains("nobody"),
        "{}",
        unknown.message()
    );
    // An unknown partition and a negative offset fail per partition.
    let r = b
        .offset_commit(commit(&member, epoch, "z", 9, 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results[0].error_code,
        ErrorCode::UnknownTopicOrPartition as i32
    );
    let r = b
        .offset_commit(commit(&member, epoch, "z", 0, -3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].error_code, ErrorCode::InvalidRequest as i32);
    assert!(r.results[0].error_message.contains("negative"));
    // An empty group id.
    let empty = b
        .consumer_group_heartbeat(ConsumerGroupHeartbeatRequest {
            group_id: String::new(),
            subscribed_topic_names: vec!["z".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&empty), ErrorCode::InvalidGroupId);
    // An administrator may not reset a group with members.
    let admin = b
        .offset_commit(commit("", -1, "z", 0, 1))
        .await
        .unwrap_err();
    assert_eq!(error_code(&admin), ErrorCode::NonEmptyGroup);
    // Nothing changed.
    let committed = consumer.committed(&[("z".into(), 0)]).await.unwrap();
    assert_eq!(committed[&("z".to_string(), 0)], 0);
    // The coordinator still serves.
    consumer
        .commit_offsets(vec![(("z".into(), 0), 0)])
        .await
        .unwrap();
}

/// Batch sizes as stored: the record count of every batch of partition 0 of `topic`.
async fn stored_batches(bootstrap: &str, topic: &str) -> Vec<i32> {
    let mut client = sluice_client::DataClient::connect(bootstrap).await.unwrap();
    let (_, addr) = client.leader(topic, 0).unwrap();
    let _ = &mut client;
    let resp = BrokerClient::new(channel(&addr))
        .fetch(FetchRequest {
            topic: topic.into(),
            partition: 0,
            fetch_offset: 0,
            max_bytes: 1 << 20,
            format: RecordFormat::Batches as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sluice_storage::batch::headers(&resp.record_batches)
        .map(|h| h.records_count)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_batching_respects_batch_size_and_linger() {
    let c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "bs", 1, 1, &[]).await;
    create_topic_with(&c.controller_addr(1), "lg", 1, 1, &[]).await;
    let bootstrap = c.bootstrap();

    // batch.size: 40 records of ~125 bytes with batch.size 1000 and a long linger are sent
    // as soon as each batch fills: 5 batches of 8, not one, and without waiting 10 s.
    let p = wait_for("producer", WAIT, || async {
        Producer::connect(
            &bootstrap,
            ProducerConfig {
                batch_size: 1000,
                linger: Duration::from_secs(10),
                max_in_flight: 1,
                ..ProducerConfig::default()
            },
        )
        .await
        .ok()
    })
    .await;
    p.cluster().wait_for_topic("bs", WAIT).await.unwrap();
    let start = Instant::now();
    let mut fs = Vec::new();
    for i in 0..40 {
        let r = ProducerRecord::new("bs", vec![b'x'; 100]).partition(0);
        let _ = i;
        fs.push(p.send(r).await.unwrap());
    }
    for f in fs {
        f.await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "full batches do not wait for linger.ms"
    );
    let sizes = stored_batches(&bootstrap, "bs").await;
    assert_eq!(sizes.iter().sum::<i32>(), 40);
    assert!(sizes.len() >= 4, "split by batch.size: {sizes:?}");
    assert!(
        sizes.iter().all(|n| *n * 125 <= 1000 + 125),
        "no batch over batch.size: {sizes:?}"
    );

    // linger.ms: three records sent together wait for the linger and go as one batch.
    let p = Producer::connect(
        &bootstrap,
        ProducerConfig {
            batch_size: 1 << 20,
            linger: Duration::from_millis(300),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    p.cluster().wait_for_topic("lg", WAIT).await.unwrap();
    let start = Instant::now();
    let mut fs = Vec::new();
    for i in 0..3 {
        fs.push(
            p.send(ProducerRecord::new("lg", format!("r{i}")).partition(0))
                .await
                .unwrap(),
        );
    }
    for f in fs {
        f.await.unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "the batch waited for linger.ms"
    );
    assert_eq!(
        stored_batches(&bootstrap, "lg").await,
        vec![3],
        "one batch of three"
    );
}

/// Regression (found by `sluice bench produce` this session): a ProduceStream kept each
/// acks=all replication wait in a list it polled only between appends. A wait woken with
/// the partition's mutex permit while the stream's loop was inside the next append (which
/// wanted the same mutex) deadlocked the partition: follower fetches and the ISR loop
/// queued behind it, so acks=all hung for good. Method: 20 000 records of 1 KiB, sticky
/// partitioning and pipelined 16 KiB batches through the Producer, acks=all, RF 3. Every
/// record must be acknowledged, and a later write must still be (the partitions are not
/// wedged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_acks_all_batches_on_one_stream_never_wedge_a_partition() {
    let c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(
        &c.controller_addr(1),
        "pipe",
        3,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let producer = wait_for("producer", WAIT, || async {
        Producer::connect(
            &c.bootstrap(),
            ProducerConfig {
                batch_size: 16 * 1024,
                linger: Duration::from_millis(5),
                max_in_flight: 4,
                ..ProducerConfig::default()
            },
        )
        .await
        .ok()
    })
    .await;
    let value = vec![b'x'; 1024];
    let mut acks = Vec::new();
    for _ in 0..20_000 {
        acks.push(
            producer
                .send(ProducerRecord::new("pipe", value.clone()))
                .await
                .expect("queued"),
        );
    }
    let all = async {
        for f in acks {
            f.await.expect("acknowledged");
        }
    };
    tokio::time::timeout(WAIT, all)
        .await
        .expect("every record acknowledged (no wedged partition)");
    for p in 0..3 {
        let later = producer
            .send(ProducerRecord::new("pipe", b"later".to_vec()).partition(p))
            .await
            .expect("queued");
        tokio::time::timeout(WAIT, later)
            .await
            .expect("partition still serves acks=all")
            .expect("acknowledged");
    }
}

/// Goal: an offset commit that waits for replication of `__consumer_offsets` (acks=all)
/// does not stall the other groups of its coordinator: their heartbeats are answered
/// while it waits (a stalled heartbeat expires members and rebalances healthy groups).
/// Method: 1 controller + 3 brokers, one RF-3 offsets partition (every group on one
/// coordinator), two groups with one member each; SIGSTOP both followers of the offsets
/// partition (no fencing, no ISR shrink for 30 s), commit for group A (it cannot be
/// replicated), and while it waits, heartbeat group B. Then resume and commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waiting_for_replication_does_not_stall_other_groups_of_its_coordinator() {
    let mut c = Cluster::start(
        1,
        3,
        &["broker.session.timeout.ms=30000"],
        &[
            "broker.heartbeat.interval.ms=300",
            "replica.lag.time.max.ms=30000",
            "group.consumer.session.timeout.ms=30000",
            "offsets.topic.num.partitions=1",
            "offsets.topic.replication.factor=3",
        ],
    );
    create_topic_with(&c.controller_addr(1), "t", 1, 1, &[]).await;
    let any = BrokerClient::new(channel(&c.broker_addr(1)));
    let coordinator = wait_for("a coordinator", WAIT, || {
        let mut b = any.clone();
        async move {
            let r = b
                .find_coordinator(FindCoordinatorRequest {
                    group_id: "ga".into(),
                })
                .await
                .ok()?
                .into_inner();
            r.coordinator
        }
    })
    .await;
    wait_for("a full ISR on the offsets partition", WAIT, || async {
        describe_topic(&c.controller_addr(1), "__consumer_offsets")
            .await
            .filter(|t| t.partitions[0].isr.len() == 3)
    })
    .await;
    let mut coord = BrokerClient::new(channel(&format!(
        "{}:{}",
        coordinator.host, coordinator.port
    )));
    let join = |group: &str| ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_epoch: 0,
        subscribed_topic_names: vec!["t".into()],
        ..Default::default()
    };
    let mut joined = Vec::new();
    for g in ["ga", "gb"] {
        let r = wait_for("a join", WAIT, || {
            let mut b = coord.clone();
            let req = join(g);
            async move { b.consumer_group_heartbeat(req).await.ok() }
        })
        .await
        .into_inner();
        joined.push((r.member_id, r.member_epoch));
    }
    for id in 1..=3u16 {
        if id as i32 != coordinator.broker_id {
            c.pause_broker(id);
        }
    }
    let (a_member, a_epoch) = joined[0].clone();
    let mut committer = coord.clone();
    let commit = tokio::spawn(async move {
        committer
            .offset_commit(OffsetCommitRequest {
                group_id: "ga".into(),
                member_id: a_member,
                member_epoch: a_epoch,
                group_instance_id: None,
                partitions: vec![OffsetCommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: 7,
                    ..Default::default()
                }],
            })
            .await
    });
    // Let the commit reach the coordinator and start waiting for its followers.
    wait_for("the commit to be appended", WAIT, || async {
        let m = scrape(&c.metrics_addr("broker", coordinator.broker_id as u16))?;
        m.contains("sluice_messages_in_total{topic=\"__consumer_offsets\"}")
            .then_some(())
    })
    .await;
    let (b_member, b_epoch) = joined[1].clone();
    let heartbeat = tokio::time::timeout(
        Duration::from_secs(3),
        coord.consumer_group_heartbeat(ConsumerGroupHeartbeatRequest {
            group_id: "gb".into(),
            member_id: b_member,
            member_epoch: b_epoch,
            ..Default::default()
        }),
    )
    .await;
    assert!(
        !commit.is_finished(),
        "the commit cannot be replicated while both followers are stopped"
    );
    let heartbeat = heartbeat.expect("group gb's heartbeat is answered while ga's commit waits");
    assert_eq!(
        heartbeat.expect("heartbeat").into_inner().member_epoch,
        b_epoch
    );
    for id in 1..=3u16 {
        if id as i32 != coordinator.broker_id {
            c.resume_broker(id);
        }
    }
    // Whatever the first commit's answer, a commit after the followers are back is stored.
    let _ = tokio::time::timeout(WAIT, commit)
        .await
        .expect("commit answered");
    let (a_member, a_epoch) = joined[0].clone();
    wait_for("a commit after the followers resumed", WAIT, || {
        let mut b = coord.clone();
        let req = OffsetCommitRequest {
            group_id: "ga".into(),
            member_id: a_member.clone(),
            member_epoch: a_epoch,
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                topic: "t".into(),
                partition: 0,
                committed_offset: 9,
                ..Default::default()
            }],
        };
        async move {
            let r = b.offset_commit(req).await.ok()?.into_inner();
            (r.results[0].error_code == 0).then_some(())
        }
    })
    .await;
    let fetched = coord
        .offset_fetch(OffsetFetchRequest {
            group_id: "ga".into(),
            ..Default::default()
        })
        .await
        .expect("offset fetch")
        .into_inner();
    assert_eq!(fetched.results[0].committed_offset, 9);
}

/// One batch of `n` records `{round}-{p}-{i}` to each of the four partitions of `hand`,
/// retried until acknowledged (the topic's leader may still be starting).
async fn produce_round(cl: &mut sluice_client::DataClient, round: &str, n: usize) {
    for p in 0..4 {
        let values: Vec<String> = (0..n).map(|i| format!("{round}-{p}-{i}")).collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let deadline = Instant::now() + WAIT;
        while let Err(e) = cl.produce("hand", p, batch_of(&refs), -1).await {
            assert!(Instant::now() < deadline, "produce to hand-{p}: {e}");
            cl.refresh().await.ok();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Goal: when a second member joins, a partition moves to it only after its first owner
/// committed what it had read there and released it (KIP-848 revocation), so the new owner
/// reads no record a second time. Method: 1 + 1, 4 partitions of 50 records; member A
/// (auto-commit on, interval one hour: only a revocation commits) reads all 200; member B
/// joins; both poll until they own two partitions each; then one new record per partition:
/// together they read exactly those four. Without revocation B started its partitions from
/// the last commit (none) and read A's 100 records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_a_new_member_only_after_its_owner_committed_and_released_it() {
    let c = Cluster::start(
        1,
        1,
        CONTROLLER,
        &[BROKER, &["offsets.topic.replication.factor=1"]].concat(),
    );
    create_topic_with(&c.controller_addr(1), "hand", 4, 1, &[]).await;
    let bootstrap = c.bootstrap();
    let mut cl = wait_for("a data client", WAIT, || async {
        sluice_client::DataClient::connect(&bootstrap).await.ok()
    })
    .await;
    produce_round(&mut cl, "old", 50).await;
    let member = || async {
        let mut m = Consumer::connect(
            &bootstrap,
            ConsumerConfig {
                group_id: Some("hg".into()),
                auto_offset_reset: OffsetReset::Earliest,
                auto_commit_interval: Duration::from_secs(3600),
                ..ConsumerConfig::default()
            },
        )
        .await
        .unwrap();
        m.subscribe(vec!["hand".into()]).unwrap();
        m
    };
    let values = |rs: Vec<sluice_client::ConsumerRecord>| -> Vec<String> {
        rs.into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect()
    };
    let mut a = member().await;
    let mut read_by_a = Vec::new();
    let deadline = Instant::now() + WAIT;
    while read_by_a.len() < 200 {
        assert!(
            Instant::now() < deadline,
            "A read {} of 200",
            read_by_a.len()
        );
        read_by_a.extend(values(a.poll(Duration::from_millis(200)).await.unwrap()));
    }
    let mut b = member().await;
    let (mut after_a, mut after_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + WAIT;
    while !(a.assignment().len() == 2 && b.assignment().len() == 2) {
        assert!(
            Instant::now() < deadline,
            "no hand-off: A owns {:?}, B {:?}",
            a.assignment(),
            b.assignment()
        );
        after_a.extend(values(a.poll(Duration::from_millis(100)).await.unwrap()));
        after_b.extend(values(b.poll(Duration::from_millis(100)).await.unwrap()));
    }
    produce_round(&mut cl, "new", 1).await;
    let deadline = Instant::now() + WAIT;
    while after_a.len() + after_b.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "A read {after_a:?}, B {after_b:?} after the hand-off"
        );
        after_a.extend(values(a.poll(Duration::from_millis(100)).await.unwrap()));
        after_b.extend(values(b.poll(Duration::from_millis(100)).await.unwrap()));
    }
    let mut after: Vec<String> = after_a.iter().chain(&after_b).cloned().collect();
    after.sort();
    assert_eq!(
        after,
        (0..4).map(|p| format!("new-{p}-0")).collect::<Vec<_>>(),
        "after the hand-off A read {after_a:?} and B {after_b:?}: nothing of the first 200 again"
    );
    assert!(
        after_b.len() == 2,
        "B reads its two partitions' new records: {after_b:?}"
    );
}

/// Goal: the consumer keeps the next fetch of a partition in flight while the application
/// works (#19), yet delivers every record once, in offset order, across a leader change.
/// Method: 3 + 3, one RF-3 partition (min ISR 2), 4 000 records produced acks=all; a
/// consumer with 4 KiB fetches (hundreds of them, each started before the last answer
/// was handed out) reads while the partition's leader is SIGKILLed after the first 1 000;
/// it must see offsets 0, 1, 2, … 3 999 with values v0 … v3999, no gap, no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_fetching_ahead_delivers_in_order_without_gaps_across_a_leader_change() {
    const N: usize = 4000;
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(
        &c.controller_addr(1),
        "ord",
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let bootstrap = c.bootstrap();
    let producer = wait_for("producer", WAIT, || async {
        Producer::connect(&bootstrap, ProducerConfig::default())
            .await
            .ok()
    })
    .await;
    let mut fs = Vec::new();
    for n in 0..N {
        fs.push(
            producer
                .send(ProducerRecord::new("ord", format!("v{n}")).partition(0))
                .await
                .unwrap(),
        );
    }
    for f in fs {
        f.await.expect("acknowledged");
    }
    let mut consumer = Consumer::connect(
        &bootstrap,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_partition_fetch_bytes: 4096,
            max_poll_records: 7,
            ..ConsumerConfig::default()
        },
    )
    .await
    .unwrap();
    consumer.assign(vec![("ord".into(), 0)]);
    let mut got: Vec<(i64, String)> = Vec::new();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < N {
        assert!(
            Instant::now() < deadline,
            "read {} of {N}; last {:?}",
            got.len(),
            got.last()
        );
        if !killed && got.len() >= 1000 {
            let (leader, _, _) = partition_leader(&c, "ord", 0).await.expect("a leader");
            c.kill_broker(leader as u16);
            killed = true;
        }
        // Retriable failures (the leader gone) are retried by poll; others fail the test.
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            got.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    assert!(killed);
    let want: Vec<(i64, String)> = (0..N).map(|n| (n as i64, format!("v{n}"))).collect();
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..N).find(|&i| got[i] != want[i]) {
        panic!("record {i}: got {:?}, want {:?}", got[i], want[i]);
    }
}
