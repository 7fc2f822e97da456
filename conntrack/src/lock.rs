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
//! (a lookup, a commit, a slice of a sweep, dump or flush).
//!
//! The lock is unfair: a thread that releases it and takes it again at once (a control-plane
//! walk going from one slice of a shard to the next) nearly always wins against a waiter, which
//! only sees the lock free if it looks in that instant. So waiters count themselves, in their
//! slow path only, and such a walker calls [`let_waiters_in`] between its slices: it waits
//! until no thread is waiting, a millisecond at most, so the waiters get their turn first. The
//! datapath's fast path (take, release) never touches the count.
//!
//! It must not be used where hold times are long or unbounded; a napping waiter may wake up to
//! a nap (100 µs at most) late.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Rounds of `spin_loop` before a waiter starts yielding: from one to about ten microseconds,
/// depending on how long the CPU's pause instruction waits; longer than a lookup or a commit
/// holds a shard.
const SPINS: u32 = 1 << 8;
/// Yields before a waiter starts napping.
const YIELDS: u32 = 16;
/// The first nap, doubled up to [`NAP_MAX`] while the lock stays held.
const NAP_MIN: Duration = Duration::from_micros(2);
const NAP_MAX: Duration = Duration::from_micros(100);
/// Naps [`let_waiters_in`] takes at most (doubling from [`NAP_MIN`] to [`NAP_MAX`], about a
/// millisecond in all): several of a napping waiter's longest naps, so a walker gives way to
/// every waiter but cannot be held up for longer by a stream of them. Counted, not timed: the
/// crate reads no clock.
const LET_IN_NAPS: u32 = 16;

/// A mutual-exclusion lock whose release is a plain store (see the module docs).
pub struct RawShardLock {
    locked: AtomicBool,
    /// Threads in [`RawShardLock::lock_contended`]: counted on the slow path only.
    waiting: AtomicU32,
}

impl RawShardLock {
    /// One attempt to take the lock. A strong exchange: `try_lock` must not fail spuriously,
    /// and on x86 a weak one is the same instruction.
    #[inline]
    fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
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
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// For a thread that has just released `m` and is about to take it again (a walk's next
/// slice): returns once no thread is waiting for `m`, or after about a millisecond. Spins
/// briefly, then naps, as the waiters it lets in may be napping themselves.
pub fn let_waiters_in<T>(m: &ShardMutex<T>) {
    let_waiters_in_within(m, LET_IN_NAPS);
}

fn let_waiters_in_within<T>(m: &ShardMutex<T>, max_naps: u32) {
    let (mut spins, mut naps) = (0u32, 0u32);
    let mut nap = NAP_MIN;
    while waiters(m) != 0 {
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
        } else if naps < max_naps {
            naps += 1;
            std::thread::sleep(nap);
            nap = (nap * 2).min(NAP_MAX);
        } else {
            return;
        }
    }
}

/// Threads waiting for `m` on its slow path, as of this read.
fn waiters<T>(m: &ShardMutex<T>) -> u32 {
    // SAFETY: `raw` is unsafe because the lock could be released through it by a thread that
    // does not hold it; this only reads the waiter count.
    #[allow(unsafe_code)]
    let raw = unsafe { m.raw() };
    raw.waiting.load(Ordering::Relaxed)
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
        waiting: AtomicU32::new(0),
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
        self.try_acquire()
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

    /// A walker that releases the lock and takes it again at once goes after the thread that
    /// was waiting, when it lets waiters in between (here without a bound on its wait, so the
    /// order does not depend on the host's timing); without that it nearly always goes first.
    #[test]
    fn a_walker_lets_a_waiting_thread_in_between_slices() {
        let m = Arc::new(ShardMutex::new(Vec::new()));
        let g = m.lock();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.lock().push("waiter"))
        };
        while waiters(&m) == 0 {
            std::thread::yield_now();
        }
        drop(g);
        let_waiters_in_within(&m, u32::MAX);
        m.lock().push("walker");
        waiter.join().unwrap();
        assert_eq!(*m.lock(), ["waiter", "walker"]);
        assert_eq!(waiters(&m), 0);
    }
}
