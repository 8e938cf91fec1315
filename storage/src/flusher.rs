//! Fsyncs of rolled segments off the partition's thread (Kafka schedules the same
//! `flush-log` task when a segment rolls): one process-wide thread takes a closed segment's
//! files, fsyncs them and reports back; the owner then moves the log's recovery point to
//! the new segment's base, so an unclean restart scans only what came after it instead of
//! every segment since the last explicit flush. The fsync waits [`set_roll_flush_delay`]
//! (30 s) first, so it does not force a whole segment to disk at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a roll the fsync starts (default 30 s, the kernel's
/// `vm.dirty_expire_centisecs`): by then the kernel's own writeback has written most of the
/// closed segment, so the fsync finds little left. Fsyncing a 1 GiB segment at once forced
/// all of it to disk while the partition kept appending and stalled acks=1 produce for
/// 250-540 ms at p99.9 in `sluice bench consume` (ext4); the cost is a recovery point that
/// trails the roll by this much.
static DELAY_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets the delay between a roll and its background fsync (tests and `sluice bench
/// recovery` use zero).
pub fn set_roll_flush_delay(delay: Duration) {
    DELAY_MS.store(delay.as_millis() as u64, Ordering::SeqCst);
}

/// Called on the flusher thread once a rolled segment's fsync is done (whatever its
/// outcome), so the log's owner can move the recovery point without waiting for its next
/// append: an idle partition would otherwise keep its last roll unflushed-looking until
/// then, and a crash would rescan that whole segment.
pub type RollFlushNotify = std::sync::Arc<dyn Fn() + Send + Sync>;

struct Job {
    files: Vec<PathBuf>,
    not_before: Instant,
    done: mpsc::Sender<bool>,
    notify: Option<RollFlushNotify>,
}

fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sluice-flusher".into())
            .spawn(move || {
                for job in rx {
                    // Jobs share one delay, so waiting for each in turn keeps their order.
                    let wait = job.not_before.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    let ok = job.files.iter().all(|f| {
                        crate::fault::maybe_stall_fsync();
                        match std::fs::File::open(f).and_then(|h| h.sync_data()) {
                            Ok(()) => true,
                            // Deleted by retention meanwhile: its data needs no durability.
                            // (A truncation drops its log's tickets before they are read.)
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                            Err(e) => {
                                // A disk error: the recovery point stays where it was,
                                // which only means a longer scan after a crash.
                                tracing::debug!(file = %f.display(), error = %e,
                                    "background fsync of a rolled segment failed");
                                false
                            }
                        }
                    });
                    let _ = job.done.send(ok);
                    if let Some(notify) = &job.notify {
                        notify();
                    }
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
/// `notify` is called once it is done.
pub(crate) fn flush_in_background(
    files: Vec<PathBuf>,
    upto: i64,
    notify: Option<RollFlushNotify>,
) -> FlushTicket {
    let (done, rx) = mpsc::channel();
    let delay = Duration::from_millis(DELAY_MS.load(Ordering::Relaxed));
    let job = Job {
        files,
        not_before: Instant::now() + delay,
        done,
        notify,
    };
    // A dead flusher thread (it cannot panic short of a bug) just leaves the ticket failed.
    let _ = queue().lock().expect("flusher queue").send(job);
    FlushTicket { upto, done: rx }
}
