//! Partition scale (issue #14) with real processes: a 3 + 3 cluster holding 10 000 idle RF-3
//! partitions (`SLUICE_SCALE_PARTITIONS` to change) reaches full ISR, a broker killed with
//! SIGKILL leaves every partition writable again (acks=all), and after its restart every
//! partition is back at full ISR and writable. Bounded waits only; the times are printed,
//! not asserted (`sluice bench idle` measures).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_client::DataClient;
use sluice_proto::v1::*;
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

const CONTROLLER: &[&str] = &["broker.session.timeout.ms=3000"];
const BROKER: &[&str] = &[
    "broker.heartbeat.interval.ms=500",
    "replica.lag.time.max.ms=5000",
];
const PARTITIONS_PER_TOPIC: i32 = 100;
/// Clients producing at once when checking every partition.
const WRITERS: usize = 16;

fn partitions_wanted() -> i32 {
    std::env::var("SLUICE_SCALE_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// (partitions, partitions whose ISR is the whole replica set with a leader), over every
/// topic named `scale-*`.
async fn isr_census(c: &Cluster) -> Option<(usize, usize)> {
    let topics = admin(&c.controller_addr(1))
        .describe_topics(DescribeTopicsRequest { names: vec![] })
        .await
        .ok()?
        .into_inner()
        .topics;
    let (mut total, mut full) = (0, 0);
    for t in topics.iter().filter(|t| t.name.starts_with("scale-")) {
        for p in &t.partitions {
            total += 1;
            if p.leader_id >= 0 && p.isr.len() == p.replicas.len() {
                full += 1;
            }
        }
    }
    Some((total, full))
}

async fn wait_full_isr(c: &Cluster, want: usize, what: &str, timeout: Duration) {
    let start = Instant::now();
    let mut last = (0, 0);
    let deadline = start + timeout;
    loop {
        if let Some((total, full)) = isr_census(c).await {
            if total == want && full == want {
                eprintln!(
                    "{what}: {want} partitions at full ISR after {:?}",
                    start.elapsed()
                );
                return;
            }
            last = (total, full);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} partitions at full ISR after {timeout:?}",
            last.1,
            last.0
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces one record with acks=all to every partition in `todo`, over and over, until
/// each has taken one or `timeout` passes.
async fn write_everywhere(c: &Cluster, todo: Vec<(String, i32)>, what: &str, timeout: Duration) {
    let start = Instant::now();
    let mut todo: BTreeSet<(String, i32)> = todo.into_iter().collect();
    let batch = batch_of(&[b"scale"]);
    while !todo.is_empty() {
        if start.elapsed() >= timeout {
            let stuck = todo.iter().next().cloned().expect("not empty");
            panic!(
                "{what}: {} partitions still not writable after {timeout:?}, e.g. {stuck:?}\n{}",
                todo.len(),
                diagnose(c, &stuck).await
            );
        }
        let chunks: Vec<Vec<(String, i32)>> = {
            let mut chunks = vec![Vec::new(); WRITERS];
            for (i, tp) in todo.iter().enumerate() {
                chunks[i % WRITERS].push(tp.clone());
            }
            chunks
        };
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in chunks {
            let (bootstrap, batch) = (c.bootstrap(), batch.clone());
            tasks.spawn(async move {
                let mut done = Vec::new();
                let Ok(mut client) = DataClient::connect(&bootstrap).await else {
                    return done;
                };
                for (topic, p) in chunk {
                    if client.produce(&topic, p, batch.clone(), -1).await.is_ok() {
                        done.push((topic, p));
                    }
                }
                done
            });
        }
        while let Some(done) = tasks.join_next().await {
            for tp in done.expect("writer task") {
                todo.remove(&tp);
            }
        }
    }
    eprintln!(
        "{what}: every partition took an acks=all write after {:?}",
        start.elapsed()
    );
}

/// What the controller and each broker's log say about one partition.
async fn diagnose(c: &Cluster, (topic, p): &(String, i32)) -> String {
    let described = describe_topic(&c.controller_addr(1), topic)
        .await
        .and_then(|t| t.partitions.get(*p as usize).cloned());
    let name = format!("{topic}-{p}");
    let mut out = format!("controller: {described:?}\n");
    for b in 1..=3u16 {
        let log = c.broker_log(b);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&name) && !l.contains(&format!("{name}0")))
            .collect();
        out.push_str(&format!("broker {b}:\n{}\n", lines.join("\n")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_partitions_reach_full_isr_fail_over_and_recover() {
    let want = partitions_wanted();
    let topics = (want / PARTITIONS_PER_TOPIC).max(1);
    let total = (topics * PARTITIONS_PER_TOPIC) as usize;
    let mut c = Cluster::start(3, 3, CONTROLLER, BROKER);
    let start = Instant::now();
    for t in 0..topics {
        create_topic_with(
            &c.controller_addr(1),
            &format!("scale-{t}"),
            PARTITIONS_PER_TOPIC,
            3,
            &[("min.insync.replicas", "2")],
        )
        .await;
    }
    eprintln!("created {total} partitions in {:?}", start.elapsed());
    wait_full_isr(&c, total, "after creation", Duration::from_secs(300)).await;
    let all: Vec<(String, i32)> = (0..topics)
        .flat_map(|t| (0..PARTITIONS_PER_TOPIC).map(move |p| (format!("scale-{t}"), p)))
        .collect();
    write_everywhere(&c, all.clone(), "before the kill", Duration::from_secs(300)).await;
    // On a loaded machine a follower can fall behind for replica.lag.time.max.ms while the
    // brokers still open their new logs, and leave an ISR: a partition whose ISR is only
    // broker 1 is then rightly offline after the kill (no unclean election). Kill only at
    // full ISR.
    wait_full_isr(&c, total, "before the kill", Duration::from_secs(300)).await;

    // Broker 1 leads a third of them: SIGKILL it; every partition is writable again (a
    // new leader elected, min.insync.replicas 2 met by the two left).
    c.kill_broker(1);
    write_everywhere(
        &c,
        all.clone(),
        "after kill -9 of broker 1",
        Duration::from_secs(300),
    )
    .await;

    c.start_broker(1);
    wait_full_isr(
        &c,
        total,
        "after broker 1 restarted",
        Duration::from_secs(300),
    )
    .await;
    write_everywhere(&c, all, "after the restart", Duration::from_secs(300)).await;
}
