//! Identifiers.

use serde::{Deserialize, Serialize};

/// A broker's `node.id`.
pub type BrokerId = i32;

/// Leader value of a partition that has none (Kafka's `-1`).
pub const NO_LEADER: BrokerId = -1;

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
