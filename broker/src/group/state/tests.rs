//! Table tests of the coordinator's decisions. Each names the Kafka rule it follows
//! (KIP-848 consumer protocol; `GroupMetadataManager` / `OffsetMetadataManager`).

use sluice_metadata::LeaderEpoch;
use sluice_metadata::PartitionEpoch;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_metadata::{BrokerId, MetadataImage, PartitionState, TopicId, TopicImage};
use sluice_proto::status::error_code;
use sluice_proto::v1::*;

use super::ShardState;

const HB: Duration = Duration::from_millis(300);

/// An image with topic `t` of `n` partitions.
fn image(n: usize) -> MetadataImage {
    let id = TopicId([7; 16]);
    let p = PartitionState {
        replicas: vec![BrokerId(1)],
        isr: vec![BrokerId(1)],
        leader: BrokerId(1),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
    };
    let t = TopicImage {
        id,
        name: "t".into(),
        config: BTreeMap::new(),
        partitions: vec![p; n],
    };
    MetadataImage {
        topics: Arc::new(BTreeMap::from([(id, Arc::new(t))])),
        topic_ids: Arc::new(BTreeMap::from([("t".to_string(), id)])),
        ..Default::default()
    }
}

fn join(group: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_epoch: 0,
        subscribed_topic_names: vec!["t".into()],
        ..Default::default()
    }
}

/// A join with a member id chosen by the client (KIP-1082), so the range assignor's order
/// is known: members sort by id.
fn join_as(group: &str, id: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        member_id: id.into(),
        ..join(group)
    }
}

fn beat(group: &str, member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_id: member.into(),
        member_epoch: epoch,
        ..Default::default()
    }
}

/// A heartbeat at `epoch` that reports owning these partitions of `t`.
fn beat_owning(
    group: &str,
    member: &str,
    epoch: i32,
    owned: &[i32],
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        owned_partitions: vec![TopicPartitions {
            topic: "t".into(),
            topic_id: String::new(),
            partitions: owned.to_vec(),
        }],
        ..beat(group, member, epoch)
    }
}

fn commit(
    group: &str,
    member: &str,
    epoch: i32,
    partition: i32,
    offset: i64,
) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: group.into(),
        member_id: member.into(),
        member_epoch: epoch,
        group_instance_id: None,
        partitions: vec![OffsetCommitPartition {
            topic: "t".into(),
            partition,
            committed_offset: offset,
            ..Default::default()
        }],
    }
}

