//! The classic group protocol, rule by rule (Kafka's `ClassicGroup`,
//! `GroupMetadataManager.classicGroupJoin`, KIP-394, KIP-62).

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn settings() -> ClassicSettings {
    ClassicSettings {
        min_session_timeout: Duration::from_secs(6),
        max_session_timeout: Duration::from_secs(1800),
        initial_rebalance_delay: Duration::from_secs(3),
        max_size: 100,
    }
}

fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member.to_string(),
        instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("{member}:{p}"))))
            .collect(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

fn code_of(a: &Answer<JoinResponse>) -> Option<i16> {
    match a {
        Answer::Now(r) => r.error.as_ref().map(|e| e.code),
        Answer::Later(_) => None,
    }
}

/// KIP-394: an unknown member first gets MEMBER_ID_REQUIRED and its id, then joins with it.
fn member_id(g: &mut ClassicGroup, now: Instant) -> String {
    let (a, done) = g.join(join_req("", &["range"]), now, &settings());
    assert!(done.is_empty());
    match a {
        Answer::Now(r) => {
            assert_eq!(r.error.map(|e| e.code), Some(code::MEMBER_ID_REQUIRED));
            assert!(r.member_id.starts_with("c-"), "{}", r.member_id);
            r.member_id
        }
        Answer::Later(_) => panic!("an unknown member is answered at once"),
    }
}

fn joins(done: &[Completed]) -> BTreeMap<String, JoinResponse> {
    done.iter()
        .filter_map(|c| match c {
            Completed::Join { member, answer } => Some((member.clone(), answer.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(done: &[Completed]) -> BTreeMap<String, SyncResponse> {
    done.iter()
        .filter_map(|c| match c {
            Completed::Sync { member, answer } => Some((member.clone(), answer.clone())),
            _ => None,
        })
        .collect()
}

/// A stable group of members `a` and `b` (a leads) at generation 1, each assigned its name.
fn stable_pair(t0: Instant) -> (ClassicGroup, String, String) {
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    let b = member_id(&mut g, t0);
    let (ra, _) = g.join(join_req(&a, &["range"]), t0, &settings());
    let (rb, _) = g.join(join_req(&b, &["range"]), t0 + SECOND, &settings());
    assert_eq!(
        (ra, rb),
        (Answer::Later(a.clone()), Answer::Later(b.clone()))
    );
    let done = g.tick(t0 + 4 * SECOND, &settings());
    assert_eq!(joins(&done).len(), 2);
    let (fb, _) = g.sync(sync_req(&b, 1, vec![]), t0 + 4 * SECOND);
    assert_eq!(fb, Answer::Later(b.clone()));
    let (fa, done) = g.sync(
        sync_req(
            &a,
            1,
            vec![(a.clone(), Bytes::from("A")), (b.clone(), Bytes::from("B"))],
        ),
        t0 + 4 * SECOND,
    );
    assert!(matches!(fa, Answer::Now(SyncResponse { error: None, .. })));
    assert_eq!(syncs(&done)[&b].assignment, Bytes::from("B"));
    assert_eq!(g.state(), ClassicState::Stable);
    (g, a, b)
}

fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        member_id: member.to_string(),
        instance_id: None,
        generation_id: generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments,
    }
}

/// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group waits
/// `group.initial.rebalance.delay.ms` (extended by each new member), then answers every
/// member at generation 1; the first to join leads and alone gets the member list.
#[test]
fn the_first_rebalance_waits_the_initial_delay_then_answers_everyone() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    let (r, done) = g.join(join_req(&a, &["range"]), t0, &settings());
    assert!(matches!(r, Answer::Later(_)));
    assert!(done.is_empty());
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    let b = member_id(&mut g, t0 + 2 * SECOND);
    let (r, _) = g.join(join_req(&b, &["range"]), t0 + 2 * SECOND, &settings());
    assert!(matches!(r, Answer::Later(_)));
    assert!(
        g.tick(t0 + 4 * SECOND, &settings()).is_empty(),
        "b's join extended the delay to t0+5s"
    );
    let done = joins(&g.tick(t0 + 5 * SECOND, &settings()));
    assert_eq!(done.len(), 2);
    let (ja, jb) = (&done[&a], &done[&b]);
    assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
    assert_eq!(
        (ja.leader.as_str(), jb.leader.as_str()),
        (a.as_str(), a.as_str())
    );
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    assert_eq!(
        ja.members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect::<Vec<_>>(),
        vec![
            (a.clone(), Bytes::from(format!("{a}:range"))),
            (b.clone(), Bytes::from(format!("{b}:range")))
        ],
        "the leader sees every member's metadata, in join order"
    );
    assert!(jb.members.is_empty(), "followers do not");
    assert_eq!(g.state(), ClassicState::CompletingRebalance);
}

/// SyncGroup: followers wait for the leader; the leader's assignment reaches everyone.
#[test]
fn followers_sync_when_the_leader_sends_the_assignment() {
    let (g, a, b) = stable_pair(Instant::now());
    let described: BTreeMap<String, Bytes> = g
        .describe()
        .into_iter()
        .map(|m| (m.member_id, m.assignment))
        .collect();
    assert_eq!(described[&a], Bytes::from("A"));
    assert_eq!(described[&b], Bytes::from("B"));
}

/// Heartbeat answers by state and fences unknown members and old generations.
#[test]
fn heartbeats_fence_unknown_members_and_old_generations() {
    let t0 = Instant::now();
    let (mut g, a, _) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    assert_eq!(g.heartbeat(&a, None, 1, t), Ok(()));
    assert_eq!(
        g.heartbeat(&a, None, 0, t).unwrap_err().code,
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.heartbeat("stranger", None, 1, t).unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
}

/// A new member joining a stable group starts a rebalance: the others hear
/// REBALANCE_IN_PROGRESS on their heartbeat, rejoin, and the rebalance completes as soon as
/// all have (no initial delay: the group was not empty), at the next generation.
#[test]
fn a_new_member_rebalances_a_stable_group_once_all_rejoin() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    let c = member_id(&mut g, t);
    let (r, done) = g.join(join_req(&c, &["range"]), t, &settings());
    assert!(matches!(r, Answer::Later(_)));
    assert!(done.is_empty());
    assert_eq!(
        g.heartbeat(&a, None, 1, t).unwrap_err().code,
        code::REBALANCE_IN_PROGRESS
    );
    let (r, done) = g.join(join_req(&a, &["range"]), t, &settings());
    assert!(matches!(r, Answer::Later(_)));
    assert!(done.is_empty(), "b has not rejoined yet");
    let (r, done) = g.join(join_req(&b, &["range"]), t, &settings());
    assert!(matches!(r, Answer::Later(_)));
    let done = joins(&done);
    assert_eq!(done.len(), 3);
    assert!(done.values().all(|j| j.generation_id == 2));
    assert_eq!(done[&a].leader, a, "the leader stays the leader");
}

/// A member that does not rejoin within the rebalance timeout is dropped from the new
/// generation (Kafka's `onCompleteJoin` removes members that did not rejoin).
#[test]
fn a_member_that_does_not_rejoin_in_time_is_left_out() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    let (_, done) = g.join(join_req(&a, &["roundrobin", "range"]), t, &settings());
    assert!(done.is_empty());
    // b keeps heartbeating but never rejoins.
    for s in [9, 18, 27] {
        assert_eq!(
            g.heartbeat(&b, None, 1, t + s * SECOND).unwrap_err().code,
            code::REBALANCE_IN_PROGRESS
        );
    }
    assert!(g.tick(t + 29 * SECOND, &settings()).is_empty());
    let done = joins(&g.tick(t + 30 * SECOND, &settings()));
    assert_eq!(done.keys().collect::<Vec<_>>(), vec![&a]);
    assert_eq!(done[&a].generation_id, 2);
    assert_eq!(
        done[&a].protocol_name.as_deref(),
        Some("roundrobin"),
        "a alone decides the protocol now"
    );
    assert!(!g.has_member(&b));
}

/// Session expiry: a member silent for its session timeout is removed and the group
/// rebalances; a member waiting for its join is never expired.
#[test]
fn a_silent_member_expires_and_the_group_rebalances() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 4 * SECOND;
    assert_eq!(g.heartbeat(&a, None, 1, t + 9 * SECOND), Ok(()));
    assert!(g.tick(t + 9 * SECOND, &settings()).is_empty());
    g.tick(t + 10 * SECOND, &settings());
    assert!(!g.has_member(&b), "b was silent for its 10 s session");
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    let (_, done) = g.join(join_req(&a, &["range"]), t + 11 * SECOND, &settings());
    assert_eq!(joins(&done)[&a].generation_id, 2);
    // Waiting for a join (the rebalance timeout is 30 s) outlives the session timeout.
    let c = member_id(&mut g, t + 12 * SECOND);
    g.join(join_req(&c, &["range"]), t + 12 * SECOND, &settings());
    let (_, _) = g.join(join_req(&a, &["range"]), t + 12 * SECOND, &settings());
    assert!(g.has_member(&a));
}

/// LeaveGroup: the others rebalance; the last one out leaves the group empty.
#[test]
fn leaving_rebalances_and_the_last_member_empties_the_group() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    assert!(g.leave(&b, t, &settings()).unwrap().is_empty());
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    let (_, done) = g.join(join_req(&a, &["range"]), t, &settings());
    assert_eq!(joins(&done)[&a].generation_id, 2);
    assert_eq!(
        g.leave("stranger", t, &settings()).unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
    g.leave(&a, t, &settings()).unwrap();
    let _ = g.tick(t, &settings());
    assert_eq!(g.state(), ClassicState::Empty);
    assert!(g.is_empty());
}

/// A member leaving while others wait for the join completes it for them.
#[test]
fn a_leave_during_the_join_phase_completes_it_for_the_rest() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    let (_, done) = g.join(join_req(&a, &["range"]), t, &settings());
    assert!(done.is_empty());
    let done = joins(&g.leave(&b, t, &settings()).unwrap());
    assert_eq!(done[&a].generation_id, 2);
}

