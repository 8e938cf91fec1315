//! `sluice.v1.Admin` on controllers: topics, configs, cluster and quorum status. A request to
//! a controller that is not active is forwarded to the active one (`Raft.Forward`), so reads
//! are answered from a linearizable image and writes are decided in one place.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use sluice_metadata::config::{effective_with, ValueSource, DYNAMIC_BROKER_CONFIGS, TOPIC_CONFIGS};
use sluice_metadata::{BrokerId, TopicId, TopicImage};
use sluice_proto::status::error_status;
use sluice_proto::v1::admin_server::Admin;
use sluice_proto::v1::*;
use tonic::{Request, Response, Status};

use super::acls::Access;
use super::forward;
use crate::logic;
use crate::node::ControllerNode;
use sluice_metadata::acl::{Caller, Operation};

/// Admin RPCs of one controller.
#[derive(Clone)]
pub struct AdminService {
    pub(super) node: Arc<ControllerNode>,
}

/// Internal topics start with `__` (like `__consumer_offsets`).
fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn random_topic_id() -> TopicId {
    let mut id = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut id[..]);
    TopicId(id)
}

/// Requests naming more items than this are refused whole.
const ITEMS_PER_REQUEST_MAX: usize = 1000;

/// Per item of a batch request, in order: its parse error (INVALID_REQUEST), or the decision
/// made for it (`decided` holds one per item that parsed, in order).
pub(super) fn per_item<T>(
    parsed: Vec<Result<T, String>>,
    decided: Vec<Result<(), logic::Refusal>>,
) -> Vec<(ErrorCode, String)> {
    let mut decided = decided.into_iter();
    parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => (ErrorCode::InvalidRequest, e),
            Ok(_) => match decided.next().expect("one decision per item that parsed") {
                Ok(()) => (ErrorCode::None, String::new()),
                Err(r) => (r.code, r.message),
            },
        })
        .collect()
}

pub(super) fn check_count(n: usize) -> Result<(), Status> {
    if n > ITEMS_PER_REQUEST_MAX {
        return Err(error_status(
            ErrorCode::InvalidRequest,
            format!("{n} items in one request; the limit is {ITEMS_PER_REQUEST_MAX}"),
            None,
        ));
    }
    Ok(())
}

use crate::node::ReportedHighWatermarks;

fn describe(
    t: &TopicImage,
    image: &sluice_metadata::MetadataImage,
    hws: &ReportedHighWatermarks,
) -> TopicDescription {
    let id = t.id.to_string();
    TopicDescription {
        name: t.name.clone(),
        topic_id: id.clone(),
        error_code: ErrorCode::None as i32,
        error_message: String::new(),
        is_internal: is_internal(&t.name),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionDescription {
                partition: i as i32,
                leader_id: p.leader.get(),
                leader_epoch: p.leader_epoch.get(),
                partition_epoch: p.partition_epoch.get(),
                replicas: BrokerId::to_wire(&p.replicas),
                isr: BrokerId::to_wire(&p.isr),
                offline_replicas: p
                    .replicas
                    .iter()
                    .filter(|b| !image.is_unfenced(**b))
                    .map(|b| b.get())
                    .collect(),
                last_high_watermark: hws.get(&(id.clone(), i as i32)).map_or(-1, |h| h.0),
                last_high_watermark_age_ms: hws
                    .get(&(id.clone(), i as i32))
                    .map_or(-1, |h| h.3.elapsed().as_millis() as i64),
                last_high_watermark_leader: hws
                    .get(&(id.clone(), i as i32))
                    .map_or(-1, |h| h.2.get()),
            })
            .collect(),
        configs: config_entries(&t.config, &image.topic_defaults(), &[]),
    }
}

fn config_entries(
    overrides: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
    keys: &[String],
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .filter(|k| keys.is_empty() || keys.iter().any(|x| x == k.name))
        .map(|k| {
            let (value, source) = effective_with(overrides, defaults, k.name)
                .map_or((None, ValueSource::Default), |(v, s)| {
                    (Some(v.to_string()), s)
                });
            ConfigEntry {
                name: k.name.to_string(),
                value,
                source: match source {
                    ValueSource::Topic => ConfigSource::Topic,
                    ValueSource::DynamicDefault => ConfigSource::DynamicDefaultBroker,
                    ValueSource::Default => ConfigSource::Default,
                } as i32,
                is_default: source == ValueSource::Default,
                read_only: false,
                is_sensitive: false,
            }
        })
        .collect()
}