fn partitions(r: &ConsumerGroupHeartbeatResponse) -> Vec<i32> {
    r.assignment
        .as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .flat_map(|t| t.partitions.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn committed(s: &ShardState, group: &str, partition: i32) -> i64 {
    s.fetch(&OffsetFetchRequest {
        group_id: group.into(),
        partitions: vec![TopicPartition {
            topic: "t".into(),
            partition,
        }],
    })
    .results
    .first()
    .map_or(-2, |r| r.committed_offset)
}

#[test]
fn a_join_bumps_the_group_epoch_and_partitions_move_only_once_released() {
    // KIP-848 (Kafka's CurrentAssignmentBuilder): every membership change bumps the group
    // epoch and the server assigns; a member that must give partitions up keeps its epoch
    // and is told only what it keeps (UNREVOKED_PARTITIONS); the new owner gets them only
    // once the old one stops reporting them (UNRELEASED_PARTITIONS), so no partition is
    // consumed by two members at once.
    let img = image(4);
    let mut s = ShardState::default();
    let now = Instant::now();
    let hb = |s: &mut ShardState, req| s.heartbeat(req, "h".into(), now, HB, &img);
    let a = hb(&mut s, join_as("g", "a")).unwrap();
    assert_eq!((a.member_epoch, partitions(&a)), (1, vec![0, 1, 2, 3]));
    assert_eq!(a.heartbeat_interval_ms, 300);
    let a = a.member_id;
    let b = hb(&mut s, join_as("g", "b")).unwrap();
    assert_eq!(
        (b.member_epoch, partitions(&b)),
        (2, vec![]),
        "b's target (2, 3) is still a's"
    );
    let b = b.member_id;
    let steps: Vec<(&str, ConsumerGroupHeartbeatRequest, i32, Vec<i32>)> = vec![
        (
            "a is asked to revoke 2, 3",
            beat_owning("g", &a, 1, &[0, 1, 2, 3]),
            1,
            vec![0, 1],
        ),
        ("b waits for them", beat_owning("g", &b, 2, &[]), 2, vec![]),
        (
            "a still owns them",
            beat_owning("g", &a, 1, &[0, 1, 2, 3]),
            1,
            vec![0, 1],
        ),
        ("b still waits", beat_owning("g", &b, 2, &[]), 2, vec![]),
        (
            "a released them: epoch 2",
            beat_owning("g", &a, 1, &[0, 1]),
            2,
            vec![0, 1],
        ),
        ("b gets them", beat_owning("g", &b, 2, &[]), 2, vec![2, 3]),
        ("a stable", beat_owning("g", &a, 2, &[0, 1]), 2, vec![0, 1]),
        // The answer that moved a to epoch 2 may be lost: epoch 1 again, owning a part
        // of what it has, is accepted (Kafka's previous-epoch rule).
        (
            "a's lost answer",
            beat_owning("g", &a, 1, &[0, 1]),
            2,
            vec![0, 1],
        ),
    ];
    for (name, req, epoch, parts) in steps {
        let r = hb(&mut s, req).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!((r.member_epoch, partitions(&r)), (epoch, parts), "{name}");
    }
    let d = s.describe("g", &img);
    assert_eq!(d.group_state, GroupState::Stable as i32);
    // A heartbeat at an epoch the member was never given is fenced (it must rejoin); so is
    // the previous epoch while it still claims partitions it no longer has.
    for (name, req) in [
        ("future epoch", beat_owning("g", &a, 3, &[0, 1])),
        (
            "previous epoch, claims more",
            beat_owning("g", &a, 1, &[0, 1, 2]),
        ),
    ] {
        let e = hb(&mut s, req).unwrap_err();
        assert_eq!(error_code(&e), ErrorCode::FencedMemberEpoch, "{name}");
    }
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    // Kafka fences a member stuck in UNREVOKED_PARTITIONS after rebalance_timeout_ms
    // (max.poll.interval.ms) and gives its partitions to the others.
    let img = image(2);
    let mut s = ShardState::default();
    let t0 = Instant::now();
    let a = s
        .heartbeat(
            ConsumerGroupHeartbeatRequest {
                rebalance_timeout_ms: 1_000,
                ..join_as("g", "a")
            },
            "h".into(),
            t0,
            HB,
            &img,
        )
        .unwrap()
        .member_id;
    let b = s
        .heartbeat(join_as("g", "b"), "h".into(), t0, HB, &img)
        .unwrap()
        .member_id;
    let r = s
        .heartbeat(beat_owning("g", &a, 1, &[0, 1]), "h".into(), t0, HB, &img)
        .unwrap();
    assert_eq!((r.member_epoch, partitions(&r)), (1, vec![0]));
    let session = Duration::from_secs(30);
    // a keeps heartbeating (its session is alive) but never lets partition 1 go.
    let t1 = t0 + Duration::from_millis(900);
    s.heartbeat(beat_owning("g", &a, 1, &[0, 1]), "h".into(), t1, HB, &img)
        .unwrap();
    s.heartbeat(beat_owning("g", &b, 2, &[]), "h".into(), t1, HB, &img)
        .unwrap();
    assert_eq!(s.expire(t1, session, &img), 0);
    assert_eq!(
        s.expire(t0 + Duration::from_millis(1_100), session, &img),
        1
    );
    let r = s
        .heartbeat(beat_owning("g", &b, 2, &[]), "h".into(), t1, HB, &img)
        .unwrap();
    assert_eq!((r.member_epoch, partitions(&r)), (3, vec![0, 1]));
}

#[test]
fn heartbeats_that_cannot_be_served_are_refused_with_the_kafka_code() {
    let img = image(1);
    let now = Instant::now();
    let cases: Vec<(&str, ConsumerGroupHeartbeatRequest, ErrorCode)> = vec![
        (
            "unknown member",
            beat("g", "nobody", 1),
            ErrorCode::UnknownMemberId,
        ),
        (
            "join without a subscription",
            ConsumerGroupHeartbeatRequest {
                subscribed_topic_names: vec![],
                ..join("g")
            },
            ErrorCode::InvalidRequest,
        ),
        (
            "unknown assignor",
            ConsumerGroupHeartbeatRequest {
                server_assignor: "sticky-ish".into(),
                ..join("g")
            },
            ErrorCode::UnsupportedAssignor,
        ),
    ];
    for (name, req, code) in cases {
        let mut s = ShardState::default();
        let e = s.heartbeat(req, "h".into(), now, HB, &img).unwrap_err();
        assert_eq!(error_code(&e), code, "{name}: {e:?}");
        assert!(s.is_empty(), "{name}: a refused join creates no group");
    }
}

#[test]
fn a_leave_and_an_expired_session_rebalance_the_rest() {
    let img = image(2);
    let mut s = ShardState::default();
    let t0 = Instant::now();
    let a = s.heartbeat(join("g"), "h".into(), t0, HB, &img).unwrap();
    let b = s.heartbeat(join("g"), "h".into(), t0, HB, &img).unwrap();
    // B leaves (epoch -1): A gets everything at the next epoch.
    s.heartbeat(beat("g", &b.member_id, -1), "h".into(), t0, HB, &img)
        .unwrap();
    let a = s
        .heartbeat(beat("g", &a.member_id, 1), "h".into(), t0, HB, &img)
        .unwrap();
    assert_eq!(partitions(&a), vec![0, 1]);
    // A stops heartbeating: after the session timeout it is gone and the group is empty.
    let timeout = Duration::from_secs(3);
    assert_eq!(s.expire(t0 + Duration::from_secs(2), timeout, &img), 0);
    assert_eq!(s.expire(t0 + Duration::from_secs(4), timeout, &img), 1);
    let d = s.describe("g", &img);
    assert_eq!(d.group_state, GroupState::Empty as i32);
}

#[test]
fn commits_are_fenced_by_member_epoch() {
    // Kafka's OffsetMetadataManager: STALE_MEMBER_EPOCH for an older epoch,
    // FENCED_MEMBER_EPOCH for a newer one, UNKNOWN_MEMBER_ID, and NON_EMPTY_GROUP for an
    // admin commit (no member) while members are active. Partitions are not checked
    // against the assignment: a member giving partitions up keeps its epoch until it has
    // released them, so it can commit what it read from them.
    let img = image(2);
    let mut s = ShardState::default();
    let now = Instant::now();
    let a = s
        .heartbeat(join_as("g", "a"), "h".into(), now, HB, &img)
        .unwrap();
    s.heartbeat(join_as("g", "b"), "h".into(), now, HB, &img)
        .unwrap();
    let r = s
        .heartbeat(
            beat_owning("g", &a.member_id, 1, &[0, 1]),
            "h".into(),
            now,
            HB,
            &img,
        )
        .unwrap();
    assert_eq!((r.member_epoch, partitions(&r)), (1, vec![0]), "revoking 1");
    let revoking = s
        .prepare_commit(&commit("g", &a.member_id, 1, 1, 7), &img)
        .unwrap();
    assert_eq!(revoking.results[0].error_code, 0, "{revoking:?}");
    let a = s
        .heartbeat(
            beat_owning("g", &a.member_id, 1, &[0]),
            "h".into(),
            now,
            HB,
            &img,
        )
        .unwrap();
    assert_eq!(a.member_epoch, 2);
    let mine = partitions(&a)[0];
    let refused: Vec<(&str, OffsetCommitRequest, ErrorCode)> = vec![
        (
            "older epoch",
            commit("g", &a.member_id, 1, mine, 5),
            ErrorCode::StaleMemberEpoch,
        ),
        (
            "newer epoch",
            commit("g", &a.member_id, 3, mine, 5),
            ErrorCode::FencedMemberEpoch,
        ),
        (
            "unknown member",
            commit("g", "x", 2, mine, 5),
            ErrorCode::UnknownMemberId,
        ),
        (
            "admin while active",
            commit("g", "", -1, mine, 5),
            ErrorCode::NonEmptyGroup,
        ),
    ];
    for (name, req, code) in refused {
        let e = s.prepare_commit(&req, &img).unwrap_err();
        assert_eq!(error_code(&e), code, "{name}");
    }
    let per_partition: Vec<(&str, OffsetCommitRequest, ErrorCode)> = vec![
        (
            "no such partition",
            commit("g", &a.member_id, 2, 9, 5),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "negative offset",
            commit("g", &a.member_id, 2, mine, -1),
            ErrorCode::InvalidRequest,
        ),
        (
            "owned",
            commit("g", &a.member_id, 2, mine, 5),
            ErrorCode::None,
        ),
    ];
    for (name, req, code) in per_partition {
        let plan = s.prepare_commit(&req, &img).unwrap();
        assert_eq!(plan.results[0].error_code, code as i32, "{name}");
        assert_eq!(
            plan.writes.len(),
            usize::from(code == ErrorCode::None),
            "{name}"
        );
    }
    // Preparing stores nothing: only a committed write does.
    assert_eq!(committed(&s, "g", mine), -1);
}

#[test]
fn the_later_record_wins_whatever_order_writes_complete_in() {
    // Two commits appended at offsets 10 and 11 of __consumer_offsets may report back in
    // either order; the log order decides, as a replay would.
    let img = image(1);
    let mut s = ShardState::default();
    let plan = |s: &ShardState, off| {
        s.prepare_commit(&commit("g", "", -1, 0, off), &img)
            .unwrap()
    };
    let first = plan(&s, 100);
    let second = plan(&s, 200);
    s.apply_commit("g", second.accepted, 11);
    s.apply_commit("g", first.accepted, 10);
    assert_eq!(committed(&s, "g", 0), 200);
}

#[test]
fn a_replay_applies_commits_and_tombstones_in_log_order() {
    use super::super::records::{offset_key, offset_value};
    use super::super::Committed;
    let c = |o| {
        offset_value(&Committed {
            offset: o,
            leader_epoch: 0,
            metadata: String::new(),
        })
    };
    let mut s = ShardState::default();
    s.replay(0, &offset_key("g", "t", 0), Some(&c(5)), Instant::now());
    s.replay(1, &offset_key("g", "t", 0), Some(&c(8)), Instant::now());
    s.replay(2, &offset_key("gone", "t", 0), Some(&c(3)), Instant::now());
    s.replay(3, &offset_key("gone", "t", 0), None, Instant::now());
    s.replay(4, b"\x00\x09not a key", Some(b"junk"), Instant::now());
    s.loaded();
    assert_eq!(committed(&s, "g", 0), 8);
    assert_eq!(
        s.len(),
        1,
        "a group whose offsets were all tombstoned is gone"
    );
}

#[test]
fn only_an_empty_group_is_deleted_and_only_its_older_offsets_go() {
    let img = image(1);
    let mut s = ShardState::default();
    let now = Instant::now();
    let a = s.heartbeat(join("g"), "h".into(), now, HB, &img).unwrap();
    let e = s.prepare_delete("g").unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::NonEmptyGroup);
    let e = s.prepare_delete("nope").unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::GroupIdNotFound);
    s.heartbeat(beat("g", &a.member_id, -1), "h".into(), now, HB, &img)
        .unwrap();
    let p = s.prepare_commit(&commit("g", "", -1, 0, 4), &img).unwrap();
    s.apply_commit("g", p.accepted, 10);
    assert_eq!(s.prepare_delete("g").unwrap().len(), 1);
    s.apply_delete("g", 11);
    assert!(s.is_empty());
}

