//! IPv6 fixed header view and the extension-header walk.
//!
//! Owns the IPv6 header's byte offsets, the walk over hop-by-hop, routing, destination options,
//! authentication and fragment headers to the upper-layer protocol, and the pseudo-header sum.
//! It does not rewrite upper-layer checksums (that is [`super::rewrite`]).

use core::ops::Range;

pub mod field {
    use super::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

pub const HEADER_LEN: usize = 40;
pub const NH_HOPOPT: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AUTH: u8 = 51;
pub const NH_DSTOPTS: u8 = 60;
/// Fragment offset bits of the fragment header's offset/flags word.
pub const FRAG_OFFSET_MASK: u16 = 0xfff8;
pub const FRAG_MORE: u16 = 0x0001;
pub const LABEL_MASK: u32 = 0x000f_ffff;

/// A view of an IPv6 fixed header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// The view, if the buffer holds the fixed header and the payload length fits in it (the
    /// version nibble is not checked: the EtherType already said IPv6).
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let plen = u16::from_be_bytes([b[4], b[5]]) as usize;
        if HEADER_LEN + plen > b.len() {
            return None;
        }
        Some(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn word0(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }
    pub fn flow_label(&self) -> u32 {
        self.word0() & LABEL_MASK
    }
    pub fn payload_len(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[4], b[5]])
    }
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> u128 {
        be128(&self.b()[field::SRC])
    }
    /// The payload (bounded by the payload length) and the first next-header value.
    pub fn payload_ext(&self) -> (&[u8], u8) {
        let end = HEADER_LEN + self.payload_len() as usize;
        (
            self.b().get(HEADER_LEN..end).unwrap_or(&[]),
            self.next_header(),
        )
    }
    pub fn dst(&self) -> u128 {
        be128(&self.b()[field::DST])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set_word0(&mut self, v: u32) {
        self.m()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.word0() & 0xf00f_ffff) | (tc as u32) << 20;
        self.set_word0(w);
    }
    pub fn set_flow_label(&mut self, label: u32) {
        let w = (self.word0() & !LABEL_MASK) | (label & LABEL_MASK);
        self.set_word0(w);
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.m()[field::PAYLOAD_LEN].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_next_header(&mut self, v: u8) {
        self.m()[field::NEXT_HEADER] = v;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.m()[field::HOP_LIMIT] = v;
    }
    pub fn set_src(&mut self, a: u128) {
        self.m()[field::SRC].copy_from_slice(&a.to_be_bytes());
    }
    pub fn set_dst(&mut self, a: u128) {
        self.m()[field::DST].copy_from_slice(&a.to_be_bytes());
    }
}

#[inline]
pub fn be128(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    u128::from_be_bytes(a)
}

/// Where the extension-header walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtWalk {
    /// Upper-layer protocol (or [`NH_FRAGMENT`] for a non-first fragment, as flows see it).
    pub proto: u8,
    /// Offset of the upper-layer header within the buffer given to [`walk_ext`].
    pub ofs: usize,
    /// `key::FRAG_*` bits.
    pub frag: u8,
}

/// Walks the extension headers of an IPv6 payload starting at `payload` (the bytes after the
/// fixed header, already bounded by the payload length). `None` when a header runs past the end.
pub fn walk_ext(payload: &[u8], mut nh: u8) -> Option<ExtWalk> {
    use crate::key::{FRAG_ANY, FRAG_LATER};
    let mut ofs = 0usize;
    let mut frag = 0u8;
    loop {
        match nh {
            NH_HOPOPT | NH_ROUTING | NH_DSTOPTS | NH_AUTH => {
                let h = payload.get(ofs..ofs + 2)?;
                let len = if nh == NH_AUTH {
                    (h[1] as usize + 2) * 4
                } else {
                    (h[1] as usize + 1) * 8
                };
                if ofs + len > payload.len() {
                    return None;
                }
                nh = h[0];
                ofs += len;
            }
            NH_FRAGMENT => {
                let h = payload.get(ofs..ofs + 8)?;
                let offlg = u16::from_be_bytes([h[2], h[3]]);
                ofs += 8;
                if offlg != 0 {
                    frag |= FRAG_ANY;
                    if offlg & FRAG_OFFSET_MASK != 0 {
                        // Later fragments carry no upper-layer header: flows see the
                        // fragment header itself as the protocol.
                        return Some(ExtWalk {
                            proto: NH_FRAGMENT,
                            ofs,
                            frag: frag | FRAG_LATER,
                        });
                    }
                }
                nh = h[0];
            }
            _ => {
                return Some(ExtWalk {
                    proto: nh,
                    ofs,
                    frag,
                })
            }
        }
    }
}

