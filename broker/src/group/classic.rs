//! The classic group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup, KIP-62,
//! KIP-394) as plain data: the membership state machine of one group with no I/O, no lock
//! and no clock of its own (Kafka's `ClassicGroup` and the classic half of
//! `GroupMetadataManager`). Kafka clients that do not speak KIP-848 (kcat `-G`,
//! kafka-python, librdkafka's default, the Java client's `group.protocol=classic`) use it.
//!
//! ```text
//!   Empty ──join──► PreparingRebalance ──all known members joined, or the rebalance
//!     ▲                 ▲      │          timeout (first one: the initial delay)──►
//!     │   join (leader  │      ▼
//!     │   or changed),  │  CompletingRebalance ──leader's SyncGroup──► Stable
//!     │   leave, expiry └──────┴───────────────────────────────────────┘
//!     └── the last member leaves or expires
//! ```
//!
//! A JoinGroup is answered when its rebalance completes and a follower's SyncGroup when the
//! leader's arrives, so requests can be parked: a call answers [`Answer::Now`] or
//! [`Answer::Later`], and every call (and [`ClassicGroup::tick`]) returns the parked answers
//! it completed as [`Completed`] for the actor to deliver. The assignment itself is the
//! leader's (client-side assignors); the coordinator only relays the bytes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Kafka error codes of this protocol.
pub mod code {
    pub const NONE: i16 = 0;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// A Kafka error: code and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicError {
    pub code: i16,
    pub message: String,
}

fn fail(code: i16, message: impl Into<String>) -> ClassicError {
    ClassicError {
        code,
        message: message.into(),
    }
}

/// The group's state, named as Kafka names it in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl ClassicState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

/// Coordinator settings of the classic protocol (Kafka's broker keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct ClassicSettings {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout: Duration,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (each new one extends it, up to the rebalance timeout).
    pub initial_rebalance_delay: Duration,
    /// `group.max.size`.
    pub max_size: usize,
}

/// A JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub client_id: String,
    pub client_host: String,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: Option<ClassicError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; for the leader only.
    pub members: Vec<JoinedMember>,
    /// KIP-814: the leader is a static member that rejoined a stable group; it must not
    /// compute a new assignment (JoinGroup v9+; older versions get no member list instead).
    pub skip_assignment: bool,
    /// With `skip_assignment`: the leader's member id before this rejoin, which a client
    /// older than v9 is told is the leader (so it syncs as a follower and keeps its
    /// assignment), as Kafka does.
    pub replaced_leader: Option<String>,
}

impl JoinResponse {
    fn error(member_id: &str, e: ClassicError) -> Self {
        JoinResponse {
            error: Some(e),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// A SyncGroup.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    /// `group.instance.id` of a static member (KIP-345), checked against the member id.
    pub instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, `(member, bytes)`; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: Option<ClassicError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A parked request, or the answer now.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<T> {
    Now(T),
    /// Parked under this member id: a later [`Completed`] for it carries the answer.
    Later(String),
}

/// A parked answer a call completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    Join {
        member: String,
        answer: JoinResponse,
    },
    Sync {
        member: String,
        answer: SyncResponse,
    },
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: bool,
    awaiting_sync: bool,
    /// Sent its SyncGroup in this generation (Kafka's pending-sync set is the others).
    synced: bool,
    last_seen: Instant,
    /// Join order (the first member becomes the leader).
    joined: u64,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// What a classic group's membership is once a rebalance completed (Stable) or the last
/// member left (Empty): what `__consumer_offsets` keeps of it (Kafka's GroupMetadata
/// record), so a new coordinator after a failover knows the generation and the members,
/// and they carry on (heartbeats, commits) without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassicSnapshot {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// In join order.
    pub members: Vec<SnapshotMember>,
}

/// A member in a [`ClassicSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// One classic group's membership.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    state: ClassicState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or time out.
    pending: BTreeMap<String, Instant>,
    /// While preparing a rebalance: when it completes at the latest.
    deadline: Option<Instant>,
    /// While the first rebalance of an empty group waits for more members: until when.
    initial_until: Option<Instant>,
    /// When that first rebalance began (the initial delay never exceeds its timeout).
    initial_started: Option<Instant>,
    /// After a join phase: members that have not sent SyncGroup by then are removed
    /// (Kafka's pending-sync timeout, the rebalance timeout).
    sync_deadline: Option<Instant>,
    next_join: u64,
}

