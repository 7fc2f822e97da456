//! The reference deployment's SNAT path, in process: the switch `scripts/bench-throughput.sh`
//! builds for its `snat` scenario (brAtlas with the AHV01 flows, patched to a NORMAL br0 whose
//! uplink is `eth1`), with the real connection tracker, and the frames that cross it.
//!
//! Addresses are those of the throughput script: the VM 198.18.10.11 behind the logical router,
//! SNAT to 198.19.7.27 towards the external router 198.19.7.1 on VLAN 2207. The flows are
//! `scripts/vpc/ahv01-brAtlas.flows` with the same address moves the script makes.

use conntrack::Tracker;
use dataplane::mac_learning::{Fdb, VlanMode};
use dataplane::switch::{Attachment, BridgePort, FailMode, Switch, SwitchBuilder, DEFAULT_MTU};
use pipeline::compose::PacketBuilder;
use pipeline::ct::{ConnTracker, Nanos};
use pipeline::flow::parse::{parse_flows, ParseContext};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// VM01, the frames' source.
pub const VM_MAC: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
/// The logical router's overlay-side port.
pub const ROUTER_IN_MAC: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0x01];
/// The logical router's external port (the SNAT address's MAC).
pub const ROUTER_EXT_MAC: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
/// The external router the default route points to.
pub const EXT_ROUTER_MAC: [u8; 6] = [0x00, 0x50, 0x56, 0xb0, 0x42, 0xb2];
pub const VM_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 11);
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 1);
pub const SNAT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 27);
/// The external network's VLAN.
pub const EXT_VLAN: u16 = 2207;
/// UDP destination port of every request (discard).
pub const DST_PORT: u16 = 9;
/// Payload bytes: 14 + 20 + 8 + 18 = 60 bytes on the wire, 64 with the FCS.
pub const PAYLOAD: usize = 18;

const AHV01_FLOWS: &str = include_str!("../../scripts/vpc/ahv01-brAtlas.flows");

