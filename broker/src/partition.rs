//! One partition replica on this broker: its log, its role (leader or follower) and the
//! replication state a leader keeps (follower LEOs, high watermark, ISR proposals).
//!
//! ```text
//!   producer ──Produce──► leader: append (offsets, epoch) ──► LEO
//!   follower ──Fetch(fetch_offset = its LEO, epoch)──► leader: records, HW
//!   leader: HW = min LEO over the ISR; acks=all waits for HW > last offset
//! ```
//!
//! State sits behind one tokio mutex per partition; the HW and LEO are also published on a
//! watch channel so long polls and acks=all waiters wake without holding the lock.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use sluice_metadata::{BrokerId, TopicId};
use sluice_storage::{Log, StorageError};
use tokio::sync::{watch, Mutex};

/// A partition's role on this broker, from the latest metadata image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We lead at `leader_epoch`.
    Leader {
        /// Epoch we lead in.
        leader_epoch: i32,
        /// Partition epoch (for AlterPartition).
        partition_epoch: i32,
        /// Committed ISR.
        isr: Vec<BrokerId>,
        /// All replicas.
        replicas: Vec<BrokerId>,
    },
    /// We follow `leader` (or nobody: -1) at `leader_epoch`.
    Follower {
        /// The leader broker, -1 when none.
        leader: BrokerId,
        /// Current leader epoch.
        leader_epoch: i32,
    },
}

/// Progress of one follower as the leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    /// The follower's log end offset (the offset it asked for last).
    pub log_end_offset: i64,
    /// When it was last caught up (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up: Instant,
    /// Our LEO when we answered its previous fetch, and when that was: reaching it later
    /// means it was caught up as of that earlier time.
    pub previous_fetch: Option<(i64, Instant)>,
}

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
    /// Current role.
    pub role: Role,
    /// High watermark: consumers see offsets below it.
    pub high_watermark: i64,
    /// Followers' progress (leader only).
    pub followers: HashMap<BrokerId, FollowerState>,
    /// An ISR change sent to the controller and not yet seen in metadata.
    pub pending_isr: Option<Vec<BrokerId>>,
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
    /// Wraps an opened log.
    pub fn new(topic: String, topic_id: TopicId, index: i32, log: Log, role: Role) -> Self {
        let leo = log.log_end_offset();
        let epoch = match &role {
            Role::Leader { leader_epoch, .. } | Role::Follower { leader_epoch, .. } => {
                *leader_epoch
            }
        };
        let (offsets_tx, _) = watch::channel(Offsets {
            high_watermark: 0,
            log_end_offset: leo,
            leader_epoch: epoch,
        });
        Partition {
            topic,
            topic_id,
            index,
            state: Mutex::new(PartitionState {
                log,
                role,
                high_watermark: 0,
                followers: HashMap::new(),
                pending_isr: None,
            }),
            offsets_tx,
        }
    }

    /// A receiver of HW/LEO/epoch changes.
    pub fn subscribe(&self) -> watch::Receiver<Offsets> {
        self.offsets_tx.subscribe()
    }

    /// Publishes the current offsets (call after any change).
    pub fn publish(&self, st: &PartitionState) {
        let epoch = match &st.role {
            Role::Leader { leader_epoch, .. } | Role::Follower { leader_epoch, .. } => {
                *leader_epoch
            }
        };
        self.offsets_tx.send_if_modified(|o| {
            let new = Offsets {
                high_watermark: st.high_watermark,
                log_end_offset: st.log.log_end_offset(),
                leader_epoch: epoch,
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
    /// Leader only: recomputes HW = min LEO over the ISR (never moves it backwards).
    /// Returns whether it advanced.
    pub fn maybe_advance_high_watermark(&mut self, me: BrokerId) -> bool {
        let Role::Leader { isr, .. } = &self.role else {
            return false;
        };
        let leo = self.log.log_end_offset();
        let mut min = leo;
        for b in isr {
            if *b == me {
                continue;
            }
            match self.followers.get(b) {
                Some(f) => min = min.min(f.log_end_offset),
                // A follower we have not heard from yet holds the HW where it is.
                None => min = min.min(self.high_watermark),
            }
        }
        if min > self.high_watermark {
            assert!(min <= leo, "HW {min} beyond LEO {leo}");
            self.high_watermark = min;
            true
        } else {
            false
        }
    }

    /// Follower: adopts the leader's HW, bounded by our own LEO.
    pub fn follow_high_watermark(&mut self, leader_hw: i64) {
        let hw = leader_hw.min(self.log.log_end_offset());
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
    }

    /// After a truncation, the HW cannot exceed the log end.
    pub fn clamp_high_watermark(&mut self) {
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
    }

    /// Appends replicated batches (follower).
    pub fn append_replicated(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.log.append_as_follower(bytes).map(|_| ())
    }
}
