//! IPv4 header view.
//!
//! Owns the IPv4 header's byte offsets, its validity rules (IHL and total length against the
//! buffer) and its header checksum. It does not decide which fields a flow rewrites.

use super::checksum;
use core::ops::Range;

pub mod field {
    use super::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

pub const MIN_HEADER_LEN: usize = 20;
/// More-fragments flag within the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;
pub const FLAG_DF: u16 = 0x4000;
pub const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The view, if the buffer holds a header whose IHL is at least 5 and whose total length
    /// covers the header and fits in the buffer (trailing padding is allowed). The version
    /// nibble is not checked: the EtherType already said IPv4, as flow extraction sees it.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return None;
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        let tot = u16::from_be_bytes([b[2], b[3]]) as usize;
        if hl < MIN_HEADER_LEN || hl > tot || tot > b.len() {
            return None;
        }
        Some(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn be16(&self, r: Range<usize>) -> u16 {
        let b = &self.b()[r];
        u16::from_be_bytes([b[0], b[1]])
    }
    fn be32(&self, r: Range<usize>) -> u32 {
        let b = &self.b()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }
    pub fn header_len(&self) -> usize {
        ((self.b()[field::VER_IHL] & 0x0f) as usize) * 4
    }
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }
    /// Flags (DF, MF) and fragment offset as on the wire.
    pub fn flags_offset(&self) -> u16 {
        self.be16(field::FLG_OFF)
    }
    pub fn frag_offset(&self) -> u16 {
        self.flags_offset() & OFFSET_MASK
    }
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }
    pub fn src(&self) -> u32 {
        self.be32(field::SRC)
    }
    pub fn dst(&self) -> u32 {
        self.be32(field::DST)
    }
    /// True when the stored header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        let hl = self.header_len().min(self.b().len());
        checksum::checksum(&self.b()[..hl]) == 0
    }
    /// The bytes after the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        let (hl, tot) = (self.header_len(), self.total_len() as usize);
        self.b().get(hl..tot).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn put16(&mut self, r: Range<usize>, v: u16) {
        self.m()[r].copy_from_slice(&v.to_be_bytes());
    }
    fn put32(&mut self, r: Range<usize>, v: u32) {
        self.m()[r].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ver_ihl(&mut self, header_len: usize) {
        self.m()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }
    pub fn set_total_len(&mut self, v: u16) {
        self.put16(field::LENGTH, v)
    }
    pub fn set_ident(&mut self, v: u16) {
        self.put16(field::IDENT, v)
    }
    pub fn set_flags_offset(&mut self, v: u16) {
        self.put16(field::FLG_OFF, v)
    }
    pub fn set_protocol(&mut self, v: u8) {
        self.m()[field::PROTOCOL] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.put16(field::CHECKSUM, v)
    }

    // The setters below keep the header checksum right incrementally (RFC 1624).

    pub fn set_src(&mut self, v: u32) {
        let c = checksum::update32(self.checksum(), self.src(), v);
        self.put32(field::SRC, v);
        self.set_checksum(c);
    }
    pub fn set_dst(&mut self, v: u32) {
        let c = checksum::update32(self.checksum(), self.dst(), v);
        self.put32(field::DST, v);
        self.set_checksum(c);
    }
    pub fn set_tos(&mut self, v: u8) {
        let old = self.be16(0..2);
        self.m()[field::TOS] = v;
        let c = checksum::update16(self.checksum(), old, self.be16(0..2));
        self.set_checksum(c);
    }
    pub fn set_ttl(&mut self, v: u8) {
        let old = self.be16(8..10);
        self.m()[field::TTL] = v;
        let c = checksum::update16(self.checksum(), old, self.be16(8..10));
        self.set_checksum(c);
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len().min(self.b().len());
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }
}

/// One's-complement sum of the IPv4 pseudo-header (not folded, not complemented).
pub fn pseudo_sum(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto as u32 + len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn checked_rejects_bad_lengths() {
        let mut b = [0u8; 0x73];
        b[..20].copy_from_slice(&HDR);
        assert!(Ipv4Packet::new_checked(&b[..]).is_some());
        assert!(
            Ipv4Packet::new_checked(&b[..0x72]).is_none(),
            "total length past buffer"
        );
        b[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&b[..]).is_none(), "IHL < 5");
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert!(
            Ipv4Packet::new_checked(&b[..]).is_none(),
            "IHL past total length"
        );
        b[0] = 0x45;
        assert!(
            Ipv4Packet::new_checked(&b[..]).is_some(),
            "padding after total length"
        );
    }

    #[test]
    fn setters_keep_checksum_valid() {
        let mut b = [0u8; 0x73];
        b[..20].copy_from_slice(&HDR);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_checksum());
        p.set_src(0xac16_071b);
        p.set_dst(0x0a00_0001);
        p.set_tos(0xb8);
        p.set_ttl(3);
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src(), p.dst(), p.tos(), p.ttl()),
            (0xac16_071b, 0x0a00_0001, 0xb8, 3)
        );
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.payload().len(), 0x73 - 20);
    }
}
