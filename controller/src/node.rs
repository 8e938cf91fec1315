//! One controller process: the Raft node, the gRPC listener (Raft, Admin, Controller,
//! health, reflection), broker sessions and the active controller's timers.
//!
//! ```text
//!   ControllerNode
//!     ├─ raft: openraft::Raft (log + state machine in sled)
//!     ├─ applied_rx: watch of the latest image (every apply)
//!     ├─ sessions: broker id → deadline   (meaningful on the active controller only)
//!     ├─ decide_lock: one decision at a time on the active controller
//!     └─ tasks: gRPC server, session checker (fences expired brokers)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use sluice_metadata::records::RecordBatch;
use sluice_metadata::{BrokerId, MetadataImage, MetadataRecord};
use sluice_proto::status::error_status;
use sluice_proto::v1::{ErrorCode, LeaderHint};
use tokio::sync::watch;
use tonic::Status;

use crate::logic::{self, Defaults, Refusal};
use crate::network::NetworkFactory;
use crate::store::{self, Applied, LogStore, StateMachine};
use crate::types::{NodeId, QuorumMember, Raft};

/// Everything a controller needs to start. Keys are Kafka's where Kafka has one.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `node.id`.
    pub node_id: NodeId,
    /// `ssl.keystore.location` and friends: the listener serves TLS only (`None`: plaintext).
    pub tls: Option<sluice_proto::tls::TlsSettings>,
    /// `sasl.enabled.mechanisms` is set: Admin calls must carry a user's credentials (or
    /// come with a client certificate).
    pub sasl_enabled: bool,
    /// `authorizer.class.name` is set: Admin calls are checked against the ACLs.
    pub authorizer: Option<sluice_metadata::acl::Authorizer>,
    /// `listeners`: where this controller serves gRPC.
    pub listen: SocketAddr,
    /// `controller.quorum.voters`: id → host:port of every voter (this one included).
    pub voters: BTreeMap<NodeId, String>,
    /// `metadata.log.dir`: the sled directory.
    pub data_dir: PathBuf,
    /// `cluster.id`.
    pub cluster_id: String,
    /// `broker.session.timeout.ms` (Kafka default 9000).
    pub session_timeout: Duration,
    /// `broker.heartbeat.interval.ms` (Kafka default 2000): told to brokers.
    pub broker_heartbeat_interval: Duration,
    /// `controller.quorum.election.timeout.ms` (Kafka default 1000): a follower that hears
    /// nothing from the leader for a random time in [timeout/2, timeout] starts an election.
    pub election_timeout: Duration,
    /// `controller.quorum.heartbeat.interval.ms`: leader → follower heartbeats.
    pub raft_heartbeat_interval: Duration,
    /// `metadata.snapshot.interval.records`: build a snapshot (and purge the log) after this
    /// many log entries.
    pub snapshot_interval_entries: u64,
    /// `num.partitions` / `default.replication.factor` for topics created without them.
    pub defaults: Defaults,
    /// `request.timeout.ms`: how long a write may wait for the quorum.
    pub write_timeout: Duration,
    /// `auto.leader.rebalance.enable` with `leader.imbalance.check.interval.seconds` and
    /// `leader.imbalance.per.broker.percentage`; `None` when off.
    pub leader_rebalance: Option<(Duration, f64)>,
}

/// A broker's liveness as the active controller sees it.
#[derive(Debug, Clone)]
struct Session {
    deadline: Instant,
    last_heartbeat: Instant,
    metadata_offset: Option<u64>,
    /// The log-dir id the registered incarnation reported (unknown after a controller
    /// failover: sessions are rebuilt without it).
    directory_id: Option<String>,
}