/// Kafka's `selectProtocol` and `supportsProtocols`: the protocol every member supports that
/// most members prefer; a member with none in common, or another protocol type, is refused.
#[test]
fn protocols_are_chosen_by_vote_and_an_incompatible_member_is_refused() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range", "roundrobin"]), t0, &settings());
    let b = member_id(&mut g, t0);
    g.join(join_req(&b, &["roundrobin", "range"]), t0, &settings());
    let c = member_id(&mut g, t0);
    g.join(join_req(&c, &["roundrobin"]), t0, &settings());
    let done = joins(&g.tick(t0 + 4 * SECOND, &settings()));
    assert_eq!(done[&a].protocol_name.as_deref(), Some("roundrobin"));
    let (r, _) = g.join(join_req("", &["sticky"]), t0, &settings());
    assert_eq!(code_of(&r), Some(code::INCONSISTENT_GROUP_PROTOCOL));
    let mut other = join_req("", &["roundrobin"]);
    other.protocol_type = "connect".into();
    let (r, _) = g.join(other, t0, &settings());
    assert_eq!(code_of(&r), Some(code::INCONSISTENT_GROUP_PROTOCOL));
    let (r, _) = g.join(join_req("", &[]), t0, &settings());
    assert_eq!(code_of(&r), Some(code::INCONSISTENT_GROUP_PROTOCOL));
}

