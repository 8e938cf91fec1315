//! Administration over the Kafka protocol: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, relayed to the controller quorum like Sluice's
//! own Admin calls (any broker answers, as in KRaft, where brokers forward them), and
//! DescribeCluster from this broker's image; so `kafka-topics.sh`, `kafka-configs.sh`,
//! `AdminClient` and kafka-python's `KafkaAdminClient` work unchanged.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};

/// Kafka's INVALID_REPLICA_ASSIGNMENT: Sluice places replicas itself.
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

fn msg(s: String) -> Option<kafka_protocol::protocol::StrBytes> {
    (!s.is_empty()).then(|| kstr(s))
}

pub(super) async fn create_topics(
    ctx: &Ctx,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut refused = Vec::new();
    let mut specs = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str().to_string();
        if !t.assignments.is_empty() {
            refused.push((
                name,
                INVALID_REPLICA_ASSIGNMENT,
                "manual replica assignments are not supported: Sluice places replica j of partition i on broker (i + j) mod n".to_string(),
            ));
            continue;
        }
        specs.push(pb::TopicSpec {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor as i32,
            configs: t
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.as_str().to_string(),
                        c.value
                            .as_ref()
                            .map(|v| v.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        });
    }
    let results = if specs.is_empty() {
        Ok(Vec::new())
    } else {
        ctx.node
            .create_topics(specs, req.validate_only, &ctx.caller)
            .await
    };
    let answer = |name: String, code: i16, m: String| {
        let r = CreatableTopicResult::default()
            .with_name(TopicName(kstr(name)))
            .with_error_code(code)
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if version >= 1 {
            r.with_error_message(msg(m))
        } else {
            r
        }
    };
    let mut topics: Vec<CreatableTopicResult> = refused
        .into_iter()
        .map(|(n, c, m)| answer(n, c, m))
        .collect();
    match results {
        Ok(results) => {
            for r in results {
                let mut out = answer(r.name.clone(), r.error_code as i16, r.error_message);
                if r.error_code == 0 {
                    out = out
                        .with_num_partitions(r.num_partitions)
                        .with_replication_factor(r.replication_factor as i16);
                    if let Some(id) = sluice_metadata::TopicId::parse(&r.topic_id) {
                        out = out.with_topic_id(uuid::Uuid::from_bytes(id.0));
                    }
                }
                topics.push(out);
            }
        }
        Err(s) => {
            let (code, m) = code_of(&s);
            for t in &req.topics {
                if topics.iter().all(|x| x.name != t.name) {
                    topics.push(answer(t.name.0.as_str().to_string(), code, m.clone()));
                }
            }
        }
    }
    CreateTopicsResponse::default().with_topics(topics)
}

