//! Hostile traffic through the real datapath, in process: a switch built from a configuration
//! (br0 with NORMAL and an uplink; brAtlas with the seed's SNAT pipeline, a VM port and a Geneve
//! port) over memory ports, so every frame can be followed. Runts, oversized and garbage
//! frames, bad checksums, IP options, zero-length UDP, TCP with every flag, VLAN stacks deeper
//! than the switch parses, and Geneve frames with broken options.
//!
//! For every frame: no panic; it is forwarded or dropped as the flows say; and it is accounted
//! for: received frames equal the engine's frames, and each one either left by some port or
//! raised a drop counter (engine reason or port counter).

use dataplane::config;
use dataplane::datapath::Datapath;
use dataplane::port::memory::MemoryHandle;
use dataplane::port::MAX_FRAME_LEN;
use dataplane::setup::{self, Built};
use dataplane::switch::endpoint_mac;
use pipeline::cache::FlowCache;
use pipeline::compose::{verify_checksums, PacketBuilder};
use pipeline::odp::DropReason;
use pipeline::wire::geneve::{self, GeneveOpt, GeneveOuter};
use pipeline::wire::Frame;
use std::net::Ipv4Addr;
use std::path::PathBuf;

const SNAT_FLOWS: &str = include_str!("../fixtures/snat.flows");
/// Decapsulated frames from the tunnel go to p3 (appended to the fixture's tables).
const GENEVE_FLOW: &str = "table=0,priority=200,in_port=gnv actions=output:p3\n";

const VM: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const ROUTER: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
const EXT: [u8; 6] = [0x00, 0x1c, 0x7f, 0x00, 0x00, 0x01];
const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const HOST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
const VM_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 5);
const SNAT_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 7, 27);
const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const ME: Ipv4Addr = Ipv4Addr::new(172, 22, 1, 62);
const PEER: Ipv4Addr = Ipv4Addr::new(172, 22, 1, 61);

const CONFIG: &str = r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "uplink"
type = "memory"
ofport = 10
[[bridge.port]]
name = "m1"
type = "memory"
ofport = 1
[[bridge.port]]
name = "m2"
type = "memory"
ofport = 2
[[bridge.port]]
name = "patch-localnet"
type = "patch"
ofport = 14
peer = "patch-brAtlas-t"

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
flows = "brAtlas.flows"
tlv_map = [ { class = 0x0102, type = 0x80, len = 4, field = "tun_metadata0" } ]
[[bridge.port]]
name = "patch-brAtlas-t"
type = "patch"
ofport = 1
peer = "patch-localnet"
[[bridge.port]]
name = "p2"
type = "memory"
ofport = 2
[[bridge.port]]
name = "p3"
type = "memory"
ofport = 3
[[bridge.port]]
name = "tap2"
type = "memory"
ofport = 4
[[bridge.port]]
name = "gnv"
type = "geneve"
ofport = 7
remote_ip = "172.22.1.61"
local_ip = "172.22.1.62"
key = "flow"
csum = true
"#;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What became of one frame.
#[derive(Debug, Default)]
struct Fate {
    /// (port name, frame) for every transmission.
    out: Vec<(String, Vec<u8>)>,
    /// Engine drop counters that rose, by reason.
    drops: Vec<DropReason>,
    /// Port receive drops that rose (oversized at the port).
    rx_dropped: u64,
}

impl Fate {
    fn on(&self, port: &str) -> Vec<&[u8]> {
        self.out
            .iter()
            .filter(|(p, _)| p == port)
            .map(|(_, f)| f.as_slice())
            .collect()
    }
    fn dropped(&self) -> bool {
        self.out.is_empty() && (!self.drops.is_empty() || self.rx_dropped > 0)
    }
}

struct Switch {
    _dir: TempDir,
    built: Built,
    dp: Datapath,
    handles: Vec<MemoryHandle>,
    now: u64,
    injected: u64,
}

