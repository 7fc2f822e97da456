//! Turning a checked [`Config`] into a running switch's parts: the [`Switch`] (bridges, ports,
//! VLAN modes, patch peers, flow tables loaded from each bridge's flow file), the connection
//! tracker, and the description of every datapath port's I/O in datapath-port order.
//!
//! This module owns the mapping from configuration to switch objects and the all-or-nothing
//! rule: if any flow file has an error, nothing is built. It opens ports only when asked
//! ([`open_ports`] for the daemon, [`memory_ports`] for offline replay) and never starts threads.

use crate::config::{self, Config, PortConfig, PortType, PortVlan, Trunks};
use crate::mac_learning::{Fdb, VlanMode};
use crate::port::afxdp::{self, AfXdpConfig, AfXdpPort, XdpMode};
use crate::port::link;
use crate::port::memory::{MemoryHandle, MemoryPort};
use crate::port::pcap::PcapPort;
use crate::port::tap::TapPort;
use crate::port::{Port, PortError, MAX_FRAME_LEN};
use crate::switch::{
    Attachment, BridgePort, FailMode, Switch, SwitchBuilder, SwitchError, TunnelConfig, DEFAULT_MTU,
};
use pipeline::ct::{ConnTracker, Nanos};
use pipeline::flow::parse::{parse_flows, ParseContext};
use pipeline::odp::TlvMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors turning a configuration into a switch.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// Every error of every flow file, each as `FILE:LINE:COL: message`.
    #[error("{}", .0.join("\n"))]
    Flows(Vec<String>),
    #[error("port \"{port}\": {what} ports are not supported yet")]
    Unsupported { port: String, what: &'static str },
    #[error("geneve port \"{port}\": {why}")]
    Tunnel { port: String, why: String },
    #[error("bridge \"{bridge}\" tlv_map: {why}")]
    TlvMap { bridge: String, why: String },
    #[error("port \"{port}\": {source}")]
    Port {
        port: String,
        #[source]
        source: PortError,
    },
}

/// The I/O behind one datapath port.
#[derive(Clone, Debug)]
pub enum PortIo {
    Afxdp(AfXdpConfig),
    /// A TAP device (an `internal` port).
    Tap {
        ifname: String,
        mtu: Option<u32>,
    },
    Pcap {
        rx: Option<PathBuf>,
        tx: Option<PathBuf>,
    },
    Memory,
}

/// A datapath port as the configuration describes it.
#[derive(Clone, Debug)]
pub struct DpPortSpec {
    pub name: String,
    pub io: PortIo,
}

/// What [`build`] produces.
pub struct Built {
    pub switch: Arc<Switch>,
    /// Index = datapath port number.
    pub ports: Vec<DpPortSpec>,
    pub conntrack: Arc<conntrack::Tracker>,
}

/// Maps the configuration's VLAN settings to MAC learning's.
pub fn vlan_mode(v: &PortVlan) -> VlanMode {
    let list = |t: &Trunks| match t {
        Trunks::All => Vec::new(),
        Trunks::Only(v) => v.clone(),
    };
    match v {
        PortVlan::Access(tag) => VlanMode::Access(*tag),
        PortVlan::Trunk(Trunks::All) => VlanMode::TrunkAll,
        PortVlan::Trunk(Trunks::Only(v)) => VlanMode::Trunk(v.clone()),
        PortVlan::NativeTagged { tag, trunks } => VlanMode::NativeTagged {
            tag: *tag,
            trunks: list(trunks),
        },
        PortVlan::NativeUntagged { tag, trunks } => VlanMode::NativeUntagged {
            tag: *tag,
            trunks: list(trunks),
        },
    }
}

