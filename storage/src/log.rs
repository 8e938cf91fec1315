//! A partition log: an ordered set of segments plus the leader-epoch checkpoint, the flush
//! policy, retention and crash recovery.
//!
//! ```text
//!   partition dir/
//!     00000000000000000000.log / .index / .timeindex     closed segment
//!     00000000000000004096.log / .index / .timeindex     active segment (appends go here)
//!     leader-epoch-checkpoint                             epoch -> start offset
//!     recovery-point-offset-checkpoint                    data below is known flushed
//!     log-start-offset-checkpoint                         explicit log start (if moved)
//!     .clean-shutdown                                     present only between close and open
//! ```
//!
//! The log is owned by one task (`&mut self` for every change). Reads take `&self` and use
//! positioned reads, so an owner may serve them between appends without copying state.
//!
//! Invariants, asserted where they change: `log_start_offset <= log_end_offset`; segment
//! base offsets increase and each segment ends at or before the next one's base; leader
//! epochs in the checkpoint increase and start at or before the log end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sluice_record::{LeaderEpoch, Offset};

use crate::batch::{patch_header, BatchHeader, RecordBatch, Validation};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{Result, StorageError};
use crate::producer::{ProducerState, SequenceCheck};
use crate::records::Records;
use crate::segment::{Corruption, Segment};
use crate::tail::TailCache;

/// Milliseconds since the Unix epoch; injected so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock (plus the fault-injection clock offset, normally zero).
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
            + crate::fault::clock_offset_ms()
    })
}

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
const LOG_START: &str = "log-start-offset-checkpoint";

/// What an append stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub first_offset: Offset,
    /// Offset of the last record appended.
    pub last_offset: Offset,
    /// Largest record timestamp in the appended batches.
    pub max_timestamp: i64,
    /// Number of records.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Headers of the stored batches, with their final offsets and epochs (for producer
    /// state and replication bookkeeping).
    pub batches: Vec<BatchHeader>,
    /// The batch was a retry of one already stored (idempotent producer): nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether the previous shutdown was clean.
    pub clean_shutdown: bool,
    /// Segments that had to be CRC-scanned.
    pub segments_scanned: usize,
    /// Bad or torn data found, with the file and position where the log was cut.
    pub corruptions: Vec<Corruption>,
    /// Segments deleted because they followed a corruption.
    pub segments_deleted: Vec<PathBuf>,
}

/// A partition log on disk.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Segments by base offset; the last is the active one. Never empty.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    epochs: LeaderEpochCache,
    /// Offset below which all data is known to be on stable storage.
    recovery_point: i64,
    /// Segments were created or deleted since the directory was last fsynced.
    dir_dirty: bool,
    /// The recovery point as last written to its checkpoint file.
    recovery_point_persisted: i64,
    /// Background fsyncs of rolled segments; each lets the recovery point move to the base
    /// of the segment that followed once it is done.
    roll_flushes: Vec<crate::flusher::FlushTicket>,
    /// A background flush failed: the recovery point moves only with `flush` again.
    roll_flush_failed: bool,
    /// Told when a background flush of a rolled segment is done (`on_roll_flushed`).
    roll_flush_notify: Option<crate::flusher::RollFlushNotify>,
    unflushed_records: u64,
    /// When the oldest unflushed append happened, if any.
    unflushed_since_ms: Option<i64>,
    clock: Clock,
    report: RecoveryReport,
    /// Idempotent-producer state as of the log end.
    producers: ProducerState,
    /// The newest batches in memory, for reads of the tail.
    tail: TailCache,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.end())
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn read_offset_file(path: &Path) -> Result<Option<i64>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read checkpoint", path, e)),
    }
}

fn write_offset_file(path: &Path, value: i64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{value}\n"))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .map_err(|e| StorageError::io("write checkpoint", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StorageError::io("rename checkpoint", path, e))?;
    sync_dir(path.parent().expect("checkpoint files live in the log dir"))
}

/// Fsyncs a directory so renames, creations and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

