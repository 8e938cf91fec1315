//! Idempotent-producer state of one partition (Kafka's `ProducerStateManager`).
//!
//! For every producer id seen in the log the state keeps the producer epoch and the
//! sequence ranges and offsets of its last [`MAX_CACHED_BATCHES`] batches. The leader
//! checks each incoming batch against it: a batch it has already stored is a duplicate
//! (answered with the original offsets, nothing written), a batch that does not continue
//! the producer's sequence is `OUT_OF_ORDER_SEQUENCE_NUMBER`, a batch from an older epoch
//! is `INVALID_PRODUCER_EPOCH`. Followers and recovery rebuild the same state from the
//! stored batch headers without checking, so deduplication survives failover and restarts.
//!
//! ```text
//!   <log dir>/<offset>.snapshot   state as of log offset <offset> (every batch below it)
//!   open:      newest snapshot ≤ log end, then replay the batch headers after it
//!   truncate:  drop snapshots past the cut, reload, replay up to the new log end
//!   roll:      write a snapshot at the new segment's base offset
//! ```
//!
//! Snapshot file: `b"SPST"`, version u16, count u32, then per producer `id i64, epoch i16,
//! n u8, n × (first_seq i32, last_seq i32, first_offset i64, last_offset i64, max_ts i64)`,
//! then a CRC-32C of everything before it, all big-endian. A snapshot that fails its CRC is
//! ignored (the log is replayed from an older one, or from the start).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::BatchHeader;
use crate::error::{Result, StorageError};

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`, and the largest
/// `max.in.flight.requests.per.connection` idempotence allows).
pub const MAX_CACHED_BATCHES: usize = 5;

const MAGIC: &[u8; 4] = b"SPST";
const VERSION: u16 = 1;
const SUFFIX: &str = ".snapshot";
/// Snapshots kept on disk (older ones are deleted when a new one is written).
const SNAPSHOTS_KEPT: usize = 3;

/// Where one stored batch of a producer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its largest timestamp.
    pub max_timestamp: i64,
}

/// What the log knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerEntry {
    /// Current producer epoch.
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn push(&mut self, b: BatchMetadata) {
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(b);
    }
}

/// The outcome of checking one incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or the next batch in sequence: append it.
    Append,
    /// Already stored at these offsets: answer with them and append nothing.
    Duplicate(BatchMetadata),
}

/// Last sequence of a batch, wrapping at `i32::MAX` like Kafka.
fn last_seq_of(h: &BatchHeader) -> i32 {
    let last = h.base_sequence as i64 + h.last_offset_delta as i64;
    if last > i32::MAX as i64 {
        (last - i32::MAX as i64 - 1) as i32
    } else {
        last as i32
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer state of one partition, as of `map_end_offset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Every batch below this offset has been applied.
    map_end_offset: i64,
}

impl ProducerState {
    /// Empty state starting at `offset`.
    pub fn new(offset: i64) -> Self {
        ProducerState {
            producers: HashMap::new(),
            map_end_offset: offset,
        }
    }

