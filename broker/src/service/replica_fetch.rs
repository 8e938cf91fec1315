//! `Replication.ReplicaFetch`: followers' fetch sessions (see `crate::replication`).

use std::sync::Arc;
use std::time::Instant;

use sluice_proto::v1::replication_server::Replication;
use sluice_proto::v1::{ReplicaFetchRequest, ReplicaFetchResponse};
use tonic::{Request, Response, Status};

use crate::node::BrokerNode;

/// The Replication service of a broker.
#[derive(Clone)]
pub struct ReplicationService {
    node: Arc<BrokerNode>,
}

impl ReplicationService {
    /// The service of `node`.
    pub fn new(node: Arc<BrokerNode>) -> Self {
        ReplicationService { node }
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn replica_fetch(
        &self,
        r: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        let t = Instant::now();
        super::require_broker(&self.node, &r, r.get_ref().replica_id)?;
        let r = crate::replication::leader::replica_fetch(&self.node, r.into_inner()).await;
        super::observe("replica_fetch", t, &r);
        Ok(Response::new(r?))
    }
}
