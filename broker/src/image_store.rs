//! The broker's persisted metadata: `__metadata_image`, a full image, plus
//! `__metadata_journal`, the metadata log entries applied since that image was written.
//!
//! A burst of applied metadata appends only its entries to the journal (O(change)); the
//! image is rewritten only when the journal has grown past the image's own size (or a
//! controller snapshot replaced the image), so persisting costs O(cluster) only once per
//! O(cluster) of changes. Loading reads the image and replays the journal.
//!
//! Journal frame: `u32 length` (of what follows the CRC) · `u32 crc32c` (of what follows
//! it) · `u64 offset` · `u64 term` · the entry's encoded `MetaBatch`, all big-endian. A torn
//! or damaged frame ends the journal: it and what follows are cut off at load (the
//! controller re-sends everything after the image's offset, so nothing is lost but time).
//!
//! Crash safety: a rewrite renames the new image into place before it empties the journal,
//! and replay skips entries at or below the image's offset, so a crash between the two
//! steps replays nothing twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sluice_metadata::records::RecordBatch as MetaBatch;
use sluice_metadata::{MetadataDelta, MetadataImage};

/// The journal is compacted into the image once it holds more than this many bytes and
/// more than the image itself.
pub const JOURNAL_COMPACT_MIN_BYTES: u64 = 64 * 1024;

/// Frame header: length, CRC, offset, term.
const FRAME_HEADER_BYTES: usize = 4 + 4 + 8 + 8;

/// Largest journal frame accepted at load (one metadata log entry; the controller caps
/// entries far below this).
const FRAME_BYTES_MAX: usize = 64 << 20;

/// One applied metadata log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Raft index of the entry.
    pub offset: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// The entry's encoded [`MetaBatch`].
    pub record: bytes::Bytes,
}

/// Applies one metadata log entry to `image`, as both the live follower and the journal
/// replay do.
pub fn apply_entry(
    image: &MetadataImage,
    e: &JournalEntry,
) -> Result<(MetadataImage, MetadataDelta), String> {
    let batch = MetaBatch::decode(&e.record)?;
    let (mut next, delta) = image.apply(e.offset, &batch.records);
    next.term = e.term;
    Ok((next, delta))
}

/// The two files and what they hold.
#[derive(Debug)]
pub struct ImageStore {
    image_path: PathBuf,
    journal_path: PathBuf,
    journal: Option<File>,
    journal_bytes: u64,
    image_bytes: u64,
}

fn frame(e: &JournalEntry) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + e.record.len());
    body.extend_from_slice(&e.offset.to_be_bytes());
    body.extend_from_slice(&e.term.to_be_bytes());
    body.extend_from_slice(&e.record);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Bytes one entry with `record` takes in the journal.
pub fn frame_bytes(record: &[u8]) -> usize {
    FRAME_HEADER_BYTES + record.len()
}

