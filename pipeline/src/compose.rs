//! Frames from flow descriptions: [`compose`] (a key to a frame, for trace) and
//! [`PacketBuilder`] (the packet generator shared by tests and benches).
//!
//! This module owns writing well-formed frames with correct lengths and checksums. It is not on
//! the datapath: it allocates, and it trusts its inputs (a builder told to put 70 000 bytes of
//! payload in an IPv4 packet writes a wrong length rather than failing).

use crate::extract::ETH_TYPE_RARP;
use crate::field::{
    ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP,
};
use crate::key::{loc, FlowKey, FRAG_ANY, FRAG_LATER, VLAN_CFI};
use crate::wire::checksum;
use crate::wire::ethernet::{u64_to_mac, TPID_8021AD, TPID_8021Q};
use crate::wire::{ipv4, ipv6, l4};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug)]
enum L3 {
    /// Anything else: the EtherType (or an 802.3 length when below 0x600) and no header.
    Raw(u16),
    Ipv4 {
        src: u32,
        dst: u32,
        tos: u8,
        ttl: u8,
        ident: u16,
        flags_offset: u16,
        options: Vec<u8>,
    },
    Ipv6 {
        src: u128,
        dst: u128,
        tclass: u8,
        label: u32,
        hlim: u8,
        /// Extension headers in order: (their own protocol number, body after next-header/len).
        ext: Vec<(u8, Vec<u8>)>,
    },
    Arp {
        ethertype: u16,
        op: u16,
        sha: [u8; 6],
        spa: u32,
        tha: [u8; 6],
        tpa: u32,
    },
}

#[derive(Clone, Debug)]
enum L4 {
    /// No transport header; the IP protocol number.
    Raw(u8),
    Tcp {
        sport: u16,
        dport: u16,
        flags: u16,
        seq: u32,
        ack: u32,
        window: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
        zero_csum: bool,
    },
    Sctp {
        sport: u16,
        dport: u16,
        vtag: u32,
    },
    /// ICMPv4 or ICMPv6 (by the L3 header): type, code, the 4 bytes after the checksum.
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    Nd {
        ty: u8,
        target: u128,
        sll: Option<[u8; 6]>,
        tll: Option<[u8; 6]>,
    },
}

/// Builds frames with correct lengths and checksums, e.g.
/// `PacketBuilder::udp4(src_mac, dst_mac, src_ip, dst_ip, 5000, 53).vlan(2207).payload_len(18).build()`.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// (TPID, wire TCI), outermost first.
    tags: Vec<(u16, u16)>,
    l3: L3,
    l4: L4,
    payload_len: usize,
    payload_byte: u8,
}

fn v4(a: Ipv4Addr) -> u32 {
    u32::from(a)
}
fn v6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

impl PacketBuilder {
    fn with(src_mac: [u8; 6], dst_mac: [u8; 6], l3: L3, l4: L4) -> Self {
        PacketBuilder {
            src_mac,
            dst_mac,
            tags: Vec::new(),
            l3,
            l4,
            payload_len: 0,
            payload_byte: 0,
        }
    }

    fn ip4(src: Ipv4Addr, dst: Ipv4Addr) -> L3 {
        L3::Ipv4 {
            src: v4(src),
            dst: v4(dst),
            tos: 0,
            ttl: 64,
            ident: 0,
            flags_offset: 0,
            options: Vec::new(),
        }
    }

    fn ip6(src: Ipv6Addr, dst: Ipv6Addr) -> L3 {
        L3::Ipv6 {
            src: v6(src),
            dst: v6(dst),
            tclass: 0,
            label: 0,
            hlim: 64,
            ext: Vec::new(),
        }
    }

