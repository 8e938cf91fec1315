//! The consumer group RPCs, answered by the group coordinator.

use super::*;

pub(super) async fn find_coordinator(
    svc: &BrokerService,
    r: Request<FindCoordinatorRequest>,
) -> Result<Response<FindCoordinatorResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let r = r.into_inner();
    Ok(Response::new(
        svc.groups()?.find_coordinator(&r.group_id, &access).await?,
    ))
}

pub(super) async fn consumer_group_heartbeat(
    svc: &BrokerService,
    r: Request<ConsumerGroupHeartbeatRequest>,
) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
    let host = r
        .extensions()
        .get::<crate::listener::PeerInfo>()
        .and_then(|p| p.remote)
        .or_else(|| r.remote_addr())
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    let access = Access::new(&svc.node, &caller_of(&r));
    Ok(Response::new(
        svc.groups()?
            .heartbeat(r.into_inner(), host, &access)
            .await?,
    ))
}

pub(super) async fn offset_commit(
    svc: &BrokerService,
    r: Request<OffsetCommitRequest>,
) -> Result<Response<OffsetCommitResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    Ok(Response::new(
        svc.groups()?.commit(r.into_inner(), &access).await?,
    ))
}

pub(super) async fn offset_fetch(
    svc: &BrokerService,
    r: Request<OffsetFetchRequest>,
) -> Result<Response<OffsetFetchResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    Ok(Response::new(
        svc.groups()?.fetch(r.into_inner(), &access).await?,
    ))
}

pub(super) async fn list_groups(
    svc: &BrokerService,
    r: Request<ListGroupsRequest>,
) -> Result<Response<ListGroupsResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let filter = r.into_inner().states_filter;
    let mut groups = svc.groups()?.list(&access).await;
    if !filter.is_empty() {
        groups.retain(|g| filter.contains(&g.group_state));
    }
    Ok(Response::new(ListGroupsResponse { groups }))
}

pub(super) async fn describe_groups(
    svc: &BrokerService,
    r: Request<DescribeGroupsRequest>,
) -> Result<Response<DescribeGroupsResponse>, Status> {
    let coordinator = svc.groups()?;
    let access = Access::new(&svc.node, &caller_of(&r));
    let mut groups = Vec::new();
    for g in r.into_inner().group_ids {
        groups.push(coordinator.describe(&g, &access).await);
    }
    Ok(Response::new(DescribeGroupsResponse { groups }))
}

pub(super) async fn delete_groups(
    svc: &BrokerService,
    r: Request<DeleteGroupsRequest>,
) -> Result<Response<DeleteGroupsResponse>, Status> {
    let coordinator = svc.groups()?;
    let access = Access::new(&svc.node, &caller_of(&r));
    let mut results = Vec::new();
    for g in r.into_inner().group_ids {
        let (error_code, error_message) = match coordinator.delete(&g, &access).await {
            Ok(()) => (0, String::new()),
            Err(e) => in_band_error(&e).into_parts(),
        };
        results.push(DeleteGroupResult {
            group_id: g,
            error_code,
            error_message,
        });
    }
    Ok(Response::new(DeleteGroupsResponse { results }))
}
