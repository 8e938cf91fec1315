//! One partition replica on this broker: its log plus the pure [`ReplicaState`] (role,
//! high watermark, follower progress, maximal ISR, pending AlterPartition).
//!
//! ```text
//!   producer ──Produce──► leader: append (offsets, epoch) ──► LEO
//!   follower ──Fetch(fetch_offset = its LEO, epoch)──► leader: records, HW
//!   leader: HW = min LEO over the maximal ISR; acks=all waits for HW > last offset
//! ```
//!
//! The rules live in [`state`]; this module holds the log and the state together behind one
//! tokio mutex per partition, and publishes the HW and LEO on a watch channel so long polls
//! and acks=all waiters wake without holding the lock.

pub mod state;

use bytes::Bytes;
use sluice_metadata::TopicId;
use sluice_storage::{Log, StorageError};
use tokio::sync::{watch, Mutex};

pub use state::{AlterIsr, AlterOutcome, ReplicaState, Role, RoleChange};

/// Offsets published to waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// High watermark.
    pub high_watermark: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Leader epoch (changes wake waiters so they can re-check their role).
    pub leader_epoch: i32,
}

/// Mutable state of a partition.
pub struct PartitionState {
    /// The log on disk.
    pub log: Log,
    /// Role, HW, follower progress and ISR proposals.
    pub replica: ReplicaState,
}

/// A partition replica.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: TopicId,
    /// Partition index.
    pub index: i32,
    /// State; a tokio mutex because appends and reads happen inside async handlers.
    pub state: Mutex<PartitionState>,
    offsets_tx: watch::Sender<Offsets>,
}

impl Partition {
    /// Wraps an opened log and its replica state.
    pub fn new(
        topic: String,
        topic_id: TopicId,
        index: i32,
        log: Log,
        replica: ReplicaState,
    ) -> Self {
        let (offsets_tx, _) = watch::channel(Offsets {
            high_watermark: replica.high_watermark(),
            log_end_offset: log.log_end_offset(),
            leader_epoch: replica.role().leader_epoch(),
        });
        Partition {
            topic,
            topic_id,
            index,
            state: Mutex::new(PartitionState { log, replica }),
            offsets_tx,
        }
    }

    /// A receiver of HW/LEO/epoch changes.
    pub fn subscribe(&self) -> watch::Receiver<Offsets> {
        self.offsets_tx.subscribe()
    }

    /// The offsets last published.
    pub fn offsets(&self) -> Offsets {
        *self.offsets_tx.borrow()
    }

    /// Publishes the current offsets (call after any change).
    pub fn publish(&self, st: &PartitionState) {
        self.offsets_tx.send_if_modified(|o| {
            let new = Offsets {
                high_watermark: st.replica.high_watermark(),
                log_end_offset: st.log.log_end_offset(),
                leader_epoch: st.replica.role().leader_epoch(),
            };
            let changed = *o != new;
            *o = new;
            changed
        });
    }

    /// `topic-index` for logs and errors.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }
}

impl PartitionState {
    /// Leader only: recomputes the HW after our own log end moved.
    pub fn maybe_advance_high_watermark(&mut self) -> bool {
        let leo = self.log.log_end_offset();
        self.replica.maybe_advance_high_watermark(leo)
    }

    /// After a truncation, the HW cannot exceed the log end.
    pub fn clamp_high_watermark(&mut self) {
        let leo = self.log.log_end_offset();
        self.replica.clamp_high_watermark(leo);
    }

    /// Appends replicated batches (follower).
    pub fn append_replicated(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.log.append_as_follower(bytes).map(|_| ())
    }
}
