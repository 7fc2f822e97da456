use super::build::*;
use super::cases::{commit, go, req, snat, view};
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

/// One generated packet of a batch: (client, source port, protocol, TCP flags, corrupt the
/// checksum, mark it a fragment in the flow key).
type Pkt = (u8, u8, u8, u8, bool, bool);

fn pkt_strategy() -> impl Strategy<Value = Pkt> {
    (
        0u8..6,
        0u8..4,
        proto_strategy(),
        prop_oneof![Just(0x02u8), Just(0x10), Just(0x12), Just(0x11), Just(0x04)],
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.05),
    )
}

fn pkt_frame(&(c, sp, proto, flags, corrupt, _): &Pkt) -> Vec<u8> {
    let mut f = frame(&P {
        src: v4([10, 0, 0, c]),
        dst: v4([8, 8, 8, c % 2]),
        sport: 1000 + sp as u16,
        proto,
        flags,
        ..P::default()
    });
    if corrupt {
        let n = f.len();
        f[n - 1] ^= 0x5a;
    }
    f
}

/// A tracker configuration that takes the batch path however small its table, so that a
/// test's batches exercise the prefetch passes.
fn eager() -> Config {
    Config {
        prefetch_min_conns: 0,
        ..Config::default()
    }
}

/// Verdicts as text, to compare (CtVerdict has no equality).
fn texts(verdicts: Vec<CtVerdict>) -> Vec<String> {
    verdicts.iter().map(|v| format!("{v:?}")).collect()
}

/// Runs `frames` through `t` at time `now`, one `execute` at a time or as one
/// `execute_batch`; returns the verdicts and leaves the frames as the tracker left them.
fn run_verdicts(
    t: &Tracker,
    frames: &mut [Vec<u8>],
    frag: &[bool],
    r: &CtRequest<'_>,
    batch: bool,
    now: Nanos,
) -> Vec<CtVerdict> {
    let keys: Vec<FlowKey> = frames
        .iter()
        .zip(frag)
        .map(|(f, &fr)| {
            let mut k = super::cases::key_of(f);
            if fr {
                k.set(loc::NW_FRAG, FRAG_ANY as u128);
            }
            k
        })
        .collect();
    let mut fs: Vec<Frame<'_>> = frames
        .iter_mut()
        .map(|f| {
            let len = f.len();
            Frame::new(f, 0, len)
        })
        .collect();
    if batch {
        let mut items: Vec<CtItem<'_, '_>> = fs
            .iter_mut()
            .zip(&keys)
            .map(|(frame, key)| CtItem {
                frame,
                l3_ofs: ETH,
                key,
            })
            .collect();
        let mut out: Vec<Option<CtVerdict>> = (0..items.len()).map(|_| None).collect();
        assert_eq!(t.execute_batch(&mut items, r, now, &mut out), out.len());
        out.into_iter()
            .map(|v| v.expect("every item answered"))
            .collect()
    } else {
        fs.iter_mut()
            .zip(&keys)
            .map(|(f, k)| t.execute(f, ETH, k, r, now))
            .collect()
    }
}

