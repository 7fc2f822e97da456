//! Datapath actions: the flat, already-decided action lists that the flow cache holds and every
//! frame of a cached flow runs, and their execution on a frame.
//!
//! Translation ([`crate::xlate`]) turns an OpenFlow walk (tables, resubmits, registers) into
//! these; they mention only datapath ports and header rewrites, never tables or registers, so a
//! cache hit costs one lookup plus the rewrites. This module owns their meaning and execution. It
//! must not look at flow tables.

use crate::ct::{ConnTracker, CtRequest, CtResult, CtVerdict, Nanos};
use crate::extract::{extract, refresh_addresses, Layout};
use crate::flow::NatSpec;
use crate::key::{self, loc, FlowKey, KEY_WORDS, PACKET_WORD};
use crate::wire::geneve::{self, GeneveOpt, GeneveOuter};
use crate::wire::rewrite::{self, HopRewrite};
use crate::wire::Frame;
use std::fmt::{self, Write as _};

/// One Geneve option as encapsulation writes it: xvs maps options of 4 data bytes (one
/// `tun_metadataN` slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelOpt {
    pub class: u16,
    /// Type, critical bit included.
    pub typ: u8,
    pub data: [u8; 4],
}

/// A Geneve option class/type mapped to a `tun_metadataN` slot (0..8) on receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlvMap {
    pub class: u16,
    pub typ: u8,
    /// Data length in bytes an option must have (4: one slot).
    pub len: u8,
    pub field: u8,
}

/// The outer headers of `tnl_push`, decided at translation time. The UDP source port is left to
/// execution (a hash of the inner frame's flow, for ECMP), as are the length fields and checksums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelHeader {
    /// The tunnel port's virtual datapath port (printed as `tnl_port`).
    pub tnl_port: u32,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub ip_src: u32,
    pub ip_dst: u32,
    pub tos: u8,
    pub ttl: u8,
    pub df: bool,
    pub dst_port: u16,
    pub vni: u32,
    pub csum: bool,
    pub options: Vec<TunnelOpt>,
    /// Largest outer IPv4 datagram the underlay ports the frame leaves by accept; a larger one
    /// is dropped ([`DropReason::TooBig`]), never truncated.
    pub mtu: u32,
    /// The first underlay datapath port the walk sent to (printed as `out_port`).
    pub out_port: Option<u32>,
}

impl TunnelHeader {
    /// Bytes the encapsulation adds.
    pub fn len(&self) -> usize {
        geneve::OUTER_LEN + self.options.len() * 8
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One tunnel port a decapsulated frame may enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelRx {
    /// The port's virtual datapath port: the frame re-enters translation with this `in_port`.
    pub vport: u32,
    /// A fixed-key port takes only this VNI; `None` (key=flow) takes any.
    pub vni: Option<u32>,
    /// The overlay bridge's option mappings.
    pub tlv: Vec<TlvMap>,
}

/// A frame made by translation (an ARP request for a tunnel's next hop) and what to do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitFrame {
    /// What the frame is, for printing (`arp(tip=172.22.1.62)`).
    pub what: String,
    pub frame: Vec<u8>,
    pub actions: Vec<OdpAction>,
}

/// `tun_flags` bit for a Geneve OAM frame (the only flag OpenFlow sees).
pub const TUN_FLAG_OAM: u16 = 1;
/// Source port range of encapsulated frames.
pub const TNL_SRC_PORT_MIN: u16 = 32768;
pub const TNL_SRC_PORT_MAX: u16 = 61000;

/// A rewrite of packet header fields: bits set in `mask` take the values in `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSet {
    pub value: FlowKey,
    pub mask: FlowKey,
    /// Bit `w` set when `mask.w[w]` is non-zero (packet words only): the few key words a
    /// rewrite touches, so the datapath does not walk every packet word of the key for each.
    words: u64,
    /// The same set as direct writes, when it only changes Ethernet addresses and the TTL.
    hop: Option<HopRewrite>,
}

impl FieldSet {
    /// Writes the set's values into `key`, touching only the words it covers.
    #[inline]
    fn update_key(&self, key: &mut FlowKey) {
        let mut words = self.words;
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            if let (Some(k), Some(&m), Some(&v)) =
                (key.w.get_mut(w), self.mask.w.get(w), self.value.w.get(w))
            {
                *k = (*k & !m) | (v & m);
            }
        }
    }

    /// The rewrite of the packet words of `value` under `mask` (the metadata words before
    /// [`PACKET_WORD`] are never written by it).
    pub fn new(value: FlowKey, mask: FlowKey) -> FieldSet {
        let words = (PACKET_WORD..KEY_WORDS)
            .filter(|&w| mask.w[w] != 0)
            .fold(0u64, |b, w| b | 1 << w);
        let hop = HopRewrite::plan(&value, &mask);
        FieldSet {
            value,
            mask,
            words,
            hop,
        }
    }
}

