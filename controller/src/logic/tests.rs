//! Unit and property tests of the controller's decisions.

use sluice_metadata::LeaderEpoch;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn ep(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

fn defaults() -> Defaults {
    Defaults {
        num_partitions: 1,
        replication_factor: 1,
    }
}

fn commit(image: &MetadataImage, records: Vec<MetadataRecord>) -> MetadataImage {
    let (next, delta) = image.apply(image.offset + 1, &records);
    assert!(delta.skipped.is_empty(), "{:?}", delta.skipped);
    next.check_invariants().expect("invariants after commit");
    next
}

fn cluster(n: i32) -> MetadataImage {
    let mut img = MetadataImage::default();
    for id in 1..=n {
        img = commit(
            &img,
            register_broker(
                &img,
                BrokerId(id),
                &format!("inc-{id}"),
                ep(9000 + id as u16),
                None,
                false,
            )
            .unwrap(),
        );
        img = commit(&img, unfence_broker(&img, BrokerId(id)));
    }
    img
}

#[test]
fn create_topic_places_replicas_round_robin_and_elects_replica_zero() {
    let img = cluster(3);
    let id = TopicId([9; 16]);
    let img = commit(
        &img,
        create_topic(&img, "orders", 4, 3, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    let t = img.topic("orders").unwrap();
    let replicas: Vec<_> = t.partitions.iter().map(|p| p.replicas.clone()).collect();
    assert_eq!(
        replicas,
        vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]
    );
    assert!(t
        .partitions
        .iter()
        .all(|p| p.leader == p.replicas[0] && p.isr == p.replicas));
}

#[test]
fn bad_topic_requests_are_refused_with_kafka_codes() {
    let img = cluster(2);
    let id = TopicId([1; 16]);
    let none = BTreeMap::new();
    type Case<'a> = (&'a str, i32, i32, BTreeMap<String, String>, ErrorCode);
    let cases: Vec<Case> = vec![
        ("", 1, 1, none.clone(), ErrorCode::InvalidTopicException),
        ("..", 1, 1, none.clone(), ErrorCode::InvalidTopicException),
        ("a b", 1, 1, none.clone(), ErrorCode::InvalidTopicException),
        ("t", 0, 1, none.clone(), ErrorCode::InvalidPartitions),
        ("t", -5, 1, none.clone(), ErrorCode::InvalidPartitions),
        ("t", 1, 0, none.clone(), ErrorCode::InvalidReplicationFactor),
        ("t", 1, 3, none.clone(), ErrorCode::InvalidReplicationFactor),
        (
            "t",
            1,
            1,
            BTreeMap::from([("no.such.key".to_string(), "1".to_string())]),
            ErrorCode::InvalidConfig,
        ),
        (
            "t",
            1,
            2,
            BTreeMap::from([("min.insync.replicas".to_string(), "3".to_string())]),
            ErrorCode::InvalidConfig,
        ),
    ];
    for (name, p, rf, cfg, code) in cases {
        let err = create_topic(&img, name, p, rf, &cfg, &defaults(), id).unwrap_err();
        assert_eq!(err.code, code, "{name:?} p={p} rf={rf}: {}", err.message);
    }
    let img = commit(
        &img,
        create_topic(&img, "t", 1, 1, &none, &defaults(), id).unwrap(),
    );
    let err = create_topic(&img, "t", 1, 1, &none, &defaults(), TopicId([2; 16])).unwrap_err();
    assert_eq!(err.code, ErrorCode::TopicAlreadyExists);
}

#[test]
fn fencing_moves_leadership_within_the_isr_in_one_batch() {
    let img = cluster(3);
    let id = TopicId([4; 16]);
    let img = commit(
        &img,
        create_topic(&img, "t", 3, 3, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    let records = fence_broker(&img, BrokerId(1));
    assert!(matches!(
        records[0],
        MetadataRecord::BrokerFenced { id: BrokerId(1) }
    ));
    let img = commit(&img, records);
    for p in &img.topic("t").unwrap().partitions {
        assert_ne!(p.leader, 1);
        assert!(!p.isr.contains(&BrokerId(1)));
    }
    let p0 = img.partition(id, 0).unwrap();
    assert_eq!(
        (p0.leader, p0.leader_epoch),
        (BrokerId(2), LeaderEpoch(1)),
        "next replica in order"
    );
}

#[test]
fn last_isr_member_stays_and_partition_goes_leaderless_until_it_returns() {
    let img = cluster(2);
    let id = TopicId([5; 16]);
    let img = commit(
        &img,
        create_topic(&img, "t", 1, 2, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    let img = commit(&img, fence_broker(&img, BrokerId(2)));
    let img = commit(&img, fence_broker(&img, BrokerId(1)));
    let p = img.partition(id, 0).unwrap();
    assert_eq!(p.leader, NO_LEADER);
    assert_eq!(p.isr, vec![1], "the last ISR member is kept");
    // Broker 2 returns, but is not in the ISR: clean election refuses it.
    let img = commit(&img, unfence_broker(&img, BrokerId(2)));
    assert_eq!(img.partition(id, 0).unwrap().leader, NO_LEADER);
    // Broker 1 returns: it leads again.
    let img = commit(&img, unfence_broker(&img, BrokerId(1)));
    let p = img.partition(id, 0).unwrap();
    assert_eq!(p.leader, 1);
    assert!(p.leader_epoch >= 2);
}

#[test]
fn unclean_election_when_enabled() {
    let img = cluster(2);
    let id = TopicId([6; 16]);
    let cfg = BTreeMap::from([(
        "unclean.leader.election.enable".to_string(),
        "true".to_string(),
    )]);
    let img = commit(
        &img,
        create_topic(&img, "t", 1, 2, &cfg, &defaults(), id).unwrap(),
    );
    let img = commit(&img, fence_broker(&img, BrokerId(2)));
    let img = commit(&img, fence_broker(&img, BrokerId(1)));
    let img = commit(&img, unfence_broker(&img, BrokerId(2)));
    let p = img.partition(id, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (BrokerId(2), vec![BrokerId(2)]));
}

#[test]
fn a_cluster_wide_dynamic_default_turns_unclean_election_on_for_topics_without_an_override() {
    // Kafka's `kafka-configs --entity-type brokers --entity-default --add-config
    // unclean.leader.election.enable=true`: a topic without its own override follows it;
    // one that says false keeps its own value.
    let img = cluster(2);
    let (a, b) = (TopicId([6; 16]), TopicId([7; 16]));
    let img = commit(
        &img,
        create_topic(&img, "a", 1, 2, &BTreeMap::new(), &defaults(), a).unwrap(),
    );
    let no = BTreeMap::from([(
        "unclean.leader.election.enable".to_string(),
        "false".to_string(),
    )]);
    let img = commit(
        &img,
        create_topic(&img, "b", 1, 2, &no, &defaults(), b).unwrap(),
    );
    let img = commit(
        &img,
        alter_broker_configs(
            &img,
            "",
            &[("unclean.leader.election.enable".into(), Some("true".into()))],
        )
        .unwrap(),
    );
    let img = commit(&img, fence_broker(&img, BrokerId(2)));
    let img = commit(&img, fence_broker(&img, BrokerId(1)));
    let img = commit(&img, unfence_broker(&img, BrokerId(2)));
    let leader_of = |id| {
        let p = img.partition(id, 0).unwrap();
        (p.leader, p.isr.clone())
    };
    // Both ISRs shrank to broker 1 (fenced last); only the topic following the default may
    // elect broker 2 from outside the ISR.
    assert_eq!(leader_of(a), (BrokerId(2), vec![BrokerId(2)]));
    assert_eq!(
        leader_of(b),
        (NO_LEADER, vec![BrokerId(1)]),
        "its own false wins"
    );
}

#[test]
fn dynamic_broker_configs_are_refused_by_name_scope_and_value() {
    let set = |k: &str, v: &str| vec![(k.to_string(), Some(v.to_string()))];
    for (resource, ops, code, words) in [
        (
            "",
            set("num.io.threads", "4"),
            ErrorCode::InvalidConfig,
            "num.io.threads",
        ),
        (
            "",
            set("log.retention.ms", "soon"),
            ErrorCode::InvalidConfig,
            "log.retention.ms",
        ),
        (
            "1",
            set("log.retention.ms", "1000"),
            ErrorCode::InvalidConfig,
            "cluster-wide",
        ),
        (
            "b1",
            set("log.retention.ms", "1000"),
            ErrorCode::InvalidRequest,
            "b1",
        ),
        (
            "",
            vec![("bogus.key".to_string(), None)],
            ErrorCode::InvalidConfig,
            "bogus.key",
        ),
    ] {
        let e = alter_broker_configs(&MetadataImage::default(), resource, &ops).unwrap_err();
        assert_eq!(e.code, code, "{resource:?} {ops:?}: {}", e.message);
        assert!(e.message.contains(words), "{}", e.message);
    }
    let none = MetadataImage::default();
    assert_eq!(
        alter_broker_configs(&none, "", &[("log.retention.ms".to_string(), None)]).unwrap(),
        vec![],
        "deleting what is not set writes nothing"
    );
    let r = alter_broker_configs(&none, "", &set("log.retention.ms", " 1000")).unwrap();
    assert_eq!(
        r,
        vec![MetadataRecord::BrokerConfig {
            resource: String::new(),
            key: "log.retention.ms".into(),
            value: Some("1000".into()),
        }]
    );
}

#[test]
fn alter_partitions_decides_each_proposal_alone_and_commits_the_accepted_together() {
    let img = cluster(3);
    let id = TopicId([7; 16]);
    let img = commit(
        &img,
        create_topic(&img, "t", 3, 3, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    let leader_of = |i: i32| img.partition(id, i).unwrap().leader;
    let shrink = |i: i32| {
        let l = leader_of(i);
        AlterPartition {
            broker: l,
            topic_id: id,
            index: i,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![l],
        }
    };
    let mut stale = shrink(1);
    stale.partition_epoch = 7;
    let reqs = [shrink(0), stale, shrink(2), shrink(0)];
    let (records, results) = alter_partitions(&img, &reqs);
    let codes: Vec<Option<ErrorCode>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ErrorCode::InvalidUpdateVersion),
            None,
            Some(ErrorCode::InvalidRequest)
        ]
    );
    let img = commit(&img, records);
    for i in [0, 2] {
        assert_eq!(
            img.partition(id, i).unwrap().isr,
            vec![leader_of(i)],
            "partition {i}"
        );
    }
    assert_eq!(
        img.partition(id, 1).unwrap().isr.len(),
        3,
        "the refused one is unchanged"
    );
}

#[test]
fn alter_partition_checks_epochs_and_membership() {
    let img = cluster(3);
    let id = TopicId([7; 16]);
    let img = commit(
        &img,
        create_topic(&img, "t", 1, 3, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    let base = AlterPartition {
        broker: BrokerId(1),
        topic_id: id,
        index: 0,
        leader_epoch: 0,
        partition_epoch: 0,
        new_isr: BrokerId::from_wire(&[1, 2]),
    };
    let (records, state) = alter_partition(&img, &base).unwrap();
    assert_eq!(state.partition_epoch, 1);
    let img = commit(&img, records);
    assert_eq!(img.partition(id, 0).unwrap().isr, vec![1, 2]);
    // The same request again is stale.
    let err = alter_partition(&img, &base).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidUpdateVersion);
    let wrong = [
        (
            AlterPartition {
                broker: BrokerId(2),
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::NotLeaderOrFollower,
        ),
        (
            AlterPartition {
                leader_epoch: -1,
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::FencedLeaderEpoch,
        ),
        (
            AlterPartition {
                leader_epoch: 3,
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::UnknownLeaderEpoch,
        ),
        (
            AlterPartition {
                new_isr: BrokerId::from_wire(&[2, 3]),
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            AlterPartition {
                new_isr: BrokerId::from_wire(&[1, 1]),
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            AlterPartition {
                new_isr: BrokerId::from_wire(&[1, 9]),
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            AlterPartition {
                index: 5,
                partition_epoch: 1,
                ..base.clone()
            },
            ErrorCode::UnknownTopicOrPartition,
        ),
    ];
    for (req, code) in wrong {
        assert_eq!(
            alter_partition(&img, &req).unwrap_err().code,
            code,
            "{req:?}"
        );
    }
    // A fenced broker cannot join the ISR.
    let img = commit(&img, fence_broker(&img, BrokerId(3)));
    let p = img.partition(id, 0).unwrap().clone();
    let err = alter_partition(
        &img,
        &AlterPartition {
            new_isr: BrokerId::from_wire(&[1, 2, 3]),
            partition_epoch: p.partition_epoch.get(),
            ..base
        },
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::IneligibleReplica);
}

#[test]
fn producer_id_blocks_are_disjoint() {
    let img = cluster(1);
    let a = allocate_producer_ids(&img, BrokerId(1), 1000);
    let img = commit(&img, vec![a.clone()]);
    let b = allocate_producer_ids(&img, BrokerId(1), 1000);
    match (a, b) {
        (
            MetadataRecord::ProducerIdBlock {
                first: fa, len: la, ..
            },
            MetadataRecord::ProducerIdBlock { first: fb, .. },
        ) => assert_eq!(fb, fa + la),
        _ => unreachable!(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register(i32),
    Unfence(i32),
    Fence(i32),
    Create(u8, i32, i32),
    Delete(u8),
    Shrink(u8, i32),
    Expand(u8, i32),
    Grow(u8, i32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1..6i32).prop_map(Op::Register),
        3 => (1..6i32).prop_map(Op::Unfence),
        2 => (1..6i32).prop_map(Op::Fence),
        2 => (0..4u8, 1..5i32, 1..4i32).prop_map(|(t, p, r)| Op::Create(t, p, r)),
        1 => (0..4u8).prop_map(Op::Delete),
        2 => (0..4u8, 0..5i32).prop_map(|(t, p)| Op::Shrink(t, p)),
        2 => (0..4u8, 0..5i32).prop_map(|(t, p)| Op::Expand(t, p)),
        1 => (0..4u8, 1..4i32).prop_map(|(t, n)| Op::Grow(t, n)),
    ]
}

proptest! {
    /// Random controller operations keep the image invariants (every leader is in its ISR
    /// and unfenced, or the partition is leaderless; ISR within replicas) and epochs only grow.
    #[test]
    fn random_operations_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut img = MetadataImage::default();
        let mut next_id = 0u8;
        for op in ops {
            let before = img.clone();
            let records: Vec<MetadataRecord> = match op {
                Op::Register(b) => register_broker(&img, BrokerId::from(b), &format!("i{}", img.offset), ep(9000), None, false).unwrap(),
                Op::Unfence(b) => unfence_broker(&img, BrokerId::from(b)),
                Op::Fence(b) => fence_broker(&img, BrokerId::from(b)),
                Op::Create(t, p, r) => {
                    next_id += 1;
                    create_topic(&img, &format!("t{t}"), p, r, &BTreeMap::new(), &defaults(), TopicId([next_id; 16]))
                        .unwrap_or_default()
                }
                Op::Delete(t) => delete_topic(&img, &format!("t{t}")).unwrap_or_default(),
                Op::Grow(t, n) => {
                    let have = img.topic(&format!("t{t}")).map_or(0, |t| t.partitions.len() as i32);
                    create_partitions(&img, &format!("t{t}"), have + n).unwrap_or_default()
                }
                Op::Shrink(t, p) | Op::Expand(t, p) => {
                    let Some(topic) = img.topic(&format!("t{t}")) else { continue };
                    let Some(state) = topic.partitions.get(p as usize) else { continue };
                    if state.leader == NO_LEADER { continue }
                    let new_isr: Vec<BrokerId> = if matches!(op, Op::Shrink(..)) {
                        vec![state.leader]
                    } else {
                        state.replicas.iter().copied().filter(|b| img.is_unfenced(*b) || state.isr.contains(b)).collect()
                    };
                    let req = AlterPartition {
                        broker: state.leader,
                        topic_id: topic.id,
                        index: p,
                        leader_epoch: state.leader_epoch.get(),
                        partition_epoch: state.partition_epoch.get(),
                        new_isr,
                    };
                    alter_partition(&img, &req).expect("a valid proposal is accepted").0
                }
            };
            img = commit(&img, records);
            for t in img.topics.values() {
                if let Some(old) = before.topics.get(&t.id) {
                    for (p, q) in old.partitions.iter().zip(&t.partitions) {
                        prop_assert!(q.leader_epoch >= p.leader_epoch);
                        prop_assert!(q.partition_epoch >= p.partition_epoch);
                        if q.leader != p.leader {
                            prop_assert!(q.leader_epoch > p.leader_epoch);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_second_incarnation_is_refused_while_the_first_has_a_live_session() {
    // Review defect 8 of issue 12 (Kafka's ClusterControlManager.registerBroker).
    let img = cluster(2);
    let epoch = img.brokers[&BrokerId(1)].epoch;
    let err = register_broker(&img, BrokerId(1), "other", ep(9101), None, true).unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::DuplicateBrokerRegistration,
        "{}",
        err.message
    );
    assert!(err.message.contains("inc-1"), "{}", err.message);
    // The same incarnation retrying keeps its registration (and epoch).
    assert!(
        register_broker(&img, BrokerId(1), "inc-1", ep(9001), None, true)
            .unwrap()
            .is_empty()
    );
    assert_eq!(img.brokers[&BrokerId(1)].epoch, epoch);
    // Once the old session is gone, a new incarnation is a restart: fenced, re-registered.
    let records = register_broker(&img, BrokerId(1), "other", ep(9101), None, false).unwrap();
    let next = commit(&img, records);
    assert!(next.brokers[&BrokerId(1)].fenced);
    assert_eq!(next.brokers[&BrokerId(1)].incarnation_id, "other");
    assert!(next.brokers[&BrokerId(1)].epoch > epoch);
}

#[test]
fn scram_credentials_are_validated_and_deletions_need_a_credential() {
    use sluice_metadata::scram::{ScramCredential, ScramMechanism as M};
    let img = MetadataImage::default();
    let salted = |m: M| m.salted_password(b"pw", b"salt", 4096);
    let ok = |m: M| (m, 4096, b"salt".to_vec(), salted(m));
    let records =
        alter_scram_credentials(&img, "alice", &[], &[ok(M::Sha256), ok(M::Sha512)]).unwrap();
    let img = commit(&img, records);
    let cred = &img.users["alice"][&M::Sha256];
    assert_eq!(cred, &ScramCredential::new(M::Sha256, "pw", b"salt", 4096));
    assert!(cred.verify_password(M::Sha256, "pw"));

    // Table: what is refused, with which code and message.
    type Case<'a> = (&'a str, Vec<M>, Vec<ScramUpsertion>, ErrorCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "",
            vec![],
            vec![ok(M::Sha256)],
            ErrorCode::InvalidRequest,
            "empty",
        ),
        (
            "bob",
            vec![M::Sha256],
            vec![],
            ErrorCode::ResourceNotFound,
            "no SCRAM-SHA-256",
        ),
        (
            "alice",
            vec![M::Sha256],
            vec![ok(M::Sha256)],
            ErrorCode::InvalidRequest,
            "twice",
        ),
        (
            "alice",
            vec![],
            vec![(M::Sha256, 4095, b"s".to_vec(), salted(M::Sha256))],
            ErrorCode::InvalidRequest,
            "iterations",
        ),
        (
            "alice",
            vec![],
            vec![(M::Sha256, 4096, vec![], salted(M::Sha256))],
            ErrorCode::InvalidRequest,
            "salt",
        ),
        (
            "alice",
            vec![],
            vec![(M::Sha512, 4096, b"s".to_vec(), salted(M::Sha256))],
            ErrorCode::InvalidRequest,
            "64 bytes",
        ),
    ];
    for (name, del, up, code, says) in cases {
        let r = alter_scram_credentials(&img, name, &del, &up).unwrap_err();
        assert_eq!(r.code, code, "{name} {del:?}: {}", r.message);
        assert!(r.message.contains(says), "{}", r.message);
    }

    // Removing both credentials removes the user.
    let records = alter_scram_credentials(&img, "alice", &[M::Sha256, M::Sha512], &[]).unwrap();
    let img = commit(&img, records);
    assert!(img.users.is_empty());
}

#[test]
fn acls_are_created_once_and_deleted_by_filter() {
    use sluice_metadata::acl::{
        AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    };
    let b = |who: &str, name: &str, pattern, op| AclBinding {
        principal: who.into(),
        host: "*".into(),
        resource_type: ResourceType::Topic,
        resource_name: name.into(),
        pattern,
        operation: op,
        permission: Permission::Allow,
    };
    let img = cluster(3);
    let read = b(
        "User:alice",
        "orders",
        PatternType::Literal,
        Operation::Read,
    );
    let write = b(
        "User:alice",
        "orders",
        PatternType::Literal,
        Operation::Write,
    );
    let prefix = b("User:bob", "ord", PatternType::Prefixed, Operation::Read);
    let bad = b("alice", "orders", PatternType::Literal, Operation::Read);
    let (records, results) = create_acls(&img, &[read.clone(), bad, write.clone(), read.clone()]);
    // The invalid one is refused alone; the duplicate in the same request is one record.
    assert_eq!(records.len(), 2);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    let refusal = results[1].as_ref().unwrap_err();
    assert_eq!(refusal.code, ErrorCode::InvalidRequest);
    assert!(refusal.message.contains("User:NAME"), "{}", refusal.message);
    let img = commit(&img, records);
    assert_eq!(img.acls.len(), 2);
    // Creating again is a success that writes nothing.
    let (records, results) = create_acls(&img, &[write.clone(), prefix.clone()]);
    assert_eq!(records.len(), 1);
    assert!(results.iter().all(Result::is_ok));
    let img = commit(&img, records);
    assert_eq!(img.acls.len(), 3);

    // Two overlapping filters: alice's Read ACLs, and whatever would apply to topic "orders".
    let alice_reads = AclFilter {
        principal: Some("User:alice".into()),
        operation: Some(Operation::Read),
        ..AclFilter::any()
    };
    let on_orders = AclFilter {
        resource_type: Some(ResourceType::Topic),
        resource_name: Some("orders".into()),
        pattern: PatternFilter::Match,
        principal: Some("User:bob".into()),
        ..AclFilter::any()
    };
    let (records, matched) = delete_acls(&img, &[alice_reads.clone(), on_orders, alice_reads]);
    assert_eq!(matched[0], vec![read.clone()]);
    assert_eq!(matched[1], vec![prefix]);
    assert_eq!(matched[2], vec![read], "each filter lists what it matched");
    assert_eq!(records.len(), 2, "each binding is removed once");
    let img = commit(&img, records);
    assert_eq!(img.acls.iter().cloned().collect::<Vec<_>>(), vec![write]);
    let (records, matched) = delete_acls(&img, &[AclFilter::any()]);
    assert_eq!((records.len(), matched[0].len()), (1, 1));
}

#[test]
fn client_quota_entries_apply_whole_or_not_at_all() {
    use sluice_metadata::quota::{QuotaEntity, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};
    let img = cluster(3);
    let alice: QuotaEntity = [("user".to_string(), Some("alice".to_string()))].into();
    let default_client: QuotaEntity = [("client-id".to_string(), None)].into();
    let ip: QuotaEntity = [("ip".to_string(), None)].into();
    let (records, results) = alter_client_quotas(
        &img,
        &[
            (
                alice.clone(),
                vec![
                    (PRODUCER_BYTE_RATE.into(), Some(1024.0)),
                    (CONSUMER_BYTE_RATE.into(), Some(2048.0)),
                ],
            ),
            // A bad value refuses the whole entry: its good key is not set either.
            (
                default_client.clone(),
                vec![
                    (PRODUCER_BYTE_RATE.into(), Some(10.0)),
                    (CONSUMER_BYTE_RATE.into(), Some(-1.0)),
                ],
            ),
            (ip, vec![(PRODUCER_BYTE_RATE.into(), Some(1.0))]),
            (
                default_client.clone(),
                vec![("controller_mutation_rate".into(), Some(1.0))],
            ),
            (
                default_client.clone(),
                vec![
                    (PRODUCER_BYTE_RATE.into(), Some(1.0)),
                    (PRODUCER_BYTE_RATE.into(), None),
                ],
            ),
        ],
    );
    assert!(results[0].is_ok());
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(
            r.as_ref().unwrap_err().code,
            ErrorCode::InvalidRequest,
            "entry {i}"
        );
    }
    assert_eq!(records.len(), 2, "only alice's two quotas: {records:?}");
    let img = commit(&img, records);
    assert_eq!(img.client_quotas[&alice][PRODUCER_BYTE_RATE].0, 1024.0);
    assert!(!img.client_quotas.contains_key(&default_client));
    // Setting the same value again writes nothing; removing an unset key is a no-op;
    // removing both keys removes the entity.
    let (records, _) = alter_client_quotas(
        &img,
        &[(
            alice.clone(),
            vec![(PRODUCER_BYTE_RATE.into(), Some(1024.0))],
        )],
    );
    assert!(records.is_empty());
    // One entity twice in one request: the second is refused (its order would decide).
    let (records, results) = alter_client_quotas(
        &img,
        &[
            (alice.clone(), vec![(PRODUCER_BYTE_RATE.into(), Some(10.0))]),
            (
                alice.clone(),
                vec![(PRODUCER_BYTE_RATE.into(), Some(1024.0))],
            ),
        ],
    );
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(records.len(), 1);
    let (records, results) = alter_client_quotas(
        &img,
        &[(
            alice.clone(),
            vec![
                (PRODUCER_BYTE_RATE.into(), None),
                (CONSUMER_BYTE_RATE.into(), None),
                ("request_percentage".into(), None),
            ],
        )],
    );
    assert!(results[0].is_ok());
    assert_eq!(records.len(), 2);
    assert!(commit(&img, records).client_quotas.is_empty());
}

#[test]
fn preferred_and_unclean_elections_and_the_automatic_rebalance() {
    let img = cluster(3);
    let id = TopicId([5; 16]);
    let img = commit(
        &img,
        create_topic(&img, "t", 3, 3, &BTreeMap::new(), &defaults(), id).unwrap(),
    );
    // Broker 1 is fenced (leadership of t-0 moves to 2), then comes back, not yet in the ISR.
    let img = commit(&img, fence_broker(&img, BrokerId(1)));
    let img = commit(&img, unfence_broker(&img, BrokerId(1)));
    let want = |name: &str, i: i32| (name.to_string(), i);
    let code = |outcomes: &[ElectionOutcome], i: usize| {
        outcomes[i]
            .1
            .as_ref()
            .err()
            .map_or(ErrorCode::None, |r| r.code)
    };
    let (records, out) = elect_leaders(&img, Election::Preferred, Some(&[want("t", 0)]));
    assert!(records.is_empty());
    assert_eq!(code(&out, 0), ErrorCode::PreferredLeaderNotAvailable);
    assert_eq!(rebalance_leaders(&img, 10.0), vec![], "1 is not in the ISR");
    // Broker 1 caught up and is back in the ISR.
    let img = commit(
        &img,
        vec![MetadataRecord::PartitionChange {
            topic_id: id,
            index: 0,
            isr: Some(vec![BrokerId(2), BrokerId(3), BrokerId(1)]),
            leader: None,
        }],
    );
    let (records, out) = elect_leaders(
        &img,
        Election::Preferred,
        Some(&[want("t", 0), want("t", 1), want("t", 7), want("nope", 0)]),
    );
    assert_eq!(code(&out, 0), ErrorCode::None);
    assert_eq!(code(&out, 1), ErrorCode::ElectionNotNeeded);
    assert_eq!(code(&out, 2), ErrorCode::UnknownTopicOrPartition);
    assert_eq!(code(&out, 3), ErrorCode::UnknownTopicOrPartition);
    let elected = commit(&img, records);
    let p0 = elected.partition(id, 0).unwrap();
    assert_eq!((p0.leader, p0.leader_epoch), (BrokerId(1), LeaderEpoch(2)));
    // The automatic rebalance does the same once 1's share of partitions it does not lead
    // (1 of 1) is over the threshold, and nothing at 100 %.
    assert_eq!(rebalance_leaders(&img, 100.0), vec![]);
    assert_eq!(commit(&img, rebalance_leaders(&img, 10.0)), elected);
    assert_eq!(rebalance_leaders(&elected, 0.0), vec![], "balanced");
    // Every partition at once: only t-0 needed it.
    let (records, out) = elect_leaders(&img, Election::Preferred, None);
    assert_eq!(records.len(), 1);
    assert_eq!(out.len(), 3);

    // Unclean: a leaderless partition whose last ISR member is fenced gets a live replica,
    // which becomes the whole ISR; one with a leader needs no election.
    let u = TopicId([6; 16]);
    let img = commit(
        &elected,
        create_topic(&elected, "u", 1, 3, &BTreeMap::new(), &defaults(), u).unwrap(),
    );
    let img = commit(
        &img,
        vec![MetadataRecord::PartitionChange {
            topic_id: u,
            index: 0,
            isr: Some(vec![BrokerId(3)]),
            leader: Some(BrokerId(3)),
        }],
    );
    let (_, out) = elect_leaders(&img, Election::Unclean, Some(&[want("u", 0)]));
    assert_eq!(code(&out, 0), ErrorCode::ElectionNotNeeded);
    let img = commit(&img, fence_broker(&img, BrokerId(3)));
    assert_eq!(img.partition(u, 0).unwrap().leader, NO_LEADER);
    let (records, out) = elect_leaders(&img, Election::Unclean, Some(&[want("u", 0)]));
    assert_eq!(code(&out, 0), ErrorCode::None);
    let img = commit(&img, records);
    let p = img.partition(u, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (BrokerId(1), vec![BrokerId(1)]));
}
