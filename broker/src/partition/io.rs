//! The threads that run partitions' disk work: a fixed pool (`num.io.threads`, Kafka's
//! name and default of 8), each partition pinned to one thread so its work runs in order.
//!
//! Why not `spawn_blocking`: handing one 16 KiB append to tokio's blocking pool and back
//! costs ~39 µs here against ~17 µs for a thread that waits on its own queue, and ~10 µs
//! inline (`cargo bench -p sluice-broker --bench handoff`, docs/architecture.md §3); a
//! pinned thread also keeps a partition's work on one core's cache. Why not a thread per
//! partition: tens of thousands of partitions (issue 14). The price of pinning: a partition
//! whose fsync stalls delays the others pinned to its thread, not the rest.

use std::sync::Arc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of I/O threads.
pub struct IoPool {
    /// One queue per thread. Unbounded here: each partition bounds its own jobs (at most
    /// `PARTITION_COMMANDS_QUEUED_MAX` commands and one role change queued).
    queues: Vec<std::sync::mpsc::Sender<Job>>,
}

/// A job that did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The pool is gone (the process is stopping).
    #[error("the I/O threads have stopped")]
    Stopped,
    /// The job panicked (a broken invariant); the thread lives on.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl IoPool {
    /// Starts `threads` (at least 1) threads named `sluice-io-N`.
    pub fn new(threads: usize) -> Arc<Self> {
        let queues = (0..threads.max(1))
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("sluice-io-{i}"))
                    .spawn(move || {
                        // Runs until every sender is gone.
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .expect("spawning an I/O thread");
                tx
            })
            .collect();
        Arc::new(IoPool { queues })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.queues.len()
    }

    /// Runs `f` on the thread `key` is pinned to and waits for its result. Jobs of one key
    /// run in submission order.
    pub async fn run<T: Send + 'static>(
        &self,
        key: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IoError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        self.queues[(key % self.queues.len() as u64) as usize]
            .send(job)
            .map_err(|_| IoError::Stopped)?;
        match rx.await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(panic)) => Err(IoError::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into()),
            )),
            Err(_) => Err(IoError::Stopped),
        }
    }
}

impl IoPool {
    /// Queues `f` on the thread `key` is pinned to without waiting for it (jobs of one key
    /// run in submission order). A panic in `f` is caught and logged; the thread lives on.
    pub fn submit(&self, key: u64, f: impl FnOnce() + Send + 'static) -> Result<(), IoError> {
        let job: Job = Box::new(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                tracing::error!(panic = %what, "an I/O job panicked");
            }
        });
        self.queues[(key % self.queues.len() as u64) as usize]
            .send(job)
            .map_err(|_| IoError::Stopped)
    }
}

/// The pool every partition of this process uses, started with [`init`] (8 threads if
/// nothing called it first).
pub fn pool() -> &'static Arc<IoPool> {
    POOL.get_or_init(|| IoPool::new(IO_THREADS_DEFAULT))
}

/// Sets the number of I/O threads; only the first call (before any partition opens) counts.
pub fn init(threads: usize) {
    let _ = POOL.set(IoPool::new(threads));
}

/// Kafka's `num.io.threads` default.
pub const IO_THREADS_DEFAULT: usize = 8;

static POOL: std::sync::OnceLock<Arc<IoPool>> = std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_of_one_key_run_in_order_on_one_thread() {
        let pool = IoPool::new(3);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut runs = Vec::new();
        for i in 0..50 {
            let seen = seen.clone();
            runs.push(pool.run(7, move || {
                seen.lock()
                    .unwrap()
                    .push((i, std::thread::current().name().map(String::from)));
            }));
        }
        // Submitted together (each future sends its job when first polled, in order).
        for r in futures::future::join_all(runs).await {
            r.unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|s| s.1 == seen[0].1), "one thread per key");
        assert_eq!(pool.run(1, || 41 + 1).await, Ok(42));
        // A panicking job is reported and its thread keeps serving.
        let r = pool.run(7, || -> i32 { panic!("broken invariant") }).await;
        assert_eq!(r, Err(IoError::Panicked("broken invariant".into())));
        assert_eq!(pool.run(7, || 1).await, Ok(1));
    }
}