impl Default for ClassicGroup {
    fn default() -> Self {
        ClassicGroup {
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadline: None,
            initial_until: None,
            initial_started: None,
            sync_deadline: None,
            next_join: 0,
        }
    }
}

fn new_member_id(client_id: &str) -> String {
    let u = rand::random::<u128>();
    let hex = format!("{u:032x}");
    format!(
        "{client_id}-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl ClassicGroup {
    pub fn state(&self) -> ClassicState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    /// No members and no member ids handed out.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn has_member(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    /// Joined members (ids handed out but not yet joined do not count).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// The member id a static member's `group.instance.id` has now (KIP-345).
    fn static_member(&self, instance: &str) -> Option<&String> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id)
    }

    /// KIP-345's fence: a request naming a static member's instance id must come from the
    /// member id that instance has now; an older process with the same instance id is told
    /// FENCED_INSTANCE_ID (fatal to it) instead of rejoining and evicting the newer one.
    fn check_instance(&self, member: &str, instance: Option<&str>) -> Result<(), ClassicError> {
        let Some(i) = instance else { return Ok(()) };
        match self.static_member(i) {
            Some(id) if id != member => Err(fail(
                code::FENCED_INSTANCE_ID,
                format!(
                    "group.instance.id {i:?} belongs to member {id:?} now: member {member:?} was replaced by a newer process with the same instance id"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The members, as DescribeGroups shows them.
    /// The membership to keep, when the group is Stable or Empty after at least one
    /// rebalance; `None` while a rebalance runs or before the first one.
    pub fn snapshot(&self) -> Option<ClassicSnapshot> {
        if self.generation == 0 || !matches!(self.state, ClassicState::Stable | ClassicState::Empty)
        {
            return None;
        }
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(_, m)| m.joined);
        Some(ClassicSnapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: members
                .into_iter()
                .map(|(id, m)| SnapshotMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, md)| (n.clone(), md.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        })
    }

    /// A group as a new coordinator loads it (Kafka's `loadGroup`): Stable with the kept
    /// members, each synced and seen `now` (its session runs from the load), or Empty.
    pub fn restore(s: ClassicSnapshot, now: Instant) -> Self {
        let next_join = s.members.len() as u64;
        let members: BTreeMap<String, Member> = s
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    m.member_id,
                    Member {
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(m.session_timeout_ms),
                        rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                        protocols: m
                            .protocols
                            .into_iter()
                            .map(|(n, md)| (n, Bytes::from(md)))
                            .collect(),
                        assignment: Bytes::from(m.assignment),
                        awaiting_join: false,
                        awaiting_sync: false,
                        synced: true,
                        last_seen: now,
                        joined: i as u64,
                    },
                )
            })
            .collect();
        ClassicGroup {
            state: if members.is_empty() {
                ClassicState::Empty
            } else {
                ClassicState::Stable
            },
            generation: s.generation,
            protocol_type: s.protocol_type,
            protocol_name: s.protocol_name,
            leader: s.leader.filter(|l| members.contains_key(l)),
            members,
            next_join,
            ..ClassicGroup::default()
        }
    }

    pub fn describe(&self) -> Vec<DescribedMember> {
        self.members
            .iter()
            .map(|(id, m)| DescribedMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: self.metadata_of(m).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    fn metadata_of(&self, m: &Member) -> Option<Bytes> {
        let name = self.protocol_name.as_deref()?;
        m.protocols
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, md)| md.clone())
    }

    /// Protocols every member supports (the group's candidates).
    fn candidates(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    /// Kafka's `selectProtocol`: each member votes for its most preferred candidate; the
    /// most votes win (a tie goes to the earlier candidate in the first member's order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for c in &candidates {
            let v = votes.get(c.as_str()).copied().unwrap_or(0);
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c.as_str(), v));
            }
        }
        best.map(|(n, _)| n.to_string())
    }

    /// Whether `protocols` of `protocol_type` fit the group as it is.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], except: &str) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(_, m)| m)
            .collect();
        // The type must match whenever the group has members, even the joiner alone.
        if !self.members.is_empty()
            && self
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        if others.is_empty() {
            return true;
        }
        protocols.iter().any(|(n, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(p, _)| p == n))
        })
    }

    /// JoinGroup.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Answer<JoinResponse>, Vec<Completed>) {
        let now_err = |e| (Answer::Now(JoinResponse::error(&req.member_id, e)), vec![]);
        if req.session_timeout < settings.min_session_timeout
            || req.session_timeout > settings.max_session_timeout
        {
            return now_err(fail(
                code::INVALID_SESSION_TIMEOUT,
                format!(
                    "session timeout {} ms is outside group.min.session.timeout.ms..group.max.session.timeout.ms ({}..{})",
                    req.session_timeout.as_millis(),
                    settings.min_session_timeout.as_millis(),
                    settings.max_session_timeout.as_millis()
                ),
            ));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return now_err(fail(
                code::INCONSISTENT_GROUP_PROTOCOL,
                "a JoinGroup needs a protocol type and at least one protocol",
            ));
        }
        // A static member rejoining with an empty member id takes the place of the member
        // its instance id has (KIP-345).
        let replacing = match req.instance_id.as_deref() {
            Some(i) if req.member_id.is_empty() => self.static_member(i).cloned(),
            _ => None,
        };
        let except = replacing.as_deref().unwrap_or(&req.member_id);
        if !self.supports(&req.protocol_type, &req.protocols, except) {
            return now_err(fail(
                code::INCONSISTENT_GROUP_PROTOCOL,
                format!(
                    "protocol type {:?} with protocols {:?} does not match the group's members (type {:?})",
                    req.protocol_type,
                    req.protocols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                    self.protocol_type
                ),
            ));
        }
        if let Some(old) = replacing {
            return self.replace_static_member(old, req, now, settings);
        }
        if let Err(e) = self.check_instance(&req.member_id, req.instance_id.as_deref()) {
            return now_err(e);
        }
        if req.member_id.is_empty() {
            if self.members.len() + self.pending.len() >= settings.max_size {
                return now_err(fail(
                    code::GROUP_MAX_SIZE_REACHED,
                    format!(
                        "the group has {} members (group.max.size)",
                        settings.max_size
                    ),
                ));
            }
            let id = new_member_id(&req.client_id);
            // Only dynamic members make the MEMBER_ID_REQUIRED round trip: a static one is
            // known by its instance id.
            if req.require_known_member_id && req.instance_id.is_none() {
                self.pending.insert(id.clone(), now + req.session_timeout);
                return (
                    Answer::Now(JoinResponse::error(
                        &id,
                        fail(
                            code::MEMBER_ID_REQUIRED,
                            "join again with the member id given (KIP-394)",
                        ),
                    )),
                    vec![],
                );
            }
            return self.add_member_and_rebalance(id, req, now, settings);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(id, req, now, settings);
        }
        let Some(m) = self.members.get(&req.member_id) else {
            return now_err(fail(
                code::UNKNOWN_MEMBER_ID,
                format!(
                    "member {:?} is not in the group (expired, or never joined); join with an empty member id",
                    req.member_id
                ),
            ));
        };
        let same = m.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            ClassicState::CompletingRebalance if same => {
                // A repeated join (its answer was lost): the same answer again.
                let id = req.member_id.clone();
                self.touch(&id, now);
                (Answer::Now(self.join_answer(&id)), vec![])
            }
            ClassicState::Stable if same && !is_leader => {
                let id = req.member_id.clone();
                self.touch(&id, now);
                (Answer::Now(self.join_answer(&id)), vec![])
            }
            ClassicState::Empty => now_err(fail(
                code::UNKNOWN_MEMBER_ID,
                format!("member {:?} is not in the group", req.member_id),
            )),
            _ => self.update_member_and_rebalance(req, now, settings),
        }
    }

    /// A static member's new process joins (KIP-345, Kafka's `updateStaticMemberThen-
    /// RebalanceOrCompleteJoin`): it gets a new member id in the old one's place, keeping
    /// its assignment and join order (and leadership); the old process's parked requests are
    /// fenced. A stable (or completing) group whose member kept its protocols does not
    /// rebalance: the member is answered at once with the current generation and gets its
    /// old assignment from SyncGroup. Otherwise the group rebalances as for a changed member.
    fn replace_static_member(
        &mut self,
        old: String,
        req: JoinRequest,
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Answer<JoinResponse>, Vec<Completed>) {
        let mut m = self.members.remove(&old).expect("found by instance id");
        let id = new_member_id(&req.client_id);
        let fenced = || {
            fail(
                code::FENCED_INSTANCE_ID,
                "a newer process with the same group.instance.id joined",
            )
        };
        let mut done = Vec::new();
        if std::mem::take(&mut m.awaiting_join) {
            done.push(Completed::Join {
                member: old.clone(),
                answer: JoinResponse::error(&old, fenced()),
            });
        }
        if std::mem::take(&mut m.awaiting_sync) {
            done.push(Completed::Sync {
                member: old.clone(),
                answer: SyncResponse {
                    error: Some(fenced()),
                    ..Default::default()
                },
            });
        }
        tracing::info!(old = %old, new = %id, instance = ?req.instance_id, "static member replaced");
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_seen = now;
        let was_leader = self.leader.as_deref() == Some(old.as_str());
        if was_leader {
            self.leader = Some(id.clone());
        }
        self.members.insert(id.clone(), m);
        // Kafka keeps a stable group stable when the protocol it would select with the new
        // metadata is still the current one (the metadata bytes themselves change with every
        // generation: the Java client sends its owned partitions). A group completing a
        // rebalance rebalances again: the leader may be assigning to the old member id.
        if self.state == ClassicState::Stable && self.select_protocol() == self.protocol_name {
            let mut answer = self.join_answer(&id);
            if was_leader {
                answer.skip_assignment = true;
                answer.replaced_leader = Some(old);
            }
            return (Answer::Now(answer), done);
        }
        self.members
            .get_mut(&id)
            .expect("just inserted")
            .awaiting_join = true;
        if self.state != ClassicState::PreparingRebalance {
            done.extend(self.prepare_rebalance(now, settings));
        }
        done.extend(self.try_complete_join(now));
        (Answer::Later(id), done)
    }

    fn touch(&mut self, member: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member) {
            m.last_seen = now;
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Answer<JoinResponse>, Vec<Completed>) {
        let joined = self.next_join;
        self.next_join += 1;
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: true,
                awaiting_sync: false,
                synced: false,
                last_seen: now,
                joined,
            },
        );
        let mut done = Vec::new();
        if self.state == ClassicState::PreparingRebalance {
            // A new member during the initial delay extends it (up to the timeout).
            if let Some(started) = self.initial_started {
                let cap = started + self.max_rebalance_timeout();
                self.initial_until = Some((now + settings.initial_rebalance_delay).min(cap));
            }
        } else {
            done.extend(self.prepare_rebalance(now, settings));
        }
        done.extend(self.try_complete_join(now));
        (Answer::Later(id), done)
    }

    fn update_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Answer<JoinResponse>, Vec<Completed>) {
        let mut done = Vec::new();
        let m = self.members.get_mut(&req.member_id).expect("checked");
        if m.awaiting_join {
            // The earlier join of this member will not be answered by this rebalance.
            done.push(Completed::Join {
                member: req.member_id.clone(),
                answer: JoinResponse::error(
                    &req.member_id,
                    fail(
                        code::REBALANCE_IN_PROGRESS,
                        "superseded by a later JoinGroup",
                    ),
                ),
            });
        }
        m.protocols = req.protocols.clone();
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.awaiting_join = true;
        m.last_seen = now;
        if self.state != ClassicState::PreparingRebalance {
            done.extend(self.prepare_rebalance(now, settings));
        }
        done.extend(self.try_complete_join(now));
        (Answer::Later(req.member_id), done)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Starts a rebalance: parked syncs learn it, assignments are void.
    fn prepare_rebalance(&mut self, now: Instant, settings: &ClassicSettings) -> Vec<Completed> {
        let mut done = Vec::new();
        self.sync_deadline = None;
        if self.state == ClassicState::CompletingRebalance {
            for (id, m) in self.members.iter_mut() {
                m.assignment = Bytes::new();
                if std::mem::take(&mut m.awaiting_sync) {
                    done.push(Completed::Sync {
                        member: id.clone(),
                        answer: SyncResponse {
                            error: Some(fail(
                                code::REBALANCE_IN_PROGRESS,
                                "the group is rebalancing; join again",
                            )),
                            ..Default::default()
                        },
                    });
                }
            }
        }
        let was_empty = self.state == ClassicState::Empty;
        self.state = ClassicState::PreparingRebalance;
        self.deadline = Some(now + self.max_rebalance_timeout());
        if was_empty {
            let cap = now + self.max_rebalance_timeout();
            self.initial_started = Some(now);
            self.initial_until = Some((now + settings.initial_rebalance_delay).min(cap));
        }
        done
    }

    /// Completes the join phase once every member has rejoined and no handed-out id is
    /// outstanding (never inside the initial delay, which ends on its timer).
    fn try_complete_join(&mut self, now: Instant) -> Vec<Completed> {
        if self.state != ClassicState::PreparingRebalance {
            return Vec::new();
        }
        match self.initial_until {
            Some(u) if now < u => return Vec::new(),
            // Kafka's InitialDelayedJoin completes when the delay ends, whoever is pending.
            Some(_) => return self.complete_join(now),
            None => {}
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join) && self.pending.is_empty();
        if all_joined || self.deadline.is_some_and(|d| now >= d) {
            self.complete_join(now)
        } else {
            Vec::new()
        }
    }

    /// Kafka's `onCompleteJoin`: members that did not rejoin are dropped, the generation
    /// moves on, a protocol and a leader are chosen and every parked join is answered.
    fn complete_join(&mut self, now: Instant) -> Vec<Completed> {
        self.members.retain(|_, m| m.awaiting_join);
        self.pending.clear();
        self.deadline = None;
        self.initial_until = None;
        self.initial_started = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            return Vec::new();
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.joined)
                .map(|(id, _)| id.clone());
        }
        self.state = ClassicState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            let m = self.members.get_mut(&id).expect("present");
            m.awaiting_join = false;
            m.synced = false;
            m.last_seen = now;
            done.push(Completed::Join {
                answer: self.join_answer(&id),
                member: id,
            });
        }
        done
    }

    /// The join answer of `member` at the current generation.
    fn join_answer(&self, member: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member {
            let mut ms: Vec<(&String, &Member)> = self.members.iter().collect();
            ms.sort_by_key(|(_, m)| m.joined);
            ms.into_iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: self.metadata_of(m).unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member.to_string(),
            members,
            skip_assignment: false,
            replaced_leader: None,
        }
    }

    /// The member and generation checks of SyncGroup, Heartbeat and OffsetCommit.
    fn check_member(&self, member: &str, generation: i32) -> Result<(), ClassicError> {
        if !self.members.contains_key(member) {
            return Err(fail(
                code::UNKNOWN_MEMBER_ID,
                format!("member {member:?} is not in the group; join again"),
            ));
        }
        if generation != self.generation {
            return Err(fail(
                code::ILLEGAL_GENERATION,
                format!(
                    "generation {generation} is not the group's generation {}; join again",
                    self.generation
                ),
            ));
        }
        Ok(())
    }

    /// SyncGroup.
    pub fn sync(
        &mut self,
        req: SyncRequest,
        now: Instant,
    ) -> (Answer<SyncResponse>, Vec<Completed>) {
        let now_err = |e| {
            (
                Answer::Now(SyncResponse {
                    error: Some(e),
                    ..Default::default()
                }),
                vec![],
            )
        };
        if let Err(e) = self
            .check_instance(&req.member_id, req.instance_id.as_deref())
            .and_then(|()| self.check_member(&req.member_id, req.generation_id))
        {
            return now_err(e);
        }
        let mismatch =
            |ours: &Option<String>, theirs: &Option<String>| theirs.is_some() && ours != theirs;
        if mismatch(&self.protocol_type, &req.protocol_type)
            || mismatch(&self.protocol_name, &req.protocol_name)
        {
            return now_err(fail(
                code::INCONSISTENT_GROUP_PROTOCOL,
                format!(
                    "protocol {:?}/{:?} is not the group's {:?}/{:?}",
                    req.protocol_type, req.protocol_name, self.protocol_type, self.protocol_name
                ),
            ));
        }
        self.touch(&req.member_id, now);
        match self.state {
            ClassicState::Empty | ClassicState::PreparingRebalance => now_err(fail(
                code::REBALANCE_IN_PROGRESS,
                "the group is rebalancing; join again",
            )),
            ClassicState::Stable => {
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.synced = true;
                let m = &self.members[&req.member_id];
                (Answer::Now(self.sync_answer(m)), vec![])
            }
            ClassicState::CompletingRebalance => {
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.synced = true;
                let mut done = Vec::new();
                if std::mem::replace(&mut m.awaiting_sync, true) {
                    // A repeated SyncGroup (the first timed out at the client): the
                    // earlier one is answered now, the new one waits in its place.
                    done.push(Completed::Sync {
                        member: req.member_id.clone(),
                        answer: SyncResponse {
                            error: Some(fail(
                                code::REBALANCE_IN_PROGRESS,
                                "superseded by a later SyncGroup",
                            )),
                            ..Default::default()
                        },
                    });
                }
                if self.leader.as_deref() != Some(req.member_id.as_str()) {
                    return (Answer::Later(req.member_id), done);
                }
                let assigned: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                self.state = ClassicState::Stable;
                let snapshot = (self.protocol_type.clone(), self.protocol_name.clone());
                for (id, m) in self.members.iter_mut() {
                    m.assignment = assigned.get(id).cloned().unwrap_or_default();
                    if std::mem::take(&mut m.awaiting_sync) {
                        done.push(Completed::Sync {
                            member: id.clone(),
                            answer: SyncResponse {
                                error: None,
                                protocol_type: snapshot.0.clone(),
                                protocol_name: snapshot.1.clone(),
                                assignment: m.assignment.clone(),
                            },
                        });
                    }
                }
                // The leader's own answer is among them; hand it back directly.
                let mine = done.iter().position(
                    |c| matches!(c, Completed::Sync { member, .. } if *member == req.member_id),
                );
                let answer = match mine.map(|i| done.remove(i)) {
                    Some(Completed::Sync { answer, .. }) => answer,
                    _ => unreachable!("the leader was marked awaiting"),
                };
                (Answer::Now(answer), done)
            }
        }
    }

    fn sync_answer(&self, m: &Member) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: m.assignment.clone(),
        }
    }

    /// Heartbeat: keeps the session; says when a rebalance needs the member to rejoin.
    pub fn heartbeat(
        &mut self,
        member: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ClassicError> {
        self.check_instance(member, instance)?;
        self.check_member(member, generation)?;
        self.touch(member, now);
        match self.state {
            ClassicState::PreparingRebalance => Err(fail(
                code::REBALANCE_IN_PROGRESS,
                "the group is rebalancing; join again",
            )),
            _ => Ok(()),
        }
    }

    /// OffsetCommit's fence: a member of the current generation, outside the sync phase.
    ///
    /// Kafka's `ClassicGroup.validateOffsetCommit`: generation -1 commits (an admin client, or
    /// a consumer without group management) only while the group has no members; otherwise
    /// the member must be in the group at its generation.
    pub fn check_commit(
        &self,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ClassicError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.check_instance(member, instance)?;
        if generation >= 0 || !member.is_empty() {
            self.check_member(member, generation)?;
        } else {
            return Err(fail(
                code::UNKNOWN_MEMBER_ID,
                "the group has members: commit as one of them (member id and generation), or while it is empty",
            ));
        }
        if self.state == ClassicState::CompletingRebalance {
            return Err(fail(
                code::REBALANCE_IN_PROGRESS,
                "the group is completing a rebalance; commit after SyncGroup",
            ));
        }
        Ok(())
    }

    /// LeaveGroup of one member.
    pub fn leave(
        &mut self,
        member: &str,
        now: Instant,
        settings: &ClassicSettings,
    ) -> Result<Vec<Completed>, ClassicError> {
        let (mut results, done) = self.leave_many(&[(member.to_string(), None)], now, settings);
        results.pop().expect("one result").map(|()| done)
    }

    /// LeaveGroup of several members (v3+), each by member id and, for a static member, its
    /// `group.instance.id` (then the member id may be empty, as an admin client's removal
    /// sends it; a member id that is not the instance's current one is fenced): all leave,
    /// then the group rebalances once.
    pub fn leave_many(
        &mut self,
        members: &[(String, Option<String>)],
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Vec<Result<(), ClassicError>>, Vec<Completed>) {
        let mut removed = Vec::new();
        let mut pending_left = false;
        let results = members
            .iter()
            .map(|(member, instance)| {
                let member = match instance.as_deref() {
                    None => member.clone(),
                    Some(i) => match self.static_member(i) {
                        Some(id) if member.is_empty() || id == member => id.clone(),
                        Some(_) => return self.check_instance(member, Some(i)),
                        None => {
                            return Err(fail(
                                code::UNKNOWN_MEMBER_ID,
                                format!("no member of the group has group.instance.id {i:?}"),
                            ))
                        }
                    },
                };
                let member = &member;
                if self.pending.remove(member).is_some() {
                    pending_left = true;
                    return Ok(());
                }
                match self.members.remove(member) {
                    Some(m) => {
                        removed.push((member.clone(), m));
                        Ok(())
                    }
                    None => Err(fail(
                        code::UNKNOWN_MEMBER_ID,
                        format!("member {member:?} is not in the group"),
                    )),
                }
            })
            .collect();
        let done = if !removed.is_empty() {
            self.after_removal(removed, now, settings)
        } else if pending_left {
            self.try_complete_join(now)
        } else {
            Vec::new()
        };
        (results, done)
    }

    fn after_removal(
        &mut self,
        removed: Vec<(String, Member)>,
        now: Instant,
        settings: &ClassicSettings,
    ) -> Vec<Completed> {
        let mut done = Vec::new();
        for (id, m) in &removed {
            if m.awaiting_join {
                done.push(Completed::Join {
                    member: id.clone(),
                    answer: JoinResponse::error(
                        id,
                        fail(code::UNKNOWN_MEMBER_ID, "the member left the group"),
                    ),
                });
            }
            if m.awaiting_sync {
                done.push(Completed::Sync {
                    member: id.clone(),
                    answer: SyncResponse {
                        error: Some(fail(code::UNKNOWN_MEMBER_ID, "the member left the group")),
                        ..Default::default()
                    },
                });
            }
        }
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                done.extend(self.prepare_rebalance(now, settings));
                done.extend(self.try_complete_join(now));
            }
            ClassicState::PreparingRebalance => done.extend(self.try_complete_join(now)),
            ClassicState::Empty => {}
        }
        done
    }

    /// Time passes: sessions expire (not while a member waits for its join), handed-out
    /// ids lapse, a rebalance whose timeout (or initial delay) ran out completes.
    pub fn tick(&mut self, now: Instant, settings: &ClassicSettings) -> Vec<Completed> {
        self.pending.retain(|_, until| now < *until);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                !m.awaiting_join && !m.awaiting_sync && now >= m.last_seen + m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut done = Vec::new();
        // Kafka's pending-sync timeout: a rebalance timeout after the join phase, members
        // that never sent SyncGroup are removed and the group rebalances without them.
        let sync_late = self.sync_deadline.is_some_and(|d| now >= d)
            && matches!(
                self.state,
                ClassicState::CompletingRebalance | ClassicState::Stable
            );
        let mut expired = expired;
        if sync_late {
            self.sync_deadline = None;
            for (id, m) in &self.members {
                if !m.synced && !expired.contains(id) {
                    tracing::info!(member = %id, "classic group member never sent SyncGroup");
                    expired.push(id.clone());
                }
            }
        }
        if !expired.is_empty() {
            let removed = expired
                .into_iter()
                .map(|id| {
                    tracing::info!(member = %id, "classic group member session expired");
                    let m = self.members.remove(&id).expect("listed");
                    (id, m)
                })
                .collect();
            done.extend(self.after_removal(removed, now, settings));
        }
        done.extend(self.try_complete_join(now));
        done
    }
}

#[cfg(test)]
#[path = "classic_tests.rs"]
mod tests;