/// KIP-496 OffsetDelete (Kafka's `OffsetMetadataManager.deleteOffsets`): a missing group is
/// GROUP_ID_NOT_FOUND; a partition whose topic an active member subscribes to keeps its offset
/// (GROUP_SUBSCRIBED_TO_TOPIC); otherwise its committed offset gets a tombstone, and only
/// offsets written before the tombstone go.
#[test]
fn offsets_are_deleted_only_for_topics_no_active_member_subscribes_to() {
    let img = image(2);
    let mut s = ShardState::default();
    let now = Instant::now();
    let a = s.heartbeat(join("g"), "h".into(), now, HB, &img).unwrap();
    let p = s
        .prepare_commit(&commit("g", &a.member_id, a.member_epoch, 0, 4), &img)
        .unwrap();
    s.apply_commit("g", p.accepted, 10);
    let e = s
        .prepare_offset_delete("nope", &[("t".into(), 0)])
        .unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::GroupIdNotFound);
    let wanted = [
        ("t".to_string(), 0),
        ("t".to_string(), 1),
        ("other".to_string(), 0),
    ];
    let (results, tombstones) = s.prepare_offset_delete("g", &wanted).unwrap();
    assert_eq!(
        results,
        vec![
            ("t".into(), 0, ErrorCode::GroupSubscribedToTopic),
            ("t".into(), 1, ErrorCode::GroupSubscribedToTopic),
            ("other".into(), 0, ErrorCode::None),
        ],
        "the member subscribes to t; nothing was committed for other-0"
    );
    assert!(tombstones.is_empty());
    // The member leaves: t-0's offset can go; t-1 had none.
    s.heartbeat(beat("g", &a.member_id, -1), "h".into(), now, HB, &img)
        .unwrap();
    let (results, tombstones) = s.prepare_offset_delete("g", &wanted[..2]).unwrap();
    assert!(results.iter().all(|(_, _, c)| *c == ErrorCode::None));
    assert_eq!(tombstones.len(), 1, "one tombstone, for t-0");
    assert!(tombstones[0].1.is_none());
    // A commit written after the tombstone (offset 12 > 11) survives it.
    let p = s.prepare_commit(&commit("g", "", -1, 1, 7), &img).unwrap();
    s.apply_commit("g", p.accepted, 12);
    s.apply_offset_delete("g", &[("t".into(), 0), ("t".into(), 1)], 11);
    assert_eq!(committed(&s, "g", 0), -1, "t-0 deleted");
    assert_eq!(
        committed(&s, "g", 1),
        7,
        "t-1 was committed after the tombstone"
    );
}

