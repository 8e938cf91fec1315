//! The replica state machine of one partition on this broker: role, high watermark,
//! follower progress, the maximal ISR and the pending AlterPartition. Pure: no I/O, no
//! clock (callers pass `now`), no locks. The async shell (`super::Partition`, the fetchers
//! and the ISR loop) feeds it events and carries out what it answers.
//!
//! ```text
//!   metadata image ──apply_role──►┐
//!   follower Fetch ──on_follower_fetch──►  ReplicaState  ──► HW advanced? (wake acks=all)
//!   ISR tick ──propose_isr──►     │                     ──► AlterPartition to send
//!   AlterPartition answer ──on_alter_partition──►┘      ──► ISR / partition epoch applied
//! ```
//!
//! Each rule names the Kafka class or KIP it follows; the tests below hold one table per
//! rule.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_metadata::{BrokerId, NO_LEADER};

/// A partition's role on this broker, from the latest metadata image (or, for the ISR and
/// partition epoch, from a committed AlterPartition answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We lead at `leader_epoch`.
    Leader {
        /// Epoch we lead in.
        leader_epoch: i32,
        /// Partition epoch (for AlterPartition, KIP-497).
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

impl Role {
    /// The leader epoch of either role.
    pub fn leader_epoch(&self) -> i32 {
        match self {
            Role::Leader { leader_epoch, .. } | Role::Follower { leader_epoch, .. } => {
                *leader_epoch
            }
        }
    }
}

/// Progress of one follower as the leader sees it (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset (the offset it asked for last); `None` until it
    /// fetches in this leader epoch (Kafka's `UnifiedLog.UnknownOffset`).
    pub log_end_offset: Option<i64>,
    /// When it was last caught up (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up: Instant,
    /// Our LEO when we answered its previous fetch, and when that was: reaching it later
    /// means it was caught up as of that earlier time.
    pub previous_fetch: Option<(i64, Instant)>,
}

/// An ISR change sent to the controller and not yet answered or seen in metadata
/// (Kafka's `PendingExpandIsr` / `PendingShrinkIsr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    /// The proposed ISR.
    pub isr: Vec<BrokerId>,
    /// The leader epoch it was proposed under.
    pub leader_epoch: i32,
    /// The partition epoch it is based on; the controller bumps it when it commits.
    pub partition_epoch: i32,
}

/// A proposal for the controller (the body of an AlterPartition request).
pub type AlterIsr = PendingIsr;

/// The controller's answer to an AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOutcome {
    /// Committed: the partition state now in force.
    Committed {
        /// Leader epoch.
        leader_epoch: i32,
        /// The new partition epoch.
        partition_epoch: i32,
        /// The ISR now in force.
        isr: Vec<BrokerId>,
    },
    /// Refused for good (stale partition epoch, fenced leader epoch, not the leader...):
    /// nothing changed, so the proposal can be dropped.
    Refused,
    /// The answer never came (timeout, controller down): the change may or may not have
    /// committed, so the proposal stays pending and is sent again.
    Unknown,
}

/// What applying a role from metadata did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Nothing changed.
    Unchanged,
    /// Older than what we have (a partition epoch below ours in the same leader epoch).
    Stale,
    /// We lead in a new leader epoch.
    BecameLeader,
    /// Same leader epoch, new ISR or partition epoch.
    IsrChanged,
    /// We follow (a new leader, or a new epoch).
    BecameFollower,
}

/// Why a follower's fetch position is not served as asked (KIP-320/595).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    /// The largest epoch of ours not above the follower's last fetched epoch (-1: none).
    pub leader_epoch: i32,
    /// Where that epoch ends in our log: the follower truncates to at most this.
    pub end_offset: i64,
}

/// The outcome of an acks=all wait check (Kafka's `Partition.checkEnoughReplicasReachOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAll {
    /// The HW has not reached the batch yet.
    Waiting,
    /// Replicated to the ISR.
    Done,
    /// Replicated, but the ISR is now below `min.insync.replicas`.
    NotEnoughReplicasAfterAppend,
}

