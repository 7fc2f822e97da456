//! Differential testing of xvs against Open vSwitch: one [`Case`] (bridges, ports, flow text,
//! input frames in order) is run through both switches, and the frames every port transmits
//! after each input frame are compared byte for byte.
//!
//! The xvs side runs in-process through the same code path as `xvs replay`: a configuration is
//! parsed, [`dataplane::setup::build`] turns it into a switch, every datapath port becomes an
//! in-memory port, and one frame at a time is received and switched by a
//! [`dataplane::datapath::Datapath`]. The Open vSwitch side runs in a private sandbox
//! ([`crate::ovs::OvsSandbox`]) on dummy ports that record what they send in pcap files.
//!
//! Talking to `ovs-vswitchd` goes over its control socket directly (JSON-RPC) instead of
//! spawning `ovs-appctl` for every frame: a generated run injects thousands of frames.
//!
//! This module owns the case description, both runners, the comparison and the mismatch report;
//! it does not generate cases (the test file does) and never decides what is a known difference.

use crate::ovs::{read_pcap, OvsSandbox};
use dataplane::datapath::Datapath;
use pipeline::cache::FlowCache;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a port is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A port with I/O: a dummy port in Open vSwitch, an in-memory port in xvs.
    Io,
    /// A patch port to the named port of another bridge.
    Patch(String),
}

/// One bridge port.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub ofport: u32,
    pub kind: PortKind,
    /// Access VLAN (`tag`), for NORMAL.
    pub tag: Option<u16>,
    /// Trunk VLANs (`trunks`), for NORMAL.
    pub trunks: Vec<u16>,
}

impl Port {
    pub fn io(name: &str, ofport: u32) -> Port {
        Port {
            name: name.into(),
            ofport,
            kind: PortKind::Io,
            tag: None,
            trunks: Vec::new(),
        }
    }

    pub fn patch(name: &str, ofport: u32, peer: &str) -> Port {
        Port {
            kind: PortKind::Patch(peer.into()),
            ..Port::io(name, ofport)
        }
    }

    pub fn tag(mut self, vid: u16) -> Port {
        self.tag = Some(vid);
        self
    }

    pub fn trunks(mut self, vids: &[u16]) -> Port {
        self.trunks = vids.to_vec();
        self
    }
}

/// One bridge: its LOCAL port (named like the bridge) always exists and is compared too.
#[derive(Clone, Debug)]
pub struct Bridge {
    pub name: String,
    /// `secure` (empty tables) unless set: `standalone` starts with the NORMAL flow.
    pub standalone: bool,
    pub ports: Vec<Port>,
    /// `ovs-ofctl` flow text.
    pub flows: String,
}

/// A differential case.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub bridges: Vec<Bridge>,
    /// (port name, frame), fed in this order.
    pub frames: Vec<(String, Vec<u8>)>,
    /// Load the flows with `ovs-ofctl -O OpenFlow13` (needed for `push_vlan`). Without it the
    /// default (OpenFlow 1.0 + NXM) is used, whose `mod_vlan_vid` pushes a tag only when the
    /// packet has none at run time, as xvs's does.
    pub of13: bool,
    /// Open vSwitch's `other_config:vlan-limit` for this case (`None`: its default, one tag
    /// parsed). xvs always parses two, so a case whose frames carry two tags sets 2.
    pub vlan_limit: Option<u32>,
}

/// What every port sent after one input frame: port name → frames, in order. Ports that sent
/// nothing are absent.
pub type Sent = BTreeMap<String, Vec<Vec<u8>>>;

/// Traces taken during a run: (input frame index, trace text).
pub type Traces = Vec<(usize, String)>;

impl Case {
    fn io_ports(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for b in &self.bridges {
            v.push((b.name.clone(), b.name.clone()));
            for p in &b.ports {
                if p.kind == PortKind::Io {
                    v.push((b.name.clone(), p.name.clone()));
                }
            }
        }
        v
    }

    fn bridge_of(&self, port: &str) -> Option<&Bridge> {
        self.bridges
            .iter()
            .find(|b| b.name == port || b.ports.iter().any(|p| p.name == port))
    }
}

