//! Replica fetching per broker pair (KIP-227 fetch sessions over `Replication.ReplicaFetch`).
//!
//! ```text
//!   follower broker                                   leader broker
//!   ReplicaFetchers ── per (leader, fetcher index) ──► FetchSessions
//!     fetcher task: one session, all its partitions      one waiter per session,
//!     incremental requests (changed positions only)      woken by any partition's change
//!     applies answers through each PartitionHandle       serves through each PartitionHandle
//! ```
//!
//! [`session`] holds the pure bookkeeping (what each side knows of the other), with table
//! tests; [`leader`] and [`follower`] are the async shells. Fencing, divergence, HW and
//! ISR rules stay in each partition's `ReplicaState`.

pub mod follower;
pub mod leader;
pub mod session;

pub use follower::ReplicaFetchers;
pub use leader::FetchSessions;
