//! The records of the metadata log (ideas from KIP-631; names are ours). Every change to
//! cluster state is one of these, appended through Raft by the active controller.
//!
//! Versioning: records are serde enums encoded with postcard inside a [`RecordBatch`] that
//! carries [`RECORD_FORMAT_VERSION`]. New record kinds are added at the end of the enum and
//! new fields only in new variants, so older images and logs always decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{BrokerId, LeaderEpoch, PartitionEpoch, TopicId};
use crate::scram::{ScramCredential, ScramMechanism};

/// Version of the encoding of [`MetadataRecord`] batches and images (7: client quotas).
pub const RECORD_FORMAT_VERSION: u32 = 7;

/// Format 6: producer ids granted to principals, before client quotas; still decoded and still
/// written while no quota exists.
pub const RECORD_FORMAT_VERSION_V6: u32 = 6;

/// The format before users (version 4: dynamic broker configs), still decoded and still
/// written while no user exists.
pub const RECORD_FORMAT_VERSION_V4: u32 = 4;
/// Format 5: users and ACLs, before producer ids granted to principals.
pub const RECORD_FORMAT_VERSION_V5: u32 = 5;

/// The format before dynamic broker configs (version 3: brokers may have a Kafka endpoint of
/// their own), still decoded and still written while no dynamic broker config exists.
pub const RECORD_FORMAT_VERSION_V3: u32 = 3;

/// The image format before brokers' Kafka endpoints (version 2), still decoded.
pub const RECORD_FORMAT_VERSION_V2: u32 = 2;

/// The image format before `history_id` and `term` (version 1), still decoded.
pub const RECORD_FORMAT_VERSION_V1: u32 = 1;