fn classic_settings() -> crate::group::classic::ClassicSettings {
    crate::group::classic::ClassicSettings {
        min_session_timeout: Duration::from_secs(6),
        max_session_timeout: Duration::from_secs(1800),
        initial_rebalance_delay: Duration::ZERO,
        max_size: 10,
    }
}

fn classic_join(member: &str) -> crate::group::classic::JoinRequest {
    crate::group::classic::JoinRequest {
        member_id: member.into(),
        instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), bytes::Bytes::new())],
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
    }
}

/// Kafka keeps a group on one protocol at a time (`GroupMetadataManager`: a classic join to
/// a consumer group with members, or the reverse, is INCONSISTENT_GROUP_PROTOCOL); both
/// kinds share the group's committed offsets. A classic member commits with its generation
/// (Kafka's `validateOffsetCommit`), with no ownership check; an administrator's commit
/// waits for the group to be empty of either kind.
#[test]
fn a_group_speaks_one_protocol_at_a_time_and_classic_commits_are_fenced_by_generation() {
    use crate::group::classic::{code, Answer, Completed};
    let img = image(2);
    let now = Instant::now();
    let mut s = ShardState::default();
    let (a, done) = s.classic_join("g", classic_join(""), now, &classic_settings());
    let Answer::Later(member) = a else {
        panic!("the first join waits for its rebalance")
    };
    assert!(
        matches!(&done[..], [Completed::Join { member: m, answer }] if *m == member && answer.generation_id == 1),
        "with no initial delay a lone member's join completes at once: {done:?}"
    );
    let e = s
        .heartbeat(join("g"), "h".into(), now, HB, &img)
        .unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::InconsistentGroupProtocol);
    let e = s
        .prepare_commit(&commit("g", &member, 0, 0, 5), &img)
        .unwrap_err();
    assert_eq!(
        error_code(&e),
        ErrorCode::IllegalGeneration,
        "generation 0 is old"
    );
    let e = s
        .prepare_commit(&commit("g", &member, 1, 0, 5), &img)
        .unwrap_err();
    assert_eq!(
        error_code(&e),
        ErrorCode::RebalanceInProgress,
        "between JoinGroup and SyncGroup"
    );
    let (r, _) = s.classic_sync(
        "g",
        crate::group::classic::SyncRequest {
            member_id: member.clone(),
            instance_id: None,
            generation_id: 1,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(member.clone(), bytes::Bytes::from_static(b"x"))],
        },
        now,
    );
    assert!(matches!(r, Answer::Now(ref s) if s.error.is_none()));
    let plan = s
        .prepare_commit(&commit("g", &member, 1, 1, 5), &img)
        .unwrap();
    assert_eq!(plan.results[0].error_code, 0, "any partition, no ownership");
    s.apply_commit("g", plan.accepted, 0);
    assert_eq!(committed(&s, "g", 1), 5);
    let e = s
        .prepare_commit(&commit("g", "", -1, 0, 1), &img)
        .unwrap_err();
    assert_eq!(
        error_code(&e),
        ErrorCode::UnknownMemberId,
        "Kafka's answer to a generation -1 commit while the classic group has members"
    );
    let (results, _) = s.classic_leave("g", &[(member.clone(), None)], now, &classic_settings());
    assert!(results[0].is_ok());
    // Without members, generation -1 commits whatever the member id (Kafka: an assign()
    // consumer with a group.id); a generation ≥ 0 names a member that is not there.
    assert!(s
        .prepare_commit(&commit("g", "someone", -1, 0, 7), &img)
        .is_ok());
    let e = s
        .prepare_commit(&commit("nobody-knows", "m", 3, 0, 7), &img)
        .unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::UnknownMemberId);
    // Empty now: a consumer-protocol member may join, and keeps the offsets.
    let r = s.heartbeat(join("g"), "h".into(), now, HB, &img).unwrap();
    assert_eq!(committed(&s, "g", 1), 5);
    let (a, _) = s.classic_join("g", classic_join(""), now, &classic_settings());
    let Answer::Now(j) = a else {
        panic!("refused at once")
    };
    assert_eq!(
        j.error.map(|e| e.code),
        Some(code::INCONSISTENT_GROUP_PROTOCOL),
        "member {} holds the group",
        r.member_id
    );
}