/// `group.min.session.timeout.ms` / `group.max.session.timeout.ms` bound a member's session.
#[test]
fn a_session_timeout_out_of_bounds_is_refused() {
    let mut g = ClassicGroup::default();
    for ms in [5_999, 1_800_001] {
        let mut r = join_req("", &["range"]);
        r.session_timeout = Duration::from_millis(ms);
        let (a, _) = g.join(r, Instant::now(), &settings());
        assert_eq!(code_of(&a), Some(code::INVALID_SESSION_TIMEOUT), "{ms}");
    }
    assert!(g.is_empty());
}

/// A rebalance that starts while followers wait in SyncGroup tells them to rejoin.
#[test]
fn a_rebalance_during_the_sync_phase_answers_parked_syncs() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range"]), t0, &settings());
    let b = member_id(&mut g, t0);
    g.join(join_req(&b, &["range"]), t0, &settings());
    g.tick(t0 + 4 * SECOND, &settings());
    let (r, _) = g.sync(sync_req(&b, 1, vec![]), t0 + 4 * SECOND);
    assert!(matches!(r, Answer::Later(_)));
    assert_eq!(
        g.check_commit(&b, None, 1).unwrap_err().code,
        code::REBALANCE_IN_PROGRESS,
        "no commits between join and sync"
    );
    let (_, done) = g.join(
        join_req(&a, &["range", "roundrobin"]),
        t0 + 5 * SECOND,
        &settings(),
    );
    let s = syncs(&done);
    assert_eq!(
        s[&b].error.as_ref().map(|e| e.code),
        Some(code::REBALANCE_IN_PROGRESS)
    );
}

