//! Geneve tunnel ports end to end, in process: two hosts, each a switch with an underlay bridge
//! `br0` (NORMAL, one uplink) and an overlay bridge `brov` (a VM port, a geneve port, OVN-style
//! flows), their uplinks joined by a wire made of memory ports. A frame from VM1 leaves host 1
//! encapsulated (checked header by header), enters host 2, is decapsulated, matches
//! `in_port=geneve,tun_id=..,tun_metadata0=..` and reaches VM2 as VM1 sent it (after the flows'
//! rewrites). The next hop is learned the way the switch does it: the first frame finds no
//! neighbor, an ARP request goes out, host 2 answers for its underlay address.

use dataplane::config;
use dataplane::datapath::Datapath;
use dataplane::pcap::PcapWriter;
use dataplane::port::memory::MemoryHandle;
use dataplane::setup::{self, Built};
use pipeline::cache::FlowCache;
use pipeline::compose::PacketBuilder;
use pipeline::odp::{format_actions, DropReason};
use pipeline::wire::checksum;
use pipeline::wire::geneve::{self, GeneveOpt, GeneveOuter};
use pipeline::wire::Frame;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xvs-geneve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const VM1: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const VM2: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x22];
const ROUTER: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
const H1_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 1, 61);
const H2_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 1, 62);
const H1_MAC: [u8; 6] = [0x02, 0x00, 172, 22, 1, 61];
const H2_MAC: [u8; 6] = [0x02, 0x00, 172, 22, 1, 62];
const VNI: u32 = 0x5;
const PORTS_OPT: u32 = 0x0001_0002;

fn host_config(me: Ipv4Addr, peer: Ipv4Addr, vm: &str, gnv: &str, flows: &str) -> String {
    format!(
        r#"
[[bridge]]
name = "br0"

[[bridge.port]]
name = "uplink"
type = "memory"
ofport = 10

[[bridge]]
name = "brov"
fail_mode = "secure"
flows = "{flows}"

[[bridge.port]]
name = "{vm}"
type = "memory"
ofport = 4

[[bridge.port]]
name = "{gnv}"
type = "geneve"
ofport = 7
remote_ip = "{peer}"
local_ip = "{me}"
key = "flow"
csum = true
"#
    )
}

/// Host 1 sends VM1's frames into the tunnel, rewriting the destination MAC as a logical router
/// would, with the VNI and the logical ports (OVN's option) set by the flow.
const H1_FLOWS: &str = "\
table=0,priority=100,in_port=vm1,actions=mod_dl_dst:50:6b:8d:45:5a:22,set_field:0x5->tun_id,set_field:0x10002->tun_metadata0,output:gnv1
";
/// Host 2 takes only what carries that VNI and those logical ports, from host 1.
const H2_FLOWS: &str = "\
table=0,priority=100,in_port=gnv2,tun_id=0x5,tun_src=172.22.1.61,tun_metadata0=0x10002,actions=dec_ttl,output:vm2
";

struct Host {
    built: Built,
    dp: Datapath,
    handles: Vec<MemoryHandle>,
}

impl Host {
    fn new(dir: &Path, n: u8) -> Host {
        let (me, peer) = if n == 1 {
            (H1_IP, H2_IP)
        } else {
            (H2_IP, H1_IP)
        };
        let flows = format!("h{n}.flows");
        std::fs::write(dir.join(&flows), if n == 1 { H1_FLOWS } else { H2_FLOWS }).unwrap();
        let text = host_config(me, peer, &format!("vm{n}"), &format!("gnv{n}"), &flows);
        let cfg = config::parse(&text, dir, &format!("h{n}.toml")).unwrap();
        let built = setup::build(&cfg, 0).unwrap();
        let (ports, handles) = setup::memory_ports(&built.ports);
        let dp = Datapath::new(ports, FlowCache::default());
        Host { built, dp, handles }
    }

    fn handle(&self, port: &str) -> &MemoryHandle {
        let i = self.built.switch.dp_port_by_name(port).unwrap();
        &self.handles[i as usize]
    }

    fn send(&mut self, port: &str, frame: &[u8], now: u64) {
        self.handle(port).inject(frame);
        self.dp.poll_once(&self.built.switch, now);
    }

    fn take(&self, port: &str) -> Vec<Vec<u8>> {
        self.handle(port).take_transmitted()
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.dp.engine.stats.drop_count(r)
    }

