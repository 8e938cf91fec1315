//! Sizes fixed by Kafka's RecordBatch v2 format, and the largest batch anything accepts.

/// Size of the fixed RecordBatch v2 header (Kafka `RECORD_BATCH_OVERHEAD`): base offset (8),
/// batch length (4), partition leader epoch (4), magic (1), crc (4), attributes (2),
/// last offset delta (4), base timestamp (8), max timestamp (8), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
pub const RECORD_BATCH_HEADER_BYTES: usize = 61;

/// The part of the header before `batch_length` ends: base offset + batch length.
/// `batch_length` counts the bytes after this prefix (Kafka `LOG_OVERHEAD`).
pub const LOG_OVERHEAD_BYTES: usize = 12;

/// The smallest possible encoded record: length (1), attributes (1), timestamp delta (1),
/// offset delta (1), key length (1), value length (1), header count (1).
pub const RECORD_BYTES_MIN: usize = 7;

/// Hard ceiling on one record batch whatever `max.message.bytes` says: offsets and positions
/// inside a segment are `u32`, and one batch must fit comfortably in memory on the read path.
pub const RECORD_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The most a compressed batch's records section may decompress to (a decompression bomb is
/// refused as `CORRUPT_MESSAGE`): the ceiling on one batch, as if it had not been compressed.
pub const RECORDS_DECOMPRESSED_BYTES_MAX: usize = RECORD_BATCH_BYTES_MAX;

const _: () = assert!(RECORD_BATCH_HEADER_BYTES > LOG_OVERHEAD_BYTES);
const _: () = assert!(RECORD_BATCH_BYTES_MAX > RECORD_BATCH_HEADER_BYTES);
