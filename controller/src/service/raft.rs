//! `sluice.v1.Raft`: openraft RPCs between controllers, and forwarded admin requests.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use sluice_proto::status::error_status;
use sluice_proto::v1::raft_server::Raft;
use sluice_proto::v1::{
    ErrorCode, ForwardRequest, ForwardResponse, IdentifyRequest, IdentifyResponse, RaftPayload,
};
use tonic::{Request, Response, Status};

use super::AdminService;
use crate::node::ControllerNode;
use crate::types::TypeConfig;

/// Serves Raft RPCs for one controller.
#[derive(Clone)]
pub struct RaftService {
    node: Arc<ControllerNode>,
    admin: AdminService,
}

impl RaftService {
    /// A service over `node`; forwarded requests are run by `admin`.
    pub fn new(node: Arc<ControllerNode>, admin: AdminService) -> Self {
        RaftService { node, admin }
    }

    /// `vote`: also check the sender is the voter it claims to be (see `check_raft_identity`).
    fn check(&self, p: &RaftPayload, vote: bool) -> Result<(), Status> {
        self.node
            .check_raft_identity(
                &p.target_directory_id,
                p.sender_id,
                &p.sender_directory_id,
                vote,
            )
            .inspect_err(|e| {
                tracing::warn!(sender = p.sender_id, error = %e.message(), "refused a Raft request")
            })
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, p: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(p).map_err(|e| {
        error_status(
            ErrorCode::InvalidRequest,
            format!("undecodable {what} payload ({} bytes): {e}", p.len()),
            None,
        )
    })
}

/// Raft RPCs and forwarded admin requests must come from a controller (a certificate naming
/// `controller-N`) when this controller checks client certificates: a broker or client
/// certificate cannot rewrite the metadata log with a higher term. A Raft RPC must come from
/// the controller it names (`sender`, and the leader or candidate inside the payload, see
/// [`require_sender`]): one controller cannot speak for another.
fn require_controller<T>(
    node: &ControllerNode,
    r: &Request<T>,
    sender: Option<u64>,
) -> Result<(), Status> {
    let certs = r.peer_certs();
    let claimed = sender.map_or_else(
        || "to be a controller".to_string(),
        |s| format!("controller-{s}"),
    );
    sluice_proto::tls::check_peer(
        super::controller::identity_enforced(node),
        certs.as_deref().map(|c| c.as_slice()),
        &claimed,
        |id| match (id, sender) {
            (sluice_proto::tls::NodeIdentity::Controller(_), None) => true,
            (sluice_proto::tls::NodeIdentity::Controller(c), Some(s)) => c == s,
            _ => false,
        },
    )
    .map_err(|e| error_status(sluice_proto::ErrorCode::ClusterAuthorizationFailed, e, None))
}

/// The leader (AppendEntries, InstallSnapshot) or candidate (Vote) a Raft payload names must
/// be the sender the certificate was checked against.
fn require_sender(
    node: &ControllerNode,
    what: &str,
    sender: u64,
    named: Option<u64>,
) -> Result<(), Status> {
    if !super::controller::identity_enforced(node) || named == Some(sender) {
        return Ok(());
    }
    Err(error_status(
        sluice_proto::ErrorCode::ClusterAuthorizationFailed,
        format!("a {what} from controller-{sender} speaks for node {named:?}"),
        None,
    ))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let bytes = postcard::to_stdvec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload {
        payload: bytes.into(),
        ..Default::default()
    }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require_controller(&self.node, &r, Some(r.get_ref().sender_id))?;
        let p = r.into_inner();
        let req: AppendEntriesRequest<TypeConfig> = decode("AppendEntries", &p.payload)?;
        require_sender(
            &self.node,
            "AppendEntries",
            p.sender_id,
            req.vote.leader_id().voted_for(),
        )?;
        self.check(&p, false)?;
        let resp = self.node.raft.append_entries(req).await;
        if matches!(&resp, Ok(r) if r.is_success()) {
            self.node.leader_contact();
        }
        encode(&resp)
    }

    async fn vote(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        require_controller(&self.node, &r, Some(r.get_ref().sender_id))?;
        let p = r.into_inner();
        let req: VoteRequest<u64> = decode("Vote", &p.payload)?;
        require_sender(
            &self.node,
            "Vote",
            p.sender_id,
            req.vote.leader_id().voted_for(),
        )?;
        self.check(&p, true)?;
        encode(&self.node.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require_controller(&self.node, &r, Some(r.get_ref().sender_id))?;
        let p = r.into_inner();
        let req: InstallSnapshotRequest<TypeConfig> = decode("InstallSnapshot", &p.payload)?;
        require_sender(
            &self.node,
            "InstallSnapshot",
            p.sender_id,
            req.vote.leader_id().voted_for(),
        )?;
        self.check(&p, false)?;
        encode(&self.node.raft.install_snapshot(req).await)
    }

    async fn identify(
        &self,
        _r: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        let node = &self.node;
        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let voter = {
            let m = node.raft.metrics().borrow().membership_config.clone();
            let membership = m.membership();
            membership.voter_ids().any(|v| v == node.id)
                && membership.get_node(&node.id).is_some_and(|n| {
                    n.directory_id.is_empty() || n.directory_id == node.directory_id
                })
        };
        Ok(Response::new(IdentifyResponse {
            node_id: node.id,
            directory_id: node.directory_id.clone(),
            initialized,
            cluster_id: node.config.cluster_id.clone(),
            voter,
        }))
    }

    async fn forward(
        &self,
        r: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        require_controller(&self.node, &r, None)?;
        let req = r.into_inner();
        // Forwarded requests are never forwarded again: if leadership moved, say so.
        if self.node.route()?.is_some() {
            return Err(self.node.not_controller(self.node.leader()));
        }
        let caller = super::acls::forwarded_caller(&req);
        let response = self
            .admin
            .dispatch(&req.method, &req.command, &caller)
            .await?;
        Ok(Response::new(ForwardResponse {
            response: response.into(),
            committed_offset: Some(self.node.image().offset),
        }))
    }
}