/// `ct(...)` as the datapath runs it: the zone is resolved, `exec()` reduced to mark/label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OdpCt {
    pub zone: u16,
    pub commit: bool,
    pub force: bool,
    pub nat: Option<NatSpec>,
    pub set_mark: Option<(u32, u32)>,
    pub set_label: Option<(u128, u128)>,
    pub alg: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OdpAction {
    /// Transmit a copy of the frame as it is now on a datapath port.
    Output(u32),
    /// Push a tag: `tci` is the wire TCI (PCP, DEI, VID), without Open vSwitch's present bit.
    PushVlan {
        tpid: u16,
        tci: u16,
    },
    PopVlan,
    /// Rewrite the outer tag's TCI in place (wire TCI).
    SetVlanTci(u16),
    SetFields(Box<FieldSet>),
    Ct(Box<OdpCt>),
    CtClear,
    /// Run the pipeline again from the frozen state `id` (after `ct(table=N)`). As the last
    /// action it continues with this frame; elsewhere it continues with a copy.
    Recirc(u32),
    /// Run the actions on a copy; the frame itself is unchanged afterwards.
    Clone(Vec<OdpAction>),
    /// `check_pkt_larger`: run `gt` if the frame is longer than `len`, else `le`.
    CheckPktLen {
        len: u16,
        gt: Vec<OdpAction>,
        le: Vec<OdpAction>,
    },
    /// Send to a controller (`controller`, `dec_ttl` at TTL 1...). xvs has no controller
    /// connection: the frame is counted under this reason.
    Userspace(&'static str),
    /// Encapsulate in Ethernet + IPv4 + UDP + Geneve (native tunnelling); the actions after it
    /// see the outer frame.
    TunnelPush(Box<TunnelHeader>),
    /// Strip the outer headers of a Geneve frame addressed to this switch, set the tunnel
    /// fields from them and run the pipeline again on the inner frame from the tunnel port
    /// (first candidate whose key accepts the VNI). Must be the last action of its list.
    TunnelPop(Box<[TunnelRx]>),
    /// Run `actions` on a frame built at translation time.
    Emit(Box<EmitFrame>),
    /// Stop here, counting the frame under `reason`.
    Drop(DropReason),
    /// Hand a copy of the frame as it is now to capture point `id` (a patch port the walk
    /// crossed while a capture on it was running). Not an output: nothing is sent.
    Capture(u32),
}

/// Why a frame stopped without (or after) being sent. Counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// No flow matched, or the matching flow's actions sent nowhere.
    NoOutput,
    /// A header push did not fit in the frame's headroom.
    NoHeadroom,
    /// A rewrite needed a header the frame lacks.
    RewriteFailed,
    /// Recirculation deeper than the limit (a loop in the flow tables).
    RecircLoop,
    /// Resubmit depth or count limit hit during translation.
    ResubmitLimit,
    /// Connection tracking refused or could not parse the frame.
    Conntrack,
    /// Sent to a controller: xvs has none.
    Controller,
    /// The recirculation id is unknown (flows changed in between).
    StaleRecirc,
    /// A fragment held by connection tracking for reassembly (not a loss).
    FragmentHeld,
    /// The encapsulated frame would exceed the underlay MTU.
    TooBig,
    /// No next-hop MAC known for a tunnel's remote (an ARP request was sent instead).
    TunnelNoNeighbor,
    /// A Geneve frame from a remote no tunnel port names (or whose VNI no port takes).
    TunnelUnknownRemote,
    /// A Geneve frame with bad lengths, checksum, or an option of the wrong length or an
    /// unknown critical option.
    TunnelMalformed,
    /// Shorter than an Ethernet header: dropped on receipt, never switched.
    Runt,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::NoOutput,
        DropReason::NoHeadroom,
        DropReason::RewriteFailed,
        DropReason::RecircLoop,
        DropReason::ResubmitLimit,
        DropReason::Conntrack,
        DropReason::Controller,
        DropReason::StaleRecirc,
        DropReason::FragmentHeld,
        DropReason::TooBig,
        DropReason::TunnelNoNeighbor,
        DropReason::TunnelUnknownRemote,
        DropReason::TunnelMalformed,
        DropReason::Runt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoOutput => "no_output",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::RewriteFailed => "rewrite_failed",
            DropReason::RecircLoop => "recirc_loop",
            DropReason::ResubmitLimit => "resubmit_limit",
            DropReason::Conntrack => "conntrack",
            DropReason::Controller => "controller",
            DropReason::StaleRecirc => "stale_recirc",
            DropReason::FragmentHeld => "fragment_held",
            DropReason::TooBig => "too_big",
            DropReason::TunnelNoNeighbor => "tunnel_no_neighbor",
            DropReason::TunnelUnknownRemote => "tunnel_unknown_remote",
            DropReason::TunnelMalformed => "tunnel_malformed",
            DropReason::Runt => "runt",
        }
    }
}

