//! One owner per partition replica: the replica's state (`Log` + [`ReplicaState`]) lives
//! behind one lock that only its I/O thread takes for disk work; everything else holds a
//! cloneable [`PartitionHandle`] and sends it [`PartitionCommand`]s, each answered on a
//! oneshot.
//!
//! ```text
//!   produce / fetch handlers ─┐                    ┌─► the partition's pinned I/O thread
//!   follower fetcher ─────────┼─► PartitionHandle ─┤   (io.rs): commands in order, a
//!   ISR loop, retention ──────┘      │   ▲         │   pending role change first
//!   reconcile ── set_role (newest wins)  │         └─► memory-only commands run inline when
//!                                        │             the replica is idle (try_lock)
//!                       watch: Offsets (HW, LEO, epoch, ISR) ◄── published after each command
//! ```
//!
//! Disk I/O never runs on the async workers: a command that may touch a file is queued on
//! the partition's I/O thread, which runs it against the replica and answers the caller
//! directly (one hop: no actor task in between; `cargo bench -p sluice-broker --bench
//! handoff`). Commands answered from memory (offset and role questions, ISR bookkeeping, a
//! fetch with nothing to read) run in the caller when nobody holds the replica, so a long
//! poll does not wait behind other partitions' disk work (it does behind its own). At most [`PARTITION_COMMANDS_QUEUED_MAX`] commands per
//! partition wait for the thread; callers beyond that wait to queue. Role changes replace a
//! pending slot, so the newest role always wins, and are applied before the next command.
//! Long polls and acks=all waits happen in the callers, on the `Offsets` watch.

pub use crate::limits::PARTITION_COMMANDS_QUEUED_MAX;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_metadata::{BrokerId, TopicId, TopicIdPartition};
use sluice_storage::{AppendInfo, LeaderEpoch, Log, LogConfig, Offset, Records, StorageError};
use tokio::sync::{oneshot, watch, Semaphore};

use super::state::{diverging_epoch, AlterIsr, AlterOutcome, DivergingEpoch, RoleChange};
use super::waker::{ChangeWaker, Listeners};
use super::{ReplicaState, Role};
use crate::error::BrokerError;

/// Offsets and role facts published to waiters (long polls, acks=all, the HW checkpoint,
/// the group coordinator) so they need not ask the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// High watermark.
    pub high_watermark: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Leader epoch (changes wake waiters so they can re-check their role).
    pub leader_epoch: i32,
    /// Whether this replica leads.
    pub is_leader: bool,
    /// Size of the committed ISR (leader only; 0 as follower).
    pub isr_size: usize,
    /// Leader: nothing for the ISR tick to propose until we append (see
    /// `ReplicaState::isr_settled`).
    pub isr_settled: bool,
}

/// What a follower's fetch from the leader brought back.
#[derive(Debug)]
pub enum FetchedFromLeader {
    /// Records (possibly none) and the leader's HW.
    Records {
        /// Stored batches to append unchanged.
        batches: Bytes,
        /// The leader's HW.
        high_watermark: i64,
    },
    /// Our log diverged: truncate as told (KIP-320/595).
    Diverging(DivergingEpoch),
    /// Our log end is below the leader's log start: start over there.
    StartAt(i64),
}

/// Where a follower fetches next: its log end offset and the epoch of its last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// The follower's log end offset.
    pub fetch_offset: i64,
    /// The epoch of its last record; `None` for an empty log.
    pub last_fetched_epoch: Option<i32>,
}

/// A fetch as the partition sees it (validated sizes; the caller handles the long poll).
#[derive(Debug, Clone)]
pub struct FetchArgs {
    /// First offset wanted.
    pub fetch_offset: i64,
    /// `max_bytes` (already bounded).
    pub max_bytes: usize,
    /// The requester's view of the leader epoch, if given.
    pub current_leader_epoch: Option<i32>,
    /// A follower's last fetched epoch.
    pub last_fetched_epoch: Option<i32>,
    /// The fetching follower, or `None` for a consumer.
    pub follower: Option<BrokerId>,
    /// Whether the caller can send a range of a segment file as it is (`sendfile`): then a
    /// read of cached big batches comes back as [`Records::File`], unread.
    pub file_ranges: bool,
}

/// A fetch's answer.
#[derive(Debug, Clone)]
pub struct FetchData {
    /// Leader epoch it was served in.
    pub leader_epoch: i32,
    /// Stored batches (empty when nothing is readable yet); a file range only when
    /// [`FetchArgs::file_ranges`] asked for it.
    pub batches: Records,
    /// HW, log start and log end when served.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Set when a follower must truncate first.
    pub diverging: Option<DivergingEpoch>,
}

