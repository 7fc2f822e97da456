//! The flow printer: [`FlowSpec`] back to text, exactly as `ovs-ofctl dump-flows` prints it for
//! OpenFlow 1.0 with Nicira extensions (the default protocol of `ovs-ofctl`).
//!
//! Open vSwitch normalises as it prints: protocol shorthands come back from `dl_type`/`nw_proto`,
//! `set_field` on most fields prints as `load` or as the OpenFlow 1.0 `mod_*` action, `pop_vlan`
//! prints as `strip_vlan`, masks collapse to CIDR prefixes, `ct_state` prints as `+trk-new`. The
//! order of fields is Open vSwitch's, so sorted dumps compare line for line. This module only
//! writes strings; it never fails and never validates.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::names::{self, CT_STATE_FLAGS, TCP_FLAGS, TUN_FLAGS};
use super::parse::special_port_name;
use super::DEFAULT_PRIORITY;
use super::{
    Action, ControllerSpec, CtAction, CtZone, FlowSpec, Match, NatKind, NatSpec, OutputTarget,
    PortNames,
};
use crate::field::{
    Field, SubField, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, TUN_METADATA_MAPPED,
};
use crate::key::{loc, FieldLoc, FRAG_ANY, FRAG_LATER, VLAN_CFI};

const ETH_TYPE_RARP: u16 = 0x8035;

/// Printing choices.
#[derive(Clone, Copy, Debug)]
pub struct FormatOptions {
    /// Print ports by name when the name is known (`ovs-ofctl --names`, its default on a
    /// terminal). With `false`, ports print as numbers (`--no-names`).
    pub names: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { names: true }
    }
}

/// Counters printed by `dump-flows` without `--no-stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowStats {
    pub duration_secs: f64,
    pub n_packets: u64,
    pub n_bytes: u64,
    pub idle_age: Option<u32>,
    pub hard_age: Option<u32>,
}

/// One flow as `dump-flows --no-stats` prints it (without the leading blank).
pub fn format_flow(f: &FlowSpec, ports: &PortNames, opts: FormatOptions) -> String {
    let mut s = String::with_capacity(128);
    if f.cookie != 0 {
        let _ = write!(s, "cookie={:#x}, ", f.cookie);
    }
    if f.table != 0 {
        let _ = write!(s, "table={}, ", f.table);
    }
    timeouts(&mut s, f);
    tail(&mut s, f, ports, opts);
    s
}

/// One flow as `dump-flows` prints it with statistics.
pub fn format_flow_stats(
    f: &FlowSpec,
    st: &FlowStats,
    ports: &PortNames,
    opts: FormatOptions,
) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "cookie={:#x}, duration={:.3}s, table={}, n_packets={}, n_bytes={}, ",
        f.cookie, st.duration_secs, f.table, st.n_packets, st.n_bytes
    );
    timeouts(&mut s, f);
    if let Some(a) = st.idle_age {
        let _ = write!(s, "idle_age={a}, ");
    }
    if let Some(a) = st.hard_age {
        let _ = write!(s, "hard_age={a}, ");
    }
    tail(&mut s, f, ports, opts);
    s
}

fn timeouts(s: &mut String, f: &FlowSpec) {
    if f.idle_timeout != 0 {
        let _ = write!(s, "idle_timeout={}, ", f.idle_timeout);
    }
    if f.hard_timeout != 0 {
        let _ = write!(s, "hard_timeout={}, ", f.hard_timeout);
    }
}

fn tail(s: &mut String, f: &FlowSpec, ports: &PortNames, opts: FormatOptions) {
    let before = s.len();
    write_match(s, &f.matches, Some(f.priority), ports, opts);
    if s.len() > before {
        s.push(' ');
    }
    s.push_str("actions=");
    write_actions(s, &f.actions, &f.matches, ports, opts);
}

/// A match (optionally with its priority) in `dump-flows` order, without a trailing comma.
pub fn format_match(
    m: &Match,
    priority: Option<u16>,
    ports: &PortNames,
    opts: FormatOptions,
) -> String {
    let mut s = String::new();
    write_match(&mut s, m, priority, ports, opts);
    s
}

