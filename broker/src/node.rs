//! A broker process: registration and heartbeats with the active controller, the metadata
//! follower, partition roles, follower fetchers and ISR maintenance.

use sluice_metadata::LeaderEpoch;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_metadata::config::TopicConfig;
use sluice_metadata::{
    history_diverges, BrokerId, HistoryPosition, MetadataImage, TopicIdPartition, TopicPartition,
    NO_LEADER,
};
use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::controller_client::ControllerClient;
use sluice_proto::v1::metadata_event::Event;
use sluice_proto::v1::*;
use sluice_storage::{Log, LogConfig};
use tonic::transport::Channel;

use crate::partition::{AlterIsr, AlterOutcome, PartitionHandle, ReplicaState, Role};

/// Settings of one broker (Kafka key names in the docs).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: BrokerId,
    /// `ssl.keystore.location` and friends: every listener serves TLS only (`None`:
    /// plaintext).
    pub tls: Option<sluice_proto::tls::TlsSettings>,
    /// `sasl.enabled.mechanisms`: Kafka connections must authenticate with one of these
    /// and gRPC calls must carry a user's credentials (empty: SASL off).
    pub sasl_mechanisms: Vec<sluice_metadata::scram::SaslMechanism>,
    /// `authorizer.class.name` is set: every request is checked against the ACLs.
    pub authorizer: Option<sluice_metadata::acl::Authorizer>,
    /// `listeners`: where gRPC is served (and the Kafka protocol too, unless
    /// `kafka_listen` names a listener of its own or `listen_serves_kafka` is off).
    pub listen: SocketAddr,
    /// Whether `listen` serves the Kafka protocol beside gRPC (a plain `host:port` or
    /// `PLAINTEXT://` entry does; a `GRPC://` one does not).
    pub listen_serves_kafka: bool,
    /// A `KAFKA://host:port` listener: the Kafka protocol only.
    pub kafka_listen: Option<SocketAddr>,
    /// Its advertised host and port (`advertised.listeners`' `KAFKA://` entry, else its
    /// bound address), registered so Kafka clients are sent there.
    pub advertised_kafka: Option<(String, u16)>,
    /// `advertised.listeners` host and port (what clients and followers dial).
    pub advertised_host: String,
    /// Advertised port.
    pub advertised_port: u16,
    /// Controller addresses from `controller.quorum.voters`.
    pub controllers: Vec<String>,
    /// `log.dirs`.
    pub log_dir: PathBuf,
    /// `cluster.id`.
    pub cluster_id: String,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `replica.fetch.max.bytes`.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`.
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fetch.min.bytes`.
    pub replica_fetch_min_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub replica_fetch_response_max_bytes: i32,
    /// `num.replica.fetchers`: fetch sessions per leader broker (at least 1).
    pub num_replica_fetchers: usize,
    /// Consumer group coordinator settings.
    pub groups: crate::group::GroupSettings,
    /// `log.retention.check.interval.ms`: how often retention and `flush.ms` run.
    pub retention_check_interval: Duration,
    /// Bounded admission on the listener.
    pub listener_limits: crate::listener::ListenerLimits,
    /// `auto.create.topics.enable`: a Metadata request that asks for it creates missing
    /// topics with the cluster's `num.partitions` and `default.replication.factor`.
    pub auto_create_topics: bool,
    /// Every config key with its effective value (`None`: unset) and whether that is the
    /// built-in default, for DescribeConfigs of this BROKER resource (static configs:
    /// read-only; Sluice has no dynamic broker configs).
    pub static_configs: Vec<(String, Option<String>, bool)>,
}

/// A running broker.
pub struct BrokerNode {
    /// Settings.
    pub config: BrokerConfig,
    /// The latest metadata image (std lock: swapped, never held across `.await`).
    image: RwLock<Arc<MetadataImage>>,
    /// Local replicas' handles (std lock: map lookups and inserts only).
    partitions: Mutex<HashMap<PartitionKey, PartitionHandle>>,
    /// Each replica's actor task, awaited when the replica is removed (std lock: tiny).
    actors: Mutex<HashMap<PartitionKey, tokio::task::JoinHandle<()>>>,
    /// Our fetch sessions with each leader broker, as a follower.
    replica_fetchers: crate::replication::ReplicaFetchers,
    /// Followers' fetch sessions with us, as a leader.
    pub fetch_sessions: crate::replication::FetchSessions,
    /// Serialises `reconcile` and the installation of replicas whose log has opened (never
    /// held across a log's recovery), and holds the role (and topic, for its config) last
    /// handed to each replica, so a reconcile touches only the replicas whose role or
    /// config changed.
    reconcile_lock: Mutex<Reconciled>,
    /// Bounds the logs opening (and recovering) at once to [`LOG_OPEN_THREADS`]; waiters
    /// queue in the order reconciles asked for them.
    log_openers: Arc<tokio::sync::Semaphore>,
    /// Set by `close_logs`: logs still queued to open are not opened, and one that opens
    /// meanwhile is closed cleanly instead of installed.
    closing: AtomicBool,
    /// What the metadata applied since the last reconcile touched (std lock: tiny).
    pending_scope: Mutex<Scope>,
    /// The persisted image and journal (std lock: held while writing one burst's entries).
    image_store: Mutex<crate::image_store::ImageStore>,
    /// Entries applied and not yet in the journal; `None` once a snapshot replaced the
    /// image (the next persist rewrites it whole).
    journal_pending: Mutex<Option<Vec<crate::image_store::JournalEntry>>>,
    /// Bumped whenever `reconcile` created a replica or handed out roles: requests waiting
    /// for a leadership to be taken up watch it (see `DataPlane::lookup`).
    reconciled: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever a new image is in place (`image()` changed).
    images: tokio::sync::watch::Sender<u64>,
    /// Our broker epoch (-1 = not registered).
    pub broker_epoch: AtomicI64,
    /// Whether the controller currently fences us.
    pub fenced: AtomicBool,
    /// Index into `controllers` of the last controller that answered as active.
    active_controller: AtomicUsize,
    /// Last metadata offset applied.
    pub metadata_offset: AtomicU64,
    /// Where in which history the applied metadata stands (the entry at `metadata_offset`).
    metadata_position: Mutex<HistoryPosition>,
    /// Set when a controller's metadata history did not continue the one applied: nothing is
    /// applied (and health is NOT_SERVING) until a controller's full image replaces ours.
    pub metadata_diverged: AtomicBool,
    /// Set once this process has applied metadata from a controller (not only the image it
    /// persisted earlier): from then on the image's fencing state of our registration is live.
    live_metadata: AtomicBool,
    /// Set when applied metadata is not yet persisted and reconciled (`settle_applied`).
    image_unsettled: AtomicBool,
    /// Set when a controlled shutdown has been granted.
    pub shutting_down: AtomicBool,
    channels: Mutex<HashMap<String, Channel>>,
    /// The unused part `[next, end)` of the producer-id block the controller gave us.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// This log dir's id (`<log.dirs>/directory.id`, created once; KIP-858), sent at
    /// registration so the controller tells a restart of this broker from a second process.
    pub directory_id: String,
    /// The exclusive lock on `<log.dirs>/.lock`, held for the life of the process: one broker
    /// per log dir, which is what makes `directory_id` prove a restart.
    _dir_lock: std::fs::File,
    /// High watermarks from `replication-offset-checkpoint` at start-up, read when a
    /// replica opens (std lock: map lookups only).
    hw_checkpoint: Mutex<HashMap<TopicPartition, i64>>,
    /// The listener's budget of produce bytes received and not yet appended
    /// (`queued.max.request.bytes`).
    pub request_bytes: crate::listener::RequestBytes,
    /// Passwords verified against users' credentials (PLAIN, gRPC Basic credentials).
    passwords: sluice_metadata::scram::PasswordCache,
    /// Client quotas' usage on this broker.
    pub quotas: crate::quota::Quotas,
}

/// Every this many heartbeats a broker reports the HW of every partition it leads, not only
/// the changed ones (a controller that became active meanwhile learns them all).
const FULL_HIGH_WATERMARK_REPORT_EVERY: u32 = 15;

/// Threads that open new replicas' logs at once (Kafka's `num.recovery.threads.per.data.dir`
/// plays this part at start-up).
pub const LOG_OPEN_THREADS: usize = 8;

/// Opens (creating or recovering) a new replica's log. A replica that starts as leader
/// records its epoch before any append, as a role change to leader does (Kafka does it at
/// election). Blocking.
fn open_log(
    dir: &std::path::Path,
    config: &LogConfig,
    epoch: Option<i32>,
) -> Result<Log, sluice_storage::StorageError> {
    let mut log = Log::open(dir, config.clone())?;
    if let Some(e) = epoch {
        log.assign_leader_epoch(LeaderEpoch(e))?;
    }
    Ok(log)
}