/// The replica state of one partition (see the module doc).
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// This broker.
    me: BrokerId,
    /// Current role.
    role: Role,
    /// High watermark: consumers see offsets below it.
    high_watermark: i64,
    /// Followers' progress (leader only).
    followers: HashMap<BrokerId, FollowerState>,
    /// An ISR change in flight (leader only).
    pending: Option<PendingIsr>,
    /// Our log end when we became leader in this epoch (Kafka's `leaderEpochStartOffsetOpt`):
    /// a follower joins the ISR only once it has everything before it, and a HW below it
    /// is not yet known (KIP-207).
    leader_epoch_start_offset: Option<i64>,
}

impl ReplicaState {
    /// A replica in `role` with a HW from the checkpoint (bounded by the log end).
    pub fn new(me: BrokerId, role: Role, high_watermark: i64, log_end_offset: i64) -> Self {
        let mut s = ReplicaState {
            me,
            role: Role::Follower {
                leader: NO_LEADER,
                leader_epoch: -1,
            },
            high_watermark: high_watermark.clamp(0, log_end_offset.max(0)),
            followers: HashMap::new(),
            pending: None,
            leader_epoch_start_offset: None,
        };
        s.apply_role(role, log_end_offset, Instant::now());
        s
    }

    /// The current role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The pending ISR change, if any.
    pub fn pending(&self) -> Option<&PendingIsr> {
        self.pending.as_ref()
    }

    /// Every follower's progress (leader only).
    pub fn followers(&self) -> impl Iterator<Item = (BrokerId, &FollowerState)> {
        self.followers.iter().map(|(id, f)| (*id, f))
    }

    /// A follower's progress (leader only).
    pub fn follower(&self, id: BrokerId) -> Option<&FollowerState> {
        self.followers.get(&id)
    }

    /// Our log end when we became leader in this epoch.
    pub fn leader_epoch_start_offset(&self) -> Option<i64> {
        self.leader_epoch_start_offset
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// The committed ISR (leader only; empty as follower).
    pub fn isr(&self) -> &[BrokerId] {
        match &self.role {
            Role::Leader { isr, .. } => isr,
            Role::Follower { .. } => &[],
        }
    }

    /// The maximal ISR: the committed ISR plus every replica a pending change adds. The
    /// HW waits for all of them, so a replica the controller may already have added
    /// holds everything acknowledged (Kafka's `PartitionState.maximalIsr`, DESIGN §4).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut out = self.isr().to_vec();
        if let Some(p) = &self.pending {
            for b in &p.isr {
                if !out.contains(b) {
                    out.push(*b);
                }
            }
        }
        out
    }

