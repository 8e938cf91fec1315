//! The leader's half of replica fetching: the fetch-session cache and the long poll of a
//! session's partitions with one waiter.
//!
//! A session remembers, for each partition a follower fetches, its last position and what
//! it last learned (HW, log start). A request applies the positions it names, then serves
//! only the partitions that may have news: those named, and those whose replica published
//! a change since the session last looked (a [`ChangeWaker`] registered with each
//! replica). With nothing to say it waits on that one waker until a partition changes or
//! `max_wait_ms` passes, so an idle session costs one sleeping future, not one per
//! partition.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_metadata::{BrokerId, TopicId, TopicIdPartition};
use sluice_proto::status::error_status;
use sluice_proto::v1::{
    EpochEndOffset, ErrorCode, ReplicaFetchPartitionData, ReplicaFetchRequest, ReplicaFetchResponse,
};
use tonic::Status;

use super::session::{
    carries, next_epoch, ready, sent_after, Answer, Position, Sent, SessionRequest,
};
use crate::error::BrokerError;
use crate::limits::{FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};
use crate::node::BrokerNode;
use crate::partition::{ChangeWaker, FetchArgs, PartitionHandle};

/// Most fetch sessions a broker keeps (Kafka's `max.incremental.fetch.session.cache.slots`
/// counts partitions; here each follower fetcher holds one session, so this is far more
/// than `brokers × num.replica.fetchers`). When full, a request opens no session and gets
/// full answers until one expires. Sessions unused for [`FETCH_SESSION_IDLE_MAX`] are
/// dropped whenever one opens.
pub const FETCH_SESSIONS_MAX: usize = 1000;

/// A session unused this long may be evicted (Kafka's
/// `min.incremental.fetch.session.eviction.ms`, 120 s).
pub const FETCH_SESSION_IDLE_MAX: Duration = Duration::from_secs(120);

/// Default record bytes of a whole response (Kafka's `replica.fetch.response.max.bytes`).
pub const RESPONSE_BYTES_DEFAULT: usize = 10 << 20;

/// The sessions this broker leads, by id.
#[derive(Default)]
pub struct FetchSessions {
    /// Sessions by id (std lock: lookups, inserts and evictions; no `.await` inside).
    slots: Mutex<HashMap<i32, Slot>>,
}

struct Slot {
    replica: BrokerId,
    session: Arc<tokio::sync::Mutex<LeaderSession>>,
    last_used: Instant,
}

/// One follower's session.
struct LeaderSession {
    /// The epoch the next incremental request must carry.
    next_epoch: i32,
    partitions: HashMap<TopicIdPartition, Served>,
    /// Told by every partition of the session when it publishes a change.
    waker: Arc<ChangeWaker>,
}

/// One partition of a session.
struct Served {
    topic_name: Option<String>,
    position: Position,
    /// What the follower last learned; `None` = whatever comes next is news.
    sent: Option<Sent>,
    /// The local replica, looked up on first use (and again after it closed).
    handle: Option<PartitionHandle>,
}

impl LeaderSession {
    fn new() -> Self {
        LeaderSession {
            next_epoch: 1,
            partitions: HashMap::new(),
            waker: ChangeWaker::new(),
        }
    }
}

impl FetchSessions {
    /// No sessions.
    pub fn new() -> Self {
        FetchSessions::default()
    }

    /// Keeps `session` for `replica` and returns its id, or 0 when there is no room.
    fn insert(&self, replica: BrokerId, session: Arc<tokio::sync::Mutex<LeaderSession>>) -> i32 {
        let mut slots = self.slots.lock().expect("sessions lock");
        let now = Instant::now();
        // Sessions of followers that went away (restarted, moved, died) go on the next
        // open; there are few sessions, so this pass is cheap.
        slots.retain(|_, s| now.duration_since(s.last_used) < FETCH_SESSION_IDLE_MAX);
        if slots.len() >= FETCH_SESSIONS_MAX {
            return 0;
        }
        let id = loop {
            let id = rand::random::<i32>() & i32::MAX;
            if id != 0 && !slots.contains_key(&id) {
                break id;
            }
        };
        slots.insert(
            id,
            Slot {
                replica,
                session,
                last_used: now,
            },
        );
        id
    }

    /// The session `id` if `replica` owns it.
    fn get(&self, id: i32, replica: BrokerId) -> Option<Arc<tokio::sync::Mutex<LeaderSession>>> {
        let mut slots = self.slots.lock().expect("sessions lock");
        let slot = slots.get_mut(&id).filter(|s| s.replica == replica)?;
        slot.last_used = Instant::now();
        Some(slot.session.clone())
    }