/// The role the image gives broker `me` for partition `p`, if it hosts a replica of it.
/// While fenced we lead nothing: a replica the image names leader follows no one.
fn role_in_image(me: BrokerId, fenced: bool, p: &sluice_metadata::PartitionState) -> Option<Role> {
    if !p.replicas.contains(&me) {
        return None;
    }
    Some(if p.leader == me && fenced {
        Role::Follower {
            leader: NO_LEADER,
            leader_epoch: p.leader_epoch.get(),
        }
    } else if p.leader == me {
        Role::Leader {
            leader_epoch: p.leader_epoch.get(),
            partition_epoch: p.partition_epoch.get(),
            isr: p.isr.clone(),
            replicas: p.replicas.clone(),
        }
    } else {
        Role::Follower {
            leader: p.leader,
            leader_epoch: p.leader_epoch.get(),
        }
    })
}

/// Most ISR proposals in one AlterPartitions request.
pub const ALTER_PARTITIONS_BATCH_MAX: usize = 1000;

/// Metadata events applied back to back before the image is persisted and replicas are
/// reconciled (bounds how long a flood of events defers their effect).
pub const METADATA_BURST_MAX: usize = 1000;

/// A local replica's key.
pub type PartitionKey = TopicIdPartition;

/// How long a removed replica's log stays set aside before it is deleted (Kafka's
/// `file.delete.delay.ms`, 60 s).
pub const LOG_DELETE_DELAY: Duration = Duration::from_secs(60);

/// Suffix of a removed replica's directory (Kafka's `-delete`).
pub const DELETED_SUFFIX: &str = "-delete";

/// Renames a removed replica's directory to `<dir>.<ms><DELETED_SUFFIX>`, to be deleted
/// after [`LOG_DELETE_DELAY`]. Blocking.
fn set_aside(dir: &std::path::Path) {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(
        ".{}{DELETED_SUFFIX}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    match std::fs::rename(dir, &aside) {
        Ok(()) => tracing::info!(dir = %std::path::Path::new(&aside).display(),
            "replica removed; its log is set aside and deleted after {} s",
            LOG_DELETE_DELAY.as_secs()),
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
            "replica removed; could not set its log aside"),
    }
}

