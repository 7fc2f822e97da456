//! Geneve (RFC 8926) header view, option TLVs, and IPv4/UDP encapsulation and decapsulation.
//!
//! This module owns the Geneve wire format and building/stripping the outer
//! Ethernet + IPv4 + UDP + Geneve headers in a [`Frame`]'s headroom. It does not choose tunnel
//! endpoints or map options to tunnel metadata fields (the tunnel port's configuration and
//! [`crate::key`]'s `W_TUN_META` words do that). Options are validated on the way in: an option
//! whose length runs past the option area is reported, never read past.

use super::checksum;
use super::ethernet::HEADER_LEN as ETH_LEN;
use super::ipv4::{self, Ipv4Packet};
use super::l4::UdpHeader;
use super::rewrite::RewriteError;
use super::Frame;
use crate::field::{ETH_TYPE_IP, IPPROTO_UDP};
use core::ops::Range;

pub mod field {
    use super::Range;
    /// Version (2 bits) and option length in 4-byte words (6 bits).
    pub const VER_OPTLEN: usize = 0;
    /// O (control packet) and C (critical options present) bits, then 6 reserved bits.
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED: usize = 7;
}

/// Byte offsets within one option TLV.
pub mod opt_field {
    use super::Range;
    pub const CLASS: Range<usize> = 0..2;
    /// Type; its high bit marks the option critical.
    pub const TYPE: usize = 2;
    /// 3 reserved bits, then the data length in 4-byte words (5 bits).
    pub const LEN: usize = 3;
}

pub const HEADER_LEN: usize = 8;
pub const UDP_PORT: u16 = 6081;
/// Protocol type of an Ethernet payload ("Transparent Ethernet Bridging").
pub const PROTO_ETHERNET: u16 = 0x6558;
pub const FLAG_OAM: u8 = 0x80;
pub const FLAG_CRITICAL: u8 = 0x40;
pub const OPT_CRITICAL: u8 = 0x80;
/// Largest option area (63 words).
pub const MAX_OPTS_LEN: usize = 252;
/// Outer headers added by [`encap`] before the options.
pub const OUTER_LEN: usize = ETH_LEN + ipv4::MIN_HEADER_LEN + 8 + HEADER_LEN;

/// A Geneve header view at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct GeneveHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GeneveHeader<T> {
    /// The view, if the buffer holds the fixed header and the option area it announces.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN || HEADER_LEN + (b[0] & 0x3f) as usize * 4 > b.len() {
            return None;
        }
        Some(GeneveHeader { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.b()[field::VER_OPTLEN] >> 6
    }
    /// Length of the option area in bytes.
    pub fn opts_len(&self) -> usize {
        (self.b()[field::VER_OPTLEN] & 0x3f) as usize * 4
    }
    pub fn oam(&self) -> bool {
        self.b()[field::FLAGS] & FLAG_OAM != 0
    }
    pub fn critical(&self) -> bool {
        self.b()[field::FLAGS] & FLAG_CRITICAL != 0
    }
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }
    pub fn vni(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }
    pub fn options(&self) -> Options<'_> {
        Options {
            buf: &self.b()[HEADER_LEN..HEADER_LEN + self.opts_len()],
        }
    }
    /// Fixed header plus options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.opts_len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GeneveHeader<T> {
    /// Writes the fixed header (version 0) announcing `opts_len` bytes of options.
    pub fn set_header(
        &mut self,
        opts_len: usize,
        oam: bool,
        critical: bool,
        protocol: u16,
        vni: u32,
    ) {
        let b = self.buffer.as_mut();
        b[field::VER_OPTLEN] = (opts_len / 4) as u8 & 0x3f;
        b[field::FLAGS] = if oam { FLAG_OAM } else { 0 } | if critical { FLAG_CRITICAL } else { 0 };
        b[field::PROTOCOL].copy_from_slice(&protocol.to_be_bytes());
        b[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
        b[field::RESERVED] = 0;
    }
}

/// One option TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveOpt<'a> {
    pub class: u16,
    /// Type, including the critical bit ([`OPT_CRITICAL`]).
    pub typ: u8,
    /// Option data; its length is a multiple of 4, at most 124.
    pub data: &'a [u8],
}

impl GeneveOpt<'_> {
    /// Bytes the option occupies on the wire.
    pub fn wire_len(&self) -> usize {
        4 + self.data.len()
    }
}

/// Iterator over option TLVs. Yields `Err(Malformed)` once (and then stops) if an option's
/// header or data runs past the option area.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    buf: &'a [u8],
}