/// An action list (`drop` when empty). `m` is the flow's match: it picks the transport field
/// names (`NXM_OF_UDP_SRC` under `udp`).
pub fn format_actions(
    actions: &[Action],
    m: &Match,
    ports: &PortNames,
    opts: FormatOptions,
) -> String {
    let mut s = String::new();
    write_actions(&mut s, actions, m, ports, opts);
    s
}

// ---------------------------------------------------------------------------------------------
// Values.

fn hex(s: &mut String, v: u128) {
    if v == 0 {
        s.push('0');
    } else {
        let _ = write!(s, "{v:#x}");
    }
}

fn full(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

fn prefix_len(mask: u128, width: u32) -> Option<u32> {
    let m = mask << (128 - width);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

fn mac_str(s: &mut String, v: u128) {
    let b = (v as u64).to_be_bytes();
    let _ = write!(
        s,
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    );
}

/// Ports: reserved names, then (with `names`) the port's name, then the number.
fn port_str(s: &mut String, p: u32, ports: &PortNames, opts: FormatOptions) {
    if let Some(n) = special_port_name(p) {
        s.push_str(n);
        return;
    }
    if opts.names {
        if let Some(name) = ports.name(p) {
            quoted_name(s, name);
            return;
        }
    }
    let _ = write!(s, "{p}");
}

/// Open vSwitch quotes a port name unless it is a letter followed by letters and digits.
fn quoted_name(s: &mut String, name: &str) {
    let plain = name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && name.bytes().all(|c| c.is_ascii_alphanumeric())
        && super::parse::special_port(name).is_none();
    if plain {
        s.push_str(name);
    } else {
        s.push('"');
        s.push_str(name);
        s.push('"');
    }
}

fn flags_str(s: &mut String, v: u128, m: u128, full_mask: u128, names: &[&str]) {
    let name = |s: &mut String, bit: usize| match names.get(bit) {
        Some(n) => s.push_str(n),
        None => {
            let _ = write!(s, "[{:x}]", 1u128 << bit);
        }
    };
    if m == full_mask && names.len() > 1 {
        if v == 0 {
            s.push('0');
            return;
        }
        let mut first = true;
        for bit in 0..128 {
            if v & (1 << bit) != 0 {
                if !first {
                    s.push('|');
                }
                first = false;
                name(s, bit);
            }
        }
        return;
    }
    for bit in 0..128 {
        if m & (1 << bit) != 0 {
            s.push(if v & (1 << bit) != 0 { '+' } else { '-' });
            name(s, bit);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matches.

#[derive(Clone, Copy)]
enum Fmt {
    Hex,
    Dec,
    /// Decimal when exact, hexadecimal value/mask otherwise (transport ports).
    DecOrHex,
    Ipv4,
    Ipv6,
    Mac,
    /// Hexadecimal, zero-padded to this many digits.
    HexPad(usize),
}

struct MatchWriter<'a> {
    s: &'a mut String,
    m: &'a Match,
}

impl MatchWriter<'_> {
    fn field(&mut self, name: &str, l: FieldLoc, fmt: Fmt) {
        let m = self.m.mask.get(l);
        if m == 0 {
            return;
        }
        let v = self.m.value.get(l);
        let width = l.width();
        let exact = m == full(width);
        self.s.push_str(name);
        self.s.push('=');
        match fmt {
            Fmt::Hex => {
                hex(self.s, v);
                if !exact {
                    self.s.push('/');
                    hex(self.s, m);
                }
            }
            Fmt::Dec => {
                let _ = write!(self.s, "{v}");
                if !exact {
                    let _ = write!(self.s, "/{m:#x}");
                }
            }
            Fmt::DecOrHex => {
                if exact {
                    let _ = write!(self.s, "{v}");
                } else {
                    let _ = write!(self.s, "{v:#x}/{m:#x}");
                }
            }
            Fmt::HexPad(d) => {
                let _ = write!(self.s, "0x{v:0d$x}");
                if !exact {
                    let _ = write!(self.s, "/0x{m:0d$x}");
                }
            }
            Fmt::Ipv4 => {
                let _ = write!(self.s, "{}", Ipv4Addr::from(v as u32));
                if !exact {
                    match prefix_len(m, 32) {
                        Some(n) => {
                            let _ = write!(self.s, "/{n}");
                        }
                        None => {
                            let _ = write!(self.s, "/{}", Ipv4Addr::from(m as u32));
                        }
                    }
                }
            }
            Fmt::Ipv6 => {
                let _ = write!(self.s, "{}", Ipv6Addr::from(v));
                if !exact {
                    match prefix_len(m, 128) {
                        Some(n) => {
                            let _ = write!(self.s, "/{n}");
                        }
                        None => {
                            let _ = write!(self.s, "/{}", Ipv6Addr::from(m));
                        }
                    }
                }
            }
            Fmt::Mac => {
                mac_str(self.s, v);
                if !exact {
                    self.s.push('/');
                    mac_str(self.s, m);
                }
            }
        }
        self.s.push(',');
    }

    fn flags(&mut self, name: &str, l: FieldLoc, full_mask: u128, names: &[&str]) {
        let m = self.m.mask.get(l);
        if m == 0 {
            return;
        }
        self.s.push_str(name);
        self.s.push('=');
        flags_str(self.s, self.m.value.get(l), m, full_mask, names);
        self.s.push(',');
    }

    fn raw(&mut self, text: &str) {
        self.s.push_str(text);
        self.s.push(',');
    }
}

fn write_match(
    s: &mut String,
    m: &Match,
    priority: Option<u16>,
    ports: &PortNames,
    opts: FormatOptions,
) {
    let start = s.len();
    if let Some(p) = priority {
        if p != DEFAULT_PRIORITY {
            let _ = write!(s, "priority={p},");
        }
    }
    let mut w = MatchWriter { s, m };
    w.field("pkt_mark", loc::PKT_MARK, Fmt::Hex);
    w.field("recirc_id", loc::RECIRC_ID, Fmt::Hex);
    w.field("dp_hash", loc::DP_HASH, Fmt::Hex);
    w.field("conj_id", loc::CONJ_ID, Fmt::Dec);
    w.flags("ct_state", loc::CT_STATE, 0xffff_ffff, &CT_STATE_FLAGS);
    w.field("ct_zone", loc::CT_ZONE, Fmt::Dec);
    w.field("ct_mark", loc::CT_MARK, Fmt::Hex);
    w.field("ct_label", loc::CT_LABEL, Fmt::Hex);
    w.field("ct_nw_src", loc::CT_NW_SRC, Fmt::Ipv4);
    w.field("ct_nw_dst", loc::CT_NW_DST, Fmt::Ipv4);
    w.field("ct_nw_proto", loc::CT_NW_PROTO, Fmt::Dec);
    w.field("ct_tp_src", loc::CT_TP_SRC, Fmt::DecOrHex);
    w.field("ct_tp_dst", loc::CT_TP_DST, Fmt::DecOrHex);

    let dl_set = m.mask.dl_type() == 0xffff;
    let dl = m.value.dl_type();
    let proto_set = m.mask.nw_proto() == 0xff;
    let proto = m.value.nw_proto();
    let mut skip_type = false;
    let mut skip_proto = false;
    if dl_set {
        let short = match dl {
            ETH_TYPE_IP | ETH_TYPE_IPV6 => {
                let v6 = dl == ETH_TYPE_IPV6;
                skip_type = true;
                let p = if proto_set {
                    match (proto, v6) {
                        (IPPROTO_ICMP, false) => Some("icmp"),
                        (IPPROTO_ICMPV6, true) => Some("icmp6"),
                        (IPPROTO_TCP, false) => Some("tcp"),
                        (IPPROTO_UDP, false) => Some("udp"),
                        (IPPROTO_SCTP, false) => Some("sctp"),
                        (IPPROTO_TCP, true) => Some("tcp6"),
                        (IPPROTO_UDP, true) => Some("udp6"),
                        (IPPROTO_SCTP, true) => Some("sctp6"),
                        _ => None,
                    }
                } else {
                    None
                };
                if p.is_some() {
                    skip_proto = true;
                }
                Some(p.unwrap_or(if v6 { "ipv6" } else { "ip" }))
            }
            ETH_TYPE_ARP => Some("arp"),
            ETH_TYPE_RARP => Some("rarp"),
            _ => None,
        };
        if let Some(sh) = short {
            skip_type = true;
            w.raw(sh);
        }
    }
    for i in 0..16u8 {
        let l = Field::Reg(i).loc().expect("registers have storage");
        w.field(names_reg(i), l, Fmt::Hex);
    }
    w.field("tun_id", loc::TUN_ID, Fmt::Hex);
    w.field("tun_src", loc::TUN_SRC, Fmt::Ipv4);
    w.field("tun_dst", loc::TUN_DST, Fmt::Ipv4);
    {
        let l = loc::TUN_FLAGS;
        if m.mask.get(l) != 0 {
            w.flags("tun_flags", l, 0, &TUN_FLAGS);
        }
    }
    for i in 0..TUN_METADATA_MAPPED {
        let f = Field::TunMetadata(i);
        if let Some(l) = f.loc() {
            w.field(f.info().name, l, Fmt::Hex);
        }
    }
    w.field("metadata", loc::METADATA, Fmt::Hex);
    if m.mask.get(loc::IN_PORT) != 0 {
        w.s.push_str("in_port=");
        port_str(w.s, m.value.in_port(), ports, opts);
        w.s.push(',');
    }
    vlan(&mut w);
    w.field("dl_src", loc::DL_SRC, Fmt::Mac);
    w.field("dl_dst", loc::DL_DST, Fmt::Mac);
    if dl_set && !skip_type {
        let _ = write!(w.s, "dl_type=0x{dl:04x},");
    }
    let is_arp = dl_set && (dl == ETH_TYPE_ARP || dl == ETH_TYPE_RARP);
    if dl_set && dl == ETH_TYPE_IPV6 {
        w.field("ipv6_src", loc::IPV6_SRC, Fmt::Ipv6);
        w.field("ipv6_dst", loc::IPV6_DST, Fmt::Ipv6);
        w.field("ipv6_label", loc::IPV6_LABEL, Fmt::HexPad(5));
    } else if is_arp {
        w.field("arp_spa", loc::NW_SRC, Fmt::Ipv4);
        w.field("arp_tpa", loc::NW_DST, Fmt::Ipv4);
    } else {
        w.field("nw_src", loc::NW_SRC, Fmt::Ipv4);
        w.field("nw_dst", loc::NW_DST, Fmt::Ipv4);
    }
    if proto_set && !skip_proto {
        w.field("nw_proto", loc::NW_PROTO, Fmt::Dec);
    }
    {
        let tm = m.mask.get(loc::NW_TOS);
        let tv = m.value.get(loc::NW_TOS);
        if tm & 0xfc == 0xfc {
            let _ = write!(w.s, "nw_tos={},", tv & 0xfc);
        }
        if tm & 3 == 3 {
            let _ = write!(w.s, "nw_ecn={},", tv & 3);
        }
    }
    w.field("nw_ttl", loc::NW_TTL, Fmt::Dec);
    {
        let fm = m.mask.get(loc::NW_FRAG) as u8;
        let fv = m.value.get(loc::NW_FRAG) as u8;
        if fm != 0 {
            let kw = match (fv, fm) {
                (0, FRAG_ANY) => Some("no"),
                (FRAG_ANY, FRAG_ANY) => Some("yes"),
                (FRAG_ANY, 3) => Some("first"),
                (3, 3) => Some("later"),
                (0, FRAG_LATER) => Some("not_later"),
                _ => None,
            };
            match kw {
                Some(k) => {
                    let _ = write!(w.s, "nw_frag={k},");
                }
                None => {
                    let _ = write!(w.s, "nw_frag={fv:#x}/{fm:#x},");
                }
            }
        }
    }
    let icmp = proto_set
        && ((dl == ETH_TYPE_IP && proto == IPPROTO_ICMP)
            || (dl == ETH_TYPE_IPV6 && proto == IPPROTO_ICMPV6));
    if icmp {
        w.field("icmp_type", loc::ICMP_TYPE, Fmt::Dec);
        w.field("icmp_code", loc::ICMP_CODE, Fmt::Dec);
    } else {
        w.field("tp_src", loc::TP_SRC, Fmt::DecOrHex);
        w.field("tp_dst", loc::TP_DST, Fmt::DecOrHex);
    }
    w.field("arp_op", loc::ARP_OP, Fmt::Dec);
    if is_arp {
        w.field("arp_sha", loc::ARP_SHA, Fmt::Mac);
        w.field("arp_tha", loc::ARP_THA, Fmt::Mac);
    } else {
        w.field("nd_target", loc::ND_TARGET, Fmt::Ipv6);
        w.field("nd_sll", loc::ARP_SHA, Fmt::Mac);
        w.field("nd_tll", loc::ARP_THA, Fmt::Mac);
    }
    w.flags("tcp_flags", loc::TCP_FLAGS, 0xfff, &TCP_FLAGS);
    if s.len() > start && s.ends_with(',') {
        s.pop();
    }
}

fn names_reg(i: u8) -> &'static str {
    Field::Reg(i).info().name
}

/// `dl_vlan`/`dl_vlan_pcp` when the mask selects whole VID/PCP with the present bit, else
/// `vlan_tci`.
fn vlan(w: &mut MatchWriter) {
    let m = w.m.mask.vlan_tci();
    if m == 0 {
        return;
    }
    let v = w.m.value.vlan_tci();
    let vid_m = m & 0x0fff;
    let pcp_m = m & 0xe000;
    let cfi = m & VLAN_CFI != 0;
    if cfi
        && v & VLAN_CFI != 0
        && (vid_m == 0 || vid_m == 0x0fff)
        && (pcp_m == 0 || pcp_m == 0xe000)
        && (vid_m != 0 || pcp_m != 0)
    {
        if vid_m != 0 {
            let _ = write!(w.s, "dl_vlan={},", v & 0x0fff);
        }
        if pcp_m != 0 {
            let _ = write!(w.s, "dl_vlan_pcp={},", v >> 13);
        }
    } else if m == 0xffff {
        let _ = write!(w.s, "vlan_tci=0x{v:04x},");
    } else {
        let _ = write!(w.s, "vlan_tci=0x{v:04x}/0x{m:04x},");
    }
}

// ---------------------------------------------------------------------------------------------
// Actions.

fn write_actions(
    s: &mut String,
    actions: &[Action],
    m: &Match,
    ports: &PortNames,
    opts: FormatOptions,
) {
    if actions.is_empty() {
        s.push_str("drop");
        return;
    }
    let proto = if m.mask.nw_proto() == 0xff {
        m.value.nw_proto()
    } else {
        0
    };
    let cx = ActFmt { ports, opts, proto };
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        cx.action(s, a);
    }
}

struct ActFmt<'a> {
    ports: &'a PortNames,
    opts: FormatOptions,
    proto: u8,
}

