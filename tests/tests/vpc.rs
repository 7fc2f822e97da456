//! The reference deployment's VPC (scripts/vpc/, scripts/demo-vpc.sh) as tests.
//!
//! In process (no privileges): AHV01's configuration and flow file, every port a memory port.
//! ARP for the SNAT address is answered on VLAN 2207 through the patch, a VM's frame to the
//! external router leaves the uplink tagged 2207 from the router MAC with source 172.22.7.27,
//! br0 learns that MAC on the patch port 14, the reply is un-SNATed back to the VM, and a
//! capture on the patch port sees both directions as they cross.
//!
//! In namespaces (root only, skipped otherwise): the whole demo topology with four daemons
//! (three hosts and the fabric), checked from the VMs and the external host and through the
//! control socket. Daemons are stopped and namespaces removed by guards, on failure too.

use dataplane::config;
use dataplane::control;
use dataplane::datapath::Datapath;
use dataplane::port::memory::MemoryHandle;
use dataplane::setup::{self, Built};
use pipeline::cache::FlowCache;
use pipeline::compose::PacketBuilder;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xvs_tests::netns::is_root;

const VM01: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const ROUTER_VPC: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0x01];
const ROUTER_EXT: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
const EXT_HOST: [u8; 6] = [0x00, 0x50, 0x56, 0xb0, 0x42, 0xb2];
const VM01_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 11);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 7, 1);
const SNAT_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 7, 27);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn vpc_dir() -> PathBuf {
    repo().join("scripts/vpc")
}

/// 802.1Q VLAN id of a frame, if tagged.
fn vid(f: &[u8]) -> Option<u16> {
    (f.get(12..14) == Some(&[0x81, 0x00][..])).then(|| u16::from_be_bytes([f[14], f[15]]) & 0xfff)
}

/// The IPv4 header of a frame (after one optional tag).
fn ipv4(f: &[u8]) -> Option<&[u8]> {
    let off = if vid(f).is_some() { 18 } else { 14 };
    (f.get(off - 2..off) == Some(&[0x08, 0x00][..]))
        .then(|| f.get(off..off + 20))
        .flatten()
}

fn ip_src(f: &[u8]) -> Option<Ipv4Addr> {
    ipv4(f).map(|h| Ipv4Addr::new(h[12], h[13], h[14], h[15]))
}

fn ip_dst(f: &[u8]) -> Option<Ipv4Addr> {
    ipv4(f).map(|h| Ipv4Addr::new(h[16], h[17], h[18], h[19]))
}

/// AHV01 in process.
struct Ahv01 {
    built: Built,
    dp: Datapath,
    handles: Vec<MemoryHandle>,
    now: u64,
}

impl Ahv01 {
    fn new() -> Ahv01 {
        let cfg = config::load(&vpc_dir().join("ahv01.toml")).unwrap();
        let built = setup::build(&cfg, 0).unwrap();
        let (ports, handles) = setup::memory_ports(&built.ports);
        let dp = Datapath::new(ports, FlowCache::default());
        Ahv01 {
            built,
            dp,
            handles,
            now: 1_000_000_000,
        }
    }

    fn handle(&self, port: &str) -> &MemoryHandle {
        let i = self.built.switch.dp_port_by_name(port).unwrap();
        &self.handles[i as usize]
    }

    /// Sends `frame` in on `port` and returns every frame sent, per port name.
    fn send(&mut self, port: &str, frame: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.handle(port).inject(frame);
        self.now += 1_000_000;
        self.dp.poll_once(&self.built.switch, self.now);
        let mut out = Vec::new();
        for p in &self.built.ports {
            for f in self.handle(&p.name).take_transmitted() {
                out.push((p.name.clone(), f));
            }
        }
        out
    }

    fn fdb(&self, bridge: &str) -> String {
        let sw = &self.built.switch;
        let b = sw.bridge(bridge).unwrap();
        b.fdb.format_show(self.now, &|p| {
            b.ports
                .get(&p)
                .map_or_else(|| "LOCAL".to_string(), |x| x.ofport.to_string())
        })
    }
}

