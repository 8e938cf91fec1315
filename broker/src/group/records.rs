//! The records of `__consumer_offsets`, a missing value is a tombstone:
//! * an offset commit: key = (kind 1, group, topic, partition), value = (offset, leader
//!   epoch, metadata);
//! * a classic group's membership (Kafka's GroupMetadata): key = (kind 2, group), value =
//!   (format 1, the [`ClassicSnapshot`] in postcard);
//! * a consumer-protocol (KIP-848) group's membership and target assignment (Kafka's
//!   ConsumerGroupMetadata, member and assignment records in one): key = (kind 3, group),
//!   value = (format 1, the [`ConsumerSnapshot`] in postcard).

use bytes::{BufMut, Bytes, BytesMut};

use super::classic::ClassicSnapshot;
use super::state::ConsumerSnapshot;
use super::Committed;

const KEY_OFFSET_COMMIT: u16 = 1;
const KEY_GROUP_METADATA: u16 = 2;
const KEY_CONSUMER_GROUP: u16 = 3;
const GROUP_METADATA_FORMAT: u8 = 1;

fn named_key(kind: u16, group: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(4 + group.len());
    k.put_u16(kind);
    k.put_u16(group.len() as u16);
    k.put_slice(group.as_bytes());
    k.freeze()
}

fn parse_named_key(kind: u16, k: &[u8]) -> Option<String> {
    let (head, rest) = k.split_at_checked(2)?;
    if u16::from_be_bytes([head[0], head[1]]) != kind {
        return None;
    }
    let (n, name) = rest.split_at_checked(2)?;
    let n = u16::from_be_bytes([n[0], n[1]]) as usize;
    (name.len() == n).then(|| String::from_utf8(name.to_vec()).ok())?
}

fn snapshot_value<T: serde::Serialize>(s: &T) -> Bytes {
    let mut v = vec![GROUP_METADATA_FORMAT];
    v.extend(postcard::to_stdvec(s).expect("a snapshot always encodes"));
    Bytes::from(v)
}

fn parse_snapshot_value<T: serde::de::DeserializeOwned>(v: &[u8]) -> Option<T> {
    match v.split_first()? {
        (&GROUP_METADATA_FORMAT, rest) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

pub(crate) fn group_key(group: &str) -> Bytes {
    named_key(KEY_GROUP_METADATA, group)
}

pub(crate) fn parse_group_key(k: &[u8]) -> Option<String> {
    parse_named_key(KEY_GROUP_METADATA, k)
}

pub(crate) fn group_value(s: &ClassicSnapshot) -> Bytes {
    snapshot_value(s)
}

pub(crate) fn parse_group_value(v: &[u8]) -> Option<ClassicSnapshot> {
    parse_snapshot_value(v)
}

pub(crate) fn consumer_group_key(group: &str) -> Bytes {
    named_key(KEY_CONSUMER_GROUP, group)
}

pub(crate) fn parse_consumer_group_key(k: &[u8]) -> Option<String> {
    parse_named_key(KEY_CONSUMER_GROUP, k)
}

pub(crate) fn consumer_group_value(s: &ConsumerSnapshot) -> Bytes {
    snapshot_value(s)
}

pub(crate) fn parse_consumer_group_value(v: &[u8]) -> Option<ConsumerSnapshot> {
    parse_snapshot_value(v)
}

pub(crate) fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut k = BytesMut::with_capacity(8 + group.len() + topic.len());
    k.put_u16(KEY_OFFSET_COMMIT);
    k.put_u16(group.len() as u16);
    k.put_slice(group.as_bytes());
    k.put_u16(topic.len() as u16);
    k.put_slice(topic.as_bytes());
    k.put_i32(partition);
    k.freeze()
}

pub(crate) fn parse_offset_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut r = k;
    let take = |r: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (h, t) = r.split_at_checked(n)?;
        *r = t;
        Some(h.to_vec())
    };
    let u16_of = |v: Vec<u8>| u16::from_be_bytes([v[0], v[1]]) as usize;
    if u16_of(take(&mut r, 2)?) != KEY_OFFSET_COMMIT as usize {
        return None;
    }
    let n = u16_of(take(&mut r, 2)?);
    let group = String::from_utf8(take(&mut r, n)?).ok()?;
    let n = u16_of(take(&mut r, 2)?);
    let topic = String::from_utf8(take(&mut r, n)?).ok()?;
    let p = take(&mut r, 4)?;
    Some((group, topic, i32::from_be_bytes(p.try_into().ok()?)))
}