/// A classic group's membership survives a coordinator failover (Kafka's GroupMetadata
/// record): a group that reached Stable is written once per generation; a new shard that
/// replays the record has the same generation, leader, members and assignments, so the
/// members' heartbeats and commits go on without a rebalance; leaving writes the Empty
/// group, and deleting the group tombstones the record, which a replay honours. Nothing is
/// written mid-rebalance, and a group never rebalanced writes nothing.
#[test]
fn classic_memberships_are_written_when_stable_and_replayed_by_a_new_coordinator() {
    use crate::group::classic::{Answer, ClassicState};
    let img = image(2);
    let now = Instant::now();
    let mut s = ShardState::default();
    // Offsets alone (a gRPC or assign() consumer): no membership record.
    let plan = s
        .prepare_commit(&commit("plain", "", -1, 0, 3), &img)
        .unwrap();
    s.apply_commit("plain", plan.accepted, 0);
    let (Answer::Later(member), _) =
        s.classic_join("g", classic_join(""), now, &classic_settings())
    else {
        panic!("the first join waits for its rebalance")
    };
    assert!(
        s.take_membership_writes().is_empty(),
        "mid-rebalance: nothing to keep"
    );
    let sync = crate::group::classic::SyncRequest {
        member_id: member.clone(),
        instance_id: None,
        generation_id: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(member.clone(), bytes::Bytes::from_static(b"assigned"))],
    };
    let (r, _) = s.classic_sync("g", sync.clone(), now);
    assert!(matches!(r, Answer::Now(ref a) if a.error.is_none()));
    let writes = s.take_membership_writes();
    assert_eq!(writes.len(), 1, "Stable in generation 1: one record");
    // A repeated SyncGroup of the same generation writes nothing new.
    let _ = s.classic_sync("g", sync, now);
    assert!(s.take_membership_writes().is_empty());

    // A new coordinator replays the partition: the offsets and the membership record.
    let mut after = ShardState::default();
    let later = now + Duration::from_secs(1);
    let (k, v) = &writes[0];
    after.replay(7, k, v.as_deref(), later);
    after.loaded();
    assert_eq!(
        after.classic_heartbeat("g", &member, None, 1, later),
        Ok(())
    );
    let view = after.kafka_view("g", &img).expect("the group");
    assert_eq!(view.state, ClassicState::Stable.name());
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].member_id, member);
    assert_eq!(&view.members[0].assignment[..], b"assigned");
    let plan = after
        .prepare_commit(&commit("g", &member, 1, 1, 9), &img)
        .expect("a commit of the kept generation");
    assert_eq!(plan.results[0].error_code, 0);
    assert!(
        after.take_membership_writes().is_empty(),
        "the replayed state is what is kept"
    );

    // The member leaves: the Empty group is kept (a replay does not bring it back).
    let (results, _) =
        after.classic_leave("g", &[(member.clone(), None)], later, &classic_settings());
    assert!(results[0].is_ok());
    let empty = after.take_membership_writes();
    assert_eq!(empty.len(), 1);
    let mut third = ShardState::default();
    for (i, (k, v)) in writes.iter().chain(&empty).enumerate() {
        third.replay(i as i64, k, v.as_deref(), later);
    }
    assert!(
        third
            .classic_heartbeat("g", &member, None, 1, later)
            .is_err(),
        "the member that left is not restored"
    );
    // Deleting the group tombstones its membership record too.
    let tombstones = after.prepare_delete("g").unwrap();
    assert!(
        tombstones
            .iter()
            .any(|(k, v)| k == &empty[0].0 && v.is_none()),
        "{tombstones:?}"
    );
    third.replay(9, &empty[0].0, None, later);
    third.loaded();
    assert!(third.kafka_view("g", &img).is_none(), "deleted");
    // Garbage in a membership record is skipped, not fatal.
    third.replay(10, &empty[0].0, Some(b"\x01\xff\xff"), later);
}

