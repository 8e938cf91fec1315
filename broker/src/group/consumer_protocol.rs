//! Kafka's consumer protocol bytes inside classic groups: the subscription a member sends
//! in JoinGroup and the assignment the leader hands out in SyncGroup (`ConsumerProtocol`:
//! an `int16` version, then the struct at that version). The coordinator only reads them
//! to describe groups; members exchange them untouched.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

/// The newest version of either struct this codec knows; newer ones decode as it (Kafka's
/// consumer protocol only ever adds fields at the end).
fn known(version: i16, max: i16) -> i16 {
    version.clamp(0, max)
}

/// The topics of a subscription (empty if the bytes are not a consumer subscription).
pub fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let mut b = metadata.clone();
    if b.remaining() < 2 {
        return Vec::new();
    }
    let v = known(b.get_i16(), ConsumerProtocolSubscription::VERSIONS.max);
    ConsumerProtocolSubscription::decode(&mut b, v)
        .map(|s| s.topics.iter().map(|t| t.as_str().to_string()).collect())
        .unwrap_or_default()
}

/// The partitions of an assignment, by topic (empty if the bytes are not one).
pub fn assigned_partitions(assignment: &Bytes) -> Vec<(String, Vec<i32>)> {
    let mut b = assignment.clone();
    if b.remaining() < 2 {
        return Vec::new();
    }
    let v = known(b.get_i16(), ConsumerProtocolAssignment::VERSIONS.max);
    ConsumerProtocolAssignment::decode(&mut b, v)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
                .collect()
        })
        .unwrap_or_default()
}

/// An assignment as consumer-protocol bytes (version 0), for describing a KIP-848 group to
/// a classic-protocol tool.
pub fn encode_assignment(partitions: &[(String, Vec<i32>)]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(StrBytes::from_string(t.clone()).into())
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    let mut out = BytesMut::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    a.encode(&mut out, 0).expect("a v0 assignment encodes");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip_and_garbage_reads_as_nothing() {
        let parts = vec![
            ("orders".to_string(), vec![0, 2]),
            ("x".to_string(), vec![1]),
        ];
        assert_eq!(assigned_partitions(&encode_assignment(&parts)), parts);
        assert!(assigned_partitions(&Bytes::from_static(b"\x00")).is_empty());
        assert!(assigned_partitions(&Bytes::from_static(b"\x00\x00\xff\xff\xff")).is_empty());
        assert!(subscribed_topics(&Bytes::from_static(b"junk")).is_empty());
    }

    /// A v1 subscription as the Java client writes it (topics, user data, owned partitions).
    #[test]
    fn a_subscription_of_a_newer_version_gives_its_topics() {
        let s = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        for v in [0i16, 1, 3] {
            let mut out = BytesMut::new();
            out.extend_from_slice(&v.to_be_bytes());
            s.encode(&mut out, v).unwrap();
            assert_eq!(subscribed_topics(&out.freeze()), vec!["a", "b"], "v{v}");
        }
    }
}
