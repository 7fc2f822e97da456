//! Frame parsing into the packet words of a flow key.
//!
//! This module owns the mapping from an Ethernet frame's headers to the key's packet fields, with
//! Open vSwitch's flow-extraction semantics: up to two VLAN tags, 802.3/SNAP, IPv4 (options,
//! fragments), IPv6 (extension headers, fragments), TCP/UDP/SCTP ports, TCP flags, ICMP (and
//! IGMP) type and code, Neighbor Discovery and Ethernet/IPv4 ARP. Where Open vSwitch has a quirk
//! flows can observe, this follows it (ARP opcodes above 255 read as 0, a broken IPv6
//! extension-header chain leaves only the addresses, the transport protocol number is read the
//! same way under IPv4 and IPv6); the differential test against `ovs-ofctl parse-pcap` holds
//! this module to it. It returns where the headers are
//! ([`Layout`]) so rewrites need not parse again. It must not write metadata words, allocate,
//! or panic on any input: every read is bounds-checked, and a header that does not fit (or whose
//! own length fields are inconsistent) is treated as absent.
//!
//! The hot case (untagged or single-tagged IPv4 with TCP/UDP) is straight-line code over
//! fixed-size array views, so the compiler can drop all bounds checks after one length test.

use crate::field::{
    ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP,
};
use crate::key::{
    FlowKey, FRAG_ANY, FRAG_LATER, KEY_WORDS, PACKET_WORD, VLAN_CFI, W_ARP_SHA, W_ARP_THA,
    W_DL_DST, W_DL_SRC, W_IPV6_DST, W_IPV6_SRC, W_L2, W_ND_TARGET, W_NW, W_NW_ADDR, W_TP,
};
use crate::wire::ethernet::{is_vlan_tpid, DL_TYPE_NONE, ETHERTYPE_MIN};
use crate::wire::{ipv4, ipv6, l4};

const IPPROTO_IGMP: u8 = 2;

/// Reverse ARP shares ARP's layout and fields.
pub const ETH_TYPE_RARP: u16 = 0x8035;

/// Where a frame's headers are, as found by [`extract`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Number of VLAN tags parsed (0..=2). A third tag is left unparsed: its TPID is `dl_type`.
    pub vlans: u8,
    /// Offset of the IPv4/IPv6/ARP header, 0 if none was parsed (absent or malformed).
    pub l3_ofs: u16,
    /// Offset of the transport (or ICMP) header, 0 if none: absent, truncated, or a later
    /// fragment. For IP protocols flows know nothing of, the start of the IP payload.
    pub l4_ofs: u16,
    /// Bytes from `l4_ofs` to the end of the IP payload (bounded by the IP length fields, not
    /// by the frame, so Ethernet padding is excluded).
    pub l4_len: u16,
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn mac(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes([0, 0, b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]])
}

/// Fills the packet words of `key` (`key::PACKET_WORD..KEY_WORDS`: every one of them is
/// overwritten, zero where the frame has no such header) from an Ethernet frame and returns its
/// layout. Never panics; a truncated or malformed frame fills what parsed (L2 whenever the frame
/// has at least 14 bytes).
#[inline]
pub fn extract(frame: &[u8], key: &mut FlowKey) -> Layout {
    let mut lay = Layout::default();
    let w = &mut key.w;
    let Some(eth) = frame.first_chunk::<14>() else {
        w[PACKET_WORD..].fill(0);
        return lay;
    };
    // Two overlapping 8-byte loads instead of twelve byte loads.
    let (d8, s8) = (eth.first_chunk::<8>(), eth[6..].first_chunk::<8>());
    let dl_dst = u64::from_be_bytes(*d8.unwrap_or(&[0; 8])) >> 16;
    let dl_src = u64::from_be_bytes(*s8.unwrap_or(&[0; 8])) >> 16;
    let mut ty = be16(eth, 12);
    let mut ofs = 14usize;
    let mut l2 = 0u64;
    if is_vlan_tpid(ty) {
        // A tag counts only if the next type field is there too.
        if let Some(t) = frame.get(14..18) {
            l2 |= ((be16(t, 0) | VLAN_CFI) as u64) << 48;
            ty = be16(t, 2);
            ofs = 18;
            lay.vlans = 1;
            if is_vlan_tpid(ty) {
                if let Some(t) = frame.get(18..22) {
                    l2 |= ((be16(t, 0) | VLAN_CFI) as u64) << 16;
                    ty = be16(t, 2);
                    ofs = 22;
                    lay.vlans = 2;
                }
            }
        }
    }
    if ty < ETHERTYPE_MIN {
        // 802.3 length: only an LLC/SNAP header with the Ethernet OUI carries an EtherType.
        ty = DL_TYPE_NONE;
        if let Some(s) = frame.get(ofs..ofs + 8) {
            let t = be16(s, 6);
            if s[..6] == [0xaa, 0xaa, 0x03, 0, 0, 0] && t >= ETHERTYPE_MIN {
                ty = t;
                ofs += 8;
            }
        }
    }
    w[W_DL_DST] = dl_dst;
    w[W_DL_SRC] = dl_src;
    w[W_L2] = l2 | (ty as u64) << 32;
    let rest = frame.get(ofs..).unwrap_or(&[]);
    if ty == ETH_TYPE_IP {
        // The hot path keeps its three words in registers and stores each key word once.
        let (addr, nw, tp) = ipv4(rest, ofs, &mut lay);
        w[W_NW_ADDR] = addr;
        w[W_NW] = nw;
        w[W_TP] = tp;
        w[W_ARP_SHA..].fill(0);
    } else {
        w[W_NW_ADDR..].fill(0);
        match ty {
            ETH_TYPE_IPV6 => ipv6(rest, ofs, w, &mut lay),
            ETH_TYPE_ARP | ETH_TYPE_RARP => arp(rest, ofs, w, &mut lay),
            _ => {}
        }
    }
    lay
}

