use super::*;
use crate::compose::tests::{arb_key, packet_words};
use crate::compose::{compose, verify_checksums, PacketBuilder};
use crate::extract::extract;
use crate::key::{FRAG_LATER, KEY_WORDS, VLAN_CFI};
use proptest::prelude::*;
use std::net::Ipv4Addr;

const HEADROOM: usize = 64;

fn framed(f: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM + f.len()];
    b[HEADROOM..].copy_from_slice(f);
    b
}

/// `want` = `have` with some writable fields (those the frame has) changed to `vals`.
fn mutate(have: &FlowKey, vals: &[u128; 10], mask: u16) -> FlowKey {
    let mut want = *have;
    let mut i = 0;
    let mut put = |l: FieldLoc, v: u128| {
        if mask & (1 << i) != 0 {
            want.set(l, v);
        }
        i += 1;
    };
    put(loc::DL_SRC, vals[0]);
    put(loc::DL_DST, vals[1]);
    let later = have.nw_frag() & FRAG_LATER != 0;
    let (ty, code) = (
        have.get(loc::ICMP_TYPE) as u8,
        have.get(loc::ICMP_CODE) as u8,
    );
    match have.dl_type() {
        ETH_TYPE_IP => {
            put(loc::NW_SRC, vals[2]);
            put(loc::NW_DST, vals[3]);
            put(loc::NW_TOS, vals[4]);
            put(loc::NW_TTL, vals[5]);
        }
        ETH_TYPE_IPV6 => {
            put(loc::IPV6_SRC, vals[2]);
            put(loc::IPV6_DST, vals[3]);
            put(loc::NW_TOS, vals[4]);
            put(loc::NW_TTL, vals[5]);
            put(loc::IPV6_LABEL, vals[6]);
        }
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            put(loc::ARP_OP, vals[2] & 0xff);
            put(loc::NW_SRC, vals[3]);
            put(loc::NW_DST, vals[4]);
            put(loc::ARP_SHA, vals[5]);
            put(loc::ARP_THA, vals[6]);
        }
        _ => {}
    }
    if later {
        return want;
    }
    match have.nw_proto() {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            put(loc::TP_SRC, vals[7]);
            put(loc::TP_DST, vals[8]);
        }
        IPPROTO_ICMP if have.dl_type() == ETH_TYPE_IP => {
            put(loc::ICMP_TYPE, vals[7]);
            put(loc::ICMP_CODE, vals[8]);
        }
        IPPROTO_ICMPV6 if have.dl_type() == ETH_TYPE_IPV6 => {
            if l4::is_nd(ty, code) {
                put(loc::ND_TARGET, vals[7]);
                // An absent option is not added, so only present ones may change.
                if have.get(loc::ARP_SHA) != 0 {
                    put(loc::ARP_SHA, vals[8] | 1);
                }
                if have.get(loc::ARP_THA) != 0 {
                    put(loc::ARP_THA, vals[9] | 1);
                }
            } else if !l4::is_nd(vals[7] as u8, vals[8] as u8) {
                put(loc::ICMP_TYPE, vals[7]);
                put(loc::ICMP_CODE, vals[8]);
            }
        }
        _ => {}
    }
    want
}

