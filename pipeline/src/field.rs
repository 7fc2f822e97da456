//! The field registry: every matchable or writable field, its width, where it lives in the
//! [`FlowKey`], its prerequisites and whether it can be masked or written.
//!
//! Names and syntax (including the `NXM_OF_*`, `NXM_NX_*` and `OXM_OF_*` aliases) belong to
//! [`crate::flow`]; this module gives each field one canonical name, the one Open vSwitch's
//! `dump-flows` prints in a match.

use crate::key::{self, loc, FieldLoc, FlowKey};

/// Number of `tun_metadataN` fields that map to storage in the key. Each holds up to 32 bits
/// (OVN's Geneve option, class 0x0102 type 0x80, is 4 bytes).
pub const TUN_METADATA_MAPPED: u8 = (key::TUN_META_BYTES / 4) as u8;

/// A field, as named in a match, `load`, `move`, `set_field` or `output:FIELD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    InPort,
    RecircId,
    DpHash,
    PktMark,
    Metadata,
    /// `reg0`..`reg15` (32 bits).
    Reg(u8),
    /// `xreg0`..`xreg7` (64 bits; `xregN` overlays `reg(2N)` (high) and `reg(2N+1)`).
    Xreg(u8),
    /// `xxreg0`..`xxreg3` (128 bits; overlays `xreg(2N)` (high) and `xreg(2N+1)`).
    Xxreg(u8),
    TunId,
    TunSrc,
    TunDst,
    TunFlags,
    /// `tun_metadata0`..`tun_metadata63`; only the first [`TUN_METADATA_MAPPED`] have storage.
    TunMetadata(u8),
    CtState,
    CtZone,
    CtMark,
    CtLabel,
    CtNwSrc,
    CtNwDst,
    CtNwProto,
    CtTpSrc,
    CtTpDst,
    ConjId,
    DlSrc,
    DlDst,
    DlType,
    /// The 16-bit TCI with the "present" bit (0x1000) as Open vSwitch defines `vlan_tci`.
    VlanTci,
    /// `dl_vlan`: the 12-bit VID (OpenFlow 1.0 semantics: matching requires a tag).
    DlVlan,
    /// `dl_vlan_pcp`: 3-bit priority.
    DlVlanPcp,
    NwSrc,
    NwDst,
    NwProto,
    /// `nw_tos`: the TOS byte with its ECN bits zero (the DSCP bits in place).
    NwTos,
    /// `ip_dscp`: the 6-bit DSCP value.
    IpDscp,
    NwEcn,
    NwTtl,
    /// `ip_frag`: the `nw_frag` bits (`FRAG_ANY`, `FRAG_LATER`).
    IpFrag,
    TpSrc,
    TpDst,
    TcpFlags,
    IcmpType,
    IcmpCode,
    Icmpv6Type,
    Icmpv6Code,
    ArpOp,
    ArpSpa,
    ArpTpa,
    ArpSha,
    ArpTha,
    Ipv6Src,
    Ipv6Dst,
    Ipv6Label,
    NdTarget,
    NdSll,
    NdTll,
}

/// What a match (or an action's packet) must have for a field to be meaningful. Open vSwitch
/// rejects a flow that matches a field without its prerequisite, and so does xvs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prereq {
    None,
    /// A VLAN tag (`dl_vlan`/`dl_vlan_pcp` as OpenFlow 1.0 fields need none; kept for clarity).
    Ipv4,
    Ipv6,
    /// IPv4 or IPv6.
    Ip,
    Arp,
    /// IPv4 or ARP (`nw_src`, `nw_dst`).
    Ipv4OrArp,
    Tcp,
    Udp,
    Sctp,
    /// TCP, UDP or SCTP (over IPv4 or IPv6).
    Transport,
    Icmpv4,
    Icmpv6,
    /// ICMPv6 neighbour solicitation or advertisement (`nd_target`).
    Nd,
    /// ICMPv6 neighbour solicitation (`nd_sll`).
    NdSolicit,
    /// ICMPv6 neighbour advertisement (`nd_tll`).
    NdAdvert,
    /// `ct_state=+trk` (the `ct_nw_*`/`ct_tp_*` original-tuple fields).
    Tracked,
}