fn port_io(p: &PortConfig) -> Result<Option<PortIo>, SetupError> {
    Ok(Some(match &p.kind {
        PortType::Afxdp {
            ifname,
            xdp_mode,
            queues,
            mtu,
            frames,
        } => {
            let mut c = AfXdpConfig::new(ifname);
            c.queues = (0..*queues).collect();
            c.mtu = *mtu;
            c.frame_count = *frames;
            c.xdp_mode = match xdp_mode {
                config::XdpMode::Auto => XdpMode::Auto,
                config::XdpMode::Native => XdpMode::Native,
                config::XdpMode::Generic => XdpMode::Generic,
            };
            PortIo::Afxdp(c)
        }
        PortType::Internal { ifname, mtu } => PortIo::Tap {
            ifname: ifname.clone(),
            mtu: *mtu,
        },
        PortType::Pcap { rx, tx } => PortIo::Pcap {
            rx: rx.clone(),
            tx: tx.clone(),
        },
        PortType::Memory => PortIo::Memory,
        PortType::Patch { .. } | PortType::Geneve(_) => return Ok(None),
    }))
}

/// The MTU a port sends with.
fn port_mtu(p: &PortConfig) -> u32 {
    match &p.kind {
        PortType::Afxdp { mtu: Some(m), .. } | PortType::Internal { mtu: Some(m), .. } => *m,
        _ => DEFAULT_MTU,
    }
}

/// A geneve port's tunnel settings. The underlay is the first bridge without geneve ports (the
/// one holding the uplink, br0 in the reference deployment); a port without `local_ip` takes
/// the one the switch's other geneve ports agree on.
fn tunnel_config(
    cfg: &Config,
    port: &PortConfig,
    g: &config::GeneveConfig,
) -> Result<TunnelConfig, SetupError> {
    let err = |why: String| SetupError::Tunnel {
        port: port.name.clone(),
        why,
    };
    if g.dst_port != config::GENEVE_PORT {
        return Err(err(format!(
            "dst_port {} is not supported (only {})",
            g.dst_port,
            config::GENEVE_PORT
        )));
    }
    let local_ip = match g.local_ip {
        Some(ip) => ip,
        None => {
            let mut known: Vec<std::net::Ipv4Addr> = cfg
                .bridges
                .iter()
                .flat_map(|b| &b.ports)
                .filter_map(|p| match &p.kind {
                    PortType::Geneve(o) => o.local_ip,
                    _ => None,
                })
                .collect();
            known.sort();
            known.dedup();
            match known.as_slice() {
                [one] => *one,
                [] => {
                    return Err(err(
                        "local_ip is needed (no other geneve port gives one)".into()
                    ))
                }
                _ => {
                    return Err(err(
                        "local_ip is needed (other geneve ports give different ones)".into(),
                    ))
                }
            }
        }
    };
    let underlay = cfg
        .bridges
        .iter()
        .find(|b| {
            !b.ports
                .iter()
                .any(|p| matches!(p.kind, PortType::Geneve(_)))
        })
        .ok_or_else(|| err("no bridge without geneve ports to be the underlay".into()))?;
    Ok(TunnelConfig {
        remote_ip: g.remote_ip,
        local_ip,
        key: match g.key {
            config::TunnelKey::Flow => None,
            config::TunnelKey::Vni(v) => Some(v),
        },
        csum: g.csum,
        dst_port: g.dst_port,
        underlay: underlay.name.clone(),
        vport: 0,
    })
}

/// A bridge's option mappings as the datapath uses them: one 32-bit slot each.
fn tlv_map(b: &config::BridgeConfig) -> Result<Vec<TlvMap>, SetupError> {
    b.tlv_map
        .iter()
        .map(|m| {
            let slots = pipeline::field::TUN_METADATA_MAPPED;
            if m.len != 4 || m.field >= slots {
                return Err(SetupError::TlvMap {
                    bridge: b.name.clone(),
                    why: format!(
                        "option {:#x}/{:#x} -> tun_metadata{} with len {}: only 4-byte options in tun_metadata0..{} are supported",
                        m.class,
                        m.kind,
                        m.field,
                        m.len,
                        slots - 1
                    ),
                });
            }
            Ok(TlvMap {
                class: m.class,
                typ: m.kind,
                len: m.len,
                field: m.field,
            })
        })
        .collect()
}