    /// Drops session `id` if `replica` owns it.
    fn close(&self, id: i32, replica: BrokerId) {
        let mut slots = self.slots.lock().expect("sessions lock");
        if slots.get(&id).is_some_and(|s| s.replica == replica) {
            slots.remove(&id);
        }
    }
}

fn invalid(code: ErrorCode, msg: impl Into<String>) -> Status {
    error_status(code, msg.into(), None)
}

/// Serves one `ReplicaFetch`.
pub async fn replica_fetch(
    node: &Arc<BrokerNode>,
    req: ReplicaFetchRequest,
) -> Result<ReplicaFetchResponse, Status> {
    if req.max_bytes < 0 || req.min_bytes < 0 || req.max_wait_ms < 0 {
        return Err(invalid(
            ErrorCode::InvalidFetchSize,
            format!(
                "max_bytes={}, min_bytes={}, max_wait_ms={} must not be negative",
                req.max_bytes, req.min_bytes, req.max_wait_ms
            ),
        ));
    }
    if req.replica_id < 0 {
        return Err(invalid(
            ErrorCode::InvalidRequest,
            format!("replica_id {} is not a broker id", req.replica_id),
        ));
    }
    let replica = BrokerId(req.replica_id);
    let kind = SessionRequest::classify(req.session_id, req.session_epoch)
        .map_err(|e| invalid(ErrorCode::InvalidRequest, e))?;
    let mut named = Vec::with_capacity(req.partitions.len());
    for p in &req.partitions {
        let topic_id = TopicId::parse(&p.topic_id).ok_or_else(|| {
            invalid(
                ErrorCode::InvalidRequest,
                format!(
                    "topic_id {:?} of {}-{} is not a topic id",
                    p.topic_id, p.topic, p.partition
                ),
            )
        })?;
        if p.max_bytes < 0 {
            return Err(invalid(
                ErrorCode::InvalidFetchSize,
                format!(
                    "max_bytes={} of {}-{} must not be negative",
                    p.max_bytes, p.topic, p.partition
                ),
            ));
        }
        let max_bytes = match p.max_bytes {
            0 => FETCH_BYTES_DEFAULT,
            n => (n as usize).min(FETCH_BYTES_MAX),
        };
        named.push((
            TopicIdPartition::new(topic_id, p.partition),
            (!p.topic.is_empty()).then(|| p.topic.clone()),
            Position {
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                max_bytes,
            },
        ));
    }
    let mut forgotten = Vec::with_capacity(req.forgotten.len());
    for f in &req.forgotten {
        let topic_id = TopicId::parse(&f.topic_id).ok_or_else(|| {
            invalid(
                ErrorCode::InvalidRequest,
                format!("forgotten topic_id {:?} is not a topic id", f.topic_id),
            )
        })?;
        forgotten.push(TopicIdPartition::new(topic_id, f.partition));
    }

    let sessions = &node.fetch_sessions;
    let (session, session_id) = match kind {
        SessionRequest::Open { close } | SessionRequest::Sessionless { close } => {
            if close != 0 {
                sessions.close(close, replica);
            }
            let s = Arc::new(tokio::sync::Mutex::new(LeaderSession::new()));
            let id = match kind {
                SessionRequest::Open { .. } => sessions.insert(replica, s.clone()),
                _ => 0,
            };
            (s, id)
        }
        SessionRequest::Incremental { id, .. } => match sessions.get(id, replica) {
            Some(s) => (s, id),
            None => {
                return Err(invalid(
                    ErrorCode::FetchSessionIdNotFound,
                    format!(
                        "broker {} has no fetch session {id} of broker {replica}",
                        node.id()
                    ),
                ))
            }
        },
    };
    let mut session = session.lock().await;
    if let SessionRequest::Incremental { id, epoch } = kind {
        if epoch != session.next_epoch {
            let expected = session.next_epoch;
            drop(session);
            sessions.close(id, replica);
            return Err(invalid(
                ErrorCode::InvalidFetchSessionEpoch,
                format!("fetch session {id}: epoch {epoch}, expected {expected}"),
            ));
        }
        session.next_epoch = next_epoch(epoch);
    }
    let full = kind.is_full();

    // Apply the request: positions named, partitions forgotten.
    let mut dirty: HashSet<TopicIdPartition> = session.waker.take();
    for key in forgotten {
        session.partitions.remove(&key);
    }
    for (key, topic_name, position) in named {
        let s = session.partitions.entry(key).or_insert_with(|| Served {
            topic_name: None,
            position,
            sent: None,
            handle: None,
        });
        if topic_name.is_some() {
            s.topic_name = topic_name;
        }
        s.position = position;
        dirty.insert(key);
    }
    if full {
        dirty = session.partitions.keys().copied().collect();
    }
    dirty.retain(|k| session.partitions.contains_key(k));

    let budget = match req.max_bytes {
        0 => RESPONSE_BYTES_DEFAULT,
        n => (n as usize).min(FETCH_BYTES_MAX),
    };
    let min_bytes = req.min_bytes as usize;
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.min(FETCH_WAIT_MS_MAX) as u64);
    let mut out: HashMap<TopicIdPartition, (ReplicaFetchPartitionData, Answer)> = HashMap::new();
    let mut record_bytes = 0usize;
    let waker = session.waker.clone();
    loop {
        let mut deferred = Vec::new();
        for key in dirty.drain() {
            if record_bytes >= budget {
                deferred.push(key);
                continue;
            }
            let s = session
                .partitions
                .get_mut(&key)
                .expect("dirty keys are in the session");
            let max_bytes = s.position.max_bytes.min(budget - record_bytes);
            let (data, answer) = serve_one(node, &waker, replica, key, s, max_bytes).await;
            if !carries(full, answer, s.sent) {
                continue;
            }
            if let Some((old, _)) = out.get(&key) {
                record_bytes -= old.record_batches.len();
            }
            record_bytes += data.record_batches.len();
            out.insert(key, (data, answer));
        }
        // Left for the next request: the follower hears of them then.
        for key in deferred {
            waker.mark(key);
        }
        // Only news is carried, so a carried partition without records is news too (a
        // changed HW or log start, a divergence, an error).
        let news_without_records = out.values().any(|(d, _)| d.record_batches.is_empty());
        let left = deadline.saturating_duration_since(Instant::now());
        if ready(full, record_bytes, news_without_records, min_bytes) || left.is_zero() {
            break;
        }
        tokio::select! {
            () = waker.changed() => {}
            () = tokio::time::sleep(left) => break,
        }
        dirty = waker.take();
        dirty.retain(|k| session.partitions.contains_key(k));
    }

    let mut partitions = Vec::with_capacity(out.len());
    for (key, (data, answer)) in out {
        if let Some(s) = session.partitions.get_mut(&key) {
            s.sent = sent_after(answer);
        }
        partitions.push(data);
    }
    Ok(ReplicaFetchResponse {
        session_id,
        partitions,
    })
}

