//! Errors on the wire: one `ErrorCode` (Kafka's names and numbers), turned into a gRPC
//! status whose message starts with the Kafka reason and whose details carry an encoded
//! `google.rpc.Status` wrapping a `sluice.v1.ErrorDetail` (common.proto, rule 1).

use prost::Message;

use crate::v1::{ErrorCode, ErrorDetail, LeaderHint};

/// `google.rpc.Status`, encoded by hand (these protos do not import it).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/sluice.v1.ErrorDetail";

/// A failed RPC: `code`'s gRPC status, message `"<REASON>: <message>"`, and the
/// `ErrorDetail` (with the leader hint, when known) in the status details.
pub fn error_status(
    code: ErrorCode,
    message: impl Into<String>,
    leader: Option<LeaderHint>,
) -> tonic::Status {
    error_status_with(code, message, leader, |_| {})
}

/// [`error_status`] with more fields of the `ErrorDetail` set by `fill` (offsets, epochs,
/// the partition): numbers a peer acts on travel as fields, never inside the message.
pub fn error_status_with(
    code: ErrorCode,
    message: impl Into<String>,
    leader: Option<LeaderHint>,
    fill: impl FnOnce(&mut ErrorDetail),
) -> tonic::Status {
    let message = message.into();
    let reason = code.as_str_name();
    let text = format!("{reason}: {message}");
    let mut detail = ErrorDetail {
        code: code as i32,
        reason: reason.to_string(),
        message: message.clone(),
        leader,
        retriable: is_retriable(code),
        ..Default::default()
    };
    fill(&mut detail);
    let grpc = grpc_code(code);
    let status = RpcStatus {
        code: grpc as i32,
        message: text.clone(),
        details: vec![Any {
            type_url: ERROR_DETAIL_TYPE_URL.to_string(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(grpc, text, status.encode_to_vec().into())
}

/// The `ErrorDetail` of a status produced by [`error_status`], if any.
pub fn error_detail(status: &tonic::Status) -> Option<ErrorDetail> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|a| a.type_url == ERROR_DETAIL_TYPE_URL)
        .and_then(|a| ErrorDetail::decode(a.value.as_slice()).ok())
}

/// The Kafka error code of a failed RPC: from its details, else `UNKNOWN_SERVER_ERROR`
/// (transport failures become `NETWORK_EXCEPTION`).
pub fn error_code(status: &tonic::Status) -> ErrorCode {
    match error_detail(status) {
        Some(d) => ErrorCode::try_from(d.code).unwrap_or(ErrorCode::UnknownServerError),
        None if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ) =>
        {
            ErrorCode::NetworkException
        }
        None if matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) =>
        {
            ErrorCode::RequestTimedOut
        }
        None => ErrorCode::UnknownServerError,
    }
}

// Generated from the comments of `enum ErrorCode` in common.proto; keep them in sync.

