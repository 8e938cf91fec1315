//! The metadata image: an immutable snapshot of the cluster, cheap to clone (maps behind
//! `Arc`, copied on write), and `apply`, which turns a batch of records into a new image and
//! a delta.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{BrokerId, LeaderEpoch, PartitionEpoch, TopicId, NO_LEADER};
use crate::records::{
    Endpoint, MetadataRecord, RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSION_V1,
    RECORD_FORMAT_VERSION_V2, RECORD_FORMAT_VERSION_V3, RECORD_FORMAT_VERSION_V4,
    RECORD_FORMAT_VERSION_V5, RECORD_FORMAT_VERSION_V6,
};
use crate::scram::{ScramCredential, ScramMechanism};

/// A registered broker as the metadata log describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// `node.id`.
    pub id: BrokerId,
    /// Id of the registering process; a new one means the broker restarted.
    pub incarnation_id: String,
    /// Broker epoch: the metadata offset of its latest registration.
    pub epoch: i64,
    /// Client endpoint.
    pub endpoint: Endpoint,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not in any new ISR.
    pub fenced: bool,
    /// Where it serves the Kafka protocol, when that is a listener of its own (`KAFKA://`);
    /// `None`: on `endpoint`, beside gRPC.
    pub kafka_endpoint: Option<Endpoint>,
}

impl BrokerRegistration {
    /// Where Kafka clients reach this broker.
    pub fn kafka_endpoint(&self) -> &Endpoint {
        self.kafka_endpoint.as_ref().unwrap_or(&self.endpoint)
    }
}

/// [`BrokerRegistration`] as formats 1 and 2 wrote it.
#[derive(Deserialize)]
struct BrokerRegistrationV2 {
    id: BrokerId,
    incarnation_id: String,
    epoch: i64,
    endpoint: Endpoint,
    rack: Option<String>,
    fenced: bool,
}

impl From<BrokerRegistrationV2> for BrokerRegistration {
    fn from(b: BrokerRegistrationV2) -> Self {
        BrokerRegistration {
            id: b.id,
            incarnation_id: b.incarnation_id,
            epoch: b.epoch,
            endpoint: b.endpoint,
            rack: b.rack,
            fenced: b.fenced,
            kafka_endpoint: None,
        }
    }
}

fn upgrade_brokers(
    brokers: BTreeMap<BrokerId, BrokerRegistrationV2>,
) -> Arc<BTreeMap<BrokerId, BrokerRegistration>> {
    Arc::new(brokers.into_iter().map(|(id, b)| (id, b.into())).collect())
}

/// [`MetadataImage`] as format 2 wrote it.
#[derive(Deserialize)]
struct MetadataImageV2 {
    offset: u64,
    brokers: BTreeMap<BrokerId, BrokerRegistrationV2>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
    history_id: u64,
    term: u64,
}

/// Replica assignment and leadership of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replica brokers; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Leader, or [`NO_LEADER`].
    pub leader: BrokerId,
    /// Bumped whenever the leader changes; fences stale leaders on the data path.
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change; AlterPartition must name the current one.
    pub partition_epoch: PartitionEpoch,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// UUID.
    pub id: TopicId,
    /// Name.
    pub name: String,
    /// Config overrides (Kafka key → value).
    pub config: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<PartitionState>,
}

/// The whole cluster metadata at one offset of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetadataImage {
    /// Offset (Raft log index) of the last applied entry; 0 = nothing applied.
    pub offset: u64,
    /// Brokers by id.
    pub brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    /// Topics by id.
    pub topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    /// Topic name → id.
    pub topic_ids: Arc<BTreeMap<String, TopicId>>,
    /// Next producer id not yet handed out.
    pub next_producer_id: i64,
    /// The history this image belongs to (`HistoryStarted`); 0 before it is named.
    pub history_id: u64,
    /// Raft term of the entry at `offset` (0 when unknown: nothing applied, or an image of
    /// format 1). With `offset` and `history_id` it says which history the image follows.
    pub term: u64,
    /// Dynamic broker configs (Kafka's BROKER ConfigRecords): resource ("" for the
    /// cluster-wide default, or a broker id in decimal) → key → value.
    pub broker_configs: Arc<BTreeMap<String, BTreeMap<String, String>>>,
    /// Users: name → mechanism → SCRAM credential (salted hashes only).
    pub users: Arc<Users>,
    /// ACLs (Kafka's model, [`crate::acl`]).
    pub acls: Arc<BTreeSet<crate::acl::AclBinding>>,
    /// Producer ids given to principals (with an authorizer): id → `User:NAME`.
    pub producer_principals: Arc<BTreeMap<i64, String>>,
    /// Client quotas ([`crate::quota`]).
    pub client_quotas: Arc<crate::quota::ClientQuotas>,
}

