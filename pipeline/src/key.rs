//! The flow key: every field a flow can match on, in one fixed array of 64-bit words.
//!
//! A [`FlowKey`] holds the values a frame (plus its pipeline metadata) has for each field; a match
//! is a key of values plus a key of masks with the same layout, so matching is word-wise
//! `(key & mask) == value`, and a megaflow's "fields the walk looked at" is just another mask.
//!
//! This module owns the layout (which bits of which word hold each field). It must not know field
//! names or syntax: that is [`crate::field`] and [`crate::flow`].
//!
//! Conventions: a field's bit 0 is its least significant bit (as in `NXM_NX_REG13[0..15]`).
//! Fields wider than 64 bits (IPv6 addresses, `ct_label`, `xxreg`) span two consecutive words,
//! the more significant half first. Words 0..[`PACKET_WORD`] are pipeline metadata (zero when a
//! frame enters a bridge, apart from `in_port` and the tunnel fields); words from
//! [`PACKET_WORD`] on come from the frame's headers.

/// Number of 64-bit words in a key.
pub const KEY_WORDS: usize = 37;

/// Where a field (or a part of one) lives: `width` bits starting at bit `shift` of word `word`.
/// Multi-word fields are described by [`FieldLoc::Wide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldLoc {
    /// Up to 64 bits within one word.
    Word { word: u8, shift: u8, width: u8 },
    /// 128 bits: `hi` word holds bits 64..128, `hi + 1` holds bits 0..64.
    Wide { hi: u8 },
}

impl FieldLoc {
    pub const fn word(word: usize, shift: u32, width: u32) -> FieldLoc {
        FieldLoc::Word {
            word: word as u8,
            shift: shift as u8,
            width: width as u8,
        }
    }

    /// Width of the field in bits.
    pub const fn width(self) -> u32 {
        match self {
            FieldLoc::Word { width, .. } => width as u32,
            FieldLoc::Wide { .. } => 128,
        }
    }
}

// --- Word map -------------------------------------------------------------------------------
// Metadata words.
/// `in_port` bits 0..32 | `recirc_id` bits 32..64.
pub const W_PORT: usize = 0;
/// `dp_hash` bits 0..32 | `pkt_mark` bits 32..64.
pub const W_MARK: usize = 1;
pub const W_METADATA: usize = 2;
/// `xreg0`..`xreg7`; `xreg(i)` holds `reg(2i)` in bits 32..64 and `reg(2i+1)` in bits 0..32.
pub const W_XREG0: usize = 3;
pub const W_TUN_ID: usize = 11;
/// `tun_src` bits 32..64 | `tun_dst` bits 0..32.
pub const W_TUN_ADDR: usize = 12;
/// `tun_flags` bits 48..64 | `ct_zone` bits 32..48 | `ct_state` bits 0..32.
pub const W_CT_STATE: usize = 13;
/// `ct_mark` bits 32..64 | `conj_id` bits 0..32.
pub const W_CT_MARK: usize = 14;
/// `ct_label` (two words).
pub const W_CT_LABEL: usize = 15;
/// `ct_nw_src` bits 32..64 | `ct_nw_dst` bits 0..32.
pub const W_CT_NW: usize = 17;
/// `ct_tp_src` bits 48..64 | `ct_tp_dst` bits 32..48 | `ct_nw_proto` bits 24..32.
pub const W_CT_TP: usize = 18;
/// Tunnel metadata (Geneve options): 32 bytes, byte `i` of the region is bits
/// `56 - 8 * (i % 8)` .. of word `W_TUN_META + i / 8` (big-endian within each word).
pub const W_TUN_META: usize = 19;
pub const TUN_META_WORDS: usize = 4;
pub const TUN_META_BYTES: usize = TUN_META_WORDS * 8;