    fn dp_flows(&mut self) -> String {
        self.dp.engine.end_batch();
        let sw = &self.built.switch;
        let pn = |p: u32| sw.dp_port_name(p).map(str::to_string);
        let mut s = String::new();
        for (e, _) in self.dp.engine.cache.iter() {
            s.push_str(&format_actions(&e.actions, &pn));
            s.push('\n');
        }
        s
    }
}

/// Carries whatever one host's uplink sent to the other's until the wire is quiet; returns
/// every frame that crossed, host 1 to host 2 first.
fn pump(h1: &mut Host, h2: &mut Host, now: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut a2b, mut b2a) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let x = h1.take("uplink");
        let y = h2.take("uplink");
        if x.is_empty() && y.is_empty() {
            return (a2b, b2a);
        }
        for f in &x {
            h2.send("uplink", f, now);
        }
        for f in &y {
            h1.send("uplink", f, now);
        }
        a2b.extend(x);
        b2a.extend(y);
    }
    panic!("the wire never went quiet");
}

fn vm_frame(dst: [u8; 6], ttl: u8, payload: usize) -> Vec<u8> {
    PacketBuilder::udp4(
        VM1,
        dst,
        Ipv4Addr::new(192, 168, 10, 11),
        Ipv4Addr::new(192, 168, 10, 12),
        40000,
        5201,
    )
    .ttl(ttl)
    .payload_len(payload)
    .build()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Two hosts whose next hops are already learned (one frame dropped for the ARP exchange).
fn learned_pair(dir: &Path) -> (Host, Host) {
    let mut h1 = Host::new(dir, 1);
    let mut h2 = Host::new(dir, 2);
    h1.send("vm1", &vm_frame(ROUTER, 64, 20), 1);
    assert_eq!(h1.drops(DropReason::TunnelNoNeighbor), 1);
    let (a2b, b2a) = pump(&mut h1, &mut h2, 1);
    // An ARP request for host 2's address went out, and host 2 answered it.
    assert_eq!(a2b.len(), 1, "{a2b:02x?}");
    assert_eq!(
        a2b[0],
        PacketBuilder::arp_request(H1_MAC, H1_IP, H2_IP).build()
    );
    assert_eq!(b2a.len(), 1, "{b2a:02x?}");
    assert_eq!(
        b2a[0],
        PacketBuilder::arp_reply(H2_MAC, H2_IP, H1_MAC, H1_IP).build()
    );
    assert!(h2.take("vm2").is_empty());
    (h1, h2)
}

#[test]
fn vm_to_vm_over_geneve_with_learned_next_hop() {
    let dir = TempDir::new("e2e");
    let (mut h1, mut h2) = learned_pair(&dir.0);
    let neigh = h1.built.switch.format_neigh_show();
    assert!(
        neigh.contains("172.22.1.62")
            && neigh.contains("02:00:ac:16:01:3e")
            && neigh.contains("br0"),
        "{neigh}"
    );
    assert!(h2
        .built
        .switch
        .format_neigh_show()
        .contains("02:00:ac:16:01:3d"));

    let sent = vm_frame(ROUTER, 64, 100);
    h1.send("vm1", &sent, 2);
    let (a2b, b2a) = pump(&mut h1, &mut h2, 2);
    assert!(b2a.is_empty());
    assert_eq!(a2b.len(), 1);
    let enc = &a2b[0];
    let inner_at_h1 = vm_frame(VM2, 64, 100);
    check_outer(enc, &inner_at_h1);

    // Host 2 decapsulated it and its tunnel flow matched.
    let got = h2.take("vm2");
    assert_eq!(got, vec![vm_frame(VM2, 63, 100)]);
    assert!(h2.take("uplink").is_empty());

    // The fast path holds tnl_push on host 1 and tnl_pop on host 2, printed as Open vSwitch
    // prints them.
    let f1 = h1.dp_flows();
    assert!(
        f1.contains(
            "tnl_push(tnl_port(gnv1),header(size=58,type=5,eth(dst=02:00:ac:16:01:3e,src=02:00:ac:16:01:3d,dl_type=0x0800),ipv4(src=172.22.1.61,dst=172.22.1.62,proto=17,tos=0x0,ttl=64,frag=0x4000),udp(src=0,dst=6081,csum=0xffff),geneve(crit,vni=0x5,options({class=0x102,type=0x80,len=4,0x10002}))),out_port(uplink)),uplink\n"
        ),
        "{f1}"
    );
    let f2 = h2.dp_flows();
    assert!(f2.contains("tnl_pop(gnv2)"), "{f2}");

    // A second frame takes the cached path on both hosts and arrives the same.
    h1.send("vm1", &sent, 3);
    let (a2b, _) = pump(&mut h1, &mut h2, 3);
    assert_eq!(a2b.len(), 1);
    check_outer(&a2b[0], &inner_at_h1);
    assert_eq!(h2.take("vm2"), vec![vm_frame(VM2, 63, 100)]);
}

/// Checks the outer headers of `enc` byte by byte and that it carries `inner`.
fn check_outer(enc: &[u8], inner: &[u8]) {
    let hl = 14 + 20 + 8 + 8 + 8;
    assert_eq!(enc.len(), hl + inner.len());
    // Ethernet: to host 2's underlay MAC, from host 1's.
    assert_eq!(&enc[0..6], &H2_MAC);
    assert_eq!(&enc[6..12], &H1_MAC);
    assert_eq!(be16(enc, 12), 0x0800);
    // IPv4.
    let ip = &enc[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[1], 0, "tos");
    assert_eq!(be16(ip, 2) as usize, enc.len() - 14, "total length");
    assert_eq!(be16(ip, 6), 0x4000, "DF, no fragment");
    assert_eq!(ip[8], 64, "ttl");
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(&ip[12..16], &H1_IP.octets());
    assert_eq!(&ip[16..20], &H2_IP.octets());
    assert_eq!(checksum::finish(checksum::sum(0, ip)), 0, "IPv4 checksum");
    // UDP: source port in the ephemeral range, Geneve destination, valid checksum (csum=true).
    let udp = &enc[34..];
    let sport = be16(udp, 0);
    assert!((32768..61000).contains(&sport), "{sport}");
    assert_eq!(be16(udp, 2), 6081);
    assert_eq!(be16(udp, 4) as usize, udp.len());
    assert_ne!(be16(udp, 6), 0, "csum=true fills the checksum");
    let ps =
        pipeline::wire::ipv4::pseudo_sum(u32::from(H1_IP), u32::from(H2_IP), 17, udp.len() as u16);
    assert_eq!(
        checksum::finish(checksum::sum(ps, udp)),
        0,
        "UDP checksum verifies"
    );
    // Geneve: version 0, 2 words of options, C set (OVN's option type is critical), Ethernet
    // payload, the VNI from tun_id.
    let g = &enc[42..];
    assert_eq!(g[0], 2);
    assert_eq!(g[1], 0x40);
    assert_eq!(be16(g, 2), 0x6558);
    assert_eq!(&g[4..8], &[0, 0, 5, 0]);
    // OVN's option: class 0x0102, type 0x80, one word, the value loaded into tun_metadata0.
    assert_eq!(&g[8..12], &[0x01, 0x02, 0x80, 0x01]);
    assert_eq!(&g[12..16], &PORTS_OPT.to_be_bytes());
    assert_eq!(&enc[hl..], inner);
}

#[test]
fn frame_too_big_for_the_underlay_is_dropped_and_counted() {
    let dir = TempDir::new("mtu");
    let (mut h1, mut h2) = learned_pair(&dir.0);
    // Outer IPv4 = inner frame + 20 + 8 + 8 + 8: a 1456-byte inner frame makes exactly 1500.
    let fits = vm_frame(ROUTER, 64, 1456 - 42);
    assert_eq!(fits.len(), 1456);
    h1.send("vm1", &fits, 2);
    let (a2b, _) = pump(&mut h1, &mut h2, 2);
    assert_eq!(a2b.len(), 1);
    assert_eq!(a2b[0].len(), 1514);
    assert_eq!(h2.take("vm2").len(), 1);
    assert_eq!(h1.drops(DropReason::TooBig), 0);

    let too_big = vm_frame(ROUTER, 64, 1457 - 42);
    h1.send("vm1", &too_big, 3);
    let (a2b, _) = pump(&mut h1, &mut h2, 3);
    assert!(a2b.is_empty(), "never truncated, never sent");
    assert_eq!(h1.drops(DropReason::TooBig), 1);
    assert!(h2.take("vm2").is_empty());
}

/// A Geneve frame from `src` to host 2 with the given options.
fn geneve_to_h2(src: Ipv4Addr, opts: &[GeneveOpt], inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 256 + inner.len()];
    buf[256..].copy_from_slice(inner);
    let mut f = Frame::new(&mut buf, 256, inner.len());
    geneve::encap(
        &mut f,
        &GeneveOuter {
            src_mac: H1_MAC,
            dst_mac: H2_MAC,
            src_ip: u32::from(src),
            dst_ip: u32::from(H2_IP),
            tos: 0,
            ttl: 64,
            df: true,
            src_port: 40000,
            vni: VNI,
            oam: false,
            options: opts,
            csum: true,
        },
    )
    .unwrap();
    f.data().to_vec()
}

