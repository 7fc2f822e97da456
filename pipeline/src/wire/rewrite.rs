//! In-place header rewrites for action execution: VLAN push/pop/modify, field sets with
//! incremental checksum updates, and TTL decrement.
//!
//! This module owns changing bytes of a frame whose headers [`crate::extract::extract`] has
//! located, keeping every checksum valid. It does not decide what to rewrite (the caller compares
//! the key it tracks with the key it wants, or plans a [`HopRewrite`] once per datapath flow)
//! and it never re-parses the whole frame: it trusts the [`Layout`] for where headers are, but
//! reads every old value (for checksum arithmetic) from the frame and checks every length, so a
//! stale layout can make a rewrite skip, never panic.

use super::arp::ArpPacket;
use super::ethernet::{is_vlan_tpid, u64_to_mac, HEADER_LEN, TAG_LEN};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::l4::{self, IcmpHeader, SctpHeader, TcpHeader, UdpHeader};
use super::{Frame, NoRoom};
use crate::extract::{Layout, ETH_TYPE_RARP};
use crate::field::{
    ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP,
};
use crate::key::{loc, FieldLoc, FlowKey, W_NW_ADDR};

/// Why a rewrite (or an encapsulation) could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("no room in the frame's buffer for the added header")]
    NoRoom,
    #[error("the frame lacks the header this rewrite needs")]
    NotPresent,
    #[error("a header is malformed (length fields, version or options)")]
    Malformed,
    #[error("a checksum does not verify")]
    BadChecksum,
}

impl From<NoRoom> for RewriteError {
    fn from(_: NoRoom) -> Self {
        RewriteError::NoRoom
    }
}

#[inline]
fn shift(ofs: &mut u16, by: i32) {
    if *ofs != 0 {
        *ofs = (*ofs as i32 + by) as u16;
    }
}

/// Pushes a new outer VLAN tag (`tci` is the wire TCI: PCP, DEI, VID) with TPID `tpid`.
pub fn push_vlan(
    frame: &mut Frame,
    layout: &mut Layout,
    tpid: u16,
    tci: u16,
) -> Result<(), RewriteError> {
    if frame.len() < HEADER_LEN {
        return Err(RewriteError::NotPresent);
    }
    frame.insert_gap(12, TAG_LEN)?;
    let d = frame.data_mut();
    d[12..14].copy_from_slice(&tpid.to_be_bytes());
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    layout.vlans = layout.vlans.saturating_add(1);
    shift(&mut layout.l3_ofs, TAG_LEN as i32);
    shift(&mut layout.l4_ofs, TAG_LEN as i32);
    Ok(())
}

/// Removes the outer VLAN tag.
pub fn pop_vlan(frame: &mut Frame, layout: &mut Layout) -> Result<(), RewriteError> {
    let d = frame.data();
    if d.len() < HEADER_LEN + TAG_LEN || !is_vlan_tpid(u16::from_be_bytes([d[12], d[13]])) {
        return Err(RewriteError::NotPresent);
    }
    frame.remove_gap(12, TAG_LEN);
    layout.vlans = layout.vlans.saturating_sub(1);
    shift(&mut layout.l3_ofs, -(TAG_LEN as i32));
    shift(&mut layout.l4_ofs, -(TAG_LEN as i32));
    Ok(())
}

/// Rewrites the outer tag's TCI (wire format) in place.
pub fn set_vlan_tci(frame: &mut Frame, layout: &Layout, tci: u16) -> Result<(), RewriteError> {
    let _ = layout;
    let d = frame.data_mut();
    if d.len() < HEADER_LEN + TAG_LEN || !is_vlan_tpid(u16::from_be_bytes([d[12], d[13]])) {
        return Err(RewriteError::NotPresent);
    }
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    Ok(())
}

