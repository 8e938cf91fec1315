//! The consumer: manual assignment or group subscription (DESIGN §7), `poll` bounded by
//! `max.poll.records`, committed offsets, `auto.offset.reset`, auto-commit and `seek`.
//!
//! ```text
//!   subscribe(topics) ── heartbeat task ──ConsumerGroupHeartbeat──► coordinator
//!                            │ member id, epoch, assigned partitions
//!                            ▼
//!   poll() ── reconcile assignment: new partition → committed offset (OffsetFetch)
//!         │                          or auto.offset.reset (ListOffsets)
//!         ├─ Fetch from each partition's leader, concurrently; first data wins
//!         └─ auto-commit every auto.commit.interval.ms (OffsetCommit with member epoch)
//! ```
//!
//! Delivery is at least once: positions are committed after the records were returned, and
//! a partition that moves to another member restarts there from the last commit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::*;

use crate::cluster::Cluster;
use crate::{ClientError, Result};

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start from the log start.
    Earliest,
    /// Start from the log end (Kafka's default).
    Latest,
    /// Fail when there is no committed offset.
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            _ => Err(format!(
                "auto.offset.reset={s:?}: use earliest, latest or none"
            )),
        }
    }
}

/// How long a fetch that failed with a retriable error waits before the next try (Kafka's
/// `retry.backoff.ms` default).
pub const FETCH_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Consumer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `group.id`; required for `subscribe` and commits.
    pub group_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `group.remote.assignor`: `range` or `roundrobin`.
    pub assignor: String,
    /// `request.timeout.ms`.
    pub request_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            client_id: "sluice-consumer".into(),
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
            max_partition_fetch_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            assignor: "range".into(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in record order, duplicates kept (key as UTF-8, lossily).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Leader epoch of the batch.
    pub leader_epoch: i32,
}

/// A topic-partition.
pub type Tp = (String, i32);

/// What the heartbeat task knows about our membership.
#[derive(Debug, Default, Clone)]
struct Membership {
    member_id: String,
    epoch: i32,
    assignment: BTreeSet<Tp>,
    /// What the consumer has taken up and not yet given back (KIP-848 owned partitions):
    /// the coordinator moves a partition to another member only once it is gone from here.
    owned: BTreeSet<Tp>,
    coordinator: Option<String>,
    /// Set by `close`: leave and stop.
    leaving: bool,
    last_error: Option<String>,
}

struct GroupState {
    group_id: String,
    membership: Mutex<Membership>,
    topics: Mutex<Vec<String>>,
    wake: tokio::sync::Notify,
}

/// A consumer. Not `Sync`: one task polls it, as with Kafka's consumer.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    group: Option<Arc<GroupState>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Assigned partitions and their positions (None until initialised).
    positions: BTreeMap<Tp, Option<i64>>,
    /// Leader epoch of the last record returned per partition.
    epochs: BTreeMap<Tp, i32>,
    manual: bool,
    buffer: VecDeque<ConsumerRecord>,
    /// Per partition, the offset after the last record fetched into `buffer` (where the
    /// next fetch starts); absent when nothing is buffered beyond its position.
    fetched_to: BTreeMap<Tp, i64>,
    /// The fetch in flight per partition: started as soon as the previous answer was
    /// buffered, so the next records travel while the application works on these.
    ahead: BTreeMap<Tp, Ahead>,
    last_commit: Instant,
}

/// A fetch of one partition running ahead of `poll`, from `offset`.
struct Ahead {
    offset: i64,
    task: tokio::task::JoinHandle<Result<Vec<ConsumerRecord>>>,
}

fn retriable(code: ErrorCode) -> bool {
    sluice_proto::status::is_retriable(code) || code == ErrorCode::NetworkException
}

impl Consumer {
    /// Connects through `bootstrap`.
    pub async fn connect(bootstrap: &str, config: ConsumerConfig) -> Result<Self> {
        if let Some(g) = &config.group_id {
            if g.is_empty() {
                return Err(ClientError {
                    code: ErrorCode::InvalidGroupId,
                    message: "INVALID_GROUP_ID: group id is empty".into(),
                });
            }
        }
        let cluster =
            Cluster::connect(bootstrap, config.request_timeout + Duration::from_secs(5)).await?;
        Ok(Consumer {
            cluster,
            config,
            group: None,
            heartbeat: None,
            positions: BTreeMap::new(),
            epochs: BTreeMap::new(),
            manual: false,
            buffer: VecDeque::new(),
            fetched_to: BTreeMap::new(),
            ahead: BTreeMap::new(),
            last_commit: Instant::now(),
        })
    }

