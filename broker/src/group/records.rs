//! The records of `__consumer_offsets`: key = (kind 1, group, topic, partition), value =
//! (offset, leader epoch, metadata), a missing value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};

use super::Committed;

const KEY_OFFSET_COMMIT: u16 = 1;

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
}
