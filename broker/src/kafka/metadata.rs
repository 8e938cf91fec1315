//! Metadata: brokers, topics and partitions from this broker's image.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use sluice_metadata::acl::Operation;
use sluice_metadata::{MetadataImage, TopicImage, NO_LEADER};

use super::{kstr, Ctx};

/// Topics Kafka clients treat as internal (`exclude.internal.topics`); only these.
const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION and LEADER_NOT_AVAILABLE.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;

pub(super) async fn metadata(ctx: &Ctx, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v4+ says whether to auto-create; older versions always ask (Kafka's behaviour).
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    let named: Vec<String> = req
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
        .collect();
    let access = ctx.access();
    let created = if allow_auto_create {
        ctx.node.auto_create(&named, &access).await
    } else {
        Vec::new()
    };
    let image = ctx.node.image();
    let brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id.get()))
                .with_host(kstr(b.kafka_endpoint().host.clone()))
                .with_port(b.kafka_endpoint().port as i32)
                .with_rack(b.rack.clone().map(kstr))
        })
        .collect();
    // A real broker id (clients use it for admin requests); the lowest live one.
    let controller_id = brokers
        .iter()
        .map(|b| b.node_id.0)
        .min()
        .unwrap_or(ctx.node.id().get());
    // v0: an empty list means every topic; v1+: null does. v10+ may ask by id (name null).
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
        None => None,
        Some(ts) if ts.is_empty() && version == 0 => None,
        Some(ts) => Some(
            ts.into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                .collect(),
        ),
    };
    let topics = match wanted {
        None => image
            .topics
            .values()
            .filter(|t| access.topic(Operation::Describe, &t.name).is_ok())
            .map(|t| topic(&image, t))
            .collect(),
        Some(asked) => asked
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(n) => image.topic(n),
                    None => image.topics.get(&sluice_metadata::TopicId(*id.as_bytes())),
                };
                let name_of = |t: Option<&TopicImage>| t.map(|t| t.name.clone()).or(name.clone());
                if let Some(n) = name_of(found.map(|t| &**t)) {
                    if let Err(s) = access.topic(Operation::Describe, &n) {
                        // Refused whether or not it exists: existence is not revealed.
                        return MetadataResponseTopic::default()
                            .with_error_code(super::code_of(&s).0)
                            .with_name(Some(TopicName(kstr(n))))
                            .with_topic_id(id);
                    }
                }
                match found {
                    Some(t) => topic(&image, t),
                    None => unknown_topic(name, id, &created),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(kstr(ctx.node.config.cluster_id.clone())))
        .with_controller_id(BrokerId(controller_id))
        .with_topics(topics)
}

/// Kafka's UNKNOWN_TOPIC_ID.
const UNKNOWN_TOPIC_ID: i16 = 100;
/// Kafka's INVALID_TOPIC_EXCEPTION.
const INVALID_TOPIC_EXCEPTION: i16 = 17;

/// The answer for a requested topic this broker's image lacks: asked by name, it was just
/// auto-created (LEADER_NOT_AVAILABLE: not in our image yet, the client asks again), is not a
/// legal name (INVALID_TOPIC_EXCEPTION) or does not exist (UNKNOWN_TOPIC_OR_PARTITION); asked by id (v10+, name null), no topic has that
/// id (UNKNOWN_TOPIC_ID, with the id), as Kafka answers.
pub(super) fn unknown_topic(
    name: Option<String>,
    id: uuid::Uuid,
    created: &[String],
) -> MetadataResponseTopic {
    match name {
        // A name no topic can have (Kafka's `Topic.validate`): INVALID_TOPIC_EXCEPTION, so a
        // producer fails its records for it instead of waiting for the topic to appear.
        Some(n) if sluice_metadata::validate::validate_topic_name(&n).is_err() => {
            MetadataResponseTopic::default()
                .with_error_code(INVALID_TOPIC_EXCEPTION)
                .with_name(Some(TopicName(kstr(n))))
        }
        Some(n) => MetadataResponseTopic::default()
            .with_error_code(if created.contains(&n) {
                LEADER_NOT_AVAILABLE
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            })
            .with_name(Some(TopicName(kstr(n)))),
        None => MetadataResponseTopic::default()
            .with_error_code(UNKNOWN_TOPIC_ID)
            .with_name(None)
            .with_topic_id(id),
    }
}

fn topic(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = |v: &[sluice_metadata::BrokerId]| {
                v.iter().map(|b| BrokerId(b.get())).collect::<Vec<_>>()
            };
            MetadataResponsePartition::default()
                .with_error_code(if p.leader == NO_LEADER {
                    LEADER_NOT_AVAILABLE
                } else {
                    0
                })
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader.get()))
                .with_leader_epoch(p.leader_epoch.get())
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(
                    p.replicas
                        .iter()
                        .filter(|b| !image.is_unfenced(**b))
                        .map(|b| BrokerId(b.get()))
                        .collect(),
                )
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(kstr(t.name.clone()))))
        .with_topic_id(uuid::Uuid::from_bytes(t.id.0))
        .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
        .with_partitions(partitions)
}
