//! The shard lock: one locked instruction to take, a plain store to release.
//!
//! This module owns the raw lock behind each shard of the connection table and nothing else.
//! An established frame takes a shard lock twice (the batch's record-prefetch pass, then the
//! lookup), and a mutex whose release is itself a locked read-modify-write (as it must be when
//! the release has to see whether anyone sleeps on the lock) puts four full barriers in every
//! frame. On x86 each of them waits for the frame's outstanding loads, which is what the batch's
//! prefetches are for; measured over 100,000 connections the four cost far more than their
//! instruction count (README, "What the four locked instructions per frame cost").
//!
//! Here a release is a store with release ordering, a plain `mov` on x86, so it cannot look for
//! sleepers, and there are none to look for: a waiter that finds the lock held spins for a
//! while, then yields, then sleeps in short naps, checking again after each. Nobody has to wake
//! it, so no wakeup can be lost. The naps bound what a waiter costs the CPU when the holder was
//! preempted (a datapath thread with a real-time policy spinning forever on a lock held by a
//! preempted thread of lower priority on the same CPU would never let it run), and what they
//! cost a waiter is latency only in that rare case: shard hold times are short and bounded
//! (a lookup, a commit, a sweep slice of a fixed budget, a dump or flush slice).
//!
//! It must not be used where hold times are long or unbounded; the lock is unfair, and a
//! napping waiter may wake up to a millisecond late.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Rounds of `spin_loop` before a waiter starts yielding: from one to about ten microseconds,
/// depending on how long the CPU's pause instruction waits; longer than a lookup or a commit
/// holds a shard.
const SPINS: u32 = 1 << 8;
/// Yields before a waiter starts napping.
const YIELDS: u32 = 16;
/// The first nap, doubled up to [`NAP_MAX`] while the lock stays held.
const NAP_MIN: Duration = Duration::from_micros(2);
const NAP_MAX: Duration = Duration::from_micros(500);

/// A mutual-exclusion lock whose release is a plain store (see the module docs).
pub struct RawShardLock {
    locked: AtomicBool,
}

impl RawShardLock {
    #[inline]
    fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut waited = 0u32;
        let mut nap = NAP_MIN;
        loop {
            // Wait on a shared read of the line, not a locked write, so waiting does not
            // take the line away from the holder.
            while self.locked.load(Ordering::Relaxed) {
                if waited < SPINS {
                    std::hint::spin_loop();
                } else if waited < SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(NAP_MAX);
                }
                waited = waited.saturating_add(1);
            }
            if self.try_acquire() {
                return;
            }
        }
    }
}

// SAFETY: `lock` and `try_lock` return only after a compare-exchange from unlocked to locked
// succeeded, so at most one holder exists at a time; that exchange is an acquire and `unlock`'s
// store a release, so everything the last holder wrote under the lock is visible to the next.
// `unlock` is only called by lock_api's guard, which exists only while its lock is held.
#[allow(unsafe_code)]
unsafe impl lock_api::RawMutex for RawShardLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawShardLock {
        locked: AtomicBool::new(false),
    };
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if !self.try_acquire() {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// A value behind a [`RawShardLock`].
pub type ShardMutex<T> = lock_api::Mutex<RawShardLock, T>;
/// A held [`ShardMutex`].
pub type ShardMutexGuard<'a, T> = lock_api::MutexGuard<'a, RawShardLock, T>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Many threads adding through the lock, with a read and a separate write per add, lose no
    /// update: the lock excludes and its release publishes. A lock that let two holders in (or
    /// a release that did not order the write before it) loses adds here within a few runs.
    #[test]
    fn excludes_and_publishes_under_contention() {
        const THREADS: usize = 4;
        const ADDS: u64 = 200_000;
        let m = Arc::new(ShardMutex::new((0u64, 0u64)));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..ADDS {
                        let mut g = m.lock();
                        let a = g.0;
                        std::hint::black_box(&mut *g);
                        g.0 = a + 1;
                        g.1 = g.0;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let g = m.lock();
        assert_eq!(*g, (THREADS as u64 * ADDS, THREADS as u64 * ADDS));
    }

    /// A waiter whose holder keeps the lock past the spinning and yielding phases still gets
    /// it once released (the napping phase polls; nothing has to wake it).
    #[test]
    fn a_waiter_outlasts_a_long_hold() {
        let m = Arc::new(ShardMutex::new(0u32));
        let g = m.lock();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                *m.lock() += 1;
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(m.is_locked());
        drop(g);
        waiter.join().unwrap();
        assert_eq!(*m.lock(), 1);
        assert!(m.try_lock().is_some());
    }
}