/// True when the extension headers include a routing header with segments left: the transport
/// checksum then covers the final destination, not the destination field of the fixed header.
pub fn routing_pending(payload: &[u8], mut nh: u8) -> bool {
    let mut ofs = 0usize;
    // Bounded like the walk itself: each step consumes at least 8 bytes.
    while let Some(h) = payload.get(ofs..ofs + 4) {
        let len = match nh {
            NH_ROUTING if h[3] != 0 => return true,
            NH_HOPOPT | NH_ROUTING | NH_DSTOPTS => (h[1] as usize + 1) * 8,
            NH_AUTH => (h[1] as usize + 2) * 4,
            _ => return false,
        };
        nh = h[0];
        ofs += len;
    }
    false
}

/// One's-complement sum of the IPv6 pseudo-header (not folded, not complemented).
pub fn pseudo_sum(src: u128, dst: u128, proto: u8, len: u32) -> u32 {
    let mut acc = 0u32;
    for a in [src, dst] {
        for i in 0..8 {
            acc += ((a >> (16 * i)) & 0xffff) as u32;
        }
    }
    acc + (len >> 16) + (len & 0xffff) + proto as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{FRAG_ANY, FRAG_LATER};

    #[test]
    fn fields_roundtrip() {
        let mut b = [0u8; 40];
        b[0] = 0x60;
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xabcde);
        p.set_hop_limit(9);
        p.set_src(1);
        p.set_dst(0x2001_0db8 << 96);
        assert_eq!(
            (p.traffic_class(), p.flow_label(), p.hop_limit()),
            (0xb8, 0xabcde, 9)
        );
        assert_eq!((p.src(), p.dst()), (1, 0x2001_0db8 << 96));
        assert_eq!(b[0] >> 4, 6);
        b[5] = 1;
        assert!(Ipv6Packet::new_checked(&b[..]).is_none());
    }

    #[test]
    fn ext_walk() {
        // hop-by-hop (8 bytes) -> fragment (offset 0, M) -> UDP
        let mut p = vec![NH_FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 7]);
        assert_eq!(
            walk_ext(&p, NH_HOPOPT),
            Some(ExtWalk {
                proto: 17,
                ofs: 16,
                frag: FRAG_ANY
            })
        );
        p[10] = 0x05; // offset 160
        assert_eq!(
            walk_ext(&p, NH_HOPOPT),
            Some(ExtWalk {
                proto: NH_FRAGMENT,
                ofs: 16,
                frag: FRAG_ANY | FRAG_LATER
            })
        );
        assert_eq!(walk_ext(&p[..12], NH_HOPOPT), None);
        // Routing header (segments left 1) after hop-by-hop; the fragment header ends the scan.
        let r = [NH_ROUTING, 0, 0, 0, 0, 0, 0, 0, 17, 0, 4, 1, 0, 0, 0, 0];
        assert!(routing_pending(&r, NH_HOPOPT));
        assert!(!routing_pending(&r[..8], NH_HOPOPT));
        assert!(!routing_pending(&p, NH_HOPOPT));
        assert_eq!(walk_ext(&p[..7], NH_HOPOPT), None);
    }
}