impl<'a> Options<'a> {
    /// Options in a raw option area.
    pub fn new(buf: &'a [u8]) -> Self {
        Options { buf }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<GeneveOpt<'a>, RewriteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(h) = self.buf.first_chunk::<4>() else {
            self.buf = &[];
            return Some(Err(RewriteError::Malformed));
        };
        let len = 4 + (h[3] & 0x1f) as usize * 4;
        let Some(data) = self.buf.get(4..len) else {
            self.buf = &[];
            return Some(Err(RewriteError::Malformed));
        };
        let opt = GeneveOpt {
            class: u16::from_be_bytes([h[0], h[1]]),
            typ: h[2],
            data,
        };
        self.buf = &self.buf[len..];
        Some(Ok(opt))
    }
}

/// Serializes options into `out`; returns the bytes written.
pub fn write_options(opts: &[GeneveOpt], out: &mut [u8]) -> Result<usize, RewriteError> {
    let mut at = 0;
    for o in opts {
        let l = o.data.len();
        if l & 3 != 0 || l > 124 || at + 4 + l > out.len() {
            return Err(RewriteError::Malformed);
        }
        out[at..at + 2].copy_from_slice(&o.class.to_be_bytes());
        out[at + 2] = o.typ;
        out[at + 3] = (l / 4) as u8;
        out[at + 4..at + 4 + l].copy_from_slice(o.data);
        at += 4 + l;
    }
    Ok(at)
}

/// The outer headers [`encap`] writes.
#[derive(Clone, Copy, Debug)]
pub struct GeneveOuter<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: u32,
    pub dst_ip: u32,
    pub tos: u8,
    pub ttl: u8,
    pub df: bool,
    /// UDP source port (a hash of the inner flow, for ECMP entropy).
    pub src_port: u16,
    pub vni: u32,
    pub oam: bool,
    pub options: &'a [GeneveOpt<'a>],
    /// Fill the UDP checksum (otherwise zero).
    pub csum: bool,
}