/// The tracker for a configuration's limits.
pub fn conntrack_for(cfg: &Config) -> Arc<conntrack::Tracker> {
    let t = conntrack::Tracker::new(conntrack::Config {
        max_conns: cfg.datapath.ct_max as usize,
        ..Default::default()
    });
    for (zone, n) in &cfg.datapath.ct_zone_limits {
        t.set_zone_limit(*zone, *n);
    }
    Arc::new(t)
}

/// Builds the switch: bridges, ports, flow files. Opens no port. A LOCAL port the file did not
/// declare gets no datapath port (nothing to send to), as the configuration documents.
pub fn build(cfg: &Config, now: Nanos) -> Result<Built, SetupError> {
    // Parse every flow file first: nothing is built unless all of them are good.
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    for b in &cfg.bridges {
        let Some(path) = &b.flows else {
            flows.push(None);
            continue;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                flows.push(None);
                continue;
            }
        };
        match parse_flows(&text, &ParseContext::with_ports(b.port_names())) {
            Ok(f) => flows.push(Some(f)),
            Err(es) => {
                errors.extend(es.iter().map(|e| format!("{}:{e}", path.display())));
                flows.push(None);
            }
        }
    }
    if !errors.is_empty() {
        return Err(SetupError::Flows(errors));
    }

    let mut sb = SwitchBuilder::new();
    let mut ports = Vec::new();
    for b in &cfg.bridges {
        let fail = match b.fail_mode {
            config::FailMode::Standalone => FailMode::Standalone,
            config::FailMode::Secure => FailMode::Secure,
        };
        let fdb = Fdb::new(cfg.datapath.fdb_aging as u64, cfg.datapath.fdb_max as usize);
        let bi = sb.bridge(&b.name, fail, fdb)?;
        sb.tlv_map(bi, tlv_map(b)?);
        for p in &b.ports {
            if p.implicit {
                continue;
            }
            let attachment = match &p.kind {
                PortType::Patch { peer } => Attachment::Patch { peer: peer.clone() },
                PortType::Geneve(g) => Attachment::Tunnel(tunnel_config(cfg, p, g)?),
                _ => {
                    let io = port_io(p)?.expect("only patch and geneve ports have no I/O");
                    ports.push(DpPortSpec {
                        name: p.name.clone(),
                        io,
                    });
                    Attachment::Datapath(0)
                }
            };
            sb.port(
                bi,
                BridgePort {
                    name: p.name.clone(),
                    ofport: p.ofport,
                    attachment,
                    vlan: vlan_mode(&p.vlan),
                    no_flood: p.no_flood,
                    mtu: port_mtu(p),
                },
            )?;
        }
    }
    let ct = conntrack_for(cfg);
    let sw = sb.build(ct.clone() as Arc<dyn ConnTracker>, now)?;
    for (b, f) in sw.bridges.iter().zip(&flows) {
        if let Some(specs) = f {
            // The flow file is the bridge's initial table, default NORMAL flow included or not.
            if let Err(e) = b.tables.replace_flows(specs, now) {
                let file = cfg
                    .bridge(&b.name)
                    .and_then(|c| c.flows.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                return Err(SetupError::Flows(vec![format!("{file}: {e}")]));
            }
        }
    }
    // Datapath port numbers are assigned in the order ports were added, as collected above.
    debug_assert!(ports
        .iter()
        .enumerate()
        .all(|(i, p)| sw.dp_port_by_name(&p.name) == Some(i as u32)));
    Ok(Built {
        switch: Arc::new(sw),
        ports,
        conntrack: ct,
    })
}

