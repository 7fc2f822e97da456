//! The pipeline end to end: flow text in, frames through the engine (cache, translation,
//! execution, recirculation), frames out, with Open vSwitch's semantics as the expectation.

use pipeline::cache::FlowCache;
use pipeline::compose::{verify_checksums, PacketBuilder};
use pipeline::ct::{ConnTracker, CtItem, CtRequest, CtResult, CtVerdict, Nanos};
use pipeline::engine::{Engine, Shared};
use pipeline::extract::extract;
use pipeline::key::{self, loc, FlowKey};
use pipeline::odp::{DpSink, DropReason};
use pipeline::single::SingleBridge;
use pipeline::table::FlowFilter;
use pipeline::wire::Frame;
use pipeline::xlate::RecircTable;
use std::net::Ipv4Addr;
use std::sync::Mutex;

const VM_MAC: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const ROUTER_MAC: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];

/// The single-bridge environment with a per-table packet count helper.
struct Env(SingleBridge);

impl Env {
    fn new(ports: &[(&str, u32)], flows: &str) -> Env {
        Env(SingleBridge::new(ports, flows).expect("flows load"))
    }

    fn load(&self, flows: &str) {
        self.0.replace(flows).expect("flows load");
    }

    fn packets(&self, table: u8) -> u64 {
        self.0
            .tables
            .dump(&FlowFilter::all())
            .iter()
            .filter(|r| r.spec.table == table)
            .map(|r| r.stats.n_packets())
            .sum()
    }
}

#[derive(Default)]
struct Outputs(Vec<(u32, Vec<u8>)>);

impl DpSink for Outputs {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.0.push((port, frame.to_vec()));
    }
    fn recirculate(&mut self, _id: u32, _frame: &[u8], _key: &FlowKey) {
        panic!("no forked recirculation expected");
    }
}

/// A conntrack double: a connection is new until committed, then established; the reply
/// direction of a committed connection is +rpl. No NAT.
#[derive(Default)]
struct FakeCt {
    committed: Mutex<Vec<(u32, u32)>>,
    calls: Mutex<u32>,
    /// Every call: (zone, commit, frames), 1 frame for `execute`.
    batches: Mutex<Vec<(u16, bool, usize)>>,
    /// What `prefers_batches` answers.
    grouping: bool,
}

impl ConnTracker for FakeCt {
    fn prefers_batches(&self) -> bool {
        self.grouping
    }

    fn execute(
        &self,
        _f: &mut Frame<'_>,
        _l3: usize,
        k: &FlowKey,
        req: &CtRequest<'_>,
        _now: Nanos,
    ) -> CtVerdict {
        self.batches.lock().unwrap().push((req.zone, req.commit, 1));
        self.track(k, req)
    }

    fn execute_batch(
        &self,
        items: &mut [CtItem<'_, '_>],
        req: &CtRequest<'_>,
        _now: Nanos,
        out: &mut [Option<CtVerdict>],
    ) -> usize {
        self.batches
            .lock()
            .unwrap()
            .push((req.zone, req.commit, items.len()));
        let n = items.len().min(out.len());
        for (it, o) in items.iter_mut().zip(out.iter_mut()) {
            *o = Some(self.track(it.key, req));
        }
        n
    }
}

impl FakeCt {
    fn track(&self, k: &FlowKey, req: &CtRequest<'_>) -> CtVerdict {
        *self.calls.lock().unwrap() += 1;
        let (s, d) = (k.get(loc::NW_SRC) as u32, k.get(loc::NW_DST) as u32);
        let mut c = self.committed.lock().unwrap();
        let state = if c.contains(&(s, d)) {
            key::CS_ESTABLISHED
        } else if c.contains(&(d, s)) {
            key::CS_ESTABLISHED | key::CS_REPLY_DIR
        } else {
            if req.commit {
                c.push((s, d));
            }
            key::CS_NEW
        };
        CtVerdict::Tracked(CtResult {
            state: state | key::CS_TRACKED,
            zone: req.zone,
            ..Default::default()
        })
    }
}

