//! Kafka's RecordBatch v2 (magic 2) byte for byte: headers, records, zig-zag varints and
//! CRC-32C, decoded zero-copy over `bytes::Bytes`, plus a builder. No I/O: the storage engine,
//! the broker and the clients share it, and the clients need nothing else of storage.

pub mod batch;
pub mod compression;
pub mod error;
pub mod ids;
pub mod limits;
pub mod varint;

pub use batch::{
    batches, headers, BatchHeader, Record, RecordBatch, RecordBatchBuilder, Validation,
};
pub use compression::Compression;
pub use error::{RecordError, Result};
pub use ids::{LeaderEpoch, Offset};
