//! AF_XDP port: one XDP socket per configured queue of a network interface, each with its own
//! UMEM, driven through libxdp.
//!
//! This module owns the UMEM memory, the four rings of every socket, the chunk bookkeeping that
//! makes handing UMEM memory out as `&mut [u8]` sound, the XDP attach-mode and zero-copy
//! fallbacks, and removal of XDP programs a killed process left on an interface. It must not
//! interpret frames. It is the one module of the crate allowed unsafe code (besides the TAP
//! ioctl); every unsafe block says why it is sound.
//!
//! # Why libxdp directly and not xsk-rs
//!
//! xsk-rs 0.11 hands out frame descriptors whose address the caller cannot set and exposes a
//! chunk as two disjoint slices (user headroom, packet data) with the kernel's 256-byte XDP
//! headroom in between unreachable. The pipeline's [`Frame`] needs one slice spanning headroom
//! and packet so VLAN pushes and encapsulation grow in place, and a frame whose start moved must
//! be transmittable from its new start. Driving the rings of the same vendored libxdp ourselves
//! gives both, with no per-packet copy or memmove on receive.
//!
//! # Memory layout
//!
//! Each queue's UMEM is `frame_count` chunks of [`FRAME_SIZE`] bytes (aligned mode). The first
//! half of the chunks receive (they cycle between the fill ring, the kernel and the rx ring),
//! the second half transmit (free list, tx ring, completion ring). The kernel writes received
//! packets at chunk offset 256 (`XDP_PACKET_HEADROOM`), which is exactly [`HEADROOM`], so a
//! received frame is `Frame::new(chunk, 256, len)`. Transmitted frames are copied to offset 0 of
//! a transmit chunk.
//!
//! The fill and tx rings have room for twice the chunks that will ever be on them. The kernel
//! takes ring entries into a private cache and tells user space how far it has read only when
//! that cache runs dry; with a ring exactly as large as the chunks, chunks the kernel had
//! already taken still looked like occupied slots, so a refill could fail while the kernel's
//! cache emptied, and the kernel then found the fill ring empty and dropped frames. The spare
//! slots make a refill always fit.
//!
//! A bitmap records which receive chunks are currently lent to the kernel. A descriptor coming
//! back on the rx ring is used only if its chunk's bit is set, and the bit is cleared before the
//! chunk is borrowed, so no chunk can be borrowed twice even if the kernel misbehaved.
//!
//! # Jumbo frames (multi-buffer)
//!
//! A port with a configured MTU binds with `XDP_USE_SG` (frames longer than one chunk holds,
//! [`MAX_FRAME_LEN`], need it; see [`AfXdpConfig::multi_buffer`] for why every MTU port does). The kernel then delivers such a frame as a chain of descriptors, every one but
//! the last flagged `XDP_PKT_CONTD`. Receive gathers a chain into one of the queue's scratch
//! buffers (allocated once, [`HEADROOM`] in front, one per frame of a burst) and hands the
//! pipeline one contiguous [`Frame`]; the chain's chunks go straight back to the fill ring.
//! Frames that fit one chunk still take the in-place path. Transmit splits a long frame over
//! as many transmit chunks as it needs, flagged the same way. The copy costs about as much as
//! the kernel's own copy into the UMEM in copy mode (see the README's jumbo notes).
//!
//! `XDP_USE_SG` only helps if the XDP program in front of the socket is frags-aware
//! (`BPF_F_XDP_HAS_FRAGS`): veth in native mode refuses a program without it when the MTU is
//! above one page, and libxdp's default socket program is loaded without it. Multi-buffer
//! ports therefore load their own program (`FragsProg`): six instructions that redirect to an
//! XSKMAP by receive queue, loaded with the frags flag.
#![allow(unsafe_code)]

use super::{
    Port, PortError, PortStats, RxFrames, TxVerdict, FRAME_SIZE, HEADROOM, MAX_FRAME_LEN, RX_BATCH,
};
use libxdp_sys as xdp;
use pipeline::wire::Frame;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const SOL_XDP: libc::c_int = 283;
const XDP_STATISTICS: libc::c_int = 7;
/// Bind flag asking for multi-buffer frames (`linux/if_xdp.h`, Linux 6.6; newer than the
/// headers the bindings were generated from).
const XDP_USE_SG: u16 = 1 << 4;
/// Descriptor option: the frame continues in the next descriptor.
const XDP_PKT_CONTD: u32 = 1 << 0;
/// Ethernet header plus one VLAN tag: how much longer than the MTU a frame may be (what the
/// kernel itself lets through a device).
const L2_OVERHEAD: usize = 18;
/// Largest MTU an AF_XDP port carries (multi-buffer; each frame of a burst has a scratch
/// buffer this large).
pub const MAX_MTU: u32 = 9216;
/// Descriptors looked at per receive burst in multi-buffer mode: room for a full burst of
/// three-chunk frames and then some.
/// Transmit kicks one flush may make while the kernel reports its per-call budget spent: 8 x 32
/// descriptors covers a full burst of jumbo frames on every port of a thread.
const MAX_TX_KICKS: usize = 8;
const RX_PEEK_SG: u32 = (RX_BATCH * 4) as u32;

/// Which XDP attach mode to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic.
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (SKB) mode: works on every interface, always copies.
    Generic,
}

impl std::str::FromStr for XdpMode {
    type Err = PortError;
    fn from_str(s: &str) -> Result<XdpMode, PortError> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            _ => Err(PortError::Config(format!(
                "xdp mode {s:?} (expected auto, native or generic)"
            ))),
        }
    }
}

/// The mode a socket actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

/// Configuration of an AF_XDP port.
#[derive(Clone, Debug)]
pub struct AfXdpConfig {
    pub ifname: String,
    /// Queue ids to bind, one socket each. Transmission uses the first.
    pub queues: Vec<u32>,
    pub xdp_mode: XdpMode,
    /// UMEM chunks per queue (a power of two, at least 64); half receive, half transmit.
    pub frame_count: u32,
    /// Try zero-copy binding in native mode before falling back to copy mode.
    pub zero_copy: bool,
    /// The interface's MTU, when configured: frames up to MTU + 18 bytes are carried (longer
    /// ones are dropped and counted, never truncated), in multi-buffer mode. `None` carries
    /// frames up to [`MAX_FRAME_LEN`] the way libxdp sets a socket up. At most [`MAX_MTU`].
    pub mtu: Option<u32>,
    /// Bind for transmission only: no XDP program is loaded, so the interface's own receive
    /// path (the kernel stack, pings) is left alone. What a traffic generator wants.
    pub tx_only: bool,
}

