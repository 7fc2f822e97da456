//! The flow language: the syntax `ovs-ofctl add-flows` reads and `ovs-ofctl dump-flows` prints.
//!
//! This module owns the parsed form of a flow ([`FlowSpec`]: match, actions and flow fields), the
//! parser ([`parse`]) that turns text into it with `line:col` errors, and the formatter
//! ([`format`](mod@format)) that prints it back in Open vSwitch's normalised form. It does not
//! execute anything (that is [`crate::xlate`]) and does no I/O: callers hand it text.

pub mod error;
pub mod format;
pub mod names;
pub mod parse;

pub use error::FlowParseError;

use crate::field::{Field, SubField};
use crate::key::FlowKey;

/// OpenFlow port numbers with special meanings (Open vSwitch's OpenFlow 1.0 numbering, which
/// `dump-flows` prints by name).
pub mod ofp_port {
    pub const MAX: u32 = 0xff00;
    pub const IN_PORT: u32 = 0xfff8;
    pub const TABLE: u32 = 0xfff9;
    pub const NORMAL: u32 = 0xfffa;
    pub const FLOOD: u32 = 0xfffb;
    pub const ALL: u32 = 0xfffc;
    pub const CONTROLLER: u32 = 0xfffd;
    pub const LOCAL: u32 = 0xfffe;
    pub const NONE: u32 = 0xffff;
}

/// Number of flow tables per bridge (0..=254).
pub const N_TABLES: usize = 255;

/// A match: values and masks over the flow key. `value` is always pre-masked
/// (`value & mask == value`), so two equal matches compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Match {
    pub value: FlowKey,
    pub mask: FlowKey,
}

impl Match {
    /// Matches every frame.
    pub const CATCH_ALL: Match = Match {
        value: FlowKey::ZERO,
        mask: FlowKey::ZERO,
    };

    pub fn matches(&self, k: &FlowKey) -> bool {
        k.matches(&self.value, &self.mask)
    }
}

/// Where `output`-like actions send a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    /// An OpenFlow port number (names are resolved at parse time).
    Port(u32),
    /// `in_port`: back out of the port the frame came in on.
    InPort,
    Normal,
    Flood,
    All,
    Local,
    Controller(ControllerSpec),
    /// `output:FIELD[range]`: the port number read from a field at run time.
    Field(SubField),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ControllerSpec {
    pub max_len: Option<u16>,
    /// `reason=` (`action`, `no_match`, `invalid_ttl`, ...); `None` means `action`.
    pub reason: Option<String>,
    pub userdata: Vec<u8>,
    pub controller_id: Option<u16>,
    pub pause: bool,
}

/// `ct(...)`'s zone: a constant or read from a field range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtZone {
    Imm(u16),
    Field(SubField),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    Src,
    Dst,
}

/// `nat(...)` inside `ct(...)`. `kind == None` is bare `nat`: apply the connection's existing NAT
/// (in either direction), which is what the seed's un-SNAT in table 13 relies on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NatSpec {
    pub kind: Option<NatKind>,
    /// Address range, inclusive. IPv4 addresses are held as IPv4-mapped values in the low 32
    /// bits; IPv6 as full 128-bit values.
    pub addr_min: Option<std::net::IpAddr>,
    pub addr_max: Option<std::net::IpAddr>,
    /// Port range, inclusive.
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub random: bool,
    pub hash: bool,
    pub persistent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtAction {
    pub commit: bool,
    pub force: bool,
    pub zone: CtZone,
    /// `table=N`: recirculate and resume the pipeline in table N with `ct_*` fields set.
    pub table: Option<u8>,
    pub nat: Option<NatSpec>,
    /// `exec(...)`: only `set_field`/`load` to `ct_mark` and `ct_label` are allowed, as in OVS.
    pub exec: Vec<Action>,
    /// `alg=ftp` / `alg=tftp`.
    pub alg: Option<String>,
}

/// A `learn(...)` action, parsed and kept so files that contain it load and print; xvs does not
/// execute it yet (loading says so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnSpec {
    /// The text between the parentheses, normalised by the formatter's rules.
    pub text: String,
}