impl FetchData {
    /// The batches of a fetch that did not ask for file ranges, which always come back in
    /// memory.
    pub fn into_bytes(self) -> Bytes {
        match self.batches {
            Records::Memory(b) => b,
            Records::File(r) => {
                unreachable!("{r:?} for a fetch that did not ask for file ranges")
            }
        }
    }
}

/// The result of an append as the leader.
#[derive(Debug, Clone)]
pub struct Appended {
    /// What storage wrote (or, for a retried idempotent batch, its original offsets).
    pub info: AppendInfo,
    /// The epoch we lead in.
    pub leader_epoch: i32,
    /// Log start offset after the append.
    pub log_start_offset: i64,
}

/// One idempotent producer as a partition leader knows it (`DescribeProducers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// Sequence of the last record of its last batch.
    pub last_sequence: i32,
    /// Largest timestamp of its last batch.
    pub last_timestamp: i64,
}

/// A question for the partition actor. Each carries its reply channel.
pub enum PartitionCommand {
    /// Append a producer's batch as the leader (min ISR checked for acks=all).
    Append {
        /// One record batch.
        payload: Bytes,
        /// `min.insync.replicas` to require, for acks=all; `None` otherwise.
        min_insync: Option<usize>,
        /// Answer.
        reply: oneshot::Sender<Result<Appended, BrokerError>>,
    },
    /// Serve a consumer or follower fetch (no waiting).
    Fetch {
        /// The fetch.
        args: FetchArgs,
        /// Answer.
        reply: oneshot::Sender<Result<FetchData, BrokerError>>,
    },
    /// `ListOffsets` for one timestamp (-2 earliest, -1 latest, else a time).
    ListOffset {
        /// The timestamp asked for.
        timestamp: i64,
        /// The leader epoch the client believes current (checked as in Fetch).
        current_leader_epoch: Option<i32>,
        /// Answer: (leader epoch, offset, timestamp) with offset -1 when none.
        reply: oneshot::Sender<Result<(i32, i64, i64), BrokerError>>,
    },
    /// The leader's end offset for an epoch (`OffsetForLeaderEpoch`).
    EpochEndOffset {
        /// The epoch asked for.
        epoch: i32,
        /// The leader epoch the asker believes current (checked as in Fetch).
        current_leader_epoch: Option<i32>,
        /// Answer: (epoch, end offset).
        reply: oneshot::Sender<Result<(i64, i64), BrokerError>>,
    },
    /// The leader's idempotent producers (`DescribeProducers`, KIP-664).
    Producers {
        /// Answer: one entry per producer, by producer id.
        reply: oneshot::Sender<Result<Vec<ProducerInfo>, BrokerError>>,
    },
    /// The leader's followers' progress (`DescribeReplicas`): empty as a follower.
    Followers {
        /// Answer: (broker, log end offset if known, time since last caught up), by broker.
        reply: oneshot::Sender<Vec<(BrokerId, Option<i64>, std::time::Duration)>>,
    },
    /// Follower: where to fetch from, if it still follows `leader` at `leader_epoch`.
    FetchPosition {
        /// The leader the fetcher follows.
        leader: BrokerId,
        /// Its epoch.
        leader_epoch: i32,
        /// Answer: (log end offset, latest epoch), or `None` when the role changed.
        reply: oneshot::Sender<Option<FetchPosition>>,
    },
    /// Follower: apply what the leader sent, if it still follows `leader` at `leader_epoch`.
    FromLeader {
        /// The leader the fetcher follows.
        leader: BrokerId,
        /// Its epoch.
        leader_epoch: i32,
        /// What came back.
        fetched: FetchedFromLeader,
        /// Answer: the new fetch position (log end offset, latest epoch), or `Ok(None)`
        /// when the role changed (the fetcher drops the partition).
        reply: oneshot::Sender<Result<Option<FetchPosition>, StorageError>>,
    },
    /// Leader: the next ISR change to send, if any.
    ProposeIsr {
        /// Now.
        now: Instant,
        /// `replica.lag.time.max.ms`.
        lag_max: Duration,
        /// Answer.
        reply: oneshot::Sender<Option<AlterIsr>>,
    },
    /// Leader: the controller's answer to a proposal.
    AlterPartitionAnswer {
        /// What was sent.
        sent: AlterIsr,
        /// What came back.
        outcome: AlterOutcome,
        /// Answer: (ISR size before, after), for the shrink/expand counters.
        reply: oneshot::Sender<(usize, usize)>,
    },
    /// Read stored batches `[from, upper)` (the group coordinator's replay).
    Read {
        /// First offset.
        from: i64,
        /// Byte budget.
        max_bytes: usize,
        /// Exclusive upper offset.
        upper: i64,
        /// Answer.
        reply: oneshot::Sender<Result<Bytes, StorageError>>,
    },
    /// Retention below the HW, and the `flush.ms` timer.
    Retention {
        /// Answer: segments deleted.
        reply: oneshot::Sender<Result<usize, StorageError>>,
    },
    /// A rolled segment's background fsync is done: move the recovery point (sent by the
    /// storage flusher, so an idle partition's point does not wait for its next append).
    RollFlushed,
    /// Flush and mark the log cleanly shut down; the actor then ends.
    Close {
        /// Answer.
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// The cloneable handle of one partition replica.
#[derive(Clone)]
pub struct PartitionHandle {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: TopicId,
    /// Partition index.
    pub index: i32,
    shared: Arc<Shared>,
    offsets_rx: watch::Receiver<Offsets>,
}

/// What the handles and the partition's I/O thread share.
struct Shared {
    name: String,
    /// Which I/O thread runs this partition's disk work.
    io_key: u64,
    /// The replica; `None` once closed (or stopped by a panic).
    core: Mutex<Option<Core>>,
    /// A role the image asked for that the I/O thread has not applied yet (newest wins).
    pending_role: Mutex<Option<(Role, LogConfig)>>,
    offsets_tx: watch::Sender<Offsets>,
    /// This replica's key, for the wakers told of its changes.
    key: TopicIdPartition,
    /// Fetch sessions' wakers, told whenever `offsets_tx` publishes a change.
    listeners: Listeners,
    /// Bounds the commands waiting for the I/O thread.
    queued: Arc<Semaphore>,
    /// Dropped when the replica closes or stops, which ends the task `spawn` returned.
    stopped: Mutex<Option<oneshot::Sender<()>>>,
}

impl Shared {
    fn publish(&self, core: &Core) {
        let changed = self.offsets_tx.send_if_modified(|o| {
            let new = core.offsets();
            let changed = *o != new;
            *o = new;
            changed
        });
        if changed {
            self.listeners.mark(self.key);
        }
    }

    /// On the I/O thread: applies a pending role change, then runs `cmd` (if any).
    fn run(&self, cmd: Option<PartitionCommand>) {
        let mut guard = match self.core.lock() {
            Ok(g) => g,
            // A panic while a caller held the replica inline: nobody can vouch for it.
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                if g.take().is_some() {
                    tracing::error!(partition = %self.name, "partition replica poisoned by a panic; stopped");
                    self.stop();
                }
                return;
            }
        };
        // Closed: dropping `cmd` drops its reply, which tells the caller.
        let Some(core) = guard.as_mut() else { return };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pending = self.pending_role.lock().expect("pending role lock").take();
            if let Some((role, config)) = pending {
                core.apply_role(role, config);
                self.publish(core);
            }
            let closed = cmd.is_some_and(|c| core.handle(c));
            self.publish(core);
            closed
        }));
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                *guard = None;
                self.stop();
            }
            Err(_) => {
                // A broken invariant: stop the replica rather than serve from a state
                // nobody can vouch for.
                tracing::error!(partition = %self.name, "partition replica panicked; stopped");
                *guard = None;
                self.stop();
            }
        }
    }

    /// The replica is gone (closed, or stopped by a panic): waiters on the offsets watch
    /// learn it now (acks=all answers NOT_LEADER, long polls re-ask and get ReplicaClosed),
    /// and the task `spawn` returned ends.
    fn stop(&self) {
        self.offsets_tx.send_modify(|o| {
            o.is_leader = false;
            o.isr_size = 0;
            o.isr_settled = false;
        });
        self.listeners.mark(self.key);
        self.stopped.lock().expect("stopped lock").take();
    }
}