/// Deletes the set-aside replica directories of `dir` older than `delay` (by the time in
/// their name). Blocking: run it off the async workers.
pub fn delete_set_aside_logs(dir: &std::path::Path, delay: Duration) -> std::io::Result<usize> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(DELETED_SUFFIX)) else {
            continue;
        };
        let Some(at) = stem.rsplit('.').next().and_then(|t| t.parse::<u128>().ok()) else {
            continue;
        };
        if now.saturating_sub(at) >= delay.as_millis() {
            std::fs::remove_dir_all(entry.path())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// How often leaders' and followers' HWs are written to `replication-offset-checkpoint`
/// (Kafka's `replica.high.watermark.checkpoint.interval.ms`, 5 s). One small file per log
/// dir, written (with two fsyncs) only when a HW moved; at 1 s the fsyncs of a loaded box
/// slowed its controllers' Raft flushes measurably.
pub const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The HW checkpoint file of a log dir (Kafka's name and format: a version line, a count
/// line, then `topic partition offset` lines).
fn hw_checkpoint_file(dir: &std::path::Path) -> PathBuf {
    dir.join("replication-offset-checkpoint")
}

/// Parses a HW checkpoint; a damaged file is an error naming the line.
fn parse_hw_checkpoint(text: &str) -> Result<HashMap<TopicPartition, i64>, String> {
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err("unknown version (expected 0 on the first line)".into());
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("the second line is not a count")?;
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let mut f = line.split(' ');
        let (Some(t), Some(p), Some(o), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(format!("line {} is not `topic partition offset`", i + 3));
        };
        let p: i32 = p
            .parse()
            .map_err(|_| format!("line {}: bad partition", i + 3))?;
        let o: i64 = o
            .parse()
            .map_err(|_| format!("line {}: bad offset", i + 3))?;
        out.insert(TopicPartition::new(t, p), o);
    }
    if out.len() != count {
        return Err(format!("{} entries, the count says {count}", out.len()));
    }
    Ok(out)
}

/// Renders a HW checkpoint (sorted, so unchanged state renders the same bytes).
fn render_hw_checkpoint(hws: &[(String, i32, i64)]) -> String {
    let mut out = format!("0\n{}\n", hws.len());
    for (t, p, o) in hws {
        out.push_str(&format!("{t} {p} {o}\n"));
    }
    out
}

/// What a reconcile looks at: every replica, or the replicas of some topics.
#[derive(Debug, Default)]
struct Scope {
    all: bool,
    topics: std::collections::BTreeSet<sluice_metadata::TopicId>,
}

impl Scope {
    fn everything() -> Self {
        Scope {
            all: true,
            topics: Default::default(),
        }
    }

    fn covers(&self, topic: sluice_metadata::TopicId) -> bool {
        self.all || self.topics.contains(&topic)
    }

    fn is_empty(&self) -> bool {
        !self.all && self.topics.is_empty()
    }

    /// Adds what one applied entry changed. Broker changes (registrations, fencing) may
    /// change who may lead anything, so they widen the scope to everything.
    fn add(&mut self, delta: &sluice_metadata::MetadataDelta) {
        if !delta.changed_brokers.is_empty() || delta.changed_broker_configs {
            self.all = true;
        }
        if self.all {
            return;
        }
        self.topics
            .extend(delta.changed_partitions.iter().map(|(t, _)| *t));
        self.topics.extend(delta.created_topics.iter().copied());
        self.topics.extend(delta.changed_configs.iter().copied());
        self.topics
            .extend(delta.deleted_topics.iter().map(|t| t.id));
    }
}

/// What the last reconcile handed out.
#[derive(Default)]
struct Reconciled {
    /// The role (and topic, for its config) last handed to each replica, so a reconcile
    /// touches only the replicas whose role or config changed.
    /// With the dynamic topic defaults (cluster-wide broker configs) it was given under.
    #[allow(clippy::type_complexity)]
    roles: HashMap<
        PartitionKey,
        (
            Role,
            Arc<sluice_metadata::TopicImage>,
            BTreeMap<String, String>,
        ),
    >,
    /// Whether we were fenced then (a change re-examines every replica).
    fenced: Option<bool>,
    /// New replicas whose log is queued to open or opening: installed (with the role the
    /// image gives them then) when it is open, not scheduled twice.
    opening: std::collections::HashSet<PartitionKey>,
}

impl BrokerNode {
    /// Loads the last persisted image (if any) and opens nothing else yet: partitions open
    /// when the image says this broker hosts them.
    pub fn new(config: BrokerConfig) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| format!("creating {}: {e}", config.log_dir.display()))?;
        let (image_store, image) = crate::image_store::ImageStore::load(&config.log_dir)
            .map_err(|e| format!("loading the persisted metadata image: {e}"))?;
        let offset = image.offset;
        let position = image.position();
        let lock_path = config.log_dir.join(".lock");
        let dir_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        dir_lock.try_lock().map_err(|e| {
            format!(
                "{} is in use by another process ({e}): one broker per log dir",
                config.log_dir.display()
            )
        })?;
        let (directory_id, _) = sluice_storage::directory_id::load_or_create(&config.log_dir)?;
        let hw_checkpoint = match std::fs::read_to_string(hw_checkpoint_file(&config.log_dir)) {
            Ok(text) => parse_hw_checkpoint(&text).unwrap_or_else(|e| {
                // Losing the checkpoint costs only KIP-207 waits: HWs start at 0 and are
                // relearned; it never serves uncommitted data.
                tracing::warn!(error = %e, "ignoring a damaged replication-offset-checkpoint");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("reading replication-offset-checkpoint: {e}")),
        };
        let request_bytes =
            crate::listener::RequestBytes::new(config.listener_limits.request_bytes_in_flight_max);
        let node = Arc::new(BrokerNode {
            config,
            image: RwLock::new(Arc::new(image)),
            partitions: Mutex::new(HashMap::new()),
            actors: Mutex::new(HashMap::new()),
            replica_fetchers: crate::replication::ReplicaFetchers::new(),
            fetch_sessions: crate::replication::FetchSessions::new(),
            reconcile_lock: Mutex::new(Reconciled::default()),
            log_openers: Arc::new(tokio::sync::Semaphore::new(LOG_OPEN_THREADS)),
            closing: AtomicBool::new(false),
            pending_scope: Mutex::new(Scope::everything()),
            image_store: Mutex::new(image_store),
            journal_pending: Mutex::new(Some(Vec::new())),
            reconciled: tokio::sync::watch::Sender::new(0),
            images: tokio::sync::watch::Sender::new(0),
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            active_controller: AtomicUsize::new(0),
            metadata_offset: AtomicU64::new(offset),
            metadata_position: Mutex::new(position),
            // An image of format 1 names no history, so nothing could tell a reset quorum's
            // log from the one it came from: start over from the controllers' image.
            metadata_diverged: AtomicBool::new(position.offset > 0 && position.history_id == 0),
            live_metadata: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            image_unsettled: AtomicBool::new(false),
            channels: Mutex::new(HashMap::new()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            hw_checkpoint: Mutex::new(hw_checkpoint),
            request_bytes,
            passwords: Default::default(),
            quotas: Default::default(),
            directory_id,
            _dir_lock: dir_lock,
        });
        Ok(node)
    }

    /// The checkpointed HW of a replica (0 when none), bounded later by its log end.
    pub fn checkpointed_high_watermark(&self, topic: &str, index: i32) -> i64 {
        self.hw_checkpoint
            .lock()
            .expect("hw checkpoint lock")
            .get(&TopicPartition::new(topic, index))
            .copied()
            .unwrap_or(0)
    }

    /// Writes every local replica's HW to `replication-offset-checkpoint` (write, fsync,
    /// rename) off the async workers. Returns what it wrote.
    pub async fn checkpoint_high_watermarks(&self, last: Option<String>) -> Option<String> {
        let mut hws: Vec<(String, i32, i64)> = self
            .local_partitions()
            .iter()
            .map(|p| (p.topic.clone(), p.index, p.offsets().high_watermark))
            .collect();
        // Replicas whose log is still opening keep the HW they were started with: a
        // checkpoint without them would restart them at 0 after the next crash.
        let opening: Vec<PartitionKey> = self
            .reconcile_lock
            .lock()
            .expect("reconcile lock")
            .opening
            .iter()
            .copied()
            .collect();
        let image = self.image();
        for key in opening {
            if let Some(t) = image.topics.get(&key.topic_id) {
                let hw = self.checkpointed_high_watermark(&t.name, key.partition);
                if hw > 0 {
                    hws.push((t.name.clone(), key.partition, hw));
                }
            }
        }
        hws.sort();
        hws.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let text = render_hw_checkpoint(&hws);
        if last.as_deref() == Some(text.as_str()) {
            return last;
        }
        let path = hw_checkpoint_file(&self.config.log_dir);
        let body = text.clone();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => Some(text),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not write replication-offset-checkpoint");
                last
            }
            Err(e) => {
                tracing::warn!(error = %e, "HW checkpoint task failed");
                last
            }
        }
    }

    /// Checkpoints HWs every [`HW_CHECKPOINT_INTERVAL`]. Never returns.
    pub async fn run_hw_checkpoints(self: Arc<Self>) {
        let mut last = None;
        let mut tick = tokio::time::interval(HW_CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            last = self.checkpoint_high_watermarks(last).await;
        }
    }

    /// Deadline of one controller request (see [`CONTROLLER_REQUEST_TIMEOUT_MAX`]).
    pub fn controller_request_timeout(&self) -> Duration {
        (self.config.heartbeat_interval * 3).clamp(
            CONTROLLER_REQUEST_TIMEOUT_MIN,
            CONTROLLER_REQUEST_TIMEOUT_MAX,
        )
    }

    /// Whether this broker may lead now: the controller unfenced us (heartbeat answer), or
    /// the live image says our current registration is unfenced (the heartbeat answer may
    /// lag the metadata). A persisted image alone never lets us lead (review defect 13).
    pub fn may_lead(&self, image: &MetadataImage) -> bool {
        if !self.fenced.load(Ordering::SeqCst) {
            return true;
        }
        let epoch = self.broker_epoch.load(Ordering::SeqCst);
        self.live_metadata.load(Ordering::SeqCst)
            && epoch >= 0
            && image
                .brokers
                .get(&self.id())
                .is_some_and(|b| !b.fenced && b.epoch == epoch)
    }

    /// The broker id.
    pub fn id(&self) -> BrokerId {
        self.config.node_id
    }

    /// What makes unknown users' decoy SCRAM credentials: the same on every broker of the
    /// cluster's metadata history (comparing brokers tells nothing) and never sent out.
    pub fn sasl_secret(&self) -> Vec<u8> {
        sluice_metadata::scram::decoy_secret(&self.config.cluster_id, self.image().history_id)
    }

    /// Whether `password` is `name`'s, by the current metadata image (PBKDF2 on a cache
    /// miss: a few milliseconds).
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        let image = self.image();
        let secret =
            sluice_metadata::scram::decoy_secret(&self.config.cluster_id, image.history_id);
        self.passwords
            .check(image.users.get(name), name, password, &secret)
    }

    /// The gRPC interceptor of the services clients call.
    pub fn authenticator(self: &Arc<Self>) -> sluice_proto::auth::Authenticate {
        let node = self.clone();
        sluice_proto::auth::Authenticate {
            required: !self.config.sasl_mechanisms.is_empty(),
            check: Arc::new(move |u, p| node.check_password(u, p)),
        }
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().expect("image lock").clone()
    }

    /// A receiver told whenever a new metadata image is in place.
    pub fn subscribe_images(&self) -> tokio::sync::watch::Receiver<u64> {
        self.images.subscribe()
    }

    /// A receiver told whenever `reconcile` created replicas or handed out roles.
    pub fn subscribe_reconciled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// A local replica by topic name and index.
    pub fn partition(&self, topic: &str, index: i32) -> Option<PartitionHandle> {
        let id = self.image().topic(topic)?.id;
        self.partitions
            .lock()
            .expect("partitions lock")
            .get(&TopicIdPartition::new(id, index))
            .cloned()
    }

    /// A local replica by its key.
    pub fn partition_by_key(&self, key: TopicIdPartition) -> Option<PartitionHandle> {
        self.partitions
            .lock()
            .expect("partitions lock")
            .get(&key)
            .cloned()
    }

    /// A cached lazily-connecting channel to `addr`.
    pub fn channel(&self, addr: &str) -> Channel {
        let mut map = self.channels.lock().expect("channels lock");
        if let Some(c) = map.get(addr) {
            return c.clone();
        }
        // Data-path windows: replica fetches carry up to replica.fetch.response.max.bytes.
        let c = sluice_proto::transport::data_endpoint(addr)
            .expect("host:port endpoints are valid URIs")
            .connect_lazy();
        map.insert(addr.to_string(), c.clone());
        c
    }

    /// Address of broker `id` from the image.
    pub fn broker_addr(&self, id: BrokerId) -> Option<String> {
        self.image()
            .brokers
            .get(&id)
            .map(|b| b.endpoint.to_string())
    }

    /// Calls the active controller, following NOT_CONTROLLER hints and trying every voter.
    pub async fn call_controller<T, F, Fut>(&self, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(ControllerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.config.controllers.len();
        let mut last = tonic::Status::unavailable("no controller configured");
        let start = self.active_controller.load(Ordering::Relaxed);
        let deadline = self.controller_request_timeout();
        for attempt in 0..n * 2 {
            let i = (start + attempt) % n;
            let addr = self.config.controllers[i].clone();
            match with_deadline(deadline, f(ControllerClient::new(self.channel(&addr)))).await {
                Ok(r) => {
                    self.active_controller.store(i, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) => {
                    if let Some(hint) = error_detail(&s).and_then(|d| d.leader) {
                        let want = format!("{}:{}", hint.host, hint.port);
                        if let Some(j) = self.config.controllers.iter().position(|a| *a == want) {
                            let hinted = with_deadline(
                                deadline,
                                f(ControllerClient::new(self.channel(&want))),
                            )
                            .await;
                            match hinted {
                                Ok(r) => {
                                    self.active_controller.store(j, Ordering::Relaxed);
                                    return Ok(r.into_inner());
                                }
                                // The active controller's own refusal is the answer: do not
                                // hide it behind a follower's NOT_CONTROLLER.
                                Err(s)
                                    if error_detail(&s)
                                        .is_some_and(|d| d.code() != ErrorCode::NotController) =>
                                {
                                    self.active_controller.store(j, Ordering::Relaxed);
                                    return Err(s);
                                }
                                Err(_) => {}
                            }
                        }
                    }
                    last = s;
                }
            }
        }
        Err(last)
    }

    /// Creates `topics` through the controllers (the first that answers); one result per
    /// topic, `Err((code, message))` when it was refused. `None` partitions / replication
    /// factor mean the cluster defaults (Kafka's -1).
    pub async fn create_topics(
        &self,
        topics: Vec<TopicSpec>,
        validate_only: bool,
        caller: &sluice_metadata::acl::Caller,
    ) -> Result<Vec<CreateTopicResult>, tonic::Status> {
        let req = CreateTopicsRequest {
            topics,
            validate_only,
        };
        self.relay_admin(
            req,
            caller,
            |mut c, r| async move { c.create_topics(r).await },
        )
        .await
        .map(|r| r.results)
    }

    /// Runs one Admin call on the controllers in turn, as the gRPC Admin relay does: an
    /// unreachable controller (UNAVAILABLE without detail) is skipped, any other answer is
    /// the answer (KIP-590: brokers forward admin requests). The controllers authorize
    /// `caller`.
    pub async fn relay_admin<Req, Resp, F, Fut>(
        &self,
        req: Req,
        caller: &sluice_metadata::acl::Caller,
        call: F,
    ) -> Result<Resp, tonic::Status>
    where
        Req: Clone,
        F: Fn(
            sluice_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
            tonic::Request<Req>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable("no controller reachable");
        for addr in &self.config.controllers {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(crate::service::ADMIN_RELAY_TIMEOUT);
            crate::service::on_behalf_of(self, &mut r, caller)?;
            let client = sluice_proto::v1::admin_client::AdminClient::new(self.channel(addr));
            match call(client, r).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && sluice_proto::status::error_detail(&s).is_none() =>
                {
                    last = s
                }
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    /// Deletes topics through the controller quorum (the Kafka port's DeleteTopics).
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
        caller: &sluice_metadata::acl::Caller,
    ) -> Result<Vec<sluice_proto::v1::DeleteTopicResult>, tonic::Status> {
        let req = sluice_proto::v1::DeleteTopicsRequest { names };
        self.relay_admin(
            req,
            caller,
            |mut c, r| async move { c.delete_topics(r).await },
        )
        .await
        .map(|r| r.results)
    }

    /// Auto-creation for a Metadata request (Kafka's `auto.create.topics.enable`): creates
    /// those of `names` that do not exist, are not internal (`__…`) and are wanted, with
    /// the cluster defaults. Returns the names it asked for; the caller answers them with
    /// LEADER_NOT_AVAILABLE (retriable) until their leaders are known, as Kafka does.
    /// Only topics the caller may create (Create on the cluster or the topic); the broker
    /// creates them itself.
    pub async fn auto_create(
        &self,
        names: &[String],
        access: &crate::authz::Access,
    ) -> Vec<String> {
        if !self.config.auto_create_topics {
            return Vec::new();
        }
        let image = self.image();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !n.is_empty() && !n.starts_with("__") && image.topic(n).is_none())
            .filter(|n| access.may_create(n))
            .cloned()
            .collect();
        if missing.is_empty() {
            return missing;
        }
        let specs = missing
            .iter()
            .map(|n| TopicSpec {
                name: n.clone(),
                num_partitions: -1,
                replication_factor: -1,
                configs: Default::default(),
            })
            .collect();
        let myself = sluice_metadata::acl::Caller::node(format!("User:broker-{}", self.id().get()));
        match self.create_topics(specs, false, &myself).await {
            Ok(results) => {
                for r in &results {
                    if r.error_code == 0 {
                        tracing::info!(topic = %r.name, "topic auto-created");
                    }
                }
                results
                    .into_iter()
                    .filter(|r| {
                        r.error_code == 0 || r.error_code == ErrorCode::TopicAlreadyExists as i32
                    })
                    .map(|r| r.name)
                    .collect()
            }
            Err(s) => {
                tracing::warn!(error = %s.message(), "auto-creating topics failed");
                Vec::new()
            }
        }
    }

    /// A producer id never handed out before, from our block (a new block is allocated
    /// through the quorum when it runs out, as Kafka's KIP-730 does). With an authorizer, a
    /// user's id is allocated alone and granted to its principal in the metadata log (only
    /// it may write under that id).
    pub async fn next_producer_id(
        &self,
        caller: &sluice_metadata::acl::Caller,
    ) -> Result<i64, tonic::Status> {
        let broker_epoch = || {
            let epoch = self.broker_epoch.load(Ordering::SeqCst);
            if epoch < 0 {
                return Err(sluice_proto::status::error_status(
                    sluice_proto::v1::ErrorCode::CoordinatorNotAvailable,
                    "this broker is not registered yet; retry",
                    None,
                ));
            }
            Ok(epoch)
        };
        if self.config.authorizer.is_some() && !caller.node {
            let req = sluice_proto::v1::AllocateProducerIdsRequest {
                broker_id: self.id().get(),
                broker_epoch: broker_epoch()?,
                principal: caller.principal.clone(),
            };
            let granted = self
                .call_controller(|mut c| {
                    let req = req.clone();
                    async move { c.allocate_producer_ids(req).await }
                })
                .await?;
            return Ok(granted.producer_id_start);
        }
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let req = sluice_proto::v1::AllocateProducerIdsRequest {
                broker_id: self.id().get(),
                broker_epoch: broker_epoch()?,
                principal: String::new(),
            };
            let block = self
                .call_controller(|mut c| {
                    let req = req.clone();
                    async move { c.allocate_producer_ids(req).await }
                })
                .await?;
            *ids = (
                block.producer_id_start,
                block.producer_id_start + block.producer_id_len as i64,
            );
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Registers with the quorum, then heartbeats forever (re-registering if the
    /// controller forgot us). Never returns; runs as a task owned by the process.
    pub async fn run_heartbeats(self: Arc<Self>) {
        let incarnation = format!("{:016x}", rand::random::<u64>());
        // The leader HWs the controller was last told (see BrokerHeartbeatRequest), and
        // heartbeats since everything was last sent (a new active controller knows nothing).
        let mut reported: HashMap<(sluice_metadata::TopicId, i32), (i64, i32)> = HashMap::new();
        let mut since_full = 0u32;
        loop {
            since_full += 1;
            if since_full >= FULL_HIGH_WATERMARK_REPORT_EVERY {
                since_full = 0;
                reported.clear();
            }
            if self.broker_epoch.load(Ordering::SeqCst) < 0 {
                let req = RegisterBrokerRequest {
                    broker_id: self.id().get(),
                    incarnation_id: incarnation.clone(),
                    cluster_id: self.config.cluster_id.clone(),
                    host: self.config.advertised_host.clone(),
                    port: self.config.advertised_port as i32,
                    rack: None,
                    log_dirs: vec![self.config.log_dir.display().to_string()],
                    directory_id: self.directory_id.clone(),
                    kafka_host: self
                        .config
                        .advertised_kafka
                        .as_ref()
                        .map(|(h, _)| h.clone()),
                    kafka_port: self
                        .config
                        .advertised_kafka
                        .as_ref()
                        .map(|(_, p)| i32::from(*p)),
                };
                match self
                    .call_controller(|mut c| {
                        let req = req.clone();
                        async move { c.register_broker(req).await }
                    })
                    .await
                {
                    Ok(r) => {
                        tracing::info!(
                            broker = self.id().get(),
                            epoch = r.broker_epoch,
                            "registered with the quorum"
                        );
                        self.broker_epoch.store(r.broker_epoch, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "registration failed; retrying");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
            }
            let want_shut_down = self.shutting_down.load(Ordering::SeqCst);
            // The HWs of partitions we lead that changed since the last heartbeat answered.
            let (mut led, mut sent) = (Vec::new(), Vec::new());
            for h in self.local_partitions() {
                let o = h.offsets();
                if !o.is_leader {
                    continue;
                }
                let key = (h.topic_id, h.index);
                if reported.get(&key) != Some(&(o.high_watermark, o.leader_epoch)) {
                    sent.push((key, (o.high_watermark, o.leader_epoch)));
                    led.push(sluice_proto::v1::LedHighWatermark {
                        topic_id: h.topic_id.to_string(),
                        partition: h.index,
                        high_watermark: o.high_watermark,
                        leader_epoch: o.leader_epoch,
                    });
                }
            }
            let req = BrokerHeartbeatRequest {
                broker_id: self.id().get(),
                broker_epoch: self.broker_epoch.load(Ordering::SeqCst),
                current_metadata_offset: Some(self.metadata_offset.load(Ordering::SeqCst)),
                want_fence: false,
                want_shut_down,
                directory_id: self.directory_id.clone(),
                high_watermarks: led,
            };
            match self
                .call_controller(|mut c| {
                    let req = req.clone();
                    async move { c.broker_heartbeat(req).await }
                })
                .await
            {
                Ok(r) => {
                    reported.extend(sent);
                    let was = self.fenced.swap(r.is_fenced, Ordering::SeqCst);
                    if was != r.is_fenced {
                        tracing::info!(
                            broker = self.id().get(),
                            fenced = r.is_fenced,
                            "fencing state changed"
                        );
                        // Leadership follows fencing (see `reconcile`).
                        self.reconcile();
                    }
                }
                Err(s) => {
                    let code = error_code(&s);
                    if matches!(
                        code,
                        ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered
                    ) {
                        self.broker_epoch.store(-1, Ordering::SeqCst);
                        continue;
                    }
                    tracing::debug!(error = %s.message(), "heartbeat failed");
                }
            }
            let wait = if self.fenced.load(Ordering::SeqCst) {
                Duration::from_millis(200)
            } else {
                self.config.heartbeat_interval
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Follows the metadata log from the last applied offset, applying every event and
    /// reconciling partitions. Reconnects to another controller when a stream ends. Never
    /// returns.
    pub async fn run_metadata_follower(self: Arc<Self>) {
        // Reconcile what the persisted image says before any event arrives.
        self.reconcile();
        let mut i = 0usize;
        let mut refused: Option<String> = None;
        loop {
            let addr = self.config.controllers[i % self.config.controllers.len()].clone();
            i += 1;
            let applied = self.metadata_offset.load(Ordering::SeqCst);
            let diverged = self.metadata_diverged.load(Ordering::SeqCst);
            let stream = with_deadline(
                self.controller_request_timeout(),
                ControllerClient::new(self.channel(&addr)).watch_metadata(WatchMetadataRequest {
                    from_offset: if applied == 0 || diverged {
                        0
                    } else {
                        applied + 1
                    },
                    broker_id: Some(self.id().get()),
                    cluster_id: self.config.cluster_id.clone(),
                    snapshot_first: diverged,
                }),
            )
            .await;
            let mut stream = match stream {
                Ok(s) => {
                    refused = None;
                    s.into_inner()
                }
                Err(s) => {
                    // Another cluster's quorum on a controller address: say so (once per
                    // change), apply nothing, keep asking (review defect 10).
                    if error_code(&s) == ErrorCode::InconsistentClusterId
                        && refused.as_deref() != Some(s.message())
                    {
                        tracing::error!(controller = %addr, error = %s.message(),
                            "refusing metadata from another cluster; not applied");
                        refused = Some(s.message().to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut ready: Option<MetadataEvent> = None;
            let mut burst = 0usize;
            loop {
                let event = match ready.take() {
                    Some(ev) => ev,
                    None => {
                        let msg =
                            tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
                        match msg {
                            Ok(Ok(Some(ev))) => ev,
                            _ => break,
                        }
                    }
                };
                match self.apply_event(event) {
                    Ok(()) => {
                        // Apply what is already here before persisting and reconciling.
                        burst += 1;
                        if burst < METADATA_BURST_MAX {
                            use futures::FutureExt;
                            match stream.message().now_or_never() {
                                Some(Ok(Some(ev))) => {
                                    ready = Some(ev);
                                    continue;
                                }
                                Some(_) => break,
                                None => {}
                            }
                        }
                        burst = 0;
                        if let Err(e) = self.settle_applied() {
                            tracing::error!(error = %e, "could not apply metadata; resubscribing");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    }
                    Err(ApplyError::Diverged(why)) => {
                        // Never mix two histories: stop here and start over from this
                        // controller's full image (issue 15).
                        tracing::error!(controller = %addr, %why,
                            "the controller's metadata history does not continue the one this broker applied; \
                             not applied; replacing the image with the controller's");
                        metrics::counter!("sluice_metadata_history_divergences_total").increment(1);
                        self.metadata_diverged.store(true, Ordering::SeqCst);
                        i -= 1;
                        break;
                    }
                    Err(ApplyError::Other(e)) => {
                        tracing::error!(error = %e, "could not apply metadata; resubscribing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            // Whatever was applied before the stream ended takes effect now.
            if let Err(e) = self.settle_applied() {
                tracing::error!(error = %e, "could not persist the metadata image");
            }
        }
    }

    fn apply_event(&self, ev: MetadataEvent) -> Result<(), ApplyError> {
        let diverged = self.metadata_diverged.load(Ordering::SeqCst);
        if !diverged {
            check_metadata_source(&self.config.cluster_id, &ev, self.image().offset)?;
        } else if !ev.cluster_id.is_empty() && ev.cluster_id != self.config.cluster_id {
            check_metadata_source(&self.config.cluster_id, &ev, 0)?;
        }
        let ours = *self.metadata_position.lock().expect("position lock");
        let theirs = match &ev.event {
            Some(Event::Records(r)) => Some(HistoryPosition {
                history_id: ev.history_id,
                offset: r.prev_offset,
                term: r.prev_term,
            }),
            Some(Event::Heartbeat(_)) => Some(HistoryPosition {
                history_id: ev.history_id,
                offset: ev.committed_offset,
                term: ev.committed_term,
            }),
            Some(Event::Snapshot(_)) | None => None,
        };
        if diverged && theirs.is_some() {
            // Waiting for the image that replaces ours; apply nothing else.
            return Ok(());
        }
        if let Some(why) = theirs.and_then(|t| history_diverges(ours, t)) {
            return Err(ApplyError::Diverged(why));
        }
        let mut image = (*self.image()).clone();
        let mut changed = false;
        let mut scope = Scope::default();
        let mut journal = Vec::new();
        let mut replaced = false;
        let mut applied = self.metadata_offset.load(Ordering::SeqCst);
        let mut position = ours;
        match ev.event {
            Some(Event::Snapshot(s)) => {
                image = MetadataImage::decode(&s.image)?;
                applied = s.offset;
                position = image.position();
                changed = true;
                replaced = true;
                scope.all = true;
                if diverged {
                    tracing::warn!(from = %ours, to = %position,
                        "replaced the metadata image with the controller's");
                    self.metadata_diverged.store(false, Ordering::SeqCst);
                }
            }
            Some(Event::Records(r)) => {
                for e in r.entries {
                    if e.offset <= image.offset {
                        continue;
                    }
                    let entry = crate::image_store::JournalEntry {
                        offset: e.offset,
                        term: e.term,
                        record: e.record,
                    };
                    let (next, delta) = crate::image_store::apply_entry(&image, &entry)?;
                    image = next;
                    scope.add(&delta);
                    journal.push(entry);
                    applied = applied.max(e.offset);
                    position = image.position();
                    changed = true;
                }
            }
            // The controller had nothing more to send: everything up to its committed
            // offset is applied (the rest were Raft entries without records).
            Some(Event::Heartbeat(_)) if ev.committed_offset > applied => {
                applied = ev.committed_offset;
                position = HistoryPosition {
                    history_id: image.history_id,
                    offset: ev.committed_offset,
                    term: ev.committed_term,
                };
            }
            Some(Event::Heartbeat(_)) => {}
            None => {}
        }
        if changed {
            *self.image.write().expect("image lock") = Arc::new(image);
            self.images.send_modify(|g| *g += 1);
            {
                let mut pending = self.journal_pending.lock().expect("journal lock");
                match (&mut *pending, replaced) {
                    (_, true) => *pending = None,
                    (Some(p), false) => p.extend(journal),
                    (None, false) => {}
                }
            }
            self.image_unsettled.store(true, Ordering::SeqCst);
        }
        self.metadata_offset.store(applied, Ordering::SeqCst);
        *self.metadata_position.lock().expect("position lock") = position;
        if !self.live_metadata.swap(true, Ordering::SeqCst) {
            // The image is live now: fencing state in it may let us lead (see `may_lead`).
            scope.all = true;
            self.image_unsettled.store(true, Ordering::SeqCst);
        }
        if !scope.is_empty() {
            let mut pending = self.pending_scope.lock().expect("scope lock");
            pending.all |= scope.all;
            if !pending.all {
                pending.topics.extend(scope.topics);
            }
        }
        Ok(())
    }

    /// After a burst of applied events: persists the image and reconciles replicas once,
    /// rather than once per event (a broker catching up on thousands of ISR changes pays for
    /// one pass, not thousands).
    fn settle_applied(&self) -> Result<(), String> {
        if !self.image_unsettled.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let persisted = self.persist_image();
        let scope = std::mem::take(&mut *self.pending_scope.lock().expect("scope lock"));
        self.reconcile_scope(scope);
        persisted
    }

    /// Persists what was applied since the last call: the new entries go to the journal,
    /// or, when a snapshot replaced the image or the journal outgrew it, the whole image is
    /// rewritten. A failure leaves the next call to rewrite the image.
    fn persist_image(&self) -> Result<(), String> {
        let image = self.image();
        let pending = self
            .journal_pending
            .lock()
            .expect("journal lock")
            .replace(Vec::new());
        let mut store = self.image_store.lock().expect("image store lock");
        let result = tokio::task::block_in_place(|| match pending {
            Some(entries) if !store.should_compact() => store.append(&entries),
            _ => store.rewrite(&image),
        });
        if result.is_err() {
            *self.journal_pending.lock().expect("journal lock") = None;
        }
        result.map_err(|e| format!("persisting the metadata image: {e}"))
    }

    /// Makes local replicas match the image: opens logs for new replicas, hands every
    /// replica its role, starts or stops follower fetchers, sets aside replicas that are
    /// gone. Calls run one at a time (`reconcile_lock`); the `partitions` map is locked only
    /// for lookups and inserts, never across a log's recovery.
    pub fn reconcile(&self) {
        self.reconcile_scope(Scope::everything());
    }

    /// [`reconcile`](Self::reconcile) of the replicas of the topics in `scope` only (what a
    /// burst of metadata changed): O(change), not O(cluster).
    fn reconcile_scope(&self, mut scope: Scope) {
        let mut state = self.reconcile_lock.lock().expect("reconcile lock");
        let image = self.image();
        let me = self.id();
        // Until the controller unfences us (we registered and caught up with the metadata
        // log), leadership in the image is stale (a persisted image, or one the controller
        // has since changed): we lead nothing (review defect 13).
        let fenced = !self.may_lead(&image);
        if state.fenced != Some(fenced) {
            scope.all = true;
            state.fenced = Some(fenced);
        }
        if scope.is_empty() {
            return;
        }
        let topics: Vec<&Arc<sluice_metadata::TopicImage>> = if scope.all {
            image.topics.values().collect()
        } else {
            scope
                .topics
                .iter()
                .filter_map(|id| image.topics.get(id))
                .collect()
        };
        let defaults = image.topic_defaults();
        let mut wanted = HashMap::new();
        for t in topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if let Some(role) = role_in_image(me, fenced, p) {
                    wanted.insert(TopicIdPartition::new(t.id, i as i32), (t.clone(), role));
                }
            }
        }
        let (gone, existing): (Vec<PartitionKey>, HashMap<PartitionKey, PartitionHandle>) = {
            let parts = self.partitions.lock().expect("partitions lock");
            let in_scope = || parts.iter().filter(|(k, _)| scope.covers(k.topic_id));
            (
                in_scope()
                    .filter(|(k, _)| !wanted.contains_key(*k))
                    .map(|(k, _)| *k)
                    .collect(),
                in_scope().map(|(k, p)| (*k, p.clone())).collect(),
            )
        };
        for key in gone {
            state.roles.remove(&key);
            self.remove_replica(key, &mut state.opening);
        }
        if scope.all {
            state.roles.retain(|k, _| existing.contains_key(k));
        }
        // Replicas we already have: role changes only. New ones (not already opening) are
        // queued to open in the background, each installed as soon as its own log is open
        // with the role the image gives it then: a partition whose unflushed tail needs a
        // long scan delays only itself, and reconciles (the metadata follower's) never wait
        // for a log's recovery.
        let mut to_open = Vec::new();
        for (key, (topic, role)) in wanted {
            let Some(part) = existing.get(&key) else {
                if state.opening.insert(key) {
                    to_open.push((key, topic, role));
                }
                continue;
            };
            let applied = &mut state.roles;
            let unchanged = applied.get(&key).is_some_and(|(r, t, d)| {
                *r == role && (Arc::ptr_eq(t, &topic) || t.config == topic.config) && *d == defaults
            });
            if unchanged {
                continue;
            }
            self.apply_role(part, role.clone(), log_config(&topic.config, &defaults));
            applied.insert(key, (role, topic, defaults.clone()));
        }
        drop(state);
        for (key, topic, role) in to_open {
            self.open_in_background(key, &topic, &role);
        }
        self.reconciled.send_modify(|g| *g += 1);
    }

    /// Queues the log of new replica `key` to open on a blocking thread (at most
    /// [`LOG_OPEN_THREADS`] at once, in the order asked), then installs it.
    fn open_in_background(
        &self,
        key: PartitionKey,
        topic: &Arc<sluice_metadata::TopicImage>,
        role: &Role,
    ) {
        let dir = self.replica_dir(&topic.name, key);
        let config = log_config(&topic.config, &self.image().topic_defaults());
        let epoch = match role {
            Role::Leader { leader_epoch, .. } => Some(*leader_epoch),
            Role::Follower { .. } => None,
        };
        let Some(me) = self.self_arc() else {
            tracing::error!(dir = %dir.display(), "no broker handle to open a partition log with");
            self.forget_opening(key);
            return;
        };
        let permits = self.log_openers.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let _ = tokio::task::spawn_blocking(move || {
                if me.closing.load(Ordering::SeqCst) {
                    me.forget_opening(key);
                    return;
                }
                let opened = open_log(&dir, &config, epoch);
                me.log_opened(key, &dir, opened);
            })
            .await;
        });
    }

    /// Where replica `key` of `topic` keeps its log: `<log.dirs>/<topic>-<partition>-<topic id>`.
    fn replica_dir(&self, topic: &str, key: PartitionKey) -> PathBuf {
        self.config
            .log_dir
            .join(format!("{topic}-{}-{}", key.partition, key.topic_id))
    }

    /// After its directory was set aside, replica `key` is no longer opening; if the image
    /// gave it back meanwhile, it opens afresh. Blocking (a short lock).
    fn reopen_if_given_back(&self, key: PartitionKey) {
        let again = {
            let mut state = self.reconcile_lock.lock().expect("reconcile lock");
            state.opening.remove(&key);
            let again = self.role_now(key);
            if again.is_some() {
                state.opening.insert(key);
            }
            again
        };
        if let Some((topic, role)) = again {
            tracing::info!(partition = %format!("{}-{}", topic.name, key.partition),
                "replica given back while it was removed; opening it again");
            self.open_in_background(key, &topic, &role);
        }
    }

    /// Replica `key` is no longer opening (its open failed or was skipped).
    fn forget_opening(&self, key: PartitionKey) {
        self.reconcile_lock
            .lock()
            .expect("reconcile lock")
            .opening
            .remove(&key);
    }

    /// The role the current image gives us for replica `key` (with its topic), if any.
    fn role_now(&self, key: PartitionKey) -> Option<(Arc<sluice_metadata::TopicImage>, Role)> {
        let image = self.image();
        let fenced = !self.may_lead(&image);
        let t = image.topics.get(&key.topic_id)?;
        let p = t.partitions.get(usize::try_from(key.partition).ok()?)?;
        Some((t.clone(), role_in_image(self.id(), fenced, p)?))
    }

    /// A new replica's log has opened (or failed to): installs it with the role the image
    /// gives it now, or, if the image no longer gives us that replica, closes it and sets
    /// its directory aside as a removal does. A failure leaves it to the next reconcile
    /// that covers its topic. Blocking.
    fn log_opened(
        &self,
        key: PartitionKey,
        dir: &std::path::Path,
        opened: Result<Log, sluice_storage::StorageError>,
    ) {
        let mut log = match opened {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open partition log");
                self.forget_opening(key);
                return;
            }
        };
        let close = |log: &mut Log, what: &str| {
            if let Err(e) = log.shutdown() {
                tracing::warn!(dir = %dir.display(), error = %e, "could not close {what}");
            }
        };
        if self.closing.load(Ordering::SeqCst) {
            close(&mut log, "a partition log opened during shutdown");
            return;
        }
        {
            let mut state = self.reconcile_lock.lock().expect("reconcile lock");
            if let Some((topic, role)) = self.role_now(key) {
                state.opening.remove(&key);
                self.install_replica(key, &topic, &role, log);
                let defaults = self.image().topic_defaults();
                state.roles.insert(key, (role, topic, defaults));
                return;
            }
        }
        // Deleted (or moved away) while it opened: closed and set aside as a removal is. The
        // key stays in `opening` meanwhile, so a reconcile that gives the replica back does
        // not open the directory while it is being renamed; it is opened again afterwards.
        close(&mut log, "a removed replica's log");
        drop(log);
        set_aside(dir);
        self.reopen_if_given_back(key);
    }

    /// Starts the actor of a new replica whose log is open, hands it its first role and
    /// makes it visible to requests.
    fn install_replica(
        &self,
        key: PartitionKey,
        topic: &Arc<sluice_metadata::TopicImage>,
        role: &Role,
        log: Log,
    ) {
        let config = log_config(&topic.config, &self.image().topic_defaults());
        let leo = log.log_end_offset();
        let hw = self.checkpointed_high_watermark(&topic.name, key.partition);
        let replica = ReplicaState::new(self.id(), role.clone(), hw, leo.get());
        if let Role::Leader { leader_epoch, .. } = role {
            tracing::info!(partition = %format!("{}-{}", topic.name, key.partition), leader_epoch, "became leader");
        }
        let (p, task) = PartitionHandle::spawn(
            topic.name.clone(),
            key.topic_id,
            key.partition,
            log,
            replica,
            config.clone(),
        );
        // The first role of a new replica is applied by its actor at start (the epoch must
        // be in the leader-epoch checkpoint before any append).
        p.set_role(role.clone(), config.clone());
        self.actors.lock().expect("actors lock").insert(key, task);
        self.partitions
            .lock()
            .expect("partitions lock")
            .insert(key, p.clone());
        self.reconciled.send_modify(|g| *g += 1);
        tracing::info!(partition = %p.name(), ?role, "replica created");
        self.apply_role(&p, role.clone(), config);
    }

    /// Hands `part` its role and adds it to (or removes it from) the fetch session with
    /// its leader.
    fn apply_role(&self, part: &PartitionHandle, role: Role, config: LogConfig) {
        let key = TopicIdPartition::new(part.topic_id, part.index);
        part.set_role(role.clone(), config);
        match role {
            Role::Follower {
                leader,
                leader_epoch,
            } if leader != NO_LEADER && leader != self.id() => {
                if let Some(me) = self.self_arc() {
                    self.replica_fetchers
                        .follow(&me, part, leader, leader_epoch);
                }
            }
            _ => self.replica_fetchers.unfollow(key),
        }
    }

    /// A replica the image no longer gives us: stop its fetcher, close its log, and set its
    /// directory aside to be deleted after [`LOG_DELETE_DELAY`].
    ///
    /// The key is held in `opening` until the directory is renamed, so a reconcile that
    /// gives the replica back meanwhile does not open the directory being set aside; it is
    /// opened again once the rename is done.
    fn remove_replica(
        &self,
        key: PartitionKey,
        opening: &mut std::collections::HashSet<PartitionKey>,
    ) {
        self.replica_fetchers.unfollow(key);
        let Some(p) = self
            .partitions
            .lock()
            .expect("partitions lock")
            .remove(&key)
        else {
            return;
        };
        let actor = self.actors.lock().expect("actors lock").remove(&key);
        opening.insert(key);
        let me = self.self_arc();
        let name = p.name();
        let dir = self.replica_dir(&p.topic, key);
        // Kafka's way: rename now, delete after file.delete.delay.ms, so a replica dropped by
        // mistake can still be recovered by hand for a while. The actor closes the log first.
        // Fire and forget: the rename waits for the actor to close its log; nobody needs
        // the outcome beyond the log line.
        tokio::spawn(async move {
            if let Err(e) = p.close().await {
                tracing::warn!(partition = %name, error = %e, "could not close a removed replica's log");
            }
            drop(p);
            if let Some(actor) = actor {
                let _ = actor.await;
            }
            let _ = tokio::task::spawn_blocking(move || {
                set_aside(&dir);
                if let Some(me) = me {
                    me.reopen_if_given_back(key);
                }
            })
            .await;
        });
    }

    fn self_arc(&self) -> Option<Arc<BrokerNode>> {
        SELF.get().and_then(|w| w.upgrade())
    }

    /// Registers the process-wide handle used by background tasks.
    pub fn install(self: &Arc<Self>) {
        let _ = SELF.set(Arc::downgrade(self));
    }

    /// Leader duties every half second: ask each led partition for the next ISR change (a
    /// shrink of followers that fell behind for `replica.lag.time.max.ms`, or an expansion),
    /// send it to the controller, and hand the answer back. Never returns.
    pub async fn run_isr_maintenance(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.fenced.load(Ordering::SeqCst) {
                continue;
            }
            // Only leaders with something to decide: settled ones (every replica in the
            // ISR and at our log end) cost nothing here.
            let unsettled: Vec<PartitionHandle> = self
                .partitions
                .lock()
                .expect("partitions lock")
                .values()
                .filter(|p| {
                    let o = p.offsets();
                    o.is_leader && !o.isr_settled
                })
                .cloned()
                .collect();
            let mut proposals = Vec::new();
            for part in unsettled {
                if let Some(proposal) = part
                    .propose_isr(Instant::now(), self.config.replica_lag_time_max)
                    .await
                {
                    proposals.push((part, proposal));
                }
            }
            // Every proposal of this tick in a few AlterPartitions (one Raft entry each),
            // not one controller round trip per partition.
            while !proposals.is_empty() {
                let rest = proposals.split_off(proposals.len().min(ALTER_PARTITIONS_BATCH_MAX));
                let batch = std::mem::replace(&mut proposals, rest);
                let outcomes = self.send_alter_partitions(&batch).await;
                for ((part, proposal), outcome) in batch.into_iter().zip(outcomes) {
                    part.alter_partition_answer(proposal, outcome).await;
                }
            }
        }
    }

    /// Sends proposals in one AlterPartitions and classifies each answer: committed,
    /// refused for good, or unknown (no answer: it may have committed, so the proposal
    /// stays pending and is sent again).
    async fn send_alter_partitions(
        &self,
        batch: &[(PartitionHandle, AlterIsr)],
    ) -> Vec<AlterOutcome> {
        let req = AlterPartitionsRequest {
            broker_id: self.id().get(),
            broker_epoch: self.broker_epoch.load(Ordering::SeqCst),
            partitions: batch
                .iter()
                .map(|(part, proposal)| AlterPartitionItem {
                    topic_id: part.topic_id.to_string(),
                    topic: part.topic.clone(),
                    partition: part.index,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: BrokerId::to_wire(&proposal.isr),
                })
                .collect(),
        };
        let r = self
            .call_controller(|mut c| {
                let req = req.clone();
                async move { c.alter_partitions(req).await }
            })
            .await;
        match r {
            Ok(resp) if resp.results.len() == batch.len() => batch
                .iter()
                .zip(resp.results)
                .map(|((part, _), r)| {
                    let code = ErrorCode::try_from(r.error_code).unwrap_or(ErrorCode::UnknownServerError);
                    match (code, r.state) {
                        (ErrorCode::None, Some(state)) => {
                            tracing::info!(partition = %part.name(), isr = ?state.isr,
                                partition_epoch = state.partition_epoch, "ISR change committed");
                            AlterOutcome::Committed {
                                leader_epoch: state.leader_epoch,
                                partition_epoch: state.partition_epoch,
                                isr: BrokerId::from_wire(&state.isr),
                            }
                        }
                        (code, _) if !sluice_proto::status::is_retriable(code) || is_definite_refusal(code) => {
                            tracing::warn!(partition = %part.name(), error = %r.error_message, "ISR change refused");
                            AlterOutcome::Refused
                        }
                        _ => {
                            tracing::warn!(partition = %part.name(), error = %r.error_message,
                                "ISR change unanswered; it stays pending and is sent again");
                            AlterOutcome::Unknown
                        }
                    }
                })
                .collect(),
            Ok(resp) => {
                tracing::warn!(sent = batch.len(), answered = resp.results.len(),
                    "AlterPartitions answered a different number of proposals; they stay pending");
                vec![AlterOutcome::Unknown; batch.len()]
            }
            Err(e)
                if error_detail(&e)
                    .is_some_and(|d| !d.retriable || is_definite_refusal(d.code())) =>
            {
                tracing::warn!(partitions = batch.len(), error = %e.message(), "ISR changes refused");
                vec![AlterOutcome::Refused; batch.len()]
            }
            Err(e) => {
                tracing::warn!(partitions = batch.len(), error = %e.message(),
                    "ISR changes unanswered; they stay pending and are sent again");
                vec![AlterOutcome::Unknown; batch.len()]
            }
        }
    }

    /// Publishes the gauges Kafka operators watch, from the image and the local replicas,
    /// every second. Runs forever.
    pub async fn run_gauges(self: Arc<Self>) {
        metrics::describe_gauge!(
            "sluice_under_replicated_partitions",
            "partitions this broker leads whose ISR is smaller than the replica set (Kafka: UnderReplicatedPartitions)"
        );
        metrics::describe_gauge!(
            "sluice_offline_partitions",
            "partitions of the cluster without a leader (Kafka: OfflinePartitionsCount)"
        );
        metrics::describe_counter!(
            "sluice_isr_shrinks_total",
            "ISR shrinks committed (Kafka: IsrShrinksPerSec)"
        );
        metrics::describe_counter!(
            "sluice_isr_expands_total",
            "ISR expansions committed (Kafka: IsrExpandsPerSec)"
        );
        metrics::describe_counter!(
            "sluice_kafka_fetch_sendfile_bytes_total",
            "record bytes Kafka fetches sent from the page cache with sendfile, never copied through the broker"
        );
        metrics::describe_gauge!(
            "sluice_segment_files_open",
            "segment files this broker has open (at most log.segment.open.files.max)"
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics::gauge!("sluice_segment_files_open")
                .set(sluice_storage::files::open_files() as f64);
            let image = self.image();
            let me = self.id();
            let (mut under, mut under_min, mut offline, mut leaders, mut replicas) =
                (0, 0, 0, 0, 0);
            for t in image.topics.values() {
                let min_isr = self.min_insync(&t.name);
                for p in &t.partitions {
                    if p.leader == sluice_metadata::NO_LEADER {
                        offline += 1;
                    }
                    if p.replicas.contains(&me) {
                        replicas += 1;
                    }
                    if p.leader == me {
                        leaders += 1;
                        if p.isr.len() < p.replicas.len() {
                            under += 1;
                        }
                        if p.isr.len() < min_isr {
                            under_min += 1;
                        }
                    }
                }
            }
            metrics::gauge!("sluice_under_replicated_partitions").set(under as f64);
            metrics::gauge!("sluice_under_min_isr_partitions").set(under_min as f64);
            metrics::gauge!("sluice_offline_partitions").set(offline as f64);
            metrics::gauge!("sluice_leader_partitions").set(leaders as f64);
            metrics::gauge!("sluice_partitions").set(replicas as f64);
            metrics::gauge!("sluice_broker_fenced").set(if self.fenced.load(Ordering::SeqCst) {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("sluice_metadata_offset")
                .set(self.metadata_offset.load(Ordering::SeqCst) as f64);
        }
    }

    /// Every local replica (a snapshot of the map; the lock is not held afterwards).
    pub fn local_partitions(&self) -> Vec<PartitionHandle> {
        self.partitions
            .lock()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect()
    }

    /// Applies `retention.ms` / `retention.bytes` (only below the HW) and `flush.ms` to
    /// every local replica each `log.retention.check.interval.ms`. Runs forever.
    pub async fn run_retention(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.retention_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let dir = self.config.log_dir.clone();
            match tokio::task::spawn_blocking(move || delete_set_aside_logs(&dir, LOG_DELETE_DELAY))
                .await
            {
                Ok(Ok(n)) if n > 0 => tracing::info!(logs = n, "deleted set-aside replica logs"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not delete set-aside logs"),
                Err(e) => tracing::warn!(error = %e, "set-aside log deletion task failed"),
            }
            for p in self.local_partitions() {
                if let Err(e) = p.retention().await {
                    tracing::warn!(partition = %p.name(), error = %e, "retention or flush failed");
                }
            }
        }
    }

    /// Flushes every local log and marks it cleanly shut down (process exit), after a last
    /// HW checkpoint.
    pub async fn close_logs(&self) {
        // Logs still opening finish (and are closed cleanly); queued ones are skipped.
        self.closing.store(true, Ordering::SeqCst);
        let _all = self.log_openers.acquire_many(LOG_OPEN_THREADS as u32).await;
        self.checkpoint_high_watermarks(None).await;
        for p in self.local_partitions() {
            if let Err(e) = p.close().await {
                tracing::warn!(partition = %p.name(), error = %e, "could not close the log cleanly");
            }
        }
    }

    /// `min.insync.replicas` of a topic.
    pub fn min_insync(&self, topic: &str) -> usize {
        let image = self.image();
        image
            .topic(topic)
            .map_or(1, |t| image.topic_config(t).min_insync_replicas)
    }
}

/// Longest deadline of one broker → controller request (heartbeat, registration,
/// AlterPartition, producer ids): a frozen controller costs this much, then the next voter
/// is tried. The deadline is three heartbeat intervals within [0.5 s, 2 s]: well inside
/// `broker.session.timeout.ms` (Kafka's default 9 s), so a broker reaches the new active
/// controller before its session there expires.
pub const CONTROLLER_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// Shortest deadline of one broker → controller request.
pub const CONTROLLER_REQUEST_TIMEOUT_MIN: Duration = Duration::from_millis(500);

/// Runs one controller call with a deadline; a timeout is an UNAVAILABLE status without
/// detail (a transport failure: the outcome is unknown).
async fn with_deadline<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::unavailable(format!(
            "no answer from the controller within {} ms",
            deadline.as_millis()
        ))),
    }
}

/// Refuses metadata that would make this broker drop data it must keep (review defect 10):
/// events of another cluster, and a snapshot older than the image already applied (the
/// quorum lost committed metadata: a wiped or reset controller set). The broker keeps its
/// image and keeps resubscribing, loudly, until an operator sorts it out.
fn check_metadata_source(cluster_id: &str, ev: &MetadataEvent, applied: u64) -> Result<(), String> {
    if !ev.cluster_id.is_empty() && ev.cluster_id != cluster_id {
        return Err(format!(
            "metadata from cluster {:?}, but this broker belongs to {cluster_id:?}; not applied",
            ev.cluster_id
        ));
    }
    if let Some(Event::Snapshot(s)) = &ev.event {
        if s.offset < applied {
            return Err(format!(
                "the controllers sent a snapshot at offset {} but this broker already applied \
                 offset {applied}: the quorum lost committed metadata; not applied",
                s.offset
            ));
        }
    }
    Ok(())
}

/// Why a metadata event was not applied.
#[derive(Debug)]
enum ApplyError {
    /// The controller's history does not continue the one applied (the message names both).
    Diverged(String),
    /// Anything else (undecodable, another cluster, an older snapshot, a full disk).
    Other(String),
}

impl From<String> for ApplyError {
    fn from(e: String) -> Self {
        ApplyError::Other(e)
    }
}

/// Errors after which the controller certainly did not apply an AlterPartition (Kafka's
/// `Partition.handleAlterPartitionError` resets the pending state on these).
fn is_definite_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidUpdateVersion
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::InvalidRequest
            | ErrorCode::IneligibleReplica
            | ErrorCode::StaleBrokerEpoch
    )
}

static SELF: std::sync::OnceLock<std::sync::Weak<BrokerNode>> = std::sync::OnceLock::new();

/// The storage settings of a topic from its config overrides over the cluster-wide dynamic
/// defaults (`MetadataImage::topic_defaults`), parsed once, typed.
pub fn log_config(
    overrides: &std::collections::BTreeMap<String, String>,
    defaults: &std::collections::BTreeMap<String, String>,
) -> LogConfig {
    let c = TopicConfig::parse_with_defaults(overrides, defaults);
    LogConfig {
        segment_bytes: c.segment_bytes as u64,
        segment_ms: c.segment_ms,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        index_interval_bytes: c.index_interval_bytes as u64,
        max_message_bytes: c.max_message_bytes as usize,
        flush_interval_messages: c.flush_messages as u64,
        flush_interval_ms: c.flush_ms,
        compression: c.compression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_scope_covers_what_a_delta_touched_and_broker_changes_widen_it() {
        let t = |b: u8| sluice_metadata::TopicId([b; 16]);
        let mut scope = Scope::default();
        assert!(scope.is_empty());
        let mut delta = sluice_metadata::MetadataDelta::default();
        delta.changed_partitions.insert((t(1), 0));
        delta.created_topics.insert(t(2));
        delta.changed_configs.insert(t(3));
        scope.add(&delta);
        assert!(!scope.is_empty() && !scope.all);
        assert!([1, 2, 3].iter().all(|b| scope.covers(t(*b))));
        assert!(!scope.covers(t(4)));
        let mut fenced = sluice_metadata::MetadataDelta::default();
        fenced.changed_brokers.insert(BrokerId(2));
        scope.add(&fenced);
        assert!(scope.all && scope.covers(t(4)));
    }

    #[test]
    fn hw_checkpoint_round_trips_in_kafkas_format() {
        let hws = vec![("orders".to_string(), 0, 42), ("orders".to_string(), 1, 7)];
        let text = render_hw_checkpoint(&hws);
        assert_eq!(text, "0\n2\norders 0 42\norders 1 7\n");
        let back = parse_hw_checkpoint(&text).unwrap();
        assert_eq!(back.get(&TopicPartition::new("orders", 0)), Some(&42));
        assert_eq!(back.get(&TopicPartition::new("orders", 1)), Some(&7));
    }

    #[test]
    fn a_damaged_hw_checkpoint_is_an_error_naming_the_problem() {
        let cases = [
            ("1\n0\n", "version"),
            ("0\nx\n", "count"),
            ("0\n1\norders 0\n", "line 3"),
            ("0\n1\norders zero 4\n", "partition"),
            ("0\n2\norders 0 4\n", "count says 2"),
        ];
        for (text, want) in cases {
            let e = parse_hw_checkpoint(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}

#[cfg(test)]
mod set_aside_tests {
    use super::*;

    #[test]
    fn set_aside_logs_are_deleted_only_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let old = dir
            .path()
            .join(format!("t-0-abc.{}{DELETED_SUFFIX}", now - 120_000));
        let new = dir.path().join(format!("t-1-abc.{}{DELETED_SUFFIX}", now));
        let live = dir.path().join("t-2-abc");
        for d in [&old, &new, &live] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("00000000000000000000.log"), b"x").unwrap();
        }
        assert_eq!(
            delete_set_aside_logs(dir.path(), LOG_DELETE_DELAY).unwrap(),
            1
        );
        assert!(!old.exists());
        assert!(new.exists(), "within the delay: kept");
        assert!(live.exists(), "a live replica is never touched");
    }
}