impl Switch {
    fn new(tag: &str) -> Switch {
        let dir = std::env::temp_dir().join(format!("xvs-robust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        std::fs::write(
            dir.0.join("brAtlas.flows"),
            format!("{SNAT_FLOWS}{GENEVE_FLOW}"),
        )
        .unwrap();
        let cfg = config::parse(CONFIG, &dir.0, "hostile.toml").unwrap();
        let built = setup::build(&cfg, 0).unwrap();
        let (ports, handles) = setup::memory_ports(&built.ports);
        let dp = Datapath::new(ports, FlowCache::default());
        Switch {
            _dir: dir,
            built,
            dp,
            handles,
            now: 1_000_000_000,
            injected: 0,
        }
    }

    fn send(&mut self, port: &str, frame: &[u8]) -> Fate {
        let i = self.built.switch.dp_port_by_name(port).unwrap() as usize;
        let before = self.dp.engine.stats;
        let rx_before: u64 = self.dp.port_stats().iter().map(|(_, s)| s.rx_dropped).sum();
        self.handles[i].inject(frame);
        self.injected += 1;
        self.now += 1_000_000;
        self.dp.poll_once(&self.built.switch, self.now);
        let after = self.dp.engine.stats;
        let mut fate = Fate::default();
        for (j, h) in self.handles.iter().enumerate() {
            for f in h.take_transmitted() {
                fate.out.push((self.built.ports[j].name.clone(), f));
            }
        }
        for r in DropReason::ALL {
            if after.drop_count(r) > before.drop_count(r) {
                fate.drops.push(r);
            }
        }
        fate.rx_dropped = self
            .dp
            .port_stats()
            .iter()
            .map(|(_, s)| s.rx_dropped)
            .sum::<u64>()
            - rx_before;
        if fate.out.is_empty() && fate.drops.is_empty() && fate.rx_dropped == 0 {
            self.dp.engine.end_batch();
            let sw = &self.built.switch;
            let pn = |p: u32| sw.dp_port_name(p).map(str::to_string);
            for (e, k) in self.dp.engine.cache.iter() {
                let acts = pipeline::odp::format_actions(&e.actions, &pn);
                eprintln!("megaflow {:x?} -> {acts}", k.w);
            }
        }
        assert!(
            !fate.out.is_empty() || !fate.drops.is_empty() || fate.rx_dropped > 0,
            "a frame from {port} vanished without a count: {frame:02x?}"
        );
        fate
    }

    /// Every injected frame was received by a port or counted as a port drop; every received
    /// frame went through the engine once.
    fn check_accounting(&self) {
        let st = self.dp.port_stats();
        let rx: u64 = st.iter().map(|(_, s)| s.rx_packets).sum();
        let rx_dropped: u64 = st.iter().map(|(_, s)| s.rx_dropped).sum();
        assert_eq!(rx + rx_dropped, self.injected, "{st:?}");
        assert_eq!(self.dp.engine.stats.frames, rx);
        assert!(self.handles.iter().all(|h| h.pending_rx() == 0));
    }
}

fn udp_from_vm() -> PacketBuilder {
    PacketBuilder::udp4(VM, ROUTER, VM_IP, DNS, 5353, 53).payload_len(20)
}

/// The frame the SNAT pipeline sends out for `from_vm`: VLAN 2207, router MAC to the external
/// gateway, source address translated, TTL one less.
fn assert_snat_out(fate: &Fate, what: &str) -> Vec<u8> {
    let up = fate.on("uplink");
    assert_eq!(up.len(), 1, "{what}: {fate:?}");
    let f = up[0];
    assert_eq!(&f[0..6], &EXT, "{what}");
    assert_eq!(&f[6..12], &ROUTER, "{what}");
    assert_eq!(&f[12..16], &[0x81, 0x00, 0x08, 0x9f], "{what}: VLAN 2207");
    assert_eq!(&f[16..18], &[0x08, 0x00], "{what}");
    let ip = &f[18..];
    assert_eq!(&ip[12..16], &SNAT_IP.octets(), "{what}: source translated");
    assert_eq!(verify_checksums(f), Ok(()), "{what}");
    // br0 floods the unknown gateway MAC on VLAN 2207 to its other ports, never back.
    assert_eq!(fate.on("m1").len(), 1, "{what}");
    assert_eq!(fate.on("m2").len(), 1, "{what}");
    assert!(fate.on("tap2").is_empty());
    f.to_vec()
}

#[test]
fn runts_oversized_and_garbage_through_normal() {
    let mut sw = Switch::new("normal");
    // Teach br0 where host B is, so a frame to it is switched, not flooded.
    let from_b = PacketBuilder::udp4(HOST_B, HOST_A, DNS, VM_IP, 1, 2).build();
    let f = sw.send("m2", &from_b);
    assert_eq!(f.on("m1").len() + f.on("uplink").len(), 2, "flooded: {f:?}");

    // Runts: shorter than an Ethernet header. Dropped and counted, never flooded.
    for len in [0usize, 1, 6, 13] {
        let runt = &from_b[..len];
        let fate = sw.send("m1", runt);
        assert!(fate.dropped(), "{len}-byte runt: {fate:?}");
        assert_eq!(fate.drops, vec![DropReason::Runt], "{len}-byte runt");
    }

    // A bare Ethernet header is a frame: switched to where B was learned.
    let mut hdr = HOST_B.to_vec();
    hdr.extend_from_slice(&HOST_A);
    hdr.extend_from_slice(&[0x08, 0x00]);
    let fate = sw.send("m1", &hdr);
    assert_eq!(fate.on("m2"), vec![hdr.as_slice()], "{fate:?}");

    // Longer than a buffer: the port drops it, the engine never sees it.
    let huge = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2)
        .payload_len(MAX_FRAME_LEN)
        .build();
    assert!(huge.len() > MAX_FRAME_LEN);
    let fate = sw.send("m1", &huge);
    assert!(fate.out.is_empty() && fate.rx_dropped == 1, "{fate:?}");
    // Exactly the largest frame a buffer holds is switched whole.
    let biggest = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2)
        .payload_len(MAX_FRAME_LEN - 42)
        .build();
    assert_eq!(biggest.len(), MAX_FRAME_LEN);
    let fate = sw.send("m1", &biggest);
    assert_eq!(fate.on("m2"), vec![biggest.as_slice()]);

    // Garbage after a valid Ethernet header, bad IP checksums, IP options, bad lengths: L2
    // switching does not look past the header it needs, and forwards them unchanged.
    let mut x = 0x1234_5678u32;
    let mut garbage = hdr.clone();
    garbage.extend((0..200).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let mut bad_ip = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2).build();
    bad_ip[24] ^= 0xff;
    let mut short_ip = PacketBuilder::tcp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2).build();
    short_ip[16] = 0x05; // total length 1300 in a 54-byte frame
    let mut ihl_big = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2).build();
    ihl_big[14] = 0x4f;
    let options = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2)
        .ip_options(&[0x94, 4, 0, 0, 1, 1, 1, 0])
        .build();
    let all_flags = PacketBuilder::tcp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2)
        .tcp_flags(0x1ff)
        .build();
    for (what, f) in [
        ("garbage", &garbage),
        ("bad ip checksum", &bad_ip),
        ("ip total length past the frame", &short_ip),
        ("ihl past the frame", &ihl_big),
        ("ip options", &options),
        ("tcp with every flag", &all_flags),
    ] {
        let fate = sw.send("m1", f);
        assert_eq!(fate.on("m2"), vec![f.as_slice()], "{what}: {fate:?}");
        assert_eq!(fate.out.len(), 1, "{what}: {fate:?}");
    }

    // VLAN stacks deeper than the two tags the switch parses: switched on the outer tag, inner
    // tags and payload untouched. B is unknown on VLAN 10, so it floods VLAN 10's ports.
    for depth in 3..=5u16 {
        let mut p = PacketBuilder::udp4(HOST_A, HOST_B, VM_IP, DNS, 1, 2);
        for d in 0..depth {
            p = p.vlan(10 + d);
        }
        let f = p.build();
        let fate = sw.send("m1", &f);
        assert_eq!(fate.on("m2"), vec![f.as_slice()], "{depth} tags: {fate:?}");
        assert_eq!(fate.on("uplink"), vec![f.as_slice()], "{depth} tags");
    }
    sw.check_accounting();
}

