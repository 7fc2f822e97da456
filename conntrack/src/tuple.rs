//! Connection tuples: the lookup key of each direction of a connection.
//!
//! This module owns the key layout and its hash. It must not look at frames (that is
//! [`crate::packet`]) or at connection state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A 128-bit address split into two words, so that tuples keep 8-byte alignment (a `u128`
/// field would pad every tuple to a multiple of 16 bytes). IPv4 addresses are in the low 32
/// bits, as in [`pipeline::ct::CtTuple`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    hi: u64,
    lo: u64,
}

impl Addr {
    #[inline]
    pub const fn from_u128(v: u128) -> Addr {
        Addr {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }
    #[inline]
    pub const fn to_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }
    #[inline]
    pub const fn v4(a: u32) -> Addr {
        Addr {
            hi: 0,
            lo: a as u64,
        }
    }
    #[inline]
    pub const fn as_v4(self) -> u32 {
        self.lo as u32
    }
    pub fn from_ip(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(a) => Addr::v4(u32::from(a)),
            IpAddr::V6(a) => Addr::from_u128(u128::from(a)),
        }
    }
    pub fn to_ip(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(self.to_u128()))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.as_v4()))
        }
    }
}

/// One direction of a connection as seen on the wire, plus the zone it is tracked in.
///
/// For ICMP echo, `sport` is the identifier and `dport` is `type << 8 | code`, so that a
/// request and its reply map onto the two directions of one connection while a request in the
/// opposite direction does not match the reply tuple.
///
/// `repr(C)` keeps the five small fields in one 8-byte word after the addresses, which the
/// comparison reads as a whole.
#[derive(Clone, Copy, Debug, Default, Eq)]
#[repr(C)]
pub struct Tuple {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub zone: u16,
    pub proto: u8,
    pub v6: bool,
}

/// The echo reply type matching an echo request type (ICMP and ICMPv6), if it is one.
#[inline]
pub fn echo_reply_type(proto: u8, ty: u8) -> Option<u8> {
    match (proto, ty) {
        (IPPROTO_ICMP, 8) => Some(0),
        (IPPROTO_ICMP, 0) => Some(8),
        (IPPROTO_ICMPV6, 128) => Some(129),
        (IPPROTO_ICMPV6, 129) => Some(128),
        _ => None,
    }
}

/// Field by field, like the derived comparison, but without a branch per field: a lookup
/// compares one tuple per packet, and it almost always matches.
impl PartialEq for Tuple {
    #[inline]
    fn eq(&self, o: &Tuple) -> bool {
        ((self.src.hi ^ o.src.hi)
            | (self.src.lo ^ o.src.lo)
            | (self.dst.hi ^ o.dst.hi)
            | (self.dst.lo ^ o.dst.lo)
            | (self.small_fields() ^ o.small_fields()))
            == 0
    }
}

/// Over the same five words as the comparison, so that equal tuples hash alike (the helpers'
/// maps key on tuples).
impl std::hash::Hash for Tuple {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for w in [
            self.src.hi,
            self.src.lo,
            self.dst.hi,
            self.dst.lo,
            self.small_fields(),
        ] {
            state.write_u64(w);
        }
    }
}

#[inline]
pub fn is_icmp(proto: u8) -> bool {
    proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6
}

/// Whether the protocol has ports that NAT may change (the echo identifier counts as one).
#[inline]
pub fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6
    )
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;
const K3: u64 = 0x2545_f491_4f6c_dd1d;