/// UMEM chunks per queue unless configured: half of them receive, so 2,048 receive buffers,
/// about 2 ms of traffic at 1 Mpps while the datapath thread is off the CPU.
pub const DEFAULT_FRAME_COUNT: u32 = 4096;
/// Fewest UMEM chunks per queue: the receive half must hold a batch.
pub const MIN_FRAME_COUNT: u32 = 64;

impl AfXdpConfig {
    /// Queue 0 of `ifname`, auto mode, [`DEFAULT_FRAME_COUNT`] chunks per queue, zero-copy
    /// when offered.
    pub fn new(ifname: &str) -> AfXdpConfig {
        AfXdpConfig {
            ifname: ifname.to_string(),
            queues: vec![0],
            xdp_mode: XdpMode::Auto,
            frame_count: DEFAULT_FRAME_COUNT,
            zero_copy: true,
            mtu: None,
            tx_only: false,
        }
    }

    /// The longest frame the port carries.
    pub fn max_frame_len(&self) -> usize {
        self.mtu.map_or(MAX_FRAME_LEN, |m| m as usize + L2_OVERHEAD)
    }

    /// Whether the port binds multi-buffer, with its own frags-aware program: whenever an MTU
    /// is configured, not only above one chunk, because veth in native mode checks the *peer's*
    /// MTU against the program (a port at 1500 facing a peer at 9000 needs frags support too).
    pub fn multi_buffer(&self) -> bool {
        self.mtu.is_some()
    }
}

/// The four rings of one socket. libxdp keeps pointers to these structures from socket
/// creation until deletion, so they live at a fixed heap address (see [`Queue::rings`]).
struct Rings {
    rx: xdp::xsk_ring_cons,
    tx: xdp::xsk_ring_prod,
    fill: xdp::xsk_ring_prod,
    comp: xdp::xsk_ring_cons,
}

// Received frames start where the kernel puts them, so the pipeline's headroom is the kernel's.
const _: () = assert!(xdp::XDP_PACKET_HEADROOM as usize == HEADROOM);

/// Maps `len` bytes of zeroed memory for a UMEM, backed by transparent huge pages where the
/// kernel allows. Every frame lives on a page of its own with 4 KiB pages, so a datapath
/// cycling through thousands of chunks misses the TLB on nearly every frame it receives or
/// sends (and under virtualisation a miss walks two page tables); 2 MiB pages cover a
/// 64 MiB UMEM with 32 entries. The kernel pins the pages at registration, so they are
/// populated here, after the advice, not left to fault in.
fn map_umem(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint; the result is checked before
    // use and unmapped exactly once, in Drop (or below on failure).
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let Some(area) = NonNull::new(raw.cast::<u8>()) else {
        return Err(io::Error::other("mmap returned NULL"));
    };
    // SAFETY: advice and population over exactly the mapping made above. Huge pages are a
    // preference: without them (THP disabled, no contiguous memory) the pages are 4 KiB.
    unsafe {
        libc::madvise(raw, len, libc::MADV_HUGEPAGE);
        if libc::madvise(raw, len, libc::MADV_POPULATE_WRITE) != 0 {
            let e = io::Error::last_os_error();
            // Kernels before 5.14 do not know MADV_POPULATE_WRITE: touch every page instead.
            if e.raw_os_error() != Some(libc::EINVAL) {
                libc::munmap(raw, len);
                return Err(e);
            }
            for off in (0..len).step_by(4096) {
                ptr::write_volatile(area.as_ptr().add(off), 0);
            }
        }
    }
    Ok(area)
}