/// The replica's state: its log and its replication state machine.
struct Core {
    log: Log,
    replica: ReplicaState,
    name: String,
}

impl PartitionHandle {
    /// Starts the actor of an opened log. The task ends after `Close` or when every handle
    /// is gone; its `JoinHandle` is returned for the owner to await.
    pub fn spawn(
        topic: String,
        topic_id: TopicId,
        index: i32,
        log: Log,
        replica: ReplicaState,
        config: LogConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let core = Core {
            name: format!("{topic}-{index}"),
            log,
            replica,
        };
        let _ = config; // the log was opened with it; later changes come with set_role
        let (offsets_tx, offsets_rx) = watch::channel(core.offsets());
        let io_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (topic_id, index).hash(&mut h);
            h.finish()
        };
        let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
        let shared = Arc::new(Shared {
            name: core.name.clone(),
            io_key,
            core: Mutex::new(Some(core)),
            pending_role: Mutex::new(None),
            offsets_tx,
            key: TopicIdPartition::new(topic_id, index),
            listeners: Listeners::default(),
            queued: Arc::new(Semaphore::new(PARTITION_COMMANDS_QUEUED_MAX)),
            stopped: Mutex::new(Some(stopped_tx)),
        });
        // Rolled segments' fsyncs come back as a command on this replica's I/O thread.
        let weak = Arc::downgrade(&shared);
        if let Some(core) = shared.core.lock().expect("core lock").as_mut() {
            core.log.on_roll_flushed(Arc::new(move || {
                let Some(shared) = weak.upgrade() else { return };
                let key = shared.io_key;
                let _ = super::io::pool()
                    .submit(key, move || shared.run(Some(PartitionCommand::RollFlushed)));
            }));
        }
        let task = tokio::spawn(async move {
            let _ = stopped_rx.await;
        });
        (
            PartitionHandle {
                topic,
                topic_id,
                index,
                shared,
                offsets_rx,
            },
            task,
        )
    }

    /// `topic-index` for logs and errors.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    /// A receiver of offset and role changes.
    pub fn subscribe(&self) -> watch::Receiver<Offsets> {
        self.offsets_rx.clone()
    }

    /// Tells `waker` of every change published from now on (once, however often added).
    pub fn add_listener(&self, waker: &Arc<ChangeWaker>) {
        self.shared.listeners.add(waker);
    }

    /// The offsets last published.
    pub fn offsets(&self) -> Offsets {
        *self.offsets_rx.borrow()
    }

    /// Asks for the role the image gives this replica (newest wins; applied on the I/O
    /// thread before the next command).
    pub fn set_role(&self, role: Role, config: LogConfig) {
        let queued = self
            .shared
            .pending_role
            .lock()
            .expect("pending role lock")
            .replace((role, config))
            .is_some();
        if queued {
            // A job that will apply the slot is still queued (every job takes it).
            return;
        }
        let shared = self.shared.clone();
        if super::io::pool()
            .submit(self.shared.io_key, move || shared.run(None))
            .is_err()
        {
            tracing::warn!(partition = %self.name(), "the I/O threads have stopped; role change dropped");
        }
    }

    /// Runs a memory-only command right here when the replica is idle and no role change
    /// waits; gives the command back otherwise (or drops it if the replica is closed).
    fn try_inline(&self, cmd: PartitionCommand) -> Option<PartitionCommand> {
        let Ok(mut guard) = self.shared.core.try_lock() else {
            return Some(cmd);
        };
        // Closed (None): the command is dropped, and its caller told.
        let core = guard.as_mut()?;
        let role_pending = self
            .shared
            .pending_role
            .lock()
            .expect("pending role lock")
            .is_some();
        if role_pending || !core.is_memory_only(&cmd) {
            return Some(cmd);
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            core.handle(cmd);
            self.shared.publish(core);
        }));
        if ran.is_err() {
            // A broken invariant (the reply was dropped with the command: the caller gets
            // ReplicaClosed). Stop the replica, as the I/O thread does.
            tracing::error!(partition = %self.shared.name, "partition replica panicked; stopped");
            *guard = None;
            self.shared.stop();
        }
        None
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> PartitionCommand,
    ) -> Result<T, BrokerError> {
        let closed = || BrokerError::ReplicaClosed {
            partition: self.name(),
        };
        let (tx, rx) = oneshot::channel();
        if let Some(cmd) = self.try_inline(make(tx)) {
            let permit = self
                .shared
                .queued
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| closed())?;
            let shared = self.shared.clone();
            super::io::pool()
                .submit(self.shared.io_key, move || {
                    shared.run(Some(cmd));
                    drop(permit);
                })
                .map_err(|_| closed())?;
        }
        rx.await.map_err(|_| BrokerError::ReplicaClosed {
            partition: self.name(),
        })
    }

    /// Appends one batch as the leader.
    pub async fn append(
        &self,
        payload: Bytes,
        min_insync: Option<usize>,
    ) -> Result<Appended, BrokerError> {
        self.ask(|reply| PartitionCommand::Append {
            payload,
            min_insync,
            reply,
        })
        .await?
    }

    /// Serves one fetch (no waiting).
    pub async fn fetch(&self, args: FetchArgs) -> Result<FetchData, BrokerError> {
        self.ask(|reply| PartitionCommand::Fetch { args, reply })
            .await?
    }

    /// `ListOffsets` for one timestamp: (leader epoch, offset, timestamp).
    pub async fn list_offset(
        &self,
        timestamp: i64,
        current_leader_epoch: Option<i32>,
    ) -> Result<(i32, i64, i64), BrokerError> {
        self.ask(|reply| PartitionCommand::ListOffset {
            timestamp,
            current_leader_epoch,
            reply,
        })
        .await?
    }

    /// The leader's end offset for `epoch`.
    pub async fn epoch_end_offset(
        &self,
        epoch: i32,
        current_leader_epoch: Option<i32>,
    ) -> Result<(i64, i64), BrokerError> {
        self.ask(|reply| PartitionCommand::EpochEndOffset {
            epoch,
            current_leader_epoch,
            reply,
        })
        .await?
    }

    /// The leader's followers' progress (empty as a follower): (broker, log end offset if
    /// known, time since it was last caught up).
    pub async fn followers(
        &self,
    ) -> Result<Vec<(BrokerId, Option<i64>, std::time::Duration)>, BrokerError> {
        self.ask(|reply| PartitionCommand::Followers { reply })
            .await
    }

    /// The leader's idempotent producers, by producer id (`DescribeProducers`).
    pub async fn producers(&self) -> Result<Vec<ProducerInfo>, BrokerError> {
        self.ask(|reply| PartitionCommand::Producers { reply })
            .await?
    }

    /// Follower: (LEO, latest epoch) if it still follows `leader` at `leader_epoch`.
    pub async fn fetch_position(
        &self,
        leader: BrokerId,
        leader_epoch: i32,
    ) -> Option<FetchPosition> {
        self.ask(|reply| PartitionCommand::FetchPosition {
            leader,
            leader_epoch,
            reply,
        })
        .await
        .ok()
        .flatten()
    }

    /// Follower: applies what the leader sent and returns where to fetch next; `Ok(None)`
    /// when the role changed.
    pub async fn apply_from_leader(
        &self,
        leader: BrokerId,
        leader_epoch: i32,
        fetched: FetchedFromLeader,
    ) -> Result<Option<FetchPosition>, StorageError> {
        match self
            .ask(|reply| PartitionCommand::FromLeader {
                leader,
                leader_epoch,
                fetched,
                reply,
            })
            .await
        {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Leader: the next ISR change to propose.
    pub async fn propose_isr(&self, now: Instant, lag_max: Duration) -> Option<AlterIsr> {
        self.ask(|reply| PartitionCommand::ProposeIsr {
            now,
            lag_max,
            reply,
        })
        .await
        .ok()
        .flatten()
    }

    /// Leader: the controller's answer; returns the ISR size before and after.
    pub async fn alter_partition_answer(
        &self,
        sent: AlterIsr,
        outcome: AlterOutcome,
    ) -> Option<(usize, usize)> {
        self.ask(|reply| PartitionCommand::AlterPartitionAnswer {
            sent,
            outcome,
            reply,
        })
        .await
        .ok()
    }

    /// Reads stored batches `[from, upper)`.
    pub async fn read(
        &self,
        from: i64,
        max_bytes: usize,
        upper: i64,
    ) -> Result<Bytes, BrokerError> {
        self.ask(|reply| PartitionCommand::Read {
            from,
            max_bytes,
            upper,
            reply,
        })
        .await?
        .map_err(BrokerError::from)
    }

    /// Runs retention and the flush timer; returns the segments deleted.
    pub async fn retention(&self) -> Result<usize, BrokerError> {
        self.ask(|reply| PartitionCommand::Retention { reply })
            .await?
            .map_err(BrokerError::from)
    }

    /// Flushes and closes the log; the actor ends.
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.ask(|reply| PartitionCommand::Close { reply })
            .await?
            .map_err(BrokerError::from)
    }
}