/// Serves one partition of a session: its data (or error) and what that means for
/// inclusion.
async fn serve_one(
    node: &Arc<BrokerNode>,
    waker: &Arc<ChangeWaker>,
    replica: BrokerId,
    key: TopicIdPartition,
    s: &mut Served,
    max_bytes: usize,
) -> (ReplicaFetchPartitionData, Answer) {
    let mut data = ReplicaFetchPartitionData {
        topic_id: key.topic_id.to_string(),
        partition: key.partition,
        ..Default::default()
    };
    if s.handle.is_none() {
        s.handle = node.partition_by_key(key);
        if let Some(h) = &s.handle {
            h.add_listener(waker);
        }
    }
    let Some(handle) = s.handle.clone() else {
        data.error_code = ErrorCode::NotLeaderOrFollower as i32;
        data.error_message = format!(
            "broker {} has no replica of {}",
            node.id(),
            s.topic_name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", key.topic_id, key.partition))
        );
        return (data, Answer::Error);
    };
    let args = FetchArgs {
        fetch_offset: s.position.fetch_offset,
        max_bytes,
        current_leader_epoch: Some(s.position.current_leader_epoch),
        last_fetched_epoch: s.position.last_fetched_epoch,
        follower: Some(replica),
        file_ranges: false,
    };
    match handle.fetch(args).await {
        Ok(got) => {
            let (high_watermark, log_start_offset, log_end_offset) =
                (got.high_watermark, got.log_start_offset, got.log_end_offset);
            let diverging = got.diverging;
            let batches = got.into_bytes();
            data.high_watermark = high_watermark;
            data.log_start_offset = log_start_offset;
            data.log_end_offset = log_end_offset;
            if let Some(d) = diverging {
                data.diverging_epoch = Some(EpochEndOffset {
                    leader_epoch: d.leader_epoch,
                    end_offset: d.end_offset,
                });
                return (data, Answer::Diverging);
            }
            let answer = Answer::Served {
                record_bytes: batches.len(),
                now: Sent {
                    high_watermark,
                    log_start_offset,
                },
            };
            data.record_batches = batches;
            (data, answer)
        }
        Err(e) => {
            if let BrokerError::ReplicaClosed { .. } = e {
                // Replaced or removed: look it up again next time.
                s.handle = None;
            }
            if let BrokerError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            } = e
            {
                data.log_start_offset = log_start_offset;
                data.log_end_offset = log_end_offset;
            }
            data.error_code = e.code() as i32;
            data.error_message = e.to_string();
            (data, Answer::Error)
        }
    }
}