/// OffsetCommit of a classic group: a member of the current generation only.
#[test]
fn commits_are_fenced_by_generation() {
    let (g, a, _) = stable_pair(Instant::now());
    assert_eq!(g.check_commit(&a, None, 1), Ok(()));
    assert_eq!(
        g.check_commit(&a, None, 0).unwrap_err().code,
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.check_commit("zombie", None, 1).unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
}

/// A member id handed out with MEMBER_ID_REQUIRED lapses after the session timeout.
#[test]
fn a_handed_out_member_id_lapses() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    assert!(!g.is_empty());
    g.tick(t0 + 10 * SECOND, &settings());
    assert!(g.is_empty());
    let (r, _) = g.join(join_req(&a, &["range"]), t0 + 10 * SECOND, &settings());
    assert_eq!(code_of(&r), Some(code::UNKNOWN_MEMBER_ID));
}

/// Old clients (JoinGroup v0–v3) join in one step.
#[test]
fn an_old_client_joins_without_the_member_id_round_trip() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let mut r = join_req("", &["range"]);
    r.require_known_member_id = false;
    let (a, _) = g.join(r, t0, &settings());
    assert!(matches!(a, Answer::Later(_)));
    let done = joins(&g.tick(t0 + 3 * SECOND, &settings()));
    assert_eq!(done.len(), 1);
    let j = done.values().next().unwrap();
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
}

/// A repeated join of a follower in a stable group, same protocols, is answered at once
/// with the current generation (no rebalance).
#[test]
fn a_follower_rejoining_unchanged_gets_the_current_generation() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let (r, done) = g.join(join_req(&b, &["range"]), t0 + 5 * SECOND, &settings());
    assert!(done.is_empty());
    match r {
        Answer::Now(j) => {
            assert_eq!((j.generation_id, j.leader.as_str()), (1, a.as_str()));
            assert!(j.error.is_none());
        }
        Answer::Later(_) => panic!("no rebalance"),
    }
    assert_eq!(g.state(), ClassicState::Stable);
}

/// A follower's repeated SyncGroup (the first timed out at the client) answers the first
/// at once and waits in its place (Kafka replaces the awaiting-sync future); the leader's
/// assignment then reaches the new one.
#[test]
fn a_repeated_sync_answers_the_earlier_one_and_waits_in_its_place() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range"]), t0, &settings());
    let b = member_id(&mut g, t0);
    g.join(join_req(&b, &["range"]), t0, &settings());
    g.tick(t0 + 4 * SECOND, &settings());
    let (r, done) = g.sync(sync_req(&b, 1, vec![]), t0 + 4 * SECOND);
    assert!(matches!(r, Answer::Later(_)) && done.is_empty());
    let (r, done) = g.sync(sync_req(&b, 1, vec![]), t0 + 5 * SECOND);
    assert!(matches!(r, Answer::Later(_)));
    assert_eq!(
        syncs(&done)[&b].error.as_ref().map(|e| e.code),
        Some(code::REBALANCE_IN_PROGRESS),
        "the earlier SyncGroup is answered"
    );
    let (_, done) = g.sync(
        sync_req(&a, 1, vec![(b.clone(), Bytes::from("B"))]),
        t0 + 5 * SECOND,
    );
    let s = syncs(&done);
    assert_eq!(s.len(), 1, "one answer for b: {done:?}");
    assert_eq!(s[&b].assignment, Bytes::from("B"));
}

