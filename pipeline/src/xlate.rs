//! Translation: walks a frame's flow key through the OpenFlow tables of one or more bridges and
//! produces the datapath actions ([`crate::odp`]) and the megaflow mask for the flow cache.
//!
//! This is where Open vSwitch's action semantics live: actions in order; `resubmit` and
//! `goto_table` within depth and count limits; registers and metadata per frame; `output` sends
//! the frame as it is at that point (pending header changes are committed first, so
//! `mod_vlan_vid:2207,output:1,strip_vlan` sends a tagged frame), output to the input port is
//! skipped unless `in_port` is named; patch ports continue the walk in the peer bridge; `ct(...)`
//! becomes a datapath `ct` and, with `table=N`, a recirculation whose frozen state resumes the
//! walk in table N.
//!
//! Tunnel ports are native tunnelling as Open vSwitch does it: output to a Geneve port commits
//! the frame, pushes the outer headers built here (`tnl_push`) and continues the walk in the
//! underlay bridge as if the outer frame came from its LOCAL port, so the underlay's flows (its
//! NORMAL learning) pick the uplink. Going the other way, a Geneve frame for one of the switch's
//! underlay addresses that the underlay bridge sends to LOCAL becomes `tnl_pop`, and the inner
//! frame enters the overlay bridge from the tunnel port with the tunnel fields set. ARP requests
//! for those addresses are answered here too: the switch owns them.
//!
//! Translation reads tables and ports through [`XlateEnv`], which the switch provides; it never
//! touches a frame (execution does) and never blocks.

use crate::ct::Nanos;
use crate::field::{self, Field, SubField};
use crate::flow::{ofp_port, Action, CtZone, FlowSpec, OutputTarget};
use crate::key::{self, loc, FlowKey, KEY_WORDS, PACKET_WORD};
use crate::odp::{
    DropReason, EmitFrame, FieldSet, OdpAction, OdpCt, TlvMap, TunnelHeader, TunnelOpt, TunnelRx,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open vSwitch's limits: resubmit nesting depth and resubmits per translation.
pub const MAX_DEPTH: u32 = 64;
pub const MAX_RESUBMITS: u32 = 4096;

/// Index of a bridge within one datapath.
pub type BridgeId = u16;

/// A flow as translation sees it: its spec, and counters to credit.
pub trait RuleHandle: Send + Sync {
    fn spec(&self) -> &FlowSpec;
    /// Credits `packets` frames of `bytes` total to the flow at time `now`.
    fn add_stats(&self, packets: u64, bytes: u64, now: Nanos);
}

pub type RuleRef = Arc<dyn RuleHandle>;

/// Virtual datapath port numbers of tunnel ports start here (a decapsulated frame carries one
/// as its `in_port`; nothing transmits on them).
pub const TNL_VPORT_BASE: u32 = 0x4000_0000;

/// Capture points of patch ports ([`XlateEnv::patch_capture`]) are numbered from here, in the
/// datapath port number space, so that action printers can name them like ports.
pub const CAPTURE_POINT_BASE: u32 = 0x2000_0000;

/// A Geneve tunnel port as translation needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelPortInfo {
    /// Its virtual datapath port (>= [`TNL_VPORT_BASE`]).
    pub vport: u32,
    pub remote_ip: u32,
    /// The switch's underlay address the tunnel uses.
    pub local_ip: u32,
    /// A fixed VNI; `None` takes it from `tun_id` (key=flow).
    pub key: Option<u32>,
    pub csum: bool,
    pub dst_port: u16,
    /// The bridge the encapsulated frame continues in (from its LOCAL port).
    pub underlay: BridgeId,
}

/// What an OpenFlow port number of a bridge leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A port the datapath transmits on, with its datapath port number.
    Datapath(u32),
    /// A patch port: frames sent here enter `peer_bridge` on its port `peer_port`.
    Patch {
        peer_bridge: BridgeId,
        peer_port: u32,
    },
    /// A Geneve tunnel port: frames sent here are encapsulated and continue in the underlay.
    Tunnel(TunnelPortInfo),
}

/// One output decided by the NORMAL action: the port and the VLAN TCI the frame must carry
/// there (Open vSwitch form, with the 0x1000 present bit; 0 for untagged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalOutput {
    pub ofport: u32,
    pub vlan_tci: u16,
}

/// The switch's side of translation: flow tables, ports and MAC learning.
pub trait XlateEnv {
    /// The bridge and OpenFlow port a datapath port belongs to.
    fn ingress(&self, dp_port: u32) -> Option<(BridgeId, u32)>;
    /// Highest-priority flow of `table` in `bridge` matching `key`; ORs into `wc` the bits the
    /// answer depended on.
    fn lookup(
        &self,
        bridge: BridgeId,
        table: u8,
        key: &FlowKey,
        wc: &mut FlowKey,
    ) -> Option<RuleRef>;
    fn port(&self, bridge: BridgeId, ofport: u32) -> Option<PortKind>;
    /// Every port of the bridge in OpenFlow port order (for FLOOD and ALL), LOCAL included.
    fn ports(&self, bridge: BridgeId, out: &mut Vec<u32>);
    /// The NORMAL action: learn the source, decide the outputs. Marks in `wc` what it read.
    fn normal(
        &self,
        bridge: BridgeId,
        flow: &FlowKey,
        wc: &mut FlowKey,
        now: Nanos,
        out: &mut Vec<NormalOutput>,
    );
    /// Names, for trace.
    fn bridge_name(&self, bridge: BridgeId) -> String;
    fn port_name(&self, bridge: BridgeId, ofport: u32) -> Option<String>;

    // Tunnelling. The defaults describe a switch without tunnels.