/// The cluster-wide dynamic broker configs that are set (BROKER ""), as entries.
fn broker_config_entries(
    image: &sluice_metadata::MetadataImage,
    keys: &[String],
) -> Vec<ConfigEntry> {
    let set = image.broker_configs.get("");
    DYNAMIC_BROKER_CONFIGS
        .iter()
        .filter(|k| keys.is_empty() || keys.iter().any(|x| x == k.name))
        .filter_map(|k| {
            let v = set?.get(k.name)?;
            Some(ConfigEntry {
                name: k.name.to_string(),
                value: Some(v.clone()),
                source: ConfigSource::DynamicDefaultBroker as i32,
                is_default: false,
                read_only: false,
                is_sensitive: false,
            })
        })
        .collect()
}

impl AdminService {
    /// Admin over `node`.
    pub fn new(node: Arc<ControllerNode>) -> Self {
        AdminService { node }
    }

    async fn create_topics_local(
        &self,
        req: CreateTopicsRequest,
        caller: &Caller,
    ) -> Result<CreateTopicsResponse, Status> {
        check_count(req.topics.len())?;
        let access = Access::new(&self.node, caller);
        let mut results = Vec::new();
        for spec in req.topics {
            if let Some((code, msg)) = access.create_topic(&spec.name) {
                results.push(CreateTopicResult {
                    name: spec.name,
                    error_code: code,
                    error_message: msg,
                    ..Default::default()
                });
                continue;
            }
            let configs: BTreeMap<String, String> = spec.configs.into_iter().collect();
            let id = random_topic_id();
            let defaults = self.node.config.defaults.clone();
            let validate_only = req.validate_only;
            let name = spec.name.clone();
            let r = self
                .node
                .decide(|img| {
                    let records = logic::create_topic(
                        img,
                        &spec.name,
                        spec.num_partitions,
                        spec.replication_factor,
                        &configs,
                        &defaults,
                        id,
                    )?;
                    let rf = match &records[1..].first() {
                        Some(sluice_metadata::MetadataRecord::Partition { replicas, .. }) => {
                            replicas.len() as i32
                        }
                        _ => 0,
                    };
                    let n = records.len() as i32 - 1;
                    Ok((if validate_only { Vec::new() } else { records }, (n, rf)))
                })
                .await;
            results.push(match r {
                Ok((_, (n, rf))) => CreateTopicResult {
                    name,
                    topic_id: if validate_only {
                        String::new()
                    } else {
                        id.to_string()
                    },
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                    num_partitions: n,
                    replication_factor: rf,
                },
                Err(s) => per_item_error(&s, |code, msg| CreateTopicResult {
                    name,
                    topic_id: String::new(),
                    error_code: code,
                    error_message: msg,
                    num_partitions: 0,
                    replication_factor: 0,
                })?,
            });
        }
        Ok(CreateTopicsResponse { results })
    }

    async fn delete_topics_local(
        &self,
        req: DeleteTopicsRequest,
        caller: &Caller,
    ) -> Result<DeleteTopicsResponse, Status> {
        check_count(req.names.len())?;
        let access = Access::new(&self.node, caller);
        let mut results = Vec::new();
        for name in req.names {
            if let Some((code, msg)) = access.topic(Operation::Delete, &name) {
                results.push(DeleteTopicResult {
                    name,
                    topic_id: String::new(),
                    error_code: code,
                    error_message: msg,
                });
                continue;
            }
            let r = self
                .node
                .decide(|img| {
                    let id = img
                        .topic(&name)
                        .map(|t| t.id.to_string())
                        .unwrap_or_default();
                    Ok((logic::delete_topic(img, &name)?, id))
                })
                .await;
            results.push(match r {
                Ok((_, id)) => DeleteTopicResult {
                    name,
                    topic_id: id,
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                },
                Err(s) => per_item_error(&s, |code, msg| DeleteTopicResult {
                    name,
                    topic_id: String::new(),
                    error_code: code,
                    error_message: msg,
                })?,
            });
        }
        Ok(DeleteTopicsResponse { results })
    }