/// Kafka's `hasSatisfiedHeartbeat`: a member waiting in SyncGroup is alive (librdkafka sends
/// no heartbeats then); but a rebalance timeout after the join phase, members that never
/// sent SyncGroup (here the leader) are removed and the group rebalances (Kafka's
/// pending-sync timeout), so the parked followers are not left waiting forever.
#[test]
fn members_waiting_to_sync_stay_and_a_leader_that_never_syncs_is_removed() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range"]), t0, &settings());
    let b = member_id(&mut g, t0);
    g.join(join_req(&b, &["range"]), t0, &settings());
    let t1 = t0 + 4 * SECOND;
    g.tick(t1, &settings());
    let (r, _) = g.sync(sync_req(&b, 1, vec![]), t1);
    assert!(matches!(r, Answer::Later(_)));
    // a heartbeats, b waits silently past its 10 s session.
    for s in [8, 16, 24] {
        assert_eq!(g.heartbeat(&a, None, 1, t1 + s * SECOND), Ok(()));
    }
    assert!(g.tick(t1 + 29 * SECOND, &settings()).is_empty());
    assert!(g.has_member(&b), "waiting in SyncGroup is not silence");
    let done = g.tick(t1 + 30 * SECOND, &settings());
    assert!(!g.has_member(&a), "the leader never sent SyncGroup");
    assert_eq!(
        syncs(&done)[&b].error.as_ref().map(|e| e.code),
        Some(code::REBALANCE_IN_PROGRESS),
        "b is told to rejoin"
    );
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
}

/// Kafka's InitialDelayedJoin completes when the delay ends, even if a member that was
/// handed an id never came back with it.
#[test]
fn the_initial_delay_ends_the_first_rebalance_despite_an_unused_member_id() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range"]), t0, &settings());
    let _never_back = member_id(&mut g, t0);
    let done = joins(&g.tick(t0 + 3 * SECOND, &settings()));
    assert_eq!(done.keys().collect::<Vec<_>>(), vec![&a]);
}

/// A LeaveGroup naming several members removes them all, then rebalances once.
#[test]
fn several_members_leave_in_one_rebalance() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_pair(t0);
    let t = t0 + 5 * SECOND;
    let c = member_id(&mut g, t);
    g.join(join_req(&c, &["range"]), t, &settings());
    let (_, done) = g.join(join_req(&a, &["range"]), t, &settings());
    assert!(done.is_empty(), "b has not rejoined");
    let (results, done) = g.leave_many(
        &[(b.clone(), None), ("stranger".into(), None)],
        t,
        &settings(),
    );
    assert_eq!(results[0], Ok(()));
    assert_eq!(
        results[1].as_ref().unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
    let j = joins(&done);
    assert_eq!(j.len(), 2, "a and c complete generation 2");
    assert!(j.values().all(|r| r.generation_id == 2));
}

/// Kafka checks the protocol type whenever the group has members: its only member cannot
/// rejoin as another type.
#[test]
fn a_sole_member_cannot_change_the_protocol_type() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let a = member_id(&mut g, t0);
    g.join(join_req(&a, &["range"]), t0, &settings());
    let mut r = join_req(&a, &["range"]);
    r.protocol_type = "connect".into();
    let (ans, _) = g.join(r, t0 + SECOND, &settings());
    assert_eq!(code_of(&ans), Some(code::INCONSISTENT_GROUP_PROTOCOL));
}

/// Classic OffsetCommit (Kafka's `validateOffsetCommit`): generation -1 only while the
/// group has no members; UNKNOWN_MEMBER_ID otherwise.
#[test]
fn a_generation_minus_one_commit_needs_an_empty_group() {
    let (g, _, _) = stable_pair(Instant::now());
    assert_eq!(
        g.check_commit("", None, -1).unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(ClassicGroup::default().check_commit("", None, -1), Ok(()));
    assert_eq!(
        ClassicGroup::default().check_commit("anyone", None, -1),
        Ok(())
    );
}

fn static_join(member: &str, instance: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        instance_id: Some(instance.to_string()),
        ..join_req(member, protocols)
    }
}