/// [`MetadataImage`] as format 6 wrote it (before client quotas).
#[derive(Deserialize)]
struct MetadataImageV6 {
    offset: u64,
    brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
    history_id: u64,
    term: u64,
    broker_configs: Arc<BTreeMap<String, BTreeMap<String, String>>>,
    users: Arc<Users>,
    acls: Arc<BTreeSet<crate::acl::AclBinding>>,
    producer_principals: Arc<BTreeMap<i64, String>>,
}

/// [`MetadataImage`] as format 5 wrote it (before producer ids granted to principals).
#[derive(Deserialize)]
struct MetadataImageV5 {
    offset: u64,
    brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
    history_id: u64,
    term: u64,
    broker_configs: Arc<BTreeMap<String, BTreeMap<String, String>>>,
    users: Arc<Users>,
    acls: Arc<BTreeSet<crate::acl::AclBinding>>,
}

/// Users and their credentials.
pub type Users = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// [`MetadataImage`] as format 4 wrote it (before users).
#[derive(Deserialize)]
struct MetadataImageV4 {
    offset: u64,
    brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
    history_id: u64,
    term: u64,
    broker_configs: Arc<BTreeMap<String, BTreeMap<String, String>>>,
}

/// [`MetadataImage`] as format 3 wrote it (before dynamic broker configs).
#[derive(Deserialize)]
struct MetadataImageV3 {
    offset: u64,
    brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
    history_id: u64,
    term: u64,
}

/// [`MetadataImage`] as format 1 wrote it.
#[derive(Deserialize)]
struct MetadataImageV1 {
    offset: u64,
    brokers: BTreeMap<BrokerId, BrokerRegistrationV2>,
    topics: Arc<BTreeMap<TopicId, Arc<TopicImage>>>,
    topic_ids: Arc<BTreeMap<String, TopicId>>,
    next_producer_id: i64,
}

/// What one `apply` changed, for brokers to act on (become leader/follower, delete logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// Partitions created or changed: (topic id, index).
    pub changed_partitions: BTreeSet<(TopicId, i32)>,
    /// Topics created.
    pub created_topics: BTreeSet<TopicId>,
    /// Topics deleted, with their last image.
    pub deleted_topics: Vec<Arc<TopicImage>>,
    /// Topics whose config changed.
    pub changed_configs: BTreeSet<TopicId>,
    /// A dynamic broker config changed (it may change every topic's effective config).
    pub changed_broker_configs: bool,
    /// A user's credentials were set or removed.
    pub changed_users: bool,
    /// ACLs were created or removed.
    pub changed_acls: bool,
    /// Whether a client quota changed.
    pub changed_quotas: bool,
    /// Brokers registered, fenced, unfenced or removed.
    pub changed_brokers: BTreeSet<BrokerId>,
    /// Records that could not apply (e.g. a change for a topic deleted meanwhile); skipped.
    pub skipped: Vec<String>,
}

