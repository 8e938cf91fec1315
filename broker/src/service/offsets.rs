//! `ListOffsets` and `OffsetForLeaderEpoch`.

use super::*;

pub(super) async fn list_offsets(
    svc: &BrokerService,
    r: Request<ListOffsetsRequest>,
) -> Result<Response<ListOffsetsResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let req = r.into_inner();
    if req.partitions.len() > 10_000 {
        return Err(error_status(
            ErrorCode::InvalidRequest,
            "too many partitions in one request",
            None,
        ));
    }
    let mut results = Vec::new();
    for p in req.partitions {
        let mut out = ListOffsetsResult {
            topic: p.topic.clone(),
            partition: p.partition,
            timestamp: -1,
            offset: -1,
            leader_epoch: -1,
            ..Default::default()
        };
        let r: Result<(), Status> = async {
            access.topic(Operation::Describe, &p.topic)?;
            let part = svc.data.lookup(&p.topic, p.partition).await?;
            let (epoch, offset, timestamp) = part
                .list_offset(p.timestamp, p.current_leader_epoch)
                .await
                .map_err(|e| svc.data.status(e, &p.topic, p.partition))?;
            out.leader_epoch = epoch;
            out.offset = offset;
            out.timestamp = timestamp;
            Ok(())
        }
        .await;
        if let Err(s) = r {
            let (code, msg, leader) = in_band_error(&s);
            out.error_code = code;
            out.error_message = msg;
            out.current_leader = leader;
        }
        results.push(out);
    }
    Ok(Response::new(ListOffsetsResponse { results }))
}

pub(super) async fn offset_for_leader_epoch(
    svc: &BrokerService,
    r: Request<OffsetForLeaderEpochRequest>,
) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let req = r.into_inner();
    access.topic(Operation::Describe, &req.topic)?;
    let part = svc.data.lookup(&req.topic, req.partition).await?;
    let (epoch, end) = part
        .epoch_end_offset(req.leader_epoch, req.current_leader_epoch)
        .await
        .map_err(|e| svc.data.status(e, &req.topic, req.partition))?;
    Ok(Response::new(OffsetForLeaderEpochResponse {
        topic: req.topic,
        partition: req.partition,
        epoch_end_offset: Some(EpochEndOffset {
            leader_epoch: epoch as i32,
            end_offset: end,
        }),
    }))
}
