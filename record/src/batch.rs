//! Kafka RecordBatch v2 (magic 2), byte for byte.
//!
//! ```text
//!  0  base_offset            i64   rewritten by the leader on append
//!  8  batch_length           i32   bytes after this field
//! 12  partition_leader_epoch i32   rewritten by the leader on append
//! 16  magic                  i8    = 2
//! 17  crc                    u32   CRC-32C of bytes [21, end)
//! 21  attributes             i16   bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//! 23  last_offset_delta      i32
//! 27  base_timestamp         i64
//! 35  max_timestamp          i64
//! 43  producer_id            i64
//! 51  producer_epoch         i16
//! 53  base_sequence          i32
//! 57  records_count          i32
//! 61  records...             each: length varint, attributes i8, timestamp_delta varlong,
//!                            offset_delta varint, key_length varint (-1 = null), key,
//!                            value_length varint, value, header_count varint, headers
//! ```
//!
//! Because the CRC starts at `attributes`, the broker can rewrite the base offset and the
//! leader epoch without recomputing it. [`RecordBatch`] is a zero-copy view over `Bytes`;
//! [`RecordBatchBuilder`] encodes.

use bytes::{BufMut, Bytes};

use crate::compression::Compression;
use crate::error::{RecordError, Result};
use crate::limits::{
    LOG_OVERHEAD_BYTES, RECORDS_DECOMPRESSED_BYTES_MAX, RECORD_BATCH_HEADER_BYTES, RECORD_BYTES_MIN,
};
use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varlong_len};

/// Record batch format version (Kafka magic byte) this engine stores.
pub const MAGIC_V2: i8 = 2;
/// Producer id of batches from non-idempotent producers (Kafka `NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of batches from non-idempotent producers.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of batches from non-idempotent producers.
pub const NO_SEQUENCE: i32 = -1;
/// Leader epoch not (yet) known.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