fn changed_fields(have: &FlowKey, want: &FlowKey) -> u32 {
    let locs = [
        loc::DL_SRC,
        loc::DL_DST,
        loc::NW_SRC,
        loc::NW_DST,
        loc::NW_TOS,
        loc::NW_TTL,
        loc::IPV6_SRC,
        loc::IPV6_DST,
        loc::IPV6_LABEL,
        loc::ARP_OP,
        loc::ARP_SHA,
        loc::ARP_THA,
        loc::TP_SRC,
        loc::TP_DST,
        loc::ND_TARGET,
    ];
    let mut n = locs
        .iter()
        .filter(|l| have.get(**l) != want.get(**l))
        .count() as u32;
    // ICMP type and code share tp_src/tp_dst's words: count them as their own fields.
    if matches!(have.nw_proto(), IPPROTO_ICMP | IPPROTO_ICMPV6)
        && matches!(have.dl_type(), ETH_TYPE_IP | ETH_TYPE_IPV6)
    {
        n -= (have.get(loc::TP_SRC) != want.get(loc::TP_SRC)) as u32;
        n -= (have.get(loc::TP_DST) != want.get(loc::TP_DST)) as u32;
        n += (have.get(loc::ICMP_TYPE) != want.get(loc::ICMP_TYPE)) as u32;
        n += (have.get(loc::ICMP_CODE) != want.get(loc::ICMP_CODE)) as u32;
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn set_fields_reaches_want_with_valid_checksums(
        have in arb_key(),
        payload in 0usize..40,
        vals in any::<[u128; 10]>(),
        mask in any::<u16>(),
    ) {
        let mut vals = vals;
        for v in &mut vals[..2] { *v &= 0xffff_ffff_ffff; }
        for v in &mut vals[2..] { *v = if have.dl_type() == ETH_TYPE_IPV6 { *v } else { *v & 0xffff_ffff }; }
        let want = mutate(&have, &vals, mask);
        let f = compose(&have, payload);
        let mut buf = framed(&f);
        let mut frame = Frame::new(&mut buf, HEADROOM, f.len());
        let mut seen = FlowKey::ZERO;
        let lay = extract(frame.data(), &mut seen);
        prop_assert_eq!(packet_words(&seen), have);
        let n = set_fields(&mut frame, &lay, &have, &want).unwrap();
        prop_assert_eq!(frame.len(), f.len());
        let mut got = FlowKey::ZERO;
        extract(frame.data(), &mut got);
        prop_assert_eq!(packet_words(&got), want);
        prop_assert_eq!(verify_checksums(frame.data()), Ok(()));
        prop_assert_eq!(n, changed_fields(&have, &want));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A planned hop rewrite leaves every frame byte for byte as `set_fields` does, on any
    /// frame (IPv4 or not, TTL equal or not, cut short); and a set of anything more, or of
    /// part of a field, is not planned.
    #[test]
    fn hop_rewrite_is_set_fields(
        have in arb_key(),
        payload in 0usize..40,
        dst in 0u64..1 << 48, src in 0u64..1 << 48, ttl in any::<u8>(),
        which in 1u8..8, cut in proptest::option::of(0usize..60),
        extra in prop_oneof![Just(None), Just(Some(loc::NW_TOS)), Just(Some(loc::TP_SRC)), Just(Some(loc::NW_SRC))],
        partial in any::<bool>(),
    ) {
        let (mut value, mut mask) = (FlowKey::ZERO, FlowKey::ZERO);
        for (bit, l, v) in [(1, loc::DL_DST, dst as u128), (2, loc::DL_SRC, src as u128), (4, loc::NW_TTL, ttl as u128)] {
            if which & bit != 0 {
                value.set(l, v);
                mask.set_all(l);
            }
        }
        let plan = HopRewrite::plan(&value, &mask).expect("whole MACs and TTL are planned");
        let f = compose(&have, payload);
        let len = cut.map_or(f.len(), |c| c.min(f.len()));
        let (mut a, mut b) = (framed(&f[..len]), framed(&f[..len]));
        let mut seen = FlowKey::ZERO;
        let lay = extract(&f[..len], &mut seen);
        let mut want = have;
        for w in 0..KEY_WORDS {
            want.w[w] = (want.w[w] & !mask.w[w]) | (value.w[w] & mask.w[w]);
        }
        set_fields(&mut Frame::new(&mut a, HEADROOM, len), &lay, &have, &want).unwrap();
        plan.apply(&mut Frame::new(&mut b, HEADROOM, len), &lay, &have);
        prop_assert_eq!(a, b);
        if let Some(l) = extra {
            let mut more = mask;
            more.set_all(l);
            prop_assert_eq!(HopRewrite::plan(&value, &more), None);
        }
        if partial {
            let mut part = mask;
            let l = [loc::DL_DST, loc::DL_SRC, loc::NW_TTL][which.trailing_zeros() as usize];
            part.set(l, part.get(l) >> 1);
            prop_assert_eq!(HopRewrite::plan(&value, &part), None);
        }
    }
}

#[test]
fn an_empty_set_is_not_a_hop_rewrite() {
    assert_eq!(HopRewrite::plan(&FlowKey::ZERO, &FlowKey::ZERO), None);
}

fn udp_frame() -> Vec<u8> {
    PacketBuilder::udp4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(192, 168, 10, 5),
        Ipv4Addr::new(8, 8, 8, 8),
        5000,
        53,
    )
    .payload_len(18)
    .build()
}

#[test]
fn zero_udp_checksum_stays_zero() {
    let f = PacketBuilder::udp4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(192, 168, 10, 5),
        Ipv4Addr::new(8, 8, 8, 8),
        5000,
        53,
    )
    .no_udp_checksum()
    .build();
    let mut buf = framed(&f);
    let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
    let mut have = FlowKey::ZERO;
    let lay = extract(fr.data(), &mut have);
    let mut want = have;
    want.set(loc::NW_SRC, 0xac16_071b);
    want.set(loc::TP_SRC, 40000);
    assert_eq!(set_fields(&mut fr, &lay, &have, &want), Ok(2));
    assert_eq!(&fr.data()[40..42], &[0, 0]);
    assert_eq!(verify_checksums(fr.data()), Ok(()));
}