#[test]
fn hostile_frames_through_the_snat_pipeline() {
    let mut sw = Switch::new("snat");
    let good = udp_from_vm().build();
    let fate = sw.send("tap2", &good);
    let out = assert_snat_out(&fate, "valid udp");
    assert_eq!(out[18 + 8], 63, "TTL decremented");

    let opts = udp_from_vm()
        .ip_options(&[0x94, 4, 0, 0, 1, 1, 1, 0])
        .build();
    let out = assert_snat_out(&sw.send("tap2", &opts), "ip options");
    assert_eq!(out[18] & 0x0f, 7, "options kept");
    assert_eq!(&out[18 + 20..18 + 28], &[0x94, 4, 0, 0, 1, 1, 1, 0]);

    let empty = PacketBuilder::udp4(VM, ROUTER, VM_IP, DNS, 5354, 53).build();
    assert_eq!(empty.len(), 42);
    assert_snat_out(&sw.send("tap2", &empty), "zero-length udp");

    let syn = PacketBuilder::tcp4(VM, ROUTER, VM_IP, DNS, 40000, 22).build();
    assert_snat_out(&sw.send("tap2", &syn), "tcp syn");

    // Conntrack finds each of these invalid; table 41 drops +inv.
    let mut bad_ip = udp_from_vm().build();
    bad_ip[24] ^= 0x55;
    let mut bad_udp = PacketBuilder::udp4(VM, ROUTER, VM_IP, DNS, 5355, 53)
        .payload_len(20)
        .build();
    bad_udp[40] ^= 0x55;
    let mut bad_tcp = PacketBuilder::tcp4(VM, ROUTER, VM_IP, DNS, 40001, 22).build();
    bad_tcp[50] ^= 0x55;
    let mut udp_len0 = PacketBuilder::udp4(VM, ROUTER, VM_IP, DNS, 5356, 53)
        .payload_len(20)
        .no_udp_checksum()
        .build();
    udp_len0[38] = 0;
    udp_len0[39] = 0;
    let all_flags = PacketBuilder::tcp4(VM, ROUTER, VM_IP, DNS, 40002, 22)
        .tcp_flags(0x1ff)
        .build();
    let syn_fin = PacketBuilder::tcp4(VM, ROUTER, VM_IP, DNS, 40003, 22)
        .tcp_flags(0x003)
        .build();
    let mut short_ip = udp_from_vm().build();
    short_ip[16] = 0x05;
    for (what, f) in [
        ("bad ip checksum", &bad_ip),
        ("bad udp checksum", &bad_udp),
        ("bad tcp checksum", &bad_tcp),
        ("udp length 0", &udp_len0),
        ("tcp with every flag", &all_flags),
        ("syn+fin", &syn_fin),
    ] {
        let fate = sw.send("tap2", f);
        assert!(fate.dropped(), "{what}: {fate:?}");
        assert_eq!(fate.drops, vec![DropReason::NoOutput], "{what}");
    }

    // An IPv4 header whose total length runs past the frame is not parsed as IP (no TTL), so
    // table 8's dec_ttl sends it to the controller xvs does not have: counted as such.
    let fate = sw.send("tap2", &short_ip);
    assert_eq!(fate.drops, vec![DropReason::Controller], "{fate:?}");
    assert!(fate.out.is_empty());

    // Deep VLAN stacks from the VM are not IP to table 8: dropped by its last rule.
    for depth in 3..=5u16 {
        let mut p = udp_from_vm();
        for d in 0..depth {
            p = p.vlan(100 + d);
        }
        let fate = sw.send("tap2", &p.build());
        assert!(fate.dropped(), "{depth} tags: {fate:?}");
    }

    // The reply to the first frame comes back un-SNATed; a deep stack under VLAN 2207 is
    // stripped once, is not IP, and is dropped.
    let reply = PacketBuilder::udp4(EXT, ROUTER, DNS, SNAT_IP, 53, 5353)
        .vlan(2207)
        .payload_len(8)
        .build();
    let fate = sw.send("uplink", &reply);
    let back = fate.on("tap2");
    assert_eq!(back.len(), 1, "{fate:?}");
    assert_eq!(&back[0][0..6], &VM);
    assert_eq!(&back[0][30..34], &VM_IP.octets());
    assert_eq!(verify_checksums(back[0]), Ok(()));
    let mut p = PacketBuilder::udp4(EXT, ROUTER, DNS, SNAT_IP, 53, 5353).vlan(2207);
    for d in 0..3 {
        p = p.vlan(300 + d);
    }
    let fate = sw.send("uplink", &p.build());
    assert!(fate.on("tap2").is_empty(), "{fate:?}");
    sw.check_accounting();
}