    async fn list_topics_local(
        &self,
        req: ListTopicsRequest,
        caller: &Caller,
    ) -> Result<ListTopicsResponse, Status> {
        let image = self.node.ensure_current().await?;
        let access = Access::new(&self.node, caller);
        let topics = image
            .topic_ids
            .iter()
            .filter(|(name, _)| req.include_internal || !is_internal(name))
            .filter(|(name, _)| access.topic(Operation::Describe, name).is_none())
            .filter_map(|(_, id)| image.topics.get(id))
            .map(|t| ListedTopic {
                name: t.name.clone(),
                topic_id: t.id.to_string(),
                is_internal: is_internal(&t.name),
                num_partitions: t.partitions.len() as i32,
                replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as i32),
            })
            .collect();
        Ok(ListTopicsResponse { topics })
    }

    async fn describe_topics_local(
        &self,
        req: DescribeTopicsRequest,
        caller: &Caller,
    ) -> Result<DescribeTopicsResponse, Status> {
        check_count(req.names.len())?;
        let image = self.node.ensure_current().await?;
        let access = Access::new(&self.node, caller);
        let hws = self
            .node
            .high_watermarks
            .lock()
            .expect("high watermarks lock")
            .clone();
        let topics = if req.names.is_empty() {
            image
                .topics
                .values()
                .filter(|t| access.topic(Operation::Describe, &t.name).is_none())
                .map(|t| describe(t, &image, &hws))
                .collect()
        } else {
            req.names
                .iter()
                .map(
                    |n| match (access.topic(Operation::Describe, n), image.topic(n)) {
                        // Refused whether or not it exists: existence is not revealed.
                        (Some((code, msg)), _) => TopicDescription {
                            name: n.clone(),
                            error_code: code,
                            error_message: msg,
                            ..Default::default()
                        },
                        (None, Some(t)) => describe(t, &image, &hws),
                        (None, None) => TopicDescription {
                            name: n.clone(),
                            error_code: ErrorCode::UnknownTopicOrPartition as i32,
                            error_message: format!("topic {n:?} does not exist"),
                            ..Default::default()
                        },
                    },
                )
                .collect()
        };
        Ok(DescribeTopicsResponse { topics })
    }

    async fn create_partitions_local(
        &self,
        req: CreatePartitionsRequest,
        caller: &Caller,
    ) -> Result<CreatePartitionsResponse, Status> {
        check_count(req.topics.len())?;
        let access = Access::new(&self.node, caller);
        let mut results = Vec::new();
        for t in req.topics {
            if let Some((code, msg)) = access.topic(Operation::Alter, &t.name) {
                results.push(CreatePartitionsResult {
                    name: t.name,
                    error_code: code,
                    error_message: msg,
                });
                continue;
            }
            let validate_only = req.validate_only;
            let r = self
                .node
                .decide(|img| {
                    let records = logic::create_partitions(img, &t.name, t.count)?;
                    Ok((if validate_only { Vec::new() } else { records }, ()))
                })
                .await;
            results.push(match r {
                Ok(_) => CreatePartitionsResult {
                    name: t.name,
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                },
                Err(s) => per_item_error(&s, |code, msg| CreatePartitionsResult {
                    name: t.name.clone(),
                    error_code: code,
                    error_message: msg,
                })?,
            });
        }
        Ok(CreatePartitionsResponse { results })
    }

    async fn incremental_alter_configs_local(
        &self,
        req: IncrementalAlterConfigsRequest,
        caller: &Caller,
    ) -> Result<IncrementalAlterConfigsResponse, Status> {
        check_count(req.resources.len())?;
        let access = Access::new(&self.node, caller);
        let mut results = Vec::new();
        for res in req.resources {
            let rtype = res.resource_type;
            let name = res.resource_name.clone();
            let broker = rtype == ConfigResourceType::Broker as i32;
            if rtype != ConfigResourceType::Topic as i32 && !broker {
                results.push(AlterConfigsResult {
                    resource_type: rtype,
                    resource_name: name,
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: "only TOPIC and BROKER configs can be altered".into(),
                });
                continue;
            }
            if let Some((code, msg)) = access.config(Operation::AlterConfigs, broker, &name) {
                results.push(AlterConfigsResult {
                    resource_type: rtype,
                    resource_name: name,
                    error_code: code,
                    error_message: msg,
                });
                continue;
            }
            let mut ops = Vec::new();
            let mut bad = None;
            for c in &res.configs {
                match ConfigOp::try_from(c.op) {
                    Ok(ConfigOp::Set) => match &c.value {
                        Some(v) => ops.push((c.name.clone(), Some(v.clone()))),
                        None => bad = Some(format!("SET {} needs a value", c.name)),
                    },
                    Ok(ConfigOp::Delete) => ops.push((c.name.clone(), None)),
                    Err(_) => bad = Some(format!("unknown config op {}", c.op)),
                }
            }
            if let Some(msg) = bad {
                results.push(AlterConfigsResult {
                    resource_type: rtype,
                    resource_name: name,
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: msg,
                });
                continue;
            }
            let validate_only = req.validate_only;
            let r = self
                .node
                .decide(|img| {
                    let records = if broker {
                        logic::alter_broker_configs(img, &res.resource_name, &ops)?
                    } else {
                        logic::alter_topic_configs(img, &res.resource_name, &ops)?
                    };
                    Ok((if validate_only { Vec::new() } else { records }, ()))
                })
                .await;
            results.push(match r {
                Ok(_) => AlterConfigsResult {
                    resource_type: rtype,
                    resource_name: name,
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                },
                Err(s) => per_item_error(&s, |code, msg| AlterConfigsResult {
                    resource_type: rtype,
                    resource_name: name.clone(),
                    error_code: code,
                    error_message: msg,
                })?,
            });
        }
        Ok(IncrementalAlterConfigsResponse { results })
    }

    async fn describe_configs_local(
        &self,
        req: DescribeConfigsRequest,
        caller: &Caller,
    ) -> Result<DescribeConfigsResponse, Status> {
        check_count(req.resources.len())?;
        let image = self.node.ensure_current().await?;
        let access = Access::new(&self.node, caller);
        let results = req
            .resources
            .into_iter()
            .map(|r| {
                let mut out = DescribeConfigsResult {
                    resource_type: r.resource_type,
                    resource_name: r.resource_name.clone(),
                    ..Default::default()
                };
                let broker = r.resource_type == ConfigResourceType::Broker as i32;
                if let Some((code, msg)) =
                    access.config(Operation::DescribeConfigs, broker, &r.resource_name)
                {
                    out.error_code = code;
                    out.error_message = msg;
                } else if broker {
                    // The dynamic configs (cluster-wide in Sluice); a broker's static configs
                    // are its own to describe (the Kafka port's DescribeConfigs at it).
                    out.entries = broker_config_entries(&image, &r.keys);
                } else if r.resource_type != ConfigResourceType::Topic as i32 {
                    out.error_code = ErrorCode::InvalidRequest as i32;
                    out.error_message = "only TOPIC and BROKER configs can be described".into();
                } else if let Some(t) = image.topic(&r.resource_name) {
                    out.entries = config_entries(&t.config, &image.topic_defaults(), &r.keys);
                } else {
                    out.error_code = ErrorCode::UnknownTopicOrPartition as i32;
                    out.error_message = format!("topic {:?} does not exist", r.resource_name);
                }
                out
            })
            .collect();
        Ok(DescribeConfigsResponse { results })
    }

    async fn describe_cluster_local(
        &self,
        _req: DescribeClusterRequest,
        _caller: &Caller,
    ) -> Result<DescribeClusterResponse, Status> {
        let image = self.node.ensure_current().await?;
        let mut leaders = BTreeMap::<BrokerId, i32>::new();
        let mut replicas = BTreeMap::<BrokerId, i32>::new();
        for t in image.topics.values() {
            for p in &t.partitions {
                *leaders.entry(p.leader).or_default() += 1;
                for r in &p.replicas {
                    *replicas.entry(*r).or_default() += 1;
                }
            }
        }
        let brokers = image
            .brokers
            .values()
            .map(|b| {
                let session = self.node.session_info(b.id);
                ClusterBroker {
                    broker_id: b.id.get(),
                    endpoint: Some(BrokerEndpoint {
                        broker_id: b.id.get(),
                        host: b.endpoint.host.clone(),
                        port: b.endpoint.port as i32,
                        rack: b.rack.clone(),
                    }),
                    fenced: b.fenced,
                    in_controlled_shutdown: false,
                    incarnation_id: b.incarnation_id.clone(),
                    broker_epoch: b.epoch,
                    metadata_offset: session.and_then(|s| s.1),
                    last_heartbeat_age_ms: session.map_or(-1, |s| s.0),
                    leader_count: leaders.get(&b.id).copied().unwrap_or(0),
                    replica_count: replicas.get(&b.id).copied().unwrap_or(0),
                }
            })
            .collect();
        Ok(DescribeClusterResponse {
            cluster_id: self.node.config.cluster_id.clone(),
            controller_id: self.node.leader().map_or(-1, |l| l as i32),
            brokers,
            metadata_offset: image.offset,
        })
    }

    async fn describe_quorum_local(
        &self,
        _req: DescribeQuorumRequest,
        caller: &Caller,
    ) -> Result<DescribeQuorumResponse, Status> {
        Access::new(&self.node, caller).cluster(Operation::Describe)?;
        self.node.ensure_current().await?;
        let m = self.node.raft.metrics().borrow().clone();
        let leader_last = m.last_log_index.unwrap_or(0) as i64;
        let matched: BTreeMap<u64, i64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.map_or(-1, |l| l.index as i64)))
                    .collect()
            })
            .unwrap_or_default();
        let membership = m.membership_config.membership();
        let node_of = |id: u64, status: QuorumNodeStatus| {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
            let matched_index = if id == m.id {
                leader_last
            } else {
                *matched.get(&id).unwrap_or(&-1)
            };
            QuorumNode {
                directory_id: membership
                    .get_node(&id)
                    .map(|n| n.directory_id.clone())
                    .unwrap_or_default(),
                node_id: id as i32,
                host: host.to_string(),
                port: port.parse().unwrap_or(0),
                log_end_offset: matched_index + 1,
                lag: (leader_last - matched_index).max(0),
                last_fetch_timestamp_ms: -1,
                last_caught_up_timestamp_ms: -1,
                status: status as i32,
            }
        };
        let mut voters: Vec<QuorumNode> = membership
            .voter_ids()
            .map(|id| {
                let status = if id == m.id {
                    QuorumNodeStatus::Leader
                } else {
                    QuorumNodeStatus::Follower
                };
                node_of(id, status)
            })
            .collect();
        voters.sort_by_key(|v| (v.status != QuorumNodeStatus::Leader as i32, v.node_id));
        let mut observers: Vec<QuorumNode> = membership
            .learner_ids()
            .map(|id| node_of(id, QuorumNodeStatus::Observer))
            .collect();
        // Controllers running where the membership does not know them under their directory
        // (started on an empty directory after the quorum formed, or a voter whose disk was
        // replaced): observers until `add-controller` (issue 15). Probed in the background.
        let probed = self.node.observers.lock().expect("observers lock").clone();
        for (id, addr, directory_id) in probed {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
            observers.push(QuorumNode {
                node_id: id as i32,
                host: host.to_string(),
                port: port.parse().unwrap_or(0),
                log_end_offset: -1,
                lag: -1,
                last_fetch_timestamp_ms: -1,
                last_caught_up_timestamp_ms: -1,
                status: QuorumNodeStatus::Observer as i32,
                directory_id,
            });
        }
        let max_lag = voters.iter().map(|v| v.lag).max().unwrap_or(0);
        Ok(DescribeQuorumResponse {
            cluster_id: self.node.config.cluster_id.clone(),
            leader_id: m.current_leader.map_or(-1, |l| l as i32),
            leader_epoch: m.current_term as i64,
            high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
            voters,
            observers,
            max_follower_lag: max_lag,
            max_follower_lag_time_ms: -1,
        })
    }
}

