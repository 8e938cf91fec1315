//! The consumer group coordinator (DESIGN §7, KIP-848 style).
//!
//! ```text
//!   group g ──hash(g) mod N──► partition p of __consumer_offsets ──leader──► coordinator
//!   RPC ──► GroupCoordinator ──► ShardHandle(p) ──mpsc──► shard actor p (owns ShardState)
//!   member ──ConsumerGroupHeartbeat──► join / heartbeat / leave ──► group epoch bump,
//!                                      server-side assignment (range | roundrobin)
//!   member ──OffsetCommit(member epoch)──► append to p ──► (a task) wait for acks=all
//!                                      ──► back to the actor: apply, then answer
//!   new leader of p ──► a task replays p from its log start while requests queue
//! ```
//!
//! One actor per offsets partition owns that partition's groups ([`state::ShardState`], pure
//! and table-tested): nothing is locked, and a commit waiting for replication or a replay
//! of the log does not hold up other requests of the shard. Membership lives in memory on
//! the coordinator; committed offsets are records in the offsets partition, replicated like
//! any data. When coordination moves (the partition's leader changes) the new coordinator
//! loads the offsets from its log and members, whose ids it does not know, rejoin.
//!
//! Commits are fenced: a member may commit only with its current member epoch and only
//! partitions assigned to it at that epoch, so a zombie (expired, or one whose partitions
//! moved) cannot move a committed offset behind what the new owner committed.

pub use crate::limits::{COMMIT_METADATA_BYTES_MAX, GROUP_ID_BYTES_MAX, GROUP_MEMBERS_MAX};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::status::error_status;
use sluice_proto::v1::*;
use tonic::Status;

use crate::authz::Access;
use crate::data::DataPlane;
use crate::node::BrokerNode;
use sluice_metadata::acl::Operation;

mod actor;
pub mod classic;
mod consumer_protocol;
mod records;
pub mod state;

use actor::ShardHandle;
pub use state::KafkaGroupView;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often sessions are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(200);

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
    /// The classic protocol's session bounds and initial rebalance delay.
    pub classic: classic::ClassicSettings,
    /// `offsets.retention.minutes`: an empty group's offsets expire this long after their
    /// last commit.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`: how often a coordinator looks for them.
    pub offsets_retention_check: Duration,
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

/// The coordinator of every group whose offsets partition this broker leads: routes each
/// request to the actor of the group's offsets partition.
pub struct GroupCoordinator {
    node: Arc<BrokerNode>,
    settings: GroupSettings,
    /// Shard actors by offsets partition, started on first use (std lock: lookups only).
    shards: Mutex<HashMap<i32, ShardHandle>>,
}

