//! Reading the L3/L4 headers connection tracking needs, and rewriting them for NAT.
//!
//! This module owns the byte offsets of the IPv4, IPv6, TCP, UDP and ICMP fields it touches and
//! the checksum bookkeeping of NAT rewrites. It never trusts a length from the wire: every read
//! goes through a bounds-checked helper and a short or inconsistent header yields `None`. It
//! must not keep state or decide policy.

use crate::tuple::{
    echo_reply_type, Addr, Tuple, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use pipeline::wire::checksum;

// IPv4 header offsets.
const V4_TOTAL_LEN: usize = 2;
const V4_FRAG: usize = 6;
const V4_PROTO: usize = 9;
const V4_CSUM: usize = 10;
const V4_SRC: usize = 12;
const V4_DST: usize = 16;
// IPv6 header offsets.
const V6_PAYLOAD_LEN: usize = 4;
const V6_NEXT: usize = 6;
const V6_SRC: usize = 8;
const V6_DST: usize = 24;
const V6_HDR: usize = 40;
// TCP header offsets.
const TCP_SEQ: usize = 4;
const TCP_ACKNO: usize = 8;
const TCP_DOFF: usize = 12;
const TCP_FLAGS: usize = 13;
const TCP_WIN: usize = 14;
const TCP_CSUM: usize = 16;
const UDP_LEN: usize = 4;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;
const ICMP_ID: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

#[inline]
pub fn rd16(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(o)?, *d.get(o + 1)?]))
}
#[inline]
pub fn rd32(d: &[u8], o: usize) -> Option<u32> {
    let b = d.get(o..o + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
#[inline]
fn rd128(d: &[u8], o: usize) -> Option<u128> {
    let b: [u8; 16] = d.get(o..o + 16)?.try_into().ok()?;
    Some(u128::from_be_bytes(b))
}
#[inline]
pub fn wr16(d: &mut [u8], o: usize, v: u16) {
    if let Some(b) = d.get_mut(o..o + 2) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// Adds `data` to a one's-complement sum kept in 64 bits, eight bytes per step. Summing
/// 32-bit words and folding later gives the same result as summing 16-bit words (2^16 is 1
/// modulo 0xffff), and with fewer, branch-free steps: every packet is verified.
///
/// The words are read little-endian, which on the CPUs this runs on is a plain load where
/// big-endian words each need a byte swap. A ones' complement sum of byte-swapped words is the
/// byte-swapped sum (RFC 1071, 2(B)); swapping a word's bytes multiplies it by 2^8 modulo
/// 0xffff, so whether a sum checks out does not depend on the order ([`sum_checks_out`]) and
/// [`finish64`] swaps its result back. Terms added to such a sum from outside (the
/// pseudo-header's protocol and length) are shifted by 8 bits to match.
#[inline]
fn sum64(mut acc: u64, data: &[u8]) -> u64 {
    let mut c = data.chunks_exact(8);
    for w in &mut c {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    // The last 0-7 bytes: a 32-bit word, a 16-bit one and a byte at most, each where it
    // would be in an eight-byte word (a header without options ends in one such word).
    let mut r = c.remainder();
    if let [a, b, c, d, rest @ ..] = r {
        acc += u32::from_le_bytes([*a, *b, *c, *d]) as u64;
        r = rest;
    }
    if let [a, b, rest @ ..] = r {
        acc += u16::from_le_bytes([*a, *b]) as u64;
        r = rest;
    }
    if let [last] = r {
        acc += *last as u64;
    }
    acc
}

/// Whether data whose [`sum64`] is `acc` (checksum field included) checks out: its folded sum
/// is all ones. Folding keeps a sum's value modulo 0xffff (2^16 is 1 modulo 0xffff) and leaves
/// it in 1..=0xffff unless the sum is 0, so one remainder replaces the folds of
/// [`finish64`]: every packet is verified.
#[inline]
fn sum_checks_out(acc: u64) -> bool {
    acc != 0 && acc.is_multiple_of(0xffff)
}

/// Folds a [`sum64`] to 16 bits and complements it (as `checksum::finish` does), in network
/// byte order.
#[inline]
fn finish64(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    (!(acc as u16)).swap_bytes()
}

/// A TCP segment's fields that state tracking reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeg {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Payload bytes (without SYN/FIN).
    pub data_len: u32,
    /// Window scale option (SYN segments only).
    pub wscale: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp(TcpSeg),
    Udp,
    IcmpEcho,
    /// An ICMP error; the embedded IP header starts at this offset of the frame.
    IcmpError {
        inner_l3: usize,
    },
    /// Other ICMP messages (not trackable as a connection).
    IcmpOther,
    Other,
}

/// What tracking needs from one IP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub tuple: Tuple,
    pub l3: usize,
    pub l4: usize,
    /// Bytes of L4 header and payload present (bounded by the IP length and the frame).
    pub l4_len: usize,
    pub kind: L4,
}

impl Parsed {
    /// A placeholder for [`parse_into`] to fill.
    pub const EMPTY: Parsed = Parsed {
        tuple: Tuple::ZERO,
        l3: 0,
        l4: 0,
        l4_len: 0,
        kind: L4::Other,
    };
}

/// Why a datagram cannot be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Short or inconsistent headers.
    Malformed,
    /// A checksum does not verify.
    Checksum,
    /// A fragment reached the tracker without reassembly.
    Fragment,
}

/// IP-level facts: protocol, addresses, where L4 starts and how long it is.
struct Ip {
    v6: bool,
    proto: u8,
    src: Addr,
    dst: Addr,
    l4: usize,
    l4_len: usize,
    frag: bool,
}

/// Parses the IP header at `l3`. With `truncated_ok` (the header embedded in an ICMP error),
/// the datagram may be cut short of its stated length.
fn parse_ip(d: &[u8], l3: usize, truncated_ok: bool, verify: bool) -> Result<Ip, Bad> {
    let b0 = *d.get(l3).ok_or(Bad::Malformed)?;
    match b0 >> 4 {
        4 => {
            let ihl = (b0 & 0x0f) as usize * 4;
            if ihl < 20 || d.len() < l3 + ihl {
                return Err(Bad::Malformed);
            }
            let Some(h) = d.get(l3..l3 + 20) else {
                return Err(Bad::Malformed);
            };
            let h: &[u8; 20] = h.try_into().map_err(|_| Bad::Malformed)?;
            let total = u16::from_be_bytes([h[V4_TOTAL_LEN], h[V4_TOTAL_LEN + 1]]) as usize;
            if total < ihl {
                return Err(Bad::Malformed);
            }
            let avail = d.len() - l3;
            let total = if total > avail {
                if !truncated_ok {
                    return Err(Bad::Malformed);
                }
                avail
            } else {
                total
            };
            if verify && !sum_checks_out(sum64(0, &d[l3..l3 + ihl])) {
                return Err(Bad::Checksum);
            }
            let frag = u16::from_be_bytes([h[V4_FRAG], h[V4_FRAG + 1]]) & 0x3fff != 0;
            let a = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            Ok(Ip {
                v6: false,
                proto: h[V4_PROTO],
                src: Addr::v4(a(V4_SRC)),
                dst: Addr::v4(a(V4_DST)),
                l4: l3 + ihl,
                l4_len: total - ihl,
                frag,
            })
        }
        6 => {
            if d.len() < l3 + V6_HDR {
                return Err(Bad::Malformed);
            }
            let plen = rd16(d, l3 + V6_PAYLOAD_LEN).ok_or(Bad::Malformed)? as usize;
            let avail = d.len() - l3 - V6_HDR;
            let plen = if plen > avail {
                if !truncated_ok {
                    return Err(Bad::Malformed);
                }
                avail
            } else {
                plen
            };
            let end = l3 + V6_HDR + plen;
            let mut next = d[l3 + V6_NEXT];
            let mut at = l3 + V6_HDR;
            let mut frag = false;
            // Walk extension headers; a bounded count keeps hostile chains cheap.
            for _ in 0..8 {
                let len = match next {
                    0 | 43 | 60 => (*d.get(at + 1).ok_or(Bad::Malformed)? as usize + 1) * 8,
                    51 => (*d.get(at + 1).ok_or(Bad::Malformed)? as usize + 2) * 4,
                    44 => {
                        frag = true;
                        8
                    }
                    _ => break,
                };
                if at + len > end {
                    return Err(Bad::Malformed);
                }
                next = d[at];
                at += len;
            }
            Ok(Ip {
                v6: true,
                proto: next,
                src: Addr::from_u128(rd128(d, l3 + V6_SRC).ok_or(Bad::Malformed)?),
                dst: Addr::from_u128(rd128(d, l3 + V6_DST).ok_or(Bad::Malformed)?),
                l4: at,
                l4_len: end - at,
                frag,
            })
        }
        _ => Err(Bad::Malformed),
    }
}

/// Sum of the pseudo-header (addresses, protocol, length) of an L4 checksum.
fn pseudo_sum(d: &[u8], l3: usize, v6: bool, proto: u8, len: usize) -> u64 {
    let addrs = if v6 {
        d.get(l3 + V6_SRC..l3 + V6_DST + 16)
    } else {
        d.get(l3 + V4_SRC..l3 + V4_DST + 4)
    };
    sum64(0, addrs.unwrap_or(&[])) + ((proto as u64) << 8) + ((len as u64) << 8)
}

/// Verifies the checksum of a complete L4 message (with its pseudo-header when it has one).
fn l4_checksum_ok(d: &[u8], p: &Ip, l3: usize) -> bool {
    let Some(seg) = d.get(p.l4..p.l4 + p.l4_len) else {
        return false;
    };
    let acc = match p.proto {
        IPPROTO_ICMP => 0,
        IPPROTO_UDP if !p.v6 && rd16(seg, UDP_CSUM) == Some(0) => return true,
        _ => pseudo_sum(d, l3, p.v6, p.proto, p.l4_len),
    };
    sum_checks_out(sum64(acc, seg))
}

fn tcp_wscale(opts: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some((*opts.get(i + 2)?).min(14));
                }
                i += len;
            }
        }
    }
    None
}

