//! The switch: bridges with their OpenFlow ports, flow tables and MAC learning, the mapping from
//! datapath ports to bridge ports, and the view of all that translation works against.
//!
//! Owns the switch's shared state (read by every datapath thread): also the Geneve tunnel ports
//! (each with a virtual datapath port a decapsulated frame enters by), the switch's underlay
//! addresses, and the tunnel next-hop cache that NORMAL fills by snooping ARP and Geneve frames
//! on underlay bridges. It does not own port I/O (datapath threads do) and does not parse
//! configuration files.

use crate::hooks::CaptureSlot;
use crate::mac_learning::{self, Fdb, NormalPort, VlanMode};
use pipeline::ct::{ConnTracker, Nanos};
use pipeline::engine::Shared;
use pipeline::flow::{ofp_port, PortNames};
use pipeline::key::{loc, FlowKey};
use pipeline::odp::{TlvMap, TunnelRx};
use pipeline::table::{FlowTables, Snapshot};
use pipeline::xlate::{
    BridgeId, NormalOutput, PortKind, RecircTable, RuleRef, TunnelPortInfo, XlateEnv,
    CAPTURE_POINT_BASE, TNL_VPORT_BASE,
};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// MTU of a port whose configuration gives none.
pub const DEFAULT_MTU: u32 = 1500;
/// Next-hop entries not refreshed for this long are forgotten (as Open vSwitch's tunnel
/// neighbor cache does).
pub const NEIGH_AGING: Nanos = 15 * 60 * 1_000_000_000;

/// Whether a bridge starts with the default NORMAL flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Starts with `priority=0,actions=NORMAL` (Open vSwitch's default for a bridge with no
    /// controller).
    Standalone,
    /// Starts empty: frames no flow matches are dropped.
    Secure,
}

/// What a bridge port is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A port with I/O (AF_XDP, TAP, pcap, memory...), identified by its datapath port number.
    Datapath(u32),
    /// A patch port to `peer` (a port name in another bridge).
    Patch { peer: String },
    /// A Geneve tunnel port. `vport` is assigned by [`SwitchBuilder::build`] (the number given
    /// is ignored).
    Tunnel(TunnelConfig),
}

/// A Geneve tunnel port's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    pub remote_ip: Ipv4Addr,
    /// The switch's underlay address for this tunnel.
    pub local_ip: Ipv4Addr,
    /// A fixed VNI, or `None` for key=flow (`tun_id` decides).
    pub key: Option<u32>,
    pub csum: bool,
    pub dst_port: u16,
    /// The bridge whose LOCAL port owns `local_ip` (where encapsulated frames continue).
    pub underlay: String,
    pub vport: u32,
}

/// One port of a bridge.
#[derive(Clone, Debug)]
pub struct BridgePort {
    pub name: String,
    pub ofport: u32,
    pub attachment: Attachment,
    pub vlan: VlanMode,
    pub no_flood: bool,
    /// Largest IP datagram the port sends ([`DEFAULT_MTU`] when not configured).
    pub mtu: u32,
}

pub struct Bridge {
    pub name: String,
    pub fail_mode: FailMode,
    pub tables: FlowTables,
    pub fdb: Fdb,
    /// Ports by OpenFlow number.
    pub ports: BTreeMap<u32, BridgePort>,
    /// Resolved patch peers: ofport -> (peer bridge, peer ofport).
    patch: BTreeMap<u32, (BridgeId, u32)>,
    normal_ports: Vec<NormalPort>,
    port_list: Vec<u32>,
    /// Geneve option mappings of this bridge's tunnel ports.
    pub tlv_map: Vec<TlvMap>,
}

impl Bridge {
    /// Port names for the flow language (`in_port=tap2`).
    pub fn port_names(&self) -> PortNames {
        let mut n = PortNames::new();
        for p in self.ports.values() {
            if p.ofport != ofp_port::LOCAL {
                n.insert(&p.name, p.ofport);
            }
        }
        n
    }

    pub fn port_by_name(&self, name: &str) -> Option<&BridgePort> {
        self.ports.values().find(|p| p.name == name)
    }
}

/// A datapath port: where it belongs.
#[derive(Clone, Debug)]
pub struct DpPort {
    pub name: String,
    pub bridge: BridgeId,
    pub ofport: u32,
    pub mtu: u32,
}

/// A tunnel port (its virtual datapath port is `TNL_VPORT_BASE` + its index).
#[derive(Clone, Debug)]
pub struct TunnelPort {
    pub name: String,
    pub bridge: BridgeId,
    pub ofport: u32,
    pub info: TunnelPortInfo,
}

