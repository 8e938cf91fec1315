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
use openraft::{BasicNode, ServerState};
use sluice_metadata::records::RecordBatch;
use sluice_metadata::{BrokerId, MetadataImage, MetadataRecord};
use sluice_proto::status::error_status;
use sluice_proto::v1::{ErrorCode, LeaderHint};
use tokio::sync::watch;
use tonic::Status;

use crate::logic::{self, Defaults, Refusal};
use crate::network::NetworkFactory;
use crate::store::{self, Applied, LogStore, StateMachine};
use crate::types::{NodeId, Raft};

/// Everything a controller needs to start. Keys are Kafka's where Kafka has one.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `node.id`.
    pub node_id: NodeId,
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
    /// The leader we last knew and when it last sent us AppendEntries (std mutex: tiny
    /// sections, no `.await`).
    last_leader_contact: Mutex<(Option<NodeId>, Instant)>,
}

impl ControllerNode {
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
            },
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| format!("starting raft: {e}"))?;
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(voters = ?config.voters, "initialized metadata quorum membership")
                }
                Err(e) => tracing::info!(error = %e, "membership already initialized"),
            }
        }
        Ok(Arc::new(ControllerNode {
            id: config.node_id,
            config,
            raft,
            log,
            applied,
            sessions: Mutex::new(HashMap::new()),
            decide_lock: tokio::sync::Mutex::new(()),
            last_leader_contact: Mutex::new((None, Instant::now())),
        }))
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
        self.config.voters.get(&id).cloned()
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
