//! Authorization on the broker (issue #16): the checks every request of both protocols makes
//! against the ACLs in this broker's metadata image, with Kafka's operations and codes.
//!
//! ```text
//!   gRPC call ── interceptor ──► Principal ─┐
//!   Kafka conn ── SASL / cert ──► Principal ─┴─► Caller ─► Access (image's ACLs) ─► allow?
//! ```
//!
//! Which request needs what is Kafka's: Produce Write on the topic; Fetch Read; ListOffsets,
//! OffsetForLeaderEpoch and Metadata Describe (Metadata leaves out topics the caller may not
//! describe, auto-creation needs Create); InitProducerId IdempotentWrite on the cluster or
//! Write on some topic; group requests Read on the group (Describe for FindCoordinator,
//! DescribeGroups, OffsetFetch; Delete for DeleteGroups), with Read (commit) or Describe
//! (fetch) on each topic; ListGroups every group with Describe on the cluster, else those the
//! caller may describe. Admin calls are relayed to the controllers with the caller
//! (`sluice-on-behalf-of`), which authorize them. Nodes pass every check; without an
//! authorizer every check passes.

use std::sync::Arc;

use sluice_metadata::acl::{Caller, Operation, ResourceType, CLUSTER_NAME};
use sluice_metadata::MetadataImage;
use sluice_proto::auth::{principal_of, request_host, Principal};
use sluice_proto::status::error_status;
use sluice_proto::v1::ErrorCode;
use tonic::{Request, Status};

use crate::node::BrokerNode;

/// How long a produce waits for this broker's image to show a producer id's grant that the
/// controller committed moments ago (InitProducerId answered through another broker).
pub const GRANT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// The caller of a gRPC request (its principal from the interceptor, its host).
pub fn caller_of<T>(r: &Request<T>) -> Caller {
    caller(&principal_of(r), request_host(r))
}

/// The caller for `principal` connected from `host`.
pub fn caller(principal: &Principal, host: String) -> Caller {
    match principal {
        Principal::Node(_) => Caller::node(principal.to_string()),
        _ => Caller::user(principal.to_string(), host),
    }
}

/// One caller's checks against one image.
pub struct Access {
    node: Arc<BrokerNode>,
    image: Arc<MetadataImage>,
    caller: Caller,
}

impl Access {
    /// Checks for `caller` on `node`'s current image.
    pub fn new(node: &Arc<BrokerNode>, caller: &Caller) -> Self {
        Access {
            node: node.clone(),
            image: node.image(),
            caller: caller.clone(),
        }
    }

    /// Whether checks can refuse anything (an authorizer is on and the caller is no node).
    pub fn restricted(&self) -> bool {
        self.node.config.authorizer.is_some() && !self.caller.node
    }

    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether the caller may do `op` on the resource.
    pub fn allows(&self, op: Operation, t: ResourceType, name: &str) -> bool {
        sluice_metadata::acl::allowed(
            self.node.config.authorizer.as_ref(),
            &self.image.acls,
            &self.caller,
            op,
            t,
            name,
        )
    }

    fn refused(&self, code: ErrorCode, op: Operation, t: ResourceType, name: &str) -> Status {
        error_status(
            code,
            format!(
                "{} may not {} {} {name:?}: no ACL allows it",
                self.caller.principal,
                op.name(),
                t.name().to_ascii_lowercase()
            ),
            None,
        )
    }

    /// `Ok` when the caller may do `op` on topic `name`, else TOPIC_AUTHORIZATION_FAILED.
    pub fn topic(&self, op: Operation, name: &str) -> Result<(), Status> {
        if self.allows(op, ResourceType::Topic, name) {
            return Ok(());
        }
        Err(self.refused(
            ErrorCode::TopicAuthorizationFailed,
            op,
            ResourceType::Topic,
            name,
        ))
    }

    /// `Ok` when the caller may do `op` on group `name`, else GROUP_AUTHORIZATION_FAILED.
    pub fn group(&self, op: Operation, name: &str) -> Result<(), Status> {
        if self.allows(op, ResourceType::Group, name) {
            return Ok(());
        }
        Err(self.refused(
            ErrorCode::GroupAuthorizationFailed,
            op,
            ResourceType::Group,
            name,
        ))
    }

