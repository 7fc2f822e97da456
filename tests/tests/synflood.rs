//! A SYN flood through the seed's SNAT pipeline, in process: 200,000 SYNs from distinct
//! sources of the VPC subnet against a zone limit of 10,000 connections, with TCP connections
//! opened before the flood exchanging data throughout.
//!
//! Checked: the table never holds more than the limit; its memory stays bounded (bytes per
//! connection are printed); the established connections keep being translated and forwarded
//! both ways; every SYN beyond the limit is counted as a refused commit. Refused SYNs are not
//! remembered and, as in Open vSwitch, continue `+new` without NAT: they are counted here and
//! must not be translated (no port of the SNAT address is spent on them).

use dataplane::config;
use dataplane::datapath::Datapath;
use dataplane::port::memory::MemoryHandle;
use dataplane::setup::{self, Built};
use pipeline::cache::FlowCache;
use pipeline::compose::{verify_checksums, PacketBuilder};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

const SNAT_FLOWS: &str = include_str!("../fixtures/snat.flows");
const VM: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const ROUTER: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
const EXT: [u8; 6] = [0x00, 0x1c, 0x7f, 0x00, 0x00, 0x01];
const SNAT_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 7, 27);
const SERVER: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const ZONE: u16 = 9;
const LIMIT: u32 = 10_000;
const SYNS: u32 = 200_000;

fn config() -> String {
    format!(
        r#"
[datapath]
ct_max = 50000
ct_zone_limits = {{ {ZONE} = {LIMIT} }}

[[bridge]]
name = "br0"
[[bridge.port]]
name = "uplink"
type = "memory"
ofport = 10
[[bridge.port]]
name = "patch-localnet"
type = "patch"
ofport = 14
peer = "patch-brAtlas-t"

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
flows = "brAtlas.flows"
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
"#
    )
}

struct Rig {
    dir: PathBuf,
    built: Built,
    dp: Datapath,
    handles: Vec<MemoryHandle>,
    now: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn new() -> Rig {
        let dir = std::env::temp_dir().join(format!("xvs-robust-synflood-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("brAtlas.flows"), SNAT_FLOWS).unwrap();
        let cfg = config::parse(&config(), &dir, "synflood.toml").unwrap();
        let built = setup::build(&cfg, 0).unwrap();
        let (ports, handles) = setup::memory_ports(&built.ports);
        let dp = Datapath::new(ports, FlowCache::default());
        Rig {
            dir,
            built,
            dp,
            handles,
            now: 1_000_000_000,
        }
    }

    fn handle(&self, port: &str) -> &MemoryHandle {
        &self.handles[self.built.switch.dp_port_by_name(port).unwrap() as usize]
    }

    /// Injects frames on `port` and runs polls until every one was received.
    fn send(&mut self, port: &str, frames: &[Vec<u8>]) {
        for f in frames {
            self.handle(port).inject(f);
        }
        self.now += 1_000_000;
        while self.handle(port).pending_rx() > 0 {
            self.dp.poll_once(&self.built.switch, self.now);
        }
    }

    fn take(&self, port: &str) -> Vec<Vec<u8>> {
        self.handle(port).take_transmitted()
    }
}

fn src_of(f: &[u8]) -> Ipv4Addr {
    // Frames on the uplink carry VLAN 2207: IPv4 at 18.
    Ipv4Addr::new(f[30], f[31], f[32], f[33])
}

fn sport_of(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[38], f[39]])
}

/// A long-lived connection from the VM, opened with the three-way handshake through the
/// switch. Returns the translated source port.
fn open(rig: &mut Rig, vm_ip: Ipv4Addr, port: u16) -> u16 {
    let syn = PacketBuilder::tcp4(VM, ROUTER, vm_ip, SERVER, port, 22)
        .seq(1000)
        .build();
    rig.send("tap2", &[syn]);
    let out = rig.take("uplink");
    assert_eq!(out.len(), 1);
    assert_eq!(src_of(&out[0]), SNAT_IP);
    let nat_port = sport_of(&out[0]);
    let synack = PacketBuilder::tcp4(EXT, ROUTER, SERVER, SNAT_IP, 22, nat_port)
        .tcp_flags(0x012)
        .seq(5000)
        .ack(1001)
        .vlan(2207)
        .build();
    rig.send("uplink", &[synack]);
    assert_eq!(rig.take("tap2").len(), 1, "syn-ack reaches the VM");
    let ack = PacketBuilder::tcp4(VM, ROUTER, vm_ip, SERVER, port, 22)
        .tcp_flags(0x010)
        .seq(1001)
        .ack(5001)
        .build();
    rig.send("tap2", &[ack]);
    assert_eq!(rig.take("uplink").len(), 1);
    nat_port
}

