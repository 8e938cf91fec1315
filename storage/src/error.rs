//! Storage errors. API errors (bad input, offsets out of range) are answers to the caller and
//! leave the log untouched; `Io` is an environment failure the owner must treat as fatal for
//! the replica (Kafka's `KAFKA_STORAGE_ERROR`).

use std::path::PathBuf;

/// Every error the storage engine returns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A record batch failed validation: bad CRC, length, magic, count, or record framing.
    #[error("CORRUPT_MESSAGE: {reason}")]
    CorruptMessage {
        /// What exactly is wrong, with the values involved.
        reason: String,
    },
    /// A batch is larger than `max.message.bytes`.
    #[error("MESSAGE_TOO_LARGE: record batch of {size} bytes exceeds max.message.bytes={max}")]
    MessageTooLarge {
        /// The batch size in bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// A read below the log start offset or past the log end offset.
    #[error(
        "OFFSET_OUT_OF_RANGE: offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset still stored.
        log_start_offset: i64,
        /// The next offset to be written.
        log_end_offset: i64,
    },
    /// A batch compressed with a codec this engine does not handle yet.
    #[error("UNSUPPORTED_COMPRESSION_TYPE: compression codec {codec} is not supported yet")]
    UnsupportedCompression {
        /// Codec id from the batch attributes (1 gzip, 2 snappy, 3 lz4, 4 zstd).
        codec: i16,
    },
    /// A valid batch that this engine does not accept from producers (transactional or
    /// control batches).
    #[error("INVALID_RECORD: {reason}")]
    Unsupported {
        /// What is not supported.
        reason: String,
    },
    /// The caller broke a precondition (e.g. a follower append that does not continue the log).
    #[error("INVALID_REQUEST: {reason}")]
    InvalidRequest {
        /// What was wrong with the call.
        reason: String,
    },
    /// An idempotent producer's batch does not continue its sequence.
    #[error("OUT_OF_ORDER_SEQUENCE_NUMBER: producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// The batch's base sequence.
        got: i32,
        /// The sequence that would continue the producer's last batch.
        expected: i32,
    },
    /// A batch from an older epoch of an idempotent producer (a fenced zombie).
    #[error("INVALID_PRODUCER_EPOCH: producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the log knows.
        current: i16,
    },
    /// The file system failed. Fatal for the replica.
    #[error("KAFKA_STORAGE_ERROR: {op} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// The stable machine reason, spelled as Kafka spells the error code.
    pub fn reason(&self) -> &'static str {
        match self {
            StorageError::CorruptMessage { .. } => "CORRUPT_MESSAGE",
            StorageError::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            StorageError::OffsetOutOfRange { .. } => "OFFSET_OUT_OF_RANGE",
            StorageError::UnsupportedCompression { .. } => "UNSUPPORTED_COMPRESSION_TYPE",
            StorageError::Unsupported { .. } => "INVALID_RECORD",
            StorageError::InvalidRequest { .. } => "INVALID_REQUEST",
            StorageError::OutOfOrderSequence { .. } => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            StorageError::InvalidProducerEpoch { .. } => "INVALID_PRODUCER_EPOCH",
            StorageError::Io { .. } => "KAFKA_STORAGE_ERROR",
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        StorageError::CorruptMessage {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl From<sluice_record::RecordError> for StorageError {
    fn from(e: sluice_record::RecordError) -> Self {
        use sluice_record::RecordError as R;
        match e {
            R::CorruptMessage { reason } => StorageError::CorruptMessage { reason },
            R::MessageTooLarge { size, max } => StorageError::MessageTooLarge { size, max },
            R::UnsupportedCompression { codec } => StorageError::UnsupportedCompression { codec },
        }
    }
}
