//! Field names of the flow language: the plain names (`reg13`, `nw_src`, `tunnel_id`), the
//! `NXM_OF_*` / `NXM_NX_*` / `OXM_OF_*` names used in `load`, `move` and `output:FIELD`, and the
//! names the formatter prints back.
//!
//! A name resolves to a [`FieldName`]: the field plus the width that name gives it. Most names
//! cover the whole field; `in_port` and `NXM_OF_IN_PORT` are the 16-bit OpenFlow 1.0 port while
//! `OXM_OF_IN_PORT` is 32 bits wide, exactly as Open vSwitch sizes them, so `NXM_OF_IN_PORT[]`
//! moves 16 bits in both.
//!
//! This module owns nothing but tables; it must not parse values.

use crate::field::{Field, IPPROTO_SCTP, IPPROTO_UDP};

/// A field as named in text: which field and how many bits the bare name (`NAME[]`) covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldName {
    pub field: Field,
    pub width: u16,
}

fn whole(field: Field) -> FieldName {
    FieldName {
        field,
        width: field.width() as u16,
    }
}

/// Parses a decimal index suffix (`reg13` → 13) below `limit`.
fn index(s: &str, limit: u8) -> Option<u8> {
    if s.is_empty()
        || s.len() > 2
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    let n: u8 = s.parse().ok()?;
    (n < limit).then_some(n)
}

