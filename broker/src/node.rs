//! A broker process: registration and heartbeats with the active controller, the metadata
//! follower, partition roles, follower fetchers and ISR maintenance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_metadata::config::effective;
use sluice_metadata::records::RecordBatch as MetaBatch;
use sluice_metadata::{BrokerId, MetadataImage, TopicId, NO_LEADER};
use sluice_proto::status::{error_code, error_detail};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::controller_client::ControllerClient;
use sluice_proto::v1::metadata_event::Event;
use sluice_proto::v1::*;
use sluice_storage::{Log, LogConfig};
use tonic::transport::{Channel, Endpoint};

use crate::partition::{FollowerState, Partition, Role};

/// Settings of one broker (Kafka key names in the docs).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: BrokerId,
    /// `listeners`: where Produce/Fetch are served.
    pub listen: SocketAddr,
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
    /// Consumer group coordinator settings.
    pub groups: crate::group::GroupSettings,
    /// `log.retention.check.interval.ms`: how often retention and `flush.ms` run.
    pub retention_check_interval: Duration,
}

/// A running broker.
pub struct BrokerNode {
    /// Settings.
    pub config: BrokerConfig,
    /// The latest metadata image (std lock: swapped, never held across `.await`).
    image: RwLock<Arc<MetadataImage>>,
    /// Local replicas (std lock: map lookups only).
    partitions: Mutex<HashMap<(TopicId, i32), Arc<Partition>>>,
    /// Follower fetch tasks by partition.
    fetchers: Mutex<HashMap<(TopicId, i32), tokio::task::JoinHandle<()>>>,
    /// Our broker epoch (-1 = not registered).
    pub broker_epoch: AtomicI64,
    /// Whether the controller currently fences us.
    pub fenced: AtomicBool,
    /// Index into `controllers` of the last controller that answered as active.
    active_controller: AtomicUsize,
    /// Last metadata offset applied.
    pub metadata_offset: AtomicU64,
    /// Set when a controlled shutdown has been granted.
    pub shutting_down: AtomicBool,
    channels: Mutex<HashMap<String, Channel>>,
    /// The unused part `[next, end)` of the producer-id block the controller gave us.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

fn image_file(dir: &std::path::Path) -> PathBuf {
    dir.join("__metadata_image")
}

impl BrokerNode {
    /// Loads the last persisted image (if any) and opens nothing else yet: partitions open
    /// when the image says this broker hosts them.
    pub fn new(config: BrokerConfig) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| format!("creating {}: {e}", config.log_dir.display()))?;
        let image = match std::fs::read(image_file(&config.log_dir)) {
            Ok(bytes) => MetadataImage::decode(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataImage::default(),
            Err(e) => return Err(format!("reading the persisted metadata image: {e}")),
        };
        let offset = image.offset;
        let node = Arc::new(BrokerNode {
            config,
            image: RwLock::new(Arc::new(image)),
            partitions: Mutex::new(HashMap::new()),
            fetchers: Mutex::new(HashMap::new()),
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            active_controller: AtomicUsize::new(0),
            metadata_offset: AtomicU64::new(offset),
            shutting_down: AtomicBool::new(false),
            channels: Mutex::new(HashMap::new()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        });
        Ok(node)
    }

    /// The broker id.
    pub fn id(&self) -> BrokerId {
        self.config.node_id
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().expect("image lock").clone()
    }

    /// A local replica by topic name and index.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let id = self.image().topic(topic)?.id;
        self.partitions
            .lock()
            .expect("partitions lock")
            .get(&(id, index))
            .cloned()
    }

