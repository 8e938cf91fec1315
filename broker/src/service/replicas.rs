//! `DescribeReplicas`: this broker's local replicas as they are — role, offsets and, as
//! leader, each follower's progress — for `sluice doctor`. Describe on the cluster.

use super::*;

pub(super) async fn describe_replicas(
    svc: &BrokerService,
    r: Request<DescribeReplicasRequest>,
) -> Result<Response<DescribeReplicasResponse>, Status> {
    Access::new(&svc.node, &caller_of(&r)).cluster(Operation::Describe)?;
    let req = r.into_inner();
    let wanted: Vec<(String, i32, Option<crate::partition::PartitionHandle>)> =
        if req.partitions.is_empty() {
            svc.node
                .local_partitions()
                .into_iter()
                .map(|h| (h.topic.clone(), h.index, Some(h)))
                .collect()
        } else {
            req.partitions
                .iter()
                .map(|p| {
                    let h = svc.node.partition(&p.topic, p.partition);
                    (p.topic.clone(), p.partition, h)
                })
                .collect()
        };
    let me = svc.node.id().get();
    let mut replicas = Vec::with_capacity(wanted.len());
    for (topic, partition, handle) in wanted {
        let status = |code: ErrorCode, message: String| ReplicaStatus {
            topic: topic.clone(),
            partition,
            error_code: code as i32,
            error_message: message,
            ..Default::default()
        };
        let Some(h) = handle else {
            replicas.push(status(
                ErrorCode::ReplicaNotAvailable,
                format!("broker {me} has no open replica of {topic}-{partition}"),
            ));
            continue;
        };
        let followers = match h.followers().await {
            Ok(f) => f,
            Err(e) => {
                let (code, message, _) = in_band_error(&e.into_status(None));
                let code = ErrorCode::try_from(code).unwrap_or(ErrorCode::UnknownServerError);
                replicas.push(status(code, message));
                continue;
            }
        };
        let o = h.offsets();
        replicas.push(ReplicaStatus {
            is_leader: o.is_leader,
            leader_epoch: o.leader_epoch,
            log_start_offset: o.log_start_offset,
            log_end_offset: o.log_end_offset,
            high_watermark: o.high_watermark,
            followers: followers
                .into_iter()
                .map(|(id, leo, ago)| FollowerProgress {
                    broker_id: id.get(),
                    log_end_offset: leo.unwrap_or(-1),
                    caught_up_ms_ago: ago.as_millis() as i64,
                })
                .collect(),
            ..status(ErrorCode::None, String::new())
        });
    }
    replicas.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(Response::new(DescribeReplicasResponse { replicas }))
}