impl Core {
    /// Whether `cmd` is answered from memory alone (no file is read or written).
    fn is_memory_only(&self, cmd: &PartitionCommand) -> bool {
        match cmd {
            PartitionCommand::FetchPosition { .. }
            | PartitionCommand::ProposeIsr { .. }
            | PartitionCommand::AlterPartitionAnswer { .. }
            | PartitionCommand::EpochEndOffset { .. }
            | PartitionCommand::Producers { .. }
            | PartitionCommand::Followers { .. } => true,
            PartitionCommand::ListOffset { timestamp, .. } => *timestamp < 0,
            PartitionCommand::Fetch { args, .. } => {
                // A fetch at or past what it may read, or answered with an error or a
                // divergence, reads nothing; one of the newest batches reads the log's
                // tail cache (storage/src/tail.rs).
                let Role::Leader { .. } = self.replica.role() else {
                    return true;
                };
                let upper = if args.follower.is_some() {
                    self.log.log_end_offset().get()
                } else {
                    self.replica.high_watermark()
                };
                args.fetch_offset >= upper || self.log.reads_from_memory(Offset(args.fetch_offset))
            }
            PartitionCommand::Read { from, .. } => self.log.reads_from_memory(Offset(*from)),
            // The leader's HW with no records touches no file.
            PartitionCommand::FromLeader {
                fetched: FetchedFromLeader::Records { batches, .. },
                ..
            } => batches.is_empty(),
            PartitionCommand::Append { .. }
            | PartitionCommand::FromLeader { .. }
            | PartitionCommand::Retention { .. }
            | PartitionCommand::RollFlushed
            | PartitionCommand::Close { .. } => false,
        }
    }

