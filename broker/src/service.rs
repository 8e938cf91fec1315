//! `sluice.v1.Broker` (produce, fetch, offsets, metadata) and an `Admin` relay to the
//! controllers, plus the server that hosts them with health and reflection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sluice_metadata::NO_LEADER;
use sluice_proto::status::{error_status, error_status_with};
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::admin_server::{Admin, AdminServer};
use sluice_proto::v1::broker_server::{Broker, BrokerServer};
use sluice_proto::v1::*;
use sluice_storage::batch::batches;
use sluice_storage::{RecordBatchBuilder, StorageError};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::group::GroupCoordinator;
use crate::node::BrokerNode;
use crate::partition::state::{diverging_epoch, AcksAll};
use crate::partition::{Partition, Role};

/// Largest produce/fetch message (a few max-size batches).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records in one plain-records produce.
pub const RECORDS_PER_REQUEST_MAX: usize = 65_536;
/// Default and maximum `max_bytes` of a fetch.
pub const FETCH_BYTES_DEFAULT: usize = 1 << 20;
/// Upper bound on a fetch's `max_bytes`.
pub const FETCH_BYTES_MAX: usize = 32 << 20;
/// Longest long poll.
pub const FETCH_WAIT_MS_MAX: i32 = 30_000;
/// Default produce timeout (Kafka `request.timeout.ms`).
pub const PRODUCE_TIMEOUT_MS_DEFAULT: i32 = 30_000;

/// A produce that is appended and not yet answered (see [`BrokerService::produce_complete`]).
pub struct Appended {
    part: Arc<Partition>,
    leader_epoch: i32,
    first_offset: i64,
    last_offset: i64,
    log_start_offset: i64,
    acks: i32,
    min_insync: usize,
    timeout_ms: i32,
    correlation_id: u64,
    topic: String,
    partition: i32,
}

/// Produce requests of one ProduceStream appended and still waiting for replication: the
/// stream stops reading more while this many are outstanding (bounded admission).
pub const PRODUCE_STREAM_IN_FLIGHT_MAX: usize = 64;

/// The Broker service.
#[derive(Clone)]
pub struct BrokerService {
    node: Arc<BrokerNode>,
    groups: Option<Arc<GroupCoordinator>>,
}

fn storage_status(e: StorageError) -> Status {
    let code = match &e {
        StorageError::CorruptMessage { .. } => ErrorCode::CorruptMessage,
        StorageError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::UnsupportedCompression { .. } => ErrorCode::UnsupportedCompressionType,
        StorageError::Unsupported { .. } => ErrorCode::InvalidRecord,
        StorageError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        StorageError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        StorageError::Io { .. } => ErrorCode::KafkaStorageError,
    };
    let msg = e.to_string();
    let msg = msg
        .split_once(": ")
        .map_or(msg.as_str(), |(_, m)| m)
        .to_string();
    error_status(code, msg, None)
}

impl BrokerService {
    /// The service over `node`.
    pub fn new(node: Arc<BrokerNode>) -> Self {
        BrokerService { node, groups: None }
    }

    /// The service with its consumer group coordinator.
    pub fn with_groups(node: Arc<BrokerNode>, groups: Arc<GroupCoordinator>) -> Self {
        BrokerService {
            node,
            groups: Some(groups),
        }
    }

    fn groups(&self) -> Result<&Arc<GroupCoordinator>, Status> {
        self.groups
            .as_ref()
            .ok_or_else(|| not_yet("the group coordinator"))
    }

    fn leader_hint(&self, topic: &str, index: i32) -> Option<LeaderHint> {
        let image = self.node.image();
        let p = image.topic(topic)?.partitions.get(index as usize)?.clone();
        if p.leader == NO_LEADER {
            return None;
        }
        let b = image.brokers.get(&p.leader)?;
        Some(LeaderHint {
            leader_id: p.leader,
            host: b.endpoint.host.clone(),
            port: b.endpoint.port as i32,
            leader_epoch: p.leader_epoch,
        })
    }

    fn not_leader(&self, topic: &str, index: i32) -> Status {
        let hint = self.leader_hint(topic, index);
        let msg = match &hint {
            Some(h) => format!(
                "broker {} does not lead {topic}-{index} (leader is broker {} at {}:{})",
                self.node.id(),
                h.leader_id,
                h.host,
                h.port
            ),
            None => format!("{topic}-{index} has no leader right now"),
        };
        let code = if hint.is_some() {
            ErrorCode::NotLeaderOrFollower
        } else {
            ErrorCode::LeaderNotAvailable
        };
        error_status(code, msg, hint)
    }

