//! One partition replica on this broker: its log and its pure [`ReplicaState`] (role, high
//! watermark, follower progress, maximal ISR, pending AlterPartition), owned in [`actor`],
//! changed only by commands (on its pinned I/O thread, or inline when they touch no file)
//! and reached through a cloneable [`PartitionHandle`].
//!
//! ```text
//!   producer ──Produce──► leader: append (offsets, epoch) ──► LEO
//!   follower ──Fetch(fetch_offset = its LEO, epoch)──► leader: records, HW
//!   leader: HW = min LEO over the maximal ISR; acks=all waits for HW > last offset
//! ```
//!
//! The rules live in [`state`]; [`actor`] owns the state and does the disk I/O off the
//! async workers, on the partition's pinned thread of the [`io`] pool, publishing HW, LEO and role facts on a watch channel so long polls and
//! acks=all waiters wake without asking it.

pub mod actor;
pub mod io;
pub mod state;
pub mod waker;

pub use actor::{
    Appended, FetchArgs, FetchData, FetchPosition, FetchedFromLeader, Offsets, PartitionCommand,
    PartitionHandle,
};
pub use state::{AlterIsr, AlterOutcome, ReplicaState, Role, RoleChange};
pub use waker::ChangeWaker;
