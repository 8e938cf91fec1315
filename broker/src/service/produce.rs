//! `Produce` (unary) and `ProduceStream` (ordered appends, replication waits overlapping).

use super::*;

pub(super) async fn produce(
    svc: &BrokerService,
    r: Request<ProduceRequest>,
) -> Result<Response<ProduceResponse>, Status> {
    let t = Instant::now();
    let caller = caller_of(&r);
    let client = crate::quota::client_id_of(&r);
    let access = Access::new(&svc.node, &caller);
    let req = r.into_inner();
    let produced = crate::quota::produce_bytes(&req);
    let appended = match access.produce(&req).await {
        Ok(()) => svc.data.produce_append(req).await,
        Err(s) => Err(s),
    };
    // Handling time is the append's; the wait for acks is not counted.
    let usage = crate::quota::Usage {
        produced,
        handling: t.elapsed(),
        ..Default::default()
    };
    let r = match appended {
        Ok(a) => svc.data.produce_complete(a).await,
        Err(s) => Err(s),
    };
    observe("produce", t, &r);
    let mut resp = r?;
    resp.throttle_time_ms = throttle(svc, &caller, &client, usage).await;
    Ok(Response::new(resp))
}

/// Charges a gRPC call's usage to the caller's quotas and, when it is over one, holds the
/// answer back for the throttle time (gRPC has no channel to mute: the client waits for its
/// answer). Returns `throttle_time_ms`.
pub(super) async fn throttle(
    svc: &BrokerService,
    caller: &sluice_metadata::acl::Caller,
    client: &str,
    usage: crate::quota::Usage,
) -> i32 {
    let t = svc
        .node
        .quotas
        .charge(&svc.node.image(), caller, client, usage);
    if t.is_zero() {
        return 0;
    }
    metrics::counter!("sluice_quota_throttled_requests_total").increment(1);
    tokio::time::sleep(t).await;
    crate::quota::throttle_ms(t)
}

pub(super) async fn produce_stream(
    svc: &BrokerService,
    r: Request<Streaming<ProduceRequest>>,
) -> Result<Response<ProduceStreamOut>, Status> {
    let caller = caller_of(&r);
    let client = crate::quota::client_id_of(&r);
    let mut inbound = r.into_inner();
    let (tx, rx) = mpsc::channel(PRODUCE_STREAM_IN_FLIGHT_MAX);
    let svc = svc.clone();
    // Appends run one at a time in arrival order (a producer's batches keep their
    // sequence); replication waits overlap, up to PRODUCE_STREAM_IN_FLIGHT_MAX, and are
    // answered in request order. Ends when the client closes its side or goes away.
    tokio::spawn(async move {
        let mut waiting: futures::stream::FuturesOrdered<tokio::task::JoinHandle<ProduceResponse>> =
            futures::stream::FuturesOrdered::new();
        let mut inbound_open = true;
        let mut muted_until: Option<tokio::time::Instant> = None;
        loop {
            if !inbound_open && waiting.is_empty() {
                return;
            }
            let muted = muted_until.is_some_and(|m| m > tokio::time::Instant::now());
            tokio::select! {
                biased;
                () = tx.closed() => return,
                () = tokio::time::sleep_until(muted_until.unwrap_or_else(tokio::time::Instant::now)), if muted => {
                    muted_until = None;
                }
                Some(joined) = waiting.next(), if !waiting.is_empty() => {
                    let resp: Result<ProduceResponse, Status> = joined
                        .map_err(|e: tokio::task::JoinError| Status::internal(format!("produce task failed: {e}")));
                    if tx.send(resp).await.is_err() {
                        return;
                    }
                }
                msg = inbound.message(), if inbound_open && !muted && waiting.len() < PRODUCE_STREAM_IN_FLIGHT_MAX => {
                    let Ok(Some(req)) = msg else {
                        inbound_open = false;
                        continue;
                    };
                    let (id, topic, partition) =
                        (req.correlation_id, req.topic.clone(), req.partition);
                    let svc = svc.clone();
                    let t = Instant::now();
                    // Checked per request: an ACL removed while the stream is open applies.
                    let produced = crate::quota::produce_bytes(&req);
                    let appended = match Access::new(&svc.node, &caller).produce(&req).await {
                        Ok(()) => svc.data.produce_append(req).await,
                        Err(s) => Err(s),
                    };
                    // Over a quota, the stream is not read for the throttle time (the
                    // answers of appends already made keep flowing meanwhile).
                    let usage = crate::quota::Usage {
                        produced,
                        handling: t.elapsed(),
                        ..Default::default()
                    };
                    let held = svc.node.quotas.charge(&svc.node.image(), &caller, &client, usage);
                    let throttle_time_ms = crate::quota::throttle_ms(held);
                    if !held.is_zero() {
                        metrics::counter!("sluice_quota_throttled_requests_total").increment(1);
                        muted_until = Some(tokio::time::Instant::now() + held);
                    }
                    // Each wait runs as its own task: a future parked in `waiting` while
                    // this loop awaits the next append must not hold anything the append
                    // needs (a tokio mutex permit handed to an unpolled waiter deadlocked
                    // the partition: every fetch and the ISR loop stalled behind it).
                    waiting.push_back(tokio::spawn(async move {
                        let r = match appended {
                            Ok(a) => svc.data.produce_complete(a).await,
                            Err(s) => Err(s),
                        };
                        observe("produce", t, &r);
                        let r = r.map(|mut resp| {
                            resp.throttle_time_ms = throttle_time_ms;
                            resp
                        });
                        r.unwrap_or_else(|s| {
                            let (code, msg, leader) = in_band_error(&s);
                            ProduceResponse {
                                correlation_id: id,
                                error_code: code,
                                error_message: msg,
                                topic,
                                partition,
                                base_offset: -1,
                                last_offset: -1,
                                log_append_time_ms: -1,
                                log_start_offset: -1,
                                current_leader: leader,
                                throttle_time_ms,
                            }
                        })
                    }));
                }
                else => return,
            }
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
