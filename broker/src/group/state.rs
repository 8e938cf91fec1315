//! The groups of one `__consumer_offsets` partition as plain data: every decision of the
//! coordinator (join, heartbeat, leave, expiry, commit fencing, offset fetch, delete) with
//! no I/O, no lock and no clock of its own. The shard actor ([`super::actor`]) owns one
//! [`ShardState`], writes the records these decisions ask for and applies them once they
//! are committed (Kafka's `GroupMetadataManager` over its `CoordinatorRuntime`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_metadata::{MetadataImage, TopicPartition};
use sluice_proto::v1::*;
use tonic::Status;

use super::classic::{self, ClassicError, ClassicGroup, ClassicSettings, Completed};
use super::records::{
    consumer_group_key, consumer_group_value, group_key, group_value, offset_key, offset_value,
};
use super::{err, Committed, COMMIT_METADATA_BYTES_MAX, GROUP_MEMBERS_MAX};
use crate::assign;

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    subscribed: Vec<String>,
    /// The member's epoch: the group epoch whose target it has reconciled to (it stays at
    /// its old epoch while it still has partitions to revoke).
    epoch: i32,
    /// The epoch before `epoch`: a heartbeat at it is accepted when its response was lost.
    previous_epoch: i32,
    /// Partitions the member has now (the assignment it is told).
    assigned: Parts,
    /// Partitions it must give up before it moves on to the group's epoch; nobody else
    /// gets them until it stops reporting them as owned (KIP-848 UNREVOKED_PARTITIONS).
    revoking: Parts,
    /// When it was asked to revoke (it is removed after `rebalance_timeout` without doing so).
    revoking_since: Option<Instant>,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// A static member (KIP-345 through KIP-848: an instance id) that left with epoch -2:
    /// it keeps its partitions and epoch for its session timeout, so a new process with
    /// its instance id takes its place without a rebalance.
    static_left: bool,
}

/// A consumer-protocol group as kept in `__consumer_offsets` (kind 3): what a new
/// coordinator needs to carry on where the old one was, so members keep their member ids,
/// epochs and partitions across a coordinator failover (Kafka writes the same state as
/// ConsumerGroupMetadata, member, target-assignment and current-assignment records).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConsumerSnapshot {
    pub epoch: i32,
    pub assignor: String,
    pub assignment: assign::Assignment,
    pub partition_counts: BTreeMap<String, i32>,
    pub members: Vec<SnapshotConsumerMember>,
}

/// One member of a [`ConsumerSnapshot`]; times are not kept (a new coordinator starts each
/// member's session, and a pending revocation's clock, when it loads).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub assigned: Vec<(String, i32)>,
    pub revoking: Vec<(String, i32)>,
    pub rebalance_timeout_ms: u64,
    pub static_left: bool,
}

/// The epoch a static member leaves with (Kafka's LEAVE_GROUP_STATIC_MEMBER_EPOCH).
const LEAVE_STATIC_EPOCH: i32 = -2;

/// A set of topic-partitions.
pub type Parts = BTreeSet<(String, i32)>;

/// Kafka's default max.poll.interval.ms, the rebalance timeout when a member gives none.
const REBALANCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);

fn parts_of(a: Option<&BTreeMap<String, Vec<i32>>>) -> Parts {
    a.into_iter()
        .flatten()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect()
}

/// The owned partitions a heartbeat reports.
pub fn owned_parts(owned: &[TopicPartitions]) -> Parts {
    owned
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
        .collect()
}

#[derive(Debug, Default)]
struct Group {
    epoch: i32,
    assignor: String,
    members: BTreeMap<String, Member>,
    /// Target assignment at `epoch`.
    assignment: assign::Assignment,
    /// Partition counts the assignment was computed with.
    partition_counts: BTreeMap<String, i32>,
    /// Committed offsets, with the offset of the record in `__consumer_offsets` that wrote
    /// each (a later record wins, whatever order the writes' completions arrive in).
    offsets: BTreeMap<TopicPartition, (Committed, i64)>,
    /// Membership under the classic protocol (JoinGroup/SyncGroup); a group has members
    /// of one protocol at a time.
    classic: ClassicGroup,
    /// When each offset was last committed (or replayed, after a coordinator move): offsets
    /// of an empty group expire `offsets.retention.minutes` after it.
    committed_at: BTreeMap<TopicPartition, Instant>,
}

impl Group {
    /// No members of either protocol.
    fn has_no_members(&self) -> bool {
        self.members.is_empty() && self.classic.is_empty()
    }

    /// Nothing left to keep: no members and no committed offsets.
    fn is_vacant(&self) -> bool {
        self.has_no_members() && self.offsets.is_empty()
    }

    fn state(&self) -> GroupState {
        if !self.classic.is_empty() {
            return match self.classic.state() {
                classic::ClassicState::Empty => GroupState::Empty,
                classic::ClassicState::PreparingRebalance => GroupState::Assigning,
                classic::ClassicState::CompletingRebalance => GroupState::Reconciling,
                classic::ClassicState::Stable => GroupState::Stable,
            };
        }
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.iter().all(|(id, m)| {
            m.static_left
                || (m.epoch == self.epoch
                    && m.revoking.is_empty()
                    && m.assigned == self.target_of(id))
        }) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// The consumer-protocol state to keep; `None` while the group never had such members.
    fn consumer_snapshot(&self) -> Option<ConsumerSnapshot> {
        if self.members.is_empty() && self.epoch == 0 {
            return None;
        }
        Some(ConsumerSnapshot {
            epoch: self.epoch,
            assignor: self.assignor.clone(),
            assignment: self.assignment.clone(),
            partition_counts: self.partition_counts.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| SnapshotConsumerMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.iter().cloned().collect(),
                    revoking: m.revoking.iter().cloned().collect(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    static_left: m.static_left,
                })
                .collect(),
        })
    }

