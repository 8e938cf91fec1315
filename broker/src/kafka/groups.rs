//! Consumer groups over the Kafka protocol: FindCoordinator, the classic group protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups and DeleteGroups, on the same coordinator, shard actors and stored
//! offsets as the gRPC API ([`crate::group`]).

use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};
use crate::group::classic::{self, ClassicError};

/// Kafka's FindCoordinator key type for transactions (not supported).
const KEY_TYPE_TRANSACTION: i8 = 1;
const INVALID_REQUEST: i16 = 42;

fn msg(s: String) -> Option<StrBytes> {
    (!s.is_empty()).then(|| kstr(s))
}

/// One coordinator lookup: `(node id, host, port)` or the error.
async fn coordinator_of(
    ctx: &Ctx,
    key: &str,
    key_type: i8,
) -> Result<(i32, String, i32), (i16, String)> {
    if key_type == KEY_TYPE_TRANSACTION {
        return Err((
            INVALID_REQUEST,
            "transactions are not supported by this broker".into(),
        ));
    }
    let r = ctx
        .groups
        .find_coordinator(key, &ctx.access())
        .await
        .map_err(|s| code_of(&s))?;
    let c = r.coordinator.unwrap_or_default();
    // Kafka clients reconnect to the coordinator's Kafka listener, not its gRPC one.
    let image = ctx.node.image();
    match image.brokers.get(&sluice_metadata::BrokerId(c.broker_id)) {
        Some(b) => Ok((
            c.broker_id,
            b.kafka_endpoint().host.clone(),
            i32::from(b.kafka_endpoint().port),
        )),
        None => Ok((c.broker_id, c.host, c.port)),
    }
}

pub(super) async fn find_coordinator(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version < 4 {
        vec![req.key.clone()]
    } else {
        req.coordinator_keys.clone()
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let r = coordinator_of(ctx, key.as_str(), req.key_type).await;
        found.push((key, r));
    }
    coordinator_answer(version, found)
}

/// The FindCoordinator answer: v0–v3 one coordinator in the top-level fields, v4+ one entry
/// per key (KIP-699).
type Lookup = Result<(i32, String, i32), (i16, String)>;

pub(super) fn coordinator_answer(
    version: i16,
    found: Vec<(StrBytes, Lookup)>,
) -> FindCoordinatorResponse {
    if version < 4 {
        let out = FindCoordinatorResponse::default();
        let Some((_, r)) = found.into_iter().next() else {
            return out;
        };
        return match r {
            Ok((id, host, port)) => out
                .with_node_id(BrokerId(id))
                .with_host(kstr(host))
                .with_port(port),
            Err((code, m)) => {
                let out = out
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_host(kstr(""))
                    .with_port(-1);
                if version >= 1 {
                    out.with_error_message(msg(m))
                } else {
                    out
                }
            }
        };
    }
    let coordinators = found
        .into_iter()
        .map(|(key, r)| {
            let c = Coordinator::default().with_key(key);
            match r {
                Ok((id, host, port)) => c
                    .with_node_id(BrokerId(id))
                    .with_host(kstr(host))
                    .with_port(port),
                Err((code, m)) => c
                    .with_error_code(code)
                    .with_error_message(msg(m))
                    .with_node_id(BrokerId(-1))
                    .with_host(kstr(""))
                    .with_port(-1),
            }
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

fn classic_code(e: &Option<ClassicError>) -> (i16, Option<StrBytes>) {
    match e {
        Some(e) => (e.code, msg(e.message.clone())),
        None => (0, None),
    }
}

pub(super) async fn join_group(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let rebalance = if version >= 1 {
        Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let join = classic::JoinRequest {
        member_id: req.member_id.as_str().to_string(),
        instance_id: req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        client_id,
        client_host,
        require_known_member_id: version >= 4,
    };
    let r = match ctx.groups.classic_join(&group, join, &ctx.access()).await {
        Ok(r) => r,
        Err(s) => classic::JoinResponse {
            error: Some(ClassicError {
                code: code_of(&s).0,
                message: code_of(&s).1,
            }),
            generation_id: -1,
            member_id: req.member_id.as_str().to_string(),
            ..Default::default()
        },
    };
    let (code, _) = classic_code(&r.error);
    // Before v7 the protocol name is not nullable.
    let protocol_name = match (r.protocol_name, version >= 7) {
        (Some(n), _) => Some(kstr(n)),
        (None, true) => None,
        (None, false) => Some(kstr("")),
    };
    // KIP-814: a static leader rejoining a stable group keeps the assignment; before v9 it
    // cannot be told so: it is named a follower (the leader is its old member id, as Kafka
    // answers) with no member list, syncs and gets its assignment back.
    let (leader, members) = match (r.skip_assignment && version < 9, r.replaced_leader) {
        (true, Some(old)) => (old, Vec::new()),
        _ => (r.leader, r.members),
    };
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_skip_assignment(r.skip_assignment && version >= 9)
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(kstr))
        .with_protocol_name(protocol_name)
        .with_leader(kstr(leader))
        .with_member_id(kstr(r.member_id))
        .with_members(
            members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(kstr(m.member_id))
                        .with_group_instance_id(m.instance_id.map(kstr))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub(super) async fn sync_group(ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let sync = classic::SyncRequest {
        member_id: req.member_id.as_str().to_string(),
        instance_id: req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        generation_id: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.as_str().to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.as_str().to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
            .collect(),
    };
    let r = match ctx.groups.classic_sync(&group, sync, &ctx.access()).await {
        Ok(r) => r,
        Err(s) => classic::SyncResponse {
            error: Some(ClassicError {
                code: code_of(&s).0,
                message: code_of(&s).1,
            }),
            ..Default::default()
        },
    };
    let (code, _) = classic_code(&r.error);
    SyncGroupResponse::default()
        .with_error_code(code)
        .with_protocol_type(r.protocol_type.map(kstr))
        .with_protocol_name(r.protocol_name.map(kstr))
        .with_assignment(r.assignment)
}

pub(super) async fn heartbeat(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = match ctx
        .groups
        .classic_heartbeat(
            req.group_id.0.as_str(),
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            req.generation_id,
            &ctx.access(),
        )
        .await
    {
        Ok(e) => classic_code(&e).0,
        Err(s) => code_of(&s).0,
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub(super) async fn leave_group(
    ctx: &Ctx,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str();
    let members: Vec<(String, Option<StrBytes>)> = if version < 3 {
        vec![(req.member_id.as_str().to_string(), None)]
    } else {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    m.group_instance_id.clone(),
                )
            })
            .collect()
    };
    let ids = members
        .iter()
        .map(|(id, instance)| {
            (
                id.clone(),
                instance.as_ref().map(|i| i.as_str().to_string()),
            )
        })
        .collect();
    match ctx.groups.classic_leave(group, ids, &ctx.access()).await {
        Err(s) => LeaveGroupResponse::default().with_error_code(code_of(&s).0),
        Ok(results) if version < 3 => {
            LeaveGroupResponse::default().with_error_code(classic_code(&results[0]).0)
        }
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), e)| {
                    MemberResponse::default()
                        .with_member_id(kstr(id))
                        .with_group_instance_id(instance)
                        .with_error_code(classic_code(&e).0)
                })
                .collect(),
        ),
    }
}

