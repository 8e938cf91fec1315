//! Fault injection for the verification suite, process-wide and off unless something turns
//! it on (the broker does so only with `SLUICE_FAULT_INJECTION=1`: SIGUSR1 toggles the full
//! disk, SIGUSR2 the fsync stall):
//! * disk full: every segment append writes part of its batch and then fails with ENOSPC, as
//!   a full disk does; the segment cuts the partial write off again, so the log stays
//!   exactly as it was;
//! * fsync stall: every segment fsync first sleeps for the stall (a slow or saturated disk);
//! * slow recovery: a segment scanned at an unclean open takes at least its size divided by
//!   a rate (`SLUICE_FAULT_RECOVERY_BYTES_PER_S` at broker start-up), as on a slow disk, so
//!   tests can hold one partition's recovery while others open;
//! * clock jump: the storage engine's wall clock is shifted (`SLUICE_FAULT_CLOCK_OFFSET_MS`
//!   at broker start-up). Raft, leases and timeouts use monotonic clocks and are unaffected.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

static DISK_FULL: AtomicBool = AtomicBool::new(false);
static FSYNC_STALL_MS: AtomicU64 = AtomicU64::new(0);
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static RECOVERY_BYTES_PER_S: AtomicU64 = AtomicU64::new(0);

/// Makes each segment scanned at an unclean open take at least its size / `bytes_per_s`
/// (zero turns it off).
pub fn set_recovery_rate(bytes_per_s: u64) {
    RECOVERY_BYTES_PER_S.store(bytes_per_s, Ordering::SeqCst);
}

pub(crate) fn maybe_slow_recovery(bytes: u64) {
    let rate = RECOVERY_BYTES_PER_S.load(Ordering::Relaxed);
    if rate > 0 {
        std::thread::sleep(Duration::from_secs_f64(bytes as f64 / rate as f64));
    }
}

/// Shifts the storage engine's wall clock (`log::system_clock`) by `ms`: a clock jump.
pub fn set_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, Ordering::SeqCst);
}

/// The current clock offset.
pub fn clock_offset_ms() -> i64 {
    CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

/// Makes every segment fsync take at least `stall` longer (zero turns it off).
pub fn set_fsync_stall(stall: Duration) {
    FSYNC_STALL_MS.store(stall.as_millis() as u64, Ordering::SeqCst);
}

/// The current fsync stall.
pub fn fsync_stall() -> Duration {
    Duration::from_millis(FSYNC_STALL_MS.load(Ordering::Relaxed))
}

pub(crate) fn maybe_stall_fsync() {
    let ms = FSYNC_STALL_MS.load(Ordering::Relaxed);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Turns the simulated full disk on or off.
pub fn set_disk_full(on: bool) {
    DISK_FULL.store(on, Ordering::SeqCst);
}

/// Whether appends currently fail with ENOSPC.
pub fn disk_full() -> bool {
    DISK_FULL.load(Ordering::Relaxed)
}

/// The error a full disk gives.
pub(crate) fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}