/// A lookup that cannot commit, in a zone holding no connection, is answered without probing
/// the table; the moment the zone holds a connection, lookups find it again, and once the zone
/// is flushed they miss again, one by one and batched alike. Connections live in zone 3; the
/// replies are looked up in zone 3 and in zone 4.
#[test]
fn lookups_without_commit_find_what_their_zone_holds() {
    let out: Vec<Vec<u8>> = (0..8u16)
        .map(|i| {
            frame(&P {
                proto: 17,
                sport: 2000 + i,
                dport: 53,
                ..P::default()
            })
        })
        .collect();
    let back: Vec<Vec<u8>> = (0..8u16)
        .map(|i| {
            let o = P::default();
            frame(&P {
                proto: 17,
                src: o.dst,
                dst: o.src,
                sport: 53,
                dport: 2000 + i,
                ..o
            })
        })
        .collect();
    let frag = vec![false; out.len()];
    let states = |t: &Tracker, zone: u16, batch: bool| -> Vec<u32> {
        run_verdicts(t, &mut back.clone(), &frag, &req(zone), batch, 5)
            .iter()
            .map(|v| match v {
                CtVerdict::Tracked(r) => r.state & (CS_NEW | CS_ESTABLISHED | CS_REPLY_DIR),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    const HIT: u32 = CS_ESTABLISHED | CS_REPLY_DIR;
    for batch in [false, true] {
        let t = Tracker::new(eager());
        run_verdicts(&t, &mut out.clone(), &frag, &commit(3), batch, 5);
        assert_eq!(states(&t, 3, batch), [HIT; 8], "batch {batch}");
        let new = t.counters().new;
        assert_eq!(states(&t, 4, batch), [CS_NEW; 8], "batch {batch}");
        assert_eq!(t.counters().new, new + 8, "batch {batch}");
        // Two of the connections committed in zone 4 as well.
        run_verdicts(&t, &mut out[..2].to_vec(), &frag[..2], &commit(4), batch, 5);
        let mut want = [CS_NEW; 8];
        want[..2].fill(HIT);
        assert_eq!(states(&t, 4, batch), want, "batch {batch}");
        assert_eq!(t.flush(Some(4)), 2);
        assert_eq!(states(&t, 4, batch), [CS_NEW; 8], "batch {batch}");
        assert_eq!(states(&t, 3, batch), [HIT; 8], "batch {batch}");
    }
}

/// Lookups that miss without committing count as `new` whether they come one by one or in a
/// batch (which adds them up and counts them once): 40 UDP frames, each of its own flow, and 8
/// TCP resets, which cannot start a connection (`+inv`, not `new`), sent twice each way.
#[test]
fn uncommitted_misses_count_as_new_in_batches_too() {
    let mut frames: Vec<Vec<u8>> = (0..48u16)
        .map(|i| {
            frame(&P {
                proto: if i < 40 { 17 } else { 6 },
                sport: 2000 + i,
                flags: 0x14,
                ..P::default()
            })
        })
        .collect();
    let frag = vec![false; frames.len()];
    for batch in [false, true] {
        let t = Tracker::new(eager());
        for round in 1..=2u64 {
            let verdicts = run_verdicts(&t, &mut frames, &frag, &req(3), batch, 5);
            assert_eq!(verdicts.len(), 48);
            let c = t.counters();
            assert_eq!((c.new, c.invalid), (40 * round, 8 * round), "batch {batch}");
        }
        assert!(t.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A batch (longer than one internal chunk, with repeats, invalid and fragment-marked
    /// frames) ends exactly as the same frames executed one by one: same verdicts, same
    /// rewritten bytes, same table, same counters — first committing with SNAT, then replies.
    #[test]
    fn batch_matches_one_by_one(pkts in proptest::collection::vec(pkt_strategy(), 1..80)) {
        let spec = snat([192, 0, 2, 1]);
        let bare = NatSpec::default();
        let commit = CtRequest { nat: Some(&spec), ..CtRequest { commit: true, ..req(3) } };
        let back = CtRequest { nat: Some(&bare), ..req(3) };
        let frag: Vec<bool> = pkts.iter().map(|p| p.5).collect();
        // `many` batches however small its table, so the prefetch passes are what is compared.
        let (one, many) = (Tracker::new(Config::default()), Tracker::new(eager()));
        let mut a: Vec<Vec<u8>> = pkts.iter().map(pkt_frame).collect();
        let mut b = a.clone();
        prop_assert_eq!(texts(run_verdicts(&one, &mut a, &frag, &commit, false, 5)),
                        texts(run_verdicts(&many, &mut b, &frag, &commit, true, 5)));
        prop_assert_eq!(&a, &b);
        // Replies to whatever left the tracker (translated or not), with flags of a SYN-ACK.
        let mut ra: Vec<Vec<u8>> = a.iter().zip(&pkts).map(|(f, p)| {
            match packet::parse(f, ETH, 0, false) {
                Ok(q) => frame(&P {
                    src: q.tuple.dst.to_u128(), dst: q.tuple.src.to_u128(),
                    sport: q.tuple.dport, dport: q.tuple.sport, proto: p.2,
                    flags: 0x12, seq: 5000, ack: 1001, icmp_type: 0,
                    ..P::default()
                }),
                Err(_) => f.clone(),
            }
        }).collect();
        let mut rb = ra.clone();
        prop_assert_eq!(texts(run_verdicts(&one, &mut ra, &frag, &back, false, 5)),
                        texts(run_verdicts(&many, &mut rb, &frag, &back, true, 5)));
        prop_assert_eq!(&ra, &rb);
        let (mut da, mut db) = (one.dump(None), many.dump(None));
        da.sort();
        db.sort();
        prop_assert_eq!(da, db);
        prop_assert_eq!(one.counters(), many.counters());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The fast IPv4 parser and the general one give the same answer for every frame, well
    /// formed or damaged: IPv4 and IPv6, TCP (SYN or not), UDP with and without a checksum,
    /// ICMP, with up to three bytes overwritten anywhere, cut short or not, checked or not.
    #[test]
    fn fast_and_general_parsers_agree(
        v6 in any::<bool>(), proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)],
        flags in any::<u8>(), sport in any::<u16>(), dport in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..40), no_csum in any::<bool>(),
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(), cut_it in any::<bool>(), verify in any::<bool>(),
    ) {
        let p = P {
            v6, proto, flags, sport, dport, payload, udp_no_csum: no_csum && proto == 17 && !v6,
            src: if v6 { 0x2001_0db8 << 96 | 5 } else { 0xc612_0005 },
            dst: if v6 { 0x2001_0db8 << 96 | 9 } else { 0xc613_0009 },
            ..P::default()
        };
        let mut f = frame(&p);
        for (at, b) in damage {
            let n = f.len();
            f[at % n] = b;
        }
        if cut_it {
            f.truncate(cut % (f.len() + 1));
        }
        prop_assert_eq!(
            crate::packet::parse(&f, ETH, 7, verify),
            crate::packet::parse_any(&f, ETH, 7, verify)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The fast IPv4 parser takes every datagram it is for (the general one agreeing is not
    /// enough: when it refuses, the general one answers), so its checksum sums stay right: TCP
    /// without SYN and UDP, with and without a checksum, any ports, addresses and payload.
    #[test]
    fn fast_parser_takes_its_common_case(
        udp in any::<bool>(), flags in any::<u8>(), sport in any::<u16>(), dport in any::<u16>(),
        src in any::<u32>(), dst in any::<u32>(), no_csum in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let p = P {
            proto: if udp { 17 } else { 6 },
            flags: flags & !0x02,
            sport, dport, payload,
            udp_no_csum: udp && no_csum,
            src: src as u128,
            dst: dst as u128,
            ..P::default()
        };
        let f = frame(&p);
        let mut out = crate::packet::Parsed::EMPTY;
        prop_assert!(crate::packet::parse_v4_common(&f, ETH, 7, true, &mut out).is_some());
        prop_assert_eq!(Ok(out), crate::packet::parse_any(&f, ETH, 7, true));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The original direction's NAT target built directly is the reply tuple reversed, for
    /// SNAT, DNAT and none, every protocol (ICMP echo types included), both families.
    #[test]
    fn original_direction_target_is_the_reversed_reply(
        src in any::<u128>(), dst in any::<u128>(), sport in any::<u16>(),
        ty in prop_oneof![Just(0u8), Just(8u8), Just(128u8), Just(129u8), any::<u8>()],
        code in any::<u8>(), proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(58u8), Just(47u8)],
        dport in any::<u16>(), v6 in any::<bool>(), nat in 0u8..3, nat_addr in any::<u128>(),
        nat_port in any::<u16>(), zone in any::<u16>(),
    ) {
        use crate::table::{Conn, F_DNAT, F_SNAT};
        use crate::tuple::{Addr, Tuple};
        let icmp = proto == 1 || proto == 58;
        let orig = Tuple {
            src: Addr::from_u128(src),
            dst: Addr::from_u128(dst),
            sport,
            dport: if icmp { (ty as u16) << 8 | code as u16 } else { dport },
            zone,
            proto,
            v6,
        };
        let c = Conn {
            orig,
            flags: [0, F_SNAT, F_DNAT][nat as usize],
            nat_addr: Addr::from_u128(nat_addr),
            nat_port,
            ..Conn::default()
        };
        prop_assert_eq!(c.orig_target(), c.reply().reverse());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// For TCP and UDP under SNAT or DNAT, the one end a direction's NAT changes, applied to
    /// that direction's tuple, is the whole target tuple; and on an IPv4 frame the one-end
    /// rewrite writes exactly the bytes the general rewrite does.
    #[test]
    fn one_end_nat_is_the_whole_target(
        src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
        udp in any::<bool>(), no_csum in any::<bool>(), dnat in any::<bool>(), reply in any::<bool>(),
        nat_addr in any::<u32>(), nat_port in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        use crate::packet::{parse, rewrite, rewrite_end};
        use crate::table::{Conn, F_DNAT, F_SNAT};
        use crate::tuple::{Addr, Tuple};
        let proto = if udp { 17 } else { 6 };
        let orig = Tuple {
            src: Addr::v4(src), dst: Addr::v4(dst), sport, dport, zone: 3, proto, v6: false,
        };
        let c = Conn {
            orig,
            flags: if dnat { F_DNAT } else { F_SNAT },
            nat_addr: Addr::v4(nat_addr),
            nat_port,
            ..Conn::default()
        };
        let seen = if reply { c.reply() } else { c.orig };
        let end = c.nat_end(reply).expect("TCP and UDP under NAT change one end");
        prop_assert_eq!(end.apply(&seen), c.nat_target(reply));
        let p = P {
            src: seen.src.as_v4() as u128, dst: seen.dst.as_v4() as u128,
            sport: seen.sport, dport: seen.dport, proto, flags: 0x10, payload,
            udp_no_csum: udp && no_csum, ..P::default()
        };
        let f = frame(&p);
        let parsed = parse(&f, ETH, 3, true).expect("a well-formed frame");
        let (mut one, mut whole) = (f.clone(), f);
        rewrite_end(&mut one, &parsed, &end);
        rewrite(&mut whole, &parsed, &c.nat_target(reply));
        prop_assert_eq!(one, whole);
    }
}

/// One generated frame of a conversation: (connection, reply direction, protocol, TCP flags,
/// sequence number choice, corrupt the checksum, mark it a fragment).
type Turn = (u8, bool, u8, u8, u8, bool, bool);

fn turn_strategy() -> impl Strategy<Value = Turn> {
    (
        0u8..8,
        any::<bool>(),
        proto_strategy(),
        prop_oneof![
            Just(0x02u8),
            Just(0x10),
            Just(0x12),
            Just(0x11),
            Just(0x04),
            Just(0x10)
        ],
        0u8..3,
        proptest::bool::weighted(0.05),
        proptest::bool::weighted(0.03),
    )
}

/// Where [`turn_frame`] sends replies when its connections are source-NATed.
const TURN_SNAT_TO: [u8; 4] = [198, 51, 100, 1];

/// The frame of one turn; with `natted`, replies go to [`TURN_SNAT_TO`] (each connection keeps
/// its port there: the eight use distinct ones).
fn turn_frame(&(c, reply, proto, flags, seq, corrupt, _): &Turn, natted: bool) -> Vec<u8> {
    let (a, b) = (v4([10, 0, 0, c]), v4([8, 8, 8, c % 3]));
    let (ap, bp) = (1000 + c as u16, 80);
    let (src, dst, sport, dport) = if reply {
        (b, if natted { v4(TURN_SNAT_TO) } else { a }, bp, ap)
    } else {
        (a, b, ap, bp)
    };
    let (seq, ack) = match seq {
        0 => (1000, 5001),
        1 => (5000, 1001),
        _ => (1001, 5001),
    };
    let mut f = frame(&P {
        src,
        dst,
        sport: if proto == 1 { ap } else { sport },
        dport,
        proto,
        flags,
        seq,
        ack,
        icmp_type: if reply { 0 } else { 8 },
        ..P::default()
    });
    if corrupt {
        let n = f.len();
        f[n - 1] ^= 0x5a;
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Both directions of a few connections mixed in each batch, through handshakes, resets,
    /// closes, reopening SYNs, forced commits and expiry, end exactly as one by one: whatever
    /// a batch learns in its passes before tracking (the entry each frame's bucket showed, the
    /// key records of replies whose connection lives in another shard) must not outlive the
    /// frames before it that create, reopen or remove connections.
    ///
    /// With `natted` the connections are source-NATed: their reply tuples are then indexed in
    /// other shards than the connections (through key records) most of the time, while without
    /// NAT both directions share one shard.
    #[test]
    fn mixed_direction_batches_match_one_by_one(
        rounds in proptest::collection::vec(
            (proptest::collection::vec(turn_strategy(), 1..70), 0u8..4, 0u64..200),
            1..4,
        ),
        natted in any::<bool>(),
    ) {
        let to = snat(TURN_SNAT_TO);
        let bare = NatSpec::default();
        let (one, many) = (Tracker::new(Config::default()), Tracker::new(eager()));
        let mut now: Nanos = 5;
        for (turns, how, secs) in rounds {
            let r = match how {
                0 => req(4),
                1 => CtRequest { force: true, ..CtRequest { commit: true, ..req(4) } },
                _ => CtRequest { commit: true, ..req(4) },
            };
            let frag: Vec<bool> = turns.iter().map(|t| t.6).collect();
            let r = match (natted, r.commit) {
                (false, _) => r,
                (true, true) => CtRequest { nat: Some(&to), ..r },
                (true, false) => CtRequest { nat: Some(&bare), ..r },
            };
            let mut a: Vec<Vec<u8>> = turns.iter().map(|t| turn_frame(t, natted)).collect();
            let mut b = a.clone();
            prop_assert_eq!(texts(run_verdicts(&one, &mut a, &frag, &r, false, now)),
                            texts(run_verdicts(&many, &mut b, &frag, &r, true, now)));
            prop_assert_eq!(&a, &b);
            now += secs * 1_000_000_000;
        }
        let (mut da, mut db) = (one.dump(None), many.dump(None));
        da.sort();
        db.sort();
        prop_assert_eq!(da, db);
        prop_assert_eq!(one.counters(), many.counters());
    }
}