impl ActFmt<'_> {
    fn list(&self, s: &mut String, actions: &[Action]) {
        for (i, a) in actions.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            self.action(s, a);
        }
    }

    fn subfield(&self, s: &mut String, sf: SubField) {
        let (name, w) = names::nxm_name(sf.field, sf.ofs, sf.n_bits, self.proto);
        s.push_str(&name);
        if sf.ofs == 0 && sf.n_bits == w {
            s.push_str("[]");
        } else if sf.n_bits == 1 {
            let _ = write!(s, "[{}]", sf.ofs);
        } else {
            let _ = write!(s, "[{}..{}]", sf.ofs, sf.ofs + sf.n_bits - 1);
        }
    }

    /// `load` carries at most 64 bits; wider ranges print as one load per 64-bit chunk, low
    /// chunk first, as Open vSwitch splits them.
    fn load(&self, s: &mut String, value: u128, dst: SubField) {
        let mut ofs = 0u16;
        while ofs < dst.n_bits {
            let n = (dst.n_bits - ofs).min(64);
            let chunk = (value >> ofs) & ((1u128 << n) - 1);
            if ofs > 0 {
                s.push(',');
            }
            s.push_str("load:");
            hex(s, chunk);
            s.push_str("->");
            self.subfield(
                s,
                SubField {
                    field: dst.field,
                    ofs: dst.ofs + ofs,
                    n_bits: n,
                },
            );
            ofs += n;
        }
    }

    fn target(&self, s: &mut String, t: &OutputTarget) {
        match t {
            OutputTarget::Port(p) => port_str(s, *p, self.ports, self.opts),
            OutputTarget::InPort => s.push_str("IN_PORT"),
            OutputTarget::Normal => s.push_str("NORMAL"),
            OutputTarget::Flood => s.push_str("FLOOD"),
            OutputTarget::All => s.push_str("ALL"),
            OutputTarget::Local => s.push_str("LOCAL"),
            OutputTarget::Controller(_) => s.push_str("CONTROLLER"),
            OutputTarget::Field(sf) => self.subfield(s, *sf),
        }
    }

    fn action(&self, s: &mut String, a: &Action) {
        match a {
            Action::Output {
                target,
                max_len: Some(n),
            } => {
                s.push_str("output(port=");
                self.target(s, target);
                let _ = write!(s, ",max_len={n})");
            }
            Action::Output {
                target,
                max_len: None,
            } => match target {
                OutputTarget::Port(_) | OutputTarget::Field(_) => {
                    s.push_str("output:");
                    self.target(s, target);
                }
                OutputTarget::Controller(c) => controller(s, c),
                t => self.target(s, t),
            },
            Action::Resubmit { port, table, ct } => {
                let port_s = |s: &mut String| {
                    if let Some(p) = port {
                        port_str(s, *p, self.ports, self.opts);
                    }
                };
                if table.is_none() && !ct && port.is_some() {
                    s.push_str("resubmit:");
                    port_s(s);
                } else {
                    s.push_str("resubmit(");
                    port_s(s);
                    s.push(',');
                    if let Some(t) = table {
                        let _ = write!(s, "{t}");
                    }
                    if *ct {
                        s.push_str(",ct");
                    }
                    s.push(')');
                }
            }
            // OpenFlow 1.0 has no goto_table; Open vSwitch stores and prints it as a resubmit.
            Action::GotoTable(t) => {
                let _ = write!(s, "resubmit(,{t})");
            }
            Action::Load { value, dst } => self.load(s, *value, *dst),
            Action::SetField { field, value, mask } => self.set_field(s, *field, *value, *mask),
            Action::Move { src, dst } => {
                s.push_str("move:");
                self.subfield(s, *src);
                s.push_str("->");
                self.subfield(s, *dst);
            }
            Action::SetVlanVid(v) => {
                let _ = write!(s, "mod_vlan_vid:{v}");
            }
            Action::SetVlanPcp(v) => {
                let _ = write!(s, "mod_vlan_pcp:{v}");
            }
            Action::StripVlan { .. } => s.push_str("strip_vlan"),
            Action::PushVlan(e) => {
                let _ = write!(s, "push_vlan:{e:#x}");
            }
            Action::SetDlSrc(m) => {
                s.push_str("mod_dl_src:");
                mac_str(s, mac_u128(m));
            }
            Action::SetDlDst(m) => {
                s.push_str("mod_dl_dst:");
                mac_str(s, mac_u128(m));
            }
            Action::SetNwSrc(a) => {
                let _ = write!(s, "mod_nw_src:{a}");
            }
            Action::SetNwDst(a) => {
                let _ = write!(s, "mod_nw_dst:{a}");
            }
            Action::SetNwTos(v) => {
                let _ = write!(s, "mod_nw_tos:{v}");
            }
            Action::SetNwEcn(v) => self.load(s, *v as u128, SubField::whole(Field::NwEcn)),
            Action::SetNwTtl(v) => self.load(s, *v as u128, SubField::whole(Field::NwTtl)),
            Action::SetTpSrc(v) => {
                let _ = write!(s, "mod_tp_src:{v}");
            }
            Action::SetTpDst(v) => {
                let _ = write!(s, "mod_tp_dst:{v}");
            }
            Action::DecTtl { controller_ids } => {
                s.push_str("dec_ttl");
                if !controller_ids.is_empty() {
                    s.push('(');
                    for (i, id) in controller_ids.iter().enumerate() {
                        if i > 0 {
                            s.push(',');
                        }
                        let _ = write!(s, "{id}");
                    }
                    s.push(')');
                }
            }
            Action::SetTunnel { value, wide } => {
                s.push_str(if *wide || *value > u32::MAX as u64 {
                    "set_tunnel64:"
                } else {
                    "set_tunnel:"
                });
                hex(s, *value as u128);
            }
            Action::SetQueue(q) => {
                let _ = write!(s, "set_queue:{q}");
            }
            Action::PopQueue => s.push_str("pop_queue"),
            Action::Ct(ct) => self.ct(s, ct),
            Action::CtClear => s.push_str("ct_clear"),
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => {
                let _ = write!(s, "conjunction({id},{clause}/{n_clauses})");
            }
            Action::Clone(inner) => {
                s.push_str("clone(");
                self.list(s, inner);
                s.push(')');
            }
            Action::Note(bytes) => {
                s.push_str("note:");
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        s.push('.');
                    }
                    let _ = write!(s, "{b:02x}");
                }
            }
            Action::WriteMetadata { value, mask } => {
                s.push_str("write_metadata:");
                hex(s, *value as u128);
                if *mask != u64::MAX {
                    s.push('/');
                    hex(s, *mask as u128);
                }
            }
            Action::CheckPktLarger { len, dst } => {
                let _ = write!(s, "check_pkt_larger({len})->");
                self.subfield(s, *dst);
            }
            Action::Learn(l) => {
                s.push_str("learn(");
                s.push_str(&l.text);
                s.push(')');
            }
            Action::Exit => s.push_str("exit"),
        }
    }

    /// `set_field` prints the way OpenFlow 1.0 can express it: a `mod_*` action where one
    /// exists, else one `load` per contiguous run of mask bits; fields with no OpenFlow 1.0
    /// encoding stay `set_field`.
    fn set_field(&self, s: &mut String, f: Field, value: u128, mask: u128) {
        let width = f.width();
        let exact = mask == full(width);
        match f {
            Field::DlSrc if exact => return self.action(s, &Action::SetDlSrc(u128_mac(value))),
            Field::DlDst if exact => return self.action(s, &Action::SetDlDst(u128_mac(value))),
            Field::NwSrc if exact => {
                return self.action(s, &Action::SetNwSrc(Ipv4Addr::from(value as u32)))
            }
            Field::NwDst if exact => {
                return self.action(s, &Action::SetNwDst(Ipv4Addr::from(value as u32)))
            }
            Field::TpSrc if exact => return self.action(s, &Action::SetTpSrc(value as u16)),
            Field::TpDst if exact => return self.action(s, &Action::SetTpDst(value as u16)),
            Field::NwTos if exact => return self.action(s, &Action::SetNwTos(value as u8)),
            Field::IpDscp if exact => return self.action(s, &Action::SetNwTos((value as u8) << 2)),
            Field::DlVlan if exact => return self.action(s, &Action::SetVlanVid(value as u16)),
            Field::DlVlanPcp if exact => return self.action(s, &Action::SetVlanPcp(value as u8)),
            Field::VlanTci if exact && value as u16 & VLAN_CFI != 0 => {
                let _ = write!(
                    s,
                    "mod_vlan_vid:{},mod_vlan_pcp:{}",
                    value & 0x0fff,
                    (value >> 13) & 7
                );
                return;
            }
            Field::TunMetadata(_) | Field::Xreg(_) => {
                s.push_str("set_field:");
                hex(s, value);
                if !exact {
                    s.push('/');
                    hex(s, mask);
                }
                s.push_str("->");
                s.push_str(f.info().name);
                return;
            }
            _ => {}
        }
        // One load per run of ones in the mask, lowest bits first.
        let mut first = true;
        let mut bit = 0u32;
        while bit < width {
            if mask & (1u128 << bit) == 0 {
                bit += 1;
                continue;
            }
            let start = bit;
            while bit < width && mask & (1u128 << bit) != 0 {
                bit += 1;
            }
            let n = bit - start;
            let run = if n >= 128 {
                u128::MAX
            } else {
                (1u128 << n) - 1
            };
            if !first {
                s.push(',');
            }
            first = false;
            let sf = SubField {
                field: f,
                ofs: start as u16,
                n_bits: n as u16,
            };
            self.load(s, (value >> start) & run, sf);
        }
    }

    fn ct(&self, s: &mut String, ct: &CtAction) {
        let mut parts: Vec<String> = Vec::new();
        if ct.commit {
            parts.push("commit".into());
        }
        if ct.force {
            parts.push("force".into());
        }
        if let Some(t) = ct.table {
            parts.push(format!("table={t}"));
        }
        match ct.zone {
            CtZone::Imm(0) => {}
            CtZone::Imm(z) => parts.push(format!("zone={z}")),
            CtZone::Field(sf) => {
                let mut z = String::from("zone=");
                self.subfield(&mut z, sf);
                parts.push(z);
            }
        }
        if let Some(n) = &ct.nat {
            parts.push(nat(n));
        }
        if !ct.exec.is_empty() {
            let mut e = String::from("exec(");
            self.list(&mut e, &ct.exec);
            e.push(')');
            parts.push(e);
        }
        if let Some(a) = &ct.alg {
            parts.push(format!("alg={a}"));
        }
        s.push_str("ct(");
        s.push_str(&parts.join(","));
        s.push(')');
    }
}