pub(super) async fn delete_topics(
    ctx: &Ctx,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id; earlier versions by name.
    let image = ctx.node.image();
    let names: Vec<(String, Option<uuid::Uuid>)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (n.0.as_str().to_string(), None),
                None => {
                    let id = sluice_metadata::TopicId(*t.topic_id.as_bytes());
                    let name = image
                        .topics
                        .get(&id)
                        .map(|ti| ti.name.clone())
                        .unwrap_or_default();
                    (name, Some(t.topic_id))
                }
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (n.0.as_str().to_string(), None))
            .collect()
    };
    let known: Vec<String> = names
        .iter()
        .filter(|(n, _)| !n.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    let results = if known.is_empty() {
        Ok(Vec::new())
    } else {
        ctx.node.delete_topics(known, &ctx.caller).await
    };
    let responses = names
        .into_iter()
        .map(|(name, id)| {
            let (code, m, topic_id) = if name.is_empty() {
                (100i16, "no topic has this id".to_string(), id)
            } else {
                match &results {
                    Err(s) => {
                        let (c, m) = code_of(s);
                        (c, m, id)
                    }
                    Ok(rs) => match rs.iter().find(|r| r.name == name) {
                        Some(r) => (
                            r.error_code as i16,
                            r.error_message.clone(),
                            sluice_metadata::TopicId::parse(&r.topic_id)
                                .map(|t| uuid::Uuid::from_bytes(t.0))
                                .or(id),
                        ),
                        None => (-1, "the controller did not answer for it".into(), id),
                    },
                }
            };
            let mut out = DeletableTopicResult::default().with_error_code(code);
            if version >= 6 || !name.is_empty() {
                out = out.with_name((!name.is_empty()).then(|| TopicName(kstr(name))));
            }
            if version >= 6 {
                out = out.with_topic_id(topic_id.unwrap_or_default());
            }
            if version >= 5 {
                out = out.with_error_message(msg(m));
            }
            out
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Kafka's config resource types that Sluice knows (`ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;

fn resource_type_of(t: i8) -> Option<pb::ConfigResourceType> {
    match t {
        RESOURCE_TOPIC => Some(pb::ConfigResourceType::Topic),
        RESOURCE_BROKER => Some(pb::ConfigResourceType::Broker),
        _ => None,
    }
}

/// Kafka's `ConfigSource` ids (DescribeConfigs v1+) of Sluice's sources.
fn config_source_id(s: i32) -> i8 {
    match pb::ConfigSource::try_from(s) {
        Ok(pb::ConfigSource::Topic) => 1,
        Ok(pb::ConfigSource::DynamicDefaultBroker) => 3,
        Ok(pb::ConfigSource::StaticBroker) => 4,
        Ok(pb::ConfigSource::Default) => 5,
        _ => 0,
    }
}

pub(super) async fn create_partitions(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    let mut asked = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str().to_string();
        if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(INVALID_REPLICA_ASSIGNMENT)
                    .with_error_message(msg(
                        "manual replica assignments are not supported: new partitions follow Sluice's (i + j) mod n placement".into(),
                    )),
            );
            continue;
        }
        asked.push(pb::CreatePartitionsTopic {
            name,
            count: t.count,
        });
    }
    if !asked.is_empty() {
        let names: Vec<String> = asked.iter().map(|t| t.name.clone()).collect();
        let r = ctx
            .node
            .relay_admin(
                pb::CreatePartitionsRequest {
                    topics: asked,
                    validate_only: req.validate_only,
                },
                &ctx.caller,
                |mut c, r| async move { c.create_partitions(r).await },
            )
            .await;
        match r {
            Ok(resp) => {
                for r in resp.results {
                    results.push(
                        CreatePartitionsTopicResult::default()
                            .with_name(TopicName(kstr(r.name)))
                            .with_error_code(r.error_code as i16)
                            .with_error_message(msg(r.error_message)),
                    );
                }
            }
            Err(s) => {
                let (code, m) = code_of(&s);
                for n in names {
                    results.push(
                        CreatePartitionsTopicResult::default()
                            .with_name(TopicName(kstr(n)))
                            .with_error_code(code)
                            .with_error_message(msg(m.clone())),
                    );
                }
            }
        }
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) async fn describe_configs(
    ctx: &Ctx,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for res in &req.resources {
        let name = res.resource_name.as_str().to_string();
        let base = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if res.resource_type == RESOURCE_BROKER {
            results.push(describe_broker(ctx, base, &name, res, version));
            continue;
        }
        let Some(kind) = resource_type_of(res.resource_type) else {
            results.push(
                base.with_error_code(INVALID_REQUEST)
                    .with_error_message(msg(format!(
                        "config resource type {} is not supported: TOPIC (2) and BROKER (4) are",
                        res.resource_type
                    ))),
            );
            continue;
        };
        let keys: Vec<String> = res
            .configuration_keys
            .iter()
            .flatten()
            .map(|k| k.as_str().to_string())
            .collect();
        let r = ctx
            .node
            .relay_admin(
                pb::DescribeConfigsRequest {
                    resources: vec![pb::DescribeConfigsResource {
                        resource_type: kind as i32,
                        resource_name: name.clone(),
                        keys,
                    }],
                },
                &ctx.caller,
                |mut c, r| async move { c.describe_configs(r).await },
            )
            .await;
        let out = match r.map(|r| r.results.into_iter().next()) {
            Ok(Some(r)) if r.error_code == 0 => {
                let configs = r
                    .entries
                    .into_iter()
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default()
                            .with_name(kstr(e.name))
                            .with_value(e.value.map(kstr))
                            .with_read_only(e.read_only)
                            .with_config_source(config_source_id(e.source))
                            .with_is_sensitive(e.is_sensitive);
                        if version >= 3 {
                            c = c.with_documentation(None);
                        }
                        c
                    })
                    .collect();
                base.with_error_code(0).with_configs(configs)
            }
            Ok(Some(r)) => base
                .with_error_code(r.error_code as i16)
                .with_error_message(msg(r.error_message)),
            Ok(None) => base
                .with_error_code(-1)
                .with_error_message(msg("the controller did not answer for it".into())),
            Err(s) => {
                let (code, m) = code_of(&s);
                base.with_error_code(code).with_error_message(msg(m))
            }
        };
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// DescribeConfigs of a BROKER resource, answered by the broker itself as Kafka's are
/// (clients send it to the broker it names): this broker's static configs, each read-only
/// with source STATIC_BROKER_CONFIG (file, environment or flag) or DEFAULT_CONFIG. An empty
/// name (the cluster-wide dynamic defaults) has none; another broker's id is refused.
fn describe_broker(
    ctx: &Ctx,
    base: DescribeConfigsResult,
    name: &str,
    res: &kafka_protocol::messages::describe_configs_request::DescribeConfigsResource,
    version: i16,
) -> DescribeConfigsResult {
    let me = ctx.node.id().get();
    let wanted: Option<Vec<&str>> = res
        .configuration_keys
        .as_ref()
        .map(|ks| ks.iter().map(|k| k.as_str()).collect());
    let entry = |k: String, v: Option<String>, read_only: bool, source: i8| {
        let mut c = DescribeConfigsResourceResult::default()
            .with_name(kstr(k))
            .with_value(v.map(kstr))
            .with_read_only(read_only)
            .with_config_source(source)
            .with_is_sensitive(false);
        if version >= 3 {
            c = c.with_documentation(None);
        }
        c
    };
    // The cluster-wide dynamic configs that are set (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG).
    let image = ctx.node.image();
    let dynamic = image.broker_configs.get("").cloned().unwrap_or_default();
    if name.is_empty() {
        let configs = dynamic
            .into_iter()
            .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.contains(&k.as_str())))
            .map(|(k, v)| entry(k, Some(v), false, 3))
            .collect();
        return base.with_error_code(0).with_configs(configs);
    }
    if name.parse::<i32>().ok() != Some(me) {
        return base.with_error_code(INVALID_REQUEST).with_error_message(msg(format!(
            "this is broker {me}: describe BROKER {name:?} at that broker (or \"\" for cluster-wide defaults)"
        )));
    }
    // Static configs (read-only), then every dynamic key: its cluster-wide value when set,
    // else the built-in default of the topic config it is the default of.
    let mut configs: Vec<DescribeConfigsResourceResult> = ctx
        .node
        .config
        .static_configs
        .iter()
        .filter(|(k, _, _)| sluice_metadata::config::broker_config_key(k).is_none())
        .filter(|(k, _, _)| wanted.as_ref().is_none_or(|w| w.contains(&k.as_str())))
        .map(|(k, v, default)| entry(k.clone(), v.clone(), true, if *default { 5 } else { 4 }))
        .collect();
    for k in sluice_metadata::config::DYNAMIC_BROKER_CONFIGS {
        if wanted.as_ref().is_some_and(|w| !w.contains(&k.name)) {
            continue;
        }
        configs.push(match dynamic.get(k.name) {
            Some(v) => entry(k.name.to_string(), Some(v.clone()), false, 3),
            None => entry(
                k.name.to_string(),
                sluice_metadata::config::topic_config_key(k.topic_key)
                    .map(|t| t.default.to_string()),
                false,
                5,
            ),
        });
    }
    base.with_error_code(0).with_configs(configs)
}