fn is_icmp_error(proto: u8, ty: u8) -> bool {
    match proto {
        IPPROTO_ICMP => matches!(ty, 3 | 4 | 5 | 11 | 12),
        _ => matches!(ty, 1..=4),
    }
}

/// Whether the IP version at `l3` is the one the ethertype just before it names (0x0800: 4,
/// 0x86dd: 6). The pipeline decides what a frame is by its ethertype and does not look at the
/// version, so a datagram whose version disagrees is neither, and tracking it (or reassembling
/// it into one) as the other family would hand back something the pipeline cannot parse.
/// Without an ethertype before `l3` (a bare datagram) there is nothing to disagree with.
pub fn version_matches_ethertype(d: &[u8], l3: usize) -> bool {
    let (Some(et), Some(&b0)) = (l3.checked_sub(2).and_then(|o| d.get(o..l3)), d.get(l3)) else {
        return true;
    };
    match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 => b0 >> 4 == 4,
        0x86dd => b0 >> 4 == 6,
        _ => true,
    }
}

/// Parses the datagram at `l3` of `d` into what tracking needs; `zone` is copied into the tuple.
#[inline]
pub fn parse(d: &[u8], l3: usize, zone: u16, verify: bool) -> Result<Parsed, Bad> {
    let mut p = Parsed::EMPTY;
    parse_into(d, l3, zone, verify, &mut p).map(|()| p)
}