/// How values of a field are written in flow syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// Decimal (`nw_proto=6`, `tp_dst=80`, `priority`-like fields).
    Decimal,
    /// Hexadecimal with `0x` (`metadata=0x2712`, `reg14=0x2`).
    Hex,
    Mac,
    Ipv4,
    Ipv6,
    /// `in_port`-like: a port number or name.
    Port,
    /// `ct_state` flag syntax (`+trk-new`) on output.
    CtState,
    /// `tcp_flags` flag syntax (`+syn-ack`) accepted; printed as OVS does.
    TcpFlags,
    /// `ip_frag` keywords (`no`, `yes`, `first`, `later`, `not_later`).
    Frag,
}

#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    /// Canonical name as `dump-flows` prints it in a match.
    pub name: &'static str,
    pub width: u32,
    pub prereq: Prereq,
    /// Arbitrary bitwise masks allowed in a match.
    pub maskable: bool,
    /// May be the destination of `load`, `move`, `set_field`.
    pub writable: bool,
    pub format: ValueFormat,
}

impl Field {
    /// Where the field lives in the key. `None` for a `tun_metadataN` with no storage.
    ///
    /// Fields that are views of another field's bits (`dl_vlan`, `ip_dscp`, registers inside
    /// `xreg`s, ICMP type/code inside the transport ports) return the bits they cover, so reads
    /// and writes through any name agree.
    pub fn loc(self) -> Option<FieldLoc> {
        use Field::*;
        Some(match self {
            InPort => loc::IN_PORT,
            RecircId => loc::RECIRC_ID,
            DpHash => loc::DP_HASH,
            PktMark => loc::PKT_MARK,
            Metadata => loc::METADATA,
            Reg(i) => FieldLoc::word(
                key::W_XREG0 + i as usize / 2,
                if i % 2 == 0 { 32 } else { 0 },
                32,
            ),
            Xreg(i) => FieldLoc::word(key::W_XREG0 + i as usize, 0, 64),
            Xxreg(i) => FieldLoc::Wide {
                hi: (key::W_XREG0 + 2 * i as usize) as u8,
            },
            TunId => loc::TUN_ID,
            TunSrc => loc::TUN_SRC,
            TunDst => loc::TUN_DST,
            TunFlags => loc::TUN_FLAGS,
            TunMetadata(i) => {
                if i >= TUN_METADATA_MAPPED {
                    return None;
                }
                let byte = 4 * i as usize;
                FieldLoc::word(
                    key::W_TUN_META + byte / 8,
                    if byte.is_multiple_of(8) { 32 } else { 0 },
                    32,
                )
            }
            CtState => loc::CT_STATE,
            CtZone => loc::CT_ZONE,
            CtMark => loc::CT_MARK,
            CtLabel => loc::CT_LABEL,
            CtNwSrc => loc::CT_NW_SRC,
            CtNwDst => loc::CT_NW_DST,
            CtNwProto => loc::CT_NW_PROTO,
            CtTpSrc => loc::CT_TP_SRC,
            CtTpDst => loc::CT_TP_DST,
            ConjId => loc::CONJ_ID,
            DlSrc => loc::DL_SRC,
            DlDst => loc::DL_DST,
            DlType => loc::DL_TYPE,
            VlanTci => loc::VLAN_TCI,
            DlVlan => FieldLoc::word(key::W_L2, 48, 12),
            DlVlanPcp => FieldLoc::word(key::W_L2, 48 + key::VLAN_PCP_SHIFT, 3),
            NwSrc | ArpSpa => loc::NW_SRC,
            NwDst | ArpTpa => loc::NW_DST,
            NwProto => loc::NW_PROTO,
            NwTos => loc::NW_TOS,
            IpDscp => loc::IP_DSCP,
            NwEcn => loc::NW_ECN,
            NwTtl => loc::NW_TTL,
            IpFrag => loc::NW_FRAG,
            TpSrc => loc::TP_SRC,
            TpDst => loc::TP_DST,
            TcpFlags => loc::TCP_FLAGS,
            IcmpType | Icmpv6Type => loc::ICMP_TYPE,
            IcmpCode | Icmpv6Code => loc::ICMP_CODE,
            ArpOp => loc::ARP_OP,
            ArpSha | NdSll => loc::ARP_SHA,
            ArpTha | NdTll => loc::ARP_THA,
            Ipv6Src => loc::IPV6_SRC,
            Ipv6Dst => loc::IPV6_DST,
            Ipv6Label => loc::IPV6_LABEL,
            NdTarget => loc::ND_TARGET,
        })
    }

