//! Zig-zag varints as Kafka encodes record fields (protobuf-style base-128, sign folded in).

/// Appends `v` as a zig-zag varint (Kafka `ByteUtils.writeVarint`).
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_varlong(buf, v as i64)
}

/// Appends `v` as a zig-zag varlong (Kafka `ByteUtils.writeVarlong`).
#[inline]
pub fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Number of bytes `put_varlong(v)` writes.
#[inline]
pub fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varlong from `buf[*pos..]`, advancing `pos`. `None` when the bytes end
/// first or the encoding is longer than 10 bytes.
#[inline]
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// Reads a zig-zag varint (must fit in an `i32`).
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings_match_kafka() {
        // From Kafka's ByteUtilsTest: zig-zag maps 0,-1,1,-2,2 to 0,1,2,3,4.
        for (v, bytes) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, bytes, "encoding of {v}");
            assert_eq!(varlong_len(v), bytes.len());
        }
    }

    #[test]
    fn truncated_and_overlong_inputs_are_rejected() {
        let mut pos = 0;
        assert_eq!(get_varlong(&[0x80, 0x80], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get_varlong(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        let mut buf = Vec::new();
        put_varlong(&mut buf, i64::from(i32::MAX) + 1);
        assert_eq!(get_varint(&buf, &mut pos), None);
    }

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&buf, &mut pos), Some(v));
            prop_assert_eq!(pos, buf.len());
        }
    }
}