    fn offsets(&self) -> Offsets {
        Offsets {
            high_watermark: self.replica.high_watermark(),
            log_end_offset: self.log.log_end_offset().get(),
            log_start_offset: self.log.log_start_offset().get(),
            leader_epoch: self.replica.role().leader_epoch(),
            is_leader: self.replica.is_leader(),
            isr_size: self.replica.isr().len(),
            isr_settled: self.replica.isr_settled(self.log.log_end_offset().get()),
        }
    }

    fn apply_role(&mut self, role: Role, config: LogConfig) {
        if let Err(e) = self.log.set_config(config) {
            tracing::warn!(partition = %self.name, error = %e, "could not apply the topic config");
        }
        let before = self.replica.role().clone();
        let leo = self.log.log_end_offset();
        match self.replica.apply_role(role, leo.get(), Instant::now()) {
            RoleChange::BecameLeader => {
                let epoch = self.replica.role().leader_epoch();
                // Kafka records the new epoch at election, before any append, so a follower
                // from an older epoch learns where its history diverges.
                if let Err(e) = self.log.assign_leader_epoch(LeaderEpoch(epoch)) {
                    tracing::error!(partition = %self.name, error = %e, "cannot record the leader epoch");
                }
                tracing::info!(partition = %self.name, leader_epoch = epoch, "became leader");
            }
            RoleChange::BecameFollower => {
                tracing::info!(partition = %self.name, role = ?self.replica.role(), "became follower");
            }
            RoleChange::IsrChanged => count_isr_change(before.isr_len(), self.replica.isr().len()),
            RoleChange::Unchanged | RoleChange::Stale => {}
        }
    }

