use super::*;
use crate::extract::extract;
use crate::key::{FieldLoc, PACKET_WORD, W_NW_ADDR};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = u128> {
    any::<u64>().prop_map(|v| (v & 0xffff_ffff_ffff) as u128)
}

/// What a generated key describes above L2.
#[derive(Clone, Debug)]
pub(crate) enum Net {
    V4 {
        src: u32,
        dst: u32,
        tos: u8,
        ttl: u8,
        frag: u8,
        l4: Tp,
    },
    V6 {
        src: u128,
        dst: u128,
        tc: u8,
        label: u32,
        hlim: u8,
        frag: u8,
        l4: Tp,
    },
    Arp {
        rarp: bool,
        op: u8,
        spa: u32,
        tpa: u32,
        sha: u128,
        tha: u128,
    },
    Other(u16),
}

#[derive(Clone, Debug)]
pub(crate) enum Tp {
    Tcp(u16, u16, u16),
    Udp(u16, u16),
    Sctp(u16, u16),
    /// ICMP (v4 or v6 by the network layer), never ND.
    Icmp(u8, u8),
    Nd {
        ty: u8,
        target: u128,
        sll: u128,
        tll: u128,
    },
    Proto(u8),
}

fn frag() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(FRAG_ANY), Just(FRAG_ANY | FRAG_LATER)]
}

fn tp(v6: bool) -> impl Strategy<Value = Tp> {
    let icmp = (any::<u8>(), any::<u8>())
        .prop_filter("not ND", move |(t, c)| !(v6 && l4::is_nd(*t, *c)))
        .prop_map(|(t, c)| Tp::Icmp(t, c));
    let nd = (
        prop_oneof![Just(135u8), Just(136u8)],
        any::<u128>(),
        prop_oneof![Just(0u128), mac()],
        prop_oneof![Just(0u128), mac()],
    )
        .prop_map(|(ty, target, sll, tll)| Tp::Nd {
            ty,
            target,
            sll,
            tll,
        });
    let nd = if v6 { nd.boxed() } else { icmp.clone().boxed() };
    // Protocol numbers that are neither parsed transports nor IPv6 extension headers.
    let other = any::<u8>()
        .prop_filter("plain protocol", |p| {
            !matches!(p, 0 | 1 | 6 | 17 | 43 | 44 | 51 | 58 | 60 | 132)
        })
        .prop_map(Tp::Proto);
    prop_oneof![
        (any::<u16>(), any::<u16>(), 0u16..0x1000).prop_map(|(a, b, f)| Tp::Tcp(a, b, f)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Tp::Udp(a, b)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Tp::Sctp(a, b)),
        icmp,
        nd,
        other,
    ]
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            1u8..,
            frag(),
            tp(false)
        )
            .prop_map(|(src, dst, tos, ttl, frag, l4)| Net::V4 {
                src,
                dst,
                tos,
                ttl,
                frag,
                l4
            }),
        (
            any::<u128>(),
            any::<u128>(),
            any::<u8>(),
            0u32..0x10_0000,
            1u8..,
            frag(),
            tp(true)
        )
            .prop_map(|(src, dst, tc, label, hlim, frag, l4)| Net::V6 {
                src,
                dst,
                tc,
                label,
                hlim,
                frag,
                l4
            }),
        (
            any::<bool>(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            mac(),
            mac()
        )
            .prop_map(|(rarp, op, spa, tpa, sha, tha)| Net::Arp {
                rarp,
                op,
                spa,
                tpa,
                sha,
                tha
            }),
        prop_oneof![
            Just(0x05ffu16),
            (0x0600u16..).prop_filter("not parsed", |t| {
                !matches!(*t, 0x0800 | 0x0806 | 0x8035 | 0x86dd | 0x8100 | 0x88a8)
            })
        ]
        .prop_map(Net::Other),
    ]
}