/// Resolves any accepted spelling of a field name (case-sensitive for plain names, as Open
/// vSwitch; the `NXM_`/`OXM_` names are matched case-insensitively).
pub fn lookup(name: &str) -> Option<FieldName> {
    use Field::*;
    if let Some(f) = lookup_plain(name) {
        return Some(f);
    }
    let b = name.as_bytes();
    if b.len() < 8
        || !(b[..4].eq_ignore_ascii_case(b"NXM_") || b[..4].eq_ignore_ascii_case(b"OXM_"))
    {
        return None;
    }
    let mut buf = [0u8; 32];
    let u = ascii_case(name, &mut buf, true)?;
    if let Some(i) = u.strip_prefix("NXM_NX_REG").and_then(|s| index(s, 16)) {
        return Some(whole(Reg(i)));
    }
    if let Some(i) = u.strip_prefix("OXM_OF_PKT_REG").and_then(|s| index(s, 8)) {
        return Some(whole(Xreg(i)));
    }
    if let Some(i) = u.strip_prefix("NXM_NX_XXREG").and_then(|s| index(s, 4)) {
        return Some(whole(Xxreg(i)));
    }
    if let Some(i) = u
        .strip_prefix("NXM_NX_TUN_METADATA")
        .and_then(|s| index(s, 64))
    {
        return Some(whole(TunMetadata(i)));
    }
    Some(match u {
        "NXM_OF_IN_PORT" => FieldName {
            field: InPort,
            width: 16,
        },
        "OXM_OF_IN_PORT" => whole(InPort),
        "NXM_OF_ETH_DST" | "OXM_OF_ETH_DST" => whole(DlDst),
        "NXM_OF_ETH_SRC" | "OXM_OF_ETH_SRC" => whole(DlSrc),
        "NXM_OF_ETH_TYPE" | "OXM_OF_ETH_TYPE" => whole(DlType),
        "NXM_OF_VLAN_TCI" => whole(VlanTci),
        "OXM_OF_VLAN_PCP" => whole(DlVlanPcp),
        "NXM_OF_IP_TOS" => whole(NwTos),
        "OXM_OF_IP_DSCP" => whole(IpDscp),
        "NXM_NX_IP_ECN" | "OXM_OF_IP_ECN" => whole(NwEcn),
        "NXM_NX_IP_TTL" => whole(NwTtl),
        "NXM_NX_IP_FRAG" => whole(IpFrag),
        "NXM_OF_IP_PROTO" | "OXM_OF_IP_PROTO" => whole(NwProto),
        "NXM_OF_IP_SRC" | "OXM_OF_IPV4_SRC" => whole(NwSrc),
        "NXM_OF_IP_DST" | "OXM_OF_IPV4_DST" => whole(NwDst),
        "NXM_OF_TCP_SRC" | "OXM_OF_TCP_SRC" | "NXM_OF_UDP_SRC" | "OXM_OF_UDP_SRC"
        | "OXM_OF_SCTP_SRC" => whole(TpSrc),
        "NXM_OF_TCP_DST" | "OXM_OF_TCP_DST" | "NXM_OF_UDP_DST" | "OXM_OF_UDP_DST"
        | "OXM_OF_SCTP_DST" => whole(TpDst),
        "NXM_NX_TCP_FLAGS" | "ONF_OXM_OF_TCP_FLAGS" => whole(TcpFlags),
        "NXM_OF_ICMP_TYPE" | "OXM_OF_ICMPV4_TYPE" => whole(IcmpType),
        "NXM_OF_ICMP_CODE" | "OXM_OF_ICMPV4_CODE" => whole(IcmpCode),
        "NXM_NX_ICMPV6_TYPE" | "OXM_OF_ICMPV6_TYPE" => whole(Icmpv6Type),
        "NXM_NX_ICMPV6_CODE" | "OXM_OF_ICMPV6_CODE" => whole(Icmpv6Code),
        "NXM_OF_ARP_OP" | "OXM_OF_ARP_OP" => whole(ArpOp),
        "NXM_OF_ARP_SPA" | "OXM_OF_ARP_SPA" => whole(ArpSpa),
        "NXM_OF_ARP_TPA" | "OXM_OF_ARP_TPA" => whole(ArpTpa),
        "NXM_NX_ARP_SHA" | "OXM_OF_ARP_SHA" => whole(ArpSha),
        "NXM_NX_ARP_THA" | "OXM_OF_ARP_THA" => whole(ArpTha),
        "NXM_NX_IPV6_SRC" | "OXM_OF_IPV6_SRC" => whole(Ipv6Src),
        "NXM_NX_IPV6_DST" | "OXM_OF_IPV6_DST" => whole(Ipv6Dst),
        "NXM_NX_IPV6_LABEL" | "OXM_OF_IPV6_FLABEL" => whole(Ipv6Label),
        "NXM_NX_ND_TARGET" | "OXM_OF_IPV6_ND_TARGET" => whole(NdTarget),
        "NXM_NX_ND_SLL" | "OXM_OF_IPV6_ND_SLL" => whole(NdSll),
        "NXM_NX_ND_TLL" | "OXM_OF_IPV6_ND_TLL" => whole(NdTll),
        "OXM_OF_METADATA" => whole(Metadata),
        "NXM_NX_TUN_ID" | "OXM_OF_TUNNEL_ID" => whole(TunId),
        "NXM_NX_TUN_IPV4_SRC" => whole(TunSrc),
        "NXM_NX_TUN_IPV4_DST" => whole(TunDst),
        "NXM_NX_TUN_FLAGS" => whole(TunFlags),
        "NXM_NX_CT_STATE" => whole(CtState),
        "NXM_NX_CT_ZONE" => whole(CtZone),
        "NXM_NX_CT_MARK" => whole(CtMark),
        "NXM_NX_CT_LABEL" => whole(CtLabel),
        "NXM_NX_CT_NW_SRC" => whole(CtNwSrc),
        "NXM_NX_CT_NW_DST" => whole(CtNwDst),
        "NXM_NX_CT_NW_PROTO" => whole(CtNwProto),
        "NXM_NX_CT_TP_SRC" => whole(CtTpSrc),
        "NXM_NX_CT_TP_DST" => whole(CtTpDst),
        "NXM_NX_CONJ_ID" => whole(ConjId),
        "NXM_NX_PKT_MARK" => whole(PktMark),
        "NXM_NX_RECIRC_ID" => whole(RecircId),
        "NXM_NX_DP_HASH" => whole(DpHash),
        _ => return None,
    })
}

/// `s` in upper (or lower) case, in a caller's buffer: keyword comparisons without allocating.
/// `None` when `s` is longer than the buffer (no keyword is).
pub(crate) fn ascii_case<'b>(s: &str, buf: &'b mut [u8; 32], upper: bool) -> Option<&'b str> {
    let b = s.as_bytes();
    let out = buf.get_mut(..b.len())?;
    for (o, c) in out.iter_mut().zip(b) {
        *o = if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        };
    }
    std::str::from_utf8(out).ok()
}