    /// Whether some tunnel uses `bridge` as its underlay (where frames to LOCAL are checked for
    /// the switch's own addresses).
    fn is_underlay(&self, _bridge: BridgeId) -> bool {
        false
    }
    /// The switch's MAC for its underlay address `ip` on `bridge`, if it owns that address.
    fn local_endpoint(&self, _bridge: BridgeId, _ip: u32) -> Option<[u8; 6]> {
        None
    }
    /// Appends the tunnel ports that take Geneve frames from `remote` to `local`.
    fn tunnel_rx(&self, _underlay: BridgeId, _local: u32, _remote: u32, _out: &mut Vec<TunnelRx>) {}
    /// The next-hop MAC for `ip` on `underlay`, if known.
    fn neighbor(&self, _underlay: BridgeId, _ip: u32) -> Option<[u8; 6]> {
        None
    }
    /// The Geneve option mappings of `bridge`.
    fn tlv_map(&self, _bridge: BridgeId) -> &[TlvMap] {
        &[]
    }
    /// The largest IP datagram datapath port `dp` sends.
    fn dp_mtu(&self, _dp: u32) -> u32 {
        1500
    }

    /// The capture point of patch port `ofport` of `bridge` while a capture on it runs (patch
    /// ports have no I/O to capture on: frames are copied where the walk crosses them).
    fn patch_capture(&self, _bridge: BridgeId, _ofport: u32) -> Option<u32> {
        None
    }
}

/// The state a recirculation resumes from: where in which bridge, and the metadata the walk had.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrozenState {
    pub bridge: BridgeId,
    pub table: u8,
    /// The flow's metadata fields at the freeze (registers, metadata, in_port as OpenFlow port,
    /// tunnel fields, pkt_mark). The `ct_*` fields come from the tracker instead.
    pub meta: FlowKey,
}

/// Recirculation ids and their frozen states, shared by every datapath thread of a switch.
/// Ids are handed out once per distinct state and kept while the switch runs.
#[derive(Default)]
pub struct RecircTable {
    inner: Mutex<RecircInner>,
}

#[derive(Default)]
struct RecircInner {
    by_state: HashMap<FrozenState, u32>,
    by_id: HashMap<u32, Arc<FrozenState>>,
    next: u32,
}

impl RecircTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn id_for(&self, state: FrozenState) -> u32 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = g.by_state.get(&state) {
            return *id;
        }
        g.next += 1;
        let id = g.next;
        g.by_id.insert(id, Arc::new(state.clone()));
        g.by_state.insert(state, id);
        id
    }

    pub fn get(&self, id: u32) -> Option<Arc<FrozenState>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.by_id.get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The metadata fields a recirculation restores.
const FROZEN_FIELDS: [key::FieldLoc; 8] = [
    loc::IN_PORT,
    loc::PKT_MARK,
    loc::METADATA,
    loc::TUN_ID,
    loc::TUN_SRC,
    loc::TUN_DST,
    loc::TUN_FLAGS,
    loc::DP_HASH,
];

/// One step of a translation, recorded for `trace`.
#[derive(Clone)]
pub enum TraceEvent {
    Bridge {
        depth: u32,
        name: String,
    },
    /// A table lookup and the flow that matched (`None`: no match).
    Lookup {
        depth: u32,
        table: u8,
        rule: Option<RuleRef>,
    },
    Action {
        depth: u32,
        action: Action,
    },
    Note {
        depth: u32,
        text: String,
    },
}

/// The result of translating one flow key.
pub struct Translation {
    pub actions: Vec<OdpAction>,
    /// Megaflow mask: the key bits the result depended on.
    pub wc: FlowKey,
    /// Flows the walk went through (credited on every frame that uses this translation).
    pub rules: Vec<RuleRef>,
    /// Set when the translation failed as a whole (the frame must be dropped).
    pub error: Option<DropReason>,
    /// The logical flow at the end of the walk (for trace's "Final flow").
    pub final_flow: FlowKey,
}

/// Translates `key` (as it enters the datapath: `in_port` is a datapath port, `recirc_id` set
/// after a recirculation) into datapath actions.
pub fn translate(
    env: &dyn XlateEnv,
    recirc: &RecircTable,
    key: &FlowKey,
    now: Nanos,
    trace: Option<&mut Vec<TraceEvent>>,
) -> Translation {
    let mut wc = FlowKey::ZERO;
    // The datapath always matches these exactly.
    wc.set_all(loc::IN_PORT);
    wc.set_all(loc::RECIRC_ID);
    wc.set_all(loc::DL_TYPE);

    let mut flow = *key;
    let (bridge, table) = if key.recirc_id() == 0 {
        match env.ingress(key.in_port()) {
            Some((br, ofport)) => {
                flow.set(loc::IN_PORT, ofport as u128);
                (br, 0)
            }
            None => {
                return Translation {
                    actions: Vec::new(),
                    wc,
                    rules: Vec::new(),
                    error: Some(DropReason::NoOutput),
                    final_flow: flow,
                }
            }
        }
    } else {
        match recirc.get(key.recirc_id()) {
            Some(fz) => {
                for l in FROZEN_FIELDS {
                    flow.set(l, fz.meta.get(l));
                }
                for w in key::W_XREG0..key::W_XREG0 + 8 {
                    flow.w[w] = fz.meta.w[w];
                }
                for w in key::W_TUN_META..key::W_TUN_META + key::TUN_META_WORDS {
                    flow.w[w] = fz.meta.w[w];
                }
                (fz.bridge, fz.table)
            }
            None => {
                return Translation {
                    actions: Vec::new(),
                    wc,
                    rules: Vec::new(),
                    error: Some(DropReason::StaleRecirc),
                    final_flow: flow,
                }
            }
        }
    };
    // Translation starts with no recirculation id in the flow: tables of a recirculated walk
    // never match on it (Open vSwitch hides it too).
    flow.set(loc::RECIRC_ID, 0);

    let mut cx = Ctx {
        env,
        recirc,
        bridge,
        table,
        flow,
        base: flow,
        wc,
        written: FlowKey::ZERO,
        odp: Vec::new(),
        rules: Vec::new(),
        depth: 0,
        resubmits: 0,
        exit: false,
        error: None,
        now,
        trace,
        flow_tpid: [0x8100; 2],
        base_tpid: [0x8100; 2],
        scratch_ports: Vec::new(),
    };
    cx.note_bridge();
    cx.lookup_and_run(table);
    let error = cx.error;
    let actions = if error.is_some() {
        Vec::new()
    } else {
        let mut a = std::mem::take(&mut cx.odp);
        unwrap_trailing_tunnel(&mut a);
        a
    };
    // Written packet fields were committed with values compared against the frame's: the
    // decision depends on them, so the cache must match them.
    let mut wc = cx.wc;
    for w in PACKET_WORD..KEY_WORDS {
        wc.w[w] |= cx.written.w[w];
    }
    Translation {
        actions,
        wc,
        rules: cx.rules,
        error,
        final_flow: cx.flow,
    }
}

