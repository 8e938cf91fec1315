//! The broker: partition replicas, produce/fetch, replication with ISR, and the metadata
//! follower that turns the controllers' image into local roles.
//!
//! ```text
//!   controllers ──WatchMetadata──► metadata follower ──► image ──► reconcile
//!        ▲                                                          │ become leader / follower
//!        │ Register / Heartbeat / AlterPartition                    ▼
//!   BrokerNode ◄──────────── partitions: (topic id, index) → Partition (log + role + HW)
//!        │                                                          ▲
//!   Broker gRPC: Produce / Fetch / ListOffsets / Metadata           │ follower fetchers
//! ```

pub mod assign;
pub mod authz;
pub mod data;
pub mod error;
pub mod group;
pub mod image_store;
pub mod kafka;
pub mod limits;
pub mod listener;
pub mod node;
pub mod partition;
pub mod quota;
pub mod replication;
pub mod service;

pub use node::{BrokerConfig, BrokerNode};
