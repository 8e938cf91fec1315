//! Open segment files, bounded: every segment's `.log` file is opened on first use and
//! closed again when more than [`open_files_max`] segment files are open, least recently
//! used first. An idle partition therefore holds no descriptor, and a broker with more
//! replicas than its `ulimit -n` still runs (Kafka keeps every segment open and asks for a
//! very high limit instead).
//!
//! Files are opened read + append: appends always land at the end of the file (which the
//! segment keeps equal to its valid size), reads are positioned (`pread`), so a reopened
//! handle needs no cursor state.
//!
//! Locking: the cache lock is never taken while a file slot is locked by the same thread,
//! and eviction locks victims' slots only after releasing the cache lock. An evicted handle
//! still in use stays valid (it is an `Arc<File>`); its descriptor closes with the last user.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::error::{Result, StorageError};

/// Segment files kept open when nothing else is configured.
pub const OPEN_FILES_MAX_DEFAULT: usize = 10_000;

static OPEN_FILES_MAX: AtomicUsize = AtomicUsize::new(OPEN_FILES_MAX_DEFAULT);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sets how many segment files may be open at once (process-wide; at least 16).
pub fn set_open_files_max(n: usize) {
    OPEN_FILES_MAX.store(n.max(16), Ordering::Relaxed);
}

/// How many segment files may be open at once.
pub fn open_files_max() -> usize {
    OPEN_FILES_MAX.load(Ordering::Relaxed)
}

/// Segment files open now (process-wide).
pub fn open_files() -> usize {
    cache().state.lock().expect("file cache lock").open.len()
}

/// Least-recently-used order by a use counter; `order` maps counter → slot id.
struct State {
    clock: u64,
    open: HashMap<u64, (u64, Weak<Slot>)>,
    order: std::collections::BTreeMap<u64, u64>,
}

struct Cache {
    state: Mutex<State>,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache {
        state: Mutex::new(State {
            clock: 0,
            open: HashMap::new(),
            order: Default::default(),
        }),
    })
}

struct Slot {
    id: u64,
    file: Mutex<Option<Arc<File>>>,
}

/// The `.log` file of one segment, opened on demand.
pub struct SegmentFile {
    path: PathBuf,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .field("open", &self.is_open())
            .finish()
    }
}

fn open_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| StorageError::io("open segment", path, e))
}

impl SegmentFile {
    /// Creates (or empties) the file and returns it open.
    pub fn create(path: PathBuf) -> Result<Self> {
        File::create(&path).map_err(|e| StorageError::io("create segment", &path, e))?;
        let f = SegmentFile::new(path);
        f.get()?;
        Ok(f)
    }

    /// An existing file, opened at first use.
    pub fn existing(path: PathBuf) -> Result<Self> {
        if !path.exists() {
            return Err(StorageError::io(
                "open segment",
                &path,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        Ok(SegmentFile::new(path))
    }

    fn new(path: PathBuf) -> Self {
        SegmentFile {
            path,
            slot: Arc::new(Slot {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                file: Mutex::new(None),
            }),
        }
    }

    /// Whether a descriptor is open now.
    pub fn is_open(&self) -> bool {
        self.slot.file.lock().expect("slot lock").is_some()
    }

    /// The open handle, opening the file if it was closed.
    pub fn get(&self) -> Result<Arc<File>> {
        let existing = self.slot.file.lock().expect("slot lock").clone();
        let (file, opened) = match existing {
            Some(f) => (f, false),
            None => (Arc::new(open_file(&self.path)?), true),
        };
        let victims = {
            let mut st = cache().state.lock().expect("file cache lock");
            st.clock += 1;
            let now = st.clock;
            if let Some((used, _)) = st.open.get(&self.slot.id).map(|(u, w)| (*u, w.clone())) {
                st.order.remove(&used);
            }
            st.open
                .insert(self.slot.id, (now, Arc::downgrade(&self.slot)));
            st.order.insert(now, self.slot.id);
            let mut victims = Vec::new();
            while st.open.len() > open_files_max() {
                let Some((_, id)) = st.order.pop_first() else {
                    break;
                };
                if let Some((_, w)) = st.open.remove(&id) {
                    victims.push(w);
                }
            }
            victims
        };
        let file = if opened {
            let mut slot = self.slot.file.lock().expect("slot lock");
            // Another thread may have opened it meanwhile: use that one.
            slot.get_or_insert_with(|| file.clone()).clone()
        } else {
            file
        };
        // Close the victims in every case: they left the cache's map above, so a victim
        // left open here would never be counted or closed again.
        for v in victims {
            if let Some(s) = v.upgrade() {
                if s.id != self.slot.id {
                    s.file.lock().expect("slot lock").take();
                }
            }
        }
        Ok(file)
    }

    /// Closes the descriptor (it reopens on the next use).
    pub fn close(&self) {
        self.slot.file.lock().expect("slot lock").take();
        let mut st = cache().state.lock().expect("file cache lock");
        if let Some((used, _)) = st.open.remove(&self.slot.id) {
            st.order.remove(&used);
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn files_beyond_the_limit_are_closed_least_recently_used_first_and_reopen_on_use() {
        // A low limit (process-wide: the other tests here then run with closing and
        // reopening too, which they must survive).
        set_open_files_max(64);
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<SegmentFile> = (0..72u8)
            .map(|i| {
                let f = SegmentFile::create(dir.path().join(format!("{i}.log"))).unwrap();
                (&*f.get().unwrap()).write_all(&[i; 4]).unwrap();
                f
            })
            .collect();
        // At most 64 of ours are open, and the least recently used of ours was closed.
        assert!(files.iter().filter(|f| f.is_open()).count() <= 64);
        assert!(!files[0].is_open());
        // A closed file reopens with its data; appends still go to its end.
        let f = files[0].get().unwrap();
        (&*f).write_all(&[9; 2]).unwrap();
        let mut buf = [0u8; 6];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 9, 9]);
        assert!(files[0].is_open());
    }
}