struct Ctx<'e, 't> {
    env: &'e dyn XlateEnv,
    recirc: &'e RecircTable,
    bridge: BridgeId,
    table: u8,
    /// The logical flow: what the actions see and change.
    flow: FlowKey,
    /// What the frame carries (the packet words as committed to datapath actions so far).
    base: FlowKey,
    wc: FlowKey,
    /// Packet-field bits any action wrote.
    written: FlowKey,
    odp: Vec<OdpAction>,
    rules: Vec<RuleRef>,
    depth: u32,
    resubmits: u32,
    exit: bool,
    error: Option<DropReason>,
    now: Nanos,
    trace: Option<&'t mut Vec<TraceEvent>>,
    /// TPID for the next VLAN push (`push_vlan:0x88a8` sets it).
    /// TPIDs of the flow's (outer, inner) tags and of the frame's, as far as translation knows
    /// them (tags the frame arrived with count as 0x8100).
    flow_tpid: [u16; 2],
    base_tpid: [u16; 2],
    scratch_ports: Vec<u32>,
}

/// What a branch of translation (`clone`, `check_pkt_larger`, a tunnel push) may change and
/// must give back: the flow, the frame's state as committed, written fields, `exit`, and the
/// tags' TPIDs.
#[derive(Clone, Copy)]
struct Saved {
    flow: FlowKey,
    base: FlowKey,
    written: FlowKey,
    exit: bool,
    flow_tpid: [u16; 2],
    base_tpid: [u16; 2],
}

impl Ctx<'_, '_> {
    fn save(&self) -> Saved {
        Saved {
            flow: self.flow,
            base: self.base,
            written: self.written,
            exit: self.exit,
            flow_tpid: self.flow_tpid,
            base_tpid: self.base_tpid,
        }
    }

    fn restore(&mut self, s: Saved) {
        self.flow = s.flow;
        self.base = s.base;
        self.written = s.written;
        self.exit = s.exit;
        self.flow_tpid = s.flow_tpid;
        self.base_tpid = s.base_tpid;
    }

    fn event(&mut self, e: impl FnOnce(u32) -> TraceEvent) {
        let depth = self.depth;
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(e(depth));
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        if self.trace.is_some() {
            let text = text.into();
            self.event(|depth| TraceEvent::Note { depth, text });
        }
    }

    fn note_bridge(&mut self) {
        if self.trace.is_some() {
            let name = self.env.bridge_name(self.bridge);
            self.event(|depth| TraceEvent::Bridge { depth, name });
        }
    }

    fn stopped(&self) -> bool {
        self.exit || self.error.is_some()
    }

    fn lookup_and_run(&mut self, table: u8) {
        let rule = self.lookup_rule(table);
        self.run_rule(table, rule);
    }

    fn lookup_rule(&mut self, table: u8) -> Option<RuleRef> {
        let rule = self
            .env
            .lookup(self.bridge, table, &self.flow, &mut self.wc);
        if self.trace.is_some() {
            let r2 = rule.clone();
            self.event(|depth| TraceEvent::Lookup {
                depth,
                table,
                rule: r2,
            });
        }
        rule
    }

    fn run_rule(&mut self, table: u8, rule: Option<RuleRef>) {
        let saved_table = self.table;
        self.table = table;
        if let Some(rule) = rule {
            self.run_actions(&rule.spec().actions);
            // Kept for crediting statistics; the order does not matter.
            self.rules.push(rule);
        }
        self.table = saved_table;
    }

    fn run_actions(&mut self, actions: &[Action]) {
        for (i, a) in actions.iter().enumerate() {
            if self.stopped() {
                return;
            }
            if self.trace.is_some() && !matches!(a, Action::Conjunction { .. }) {
                let action = a.clone();
                self.event(|depth| TraceEvent::Action { depth, action });
            }
            if let Action::CheckPktLarger { len, dst } = a {
                self.check_pkt_larger(*len, *dst, &actions[i + 1..]);
                return;
            }
            if let Action::DecTtl { .. } = a {
                // An expired TTL ends this action list only: a rule that resubmitted here
                // goes on with its own actions, as in Open vSwitch.
                if self.dec_ttl() {
                    return;
                }
                continue;
            }
            self.run_action(a);
        }
    }

    fn write_field(&mut self, sf: SubField, value: u128) {
        // Open vSwitch skips a write whose field the frame does not have.
        self.wc.set_all(loc::DL_TYPE);
        self.wc.set_all(loc::NW_PROTO);
        if !sf.field.prereq_met(&self.flow) {
            self.note(format!(
                "skipped: {} does not apply to this frame",
                sf.field.info().name
            ));
            return;
        }
        sf.write(&mut self.flow, value);
        sf.mark(&mut self.written);
    }

