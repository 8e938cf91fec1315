//! Fsyncs of rolled segments off the partition's thread (Kafka schedules the same
//! `flush-log` task when a segment rolls): one process-wide thread takes a closed segment's
//! files, fsyncs them and reports back; the owner then moves the log's recovery point to
//! the new segment's base, so an unclean restart scans only what came after it instead of
//! every segment since the last explicit flush.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

struct Job {
    files: Vec<PathBuf>,
    done: mpsc::Sender<bool>,
}

fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sluice-flusher".into())
            .spawn(move || {
                for job in rx {
                    let ok = job.files.iter().all(|f| {
                        crate::fault::maybe_stall_fsync();
                        match std::fs::File::open(f).and_then(|h| h.sync_data()) {
                            Ok(()) => true,
                            Err(e) => {
                                // Deleted meanwhile (retention, truncation) or a disk error:
                                // the recovery point stays where it was, which only means a
                                // longer scan after a crash.
                                tracing::debug!(file = %f.display(), error = %e,
                                    "background fsync of a rolled segment failed");
                                false
                            }
                        }
                    });
                    let _ = job.done.send(ok);
                }
            })
            .expect("spawning the flusher thread");
        Mutex::new(tx)
    })
}

/// A flush in progress: the recovery point may move to `upto` once it succeeded.
#[derive(Debug)]
pub(crate) struct FlushTicket {
    pub upto: i64,
    done: mpsc::Receiver<bool>,
}

impl FlushTicket {
    /// `Some(true)` once every file was fsynced, `Some(false)` if one failed, `None` while
    /// it runs.
    pub fn outcome(&self) -> Option<bool> {
        match self.done.try_recv() {
            Ok(ok) => Some(ok),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(false),
        }
    }
}

/// Queues an fsync of `files`; everything below `upto` is in them or already durable.
pub(crate) fn flush_in_background(files: Vec<PathBuf>, upto: i64) -> FlushTicket {
    let (done, rx) = mpsc::channel();
    let job = Job { files, done };
    // A dead flusher thread (it cannot panic short of a bug) just leaves the ticket failed.
    let _ = queue().lock().expect("flusher queue").send(job);
    FlushTicket { upto, done: rx }
}