pub(super) async fn incremental_alter_configs(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for res in &req.resources {
        let base = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let Some(kind) = alterable(res.resource_type) else {
            responses.push(
                base.with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(not_alterable(res.resource_type))),
            );
            continue;
        };
        let mut configs = Vec::new();
        let mut refused = None;
        for c in &res.configs {
            let op = match c.config_operation {
                0 => pb::ConfigOp::Set,
                1 => pb::ConfigOp::Delete,
                other => {
                    refused = Some(format!(
                        "config operation {other} ({}) on {} is not supported: SET (0) and DELETE (1) are",
                        if other == 2 { "APPEND" } else if other == 3 { "SUBTRACT" } else { "unknown" },
                        c.name.as_str()
                    ));
                    break;
                }
            };
            configs.push(pb::AlterableConfig {
                name: c.name.as_str().to_string(),
                op: op as i32,
                value: c.value.as_ref().map(|v| v.as_str().to_string()),
            });
        }
        if let Some(why) = refused {
            responses.push(
                base.with_error_code(INVALID_REQUEST)
                    .with_error_message(msg(why)),
            );
            continue;
        }
        let (code, m) = relay_alter_configs(
            ctx,
            kind,
            res.resource_name.as_str(),
            configs,
            req.validate_only,
        )
        .await;
        responses.push(base.with_error_code(code).with_error_message(m));
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The resource types whose configs change: topics, and brokers' dynamic configs.
fn alterable(resource_type: i8) -> Option<pb::ConfigResourceType> {
    match resource_type {
        RESOURCE_TOPIC => Some(pb::ConfigResourceType::Topic),
        RESOURCE_BROKER => Some(pb::ConfigResourceType::Broker),
        _ => None,
    }
}

fn not_alterable(resource_type: i8) -> kafka_protocol::protocol::StrBytes {
    kstr(format!(
        "altering configs of resource type {resource_type} is not supported: TOPIC (2) and BROKER (4) are"
    ))
}

/// Relays config changes of one topic or broker resource to the controllers: the error
/// code and message.
async fn relay_alter_configs(
    ctx: &Ctx,
    kind: pb::ConfigResourceType,
    name: &str,
    configs: Vec<pb::AlterableConfig>,
    validate_only: bool,
) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    let r = ctx
        .node
        .relay_admin(
            pb::IncrementalAlterConfigsRequest {
                resources: vec![pb::AlterConfigsResource {
                    resource_type: kind as i32,
                    resource_name: name.to_string(),
                    configs,
                }],
                validate_only,
            },
            &ctx.caller,
            |mut c, r| async move { c.incremental_alter_configs(r).await },
        )
        .await;
    match r.map(|r| r.results.into_iter().next()) {
        Ok(Some(r)) => (r.error_code as i16, msg(r.error_message)),
        Ok(None) => (-1, msg("the controller did not answer for it".into())),
        Err(s) => {
            let (code, m) = code_of(&s);
            (code, msg(m))
        }
    }
}