    fn run_action(&mut self, a: &Action) {
        match a {
            Action::Output { target, max_len: _ } => self.output_target(target),
            Action::Resubmit { port, table, ct } => self.resubmit(*port, *table, *ct),
            Action::GotoTable(t) => self.resubmit(None, Some(*t), false),
            Action::Load { value, dst } => self.write_field(*dst, *value),
            Action::SetField { field, value, mask } => {
                if let Some(_l) = field.loc() {
                    let sf = SubField::whole(*field);
                    let cur = sf.read(&self.flow);
                    self.write_field(sf, (cur & !mask) | (value & mask));
                }
            }
            Action::Move { src, dst } => {
                src.mark(&mut self.wc);
                let v = src.read(&self.flow);
                self.write_field(*dst, v);
            }
            Action::SetVlanVid(vid) => {
                let tci = self.vlan_for_write();
                self.set_vlan(
                    (tci & !key::VLAN_VID_MASK) | (vid & key::VLAN_VID_MASK) | key::VLAN_CFI,
                );
            }
            Action::SetVlanPcp(pcp) => {
                let tci = self.vlan_for_write();
                self.set_vlan(
                    (tci & 0x1fff) | ((*pcp as u16 & 7) << key::VLAN_PCP_SHIFT) | key::VLAN_CFI,
                );
            }
            Action::StripVlan { .. } => {
                self.wc.set_all(loc::VLAN_TCI);
                if self.flow.vlan_tci() & key::VLAN_CFI != 0 {
                    let inner = self.flow.get(loc::INNER_VLAN_TCI);
                    self.flow.set(loc::VLAN_TCI, inner);
                    self.flow.set(loc::INNER_VLAN_TCI, 0);
                    self.flow_tpid = [self.flow_tpid[1], 0x8100];
                    self.mark_vlan_written();
                }
            }
            Action::PushVlan(tpid) => {
                self.wc.set_all(loc::VLAN_TCI);
                let outer = self.flow.vlan_tci();
                self.flow.set(loc::INNER_VLAN_TCI, outer as u128);
                // The new tag starts as VID 0, PCP 0 (Open vSwitch does not copy the tag it
                // pushes in front of); mod_vlan_vid/pcp set it.
                self.flow.set(loc::VLAN_TCI, key::VLAN_CFI as u128);
                self.flow_tpid = [*tpid, self.flow_tpid[0]];
                self.mark_vlan_written();
            }
            Action::SetDlSrc(mac) => {
                self.write_field(SubField::whole(Field::DlSrc), mac_value(mac))
            }
            Action::SetDlDst(mac) => {
                self.write_field(SubField::whole(Field::DlDst), mac_value(mac))
            }
            Action::SetNwSrc(a) => self.write_ipv4(Field::NwSrc, u32::from(*a)),
            Action::SetNwDst(a) => self.write_ipv4(Field::NwDst, u32::from(*a)),
            Action::SetNwTos(tos) => self.write_ip(Field::IpDscp, (*tos >> 2) as u128),
            Action::SetNwEcn(ecn) => self.write_ip(Field::NwEcn, *ecn as u128),
            Action::SetNwTtl(ttl) => self.write_ip(Field::NwTtl, *ttl as u128),
            Action::SetTpSrc(p) => self.write_field(SubField::whole(Field::TpSrc), *p as u128),
            Action::SetTpDst(p) => self.write_field(SubField::whole(Field::TpDst), *p as u128),
            Action::DecTtl { .. } => {
                self.dec_ttl();
            }
            Action::SetTunnel { value, wide } => {
                let v = if *wide { *value } else { *value & 0xffff_ffff };
                self.flow.set(loc::TUN_ID, v as u128);
            }
            Action::SetQueue(_)
            | Action::PopQueue
            | Action::Note(_)
            | Action::Conjunction { .. } => {}
            Action::Ct(c) => self.conntrack(c),
            Action::CtClear => {
                for l in [loc::CT_STATE, loc::CT_ZONE, loc::CT_MARK, loc::CT_LABEL] {
                    self.flow.set(l, 0);
                }
                self.commit();
                self.odp.push(OdpAction::CtClear);
            }
            Action::Clone(sub) => self.clone_actions(sub),
            Action::WriteMetadata { value, mask } => {
                let m = self.flow.get(loc::METADATA) as u64;
                self.flow
                    .set(loc::METADATA, ((m & !mask) | (value & mask)) as u128);
            }
            Action::CheckPktLarger { .. } => {} // handled in run_actions (needs the rest of the list)
            Action::Learn(_) => self.note("learn is not executed by xvs"),
            Action::Exit => self.exit = true,
        }
    }

    fn write_ipv4(&mut self, f: Field, v: u32) {
        self.wc.set_all(loc::DL_TYPE);
        if self.flow.dl_type() == field::ETH_TYPE_IP {
            self.write_field(SubField::whole(f), v as u128);
        }
    }

    fn write_ip(&mut self, f: Field, v: u128) {
        self.wc.set_all(loc::DL_TYPE);
        let dl = self.flow.dl_type();
        if dl == field::ETH_TYPE_IP || dl == field::ETH_TYPE_IPV6 {
            self.write_field(SubField::whole(f), v);
        }
    }

    /// The current outer TCI before a VLAN field write (OpenFlow 1.0 semantics: writing the VID
    /// or PCP of an untagged frame pushes a tag with the other field zero).
    fn vlan_for_write(&mut self) -> u16 {
        self.wc.set_all(loc::VLAN_TCI);
        let tci = self.flow.vlan_tci();
        if tci & key::VLAN_CFI == 0 {
            // The write pushes an 802.1Q tag.
            self.flow_tpid[0] = 0x8100;
            0
        } else {
            tci
        }
    }

    fn set_vlan(&mut self, tci: u16) {
        self.flow.set(loc::VLAN_TCI, tci as u128);
        self.mark_vlan_written();
    }

    fn mark_vlan_written(&mut self) {
        self.written.set_all(loc::VLAN_TCI);
        self.written.set_all(loc::INNER_VLAN_TCI);
    }

    /// True when the TTL expired: the caller stops its action list.
    fn dec_ttl(&mut self) -> bool {
        self.wc.set_all(loc::DL_TYPE);
        let dl = self.flow.dl_type();
        if dl != field::ETH_TYPE_IP && dl != field::ETH_TYPE_IPV6 {
            return false;
        }
        self.wc.set_all(loc::NW_TTL);
        let ttl = self.flow.get(loc::NW_TTL) as u8;
        if ttl <= 1 {
            self.note(
                "TTL expired: the frame goes to the controller (xvs has none) and this action list stops",
            );
            self.commit();
            self.odp.push(OdpAction::Userspace("invalid_ttl"));
            return true;
        }
        self.flow.set(loc::NW_TTL, (ttl - 1) as u128);
        self.written.set_all(loc::NW_TTL);
        false
    }