fn geneve_frame(opts: &[GeneveOpt], inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 256 + inner.len()];
    buf[256..].copy_from_slice(inner);
    let mut f = Frame::new(&mut buf, 256, inner.len());
    geneve::encap(
        &mut f,
        &GeneveOuter {
            src_mac: endpoint_mac(PEER),
            dst_mac: endpoint_mac(ME),
            src_ip: u32::from(PEER),
            dst_ip: u32::from(ME),
            tos: 0,
            ttl: 64,
            df: true,
            src_port: 40000,
            vni: 5,
            oam: false,
            options: opts,
            csum: true,
        },
    )
    .unwrap();
    f.data().to_vec()
}

#[test]
fn geneve_with_broken_options_is_dropped_and_counted() {
    let mut sw = Switch::new("geneve");
    let inner = PacketBuilder::udp4(VM, ROUTER, VM_IP, DNS, 1, 2).build();
    let word = 0x0001_0002u32.to_be_bytes();
    let good = [GeneveOpt {
        class: 0x0102,
        typ: 0x80,
        data: &word,
    }];
    let fate = sw.send("uplink", &geneve_frame(&good, &inner));
    assert_eq!(fate.on("p3"), vec![inner.as_slice()], "{fate:?}");

    let long = [0u8; 8];
    let wrong_len = [GeneveOpt {
        class: 0x0102,
        typ: 0x80,
        data: &long,
    }];
    let mut cases = vec![(
        "option of the wrong length",
        geneve_frame(&wrong_len, &inner),
    )];
    // Option length running past the option area (UDP checksum zeroed so only it is wrong).
    let mut past = geneve_frame(&good, &inner);
    past[42 + 8 + 3] = 0x1f;
    past[40] = 0;
    past[41] = 0;
    cases.push(("option past the option area", past));
    // Option area longer than the frame.
    let mut area = geneve_frame(&good, &inner);
    area[42] = 0x3f;
    area[40] = 0;
    area[41] = 0;
    cases.push(("option area past the frame", area));
    // Cut inside the Geneve header.
    let mut cut = geneve_frame(&good, &inner)[..42 + 6].to_vec();
    cut[16..18].copy_from_slice(&34u16.to_be_bytes());
    cut[38..40].copy_from_slice(&14u16.to_be_bytes());
    cut[40] = 0;
    cut[41] = 0;
    fix_ip_checksum(&mut cut);
    cases.push(("truncated geneve header", cut));
    // A bad UDP checksum on the outer header.
    let mut bad = geneve_frame(&good, &inner);
    bad[40] ^= 0x5a;
    cases.push(("bad outer udp checksum", bad));
    for (what, f) in &cases {
        let fate = sw.send("uplink", f);
        assert!(fate.on("p3").is_empty(), "{what}: {fate:?}");
        assert!(
            fate.drops.contains(&DropReason::TunnelMalformed),
            "{what}: {fate:?}"
        );
    }
    sw.check_accounting();
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let mut s = 0u32;
    for c in f[14..34].chunks(2) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// Hostile frames over real AF_XDP ports: namespace A sends them on a veth whose peer is an
/// AF_XDP port of a NORMAL switch run in process (its thread entered the switch's namespace);
/// the other port leads to namespace B. Small UMEMs (128 receive chunks) so the frames cycle
/// every chunk many times. After every poll, every receive chunk is lent to the kernel or
/// waiting to be, every transmit chunk free or in flight, and lending matches returning; at the
/// end every frame A sent was received or counted as a kernel drop.
#[test]
fn hostile_frames_over_afxdp_return_every_umem_chunk() {
    use dataplane::port::afxdp::UmemAccount;
    use dataplane::port::PortStats;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};
    use xvs_tests::netns::{is_root, veth_pair, Netns};

    if !is_root() {
        eprintln!("hostile_frames_over_afxdp_return_every_umem_chunk: skipped, needs root");
        return;
    }
    let a = Netns::new("robust-ha").unwrap();
    let s = Netns::new("robust-hs").unwrap();
    let b = Netns::new("robust-hb").unwrap();
    veth_pair(&a, "va", &s, "p0").unwrap();
    veth_pair(&s, "p1", &b, "vb").unwrap();
    for (ns, ifname) in [(&a, "va"), (&b, "vb"), (&s, "p0"), (&s, "p1")] {
        ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ])
        .unwrap();
    }
    let cfg_text = r#"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "p0"
