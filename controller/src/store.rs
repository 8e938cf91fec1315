//! Durable Raft state in sled: the log store (entries, vote, committed, last purged) and the
//! state machine (the metadata image, rebuilt on start from the last snapshot plus the
//! committed log, which openraft re-applies from `read_committed`).
//!
//! ```text
//!   sled db (one per controller)
//!     tree "raft_log"   key = index (u64 big-endian) → postcard(Entry)
//!     tree "raft_meta"  "vote" | "committed" | "last_purged" → postcard
//!     tree "snapshot"   "current" → postcard(SnapshotMeta, image bytes)
//! ```
//!
//! Every write openraft requires to be durable is followed by [`Durable::flush`] (sled's
//! flush, then fsyncs of its files) before it is acknowledged (vote, appended entries,
//! truncation, purge, installed snapshot).

// openraft's trait methods fix the error type (`StorageError`, large); our helpers return it
// too so `?` works without conversions.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use sluice_metadata::MetadataImage;
use tokio::sync::watch;

use crate::types::{MetaResponse, NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}
fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read(&e).into()
}

/// Opens the controller's sled database with a bounded cache, and makes what a previous
/// run left (the files sled created, and their directory entries) durable before anything
/// is served from it.
pub fn open_db(dir: &std::path::Path) -> Result<Durable, String> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .map_err(|e| format!("opening sled at {}: {e}", dir.display()))?;
    let syncer = Syncer::open(dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    Ok(Durable {
        db,
        syncer: Arc::new(syncer),
    })
}

/// The sled database plus what makes its flushes durable. sled 0.34 ends a flush with
/// `sync_file_range` on Linux, which writes the pages out but persists neither the file's
/// metadata (its size) nor the disk's write cache; a real `fsync` of its `db` file runs only
/// on sled's flusher thread every 500 ms, and blob files (values over ~128 KiB, e.g. large
/// snapshots) are never synced, nor are the directories holding new files. So after every
/// flush openraft waits on, [`Durable::flush`] also `fdatasync`s the `db` file (through a
/// descriptor of our own: fsync acts on the file, not the descriptor), every blob file not
/// synced yet, and any directory whose entries changed (issue 15).
#[derive(Clone)]
pub struct Durable {
    /// The database.
    pub db: sled::Db,
    syncer: Arc<Syncer>,
}

impl Durable {
    /// Flushes sled and waits until the flushed data is on stable storage.
    pub async fn flush(&self) -> std::io::Result<()> {
        self.db
            .flush_async()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let syncer = self.syncer.clone();
        tokio::task::spawn_blocking(move || syncer.sync())
            .await
            .map_err(|e| std::io::Error::other(format!("the fsync task failed: {e}")))?
    }
}

/// See [`Durable`]. Serializes syncs: each one covers every flush that finished before it.
struct Syncer {
    dir: std::path::PathBuf,
    db_file: std::fs::File,
    /// Names already synced, in the data directory and in `blobs/`.
    known: std::sync::Mutex<(Entries, Entries)>,
}