/// Opens the real I/O of every datapath port, in order. On error the ports opened so far are
/// dropped (closing them).
pub fn open_ports(specs: &[DpPortSpec]) -> Result<Vec<Box<dyn Port>>, SetupError> {
    let mut out: Vec<Box<dyn Port>> = Vec::with_capacity(specs.len());
    for s in specs {
        let err = |source| SetupError::Port {
            port: s.name.clone(),
            source,
        };
        let p: Box<dyn Port> = match &s.io {
            PortIo::Afxdp(c) => {
                if let Some(m) = c.mtu {
                    // Before XDP is attached: veth checks its peer's MTU against the program
                    // at attach time and caps later changes while one is attached.
                    if m > afxdp::MAX_MTU {
                        return Err(err(PortError::Config(format!(
                            "mtu {m} is above {}, the largest an AF_XDP port carries",
                            afxdp::MAX_MTU
                        ))));
                    }
                    link::set_mtu(&c.ifname, m).map_err(err)?;
                }
                Box::new(AfXdpPort::open(c).map_err(err)?)
            }
            PortIo::Tap { ifname, mtu } => {
                let most = (MAX_FRAME_LEN - 18) as u32;
                if mtu.is_some_and(|m| m > most) {
                    return Err(err(PortError::Config(format!(
                        "mtu {} is above {most}, the largest an internal (TAP) port carries",
                        mtu.unwrap_or_default()
                    ))));
                }
                let tap = TapPort::open(ifname).map_err(err)?;
                if let Some(m) = mtu {
                    link::set_mtu(ifname, *m).map_err(err)?;
                }
                Box::new(tap)
            }
            PortIo::Pcap { rx, tx } => {
                Box::new(PcapPort::open(&s.name, rx.as_deref(), tx.as_deref()).map_err(err)?)
            }
            PortIo::Memory => Box::new(MemoryPort::new(&s.name).0),
        };
        out.push(p);
    }
    Ok(out)
}

