//! Controller decisions as pure functions: the current image and a request in, the metadata
//! records to commit (or a Kafka error) out. Only the active controller calls these, one at
//! a time, on an image that includes every committed record.

use sluice_metadata::LeaderEpoch;
use sluice_metadata::PartitionEpoch;
use std::collections::BTreeMap;

use sluice_metadata::config::{effective, validate_topic_config};
use sluice_metadata::placement::{assign_replicas, elect_leader};
use sluice_metadata::validate::{validate_topic_name, PARTITIONS_PER_TOPIC_MAX};
use sluice_metadata::{
    BrokerId, Endpoint, MetadataImage, MetadataRecord, PartitionState, TopicId, TopicImage,
    NO_LEADER,
};
use sluice_proto::ErrorCode;

/// A refused request: the Kafka code and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Kafka error code.
    pub code: ErrorCode,
    /// What is wrong, with the values involved.
    pub message: String,
}

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// Cluster-wide defaults used by topic creation.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub replication_factor: i32,
}

/// Creates a topic: validates the name, counts and configs, places replicas on the unfenced
/// brokers ("replica j of partition i on b[(i + j) mod n]") and elects the first replica.
pub fn create_topic(
    image: &MetadataImage,
    name: &str,
    num_partitions: i32,
    replication_factor: i32,
    configs: &BTreeMap<String, String>,
    defaults: &Defaults,
    id: TopicId,
) -> Result<Vec<MetadataRecord>, Refusal> {
    if let Err(e) = validate_topic_name(name) {
        return refuse(ErrorCode::InvalidTopicException, e);
    }
    if image.topic(name).is_some() {
        return refuse(
            ErrorCode::TopicAlreadyExists,
            format!("topic {name:?} already exists"),
        );
    }
    let partitions = if num_partitions == -1 {
        defaults.num_partitions
    } else {
        num_partitions
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return refuse(
            ErrorCode::InvalidPartitions,
            format!(
                "partition count {num_partitions} must be within [1, {PARTITIONS_PER_TOPIC_MAX}]"
            ),
        );
    }
    let rf = if replication_factor == -1 {
        defaults.replication_factor
    } else {
        replication_factor
    };
    let mut canonical = BTreeMap::new();
    for (k, v) in configs {
        match validate_topic_config(k, v) {
            Ok(v) => canonical.insert(k.clone(), v),
            Err(e) => return refuse(ErrorCode::InvalidConfig, e),
        };
    }
    let configs = &canonical;
    let live = image.unfenced_brokers();
    if rf < 1 {
        return refuse(
            ErrorCode::InvalidReplicationFactor,
            format!("replication factor {replication_factor} must be at least 1"),
        );
    }
    if rf as usize > live.len() {
        return refuse(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "replication factor {rf} is larger than the {} available (unfenced) brokers",
                live.len()
            ),
        );
    }
    if let Some(min_isr) = configs.get("min.insync.replicas") {
        let m: i32 = min_isr.parse().unwrap_or(1);
        if m > rf {
            return refuse(
                ErrorCode::InvalidConfig,
                format!("min.insync.replicas={m} is larger than the replication factor {rf}"),
            );
        }
    }
    let assignment = assign_replicas(&live, 0, partitions, rf).map_err(|e| Refusal {
        code: ErrorCode::InvalidReplicationFactor,
        message: e,
    })?;
    let mut records = vec![MetadataRecord::CreateTopic {
        name: name.to_string(),
        id,
        config: configs.clone(),
    }];
    records.extend(partition_records(id, 0, assignment));
    Ok(records)
}

fn partition_records(
    id: TopicId,
    first: i32,
    assignment: Vec<Vec<BrokerId>>,
) -> Vec<MetadataRecord> {
    assignment
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| MetadataRecord::Partition {
            topic_id: id,
            index: first + i as i32,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        })
        .collect()
}

fn topic<'a>(image: &'a MetadataImage, name: &str) -> Result<&'a TopicImage, Refusal> {
    match image.topic(name) {
        Some(t) => Ok(t),
        None => refuse(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        ),
    }
}

/// Deletes a topic.
pub fn delete_topic(image: &MetadataImage, name: &str) -> Result<Vec<MetadataRecord>, Refusal> {
    let t = topic(image, name)?;
    Ok(vec![MetadataRecord::DeleteTopic { id: t.id }])
}

