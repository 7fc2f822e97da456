//! Fixtures were produced by an independent packet generator and are checked field by field.

use super::*;
use crate::compose::from_hex;
use crate::key::{loc, KEY_WORDS};

// Ether / 802.1Q 2207 / IPv4 172.22.7.27 > 8.8.8.8 tos 0x10 ttl 63 / UDP 33000 > 53 / 18 bytes.
const VLAN_UDP: &str = "00005e000101e01995ad56d08100089f08004510002e000700003f11b867ac16071b0808080880e80035001abb5b000000000000000000000000000000000000";
// Ether / 802.1ad PCP 3 VID 100 / 802.1Q PCP 5 VID 200 / IPv4 with 4 NOP options / TCP SYN+ACK.
const QINQ_TCP: &str = "e01995ad56d0506b8d455a2188a860648100a0c808004600002c000100004006a118c0a80a050a010203010101019c4001bb000003e8000007d0501220000f6e0000";
// Three 802.1Q tags (VIDs 1, 2, 3) then IPv4/UDP.
const TRIPLE_TAG: &str = "e01995ad56d0506b8d455a2181000001810000028100000308004500001c0001000040116abd0102030405060708003500350008ef60";
// IPv6 tc 0xb8 label 0xabcde hlim 17 / hop-by-hop / dest opts / fragment (offset 0, M) / UDP 546 > 547.
const V6_EXT_FRAG: &str = "e01995ad56d0506b8d455a2186dd6b8abcde0028001120010db800000000000000000000000120010db80000000000000000000000023c000104000000002c000104000000001100000100000009022202230010be327878787878787878";
// IPv6 / fragment header offset 100 (a later fragment of UDP).
const V6_LATER_FRAG: &str = "e01995ad56d0506b8d455a2186dd6000000000182c4020010db800000000000000000000000120010db8000000000000000000000002110003200000000979797979797979797979797979797979";
const ARP_REQ: &str =
    "ffffffffffff506b8d455a2108060001080006040001506b8d455a21c0a80a05000000000000c0a80a01";
// NS for fe80::2 with a source link-layer address option.
const ND_NS: &str = "3333ff000001506b8d455a2186dd6000000000203afffe800000000000000000000000000001ff0200000000000000000001ff000001870044c700000000fe8000000000000000000000000000020101506b8d455a21";
// NA for fe80::2 with a target link-layer address option.
const ND_NA: &str = "506b8d455a21e01995ad56d086dd6000000000203afffe800000000000000000000000000002fe80000000000000000000000000000188004d8460000000fe8000000000000000000000000000020201e01995ad56d0";
// IPv4 first fragment (MF, offset 0) / ICMP echo request.
const ICMP_FRAG0: &str =
    "e01995ad56d0506b8d455a2108004500001c000120004001c589c0a80a05c0a80a010800f7fc00010002";
// IPv4 proto TCP, fragment offset 185.
const IP_LATER_FRAG: &str = "e01995ad56d0506b8d455a21080045000028000100b94006e4bfc0a80a05c0a80a017a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
// 802.3 / LLC 0x42 / STP.
const STP_8023: &str = "0180c2000000506b8d455a2100264242030000000000000000000000000000000000000000000000000000000100140002000f00";
// 802.3 / LLC-SNAP OUI 0 type 0x0800 / IPv4 / UDP 1 > 2.
const SNAP_IP: &str = "e01995ad56d0506b8d455a210000aaaa0300000008004500001c0001000040115cb30909090908080404000100020008e1bd";
const SCTP4: &str = "e01995ad56d0506b8d455a2108004500003400010000408466430a0000010a0000021388960c00000000a86a1fbb0000001400000000000000000000000061626364";
// IPv4/UDP with no payload, padded to the Ethernet minimum.
const UDP_PADDED: &str = "e01995ad56d0506b8d455a2108004500001c00010000401166ce0a0000010a000002000700090008ebcb000000000000000000000000000000000000";

const VM: u128 = 0x506b_8d45_5a21;
const RT: u128 = 0xe019_95ad_56d0;