    pub fn info(self) -> FieldInfo {
        use Field::*;
        use Prereq as P;
        use ValueFormat as F;
        let (name, width, prereq, maskable, writable, format): (
            &'static str,
            u32,
            Prereq,
            bool,
            bool,
            ValueFormat,
        ) = match self {
            InPort => ("in_port", 32, P::None, false, true, F::Port),
            RecircId => ("recirc_id", 32, P::None, false, false, F::Hex),
            DpHash => ("dp_hash", 32, P::None, true, false, F::Hex),
            PktMark => ("pkt_mark", 32, P::None, true, true, F::Hex),
            Metadata => ("metadata", 64, P::None, true, true, F::Hex),
            Reg(i) => (REG_NAMES[i as usize], 32, P::None, true, true, F::Hex),
            Xreg(i) => (XREG_NAMES[i as usize], 64, P::None, true, true, F::Hex),
            Xxreg(i) => (XXREG_NAMES[i as usize], 128, P::None, true, true, F::Hex),
            TunId => ("tun_id", 64, P::None, true, true, F::Hex),
            TunSrc => ("tun_src", 32, P::None, true, true, F::Ipv4),
            TunDst => ("tun_dst", 32, P::None, true, true, F::Ipv4),
            TunFlags => ("tun_flags", 16, P::None, true, true, F::Hex),
            TunMetadata(i) => (
                TUN_METADATA_NAMES[i as usize],
                32,
                P::None,
                true,
                true,
                F::Hex,
            ),
            CtState => ("ct_state", 32, P::None, true, false, F::CtState),
            CtZone => ("ct_zone", 16, P::None, false, false, F::Hex),
            CtMark => ("ct_mark", 32, P::None, true, true, F::Hex),
            CtLabel => ("ct_label", 128, P::None, true, true, F::Hex),
            CtNwSrc => ("ct_nw_src", 32, P::Tracked, true, false, F::Ipv4),
            CtNwDst => ("ct_nw_dst", 32, P::Tracked, true, false, F::Ipv4),
            CtNwProto => ("ct_nw_proto", 8, P::Tracked, false, false, F::Decimal),
            CtTpSrc => ("ct_tp_src", 16, P::Tracked, true, false, F::Decimal),
            CtTpDst => ("ct_tp_dst", 16, P::Tracked, true, false, F::Decimal),
            ConjId => ("conj_id", 32, P::None, false, false, F::Decimal),
            DlSrc => ("dl_src", 48, P::None, true, true, F::Mac),
            DlDst => ("dl_dst", 48, P::None, true, true, F::Mac),
            DlType => ("dl_type", 16, P::None, false, false, F::Hex),
            VlanTci => ("vlan_tci", 16, P::None, true, true, F::Hex),
            DlVlan => ("dl_vlan", 12, P::None, false, true, F::Decimal),
            DlVlanPcp => ("dl_vlan_pcp", 3, P::None, false, true, F::Decimal),
            NwSrc => ("nw_src", 32, P::Ipv4, true, true, F::Ipv4),
            NwDst => ("nw_dst", 32, P::Ipv4, true, true, F::Ipv4),
            NwProto => ("nw_proto", 8, P::Ip, false, false, F::Decimal),
            NwTos => ("nw_tos", 8, P::Ip, false, true, F::Decimal),
            IpDscp => ("ip_dscp", 6, P::Ip, false, true, F::Decimal),
            NwEcn => ("nw_ecn", 2, P::Ip, false, true, F::Decimal),
            NwTtl => ("nw_ttl", 8, P::Ip, false, true, F::Decimal),
            IpFrag => ("ip_frag", 8, P::Ip, true, false, F::Frag),
            TpSrc => ("tp_src", 16, P::Transport, true, true, F::Decimal),
            TpDst => ("tp_dst", 16, P::Transport, true, true, F::Decimal),
            TcpFlags => ("tcp_flags", 12, P::Tcp, true, false, F::TcpFlags),
            IcmpType => ("icmp_type", 8, P::Icmpv4, false, true, F::Decimal),
            IcmpCode => ("icmp_code", 8, P::Icmpv4, false, true, F::Decimal),
            Icmpv6Type => ("icmpv6_type", 8, P::Icmpv6, false, true, F::Decimal),
            Icmpv6Code => ("icmpv6_code", 8, P::Icmpv6, false, true, F::Decimal),
            ArpOp => ("arp_op", 16, P::Arp, false, true, F::Decimal),
            ArpSpa => ("arp_spa", 32, P::Arp, true, true, F::Ipv4),
            ArpTpa => ("arp_tpa", 32, P::Arp, true, true, F::Ipv4),
            ArpSha => ("arp_sha", 48, P::Arp, true, true, F::Mac),
            ArpTha => ("arp_tha", 48, P::Arp, true, true, F::Mac),
            Ipv6Src => ("ipv6_src", 128, P::Ipv6, true, true, F::Ipv6),
            Ipv6Dst => ("ipv6_dst", 128, P::Ipv6, true, true, F::Ipv6),
            Ipv6Label => ("ipv6_label", 20, P::Ipv6, true, true, F::Hex),
            NdTarget => ("nd_target", 128, P::Nd, true, true, F::Ipv6),
            NdSll => ("nd_sll", 48, P::NdSolicit, true, true, F::Mac),
            NdTll => ("nd_tll", 48, P::NdAdvert, true, true, F::Mac),
        };
        FieldInfo {
            name,
            width,
            prereq,
            maskable,
            writable,
            format,
        }
    }

