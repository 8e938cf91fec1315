//! The batching, idempotent producer (DESIGN §6), shaped like Kafka's.
//!
//! ```text
//!   send(record) ── partitioner ──► accumulator[topic-partition]: open batch
//!        │ waits for buffer.memory (max.block.ms)       │ full (batch.size) or linger.ms
//!        ▼                                              ▼
//!   DeliveryFuture ◄── offsets ── partition sender: stamps (producer id, epoch, sequence),
//!                                 keeps ≤ max.in.flight batches in flight to the leader,
//!                                 retries in order after a failure, re-routes on
//!                                 NOT_LEADER_OR_FOLLOWER using the leader hint
//! ```
//!
//! With idempotence (the default with acks=all) every batch carries a per-partition
//! sequence number, so a retry of a batch the leader already stored is answered with the
//! original offsets instead of being written twice, and batches can be pipelined without
//! reordering: a batch sent after a failed one is refused as out of sequence and retried
//! after it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::*;
use tokio::sync::{oneshot, Notify, Semaphore};

pub mod accumulator;

pub use accumulator::DeliveryFuture;
use accumulator::{record_size, Append, Batch, PartitionAccumulator, Ready};

use crate::cluster::Cluster;
use crate::data::partition_for_key;
use crate::{ClientError, Result};

/// Producer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`: 0, 1 or -1 (all).
    pub acks: i32,
    /// `enable.idempotence`; `None` = on when acks is all (Kafka's rule).
    pub enable_idempotence: Option<bool>,
    /// `batch.size`: bytes that make a batch full.
    pub batch_size: usize,
    /// `linger.ms`: how long a batch waits for more records.
    pub linger: Duration,
    /// `buffer.memory`: bytes of records waiting to be sent.
    pub buffer_memory: usize,
    /// `max.block.ms`: how long `send` waits for buffer memory or metadata.
    pub max_block: Duration,
    /// `max.request.size`: the largest record (batch) accepted.
    pub max_request_size: usize,
    /// `max.in.flight.requests.per.connection` (per partition here); at most 5 with idempotence.
    pub max_in_flight: usize,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// `delivery.timeout.ms`: upper bound from `send` to success or failure.
    pub delivery_timeout: Duration,
    /// `request.timeout.ms`: how long the broker may wait for the acks condition.
    pub request_timeout: Duration,
    /// `compression.type`: the codec of each batch's records (none, gzip, snappy, lz4, zstd).
    pub compression: sluice_record::Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            enable_idempotence: None,
            batch_size: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory: 32 << 20,
            max_block: Duration::from_secs(60),
            max_request_size: 1 << 20,
            max_in_flight: 5,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            compression: sluice_record::Compression::None,
        }
    }
}

impl ProducerConfig {
    /// Whether batches carry producer ids and sequences.
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence.unwrap_or(self.acks == -1)
    }
}

/// One record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Explicit partition; otherwise murmur2 of the key, otherwise sticky.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Create time in ms; now when absent.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    /// A record with a value only.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }

    fn size(&self) -> usize {
        record_size(self.key.as_deref(), self.value.as_deref(), &self.headers)
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition.
    pub partition: i32,
    /// Offset (-1 with acks=0).
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp: i64,
}

struct PartitionHandle {
    queue: Mutex<PartitionAccumulator>,
    wake: Notify,
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    producer_id: i64,
    producer_epoch: i16,
    memory: Arc<Semaphore>,
    /// Topic → partition → its accumulator and sender (by topic first, so a record's
    /// lookup borrows its topic name instead of allocating a key).
    partitions: Mutex<HashMap<String, HashMap<i32, Arc<PartitionHandle>>>>,
    /// Sticky partition per topic for records with neither key nor partition.
    sticky: Mutex<HashMap<String, i32>>,
    /// Records sent and not yet completed (for `flush`).
    outstanding: AtomicUsize,
    idle: Notify,
    /// Force every open batch out now (`flush`).
    flushing: AtomicBool,
    closed: AtomicBool,
    fatal: Mutex<Option<ClientError>>,
    /// Set once `fatal` is: lets `send` skip the lock until then.
    failed: AtomicBool,
    /// One ProduceStream per broker address: the broker appends a stream's requests in
    /// the order they were sent, so pipelined batches of a partition keep their sequence
    /// (Kafka gets the same from one connection). Std lock: map lookups only.
    streams: Mutex<HashMap<String, Arc<ProduceConn>>>,
}