/// AlterConfigs (the original, non-incremental API, as kafkajs and older admin tools send
/// it): the given configs become the topic's (or the BROKER resource's dynamic configs') whole set of overrides; every override not
/// named goes back to its default, as in Kafka. A null value is the same as leaving the key
/// out. Read-modify-write against this broker's image: like Kafka, it races with
/// concurrent changes of the same topic.
pub(super) async fn alter_configs(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as Out;
    let mut responses = Vec::new();
    for res in &req.resources {
        let base = Out::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let Some(kind) = alterable(res.resource_type) else {
            responses.push(
                base.with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(not_alterable(res.resource_type))),
            );
            continue;
        };
        let name = res.resource_name.as_str();
        let image = ctx.node.image();
        let current: Vec<String> = if kind == pb::ConfigResourceType::Broker {
            image
                .broker_configs
                .get(name)
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default()
        } else {
            image
                .topic(name)
                .map(|t| t.config.keys().cloned().collect())
                .unwrap_or_default()
        };
        let configs = alter_configs_ops(
            &current,
            res.configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
        );
        let (code, m) = relay_alter_configs(ctx, kind, name, configs, req.validate_only).await;
        responses.push(base.with_error_code(code).with_error_message(m));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// The operations that make `given` the whole set of overrides of a topic whose overrides
/// are `current`: a SET per given value, a DELETE per other current key.
fn alter_configs_ops<'a>(
    current: &[String],
    given: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Vec<pb::AlterableConfig> {
    let mut ops: Vec<pb::AlterableConfig> = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (name, value) in given {
        named.insert(name.to_string());
        ops.push(pb::AlterableConfig {
            name: name.to_string(),
            op: match value {
                Some(_) => pb::ConfigOp::Set,
                None => pb::ConfigOp::Delete,
            } as i32,
            value: value.map(str::to_string),
        });
    }
    for key in current.iter().filter(|k| !named.contains(*k)) {
        ops.push(pb::AlterableConfig {
            name: key.clone(),
            op: pb::ConfigOp::Delete as i32,
            value: None,
        });
    }
    ops
}

/// DescribeCluster (KIP-700): the live brokers and a broker id for controller-bound requests
/// (as in KRaft, where clients send those to any broker), from this broker's image.
pub(super) async fn describe_cluster(
    ctx: &Ctx,
    req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    // endpoint_type 1 = brokers (v1+); 2 = controllers, which Kafka clients cannot use here.
    if version >= 1 && req.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(INVALID_REQUEST)
            .with_error_message(msg(format!(
                "endpoint type {} is not served: brokers (1) only; controllers speak gRPC",
                req.endpoint_type
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    let image = ctx.node.image();
    let include_fenced = version >= 2 && req.include_fenced_brokers;
    let brokers: Vec<DescribeClusterBroker> = image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id.get()))
                .with_host(kstr(b.kafka_endpoint().host.clone()))
                .with_port(b.kafka_endpoint().port as i32)
                .with_rack(b.rack.clone().map(kstr))
                .with_is_fenced(b.fenced)
        })
        .collect();
    let controller_id = brokers
        .iter()
        .filter(|b| !b.is_fenced)
        .map(|b| b.broker_id.0)
        .min()
        .unwrap_or(ctx.node.id().get());
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(kstr(ctx.node.config.cluster_id.clone()))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}

