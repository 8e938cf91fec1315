//! `Produce` (unary) and `ProduceStream` (ordered appends, replication waits overlapping).

use super::*;

pub(super) async fn produce(
    svc: &BrokerService,
    r: Request<ProduceRequest>,
) -> Result<Response<ProduceResponse>, Status> {
    let t = Instant::now();
    let access = Access::new(&svc.node, &caller_of(&r));
    let req = r.into_inner();
    let r = match access.produce(&req).await {
        Ok(()) => svc.data.produce_one(req).await,
        Err(s) => Err(s),
    };
    observe("produce", t, &r);
    Ok(Response::new(r?))
}

pub(super) async fn produce_stream(
    svc: &BrokerService,
    r: Request<Streaming<ProduceRequest>>,
) -> Result<Response<ProduceStreamOut>, Status> {
    let caller = caller_of(&r);
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
        loop {
            if !inbound_open && waiting.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                () = tx.closed() => return,
                Some(joined) = waiting.next(), if !waiting.is_empty() => {
                    let resp: Result<ProduceResponse, Status> = joined
                        .map_err(|e: tokio::task::JoinError| Status::internal(format!("produce task failed: {e}")));
                    if tx.send(resp).await.is_err() {
                        return;
                    }
                }
                msg = inbound.message(), if inbound_open && waiting.len() < PRODUCE_STREAM_IN_FLIGHT_MAX => {
                    let Ok(Some(req)) = msg else {
                        inbound_open = false;
                        continue;
                    };
                    let (id, topic, partition) =
                        (req.correlation_id, req.topic.clone(), req.partition);
                    let svc = svc.clone();
                    let t = Instant::now();
                    // Checked per request: an ACL removed while the stream is open applies.
                    let appended = match Access::new(&svc.node, &caller).produce(&req).await {
                        Ok(()) => svc.data.produce_append(req).await,
                        Err(s) => Err(s),
                    };
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
