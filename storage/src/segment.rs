//! One segment: a `.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! The segment knows byte positions; the [`Log`](crate::Log) above it knows offsets across
//! segments, epochs and policies. Writes go through the file cursor (always at `size`),
//! reads use positioned reads (`pread`), so a read never disturbs an append.

use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{peek_batch_size, BatchHeader, RecordBatch, Validation};
use crate::error::{Result, StorageError};
use crate::files::SegmentFile;
use crate::index::{IndexProblem, OffsetEntry, SegmentIndex, TimeEntry};
use crate::limits::{RECORD_BATCH_BYTES_MAX, RECORD_BATCH_HEADER_BYTES, SCAN_CHUNK_BYTES};
use crate::records::{
    in_page_cache, read_at, FileRange, Records, FILE_RANGE_HEADERS_MAX, FILE_RANGE_MIN_BYTES,
};

/// File name stem of a segment: the base offset as 20 zero-padded digits (Kafka's naming).
pub fn segment_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Where and why recovery cut a segment short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The `.log` file.
    pub file: PathBuf,
    /// Byte position of the first bad batch; the file was truncated here.
    pub position: u64,
    /// What was wrong.
    pub reason: String,
}

/// One segment of a partition log.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first batch this segment may hold (its file name).
    base_offset: i64,
    log_path: PathBuf,
    /// Read + append handle, opened on demand and closed when too many are open
    /// ([`crate::files`]); the file's length always equals `size` between calls.
    file: SegmentFile,
    /// Bytes of valid batches in the file.
    size: u64,
    /// Offset after the last batch (== `base_offset` when empty).
    next_offset: i64,
    /// Largest record timestamp; `i64::MIN` when empty.
    max_timestamp: i64,
    /// Max timestamp of the first batch: what `segment.ms` measures age from.
    first_batch_timestamp: Option<i64>,
    index: SegmentIndex,
    /// Position of the last indexed batch, to space entries `index.interval.bytes` apart.
    last_indexed_position: Option<u64>,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = segment_stem(base_offset);
        (
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        )
    }

    /// Creates a new, empty segment (truncating any leftover files of that name).
    pub fn create(dir: &Path, base_offset: i64) -> Result<Self> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = SegmentFile::create(log_path.clone())?;
        let index = SegmentIndex::create(index_path, time_path)?;
        Ok(Segment {
            base_offset,
            log_path,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            first_batch_timestamp: None,
            index,
            last_indexed_position: None,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is CRC-checked and the indexes
    /// rebuilt; otherwise the indexes are loaded (rebuilt when missing or corrupt) and only
    /// the tail after the last index entry is verified. A bad or torn batch truncates the
    /// file at its start and is reported.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_interval_bytes: u64,
    ) -> Result<(Self, Option<Corruption>)> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = SegmentFile::existing(log_path.clone())?;
        let file_size = file
            .get()?
            .metadata()
            .map_err(|e| StorageError::io("stat segment", &log_path, e))?
            .len();
        let loaded = if recover {
            Err(IndexProblem::Corrupt("recovery requested".into()))
        } else {
            SegmentIndex::load(index_path.clone(), time_path.clone(), file_size)?
        };
        let (index, from_position, rebuild) = match loaded {
            Ok(index) => {
                let from = index.offsets().last().map_or(0, |e| e.position as u64);
                (index, from, false)
            }
            Err(problem) => {
                if !recover {
                    tracing::warn!(segment = %log_path.display(), ?problem, "rebuilding segment indexes");
                }
                (SegmentIndex::create(index_path, time_path)?, 0, true)
            }
        };
        let max_ts_indexed = index.times().last().map_or(i64::MIN, |e| e.timestamp);
        let next_offset = index
            .offsets()
            .last()
            .map_or(base_offset, |e| base_offset + e.relative_offset as i64);
        let mut seg = Segment {
            base_offset,
            log_path,
            file,
            size: from_position,
            next_offset,
            max_timestamp: max_ts_indexed,
            first_batch_timestamp: None,
            last_indexed_position: (!rebuild && !index.offsets().is_empty())
                .then_some(from_position),
            index,
        };
        // With a loaded index, a failed tail check may mean the index lies (a damaged last
        // entry), not the log: rebuild the index from byte 0 before cutting anything.
        let mut corruption = seg.scan(from_position, file_size, index_interval_bytes, rebuild)?;
        if corruption.is_some() && !rebuild {
            let (_, index_path, time_path) = Self::paths(dir, base_offset);
            seg.index = SegmentIndex::create(index_path, time_path)?;
            seg.size = 0;
            seg.next_offset = base_offset;
            seg.max_timestamp = i64::MIN;
            seg.first_batch_timestamp = None;
            seg.last_indexed_position = None;
            corruption = seg.scan(0, file_size, index_interval_bytes, true)?;
        }
        if let Some(c) = &corruption {
            tracing::warn!(segment = %c.file.display(), position = c.position, reason = %c.reason,
                "truncated segment at the first bad batch");
        }
        if rebuild || corruption.is_some() {
            seg.index.rewrite()?;
        }
        if seg.size > 0 {
            let header = seg.read_header(0)?;
            seg.first_batch_timestamp = Some(header.max_timestamp);
        }
        Ok((seg, corruption))
    }

    /// Walks batches from `from` to `file_size`, verifying each CRC, extending the indexes and
    /// state; on the first bad or torn batch truncates the file there and reports it.
    fn scan(
        &mut self,
        from: u64,
        file_size: u64,
        index_interval_bytes: u64,
        truncate: bool,
    ) -> Result<Option<Corruption>> {
        let mut pos = from;
        let mut chunk = Bytes::new();
        let mut chunk_start = from;
        let mut min_base = if pos == 0 {
            self.base_offset
        } else {
            self.next_offset
        };
        let bad = loop {
            if pos >= file_size {
                break None;
            }
            let in_chunk = (pos - chunk_start) as usize;
            if in_chunk + RECORD_BATCH_HEADER_BYTES > chunk.len() {
                let want = SCAN_CHUNK_BYTES.min((file_size - pos) as usize);
                chunk = self.read_bytes(pos, want)?;
                chunk_start = pos;
            }
            let in_chunk = (pos - chunk_start) as usize;
            let avail = &chunk[in_chunk..];
            if avail.len() < RECORD_BATCH_HEADER_BYTES {
                break Some(format!(
                    "torn batch header: {} bytes left at end of file",
                    avail.len()
                ));
            }
            let size = match peek_batch_size(avail, RECORD_BATCH_BYTES_MAX) {
                Ok(Some(size)) => size,
                Ok(None) => unreachable!("at least a header is available"),
                Err(e) => break Some(e.to_string()),
            };
            if pos + size as u64 > file_size {
                break Some(format!(
                    "torn batch: length says {size} bytes, {} remain in the file",
                    file_size - pos
                ));
            }
            let bytes = if in_chunk + size <= chunk.len() {
                chunk.slice(in_chunk..in_chunk + size)
            } else {
                self.read_bytes(pos, size)?
            };
            let batch = RecordBatch::parse_unchecked(bytes);
            if let Err(e) = batch.validate(Validation::Crc) {
                break Some(e.to_string());
            }
            let h = *batch.header();
            if h.base_offset < min_base {
                break Some(format!(
                    "batch base offset {} goes backwards (expected >= {min_base})",
                    h.base_offset
                ));
            }
            if h.last_offset() - self.base_offset > u32::MAX as i64 {
                break Some(format!(
                    "batch offset {} is too far from segment base {}",
                    h.last_offset(),
                    self.base_offset
                ));
            }
            self.account(pos, &h, index_interval_bytes);
            pos += size as u64;
            min_base = h.next_offset();
        };
        self.size = pos;
        if let Some(reason) = bad {
            if !truncate {
                return Ok(Some(Corruption {
                    file: self.log_path.clone(),
                    position: pos,
                    reason,
                }));
            }
            let f = self.file.get()?;
            f.set_len(pos)
                .map_err(|e| StorageError::io("truncate segment", &self.log_path, e))?;
            f.sync_all()
                .map_err(|e| StorageError::io("fsync segment", &self.log_path, e))?;
            return Ok(Some(Corruption {
                file: self.log_path.clone(),
                position: pos,
                reason,
            }));
        }
        Ok(None)
    }

    /// Updates in-memory state and indexes for a batch stored at `position`.
    fn account(&mut self, position: u64, h: &BatchHeader, index_interval_bytes: u64) {
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        if self.first_batch_timestamp.is_none() && position == 0 {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        let due = match self.last_indexed_position {
            None => true,
            Some(last) => position >= last + index_interval_bytes,
        };
        if due && self.last_indexed_position != Some(position) {
            let relative_offset = (h.base_offset - self.base_offset) as u32;
            self.index.push_offset(OffsetEntry {
                relative_offset,
                position: position as u32,
            });
            self.index.push_time(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset,
            });
            self.last_indexed_position = Some(position);
        }
        self.next_offset = h.next_offset();
    }

    /// Appends one batch. `prefix`, when given, replaces the first 16 bytes (base offset,
    /// length, leader epoch) as written; the CRC does not cover them.
    pub fn append(
        &mut self,
        prefix: Option<&[u8; 16]>,
        batch: &RecordBatch,
        index_interval_bytes: u64,
    ) -> Result<()> {
        let bytes = batch.as_bytes();
        let mut slices_buf;
        let mut slices: &mut [IoSlice] = match prefix {
            Some(p) => {
                slices_buf = [IoSlice::new(p), IoSlice::new(&bytes[16..])];
                &mut slices_buf[..]
            }
            None => {
                slices_buf = [IoSlice::new(bytes), IoSlice::new(&[])];
                &mut slices_buf[..1]
            }
        };
        let file = self.file.get()?;
        if crate::fault::disk_full() {
            // A full disk takes part of the write, then refuses the rest.
            let half = &slices[0][..slices[0].len() / 2];
            let _ = (&*file).write_all(half);
            return Err(self.undo_partial_write(crate::fault::enospc()));
        }
        while !slices.is_empty() {
            let n = match (&*file).write_vectored(slices) {
                Ok(0) => return Err(self.undo_partial_write(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) => return Err(self.undo_partial_write(e)),
            };
            IoSlice::advance_slices(&mut slices, n);
        }
        let header = match prefix {
            Some(p) => {
                let mut h = *batch.header();
                h.base_offset = i64::from_be_bytes(p[0..8].try_into().expect("8"));
                h.partition_leader_epoch = i32::from_be_bytes(p[12..16].try_into().expect("4"));
                h
            }
            None => *batch.header(),
        };
        assert!(
            header.base_offset >= self.next_offset,
            "append at offset {} behind segment end {}",
            header.base_offset,
            self.next_offset
        );
        let position = self.size;
        self.size += bytes.len() as u64;
        self.account(position, &header, index_interval_bytes);
        Ok(())
    }

    /// A write failed part-way (ENOSPC, EIO): cut the file back to the last whole batch and
    /// so the next append (at the end of the file) starts where the log really ends.
    fn undo_partial_write(&mut self, e: std::io::Error) -> StorageError {
        let repaired = self.file.get().and_then(|f| {
            f.set_len(self.size)
                .map_err(|e| StorageError::io("truncate segment", &self.log_path, e))
        });
        if let Err(r) = repaired {
            tracing::error!(path = %self.log_path.display(), error = %r, "could not cut a partial write");
        }
        StorageError::io("append", &self.log_path, e)
    }

    /// `len` bytes at `position`, read into a fresh buffer.
    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        read_at(&*self.file.get()?, &self.log_path, position, len)
    }

    fn read_header(&self, position: u64) -> Result<BatchHeader> {
        let mut buf = [0u8; RECORD_BATCH_HEADER_BYTES];
        self.file
            .get()?
            .read_exact_at(&mut buf, position)
            .map_err(|e| StorageError::io("read segment", &self.log_path, e))?;
        let h = BatchHeader::parse(&buf);
        // Positions come from our own index; a header that makes no sense means the index
        // (or the file) is damaged. Report it rather than trusting the length.
        let min = (RECORD_BATCH_HEADER_BYTES - crate::limits::LOG_OVERHEAD_BYTES) as i32;
        if h.magic != crate::batch::MAGIC_V2
            || h.batch_length < min
            || position + h.size_bytes() as u64 > self.size
            || h.base_offset < self.base_offset
        {
            return Err(StorageError::corrupt(format!(
                "{}: no valid batch header at byte {position} (index or file damaged)",
                self.log_path.display()
            )));
        }
        Ok(h)
    }

    /// Position and header of the first batch whose last offset is ≥ `offset`, if any.
    pub fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset.max(self.base_offset) - self.base_offset).min(u32::MAX as i64) as u32;
        let mut pos = self.index.lookup(rel).map_or(0, |e| e.position as u64);
        while pos < self.size {
            let h = self.read_header(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting with the one containing `offset`: as many as fit in
    /// `max_bytes` (at least one, so a consumer always progresses), none whose records reach
    /// `max_offset` (exclusive). Returns the stored bytes untouched.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Bytes> {
        let Some((start, first)) = self.find(offset)? else {
            return Ok(Bytes::new());
        };
        if first.last_offset() >= max_offset {
            return Ok(Bytes::new());
        }
        let want = (max_bytes as u64).min(self.size - start) as usize;
        if want < first.size_bytes() {
            return self.read_bytes(start, first.size_bytes());
        }
        let buf = self.read_bytes(start, want)?;
        let mut cut = 0usize;
        while cut + RECORD_BATCH_HEADER_BYTES <= buf.len() {
            let h = BatchHeader::parse(&buf[cut..]);
            let size = h.size_bytes();
            if cut + size > buf.len() || h.last_offset() >= max_offset {
                break;
            }
            cut += size;
        }
        assert!(
            cut >= first.size_bytes(),
            "the first batch fits by construction"
        );
        Ok(buf.slice(..cut))
    }

    /// What [`Segment::read`] reads, but with `files` a range of at least
    /// [`FILE_RANGE_MIN_BYTES`] whose pages are all in the page cache comes back as the file
    /// range, unread. Finding where the range ends walks its batch headers; a range of more
    /// than [`FILE_RANGE_HEADERS_MAX`] batches is read instead.
    pub fn read_records(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        files: bool,
    ) -> Result<Records> {
        if !files {
            return self
                .read(offset, max_bytes, max_offset)
                .map(Records::Memory);
        }
        let Some((start, first)) = self.find(offset)? else {
            return Ok(Records::empty());
        };
        if first.last_offset() >= max_offset {
            return Ok(Records::empty());
        }
        // The same cut as `read`: the first batch always, then whole batches within
        // `max_bytes`, none reaching `max_offset`.
        let limit = start + (max_bytes as u64).min(self.size - start);
        let mut end = start + first.size_bytes() as u64;
        let mut walked = 1;
        while end < limit {
            if walked == FILE_RANGE_HEADERS_MAX {
                return self
                    .read(offset, max_bytes, max_offset)
                    .map(Records::Memory);
            }
            let h = self.read_header(end)?;
            let next = end + h.size_bytes() as u64;
            if next > limit || h.last_offset() >= max_offset {
                break;
            }
            end = next;
            walked += 1;
        }
        let len = (end - start) as usize;
        let file = self.file.get()?;
        if len >= FILE_RANGE_MIN_BYTES && in_page_cache(&file, start, len) {
            return Ok(Records::File(FileRange::new(
                file,
                &self.log_path,
                start,
                len,
            )));
        }
        read_at(&file, &self.log_path, start, len).map(Records::Memory)
    }

    /// First record with timestamp ≥ `timestamp` at or after `min_offset`: (offset, timestamp).
    pub fn find_by_timestamp(&self, timestamp: i64, min_offset: i64) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start_rel = self
            .index
            .lookup_time_below(timestamp)
            .map_or(0, |e| e.relative_offset);
        let start_offset = (self.base_offset + start_rel as i64).max(min_offset);
        let Some((mut pos, _)) = self.find(start_offset)? else {
            return Ok(None);
        };
        while pos < self.size {
            let h = self.read_header(pos)?;
            if h.max_timestamp >= timestamp && h.last_offset() >= min_offset {
                let batch = RecordBatch::parse_unchecked(self.read_bytes(pos, h.size_bytes())?);
                for r in batch.records() {
                    let r = r?;
                    if r.offset >= min_offset && r.timestamp >= timestamp {
                        return Ok(Some((r.offset, r.timestamp)));
                    }
                }
            }
            pos += h.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Removes every batch whose last offset is ≥ `offset`. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> Result<i64> {
        let Some((pos, h)) = self.find(offset)? else {
            return Ok(self.next_offset);
        };
        self.file
            .get()?
            .set_len(pos)
            .map_err(|e| StorageError::io("truncate segment", &self.log_path, e))?;
        self.index
            .truncate((h.base_offset - self.base_offset) as u32)?;
        // Re-derive the tail state by scanning from the last remaining index entry.
        let from = self.index.offsets().last().map_or(0, |e| e.position as u64);
        self.size = from;
        self.next_offset = self.index.offsets().last().map_or(self.base_offset, |e| {
            self.base_offset + e.relative_offset as i64
        });
        self.max_timestamp = self.index.times().last().map_or(i64::MIN, |e| e.timestamp);
        self.last_indexed_position = (!self.index.offsets().is_empty()).then_some(from);
        if from == 0 {
            self.first_batch_timestamp = None;
        }
        self.file
            .get()?
            .sync_all()
            .map_err(|e| StorageError::io("fsync segment", &self.log_path, e))?;
        if let Some(c) = self.scan(from, pos, index_interval_bytes, false)? {
            panic!("data before a truncation point failed verification: {c:?}");
        }
        Ok(self.next_offset)
    }

    /// Writes buffered index entries and releases the index file handles (on roll).
    pub fn close_index_files(&mut self) -> Result<()> {
        self.index.close_files()
    }

    /// Writes buffered index entries and, with `sync`, fsyncs the log and the indexes.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        if sync {
            crate::fault::maybe_stall_fsync();
            self.file
                .get()?
                .sync_data()
                .map_err(|e| StorageError::io("fsync segment", &self.log_path, e))?;
        }
        self.index.flush(sync)
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<()> {
        self.index.delete_files()?;
        std::fs::remove_file(&self.log_path)
            .map_err(|e| StorageError::io("delete segment", &self.log_path, e))
    }

    /// The segment's files (log, offset index, time index), for fsyncing outside the owner.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        let dir = self.log_path.parent().expect("segments live in a log dir");
        let (log, index, time) = Self::paths(dir, self.base_offset);
        vec![log, index, time]
    }

    /// First offset the segment may hold.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    /// Offset after its last batch.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    /// Bytes stored.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Largest record timestamp, `i64::MIN` when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// What `segment.ms` measures from.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }
    /// Whether no batch is stored.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// The `.log` path.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The loaded index (for tests and tools).
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }
}