/// Grows a topic to `total` partitions (never shrinks, as Kafka).
pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    total: i32,
) -> Result<Vec<MetadataRecord>, Refusal> {
    let t = topic(image, name)?;
    let have = t.partitions.len() as i32;
    if total <= have {
        return refuse(
            ErrorCode::InvalidPartitions,
            format!("topic {name:?} has {have} partitions; the new count {total} must be larger"),
        );
    }
    if total > PARTITIONS_PER_TOPIC_MAX {
        return refuse(
            ErrorCode::InvalidPartitions,
            format!("partition count {total} exceeds {PARTITIONS_PER_TOPIC_MAX}"),
        );
    }
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len() as i32);
    let live = image.unfenced_brokers();
    let assignment = assign_replicas(&live, have, total - have, rf).map_err(|e| Refusal {
        code: ErrorCode::InvalidReplicationFactor,
        message: e,
    })?;
    Ok(partition_records(t.id, have, assignment))
}

/// One config change: set (`Some`) or delete (`None`).
pub type ConfigOp = (String, Option<String>);

/// Applies config changes to a topic; every key and value is validated first.
pub fn alter_topic_configs(
    image: &MetadataImage,
    name: &str,
    ops: &[ConfigOp],
) -> Result<Vec<MetadataRecord>, Refusal> {
    let t = topic(image, name)?;
    let mut records = Vec::new();
    for (key, value) in ops {
        let check = match value {
            Some(v) => validate_topic_config(key, v).map(Some),
            None => validate_topic_config(key, effective(&BTreeMap::new(), key).unwrap_or(""))
                .map(|_| None),
        };
        let value = match check {
            Ok(v) => v,
            Err(e) => return refuse(ErrorCode::InvalidConfig, e),
        };
        records.push(MetadataRecord::TopicConfig {
            id: t.id,
            key: key.clone(),
            value,
        });
    }
    Ok(records)
}

/// Applies dynamic broker config changes to `resource` ("" = cluster-wide, or a broker id
/// in decimal); every key and value is validated first (Kafka's BROKER ConfigRecords).
pub fn alter_broker_configs(
    image: &MetadataImage,
    resource: &str,
    ops: &[ConfigOp],
) -> Result<Vec<MetadataRecord>, Refusal> {
    if !resource.is_empty() && resource.parse::<i32>().map_or(true, |id| id < 0) {
        return refuse(
            ErrorCode::InvalidRequest,
            format!("broker resource {resource:?} is neither \"\" (cluster-wide) nor a broker id"),
        );
    }
    let mut records = Vec::new();
    for (key, value) in ops {
        let value = match value {
            Some(v) => Some(
                sluice_metadata::config::validate_broker_config(resource, key, v)
                    .or_else(|e| refuse(ErrorCode::InvalidConfig, e))?,
            ),
            None => {
                if sluice_metadata::config::broker_config_key(key).is_none() {
                    let e = sluice_metadata::config::validate_broker_config(resource, key, "")
                        .expect_err("an unknown key is refused");
                    return refuse(ErrorCode::InvalidConfig, e);
                }
                // Deleting what is not set changes nothing, and writes no record (a
                // BrokerConfig record needs metadata format 4).
                let set = image
                    .broker_configs
                    .get(resource)
                    .is_some_and(|c| c.contains_key(key));
                if !set {
                    continue;
                }
                None
            }
        };
        records.push(MetadataRecord::BrokerConfig {
            resource: resource.to_string(),
            key: key.clone(),
            value,
        });
    }
    Ok(records)
}

/// One credential to set for a user: (mechanism, iterations, salt, salted password).
pub type ScramUpsertion = (
    sluice_metadata::scram::ScramMechanism,
    i32,
    Vec<u8>,
    Vec<u8>,
);

