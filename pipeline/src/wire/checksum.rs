//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).

/// Adds `data` to a running one's-complement sum (not folded).
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
        // Fold early enough that a 64 KiB payload cannot overflow.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add((*last as u32) << 8);
    }
    acc
}

/// Folds a running sum to 16 bits and complements it: the value to store in a header.
pub fn finish(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Checksum of `data` alone (IPv4 header, ICMP message).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changes from
/// `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let mut acc = (!csum as u32) + (!old as u32 & 0xffff) + new as u32;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Like [`update16`] for a 32-bit value (an IPv4 address).
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// Like [`update16`] for a 128-bit value (an IPv6 address).
pub fn update128(mut csum: u16, old: u128, new: u128) -> u16 {
    for i in (0..8).rev() {
        csum = update16(csum, (old >> (16 * i)) as u16, (new >> (16 * i)) as u16);
    }
    csum
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header from RFC 1071-style worked example: 45 00 00 73 00 00 40 00 40 11 [b8 61]
    // c0 a8 00 01 c0 a8 00 c7.
    const IPV4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_matches_known_value() {
        assert_eq!(checksum(&IPV4), 0xb861);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut h = IPV4;
        let c = checksum(&h);
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new: u32 = 0xac16_071b; // 172.22.7.27
        h[12..16].copy_from_slice(&new.to_be_bytes());
        assert_eq!(update32(c, old, new), checksum(&h));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), !0x0100);
    }
}
