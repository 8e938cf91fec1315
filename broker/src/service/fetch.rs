//! `Fetch` (consumers and followers, long poll) and `FetchStream` (consumers).

use super::*;

pub(super) async fn fetch(
    svc: &BrokerService,
    r: Request<FetchRequest>,
) -> Result<Response<FetchResponse>, Status> {
    let t = Instant::now();
    if let Some(id) = r.get_ref().replica_id.filter(|id| *id >= 0) {
        require_broker(&svc.node, &r, id)?;
    } else {
        Access::new(&svc.node, &caller_of(&r)).topic(Operation::Read, &r.get_ref().topic)?;
    }
    let caller = caller_of(&r);
    let client = crate::quota::client_id_of(&r);
    let req = r.into_inner();
    let r = svc.data.fetch_one(&req).await;
    let kind = if req.replica_id.is_some() {
        "fetch_follower"
    } else {
        "fetch_consumer"
    };
    observe(kind, t, &r);
    if let Ok(resp) = &r {
        if req.replica_id.is_none() && !resp.record_batches.is_empty() {
            metrics::counter!("sluice_bytes_out_total", "topic" => req.topic.clone())
                .increment(resp.record_batches.len() as u64);
        }
    }
    let mut resp = r?;
    if req.replica_id.is_none_or(|id| id < 0) {
        let usage = crate::quota::Usage {
            fetched: fetched_bytes(&resp),
            ..Default::default()
        };
        resp.throttle_time_ms = super::produce::throttle(svc, &caller, &client, usage).await;
    }
    Ok(Response::new(resp))
}

/// Records bytes of a fetch answer.
fn fetched_bytes(resp: &FetchResponse) -> usize {
    resp.record_batches.len()
        + resp
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
            })
            .sum::<usize>()
}

pub(super) async fn fetch_stream(
    svc: &BrokerService,
    r: Request<FetchRequest>,
) -> Result<Response<FetchStreamOut>, Status> {
    let caller = caller_of(&r);
    let client = crate::quota::client_id_of(&r);
    let mut req = r.into_inner();
    if req.replica_id.is_some_and(|r| r >= 0) {
        return Err(error_status(
            ErrorCode::InvalidRequest,
            "followers must use unary Fetch",
            None,
        ));
    }
    if req.max_wait_ms == 0 {
        req.max_wait_ms = 500;
    }
    let (tx, rx) = mpsc::channel(4);
    let svc = svc.clone();
    // Ends when the client goes away or a fetch fails (reported in-band).
    tokio::spawn(async move {
        let _open = OpenFetchStream::new();
        loop {
            // A client that went away ends the long poll at once (review defect 6):
            // the stream's task must not keep polling, nor keep a deleted log open.
            let r = tokio::select! {
                biased;
                () = tx.closed() => return,
                // Checked per poll: an ACL removed while the stream is open applies.
                r = async {
                    Access::new(&svc.node, &caller).topic(Operation::Read, &req.topic)?;
                    svc.data.fetch_one(&req).await
                } => r,
            };
            match r {
                Ok(mut resp) => {
                    let next = resp.next_fetch_offset;
                    let empty = resp.record_batches.is_empty() && resp.records.is_empty();
                    let usage = crate::quota::Usage {
                        fetched: fetched_bytes(&resp),
                        ..Default::default()
                    };
                    // Over a quota, the next poll waits for the throttle time.
                    let held = svc
                        .node
                        .quotas
                        .charge(&svc.node.image(), &caller, &client, usage);
                    resp.throttle_time_ms = crate::quota::throttle_ms(held);
                    if !empty && tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    req.fetch_offset = next;
                    if !held.is_zero() {
                        metrics::counter!("sluice_quota_throttled_requests_total").increment(1);
                        tokio::select! {
                            () = tx.closed() => return,
                            () = tokio::time::sleep(held) => {}
                        }
                    }
                }
                Err(s) => {
                    let (code, msg, leader) = in_band_error(&s);
                    let _ = tx
                        .send(Ok(FetchResponse {
                            error_code: code,
                            error_message: msg,
                            current_leader: leader,
                            topic: req.topic.clone(),
                            partition: req.partition,
                            ..Default::default()
                        }))
                        .await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