    /// Applies the role the metadata image gives this replica. In the same leader epoch a
    /// partition epoch below ours is stale (we may have applied a newer AlterPartition
    /// answer already) and is ignored, as Kafka's `Partition.makeLeader` skips it.
    pub fn apply_role(&mut self, role: Role, log_end_offset: i64, now: Instant) -> RoleChange {
        let change = match (&self.role, &role) {
            (
                Role::Leader {
                    leader_epoch: e0,
                    partition_epoch: p0,
                    ..
                },
                Role::Leader {
                    leader_epoch: e1,
                    partition_epoch: p1,
                    ..
                },
            ) if e0 == e1 => {
                if p1 < p0 {
                    return RoleChange::Stale;
                }
                if self.role == role {
                    return RoleChange::Unchanged;
                }
                RoleChange::IsrChanged
            }
            (_, Role::Leader { .. }) => RoleChange::BecameLeader,
            (_, Role::Follower { .. }) if self.role == role => return RoleChange::Unchanged,
            (_, Role::Follower { .. }) => RoleChange::BecameFollower,
        };
        match change {
            RoleChange::BecameLeader => {
                // Kafka's makeLeader: every follower's LEO becomes unknown; ISR members are
                // presumed caught up now, the others long ago.
                self.followers.clear();
                let Role::Leader { isr, replicas, .. } = &role else {
                    unreachable!("leader role")
                };
                for b in replicas.iter().filter(|b| **b != self.me) {
                    self.followers.insert(
                        *b,
                        FollowerState {
                            log_end_offset: None,
                            last_caught_up: if isr.contains(b) {
                                now
                            } else {
                                now.checked_sub(Duration::from_secs(86_400 * 365))
                                    .unwrap_or(now)
                            },
                            previous_fetch: None,
                        },
                    );
                }
                self.pending = None;
                self.leader_epoch_start_offset = Some(log_end_offset);
            }
            RoleChange::IsrChanged => {
                let Role::Leader {
                    partition_epoch, ..
                } = &role
                else {
                    unreachable!("leader role")
                };
                // The image moved past the state the proposal was based on: whatever became
                // of it, the image is authoritative now.
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.partition_epoch < *partition_epoch)
                {
                    self.pending = None;
                }
            }
            RoleChange::BecameFollower => {
                self.followers.clear();
                self.pending = None;
                self.leader_epoch_start_offset = None;
            }
            RoleChange::Unchanged | RoleChange::Stale => {}
        }
        self.role = role;
        self.clamp_high_watermark(log_end_offset);
        if self.is_leader() {
            self.maybe_advance_high_watermark(log_end_offset);
        }
        change
    }

    /// Leader: a follower fetched from `fetch_offset` while our log ended at
    /// `log_end_offset`. Updates its LEO and caught-up time (Kafka's
    /// `ReplicaState.updateFetchState`) and returns whether the HW advanced. A broker that
    /// is not a replica is ignored (`false`).
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        log_end_offset: i64,
        now: Instant,
    ) -> bool {
        let Role::Leader { .. } = self.role else {
            return false;
        };
        let Some(f) = self.followers.get_mut(&follower) else {
            return false;
        };
        f.log_end_offset = Some(fetch_offset);
        // Caught up now if it reached our end; caught up as of its previous fetch if it
        // reached the end we had then.
        if fetch_offset >= log_end_offset {
            f.last_caught_up = now;
        } else if let Some((prev_leo, prev_time)) = f.previous_fetch {
            if fetch_offset >= prev_leo && prev_time > f.last_caught_up {
                f.last_caught_up = prev_time;
            }
        }
        f.previous_fetch = Some((log_end_offset, now));
        self.maybe_advance_high_watermark(log_end_offset)
    }

    /// Leader: HW = min LEO over the maximal ISR, never backwards (Kafka's
    /// `Partition.maybeIncrementLeaderHW`). Returns whether it advanced.
    pub fn maybe_advance_high_watermark(&mut self, log_end_offset: i64) -> bool {
        if !self.is_leader() {
            return false;
        }
        let mut min = log_end_offset;
        for b in self.maximal_isr() {
            if b == self.me {
                continue;
            }
            match self.followers.get(&b).and_then(|f| f.log_end_offset) {
                Some(leo) => min = min.min(leo),
                // Unknown progress holds the HW where it is.
                None => min = min.min(self.high_watermark),
            }
        }
        if min > self.high_watermark {
            assert!(
                min <= log_end_offset,
                "HW {min} beyond LEO {log_end_offset}"
            );
            self.high_watermark = min;
            true
        } else {
            false
        }
    }

    /// Follower: adopts the leader's HW, bounded by our own LEO, never backwards.
    pub fn follow_high_watermark(&mut self, leader_hw: i64, log_end_offset: i64) -> bool {
        let hw = leader_hw.min(log_end_offset);
        if hw > self.high_watermark {
            self.high_watermark = hw;
            true
        } else {
            false
        }
    }

    /// After a truncation the HW cannot exceed the log end.
    pub fn clamp_high_watermark(&mut self, log_end_offset: i64) {
        self.high_watermark = self.high_watermark.min(log_end_offset.max(0));
    }

    /// After retention or a full truncation moved the log start past the HW.
    pub fn raise_high_watermark_to(&mut self, log_start_offset: i64) {
        self.high_watermark = self.high_watermark.max(log_start_offset);
    }

    /// The HW to answer `ListOffsets(latest)` with, or `None` while it is not known: a new
    /// leader's HW below its epoch start offset may be stale (KIP-207,
    /// `OFFSET_NOT_AVAILABLE`).
    pub fn known_high_watermark(&self) -> Option<i64> {
        match self.leader_epoch_start_offset {
            Some(start) if self.high_watermark < start => None,
            _ => Some(self.high_watermark),
        }
    }

    /// Whether `follower` is in sync (Kafka's `Partition.isFollowerInSync` and
    /// `ReplicaState.isCaughtUp`): it has reached the HW and our epoch start, and it was
    /// caught up within `lag_max` (or is at our log end right now).
    fn in_sync(
        &self,
        f: &FollowerState,
        log_end_offset: i64,
        now: Instant,
        lag_max: Duration,
    ) -> bool {
        let Some(leo) = f.log_end_offset else {
            return now.saturating_duration_since(f.last_caught_up) < lag_max;
        };
        leo == log_end_offset || now.saturating_duration_since(f.last_caught_up) < lag_max
    }

    /// Leader: whether [`Self::propose_isr`] has nothing to propose whatever the time: no
    /// change pending, every replica in the ISR, and every follower at our log end (so none
    /// can fall out of sync until we append). The ISR tick skips such partitions, which is
    /// what keeps idle partitions free.
    pub fn isr_settled(&self, log_end_offset: i64) -> bool {
        let Role::Leader { isr, replicas, .. } = &self.role else {
            return false;
        };
        self.pending.is_none()
            && replicas.iter().all(|r| isr.contains(r))
            && isr.iter().filter(|b| **b != self.me).all(|b| {
                self.followers
                    .get(b)
                    .is_some_and(|f| f.log_end_offset == Some(log_end_offset))
            })
    }

    /// Leader, every ISR tick: the next ISR change to propose, or `None`. A shrink of the
    /// followers not caught up for `lag_max` (Kafka's `maybeShrinkIsr`) goes first; else one
    /// follower that reached both the HW and our epoch start offset joins (Kafka's
    /// `maybeExpandIsr`, one at a time). While a change is pending, a lost answer is resent
    /// as it was; nothing new is proposed. The proposal becomes pending.
    pub fn propose_isr(
        &mut self,
        log_end_offset: i64,
        now: Instant,
        lag_max: Duration,
    ) -> Option<AlterIsr> {
        let Role::Leader {
            leader_epoch,
            partition_epoch,
            isr,
            replicas,
        } = &self.role
        else {
            return None;
        };
        if let Some(p) = &self.pending {
            return Some(p.clone());
        }
        let out_of_sync: Vec<BrokerId> = isr
            .iter()
            .copied()
            .filter(|b| *b != self.me)
            .filter(|b| {
                self.followers
                    .get(b)
                    .is_none_or(|f| !self.in_sync(f, log_end_offset, now, lag_max))
            })
            .collect();
        let new_isr: Vec<BrokerId> = if !out_of_sync.is_empty() {
            isr.iter()
                .copied()
                .filter(|b| !out_of_sync.contains(b))
                .collect()
        } else {
            let epoch_start = self.leader_epoch_start_offset.unwrap_or(0);
            let joiner = replicas.iter().copied().find(|b| {
                *b != self.me
                    && !isr.contains(b)
                    && self.followers.get(b).is_some_and(|f| {
                        f.log_end_offset
                            .is_some_and(|leo| leo >= self.high_watermark && leo >= epoch_start)
                    })
            })?;
            // Keep replica order for readability.
            replicas
                .iter()
                .copied()
                .filter(|b| isr.contains(b) || *b == joiner)
                .collect()
        };
        let p = PendingIsr {
            isr: new_isr,
            leader_epoch: *leader_epoch,
            partition_epoch: *partition_epoch,
        };
        self.pending = Some(p.clone());
        Some(p)
    }

    /// Applies the controller's answer to `sent` (Kafka's
    /// `Partition.handleAlterPartitionUpdate` / `handleAlterPartitionError`). Returns
    /// whether the HW advanced. An answer to an older proposal, or for another leader
    /// epoch, changes nothing.
    pub fn on_alter_partition(
        &mut self,
        sent: &AlterIsr,
        outcome: AlterOutcome,
        log_end_offset: i64,
    ) -> bool {
        if self.pending.as_ref() != Some(sent) {
            return false;
        }
        match outcome {
            AlterOutcome::Unknown => return false,
            AlterOutcome::Refused => self.pending = None,
            AlterOutcome::Committed {
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let Role::Leader {
                    leader_epoch: ours,
                    partition_epoch: ours_p,
                    isr: ours_isr,
                    ..
                } = &mut self.role
                else {
                    return false;
                };
                if leader_epoch != *ours {
                    return false;
                }
                if partition_epoch > *ours_p {
                    *ours_p = partition_epoch;
                    *ours_isr = isr;
                }
                self.pending = None;
            }
        }
        self.maybe_advance_high_watermark(log_end_offset)
    }

    /// Whether an acks=all batch ending at `last_offset` is done (see [`AcksAll`]).
    pub fn acks_all(&self, last_offset: i64, min_insync: usize) -> AcksAll {
        acks_all(
            self.high_watermark,
            self.isr().len(),
            last_offset,
            min_insync,
        )
    }
}

