//! The openraft type configuration of the metadata quorum.

use serde::{Deserialize, Serialize};

/// Controller node id (`node.id`).
pub type NodeId = u64;

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
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a controller.
pub type Raft = openraft::Raft<TypeConfig>;