impl Log {
    /// Opens (or creates) the log in `dir` with the system clock, recovering as needed.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        Self::open_with_clock(dir, config, system_clock())
    }

    /// Opens (or creates) the log in `dir`.
    ///
    /// After an unclean shutdown every segment that may hold unflushed data (at or after
    /// the recovery point) is CRC-scanned; at the first bad or torn batch its file is cut,
    /// later segments are deleted, and the indexes and epoch checkpoint are made to match.
    /// After a clean shutdown only index sanity and each segment's tail are checked.
    pub fn open_with_clock(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Clock,
    ) -> Result<Self> {
        let dir = dir.into();
        config
            .validate()
            .map_err(|reason| StorageError::InvalidRequest { reason })?;
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create log dir", &dir, e))?;
        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)
                .map_err(|e| StorageError::io("remove marker", &marker, e))?;
        }
        let recovery_point = read_offset_file(&dir.join(RECOVERY_POINT))?.unwrap_or(0);
        let start_checkpoint = read_offset_file(&dir.join(LOG_START))?;

        let mut bases = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| StorageError::io("list log dir", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list log dir", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        // Index files whose segment is gone (a deletion interrupted by a crash).
        remove_orphan_indexes(&dir, &bases)?;

        let mut report = RecoveryReport {
            clean_shutdown: clean,
            ..RecoveryReport::default()
        };
        let mut segments = BTreeMap::new();
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            if cut {
                let (seg, _) = Segment::open(&dir, base, false, config.index_interval_bytes)?;
                report.segments_deleted.push(seg.log_path().to_path_buf());
                seg.delete()?;
                continue;
            }
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let recover = !clean && next_base > recovery_point;
            if recover {
                report.segments_scanned += 1;
            }
            let (seg, corruption) =
                Segment::open(&dir, base, recover, config.index_interval_bytes)?;
            if recover {
                crate::fault::maybe_slow_recovery(seg.size());
            }
            if seg.next_offset() > next_base {
                return Err(StorageError::corrupt(format!(
                    "segment {} ends at offset {} past the next segment's base {next_base}",
                    seg.log_path().display(),
                    seg.next_offset()
                )));
            }
            if let Some(c) = corruption {
                report.corruptions.push(c);
                cut = true;
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = start_checkpoint.unwrap_or(0);
            segments.insert(base, Segment::create(&dir, base)?);
        }
        let first_base = *segments.keys().next().expect("one segment");
        let log_end_offset = segments.values().next_back().expect("one").next_offset();
        let log_start_offset = start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end_offset);
        // A checkpoint written but not yet synced can be torn by a power loss: rebuild it
        // from the batch headers (below) rather than refuse to open the log.
        let mut epochs = match LeaderEpochCache::load(&dir) {
            Ok(e) => e,
            Err(StorageError::CorruptMessage { reason, .. }) => {
                tracing::warn!(dir = %dir.display(), %reason,
                    "leader-epoch checkpoint unreadable; rebuilding it from the batches");
                let _ = std::fs::remove_file(dir.join(crate::epoch::LEADER_EPOCH_CHECKPOINT));
                LeaderEpochCache::load(&dir)?
            }
            Err(e) => return Err(e),
        };
        epochs.truncate_from_end(log_end_offset)?;
        epochs.truncate_from_start(log_start_offset)?;
        let recovery_point = recovery_point.min(log_end_offset);
        let producers = ProducerState::load(&dir, log_start_offset, log_end_offset)?;
        let mut log = Log {
            dir,
            config,
            segments,
            log_start_offset,
            epochs,
            recovery_point,
            dir_dirty: false,
            recovery_point_persisted: recovery_point,
            roll_flushes: Vec::new(),
            roll_flush_failed: false,
            roll_flush_notify: None,
            unflushed_records: 0,
            unflushed_since_ms: None,
            clock,
            report,
            producers,
            tail: TailCache::new(log_end_offset),
        };
        // The epoch checkpoint is written at each new epoch, so it can only lag the log when
        // it was lost (then every batch header says where its epoch starts) or when an unclean
        // shutdown left batches after the recovery point: rebuild from the batch headers, as
        // Kafka's LogLoader does while recovering segments (review defect 9 of issue 12).
        let rebuild_from = if log.epochs.entries().is_empty() {
            Some(log.log_start_offset)
        } else if !clean {
            Some(recovery_point.max(log.log_start_offset))
        } else {
            None
        };
        if let Some(from) = rebuild_from {
            log.rebuild_epochs_from(from)?;
        }
        log.replay_producer_state()?;
        if !log.report.corruptions.is_empty() {
            tracing::warn!(dir = %log.dir.display(), report = ?log.report, "log recovered with data loss");
        }
        Ok(log)
    }

    /// Assigns the leader epoch of every batch from `from` to the log end (headers only
    /// matter; batches are read in 1 MiB steps). Epochs never go back, so batches of epochs
    /// the cache already has change nothing.
    fn rebuild_epochs_from(&mut self, from: i64) -> Result<()> {
        let end = self.end();
        let mut at = from;
        while at < end {
            let bytes = self.read(Offset(at), 1 << 20, Offset(i64::MAX))?;
            let mut next = at;
            for h in crate::batch::headers(&bytes) {
                if h.partition_leader_epoch >= 0 {
                    self.epochs
                        .assign(h.partition_leader_epoch, h.base_offset)?;
                }
                next = h.next_offset();
            }
            if next <= at {
                break;
            }
            at = next;
        }
        Ok(())
    }

    /// What `open` found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Idempotent-producer state as of the log end.
    pub fn producer_state(&self) -> &ProducerState {
        &self.producers
    }

    /// Brings the producer state from its map end up to the log end by reading the stored
    /// batch headers (after open or truncation).
    fn replay_producer_state(&mut self) -> Result<()> {
        let end = self.end();
        let mut at = self.producers.map_end_offset().max(self.log_start_offset);
        let mut replayed = 0usize;
        while at < end {
            let bytes = self.read(Offset(at), 1 << 20, Offset(end))?;
            if bytes.is_empty() {
                break;
            }
            for h in crate::batch::headers(&bytes) {
                if h.next_offset() > at {
                    self.producers.apply(&h);
                    replayed += 1;
                }
                at = at.max(h.next_offset());
            }
        }
        self.producers.set_map_end_offset(end);
        if replayed > 0 {
            tracing::debug!(dir = %self.dir.display(), replayed, producers = self.producers.len(),
                "rebuilt producer state from the log");
        }
        Ok(())
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration (dynamic topic configs); takes effect on the next append,
    /// roll or retention pass.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config
            .validate()
            .map_err(|reason| StorageError::InvalidRequest { reason })?;
        self.config = config;
        Ok(())
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start_offset)
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offset of the active (last) segment.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    /// Offset the next record will get.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.end())
    }

    fn end(&self) -> i64 {
        self.active().next_offset()
    }

    /// Offset below which data is known to be flushed.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.recovery_point)
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<Offset> {
        self.segments.keys().copied().map(Offset).collect()
    }

    /// The leader-epoch checkpoint.
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// The latest leader epoch written to the log.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest_epoch().map(LeaderEpoch)
    }

    /// A new leader records its epoch as starting at the current log end as soon as it is
    /// elected (Kafka does this at election, before any append), so followers from older
    /// epochs learn where their history diverges even before new data arrives.
    pub fn assign_leader_epoch(&mut self, epoch: LeaderEpoch) -> Result<bool> {
        let end = self.end();
        self.epochs.assign(epoch.get(), end)
    }

    /// KIP-101/279 lookup for a follower's truncation: `(epoch, end_offset)` where `epoch` is
    /// the largest known epoch ≤ the one asked for and `end_offset` where it ends here.
    /// The epoch is -1 (and the offset -1) when no epoch ≤ the one asked for is known.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> (LeaderEpoch, Offset) {
        let (e, o) = self.epochs.end_offset_for(epoch.get(), self.end());
        (LeaderEpoch(e as i32), Offset(o))
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn parse_input(&self, records: Bytes, how: Validation) -> Result<Vec<RecordBatch>> {
        self.parse_input_limited(records, how, self.config.max_message_bytes)
    }

    fn parse_input_limited(
        &self,
        records: Bytes,
        how: Validation,
        max_batch_bytes: usize,
    ) -> Result<Vec<RecordBatch>> {
        if records.is_empty() {
            return Err(StorageError::corrupt("no record batch in the request"));
        }
        let mut buf = records;
        let mut out = Vec::new();
        while !buf.is_empty() {
            out.push(RecordBatch::split_from(&mut buf, max_batch_bytes, how)?);
        }
        Ok(out)
    }

    /// Appends producer batches as the leader in `leader_epoch`: validates every batch fully
    /// before writing any, assigns offsets from the log end and stamps the epoch. Nothing is
    /// written when any batch is invalid.
    ///
    /// Exactly one batch per call, as Kafka requires of magic-v2 produce requests
    /// (`LogValidator`): with several, a duplicate among them would answer for all.
    pub fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let leader_epoch = leader_epoch.get();
        let mut batches = self.parse_input(records, Validation::Full)?;
        if let Some(codec) = self.config.compression {
            // The topic's compression.type: batches in another codec are stored in this one.
            for b in batches.iter_mut() {
                if b.header().compression() != codec.id() {
                    let bytes = crate::batch::recompress(b, codec)?;
                    *b = RecordBatch::from_bytes(bytes, Validation::Crc)?;
                }
            }
        }
        if batches.len() > 1 {
            return Err(StorageError::Unsupported {
                reason: format!(
                    "{} record batches in one produce for one partition; send exactly one",
                    batches.len()
                ),
            });
        }
        let mut accepted: Vec<BatchHeader> = Vec::with_capacity(batches.len());
        for b in &batches {
            let h = b.header();
            if h.is_control() || h.is_transactional() {
                return Err(StorageError::Unsupported {
                    reason: "transactional and control batches are not supported yet".into(),
                });
            }
            if let SequenceCheck::Duplicate(m) = self.producers.check(h, &accepted)? {
                // Kafka answers a request holding a retried batch with that batch's offsets.
                let mut info = self.empty_info(m.first_offset);
                info.last_offset = Offset(m.last_offset);
                info.max_timestamp = m.max_timestamp;
                info.duplicate = true;
                return Ok(info);
            }
            accepted.push(*h);
        }
        if let Some(latest) = self.epochs.latest_epoch() {
            if leader_epoch < latest {
                return Err(StorageError::InvalidRequest {
                    reason: format!(
                        "leader epoch {leader_epoch} is older than the log's latest epoch {latest}"
                    ),
                });
            }
        }
        let start = self.end();
        self.epochs.assign(leader_epoch, start)?;
        let mut next = start;
        let mut info = self.empty_info(start);
        for batch in &batches {
            let mut prefix: [u8; 16] = batch.as_bytes()[..16].try_into().expect("16 bytes");
            patch_header(&mut prefix, next, leader_epoch);
            self.write_batch(Some(&prefix), batch, next)?;
            let mut h = *batch.header();
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            next = h.next_offset();
            self.tail.push(&h, (self.clock)(), || {
                let raw = batch.as_bytes();
                let mut stored = bytes::BytesMut::with_capacity(raw.len());
                stored.extend_from_slice(&prefix);
                stored.extend_from_slice(&raw[16..]);
                stored.freeze()
            });
            self.producers.apply(&h);
            info.add(h);
        }
        self.after_append(info.records)?;
        Ok(info)
    }

    /// Appends batches copied from the leader, unchanged. The first must start at the log
    /// end and each must continue the previous one. Epochs are learned from the batches.
    pub fn append_as_follower(&mut self, records: Bytes) -> Result<AppendInfo> {
        // No max.message.bytes here: the leader accepted these batches, and the limit may
        // have been lowered since (Kafka skips the check for replication too).
        let batches = self.parse_input_limited(
            records,
            Validation::Crc,
            crate::limits::RECORD_BATCH_BYTES_MAX,
        )?;
        let start = self.end();
        let mut expected = start;
        for b in &batches {
            if b.base_offset() != expected {
                return Err(StorageError::InvalidRequest {
                    reason: format!(
                        "replicated batch starts at offset {} but the log continues at {expected}",
                        b.base_offset()
                    ),
                });
            }
            expected = b.header().next_offset();
        }
        let mut info = self.empty_info(start);
        for batch in &batches {
            let h = *batch.header();
            self.epochs
                .assign(h.partition_leader_epoch, h.base_offset)?;
            self.write_batch(None, batch, h.base_offset)?;
            self.producers.apply(&h);
            info.add(h);
        }
        // Followers serve no reads; should this replica lead later, its cache starts then.
        self.tail.reset(self.end());
        self.after_append(info.records)?;
        Ok(info)
    }

    fn empty_info(&self, start: i64) -> AppendInfo {
        AppendInfo {
            first_offset: Offset(start),
            last_offset: Offset(start - 1),
            max_timestamp: i64::MIN,
            records: 0,
            bytes: 0,
            batches: Vec::new(),
            duplicate: false,
        }
    }

    fn write_batch(
        &mut self,
        prefix: Option<&[u8; 16]>,
        batch: &RecordBatch,
        base_offset: i64,
    ) -> Result<()> {
        let last_offset = base_offset + batch.header().last_offset_delta as i64;
        let max_timestamp = batch.header().max_timestamp;
        if self.should_roll(batch.size_bytes() as u64, last_offset, max_timestamp) {
            self.roll(Offset(base_offset))?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(prefix, batch, interval)
    }

    /// Kafka's roll rule: the segment would exceed `segment.bytes`, or the incoming batch's
    /// timestamp is more than `segment.ms` past the segment's first batch (measured on
    /// record time, not wall time, so old timestamps don't roll on every append; KAFKA-4099),
    /// or relative offsets would overflow.
    fn should_roll(&self, batch_bytes: u64, last_offset: i64, max_timestamp: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size() + batch_bytes > self.config.segment_bytes;
        let old = active
            .first_batch_timestamp()
            .is_some_and(|t| max_timestamp.saturating_sub(t) > self.config.segment_ms);
        let offsets_overflow = last_offset - active.base_offset() > u32::MAX as i64;
        full || old || offsets_overflow
    }

    /// Closes the active segment and starts a new one at `base_offset` (≥ the log end).
    pub fn roll(&mut self, base_offset: Offset) -> Result<()> {
        let base_offset = base_offset.get();
        let end = self.end();
        assert!(
            base_offset >= end,
            "new segment base {base_offset} is below the log end {end}"
        );
        if self.active().is_empty() && self.active().base_offset() == base_offset {
            return Ok(());
        }
        self.active_mut().close_index_files()?;
        if self.active().is_empty() {
            // Never leave an empty closed segment behind.
            let base = self.active().base_offset();
            let seg = self.segments.remove(&base).expect("active");
            seg.delete()?;
        }
        // The closed segment is immutable now: fsync it off this thread, then (in
        // `advance_recovery_point`) trust everything below the new segment's base.
        // Every segment holding data above the recovery point, not only the one just
        // closed: after an unclean open the older ones were scanned but never fsynced.
        if self.recovery_point < end && !self.roll_flush_failed {
            let from = self.recovery_point;
            let files = self
                .segments
                .values()
                .filter(|seg| seg.next_offset() > from)
                .flat_map(|seg| seg.file_paths())
                .collect();
            self.roll_flushes.push(crate::flusher::flush_in_background(
                files,
                end,
                self.roll_flush_notify.clone(),
            ));
        }
        let seg = Segment::create(&self.dir, base_offset)?;
        self.segments.insert(base_offset, seg);
        self.dir_dirty = true;
        // The producer state as of the new segment's base bounds a later replay to it.
        self.producers.set_map_end_offset(end);
        self.producers.write_snapshot(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        Ok(())
    }

    /// Moves the recovery point past rolled segments whose background fsync finished
    /// (oldest first; a failed one stops the advance and is dropped, so its data waits for
    /// the next explicit flush). Cheap when none finished.
    fn advance_recovery_point(&mut self) -> Result<()> {
        while let Some(t) = self.roll_flushes.first() {
            match t.outcome() {
                None => break,
                Some(false) => {
                    // Later tickets must not move the point past what this one missed:
                    // no more until an explicit flush covers everything.
                    self.roll_flushes.clear();
                    self.roll_flush_failed = true;
                    break;
                }
                Some(true) => {
                    let upto = self.roll_flushes.remove(0).upto.min(self.end());
                    if upto > self.recovery_point {
                        // As in `flush`: epochs and new directory entries durable first.
                        self.epochs.sync()?;
                        if self.dir_dirty {
                            sync_dir(&self.dir)?;
                            self.dir_dirty = false;
                        }
                        self.recovery_point = upto;
                    }
                }
            }
        }
        if self.recovery_point > self.recovery_point_persisted {
            let rp = self.recovery_point;
            self.persist_recovery_point(rp)?;
        }
        Ok(())
    }

    fn after_append(&mut self, records: u64) -> Result<()> {
        if !self.roll_flushes.is_empty() {
            self.advance_recovery_point()?;
        }
        let now = (self.clock)();
        self.unflushed_records += records;
        let since = *self.unflushed_since_ms.get_or_insert(now);
        if self.unflushed_records >= self.config.flush_interval_messages
            || now.saturating_sub(since) >= self.config.flush_interval_ms
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Has `notify` called (on the flusher thread, so it must only hand work back to the
    /// owner) whenever a rolled segment's background fsync is done; the owner then calls
    /// [`settle_roll_flushes`](Self::settle_roll_flushes). Without it the recovery point
    /// moves at the next append or `maybe_flush`.
    pub fn on_roll_flushed(&mut self, notify: crate::flusher::RollFlushNotify) {
        self.roll_flush_notify = Some(notify);
    }

    /// Moves (and persists) the recovery point past every rolled segment whose background
    /// fsync is done. Cheap when none is.
    pub fn settle_roll_flushes(&mut self) -> Result<()> {
        if !self.roll_flushes.is_empty() {
            self.advance_recovery_point()?;
        }
        Ok(())
    }

    /// Flushes if `flush.ms` has passed since the oldest unflushed append. For owners to
    /// call on a timer.
    pub fn maybe_flush(&mut self) -> Result<()> {
        self.tail.expire((self.clock)());
        if !self.roll_flushes.is_empty() {
            self.advance_recovery_point()?;
        }
        if let Some(since) = self.unflushed_since_ms {
            if (self.clock)().saturating_sub(since) >= self.config.flush_interval_ms {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Fsyncs everything written so far and advances the recovery point to the log end.
    pub fn flush(&mut self) -> Result<()> {
        let end = self.end();
        let from = self.recovery_point;
        // Epochs first: every epoch below the recovery point must be durable, since an
        // unclean restart rebuilds only the ones above it from the batches.
        self.epochs.sync()?;
        for seg in self.segments.values_mut() {
            if seg.next_offset() > from {
                seg.flush(true)?;
            }
        }
        if self.dir_dirty {
            // New segment files must survive a power loss too (Kafka fsyncs the directory).
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.recovery_point = end;
        self.roll_flush_failed = false;
        self.unflushed_records = 0;
        self.unflushed_since_ms = None;
        // Persist the recovery point when it passes a segment boundary, so an unclean
        // restart only scans the active segment; between boundaries the older value is
        // safe (recovery scans more, never less).
        let active_base = self.active().base_offset();
        if self.recovery_point_persisted < active_base {
            self.persist_recovery_point(active_base.min(end))?;
        }
        Ok(())
    }

    fn persist_recovery_point(&mut self, value: i64) -> Result<()> {
        write_offset_file(&self.dir.join(RECOVERY_POINT), value)?;
        self.recovery_point_persisted = value;
        Ok(())
    }

    /// Reads whole stored batches starting with the one that holds `offset`, up to
    /// `max_bytes` (but at least one batch), none reaching `max_offset` (exclusive: the high
    /// watermark for consumers, the log end for followers). An offset at the log end or at
    /// `max_offset` returns no bytes; below the log start or past the end is
    /// `OFFSET_OUT_OF_RANGE`.
    pub fn read(&self, offset: Offset, max_bytes: usize, max_offset: Offset) -> Result<Bytes> {
        self.read_from(offset, max_bytes, max_offset, false)?
            .into_bytes()
    }

    /// What [`Log::read`] reads, but a read from a segment file of at least
    /// [`crate::records::FILE_RANGE_MIN_BYTES`] that sits whole in the page cache comes back
    /// as the file range, unread, for a caller that can send it without copying it
    /// (`sendfile`). The tail cache's bytes, and small or cold reads, come back in memory.
    pub fn read_records(
        &self,
        offset: Offset,
        max_bytes: usize,
        max_offset: Offset,
    ) -> Result<Records> {
        self.read_from(offset, max_bytes, max_offset, true)
    }

    fn read_from(
        &self,
        offset: Offset,
        max_bytes: usize,
        max_offset: Offset,
        files: bool,
    ) -> Result<Records> {
        let (offset, max_offset) = (offset.get(), max_offset.get());
        let end = self.end();
        if offset < self.log_start_offset || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        let max_offset = max_offset.min(end);
        if offset >= max_offset {
            return Ok(Records::empty());
        }
        if self.tail.covers(offset) {
            return Ok(Records::Memory(
                self.tail.read(offset, max_bytes, max_offset),
            ));
        }
        let containing = self.segments.range(..=offset).next_back();
        for (_, seg) in containing
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if seg.next_offset() <= offset {
                continue;
            }
            let records = seg.read_records(offset, max_bytes, max_offset, files)?;
            if !records.is_empty() || seg.base_offset() >= max_offset {
                return Ok(records);
            }
        }
        Ok(Records::empty())
    }

    /// Whether [`Log::read`] from `offset` is answered from memory, touching no file: the
    /// offset is out of range (an error), at the log end, or in the tail cache.
    pub fn reads_from_memory(&self, offset: Offset) -> bool {
        let offset = offset.get();
        offset < self.log_start_offset || offset >= self.end() || self.tail.covers(offset)
    }

    /// The first record with timestamp ≥ `timestamp` (Kafka ListOffsets by time):
    /// `(offset, timestamp)`, or `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(Offset, i64)>> {
        for seg in self.segments.values() {
            if seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some(hit) = seg.find_by_timestamp(timestamp, self.log_start_offset)? {
                return Ok(Some((Offset(hit.0), hit.1)));
            }
        }
        Ok(None)
    }

    /// Removes every batch holding an offset ≥ `offset` (whole batches: the log end may end
    /// up below `offset` if it falls inside a batch). Used when a follower diverged from its
    /// leader. An offset below the log start empties the log and restarts it there.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        let offset = offset.get();
        let end = self.end();
        if offset >= end {
            // Nothing to cut, but an epoch this replica started as leader without writing
            // a record (it lives at the log end) conflicts with the new leader's history:
            // drop it, or the follower would keep fetching with it and be told to truncate
            // forever (Kafka's UnifiedLog.truncateTo does the same).
            return self.epochs.truncate_from_end(end);
        }
        // First, so that a failure half-way leaves no cached batch the files no longer hold.
        self.tail.reset(offset);
        if offset <= self.log_start_offset {
            let start = offset.max(0);
            return self.truncate_fully_and_start_at(Offset(start.min(self.log_start_offset)));
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if self.segments.len() == 1 {
                break;
            }
            let seg = self.segments.remove(&base).expect("listed");
            seg.delete()?;
        }
        let interval = self.config.index_interval_bytes;
        let end = self.active_mut().truncate_to(offset, interval)?;
        assert!(
            end <= offset,
            "truncation left the log end at {end} > {offset}"
        );
        if end < self.log_start_offset {
            // The cut fell inside the batch that holds the log start: nothing readable remains.
            return self.truncate_fully_and_start_at(Offset(self.log_start_offset));
        }
        self.tail.reset(end);
        // A background flush may cover bytes that are gone now.
        self.roll_flushes.clear();
        self.epochs.truncate_from_end(end)?;
        self.producers = ProducerState::load(&self.dir, self.log_start_offset, end)?;
        self.replay_producer_state()?;
        self.recovery_point = self.recovery_point.min(end);
        if self.recovery_point_persisted > end {
            self.persist_recovery_point(self.active().base_offset().min(end))?;
        }
        tracing::info!(dir = %self.dir.display(), requested = offset, log_end_offset = end, "truncated log");
        Ok(())
    }

    /// Deletes all data and restarts the log empty at `offset` (a follower whose leader's
    /// log start is past its own log end).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<()> {
        let offset = offset.get();
        self.tail.reset(offset);
        self.roll_flushes.clear();
        let all: Vec<i64> = self.segments.keys().copied().collect();
        for base in all {
            let seg = self.segments.remove(&base).expect("listed");
            seg.delete()?;
        }
        self.segments
            .insert(offset, Segment::create(&self.dir, offset)?);
        self.log_start_offset = offset;
        write_offset_file(&self.dir.join(LOG_START), offset)?;
        self.epochs.clear()?;
        crate::producer::remove_all_snapshots(&self.dir)?;
        self.producers = ProducerState::new(offset);
        self.recovery_point = offset;
        self.persist_recovery_point(offset)?;
        Ok(())
    }

    /// Moves the log start forward (Kafka DeleteRecords, or a follower matching its
    /// leader's log start). Whole segments below it are deleted.
    pub fn increment_log_start_offset(&mut self, offset: Offset) -> Result<()> {
        let offset = offset.get();
        let end = self.end();
        if offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.log_start_offset = offset;
        write_offset_file(&self.dir.join(LOG_START), offset)?;
        loop {
            let mut it = self.segments.iter();
            let (Some((&first, _)), Some((&second, _))) = (it.next(), it.next()) else {
                break;
            };
            if second > offset {
                break;
            }
            let seg = self.segments.remove(&first).expect("first");
            seg.delete()?;
        }
        self.epochs.truncate_from_start(offset)?;
        Ok(())
    }

    /// Applies `retention.ms` and `retention.bytes`: deletes the oldest closed segments that
    /// are past either limit and lie wholly below `high_watermark` (data not yet replicated
    /// is never deleted). The active segment is never deleted. Returns the deleted segments'
    /// base offsets.
    pub fn delete_retained_segments(&mut self, high_watermark: Offset) -> Result<Vec<Offset>> {
        let high_watermark = high_watermark.get();
        let now = (self.clock)();
        let retention_ms = self.config.retention_ms;
        let mut excess = if self.config.retention_bytes >= 0 {
            self.size_bytes() as i64 - self.config.retention_bytes
        } else {
            0
        };
        let mut deleted = Vec::new();
        loop {
            if self.segments.len() < 2 {
                break;
            }
            let mut it = self.segments.values();
            let first = it.next().expect("two");
            let next_base = it.next().expect("two").base_offset();
            if next_base > high_watermark {
                break;
            }
            let expired = retention_ms >= 0
                && first.max_timestamp() != i64::MIN
                && now.saturating_sub(first.max_timestamp()) > retention_ms;
            let too_big = excess > 0 && excess >= first.size() as i64;
            if !(expired || too_big) {
                break;
            }
            excess -= first.size() as i64;
            let base = first.base_offset();
            let seg = self.segments.remove(&base).expect("first");
            seg.delete()?;
            deleted.push(Offset(base));
            let new_start = *self.segments.keys().next().expect("one left");
            if new_start > self.log_start_offset {
                self.log_start_offset = new_start;
            }
        }
        if !deleted.is_empty() {
            self.epochs.truncate_from_start(self.log_start_offset)?;
            tracing::info!(dir = %self.dir.display(), ?deleted, log_start_offset = self.log_start_offset,
                "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Flushes everything and leaves the clean-shutdown marker, so the next open skips the
    /// CRC scan. Dropping a `Log` without `close` behaves like a crash.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// `close` for an owner that cannot give the log up (it sits behind a lock): flushes and
    /// writes the clean-shutdown marker. No append may follow; the process is exiting.
    pub fn shutdown(&mut self) -> Result<()> {
        self.flush()?;
        let end = self.end();
        self.producers.write_snapshot(&self.dir)?;
        self.persist_recovery_point(end)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN);
        std::fs::write(&marker, b"")
            .and_then(|_| std::fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| StorageError::io("write marker", &marker, e))?;
        Ok(())
    }

    /// Deletes the whole partition directory (the replica was removed).
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io("delete log dir", &dir, e))
    }
}

impl AppendInfo {
    fn add(&mut self, h: BatchHeader) {
        self.last_offset = Offset(h.last_offset());
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.records += h.records_count.max(0) as u64;
        self.bytes += h.size_bytes() as u64;
        self.batches.push(h);
    }
}

fn remove_orphan_indexes(dir: &Path, bases: &[i64]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list log dir", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stem = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"));
        if let Some(base) = stem.and_then(|s| s.parse::<i64>().ok()) {
            if bases.binary_search(&base).is_err() {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| StorageError::io("remove orphan index", &path, e))?;
            }
        }
    }
    Ok(())
}
