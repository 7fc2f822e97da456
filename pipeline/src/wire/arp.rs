//! ARP (Ethernet/IPv4 only) packet view.
//!
//! Owns the byte offsets of an Ethernet/IPv4 ARP packet; other hardware or protocol types are
//! not ARP as flows see it and [`ArpPacket::new_checked`] refuses them.

use core::ops::Range;

pub mod field {
    use super::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

pub const LEN: usize = 28;

#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The view, if the buffer holds a full Ethernet/IPv4 ARP packet.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        let ok = b.len() >= LEN && b[0..6] == [0, 1, 0x08, 0x00, 6, 4];
        ok.then_some(ArpPacket { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn oper(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    pub fn sha(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[field::SHA]);
        m
    }
    pub fn tha(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[field::THA]);
        m
    }
    pub fn spa(&self) -> u32 {
        let b = &self.b()[field::SPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn tpa(&self) -> u32 {
        let b = &self.b()[field::TPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Writes the fixed Ethernet/IPv4 hardware/protocol type and length fields.
    pub fn set_eth_ipv4(&mut self) {
        self.m()[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    }
    pub fn set_oper(&mut self, op: u16) {
        self.m()[field::OPER].copy_from_slice(&op.to_be_bytes());
    }
    pub fn set_sha(&mut self, m: [u8; 6]) {
        self.m()[field::SHA].copy_from_slice(&m);
    }
    pub fn set_tha(&mut self, m: [u8; 6]) {
        self.m()[field::THA].copy_from_slice(&m);
    }
    pub fn set_spa(&mut self, a: u32) {
        self.m()[field::SPA].copy_from_slice(&a.to_be_bytes());
    }
    pub fn set_tpa(&mut self, a: u32) {
        self.m()[field::TPA].copy_from_slice(&a.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ethernet_ipv4() {
        let mut b = [0u8; 28];
        assert!(ArpPacket::new_checked(&b[..]).is_none());
        let mut a = ArpPacket::new_checked_unvalidated(&mut b[..]);
        a.set_eth_ipv4();
        a.set_oper(2);
        a.set_spa(0xac16_071b);
        a.set_sha([1, 2, 3, 4, 5, 6]);
        let a = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (a.oper(), a.spa(), a.sha()),
            (2, 0xac16_071b, [1, 2, 3, 4, 5, 6])
        );
        assert!(ArpPacket::new_checked(&b[..27]).is_none());
    }

    impl<T: AsRef<[u8]>> ArpPacket<T> {
        fn new_checked_unvalidated(buffer: T) -> Self {
            ArpPacket { buffer }
        }
    }
}