    /// Takes a kept consumer-protocol state as loaded `now`: every member's session, and
    /// any pending revocation's timeout, start again from the load.
    fn restore_consumer(&mut self, s: ConsumerSnapshot, now: Instant) {
        self.epoch = s.epoch;
        self.assignor = s.assignor;
        self.assignment = s.assignment;
        self.partition_counts = s.partition_counts;
        self.members = s
            .members
            .into_iter()
            .map(|m| {
                let revoking: Parts = m.revoking.into_iter().collect();
                let member = Member {
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscribed: m.subscribed,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.into_iter().collect(),
                    revoking_since: (!revoking.is_empty()).then_some(now),
                    revoking,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    last_seen: now,
                    static_left: m.static_left,
                };
                (m.member_id, member)
            })
            .collect();
    }

    /// The member's target assignment at the group epoch.
    fn target_of(&self, member: &str) -> Parts {
        parts_of(self.assignment.get(member))
    }

    /// Moves one member towards the group's target (Kafka's `CurrentAssignmentBuilder`):
    /// a member with partitions to give up keeps its epoch and is told only what it keeps,
    /// until a heartbeat's `owned` no longer holds them; only then does it take the
    /// group's epoch and the new partitions that no other member still holds.
    /// `owned` is None when the member did not say (Kafka's null: unchanged).
    fn reconcile(&mut self, member: &str, owned: Option<&Parts>, now: Instant) {
        let target = self.target_of(member);
        let held_elsewhere: Parts = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member)
            .flat_map(|(_, m)| m.assigned.iter().chain(m.revoking.iter()).cloned())
            .collect();
        let epoch = self.epoch;
        let m = self.members.get_mut(member).expect("member present");
        if !m.revoking.is_empty() {
            match owned {
                Some(o) if o.is_disjoint(&m.revoking) => {
                    m.revoking.clear();
                    m.revoking_since = None;
                }
                _ => return,
            }
        }
        if m.epoch == epoch && m.assigned == target {
            return;
        }
        let keep: Parts = m.assigned.intersection(&target).cloned().collect();
        if keep.len() < m.assigned.len() {
            m.revoking = m.assigned.difference(&target).cloned().collect();
            m.revoking_since = Some(now);
            m.assigned = keep;
            return;
        }
        m.assigned = target
            .into_iter()
            .filter(|tp| keep.contains(tp) || !held_elsewhere.contains(tp))
            .collect();
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
    }

    /// Recomputes the target assignment at a new group epoch.
    fn rebalance(&mut self, image: &MetadataImage) {
        let subs: BTreeMap<String, Vec<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        self.partition_counts = partition_counts(image, &self.subscribed_topics());
        self.epoch += 1;
        self.assignment = assign::assign(&self.assignor, &subs, &self.partition_counts)
            .expect("assignor validated on join");
    }

    /// Whether an active member subscribes to `topic` (Kafka's `isSubscribedToTopic`):
    /// consumer-protocol members by their subscription, classic members of protocol type
    /// "consumer" by the subscription in their metadata; a classic group whose protocol is
    /// another, or not chosen yet, counts as subscribed to every topic.
    fn is_subscribed_to(&self, topic: &str) -> bool {
        if self
            .members
            .values()
            .any(|m| m.subscribed.iter().any(|t| t == topic))
        {
            return true;
        }
        if !self.classic.has_members() {
            return false;
        }
        if self.classic.protocol_type() != Some("consumer")
            || self.classic.protocol_name().is_none()
        {
            return true;
        }
        self.classic.describe().iter().any(|m| {
            super::consumer_protocol::subscribed_topics(&m.metadata)
                .iter()
                .any(|t| t == topic)
        })
    }

    fn subscribed_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The member's current assignment (`target`: its target at the group epoch instead).
    fn assignment_of(&self, image: &MetadataImage, member: &str, target: bool) -> Assignment {
        let parts = if target {
            self.target_of(member)
        } else {
            self.members
                .get(member)
                .map(|m| m.assigned.clone())
                .unwrap_or_default()
        };
        let mut topic_partitions: Vec<TopicPartitions> = Vec::new();
        for (t, p) in parts {
            match topic_partitions.last_mut() {
                Some(last) if last.topic == t => last.partitions.push(p),
                _ => topic_partitions.push(TopicPartitions {
                    topic_id: image
                        .topic(&t)
                        .map(|ti| ti.id.to_string())
                        .unwrap_or_default(),
                    topic: t,
                    partitions: vec![p],
                }),
            }
        }
        Assignment { topic_partitions }
    }
}

fn partition_counts(image: &MetadataImage, topics: &[String]) -> BTreeMap<String, i32> {
    topics
        .iter()
        .filter_map(|t| Some((t.clone(), image.topic(t)?.partitions.len() as i32)))
        .collect()
}

fn member_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What a commit needs written: the answer per partition (errors already final) and the
/// records to append with acks=all before the accepted ones count as committed.
#[derive(Debug)]
pub struct CommitPlan {
    /// One result per requested partition; those accepted say NONE until the write's outcome.
    pub results: Vec<OffsetCommitResult>,
    /// Records to append (key, value), in the order of `accepted`.
    pub writes: Vec<(Bytes, Option<Bytes>)>,
    /// The offsets to apply once the write is committed.
    pub accepted: Vec<(TopicPartition, Committed)>,
}

/// The groups of one offsets partition at one leader epoch of it.
#[derive(Debug, Default)]
pub struct ShardState {
    groups: HashMap<String, Group>,
    /// Classic groups whose membership is in `__consumer_offsets`: the (generation,
    /// has members) of the last record written or replayed.
    classic_kept: HashMap<String, (i32, bool)>,
    /// Classic groups a call may have moved since the last [`ShardState::take_membership_writes`].
    classic_dirty: BTreeSet<String>,
    /// Consumer-protocol groups in `__consumer_offsets`: the value last written or replayed.
    consumer_kept: HashMap<String, Bytes>,
    /// Consumer-protocol groups a call may have changed since the last writes were taken.
    consumer_dirty: BTreeSet<String>,
}

