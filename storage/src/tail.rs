//! The newest batches a leader appended, kept in memory, so reads of the log's tail — the
//! followers' fetches of what was just produced, and consumers that keep up — are answered
//! without a file read (and, in the broker, without a hop to the partition's I/O thread).
//!
//! The cache always covers one contiguous range `[start, log end)`: an append the cache
//! cannot take (a batch above [`TAIL_CACHE_BATCH_BYTES_MAX`], the process-wide budget spent)
//! empties it and restarts it at the new log end, and so does every truncation and every
//! follower append (followers serve no reads). Entries are the stored bytes, byte for byte.
//!
//! Memory: at most [`TAIL_CACHE_BYTES_PER_LOG`] per log and [`TAIL_CACHE_BYTES_TOTAL`] per
//! process; entries older than [`TAIL_CACHE_AGE_MS`] are dropped at the log's next
//! maintenance call, so idle partitions give their share back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};

use crate::batch::BatchHeader;

/// Per log: a follower or consumer that is this far behind reads from the file anyway,
/// and a few hundred small batches in flight fit.
pub const TAIL_CACHE_BYTES_PER_LOG: usize = 1024 * 1024;

/// Batches above this are not cached: big batches are throughput-bound (a file read costs
/// little next to moving them) and copying them into the cache would cost more than it
/// saves.
pub const TAIL_CACHE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Per process, over all logs: bounds the memory of many partitions.
pub const TAIL_CACHE_BYTES_TOTAL: usize = 256 * 1024 * 1024;

/// Entries older than this are dropped at the next maintenance call (`Log::maybe_flush`).
pub const TAIL_CACHE_AGE_MS: i64 = 30_000;

static USED: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by every tail cache of this process.
pub fn bytes_used() -> usize {
    USED.load(Ordering::Relaxed)
}

struct Entry {
    last: i64,
    appended_ms: i64,
    bytes: Bytes,
}

/// See the module docs.
pub(crate) struct TailCache {
    start: i64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl TailCache {
    /// An empty cache for a log that ends at `end`.
    pub(crate) fn new(end: i64) -> Self {
        TailCache {
            start: end,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Forgets everything; the cache restarts at `end`.
    pub(crate) fn reset(&mut self, end: i64) {
        USED.fetch_sub(self.bytes, Ordering::Relaxed);
        self.entries.clear();
        self.bytes = 0;
        self.start = end;
    }

    /// A batch was stored at the log end: `header` is its stored header (final offsets),
    /// `stored` builds its stored bytes (called only when the batch is cached).
    pub(crate) fn push(
        &mut self,
        header: &BatchHeader,
        now_ms: i64,
        stored: impl FnOnce() -> Bytes,
    ) {
        let size = header.size_bytes();
        let next = header.next_offset();
        if size > TAIL_CACHE_BATCH_BYTES_MAX {
            return self.reset(next);
        }
        while self.bytes + size > TAIL_CACHE_BYTES_PER_LOG {
            self.pop_front();
        }
        if USED.fetch_add(size, Ordering::Relaxed) + size > TAIL_CACHE_BYTES_TOTAL {
            USED.fetch_sub(size, Ordering::Relaxed);
            return self.reset(next);
        }
        self.bytes += size;
        self.entries.push_back(Entry {
            last: header.last_offset(),
            appended_ms: now_ms,
            bytes: stored(),
        });
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.bytes.len();
            USED.fetch_sub(e.bytes.len(), Ordering::Relaxed);
            self.start = e.last + 1;
        }
    }

    /// Drops entries appended before `now_ms - TAIL_CACHE_AGE_MS`.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        while self
            .entries
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.appended_ms) > TAIL_CACHE_AGE_MS)
        {
            self.pop_front();
        }
    }

    /// Whether a read from `offset` is answered here (the caller has checked the range
    /// against the log start and end).
    pub(crate) fn covers(&self, offset: i64) -> bool {
        offset >= self.start
    }

    /// [`crate::Log::read`]'s answer from memory, for an offset the cache covers: whole
    /// batches from the one holding `offset`, at least one, within `max_bytes`, none
    /// reaching `max_offset`.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Bytes {
        let first = self.entries.partition_point(|e| e.last < offset);
        let mut picked = self
            .entries
            .range(first..)
            .take_while(|e| e.last < max_offset);
        let Some(head) = picked.next() else {
            return Bytes::new();
        };
        let mut total = head.bytes.len();
        let rest: Vec<&Bytes> = picked
            .map(|e| &e.bytes)
            .take_while(|b| {
                total += b.len();
                total <= max_bytes
            })
            .collect();
        if rest.is_empty() {
            return head.bytes.clone();
        }
        let mut out =
            BytesMut::with_capacity(head.bytes.len() + rest.iter().map(|b| b.len()).sum::<usize>());
        out.extend_from_slice(&head.bytes);
        for b in rest {
            out.extend_from_slice(b);
        }
        out.freeze()
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        USED.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