    /// The cluster view.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Consumes exactly these partitions (no group membership; commits still go to the
    /// group when `group.id` is set).
    pub fn assign(&mut self, partitions: Vec<Tp>) {
        self.manual = true;
        self.buffer.clear();
        self.forget_fetches(|_| true);
        let keep: BTreeMap<Tp, Option<i64>> = partitions
            .into_iter()
            .map(|tp| {
                let pos = self.positions.get(&tp).copied().flatten();
                (tp, pos)
            })
            .collect();
        self.positions = keep;
    }

    /// Joins the group and lets the coordinator assign partitions of `topics`.
    pub fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        let Some(group_id) = self.config.group_id.clone() else {
            return Err(ClientError {
                code: ErrorCode::InvalidGroupId,
                message: "INVALID_GROUP_ID: subscribe needs a group.id".into(),
            });
        };
        if let Some(g) = &self.group {
            *g.topics.lock().expect("topics") = topics;
            g.wake.notify_one();
            return Ok(());
        }
        let state = Arc::new(GroupState {
            group_id,
            membership: Mutex::new(Membership::default()),
            topics: Mutex::new(topics),
            wake: tokio::sync::Notify::new(),
        });
        self.heartbeat = Some(tokio::spawn(run_heartbeat(
            self.cluster.clone(),
            self.config.clone(),
            state.clone(),
        )));
        self.group = Some(state);
        self.manual = false;
        Ok(())
    }

    /// Partitions currently assigned.
    pub fn assignment(&self) -> Vec<Tp> {
        self.positions.keys().cloned().collect()
    }

    /// Our member id and epoch in the group (empty / 0 before joining).
    pub fn member(&self) -> (String, i32) {
        self.group.as_ref().map_or((String::new(), 0), |g| {
            let m = g.membership.lock().expect("membership");
            (m.member_id.clone(), m.epoch)
        })
    }

    /// Next offset to be returned for a partition, if known.
    pub fn position(&self, tp: &Tp) -> Option<i64> {
        self.positions.get(tp).copied().flatten()
    }

    /// Moves a partition's position.
    pub fn seek(&mut self, tp: Tp, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(ClientError {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "INVALID_REQUEST: cannot seek {}-{} to negative offset {offset}",
                    tp.0, tp.1
                ),
            });
        }
        let Some(pos) = self.positions.get_mut(&tp) else {
            return Err(ClientError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!(
                    "UNKNOWN_TOPIC_OR_PARTITION: {}-{} is not assigned to this consumer",
                    tp.0, tp.1
                ),
            });
        };
        *pos = Some(offset);
        self.buffer
            .retain(|r| (r.topic.as_str(), r.partition) != (tp.0.as_str(), tp.1));
        self.forget_fetches(|t| *t == tp);
        Ok(())
    }

    /// Returns up to `max.poll.records` records, waiting up to `timeout` for some.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reconcile().await?;
            self.maybe_auto_commit().await;
            if !self.buffer.is_empty() {
                let n = self.buffer.len().min(self.config.max_poll_records);
                let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
                for r in &out {
                    self.positions
                        .insert((r.topic.clone(), r.partition), Some(r.offset + 1));
                    self.epochs
                        .insert((r.topic.clone(), r.partition), r.leader_epoch);
                }
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            if self.positions.is_empty() {
                // Nothing assigned yet (joining, or more members than partitions).
                if let Some(g) = &self.group {
                    let _ = tokio::time::timeout(
                        left.min(Duration::from_millis(100)),
                        g.wake.notified(),
                    )
                    .await;
                } else {
                    tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                }
                continue;
            }
            self.fetch_some(left.min(self.config.fetch_max_wait))
                .await?;
        }
    }

    /// Applies the group's latest assignment and initialises new partitions' positions.
    async fn reconcile(&mut self) -> Result<()> {
        if let Some(g) = self.group.clone() {
            let assigned = g.membership.lock().expect("membership").assignment.clone();
            let current: BTreeSet<Tp> = self.positions.keys().cloned().collect();
            if assigned != current {
                tracing::debug!(?assigned, "assignment changed");
                // Revoked partitions: commit what poll returned from them (our epoch stays
                // valid until we report them released), then let them go.
                let revoked: Vec<(Tp, i64)> = self
                    .positions
                    .iter()
                    .filter(|(tp, _)| !assigned.contains(*tp))
                    .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
                    .collect();
                if self.config.enable_auto_commit && !revoked.is_empty() {
                    if let Err(e) = self.commit_offsets(revoked).await {
                        tracing::warn!(error = %e, "commit of revoked partitions failed; their new owner may read some records again");
                    }
                }
                self.positions.retain(|tp, _| assigned.contains(tp));
                self.buffer
                    .retain(|r| assigned.contains(&(r.topic.clone(), r.partition)));
                self.forget_fetches(|tp| !assigned.contains(tp));
                for tp in assigned {
                    self.positions.entry(tp).or_insert(None);
                }
            }
            let owned: BTreeSet<Tp> = self.positions.keys().cloned().collect();
            let mut m = g.membership.lock().expect("membership");
            if m.owned != owned {
                m.owned = owned;
                // Tell the coordinator now, not at the next interval: a partition we gave
                // up waits for this before its new owner may start.
                g.wake.notify_one();
            }
        }
        let missing: Vec<Tp> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = if self.config.group_id.is_some() {
            self.committed(&missing).await?
        } else {
            BTreeMap::new()
        };
        for tp in missing {
            let pos = match committed.get(&tp) {
                Some(&o) if o >= 0 => o,
                _ => self.reset_offset(&tp).await?,
            };
            self.positions.insert(tp, Some(pos));
        }
        Ok(())
    }

    async fn reset_offset(&self, tp: &Tp) -> Result<i64> {
        let ts = match self.config.auto_offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
            OffsetReset::None => {
                return Err(ClientError {
                    code: ErrorCode::OffsetOutOfRange,
                    message: format!(
                    "OFFSET_OUT_OF_RANGE: no committed offset for {}-{} and auto.offset.reset=none",
                    tp.0, tp.1
                ),
                })
            }
        };
        list_offset(&self.cluster, &tp.0, tp.1, ts).await
    }

    /// Committed offsets of the group for `partitions` (-1 when none).
    pub async fn committed(&self, partitions: &[Tp]) -> Result<BTreeMap<Tp, i64>> {
        let Some(group) = &self.config.group_id else {
            return Ok(BTreeMap::new());
        };
        let req = OffsetFetchRequest {
            group_id: group.clone(),
            partitions: partitions
                .iter()
                .map(|(t, p)| TopicPartition {
                    topic: t.clone(),
                    partition: *p,
                })
                .collect(),
        };
        let resp = call_coordinator(&self.cluster, group, None, |mut c| {
            let req = req.clone();
            async move { c.offset_fetch(req).await }
        })
        .await?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| ((r.topic, r.partition), r.committed_offset))
            .collect())
    }

    /// Drops buffered-ahead state and aborts the fetches in flight of the partitions
    /// `which` selects (seek, revocation, a new manual assignment).
    fn forget_fetches(&mut self, which: impl Fn(&Tp) -> bool) {
        self.fetched_to.retain(|tp, _| !which(tp));
        self.ahead.retain(|tp, a| {
            let drop = which(tp);
            if drop {
                a.task.abort();
            }
            !drop
        });
    }

    /// Where the next fetch of `tp` starts: after what is buffered, else its position.
    fn next_fetch_offset(&self, tp: &Tp) -> Option<i64> {
        self.fetched_to
            .get(tp)
            .copied()
            .or(self.positions.get(tp).copied().flatten())
    }

    /// Starts a fetch of `tp` unless one is in flight.
    fn start_fetch(&mut self, tp: &Tp, max_wait: Duration) {
        if self.ahead.contains_key(tp) {
            return;
        }
        let Some(offset) = self.next_fetch_offset(tp) else {
            return;
        };
        let (cluster, t, max_bytes) = (
            self.cluster.clone(),
            tp.clone(),
            self.config.max_partition_fetch_bytes,
        );
        let task = tokio::spawn(async move {
            fetch_partition(&cluster, &t, offset, max_bytes, max_wait).await
        });
        self.ahead.insert(tp.clone(), Ahead { offset, task });
    }

    /// Waits (up to about `max_wait`) for fetches to answer and buffers what they bring;
    /// a partition that got records has its next fetch started at once (one in flight per
    /// partition, each starting where the previous ended, so order is kept).
    async fn fetch_some(&mut self, max_wait: Duration) -> Result<()> {
        let tps: Vec<Tp> = self.positions.keys().cloned().collect();
        for tp in &tps {
            self.start_fetch(tp, max_wait);
        }
        if self.ahead.is_empty() {
            return Ok(());
        }
        // The first answer, then whatever else is ready now; the rest stay in flight.
        // Bounded by the caller's wait: an answer that comes later is taken by a later poll.
        let first = tokio::time::timeout(
            max_wait,
            std::future::poll_fn(|cx| {
                for (tp, a) in self.ahead.iter_mut() {
                    if let std::task::Poll::Ready(r) =
                        std::future::Future::poll(std::pin::Pin::new(&mut a.task), cx)
                    {
                        return std::task::Poll::Ready((tp.clone(), a.offset, r));
                    }
                }
                std::task::Poll::Pending
            }),
        )
        .await;
        let mut done = Vec::new();
        if let Ok((tp, offset, r)) = first {
            self.ahead.remove(&tp);
            done.push((tp, offset, r));
        }
        let ready: Vec<Tp> = self
            .ahead
            .iter()
            .filter(|(_, a)| a.task.is_finished())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in ready {
            let a = self.ahead.remove(&tp).expect("listed");
            let r = a.task.await;
            done.push((tp, a.offset, r));
        }
        let mut got_data = false;
        let mut failure = None;
        let mut retry = false;
        for (tp, offset, joined) in done {
            if self.next_fetch_offset(&tp) != Some(offset) {
                continue; // sought or revoked meanwhile
            }
            let r = joined.unwrap_or_else(|e| {
                Err(ClientError {
                    code: ErrorCode::UnknownServerError,
                    message: format!("UNKNOWN_SERVER_ERROR: fetch task failed: {e}"),
                })
            });
            match r {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        got_data = true;
                        self.fetched_to.insert(tp.clone(), last.offset + 1);
                        self.buffer.extend(records);
                        self.start_fetch(&tp, max_wait);
                    }
                }
                Err(e) if e.code == ErrorCode::OffsetOutOfRange => {
                    let new = self.reset_offset(&tp).await?;
                    tracing::warn!(topic = %tp.0, partition = tp.1, from = offset, to = new, "offset out of range; reset");
                    self.buffer
                        .retain(|r| (r.topic.as_str(), r.partition) != (tp.0.as_str(), tp.1));
                    self.fetched_to.remove(&tp);
                    self.positions.insert(tp, Some(new));
                }
                Err(e) if retriable(e.code) => {
                    retry = true;
                    self.cluster.refresh().await.ok();
                }
                Err(e) => failure = Some(e),
            }
        }
        if retry && !got_data {
            // Kafka's retry.backoff.ms: a leader that is down (connection refused) fails at
            // once, and asking again at once would spin.
            tokio::time::sleep(FETCH_RETRY_BACKOFF.min(max_wait)).await;
        }
        match failure {
            Some(e) if !got_data => Err(e),
            _ => Ok(()),
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if self.group.is_none()
            || !self.config.enable_auto_commit
            || self.last_commit.elapsed() < self.config.auto_commit_interval
        {
            return;
        }
        if let Err(e) = self.commit_sync().await {
            tracing::warn!(error = %e, "auto-commit failed; records since the last commit may be redelivered");
        }
    }

    /// Commits the positions of every assigned partition (the records `poll` returned).
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets: Vec<(Tp, i64)> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits explicit offsets (next offset to consume per partition).
    pub async fn commit_offsets(&mut self, offsets: Vec<(Tp, i64)>) -> Result<()> {
        self.last_commit = Instant::now();
        let Some(group) = self.config.group_id.clone() else {
            return Err(ClientError {
                code: ErrorCode::InvalidGroupId,
                message: "INVALID_GROUP_ID: commits need a group.id".into(),
            });
        };
        if offsets.is_empty() {
            return Ok(());
        }
        for attempt in 0..3 {
            let (member_id, member_epoch) = if self.manual || self.group.is_none() {
                (String::new(), -1)
            } else {
                self.member()
            };
            let req = OffsetCommitRequest {
                group_id: group.clone(),
                member_id,
                member_epoch,
                group_instance_id: None,
                partitions: offsets
                    .iter()
                    .map(|((t, p), o)| OffsetCommitPartition {
                        topic: t.clone(),
                        partition: *p,
                        committed_offset: *o,
                        committed_leader_epoch: self.epochs.get(&(t.clone(), *p)).copied(),
                        metadata: String::new(),
                    })
                    .collect(),
            };
            let resp = call_coordinator(&self.cluster, &group, None, |mut c| {
                let req = req.clone();
                async move { c.offset_commit(req).await }
            })
            .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) if e.code == ErrorCode::StaleMemberEpoch && attempt < 2 => {
                    // Our epoch moved on (a rebalance): wait for the heartbeat to learn it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(bad) = resp.results.iter().find(|r| r.error_code != 0) {
                return Err(ClientError::from_code(
                    bad.error_code,
                    &format!("{}-{}: {}", bad.topic, bad.partition, bad.error_message),
                ));
            }
            return Ok(());
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Commits without waiting (errors are logged).
    pub fn commit_async(&mut self) {
        let Some(group) = self.config.group_id.clone() else {
            return;
        };
        let (member_id, member_epoch) = if self.manual {
            (String::new(), -1)
        } else {
            self.member()
        };
        let partitions: Vec<OffsetCommitPartition> = self
            .positions
            .iter()
            .filter_map(|((t, p), o)| {
                o.map(|o| OffsetCommitPartition {
                    topic: t.clone(),
                    partition: *p,
                    committed_offset: o,
                    committed_leader_epoch: None,
                    metadata: String::new(),
                })
            })
            .collect();
        let cluster = self.cluster.clone();
        self.last_commit = Instant::now();
        tokio::spawn(async move {
            let req = OffsetCommitRequest {
                group_id: group.clone(),
                member_id,
                member_epoch,
                group_instance_id: None,
                partitions,
            };
            if let Err(e) = call_coordinator(&cluster, &group, None, |mut c| {
                let req = req.clone();
                async move { c.offset_commit(req).await }
            })
            .await
            {
                tracing::warn!(error = %e, "async commit failed");
            }
        });
    }

    /// Commits (with auto-commit on) and leaves the group.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.group.is_some() && self.config.enable_auto_commit {
            result = self.commit_sync().await;
        }
        if let Some(g) = &self.group {
            let (member_id, epoch) = {
                let mut m = g.membership.lock().expect("membership");
                m.leaving = true;
                (m.member_id.clone(), m.epoch)
            };
            if let Some(h) = self.heartbeat.take() {
                h.abort();
            }
            if epoch > 0 {
                let req = ConsumerGroupHeartbeatRequest {
                    group_id: g.group_id.clone(),
                    member_id,
                    member_epoch: -1,
                    ..Default::default()
                };
                let _ = call_coordinator(&self.cluster, &g.group_id, None, |mut c| {
                    let req = req.clone();
                    async move { c.consumer_group_heartbeat(req).await }
                })
                .await;
            }
        }
        result
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for a in self.ahead.values() {
            a.task.abort();
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// Fetches one partition from its leader and decodes the records at or after `offset`.
async fn fetch_partition(
    cluster: &Cluster,
    tp: &Tp,
    offset: i64,
    max_bytes: i32,
    max_wait: Duration,
) -> Result<Vec<ConsumerRecord>> {
    let Some((_, addr)) = cluster.leader(&tp.0, tp.1) else {
        return Err(ClientError {
            code: ErrorCode::LeaderNotAvailable,
            message: format!(
                "LEADER_NOT_AVAILABLE: {}-{} has no known leader",
                tp.0, tp.1
            ),
        });
    };
    let req = FetchRequest {
        topic: tp.0.clone(),
        partition: tp.1,
        fetch_offset: offset,
        max_bytes,
        min_bytes: 1,
        max_wait_ms: max_wait.as_millis() as i32,
        format: RecordFormat::Batches as i32,
        ..Default::default()
    };
    let resp = cluster
        .broker(&addr)?
        .fetch(req)
        .await
        .map_err(ClientError::from_status)?
        .into_inner();
    let mut out = Vec::new();
    for batch in sluice_record::batches(resp.record_batches) {
        let batch = batch.map_err(|e| ClientError {
            code: ErrorCode::CorruptMessage,
            message: format!("CORRUPT_MESSAGE: {}-{}: {e}", tp.0, tp.1),
        })?;
        let epoch = batch.header().partition_leader_epoch;
        for r in batch.records() {
            let r = r.map_err(|e| ClientError {
                code: ErrorCode::CorruptMessage,
                message: format!("CORRUPT_MESSAGE: {}-{}: {e}", tp.0, tp.1),
            })?;
            if r.offset < offset {
                continue;
            }
            out.push(ConsumerRecord {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| (String::from_utf8_lossy(&h.key).into_owned(), h.value))
                    .collect(),
                leader_epoch: epoch,
            });
        }
    }
    Ok(out)
}