impl ShardState {
    /// Replays one record of the offsets partition (at `offset` in its log): a commit, a
    /// classic group's membership (restored as seen `now`), or a tombstone (no value).
    /// Records of unknown kinds, and values that do not decode, are skipped.
    pub fn replay(&mut self, offset: i64, key: &[u8], value: Option<&[u8]>, now: Instant) {
        if let Some(g) = super::records::parse_consumer_group_key(key) {
            match value.map(|v| (v, super::records::parse_consumer_group_value(v))) {
                Some((v, Some(snap))) => {
                    self.consumer_kept
                        .insert(g.clone(), Bytes::copy_from_slice(v));
                    self.groups
                        .entry(g)
                        .or_default()
                        .restore_consumer(snap, now);
                }
                Some((_, None)) => {
                    tracing::warn!(group = %g, offset, "a consumer group record that does not decode; skipped");
                }
                None => {
                    self.consumer_kept.remove(&g);
                    if let Some(group) = self.groups.get_mut(&g) {
                        group.restore_consumer(
                            ConsumerSnapshot {
                                epoch: 0,
                                assignor: String::new(),
                                assignment: Default::default(),
                                partition_counts: Default::default(),
                                members: Vec::new(),
                            },
                            now,
                        );
                    }
                }
            }
            return;
        }
        if let Some(g) = super::records::parse_group_key(key) {
            match value.map(super::records::parse_group_value) {
                Some(Some(snap)) => {
                    self.classic_kept
                        .insert(g.clone(), (snap.generation, !snap.members.is_empty()));
                    self.groups.entry(g).or_default().classic = ClassicGroup::restore(snap, now);
                }
                Some(None) => {
                    tracing::warn!(group = %g, offset, "a classic group record that does not decode; skipped");
                }
                None => {
                    self.classic_kept.remove(&g);
                    if let Some(group) = self.groups.get_mut(&g) {
                        group.classic = ClassicGroup::default();
                    }
                }
            }
            return;
        }
        let Some((g, t, p)) = super::records::parse_offset_key(key) else {
            return;
        };
        let group = self.groups.entry(g).or_default();
        match value.and_then(super::records::parse_offset_value) {
            Some(c) => {
                let tp = TopicPartition::new(t, p);
                group.committed_at.insert(tp.clone(), now);
                group.offsets.insert(tp, (c, offset));
            }
            None => {
                group.offsets.remove(&TopicPartition::new(t, p));
            }
        }
    }