/// Where a broker serves clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host name or IP address clients connect to.
    pub host: String,
    /// gRPC port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re-)registered; it is fenced until it catches up and is unfenced. The
    /// broker epoch is the metadata offset of this record (as in KRaft).
    RegisterBroker {
        /// The broker's `node.id`.
        id: BrokerId,
        /// Random id of this process incarnation: a restart registers anew.
        incarnation_id: String,
        /// Where it serves clients.
        endpoint: Endpoint,
        /// Rack, for rack-aware placement later.
        rack: Option<String>,
    },
    /// The active controller fenced the broker (session expired or controlled shutdown).
    BrokerFenced {
        /// Which broker.
        id: BrokerId,
    },
    /// The broker caught up with the metadata log and may lead partitions.
    BrokerUnfenced {
        /// Which broker.
        id: BrokerId,
    },
    /// The broker was removed from the cluster.
    UnregisterBroker {
        /// Which broker.
        id: BrokerId,
    },
    /// A topic was created (its partitions follow as `Partition` records in the same batch).
    CreateTopic {
        /// Topic name.
        name: String,
        /// Topic UUID.
        id: TopicId,
        /// Topic-level config overrides.
        config: BTreeMap<String, String>,
    },
    /// A new partition.
    Partition {
        /// Its topic.
        topic_id: TopicId,
        /// Partition index.
        index: i32,
        /// Replica brokers; the first is the preferred leader.
        replicas: Vec<BrokerId>,
        /// In-sync replicas.
        isr: Vec<BrokerId>,
        /// Leader, or -1.
        leader: BrokerId,
        /// Leader epoch.
        leader_epoch: LeaderEpoch,
        /// Partition epoch (bumped on every change).
        partition_epoch: PartitionEpoch,
    },
    /// A change of ISR and/or leader; bumps the partition epoch, and the leader epoch when
    /// the leader changes.
    PartitionChange {
        /// Its topic.
        topic_id: TopicId,
        /// Partition index.
        index: i32,
        /// New ISR, if it changed.
        isr: Option<Vec<BrokerId>>,
        /// New leader (-1 for none), if it changed.
        leader: Option<BrokerId>,
    },
    /// A topic and its partitions are gone.
    DeleteTopic {
        /// Which topic.
        id: TopicId,
    },
    /// A topic config was set (`Some`) or reset to the default (`None`).
    TopicConfig {
        /// Which topic.
        id: TopicId,
        /// Config key (Kafka name).
        key: String,
        /// New value, or `None` to remove the override.
        value: Option<String>,
    },
    /// Producer ids `[first, first + len)` belong to `broker`.
    ProducerIdBlock {
        /// The broker that asked.
        broker: BrokerId,
        /// First id of the block.
        first: i64,
        /// Number of ids.
        len: i64,
    },
    /// The first active controller of a newly formed quorum names its history (a random id),
    /// so brokers can tell a reset quorum's log from the one they applied even where the
    /// Raft terms and offsets coincide (issue 15). Only the first one counts.
    HistoryStarted {
        /// Random, nonzero.
        history_id: u64,
    },
    /// The registration just before it in the batch serves the Kafka protocol on a listener
    /// of its own (`KAFKA://` in `listeners`) at `endpoint`; without this record a broker
    /// serves Kafka on its one endpoint too.
    BrokerKafkaEndpoint {
        /// Which broker.
        id: BrokerId,
        /// Its advertised Kafka listener.
        endpoint: Endpoint,
    },
    /// A dynamic broker config was set (`Some`) or removed (`None`): Kafka's ConfigRecord of
    /// a BROKER resource, `resource` "" for the cluster-wide default or a broker id.
    BrokerConfig {
        /// "" (every broker) or the broker id in decimal.
        resource: String,
        /// Config key (Kafka's broker config name).
        key: String,
        /// New value, or `None` to remove it.
        value: Option<String>,
    },
    /// A user's SCRAM credential for one mechanism was set (Kafka's
    /// UserScramCredentialRecord): salted hashes only.
    ScramCredential {
        /// User name (the principal is `User:<name>`).
        name: String,
        /// Which mechanism.
        mechanism: ScramMechanism,
        /// Salt, stored key, server key, iterations.
        credential: ScramCredential,
    },
    /// A user's credential for one mechanism was removed; a user with none left is gone,
    /// and its sessions end.
    ScramCredentialRemoved {
        /// User name.
        name: String,
        /// Which mechanism.
        mechanism: ScramMechanism,
    },
    /// An ACL was created (Kafka's AccessControlEntryRecord).
    AclCreated {
        /// The binding.
        acl: crate::acl::AclBinding,
    },
    /// An ACL was removed.
    AclRemoved {
        /// The binding.
        acl: crate::acl::AclBinding,
    },
    /// A producer id was given to a principal (InitProducerId with an authorizer on): only
    /// that principal may write batches under it.
    ProducerIdGranted {
        /// The producer id.
        id: i64,
        /// `User:NAME`.
        principal: String,
    },
    /// A client quota set (`value`) or removed (`None`) — Kafka's ClientQuotaRecord.
    ClientQuota {
        /// Who it is for.
        entity: crate::quota::QuotaEntity,
        /// `producer_byte_rate`, `consumer_byte_rate` or `request_percentage`.
        key: String,
        /// The value, or `None` to remove the quota.
        value: Option<crate::quota::QuotaValue>,
    },
}

/// A batch of records as stored in one Raft log entry (applied atomically).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordBatch {
    /// Encoding version of the records.
    pub version: u32,
    /// The records, applied in order.
    pub records: Vec<MetadataRecord>,
}