/// [`parse`] into `out`, where a batch keeps its frames' results: filled in place rather
/// than returned and copied (`out` is unspecified after an error). Inlined by force: every
/// tracked packet's path.
#[inline(always)]
pub fn parse_into(
    d: &[u8],
    l3: usize,
    zone: u16,
    verify: bool,
    out: &mut Parsed,
) -> Result<(), Bad> {
    if parse_v4_common(d, l3, zone, verify, out).is_some() {
        return Ok(());
    }
    *out = parse_any(d, l3, zone, verify)?;
    Ok(())
}

/// Big-endian 16 bits at `o` of a header already known to be long enough.
#[inline(always)]
fn be16<const N: usize>(h: &[u8; N], o: usize) -> u16 {
    u16::from_be_bytes([h[o], h[o + 1]])
}

/// Big-endian 32 bits at `o` of a header already known to be long enough.
#[inline(always)]
fn be32<const N: usize>(h: &[u8; N], o: usize) -> u32 {
    u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]])
}

/// Little-endian 32 bits at `o` of a header already known to be long enough: a word of a
/// checksum sum (see [`sum64`]).
#[inline(always)]
fn le32<const N: usize>(h: &[u8; N], o: usize) -> u32 {
    u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]])
}

/// [`parse`] for what almost every packet of an established connection is: an IPv4 header
/// without options in an Ethernet frame, not a fragment, carrying UDP or a TCP segment other
/// than a SYN, with correct checksums. Fixed-size header views make one bounds check per
/// header instead of one per field, and the IP header sums in five words. Writes the result to
/// `out`; `None` (`out` untouched) for anything else, including a bad checksum: [`parse_any`]
/// then gives the answer (or the error) for it, and the two agree on every datagram this one
/// accepts (a property test holds them to it).
#[inline]
pub(crate) fn parse_v4_common(
    d: &[u8],
    l3: usize,
    zone: u16,
    verify: bool,
    out: &mut Parsed,
) -> Option<()> {
    let et: &[u8; 2] = d.get(l3.checked_sub(2)?..l3)?.try_into().ok()?;
    let h: &[u8; 20] = d.get(l3..l3 + 20)?.try_into().ok()?;
    if *et != [0x08, 0x00] || h[0] != 0x45 {
        return None;
    }
    let total = be16(h, V4_TOTAL_LEN) as usize;
    if total < 20 || total > d.len() - l3 || be16(h, V4_FRAG) & 0x3fff != 0 {
        return None;
    }
    let proto = h[V4_PROTO];
    let (l4, l4_len) = (l3 + 20, total - 20);
    let seg = &d[l4..l4 + l4_len];
    let (sport, dport, kind, csum) = match proto {
        IPPROTO_TCP => {
            let t: &[u8; 20] = seg.get(..20)?.try_into().ok()?;
            let doff = (t[TCP_DOFF] >> 4) as usize * 4;
            let flags = t[TCP_FLAGS];
            // A SYN carries the window scale option, which only the general parser reads.
            if doff < 20 || doff > l4_len || flags & TCP_SYN != 0 {
                return None;
            }
            let seg = TcpSeg {
                flags,
                seq: be32(t, TCP_SEQ),
                ack: be32(t, TCP_ACKNO),
                win: be16(t, TCP_WIN),
                data_len: (l4_len - doff) as u32,
                wscale: None,
            };
            (be16(t, 0), be16(t, 2), L4::Tcp(seg), true)
        }
        IPPROTO_UDP => {
            let u: &[u8; 8] = seg.get(..8)?.try_into().ok()?;
            let ulen = be16(u, UDP_LEN) as usize;
            if ulen < 8 || ulen > l4_len {
                return None;
            }
            // An IPv4 UDP checksum of zero means the sender computed none.
            (be16(u, 0), be16(u, 2), L4::Udp, be16(u, UDP_CSUM) != 0)
        }
        _ => return None,
    };
    if verify {
        // In little-endian words, as `sum64` sums.
        let ip_sum: u64 = (0..5).map(|i| le32(h, 4 * i) as u64).sum();
        if !sum_checks_out(ip_sum) {
            return None;
        }
        let addrs = le32(h, V4_SRC) as u64 + le32(h, V4_DST) as u64;
        let pseudo = addrs + ((proto as u64) << 8) + ((l4_len as u64) << 8);
        if csum && !sum_checks_out(sum64(pseudo, seg)) {
            return None;
        }
    }
    *out = Parsed {
        tuple: Tuple {
            src: Addr::v4(be32(h, V4_SRC)),
            dst: Addr::v4(be32(h, V4_DST)),
            sport,
            dport,
            zone,
            proto,
            v6: false,
        },
        l3,
        l4,
        l4_len,
        kind,
    };
    Some(())
}