/// Earliest (-2) or latest (-1) offset of a partition, retrying leader moves.
pub async fn list_offset(cluster: &Cluster, topic: &str, partition: i32, ts: i64) -> Result<i64> {
    let mut last = None;
    for _ in 0..50 {
        let Some((_, addr)) = cluster.leader(topic, partition) else {
            cluster.refresh().await.ok();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let r = cluster
            .broker(&addr)?
            .list_offsets(ListOffsetsRequest {
                partitions: vec![ListOffsetsPartition {
                    topic: topic.to_string(),
                    partition,
                    timestamp: ts,
                    current_leader_epoch: None,
                }],
                isolation_level: 0,
            })
            .await;
        match r {
            Ok(r) => {
                let res = r
                    .into_inner()
                    .results
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if res.error_code == 0 {
                    return Ok(res.offset);
                }
                let e = ClientError::from_code(res.error_code, &res.error_message);
                if !retriable(e.code) {
                    return Err(e);
                }
                last = Some(e);
            }
            Err(s) => {
                let e = ClientError::from_status(s);
                if !retriable(e.code) {
                    return Err(e);
                }
                last = Some(e);
            }
        }
        cluster.refresh().await.ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or(ClientError {
        code: ErrorCode::LeaderNotAvailable,
        message: format!("LEADER_NOT_AVAILABLE: {topic}-{partition} has no leader"),
    }))
}

/// Finds the group's coordinator (creating the offsets topic on first use).
pub async fn find_coordinator(cluster: &Cluster, group: &str) -> Result<String> {
    let mut last = None;
    for _ in 0..100 {
        let addr = cluster.any_broker();
        match cluster
            .broker(&addr)?
            .find_coordinator(FindCoordinatorRequest {
                group_id: group.to_string(),
            })
            .await
        {
            Ok(r) => {
                if let Some(c) = r.into_inner().coordinator {
                    return Ok(format!("{}:{}", c.host, c.port));
                }
            }
            Err(s) => {
                let e = ClientError::from_status(s);
                if !retriable(e.code) {
                    return Err(e);
                }
                last = Some(e);
            }
        }
        cluster.refresh().await.ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or(ClientError {
        code: ErrorCode::CoordinatorNotAvailable,
        message: format!("COORDINATOR_NOT_AVAILABLE: no coordinator for group {group:?}"),
    }))
}

/// Calls the group's coordinator, following NOT_COORDINATOR (with its hint) and retrying
/// retriable errors for up to ~20 s.
pub async fn call_coordinator<T, F, Fut>(
    cluster: &Cluster,
    group: &str,
    known: Option<String>,
    mut f: F,
) -> Result<T>
where
    F: FnMut(sluice_proto::v1::broker_client::BrokerClient<sluice_proto::auth::AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    let mut addr = known;
    let start = Instant::now();
    loop {
        let a = match addr.take() {
            Some(a) => a,
            None => find_coordinator(cluster, group).await?,
        };
        match f(cluster.broker(&a)?).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) => {
                let code = error_code(&s);
                let hint = error_detail(&s)
                    .and_then(|d| d.leader)
                    .map(|l| format!("{}:{}", l.host, l.port));
                let e = ClientError::from_status(s);
                let coordinator_moved = matches!(
                    code,
                    ErrorCode::NotCoordinator
                        | ErrorCode::CoordinatorNotAvailable
                        | ErrorCode::CoordinatorLoadInProgress
                );
                if !(coordinator_moved || retriable(code))
                    || start.elapsed() > Duration::from_secs(20)
                {
                    return Err(e);
                }
                if code == ErrorCode::NotCoordinator {
                    addr = hint;
                }
                if addr.is_none() {
                    cluster.refresh().await.ok();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Owned partitions as a heartbeat reports them (topics in order, partitions ascending).
fn owned_partitions(owned: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (t, p) in owned {
        match out.last_mut() {
            Some(last) if &last.topic == t => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: t.clone(),
                partitions: vec![*p],
                ..Default::default()
            }),
        }
    }
    out
}

/// The member's heartbeat loop: joins, heartbeats at the interval the coordinator asks
/// for, follows coordinator moves and rejoins when fenced or forgotten.
async fn run_heartbeat(cluster: Arc<Cluster>, config: ConsumerConfig, g: Arc<GroupState>) {
    let mut interval;
    loop {
        let (member_id, epoch, coordinator, leaving, owned) = {
            let m = g.membership.lock().expect("membership");
            (
                m.member_id.clone(),
                m.epoch,
                m.coordinator.clone(),
                m.leaving,
                owned_partitions(&m.owned),
            )
        };
        if leaving {
            return;
        }
        let req = ConsumerGroupHeartbeatRequest {
            group_id: g.group_id.clone(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            subscribed_topic_names: g.topics.lock().expect("topics").clone(),
            server_assignor: config.assignor.clone(),
            client_id: config.client_id.clone(),
            rebalance_timeout_ms: 60_000,
            owned_partitions: owned,
            ..Default::default()
        };
        let coordinator = match coordinator {
            Some(c) => Some(c),
            None => find_coordinator(&cluster, &g.group_id).await.ok(),
        };
        let Some(addr) = coordinator else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let r = match cluster.broker(&addr) {
            Ok(mut c) => c.consumer_group_heartbeat(req).await,
            Err(e) => Err(tonic::Status::invalid_argument(e.message)),
        };
        match r {
            Ok(r) => {
                let r = r.into_inner();
                interval = Duration::from_millis(r.heartbeat_interval_ms.max(50) as u64);
                let mut m = g.membership.lock().expect("membership");
                m.member_id = r.member_id;
                m.epoch = r.member_epoch;
                m.coordinator = Some(addr);
                m.last_error = None;
                if let Some(a) = r.assignment {
                    let new: BTreeSet<Tp> = a
                        .topic_partitions
                        .into_iter()
                        .flat_map(|tp| {
                            let t = tp.topic;
                            tp.partitions.into_iter().map(move |p| (t.clone(), p))
                        })
                        .collect();
                    if new != m.assignment {
                        m.assignment = new;
                        g.wake.notify_one();
                    }
                }
            }
            Err(s) => {
                let code = error_code(&s);
                let rejoin = {
                    let mut m = g.membership.lock().expect("membership");
                    m.last_error = Some(s.message().to_string());
                    match code {
                        ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch => {
                            // Forgotten (new coordinator, or session expired): rejoin, and
                            // own nothing until the coordinator says so.
                            tracing::info!(group = %g.group_id, reason = %s.message(), "rejoining the group");
                            m.epoch = 0;
                            m.assignment.clear();
                            g.wake.notify_one();
                            true
                        }
                        _ => {
                            m.coordinator = None;
                            false
                        }
                    }
                };
                if rejoin {
                    continue;
                }
                cluster.refresh().await.ok();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let _ = tokio::time::timeout(interval, g.wake.notified()).await;
    }
}