    /// An Ethernet frame with EtherType (or 802.3 length) `ethertype` and no parsed header.
    pub fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ethertype: u16) -> Self {
        Self::with(src_mac, dst_mac, L3::Raw(ethertype), L4::Raw(0))
    }

    /// IPv4 with protocol `proto` and no transport header.
    pub fn ipv4(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
    ) -> Self {
        Self::with(src_mac, dst_mac, Self::ip4(src, dst), L4::Raw(proto))
    }

    pub fn udp4(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        Self::with(
            src_mac,
            dst_mac,
            Self::ip4(src, dst),
            L4::Udp {
                sport,
                dport,
                zero_csum: false,
            },
        )
    }

    /// TCP over IPv4; flags default to SYN.
    pub fn tcp4(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        let t = L4::Tcp {
            sport,
            dport,
            flags: 0x002,
            seq: 1,
            ack: 0,
            window: 65535,
        };
        Self::with(src_mac, dst_mac, Self::ip4(src, dst), t)
    }

    pub fn sctp4(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        Self::with(
            src_mac,
            dst_mac,
            Self::ip4(src, dst),
            L4::Sctp {
                sport,
                dport,
                vtag: 0x1234_5678,
            },
        )
    }

    /// ICMP echo request with identifier `id` and sequence number `seq`.
    pub fn icmp4_echo(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        seq: u16,
    ) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::with(
            src_mac,
            dst_mac,
            Self::ip4(src, dst),
            L4::Icmp {
                ty: 8,
                code: 0,
                rest: [a, b, c, d],
            },
        )
    }

    pub fn udp6(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        Self::with(
            src_mac,
            dst_mac,
            Self::ip6(src, dst),
            L4::Udp {
                sport,
                dport,
                zero_csum: false,
            },
        )
    }

    pub fn tcp6(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        let t = L4::Tcp {
            sport,
            dport,
            flags: 0x002,
            seq: 1,
            ack: 0,
            window: 65535,
        };
        Self::with(src_mac, dst_mac, Self::ip6(src, dst), t)
    }

    pub fn sctp6(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
    ) -> Self {
        Self::with(
            src_mac,
            dst_mac,
            Self::ip6(src, dst),
            L4::Sctp {
                sport,
                dport,
                vtag: 0x1234_5678,
            },
        )
    }

    pub fn ipv6(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        proto: u8,
    ) -> Self {
        Self::with(src_mac, dst_mac, Self::ip6(src, dst), L4::Raw(proto))
    }

    /// ICMPv6 echo request.
    pub fn icmp6_echo(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        id: u16,
        seq: u16,
    ) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::with(
            src_mac,
            dst_mac,
            Self::ip6(src, dst),
            L4::Icmp {
                ty: 128,
                code: 0,
                rest: [a, b, c, d],
            },
        )
    }

    /// Neighbor solicitation for `target`, with a source link-layer address option (`src_mac`).
    pub fn nd_ns(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        target: Ipv6Addr,
    ) -> Self {
        let nd = L4::Nd {
            ty: l4::ND_NS,
            target: v6(target),
            sll: Some(src_mac),
            tll: None,
        };
        Self::with(src_mac, dst_mac, Self::ip6(src, dst), nd).hop_limit(255)
    }

    /// Neighbor advertisement for `target`, with a target link-layer address option (`src_mac`).
    pub fn nd_na(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        target: Ipv6Addr,
    ) -> Self {
        let nd = L4::Nd {
            ty: l4::ND_NA,
            target: v6(target),
            sll: None,
            tll: Some(src_mac),
        };
        Self::with(src_mac, dst_mac, Self::ip6(src, dst), nd).hop_limit(255)
    }

    /// ARP request from (`sha`, `spa`) for `tpa`, broadcast.
    pub fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
        let a = L3::Arp {
            ethertype: ETH_TYPE_ARP,
            op: 1,
            sha,
            spa: v4(spa),
            tha: [0; 6],
            tpa: v4(tpa),
        };
        Self::with(sha, [0xff; 6], a, L4::Raw(0))
    }

    /// ARP reply telling (`tha`, `tpa`) that `spa` is at `sha`.
    pub fn arp_reply(sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Self {
        let a = L3::Arp {
            ethertype: ETH_TYPE_ARP,
            op: 2,
            sha,
            spa: v4(spa),
            tha,
            tpa: v4(tpa),
        };
        Self::with(sha, tha, a, L4::Raw(0))
    }

    /// Adds an 802.1Q tag with VLAN id `vid` (PCP 0) inside any tags already added.
    pub fn vlan(self, vid: u16) -> Self {
        self.tag(TPID_8021Q, vid & 0x0fff)
    }

    /// Adds a tag with the given TPID and wire TCI (PCP, DEI, VID) inside any already added.
    pub fn tag(mut self, tpid: u16, tci: u16) -> Self {
        self.tags.push((tpid, tci));
        self
    }

    /// 802.1ad outer tag `svid` and 802.1Q inner tag `cvid`.
    pub fn qinq(self, svid: u16, cvid: u16) -> Self {
        self.tag(TPID_8021AD, svid & 0x0fff)
            .tag(TPID_8021Q, cvid & 0x0fff)
    }

    pub fn payload_len(mut self, n: usize) -> Self {
        self.payload_len = n;
        self
    }

    /// The byte payload bytes are filled with (0 by default).
    pub fn payload_byte(mut self, b: u8) -> Self {
        self.payload_byte = b;
        self
    }

    /// IPv4 TOS or IPv6 traffic class.
    pub fn tos(mut self, v: u8) -> Self {
        match &mut self.l3 {
            L3::Ipv4 { tos, .. } => *tos = v,
            L3::Ipv6 { tclass, .. } => *tclass = v,
            _ => {}
        }
        self
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, v: u8) -> Self {
        match &mut self.l3 {
            L3::Ipv4 { ttl, .. } => *ttl = v,
            L3::Ipv6 { hlim, .. } => *hlim = v,
            _ => {}
        }
        self
    }

    pub fn hop_limit(self, v: u8) -> Self {
        self.ttl(v)
    }

    pub fn ident(mut self, v: u16) -> Self {
        if let L3::Ipv4 { ident, .. } = &mut self.l3 {
            *ident = v;
        }
        self
    }

    /// IPv4 fragment: offset in 8-byte units, more-fragments flag. On IPv6 this adds a
    /// fragment header (identification 0x1234).
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        match &mut self.l3 {
            L3::Ipv4 { flags_offset, .. } => {
                *flags_offset = (offset & ipv4::OFFSET_MASK) | if more { ipv4::FLAG_MF } else { 0 };
            }
            L3::Ipv6 { ext, .. } => {
                let offlg = (offset << 3) | more as u16;
                let mut body = vec![0u8; 6];
                body[0..2].copy_from_slice(&offlg.to_be_bytes());
                body[2..6].copy_from_slice(&0x1234u32.to_be_bytes());
                ext.push((ipv6::NH_FRAGMENT, body));
            }
            _ => {}
        }
        self
    }

    pub fn dont_fragment(mut self) -> Self {
        if let L3::Ipv4 { flags_offset, .. } = &mut self.l3 {
            *flags_offset |= ipv4::FLAG_DF;
        }
        self
    }

    /// IPv4 options (padded with zeros to a multiple of 4 bytes).
    pub fn ip_options(mut self, opts: &[u8]) -> Self {
        if let L3::Ipv4 { options, .. } = &mut self.l3 {
            options.extend_from_slice(opts);
            while options.len() & 3 != 0 {
                options.push(0);
            }
        }
        self
    }

    /// An IPv6 extension header (hop-by-hop 0, routing 43, destination options 60: body padded
    /// to fill 8-byte units; authentication 51: 4-byte units) after those already added.
    pub fn ipv6_ext(mut self, kind: u8, body: &[u8]) -> Self {
        if let L3::Ipv6 { ext, .. } = &mut self.l3 {
            let unit = if kind == ipv6::NH_AUTH { 4 } else { 8 };
            let mut b = body.to_vec();
            while (b.len() + 2) & (unit - 1) != 0 || b.len() + 2 < 8 {
                b.push(0);
            }
            ext.push((kind, b));
        }
        self
    }

    pub fn flow_label(mut self, v: u32) -> Self {
        if let L3::Ipv6 { label, .. } = &mut self.l3 {
            *label = v & ipv6::LABEL_MASK;
        }
        self
    }

    /// TCP flags (12 bits).
    pub fn tcp_flags(mut self, f: u16) -> Self {
        if let L4::Tcp { flags, .. } = &mut self.l4 {
            *flags = f & l4::TCP_FLAGS_MASK;
        }
        self
    }

    pub fn seq(mut self, v: u32) -> Self {
        if let L4::Tcp { seq, .. } = &mut self.l4 {
            *seq = v;
        }
        self
    }

    pub fn ack(mut self, v: u32) -> Self {
        if let L4::Tcp { ack, .. } = &mut self.l4 {
            *ack = v;
        }
        self
    }

    /// Sends UDP without a checksum (zero), as IPv4 allows.
    pub fn no_udp_checksum(mut self) -> Self {
        if let L4::Udp { zero_csum, .. } = &mut self.l4 {
            *zero_csum = true;
        }
        self
    }

    /// ICMP type and code (keeping the 4 bytes after the checksum).
    pub fn icmp_type_code(mut self, t: u8, c: u8) -> Self {
        if let L4::Icmp { ty, code, .. } = &mut self.l4 {
            *ty = t;
            *code = c;
        }
        self
    }

    /// ND options: source and target link-layer addresses (None: option absent).
    pub fn nd_options(mut self, s: Option<[u8; 6]>, t: Option<[u8; 6]>) -> Self {
        if let L4::Nd { sll, tll, .. } = &mut self.l4 {
            *sll = s;
            *tll = t;
        }
        self
    }

    pub fn arp_op(mut self, v: u16) -> Self {
        if let L3::Arp { op, .. } = &mut self.l3 {
            *op = v;
        }
        self
    }

    /// Reverse ARP instead of ARP (same layout).
    pub fn rarp(mut self) -> Self {
        if let L3::Arp { ethertype, .. } = &mut self.l3 {
            *ethertype = ETH_TYPE_RARP;
        }
        self
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let pay = vec![self.payload_byte; self.payload_len];
        let mut b = match &self.l4 {
            L4::Raw(_) => Vec::new(),
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
            } => {
                let mut t = vec![0u8; l4::TCP_MIN_LEN];
                t[0..2].copy_from_slice(&sport.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
                t[4..8].copy_from_slice(&seq.to_be_bytes());
                t[8..12].copy_from_slice(&ack.to_be_bytes());
                t[12..14].copy_from_slice(&(0x5000 | flags).to_be_bytes());
                t[14..16].copy_from_slice(&window.to_be_bytes());
                t
            }
            L4::Udp { sport, dport, .. } => {
                let mut u = vec![0u8; l4::UDP_LEN];
                u[0..2].copy_from_slice(&sport.to_be_bytes());
                u[2..4].copy_from_slice(&dport.to_be_bytes());
                u[4..6].copy_from_slice(&((l4::UDP_LEN + pay.len()) as u16).to_be_bytes());
                u
            }
            L4::Sctp { sport, dport, vtag } => {
                let mut s = vec![0u8; l4::SCTP_LEN];
                s[0..2].copy_from_slice(&sport.to_be_bytes());
                s[2..4].copy_from_slice(&dport.to_be_bytes());
                s[4..8].copy_from_slice(&vtag.to_be_bytes());
                s
            }
            L4::Icmp { ty, code, rest } => {
                let mut i = vec![*ty, *code, 0, 0];
                i.extend_from_slice(rest);
                i
            }
            L4::Nd {
                ty,
                target,
                sll,
                tll,
            } => {
                // NA: solicited + override flags; NS: reserved.
                let flags: u8 = if *ty == l4::ND_NA { 0x60 } else { 0 };
                let mut n = vec![*ty, 0, 0, 0, flags, 0, 0, 0];
                n.extend_from_slice(&target.to_be_bytes());
                for (kind, mac) in [(l4::ND_OPT_SLL, sll), (l4::ND_OPT_TLL, tll)] {
                    if let Some(m) = mac {
                        n.extend_from_slice(&[kind, 1]);
                        n.extend_from_slice(m);
                    }
                }
                n
            }
        };
        b.extend_from_slice(&pay);
        b
    }

    fn proto(&self, v6: bool) -> u8 {
        match self.l4 {
            L4::Raw(p) => p,
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Sctp { .. } => IPPROTO_SCTP,
            L4::Icmp { .. } if !v6 => IPPROTO_ICMP,
            L4::Icmp { .. } | L4::Nd { .. } => IPPROTO_ICMPV6,
        }
    }

    /// Fills the transport checksum, given the pseudo-header sum (`None` for ICMPv4, which
    /// has none).
    fn fill_l4_checksum(&self, b: &mut [u8], pseudo: Option<u32>) {
        let at = match self.l4 {
            L4::Raw(_) => return,
            L4::Sctp { .. } => {
                if let Some(mut s) = l4::SctpHeader::new_checked(b) {
                    s.fill_checksum();
                }
                return;
            }
            L4::Udp {
                zero_csum: true, ..
            } => return,
            L4::Tcp { .. } => 16,
            L4::Udp { .. } => 6,
            L4::Icmp { .. } | L4::Nd { .. } => 2,
        };
        if b.len() < at + 2 {
            return;
        }
        let mut c = checksum::finish(checksum::sum(pseudo.unwrap_or(0), b));
        if c == 0 && matches!(self.l4, L4::Udp { .. }) {
            c = 0xffff;
        }
        b[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// The frame, with all lengths and checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.payload_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        match &self.l3 {
            L3::Raw(t) => {
                // An 802.3 frame carries its length instead of a type.
                let t = if *t < 0x600 {
                    (self.payload_len as u16).min(0x5ff)
                } else {
                    *t
                };
                f.extend_from_slice(&t.to_be_bytes());
                f.extend(std::iter::repeat_n(self.payload_byte, self.payload_len));
            }
            L3::Arp {
                ethertype,
                op,
                sha,
                spa,
                tha,
                tpa,
            } => {
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
                f.extend_from_slice(&op.to_be_bytes());
                f.extend_from_slice(sha);
                f.extend_from_slice(&spa.to_be_bytes());
                f.extend_from_slice(tha);
                f.extend_from_slice(&tpa.to_be_bytes());
                f.extend(std::iter::repeat_n(self.payload_byte, self.payload_len));
            }
            L3::Ipv4 {
                src,
                dst,
                tos,
                ttl,
                ident,
                flags_offset,
                options,
            } => {
                f.extend_from_slice(&ETH_TYPE_IP.to_be_bytes());
                let mut l4b = self.l4_bytes();
                let proto = self.proto(false);
                let pseudo = (proto != IPPROTO_ICMP)
                    .then(|| ipv4::pseudo_sum(*src, *dst, proto, l4b.len() as u16));
                self.fill_l4_checksum(&mut l4b, pseudo);
                let hl = 20 + options.len();
                let mut h = vec![0u8; hl];
                h[20..].copy_from_slice(options);
                let mut p = ipv4::Ipv4Packet::new_unchecked(&mut h[..]);
                p.set_ver_ihl(hl);
                p.set_total_len((hl + l4b.len()) as u16);
                p.set_ident(*ident);
                p.set_flags_offset(*flags_offset);
                p.set_protocol(proto);
                h[1] = *tos;
                h[8] = *ttl;
                h[12..16].copy_from_slice(&src.to_be_bytes());
                h[16..20].copy_from_slice(&dst.to_be_bytes());
                ipv4::Ipv4Packet::new_unchecked(&mut h[..]).fill_checksum();
                f.extend_from_slice(&h);
                f.extend_from_slice(&l4b);
            }
            L3::Ipv6 {
                src,
                dst,
                tclass,
                label,
                hlim,
                ext,
            } => {
                f.extend_from_slice(&ETH_TYPE_IPV6.to_be_bytes());
                let mut l4b = self.l4_bytes();
                let proto = self.proto(true);
                let pseudo = ipv6::pseudo_sum(*src, *dst, proto, l4b.len() as u32);
                self.fill_l4_checksum(&mut l4b, Some(pseudo));
                let mut exts = Vec::new();
                for (i, (kind, body)) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(proto, |e| e.0);
                    let len_field = match *kind {
                        ipv6::NH_FRAGMENT => 0,
                        ipv6::NH_AUTH => ((body.len() + 2) / 4 - 2) as u8,
                        _ => ((body.len() + 2) / 8 - 1) as u8,
                    };
                    exts.extend_from_slice(&[next, len_field]);
                    exts.extend_from_slice(body);
                }
                let first = ext.first().map_or(proto, |e| e.0);
                let mut h = [0u8; 40];
                let word0 = 6u32 << 28 | (*tclass as u32) << 20 | (label & ipv6::LABEL_MASK);
                h[0..4].copy_from_slice(&word0.to_be_bytes());
                h[4..6].copy_from_slice(&((exts.len() + l4b.len()) as u16).to_be_bytes());
                h[6] = first;
                h[7] = *hlim;
                h[8..24].copy_from_slice(&src.to_be_bytes());
                h[24..40].copy_from_slice(&dst.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(&exts);
                f.extend_from_slice(&l4b);
            }
        }
        f
    }
}

