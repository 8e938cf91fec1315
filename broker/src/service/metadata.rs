//! `Metadata`: the cluster as this broker's image knows it.

use super::*;

pub(super) async fn metadata(
    svc: &BrokerService,
    r: Request<MetadataRequest>,
) -> Result<Response<MetadataResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let req = r.into_inner();
    let created = if req.allow_auto_topic_creation {
        svc.node.auto_create(&req.topics, &access).await
    } else {
        Vec::new()
    };
    let image = svc.node.image();
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| BrokerEndpoint {
            broker_id: b.id.get(),
            host: b.endpoint.host.clone(),
            port: b.endpoint.port as i32,
            rack: b.rack.clone(),
        })
        .collect();
    let describe = |t: &sluice_metadata::TopicImage| TopicMetadata {
        error_code: 0,
        error_message: String::new(),
        name: t.name.clone(),
        topic_id: t.id.to_string(),
        is_internal: t.name.starts_with("__"),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionMetadata {
                error_code: if p.leader == NO_LEADER {
                    ErrorCode::LeaderNotAvailable as i32
                } else {
                    0
                },
                partition: i as i32,
                leader_id: p.leader.get(),
                leader_epoch: p.leader_epoch.get(),
                replicas: BrokerId::to_wire(&p.replicas),
                isr: BrokerId::to_wire(&p.isr),
                offline_replicas: p
                    .replicas
                    .iter()
                    .filter(|b| !image.is_unfenced(**b))
                    .map(|b| b.get())
                    .collect(),
            })
            .collect(),
    };
    let topics = if req.topics.is_empty() {
        image
            .topics
            .values()
            .filter(|t| access.topic(Operation::Describe, &t.name).is_ok())
            .map(|t| describe(t))
            .collect()
    } else {
        req.topics
            .iter()
            .map(
                |n| match (access.topic(Operation::Describe, n), image.topic(n)) {
                    // Refused whether or not it exists: existence is not revealed.
                    (Err(s), _) => {
                        let (error_code, error_message, _) = in_band_error(&s);
                        TopicMetadata {
                            error_code,
                            error_message,
                            name: n.clone(),
                            ..Default::default()
                        }
                    }
                    (Ok(()), Some(t)) => describe(t),
                    (Ok(()), None) if created.contains(n) => TopicMetadata {
                        error_code: ErrorCode::LeaderNotAvailable as i32,
                        error_message: format!("topic {n:?} was just created; retry"),
                        name: n.clone(),
                        ..Default::default()
                    },
                    (Ok(()), None) => TopicMetadata {
                        error_code: ErrorCode::UnknownTopicOrPartition as i32,
                        error_message: format!("topic {n:?} does not exist"),
                        name: n.clone(),
                        ..Default::default()
                    },
                },
            )
            .collect()
    };
    Ok(Response::new(MetadataResponse {
        brokers,
        cluster_id: svc.node.config.cluster_id.clone(),
        controller_id: -1,
        topics,
        metadata_offset: image.offset,
    }))
}