#[test]
fn gateway_snat_on_vlan_2207_through_the_patch_and_back_in_process() {
    let mut h = Ahv01::new();
    let patch = "patch-brAtlas-t";
    assert!(h.built.switch.start_patch_capture(patch, 16));

    // The external router asks for the SNAT address: brAtlas answers through the patch, tagged.
    let ask = PacketBuilder::arp_request(EXT_HOST, EXT_IP, SNAT_IP)
        .vlan(2207)
        .build();
    let out = h.send("eth1", &ask);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, reply) = &out[0];
    assert_eq!(port, "eth1");
    assert_eq!(vid(reply), Some(2207));
    assert_eq!(&reply[0..6], &EXT_HOST);
    assert_eq!(&reply[6..12], &ROUTER_EXT);
    // ARP reply, sender 172.22.7.27 at the router MAC.
    assert_eq!(&reply[18 + 6..18 + 8], &[0, 2]);
    assert_eq!(&reply[18 + 8..18 + 14], &ROUTER_EXT);
    assert_eq!(&reply[18 + 14..18 + 18], &SNAT_IP.octets());

    // VM01 pings the external router through its default gateway.
    let echo = PacketBuilder::icmp4_echo(VM01, ROUTER_VPC, VM01_IP, EXT_IP, 0x77, 1).build();
    let out = h.send("tap2", &echo);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, f) = &out[0];
    assert_eq!(port, "eth1");
    assert_eq!(vid(f), Some(2207));
    assert_eq!(&f[0..6], &EXT_HOST);
    assert_eq!(&f[6..12], &ROUTER_EXT);
    assert_eq!(ip_src(f), Some(SNAT_IP));
    assert_eq!(ip_dst(f), Some(EXT_IP));
    let iph = ipv4(f).unwrap();
    assert_eq!(iph[8], 63, "the router decrements the TTL");
    assert_eq!(pipeline::wire::checksum::checksum(iph), 0, "IPv4 checksum");
    let icmp = &f[18 + 20..];
    assert_eq!(pipeline::wire::checksum::checksum(icmp), 0, "ICMP checksum");

    // br0 learned the router MAC behind the patch port, on VLAN 2207, as in the article.
    let fdb = h.fdb("br0");
    assert!(
        fdb.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3]
                == ["14", "2207", "e0:19:95:ad:56:d0"]),
        "{fdb}"
    );

    // The connection is in the SNAT zone loaded from reg12.
    let ct = h.built.conntrack.dump(Some(9));
    assert!(
        ct.iter()
            .any(|c| c.contains("src=192.168.10.11") && c.contains("dst=172.22.7.27")),
        "{ct:?}"
    );

    // The reply comes back on VLAN 2207 to the router MAC and reaches VM01, un-SNATed.
    let mut back = PacketBuilder::icmp4_echo(EXT_HOST, ROUTER_EXT, EXT_IP, SNAT_IP, 0x77, 1)
        .icmp_type_code(0, 0)
        .vlan(2207)
        .build();
    let out = h.send("eth1", &back);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, f) = &out[0];
    assert_eq!(port, "tap2");
    assert_eq!(vid(f), None);
    assert_eq!(&f[0..6], &VM01);
    assert_eq!(&f[6..12], &ROUTER_VPC);
    assert_eq!(ip_src(f), Some(EXT_IP));
    assert_eq!(ip_dst(f), Some(VM01_IP));

    // A reply to an address nobody translated to stays outside.
    back[18 + 19] = 99;
    let out = h.send("eth1", &back);
    assert!(out.iter().all(|(p, _)| p != "tap2"), "{out:?}");

    // The patch capture saw the ARP both ways and the echo both ways, tagged as they crossed.
    let got = h.built.switch.stop_patch_capture(patch);
    let tagged: Vec<_> = got.iter().filter(|c| vid(&c.data) == Some(2207)).collect();
    assert!(tagged.len() >= 4, "{} frames", got.len());
    assert!(got
        .iter()
        .any(|c| ip_src(&c.data) == Some(SNAT_IP) && ip_dst(&c.data) == Some(EXT_IP)));
    assert!(got
        .iter()
        .any(|c| ip_src(&c.data) == Some(EXT_IP) && ip_dst(&c.data) == Some(SNAT_IP)));
}