/// Every datapath port as an in-memory port, whatever its configured type (offline runs).
pub fn memory_ports(specs: &[DpPortSpec]) -> (Vec<Box<dyn Port>>, Vec<MemoryHandle>) {
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    let mut handles = Vec::new();
    for s in specs {
        // Replay collects every output of a frame before the next one: room for a flood.
        let (p, h) = MemoryPort::with_tx_capacity(&s.name, 1 << 16);
        ports.push(Box::new(p));
        handles.push(h);
    }
    (ports, handles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str, dir: &Path) -> Config {
        config::parse(text, dir, "test.toml").unwrap()
    }

    #[test]
    fn builds_bridges_ports_and_patch_peers() {
        let dir = std::env::temp_dir();
        let c = cfg(
            r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "a"
type = "memory"
ofport = 3
tag = 10
[[bridge.port]]
name = "p0"
type = "patch"
peer = "p1"
[[bridge]]
name = "br1"
fail_mode = "secure"
[[bridge.port]]
name = "p1"
type = "patch"
peer = "p0"
[[bridge.port]]
name = "b"
type = "memory"
"#,
            &dir,
        );
        let b = build(&c, 0).unwrap();
        assert_eq!(b.ports.len(), 2);
        assert_eq!(b.ports[0].name, "a");
        assert_eq!(b.ports[1].name, "b");
        let br0 = b.switch.bridge("br0").unwrap();
        assert_eq!(br0.port_by_name("a").unwrap().ofport, 3);
        assert_eq!(br0.port_by_name("a").unwrap().vlan, VlanMode::Access(10));
        // Standalone starts with NORMAL, secure starts empty.
        assert_eq!(br0.tables.snapshot().n_rules(), 1);
        assert_eq!(
            b.switch.bridge("br1").unwrap().tables.snapshot().n_rules(),
            0
        );
    }

    #[test]
    fn a_bad_flow_file_fails_everything_with_positions() {
        let dir = std::env::temp_dir().join(format!("xvs-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.flows"), "priority=5,actions=drop\n").unwrap();
        std::fs::write(
            dir.join("bad.flows"),
            "priority=1,actions=NORMAL\n\npriority=2,in_port=nope,actions=drop\n",
        )
        .unwrap();
        let c = cfg(
            r#"
[[bridge]]
name = "br0"
flows = "good.flows"
[[bridge.port]]
name = "a"
type = "memory"
[[bridge]]
name = "br1"
flows = "bad.flows"
[[bridge.port]]
name = "b"
type = "memory"
"#,
            &dir,
        );
        let e = build(&c, 0).err().expect("must fail");
        let text = e.to_string();
        assert!(text.contains("bad.flows:3:"), "{text}");
        let ok = cfg(
            r#"
[[bridge]]
name = "br0"
flows = "good.flows"
[[bridge.port]]
name = "a"
type = "memory"
"#,
            &dir,
        );
        let b = build(&ok, 0).unwrap();
        let rules = b
            .switch
            .bridge("br0")
            .unwrap()
            .tables
            .dump(&pipeline::table::FlowFilter::all());
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].priority(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const TUNNELS: &str = r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "eth1"
type = "memory"
ofport = 10
[[bridge]]
name = "brAtlas"
fail_mode = "secure"
[[bridge.port]]
name = "tap2"
type = "memory"
ofport = 4
[[bridge.port]]
name = "ovn-daf4b9-0"
type = "geneve"
remote_ip = "172.22.1.63"
local_ip = "172.22.1.61"
key = "flow"
csum = true
[[bridge.port]]
name = "ovn-ba3356-0"
type = "geneve"
remote_ip = "172.22.1.62"
key = 7
"#;

    #[test]
    fn geneve_ports_become_tunnels_over_the_uplink_bridge() {
        let dir = std::env::temp_dir();
        let b = build(&cfg(TUNNELS, &dir), 0).unwrap();
        // Tunnels have no I/O: only the two memory ports are datapath ports.
        assert_eq!(b.ports.len(), 2);
        let sw = &b.switch;
        assert_eq!(sw.tunnels.len(), 2);
        let br0 = sw.bridge_id("br0").unwrap();
        let t0 = &sw.tunnels[0];
        assert_eq!(t0.name, "ovn-daf4b9-0");
        assert_eq!(t0.info.underlay, br0);
        assert_eq!(
            t0.info.remote_ip,
            u32::from(std::net::Ipv4Addr::new(172, 22, 1, 63))
        );
        assert_eq!(t0.info.key, None);
        assert!(t0.info.csum);
        // The second port has no local_ip: it takes the one the other port gives.
        let t1 = &sw.tunnels[1];
        assert_eq!(t1.info.local_ip, t0.info.local_ip);
        assert_eq!(t1.info.key, Some(7));
        assert!(!t1.info.csum);
        assert_eq!(sw.dp_port_name(t1.info.vport), Some("ovn-ba3356-0"));
        assert_eq!(sw.endpoints.len(), 1);
        assert_eq!(sw.endpoints[0].bridge, br0);
        // OVN's option mapping by default.
        assert_eq!(
            sw.bridge("brAtlas").unwrap().tlv_map,
            vec![TlvMap {
                class: 0x0102,
                typ: 0x80,
                len: 4,
                field: 0
            }]
        );
        assert_eq!(
            b.switch
                .bridge("br0")
                .unwrap()
                .port_by_name("eth1")
                .unwrap()
                .mtu,
            DEFAULT_MTU
        );
    }

    #[test]
    fn unsupported_tunnel_settings_are_refused() {
        let dir = std::env::temp_dir();
        let port = TUNNELS.replace("key = 7\n", "key = 7\ndst_port = 7000\n");
        let e = build(&cfg(&port, &dir), 0).err().expect("dst_port 7000");
        assert!(e.to_string().contains("dst_port 7000"), "{e}");
        let no_local = TUNNELS.replace("local_ip = \"172.22.1.61\"\n", "");
        let e = build(&cfg(&no_local, &dir), 0).err().expect("no local_ip");
        assert!(e.to_string().contains("local_ip is needed"), "{e}");
        let wide = TUNNELS.replace(
            "fail_mode = \"secure\"\n",
            "fail_mode = \"secure\"\ntlv_map = [ { class = 0x0102, type = 0x80, len = 8, field = \"tun_metadata0\" } ]\n",
        );
        let e = build(&cfg(&wide, &dir), 0).err().expect("8-byte option");
        assert!(e.to_string().contains("only 4-byte options"), "{e}");
    }
}
