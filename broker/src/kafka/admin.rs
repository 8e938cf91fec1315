//! Topic administration over the Kafka protocol: CreateTopics and DeleteTopics, relayed to
//! the controller quorum like Sluice's own Admin calls (any broker answers, as in KRaft,
//! where brokers forward them), so `kafka-topics.sh`, `AdminClient.createTopics` and
//! kafka-python's `KafkaAdminClient` work unchanged.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
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
        ctx.node.create_topics(specs, req.validate_only).await
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
        ctx.node.delete_topics(known).await
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
