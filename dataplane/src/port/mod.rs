//! Ports: where frames enter and leave the switch.
//!
//! This module owns the [`Port`] trait every port type implements, the per-port counters
//! ([`PortStats`]), the transmit verdict ([`TxVerdict`]) and the port error type
//! ([`PortError`]). The port types live in submodules: AF_XDP sockets ([`afxdp`]), TAP devices
//! that give the host stack a port ([`tap`]), pcap files ([`pcap`]) and in-memory queues for
//! tests ([`memory`]).
//!
//! A port moves bytes and counts them; it must not parse, switch or rewrite frames (that is the
//! pipeline's job), and it must never panic or allocate per frame on the receive or transmit
//! path.
//!
//! # Receive model
//!
//! [`Port::rx_burst`] receives up to [`RX_BATCH`] frames and hands them to a callback as one
//! mutable slice of [`Frame`]s that borrow the port's own buffers (for AF_XDP, the UMEM chunks
//! the kernel wrote into), each with at least [`HEADROOM`] bytes in front so VLAN pushes and
//! encapsulation grow in place. The callback runs the pipeline and transmits the results on
//! *other* ports with [`Port::tx`]; when it returns, the buffers go back to the port (for
//! AF_XDP, straight back onto the fill ring). A frame destined to the port it came from must be
//! copied out by the caller and sent after `rx_burst` returns, because the burst holds the
//! port's exclusive borrow.
//!
//! # Transmit model
//!
//! [`Port::tx`] copies one frame into the port's transmit buffers and queues it;
//! [`Port::flush`] hands everything queued to the kernel with at most one system call. Callers
//! flush once per burst, not per frame.

pub mod afxdp;
pub mod link;
pub mod memory;
pub mod pcap;
pub mod tap;

use arrayvec::ArrayVec;
use pipeline::wire::Frame;
use std::os::fd::RawFd;

/// Frames per receive burst.
pub const RX_BATCH: usize = pipeline::BATCH_SIZE;

/// Bytes reserved in front of every received frame for headers the pipeline pushes.
pub const HEADROOM: usize = 256;

/// Size of one frame buffer (an AF_XDP UMEM chunk, or a heap buffer for the other ports).
pub const FRAME_SIZE: usize = 4096;

/// Largest frame a port receives into one buffer, and the transmit limit of every port but a
/// multi-buffer AF_XDP one (whose limit follows its MTU).
pub const MAX_FRAME_LEN: usize = FRAME_SIZE - HEADROOM;

/// The frames of one receive burst, borrowed from the port's buffers.
pub type RxFrames<'a> = ArrayVec<Frame<'a>, RX_BATCH>;

/// What happened to a frame handed to [`Port::tx`]. Every verdict but `Queued` is also counted
/// in the port's [`PortStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxVerdict {
    /// Copied into a transmit buffer; it leaves on the next [`Port::flush`].
    Queued,
    /// No free transmit buffer or ring slot: the frame was dropped.
    RingFull,
    /// Longer than the port can carry in one buffer: dropped.
    TooBig,
    /// The device refused it (down, gone): dropped.
    DeviceError,
}

/// Counters of one port. Drops are split by reason so a benchmark or an operator can tell a
/// slow consumer from a misconfiguration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped by the kernel before we saw them: no free buffer from the fill ring, or the
    /// receive ring was full (AF_XDP `XDP_STATISTICS`, each drop counted once).
    pub rx_dropped: u64,
    /// Of the kernel's receive drops, those for want of a buffer on the fill ring (the port did
    /// not give chunks back fast enough) and those for a full receive ring (the thread did not
    /// read fast enough). AF_XDP only; they may not add up to `rx_dropped` in generic mode,
    /// where the kernel counts some drops in neither.
    pub rx_fill_empty: u64,
    pub rx_ring_full: u64,
    /// Receive descriptors the port rejected (outside the UMEM or longer than a chunk; for
    /// multi-buffer frames, one per chain dropped whole), plus the kernel's own
    /// invalid-descriptor counts for both rings.
    pub invalid_descs: u64,
    /// Transmit drops: no free buffer or ring slot.
    pub tx_ring_full: u64,
    /// Transmit drops: frame longer than the port carries ([`MAX_FRAME_LEN`], or MTU + 18 for
    /// an AF_XDP port with a configured MTU).
    pub tx_too_big: u64,
    /// Transmit drops: the device refused the frame.
    pub tx_errors: u64,
}