    /// Runs one command; returns whether the replica closed.
    fn handle(&mut self, cmd: PartitionCommand) -> bool {
        match cmd {
            PartitionCommand::Append {
                payload,
                min_insync,
                reply,
            } => {
                let _ = reply.send(self.append(payload, min_insync));
            }
            PartitionCommand::Fetch { args, reply } => {
                let _ = reply.send(self.fetch(&args));
            }
            PartitionCommand::ListOffset {
                timestamp,
                current_leader_epoch,
                reply,
            } => {
                let r = self
                    .leading_at(current_leader_epoch)
                    .and_then(|_| self.list_offset(timestamp));
                let _ = reply.send(r);
            }
            PartitionCommand::EpochEndOffset {
                epoch,
                current_leader_epoch,
                reply,
            } => {
                let r = self.leading_at(current_leader_epoch).map(|_| {
                    let (e, end) = self.log.end_offset_for_epoch(LeaderEpoch(epoch));
                    (e.get() as i64, end.get())
                });
                let _ = reply.send(r);
            }
            PartitionCommand::Followers { reply } => {
                let mut all: Vec<_> = if self.replica.is_leader() {
                    self.replica
                        .followers()
                        .map(|(id, f)| (id, f.log_end_offset, f.last_caught_up.elapsed()))
                        .collect()
                } else {
                    Vec::new()
                };
                all.sort_by_key(|f| f.0);
                let _ = reply.send(all);
            }
            PartitionCommand::Producers { reply } => {
                let r = self.leading_at(None).map(|_| {
                    let mut all: Vec<ProducerInfo> = self
                        .log
                        .producer_state()
                        .producers()
                        .filter_map(|(id, e)| {
                            let last = e.batches.back()?;
                            Some(ProducerInfo {
                                producer_id: id,
                                producer_epoch: e.epoch,
                                last_sequence: last.last_seq,
                                last_timestamp: last.max_timestamp,
                            })
                        })
                        .collect();
                    all.sort_by_key(|p| p.producer_id);
                    all
                });
                let _ = reply.send(r);
            }
            PartitionCommand::FetchPosition {
                leader,
                leader_epoch,
                reply,
            } => {
                let follows = *self.replica.role()
                    == (Role::Follower {
                        leader,
                        leader_epoch,
                    });
                let _ = reply.send(follows.then(|| self.fetch_position()));
            }
            PartitionCommand::FromLeader {
                leader,
                leader_epoch,
                fetched,
                reply,
            } => {
                let _ = reply.send(self.apply_from_leader(leader, leader_epoch, fetched));
            }
            PartitionCommand::ProposeIsr {
                now,
                lag_max,
                reply,
            } => {
                let leo = self.log.log_end_offset();
                let _ = reply.send(self.replica.propose_isr(leo.get(), now, lag_max));
            }
            PartitionCommand::AlterPartitionAnswer {
                sent,
                outcome,
                reply,
            } => {
                let before = self.replica.isr().len();
                let leo = self.log.log_end_offset();
                self.replica.on_alter_partition(&sent, outcome, leo.get());
                let after = self.replica.isr().len();
                count_isr_change(before, after);
                let _ = reply.send((before, after));
            }
            PartitionCommand::Read {
                from,
                max_bytes,
                upper,
                reply,
            } => {
                let _ = reply.send(self.log.read(Offset(from), max_bytes, Offset(upper)));
            }
            PartitionCommand::Retention { reply } => {
                let hw = self.replica.high_watermark();
                let r = self.log.delete_retained_segments(Offset(hw)).and_then(|deleted| {
                    if !deleted.is_empty() {
                        tracing::info!(partition = %self.name, segments = deleted.len(),
                            log_start_offset = %self.log.log_start_offset(), "retention deleted segments");
                    }
                    // The flush.ms timer.
                    self.log.maybe_flush()?;
                    Ok(deleted.len())
                });
                let _ = reply.send(r);
            }
            PartitionCommand::RollFlushed => {
                if let Err(e) = self.log.settle_roll_flushes() {
                    // The point stays where it was: a longer scan after a crash, no more.
                    tracing::warn!(partition = %self.name, error = %e, "could not move the recovery point");
                }
            }
            PartitionCommand::Close { reply } => {
                let _ = reply.send(self.log.shutdown());
                return true;
            }
        }
        false
    }