struct Rig {
    env: Env,
    engine: Engine,
    recirc: RecircTable,
    ct: FakeCt,
}

impl Rig {
    fn new(ports: &[(&str, u32)], flows: &str) -> Rig {
        Rig {
            env: Env::new(ports, flows),
            engine: Engine::new(FlowCache::default()),
            recirc: RecircTable::new(),
            ct: FakeCt::default(),
        }
    }

    fn send(&mut self, in_port: u32, frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let view = self.env.0.view();
        let sh = Shared {
            env: &view,
            recirc: &self.recirc,
            ct: &self.ct,
            generation: view.generation(),
        };
        let mut buf = vec![0u8; 256 + frame.len()];
        buf[256..].copy_from_slice(frame);
        let mut out = Outputs::default();
        self.engine.process(
            Frame::new(&mut buf, 256, frame.len()),
            in_port,
            &FlowKey::ZERO,
            &sh,
            &mut out,
            1,
        );
        self.engine.end_batch();
        out.0
    }

    /// Sends `frames` (in_port, bytes) as one burst through [`Engine::process_batch`]; every
    /// frame of a burst comes in on the same port.
    fn send_batch(&mut self, in_port: u32, frames: &[Vec<u8>]) -> Vec<(u32, Vec<u8>)> {
        let view = self.env.0.view();
        let sh = Shared {
            env: &view,
            recirc: &self.recirc,
            ct: &self.ct,
            generation: view.generation(),
        };
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; 256 + f.len()];
                b[256..].copy_from_slice(f);
                b
            })
            .collect();
        let mut out = Outputs::default();
        let batch = bufs
            .iter_mut()
            .zip(frames)
            .map(|(b, f)| Frame::new(b, 256, f.len()));
        self.engine
            .process_batch(batch, in_port, &FlowKey::ZERO, &sh, &mut out, 1);
        self.engine.end_batch();
        out.0
    }
}

fn vm_udp() -> Vec<u8> {
    PacketBuilder::udp4(
        VM_MAC,
        ROUTER_MAC,
        Ipv4Addr::new(192, 168, 10, 5),
        Ipv4Addr::new(8, 8, 8, 8),
        40000,
        53,
    )
    .payload_len(22)
    .build()
}

fn vlan_of(frame: &[u8]) -> u16 {
    let mut k = FlowKey::ZERO;
    extract(frame, &mut k);
    k.vlan_tci()
}

/// The seed's table 0 and table 65 lines, with a table 8 that sends the VM's traffic to the
/// localnet port (reg15=0x1 in datapath 0x2710), as OVN's router would after routing.
const SEED_PATH: &str = r#"
cookie=0xded6f111, duration=546957.422s, table=0, n_packets=1503868, n_bytes=133529118, priority=100,in_port=tap2 actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,load:0x2712->OXM_OF_METADATA,load:0x2->NXM_NX_REG14,load:0->NXM_NX_REG13[16..31],resubmit(,8)
table=8, priority=100,metadata=0x2712,reg14=0x2 actions=load:0x2710->OXM_OF_METADATA,load:0x1->NXM_NX_REG15[],resubmit(,65)
cookie=0x8505267a, duration=865834.403s, table=65, n_packets=790622, n_bytes=80049428, idle_age=86, hard_age=65534, priority=100,reg15=0x1,metadata=0x2710 actions=mod_vlan_vid:2207,output:"patch-brAtlas-t",strip_vlan
cookie=0xded6f111, duration=562031.237s, table=65, n_packets=1906863, n_bytes=1491508947, idle_age=75, hard_age=65534, priority=100,reg15=0x2,metadata=0x2712 actions=output: tap2
"#;

const SEED_PORTS: &[(&str, u32)] = &[("patch-brAtlas-t", 1), ("tap2", 4), ("other", 7)];