impl Syncer {
    fn open(dir: &std::path::Path) -> std::io::Result<Self> {
        let s = Syncer {
            dir: dir.to_path_buf(),
            db_file: std::fs::File::open(dir.join("db"))?,
            known: Default::default(),
        };
        // What a previous run (or sled's open just now) wrote may not be durable yet: sled
        // writes `conf` and creates `db` without any fsync.
        {
            let mut known = s.known.lock().expect("syncer lock");
            sync_new_entries(dir, &mut known.0, true)?;
        }
        std::fs::File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The data directory's own entry, when this run created it.
            std::fs::File::open(parent)?.sync_all()?;
        }
        s.sync()?;
        Ok(s)
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut known = self.known.lock().expect("syncer lock");
        self.db_file.sync_data()?;
        let blobs = self.dir.join("blobs");
        if sync_new_entries(&blobs, &mut known.1, true)? {
            std::fs::File::open(&blobs)?.sync_all()?;
        }
        // The data directory: `db`, `conf`, `snap.*` (sled fsyncs a snapshot file's data but
        // not the rename that publishes it).
        if sync_new_entries(&self.dir, &mut known.0, false)? {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A directory's entries as last synced: name → length (0 for what is not a file).
type Entries = std::collections::BTreeMap<std::ffi::OsString, u64>;

/// Fsyncs the files in `dir` that are new or changed length since `known` (all of them when
/// `files` is set; otherwise only the entries matter) and records them. Keyed by length: a
/// blob another sync saw half-written is synced again once complete (sled writes blob files
/// with plain writes, during the insert, while another flush may be syncing). A file deleted
/// meanwhile (sled collects blobs) is skipped. Returns whether the directory's names changed.
fn sync_new_entries(
    dir: &std::path::Path,
    known: &mut Entries,
    files: bool,
) -> std::io::Result<bool> {
    let mut now = Entries::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = if meta.is_file() { meta.len() } else { 0 };
        if files && meta.is_file() && known.get(&name) != Some(&len) {
            match std::fs::File::open(entry.path()) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        now.insert(name, len);
    }
    let changed = !now.keys().eq(known.keys());
    *known = now;
    Ok(changed)
}

/// The Raft log in sled. Cloning shares the trees (used as the log reader too).
#[derive(Clone)]
pub struct LogStore {
    db: Durable,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    /// Opens the log trees of `db`.
    pub fn new(db: &Durable) -> Result<Self, sled::Error> {
        Ok(LogStore {
            db: db.clone(),
            logs: db.db.open_tree("raft_log")?,
            meta: db.db.open_tree("raft_meta")?,
        })
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> StorageResult<Option<T>> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(read_err)?)),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        let bytes = postcard::to_stdvec(value).map_err(io_err)?;
        self.meta.insert(key, bytes).map_err(io_err)?;
        Ok(())
    }

    async fn flush(&self) -> StorageResult<()> {
        self.db.flush().await.map_err(io_err)
    }

    /// Entries with index in `[from, to)`, for WatchMetadata. Returns `None` when `from` was
    /// purged (the caller must send the snapshot instead).
    pub fn entries_from(
        &self,
        from: u64,
        max: usize,
    ) -> StorageResult<Option<Vec<Entry<TypeConfig>>>> {
        if let Some(purged) = self.get_meta::<LogId<NodeId>>("last_purged")? {
            if from <= purged.index {
                return Ok(None);
            }
        }
        let mut out = Vec::new();
        for kv in self.logs.range(from.to_be_bytes()..).take(max) {
            let (_, v) = kv.map_err(read_err)?;
            out.push(postcard::from_bytes(&v).map_err(read_err)?);
        }
        Ok(Some(out))
    }
}