    /// Drops groups a replay left without offsets or members (all tombstoned).
    pub fn loaded(&mut self) {
        self.groups.retain(|_, g| !g.is_vacant());
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// ConsumerGroupHeartbeat: join (epoch 0), heartbeat, leave (epoch < 0); the member
    /// owns what its `owned_partitions` say (gRPC: sent in full on every heartbeat).
    pub fn heartbeat(
        &mut self,
        req: ConsumerGroupHeartbeatRequest,
        client_host: String,
        now: Instant,
        heartbeat_interval: Duration,
        image: &MetadataImage,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        let owned = owned_parts(&req.owned_partitions);
        self.heartbeat_owning(
            req,
            Some(owned),
            client_host,
            now,
            heartbeat_interval,
            image,
        )
    }

    /// [`Self::heartbeat`] with what the member owns given apart: `None` when it did not
    /// say (a Kafka client sends null when nothing changed); see [`Group::reconcile`].
    pub fn heartbeat_owning(
        &mut self,
        req: ConsumerGroupHeartbeatRequest,
        owned: Option<Parts>,
        client_host: String,
        now: Instant,
        heartbeat_interval: Duration,
        image: &MetadataImage,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        let hb_ms = heartbeat_interval.as_millis() as i32;
        self.consumer_dirty.insert(req.group_id.clone());
        if req.member_epoch == LEAVE_STATIC_EPOCH && req.instance_id.is_some() {
            // A static member going away for a while (a restart): it keeps its place and
            // partitions for its session timeout; nothing is rebalanced (Kafka's
            // `consumerGroupStaticMemberGroupLeave`).
            if let Some(m) = self
                .groups
                .get_mut(&req.group_id)
                .and_then(|g| g.members.get_mut(&req.member_id))
                .filter(|m| m.instance_id == req.instance_id)
            {
                tracing::info!(group = %req.group_id, member = %req.member_id,
                    instance = ?req.instance_id, "static member left; its partitions wait for its return");
                m.static_left = true;
                m.last_seen = now;
            }
            return Ok(ConsumerGroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: hb_ms,
                assignment: None,
            });
        }
        if req.member_epoch < 0 {
            if let Some(g) = self.groups.get_mut(&req.group_id) {
                if g.members.remove(&req.member_id).is_some() {
                    tracing::info!(group = %req.group_id, member = %req.member_id, "member left");
                    g.rebalance(image);
                }
            }
            return Ok(ConsumerGroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: hb_ms,
                assignment: None,
            });
        }
        if req.member_epoch == 0 {
            if self
                .groups
                .get(&req.group_id)
                .is_some_and(|g| !g.classic.is_empty())
            {
                return Err(err(
                    ErrorCode::InconsistentGroupProtocol,
                    format!(
                        "group {:?} has members of the classic protocol (JoinGroup); a consumer-protocol member cannot join it",
                        req.group_id
                    ),
                ));
            }
            if req.subscribed_topic_names.is_empty() {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "a joining member must subscribe to at least one topic",
                ));
            }
            if !req.server_assignor.is_empty()
                && !assign::ASSIGNORS.contains(&req.server_assignor.as_str())
            {
                return Err(err(
                    ErrorCode::UnsupportedAssignor,
                    format!(
                        "assignor {:?} is not supported; use one of {:?}",
                        req.server_assignor,
                        assign::ASSIGNORS
                    ),
                ));
            }
        }
        let known = self
            .groups
            .get(&req.group_id)
            .and_then(|g| g.members.get(&req.member_id))
            .map(|m| m.static_left);
        if req.member_epoch != 0 && known == Some(true) {
            return Err(err(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "member {:?} left group {:?} as a static member; rejoin with member_epoch 0",
                    req.member_id, req.group_id
                ),
            ));
        }
        let known = known.is_some();
        if req.member_epoch != 0 && !known {
            return Err(err(
                ErrorCode::UnknownMemberId,
                format!(
                    "member {:?} is not in group {:?} (expired or never joined); rejoin with member_epoch 0",
                    req.member_id, req.group_id
                ),
            ));
        }
        let group = self.groups.entry(req.group_id.clone()).or_default();
        let mut changed = false;
        // A static member's new process (or the same one rejoining) takes the place its
        // instance id holds: the member's epoch and partitions move to the new member id,
        // with no rebalance (KIP-848 static membership). One still active under another
        // member id keeps it: the newcomer is refused.
        let static_holder = match (&req.instance_id, req.member_epoch) {
            (Some(instance), 0) => group
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                .map(|(id, m)| (id.clone(), m.static_left)),
            _ => None,
        };
        if let Some((holder, left)) = &static_holder {
            if !left && *holder != req.member_id {
                return Err(err(
                    ErrorCode::UnreleasedInstanceId,
                    format!(
                        "instance id {:?} is held by active member {holder:?} of group {:?}",
                        req.instance_id.as_deref().unwrap_or_default(),
                        req.group_id
                    ),
                ));
            }
        }
        let member_id = if let Some((holder, _)) = static_holder {
            let id = if req.member_id.is_empty() {
                member_id()
            } else {
                req.member_id.clone()
            };
            let mut m = group.members.remove(&holder).expect("found above");
            if let Some(target) = group.assignment.remove(&holder) {
                group.assignment.insert(id.clone(), target);
            }
            if m.subscribed != req.subscribed_topic_names {
                m.subscribed = req.subscribed_topic_names.clone();
                changed = true;
            }
            m.client_id = req.client_id.clone();
            m.client_host = client_host;
            m.rack_id = req.rack_id.clone();
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
            }
            m.static_left = false;
            m.last_seen = now;
            tracing::info!(group = %req.group_id, member = %id, replaced = %holder,
                instance = ?req.instance_id, "static member took its place back");
            group.members.insert(id.clone(), m);
            id
        } else if req.member_epoch == 0 {
            if group.members.len() >= GROUP_MEMBERS_MAX {
                return Err(err(
                    ErrorCode::GroupMaxSizeReached,
                    format!("group {:?} has {GROUP_MEMBERS_MAX} members", req.group_id),
                ));
            }
            let id = if req.member_id.is_empty() {
                member_id()
            } else {
                req.member_id.clone()
            };
            if group.members.is_empty() {
                group.assignor = if req.server_assignor.is_empty() {
                    "range".into()
                } else {
                    req.server_assignor.clone()
                };
            }
            group.members.insert(
                id.clone(),
                Member {
                    instance_id: req.instance_id.clone(),
                    rack_id: req.rack_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host,
                    subscribed: req.subscribed_topic_names.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    assigned: Parts::new(),
                    revoking: Parts::new(),
                    revoking_since: None,
                    rebalance_timeout: if req.rebalance_timeout_ms > 0 {
                        Duration::from_millis(req.rebalance_timeout_ms as u64)
                    } else {
                        REBALANCE_TIMEOUT_DEFAULT
                    },
                    last_seen: now,
                    static_left: false,
                },
            );
            tracing::info!(group = %req.group_id, member = %id, "member joined");
            changed = true;
            id
        } else {
            let m = group
                .members
                .get_mut(&req.member_id)
                .expect("checked above");
            // A heartbeat at the epoch before: its answer was lost. Kafka accepts it when
            // what the member owns is still a part of what it has.
            let lost_answer = req.member_epoch == m.previous_epoch
                && owned.as_ref().is_some_and(|o| o.is_subset(&m.assigned));
            if req.member_epoch != m.epoch && !lost_answer {
                return Err(err(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "member {:?} sent epoch {}, its epoch is {}; rejoin with member_epoch 0",
                        req.member_id, req.member_epoch, m.epoch
                    ),
                ));
            }
            m.last_seen = now;
            if !req.subscribed_topic_names.is_empty() && req.subscribed_topic_names != m.subscribed
            {
                m.subscribed = req.subscribed_topic_names.clone();
                changed = true;
            }
            req.member_id.clone()
        };
        // A subscribed topic created or grown since the last assignment.
        if partition_counts(image, &group.subscribed_topics()) != group.partition_counts {
            changed = true;
        }
        if changed {
            group.rebalance(image);
        }
        group.reconcile(&member_id, owned.as_ref(), now);
        let epoch = group.members[&member_id].epoch;
        let assignment = group.assignment_of(image, &member_id, false);
        Ok(ConsumerGroupHeartbeatResponse {
            member_id,
            member_epoch: epoch,
            heartbeat_interval_ms: hb_ms,
            assignment: Some(assignment),
        })
    }

    /// Removes members not heard from within `timeout` and rebalances their groups.
    /// Returns how many expired.
    pub fn expire(&mut self, now: Instant, timeout: Duration, image: &MetadataImage) -> usize {
        let mut expired = 0;
        for (id, g) in self.groups.iter_mut() {
            let before = g.members.len();
            g.members.retain(|mid, m| {
                let alive = now.saturating_duration_since(m.last_seen) < timeout;
                if !alive {
                    tracing::info!(group = %id, member = %mid, "member session expired");
                }
                // Kafka fences a member that does not revoke within its rebalance timeout.
                let revoked_in_time = m
                    .revoking_since
                    .is_none_or(|t| now.saturating_duration_since(t) < m.rebalance_timeout);
                if alive && !revoked_in_time {
                    tracing::info!(group = %id, member = %mid, revoking = ?m.revoking,
                        "member did not revoke its partitions within its rebalance timeout");
                }
                alive && revoked_in_time
            });
            if g.members.len() != before {
                expired += before - g.members.len();
                g.rebalance(image);
                self.consumer_dirty.insert(id.clone());
            }
        }
        expired
    }

    /// OffsetCommit, first half: fences the committer (a member at its current epoch, or an
    /// administrator — member "" and epoch -1 — while the group has no members) and
    /// validates each partition. As in Kafka, partitions are not checked against the
    /// member's assignment: a member revoking partitions keeps its epoch, so it can commit
    /// them until it reports them released.
    pub fn prepare_commit(
        &self,
        req: &OffsetCommitRequest,
        image: &MetadataImage,
    ) -> Result<CommitPlan, Status> {
        let group = self.groups.get(&req.group_id);
        let consumer_members = group.is_some_and(|g| !g.members.is_empty());
        let classic_members = group.is_some_and(|g| g.classic.has_members());
        if consumer_members {
            if req.member_id.is_empty() && req.member_epoch < 0 {
                return Err(err(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group {:?} has active members; offsets can only be reset while it is empty",
                        req.group_id
                    ),
                ));
            }
            let Some(m) = group.and_then(|g| g.members.get(&req.member_id)) else {
                return Err(err(
                    ErrorCode::UnknownMemberId,
                    format!(
                        "member {:?} is not in group {:?}",
                        req.member_id, req.group_id
                    ),
                ));
            };
            if req.member_epoch != m.epoch {
                let code = if req.member_epoch < m.epoch {
                    ErrorCode::StaleMemberEpoch
                } else {
                    ErrorCode::FencedMemberEpoch
                };
                return Err(err(
                    code,
                    format!(
                        "member {:?} committed with epoch {}, its epoch is {}",
                        req.member_id, req.member_epoch, m.epoch
                    ),
                ));
            }
        } else if classic_members {
            // Classic groups: the member's generation (in member_epoch); the assignment is
            // the client's, so no ownership check.
            group
                .expect("has members")
                .classic
                .check_commit(
                    &req.member_id,
                    req.group_instance_id.as_deref(),
                    req.member_epoch,
                )
                .map_err(classic_status)?;
        } else if req.member_epoch >= 0 {
            // No members: only an epoch/generation of -1 commits. (Kafka answers a group it
            // does not know with ILLEGAL_GENERATION; clients rejoin on either code, and
            // UNKNOWN_MEMBER_ID is what Sluice's own consumer acts on.)
            return Err(err(
                ErrorCode::UnknownMemberId,
                format!(
                    "member {:?} is not in group {:?}, which has no members; commit with generation -1",
                    req.member_id, req.group_id
                ),
            ));
        }
        let mut plan = CommitPlan {
            results: Vec::with_capacity(req.partitions.len()),
            writes: Vec::new(),
            accepted: Vec::new(),
        };
        for c in &req.partitions {
            let result = |code: ErrorCode, msg: String| OffsetCommitResult {
                topic: c.topic.clone(),
                partition: c.partition,
                error_code: code as i32,
                error_message: msg,
            };
            let exists = image
                .topic(&c.topic)
                .is_some_and(|t| c.partition >= 0 && (c.partition as usize) < t.partitions.len());
            let r = if !exists {
                result(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("{}-{} does not exist", c.topic, c.partition),
                )
            } else if c.committed_offset < 0 {
                result(
                    ErrorCode::InvalidRequest,
                    format!(
                        "committed offset {} for {}-{} is negative",
                        c.committed_offset, c.topic, c.partition
                    ),
                )
            } else if c.metadata.len() > COMMIT_METADATA_BYTES_MAX {
                result(
                    ErrorCode::OffsetMetadataTooLarge,
                    format!(
                        "metadata of {} bytes exceeds {COMMIT_METADATA_BYTES_MAX}",
                        c.metadata.len()
                    ),
                )
            } else {
                let committed = Committed {
                    offset: c.committed_offset,
                    leader_epoch: c.committed_leader_epoch.unwrap_or(-1),
                    metadata: c.metadata.clone(),
                };
                plan.writes.push((
                    offset_key(&req.group_id, &c.topic, c.partition),
                    Some(offset_value(&committed)),
                ));
                plan.accepted
                    .push((TopicPartition::new(c.topic.clone(), c.partition), committed));
                result(ErrorCode::None, String::new())
            };
            plan.results.push(r);
        }
        Ok(plan)
    }

    /// OffsetCommit, second half: the records of `accepted` were committed at offsets
    /// `first_offset..` of the offsets partition.
    pub fn apply_commit(
        &mut self,
        group: &str,
        accepted: Vec<(TopicPartition, Committed)>,
        first_offset: i64,
    ) {
        let g = self.groups.entry(group.to_string()).or_default();
        for (i, (tp, c)) in accepted.into_iter().enumerate() {
            let at = first_offset + i as i64;
            match g.offsets.get(&tp) {
                // A later write already applied (completions may arrive out of order).
                Some((_, newer)) if *newer > at => {}
                _ => {
                    g.committed_at.insert(tp.clone(), Instant::now());
                    g.offsets.insert(tp, (c, at));
                }
            }
        }
    }

    /// Offsets to expire (Kafka's `offsets.retention.minutes`): of groups with no members,
    /// those last committed `retention` or more before `now`; by group.
    pub fn expired_offsets(
        &self,
        now: Instant,
        retention: Duration,
    ) -> Vec<(String, Vec<(String, i32)>)> {
        let mut out = Vec::new();
        for (id, g) in &self.groups {
            if !g.has_no_members() {
                continue;
            }
            let expired: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|tp| {
                    g.committed_at
                        .get(*tp)
                        .is_none_or(|at| now.saturating_duration_since(*at) >= retention)
                })
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect();
            if !expired.is_empty() {
                out.push((id.clone(), expired));
            }
        }
        out.sort();
        out
    }

    /// OffsetFetch: committed offsets (-1 where none); every committed one when no
    /// partitions are named.
    pub fn fetch(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        let group = self.groups.get(&req.group_id);
        let result = |t: &str, p: i32, c: Option<&Committed>| OffsetFetchResult {
            topic: t.to_string(),
            partition: p,
            committed_offset: c.map_or(-1, |c| c.offset),
            committed_leader_epoch: c.map_or(-1, |c| c.leader_epoch),
            metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
            error_code: 0,
            error_message: String::new(),
        };
        let results = if req.partitions.is_empty() {
            group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|(tp, (c, _))| result(&tp.topic, tp.partition, Some(c)))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            req.partitions
                .iter()
                .map(|tp| {
                    let c = group
                        .and_then(|g| {
                            g.offsets
                                .get(&TopicPartition::new(tp.topic.clone(), tp.partition))
                        })
                        .map(|(c, _)| c);
                    result(&tp.topic, tp.partition, c)
                })
                .collect()
        };
        OffsetFetchResponse { results }
    }

    /// ListGroups entries.
    pub fn list(&self) -> Vec<ListedGroup> {
        self.groups
            .iter()
            .map(|(id, g)| ListedGroup {
                group_id: id.clone(),
                protocol_type: g.classic.protocol_type().unwrap_or("consumer").to_string(),
                group_state: g.state() as i32,
            })
            .collect()
    }

    /// DescribeGroups for one group.
    pub fn describe(&self, group_id: &str, image: &MetadataImage) -> DescribedGroup {
        let Some(g) = self.groups.get(group_id) else {
            return DescribedGroup {
                group_id: group_id.to_string(),
                group_state: GroupState::Dead as i32,
                error_code: ErrorCode::GroupIdNotFound as i32,
                error_message: format!("group {group_id:?} does not exist"),
                ..Default::default()
            };
        };
        if !g.classic.is_empty() {
            return describe_classic(group_id, g, image);
        }
        let members = g
            .members
            .iter()
            .map(|(id, m)| GroupMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.subscribed.clone(),
                assignment: Some(g.assignment_of(image, id, false)),
                target_assignment: Some(g.assignment_of(image, id, true)),
            })
            .collect();
        DescribedGroup {
            group_id: group_id.to_string(),
            error_code: 0,
            error_message: String::new(),
            group_state: g.state() as i32,
            protocol_type: "consumer".into(),
            group_epoch: g.epoch,
            assignment_epoch: g.epoch,
            assignor_name: g.assignor.clone(),
            members,
            group_type: "consumer".into(),
        }
    }

    /// DeleteGroups, first half: only an empty group; the tombstones of its offsets.
    pub fn prepare_delete(&self, group_id: &str) -> Result<Vec<(Bytes, Option<Bytes>)>, Status> {
        let Some(g) = self.groups.get(group_id) else {
            return Err(err(
                ErrorCode::GroupIdNotFound,
                format!("group {group_id:?} does not exist"),
            ));
        };
        if !g.has_no_members() {
            return Err(err(
                ErrorCode::NonEmptyGroup,
                format!(
                    "group {group_id:?} has {} active members",
                    g.members.len() + g.classic.describe().len()
                ),
            ));
        }
        let mut tombstones: Vec<(Bytes, Option<Bytes>)> = g
            .offsets
            .keys()
            .map(|tp| (offset_key(group_id, &tp.topic, tp.partition), None))
            .collect();
        if self.classic_kept.contains_key(group_id) {
            tombstones.push((group_key(group_id), None));
        }
        if self.consumer_kept.contains_key(group_id) {
            tombstones.push((consumer_group_key(group_id), None));
        }
        Ok(tombstones)
    }

    /// OffsetDelete (KIP-496), first half: for each wanted partition NONE, or
    /// GROUP_SUBSCRIBED_TO_TOPIC when an active member subscribes to its topic (its offset is
    /// kept); and the tombstones of the committed offsets to delete.
    #[allow(clippy::type_complexity)]
    pub fn prepare_offset_delete(
        &self,
        group_id: &str,
        wanted: &[(String, i32)],
    ) -> Result<(Vec<(String, i32, ErrorCode)>, Vec<(Bytes, Option<Bytes>)>), Status> {
        let Some(g) = self.groups.get(group_id) else {
            return Err(err(
                ErrorCode::GroupIdNotFound,
                format!("group {group_id:?} does not exist"),
            ));
        };
        let mut results = Vec::new();
        let mut tombstones = Vec::new();
        for (topic, partition) in wanted {
            if g.is_subscribed_to(topic) {
                results.push((topic.clone(), *partition, ErrorCode::GroupSubscribedToTopic));
                continue;
            }
            let tp = TopicPartition::new(topic.clone(), *partition);
            if g.offsets.contains_key(&tp) {
                tombstones.push((offset_key(group_id, topic, *partition), None));
            }
            results.push((topic.clone(), *partition, ErrorCode::None));
        }
        Ok((results, tombstones))
    }

    /// OffsetDelete, second half: the tombstones of `deleted` were committed from
    /// `first_offset` on; offsets written before them are gone, and so is a vacant group.
    pub fn apply_offset_delete(
        &mut self,
        group_id: &str,
        deleted: &[(String, i32)],
        first_offset: i64,
    ) {
        if let Some(g) = self.groups.get_mut(group_id) {
            for (topic, partition) in deleted {
                let tp = TopicPartition::new(topic.clone(), *partition);
                if g.offsets.get(&tp).is_some_and(|(_, at)| *at < first_offset) {
                    g.offsets.remove(&tp);
                    g.committed_at.remove(&tp);
                }
            }
        }
        self.forget_vacant();
    }

    /// Drops groups left with nothing (no members, no offsets); those whose membership is
    /// kept in `__consumer_offsets` get their tombstones at the next writes.
    fn forget_vacant(&mut self) {
        let (consumer_kept, classic_kept) = (&self.consumer_kept, &self.classic_kept);
        let (consumer_dirty, classic_dirty) = (&mut self.consumer_dirty, &mut self.classic_dirty);
        self.groups.retain(|id, g| {
            let keep = !g.is_vacant();
            if !keep {
                if consumer_kept.contains_key(id) {
                    consumer_dirty.insert(id.clone());
                }
                if classic_kept.contains_key(id) {
                    classic_dirty.insert(id.clone());
                }
            }
            keep
        });
    }

    /// DeleteGroups, second half: tombstones were committed from `first_offset` on; offsets
    /// written before them are gone, and so is the group if it is still empty.
    pub fn apply_delete(&mut self, group_id: &str, first_offset: i64) {
        self.classic_kept.remove(group_id);
        self.consumer_kept.remove(group_id);
        if let Some(g) = self.groups.get_mut(group_id) {
            g.offsets.retain(|_, (_, at)| *at >= first_offset);
            let kept = &g.offsets;
            g.committed_at.retain(|tp, _| kept.contains_key(tp));
            if g.is_vacant() {
                self.groups.remove(group_id);
            }
        }
    }

    /// The group's classic membership, created empty if need be; a group whose members
    /// use the consumer protocol (KIP-848) is refused.
    fn classic_group(&mut self, group_id: &str) -> Result<&mut ClassicGroup, ClassicError> {
        let g = self.groups.entry(group_id.to_string()).or_default();
        if !g.members.is_empty() {
            return Err(ClassicError {
                code: classic::code::INCONSISTENT_GROUP_PROTOCOL,
                message: format!(
                    "group {group_id:?} has members of the consumer protocol (KIP-848); a classic member cannot join it"
                ),
            });
        }
        Ok(&mut g.classic)
    }

    /// JoinGroup (classic protocol).
    pub fn classic_join(
        &mut self,
        group_id: &str,
        req: classic::JoinRequest,
        now: Instant,
        settings: &ClassicSettings,
    ) -> (classic::Answer<classic::JoinResponse>, Vec<Completed>) {
        let member = req.member_id.clone();
        self.classic_dirty.insert(group_id.to_string());
        match self.classic_group(group_id) {
            Ok(g) => g.join(req, now, settings),
            Err(e) => (
                classic::Answer::Now(classic::JoinResponse {
                    error: Some(e),
                    generation_id: -1,
                    member_id: member,
                    ..Default::default()
                }),
                Vec::new(),
            ),
        }
    }

    /// SyncGroup (classic protocol).
    pub fn classic_sync(
        &mut self,
        group_id: &str,
        req: classic::SyncRequest,
        now: Instant,
    ) -> (classic::Answer<classic::SyncResponse>, Vec<Completed>) {
        self.classic_dirty.insert(group_id.to_string());
        match self.classic_group(group_id) {
            Ok(g) => g.sync(req, now),
            Err(e) => (
                classic::Answer::Now(classic::SyncResponse {
                    error: Some(e),
                    ..Default::default()
                }),
                Vec::new(),
            ),
        }
    }

    /// Heartbeat (classic protocol).
    pub fn classic_heartbeat(
        &mut self,
        group_id: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ClassicError> {
        self.classic_group(group_id)?
            .heartbeat(member, instance, generation, now)
    }

    /// LeaveGroup (classic protocol): one result per member, in order.
    pub fn classic_leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
        settings: &ClassicSettings,
    ) -> (Vec<Result<(), ClassicError>>, Vec<Completed>) {
        self.classic_dirty.insert(group_id.to_string());
        let g = match self.classic_group(group_id) {
            Ok(g) => g,
            Err(e) => return (members.iter().map(|_| Err(e.clone())).collect(), Vec::new()),
        };
        for (m, instance) in members {
            tracing::info!(group = %group_id, member = %m, ?instance, "classic member leaves");
        }
        g.leave_many(members, now, settings)
    }

    /// Time passes for every classic group: session expiry and rebalance timeouts. Also
    /// forgets groups left with nothing (no members, no offsets).
    pub fn classic_tick(
        &mut self,
        now: Instant,
        settings: &ClassicSettings,
    ) -> Vec<(String, Completed)> {
        let mut done = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            let before = (g.classic.state(), g.classic.generation());
            done.extend(
                g.classic
                    .tick(now, settings)
                    .into_iter()
                    .map(|c| (id.clone(), c)),
            );
            if (g.classic.state(), g.classic.generation()) != before {
                self.classic_dirty.insert(id.clone());
            }
        }
        self.forget_vacant();
        done
    }

    /// The records that keep the memberships the last calls changed: the consumer-protocol
    /// groups' (see `take_consumer_writes`), and the classic ones': a group that reached
    /// Stable in a new generation, or Empty, is written; one that is gone (left with
    /// nothing) is tombstoned. The actor appends them (Kafka writes GroupMetadata at the
    /// same points); if one is lost, a failover costs a rebalance, nothing more.
    pub fn take_membership_writes(&mut self) -> Vec<(Bytes, Option<Bytes>)> {
        let mut writes = self.take_consumer_writes();
        for id in std::mem::take(&mut self.classic_dirty) {
            let snap = self.groups.get(&id).and_then(|g| g.classic.snapshot());
            match snap {
                Some(snap) => {
                    let mark = (snap.generation, !snap.members.is_empty());
                    if self.classic_kept.get(&id) != Some(&mark) {
                        self.classic_kept.insert(id.clone(), mark);
                        writes.push((group_key(&id), Some(group_value(&snap))));
                    }
                }
                None if !self.groups.contains_key(&id) && self.classic_kept.contains_key(&id) => {
                    self.classic_kept.remove(&id);
                    writes.push((group_key(&id), None));
                }
                None => {}
            }
        }
        writes
    }

    /// The records that keep the consumer-protocol groups the last calls may have changed:
    /// the group's state when it differs from the last one kept, a tombstone when the group
    /// is gone. Written before the next request of the shard is served, so a member's
    /// epoch and partitions survive a coordinator failover (a lost record costs the members
    /// a rejoin, never offsets).
    fn take_consumer_writes(&mut self) -> Vec<(Bytes, Option<Bytes>)> {
        let mut writes = Vec::new();
        for id in std::mem::take(&mut self.consumer_dirty) {
            match self.groups.get(&id).and_then(|g| g.consumer_snapshot()) {
                Some(snap) => {
                    let value = consumer_group_value(&snap);
                    if self.consumer_kept.get(&id) != Some(&value) {
                        self.consumer_kept.insert(id.clone(), value.clone());
                        writes.push((consumer_group_key(&id), Some(value)));
                    }
                }
                None if self.consumer_kept.contains_key(&id) && !self.groups.contains_key(&id) => {
                    self.consumer_kept.remove(&id);
                    writes.push((consumer_group_key(&id), None));
                }
                None => {}
            }
        }
        writes
    }

    /// A group as Kafka's DescribeGroups shows it: state name, protocol type, protocol and
    /// members with consumer-protocol metadata and assignment bytes. `None`: no such group.
    pub fn kafka_view(&self, group_id: &str, image: &MetadataImage) -> Option<KafkaGroupView> {
        let g = self.groups.get(group_id)?;
        if !g.classic.is_empty() {
            // Kafka's `describeNoMetadata` outside Stable: no protocol, no member bytes.
            let stable = g.classic.state() == classic::ClassicState::Stable;
            let mut members = g.classic.describe();
            if !stable {
                for m in &mut members {
                    m.metadata = Bytes::new();
                    m.assignment = Bytes::new();
                }
            }
            return Some(KafkaGroupView {
                group_id: group_id.to_string(),
                group_type: "classic",
                state: g.classic.state().name(),
                protocol_type: g.classic.protocol_type().unwrap_or("consumer").to_string(),
                protocol: if stable {
                    g.classic.protocol_name().unwrap_or_default().to_string()
                } else {
                    String::new()
                },
                members,
            });
        }
        let state = match g.state() {
            GroupState::Empty => "Empty",
            GroupState::Stable => "Stable",
            GroupState::Assigning => "Assigning",
            _ => "Reconciling",
        };
        let members = g
            .members
            .iter()
            .map(|(id, m)| {
                let parts: Vec<(String, Vec<i32>)> = g
                    .assignment_of(image, id, false)
                    .topic_partitions
                    .into_iter()
                    .map(|tp| (tp.topic, tp.partitions))
                    .collect();
                classic::DescribedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: Bytes::new(),
                    assignment: super::consumer_protocol::encode_assignment(&parts),
                }
            })
            .collect();
        Some(KafkaGroupView {
            group_id: group_id.to_string(),
            // A group with offsets only is Kafka's "classic" Empty group.
            group_type: if g.members.is_empty() {
                "classic"
            } else {
                "consumer"
            },
            state,
            protocol_type: "consumer".into(),
            protocol: if g.members.is_empty() {
                String::new()
            } else {
                g.assignor.clone()
            },
            members,
        })
    }

    /// Every group as Kafka's ListGroups shows it.
    pub fn kafka_list(&self, image: &MetadataImage) -> Vec<KafkaGroupView> {
        let mut out: Vec<KafkaGroupView> = self
            .groups
            .keys()
            .filter_map(|id| self.kafka_view(id, image))
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// `(group, topic, partition, committed offset)` of every committed offset.
    pub fn committed(&self) -> impl Iterator<Item = (&str, &str, i32, i64)> {
        self.groups.iter().flat_map(|(g, grp)| {
            grp.offsets
                .iter()
                .map(move |(tp, (c, _))| (g.as_str(), tp.topic.as_str(), tp.partition, c.offset))
        })
    }
}