/// A refusal as a per-item (code, message).
fn in_band(s: &Status) -> (i32, String) {
    match sluice_proto::status::error_detail(s) {
        Some(d) => (d.code, d.message),
        None => (
            ErrorCode::UnknownServerError as i32,
            s.message().to_string(),
        ),
    }
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

/// NOT_COORDINATOR for offsets partition `p`, with its leader as the hint.
fn not_coordinator(node: &BrokerNode, what: &str, p: i32) -> Status {
    let image = node.image();
    let hint = image
        .topic(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.get(p as usize))
        .and_then(|ps| {
            let b = image.brokers.get(&ps.leader)?;
            Some(LeaderHint {
                leader_id: ps.leader.get(),
                host: b.endpoint.host.clone(),
                port: b.endpoint.port as i32,
                leader_epoch: ps.leader_epoch.get(),
            })
        });
    error_status(
        ErrorCode::NotCoordinator,
        format!(
            "broker {} is not the coordinator of {what} ({OFFSETS_TOPIC}-{p})",
            node.id()
        ),
        hint,
    )
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
    pub async fn find_coordinator(
        &self,
        group: &str,
        access: &Access,
    ) -> Result<FindCoordinatorResponse, Status> {
        validate_group_id(group)?;
        access.group(Operation::Describe, group)?;
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
                broker_id: leader.get(),
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

    /// The actor of offsets partition `p`, started on first use.
    fn shard_of(&self, p: i32) -> ShardHandle {
        self.shards
            .lock()
            .expect("shards lock")
            .entry(p)
            .or_insert_with(|| {
                ShardHandle::spawn(
                    p,
                    self.node.clone(),
                    DataPlane::new(self.node.clone()),
                    self.settings.clone(),
                )
            })
            .clone()
    }

    /// The actor of `group`'s offsets partition.
    fn shard(&self, group: &str) -> Result<ShardHandle, Status> {
        validate_group_id(group)?;
        Ok(self.shard_of(partition_for_group(group, self.offsets_partitions())))
    }

    /// ConsumerGroupHeartbeat: join (epoch 0), heartbeat, leave (epoch -1 / -2). The
    /// member owns what `owned_partitions` lists (sent in full on every gRPC heartbeat).
    pub async fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        client_host: String,
        access: &Access,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        let owned = state::owned_parts(&req.owned_partitions);
        self.heartbeat_owning(req, Some(owned), client_host, access)
            .await
    }

    /// [`Self::heartbeat`] with what the member owns given apart (`None`: unchanged since
    /// its last heartbeat, a Kafka client's null `TopicPartitions`).
    pub async fn heartbeat_owning(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        owned: Option<state::Parts>,
        client_host: String,
        access: &Access,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        access.group(Operation::Read, &req.group_id)?;
        for t in &req.subscribed_topic_names {
            access.topic(Operation::Describe, t)?;
        }
        self.shard(&req.group_id)?
            .heartbeat(req, owned, client_host)
            .await
    }

    /// OffsetCommit: by a member at its current epoch for its own partitions, or by an
    /// administrator (member "" / epoch -1) while the group has no members.
    pub async fn commit(
        &self,
        mut req: OffsetCommitRequest,
        access: &Access,
    ) -> Result<OffsetCommitResponse, Status> {
        access.group(Operation::Read, &req.group_id)?;
        let mut refused = Vec::new();
        if access.restricted() {
            req.partitions
                .retain(|p| match access.topic(Operation::Read, &p.topic) {
                    Ok(()) => true,
                    Err(s) => {
                        let (error_code, error_message) = in_band(&s);
                        refused.push(OffsetCommitResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            error_code,
                            error_message,
                        });
                        false
                    }
                });
        }
        let mut out = if req.partitions.is_empty() && !refused.is_empty() {
            OffsetCommitResponse::default()
        } else {
            self.shard(&req.group_id)?.commit(req).await?
        };
        out.results.extend(refused);
        Ok(out)
    }

    /// OffsetFetch: committed offsets (-1 for partitions without one); all when no
    /// partitions are named.
    pub async fn fetch(
        &self,
        mut req: OffsetFetchRequest,
        access: &Access,
    ) -> Result<OffsetFetchResponse, Status> {
        access.group(Operation::Describe, &req.group_id)?;
        let mut refused = Vec::new();
        let all = req.partitions.is_empty();
        if access.restricted() {
            req.partitions
                .retain(|p| match access.topic(Operation::Describe, &p.topic) {
                    Ok(()) => true,
                    Err(s) => {
                        let (error_code, error_message) = in_band(&s);
                        refused.push(OffsetFetchResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            committed_offset: -1,
                            committed_leader_epoch: -1,
                            metadata: String::new(),
                            error_code,
                            error_message,
                        });
                        false
                    }
                });
        }
        let mut out = if !all && req.partitions.is_empty() {
            OffsetFetchResponse::default()
        } else {
            self.shard(&req.group_id)?.fetch(req).await?
        };
        if all {
            // Every committed offset: only those of topics the caller may describe.
            out.results
                .retain(|r| access.topic(Operation::Describe, &r.topic).is_ok());
        }
        out.results.extend(refused);
        Ok(out)
    }

    /// JoinGroup (classic protocol); answered when the group's rebalance completes.
    pub async fn classic_join(
        &self,
        group: &str,
        req: classic::JoinRequest,
        access: &Access,
    ) -> Result<classic::JoinResponse, Status> {
        access.group(Operation::Read, group)?;
        self.shard(group)?
            .classic_join(group.to_string(), req)
            .await
    }

    /// SyncGroup (classic protocol); a follower's is answered when the leader's arrives.
    pub async fn classic_sync(
        &self,
        group: &str,
        req: classic::SyncRequest,
        access: &Access,
    ) -> Result<classic::SyncResponse, Status> {
        access.group(Operation::Read, group)?;
        self.shard(group)?
            .classic_sync(group.to_string(), req)
            .await
    }

    /// Heartbeat (classic protocol): `None` when all is well.
    pub async fn classic_heartbeat(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
        access: &Access,
    ) -> Result<Option<classic::ClassicError>, Status> {
        access.group(Operation::Read, group)?;
        self.shard(group)?
            .classic_heartbeat(
                group.to_string(),
                member.to_string(),
                instance.map(str::to_string),
                generation,
            )
            .await
    }

    /// LeaveGroup (classic protocol): one result per (member id, instance id).
    pub async fn classic_leave(
        &self,
        group: &str,
        members: Vec<(String, Option<String>)>,
        access: &Access,
    ) -> Result<Vec<Option<classic::ClassicError>>, Status> {
        access.group(Operation::Read, group)?;
        self.shard(group)?
            .classic_leave(group.to_string(), members)
            .await
    }

    /// A group as Kafka's DescribeGroups shows it; `None` if there is no such group.
    pub async fn kafka_describe(
        &self,
        group: &str,
        access: &Access,
    ) -> Result<Option<KafkaGroupView>, Status> {
        access.group(Operation::Describe, group)?;
        self.shard(group)?.kafka_describe(group.to_string()).await
    }

    /// Every group this broker coordinates, as Kafka's ListGroups shows them.
    pub async fn kafka_list(&self, access: &Access) -> Vec<KafkaGroupView> {
        let mut out = Vec::new();
        for p in self.led_offsets_partitions() {
            if let Ok(groups) = self.shard_of(p).kafka_list().await {
                out.extend(groups);
            }
        }
        out.retain(|g| access.may_list_group(&g.group_id));
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    fn led_offsets_partitions(&self) -> Vec<i32> {
        (0..self.offsets_partitions())
            .filter(|&p| {
                self.node
                    .partition(OFFSETS_TOPIC, p)
                    .is_some_and(|part| part.offsets().is_leader)
            })
            .collect()
    }

    /// Groups of every offsets partition this broker leads.
    pub async fn list(&self, access: &Access) -> Vec<ListedGroup> {
        let mut out = Vec::new();
        for p in 0..self.offsets_partitions() {
            let leads = self
                .node
                .partition(OFFSETS_TOPIC, p)
                .is_some_and(|part| part.offsets().is_leader);
            if !leads {
                continue;
            }
            if let Ok(groups) = self.shard_of(p).list().await {
                out.extend(groups);
            }
        }
        out.retain(|g| access.may_list_group(&g.group_id));
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups for one group.
    pub async fn describe(&self, group_id: &str, access: &Access) -> DescribedGroup {
        let described = match access
            .group(Operation::Describe, group_id)
            .and_then(|()| self.shard(group_id))
        {
            Ok(shard) => shard.describe(group_id).await,
            Err(e) => Err(e),
        };
        described.unwrap_or_else(|e| {
            let d = sluice_proto::status::error_detail(&e);
            DescribedGroup {
                group_id: group_id.to_string(),
                error_code: d
                    .as_ref()
                    .map_or(ErrorCode::UnknownServerError as i32, |d| d.code),
                error_message: d.map_or_else(|| e.message().to_string(), |d| d.message),
                ..Default::default()
            }
        })
    }

    /// OffsetDelete (KIP-496): deletes the group's committed offsets of `partitions` whose
    /// topic no active member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC for the others).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
        access: &Access,
    ) -> Result<Vec<(String, i32, ErrorCode)>, Status> {
        access.group(Operation::Delete, group_id)?;
        let (allowed, refused): (Vec<_>, Vec<_>) = partitions
            .into_iter()
            .partition(|(t, _)| access.topic(Operation::Read, t).is_ok());
        let mut out = if allowed.is_empty() {
            Vec::new()
        } else {
            self.shard(group_id)?
                .delete_offsets(group_id, allowed)
                .await?
        };
        out.extend(
            refused
                .into_iter()
                .map(|(t, p)| (t, p, ErrorCode::TopicAuthorizationFailed)),
        );
        Ok(out)
    }

    /// DeleteGroups for one group: only an empty group; its offsets get tombstones.
    pub async fn delete(&self, group_id: &str, access: &Access) -> Result<(), Status> {
        access.group(Operation::Delete, group_id)?;
        self.shard(group_id)?.delete(group_id).await
    }

    /// Expires member sessions (and every second publishes `sluice_consumer_group_lag`) on
    /// every shard. Runs forever.
    pub async fn run_expiry(self: Arc<Self>) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        let mut ticks = 0u64;
        metrics::describe_gauge!(
            "sluice_consumer_group_lag",
            "records between a group's committed offset and the partition's high watermark (kafka_exporter: kafka_consumergroup_lag)"
        );
        loop {
            tick.tick().await;
            ticks += 1;
            let shards: Vec<ShardHandle> = self
                .shards
                .lock()
                .expect("shards lock")
                .values()
                .cloned()
                .collect();
            for shard in shards {
                shard.tick(ticks.is_multiple_of(5));
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
}