/// Decrements the IPv4 TTL (with checksum update) or IPv6 hop limit. `Ok(false)` when it is
/// already <= 1: the frame is left as is and the caller drops it or sends it to the controller.
pub fn dec_ttl(frame: &mut Frame, layout: &Layout) -> Result<bool, RewriteError> {
    let l3 = layout.l3_ofs as usize;
    let d = frame.data_mut();
    if l3 < HEADER_LEN || l3 > d.len() {
        return Err(RewriteError::NotPresent);
    }
    // The type field right before the L3 header is the frame's dl_type, tagged or SNAP.
    match u16::from_be_bytes([d[l3 - 2], d[l3 - 1]]) {
        ETH_TYPE_IP => {
            let mut ip = Ipv4Packet::new_checked(&mut d[l3..]).ok_or(RewriteError::NotPresent)?;
            let t = ip.ttl();
            if t <= 1 {
                return Ok(false);
            }
            ip.set_ttl(t - 1);
            Ok(true)
        }
        ETH_TYPE_IPV6 => {
            let mut ip = Ipv6Packet::new_checked(&mut d[l3..]).ok_or(RewriteError::NotPresent)?;
            let t = ip.hop_limit();
            if t <= 1 {
                return Ok(false);
            }
            ip.set_hop_limit(t - 1);
            Ok(true)
        }
        _ => Err(RewriteError::NotPresent),
    }
}

/// Field differences between two keys, read lazily.
struct Diff<'a> {
    have: &'a FlowKey,
    want: &'a FlowKey,
}

impl Diff<'_> {
    #[inline]
    fn get(&self, l: FieldLoc) -> Option<u128> {
        let w = self.want.get(l);
        (self.have.get(l) != w).then_some(w)
    }
}

/// Rewrites every packet header field whose value differs between `have` (what the frame
/// carries now) and `want`: Ethernet addresses; IPv4 addresses, TOS and TTL; IPv6 addresses,
/// label, traffic class and hop limit; TCP/UDP/SCTP ports; ICMP type and code; ARP fields; ND
/// target and link-layer addresses. Checksums are updated incrementally (SCTP's CRC32c is
/// recomputed); a zero UDP checksum stays zero. VLAN fields and metadata are not touched. A field
/// whose header the frame lacks is skipped. Returns the number of fields written.
pub fn set_fields(
    frame: &mut Frame,
    layout: &Layout,
    have: &FlowKey,
    want: &FlowKey,
) -> Result<u32, RewriteError> {
    let df = Diff { have, want };
    let d = frame.data_mut();
    let mut n = 0u32;
    if d.len() >= HEADER_LEN {
        if let Some(m) = df.get(loc::DL_DST) {
            d[0..6].copy_from_slice(&u64_to_mac(m as u64));
            n += 1;
        }
        if let Some(m) = df.get(loc::DL_SRC) {
            d[6..12].copy_from_slice(&u64_to_mac(m as u64));
            n += 1;
        }
    }
    // Nothing above L2 differs: the common case for MAC-only rewrites. An OR of XORs rather
    // than a slice comparison, which calls memcmp on every rewrite.
    let above_l2 = have.w[W_NW_ADDR..]
        .iter()
        .zip(&want.w[W_NW_ADDR..])
        .fold(0, |d, (h, w)| d | (h ^ w));
    if above_l2 == 0 || layout.l3_ofs == 0 {
        return Ok(n);
    }
    let l3 = layout.l3_ofs as usize;
    let (l4s, l4e) = (
        layout.l4_ofs as usize,
        layout.l4_ofs as usize + layout.l4_len as usize,
    );
    let Some(rest) = d.get_mut(l3..) else {
        return Ok(n);
    };
    // The transport header, as a slice of `rest` (empty when absent).
    let l4_range = if layout.l4_ofs != 0 && l4s >= l3 && l4e <= l3 + rest.len() {
        l4s - l3..l4e - l3
    } else {
        0..0
    };
    match have.dl_type() {
        ETH_TYPE_IP => n += set_ipv4(rest, l4_range, &df),
        ETH_TYPE_IPV6 => n += set_ipv6(rest, l4_range, &df),
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            if let Some(mut a) = ArpPacket::new_checked(rest) {
                if let Some(v) = df.get(loc::ARP_OP) {
                    a.set_oper(v as u16);
                    n += 1;
                }
                if let Some(v) = df.get(loc::NW_SRC) {
                    a.set_spa(v as u32);
                    n += 1;
                }
                if let Some(v) = df.get(loc::NW_DST) {
                    a.set_tpa(v as u32);
                    n += 1;
                }
                if let Some(v) = df.get(loc::ARP_SHA) {
                    a.set_sha(u64_to_mac(v as u64));
                    n += 1;
                }
                if let Some(v) = df.get(loc::ARP_THA) {
                    a.set_tha(u64_to_mac(v as u64));
                    n += 1;
                }
            }
        }
        _ => {}
    }
    Ok(n)
}

