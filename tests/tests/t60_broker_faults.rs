//! Data-plane faults with real processes: repeated SIGKILL of partition leaders under
//! acks=all load, a SIGSTOPped leader, and losing two of three replicas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::DataClient;
use sluice_proto::status::error_code;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::*;
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// Fast failure detection so each round takes seconds, not Kafka's defaults.
const CONTROLLER: &[&str] = &["broker.session.timeout.ms=2000"];
const BROKER: &[&str] = &[
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=3000",
];

/// A client connected to any broker of `c`.
async fn connected(c: &Cluster) -> DataClient {
    wait_for("client", WAIT, || async {
        DataClient::connect(&c.bootstrap()).await.ok()
    })
    .await
}

/// Topic `t`: one partition, RF 3, min.insync.replicas 2.
async fn replicated_topic(c: &Cluster) {
    create_topic_with(
        &c.controller_addr(1),
        "t",
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
}

async fn leader_and_isr(c: &Cluster, topic: &str) -> Option<(i32, i32, Vec<i32>)> {
    for id in 1..=3 {
        if let Some(t) = describe_topic(&c.controller_addr(id), topic).await {
            let p = &t.partitions[0];
            return Some((p.leader_id, p.leader_epoch, p.isr.clone()));
        }
    }
    None
}

async fn wait_full_isr(c: &Cluster, topic: &str) -> (i32, i32) {
    wait_for("the ISR to be complete again", WAIT, || async {
        let (l, e, isr) = leader_and_isr(c, topic).await?;
        (isr.len() == 3 && l >= 0).then_some((l, e))
    })
    .await
}

/// Every replica's log on disk, after the cluster stopped.
fn replica_logs(c: &Cluster, topic: &str) -> Vec<Vec<(i64, Vec<u8>)>> {
    (1..=3)
        .map(|b| read_replica(&c.replica_dir(b, topic, 0).expect("replica dir")))
        .collect()
}

/// Goal (DESIGN §10.1): with RF=3, acks=all and min.insync.replicas=2, no acknowledged
/// record is lost and order holds while the partition leader is SIGKILLed again and again.
/// Method: a producer writes continuously (each attempt a fresh value, never re-sent); 10
/// times the leader is killed, a new leader must take over, the victim restarts from its
/// disk and rejoins the ISR. At the end every replica's log on disk holds every acknowledged
/// record at its acknowledged offset, no value appears twice, and the replicas' logs are
/// identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_leader_kills() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    replicated_topic(&c).await;
    wait_full_isr(&c, "t").await;
    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every attempt carries a fresh value and is sent once, never retried: so a value seen
    // twice in a log would be the cluster duplicating data, not the client.
    let producer = {
        let (acked, stop, bootstrap) = (acked.clone(), stop.clone(), c.bootstrap());
        tokio::spawn(async move {
            let mut cl = wait_for("client", WAIT, || async {
                DataClient::connect(&bootstrap).await.ok()
            })
            .await;
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let value = format!("v{seq}");
                seq += 1;
                let Some((_, addr)) = cl.leader("t", 0) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = cl.refresh().await;
                    continue;
                };
                let req = ProduceRequest {
                    topic: "t".into(),
                    partition: 0,
                    acks: Some(-1),
                    timeout_ms: 5_000,
                    payload: Some(produce_request::Payload::RecordBatch(batch_of(&[
                        value.as_bytes()
                    ]))),
                    ..Default::default()
                };
                let mut broker = BrokerClient::new(channel(&addr));
                match tokio::time::timeout(Duration::from_secs(6), broker.produce(req)).await {
                    Ok(Ok(r)) => acked
                        .lock()
                        .unwrap()
                        .push((r.into_inner().base_offset, value)),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = cl.refresh().await;
                    }
                }
            }
        })
    };
    for round in 0..10 {
        let before = acked.lock().unwrap().len();
        wait_for("progress before the kill", WAIT, || async {
            (acked.lock().unwrap().len() > before + 5).then_some(())
        })
        .await;
        let (leader, epoch) = wait_full_isr(&c, "t").await;
        c.kill_broker(leader as u16);
        let (new_leader, new_epoch) = wait_for("a new leader", WAIT, || async {
            let (l, e, _) = leader_and_isr(&c, "t").await?;
            (l >= 0 && l != leader).then_some((l, e))
        })
        .await;
        assert!(
            new_epoch > epoch,
            "round {round}: leader epoch must grow ({epoch} -> {new_epoch})"
        );
        let after_kill = acked.lock().unwrap().len();
        wait_for("progress under the new leader", WAIT, || async {
            (acked.lock().unwrap().len() > after_kill + 5).then_some(())
        })
        .await;
        c.start_broker(leader as u16);
        eprintln!(
            "round {round}: killed broker {leader}, broker {new_leader} leads at epoch {new_epoch}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producer.await.unwrap();
    wait_full_isr(&c, "t").await;
    let acked = acked.lock().unwrap().clone();
    let last = acked.last().unwrap().0;
    // acks=all: every acknowledged record was on every ISR replica before it was acked.
    c.stop_all();
    let logs = replica_logs(&c, "t");
    assert!(
        acked.windows(2).all(|w| w[0].0 < w[1].0),
        "acknowledged offsets are in order"
    );
    for (b, log) in logs.iter().enumerate() {
        assert!(
            log.len() as i64 > last,
            "broker {} holds only {} records, last ack at {last}",
            b + 1,
            log.len()
        );
        for (offset, value) in &acked {
            let stored = &log[*offset as usize];
            assert_eq!(stored.0, *offset);
            assert_eq!(
                String::from_utf8_lossy(&stored.1),
                *value,
                "broker {}: offset {offset} lost its acknowledged value",
                b + 1
            );
        }
    }
    // Nothing appears twice: no attempt was ever re-sent, so duplicates would be ours.
    for (b, log) in logs.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for (offset, value) in log {
            assert!(
                seen.insert(value.clone()),
                "broker {}: {:?} stored twice (again at {offset})",
                b + 1,
                String::from_utf8_lossy(value)
            );
        }
    }
    let shortest = logs.iter().map(Vec::len).min().unwrap();
    for log in &logs[1..] {
        assert_eq!(log[..shortest], logs[0][..shortest], "replicas diverge");
    }
    eprintln!(
        "{} acknowledged records survived 10 leader kills",
        acked.len()
    );
}