/// The acks=all rule over published offsets (Kafka's `Partition.checkEnoughReplicasReachOffset`):
/// waiting until the HW passes `last_offset`, then done unless the committed ISR is below
/// `min.insync.replicas`. Used by [`ReplicaState::acks_all`] and by waiters on the watch.
pub fn acks_all(
    high_watermark: i64,
    isr_size: usize,
    last_offset: i64,
    min_insync: usize,
) -> AcksAll {
    if high_watermark <= last_offset {
        AcksAll::Waiting
    } else if isr_size < min_insync {
        AcksAll::NotEnoughReplicasAfterAppend
    } else {
        AcksAll::Done
    }
}

/// The leader's divergence check of a follower fetch (KIP-320/595, Kafka's
/// `Partition.validateFetchOffsetAndMaybeGetDivergingEpoch`): `lookup` is our
/// `end_offset_for_epoch(last_fetched_epoch)`, `(epoch, end)` with epoch -1 when we know
/// no epoch at or below it. A follower that names an epoch we cannot match (none at or
/// below it, or ours ends before its fetch offset) must truncate; one that names none but
/// is past our end must too.
pub fn diverging_epoch(
    last_fetched_epoch: Option<i32>,
    fetch_offset: i64,
    lookup: impl FnOnce(i32) -> (i64, i64),
    log_start_offset: i64,
    log_end_offset: i64,
    latest_epoch: Option<i32>,
) -> Option<DivergingEpoch> {
    match last_fetched_epoch.filter(|e| *e >= 0) {
        Some(last) => {
            let (e, end) = lookup(last);
            if e < 0 {
                // Nothing of ours at or below its epoch: it keeps nothing past our start.
                return (fetch_offset > log_start_offset).then_some(DivergingEpoch {
                    leader_epoch: -1,
                    end_offset: log_start_offset,
                });
            }
            (e < last as i64 || end < fetch_offset).then_some(DivergingEpoch {
                leader_epoch: e as i32,
                end_offset: end,
            })
        }
        None if fetch_offset > log_end_offset => Some(DivergingEpoch {
            leader_epoch: latest_epoch.unwrap_or(-1),
            end_offset: log_end_offset,
        }),
        None => None,
    }
}

#[cfg(test)]
mod tests;