/// [`parse`] for every datagram: IPv4 with options, IPv6 and its extension headers, ICMP, other
/// protocols, fragments, SYNs and every malformed case.
#[inline(never)]
pub(crate) fn parse_any(d: &[u8], l3: usize, zone: u16, verify: bool) -> Result<Parsed, Bad> {
    if !version_matches_ethertype(d, l3) {
        return Err(Bad::Malformed);
    }
    let ip = parse_ip(d, l3, false, verify)?;
    if ip.frag {
        return Err(Bad::Fragment);
    }
    let mut t = Tuple {
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        zone,
        proto: ip.proto,
        v6: ip.v6,
    };
    let l4 = ip.l4;
    let seg = &d[l4..l4 + ip.l4_len];
    let kind = match ip.proto {
        IPPROTO_TCP => {
            let h: &[u8; 20] = seg
                .get(..20)
                .and_then(|h| h.try_into().ok())
                .ok_or(Bad::Malformed)?;
            let doff = (h[TCP_DOFF] >> 4) as usize * 4;
            if doff < 20 || doff > seg.len() {
                return Err(Bad::Malformed);
            }
            let w16 = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
            let w32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            t.sport = w16(0);
            t.dport = w16(2);
            let flags = h[TCP_FLAGS];
            L4::Tcp(TcpSeg {
                flags,
                seq: w32(TCP_SEQ),
                ack: w32(TCP_ACKNO),
                win: w16(TCP_WIN),
                data_len: (seg.len() - doff) as u32,
                wscale: if flags & TCP_SYN != 0 {
                    tcp_wscale(seg.get(20..doff).unwrap_or(&[]))
                } else {
                    None
                },
            })
        }
        IPPROTO_UDP => {
            let ulen = rd16(seg, UDP_LEN).ok_or(Bad::Malformed)? as usize;
            if ulen < 8 || ulen > seg.len() {
                return Err(Bad::Malformed);
            }
            t.sport = rd16(seg, 0).ok_or(Bad::Malformed)?;
            t.dport = rd16(seg, 2).ok_or(Bad::Malformed)?;
            L4::Udp
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if seg.len() < 8 {
                return Err(Bad::Malformed);
            }
            let (ty, code) = (seg[0], seg[1]);
            if echo_reply_type(ip.proto, ty).is_some() {
                t.sport = rd16(seg, ICMP_ID).ok_or(Bad::Malformed)?;
                t.dport = (ty as u16) << 8 | code as u16;
                L4::IcmpEcho
            } else if is_icmp_error(ip.proto, ty) {
                L4::IcmpError { inner_l3: l4 + 8 }
            } else {
                L4::IcmpOther
            }
        }
        _ => L4::Other,
    };
    if verify && !matches!(kind, L4::Other) && !l4_checksum_ok(d, &ip, l3) {
        return Err(Bad::Checksum);
    }
    Ok(Parsed {
        tuple: t,
        l3,
        l4,
        l4_len: ip.l4_len,
        kind,
    })
}