/// Goal: a frozen leader is replaced; once resumed it is no longer a leader (requests with
/// its old epoch are refused), it truncates whatever diverged and rejoins the ISR.
/// Method: SIGSTOP the leader, write through the new one, SIGCONT, then check the old
/// broker refuses produce with NOT_LEADER_OR_FOLLOWER and that all replicas end identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_rejoins() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    replicated_topic(&c).await;
    let (old, old_epoch) = wait_full_isr(&c, "t").await;
    let mut cl = connected(&c).await;
    cl.produce("t", 0, batch_of(&[b"before"]), -1)
        .await
        .unwrap();
    c.pause_broker(old as u16);
    let (new, new_epoch) = wait_for("a new leader", WAIT, || async {
        let (l, e, _) = leader_and_isr(&c, "t").await?;
        (l >= 0 && l != old).then_some((l, e))
    })
    .await;
    assert!(new_epoch > old_epoch);
    if let Err(e) = cl.produce("t", 0, batch_of(&[b"during"]), -1).await {
        panic!("{e:?}\nmetadata: {:?}", cl.metadata());
    }
    c.resume_broker(old as u16);
    wait_full_isr(&c, "t").await;
    // The old leader refuses to act as leader, and names the new one.
    let err = BrokerClient::new(channel(&c.broker_addr(old as u16)))
        .produce(ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Some(1),
            payload: Some(produce_request::Payload::RecordBatch(batch_of(&[b"stale"]))),
            ..Default::default()
        })
        .await
        .expect_err("the old leader must refuse");
    assert_eq!(
        error_code(&err),
        ErrorCode::NotLeaderOrFollower,
        "{}",
        err.message()
    );
    let hint = sluice_proto::status::error_detail(&err)
        .and_then(|d| d.leader)
        .expect("leader hint");
    assert_eq!(hint.leader_id, new);
    // A follower fetch with the old epoch is fenced.
    let err = BrokerClient::new(channel(&c.broker_addr(new as u16)))
        .fetch(FetchRequest {
            topic: "t".into(),
            partition: 0,
            fetch_offset: 0,
            current_leader_epoch: Some(old_epoch),
            replica_id: Some(old),
            max_bytes: 1000,
            ..Default::default()
        })
        .await
        .expect_err("stale epoch");
    assert_eq!(error_code(&err), ErrorCode::FencedLeaderEpoch);
    // acks=all with a full ISR: every replica holds it once this returns.
    cl.produce("t", 0, batch_of(&[b"after"]), -1).await.unwrap();
    c.stop_all();
    let logs = replica_logs(&c, "t");
    let values: Vec<Vec<u8>> = logs[0].iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        values,
        vec![b"before".to_vec(), b"during".to_vec(), b"after".to_vec()]
    );
    assert!(
        logs.iter().all(|l| *l == logs[0]),
        "replicas must be identical: {logs:?}"
    );
}