/// One of the switch's underlay addresses: frames for it that reach `bridge`'s LOCAL port are
/// the switch's own (Geneve to decapsulate, ARP to answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub bridge: BridgeId,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The MAC the switch uses on underlay address `ip`: locally administered and derived from the
/// address, so it is stable across restarts and readable in captures (02:00:ac:16:01:3d).
pub fn endpoint_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// A learned next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub bridge: BridgeId,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub learned: Nanos,
}

/// The tunnel next-hop cache: IP to MAC per underlay bridge. Changes bump a generation that
/// invalidates cached translations (a frame dropped for want of a next hop is retried).
/// (underlay bridge, IPv4 address) to (MAC, when last learned).
type NeighMap = BTreeMap<(BridgeId, u32), ([u8; 6], Nanos)>;

#[derive(Default)]
pub struct NeighCache {
    map: Mutex<NeighMap>,
    generation: AtomicU64,
}

impl NeighCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, NeighMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn learn(&self, bridge: BridgeId, ip: Ipv4Addr, mac: [u8; 6], now: Nanos) {
        if mac[0] & 1 != 0 || mac == [0; 6] || ip.is_unspecified() || ip.is_broadcast() {
            return;
        }
        let mut m = self.lock();
        let old = m.insert((bridge, u32::from(ip)), (mac, now));
        if old.map(|(o, _)| o) != Some(mac) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn lookup(&self, bridge: BridgeId, ip: u32) -> Option<[u8; 6]> {
        self.lock().get(&(bridge, ip)).map(|(m, _)| *m)
    }

    pub fn expire(&self, now: Nanos) -> usize {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, (_, t)| now.saturating_sub(*t) < NEIGH_AGING);
        let n = before - m.len();
        if n > 0 {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        n
    }

    pub fn flush(&self) {
        self.lock().clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn entries(&self) -> Vec<Neighbor> {
        self.lock()
            .iter()
            .map(|(&(bridge, ip), &(mac, learned))| Neighbor {
                bridge,
                ip: Ipv4Addr::from(ip),
                mac,
                learned,
            })
            .collect()
    }
}

/// Errors building a switch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    #[error("bridge \"{0}\" exists twice")]
    DuplicateBridge(String),
    #[error("port \"{0}\" exists twice")]
    DuplicatePort(String),
    #[error("bridge \"{bridge}\": OpenFlow port {ofport} is used twice")]
    DuplicateOfport { bridge: String, ofport: u32 },
    #[error("patch port \"{port}\": peer \"{peer}\" is not a patch port of another bridge pointing back")]
    BadPeer { port: String, peer: String },
    #[error("no bridge \"{0}\"")]
    NoBridge(String),
    #[error("tunnel port \"{port}\": its underlay bridge is its own bridge")]
    UnderlayLoop { port: String },
}

/// The switch's shared state.
pub struct Switch {
    pub bridges: Vec<Bridge>,
    pub dp_ports: Vec<DpPort>,
    /// Index = virtual port - [`TNL_VPORT_BASE`].
    pub tunnels: Vec<TunnelPort>,
    pub endpoints: Vec<Endpoint>,
    pub neigh: NeighCache,
    pub recirc: RecircTable,
    pub ct: Arc<dyn ConnTracker>,
    /// One capture point per patch port; index = capture point - [`CAPTURE_POINT_BASE`].
    pub patch_captures: Vec<PatchCapture>,
    /// Bumped when a patch port capture starts or stops: translations add or drop the copies.
    capture_generation: AtomicU64,
}

/// Where frames crossing a patch port are copied while a capture on it runs.
pub struct PatchCapture {
    pub name: String,
    pub bridge: BridgeId,
    pub ofport: u32,
    pub slot: Arc<CaptureSlot>,
}

/// Builds a [`Switch`]: bridges and ports first, then [`SwitchBuilder::build`] resolves patch
/// peers and assigns datapath port numbers.
pub struct SwitchBuilder {
    bridges: Vec<(String, FailMode, Fdb, Vec<BridgePort>)>,
    tlv: BTreeMap<BridgeId, Vec<TlvMap>>,
}

impl SwitchBuilder {
    pub fn new() -> Self {
        SwitchBuilder {
            bridges: Vec::new(),
            tlv: BTreeMap::new(),
        }
    }

    /// Sets the Geneve option mappings of a bridge (none by default).
    pub fn tlv_map(&mut self, bridge: BridgeId, map: Vec<TlvMap>) {
        self.tlv.insert(bridge, map);
    }

    pub fn bridge(
        &mut self,
        name: &str,
        fail_mode: FailMode,
        fdb: Fdb,
    ) -> Result<BridgeId, SwitchError> {
        if self.bridges.iter().any(|b| b.0 == name) {
            return Err(SwitchError::DuplicateBridge(name.to_string()));
        }
        self.bridges
            .push((name.to_string(), fail_mode, fdb, Vec::new()));
        Ok((self.bridges.len() - 1) as BridgeId)
    }