pub(super) async fn offset_commit(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let commit = pb::OffsetCommitRequest {
        group_id: req.group_id.0.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.generation_id_or_member_epoch,
        group_instance_id: req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        partitions: req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| pb::OffsetCommitPartition {
                    topic: t.name.0.as_str().to_string(),
                    partition: p.partition_index,
                    committed_offset: p.committed_offset,
                    committed_leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                })
            })
            .collect(),
    };
    let outcome = ctx.groups.commit(commit, &ctx.access()).await;
    let code_for = |topic: &str, partition: i32| -> i16 {
        match &outcome {
            Err(s) => code_of(s).0,
            Ok(r) => r
                .results
                .iter()
                .find(|x| x.topic == topic && x.partition == partition)
                .map_or(0, |x| x.error_code as i16),
        }
    };
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code_for(t.name.0.as_str(), p.partition_index))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// One group's committed offsets: `topics` None = all of them.
async fn fetch_offsets(
    ctx: &Ctx,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<pb::OffsetFetchResult>)>, i16> {
    if topics.as_ref().is_some_and(|t| t.is_empty()) {
        return Ok(Vec::new());
    }
    let partitions = topics
        .iter()
        .flatten()
        .flat_map(|(t, ps)| {
            ps.iter().map(|&p| pb::TopicPartition {
                topic: t.clone(),
                partition: p,
            })
        })
        .collect();
    let r = ctx
        .groups
        .fetch(
            pb::OffsetFetchRequest {
                group_id: group.to_string(),
                partitions,
            },
            &ctx.access(),
        )
        .await
        .map_err(|s| code_of(&s).0)?;
    let mut by_topic: Vec<(String, Vec<pb::OffsetFetchResult>)> = Vec::new();
    for x in r.results {
        match by_topic.iter_mut().find(|(t, _)| *t == x.topic) {
            Some((_, v)) => v.push(x),
            None => by_topic.push((x.topic.clone(), vec![x])),
        }
    }
    Ok(by_topic)
}