/// Where executed actions send frames.
pub trait DpSink {
    /// Transmits a copy of `frame` on datapath port `port`.
    fn output(&mut self, port: u32, frame: &[u8]);
    /// A copy of the frame to run again from recirculation `id` (a `Recirc` that is not the last
    /// action). `key` carries the `ct_*` fields the copy continues with.
    fn recirculate(&mut self, id: u32, frame: &[u8], key: &FlowKey);
    /// A copy made by `clone` (or a tunnel push inside one) was dropped: count it.
    fn dropped(&mut self, _reason: DropReason) {}
    /// The frame crossing capture point `id` (see [`OdpAction::Capture`]).
    fn capture(&mut self, _id: u32, _frame: &[u8]) {}
}

/// A frame with its parsed layout and current key (packet words in sync with the bytes).
pub struct Packet<'a> {
    pub frame: Frame<'a>,
    pub layout: Layout,
    pub key: FlowKey,
}

impl<'a> Packet<'a> {
    /// Parses `frame`; metadata words of `key` are kept, packet words are overwritten.
    #[inline]
    pub fn new(frame: Frame<'a>, mut key: FlowKey) -> Packet<'a> {
        let layout = extract(frame.data(), &mut key);
        Packet { frame, layout, key }
    }

    fn reparse(&mut self) {
        self.layout = extract(self.frame.data(), &mut self.key);
    }
}

/// How execution of an action list ended.
#[derive(Debug)]
pub enum ExecOutcome {
    /// All actions ran (outputs done through the sink).
    Done,
    /// The last action was `Recirc(id)`: run the pipeline again on this frame, whose key now
    /// carries the `ct_*` fields.
    Recirc(u32),
    /// Stopped early.
    Dropped(DropReason),
    /// Connection tracking completed a fragmented datagram: continue with it (rare, so boxed:
    /// outcomes are returned on every frame's path).
    Reassembled(Box<Reassembly>),
}

/// A datagram conntrack completed from fragments: `frame` (a whole Ethernet frame), with
/// `result` as its `ct_*` fields, goes on from action index `resume_at`.
#[derive(Debug)]
pub struct Reassembly {
    pub frame: Vec<u8>,
    pub result: CtResult,
    pub resume_at: usize,
}

/// Copies the `ct_*` fields of a tracker result into a key. Whole words where the layout
/// allows: `tun_flags` and `conj_id` share words with them and are kept.
#[inline]
pub fn apply_ct_result(key: &mut FlowKey, r: &CtResult) {
    let o = r.orig.unwrap_or_default();
    let w = &mut key.w;
    w[key::W_CT_STATE] =
        (w[key::W_CT_STATE] & 0xffff_0000_0000_0000) | (r.zone as u64) << 32 | r.state as u64;
    w[key::W_CT_MARK] = (w[key::W_CT_MARK] & 0xffff_ffff) | (r.mark as u64) << 32;
    w[key::W_CT_LABEL] = (r.label >> 64) as u64;
    w[key::W_CT_LABEL + 1] = r.label as u64;
    w[key::W_CT_NW] = (o.src as u32 as u64) << 32 | o.dst as u32 as u64;
    w[key::W_CT_TP] = (w[key::W_CT_TP] & 0xff_ffff)
        | (o.src_port as u64) << 48
        | (o.dst_port as u64) << 32
        | (o.proto as u64) << 24;
}

/// Runs `actions` on `pkt`. `ct` is connection tracking; `now` is passed to it.
pub fn execute(
    actions: &[OdpAction],
    pkt: &mut Packet<'_>,
    sink: &mut dyn DpSink,
    ct: &dyn ConnTracker,
    now: Nanos,
) -> ExecOutcome {
    match resume::<false>(actions, 0, pkt, sink, ct, now) {
        Step::Finished(o) => o,
        // Only a suspending run stops at a `ct`.
        Step::AtCt(_) => ExecOutcome::Done,
    }
}

/// How a run of actions that may stop before a `ct` ended.
#[derive(Debug)]
pub(crate) enum Step {
    Finished(ExecOutcome),
    /// Stopped before the `ct` action at this index, on an IP frame: the caller hands the frame
    /// to the tracker (with others stopped at the same action) and goes on with
    /// [`finish_ct`] and [`resume`].
    AtCt(usize),
}

/// Takes in the tracker's verdict for a frame stopped before the `ct` action at index `at`
/// (`len_before`: the frame's length when it was handed over). `None`: go on with the next
/// action; otherwise how the run ends. The verdict is read in place (it is large; a
/// reassembled datagram's bytes are moved out).
pub(crate) fn finish_ct(
    pkt: &mut Packet<'_>,
    len_before: usize,
    verdict: &mut CtVerdict,
    at: usize,
) -> Option<ExecOutcome> {
    match verdict {
        CtVerdict::Tracked(r) => {
            // NAT rewrites addresses and ports in place; anything that changed the frame's
            // length is parsed again from scratch.
            if r.state & (key::CS_SRC_NAT | key::CS_DST_NAT) != 0
                && (pkt.frame.len() != len_before
                    || !refresh_addresses(pkt.frame.data(), &pkt.layout, &mut pkt.key))
            {
                pkt.reparse();
            }
            apply_ct_result(&mut pkt.key, r);
            None
        }
        CtVerdict::Held => Some(ExecOutcome::Dropped(DropReason::FragmentHeld)),
        CtVerdict::Reassembled { frame, result } => {
            Some(ExecOutcome::Reassembled(Box::new(Reassembly {
                frame: std::mem::take(frame),
                result: *result,
                resume_at: at + 1,
            })))
        }
    }
}

/// The request a `ct` action makes of the tracker.
pub(crate) fn ct_request(c: &OdpCt) -> CtRequest<'_> {
    CtRequest {
        zone: c.zone,
        commit: c.commit,
        force: c.force,
        nat: c.nat.as_ref(),
        set_mark: c.set_mark,
        set_label: c.set_label,
        alg: c.alg.as_deref(),
    }
}