    /// Adds a port. For a [`Attachment::Datapath`] port the number given is ignored: datapath
    /// port numbers are assigned by `build` in the order ports are added (see
    /// [`Switch::dp_port_by_name`]).
    pub fn port(&mut self, bridge: BridgeId, port: BridgePort) -> Result<(), SwitchError> {
        if self
            .bridges
            .iter()
            .any(|b| b.3.iter().any(|p| p.name == port.name))
        {
            return Err(SwitchError::DuplicatePort(port.name));
        }
        let b = &mut self.bridges[bridge as usize];
        if b.3.iter().any(|p| p.ofport == port.ofport) {
            return Err(SwitchError::DuplicateOfport {
                bridge: b.0.clone(),
                ofport: port.ofport,
            });
        }
        b.3.push(port);
        Ok(())
    }

    pub fn build(self, ct: Arc<dyn ConnTracker>, now: Nanos) -> Result<Switch, SwitchError> {
        let mut dp_ports = Vec::new();
        let mut tunnels = Vec::new();
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut bridges = Vec::new();
        let mut patch_captures = Vec::new();
        let bridge_ids: BTreeMap<String, BridgeId> = self
            .bridges
            .iter()
            .enumerate()
            .map(|(i, b)| (b.0.clone(), i as BridgeId))
            .collect();
        let mut tlv = self.tlv;
        // An underlay bridge's LOCAL port is where the switch's own frames enter and where
        // frames for its addresses go, even when it has no I/O of its own.
        let underlays: Vec<String> = self
            .bridges
            .iter()
            .flat_map(|b| &b.3)
            .filter_map(|p| match &p.attachment {
                Attachment::Tunnel(t) => Some(t.underlay.clone()),
                _ => None,
            })
            .collect();
        // Where every port name lives, for patch peers.
        let mut by_name: BTreeMap<String, (BridgeId, u32, Option<String>)> = BTreeMap::new();
        for (bi, (_, _, _, ports)) in self.bridges.iter().enumerate() {
            for p in ports {
                let peer = match &p.attachment {
                    Attachment::Patch { peer } => Some(peer.clone()),
                    Attachment::Datapath(_) | Attachment::Tunnel(_) => None,
                };
                by_name.insert(p.name.clone(), (bi as BridgeId, p.ofport, peer));
            }
        }
        for (bi, (name, fail_mode, fdb, ports)) in self.bridges.into_iter().enumerate() {
            let mut map = BTreeMap::new();
            let mut patch = BTreeMap::new();
            for mut p in ports {
                match &p.attachment {
                    Attachment::Datapath(_) => {
                        p.attachment = Attachment::Datapath(dp_ports.len() as u32);
                        dp_ports.push(DpPort {
                            name: p.name.clone(),
                            bridge: bi as BridgeId,
                            ofport: p.ofport,
                            mtu: p.mtu,
                        });
                    }
                    Attachment::Tunnel(t) => {
                        let underlay = *bridge_ids
                            .get(&t.underlay)
                            .ok_or_else(|| SwitchError::NoBridge(t.underlay.clone()))?;
                        if underlay as usize == bi {
                            return Err(SwitchError::UnderlayLoop {
                                port: p.name.clone(),
                            });
                        }
                        let vport = TNL_VPORT_BASE + tunnels.len() as u32;
                        let mut t = t.clone();
                        t.vport = vport;
                        let info = TunnelPortInfo {
                            vport,
                            remote_ip: u32::from(t.remote_ip),
                            local_ip: u32::from(t.local_ip),
                            key: t.key,
                            csum: t.csum,
                            dst_port: t.dst_port,
                            underlay,
                        };
                        let ep = Endpoint {
                            bridge: underlay,
                            ip: t.local_ip,
                            mac: endpoint_mac(t.local_ip),
                        };
                        if !endpoints.contains(&ep) {
                            endpoints.push(ep);
                        }
                        tunnels.push(TunnelPort {
                            name: p.name.clone(),
                            bridge: bi as BridgeId,
                            ofport: p.ofport,
                            info,
                        });
                        p.attachment = Attachment::Tunnel(t);
                    }
                    Attachment::Patch { peer } => {
                        let ok = by_name.get(peer).filter(|(pb, _, back)| {
                            *pb as usize != bi && back.as_deref() == Some(p.name.as_str())
                        });
                        match ok {
                            Some((pb, pof, _)) => {
                                patch.insert(p.ofport, (*pb, *pof));
                                patch_captures.push(PatchCapture {
                                    name: p.name.clone(),
                                    bridge: bi as BridgeId,
                                    ofport: p.ofport,
                                    slot: Arc::default(),
                                });
                            }
                            None => {
                                return Err(SwitchError::BadPeer {
                                    port: p.name.clone(),
                                    peer: peer.clone(),
                                })
                            }
                        }
                    }
                }
                map.insert(p.ofport, p);
            }
            let mut normal_ports: Vec<NormalPort> = map
                .values()
                .map(|p| NormalPort {
                    ofport: p.ofport,
                    vlan: p.vlan.clone(),
                    no_flood: p.no_flood,
                })
                .collect();
            let mut port_list: Vec<u32> = map.keys().copied().collect();
            if underlays.contains(&name) && !map.contains_key(&ofp_port::LOCAL) {
                normal_ports.push(NormalPort {
                    ofport: ofp_port::LOCAL,
                    vlan: VlanMode::TrunkAll,
                    no_flood: false,
                });
                port_list.push(ofp_port::LOCAL);
            }
            let tables = FlowTables::new();
            if fail_mode == FailMode::Standalone {
                let normal = pipeline::flow::FlowSpec {
                    priority: 0,
                    actions: vec![pipeline::flow::Action::Output {
                        target: pipeline::flow::OutputTarget::Normal,
                        max_len: None,
                    }],
                    ..Default::default()
                };
                tables
                    .add_flows(&[normal], now)
                    .expect("the default NORMAL flow is valid");
            }
            bridges.push(Bridge {
                name,
                fail_mode,
                tables,
                fdb,
                ports: map,
                patch,
                normal_ports,
                port_list,
                tlv_map: tlv.remove(&(bi as BridgeId)).unwrap_or_default(),
            });
        }
        Ok(Switch {
            bridges,
            dp_ports,
            tunnels,
            endpoints,
            neigh: NeighCache::default(),
            recirc: RecircTable::new(),
            ct,
            patch_captures,
            capture_generation: AtomicU64::new(0),
        })
    }
}