/// A stable group of static members `ia` (leads) and `ib` at generation 1, assigned "A"
/// and "B"; static members join without the MEMBER_ID_REQUIRED round trip.
fn stable_static_pair(t0: Instant) -> (ClassicGroup, String, String) {
    let mut g = ClassicGroup::default();
    let later = |a: Answer<JoinResponse>| match a {
        Answer::Later(id) => id,
        Answer::Now(r) => panic!("a new static member waits for the rebalance: {r:?}"),
    };
    let a = later(g.join(static_join("", "ia", &["range"]), t0, &settings()).0);
    let b = later(g.join(static_join("", "ib", &["range"]), t0, &settings()).0);
    assert_eq!(joins(&g.tick(t0 + 4 * SECOND, &settings())).len(), 2);
    let sync = |m: &str, assignments| SyncRequest {
        instance_id: Some(if m == a { "ia" } else { "ib" }.into()),
        ..sync_req(m, 1, assignments)
    };
    g.sync(sync(&b, vec![]), t0 + 4 * SECOND);
    g.sync(
        sync(
            &a,
            vec![(a.clone(), Bytes::from("A")), (b.clone(), Bytes::from("B"))],
        ),
        t0 + 4 * SECOND,
    );
    assert_eq!(g.state(), ClassicState::Stable);
    (g, a, b)
}

/// KIP-345: a static member's restarted process (same `group.instance.id`, empty member id)
/// takes its old place without a rebalance: a new member id at the same generation, the
/// old assignment from SyncGroup, the other member untouched; the old process's member id
/// is fenced (FENCED_INSTANCE_ID) on heartbeat, sync and join.
#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_static_pair(t0);
    let t = t0 + 6 * SECOND;
    let (r, done) = g.join(static_join("", "ib", &["range"]), t, &settings());
    assert!(done.is_empty());
    let Answer::Now(r) = r else {
        panic!("answered at once")
    };
    assert_eq!(r.error, None);
    assert_eq!(r.generation_id, 1, "no new generation");
    assert_ne!(r.member_id, b, "a new member id");
    assert_eq!(r.leader, a);
    assert!(!r.skip_assignment, "a follower has nothing to skip");
    assert_eq!(g.state(), ClassicState::Stable);
    let b2 = r.member_id;
    let (s, _) = g.sync(
        SyncRequest {
            instance_id: Some("ib".into()),
            ..sync_req(&b2, 1, vec![])
        },
        t,
    );
    assert!(
        matches!(&s, Answer::Now(SyncResponse { error: None, assignment, .. }) if assignment == "B"),
        "{s:?}"
    );
    assert_eq!(
        g.heartbeat(&a, Some("ia"), 1, t),
        Ok(()),
        "a is undisturbed"
    );
    assert_eq!(g.heartbeat(&b2, Some("ib"), 1, t), Ok(()));
    let fenced = code::FENCED_INSTANCE_ID;
    assert_eq!(g.heartbeat(&b, Some("ib"), 1, t).unwrap_err().code, fenced);
    assert_eq!(
        g.check_commit(&b, Some("ib"), 1).unwrap_err().code,
        fenced,
        "the old process's commits are fenced too"
    );
    assert_eq!(g.check_commit(&b2, Some("ib"), 1), Ok(()));
    let (s, _) = g.sync(
        SyncRequest {
            instance_id: Some("ib".into()),
            ..sync_req(&b, 1, vec![])
        },
        t,
    );
    assert!(
        matches!(&s, Answer::Now(SyncResponse { error: Some(e), .. }) if e.code == fenced),
        "{s:?}"
    );
    assert_eq!(
        code_of(&g.join(static_join(&b, "ib", &["range"]), t, &settings()).0),
        Some(fenced)
    );
    assert_eq!(g.describe().len(), 2);
}

