//! Authorization of Admin calls (issue #16) and the ACL RPCs.
//!
//! Every Admin call is authorized where it runs, on the active controller, against its image:
//! the caller is the principal the interceptor authenticated, or — when a broker relays a
//! client's call — the principal the broker authenticated (`sluice-on-behalf-of`, accepted
//! only from a broker's certificate). A controller forwarding to the active one passes the
//! caller in `ForwardRequest`. Nodes pass every check.
//!
//! What each call needs is Kafka's: CreateTopics Create on the cluster or the topic,
//! DeleteTopics Delete, CreatePartitions Alter, IncrementalAlterConfigs AlterConfigs,
//! DescribeConfigs DescribeConfigs (topic, or the cluster for broker configs), ListTopics and
//! DescribeTopics Describe (topics the caller may not describe are left out, or refused when
//! named), DescribeQuorum and DescribeUserScramCredentials and DescribeAcls Describe on the
//! cluster, AddController/RemoveController, AlterUserScramCredentials, CreateAcls and DeleteAcls
//! Alter on the cluster. DescribeCluster is open to every authenticated caller (as in Kafka).

use std::sync::Arc;

use sluice_metadata::acl::{
    AclBinding, AclFilter, Caller, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CLUSTER_NAME,
};
use sluice_metadata::MetadataImage;
use sluice_proto::auth::{on_behalf_of, principal_of, request_host, Principal};
use sluice_proto::status::error_status;
use sluice_proto::v1 as pb;
use sluice_proto::v1::ErrorCode;
use tonic::{Request, Status};

use crate::logic;
use crate::node::ControllerNode;

/// Who made an Admin call (a relayed client's principal only matters with an authorizer).
pub(crate) fn caller_of<T>(node: &ControllerNode, r: &Request<T>) -> Result<Caller, Status> {
    if node.config.authorizer.is_some() {
        if let Some((principal, host)) = on_behalf_of(r)? {
            return Ok(Caller::user(principal, host));
        }
    }
    let p = principal_of(r);
    Ok(match p {
        Principal::Node(_) => Caller::node(p.to_string()),
        _ => Caller::user(p.to_string(), request_host(r)),
    })
}

/// The caller a forwarding controller named (empty principal: a node).
pub(crate) fn forwarded_caller(req: &pb::ForwardRequest) -> Caller {
    if req.principal.is_empty() {
        Caller::node(format!("User:controller-{}", req.from_node_id))
    } else {
        Caller::user(req.principal.clone(), req.client_host.clone())
    }
}

/// What a ForwardRequest carries for `caller`.
pub(crate) fn forward_fields(caller: &Caller) -> (String, String) {
    if caller.node {
        (String::new(), String::new())
    } else {
        (caller.principal.clone(), caller.host.clone())
    }
}

/// One caller's checks against one image.
pub(crate) struct Access {
    node: Arc<ControllerNode>,
    image: Arc<MetadataImage>,
    caller: Caller,
}

impl Access {
    pub(crate) fn new(node: &Arc<ControllerNode>, caller: &Caller) -> Self {
        Access {
            node: node.clone(),
            image: node.image(),
            caller: caller.clone(),
        }
    }

    /// Whether the caller may do `op` on the resource.
    pub(crate) fn allows(&self, op: Operation, t: ResourceType, name: &str) -> bool {
        sluice_metadata::acl::allowed(
            self.node.config.authorizer.as_ref(),
            &self.image.acls,
            &self.caller,
            op,
            t,
            name,
        )
    }

    fn refusal(&self, op: Operation, t: ResourceType, name: &str) -> String {
        format!(
            "{} may not {} {} {name:?}: no ACL allows it",
            self.caller.principal,
            op.name(),
            t.name().to_ascii_lowercase()
        )
    }

    /// `Ok` when the caller may do `op` on the cluster, else CLUSTER_AUTHORIZATION_FAILED.
    pub(crate) fn cluster(&self, op: Operation) -> Result<(), Status> {
        if self.allows(op, ResourceType::Cluster, CLUSTER_NAME) {
            return Ok(());
        }
        Err(error_status(
            ErrorCode::ClusterAuthorizationFailed,
            self.refusal(op, ResourceType::Cluster, CLUSTER_NAME),
            None,
        ))
    }

    /// `None` when the caller may do `op` on topic `name`, else the per-item error.
    pub(crate) fn topic(&self, op: Operation, name: &str) -> Option<(i32, String)> {
        if self.allows(op, ResourceType::Topic, name) {
            return None;
        }
        Some((
            ErrorCode::TopicAuthorizationFailed as i32,
            self.refusal(op, ResourceType::Topic, name),
        ))
    }

    /// CreateTopics: Create on the cluster, or on the topic.
    pub(crate) fn create_topic(&self, name: &str) -> Option<(i32, String)> {
        if self.allows(Operation::Create, ResourceType::Cluster, CLUSTER_NAME) {
            return None;
        }
        self.topic(Operation::Create, name)
    }

    /// Configs of a topic are the topic's; broker configs are the cluster's.
    pub(crate) fn config(&self, op: Operation, broker: bool, name: &str) -> Option<(i32, String)> {
        if !broker {
            return self.topic(op, name);
        }
        self.cluster(op).err().map(|s| {
            (
                ErrorCode::ClusterAuthorizationFailed as i32,
                sluice_proto::status::error_detail(&s)
                    .map(|d| d.message)
                    .unwrap_or_default(),
            )
        })
    }
}

