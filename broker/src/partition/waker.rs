//! [`ChangeWaker`]: one waiter told which of many partitions changed, so a fetch session
//! long-polls thousands of partitions with one task and no per-partition future.
//!
//! A partition's actor marks every registered waker when its published [`Offsets`]
//! change (HW, LEO, log start, epoch, role, or the replica closing). Registrations are
//! weak: a waker that is dropped stops being told, and its entry is pruned on the next
//! change.
//!
//! [`Offsets`]: super::Offsets

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use sluice_metadata::TopicIdPartition;
use tokio::sync::Notify;

/// The partitions that changed since the owner last looked, and a wake-up for it.
#[derive(Default)]
pub struct ChangeWaker {
    /// Changed partitions (std lock: inserts and one swap, no `.await` inside).
    changed: Mutex<HashSet<TopicIdPartition>>,
    notify: Notify,
}

impl ChangeWaker {
    /// A waker with nothing changed.
    pub fn new() -> Arc<Self> {
        Arc::new(ChangeWaker::default())
    }

    /// Marks `key` changed and wakes the owner (now, or at its next `changed().await`).
    pub fn mark(&self, key: TopicIdPartition) {
        self.changed.lock().expect("changed lock").insert(key);
        self.notify.notify_one();
    }

    /// Takes the partitions marked since the last call.
    pub fn take(&self) -> HashSet<TopicIdPartition> {
        std::mem::take(&mut *self.changed.lock().expect("changed lock"))
    }

    /// Resolves once something was marked after the last wake-up (a mark made before this
    /// call and not yet waited for resolves it at once: nothing is lost between `take` and
    /// here).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// The wakers registered with one partition.
#[derive(Default)]
pub(super) struct Listeners {
    /// Weak registrations (std lock: pushes and one pass per published change).
    wakers: Mutex<Vec<Weak<ChangeWaker>>>,
}

impl Listeners {
    /// Registers `waker` once (registering it again changes nothing).
    pub(super) fn add(&self, waker: &Arc<ChangeWaker>) {
        let mut wakers = self.wakers.lock().expect("listeners lock");
        wakers.retain(|w| w.strong_count() > 0);
        if !wakers
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waker)))
        {
            wakers.push(Arc::downgrade(waker));
        }
    }

    /// Tells every live waker that `key` changed; drops the dead ones.
    pub(super) fn mark(&self, key: TopicIdPartition) {
        let mut wakers = self.wakers.lock().expect("listeners lock");
        wakers.retain(|w| match w.upgrade() {
            Some(w) => {
                w.mark(key);
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::TopicId;

    fn key(i: i32) -> TopicIdPartition {
        TopicIdPartition::new(TopicId([7; 16]), i)
    }

    #[tokio::test]
    async fn a_mark_before_the_wait_is_not_lost() {
        let w = ChangeWaker::new();
        let l = Listeners::default();
        l.add(&w);
        l.add(&w);
        l.mark(key(1));
        l.mark(key(2));
        tokio::time::timeout(std::time::Duration::from_secs(5), w.changed())
            .await
            .expect("woken");
        assert_eq!(w.take(), HashSet::from([key(1), key(2)]));
        assert!(w.take().is_empty());
    }

    #[test]
    fn dropped_wakers_are_pruned() {
        let l = Listeners::default();
        let w = ChangeWaker::new();
        l.add(&w);
        drop(w);
        l.mark(key(0));
        assert!(l.wakers.lock().unwrap().is_empty());
    }
}