/// KIP-814: the static leader's restarted process is told to skip the assignment (the group
/// stays stable), with its old member id to name as leader to clients before v9. New
/// subscription bytes that select the same protocol do not rebalance either (the Java
/// client's bytes change every generation).
#[test]
fn a_static_leader_skips_the_assignment_and_new_metadata_alone_does_not_rebalance() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_static_pair(t0);
    let t = t0 + 6 * SECOND;
    let (r, _) = g.join(static_join("", "ia", &["range"]), t, &settings());
    let Answer::Now(r) = r else {
        panic!("answered at once")
    };
    assert!(r.skip_assignment);
    assert_eq!(r.replaced_leader.as_deref(), Some(a.as_str()));
    assert_eq!(
        r.leader, r.member_id,
        "leadership moves to the new member id"
    );
    assert_eq!(r.members.len(), 2);
    assert_eq!(g.state(), ClassicState::Stable);
    assert_eq!(
        g.heartbeat(&a, Some("ia"), 1, t).unwrap_err().code,
        code::FENCED_INSTANCE_ID
    );

    let mut req = static_join("", "ib", &["range"]);
    req.protocols = vec![("range".into(), Bytes::from("owned partitions changed"))];
    let (r, done) = g.join(req, t, &settings());
    assert!(done.is_empty());
    let Answer::Now(r) = r else {
        panic!("the same protocol is selected: no rebalance")
    };
    assert_eq!((r.generation_id, r.error), (1, None));
    assert_ne!(r.member_id, b);
    assert!(!r.skip_assignment, "a follower");
    assert_eq!(g.state(), ClassicState::Stable);
}

/// Kafka's rule for a static member replaced while the group completes a rebalance: the
/// leader may be assigning partitions to the old member id, so the group rebalances again
/// (and the new member gets an assignment of its own). The old process's parked SyncGroup
/// is fenced.
#[test]
fn a_static_member_replaced_while_the_group_completes_a_rebalance_rebalances_it() {
    let t0 = Instant::now();
    let mut g = ClassicGroup::default();
    let later = |a: Answer<JoinResponse>| match a {
        Answer::Later(id) => id,
        Answer::Now(r) => panic!("waits for the rebalance: {r:?}"),
    };
    let a = later(g.join(static_join("", "ia", &["range"]), t0, &settings()).0);
    let b = later(g.join(static_join("", "ib", &["range"]), t0, &settings()).0);
    assert_eq!(joins(&g.tick(t0 + 4 * SECOND, &settings())).len(), 2);
    assert_eq!(g.state(), ClassicState::CompletingRebalance);
    let (s, _) = g.sync(
        SyncRequest {
            instance_id: Some("ib".into()),
            ..sync_req(&b, 1, vec![])
        },
        t0 + 4 * SECOND,
    );
    assert_eq!(s, Answer::Later(b.clone()), "b waits for the leader");
    let t = t0 + 5 * SECOND;
    let (r, done) = g.join(static_join("", "ib", &["range"]), t, &settings());
    let b2 = later(r);
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    assert!(
        matches!(&syncs(&done)[&b].error, Some(e) if e.code == code::FENCED_INSTANCE_ID),
        "{done:?}"
    );
    let (r, done) = g.join(static_join(&a, "ia", &["range"]), t, &settings());
    assert_eq!(r, Answer::Later(a.clone()));
    let done = joins(&done);
    assert_eq!(done[&b2].generation_id, 2);
    assert_eq!(
        done[&a]
            .members
            .iter()
            .map(|m| m.member_id.clone())
            .collect::<Vec<_>>(),
        vec![a.clone(), b2.clone()],
        "the leader assigns to the new member id"
    );
}

/// LeaveGroup by instance id (an admin client's `removeMembersFromConsumerGroup` sends an
/// empty member id); a stale member id with the instance is fenced; an unknown instance
/// is UNKNOWN_MEMBER_ID. A leaving static member frees its instance id for a new member.
#[test]
fn static_members_leave_by_instance_id() {
    let t0 = Instant::now();
    let (mut g, a, b) = stable_static_pair(t0);
    let t = t0 + 6 * SECOND;
    let (results, _) = g.leave_many(
        &[
            ("".into(), Some("ib".into())),
            ("stale".into(), Some("ia".into())),
            ("".into(), Some("nobody".into())),
        ],
        t,
        &settings(),
    );
    let codes: Vec<Option<i16>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(code::FENCED_INSTANCE_ID),
            Some(code::UNKNOWN_MEMBER_ID)
        ]
    );
    assert!(!g.has_member(&b) && g.has_member(&a));
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    let (r, _) = g.join(static_join("", "ib", &["range"]), t, &settings());
    assert!(matches!(r, Answer::Later(_)), "ib joins as a new member");
}