#[cfg(test)]
mod tests;

/// A group as Kafka's DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaGroupView {
    pub group_id: String,
    /// "classic" or "consumer" (KIP-848), ListGroups v5's group type.
    pub group_type: &'static str,
    /// Kafka's state name ("Stable", "PreparingRebalance", …).
    pub state: &'static str,
    pub protocol_type: String,
    /// The chosen protocol (classic) or the server assignor (consumer protocol).
    pub protocol: String,
    pub members: Vec<classic::DescribedMember>,
}

/// A classic protocol error as the status the gRPC side and OffsetCommit use.
fn classic_status(e: ClassicError) -> Status {
    let code = ErrorCode::try_from(e.code as i32).unwrap_or(ErrorCode::UnknownServerError);
    err(code, e.message)
}

/// DescribeGroups (gRPC) of a classic group: members with the topics of their subscription
/// and the partitions of their assignment, read from the consumer-protocol bytes.
fn describe_classic(group_id: &str, g: &Group, image: &MetadataImage) -> DescribedGroup {
    let members = g
        .classic
        .describe()
        .into_iter()
        .map(|m| {
            let assignment = Assignment {
                topic_partitions: super::consumer_protocol::assigned_partitions(&m.assignment)
                    .into_iter()
                    .map(|(topic, partitions)| TopicPartitions {
                        topic_id: image
                            .topic(&topic)
                            .map(|t| t.id.to_string())
                            .unwrap_or_default(),
                        topic,
                        partitions,
                    })
                    .collect(),
            };
            GroupMember {
                member_id: m.member_id,
                instance_id: m.instance_id,
                rack_id: None,
                member_epoch: g.classic.generation(),
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topic_names: super::consumer_protocol::subscribed_topics(&m.metadata),
                assignment: Some(assignment.clone()),
                target_assignment: Some(assignment),
            }
        })
        .collect();
    DescribedGroup {
        group_id: group_id.to_string(),
        error_code: 0,
        error_message: String::new(),
        group_state: g.state() as i32,
        protocol_type: g.classic.protocol_type().unwrap_or("consumer").to_string(),
        group_epoch: g.classic.generation(),
        assignment_epoch: g.classic.generation(),
        assignor_name: g.classic.protocol_name().unwrap_or_default().to_string(),
        members,
        group_type: "classic".into(),
    }
}