#[test]
fn absent_headers_are_skipped() {
    // Transport fields on a later fragment, IP fields on ARP: nothing written.
    let f = PacketBuilder::ipv4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(1, 1, 1, 1),
        Ipv4Addr::new(2, 2, 2, 2),
        6,
    )
    .fragment(100, false)
    .payload_len(20)
    .build();
    let a =
        PacketBuilder::arp_request([2; 6], Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2))
            .build();
    for f in [f, a] {
        let mut buf = framed(&f);
        let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
        let mut have = FlowKey::ZERO;
        let lay = extract(fr.data(), &mut have);
        let mut want = have;
        want.set(loc::TP_SRC, 99);
        want.set(loc::IPV6_LABEL, 5);
        assert_eq!(set_fields(&mut fr, &lay, &have, &want), Ok(0));
        assert_eq!(fr.data(), &f[..]);
    }
}

#[test]
fn vlan_push_set_pop() {
    let f = udp_frame();
    let mut buf = framed(&f);
    let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
    let mut k = FlowKey::ZERO;
    let mut lay = extract(fr.data(), &mut k);
    assert_eq!(pop_vlan(&mut fr, &mut lay), Err(RewriteError::NotPresent));
    assert_eq!(
        set_vlan_tci(&mut fr, &lay, 5),
        Err(RewriteError::NotPresent)
    );
    push_vlan(&mut fr, &mut lay, 0x8100, 2207).unwrap();
    assert_eq!(lay, extract(fr.data(), &mut k));
    assert_eq!(k.vlan_tci(), VLAN_CFI | 2207);
    push_vlan(&mut fr, &mut lay, 0x88a8, 0x6000 | 100).unwrap();
    assert_eq!(lay, extract(fr.data(), &mut k));
    assert_eq!(
        (k.vlan_tci(), k.get(loc::INNER_VLAN_TCI)),
        (VLAN_CFI | 0x6000 | 100, (VLAN_CFI | 2207) as u128)
    );
    set_vlan_tci(&mut fr, &lay, 0xe000 | 7).unwrap();
    extract(fr.data(), &mut k);
    assert_eq!(k.vlan_tci(), 0xf007, "PCP 7, present bit, VID 7");
    pop_vlan(&mut fr, &mut lay).unwrap();
    pop_vlan(&mut fr, &mut lay).unwrap();
    assert_eq!(fr.data(), &f[..]);
    assert_eq!(lay, extract(&f, &mut k));
    // No headroom: NoRoom, frame untouched.
    let mut b2 = f.clone();
    let mut fr = Frame::new(&mut b2, 0, f.len());
    assert_eq!(
        push_vlan(&mut fr, &mut lay, 0x8100, 1),
        Err(RewriteError::NoRoom)
    );
    assert_eq!(fr.data(), &f[..]);
}