/// Re-reads the addresses and transport ports of a frame whose headers stayed where `lay` says
/// (connection tracking's NAT rewrites them in place), leaving every other key word as it is.
/// Returns false, changing nothing, when the frame is not IPv4 or IPv6 as parsed into `key`
/// and `lay` or no longer holds those headers: the caller then extracts again.
///
/// Only for rewrites that keep lengths and header positions: the fields it does not read
/// (`nw_proto`, TTL, fragment bits, TCP flags, ICMP type and code) must be unchanged.
#[inline]
pub fn refresh_addresses(frame: &[u8], lay: &Layout, key: &mut FlowKey) -> bool {
    let l3 = lay.l3_ofs as usize;
    if l3 == 0 {
        return false;
    }
    match key.dl_type() {
        ETH_TYPE_IP => {
            let Some(h) = frame.get(l3..).and_then(|r| r.first_chunk::<20>()) else {
                return false;
            };
            key.w[W_NW_ADDR] = (be32(h, 12) as u64) << 32 | be32(h, 16) as u64;
        }
        ETH_TYPE_IPV6 => {
            let Some(h) = frame.get(l3..).and_then(|r| r.first_chunk::<40>()) else {
                return false;
            };
            let src = ipv6::be128(&h[8..24]);
            let dst = ipv6::be128(&h[24..40]);
            key.w[W_IPV6_SRC] = (src >> 64) as u64;
            key.w[W_IPV6_SRC + 1] = src as u64;
            key.w[W_IPV6_DST] = (dst >> 64) as u64;
            key.w[W_IPV6_DST + 1] = dst as u64;
        }
        _ => return false,
    }
    let l4 = lay.l4_ofs as usize;
    if l4 != 0 && matches!(key.nw_proto(), IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        let Some(p) = frame.get(l4..).and_then(|r| r.first_chunk::<4>()) else {
            return false;
        };
        key.w[W_TP] = (key.w[W_TP] & 0xffff_ffff) | (be32(p, 0) as u64) << 32;
    }
    true
}

/// IPv4: the `W_NW_ADDR`, `W_NW` and `W_TP` words.
#[inline(always)]
fn ipv4(rest: &[u8], ofs: usize, lay: &mut Layout) -> (u64, u64, u64) {
    let Some(h) = rest.first_chunk::<20>() else {
        return (0, 0, 0);
    };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let tot = be16(h, 2) as usize;
    if ihl < 20 || tot < ihl || tot > rest.len() {
        return (0, 0, 0);
    }
    let addr = (be32(h, 12) as u64) << 32 | be32(h, 16) as u64;
    let fo = be16(h, 6);
    // MF or an offset: a fragment; an offset: not the first one.
    let later = fo & ipv4::OFFSET_MASK != 0;
    let any = fo & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0;
    let frag = ((any as u8) * FRAG_ANY) | ((later as u8) * FRAG_LATER);
    let proto = h[9];
    let nw = (proto as u64) << 56 | (h[1] as u64) << 48 | (h[8] as u64) << 40 | (frag as u64) << 32;
    lay.l3_ofs = ofs as u16;
    let mut tp = 0;
    if !later {
        let seg = &rest[ihl..tot];
        if let Some(t) = transport(seg, proto) {
            tp = t;
            lay.l4_ofs = (ofs + ihl) as u16;
            lay.l4_len = seg.len() as u16;
        }
    }
    (addr, nw, tp)
}