/// Parses the datagram embedded in an ICMP error (it may be truncated: only its IP header and
/// the first 8 bytes of L4 are required). Its tuple is as the embedded packet travelled.
pub fn parse_inner(d: &[u8], l3: usize, zone: u16) -> Option<Parsed> {
    let ip = parse_ip(d, l3, true, false).ok()?;
    if ip.l4_len < 8 || ip.frag {
        return None;
    }
    let seg = &d[ip.l4..ip.l4 + ip.l4_len];
    let mut t = Tuple {
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        zone,
        proto: ip.proto,
        v6: ip.v6,
    };
    let kind = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            t.sport = rd16(seg, 0)?;
            t.dport = rd16(seg, 2)?;
            if ip.proto == IPPROTO_UDP {
                L4::Udp
            } else {
                L4::Tcp(TcpSeg::default())
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            echo_reply_type(ip.proto, seg[0])?;
            t.sport = rd16(seg, ICMP_ID)?;
            t.dport = (seg[0] as u16) << 8 | seg[1] as u16;
            L4::IcmpEcho
        }
        _ => L4::Other,
    };
    Some(Parsed {
        tuple: t,
        l3,
        l4: ip.l4,
        l4_len: ip.l4_len,
        kind,
    })
}

/// Location of the L4 checksum a rewrite must keep right, if present in the bytes we have, and
/// whether it covers the pseudo-header.
fn l4_csum_at(p: &Parsed, d: &[u8]) -> Option<(usize, bool)> {
    let (ofs, pseudo) = match p.tuple.proto {
        IPPROTO_TCP => (TCP_CSUM, true),
        IPPROTO_UDP => (UDP_CSUM, true),
        IPPROTO_ICMP => (ICMP_CSUM, false),
        IPPROTO_ICMPV6 => (ICMP_CSUM, true),
        _ => return None,
    };
    if ofs + 2 > p.l4_len || p.l4 + ofs + 2 > d.len() {
        return None;
    }
    // An IPv4 UDP checksum of zero means "none" and must stay zero.
    if p.tuple.proto == IPPROTO_UDP && !p.tuple.v6 && rd16(d, p.l4 + ofs) == Some(0) {
        return None;
    }
    Some((ofs, pseudo))
}