fn ex(h: &str) -> (FlowKey, Layout) {
    let mut k = FlowKey::ONES; // every packet word must be overwritten
    let l = extract(&from_hex(h), &mut k);
    for w in &k.w[..PACKET_WORD] {
        assert_eq!(*w, u64::MAX, "metadata words must not be touched");
    }
    (k, l)
}

fn packet_only(k: &FlowKey) -> FlowKey {
    let mut p = FlowKey::ZERO;
    p.w[PACKET_WORD..].copy_from_slice(&k.w[PACKET_WORD..]);
    p
}

/// A key with only the listed fields (packet words), for whole-key comparisons.
fn key(fields: &[(crate::key::FieldLoc, u128)]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    for (l, v) in fields {
        k.set(*l, *v);
    }
    k
}

#[test]
fn vlan_udp() {
    let (k, l) = ex(VLAN_UDP);
    let want = key(&[
        (loc::DL_DST, 0x0000_5e00_0101),
        (loc::DL_SRC, RT),
        (loc::VLAN_TCI, 0x1000 | 2207),
        (loc::DL_TYPE, 0x0800),
        (loc::NW_SRC, 0xac16_071b),
        (loc::NW_DST, 0x0808_0808),
        (loc::NW_PROTO, 17),
        (loc::NW_TOS, 0x10),
        (loc::NW_TTL, 63),
        (loc::TP_SRC, 33000),
        (loc::TP_DST, 53),
    ]);
    assert_eq!(packet_only(&k), want);
    assert_eq!(
        l,
        Layout {
            vlans: 1,
            l3_ofs: 18,
            l4_ofs: 38,
            l4_len: 26
        }
    );
}

#[test]
fn qinq_tcp_with_ip_options() {
    let (k, l) = ex(QINQ_TCP);
    let want = key(&[
        (loc::DL_DST, RT),
        (loc::DL_SRC, VM),
        (loc::VLAN_TCI, 0x6000 | 0x1000 | 100),
        (loc::INNER_VLAN_TCI, 0xa000 | 0x1000 | 200),
        (loc::DL_TYPE, 0x0800),
        (loc::NW_SRC, 0xc0a8_0a05),
        (loc::NW_DST, 0x0a01_0203),
        (loc::NW_PROTO, 6),
        (loc::NW_TTL, 64),
        (loc::TP_SRC, 40000),
        (loc::TP_DST, 443),
        (loc::TCP_FLAGS, 0x012),
    ]);
    assert_eq!(packet_only(&k), want);
    assert_eq!(
        l,
        Layout {
            vlans: 2,
            l3_ofs: 22,
            l4_ofs: 46,
            l4_len: 20
        }
    );
}

#[test]
fn third_tag_is_dl_type() {
    let (k, l) = ex(TRIPLE_TAG);
    assert_eq!(k.vlan_tci(), 0x1001);
    assert_eq!(k.get(loc::INNER_VLAN_TCI), 0x1002);
    assert_eq!(k.dl_type(), 0x8100);
    assert_eq!(
        k.w[crate::key::W_NW_ADDR..],
        [0; KEY_WORDS - crate::key::W_NW_ADDR]
    );
    assert_eq!(
        l,
        Layout {
            vlans: 2,
            ..Layout::default()
        }
    );
}

#[test]
fn ipv6_extension_headers_and_first_fragment() {
    let (k, l) = ex(V6_EXT_FRAG);
    let want = key(&[
        (loc::DL_DST, RT),
        (loc::DL_SRC, VM),
        (loc::DL_TYPE, 0x86dd),
        (loc::IPV6_SRC, 0x2001_0db8 << 96 | 1),
        (loc::IPV6_DST, 0x2001_0db8 << 96 | 2),
        (loc::IPV6_LABEL, 0xabcde),
        (loc::NW_TOS, 0xb8),
        (loc::NW_TTL, 17),
        (loc::NW_PROTO, 17),
        (loc::NW_FRAG, FRAG_ANY as u128),
        (loc::TP_SRC, 546),
        (loc::TP_DST, 547),
    ]);
    assert_eq!(packet_only(&k), want);
    assert_eq!(
        l,
        Layout {
            vlans: 0,
            l3_ofs: 14,
            l4_ofs: 14 + 40 + 24,
            l4_len: 16
        }
    );
}