/// The `W_TP` word for the transport or ICMP header at the start of `l4`; `None` when that
/// header is truncated (or malformed), `Some(0)` for protocols flows see no fields of.
#[inline(always)]
fn transport(l4: &[u8], proto: u8) -> Option<u64> {
    match proto {
        IPPROTO_UDP => l4.first_chunk::<8>().map(|u| (be32(u, 0) as u64) << 32),
        IPPROTO_TCP => {
            let t = l4.first_chunk::<20>()?;
            let hl = ((t[12] >> 4) as usize) * 4;
            if hl < 20 || hl > l4.len() {
                return None;
            }
            let flags = be16(t, 12) & l4::TCP_FLAGS_MASK;
            Some((be32(t, 0) as u64) << 32 | (flags as u64) << 16)
        }
        IPPROTO_SCTP => l4.first_chunk::<12>().map(|s| (be32(s, 0) as u64) << 32),
        // As in Open vSwitch, the protocol number alone decides (ICMPv4 in IPv6 still shows its
        // type and code), and IGMP's type and code show the same way.
        IPPROTO_ICMP | IPPROTO_ICMPV6 | IPPROTO_IGMP => icmp(l4),
        _ => Some(0),
    }
}

#[cold]
fn icmp(m: &[u8]) -> Option<u64> {
    let h = m.first_chunk::<8>()?;
    Some((h[0] as u64) << 48 | (h[1] as u64) << 32)
}

/// IPv6 and everything above it, written into `w` (whose words from `W_NW_ADDR` on are zero).
#[cold]
fn ipv6(rest: &[u8], ofs: usize, w: &mut [u64; KEY_WORDS], lay: &mut Layout) {
    let Some(h) = rest.first_chunk::<40>() else {
        return;
    };
    let end = ipv6::HEADER_LEN + be16(h, 4) as usize;
    if end > rest.len() {
        return;
    }
    let src = ipv6::be128(&h[8..24]);
    let dst = ipv6::be128(&h[24..40]);
    w[W_IPV6_SRC] = (src >> 64) as u64;
    w[W_IPV6_SRC + 1] = src as u64;
    w[W_IPV6_DST] = (dst >> 64) as u64;
    w[W_IPV6_DST + 1] = dst as u64;
    let word0 = be32(h, 0);
    let label = (word0 & ipv6::LABEL_MASK) as u64;
    lay.l3_ofs = ofs as u16;
    // A truncated extension-header chain leaves only the addresses, as in Open vSwitch.
    let Some(walk) = ipv6::walk_ext(&rest[ipv6::HEADER_LEN..end], h[6]) else {
        return;
    };
    let tc = (word0 >> 20) as u8;
    w[W_NW] = (walk.proto as u64) << 56
        | (tc as u64) << 48
        | (h[7] as u64) << 40
        | (walk.frag as u64) << 32
        | label;
    if walk.frag & FRAG_LATER != 0 {
        return;
    }
    let start = ipv6::HEADER_LEN + walk.ofs;
    let seg = &rest[start..end];
    let Some(tp) = transport(seg, walk.proto) else {
        return;
    };
    w[W_TP] = tp;
    lay.l4_ofs = (ofs + start) as u16;
    lay.l4_len = seg.len() as u16;
    if walk.proto == IPPROTO_ICMPV6 && l4::is_nd(seg[0], seg[1]) {
        let nd = l4::parse_nd(seg);
        w[W_ND_TARGET] = (nd.target >> 64) as u64;
        w[W_ND_TARGET + 1] = nd.target as u64;
        w[W_ARP_SHA] = mac(&nd.sll, 0);
        w[W_ARP_THA] = mac(&nd.tll, 0);
    }
}

/// Ethernet/IPv4 ARP, written into `w` (whose words from `W_NW_ADDR` on are zero).
#[cold]
fn arp(rest: &[u8], ofs: usize, w: &mut [u64; KEY_WORDS], lay: &mut Layout) {
    let Some(a) = rest.first_chunk::<28>() else {
        return;
    };
    if a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return;
    }
    // Flows see only an 8-bit opcode; larger ones read as 0.
    let op = be16(a, 6);
    let op = if op <= 0xff { op } else { 0 };
    w[W_TP] = op as u64;
    w[W_NW_ADDR] = (be32(a, 14) as u64) << 32 | be32(a, 24) as u64;
    w[W_ARP_SHA] = mac(a, 8);
    w[W_ARP_THA] = mac(a, 18);
    lay.l3_ofs = ofs as u16;
}

#[cfg(test)]
mod tests;