    fn lookup(&self, topic: &str, index: i32) -> Result<Arc<Partition>, Status> {
        let image = self.node.image();
        let Some(t) = image.topic(topic) else {
            return Err(error_status(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {topic:?} does not exist"),
                None,
            ));
        };
        if index < 0 || index as usize >= t.partitions.len() {
            return Err(error_status(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic {topic:?} has no partition {index} (it has {})",
                    t.partitions.len()
                ),
                None,
            ));
        }
        self.node
            .partition(topic, index)
            .ok_or_else(|| self.not_leader(topic, index))
    }

    /// Handles one produce request: append, then (acks=all) wait for replication.
    pub async fn produce_one(&self, req: ProduceRequest) -> Result<ProduceResponse, Status> {
        let appended = self.produce_append(req).await?;
        self.produce_complete(appended).await
    }

    /// The first step of a produce: validates the request and appends it as the leader.
    /// Calls for one stream run one after another, so a producer's batches keep their order.
    pub async fn produce_append(&self, req: ProduceRequest) -> Result<Appended, Status> {
        let acks = req.acks.unwrap_or(-1);
        if !(-1..=1).contains(&acks) {
            return Err(error_status(
                ErrorCode::InvalidRequiredAcks,
                format!("acks={acks}; use 0, 1 or -1 (all)"),
                None,
            ));
        }
        let part = self.lookup(&req.topic, req.partition)?;
        let payload: Bytes = match req.payload {
            Some(produce_request::Payload::RecordBatch(b)) => b,
            Some(produce_request::Payload::Records(list)) => {
                if list.records.is_empty() {
                    return Err(error_status(
                        ErrorCode::InvalidRequest,
                        "the record list is empty",
                        None,
                    ));
                }
                if list.records.len() > RECORDS_PER_REQUEST_MAX {
                    return Err(error_status(
                        ErrorCode::RecordListTooLarge,
                        format!(
                            "{} records in one request; at most {RECORDS_PER_REQUEST_MAX} (send an encoded record_batch for more)",
                            list.records.len()
                        ),
                        None,
                    ));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let mut b = RecordBatchBuilder::new();
                if let Some(pid) = list.producer_id {
                    let epoch = list.producer_epoch.unwrap_or(0);
                    let Ok(epoch) = i16::try_from(epoch) else {
                        return Err(error_status(
                            ErrorCode::InvalidRequest,
                            format!("producer_epoch {epoch} does not fit Kafka's int16"),
                            None,
                        ));
                    };
                    b = b.producer(pid, epoch, list.base_sequence.unwrap_or(0));
                }
                for r in &list.records {
                    let headers: Vec<(&[u8], Option<&[u8]>)> = r
                        .headers
                        .iter()
                        .map(|h| (h.key.as_bytes(), h.value.as_deref()))
                        .collect();
                    let ts = if r.timestamp_ms > 0 {
                        r.timestamp_ms
                    } else {
                        now
                    };
                    b.append(ts, r.key.as_deref(), r.value.as_deref(), &headers);
                }
                b.build()
            }
            None => {
                return Err(error_status(
                    ErrorCode::InvalidRequest,
                    "no record_batch or records given",
                    None,
                ))
            }
        };
        let min_insync = self.node.min_insync(&req.topic);
        // A fenced broker leads nothing it may acknowledge: its leaderships may already
        // have moved (review defect 13; Kafka's brokers serve no leadership while fenced).
        if self.node.fenced.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(error_status(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} is fenced by the controller and leads nothing right now",
                    self.node.id()
                ),
                self.leader_hint(&req.topic, req.partition)
                    .filter(|h| h.leader_id != self.node.id()),
            ));
        }
        let mut st = part.state.lock().await;
        let Role::Leader {
            leader_epoch, isr, ..
        } = st.replica.role().clone()
        else {
            drop(st);
            return Err(self.not_leader(&req.topic, req.partition));
        };
        if acks == -1 && isr.len() < min_insync {
            return Err(error_status(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{}: ISR {isr:?} has {} members, min.insync.replicas is {min_insync}; nothing was appended",
                    part.name(),
                    isr.len()
                ),
                None,
            ));
        }
        // Requests of one producer arrive in order on one ProduceStream (processed in
        // order, as Kafka processes a connection's requests); a batch out of sequence is
        // refused at once with OUT_OF_ORDER_SEQUENCE_NUMBER and the client resends in order.
        let info = st
            .log
            .append_as_leader(payload, leader_epoch)
            .map_err(storage_status)?;
        st.maybe_advance_high_watermark();
        part.publish(&st);
        let log_start_offset = st.log.log_start_offset();
        drop(st);
        if !info.duplicate {
            metrics::counter!("sluice_messages_in_total", "topic" => req.topic.clone())
                .increment(info.records);
            metrics::counter!("sluice_bytes_in_total", "topic" => req.topic.clone())
                .increment(info.bytes);
        }
        let timeout_ms = if req.timeout_ms > 0 {
            req.timeout_ms
        } else {
            PRODUCE_TIMEOUT_MS_DEFAULT
        };
        Ok(Appended {
            part,
            leader_epoch,
            first_offset: info.first_offset,
            last_offset: info.last_offset,
            log_start_offset,
            acks,
            min_insync,
            timeout_ms,
            correlation_id: req.correlation_id,
            topic: req.topic,
            partition: req.partition,
        })
    }

    /// The second step of a produce: for acks=all, waits until the HW passes the batch (or
    /// leadership changes, or the timeout passes), without holding the partition lock.
    pub async fn produce_complete(&self, a: Appended) -> Result<ProduceResponse, Status> {
        if a.acks == -1 {
            let deadline = Instant::now() + Duration::from_millis(a.timeout_ms as u64);
            let mut rx = a.part.subscribe();
            loop {
                let o = *rx.borrow_and_update();
                if o.leader_epoch != a.leader_epoch {
                    return Err(error_status(
                        ErrorCode::NotLeaderOrFollower,
                        format!(
                            "{}: leadership changed before offsets {}..={} were replicated; they may or may not be committed",
                            a.part.name(),
                            a.first_offset,
                            a.last_offset
                        ),
                        self.leader_hint(&a.topic, a.partition),
                    ));
                }
                if o.high_watermark > a.last_offset {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                    return Err(error_status(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}: offsets {}..={} not replicated to the ISR within {} ms",
                            a.part.name(),
                            a.first_offset,
                            a.last_offset,
                            a.timeout_ms
                        ),
                        None,
                    ));
                }
            }
            let outcome = a
                .part
                .state
                .lock()
                .await
                .replica
                .acks_all(a.last_offset, a.min_insync);
            if outcome == AcksAll::NotEnoughReplicasAfterAppend {
                return Err(error_status(
                    ErrorCode::NotEnoughReplicasAfterAppend,
                    format!(
                        "{}: written, but the ISR shrank below min.insync.replicas={}",
                        a.part.name(),
                        a.min_insync
                    ),
                    None,
                ));
            }
        }
        // acks=0 is fire and forget: no offsets are promised (Kafka sends no response at all).
        let (base_offset, last_offset) = if a.acks == 0 {
            (-1, -1)
        } else {
            (a.first_offset, a.last_offset)
        };
        Ok(ProduceResponse {
            correlation_id: a.correlation_id,
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            topic: a.topic,
            partition: a.partition,
            base_offset,
            last_offset,
            log_append_time_ms: -1,
            log_start_offset: a.log_start_offset,
            current_leader: None,
        })
    }

    /// Handles one fetch (consumer or follower), long-polling up to `max_wait_ms`.
    pub async fn fetch_one(&self, req: &FetchRequest) -> Result<FetchResponse, Status> {
        if req.max_bytes < 0 || req.min_bytes < 0 || req.max_wait_ms < 0 {
            return Err(error_status(
                ErrorCode::InvalidFetchSize,
                format!(
                    "max_bytes={}, min_bytes={}, max_wait_ms={} must not be negative",
                    req.max_bytes, req.min_bytes, req.max_wait_ms
                ),
                None,
            ));
        }
        let max_bytes = if req.max_bytes == 0 {
            FETCH_BYTES_DEFAULT
        } else {
            (req.max_bytes as usize).min(FETCH_BYTES_MAX)
        };
        let part = self.lookup(&req.topic, req.partition)?;
        let follower = req.replica_id.filter(|r| *r >= 0);
        let deadline =
            Instant::now() + Duration::from_millis(req.max_wait_ms.min(FETCH_WAIT_MS_MAX) as u64);
        let mut rx = part.subscribe();
        loop {
            let mut st = part.state.lock().await;
            let Role::Leader { leader_epoch, .. } = st.replica.role().clone() else {
                drop(st);
                return Err(self.not_leader(&req.topic, req.partition));
            };
            if let Some(e) = req.current_leader_epoch.filter(|e| *e >= 0) {
                if e < leader_epoch {
                    return Err(error_status(
                        ErrorCode::FencedLeaderEpoch,
                        format!(
                            "{}: request epoch {e} is older than the leader epoch {leader_epoch}",
                            part.name()
                        ),
                        self.leader_hint(&req.topic, req.partition),
                    ));
                }
                if e > leader_epoch {
                    return Err(error_status(
                        ErrorCode::UnknownLeaderEpoch,
                        format!(
                            "{}: request epoch {e} is newer than this broker's {leader_epoch}",
                            part.name()
                        ),
                        None,
                    ));
                }
            }
            let leo = st.log.log_end_offset();
            let start = st.log.log_start_offset();
            // A follower's history may have diverged from ours (it led, or followed a
            // leader, in an epoch we don't have): tell it where our histories part before
            // judging its offset, which may well be past our end (KIP-320/595).
            if follower.is_some() {
                let diverged = diverging_epoch(
                    req.last_fetched_epoch,
                    req.fetch_offset,
                    |e| st.log.end_offset_for_epoch(e),
                    start,
                    leo,
                    st.log.latest_epoch(),
                )
                .map(|d| (d.leader_epoch as i64, d.end_offset));
                if let Some((e, end)) = diverged {
                    return Ok(FetchResponse {
                        topic: req.topic.clone(),
                        partition: req.partition,
                        log_start_offset: start,
                        log_end_offset: leo,
                        high_watermark: st.replica.high_watermark(),
                        last_stable_offset: st.replica.high_watermark(),
                        next_fetch_offset: req.fetch_offset,
                        diverging_epoch: Some(EpochEndOffset {
                            leader_epoch: e as i32,
                            end_offset: end,
                        }),
                        ..Default::default()
                    });
                }
            }
            if req.fetch_offset < start || req.fetch_offset > leo {
                return Err(error_status_with(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "{}: offset {} is outside [log start {start}, log end {leo}]",
                        part.name(),
                        req.fetch_offset
                    ),
                    None,
                    |d| {
                        d.log_start_offset = Some(start);
                        d.log_end_offset = Some(leo);
                    },
                ));
            }
            let mut resp = FetchResponse {
                topic: req.topic.clone(),
                partition: req.partition,
                log_start_offset: start,
                log_end_offset: leo,
                last_stable_offset: st.replica.high_watermark(),
                next_fetch_offset: req.fetch_offset,
                ..Default::default()
            };
            let upper = if let Some(replica) = follower {
                self.node
                    .record_follower_fetch(&part, &mut st, replica, req.fetch_offset);
                leo
            } else {
                st.replica.high_watermark()
            };
            let data = if req.fetch_offset < upper {
                st.log
                    .read(req.fetch_offset, max_bytes, upper)
                    .map_err(storage_status)?
            } else {
                Bytes::new()
            };
            resp.high_watermark = st.replica.high_watermark();
            drop(st);
            let left = deadline.saturating_duration_since(Instant::now());
            if data.is_empty() && !left.is_zero() {
                rx.borrow_and_update();
                if tokio::time::timeout(left, rx.changed()).await.is_ok() {
                    continue;
                }
            }
            if let Some(last) = sluice_storage::batch::headers(&data).last() {
                resp.next_fetch_offset = last.next_offset();
            }
            if req.format == RecordFormat::Records as i32 {
                for b in batches(data) {
                    let b = b.map_err(storage_status)?;
                    for r in b.records() {
                        let r = r.map_err(storage_status)?;
                        if r.offset < req.fetch_offset {
                            continue;
                        }
                        resp.records.push(Record {
                            key: r.key,
                            value: r.value,
                            headers: r
                                .headers
                                .into_iter()
                                .map(|h| Header {
                                    key: String::from_utf8_lossy(&h.key).into_owned(),
                                    value: h.value,
                                })
                                .collect(),
                            timestamp_ms: r.timestamp,
                            offset: r.offset,
                        });
                    }
                }
            } else {
                resp.record_batches = data;
            }
            return Ok(resp);
        }
    }
}