/// Builds a frame that [`crate::extract::extract`] maps back to the same packet fields as
/// `key` for the fields set; unset (zero) TTL and hop limit become 64. `payload_len` bytes of
/// zero payload follow the last header. IPv4 later fragments (`FRAG_LATER`) get offset 185
/// (1480 bytes); IPv6 fragments get a fragment header.
pub fn compose(key: &FlowKey, payload_len: usize) -> Vec<u8> {
    let g = |l| key.get(l);
    let src_mac = u64_to_mac(g(loc::DL_SRC) as u64);
    let dst_mac = u64_to_mac(g(loc::DL_DST) as u64);
    let dl_type = key.dl_type();
    let proto = key.nw_proto();
    let frag = key.nw_frag();
    let (tp_src, tp_dst) = (g(loc::TP_SRC) as u16, g(loc::TP_DST) as u16);
    let ttl = match g(loc::NW_TTL) as u8 {
        0 => 64,
        t => t,
    };
    let later = frag & FRAG_LATER != 0;
    let sha = u64_to_mac(g(loc::ARP_SHA) as u64);
    let tha = u64_to_mac(g(loc::ARP_THA) as u64);
    let mut b = match dl_type {
        ETH_TYPE_IP => {
            let (s, d) = (
                Ipv4Addr::from(g(loc::NW_SRC) as u32),
                Ipv4Addr::from(g(loc::NW_DST) as u32),
            );
            let b = match proto {
                _ if later => PacketBuilder::ipv4(src_mac, dst_mac, s, d, proto),
                IPPROTO_TCP => PacketBuilder::tcp4(src_mac, dst_mac, s, d, tp_src, tp_dst)
                    .tcp_flags(g(loc::TCP_FLAGS) as u16),
                IPPROTO_UDP => PacketBuilder::udp4(src_mac, dst_mac, s, d, tp_src, tp_dst),
                IPPROTO_SCTP => PacketBuilder::sctp4(src_mac, dst_mac, s, d, tp_src, tp_dst),
                IPPROTO_ICMP => PacketBuilder::icmp4_echo(src_mac, dst_mac, s, d, 0, 0)
                    .icmp_type_code(tp_src as u8, tp_dst as u8),
                _ => PacketBuilder::ipv4(src_mac, dst_mac, s, d, proto),
            };
            let b = b.tos(g(loc::NW_TOS) as u8).ttl(ttl);
            match (frag & FRAG_ANY != 0, later) {
                (_, true) => b.fragment(185, true),
                (true, false) => b.fragment(0, true),
                _ => b,
            }
        }
        ETH_TYPE_IPV6 => {
            let s = Ipv6Addr::from(g(loc::IPV6_SRC));
            let d = Ipv6Addr::from(g(loc::IPV6_DST));
            let b = match proto {
                _ if later => PacketBuilder::ipv6(src_mac, dst_mac, s, d, 17),
                IPPROTO_TCP => PacketBuilder::tcp6(src_mac, dst_mac, s, d, tp_src, tp_dst)
                    .tcp_flags(g(loc::TCP_FLAGS) as u16),
                IPPROTO_UDP => PacketBuilder::udp6(src_mac, dst_mac, s, d, tp_src, tp_dst),
                IPPROTO_SCTP => PacketBuilder::sctp6(src_mac, dst_mac, s, d, tp_src, tp_dst),
                IPPROTO_ICMPV6 if l4::is_nd(tp_src as u8, tp_dst as u8) => {
                    let opt = |m: [u8; 6]| (m != [0; 6]).then_some(m);
                    let t = Ipv6Addr::from(g(loc::ND_TARGET));
                    PacketBuilder::nd_ns(src_mac, dst_mac, s, d, t)
                        .icmp_nd_type(tp_src as u8)
                        .nd_options(opt(sha), opt(tha))
                }
                IPPROTO_ICMPV6 => PacketBuilder::icmp6_echo(src_mac, dst_mac, s, d, 0, 0)
                    .icmp_type_code(tp_src as u8, tp_dst as u8),
                _ => PacketBuilder::ipv6(src_mac, dst_mac, s, d, proto),
            };
            let b = b
                .tos(g(loc::NW_TOS) as u8)
                .ttl(ttl)
                .flow_label(g(loc::IPV6_LABEL) as u32);
            match (frag & FRAG_ANY != 0, later) {
                (_, true) => b.fragment(185, true),
                (true, false) => b.fragment(0, true),
                _ => b,
            }
        }
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            let spa = Ipv4Addr::from(g(loc::NW_SRC) as u32);
            let tpa = Ipv4Addr::from(g(loc::NW_DST) as u32);
            let b = PacketBuilder::arp_reply(sha, spa, tha, tpa).arp_op(g(loc::ARP_OP) as u16);
            let b = PacketBuilder {
                src_mac,
                dst_mac,
                ..b
            };
            if dl_type == ETH_TYPE_RARP {
                b.rarp()
            } else {
                b
            }
        }
        t => PacketBuilder::ethernet(src_mac, dst_mac, t),
    };
    let outer = key.vlan_tci();
    if outer & VLAN_CFI != 0 {
        b = b.tag(TPID_8021Q, outer & !VLAN_CFI);
        let inner = g(loc::INNER_VLAN_TCI) as u16;
        if inner & VLAN_CFI != 0 {
            b = b.tag(TPID_8021Q, inner & !VLAN_CFI);
        }
    }
    b.payload_len(payload_len).build()
}