mod pos {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The fixed header fields of a batch, parsed without touching the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batch_length` field.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Format version; 2 for everything we store.
    pub magic: i8,
    /// CRC-32C of everything from `attributes` to the end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (ms since epoch).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header from the first 61 bytes of `b`. The caller checked the length.
    pub fn parse(b: &[u8]) -> BatchHeader {
        assert!(
            b.len() >= RECORD_BATCH_HEADER_BYTES,
            "batch header needs {RECORD_BATCH_HEADER_BYTES} bytes, got {}",
            b.len()
        );
        BatchHeader {
            base_offset: i64_at(b, pos::BASE_OFFSET),
            batch_length: i32_at(b, pos::BATCH_LENGTH),
            partition_leader_epoch: i32_at(b, pos::LEADER_EPOCH),
            magic: b[pos::MAGIC] as i8,
            crc: u32::from_be_bytes(b[pos::CRC..pos::CRC + 4].try_into().expect("4 bytes")),
            attributes: i16_at(b, pos::ATTRIBUTES),
            last_offset_delta: i32_at(b, pos::LAST_OFFSET_DELTA),
            base_timestamp: i64_at(b, pos::BASE_TIMESTAMP),
            max_timestamp: i64_at(b, pos::MAX_TIMESTAMP),
            producer_id: i64_at(b, pos::PRODUCER_ID),
            producer_epoch: i16_at(b, pos::PRODUCER_EPOCH),
            base_sequence: i32_at(b, pos::BASE_SEQUENCE),
            records_count: i32_at(b, pos::RECORDS_COUNT),
        }
    }

    /// Total size of the batch on disk, header included.
    pub fn size_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD_BYTES
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 = none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether timestamps are LogAppendTime rather than CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE_LOG_APPEND != 0
    }
}

/// Reads the size of the batch starting at `b[0]` from its length field, checking that the
/// length is sane. Returns `Ok(None)` when fewer than 12 bytes are available.
pub fn peek_batch_size(b: &[u8], max_batch_bytes: usize) -> Result<Option<usize>> {
    if b.len() < LOG_OVERHEAD_BYTES {
        return Ok(None);
    }
    let batch_length = i32_at(b, pos::BATCH_LENGTH);
    let min = (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
    if batch_length < min {
        return Err(RecordError::corrupt(format!(
            "batch length {batch_length} is smaller than the {min}-byte header"
        )));
    }
    let size = batch_length as usize + LOG_OVERHEAD_BYTES;
    if size > max_batch_bytes {
        return Err(RecordError::MessageTooLarge {
            size,
            max: max_batch_bytes,
        });
    }
    Ok(Some(size))
}

/// How deeply [`RecordBatch::validate`] checks a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Header and CRC: enough for data we wrote ourselves or a leader already validated.
    Crc,
    /// Header, CRC and every record's framing: for untrusted producer input.
    Full,
}

/// A zero-copy view of one encoded record batch.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header)
            .field("size", &self.bytes.len())
            .finish()
    }
}

impl RecordBatch {
    /// Splits the first batch off `buf` and validates it. On success `buf` holds the rest.
    pub fn split_from(buf: &mut Bytes, max_batch_bytes: usize, how: Validation) -> Result<Self> {
        // A length beyond the data present is corruption, whatever its size; only a batch
        // that is really there can be "too large".
        if let Ok(Some(size)) = peek_batch_size(buf, usize::MAX) {
            if size > buf.len() {
                return Err(RecordError::corrupt(format!(
                    "batch length field says {size} bytes but only {} are present",
                    buf.len()
                )));
            }
        }
        let Some(size) = peek_batch_size(buf, max_batch_bytes)? else {
            return Err(RecordError::corrupt(format!(
                "{} trailing bytes are too few for a record batch",
                buf.len()
            )));
        };
        let batch = RecordBatch::parse_unchecked(buf.split_to(size));
        batch.validate(how)?;
        Ok(batch)
    }

    /// Wraps bytes that hold exactly one batch of at least header size, without validation
    /// (the storage engine reading back what it framed, which validates afterwards).
    ///
    /// # Panics
    /// If `bytes` is shorter than a batch header.
    pub fn parse_unchecked(bytes: Bytes) -> Self {
        assert!(
            bytes.len() >= RECORD_BATCH_HEADER_BYTES,
            "{} bytes cannot hold a {RECORD_BATCH_HEADER_BYTES}-byte batch header",
            bytes.len()
        );
        let header = BatchHeader::parse(&bytes);
        RecordBatch { bytes, header }
    }

    /// Parses and validates one batch that spans all of `bytes`.
    pub fn from_bytes(bytes: Bytes, how: Validation) -> Result<Self> {
        let total = bytes.len();
        let mut buf = bytes;
        let batch = RecordBatch::split_from(&mut buf, usize::MAX, how)?;
        if !buf.is_empty() {
            return Err(RecordError::corrupt(format!(
                "{} bytes follow a {}-byte batch that should span all {total} bytes",
                buf.len(),
                batch.size_bytes()
            )));
        }
        Ok(batch)
    }

    /// Checks magic, CRC, counts and (with `Validation::Full`) each record's framing.
    pub fn validate(&self, how: Validation) -> Result<()> {
        let h = &self.header;
        let b = &self.bytes[..];
        if h.magic != MAGIC_V2 {
            return Err(RecordError::corrupt(format!(
                "magic byte is {}, only record batch v2 (magic 2) is supported",
                h.magic
            )));
        }
        let computed = crc32c::crc32c(&b[pos::ATTRIBUTES..]);
        if computed != h.crc {
            return Err(RecordError::corrupt(format!(
                "CRC-32C mismatch in batch at offset {}: stored {:#010x}, computed {:#010x}",
                h.base_offset, h.crc, computed
            )));
        }
        let body = b.len() - RECORD_BATCH_HEADER_BYTES;
        // A compressed section can be far smaller than its records: bound the count by what
        // it may decompress to instead.
        let room = if h.compression() == 0 {
            body
        } else {
            RECORDS_DECOMPRESSED_BYTES_MAX
        };
        if h.records_count < 0 || h.records_count as usize > room / RECORD_BYTES_MIN {
            return Err(RecordError::corrupt(format!(
                "record count {} is impossible for a {body}-byte record section",
                h.records_count
            )));
        }
        if h.last_offset_delta < 0 || h.last_offset_delta < h.records_count - 1 {
            return Err(RecordError::corrupt(format!(
                "last offset delta {} does not cover {} records",
                h.last_offset_delta, h.records_count
            )));
        }
        if h.max_timestamp < h.base_timestamp && h.records_count > 0 {
            return Err(RecordError::corrupt(format!(
                "max timestamp {} is below base timestamp {}",
                h.max_timestamp, h.base_timestamp
            )));
        }
        if how == Validation::Full {
            let codec = Compression::from_id(h.compression())?;
            if h.records_count == 0 {
                return Err(RecordError::corrupt("record batch holds no records"));
            }
            if h.last_offset_delta != h.records_count - 1 {
                return Err(RecordError::corrupt(format!(
                    "last offset delta {} != record count {} - 1",
                    h.last_offset_delta, h.records_count
                )));
            }
            // Kafka's LogValidator decompresses to check the records of a compressed batch.
            let (n, max_ts) = match codec {
                Compression::None => walk_records(&self.bytes, RECORD_BATCH_HEADER_BYTES, h)?,
                c => {
                    let inner = c.decompress(
                        &self.bytes[RECORD_BATCH_HEADER_BYTES..],
                        RECORDS_DECOMPRESSED_BYTES_MAX,
                    )?;
                    walk_records(&inner, 0, h)?
                }
            };
            if n != h.records_count {
                return Err(RecordError::corrupt(format!(
                    "batch declares {} records but holds {n}",
                    h.records_count
                )));
            }
            if max_ts != h.max_timestamp && !h.is_log_append_time() {
                return Err(RecordError::corrupt(format!(
                    "max timestamp field {} differs from the largest record timestamp {max_ts}",
                    h.max_timestamp
                )));
            }
        }
        Ok(())
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The encoded bytes, exactly as stored.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the view, returning the encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// Iterates the records without copying keys or values (a compressed batch's section
    /// is decompressed once, first; if that fails the iterator yields that error).
    pub fn records(&self) -> RecordIter {
        let mut it = RecordIter {
            bytes: self.bytes.clone(),
            pos: RECORD_BATCH_HEADER_BYTES,
            remaining: self.header.records_count.max(0),
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            failed: None,
        };
        let codec = Compression::from_id(self.header.compression());
        match codec {
            Ok(Compression::None) => {}
            Ok(c) => match c.decompress(
                &self.bytes[RECORD_BATCH_HEADER_BYTES..],
                RECORDS_DECOMPRESSED_BYTES_MAX,
            ) {
                Ok(inner) => {
                    it.bytes = inner;
                    it.pos = 0;
                }
                Err(e) => it.failed = Some(e),
            },
            Err(e) => it.failed = Some(e),
        }
        it
    }
}

/// Checks the framing of every record without materialising any: lengths, varints, offset
/// deltas 0..count in order, header counts. Returns (records seen, max timestamp).
fn walk_records(b: &[u8], start: usize, h: &BatchHeader) -> Result<(i32, i64)> {
    let mut p = start;
    let mut n = 0i32;
    let mut max_ts = i64::MIN;
    while p < b.len() {
        let start = p;
        let bad = |what: &str| RecordError::corrupt(format!("record {n} at byte {start}: {what}"));
        let len = get_varint(b, &mut p).ok_or_else(|| bad("unreadable length"))?;
        if len < (RECORD_BYTES_MIN - 1) as i32 || p + len as usize > b.len() {
            return Err(bad(&format!(
                "length {len} does not fit in the {} bytes left",
                b.len() - p
            )));
        }
        let end = p + len as usize;
        let rec = &b[..end];
        p += 1;
        let ts_delta = get_varlong(rec, &mut p).ok_or_else(|| bad("bad timestamp delta"))?;
        let off_delta = get_varint(rec, &mut p).ok_or_else(|| bad("bad offset delta"))?;
        if off_delta != n {
            return Err(bad(&format!("offset delta {off_delta} (expected {n})")));
        }
        for what in ["key", "value"] {
            skip_bytes(rec, &mut p).ok_or_else(|| bad(&format!("bad {what}")))?;
        }
        let headers = get_varint(rec, &mut p).ok_or_else(|| bad("bad header count"))?;
        if headers < 0 || headers as usize > (end - p) / 2 {
            return Err(bad(&format!("header count {headers} is impossible")));
        }
        for _ in 0..headers {
            let key_len = get_varint(rec, &mut p).ok_or_else(|| bad("bad header key"))?;
            if key_len < 0 || p + key_len as usize > end {
                return Err(bad("bad header key"));
            }
            p += key_len as usize;
            skip_bytes(rec, &mut p).ok_or_else(|| bad("bad header value"))?;
        }
        if p != end {
            return Err(bad(&format!(
                "{} bytes left over after the record's fields",
                end - p
            )));
        }
        max_ts = max_ts.max(h.base_timestamp.wrapping_add(ts_delta));
        n += 1;
        if n > h.records_count {
            break;
        }
    }
    Ok((n, max_ts))
}

fn skip_bytes(rec: &[u8], p: &mut usize) -> Option<()> {
    let len = get_varint(rec, p)?;
    if len < -1 {
        return None;
    }
    if len > 0 {
        let end = p.checked_add(len as usize)?;
        if end > rec.len() {
            return None;
        }
        *p = end;
    }
    Some(())
}

/// Writes a new base offset and partition leader epoch into an encoded batch header
/// (the 16 bytes in front of the CRC-covered region).
pub fn patch_header(prefix: &mut [u8; 16], base_offset: i64, leader_epoch: i32) {
    prefix[pos::BASE_OFFSET..pos::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[pos::LEADER_EPOCH..pos::LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// One record header (key, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header key (UTF-8 in Kafka clients; kept as bytes here).
    pub key: Bytes,
    /// Header value, or null.
    pub value: Option<Bytes>,
}

/// One decoded record; key, value and headers share the batch's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp in ms since the epoch.
    pub timestamp: i64,
    /// Key, or null.
    pub key: Option<Bytes>,
    /// Value, or null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
}

/// Iterator over the records of a batch; stops at the first framing error.
pub struct RecordIter {
    bytes: Bytes,
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// Why the records cannot be read at all (a compressed section that does not decode).
    failed: Option<RecordError>,
}

impl RecordIter {
    fn next_record(&mut self) -> Result<Record> {
        let b = &self.bytes[..];
        let start = self.pos;
        let mut p = self.pos;
        let bad = |what: &str| RecordError::corrupt(format!("record at byte {start}: {what}"));
        let len = get_varint(b, &mut p).ok_or_else(|| bad("unreadable length"))?;
        if len < (RECORD_BYTES_MIN - 1) as i32 || p + len as usize > b.len() {
            return Err(bad(&format!(
                "length {len} does not fit in the {} bytes left",
                b.len() - p
            )));
        }
        let end = p + len as usize;
        let rec = &b[..end];
        p += 1; // attributes (unused in v2)
        let ts_delta = get_varlong(rec, &mut p).ok_or_else(|| bad("bad timestamp delta"))?;
        let off_delta = get_varint(rec, &mut p).ok_or_else(|| bad("bad offset delta"))?;
        let key = self.get_bytes(rec, &mut p).ok_or_else(|| bad("bad key"))?;
        let value = self
            .get_bytes(rec, &mut p)
            .ok_or_else(|| bad("bad value"))?;
        let header_count = get_varint(rec, &mut p).ok_or_else(|| bad("bad header count"))?;
        if header_count < 0 || header_count as usize > (end - p) / 2 {
            return Err(bad(&format!("header count {header_count} is impossible")));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key = self
                .get_bytes(rec, &mut p)
                .ok_or_else(|| bad("bad header key"))?
                .ok_or_else(|| bad("null header key"))?;
            let value = self
                .get_bytes(rec, &mut p)
                .ok_or_else(|| bad("bad header value"))?;
            headers.push(RecordHeader { key, value });
        }
        if p != end {
            return Err(bad(&format!(
                "{} bytes left over after the record's fields",
                end - p
            )));
        }
        self.pos = end;
        Ok(Record {
            offset: self.base_offset + off_delta as i64,
            timestamp: self.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        })
    }

    fn get_bytes(&self, rec: &[u8], p: &mut usize) -> Option<Option<Bytes>> {
        let len = get_varint(rec, p)?;
        if len < 0 {
            return (len == -1).then_some(None);
        }
        let end = p.checked_add(len as usize)?;
        if end > rec.len() {
            return None;
        }
        let out = self.bytes.slice(*p..end);
        *p = end;
        Some(Some(out))
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.remaining = 0;
            return Some(Err(e));
        }
        if self.remaining <= 0 {
            return None;
        }
        let r = self.next_record();
        self.remaining = if r.is_ok() { self.remaining - 1 } else { 0 };
        Some(r)
    }
}

/// Encodes a record batch. Offsets are relative to 0; the log assigns real ones on append.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    /// A builder for a non-idempotent batch.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// A builder whose buffer starts with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(RECORD_BATCH_HEADER_BYTES));
        buf.resize(RECORD_BATCH_HEADER_BYTES, 0);
        RecordBatchBuilder {
            buf,
            count: 0,
            base_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            compression: Compression::None,
        }
    }

    /// Compresses the records section with `codec` when built.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends one record.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let base_ts = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(base_ts);
        let opt_len = |b: Option<&[u8]>| match b {
            None => varlong_len(-1),
            Some(b) => varlong_len(b.len() as i64) + b.len(),
        };
        let mut body = 1 + varlong_len(ts_delta) + varlong_len(self.count as i64);
        body += opt_len(key) + opt_len(value) + varlong_len(headers.len() as i64);
        for (k, v) in headers {
            body += opt_len(Some(k)) + opt_len(*v);
        }
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varint(buf, body as i32);
        buf.push(0);
        put_varlong(buf, ts_delta);
        put_varint(buf, self.count);
        let put_opt = |buf: &mut Vec<u8>, b: Option<&[u8]>| match b {
            None => put_varint(buf, -1),
            Some(b) => {
                put_varint(buf, b.len() as i32);
                buf.extend_from_slice(b);
            }
        };
        put_opt(buf, key);
        put_opt(buf, value);
        put_varint(buf, headers.len() as i32);
        for (k, v) in headers {
            put_opt(buf, Some(k));
            put_opt(buf, *v);
        }
        self.count += 1;
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch will take once built.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Finishes the batch: compresses the records (if asked), fills the header and computes
    /// the CRC.
    pub fn build(self) -> Bytes {
        let mut buf = self.buf;
        if self.compression != Compression::None && self.count > 0 {
            let packed = self.compression.compress(&buf[RECORD_BATCH_HEADER_BYTES..]);
            buf.truncate(RECORD_BATCH_HEADER_BYTES);
            buf.extend_from_slice(&packed);
        }
        let total = buf.len();
        let base_ts = self.base_timestamp.unwrap_or(0);
        let max_ts = if self.count == 0 {
            0
        } else {
            self.max_timestamp
        };
        let mut h = &mut buf[..RECORD_BATCH_HEADER_BYTES];
        h.put_i64(0);
        h.put_i32((total - LOG_OVERHEAD_BYTES) as i32);
        h.put_i32(NO_PARTITION_LEADER_EPOCH);
        h.put_i8(MAGIC_V2);
        h.put_u32(0); // crc, below
        h.put_i16(if self.count > 0 {
            self.compression.id()
        } else {
            0
        });
        h.put_i32((self.count - 1).max(0));
        h.put_i64(base_ts);
        h.put_i64(max_ts);
        h.put_i64(self.producer_id);
        h.put_i16(self.producer_epoch);
        h.put_i32(self.base_sequence);
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&buf[pos::ATTRIBUTES..]);
        buf[pos::CRC..pos::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(buf)
    }
}

/// The batch re-encoded with `codec` (a topic's `compression.type` other than `producer`, as
/// Kafka's `LogValidator` recompresses): the same records, timestamps, headers and producer
/// fields; offsets relative to 0 again. The batch must be valid (`Validation::Full`).
pub fn recompress(batch: &RecordBatch, codec: Compression) -> Result<Bytes> {
    let h = batch.header();
    let mut b = RecordBatchBuilder::with_capacity(batch.size_bytes())
        .producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .compression(codec);
    for r in batch.records() {
        let r = r?;
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|x| (&x.key[..], x.value.as_deref()))
            .collect();
        b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    Ok(b.build())
}

/// Walks the headers of concatenated batches without checking CRCs (for offsets and sizes
/// of data this engine already validated). Stops at the first incomplete batch.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = &buf[pos..];
        if rest.len() < RECORD_BATCH_HEADER_BYTES {
            return None;
        }
        let h = BatchHeader::parse(rest);
        if h.batch_length < 0 || h.size_bytes() > rest.len() {
            return None;
        }
        pos += h.size_bytes();
        Some(h)
    })
}

/// Iterates the batches in a buffer of concatenated, already-validated batches (e.g. what a
/// read returned). Stops at the first batch that doesn't parse, yielding its error.
pub fn batches(buf: Bytes) -> impl Iterator<Item = Result<RecordBatch>> {
    let mut buf = buf;
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let r = RecordBatch::split_from(&mut buf, usize::MAX, Validation::Crc);
        if r.is_err() {
            buf.clear();
        }
        Some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Bytes {
        let mut b = RecordBatchBuilder::new();
        for i in 0..n {
            let key = format!("k{i}");
            let value = vec![i as u8; i * 3];
            b.append(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                Some(&value),
                &[(b"h", Some(b"v"))],
            );
        }
        b.build()
    }

    #[test]
    fn built_batch_round_trips_through_the_decoder() {
        let bytes = sample(5);
        let batch = RecordBatch::from_bytes(bytes, Validation::Full).expect("valid");
        assert_eq!(batch.header().records_count, 5);
        assert_eq!(batch.last_offset(), 4);
        assert_eq!(batch.header().max_timestamp, 1_700_000_000_004);
        let recs: Vec<_> = batch.records().map(|r| r.expect("record")).collect();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[3].offset, 3);
        assert_eq!(recs[3].key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(recs[3].value.as_deref(), Some(&[3u8; 9][..]));
        assert_eq!(recs[3].headers[0].key, Bytes::from_static(b"h"));
    }

    #[test]
    fn crc_matches_kafka_check_value() {
        // CRC-32C check value from the Castagnoli spec (also DEPENDENCIES.md).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn null_key_and_value_survive() {
        let mut b = RecordBatchBuilder::new();
        b.append(5, None, None, &[]);
        let batch = RecordBatch::from_bytes(b.build(), Validation::Full).unwrap();
        let r = batch.records().next().unwrap().unwrap();
        assert_eq!((r.key, r.value, r.timestamp), (None, None, 5));
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let bytes = sample(3);
        let mut v = bytes.to_vec();
        let mut prefix: [u8; 16] = v[..16].try_into().unwrap();
        patch_header(&mut prefix, 1000, 7);
        v[..16].copy_from_slice(&prefix);
        let batch = RecordBatch::from_bytes(Bytes::from(v), Validation::Full).unwrap();
        assert_eq!(batch.base_offset(), 1000);
        assert_eq!(batch.header().partition_leader_epoch, 7);
        assert_eq!(batch.records().nth(2).unwrap().unwrap().offset, 1002);
    }

    #[test]
    fn flipped_byte_is_a_crc_error() {
        let mut v = sample(3).to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        let err = RecordBatch::from_bytes(Bytes::from(v), Validation::Crc).unwrap_err();
        assert_eq!(err.reason(), "CORRUPT_MESSAGE");
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    #[test]
    fn length_field_larger_than_data_is_rejected() {
        let mut v = sample(2).to_vec();
        let too_long = v.len() as i32 + 100;
        v[8..12].copy_from_slice(&too_long.to_be_bytes());
        let err = RecordBatch::from_bytes(Bytes::from(v), Validation::Crc).unwrap_err();
        assert!(err.to_string().contains("only"), "{err}");
    }

    #[test]
    fn absurd_record_count_is_rejected_even_with_a_valid_crc() {
        for count in [-5i32, 1_000_000] {
            let mut v = sample(2).to_vec();
            v[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crc32c::crc32c(&v[21..]);
            v[17..21].copy_from_slice(&crc.to_be_bytes());
            let err = RecordBatch::from_bytes(Bytes::from(v), Validation::Crc).unwrap_err();
            assert!(err.to_string().contains("record count"), "{err}");
        }
    }

    #[test]
    fn record_framing_errors_are_caught_by_full_validation() {
        // Declare 3 records but hold 2: the CRC is fixed up, so only deep validation sees it.
        let mut v = sample(2).to_vec();
        v[57..61].copy_from_slice(&3i32.to_be_bytes());
        v[23..27].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        let bytes = Bytes::from(v);
        RecordBatch::from_bytes(bytes.clone(), Validation::Crc).expect("header-level valid");
        let err = RecordBatch::from_bytes(bytes, Validation::Full).unwrap_err();
        assert_eq!(err.reason(), "CORRUPT_MESSAGE");
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        for len in [0usize, 5, 12, 61, 200] {
            let v: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(RecordBatch::from_bytes(Bytes::from(v), Validation::Full).is_err());
        }
    }

    #[test]
    fn oversized_batch_is_message_too_large() {
        let bytes = sample(10);
        let mut buf = bytes.clone();
        let err = RecordBatch::split_from(&mut buf, 50, Validation::Crc).unwrap_err();
        assert_eq!(err.reason(), "MESSAGE_TOO_LARGE");
        assert_eq!(buf, bytes, "input untouched on error");
    }

    fn sample_with(n: usize, codec: Compression) -> Bytes {
        let mut b = RecordBatchBuilder::new()
            .producer(7, 1, 100)
            .compression(codec);
        for i in 0..n {
            let key = format!("k{i}");
            b.append(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                Some(format!("value {i} ").repeat(20).as_bytes()),
                &[(b"h", Some(b"1")), (b"h", None)],
            );
        }
        b.build()
    }

    /// Kafka's LogValidator for compressed batches: every codec's batch validates fully
    /// (its records decompressed and checked) and reads back the same records as the
    /// uncompressed one; gzip, lz4 and zstd shrink repetitive values.
    #[test]
    fn compressed_batches_validate_and_read_back_the_same_records() {
        let plain =
            RecordBatch::from_bytes(sample_with(50, Compression::None), Validation::Full).unwrap();
        let want: Vec<Record> = plain.records().map(Result::unwrap).collect();
        for codec in Compression::ALL {
            let bytes = sample_with(50, codec);
            let b = RecordBatch::from_bytes(bytes.clone(), Validation::Full)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(b.header().compression(), codec.id());
            assert_eq!(b.header().producer_id, 7);
            let got: Vec<Record> = b.records().map(Result::unwrap).collect();
            assert_eq!(got, want, "{codec:?}");
            if codec != Compression::None {
                assert!(bytes.len() < plain.size_bytes() / 2, "{codec:?} compresses");
            }
            let again = recompress(&b, Compression::None).unwrap();
            assert_eq!(again, plain.as_bytes().clone(), "{codec:?} -> none");
        }
    }

    /// A thousand empty records compress to a few bytes: still a valid batch.
    #[test]
    fn a_batch_that_compresses_to_less_than_its_record_count_is_valid() {
        let mut b = RecordBatchBuilder::new().compression(Compression::Zstd);
        for _ in 0..1000 {
            b.append(1, None, None, &[]);
        }
        let bytes = b.build();
        assert!(
            bytes.len() - RECORD_BATCH_HEADER_BYTES < 1000 * RECORD_BYTES_MIN,
            "smaller than 1000 minimal records"
        );
        let b = RecordBatch::from_bytes(bytes, Validation::Full).unwrap();
        assert_eq!(b.records().count(), 1000);
    }

    /// A compressed batch with a correct CRC whose compressed bytes are garbage, or whose
    /// records lie about their count, is CORRUPT_MESSAGE naming the problem; a codec id of
    /// 5–7 is UNSUPPORTED_COMPRESSION_TYPE.
    #[test]
    fn a_lying_compressed_batch_is_refused() {
        let fix_crc = |b: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&b[pos::ATTRIBUTES..]);
            b[pos::CRC..pos::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        };
        let mut garbage = sample_with(5, Compression::Zstd).to_vec();
        for x in garbage[RECORD_BATCH_HEADER_BYTES..].iter_mut() {
            *x ^= 0x5a;
        }
        fix_crc(&mut garbage);
        let e = RecordBatch::from_bytes(Bytes::from(garbage), Validation::Full).unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
        assert_eq!(e.reason(), "CORRUPT_MESSAGE");
        // The header says 6 records, the gzip section holds 5.
        let mut lying = sample_with(5, Compression::Gzip).to_vec();
        lying[57..61].copy_from_slice(&6i32.to_be_bytes());
        lying[23..27].copy_from_slice(&5i32.to_be_bytes());
        fix_crc(&mut lying);
        let e = RecordBatch::from_bytes(Bytes::from(lying), Validation::Full).unwrap_err();
        assert!(e.to_string().contains("holds 5"), "{e}");
        let mut codec7 = sample_with(2, Compression::None).to_vec();
        codec7[pos::ATTRIBUTES + 1] |= 7;
        fix_crc(&mut codec7);
        let e = RecordBatch::from_bytes(Bytes::from(codec7), Validation::Full).unwrap_err();
        assert_eq!(e.reason(), "UNSUPPORTED_COMPRESSION_TYPE");
    }
}