    /// The offset up to which batches have been applied.
    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }

    /// The entry of one producer.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer tracked, in no particular order.
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// No producer tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Leader check of an incoming batch (offsets not yet assigned). `pending` holds
    /// batches of the same request already accepted, so a request may carry several
    /// consecutive batches of one producer.
    pub fn check(&self, h: &BatchHeader, pending: &[BatchHeader]) -> Result<SequenceCheck> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        if h.base_sequence < 0 {
            return Err(StorageError::InvalidRequest {
                reason: format!(
                    "batch of idempotent producer {} has no base sequence ({})",
                    h.producer_id, h.base_sequence
                ),
            });
        }
        if h.producer_epoch < 0 {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: -1,
            });
        }
        // The state the batch meets: stored entry plus earlier batches of this request.
        let mut entry = self.producers.get(&h.producer_id).cloned();
        for p in pending.iter().filter(|p| p.producer_id == h.producer_id) {
            let e = entry.get_or_insert_with(ProducerEntry::default);
            if p.producer_epoch != e.epoch {
                e.epoch = p.producer_epoch;
                e.batches.clear();
            }
            e.push(BatchMetadata {
                first_seq: p.base_sequence,
                last_seq: last_seq_of(p),
                first_offset: -1,
                last_offset: -1,
                max_timestamp: p.max_timestamp,
            });
        }
        let Some(entry) = entry else {
            // A new producer starts at sequence 0. (Kafka also accepts any sequence here,
            // for producers whose state went with deleted segments; we refuse it, because
            // pipelined requests can arrive out of order and a later batch must not be
            // taken as the start of the producer's history.)
            if h.base_sequence != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    got: h.base_sequence,
                    expected: 0,
                });
            }
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        let last_seq = last_seq_of(h);
        if h.producer_epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
            {
                if dup.first_offset >= 0 {
                    return Ok(SequenceCheck::Duplicate(*dup));
                }
                return Err(StorageError::InvalidRequest {
                    reason: format!(
                        "producer {} sent sequence {}..{} twice in one request",
                        h.producer_id, h.base_sequence, last_seq
                    ),
                });
            }
            let expected = entry.last_seq().map_or(h.base_sequence, next_seq);
            if h.base_sequence != expected {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    got: h.base_sequence,
                    expected,
                });
            }
        } else if h.base_sequence != 0 {
            // A bumped epoch restarts the sequence at 0.
            return Err(StorageError::OutOfOrderSequence {
                producer_id: h.producer_id,
                got: h.base_sequence,
                expected: 0,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a stored batch (final offsets), without checks: leader after `check`,
    /// follower appends and recovery replay.
    pub fn apply(&mut self, h: &BatchHeader) {
        if h.producer_id >= 0 {
            let e = self.producers.entry(h.producer_id).or_default();
            if h.producer_epoch != e.epoch {
                e.epoch = h.producer_epoch;
                e.batches.clear();
            }
            e.push(BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: last_seq_of(h),
                first_offset: h.base_offset,
                last_offset: h.base_offset + h.last_offset_delta as i64,
                max_timestamp: h.max_timestamp,
            });
        }
        self.map_end_offset = self.map_end_offset.max(h.next_offset());
    }

    /// Moves the applied end forward without a batch (a log restarted at a later offset).
    pub fn set_map_end_offset(&mut self, offset: i64) {
        self.map_end_offset = offset;
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8], offset: i64) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC || u16::from_be_bytes(r.array()?) != VERSION {
            return None;
        }
        let count = u32::from_be_bytes(r.array()?);
        let mut state = ProducerState::new(offset);
        for _ in 0..count {
            let id = i64::from_be_bytes(r.array()?);
            let epoch = i16::from_be_bytes(r.array()?);
            let n = r.take(1)?[0] as usize;
            let mut entry = ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(n),
            };
            for _ in 0..n {
                entry.batches.push_back(BatchMetadata {
                    first_seq: i32::from_be_bytes(r.array()?),
                    last_seq: i32::from_be_bytes(r.array()?),
                    first_offset: i64::from_be_bytes(r.array()?),
                    last_offset: i64::from_be_bytes(r.array()?),
                    max_timestamp: i64::from_be_bytes(r.array()?),
                });
            }
            state.producers.insert(id, entry);
        }
        r.0.is_empty().then_some(state)
    }

    /// Writes the state as `<map_end_offset>.snapshot` in `dir` (atomically) and deletes
    /// all but the newest few snapshots.
    pub fn write_snapshot(&self, dir: &Path) -> Result<()> {
        let path = snapshot_path(dir, self.map_end_offset);
        let tmp = path.with_extension("snapshot.tmp");
        std::fs::write(&tmp, self.encode())
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .map_err(|e| StorageError::io("write producer snapshot", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| StorageError::io("rename producer snapshot", &path, e))?;
        let offsets = list_snapshots(dir)?;
        if offsets.len() > SNAPSHOTS_KEPT {
            for o in &offsets[..offsets.len() - SNAPSHOTS_KEPT] {
                remove_snapshot(dir, *o)?;
            }
        }
        Ok(())
    }

    /// Loads the newest readable snapshot at or below `max_offset` (and at or above
    /// `min_offset`), deleting snapshots past `max_offset`. Empty state at `min_offset`
    /// when there is none.
    pub fn load(dir: &Path, min_offset: i64, max_offset: i64) -> Result<Self> {
        let offsets = list_snapshots(dir)?;
        for &o in offsets.iter().filter(|&&o| o > max_offset) {
            remove_snapshot(dir, o)?;
        }
        for &o in offsets
            .iter()
            .rev()
            .filter(|&&o| o <= max_offset && o >= min_offset)
        {
            let path = snapshot_path(dir, o);
            let bytes = std::fs::read(&path)
                .map_err(|e| StorageError::io("read producer snapshot", &path, e))?;
            match Self::decode(&bytes, o) {
                Some(s) => return Ok(s),
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a damaged producer snapshot");
                    remove_snapshot(dir, o)?;
                }
            }
        }
        Ok(ProducerState::new(min_offset))
    }
}

