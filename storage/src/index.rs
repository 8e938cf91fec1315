//! Sparse offset and time indexes of one segment.
//!
//! Both live in memory as sorted vectors and are mirrored to a file by appending fixed-size
//! big-endian entries. New entries are buffered and reach the file on [`flush`]: after a
//! crash the file may miss its tail, which only makes the index sparser (still correct), and
//! recovery rebuilds the active segment's indexes anyway.
//!
//! ```text
//! .index      [relative_offset u32][position u32]   relative_offset = base_offset - segment base
//! .timeindex  [timestamp i64][relative_offset u32]  timestamp = max timestamp so far
//! ```
//!
//! [`flush`]: SegmentIndex::flush

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};

/// An offset index entry: the batch starting at `relative_offset` is at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
}

/// A time index entry: up to and including the batch at `relative_offset`, no timestamp
/// exceeds `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest timestamp seen in the segment up to this batch.
    pub timestamp: i64,
    /// Base offset of that batch minus the segment base offset.
    pub relative_offset: u32,
}

/// Why a loaded index was thrown away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexProblem {
    /// The file did not exist.
    Missing,
    /// The file's size or contents break an invariant.
    Corrupt(String),
}

/// The two indexes of one segment with their files.
#[derive(Debug)]
pub struct SegmentIndex {
    offset_path: PathBuf,
    time_path: PathBuf,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    /// Append-mode handles of the two files, opened on the first write so closed segments
    /// hold no index descriptors.
    offset_file: Option<File>,
    time_file: Option<File>,
    /// Encoded entries not yet written to the files.
    pending_offsets: Vec<u8>,
    pending_times: Vec<u8>,
}

/// Pending index bytes beyond which entries are written out even without a flush.
const PENDING_INDEX_BYTES_MAX: usize = 64 * 1024;

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| StorageError::io("open index", path, e))
}

impl SegmentIndex {
    /// An empty index whose files are (re)created empty.
    pub fn create(offset_path: PathBuf, time_path: PathBuf) -> Result<Self> {
        for p in [&offset_path, &time_path] {
            File::create(p).map_err(|e| StorageError::io("create index", p, e))?;
        }
        Ok(SegmentIndex {
            offset_file: None,
            time_file: None,
            offset_path,
            time_path,
            offsets: Vec::new(),
            times: Vec::new(),
            pending_offsets: Vec::new(),
            pending_times: Vec::new(),
        })
    }

