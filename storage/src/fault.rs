//! Fault injection for the verification suite: a process-wide "disk full" switch. When on,
//! every segment append writes part of its batch and then fails with ENOSPC, as a full disk
//! does; the segment cuts the partial write off again, so the log stays exactly as it was.
//! Off unless something turns it on (the broker does so only with
//! `SLUICE_FAULT_INJECTION=1`, on SIGUSR1).

use std::sync::atomic::{AtomicBool, Ordering};

static DISK_FULL: AtomicBool = AtomicBool::new(false);

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