/// Goal: with two of three replicas gone, acks=all is refused with NOT_ENOUGH_REPLICAS and
/// nothing is appended, acks=1 still works, and the ISR grows back when they return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_down_refuses_acks_all_until_they_return() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    replicated_topic(&c).await;
    let (leader, _) = wait_full_isr(&c, "t").await;
    let mut cl = connected(&c).await;
    cl.produce("t", 0, batch_of(&[b"a"]), -1).await.unwrap();
    let others: Vec<u16> = (1..=3).filter(|b| *b != leader as u16).collect();
    for b in &others {
        c.kill_broker(*b);
    }
    wait_for("the ISR to shrink to the leader", WAIT, || async {
        let (l, _, isr) = leader_and_isr(&c, "t").await?;
        (l == leader && isr == vec![leader]).then_some(())
    })
    .await;
    let hw_before = cl.list_offset("t", 0, -1).await.unwrap();
    let mut broker = BrokerClient::new(channel(&c.broker_addr(leader as u16)));
    let req = |acks: i32, v: &'static [u8]| ProduceRequest {
        topic: "t".into(),
        partition: 0,
        acks: Some(acks),
        payload: Some(produce_request::Payload::RecordBatch(batch_of(&[v]))),
        ..Default::default()
    };
    let err = broker
        .produce(req(-1, b"refused"))
        .await
        .expect_err("acks=all must be refused");
    assert_eq!(
        error_code(&err),
        ErrorCode::NotEnoughReplicas,
        "{}",
        err.message()
    );
    assert_eq!(
        cl.list_offset("t", 0, -1).await.unwrap(),
        hw_before,
        "nothing appended"
    );
    let ok = broker
        .produce(req(1, b"acks-one"))
        .await
        .expect("acks=1 works")
        .into_inner();
    assert_eq!(ok.base_offset, hw_before);
    for b in &others {
        c.start_broker(*b);
    }
    wait_full_isr(&c, "t").await;
    broker
        .produce(req(-1, b"all-again"))
        .await
        .expect("acks=all works again");
    c.stop_all();
    for log in replica_logs(&c, "t") {
        let values: Vec<Vec<u8>> = log.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            vec![b"a".to_vec(), b"acks-one".to_vec(), b"all-again".to_vec()]
        );
    }
}

