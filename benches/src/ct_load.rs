//! TCP connections for the conntrack benches and the `ct_hotloop` profiling example: frames,
//! the SNAT used throughout, and a tracker populated with established connections.

use conntrack::Tracker;
use pipeline::compose::PacketBuilder;
use pipeline::ct::{ConnTracker, CtItem, CtRequest, CtVerdict};
use pipeline::flow::{NatKind, NatSpec};
use pipeline::key::FlowKey;
use pipeline::wire::Frame;
use std::net::{IpAddr, Ipv4Addr};

/// Where IPv4 starts in the frames built here (untagged Ethernet).
pub const ETH: usize = 14;

/// Ethernet + IPv4 + TCP (no payload) with correct checksums.
pub fn tcp_frame(
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    PacketBuilder::tcp4(
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        Ipv4Addr::from(src),
        Ipv4Addr::from(dst),
        sport,
        dport,
    )
    .tcp_flags(u16::from(flags))
    .seq(seq)
    .ack(ack)
    .build()
}

/// Tracks one frame; its `ct_state`, or 0 when it was not tracked (held, reassembled).
pub fn track(t: &Tracker, f: &mut [u8], req: &CtRequest<'_>) -> u32 {
    let len = f.len();
    match t.execute(&mut Frame::new(f, 0, len), ETH, &FlowKey::ZERO, req, 1) {
        CtVerdict::Tracked(r) => r.state,
        _ => 0,
    }
}

/// A frame of the established-path benches in a slot of its own. Copying a whole slot is a
/// fixed-size copy the compiler inlines; a copy of a length known only at run time is a call
/// to `memmove`, which perf put at 9% of the batch bench's time: harness, not tracker.
///
/// Slots are cache-line aligned, as the frames of a receive ring are: an unaligned slot spans two
/// lines, and loading twice the lines per frame measures the harness, not the tracker.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Slot(pub [u8; 64]);

impl Slot {
    /// An all-zero slot.
    pub const ZERO: Slot = Slot([0; 64]);
}

/// Frames of a batch: one slot per frame, reused from batch to batch.
pub type BatchBufs = [Slot; pipeline::BATCH_SIZE];

/// `set` in a scattered visiting order (so caches do not flatter the lookup), one frame per
/// slot, laid out in that order as a receive ring presents them: a datapath finds each
/// frame's bytes where it just parsed them, not scattered on the heap.
pub fn scatter(set: &[Vec<u8>]) -> Vec<Slot> {
    (0..set.len())
        .map(|i| {
            let f = &set[(i * 7919) % set.len()];
            let mut s = Slot::ZERO;
            s.0[..f.len()].copy_from_slice(f);
            s
        })
        .collect()
}

/// Asks the CPU to start loading `slot`'s cache line.
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and has no effect the program can
    // observe, and the pointer points into `slot`, which is borrowed for this call.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            slot.0.as_ptr().cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Position `i` (below `2 * n`) of a set of `n` frames, wrapping: a compare, where `%` would
/// divide per frame.
#[inline]
fn wrap(i: usize, n: usize) -> usize {
    if i < n {
        i
    } else {
        i - n
    }
}

/// The frame after `pos` of `n`, wrapping.
#[inline]
pub fn next(pos: usize, n: usize) -> usize {
    wrap(pos + 1, n)
}

/// Tracks the next [`pipeline::BATCH_SIZE`] frames of `frames` (`flen` bytes of each slot,
/// from frame `*pos` on and wrapping) through one `execute_batch` call, as a receive burst
/// would present them; returns the XOR of their `ct_state`s.
pub fn track_batch(
    t: &Tracker,
    frames: &[Slot],
    flen: usize,
    pos: &mut usize,
    bufs: &mut BatchBufs,
    req: &CtRequest<'_>,
) -> u32 {
    const N: usize = pipeline::BATCH_SIZE;
    // The harness's own work counts in the tracker's time per frame, so it is kept to a copy
    // and a prefetch per frame: the batch is copied as one range when it does not wrap, and the
    // flow key is made once, not zeroed per batch.
    static KEY: FlowKey = FlowKey::ZERO;
    let n = frames.len();
    assert!(n >= N, "a batch takes {N} frames");
    let start = *pos;
    if start + N <= n {
        bufs.copy_from_slice(&frames[start..start + N]);
    } else {
        for (k, b) in bufs.iter_mut().enumerate() {
            *b = frames[wrap(start + k, n)];
        }
    }
    *pos = wrap(start + N, n);
    // The next batch's frames start loading now, while this one is tracked, as a datapath's
    // receive path prefetches the frames of a burst before it works on them: otherwise the
    // copy above waits on each slot (6.4 MB of them for 100,000 connections), which perf put
    // at half of this function's samples, harness and not tracker.
    for k in 0..N {
        prefetch(&frames[wrap(*pos + k, n)]);
    }
    let mut out: [Option<CtVerdict>; N] = [const { None }; N];
    let mut fs = bufs.each_mut().map(|b| Frame::new(&mut b.0[..], 0, flen));
    let mut items = fs.each_mut().map(|frame| CtItem {
        frame,
        l3_ofs: ETH,
        key: &KEY,
    });
    t.execute_batch(&mut items, req, 1, &mut out);
    out.iter()
        .map(|o| match o {
            Some(CtVerdict::Tracked(r)) => r.state,
            _ => 0,
        })
        .fold(0, |a, s| a ^ s)
}