#[test]
fn seed_table_65_sends_tagged_then_strip_vlan_changes_nothing_sent() {
    let mut rig = Rig::new(SEED_PORTS, SEED_PATH);
    let frame = vm_udp();
    let out = rig.send(4, &frame);
    assert_eq!(out.len(), 1, "one output");
    let (port, sent) = &out[0];
    assert_eq!(*port, 1);
    assert_eq!(
        vlan_of(sent),
        key::VLAN_CFI | 2207,
        "sent with VLAN 2207: strip_vlan comes after the output"
    );
    assert_eq!(sent.len(), frame.len() + 4);
    // The payload is the VM's frame with a tag inserted after the MAC addresses.
    assert_eq!(&sent[..12], &frame[..12]);
    assert_eq!(&sent[12..16], &[0x81, 0x00, 0x08, 0x9f]);
    assert_eq!(&sent[16..], &frame[12..]);
    verify_checksums(sent).unwrap();
}

#[test]
fn cache_hits_skip_translation_and_keep_counters_right() {
    let mut rig = Rig::new(SEED_PORTS, SEED_PATH);
    let frame = vm_udp();
    for _ in 0..5 {
        assert_eq!(rig.send(4, &frame).len(), 1);
    }
    assert_eq!(
        rig.engine.stats.translations, 1,
        "later frames hit the cache"
    );
    assert_eq!(rig.engine.cache.stats.hits, 4);
    for t in [0, 8, 65] {
        assert_eq!(rig.env.packets(t), 5, "table {t} counted every frame");
    }
    // Another source address agrees on every field the walk looked at: also a hit.
    let other = PacketBuilder::udp4(
        VM_MAC,
        ROUTER_MAC,
        Ipv4Addr::new(192, 168, 10, 9),
        Ipv4Addr::new(1, 1, 1, 1),
        1,
        2,
    )
    .build();
    assert_eq!(rig.send(4, &other).len(), 1);
    assert_eq!(rig.engine.stats.translations, 1);
}

#[test]
fn replaced_flow_applies_to_the_very_next_frame() {
    let mut rig = Rig::new(SEED_PORTS, SEED_PATH);
    let frame = vm_udp();
    assert_eq!(rig.send(4, &frame)[0].0, 1);
    let changed = SEED_PATH.replace("output:\"patch-brAtlas-t\"", "output:other");
    rig.env.load(&changed);
    let out = rig.send(4, &frame);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 7, "the new table 65 flow applies at once");
}

#[test]
fn output_to_input_port_is_skipped_unless_in_port_is_named() {
    let flows = "in_port=4 actions=output:4,output:1\nin_port=1 actions=in_port,output:4";
    let mut rig = Rig::new(SEED_PORTS, flows);
    let out = rig.send(4, &vm_udp());
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1]);
    let out = rig.send(1, &vm_udp());
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1, 4]);
}

#[test]
fn rewrites_keep_checksums_and_each_output_sees_the_frame_at_that_point() {
    let flows = "in_port=4,udp actions=output:1,mod_nw_src:172.22.7.27,mod_tp_src:1024,dec_ttl,output:7,mod_dl_dst:00:00:00:00:00:01,push_vlan:0x8100,mod_vlan_vid:10,output:1";
    let mut rig = Rig::new(SEED_PORTS, flows);
    let frame = vm_udp();
    let out = rig.send(4, &frame);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1, frame, "first output is the frame as received");
    let mut k = FlowKey::ZERO;
    extract(&out[1].1, &mut k);
    assert_eq!(
        k.get(loc::NW_SRC),
        u32::from(Ipv4Addr::new(172, 22, 7, 27)) as u128
    );
    assert_eq!(k.get(loc::TP_SRC), 1024);
    assert_eq!(k.get(loc::NW_TTL), 63);
    verify_checksums(&out[1].1).unwrap();
    extract(&out[2].1, &mut k);
    assert_eq!(k.vlan_tci(), key::VLAN_CFI | 10);
    assert_eq!(k.get(loc::DL_DST), 1);
    verify_checksums(&out[2].1).unwrap();
}