    fn not_leader(&self) -> BrokerError {
        BrokerError::NotLeader {
            partition: self.name.clone(),
        }
    }

    fn append(
        &mut self,
        payload: Bytes,
        min_insync: Option<usize>,
    ) -> Result<Appended, BrokerError> {
        let Role::Leader {
            leader_epoch, isr, ..
        } = self.replica.role()
        else {
            return Err(self.not_leader());
        };
        let leader_epoch = *leader_epoch;
        if let Some(min) = min_insync {
            if isr.len() < min {
                return Err(BrokerError::NotEnoughReplicas {
                    partition: self.name.clone(),
                    isr: isr.clone(),
                    min_insync: min,
                });
            }
        }
        let info = self
            .log
            .append_as_leader(payload, LeaderEpoch(leader_epoch))?;
        let leo = self.log.log_end_offset();
        self.replica.maybe_advance_high_watermark(leo.get());
        Ok(Appended {
            info,
            leader_epoch,
            log_start_offset: self.log.log_start_offset().get(),
        })
    }

    /// The leader epoch, if this replica leads at the epoch the asker believes current (-1 or
    /// none: no check): Kafka's FENCED_LEADER_EPOCH for an older one (the asker is behind),
    /// UNKNOWN_LEADER_EPOCH for a newer one (this replica is), KIP-320.
    fn leading_at(&self, current: Option<i32>) -> Result<i32, BrokerError> {
        let Role::Leader { leader_epoch, .. } = *self.replica.role() else {
            return Err(self.not_leader());
        };
        if let Some(e) = current.filter(|e| *e >= 0) {
            if e < leader_epoch {
                return Err(BrokerError::FencedLeaderEpoch {
                    partition: self.name.clone(),
                    request_epoch: e,
                    leader_epoch,
                });
            }
            if e > leader_epoch {
                return Err(BrokerError::UnknownLeaderEpoch {
                    partition: self.name.clone(),
                    request_epoch: e,
                    leader_epoch,
                });
            }
        }
        Ok(leader_epoch)
    }

    fn fetch(&mut self, args: &FetchArgs) -> Result<FetchData, BrokerError> {
        let leader_epoch = self.leading_at(args.current_leader_epoch)?;
        let leo = self.log.log_end_offset();
        let start = self.log.log_start_offset();
        let mut out = FetchData {
            leader_epoch,
            batches: Records::empty(),
            high_watermark: self.replica.high_watermark(),
            log_start_offset: start.get(),
            log_end_offset: leo.get(),
            diverging: None,
        };
        // A follower's history may have diverged from ours: tell it where our histories
        // part before judging its offset, which may well be past our end (KIP-320/595).
        if args.follower.is_some() {
            let log = &self.log;
            out.diverging = diverging_epoch(
                args.last_fetched_epoch,
                args.fetch_offset,
                |e| {
                    let (e, end) = log.end_offset_for_epoch(LeaderEpoch(e));
                    (e.get() as i64, end.get())
                },
                start.get(),
                leo.get(),
                log.latest_epoch().map(LeaderEpoch::get),
            );
            if out.diverging.is_some() {
                return Ok(out);
            }
        }
        if args.fetch_offset < start.get() || args.fetch_offset > leo.get() {
            return Err(BrokerError::OffsetOutOfRange {
                partition: self.name.clone(),
                offset: args.fetch_offset,
                log_start_offset: start.get(),
                log_end_offset: leo.get(),
            });
        }
        let upper = match args.follower {
            Some(f) => {
                self.replica
                    .on_follower_fetch(f, args.fetch_offset, leo.get(), Instant::now());
                leo
            }
            None => Offset(self.replica.high_watermark()),
        };
        out.high_watermark = self.replica.high_watermark();
        if upper > args.fetch_offset {
            let (from, max_bytes) = (Offset(args.fetch_offset), args.max_bytes);
            out.batches = if args.file_ranges {
                self.log.read_records(from, max_bytes, upper)?
            } else {
                Records::Memory(self.log.read(from, max_bytes, upper)?)
            };
        }
        Ok(out)
    }

