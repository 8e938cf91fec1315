//! Produce (one record batch per partition, passed through as sent) and InitProducerId.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName,
};
use sluice_proto::v1 as pb;

use super::{code_of, kstr, Ctx};
use crate::data::PendingProduce;

/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;

/// One partition's append: its index and the pending produce, or (code, message).
type PartitionAppend = (i32, Result<PendingProduce, (i16, String)>);

/// The appends of one request, in request order, before replication.
pub(super) struct Appended {
    acks: i16,
    topics: Vec<(TopicName, Vec<PartitionAppend>)>,
}

/// Appends every partition's batch, one after another (the caller runs requests of one
/// connection in order, so a producer's batches keep their sequence).
pub(super) async fn append(ctx: &Ctx, req: ProduceRequest) -> Appended {
    let transactional = req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty());
    let access = ctx.access();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let mut parts = Vec::with_capacity(t.partition_data.len());
        let allowed = access.write(t.name.0.as_str()).map_err(|s| code_of(&s));
        for p in t.partition_data {
            let r = if transactional {
                Err((
                    INVALID_REQUEST,
                    "transactions are not supported; produce without a transactional.id".into(),
                ))
            } else if let Err(refused) = &allowed {
                Err(refused.clone())
            } else if let Err(s) = access
                .producer_ids(p.records.as_deref().unwrap_or_default())
                .await
            {
                Err(code_of(&s))
            } else {
                ctx.data
                    .produce_append(pb::ProduceRequest {
                        correlation_id: 0,
                        topic: t.name.0.as_str().to_string(),
                        partition: p.index,
                        acks: Some(req.acks as i32),
                        timeout_ms: req.timeout_ms,
                        payload: Some(pb::produce_request::Payload::RecordBatch(
                            p.records.unwrap_or_default(),
                        )),
                    })
                    .await
                    .map_err(|s| code_of(&s))
            };
            parts.push((p.index, r));
        }
        topics.push((t.name, parts));
    }
    Appended {
        acks: req.acks,
        topics,
    }
}

/// Waits for replication (acks=all) of every appended partition at once and builds the
/// answer. acks=0 gets none, or the connection closes when a partition failed (the only
/// signal such a producer gets, as in Kafka).
pub(super) async fn complete(ctx: &Ctx, a: Appended) -> super::Answer {
    let acks = a.acks;
    let mut responses = Vec::with_capacity(a.topics.len());
    for (name, parts) in a.topics {
        let waits = parts.into_iter().map(|(index, r)| async move {
            let r = match r {
                Ok(pending) => ctx
                    .data
                    .produce_complete(pending)
                    .await
                    .map_err(|s| code_of(&s)),
                Err(e) => Err(e),
            };
            let p = PartitionProduceResponse::default().with_index(index);
            match r {
                Ok(resp) => p
                    .with_base_offset(resp.base_offset)
                    .with_log_start_offset(resp.log_start_offset),
                Err((code, message)) => p
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_error_message(Some(kstr(message))),
            }
        });
        let partition_responses = futures::future::join_all(waits).await;
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks != 0 {
        return super::Answer::Reply(Box::new(
            ProduceResponse::default().with_responses(responses).into(),
        ));
    }
    let failed: Vec<String> = responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .filter(|p| p.error_code != 0)
                .map(move |p| format!("{}-{} (error {})", t.name.0.as_str(), p.index, p.error_code))
        })
        .collect();
    if failed.is_empty() {
        super::Answer::Nothing
    } else {
        super::Answer::Close(format!("an acks=0 produce failed on {}", failed.join(", ")))
    }
}

/// InitProducerId for an idempotent producer; transactions are refused.
pub(super) async fn init_producer_id(
    ctx: &Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        return InitProducerIdResponse::default().with_error_code(INVALID_REQUEST);
    }
    if let Err(s) = ctx.access().idempotent_write() {
        return InitProducerIdResponse::default().with_error_code(code_of(&s).0);
    }
    match ctx.node.next_producer_id(&ctx.caller).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(s) => InitProducerIdResponse::default().with_error_code(code_of(&s).0),
    }
}