/// A field set that changes only whole Ethernet addresses and the TTL (IPv6: hop limit), which
/// is what a router hop does to every frame: `set(eth(src=..,dst=..)),set(ipv4(ttl=..))`.
/// Planned once, when the datapath flow is installed, it writes its bytes directly, without
/// the key comparison [`set_fields`] makes to find what changed, and leaves the frame
/// `set_fields` would leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopRewrite {
    dl_dst: Option<[u8; 6]>,
    dl_src: Option<[u8; 6]>,
    ttl: Option<u8>,
}

impl HopRewrite {
    /// The plan for setting `value` under `mask`, when it sets nothing but whole Ethernet
    /// addresses and the whole TTL (and something); `None` for any other set.
    pub fn plan(value: &FlowKey, mask: &FlowKey) -> Option<HopRewrite> {
        let mut covered = FlowKey::ZERO;
        let mut whole = |l: FieldLoc| {
            let m = mask.get(l);
            if m == 0 {
                return Some(None);
            }
            covered.set_all(l);
            (m == covered.get(l)).then(|| Some(value.get(l)))
        };
        let plan = HopRewrite {
            dl_dst: whole(loc::DL_DST)?.map(|v| u64_to_mac(v as u64)),
            dl_src: whole(loc::DL_SRC)?.map(|v| u64_to_mac(v as u64)),
            ttl: whole(loc::NW_TTL)?.map(|v| v as u8),
        };
        (covered == *mask && plan != HopRewrite::default()).then_some(plan)
    }

    /// Rewrites the frame whose key is `have`. Like [`set_fields`], it writes the addresses
    /// when the frame has an Ethernet header and the TTL when it has a well-formed IPv4 or
    /// IPv6 header, and skips what the frame lacks.
    #[inline]
    pub fn apply(&self, frame: &mut Frame, layout: &Layout, have: &FlowKey) {
        let d = frame.data_mut();
        if d.len() >= HEADER_LEN {
            if let Some(m) = self.dl_dst {
                d[0..6].copy_from_slice(&m);
            }
            if let Some(m) = self.dl_src {
                d[6..12].copy_from_slice(&m);
            }
        }
        let Some(ttl) = self.ttl else {
            return;
        };
        let Some(rest) = d
            .get_mut(layout.l3_ofs as usize..)
            .filter(|_| layout.l3_ofs != 0)
        else {
            return;
        };
        match have.dl_type() {
            ETH_TYPE_IP => {
                if let Some(mut ip) = Ipv4Packet::new_checked(&mut *rest) {
                    if ip.ttl() != ttl {
                        ip.set_ttl(ttl);
                    }
                }
            }
            ETH_TYPE_IPV6 => {
                if let Some(mut ip) = Ipv6Packet::new_checked(&mut *rest) {
                    ip.set_hop_limit(ttl);
                }
            }
            _ => {}
        }
    }
}

/// A pending change to a one's-complement sum (RFC 1624 eqn. 3), accumulated over every field
/// that changes and applied to a checksum once: cheaper than updating the checksum per 16-bit
/// word, and the same delta serves the pseudo-header part of any transport checksum.
#[derive(Clone, Copy, Default)]
struct Delta(u32);