fn set_tp(k: &mut FlowKey, t: &Tp, v6: bool, later: bool) {
    let proto = match t {
        Tp::Tcp(..) => IPPROTO_TCP,
        Tp::Udp(..) => IPPROTO_UDP,
        Tp::Sctp(..) => IPPROTO_SCTP,
        Tp::Icmp(..) | Tp::Nd { .. } if v6 => IPPROTO_ICMPV6,
        Tp::Icmp(..) | Tp::Nd { .. } => IPPROTO_ICMP,
        Tp::Proto(p) => *p,
    };
    if later {
        // Later fragments carry no transport header; IPv6 ones show the fragment header.
        k.set(loc::NW_PROTO, if v6 { 44 } else { proto as u128 });
        return;
    }
    k.set(loc::NW_PROTO, proto as u128);
    match *t {
        Tp::Tcp(a, b, f) => {
            k.set(loc::TP_SRC, a as u128);
            k.set(loc::TP_DST, b as u128);
            k.set(loc::TCP_FLAGS, f as u128);
        }
        Tp::Udp(a, b) | Tp::Sctp(a, b) => {
            k.set(loc::TP_SRC, a as u128);
            k.set(loc::TP_DST, b as u128);
        }
        Tp::Icmp(ty, c) => {
            k.set(loc::ICMP_TYPE, ty as u128);
            k.set(loc::ICMP_CODE, c as u128);
        }
        Tp::Nd {
            ty,
            target,
            sll,
            tll,
        } => {
            k.set(loc::ICMP_TYPE, ty as u128);
            if v6 {
                k.set(loc::ND_TARGET, target);
                k.set(loc::ARP_SHA, sll);
                k.set(loc::ARP_THA, tll);
            }
        }
        Tp::Proto(_) => {}
    }
}

/// Keys (packet words only) over every protocol extract() knows, internally consistent.
pub(crate) fn arb_key() -> impl Strategy<Value = FlowKey> {
    let tags = prop_oneof![
        Just((None, None)),
        any::<u16>().prop_map(|t| (Some(t), None)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| (Some(a), Some(b))),
    ];
    (mac(), mac(), tags, net()).prop_map(|(src, dst, (outer, inner), n)| {
        let mut k = FlowKey::ZERO;
        k.set(loc::DL_SRC, src);
        k.set(loc::DL_DST, dst);
        if let Some(t) = outer {
            k.set(loc::VLAN_TCI, (t | VLAN_CFI) as u128);
        }
        if let Some(t) = inner {
            k.set(loc::INNER_VLAN_TCI, (t | VLAN_CFI) as u128);
        }
        match n {
            Net::V4 {
                src,
                dst,
                tos,
                ttl,
                frag,
                l4,
            } => {
                k.set(loc::DL_TYPE, ETH_TYPE_IP as u128);
                k.set(loc::NW_SRC, src as u128);
                k.set(loc::NW_DST, dst as u128);
                k.set(loc::NW_TOS, tos as u128);
                k.set(loc::NW_TTL, ttl as u128);
                k.set(loc::NW_FRAG, frag as u128);
                set_tp(&mut k, &l4, false, frag & FRAG_LATER != 0);
            }
            Net::V6 {
                src,
                dst,
                tc,
                label,
                hlim,
                frag,
                l4,
            } => {
                k.set(loc::DL_TYPE, ETH_TYPE_IPV6 as u128);
                k.set(loc::IPV6_SRC, src);
                k.set(loc::IPV6_DST, dst);
                k.set(loc::NW_TOS, tc as u128);
                k.set(loc::IPV6_LABEL, label as u128);
                k.set(loc::NW_TTL, hlim as u128);
                k.set(loc::NW_FRAG, frag as u128);
                set_tp(&mut k, &l4, true, frag & FRAG_LATER != 0);
            }
            Net::Arp {
                rarp,
                op,
                spa,
                tpa,
                sha,
                tha,
            } => {
                k.set(
                    loc::DL_TYPE,
                    if rarp { ETH_TYPE_RARP } else { ETH_TYPE_ARP } as u128,
                );
                k.set(loc::ARP_OP, op as u128);
                k.set(loc::NW_SRC, spa as u128);
                k.set(loc::NW_DST, tpa as u128);
                k.set(loc::ARP_SHA, sha);
                k.set(loc::ARP_THA, tha);
            }
            Net::Other(t) => k.set(loc::DL_TYPE, t as u128),
        }
        k
    })
}

pub(crate) fn packet_words(k: &FlowKey) -> FlowKey {
    let mut p = FlowKey::ZERO;
    p.w[PACKET_WORD..].copy_from_slice(&k.w[PACKET_WORD..]);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn extract_inverts_compose(k in arb_key(), payload in 0usize..64) {
        let f = compose(&k, payload);
        let mut got = FlowKey::ONES;
        extract(&f, &mut got);
        prop_assert_eq!(packet_words(&got), k, "frame {:02x?}", f);
        prop_assert_eq!(verify_checksums(&f), Ok(()));
    }
}