#[test]
fn the_router_answers_arp_for_the_gateway_address_back_to_the_asking_vm() {
    let mut h = Ahv01::new();
    let ask = PacketBuilder::arp_request(VM01, VM01_IP, Ipv4Addr::new(192, 168, 10, 1)).build();
    let out = h.send("tap2", &ask);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, reply) = &out[0];
    assert_eq!(port, "tap2", "sent back out of its input port (loopback)");
    assert_eq!(&reply[0..6], &VM01);
    assert_eq!(&reply[6..12], &ROUTER_VPC);
    assert_eq!(&reply[14 + 6..14 + 8], &[0, 2]);
    assert_eq!(&reply[14 + 14..14 + 18], &[192, 168, 10, 1]);
}

// ---------------------------------------------------------------------------------------------
// In namespaces.

const CHILD_ENV: &str = "XVS_VPC_DAEMON_ARGS";
const HOSTS: [&str; 4] = ["fab", "ahv01", "ahv02", "ahv03"];

/// The daemon processes started by the test below; does nothing unless started by it.
#[test]
#[ignore]
fn vpc_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

/// The topology and its daemons. Drop stops the daemons, then removes the namespaces.
struct Rig {
    prefix: String,
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for d in &self.daemons {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
        }
        let t0 = Instant::now();
        for d in &mut self.daemons {
            while matches!(d.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new(vpc_dir().join("topology.sh"))
            .args(["down", &self.prefix])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn up() -> Rig {
        let prefix = format!("vpct{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("xvs-vpc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rig = Rig {
            prefix,
            dir,
            daemons: Vec::new(),
        };
        let st = Command::new(vpc_dir().join("topology.sh"))
            .args(["up", &rig.prefix])
            .status()
            .unwrap();
        assert!(st.success(), "topology.sh up failed");
        let exe = std::env::current_exe().unwrap();
        for h in HOSTS {
            let cfg = match h {
                "fab" => vpc_dir().join("fabric.toml"),
                _ => vpc_dir().join(format!("{h}.toml")),
            };
            let args = format!("{} {}", cfg.display(), rig.ctl(h).display());
            let child = Command::new("ip")
                .args(["netns", "exec", &rig.ns(h)])
                .arg(&exe)
                .args(["--ignored", "--exact", "vpc_daemon_child", "--nocapture"])
                .env(CHILD_ENV, args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            rig.daemons.push(child);
        }
        let t0 = Instant::now();
        for h in HOSTS {
            while !rig.ctl(h).exists() {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "no control socket for {h}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        rig
    }

    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    fn ctl(&self, h: &str) -> PathBuf {
        self.dir.join(format!("{h}.ctl"))
    }

    fn run(&self, ns: &str, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(cmd)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ping(&self, ns: &str, dst: &str) -> (bool, String) {
        self.run(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst])
    }

    /// Pings until one answer (the first frame to a new tunnel peer waits for its ARP).
    fn warm(&self, ns: &str, dst: &str) {
        for _ in 0..5 {
            if self.run(ns, &["ping", "-c", "1", "-W", "1", dst]).0 {
                return;
            }
        }
    }

    fn ctl_call(&self, h: &str, verb: &str, args: &[&str]) -> Vec<u8> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = control::call(&self.ctl(h), verb, &args).unwrap();
        assert!(r.ok, "{verb}: {}", String::from_utf8_lossy(&r.body));
        r.body
    }

    fn ctl_text(&self, h: &str, verb: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ctl_call(h, verb, args)).into_owned()
    }

    /// A bounded TCP exchange: `server_ns` echoes one line upper-cased; returns the address
    /// the server saw the client connect from.
    fn tcp(&self, server_ns: &str, client_ns: &str, addr: &str, port: u16) -> Option<String> {
        const PY: &str = r#"
import socket, sys, time
if sys.argv[1] == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(10)
    c, peer = s.accept(); c.settimeout(5)
    data = b""
    while not data.endswith(b"\n"):
        d = c.recv(65536)
        if not d: break
        data += d
    c.sendall(data.upper()); c.close()
    print(peer[0])
else:
    # The server may still be starting on a busy machine: a refused connection is retried
    # (each try from a new port, so no half-open state is reused) for up to five seconds.
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    msg = b"vpc over geneve " * 300 + b"\n"
    s.sendall(msg); s.settimeout(5)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d: break
        got += d
    sys.exit(0 if got == msg.upper() else 1)
"#;
        let port = port.to_string();
        let server = Command::new("ip")
            .args(["netns", "exec", &self.ns(server_ns)])
            .args(["timeout", "12", "python3", "-c", PY, "serve", &port])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let (ok, client_out) = self.run(
            client_ns,
            &["timeout", "8", "python3", "-c", PY, "client", addr, &port],
        );
        let out = server.wait_with_output().unwrap();
        if !(ok && out.status.success()) {
            // What failed, for the assertion that follows: the callers compare only the
            // address the server saw.
            eprintln!(
                "tcp {client_ns} -> {server_ns} ({addr}:{port}): client ok {ok}: {client_out}\n\
                 server {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (ok && out.status.success())
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Frames of a pcap file as `xvs capture` writes it (microsecond, either byte order).
fn pcap_frames(b: &[u8]) -> Vec<Vec<u8>> {
    let le = b.get(0..4) == Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]);
    let rd = |s: &[u8]| {
        let a = [s[0], s[1], s[2], s[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while let Some(h) = b.get(off..off + 16) {
        let n = rd(&h[8..12]) as usize;
        let Some(f) = b.get(off + 16..off + 16 + n) else {
            break;
        };
        out.push(f.to_vec());
        off += 16 + n;
    }
    out
}

#[test]
fn three_host_vpc_in_namespaces() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces and XDP)");
        return;
    }
    let rig = Rig::up();
    rig.warm("vm01", "192.168.10.12");
    rig.warm("vm03", "172.22.7.1");
    rig.warm("vm02", "172.22.7.1");

    // 1. VM01 <-> VM02 over geneve.
    let (ok, out) = rig.ping("vm01", "192.168.10.12");
    assert!(ok, "VM01 -> VM02: {out}");
    assert_eq!(
        rig.tcp("vm02", "vm01", "192.168.10.12", 5001).as_deref(),
        Some("192.168.10.11"),
        "TCP VM01 -> VM02"
    );

    // 2 and 3. VM03 reaches the external router through AHV01; on AHV01's uplink its
    // traffic is tagged 2207 and comes from 172.22.7.27, never from the VPC subnet.
    let cap = {
        let ctl = rig.ctl("ahv01");
        std::thread::spawn(move || {
            let a = ["eth1", "200", "3"].map(String::from);
            control::call(&ctl, "capture", &a).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = rig.ping("vm03", "172.22.7.1");
    assert!(ok, "VM03 -> 172.22.7.1: {out}");
    let cap = cap.join().unwrap();
    assert!(cap.ok);
    let frames = pcap_frames(&cap.body);
    let to_ext: Vec<_> = frames
        .iter()
        .filter(|f| ip_dst(f) == Some(EXT_IP))
        .collect();
    assert!(!to_ext.is_empty(), "{} frames captured", frames.len());
    for f in &to_ext {
        assert_eq!(vid(f), Some(2207));
        assert_eq!(ip_src(f), Some(SNAT_IP));
        assert_eq!(&f[6..12], &ROUTER_EXT);
    }
    assert!(frames
        .iter()
        .all(|f| ip_src(f).is_none_or(|s| s.octets()[..3] != [192, 168, 10])));
    assert!(frames
        .iter()
        .any(|f| ip_src(f) == Some(EXT_IP) && ip_dst(f) == Some(SNAT_IP) && vid(f) == Some(2207)));
    assert_eq!(
        rig.tcp("ext", "vm03", "172.22.7.1", 5002).as_deref(),
        Some("172.22.7.27"),
        "TCP VM03 -> external, seen from the SNAT address"
    );

    // 4. The floating IP from the external host, and VM02's own traffic through it.
    let (ok, out) = rig.ping("ext", "172.22.7.50");
    assert!(ok, "172.22.7.1 -> 172.22.7.50: {out}");
    assert_eq!(
        rig.tcp("vm02", "ext", "172.22.7.50", 5003).as_deref(),
        Some("172.22.7.1")
    );
    assert_eq!(
        rig.tcp("ext", "vm02", "172.22.7.1", 5004).as_deref(),
        Some("172.22.7.50")
    );

    // 5. AHV01's view.
    let ct = rig.ctl_text("ahv01", "dump-conntrack", &[]);
    assert!(
        ct.lines()
            .any(|l| l.contains("orig=(src=192.168.10.13,dst=172.22.7.1")
                && l.contains("dst=172.22.7.27")
                && l.contains("zone=9")),
        "{ct}"
    );
    assert!(
        ct.lines().any(|l| l.contains("dst=172.22.7.50")
            && l.contains("src=192.168.10.12")
            && l.contains("zone=8")),
        "{ct}"
    );
    let fdb = rig.ctl_text("ahv01", "fdb-show", &["br0"]);
    assert!(
        fdb.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["14", "2207", "e0:19:95:ad:56:d0"])),
        "{fdb}"
    );
    let dp = rig.ctl_text("ahv01", "dump-dp-flows", &[]);
    assert!(
        dp.lines().any(|l| l.contains("vlan(vid=2207")
            && l.contains("actions:pop_vlan,ct(zone=9,nat),recirc(")),
        "{dp}"
    );
    assert!(
        dp.lines()
            .any(|l| l.contains("actions:ct(commit,zone=9,nat(src=172.22.7.27)),recirc(")),
        "{dp}"
    );
    let flow = "in_port=tap2,icmp,dl_src=50:6b:8d:45:5a:21,dl_dst=e0:19:95:ad:56:01,\
                nw_src=192.168.10.11,nw_dst=172.22.7.1,nw_ttl=64,icmp_type=8";
    let tr = rig.ctl_text(
        "ahv01",
        "trace",
        &[
            "brAtlas",
            flow,
            "--ct-next",
            "trk,new",
            "--ct-next",
            "trk,new",
        ],
    );
    assert!(tr.contains("bridge(\"br0\")"), "{tr}");
    assert!(tr.contains("output:\"patch-brAtlas-t\""), "{tr}");
    assert!(
        tr.contains("Datapath actions: push_vlan(vid=2207,pcp=0),eth1"),
        "{tr}"
    );

    let cap = {
        let ctl = rig.ctl("ahv01");
        std::thread::spawn(move || {
            let a = ["patch-brAtlas-t", "4", "5"].map(String::from);
            control::call(&ctl, "capture", &a).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = rig.ping("vm03", "172.22.7.1");
    assert!(ok, "{out}");
    let cap = cap.join().unwrap();
    assert!(cap.ok, "{}", String::from_utf8_lossy(&cap.body));
    let frames = pcap_frames(&cap.body);
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| vid(f) == Some(2207)));
    assert!(frames
        .iter()
        .any(|f| ip_src(f) == Some(SNAT_IP) && ip_dst(f) == Some(EXT_IP)));
    assert!(frames
        .iter()
        .any(|f| ip_src(f) == Some(EXT_IP) && ip_dst(f) == Some(SNAT_IP)));
}
