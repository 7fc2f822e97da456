//! Port wrappers the daemon puts between a datapath and its ports: frame capture, and
//! transmission to ports that another datapath thread owns.
//!
//! A [`Datapath`](crate::datapath::Datapath) indexes its ports by datapath port number and
//! transmits on any of them. With several threads, each port is owned (received from and
//! transmitted on) by exactly one thread; the other threads hold a [`ProxyPort`] in its slot,
//! which queues copies of the frames for the owner, whose [`HookedPort`] sends them on its next
//! flush. A [`CaptureSlot`] per port mirrors frames received or sent while a capture is active;
//! when none is, the cost is one relaxed atomic load per burst or per transmitted frame.
//!
//! This module owns those wrappers and the capture buffers; it must not switch frames.

use crate::port::{Port, PortStats, RxFrames, TxVerdict};
use crossbeam::queue::ArrayQueue;
use mio::Waker;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Frames queued from other threads to one port before transmissions are refused.
pub const INBOX_CAPACITY: usize = 4096;

/// One captured frame with its wall-clock timestamp.
pub struct Captured {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub data: Vec<u8>,
}

/// The capture state of one port.
#[derive(Default)]
pub struct CaptureSlot {
    active: AtomicBool,
    /// Frames still wanted (copying stops at zero).
    remaining: AtomicUsize,
    frames: Mutex<Vec<Captured>>,
}

impl CaptureSlot {
    /// Starts capturing up to `max` frames, discarding anything captured before.
    pub fn start(&self, max: usize) {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.remaining.store(max, Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
    }

    /// Stops capturing and returns what was captured.
    pub fn stop(&self) -> Vec<Captured> {
        self.active.store(false, Ordering::Release);
        std::mem::take(&mut *self.frames.lock().unwrap_or_else(|e| e.into_inner()))
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Frames captured so far.
    pub fn count(&self) -> usize {
        self.frames.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Copies `frame` if the capture still wants frames.
    pub fn record(&self, frame: &[u8]) {
        let taken = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if taken.is_err() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                ts_sec: now.as_secs() as u32,
                ts_usec: now.subsec_micros(),
                data: frame.to_vec(),
            });
    }
}

/// Frames other threads want sent on a port, and how to wake its owner.
pub struct Inbox {
    pub queue: ArrayQueue<Vec<u8>>,
    /// The owner thread's waker in interrupt mode.
    pub waker: Option<Arc<Waker>>,
}

impl Inbox {
    pub fn new(waker: Option<Arc<Waker>>) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(INBOX_CAPACITY),
            waker,
        }
    }
}

/// A port as its owning thread holds it.
pub struct HookedPort {
    pub inner: Box<dyn Port>,
    pub capture: Arc<CaptureSlot>,
    pub inbox: Arc<Inbox>,
    /// Frames from other threads refused by the port itself.
    inbox_refused: u64,
}

impl HookedPort {
    pub fn new(inner: Box<dyn Port>, capture: Arc<CaptureSlot>, inbox: Arc<Inbox>) -> Self {
        HookedPort {
            inner,
            capture,
            inbox,
            inbox_refused: 0,
        }
    }
}

impl Port for HookedPort {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        if !self.capture.active() {
            return self.inner.rx_burst(f);
        }
        let cap = &self.capture;
        self.inner.rx_burst(&mut |frames: &mut RxFrames<'_>| {
            for fr in frames.iter() {
                cap.record(fr.data());
            }
            f(frames)
        })
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        if self.capture.active() {
            self.capture.record(frame);
        }
        self.inner.tx(frame)
    }

    fn flush(&mut self) {
        // Almost always empty. Asking first costs two plain loads; a `pop` that finds nothing
        // issues a full fence (perf: 4-5% of a polling thread, two ports flushed per poll).
        if !self.inbox.queue.is_empty() {
            while let Some(frame) = self.inbox.queue.pop() {
                if self.tx(&frame) != TxVerdict::Queued {
                    self.inbox_refused += 1;
                }
            }
        }
        self.inner.flush();
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        self.inner.poll_fds()
    }

    fn stats(&self) -> PortStats {
        self.inner.stats()
    }

    fn umem_account(&self) -> Option<crate::port::afxdp::UmemAccount> {
        self.inner.umem_account()
    }
}

/// The slot of a port another thread owns: transmissions are queued for the owner.
pub struct ProxyPort {
    name: String,
    inbox: Arc<Inbox>,
    pushed: bool,
}

impl ProxyPort {
    pub fn new(name: &str, inbox: Arc<Inbox>) -> Self {
        ProxyPort {
            name: name.to_string(),
            inbox,
            pushed: false,
        }
    }
}

impl Port for ProxyPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, _f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        0
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        // A copy per frame: crossing threads is the slow path of a multi-thread datapath.
        match self.inbox.queue.push(frame.to_vec()) {
            Ok(()) => {
                self.pushed = true;
                TxVerdict::Queued
            }
            Err(_) => TxVerdict::RingFull,
        }
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.pushed) {
            if let Some(w) = &self.inbox.waker {
                let _ = w.wake();
            }
        }
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::MemoryPort;

    #[test]
    fn capture_copies_only_while_active_and_up_to_the_limit() {
        let (p, h) = MemoryPort::new("m");
        let cap = Arc::new(CaptureSlot::default());
        let mut hp = HookedPort::new(Box::new(p), cap.clone(), Arc::new(Inbox::new(None)));
        hp.tx(&[1; 60]);
        cap.start(2);
        h.inject(&[2; 60]);
        assert_eq!(hp.rx_burst(&mut |_| {}), 1);
        hp.tx(&[3; 60]);
        hp.tx(&[4; 60]);
        let got = cap.stop();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, vec![2; 60]);
        assert_eq!(got[1].data, vec![3; 60]);
        hp.tx(&[5; 60]);
        assert_eq!(cap.count(), 0);
    }

    #[test]
    fn proxies_hand_frames_to_the_owner() {
        let (p, h) = MemoryPort::new("m");
        let inbox = Arc::new(Inbox::new(None));
        let mut owner =
            HookedPort::new(Box::new(p), Arc::new(CaptureSlot::default()), inbox.clone());
        let mut proxy = ProxyPort::new("m", inbox);
        assert_eq!(proxy.tx(&[7; 64]), TxVerdict::Queued);
        proxy.flush();
        assert!(h.take_transmitted().is_empty());
        owner.flush();
        assert_eq!(h.take_transmitted(), vec![vec![7; 64]]);
    }
}
