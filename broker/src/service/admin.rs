//! The `Admin` service on a broker: every call relayed to the controllers.

use super::*;

/// Deadline of an Admin call relayed to a controller (a topic creation waits for the
/// quorum; a frozen controller must not hold the caller forever).
pub const ADMIN_RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Relays Admin calls to the controllers (which forward writes to the active one), so
/// `--bootstrap` may name a broker.
#[derive(Clone)]
pub struct AdminRelay {
    pub(super) node: Arc<BrokerNode>,
}

macro_rules! relay {
    ($( $m:ident, $Req:ty, $Resp:ty; )*) => {
        #[tonic::async_trait]
        impl Admin for AdminRelay {
            $(
                async fn $m(&self, r: Request<$Req>) -> Result<Response<$Resp>, Status> {
                    let caller = crate::authz::caller_of(&r);
                    let req = r.into_inner();
                    let mut last = Status::unavailable("no controller reachable");
                    for addr in &self.node.config.controllers {
                        let mut call = Request::new(req.clone());
                        call.set_timeout(ADMIN_RELAY_TIMEOUT);
                        on_behalf_of(&self.node, &mut call, &caller)?;
                        match AdminClient::new(self.node.channel(addr)).$m(call).await {
                            Ok(resp) => return Ok(resp),
                            Err(s) if s.code() == tonic::Code::Unavailable && sluice_proto::status::error_detail(&s).is_none() => last = s,
                            Err(s) => return Err(s),
                        }
                    }
                    Err(last)
                }
            )*
        }
    };
}

/// Marks a relayed call with the client it is for, so the controllers authorize the client
/// and not this broker (a node's own calls go as they are, and nothing is marked without an
/// authorizer: the controllers would have nothing to check).
pub fn on_behalf_of<T>(
    node: &BrokerNode,
    call: &mut Request<T>,
    caller: &sluice_metadata::acl::Caller,
) -> Result<(), Status> {
    if caller.node || node.config.authorizer.is_none() {
        return Ok(());
    }
    sluice_proto::auth::set_on_behalf_of(call, &caller.principal, &caller.host)
}

relay! {
    create_topics, CreateTopicsRequest, CreateTopicsResponse;
    delete_topics, DeleteTopicsRequest, DeleteTopicsResponse;
    list_topics, ListTopicsRequest, ListTopicsResponse;
    describe_topics, DescribeTopicsRequest, DescribeTopicsResponse;
    create_partitions, CreatePartitionsRequest, CreatePartitionsResponse;
    incremental_alter_configs, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    describe_configs, DescribeConfigsRequest, DescribeConfigsResponse;
    describe_cluster, DescribeClusterRequest, DescribeClusterResponse;
    describe_quorum, DescribeQuorumRequest, DescribeQuorumResponse;
    add_controller, AddControllerRequest, QuorumChangeResponse;
    remove_controller, RemoveControllerRequest, QuorumChangeResponse;
    alter_user_scram_credentials, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
    describe_user_scram_credentials, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
    create_acls, CreateAclsRequest, CreateAclsResponse;
    describe_acls, DescribeAclsRequest, DescribeAclsResponse;
    delete_acls, DeleteAclsRequest, DeleteAclsResponse;
    alter_client_quotas, AlterClientQuotasRequest, AlterClientQuotasResponse;
    describe_client_quotas, DescribeClientQuotasRequest, DescribeClientQuotasResponse;
    elect_leaders, ElectLeadersRequest, ElectLeadersResponse;
}