/// Shared state of a running controller.
pub struct ControllerNode {
    /// This node's id.
    pub id: NodeId,
    /// The id of this node's data directory (`directory.id`, made when the directory was
    /// first used): with the node id, what makes it the voter the membership names.
    pub directory_id: String,
    /// Settings.
    pub config: ControllerConfig,
    /// The Raft handle.
    pub raft: Raft,
    /// Log reader for WatchMetadata.
    pub log: LogStore,
    /// The latest applied image.
    pub applied: watch::Receiver<Applied>,
    /// Broker sessions; a std mutex: tiny critical sections, never held across `.await`.
    sessions: Mutex<HashMap<BrokerId, Session>>,
    /// One decision at a time (held across the Raft write, so it is a tokio mutex).
    decide_lock: tokio::sync::Mutex<()>,
    /// Controllers reachable at an address this node knows whose directory the membership
    /// does not name: (node id, address, directory id), refreshed by `run_observer_probe`
    /// on the active controller, so DescribeQuorum never waits on an unreachable peer.
    pub observers: Mutex<Vec<(NodeId, String, String)>>,
    /// One membership change at a time (add, remove, binding directory ids): each reads the
    /// membership and proposes a change against it.
    membership_lock: tokio::sync::Mutex<()>,
    /// The leader we last knew and when it last sent us AppendEntries (std mutex: tiny
    /// sections, no `.await`).
    last_leader_contact: Mutex<(Option<NodeId>, Instant)>,
    /// Passwords verified against users' credentials (Admin calls with Basic credentials).
    passwords: sluice_metadata::scram::PasswordCache,
    /// The highest high watermark leaders of each partition reported in heartbeats (std
    /// mutex: map updates only): (topic id, partition) → (HW, leader epoch, leader, when).
    pub high_watermarks: Mutex<ReportedHighWatermarks>,
}

/// (topic id, partition) → (HW, leader epoch, leader, when reported).
pub type ReportedHighWatermarks = HashMap<(String, i32), (i64, i32, BrokerId, Instant)>;

