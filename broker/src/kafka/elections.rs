//! ElectLeaders (KIP-183/KIP-460, v0–2), relayed to the controllers: `kafka-leader-election.sh
//! --election-type preferred|unclean` and `AdminClient.electLeaders` work unchanged. Results are
//! grouped by topic, in the order asked.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};

pub(super) async fn elect_leaders(
    ctx: &Ctx,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let partitions: Vec<pb::ElectPartition> = req
        .topic_partitions
        .iter()
        .flatten()
        .flat_map(|t| {
            t.partitions.iter().map(|&p| pb::ElectPartition {
                topic: t.topic.0.as_str().to_string(),
                partition: p,
            })
        })
        .collect();
    let relayed = pb::ElectLeadersRequest {
        // v0 has no election type: preferred.
        election_type: if version == 0 {
            0
        } else {
            req.election_type as i32
        },
        partitions: partitions.clone(),
        all_partitions: req.topic_partitions.is_none(),
        dry_run: false,
    };
    let r = ctx
        .node
        .relay_admin(relayed, &ctx.caller, |mut c, r| async move {
            c.elect_leaders(r).await
        })
        .await;
    let results: Vec<(String, i32, i16, Option<String>)> = match r {
        Ok(resp) => resp
            .results
            .into_iter()
            .map(|r| {
                (
                    r.topic,
                    r.partition,
                    r.error_code as i16,
                    (!r.error_message.is_empty()).then_some(r.error_message),
                )
            })
            .collect(),
        Err(s) => {
            let (code, m) = code_of(&s);
            if partitions.is_empty() {
                // v0 has no top-level error code: an empty answer (nothing elected).
                return ElectLeadersResponse::default().with_error_code(if version == 0 {
                    0
                } else {
                    code
                });
            }
            partitions
                .into_iter()
                .map(|p| (p.topic, p.partition, code, Some(m.clone())))
                .collect()
        }
    };
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code, message) in results {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(kstr));
        match by_topic.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(result),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(kstr(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(by_topic)
}
