//! Day-2 operations (issue #17): growing topics, and the procedures that follow.

use serde_json::Value;
use sluice_tests::cluster::Cluster;
use sluice_tests::*;

/// Creates a topic as soon as enough brokers registered (a cluster just started).
async fn create_once_registered(b: &str, topic: &str, partitions: &str, replicas: &str) {
    wait_for(
        "the brokers registered: the topic is created",
        std::time::Duration::from_secs(60),
        || async {
            let args = [
                "topic",
                "create",
                topic,
                "-p",
                partitions,
                "-r",
                replicas,
                "--bootstrap",
                b,
            ];
            sluice(&args).0.then_some(())
        },
    )
    .await;
}

/// Goal: `sluice topic alter NAME --partitions N` adds partitions under load: the new ones
/// follow the (i + j) mod n placement, producers start writing to them, every acknowledged
/// record is read back from the partition it was acknowledged on (existing data did not
/// move), and shrinking is refused. Method: `sluice dev`; a 2-partition topic; confluent-kafka
/// (`py/kafka_grow.py`) writes keyed records with acks=all for 8 s and runs the alter to 4
/// partitions after 3 s; then reads all four partitions back.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_under_load_take_writes_and_nothing_is_lost() {
    let dev = DevCluster::start();
    let b = dev.bootstrap();
    let b = b.as_str();
    must(&[
        "topic",
        "create",
        "grow",
        "-p",
        "2",
        "-r",
        "3",
        "--bootstrap",
        b,
    ]);
    let r = py_report(
        "kafka_grow.py",
        &[b, "grow", sluice_bin().to_str().unwrap()],
        240,
    );
    eprintln!("grow: {r}");
    assert_eq!(r["alter_ok"], true, "{r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["undelivered"], 0, "{r}");
    for p in ["0", "1", "2", "3"] {
        assert!(
            r["delivered"][p].as_u64().unwrap_or(0) > 0,
            "partition {p} took writes: {r}"
        );
    }
    assert_eq!(r["delivered"], r["consumed"], "{r}");
    assert_eq!(
        r["same"], true,
        "every partition holds what it acknowledged: {r}"
    );

    let d: Value = serde_json::from_str(&must(&[
        "topic",
        "describe",
        "grow",
        "-o",
        "json",
        "--bootstrap",
        b,
    ]))
    .unwrap();
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 4, "{d}");
    // Replica j of partition i on broker (i + j) mod n (brokers in id order).
    let mut brokers: Vec<i64> = parts
        .iter()
        .flat_map(|p| {
            p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_i64().unwrap())
        })
        .collect();
    brokers.sort_unstable();
    brokers.dedup();
    for (i, p) in parts.iter().enumerate() {
        let want: Vec<i64> = (0..3).map(|j| brokers[(i + j) % brokers.len()]).collect();
        let have: Vec<i64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_i64().unwrap())
            .collect();
        assert_eq!(have, want, "partition {i}: {d}");
    }
    let (ok, out, err) = sluice(&[
        "topic",
        "alter",
        "grow",
        "--partitions",
        "3",
        "--bootstrap",
        b,
    ]);
    assert!(!ok && err.contains("INVALID_PARTITIONS"), "{out}\n{err}");
}

/// One partition as `topic describe -o json` shows it: (leader, replicas, isr).
type Part = (i64, Vec<i64>, Vec<i64>);

/// `topic describe -o json`'s partitions by index.
fn partitions_of(b: &str, topic: &str) -> Option<Vec<Part>> {
    let (ok, out, _) = sluice(&["topic", "describe", topic, "-o", "json", "--bootstrap", b]);
    if !ok {
        return None;
    }
    let d: Value = serde_json::from_str(&out).ok()?;
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    d["partitions"]
        .as_array()?
        .iter()
        .map(|p| Some((p["leader"].as_i64()?, ids(&p["replicas"]), ids(&p["isr"]))))
        .collect()
}

async fn wait_until(what: &str, b: &str, topic: &str, ok: impl Fn(&[Part]) -> bool) {
    wait_for(what, std::time::Duration::from_secs(60), || {
        let parts = partitions_of(b, topic);
        let done = parts.as_deref().is_some_and(&ok);
        async move { done.then_some(()) }
    })
    .await;
}

