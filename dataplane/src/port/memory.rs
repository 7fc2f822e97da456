//! In-memory port for tests and benchmarks: frames are injected through a [`MemoryHandle`] and
//! everything the switch transmits is collected there.
//!
//! Owns two queues shared with its handle; it must not be used where real I/O is expected (it
//! never blocks and has no file descriptor).

use super::{HeapBufs, Port, PortStats, RxFrames, TxVerdict, MAX_FRAME_LEN};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Queues {
    to_rx: VecDeque<Vec<u8>>,
    transmitted: Vec<Vec<u8>>,
}

/// The test's side of a [`MemoryPort`].
#[derive(Clone)]
pub struct MemoryHandle {
    q: Arc<Mutex<Queues>>,
}

impl MemoryHandle {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panicking test thread must not hide the frames from the others.
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame to be received by the port.
    pub fn inject(&self, frame: &[u8]) {
        self.lock().to_rx.push_back(frame.to_vec());
    }

    /// Takes every frame transmitted (and flushed) so far.
    pub fn take_transmitted(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().transmitted)
    }

    /// Frames injected but not yet received.
    pub fn pending_rx(&self) -> usize {
        self.lock().to_rx.len()
    }
}

/// A port backed by in-memory queues.
pub struct MemoryPort {
    name: String,
    q: Arc<Mutex<Queues>>,
    bufs: HeapBufs,
    /// Frames transmitted but not yet flushed, as a real port would hold them in its ring.
    queued: Vec<Vec<u8>>,
    /// Transmit capacity between flushes; beyond it `tx` reports `RingFull`.
    tx_capacity: usize,
    stats: PortStats,
}

impl MemoryPort {
    /// A port named `name` and the handle that feeds and drains it.
    pub fn new(name: &str) -> (MemoryPort, MemoryHandle) {
        Self::with_tx_capacity(name, 2048)
    }

    /// As [`new`](Self::new), with at most `tx_capacity` frames queued between flushes.
    pub fn with_tx_capacity(name: &str, tx_capacity: usize) -> (MemoryPort, MemoryHandle) {
        let q = Arc::new(Mutex::new(Queues::default()));
        let port = MemoryPort {
            name: name.to_string(),
            q: q.clone(),
            bufs: HeapBufs::new(),
            queued: Vec::new(),
            tx_capacity,
            stats: PortStats::default(),
        };
        (port, MemoryHandle { q })
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        {
            let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(slot) = self.bufs.next_slot() {
                let Some(frame) = q.to_rx.pop_front() else {
                    break;
                };
                if frame.len() > slot.len() {
                    // A real device could not have delivered it either.
                    self.stats.rx_dropped += 1;
                    continue;
                }
                slot[..frame.len()].copy_from_slice(&frame);
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += frame.len() as u64;
                self.bufs.commit(frame.len());
            }
        }
        self.bufs.deliver(f)
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        let v = if frame.len() > MAX_FRAME_LEN {
            TxVerdict::TooBig
        } else if self.queued.len() >= self.tx_capacity {
            TxVerdict::RingFull
        } else {
            self.queued.push(frame.to_vec());
            TxVerdict::Queued
        };
        self.stats.count_tx(v, frame.len());
        v
    }

    fn flush(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        q.transmitted.append(&mut self.queued);
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{HEADROOM, RX_BATCH};

    #[test]
    fn injected_frames_arrive_in_batches_with_headroom() {
        let (mut port, h) = MemoryPort::new("m0");
        for i in 0..(RX_BATCH + 3) {
            h.inject(&[i as u8; 64]);
        }
        let mut seen = Vec::new();
        let n = port.rx_burst(&mut |frames| {
            for f in frames.iter_mut() {
                assert!(f.headroom() >= HEADROOM);
                // Pushing a VLAN tag fits in place.
                f.insert_gap(12, 4).unwrap();
                seen.push(f.data()[0]);
            }
        });
        assert_eq!(n, RX_BATCH);
        assert_eq!(seen, (0..RX_BATCH as u8).collect::<Vec<_>>());
        assert_eq!(h.pending_rx(), 3);
        assert_eq!(port.rx_burst(&mut |frames| assert_eq!(frames.len(), 3)), 3);
        assert_eq!(port.rx_burst(&mut |_| panic!("no frames left")), 0);
        let s = port.stats();
        assert_eq!(s.rx_packets, RX_BATCH as u64 + 3);
        assert_eq!(s.rx_bytes, 64 * (RX_BATCH as u64 + 3));
    }

    #[test]
    fn transmitted_frames_appear_after_flush_and_overflow_is_counted() {
        let (mut port, h) = MemoryPort::with_tx_capacity("m1", 2);
        assert_eq!(port.tx(&[1, 2, 3]), TxVerdict::Queued);
        assert_eq!(port.tx(&[4]), TxVerdict::Queued);
        assert_eq!(port.tx(&[5]), TxVerdict::RingFull);
        assert_eq!(port.tx(&vec![0; MAX_FRAME_LEN + 1]), TxVerdict::TooBig);
        assert!(h.take_transmitted().is_empty());
        port.flush();
        assert_eq!(h.take_transmitted(), vec![vec![1, 2, 3], vec![4]]);
        let s = port.stats();
        assert_eq!((s.tx_packets, s.tx_bytes), (2, 4));
        assert_eq!((s.tx_ring_full, s.tx_too_big, s.tx_dropped()), (1, 1, 2));
        // Capacity frees up again once flushed.
        assert_eq!(port.tx(&[6]), TxVerdict::Queued);
    }

    #[test]
    fn oversized_injected_frame_is_dropped_not_truncated() {
        let (mut port, h) = MemoryPort::new("m2");
        h.inject(&vec![0; MAX_FRAME_LEN + 1]);
        h.inject(&[9; 60]);
        let mut lens = Vec::new();
        port.rx_burst(&mut |fr| lens.extend(fr.iter().map(|f| f.len())));
        assert_eq!(lens, vec![60]);
        assert_eq!(port.stats().rx_dropped, 1);
    }
}