impl AdminService {
    async fn add_controller_local(
        &self,
        req: AddControllerRequest,
        caller: &Caller,
    ) -> Result<QuorumChangeResponse, Status> {
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        self.node.add_controller(req).await
    }

    async fn alter_user_scram_credentials_local(
        &self,
        req: AlterUserScramCredentialsRequest,
        caller: &Caller,
    ) -> Result<AlterUserScramCredentialsResponse, Status> {
        use sluice_metadata::scram::ScramMechanism as M;
        check_count(req.deletions.len() + req.upsertions.len())?;
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        let mechanism = |code: i32| i8::try_from(code).ok().and_then(M::from_code);
        // Per user, in the order users first appear (Kafka answers per user).
        let mut users: Vec<UserOps> = Vec::new();
        type UserOps = (String, Vec<M>, Vec<logic::ScramUpsertion>, Option<String>);
        fn entry(users: &mut Vec<UserOps>, name: &str) -> usize {
            match users.iter().position(|u| u.0 == name) {
                Some(i) => i,
                None => {
                    users.push((name.to_string(), Vec::new(), Vec::new(), None));
                    users.len() - 1
                }
            }
        }
        for d in &req.deletions {
            let i = entry(&mut users, &d.name);
            match mechanism(d.mechanism) {
                Some(m) => users[i].1.push(m),
                None => users[i].3 = Some(format!("unknown SCRAM mechanism {}", d.mechanism)),
            }
        }
        for u in req.upsertions {
            let i = entry(&mut users, &u.name);
            match mechanism(u.mechanism) {
                Some(m) => {
                    users[i]
                        .2
                        .push((m, u.iterations, u.salt.to_vec(), u.salted_password.to_vec()))
                }
                None => users[i].3 = Some(format!("unknown SCRAM mechanism {}", u.mechanism)),
            }
        }
        let mut results = Vec::new();
        for (name, deletions, upsertions, bad) in users {
            if let Some(msg) = bad {
                results.push(AlterUserScramCredentialsResult {
                    name,
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: msg,
                });
                continue;
            }
            let r = self
                .node
                .decide(|img| {
                    let records =
                        logic::alter_scram_credentials(img, &name, &deletions, &upsertions)?;
                    Ok((records, ()))
                })
                .await;
            results.push(match r {
                Ok(_) => AlterUserScramCredentialsResult {
                    name,
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                },
                Err(s) => per_item_error(&s, |code, msg| AlterUserScramCredentialsResult {
                    name: name.clone(),
                    error_code: code,
                    error_message: msg,
                })?,
            });
        }
        Ok(AlterUserScramCredentialsResponse { results })
    }

