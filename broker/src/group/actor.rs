//! One actor per `__consumer_offsets` partition: it owns that partition's
//! [`ShardState`] and answers every group request of the shard in arrival order. Nothing it
//! does waits on the network or on other replicas:
//!
//! * a commit (or delete) appends its records and hands the acks=all wait to a task; the
//!   task reports back and the actor applies the offsets, then answers (so a fetch after
//!   the answer sees them, and one before it does not see uncommitted offsets);
//! * becoming the coordinator (a new leader epoch of the partition) starts a task that
//!   replays the partition; requests arriving meanwhile queue in the actor (up to
//!   [`DEFERRED_DURING_LOAD_MAX`], then COORDINATOR_LOAD_IN_PROGRESS, retriable).

pub use crate::limits::{DEFERRED_DURING_LOAD_MAX, SHARD_COMMANDS_QUEUED_MAX};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use sluice_proto::v1::*;
use sluice_storage::RecordBatchBuilder;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::classic::{self, ClassicError, Completed};
use super::state::{KafkaGroupView, ShardState};
use super::{err, not_coordinator, Committed, GroupSettings, OFFSETS_TOPIC};
use crate::data::DataPlane;
use crate::node::BrokerNode;
/// How long an offsets write may wait for the ISR (Kafka's `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT_MS: i32 = 5_000;
/// Bytes read per step of a replay.
const LOAD_READ_BYTES: usize = 1 << 20;

type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// A request to a shard.
enum Command {
    Heartbeat {
        req: ConsumerGroupHeartbeatRequest,
        owned: Option<super::state::Parts>,
        client_host: String,
        reply: Reply<ConsumerGroupHeartbeatResponse>,
    },
    Commit {
        req: OffsetCommitRequest,
        reply: Reply<OffsetCommitResponse>,
    },
    Fetch {
        req: OffsetFetchRequest,
        reply: Reply<OffsetFetchResponse>,
    },
    Describe {
        group: String,
        reply: Reply<DescribedGroup>,
    },
    Delete {
        group: String,
        reply: Reply<()>,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
        reply: Reply<Vec<(String, i32, ErrorCode)>>,
    },
    List {
        reply: Reply<Vec<ListedGroup>>,
    },
    ClassicJoin {
        group: String,
        req: classic::JoinRequest,
        reply: Reply<classic::JoinResponse>,
    },
    ClassicSync {
        group: String,
        req: classic::SyncRequest,
        reply: Reply<classic::SyncResponse>,
    },
    ClassicHeartbeat {
        group: String,
        member: String,
        instance: Option<String>,
        generation: i32,
        reply: Reply<Option<ClassicError>>,
    },
    ClassicLeave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: Reply<Vec<Option<ClassicError>>>,
    },
    KafkaDescribe {
        group: String,
        reply: Reply<Option<KafkaGroupView>>,
    },
    KafkaList {
        reply: Reply<Vec<KafkaGroupView>>,
    },
}

impl Command {
    /// Answers the request with `e`.
    fn fail(self, e: Status) {
        match self {
            Command::Heartbeat { reply, .. } => drop(reply.send(Err(e))),
            Command::Commit { reply, .. } => drop(reply.send(Err(e))),
            Command::Fetch { reply, .. } => drop(reply.send(Err(e))),
            Command::Describe { reply, .. } => drop(reply.send(Err(e))),
            Command::Delete { reply, .. } => drop(reply.send(Err(e))),
            Command::DeleteOffsets { reply, .. } => drop(reply.send(Err(e))),
            Command::List { reply } => drop(reply.send(Err(e))),
            Command::ClassicJoin { reply, .. } => drop(reply.send(Err(e))),
            Command::ClassicSync { reply, .. } => drop(reply.send(Err(e))),
            Command::ClassicHeartbeat { reply, .. } => drop(reply.send(Err(e))),
            Command::ClassicLeave { reply, .. } => drop(reply.send(Err(e))),
            Command::KafkaDescribe { reply, .. } => drop(reply.send(Err(e))),
            Command::KafkaList { reply } => drop(reply.send(Err(e))),
        }
    }
}