/// Goal: a clean stop (SIGTERM) moves leadership away before the broker exits, so there is
/// no unavailability window waiting for its session to expire. Method: default session
/// timeout (9 s); SIGTERM the leader and check, right after it exits, that another broker
/// already leads and accepts acks=all writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_before_exit() {
    let mut c = Cluster::start(3, 3, &[], &["broker.heartbeat.interval.ms=300"]);
    replicated_topic(&c).await;
    let (leader, epoch) = wait_full_isr(&c, "t").await;
    let started = std::time::Instant::now();
    c.stop_broker(leader as u16);
    let stopped_after = started.elapsed();
    let (l, e, isr) = leader_and_isr(&c, "t").await.expect("description");
    assert_ne!(
        l, leader,
        "leadership must have moved before the process exited"
    );
    assert!(e > epoch);
    assert!(!isr.contains(&leader), "a shut-down broker leaves the ISR");
    assert!(
        stopped_after < Duration::from_secs(9),
        "controlled shutdown took {stopped_after:?}"
    );
    let mut cl = connected(&c).await;
    let t = std::time::Instant::now();
    cl.produce("t", 0, batch_of(&[b"after-shutdown"]), -1)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "write after a clean stop took {:?}",
        t.elapsed()
    );
}

/// Goal: a leader that wrote records nobody copied (acks=1) truncates them by leader epoch
/// when it comes back as a follower (KIP-101/279), instead of keeping a divergent tail.
/// Method: unclean election enabled; freeze the followers, write acks=1 to the lone leader,
/// freeze it, thaw the followers (one is elected uncleanly and writes new data), thaw the old
/// leader, and compare every replica's log on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_leader_truncates_its_divergent_tail() {
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    create_topic_with(
        &c.controller_addr(1),
        "t",
        1,
        3,
        &[
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "true"),
        ],
    )
    .await;
    let (old, _) = wait_full_isr(&c, "t").await;
    let mut cl = connected(&c).await;
    cl.produce("t", 0, batch_of(&[b"common"]), -1)
        .await
        .unwrap();
    let followers: Vec<u16> = (1..=3).filter(|b| *b != old as u16).collect();
    for f in &followers {
        c.pause_broker(*f);
    }
    wait_for("the ISR to shrink to the old leader", WAIT, || async {
        let (l, _, isr) = leader_and_isr(&c, "t").await?;
        (l == old && isr == vec![old]).then_some(())
    })
    .await;
    let mut direct = BrokerClient::new(channel(&c.broker_addr(old as u16)));
    for v in [&b"divergent-1"[..], b"divergent-2"] {
        direct
            .produce(ProduceRequest {
                topic: "t".into(),
                partition: 0,
                acks: Some(1),
                payload: Some(produce_request::Payload::RecordBatch(batch_of(&[v]))),
                ..Default::default()
            })
            .await
            .expect("acks=1 on the lone leader");
    }
    c.pause_broker(old as u16);
    for f in &followers {
        c.resume_broker(*f);
    }
    let new = wait_for("an unclean leader among the followers", WAIT, || async {
        let (l, _, _) = leader_and_isr(&c, "t").await?;
        followers.contains(&(l as u16)).then_some(l)
    })
    .await;
    let mut cl = wait_for("client", WAIT, || async {
        let mut cl = DataClient::connect(&format!(
            "{},{}",
            c.broker_addr(followers[0]),
            c.broker_addr(followers[1])
        ))
        .await
        .ok()?;
        cl.refresh().await.ok()?;
        (cl.leader("t", 0)?.0 == new).then_some(cl)
    })
    .await;
    cl.produce("t", 0, batch_of(&[b"new-1"]), 1).await.unwrap();
    c.resume_broker(old as u16);
    let start = std::time::Instant::now();
    loop {
        let state = leader_and_isr(&c, "t").await;
        if state.as_ref().is_some_and(|(_, _, isr)| isr.len() == 3) {
            break;
        }
        if start.elapsed() > WAIT {
            let logs: Vec<String> = (1..=3u16)
                .map(|b| {
                    c.broker_log(b)
                        .lines()
                        .filter(|l| {
                            l.contains("WARN")
                                || l.contains("ERROR")
                                || l.contains("became")
                                || l.contains("ISR")
                        })
                        .map(|l| l.chars().take(300).collect::<String>())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            panic!("ISR never completed: {state:?}\n{}", logs.join("\n-----\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cl.produce("t", 0, batch_of(&[b"new-2"]), -1).await.unwrap();
    c.stop_all();
    let logs = replica_logs(&c, "t");
    for (b, log) in logs.iter().enumerate() {
        let values: Vec<String> = log
            .iter()
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(
            values.first().map(String::as_str),
            Some("common"),
            "broker {}",
            b + 1
        );
        assert_eq!(
            values.last().map(String::as_str),
            Some("new-2"),
            "broker {}",
            b + 1
        );
        assert!(
            values.contains(&"new-1".to_string()),
            "broker {}: {values:?}",
            b + 1
        );
    }
    // Normally the followers never saw the acks=1 tail, so the old leader must have cut it.
    // If a follower did copy it before being frozen, it is legitimately part of the new
    // leader's history; either way all replicas must agree (checked below).
    let divergent_kept = logs[0].iter().any(|(_, v)| v.starts_with(b"divergent"));
    eprintln!("divergent tail kept by the new leader: {divergent_kept}");
    assert!(
        logs.iter().all(|l| *l == logs[0]),
        "replicas must be identical"
    );
}

/// An acks=1 produce of one record to `solo-0`.
fn solo_acks_one(v: &'static [u8]) -> ProduceRequest {
    ProduceRequest {
        topic: "solo".into(),
        partition: 0,
        acks: Some(1),
        payload: Some(produce_request::Payload::RecordBatch(batch_of(&[v]))),
        ..Default::default()
    }
}

/// Produces `v` to `solo-0` at `addr` as soon as that broker accepts it (it leads), within
/// `WAIT`.
async fn produce_when_led(
    addr: &str,
    what: &str,
    v: &'static [u8],
) -> tonic::Response<ProduceResponse> {
    wait_for(what, WAIT, || async {
        BrokerClient::new(channel(addr))
            .produce(solo_acks_one(v))
            .await
            .ok()
    })
    .await
}

/// Review defect 13 of issue 12: a restarted broker used to take leadership from its
/// persisted metadata image before the controller had unfenced it, and produce never
/// checked fencing, so acks=1 writes accepted there could be lost (the controller may have
/// moved the partition meanwhile). Method: one broker leads an RF 1 topic; every
/// controller is killed, the broker is killed and restarted. It serves RPCs but is fenced
/// (no controller to let it in), so acks=1 must be refused with NOT_LEADER_OR_FOLLOWER;
/// once the controllers return it leads again and acks=1 works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_leads_nothing_until_the_controller_unfences_it() {
    let mut c = Cluster::start(3, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "solo", 1, 1, &[]).await;
    let addr = c.broker_addr(1);
    produce_when_led(&addr, "broker 1 to lead solo-0", b"before").await;
    for id in 1..=3 {
        c.kill_controller(id);
    }
    c.kill_broker(1);
    c.start_broker(1);
    // Serving again (from its persisted image), but fenced.
    wait_for("broker 1 to serve", WAIT, || async {
        BrokerClient::new(channel(&addr))
            .metadata(MetadataRequest::default())
            .await
            .ok()
            .filter(|m| !m.get_ref().topics.is_empty())
    })
    .await;
    let err = BrokerClient::new(channel(&addr))
        .produce(solo_acks_one(b"while-fenced"))
        .await
        .expect_err("a fenced broker must not accept writes");
    assert_eq!(
        error_code(&err),
        ErrorCode::NotLeaderOrFollower,
        "{}",
        err.message()
    );
    for id in 1..=3 {
        c.start_controller(id);
    }
    let ok = produce_when_led(&addr, "broker 1 to lead again", b"after")
        .await
        .into_inner();
    assert_eq!(ok.base_offset, 1, "the write while fenced was not stored");
    c.stop_all();
}

/// Review defect 8 of issue 12: a second process started with the same `node.id` used to
/// register, fencing the first; the first re-registered and fenced it back, for ever.
/// Method: broker 1 runs and leads an RF 1 topic; a second `sluice broker --node-id 1`
/// starts with its own log dir and port. It must be refused with
/// DUPLICATE_BROKER_REGISTRATION (it logs so and keeps retrying) while broker 1 stays
/// unfenced and keeps accepting writes; killing the first then restarting it from its own
/// log dir (same directory id) registers again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_node_id_is_refused_and_fences_nobody() {
    struct Intruder(std::process::Child, #[allow(dead_code)] tempfile::TempDir);
    impl Drop for Intruder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut c = Cluster::start(3, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "solo", 1, 1, &[]).await;
    let addr = c.broker_addr(1);
    produce_when_led(&addr, "broker 1 to lead solo-0", b"before").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let log_path = dir.path().join("intruder.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(sluice_bin())
        .args(["broker", "--node-id", "1"])
        .args(["--listeners", &format!("127.0.0.1:{}", port[0])])
        .args(["--controller-quorum-voters", c.voters()])
        .arg("--log-dirs")
        .arg(dir.path().join("data"))
        .args([
            "--override",
            &format!("metrics.listener=127.0.0.1:{}", port[1]),
        ])
        .args(["--override", "broker.heartbeat.interval.ms=300"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let intruder = Intruder(child, dir);
    wait_for("the intruder to be refused", WAIT, || async {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|l| l.contains("DUPLICATE_BROKER_REGISTRATION"))
    })
    .await;
    // For longer than a session timeout, broker 1 keeps leading and serving.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        BrokerClient::new(channel(&addr))
            .produce(solo_acks_one(b"while-intruder"))
            .await
            .expect("broker 1 is not fenced by the intruder");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(intruder);
    // A restart from its own log dir is a restart, not a duplicate: it registers at once
    // (well before its old session, 2 s here, would expire) and leads again.
    c.kill_broker(1);
    c.start_broker(1);
    produce_when_led(&addr, "broker 1 to lead again", b"after").await;
    let duplicates: Vec<String> = c
        .broker_log(1)
        .lines()
        .filter(|l| l.contains("DUPLICATE_BROKER_REGISTRATION"))
        .map(str::to_string)
        .collect();
    assert!(
        duplicates.is_empty(),
        "a restart from the same log dir must not be taken for a duplicate: {duplicates:?}"
    );
    c.stop_all();
}

/// Review defect 10 of issue 12: a broker deleted at once (`remove_dir_all`) any local
/// replica missing from its metadata, and took metadata from any quorum, so a reset or
/// foreign quorum deleted data. Method: one broker leads two RF 1 topics. Deleting one
/// topic sets its replica aside (renamed `…-delete`, still readable, deleted only after a
/// grace period). Then the quorum is replaced by an empty one of another cluster id on the
/// same address: the broker must refuse its metadata (it logs so) and keep its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_or_a_foreign_quorum_deletes_no_data_at_once() {
    let mut c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "solo", 1, 1, &[]).await;
    create_topic_with(&c.controller_addr(1), "gone", 1, 1, &[]).await;
    let addr = c.broker_addr(1);
    produce_when_led(&addr, "broker 1 to lead solo-0", b"kept").await;
    let gone = |v: &'static [u8]| ProduceRequest {
        topic: "gone".into(),
        ..solo_acks_one(v)
    };
    wait_for("broker 1 to lead gone-0", WAIT, || async {
        BrokerClient::new(channel(&addr))
            .produce(gone(b"set-aside"))
            .await
            .ok()
    })
    .await;
    let gone_dir = c.replica_dir(1, "gone", 0).expect("replica dir of gone-0");
    admin(&c.controller_addr(1))
        .delete_topics(DeleteTopicsRequest {
            names: vec!["gone".into()],
        })
        .await
        .expect("delete the topic");
    let aside = wait_for("gone-0 to be set aside", WAIT, || async {
        std::fs::read_dir(c.broker_dir(1))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("gone-0-") && n.ends_with("-delete"))
            })
    })
    .await;
    assert!(!gone_dir.exists(), "the live directory is gone");
    let records: Vec<Vec<u8>> = read_replica(&aside).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        records,
        vec![b"set-aside".to_vec()],
        "set aside, not deleted"
    );

    // An empty quorum of another cluster on the controllers' address.
    c.kill_controller(1);
    c.wipe_controller(1);
    c.set_controller_overrides(&[CONTROLLER, &["cluster.id=elsewhere"]].concat());
    c.start_controller(1);
    wait_for("the broker to refuse the foreign quorum", WAIT, || async {
        c.broker_log(1)
            .lines()
            .any(|l| l.contains("elsewhere") && l.contains("not applied"))
            .then_some(())
    })
    .await;
    let solo_dir = c.replica_dir(1, "solo", 0).expect("replica dir of solo-0");
    c.kill_broker(1);
    let records: Vec<Vec<u8>> = read_replica(&solo_dir)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(records, vec![b"kept".to_vec()], "solo-0 is untouched");
    c.stop_all();
}

