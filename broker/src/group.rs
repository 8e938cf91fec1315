//! The consumer group coordinator (DESIGN §7, KIP-848 style).
//!
//! ```text
//!   group g ──hash(g) mod N──► partition p of __consumer_offsets ──leader──► coordinator
//!   member ──ConsumerGroupHeartbeat──► join / heartbeat / leave ──► group epoch bump,
//!                                      server-side assignment (range | roundrobin)
//!   member ──OffsetCommit(member epoch)──► record in p (acks=all) ──► offsets cache
//!   new leader of p ──► replays p from its log start: committed offsets survive failover
//! ```
//!
//! Membership lives in memory on the coordinator; committed offsets are records in the
//! offsets partition, replicated like any data. When coordination moves (the partition's
//! leader changes) the new coordinator loads the offsets from its log and members, whose
//! ids it does not know, rejoin.
//!
//! Commits are fenced: a member may commit only with its current member epoch and only
//! partitions assigned to it at that epoch, so a zombie (expired, or one whose partitions
//! moved) cannot move a committed offset behind what the new owner committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_proto::status::error_status;
use sluice_proto::v1::*;
use sluice_storage::RecordBatchBuilder;
use tonic::Status;

use crate::assign;
use crate::node::BrokerNode;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Most members in one group (Kafka's `group.consumer.max.size` default is unlimited; a
/// bound keeps one group from exhausting the coordinator).
pub const GROUP_MEMBERS_MAX: usize = 1000;
/// Longest commit metadata string (Kafka's `offset.metadata.max.bytes`).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;

const KEY_OFFSET_COMMIT: u16 = 1;

/// Coordinator settings (broker config keys in the docs).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_replication_factor: i32,
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
}

/// Kafka's `Utils.abs(groupId.hashCode()) % N` over Java's UTF-16 `String.hashCode`.
pub fn partition_for_group(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    // Kafka's Utils.abs: Math.abs, except Integer.MIN_VALUE maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: String,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    subscribed: Vec<String>,
    /// Epoch last given to the member (its assignment is the group's at that epoch).
    epoch: i32,
    last_seen: Instant,
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
    offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.values().all(|m| m.epoch == self.epoch) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    fn owns(&self, member: &str, topic: &str, partition: i32) -> bool {
        self.assignment
            .get(member)
            .and_then(|ts| ts.get(topic))
            .is_some_and(|ps| ps.contains(&partition))
    }
}

/// The groups of one offsets partition, valid for one leader epoch of it.
struct Shard {
    leader_epoch: i32,
    groups: HashMap<String, Group>,
}

/// The coordinator of every group whose offsets partition this broker leads.
pub struct GroupCoordinator {
    node: Arc<BrokerNode>,
    settings: GroupSettings,
    shards: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Shard>>>>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> Status {
    error_status(code, msg.into(), None)
}

fn validate_group_id(group: &str) -> Result<(), Status> {
    if group.is_empty() {
        return Err(err(ErrorCode::InvalidGroupId, "group id is empty"));
    }
    if group.len() > GROUP_ID_BYTES_MAX {
        return Err(err(
            ErrorCode::InvalidGroupId,
            format!(
                "group id is {} bytes, the maximum is {GROUP_ID_BYTES_MAX}",
                group.len()
            ),
        ));
    }
    Ok(())
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut k = BytesMut::with_capacity(8 + group.len() + topic.len());
    k.put_u16(KEY_OFFSET_COMMIT);
    k.put_u16(group.len() as u16);
    k.put_slice(group.as_bytes());
    k.put_u16(topic.len() as u16);
    k.put_slice(topic.as_bytes());
    k.put_i32(partition);
    k.freeze()
}

fn parse_offset_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut r = k;
    let take = |r: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (h, t) = r.split_at_checked(n)?;
        *r = t;
        Some(h.to_vec())
    };
    let u16_of = |v: Vec<u8>| u16::from_be_bytes([v[0], v[1]]) as usize;
    if u16_of(take(&mut r, 2)?) != KEY_OFFSET_COMMIT as usize {
        return None;
    }
    let n = u16_of(take(&mut r, 2)?);
    let group = String::from_utf8(take(&mut r, n)?).ok()?;
    let n = u16_of(take(&mut r, 2)?);
    let topic = String::from_utf8(take(&mut r, n)?).ok()?;
    let p = take(&mut r, 4)?;
    Some((group, topic, i32::from_be_bytes(p.try_into().ok()?)))
}