    fn list_offset(&mut self, timestamp: i64) -> Result<(i32, i64, i64), BrokerError> {
        let Role::Leader { leader_epoch, .. } = *self.replica.role() else {
            return Err(self.not_leader());
        };
        // Kafka answers the epoch of the record found (`epochForOffset`), -1 when unknown;
        // for the latest offset, the latest epoch (ours, recorded at election).
        let epoch_of = |o: i64| self.log.leader_epochs().epoch_for_offset(o).unwrap_or(-1);
        match timestamp {
            -2 => {
                let start = self.log.log_start_offset().get();
                Ok((epoch_of(start), start, -1))
            }
            // KIP-207: a new leader does not know its HW until it reaches the start of its
            // epoch; the client retries.
            -1 => match self.replica.known_high_watermark() {
                Some(hw) => Ok((leader_epoch, hw, -1)),
                None => Err(BrokerError::OffsetNotAvailable {
                    partition: self.name.clone(),
                }),
            },
            t if t >= 0 => {
                let hw = self.replica.high_watermark();
                Ok(match self.log.offset_for_timestamp(t)? {
                    Some((o, ts)) if o < hw => (epoch_of(o.get()), o.get(), ts),
                    _ => (-1, -1, -1),
                })
            }
            other => Err(BrokerError::InvalidRequest {
                reason: format!(
                    "timestamp {other}: use -2 (earliest), -1 (latest) or a time in ms"
                ),
            }),
        }
    }

    /// A follower's next fetch position.
    fn fetch_position(&self) -> FetchPosition {
        FetchPosition {
            fetch_offset: self.log.log_end_offset().get(),
            last_fetched_epoch: self.log.latest_epoch().map(LeaderEpoch::get),
        }
    }

    fn apply_from_leader(
        &mut self,
        leader: BrokerId,
        leader_epoch: i32,
        fetched: FetchedFromLeader,
    ) -> Result<Option<FetchPosition>, StorageError> {
        if *self.replica.role()
            != (Role::Follower {
                leader,
                leader_epoch,
            })
        {
            return Ok(None);
        }
        match fetched {
            FetchedFromLeader::Diverging(div) => {
                // Truncate to where our histories agree, then refetch.
                let (fe, fend) = self.log.end_offset_for_epoch(LeaderEpoch(div.leader_epoch));
                let leo = self.log.log_end_offset();
                let target = if fe.get() < 0 {
                    div.end_offset.min(leo.get())
                } else {
                    div.end_offset.min(fend.get()).min(leo.get())
                };
                tracing::warn!(partition = %self.name, from = %leo, to = target, "truncating diverged log");
                self.log.truncate_to(Offset(target.max(0)))?;
                let leo = self.log.log_end_offset();
                self.replica.clamp_high_watermark(leo.get());
            }
            FetchedFromLeader::StartAt(start) => {
                if start > self.log.log_end_offset().get() {
                    self.log.truncate_fully_and_start_at(Offset(start))?;
                    let leo = self.log.log_end_offset();
                    self.replica.clamp_high_watermark(leo.get());
                    self.replica.raise_high_watermark_to(start);
                }
            }
            FetchedFromLeader::Records {
                batches,
                high_watermark,
            } => {
                if !batches.is_empty() {
                    self.log.append_as_follower(batches)?;
                }
                let leo = self.log.log_end_offset();
                self.replica
                    .follow_high_watermark(high_watermark, leo.get());
            }
        }
        Ok(Some(self.fetch_position()))
    }
}

impl Role {
    fn isr_len(&self) -> usize {
        match self {
            Role::Leader { isr, .. } => isr.len(),
            Role::Follower { .. } => 0,
        }
    }
}

/// Counts a committed ISR change of a partition we lead (Kafka's IsrShrinksPerSec /
/// IsrExpandsPerSec).
fn count_isr_change(before: usize, after: usize) {
    if after < before {
        metrics::counter!("sluice_isr_shrinks_total").increment(1);
    } else if after > before {
        metrics::counter!("sluice_isr_expands_total").increment(1);
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