fn all_preferred(parts: &[Part]) -> bool {
    parts
        .iter()
        .all(|(leader, replicas, _)| Some(leader) == replicas.first())
}

/// Goal: after a broker fails and returns, `sluice leader-election --preferred` gives its
/// partitions back to it (a `--dry-run` first changes nothing), and with
/// `auto.leader.rebalance.enable` the active controller does so by itself; `--unclean`
/// refuses to run without `--dry-run` or `--yes` and is not needed while a leader exists.
/// Method: 1 controller + 3 brokers (rebalance off); a 3-partition topic, each partition led
/// by its first replica; broker 1 is SIGKILLed, its partition moves, it is restarted and
/// rejoins the ISR; then the elections. Then the controller restarts with the rebalance on
/// (checked every second) and the same failure heals with no command.
#[tokio::test(flavor = "multi_thread")]
async fn preferred_elections_give_leadership_back_by_hand_and_by_themselves() {
    let mut c = Cluster::start(1, 3, &["auto.leader.rebalance.enable=false"], &[]);
    let b = c.bootstrap();
    let b = b.as_str();
    create_once_registered(b, "pe", "3", "3").await;
    wait_until("preferred leaders at creation", b, "pe", all_preferred).await;
    let fail_and_return = |c: &mut Cluster| {
        c.kill_broker(1);
    };
    fail_and_return(&mut c);
    wait_until("broker 1 leads nothing", b, "pe", |p| {
        p.iter().all(|(l, ..)| *l != 1)
    })
    .await;
    c.start_broker(1);
    wait_until("broker 1 back in every ISR", b, "pe", |p| {
        p.iter().all(|(_, _, isr)| isr.contains(&1))
    })
    .await;
    let parts = partitions_of(b, "pe").unwrap();
    assert!(!all_preferred(&parts), "{parts:?}");

    let dry: Value = serde_json::from_str(&must(&[
        "leader-election",
        "--preferred",
        "--topic",
        "pe",
        "--dry-run",
        "-o",
        "json",
        "--bootstrap",
        b,
    ]))
    .unwrap();
    let outcomes: Vec<(i64, String, i64)> = dry["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
                r["leader"].as_i64().unwrap(),
            )
        })
        .collect();
    for (i, (leader, replicas, _)) in parts.iter().enumerate() {
        let (want, new) = if Some(leader) == replicas.first() {
            ("ELECTION_NOT_NEEDED", -1)
        } else {
            ("WOULD_ELECT", replicas[0])
        };
        assert_eq!(outcomes[i], (i as i64, want.to_string(), new), "{dry}");
    }
    assert_eq!(
        partitions_of(b, "pe").unwrap(),
        parts,
        "a dry run changes nothing"
    );
    must(&["leader-election", "--preferred", "--bootstrap", b]);
    wait_until(
        "preferred leaders after the election",
        b,
        "pe",
        all_preferred,
    )
    .await;

    let (ok, _, err) = sluice(&[
        "leader-election",
        "--unclean",
        "--topic",
        "pe",
        "--bootstrap",
        b,
    ]);
    assert!(
        !ok && err.contains("--dry-run") && err.contains("--yes"),
        "{err}"
    );
    let (ok, out, _) = sluice(&[
        "leader-election",
        "--unclean",
        "--topic",
        "pe",
        "--partition",
        "0",
        "--yes",
        "-o",
        "json",
        "--bootstrap",
        b,
    ]);
    assert!(ok && out.contains("ELECTION_NOT_NEEDED"), "{out}");

    // The automatic rebalance.
    c.set_controller_overrides(&["leader.imbalance.check.interval.seconds=1"]);
    c.kill_controller(1);
    c.start_controller(1);
    fail_and_return(&mut c);
    wait_until("broker 1 leads nothing (2)", b, "pe", |p| {
        p.iter().all(|(l, ..)| *l != 1)
    })
    .await;
    c.start_broker(1);
    wait_until(
        "leadership back to preferred replicas with no command",
        b,
        "pe",
        all_preferred,
    )
    .await;
}

fn doctor(b: &str) -> Value {
    serde_json::from_str(&must(&["doctor", "-o", "json", "--bootstrap", b])).unwrap()
}