/// One action, as parsed. Variants keep the distinctions `dump-flows` prints (`mod_dl_src`
/// versus `set_field`), so a flow prints back the way Open vSwitch prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Output {
        target: OutputTarget,
        max_len: Option<u16>,
    },
    /// `resubmit(port,table[,ct])` / `resubmit:port`. `port: None` means `in_port` (the
    /// frame's current in_port), `table: None` means the current table.
    Resubmit {
        port: Option<u32>,
        table: Option<u8>,
        ct: bool,
    },
    GotoTable(u8),
    /// `load:V->FIELD[range]`.
    Load {
        value: u128,
        dst: SubField,
    },
    /// `set_field:V[/M]->FIELD`.
    SetField {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// `move:SRC[range]->DST[range]` (equal widths).
    Move {
        src: SubField,
        dst: SubField,
    },
    SetVlanVid(u16),
    SetVlanPcp(u8),
    /// `strip_vlan` / `pop_vlan` (the flag keeps the spelling for printing).
    StripVlan {
        pop_vlan_spelling: bool,
    },
    PushVlan(u16),
    SetDlSrc([u8; 6]),
    SetDlDst([u8; 6]),
    SetNwSrc(std::net::Ipv4Addr),
    SetNwDst(std::net::Ipv4Addr),
    SetNwTos(u8),
    SetNwEcn(u8),
    SetNwTtl(u8),
    SetTpSrc(u16),
    SetTpDst(u16),
    /// `dec_ttl` / `dec_ttl(id,...)` (controller ids kept for printing).
    DecTtl {
        controller_ids: Vec<u16>,
    },
    /// `set_tunnel:V` (32-bit form) / `set_tunnel64:V`.
    SetTunnel {
        value: u64,
        wide: bool,
    },
    SetQueue(u32),
    PopQueue,
    Ct(CtAction),
    CtClear,
    /// `conjunction(id, k/n)`: `clause` is k (1-based), `n_clauses` is n.
    Conjunction {
        id: u32,
        clause: u8,
        n_clauses: u8,
    },
    Clone(Vec<Action>),
    Note(Vec<u8>),
    WriteMetadata {
        value: u64,
        mask: u64,
    },
    /// `check_pkt_larger(LEN)->DST`: sets the 1-bit `dst` to whether the frame is longer.
    CheckPktLarger {
        len: u16,
        dst: SubField,
    },
    Learn(LearnSpec),
    /// `exit`: stop running actions (the actions already run keep their effect).
    Exit,
}

/// `send_flow_rem`, `check_overlap` and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowFlags {
    pub send_flow_rem: bool,
    pub check_overlap: bool,
    pub reset_counts: bool,
    pub no_packet_counts: bool,
    pub no_byte_counts: bool,
}

/// One flow as written on a line of a flow file (or a `del-flows` / `mod-flows` argument).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// `cookie=V/M` (only meaningful for modify and delete); 0 when no mask was given.
    pub cookie_mask: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub importance: u16,
    pub flags: FlowFlags,
    pub matches: Match,
    pub actions: Vec<Action>,
    /// `out_port=` filter (delete/modify), `None` when absent.
    pub out_port: Option<u32>,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            cookie_mask: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            importance: 0,
            flags: FlowFlags::default(),
            matches: Match::CATCH_ALL,
            actions: Vec::new(),
            out_port: None,
        }
    }
}

pub const DEFAULT_PRIORITY: u16 = 32768;

/// Port names known to the parser and printer (`in_port=tap2`, `output:"patch-brAtlas-t"`).
/// OpenFlow port names are cut to 15 characters, as in Open vSwitch.
#[derive(Clone, Debug, Default)]
pub struct PortNames {
    by_name: std::collections::HashMap<String, u32>,
    by_number: std::collections::BTreeMap<u32, String>,
}

/// Longest OpenFlow port name (OFP_MAX_PORT_NAME_LEN - 1).
pub const MAX_PORT_NAME: usize = 15;

impl PortNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a port. The name is cut to 15 characters, like OpenFlow does, and both the full
    /// and the cut name resolve.
    pub fn insert(&mut self, name: &str, number: u32) {
        let cut: String = name.chars().take(MAX_PORT_NAME).collect();
        self.by_name.insert(name.to_string(), number);
        self.by_name.insert(cut.clone(), number);
        self.by_number.insert(number, cut);
    }

    pub fn number(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, number: u32) -> Option<&str> {
        self.by_number.get(&number).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_number.iter().map(|(n, s)| (*n, s.as_str()))
    }
}