impl PacketBuilder {
    /// Switches an ND message between solicitation and advertisement.
    fn icmp_nd_type(mut self, t: u8) -> Self {
        if let L4::Nd { ty, .. } = &mut self.l4 {
            *ty = t;
        }
        self
    }
}

/// Recomputes from scratch every checksum the frame carries (IPv4 header; TCP, UDP, ICMP,
/// ICMPv6 and SCTP of unfragmented packets, unless an IPv6 routing header is still pending) and
/// names the first one that does not verify.
/// A zero UDP checksum counts as "none" (IPv6 forbids it, but a rewrite keeps it as it came).
pub fn verify_checksums(frame: &[u8]) -> Result<(), &'static str> {
    let mut k = FlowKey::ZERO;
    let lay = crate::extract::extract(frame, &mut k);
    let (l3, l4s) = (lay.l3_ofs as usize, lay.l4_ofs as usize);
    if l3 == 0 {
        return Ok(());
    }
    let proto = k.nw_proto();
    let l4 = frame.get(l4s..l4s + lay.l4_len as usize).unwrap_or(&[]);
    let pseudo = match k.dl_type() {
        ETH_TYPE_IP => {
            let ip = ipv4::Ipv4Packet::new_checked(&frame[l3..]).ok_or("ipv4 header")?;
            if !ip.verify_checksum() {
                return Err("ipv4 header checksum");
            }
            ipv4::pseudo_sum(ip.src(), ip.dst(), proto, l4.len() as u16)
        }
        ETH_TYPE_IPV6 => {
            let ip = ipv6::Ipv6Packet::new_checked(&frame[l3..]).ok_or("ipv6 header")?;
            let (ext, nh) = ip.payload_ext();
            if ipv6::routing_pending(ext, nh) {
                // The checksum covers a final destination this function does not look up.
                return Ok(());
            }
            ipv6::pseudo_sum(ip.src(), ip.dst(), proto, l4.len() as u32)
        }
        _ => return Ok(()),
    };
    // A fragment's transport checksum covers the whole datagram, not this frame.
    if l4s == 0 || k.nw_frag() != 0 {
        return Ok(());
    }
    let v6 = k.dl_type() == ETH_TYPE_IPV6;
    let ok = match proto {
        IPPROTO_TCP => checksum::finish(checksum::sum(pseudo, l4)) == 0,
        IPPROTO_UDP => l4[6..8] == [0, 0] || checksum::finish(checksum::sum(pseudo, l4)) == 0,
        IPPROTO_ICMP if !v6 => checksum::checksum(l4) == 0,
        IPPROTO_ICMPV6 if v6 => checksum::finish(checksum::sum(pseudo, l4)) == 0,
        IPPROTO_SCTP => l4::SctpHeader::new_checked(l4).is_some_and(|s| s.verify_checksum()),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(match proto {
            IPPROTO_TCP => "tcp checksum",
            IPPROTO_UDP => "udp checksum",
            IPPROTO_SCTP => "sctp checksum",
            _ => "icmp checksum",
        })
    }
}

/// Decodes a hex string (whitespace ignored) into bytes, for fixtures in tests. Panics on a
/// malformed string: fixtures are code, not input.
pub fn from_hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| (c as char).to_digit(16).expect("hex digit") as u8)
        .collect();
    assert!(digits.len() & 1 == 0, "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

#[cfg(test)]
pub(crate) mod tests;