/// Requests queued for one ProduceStream before `send` waits.
const PRODUCE_STREAM_QUEUE: usize = 256;

/// Where one produce answer goes.
type AnswerTx = oneshot::Sender<std::result::Result<ProduceResponse, tonic::Status>>;

/// A live ProduceStream to one broker and the answers it still owes.
struct ProduceConn {
    /// Requests to send, in order.
    tx: tokio::sync::mpsc::Sender<ProduceRequest>,
    /// Waiters by correlation id (std lock: inserts and removes only).
    pending: Arc<Mutex<HashMap<u64, AnswerTx>>>,
    /// Next correlation id.
    next_id: std::sync::atomic::AtomicU64,
    /// False once the stream ended: the next send opens a new one.
    alive: Arc<AtomicBool>,
}

impl Shared {
    /// Wakes every partition sender (to flush, or to stop).
    fn wake_senders(&self) {
        if let Ok(map) = self.partitions.lock() {
            for h in map.values().flat_map(HashMap::values) {
                h.wake.notify_one();
            }
        }
    }

    /// The ProduceStream to `addr`, opened on first use or after the last one ended.
    async fn produce_conn(
        &self,
        addr: &str,
    ) -> std::result::Result<Arc<ProduceConn>, tonic::Status> {
        if let Some(c) = self.streams.lock().expect("streams lock").get(addr) {
            if c.alive.load(Ordering::SeqCst) {
                return Ok(c.clone());
            }
        }
        let mut client = self
            .cluster
            .broker(addr)
            .map_err(|e| tonic::Status::invalid_argument(e.message))?;
        let (tx, rx) = tokio::sync::mpsc::channel(PRODUCE_STREAM_QUEUE);
        let mut inbound = client
            .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let pending: Arc<Mutex<HashMap<u64, _>>> = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let conn = Arc::new(ProduceConn {
            tx,
            pending: pending.clone(),
            next_id: std::sync::atomic::AtomicU64::new(1),
            alive: alive.clone(),
        });
        let addr_owned = addr.to_string();
        // Reads answers until the stream ends, then fails whatever is still owed (each
        // sender retries those in order). Ends with the stream; nothing awaits it.
        tokio::spawn(async move {
            let ended = loop {
                match inbound.message().await {
                    Ok(Some(resp)) => {
                        let waiter = pending
                            .lock()
                            .expect("pending lock")
                            .remove(&resp.correlation_id);
                        if let Some(w) = waiter {
                            let _ = w.send(Ok(resp));
                        }
                    }
                    Ok(None) => {
                        break tonic::Status::unavailable(format!(
                            "the produce stream to {addr_owned} closed"
                        ))
                    }
                    Err(s) => break s,
                }
            };
            alive.store(false, Ordering::SeqCst);
            let owed: Vec<_> = pending.lock().expect("pending lock").drain().collect();
            for (_, w) in owed {
                let _ = w.send(Err(ended.clone()));
            }
        });
        self.streams
            .lock()
            .expect("streams lock")
            .insert(addr.to_string(), conn.clone());
        Ok(conn)
    }
}