fn empty_prod() -> xdp::xsk_ring_prod {
    xdp::xsk_ring_prod {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

fn empty_cons() -> xdp::xsk_ring_cons {
    xdp::xsk_ring_cons {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

/// One bound socket with its UMEM.
struct Queue {
    queue_id: u32,
    area: NonNull<u8>,
    area_len: usize,
    umem: *mut xdp::xsk_umem,
    xsk: *mut xdp::xsk_socket,
    fd: RawFd,
    /// Owned allocation (from `Box::into_raw`) freed in `Drop` after the socket and UMEM.
    rings: NonNull<Rings>,
    /// Chunks (by index) below this receive; the rest transmit.
    rx_chunks: u32,
    /// Bit per receive chunk: set while the chunk is on the fill ring or in the kernel.
    in_kernel: Vec<u64>,
    /// Receive chunk addresses the fill ring had no room for.
    fill_backlog: Vec<u64>,
    /// Free transmit chunk addresses.
    tx_free: Vec<u64>,
    /// Descriptors written to the tx ring but not yet submitted.
    tx_reserved: u32,
    /// Descriptors submitted and not yet completed.
    tx_outstanding: u32,
    /// Receive chunks put on the fill ring, and taken back off the rx ring, since opening.
    rx_lent: u64,
    rx_returned: u64,
    /// Longest frame transmitted or gathered.
    max_frame: usize,
    /// Multi-buffer mode: [`RX_BATCH`] gather buffers of `scratch_stride` bytes back to back;
    /// empty otherwise (a chained frame is then rejected).
    scratch: Box<[u8]>,
    scratch_stride: usize,
    /// Bursts that arrived with fewer than a batch of entries unread on the fill ring (before
    /// it was refilled): the kernel was running out of buffers, or had just run out.
    fill_dry_bursts: u64,
    /// The most frames found waiting on the rx ring at one poll.
    rx_high: u32,
}

// SAFETY: a Queue exclusively owns its UMEM mapping, socket and rings; nothing else holds the
// raw pointers, so moving the whole structure to another thread is sound. It is not Sync.
unsafe impl Send for Queue {}

fn os_err(port: &str, what: &'static str, rc: libc::c_int) -> PortError {
    PortError::os(port, what, io::Error::from_raw_os_error(rc.abs()))
}

impl Queue {
    /// Opens one socket. With `xskmap`, libxdp loads no program and the socket is entered in
    /// that map (the port's own [`FragsProg`]).
    fn open(
        cfg: &AfXdpConfig,
        queue_id: u32,
        xdp_flags: u32,
        bind_flags: u16,
        xskmap: Option<RawFd>,
    ) -> Result<Queue, PortError> {
        let n = cfg.frame_count;
        if !n.is_power_of_two() || n < MIN_FRAME_COUNT {
            return Err(PortError::Config(format!(
                "frame_count {n} must be a power of two and at least {MIN_FRAME_COUNT}"
            )));
        }
        let ifname = CString::new(cfg.ifname.as_str())
            .map_err(|_| PortError::Config("interface name contains NUL".into()))?;
        let area_len = n as usize * FRAME_SIZE;
        let area = map_umem(area_len).map_err(|e| PortError::os(&cfg.ifname, "mmap UMEM", e))?;
        let rings = NonNull::from(Box::leak(Box::new(Rings {
            rx: empty_cons(),
            tx: empty_prod(),
            fill: empty_prod(),
            comp: empty_cons(),
        })));
        let half = n / 2;
        let sg = bind_flags & XDP_USE_SG != 0;
        let max_frame = if sg {
            cfg.max_frame_len()
        } else {
            MAX_FRAME_LEN
        };
        let scratch_stride = (HEADROOM + max_frame).next_multiple_of(64);
        let mut q = Queue {
            queue_id,
            area,
            area_len,
            umem: ptr::null_mut(),
            xsk: ptr::null_mut(),
            fd: -1,
            rings,
            rx_chunks: half,
            in_kernel: vec![0; (half as usize).div_ceil(64)],
            fill_backlog: Vec::with_capacity(half as usize),
            tx_free: (half..n).map(|i| i as u64 * FRAME_SIZE as u64).collect(),
            tx_reserved: 0,
            tx_outstanding: 0,
            rx_lent: 0,
            rx_returned: 0,
            fill_dry_bursts: 0,
            rx_high: 0,
            max_frame,
            scratch: vec![0u8; if sg { RX_BATCH * scratch_stride } else { 0 }].into_boxed_slice(),
            scratch_stride,
        };
        // From here on, dropping `q` releases whatever has been created.
        // Twice the chunks they carry: see "Memory layout" above.
        let umem_cfg = xdp::xsk_umem_config {
            fill_size: n,
            comp_size: half,
            frame_size: FRAME_SIZE as u32,
            frame_headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a live mapping of `area_len` bytes, page aligned; the ring
        // structures live at a fixed address until after the UMEM is deleted (Drop order).
        let rc = unsafe {
            xdp::xsk_umem__create(
                &mut q.umem,
                area.as_ptr().cast(),
                area_len as u64,
                q.fill(),
                q.comp(),
                &umem_cfg,
            )
        };
        if rc != 0 {
            return Err(os_err(&cfg.ifname, "xsk_umem__create", rc));
        }
        let sock_cfg = xdp::xsk_socket_config {
            rx_size: half,
            tx_size: n,
            __bindgen_anon_1: xdp::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: if xskmap.is_some() || cfg.tx_only {
                    xdp::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD
                } else {
                    0
                },
            },
            xdp_flags,
            bind_flags,
        };
        // SAFETY: `q.umem` was just created from this area; the name is NUL-terminated; the rx
        // and tx ring structures outlive the socket (deleted first in Drop).
        let rc = unsafe {
            xdp::xsk_socket__create(
                &mut q.xsk,
                ifname.as_ptr(),
                queue_id,
                q.umem,
                q.rx(),
                q.txr(),
                &sock_cfg,
            )
        };
        if rc != 0 {
            q.xsk = ptr::null_mut();
            return Err(os_err(&cfg.ifname, "xsk_socket__create", rc));
        }
        // SAFETY: `q.xsk` is a live socket created above.
        q.fd = unsafe { xdp::xsk_socket__fd(q.xsk) };
        if let Some(map) = xskmap {
            // SAFETY: live socket; `map` is an XSKMAP fd owned by the port's program.
            let rc = unsafe { xdp::xsk_socket__update_xskmap(q.xsk, map) };
            if rc != 0 {
                return Err(os_err(&cfg.ifname, "xsk_socket__update_xskmap", rc));
            }
        }
        // Lend every receive chunk to the kernel.
        q.fill_backlog
            .extend((0..half).rev().map(|i| i as u64 * FRAME_SIZE as u64));
        q.refill();
        Ok(q)
    }

    // Ring pointers are computed without creating references: libxdp holds raw pointers to
    // the same structures, and the ring helpers take raw pointers anyway.
    #[inline]
    fn fill(&self) -> *mut xdp::xsk_ring_prod {
        // SAFETY: `rings` points to a live allocation owned by this queue until Drop; taking a
        // field address does not read or create a reference.
        unsafe { ptr::addr_of_mut!((*self.rings.as_ptr()).fill) }
    }

    #[inline]
    fn comp(&self) -> *mut xdp::xsk_ring_cons {
        // SAFETY: as for `fill`.
        unsafe { ptr::addr_of_mut!((*self.rings.as_ptr()).comp) }
    }

    #[inline]
    fn rx(&self) -> *mut xdp::xsk_ring_cons {
        // SAFETY: as for `fill`.
        unsafe { ptr::addr_of_mut!((*self.rings.as_ptr()).rx) }
    }

    #[inline]
    fn txr(&self) -> *mut xdp::xsk_ring_prod {
        // SAFETY: as for `fill`.
        unsafe { ptr::addr_of_mut!((*self.rings.as_ptr()).tx) }
    }

    /// Index of the receive chunk at `addr`, if `addr` is in the receive half.
    #[inline]
    fn rx_chunk_index(&self, addr: u64) -> Option<usize> {
        rx_chunk_index(self.rx_chunks, addr)
    }

    /// Moves chunks from the backlog onto the fill ring.
    fn refill(&mut self) {
        let want = self.fill_backlog.len() as u32;
        if want == 0 {
            return;
        }
        let mut idx = 0u32;
        let fill = self.fill();
        // SAFETY: `fill` is this socket's live fill ring.
        let got = unsafe { xdp::xsk_ring_prod__reserve(fill, want, &mut idx) };
        for k in 0..got {
            let Some(addr) = self.fill_backlog.pop() else {
                break;
            };
            if let Some(i) = self.rx_chunk_index(addr) {
                if let Some(w) = self.in_kernel.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
            self.rx_lent += 1;
            // SAFETY: slot `idx + k` was reserved above, so it is ours to write until submit.
            unsafe { *xdp::xsk_ring_prod__fill_addr(fill, idx.wrapping_add(k)) = addr };
        }
        if got > 0 {
            // SAFETY: exactly `got` slots were reserved and written.
            unsafe { xdp::xsk_ring_prod__submit(fill, got) };
        }
        self.wake_rx_if_needed();
    }

    /// In need-wakeup mode the driver may stop filling the rx ring until kicked.
    #[inline]
    fn wake_rx_if_needed(&mut self) {
        let fill = self.fill();
        // SAFETY: live fill ring.
        if unsafe { xdp::xsk_ring_prod__needs_wakeup(fill) } != 0 {
            // SAFETY: a zero-length, nonblocking recvfrom on our own socket fd, no buffers.
            unsafe {
                libc::recvfrom(
                    self.fd,
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
        }
    }

    /// Returns completed transmit chunks to the free list.
    fn reclaim(&mut self) {
        if self.tx_outstanding == 0 {
            return;
        }
        let comp = self.comp();
        let mut idx = 0u32;
        // SAFETY: live completion ring.
        let n = unsafe { xdp::xsk_ring_cons__peek(comp, self.tx_outstanding, &mut idx) };
        for k in 0..n {
            // SAFETY: slot `idx + k` was returned by peek and not yet released.
            let addr = unsafe { *xdp::xsk_ring_cons__comp_addr(comp, idx.wrapping_add(k)) };
            let chunk = addr & !(FRAME_SIZE as u64 - 1);
            // Only transmit chunks go on the free list; anything else is a kernel bug we must
            // not turn into aliasing.
            if chunk >= self.rx_chunks as u64 * FRAME_SIZE as u64
                && chunk < self.area_len as u64
                && self.tx_free.len() < self.area_len / FRAME_SIZE - self.rx_chunks as usize
            {
                self.tx_free.push(chunk);
            }
        }
        if n > 0 {
            // SAFETY: releasing exactly what peek returned.
            unsafe { xdp::xsk_ring_cons__release(comp, n) };
            self.tx_outstanding -= n;
        }
    }

    /// Submits reserved tx descriptors and kicks the kernel if it asked for it.
    fn flush(&mut self) {
        let tx = self.txr();
        if self.tx_reserved > 0 {
            // SAFETY: `tx_reserved` slots were reserved and written by `tx`.
            unsafe { xdp::xsk_ring_prod__submit(tx, self.tx_reserved) };
            self.tx_outstanding += self.tx_reserved;
            self.tx_reserved = 0;
        }
        // Copy mode sends at most a fixed budget of descriptors per call (32 in Linux) and
        // says EAGAIN when it stopped on that budget: a burst of jumbo frames (three
        // descriptors each) needs several calls, or the ring backs up and later frames are
        // refused. EBUSY, ENOBUFS and ENETDOWN mean "not now": the next flush tries again.
        for _ in 0..MAX_TX_KICKS {
            // SAFETY: live tx ring.
            if self.tx_outstanding == 0 || unsafe { xdp::xsk_ring_prod__needs_wakeup(tx) } == 0 {
                break;
            }
            // SAFETY: a zero-length, nonblocking sendto on our own socket fd, no buffers.
            let rc = unsafe {
                libc::sendto(self.fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0)
            };
            if rc >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                break;
            }
            self.reclaim();
        }
        self.reclaim();
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        if frame.len() > self.max_frame {
            return TxVerdict::TooBig;
        }
        // Only a multi-buffer queue accepts frames longer than a chunk (`max_frame`), so the
        // others always take one descriptor.
        let parts = frame.len().div_ceil(FRAME_SIZE).max(1);
        if self.tx_free.len() < parts {
            self.reclaim();
            if self.tx_free.len() < parts {
                return TxVerdict::RingFull;
            }
        }
        let tx = self.txr();
        let mut idx = 0u32;
        // SAFETY: live tx ring. Reserving is all or nothing.
        if unsafe { xdp::xsk_ring_prod__reserve(tx, parts as u32, &mut idx) } != parts as u32 {
            return TxVerdict::RingFull;
        }
        for k in 0..parts {
            let Some(addr) = self.tx_free.pop() else {
                // Checked above; unreachable, but a short chain must not be submitted.
                return TxVerdict::RingFull;
            };
            let start = k * FRAME_SIZE;
            let part = frame
                .get(start..frame.len().min(start + FRAME_SIZE))
                .unwrap_or(&[]);
            let last = k + 1 == parts;
            // SAFETY: `addr` came off the free list, so it is a transmit chunk inside the area
            // that neither the kernel nor any borrow holds; the copy stays inside it
            // (part.len() <= FRAME_SIZE). Slot `idx + k` is one of the `parts` reserved.
            unsafe {
                ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.area.as_ptr().add(addr as usize),
                    part.len(),
                );
                let d = xdp::xsk_ring_prod__tx_desc(tx, idx.wrapping_add(k as u32));
                (*d).addr = addr;
                (*d).len = part.len() as u32;
                (*d).options = if last { 0 } else { XDP_PKT_CONTD };
            }
        }
        self.tx_reserved += parts as u32;
        TxVerdict::Queued
    }

    /// Receives one burst and hands it to `f`; returns the number of frames delivered, the
    /// number of frames rejected (bad descriptors, chains too long or without a scratch buffer)
    /// and the bytes delivered.
    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> (usize, usize, u64) {
        let rx = self.rx();
        let mut idx = 0u32;
        let want = if self.scratch.is_empty() {
            RX_BATCH as u32
        } else {
            RX_PEEK_SG
        };
        // SAFETY: live rx ring.
        let n = unsafe { xdp::xsk_ring_cons__peek(rx, want, &mut idx) };
        if n > 0 {
            let r = self.rx();
            // SAFETY: this queue's live rx ring; reading its pointer fields creates no
            // reference.
            let waiting = unsafe { ring_gap((*r).producer, (*r).consumer) };
            self.rx_high = self.rx_high.max(waiting);
            let f = self.fill();
            // SAFETY: this queue's live fill ring; reading its pointer fields creates no
            // reference.
            let unread = unsafe { ring_gap((*f).producer, (*f).consumer) };
            if (unread as usize) < RX_BATCH {
                self.fill_dry_bursts += 1;
            }
        }
        if n == 0 {
            // Chunks a refill could not place are retried here too: when the fill ring is
            // empty the kernel drops every frame, so no frame would come to trigger it.
            if self.fill_backlog.is_empty() {
                self.wake_rx_if_needed();
            } else {
                self.refill();
            }
            return (0, 0, 0);
        }
        // SAFETY (for every `desc(k)` below): slot `idx + k`, k < n, was returned by peek and
        // is not released before the descriptors have been copied out.
        let desc = |k: u32| unsafe { *xdp::xsk_ring_cons__rx_desc(rx, idx.wrapping_add(k)) };
        // The kernel copied these frames in, often on the other CPU: the engine's first read of
        // each (header extraction) would wait for its lines one frame at a time. Asking for
        // all of them now overlaps those waits.
        for k in 0..n {
            let addr = desc(k).addr as usize;
            if addr < self.area_len {
                prefetch_frame(self.area.as_ptr().wrapping_add(addr));
            }
        }
        let mut chunks = [0u64; RX_BATCH];
        let mut n_chunks = 0;
        let mut frames = RxFrames::new();
        let mut invalid = 0;
        let mut bytes = 0u64;
        let area = self.area;
        let rx_chunks = self.rx_chunks;
        let stride = self.scratch_stride.max(1);
        let mut scratch = self.scratch.chunks_exact_mut(stride);
        // The buffer of a dropped chain, reused by the next one: a burst never needs more
        // buffers than frames it delivers.
        let mut spare: Option<&mut [u8]> = None;
        let mut k = 0u32;
        while k < n && !frames.is_full() {
            // The chain starting at `k`: descriptors up to the first without "continued".
            let mut end = k;
            let mut complete = false;
            while end < n {
                let more = desc(end).options & XDP_PKT_CONTD != 0;
                end += 1;
                if !more {
                    complete = true;
                    break;
                }
            }
            if !complete {
                // The kernel publishes whole frames, so the rest of this one is beyond the
                // peek window: leave it on the ring for the next burst.
                break;
            }
            if end - k == 1 {
                let d = desc(k);
                k = end;
                let chunk = d.addr & !(FRAME_SIZE as u64 - 1);
                let head = (d.addr - chunk) as usize;
                let len = d.len as usize;
                if !take_lent(&mut self.in_kernel, rx_chunks, chunk) {
                    // Not ours to take (duplicate or stray descriptor): never borrow it.
                    invalid += 1;
                    continue;
                }
                self.rx_returned += 1;
                if head + len > FRAME_SIZE {
                    invalid += 1;
                    self.fill_backlog.push(chunk);
                    continue;
                }
                if let Some(c) = chunks.get_mut(n_chunks) {
                    *c = chunk;
                    n_chunks += 1;
                }
                // SAFETY: `chunk` is a receive chunk inside the mapping (index < rx_chunks)
                // whose bit we just cleared, so the kernel has handed it back and no other
                // borrow of it exists (each bit is cleared at most once per lending, and every
                // frame of this burst is a distinct chunk). The slice covers exactly that chunk
                // and lives no longer than this call, after which the chunk is lent again.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(area.as_ptr().add(chunk as usize), FRAME_SIZE)
                };
                bytes += len as u64;
                frames.push(Frame::new(buf, head, len));
                continue;
            }
            // A multi-buffer frame: gather it, then give its chunks back at once.
            let mut slot = spare.take().or_else(|| scratch.next());
            let mut total = 0usize;
            let mut ok = slot.is_some();
            for j in k..end {
                let d = desc(j);
                let chunk = d.addr & !(FRAME_SIZE as u64 - 1);
                let head = (d.addr - chunk) as usize;
                let len = d.len as usize;
                if !take_lent(&mut self.in_kernel, rx_chunks, chunk) {
                    ok = false;
                    continue;
                }
                self.rx_returned += 1;
                self.fill_backlog.push(chunk);
                let dst = slot
                    .as_deref_mut()
                    .and_then(|s| s.get_mut(HEADROOM + total..HEADROOM + total + len));
                match dst {
                    Some(dst) if ok && head + len <= FRAME_SIZE => {
                        // SAFETY: as above, the chunk is back from the kernel and unborrowed;
                        // `head + len` is inside it (checked), and `dst` is exactly `len`
                        // bytes of the scratch buffer, which the UMEM does not overlap.
                        unsafe {
                            ptr::copy_nonoverlapping(
                                area.as_ptr().add(d.addr as usize),
                                dst.as_mut_ptr(),
                                len,
                            );
                        }
                        total += len;
                    }
                    // Longer than the MTU allows, a bad length, or no scratch buffer: the
                    // frame is dropped whole, never truncated.
                    _ => ok = false,
                }
            }
            k = end;
            match slot {
                Some(buf) if ok && total <= self.max_frame => {
                    bytes += total as u64;
                    frames.push(Frame::new(buf, HEADROOM, total));
                }
                other => {
                    spare = other;
                    invalid += 1;
                }
            }
        }
        if k < n {
            // SAFETY: giving back the `n - k` descriptors peeked but not looked at, so the
            // next peek sees them again.
            unsafe { xdp::xsk_ring_cons__cancel(rx, n - k) };
        }
        if k > 0 {
            // SAFETY: releasing exactly the `k` descriptors consumed, copied out above.
            unsafe { xdp::xsk_ring_cons__release(rx, k) };
        }
        let got = frames.len();
        if got > 0 {
            f(&mut frames);
        }
        drop(frames);
        self.fill_backlog
            .extend_from_slice(chunks.get(..n_chunks).unwrap_or(&[]));
        self.refill();
        (got, invalid, bytes)
    }

    fn umem_account(&self) -> UmemAccount {
        let tx_chunks = (self.area_len / FRAME_SIZE) as u64 - self.rx_chunks as u64;
        UmemAccount {
            rx_chunks: self.rx_chunks as u64,
            rx_in_kernel: self.in_kernel.iter().map(|w| w.count_ones() as u64).sum(),
            rx_backlog: self.fill_backlog.len() as u64,
            rx_lent: self.rx_lent,
            rx_returned: self.rx_returned,
            tx_chunks,
            tx_free: self.tx_free.len() as u64,
            tx_in_flight: (self.tx_reserved + self.tx_outstanding) as u64,
            // SAFETY: this queue's live fill and rx rings; reading the pointer fields does not
            // create references.
            fill_unread: unsafe {
                let f = self.fill();
                ring_gap((*f).producer, (*f).consumer)
            } as u64,
            // SAFETY: as above.
            rx_unread: unsafe {
                let r = self.rx();
                ring_gap((*r).producer, (*r).consumer)
            } as u64,
            fill_dry_bursts: self.fill_dry_bursts,
            rx_high: self.rx_high as u64,
        }
    }

    fn xdp_stats(&self) -> Option<xdp::xdp_statistics> {
        let mut st = xdp::xdp_statistics {
            rx_dropped: 0,
            rx_invalid_descs: 0,
            tx_invalid_descs: 0,
            rx_ring_full: 0,
            rx_fill_ring_empty_descs: 0,
            tx_ring_empty_descs: 0,
        };
        let mut len = std::mem::size_of::<xdp::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` is a writable xdp_statistics and `len` its size; the kernel writes at
        // most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                SOL_XDP,
                XDP_STATISTICS,
                (&mut st as *mut xdp::xdp_statistics).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(st)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: each handle is deleted once, socket before UMEM (libxdp requires it), and
        // the rings and area are released only after libxdp has stopped using them.
        unsafe {
            if !self.xsk.is_null() {
                xdp::xsk_socket__delete(self.xsk);
            }
            if !self.umem.is_null() {
                xdp::xsk_umem__delete(self.umem);
            }
            libc::munmap(self.area.as_ptr().cast(), self.area_len);
            drop(Box::from_raw(self.rings.as_ptr()));
        }
    }
}

/// Where a port's UMEM chunks are (summed over its queues), to check that none leaks: between
/// bursts every receive chunk is lent to the kernel or waiting in the backlog to be, and every
/// transmit chunk is free or in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UmemAccount {
    pub rx_chunks: u64,
    /// Receive chunks whose lent bit is set (on the fill ring, in the kernel, or on the rx ring).
    pub rx_in_kernel: u64,
    /// Receive chunks back from the kernel waiting for room on the fill ring.
    pub rx_backlog: u64,
    /// Receive chunks lent to the kernel since the port opened.
    pub rx_lent: u64,
    /// Receive chunks the kernel handed back since the port opened.
    pub rx_returned: u64,
    pub tx_chunks: u64,
    pub tx_free: u64,
    /// Transmit chunks on the tx ring (reserved or submitted) and not yet completed.
    pub tx_in_flight: u64,
    /// Entries on the fill ring the kernel has not reported reading (its published consumer
    /// trails the producer by this much), and frames on the rx ring not yet read by xvs: with
    /// `rx_in_kernel`, where the lent chunks are.
    pub fill_unread: u64,
    pub rx_unread: u64,
    /// Bursts that arrived with fewer than a batch of entries unread on the fill ring.
    pub fill_dry_bursts: u64,
    /// The most frames found waiting on the rx ring at one poll.
    pub rx_high: u64,
}

impl UmemAccount {
    /// Every chunk is where it should be between bursts, and lending and returning agree.
    pub fn balanced(&self) -> bool {
        self.rx_in_kernel + self.rx_backlog == self.rx_chunks
            && self.rx_lent - self.rx_returned == self.rx_in_kernel
            && self.tx_free + self.tx_in_flight == self.tx_chunks
    }

    fn add(&mut self, o: &UmemAccount) {
        self.rx_chunks += o.rx_chunks;
        self.rx_in_kernel += o.rx_in_kernel;
        self.rx_backlog += o.rx_backlog;
        self.rx_lent += o.rx_lent;
        self.rx_returned += o.rx_returned;
        self.tx_chunks += o.tx_chunks;
        self.tx_free += o.tx_free;
        self.tx_in_flight += o.tx_in_flight;
        self.fill_unread += o.fill_unread;
        self.rx_unread += o.rx_unread;
        self.fill_dry_bursts += o.fill_dry_bursts;
        self.rx_high = self.rx_high.max(o.rx_high);
    }
}

/// The XDP program of a multi-buffer port: an XSKMAP and a frags-aware program redirecting
/// every frame to the socket of its receive queue (or passing it to the stack when there is
/// none), attached in the mode being tried. Detached and closed on drop, which must come after
/// the sockets are gone (field order in [`AfXdpPort`]).
struct FragsProg {
    ifindex: libc::c_int,
    xdp_flags: u32,
    map_fd: RawFd,
    prog_fd: RawFd,
    attached: bool,
}

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`: the destination register in
/// the low nibble of `regs`, the source in the high one).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<xdp::bpf_insn>());

/// `return bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS);`
fn redirect_program(map_fd: RawFd) -> [Insn; 6] {
    const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM (two slots)
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const PSEUDO_MAP_FD: u8 = 1;
    const RX_QUEUE_INDEX: i16 = 16; // offsetof(struct xdp_md, rx_queue_index)
    const FN_REDIRECT_MAP: i32 = 51; // BPF_FUNC_redirect_map
    const XDP_PASS: i32 = 2;
    let i = |code, dst: u8, src: u8, off, imm| Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    };
    [
        i(LDX_MEM_W, 2, 1, RX_QUEUE_INDEX, 0), // r2 = ctx->rx_queue_index
        i(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = &xskmap
        i(0, 0, 0, 0, 0),
        i(MOV64_K, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS (the action when the slot is empty)
        i(CALL, 0, 0, 0, FN_REDIRECT_MAP),
        i(EXIT, 0, 0, 0, 0),
    ]
}

impl FragsProg {
    /// Creates the map (`max_queue + 1` slots) and program and attaches the program to
    /// `ifname` with `xdp_flags`, refusing to replace a program already there.
    fn attach(ifname: &str, max_queue: u32, xdp_flags: u32) -> Result<FragsProg, PortError> {
        let ifindex = ifindex(ifname)? as libc::c_int;
        let mut p = FragsProg {
            ifindex,
            xdp_flags,
            map_fd: -1,
            prog_fd: -1,
            attached: false,
        };
        let name = c"xvs_xsks";
        // SAFETY: plain map creation; the name is NUL-terminated, no options.
        p.map_fd = unsafe {
            xdp::bpf_map_create(
                xdp::bpf_map_type_BPF_MAP_TYPE_XSKMAP,
                name.as_ptr(),
                4,
                4,
                max_queue + 1,
                ptr::null(),
            )
        };
        if p.map_fd < 0 {
            return Err(os_err(ifname, "bpf_map_create(XSKMAP)", p.map_fd));
        }
        let insns = redirect_program(p.map_fd);
        // SAFETY: an all-zero bpf_prog_load_opts is the documented "no options" value.
        let mut opts: xdp::bpf_prog_load_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<xdp::bpf_prog_load_opts>();
        opts.prog_flags = xdp::BPF_F_XDP_HAS_FRAGS;
        // SAFETY: `insns` is an array of instructions laid out as `struct bpf_insn` (size
        // asserted above), alive for the call; names are NUL-terminated.
        p.prog_fd = unsafe {
            xdp::bpf_prog_load(
                xdp::bpf_prog_type_BPF_PROG_TYPE_XDP,
                c"xvs_xsk_frags".as_ptr(),
                c"GPL".as_ptr(),
                insns.as_ptr().cast(),
                insns.len(),
                &mut opts,
            )
        };
        if p.prog_fd < 0 {
            return Err(os_err(ifname, "bpf_prog_load(xdp, frags)", p.prog_fd));
        }
        // SAFETY: attaching a program fd we own to an interface index, no options.
        let rc = unsafe {
            xdp::bpf_xdp_attach(
                ifindex,
                p.prog_fd,
                xdp_flags | XDP_FLAGS_UPDATE_IF_NOEXIST,
                ptr::null(),
            )
        };
        if rc != 0 {
            return Err(os_err(ifname, "bpf_xdp_attach(frags program)", rc));
        }
        p.attached = true;
        Ok(p)
    }
}

impl Drop for FragsProg {
    fn drop(&mut self) {
        // SAFETY: detaching what `attach` attached in the same mode, then closing fds this
        // structure owns, each once.
        unsafe {
            if self.attached {
                xdp::bpf_xdp_detach(self.ifindex, self.xdp_flags, ptr::null());
            }
            for fd in [self.prog_fd, self.map_fd] {
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
    }
}

/// An AF_XDP port. See the module documentation.
pub struct AfXdpPort {
    name: String,
    /// Dropped before `prog`: sockets leave the map before the program is detached.
    queues: Vec<Queue>,
    prog: Option<FragsProg>,
    next_rx: usize,
    mode: AttachedMode,
    zero_copy: bool,
    stats: PortStats,
}

impl AfXdpPort {
    /// Binds one socket per configured queue, choosing the attach mode and zero-copy as
    /// described by the configuration; [`mode`](Self::mode) and
    /// [`zero_copy`](Self::zero_copy) report what was obtained.
    pub fn open(cfg: &AfXdpConfig) -> Result<AfXdpPort, PortError> {
        if cfg.queues.is_empty() {
            return Err(PortError::Config("an AF_XDP port needs a queue".into()));
        }
        ifindex(&cfg.ifname)?;
        if cfg.mtu.is_some_and(|m| m > MAX_MTU) {
            return Err(PortError::Config(format!(
                "mtu {} is above {MAX_MTU}, the largest an AF_XDP port carries",
                cfg.mtu.unwrap_or_default()
            )));
        }
        let sg = cfg.multi_buffer();
        let nw = xdp::XDP_USE_NEED_WAKEUP as u16 | if sg { XDP_USE_SG } else { 0 };
        let zc = xdp::XDP_ZEROCOPY as u16;
        let copy = xdp::XDP_COPY as u16;
        let mut attempts: Vec<(u32, u16, AttachedMode, bool)> = Vec::new();
        if cfg.xdp_mode != XdpMode::Generic {
            // Multi-buffer zero-copy needs driver support this port does not probe for.
            if cfg.zero_copy && !sg {
                attempts.push((XDP_FLAGS_DRV_MODE, nw | zc, AttachedMode::Native, true));
            }
            attempts.push((XDP_FLAGS_DRV_MODE, nw | copy, AttachedMode::Native, false));
        }
        if cfg.xdp_mode != XdpMode::Native {
            attempts.push((XDP_FLAGS_SKB_MODE, nw | copy, AttachedMode::Generic, false));
        }
        let mut last_err = None;
        for (xdp_flags, bind_flags, mode, zero_copy) in attempts {
            let prog = if sg && !cfg.tx_only {
                let max_queue = cfg.queues.iter().copied().max().unwrap_or(0);
                match FragsProg::attach(&cfg.ifname, max_queue, xdp_flags) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                }
            } else {
                None
            };
            let map = prog.as_ref().map(|p| p.map_fd);
            let mut queues = Vec::with_capacity(cfg.queues.len());
            let mut failed = None;
            for &qid in &cfg.queues {
                match Queue::open(cfg, qid, xdp_flags, bind_flags, map) {
                    Ok(q) => queues.push(q),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    return Ok(AfXdpPort {
                        name: cfg.ifname.clone(),
                        queues,
                        prog,
                        next_rx: 0,
                        mode,
                        zero_copy,
                        stats: PortStats::default(),
                    })
                }
                Some(e) => {
                    // Drop the sockets of this attempt (detaching its program) before the next.
                    drop(queues);
                    drop(prog);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| PortError::Config("no attach mode to try".into())))
    }

    /// The XDP attach mode obtained.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Whether the sockets are bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether frames may span several chunks (`XDP_USE_SG`, with the port's own frags-aware
    /// XDP program).
    pub fn multi_buffer(&self) -> bool {
        self.prog.is_some()
    }

    /// Queue ids bound, in order.
    pub fn queue_ids(&self) -> Vec<u32> {
        self.queues.iter().map(|q| q.queue_id).collect()
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        let nq = self.queues.len();
        for _ in 0..nq {
            let i = self.next_rx % nq;
            self.next_rx = self.next_rx.wrapping_add(1);
            let Some(q) = self.queues.get_mut(i) else {
                continue;
            };
            let (n, invalid, bytes) = q.rx_burst(f);
            self.stats.invalid_descs += invalid as u64;
            if n > 0 {
                self.stats.rx_packets += n as u64;
                self.stats.rx_bytes += bytes;
                return n;
            }
        }
        0
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        let v = match self.queues.first_mut() {
            Some(q) => q.tx(frame),
            None => TxVerdict::DeviceError,
        };
        self.stats.count_tx(v, frame.len());
        v
    }

    fn flush(&mut self) {
        for q in &mut self.queues {
            q.flush();
        }
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(|q| q.fd).collect()
    }

    fn umem_account(&self) -> Option<UmemAccount> {
        let mut a = UmemAccount::default();
        for q in &self.queues {
            a.add(&q.umem_account());
        }
        Some(a)
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        for st in self.queues.iter().filter_map(Queue::xdp_stats) {
            // Generic mode counts a full rx ring in both counters; native mode only in
            // `rx_ring_full`.
            s.rx_dropped += match self.mode {
                AttachedMode::Generic => st.rx_dropped,
                AttachedMode::Native => st.rx_dropped + st.rx_ring_full,
            };
            s.rx_fill_empty += st.rx_fill_ring_empty_descs;
            s.rx_ring_full += st.rx_ring_full;
            s.invalid_descs += st.rx_invalid_descs + st.tx_invalid_descs;
        }
        s
    }
}

/// Producer minus consumer of a ring, as both sides have published them.
///
/// # Safety
/// `producer` and `consumer` must be the pointers of a live queue's ring (they point into the
/// mapped ring for the queue's lifetime).
unsafe fn ring_gap(producer: *const u32, consumer: *const u32) -> u32 {
    // SAFETY: per the contract; read volatile because the kernel writes them concurrently (a
    // torn view only skews a statistic).
    unsafe { ptr::read_volatile(producer).wrapping_sub(ptr::read_volatile(consumer)) }
}

/// Index of the receive chunk at `addr`, if `addr` is in the receive half.
#[inline]
fn rx_chunk_index(rx_chunks: u32, addr: u64) -> Option<usize> {
    let i = (addr / FRAME_SIZE as u64) as usize;
    (i < rx_chunks as usize).then_some(i)
}

/// Takes the receive chunk at `chunk` back from the kernel: true if it was lent (its bit is
/// now cleared), false for a stray or duplicate descriptor that must not be used.
#[inline]
fn take_lent(in_kernel: &mut [u64], rx_chunks: u32, chunk: u64) -> bool {
    let Some(i) = rx_chunk_index(rx_chunks, chunk) else {
        return false;
    };
    match in_kernel.get_mut(i / 64) {
        Some(w) if *w & (1 << (i % 64)) != 0 => {
            *w &= !(1 << (i % 64));
            true
        }
        _ => false,
    }
}

/// The interface index of `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> Result<u32, PortError> {
    let c = CString::new(ifname)
        .map_err(|_| PortError::Config("interface name contains NUL".into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(PortError::NoSuchInterface(ifname.to_string()))
    } else {
        Ok(i)
    }
}

/// Removes every XDP program attached to `ifname` (native, generic or offloaded; libxdp
/// dispatchers and plain programs alike), as a process killed without cleaning up leaves them.
/// Returns how many were removed.
pub fn detach_xdp_programs(ifname: &str) -> Result<usize, PortError> {
    let index = ifindex(ifname)? as libc::c_int;
    let mut removed = 0;
    // An interface holds at most one program per mode (generic, native, offloaded); each pass
    // removes one.
    for _ in 0..4 {
        // SAFETY: a plain query by interface index; the result is checked with
        // libxdp_get_error before any other use and closed exactly once.
        let mp = unsafe { xdp::xdp_multiprog__get_from_ifindex(index) };
        // SAFETY: libxdp_get_error accepts any pointer libxdp returned, error-encoded or not.
        let err = unsafe { xdp::libxdp_get_error(mp.cast()) };
        if err != 0 || mp.is_null() {
            if err == -(libc::ENOENT as libc::c_long) || mp.is_null() {
                return Ok(removed);
            }
            return Err(os_err(
                ifname,
                "xdp_multiprog__get_from_ifindex",
                err as i32,
            ));
        }
        // SAFETY: `mp` is a valid multiprog handle (checked above), closed right after use.
        let rc = unsafe {
            let rc = xdp::xdp_multiprog__detach(mp);
            xdp::xdp_multiprog__close(mp);
            rc
        };
        if rc != 0 {
            return Err(os_err(ifname, "xdp_multiprog__detach", rc));
        }
        removed += 1;
    }
    Ok(removed)
}

/// Turns off libxdp's and libbpf's messages on stderr (object-file notes, the fallback to a
/// single program when no bpffs is mounted). Errors still reach callers as `PortError`s.
pub fn silence_libxdp() {
    // SAFETY: installing a NULL print callback only changes a global function pointer that
    // libxdp checks before every message.
    unsafe {
        xdp::libxdp_set_print(None);
        libbpf_set_print(ptr::null());
    }
}

unsafe extern "C" {
    /// From the libbpf linked in through libxdp-sys (which does not re-export it). The
    /// argument and result are nullable function pointers, passed here as plain pointers.
    fn libbpf_set_print(f: *const libc::c_void) -> *const libc::c_void;
}

/// Starts loading the two cache lines that hold a frame's headers (Ethernet, VLAN, IP and
/// the transport ports of most frames), and, for writing, the headroom line just before
/// them. Nothing has touched that line since the chunk's last use thousands of frames ago,
/// yet a VLAN push or tunnel encapsulation writes the frame's new start there and the
/// transmit copy reads it straight back: perf on the SNAT scenario (VLAN push) put 6-9% of
/// a polling thread on that read.
#[inline(always)]
fn prefetch_frame(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 and PREFETCHW are only hints: they perform no architectural access
    // and cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64).cast());
        _mm_prefetch::<_MM_HINT_ET0>(p.wrapping_sub(64).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
