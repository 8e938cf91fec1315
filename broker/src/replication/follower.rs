//! The follower's half of replica fetching: `num.replica.fetchers` fetcher tasks per
//! leader broker, each carrying its share of the partitions followed from that leader in
//! one long-polling fetch session (Kafka's `ReplicaFetcherThread` with a
//! `FetchSessionHandler`).
//!
//! Roles arrive from `BrokerNode::reconcile` as [`FetcherCommand`]s. Each partition keeps
//! its own rules (epoch fencing, truncation on divergence, HW) in its replica's actor:
//! the fetcher only moves bytes and positions. A partition whose fetch fails (not leader
//! yet, fenced, no replica) leaves the session for [`PARTITION_BACKOFF`] and rejoins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_metadata::{BrokerId, TopicId, TopicIdPartition};
use sluice_proto::status::error_code;
use sluice_proto::v1::replication_client::ReplicationClient;
use sluice_proto::v1::{
    ErrorCode, ReplicaFetchForgotten, ReplicaFetchPartition, ReplicaFetchPartitionData,
    ReplicaFetchRequest,
};
use tokio::sync::mpsc;

use super::session::{FollowerSession, Position};
use crate::node::BrokerNode;
use crate::partition::state::DivergingEpoch;
use crate::partition::{FetchPosition, FetchedFromLeader, PartitionHandle};

/// How long a partition whose fetch failed stays out of its session (Kafka's
/// `replica.fetch.backoff.ms` is 1 s; metadata here usually settles faster).
pub const PARTITION_BACKOFF: Duration = Duration::from_millis(500);

/// The longest pause after failed requests to a leader (doubling from 50 ms).
pub const REQUEST_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Beyond `replica.fetch.wait.max.ms`, how long a fetch may take before it is abandoned.
pub const REPLICA_FETCH_TIMEOUT_MARGIN: Duration = Duration::from_secs(3);

/// Replicated appends of one response applied at once (each on its partition's I/O
/// thread).
const APPLIES_IN_FLIGHT_MAX: usize = 16;

/// What a fetcher is told.
pub enum FetcherCommand {
    /// Follow `part` at `leader_epoch` (replacing an older role of it).
    Follow {
        /// The replica.
        part: PartitionHandle,
        /// The epoch of the leader followed.
        leader_epoch: i32,
    },
    /// Stop fetching `key`.
    Unfollow {
        /// The replica's key.
        key: TopicIdPartition,
    },
}

/// Every fetcher of this broker, and which one carries each followed partition.
#[derive(Default)]
pub struct ReplicaFetchers {
    /// Fetcher inboxes by (leader, fetcher index) and the partitions each carries (std
    /// lock: map updates and channel sends only, no `.await` inside).
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    fetchers: HashMap<(BrokerId, usize), Fetcher>,
    /// (leader, leader epoch, fetcher index) of each followed partition.
    followed: HashMap<TopicIdPartition, (BrokerId, i32, usize)>,
}

struct Fetcher {
    tx: mpsc::UnboundedSender<FetcherCommand>,
    /// Aborted when the fetchers are dropped.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for f in self.fetchers.values() {
            f.task.abort();
        }
    }
}

impl ReplicaFetchers {
    /// No fetchers.
    pub fn new() -> Self {
        ReplicaFetchers::default()
    }

    /// Fetches `part` from `leader` at `leader_epoch` (moving it from any fetcher that had
    /// it under another role).
    pub fn follow(
        &self,
        node: &Arc<BrokerNode>,
        part: &PartitionHandle,
        leader: BrokerId,
        leader_epoch: i32,
    ) {
        let key = TopicIdPartition::new(part.topic_id, part.index);
        let n = node.config.num_replica_fetchers.max(1);
        let index = fetcher_index(key, n);
        let mut inner = self.inner.lock().expect("fetchers lock");
        match inner.followed.get(&key) {
            Some(&(l, e, _)) if l == leader && e == leader_epoch => return,
            Some(&(l, _, i)) if l != leader || i != index => {
                if let Some(f) = inner.fetchers.get(&(l, i)) {
                    let _ = f.tx.send(FetcherCommand::Unfollow { key });
                }
            }
            _ => {}
        }
        inner.followed.insert(key, (leader, leader_epoch, index));
        let fetcher = inner.fetchers.entry((leader, index)).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(run_fetcher(node.clone(), leader, index, rx));
            Fetcher { tx, task }
        });
        let cmd = FetcherCommand::Follow {
            part: part.clone(),
            leader_epoch,
        };
        if let Err(mpsc::error::SendError(cmd)) = fetcher.tx.send(cmd) {
            // The task ended (a panic): start a new one.
            tracing::error!(leader = %leader, fetcher = index, "replica fetcher had stopped; restarting it");
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(run_fetcher(node.clone(), leader, index, rx));
            let _ = tx.send(cmd);
            *fetcher = Fetcher { tx, task };
        }
    }

    /// Stops fetching `key` (it leads, has no leader, or is gone).
    pub fn unfollow(&self, key: TopicIdPartition) {
        let mut inner = self.inner.lock().expect("fetchers lock");
        if let Some((l, _, i)) = inner.followed.remove(&key) {
            if let Some(f) = inner.fetchers.get(&(l, i)) {
                let _ = f.tx.send(FetcherCommand::Unfollow { key });
            }
        }
    }
}