fn offset_value(c: &Committed) -> Bytes {
    let mut v = BytesMut::with_capacity(16 + c.metadata.len());
    v.put_i64(c.offset);
    v.put_i32(c.leader_epoch);
    v.put_slice(c.metadata.as_bytes());
    v.freeze()
}

fn parse_offset_value(v: &[u8]) -> Option<Committed> {
    let (head, meta) = v.split_at_checked(12)?;
    Some(Committed {
        offset: i64::from_be_bytes(head[..8].try_into().ok()?),
        leader_epoch: i32::from_be_bytes(head[8..12].try_into().ok()?),
        metadata: String::from_utf8_lossy(meta).into_owned(),
    })
}

fn member_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl GroupCoordinator {
    /// A coordinator for `node`.
    pub fn new(node: Arc<BrokerNode>, settings: GroupSettings) -> Arc<Self> {
        Arc::new(GroupCoordinator {
            node,
            settings,
            shards: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    fn offsets_partitions(&self) -> i32 {
        self.node
            .image()
            .topic(OFFSETS_TOPIC)
            .map_or(self.settings.offsets_partitions, |t| {
                t.partitions.len() as i32
            })
    }

    /// FindCoordinator: creates the offsets topic on first use, then names the leader of
    /// the group's partition (COORDINATOR_NOT_AVAILABLE, retriable, until it has one).
    pub async fn find_coordinator(&self, group: &str) -> Result<FindCoordinatorResponse, Status> {
        validate_group_id(group)?;
        let image = self.node.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            self.create_offsets_topic().await?;
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC} is being created; retry"),
            ));
        };
        let p = partition_for_group(group, topic.partitions.len() as i32);
        let leader = topic.partitions[p as usize].leader;
        let Some(b) = image.brokers.get(&leader) else {
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{p} has no leader right now; retry"),
            ));
        };
        Ok(FindCoordinatorResponse {
            coordinator: Some(BrokerEndpoint {
                broker_id: leader,
                host: b.endpoint.host.clone(),
                port: b.endpoint.port as i32,
                rack: None,
            }),
            partition: p,
        })
    }

    async fn create_offsets_topic(&self) -> Result<(), Status> {
        let live = self.node.image().brokers.len() as i32;
        let rf = self.settings.offsets_replication_factor;
        if live < rf {
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "{OFFSETS_TOPIC} needs offsets.topic.replication.factor={rf} brokers, {live} are registered"
                ),
            ));
        }
        let req = CreateTopicsRequest {
            topics: vec![TopicSpec {
                name: OFFSETS_TOPIC.into(),
                num_partitions: self.settings.offsets_partitions,
                replication_factor: rf,
                configs: HashMap::from([
                    ("cleanup.policy".to_string(), "delete".to_string()),
                    ("retention.ms".to_string(), "-1".to_string()),
                    ("segment.bytes".to_string(), (100 << 20).to_string()),
                ]),
            }],
            validate_only: false,
        };
        for addr in &self.node.config.controllers {
            let mut c = sluice_proto::v1::admin_client::AdminClient::new(self.node.channel(addr));
            if c.create_topics(req.clone()).await.is_ok() {
                break;
            }
        }
        Ok(())
    }

    /// The (possibly not yet loaded) shard of offsets partition `p`.
    fn shard_slot(&self, p: i32) -> Arc<tokio::sync::Mutex<Shard>> {
        self.shards
            .lock()
            .expect("shards lock")
            .entry(p)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Shard {
                    leader_epoch: -1,
                    groups: HashMap::new(),
                }))
            })
            .clone()
    }

    /// The shard of `group`, loaded from the log if this broker just became its leader;
    /// NOT_COORDINATOR (with the right broker as hint) when another broker leads it.
    async fn shard(&self, group: &str) -> Result<(i32, Arc<tokio::sync::Mutex<Shard>>), Status> {
        validate_group_id(group)?;
        let n = self.offsets_partitions();
        let p = partition_for_group(group, n);
        let not_coordinator = || {
            let image = self.node.image();
            let hint = image
                .topic(OFFSETS_TOPIC)
                .and_then(|t| t.partitions.get(p as usize))
                .and_then(|ps| {
                    let b = image.brokers.get(&ps.leader)?;
                    Some(LeaderHint {
                        leader_id: ps.leader,
                        host: b.endpoint.host.clone(),
                        port: b.endpoint.port as i32,
                        leader_epoch: ps.leader_epoch,
                    })
                });
            error_status(
                ErrorCode::NotCoordinator,
                format!(
                    "broker {} is not the coordinator of group {group:?} ({OFFSETS_TOPIC}-{p})",
                    self.node.id()
                ),
                hint,
            )
        };
        let Some(part) = self.node.partition(OFFSETS_TOPIC, p) else {
            return Err(not_coordinator());
        };
        let o = part.offsets();
        if !o.is_leader {
            return Err(not_coordinator());
        }
        let leader_epoch = o.leader_epoch;
        let shard = self.shard_slot(p);
        let mut s = shard.lock().await;
        if s.leader_epoch != leader_epoch {
            s.groups = self.load(p).await?;
            s.leader_epoch = leader_epoch;
        }
        drop(s);
        Ok((p, shard))
    }

    /// Replays offsets partition `p` from the log start to the log end.
    async fn load(&self, p: i32) -> Result<HashMap<String, Group>, Status> {
        let part = self
            .node
            .partition(OFFSETS_TOPIC, p)
            .ok_or_else(|| err(ErrorCode::NotCoordinator, "offsets partition moved"))?;
        let o = part.offsets();
        let end = o.log_end_offset;
        let mut at = o.log_start_offset;
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut records = 0usize;
        while at < end {
            let bytes = part
                .read(at, 1 << 20, end)
                .await
                .map_err(|e| err(ErrorCode::CoordinatorLoadInProgress, e.to_string()))?;
            if bytes.is_empty() {
                break;
            }
            for batch in sluice_storage::batch::batches(bytes) {
                let batch =
                    batch.map_err(|e| err(ErrorCode::CoordinatorLoadInProgress, e.to_string()))?;
                at = at.max(batch.header().next_offset());
                for r in batch.records() {
                    let r =
                        r.map_err(|e| err(ErrorCode::CoordinatorLoadInProgress, e.to_string()))?;
                    records += 1;
                    let Some((g, t, pi)) = r.key.as_deref().and_then(parse_offset_key) else {
                        continue;
                    };
                    let group = groups.entry(g).or_default();
                    match r.value.as_deref().and_then(parse_offset_value) {
                        Some(c) => {
                            group.offsets.insert((t, pi), c);
                        }
                        None => {
                            group.offsets.remove(&(t, pi));
                        }
                    }
                }
            }
        }
        groups.retain(|_, g| !g.offsets.is_empty());
        tracing::info!(
            partition = p,
            records,
            groups = groups.len(),
            "loaded consumer groups"
        );
        Ok(groups)
    }

    /// Appends offset records to the offsets partition with acks=all.
    async fn append(&self, p: i32, records: Vec<(Bytes, Option<Bytes>)>) -> Result<(), Status> {
        let mut b = RecordBatchBuilder::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (k, v) in &records {
            b.append(now, Some(k), v.as_deref(), &[]);
        }
        crate::data::DataPlane::new(self.node.clone())
            .produce_one(ProduceRequest {
                correlation_id: 0,
                topic: OFFSETS_TOPIC.into(),
                partition: p,
                acks: Some(-1),
                timeout_ms: 10_000,
                payload: Some(produce_request::Payload::RecordBatch(b.build())),
            })
            .await
            .map(|_| ())
    }

    fn partition_counts(&self, topics: &[String]) -> BTreeMap<String, i32> {
        let image = self.node.image();
        let mut out = BTreeMap::new();
        for t in topics {
            if let Some(ti) = image.topic(t) {
                out.insert(t.clone(), ti.partitions.len() as i32);
            }
        }
        out
    }

    fn rebalance(&self, g: &mut Group) {
        let subs: BTreeMap<String, Vec<String>> = g
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        let mut topics: Vec<String> = subs.values().flatten().cloned().collect();
        topics.sort();
        topics.dedup();
        g.partition_counts = self.partition_counts(&topics);
        g.epoch += 1;
        g.assignment = assign::assign(&g.assignor, &subs, &g.partition_counts)
            .expect("assignor validated on join");
    }

    fn assignment_of(&self, g: &Group, member: &str) -> Assignment {
        let image = self.node.image();
        let topic_partitions = g
            .assignment
            .get(member)
            .map(|ts| {
                ts.iter()
                    .map(|(t, ps)| TopicPartitions {
                        topic: t.clone(),
                        topic_id: image
                            .topic(t)
                            .map(|ti| ti.id.to_string())
                            .unwrap_or_default(),
                        partitions: ps.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Assignment { topic_partitions }
    }

    /// ConsumerGroupHeartbeat: join (epoch 0), heartbeat, leave (epoch -1 / -2).
    pub async fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        client_host: String,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        let (_, shard) = self.shard(&req.group_id).await?;
        let mut s = shard.lock().await;
        let hb_ms = self.settings.heartbeat_interval.as_millis() as i32;
        if req.member_epoch < 0 {
            // Leave.
            if let Some(g) = s.groups.get_mut(&req.group_id) {
                if g.members.remove(&req.member_id).is_some() {
                    tracing::info!(group = %req.group_id, member = %req.member_id, "member left");
                    self.rebalance(g);
                }
            }
            return Ok(ConsumerGroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: hb_ms,
                assignment: None,
            });
        }
        let group = s.groups.entry(req.group_id.clone()).or_default();
        let mut changed = false;
        let member_id = if req.member_epoch == 0 {
            if req.subscribed_topic_names.is_empty() {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "a joining member must subscribe to at least one topic",
                ));
            }
            if !assign::ASSIGNORS.contains(&req.server_assignor.as_str())
                && !req.server_assignor.is_empty()
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
                    client_host: client_host.clone(),
                    subscribed: req.subscribed_topic_names.clone(),
                    epoch: 0,
                    last_seen: Instant::now(),
                },
            );
            tracing::info!(group = %req.group_id, member = %id, "member joined");
            changed = true;
            id
        } else {
            let Some(m) = group.members.get_mut(&req.member_id) else {
                return Err(err(
                    ErrorCode::UnknownMemberId,
                    format!(
                        "member {:?} is not in group {:?} (expired or never joined); rejoin with member_epoch 0",
                        req.member_id, req.group_id
                    ),
                ));
            };
            if req.member_epoch != m.epoch {
                return Err(err(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "member {:?} sent epoch {}, its epoch is {}; rejoin with member_epoch 0",
                        req.member_id, req.member_epoch, m.epoch
                    ),
                ));
            }
            m.last_seen = Instant::now();
            if !req.subscribed_topic_names.is_empty() && req.subscribed_topic_names != m.subscribed
            {
                m.subscribed = req.subscribed_topic_names.clone();
                changed = true;
            }
            req.member_id.clone()
        };
        // A subscribed topic created or grown since the last assignment.
        let mut topics: Vec<String> = group
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        topics.sort();
        topics.dedup();
        if self.partition_counts(&topics) != group.partition_counts {
            changed = true;
        }
        if changed {
            self.rebalance(group);
        }
        let epoch = group.epoch;
        let m = group.members.get_mut(&member_id).expect("present");
        m.epoch = epoch;
        let assignment = self.assignment_of(group, &member_id);
        Ok(ConsumerGroupHeartbeatResponse {
            member_id,
            member_epoch: epoch,
            heartbeat_interval_ms: hb_ms,
            assignment: Some(assignment),
        })
    }

    /// OffsetCommit: by a member at its current epoch for its own partitions, or by an
    /// administrator (member "" / epoch -1) while the group has no members.
    pub async fn commit(&self, req: OffsetCommitRequest) -> Result<OffsetCommitResponse, Status> {
        let (p, shard) = self.shard(&req.group_id).await?;
        let mut s = shard.lock().await;
        let image = self.node.image();
        let group = s.groups.get(&req.group_id);
        let admin = req.member_id.is_empty() && req.member_epoch < 0;
        if admin {
            if group.is_some_and(|g| !g.members.is_empty()) {
                return Err(err(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group {:?} has active members; offsets can only be reset while it is empty",
                        req.group_id
                    ),
                ));
            }
        } else {
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
        }
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut writes = Vec::new();
        let mut accepted = Vec::new();
        for c in &req.partitions {
            let fail = |code: ErrorCode, msg: String| OffsetCommitResult {
                topic: c.topic.clone(),
                partition: c.partition,
                error_code: code as i32,
                error_message: msg,
            };
            let exists = image
                .topic(&c.topic)
                .is_some_and(|t| c.partition >= 0 && (c.partition as usize) < t.partitions.len());
            let r = if !exists {
                fail(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("{}-{} does not exist", c.topic, c.partition),
                )
            } else if c.committed_offset < 0 {
                fail(
                    ErrorCode::InvalidRequest,
                    format!(
                        "committed offset {} for {}-{} is negative",
                        c.committed_offset, c.topic, c.partition
                    ),
                )
            } else if c.metadata.len() > COMMIT_METADATA_BYTES_MAX {
                fail(
                    ErrorCode::OffsetMetadataTooLarge,
                    format!(
                        "metadata of {} bytes exceeds {COMMIT_METADATA_BYTES_MAX}",
                        c.metadata.len()
                    ),
                )
            } else if !admin
                && !group.is_some_and(|g| g.owns(&req.member_id, &c.topic, c.partition))
            {
                fail(
                    ErrorCode::StaleMemberEpoch,
                    format!(
                        "{}-{} is not assigned to member {:?} at epoch {}",
                        c.topic, c.partition, req.member_id, req.member_epoch
                    ),
                )
            } else {
                let committed = Committed {
                    offset: c.committed_offset,
                    leader_epoch: c.committed_leader_epoch.unwrap_or(-1),
                    metadata: c.metadata.clone(),
                };
                writes.push((
                    offset_key(&req.group_id, &c.topic, c.partition),
                    Some(offset_value(&committed)),
                ));
                accepted.push(((c.topic.clone(), c.partition), committed));
                fail(ErrorCode::None, String::new())
            };
            results.push(r);
        }
        if !writes.is_empty() {
            if let Err(e) = self.append(p, writes).await {
                let (code, msg) = match sluice_proto::status::error_detail(&e) {
                    Some(d) => (
                        ErrorCode::try_from(d.code).unwrap_or(ErrorCode::UnknownServerError),
                        d.message,
                    ),
                    None => (ErrorCode::UnknownServerError, e.message().to_string()),
                };
                // The offsets partition moved or lost its ISR: the client retries elsewhere.
                let code = match code {
                    ErrorCode::NotLeaderOrFollower | ErrorCode::LeaderNotAvailable => {
                        ErrorCode::NotCoordinator
                    }
                    ErrorCode::NotEnoughReplicas | ErrorCode::NotEnoughReplicasAfterAppend => {
                        ErrorCode::CoordinatorNotAvailable
                    }
                    c => c,
                };
                for r in results.iter_mut().filter(|r| r.error_code == 0) {
                    r.error_code = code as i32;
                    r.error_message = format!("commit not stored: {msg}");
                }
                return Ok(OffsetCommitResponse { results });
            }
            let group = s.groups.entry(req.group_id.clone()).or_default();
            for (k, v) in accepted {
                group.offsets.insert(k, v);
            }
        }
        Ok(OffsetCommitResponse { results })
    }

    /// OffsetFetch: committed offsets (-1 for partitions without one); all when no
    /// partitions are named.
    pub async fn fetch(&self, req: OffsetFetchRequest) -> Result<OffsetFetchResponse, Status> {
        let (_, shard) = self.shard(&req.group_id).await?;
        let s = shard.lock().await;
        let group = s.groups.get(&req.group_id);
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
                        .map(|((t, p), c)| result(t, *p, Some(c)))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            req.partitions
                .iter()
                .map(|tp| {
                    let c = group.and_then(|g| g.offsets.get(&(tp.topic.clone(), tp.partition)));
                    result(&tp.topic, tp.partition, c)
                })
                .collect()
        };
        Ok(OffsetFetchResponse { results })
    }

    /// Groups of every offsets partition this broker leads.
    pub async fn list(&self) -> Vec<ListedGroup> {
        let mut out = Vec::new();
        let n = self.offsets_partitions();
        for p in 0..n {
            let Some(part) = self.node.partition(OFFSETS_TOPIC, p) else {
                continue;
            };
            if !part.offsets().is_leader {
                continue;
            }
            // Load by asking for a group id of this partition is not possible in general;
            // load the shard directly.
            let shard = self.shard_slot(p);
            let mut s = shard.lock().await;
            let o = part.offsets();
            if !o.is_leader {
                continue;
            }
            let epoch = o.leader_epoch;
            if s.leader_epoch != epoch {
                if let Ok(g) = self.load(p).await {
                    s.groups = g;
                    s.leader_epoch = epoch;
                } else {
                    continue;
                }
            }
            for (id, g) in &s.groups {
                out.push(ListedGroup {
                    group_id: id.clone(),
                    protocol_type: "consumer".into(),
                    group_state: g.state() as i32,
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups for one group.
    pub async fn describe(&self, group_id: &str) -> DescribedGroup {
        let failed = |e: Status| {
            let d = sluice_proto::status::error_detail(&e);
            DescribedGroup {
                group_id: group_id.to_string(),
                error_code: d
                    .as_ref()
                    .map_or(ErrorCode::UnknownServerError as i32, |d| d.code),
                error_message: d.map_or_else(|| e.message().to_string(), |d| d.message),
                ..Default::default()
            }
        };
        let shard = match self.shard(group_id).await {
            Ok((_, s)) => s,
            Err(e) => return failed(e),
        };
        let s = shard.lock().await;
        let Some(g) = s.groups.get(group_id) else {
            return DescribedGroup {
                group_id: group_id.to_string(),
                group_state: GroupState::Dead as i32,
                error_code: ErrorCode::GroupIdNotFound as i32,
                error_message: format!("group {group_id:?} does not exist"),
                ..Default::default()
            };
        };
        let members = g
            .members
            .iter()
            .map(|(id, m)| {
                let a = self.assignment_of(g, id);
                GroupMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed.clone(),
                    assignment: Some(a.clone()),
                    target_assignment: Some(a),
                }
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
        }
    }

    /// DeleteGroups for one group: only an empty group; its offsets get tombstones.
    pub async fn delete(&self, group_id: &str) -> Result<(), Status> {
        let (p, shard) = self.shard(group_id).await?;
        let mut s = shard.lock().await;
        let Some(g) = s.groups.get(group_id) else {
            return Err(err(
                ErrorCode::GroupIdNotFound,
                format!("group {group_id:?} does not exist"),
            ));
        };
        if !g.members.is_empty() {
            return Err(err(
                ErrorCode::NonEmptyGroup,
                format!("group {group_id:?} has {} active members", g.members.len()),
            ));
        }
        let tombstones: Vec<_> = g
            .offsets
            .keys()
            .map(|(t, pi)| (offset_key(group_id, t, *pi), None))
            .collect();
        if !tombstones.is_empty() {
            self.append(p, tombstones).await?;
        }
        s.groups.remove(group_id);
        Ok(())
    }

    /// Sets `sluice_consumer_group_lag` for committed partitions whose leader is this
    /// broker (each broker reports the partitions it can measure).
    async fn publish_lag(&self) {
        let shards: Vec<_> = self
            .shards
            .lock()
            .expect("shards lock")
            .values()
            .cloned()
            .collect();
        for shard in shards {
            let s = shard.lock().await;
            for (group, g) in &s.groups {
                for ((topic, p), c) in &g.offsets {
                    let Some(part) = self.node.partition(topic, *p) else {
                        continue;
                    };
                    let hw = part.subscribe().borrow().high_watermark;
                    metrics::gauge!("sluice_consumer_group_lag",
                        "group" => group.clone(), "topic" => topic.clone(), "partition" => p.to_string())
                    .set((hw - c.offset).max(0) as f64);
                }
            }
        }
    }

    /// Removes members whose session expired and rebalances their groups. Runs forever.
    pub async fn run_expiry(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut ticks = 0u64;
        metrics::describe_gauge!(
            "sluice_consumer_group_lag",
            "records between a group's committed offset and the partition's high watermark (kafka_exporter: kafka_consumergroup_lag)"
        );
        loop {
            tick.tick().await;
            ticks += 1;
            if ticks.is_multiple_of(5) {
                self.publish_lag().await;
            }
            let shards: Vec<_> = self
                .shards
                .lock()
                .expect("shards lock")
                .values()
                .cloned()
                .collect();
            for shard in shards {
                let mut s = shard.lock().await;
                for (id, g) in s.groups.iter_mut() {
                    let before = g.members.len();
                    let timeout = self.settings.session_timeout;
                    g.members.retain(|mid, m| {
                        let alive = m.last_seen.elapsed() < timeout;
                        if !alive {
                            tracing::info!(group = %id, member = %mid, "member session expired");
                        }
                        alive
                    });
                    if g.members.len() != before {
                        self.rebalance(g);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_partition_matches_java_string_hashcode() {
        // Java: "a".hashCode() = 97, "group-1".hashCode() = 293427299,
        // "my-group".hashCode() = -1906497762 (Kafka takes Utils.abs),
        // "polygenelubricants".hashCode() = Integer.MIN_VALUE (Utils.abs gives 0).
        assert_eq!(partition_for_group("a", 50), 97 % 50);
        assert_eq!(partition_for_group("group-1", 50), 293427299 % 50);
        assert_eq!(partition_for_group("my-group", 50), 1906497762 % 50);
        assert_eq!(partition_for_group("polygenelubricants", 50), 0);
    }

    #[test]
    fn offset_records_round_trip() {
        let k = offset_key("g", "orders", 7);
        assert_eq!(parse_offset_key(&k), Some(("g".into(), "orders".into(), 7)));
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
        };
        assert_eq!(parse_offset_value(&offset_value(&c)), Some(c));
        assert_eq!(parse_offset_key(b"\x00\x09junk"), None);
    }
}
