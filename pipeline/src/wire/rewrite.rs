//! In-place header rewrites for action execution: VLAN push/pop/modify, field sets with
//! incremental checksum updates, and TTL decrement.
//!
//! This module owns changing bytes of a frame whose headers [`crate::extract::extract`] has
//! located, keeping every checksum valid. It does not decide what to rewrite (the caller compares
//! the key it tracks with the key it wants) and it never re-parses the whole frame: it trusts the
//! [`Layout`] for where headers are, but reads every old value (for checksum arithmetic) from the
//! frame and checks every length, so a stale layout can make a rewrite skip, never panic.

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
    // Nothing above L2 differs: the common case for MAC-only rewrites.
    if have.w[W_NW_ADDR..] == want.w[W_NW_ADDR..] || layout.l3_ofs == 0 {
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

/// A change of an address covered by the transport pseudo-header.
#[derive(Default)]
struct Pseudo {
    changes: [(u128, u128); 2],
    count: usize,
}

impl Pseudo {
    fn push(&mut self, old: u128, new: u128) {
        self.changes[self.count] = (old, new);
        self.count += 1;
    }
    fn iter(&self) -> impl Iterator<Item = &(u128, u128)> {
        self.changes[..self.count].iter()
    }
}

fn set_ipv4(rest: &mut [u8], l4r: core::ops::Range<usize>, df: &Diff) -> u32 {
    let mut n = 0;
    let Some(mut ip) = Ipv4Packet::new_checked(&mut *rest) else {
        return 0;
    };
    let proto = ip.protocol();
    let mut ps = Pseudo::default();
    if let Some(v) = df.get(loc::NW_SRC) {
        ps.push(ip.src() as u128, v);
        ip.set_src(v as u32);
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_DST) {
        ps.push(ip.dst() as u128, v);
        ip.set_dst(v as u32);
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TOS) {
        ip.set_tos(v as u8);
        n += 1;
    }
    if let Some(v) = df.get(loc::NW_TTL) {
        ip.set_ttl(v as u8);
        n += 1;
    }
    let l4 = rest.get_mut(l4r).unwrap_or(&mut []);
    n + set_l4(l4, proto, false, &ps, df)
}

fn set_ipv6(rest: &mut [u8], l4r: core::ops::Range<usize>, df: &Diff) -> u32 {
    let mut n = 0;
    let Some(mut ip) = Ipv6Packet::new_checked(&mut *rest) else {
        return 0;
    };
    let mut ps = Pseudo::default();
    if let Some(v) = df.get(loc::IPV6_SRC) {
        ps.push(ip.src(), v);
        ip.set_src(v);
        n += 1;
    }
    if let Some(v) = df.get(loc::IPV6_DST) {
        ps.push(ip.dst(), v);
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
    n + set_l4(l4, proto, true, &ps, df)
}

fn set_l4(l4: &mut [u8], proto: u8, v6: bool, ps: &Pseudo, df: &Diff) -> u32 {
    let mut n = 0;
    match proto {
        IPPROTO_TCP => {
            if let Some(mut t) = TcpHeader::new_checked(l4) {
                for (o, nw) in ps.iter() {
                    t.update_pseudo(*o, *nw);
                }
                if let Some(p) = df.get(loc::TP_SRC) {
                    t.set_src_port(p as u16);
                    n += 1;
                }
                if let Some(p) = df.get(loc::TP_DST) {
                    t.set_dst_port(p as u16);
                    n += 1;
                }
            }
        }
        IPPROTO_UDP => {
            if let Some(mut u) = UdpHeader::new_checked(l4) {
                for (o, nw) in ps.iter() {
                    u.update_pseudo(*o, *nw);
                }
                if let Some(p) = df.get(loc::TP_SRC) {
                    u.set_src_port(p as u16);
                    n += 1;
                }
                if let Some(p) = df.get(loc::TP_DST) {
                    u.set_dst_port(p as u16);
                    n += 1;
                }
            }
        }
        IPPROTO_SCTP => {
            if let Some(mut s) = SctpHeader::new_checked(l4) {
                let before = n;
                if let Some(p) = df.get(loc::TP_SRC) {
                    s.set_src_port(p as u16);
                    n += 1;
                }
                if let Some(p) = df.get(loc::TP_DST) {
                    s.set_dst_port(p as u16);
                    n += 1;
                }
                if n != before {
                    s.fill_checksum();
                }
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == v6 => {
            let nd = if v6 {
                l4::parse_nd(l4)
            } else {
                l4::NdInfo::default()
            };
            let Some(mut ic) = IcmpHeader::new_checked(&mut *l4) else {
                return 0;
            };
            // ICMPv4 has no pseudo-header; ICMPv6 does.
            if v6 {
                for (o, nw) in ps.iter() {
                    ic.update_pseudo(*o, *nw);
                }
            }
            let (ty, code) = (df.get(loc::ICMP_TYPE), df.get(loc::ICMP_CODE));
            if ty.is_some() || code.is_some() {
                let t = ty.unwrap_or(df.have.get(loc::ICMP_TYPE)) as u8;
                let c = code.unwrap_or(df.have.get(loc::ICMP_CODE)) as u8;
                ic.set_type_code(t, c);
                n += ty.is_some() as u32 + code.is_some() as u32;
            }
            let is_nd = v6
                && l4::is_nd(
                    df.have.get(loc::ICMP_TYPE) as u8,
                    df.have.get(loc::ICMP_CODE) as u8,
                );
            if is_nd && l4.len() >= l4::ND_LEN {
                n += set_nd(l4, &nd, df);
            }
        }
        _ => {}
    }
    n
}

/// ND target and link-layer address options; an option the message lacks is not added.
fn set_nd(msg: &mut [u8], nd: &l4::NdInfo, df: &Diff) -> u32 {
    use super::checksum::update128;
    let mut n = 0;
    let mut csum = u16::from_be_bytes([msg[2], msg[3]]);
    if let Some(v) = df.get(loc::ND_TARGET) {
        // The old target comes from the frame: a message flows see as malformed has a zero
        // target in the key but not on the wire.
        let old = super::ipv6::be128(&msg[l4::icmp_field::ND_TARGET]);
        csum = update128(csum, old, v);
        msg[l4::icmp_field::ND_TARGET].copy_from_slice(&v.to_be_bytes());
        n += 1;
    }
    for (l, at, old) in [
        (loc::ARP_SHA, nd.sll_ofs, nd.sll),
        (loc::ARP_THA, nd.tll_ofs, nd.tll),
    ] {
        if let (Some(v), true) = (df.get(l), at != 0 && at + 6 <= msg.len()) {
            let old = super::ethernet::mac_to_u64(&old) as u128;
            csum = update128(csum, old, v);
            msg[at..at + 6].copy_from_slice(&u64_to_mac(v as u64));
            n += 1;
        }
    }
    msg[2..4].copy_from_slice(&csum.to_be_bytes());
    n
}

#[cfg(test)]
mod tests;
