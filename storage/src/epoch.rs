//! The leader-epoch checkpoint: for each leader epoch, the first offset written in it
//! (Kafka's `LeaderEpochFileCache`, KIP-101/279).
//!
//! A follower that meets a new leader asks "where does my last epoch end in your log?" and
//! truncates to the answer instead of to its high watermark, which can lose or diverge data.
//!
//! File format (Kafka's `leader-epoch-checkpoint`): a version line `0`, a count line, then one
//! `epoch start_offset` line per entry. Written to a temp file and renamed at every change,
//! and fsynced with the log's next flush ([`LeaderEpochCache::sync`], before the recovery
//! point moves), not at each change: a broker taking over thousands of leaderships at once
//! would otherwise pay thousands of fsyncs (Kafka's KAFKA-15046 made the same change). What
//! a crash can lose is rebuilt from the batch headers above the recovery point, whose
//! epochs are all durable; a checkpoint lost whole is rebuilt from the log start.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// File name of the checkpoint inside a partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH` / `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED: i64 = -1;

/// One entry: epoch `epoch` starts at offset `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// First offset written under that epoch.
    pub start_offset: i64,
}

/// In-memory epoch cache mirrored to the checkpoint file on every change.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
    /// Written since the last [`LeaderEpochCache::sync`].
    unsynced: bool,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir` (empty if absent). A malformed file is reported as
    /// corrupt rather than silently emptied: the caller decides.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StorageError::io("read epoch checkpoint", &path, e)),
        };
        let bad = |why: &str| StorageError::corrupt(format!("{}: {why}", path.display()));
        let mut entries = Vec::new();
        if !text.trim().is_empty() {
            let mut lines = text.lines();
            if lines.next().map(str::trim) != Some("0") {
                return Err(bad("unknown version"));
            }
            let count: usize = lines
                .next()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| bad("bad count line"))?;
            for line in lines.by_ref().take(count) {
                let mut it = line.split_whitespace();
                let epoch = it.next().and_then(|s| s.parse().ok());
                let start = it.next().and_then(|s| s.parse().ok());
                match (epoch, start) {
                    (Some(epoch), Some(start_offset)) => entries.push(EpochEntry {
                        epoch,
                        start_offset,
                    }),
                    _ => return Err(bad(&format!("bad entry line {line:?}"))),
                }
            }
            if entries.len() != count {
                return Err(bad("fewer entries than the count line says"));
            }
        }
        Ok(LeaderEpochCache {
            path,
            entries,
            unsynced: false,
        })
    }

    /// All entries in epoch order.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The epoch the record at `offset` was written in (the last epoch starting at or
    /// before it; Kafka's `epochForOffset`), if the cache knows one.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool> {
        if epoch < 0 {
            return Ok(false);
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch {
                return Ok(false);
            }
            assert!(
                start_offset >= last.start_offset,
                "epoch {epoch} starts at {start_offset}, before epoch {} at {}",
                last.epoch,
                last.start_offset
            );
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.write()?;
        Ok(true)
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor(epoch, logEndOffset)`:
    /// * the latest epoch → `(epoch, log_end_offset)`;
    /// * an epoch newer than any known → `(UNDEFINED, UNDEFINED)`;
    /// * an epoch older than any known → `(epoch, start offset of the first epoch)`;
    /// * otherwise → `(largest known epoch ≤ epoch, start offset of the next higher epoch)`.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i64, i64) {
        let Some(last) = self.entries.last() else {
            return (UNDEFINED, UNDEFINED);
        };
        if epoch < 0 {
            return (UNDEFINED, UNDEFINED);
        }
        if epoch == last.epoch {
            return (epoch as i64, log_end_offset);
        }
        // First entry with an epoch greater than the one asked about.
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        match (i, self.entries.get(i)) {
            (_, None) => (UNDEFINED, UNDEFINED),
            (0, Some(higher)) => (epoch as i64, higher.start_offset),
            (i, Some(higher)) => (self.entries[i - 1].epoch as i64, higher.start_offset),
        }
    }

    /// Drops entries starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.write()?;
        }
        Ok(())
    }

    /// The log start moved to `start_offset`: drop epochs that ended before it and clamp
    /// the first remaining one to start there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let i = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if i == 0 {
            return Ok(());
        }
        let changed = i > 1 || self.entries[0].start_offset != start_offset;
        self.entries.drain(..i - 1);
        self.entries[0].start_offset = start_offset;
        if changed {
            self.write()?;
        }
        Ok(())
    }

    /// Removes every entry (log fully truncated).
    pub fn clear(&mut self) -> Result<()> {
        self.entries.clear();
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| StorageError::io("write epoch checkpoint", &tmp, e))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| StorageError::io("rename epoch checkpoint", &self.path, e))?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes the checkpoint durable (file and directory) if it changed since the last sync.
    /// The log calls it before it flushes and moves its recovery point.
    pub fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io("fsync epoch checkpoint", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io("fsync", dir, e))?;
        }
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        for &(e, o) in entries {
            assert!(c.assign(e, o).unwrap());
        }
        (dir, c)
    }

    #[test]
    fn end_offset_follows_kafka_semantics() {
        let (_d, c) = cache(&[(1, 0), (3, 10), (4, 25)]);
        // Which epoch wrote an offset (Kafka's epochForOffset, used by ListOffsets).
        let epochs: Vec<Option<i32>> = [-1, 0, 9, 10, 24, 25, 99]
            .iter()
            .map(|o| c.epoch_for_offset(*o))
            .collect();
        assert_eq!(
            epochs,
            [None, Some(1), Some(1), Some(3), Some(3), Some(4), Some(4)]
        );
        assert_eq!(
            c.end_offset_for(0, 40),
            (0, 0),
            "older than any: first start offset"
        );
        assert_eq!(c.end_offset_for(-1, 40), (UNDEFINED, UNDEFINED));
        assert_eq!(c.end_offset_for(1, 40), (1, 10));
        // Epoch 2 was never used here: answer with the largest epoch below it.
        assert_eq!(c.end_offset_for(2, 40), (1, 10));
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(4, 40), (4, 40));
        assert_eq!(
            c.end_offset_for(9, 40),
            (UNDEFINED, UNDEFINED),
            "newer than any"
        );
    }

    #[test]
    fn checkpoint_survives_reload_and_truncation() {
        let (dir, mut c) = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_from_end(25).unwrap();
        c.truncate_from_start(5).unwrap();
        let again = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(
            again.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 5
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 10
                }
            ]
        );
    }

    #[test]
    fn older_or_equal_epochs_are_ignored() {
        let (_d, mut c) = cache(&[(5, 100)]);
        assert!(!c.assign(5, 120).unwrap());
        assert!(!c.assign(2, 130).unwrap());
        assert_eq!(c.entries().len(), 1);
    }

    #[test]
    fn garbled_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT), "0\n2\n1 0\nxx\n").unwrap();
        assert!(LeaderEpochCache::load(dir.path()).is_err());
    }
}