    async fn describe_user_scram_credentials_local(
        &self,
        req: DescribeUserScramCredentialsRequest,
        caller: &Caller,
    ) -> Result<DescribeUserScramCredentialsResponse, Status> {
        check_count(req.names.len())?;
        Access::new(&self.node, caller).cluster(Operation::Describe)?;
        let image = self.node.ensure_current().await?;
        let names: Vec<String> = if req.names.is_empty() {
            image.users.keys().cloned().collect()
        } else {
            req.names
        };
        let results = names
            .into_iter()
            .map(|name| match image.users.get(&name) {
                Some(creds) => DescribeUserScramCredentialsResult {
                    credentials: creds
                        .iter()
                        .map(|(m, c)| ScramCredentialInfo {
                            mechanism: m.code() as i32,
                            iterations: c.iterations as i32,
                        })
                        .collect(),
                    name,
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                },
                None => DescribeUserScramCredentialsResult {
                    error_message: format!("user {name:?} does not exist"),
                    name,
                    error_code: ErrorCode::ResourceNotFound as i32,
                    credentials: Vec::new(),
                },
            })
            .collect();
        Ok(DescribeUserScramCredentialsResponse { results })
    }

    async fn remove_controller_local(
        &self,
        req: RemoveControllerRequest,
        caller: &Caller,
    ) -> Result<QuorumChangeResponse, Status> {
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        self.node.remove_controller(req).await
    }
}