pub(super) async fn offset_fetch(
    ctx: &Ctx,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let metadata = |x: &pb::OffsetFetchResult| Some(kstr(x.metadata.clone()));
    if version < 8 {
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                .collect()
        });
        return match fetch_offsets(ctx, req.group_id.0.as_str(), topics).await {
            Ok(by_topic) => OffsetFetchResponse::default().with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, xs)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(kstr(t)))
                            .with_partitions(
                                xs.iter()
                                    .map(|x| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(x.partition)
                                            .with_committed_offset(x.committed_offset)
                                            .with_committed_leader_epoch(x.committed_leader_epoch)
                                            .with_metadata(metadata(x))
                                            .with_error_code(x.error_code as i16)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
            // v0–v1 have no top-level error: each requested partition carries it.
            Err(code) if version < 2 => OffsetFetchResponse::default().with_topics(
                req.topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                            .with_name(t.name)
                    })
                    .collect(),
            ),
            Err(code) => OffsetFetchResponse::default().with_error_code(code),
        };
    }
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let topics = g.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        groups.push(
            match fetch_offsets(ctx, g.group_id.0.as_str(), topics).await {
                Ok(by_topic) => out.with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, xs)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(kstr(t)))
                                .with_partitions(
                                    xs.iter()
                                        .map(|x| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(x.partition)
                                                .with_committed_offset(x.committed_offset)
                                                .with_committed_leader_epoch(
                                                    x.committed_leader_epoch,
                                                )
                                                .with_metadata(metadata(x))
                                                .with_error_code(x.error_code as i16)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(code) => out.with_error_code(code),
            },
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

pub(super) async fn list_groups(ctx: &Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    let groups = ctx
        .groups
        .kafka_list(&ctx.access())
        .await
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.contains(&g.group_type.to_string()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(kstr(g.group_id)))
                .with_protocol_type(kstr(g.protocol_type))
                .with_group_state(kstr(g.state))
                .with_group_type(kstr(g.group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) async fn describe_groups(
    ctx: &Ctx,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let out = DescribedGroup::default().with_group_id(id.clone());
        groups.push(
            match ctx
                .groups
                .kafka_describe(id.0.as_str(), &ctx.access())
                .await
            {
                Ok(Some(v)) => out
                    .with_group_state(kstr(v.state))
                    .with_protocol_type(kstr(v.protocol_type))
                    .with_protocol_data(kstr(v.protocol))
                    .with_members(
                        v.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(kstr(m.member_id))
                                    .with_group_instance_id(m.instance_id.map(kstr))
                                    .with_client_id(kstr(m.client_id))
                                    .with_client_host(kstr(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                // Kafka describes a group it does not know as Dead, without an error.
                Ok(None) => out
                    .with_group_state(kstr("Dead"))
                    .with_protocol_type(kstr(""))
                    .with_protocol_data(kstr("")),
                Err(s) => described_error(out, code_of(&s).0),
            },
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// A group DescribeGroups could not describe (NOT_COORDINATOR, …). No message: the field
/// exists from v6 on, and every version served is older.
pub(super) fn described_error(out: DescribedGroup, code: i16) -> DescribedGroup {
    out.with_error_code(code)
        .with_group_state(kstr("Dead"))
        .with_protocol_type(kstr(""))
        .with_protocol_data(kstr(""))
}

pub(super) async fn delete_groups(ctx: &Ctx, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let code = match ctx.groups.delete(id.0.as_str(), &ctx.access()).await {
            Ok(()) => 0,
            Err(s) => code_of(&s).0,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete (KIP-496): deletes a group's committed offsets of partitions whose topic no
/// active member subscribes to; the others answer GROUP_SUBSCRIBED_TO_TOPIC. A missing group
/// is GROUP_ID_NOT_FOUND for the whole request, as in Kafka.
pub(super) async fn offset_delete(ctx: &Ctx, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.as_str().to_string(), p.partition_index))
        })
        .collect();
    let results = match ctx
        .groups
        .delete_offsets(req.group_id.0.as_str(), wanted, &ctx.access())
        .await
    {
        Ok(r) => r,
        Err(s) => return OffsetDeleteResponse::default().with_error_code(code_of(&s).0),
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (topic, partition, code) in results {
        let p = OffsetDeleteResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code as i16);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(kstr(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

/// ConsumerGroupDescribe (KIP-848): the coordinator's view of consumer-protocol groups —
/// members with their epochs, current and target assignments. A group of classic
/// (JoinGroup) members is GROUP_ID_NOT_FOUND "not a consumer group", as from Kafka (clients
/// then fall back to DescribeGroups); so is an unknown one.
pub(super) async fn consumer_group_describe(
    ctx: &Ctx,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for id in req.group_ids {
        let d = ctx.groups.describe(id.0.as_str(), &ctx.access()).await;
        groups.push(consumer_group_described(id, d));
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// One ConsumerGroupDescribe entry from the coordinator's description.
pub(super) fn consumer_group_described(
    id: GroupId,
    d: pb::DescribedGroup,
) -> consumer_group_describe_response::DescribedGroup {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let out = DescribedGroup::default()
        .with_group_id(id.clone())
        .with_authorized_operations(i32::MIN);
    const GROUP_ID_NOT_FOUND: i16 = 69;
    if d.error_code != 0 {
        let code = if d.error_code == pb::ErrorCode::GroupIdNotFound as i32 {
            GROUP_ID_NOT_FOUND
        } else {
            d.error_code as i16
        };
        return out
            .with_error_code(code)
            .with_error_message(msg(d.error_message));
    }
    if d.group_type == "classic" {
        return out
            .with_error_code(GROUP_ID_NOT_FOUND)
            .with_error_message(msg(format!(
                "group {:?} is not a consumer group (its members use the classic protocol)",
                id.0.as_str()
            )));
    }
    let state = match pb::GroupState::try_from(d.group_state) {
        Ok(pb::GroupState::Stable) => "Stable",
        Ok(pb::GroupState::Reconciling) => "Reconciling",
        Ok(pb::GroupState::Assigning) => "Assigning",
        Ok(pb::GroupState::Empty) => "Empty",
        _ => "Dead",
    };
    let assignment = |a: Option<pb::Assignment>| {
        Assignment::default().with_topic_partitions(
            a.map(|a| a.topic_partitions)
                .unwrap_or_default()
                .into_iter()
                .map(|tp| {
                    let topic_id = sluice_metadata::TopicId::parse(&tp.topic_id)
                        .map_or(uuid::Uuid::nil(), |id| uuid::Uuid::from_bytes(id.0));
                    TopicPartitions::default()
                        .with_topic_id(topic_id)
                        .with_topic_name(TopicName(kstr(tp.topic)))
                        .with_partitions(tp.partitions)
                })
                .collect(),
        )
    };
    out.with_group_state(kstr(state))
        .with_group_epoch(d.group_epoch)
        .with_assignment_epoch(d.assignment_epoch)
        .with_assignor_name(kstr(d.assignor_name))
        .with_members(
            d.members
                .into_iter()
                .map(|m| {
                    Member::default()
                        .with_member_id(kstr(m.member_id))
                        .with_instance_id(m.instance_id.map(kstr))
                        .with_rack_id(m.rack_id.map(kstr))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(kstr(m.client_id))
                        .with_client_host(kstr(m.client_host))
                        .with_subscribed_topic_names(
                            m.subscribed_topic_names
                                .into_iter()
                                .map(|t| TopicName(kstr(t)))
                                .collect(),
                        )
                        .with_assignment(assignment(m.assignment))
                        .with_target_assignment(assignment(m.target_assignment))
                        // v1: 1 = consumer protocol (0 would be a classic member).
                        .with_member_type(1)
                })
                .collect(),
        )
}

/// ConsumerGroupHeartbeat (KIP-848, `group.protocol=consumer`): the same server-side
/// assignment as Sluice's own consumers (range / roundrobin), on the same coordinator.
pub(super) async fn consumer_group_heartbeat(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions,
    };
    let fail = |code: i16, m: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(msg(m))
    };
    if req.subscribed_topic_regex.is_some() && req.subscribed_topic_names.is_none() {
        return fail(
            INVALID_REQUEST,
            "regular-expression subscriptions are not supported; subscribe to topic names".into(),
        );
    }
    let beat = pb::ConsumerGroupHeartbeatRequest {
        group_id: req.group_id.0.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.as_str().to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.as_str().to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .iter()
            .flatten()
            .map(|t| t.0.as_str().to_string())
            .collect(),
        server_assignor: req
            .server_assignor
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        owned_partitions: Vec::new(),
        client_id,
    };
    // What the member still owns (null: unchanged since its last heartbeat), by topic id;
    // partitions of topics that no longer exist are owned by nobody.
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let image = ctx.node.image();
        tps.iter()
            .filter_map(|tp| {
                let id = sluice_metadata::TopicId(*tp.topic_id.as_bytes());
                let t = image.topics.get(&id)?;
                Some(tp.partitions.iter().map(|p| (t.name.clone(), *p)))
            })
            .flatten()
            .collect()
    });
    match ctx
        .groups
        .heartbeat_owning(beat, owned, client_host, &ctx.access())
        .await
    {
        Err(s) => {
            let (code, m) = code_of(&s);
            fail(code, m)
        }
        Ok(r) => {
            let assignment = r.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.topic_partitions
                        .into_iter()
                        .filter_map(|tp| {
                            let id = sluice_metadata::TopicId::parse(&tp.topic_id)?;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(uuid::Uuid::from_bytes(id.0))
                                    .with_partitions(tp.partitions),
                            )
                        })
                        .collect(),
                )
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(kstr(r.member_id)))
                .with_member_epoch(r.member_epoch)
                .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
                .with_assignment(assignment)
        }
    }
}