// Packet words.
/// First word filled from the frame's headers.
pub const PACKET_WORD: usize = 23;
/// `dl_dst` bits 0..48.
pub const W_DL_DST: usize = 23;
/// `dl_src` bits 0..48.
pub const W_DL_SRC: usize = 24;
/// `vlan_tci` bits 48..64 | `dl_type` bits 32..48 | inner `vlan_tci` (second tag) bits 16..32.
pub const W_L2: usize = 25;
/// `nw_src` bits 32..64 | `nw_dst` bits 0..32 (also `arp_spa` / `arp_tpa`).
pub const W_NW_ADDR: usize = 26;
/// `nw_proto` bits 56..64 | `nw_tos` bits 48..56 | `nw_ttl` bits 40..48 | `nw_frag` bits 32..40 |
/// `ipv6_label` bits 0..20.
pub const W_NW: usize = 27;
/// `tp_src` bits 48..64 | `tp_dst` bits 32..48 | `tcp_flags` bits 16..32 | `arp_op` bits 0..16.
/// ICMP type and code live in `tp_src` and `tp_dst`, as in Open vSwitch.
pub const W_TP: usize = 28;
/// `arp_sha` / `nd_sll` bits 0..48.
pub const W_ARP_SHA: usize = 29;
/// `arp_tha` / `nd_tll` bits 0..48.
pub const W_ARP_THA: usize = 30;
pub const W_IPV6_SRC: usize = 31;
pub const W_IPV6_DST: usize = 33;
pub const W_ND_TARGET: usize = 35;

// `ct_state` bits, as Open vSwitch numbers them.
pub const CS_NEW: u32 = 0x01;
pub const CS_ESTABLISHED: u32 = 0x02;
pub const CS_RELATED: u32 = 0x04;
pub const CS_REPLY_DIR: u32 = 0x08;
pub const CS_INVALID: u32 = 0x10;
pub const CS_TRACKED: u32 = 0x20;
pub const CS_SRC_NAT: u32 = 0x40;
pub const CS_DST_NAT: u32 = 0x80;

// `nw_frag` bits.
pub const FRAG_ANY: u8 = 0x01;
pub const FRAG_LATER: u8 = 0x02;

/// The VLAN "present" bit of `vlan_tci` (the CFI bit's position), as in Open vSwitch.
pub const VLAN_CFI: u16 = 0x1000;
pub const VLAN_VID_MASK: u16 = 0x0fff;
pub const VLAN_PCP_SHIFT: u32 = 13;

/// Values (or masks) of every field. See the module documentation for the layout.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub w: [u64; KEY_WORDS],
}

impl Default for FlowKey {
    fn default() -> Self {
        FlowKey::ZERO
    }
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (i, w) in self.w.iter().enumerate() {
            if *w != 0 {
                m.entry(&i, &format_args!("{w:#018x}"));
            }
        }
        m.finish()
    }
}

#[inline]
const fn low_mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

impl FlowKey {
    pub const ZERO: FlowKey = FlowKey { w: [0; KEY_WORDS] };
    pub const ONES: FlowKey = FlowKey {
        w: [u64::MAX; KEY_WORDS],
    };

    /// Reads a field (at most 128 bits) as an integer.
    #[inline]
    pub fn get(&self, loc: FieldLoc) -> u128 {
        match loc {
            FieldLoc::Word { word, shift, width } => {
                ((self.w[word as usize] >> shift) & low_mask(width as u32)) as u128
            }
            FieldLoc::Wide { hi } => {
                ((self.w[hi as usize] as u128) << 64) | self.w[hi as usize + 1] as u128
            }
        }
    }

    /// Writes a field; bits of `value` beyond the field's width are ignored.
    #[inline]
    pub fn set(&mut self, loc: FieldLoc, value: u128) {
        match loc {
            FieldLoc::Word { word, shift, width } => {
                let m = low_mask(width as u32) << shift;
                let w = &mut self.w[word as usize];
                *w = (*w & !m) | (((value as u64) << shift) & m);
            }
            FieldLoc::Wide { hi } => {
                self.w[hi as usize] = (value >> 64) as u64;
                self.w[hi as usize + 1] = value as u64;
            }
        }
    }

    /// Writes the bits of `value` selected by `mask`, leaving the others.
    #[inline]
    pub fn set_masked(&mut self, loc: FieldLoc, value: u128, mask: u128) {
        let old = self.get(loc);
        self.set(loc, (old & !mask) | (value & mask));
    }

    /// Sets every bit of a field (used on masks).
    #[inline]
    pub fn set_all(&mut self, loc: FieldLoc) {
        self.set(loc, u128::MAX);
    }

    /// `self & mask`, word by word.
    #[inline]
    pub fn and(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::ZERO;
        for i in 0..KEY_WORDS {
            out.w[i] = self.w[i] & mask.w[i];
        }
        out
    }