/// Records that set and remove one user's SCRAM credentials (Kafka's
/// AlterUserScramCredentials for one user): all of them or none.
pub fn alter_scram_credentials(
    image: &MetadataImage,
    name: &str,
    deletions: &[sluice_metadata::scram::ScramMechanism],
    upsertions: &[ScramUpsertion],
) -> Result<Vec<MetadataRecord>, Refusal> {
    use sluice_metadata::scram::{ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};
    sluice_metadata::scram::validate_user_name(name)
        .or_else(|e| refuse(ErrorCode::InvalidRequest, e))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    for m in deletions {
        if !seen.insert(*m) {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("user {name:?}: {m} named twice in one request"),
            );
        }
        if !image.users.get(name).is_some_and(|u| u.contains_key(m)) {
            return refuse(
                ErrorCode::ResourceNotFound,
                format!("user {name:?} has no {m} credential"),
            );
        }
        records.push(MetadataRecord::ScramCredentialRemoved {
            name: name.to_string(),
            mechanism: *m,
        });
    }
    for (m, iterations, salt, salted) in upsertions {
        if !seen.insert(*m) {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("user {name:?}: {m} named twice in one request"),
            );
        }
        let iterations = u32::try_from(*iterations)
            .ok()
            .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
            .ok_or_else(|| Refusal {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "user {name:?}: {m} iterations {iterations} outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"
                ),
            })?;
        if salt.is_empty() || salt.len() > 128 {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("user {name:?}: a salt of {} bytes (1..=128)", salt.len()),
            );
        }
        let want = match m {
            sluice_metadata::scram::ScramMechanism::Sha256 => 32,
            sluice_metadata::scram::ScramMechanism::Sha512 => 64,
        };
        if salted.len() != want {
            return refuse(
                ErrorCode::InvalidRequest,
                format!(
                    "user {name:?}: a {m} salted password is {want} bytes, not {}",
                    salted.len()
                ),
            );
        }
        records.push(MetadataRecord::ScramCredential {
            name: name.to_string(),
            mechanism: *m,
            credential: ScramCredential::from_salted_password(*m, salt, salted, iterations),
        });
    }
    Ok(records)
}

fn unclean_allowed(image: &MetadataImage, t: &TopicImage) -> bool {
    image.topic_config(t).unclean_leader_election_enable
}

/// Records that take `id` out of service: for every partition it leads, a new leader from
/// the ISR (first live replica in replica order) or none; it leaves every ISR unless it is
/// the last member. `alive` says which brokers may lead (excluding `id`).
fn remove_from_partitions(
    image: &MetadataImage,
    id: BrokerId,
    alive: &dyn Fn(BrokerId) -> bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for t in image.topics.values() {
        for (index, p) in t.partitions.iter().enumerate() {
            if !p.replicas.contains(&id) {
                continue;
            }
            let in_isr = p.isr.contains(&id);
            let mut isr: Vec<BrokerId> = p.isr.iter().copied().filter(|&b| b != id).collect();
            if isr.is_empty() {
                // The last member stays: it holds every acknowledged record.
                isr = p.isr.clone();
            }
            let mut leader = None;
            if p.leader == id {
                let candidate = PartitionState {
                    isr: isr.clone(),
                    ..p.clone()
                };
                match elect_leader(
                    &candidate,
                    |b| b != id && alive(b),
                    unclean_allowed(image, t),
                ) {
                    Some((b, unclean)) => {
                        leader = Some(b);
                        if unclean {
                            isr = vec![b];
                        }
                    }
                    None => leader = Some(NO_LEADER),
                }
            }
            let isr_changed = in_isr && isr != p.isr;
            if leader.is_some() || isr_changed {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: t.id,
                    index: index as i32,
                    isr: isr_changed.then_some(isr),
                    leader,
                });
            }
        }
    }
    records
}

/// Kafka's ElectLeaders election types (its `election_type` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Make the first replica (the preferred one) leader, if it is in the ISR and unfenced.
    Preferred = 0,
    /// Give a leaderless partition a leader from its live replicas even outside the ISR
    /// (records the ISR may not have are lost).
    Unclean = 1,
}

/// One partition's ElectLeaders outcome.
pub type ElectionOutcome = ((String, i32), Result<(), Refusal>);

