//! Transport and ICMP header views: TCP, UDP, SCTP, ICMPv4/ICMPv6 and Neighbor Discovery.
//!
//! Owns their byte offsets, the checksum each carries (Internet checksum, or CRC32c for SCTP)
//! and the ND option walk. Which fields get rewritten is [`super::rewrite`]'s business.

use core::ops::Range;

pub mod tcp_field {
    use super::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    /// Data offset (4 bits), reserved (3), flags (9).
    pub const CTL: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}
pub mod udp_field {
    use super::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}
pub mod sctp_field {
    use super::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const VTAG: Range<usize> = 4..8;
    pub const CHECKSUM: Range<usize> = 8..12;
}
pub mod icmp_field {
    use super::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Neighbor Discovery: target address after the 4-byte flags/reserved word.
    pub const ND_TARGET: Range<usize> = 8..24;
}

pub const TCP_MIN_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const SCTP_LEN: usize = 12;
pub const ICMP_LEN: usize = 8;
pub const ND_LEN: usize = 24;
pub const TCP_FLAGS_MASK: u16 = 0x0fff;
pub const ND_NS: u8 = 135;
pub const ND_NA: u8 = 136;
pub const ND_OPT_SLL: u8 = 1;
pub const ND_OPT_TLL: u8 = 2;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

macro_rules! view {
    ($name:ident) => {
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }
        impl<T: AsRef<[u8]>> $name<T> {
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }
            pub fn into_inner(self) -> T {
                self.buffer
            }
            fn b(&self) -> &[u8] {
                self.buffer.as_ref()
            }
            pub fn src_port(&self) -> u16 {
                be16(self.b(), 0)
            }
            pub fn dst_port(&self) -> u16 {
                be16(self.b(), 2)
            }
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            fn m(&mut self) -> &mut [u8] {
                self.buffer.as_mut()
            }
        }
    };
}

view!(TcpHeader);
view!(UdpHeader);
view!(SctpHeader);

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// The view, if the buffer holds the header including its options (data offset >= 5).
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < TCP_MIN_LEN {
            return None;
        }
        let hl = (b[12] >> 4) as usize * 4;
        (hl >= TCP_MIN_LEN && hl <= b.len()).then_some(TcpHeader { buffer })
    }
    pub fn seq(&self) -> u32 {
        let b = &self.b()[tcp_field::SEQ];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn ack(&self) -> u32 {
        let b = &self.b()[tcp_field::ACK];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn header_len(&self) -> usize {
        (self.b()[12] >> 4) as usize * 4
    }
    /// The 12 flag bits (NS, CWR, ECE, URG, ACK, PSH, RST, SYN, FIN and 3 reserved).
    pub fn flags(&self) -> u16 {
        be16(self.b(), 12) & TCP_FLAGS_MASK
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpHeader<T> {
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.m(), 16, c)
    }
    /// Sets a port, updating the checksum incrementally.
    pub fn set_src_port(&mut self, p: u16) {
        let c = super::checksum::update16(self.checksum(), self.src_port(), p);
        put16(self.m(), 0, p);
        self.set_checksum(c);
    }
    pub fn set_dst_port(&mut self, p: u16) {
        let c = super::checksum::update16(self.checksum(), self.dst_port(), p);
        put16(self.m(), 2, p);
        self.set_checksum(c);
    }
    /// Folds a pseudo-header change (address rewrite) into the checksum.
    pub fn update_pseudo(&mut self, old: u128, new: u128) {
        let c = super::checksum::update128(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> UdpHeader<T> {
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= UDP_LEN).then_some(UdpHeader { buffer })
    }
    pub fn length(&self) -> u16 {
        be16(self.b(), 4)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 6)
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpHeader<T> {
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.m(), 6, c)
    }
    pub fn set_length(&mut self, l: u16) {
        put16(self.m(), 4, l)
    }
    // A zero checksum means "none" (IPv4): it must stay zero, and a computed zero is sent as
    // 0xffff so that it is not mistaken for "none".
    fn adjust(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            let n = f(c);
            self.set_checksum(if n == 0 { 0xffff } else { n });
        }
    }
    pub fn set_src_port(&mut self, p: u16) {
        let old = self.src_port();
        self.adjust(|c| super::checksum::update16(c, old, p));
        put16(self.m(), 0, p);
    }
    pub fn set_dst_port(&mut self, p: u16) {
        let old = self.dst_port();
        self.adjust(|c| super::checksum::update16(c, old, p));
        put16(self.m(), 2, p);
    }
    pub fn update_pseudo(&mut self, old: u128, new: u128) {
        self.adjust(|c| super::checksum::update128(c, old, new));
    }
}

impl<T: AsRef<[u8]>> SctpHeader<T> {
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= SCTP_LEN).then_some(SctpHeader { buffer })
    }
    pub fn checksum(&self) -> u32 {
        let b = &self.b()[sctp_field::CHECKSUM];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// CRC32c over the whole packet with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u32 {
        let b = self.b();
        let c = crc32c_update(!0, &b[..8]);
        let c = crc32c_update(c, &[0; 4]);
        !crc32c_update(c, &b[12..])
    }
    pub fn verify_checksum(&self) -> bool {
        self.checksum() == self.compute_checksum()
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpHeader<T> {
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.m(), 0, p)
    }
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.m(), 2, p)
    }
    /// Recomputes the CRC32c (SCTP's checksum cannot be updated incrementally).
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        // Stored in the byte order the CRC is computed in (RFC 4960 appendix B).
        self.m()[sctp_field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
    }
}

