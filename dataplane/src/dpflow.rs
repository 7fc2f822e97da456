//! Megaflows as `ovs-appctl dpctl/dump-flows` prints them: `recirc_id(0),in_port(p0),
//! eth(src=..,dst=..),eth_type(0x0800),ipv4(src=..,proto=6,frag=no),tcp(dst=80)`.
//!
//! Fields whose mask is zero are left out; partly masked fields print as `value/mask`. Owns the
//! text only.

use pipeline::key::{loc, FieldLoc, FlowKey, CS_TRACKED, VLAN_CFI};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;

#[derive(Clone, Copy)]
enum Fmt {
    Dec,
    Hex,
    Mac,
    Ip4,
    Ip6,
}

fn value(v: u128, f: Fmt) -> String {
    match f {
        Fmt::Dec => v.to_string(),
        Fmt::Hex => format!("{v:#x}"),
        Fmt::Mac => {
            let b = (v as u64).to_be_bytes();
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[2], b[3], b[4], b[5], b[6], b[7]
            )
        }
        Fmt::Ip4 => Ipv4Addr::from(v as u32).to_string(),
        Fmt::Ip6 => Ipv6Addr::from(v).to_string(),
    }
}

/// Appends `name=value[/mask]` for a field whose mask is not zero.
fn field(out: &mut Vec<String>, name: &str, l: FieldLoc, f: Fmt, key: &FlowKey, mask: &FlowKey) {
    let m = mask.get(l);
    if m == 0 {
        return;
    }
    let full = if l.width() >= 128 {
        u128::MAX
    } else {
        (1u128 << l.width()) - 1
    };
    let v = key.get(l) & m;
    if m == full {
        out.push(format!("{name}={}", value(v, f)));
    } else {
        out.push(format!("{name}={}/{}", value(v, f), value(m, f)));
    }
}

fn group(s: &mut String, name: &str, parts: Vec<String>) {
    if !parts.is_empty() {
        let _ = write!(s, ",{name}({})", parts.join(","));
    }
}