fn code<T>(v: i32, from: impl Fn(i8) -> Option<T>, what: &str) -> Result<T, String> {
    i8::try_from(v)
        .ok()
        .and_then(from)
        .ok_or_else(|| format!("{v} is not an ACL {what}"))
}

/// A binding from the wire (ANY and MATCH are filters only).
pub(crate) fn binding_from_pb(b: &pb::AclBinding) -> Result<AclBinding, String> {
    Ok(AclBinding {
        principal: b.principal.clone(),
        host: b.host.clone(),
        resource_type: code(b.resource_type, ResourceType::from_code, "resource type")?,
        resource_name: b.resource_name.clone(),
        pattern: code(
            b.pattern_type,
            PatternType::from_code,
            "pattern type (LITERAL or PREFIXED)",
        )?,
        operation: code(b.operation, Operation::from_code, "operation")?,
        permission: code(
            b.permission,
            Permission::from_code,
            "permission (ALLOW or DENY)",
        )?,
    })
}

/// A binding for the wire.
pub(crate) fn binding_to_pb(b: &AclBinding) -> pb::AclBinding {
    pb::AclBinding {
        principal: b.principal.clone(),
        host: b.host.clone(),
        resource_type: b.resource_type.code() as i32,
        resource_name: b.resource_name.clone(),
        pattern_type: b.pattern.code() as i32,
        operation: b.operation.code() as i32,
        permission: b.permission.code() as i32,
    }
}

/// A filter from the wire: empty strings and ANY (1) match everything.
pub(crate) fn filter_from_pb(f: &pb::AclFilter) -> Result<AclFilter, String> {
    let any = |v: i32| v == 1;
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(AclFilter {
        principal: text(&f.principal),
        host: text(&f.host),
        resource_type: if any(f.resource_type) {
            None
        } else {
            Some(code(
                f.resource_type,
                ResourceType::from_code,
                "resource type",
            )?)
        },
        resource_name: text(&f.resource_name),
        pattern: code(f.pattern_type, PatternFilter::from_code, "pattern type")?,
        operation: if any(f.operation) {
            None
        } else {
            Some(code(f.operation, Operation::from_code, "operation")?)
        },
        permission: if any(f.permission) {
            None
        } else {
            Some(code(f.permission, Permission::from_code, "permission")?)
        },
    })
}

fn security_disabled() -> Status {
    error_status(
        ErrorCode::SecurityDisabled,
        "this cluster runs without an authorizer (authorizer.class.name is empty): ACLs would not be enforced",
        None,
    )
}

fn invalid(message: String) -> Status {
    error_status(ErrorCode::InvalidRequest, message, None)
}

impl super::AdminService {
    pub(super) async fn create_acls_local(
        &self,
        req: pb::CreateAclsRequest,
        caller: &Caller,
    ) -> Result<pb::CreateAclsResponse, Status> {
        super::admin::check_count(req.creations.len())?;
        if self.node.config.authorizer.is_none() {
            return Err(security_disabled());
        }
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        let parsed: Vec<Result<AclBinding, String>> =
            req.creations.iter().map(binding_from_pb).collect();
        let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
        let (_, decided) = self
            .node
            .decide(|img| Ok(logic::create_acls(img, &valid)))
            .await?;
        let results = super::admin::per_item(parsed, decided)
            .into_iter()
            .map(|(code, message)| pb::CreateAclResult {
                error_code: code as i32,
                error_message: message,
            })
            .collect();
        Ok(pb::CreateAclsResponse { results })
    }

    pub(super) async fn describe_acls_local(
        &self,
        req: pb::DescribeAclsRequest,
        caller: &Caller,
    ) -> Result<pb::DescribeAclsResponse, Status> {
        if self.node.config.authorizer.is_none() {
            return Err(security_disabled());
        }
        Access::new(&self.node, caller).cluster(Operation::Describe)?;
        let filter = match &req.filter {
            Some(f) => filter_from_pb(f).map_err(invalid)?,
            None => AclFilter::any(),
        };
        let image = self.node.ensure_current().await?;
        let acls = image
            .acls
            .iter()
            .filter(|a| filter.matches(a))
            .map(binding_to_pb)
            .collect();
        Ok(pb::DescribeAclsResponse { acls })
    }

    pub(super) async fn delete_acls_local(
        &self,
        req: pb::DeleteAclsRequest,
        caller: &Caller,
    ) -> Result<pb::DeleteAclsResponse, Status> {
        super::admin::check_count(req.filters.len())?;
        if self.node.config.authorizer.is_none() {
            return Err(security_disabled());
        }
        Access::new(&self.node, caller).cluster(Operation::Alter)?;
        let filters: Vec<Result<AclFilter, String>> =
            req.filters.iter().map(filter_from_pb).collect();
        let valid: Vec<AclFilter> = filters.iter().filter_map(|f| f.clone().ok()).collect();
        let (_, matched) = self
            .node
            .decide(|img| Ok(logic::delete_acls(img, &valid)))
            .await?;
        let mut matched = matched.into_iter();
        let results = filters
            .into_iter()
            .map(|f| match f {
                Err(e) => pb::DeleteAclsResult {
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: e,
                    matched: Vec::new(),
                },
                Ok(_) => pb::DeleteAclsResult {
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                    matched: matched
                        .next()
                        .expect("one list per valid filter")
                        .iter()
                        .map(binding_to_pb)
                        .collect(),
                },
            })
            .collect();
        Ok(pb::DeleteAclsResponse { results })
    }
}