/// An ICMPv4 or ICMPv6 header view (type, code, checksum; ND target for NS/NA).
#[derive(Debug, Clone)]
pub struct IcmpHeader<T: AsRef<[u8]>> {
    buffer: T,
}
impl<T: AsRef<[u8]>> IcmpHeader<T> {
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= ICMP_LEN).then_some(IcmpHeader { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn msg_type(&self) -> u8 {
        self.b()[icmp_field::TYPE]
    }
    pub fn code(&self) -> u8 {
        self.b()[icmp_field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 2)
    }
    /// The ND target, when this is a neighbor solicitation/advertisement long enough to hold it.
    pub fn nd_target(&self) -> Option<u128> {
        let b = self.b();
        (is_nd(b[0], b[1]) && b.len() >= ND_LEN)
            .then(|| super::ipv6::be128(&b[icmp_field::ND_TARGET]))
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpHeader<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.m(), 2, c)
    }
    /// Sets type and code, updating the checksum incrementally.
    pub fn set_type_code(&mut self, ty: u8, code: u8) {
        let old = be16(self.b(), 0);
        let new = u16::from_be_bytes([ty, code]);
        let c = super::checksum::update16(self.checksum(), old, new);
        put16(self.m(), 0, new);
        self.set_checksum(c);
    }
    pub fn update_pseudo(&mut self, old: u128, new: u128) {
        let c = super::checksum::update128(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

/// True for the ICMPv6 messages whose target and link-layer options flows see.
#[inline]
pub fn is_nd(ty: u8, code: u8) -> bool {
    code == 0 && (ty == ND_NS || ty == ND_NA)
}

/// What an ND message carries, as flows see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NdInfo {
    pub target: u128,
    pub sll: [u8; 6],
    pub tll: [u8; 6],
    /// Offsets (within the ICMPv6 message) of the SLL and TLL option's address, 0 if absent.
    pub sll_ofs: usize,
    pub tll_ofs: usize,
}

/// Parses an NS/NA message body (`msg` starts at the ICMPv6 header). A message too short for
/// the target yields all zeros; options are read while they fit. A repeated SLL or TLL option
/// makes the whole ND part invalid (all zeros), as a malformed message.
pub fn parse_nd(msg: &[u8]) -> NdInfo {
    let mut nd = NdInfo::default();
    let Some(t) = msg.get(icmp_field::ND_TARGET) else {
        return nd;
    };
    nd.target = super::ipv6::be128(t);
    let mut ofs = ND_LEN;
    while let Some(opt) = msg.get(ofs..ofs + 8) {
        let len = opt[1] as usize * 8;
        if len == 0 || ofs + len > msg.len() {
            break;
        }
        if len == 8 && (opt[0] == ND_OPT_SLL || opt[0] == ND_OPT_TLL) {
            let (slot, at) = if opt[0] == ND_OPT_SLL {
                (&mut nd.sll, &mut nd.sll_ofs)
            } else {
                (&mut nd.tll, &mut nd.tll_ofs)
            };
            if *at != 0 {
                return NdInfo::default();
            }
            slot.copy_from_slice(&opt[2..8]);
            *at = ofs + 2;
        }
        ofs += len;
    }
    nd
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC32C: [u32; 256] = crc32c_table();

/// Continues a (reflected, Castagnoli) CRC over `data`; start with `!0` and complement at the end.
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut b = [0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0];
        let mut u = UdpHeader::new_checked(&mut b[..]).unwrap();
        u.set_src_port(9);
        u.update_pseudo(1, 2);
        assert_eq!((u.src_port(), u.checksum()), (9, 0));
    }

    #[test]
    fn tcp_checked_and_port_update() {
        let mut b = [0u8; 24];
        b[12] = 0x60;
        assert!(
            TcpHeader::new_checked(&b[..20]).is_none(),
            "options past end"
        );
        let c0 = checksum::checksum(&b);
        b[16..18].copy_from_slice(&c0.to_be_bytes());
        let mut t = TcpHeader::new_checked(&mut b[..]).unwrap();
        t.set_src_port(443);
        t.set_dst_port(80);
        assert_eq!(checksum::checksum(&b), 0);
        b[12] = 0x40;
        assert!(TcpHeader::new_checked(&b[..]).is_none(), "data offset < 5");
    }

    #[test]
    fn nd_options() {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(&[1, 1, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        m.extend_from_slice(&[9, 0]); // trailing junk shorter than an option: ignored
        let nd = parse_nd(&m);
        assert_eq!(nd.target, 0xfe80 << 112 | 1);
        assert_eq!(
            (nd.sll, nd.sll_ofs, nd.tll_ofs),
            ([0xa, 0xb, 0xc, 0xd, 0xe, 0xf], 26, 0)
        );
        m.truncate(32);
        m.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(parse_nd(&m), NdInfo::default(), "repeated SLL is invalid");
        assert_eq!(parse_nd(&m[..20]), NdInfo::default());
    }
}