/// Classic JoinGroup / SyncGroup requests waiting for their rebalance, by (group, member),
/// oldest first (a member's superseded join is answered before its newer one).
#[derive(Default)]
struct Parked {
    joins: HashMap<(String, String), VecDeque<Reply<classic::JoinResponse>>>,
    syncs: HashMap<(String, String), VecDeque<Reply<classic::SyncResponse>>>,
}

impl Parked {
    fn deliver(&mut self, group: &str, done: Vec<Completed>) {
        for c in done {
            match c {
                Completed::Join { member, answer } => {
                    if let Some(r) = pop(&mut self.joins, group, &member) {
                        let _ = r.send(Ok(answer));
                    }
                }
                Completed::Sync { member, answer } => {
                    if let Some(r) = pop(&mut self.syncs, group, &member) {
                        let _ = r.send(Ok(answer));
                    }
                }
            }
        }
    }

    /// Coordination moved: every parked request learns it (clients find the new one).
    fn fail_all(&mut self, e: &Status) {
        for (_, q) in self.joins.drain() {
            for r in q {
                let _ = r.send(Err(e.clone()));
            }
        }
        for (_, q) in self.syncs.drain() {
            for r in q {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

fn pop<T>(m: &mut HashMap<(String, String), VecDeque<T>>, group: &str, member: &str) -> Option<T> {
    let key = (group.to_string(), member.to_string());
    let q = m.get_mut(&key)?;
    let r = q.pop_front();
    if q.is_empty() {
        m.remove(&key);
    }
    r
}

fn park<T>(m: &mut HashMap<(String, String), VecDeque<T>>, group: &str, member: &str, reply: T) {
    m.entry((group.to_string(), member.to_string()))
        .or_default()
        .push_back(reply);
}

/// What the actor's own tasks report.
enum Report {
    /// A replay of the partition at `leader_epoch` finished.
    Loaded {
        leader_epoch: i32,
        result: Result<ShardState, Status>,
    },
    /// A write appended at `leader_epoch` was committed (or not).
    Written {
        leader_epoch: i32,
        first_offset: i64,
        outcome: Result<(), Status>,
        then: AfterWrite,
    },
}

/// What to do once a write's outcome is known.
enum AfterWrite {
    Commit {
        group: String,
        accepted: Vec<(sluice_metadata::TopicPartition, Committed)>,
        results: Vec<OffsetCommitResult>,
        reply: Reply<OffsetCommitResponse>,
    },
    Delete {
        group: String,
        reply: Reply<()>,
    },
    DeleteOffsets {
        group: String,
        deleted: Vec<(String, i32)>,
        results: Vec<(String, i32, ErrorCode)>,
        reply: Reply<Vec<(String, i32, ErrorCode)>>,
    },
    /// Classic group memberships (nobody waits: a lost one costs a rebalance after a
    /// failover).
    Memberships {
        groups: usize,
    },
}

/// Where the shard's state stands.
enum Phase {
    /// Not the coordinator (or not yet asked).
    Idle,
    /// Replaying the partition at this leader epoch; requests wait here.
    Loading {
        leader_epoch: i32,
        deferred: Vec<Command>,
    },
    /// Serving at this leader epoch.
    Ready {
        leader_epoch: i32,
        state: ShardState,
    },
}

/// The cloneable handle of one shard actor.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    commands: mpsc::Sender<Command>,
    ticks: mpsc::Sender<bool>,
}

impl ShardHandle {
    /// Starts the actor of offsets partition `p`; it runs for the life of the broker.
    pub(crate) fn spawn(
        p: i32,
        node: Arc<BrokerNode>,
        data: DataPlane,
        settings: GroupSettings,
    ) -> Self {
        let (commands, commands_rx) = mpsc::channel(SHARD_COMMANDS_QUEUED_MAX);
        let (ticks, ticks_rx) = mpsc::channel(1);
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let actor = ShardActor {
            last_retention_check: Instant::now(),
            p,
            node,
            data,
            settings,
            phase: Phase::Idle,
            reports,
            parked: Parked::default(),
        };
        let span = tracing::info_span!("group_shard", partition = p);
        tokio::spawn(tracing::Instrument::instrument(
            actor.run(commands_rx, ticks_rx, reports_rx),
            span,
        ));
        ShardHandle { commands, ticks }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            err(
                ErrorCode::CoordinatorNotAvailable,
                "the coordinator stopped",
            )
        };
        self.commands.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub(crate) async fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        owned: Option<super::state::Parts>,
        client_host: String,
    ) -> Result<ConsumerGroupHeartbeatResponse, Status> {
        self.ask(|reply| Command::Heartbeat {
            req,
            owned,
            client_host,
            reply,
        })
        .await
    }

    pub(crate) async fn commit(
        &self,
        req: OffsetCommitRequest,
    ) -> Result<OffsetCommitResponse, Status> {
        self.ask(|reply| Command::Commit { req, reply }).await
    }

    pub(crate) async fn fetch(
        &self,
        req: OffsetFetchRequest,
    ) -> Result<OffsetFetchResponse, Status> {
        self.ask(|reply| Command::Fetch { req, reply }).await
    }

    pub(crate) async fn describe(&self, group: &str) -> Result<DescribedGroup, Status> {
        let group = group.to_string();
        self.ask(|reply| Command::Describe { group, reply }).await
    }

    pub(crate) async fn delete(&self, group: &str) -> Result<(), Status> {
        let group = group.to_string();
        self.ask(|reply| Command::Delete { group, reply }).await
    }

    pub(crate) async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, ErrorCode)>, Status> {
        let group = group.to_string();
        self.ask(|reply| Command::DeleteOffsets {
            group,
            partitions,
            reply,
        })
        .await
    }

    pub(crate) async fn list(&self) -> Result<Vec<ListedGroup>, Status> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub(crate) async fn classic_join(
        &self,
        group: String,
        req: classic::JoinRequest,
    ) -> Result<classic::JoinResponse, Status> {
        self.ask(|reply| Command::ClassicJoin { group, req, reply })
            .await
    }

    pub(crate) async fn classic_sync(
        &self,
        group: String,
        req: classic::SyncRequest,
    ) -> Result<classic::SyncResponse, Status> {
        self.ask(|reply| Command::ClassicSync { group, req, reply })
            .await
    }

    pub(crate) async fn classic_heartbeat(
        &self,
        group: String,
        member: String,
        instance: Option<String>,
        generation: i32,
    ) -> Result<Option<ClassicError>, Status> {
        self.ask(|reply| Command::ClassicHeartbeat {
            group,
            member,
            instance,
            generation,
            reply,
        })
        .await
    }

    pub(crate) async fn classic_leave(
        &self,
        group: String,
        members: Vec<(String, Option<String>)>,
    ) -> Result<Vec<Option<ClassicError>>, Status> {
        self.ask(|reply| Command::ClassicLeave {
            group,
            members,
            reply,
        })
        .await
    }

    pub(crate) async fn kafka_describe(
        &self,
        group: String,
    ) -> Result<Option<KafkaGroupView>, Status> {
        self.ask(|reply| Command::KafkaDescribe { group, reply })
            .await
    }

    pub(crate) async fn kafka_list(&self) -> Result<Vec<KafkaGroupView>, Status> {
        self.ask(|reply| Command::KafkaList { reply }).await
    }

    /// Asks for a session-expiry pass (and a lag report when `publish_lag`); a pass still
    /// queued makes this one unnecessary.
    pub(crate) fn tick(&self, publish_lag: bool) {
        let _ = self.ticks.try_send(publish_lag);
    }
}

struct ShardActor {
    /// When expired offsets were last looked for.
    last_retention_check: Instant,
    p: i32,
    node: Arc<BrokerNode>,
    data: DataPlane,
    settings: GroupSettings,
    phase: Phase,
    reports: mpsc::UnboundedSender<Report>,
    parked: Parked,
}

impl ShardActor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ticks: mpsc::Receiver<bool>,
        mut reports: mpsc::UnboundedReceiver<Report>,
    ) {
        loop {
            tokio::select! {
                // Reports first: they finish work requests wait on.
                biased;
                Some(r) = reports.recv() => self.on_report(r).await,
                Some(lag) = ticks.recv() => {
                    self.on_tick(lag);
                    self.keep_memberships().await;
                    self.expire_offsets().await;
                }
                cmd = commands.recv() => match cmd {
                    Some(c) => self.on_command(c).await,
                    None => return,
                },
            }
        }
    }

    /// The leader epoch of our replica of the offsets partition while it leads.
    fn leadership(&self) -> Option<i32> {
        let o = self.node.partition(OFFSETS_TOPIC, self.p)?.offsets();
        o.is_leader.then_some(o.leader_epoch)
    }

    fn what(c: &Command) -> String {
        match c {
            Command::Heartbeat { req, .. } => format!("group {:?}", req.group_id),
            Command::Commit { req, .. } => format!("group {:?}", req.group_id),
            Command::Fetch { req, .. } => format!("group {:?}", req.group_id),
            Command::Describe { group, .. }
            | Command::Delete { group, .. }
            | Command::DeleteOffsets { group, .. } => format!("group {group:?}"),
            Command::ClassicJoin { group, .. }
            | Command::ClassicSync { group, .. }
            | Command::ClassicHeartbeat { group, .. }
            | Command::ClassicLeave { group, .. }
            | Command::KafkaDescribe { group, .. } => format!("group {group:?}"),
            Command::List { .. } | Command::KafkaList { .. } => "its groups".into(),
        }
    }

    /// Leaves the ready phase: parked classic requests are answered NOT_COORDINATOR.
    fn go_idle(&mut self) {
        if matches!(self.phase, Phase::Ready { .. }) {
            let e = not_coordinator(&self.node, "the parked requests", self.p);
            self.parked.fail_all(&e);
        }
        self.phase = Phase::Idle;
    }

    async fn on_command(&mut self, cmd: Command) {
        let Some(epoch) = self.leadership() else {
            self.go_idle();
            let e = not_coordinator(&self.node, &Self::what(&cmd), self.p);
            return cmd.fail(e);
        };
        match &mut self.phase {
            Phase::Ready { leader_epoch, .. } if *leader_epoch == epoch => {
                self.serve(cmd).await;
                self.keep_memberships().await;
            }
            Phase::Loading {
                leader_epoch,
                deferred,
            } if *leader_epoch == epoch => {
                if deferred.len() < DEFERRED_DURING_LOAD_MAX {
                    deferred.push(cmd);
                } else {
                    cmd.fail(err(
                        ErrorCode::CoordinatorLoadInProgress,
                        format!("{OFFSETS_TOPIC}-{} is still loading; retry", self.p),
                    ));
                }
            }
            _ => {
                self.start_load(epoch);
                if let Phase::Loading { deferred, .. } = &mut self.phase {
                    deferred.push(cmd);
                }
            }
        }
    }

    /// Replays the partition in a task; the actor keeps serving (and queueing) meanwhile.
    fn start_load(&mut self, leader_epoch: i32) {
        if matches!(self.phase, Phase::Ready { .. }) {
            self.go_idle();
        }
        // Requests queued for an older epoch's load are served by this one.
        let deferred = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Loading { deferred, .. } => deferred,
            _ => Vec::new(),
        };
        self.phase = Phase::Loading {
            leader_epoch,
            deferred,
        };
        let node = self.node.clone();
        let p = self.p;
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let result = load(&node, p).await;
            let _ = reports.send(Report::Loaded {
                leader_epoch,
                result,
            });
        });
    }

    async fn on_report(&mut self, r: Report) {
        match r {
            Report::Loaded {
                leader_epoch,
                result,
            } => {
                let Phase::Loading {
                    leader_epoch: loading,
                    ..
                } = &self.phase
                else {
                    return;
                };
                if *loading != leader_epoch {
                    return;
                }
                let Phase::Loading { deferred, .. } =
                    std::mem::replace(&mut self.phase, Phase::Idle)
                else {
                    unreachable!("matched above")
                };
                match result {
                    Ok(state) => {
                        self.phase = Phase::Ready {
                            leader_epoch,
                            state,
                        };
                        // In arrival order; each checks leadership again.
                        for cmd in deferred {
                            self.on_command(cmd).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "loading consumer groups failed");
                        for cmd in deferred {
                            cmd.fail(e.clone());
                        }
                    }
                }
            }
            Report::Written {
                leader_epoch,
                first_offset,
                outcome,
                then,
            } => {
                let state = match &mut self.phase {
                    Phase::Ready {
                        leader_epoch: e,
                        state,
                    } if *e == leader_epoch => Some(state),
                    // Coordination moved on: the next load reads what was committed.
                    _ => None,
                };
                match then {
                    AfterWrite::Commit {
                        group,
                        accepted,
                        mut results,
                        reply,
                    } => {
                        match outcome {
                            Ok(()) => {
                                if let Some(state) = state {
                                    state.apply_commit(&group, accepted, first_offset);
                                }
                            }
                            Err(e) => fail_accepted(&mut results, &e),
                        }
                        let _ = reply.send(Ok(OffsetCommitResponse { results }));
                    }
                    AfterWrite::Delete { group, reply } => {
                        if outcome.is_ok() {
                            if let Some(state) = state {
                                state.apply_delete(&group, first_offset);
                            }
                        }
                        let _ = reply.send(outcome);
                    }
                    AfterWrite::Memberships { groups } => {
                        if let Err(e) = outcome {
                            tracing::warn!(groups, error = %e.message(),
                                "group memberships not stored; a coordinator failover will make their members rejoin");
                        }
                    }
                    AfterWrite::DeleteOffsets {
                        group,
                        deleted,
                        results,
                        reply,
                    } => {
                        let outcome = outcome.map(|()| {
                            if let Some(state) = state {
                                state.apply_offset_delete(&group, &deleted, first_offset);
                            }
                            results
                        });
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
    }

    fn on_tick(&mut self, publish_lag: bool) {
        if self.leadership().is_none() {
            // Not the coordinator any more: free the groups.
            self.go_idle();
            return;
        }
        let Phase::Ready { state, .. } = &mut self.phase else {
            return;
        };
        let image = self.node.image();
        let now = Instant::now();
        state.expire(now, self.settings.session_timeout, &image);
        for (group, c) in state.classic_tick(now, &self.settings.classic) {
            self.parked.deliver(&group, vec![c]);
        }
        if publish_lag {
            for (group, topic, p, offset) in state.committed() {
                let Some(part) = self.node.partition(topic, p) else {
                    continue;
                };
                let hw = part.offsets().high_watermark;
                metrics::gauge!("sluice_consumer_group_lag",
                    "group" => group.to_string(), "topic" => topic.to_string(), "partition" => p.to_string())
                .set((hw - offset).max(0) as f64);
            }
        }
    }

    /// Appends the memberships the last calls changed (classic: Stable in a new
    /// generation, Empty, gone) to the offsets partition, so a new coordinator loads them.
    /// Every `offsets.retention.check.interval.ms`: tombstones for the offsets of empty
    /// groups last committed `offsets.retention.minutes` ago (Kafka's offset expiry).
    async fn expire_offsets(&mut self) {
        if self.last_retention_check.elapsed() < self.settings.offsets_retention_check {
            return;
        }
        self.last_retention_check = Instant::now();
        let Phase::Ready {
            leader_epoch,
            state,
        } = &mut self.phase
        else {
            return;
        };
        let leader_epoch = *leader_epoch;
        let expired = state.expired_offsets(Instant::now(), self.settings.offsets_retention);
        for (group, partitions) in expired {
            let Phase::Ready { state, .. } = &mut self.phase else {
                return;
            };
            let Ok((results, tombstones)) = state.prepare_offset_delete(&group, &partitions) else {
                continue;
            };
            if tombstones.is_empty() {
                continue;
            }
            tracing::info!(%group, offsets = tombstones.len(), "expiring an empty group's offsets (offsets.retention.minutes)");
            let (reply, _) = tokio::sync::oneshot::channel();
            self.write(
                leader_epoch,
                tombstones,
                AfterWrite::DeleteOffsets {
                    group,
                    deleted: partitions,
                    results,
                    reply,
                },
            )
            .await;
        }
    }

    async fn keep_memberships(&mut self) {
        let Phase::Ready {
            leader_epoch,
            state,
        } = &mut self.phase
        else {
            return;
        };
        let leader_epoch = *leader_epoch;
        let writes = state.take_membership_writes();
        if !writes.is_empty() {
            let groups = writes.len();
            self.write(leader_epoch, writes, AfterWrite::Memberships { groups })
                .await;
        }
    }

    /// Serves a request while the shard is ready.
    async fn serve(&mut self, cmd: Command) {
        let Phase::Ready {
            leader_epoch,
            state,
        } = &mut self.phase
        else {
            unreachable!("serve runs only when ready")
        };
        let leader_epoch = *leader_epoch;
        let image = self.node.image();
        match cmd {
            Command::Heartbeat {
                req,
                owned,
                client_host,
                reply,
            } => {
                let r = state.heartbeat_owning(
                    req,
                    owned,
                    client_host,
                    Instant::now(),
                    self.settings.heartbeat_interval,
                    &image,
                );
                let _ = reply.send(r);
            }
            Command::Fetch { req, reply } => {
                let _ = reply.send(Ok(state.fetch(&req)));
            }
            Command::Describe { group, reply } => {
                let _ = reply.send(Ok(state.describe(&group, &image)));
            }
            Command::List { reply } => {
                let _ = reply.send(Ok(state.list()));
            }
            Command::KafkaList { reply } => {
                let _ = reply.send(Ok(state.kafka_list(&image)));
            }
            Command::KafkaDescribe { group, reply } => {
                let _ = reply.send(Ok(state.kafka_view(&group, &image)));
            }
            Command::ClassicJoin { group, req, reply } => {
                let now = Instant::now();
                let (answer, done) = state.classic_join(&group, req, now, &self.settings.classic);
                match answer {
                    classic::Answer::Now(r) => {
                        let _ = reply.send(Ok(r));
                    }
                    // Parked under the id it joined with, or (v0–v3) the one it was given.
                    classic::Answer::Later(member) => {
                        park(&mut self.parked.joins, &group, &member, reply)
                    }
                }
                self.parked.deliver(&group, done);
            }
            Command::ClassicSync { group, req, reply } => {
                let (answer, done) = state.classic_sync(&group, req, Instant::now());
                match answer {
                    classic::Answer::Now(r) => {
                        let _ = reply.send(Ok(r));
                    }
                    classic::Answer::Later(member) => {
                        park(&mut self.parked.syncs, &group, &member, reply)
                    }
                }
                self.parked.deliver(&group, done);
            }
            Command::ClassicHeartbeat {
                group,
                member,
                instance,
                generation,
                reply,
            } => {
                let r = state.classic_heartbeat(
                    &group,
                    &member,
                    instance.as_deref(),
                    generation,
                    Instant::now(),
                );
                let _ = reply.send(Ok(r.err()));
            }
            Command::ClassicLeave {
                group,
                members,
                reply,
            } => {
                let (results, done) =
                    state.classic_leave(&group, &members, Instant::now(), &self.settings.classic);
                self.parked.deliver(&group, done);
                let _ = reply.send(Ok(results.into_iter().map(Result::err).collect()));
            }
            Command::Commit { req, reply } => {
                let plan = match state.prepare_commit(&req, &image) {
                    Ok(plan) => plan,
                    Err(e) => return drop(reply.send(Err(e))),
                };
                if plan.writes.is_empty() {
                    return drop(reply.send(Ok(OffsetCommitResponse {
                        results: plan.results,
                    })));
                }
                let then = AfterWrite::Commit {
                    group: req.group_id,
                    accepted: plan.accepted,
                    results: plan.results,
                    reply,
                };
                self.write(leader_epoch, plan.writes, then).await;
            }
            Command::Delete { group, reply } => {
                let tombstones = match state.prepare_delete(&group) {
                    Ok(t) => t,
                    Err(e) => return drop(reply.send(Err(e))),
                };
                if tombstones.is_empty() {
                    state.apply_delete(&group, 0);
                    return drop(reply.send(Ok(())));
                }
                self.write(
                    leader_epoch,
                    tombstones,
                    AfterWrite::Delete { group, reply },
                )
                .await;
            }
            Command::DeleteOffsets {
                group,
                partitions,
                reply,
            } => {
                let (results, tombstones) = match state.prepare_offset_delete(&group, &partitions) {
                    Ok(t) => t,
                    Err(e) => return drop(reply.send(Err(e))),
                };
                let deleted: Vec<(String, i32)> = results
                    .iter()
                    .filter(|(_, _, c)| *c == ErrorCode::None)
                    .map(|(t, p, _)| (t.clone(), *p))
                    .collect();
                if tombstones.is_empty() {
                    return drop(reply.send(Ok(results)));
                }
                self.write(
                    leader_epoch,
                    tombstones,
                    AfterWrite::DeleteOffsets {
                        group,
                        deleted,
                        results,
                        reply,
                    },
                )
                .await;
            }
        }
    }

    /// Appends `records` to the offsets partition (a local append, no waiting for other
    /// replicas) and hands the acks=all wait to a task that reports back.
    async fn write(
        &mut self,
        leader_epoch: i32,
        records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
        then: AfterWrite,
    ) {
        let mut b = RecordBatchBuilder::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (k, v) in &records {
            b.append(now, Some(k), v.as_deref(), &[]);
        }
        let appended = self
            .data
            .produce_append(ProduceRequest {
                correlation_id: 0,
                topic: OFFSETS_TOPIC.into(),
                partition: self.p,
                acks: Some(-1),
                timeout_ms: OFFSETS_COMMIT_TIMEOUT_MS,
                payload: Some(produce_request::Payload::RecordBatch(b.build())),
            })
            .await;
        let pending = match appended {
            Ok(p) => p,
            Err(e) => return finish_unwritten(then, e),
        };
        let first_offset = pending.first_offset();
        let data = self.data.clone();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let outcome = data.produce_complete(pending).await.map(|_| ());
            let _ = reports.send(Report::Written {
                leader_epoch,
                first_offset,
                outcome,
                then,
            });
        });
    }
}

/// Answers a write that could not even be appended.
fn finish_unwritten(then: AfterWrite, e: Status) {
    match then {
        AfterWrite::Commit {
            mut results, reply, ..
        } => {
            fail_accepted(&mut results, &e);
            let _ = reply.send(Ok(OffsetCommitResponse { results }));
        }
        AfterWrite::Delete { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        AfterWrite::DeleteOffsets { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        AfterWrite::Memberships { groups } => {
            tracing::warn!(groups, error = %e.message(),
                "group memberships not stored; a coordinator failover will make their members rejoin");
        }
    }
}

/// Marks the accepted partitions of a commit as not stored, with the error a client acts
/// on: the offsets partition moved (NOT_COORDINATOR) or lost its ISR
/// (COORDINATOR_NOT_AVAILABLE); both are retriable.
fn fail_accepted(results: &mut [OffsetCommitResult], e: &Status) {
    let (code, msg) = match sluice_proto::status::error_detail(e) {
        Some(d) => (
            ErrorCode::try_from(d.code).unwrap_or(ErrorCode::UnknownServerError),
            d.message,
        ),
        None => (ErrorCode::UnknownServerError, e.message().to_string()),
    };
    let code = match code {
        ErrorCode::NotLeaderOrFollower | ErrorCode::LeaderNotAvailable => ErrorCode::NotCoordinator,
        ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut => ErrorCode::CoordinatorNotAvailable,
        c => c,
    };
    for r in results.iter_mut().filter(|r| r.error_code == 0) {
        r.error_code = code as i32;
        r.error_message = format!("commit not stored: {msg}");
    }
}

/// Replays offsets partition `p` from its log start to its log end.
async fn load(node: &BrokerNode, p: i32) -> Result<ShardState, Status> {
    let part = node
        .partition(OFFSETS_TOPIC, p)
        .ok_or_else(|| err(ErrorCode::NotCoordinator, "the offsets partition moved"))?;
    let o = part.offsets();
    let end = o.log_end_offset;
    let mut at = o.log_start_offset;
    let mut state = ShardState::default();
    let mut records = 0usize;
    let failed = |e: String| err(ErrorCode::CoordinatorLoadInProgress, e);
    while at < end {
        let bytes = part
            .read(at, LOAD_READ_BYTES, end)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if bytes.is_empty() {
            break;
        }
        for batch in sluice_storage::batch::batches(bytes) {
            let batch = batch.map_err(|e| failed(e.to_string()))?;
            at = at.max(batch.header().next_offset());
            for r in batch.records() {
                let r = r.map_err(|e| failed(e.to_string()))?;
                records += 1;
                if let Some(k) = r.key.as_deref() {
                    state.replay(r.offset, k, r.value.as_deref(), Instant::now());
                }
            }
        }
    }
    state.loaded();
    tracing::info!(
        partition = p,
        records,
        groups = state.len(),
        "loaded consumer groups"
    );
    Ok(state)
}