#[test]
fn ct_with_table_recirculates_with_ct_state() {
    // New connections are committed and sent on; established ones in the reply direction go
    // back. Untracked frames go through ct first.
    let flows = "
        table=0,priority=10,ip,ct_state=-trk actions=ct(table=1,zone=9)
        table=1,priority=10,ip,ct_state=+trk+new,in_port=4 actions=ct(commit,zone=9),output:1
        table=1,priority=10,ip,ct_state=+trk+est+rpl,in_port=1 actions=output:4
        table=1,priority=1 actions=drop
    ";
    let mut rig = Rig::new(SEED_PORTS, flows);
    let fwd = vm_udp();
    let out = rig.send(4, &fwd);
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1]);
    let rev = PacketBuilder::udp4(
        ROUTER_MAC,
        VM_MAC,
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(192, 168, 10, 5),
        53,
        40000,
    )
    .build();
    let out = rig.send(1, &rev);
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![4]);
    // A reply with no committed connection is +new and dropped.
    let stray = PacketBuilder::udp4(
        ROUTER_MAC,
        VM_MAC,
        Ipv4Addr::new(9, 9, 9, 9),
        Ipv4Addr::new(192, 168, 10, 5),
        53,
        40000,
    )
    .build();
    assert!(rig.send(1, &stray).is_empty());
    assert!(rig.engine.stats.recirculations >= 3);
}

#[test]
fn resubmit_loop_is_dropped_at_the_depth_limit() {
    let mut rig = Rig::new(SEED_PORTS, "table=0 actions=resubmit(,0)");
    assert!(rig.send(4, &vm_udp()).is_empty());
    assert_eq!(rig.engine.stats.drop_count(DropReason::ResubmitLimit), 1);
}

#[test]
fn table_miss_drops_and_is_counted() {
    let mut rig = Rig::new(SEED_PORTS, "table=0,in_port=1 actions=output:4");
    assert!(rig.send(4, &vm_udp()).is_empty());
    assert_eq!(rig.engine.stats.drop_count(DropReason::NoOutput), 1);
}

#[test]
fn seed_conjunction_without_clause_one_falls_to_priority_150() {
    // The seed's table 0 for frames from the patch port: the conj_id=100 flow needs clause 1/2,
    // which the excerpt omits, so VLAN 2207 frames take the priority-150 flow.
    let flows = r#"
priority=180,conj_id=100,in_port="patch-brAtlas-t",dl_vlan=2207 actions=strip_vlan,mod_dl_src:e0:19:95:ad:56:d0,output:7
priority=180,dl_vlan=2207 actions=conjunction(100,2/2)
priority=150,in_port="patch-brAtlas-t",dl_vlan=2207 actions=strip_vlan,output:4
"#;
    let mut rig = Rig::new(SEED_PORTS, flows);
    let tagged = PacketBuilder::udp4(
        ROUTER_MAC,
        VM_MAC,
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(172, 22, 7, 27),
        53,
        40000,
    )
    .vlan(2207)
    .build();
    let out = rig.send(1, &tagged);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 4);
    assert_eq!(vlan_of(&out[0].1), 0, "strip_vlan popped the tag");
    // With clause 1/2 present the conjunction completes and the conj_id flow wins.
    rig.env.load(&format!(
        "{flows}\npriority=180,in_port=\"patch-brAtlas-t\" actions=conjunction(100,1/2)"
    ));
    let out = rig.send(1, &tagged);
    assert_eq!(out[0].0, 7);
    let mut k = FlowKey::ZERO;
    extract(&out[0].1, &mut k);
    assert_eq!(k.get(loc::DL_SRC), 0xe019_95ad_56d0);
}

#[test]
fn malformed_frames_never_panic_and_l2_still_switches() {
    let mut rig = Rig::new(
        SEED_PORTS,
        "in_port=4 actions=mod_nw_src:1.2.3.4,mod_tp_dst:9,dec_ttl,output:1",
    );
    let full = vm_udp();
    for len in 0..full.len() {
        let out = rig.send(4, &full[..len]);
        if len >= 14 {
            assert!(out.len() <= 1);
        }
    }
    let mut garbage = vec![0xffu8; 60];
    garbage[12] = 0x08;
    garbage[13] = 0x00;
    rig.send(4, &garbage);
}