/// Rewrites the addresses and ports of the datagram `p` (parsed from `d`) to those of `to`,
/// keeping the IPv4 header checksum and the L4 checksum right by incremental update (RFC 1624).
/// For ICMP echo only the identifier (`sport`) is rewritten.
pub fn rewrite(d: &mut [u8], p: &Parsed, to: &Tuple) {
    if !p.tuple.v6
        && matches!(p.tuple.proto, IPPROTO_TCP | IPPROTO_UDP)
        && rewrite_v4_ports(d, p, to)
    {
        return;
    }
    let from = &p.tuple;
    let csum = l4_csum_at(p, d);
    let mut l4c = csum.and_then(|(o, _)| rd16(d, p.l4 + o)).unwrap_or(0);
    let pseudo = csum.is_some_and(|(_, ps)| ps);
    let l3 = p.l3;
    for (old, new, v4o, v6o) in [
        (from.src, to.src, V4_SRC, V6_SRC),
        (from.dst, to.dst, V4_DST, V6_DST),
    ] {
        if old == new {
            continue;
        }
        if from.v6 {
            if let Some(b) = d.get_mut(l3 + v6o..l3 + v6o + 16) {
                b.copy_from_slice(&new.to_u128().to_be_bytes());
            }
            if pseudo {
                l4c = checksum::update128(l4c, old.to_u128(), new.to_u128());
            }
        } else {
            if let Some(b) = d.get_mut(l3 + v4o..l3 + v4o + 4) {
                b.copy_from_slice(&new.as_v4().to_be_bytes());
            }
            let ipc = rd16(d, l3 + V4_CSUM).unwrap_or(0);
            wr16(
                d,
                l3 + V4_CSUM,
                checksum::update32(ipc, old.as_v4(), new.as_v4()),
            );
            if pseudo {
                l4c = checksum::update32(l4c, old.as_v4(), new.as_v4());
            }
        }
    }
    match from.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            for (old, new, o) in [(from.sport, to.sport, 0), (from.dport, to.dport, 2)] {
                if old != new && p.l4 + o + 2 <= d.len() {
                    wr16(d, p.l4 + o, new);
                    l4c = checksum::update16(l4c, old, new);
                }
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6
            if from.sport != to.sport && p.l4 + ICMP_ID + 2 <= d.len() =>
        {
            wr16(d, p.l4 + ICMP_ID, to.sport);
            l4c = checksum::update16(l4c, from.sport, to.sport);
        }
        _ => {}
    }
    if let Some((o, _)) = csum {
        // A computed UDP checksum of zero is sent as all ones (zero means "no checksum").
        if from.proto == IPPROTO_UDP && l4c == 0 {
            l4c = 0xffff;
        }
        wr16(d, p.l4 + o, l4c);
    }
}

/// The IP header, the L4 ports and the L4 checksum of the IPv4 TCP or UDP datagram `p`
/// (parsed from `d`), as fixed-size views: one bounds check for every field a NAT rewrite
/// touches. `None` when the headers are not all there.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn v4_nat_views<'d>(
    d: &'d mut [u8],
    p: &Parsed,
) -> Option<(&'d mut [u8; 20], &'d mut [u8; 4], &'d mut [u8; 2])> {
    let co = if p.tuple.proto == IPPROTO_TCP {
        TCP_CSUM
    } else {
        UDP_CSUM
    };
    let (l3, l4) = (p.l3, p.l4);
    if co + 2 > p.l4_len || l3 + 20 > l4 || l4 > d.len() {
        return None;
    }
    let (head, tail) = d.split_at_mut(l4);
    let ip: &mut [u8; 20] = head.get_mut(l3..l3 + 20)?.try_into().ok()?;
    let (ports, rest) = tail.get_mut(..co + 2)?.split_at_mut(4);
    let ports: &mut [u8; 4] = ports.try_into().ok()?;
    let l4c: &mut [u8; 2] = (&mut rest[co - 4..]).try_into().ok()?;
    Some((ip, ports, l4c))
}

/// The ones' complement sum of (new - old) over a 16-bit word; nothing (not even a negative
/// zero) when it is unchanged, as if it had been left alone.
#[inline(always)]
fn delta16(old: u16, new: u16) -> u32 {
    if old == new {
        0
    } else {
        (!old) as u32 + new as u32
    }
}

/// [`delta16`] over the two words of a 32-bit field.
#[inline(always)]
fn delta32(old: u32, new: u32) -> u32 {
    if old == new {
        0
    } else {
        (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff)
    }
}

/// Adds the summed changes to the IPv4 header checksum (`addrs`: the addresses') and the L4
/// checksum (`addrs + ports`), each with one fold. An IPv4 UDP checksum of zero means "none"
/// and stays zero; a computed zero is sent as all ones.
#[inline(always)]
fn apply_v4_deltas(ip: &mut [u8; 20], l4c: &mut [u8; 2], udp: bool, addrs: u32, ports: u32) {
    if addrs != 0 {
        let ipc = u16::from_be_bytes([ip[V4_CSUM], ip[V4_CSUM + 1]]);
        ip[V4_CSUM..V4_CSUM + 2].copy_from_slice(&fold_update(ipc, addrs).to_be_bytes());
    }
    let old = u16::from_be_bytes(*l4c);
    if !(udp && old == 0) && addrs + ports != 0 {
        let mut c = fold_update(old, addrs + ports);
        if udp && c == 0 {
            c = 0xffff;
        }
        *l4c = c.to_be_bytes();
    }
}