/// The topics a broker's image holds and the metadata offset it was built from.
async fn broker_view(addr: &str) -> Option<(Vec<String>, u64)> {
    let r = BrokerClient::new(channel(addr))
        .metadata(MetadataRequest::default())
        .await
        .ok()?
        .into_inner();
    let mut topics: Vec<String> = r
        .topics
        .into_iter()
        .map(|t| t.name)
        .filter(|n| !n.starts_with("__"))
        .collect();
    topics.sort();
    Some((topics, r.metadata_offset))
}

/// Issue 15 item 3: brokers skipped metadata entries by offset alone, so a quorum reset with
/// the *same* cluster id fed them a different history: they kept what the old quorum said
/// and applied the new log's entries only past the offset they had reached, mixing both.
/// Method: one broker applies topic "old"; the controller is wiped and restarted (same
/// cluster id, an empty quorum); the new quorum commits topics until its log passes the
/// broker's offset. The broker must notice the other history, say so, and end up with
/// exactly the new quorum's image (its topics, not "old"), serving again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_quorum_with_the_same_cluster_id_is_not_mixed_into_the_applied_history() {
    let mut c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "old", 1, 1, &[]).await;
    let addr = c.broker_addr(1);
    let (_, applied) = wait_for("broker 1 to apply topic old", WAIT, || async {
        broker_view(&addr)
            .await
            .filter(|(t, _)| t.iter().any(|n| n == "old"))
    })
    .await;

    c.kill_controller(1);
    c.wipe_controller(1);
    c.start_controller(1);
    let controller = c.controller_addr(1);
    // Grow the new log past what the broker applied, so offsets alone would look like news.
    let mut created = Vec::new();
    loop {
        let name = format!("new-{}", created.len());
        create_topic_with(&controller, &name, 1, 1, &[]).await;
        created.push(name);
        let (image, _) = wait_for("the new quorum's image", WAIT, || image_of(&controller)).await;
        if image.offset > applied + 3 {
            break;
        }
        assert!(
            created.len() < 200,
            "the new log never passed offset {applied}"
        );
    }
    let (image, _) = wait_for("the new quorum's image", WAIT, || image_of(&controller)).await;
    let mut expected: Vec<String> = image.topic_ids.keys().cloned().collect();
    expected.retain(|n| !n.starts_with("__"));
    expected.sort();
    assert!(!expected.contains(&"old".to_string()));
    let held = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(v) = broker_view(&addr).await.filter(|(t, _)| *t == expected) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        held.is_ok(),
        "broker 1 holds {:?}, not the new quorum's {expected:?}; its log:\n{}",
        broker_view(&addr).await,
        c.broker_log(1)
    );
    let log = c.broker_log(1);
    assert!(
        log.lines()
            .any(|l| l.contains("does not continue the one this broker applied")),
        "the broker says why it replaced its image"
    );
    let metrics = scrape(&c.metrics_addr("broker", 1)).unwrap_or_default();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sluice_metadata_history_divergences_total") && !l.ends_with(" 0")
        ),
        "the divergence is counted: {metrics}"
    );
    c.stop_all();
}