impl LogStore {
    /// The Raft term of the entry at `index`, if this log still knows it (an entry, or the
    /// last purged one).
    pub fn term_at(&self, index: u64) -> StorageResult<Option<u64>> {
        if let Some(purged) = self.get_meta::<LogId<NodeId>>("last_purged")? {
            if index == purged.index {
                return Ok(Some(purged.leader_id.term));
            }
        }
        match self.logs.get(index.to_be_bytes()).map_err(read_err)? {
            None => Ok(None),
            Some(v) => {
                let e: Entry<TypeConfig> = postcard::from_bytes(&v).map_err(read_err)?;
                Ok(Some(e.log_id.leader_id.term))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.logs.range(start.to_be_bytes()..) {
            let (k, v) = kv.map_err(read_err)?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| read_err(std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(postcard::from_bytes(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta("last_purged")?;
        let last = match self.logs.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = postcard::from_bytes(&v).map_err(read_err)?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta("vote", vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed on its own: losing it only means re-applying less on restart; the
        // leader re-establishes the commit index.
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>("committed")?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            let bytes = postcard::to_stdvec(&e).map_err(io_err)?;
            batch.insert(&e.log_id.index.to_be_bytes(), bytes);
        }
        self.logs.apply_batch(batch).map_err(io_err)?;
        let res = self.db.flush().await;
        match res {
            Ok(_) => callback.log_io_completed(Ok(())),
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                return Err(io_err(std::io::Error::other(msg)));
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for kv in self.logs.range(log_id.index.to_be_bytes()..) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.put_meta("last_purged", &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.logs.range(..=log_id.index.to_be_bytes()) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }
}

/// A snapshot as kept in sled.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, crate::types::QuorumMember>,
    data: Vec<u8>,
}

/// What the state machine publishes after each apply: the image and the membership.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The current image (its `offset` is the last applied log index).
    pub image: Arc<MetadataImage>,
}

/// The metadata state machine: the image in memory, snapshots in sled.
pub struct StateMachine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, crate::types::QuorumMember>,
    image: Arc<MetadataImage>,
    snapshots: sled::Tree,
    db: Durable,
    applied_tx: watch::Sender<Applied>,
    snapshot_seq: u64,
}

impl StateMachine {
    /// Loads the last snapshot (if any) from `db`. Returns the state machine and a receiver
    /// that sees every newly applied image.
    pub fn new(db: &Durable) -> Result<(Self, watch::Receiver<Applied>), String> {
        let snapshots = db.db.open_tree("snapshot").map_err(|e| e.to_string())?;
        let mut sm = StateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            image: Arc::new(MetadataImage::default()),
            snapshots,
            db: db.clone(),
            applied_tx: watch::channel(Applied {
                image: Arc::new(MetadataImage::default()),
            })
            .0,
            snapshot_seq: 0,
        };
        if let Some(stored) = sm.load_snapshot().map_err(|e| e.to_string())? {
            sm.image = Arc::new(MetadataImage::decode(&stored.data)?);
            sm.last_applied = stored.meta.last_log_id;
            sm.membership = stored.meta.last_membership.clone();
        }
        let (tx, rx) = watch::channel(Applied {
            image: sm.image.clone(),
        });
        sm.applied_tx = tx;
        Ok((sm, rx))
    }

    fn load_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        match self.snapshots.get("current").map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(read_err)?)),
        }
    }

    async fn store_snapshot(&self, s: &StoredSnapshot) -> StorageResult<()> {
        let bytes = postcard::to_stdvec(s).map_err(io_err)?;
        self.snapshots.insert("current", bytes).map_err(io_err)?;
        self.db.flush().await.map_err(io_err)
    }
}

/// Builds a snapshot from a point-in-time copy of the state (the image is immutable).
pub struct SnapshotBuilder {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, crate::types::QuorumMember>,
    image: Arc<MetadataImage>,
    snapshots: sled::Tree,
    db: Durable,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = self.image.encode();
        let snapshot_id = match &self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("empty-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = postcard::to_stdvec(&stored).map_err(io_err)?;
        self.snapshots.insert("current", bytes).map_err(io_err)?;
        self.db.flush().await.map_err(io_err)?;
        tracing::info!(last_log_id = ?self.last_applied, bytes = data.len(), "built metadata snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, crate::types::QuorumMember>,
    )> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetaResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut image = (*self.image).clone();
        for e in entries {
            self.last_applied = Some(e.log_id);
            let term = e.log_id.leader_id.term;
            let mut resp = MetaResponse::default();
            match e.payload {
                EntryPayload::Blank => {
                    image.offset = e.log_id.index;
                }
                EntryPayload::Normal(batch) => {
                    let (next, delta) = image.apply(e.log_id.index, &batch.records);
                    if !delta.skipped.is_empty() {
                        tracing::warn!(index = e.log_id.index, skipped = ?delta.skipped, "metadata records skipped");
                    }
                    resp.skipped = delta.skipped;
                    image = next;
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    image.offset = e.log_id.index;
                }
            }
            image.term = term;
            out.push(resp);
        }
        self.image = Arc::new(image);
        self.applied_tx.send_replace(Applied {
            image: self.image.clone(),
        });
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            image: self.image.clone(),
            snapshots: self.snapshots.clone(),
            db: self.db.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, crate::types::QuorumMember>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let image = MetadataImage::decode(&data).map_err(|e| read_err(std::io::Error::other(e)))?;
        self.store_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applied_tx.send_replace(Applied {
            image: self.image.clone(),
        });
        tracing::info!(last_log_id = ?meta.last_log_id, "installed metadata snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.load_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