/// [`rewrite`] for the common case, IPv4 TCP or UDP with the whole L4 header present, with the
/// checksum changes summed before a single fold (RFC 1624's update, applied to every changed
/// field at once). False (nothing written) when the headers are not all there.
#[inline]
fn rewrite_v4_ports(d: &mut [u8], p: &Parsed, to: &Tuple) -> bool {
    let from = &p.tuple;
    let Some((ip, ports, l4c)) = v4_nat_views(d, p) else {
        return false;
    };
    let (src, dst) = (to.src.as_v4(), to.dst.as_v4());
    let addrs = delta32(from.src.as_v4(), src) + delta32(from.dst.as_v4(), dst);
    let port_delta = delta16(from.sport, to.sport) + delta16(from.dport, to.dport);
    ip[V4_SRC..V4_SRC + 4].copy_from_slice(&src.to_be_bytes());
    ip[V4_DST..V4_DST + 4].copy_from_slice(&dst.to_be_bytes());
    ports[..2].copy_from_slice(&to.sport.to_be_bytes());
    ports[2..].copy_from_slice(&to.dport.to_be_bytes());
    apply_v4_deltas(ip, l4c, from.proto == IPPROTO_UDP, addrs, port_delta);
    true
}

/// Which end of a datagram a NAT rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// What NAT does to every TCP or UDP packet of a connection in one direction, when it changes
/// one end only (as SNAT and DNAT do): that end's address and port become these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatEnd {
    pub side: Side,
    pub addr: Addr,
    pub port: u16,
}

impl NatEnd {
    /// Tuple `t` with this end translated.
    pub fn apply(&self, t: &Tuple) -> Tuple {
        let mut t = *t;
        match self.side {
            Side::Src => (t.src, t.sport) = (self.addr, self.port),
            Side::Dst => (t.dst, t.dport) = (self.addr, self.port),
        }
        t
    }
}

/// Rewrites `p` (parsed from `d`) as `nat` says: [`rewrite_v4_end`] when it applies,
/// [`rewrite`] otherwise. Inlined by force (with [`rewrite_v4_end`]): every NATed packet's
/// path.
#[inline(always)]
pub fn rewrite_end(d: &mut [u8], p: &Parsed, nat: &NatEnd) {
    if !rewrite_v4_end(d, p, nat) {
        rewrite(d, p, &nat.apply(&p.tuple));
    }
}

/// [`rewrite`] to the tuple that `p`'s with `nat` applied is, for an IPv4 TCP or UDP datagram
/// with its whole L4 header: one address and one port change, so only their two differences
/// are summed. False (nothing written) for any other datagram, which [`rewrite`] handles.
#[inline(always)]
pub fn rewrite_v4_end(d: &mut [u8], p: &Parsed, nat: &NatEnd) -> bool {
    let t = &p.tuple;
    if t.v6 || !matches!(t.proto, IPPROTO_TCP | IPPROTO_UDP) {
        return false;
    }
    let Some((ip, ports, l4c)) = v4_nat_views(d, p) else {
        return false;
    };
    let (old_addr, old_port, addr_at, port_at) = match nat.side {
        Side::Src => (t.src.as_v4(), t.sport, V4_SRC, 0),
        Side::Dst => (t.dst.as_v4(), t.dport, V4_DST, 2),
    };
    let addr = nat.addr.as_v4();
    ip[addr_at..addr_at + 4].copy_from_slice(&addr.to_be_bytes());
    ports[port_at..port_at + 2].copy_from_slice(&nat.port.to_be_bytes());
    let (addrs, port_delta) = (delta32(old_addr, addr), delta16(old_port, nat.port));
    apply_v4_deltas(ip, l4c, t.proto == IPPROTO_UDP, addrs, port_delta);
    true
}