/// The doctor's finding for `topic`-0, if it reports one.
fn finding(d: &Value, topic: &str) -> Option<Value> {
    d["unhealthy"]
        .as_array()?
        .iter()
        .find(|f| f["topic"] == topic && f["partition"] == 0)
        .cloned()
}

fn produce_n(b: &str, topic: &str, from: usize, n: usize, acks: &str) {
    let lines: String = (from..from + n).map(|i| format!("r{i}\n")).collect();
    let (ok, out, err) = sluice_stdin(
        &["produce", topic, "--acks", acks, "--bootstrap", b],
        &lines,
    );
    assert!(ok, "produce: {out}\n{err}");
}

/// Goal: `sluice doctor` says why each unhealthy partition is unhealthy — a follower that lags
/// by how many records, a fenced broker — and for an offline partition which replica a forced
/// election would elect and exactly which acknowledged offsets it would lose; the forced
/// election then loses exactly those. Method: 1 controller (sessions of 30 s, no automatic
/// rebalance) + 3 brokers (`replica.lag.time.max.ms=2000`); a 3-replica partition led by
/// broker 1. (1) Healthy: nothing reported. (2) One record with acks=all, broker 3 SIGSTOPped,
/// 50 more with acks=1: once the ISR shrinks, "broker 3 lags by 50 records". (3) Broker 3
/// resumed, caught up, then stopped (controlled shutdown): "broker 3 is fenced". (4) 30 more
/// records with acks=all (HW 81); brokers 1 and 2 stopped, broker 3 started: the partition is
/// offline and the doctor says an unclean election would elect broker 3 and lose offsets
/// 51..81. (5) `leader-election --unclean --yes` elects it; the log then holds the first 51
/// records.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_explains_lag_fencing_and_what_a_forced_election_would_lose() {
    let mut c = Cluster::start(
        1,
        3,
        &[
            "broker.session.timeout.ms=30000",
            "auto.leader.rebalance.enable=false",
        ],
        &["replica.lag.time.max.ms=2000"],
    );
    let b = c.bootstrap();
    let b = b.as_str();
    create_once_registered(b, "doc", "1", "3").await;
    wait_until("leader 1, full ISR", b, "doc", |p| {
        p[0].0 == 1 && p[0].2.len() == 3
    })
    .await;
    assert_eq!(finding(&doctor(b), "doc"), None, "healthy");

    // (2) A lagging follower (it has fetched once: an acks=all record).
    produce_n(b, "doc", 0, 1, "all");
    c.pause_broker(3);
    produce_n(b, "doc", 1, 50, "1");
    wait_until("broker 3 out of the ISR", b, "doc", |p| {
        !p[0].2.contains(&3)
    })
    .await;
    let f = finding(&doctor(b), "doc").expect("under-replicated");
    assert_eq!(f["state"], "under-replicated", "{f}");
    let why = f["reasons"].to_string();
    assert!(why.contains("broker 3 lags by 50 records"), "{f}");

    // (3) A fenced broker.
    c.resume_broker(3);
    wait_until("broker 3 back in the ISR", b, "doc", |p| {
        p[0].2.contains(&3)
    })
    .await;
    c.stop_broker(3);
    wait_until("broker 3 out of the ISR (2)", b, "doc", |p| {
        !p[0].2.contains(&3)
    })
    .await;
    let f = finding(&doctor(b), "doc").expect("under-replicated");
    assert!(
        f["reasons"].to_string().contains("broker 3 is fenced"),
        "{f}"
    );

    // (4) Offline, and what a forced election would lose.
    produce_n(b, "doc", 51, 30, "all");
    wait_for(
        "the controller knows HW 81",
        std::time::Duration::from_secs(30),
        || async {
            let (_, out, _) = sluice(&["topic", "describe", "doc", "-o", "json", "--bootstrap", b]);
            let d: Value = serde_json::from_str(&out).ok()?;
            (d["partitions"][0]["last_high_watermark"] == 81).then_some(())
        },
    )
    .await;
    c.stop_broker(1);
    c.stop_broker(2);
    c.start_broker(3);
    let f = wait_for(
        "the doctor names broker 3 as the candidate",
        std::time::Duration::from_secs(60),
        || async {
            // Until broker 3 is back the cluster may have no reachable broker at all.
            let (ok, out, _) = sluice(&["doctor", "-o", "json", "--bootstrap", b]);
            let d: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let f = finding(&d, "doc")?;
            (f["unclean_election"]["candidate"] == 3).then_some(f)
        },
    )
    .await;
    assert_eq!(f["state"], "offline", "{f}");
    let u = &f["unclean_election"];
    assert_eq!(u["candidate_log_end_offset"], 51, "{f}");
    assert_eq!(u["last_high_watermark"], 81, "{f}");
    assert_eq!(
        (u["lost_from"].clone(), u["lost_to"].clone()),
        (51.into(), 81.into()),
        "{f}"
    );
    assert_eq!(u["lost_records"], 30, "{f}");
    assert!(f["reasons"].to_string().contains("is fenced"), "{f}");

    // (5) The forced election loses exactly that.
    let dry = must(&[
        "leader-election",
        "--unclean",
        "--topic",
        "doc",
        "--partition",
        "0",
        "--dry-run",
        "-o",
        "json",
        "--bootstrap",
        b,
    ]);
    assert!(dry.contains("WOULD_ELECT"), "{dry}");
    must(&[
        "leader-election",
        "--unclean",
        "--topic",
        "doc",
        "--partition",
        "0",
        "--yes",
        "--bootstrap",
        b,
    ]);
    wait_until("broker 3 leads", b, "doc", |p| p[0].0 == 3).await;
    let records = must(&[
        "consume",
        "doc",
        "--partition",
        "0",
        "--offset",
        "0",
        "--max-records",
        "100",
        "--timeout-ms",
        "3000",
        "-o",
        "json",
        "--bootstrap",
        b,
    ]);
    let values = consumed_values(&records);
    let want: Vec<String> = (0..51).map(|i| format!("r{i}")).collect();
    assert_eq!(values, want, "the 30 offsets the doctor named are gone");
}

