//! Turning fuzzer bytes into frames: either raw bytes (anything at all) or a frame described by
//! a few bytes and built with correct lengths and checksums, so the fuzzer reaches the deep
//! paths (conntrack states, NAT, resubmits) that random bytes almost never get through.
#![allow(dead_code)]

use pipeline::compose::PacketBuilder;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A cursor over the fuzzer's bytes; reads past the end give zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

pub const VM_MAC: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
pub const ROUTER_MAC: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
pub const EXT_MAC: [u8; 6] = [0x00, 0x1c, 0x7f, 0x00, 0x00, 0x01];

fn mac(b: u8) -> [u8; 6] {
    match b % 5 {
        0 => VM_MAC,
        1 => ROUTER_MAC,
        2 => EXT_MAC,
        3 => [0xff; 6],
        _ => [0x02, 0, 0, 0, 0, b],
    }
}

/// Addresses the test tables care about, and a few others.
fn ip4(b: u8, r: u32) -> Ipv4Addr {
    match b % 6 {
        0 => Ipv4Addr::new(192, 168, 10, 5),
        1 => Ipv4Addr::new(192, 168, 10, (r & 0xff) as u8),
        2 => Ipv4Addr::new(172, 22, 7, 27),
        3 => Ipv4Addr::new(8, 8, 8, 8),
        4 => Ipv4Addr::new(172, 22, 7, 50),
        _ => Ipv4Addr::from(r),
    }
}

fn ip6(b: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, (b % 4) as u16 + 1)
}

/// One frame from the input. Returns the frame and whether it was built (valid) rather than raw.
pub fn frame(b: &mut Bytes<'_>) -> (Vec<u8>, bool) {
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let len = (b.u16() % 1600) as usize;
        let mut v = b.take(len).to_vec();
        // Short input: keep the length the fuzzer asked for only if it gave the bytes.
        if v.len() < 14 && (mode & 1) != 0 {
            v.resize(14, 0);
        }
        return (v, false);
    }
    let (m1, m2) = (b.u8(), b.u8());
    let (a1, a2, r1, r2) = (b.u8(), b.u8(), b.u32(), b.u32());
    let (sp, dp) = (b.u16(), b.u16());
    let (src, dst) = (ip4(a1, r1), ip4(a2, r2));
    let (smac, dmac) = (mac(m1), mac(m2));
    let opts = b.u8();
    let mut p = match mode % 10 {
        0 | 1 => PacketBuilder::udp4(smac, dmac, src, dst, sp, dp),
        2 | 3 => {
            let flags = b.u8();
            PacketBuilder::tcp4(smac, dmac, src, dst, sp, dp)
                .tcp_flags(flags as u16 | (((flags & 0x80) as u16) << 1))
                .seq(b.u32())
                .ack(b.u32())
        }
        4 => PacketBuilder::icmp4_echo(smac, dmac, src, dst, sp, dp),
        5 => PacketBuilder::ipv4(smac, dmac, src, dst, b.u8()),
        6 => PacketBuilder::udp6(smac, dmac, ip6(a1), ip6(a2), sp, dp),
        7 => PacketBuilder::tcp6(smac, dmac, ip6(a1), ip6(a2), sp, dp).tcp_flags(b.u8() as u16),
        8 => PacketBuilder::arp_request(smac, src, dst).arp_op(1 + (opts as u16 & 1)),
        _ => PacketBuilder::icmp6_echo(smac, dmac, ip6(a1), ip6(a2), sp, dp),
    };
    if opts & 0x01 != 0 {
        p = p.vlan(if opts & 0x40 != 0 { 2207 } else { 100 });
    }
    if opts & 0x02 != 0 {
        p = p.vlan(b.u16() & 0xfff);
    }
    if opts & 0x04 != 0 {
        p = p.ttl(b.u8() % 4);
    }
    if opts & 0x08 != 0 && mode % 10 < 6 {
        let o = b.u16();
        p = p.ident(b.u16()).fragment(o & 0x1fff, o & 0x8000 != 0);
    }
    if opts & 0x10 != 0 && mode % 10 < 6 {
        p = p.ip_options(&[1, 1, 1, 0]);
    }
    // Mostly short payloads of any length (odd ones reach the checksums' trailing byte); a
    // quarter long, up to 1512 bytes. Every pass over a payload (build, verify, NAT) costs
    // time per byte, and long ones reach no path a short one does not but length checks.
    let pl = b.u8();
    let len = if pl >= 0xc0 {
        (pl & 0x3f) as usize * 24
    } else {
        (pl & 0x3f) as usize
    };
    p = p.payload_len(len).payload_byte(opts);
    (p.build(), true)
}