#[test]
fn ipv6_later_fragment_has_fragment_protocol() {
    let (k, l) = ex(V6_LATER_FRAG);
    assert_eq!(k.nw_proto(), 44);
    assert_eq!(k.nw_frag(), FRAG_ANY | FRAG_LATER);
    assert_eq!(k.w[W_TP], 0);
    assert_eq!((l.l3_ofs, l.l4_ofs), (14, 0));
}

#[test]
fn arp_request() {
    let (k, l) = ex(ARP_REQ);
    let want = key(&[
        (loc::DL_DST, 0xffff_ffff_ffff),
        (loc::DL_SRC, VM),
        (loc::DL_TYPE, 0x0806),
        (loc::ARP_OP, 1),
        (loc::NW_SRC, 0xc0a8_0a05),
        (loc::NW_DST, 0xc0a8_0a01),
        (loc::ARP_SHA, VM),
    ]);
    assert_eq!(packet_only(&k), want);
    assert_eq!(
        l,
        Layout {
            vlans: 0,
            l3_ofs: 14,
            l4_ofs: 0,
            l4_len: 0
        }
    );
    // Not Ethernet/IPv4 ARP (hardware length 8): no ARP fields.
    let mut f = from_hex(ARP_REQ);
    f[18] = 8;
    let mut k = FlowKey::ZERO;
    assert_eq!(extract(&f, &mut k).l3_ofs, 0);
    assert_eq!((k.get(loc::ARP_OP), k.get(loc::NW_SRC)), (0, 0));
    // A 16-bit opcode is invisible to flows.
    f[18] = 6;
    f[20] = 1;
    extract(&f, &mut k);
    assert_eq!((k.get(loc::ARP_OP), k.get(loc::NW_SRC)), (0, 0xc0a8_0a05));
}

#[test]
fn nd_solicit_and_advert() {
    let (k, l) = ex(ND_NS);
    assert_eq!(
        (k.nw_proto(), k.get(loc::ICMP_TYPE), k.get(loc::ICMP_CODE)),
        (58, 135, 0)
    );
    assert_eq!(k.get(loc::ND_TARGET), 0xfe80 << 112 | 2);
    assert_eq!((k.get(loc::ARP_SHA), k.get(loc::ARP_THA)), (VM, 0));
    assert_eq!(k.get(loc::NW_TTL), 255);
    assert_eq!((l.l4_ofs, l.l4_len), (54, 32));
    let (k, _) = ex(ND_NA);
    assert_eq!(k.get(loc::ICMP_TYPE), 136);
    assert_eq!(k.get(loc::ND_TARGET), 0xfe80 << 112 | 2);
    assert_eq!((k.get(loc::ARP_SHA), k.get(loc::ARP_THA)), (0, RT));
}

#[test]
fn ipv4_fragments() {
    let (k, l) = ex(ICMP_FRAG0);
    assert_eq!(k.nw_frag(), FRAG_ANY);
    assert_eq!(
        (k.nw_proto(), k.get(loc::ICMP_TYPE), k.get(loc::ICMP_CODE)),
        (1, 8, 0)
    );
    assert_eq!(k.get(loc::TP_SRC), 8, "ICMP type lives in tp_src");
    assert_eq!(l.l4_ofs, 34);
    let (k, l) = ex(IP_LATER_FRAG);
    assert_eq!(k.nw_frag(), FRAG_ANY | FRAG_LATER);
    assert_eq!((k.nw_proto(), k.w[W_TP]), (6, 0));
    assert_eq!((l.l3_ofs, l.l4_ofs), (14, 0));
}

#[test]
fn ieee_802_3_and_snap() {
    let (k, l) = ex(STP_8023);
    assert_eq!(k.dl_type(), 0x05ff);
    assert_eq!(l.l3_ofs, 0);
    let (k, l) = ex(SNAP_IP);
    assert_eq!(k.dl_type(), 0x0800);
    assert_eq!(
        (k.get(loc::NW_SRC), k.get(loc::TP_SRC), k.get(loc::TP_DST)),
        (0x0909_0909, 1, 2)
    );
    assert_eq!(l.l3_ofs, 22);
}

