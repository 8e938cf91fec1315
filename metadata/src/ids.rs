//! Identifiers.

use serde::{Deserialize, Serialize};

/// A broker's `node.id`. A newtype so it cannot be mixed up with the other `i32`s beside it
/// (partition indexes, leader and partition epochs); on the wire and in the metadata log it
/// is the plain `int32` it was (`serde(transparent)`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct BrokerId(pub i32);

impl BrokerId {
    /// The id as the wire's `int32`.
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl BrokerId {
    /// Ids from the wire's `repeated int32`.
    pub fn from_wire(ids: &[i32]) -> Vec<BrokerId> {
        ids.iter().map(|&i| BrokerId(i)).collect()
    }

    /// Ids for the wire's `repeated int32`.
    pub fn to_wire(ids: &[BrokerId]) -> Vec<i32> {
        ids.iter().map(|i| i.0).collect()
    }
}

/// Compares with a wire `int32` (tests and request checks read better this way).
impl PartialEq<i32> for BrokerId {
    fn eq(&self, other: &i32) -> bool {
        self.0 == *other
    }
}

/// Printed as the bare number (`[1, 2]` in an ISR, as Kafka prints it).
impl std::fmt::Debug for BrokerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for BrokerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i32> for BrokerId {
    fn from(id: i32) -> Self {
        BrokerId(id)
    }
}

impl From<BrokerId> for i32 {
    fn from(id: BrokerId) -> Self {
        id.0
    }
}

sluice_record::id_type!(
    /// A partition's epoch (Kafka's `partitionEpoch`): bumped by the controller on every
    /// change of the partition (leader, ISR, replicas); an AlterPartition must name the
    /// current one.
    PartitionEpoch(i32)
);

impl PartitionEpoch {
    /// The epoch after this one.
    pub const fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0 + 1)
    }
}

pub use sluice_record::{LeaderEpoch, Offset};

/// Leader value of a partition that has none (Kafka's `-1`).
pub const NO_LEADER: BrokerId = BrokerId(-1);

/// A topic's UUID; printed as Kafka prints it: URL-safe base64 without padding (22 chars).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct TopicId(pub [u8; 16]);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl TopicId {
    /// Parses Kafka's 22-character text form.
    pub fn parse(s: &str) -> Option<TopicId> {
        let bytes = s.as_bytes();
        if bytes.len() != 22 {
            return None;
        }
        let mut bits: u128 = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let v = B64.iter().position(|&b| b == c)? as u128;
            if i == 21 {
                // The last character carries 2 bits (128 = 21 * 6 + 2).
                if v & 0x0f != 0 {
                    return None;
                }
                bits = (bits << 2) | (v >> 4);
            } else {
                bits = (bits << 6) | v;
            }
        }
        Some(TopicId(bits.to_be_bytes()))
    }
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = u128::from_be_bytes(self.0);
        let mut out = [0u8; 22];
        for (i, o) in out.iter_mut().enumerate().take(21) {
            let shift = 128 - 6 * (i + 1);
            *o = B64[((bits >> shift) & 0x3f) as usize];
        }
        out[21] = B64[((bits & 0x3) << 4) as usize];
        f.write_str(std::str::from_utf8(&out).expect("ascii"))
    }
}

impl std::fmt::Debug for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_22_chars() {
        for seed in [0u8, 1, 0x7f, 0xff] {
            let id = TopicId([seed; 16]);
            let s = id.to_string();
            assert_eq!(s.len(), 22);
            assert_eq!(TopicId::parse(&s), Some(id));
        }
        assert_eq!(TopicId([0; 16]).to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(TopicId::parse("short"), None);
        assert_eq!(TopicId::parse("AAAAAAAAAAAAAAAAAAAAA!"), None);
    }
}

/// A partition named by its topic's name (Kafka's `TopicPartition`): what clients, the HW
/// checkpoint and committed offsets use.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`-`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// `orders-0`, as Kafka prints it.
impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl std::fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A partition named by its topic's id (Kafka's `TopicIdPartition`): the key of a local
/// replica, which a topic re-created under the same name does not share.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TopicIdPartition {
    /// Topic id.
    pub topic_id: TopicId,
    /// Partition index.
    pub partition: i32,
}

impl TopicIdPartition {
    /// Partition `partition` of topic `topic_id`.
    pub const fn new(topic_id: TopicId, partition: i32) -> Self {
        TopicIdPartition {
            topic_id,
            partition,
        }
    }
}