/// Parses the journal's frames; returns them and the length of the valid prefix, with the
/// reason it stopped early, if it did.
fn parse_journal(bytes: &[u8]) -> (Vec<JournalEntry>, usize, Option<String>) {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME_HEADER_BYTES {
            return (
                entries,
                pos,
                Some(format!("torn frame header at byte {pos}")),
            );
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if !(16..=FRAME_BYTES_MAX).contains(&len) {
            return (
                entries,
                pos,
                Some(format!("frame length {len} at byte {pos} is out of range")),
            );
        }
        if rest.len() < 8 + len {
            return (entries, pos, Some(format!("torn frame at byte {pos}")));
        }
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        let body = &rest[8..8 + len];
        if crc32c::crc32c(body) != crc {
            return (entries, pos, Some(format!("bad CRC at byte {pos}")));
        }
        entries.push(JournalEntry {
            offset: u64::from_be_bytes(body[0..8].try_into().expect("8 bytes")),
            term: u64::from_be_bytes(body[8..16].try_into().expect("8 bytes")),
            record: bytes::Bytes::copy_from_slice(&body[16..]),
        });
        pos += 8 + len;
    }
    (entries, pos, None)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl ImageStore {
    /// Loads the image and replays the journal in `dir` (an empty image when neither
    /// exists). A damaged journal tail is cut off with a warning; a damaged image is an error.
    pub fn load(dir: &Path) -> Result<(ImageStore, MetadataImage), String> {
        let image_path = dir.join("__metadata_image");
        let journal_path = dir.join("__metadata_journal");
        let (mut image, image_bytes) = match std::fs::read(&image_path) {
            Ok(bytes) => (MetadataImage::decode(&bytes)?, bytes.len() as u64),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (MetadataImage::default(), 0),
            Err(e) => return Err(io_error("reading", &image_path, e)),
        };
        let journal = match std::fs::read(&journal_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("reading", &journal_path, e)),
        };
        let (entries, valid, problem) = parse_journal(&journal);
        let mut replayed = 0usize;
        let mut cut = problem;
        for e in &entries {
            if e.offset <= image.offset {
                continue;
            }
            match apply_entry(&image, e) {
                Ok((next, _)) => {
                    image = next;
                    replayed += 1;
                }
                Err(why) => {
                    cut = Some(format!("entry at offset {}: {why}", e.offset));
                    break;
                }
            }
        }
        let mut store = ImageStore {
            image_path,
            journal_path,
            journal: None,
            journal_bytes: valid as u64,
            image_bytes,
        };
        if let Some(why) = cut {
            // Keep only what was replayed: the image now holds it, so rewrite it and start
            // an empty journal.
            tracing::warn!(journal = %store.journal_path.display(), %why,
                replayed, "cutting the metadata journal short; the controller re-sends the rest");
            store.rewrite(&image)?;
        } else if replayed > 0 {
            tracing::debug!(replayed, "replayed the metadata journal");
        }
        Ok((store, image))
    }

    /// Appends applied entries to the journal (not fsynced: like the image, it is a cache
    /// of the controllers' log).
    pub fn append(&mut self, entries: &[JournalEntry]) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.journal.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
                .map_err(|e| io_error("opening", &self.journal_path, e))?;
            self.journal = Some(f);
        }
        let mut buf = Vec::new();
        for e in entries {
            buf.extend_from_slice(&frame(e));
        }
        self.journal
            .as_mut()
            .expect("opened above")
            .write_all(&buf)
            .map_err(|e| io_error("appending to", &self.journal_path, e))?;
        self.journal_bytes += buf.len() as u64;
        Ok(())
    }

    /// Whether the journal has outgrown the image, so the next persist should rewrite it.
    pub fn should_compact(&self) -> bool {
        self.journal_bytes > JOURNAL_COMPACT_MIN_BYTES.max(self.image_bytes)
    }

    /// Writes `image` as the new full image and empties the journal.
    pub fn rewrite(&mut self, image: &MetadataImage) -> Result<(), String> {
        let bytes = image.encode();
        let tmp = self.image_path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &self.image_path))
            .map_err(|e| io_error("writing", &self.image_path, e))?;
        self.image_bytes = bytes.len() as u64;
        self.journal = None;
        File::create(&self.journal_path)
            .map_err(|e| io_error("emptying", &self.journal_path, e))?;
        self.journal_bytes = 0;
        Ok(())
    }

    /// Bytes in the journal.
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::records::{Endpoint, MetadataRecord};
    use sluice_metadata::BrokerId;

    fn entry(offset: u64, records: Vec<MetadataRecord>) -> JournalEntry {
        JournalEntry {
            offset,
            term: 3,
            record: MetaBatch::new(records).encode().into(),
        }
    }

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id: BrokerId(id),
            incarnation_id: format!("i{id}"),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
            },
            rack: None,
        }
    }

    /// Entries 1..=n, each registering one broker.
    fn registrations(n: u64) -> Vec<JournalEntry> {
        (1..=n)
            .map(|i| entry(i, vec![register(i as i32)]))
            .collect()
    }

    fn applied(entries: &[JournalEntry]) -> MetadataImage {
        entries.iter().fold(MetadataImage::default(), |img, e| {
            apply_entry(&img, e).unwrap().0
        })
    }

    #[test]
    fn appended_entries_are_replayed_after_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let entries = registrations(4);
        let (mut store, img) = ImageStore::load(dir.path()).unwrap();
        assert_eq!(img, MetadataImage::default());
        store.rewrite(&applied(&entries[..2])).unwrap();
        store.append(&entries[2..]).unwrap();
        let (_, loaded) = ImageStore::load(dir.path()).unwrap();
        assert_eq!(loaded, applied(&entries));
        assert_eq!(loaded.offset, 4);
        assert_eq!(loaded.term, 3);
    }

    #[test]
    fn a_crash_between_image_rename_and_journal_truncation_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let entries = registrations(3);
        let (mut store, _) = ImageStore::load(dir.path()).unwrap();
        store.append(&entries).unwrap();
        // The new image is in place but the journal still holds what it covers.
        std::fs::write(
            dir.path().join("__metadata_image"),
            applied(&entries).encode(),
        )
        .unwrap();
        let (_, loaded) = ImageStore::load(dir.path()).unwrap();
        assert_eq!(loaded, applied(&entries));
    }

    #[test]
    fn a_torn_or_damaged_journal_tail_is_cut_off_and_the_rest_kept() {
        for damage in ["torn", "crc", "length"] {
            let dir = tempfile::tempdir().unwrap();
            let entries = registrations(3);
            let (mut store, _) = ImageStore::load(dir.path()).unwrap();
            store.append(&entries).unwrap();
            let path = dir.path().join("__metadata_journal");
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - frame(&entries[2]).len();
            match damage {
                "torn" => bytes.truncate(bytes.len() - 3),
                "crc" => *bytes.last_mut().unwrap() ^= 0xff,
                _ => bytes[last..last + 4].copy_from_slice(&u32::MAX.to_be_bytes()),
            }
            std::fs::write(&path, &bytes).unwrap();
            let (mut store, loaded) = ImageStore::load(dir.path()).unwrap();
            assert_eq!(loaded, applied(&entries[..2]), "{damage}");
            // The store starts clean: appending the lost entry again gives the full image.
            store.append(&entries[2..]).unwrap();
            let (_, reloaded) = ImageStore::load(dir.path()).unwrap();
            assert_eq!(reloaded, applied(&entries), "{damage}");
        }
    }

    #[test]
    fn garbage_journal_bytes_leave_the_image_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let entries = registrations(2);
        let (mut store, _) = ImageStore::load(dir.path()).unwrap();
        store.rewrite(&applied(&entries)).unwrap();
        std::fs::write(
            dir.path().join("__metadata_journal"),
            b"\x00\x00\x00\x20garbage!",
        )
        .unwrap();
        let (_, loaded) = ImageStore::load(dir.path()).unwrap();
        assert_eq!(loaded, applied(&entries));
    }

    #[test]
    fn the_journal_is_compacted_only_once_it_outgrows_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = ImageStore::load(dir.path()).unwrap();
        let big = entry(1, vec![register(1)]);
        let frame_len = frame(&big).len() as u64;
        let mut offset = 1;
        while store.journal_bytes() + frame_len <= JOURNAL_COMPACT_MIN_BYTES {
            store.append(&[entry(offset, vec![register(1)])]).unwrap();
            offset += 1;
            assert!(!store.should_compact());
        }
        store.append(&[entry(offset, vec![register(1)])]).unwrap();
        assert!(store.should_compact());
        store.rewrite(&MetadataImage::default()).unwrap();
        assert!(!store.should_compact());
        assert_eq!(store.journal_bytes(), 0);
    }
}