/// Turns a decision's failure into a per-item result, except failures of the whole request
/// (no active controller, timeouts) which fail the RPC.
fn per_item_error<T>(s: &Status, make: impl FnOnce(i32, String) -> T) -> Result<T, Status> {
    let code = sluice_proto::status::error_code(s);
    match code {
        ErrorCode::NotController | ErrorCode::RequestTimedOut | ErrorCode::UnknownServerError => {
            Err(s.clone())
        }
        _ => {
            let msg = sluice_proto::status::error_detail(s)
                .map(|d| d.message)
                .unwrap_or_else(|| s.message().to_string());
            Ok(make(code as i32, msg))
        }
    }
}

macro_rules! admin_rpcs {
    ($( $method:ident, $local:ident, $Req:ty, $Resp:ty, $path:literal; )*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $method(&self, r: Request<$Req>) -> Result<Response<$Resp>, Status> {
                    let caller = super::acls::caller_of(&self.node, &r)?;
                    let req = r.into_inner();
                    let out = match self.node.route()? {
                        Some(addr) => forward::<$Req, $Resp>(&self.node, &addr, $path, req, Some(&caller)).await?,
                        None => self.$local(req, &caller).await?,
                    };
                    Ok(Response::new(out))
                }
            )*
        }

        impl AdminService {
            /// Runs a forwarded request (method path + encoded request) locally.
            pub async fn dispatch(&self, method: &str, command: &[u8], caller: &Caller) -> Result<Vec<u8>, Status> {
                match method {
                    $(
                        $path => {
                            let req = <$Req>::decode(command).map_err(|e| {
                                error_status(ErrorCode::InvalidRequest, format!("undecodable {}: {e}", $path), None)
                            })?;
                            Ok(self.$local(req, caller).await?.encode_to_vec())
                        }
                    )*
                    other => Err(error_status(
                        ErrorCode::InvalidRequest,
                        format!("{other:?} cannot be forwarded"),
                        None,
                    )),
                }
            }
        }
    };
}