    /// Width in bits.
    pub fn width(self) -> u32 {
        self.info().width
    }

    /// Reads this field's value from a key (0 for an unmapped `tun_metadataN`).
    pub fn get(self, k: &FlowKey) -> u128 {
        self.loc().map_or(0, |l| k.get(l))
    }

    /// True when the packet described by `k` satisfies this field's prerequisite (used when an
    /// action writes a field the frame does not have: Open vSwitch skips such writes).
    pub fn prereq_met(self, k: &FlowKey) -> bool {
        prereq_met(self.info().prereq, k)
    }
}

pub const ETH_TYPE_IP: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
pub const ETH_TYPE_VLAN: u16 = 0x8100;
pub const ETH_TYPE_VLAN_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Does the packet (or match values) in `k` satisfy `p`? `k` must hold values, not masks.
pub fn prereq_met(p: Prereq, k: &FlowKey) -> bool {
    let dl = k.dl_type();
    let ip = dl == ETH_TYPE_IP || dl == ETH_TYPE_IPV6;
    let proto = k.nw_proto();
    let icmp6_type = k.get(loc::ICMP_TYPE) as u8;
    match p {
        Prereq::None => true,
        Prereq::Ipv4 => dl == ETH_TYPE_IP,
        Prereq::Ipv6 => dl == ETH_TYPE_IPV6,
        Prereq::Ip => ip,
        Prereq::Arp => dl == ETH_TYPE_ARP,
        Prereq::Ipv4OrArp => dl == ETH_TYPE_IP || dl == ETH_TYPE_ARP,
        Prereq::Tcp => ip && proto == IPPROTO_TCP,
        Prereq::Udp => ip && proto == IPPROTO_UDP,
        Prereq::Sctp => ip && proto == IPPROTO_SCTP,
        Prereq::Transport => ip && matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP),
        Prereq::Icmpv4 => dl == ETH_TYPE_IP && proto == IPPROTO_ICMP,
        Prereq::Icmpv6 => dl == ETH_TYPE_IPV6 && proto == IPPROTO_ICMPV6,
        Prereq::Nd => {
            dl == ETH_TYPE_IPV6 && proto == IPPROTO_ICMPV6 && matches!(icmp6_type, 135 | 136)
        }
        Prereq::NdSolicit => dl == ETH_TYPE_IPV6 && proto == IPPROTO_ICMPV6 && icmp6_type == 135,
        Prereq::NdAdvert => dl == ETH_TYPE_IPV6 && proto == IPPROTO_ICMPV6 && icmp6_type == 136,
        Prereq::Tracked => k.ct_state() & key::CS_TRACKED != 0,
    }
}