    /// `self |= other`, word by word (unions of masks).
    #[inline]
    pub fn or_assign(&mut self, other: &FlowKey) {
        for i in 0..KEY_WORDS {
            self.w[i] |= other.w[i];
        }
    }

    /// True when `(self & mask) == value` (value must already be masked).
    #[inline]
    pub fn matches(&self, value: &FlowKey, mask: &FlowKey) -> bool {
        let mut diff = 0u64;
        for i in 0..KEY_WORDS {
            diff |= (self.w[i] & mask.w[i]) ^ value.w[i];
        }
        diff == 0
    }

    pub fn is_zero(&self) -> bool {
        self.w.iter().all(|w| *w == 0)
    }

    // --- Named accessors for the fields the datapath reads on every frame. -------------------

    #[inline]
    pub fn in_port(&self) -> u32 {
        self.w[W_PORT] as u32
    }
    #[inline]
    pub fn set_in_port(&mut self, port: u32) {
        self.set(loc::IN_PORT, port as u128)
    }
    #[inline]
    pub fn recirc_id(&self) -> u32 {
        (self.w[W_PORT] >> 32) as u32
    }
    #[inline]
    pub fn dl_type(&self) -> u16 {
        (self.w[W_L2] >> 32) as u16
    }
    #[inline]
    pub fn vlan_tci(&self) -> u16 {
        (self.w[W_L2] >> 48) as u16
    }
    #[inline]
    pub fn nw_proto(&self) -> u8 {
        (self.w[W_NW] >> 56) as u8
    }
    #[inline]
    pub fn nw_frag(&self) -> u8 {
        (self.w[W_NW] >> 32) as u8
    }
    #[inline]
    pub fn ct_state(&self) -> u32 {
        self.w[W_CT_STATE] as u32
    }
    #[inline]
    pub fn reg(&self, i: usize) -> u32 {
        let w = self.w[W_XREG0 + i / 2];
        if i.is_multiple_of(2) {
            (w >> 32) as u32
        } else {
            w as u32
        }
    }
}