/// Records for Kafka's ElectLeaders on `partitions` (every partition when `None`), and one
/// outcome per partition: ELECTION_NOT_NEEDED when the election would change nothing,
/// PREFERRED_LEADER_NOT_AVAILABLE / ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica may lead,
/// UNKNOWN_TOPIC_OR_PARTITION for what does not exist.
pub fn elect_leaders(
    image: &MetadataImage,
    election: Election,
    partitions: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionOutcome>) {
    let wanted: Vec<(String, i32)> = match partitions {
        Some(p) => p.to_vec(),
        None => image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len() as i32).map(|i| (t.name.clone(), i)))
            .collect(),
    };
    let mut records = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let outcomes = wanted
        .into_iter()
        .map(|(name, index)| {
            let r = (|| {
                let t = topic(image, &name)?;
                let Some(p) = usize::try_from(index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
                else {
                    return refuse(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("{name}-{index} does not exist"),
                    );
                };
                if !seen.insert((t.id, index)) {
                    return Ok(());
                }
                let change = match election {
                    Election::Preferred => {
                        let preferred = p.replicas[0];
                        if p.leader == preferred {
                            return refuse(
                                ErrorCode::ElectionNotNeeded,
                                format!("{name}-{index}: the preferred replica {preferred} leads"),
                            );
                        }
                        if !p.isr.contains(&preferred) || !image.is_unfenced(preferred) {
                            return refuse(
                                ErrorCode::PreferredLeaderNotAvailable,
                                format!(
                                    "{name}-{index}: the preferred replica {preferred} is {}",
                                    if image.is_unfenced(preferred) {
                                        "not in the ISR"
                                    } else {
                                        "fenced"
                                    }
                                ),
                            );
                        }
                        (None, preferred)
                    }
                    Election::Unclean => {
                        if p.leader != NO_LEADER {
                            return refuse(
                                ErrorCode::ElectionNotNeeded,
                                format!("{name}-{index} has a leader ({})", p.leader),
                            );
                        }
                        match elect_leader(p, |b| image.is_unfenced(b), true) {
                            Some((b, unclean)) => (unclean.then(|| vec![b]), b),
                            None => {
                                return refuse(
                                    ErrorCode::EligibleLeadersNotAvailable,
                                    format!(
                                        "{name}-{index}: no replica of {:?} is alive",
                                        p.replicas
                                    ),
                                )
                            }
                        }
                    }
                };
                records.push(MetadataRecord::PartitionChange {
                    topic_id: t.id,
                    index,
                    isr: change.0,
                    leader: Some(change.1),
                });
                Ok(())
            })();
            ((name, index), r)
        })
        .collect();
    (records, outcomes)
}

/// Kafka's automatic leader rebalance (`auto.leader.rebalance.enable`): for every broker
/// whose share of partitions it prefers (first replica) but does not lead exceeds
/// `percentage` (`leader.imbalance.per.broker.percentage`), preferred elections for those of
/// its partitions where it is in the ISR and unfenced.
pub fn rebalance_leaders(image: &MetadataImage, percentage: f64) -> Vec<MetadataRecord> {
    /// Partitions a broker prefers, how many it does not lead, and those it could lead.
    #[derive(Default)]
    struct Share {
        total: usize,
        not_led: usize,
        movable: Vec<(String, i32)>,
    }
    let mut preferred: BTreeMap<BrokerId, Share> = BTreeMap::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            let Some(&first) = p.replicas.first() else {
                continue;
            };
            let e = preferred.entry(first).or_default();
            e.total += 1;
            if p.leader != first {
                e.not_led += 1;
                if p.isr.contains(&first) && image.is_unfenced(first) {
                    e.movable.push((t.name.clone(), i as i32));
                }
            }
        }
    }
    let mut wanted = Vec::new();
    for s in preferred.into_values() {
        if s.total > 0 && s.not_led as f64 * 100.0 / s.total as f64 > percentage {
            wanted.extend(s.movable);
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    elect_leaders(image, Election::Preferred, Some(&wanted)).0
}

/// Names the history of a quorum whose log has not named one yet (`random`, made nonzero):
/// the first thing its first active controller commits (issue 15). Nothing once named.
pub fn name_history(image: &MetadataImage, random: u64) -> Vec<MetadataRecord> {
    if image.history_id != 0 {
        return Vec::new();
    }
    vec![MetadataRecord::HistoryStarted {
        history_id: random.max(1),
    }]
}

/// Fences a broker (session expired, controlled shutdown, or re-registration): the fence
/// record and, in the same batch, leader re-election for everything it led.
pub fn fence_broker(image: &MetadataImage, id: BrokerId) -> Vec<MetadataRecord> {
    let Some(b) = image.brokers.get(&id) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    if !b.fenced {
        records.push(MetadataRecord::BrokerFenced { id });
    }
    records.extend(remove_from_partitions(image, id, &|x| image.is_unfenced(x)));
    records
}

/// Unfences a broker that caught up, and gives leaderless partitions it can lead a leader.
pub fn unfence_broker(image: &MetadataImage, id: BrokerId) -> Vec<MetadataRecord> {
    match image.brokers.get(&id) {
        Some(b) if b.fenced => {}
        _ => return Vec::new(),
    }
    let mut records = vec![MetadataRecord::BrokerUnfenced { id }];
    let alive = |b: BrokerId| b == id || image.is_unfenced(b);
    for t in image.topics.values() {
        for (index, p) in t.partitions.iter().enumerate() {
            if p.leader != NO_LEADER || !p.replicas.contains(&id) {
                continue;
            }
            if let Some((leader, unclean)) = elect_leader(p, alive, unclean_allowed(image, t)) {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: t.id,
                    index: index as i32,
                    isr: unclean.then(|| vec![leader]),
                    leader: Some(leader),
                });
            }
        }
    }
    records
}

