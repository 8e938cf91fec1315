//! `sluice.v1.Broker` (produce, fetch, offsets, metadata) and an `Admin` relay to the
//! controllers, plus the server that hosts them with health and reflection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use sluice_metadata::NO_LEADER;
use sluice_proto::status::error_status;
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
/// How long a batch ahead of its idempotent producer's sequence waits for the batches
/// before it (pipelined requests racing on the way in).
pub const OUT_OF_ORDER_WAIT: Duration = Duration::from_millis(500);
/// Default produce timeout (Kafka `request.timeout.ms`).
pub const PRODUCE_TIMEOUT_MS_DEFAULT: i32 = 30_000;

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

    /// Handles one produce request.
    pub async fn produce_one(&self, req: ProduceRequest) -> Result<ProduceResponse, Status> {
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
        let mut st = part.state.lock().await;
        let Role::Leader {
            leader_epoch, isr, ..
        } = st.role.clone()
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
        // Pipelined requests of one idempotent producer travel on separate HTTP/2 streams
        // and may arrive out of order: a batch ahead of its producer's sequence waits
        // (briefly, without the lock) for the batches before it, as Kafka gets for free
        // from processing one connection's requests in order.
        let wait_until = Instant::now() + OUT_OF_ORDER_WAIT;
        let mut appended = part.subscribe();
        let info = loop {
            match st.log.append_as_leader(payload.clone(), leader_epoch) {
                Err(StorageError::OutOfOrderSequence { got, expected, .. })
                    if got > expected && Instant::now() < wait_until =>
                {
                    drop(st);
                    appended.borrow_and_update();
                    let left = wait_until.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, appended.changed()).await;
                    st = part.state.lock().await;
                    let still_leader = matches!(&st.role, Role::Leader { leader_epoch: e, .. } if *e == leader_epoch);
                    if !still_leader {
                        drop(st);
                        return Err(self.not_leader(&req.topic, req.partition));
                    }
                }
                r => break r.map_err(storage_status)?,
            }
        };
        st.maybe_advance_high_watermark(self.node.id());
        part.publish(&st);
        let log_start = st.log.log_start_offset();
        drop(st);
        if !info.duplicate {
            metrics::counter!("sluice_messages_in_total", "topic" => req.topic.clone())
                .increment(info.records);
            metrics::counter!("sluice_bytes_in_total", "topic" => req.topic.clone())
                .increment(info.bytes);
        }
        if acks == -1 {
            let timeout_ms = if req.timeout_ms > 0 {
                req.timeout_ms
            } else {
                PRODUCE_TIMEOUT_MS_DEFAULT
            };
            let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
            let mut rx = part.subscribe();
            loop {
                let o = *rx.borrow_and_update();
                if o.leader_epoch != leader_epoch {
                    return Err(error_status(
                        ErrorCode::NotLeaderOrFollower,
                        format!(
                            "{}: leadership changed before offsets {}..={} were replicated; they may or may not be committed",
                            part.name(),
                            info.first_offset,
                            info.last_offset
                        ),
                        self.leader_hint(&req.topic, req.partition),
                    ));
                }
                if o.high_watermark > info.last_offset {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                    return Err(error_status(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}: offsets {}..={} not replicated to the ISR within {timeout_ms} ms",
                            part.name(),
                            info.first_offset,
                            info.last_offset
                        ),
                        None,
                    ));
                }
            }
            let isr_now = match &part.state.lock().await.role {
                Role::Leader { isr, .. } => isr.len(),
                _ => 0,
            };
            if isr_now < min_insync {
                return Err(error_status(
                    ErrorCode::NotEnoughReplicasAfterAppend,
                    format!(
                        "{}: written, but the ISR shrank below min.insync.replicas={min_insync}",
                        part.name()
                    ),
                    None,
                ));
            }
        }
        // acks=0 is fire and forget: no offsets are promised (Kafka sends no response at all).
        let (base_offset, last_offset) = if acks == 0 {
            (-1, -1)
        } else {
            (info.first_offset, info.last_offset)
        };
        Ok(ProduceResponse {
            correlation_id: req.correlation_id,
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            topic: req.topic,
            partition: req.partition,
            base_offset,
            last_offset,
            log_append_time_ms: -1,
            log_start_offset: log_start,
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
            let Role::Leader { leader_epoch, .. } = st.role.clone() else {
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
                let diverged = match req.last_fetched_epoch.filter(|e| *e >= 0) {
                    Some(last) => {
                        let (e, end) = st.log.end_offset_for_epoch(last);
                        (e >= 0 && (e < last as i64 || end < req.fetch_offset)).then_some((e, end))
                    }
                    None if req.fetch_offset > leo => {
                        let latest = st.log.latest_epoch().unwrap_or(-1);
                        Some((latest as i64, leo))
                    }
                    None => None,
                };
                if let Some((e, end)) = diverged {
                    return Ok(FetchResponse {
                        topic: req.topic.clone(),
                        partition: req.partition,
                        log_start_offset: start,
                        log_end_offset: leo,
                        high_watermark: st.high_watermark,
                        last_stable_offset: st.high_watermark,
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
                return Err(error_status(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "{}: offset {} is outside [log start {start}, log end {leo}]",
                        part.name(),
                        req.fetch_offset
                    ),
                    None,
                ));
            }
            let mut resp = FetchResponse {
                topic: req.topic.clone(),
                partition: req.partition,
                log_start_offset: start,
                log_end_offset: leo,
                last_stable_offset: st.high_watermark,
                next_fetch_offset: req.fetch_offset,
                ..Default::default()
            };
            let upper = if let Some(replica) = follower {
                self.node
                    .record_follower_fetch(&part, &mut st, replica, req.fetch_offset);
                leo
            } else {
                st.high_watermark
            };
            let data = if req.fetch_offset < upper {
                st.log
                    .read(req.fetch_offset, max_bytes, upper)
                    .map_err(storage_status)?
            } else {
                Bytes::new()
            };
            resp.high_watermark = st.high_watermark;
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
        let (tx, rx) = mpsc::channel(64);
        let svc = self.clone();
        // Ends when the client closes its side or goes away.
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let (id, topic, partition) = (req.correlation_id, req.topic.clone(), req.partition);
                let resp = match svc.produce_one(req).await {
                    Ok(r) => r,
                    Err(s) => {
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
                    }
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
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
                match svc.fetch_one(&req).await {
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
                let Role::Leader { leader_epoch, .. } = st.role else {
                    drop(st);
                    return Err(self.not_leader(&p.topic, p.partition));
                };
                out.leader_epoch = leader_epoch;
                match p.timestamp {
                    -2 => out.offset = st.log.log_start_offset(),
                    -1 => out.offset = st.high_watermark,
                    t if t >= 0 => {
                        if let Some((o, ts)) =
                            st.log.offset_for_timestamp(t).map_err(storage_status)?
                        {
                            if o < st.high_watermark {
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
        if !matches!(st.role, Role::Leader { .. }) {
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
                        match AdminClient::new(self.node.channel(addr)).$m(req.clone()).await {
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