impl Default for SwitchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    pub fn bridge_id(&self, name: &str) -> Option<BridgeId> {
        self.bridges
            .iter()
            .position(|b| b.name == name)
            .map(|i| i as BridgeId)
    }

    pub fn bridge(&self, name: &str) -> Result<&Bridge, SwitchError> {
        self.bridges
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| SwitchError::NoBridge(name.to_string()))
    }

    /// The name of a datapath port or of a tunnel's virtual port.
    pub fn dp_port_name(&self, dp: u32) -> Option<&str> {
        if (CAPTURE_POINT_BASE..TNL_VPORT_BASE).contains(&dp) {
            return self
                .patch_captures
                .get((dp - CAPTURE_POINT_BASE) as usize)
                .map(|c| c.name.as_str());
        }
        if dp >= TNL_VPORT_BASE {
            return self
                .tunnels
                .get((dp - TNL_VPORT_BASE) as usize)
                .map(|t| t.name.as_str());
        }
        self.dp_ports.get(dp as usize).map(|p| p.name.as_str())
    }

    /// `tnl-neigh-show`: the next-hop cache, one line per entry.
    pub fn format_neigh_show(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from(
            "IP                                            MAC                 Bridge\n",
        );
        s.push_str("==========================================================================\n");
        for n in self.neigh.entries() {
            let m = n.mac;
            let bridge = self
                .bridges
                .get(n.bridge as usize)
                .map_or("?", |b| b.name.as_str());
            let _ = writeln!(
                s,
                "{:<45} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}   {}",
                n.ip, m[0], m[1], m[2], m[3], m[4], m[5], bridge
            );
        }
        s
    }

    /// Learns next hops from a frame NORMAL switches on an underlay bridge: ARP senders, and
    /// the outer source of Geneve frames for the switch's own addresses. Marks in `wc` what it
    /// read, so every frame that could teach something is translated.
    fn snoop(&self, bridge: BridgeId, flow: &FlowKey, wc: &mut FlowKey, now: Nanos) {
        if flow.in_port() == ofp_port::LOCAL {
            return; // the switch's own frames
        }
        wc.set_all(loc::DL_TYPE);
        match flow.dl_type() {
            pipeline::field::ETH_TYPE_ARP => {
                wc.set_all(loc::NW_SRC);
                wc.set_all(loc::ARP_SHA);
                let spa = Ipv4Addr::from(flow.get(loc::NW_SRC) as u32);
                if self.endpoints.iter().any(|e| e.ip == spa) {
                    return;
                }
                let b = (flow.get(loc::ARP_SHA) as u64).to_be_bytes();
                let sha = [b[2], b[3], b[4], b[5], b[6], b[7]];
                self.neigh.learn(bridge, spa, sha, now);
            }
            pipeline::field::ETH_TYPE_IP => {
                wc.set_all(loc::NW_PROTO);
                if flow.nw_proto() != pipeline::field::IPPROTO_UDP {
                    return;
                }
                wc.set_all(loc::TP_DST);
                wc.set_all(loc::NW_DST);
                let dst = Ipv4Addr::from(flow.get(loc::NW_DST) as u32);
                if flow.get(loc::TP_DST) as u16 != pipeline::wire::geneve::UDP_PORT
                    || !self
                        .endpoints
                        .iter()
                        .any(|e| e.bridge == bridge && e.ip == dst)
                {
                    return;
                }
                wc.set_all(loc::NW_SRC);
                wc.set_all(loc::DL_SRC);
                let b = (flow.get(loc::DL_SRC) as u64).to_be_bytes();
                let src = Ipv4Addr::from(flow.get(loc::NW_SRC) as u32);
                self.neigh
                    .learn(bridge, src, [b[2], b[3], b[4], b[5], b[6], b[7]], now);
            }
            _ => {}
        }
    }

    pub fn dp_port_by_name(&self, name: &str) -> Option<u32> {
        self.dp_ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as u32)
    }

    /// The capture slot of patch port `name`, if it is one. The name may be cut to 15
    /// characters as OpenFlow prints it (`patch-brAtlas-t`) when that names one port only.
    pub fn patch_capture(&self, name: &str) -> Option<&Arc<CaptureSlot>> {
        if let Some(c) = self.patch_captures.iter().find(|c| c.name == name) {
            return Some(&c.slot);
        }
        let cut = |n: &str| -> String { n.chars().take(pipeline::flow::MAX_PORT_NAME).collect() };
        let mut it = self.patch_captures.iter().filter(|c| cut(&c.name) == name);
        match (it.next(), it.next()) {
            (Some(c), None) => Some(&c.slot),
            _ => None,
        }
    }

    /// Starts capturing up to `max` frames on patch port `name` (false if it is not one).
    /// Cached translations are redone so that they copy the frames crossing it.
    pub fn start_patch_capture(&self, name: &str, max: usize) -> bool {
        let Some(slot) = self.patch_capture(name) else {
            return false;
        };
        slot.start(max);
        self.capture_generation.fetch_add(1, Ordering::Release);
        true
    }

    /// Stops the capture on patch port `name` and returns what it copied (empty if it is not a
    /// patch port). Cached translations drop their copies.
    pub fn stop_patch_capture(&self, name: &str) -> Vec<crate::hooks::Captured> {
        let Some(slot) = self.patch_capture(name) else {
            return Vec::new();
        };
        let frames = slot.stop();
        self.capture_generation.fetch_add(1, Ordering::Release);
        frames
    }

    /// Copies a frame to capture point `id` if its capture runs.
    pub fn record_capture(&self, id: u32, frame: &[u8]) {
        let Some(c) = id
            .checked_sub(CAPTURE_POINT_BASE)
            .and_then(|i| self.patch_captures.get(i as usize))
        else {
            return;
        };
        // A cached translation may still carry the copy for a moment after the stop.
        if c.slot.active() {
            c.slot.record(frame);
        }
    }

    /// Pins the current flow tables of every bridge for one batch of frames: every frame of the
    /// batch sees one version of each table set, never half of a replace.
    pub fn view(&self) -> SwitchView<'_> {
        let snaps: Vec<Arc<Snapshot>> = self.bridges.iter().map(|b| b.tables.snapshot()).collect();
        self.view_of(Cow::Owned(snaps))
    }

    /// [`Switch::view`] for a thread that polls again and again: the tables it pinned last
    /// time are kept in `pinned` and taken anew only from a bridge whose tables have been
    /// published since. Pinning every bridge afresh on every poll (an allocation, and a guarded
    /// load and two reference counts per bridge) was 11% of a polling thread forwarding SNAT
    /// traffic at 400 kpps.
    pub fn view_pinned<'a>(&'a self, pinned: &'a mut PinnedTables) -> SwitchView<'a> {
        if pinned.snaps.len() != self.bridges.len() {
            pinned.seen = self.bridges.iter().map(|b| b.tables.published()).collect();
            pinned.snaps = self.bridges.iter().map(|b| b.tables.snapshot()).collect();
        } else {
            for ((b, seen), snap) in self
                .bridges
                .iter()
                .zip(pinned.seen.iter_mut())
                .zip(pinned.snaps.iter_mut())
            {
                let now = b.tables.published();
                if *seen != now {
                    *seen = now;
                    *snap = b.tables.snapshot();
                }
            }
        }
        self.view_of(Cow::Borrowed(&pinned.snaps))
    }

    fn view_of<'a>(&'a self, snaps: Cow<'a, [Arc<Snapshot>]>) -> SwitchView<'a> {
        let mut generation = self.neigh.generation().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        generation = generation.wrapping_add(
            self.capture_generation
                .load(Ordering::Acquire)
                .wrapping_mul(0xbf58_476d_1ce4_e5b9),
        );
        for (b, s) in self.bridges.iter().zip(snaps.iter()) {
            generation = generation
                .wrapping_add(s.generation())
                .wrapping_add(b.fdb.generation());
        }
        SwitchView {
            sw: self,
            snaps,
            generation,
        }
    }

    /// Removes aged-out MAC entries and expired flows.
    pub fn expire(&self, now: Nanos) {
        for b in &self.bridges {
            b.fdb.expire(now);
            b.tables.expire(now);
        }
        self.neigh.expire(now);
    }
}

