//! Why a record batch is refused. The storage engine wraps these in its `StorageError`; the
//! codes are Kafka's (`CORRUPT_MESSAGE`, `MESSAGE_TOO_LARGE`, `UNSUPPORTED_COMPRESSION_TYPE`).

/// A record batch that cannot be accepted as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record batch failed validation: bad CRC, length, magic, count, or record framing.
    #[error("CORRUPT_MESSAGE: {reason}")]
    CorruptMessage {
        /// What exactly is wrong, with the values involved.
        reason: String,
    },
    /// A batch is larger than the limit in force (`max.message.bytes`).
    #[error("MESSAGE_TOO_LARGE: record batch of {size} bytes exceeds max.message.bytes={max}")]
    MessageTooLarge {
        /// The batch size in bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// A batch compressed with a codec this codec does not handle yet.
    #[error("UNSUPPORTED_COMPRESSION_TYPE: compression codec {codec} is not supported yet")]
    UnsupportedCompression {
        /// Codec id from the batch attributes (1 gzip, 2 snappy, 3 lz4, 4 zstd).
        codec: i16,
    },
}

impl RecordError {
    /// The stable machine reason, spelled as Kafka spells the error code.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::CorruptMessage { .. } => "CORRUPT_MESSAGE",
            RecordError::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            RecordError::UnsupportedCompression { .. } => "UNSUPPORTED_COMPRESSION_TYPE",
        }
    }

    /// A `CorruptMessage` with `reason`.
    pub fn corrupt(reason: impl Into<String>) -> Self {
        RecordError::CorruptMessage {
            reason: reason.into(),
        }
    }
}

/// Results of the codec.
pub type Result<T> = std::result::Result<T, RecordError>;