/// Which of `n` fetchers carries `key` (stable for the partition's life).
pub fn fetcher_index(key: TopicIdPartition, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

/// A partition one fetcher carries.
struct Followed {
    part: PartitionHandle,
    leader_epoch: i32,
}

/// What one fetcher knows of its partitions, kept so that each request costs what changed
/// since the last one, not the number of partitions carried.
#[derive(Default)]
struct Carried {
    parts: HashMap<TopicIdPartition, Followed>,
    /// Partitions in the session, at their next fetch position.
    wanted: HashMap<TopicIdPartition, Position>,
    /// Partitions whose entry in `wanted` changed since the last request.
    touched: HashSet<TopicIdPartition>,
    /// Partitions whose position must be asked of their replica.
    unknown: HashSet<TopicIdPartition>,
    /// Partitions out of the session until then, after a failed fetch.
    delayed: HashMap<TopicIdPartition, Instant>,
    partition_max_bytes: usize,
}

impl Carried {
    fn follow(&mut self, part: PartitionHandle, leader_epoch: i32) {
        let key = TopicIdPartition::new(part.topic_id, part.index);
        self.parts.insert(key, Followed { part, leader_epoch });
        self.wanted.remove(&key);
        self.delayed.remove(&key);
        self.unknown.insert(key);
        self.touched.insert(key);
    }

    fn drop_partition(&mut self, key: TopicIdPartition) {
        self.parts.remove(&key);
        self.wanted.remove(&key);
        self.delayed.remove(&key);
        self.unknown.remove(&key);
        self.touched.insert(key);
    }

    fn set_position(&mut self, key: TopicIdPartition, p: FetchPosition) {
        let Some(f) = self.parts.get(&key) else {
            return;
        };
        let position = Position {
            fetch_offset: p.fetch_offset,
            current_leader_epoch: f.leader_epoch,
            last_fetched_epoch: p.last_fetched_epoch,
            max_bytes: self.partition_max_bytes,
        };
        if self.wanted.insert(key, position) != Some(position) {
            self.touched.insert(key);
        }
    }

    /// Out of the session until `until`; named again when back (`FollowerSession::resend`).
    fn delay(&mut self, session: &mut FollowerSession, key: TopicIdPartition, until: Instant) {
        if !self.parts.contains_key(&key) {
            return;
        }
        self.wanted.remove(&key);
        self.unknown.remove(&key);
        self.delayed.insert(key, until);
        self.touched.insert(key);
        session.resend(key);
    }

    fn apply(&mut self, cmd: FetcherCommand) {
        match cmd {
            FetcherCommand::Follow { part, leader_epoch } => self.follow(part, leader_epoch),
            FetcherCommand::Unfollow { key } => self.drop_partition(key),
        }
    }
}

/// One fetcher: a fetch session with `leader` carrying the partitions it is told to
/// follow. Ends when its inbox closes.
async fn run_fetcher(
    node: Arc<BrokerNode>,
    leader: BrokerId,
    fetcher_id: usize,
    mut inbox: mpsc::UnboundedReceiver<FetcherCommand>,
) {
    let mut c = Carried {
        partition_max_bytes: node.config.replica_fetch_max_bytes.max(0) as usize,
        ..Default::default()
    };
    let mut session = FollowerSession::default();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Role changes first.
        loop {
            match inbox.try_recv() {
                Ok(cmd) => c.apply(cmd),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        // Partitions back from a delay, and new ones, learn their position.
        let now = Instant::now();
        if !c.delayed.is_empty() {
            let back: Vec<_> = c
                .delayed
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in back {
                c.delayed.remove(&k);
                c.unknown.insert(k);
            }
        }
        for key in std::mem::take(&mut c.unknown) {
            let Some(f) = c.parts.get(&key) else { continue };
            match f.part.fetch_position(leader, f.leader_epoch).await {
                Some(p) => c.set_position(key, p),
                None => c.drop_partition(key),
            }
        }
        if c.wanted.is_empty() {
            let next = c.delayed.values().min().copied();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(cmd) => c.apply(cmd),
                    None => return,
                },
                () = sleep => {}
            }
            continue;
        }
        let Some(addr) = node.broker_addr(leader) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let built = session.build(&c.wanted, &c.touched);
        let req = ReplicaFetchRequest {
            replica_id: node.id().get(),
            replica_epoch: node.broker_epoch.load(std::sync::atomic::Ordering::SeqCst),
            session_id: built.session_id,
            session_epoch: built.session_epoch,
            max_wait_ms: node.config.replica_fetch_wait_max_ms,
            min_bytes: node.config.replica_fetch_min_bytes,
            max_bytes: node.config.replica_fetch_response_max_bytes,
            partitions: built
                .partitions
                .iter()
                .map(|(k, p)| ReplicaFetchPartition {
                    topic_id: k.topic_id.to_string(),
                    topic: c
                        .parts
                        .get(k)
                        .map(|f| f.part.topic.clone())
                        .unwrap_or_default(),
                    partition: k.partition,
                    fetch_offset: p.fetch_offset,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                    max_bytes: p.max_bytes as i32,
                })
                .collect(),
            forgotten: built
                .forgotten
                .iter()
                .map(|k| ReplicaFetchForgotten {
                    topic_id: k.topic_id.to_string(),
                    partition: k.partition,
                })
                .collect(),
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(
            Duration::from_millis(node.config.replica_fetch_wait_max_ms.max(0) as u64)
                + REPLICA_FETCH_TIMEOUT_MARGIN,
        );
        let resp = ReplicationClient::new(node.channel(&addr))
            .max_decoding_message_size(crate::limits::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(crate::limits::MESSAGE_BYTES_MAX)
            .replica_fetch(req)
            .await;
        // Either way the request accounted for every touched partition: a failure is followed
        // by a full request, and a success brought the leader's view up to date.
        c.touched.clear();
        let resp = match resp {
            Ok(r) => r.into_inner(),
            Err(s) => {
                session.reset();
                let code = error_code(&s);
                if matches!(
                    code,
                    ErrorCode::FetchSessionIdNotFound | ErrorCode::InvalidFetchSessionEpoch
                ) {
                    tracing::debug!(%leader, fetcher = fetcher_id, error = %s.message(), "fetch session lost; starting a new one");
                    continue;
                }
                tracing::debug!(%leader, fetcher = fetcher_id, error = %s.message(), "replica fetch failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REQUEST_BACKOFF_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        session.on_response(&built, resp.session_id);
        let now = Instant::now();
        let mut applies = Vec::new();
        for data in resp.partitions {
            let Some(topic_id) = TopicId::parse(&data.topic_id) else {
                continue;
            };
            let key = TopicIdPartition::new(topic_id, data.partition);
            let (Some(f), Some(position)) = (c.parts.get(&key), c.wanted.get(&key)) else {
                continue;
            };
            match fetched(&data, position.fetch_offset) {
                Ok(fetched) => applies.push((key, f.part.clone(), f.leader_epoch, fetched)),
                Err(()) => {
                    tracing::debug!(partition = %f.part.name(), %leader, code = data.error_code,
                        error = %data.error_message, "replica fetch of a partition failed; retrying");
                    c.delay(&mut session, key, now + PARTITION_BACKOFF);
                }
            }
        }
        let mut results = futures::stream::iter(applies.into_iter().map(
            |(key, part, epoch, fetched)| async move {
                (key, part.apply_from_leader(leader, epoch, fetched).await)
            },
        ))
        .buffer_unordered(APPLIES_IN_FLIGHT_MAX);
        while let Some((key, r)) = results.next().await {
            match r {
                Ok(Some(p)) => c.set_position(key, p),
                // No longer follows at that epoch: reconcile sends the new role.
                Ok(None) => c.drop_partition(key),
                Err(e) => {
                    if let Some(f) = c.parts.get(&key) {
                        tracing::error!(partition = %f.part.name(), error = %e, "replicated append failed");
                    }
                    c.delay(&mut session, key, Instant::now() + PARTITION_BACKOFF);
                }
            }
        }
    }
}

/// What a partition's answer asks of the replica, or `Err` for an error to back off from.
fn fetched(data: &ReplicaFetchPartitionData, fetch_offset: i64) -> Result<FetchedFromLeader, ()> {
    match ErrorCode::try_from(data.error_code).unwrap_or(ErrorCode::UnknownServerError) {
        ErrorCode::None => {}
        // Our log end is below the leader's log start: start over there.
        ErrorCode::OffsetOutOfRange if data.log_start_offset > fetch_offset => {
            return Ok(FetchedFromLeader::StartAt(data.log_start_offset));
        }
        _ => return Err(()),
    }
    if let Some(d) = &data.diverging_epoch {
        return Ok(FetchedFromLeader::Diverging(DivergingEpoch {
            leader_epoch: d.leader_epoch,
            end_offset: d.end_offset,
        }));
    }
    Ok(FetchedFromLeader::Records {
        batches: data.record_batches.clone(),
        high_watermark: data.high_watermark,
    })
}