/// Folded 64x64->128 multiply: a cheap, well-mixing step (the core of several fast hashes).
#[inline]
pub fn mix(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

impl Tuple {
    /// Every field zero (the IPv4 unspecified addresses): what parsers start from.
    pub const ZERO: Tuple = Tuple {
        src: Addr::v4(0),
        dst: Addr::v4(0),
        sport: 0,
        dport: 0,
        zone: 0,
        proto: 0,
        v6: false,
    };

    /// The tuple of a packet travelling the other way.
    #[inline]
    pub fn reverse(&self) -> Tuple {
        if is_icmp(self.proto) {
            let ty = (self.dport >> 8) as u8;
            let rty = echo_reply_type(self.proto, ty).unwrap_or(ty);
            Tuple {
                src: self.dst,
                dst: self.src,
                sport: self.sport,
                dport: (rty as u16) << 8 | (self.dport & 0xff),
                ..*self
            }
        } else {
            Tuple {
                src: self.dst,
                dst: self.src,
                sport: self.dport,
                dport: self.sport,
                ..*self
            }
        }
    }

    /// Ports, zone, protocol and family as one word.
    #[inline(always)]
    fn small_fields(&self) -> u64 {
        (self.sport as u64)
            | (self.dport as u64) << 16
            | (self.zone as u64) << 32
            | (self.proto as u64) << 48
            | (self.v6 as u64) << 56
    }

    /// Keyed hash of the whole tuple: for a tuple and its [`Tuple::reverse`], the same but for
    /// the top bit. `seed` keeps the bucket layout unpredictable from the wire.
    ///
    /// Each end (address and port) is hashed alone and the two are combined in an order that
    /// does not depend on which is the source. So a connection without NAT has both
    /// directions in one shard and one bucket (chosen by the low bits): a reply-direction
    /// packet takes one lock and reads no key record. The top bit says which end came first,
    /// so the two directions' entries carry different tags in that bucket and a lookup
    /// compares only its own direction's record. Each field has bits of its own (a port's are
    /// zero for ICMP, whose identifier takes them), so no two fields can cancel each other out
    /// whatever the seed.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let (sport, dport, icmp) = if is_icmp(self.proto) {
            // The identifier and code are the same both ways; an echo type and its reply's
            // become the smaller of the two.
            let ty = (self.dport >> 8) as u8;
            let ty = echo_reply_type(self.proto, ty).map_or(ty, |r| r.min(ty));
            let icmp = self.sport as u64 | (ty as u64) << 48 | ((self.dport & 0xff) as u64) << 56;
            (0, 0, icmp)
        } else {
            (self.sport, self.dport, 0)
        };
        // Ports in the low bits, where the last multiply spreads them over the whole hash.
        let a = mix(self.src.hi ^ seed ^ K0, self.src.lo ^ K1) ^ sport as u64;
        let b = mix(self.dst.hi ^ seed ^ K0, self.dst.lo ^ K1) ^ dport as u64;
        // Zone, protocol and family between the ports' bits and the ICMP type's.
        let w =
            (self.zone as u64) << 16 | (self.proto as u64) << 32 | (self.v6 as u64) << 40 | icmp;
        // The last multiply alone leaves the low bits (the shard) and the middle ones (the
        // bucket) clumped for consecutive ports: a shift and a multiply spread them.
        let h = mix(a.min(b) ^ w ^ K2, a.max(b) ^ K3);
        let h = (h ^ h >> 32).wrapping_mul(K0);
        (h ^ h >> 29) ^ ((a < b) as u64) << 63
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A tuple and its reverse hash alike but for the top bit (ICMP echo requests and
        /// replies included) under any seed, so a connection without NAT keeps both directions
        /// in one shard and one bucket; the top bit differs unless both ends are the same.
        #[test]
        fn a_tuple_and_its_reverse_hash_alike(
            src in any::<u128>(),
            dst in any::<u128>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            zone in any::<u16>(),
            proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMP),
                                 Just(IPPROTO_ICMPV6), any::<u8>()],
            icmp_type in prop_oneof![Just(0u8), Just(8), Just(128), Just(129), any::<u8>()],
            v6 in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let dport = if is_icmp(proto) { (icmp_type as u16) << 8 | dport & 0xff } else { dport };
            let t = Tuple {
                src: Addr::from_u128(src),
                dst: Addr::from_u128(dst),
                sport,
                dport,
                zone,
                proto,
                v6,
            };
            let (h, r) = (t.hash(seed), t.reverse().hash(seed));
            prop_assert_eq!(h << 1, r << 1);
            let same_ends = t.src == t.dst && (is_icmp(proto) || sport == dport);
            prop_assert_eq!(h == r, same_ends);
        }
    }

    /// Structured tuple families (consecutive ports, consecutive addresses, IPv4 and IPv6)
    /// spread over buckets and shards as a random hash would: 4,096 tuples into 1,024 buckets
    /// (chosen by the tag, as the index does) and into the 64 shards.
    #[test]
    fn structured_tuples_spread_evenly() {
        let base = Tuple {
            src: Addr::v4(0x0a00_0001),
            dst: Addr::v4(0x0808_0808),
            sport: 10_000,
            dport: 80,
            zone: 9,
            proto: IPPROTO_TCP,
            v6: false,
        };
        let v6 = Tuple {
            src: Addr::from_u128(0x2001_0db8 << 96),
            dst: Addr::from_u128(0x2001_0db8 << 96 | 1),
            v6: true,
            ..base
        };
        let member = |family: &str, i: u32| match family {
            "source ports" => Tuple {
                sport: 10_000 + i as u16,
                ..base
            },
            "destination ports" => Tuple {
                dport: i as u16,
                ..base
            },
            "sources" => Tuple {
                src: Addr::v4(0x0a00_0000 + i),
                ..base
            },
            "zones" => Tuple {
                zone: i as u16,
                ..base
            },
            "v6 sources" => Tuple {
                src: Addr::from_u128(v6.src.to_u128() + i as u128),
                ..v6
            },
            _ => Tuple {
                sport: i as u16,
                ..v6
            },
        };
        for name in [
            "source ports",
            "destination ports",
            "sources",
            "zones",
            "v6 sources",
            "v6 source ports",
        ] {
            let mut buckets = [0u32; 1024];
            let mut shards = [0u32; crate::table::SHARDS];
            for i in 0..4096 {
                let h = member(name, i).hash(7);
                buckets[(crate::table::tag_of(h) & 1023) as usize] += 1;
                shards[crate::table::Shards::shard_of(h)] += 1;
            }
            let empty = buckets.iter().filter(|&&n| n == 0).count();
            let fullest = *buckets.iter().max().unwrap();
            // A random hash leaves about 19 buckets empty, the fullest holding about 11.
            assert!(
                empty < 50 && fullest <= 16,
                "{name}: {empty} empty, fullest {fullest}"
            );
            let (lo, hi) = (*shards.iter().min().unwrap(), *shards.iter().max().unwrap());
            assert!(lo >= 32 && hi <= 100, "{name}: shards hold {lo}..={hi}");
        }
    }

    #[test]
    fn reverse_is_an_involution_and_pairs_echo_types() {
        let t = Tuple {
            src: Addr::v4(1),
            dst: Addr::v4(2),
            sport: 7,
            dport: 8 << 8,
            zone: 3,
            proto: IPPROTO_ICMP,
            v6: false,
        };
        let r = t.reverse();
        assert_eq!(r.dport >> 8, 0);
        assert_eq!(r.sport, 7);
        assert_eq!(r.reverse(), t);
        let u = Tuple {
            proto: IPPROTO_UDP,
            sport: 1,
            dport: 2,
            ..t
        };
        assert_eq!(u.reverse().sport, 2);
        assert_eq!(u.reverse().reverse(), u);
    }

    #[test]
    fn hash_and_equality_depend_on_every_field() {
        let t = Tuple {
            src: Addr::v4(1),
            dst: Addr::v4(2),
            sport: 7,
            dport: 9,
            zone: 3,
            proto: IPPROTO_UDP,
            v6: false,
        };
        let h = t.hash(1);
        for m in [
            Tuple { zone: 4, ..t },
            Tuple { sport: 8, ..t },
            Tuple { dport: 8, ..t },
            Tuple {
                src: Addr::v4(5),
                ..t
            },
            Tuple {
                dst: Addr::from_u128(2 << 64),
                ..t
            },
            Tuple { proto: 6, ..t },
            Tuple { v6: true, ..t },
            Tuple {
                src: Addr::from_u128(1 | 1 << 64),
                ..t
            },
        ] {
            assert_ne!(m.hash(1), h);
            assert_ne!(m, t);
        }
        assert_eq!(t, Tuple { ..t });
        assert_ne!(t.hash(2), h);
    }
}