#[test]
fn sctp_ports_and_padding_excluded() {
    let (k, _) = ex(SCTP4);
    assert_eq!(
        (k.nw_proto(), k.get(loc::TP_SRC), k.get(loc::TP_DST)),
        (132, 5000, 38412)
    );
    let (k, l) = ex(UDP_PADDED);
    assert_eq!((k.get(loc::TP_SRC), k.get(loc::TP_DST)), (7, 9));
    assert_eq!((l.l4_ofs, l.l4_len), (34, 8));
}

#[test]
fn igmp_type_and_code_in_transport_ports() {
    use crate::compose::PacketBuilder;
    use std::net::Ipv4Addr;
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(224, 0, 0, 1));
    let f = PacketBuilder::ipv4([2; 6], [4; 6], a, b, 2)
        .payload_byte(0x11)
        .payload_len(8)
        .build();
    let mut k = FlowKey::ZERO;
    extract(&f, &mut k);
    assert_eq!((k.get(loc::TP_SRC), k.get(loc::TP_DST)), (0x11, 0x11));
    let f = PacketBuilder::ipv4([2; 6], [4; 6], a, b, 2)
        .payload_byte(0x11)
        .payload_len(7)
        .build();
    let l = extract(&f, &mut k);
    assert_eq!(
        (k.nw_proto(), k.w[W_TP], l.l4_ofs),
        (2, 0, 0),
        "IGMP needs 8 bytes"
    );
}

#[test]
fn malformed_ipv4_lengths_leave_l3_empty() {
    let f = from_hex(VLAN_UDP);
    let mut k = FlowKey::ZERO;
    for (at, v) in [(18, 0x44u8), (18, 0x4f), (21, 19), (21, 0xff)] {
        let mut g = f.clone();
        g[at] = v;
        let l = extract(&g, &mut k);
        assert_eq!(k.dl_type(), 0x0800);
        assert_eq!(
            (k.w[W_NW_ADDR], k.w[W_NW], k.w[W_TP]),
            (0, 0, 0),
            "byte {at} = {v:#x}"
        );
        assert_eq!(l.l3_ofs, 0);
    }
    // A TCP data offset below 5 or past the segment: IP fields stay, no ports.
    let mut g = from_hex(QINQ_TCP);
    g[58] = 0x40;
    let l = extract(&g, &mut k);
    assert_eq!((k.nw_proto(), k.w[W_TP], l.l4_ofs), (6, 0, 0));
    g[58] = 0xf0;
    extract(&g, &mut k);
    assert_eq!(k.w[W_TP], 0);
}

#[test]
fn truncated_ipv6_extension_chain_keeps_only_addresses() {
    let mut f = from_hex(V6_EXT_FRAG);
    f[14 + 40 + 1] = 9; // hop-by-hop claims 80 bytes
    let mut k = FlowKey::ZERO;
    let l = extract(&f, &mut k);
    assert_eq!(k.get(loc::IPV6_SRC), 0x2001_0db8 << 96 | 1);
    assert_eq!(
        k.get(loc::IPV6_LABEL),
        0,
        "label only with the rest of the IPv6 fields"
    );
    assert_eq!((k.nw_proto(), k.get(loc::NW_TTL), k.w[W_TP]), (0, 0, 0));
    assert_eq!((l.l3_ofs, l.l4_ofs), (14, 0));
}

#[test]
fn every_truncation_of_a_tcp_frame() {
    let f = from_hex(QINQ_TCP);
    let full = ex(QINQ_TCP).0;
    for n in 0..=f.len() {
        let mut k = FlowKey::ONES;
        let l = extract(&f[..n], &mut k);
        if n < 14 {
            assert!(k.w[PACKET_WORD..].iter().all(|w| *w == 0), "len {n}");
            assert_eq!(l, Layout::default());
            continue;
        }
        assert_eq!(k.get(loc::DL_SRC), VM, "len {n}");
        assert_eq!(k.get(loc::DL_DST), RT, "len {n}");
        // Tags count only with the type field after them.
        let tags = if n >= 22 {
            2
        } else if n >= 18 {
            1
        } else {
            0
        };
        assert_eq!(l.vlans, tags, "len {n}");
        if n < f.len() {
            // The IP total length runs past the frame: no L3 fields at all.
            assert_eq!(
                (k.w[W_NW_ADDR], k.w[W_NW], k.w[W_TP], l.l3_ofs),
                (0, 0, 0, 0),
                "len {n}"
            );
        } else {
            assert_eq!(k, full);
        }
    }
}