/// One data segment each way on an established connection; both must be translated.
fn exchange(rig: &mut Rig, vm_ip: Ipv4Addr, port: u16, nat_port: u16, round: u32) {
    let seq = 1001 + round * 10;
    let data = PacketBuilder::tcp4(VM, ROUTER, vm_ip, SERVER, port, 22)
        .tcp_flags(0x018)
        .seq(seq)
        .ack(5001 + round * 10)
        .payload_len(10)
        .build();
    rig.send("tap2", &[data]);
    let out = rig.take("uplink");
    assert_eq!(out.len(), 1, "round {round}: data from the VM is forwarded");
    assert_eq!(src_of(&out[0]), SNAT_IP);
    assert_eq!(sport_of(&out[0]), nat_port);
    assert_eq!(verify_checksums(&out[0]), Ok(()));
    let back = PacketBuilder::tcp4(EXT, ROUTER, SERVER, SNAT_IP, 22, nat_port)
        .tcp_flags(0x018)
        .seq(5001 + round * 10)
        .ack(seq + 10)
        .payload_len(10)
        .vlan(2207)
        .build();
    rig.send("uplink", &[back]);
    let got = rig.take("tap2");
    assert_eq!(got.len(), 1, "round {round}: the reply reaches the VM");
    assert_eq!(&got[0][30..34], &vm_ip.octets());
    assert_eq!(u16::from_be_bytes([got[0][36], got[0][37]]), port);
    assert_eq!(verify_checksums(&got[0]), Ok(()));
}

#[test]
fn syn_flood_stays_within_the_zone_limit_and_established_flows_keep_going() {
    let mut rig = Rig::new();
    let ct = rig.built.conntrack.clone();
    let empty_bytes = ct.memory_bytes();
    let established: Vec<(Ipv4Addr, u16)> = (0..3)
        .map(|i| (Ipv4Addr::new(192, 168, 10, 200 + i), 40000 + i as u16))
        .collect();
    let nat_ports: Vec<u16> = established
        .iter()
        .map(|&(ip, p)| open(&mut rig, ip, p))
        .collect();
    assert_eq!(ct.zone_len(ZONE), 3);
    let before = ct.counters();

    // Distinct sources: a bijection of 24 bits onto (host byte, port), skipping port 0 and the
    // established connections' hosts.
    let mut sources = Vec::with_capacity(SYNS as usize);
    let mut i = 0u32;
    while sources.len() < SYNS as usize {
        let x = i.wrapping_mul(0x9e_3779).wrapping_add(0x5b_d1e9) & 0xff_ffff;
        i += 1;
        let (host, port) = ((x & 0xff) as u8, (x >> 8) as u16);
        if port == 0 || host >= 200 {
            continue;
        }
        sources.push((Ipv4Addr::new(192, 168, 10, host), port));
    }
    let t0 = Instant::now();
    let (mut translated, mut untranslated, mut peak_bytes) = (0u64, 0u64, 0usize);
    let mut at_limit = None;
    let mut round = 0;
    for (n, chunk) in sources.chunks(32).enumerate() {
        let burst: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&(ip, p)| PacketBuilder::tcp4(VM, ROUTER, ip, SERVER, p, 22).build())
            .collect();
        rig.send("tap2", &burst);
        for f in rig.take("uplink") {
            if src_of(&f) == SNAT_IP {
                translated += 1;
            } else {
                untranslated += 1;
            }
        }
        assert!(ct.zone_len(ZONE) <= LIMIT, "zone over its limit");
        assert!(ct.len() <= LIMIT as usize);
        if at_limit.is_none() && ct.zone_len(ZONE) == LIMIT {
            at_limit = Some(ct.memory_bytes());
        }
        if n % 250 == 0 {
            peak_bytes = peak_bytes.max(ct.memory_bytes());
            for (k, &(ip, p)) in established.iter().enumerate() {
                exchange(&mut rig, ip, p, nat_ports[k], round);
            }
            round += 1;
        }
    }
    let elapsed = t0.elapsed();
    peak_bytes = peak_bytes.max(ct.memory_bytes());
    let c = ct.counters();
    let excess = SYNS as u64 - (LIMIT as u64 - 3);
    assert_eq!(ct.zone_len(ZONE), LIMIT);
    assert_eq!(c.committed - before.committed, LIMIT as u64 - 3);
    assert_eq!(
        c.refused - before.refused,
        excess,
        "refused commits = the excess"
    );
    assert_eq!(translated, LIMIT as u64 - 3);
    assert_eq!(
        untranslated, excess,
        "refused SYNs continue +new, untranslated"
    );
    // Memory: bounded by the limit, not by the flood. Nothing grows once the zone is full;
    // and the table is at most one partly used chunk per slab per shard (the slabs grow by
    // chunks of just under 128 KiB) plus the live connections and their hash entries.
    let at_limit = at_limit.expect("the zone filled up");
    assert_eq!(
        peak_bytes, at_limit,
        "memory grew after the limit was reached"
    );
    let slot = std::mem::size_of::<conntrack::table::Conn>()
        + std::mem::size_of::<conntrack::table::KeyRec>();
    let bound = empty_bytes
        + conntrack::table::SHARDS * 2 * conntrack::table::CHUNK_BYTES
        + LIMIT as usize * (slot + 64);
    assert!(peak_bytes <= bound, "{peak_bytes} bytes > {bound}");
    let per_conn = (peak_bytes - empty_bytes) / LIMIT as usize;
    eprintln!(
        "synflood: {SYNS} SYNs in {:.2?} ({:.0} frames/s, debug build); table {} of {LIMIT}; \
         refused {}; memory {} bytes empty, {} bytes peak, {} bytes per connection \
         ({} bytes per slot)",
        elapsed,
        SYNS as f64 / elapsed.as_secs_f64(),
        ct.len(),
        c.refused - before.refused,
        empty_bytes,
        peak_bytes,
        per_conn,
        slot
    );
    // And after the flood, the old connections still work.
    for (k, &(ip, p)) in established.iter().enumerate() {
        exchange(&mut rig, ip, p, nat_ports[k], round);
    }
}