impl MetadataImage {
    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// The topic-level defaults the cluster-wide dynamic broker configs give (topic key →
    /// value, e.g. `retention.ms` from `log.retention.ms`): what a topic without its own
    /// override inherits, above the built-in default.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        crate::config::topic_defaults_of(self.broker_configs.get("").unwrap_or(&BTreeMap::new()))
    }

    /// A topic's effective configs: its overrides over the cluster-wide dynamic defaults
    /// over the built-in defaults.
    pub fn topic_config(&self, topic: &TopicImage) -> crate::config::TopicConfig {
        crate::config::TopicConfig::parse_with_defaults(&topic.config, &self.topic_defaults())
    }

    /// A partition by topic id and index.
    pub fn partition(&self, topic: TopicId, index: i32) -> Option<&PartitionState> {
        self.topics
            .get(&topic)
            .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
    }

    /// Whether a broker is registered and unfenced.
    pub fn is_unfenced(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Unfenced broker ids in ascending order (placement order).
    pub fn unfenced_brokers(&self) -> Vec<BrokerId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// Applies the records of one log entry at `offset`. Records that cannot apply are
    /// skipped and listed in the delta; apply itself never fails, so every node that applies
    /// the same log reaches the same image.
    pub fn apply(&self, offset: u64, records: &[MetadataRecord]) -> (MetadataImage, MetadataDelta) {
        let mut next = self.clone();
        let mut delta = MetadataDelta::default();
        for r in records {
            if let Err(why) = next.apply_one(offset, r, &mut delta) {
                delta.skipped.push(format!("{r:?}: {why}"));
            }
        }
        next.offset = next.offset.max(offset);
        (next, delta)
    }

    fn topic_mut(&mut self, id: TopicId) -> Result<&mut TopicImage, String> {
        let topics = Arc::make_mut(&mut self.topics);
        let t = topics
            .get_mut(&id)
            .ok_or_else(|| format!("unknown topic id {id}"))?;
        Ok(Arc::make_mut(t))
    }

    fn apply_one(
        &mut self,
        offset: u64,
        r: &MetadataRecord,
        delta: &mut MetadataDelta,
    ) -> Result<(), String> {
        match r {
            MetadataRecord::RegisterBroker {
                id,
                incarnation_id,
                endpoint,
                rack,
            } => {
                Arc::make_mut(&mut self.brokers).insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        incarnation_id: incarnation_id.clone(),
                        epoch: offset as i64,
                        endpoint: endpoint.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        kafka_endpoint: None,
                    },
                );
                delta.changed_brokers.insert(*id);
            }
            MetadataRecord::BrokerKafkaEndpoint { id, endpoint } => {
                let b = Arc::make_mut(&mut self.brokers)
                    .get_mut(id)
                    .ok_or_else(|| format!("unknown broker {id}"))?;
                b.kafka_endpoint = Some(endpoint.clone());
                delta.changed_brokers.insert(*id);
            }
            MetadataRecord::BrokerFenced { id } | MetadataRecord::BrokerUnfenced { id } => {
                let b = Arc::make_mut(&mut self.brokers)
                    .get_mut(id)
                    .ok_or_else(|| format!("unknown broker {id}"))?;
                b.fenced = matches!(r, MetadataRecord::BrokerFenced { .. });
                delta.changed_brokers.insert(*id);
            }
            MetadataRecord::UnregisterBroker { id } => {
                Arc::make_mut(&mut self.brokers)
                    .remove(id)
                    .ok_or_else(|| format!("unknown broker {id}"))?;
                delta.changed_brokers.insert(*id);
            }
            MetadataRecord::CreateTopic { name, id, config } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(id) {
                    return Err(format!("topic {name} ({id}) already exists"));
                }
                Arc::make_mut(&mut self.topics).insert(
                    *id,
                    Arc::new(TopicImage {
                        id: *id,
                        name: name.clone(),
                        config: config.clone(),
                        partitions: Vec::new(),
                    }),
                );
                Arc::make_mut(&mut self.topic_ids).insert(name.clone(), *id);
                delta.created_topics.insert(*id);
            }
            MetadataRecord::Partition {
                topic_id,
                index,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let t = self.topic_mut(*topic_id)?;
                if *index as usize != t.partitions.len() {
                    return Err(format!(
                        "partition {index} of {} does not follow partition {}",
                        t.name,
                        t.partitions.len() as i64 - 1
                    ));
                }
                t.partitions.push(PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                });
                delta.changed_partitions.insert((*topic_id, *index));
            }
            MetadataRecord::PartitionChange {
                topic_id,
                index,
                isr,
                leader,
            } => {
                let t = self.topic_mut(*topic_id)?;
                let name = t.name.clone();
                let p = usize::try_from(*index)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
                    .ok_or_else(|| format!("unknown partition {name}-{index}"))?;
                if let Some(isr) = isr {
                    p.isr = isr.clone();
                }
                if let Some(leader) = leader {
                    if *leader != p.leader {
                        p.leader = *leader;
                        p.leader_epoch = p.leader_epoch.next();
                    }
                }
                p.partition_epoch = p.partition_epoch.next();
                delta.changed_partitions.insert((*topic_id, *index));
            }
            MetadataRecord::DeleteTopic { id } => {
                let t = Arc::make_mut(&mut self.topics)
                    .remove(id)
                    .ok_or_else(|| format!("unknown topic id {id}"))?;
                Arc::make_mut(&mut self.topic_ids).remove(&t.name);
                delta.changed_partitions.retain(|(tid, _)| tid != id);
                delta.created_topics.remove(id);
                delta.deleted_topics.push(t);
            }
            MetadataRecord::TopicConfig { id, key, value } => {
                let t = self.topic_mut(*id)?;
                match value {
                    Some(v) => t.config.insert(key.clone(), v.clone()),
                    None => t.config.remove(key),
                };
                delta.changed_configs.insert(*id);
            }
            MetadataRecord::BrokerConfig {
                resource,
                key,
                value,
            } => {
                let configs = Arc::make_mut(&mut self.broker_configs);
                match value {
                    Some(v) => {
                        configs
                            .entry(resource.clone())
                            .or_default()
                            .insert(key.clone(), v.clone());
                    }
                    None => {
                        if let Some(c) = configs.get_mut(resource) {
                            c.remove(key);
                            if c.is_empty() {
                                configs.remove(resource);
                            }
                        }
                    }
                }
                delta.changed_broker_configs = true;
            }
            MetadataRecord::ScramCredential {
                name,
                mechanism,
                credential,
            } => {
                Arc::make_mut(&mut self.users)
                    .entry(name.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
                delta.changed_users = true;
            }
            MetadataRecord::ScramCredentialRemoved { name, mechanism } => {
                let users = Arc::make_mut(&mut self.users);
                if let Some(u) = users.get_mut(name) {
                    u.remove(mechanism);
                    if u.is_empty() {
                        users.remove(name);
                    }
                }
                delta.changed_users = true;
            }
            MetadataRecord::AclCreated { acl } => {
                Arc::make_mut(&mut self.acls).insert(acl.clone());
                delta.changed_acls = true;
            }
            MetadataRecord::AclRemoved { acl } => {
                Arc::make_mut(&mut self.acls).remove(acl);
                delta.changed_acls = true;
            }
            MetadataRecord::ProducerIdGranted { id, principal } => {
                if *id >= self.next_producer_id {
                    return Err(format!(
                        "producer id {id} granted before it was allocated (next {})",
                        self.next_producer_id
                    ));
                }
                Arc::make_mut(&mut self.producer_principals).insert(*id, principal.clone());
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                let quotas = Arc::make_mut(&mut self.client_quotas);
                match value {
                    Some(v) => {
                        quotas
                            .entry(entity.clone())
                            .or_default()
                            .insert(key.clone(), *v);
                    }
                    None => {
                        if let Some(values) = quotas.get_mut(entity) {
                            values.remove(key);
                            if values.is_empty() {
                                quotas.remove(entity);
                            }
                        }
                    }
                }
                delta.changed_quotas = true;
            }
            MetadataRecord::HistoryStarted { history_id } => {
                if self.history_id != 0 {
                    return Err(format!(
                        "the history is already named {:016x}",
                        self.history_id
                    ));
                }
                self.history_id = *history_id;
            }
            MetadataRecord::ProducerIdBlock { first, len, .. } => {
                if *first != self.next_producer_id || *len <= 0 {
                    return Err(format!(
                        "producer id block [{first}, +{len}) does not start at {}",
                        self.next_producer_id
                    ));
                }
                self.next_producer_id = first + len;
            }
        }
        Ok(())
    }

    /// Checks the invariants every image produced by the controller must hold; returns the
    /// first violation. (Used by tests and asserted by debug builds of the controller.)
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, id) in self.topic_ids.iter() {
            let t = self
                .topics
                .get(id)
                .ok_or_else(|| format!("name {name} maps to missing topic {id}"))?;
            if &t.name != name {
                return Err(format!("topic {id} is named {} not {name}", t.name));
            }
        }
        if self.topic_ids.len() != self.topics.len() {
            return Err("topic name index out of sync".into());
        }
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let at = format!("{}-{i}", t.name);
                if p.leader != NO_LEADER {
                    if !p.isr.contains(&p.leader) {
                        return Err(format!("{at}: leader {} not in ISR {:?}", p.leader, p.isr));
                    }
                    if !self.is_unfenced(p.leader) {
                        return Err(format!("{at}: leader {} is fenced or unknown", p.leader));
                    }
                }
                if p.isr.iter().any(|b| !p.replicas.contains(b)) {
                    return Err(format!(
                        "{at}: ISR {:?} not within replicas {:?}",
                        p.isr, p.replicas
                    ));
                }
                if p.isr.is_empty() {
                    return Err(format!("{at}: empty ISR"));
                }
                let mut seen = BTreeSet::new();
                if !p.replicas.iter().all(|r| seen.insert(*r)) {
                    return Err(format!("{at}: duplicate replicas {:?}", p.replicas));
                }
            }
        }
        Ok(())
    }

    /// Where in which history this image stands.
    pub fn position(&self) -> crate::HistoryPosition {
        crate::HistoryPosition {
            history_id: self.history_id,
            offset: self.offset,
            term: self.term,
        }
    }

    /// Serializes the image (snapshots, brokers' persisted image).
    /// An image with no broker Kafka endpoint is written in format 2, which the previous
    /// build reads (rolling upgrades); format 3 only once one exists.
    pub fn encode(&self) -> Vec<u8> {
        if !self.client_quotas.is_empty() {
            return postcard::to_stdvec(&(RECORD_FORMAT_VERSION, self))
                .expect("images always serialize");
        }
        if !self.producer_principals.is_empty() {
            return postcard::to_stdvec(&(
                RECORD_FORMAT_VERSION_V6,
                (
                    self.offset,
                    &self.brokers,
                    &self.topics,
                    &self.topic_ids,
                    self.next_producer_id,
                    self.history_id,
                    self.term,
                    &self.broker_configs,
                    &self.users,
                    &self.acls,
                    &self.producer_principals,
                ),
            ))
            .expect("images always serialize");
        }
        if !self.users.is_empty() || !self.acls.is_empty() {
            return postcard::to_stdvec(&(
                RECORD_FORMAT_VERSION_V5,
                (
                    self.offset,
                    &self.brokers,
                    &self.topics,
                    &self.topic_ids,
                    self.next_producer_id,
                    self.history_id,
                    self.term,
                    &self.broker_configs,
                    &self.users,
                    &self.acls,
                ),
            ))
            .expect("images always serialize");
        }
        if !self.broker_configs.is_empty() {
            return postcard::to_stdvec(&(
                RECORD_FORMAT_VERSION_V4,
                (
                    self.offset,
                    &self.brokers,
                    &self.topics,
                    &self.topic_ids,
                    self.next_producer_id,
                    self.history_id,
                    self.term,
                    &self.broker_configs,
                ),
            ))
            .expect("images always serialize");
        }
        if self.brokers.values().any(|b| b.kafka_endpoint.is_some()) {
            return postcard::to_stdvec(&(
                RECORD_FORMAT_VERSION_V3,
                (
                    self.offset,
                    &self.brokers,
                    &self.topics,
                    &self.topic_ids,
                    self.next_producer_id,
                    self.history_id,
                    self.term,
                ),
            ))
            .expect("images always serialize");
        }
        // Format 2: the same layout with registrations of six fields (postcard writes a
        // struct as the tuple of its fields).
        let brokers: BTreeMap<BrokerId, _> = self
            .brokers
            .iter()
            .map(|(id, b)| {
                (
                    *id,
                    (
                        b.id,
                        &b.incarnation_id,
                        b.epoch,
                        &b.endpoint,
                        &b.rack,
                        b.fenced,
                    ),
                )
            })
            .collect();
        postcard::to_stdvec(&(
            RECORD_FORMAT_VERSION_V2,
            (
                self.offset,
                brokers,
                &self.topics,
                &self.topic_ids,
                self.next_producer_id,
                self.history_id,
                self.term,
            ),
        ))
        .expect("images always serialize")
    }

    /// Deserializes an image written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, String> {
        let undecodable = |e: postcard::Error| format!("undecodable metadata image: {e}");
        let (version, rest): (u32, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(undecodable)?;
        match version {
            RECORD_FORMAT_VERSION => {
                let (_, image): (u32, MetadataImage) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(image)
            }
            RECORD_FORMAT_VERSION_V6 => {
                let (_, v6): (u32, MetadataImageV6) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v6.offset,
                    brokers: v6.brokers,
                    topics: v6.topics,
                    topic_ids: v6.topic_ids,
                    next_producer_id: v6.next_producer_id,
                    history_id: v6.history_id,
                    term: v6.term,
                    broker_configs: v6.broker_configs,
                    users: v6.users,
                    acls: v6.acls,
                    producer_principals: v6.producer_principals,
                    client_quotas: Default::default(),
                })
            }
            RECORD_FORMAT_VERSION_V5 => {
                let (_, v5): (u32, MetadataImageV5) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v5.offset,
                    brokers: v5.brokers,
                    topics: v5.topics,
                    topic_ids: v5.topic_ids,
                    next_producer_id: v5.next_producer_id,
                    history_id: v5.history_id,
                    term: v5.term,
                    broker_configs: v5.broker_configs,
                    users: v5.users,
                    acls: v5.acls,
                    ..Default::default()
                })
            }
            RECORD_FORMAT_VERSION_V4 => {
                let (_, v4): (u32, MetadataImageV4) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v4.offset,
                    brokers: v4.brokers,
                    topics: v4.topics,
                    topic_ids: v4.topic_ids,
                    next_producer_id: v4.next_producer_id,
                    history_id: v4.history_id,
                    term: v4.term,
                    broker_configs: v4.broker_configs,
                    ..Default::default()
                })
            }
            RECORD_FORMAT_VERSION_V3 => {
                let (_, v3): (u32, MetadataImageV3) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v3.offset,
                    brokers: v3.brokers,
                    topics: v3.topics,
                    topic_ids: v3.topic_ids,
                    next_producer_id: v3.next_producer_id,
                    history_id: v3.history_id,
                    term: v3.term,
                    ..Default::default()
                })
            }
            RECORD_FORMAT_VERSION_V2 => {
                let (_, v2): (u32, MetadataImageV2) =
                    postcard::from_bytes(bytes).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v2.offset,
                    brokers: upgrade_brokers(v2.brokers),
                    topics: v2.topics,
                    topic_ids: v2.topic_ids,
                    next_producer_id: v2.next_producer_id,
                    history_id: v2.history_id,
                    term: v2.term,
                    ..Default::default()
                })
            }
            RECORD_FORMAT_VERSION_V1 => {
                let v1: MetadataImageV1 = postcard::from_bytes(rest).map_err(undecodable)?;
                Ok(MetadataImage {
                    offset: v1.offset,
                    brokers: upgrade_brokers(v1.brokers),
                    topics: v1.topics,
                    topic_ids: v1.topic_ids,
                    next_producer_id: v1.next_producer_id,
                    history_id: 0,
                    term: 0,
                    ..Default::default()
                })
            }
            v if v > RECORD_FORMAT_VERSION => Err(format!(
                "metadata image format {v} is newer than this build"
            )),
            v => Err(format!("metadata image format {v} is unknown")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: 9092,
        }
    }

    #[test]
    fn apply_builds_topics_and_bumps_epochs() {
        let id = TopicId([1; 16]);
        let img = MetadataImage::default();
        let (img, d) = img.apply(
            1,
            &[
                MetadataRecord::RegisterBroker {
                    id: BrokerId(1),
                    incarnation_id: "a".into(),
                    endpoint: endpoint(),
                    rack: None,
                },
                MetadataRecord::BrokerUnfenced { id: BrokerId(1) },
            ],
        );
        assert_eq!(d.changed_brokers.len(), 1);
        assert_eq!(img.brokers[&BrokerId(1)].epoch, 1);
        let (img, d) = img.apply(
            2,
            &[
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    id,
                    config: BTreeMap::new(),
                },
                MetadataRecord::Partition {
                    topic_id: id,
                    index: 0,
                    replicas: BrokerId::from_wire(&[1]),
                    isr: BrokerId::from_wire(&[1]),
                    leader: BrokerId(1),
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                },
            ],
        );
        assert!(d.created_topics.contains(&id));
        let before = img.clone();
        let (img, _) = img.apply(
            3,
            &[MetadataRecord::PartitionChange {
                topic_id: id,
                index: 0,
                isr: None,
                leader: Some(NO_LEADER),
            }],
        );
        let p = img.partition(id, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (NO_LEADER, LeaderEpoch(1), PartitionEpoch(1))
        );
        // The old image is untouched (copy on write).
        assert_eq!(before.partition(id, 0).unwrap().leader, 1);
        assert_eq!(img.offset, 3);
        let (img, d) = img.apply(4, &[MetadataRecord::DeleteTopic { id }]);
        assert!(img.topic("t").is_none());
        assert_eq!(d.deleted_topics.len(), 1);
    }

    #[test]
    fn records_for_unknown_things_are_skipped_not_fatal() {
        let img = MetadataImage::default();
        let (img2, d) = img.apply(
            7,
            &[
                MetadataRecord::BrokerFenced { id: BrokerId(9) },
                MetadataRecord::DeleteTopic {
                    id: TopicId([3; 16]),
                },
            ],
        );
        assert_eq!(d.skipped.len(), 2);
        assert_eq!(img2.offset, 7);
        assert_eq!(img2.brokers, img.brokers);
    }

    #[test]
    fn image_round_trips_through_encoding() {
        let (img, _) = MetadataImage::default().apply(
            5,
            &[MetadataRecord::ProducerIdBlock {
                broker: BrokerId(1),
                first: 0,
                len: 1000,
            }],
        );
        assert_eq!(MetadataImage::decode(&img.encode()).unwrap(), img);
        assert!(MetadataImage::decode(b"garbage").is_err());
    }

    #[test]
    fn format_1_images_still_decode_and_the_first_history_id_wins() {
        let (img, _) = MetadataImage::default().apply(
            5,
            &[MetadataRecord::ProducerIdBlock {
                broker: BrokerId(1),
                first: 0,
                len: 1000,
            }],
        );
        // What format 1 wrote: the same fields, without history_id and term.
        let v1 = postcard::to_stdvec(&(
            RECORD_FORMAT_VERSION_V1,
            (
                img.offset,
                &img.brokers,
                &img.topics,
                &img.topic_ids,
                img.next_producer_id,
            ),
        ))
        .unwrap();
        let back = MetadataImage::decode(&v1).unwrap();
        assert_eq!(back, img, "decoded with history_id and term 0");
        let named = |id| MetadataRecord::HistoryStarted { history_id: id };
        let (img, delta) = img.apply(6, &[named(0xabc)]);
        assert_eq!(img.history_id, 0xabc);
        assert!(delta.skipped.is_empty());
        // A second leader that had not applied the first record yet proposes its own: ignored.
        let (img, delta) = img.apply(7, &[named(0xdef)]);
        assert_eq!(img.history_id, 0xabc);
        assert_eq!(delta.skipped.len(), 1);
        assert_eq!(MetadataImage::decode(&img.encode()).unwrap(), img);
    }

    /// Format 3 added brokers' Kafka endpoints: a format-2 image (a persisted broker image
    /// or a controller snapshot from before) still decodes, its brokers without one; a
    /// `BrokerKafkaEndpoint` after a registration gives the broker its own Kafka endpoint,
    /// and a new registration drops it again.
    #[test]
    fn format_2_images_decode_and_kafka_endpoints_follow_registrations() {
        let register = |incarnation: &str| MetadataRecord::RegisterBroker {
            id: BrokerId(1),
            incarnation_id: incarnation.into(),
            endpoint: endpoint(),
            rack: None,
        };
        let (img, _) = MetadataImage::default().apply(1, &[register("a")]);
        let b = &img.brokers[&BrokerId(1)];
        let legacy_broker = (
            b.id,
            &b.incarnation_id,
            b.epoch,
            &b.endpoint,
            &b.rack,
            b.fenced,
        );
        let brokers: BTreeMap<BrokerId, _> = [(BrokerId(1), legacy_broker)].into_iter().collect();
        let v2 = postcard::to_stdvec(&(
            RECORD_FORMAT_VERSION_V2,
            (
                img.offset,
                brokers,
                &img.topics,
                &img.topic_ids,
                img.next_producer_id,
                img.history_id,
                img.term,
            ),
        ))
        .unwrap();
        let back = MetadataImage::decode(&v2).unwrap();
        assert_eq!(back, img);
        assert_eq!(
            img.encode(),
            v2,
            "without Kafka endpoints an image is written in format 2"
        );
        assert_eq!(back.brokers[&BrokerId(1)].kafka_endpoint(), &endpoint());

        let kafka = Endpoint {
            host: "10.0.0.1".into(),
            port: 19092,
        };
        let (img, d) = img.apply(
            2,
            &[
                register("b"),
                MetadataRecord::BrokerKafkaEndpoint {
                    id: BrokerId(1),
                    endpoint: kafka.clone(),
                },
            ],
        );
        assert!(d.skipped.is_empty());
        assert_eq!(img.brokers[&BrokerId(1)].kafka_endpoint(), &kafka);
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&img.encode()).unwrap();
        assert_eq!(
            version, RECORD_FORMAT_VERSION_V3,
            "format 3 once one exists"
        );
        assert_eq!(img.brokers[&BrokerId(1)].endpoint, endpoint());
        assert_eq!(MetadataImage::decode(&img.encode()).unwrap(), img);

        // Dynamic broker configs: format 4 once one exists; removing the last one goes back.
        let set = |v: Option<&str>| MetadataRecord::BrokerConfig {
            resource: String::new(),
            key: "log.retention.ms".into(),
            value: v.map(str::to_string),
        };
        let (with, d) = img.apply(3, &[set(Some("5000"))]);
        assert!(d.changed_broker_configs && d.skipped.is_empty());
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&with.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V4);
        assert_eq!(MetadataImage::decode(&with.encode()).unwrap(), with);
        // Users: format 5 once one exists; their last credential removed, back to 4.
        let cred = crate::scram::ScramCredential::new(ScramMechanism::Sha256, "pw", b"salt", 4096);
        let (user, d) = with.apply(
            4,
            &[MetadataRecord::ScramCredential {
                name: "alice".into(),
                mechanism: ScramMechanism::Sha256,
                credential: cred.clone(),
            }],
        );
        assert!(d.changed_users && d.skipped.is_empty());
        assert_eq!(user.users["alice"][&ScramMechanism::Sha256], cred);
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&user.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V5);
        assert_eq!(MetadataImage::decode(&user.encode()).unwrap(), user);
        let (gone, _) = user.apply(
            5,
            &[MetadataRecord::ScramCredentialRemoved {
                name: "alice".into(),
                mechanism: ScramMechanism::Sha256,
            }],
        );
        assert!(gone.users.is_empty());
        // ACLs: format 5 too.
        let binding = crate::acl::AclBinding {
            principal: "User:alice".into(),
            host: "*".into(),
            resource_type: crate::acl::ResourceType::Topic,
            resource_name: "t".into(),
            pattern: crate::acl::PatternType::Literal,
            operation: crate::acl::Operation::Read,
            permission: crate::acl::Permission::Allow,
        };
        let (acl, d) = gone.apply(
            6,
            &[MetadataRecord::AclCreated {
                acl: binding.clone(),
            }],
        );
        assert!(d.changed_acls && acl.acls.contains(&binding));
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&acl.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V5);
        assert_eq!(MetadataImage::decode(&acl.encode()).unwrap(), acl);
        // Producer ids granted to principals: format 6; a grant beyond the allocated ids is
        // refused.
        let (block, d) = acl.apply(
            8,
            &[MetadataRecord::ProducerIdBlock {
                broker: BrokerId(1),
                first: acl.next_producer_id,
                len: 1,
            }],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let id = acl.next_producer_id;
        let (granted, d) = block.apply(
            9,
            &[MetadataRecord::ProducerIdGranted {
                id,
                principal: "User:alice".into(),
            }],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(granted.producer_principals[&id], "User:alice");
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&granted.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V6);
        assert_eq!(MetadataImage::decode(&granted.encode()).unwrap(), granted);
        // Client quotas: format 7; set, replaced, removed.
        let entity: crate::quota::QuotaEntity = [("user".to_string(), None)].into();
        let quota = |key: &str, v: Option<f64>| MetadataRecord::ClientQuota {
            entity: entity.clone(),
            key: key.into(),
            value: v.map(crate::quota::QuotaValue),
        };
        let (quoted, d) = granted.apply(
            11,
            &[
                quota("producer_byte_rate", Some(100.0)),
                quota("producer_byte_rate", Some(200.0)),
                quota("consumer_byte_rate", Some(300.0)),
            ],
        );
        assert!(d.changed_quotas && d.skipped.is_empty());
        assert_eq!(
            crate::quota::resolve(&quoted.client_quotas, "anyone", "", "producer_byte_rate")
                .map(|(_, v)| v),
            Some(200.0)
        );
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&quoted.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION);
        assert_eq!(MetadataImage::decode(&quoted.encode()).unwrap(), quoted);
        let (unquoted, _) = quoted.apply(
            12,
            &[
                quota("producer_byte_rate", None),
                quota("consumer_byte_rate", None),
            ],
        );
        assert!(
            unquoted.client_quotas.is_empty(),
            "an entity without quotas is gone"
        );
        let (_, d) = granted.apply(
            10,
            &[MetadataRecord::ProducerIdGranted {
                id: granted.next_producer_id + 5,
                principal: "User:eve".into(),
            }],
        );
        assert_eq!(d.skipped.len(), 1, "never-allocated ids cannot be granted");
        let (gone, _) = acl.apply(7, &[MetadataRecord::AclRemoved { acl: binding }]);
        assert!(gone.acls.is_empty());
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&gone.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V4);
        assert_eq!(MetadataImage::decode(&gone.encode()).unwrap(), gone);
        assert_eq!(
            with.topic_defaults()
                .get("retention.ms")
                .map(String::as_str),
            Some("5000")
        );
        let (without, _) = with.apply(4, &[set(None)]);
        assert!(without.broker_configs.is_empty());
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(&without.encode()).unwrap();
        assert_eq!(version, RECORD_FORMAT_VERSION_V3);

        let (img, _) = img.apply(3, &[register("c")]);
        assert_eq!(img.brokers[&BrokerId(1)].kafka_endpoint, None);
    }
}
