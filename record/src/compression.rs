//! The compression codecs of a record batch (attributes bits 0–2), as Kafka writes them:
//! gzip (RFC 1952), snappy in the xerial framing the Java client writes (raw snappy is read
//! too: librdkafka and old clients write it), LZ4 in the frame format (KIP-57), zstd. Only
//! the records section after the 61-byte header is compressed.
//!
//! Crates: `flate2` (pure-Rust `miniz_oxide` backend), `snap`, `lz4_flex` (pure Rust) and
//! `zstd` (binds libzstd, built from source by its build script).

use std::io::{Read, Write};

use bytes::Bytes;

use crate::error::{RecordError, Result};

/// A batch's compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// xerial snappy-java's stream header: magic, then version 1 and compatible version 1.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// The block size snappy-java writes (32 KiB).
const XERIAL_BLOCK: usize = 32 * 1024;

impl Compression {
    /// Every codec, by id.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec of attributes bits 0–2, or `UNSUPPORTED_COMPRESSION_TYPE` for 5–7.
    pub fn from_id(id: i16) -> Result<Compression> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(RecordError::UnsupportedCompression { codec }),
        }
    }

    /// The id in the attributes.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// From Kafka's name; `uncompressed` (the topic config's spelling) is `none`.
    pub fn parse(name: &str) -> Option<Compression> {
        match name.trim() {
            "none" | "uncompressed" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Compresses `data` (the records section of a batch).
    pub fn compress(self, data: &[u8]) -> Bytes {
        let io = "compressing into memory cannot fail";
        match self {
            Compression::None => Bytes::copy_from_slice(data),
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).expect(io);
                Bytes::from(e.finish().expect(io))
            }
            Compression::Snappy => {
                let mut out = Vec::with_capacity(16 + data.len() / 2);
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut enc = snap::raw::Encoder::new();
                for block in data.chunks(XERIAL_BLOCK) {
                    let c = enc.compress_vec(block).expect(io);
                    out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                    out.extend_from_slice(&c);
                }
                Bytes::from(out)
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).expect(io);
                Bytes::from(e.finish().expect(io))
            }
            Compression::Zstd => Bytes::from(zstd::bulk::compress(data, 3).expect(io)),
        }
    }

    /// Decompresses a records section, refusing one that would grow past `limit` bytes (a
    /// decompression bomb) or does not decode, with `CORRUPT_MESSAGE` naming the codec.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Bytes> {
        let bad = |what: String| {
            RecordError::corrupt(format!(
                "{} records section does not decompress: {what}",
                self.name()
            ))
        };
        let read_all = |r: &mut dyn Read| -> Result<Bytes> {
            let mut out = Vec::new();
            r.take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            if out.len() > limit {
                return Err(RecordError::corrupt(format!(
                    "{} records section decompresses to more than {limit} bytes",
                    self.name()
                )));
            }
            Ok(Bytes::from(out))
        };
        match self {
            Compression::None => Ok(Bytes::copy_from_slice(data)),
            Compression::Gzip => read_all(&mut flate2::read::GzDecoder::new(data)),
            Compression::Lz4 => read_all(&mut lz4_flex::frame::FrameDecoder::new(data)),
            Compression::Zstd => {
                let mut d =
                    zstd::stream::read::Decoder::new(data).map_err(|e| bad(e.to_string()))?;
                read_all(&mut d)
            }
            Compression::Snappy => snappy_decompress(data, limit).map_err(bad),
        }
    }
}

/// Snappy as xerial snappy-java frames it (magic, two versions, then length-prefixed raw
/// blocks), or a single raw block.
fn snappy_decompress(data: &[u8], limit: usize) -> std::result::Result<Bytes, String> {
    let mut dec = snap::raw::Decoder::new();
    let raw = |dec: &mut snap::raw::Decoder, block: &[u8], out: &mut Vec<u8>| {
        let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if out.len() + n > limit {
            return Err(format!("it would grow past {limit} bytes"));
        }
        let at = out.len();
        out.resize(at + n, 0);
        dec.decompress(block, &mut out[at..])
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        raw(&mut dec, data, &mut out)?;
        return Ok(Bytes::from(out));
    }
    let mut p = XERIAL_MAGIC.len() + 8;
    if data.len() < p {
        return Err("the xerial header is cut short".into());
    }
    while p < data.len() {
        let Some(len) = data.get(p..p + 4) else {
            return Err(format!("a block length is cut short at byte {p}"));
        };
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        p += 4;
        if len < 0 || p + len as usize > data.len() {
            return Err(format!(
                "a block of {len} bytes at byte {p} runs past the end"
            ));
        }
        raw(&mut dec, &data[p..p + len as usize], &mut out)?;
        p += len as usize;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_names_parse() {
        let data = sample();
        for c in Compression::ALL {
            let z = c.compress(&data);
            assert_eq!(c.decompress(&z, data.len()).unwrap(), data, "{c:?}");
            assert_eq!(Compression::parse(c.name()), Some(c));
            assert_eq!(Compression::from_id(c.id()).unwrap(), c);
        }
        assert!(Compression::from_id(5).is_err());
        assert_eq!(Compression::parse("uncompressed"), Some(Compression::None));
        assert_eq!(Compression::parse("brotli"), None);
    }

    /// A bomb: what decompresses past the limit is refused, whatever the codec.
    #[test]
    fn decompression_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        for c in Compression::ALL.into_iter().skip(1) {
            let z = c.compress(&zeros);
            let e = c.decompress(&z, 1000).unwrap_err().to_string();
            assert!(e.contains("CORRUPT_MESSAGE"), "{c:?}: {e}");
        }
    }

    /// Garbage and truncated input are CORRUPT_MESSAGE naming the codec, never a panic.
    #[test]
    fn garbage_and_truncation_are_corrupt_messages() {
        let data = sample();
        for c in Compression::ALL.into_iter().skip(1) {
            let z = c.compress(&data);
            for input in [&b"not compressed at all"[..], &z[..z.len() / 2]] {
                let e = c.decompress(input, 1 << 30).unwrap_err().to_string();
                assert!(e.contains(c.name()), "{c:?}: {e}");
            }
        }
    }

    /// librdkafka writes raw snappy (no xerial framing); both read back.
    #[test]
    fn raw_snappy_reads_too() {
        let data = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            Compression::Snappy.decompress(&raw, data.len()).unwrap(),
            data
        );
    }
}