#[test]
fn datapath_set_actions_carry_whole_field_values() {
    // 50:6b:8d:45:5a:21 -> 50:6b:8d:45:5a:22 differs in two bits; the action must still say
    // the whole new address.
    let env = Env::new(
        SEED_PORTS,
        "in_port=4 actions=mod_dl_src:50:6b:8d:45:5a:22,output:1",
    );
    let recirc = RecircTable::new();
    let view = env.0.view();
    let mut k = FlowKey::ZERO;
    k.set_in_port(4);
    extract(&vm_udp(), &mut k);
    let t = pipeline::xlate::translate(&view, &recirc, &k, 0, None);
    let printed = pipeline::odp::format_actions(&t.actions, &|_| None);
    assert_eq!(printed, "set(eth(src=50:6b:8d:45:5a:22)),1");
}

#[test]
fn runts_are_dropped_before_any_flow_sees_them() {
    // A flow that would forward anything: a runt still goes nowhere, counted as a runt.
    let mut rig = Rig::new(&[("a", 1), ("b", 2)], "in_port=1,actions=output:2");
    let frame = vm_udp();
    for len in [0usize, 1, 13] {
        assert!(rig.send(1, &frame[..len]).is_empty(), "{len} bytes");
    }
    assert_eq!(rig.engine.stats.drop_count(DropReason::Runt), 3);
    assert_eq!(rig.engine.stats.translations, 0);
    assert_eq!(
        rig.send(1, &frame[..14]).len(),
        1,
        "a bare Ethernet header is a frame"
    );
}

/// Two zones, each with a lookup `ct` and a commit `ct`: the shape of the seed's SNAT path,
/// without the NAT (the double does none).
const TWO_ZONES: &str = r#"
table=0,priority=110,in_port=1,ip,nw_src=198.18.0.4,actions=ct(table=1,zone=6)
table=0,priority=100,in_port=1,ip,actions=ct(table=1,zone=5)
table=0,priority=100,in_port=2,ip,actions=ct(table=1,zone=6)
table=0,priority=90,in_port=1,actions=output:3
table=1,priority=100,ct_state=+new+trk,ip,actions=ct(commit,table=2,zone=5)
table=1,priority=100,ct_state=+est+trk,ip,actions=output:3
table=1,priority=90,ct_state=+inv+trk,actions=drop
table=2,priority=100,actions=output:4
"#;

const TWO_ZONE_PORTS: &[(&str, u32)] = &[("a", 1), ("b", 2), ("c", 3), ("d", 4)];

/// A UDP frame of connection `i` (its own source port), `mark` in the payload.
fn conn_frame(i: u16, mark: u8) -> Vec<u8> {
    PacketBuilder::udp4(
        VM_MAC,
        ROUTER_MAC,
        Ipv4Addr::new(198, 18, 0, (i % 200) as u8 + 1),
        Ipv4Addr::new(198, 19, 0, 1),
        10_000 + i,
        9,
    )
    .payload_len(18)
    .payload_byte(mark)
    .build()
}

#[test]
fn a_burst_is_tracked_in_one_call_per_ct_action() {
    let mut rig = Rig::new(TWO_ZONE_PORTS, TWO_ZONES);
    rig.ct.grouping = true;
    let burst: Vec<Vec<u8>> = (10..18).map(|i| conn_frame(i, 0)).collect();
    let out = rig.send_batch(1, &burst);
    assert_eq!(
        out.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![4; 8],
        "every new connection committed and sent on"
    );
    assert_eq!(
        out.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        burst,
        "in arrival order"
    );
    assert_eq!(
        *rig.ct.batches.lock().unwrap(),
        vec![(5, false, 8), (5, true, 8)],
        "one lookup call and one commit call, each with the whole burst"
    );
    // Established now: one lookup call, no commit.
    rig.ct.batches.lock().unwrap().clear();
    let out = rig.send_batch(1, &burst);
    assert_eq!(out.iter().filter(|(p, _)| *p == 3).count(), 8);
    assert_eq!(*rig.ct.batches.lock().unwrap(), vec![(5, false, 8)]);
    // A tracker that does not want batches gets every frame where it reaches the `ct`.
    rig.ct.grouping = false;
    rig.ct.batches.lock().unwrap().clear();
    let out = rig.send_batch(1, &burst);
    assert_eq!(
        out,
        burst.iter().map(|f| (3, f.clone())).collect::<Vec<_>>()
    );
    assert_eq!(*rig.ct.batches.lock().unwrap(), vec![(5, false, 1); 8]);
}