/// Runs `actions[start..]`; with `SUSPEND`, stops before a `ct` action on an IP frame instead
/// of calling the tracker, so that the engine can track a batch of frames at once.
pub(crate) fn resume<const SUSPEND: bool>(
    actions: &[OdpAction],
    start: usize,
    pkt: &mut Packet<'_>,
    sink: &mut dyn DpSink,
    ct: &dyn ConnTracker,
    now: Nanos,
) -> Step {
    for (i, action) in actions.iter().enumerate().skip(start) {
        match action {
            OdpAction::Output(port) => sink.output(*port, pkt.frame.data()),
            OdpAction::PushVlan { tpid, tci } => {
                if rewrite::push_vlan(&mut pkt.frame, &mut pkt.layout, *tpid, *tci).is_err() {
                    return Step::Finished(ExecOutcome::Dropped(DropReason::NoHeadroom));
                }
                let outer = pkt.key.get(loc::VLAN_TCI);
                pkt.key.set(loc::INNER_VLAN_TCI, outer);
                pkt.key.set(loc::VLAN_TCI, (*tci | key::VLAN_CFI) as u128);
            }
            OdpAction::PopVlan => {
                if rewrite::pop_vlan(&mut pkt.frame, &mut pkt.layout).is_err() {
                    return Step::Finished(ExecOutcome::Dropped(DropReason::RewriteFailed));
                }
                let inner = pkt.key.get(loc::INNER_VLAN_TCI);
                pkt.key.set(loc::VLAN_TCI, inner);
                pkt.key.set(loc::INNER_VLAN_TCI, 0);
            }
            OdpAction::SetVlanTci(tci) => {
                if rewrite::set_vlan_tci(&mut pkt.frame, &pkt.layout, *tci).is_err() {
                    return Step::Finished(ExecOutcome::Dropped(DropReason::RewriteFailed));
                }
                pkt.key.set(loc::VLAN_TCI, (*tci | key::VLAN_CFI) as u128);
            }
            OdpAction::SetFields(set) => {
                if let Some(hop) = &set.hop {
                    hop.apply(&mut pkt.frame, &pkt.layout, &pkt.key);
                    set.update_key(&mut pkt.key);
                    continue;
                }
                // The key is updated in place and the rewrite compares it with the one copy
                // of what the frame has now (a key is 296 bytes: copies show per frame).
                let have = pkt.key;
                set.update_key(&mut pkt.key);
                if rewrite::set_fields(&mut pkt.frame, &pkt.layout, &have, &pkt.key).is_err() {
                    pkt.key = have;
                    return Step::Finished(ExecOutcome::Dropped(DropReason::RewriteFailed));
                }
            }
            OdpAction::Ct(c) => {
                if pkt.layout.l3_ofs == 0 {
                    // Not IP: nothing to track. Open vSwitch's userspace tracker reports such
                    // frames as tracked and invalid, and so does xvs.
                    let r = CtResult {
                        state: key::CS_TRACKED | key::CS_INVALID,
                        zone: c.zone,
                        ..Default::default()
                    };
                    apply_ct_result(&mut pkt.key, &r);
                    continue;
                }
                if SUSPEND {
                    return Step::AtCt(i);
                }
                let l3 = pkt.layout.l3_ofs as usize;
                let len = pkt.frame.len();
                let mut v = ct.execute(&mut pkt.frame, l3, &pkt.key, &ct_request(c), now);
                if let Some(end) = finish_ct(pkt, len, &mut v, i) {
                    return Step::Finished(end);
                }
            }
            OdpAction::CtClear => {
                for l in [loc::CT_STATE, loc::CT_ZONE, loc::CT_MARK, loc::CT_LABEL] {
                    pkt.key.set(l, 0);
                }
            }
            OdpAction::Recirc(id) => {
                if i + 1 == actions.len() {
                    return Step::Finished(ExecOutcome::Recirc(*id));
                }
                sink.recirculate(*id, pkt.frame.data(), &pkt.key);
            }
            OdpAction::Clone(sub) => {
                if let Some(out) = run_on_copy(sub, pkt, sink, ct, now) {
                    return Step::Finished(out);
                }
            }
            OdpAction::CheckPktLen { len, gt, le } => {
                let branch = if pkt.frame.len() > *len as usize {
                    gt
                } else {
                    le
                };
                return Step::Finished(execute(branch, pkt, sink, ct, now));
            }
            // No controller to receive it: the copy it stands for is lost, and counted.
            OdpAction::Userspace(_) => sink.dropped(DropReason::Controller),
            OdpAction::TunnelPush(h) => {
                if let Err(r) = tunnel_push(h, pkt) {
                    return Step::Finished(ExecOutcome::Dropped(r));
                }
            }
            OdpAction::TunnelPop(rx) => {
                if i + 1 != actions.len() {
                    // The inner frame replaces this one: elsewhere than last, pop a copy.
                    if let Some(out) = run_on_copy(std::slice::from_ref(action), pkt, sink, ct, now)
                    {
                        return Step::Finished(out);
                    }
                    continue;
                }
                return Step::Finished(match tunnel_pop(rx, pkt) {
                    Ok(()) => ExecOutcome::Recirc(0),
                    Err(r) => ExecOutcome::Dropped(r),
                });
            }
            OdpAction::Emit(e) => {
                let mut buf = vec![0u8; COPY_HEADROOM + e.frame.len()];
                buf[COPY_HEADROOM..].copy_from_slice(&e.frame);
                let mut meta = FlowKey::ZERO;
                meta.set(loc::IN_PORT, pkt.key.get(loc::IN_PORT));
                let mut made =
                    Packet::new(Frame::new(&mut buf, COPY_HEADROOM, e.frame.len()), meta);
                match execute(&e.actions, &mut made, sink, ct, now) {
                    ExecOutcome::Recirc(id) => sink.recirculate(id, made.frame.data(), &made.key),
                    ExecOutcome::Dropped(r) => sink.dropped(r),
                    ExecOutcome::Reassembled(_) | ExecOutcome::Done => {}
                }
            }
            OdpAction::Drop(r) => return Step::Finished(ExecOutcome::Dropped(*r)),
            OdpAction::Capture(id) => sink.capture(*id, pkt.frame.data()),
        }
    }
    Step::Finished(ExecOutcome::Done)
}