/// AlterUserScramCredentials (KIP-554; `kafka-configs --entity-type users --alter
/// --add-config 'SCRAM-SHA-256=[password=…]'` and the Java AdminClient): relayed to the
/// controllers as it came (salted passwords only). Per user.
pub(super) async fn alter_user_scram_credentials(
    ctx: &Ctx,
    req: kafka_protocol::messages::AlterUserScramCredentialsRequest,
) -> kafka_protocol::messages::AlterUserScramCredentialsResponse {
    use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult as Out;
    use kafka_protocol::messages::AlterUserScramCredentialsResponse;
    let users: Vec<String> = req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let relayed = pb::AlterUserScramCredentialsRequest {
        deletions: req
            .deletions
            .iter()
            .map(|d| pb::ScramCredentialDeletion {
                name: d.name.to_string(),
                mechanism: d.mechanism as i32,
            })
            .collect(),
        upsertions: req
            .upsertions
            .iter()
            .map(|u| pb::ScramCredentialUpsertion {
                name: u.name.to_string(),
                mechanism: u.mechanism as i32,
                iterations: u.iterations,
                salt: u.salt.clone(),
                salted_password: u.salted_password.clone(),
            })
            .collect(),
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.alter_user_scram_credentials(r).await
        })
        .await;
    let results = match r {
        Ok(r) => r
            .results
            .into_iter()
            .map(|x| {
                Out::default()
                    .with_user(kstr(x.name))
                    .with_error_code(x.error_code as i16)
                    .with_error_message(msg(x.error_message))
            })
            .collect(),
        Err(s) => {
            let (code, m) = code_of(&s);
            users
                .into_iter()
                .map(|u| {
                    Out::default()
                        .with_user(kstr(u))
                        .with_error_code(code)
                        .with_error_message(msg(m.clone()))
                })
                .collect()
        }
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// DescribeUserScramCredentials: users and their mechanisms and iterations, from this
/// broker's metadata image (null or empty `users`: all; an unknown one RESOURCE_NOT_FOUND).
pub(super) async fn describe_user_scram_credentials(
    ctx: &Ctx,
    req: kafka_protocol::messages::DescribeUserScramCredentialsRequest,
) -> kafka_protocol::messages::DescribeUserScramCredentialsResponse {
    use kafka_protocol::messages::describe_user_scram_credentials_response::{
        CredentialInfo, DescribeUserScramCredentialsResult as Out,
    };
    use kafka_protocol::messages::DescribeUserScramCredentialsResponse;
    let image = ctx.node.image();
    let names: Vec<String> = match req.users {
        Some(u) if !u.is_empty() => u.into_iter().map(|u| u.name.to_string()).collect(),
        _ => image.users.keys().cloned().collect(),
    };
    let results = names
        .into_iter()
        .map(|name| match image.users.get(&name) {
            Some(creds) => Out::default().with_user(kstr(name)).with_credential_infos(
                creds
                    .iter()
                    .map(|(m, c)| {
                        CredentialInfo::default()
                            .with_mechanism(m.code())
                            .with_iterations(c.iterations as i32)
                    })
                    .collect(),
            ),
            None => Out::default()
                .with_error_code(pb::ErrorCode::ResourceNotFound as i16)
                .with_error_message(msg(format!("user {name:?} does not exist")))
                .with_user(kstr(name)),
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alter_configs_sets_what_is_given_and_deletes_every_other_override() {
        let current = vec!["retention.ms".to_string(), "segment.ms".to_string()];
        let ops = alter_configs_ops(
            &current,
            [("retention.bytes", Some("100")), ("segment.ms", None)].into_iter(),
        );
        let got: Vec<(String, i32, Option<String>)> =
            ops.into_iter().map(|o| (o.name, o.op, o.value)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "retention.bytes".into(),
                    pb::ConfigOp::Set as i32,
                    Some("100".into())
                ),
                ("segment.ms".into(), pb::ConfigOp::Delete as i32, None),
                ("retention.ms".into(), pb::ConfigOp::Delete as i32, None),
            ]
        );
        // Nothing given: every override goes.
        assert_eq!(alter_configs_ops(&current, std::iter::empty()).len(), 2);
    }
}