/// Brings members a and b of consumer-protocol group `g` (4 partitions of `t`) to a stable
/// assignment at epoch 2: a owns 0, 1 and b owns 2, 3. `instance`: give them instance ids.
fn stable_pair(s: &mut ShardState, img: &MetadataImage, now: Instant, instance: bool) {
    let with = |mut r: ConsumerGroupHeartbeatRequest, i: &str| {
        if instance {
            r.instance_id = Some(i.into());
        }
        r
    };
    let mut hb = |req| s.heartbeat(req, "h".into(), now, HB, img).unwrap();
    hb(with(join_as("g", "a"), "ia"));
    hb(with(join_as("g", "b"), "ib"));
    hb(beat_owning("g", "a", 1, &[0, 1, 2, 3]));
    hb(beat_owning("g", "a", 1, &[0, 1]));
    let b = hb(beat_owning("g", "b", 2, &[]));
    assert_eq!((b.member_epoch, partitions(&b)), (2, vec![2, 3]));
    let a = hb(beat_owning("g", "a", 2, &[0, 1]));
    assert_eq!((a.member_epoch, partitions(&a)), (2, vec![0, 1]));
}

#[test]
fn consumer_group_members_keep_their_epochs_and_partitions_across_a_coordinator_failover() {
    // Kafka keeps a KIP-848 group's epoch, members and assignments in __consumer_offsets,
    // so after the offsets partition moves the members carry on: same member ids, same
    // epochs, same partitions, no rejoin. Here: the records the first coordinator wrote,
    // replayed by a new one.
    let img = image(4);
    let now = Instant::now();
    let mut s = ShardState::default();
    stable_pair(&mut s, &img, now, false);
    let writes = s.take_membership_writes();
    assert!(!writes.is_empty(), "membership changes are written");
    assert!(
        s.take_membership_writes().is_empty(),
        "nothing new to write"
    );
    let a = s
        .heartbeat(beat_owning("g", "a", 2, &[0, 1]), "h".into(), now, HB, &img)
        .unwrap();
    assert_eq!(a.member_epoch, 2);
    assert!(
        s.take_membership_writes().is_empty(),
        "a heartbeat that changes nothing writes nothing"
    );

    let later = now + Duration::from_secs(1);
    let replay = |writes: &[(bytes::Bytes, Option<bytes::Bytes>)]| {
        let mut after = ShardState::default();
        for (i, (k, v)) in writes.iter().enumerate() {
            after.replay(i as i64, k, v.as_deref(), later);
        }
        after.loaded();
        after
    };
    let mut after = replay(&writes);
    for (member, owned) in [("a", vec![0, 1]), ("b", vec![2, 3])] {
        let r = after
            .heartbeat(
                beat_owning("g", member, 2, &owned),
                "h".into(),
                later,
                HB,
                &img,
            )
            .unwrap_or_else(|e| panic!("{member} after the failover: {e:?}"));
        assert_eq!((r.member_epoch, partitions(&r)), (2, owned), "{member}");
    }
    let d = after.describe("g", &img);
    assert_eq!(d.group_state, GroupState::Stable as i32);
    assert_eq!(d.group_epoch, 2);
    // Sessions run from the load: nobody expires at once.
    assert_eq!(after.expire(later, Duration::from_secs(10), &img), 0);
    // Without the records, the new coordinator did not know them.
    let mut blank = ShardState::default();
    let e = blank
        .heartbeat(
            beat_owning("g", "a", 2, &[0, 1]),
            "h".into(),
            later,
            HB,
            &img,
        )
        .unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::UnknownMemberId);

    // Both leave: the empty group keeps its epoch; deleting it tombstones the record, and
    // a replay of everything brings back nothing.
    for m in ["a", "b"] {
        after
            .heartbeat(beat("g", m, -1), "h".into(), later, HB, &img)
            .unwrap();
    }
    let mut all = writes.clone();
    all.extend(after.take_membership_writes());
    let tombstones = after.prepare_delete("g").unwrap();
    assert!(
        tombstones
            .iter()
            .any(|(k, v)| v.is_none()
                && super::super::records::parse_consumer_group_key(k).is_some()),
        "DeleteGroups tombstones the consumer group record: {tombstones:?}"
    );
    all.extend(tombstones);
    assert!(replay(&all).is_empty(), "nothing left after the tombstone");
}