#[test]
fn bad_option_length_and_unknown_remote_are_dropped_and_counted() {
    let dir = TempDir::new("bad");
    let (_h1, mut h2) = learned_pair(&dir.0);
    let inner = vm_frame(VM2, 64, 30);
    let good = [GeneveOpt {
        class: 0x0102,
        typ: 0x80,
        data: &PORTS_OPT.to_be_bytes(),
    }];
    // The same frame built by hand is taken: the drops below are about what changed.
    h2.send("uplink", &geneve_to_h2(H1_IP, &good, &inner), 2);
    assert_eq!(h2.take("vm2"), vec![vm_frame(VM2, 63, 30)]);

    let long = [0u8, 1, 0, 2, 0, 0, 0, 0];
    let bad_len = [GeneveOpt {
        class: 0x0102,
        typ: 0x80,
        data: &long,
    }];
    h2.send("uplink", &geneve_to_h2(H1_IP, &bad_len, &inner), 3);
    assert!(h2.take("vm2").is_empty());
    assert_eq!(h2.drops(DropReason::TunnelMalformed), 1);

    // An option area whose TLV runs past its end: the Geneve length says 1 word, the option
    // claims 2.
    let mut cut = geneve_to_h2(H1_IP, &good, &inner);
    cut[42 + 8 + 3] = 0x02;
    // Keep the UDP checksum valid so only the option is at fault.
    cut[40] = 0;
    cut[41] = 0;
    h2.send("uplink", &cut, 4);
    assert!(h2.take("vm2").is_empty());
    assert_eq!(h2.drops(DropReason::TunnelMalformed), 2);

    let stranger = Ipv4Addr::new(172, 22, 1, 99);
    h2.send("uplink", &geneve_to_h2(stranger, &good, &inner), 5);
    assert!(h2.take("vm2").is_empty());
    assert_eq!(h2.drops(DropReason::TunnelUnknownRemote), 1);
}