/// An acks=1 produce of `payload` to `topic`-`partition` at `addr`.
async fn produce_acks_one(
    addr: &str,
    topic: &str,
    partition: i32,
    payload: bytes::Bytes,
) -> Result<ProduceResponse, tonic::Status> {
    BrokerClient::new(channel(addr))
        .produce(ProduceRequest {
            topic: topic.into(),
            partition,
            acks: Some(1),
            payload: Some(produce_request::Payload::RecordBatch(payload)),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// #19: after a kill -9, a broker's small partitions serve while another partition's long
/// recovery scan is still running. Before, the logs opened inside the reconcile that the
/// controller's return of leadership (after unfencing) had to wait for, so every partition
/// waited for the slowest scan. Method: one broker, an 8 MB partition `big-0` with no
/// recovery point and four one-batch partitions `small-*`; kill -9; restart with recovery
/// scans slowed to 1 MB/s (fault injection, so `big-0` takes ≥ 8 s); every small partition
/// must take a write while `big-0` still refuses one; then `big-0` serves again with every
/// acknowledged record. A clean stop while `big-0` still recovers keeps its HW in
/// `replication-offset-checkpoint`. Seen failing before the change (the small partitions
/// became writable only together with `big-0`; later, without the checkpoint fix, `big-0`
/// was missing from the checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_partitions_serve_while_a_large_one_still_recovers_after_a_crash() {
    let mut c = Cluster::start(1, 1, CONTROLLER, BROKER);
    create_topic_with(&c.controller_addr(1), "big", 1, 1, &[]).await;
    create_topic_with(&c.controller_addr(1), "small", 4, 1, &[]).await;
    let addr = c.broker_addr(1);
    let value = vec![7u8; 100 * 1024];
    let big = batch_of(&[&value]);
    wait_for("broker 1 to lead big-0", WAIT, || async {
        produce_acks_one(&addr, "big", 0, big.clone()).await.ok()
    })
    .await;
    for _ in 1..80 {
        produce_acks_one(&addr, "big", 0, big.clone())
            .await
            .unwrap();
    }
    for p in 0..4 {
        wait_for("broker 1 to lead small", WAIT, || async {
            produce_acks_one(&addr, "small", p, batch_of(&[b"before"]))
                .await
                .ok()
        })
        .await;
    }
    let checkpoint = c.broker_dir(1).join("replication-offset-checkpoint");
    let big_hw = || {
        std::fs::read_to_string(&checkpoint)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("big 0 ").map(|hw| hw.trim().to_string()))
    };
    wait_for("big-0's HW in the checkpoint", WAIT, || async {
        (big_hw().as_deref() == Some("80")).then_some(())
    })
    .await;
    c.kill_broker(1);
    c.set_broker_env(1, "SLUICE_FAULT_INJECTION", "1");
    c.set_broker_env(1, "SLUICE_FAULT_RECOVERY_BYTES_PER_S", "1000000");
    c.start_broker(1);
    for p in 0..4 {
        let r = wait_for("a small partition to take a write", WAIT, || async {
            produce_acks_one(&addr, "small", p, batch_of(&[b"after"]))
                .await
                .ok()
        })
        .await;
        assert_eq!(r.base_offset, 1, "small-{p} kept its record");
    }
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        produce_acks_one(&addr, "big", 0, batch_of(&[b"early"])),
    )
    .await;
    assert!(
        !matches!(early, Ok(Ok(_))),
        "big-0 took a write before its slowed recovery could have finished: {early:?}"
    );
    // A clean stop while big-0 still recovers keeps its HW in the checkpoint (a checkpoint
    // of the installed replicas alone would restart it at 0).
    c.stop_broker(1);
    assert_eq!(
        big_hw().as_deref(),
        Some("80"),
        "replication-offset-checkpoint after a stop during big-0's recovery"
    );
    c.start_broker(1);
    let r = wait_for("big-0 to take a write after its recovery", WAIT, || async {
        produce_acks_one(&addr, "big", 0, batch_of(&[b"after"]))
            .await
            .ok()
    })
    .await;
    assert_eq!(r.base_offset, 80, "big-0 kept every acknowledged record");
    c.stop_all();
}