/// Goal: an empty group's committed offsets expire `offsets.retention.minutes` after their last
/// commit (Kafka's offset expiry; `__consumer_offsets` does not keep them forever), and not
/// before. Method: 1 controller + 1 broker with `offsets.retention.minutes=1` checked every
/// second; `sluice consume --group` commits 3 records and leaves; the group's offset is still
/// there after several checks, and gone (the group with it) within the minute and a margin.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_groups_offsets_expire_after_the_retention() {
    let c = Cluster::start(
        1,
        1,
        &[],
        &[
            "offsets.retention.minutes=1",
            "offsets.retention.check.interval.ms=1000",
            "offsets.topic.replication.factor=1",
        ],
    );
    let b = c.bootstrap();
    let b = b.as_str();
    create_once_registered(b, "exp", "1", "1").await;
    produce_n(b, "exp", 0, 3, "all");
    must(&[
        "consume",
        "exp",
        "--group",
        "expiring",
        "--max-records",
        "3",
        "--timeout-ms",
        "10000",
        "--bootstrap",
        b,
    ]);
    let committed_at = std::time::Instant::now();
    let offset = |b: &str| -> Option<i64> {
        let (ok, out, _) = sluice(&[
            "group",
            "describe",
            "expiring",
            "-o",
            "json",
            "--bootstrap",
            b,
        ]);
        let d: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        d["partitions"].as_array()?.first()?["current_offset"].as_i64()
    };
    assert_eq!(offset(b), Some(3), "committed");
    // Several expiry checks later (every second), well inside the minute: still there.
    wait_for(
        "three expiry checks",
        std::time::Duration::from_secs(10),
        || async { (committed_at.elapsed() >= std::time::Duration::from_secs(4)).then_some(()) },
    )
    .await;
    assert_eq!(
        offset(b),
        Some(3),
        "not expired before offsets.retention.minutes"
    );
    wait_for(
        "the offsets expired",
        std::time::Duration::from_secs(120),
        || async { offset(b).is_none().then_some(()) },
    )
    .await;
    assert!(
        committed_at.elapsed() >= std::time::Duration::from_secs(59),
        "expired only after the retention: {:?}",
        committed_at.elapsed()
    );
}