/// Registers (or re-registers) a broker. A re-registration by a new incarnation is a
/// restart: the broker is fenced first so it leads nothing until it catches up again. The
/// same incarnation retrying gets its registration back unchanged (no records). A new
/// incarnation while the registered one still has a live session is a second process with
/// the same `node.id`: `DUPLICATE_BROKER_REGISTRATION` (Kafka's
/// `ClusterControlManager.registerBroker`), so the two cannot keep fencing each other.
pub fn register_broker(
    image: &MetadataImage,
    id: BrokerId,
    incarnation_id: &str,
    endpoint: Endpoint,
    rack: Option<String>,
    registered_session_alive: bool,
) -> Result<Vec<MetadataRecord>, Refusal> {
    if id.get() < 0 {
        return refuse(
            ErrorCode::InvalidRequest,
            format!("broker id {id} must be >= 0"),
        );
    }
    if incarnation_id.is_empty() {
        return refuse(ErrorCode::InvalidRequest, "incarnation id is empty");
    }
    if endpoint.host.is_empty() || endpoint.port == 0 {
        return refuse(
            ErrorCode::InvalidRequest,
            format!("broker endpoint {endpoint} is invalid"),
        );
    }
    let mut records = Vec::new();
    if let Some(b) = image.brokers.get(&id) {
        if b.incarnation_id == incarnation_id {
            return Ok(records);
        }
        if registered_session_alive {
            return refuse(
                ErrorCode::DuplicateBrokerRegistration,
                format!(
                    "broker {id} is registered by incarnation {} whose session is alive; \
                     another process with node.id {id} is running (or the old one stopped \
                     less than broker.session.timeout.ms ago)",
                    b.incarnation_id
                ),
            );
        }
        records.extend(fence_broker(image, id));
    }
    records.push(MetadataRecord::RegisterBroker {
        id,
        incarnation_id: incarnation_id.to_string(),
        endpoint,
        rack,
    });
    Ok(records)
}

/// Checks that `broker_epoch` is the broker's current registration.
pub fn check_broker_epoch(image: &MetadataImage, id: BrokerId, epoch: i64) -> Result<(), Refusal> {
    match image.brokers.get(&id) {
        None => refuse(
            ErrorCode::BrokerIdNotRegistered,
            format!("broker {id} is not registered"),
        ),
        Some(b) if b.epoch != epoch => refuse(
            ErrorCode::StaleBrokerEpoch,
            format!("broker {id} epoch {epoch} is stale (current {})", b.epoch),
        ),
        Some(_) => Ok(()),
    }
}

/// An ISR change proposed by a partition leader (KIP-497 AlterPartition).
#[derive(Debug, Clone)]
pub struct AlterPartition {
    /// The proposing broker (must lead the partition).
    pub broker: BrokerId,
    /// The topic.
    pub topic_id: TopicId,
    /// The partition.
    pub index: i32,
    /// The leader epoch the proposer leads in.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// Proposed ISR.
    pub new_isr: Vec<BrokerId>,
}

