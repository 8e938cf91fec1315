//! `BrokerError`: what a partition replica (and the handlers around it) can answer, with
//! the ids and numbers involved as fields. Mapped to wire codes in exactly one place,
//! [`BrokerError::code`], and to a gRPC status by [`BrokerError::into_status`]; numbers a
//! peer acts on travel as `ErrorDetail` fields, never inside the message.

use sluice_proto::status::error_status_with;
use sluice_proto::v1::{ErrorCode, LeaderHint};
use sluice_storage::StorageError;

/// An answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// This broker does not lead the partition.
    #[error("this broker does not lead {partition}")]
    NotLeader {
        /// `topic-index`.
        partition: String,
    },
    /// The request names an older leader epoch than ours.
    #[error(
        "{partition}: request epoch {request_epoch} is older than the leader epoch {leader_epoch}"
    )]
    FencedLeaderEpoch {
        /// `topic-index`.
        partition: String,
        /// The epoch the request named.
        request_epoch: i32,
        /// Ours.
        leader_epoch: i32,
    },
    /// The request names a newer leader epoch than ours (we are behind on metadata).
    #[error(
        "{partition}: request epoch {request_epoch} is newer than this broker's {leader_epoch}"
    )]
    UnknownLeaderEpoch {
        /// `topic-index`.
        partition: String,
        /// The epoch the request named.
        request_epoch: i32,
        /// Ours.
        leader_epoch: i32,
    },
    /// A fetch outside the log.
    #[error("{partition}: offset {offset} is outside [log start {log_start_offset}, log end {log_end_offset}]")]
    OffsetOutOfRange {
        /// `topic-index`.
        partition: String,
        /// The offset asked for.
        offset: i64,
        /// Our log start.
        log_start_offset: i64,
        /// Our log end.
        log_end_offset: i64,
    },
    /// acks=all with a committed ISR below `min.insync.replicas`: nothing appended.
    #[error("{partition}: ISR {isr:?} has {} members, min.insync.replicas is {min_insync}; nothing was appended", isr.len())]
    NotEnoughReplicas {
        /// `topic-index`.
        partition: String,
        /// The committed ISR.
        isr: Vec<sluice_metadata::BrokerId>,
        /// The topic's `min.insync.replicas`.
        min_insync: usize,
    },
    /// A new leader's HW is not known yet (KIP-207).
    #[error("{partition}: the new leader's high watermark is not known yet; retry")]
    OffsetNotAvailable {
        /// `topic-index`.
        partition: String,
    },
    /// A malformed request.
    #[error("{reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The replica was closed (removed, or the broker is stopping).
    #[error("{partition} is closed on this broker")]
    ReplicaClosed {
        /// `topic-index`.
        partition: String,
    },
    /// The log refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sluice_storage::RecordError> for BrokerError {
    fn from(e: sluice_storage::RecordError) -> Self {
        BrokerError::Storage(StorageError::from(e))
    }
}

impl BrokerError {
    /// The Kafka error code (the one place internal errors become wire codes).
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::NotLeader { .. } | BrokerError::ReplicaClosed { .. } => {
                ErrorCode::NotLeaderOrFollower
            }
            BrokerError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            BrokerError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            BrokerError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            BrokerError::OffsetNotAvailable { .. } => ErrorCode::OffsetNotAvailable,
            BrokerError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            BrokerError::Storage(e) => match e {
                StorageError::CorruptMessage { .. } => ErrorCode::CorruptMessage,
                StorageError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
                StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                StorageError::UnsupportedCompression { .. } => {
                    ErrorCode::UnsupportedCompressionType
                }
                StorageError::Unsupported { .. } => ErrorCode::InvalidRecord,
                StorageError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
                StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
                StorageError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
                StorageError::Io { .. } => ErrorCode::KafkaStorageError,
            },
        }
    }

    /// The gRPC status, with `leader` as the hint and the numbers as detail fields.
    pub fn into_status(self, leader: Option<LeaderHint>) -> tonic::Status {
        let code = self.code();
        if let BrokerError::Storage(StorageError::Io { .. }) = &self {
            // Fatal for the replica's disk; the caller only sees the code.
            tracing::error!(error = %self, "storage failure");
        }
        let message = match &self {
            // Storage messages start with their own reason; the status adds it again.
            BrokerError::Storage(e) => {
                let m = e.to_string();
                m.split_once(": ").map_or(m.clone(), |(_, m)| m.to_string())
            }
            other => other.to_string(),
        };
        error_status_with(code, message, leader, |d| match &self {
            BrokerError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            } => {
                d.log_start_offset = Some(*log_start_offset);
                d.log_end_offset = Some(*log_end_offset);
            }
            BrokerError::FencedLeaderEpoch { leader_epoch, .. }
            | BrokerError::UnknownLeaderEpoch { leader_epoch, .. } => {
                d.leader_epoch = Some(*leader_epoch);
            }
            _ => {}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::status::{error_code, error_detail};

    #[test]
    fn numbers_a_peer_acts_on_travel_as_detail_fields() {
        let s = BrokerError::OffsetOutOfRange {
            partition: "t-0".into(),
            offset: 3,
            log_start_offset: 10,
            log_end_offset: 20,
        }
        .into_status(None);
        assert_eq!(error_code(&s), ErrorCode::OffsetOutOfRange);
        let d = error_detail(&s).unwrap();
        assert_eq!((d.log_start_offset, d.log_end_offset), (Some(10), Some(20)));
        let s = BrokerError::FencedLeaderEpoch {
            partition: "t-0".into(),
            request_epoch: 2,
            leader_epoch: 5,
        }
        .into_status(None);
        assert_eq!(error_detail(&s).unwrap().leader_epoch, Some(5));
    }

    #[test]
    fn storage_errors_keep_their_kafka_codes() {
        let cases = [
            (
                StorageError::OutOfOrderSequence {
                    producer_id: 1,
                    got: 3,
                    expected: 1,
                },
                ErrorCode::OutOfOrderSequenceNumber,
            ),
            (
                StorageError::Unsupported {
                    reason: "two batches".into(),
                },
                ErrorCode::InvalidRecord,
            ),
        ];
        for (e, want) in cases {
            let s = BrokerError::from(e).into_status(None);
            assert_eq!(error_code(&s), want);
            assert!(
                !s.message().contains("OUT_OF_ORDER_SEQUENCE_NUMBER: OUT_OF"),
                "{}",
                s.message()
            );
        }
    }
}