    fn resubmit(&mut self, port: Option<u32>, table: Option<u8>, ct: bool) {
        if self.depth >= MAX_DEPTH {
            self.note(format!(
                "resubmit depth exceeds {MAX_DEPTH}: the frame is dropped"
            ));
            self.error = Some(DropReason::ResubmitLimit);
            return;
        }
        self.resubmits += 1;
        if self.resubmits > MAX_RESUBMITS {
            self.note(format!(
                "more than {MAX_RESUBMITS} resubmits: the frame is dropped"
            ));
            self.error = Some(DropReason::ResubmitLimit);
            return;
        }
        // As in Open vSwitch, the resubmit's port and the ct tuple only steer the lookup: the
        // rule found runs with the frame's own in_port (so IN_PORT and NORMAL see where the
        // frame came from) and its own addresses and ports.
        let saved = self.flow;
        if let Some(p) = port {
            self.flow.set(loc::IN_PORT, p as u128);
        }
        let table = table.unwrap_or(self.table);
        self.depth += 1;
        if ct && self.flow.ct_state() & key::CS_TRACKED != 0 {
            // Look up with the connection's original tuple in place of the frame's.
            self.wc.set_all(loc::CT_STATE);
            for (from, to) in [
                (loc::CT_NW_SRC, loc::NW_SRC),
                (loc::CT_NW_DST, loc::NW_DST),
                (loc::CT_NW_PROTO, loc::NW_PROTO),
                (loc::CT_TP_SRC, loc::TP_SRC),
                (loc::CT_TP_DST, loc::TP_DST),
            ] {
                let v = self.flow.get(from);
                self.flow.set(to, v);
            }
        }
        let rule = self.lookup_rule(table);
        for l in [
            loc::IN_PORT,
            loc::NW_SRC,
            loc::NW_DST,
            loc::NW_PROTO,
            loc::TP_SRC,
            loc::TP_DST,
        ] {
            self.flow.set(l, saved.get(l));
        }
        self.run_rule(table, rule);
        self.depth -= 1;
    }

    /// Makes the frame carry the flow's packet fields: VLAN pushes/pops, then field rewrites.
    fn commit(&mut self) {
        let (have_o, have_i) = (
            self.base.vlan_tci(),
            self.base.get(loc::INNER_VLAN_TCI) as u16,
        );
        let (want_o, want_i) = (
            self.flow.vlan_tci(),
            self.flow.get(loc::INNER_VLAN_TCI) as u16,
        );
        if (have_o, have_i) != (want_o, want_i) || self.base_tpid != self.flow_tpid {
            let present = |t: u16| t & key::VLAN_CFI != 0;
            let wire = |t: u16| t & !key::VLAN_CFI;
            let [tpid_o, tpid_i] = self.flow_tpid;
            if present(have_o)
                && present(want_o)
                && have_i == want_i
                && self.base_tpid == self.flow_tpid
            {
                self.odp.push(OdpAction::SetVlanTci(wire(want_o)));
            } else if want_i == have_o
                && present(want_o)
                && !present(have_i)
                && tpid_i == self.base_tpid[0]
            {
                // A push on top of what the frame has.
                self.odp.push(OdpAction::PushVlan {
                    tpid: tpid_o,
                    tci: wire(want_o),
                });
            } else if have_i == want_o && !present(want_i) && self.base_tpid[1] == tpid_o {
                self.odp.push(OdpAction::PopVlan);
            } else {
                if present(have_o) {
                    self.odp.push(OdpAction::PopVlan);
                }
                if present(have_i) {
                    self.odp.push(OdpAction::PopVlan);
                }
                if present(want_i) {
                    self.odp.push(OdpAction::PushVlan {
                        tpid: tpid_i,
                        tci: wire(want_i),
                    });
                }
                if present(want_o) {
                    self.odp.push(OdpAction::PushVlan {
                        tpid: tpid_o,
                        tci: wire(want_o),
                    });
                }
            }
            self.base_tpid = self.flow_tpid;
            self.base.set(loc::VLAN_TCI, want_o as u128);
            self.base.set(loc::INNER_VLAN_TCI, want_i as u128);
        }
        let (mut value, mut mask) = (FlowKey::ZERO, FlowKey::ZERO);
        let mut any = false;
        for w in PACKET_WORD..KEY_WORDS {
            // Whole written fields, not just the differing bits, so the action reads (and
            // prints) as the values the frame gets.
            let m = if self.written.w[w] & (self.flow.w[w] ^ self.base.w[w]) != 0 {
                self.written.w[w]
            } else {
                0
            };
            if w == key::W_L2 {
                continue; // VLAN handled above; dl_type is never written
            }
            if m != 0 {
                any = true;
                mask.w[w] = m;
                value.w[w] = self.flow.w[w] & m;
                self.base.w[w] = (self.base.w[w] & !m) | (self.flow.w[w] & m);
            }
        }
        if any {
            // Keep dl_type and nw_proto in the value so the datapath prints the right headers.
            value.set(loc::DL_TYPE, self.flow.dl_type() as u128);
            value.set(loc::NW_PROTO, self.flow.nw_proto() as u128);
            self.odp
                .push(OdpAction::SetFields(Box::new(FieldSet::new(value, mask))));
        }
    }

    fn output_target(&mut self, target: &OutputTarget) {
        let in_port = self.flow.in_port();
        match target {
            OutputTarget::Port(p) => self.output_port(*p, false),
            OutputTarget::InPort => self.output_port(in_port, true),
            OutputTarget::Local => self.output_port(ofp_port::LOCAL, false),
            OutputTarget::Field(sf) => {
                sf.mark(&mut self.wc);
                let p = sf.read(&self.flow) as u32;
                self.output_port(p, false);
            }
            OutputTarget::Flood | OutputTarget::All => {
                let mut ports = std::mem::take(&mut self.scratch_ports);
                ports.clear();
                self.env.ports(self.bridge, &mut ports);
                for &p in &ports {
                    if p != in_port {
                        self.output_port(p, false);
                    }
                }
                self.scratch_ports = ports;
            }
            OutputTarget::Normal => self.normal(),
            OutputTarget::Controller(_) => {
                self.commit();
                self.odp.push(OdpAction::Userspace("controller"));
            }
        }
    }

