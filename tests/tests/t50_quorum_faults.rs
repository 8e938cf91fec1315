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

/// Goal: after enough records to snapshot and purge the log, a controller whose data was
/// wiped rejoins from a snapshot. Method: tiny snapshot interval, 40 topics, kill + wipe +
/// restart a follower, and read its applied state (which must start from a snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_controller_rejoins_from_a_snapshot() {
    let mut q = Quorum::start(3, &[("metadata.snapshot.interval.records", "10")]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    let (leader, _) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let _broker = StandIn::start(addrs.clone(), 1);
    for i in 0..40 {
        wait_for("topic created", WAIT, || async {
            create_topic(&q.addr(leader), &format!("t{i}"), 1, 1)
                .await
                .ok()
                .filter(|r| {
                    r.error_code == 0 || r.error_code == ErrorCode::TopicAlreadyExists as i32
                })
        })
        .await;
    }
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    q.kill(victim);
    q.wipe(victim);
    q.spawn(victim);
    let (img, from_snapshot) = wait_for("the wiped node to catch up", WAIT, || async {
        let (img, snap) = image_of(&q.addr(victim)).await?;
        (0..40)
            .all(|i| img.topic(&format!("t{i}")).is_some())
            .then_some((img, snap))
    })
    .await;
    assert!(
        from_snapshot,
        "the wiped node should have caught up through a snapshot; leader log:\n{}\nvictim log:\n{}",
        q.log_of(leader),
        q.log_of(victim)
    );
    assert_eq!(img.topic_ids.len(), 40);
    let (_, leader_from_snapshot) = image_of(&q.addr(leader)).await.unwrap();
    assert!(
        leader_from_snapshot,
        "the leader's log should have been purged behind a snapshot"
    );
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
