//! A response frame as a list of parts: the encoded fields, every large record set of a
//! Fetch answer spliced in as it is instead of copied into one contiguous buffer — the very
//! `Bytes` a read returned (sent with vectored writes), or a range of a segment file whose
//! pages are in the page cache (sent with `sendfile`, so its bytes never pass through user
//! space, as Kafka's `FileRecords.transferTo`). A file range enters the encoder as a
//! placeholder of its length (see [`placeholder`]) and is matched back here.

use std::sync::LazyLock;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use sluice_storage::FileRange;

/// Record sets at least this large are sent by reference; smaller ones are copied (a
/// separate iovec costs more than copying a few KiB).
pub const SPLICE_MIN_BYTES: usize = 32 << 10;

/// The longest file range a placeholder stands for; a longer one (a batch above every
/// default limit) is read into memory instead.
pub const PLACEHOLDER_BYTES: usize = 64 << 20;

/// Zeroes the encoder copies nothing from: allocated zeroed (calloc), so its pages are never
/// touched and cost no memory.
static PLACEHOLDER: LazyLock<&'static [u8]> =
    LazyLock::new(|| Box::leak(vec![0u8; PLACEHOLDER_BYTES].into_boxed_slice()));

/// Bytes of `len` that stand for a file range in a response while it is encoded: the
/// encoder sizes and frames them, [`Frame`] puts the range in their place. `None` when the
/// range is longer than [`PLACEHOLDER_BYTES`].
pub fn placeholder(len: usize) -> Option<Bytes> {
    (len <= PLACEHOLDER_BYTES).then(|| Bytes::from_static(&PLACEHOLDER[..len]))
}

fn is_placeholder(src: &[u8]) -> bool {
    !src.is_empty() && src.as_ptr() == PLACEHOLDER.as_ptr()
}

/// One part of a frame.
#[derive(Debug)]
pub enum Part {
    /// Bytes to write.
    Memory(Bytes),
    /// A segment file range to send as it is.
    File(FileRange),
}

/// An encoder target that keeps `spliced` buffers and `files` out of the copy.
pub struct Frame<'a> {
    /// Parts finished so far, in order.
    parts: Vec<Part>,
    /// Bytes of `parts`.
    done: usize,
    /// The part being encoded into.
    head: BytesMut,
    /// Buffers to send by reference when the encoder puts exactly one of them.
    spliced: &'a [Bytes],
    /// File ranges for the placeholders, in the order the encoder meets them.
    files: std::slice::Iter<'a, FileRange>,
    /// Set when a placeholder did not match the next file range.
    mismatch: Option<String>,
}

impl<'a> Frame<'a> {
    /// A frame whose first part has room for `capacity` bytes of fields.
    pub fn new(capacity: usize, spliced: &'a [Bytes], files: &'a [FileRange]) -> Self {
        Frame {
            parts: Vec::new(),
            done: 0,
            head: BytesMut::with_capacity(capacity),
            spliced,
            files: files.iter(),
            mismatch: None,
        }
    }

    /// Every byte put so far.
    pub fn len(&self) -> usize {
        self.done + self.head.len()
    }

    /// The finished parts, in order; an error if a placeholder and the file ranges did not
    /// pair up one to one.
    pub fn into_parts(mut self) -> Result<Vec<Part>, String> {
        if let Some(why) = self.mismatch {
            return Err(why);
        }
        let left = self.files.len();
        if left > 0 {
            return Err(format!(
                "{left} file ranges had no placeholder in the response"
            ));
        }
        if !self.head.is_empty() {
            self.parts.push(Part::Memory(self.head.freeze()));
        }
        Ok(self.parts)
    }

    fn finish_head(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split().freeze();
            self.done += head.len();
            self.parts.push(Part::Memory(head));
        }
    }
}

// SAFETY: every method forwards to the `BytesMut` being encoded into, which upholds the
// trait's contract; `put_slice` either copies into it or appends a whole part.
unsafe impl BufMut for Frame<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_placeholder(src) {
            match self.files.next() {
                Some(r) if r.len() == src.len() => {
                    self.finish_head();
                    self.done += r.len();
                    self.parts.push(Part::File(r.clone()));
                    return;
                }
                other => {
                    self.mismatch.get_or_insert_with(|| {
                        format!(
                            "a {}-byte placeholder met {other:?} (a response out of step with its file ranges)",
                            src.len()
                        )
                    });
                    // The frame is refused at the end; its length still adds up.
                    self.finish_head();
                    self.done += src.len();
                    return;
                }
            }
        }
        if src.len() >= SPLICE_MIN_BYTES {
            if let Some(b) = self
                .spliced
                .iter()
                .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            {
                self.finish_head();
                self.done += b.len();
                self.parts.push(Part::Memory(b.clone()));
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for Frame<'_> {
    fn offset(&self) -> usize {
        self.len()
    }

    /// Message encoders never seek (only record encoders do, into their own buffers); a
    /// seek back into a finished part cannot be honoured and is refused loudly.
    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.done, "seek into a sent part of a frame");
        self.head.resize(offset - self.done, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.done, "range in a sent part of a frame");
        &mut self.head[r.start - self.done..r.end - self.done]
    }
}