    fn output_port(&mut self, port: u32, allow_in_port: bool) {
        if port == self.flow.in_port() && !allow_in_port {
            self.note("skipping output to input port");
            return;
        }
        if port == ofp_port::LOCAL && self.env.is_underlay(self.bridge) && self.local_intercept() {
            return;
        }
        match self.env.port(self.bridge, port) {
            Some(PortKind::Datapath(dp)) => {
                self.commit();
                self.odp.push(OdpAction::Output(dp));
            }
            Some(PortKind::Patch {
                peer_bridge,
                peer_port,
            }) => self.patch(port, peer_bridge, peer_port),
            Some(PortKind::Tunnel(t)) => self.tunnel_output(&t),
            None => self.note(format!("output to port {port}: no such port, nothing sent")),
        }
    }

    /// Reads `l` for a decision: the cache must match the bits the frame brought (bits written
    /// during this walk are constants of the translation).
    fn read_marked(&mut self, l: key::FieldLoc) -> u128 {
        let mut m = FlowKey::ZERO;
        m.set_all(l);
        for w in 0..KEY_WORDS {
            self.wc.w[w] |= m.w[w] & !self.written.w[w];
        }
        self.flow.get(l)
    }

    /// Frames for the switch's own underlay addresses that reach LOCAL: Geneve frames are
    /// decapsulated, ARP requests answered. Returns whether the frame was taken.
    fn local_intercept(&mut self) -> bool {
        let dl = self.read_marked(loc::DL_TYPE) as u16;
        if dl == field::ETH_TYPE_ARP {
            if self.read_marked(loc::ARP_OP) != 1 {
                return false;
            }
            let tpa = self.read_marked(loc::NW_DST) as u32;
            if let Some(mac) = self.env.local_endpoint(self.bridge, tpa) {
                self.arp_reply(mac);
                return true;
            }
        } else if dl == field::ETH_TYPE_IP {
            if self.read_marked(loc::NW_PROTO) as u8 != field::IPPROTO_UDP
                || self.read_marked(loc::NW_FRAG) != 0
            {
                return false;
            }
            let dst = self.read_marked(loc::NW_DST) as u32;
            if self.read_marked(loc::TP_DST) as u16 != crate::wire::geneve::UDP_PORT
                || self.env.local_endpoint(self.bridge, dst).is_none()
            {
                return false;
            }
            self.tunnel_pop(dst);
            return true;
        }
        false
    }

    /// Turns the frame into the answer to an ARP request for the switch's address and sends it
    /// back through this bridge from LOCAL.
    fn arp_reply(&mut self, mac: [u8; 6]) {
        let sha = self.read_marked(loc::ARP_SHA);
        let spa = self.read_marked(loc::NW_SRC);
        let tpa = self.flow.get(loc::NW_DST);
        self.note(format!(
            "ARP request for {}: answered with {}",
            std::net::Ipv4Addr::from(tpa as u32),
            crate::odp::fmt_mac(&mac)
        ));
        let saved = self.save();
        let outer = std::mem::take(&mut self.odp);
        for w in 0..PACKET_WORD {
            self.flow.w[w] = 0;
        }
        self.flow.set(loc::IN_PORT, ofp_port::LOCAL as u128);
        let me = mac_value(&mac);
        for (l, v) in [
            (loc::DL_DST, sha),
            (loc::DL_SRC, me),
            (loc::ARP_OP, 2),
            (loc::ARP_SHA, me),
            (loc::ARP_THA, sha),
            (loc::NW_SRC, tpa),
            (loc::NW_DST, spa),
        ] {
            self.flow.set(l, v);
            self.written.set_all(l);
        }
        self.depth += 1;
        self.lookup_and_run(0);
        self.depth -= 1;
        let inner = std::mem::replace(&mut self.odp, outer);
        self.restore(saved);
        if !inner.is_empty() {
            self.odp.push(OdpAction::Clone(inner));
        }
    }

    /// A Geneve frame addressed to `local`: the tunnel port is chosen by the outer source.
    fn tunnel_pop(&mut self, local: u32) {
        let remote = self.read_marked(loc::NW_SRC) as u32;
        let mut rx = Vec::new();
        self.env.tunnel_rx(self.bridge, local, remote, &mut rx);
        self.commit();
        if rx.is_empty() {
            self.note(format!(
                "Geneve frame from {}: no tunnel port has that remote_ip, dropped",
                std::net::Ipv4Addr::from(remote)
            ));
            self.odp.push(OdpAction::Clone(vec![OdpAction::Drop(
                DropReason::TunnelUnknownRemote,
            )]));
            return;
        }
        self.note(format!(
            "Geneve frame from {}: decapsulated, continues from the tunnel port",
            std::net::Ipv4Addr::from(remote)
        ));
        self.odp.push(OdpAction::Clone(vec![OdpAction::TunnelPop(
            rx.into_boxed_slice(),
        )]));
    }