// ---------------------------------------------------------------------------------------------
// xvs

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "xvs-diff-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    TempDir(p)
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The xvs configuration of a case, flow files written into `dir`.
fn xvs_config(case: &Case, dir: &Path) -> String {
    let mut t = String::new();
    for (i, b) in case.bridges.iter().enumerate() {
        let _ = writeln!(t, "[[bridge]]\nname = {}", toml_str(&b.name));
        let mode = if b.standalone { "standalone" } else { "secure" };
        let _ = writeln!(t, "fail_mode = \"{mode}\"");
        // A flow file is the whole initial table (a standalone bridge's NORMAL flow included
        // or not), so an empty one is no file at all.
        if !b.flows.trim().is_empty() {
            let flows = format!("bridge{i}.flows");
            std::fs::write(dir.join(&flows), &b.flows).expect("writing a flow file");
            let _ = writeln!(t, "flows = {}", toml_str(&flows));
        }
        // The LOCAL port is declared so that it gets a datapath port: Open vSwitch's dummy
        // bridge has one too, and floods reach it.
        let _ = writeln!(
            t,
            "[[bridge.port]]\nname = {}\ntype = \"internal\"",
            toml_str(&b.name)
        );
        for p in &b.ports {
            let _ = writeln!(
                t,
                "[[bridge.port]]\nname = {}\nofport = {}",
                toml_str(&p.name),
                p.ofport
            );
            match &p.kind {
                PortKind::Io => t.push_str("type = \"memory\"\n"),
                PortKind::Patch(peer) => {
                    let _ = writeln!(t, "type = \"patch\"\npeer = {}", toml_str(peer));
                }
            }
            if let Some(tag) = p.tag {
                let _ = writeln!(t, "tag = {tag}");
            }
            if !p.trunks.is_empty() {
                let _ = writeln!(t, "trunks = {:?}", p.trunks);
            }
        }
    }
    t
}

