//! Per-log configuration, with Kafka's topic-level names and defaults.

/// Settings of one partition log. Field names map to Kafka topic configs as noted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would exceed this. Default 1 GiB.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once its first batch is this old. Default 7 days.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older. -1 = forever.
    /// Default 7 days.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger.
    /// -1 = no limit (default).
    pub retention_bytes: i64,
    /// `index.interval.bytes`: one offset/time index entry per this many log bytes. Default 4096.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest record batch accepted. Default 1 MiB + 12.
    pub max_message_bytes: usize,
    /// `flush.messages` (`log.flush.interval.messages`): fsync after this many records.
    /// Default: never (`u64::MAX`) — replication protects acknowledged data, as in Kafka.
    /// `1` fsyncs every append (the single-node durability mode).
    pub flush_interval_messages: u64,
    /// `flush.ms` (`log.flush.interval.ms`): fsync when the oldest unflushed append is this
    /// old. Default: never (`i64::MAX`).
    pub flush_interval_ms: i64,
    /// `compression.type`: `None` (`producer`) stores batches with the producer's codec;
    /// a codec recompresses every batch that uses another one, at the leader.
    pub compression: Option<sluice_record::Compression>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: crate::limits::MAX_MESSAGE_BYTES_DEFAULT,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: i64::MAX,
            compression: None,
        }
    }
}

impl LogConfig {
    /// The durability mode for single-node use: every append is fsynced before it returns.
    pub fn fsync_every_append(mut self) -> Self {
        self.flush_interval_messages = 1;
        self
    }

    /// Checks the values against the engine's hard limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 1024 || self.segment_bytes > crate::limits::SEGMENT_BYTES_MAX {
            return Err(format!(
                "segment.bytes={} must be within [1024, {}]",
                self.segment_bytes,
                crate::limits::SEGMENT_BYTES_MAX
            ));
        }
        if self.segment_ms < 1 {
            return Err(format!("segment.ms={} must be positive", self.segment_ms));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return Err("retention.ms and retention.bytes must be >= -1".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if self.max_message_bytes < crate::limits::RECORD_BATCH_HEADER_BYTES
            || self.max_message_bytes > crate::limits::RECORD_BATCH_BYTES_MAX
        {
            return Err(format!(
                "max.message.bytes={} must be within [{}, {}]",
                self.max_message_bytes,
                crate::limits::RECORD_BATCH_HEADER_BYTES,
                crate::limits::RECORD_BATCH_BYTES_MAX
            ));
        }
        if self.flush_interval_messages == 0 || self.flush_interval_ms < 0 {
            return Err("flush.messages must be >= 1 and flush.ms >= 0".into());
        }
        Ok(())
    }
}
