//! Raft RPCs between controllers over gRPC (`sluice.v1.Raft`): each openraft request and
//! response travels postcard-encoded in a `RaftPayload`.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_proto::v1::raft_client::RaftClient;
use sluice_proto::v1::RaftPayload;
use tonic::transport::Channel;

use crate::types::{NodeId, QuorumMember, TypeConfig};

/// Largest Raft message accepted (snapshot chunks are 3 MiB by default).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Creates one connection per peer. Peers are dialled at the address this node's own
/// `controller.quorum.voters` gives (as in Kafka), so each node may reach a peer its own
/// way (e.g. through a proxy); the address in the Raft membership is the fallback.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    /// Peer addresses from this node's configuration.
    pub voters: std::collections::BTreeMap<NodeId, String>,
    /// This node's id and directory id, sent with every request so the receiver can check
    /// the sender is the voter its membership names.
    pub me: (NodeId, String),
}

/// A lazily connected channel to one peer.
pub struct Connection {
    target: NodeId,
    /// The directory id the membership gives the target ("" while unbound): a node with
    /// another directory refuses the request (issue 15).
    target_directory_id: String,
    me: (NodeId, String),
    addr: String,
    client: Option<RaftClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &QuorumMember) -> Connection {
        Connection {
            target,
            target_directory_id: node.directory_id.clone(),
            me: self.me.clone(),
            addr: self
                .voters
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            client: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

enum CallError {
    Unreachable(Transport),
    Network(Transport),
}

impl Connection {
    fn client(&mut self) -> Result<RaftClient<Channel>, CallError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = sluice_proto::transport::internal_endpoint(&self.addr)
            .map_err(|e| CallError::Unreachable(Transport(e)))?;
        let client = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: &'static str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let payload =
            postcard::to_stdvec(req).map_err(|e| CallError::Network(Transport(e.to_string())))?;
        let mut client = self.client()?;
        let mut request = tonic::Request::new(RaftPayload {
            payload: payload.into(),
            target_directory_id: self.target_directory_id.clone(),
            sender_id: self.me.0,
            sender_directory_id: self.me.1.clone(),
        });
        request.set_timeout(ttl);
        let result = match kind {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let resp = result.map_err(|status| {
            // Drop the channel so the next call reconnects.
            self.client = None;
            let t = Transport(format!(
                "{kind} to node {} at {}: {status}",
                self.target, self.addr
            ));
            if status.code() == tonic::Code::Unavailable
                || status.code() == tonic::Code::DeadlineExceeded
            {
                CallError::Unreachable(t)
            } else {
                CallError::Network(t)
            }
        })?;
        postcard::from_bytes(&resp.into_inner().payload)
            .map_err(|e| CallError::Network(Transport(format!("undecodable {kind} response: {e}"))))
    }
}

fn to_rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, QuorumMember, E> {
    match e {
        CallError::Unreachable(t) => RPCError::Unreachable(Unreachable::new(&t)),
        CallError::Network(t) => RPCError::Network(NetworkError::new(&t)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, QuorumMember, RaftError<NodeId>>>
    {
        let r: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = self
            .call("append", &rpc, option.hard_ttl())
            .await
            .map_err(to_rpc_error)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, QuorumMember, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let r: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            self.call("snapshot", &rpc, option.hard_ttl())
                .await
                .map_err(to_rpc_error)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, QuorumMember, RaftError<NodeId>>> {
        let r: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self
            .call("vote", &rpc, option.hard_ttl())
            .await
            .map_err(to_rpc_error)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Asks the controller at `addr` who it is (`Raft.Identify`), within 1 s.
pub async fn identify(addr: &str) -> Option<sluice_proto::v1::IdentifyResponse> {
    let endpoint = sluice_proto::transport::internal_endpoint(addr).ok()?;
    let mut client = RaftClient::new(endpoint.connect_lazy());
    let mut request = tonic::Request::new(sluice_proto::v1::IdentifyRequest {});
    request.set_timeout(Duration::from_secs(1));
    tokio::time::timeout(Duration::from_secs(2), client.identify(request))
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// Whether any other voter of `voters` already belongs to a formed quorum of `cluster_id`
/// (its id, if so). Peers that do not answer count as not formed: a quorum being formed
/// starts its nodes at about the same time. Tries a few times, 3 s in all.
pub async fn probe_formed_quorum(
    me: NodeId,
    voters: &std::collections::BTreeMap<NodeId, String>,
    cluster_id: &str,
) -> Option<NodeId> {
    for _ in 0..3 {
        let asks = voters
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| async move { (*id, identify(addr).await) });
        let answers = futures::future::join_all(asks).await;
        for (id, answer) in &answers {
            if answer
                .as_ref()
                .is_some_and(|a| a.initialized && a.cluster_id == cluster_id)
            {
                return Some(*id);
            }
        }
        if answers.iter().all(|(_, a)| a.is_some()) {
            // Everyone answered, and nobody belongs to a quorum: it is being formed.
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}