/// Runs a case through xvs: what every port sent after each input frame.
pub fn run_xvs(case: &Case) -> Result<Vec<Sent>, String> {
    let dir = temp_dir("xvs");
    let text = xvs_config(case, &dir.0);
    let cfg = dataplane::config::parse(&text, &dir.0, "case.toml")
        .map_err(|e| format!("xvs config: {e}\n{text}"))?;
    // Frames are stamped 1 ms apart from t = 1 s: far from every timeout.
    let t0: u64 = 1_000_000_000;
    let built = dataplane::setup::build(&cfg, t0).map_err(|e| format!("xvs setup: {e}"))?;
    let (ports, handles) = dataplane::setup::memory_ports(&built.ports);
    let mut dp = Datapath::new(ports, FlowCache::default());
    let sw = &*built.switch;
    let mut out = Vec::with_capacity(case.frames.len());
    for (i, (port, frame)) in case.frames.iter().enumerate() {
        let dp_port = sw
            .dp_port_by_name(port)
            .ok_or_else(|| format!("xvs: no datapath port {port}"))?;
        handles[dp_port as usize].inject(frame);
        dp.poll_once(sw, t0 + i as u64 * 1_000_000);
        let mut sent = Sent::new();
        for (h, spec) in handles.iter().zip(&built.ports) {
            let f = h.take_transmitted();
            if !f.is_empty() {
                sent.insert(spec.name.clone(), f);
            }
        }
        out.push(sent);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Open vSwitch

/// A JSON-RPC connection to `ovs-vswitchd`'s control socket (what `ovs-appctl` speaks).
struct Unixctl {
    sock: UnixStream,
    buf: Vec<u8>,
    id: u64,
}

impl Unixctl {
    fn connect(dir: &Path) -> Result<Unixctl, String> {
        let pid = std::fs::read_to_string(dir.join("ovs-vswitchd.pid"))
            .map_err(|e| format!("ovs-vswitchd.pid: {e}"))?;
        let path = dir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&path) {
                Ok(sock) => {
                    sock.set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(|e| e.to_string())?;
                    return Ok(Unixctl {
                        sock,
                        buf: Vec::new(),
                        id: 0,
                    });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Runs one command; its text output, or its error text.
    fn call(&mut self, method: &str, params: &[&str]) -> Result<String, String> {
        self.id += 1;
        let req = serde_json::json!({"method": method, "params": params, "id": self.id});
        self.sock
            .write_all(req.to_string().as_bytes())
            .map_err(|e| format!("unixctl write: {e}"))?;
        loop {
            // Replies are single JSON objects, back to back on the stream.
            let mut it =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    if v.get("id").and_then(|i| i.as_u64()) != Some(self.id) {
                        continue;
                    }
                    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                        return Err(format!(
                            "{method} {}: {}",
                            params.join(" "),
                            e.as_str().map_or_else(|| e.to_string(), str::to_string)
                        ));
                    }
                    return Ok(v
                        .get("result")
                        .and_then(|r| r.as_str())
                        .unwrap_or_default()
                        .to_string());
                }
                Some(Err(e)) if !e.is_eof() => return Err(format!("unixctl reply: {e}")),
                _ => {
                    let mut chunk = [0u8; 65536];
                    let n = self
                        .sock
                        .read(&mut chunk)
                        .map_err(|e| format!("unixctl read: {e}"))?;
                    if n == 0 {
                        return Err("unixctl: ovs-vswitchd closed the connection".into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// Open vSwitch as the oracle: one sandbox, reused for every case (bridges are deleted and
/// re-created per case, so no state carries over).
pub struct Oracle {
    pub sb: OvsSandbox,
    ctl: Unixctl,
    bridges: Vec<String>,
    /// The `vlan-limit` in force (changed only when a case asks for another).
    vlan_limit: Option<u32>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Oracle {
    /// Starts the sandbox; `None` (after printing why) when Open vSwitch is not installed.
    pub fn start_or_skip() -> Option<Oracle> {
        let sb = OvsSandbox::start_or_skip()?;
        let ctl = Unixctl::connect(sb.dir()).unwrap_or_else(|e| panic!("{e}"));
        Some(Oracle {
            sb,
            ctl,
            bridges: Vec::new(),
            vlan_limit: None,
        })
    }

    /// Runs an `ovs-appctl` command over the control socket.
    pub fn appctl(&mut self, method: &str, params: &[&str]) -> Result<String, String> {
        self.ctl.call(method, params)
    }

    fn pcap(&self, port: &str) -> PathBuf {
        self.sb.dir().join(format!("tx-{port}.pcap"))
    }

    fn setup(&mut self, case: &Case) -> Result<(), String> {
        for b in std::mem::take(&mut self.bridges) {
            self.sb.vsctl(&["--if-exists", "del-br", &b])?;
        }
        for (_, p) in case.io_ports() {
            let _ = std::fs::remove_file(self.pcap(&p));
        }
        if case.vlan_limit != self.vlan_limit {
            match case.vlan_limit {
                Some(n) => self.sb.vsctl(&[
                    "set",
                    "Open_vSwitch",
                    ".",
                    &format!("other_config:vlan-limit={n}"),
                ])?,
                None => {
                    self.sb
                        .vsctl(&["remove", "Open_vSwitch", ".", "other_config", "vlan-limit"])?
                }
            };
            self.vlan_limit = case.vlan_limit;
        }
        for b in &case.bridges {
            let mut a: Vec<String> = vec!["add-br".into(), b.name.clone()];
            let mode = if b.standalone { "standalone" } else { "secure" };
            a.extend(["--", "set", "bridge", &b.name].map(String::from));
            a.push("datapath_type=dummy".into());
            a.push(format!("fail_mode={mode}"));
            a.extend(["--", "set", "interface", &b.name].map(String::from));
            a.push(format!("options:tx_pcap={}", self.pcap(&b.name).display()));
            for p in &b.ports {
                a.extend(["--", "add-port", &b.name, &p.name].map(String::from));
                if let Some(tag) = p.tag {
                    a.push(format!("tag={tag}"));
                }
                if !p.trunks.is_empty() {
                    let t: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
                    a.push(format!("trunks={}", t.join(",")));
                }
                a.extend(["--", "set", "interface", &p.name].map(String::from));
                a.push(format!("ofport_request={}", p.ofport));
                match &p.kind {
                    PortKind::Io => {
                        a.push("type=dummy".into());
                        a.push(format!("options:tx_pcap={}", self.pcap(&p.name).display()));
                    }
                    PortKind::Patch(peer) => {
                        a.push("type=patch".into());
                        a.push(format!("options:peer={peer}"));
                    }
                }
            }
            let args: Vec<&str> = a.iter().map(String::as_str).collect();
            self.bridges.push(b.name.clone());
            self.sb.vsctl(&args)?;
            if !b.flows.trim().is_empty() {
                // The case's flows are the whole table, as xvs loads a flow file: the
                // standalone bridge's default NORMAL flow goes.
                self.sb.del_flows(&b.name)?;
                self.add_flows(&b.name, &b.flows, case.of13)?;
            }
        }
        // Connections outlive bridges in the shared dummy datapath (which exists only while a
        // bridge does).
        self.appctl("dpctl/flush-conntrack", &[])?;
        Ok(())
    }

    fn add_flows(&self, bridge: &str, flows: &str, of13: bool) -> Result<(), String> {
        use std::process::Stdio;
        let mut c = std::process::Command::new("ovs-ofctl");
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(var, self.sb.dir());
        }
        if of13 {
            c.arg("-O").arg("OpenFlow13");
        }
        c.args(["add-flows", bridge, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("ovs-ofctl: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(flows.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ovs-ofctl add-flows {bridge}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Packets received so far per dummy port, as the datapath counts them.
    fn rx_counts(&mut self) -> Result<BTreeMap<String, u64>, String> {
        let text = self.appctl("dpctl/show", &["-s"])?;
        let mut m = BTreeMap::new();
        let mut port: Option<String> = None;
        for line in text.lines() {
            let l = line.trim();
            if let Some(rest) = l.strip_prefix("port ") {
                // "port 1: p1 (dummy)"
                port = rest
                    .split_once(": ")
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .map(str::to_string);
            } else if let (Some(p), Some(rest)) = (&port, l.strip_prefix("RX packets:")) {
                let n = rest
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                m.insert(p.clone(), n);
            }
        }
        Ok(m)
    }

    /// Blocks until the datapath has taken `want` packets from `port`. The main thread both
    /// dequeues and fully switches a received packet (dummy ports are not polled by PMD
    /// threads), so once the counter moves, everything the packet caused is in the pcaps.
    fn wait_rx(&mut self, port: &str, want: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let have = self.rx_counts()?.get(port).copied().unwrap_or(0);
            if have >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ovs-vswitchd never received frame {want} on {port}"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Runs a case: what every port sent after each input frame. `trace` is called with the
    /// frame index and Open vSwitch's outputs after each frame, before the next one goes in
    /// (so a trace taken then sees the state that frame saw); what it returns is collected.
    pub fn run(
        &mut self,
        case: &Case,
        mut trace: impl FnMut(&mut Oracle, usize, &Sent) -> Option<String>,
    ) -> Result<(Vec<Sent>, Traces), String> {
        self.setup(case)?;
        let ports = case.io_ports();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let base = self.rx_counts()?;
        let mut want: BTreeMap<String, u64> = base;
        let mut out = Vec::new();
        let mut traces = Vec::new();
        for (i, (port, frame)) in case.frames.iter().enumerate() {
            self.appctl("netdev-dummy/receive", &[port, &hex(frame)])?;
            let w = want.entry(port.clone()).or_insert(0);
            *w += 1;
            let w = *w;
            self.wait_rx(port, w)?;
            let mut sent = Sent::new();
            for (_, p) in &ports {
                let all = match std::fs::read(self.pcap(p)) {
                    Ok(b) => read_pcap(&b)?,
                    Err(_) => Vec::new(),
                };
                let s = seen.entry(p.clone()).or_insert(0);
                if all.len() > *s {
                    sent.insert(p.clone(), all[*s..].to_vec());
                    *s = all.len();
                }
            }
            if let Some(t) = trace(self, i, &sent) {
                traces.push((i, t));
            }
            out.push(sent);
        }
        Ok((out, traces))
    }

    /// `ofproto/trace` of a frame as it enters `port`.
    pub fn trace(&mut self, case: &Case, port: &str, frame: &[u8]) -> String {
        let Some(b) = case.bridge_of(port) else {
            return format!("(no bridge has port {port})");
        };
        let ofport = if b.name == port {
            "LOCAL".to_string()
        } else {
            b.ports
                .iter()
                .find(|p| p.name == port)
                .map_or(0, |p| p.ofport)
                .to_string()
        };
        let name = b.name.clone();
        self.appctl(
            "ofproto/trace",
            &[&name, &format!("in_port={ofport}"), &hex(frame)],
        )
        .unwrap_or_else(|e| format!("(trace failed: {e})"))
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// A one-line decode of a frame (Ethernet, VLAN tags, IPv4/ARP, ports) for mismatch reports.
pub fn decode(f: &[u8]) -> String {
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if f.len() < 14 {
        return format!("runt ({} bytes)", f.len());
    }
    let mut s = format!("{} > {}", mac(&f[6..12]), mac(&f[0..6]));
    let mut off = 12;
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    while (et == 0x8100 || et == 0x88a8) && f.len() >= off + 6 {
        let tci = u16::from_be_bytes([f[off + 2], f[off + 3]]);
        let _ = write!(
            s,
            " {}:vid={},pcp={}",
            if et == 0x8100 { "vlan" } else { "svlan" },
            tci & 0xfff,
            tci >> 13
        );
        off += 4;
        et = u16::from_be_bytes([f[off], f[off + 1]]);
    }
    off += 2;
    let l3 = &f[off.min(f.len())..];
    match et {
        0x0800 if l3.len() >= 20 => {
            let ihl = (l3[0] & 15) as usize * 4;
            let ip = |b: &[u8]| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
            let _ = write!(
                s,
                " ip {} > {} proto={} tos={:#x} ttl={} csum={:#06x}",
                ip(&l3[12..16]),
                ip(&l3[16..20]),
                l3[9],
                l3[1],
                l3[8],
                u16::from_be_bytes([l3[10], l3[11]])
            );
            if let Some(l4) = l3.get(ihl..ihl + 8) {
                if matches!(l3[9], 6 | 17) {
                    let csum_at = if l3[9] == 6 { 16 } else { 6 };
                    let csum = l3
                        .get(ihl + csum_at..ihl + csum_at + 2)
                        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                    let _ = write!(
                        s,
                        " {} {} > {} csum={csum:#06x}",
                        if l3[9] == 6 { "tcp" } else { "udp" },
                        u16::from_be_bytes([l4[0], l4[1]]),
                        u16::from_be_bytes([l4[2], l4[3]])
                    );
                }
            }
        }
        0x0806 if l3.len() >= 28 => {
            let _ = write!(
                s,
                " arp op={} {}.{}.{}.{} > {}.{}.{}.{}",
                u16::from_be_bytes([l3[6], l3[7]]),
                l3[14],
                l3[15],
                l3[16],
                l3[17],
                l3[24],
                l3[25],
                l3[26],
                l3[27]
            );
        }
        _ => {
            let _ = write!(s, " type={et:#06x}");
        }
    }
    let _ = write!(s, " ({} bytes)", f.len());
    s
}

fn fmt_sent(s: &Sent) -> String {
    if s.is_empty() {
        return "    (nothing)\n".into();
    }
    let mut t = String::new();
    for (p, frames) in s {
        for f in frames {
            let _ = writeln!(t, "    {p}: {}\n      {}", decode(f), hex(f));
        }
    }
    t
}

/// A mismatch, ready to print.
#[derive(Debug)]
pub struct Mismatch {
    pub case: String,
    pub frame: usize,
    pub report: String,
}

/// Runs a case through both switches and compares, frame by frame, what every port sent.
/// `filter` may rewrite both sides' outputs of one frame before comparing (for a documented
/// known difference); it gets the frame index.
pub fn check(
    oracle: &mut Oracle,
    case: &Case,
    filter: &dyn Fn(usize, &mut Sent, &mut Sent),
) -> Result<(), Mismatch> {
    let fail = |frame: usize, report: String| Mismatch {
        case: case.name.clone(),
        frame,
        report,
    };
    let xvs = run_xvs(case).map_err(|e| fail(0, e))?;
    let (ovs, traces) = oracle
        .run(case, |o, i, sent| {
            let mut a = sent.clone();
            let mut b = xvs[i].clone();
            filter(i, &mut a, &mut b);
            (a != b).then(|| {
                let (port, frame) = &case.frames[i];
                o.trace(case, port, frame)
            })
        })
        .map_err(|e| {
            let flows: Vec<&str> = case.bridges.iter().map(|b| b.flows.as_str()).collect();
            fail(0, format!("Open vSwitch: {e}\n{}", flows.join("\n")))
        })?;
    let Some((i, trace)) = traces.into_iter().next() else {
        return Ok(());
    };
    let mut r = String::new();
    let _ = writeln!(
        r,
        "=== case {}: outputs differ at input frame {i}",
        case.name
    );
    for b in &case.bridges {
        let _ = writeln!(
            r,
            "--- bridge {} ({}) ports: {}{}",
            b.name,
            if b.standalone { "standalone" } else { "secure" },
            b.ports
                .iter()
                .map(|p| format!("{}={}", p.name, p.ofport))
                .collect::<Vec<_>>()
                .join(" "),
            if case.of13 {
                " (flows loaded with OpenFlow13)"
            } else {
                ""
            }
        );
        r.push_str(&b.flows);
        if !b.flows.ends_with('\n') {
            r.push('\n');
        }
    }
    let _ = writeln!(r, "--- input frames (in order):");
    for (j, (p, f)) in case.frames.iter().enumerate().take(i + 1) {
        let _ = writeln!(r, "  #{j} in {p}: {}\n      {}", decode(f), hex(f));
    }
    let (mut a, mut b) = (ovs[i].clone(), xvs[i].clone());
    filter(i, &mut a, &mut b);
    let _ = writeln!(r, "--- Open vSwitch sent:\n{}", fmt_sent(&a));
    let _ = writeln!(r, "--- xvs sent:\n{}", fmt_sent(&b));
    let _ = writeln!(r, "--- ofproto/trace of frame #{i}:\n{trace}");
    Err(fail(i, r))
}