impl PortStats {
    /// All transmit drops, whatever the reason.
    pub fn tx_dropped(&self) -> u64 {
        self.tx_ring_full + self.tx_too_big + self.tx_errors
    }

    /// Counts a transmit verdict.
    #[inline]
    pub fn count_tx(&mut self, verdict: TxVerdict, len: usize) {
        match verdict {
            TxVerdict::Queued => {
                self.tx_packets += 1;
                self.tx_bytes += len as u64;
            }
            TxVerdict::RingFull => self.tx_ring_full += 1,
            TxVerdict::TooBig => self.tx_too_big += 1,
            TxVerdict::DeviceError => self.tx_errors += 1,
        }
    }
}

/// Errors opening or configuring a port (never raised on the packet path).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("interface {0:?} not found")]
    NoSuchInterface(String),
    #[error("invalid port configuration: {0}")]
    Config(String),
    #[error("{what} failed on {port}: {source}")]
    Os {
        port: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("pcap file {path}: {source}")]
    Pcap {
        path: String,
        source: crate::pcap::PcapError,
    },
}

impl PortError {
    pub(crate) fn os(port: &str, what: &'static str, source: std::io::Error) -> PortError {
        PortError::Os {
            port: port.to_string(),
            what,
            source,
        }
    }
}

/// A switch port. See the module documentation for the receive and transmit model.
pub trait Port: Send {
    /// The port's name (interface name, file name, or the name given at creation).
    fn name(&self) -> &str;

    /// Receives up to [`RX_BATCH`] frames and, if there were any, calls `f` once with all of
    /// them. Returns how many frames were received. Never blocks.
    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize;

    /// Copies `frame` into a transmit buffer and queues it for the next [`flush`](Self::flush).
    fn tx(&mut self, frame: &[u8]) -> TxVerdict;

    /// Hands queued frames to the device (one system call at most) and reclaims buffers the
    /// device has finished with.
    fn flush(&mut self);

    /// File descriptors that become readable when frames are waiting, for sleeping in
    /// interrupt mode. Empty for ports that never block (memory, pcap).
    fn poll_fds(&self) -> Vec<RawFd>;

    /// The port's counters.
    fn stats(&self) -> PortStats;

    /// Where the port's UMEM chunks are, for ports that have a UMEM (AF_XDP).
    fn umem_account(&self) -> Option<afxdp::UmemAccount> {
        None
    }
}

/// Heap frame buffers for the ports that copy frames in (TAP, pcap, memory): [`RX_BATCH`]
/// buffers of [`FRAME_SIZE`] bytes, each received frame placed at [`HEADROOM`].
pub(crate) struct HeapBufs {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; RX_BATCH],
    count: usize,
}

impl HeapBufs {
    pub(crate) fn new() -> HeapBufs {
        HeapBufs {
            bufs: (0..RX_BATCH)
                .map(|_| vec![0u8; FRAME_SIZE].into_boxed_slice())
                .collect(),
            lens: [0; RX_BATCH],
            count: 0,
        }
    }

    /// The receive area of the next free buffer, or `None` when the batch is full.
    pub(crate) fn next_slot(&mut self) -> Option<&mut [u8]> {
        let buf = self.bufs.get_mut(self.count)?;
        buf.get_mut(HEADROOM..)
    }

    /// Marks the slot returned by the last `next_slot` as holding `len` bytes.
    pub(crate) fn commit(&mut self, len: usize) {
        if let Some(l) = self.lens.get_mut(self.count) {
            *l = len.min(MAX_FRAME_LEN);
            self.count += 1;
        }
    }

    /// Hands the filled buffers to `f` as frames and empties the batch.
    pub(crate) fn deliver(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        let n = self.count;
        self.count = 0;
        if n == 0 {
            return 0;
        }
        let mut frames = RxFrames::new();
        for (buf, &len) in self.bufs.iter_mut().zip(self.lens.iter()).take(n) {
            frames.push(Frame::new(buf, HEADROOM, len));
        }
        f(&mut frames);
        n
    }
}