impl ControllerNode {
    /// On the active controller, every 2 s: asks every controller address it knows (its
    /// `controller.quorum.voters` and the membership) who answers there, and keeps those the
    /// membership does not name under their directory (observers; issue 15). Runs forever.
    pub async fn run_observer_probe(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            if self.leader() != Some(self.id) {
                self.observers.lock().expect("observers lock").clear();
                continue;
            }
            let membership = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .clone();
            let mut known: BTreeMap<NodeId, String> = self.config.voters.clone();
            for (id, n) in membership.nodes() {
                known.entry(*id).or_insert_with(|| n.addr.clone());
            }
            known.remove(&self.id);
            let asks = known.into_iter().map(|(id, addr)| async move {
                (id, addr.clone(), crate::network::identify(&addr).await)
            });
            let mut found = Vec::new();
            for (id, addr, who) in futures::future::join_all(asks).await {
                let Some(who) = who.filter(|w| w.node_id == id) else {
                    continue;
                };
                let observer = match membership.get_node(&id) {
                    None => true,
                    Some(n) => !n.directory_id.is_empty() && n.directory_id != who.directory_id,
                };
                if observer {
                    found.push((id, addr, who.directory_id));
                }
            }
            *self.observers.lock().expect("observers lock") = found;
        }
    }

    /// On the active controller, every `leader.imbalance.check.interval.seconds` (with
    /// `auto.leader.rebalance.enable`): preferred elections for the partitions of brokers
    /// whose imbalance is over `leader.imbalance.per.broker.percentage`
    /// ([`logic::rebalance_leaders`]). Runs forever.
    pub async fn run_leader_rebalancer(self: Arc<Self>) {
        let Some((every, percentage)) = self.config.leader_rebalance else {
            return;
        };
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.leader() != Some(self.id) {
                continue;
            }
            match self
                .decide(|img| {
                    let records = logic::rebalance_leaders(img, percentage);
                    let n = records.len();
                    Ok((records, n))
                })
                .await
            {
                Ok((_, 0)) => {}
                Ok((_, n)) => tracing::info!(
                    partitions = n,
                    "leadership moved back to preferred replicas"
                ),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "leader rebalance not written; next check retries")
                }
            }
        }
    }

    /// Publishes quorum gauges every second (Kafka's raft-metrics and
    /// KafkaController gauges). Runs forever.
    pub async fn run_gauges(self: Arc<Self>) {
        metrics::describe_gauge!(
            "sluice_active_controller",
            "1 on the active controller (Raft leader), else 0; the sum over the quorum must be 1 (Kafka: ActiveControllerCount)"
        );
        metrics::describe_gauge!(
            "sluice_raft_apply_lag",
            "committed Raft entries not yet applied to the metadata image"
        );
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let m = self.raft.metrics().borrow().clone();
            let leader = m.current_leader == Some(self.id);
            metrics::gauge!("sluice_active_controller").set(if leader { 1.0 } else { 0.0 });
            metrics::gauge!("sluice_raft_current_term").set(m.current_term as f64);
            metrics::gauge!("sluice_raft_leader_id")
                .set(m.current_leader.map_or(-1.0, |l| l as f64));
            let last_log = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            metrics::gauge!("sluice_raft_last_log_index").set(last_log as f64);
            metrics::gauge!("sluice_raft_last_applied_index").set(applied as f64);
            // The state machine applies entries as soon as they commit: the applied index
            // is the commit index as this node knows it.
            metrics::gauge!("sluice_raft_commit_index").set(applied as f64);
            metrics::gauge!("sluice_raft_apply_lag").set(last_log.saturating_sub(applied) as f64);
            let image = self.image();
            let offline = image
                .topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.leader == sluice_metadata::NO_LEADER)
                .count();
            metrics::gauge!("sluice_offline_partitions").set(offline as f64);
            let fenced = image.brokers.values().filter(|b| b.fenced).count();
            metrics::gauge!("sluice_fenced_brokers").set(fenced as f64);
            metrics::gauge!("sluice_active_brokers").set((image.brokers.len() - fenced) as f64);
            metrics::gauge!("sluice_topics").set(image.topics.len() as f64);
        }
    }

    /// Opens the sled store, starts Raft and initializes the cluster membership on first
    /// start (every voter proposes the same membership; openraft accepts one).
    pub async fn start(config: ControllerConfig) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("creating {}: {e}", config.data_dir.display()))?;
        let (directory_id, new_directory) =
            sluice_storage::directory_id::load_or_create(&config.data_dir)?;
        let db = store::open_db(&config.data_dir)?;
        let log = LogStore::new(&db).map_err(|e| e.to_string())?;
        let (sm, applied) = StateMachine::new(&db)?;
        let election = config.election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.raft_heartbeat_interval.as_millis() as u64,
            election_timeout_min: election / 2,
            election_timeout_max: election,
            install_snapshot_timeout: 2_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                config.snapshot_interval_entries,
            ),
            max_in_snapshot_log_to_keep: config.snapshot_interval_entries.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft config: {e}"))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory {
                voters: config.voters.clone(),
                me: (config.node_id, directory_id.clone()),
            },
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| format!("starting raft: {e}"))?;
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            // Decided in the background, so this node's listener (started once `start`
            // returns) answers its peers' Identify meanwhile: nodes of a quorum being formed
            // learn at once that none of them is initialized.
            let (raft, config, directory_id) = (raft.clone(), config.clone(), directory_id.clone());
            tokio::spawn(async move {
                // An empty directory: either the quorum is being formed, or this node lost its
                // disk and a quorum exists without it. In the second case it must not vote as the
                // voter it was (it forgot its vote and its log): it stays an observer until an
                // operator adds it again (issue 15).
                let formed = crate::network::probe_formed_quorum(
                    config.node_id,
                    &config.voters,
                    &config.cluster_id,
                )
                .await;
                match formed {
                    Some(peer) => tracing::warn!(
                        directory_id = %directory_id, peer,
                        "this controller's directory is new and a quorum already exists: starting as an observer, \
                         not initializing a membership (it takes part only where the quorum's membership names \
                         this directory or leaves it unbound, as right after the quorum formed; otherwise it votes \
                         and counts toward commits once added: `sluice quorum remove-controller --controller-id {id}` \
                         if it was a voter, then `sluice quorum add-controller --controller-id {id} --address HOST:PORT`)",
                        id = config.node_id
                    ),
                    None => {
                        // Every voter initializes the same entry (directory ids unbound; the first
                        // active controller binds them), so it does not matter whose wins.
                        let members: BTreeMap<NodeId, QuorumMember> = config
                            .voters
                            .iter()
                            .map(|(id, addr)| {
                                (
                                    *id,
                                    QuorumMember {
                                        addr: addr.clone(),
                                        directory_id: String::new(),
                                    },
                                )
                            })
                            .collect();
                        match raft.initialize(members).await {
                            Ok(()) => tracing::info!(voters = ?config.voters, %directory_id,
                            "initialized metadata quorum membership"),
                            Err(e) => tracing::info!(error = %e, "membership already initialized"),
                        }
                    }
                }
            });
        } else if new_directory {
            tracing::warn!(%directory_id, "this controller's Raft state had no directory id; gave it one");
        }
        Ok(Arc::new(ControllerNode {
            id: config.node_id,
            directory_id,
            config,
            raft,
            log,
            applied,
            sessions: Mutex::new(HashMap::new()),
            decide_lock: tokio::sync::Mutex::new(()),
            observers: Mutex::new(Vec::new()),
            membership_lock: tokio::sync::Mutex::new(()),
            last_leader_contact: Mutex::new((None, Instant::now())),
            passwords: Default::default(),
            high_watermarks: Default::default(),
        }))
    }

    /// The gRPC interceptor of the Admin service: with SASL on, callers authenticate with
    /// a user's credentials or a client certificate (brokers relaying clients' calls use
    /// their node certificates).
    pub fn authenticator(self: &Arc<Self>) -> sluice_proto::auth::Authenticate {
        let node = self.clone();
        sluice_proto::auth::Authenticate {
            required: self.config.sasl_enabled,
            check: Arc::new(move |name, password| {
                let image = node.image();
                let secret =
                    sluice_metadata::scram::decoy_secret(&node.config.cluster_id, image.history_id);
                node.passwords
                    .check(image.users.get(name), name, password, &secret)
            }),
        }
    }

    /// The latest image this controller applied (maybe behind the leader's).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.applied.borrow().image.clone()
    }

    /// The active controller as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Address of a voter.
    pub fn voter_addr(&self, id: NodeId) -> Option<String> {
        self.config.voters.get(&id).cloned().or_else(|| {
            self.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })
    }

    /// Checks that a Raft request is meant for this node's directory and comes from the
    /// voter its sender claims to be (issue 15): a node whose disk was replaced is not the
    /// voter it was, and neither votes nor counts toward a commit.
    ///
    /// The sender is checked on votes only (`check_sender`): a wiped candidate must not
    /// collect votes as the voter it was, while a legitimate leader whose binding a lagging
    /// follower has not learned yet must still reach it with AppendEntries.
    pub fn check_raft_identity(
        &self,
        target_directory_id: &str,
        sender_id: NodeId,
        sender_directory_id: &str,
        check_sender: bool,
    ) -> Result<(), Status> {
        if !target_directory_id.is_empty() && target_directory_id != self.directory_id {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!(
                    "node {} has directory {}, not {target_directory_id}: its disk was replaced, so it is \
                     not that voter; remove and add it again",
                    self.id, self.directory_id
                ),
                None,
            ));
        }
        if !check_sender {
            return Ok(());
        }
        let bound = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&sender_id)
            .map(|n| n.directory_id.clone())
            .unwrap_or_default();
        if !bound.is_empty() && bound != sender_directory_id {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!(
                    "the membership binds node {sender_id} to directory {bound}, but the sender has \
                     {sender_directory_id:?}: not that voter"
                ),
                None,
            ));
        }
        Ok(())
    }

    /// Voters of `after` that answer now under the directory id `members` gives them
    /// (unbound: any); this node counts as up. The rest are down or are not that voter.
    async fn voters_up(
        &self,
        after: &std::collections::BTreeSet<NodeId>,
        members: &BTreeMap<NodeId, QuorumMember>,
        adding: Option<NodeId>,
    ) -> Vec<NodeId> {
        let asks = after.iter().map(|id| async move {
            if *id == self.id {
                return Some(*id);
            }
            let member = members.get(id)?;
            // This node reaches a peer the way Raft does (its own config first, e.g. a
            // proxy); a controller being added, at the address given.
            let addr = match self.config.voters.get(id) {
                Some(a) if adding != Some(*id) => a.clone(),
                _ => member.addr.clone(),
            };
            let r = crate::network::identify(&addr).await?;
            let same = r.node_id == *id
                && (member.directory_id.is_empty() || member.directory_id == r.directory_id);
            same.then_some(*id)
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Proposes a membership change in a task of its own, so a caller that gives up (a
    /// timeout, a cancelled request) never leaves it half done: openraft proposes the second,
    /// uniform step of a joint change only while the call runs. Waits up to `wait`.
    async fn change_members(
        &self,
        changes: ChangeMembers<NodeId, QuorumMember>,
        wait: Duration,
    ) -> Result<(), Status> {
        let raft = self.raft.clone();
        let what = format!("{changes:?}");
        let task = tokio::spawn(async move {
            raft.change_membership(changes, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let failed = |e: String| {
            error_status(
                ErrorCode::UnknownServerError,
                format!("the membership change {what} failed: {e}"),
                None,
            )
        };
        match tokio::time::timeout(wait, task).await {
            Err(_) => Err(error_status(
                ErrorCode::RequestTimedOut,
                format!(
                    "the membership change did not commit within {wait:?}; it goes on in the background"
                ),
                None,
            )),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Ok(Ok(Err(e))) => Err(failed(e)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// The current membership. A joint (two-config) membership left by a change that was
    /// interrupted (a leader failover between its two steps) is finished first: its last
    /// config becomes the membership, as the change intended.
    async fn settled_membership(
        &self,
    ) -> Result<
        (
            std::collections::BTreeSet<NodeId>,
            BTreeMap<NodeId, QuorumMember>,
        ),
        Status,
    > {
        let joint = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_joint_config()
            .clone();
        if joint.len() > 1 {
            let last = joint.last().cloned().unwrap_or_default();
            tracing::warn!(voters = ?last, "finishing an interrupted voter change");
            self.change_members(
                ChangeMembers::ReplaceAllVoters(last),
                self.config.write_timeout * 2,
            )
            .await?;
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.get_joint_config().len() > 1 {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                "a voter change is in progress; one change at a time".to_string(),
                None,
            ));
        }
        let voters = membership.voter_ids().collect();
        let members = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        Ok((voters, members))
    }

    /// `Admin.AddController` on the active controller.
    pub async fn add_controller(
        &self,
        req: sluice_proto::v1::AddControllerRequest,
    ) -> Result<sluice_proto::v1::QuorumChangeResponse, Status> {
        let id = controller_id(req.controller_id)?;
        let _one_change = self.membership_lock.lock().await;
        self.ensure_current().await?;
        let (before, mut members) = self.settled_membership().await?;
        if before.contains(&id) {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!("controller {id} is already a voter; remove it first to replace it"),
                None,
            ));
        }
        let who = crate::network::identify(&req.address).await;
        let Some(who) = who.filter(|w| w.node_id == id) else {
            return Err(error_status(
                ErrorCode::InvalidRequest,
                format!(
                    "no controller with node id {id} answers at {}: start it there first (on an empty \
                     directory it waits as an observer)",
                    req.address
                ),
                None,
            ));
        };
        if who.cluster_id != self.config.cluster_id {
            return Err(error_status(
                ErrorCode::InconsistentClusterId,
                format!(
                    "controller {id} at {} belongs to cluster {:?}, not {:?}",
                    req.address, who.cluster_id, self.config.cluster_id
                ),
                None,
            ));
        }
        let member = QuorumMember {
            addr: req.address.clone(),
            directory_id: who.directory_id.clone(),
        };
        let members_before = members.clone();
        members.insert(id, member.clone());
        let mut after = before.clone();
        after.insert(id);
        let up = self.voters_up(&after, &members, Some(id)).await;
        let keeps_majority = up.len() * 2 > after.len();
        let mut resp = sluice_proto::v1::QuorumChangeResponse {
            voters_before: before.iter().map(|v| *v as i32).collect(),
            voters_after: after.iter().map(|v| *v as i32).collect(),
            voters_up_after: up.iter().map(|v| *v as i32).collect(),
            keeps_majority,
            applied: false,
            directory_id: who.directory_id.clone(),
        };
        if req.dry_run {
            return Ok(resp);
        }
        if !keeps_majority {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!(
                    "refused: after adding {id} only {up:?} of the voters {after:?} answer, not a majority"
                ),
                None,
            ));
        }
        // A learner first: it catches up without counting toward commits, then it votes.
        let catch_up = self.config.write_timeout * 6;
        let raft_err = |what: &str, e: String| {
            error_status(
                ErrorCode::UnknownServerError,
                format!("{what} controller {id}: {e}"),
                None,
            )
        };
        if members_before.contains_key(&id) {
            // A learner left behind (an add that did not finish, a stale address or
            // directory): AddNodes would keep it as it is, so remove it first.
            self.change_members(ChangeMembers::RemoveNodes([id].into()), catch_up)
                .await?;
        }
        // In a task of its own, so giving up on the wait does not cancel the catch-up.
        let raft = self.raft.clone();
        let learner = tokio::spawn(async move {
            raft.add_learner(id, member, true)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match tokio::time::timeout(catch_up, learner).await {
            Err(_) => {
                return Err(error_status(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "controller {id} did not catch up within {catch_up:?}; it stays a learner"
                    ),
                    None,
                ))
            }
            Ok(Err(e)) => return Err(raft_err("adding", e.to_string())),
            Ok(Ok(Err(e))) => return Err(raft_err("adding", e)),
            Ok(Ok(Ok(()))) => {}
        }
        self.change_members(ChangeMembers::AddVoterIds([id].into()), catch_up)
            .await?;
        tracing::info!(controller = id, directory_id = %who.directory_id, voters = ?after, "added a voter");
        resp.applied = true;
        Ok(resp)
    }

    /// `Admin.RemoveController` on the active controller.
    pub async fn remove_controller(
        &self,
        req: sluice_proto::v1::RemoveControllerRequest,
    ) -> Result<sluice_proto::v1::QuorumChangeResponse, Status> {
        let id = controller_id(req.controller_id)?;
        let _one_change = self.membership_lock.lock().await;
        self.ensure_current().await?;
        let (before, members) = self.settled_membership().await?;
        if !before.contains(&id) {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!("controller {id} is not a voter (voters: {before:?})"),
                None,
            ));
        }
        let mut after = before.clone();
        after.remove(&id);
        if after.is_empty() {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!("controller {id} is the last voter"),
                None,
            ));
        }
        let up = self.voters_up(&after, &members, None).await;
        let keeps_majority = up.len() * 2 > after.len();
        let mut resp = sluice_proto::v1::QuorumChangeResponse {
            voters_before: before.iter().map(|v| *v as i32).collect(),
            voters_after: after.iter().map(|v| *v as i32).collect(),
            voters_up_after: up.iter().map(|v| *v as i32).collect(),
            keeps_majority,
            applied: false,
            directory_id: members
                .get(&id)
                .map(|m| m.directory_id.clone())
                .unwrap_or_default(),
        };
        if req.dry_run {
            return Ok(resp);
        }
        if !keeps_majority {
            return Err(error_status(
                ErrorCode::InconsistentVoterSet,
                format!(
                    "refused: after removing {id} only {up:?} of the voters {after:?} answer, not a majority"
                ),
                None,
            ));
        }
        self.change_members(
            ChangeMembers::RemoveVoters([id].into()),
            self.config.write_timeout * 2,
        )
        .await?;
        tracing::info!(controller = id, voters = ?after, "removed a voter");
        resp.applied = true;
        Ok(resp)
    }

    /// On the active controller: binds the directory id of every member whose id is not
    /// bound yet (a freshly formed quorum), asking each one. Members that do not answer
    /// stay unbound until a later try.
    async fn bind_directory_ids(&self) {
        let _one_change = self.membership_lock.lock().await;
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let mut bound = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if !node.directory_id.is_empty() {
                continue;
            }
            let directory_id = if *id == self.id {
                Some(self.directory_id.clone())
            } else {
                let addr = self.voter_addr(*id).unwrap_or_else(|| node.addr.clone());
                crate::network::identify(&addr)
                    .await
                    .filter(|r| r.node_id == *id && !r.directory_id.is_empty())
                    .map(|r| r.directory_id)
            };
            if let Some(directory_id) = directory_id {
                bound.insert(
                    *id,
                    QuorumMember {
                        addr: node.addr.clone(),
                        directory_id,
                    },
                );
            }
        }
        if bound.is_empty() {
            return;
        }
        let what = format!("{bound:?}");
        match self
            .change_members(ChangeMembers::SetNodes(bound), self.config.write_timeout)
            .await
        {
            Ok(()) => tracing::info!(members = %what, "bound the voters' directory ids"),
            Err(e) => tracing::warn!(error = %e.message(), "could not bind directory ids"),
        }
    }

    /// Where writes must go: `Ok(None)` when this node is the active controller, the
    /// leader's address otherwise, `NOT_CONTROLLER` when no leader is known.
    pub fn route(&self) -> Result<Option<String>, Status> {
        match self.leader() {
            Some(l) if l == self.id => Ok(None),
            Some(l) => match self.voter_addr(l) {
                Some(addr) => Ok(Some(addr)),
                None => Err(self.not_controller(Some(l))),
            },
            None => Err(self.not_controller(None)),
        }
    }

    /// `NOT_CONTROLLER` naming the active controller when known.
    pub fn not_controller(&self, leader: Option<NodeId>) -> Status {
        let hint = leader.and_then(|l| {
            let addr = self.voter_addr(l)?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(LeaderHint {
                leader_id: l as i32,
                host: host.to_string(),
                port: port.parse().ok()?,
                leader_epoch: self.raft.metrics().borrow().current_term as i32,
            })
        });
        let msg = match leader {
            Some(l) => format!("node {} is not the active controller; node {l} is", self.id),
            None => format!(
                "node {} knows no active controller: the quorum has no leader (a majority of {} voters must be reachable)",
                self.id,
                self.config.voters.len()
            ),
        };
        error_status(ErrorCode::NotController, msg, hint)
    }

    fn map_raft_error<E: std::fmt::Display>(
        &self,
        e: RaftError<NodeId, E>,
        leader: Option<NodeId>,
    ) -> Status {
        match e {
            RaftError::APIError(_) => self.not_controller(leader),
            RaftError::Fatal(f) => error_status(
                ErrorCode::UnknownServerError,
                format!("raft stopped: {f}"),
                None,
            ),
        }
    }

    /// Waits until this node, as leader, has applied everything committed before now
    /// (a linearizable read barrier).
    pub async fn ensure_current(&self) -> Result<Arc<MetadataImage>, Status> {
        let r =
            tokio::time::timeout(self.config.write_timeout, self.raft.ensure_linearizable()).await;
        match r {
            Err(_) => Err(error_status(
                ErrorCode::RequestTimedOut,
                format!(
                    "could not confirm leadership within {:?}: no quorum reachable",
                    self.config.write_timeout
                ),
                None,
            )),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.not_controller(f.leader_id))
            }
            Ok(Err(e)) => Err(self.map_raft_error(e, None)),
            Ok(Ok(_)) => Ok(self.image()),
        }
    }

    /// Runs one decision on the active controller: `f` turns the current image into
    /// records (or a refusal); they are committed through Raft before this returns.
    /// Returns the offset of the committed entry (or the image offset when nothing changed).
    pub async fn decide<T>(
        &self,
        f: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), Refusal>,
    ) -> Result<(u64, T), Status> {
        let _one_at_a_time = self.decide_lock.lock().await;
        let image = self.ensure_current().await?;
        let (mut records, out) = f(&image).map_err(|r| error_status(r.code, r.message, None))?;
        if records.is_empty() {
            return Ok((image.offset, out));
        }
        // The first write of a new quorum names its history, in the same entry, so every
        // image with content carries the id brokers check (issue 15).
        let named = logic::name_history(&image, rand::random());
        if !named.is_empty() {
            tracing::info!(history_id = ?named, "naming the metadata history");
            records.splice(0..0, named);
        }
        let offset = self.commit(records).await?;
        Ok((offset, out))
    }

    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<u64, Status> {
        let write = self.raft.client_write(RecordBatch::new(records));
        match tokio::time::timeout(self.config.write_timeout, write).await {
            Err(_) => Err(error_status(
                ErrorCode::RequestTimedOut,
                format!(
                    "the write was not committed within {:?}: no quorum reachable (its outcome is unknown)",
                    self.config.write_timeout
                ),
                None,
            )),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_controller(f.leader_id))
            }
            Ok(Err(e)) => Err(self.map_raft_error(e, None)),
            Ok(Ok(resp)) => Ok(resp.log_id.index),
        }
    }

    /// Notes that a leader just sent us AppendEntries (a heartbeat or entries).
    pub fn leader_contact(&self) {
        self.last_leader_contact.lock().expect("contact lock").1 = Instant::now();
    }

    /// A follower that has not heard from any leader for a full election timeout (so every
    /// voter's leader lease has expired too) starts an election at once, after a small random
    /// delay that keeps survivors from splitting the vote, instead of waiting out openraft's
    /// next randomized timer (which after a rejected early vote can cost a second timeout).
    async fn maybe_elect(&self, state: ServerState, leader: Option<NodeId>) {
        let silent = {
            let mut contact = self.last_leader_contact.lock().expect("contact lock");
            if contact.0 != leader {
                // A new (or no) leader: it gets a full timeout before we give up on it.
                *contact = (leader, Instant::now());
                None
            } else {
                // Only a follower that still believes in a leader that went silent acts;
                // while no leader is known, openraft's own election timer is running.
                let timeout = self.config.election_timeout;
                let jitter = timeout.mul_f64(rand::random::<f64>() * 0.3);
                match leader {
                    Some(l)
                        if state == ServerState::Follower
                            && l != self.id
                            && contact.1.elapsed() >= timeout + jitter =>
                    {
                        // Don't trigger again before another full timeout has passed.
                        contact.1 = Instant::now();
                        Some(l)
                    }
                    _ => None,
                }
            }
        };
        if let Some(l) = silent {
            tracing::info!(
                node = self.id,
                silent_leader = l,
                "the leader went silent for the election timeout; starting an election"
            );
            let _ = self.raft.trigger().elect().await;
        }
    }

    /// Records a heartbeat from `broker`, extending its session.
    pub fn touch_session(
        &self,
        broker: BrokerId,
        metadata_offset: Option<u64>,
        directory_id: &str,
    ) {
        let now = Instant::now();
        let mut s = self.sessions.lock().expect("sessions lock");
        let directory_id = if directory_id.is_empty() {
            s.get(&broker).and_then(|old| old.directory_id.clone())
        } else {
            Some(directory_id.to_string())
        };
        s.insert(
            broker,
            Session {
                deadline: now + self.config.session_timeout,
                last_heartbeat: now,
                metadata_offset,
                directory_id,
            },
        );
    }

    /// Starts a fresh session for a broker that just registered from `directory_id`.
    pub fn start_session(&self, broker: BrokerId, directory_id: &str) {
        let now = Instant::now();
        self.sessions.lock().expect("sessions lock").insert(
            broker,
            Session {
                deadline: now + self.config.session_timeout,
                last_heartbeat: now,
                metadata_offset: None,
                directory_id: (!directory_id.is_empty()).then(|| directory_id.to_string()),
            },
        );
    }

    /// Whether `broker`'s session is alive (a heartbeat within `broker.session.timeout.ms`)
    /// and belongs to another log dir than `directory_id`: then a new incarnation from
    /// `directory_id` is a second process, not a restart (the broker locks its log dir).
    pub fn session_alive_elsewhere(&self, broker: BrokerId, directory_id: &str) -> bool {
        let s = self.sessions.lock().expect("sessions lock");
        s.get(&broker).is_some_and(|s| {
            s.deadline > Instant::now()
                && (directory_id.is_empty() || s.directory_id.as_deref() != Some(directory_id))
        })
    }

    /// Ends `broker`'s session (its controlled shutdown completed).
    pub fn end_session(&self, broker: BrokerId) {
        self.sessions.lock().expect("sessions lock").remove(&broker);
    }

    /// Milliseconds since the broker's last heartbeat, and the metadata offset it reported.
    pub fn session_info(&self, broker: BrokerId) -> Option<(i64, Option<u64>)> {
        let s = self.sessions.lock().expect("sessions lock");
        s.get(&broker).map(|s| {
            (
                s.last_heartbeat.elapsed().as_millis() as i64,
                s.metadata_offset,
            )
        })
    }

    /// The active controller's timer loop: grants every broker a fresh session when this
    /// node becomes leader, then fences brokers whose session expired. Returns only when the
    /// Raft node stopped (shutdown or a fatal error).
    pub async fn run_session_checker(self: Arc<Self>) {
        let mut was_leader = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let metrics = self.raft.metrics().borrow().clone();
            if let Err(fatal) = &metrics.running_state {
                tracing::error!(node = self.id, error = %fatal, "raft stopped; the controller cannot continue");
                return;
            }
            self.maybe_elect(metrics.state, metrics.current_leader)
                .await;
            let is_leader = metrics.state == ServerState::Leader;
            if is_leader && !was_leader {
                // A new active controller knows nothing of heartbeats sent to the old one:
                // everyone gets a full session before anyone is fenced.
                let image = self.image();
                let now = Instant::now();
                let mut s = self.sessions.lock().expect("sessions lock");
                s.clear();
                // Fenced brokers have no session to keep (and their next incarnation may
                // register at once).
                for id in image.brokers.values().filter(|b| !b.fenced).map(|b| &b.id) {
                    s.insert(
                        *id,
                        Session {
                            deadline: now + self.config.session_timeout,
                            last_heartbeat: now,
                            metadata_offset: None,
                            directory_id: None,
                        },
                    );
                }
                tracing::info!(
                    node = self.id,
                    term = metrics.current_term,
                    "became the active controller"
                );
            }
            was_leader = is_leader;
            if !is_leader {
                continue;
            }
            let unbound = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(_, n)| n.directory_id.is_empty());
            if unbound {
                self.bind_directory_ids().await;
            }
            let image = self.image();
            let expired: Vec<BrokerId> = {
                let now = Instant::now();
                let mut s = self.sessions.lock().expect("sessions lock");
                image
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .filter(|b| {
                        let session = s.entry(b.id).or_insert(Session {
                            deadline: now + self.config.session_timeout,
                            last_heartbeat: now,
                            metadata_offset: None,
                            directory_id: None,
                        });
                        session.deadline <= now
                    })
                    .map(|b| b.id)
                    .collect()
            };
            for id in expired {
                tracing::warn!(broker = id.get(), "broker session expired; fencing it");
                let r = self
                    .decide(|img| Ok((logic::fence_broker(img, id), ())))
                    .await;
                if let Err(e) = r {
                    tracing::warn!(broker = id.get(), error = %e.message(), "could not fence broker");
                }
            }
        }
    }
}

/// A controller id from the wire (`int32`): never negative.
fn controller_id(id: i32) -> Result<NodeId, Status> {
    u64::try_from(id).map_err(|_| {
        error_status(
            ErrorCode::InvalidRequest,
            format!("controller id {id} must not be negative"),
            None,
        )
    })
}
