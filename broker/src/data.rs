//! The data-plane operations every front end shares (the gRPC `Broker` service, the group
//! coordinator, and later the Kafka listener): find a partition, produce (append, then
//! wait for replication), fetch with a long poll. They talk to partitions only through
//! their [`PartitionHandle`]s and turn [`BrokerError`]s into statuses in one place
//! ([`DataPlane::status`]), adding the leader hint a client needs to re-route.
//!
//! ```text
//!   Produce ─► produce_append ─► PartitionHandle::append ─► (actor) Log ─► HW on the watch
//!           └► produce_complete: acks=all waits on the watch until HW > last offset
//!   Fetch ───► fetch_one: PartitionHandle::fetch, empty? wait on the watch, ask again
//! ```

pub use crate::limits::{
    FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, RECORDS_PER_REQUEST_MAX,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_metadata::{BrokerId, NO_LEADER};
use sluice_proto::status::error_status;
use sluice_proto::v1::*;
use sluice_storage::batch::batches;
use sluice_storage::{RecordBatchBuilder, Records};
use tonic::Status;

use crate::error::BrokerError;
use crate::node::BrokerNode;
use crate::partition::state::{acks_all, AcksAll};
use crate::partition::{FetchArgs, Offsets, PartitionHandle};
/// Longest a request waits for this broker to take up a leadership its metadata gives it
/// (see [`DataPlane::lookup`]).
pub const LEADERSHIP_TAKE_UP_WAIT: Duration = Duration::from_secs(2);
/// Default produce timeout (Kafka `request.timeout.ms`).
pub const PRODUCE_TIMEOUT_MS_DEFAULT: i32 = 30_000;

/// A produce that is appended and not yet answered (see [`DataPlane::produce_complete`]).
pub struct PendingProduce {
    part: PartitionHandle,
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

impl PendingProduce {
    /// Offset of the first record appended.
    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }
}

/// The shared data-plane operations of one broker.
#[derive(Clone)]
pub struct DataPlane {
    node: Arc<BrokerNode>,
}

impl DataPlane {
    /// The operations over `node`'s partitions.
    pub fn new(node: Arc<BrokerNode>) -> Self {
        DataPlane { node }
    }

    pub fn leader_hint(&self, topic: &str, index: i32) -> Option<LeaderHint> {
        let image = self.node.image();
        let p = image.topic(topic)?.partitions.get(index as usize)?.clone();
        if p.leader == NO_LEADER {
            return None;
        }
        let b = image.brokers.get(&p.leader)?;
        Some(LeaderHint {
            leader_id: p.leader.get(),
            host: b.endpoint.host.clone(),
            port: b.endpoint.port as i32,
            leader_epoch: p.leader_epoch.get(),
        })
    }

    pub fn not_leader(&self, topic: &str, index: i32) -> Status {
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

    /// The local replica that serves a request needing the leader. When our own metadata
    /// already names us the leader but the replica has not taken the leadership up yet (the
    /// image is swapped first; opening a new log and applying the role follow, taking
    /// milliseconds, more on a loaded box), waits up to [`LEADERSHIP_TAKE_UP_WAIT`] for it
    /// instead of answering NOT_LEADER with a hint that names this very broker. Kafka has no
    /// such window: its metadata cache and partition roles change in one step.
    pub async fn lookup(&self, topic: &str, index: i32) -> Result<PartitionHandle, Status> {
        let deadline = Instant::now() + LEADERSHIP_TAKE_UP_WAIT;
        let mut reconciled = self.node.subscribe_reconciled();
        loop {
            reconciled.borrow_and_update();
            let image = self.node.image();
            let Some(t) = image.topic(topic) else {
                return Err(error_status(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {topic:?} does not exist"),
                    None,
                ));
            };
            let Some(p) = usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get(i))
            else {
                return Err(error_status(
                    ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "topic {topic:?} has no partition {index} (it has {})",
                        t.partitions.len()
                    ),
                    None,
                ));
            };
            let local = self.node.partition(topic, index);
            let mut offsets = local.as_ref().map(|h| h.subscribe());
            let taken_up = |o: &Offsets| o.is_leader && o.leader_epoch >= p.leader_epoch.get();
            let waiting = p.leader == self.node.id()
                && !offsets
                    .as_mut()
                    .is_some_and(|rx| taken_up(&rx.borrow_and_update()));
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() {
                return local.ok_or_else(|| self.not_leader(topic, index));
            }
            let offsets_changed = async {
                match offsets.as_mut() {
                    Some(rx) => {
                        let _ = rx.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = offsets_changed => {}
                _ = reconciled.changed() => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// A partition's error as a status: the one place `BrokerError`s meet the wire, adding
    /// the leader hint where a client re-routes with it.
    pub fn status(&self, e: BrokerError, topic: &str, index: i32) -> Status {
        match e {
            BrokerError::NotLeader { .. } | BrokerError::ReplicaClosed { .. } => {
                self.not_leader(topic, index)
            }
            e @ BrokerError::FencedLeaderEpoch { .. } => {
                e.into_status(self.leader_hint(topic, index))
            }
            e => e.into_status(None),
        }
    }

    /// Handles one produce request: append, then (acks=all) wait for replication.
    pub async fn produce_one(&self, req: ProduceRequest) -> Result<ProduceResponse, Status> {
        let pending = self.produce_append(req).await?;
        self.produce_complete(pending).await
    }

    /// The first step of a produce: validates the request and appends it as the leader.
    /// Calls for one stream run one after another, so a producer's batches keep their order.
    pub async fn produce_append(&self, req: ProduceRequest) -> Result<PendingProduce, Status> {
        let acks = req.acks.unwrap_or(-1);
        if !(-1..=1).contains(&acks) {
            return Err(error_status(
                ErrorCode::InvalidRequiredAcks,
                format!("acks={acks}; use 0, 1 or -1 (all)"),
                None,
            ));
        }
        let part = self.lookup(&req.topic, req.partition).await?;
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
        // Bounded admission: the payload holds its share of `queued.max.request.bytes`
        // until it is appended; while the budget is spent, this stream reads no more.
        let _admitted = self.node.request_bytes.admit(payload.len()).await;
        let min_insync = self.node.min_insync(&req.topic);
        // A fenced broker leads nothing it may acknowledge: its leaderships may already
        // have moved (review defect 13; Kafka's brokers serve no leadership while fenced).
        if !self.node.may_lead(&self.node.image()) {
            return Err(error_status(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} is fenced by the controller and leads nothing right now",
                    self.node.id()
                ),
                self.leader_hint(&req.topic, req.partition)
                    .filter(|h| h.leader_id != self.node.id().get()),
            ));
        }
        // Requests of one producer arrive in order on one ProduceStream (processed in
        // order, as Kafka processes a connection's requests); a batch out of sequence is
        // refused at once with OUT_OF_ORDER_SEQUENCE_NUMBER and the client resends in order.
        let appended = part
            .append(payload, (acks == -1).then_some(min_insync))
            .await
            .map_err(|e| self.status(e, &req.topic, req.partition))?;
        let info = appended.info;
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
        Ok(PendingProduce {
            part,
            leader_epoch: appended.leader_epoch,
            first_offset: info.first_offset.get(),
            last_offset: info.last_offset.get(),
            log_start_offset: appended.log_start_offset,
            acks,
            min_insync,
            timeout_ms,
            correlation_id: req.correlation_id,
            topic: req.topic,
            partition: req.partition,
        })
    }

    /// The second step of a produce: for acks=all, waits on the partition's watch until the
    /// HW passes the batch (or leadership changes, or the timeout passes). It holds nothing
    /// the partition needs while it waits (Kafka's `Partition.checkEnoughReplicasReachOffset`).
    pub async fn produce_complete(&self, a: PendingProduce) -> Result<ProduceResponse, Status> {
        if a.acks == -1 {
            let deadline = Instant::now() + Duration::from_millis(a.timeout_ms as u64);
            let mut rx = a.part.subscribe();
            let outcome = loop {
                let o = *rx.borrow_and_update();
                if o.leader_epoch != a.leader_epoch || !o.is_leader {
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
                match acks_all(o.high_watermark, o.isr_size, a.last_offset, a.min_insync) {
                    AcksAll::Waiting => {}
                    done => break done,
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
            };
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
            throttle_time_ms: 0,
        })
    }

    /// [`DataPlane::fetch_one`]'s wait and read, answering the records apart (not yet in
    /// the response, not yet decoded): a file range of cached big batches when
    /// `file_ranges` (the caller sends it with `sendfile`), else the bytes.
    pub async fn fetch_records(
        &self,
        req: &FetchRequest,
        file_ranges: bool,
    ) -> Result<(FetchResponse, Records), Status> {
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
        let part = self.lookup(&req.topic, req.partition).await?;
        let args = FetchArgs {
            fetch_offset: req.fetch_offset,
            max_bytes,
            current_leader_epoch: req.current_leader_epoch,
            last_fetched_epoch: req.last_fetched_epoch,
            follower: req.replica_id.filter(|r| *r >= 0).map(BrokerId),
            file_ranges,
        };
        let deadline =
            Instant::now() + Duration::from_millis(req.max_wait_ms.min(FETCH_WAIT_MS_MAX) as u64);
        let mut rx = part.subscribe();
        loop {
            rx.borrow_and_update();
            let got = part
                .fetch(args.clone())
                .await
                .map_err(|e| self.status(e, &req.topic, req.partition))?;
            let mut resp = FetchResponse {
                topic: req.topic.clone(),
                partition: req.partition,
                log_start_offset: got.log_start_offset,
                log_end_offset: got.log_end_offset,
                high_watermark: got.high_watermark,
                last_stable_offset: got.high_watermark,
                next_fetch_offset: req.fetch_offset,
                ..Default::default()
            };
            if let Some(d) = got.diverging {
                resp.diverging_epoch = Some(EpochEndOffset {
                    leader_epoch: d.leader_epoch,
                    end_offset: d.end_offset,
                });
                return Ok((resp, Records::empty()));
            }
            let data = got.batches;
            let left = deadline.saturating_duration_since(Instant::now());
            if data.is_empty() && !left.is_zero() {
                // Anything changed since we asked (HW, LEO, epoch) means ask again.
                if tokio::time::timeout(left, rx.changed()).await.is_ok() {
                    continue;
                }
            }
            return Ok((resp, data));
        }
    }

    /// Handles one fetch (consumer or follower), long-polling up to `max_wait_ms`.
    pub async fn fetch_one(&self, req: &FetchRequest) -> Result<FetchResponse, Status> {
        let (mut resp, data) = self.fetch_records(req, false).await?;
        let data = match data {
            Records::Memory(b) => b,
            Records::File(r) => unreachable!("{r:?} for a fetch that did not ask for file ranges"),
        };
        if resp.diverging_epoch.is_none() {
            if let Some(last) = sluice_storage::batch::headers(&data).last() {
                resp.next_fetch_offset = last.next_offset();
            }
            if req.format == RecordFormat::Records as i32 {
                for b in batches(data) {
                    let b = b.map_err(|e| BrokerError::from(e).into_status(None))?;
                    for r in b.records() {
                        let r = r.map_err(|e| BrokerError::from(e).into_status(None))?;
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
        }
        Ok(resp)
    }
}