    /// Output to a Geneve port: push the outer headers and continue in the underlay bridge.
    fn tunnel_output(&mut self, t: &TunnelPortInfo) {
        if self.depth >= MAX_DEPTH {
            self.error = Some(DropReason::ResubmitLimit);
            return;
        }
        self.commit();
        let env = self.env;
        let vni = match t.key {
            Some(k) => k,
            None => (self.read_marked(loc::TUN_ID) as u32) & 0xff_ffff,
        };
        let mut options = Vec::new();
        for m in env.tlv_map(self.bridge) {
            let Some(l) = Field::TunMetadata(m.field).loc() else {
                continue;
            };
            // Open vSwitch sends an option when the flows set its field; xvs has no presence
            // bits, so a field written in this walk or holding a non-zero value is present.
            let written = self.written.get(l) != 0;
            let v = self.read_marked(l) as u32;
            if written || v != 0 {
                options.push(TunnelOpt {
                    class: m.class,
                    typ: m.typ,
                    data: v.to_be_bytes(),
                });
            }
        }
        let Some(my_mac) = env.local_endpoint(t.underlay, t.local_ip) else {
            self.note("tunnel: the switch does not own its local_ip on the underlay, dropped");
            self.odp.push(OdpAction::Clone(vec![OdpAction::Drop(
                DropReason::TunnelNoNeighbor,
            )]));
            return;
        };
        let remote = std::net::Ipv4Addr::from(t.remote_ip);
        let Some(nh_mac) = env.neighbor(t.underlay, t.remote_ip) else {
            self.note(format!(
                "tunnel: no next hop known for {remote}: ARP request sent, frame dropped"
            ));
            let frame = crate::compose::PacketBuilder::arp_request(
                my_mac,
                std::net::Ipv4Addr::from(t.local_ip),
                remote,
            )
            .build();
            let mut k = FlowKey::ZERO;
            crate::extract::extract(&frame, &mut k);
            let actions = self.underlay_walk(t.underlay, k, None);
            self.odp.push(OdpAction::Clone(vec![
                OdpAction::Emit(Box::new(EmitFrame {
                    what: format!("arp(tip={remote})"),
                    frame,
                    actions,
                })),
                OdpAction::Drop(DropReason::TunnelNoNeighbor),
            ]));
            return;
        };
        let hdr = TunnelHeader {
            tnl_port: t.vport,
            eth_dst: nh_mac,
            eth_src: my_mac,
            ip_src: t.local_ip,
            ip_dst: t.remote_ip,
            tos: 0,
            ttl: 64,
            df: true,
            dst_port: t.dst_port,
            vni,
            csum: t.csum,
            options,
            mtu: u32::MAX,
            out_port: None,
        };
        let mut outer = FlowKey::ZERO;
        for (l, v) in [
            (loc::DL_DST, mac_value(&nh_mac)),
            (loc::DL_SRC, mac_value(&my_mac)),
            (loc::DL_TYPE, field::ETH_TYPE_IP as u128),
            (loc::NW_SRC, t.local_ip as u128),
            (loc::NW_DST, t.remote_ip as u128),
            (loc::NW_PROTO, field::IPPROTO_UDP as u128),
            (loc::NW_TTL, 64),
            (loc::TP_DST, t.dst_port as u128),
        ] {
            outer.set(l, v);
        }
        let mut actions = self.underlay_walk(t.underlay, outer, Some(hdr));
        // The MTU that matters is the smallest of the ports the walk sends to.
        let mut mtu = u32::MAX;
        let mut first = None;
        visit_outputs(&actions, &mut |p| {
            mtu = mtu.min(env.dp_mtu(p));
            first.get_or_insert(p);
        });
        if let Some(OdpAction::TunnelPush(h)) = actions.first_mut() {
            h.mtu = mtu;
            h.out_port = first;
        }
        self.odp.push(OdpAction::Clone(actions));
    }

    /// Walks `underlay` with `outer` (a frame the switch makes: encapsulated, or an ARP
    /// request) entering from LOCAL, and returns the actions (`push` first when given). The
    /// walk's wildcards are dropped: the outer key is made from values this translation already
    /// depends on.
    fn underlay_walk(
        &mut self,
        underlay: BridgeId,
        mut outer: FlowKey,
        push: Option<TunnelHeader>,
    ) -> Vec<OdpAction> {
        outer.set(loc::IN_PORT, ofp_port::LOCAL as u128);
        // The underlay walk's wildcards are not the overlay's: its key is the outer header.
        let saved = (self.save(), self.bridge, self.wc);
        let outer_odp = std::mem::take(&mut self.odp);
        if let Some(h) = push {
            self.odp.push(OdpAction::TunnelPush(Box::new(h)));
        }
        self.flow = outer;
        self.base = outer;
        self.written = FlowKey::ZERO;
        self.bridge = underlay;
        self.flow_tpid = [0x8100; 2];
        self.base_tpid = [0x8100; 2];
        self.depth += 1;
        self.note_bridge();
        self.lookup_and_run(0);
        self.depth -= 1;
        let inner = std::mem::replace(&mut self.odp, outer_odp);
        let (state, bridge, wc) = saved;
        self.restore(state);
        (self.bridge, self.wc) = (bridge, wc);
        inner
    }

    /// Continues the walk in the peer bridge of a patch port, as Open vSwitch does: the frame
    /// enters the peer's table 0 with clean metadata, and this bridge's flow is restored after.
    /// A capture running on either end copies the frame as it crosses (sent on `port`,
    /// received on `peer_port`).
    fn patch(&mut self, port: u32, peer_bridge: BridgeId, peer_port: u32) {
        if self.depth >= MAX_DEPTH {
            self.error = Some(DropReason::ResubmitLimit);
            return;
        }
        let points = [
            self.env.patch_capture(self.bridge, port),
            self.env.patch_capture(peer_bridge, peer_port),
        ];
        if points.iter().any(Option::is_some) {
            // The copy must show the frame as it crosses, pending rewrites included.
            self.commit();
            for id in points.into_iter().flatten() {
                self.note(format!(
                    "patch port capture: frame copied to capture point {id:#x}"
                ));
                self.odp.push(OdpAction::Capture(id));
            }
        }
        let saved_flow = self.flow;
        let saved_tpid = self.flow_tpid;
        let saved_bridge = self.bridge;
        for w in 0..PACKET_WORD {
            self.flow.w[w] = 0;
        }
        self.flow.set(loc::IN_PORT, peer_port as u128);
        self.bridge = peer_bridge;
        self.depth += 1;
        self.note_bridge();
        self.lookup_and_run(0);
        self.depth -= 1;
        self.bridge = saved_bridge;
        // The peer's packet changes are committed (or not) in `base`; this bridge continues
        // from its own view of the flow.
        let mut restored = saved_flow;
        restored.w[PACKET_WORD..].copy_from_slice(&saved_flow.w[PACKET_WORD..]);
        self.flow = restored;
        self.flow_tpid = saved_tpid;
        self.exit = false;
    }