/// The tables a datapath thread keeps pinned between polls ([`Switch::view_pinned`]).
#[derive(Default)]
pub struct PinnedTables {
    /// Per bridge, `FlowTables::published` when its snapshot was taken.
    seen: Vec<u64>,
    snaps: Vec<Arc<Snapshot>>,
}

/// The switch as one batch of frames sees it (tables pinned).
pub struct SwitchView<'a> {
    pub sw: &'a Switch,
    snaps: Cow<'a, [Arc<Snapshot>]>,
    /// Changes whenever a flow table or a learned MAC changes.
    pub generation: u64,
}

impl SwitchView<'_> {
    /// What the engine needs to switch a batch under this view.
    pub fn shared(&self) -> Shared<'_> {
        Shared {
            env: self,
            recirc: &self.sw.recirc,
            ct: &*self.sw.ct,
            generation: self.generation,
        }
    }
}

impl XlateEnv for SwitchView<'_> {
    fn ingress(&self, dp_port: u32) -> Option<(BridgeId, u32)> {
        if dp_port >= TNL_VPORT_BASE {
            return self
                .sw
                .tunnels
                .get((dp_port - TNL_VPORT_BASE) as usize)
                .map(|t| (t.bridge, t.ofport));
        }
        self.sw
            .dp_ports
            .get(dp_port as usize)
            .map(|p| (p.bridge, p.ofport))
    }

    fn lookup(
        &self,
        bridge: BridgeId,
        table: u8,
        key: &FlowKey,
        wc: &mut FlowKey,
    ) -> Option<RuleRef> {
        let r = self.snaps.get(bridge as usize)?.lookup(table, key, wc)?;
        Some(r.clone() as RuleRef)
    }

    fn port(&self, bridge: BridgeId, ofport: u32) -> Option<PortKind> {
        let b = self.sw.bridges.get(bridge as usize)?;
        if let Some((pb, pof)) = b.patch.get(&ofport) {
            return Some(PortKind::Patch {
                peer_bridge: *pb,
                peer_port: *pof,
            });
        }
        match &b.ports.get(&ofport)?.attachment {
            Attachment::Datapath(dp) => Some(PortKind::Datapath(*dp)),
            Attachment::Patch { .. } => None,
            Attachment::Tunnel(t) => self
                .sw
                .tunnels
                .get(t.vport.wrapping_sub(TNL_VPORT_BASE) as usize)
                .map(|tp| PortKind::Tunnel(tp.info)),
        }
    }

    fn ports(&self, bridge: BridgeId, out: &mut Vec<u32>) {
        if let Some(b) = self.sw.bridges.get(bridge as usize) {
            out.extend_from_slice(&b.port_list);
        }
    }

    fn normal(
        &self,
        bridge: BridgeId,
        flow: &FlowKey,
        wc: &mut FlowKey,
        now: Nanos,
        out: &mut Vec<NormalOutput>,
    ) {
        if let Some(b) = self.sw.bridges.get(bridge as usize) {
            if self.is_underlay(bridge) {
                self.sw.snoop(bridge, flow, wc, now);
            }
            mac_learning::normal(&b.fdb, &b.normal_ports, flow, wc, now, out);
        }
    }

    fn is_underlay(&self, bridge: BridgeId) -> bool {
        self.sw.endpoints.iter().any(|e| e.bridge == bridge)
    }

    fn local_endpoint(&self, bridge: BridgeId, ip: u32) -> Option<[u8; 6]> {
        let ip = Ipv4Addr::from(ip);
        self.sw
            .endpoints
            .iter()
            .find(|e| e.bridge == bridge && e.ip == ip)
            .map(|e| e.mac)
    }

    fn tunnel_rx(&self, underlay: BridgeId, local: u32, remote: u32, out: &mut Vec<TunnelRx>) {
        // Fixed-key ports first: a port for one VNI wins over a key=flow port.
        for fixed in [true, false] {
            for t in &self.sw.tunnels {
                let i = &t.info;
                if i.underlay == underlay
                    && i.local_ip == local
                    && i.remote_ip == remote
                    && i.key.is_some() == fixed
                {
                    out.push(TunnelRx {
                        vport: i.vport,
                        vni: i.key,
                        tlv: self.tlv_map(t.bridge).to_vec(),
                    });
                }
            }
        }
    }

    fn neighbor(&self, underlay: BridgeId, ip: u32) -> Option<[u8; 6]> {
        self.sw.neigh.lookup(underlay, ip)
    }

    fn tlv_map(&self, bridge: BridgeId) -> &[TlvMap] {
        self.sw
            .bridges
            .get(bridge as usize)
            .map_or(&[], |b| b.tlv_map.as_slice())
    }

    fn dp_mtu(&self, dp: u32) -> u32 {
        self.sw
            .dp_ports
            .get(dp as usize)
            .map_or(DEFAULT_MTU, |p| p.mtu)
    }

    fn patch_capture(&self, bridge: BridgeId, ofport: u32) -> Option<u32> {
        self.sw
            .patch_captures
            .iter()
            .position(|c| c.bridge == bridge && c.ofport == ofport && c.slot.active())
            .map(|i| CAPTURE_POINT_BASE + i as u32)
    }

    fn bridge_name(&self, bridge: BridgeId) -> String {
        self.sw
            .bridges
            .get(bridge as usize)
            .map_or_else(|| format!("bridge{bridge}"), |b| b.name.clone())
    }

    fn port_name(&self, bridge: BridgeId, ofport: u32) -> Option<String> {
        self.sw
            .bridges
            .get(bridge as usize)?
            .ports
            .get(&ofport)
            .map(|p| p.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::PinnedTables;
    use crate::config;
    use crate::datapath::Datapath;
    use crate::port::memory::MemoryHandle;
    use crate::setup;
    use pipeline::cache::FlowCache;
    use pipeline::compose::PacketBuilder;
    use pipeline::flow::parse::{parse_flows, ParseContext};
    use pipeline::odp::format_actions;
    use pipeline::table::FlowFilter;
    use std::sync::Arc;

    /// br0 (NORMAL, port `a`) patched to br1 (port `b`); br1 tags what goes to br0 with VLAN 5.
    const CFG: &str = r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "a"
type = "memory"
ofport = 1
[[bridge.port]]
name = "p0-to-br1-with-a-long-name"
type = "patch"
ofport = 14
peer = "p1"
[[bridge]]
name = "br1"
fail_mode = "secure"
flows = "br1.flows"
[[bridge.port]]
name = "p1"
type = "patch"
ofport = 1
peer = "p0-to-br1-with-a-long-name"
[[bridge.port]]
name = "b"
type = "memory"
ofport = 2
"#;

    const FLOWS: &str = "\
priority=10,in_port=b actions=mod_vlan_vid:5,output:p1,strip_vlan
priority=10,in_port=p1,dl_vlan=5 actions=strip_vlan,output:b
";

    fn frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
        PacketBuilder::udp4(
            src,
            dst,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            1000,
            2000,
        )
        .build()
    }

    fn vid(f: &[u8]) -> Option<u16> {
        (f.get(12..14) == Some(&[0x81, 0x00])).then(|| u16::from_be_bytes([f[14], f[15]]) & 0xfff)
    }

    /// The two-bridge switch of [`CFG`] with [`FLOWS`] in br1 over memory ports, a datapath
    /// switching them, and the datapath numbers of ports `a` (br0) and `b` (br1).
    struct Rig {
        built: setup::Built,
        handles: Vec<MemoryHandle>,
        dp: Datapath,
        a: usize,
        b: usize,
    }

    fn rig(tag: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("xvs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("br1.flows"), FLOWS).unwrap();
        let cfg = config::parse(CFG, &dir, "t.toml").unwrap();
        let built = setup::build(&cfg, 0).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let (ports, handles) = setup::memory_ports(&built.ports);
        let port = |name| built.switch.dp_port_by_name(name).unwrap() as usize;
        let (a, b) = (port("a"), port("b"));
        Rig {
            handles,
            dp: Datapath::new(ports, FlowCache::default()),
            a,
            b,
            built,
        }
    }

    #[test]
    fn rule_counters_are_credited_at_most_every_interval_and_on_demand() {
        let Rig {
            built,
            handles,
            mut dp,
            b,
            ..
        } = rig("rule-stats");
        let sw = &built.switch;
        let f = frame([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xa]);
        // The br1 rule every frame from b goes through.
        let counted = || -> u64 {
            sw.bridge("br1")
                .unwrap()
                .tables
                .dump(&FlowFilter::all())
                .iter()
                .filter(|r| r.spec.priority == 10 && r.spec.actions.len() == 3)
                .map(|r| r.stats.n_packets())
                .sum()
        };

        // Default: credited after every poll.
        handles[b].inject(&f);
        dp.poll_once(sw, 1_000);
        assert_eq!(counted(), 1);

        dp.set_rule_stats_interval(1_000_000);
        dp.credit_rule_stats(2_000);
        handles[b].inject(&f);
        dp.poll_once(sw, 3_000);
        handles[b].inject(&f);
        dp.poll_once(sw, 500_000);
        assert_eq!(counted(), 1, "within the interval the rule waits");
        dp.poll_once(sw, 1_002_000);
        assert_eq!(counted(), 3, "the interval is up: both frames credited");

        handles[b].inject(&f);
        dp.poll_once(sw, 1_003_000);
        assert_eq!(counted(), 3);
        // What a thread does before it sleeps.
        dp.credit_rule_stats(1_004_000);
        assert_eq!(counted(), 4);
    }

    #[test]
    fn pinned_tables_follow_every_publication_and_are_kept_otherwise() {
        let Rig {
            built,
            handles,
            mut dp,
            a,
            b,
        } = rig("pinned");
        let sw = &built.switch;
        let f = frame([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xa]);
        let send = |dp: &mut Datapath, now| {
            handles[b].inject(&f);
            dp.poll_once(sw, now);
            vid(&handles[a].take_transmitted()[0])
        };
        assert_eq!(send(&mut dp, 1), Some(5));

        // Unchanged tables: the same snapshots are kept.
        let mut pinned = PinnedTables::default();
        let first: Vec<_> = {
            sw.view_pinned(&mut pinned);
            pinned.snaps.clone()
        };
        sw.view_pinned(&mut pinned);
        assert!(first
            .iter()
            .zip(&pinned.snaps)
            .all(|(x, y)| Arc::ptr_eq(x, y)));

        // br1's flows replaced: the next poll switches with the new ones.
        let br1 = sw.bridge("br1").unwrap();
        let text = "priority=10,in_port=b actions=mod_vlan_vid:7,output:p1,strip_vlan\n\
                    priority=10,in_port=p1,dl_vlan=7 actions=strip_vlan,output:b\n";
        let specs = parse_flows(text, &ParseContext::with_ports(br1.port_names())).unwrap();
        br1.tables.replace_flows(&specs, 2).unwrap();
        assert_eq!(send(&mut dp, 3), Some(7));
        sw.view_pinned(&mut pinned);
        let br1_at = sw.bridges.iter().position(|x| x.name == "br1").unwrap();
        assert!(Arc::ptr_eq(&pinned.snaps[br1_at], &br1.tables.snapshot()));
        assert!(
            Arc::ptr_eq(&pinned.snaps[1 - br1_at], &first[1 - br1_at]),
            "br0 did not change"
        );
    }

    #[test]
    fn patch_port_capture_copies_both_directions_only_while_running() {
        let Rig {
            built,
            handles,
            mut dp,
            a,
            b,
        } = rig("patch-capture");
        let sw = &built.switch;
        let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        let mut now = 1;
        let mut send = |dp: &mut Datapath, port: usize, f: &[u8]| {
            handles[port].inject(f);
            now += 1;
            dp.poll_once(sw, now);
        };

        // Before any capture: the path is cached without copies.
        send(&mut dp, b, &frame(mb, ma));
        assert_eq!(vid(&handles[a].take_transmitted()[0]), Some(5));
        assert!(!sw.patch_capture("p1").unwrap().active());

        // The cut OpenFlow name resolves when it is unambiguous; unknown names do not.
        assert!(sw.patch_capture("p0-to-br1-with-").is_some());
        assert!(sw.patch_capture("nope").is_none());
        assert!(
            !sw.start_patch_capture("a", 4),
            "a has I/O: not a patch port"
        );

        assert!(sw.start_patch_capture("p1", 4));
        // The cached translation is redone: the frame br1 sends to br0 is copied as it crosses,
        // tagged, and still delivered.
        send(&mut dp, b, &frame(mb, ma));
        assert_eq!(vid(&handles[a].take_transmitted()[0]), Some(5));
        // The other way: br0 learned mb behind its patch port from the frames above, so a
        // frame from a to mb crosses to br1, which takes it in.
        let mut tagged = frame(ma, mb);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        send(&mut dp, a, &tagged);
        assert_eq!(handles[b].take_transmitted().len(), 1);
        let flows: Vec<String> = dp
            .engine
            .cache
            .iter()
            .map(|(e, _)| format_actions(&e.actions, &|p| sw.dp_port_name(p).map(str::to_string)))
            .collect();
        assert!(flows.iter().any(|f| f.contains("capture(p1)")), "{flows:?}");
        let got = sw.stop_patch_capture("p1");
        assert_eq!(got.len(), 2, "one frame each way");
        assert_eq!(vid(&got[0].data), Some(5));
        assert_eq!(&got[0].data[6..12], &mb);
        assert_eq!(vid(&got[1].data), Some(5));
        assert_eq!(&got[1].data[6..12], &ma);

        // Stopped: re-translated without copies, nothing recorded.
        send(&mut dp, b, &frame(mb, ma));
        assert_eq!(handles[a].take_transmitted().len(), 1);
        assert!(dp
            .engine
            .cache
            .iter()
            .all(|(e, _)| !format_actions(&e.actions, &|_| None).contains("capture")));
        assert_eq!(sw.patch_capture("p1").unwrap().count(), 0);
    }
}