impl Delta {
    #[inline]
    fn add16(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u32 + new as u32;
    }
    #[inline]
    fn add32(&mut self, old: u32, new: u32) {
        self.add16((old >> 16) as u16, (new >> 16) as u16);
        self.add16(old as u16, new as u16);
    }
    #[inline]
    fn add128(&mut self, old: u128, new: u128) {
        self.add32((old >> 96) as u32, (new >> 96) as u32);
        self.add32((old >> 64) as u32, (new >> 64) as u32);
        self.add32((old >> 32) as u32, (new >> 32) as u32);
        self.add32(old as u32, new as u32);
    }
    #[inline]
    fn is_zero(self) -> bool {
        self.0 == 0
    }
    /// The checksum after the accumulated changes.
    #[inline]
    fn apply(self, csum: u16) -> u16 {
        let mut acc = (!csum) as u32 as u64 + self.0 as u64;
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        !(acc as u16)
    }
}

#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn set_ipv4(rest: &mut [u8], l4r: core::ops::Range<usize>, df: &Diff) -> u32 {
    let mut n = 0;
    let Some(ip) = Ipv4Packet::new_checked(&*rest) else {
        return 0;
    };
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let h = &mut rest[..super::ipv4::MIN_HEADER_LEN];
    // `hd` is the header checksum's change, `ps` the transport pseudo-header's.
    let (mut hd, mut ps) = (Delta::default(), Delta::default());
    if let Some(v) = df.get(loc::NW_SRC) {
        let v = v as u32;
        hd.add32(src, v);
        ps.add32(src, v);
        h[12..16].copy_from_slice(&v.to_be_bytes());
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_DST) {
        let v = v as u32;
        hd.add32(dst, v);
        ps.add32(dst, v);
        h[16..20].copy_from_slice(&v.to_be_bytes());
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TOS) {
        let old = rd16(h, 0);
        h[1] = v as u8;
        hd.add16(old, rd16(h, 0));
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TTL) {
        let old = rd16(h, 8);
        h[8] = v as u8;
        hd.add16(old, rd16(h, 8));
        n += 1;
    }
    if n != 0 {
        let c = hd.apply(rd16(h, 10));
        wr16(h, 10, c);
    }
    let l4 = rest.get_mut(l4r).unwrap_or(&mut []);
    n + set_l4(l4, proto, false, ps, df)
}

fn set_ipv6(rest: &mut [u8], l4r: core::ops::Range<usize>, df: &Diff) -> u32 {
    let mut n = 0;
    let Some(mut ip) = Ipv6Packet::new_checked(&mut *rest) else {
        return 0;
    };
    let mut ps = Delta::default();
    if let Some(v) = df.get(loc::IPV6_SRC) {
        ps.add128(ip.src(), v);
        ip.set_src(v);
        n += 1;
    }
    if let Some(v) = df.get(loc::IPV6_DST) {
        // With a routing header still to be processed the transport checksum covers the final
        // destination, which this rewrite does not change.
        let ext = ip.payload_ext();
        if !super::ipv6::routing_pending(ext.0, ext.1) {
            ps.add128(ip.dst(), v);
        }
        ip.set_dst(v);
        n += 1;
    }
    if let Some(v) = df.get(loc::IPV6_LABEL) {
        ip.set_flow_label(v as u32);
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TOS) {
        ip.set_traffic_class(v as u8);
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TTL) {
        ip.set_hop_limit(v as u8);
        n += 1;
    }
    // The upper-layer protocol comes from the key: finding it in the frame means walking the
    // extension headers again, and nw_proto is not writable, so the key cannot be stale.
    let proto = df.have.nw_proto();
    let l4 = rest.get_mut(l4r).unwrap_or(&mut []);
    n + set_l4(l4, proto, true, ps, df)
}