#[test]
fn frames_waiting_at_different_ct_actions_are_tracked_apart_and_non_ip_skips_the_tracker() {
    let mut rig = Rig::new(TWO_ZONE_PORTS, TWO_ZONES);
    rig.ct.grouping = true;
    // Connections 0 and 2 are established, 1 and 3 new (3 in zone 6); an ARP frame takes the
    // non-IP flow.
    rig.send_batch(1, &[conn_frame(0, 0), conn_frame(2, 0)]);
    rig.ct.batches.lock().unwrap().clear();
    let arp = PacketBuilder::arp_request(
        VM_MAC,
        Ipv4Addr::new(198, 18, 0, 9),
        Ipv4Addr::new(198, 18, 0, 1),
    )
    .build();
    let burst = vec![
        conn_frame(0, 1),
        conn_frame(1, 1),
        arp.clone(),
        conn_frame(2, 1),
        conn_frame(3, 1),
    ];
    let out = rig.send_batch(1, &burst);
    let mut calls = rig.ct.batches.lock().unwrap().clone();
    calls.sort();
    assert_eq!(
        calls,
        vec![(5, false, 3), (5, true, 2), (6, false, 1)],
        "zone 5's three frames looked up together, connection 3 (zone 6) alone, the two new \
         ones committed together"
    );
    let to = |port: u32| -> Vec<Vec<u8>> {
        out.iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, f)| f.clone())
            .collect()
    };
    // The ARP frame needs no tracking: it leaves before the frames that waited for it.
    assert_eq!(to(3), vec![arp, conn_frame(0, 1), conn_frame(2, 1)]);
    assert_eq!(to(4), vec![conn_frame(1, 1), conn_frame(3, 1)]);
}

/// The property batching must keep: for frames of different connections, a burst gives what
/// the same frames give one at a time, and the frames of one connection keep their order.
#[test]
fn a_burst_sends_what_frames_one_at_a_time_send() {
    let flows = TWO_ZONES;
    for seed in 0..40u16 {
        // Connections 0..6; each frame picks one, some twice in a row; port 1 or 2.
        let picks: Vec<(u16, u8)> = (0..20u16)
            .map(|n| ((seed.wrapping_mul(7) + n * (seed % 5 + 1)) % 6, n as u8))
            .collect();
        let frames: Vec<Vec<u8>> = picks.iter().map(|&(c, m)| conn_frame(c, m)).collect();
        let in_port = 1 + (seed % 2) as u32;
        let mut batched = Rig::new(TWO_ZONE_PORTS, flows);
        batched.ct.grouping = true;
        let mut single = Rig::new(TWO_ZONE_PORTS, flows);
        // Connections start established in both rigs, so no frame depends on another's commit.
        for c in 0..6 {
            batched.send(in_port, &conn_frame(c, 0xff));
            single.send(in_port, &conn_frame(c, 0xff));
        }
        let got = batched.send_batch(in_port, &frames);
        let want: Vec<(u32, Vec<u8>)> = frames
            .iter()
            .flat_map(|f| single.send(in_port, f))
            .collect();
        let mut g = got.clone();
        let mut w = want.clone();
        g.sort();
        w.sort();
        assert_eq!(g, w, "seed {seed}: the same frames out");
        for c in 0..6 {
            let of = |v: &[(u32, Vec<u8>)]| -> Vec<Vec<u8>> {
                v.iter()
                    .filter(|(_, f)| f[..][26..34] == conn_frame(c, 0)[26..34])
                    .map(|(_, f)| f.clone())
                    .collect()
            };
            assert_eq!(of(&got), of(&want), "seed {seed}: connection {c} in order");
        }
        assert_eq!(batched.engine.stats.frames, single.engine.stats.frames);
        assert_eq!(batched.engine.stats.drops, single.engine.stats.drops);
    }
}