/// SNAT to the reference deployment's 172.22.7.27-30, any port.
pub fn snat_spec() -> NatSpec {
    NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(172, 22, 7, 27))),
        addr_max: Some(IpAddr::V4(Ipv4Addr::new(172, 22, 7, 30))),
        ..NatSpec::default()
    }
}

/// Committing in zone 9 with `spec`, as the reference deployment's gateway table does.
pub fn commit_req(spec: &NatSpec) -> CtRequest<'_> {
    CtRequest {
        zone: 9,
        commit: true,
        force: false,
        nat: Some(spec),
        set_mark: None,
        set_label: None,
        alg: None,
    }
}

/// Client address and port, and server address, of connection `i`. Servers vary so the
/// translated tuple space (NAT addresses x ports x servers) is far larger than the population.
pub fn client(i: u32) -> (u32, u16, u32) {
    (
        0x0a00_0000 + i / 50_000,
        10_000 + (i % 50_000) as u16,
        0x0808_0000 + (i * 31) % 4096,
    )
}

/// Opens `n` SNATed TCP connections (full handshake); returns the original-direction ACKs and
/// the reply-direction ones (addressed to the translated source).
pub fn populate(t: &Tracker, n: u32, spec: &NatSpec) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let commit = commit_req(spec);
    let bare = NatSpec::default();
    let back = CtRequest {
        commit: false,
        nat: Some(&bare),
        ..commit
    };
    let mut acks = Vec::with_capacity(n as usize);
    let mut replies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (src, sport, server) = client(i);
        let mut syn = tcp_frame(src, server, sport, 80, 0x02, 100, 0);
        track(t, &mut syn, &commit);
        let nat_src =
            u32::from_be_bytes([syn[ETH + 12], syn[ETH + 13], syn[ETH + 14], syn[ETH + 15]]);
        let nat_port = u16::from_be_bytes([syn[ETH + 20], syn[ETH + 21]]);
        let mut sa = tcp_frame(server, nat_src, 80, nat_port, 0x12, 5000, 101);
        track(t, &mut sa, &back);
        let mut ack = tcp_frame(src, server, sport, 80, 0x10, 101, 5001);
        track(t, &mut ack, &commit);
        acks.push(tcp_frame(src, server, sport, 80, 0x10, 101, 5001));
        replies.push(tcp_frame(server, nat_src, 80, nat_port, 0x10, 5001, 101));
    }
    (acks, replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conntrack::Config;
    use pipeline::key::{CS_ESTABLISHED, CS_REPLY_DIR, CS_SRC_NAT};

    #[test]
    fn populated_connections_are_established_and_translated() {
        let t = Tracker::new(Config::default());
        let spec = snat_spec();
        let (acks, replies) = populate(&t, 50, &spec);
        assert_eq!(t.len(), 50);
        let bare = NatSpec::default();
        let back = CtRequest {
            commit: false,
            nat: Some(&bare),
            ..commit_req(&spec)
        };
        for (a, r) in acks.iter().zip(&replies) {
            let s = track(&t, &mut a.clone(), &commit_req(&spec));
            assert_eq!(
                s & (CS_ESTABLISHED | CS_SRC_NAT),
                CS_ESTABLISHED | CS_SRC_NAT
            );
            let s = track(&t, &mut r.clone(), &back);
            assert_ne!(s & CS_REPLY_DIR, 0);
        }
    }
}