fn lookup_plain(name: &str) -> Option<FieldName> {
    use Field::*;
    if let Some(rest) = name.strip_prefix("reg") {
        return index(rest, 16).map(|i| whole(Reg(i)));
    }
    if let Some(rest) = name.strip_prefix("xreg") {
        return index(rest, 8).map(|i| whole(Xreg(i)));
    }
    if let Some(rest) = name.strip_prefix("xxreg") {
        return index(rest, 4).map(|i| whole(Xxreg(i)));
    }
    if let Some(rest) = name.strip_prefix("tun_metadata") {
        return index(rest, 64).map(|i| whole(TunMetadata(i)));
    }
    Some(match name {
        "in_port" => FieldName {
            field: InPort,
            width: 16,
        },
        "in_port_oxm" => whole(InPort),
        "recirc_id" => whole(RecircId),
        "dp_hash" => whole(DpHash),
        "pkt_mark" => whole(PktMark),
        "metadata" => whole(Metadata),
        "tun_id" | "tunnel_id" => whole(TunId),
        "tun_src" => whole(TunSrc),
        "tun_dst" => whole(TunDst),
        "tun_flags" => whole(TunFlags),
        "ct_state" => whole(CtState),
        "ct_zone" => whole(CtZone),
        "ct_mark" => whole(CtMark),
        "ct_label" => whole(CtLabel),
        "ct_nw_src" => whole(CtNwSrc),
        "ct_nw_dst" => whole(CtNwDst),
        "ct_nw_proto" => whole(CtNwProto),
        "ct_tp_src" => whole(CtTpSrc),
        "ct_tp_dst" => whole(CtTpDst),
        "conj_id" => whole(ConjId),
        "dl_src" | "eth_src" => whole(DlSrc),
        "dl_dst" | "eth_dst" => whole(DlDst),
        "dl_type" | "eth_type" => whole(DlType),
        "vlan_tci" => whole(VlanTci),
        "dl_vlan" => whole(DlVlan),
        "dl_vlan_pcp" | "vlan_pcp" => whole(DlVlanPcp),
        "nw_src" | "ip_src" => whole(NwSrc),
        "nw_dst" | "ip_dst" => whole(NwDst),
        "nw_proto" | "ip_proto" => whole(NwProto),
        "nw_tos" => whole(NwTos),
        "ip_dscp" => whole(IpDscp),
        "nw_ecn" | "ip_ecn" => whole(NwEcn),
        "nw_ttl" => whole(NwTtl),
        "ip_frag" | "nw_frag" => whole(IpFrag),
        "tp_src" | "tcp_src" | "udp_src" | "sctp_src" => whole(TpSrc),
        "tp_dst" | "tcp_dst" | "udp_dst" | "sctp_dst" => whole(TpDst),
        "tcp_flags" => whole(TcpFlags),
        "icmp_type" | "icmpv4_type" => whole(IcmpType),
        "icmp_code" | "icmpv4_code" => whole(IcmpCode),
        "icmpv6_type" => whole(Icmpv6Type),
        "icmpv6_code" => whole(Icmpv6Code),
        "arp_op" => whole(ArpOp),
        "arp_spa" => whole(ArpSpa),
        "arp_tpa" => whole(ArpTpa),
        "arp_sha" => whole(ArpSha),
        "arp_tha" => whole(ArpTha),
        "ipv6_src" => whole(Ipv6Src),
        "ipv6_dst" => whole(Ipv6Dst),
        "ipv6_label" => whole(Ipv6Label),
        "nd_target" => whole(NdTarget),
        "nd_sll" => whole(NdSll),
        "nd_tll" => whole(NdTll),
        _ => return None,
    })
}

