//! Faults of the metadata quorum with real processes: SIGKILL of the active controller,
//! SIGSTOP/SIGCONT, a wiped controller rejoining from a snapshot, and a lone minority.

use std::time::{Duration, Instant};

use sluice_proto::v1::ErrorCode;
use sluice_tests::standin::StandIn;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// The default `controller.quorum.election.timeout.ms`.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

async fn leader_among(q: &Quorum, ids: &[u64]) -> Option<(u64, i64)> {
    for id in ids {
        if let Some((l, t)) = leader_of(&q.addr(*id)).await {
            if ids.contains(&l) {
                return Some((l, t));
            }
        }
    }
    None
}

/// Goal: killing the active controller (-9) loses no committed topic, a new leader is
/// active within a bounded time, and the killed node restarts from its own sled directory
/// and catches up. Method: create topics, SIGKILL the leader, time until a write commits
/// through a survivor, restart the victim and read its applied log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_nothing_and_a_new_one_takes_over() {
    let mut q = Quorum::start(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    let (old, old_term) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let _brokers: Vec<StandIn> = (1..=3).map(|b| StandIn::start(addrs.clone(), b)).collect();
    wait_for("topic created", WAIT, || async {
        create_topic(&addrs[0], "before", 2, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;

    let killed = Instant::now();
    q.kill(old);
    let survivors: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    let (new, new_term) = wait_for("a new leader", WAIT, || leader_among(&q, &survivors)).await;
    let elected = killed.elapsed();
    assert_ne!(new, old);
    assert!(
        new_term > old_term,
        "term must grow: {old_term} -> {new_term}"
    );
    let r = wait_for("a write after failover", WAIT, || async {
        create_topic(&q.addr(new), "after", 1, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;
    let write_ok = killed.elapsed();
    assert_eq!(r.name, "after");
    eprintln!("failover: leader elected after {elected:?}, write committed after {write_ok:?}");
    assert!(
        write_ok < ELECTION_TIMEOUT * 4,
        "failover took {write_ok:?}, far beyond the {ELECTION_TIMEOUT:?} election timeout"
    );
    let (img, _) = image_of(&q.addr(new)).await.expect("image");
    assert!(img.topic("before").is_some(), "committed topic lost");

    q.spawn(old);
    wait_for("the restarted node to catch up", WAIT, || async {
        let (img, _) = image_of(&q.addr(old)).await?;
        (img.topic("before").is_some() && img.topic("after").is_some()).then_some(())
    })
    .await;
}

/// Goal: a frozen leader is replaced; after SIGCONT it steps down and never competes (no
/// split brain). Method: SIGSTOP the leader, wait for a new one with a higher term and write
/// through it, SIGCONT the old one, and check it follows the new leader and sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_steps_down_after_resume() {
    let mut q = Quorum::start(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    let (old, old_term) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let _brokers: Vec<StandIn> = (1..=2).map(|b| StandIn::start(addrs.clone(), b)).collect();
    wait_for("first topic", WAIT, || async {
        create_topic(&addrs[0], "first", 1, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;

    q.pause(old);
    let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    let (new, new_term) = wait_for("a new leader", WAIT, || leader_among(&q, &others)).await;
    assert_ne!(new, old);
    assert!(new_term > old_term);
    wait_for("a write while the old leader is frozen", WAIT, || async {
        create_topic(&q.addr(new), "during", 1, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;

    q.resume(old);
    let (l, t) = wait_for("the old leader to follow the new one", WAIT, || async {
        let (l, t) = leader_of(&q.addr(old)).await?;
        (l != old).then_some((l, t))
    })
    .await;
    assert!(t >= new_term, "old node reports term {t} < {new_term}");
    assert_ne!(l, old);
    wait_for(
        "the old leader to apply the write made without it",
        WAIT,
        || async {
            let (img, _) = image_of(&q.addr(old)).await?;
            (img.topic("during").is_some() && img.topic("first").is_some()).then_some(())
        },
    )
    .await;
    // Writes through the old leader now go to the new one.
    let r = create_topic(&q.addr(old), "after-resume", 1, 1)
        .await
        .expect("forwarded");
    assert_eq!(r.error_code, 0, "{}", r.error_message);
}

/// Runs `sluice quorum ARGS --bootstrap B -o json` and returns its JSON, or its stderr.
fn quorum_cli(bootstrap: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(sluice_bin())
        .arg("quorum")
        .args(args)
        .args(["--bootstrap", bootstrap, "--output", "json"])
        .output()
        .expect("run sluice quorum");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON ({e}): {:?}", out.stdout))
}

/// Issue 15 item 2: a voter that lost its disk used to rejoin under its old id and vote as if
/// it remembered, which loses committed metadata with 3 voters: A commits e on {A, C}; C is
/// wiped; A crashes; {B, C'} elect B, which never had e. Method: exactly that, on real
/// processes with a tiny snapshot interval (so C' later catches up from a snapshot). C' must
/// start as an observer and say so, {B, C'} must elect nobody, A's return must bring e back,
/// and `quorum remove-controller` + `add-controller` must make C' a voter again under its
/// new directory id, caught up with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_is_an_observer_until_re_added_and_loses_nothing() {
    let mut q = Quorum::start(3, &[("metadata.snapshot.interval.records", "10")]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    let (a, _) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let _broker = StandIn::start(addrs.clone(), 1);
    for i in 0..30 {
        wait_for("topic created", WAIT, || async {
            create_topic(&q.addr(a), &format!("t{i}"), 1, 1)
                .await
                .ok()
                .filter(|r| {
                    r.error_code == 0 || r.error_code == ErrorCode::TopicAlreadyExists as i32
                })
        })
        .await;
    }
    let (a, _) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let others: Vec<u64> = (1..=3).filter(|i| *i != a).collect();
    let (b, c) = (others[0], others[1]);
    let c_dir_before = wait_for("C's directory id", WAIT, || async {
        std::fs::read_to_string(q.nodes[&c].dir.join("metadata/directory.id")).ok()
    })
    .await;

    // e commits on {A, C} while B is frozen.
    q.pause(b);
    let r = wait_for("e committed on A and C", WAIT, || async {
        create_topic(&q.addr(a), "e", 1, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;
    assert_eq!(r.error_code, 0);
    // C loses its disk and comes back empty; A crashes; B wakes up.
    q.kill(c);
    q.wipe(c);
    q.spawn(c);
    wait_for("C to say it is an observer", WAIT, || async {
        q.log_of(c)
            .contains("starting as an observer")
            .then_some(())
    })
    .await;
    q.kill(a);
    q.resume(b);
    // {B, C'} must not elect anyone: C' is not the voter C was. Watch for several election
    // timeouts (B's own would fire within one).
    let watch_until = Instant::now() + 4 * ELECTION_TIMEOUT;
    while Instant::now() < watch_until {
        for id in [b, c] {
            if let Some((l, term)) = leader_of(&q.addr(id)).await {
                panic!(
                    "node {id} reports leader {l} (term {term}) with A down and C wiped: a wiped voter voted\nB's log:\n{}\nC's log:\n{}",
                    q.log_of(b),
                    q.log_of(c)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        q.log_of(c).contains("refused a Raft request"),
        "C' refuses requests meant for the voter C was"
    );

    // A returns: {A, B} elect a leader, and e is there.
    q.spawn(a);
    let ab = [a, b];
    let (leader, _) = wait_for("a leader among A and B", WAIT, || leader_among(&q, &ab)).await;
    let leader_addr = q.addr(leader);
    let (img, _) = wait_for("the leader's image", WAIT, || image_of(&leader_addr)).await;
    assert!(img.topic("e").is_some(), "the committed topic e survived");

    // Bring C' back as a voter: remove the voter C was, then add the controller now at C.
    let bootstrap = format!("{},{}", q.addr(a), q.addr(b));
    let c_dir_new = std::fs::read_to_string(q.nodes[&c].dir.join("metadata/directory.id")).unwrap();
    // The active controller probes for observers every 2 s.
    let status = wait_for("quorum status to list C' as an observer", WAIT, || async {
        let status = quorum_cli(&bootstrap, &["status"]).ok()?;
        status["observers"]
            .as_array()?
            .iter()
            .any(|o| o.as_u64() == Some(c))
            .then_some(status)
    })
    .await;
    assert!(
        status["replication"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"].as_u64() == Some(c)
                && n["status"] == "Observer"
                && n["directory_id"] == c_dir_new.as_str()),
        "with its new directory id: {status}"
    );
    let dry = quorum_cli(
        &bootstrap,
        &[
            "remove-controller",
            "--controller-id",
            &c.to_string(),
            "--dry-run",
        ],
    )
    .expect("dry run of remove-controller");
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["keeps_majority"], true, "{dry}");
    let removed = wait_for("remove-controller", WAIT, || async {
        quorum_cli(
            &bootstrap,
            &["remove-controller", "--controller-id", &c.to_string()],
        )
        .ok()
    })
    .await;
    assert_eq!(
        removed["voters_after"].as_array().map(|v| v.len()),
        Some(2),
        "{removed}"
    );
    let added = quorum_cli(
        &bootstrap,
        &[
            "add-controller",
            "--controller-id",
            &c.to_string(),
            "--address",
            &q.addr(c),
        ],
    )
    .expect("add-controller");
    assert_eq!(added["applied"], true, "{added}");
    let c_dir_after =
        std::fs::read_to_string(q.nodes[&c].dir.join("metadata/directory.id")).unwrap();
    assert_ne!(
        c_dir_after, c_dir_before,
        "the wiped directory got a new id"
    );
    assert_eq!(added["directory_id"], c_dir_after.as_str());
    let status = quorum_cli(&bootstrap, &["status"]).expect("quorum status");
    let voters: Vec<u64> = status["voters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(voters.contains(&c), "C is a voter again: {status}");
    let row = status["replication"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"].as_u64() == Some(c))
        .cloned()
        .unwrap();
    assert_eq!(row["directory_id"], c_dir_after.as_str(), "{status}");
    let (img, from_snapshot) = wait_for("C to catch up", WAIT, || async {
        let (img, snap) = image_of(&q.addr(c)).await?;
        (img.topic("e").is_some() && (0..30).all(|i| img.topic(&format!("t{i}")).is_some()))
            .then_some((img, snap))
    })
    .await;
    assert!(
        from_snapshot,
        "C caught up through a snapshot of the purged log"
    );
    assert!(img.topic("e").is_some());
}

/// Goal: one controller alone (of three voters) cannot commit anything and says so.
/// Method: start only node 1; admin writes and broker registration fail with NOT_CONTROLLER
/// naming the quorum problem; the CLI exits non-zero with one clear line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_says_so() {
    let q = Quorum::start_some(3, 1, &[]);
    let addr = q.addr(1);
    // Wait until the node answers at all (its listener is up).
    let err = wait_for("the node to answer", WAIT, || async {
        create_topic(&addr, "never", 1, 1)
            .await
            .err()
            .filter(|e| sluice_proto::status::error_detail(e).is_some())
    })
    .await;
    let code = sluice_proto::status::error_code(&err);
    assert!(
        matches!(code, ErrorCode::NotController | ErrorCode::RequestTimedOut),
        "{err:?}"
    );
    assert!(err.message().contains("quorum"), "{}", err.message());
    let out = std::process::Command::new(sluice_bin())
        .args(["topic", "create", "never", "--bootstrap", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NOT_CONTROLLER") || stderr.contains("REQUEST_TIMED_OUT"),
        "{stderr}"
    );
    assert!(
        leader_of(&addr).await.is_none(),
        "a lone node must not lead"
    );
}

/// The voter ids `quorum status` reports through `bootstrap`.
fn voters_of(bootstrap: &str) -> Option<Vec<u64>> {
    let s = quorum_cli(bootstrap, &["status"]).ok()?;
    let mut v: Vec<u64> = s["voters"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    v.sort();
    Some(v)
}

/// Issue 15 item 4: voters change while the cluster runs. Method: real processes and a writer
/// creating topics all along; grow 3 → 5 (two controllers started on empty directories wait as
/// observers, then `add-controller`), see a change that would leave no reachable majority
/// refused (two of five voters down: removing a third live one), shrink 5 → 3 removing the
/// active controller first (leadership moves), and check that every acknowledged creation is
/// in the final image and that creations were acknowledged in every phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_and_removed_online_and_nothing_acknowledged_is_lost() {
    let mut q = Quorum::start(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let _broker = StandIn::start(addrs.clone(), 1);
    wait_for("the stand-in broker", WAIT, || async {
        create_topic(&addrs[0], "first", 1, 1)
            .await
            .ok()
            .filter(|r| r.error_code == 0)
    })
    .await;
    let acked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        tokio::spawn(async move {
            let (mut i, mut tries) = (0u64, 0usize);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("w-{i}");
                // Any controller forwards to the active one; move on when one is down.
                tries += 1;
                let addr = &addrs[tries % addrs.len()];
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(5), create_topic(addr, &name, 1, 1))
                        .await
                {
                    if r.error_code == 0 || r.error_code == ErrorCode::TopicAlreadyExists as i32 {
                        acked.lock().unwrap().push(name);
                        i += 1;
                        continue;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let progress = |what: &str| {
        let before = acked.lock().unwrap().len();
        let acked = acked.clone();
        let what = what.to_string();
        async move {
            wait_for(
                &format!("creations to be acknowledged {what}"),
                WAIT,
                || async { (acked.lock().unwrap().len() > before + 3).then_some(()) },
            )
            .await
        }
    };
    let bootstrap = addrs.join(",");

    // Grow to five.
    for id in [4u64, 5] {
        q.spawn_new(id);
        wait_for(
            "the new controller to wait as an observer",
            WAIT,
            || async {
                q.log_of(id)
                    .contains("starting as an observer")
                    .then_some(())
            },
        )
        .await;
        let added = quorum_cli(
            &bootstrap,
            &[
                "add-controller",
                "--controller-id",
                &id.to_string(),
                "--address",
                &q.addr(id),
            ],
        )
        .unwrap_or_else(|e| panic!("add-controller {id}: {e}"));
        assert_eq!(added["applied"], true, "{added}");
        progress(&format!("after adding {id}")).await;
    }
    assert_eq!(voters_of(&bootstrap), Some(vec![1, 2, 3, 4, 5]));

    // Two voters down: removing a third live one would leave 2 of 4 up. Refused.
    let (leader, _) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let followers: Vec<u64> = (1..=5).filter(|i| *i != leader).collect();
    q.kill(followers[0]);
    q.kill(followers[1]);
    let victim = followers[2].to_string();
    let dry = quorum_cli(
        &bootstrap,
        &["remove-controller", "--controller-id", &victim, "--dry-run"],
    )
    .expect("dry run");
    assert_eq!(dry["keeps_majority"], false, "{dry}");
    assert_eq!(dry["applied"], false);
    let refused = quorum_cli(
        &bootstrap,
        &["remove-controller", "--controller-id", &victim],
    )
    .expect_err("removing a third voter with two down must be refused");
    assert!(refused.contains("not a majority"), "{refused}");
    assert_eq!(voters_of(&bootstrap), Some(vec![1, 2, 3, 4, 5]));
    progress("with two of five voters down").await;
    q.spawn(followers[0]);
    q.spawn(followers[1]);

    // Shrink to three, the active controller first: leadership moves.
    let (leader, _) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let removed = wait_for("remove-controller of the leader", WAIT, || async {
        quorum_cli(
            &bootstrap,
            &["remove-controller", "--controller-id", &leader.to_string()],
        )
        .ok()
    })
    .await;
    assert_eq!(removed["applied"], true, "{removed}");
    let live: Vec<String> = (1..=5)
        .filter(|i| *i != leader)
        .map(|i| q.addr(i))
        .collect();
    let live_bootstrap = live.join(",");
    let (new_leader, _) = wait_for("a new leader", WAIT, || async {
        for a in &live {
            if let Some((l, t)) = leader_of(a).await {
                if l != leader {
                    return Some((l, t));
                }
            }
        }
        None
    })
    .await;
    assert_ne!(
        new_leader, leader,
        "the removed active controller gave up leadership"
    );
    progress("after removing the active controller").await;
    let next = (1..=5).find(|i| *i != leader && *i != new_leader).unwrap();
    let removed = wait_for("remove-controller", WAIT, || async {
        quorum_cli(
            &live_bootstrap,
            &["remove-controller", "--controller-id", &next.to_string()],
        )
        .ok()
    })
    .await;
    assert_eq!(removed["applied"], true, "{removed}");
    let mut expected: Vec<u64> = (1..=5).filter(|i| *i != leader && *i != next).collect();
    expected.sort();
    assert_eq!(voters_of(&live_bootstrap), Some(expected.clone()));
    progress("with three voters again").await;

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let final_leader = wait_for("the final leader", WAIT, || async {
        for id in &expected {
            if let Some((l, _)) = leader_of(&q.addr(*id)).await {
                return Some(l);
            }
        }
        None
    })
    .await;
    let leader_addr = q.addr(final_leader);
    let (img, _) = wait_for("the final image", WAIT, || image_of(&leader_addr)).await;
    let missing: Vec<&String> = acked.iter().filter(|n| img.topic(n).is_none()).collect();
    assert!(
        missing.is_empty(),
        "acknowledged creations lost: {missing:?}"
    );
}