/// The megaflow `key`/`mask` in dpctl syntax. `port_name` names datapath ports.
pub fn format_megaflow(
    key: &FlowKey,
    mask: &FlowKey,
    port_name: &dyn Fn(u32) -> Option<String>,
) -> String {
    let mut s = match key.recirc_id() {
        0 => "recirc_id(0)".to_string(),
        r => format!("recirc_id({r:#x})"),
    };
    if mask.get(loc::IN_PORT) != 0 {
        let p = key.in_port();
        let _ = write!(
            s,
            ",in_port({})",
            port_name(p).unwrap_or_else(|| p.to_string())
        );
    }
    if mask.ct_state() != 0 {
        let st = key.ct_state() & mask.ct_state();
        let mut v = Vec::new();
        for (bit, n) in [
            (pipeline::key::CS_NEW, "new"),
            (pipeline::key::CS_ESTABLISHED, "est"),
            (pipeline::key::CS_RELATED, "rel"),
            (pipeline::key::CS_REPLY_DIR, "rpl"),
            (pipeline::key::CS_INVALID, "inv"),
            (CS_TRACKED, "trk"),
            (pipeline::key::CS_SRC_NAT, "snat"),
            (pipeline::key::CS_DST_NAT, "dnat"),
        ] {
            if mask.ct_state() & bit != 0 {
                v.push(format!("{}{n}", if st & bit != 0 { "+" } else { "-" }));
            }
        }
        let _ = write!(s, ",ct_state({})", v.join(""));
    }
    let mut meta = Vec::new();
    field(&mut meta, "zone", loc::CT_ZONE, Fmt::Dec, key, mask);
    field(&mut meta, "mark", loc::CT_MARK, Fmt::Hex, key, mask);
    for p in meta {
        let (n, v) = p.split_once('=').unwrap_or((&p, ""));
        let _ = write!(s, ",ct_{n}({v})");
    }
    let mut tun = Vec::new();
    field(&mut tun, "tun_id", loc::TUN_ID, Fmt::Hex, key, mask);
    field(&mut tun, "src", loc::TUN_SRC, Fmt::Ip4, key, mask);
    field(&mut tun, "dst", loc::TUN_DST, Fmt::Ip4, key, mask);
    group(&mut s, "tunnel", tun);
    let mut pm = Vec::new();
    field(&mut pm, "skb_mark", loc::PKT_MARK, Fmt::Hex, key, mask);
    for p in pm {
        let (_, v) = p.split_once('=').unwrap_or((&p, ""));
        let _ = write!(s, ",skb_mark({v})");
    }
    let mut eth = Vec::new();
    field(&mut eth, "src", loc::DL_SRC, Fmt::Mac, key, mask);
    field(&mut eth, "dst", loc::DL_DST, Fmt::Mac, key, mask);
    if eth.is_empty() {
        s.push_str(",eth()");
    } else {
        group(&mut s, "eth", eth);
    }
    let mut close = 0;
    let tci = key.vlan_tci();
    if mask.vlan_tci() != 0 && tci & VLAN_CFI != 0 {
        let mut v = Vec::new();
        if mask.vlan_tci() & 0x0fff != 0 {
            v.push(format!("vid={}", tci & 0x0fff));
        }
        if mask.vlan_tci() & 0xe000 != 0 {
            v.push(format!("pcp={}", tci >> 13));
        }
        let _ = write!(s, ",eth_type(0x8100),vlan({}),encap(", v.join(","));
        close += 1;
    }
    if mask.get(loc::DL_TYPE) != 0 {
        let _ = write!(s, ",eth_type({:#06x})", key.dl_type());
    }
    let dl = key.dl_type();
    let mut l3 = Vec::new();
    match dl {
        ETH_IP => {
            field(&mut l3, "src", loc::NW_SRC, Fmt::Ip4, key, mask);
            field(&mut l3, "dst", loc::NW_DST, Fmt::Ip4, key, mask);
            field(&mut l3, "proto", loc::NW_PROTO, Fmt::Dec, key, mask);
            field(&mut l3, "tos", loc::NW_TOS, Fmt::Hex, key, mask);
            field(&mut l3, "ttl", loc::NW_TTL, Fmt::Dec, key, mask);
            frag(&mut l3, key, mask);
            group(&mut s, "ipv4", l3);
        }
        ETH_IPV6 => {
            field(&mut l3, "src", loc::IPV6_SRC, Fmt::Ip6, key, mask);
            field(&mut l3, "dst", loc::IPV6_DST, Fmt::Ip6, key, mask);
            field(&mut l3, "label", loc::IPV6_LABEL, Fmt::Hex, key, mask);
            field(&mut l3, "proto", loc::NW_PROTO, Fmt::Dec, key, mask);
            field(&mut l3, "tclass", loc::NW_TOS, Fmt::Hex, key, mask);
            field(&mut l3, "hlimit", loc::NW_TTL, Fmt::Dec, key, mask);
            frag(&mut l3, key, mask);
            group(&mut s, "ipv6", l3);
        }
        ETH_ARP => {
            field(&mut l3, "sip", loc::NW_SRC, Fmt::Ip4, key, mask);
            field(&mut l3, "tip", loc::NW_DST, Fmt::Ip4, key, mask);
            field(&mut l3, "op", loc::ARP_OP, Fmt::Dec, key, mask);
            field(&mut l3, "sha", loc::ARP_SHA, Fmt::Mac, key, mask);
            field(&mut l3, "tha", loc::ARP_THA, Fmt::Mac, key, mask);
            group(&mut s, "arp", l3);
        }
        _ => {}
    }
    if dl == ETH_IP || dl == ETH_IPV6 {
        let proto = key.nw_proto();
        let name = match (proto, dl) {
            (6, _) => Some("tcp"),
            (17, _) => Some("udp"),
            (132, _) => Some("sctp"),
            (1, ETH_IP) => Some("icmp"),
            (58, ETH_IPV6) => Some("icmpv6"),
            _ => None,
        };
        if let Some(n) = name {
            let mut l4 = Vec::new();
            if n.starts_with("icmp") {
                field(&mut l4, "type", loc::ICMP_TYPE, Fmt::Dec, key, mask);
                field(&mut l4, "code", loc::ICMP_CODE, Fmt::Dec, key, mask);
            } else {
                field(&mut l4, "src", loc::TP_SRC, Fmt::Dec, key, mask);
                field(&mut l4, "dst", loc::TP_DST, Fmt::Dec, key, mask);
            }
            group(&mut s, n, l4);
            if n == "tcp" && mask.get(loc::TCP_FLAGS) != 0 {
                let _ = write!(s, ",tcp_flags({:#x})", key.get(loc::TCP_FLAGS));
            }
        }
    }
    for _ in 0..close {
        s.push(')');
    }
    // Items inside encap() were written with their usual leading comma.
    s.replace("encap(,", "encap(")
}

fn frag(out: &mut Vec<String>, key: &FlowKey, mask: &FlowKey) {
    if mask.get(loc::NW_FRAG) == 0 {
        return;
    }
    let f = key.nw_frag();
    let v = if f & pipeline::key::FRAG_LATER != 0 {
        "later"
    } else if f & pipeline::key::FRAG_ANY != 0 {
        "first"
    } else {
        "no"
    };
    out.push(format!("frag={v}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_masked_fields_only() {
        let mut k = FlowKey::ZERO;
        k.set(loc::IN_PORT, 2);
        k.set(loc::DL_TYPE, ETH_IP as u128);
        k.set(loc::NW_SRC, 0xc612_0001);
        k.set(loc::NW_DST, 0xc612_0102);
        k.set(loc::NW_PROTO, 1);
        let mut m = FlowKey::ZERO;
        m.set_all(loc::IN_PORT);
        m.set_all(loc::RECIRC_ID);
        m.set_all(loc::DL_TYPE);
        m.set_all(loc::NW_FRAG);
        m.set(loc::NW_DST, 0xffff_ff00);
        let s = format_megaflow(&k, &m, &|p| Some(format!("p{p}")));
        assert_eq!(
            s,
            "recirc_id(0),in_port(p2),eth(),eth_type(0x0800),ipv4(dst=198.18.1.0/255.255.255.0,frag=no)"
        );
        k.set(loc::VLAN_TCI, (VLAN_CFI | 10) as u128);
        m.set_all(loc::VLAN_TCI);
        m.set_all(loc::DL_SRC);
        k.set(loc::DL_SRC, 0x0200_0000_0001);
        let s = format_megaflow(&k, &m, &|_| None);
        assert_eq!(
            s,
            "recirc_id(0),in_port(2),eth(src=02:00:00:00:00:01),eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),ipv4(dst=198.18.1.0/255.255.255.0,frag=no))"
        );
    }
}