/// Ports of TCP/UDP/SCTP (at bytes 0..4 of each), with the checksum at `csum_at` for TCP/UDP.
fn set_ports(l4: &mut [u8], mut d: Delta, csum_at: Option<usize>, df: &Diff) -> (u32, bool) {
    let mut n = 0;
    if let Some(p) = df.get(loc::TP_SRC) {
        d.add16(rd16(l4, 0), p as u16);
        wr16(l4, 0, p as u16);
        n += 1;
    }
    if let Some(p) = df.get(loc::TP_DST) {
        d.add16(rd16(l4, 2), p as u16);
        wr16(l4, 2, p as u16);
        n += 1;
    }
    if let Some(at) = csum_at {
        let c = rd16(l4, at);
        // UDP: zero means "no checksum" and stays so; a computed zero is sent as 0xffff.
        let udp_none = at == 6 && c == 0;
        if !udp_none && !d.is_zero() {
            let nc = d.apply(c);
            wr16(l4, at, if at == 6 && nc == 0 { 0xffff } else { nc });
        }
    }
    (n, n != 0)
}

fn set_l4(l4: &mut [u8], proto: u8, v6: bool, ps: Delta, df: &Diff) -> u32 {
    match proto {
        IPPROTO_TCP if TcpHeader::new_checked(&*l4).is_some() => set_ports(l4, ps, Some(16), df).0,
        IPPROTO_UDP if UdpHeader::new_checked(&*l4).is_some() => set_ports(l4, ps, Some(6), df).0,
        IPPROTO_SCTP if SctpHeader::new_checked(&*l4).is_some() => {
            let (n, changed) = set_ports(l4, ps, None, df);
            if changed {
                SctpHeader::new_unchecked(l4).fill_checksum();
            }
            n
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == v6 => {
            if IcmpHeader::new_checked(&*l4).is_none() {
                return 0;
            }
            let mut n = 0;
            // ICMPv4 has no pseudo-header; ICMPv6 does.
            let mut d = if v6 { ps } else { Delta::default() };
            let (ty, code) = (df.get(loc::ICMP_TYPE), df.get(loc::ICMP_CODE));
            if ty.is_some() || code.is_some() {
                let old = rd16(l4, 0);
                let t = ty.unwrap_or(old as u128 >> 8) as u8;
                let c = code.unwrap_or(old as u128 & 0xff) as u8;
                let new = u16::from_be_bytes([t, c]);
                d.add16(old, new);
                wr16(l4, 0, new);
                n += ty.is_some() as u32 + code.is_some() as u32;
            }
            let is_nd = v6
                && l4::is_nd(
                    df.have.get(loc::ICMP_TYPE) as u8,
                    df.have.get(loc::ICMP_CODE) as u8,
                );
            if is_nd && l4.len() >= l4::ND_LEN {
                n += set_nd(l4, &mut d, df);
            }
            if !d.is_zero() {
                let c = d.apply(rd16(l4, 2));
                wr16(l4, 2, c);
            }
            n
        }
        _ => 0,
    }
}

/// ND target and link-layer address options; an option the message lacks is not added.
fn set_nd(msg: &mut [u8], d: &mut Delta, df: &Diff) -> u32 {
    let mut n = 0;
    if let Some(v) = df.get(loc::ND_TARGET) {
        // The old target comes from the frame: a message flows see as malformed has a zero
        // target in the key but not on the wire.
        d.add128(super::ipv6::be128(&msg[l4::icmp_field::ND_TARGET]), v);
        msg[l4::icmp_field::ND_TARGET].copy_from_slice(&v.to_be_bytes());
        n += 1;
    }
    let nd = l4::parse_nd(msg);
    for (l, at) in [(loc::ARP_SHA, nd.sll_ofs), (loc::ARP_THA, nd.tll_ofs)] {
        if let (Some(v), true) = (df.get(l), at != 0 && at + 6 <= msg.len()) {
            let mut old = [0u8; 6];
            old.copy_from_slice(&msg[at..at + 6]);
            d.add128(
                super::ethernet::mac_to_u64(&old) as u128,
                v & 0xffff_ffff_ffff,
            );
            msg[at..at + 6].copy_from_slice(&u64_to_mac(v as u64));
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests;