    /// A cached lazily-connecting channel to `addr`.
    pub fn channel(&self, addr: &str) -> Channel {
        let mut map = self.channels.lock().expect("channels lock");
        if let Some(c) = map.get(addr) {
            return c.clone();
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .expect("host:port endpoints are valid URIs")
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
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
        for attempt in 0..n * 2 {
            let i = (start + attempt) % n;
            let addr = self.config.controllers[i].clone();
            match f(ControllerClient::new(self.channel(&addr))).await {
                Ok(r) => {
                    self.active_controller.store(i, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) => {
                    if let Some(hint) = error_detail(&s).and_then(|d| d.leader) {
                        let want = format!("{}:{}", hint.host, hint.port);
                        if let Some(j) = self.config.controllers.iter().position(|a| *a == want) {
                            if let Ok(r) = f(ControllerClient::new(self.channel(&want))).await {
                                self.active_controller.store(j, Ordering::Relaxed);
                                return Ok(r.into_inner());
                            }
                        }
                    }
                    last = s;
                }
            }
        }
        Err(last)
    }

    /// A producer id never handed out before, from our block (a new block is allocated
    /// through the quorum when it runs out, as Kafka's KIP-730 does).
    pub async fn next_producer_id(&self) -> Result<i64, tonic::Status> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let broker_epoch = self.broker_epoch.load(Ordering::SeqCst);
            if broker_epoch < 0 {
                return Err(sluice_proto::status::error_status(
                    sluice_proto::v1::ErrorCode::CoordinatorNotAvailable,
                    "this broker is not registered yet; retry",
                    None,
                ));
            }
            let req = sluice_proto::v1::AllocateProducerIdsRequest {
                broker_id: self.id(),
                broker_epoch,
            };
            let block = self
                .call_controller(|mut c| async move { c.allocate_producer_ids(req).await })
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
        loop {
            if self.broker_epoch.load(Ordering::SeqCst) < 0 {
                let req = RegisterBrokerRequest {
                    broker_id: self.id(),
                    incarnation_id: incarnation.clone(),
                    cluster_id: self.config.cluster_id.clone(),
                    host: self.config.advertised_host.clone(),
                    port: self.config.advertised_port as i32,
                    rack: None,
                    log_dirs: vec![self.config.log_dir.display().to_string()],
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
                            broker = self.id(),
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
            let req = BrokerHeartbeatRequest {
                broker_id: self.id(),
                broker_epoch: self.broker_epoch.load(Ordering::SeqCst),
                current_metadata_offset: Some(self.metadata_offset.load(Ordering::SeqCst)),
                want_fence: false,
                want_shut_down,
            };
            match self
                .call_controller(|mut c| async move { c.broker_heartbeat(req).await })
                .await
            {
                Ok(r) => {
                    let was = self.fenced.swap(r.is_fenced, Ordering::SeqCst);
                    if was != r.is_fenced {
                        tracing::info!(
                            broker = self.id(),
                            fenced = r.is_fenced,
                            "fencing state changed"
                        );
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
        loop {
            let addr = self.config.controllers[i % self.config.controllers.len()].clone();
            i += 1;
            let applied = self.metadata_offset.load(Ordering::SeqCst);
            let stream = ControllerClient::new(self.channel(&addr))
                .watch_metadata(WatchMetadataRequest {
                    from_offset: if applied == 0 { 0 } else { applied + 1 },
                    broker_id: Some(self.id()),
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
                let event = match msg {
                    Ok(Ok(Some(ev))) => ev,
                    _ => break,
                };
                if let Err(e) = self.apply_event(event) {
                    tracing::error!(error = %e, "could not apply metadata; resubscribing");
                    break;
                }
            }
        }
    }

    fn apply_event(&self, ev: MetadataEvent) -> Result<(), String> {
        let mut image = (*self.image()).clone();
        let mut changed = false;
        let mut applied = self.metadata_offset.load(Ordering::SeqCst);
        match ev.event {
            Some(Event::Snapshot(s)) => {
                image = MetadataImage::decode(&s.image)?;
                applied = s.offset;
                changed = true;
            }
            Some(Event::Records(r)) => {
                for e in r.entries {
                    if e.offset <= image.offset {
                        continue;
                    }
                    let batch = MetaBatch::decode(&e.record)?;
                    image = image.apply(e.offset, &batch.records).0;
                    applied = applied.max(e.offset);
                    changed = true;
                }
            }
            // The controller had nothing more to send: everything up to its committed
            // offset is applied (the rest were Raft entries without records).
            Some(Event::Heartbeat(_)) => applied = applied.max(ev.committed_offset),
            None => {}
        }
        if changed {
            let bytes = image.encode();
            let tmp = image_file(&self.config.log_dir).with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, image_file(&self.config.log_dir)))
                .map_err(|e| format!("persisting the metadata image: {e}"))?;
            *self.image.write().expect("image lock") = Arc::new(image);
            self.reconcile();
        }
        self.metadata_offset.store(applied, Ordering::SeqCst);
        Ok(())
    }

    /// Makes local replicas match the image: opens logs for new replicas, switches roles,
    /// starts or stops follower fetchers, deletes replicas that are gone.
    pub fn reconcile(&self) {
        let image = self.image();
        let me = self.id();
        let mut wanted = HashMap::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&me) {
                    let role = if p.leader == me {
                        Role::Leader {
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                            isr: p.isr.clone(),
                            replicas: p.replicas.clone(),
                        }
                    } else {
                        Role::Follower {
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                        }
                    };
                    wanted.insert((t.id, i as i32), (t.clone(), role));
                }
            }
        }
        let mut parts = self.partitions.lock().expect("partitions lock");
        // Gone: stop and delete.
        let gone: Vec<(TopicId, i32)> = parts
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(h) = self.fetchers.lock().expect("fetchers lock").remove(&key) {
                h.abort();
            }
            if let Some(p) = parts.remove(&key) {
                let name = p.name();
                let dir = self.config.log_dir.join(format!("{name}-{}", key.0));
                tracing::info!(partition = %name, "replica removed; deleting its log");
                // The log handle closes when the last Arc drops; remove the files now.
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        for (key, (topic, role)) in wanted {
            let config = log_config(&topic.config);
            let part = match parts.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let dir = self
                        .config
                        .log_dir
                        .join(format!("{}-{}-{}", topic.name, key.1, key.0));
                    let log = match Log::open(&dir, config.clone()) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(dir = %dir.display(), error = %e, "cannot open partition log");
                            continue;
                        }
                    };
                    let p = Arc::new(Partition::new(
                        topic.name.clone(),
                        key.0,
                        key.1,
                        log,
                        role.clone(),
                    ));
                    parts.insert(key, p.clone());
                    tracing::info!(partition = %p.name(), ?role, "replica created");
                    self.apply_role(&p, role, config, true);
                    continue;
                }
            };
            self.apply_role(&part, role, config, false);
        }
    }