/// The brAtlas flows of AHV01 with the throughput script's address moves (192.168.10.0/24 ->
/// 198.18.10.0/24, 172.22.7.0/24 -> 198.19.7.0/24, also in hex loads) and without the lines
/// that name its Geneve ports, which this switch does not have.
pub fn snat_flows() -> String {
    AHV01_FLOWS
        .lines()
        .filter(|l| !l.contains("ovn-"))
        .map(|l| {
            l.replace("192.168.10.", "198.18.10.")
                .replace("172.22.7.", "198.19.7.")
                .replace("0xc0a80a", "0xc6120a")
                .replace("0xac1607", "0xc61307")
                .replace("output: ", "output:")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The switch of the `snat` scenario and its tracker.
pub struct SnatSwitch {
    pub switch: Switch,
    pub tracker: Arc<Tracker>,
    /// Datapath port of `tap2` (the VM) and of `eth1` (the uplink).
    pub tap2: u32,
    pub eth1: u32,
}

impl SnatSwitch {
    /// Builds the switch; `ct` configures the tracker (its `max_conns` bounds the table).
    pub fn new(ct: conntrack::Config) -> SnatSwitch {
        let tracker = Arc::new(Tracker::new(ct));
        let mut sb = SwitchBuilder::new();
        let port = |name: &str, ofport: u32, attachment: Attachment| BridgePort {
            name: name.to_string(),
            ofport,
            attachment,
            vlan: VlanMode::TrunkAll,
            no_flood: false,
            mtu: DEFAULT_MTU,
        };
        let br0 = sb
            .bridge("br0", FailMode::Standalone, Fdb::new(300, 8192))
            .expect("bridge br0");
        let atlas = sb
            .bridge("brAtlas", FailMode::Secure, Fdb::new(300, 8192))
            .expect("bridge brAtlas");
        sb.port(br0, port("eth1", 10, Attachment::Datapath(0)))
            .expect("eth1");
        sb.port(
            br0,
            port(
                "patch-br0",
                14,
                Attachment::Patch {
                    peer: "patch-brAtlas-t".into(),
                },
            ),
        )
        .expect("patch-br0");
        sb.port(
            atlas,
            port(
                "patch-brAtlas-t",
                1,
                Attachment::Patch {
                    peer: "patch-br0".into(),
                },
            ),
        )
        .expect("patch-brAtlas-t");
        sb.port(atlas, port("tap2", 4, Attachment::Datapath(0)))
            .expect("tap2");
        let switch = sb
            .build(tracker.clone() as Arc<dyn ConnTracker>, 0)
            .expect("the snat switch builds");
        let b = switch.bridge("brAtlas").expect("brAtlas");
        let specs = parse_flows(&snat_flows(), &ParseContext::with_ports(b.port_names()))
            .unwrap_or_else(|e| panic!("snat flows: {}", e[0]));
        b.tables.replace_flows(&specs, 0).expect("snat flows load");
        let tap2 = switch.dp_port_by_name("tap2").expect("tap2");
        let eth1 = switch.dp_port_by_name("eth1").expect("eth1");
        SnatSwitch {
            switch,
            tracker,
            tap2,
            eth1,
        }
    }
}

/// The `i`-th connection's request from the VM: UDP from `VM_IP` (then 198.18.10.13 and up
/// once the source ports of one address are used up), source port `1024 + i % 64512`,
/// to `EXT_IP:DST_PORT`, routed (to the router's MAC).
pub fn snat_request(i: u32) -> Vec<u8> {
    let (src, sport) = request_tuple(i);
    PacketBuilder::udp4(VM_MAC, ROUTER_IN_MAC, src, EXT_IP, sport, DST_PORT)
        .payload_len(PAYLOAD)
        .build()
}

/// Source address and port of connection `i` (see [`snat_request`]).
pub fn request_tuple(i: u32) -> (Ipv4Addr, u16) {
    const PORTS: u32 = 65536 - 1024;
    // 198.18.10.12 is VM02, which has a floating IP of its own: skipped.
    let k = (i / PORTS) % 200;
    let host = if k == 0 { 11 } else { 12 + k };
    let sport = 1024 + (i % PORTS) as u16;
    (Ipv4Addr::new(198, 18, 10, host as u8), sport)
}

/// The external router's reply to connection `i` as it arrives on `eth1`: tagged with the
/// external VLAN, to the SNAT address and the port SNAT kept (`nat(src=ADDR)` keeps the source
/// port when it is free, as it is for every connection of one source address).
pub fn snat_reply(i: u32) -> Vec<u8> {
    let (_, sport) = request_tuple(i);
    PacketBuilder::udp4(
        EXT_ROUTER_MAC,
        ROUTER_EXT_MAC,
        EXT_IP,
        SNAT_IP,
        DST_PORT,
        sport,
    )
    .payload_len(PAYLOAD)
    .vlan(EXT_VLAN)
    .build()
}

/// A nanosecond clock for benchmarks that stays inside every timeout: tracked connections
/// never expire between warm-up and measurement.
pub const BENCH_NOW: Nanos = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::cache::FlowCache;
    use pipeline::engine::Engine;
    use pipeline::key::FlowKey;
    use pipeline::odp::DpSink;
    use pipeline::wire::Frame;

    #[derive(Default)]
    struct Sent(Vec<(u32, Vec<u8>)>);
    impl DpSink for Sent {
        fn output(&mut self, port: u32, frame: &[u8]) {
            self.0.push((port, frame.to_vec()));
        }
        fn recirculate(&mut self, _id: u32, _f: &[u8], _k: &FlowKey) {}
    }

    fn run(sw: &SnatSwitch, engine: &mut Engine, port: u32, frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let view = sw.switch.view();
        let sh = view.shared();
        let mut buf = vec![0u8; 128 + frame.len()];
        buf[128..].copy_from_slice(frame);
        let mut out = Sent::default();
        engine.process(
            Frame::new(&mut buf, 128, frame.len()),
            port,
            &FlowKey::ZERO,
            &sh,
            &mut out,
            BENCH_NOW,
        );
        engine.end_batch();
        out.0
    }

    #[test]
    fn requests_leave_snatted_and_tagged_and_replies_come_back() {
        let sw = SnatSwitch::new(conntrack::Config::default());
        let mut engine = Engine::new(FlowCache::default());
        for i in [0, 1, 64_512] {
            let out = run(&sw, &mut engine, sw.tap2, &snat_request(i));
            assert_eq!(out.len(), 1, "request {i}: {out:?}");
            let (port, f) = &out[0];
            assert_eq!(*port, sw.eth1);
            let (_, sport) = request_tuple(i);
            let want = PacketBuilder::udp4(
                ROUTER_EXT_MAC,
                EXT_ROUTER_MAC,
                SNAT_IP,
                EXT_IP,
                sport,
                DST_PORT,
            )
            .payload_len(PAYLOAD)
            .vlan(EXT_VLAN)
            .ttl(63)
            .build();
            if i < 64_512 {
                assert_eq!(f, &want, "request {i}");
            } else {
                // A second source address with the same port: SNAT must pick another one.
                assert_ne!(&f[38..40], &want[38..40], "request {i} kept a taken port");
            }
            if i < 64_512 {
                let back = run(&sw, &mut engine, sw.eth1, &snat_reply(i));
                assert_eq!(back.len(), 1, "reply {i}: {back:?}");
                assert_eq!(back[0].0, sw.tap2);
                let (src, sport) = request_tuple(i);
                let want = PacketBuilder::udp4(ROUTER_IN_MAC, VM_MAC, EXT_IP, src, DST_PORT, sport)
                    .payload_len(PAYLOAD)
                    .ttl(63)
                    .build();
                assert_eq!(back[0].1, want, "reply {i}");
            }
        }
        assert_eq!(sw.tracker.len(), 2 + 1);
    }

    /// Sends `frames` as one burst through `process_batch`.
    fn run_burst(
        sw: &SnatSwitch,
        engine: &mut Engine,
        port: u32,
        frames: &[Vec<u8>],
    ) -> Vec<(u32, Vec<u8>)> {
        let view = sw.switch.view();
        let sh = view.shared();
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; 128 + f.len()];
                b[128..].copy_from_slice(f);
                b
            })
            .collect();
        let mut out = Sent::default();
        let burst = bufs
            .iter_mut()
            .zip(frames)
            .map(|(b, f)| Frame::new(b, 128, f.len()));
        engine.process_batch(burst, port, &FlowKey::ZERO, &sh, &mut out, BENCH_NOW);
        engine.end_batch();
        out.0
    }

    /// The seed's SNAT path with the real tracker grouping frames per `ct()` (its threshold
    /// at 0) sends, burst by burst, what the same frames one at a time send: new connections
    /// committed and translated, established ones and their replies, in bursts that repeat
    /// connections.
    #[test]
    fn grouped_bursts_send_what_frames_one_at_a_time_send() {
        let grouped = SnatSwitch::new(conntrack::Config {
            prefetch_min_conns: 0,
            ..conntrack::Config::default()
        });
        let single = SnatSwitch::new(conntrack::Config {
            prefetch_min_conns: usize::MAX,
            ..conntrack::Config::default()
        });
        assert!(grouped.tracker.prefers_batches());
        assert!(!single.tracker.prefers_batches());
        let (mut eg, mut es) = (
            Engine::new(FlowCache::default()),
            Engine::new(FlowCache::default()),
        );
        // Bursts of 40 (more than one batch) over 50 connections, each connection once per
        // burst: the first bursts create them, the later ones find them established.
        for round in 0..4u32 {
            let ids: Vec<u32> = (0..40).map(|n| (n * 7 + round * 13) % 50).collect();
            let requests: Vec<Vec<u8>> = ids.iter().map(|&i| snat_request(i)).collect();
            let got = run_burst(&grouped, &mut eg, grouped.tap2, &requests);
            let want: Vec<(u32, Vec<u8>)> = requests
                .iter()
                .flat_map(|f| run(&single, &mut es, single.tap2, f))
                .collect();
            let (mut g, mut w) = (got.clone(), want.clone());
            g.sort();
            w.sort();
            assert_eq!(g, w, "round {round}: requests");
            assert_eq!(got.len(), ids.len(), "round {round}: every request sent");
            let replies: Vec<Vec<u8>> = ids.iter().map(|&i| snat_reply(i)).collect();
            let got = run_burst(&grouped, &mut eg, grouped.eth1, &replies);
            let want: Vec<(u32, Vec<u8>)> = replies
                .iter()
                .flat_map(|f| run(&single, &mut es, single.eth1, f))
                .collect();
            let (mut g, mut w) = (got.clone(), want.clone());
            g.sort();
            w.sort();
            assert_eq!(g, w, "round {round}: replies");
            assert_eq!(got.len(), ids.len(), "round {round}: every reply sent");
        }
        assert_eq!(grouped.tracker.len(), single.tracker.len());
        assert_eq!(grouped.tracker.counters(), single.tracker.counters());
    }
}