/// A source port from the inner frame's addresses and ports, so one inner flow keeps one outer
/// 5-tuple (and one ECMP path) while different flows spread.
fn tunnel_src_port(key: &FlowKey) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in [
        key::W_DL_DST,
        key::W_DL_SRC,
        key::W_L2,
        key::W_NW_ADDR,
        key::W_TP,
    ] {
        h ^= key.w[w];
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    let span = (TNL_SRC_PORT_MAX - TNL_SRC_PORT_MIN) as u64;
    TNL_SRC_PORT_MIN + (h % span) as u16
}

fn tunnel_push(h: &TunnelHeader, pkt: &mut Packet<'_>) -> Result<(), DropReason> {
    // The outer IPv4 datagram is the inner frame plus everything after the outer Ethernet.
    let ip_len = pkt.frame.len() + h.len() - crate::wire::ethernet::HEADER_LEN;
    if ip_len > h.mtu as usize {
        return Err(DropReason::TooBig);
    }
    const NONE: GeneveOpt<'static> = GeneveOpt {
        class: 0,
        typ: 0,
        data: &[],
    };
    let mut opts = [NONE; 8];
    let n = h.options.len().min(opts.len());
    for (o, t) in opts.iter_mut().zip(&h.options) {
        *o = GeneveOpt {
            class: t.class,
            typ: t.typ,
            data: &t.data,
        };
    }
    let outer = GeneveOuter {
        src_mac: h.eth_src,
        dst_mac: h.eth_dst,
        src_ip: h.ip_src,
        dst_ip: h.ip_dst,
        tos: h.tos,
        ttl: h.ttl,
        df: h.df,
        src_port: tunnel_src_port(&pkt.key),
        vni: h.vni,
        oam: false,
        options: &opts[..n],
        csum: h.csum,
    };
    match geneve::encap(&mut pkt.frame, &outer) {
        Ok(()) => {}
        Err(rewrite::RewriteError::NoRoom) => return Err(DropReason::NoHeadroom),
        Err(_) => return Err(DropReason::RewriteFailed),
    }
    for l in [loc::TUN_ID, loc::TUN_SRC, loc::TUN_DST, loc::TUN_FLAGS] {
        pkt.key.set(l, 0);
    }
    for w in key::W_TUN_META..key::W_TUN_META + key::TUN_META_WORDS {
        pkt.key.w[w] = 0;
    }
    pkt.reparse();
    Ok(())
}

