//! The metadata quorum: controllers run openraft over sled; the active controller (the Raft
//! leader) decides every change as metadata records; every controller applies the log to the
//! same image; brokers follow it through `WatchMetadata`.
//!
//! ```text
//!   Admin / Controller RPC ──► (not leader? forward to leader via Raft.Forward)
//!        │
//!        ▼  active controller only, one decision at a time
//!   logic::* (pure: image + request → records) ──► raft.client_write(batch)
//!        │                                              │ replicate (Raft RPCs over gRPC)
//!        ▼                                              ▼
//!   StateMachine::apply (every controller) ──► image (watch channel) ──► WatchMetadata streams
//! ```

pub mod logic;
pub mod network;
pub mod node;
pub mod service;
pub mod store;
pub mod types;

pub use node::{ControllerConfig, ControllerNode};
