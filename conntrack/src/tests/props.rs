use super::build::*;
use super::cases::{go, req, snat, view};
use crate::*;
use pipeline::flow::{NatKind, NatSpec};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

fn proto_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![Just(6u8), Just(17u8), Just(1u8)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A forward packet SNATed (or DNATed) then its reply un-NATed gives back the original
    /// addresses and ports, and every checksum verifies when recomputed from scratch.
    #[test]
    fn nat_round_trip_restores_tuple_and_checksums(
        src in any::<u32>(), dst in any::<u32>(), sport in 1u16.., dport in 1u16..,
        proto in proto_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..64),
        nat_addr in any::<u32>(), pmin in 1u16..60000, span in 0u16..100, dnat in any::<bool>(),
        zero_udp in any::<bool>(),
    ) {
        prop_assume!(src != dst);
        let t = Tracker::new(Config::default());
        let spec = NatSpec {
            kind: Some(if dnat { NatKind::Dst } else { NatKind::Src }),
            addr_min: Some(IpAddr::V4(Ipv4Addr::from(nat_addr))),
            port_min: Some(pmin),
            port_max: Some(pmin.saturating_add(span)),
            ..NatSpec::default()
        };
        let p = P {
            src: src as u128, dst: dst as u128, sport, dport, proto,
            flags: 0x02, payload: payload.clone(), icmp_type: 8, udp_no_csum: zero_udp && proto == 17,
            ..P::default()
        };
        let mut f = frame(&p);
        let c = CtRequest { nat: Some(&spec), ..CtRequest { commit: true, ..req(1) } };
        let r = match go(&t, &mut f, &c, 0) { CtVerdict::Tracked(r) => r, v => panic!("{v:?}") };
        prop_assert_eq!(r.state & CS_INVALID, 0);
        let (ts, td, tsp, tdp) = view(&f);
        // Reply to the translated packet.
        let rp = P {
            src: td, dst: ts, sport: if proto == 1 { tsp } else { tdp }, dport: if proto == 1 { 0 } else { tsp },
            proto, flags: 0x12, seq: 77, ack: 1001, icmp_type: 0, payload, udp_no_csum: zero_udp && proto == 17,
            ..P::default()
        };
        let mut back = frame(&rp);
        let bare = NatSpec::default();
        let n = CtRequest { nat: Some(&bare), ..req(1) };
        let r = match go(&t, &mut back, &n, 0) { CtVerdict::Tracked(r) => r, v => panic!("{v:?}") };
        prop_assert_eq!(r.state & (CS_ESTABLISHED | CS_REPLY_DIR), CS_ESTABLISHED | CS_REPLY_DIR);
        let (bs, bd, bsp, bdp) = view(&back);
        prop_assert_eq!((bs, bd), (dst as u128, src as u128));
        if proto == 1 {
            prop_assert_eq!(bsp, sport);
        } else {
            prop_assert_eq!((bsp, bdp), (dport, sport));
        }
        if zero_udp && proto == 17 {
            prop_assert_eq!(&back[ETH + 26..ETH + 28], &[0u8, 0][..]);
        }
    }

    /// Arbitrary bytes never panic the tracker.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), frag in any::<bool>()) {
        let t = Tracker::new(Config::default());
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&bytes);
        let mut k = FlowKey::ZERO;
        if frag { k.set(loc::NW_FRAG, FRAG_ANY as u128); }
        let len = f.len();
        let spec = snat([1, 2, 3, 4]);
        let c = CtRequest { nat: Some(&spec), ..CtRequest { commit: true, ..req(0) } };
        let _ = t.execute(&mut Frame::new(&mut f, 0, len), ETH, &k, &c, 0);
    }
}