/// The name `load`/`move`/`output:FIELD` print for a field, with the width that name covers.
/// `nw_proto` picks the transport spelling (`NXM_OF_UDP_SRC` under a `udp` match).
pub fn nxm_name(
    field: Field,
    ofs: u16,
    n_bits: u16,
    nw_proto: u8,
) -> (std::borrow::Cow<'static, str>, u16) {
    use std::borrow::Cow::{Borrowed, Owned};
    use Field::*;
    let w = field.width() as u16;
    let b = |s: &'static str| (Borrowed(s), w);
    match field {
        InPort if ofs + n_bits <= 16 => (Borrowed("NXM_OF_IN_PORT"), 16),
        InPort => b("OXM_OF_IN_PORT"),
        Reg(i) => (Owned(format!("NXM_NX_REG{i}")), w),
        Xreg(i) => (Owned(format!("OXM_OF_PKT_REG{i}")), w),
        Xxreg(i) => (Owned(format!("NXM_NX_XXREG{i}")), w),
        TunMetadata(i) => (Owned(format!("NXM_NX_TUN_METADATA{i}")), w),
        RecircId => b("NXM_NX_RECIRC_ID"),
        DpHash => b("NXM_NX_DP_HASH"),
        PktMark => b("NXM_NX_PKT_MARK"),
        Metadata => b("OXM_OF_METADATA"),
        TunId => b("NXM_NX_TUN_ID"),
        TunSrc => b("NXM_NX_TUN_IPV4_SRC"),
        TunDst => b("NXM_NX_TUN_IPV4_DST"),
        TunFlags => b("NXM_NX_TUN_FLAGS"),
        CtState => b("NXM_NX_CT_STATE"),
        CtZone => b("NXM_NX_CT_ZONE"),
        CtMark => b("NXM_NX_CT_MARK"),
        CtLabel => b("NXM_NX_CT_LABEL"),
        CtNwSrc => b("NXM_NX_CT_NW_SRC"),
        CtNwDst => b("NXM_NX_CT_NW_DST"),
        CtNwProto => b("NXM_NX_CT_NW_PROTO"),
        CtTpSrc => b("NXM_NX_CT_TP_SRC"),
        CtTpDst => b("NXM_NX_CT_TP_DST"),
        ConjId => b("NXM_NX_CONJ_ID"),
        DlSrc => b("NXM_OF_ETH_SRC"),
        DlDst => b("NXM_OF_ETH_DST"),
        DlType => b("NXM_OF_ETH_TYPE"),
        VlanTci => b("NXM_OF_VLAN_TCI"),
        DlVlan => b("dl_vlan"),
        DlVlanPcp => b("OXM_OF_VLAN_PCP"),
        NwSrc => b("NXM_OF_IP_SRC"),
        NwDst => b("NXM_OF_IP_DST"),
        NwProto => b("NXM_OF_IP_PROTO"),
        NwTos => b("NXM_OF_IP_TOS"),
        IpDscp => b("OXM_OF_IP_DSCP"),
        NwEcn => b("NXM_NX_IP_ECN"),
        NwTtl => b("NXM_NX_IP_TTL"),
        IpFrag => b("NXM_NX_IP_FRAG"),
        TpSrc => b(match nw_proto {
            IPPROTO_UDP => "NXM_OF_UDP_SRC",
            IPPROTO_SCTP => "OXM_OF_SCTP_SRC",
            _ => "NXM_OF_TCP_SRC",
        }),
        TpDst => b(match nw_proto {
            IPPROTO_UDP => "NXM_OF_UDP_DST",
            IPPROTO_SCTP => "OXM_OF_SCTP_DST",
            _ => "NXM_OF_TCP_DST",
        }),
        TcpFlags => b("NXM_NX_TCP_FLAGS"),
        IcmpType => b("NXM_OF_ICMP_TYPE"),
        IcmpCode => b("NXM_OF_ICMP_CODE"),
        Icmpv6Type => b("NXM_NX_ICMPV6_TYPE"),
        Icmpv6Code => b("NXM_NX_ICMPV6_CODE"),
        ArpOp => b("NXM_OF_ARP_OP"),
        ArpSpa => b("NXM_OF_ARP_SPA"),
        ArpTpa => b("NXM_OF_ARP_TPA"),
        ArpSha => b("NXM_NX_ARP_SHA"),
        ArpTha => b("NXM_NX_ARP_THA"),
        Ipv6Src => b("NXM_NX_IPV6_SRC"),
        Ipv6Dst => b("NXM_NX_IPV6_DST"),
        Ipv6Label => b("NXM_NX_IPV6_LABEL"),
        NdTarget => b("NXM_NX_ND_TARGET"),
        NdSll => b("NXM_NX_ND_SLL"),
        NdTll => b("NXM_NX_ND_TLL"),
    }
}

/// Actions Open vSwitch has and xvs deliberately does not implement: rejected with a message
/// that says so, never skipped.
pub const UNSUPPORTED_ACTIONS: &[&str] = &[
    "bundle",
    "bundle_load",
    "multipath",
    "sample",
    "enqueue",
    "fin_timeout",
    "encap",
    "decap",
    "meter",
    "group",
    "push_mpls",
    "pop_mpls",
    "set_mpls_label",
    "set_mpls_tc",
    "set_mpls_ttl",
    "dec_mpls_ttl",
    "stack_push",
    "stack_pop",
    "dec_nsh_ttl",
    "delete_field",
    "debug_recirc",
    "debug_slow",
    "clear_actions",
    "write_actions",
    "set_vlan_vid",
    "set_vlan_pcp",
];

/// `ct_state` flag names in bit order (bit 0 first), as printed.
pub const CT_STATE_FLAGS: [&str; 8] = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
/// `tcp_flags` flag names in bit order.
pub const TCP_FLAGS: [&str; 9] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"];
/// `tun_flags` flag names in bit order.
pub const TUN_FLAGS: [&str; 1] = ["oam"];