#[test]
fn a_static_member_s_new_process_takes_its_place_without_a_rebalance() {
    // KIP-848 static membership (Kafka's `consumerGroupStaticMemberGroupLeave` and the
    // static-member replacement on join): a member with an instance id that leaves with
    // epoch -2 keeps its partitions and epoch for its session timeout; a new process with
    // that instance id (a new member id, epoch 0) gets them back at once, the group epoch
    // does not move and nobody else is disturbed. While the instance id is held by an
    // active member, another process claiming it is refused (UNRELEASED_INSTANCE_ID).
    let img = image(4);
    let now = Instant::now();
    let mut s = ShardState::default();
    stable_pair(&mut s, &img, now, true);
    let static_join = |member: &str| ConsumerGroupHeartbeatRequest {
        instance_id: Some("ib".into()),
        ..join_as("g", member)
    };
    let e = s
        .heartbeat(static_join("b-dup"), "h".into(), now, HB, &img)
        .unwrap_err();
    assert_eq!(error_code(&e), ErrorCode::UnreleasedInstanceId, "{e:?}");

    let leave = ConsumerGroupHeartbeatRequest {
        instance_id: Some("ib".into()),
        ..beat("g", "b", -2)
    };
    let r = s.heartbeat(leave, "h".into(), now, HB, &img).unwrap();
    assert_eq!(r.member_epoch, -2);
    assert_eq!(
        s.describe("g", &img).group_epoch,
        2,
        "no rebalance on a static leave"
    );
    let a = s
        .heartbeat(beat_owning("g", "a", 2, &[0, 1]), "h".into(), now, HB, &img)
        .unwrap();
    assert_eq!(
        (a.member_epoch, partitions(&a)),
        (2, vec![0, 1]),
        "a keeps its partitions only"
    );
    let e = s
        .heartbeat(beat_owning("g", "b", 2, &[]), "h".into(), now, HB, &img)
        .unwrap_err();
    assert_eq!(
        error_code(&e),
        ErrorCode::FencedMemberEpoch,
        "the old process left"
    );

    // The membership records carry the left member: a new coordinator keeps its place too.
    let writes = s.take_membership_writes();
    let mut s2 = ShardState::default();
    for (i, (k, v)) in writes.iter().enumerate() {
        s2.replay(i as i64, k, v.as_deref(), now);
    }
    s2.loaded();
    for s in [&mut s, &mut s2] {
        let b2 = s
            .heartbeat(static_join("b2"), "h".into(), now, HB, &img)
            .unwrap();
        assert_eq!(
            (b2.member_id.as_str(), b2.member_epoch, partitions(&b2)),
            ("b2", 2, vec![2, 3]),
            "the new process has the old one's epoch and partitions"
        );
        let d = s.describe("g", &img);
        assert_eq!(
            (d.group_epoch, d.group_state),
            (2, GroupState::Stable as i32)
        );
        let ids: Vec<&str> = d.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b2"]);
    }

    // A static member that never comes back is removed at its session timeout, and its
    // partitions are reassigned then.
    let r = s
        .heartbeat(
            ConsumerGroupHeartbeatRequest {
                instance_id: Some("ib".into()),
                ..beat("g", "b2", -2)
            },
            "h".into(),
            now,
            HB,
            &img,
        )
        .unwrap();
    assert_eq!(r.member_epoch, -2);
    let later = now + Duration::from_secs(11);
    s.heartbeat(
        beat_owning("g", "a", 2, &[0, 1]),
        "h".into(),
        later,
        HB,
        &img,
    )
    .unwrap();
    assert_eq!(s.expire(later, Duration::from_secs(10), &img), 1);
    let a = s
        .heartbeat(
            beat_owning("g", "a", 2, &[0, 1]),
            "h".into(),
            later,
            HB,
            &img,
        )
        .unwrap();
    assert_eq!((a.member_epoch, partitions(&a)), (3, vec![0, 1, 2, 3]));
}