    fn apply_role(&self, part: &Arc<Partition>, role: Role, config: LogConfig, new: bool) {
        let key = (part.topic_id, part.index);
        // The role switch takes the partition lock; do it without blocking the caller.
        let mut st = match part.state.try_lock() {
            Ok(st) => st,
            Err(_) => {
                // Busy (an append or fetch is running): reconcile again shortly from the
                // then-latest image, so a newer role is never overwritten by this one.
                let me = self.self_arc();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if let Some(me) = me {
                        me.reconcile();
                    }
                });
                return;
            }
        };
        let _ = st.log.set_config(config);
        let same = st.role == role;
        if same && !new {
            return;
        }
        let was_leader_epoch = match &st.role {
            Role::Leader { leader_epoch, .. } if !new => Some(*leader_epoch),
            _ => None,
        };
        // ISR changes of partitions we lead, whoever made them (our AlterPartition, or
        // the controller fencing a replica): Kafka's IsrShrinksPerSec / IsrExpandsPerSec.
        if let (
            Role::Leader {
                isr: old,
                leader_epoch: e0,
                ..
            },
            Role::Leader {
                isr: now,
                leader_epoch: e1,
                ..
            },
        ) = (&st.role, &role)
        {
            if !new && e0 == e1 && old.len() != now.len() {
                if now.len() < old.len() {
                    metrics::counter!("sluice_isr_shrinks_total").increment(1);
                } else {
                    metrics::counter!("sluice_isr_expands_total").increment(1);
                }
            }
        }
        st.role = role.clone();
        match &role {
            Role::Leader {
                leader_epoch, isr, ..
            } => {
                if was_leader_epoch != Some(*leader_epoch) {
                    st.followers.clear();
                    // ISR members are presumed in sync at election (Kafka does the same);
                    // one that never fetches from us leaves the ISR after the lag window.
                    let hw = st.high_watermark;
                    let now = Instant::now();
                    for b in isr.iter().filter(|b| **b != self.id()) {
                        st.followers.insert(
                            *b,
                            FollowerState {
                                log_end_offset: hw,
                                last_caught_up: now,
                                previous_fetch: None,
                            },
                        );
                    }
                    if let Err(e) = st.log.assign_leader_epoch(*leader_epoch) {
                        tracing::error!(partition = %part.name(), error = %e, "cannot record the leader epoch");
                    }
                    tracing::info!(partition = %part.name(), leader_epoch, "became leader");
                }
                if st.pending_isr.as_ref() == Some(isr) {
                    st.pending_isr = None;
                }
                st.maybe_advance_high_watermark(self.id());
                if let Some(h) = self.fetchers.lock().expect("fetchers lock").remove(&key) {
                    h.abort();
                }
            }
            Role::Follower {
                leader,
                leader_epoch,
            } => {
                st.followers.clear();
                st.pending_isr = None;
                if let Some(h) = self.fetchers.lock().expect("fetchers lock").remove(&key) {
                    h.abort();
                }
                if *leader != NO_LEADER && *leader != self.id() {
                    tracing::info!(partition = %part.name(), leader, leader_epoch, "became follower");
                    if let Some(me) = self.self_arc() {
                        let h = tokio::spawn(me.run_fetcher(part.clone(), *leader, *leader_epoch));
                        self.fetchers.lock().expect("fetchers lock").insert(key, h);
                    }
                }
            }
        }
        part.publish(&st);
    }

    fn self_arc(&self) -> Option<Arc<BrokerNode>> {
        SELF.get().and_then(|w| w.upgrade())
    }

    /// Registers the process-wide handle used by background tasks.
    pub fn install(self: &Arc<Self>) {
        let _ = SELF.set(Arc::downgrade(self));
    }

    /// Follower: fetches from `leader` at `leader_epoch` until the role changes.
    async fn run_fetcher(
        self: Arc<Self>,
        part: Arc<Partition>,
        leader: BrokerId,
        leader_epoch: i32,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let (fetch_offset, last_epoch) = {
                let st = part.state.lock().await;
                if st.role
                    != (Role::Follower {
                        leader,
                        leader_epoch,
                    })
                {
                    return;
                }
                (st.log.log_end_offset(), st.log.latest_epoch())
            };
            let Some(addr) = self.broker_addr(leader) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let req = FetchRequest {
                topic: part.topic.clone(),
                partition: part.index,
                fetch_offset,
                current_leader_epoch: Some(leader_epoch),
                last_fetched_epoch: last_epoch,
                replica_id: Some(self.id()),
                replica_epoch: Some(self.broker_epoch.load(Ordering::SeqCst)),
                max_bytes: self.config.replica_fetch_max_bytes,
                min_bytes: 1,
                max_wait_ms: self.config.replica_fetch_wait_max_ms,
                isolation_level: 0,
                format: RecordFormat::Batches as i32,
            };
            let resp = BrokerClient::new(self.channel(&addr))
                .max_decoding_message_size(64 << 20)
                .fetch(req)
                .await;
            match resp {
                Ok(r) => {
                    backoff = Duration::from_millis(50);
                    let r = r.into_inner();
                    let mut st = part.state.lock().await;
                    if st.role
                        != (Role::Follower {
                            leader,
                            leader_epoch,
                        })
                    {
                        return;
                    }
                    if let Some(div) = r.diverging_epoch {
                        // KIP-320/595: truncate to where our histories agree, then refetch.
                        let (fe, fend) = st.log.end_offset_for_epoch(div.leader_epoch);
                        let leo = st.log.log_end_offset();
                        let target = if fe < 0 {
                            div.end_offset.min(leo)
                        } else {
                            div.end_offset.min(fend).min(leo)
                        };
                        tracing::warn!(partition = %part.name(), from = leo, to = target, "truncating diverged log");
                        if let Err(e) = st.log.truncate_to(target) {
                            tracing::error!(partition = %part.name(), error = %e, "truncation failed");
                        }
                        st.clamp_high_watermark();
                        part.publish(&st);
                        continue;
                    }
                    if !r.record_batches.is_empty() {
                        if let Err(e) = st.append_replicated(r.record_batches) {
                            tracing::error!(partition = %part.name(), error = %e, "replicated append failed");
                            drop(st);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                    st.follow_high_watermark(r.high_watermark);
                    part.publish(&st);
                }
                Err(s) => {
                    let code = error_code(&s);
                    if code == ErrorCode::OffsetOutOfRange {
                        // Our log end is below the leader's log start: start over there.
                        let start = error_detail(&s).and_then(|d| {
                            let rest = d.message.split("log start ").nth(1)?;
                            let digits: String =
                                rest.chars().take_while(char::is_ascii_digit).collect();
                            digits.parse::<i64>().ok()
                        });
                        if let Some(start) = start.filter(|s| *s > fetch_offset) {
                            let mut st = part.state.lock().await;
                            let _ = st.log.truncate_fully_and_start_at(start);
                            st.clamp_high_watermark();
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Leader-side bookkeeping of a follower's fetch: its LEO, caught-up time, the HW, and
    /// an ISR expansion when it caught up.
    pub fn record_follower_fetch(
        &self,
        part: &Partition,
        st: &mut crate::partition::PartitionState,
        follower: BrokerId,
        fetch_offset: i64,
    ) {
        let leo = st.log.log_end_offset();
        let now = Instant::now();
        let entry = st.followers.entry(follower).or_insert(FollowerState {
            log_end_offset: fetch_offset,
            // Unknown followers count as lagging; ISR members are pre-seeded at election.
            last_caught_up: now - self.config.replica_lag_time_max,
            previous_fetch: None,
        });
        entry.log_end_offset = fetch_offset;
        // Kafka's rule: caught up now if it reached our end; caught up as of its previous
        // fetch if it reached the end we had then.
        if fetch_offset >= leo {
            entry.last_caught_up = now;
        } else if let Some((prev_leo, prev_time)) = entry.previous_fetch {
            if fetch_offset >= prev_leo && prev_time > entry.last_caught_up {
                entry.last_caught_up = prev_time;
            }
        }
        entry.previous_fetch = Some((leo, now));
        if st.maybe_advance_high_watermark(self.id()) {
            part.publish(st);
        }
    }

    /// Leader duties every second: propose ISR shrinks for followers that fell behind for
    /// `replica.lag.time.max.ms` and expansions for followers that caught up. Never returns.
    pub async fn run_isr_maintenance(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.fenced.load(Ordering::SeqCst) {
                continue;
            }
            let parts: Vec<Arc<Partition>> = self
                .partitions
                .lock()
                .expect("partitions lock")
                .values()
                .cloned()
                .collect();
            for part in parts {
                let proposal = {
                    let st = part.state.lock().await;
                    let Role::Leader {
                        leader_epoch,
                        partition_epoch,
                        isr,
                        replicas,
                    } = &st.role
                    else {
                        continue;
                    };
                    if st.pending_isr.is_some() {
                        continue;
                    }
                    let now = Instant::now();
                    let hw = st.high_watermark;
                    let mut new_isr: Vec<BrokerId> = isr
                        .iter()
                        .copied()
                        .filter(|b| {
                            *b == self.id()
                                || st.followers.get(b).is_some_and(|f| {
                                    now.duration_since(f.last_caught_up)
                                        < self.config.replica_lag_time_max
                                })
                        })
                        .collect();
                    // Followers never heard from since we became leader get a full lag window.
                    for b in isr {
                        if *b != self.id() && !st.followers.contains_key(b) && !new_isr.contains(b)
                        {
                            new_isr.push(*b);
                        }
                    }
                    for b in replicas {
                        if !new_isr.contains(b) {
                            if let Some(f) = st.followers.get(b) {
                                if f.log_end_offset >= hw
                                    && f.log_end_offset >= st.log.log_end_offset().min(hw)
                                    && now.duration_since(f.last_caught_up)
                                        < self.config.replica_lag_time_max
                                {
                                    new_isr.push(*b);
                                }
                            }
                        }
                    }
                    let mut sorted_new = new_isr.clone();
                    sorted_new.sort_unstable();
                    let mut sorted_old = isr.clone();
                    sorted_old.sort_unstable();
                    if sorted_new == sorted_old {
                        continue;
                    }
                    // Keep replica order for readability.
                    let ordered: Vec<BrokerId> = replicas
                        .iter()
                        .copied()
                        .filter(|b| new_isr.contains(b))
                        .collect();
                    (*leader_epoch, *partition_epoch, ordered, isr.len())
                };
                let (leader_epoch, partition_epoch, new_isr, old_len) = proposal;
                {
                    let mut st = part.state.lock().await;
                    st.pending_isr = Some(new_isr.clone());
                }
                let req = AlterPartitionRequest {
                    broker_id: self.id(),
                    broker_epoch: self.broker_epoch.load(Ordering::SeqCst),
                    topic_id: part.topic_id.to_string(),
                    topic: part.topic.clone(),
                    partition: part.index,
                    leader_epoch,
                    partition_epoch,
                    new_isr: new_isr.clone(),
                };
                let r = self
                    .call_controller(|mut c| {
                        let req = req.clone();
                        async move { c.alter_partition(req).await }
                    })
                    .await;
                match r {
                    Ok(resp) => {
                        let _ = old_len;
                        tracing::info!(partition = %part.name(), isr = ?resp.isr, "ISR change committed")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %part.name(), error = %e.message(), "ISR change refused");
                        part.state.lock().await.pending_isr = None;
                    }
                }
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
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
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
    pub fn local_partitions(&self) -> Vec<Arc<Partition>> {
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
            for p in self.local_partitions() {
                let mut st = p.state.lock().await;
                let hw = st.high_watermark;
                match st.log.delete_retained_segments(hw) {
                    Ok(deleted) if !deleted.is_empty() => {
                        tracing::info!(partition = %p.name(), segments = deleted.len(),
                            log_start_offset = st.log.log_start_offset(), "retention deleted segments");
                        p.publish(&st);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(partition = %p.name(), error = %e, "retention failed")
                    }
                }
                // The flush.ms timer.
                if let Err(e) = st.log.maybe_flush() {
                    tracing::warn!(partition = %p.name(), error = %e, "flush failed");
                }
            }
        }
    }

    /// Flushes every local log and marks it cleanly shut down (process exit).
    pub async fn close_logs(&self) {
        for p in self.local_partitions() {
            let mut st = p.state.lock().await;
            if let Err(e) = st.log.shutdown() {
                tracing::warn!(partition = %p.name(), error = %e, "could not close the log cleanly");
            }
        }
    }

    /// `min.insync.replicas` of a topic.
    pub fn min_insync(&self, topic: &str) -> usize {
        self.image()
            .topic(topic)
            .and_then(|t| effective(&t.config, "min.insync.replicas").and_then(|v| v.parse().ok()))
            .unwrap_or(1)
    }
}

static SELF: std::sync::OnceLock<std::sync::Weak<BrokerNode>> = std::sync::OnceLock::new();

/// The storage settings of a topic from its config overrides.
pub fn log_config(overrides: &std::collections::BTreeMap<String, String>) -> LogConfig {
    let num = |k: &str| effective(overrides, k).and_then(|v| v.parse::<i64>().ok());
    let d = LogConfig::default();
    LogConfig {
        segment_bytes: num("segment.bytes").map_or(d.segment_bytes, |v| v as u64),
        segment_ms: num("segment.ms").unwrap_or(d.segment_ms),
        retention_ms: num("retention.ms").unwrap_or(d.retention_ms),
        retention_bytes: num("retention.bytes").unwrap_or(d.retention_bytes),
        index_interval_bytes: num("index.interval.bytes")
            .map_or(d.index_interval_bytes, |v| v as u64),
        max_message_bytes: num("max.message.bytes").map_or(d.max_message_bytes, |v| v as usize),
        flush_interval_messages: num("flush.messages")
            .map_or(d.flush_interval_messages, |v| v as u64),
        flush_interval_ms: num("flush.ms").unwrap_or(d.flush_interval_ms),
    }
}