impl RecordBatch {
    /// A batch at the lowest format version that holds its records: format 3 only for a
    /// `BrokerKafkaEndpoint`, so nodes of the previous build keep applying every other batch
    /// during a rolling upgrade.
    pub fn new(records: Vec<MetadataRecord>) -> Self {
        let needs_v7 = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::ClientQuota { .. }));
        let needs_v6 = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::ProducerIdGranted { .. }));
        let needs_v5 = records.iter().any(|r| {
            matches!(
                r,
                MetadataRecord::ScramCredential { .. }
                    | MetadataRecord::ScramCredentialRemoved { .. }
                    | MetadataRecord::AclCreated { .. }
                    | MetadataRecord::AclRemoved { .. }
            )
        });
        let needs_v4 = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::BrokerConfig { .. }));
        let needs_v3 = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::BrokerKafkaEndpoint { .. }));
        RecordBatch {
            version: if needs_v7 {
                RECORD_FORMAT_VERSION
            } else if needs_v6 {
                RECORD_FORMAT_VERSION_V6
            } else if needs_v5 {
                RECORD_FORMAT_VERSION_V5
            } else if needs_v4 {
                RECORD_FORMAT_VERSION_V4
            } else if needs_v3 {
                RECORD_FORMAT_VERSION_V3
            } else {
                RECORD_FORMAT_VERSION_V2
            },
            records,
        }
    }

    /// Encodes with postcard.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("records always serialize")
    }

    /// Decodes, refusing versions newer than this code understands.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let batch: RecordBatch = postcard::from_bytes(bytes)
            .map_err(|e| format!("undecodable metadata records: {e}"))?;
        if batch.version > RECORD_FORMAT_VERSION {
            return Err(format!(
                "metadata record format {} is newer than this build's {RECORD_FORMAT_VERSION}",
                batch.version
            ));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rolling upgrades: batches stay in format 2 (what the previous build applies) unless
    /// they carry a record only format 3 has.
    #[test]
    fn batches_use_the_lowest_format_their_records_need() {
        let plain = RecordBatch::new(vec![MetadataRecord::HistoryStarted { history_id: 7 }]);
        assert_eq!(plain.version, RECORD_FORMAT_VERSION_V2);
        let kafka = RecordBatch::new(vec![MetadataRecord::BrokerKafkaEndpoint {
            id: BrokerId(1),
            endpoint: Endpoint {
                host: "h".into(),
                port: 1,
            },
        }]);
        assert_eq!(kafka.version, RECORD_FORMAT_VERSION_V3);
        assert_eq!(RecordBatch::decode(&kafka.encode()).unwrap(), kafka);
        let config = RecordBatch::new(vec![MetadataRecord::BrokerConfig {
            resource: String::new(),
            key: "log.retention.ms".into(),
            value: Some("1000".into()),
        }]);
        assert_eq!(config.version, RECORD_FORMAT_VERSION_V4);
        assert_eq!(RecordBatch::decode(&config.encode()).unwrap(), config);
        let user = RecordBatch::new(vec![MetadataRecord::ScramCredentialRemoved {
            name: "alice".into(),
            mechanism: ScramMechanism::Sha256,
        }]);
        assert_eq!(user.version, RECORD_FORMAT_VERSION_V5);
        assert_eq!(RecordBatch::decode(&user.encode()).unwrap(), user);
        // ACL records are format 5 too (a format-4 node must refuse them by number, not
        // misread them).
        let acl = RecordBatch::new(vec![MetadataRecord::AclRemoved {
            acl: crate::acl::AclBinding {
                principal: "User:a".into(),
                host: "*".into(),
                resource_type: crate::acl::ResourceType::Topic,
                resource_name: "t".into(),
                pattern: crate::acl::PatternType::Literal,
                operation: crate::acl::Operation::Read,
                permission: crate::acl::Permission::Allow,
            },
        }]);
        assert_eq!(acl.version, RECORD_FORMAT_VERSION_V5);
        let granted = RecordBatch::new(vec![MetadataRecord::ProducerIdGranted {
            id: 7,
            principal: "User:a".into(),
        }]);
        assert_eq!(granted.version, RECORD_FORMAT_VERSION_V6);
        assert_eq!(RecordBatch::decode(&granted.encode()).unwrap(), granted);
        let quota = RecordBatch::new(vec![MetadataRecord::ClientQuota {
            entity: [("user".to_string(), Some("a".to_string()))].into(),
            key: "producer_byte_rate".into(),
            value: Some(crate::quota::QuotaValue(1024.0)),
        }]);
        assert_eq!(quota.version, RECORD_FORMAT_VERSION);
        assert_eq!(RecordBatch::decode(&quota.encode()).unwrap(), quota);
    }
}