/// A batching producer. Cheap to share behind an `Arc`; `send` takes `&self`.
pub struct Producer {
    shared: Arc<Shared>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How often one batch may be refused as out of sequence before the producer gives up.
const OUT_OF_ORDER_RETRIES: u32 = 5;

fn retriable(code: ErrorCode) -> bool {
    sluice_proto::status::is_retriable(code) || code == ErrorCode::NetworkException
}

impl Producer {
    /// Connects through `bootstrap` and, with idempotence, gets a producer id.
    pub async fn connect(bootstrap: &str, config: ProducerConfig) -> Result<Self> {
        if !matches!(config.acks, -1..=1) {
            return Err(ClientError {
                code: ErrorCode::InvalidRequiredAcks,
                message: format!(
                    "INVALID_REQUIRED_ACKS: acks={}; use 0, 1 or all",
                    config.acks
                ),
            });
        }
        if config.enable_idempotence == Some(true) && config.acks != -1 {
            return Err(ClientError {
                code: ErrorCode::InvalidConfig,
                message: "INVALID_CONFIG: enable.idempotence requires acks=all".into(),
            });
        }
        let mut config = config;
        if config.idempotent() {
            config.max_in_flight = config.max_in_flight.clamp(1, 5);
        }
        config.max_in_flight = config.max_in_flight.max(1);
        let cluster =
            Cluster::connect(bootstrap, config.request_timeout + Duration::from_secs(5)).await?;
        let (producer_id, producer_epoch) = if config.idempotent() {
            init_producer_id(&cluster, config.max_block).await?
        } else {
            (-1, -1)
        };
        let memory = Arc::new(Semaphore::new(config.buffer_memory));
        Ok(Producer {
            shared: Arc::new(Shared {
                cluster,
                config,
                producer_id,
                producer_epoch,
                memory,
                partitions: Mutex::new(HashMap::new()),
                sticky: Mutex::new(HashMap::new()),
                outstanding: AtomicUsize::new(0),
                idle: Notify::new(),
                flushing: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                fatal: Mutex::new(None),
                failed: AtomicBool::new(false),
                streams: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The producer id and epoch (-1 without idempotence).
    pub fn producer_id(&self) -> (i64, i16) {
        (self.shared.producer_id, self.shared.producer_epoch)
    }

    /// The cluster view this producer uses.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    /// Queues a record; the returned future resolves when it is acknowledged. Waits (up
    /// to `max.block.ms`) for metadata of a new topic and for buffer memory.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let sh = &self.shared;
        if sh.failed.load(Ordering::SeqCst) {
            if let Some(e) = sh.fatal.lock().expect("fatal lock").clone() {
                return Err(e);
            }
        }
        if sh.closed.load(Ordering::SeqCst) {
            return Err(ClientError {
                code: ErrorCode::InvalidRequest,
                message: "INVALID_REQUEST: the producer is closed".into(),
            });
        }
        let size = record.size();
        if size + 61 > sh.config.max_request_size || size > sh.config.buffer_memory {
            return Err(ClientError {
                code: ErrorCode::MessageTooLarge,
                message: format!(
                    "MESSAGE_TOO_LARGE: a record of about {size} bytes exceeds max.request.size={} or buffer.memory={}",
                    sh.config.max_request_size, sh.config.buffer_memory
                ),
            });
        }
        let partitions = sh
            .cluster
            .wait_for_topic(&record.topic, sh.config.max_block)
            .await?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if p < 0 || p >= partitions {
                    return Err(ClientError {
                        code: ErrorCode::UnknownTopicOrPartition,
                        message: format!(
                            "UNKNOWN_TOPIC_OR_PARTITION: partition {p} of {} does not exist (it has {partitions})",
                            record.topic
                        ),
                    });
                }
                p
            }
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => {
                let mut sticky = sh.sticky.lock().expect("sticky lock");
                match sticky.get(&record.topic) {
                    Some(p) => *p % partitions,
                    None => {
                        let p = rand_index(partitions);
                        sticky.insert(record.topic.clone(), p);
                        p
                    }
                }
            }
        };
        // Released when the batch completes.
        self.reserve_memory(size).await?;
        let ts = record.timestamp.unwrap_or_else(now_ms);
        let handle = self.partition_handle(&record.topic, partition);
        // Counted before the batch can be sent, so its completion never runs ahead.
        sh.outstanding.fetch_add(1, Ordering::SeqCst);
        let appended = handle.queue.lock().expect("queue lock").append(
            Append {
                timestamp: ts,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &record.headers,
                size,
            },
            Instant::now,
        );
        if appended.sealed {
            if record.partition.is_none() && record.key.is_none() {
                // KIP-480: move the sticky partition on once its batch is full.
                sh.sticky
                    .lock()
                    .expect("sticky lock")
                    .insert(record.topic.clone(), rand_index(partitions));
            }
            handle.wake.notify_one();
        } else if sh.config.linger.is_zero() {
            handle.wake.notify_one();
        }
        Ok(appended.delivery)
    }

    /// Takes `size` bytes of `buffer.memory`, waiting up to `max.block.ms` when it is full.
    /// The permits return when the record's batch completes.
    async fn reserve_memory(&self, size: usize) -> Result<()> {
        let sh = &self.shared;
        let n = size as u32;
        let permits = match sh.memory.try_acquire_many(n) {
            Ok(p) => p,
            Err(_) => {
                let waited =
                    tokio::time::timeout(sh.config.max_block, sh.memory.acquire_many(n)).await;
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(ClientError {
                            code: ErrorCode::RequestTimedOut,
                            message: format!(
                                "REQUEST_TIMED_OUT: buffer.memory={} stayed full for max.block.ms={} ms",
                                sh.config.buffer_memory,
                                sh.config.max_block.as_millis()
                            ),
                        })
                    }
                }
            }
        };
        permits.forget();
        Ok(())
    }

