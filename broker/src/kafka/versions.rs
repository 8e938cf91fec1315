//! The APIs and versions this broker speaks, and ApiVersions (KIP-511 fallback included).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};

/// `(api, min, max)` of every API served. Produce and Fetch stop at v12 (v13 names topics
/// by id only); ListOffsets at v6 (v7 adds the max-timestamp lookup, KIP-734, we do not
/// have yet); InitProducerId at v4 (v5+ is transactions only). The group APIs are the
/// classic protocol's; OffsetCommit from v2 and OffsetFetch from v1 (older ones are
/// ZooKeeper-era). SaslHandshake v0 is listed (librdkafka asks for 0..=1) but answered UNSUPPORTED_VERSION:
/// after it the tokens would come unframed (pre-KIP-152).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
];

/// The versions of `key` served, if it is served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// ApiVersions.
pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an ApiVersions request newer than we speak: a v0 body with
/// UNSUPPORTED_VERSION (35) and our ranges, so the client retries with one we know (KIP-511).
pub fn unsupported_version_answer() -> ResponseKind {
    ApiVersionsResponse::default()
        .with_error_code(35)
        .with_api_keys(api_keys())
        .into()
}

// Every advertised range must be one the codec handles.
#[cfg(test)]
#[test]
fn advertised_versions_are_within_the_codecs() {
    for (k, min, max) in SUPPORTED {
        let v = k.valid_versions();
        assert!(
            v.min <= *min && *max <= v.max,
            "{k:?} {min}..={max} vs {v:?}"
        );
    }
}