#[test]
fn builder_frames_verify_and_parse() {
    let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let (s4, d4) = (
        Ipv4Addr::new(192, 168, 10, 5),
        Ipv4Addr::new(172, 22, 7, 27),
    );
    let (s6, d6) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    let frames = [
        PacketBuilder::udp4(a, b, s4, d4, 5000, 53)
            .vlan(2207)
            .payload_len(18)
            .build(),
        PacketBuilder::tcp4(a, b, s4, d4, 1, 2)
            .tcp_flags(0x18)
            .seq(7)
            .ack(9)
            .ip_options(&[1, 1, 1])
            .build(),
        PacketBuilder::icmp4_echo(a, b, s4, d4, 3, 4)
            .payload_len(56)
            .build(),
        PacketBuilder::tcp6(a, b, s6, d6, 1, 2)
            .ipv6_ext(0, &[])
            .ipv6_ext(60, &[1, 2, 3])
            .build(),
        PacketBuilder::icmp6_echo(a, b, s6, d6, 1, 1)
            .payload_len(3)
            .build(),
        PacketBuilder::nd_ns(a, b, s6, d6, s6).build(),
        PacketBuilder::nd_na(a, b, s6, d6, s6).qinq(10, 20).build(),
        PacketBuilder::sctp6(a, b, s6, d6, 9, 10)
            .payload_len(5)
            .build(),
        PacketBuilder::arp_request(a, s4, d4).build(),
        PacketBuilder::arp_reply(a, s4, b, d4).build(),
    ];
    for f in &frames {
        assert_eq!(verify_checksums(f), Ok(()), "{f:02x?}");
        // Cross-check against an independent parser.
        let p = etherparse::SlicedPacket::from_ethernet(f).expect("etherparse accepts it");
        if let Some(etherparse::TransportSlice::Udp(u)) = &p.transport {
            assert_eq!((u.source_port(), u.destination_port()), (5000, 53));
        }
    }
    let mut k = FlowKey::ZERO;
    let l = extract(&frames[1], &mut k);
    assert_eq!((k.get(loc::TCP_FLAGS), l.l4_ofs), (0x18, 14 + 24));
    let l = extract(&frames[3], &mut k);
    assert_eq!((k.nw_proto(), l.l4_ofs), (6, 14 + 40 + 16));
    extract(&frames[6], &mut k);
    assert_eq!(
        (
            k.vlan_tci(),
            k.get(loc::INNER_VLAN_TCI),
            k.get(loc::ARP_THA)
        ),
        (0x1000 | 10, 0x1000 | 20, 0x0200_0000_0001)
    );
    extract(&frames[9], &mut k);
    assert_eq!(
        (k.get(loc::ARP_OP), k.get(loc::ARP_THA), k.get(loc::NW_DST)),
        (2, 0x0200_0000_0002, 0xac16_071b)
    );
}

#[test]
fn checksum_verifier_catches_corruption() {
    let f = PacketBuilder::udp4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(1, 2, 3, 4),
        Ipv4Addr::new(5, 6, 7, 8),
        1,
        2,
    )
    .payload_len(4)
    .build();
    let mut g = f.clone();
    g[14 + 20 + 8] ^= 1;
    assert_eq!(verify_checksums(&g), Err("udp checksum"));
    let mut g = f.clone();
    g[14 + 8] ^= 1;
    assert_eq!(verify_checksums(&g), Err("ipv4 header checksum"));
    let g = PacketBuilder::sctp4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(1, 2, 3, 4),
        Ipv4Addr::new(5, 6, 7, 8),
        1,
        2,
    )
    .build();
    let mut h = g.clone();
    h[14 + 20 + 1] ^= 1;
    assert_eq!(
        (verify_checksums(&g), verify_checksums(&h)),
        (Ok(()), Err("sctp checksum"))
    );
}

#[test]
fn compose_defaults_ttl() {
    let mut k = FlowKey::ZERO;
    k.set(loc::DL_TYPE, ETH_TYPE_IP as u128);
    k.set(loc::NW_PROTO, 17);
    let mut got = FlowKey::ZERO;
    extract(&compose(&k, 0), &mut got);
    assert_eq!(got.get(loc::NW_TTL), 64);
    let _: (FieldLoc, usize) = (loc::NW_TTL, W_NW_ADDR);
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
