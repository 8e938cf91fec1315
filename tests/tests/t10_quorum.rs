//! The metadata quorum with real `sluice controller` processes: election, replication of
//! topics to every controller, forwarding, and bad input.

use std::time::{Duration, Instant};

use sluice_proto::v1::{DescribeClusterRequest, ErrorCode, RaftPayload};
use sluice_tests::standin::StandIn;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// Goal: three controllers agree on one leader, and topics created through any of them end
/// up in every controller's own applied log. Method: create a topic through each node, then
/// read each node's WatchMetadata stream (served from its local state) until it holds all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_a_leader_and_share_topics() {
    let q = Quorum::start(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    let (leader, term) = wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    for a in &addrs {
        let (l, t) = wait_for("every node to know the leader", WAIT, || leader_of(a)).await;
        assert_eq!((l, t), (leader, term), "node {a} disagrees on the leader");
    }
    let brokers: Vec<StandIn> = (1..=3).map(|b| StandIn::start(addrs.clone(), b)).collect();
    wait_for("stand-in brokers unfenced", WAIT, || async {
        brokers.iter().all(StandIn::is_active).then_some(())
    })
    .await;
    for (i, a) in addrs.iter().enumerate() {
        let r = create_topic(a, &format!("topic-{i}"), 3, 3)
            .await
            .expect("create");
        assert_eq!(r.error_code, ErrorCode::None as i32, "{}", r.error_message);
        assert_eq!((r.num_partitions, r.replication_factor), (3, 3));
    }
    for a in &addrs {
        let image = wait_for("all topics on every node", WAIT, || async {
            let (img, _) = image_of(a).await?;
            (0..3)
                .all(|i| img.topic(&format!("topic-{i}")).is_some())
                .then_some(img)
        })
        .await;
        // Placement: replica j of partition i on broker (i + j) mod 3, replica 0 leads.
        let t = image.topic("topic-0").unwrap();
        let replicas: Vec<Vec<i32>> = t
            .partitions
            .iter()
            .map(|p| sluice_metadata::BrokerId::to_wire(&p.replicas))
            .collect();
        assert_eq!(replicas, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        assert!(t.partitions.iter().all(|p| p.leader == p.replicas[0]));
    }
}

/// Goal: bad requests get clear, Kafka-named errors and write nothing; garbage on the wire
/// does not hurt the quorum. Method: send each bad request, compare the metadata offset
/// before and after, then check the node still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let q = Quorum::start(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let brokers: Vec<StandIn> = (1..=2).map(|b| StandIn::start(addrs.clone(), b)).collect();
    wait_for("brokers unfenced", WAIT, || async {
        brokers.iter().all(StandIn::is_active).then_some(())
    })
    .await;
    let offset = || async {
        admin(&addrs[1])
            .describe_cluster(DescribeClusterRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().metadata_offset)
    };
    let before = wait_for("cluster description", WAIT, offset).await;
    let long = "x".repeat(250);
    let cases: Vec<(&str, i32, i32, ErrorCode)> = vec![
        ("", 1, 1, ErrorCode::InvalidTopicException),
        (".", 1, 1, ErrorCode::InvalidTopicException),
        ("..", 1, 1, ErrorCode::InvalidTopicException),
        ("a/b", 1, 1, ErrorCode::InvalidTopicException),
        (&long, 1, 1, ErrorCode::InvalidTopicException),
        ("ok", 0, 1, ErrorCode::InvalidPartitions),
        ("ok", -3, 1, ErrorCode::InvalidPartitions),
        ("ok", 1, 0, ErrorCode::InvalidReplicationFactor),
        ("ok", 1, 3, ErrorCode::InvalidReplicationFactor),
    ];
    for (name, p, rf, code) in cases {
        let r = create_topic(&addrs[2], name, p, rf)
            .await
            .expect("per-item errors, not RPC failures");
        assert_eq!(
            r.error_code, code as i32,
            "{name:?} p={p} rf={rf}: {}",
            r.error_message
        );
        assert!(!r.error_message.is_empty());
    }
    let bad_config = admin(&addrs[0])
        .create_topics(sluice_proto::v1::CreateTopicsRequest {
            topics: vec![sluice_proto::v1::TopicSpec {
                name: "cfg".into(),
                num_partitions: 1,
                replication_factor: 1,
                configs: [("retention.msx".to_string(), "1".to_string())].into(),
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bad_config.results[0].error_code,
        ErrorCode::InvalidConfig as i32
    );
    assert!(bad_config.results[0]
        .error_message
        .contains("retention.msx"));

    // Garbage where a Raft message should be.
    let mut raft = sluice_proto::v1::raft_client::RaftClient::new(channel(&addrs[0]));
    let err = raft
        .append_entries(RaftPayload {
            payload: vec![0xff; 64].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("undecodable AppendEntries"),
        "{err:?}"
    );
    // Raw garbage bytes on the TCP port.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addrs[0]).unwrap();
        let _ = s.write_all(&[
            0x16, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3,
        ]);
    }
    let after = wait_for("cluster description", WAIT, offset).await;
    assert_eq!(before, after, "refused requests wrote metadata records");
    // Still serving, and a good request still works.
    let r = create_topic(&addrs[0], "good", 1, 2).await.unwrap();
    assert_eq!(r.error_code, ErrorCode::None as i32);
}

/// Goal: a broker that stops heartbeating is fenced after broker.session.timeout.ms, and in
/// the same batch loses leadership and ISR membership. Method: three stand-in brokers, a
/// topic with RF 3, stop one stand-in, watch the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_is_fenced_and_leadership_moves() {
    let q = Quorum::start(3, &[("broker.session.timeout.ms", "1500")]);
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let brokers: Vec<StandIn> = (1..=3).map(|b| StandIn::start(addrs.clone(), b)).collect();
    wait_for("brokers unfenced", WAIT, || async {
        brokers.iter().all(StandIn::is_active).then_some(())
    })
    .await;
    let r = create_topic(&addrs[0], "t", 3, 3).await.unwrap();
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    let stopped = Instant::now();
    brokers[0].stop();
    let image = wait_for("broker 1 fenced", WAIT, || async {
        let (img, _) = image_of(&addrs[1]).await?;
        img.brokers
            .get(&sluice_metadata::BrokerId(1))
            .filter(|b| b.fenced)?;
        Some(img)
    })
    .await;
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "fenced too early: {waited:?}"
    );
    let t = image.topic("t").unwrap();
    for (i, p) in t.partitions.iter().enumerate() {
        assert_ne!(p.leader, 1, "partition {i} still led by the fenced broker");
        assert!(
            !p.isr.contains(&sluice_metadata::BrokerId(1)),
            "partition {i} keeps the fenced broker in ISR"
        );
    }
    assert_eq!(t.partitions[0].leader, 2, "next replica in order leads");
    assert_eq!(t.partitions[0].leader_epoch, 1);
    image.check_invariants().unwrap();
}