admin_rpcs! {
    create_topics, create_topics_local, CreateTopicsRequest, CreateTopicsResponse, "/sluice.v1.Admin/CreateTopics";
    delete_topics, delete_topics_local, DeleteTopicsRequest, DeleteTopicsResponse, "/sluice.v1.Admin/DeleteTopics";
    list_topics, list_topics_local, ListTopicsRequest, ListTopicsResponse, "/sluice.v1.Admin/ListTopics";
    describe_topics, describe_topics_local, DescribeTopicsRequest, DescribeTopicsResponse, "/sluice.v1.Admin/DescribeTopics";
    create_partitions, create_partitions_local, CreatePartitionsRequest, CreatePartitionsResponse, "/sluice.v1.Admin/CreatePartitions";
    incremental_alter_configs, incremental_alter_configs_local, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, "/sluice.v1.Admin/IncrementalAlterConfigs";
    describe_configs, describe_configs_local, DescribeConfigsRequest, DescribeConfigsResponse, "/sluice.v1.Admin/DescribeConfigs";
    describe_cluster, describe_cluster_local, DescribeClusterRequest, DescribeClusterResponse, "/sluice.v1.Admin/DescribeCluster";
    describe_quorum, describe_quorum_local, DescribeQuorumRequest, DescribeQuorumResponse, "/sluice.v1.Admin/DescribeQuorum";
    add_controller, add_controller_local, AddControllerRequest, QuorumChangeResponse, "/sluice.v1.Admin/AddController";
    remove_controller, remove_controller_local, RemoveControllerRequest, QuorumChangeResponse, "/sluice.v1.Admin/RemoveController";
    alter_user_scram_credentials, alter_user_scram_credentials_local, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, "/sluice.v1.Admin/AlterUserScramCredentials";
    describe_user_scram_credentials, describe_user_scram_credentials_local, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, "/sluice.v1.Admin/DescribeUserScramCredentials";
    create_acls, create_acls_local, CreateAclsRequest, CreateAclsResponse, "/sluice.v1.Admin/CreateAcls";
    describe_acls, describe_acls_local, DescribeAclsRequest, DescribeAclsResponse, "/sluice.v1.Admin/DescribeAcls";
    delete_acls, delete_acls_local, DeleteAclsRequest, DeleteAclsResponse, "/sluice.v1.Admin/DeleteAcls";
    alter_client_quotas, alter_client_quotas_local, AlterClientQuotasRequest, AlterClientQuotasResponse, "/sluice.v1.Admin/AlterClientQuotas";
    describe_client_quotas, describe_client_quotas_local, DescribeClientQuotasRequest, DescribeClientQuotasResponse, "/sluice.v1.Admin/DescribeClientQuotas";
    elect_leaders, elect_leaders_local, ElectLeadersRequest, ElectLeadersResponse, "/sluice.v1.Admin/ElectLeaders";
}
