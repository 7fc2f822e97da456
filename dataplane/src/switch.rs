//! The switch: bridges with their OpenFlow ports, flow tables and MAC learning, the mapping from
//! datapath ports to bridge ports, and the view of all that translation works against.
//!
//! Owns the switch's shared state (read by every datapath thread). It does not own port I/O
//! (datapath threads do) and does not parse configuration files.

use crate::mac_learning::{self, Fdb, NormalPort, VlanMode};
use pipeline::ct::{ConnTracker, Nanos};
use pipeline::flow::{ofp_port, PortNames};
use pipeline::key::FlowKey;
use pipeline::table::{FlowTables, Snapshot};
use pipeline::xlate::{BridgeId, NormalOutput, PortKind, RecircTable, RuleRef, XlateEnv};
use std::collections::BTreeMap;
use std::sync::Arc;

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
}

/// One port of a bridge.
#[derive(Clone, Debug)]
pub struct BridgePort {
    pub name: String,
    pub ofport: u32,
    pub attachment: Attachment,
    pub vlan: VlanMode,
    pub no_flood: bool,
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
}

/// The switch's shared state.
pub struct Switch {
    pub bridges: Vec<Bridge>,
    pub dp_ports: Vec<DpPort>,
    pub recirc: RecircTable,
    pub ct: Arc<dyn ConnTracker>,
}

/// Builds a [`Switch`]: bridges and ports first, then [`SwitchBuilder::build`] resolves patch
/// peers and assigns datapath port numbers.
pub struct SwitchBuilder {
    bridges: Vec<(String, FailMode, Fdb, Vec<BridgePort>)>,
}

impl SwitchBuilder {
    pub fn new() -> Self {
        SwitchBuilder {
            bridges: Vec::new(),
        }
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
        let mut bridges = Vec::new();
        // Where every port name lives, for patch peers.
        let mut by_name: BTreeMap<String, (BridgeId, u32, Option<String>)> = BTreeMap::new();
        for (bi, (_, _, _, ports)) in self.bridges.iter().enumerate() {
            for p in ports {
                let peer = match &p.attachment {
                    Attachment::Patch { peer } => Some(peer.clone()),
                    Attachment::Datapath(_) => None,
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
                        });
                    }
                    Attachment::Patch { peer } => {
                        let ok = by_name.get(peer).filter(|(pb, _, back)| {
                            *pb as usize != bi && back.as_deref() == Some(p.name.as_str())
                        });
                        match ok {
                            Some((pb, pof, _)) => {
                                patch.insert(p.ofport, (*pb, *pof));
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
            let normal_ports = map
                .values()
                .map(|p| NormalPort {
                    ofport: p.ofport,
                    vlan: p.vlan.clone(),
                    no_flood: p.no_flood,
                })
                .collect();
            let port_list = map.keys().copied().collect();
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
            });
        }
        Ok(Switch {
            bridges,
            dp_ports,
            recirc: RecircTable::new(),
            ct,
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

    pub fn dp_port_by_name(&self, name: &str) -> Option<u32> {
        self.dp_ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as u32)
    }

    /// Pins the current flow tables of every bridge for one batch of frames: every frame of the
    /// batch sees one version of each table set, never half of a replace.
    pub fn view(&self) -> SwitchView<'_> {
        let snaps: Vec<Arc<Snapshot>> = self.bridges.iter().map(|b| b.tables.snapshot()).collect();
        let mut generation = 0u64;
        for (b, s) in self.bridges.iter().zip(&snaps) {
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
    }
}

/// The switch as one batch of frames sees it (tables pinned).
pub struct SwitchView<'a> {
    pub sw: &'a Switch,
    snaps: Vec<Arc<Snapshot>>,
    /// Changes whenever a flow table or a learned MAC changes.
    pub generation: u64,
}

impl XlateEnv for SwitchView<'_> {
    fn ingress(&self, dp_port: u32) -> Option<(BridgeId, u32)> {
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
        match b.ports.get(&ofport)?.attachment {
            Attachment::Datapath(dp) => Some(PortKind::Datapath(dp)),
            Attachment::Patch { .. } => None,
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
            mac_learning::normal(&b.fdb, &b.normal_ports, flow, wc, now, out);
        }
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
