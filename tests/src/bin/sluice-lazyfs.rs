//! `sluice-lazyfs MOUNTPOINT`: a FUSE filesystem for power-loss tests, in the spirit of
//! LazyFS. Every file lives in memory twice: what was written, and what was last made durable
//! with `fsync`/`fdatasync`. Writing `plug` on stdin "pulls the plug": every file goes back to
//! its durable content, as after a power cut where the page cache was lost. The processes on
//! it must be killed first (SIGKILL), as a power cut would.
//!
//! The model is LazyFS's: file *data* not synced is lost; namespace operations (create,
//! rename, unlink, mkdir) are durable at once, as on a journaling filesystem that commits its
//! metadata in order. `sync_file_range` never reaches a FUSE filesystem, so it makes nothing
//! durable here, which is exactly what real hardware does with a volatile write cache (it
//! writes pages back without a cache flush or the file's metadata).
//!
//! Files are opened with `FOPEN_DIRECT_IO` and every attribute has a zero TTL, so the kernel
//! caches nothing that could survive a plug. stdin commands, one per line: `plug` (answers
//! `plugged <files> <bytes lost>`), `stats` (answers `stats <fsyncs>`), `quit` (or EOF):
//! unmount and exit. `mounted` is printed once the mount is up.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

const TTL: Duration = Duration::ZERO;

enum Kind {
    File { data: Vec<u8>, durable: Vec<u8> },
    Dir { entries: BTreeMap<OsString, u64> },
}

struct Node {
    kind: Kind,
    perm: u16,
    parent: u64,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    fsyncs: u64,
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.kind {
            Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
        };
        let now = SystemTime::now();
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm: n.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        match self.nodes.get(&parent).map(|n| &n.kind) {
            Some(Kind::Dir { entries }) => entries.get(name).copied().ok_or(Errno::ENOENT),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries }) => Ok(entries),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<u64, Errno> {
        if self.child(parent, name).is_ok() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.nodes.insert(ino, Node { kind, perm, parent });
        Ok(ino)
    }

    /// Removes `name` from `parent`; the node goes too (no hard links here).
    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        match (&self.nodes[&ino].kind, want_dir) {
            (Kind::Dir { entries }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
            (Kind::File { .. }, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.nodes.remove(&ino);
        Ok(())
    }

    /// Every file back to its durable content: (files changed, bytes lost).
    fn plug(&mut self) -> (usize, usize) {
        let (mut files, mut bytes) = (0, 0);
        for n in self.nodes.values_mut() {
            if let Kind::File { data, durable } = &mut n.kind {
                if data != durable {
                    files += 1;
                    bytes += data.len().abs_diff(durable.len()).max(
                        data.iter()
                            .zip(durable.iter())
                            .filter(|(a, b)| a != b)
                            .count(),
                    );
                    *data = durable.clone();
                }
            }
        }
        (files, bytes)
    }
}

struct LazyFs(Arc<Mutex<State>>);

impl LazyFs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("lazyfs state")
    }
}

fn entry_reply(s: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
    match ino.and_then(|i| s.attr(i).ok_or(Errno::ENOENT)) {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.state();
        entry_reply(&s, s.child(parent.0, name), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(size) = size {
            match &mut n.kind {
                Kind::File { data, .. } => data.resize(size as usize, 0),
                Kind::Dir { .. } => return reply.error(Errno::EISDIR),
            }
        }
        let a = s.attr(ino.0).expect("present");
        reply.attr(&TTL, &a);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let kind = Kind::Dir {
            entries: BTreeMap::new(),
        };
        let ino = s.add(parent.0, name, kind, (mode & 0o7777) as u16);
        entry_reply(&s, ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let r = (|| {
            let ino = s.child(parent.0, name)?;
            if let Ok(old) = s.child(newparent.0, newname) {
                if old == ino {
                    return Ok(());
                }
                let is_dir = matches!(s.nodes[&old].kind, Kind::Dir { .. });
                s.remove(newparent.0, newname, is_dir)?;
            }
            s.entries_mut(parent.0)?.remove(name);
            s.entries_mut(newparent.0)?.insert(newname.to_owned(), ino);
            s.nodes.get_mut(&ino).expect("present").parent = newparent.0;
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.state().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.state();
        match s.nodes.get(&ino.0).map(|n| &n.kind) {
            Some(Kind::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Kind::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.state();
        match s.nodes.get_mut(&ino.0).map(|n| &mut n.kind) {
            Some(Kind::File { data, .. }) => {
                let end = offset as usize + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(bytes);
                reply.written(bytes.len() as u32);
            }
            Some(Kind::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        s.fsyncs += 1;
        match s.nodes.get_mut(&ino.0).map(|n| &mut n.kind) {
            Some(Kind::File { data, durable }) => {
                durable.clone_from(data);
                reply.ok();
            }
            Some(Kind::Dir { .. }) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace operations are durable at once in this model. Never ENOSYS: the kernel
        // would stop sending fsyncs and report them all as successful.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let Some(n) = s.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Kind::Dir { entries } = &n.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (n.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in entries {
            let kind = match s.nodes[child].kind {
                Kind::File { .. } => FileType::RegularFile,
                Kind::Dir { .. } => FileType::Directory,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let ino = match s.child(parent.0, name) {
            Ok(_) if flags & libc_o_excl() != 0 => Err(Errno::EEXIST),
            Ok(existing) => Ok(existing),
            Err(_) => s.add(
                parent.0,
                name,
                Kind::File {
                    data: Vec::new(),
                    durable: Vec::new(),
                },
                (mode & 0o7777) as u16,
            ),
        };
        match ino.and_then(|i| s.attr(i).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// `O_EXCL` on Linux.
fn libc_o_excl() -> i32 {
    0o200
}

fn main() {
    let mountpoint = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: sluice-lazyfs MOUNTPOINT");
        std::process::exit(2)
    });
    let root = Node {
        kind: Kind::Dir {
            entries: BTreeMap::new(),
        },
        perm: 0o755,
        parent: 1,
    };
    let state = Arc::new(Mutex::new(State {
        nodes: HashMap::from([(1, root)]),
        next_ino: 2,
        fsyncs: 0,
    }));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sluice-lazyfs".into()),
        MountOption::RW,
        MountOption::NoAtime,
    ];
    let session = match fuser::spawn_mount(LazyFs(state.clone()), &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-lazyfs: cannot mount {mountpoint}: {e}");
            std::process::exit(1)
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "plug" => {
                let (files, bytes) = state.lock().expect("lazyfs state").plug();
                let _ = writeln!(out, "plugged {files} {bytes}");
            }
            "stats" => {
                let fsyncs = state.lock().expect("lazyfs state").fsyncs;
                let _ = writeln!(out, "stats {fsyncs}");
            }
            "quit" => break,
            other => {
                let _ = writeln!(out, "unknown command {other:?}");
            }
        }
        let _ = out.flush();
    }
    drop(session);
}
