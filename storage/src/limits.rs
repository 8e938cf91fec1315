//! Limits of the storage engine, in one place. Every constant says why it has its value.

pub use sluice_record::limits::{
    LOG_OVERHEAD_BYTES, RECORD_BATCH_BYTES_MAX, RECORD_BATCH_HEADER_BYTES, RECORD_BYTES_MIN,
};

/// Kafka's default `max.message.bytes` (1 MiB + record batch overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

/// A segment's positions are stored as `u32` in the offset index, so a segment can never
/// exceed 2 GiB (Kafka has the same limit: `segment.bytes` is an int).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Bytes per offset index entry: relative offset (u32) + file position (u32).
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;

/// Bytes per time index entry: timestamp (i64) + relative offset (u32).
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// How much a recovery or index rebuild scan reads from the file at once.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(RECORD_BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= RECORD_BATCH_BYTES_MAX);