#[test]
fn every_truncation_of_nd_never_panics_and_keeps_l2() {
    for h in [ND_NS, ND_NA, V6_EXT_FRAG, ARP_REQ, SCTP4, SNAP_IP] {
        let f = from_hex(h);
        for n in 0..f.len() {
            let mut k = FlowKey::ZERO;
            extract(&f[..n], &mut k);
            if n >= 14 {
                assert_eq!(
                    k.get(loc::DL_SRC),
                    u64::from_be_bytes([0, 0, f[6], f[7], f[8], f[9], f[10], f[11]]) as u128
                );
            }
        }
    }
}

#[test]
fn duplicate_nd_option_clears_nd_fields() {
    let mut f = from_hex(ND_NS);
    f.extend_from_slice(&[1, 1, 1, 2, 3, 4, 5, 6]);
    f[14 + 5] += 8; // payload length
    let mut k = FlowKey::ZERO;
    extract(&f, &mut k);
    assert_eq!(k.get(loc::ICMP_TYPE), 135);
    assert_eq!((k.get(loc::ND_TARGET), k.get(loc::ARP_SHA)), (0, 0));
}

/// Differential test against Open vSwitch's own flow extraction (`ovs-ofctl parse-pcap`), when
/// it is installed: fixtures, random frames over every protocol, their truncations and random
/// byte corruptions must all extract to the fields Open vSwitch prints.
#[test]
fn agrees_with_open_vswitch() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRng, TestRunner};
    use std::net::{Ipv4Addr, Ipv6Addr};
    if std::process::Command::new("ovs-ofctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("ovs-ofctl not installed: skipped");
        return;
    }
    let mut frames: Vec<Vec<u8>> = [
        VLAN_UDP,
        QINQ_TCP,
        TRIPLE_TAG,
        V6_EXT_FRAG,
        V6_LATER_FRAG,
        ARP_REQ,
        ND_NS,
        ND_NA,
        ICMP_FRAG0,
        IP_LATER_FRAG,
        STP_8023,
        SNAP_IP,
        SCTP4,
        UDP_PADDED,
    ]
    .iter()
    .map(|h| from_hex(h))
    .collect();
    // Protocol numbers read regardless of the IP version, and IGMP.
    use crate::compose::PacketBuilder as B;
    let (m1, m2, a4, b4) = (
        [2; 6],
        [4; 6],
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
    );
    let (a6, b6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    frames.extend([
        B::ipv6(m1, m2, a6, b6, 1)
            .payload_byte(3)
            .payload_len(8)
            .build(),
        B::ipv4(m1, m2, a4, b4, 58)
            .payload_byte(135)
            .payload_len(24)
            .build(),
        B::ipv4(m1, m2, a4, b4, 2)
            .payload_byte(0x11)
            .payload_len(8)
            .build(),
        B::ipv4(m1, m2, a4, b4, 2)
            .payload_byte(0x11)
            .payload_len(7)
            .build(),
        B::ipv6(m1, m2, a6, b6, 2)
            .payload_byte(0x16)
            .payload_len(8)
            .build(),
    ]);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strat = crate::compose::tests::arb_key();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..1000 {
        let k = strat.new_tree(&mut runner).unwrap().current();
        let f = crate::compose::compose(&k, (rnd() % 24) as usize);
        let cut = (rnd() as usize) % (f.len() + 1);
        frames.push(f[..cut].to_vec());
        let mut g = f.clone();
        for _ in 0..1 + rnd() % 3 {
            let at = (rnd() as usize) % g.len();
            g[at] = rnd() as u8;
        }
        frames.push(g);
        frames.push(f);
    }
    // ovs-ofctl skips frames shorter than an Ethernet header; so do we (nothing to compare).
    frames.retain(|f| f.len() >= 14);
    let mut pcap = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    for f in &frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            pcap.extend_from_slice(&v.to_le_bytes());
        }
        pcap.extend_from_slice(f);
    }
    let path = std::env::temp_dir().join(format!("xvs-wire-extract-{}.pcap", std::process::id()));
    std::fs::write(&path, &pcap).unwrap();
    let out = std::process::Command::new("ovs-ofctl")
        .arg("parse-pcap")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        frames.len(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mac = |s: &str| {
        s.split(':').fold(0u128, |a, b| {
            a << 8 | u8::from_str_radix(b, 16).unwrap() as u128
        })
    };
    let num = |s: &str| match s.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).unwrap(),
        None => s.parse::<u128>().unwrap(),
    };
    let mut bad = Vec::new();
    for (f, line) in frames.iter().zip(&lines) {
        let mut o = FlowKey::ZERO;
        let (mut tos, mut vid, mut pcp, mut vid1, mut pcp1) = (0, None, 0, None, 0);
        for item in line.split(',') {
            let (name, val) = item.split_once('=').unwrap_or((item, ""));
            let proto = |o: &mut FlowKey, t: u16, p: u8| {
                o.set(loc::DL_TYPE, t as u128);
                o.set(loc::NW_PROTO, p as u128);
            };
            match name {
                "ip" => o.set(loc::DL_TYPE, 0x800),
                "ipv6" => o.set(loc::DL_TYPE, 0x86dd),
                "arp" => o.set(loc::DL_TYPE, 0x806),
                "rarp" => o.set(loc::DL_TYPE, 0x8035),
                "tcp" => proto(&mut o, 0x800, 6),
                "udp" => proto(&mut o, 0x800, 17),
                "sctp" => proto(&mut o, 0x800, 132),
                "icmp" => proto(&mut o, 0x800, 1),
                "tcp6" => proto(&mut o, 0x86dd, 6),
                "udp6" => proto(&mut o, 0x86dd, 17),
                "sctp6" => proto(&mut o, 0x86dd, 132),
                "icmp6" => proto(&mut o, 0x86dd, 58),
                "dl_type" => o.set(loc::DL_TYPE, num(val)),
                "dl_src" => o.set(loc::DL_SRC, mac(val)),
                "dl_dst" => o.set(loc::DL_DST, mac(val)),
                "vlan_tci" | "vlan_tci1" => {}
                "dl_vlan" => vid = Some(num(val)),
                "dl_vlan_pcp" => pcp = num(val),
                "dl_vlan1" => vid1 = Some(num(val)),
                "dl_vlan_pcp1" => pcp1 = num(val),
                "nw_src" | "arp_spa" => o.set(
                    loc::NW_SRC,
                    u32::from(val.parse::<Ipv4Addr>().unwrap()) as u128,
                ),
                "nw_dst" | "arp_tpa" => o.set(
                    loc::NW_DST,
                    u32::from(val.parse::<Ipv4Addr>().unwrap()) as u128,
                ),
                "ipv6_src" => o.set(loc::IPV6_SRC, u128::from(val.parse::<Ipv6Addr>().unwrap())),
                "ipv6_dst" => o.set(loc::IPV6_DST, u128::from(val.parse::<Ipv6Addr>().unwrap())),
                "nd_target" => o.set(loc::ND_TARGET, u128::from(val.parse::<Ipv6Addr>().unwrap())),
                "ipv6_label" => o.set(loc::IPV6_LABEL, num(val)),
                "nw_proto" => o.set(loc::NW_PROTO, num(val)),
                "nw_tos" | "nw_ecn" => tos |= num(val),
                "nw_ttl" => o.set(loc::NW_TTL, num(val)),
                "nw_frag" => o.set(
                    loc::NW_FRAG,
                    match val {
                        "no" => 0,
                        "first" => FRAG_ANY as u128,
                        "later" => (FRAG_ANY | FRAG_LATER) as u128,
                        v => panic!("nw_frag={v}"),
                    },
                ),
                "tp_src" | "icmp_type" => o.set(loc::TP_SRC, num(val)),
                "tp_dst" | "icmp_code" => o.set(loc::TP_DST, num(val)),
                "tcp_flags" => {
                    let names = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"];
                    let bits = val
                        .split('|')
                        .filter(|n| *n != "0")
                        .map(
                            |n| match n.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                                // Bits without a name are printed in hex.
                                Some(h) => u128::from_str_radix(h, 16).unwrap(),
                                None => {
                                    1u128
                                        << names
                                            .iter()
                                            .position(|x| x == &n)
                                            .unwrap_or_else(|| panic!("flag {n}"))
                                }
                            },
                        )
                        .sum();
                    o.set(loc::TCP_FLAGS, bits);
                }
                "arp_op" => o.set(loc::ARP_OP, num(val)),
                "arp_sha" | "nd_sll" => o.set(loc::ARP_SHA, mac(val)),
                "arp_tha" | "nd_tll" => o.set(loc::ARP_THA, mac(val)),
                "in_port" => {}
                other => panic!("unknown field {other} in {line}"),
            }
        }
        if o.get(loc::DL_TYPE) == 0x800 || o.get(loc::DL_TYPE) == 0x86dd {
            o.set(loc::NW_TOS, tos);
        }
        if let Some(v) = vid {
            o.set(loc::VLAN_TCI, 0x1000 | pcp << 13 | v);
        }
        if let Some(v) = vid1 {
            o.set(loc::INNER_VLAN_TCI, 0x1000 | pcp1 << 13 | v);
        }
        let mut k = FlowKey::ZERO;
        extract(f, &mut k);
        if k != o {
            bad.push(format!(
                "frame {}\n ovs {line}\n ovs {o:?}\n xvs {k:?}",
                crate::compose::tests::hex(f)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} frames differ:\n{}",
        bad.len(),
        frames.len(),
        bad[..bad.len().min(5)].join("\n")
    );
}