    /// `send` and wait for the acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends every batch now and waits until all records sent so far are acknowledged or
    /// failed.
    pub async fn flush(&self) {
        let sh = &self.shared;
        sh.flushing.store(true, Ordering::SeqCst);
        loop {
            let idle = sh.idle.notified();
            sh.wake_senders();
            if sh.outstanding.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), idle).await;
        }
        sh.flushing.store(false, Ordering::SeqCst);
    }

    /// Flushes, then stops the partition senders.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake_senders();
    }

    fn partition_handle(&self, topic: &str, partition: i32) -> Arc<PartitionHandle> {
        let mut map = self.shared.partitions.lock().expect("partitions lock");
        if let Some(h) = map.get(topic).and_then(|ps| ps.get(&partition)) {
            return h.clone();
        }
        let h = Arc::new(PartitionHandle {
            queue: Mutex::new(PartitionAccumulator::new(
                self.shared.config.batch_size,
                self.shared.config.linger,
            )),
            wake: Notify::new(),
        });
        map.entry(topic.to_string())
            .or_default()
            .insert(partition, h.clone());
        tokio::spawn(run_partition_sender(
            self.shared.clone(),
            topic.to_string(),
            partition,
            h.clone(),
        ));
        h
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake_senders();
    }
}

fn rand_index(n: i32) -> i32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ now_ms() as u128);
    (h.finish() % n.max(1) as u64) as i32
}

