//! `InitProducerId`: producer ids for idempotent producers.

use super::*;

pub(super) async fn init_producer_id(
    svc: &BrokerService,
    r: Request<InitProducerIdRequest>,
) -> Result<Response<InitProducerIdResponse>, Status> {
    let access = Access::new(&svc.node, &caller_of(&r));
    let r = r.into_inner();
    access.idempotent_write()?;
    if r.transactional_id.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(error_status(
                ErrorCode::UnsupportedVersion,
                "transactions are not supported; leave transactional_id unset for an idempotent producer",
                None,
            ));
    }
    let producer_id = svc.node.next_producer_id(access.caller()).await?;
    Ok(Response::new(InitProducerIdResponse {
        producer_id,
        producer_epoch: 0,
    }))
}