/// Most proposals in one AlterPartitions request.
pub const ALTER_PARTITIONS_MAX: usize = 10_000;

/// Validates a batch of one leader's AlterPartition proposals (the broker epoch already
/// checked): each is decided as [`alter_partition`] decides it, alone; the accepted ones'
/// records go together. A partition named twice is refused the second time.
pub fn alter_partitions(
    image: &MetadataImage,
    reqs: &[AlterPartition],
) -> (Vec<MetadataRecord>, Vec<Result<PartitionState, Refusal>>) {
    let mut records = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let results = reqs
        .iter()
        .map(|req| {
            if !seen.insert((req.topic_id, req.index)) {
                return refuse(
                    ErrorCode::InvalidRequest,
                    format!(
                        "partition {} of topic id {} is named twice",
                        req.index, req.topic_id
                    ),
                );
            }
            let (r, state) = alter_partition(image, req)?;
            records.extend(r);
            Ok(state)
        })
        .collect();
    (records, results)
}

/// Validates an AlterPartition and returns the change (empty when nothing changes) and the
/// resulting partition state.
pub fn alter_partition(
    image: &MetadataImage,
    req: &AlterPartition,
) -> Result<(Vec<MetadataRecord>, PartitionState), Refusal> {
    let Some(t) = image.topics.get(&req.topic_id) else {
        return refuse(
            ErrorCode::UnknownTopicId,
            format!("unknown topic id {}", req.topic_id),
        );
    };
    let Some(p) = usize::try_from(req.index)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return refuse(
            ErrorCode::UnknownTopicOrPartition,
            format!("{}-{} does not exist", t.name, req.index),
        );
    };
    let at = format!("{}-{}", t.name, req.index);
    if req.leader_epoch < p.leader_epoch.get() {
        return refuse(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "{at}: leader epoch {} is older than {}",
                req.leader_epoch, p.leader_epoch
            ),
        );
    }
    if req.leader_epoch > p.leader_epoch.get() {
        return refuse(
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "{at}: leader epoch {} is newer than {}",
                req.leader_epoch, p.leader_epoch
            ),
        );
    }
    if p.leader != req.broker {
        return refuse(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "{at}: broker {} is not the leader (leader is {})",
                req.broker, p.leader
            ),
        );
    }
    if req.partition_epoch != p.partition_epoch.get() {
        return refuse(
            ErrorCode::InvalidUpdateVersion,
            format!(
                "{at}: partition epoch {} is not the current {}",
                req.partition_epoch, p.partition_epoch
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    if req.new_isr.is_empty()
        || !req.new_isr.contains(&req.broker)
        || !req
            .new_isr
            .iter()
            .all(|b| p.replicas.contains(b) && seen.insert(*b))
    {
        return refuse(
            ErrorCode::InvalidRequest,
            format!(
                "{at}: ISR {:?} must be distinct replicas of {:?} including the leader {}",
                req.new_isr, p.replicas, req.broker
            ),
        );
    }
    if let Some(b) = req
        .new_isr
        .iter()
        .find(|b| !p.isr.contains(b) && !image.is_unfenced(**b))
    {
        return refuse(
            ErrorCode::IneligibleReplica,
            format!("{at}: broker {b} is fenced and cannot join the ISR"),
        );
    }
    if req.new_isr == p.isr {
        return Ok((Vec::new(), p.clone()));
    }
    let mut next = p.clone();
    next.isr = req.new_isr.clone();
    next.partition_epoch = next.partition_epoch.next();
    Ok((
        vec![MetadataRecord::PartitionChange {
            topic_id: req.topic_id,
            index: req.index,
            isr: Some(req.new_isr.clone()),
            leader: None,
        }],
        next,
    ))
}

/// Hands `broker` the next block of producer ids.
pub fn allocate_producer_ids(image: &MetadataImage, broker: BrokerId, len: i64) -> MetadataRecord {
    MetadataRecord::ProducerIdBlock {
        broker,
        first: image.next_producer_id,
        len,
    }
}

/// How many bindings the cluster holds at most: each is checked on every authorized request.
pub const ACLS_MAX: usize = 100_000;

/// Records for Kafka's CreateAcls: one result per binding, in order. A binding that exists
/// already succeeds without a record (creating is idempotent, as in Kafka); an invalid one is
/// refused with INVALID_REQUEST naming the problem, and the others still go ahead.
pub fn create_acls(
    image: &MetadataImage,
    bindings: &[sluice_metadata::acl::AclBinding],
) -> (Vec<MetadataRecord>, Vec<Result<(), Refusal>>) {
    let mut records = Vec::new();
    let mut adding = std::collections::BTreeSet::new();
    let results = bindings
        .iter()
        .map(|b| {
            b.validate()
                .or_else(|e| refuse(ErrorCode::InvalidRequest, e))?;
            if image.acls.contains(b) || adding.contains(b) {
                return Ok(());
            }
            if image.acls.len() + adding.len() >= ACLS_MAX {
                return refuse(
                    ErrorCode::PolicyViolation,
                    format!("the cluster holds {ACLS_MAX} ACLs already; remove some first"),
                );
            }
            adding.insert(b.clone());
            records.push(MetadataRecord::AclCreated { acl: b.clone() });
            Ok(())
        })
        .collect();
    (records, results)
}

/// One AlterClientQuotas entry: who, and key → new value (`None` removes).
pub type QuotaAlteration = (
    sluice_metadata::quota::QuotaEntity,
    Vec<(String, Option<f64>)>,
);

/// Records for Kafka's AlterClientQuotas: each entry applies whole or not at all (a bad
/// entity, key or value refuses its entry with INVALID_REQUEST and changes none of it);
/// removing a quota that is not set is a no-op, as in Kafka.
pub fn alter_client_quotas(
    image: &MetadataImage,
    entries: &[QuotaAlteration],
) -> (Vec<MetadataRecord>, Vec<Result<(), Refusal>>) {
    use sluice_metadata::quota::{validate_entity, validate_quota, QuotaValue, ENTITIES_MAX};
    let mut records = Vec::new();
    let mut new_entities = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    let results = entries
        .iter()
        .map(|(entity, ops)| {
            validate_entity(entity).or_else(|e| refuse(ErrorCode::InvalidRequest, e))?;
            if !seen.insert(entity) {
                return refuse(
                    ErrorCode::InvalidRequest,
                    "the entity appears twice in one request".to_string(),
                );
            }
            let mut keys = std::collections::BTreeSet::new();
            for (key, value) in ops {
                validate_quota(key, *value).or_else(|e| refuse(ErrorCode::InvalidRequest, e))?;
                if !keys.insert(key) {
                    return refuse(
                        ErrorCode::InvalidRequest,
                        format!("{key} is changed twice in one entry"),
                    );
                }
            }
            let known = image.client_quotas.contains_key(entity) || new_entities.contains(entity);
            let sets = ops.iter().any(|(_, v)| v.is_some());
            if !known && sets {
                if image.client_quotas.len() + new_entities.len() >= ENTITIES_MAX {
                    return refuse(
                        ErrorCode::PolicyViolation,
                        format!("the cluster holds {ENTITIES_MAX} quota entities already"),
                    );
                }
                new_entities.insert(entity.clone());
            }
            let current = image.client_quotas.get(entity);
            for (key, value) in ops {
                let now = current.and_then(|c| c.get(key)).map(|v| v.0);
                if now == *value {
                    continue;
                }
                records.push(MetadataRecord::ClientQuota {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: value.map(QuotaValue),
                });
            }
            Ok(())
        })
        .collect();
    (records, results)
}

/// Records for Kafka's DeleteAcls: every binding that any filter matches goes, once; one
/// list per filter of the bindings it matched.
pub fn delete_acls(
    image: &MetadataImage,
    filters: &[sluice_metadata::acl::AclFilter],
) -> (
    Vec<MetadataRecord>,
    Vec<Vec<sluice_metadata::acl::AclBinding>>,
) {
    let mut removed = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    let matched = filters
        .iter()
        .map(|f| {
            let hits: Vec<_> = image
                .acls
                .iter()
                .filter(|a| f.matches(a))
                .cloned()
                .collect();
            for a in &hits {
                if removed.insert(a.clone()) {
                    records.push(MetadataRecord::AclRemoved { acl: a.clone() });
                }
            }
            hits
        })
        .collect();
    (records, matched)
}

#[cfg(test)]
mod tests;