async fn init_producer_id(cluster: &Cluster, max_block: Duration) -> Result<(i64, i16)> {
    let start = Instant::now();
    loop {
        let addr = cluster.any_broker();
        let r = cluster
            .broker(&addr)?
            .init_producer_id(InitProducerIdRequest::default())
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                return Ok((r.producer_id, r.producer_epoch as i16));
            }
            Err(s) => {
                let code = error_code(&s);
                if !retriable(code) || start.elapsed() >= max_block {
                    return Err(ClientError::from_status(s));
                }
                cluster.refresh().await.ok();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The outcome of one produce request.
type Sent = (Batch, std::result::Result<ProduceResponse, tonic::Status>);

/// One partition's sender: drains sealed (or lingered) batches in order, keeps up to
/// `max_in_flight` of them in flight, and completes or retries them in order.
async fn run_partition_sender(
    sh: Arc<Shared>,
    topic: String,
    partition: i32,
    handle: Arc<PartitionHandle>,
) {
    let cfg = sh.config.clone();
    let idempotent = cfg.idempotent();
    let mut next_seq: i32 = 0;
    let mut retry: VecDeque<Batch> = VecDeque::new();
    let mut inflight: FuturesOrdered<Pin<Box<dyn Future<Output = Sent> + Send>>> =
        FuturesOrdered::new();
    let mut backoff_until: Option<Instant> = None;
    let mut hint: Option<String> = None;
    loop {
        // Fill the pipeline: retries first (in sequence order), then new batches.
        let mut linger_deadline = None;
        while inflight.len() < cfg.max_in_flight
            && backoff_until.is_none_or(|t| Instant::now() >= t)
        {
            backoff_until = None;
            let batch = if let Some(b) = retry.pop_front() {
                b
            } else {
                let force = sh.flushing.load(Ordering::SeqCst) || sh.closed.load(Ordering::SeqCst);
                let ready = handle
                    .queue
                    .lock()
                    .expect("queue lock")
                    .ready(Instant::now(), force);
                let mut b = match ready {
                    Ready::Batch(b) => b,
                    Ready::LingerUntil(due) => {
                        linger_deadline = Some(due);
                        break;
                    }
                    Ready::Empty => break,
                };
                if idempotent {
                    b.build(
                        sh.config.compression,
                        Some((sh.producer_id, sh.producer_epoch, next_seq)),
                    );
                    next_seq = next_seq.wrapping_add(b.records) & i32::MAX;
                } else {
                    b.build(sh.config.compression, None);
                }
                b
            };
            let addr = hint
                .take()
                .or_else(|| sh.cluster.leader(&topic, partition).map(|(_, a)| a));
            let Some(addr) = addr else {
                retry.push_front(batch);
                sh.cluster.refresh().await.ok();
                backoff_until = Some(Instant::now() + cfg.retry_backoff);
                break;
            };
            // Sent here, in order; the future only waits for the answer.
            let answer = send_batch(&sh, &addr, topic.clone(), partition, &batch).await;
            inflight.push_back(Box::pin(async move { (batch, answer.await) }));
        }
        if inflight.is_empty() {
            if sh.closed.load(Ordering::SeqCst)
                && retry.is_empty()
                && handle.queue.lock().expect("queue lock").is_empty()
            {
                return;
            }
            let wake = handle.wake.notified();
            let deadline = match (linger_deadline, backoff_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d.into(), wake).await;
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), wake).await;
                }
            }
            continue;
        }
        let next = tokio::select! {
            r = inflight.next() => r,
            _ = handle.wake.notified(), if inflight.len() < cfg.max_in_flight => None,
            _ = sleep_until_opt(linger_deadline), if inflight.len() < cfg.max_in_flight => None,
        };
        let Some((batch, result)) = next else {
            continue;
        };
        match result {
            Ok(resp) => complete(&sh, batch, Ok(resp)),
            Err(status) => {
                let code = error_code(&status);
                let err = ClientError::from_status(status.clone());
                // Everything still in flight was sent after the failed batch: wait for it
                // so the batches can be retried in their original order.
                let mut failed = vec![(batch, code, err)];
                while let Some((b, r)) = inflight.next().await {
                    match r {
                        // With idempotence a later success is not final while an earlier
                        // batch is unresolved: resending both in order gets each its
                        // original offsets (≤ 5 in flight, all within the broker's cache).
                        Ok(_) if idempotent => failed.push((
                            b,
                            ErrorCode::None,
                            ClientError::from_code(0, "resent after an earlier failure"),
                        )),
                        Ok(resp) => complete(&sh, b, Ok(resp)),
                        Err(s) => {
                            let c = error_code(&s);
                            failed.push((b, c, ClientError::from_status(s)));
                        }
                    }
                }
                let mut fatal = None;
                for (i, (mut b, c, e)) in failed.into_iter().enumerate() {
                    // Pipelined requests may reach the leader out of order (each is its own
                    // HTTP/2 stream), and after an earlier failure a later batch is out of
                    // sequence only because of it: both are retried, in order. A batch the
                    // broker keeps refusing as out of sequence means the broker lost our
                    // sequence (Kafka's pre-KIP-360 fatal case).
                    let out_of_order = c == ErrorCode::OutOfOrderSequenceNumber;
                    if out_of_order {
                        b.out_of_order += 1;
                    }
                    let follows_failure = i > 0 && (idempotent || retriable(c));
                    let reordered = out_of_order && b.out_of_order <= OUT_OF_ORDER_RETRIES;
                    let expired = b.created.elapsed() >= cfg.delivery_timeout;
                    if fatal.is_none() && (retriable(c) || follows_failure || reordered) && !expired
                    {
                        retry.push_back(b);
                    } else {
                        if idempotent {
                            // A batch that failed for good leaves a hole in the sequence:
                            // every later batch would be refused, so the producer stops.
                            fatal.get_or_insert_with(|| e.clone());
                        }
                        complete(&sh, b, Err(e));
                    }
                }
                if let Some(e) = fatal {
                    *sh.fatal.lock().expect("fatal lock") = Some(e.clone());
                    sh.failed.store(true, Ordering::SeqCst);
                    for b in retry.drain(..) {
                        complete(&sh, b, Err(e.clone()));
                    }
                }
                if retry.len() > 1 {
                    retry.make_contiguous().sort_by_key(|b| b.base_sequence);
                }
                // A NOT_LEADER answer carries the new leader: retry there at once.
                hint = error_detail(&status)
                    .and_then(|d| d.leader)
                    .filter(|_| code == ErrorCode::NotLeaderOrFollower)
                    .map(|l| format!("{}:{}", l.host, l.port));
                if hint.is_none() {
                    backoff_until = Some(Instant::now() + cfg.retry_backoff);
                }
                sh.cluster.refresh().await.ok();
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Puts one batch on the ProduceStream to `addr` and returns the wait for its answer (an
/// in-band error becomes a status with the same ErrorDetail a unary call carries).
async fn send_batch(
    sh: &Arc<Shared>,
    addr: &str,
    topic: String,
    partition: i32,
    batch: &Batch,
) -> impl Future<Output = std::result::Result<ProduceResponse, tonic::Status>> + Send + 'static {
    let timeout = sh.config.request_timeout;
    let sent = async {
        let conn = sh.produce_conn(addr).await?;
        let id = conn.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let req = ProduceRequest {
            correlation_id: id,
            topic,
            partition,
            acks: Some(sh.config.acks),
            timeout_ms: timeout.as_millis() as i32,
            payload: Some(produce_request::Payload::RecordBatch(
                batch.bytes.clone().expect("built before sending"),
            )),
        };
        if conn.tx.send(req).await.is_err() {
            conn.alive.store(false, Ordering::SeqCst);
            conn.pending.lock().expect("pending lock").remove(&id);
            return Err(tonic::Status::unavailable(format!(
                "the produce stream to {addr} closed"
            )));
        }
        Ok(rx)
    }
    .await;
    async move {
        let rx = sent?;
        // The broker answers within its own timeout_ms; the margin covers the trip.
        let answer = tokio::time::timeout(timeout + Duration::from_secs(5), rx).await;
        let resp = match answer {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(tonic::Status::unavailable("the produce stream ended")),
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(
                    "no produce answer within the request timeout",
                ))
            }
        };
        if resp.error_code != ErrorCode::None as i32 {
            let code =
                ErrorCode::try_from(resp.error_code).unwrap_or(ErrorCode::UnknownServerError);
            return Err(sluice_proto::status::error_status(
                code,
                resp.error_message,
                resp.current_leader,
            ));
        }
        Ok(resp)
    }
}

fn complete(sh: &Shared, batch: Batch, result: Result<ProduceResponse>) {
    let (n, permits) = (batch.records as usize, batch.permits);
    match result {
        Ok(resp) => batch.succeed(resp.partition, resp.base_offset),
        Err(e) => batch.fail(e),
    }
    sh.memory.add_permits(permits);
    if sh.outstanding.fetch_sub(n, Ordering::SeqCst) == n {
        sh.idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotence_follows_acks_unless_set() {
        let mut c = ProducerConfig::default();
        assert!(c.idempotent());
        c.acks = 1;
        assert!(!c.idempotent());
        c.enable_idempotence = Some(false);
        c.acks = -1;
        assert!(!c.idempotent());
    }

    #[test]
    fn a_record_is_charged_its_key_value_and_headers() {
        let mut r = ProducerRecord::new("t", vec![0u8; 100]).key(vec![1u8; 10]);
        assert_eq!(r.size(), 110 + accumulator::RECORD_OVERHEAD_BYTES);
        r.headers
            .push(("h".into(), Some(Bytes::from_static(b"vv"))));
        assert!(r.size() >= 113 + accumulator::RECORD_OVERHEAD_BYTES);
    }
}