    fn normal(&mut self) {
        let mut outs = Vec::new();
        self.env
            .normal(self.bridge, &self.flow, &mut self.wc, self.now, &mut outs);
        if outs.is_empty() {
            self.note("NORMAL: no destination");
        }
        let saved_vlan = (self.flow.vlan_tci(), self.flow.get(loc::INNER_VLAN_TCI));
        for o in outs {
            if o.vlan_tci != self.flow.vlan_tci() {
                self.flow.set(loc::VLAN_TCI, o.vlan_tci as u128);
                self.mark_vlan_written();
            }
            self.output_port(o.ofport, false);
        }
        if (self.flow.vlan_tci(), self.flow.get(loc::INNER_VLAN_TCI)) != saved_vlan {
            self.flow.set(loc::VLAN_TCI, saved_vlan.0 as u128);
            self.flow.set(loc::INNER_VLAN_TCI, saved_vlan.1);
        }
    }

    fn conntrack(&mut self, c: &crate::flow::CtAction) {
        self.commit();
        let zone = match c.zone {
            CtZone::Imm(z) => z,
            CtZone::Field(sf) => {
                sf.mark(&mut self.wc);
                sf.read(&self.flow) as u16
            }
        };
        let mut set_mark = None;
        let mut set_label = None;
        for a in &c.exec {
            match a {
                Action::SetField {
                    field: Field::CtMark,
                    value,
                    mask,
                } => {
                    set_mark = Some((*value as u32, *mask as u32));
                }
                Action::SetField {
                    field: Field::CtLabel,
                    value,
                    mask,
                } => set_label = Some((*value, *mask)),
                Action::Load { value, dst } if dst.field == Field::CtMark => {
                    let m = dst.mask() as u32;
                    set_mark = Some((((*value << dst.ofs) as u32) & m, m));
                }
                Action::Load { value, dst } if dst.field == Field::CtLabel => {
                    let m = dst.mask();
                    set_label = Some(((value << dst.ofs) & m, m));
                }
                _ => {}
            }
        }
        self.odp.push(OdpAction::Ct(Box::new(OdpCt {
            zone,
            commit: c.commit,
            force: c.force,
            nat: c.nat.clone(),
            set_mark,
            set_label,
            alg: c.alg.clone(),
        })));
        if let Some(table) = c.table {
            let mut meta = FlowKey::ZERO;
            for l in FROZEN_FIELDS {
                meta.set(l, self.flow.get(l));
            }
            for w in key::W_XREG0..key::W_XREG0 + 8 {
                meta.w[w] = self.flow.w[w];
            }
            for w in key::W_TUN_META..key::W_TUN_META + key::TUN_META_WORDS {
                meta.w[w] = self.flow.w[w];
            }
            let id = self.recirc.id_for(FrozenState {
                bridge: self.bridge,
                table,
                meta,
            });
            self.note(format!(
                "recirculation {id:#x}: resumes in table {table} after conntrack"
            ));
            self.odp.push(OdpAction::Recirc(id));
        }
    }

    fn clone_actions(&mut self, sub: &[Action]) {
        let saved = self.save();
        let outer = std::mem::take(&mut self.odp);
        self.run_actions(sub);
        let inner = std::mem::replace(&mut self.odp, outer);
        // The clone's packet writes happened on a copy; the decision still read the fields.
        for w in PACKET_WORD..KEY_WORDS {
            self.wc.w[w] |= self.written.w[w];
        }
        self.restore(saved);
        if !inner.is_empty() {
            self.odp.push(OdpAction::Clone(inner));
        }
    }

    /// `check_pkt_larger(len)->dst`: the frame length is not in the flow key, so both outcomes
    /// are translated and the datapath picks one per frame. The rest of the current action list
    /// runs in each branch.
    fn check_pkt_larger(&mut self, len: u16, dst: SubField, rest: &[Action]) {
        self.commit();
        let saved = self.save();
        let outer = std::mem::take(&mut self.odp);
        let mut branches = [Vec::new(), Vec::new()];
        for (i, bit) in [1u128, 0].into_iter().enumerate() {
            self.restore(saved);
            dst.write(&mut self.flow, bit);
            self.run_actions(rest);
            branches[i] = std::mem::take(&mut self.odp);
            for w in PACKET_WORD..KEY_WORDS {
                self.wc.w[w] |= self.written.w[w];
            }
        }
        self.odp = outer;
        let [gt, le] = branches;
        self.odp.push(OdpAction::CheckPktLen { len, gt, le });
        self.exit = true;
    }
}

/// Calls `f` with every datapath port `actions` output to (nested lists included).
fn visit_outputs(actions: &[OdpAction], f: &mut dyn FnMut(u32)) {
    for a in actions {
        match a {
            OdpAction::Output(p) => f(*p),
            OdpAction::Clone(sub) => visit_outputs(sub, f),
            OdpAction::CheckPktLen { gt, le, .. } => {
                visit_outputs(gt, f);
                visit_outputs(le, f);
            }
            _ => {}
        }
    }
}

/// A tunnel push or pop is made inside a `clone` (it changes the frame, and more outputs may
/// follow). When nothing follows, the clone is unnecessary: its actions run on the frame itself,
/// which saves the copy and lets a drop in them count as the frame's outcome.
fn unwrap_trailing_tunnel(actions: &mut Vec<OdpAction>) {
    let is_tunnel = |sub: &[OdpAction]| {
        matches!(
            sub.first(),
            Some(OdpAction::TunnelPush(_) | OdpAction::TunnelPop(_) | OdpAction::Drop(_))
                | Some(OdpAction::Emit(_))
        )
    };
    match actions.last_mut() {
        Some(OdpAction::Clone(sub)) if is_tunnel(sub) => {
            let sub = std::mem::take(sub);
            actions.pop();
            actions.extend(sub);
        }
        Some(OdpAction::CheckPktLen { gt, le, .. }) => {
            unwrap_trailing_tunnel(gt);
            unwrap_trailing_tunnel(le);
        }
        _ => {}
    }
}

fn mac_value(mac: &[u8; 6]) -> u128 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(mac);
    u64::from_be_bytes(b) as u128
}