#[test]
fn dec_ttl_ipv4_ipv6() {
    let v6 = PacketBuilder::udp6(
        [2; 6],
        [4; 6],
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
        1,
        2,
    )
    .hop_limit(2)
    .vlan(3)
    .build();
    let v4 = PacketBuilder::tcp4(
        [2; 6],
        [4; 6],
        Ipv4Addr::new(1, 1, 1, 1),
        Ipv4Addr::new(2, 2, 2, 2),
        1,
        2,
    )
    .ttl(2)
    .build();
    for f in [v4, v6] {
        let mut buf = framed(&f);
        let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
        let mut k = FlowKey::ZERO;
        let lay = extract(fr.data(), &mut k);
        assert_eq!(dec_ttl(&mut fr, &lay), Ok(true));
        extract(fr.data(), &mut k);
        assert_eq!(k.get(loc::NW_TTL), 1);
        assert_eq!(verify_checksums(fr.data()), Ok(()));
        assert_eq!(dec_ttl(&mut fr, &lay), Ok(false));
        extract(fr.data(), &mut k);
        assert_eq!(k.get(loc::NW_TTL), 1, "left as is");
    }
    let a =
        PacketBuilder::arp_request([2; 6], Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2))
            .build();
    let mut buf = framed(&a);
    let mut fr = Frame::new(&mut buf, HEADROOM, a.len());
    let mut k = FlowKey::ZERO;
    let lay = extract(fr.data(), &mut k);
    assert_eq!(dec_ttl(&mut fr, &lay), Err(RewriteError::NotPresent));
    assert_eq!(
        dec_ttl(&mut fr, &Layout::default()),
        Err(RewriteError::NotPresent)
    );
}

#[test]
fn stale_layout_never_panics() {
    let f = udp_frame();
    let mut have = FlowKey::ZERO;
    extract(&f, &mut have);
    let mut want = have;
    want.set(loc::NW_SRC, 1);
    want.set(loc::TP_DST, 2);
    let (mut hop_value, mut hop_mask) = (FlowKey::ZERO, FlowKey::ZERO);
    for l in [loc::DL_DST, loc::DL_SRC, loc::NW_TTL] {
        hop_value.set(l, 7);
        hop_mask.set_all(l);
    }
    let hop = HopRewrite::plan(&hop_value, &hop_mask).unwrap();
    for l3 in [0u16, 13, 14, 30, 60, 500] {
        for l4 in [0u16, 20, 34, 60, 500] {
            let mut buf = framed(&f);
            let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
            let lay = Layout {
                vlans: 0,
                l3_ofs: l3,
                l4_ofs: l4,
                l4_len: 200,
            };
            let _ = set_fields(&mut fr, &lay, &have, &want);
            let _ = dec_ttl(&mut fr, &lay);
            hop.apply(&mut fr, &lay, &have);
        }
    }
}

#[test]
fn ipv6_dst_rewrite_with_pending_routing_header_keeps_transport_checksum() {
    let (s, d) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    for (segments_left, csum_changes) in [(1u8, false), (0, true)] {
        let f = PacketBuilder::tcp6([2; 6], [4; 6], s, d, 1, 2)
            .ipv6_ext(43, &[4, segments_left])
            .build();
        let mut buf = framed(&f);
        let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
        let mut have = FlowKey::ZERO;
        let lay = extract(fr.data(), &mut have);
        let at = lay.l4_ofs as usize + 16;
        let before = fr.data()[at..at + 2].to_vec();
        let mut want = have;
        want.set(loc::IPV6_DST, 0x2001_0db8 << 96 | 9);
        assert_eq!(set_fields(&mut fr, &lay, &have, &want), Ok(1));
        assert_eq!(
            fr.data()[at..at + 2] != before[..],
            csum_changes,
            "segments left {segments_left}"
        );
    }
}
