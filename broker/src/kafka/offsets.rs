//! ListOffsets, OffsetForLeaderEpoch and DescribeProducers.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProducerId,
};

use super::{code_of, Ctx};
use sluice_metadata::acl::Operation;

pub(super) async fn list_offsets(
    ctx: &Ctx,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let access = ctx.access();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = async {
                access.topic(Operation::Describe, &name)?;
                let part = ctx.data.lookup(&name, p.partition_index).await?;
                // current_leader_epoch is a v4+ field (-1, no check, before).
                part.list_offset(p.timestamp, Some(p.current_leader_epoch))
                    .await
                    .map_err(|e| ctx.data.status(e, &name, p.partition_index))
            }
            .await;
            let out =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(match r {
                Ok((epoch, offset, timestamp)) => {
                    let out = out.with_offset(offset).with_timestamp(timestamp);
                    // The leader epoch is a v4+ field.
                    if version >= 4 {
                        out.with_leader_epoch(epoch)
                    } else {
                        out
                    }
                }
                Err(s) => out.with_error_code(code_of(&s).0),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

pub(super) async fn offset_for_leader_epoch(
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let access = ctx.access();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = async {
                access.topic(Operation::Describe, &name)?;
                let part = ctx.data.lookup(&name, p.partition).await?;
                part.epoch_end_offset(p.leader_epoch, Some(p.current_leader_epoch))
                    .await
                    .map_err(|e| ctx.data.status(e, &name, p.partition))
            }
            .await;
            let out = EpochEndOffset::default().with_partition(p.partition);
            partitions.push(match r {
                Ok((epoch, end)) => out.with_leader_epoch(epoch as i32).with_end_offset(end),
                Err(s) => out.with_error_code(code_of(&s).0),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// DescribeProducers (KIP-664): the idempotent producers each partition's leader tracks, as
/// `kafka-transactions.sh describe-producers` and kafka-python's `describe_producers` ask.
/// No transactions here, so `coordinator_epoch` and `current_txn_start_offset` are -1.
pub(super) async fn describe_producers(
    ctx: &Ctx,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let access = ctx.access();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let r = async {
                access.topic(Operation::Read, &name)?;
                let part = ctx.data.lookup(&name, index).await?;
                part.producers()
                    .await
                    .map_err(|e| ctx.data.status(e, &name, index))
            }
            .await;
            let out = PartitionResponse::default().with_partition_index(index);
            partitions.push(match r {
                Ok(all) => out.with_active_producers(
                    all.into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.producer_epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect(),
                ),
                Err(s) => {
                    let (code, m) = code_of(&s);
                    out.with_error_code(code)
                        .with_error_message(Some(super::kstr(m)))
                }
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