/// Locations of the fixed fields. Registers and tunnel metadata are computed by
/// [`crate::field::Field::loc`].
pub mod loc {
    use super::*;
    pub const IN_PORT: FieldLoc = FieldLoc::word(W_PORT, 0, 32);
    pub const RECIRC_ID: FieldLoc = FieldLoc::word(W_PORT, 32, 32);
    pub const DP_HASH: FieldLoc = FieldLoc::word(W_MARK, 0, 32);
    pub const PKT_MARK: FieldLoc = FieldLoc::word(W_MARK, 32, 32);
    pub const METADATA: FieldLoc = FieldLoc::word(W_METADATA, 0, 64);
    pub const TUN_ID: FieldLoc = FieldLoc::word(W_TUN_ID, 0, 64);
    pub const TUN_SRC: FieldLoc = FieldLoc::word(W_TUN_ADDR, 32, 32);
    pub const TUN_DST: FieldLoc = FieldLoc::word(W_TUN_ADDR, 0, 32);
    pub const TUN_FLAGS: FieldLoc = FieldLoc::word(W_CT_STATE, 48, 16);
    pub const CT_ZONE: FieldLoc = FieldLoc::word(W_CT_STATE, 32, 16);
    pub const CT_STATE: FieldLoc = FieldLoc::word(W_CT_STATE, 0, 32);
    pub const CT_MARK: FieldLoc = FieldLoc::word(W_CT_MARK, 32, 32);
    pub const CONJ_ID: FieldLoc = FieldLoc::word(W_CT_MARK, 0, 32);
    pub const CT_LABEL: FieldLoc = FieldLoc::Wide {
        hi: W_CT_LABEL as u8,
    };
    pub const CT_NW_SRC: FieldLoc = FieldLoc::word(W_CT_NW, 32, 32);
    pub const CT_NW_DST: FieldLoc = FieldLoc::word(W_CT_NW, 0, 32);
    pub const CT_TP_SRC: FieldLoc = FieldLoc::word(W_CT_TP, 48, 16);
    pub const CT_TP_DST: FieldLoc = FieldLoc::word(W_CT_TP, 32, 16);
    pub const CT_NW_PROTO: FieldLoc = FieldLoc::word(W_CT_TP, 24, 8);
    pub const DL_DST: FieldLoc = FieldLoc::word(W_DL_DST, 0, 48);
    pub const DL_SRC: FieldLoc = FieldLoc::word(W_DL_SRC, 0, 48);
    pub const VLAN_TCI: FieldLoc = FieldLoc::word(W_L2, 48, 16);
    pub const DL_TYPE: FieldLoc = FieldLoc::word(W_L2, 32, 16);
    pub const INNER_VLAN_TCI: FieldLoc = FieldLoc::word(W_L2, 16, 16);
    pub const NW_SRC: FieldLoc = FieldLoc::word(W_NW_ADDR, 32, 32);
    pub const NW_DST: FieldLoc = FieldLoc::word(W_NW_ADDR, 0, 32);
    pub const NW_PROTO: FieldLoc = FieldLoc::word(W_NW, 56, 8);
    /// The whole TOS byte (DSCP in bits 2..8, ECN in bits 0..2).
    pub const NW_TOS: FieldLoc = FieldLoc::word(W_NW, 48, 8);
    pub const IP_DSCP: FieldLoc = FieldLoc::word(W_NW, 50, 6);
    pub const NW_ECN: FieldLoc = FieldLoc::word(W_NW, 48, 2);
    pub const NW_TTL: FieldLoc = FieldLoc::word(W_NW, 40, 8);
    pub const NW_FRAG: FieldLoc = FieldLoc::word(W_NW, 32, 8);
    pub const IPV6_LABEL: FieldLoc = FieldLoc::word(W_NW, 0, 20);
    pub const TP_SRC: FieldLoc = FieldLoc::word(W_TP, 48, 16);
    pub const TP_DST: FieldLoc = FieldLoc::word(W_TP, 32, 16);
    pub const ICMP_TYPE: FieldLoc = FieldLoc::word(W_TP, 48, 8);
    pub const ICMP_CODE: FieldLoc = FieldLoc::word(W_TP, 32, 8);
    pub const TCP_FLAGS: FieldLoc = FieldLoc::word(W_TP, 16, 12);
    pub const ARP_OP: FieldLoc = FieldLoc::word(W_TP, 0, 16);
    pub const ARP_SHA: FieldLoc = FieldLoc::word(W_ARP_SHA, 0, 48);
    pub const ARP_THA: FieldLoc = FieldLoc::word(W_ARP_THA, 0, 48);
    pub const IPV6_SRC: FieldLoc = FieldLoc::Wide {
        hi: W_IPV6_SRC as u8,
    };
    pub const IPV6_DST: FieldLoc = FieldLoc::Wide {
        hi: W_IPV6_DST as u8,
    };
    pub const ND_TARGET: FieldLoc = FieldLoc::Wide {
        hi: W_ND_TARGET as u8,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_roundtrip_and_neighbours_untouched() {
        let mut k = FlowKey::ZERO;
        k.set(loc::VLAN_TCI, 0x1000 | 2207);
        k.set(loc::DL_TYPE, 0x0800);
        assert_eq!(k.get(loc::VLAN_TCI), 0x1000 | 2207);
        assert_eq!(k.get(loc::DL_TYPE), 0x0800);
        k.set(loc::DL_TYPE, 0x1_86dd); // too wide: truncated to 16 bits
        assert_eq!(k.dl_type(), 0x86dd);
        assert_eq!(k.vlan_tci(), 0x1000 | 2207);
        k.set(loc::IPV6_SRC, 0x2001_0db8 << 96 | 1);
        assert_eq!(k.get(loc::IPV6_SRC), 0x2001_0db8 << 96 | 1);
    }

    #[test]
    fn matches_uses_mask() {
        let mut k = FlowKey::ZERO;
        k.set(loc::NW_SRC, 0xc0a8_0a05);
        let mut mask = FlowKey::ZERO;
        mask.set(loc::NW_SRC, 0xffff_ff00);
        let mut val = FlowKey::ZERO;
        val.set(loc::NW_SRC, 0xc0a8_0a00);
        assert!(k.matches(&val, &mask));
        val.set(loc::NW_SRC, 0xc0a8_0b00);
        assert!(!k.matches(&val, &mask));
    }
}
