//! The openraft type configuration of the metadata quorum.

use serde::{Deserialize, Serialize};

/// Controller node id (`node.id`).
pub type NodeId = u64;

/// A member of the metadata quorum as the Raft membership records it: where it listens, and
/// the directory id of the disk it voted with (KIP-853's idea, issue 15). A voter is (node id,
/// directory id): a node that comes back with another directory (wiped, replaced) is not that
/// voter, never votes or counts toward a commit, and must be added again. Empty until the first
/// active controller learns it (a freshly formed quorum initializes with ids unbound).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumMember {
    /// `host:port` of its gRPC (Raft) listener.
    pub addr: String,
    /// Its data directory's id, or empty while unbound.
    pub directory_id: String,
}

impl std::fmt::Display for QuorumMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.directory_id.is_empty() {
            write!(f, "{} (directory unbound)", self.addr)
        } else {
            write!(f, "{} (directory {})", self.addr, self.directory_id)
        }
    }
}

/// What a committed entry produced: records that could not apply (normally none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaResponse {
    /// Descriptions of records skipped by `apply`.
    pub skipped: Vec<String>,
}

openraft::declare_raft_types!(
    /// Types of the metadata Raft group: each log entry carries one batch of metadata
    /// records, applied atomically.
    pub TypeConfig:
        D = sluice_metadata::records::RecordBatch,
        R = MetaResponse,
        NodeId = NodeId,
        Node = QuorumMember,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a controller.
pub type Raft = openraft::Raft<TypeConfig>;
