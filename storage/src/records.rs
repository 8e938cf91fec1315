//! What a read returns: the stored bytes in memory, or — for a range of a closed or active
//! segment file that sits whole in the page cache — the file range itself, so that a
//! network layer able to hand a file's pages to a socket (`sendfile`) sends them without
//! copying them through user space, as Kafka's `FileRecords.transferTo` does.
//!
//! A file range is a promise about bytes below the log end at the time of the read. Bytes
//! below the high watermark are never rewritten (only an unclean election truncates them),
//! and a segment deleted by retention stays readable through the open file, so sending a
//! range later sends what was read. The range's file stays open while the range lives.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Result, StorageError};

/// Ranges shorter than this are read into memory: below it a copy costs less than the
/// page-cache probe and the separate send.
pub const FILE_RANGE_MIN_BYTES: usize = 32 << 10;

/// Batch headers a read may walk to find where a range ends; a range of more, smaller
/// batches is read into memory (one read finds every boundary at once).
pub const FILE_RANGE_HEADERS_MAX: usize = 64;

/// Stored batches, in memory or as a range of a segment file.
#[derive(Clone)]
pub enum Records {
    /// The bytes.
    Memory(Bytes),
    /// A range of a segment file, every page of which was in the page cache when read.
    File(FileRange),
}

impl Records {
    /// No batches.
    pub fn empty() -> Self {
        Records::Memory(Bytes::new())
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        match self {
            Records::Memory(b) => b.len(),
            Records::File(r) => r.len,
        }
    }

    /// Whether no batch is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes. A file range is read (blocking file I/O: call it where that is allowed).
    pub fn into_bytes(self) -> Result<Bytes> {
        match self {
            Records::Memory(b) => Ok(b),
            Records::File(r) => r.read(),
        }
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Records::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Records::File(r) => r.fmt(f),
        }
    }
}

/// `len` bytes at `position` of an open segment file.
#[derive(Clone)]
pub struct FileRange {
    file: Arc<File>,
    path: Arc<Path>,
    position: u64,
    len: usize,
}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "File({} bytes at {} of {})",
            self.len,
            self.position,
            self.path.display()
        )
    }
}

impl FileRange {
    /// `len` bytes at `position` of `file` (opened from `path`).
    pub fn new(file: Arc<File>, path: &Path, position: u64, len: usize) -> Self {
        FileRange {
            file,
            path: Arc::from(path),
            position,
            len,
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the range starts in the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never, for a range a read returned).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range's bytes, read into memory (blocking file I/O).
    pub fn read(&self) -> Result<Bytes> {
        read_at(&self.file, &self.path, self.position, self.len)
    }
}

/// `len` bytes at `position` of `file`, read straight into a fresh buffer's spare capacity
/// (a read of several MiB is not zero-filled first).
pub(crate) fn read_at(file: &File, path: &Path, position: u64, len: usize) -> Result<Bytes> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = position + buf.len() as u64;
        // Reads into the spare capacity and extends the length by what was read.
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)
            .map_err(|e| StorageError::io("read segment", path, std::io::Error::from(e)))?;
        if n == 0 {
            return Err(StorageError::io(
                "read segment",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} bytes at {at} are past the end of the file",
                        len - buf.len()
                    ),
                ),
            ));
        }
    }
    // The allocator may have given more capacity than asked for.
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

/// Whether every page of `len` bytes at `position` of `file` is in the page cache, so that
/// sending them reads no disk. Asks the kernel with `cachestat` (Linux 6.5); where it is
/// not available the answer is no, and reads are copied as before.
pub fn in_page_cache(file: &File, position: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = Range {
            off: position,
            len: len as u64,
        };
        let mut stat = Stat::default();
        // SAFETY: cachestat reads `range` and writes `stat`, both live `repr(C)` structs of
        // the kernel's layout (include/uapi/linux/mman.h); the fd is open while `file` is.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0u32,
            )
        };
        if r != 0 {
            return false;
        }
        let page = page_size();
        let pages = (position + len as u64 - 1) / page - position / page + 1;
        stat.nr_cache >= pages
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, position);
        false
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}