/// After addresses and ports are rewritten in place, `refresh_addresses` leaves the key as a
/// fresh extraction would, for every IP version and protocol NAT handles; for frames it does
/// not handle it changes nothing and says so.
#[test]
fn refresh_addresses_matches_a_fresh_extraction() {
    use crate::compose::PacketBuilder;
    let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let (a6, b6): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    let (m1, m2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let frames = [
        PacketBuilder::udp4(m1, m2, a, b, 1000, 53).vlan(7).build(),
        PacketBuilder::tcp4(m1, m2, a, b, 40000, 80)
            .tcp_flags(0x12)
            .build(),
        PacketBuilder::sctp4(m1, m2, a, b, 5000, 38412).build(),
        PacketBuilder::icmp4_echo(m1, m2, a, b, 7, 1).build(),
        PacketBuilder::udp6(m1, m2, a6, b6, 1000, 53).build(),
        PacketBuilder::tcp6(m1, m2, a6, b6, 40000, 443).build(),
    ];
    for f in frames {
        let mut f = f;
        let mut k = FlowKey::ZERO;
        let lay = extract(&f, &mut k);
        assert_ne!(lay.l3_ofs, 0);
        // Rewrite every address and port byte (checksums are not key fields).
        let l3 = lay.l3_ofs as usize;
        let addrs = if k.dl_type() == ETH_TYPE_IP {
            l3 + 12..l3 + 20
        } else {
            l3 + 8..l3 + 40
        };
        for i in addrs {
            f[i] = f[i].wrapping_mul(7).wrapping_add(0x5b);
        }
        if matches!(k.nw_proto(), IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
            let l4 = lay.l4_ofs as usize;
            for b in &mut f[l4..l4 + 4] {
                *b ^= 0xa5;
            }
        }
        let mut fresh = k;
        let fresh_lay = extract(&f, &mut fresh);
        assert_eq!(fresh_lay, lay);
        assert!(refresh_addresses(&f, &lay, &mut k));
        assert_eq!(k, fresh, "{f:02x?}");
    }
    // ARP and a frame without L3: nothing to refresh.
    for f in [from_hex(ARP_REQ), from_hex(SNAP_IP)[..14].to_vec()] {
        let mut k = FlowKey::ZERO;
        let lay = extract(&f, &mut k);
        let before = k;
        assert!(!refresh_addresses(&f, &lay, &mut k));
        assert_eq!(k, before);
    }
}