/// The gRPC status code used when `code` fails a whole unary RPC (common.proto, rule 1).
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::None => tonic::Code::Ok,
        ErrorCode::UnknownServerError => tonic::Code::Internal,
        ErrorCode::OffsetOutOfRange => tonic::Code::OutOfRange,
        ErrorCode::CorruptMessage => tonic::Code::InvalidArgument,
        ErrorCode::UnknownTopicOrPartition => tonic::Code::NotFound,
        ErrorCode::InvalidFetchSize => tonic::Code::InvalidArgument,
        ErrorCode::LeaderNotAvailable => tonic::Code::Unavailable,
        ErrorCode::NotLeaderOrFollower => tonic::Code::Unavailable,
        ErrorCode::RequestTimedOut => tonic::Code::DeadlineExceeded,
        ErrorCode::BrokerNotAvailable => tonic::Code::Unavailable,
        ErrorCode::ReplicaNotAvailable => tonic::Code::Unavailable,
        ErrorCode::MessageTooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::OffsetMetadataTooLarge => tonic::Code::InvalidArgument,
        ErrorCode::NetworkException => tonic::Code::Unavailable,
        ErrorCode::CoordinatorLoadInProgress => tonic::Code::Unavailable,
        ErrorCode::CoordinatorNotAvailable => tonic::Code::Unavailable,
        ErrorCode::NotCoordinator => tonic::Code::Unavailable,
        ErrorCode::InvalidTopicException => tonic::Code::InvalidArgument,
        ErrorCode::RecordListTooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::NotEnoughReplicas => tonic::Code::Unavailable,
        ErrorCode::NotEnoughReplicasAfterAppend => tonic::Code::Unavailable,
        ErrorCode::InvalidRequiredAcks => tonic::Code::InvalidArgument,
        ErrorCode::IllegalGeneration => tonic::Code::FailedPrecondition,
        ErrorCode::InconsistentGroupProtocol => tonic::Code::FailedPrecondition,
        ErrorCode::InvalidGroupId => tonic::Code::InvalidArgument,
        ErrorCode::UnknownMemberId => tonic::Code::NotFound,
        ErrorCode::InvalidSessionTimeout => tonic::Code::InvalidArgument,
        ErrorCode::RebalanceInProgress => tonic::Code::Aborted,
        ErrorCode::InvalidCommitOffsetSize => tonic::Code::InvalidArgument,
        ErrorCode::InvalidTimestamp => tonic::Code::InvalidArgument,
        ErrorCode::UnsupportedVersion => tonic::Code::Unimplemented,
        ErrorCode::TopicAlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::InvalidPartitions => tonic::Code::InvalidArgument,
        ErrorCode::InvalidReplicationFactor => tonic::Code::InvalidArgument,
        ErrorCode::InvalidReplicaAssignment => tonic::Code::InvalidArgument,
        ErrorCode::InvalidConfig => tonic::Code::InvalidArgument,
        ErrorCode::NotController => tonic::Code::Unavailable,
        ErrorCode::InvalidRequest => tonic::Code::InvalidArgument,
        ErrorCode::ClusterAuthorizationFailed => tonic::Code::PermissionDenied,
        ErrorCode::TopicAuthorizationFailed => tonic::Code::PermissionDenied,
        ErrorCode::GroupAuthorizationFailed => tonic::Code::PermissionDenied,
        ErrorCode::TransactionalIdAuthorizationFailed => tonic::Code::PermissionDenied,
        ErrorCode::SecurityDisabled => tonic::Code::FailedPrecondition,
        ErrorCode::SaslAuthenticationFailed => tonic::Code::Unauthenticated,
        ErrorCode::UnsupportedForMessageFormat => tonic::Code::InvalidArgument,
        ErrorCode::PolicyViolation => tonic::Code::FailedPrecondition,
        ErrorCode::OutOfOrderSequenceNumber => tonic::Code::FailedPrecondition,
        ErrorCode::DuplicateSequenceNumber => tonic::Code::AlreadyExists,
        ErrorCode::InvalidProducerEpoch => tonic::Code::FailedPrecondition,
        ErrorCode::OperationNotAttempted => tonic::Code::Aborted,
        ErrorCode::KafkaStorageError => tonic::Code::Unavailable,
        ErrorCode::UnknownProducerId => tonic::Code::NotFound,
        ErrorCode::NonEmptyGroup => tonic::Code::FailedPrecondition,
        ErrorCode::GroupIdNotFound => tonic::Code::NotFound,
        ErrorCode::FetchSessionIdNotFound => tonic::Code::NotFound,
        ErrorCode::InvalidFetchSessionEpoch => tonic::Code::FailedPrecondition,
        ErrorCode::FencedLeaderEpoch => tonic::Code::FailedPrecondition,
        ErrorCode::UnknownLeaderEpoch => tonic::Code::Unavailable,
        ErrorCode::UnsupportedCompressionType => tonic::Code::InvalidArgument,
        ErrorCode::StaleBrokerEpoch => tonic::Code::FailedPrecondition,
        ErrorCode::OffsetNotAvailable => tonic::Code::Unavailable,
        ErrorCode::PreferredLeaderNotAvailable => tonic::Code::Unavailable,
        ErrorCode::EligibleLeadersNotAvailable => tonic::Code::Unavailable,
        ErrorCode::ElectionNotNeeded => tonic::Code::FailedPrecondition,
        ErrorCode::GroupMaxSizeReached => tonic::Code::ResourceExhausted,
        ErrorCode::FencedInstanceId => tonic::Code::FailedPrecondition,
        ErrorCode::GroupSubscribedToTopic => tonic::Code::FailedPrecondition,
        ErrorCode::InvalidRecord => tonic::Code::InvalidArgument,
        ErrorCode::ResourceNotFound => tonic::Code::NotFound,
        ErrorCode::InconsistentVoterSet => tonic::Code::FailedPrecondition,
        ErrorCode::InvalidUpdateVersion => tonic::Code::Aborted,
        ErrorCode::UnknownTopicId => tonic::Code::NotFound,
        ErrorCode::DuplicateBrokerRegistration => tonic::Code::AlreadyExists,
        ErrorCode::BrokerIdNotRegistered => tonic::Code::NotFound,
        ErrorCode::InconsistentTopicId => tonic::Code::FailedPrecondition,
        ErrorCode::InconsistentClusterId => tonic::Code::FailedPrecondition,
        ErrorCode::IneligibleReplica => tonic::Code::FailedPrecondition,
        ErrorCode::NewLeaderElected => tonic::Code::FailedPrecondition,
        ErrorCode::FencedMemberEpoch => tonic::Code::FailedPrecondition,
        ErrorCode::UnreleasedInstanceId => tonic::Code::FailedPrecondition,
        ErrorCode::UnsupportedAssignor => tonic::Code::InvalidArgument,
        ErrorCode::StaleMemberEpoch => tonic::Code::FailedPrecondition,
    }
}

/// Whether a client may retry after `code` (Kafka's "Retriable" column).
pub fn is_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CorruptMessage
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::RequestTimedOut
            | ErrorCode::ReplicaNotAvailable
            | ErrorCode::NetworkException
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::NotController
            | ErrorCode::KafkaStorageError
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::OffsetNotAvailable
            | ErrorCode::PreferredLeaderNotAvailable
            | ErrorCode::EligibleLeadersNotAvailable
            | ErrorCode::UnknownTopicId
            | ErrorCode::DuplicateBrokerRegistration
            | ErrorCode::InconsistentTopicId
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_code_reason_and_leader() {
        let hint = LeaderHint {
            leader_id: 2,
            host: "127.0.0.1".into(),
            port: 9093,
            leader_epoch: 0,
        };
        let s = error_status(ErrorCode::NotController, "ask node 2", Some(hint.clone()));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.message().starts_with("NOT_CONTROLLER: "),
            "{}",
            s.message()
        );
        let d = error_detail(&s).expect("detail");
        assert_eq!(d.reason, "NOT_CONTROLLER");
        assert_eq!(d.leader, Some(hint));
        assert!(d.retriable);
        assert_eq!(error_code(&s), ErrorCode::NotController);
        let plain = tonic::Status::internal("boom");
        assert_eq!(error_code(&plain), ErrorCode::UnknownServerError);
    }
}