/// A bit range of a field: `NXM_NX_REG13[0..15]` is `{ field: Reg(13), ofs: 0, n_bits: 16 }`;
/// `NXM_NX_REG14[]` is the whole field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubField {
    pub field: Field,
    pub ofs: u16,
    pub n_bits: u16,
}

impl SubField {
    pub fn whole(field: Field) -> SubField {
        SubField {
            field,
            ofs: 0,
            n_bits: field.width() as u16,
        }
    }

    /// Mask of the selected bits, in field coordinates.
    pub fn mask(self) -> u128 {
        let ones = if self.n_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << self.n_bits) - 1
        };
        ones << self.ofs
    }

    /// Reads the selected bits, shifted down to bit 0.
    pub fn read(self, k: &FlowKey) -> u128 {
        (self.field.get(k) & self.mask()) >> self.ofs
    }

    /// Writes `value` (bit 0 = the range's first bit) into the selected bits.
    pub fn write(self, k: &mut FlowKey, value: u128) {
        if let Some(l) = self.field.loc() {
            k.set_masked(l, value << self.ofs, self.mask());
        }
    }

    /// Marks the selected bits in a mask key (wildcard tracking).
    pub fn mark(self, mask: &mut FlowKey) {
        if let Some(l) = self.field.loc() {
            mask.set_masked(l, u128::MAX, self.mask());
        }
    }
}

macro_rules! names {
    ($prefix:literal; $($i:literal)*) => { [$(concat!($prefix, $i)),*] };
}
const REG_NAMES: [&str; 16] = names!("reg"; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
const XREG_NAMES: [&str; 8] = names!("xreg"; 0 1 2 3 4 5 6 7);
const XXREG_NAMES: [&str; 4] = names!("xxreg"; 0 1 2 3);
const TUN_METADATA_NAMES: [&str; 64] = names!("tun_metadata";
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_overlay_as_open_vswitch_defines() {
        let mut k = FlowKey::ZERO;
        SubField::whole(Field::Reg(0)).write(&mut k, 0xaaaa_aaaa);
        SubField::whole(Field::Reg(1)).write(&mut k, 0x5555_5555);
        assert_eq!(Field::Xreg(0).get(&k), 0xaaaa_aaaa_5555_5555);
        SubField::whole(Field::Reg(3)).write(&mut k, 7);
        assert_eq!(
            Field::Xxreg(0).get(&k),
            (0xaaaa_aaaa_5555_5555u128 << 64) | 7
        );
        assert_eq!(k.reg(1), 0x5555_5555);
    }

    #[test]
    fn subfield_write_touches_only_its_bits() {
        let mut k = FlowKey::ZERO;
        let lo = SubField {
            field: Field::Reg(13),
            ofs: 0,
            n_bits: 16,
        };
        let hi = SubField {
            field: Field::Reg(13),
            ofs: 16,
            n_bits: 16,
        };
        lo.write(&mut k, 0x10);
        hi.write(&mut k, 0xffff_1234); // wider than the range: truncated
        assert_eq!(k.reg(13), 0x1234_0010);
        assert_eq!(hi.read(&k), 0x1234);
    }

    #[test]
    fn views_share_bits() {
        let mut k = FlowKey::ZERO;
        k.set(loc::VLAN_TCI, (key::VLAN_CFI | 2207) as u128 | (5 << 13));
        assert_eq!(Field::DlVlan.get(&k), 2207);
        assert_eq!(Field::DlVlanPcp.get(&k), 5);
        k.set(loc::NW_TOS, 0xb9);
        assert_eq!(Field::IpDscp.get(&k), 0xb9 >> 2);
        assert_eq!(Field::NwEcn.get(&k), 1);
    }
}