/// Decapsulates and sets up the key for the inner frame's pass (`recirc_id` 0, `in_port` the
/// tunnel's virtual port, tunnel fields from the outer headers, everything else cleared).
fn tunnel_pop(rx: &[TunnelRx], pkt: &mut Packet<'_>) -> Result<(), DropReason> {
    // Check everything before touching the frame.
    let info = geneve::parse(pkt.frame.data()).map_err(|_| DropReason::TunnelMalformed)?;
    let port = rx
        .iter()
        .find(|r| r.vni.is_none_or(|v| v == info.vni))
        .ok_or(DropReason::TunnelUnknownRemote)?;
    let mut meta = FlowKey::ZERO;
    for o in geneve::Options::new(info.options) {
        let o = o.map_err(|_| DropReason::TunnelMalformed)?;
        match port
            .tlv
            .iter()
            .find(|t| t.class == o.class && t.typ == o.typ)
        {
            Some(t) => {
                let slot = crate::field::Field::TunMetadata(t.field).loc();
                let (Some(slot), [a, b, c, d]) = (slot, o.data) else {
                    return Err(DropReason::TunnelMalformed);
                };
                if o.data.len() != t.len as usize {
                    return Err(DropReason::TunnelMalformed);
                }
                meta.set(slot, u32::from_be_bytes([*a, *b, *c, *d]) as u128);
            }
            // A receiver must drop what it cannot understand only when marked critical.
            None if o.typ & geneve::OPT_CRITICAL != 0 => return Err(DropReason::TunnelMalformed),
            None => {}
        }
    }
    meta.set(loc::IN_PORT, port.vport as u128);
    meta.set(loc::TUN_ID, info.vni as u128);
    meta.set(loc::TUN_SRC, info.src_ip as u128);
    meta.set(loc::TUN_DST, info.dst_ip as u128);
    meta.set(
        loc::TUN_FLAGS,
        if info.oam { TUN_FLAG_OAM as u128 } else { 0 },
    );
    let (ofs, len) = (info.inner_ofs, info.inner_len);
    pkt.frame.pull_head(ofs);
    pkt.frame.truncate(len);
    for w in 0..PACKET_WORD {
        pkt.key.w[w] = meta.w[w];
    }
    pkt.reparse();
    Ok(())
}

/// Headroom given to copies made by `clone`, enough for a VLAN tag and a tunnel header.
pub const COPY_HEADROOM: usize = 128;

/// Runs `actions` on a copy of the packet. Returns an outcome only for a failure that must stop
/// the original too (none today: a failing clone only loses its own copy).
fn run_on_copy(
    actions: &[OdpAction],
    pkt: &Packet<'_>,
    sink: &mut dyn DpSink,
    ct: &dyn ConnTracker,
    now: Nanos,
) -> Option<ExecOutcome> {
    let data = pkt.frame.data();
    let mut buf = vec![0u8; COPY_HEADROOM + data.len()];
    buf[COPY_HEADROOM..].copy_from_slice(data);
    let mut copy = Packet {
        frame: Frame::new(&mut buf, COPY_HEADROOM, data.len()),
        layout: pkt.layout,
        key: pkt.key,
    };
    match execute(actions, &mut copy, sink, ct, now) {
        ExecOutcome::Recirc(id) => sink.recirculate(id, copy.frame.data(), &copy.key),
        ExecOutcome::Dropped(r) => sink.dropped(r),
        ExecOutcome::Reassembled(_) | ExecOutcome::Done => {}
    }
    None
}

// --- Printing, in the style of `ovs-appctl dpctl/dump-flows`. --------------------------------

/// Prints an action list as `dpctl/dump-flows` does (`pop_vlan,ct(zone=9,nat),recirc(0x322d)`).
/// `port_name` maps datapath ports to names (numbers are printed when it returns `None`).
pub fn format_actions(actions: &[OdpAction], port_name: &dyn Fn(u32) -> Option<String>) -> String {
    if actions.is_empty() {
        return "drop".to_string();
    }
    let mut s = String::new();
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        format_action(&mut s, a, port_name);
    }
    s
}