/// Encapsulates the frame (an Ethernet frame) in Ethernet + IPv4 + UDP + Geneve, growing it into
/// its headroom. The C bit is set when any option is critical.
pub fn encap(frame: &mut Frame, outer: &GeneveOuter) -> Result<(), RewriteError> {
    let mut opts = [0u8; MAX_OPTS_LEN];
    let olen = write_options(outer.options, &mut opts)?;
    let hl = OUTER_LEN + olen;
    let inner_len = frame.len();
    let ip_len = hl - ETH_LEN + inner_len;
    if ip_len > u16::MAX as usize {
        return Err(RewriteError::NoRoom);
    }
    frame.push_head(hl)?;
    let d = frame.data_mut();
    d[0..6].copy_from_slice(&outer.dst_mac);
    d[6..12].copy_from_slice(&outer.src_mac);
    d[12..14].copy_from_slice(&ETH_TYPE_IP.to_be_bytes());
    {
        let ip = &mut d[ETH_LEN..ETH_LEN + 20];
        ip.fill(0);
        let mut p = Ipv4Packet::new_unchecked(ip);
        p.set_ver_ihl(20);
        p.set_total_len(ip_len as u16);
        p.set_flags_offset(if outer.df { ipv4::FLAG_DF } else { 0 });
        p.set_protocol(IPPROTO_UDP);
        let ip = p.into_inner();
        ip[1] = outer.tos;
        ip[8] = outer.ttl;
        ip[12..16].copy_from_slice(&outer.src_ip.to_be_bytes());
        ip[16..20].copy_from_slice(&outer.dst_ip.to_be_bytes());
        Ipv4Packet::new_unchecked(ip).fill_checksum();
    }
    let u = ETH_LEN + 20;
    let udp_len = ip_len - 20;
    d[u..u + 2].copy_from_slice(&outer.src_port.to_be_bytes());
    d[u + 2..u + 4].copy_from_slice(&UDP_PORT.to_be_bytes());
    d[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    d[u + 6..u + 8].fill(0);
    let critical = outer.options.iter().any(|o| o.typ & OPT_CRITICAL != 0);
    GeneveHeader {
        buffer: &mut d[u + 8..u + 16],
    }
    .set_header(olen, outer.oam, critical, PROTO_ETHERNET, outer.vni);
    d[u + 16..u + 16 + olen].copy_from_slice(&opts[..olen]);
    if outer.csum {
        let ps = ipv4::pseudo_sum(outer.src_ip, outer.dst_ip, IPPROTO_UDP, udp_len as u16);
        let mut c = checksum::finish(checksum::sum(ps, &d[u..]));
        if c == 0 {
            c = 0xffff;
        }
        d[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// A parsed Geneve-over-IPv4 frame, borrowing the option area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveInfo<'a> {
    /// Offset of the inner Ethernet frame.
    pub inner_ofs: usize,
    /// Length of the inner Ethernet frame (to the end of the UDP datagram).
    pub inner_len: usize,
    pub vni: u32,
    pub src_ip: u32,
    pub dst_ip: u32,
    pub tos: u8,
    pub ttl: u8,
    pub src_port: u16,
    pub oam: bool,
    pub critical: bool,
    /// The raw option area; iterate it with [`Options::new`].
    pub options: &'a [u8],
}

/// Parses an untagged Ethernet + IPv4 + UDP(6081) + Geneve frame carrying Ethernet.
/// `NotPresent` when it is not such a frame, `Malformed` for a bad length, version or option,
/// `BadChecksum` when a non-zero UDP checksum does not verify.
pub fn parse(d: &[u8]) -> Result<GeneveInfo<'_>, RewriteError> {
    use RewriteError::*;
    if d.len() < ETH_LEN || u16::from_be_bytes([d[12], d[13]]) != ETH_TYPE_IP {
        return Err(NotPresent);
    }
    let ip = Ipv4Packet::new_checked(&d[ETH_LEN..]).ok_or(NotPresent)?;
    if ip.protocol() != IPPROTO_UDP || ip.flags_offset() & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0
    {
        return Err(NotPresent);
    }
    let u0 = ETH_LEN + ip.header_len();
    let ip_end = ETH_LEN + ip.total_len() as usize;
    let seg = &d[u0..ip_end];
    let udp = UdpHeader::new_checked(seg).ok_or(NotPresent)?;
    if udp.dst_port() != UDP_PORT {
        return Err(NotPresent);
    }
    let ulen = udp.length() as usize;
    if ulen < 8 + HEADER_LEN || ulen > seg.len() {
        return Err(Malformed);
    }
    let seg = &seg[..ulen];
    if udp.checksum() != 0 {
        let ps = ipv4::pseudo_sum(ip.src(), ip.dst(), IPPROTO_UDP, ulen as u16);
        if checksum::finish(checksum::sum(ps, seg)) != 0 {
            return Err(BadChecksum);
        }
    }
    let g = GeneveHeader::new_checked(&seg[8..]).ok_or(Malformed)?;
    if g.version() != 0 {
        return Err(Malformed);
    }
    if g.protocol() != PROTO_ETHERNET {
        return Err(NotPresent);
    }
    for o in g.options() {
        o?;
    }
    let inner_ofs = u0 + 8 + g.header_len();
    Ok(GeneveInfo {
        inner_ofs,
        inner_len: u0 + ulen - inner_ofs,
        vni: g.vni(),
        src_ip: ip.src(),
        dst_ip: ip.dst(),
        tos: ip.tos(),
        ttl: ip.ttl(),
        src_port: udp.src_port(),
        oam: g.oam(),
        critical: g.critical(),
        options: &seg[8 + HEADER_LEN..8 + g.header_len()],
    })
}

/// What [`decap`] found in the outer headers (options copied out, since the frame moves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped {
    pub vni: u32,
    pub src_ip: u32,
    pub dst_ip: u32,
    pub tos: u8,
    pub ttl: u8,
    pub src_port: u16,
    pub oam: bool,
    pub critical: bool,
    opts: [u8; MAX_OPTS_LEN],
    opts_len: u8,
}

impl Decapped {
    pub fn options(&self) -> Options<'_> {
        Options::new(&self.opts[..self.opts_len as usize])
    }
    pub fn options_bytes(&self) -> &[u8] {
        &self.opts[..self.opts_len as usize]
    }
}

/// Parses the outer headers (see [`parse`]) and strips them, leaving the inner Ethernet frame.
pub fn decap(frame: &mut Frame) -> Result<Decapped, RewriteError> {
    let info = parse(frame.data())?;
    let mut opts = [0u8; MAX_OPTS_LEN];
    opts[..info.options.len()].copy_from_slice(info.options);
    let out = Decapped {
        vni: info.vni,
        src_ip: info.src_ip,
        dst_ip: info.dst_ip,
        tos: info.tos,
        ttl: info.ttl,
        src_port: info.src_port,
        oam: info.oam,
        critical: info.critical,
        opts,
        opts_len: info.options.len() as u8,
    };
    let (ofs, len) = (info.inner_ofs, info.inner_len);
    frame.pull_head(ofs);
    frame.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests;
