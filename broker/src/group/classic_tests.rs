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
    assert_eq!(g.heartbeat(&a, 1, t), Ok(()));
    assert_eq!(
        g.heartbeat(&a, 0, t).unwrap_err().code,
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.heartbeat("stranger", 1, t).unwrap_err().code,
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
        g.heartbeat(&a, 1, t).unwrap_err().code,
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
            g.heartbeat(&b, 1, t + s * SECOND).unwrap_err().code,
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
    assert_eq!(g.heartbeat(&a, 1, t + 9 * SECOND), Ok(()));
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
        g.check_commit(&b, 1).unwrap_err().code,
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
    assert_eq!(g.check_commit(&a, 1), Ok(()));
    assert_eq!(
        g.check_commit(&a, 0).unwrap_err().code,
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.check_commit("zombie", 1).unwrap_err().code,
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
        assert_eq!(g.heartbeat(&a, 1, t1 + s * SECOND), Ok(()));
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
    let (results, done) = g.leave_many(&[b.clone(), "stranger".into()], t, &settings());
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
        g.check_commit("", -1).unwrap_err().code,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(ClassicGroup::default().check_commit("", -1), Ok(()));
    assert_eq!(ClassicGroup::default().check_commit("anyone", -1), Ok(()));
}