fn format_action(s: &mut String, a: &OdpAction, port_name: &dyn Fn(u32) -> Option<String>) {
    match a {
        OdpAction::Output(p) => match port_name(*p) {
            Some(n) => s.push_str(&n),
            None => {
                let _ = write!(s, "{p}");
            }
        },
        OdpAction::PushVlan { tpid, tci } => {
            if *tpid != 0x8100 {
                let _ = write!(
                    s,
                    "push_vlan(tpid=0x{tpid:x},vid={},pcp={})",
                    tci & 0xfff,
                    tci >> 13
                );
            } else {
                let _ = write!(s, "push_vlan(vid={},pcp={})", tci & 0xfff, tci >> 13);
            }
        }
        OdpAction::PopVlan => s.push_str("pop_vlan"),
        OdpAction::SetVlanTci(tci) => {
            let _ = write!(
                s,
                "pop_vlan,push_vlan(vid={},pcp={})",
                tci & 0xfff,
                tci >> 13
            );
        }
        OdpAction::SetFields(set) => format_set(s, set),
        OdpAction::Ct(c) => {
            s.push_str("ct(");
            let mut parts: Vec<String> = Vec::new();
            if c.commit {
                parts.push("commit".into());
            }
            if c.force {
                parts.push("force_commit".into());
            }
            parts.push(format!("zone={}", c.zone));
            if let Some((v, m)) = c.set_mark {
                parts.push(if m == u32::MAX {
                    format!("mark={v:#x}")
                } else {
                    format!("mark={v:#x}/{m:#x}")
                });
            }
            if let Some((v, m)) = c.set_label {
                parts.push(if m == u128::MAX {
                    format!("label={v:#x}")
                } else {
                    format!("label={v:#x}/{m:#x}")
                });
            }
            if let Some(alg) = &c.alg {
                parts.push(format!("helper={alg}"));
            }
            if let Some(n) = &c.nat {
                parts.push(format_nat(n));
            }
            s.push_str(&parts.join(","));
            s.push(')');
        }
        OdpAction::CtClear => s.push_str("ct_clear"),
        OdpAction::Recirc(id) => {
            let _ = write!(s, "recirc({id:#x})");
        }
        OdpAction::Clone(sub) => {
            let _ = write!(s, "clone({})", format_actions(sub, port_name));
        }
        OdpAction::CheckPktLen { len, gt, le } => {
            let _ = write!(
                s,
                "check_pkt_len(size={len},gt({}),le({}))",
                format_actions(gt, port_name),
                format_actions(le, port_name)
            );
        }
        OdpAction::Userspace(reason) => {
            let _ = write!(s, "userspace({reason})");
        }
        OdpAction::TunnelPush(h) => format_tnl_push(s, h, port_name),
        OdpAction::TunnelPop(rx) => {
            let p = rx.first().map_or(0, |r| r.vport);
            match port_name(p) {
                Some(n) => {
                    let _ = write!(s, "tnl_pop({n})");
                }
                None => {
                    let _ = write!(s, "tnl_pop({p})");
                }
            }
        }
        OdpAction::Emit(e) => {
            let _ = write!(
                s,
                "emit({},{})",
                e.what,
                format_actions(&e.actions, port_name)
            );
        }
        OdpAction::Drop(r) => {
            let _ = write!(s, "drop({})", r.name());
        }
        OdpAction::Capture(id) => match port_name(*id) {
            Some(n) => {
                let _ = write!(s, "capture({n})");
            }
            None => {
                let _ = write!(s, "capture({id})");
            }
        },
    }
}

pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `tnl_push(tnl_port(N),header(size=58,type=5,eth(...),ipv4(...),udp(...),geneve(...)),out_port(M))`
/// (type 5 is Open vSwitch's number for Geneve tunnel headers).
fn format_tnl_push(s: &mut String, h: &TunnelHeader, port_name: &dyn Fn(u32) -> Option<String>) {
    let name = |p: u32| port_name(p).unwrap_or_else(|| p.to_string());
    let _ = write!(
        s,
        "tnl_push(tnl_port({}),header(size={},type=5,eth(dst={},src={},dl_type=0x0800),ipv4(src={},dst={},proto=17,tos={:#x},ttl={},frag={:#x}),udp(src=0,dst={},csum={:#x}),geneve(",
        name(h.tnl_port),
        h.len(),
        fmt_mac(&h.eth_dst),
        fmt_mac(&h.eth_src),
        std::net::Ipv4Addr::from(h.ip_src),
        std::net::Ipv4Addr::from(h.ip_dst),
        h.tos,
        h.ttl,
        if h.df { 0x4000 } else { 0 },
        h.dst_port,
        if h.csum { 0xffff } else { 0 },
    );
    if h.options.iter().any(|o| o.typ & geneve::OPT_CRITICAL != 0) {
        s.push_str("crit,");
    }
    let _ = write!(s, "vni={:#x}", h.vni);
    if !h.options.is_empty() {
        s.push_str(",options(");
        for (i, o) in h.options.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{class={:#x},type={:#x},len={},{:#x}}}",
                o.class,
                o.typ,
                o.data.len(),
                u32::from_be_bytes(o.data)
            );
        }
        s.push(')');
    }
    s.push_str("))");
    if let Some(p) = h.out_port {
        let _ = write!(s, ",out_port({})", name(p));
    }
    s.push(')');
}

