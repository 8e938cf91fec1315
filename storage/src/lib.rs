//! Sluice storage: the partition log engine, independent of the network.
//!
//! ```text
//!   producer bytes ──► RecordBatch::split_from (validate: CRC-32C, framing, limits)
//!                        │
//!                        ▼
//!   Log::append_as_leader ── assigns offsets, stamps leader epoch (CRC untouched)
//!                        │
//!                        ▼
//!   active Segment ── .log (batches as sent) + .index + .timeindex (sparse)
//!                        │ roll on segment.bytes / segment.ms
//!                        ▼
//!   closed Segments ── retention.ms / retention.bytes delete whole segments
//!
//!   Log::read(offset, max_bytes, high_watermark) ──► stored bytes, never re-encoded
//! ```
//!
//! The on-disk unit is Kafka's RecordBatch v2, byte for byte ([`batch`]).

pub use sluice_record::batch;
pub mod config;
pub mod directory_id;
pub mod epoch;
pub mod error;
pub mod fault;
pub mod files;
mod flusher;
pub use flusher::{set_roll_flush_delay, RollFlushNotify};
pub mod index;
pub mod limits;
pub mod log;
pub mod producer;
pub mod records;
pub mod segment;
pub mod tail;
pub use sluice_record::varint;

pub use batch::{Record, RecordBatch, RecordBatchBuilder, Validation};
pub use config::LogConfig;
pub use error::{Result, StorageError};
pub use log::{AppendInfo, Clock, Log, RecoveryReport};
pub use records::{FileRange, Records};
pub use sluice_record::{Compression, LeaderEpoch, Offset, RecordError};