    /// Loads both index files and checks their invariants against the log file size.
    /// Returns the problem instead of an index when the files can't be trusted.
    pub fn load(
        offset_path: PathBuf,
        time_path: PathBuf,
        log_size: u64,
    ) -> Result<Result<Self, IndexProblem>> {
        let offsets_raw = match read_opt(&offset_path)? {
            Some(b) => b,
            None => return Ok(Err(IndexProblem::Missing)),
        };
        let times_raw = match read_opt(&time_path)? {
            Some(b) => b,
            None => return Ok(Err(IndexProblem::Missing)),
        };
        if offsets_raw.len() % OFFSET_INDEX_ENTRY_BYTES != 0 {
            return Ok(Err(IndexProblem::Corrupt(format!(
                "{}: size {} is not a multiple of {OFFSET_INDEX_ENTRY_BYTES}",
                offset_path.display(),
                offsets_raw.len()
            ))));
        }
        if times_raw.len() % TIME_INDEX_ENTRY_BYTES != 0 {
            return Ok(Err(IndexProblem::Corrupt(format!(
                "{}: size {} is not a multiple of {TIME_INDEX_ENTRY_BYTES}",
                time_path.display(),
                times_raw.len()
            ))));
        }
        let offsets: Vec<OffsetEntry> = offsets_raw
            .chunks_exact(OFFSET_INDEX_ENTRY_BYTES)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes(c[0..4].try_into().expect("4")),
                position: u32::from_be_bytes(c[4..8].try_into().expect("4")),
            })
            .collect();
        let times: Vec<TimeEntry> = times_raw
            .chunks_exact(TIME_INDEX_ENTRY_BYTES)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().expect("8")),
                relative_offset: u32::from_be_bytes(c[8..12].try_into().expect("4")),
            })
            .collect();
        for w in offsets.windows(2) {
            if w[1].relative_offset <= w[0].relative_offset || w[1].position <= w[0].position {
                return Ok(Err(IndexProblem::Corrupt(format!(
                    "{}: entries not increasing: {:?} then {:?}",
                    offset_path.display(),
                    w[0],
                    w[1]
                ))));
            }
        }
        if let Some(last) = offsets.last() {
            if last.position as u64 >= log_size {
                return Ok(Err(IndexProblem::Corrupt(format!(
                    "{}: entry points at byte {} of a {log_size}-byte log",
                    offset_path.display(),
                    last.position
                ))));
            }
        }
        if offsets.first().is_some_and(|e| e.position != 0) && log_size > 0 {
            // We always index the first batch at position 0.
            return Ok(Err(IndexProblem::Corrupt(format!(
                "{}: first entry is not at position 0",
                offset_path.display()
            ))));
        }
        for w in times.windows(2) {
            if w[1].timestamp <= w[0].timestamp || w[1].relative_offset < w[0].relative_offset {
                return Ok(Err(IndexProblem::Corrupt(format!(
                    "{}: entries not increasing",
                    time_path.display()
                ))));
            }
        }
        Ok(Ok(SegmentIndex {
            offset_file: None,
            time_file: None,
            offset_path,
            time_path,
            offsets,
            times,
            pending_offsets: Vec::new(),
            pending_times: Vec::new(),
        }))
    }

    /// The offset entries in order.
    pub fn offsets(&self) -> &[OffsetEntry] {
        &self.offsets
    }

    /// The time entries in order.
    pub fn times(&self) -> &[TimeEntry] {
        &self.times
    }

    /// Adds an offset entry; it must be beyond the last one.
    pub fn push_offset(&mut self, e: OffsetEntry) {
        if let Some(last) = self.offsets.last() {
            assert!(
                e.relative_offset > last.relative_offset && e.position > last.position,
                "offset index must grow: last {last:?}, new {e:?}"
            );
        }
        self.offsets.push(e);
        self.pending_offsets
            .extend_from_slice(&e.relative_offset.to_be_bytes());
        self.pending_offsets
            .extend_from_slice(&e.position.to_be_bytes());
        if self.pending_offsets.len() >= PENDING_INDEX_BYTES_MAX {
            // A failed write here only loses index entries; the next flush reports the error.
            let _ = self.flush(false);
        }
    }

    /// Adds a time entry if it raises the max timestamp.
    pub fn push_time(&mut self, e: TimeEntry) {
        if self
            .times
            .last()
            .is_some_and(|l| e.timestamp <= l.timestamp)
        {
            return;
        }
        self.times.push(e);
        self.pending_times
            .extend_from_slice(&e.timestamp.to_be_bytes());
        self.pending_times
            .extend_from_slice(&e.relative_offset.to_be_bytes());
    }

    /// The last entry at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.offsets[i])
    }

    /// The last time entry whose timestamp is below `timestamp`: every batch up to it holds
    /// only smaller timestamps, so a search for `timestamp` may start there.
    pub fn lookup_time_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self.times.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| self.times[i])
    }

    /// Drops entries at or beyond `relative_offset` / `position` and rewrites the files.
    pub fn truncate(&mut self, relative_offset: u32) -> Result<()> {
        self.offsets.retain(|e| e.relative_offset < relative_offset);
        self.times.retain(|e| e.relative_offset < relative_offset);
        self.rewrite()
    }

    /// Writes the whole in-memory index to the files (used after truncation and rebuild).
    pub fn rewrite(&mut self) -> Result<()> {
        let mut ob = Vec::with_capacity(self.offsets.len() * OFFSET_INDEX_ENTRY_BYTES);
        for e in &self.offsets {
            ob.extend_from_slice(&e.relative_offset.to_be_bytes());
            ob.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut tb = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for e in &self.times {
            tb.extend_from_slice(&e.timestamp.to_be_bytes());
            tb.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        std::fs::write(&self.offset_path, ob)
            .map_err(|e| StorageError::io("write index", &self.offset_path, e))?;
        std::fs::write(&self.time_path, tb)
            .map_err(|e| StorageError::io("write index", &self.time_path, e))?;
        self.pending_offsets.clear();
        self.pending_times.clear();
        Ok(())
    }

    /// Closes the file handles (the segment is no longer written to).
    pub fn close_files(&mut self) -> Result<()> {
        self.flush(false)?;
        self.offset_file = None;
        self.time_file = None;
        Ok(())
    }

    /// Appends buffered entries to the files; with `sync`, also fsyncs them.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        for (path, f, pending) in [
            (
                &self.offset_path,
                &mut self.offset_file,
                &mut self.pending_offsets,
            ),
            (
                &self.time_path,
                &mut self.time_file,
                &mut self.pending_times,
            ),
        ] {
            if pending.is_empty() && !sync {
                continue;
            }
            if f.is_none() {
                *f = Some(open_append(path)?);
            }
            let f = f.as_mut().expect("opened above");
            f.write_all(pending)
                .map_err(|e| StorageError::io("append index", path, e))?;
            if sync {
                f.sync_data()
                    .map_err(|e| StorageError::io("fsync index", path, e))?;
            }
            pending.clear();
        }
        Ok(())
    }

    /// Deletes both files.
    pub fn delete_files(&self) -> Result<()> {
        for p in [&self.offset_path, &self.time_path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete index", p, e)),
            }
        }
        Ok(())
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read index", path, e)),
    }
}