pub(crate) fn offset_value(c: &Committed) -> Bytes {
    let mut v = BytesMut::with_capacity(16 + c.metadata.len());
    v.put_i64(c.offset);
    v.put_i32(c.leader_epoch);
    v.put_slice(c.metadata.as_bytes());
    v.freeze()
}

pub(crate) fn parse_offset_value(v: &[u8]) -> Option<Committed> {
    let (head, meta) = v.split_at_checked(12)?;
    Some(Committed {
        offset: i64::from_be_bytes(head[..8].try_into().ok()?),
        leader_epoch: i32::from_be_bytes(head[8..12].try_into().ok()?),
        metadata: String::from_utf8_lossy(meta).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let k = offset_key("g", "orders", 7);
        assert_eq!(parse_offset_key(&k), Some(("g".into(), "orders".into(), 7)));
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
        };
        assert_eq!(parse_offset_value(&offset_value(&c)), Some(c));
        assert_eq!(parse_offset_key(b"\x00\x09junk"), None);
        assert_eq!(parse_offset_value(b"short"), None);
    }

    #[test]
    fn group_records_round_trip_and_refuse_garbage() {
        let k = group_key("g1");
        assert_eq!(parse_group_key(&k), Some("g1".into()));
        assert_eq!(parse_offset_key(&k), None, "not an offset key");
        assert_eq!(parse_group_key(&offset_key("g", "t", 0)), None);
        assert_eq!(parse_group_key(b"\x00\x02\x00\x09g1"), None, "length lies");
        let s = ClassicSnapshot {
            generation: 7,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![super::super::classic::SnapshotMember {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                protocols: vec![("range".into(), vec![0, 1, 2])],
                assignment: vec![9, 9],
            }],
        };
        assert_eq!(parse_group_value(&group_value(&s)), Some(s));
        assert_eq!(
            parse_group_value(b"\x02anything"),
            None,
            "an unknown format"
        );
        assert_eq!(parse_group_value(b"\x01\xff\xff\xff"), None, "garbage");
        assert_eq!(parse_group_value(b""), None);
    }

    #[test]
    fn consumer_group_records_round_trip_and_are_not_classic_ones() {
        use super::super::state::{ConsumerSnapshot, SnapshotConsumerMember};
        let k = consumer_group_key("g1");
        assert_eq!(parse_consumer_group_key(&k), Some("g1".into()));
        assert_eq!(parse_group_key(&k), None, "not a classic key");
        assert_eq!(parse_consumer_group_key(&group_key("g1")), None);
        let s = ConsumerSnapshot {
            epoch: 4,
            assignor: "range".into(),
            assignment: [("m1".to_string(), [("t".to_string(), vec![0, 1])].into())].into(),
            partition_counts: [("t".to_string(), 2)].into(),
            members: vec![SnapshotConsumerMember {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                subscribed: vec!["t".into()],
                epoch: 4,
                previous_epoch: 3,
                assigned: vec![("t".into(), 0), ("t".into(), 1)],
                revoking: vec![],
                rebalance_timeout_ms: 30_000,
                static_left: false,
            }],
        };
        assert_eq!(
            parse_consumer_group_value(&consumer_group_value(&s)),
            Some(s)
        );
        assert_eq!(parse_consumer_group_value(b"\x01\xff"), None, "garbage");
        assert_eq!(
            parse_consumer_group_value(b"\x09"),
            None,
            "an unknown format"
        );
    }
}