type = "afxdp"
xdp_mode = "generic"
[[bridge.port]]
name = "p1"
type = "afxdp"
xdp_mode = "generic"
"#;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns_path = format!("/run/netns/{}", s.name());
    let stop2 = stop.clone();
    type Report = (
        Vec<(String, PortStats)>,
        Vec<(String, UmemAccount)>,
        u64,
        u64,
    );
    let switch = std::thread::spawn(move || -> Report {
        let f = std::fs::File::open(&ns_path).unwrap();
        use std::os::fd::AsRawFd;
        // setns only changes this thread's network namespace; the fd is a namespace file.
        assert_eq!(
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let cfg = config::parse(cfg_text, std::path::Path::new("/"), "afxdp.toml").unwrap();
        let mut built = setup::build(&cfg, 0).unwrap();
        for p in &mut built.ports {
            if let setup::PortIo::Afxdp(c) = &mut p.io {
                c.frame_count = 256;
            }
        }
        let ports = setup::open_ports(&built.ports).unwrap();
        let mut dp = Datapath::new(ports, FlowCache::default());
        ready_tx.send(()).unwrap();
        let t0 = Instant::now();
        let mut polls = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let now = t0.elapsed().as_nanos() as u64 + 1;
            dp.poll_once(&built.switch, now);
            polls += 1;
            for (name, acc) in dp.umem_accounts() {
                assert!(acc.balanced(), "{name} after poll {polls}: {acc:?}");
            }
        }
        (
            dp.port_stats(),
            dp.umem_accounts(),
            dp.engine.stats.frames,
            polls,
        )
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("AF_XDP ports open");

    // The hostile set, from A's MAC to B's (unknown, so flooded to p1).
    let (ma, mb) = ([2u8, 0, 0, 0, 0, 0xa], [2u8, 0, 0, 0, 0, 0xb]);
    let ip = |n| Ipv4Addr::new(198, 18, 7, n);
    let mut frames = Vec::new();
    let mut garbage = mb.to_vec();
    garbage.extend_from_slice(&ma);
    garbage.extend((0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    frames.push(garbage);
    let mut bad = PacketBuilder::udp4(ma, mb, ip(1), ip(2), 1, 2).build();
    bad[24] ^= 0xff;
    frames.push(bad);
    frames.push(
        PacketBuilder::tcp4(ma, mb, ip(1), ip(2), 1, 2)
            .tcp_flags(0x1ff)
            .build(),
    );
    frames.push(
        PacketBuilder::udp4(ma, mb, ip(1), ip(2), 1, 2)
            .ip_options(&[0x94, 4, 0, 0])
            .build(),
    );
    frames.push(PacketBuilder::udp4(ma, mb, ip(1), ip(2), 1, 2).build());
    frames.push(
        PacketBuilder::udp4(ma, mb, ip(1), ip(2), 1, 2)
            .payload_len(1472)
            .build(),
    );
    let mut deep = PacketBuilder::udp4(ma, mb, ip(1), ip(2), 1, 2);
    for d in 0..5 {
        deep = deep.vlan(10 + d);
    }
    frames.push(deep.build());
    let mut short_ip = PacketBuilder::tcp4(ma, mb, ip(1), ip(2), 1, 2).build();
    short_ip[16] = 0x05;
    frames.push(short_ip);
    let rounds = 250;
    let hex: String = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    std::fs::write(
        std::env::temp_dir().join(format!("xvs-robust-frames-{}", std::process::id())),
        &hex,
    )
    .unwrap();
    let script = format!(
        "import socket,time\n\
         fs=[bytes.fromhex(l) for l in open('{}').read().split()]\n\
         s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
         s.bind(('va',0))\n\
         n=0\n\
         for r in range({rounds}):\n\
         \x20   for f in fs:\n\
         \x20       s.send(f); n+=1\n\
         \x20   time.sleep(0.002)\n\
         print(n)\n",
        std::env::temp_dir()
            .join(format!("xvs-robust-frames-{}", std::process::id()))
            .display()
    );
    let out = a.exec_stdout(&["python3", "-c", &script]).unwrap();
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("xvs-robust-frames-{}", std::process::id())),
    );
    let sent: u64 = out.trim().parse().unwrap();
    assert_eq!(sent, (rounds * frames.len()) as u64);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (stats, umem, engine_frames, polls) = switch.join().expect("switch thread");
    let p0 = stats.iter().find(|(n, _)| n == "p0").unwrap().1;
    let p1 = stats.iter().find(|(n, _)| n == "p1").unwrap().1;
    eprintln!("afxdp: sent {sent}; p0 {p0:?}; p1 {p1:?}; {polls} polls; umem {umem:?}");
    assert_eq!(
        p0.rx_packets + p0.rx_dropped,
        sent,
        "every frame received or counted as dropped"
    );
    assert_eq!(engine_frames, p0.rx_packets + p1.rx_packets);
    assert_eq!(p0.invalid_descs, 0);
    // NORMAL floods every frame A sent to p1 (B's MAC is never learned).
    assert_eq!(p1.tx_packets + p1.tx_dropped(), p0.rx_packets);
    for (name, acc) in &umem {
        assert!(acc.balanced(), "{name}: {acc:?}");
        let st = stats.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(acc.rx_returned, st.rx_packets, "{name}: {acc:?}");
        assert_eq!(acc.rx_in_kernel, acc.rx_chunks, "{name}: all lent back");
    }
    drop((a, s, b));
}