#[test]
fn a_consumer_group_dropped_as_vacant_gets_its_membership_record_tombstoned() {
    // A consumer-protocol group whose members all left and that has no offsets is forgotten
    // by the coordinator; its kept record must go too (a tombstone), or every group id ever
    // seen would stay in __consumer_offsets and in memory.
    let img = image(2);
    let now = Instant::now();
    let mut s = ShardState::default();
    let a = s
        .heartbeat(join_as("g", "a"), "h".into(), now, HB, &img)
        .unwrap();
    assert_eq!(a.member_epoch, 1);
    let mut log = s.take_membership_writes();
    s.heartbeat(beat("g", "a", -1), "h".into(), now, HB, &img)
        .unwrap();
    log.extend(s.take_membership_writes());
    let _ = s.classic_tick(now, &classic_settings());
    let last = s.take_membership_writes();
    assert!(
        last.iter()
            .any(|(k, v)| v.is_none()
                && super::super::records::parse_consumer_group_key(k).is_some()),
        "a tombstone for the forgotten group: {last:?}"
    );
    log.extend(last);
    let mut after = ShardState::default();
    for (i, (k, v)) in log.iter().enumerate() {
        after.replay(i as i64, k, v.as_deref(), now);
    }
    after.loaded();
    assert!(after.is_empty());
    assert!(after.take_membership_writes().is_empty());
}

#[test]
fn an_empty_groups_offsets_expire_after_the_retention_and_a_recommit_renews_them() {
    use super::super::records::{offset_key, offset_value};
    use super::super::Committed;
    let c = |o| {
        offset_value(&Committed {
            offset: o,
            leader_epoch: 0,
            metadata: String::new(),
        })
    };
    let mut s = ShardState::default();
    let t0 = Instant::now();
    s.replay(0, &offset_key("g", "t", 0), Some(&c(5)), t0);
    s.replay(1, &offset_key("g", "t", 1), Some(&c(5)), t0);
    s.replay(
        2,
        &offset_key("h", "t", 0),
        Some(&c(5)),
        t0 + Duration::from_secs(50),
    );
    s.loaded();
    let retention = Duration::from_secs(60);
    assert_eq!(
        s.expired_offsets(t0 + Duration::from_secs(59), retention),
        vec![]
    );
    let at_60 = s.expired_offsets(t0 + Duration::from_secs(60), retention);
    assert_eq!(
        at_60,
        vec![(
            "g".to_string(),
            vec![("t".to_string(), 0), ("t".to_string(), 1)]
        )],
        "h was committed later"
    );
    // The tombstones committed: g's offsets are gone (and so is g).
    s.apply_offset_delete("g", &at_60[0].1, 3);
    assert_eq!(committed(&s, "g", 0), -1);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s.expired_offsets(t0 + Duration::from_secs(110), retention),
        vec![("h".to_string(), vec![("t".to_string(), 0)])]
    );
}