/// Records a request's latency and outcome (`sluice_request_duration_seconds`,
/// `sluice_requests_total`, Kafka's RequestMetrics).
fn observe<T>(request: &'static str, start: Instant, r: &Result<T, Status>) {
    metrics::histogram!("sluice_request_duration_seconds", "request" => request)
        .record(start.elapsed().as_secs_f64());
    let error = match r {
        Ok(_) => "NONE",
        Err(s) => sluice_proto::status::error_code(s).as_str_name(),
    };
    metrics::counter!("sluice_requests_total", "request" => request, "error" => error).increment(1);
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ProduceStreamOut = Pin<Box<dyn Stream<Item = Result<ProduceResponse, Status>> + Send>>;
type FetchStreamOut = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

trait IntoParts {
    fn into_parts(self) -> (i32, String);
}

impl IntoParts for (i32, String, Option<LeaderHint>) {
    fn into_parts(self) -> (i32, String) {
        (self.0, self.1)
    }
}

fn in_band_error(s: &Status) -> (i32, String, Option<LeaderHint>) {
    let d = sluice_proto::status::error_detail(s);
    (
        sluice_proto::status::error_code(s) as i32,
        d.as_ref()
            .map_or_else(|| s.message().to_string(), |d| d.message.clone()),
        d.and_then(|d| d.leader),
    )
}

fn not_yet(what: &str) -> Status {
    error_status(
        ErrorCode::UnsupportedVersion,
        format!("{what} is not yet available in this build"),
        None,
    )
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(
        &self,
        r: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let t = Instant::now();
        let r = self.produce_one(r.into_inner()).await;
        observe("produce", t, &r);
        Ok(Response::new(r?))
    }

    type ProduceStreamStream = ProduceStreamOut;

    async fn produce_stream(
        &self,
        r: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(PRODUCE_STREAM_IN_FLIGHT_MAX);
        let svc = self.clone();
        // Appends run one at a time in arrival order (a producer's batches keep their
        // sequence); replication waits overlap, up to PRODUCE_STREAM_IN_FLIGHT_MAX, and are
        // answered in request order. Ends when the client closes its side or goes away.
        tokio::spawn(async move {
            let mut waiting: futures::stream::FuturesOrdered<
                tokio::task::JoinHandle<ProduceResponse>,
            > = futures::stream::FuturesOrdered::new();
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
                        let appended = svc.produce_append(req).await;
                        // Each wait runs as its own task: a future parked in `waiting` while
                        // this loop awaits the next append must not hold anything the append
                        // needs (a tokio mutex permit handed to an unpolled waiter deadlocked
                        // the partition: every fetch and the ISR loop stalled behind it).
                        waiting.push_back(tokio::spawn(async move {
                            let r = match appended {
                                Ok(a) => svc.produce_complete(a).await,
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

    async fn fetch(&self, r: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let t = Instant::now();
        let req = r.into_inner();
        let r = self.fetch_one(&req).await;
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
        Ok(Response::new(r?))
    }

    type FetchStreamStream = FetchStreamOut;

    async fn fetch_stream(
        &self,
        r: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
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
        let svc = self.clone();
        // Ends when the client goes away or a fetch fails (reported in-band).
        tokio::spawn(async move {
            loop {
                // A client that went away ends the long poll at once (review defect 6):
                // the stream's task must not keep polling, nor keep a deleted log open.
                let r = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    r = svc.fetch_one(&req) => r,
                };
                match r {
                    Ok(resp) => {
                        let next = resp.next_fetch_offset;
                        let empty = resp.record_batches.is_empty() && resp.records.is_empty();
                        if !empty && tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        req.fetch_offset = next;
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

    async fn list_offsets(
        &self,
        r: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
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
                let part = self.lookup(&p.topic, p.partition)?;
                let st = part.state.lock().await;
                let Role::Leader { leader_epoch, .. } = *st.replica.role() else {
                    drop(st);
                    return Err(self.not_leader(&p.topic, p.partition));
                };
                out.leader_epoch = leader_epoch;
                match p.timestamp {
                    -2 => out.offset = st.log.log_start_offset(),
                    -1 => match st.replica.known_high_watermark() {
                        Some(hw) => out.offset = hw,
                        // KIP-207: a new leader does not know its HW until it reaches the
                        // start of its epoch; the client retries.
                        None => {
                            return Err(error_status(
                                ErrorCode::OffsetNotAvailable,
                                format!(
                                    "{}: the new leader's high watermark is not known yet; retry",
                                    part.name()
                                ),
                                None,
                            ))
                        }
                    },
                    t if t >= 0 => {
                        if let Some((o, ts)) =
                            st.log.offset_for_timestamp(t).map_err(storage_status)?
                        {
                            if o < st.replica.high_watermark() {
                                out.offset = o;
                                out.timestamp = ts;
                            }
                        }
                    }
                    other => {
                        return Err(error_status(
                            ErrorCode::InvalidRequest,
                            format!(
                                "timestamp {other}: use -2 (earliest), -1 (latest) or a time in ms"
                            ),
                            None,
                        ))
                    }
                }
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

    async fn metadata(
        &self,
        r: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let req = r.into_inner();
        let image = self.node.image();
        let brokers = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| BrokerEndpoint {
                broker_id: b.id,
                host: b.endpoint.host.clone(),
                port: b.endpoint.port as i32,
                rack: b.rack.clone(),
            })
            .collect();
        let describe = |t: &sluice_metadata::TopicImage| TopicMetadata {
            error_code: 0,
            error_message: String::new(),
            name: t.name.clone(),
            topic_id: t.id.to_string(),
            is_internal: t.name.starts_with("__"),
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionMetadata {
                    error_code: if p.leader == NO_LEADER {
                        ErrorCode::LeaderNotAvailable as i32
                    } else {
                        0
                    },
                    partition: i as i32,
                    leader_id: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    offline_replicas: p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|b| !image.is_unfenced(*b))
                        .collect(),
                })
                .collect(),
        };
        let topics = if req.topics.is_empty() {
            image.topics.values().map(|t| describe(t)).collect()
        } else {
            req.topics
                .iter()
                .map(|n| match image.topic(n) {
                    Some(t) => describe(t),
                    None => TopicMetadata {
                        error_code: ErrorCode::UnknownTopicOrPartition as i32,
                        error_message: format!("topic {n:?} does not exist"),
                        name: n.clone(),
                        ..Default::default()
                    },
                })
                .collect()
        };
        Ok(Response::new(MetadataResponse {
            brokers,
            cluster_id: self.node.config.cluster_id.clone(),
            controller_id: -1,
            topics,
            metadata_offset: image.offset,
        }))
    }

    async fn offset_for_leader_epoch(
        &self,
        r: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        let req = r.into_inner();
        let part = self.lookup(&req.topic, req.partition)?;
        let st = part.state.lock().await;
        if !st.replica.is_leader() {
            drop(st);
            return Err(self.not_leader(&req.topic, req.partition));
        }
        let (epoch, end) = st.log.end_offset_for_epoch(req.leader_epoch);
        Ok(Response::new(OffsetForLeaderEpochResponse {
            topic: req.topic,
            partition: req.partition,
            epoch_end_offset: Some(EpochEndOffset {
                leader_epoch: epoch as i32,
                end_offset: end,
            }),
        }))
    }

    async fn init_producer_id(
        &self,
        r: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let r = r.into_inner();
        if r.transactional_id.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(error_status(
                ErrorCode::UnsupportedVersion,
                "transactions are not supported; leave transactional_id unset for an idempotent producer",
                None,
            ));
        }
        let producer_id = self.node.next_producer_id().await?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
    async fn find_coordinator(
        &self,
        r: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.groups()?.find_coordinator(&r.group_id).await?,
        ))
    }
    async fn consumer_group_heartbeat(
        &self,
        r: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        let host = r
            .remote_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default();
        Ok(Response::new(
            self.groups()?.heartbeat(r.into_inner(), host).await?,
        ))
    }
    async fn offset_commit(
        &self,
        r: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        Ok(Response::new(self.groups()?.commit(r.into_inner()).await?))
    }
    async fn offset_fetch(
        &self,
        r: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        Ok(Response::new(self.groups()?.fetch(r.into_inner()).await?))
    }
    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let filter = r.into_inner().states_filter;
        let mut groups = self.groups()?.list().await;
        if !filter.is_empty() {
            groups.retain(|g| filter.contains(&g.group_state));
        }
        Ok(Response::new(ListGroupsResponse { groups }))
    }
    async fn describe_groups(
        &self,
        r: Request<DescribeGroupsRequest>,
    ) -> Result<Response<DescribeGroupsResponse>, Status> {
        let coordinator = self.groups()?;
        let mut groups = Vec::new();
        for g in r.into_inner().group_ids {
            groups.push(coordinator.describe(&g).await);
        }
        Ok(Response::new(DescribeGroupsResponse { groups }))
    }
    async fn delete_groups(
        &self,
        r: Request<DeleteGroupsRequest>,
    ) -> Result<Response<DeleteGroupsResponse>, Status> {
        let coordinator = self.groups()?;
        let mut results = Vec::new();
        for g in r.into_inner().group_ids {
            let (error_code, error_message) = match coordinator.delete(&g).await {
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
}

/// Deadline of an Admin call relayed to a controller (a topic creation waits for the
/// quorum; a frozen controller must not hold the caller forever).
pub const ADMIN_RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Relays Admin calls to the controllers (which forward writes to the active one), so
/// `--bootstrap` may name a broker.
#[derive(Clone)]
pub struct AdminRelay {
    node: Arc<BrokerNode>,
}

macro_rules! relay {
    ($( $m:ident, $Req:ty, $Resp:ty; )*) => {
        #[tonic::async_trait]
        impl Admin for AdminRelay {
            $(
                async fn $m(&self, r: Request<$Req>) -> Result<Response<$Resp>, Status> {
                    let req = r.into_inner();
                    let mut last = Status::unavailable("no controller reachable");
                    for addr in &self.node.config.controllers {
                        let mut call = Request::new(req.clone());
                        call.set_timeout(ADMIN_RELAY_TIMEOUT);
                        match AdminClient::new(self.node.channel(addr)).$m(call).await {
                            Ok(resp) => return Ok(resp),
                            Err(s) if s.code() == tonic::Code::Unavailable && sluice_proto::status::error_detail(&s).is_none() => last = s,
                            Err(s) => return Err(s),
                        }
                    }
                    Err(last)
                }
            )*
        }
    };
}

relay! {
    create_topics, CreateTopicsRequest, CreateTopicsResponse;
    delete_topics, DeleteTopicsRequest, DeleteTopicsResponse;
    list_topics, ListTopicsRequest, ListTopicsResponse;
    describe_topics, DescribeTopicsRequest, DescribeTopicsResponse;
    create_partitions, CreatePartitionsRequest, CreatePartitionsResponse;
    incremental_alter_configs, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    describe_configs, DescribeConfigsRequest, DescribeConfigsResponse;
    describe_cluster, DescribeClusterRequest, DescribeClusterResponse;
    describe_quorum, DescribeQuorumRequest, DescribeQuorumResponse;
}

/// Serves the broker's services until `shutdown` resolves.
pub async fn serve(
    node: Arc<BrokerNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // NOT_SERVING until the broker is ready: registered, caught up with the metadata log
    // and unfenced by the controller (which unfences only caught-up brokers).
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_not_serving::<BrokerServer<BrokerService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let readiness = {
        let node = node.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut serving = false;
            loop {
                let ready = !node.fenced.load(std::sync::atomic::Ordering::SeqCst)
                    && node.broker_epoch.load(std::sync::atomic::Ordering::SeqCst) >= 0;
                if ready != serving {
                    serving = ready;
                    let status = if ready {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health_reporter.set_service_status("", status).await;
                    health_reporter
                        .set_service_status("sluice.v1.Broker", status)
                        .await;
                    tracing::info!(serving, "health status changed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    };
    let _readiness = readiness;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().map_err(|e| e.to_string())?;
    let v1alpha = reflection().build_v1alpha().map_err(|e| e.to_string())?;
    let addr = node.config.listen;
    let groups = GroupCoordinator::new(node.clone(), node.config.groups.clone());
    let expiry = tokio::spawn(groups.clone().run_expiry());
    let _expiry = AbortOnDrop(expiry);
    tracing::info!(broker = node.id(), %addr, "broker listening");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(
            BrokerServer::new(BrokerService::with_groups(node.clone(), groups))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(AdminServer::new(AdminRelay { node: node.clone() }))
        .serve_with_shutdown(addr, shutdown)
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))
}
