//! ListOffsets and OffsetForLeaderEpoch.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::{code_of, Ctx};

pub(super) async fn list_offsets(
    ctx: &Ctx,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = async {
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
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = async {
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