/// Deletes every producer snapshot in `dir` (the log was emptied).
pub fn remove_all_snapshots(dir: &Path) -> Result<()> {
    for o in list_snapshots(dir)? {
        remove_snapshot(dir, o)?;
    }
    Ok(())
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SUFFIX}"))
}

fn remove_snapshot(dir: &Path, offset: i64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("remove producer snapshot", &path, e))
        }
        _ => Ok(()),
    }
}

fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list log dir", dir, e))?;
        let name = entry.file_name();
        if let Some(stem) = name.to_string_lossy().strip_suffix(SUFFIX) {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut s = ProducerState::new(0);
        let b0 = header(7, 0, 0, 10, 0);
        assert_eq!(s.check(&b0, &[]).unwrap(), SequenceCheck::Append);
        s.apply(&b0);
        let b1 = header(7, 0, 10, 5, 10);
        s.apply(&b1);
        // A retry of either cached batch is a duplicate with the original offsets.
        match s.check(&header(7, 0, 0, 10, -1), &[]).unwrap() {
            SequenceCheck::Duplicate(m) => assert_eq!((m.first_offset, m.last_offset), (0, 9)),
            other => panic!("{other:?}"),
        }
        // A gap.
        let err = s.check(&header(7, 0, 16, 1, -1), &[]).unwrap_err();
        assert_eq!(err.reason(), "OUT_OF_ORDER_SEQUENCE_NUMBER");
        // The next batch.
        assert_eq!(
            s.check(&header(7, 0, 15, 1, -1), &[]).unwrap(),
            SequenceCheck::Append
        );
        // An older epoch is fenced; a newer one must restart at 0.
        s.apply(&header(7, 1, 0, 1, 15));
        assert_eq!(
            s.check(&header(7, 0, 16, 1, -1), &[]).unwrap_err().reason(),
            "INVALID_PRODUCER_EPOCH"
        );
        assert_eq!(
            s.check(&header(7, 2, 3, 1, -1), &[]).unwrap_err().reason(),
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        // Non-idempotent batches are never checked.
        assert_eq!(
            s.check(&header(-1, -1, -1, 3, -1), &[]).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::new(0);
        for i in 0..7 {
            s.apply(&header(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.producer(1).unwrap().batches.len(), MAX_CACHED_BATCHES);
        // Batch 1 fell out of the cache: it is neither a duplicate nor in sequence.
        assert!(s.check(&header(1, 0, 1, 1, -1), &[]).is_err());
        assert!(matches!(
            s.check(&header(1, 0, 2, 1, -1), &[]).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn batches_of_one_request_are_checked_in_order() {
        let s = ProducerState::new(0);
        let a = header(3, 0, 0, 2, -1);
        let b = header(3, 0, 2, 2, -1);
        assert_eq!(s.check(&b, &[a]).unwrap(), SequenceCheck::Append);
        assert!(s.check(&header(3, 0, 5, 1, -1), &[a, b]).is_err());
    }

    #[test]
    fn a_new_producer_starts_at_sequence_zero() {
        let s = ProducerState::new(0);
        let err = s.check(&header(4, 0, 5, 1, -1), &[]).unwrap_err();
        assert_eq!(err.reason(), "OUT_OF_ORDER_SEQUENCE_NUMBER");
        assert!(s.check(&header(4, 0, 0, 1, -1), &[]).is_ok());
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerState::new(0);
        s.apply(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(
            s.check(&header(1, 0, 0, 1, -1), &[]).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn snapshots_round_trip_and_damaged_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerState::new(0);
        s.apply(&header(1, 0, 0, 3, 0));
        s.apply(&header(2, 4, 0, 1, 3));
        s.write_snapshot(dir.path()).unwrap();
        let loaded = ProducerState::load(dir.path(), 0, 100).unwrap();
        assert_eq!(loaded, s);
        // Below the snapshot: empty state.
        assert!(ProducerState::load(dir.path(), 0, 3).unwrap().is_empty());
        // The load at 3 deleted the snapshot at 4 (past the cut).
        assert!(ProducerState::load(dir.path(), 0, 100).unwrap().is_empty());
        s.write_snapshot(dir.path()).unwrap();
        let path = snapshot_path(dir.path(), 4);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let loaded = ProducerState::load(dir.path(), 0, 100).unwrap();
        assert!(loaded.is_empty());
        assert_eq!(loaded.map_end_offset(), 0);
    }
}