    /// `Ok` when the caller may do `op` on the cluster, else CLUSTER_AUTHORIZATION_FAILED.
    pub fn cluster(&self, op: Operation) -> Result<(), Status> {
        if self.allows(op, ResourceType::Cluster, CLUSTER_NAME) {
            return Ok(());
        }
        Err(self.refused(
            ErrorCode::ClusterAuthorizationFailed,
            op,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ))
    }

    /// Writing to an internal topic (`__consumer_offsets`): brokers only, whatever the ACLs
    /// say (Kafka refuses client appends to internal topics with INVALID_TOPIC_EXCEPTION).
    pub fn write(&self, topic: &str) -> Result<(), Status> {
        if topic.starts_with("__") && !self.caller.node {
            return Err(error_status(
                ErrorCode::InvalidTopicException,
                format!("{topic:?} is an internal topic: only brokers write to it"),
                None,
            ));
        }
        self.topic(Operation::Write, topic)
    }

    /// ListGroups: every group with Describe on the cluster, else those it may describe.
    pub fn may_list_group(&self, group: &str) -> bool {
        self.allows(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME)
            || self.allows(Operation::Describe, ResourceType::Group, group)
    }

    /// Auto-creating a topic: Create on the cluster or the topic.
    pub fn may_create(&self, topic: &str) -> bool {
        self.allows(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
            || self.allows(Operation::Create, ResourceType::Topic, topic)
    }

    /// The producer ids of `batches` (concatenated RecordBatch v2 bytes) must have been given
    /// to the caller (with an authorizer on, InitProducerId grants each id to its principal in
    /// the metadata log): a principal cannot write under another producer's id, nor under one
    /// never handed out, so it cannot make a real producer's first batch look like a
    /// duplicate. An id this broker's image has not seen allocated yet (the grant is racing
    /// here) is waited for, briefly. CLUSTER_AUTHORIZATION_FAILED otherwise.
    pub async fn producer_ids(&self, batches: &[u8]) -> Result<(), Status> {
        if !self.restricted() {
            return Ok(());
        }
        for h in sluice_storage::batch::headers(batches) {
            if h.producer_id >= 0 {
                self.producer_id(h.producer_id).await?;
            }
        }
        Ok(())
    }

    /// A gRPC produce: Write on the topic ([`Self::write`]) and its producer id.
    pub async fn produce(&self, req: &sluice_proto::v1::ProduceRequest) -> Result<(), Status> {
        use sluice_proto::v1::produce_request::Payload;
        self.write(&req.topic)?;
        match &req.payload {
            Some(Payload::RecordBatch(b)) => self.producer_ids(b).await,
            Some(Payload::Records(list)) => match list.producer_id {
                Some(id) if id >= 0 => self.producer_id(id).await,
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// [`Self::producer_ids`] for one id.
    pub async fn producer_id(&self, id: i64) -> Result<(), Status> {
        if !self.restricted() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + GRANT_WAIT_MAX;
        // Subscribed before the image is read: no new image can slip in unnoticed.
        let mut images = self.node.subscribe_images();
        loop {
            let image = self.node.image();
            match image.producer_principals.get(&id) {
                Some(p) if *p == self.caller.principal => return Ok(()),
                Some(_) => break,
                None if id < image.next_producer_id => break,
                None => {}
            }
            if tokio::time::timeout_at(deadline, images.changed())
                .await
                .map_or(true, |r| r.is_err())
            {
                // One last look: the image in place at the deadline decides.
                let image = self.node.image();
                if image.producer_principals.get(&id) == Some(&self.caller.principal) {
                    return Ok(());
                }
                break;
            }
        }
        Err(error_status(
            ErrorCode::ClusterAuthorizationFailed,
            format!(
                "producer id {id} was not given to {} (InitProducerId gives each producer its own)",
                self.caller.principal
            ),
            None,
        ))
    }

    /// InitProducerId without a transactional id (KIP-679): IdempotentWrite on the cluster,
    /// or Write on any topic.
    pub fn idempotent_write(&self) -> Result<(), Status> {
        if !self.restricted()
            || self.allows(
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                CLUSTER_NAME,
            )
            || self
                .image
                .topic_ids
                .keys()
                .any(|t| self.allows(Operation::Write, ResourceType::Topic, t))
        {
            return Ok(());
        }
        self.cluster(Operation::IdempotentWrite)
    }
}