/// Checksum `csum` after adding `delta`, an unfolded ones' complement sum of (new - old)
/// words: `~(~csum + delta)` folded (RFC 1624, eqn. 3).
#[inline(always)]
fn fold_update(csum: u16, delta: u32) -> u16 {
    let mut acc = (!csum) as u32 + delta;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Recomputes the checksum of a whole ICMP/ICMPv6 message from scratch (after its embedded
/// datagram was rewritten: errors are small and rare, so exactness beats speed here).
pub fn refresh_icmp_checksum(d: &mut [u8], p: &Parsed) {
    let end = (p.l4 + p.l4_len).min(d.len());
    if p.l4 + 4 > end {
        return;
    }
    wr16(d, p.l4 + ICMP_CSUM, 0);
    let acc = if p.tuple.v6 {
        pseudo_sum(d, p.l3, true, IPPROTO_ICMPV6, p.l4_len)
    } else {
        0
    };
    let c = finish64(sum64(acc, &d[p.l4..end]));
    wr16(d, p.l4 + ICMP_CSUM, c);
}

/// Where a TCP segment's payload starts and ends in `d`, bounded by the datagram and the
/// buffer; `None` when the header is short or its data offset inconsistent.
pub fn tcp_payload(d: &[u8], p: &Parsed) -> Option<(usize, usize)> {
    let doff = (*d.get(p.l4 + TCP_DOFF)? >> 4) as usize * 4;
    let end = p.l4 + p.l4_len;
    if doff < 20 || doff > p.l4_len || end > d.len() {
        return None;
    }
    Some((p.l4 + doff, end))
}

/// Writes a TCP segment's sequence and acknowledgement numbers (the checksum is left to the
/// caller).
pub fn set_tcp_seq_ack(d: &mut [u8], p: &Parsed, seq: u32, ack: u32) {
    for (o, v) in [(TCP_SEQ, seq), (TCP_ACKNO, ack)] {
        if let Some(b) = d.get_mut(p.l4 + o..p.l4 + o + 4) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// Adds `delta` to the datagram's length field (IPv4 total length, keeping the header
/// checksum right, or IPv6 payload length). False, with nothing written, if the result would
/// not fit the field.
pub fn adjust_ip_len(d: &mut [u8], p: &Parsed, delta: isize) -> bool {
    let o = p.l3
        + if p.tuple.v6 {
            V6_PAYLOAD_LEN
        } else {
            V4_TOTAL_LEN
        };
    let Some(old) = rd16(d, o) else {
        return false;
    };
    let Ok(new) = u16::try_from(old as isize + delta) else {
        return false;
    };
    wr16(d, o, new);
    if !p.tuple.v6 {
        let c = rd16(d, p.l3 + V4_CSUM).unwrap_or(0);
        wr16(d, p.l3 + V4_CSUM, checksum::update16(c, old, new));
    }
    true
}

/// Recomputes from scratch the checksum of the TCP segment of `l4_len` bytes at `p.l4` (after
/// its payload changed; a few control segments, so exactness beats speed).
pub fn refresh_tcp_checksum(d: &mut [u8], p: &Parsed, l4_len: usize) {
    let end = p.l4 + l4_len;
    if end > d.len() || l4_len < 20 {
        return;
    }
    wr16(d, p.l4 + TCP_CSUM, 0);
    let acc = pseudo_sum(d, p.l3, p.tuple.v6, IPPROTO_TCP, l4_len);
    let c = finish64(sum64(acc, &d[p.l4..end]));
    wr16(d, p.l4 + TCP_CSUM, c);
}

/// Rewrites only the IP addresses of a datagram (the outer header of an ICMP error), keeping
/// the IPv4 header checksum right. The L4 checksum is the caller's business.
pub fn rewrite_addrs(d: &mut [u8], p: &Parsed, src: Addr, dst: Addr) {
    let q = Parsed {
        tuple: Tuple {
            proto: 0,
            ..p.tuple
        },
        ..*p
    };
    let to = Tuple {
        src,
        dst,
        ..q.tuple
    };
    rewrite(d, &q, &to);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The remainder test agrees with folding and complementing, on any sum and on the
        /// multiples of 0xffff (the sums that check out) in particular.
        #[test]
        fn sum_check_is_the_folded_one(acc in any::<u64>(), k in any::<u32>()) {
            prop_assert_eq!(sum_checks_out(acc), finish64(acc) == 0);
            let m = k as u64 * 0xffff;
            prop_assert_eq!(sum_checks_out(m), finish64(m) == 0);
        }

        /// The eight-bytes-a-step sum is RFC 1071's sum of 16-bit words (an odd last byte
        /// padded with zero), at every length and from any starting sum: finished, it is
        /// the checksum of the big-endian words.
        #[test]
        fn sum64_is_the_sum_of_words(
            data in proptest::collection::vec(any::<u8>(), 0..80),
            acc in 0u64..(1 << 40),
        ) {
            let words: u64 = data
                .chunks(2)
                .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u64)
                .sum();
            let mut folded = acc + words;
            while folded > 0xffff {
                folded = (folded & 0xffff) + (folded >> 16);
            }
            // `acc` enters little-endian, as the pseudo-header's terms do.
            let acc_le = acc << 8;
            prop_assert_eq!(finish64(sum64(acc_le, &data)), !(folded as u16));
        }
    }

    #[test]
    fn sum_check_edges() {
        assert!(!sum_checks_out(0), "an all-zero header does not check out");
        assert!(sum_checks_out(0xffff));
        assert!(sum_checks_out(0xffff * 3));
        assert!(!sum_checks_out(0xfffe));
        assert!(!sum_checks_out(0x10000));
    }
}