#[test]
fn tshark_dissects_the_encapsulated_frame() {
    let Ok(out) = std::process::Command::new("tshark")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped: tshark is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = TempDir::new("tshark");
    let (mut h1, mut h2) = learned_pair(&dir.0);
    h1.send("vm1", &vm_frame(ROUTER, 64, 64), 2);
    let (a2b, _) = pump(&mut h1, &mut h2, 2);
    assert_eq!(a2b.len(), 1);
    let path = dir.0.join("enc.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    w.write(1, 0, &a2b[0]).unwrap();
    w.flush().unwrap();
    drop(w);
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args([
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .args(["-V", "-Y", "geneve"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "Generic Network Virtualization Encapsulation",
        "Virtual Network Identifier (VNI): 0x000005",
        "0x0102",
        "Type: 0x80",
        "Src: 192.168.10.11, Dst: 192.168.10.12",
        "Dst: Nutanix_45:5a:22 (50:6b:8d:45:5a:22)",
        "User Datagram Protocol, Src Port: 40000, Dst Port: 5201",
        "[Checksum Status: Good]",
        "[Header checksum status: Good]",
        "Source Address: 172.22.1.61",
        "Destination Address: 172.22.1.62",
    ] {
        assert!(text.contains(want), "tshark output lacks {want:?}:\n{text}");
    }
    // Every checksum (outer IPv4 and UDP, inner IPv4 and UDP) verifies.
    assert!(
        !text.contains("Status: Bad") && !text.contains("status: Bad"),
        "{text}"
    );
    assert_eq!(text.matches("[Checksum Status: Good]").count(), 2, "{text}");
}
