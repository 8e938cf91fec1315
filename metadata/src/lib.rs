//! Cluster metadata: the records of the metadata log, the immutable image they build, the
//! delta each batch of records makes, and the validation rules both sides share. Pure code:
//! no IO, no clocks, no randomness; controllers and brokers run exactly this to agree.
//!
//! ```text
//!   active controller ── decides ──► records ──► Raft log (openraft) ──► every controller
//!                                                   │                      apply → image
//!                                                   └─ WatchMetadata ──► every broker
//!                                                                          apply → image + delta
//! ```

pub mod acl;
pub mod config;
pub mod history;
pub mod ids;
pub mod image;
pub mod placement;
pub mod quota;
pub mod records;
pub mod scram;
pub mod validate;

pub use history::{history_diverges, HistoryPosition};
pub use ids::{
    BrokerId, LeaderEpoch, Offset, PartitionEpoch, TopicId, TopicIdPartition, TopicPartition,
    NO_LEADER,
};
pub use image::{BrokerRegistration, MetadataDelta, MetadataImage, PartitionState, TopicImage};
pub use records::{Endpoint, MetadataRecord, RECORD_FORMAT_VERSION};