/// `nat`, `nat(src=172.22.7.27)`, `nat(dst=10.0.0.1-10.0.0.9:80-90,random)`.
pub fn format_nat(n: &NatSpec) -> String {
    let Some(kind) = n.kind else {
        return "nat".to_string();
    };
    let mut s = String::from(match kind {
        crate::flow::NatKind::Src => "nat(src",
        crate::flow::NatKind::Dst => "nat(dst",
    });
    let addr = |a: &std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if let Some(min) = &n.addr_min {
        s.push('=');
        s.push_str(&addr(min));
        if let Some(max) = n.addr_max.as_ref().filter(|m| *m != min) {
            s.push('-');
            s.push_str(&addr(max));
        }
        if let Some(pmin) = n.port_min {
            let _ = write!(s, ":{pmin}");
            if let Some(pmax) = n.port_max.filter(|p| *p != pmin) {
                let _ = write!(s, "-{pmax}");
            }
        }
    }
    for (flag, name) in [
        (n.random, "random"),
        (n.hash, "hash"),
        (n.persistent, "persistent"),
    ] {
        if flag {
            s.push(',');
            s.push_str(name);
        }
    }
    s.push(')');
    s
}

/// A header field to print: name, location, value formatter.
type FieldPrinter<'a> = (&'a str, key::FieldLoc, &'a dyn Fn(u128) -> String);

fn format_set(s: &mut String, set: &FieldSet) {
    let m = &set.mask;
    let v = &set.value;
    let mac = |x: u128| {
        let b = (x as u64).to_be_bytes();
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    };
    let ip4 = |x: u128| std::net::Ipv4Addr::from(x as u32).to_string();
    let ip6 = |x: u128| std::net::Ipv6Addr::from(x).to_string();
    let mut groups: Vec<String> = Vec::new();
    let mut group = |name: &str, fields: &[FieldPrinter<'_>]| {
        let items: Vec<String> = fields
            .iter()
            .filter(|(_, l, _)| m.get(*l) != 0)
            .map(|(n, l, f)| format!("{n}={}", f(v.get(*l))))
            .collect();
        if !items.is_empty() {
            groups.push(format!("set({name}({}))", items.join(",")));
        }
    };
    let dec = |x: u128| x.to_string();
    let hex = |x: u128| format!("{x:#x}");
    group(
        "eth",
        &[("src", loc::DL_SRC, &mac), ("dst", loc::DL_DST, &mac)],
    );
    if v.dl_type() == crate::field::ETH_TYPE_IPV6
        || m.get(loc::IPV6_SRC) != 0
        || m.get(loc::IPV6_DST) != 0
    {
        group(
            "ipv6",
            &[
                ("src", loc::IPV6_SRC, &ip6),
                ("dst", loc::IPV6_DST, &ip6),
                ("label", loc::IPV6_LABEL, &hex),
                ("tclass", loc::NW_TOS, &hex),
                ("hlimit", loc::NW_TTL, &dec),
            ],
        );
    } else if v.dl_type() == crate::field::ETH_TYPE_ARP {
        group(
            "arp",
            &[
                ("sip", loc::NW_SRC, &ip4),
                ("tip", loc::NW_DST, &ip4),
                ("op", loc::ARP_OP, &dec),
                ("sha", loc::ARP_SHA, &mac),
                ("tha", loc::ARP_THA, &mac),
            ],
        );
    } else {
        group(
            "ipv4",
            &[
                ("src", loc::NW_SRC, &ip4),
                ("dst", loc::NW_DST, &ip4),
                ("tos", loc::NW_TOS, &hex),
                ("ttl", loc::NW_TTL, &dec),
            ],
        );
    }
    let l4 = match v.nw_proto() {
        crate::field::IPPROTO_TCP => "tcp",
        crate::field::IPPROTO_UDP => "udp",
        crate::field::IPPROTO_SCTP => "sctp",
        crate::field::IPPROTO_ICMP => "icmp",
        crate::field::IPPROTO_ICMPV6 => "icmpv6",
        _ => "l4",
    };
    if l4 == "icmp" || l4 == "icmpv6" {
        group(
            l4,
            &[
                ("type", loc::ICMP_TYPE, &dec),
                ("code", loc::ICMP_CODE, &dec),
            ],
        );
    } else {
        group(
            l4,
            &[("src", loc::TP_SRC, &dec), ("dst", loc::TP_DST, &dec)],
        );
    }
    group("nd", &[("target", loc::ND_TARGET, &ip6)]);
    s.push_str(&groups.join(","));
}

impl fmt::Display for OdpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        format_action(&mut s, self, &|_| None);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests;