fn controller(s: &mut String, c: &ControllerSpec) {
    if c.reason.is_none() && c.userdata.is_empty() && c.controller_id.is_none() && !c.pause {
        let _ = write!(s, "CONTROLLER:{}", c.max_len.unwrap_or(u16::MAX));
        return;
    }
    s.push_str("controller(");
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = &c.reason {
        parts.push(format!("reason={r}"));
    }
    if let Some(m) = c.max_len {
        parts.push(format!("max_len={m}"));
    }
    if let Some(id) = c.controller_id {
        parts.push(format!("id={id}"));
    }
    if !c.userdata.is_empty() {
        let u: Vec<String> = c.userdata.iter().map(|b| format!("{b:02x}")).collect();
        parts.push(format!("userdata={}", u.join(".")));
    }
    if c.pause {
        parts.push("pause".into());
    }
    s.push_str(&parts.join(","));
    s.push(')');
}

fn nat(n: &NatSpec) -> String {
    let mut s = String::from("nat");
    let Some(kind) = n.kind else {
        return s;
    };
    s.push('(');
    s.push_str(match kind {
        NatKind::Src => "src",
        NatKind::Dst => "dst",
    });
    if let Some(lo) = n.addr_min {
        s.push('=');
        let bracket = lo.is_ipv6() && n.port_min.is_some();
        let addr = |s: &mut String, a: IpAddr| {
            if bracket {
                let _ = write!(s, "[{a}]");
            } else {
                let _ = write!(s, "{a}");
            }
        };
        addr(&mut s, lo);
        if let Some(hi) = n.addr_max {
            s.push('-');
            addr(&mut s, hi);
        }
        if let Some(p) = n.port_min {
            let _ = write!(s, ":{p}");
            if let Some(q) = n.port_max {
                let _ = write!(s, "-{q}");
            }
        }
    }
    if n.random {
        s.push_str(",random");
    }
    if n.hash {
        s.push_str(",hash");
    }
    if n.persistent {
        s.push_str(",persistent");
    }
    s.push(')');
    s
}

fn mac_u128(m: &[u8; 6]) -> u128 {
    m.iter().fold(0u128, |a, b| (a << 8) | *b as u128)
}

fn u128_mac(v: u128) -> [u8; 6] {
    let b = (v as u64).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}
