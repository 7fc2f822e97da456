//! Ethernet II header and 802.1Q/802.1ad tag views.
//!
//! Owns byte offsets of the Ethernet header and of a VLAN tag; it does not walk tag stacks
//! (that is [`crate::extract`]) nor insert or remove tags (that is [`super::rewrite`]).

use core::ops::Range;

/// Byte offsets within the Ethernet header.
pub mod field {
    use super::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Byte offsets within a VLAN tag, counted from the tag's TPID.
pub mod tag_field {
    use super::Range;
    pub const TPID: Range<usize> = 0..2;
    pub const TCI: Range<usize> = 2..4;
}

pub const HEADER_LEN: usize = 14;
pub const TAG_LEN: usize = 4;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
/// Smallest value of the type/length field that is an EtherType; below it is an 802.3 length.
pub const ETHERTYPE_MIN: u16 = 0x0600;
/// The `dl_type` of an 802.3 frame that carries no SNAP EtherType.
pub const DL_TYPE_NONE: u16 = 0x05ff;

#[inline]
pub fn is_vlan_tpid(t: u16) -> bool {
    t == TPID_8021Q || t == TPID_8021AD
}

/// A MAC address packed in the low 48 bits of a `u64` (first byte most significant).
#[inline]
pub fn mac_to_u64(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

#[inline]
pub fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A view of an Ethernet header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The view, if `buffer` holds at least a full header.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(EthernetFrame { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[field::DST]);
        m
    }

    pub fn src(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[field::SRC]);
        m
    }

    /// The type/length field right after the addresses (a TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// The outer tag's TCI, when the frame is tagged and long enough to hold the tag.
    pub fn outer_tci(&self) -> Option<u16> {
        let b = self.b();
        if is_vlan_tpid(self.ethertype()) && b.len() >= HEADER_LEN + TAG_LEN {
            Some(u16::from_be_bytes([b[14], b[15]]))
        } else {
            None
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_and_writes_fields() {
        let mut b = [0u8; 18];
        b[12..18].copy_from_slice(&[0x81, 0x00, 0x08, 0x9f, 0x08, 0x00]);
        let mut e = EthernetFrame::new_checked(&mut b[..]).unwrap();
        e.set_dst([1, 2, 3, 4, 5, 6]);
        e.set_src([7, 8, 9, 10, 11, 12]);
        assert_eq!(e.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(e.src(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(e.ethertype(), TPID_8021Q);
        assert_eq!(e.outer_tci(), Some(2207));
        assert!(EthernetFrame::new_checked(&b[..13]).is_none());
        assert_eq!(
            EthernetFrame::new_checked(&b[..16]).unwrap().outer_tci(),
            None
        );
        assert_eq!(
            u64_to_mac(mac_to_u64(&[0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0])),
            [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0]
        );
    }
}
