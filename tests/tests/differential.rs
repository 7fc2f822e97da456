//! Differential tests: the same bridges, flow tables and frames through xvs (in process, the
//! `xvs replay` path) and through Open vSwitch 3.1 on dummy ports; what every port sends after
//! each frame must be the same, byte for byte.
//!
//! Two kinds of cases: hand-written ones (the seed deployment's table 0 and 65 flows, VLAN push
//! and strip, conjunctions, resubmit chains, registers and metadata, header rewrites, NORMAL
//! with patch ports, conntrack with NAT), and generated ones: for each seed, random but valid
//! OVN-like tables and frames built to hit and to miss them (see [`gen`]).
//!
//! The whole file is skipped, with a printed reason, when Open vSwitch is not installed.
//! `XVS_DIFF_SEEDS=N` changes how many seeds the generated run covers (default 200) and
//! `XVS_DIFF_SEED=S` runs the one seed S.

use pipeline::compose::PacketBuilder;
use std::net::Ipv4Addr;
use xvs_tests::diff::{check, Bridge, Case, Mismatch, Oracle, Port, Sent};

const VM: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const ROUTER: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];
const EXT: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xee];
const BCAST: [u8; 6] = [0xff; 6];

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn no_filter(_: usize, _: &mut Sent, _: &mut Sent) {}

fn bridge(name: &str, ports: Vec<Port>, flows: &str) -> Bridge {
    Bridge {
        name: name.into(),
        standalone: false,
        ports,
        flows: flows.into(),
    }
}

fn case(name: &str, bridges: Vec<Bridge>, frames: Vec<(&str, Vec<u8>)>) -> Case {
    Case {
        name: name.into(),
        bridges,
        frames: frames
            .into_iter()
            .map(|(p, f)| (p.to_string(), f))
            .collect(),
        of13: false,
        vlan_limit: None,
    }
}

fn report(fails: &[Mismatch]) {
    for m in fails {
        eprintln!("{}", m.report);
    }
    if !fails.is_empty() {
        let names: Vec<String> = fails
            .iter()
            .map(|m| format!("{} (frame {})", m.case, m.frame))
            .collect();
        panic!(
            "{} differential case(s) differ: {}",
            fails.len(),
            names.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases

/// The seed deployment's table 0 and table 65 lines, as the excerpt has them (cookies,
/// durations and counters included, as a dump gives them; only `output: tap2` lost its blank,
/// which Open vSwitch's parser rejects), joined by a table 8 that routes
/// between the two logical ports the way OVN's logical pipeline would.
fn seed_tables() -> Case {
    let mut flows = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/diff/seed-bratlas-t0-t65.flows"
    ))
    .expect("seed fixture");
    flows.push_str(
        "table=8,priority=100,reg14=0x2,metadata=0x2712,actions=load:0x1->NXM_NX_REG15[],load:0x2710->OXM_OF_METADATA[],resubmit(,65)\n\
         table=8,priority=100,reg14=0x1,metadata=0x2710,actions=load:0x2->NXM_NX_REG15[],load:0x2712->OXM_OF_METADATA[],resubmit(,65)\n",
    );
    let out = |n: u16| {
        PacketBuilder::udp4(
            VM,
            ROUTER,
            ip(192, 168, 10, 5),
            ip(8, 8, 8, 8),
            40000 + n,
            53,
        )
        .payload_len(12)
    };
    let back = |n: u16| {
        PacketBuilder::udp4(EXT, VM, ip(8, 8, 8, 8), ip(172, 22, 7, 27), 53, 40000 + n)
            .payload_len(9)
    };
    case(
        "seed-table0-table65",
        vec![bridge(
            "brint",
            vec![Port::io("patch-brAtlas-t", 1), Port::io("tap2", 2)],
            &flows,
        )],
        vec![
            ("tap2", out(1).build()),
            ("patch-brAtlas-t", back(1).vlan(2207).build()),
            // Wrong VLAN and untagged on the uplink: no flow.
            ("patch-brAtlas-t", back(2).vlan(2208).build()),
            ("patch-brAtlas-t", back(3).build()),
            // A tagged frame from the VM: mod_vlan_vid rewrites the tag it has.
            ("tap2", out(4).vlan(7).build()),
            (
                "tap2",
                PacketBuilder::arp_request(VM, ip(192, 168, 10, 5), ip(192, 168, 10, 1)).build(),
            ),
            (
                "patch-brAtlas-t",
                PacketBuilder::arp_reply(EXT, ip(172, 22, 7, 1), VM, ip(172, 22, 7, 27))
                    .vlan(2207)
                    .build(),
            ),
        ],
    )
}

fn vlan_cases() -> Vec<Case> {
    let ports = || vec![Port::io("p1", 1), Port::io("p2", 2), Port::io("p3", 3)];
    let udp = |n: u8| {
        PacketBuilder::udp4(VM, EXT, ip(10, 0, 0, n), ip(10, 0, 1, 1), 1000, 2000).payload_len(10)
    };
    let flows = "\
table=0,priority=10,in_port=1,vlan_tci=0x0000/0x1fff,actions=mod_vlan_vid:100,output:2,mod_vlan_pcp:5,output:3
table=0,priority=10,in_port=1,dl_vlan=100,actions=strip_vlan,output:2,output:3
table=0,priority=10,in_port=1,dl_vlan=200,actions=mod_vlan_vid:300,output:2,strip_vlan,strip_vlan,output:3
table=0,priority=5,in_port=1,actions=mod_vlan_vid:42,mod_vlan_pcp:7,output:2
table=0,priority=10,in_port=2,actions=strip_vlan,mod_vlan_vid:9,output:3,resubmit(,1)
table=1,priority=10,dl_vlan=9,actions=mod_vlan_pcp:1,output:1
table=1,priority=5,actions=output:3
";
    let push_flows = "\
table=0,priority=10,in_port=1,actions=push_vlan:0x8100,mod_vlan_vid:10,output:2,push_vlan:0x88a8,mod_vlan_vid:20,output:3
table=0,priority=10,in_port=2,dl_vlan=10,actions=push_vlan:0x8100,output:3,pop_vlan,output:1
table=0,priority=10,in_port=3,vlan_tci=0x1000/0x1000,actions=pop_vlan,output:1
table=0,priority=5,in_port=3,actions=output:1
";
    let arp = PacketBuilder::arp_request(VM, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let mut push = case(
        "vlan-push-pop-openflow13",
        vec![bridge("br0", ports(), push_flows)],
        vec![
            ("p1", udp(1).build()),
            ("p1", udp(2).vlan(5).build()),
            ("p2", udp(3).vlan(10).build()),
            ("p2", udp(4).vlan(11).build()),
            ("p3", udp(5).vlan(5).build()),
            ("p3", udp(6).build()),
            ("p1", arp.clone().build()),
        ],
    );
    push.of13 = true;
    vec![
        case(
            "vlan-mod-strip",
            vec![bridge("br0", ports(), flows)],
            vec![
                ("p1", udp(1).build()),
                ("p1", udp(2).vlan(100).build()),
                ("p1", udp(3).vlan(200).build()),
                ("p1", udp(4).vlan(7).build()),
                ("p1", udp(5).tag(0x8100, 0xa000 | 100).build()),
                ("p2", udp(6).build()),
                ("p2", udp(7).vlan(4).build()),
                ("p1", arp.clone().build()),
                ("p2", arp.clone().vlan(9).build()),
                (
                    "p1",
                    PacketBuilder::ethernet(VM, EXT, 0x88b5)
                        .payload_len(50)
                        .build(),
                ),
            ],
        ),
        push,
    ]
}

fn conjunction_cases() -> Vec<Case> {
    let ports = || {
        vec![
            Port::io("p1", 1),
            Port::io("p2", 2),
            Port::io("p3", 3),
            Port::io("p4", 4),
        ]
    };
    let flows = "\
table=0,priority=100,ip,nw_src=10.0.0.1,actions=conjunction(1,1/3)
table=0,priority=100,ip,nw_src=10.0.0.2,actions=conjunction(1,1/3)
table=0,priority=100,ip,nw_dst=10.0.1.0/24,actions=conjunction(1,2/3),conjunction(2,1/2)
table=0,priority=100,tcp,tp_dst=80,actions=conjunction(1,3/3)
table=0,priority=100,tcp,tp_dst=443,actions=conjunction(1,3/3)
table=0,priority=100,in_port=2,actions=conjunction(2,2/2)
table=0,priority=100,conj_id=1,ip,actions=output:2
table=0,priority=100,conj_id=2,ip,actions=load:0x7->NXM_NX_REG1[],resubmit(,1)
table=0,priority=50,ip,actions=output:4
table=0,priority=200,udp,tp_dst=53,nw_src=10.0.0.1,actions=output:3
table=1,priority=10,reg1=7,actions=output:3
";
    let tcp = |s: u8, d: u8, port: u16| {
        PacketBuilder::tcp4(VM, EXT, ip(10, 0, 0, s), ip(10, 0, d, 9), 5555, port).build()
    };
    let udp = |s: u8, d: u8, port: u16| {
        PacketBuilder::udp4(VM, EXT, ip(10, 0, 0, s), ip(10, 0, d, 9), 5555, port).build()
    };
    vec![case(
        "conjunctions",
        vec![bridge("br0", ports(), flows)],
        vec![
            ("p1", tcp(1, 1, 80)),
            ("p1", tcp(2, 1, 443)),
            ("p1", tcp(3, 1, 80)),
            ("p1", tcp(1, 2, 80)),
            ("p1", tcp(1, 1, 22)),
            ("p2", tcp(3, 1, 22)),
            ("p2", tcp(1, 1, 80)),
            ("p2", udp(3, 1, 99)),
            ("p1", udp(1, 1, 53)),
            ("p3", udp(1, 2, 53)),
        ],
    )]
}

fn resubmit_register_cases() -> Vec<Case> {
    let ports = || vec![Port::io("p1", 1), Port::io("p2", 2), Port::io("p3", 3)];
    let chain = "\
table=0,priority=10,in_port=1,actions=load:0x1->NXM_NX_REG0[0..3],load:0xabcd->NXM_NX_REG1[16..31],resubmit(,1),output:3
table=0,priority=10,in_port=2,actions=load:0x2->NXM_NX_REG0[0..3],resubmit(3,1)
table=0,priority=10,in_port=3,actions=set_field:0x5->reg2,move:NXM_NX_REG2[0..2]->NXM_NX_REG0[0..2],resubmit(,1)
table=1,priority=20,reg0=0x1,reg1=0xabcd0000/0xffff0000,actions=load:0x2710->OXM_OF_METADATA[],resubmit(,2)
table=1,priority=20,in_port=3,reg0=0x2,actions=output:in_port,output:1
table=1,priority=10,actions=move:NXM_NX_REG0[]->NXM_NX_REG5[],resubmit(,3)
table=2,priority=10,metadata=0x2710,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:02:00:00:00:00:99,output:2,resubmit(,3)
table=3,priority=10,reg5=0x5,actions=output:2
table=3,priority=10,ip,reg0=0x1,actions=move:NXM_OF_IP_SRC[]->NXM_NX_REG6[],resubmit(,4)
table=4,priority=10,ip,reg6=0x0a000001,actions=mod_nw_dst:10.9.9.9,output:1
table=4,priority=5,actions=output:NXM_NX_REG0[0..15]
";
    // A loop: every pass resubmits to the same table again; Open vSwitch gives up at its
    // resubmit depth limit and drops the frame.
    let lp = "\
table=0,priority=10,in_port=1,actions=load:0x0->NXM_NX_REG0[],resubmit(,1)
table=1,priority=10,actions=resubmit(,1)
table=0,priority=10,in_port=2,actions=resubmit(,2),output:3
table=2,priority=10,reg3=0x3,actions=output:1
table=2,priority=5,actions=load:0x3->NXM_NX_REG3[],output:3
";
    let udp = |s: u8| PacketBuilder::udp4(VM, EXT, ip(10, 0, 0, s), ip(10, 0, 1, 1), 7, 8).build();
    vec![
        case(
            "resubmit-registers-metadata",
            vec![bridge("br0", ports(), chain)],
            vec![
                ("p1", udp(1)),
                ("p1", udp(2)),
                ("p2", udp(1)),
                ("p3", udp(1)),
                (
                    "p1",
                    PacketBuilder::arp_request(VM, ip(10, 0, 0, 1), ip(10, 0, 0, 2)).build(),
                ),
            ],
        ),
        case(
            "resubmit-loop-and-fallthrough",
            vec![bridge("br0", ports(), lp)],
            vec![("p1", udp(1)), ("p2", udp(1))],
        ),
    ]
}

fn rewrite_cases() -> Vec<Case> {
    let ports = || vec![Port::io("p1", 1), Port::io("p2", 2), Port::io("p3", 3)];
    let flows = "\
table=0,priority=10,in_port=1,udp,actions=mod_nw_src:172.22.7.27,mod_tp_src:4242,dec_ttl,output:2,mod_nw_tos:0x28,set_field:3->nw_ecn,output:3
table=0,priority=10,in_port=1,tcp,actions=mod_nw_dst:192.168.10.77,mod_tp_dst:8080,mod_dl_dst:02:00:00:00:00:02,output:2
table=0,priority=10,in_port=1,icmp,actions=dec_ttl,dec_ttl,output:2
table=0,priority=10,in_port=1,arp,actions=set_field:2->arp_op,mod_dl_src:02:00:00:00:00:01,output:2
table=0,priority=5,in_port=1,actions=dec_ttl,output:3
table=0,priority=10,in_port=2,ip,actions=output:3,set_field:9->nw_ttl,output:1,dec_ttl,output:3
";
    let udp = |ttl: u8| {
        PacketBuilder::udp4(VM, EXT, ip(192, 168, 10, 5), ip(8, 8, 8, 8), 1234, 53)
            .ttl(ttl)
            .payload_len(20)
    };
    vec![case(
        "header-rewrites",
        vec![bridge("br0", ports(), flows)],
        vec![
            ("p1", udp(64).build()),
            ("p1", udp(64).no_udp_checksum().build()),
            ("p1", udp(2).tos(0xb9).build()),
            // dec_ttl on TTL 1 or 0: no output (Open vSwitch would tell a controller; there
            // is none).
            ("p1", udp(1).build()),
            ("p1", udp(0).build()),
            (
                "p1",
                PacketBuilder::tcp4(VM, EXT, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 999, 80)
                    .payload_len(5)
                    .build(),
            ),
            (
                "p1",
                PacketBuilder::icmp4_echo(VM, EXT, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 7, 1)
                    .ttl(2)
                    .build(),
            ),
            (
                "p1",
                PacketBuilder::arp_request(VM, ip(10, 0, 0, 1), ip(10, 0, 0, 2)).build(),
            ),
            // Not IP: the L3/L4 rewrites of the catch-all flow do not apply.
            (
                "p1",
                PacketBuilder::ethernet(VM, EXT, 0x88b5)
                    .payload_len(46)
                    .build(),
            ),
            (
                "p1",
                PacketBuilder::ipv4(VM, EXT, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 47)
                    .payload_len(30)
                    .build(),
            ),
            ("p2", udp(5).vlan(3).build()),
            ("p2", udp(1).build()),
        ],
    )]
}

fn normal_cases() -> Vec<Case> {
    let a = [0x02, 0, 0, 0, 0, 0x0a];
    let b = [0x02, 0, 0, 0, 0, 0x0b];
    let c = [0x02, 0, 0, 0, 0, 0x0c];
    let e = [0x02, 0, 0, 0, 0, 0x0e];
    let udp = |s: [u8; 6], d: [u8; 6], n: u8| {
        PacketBuilder::udp4(s, d, ip(198, 18, 0, n), ip(198, 18, 0, 200), 1000, 53).payload_len(20)
    };
    let mut br0 = bridge(
        "br0",
        vec![
            Port::io("h1", 1).tag(10),
            Port::io("h2", 2).tag(10),
            Port::io("trunk", 3).trunks(&[10, 20]),
            Port::patch("patch0", 4, "patch1"),
        ],
        "",
    );
    br0.standalone = true;
    let br1 = bridge(
        "br1",
        vec![Port::patch("patch1", 1, "patch0"), Port::io("ext", 2)],
        "table=0,priority=10,in_port=1,dl_vlan=10,actions=strip_vlan,output:2\n\
         table=0,priority=10,in_port=2,actions=mod_vlan_vid:10,output:1\n",
    );
    vec![case(
        "normal-vlans-patch",
        vec![br0, br1],
        vec![
            ("h1", udp(a, BCAST, 1).build()),
            ("ext", udp(e, a, 2).build()),
            ("h2", udp(b, e, 3).build()),
            ("trunk", udp(c, b, 4).vlan(10).build()),
            ("trunk", udp(c, a, 5).vlan(20).build()),
            ("h1", udp(a, c, 6).build()),
            ("trunk", udp(c, BCAST, 7).build()),
        ],
    )]
}

fn conntrack_cases() -> Vec<Case> {
    // OVN-like SNAT on a gateway: the VM's traffic leaves as 172.22.7.27, replies come back
    // de-NATed; only established/related return traffic goes to the VM.
    let flows = "\
table=0,priority=100,in_port=vm,ip,actions=ct(table=1,zone=5,nat)
table=0,priority=100,in_port=uplink,ip,actions=ct(table=2,zone=5,nat)
table=0,priority=10,arp,actions=FLOOD
table=1,priority=100,ct_state=+new+trk,ip,nw_src=192.168.10.0/24,actions=ct(commit,table=3,zone=5,nat(src=172.22.7.27))
table=1,priority=90,ct_state=+est+trk,ip,actions=resubmit(,3)
table=1,priority=80,ct_state=+inv+trk,actions=drop
table=2,priority=100,ct_state=+est+trk,ip,actions=mod_dl_dst:50:6b:8d:45:5a:21,output:vm
table=2,priority=100,ct_state=+rel+trk,ip,actions=mod_dl_dst:50:6b:8d:45:5a:21,output:vm
table=2,priority=50,ct_state=+new+trk,actions=drop
table=3,priority=10,ip,actions=mod_dl_src:e0:19:95:ad:56:d0,mod_dl_dst:02:00:00:00:00:ee,dec_ttl,output:uplink
";
    let out_udp = |sp: u16| {
        PacketBuilder::udp4(VM, ROUTER, ip(192, 168, 10, 5), ip(8, 8, 8, 8), sp, 53).payload_len(16)
    };
    let in_udp = |dp: u16| {
        PacketBuilder::udp4(EXT, ROUTER, ip(8, 8, 8, 8), ip(172, 22, 7, 27), 53, dp).payload_len(24)
    };
    let syn = PacketBuilder::tcp4(VM, ROUTER, ip(192, 168, 10, 5), ip(1, 1, 1, 1), 33000, 443);
    let synack = PacketBuilder::tcp4(EXT, ROUTER, ip(1, 1, 1, 1), ip(172, 22, 7, 27), 443, 33000)
        .tcp_flags(0x012)
        .seq(1000)
        .ack(2);
    let ack = PacketBuilder::tcp4(VM, ROUTER, ip(192, 168, 10, 5), ip(1, 1, 1, 1), 33000, 443)
        .tcp_flags(0x010)
        .seq(2)
        .ack(1001);
    let ping = PacketBuilder::icmp4_echo(VM, ROUTER, ip(192, 168, 10, 5), ip(9, 9, 9, 9), 77, 1);
    let pong = PacketBuilder::icmp4_echo(EXT, ROUTER, ip(9, 9, 9, 9), ip(172, 22, 7, 27), 77, 1)
        .icmp_type_code(0, 0);
    vec![case(
        "conntrack-snat",
        vec![bridge(
            "brgw",
            vec![Port::io("vm", 1), Port::io("uplink", 2)],
            flows,
        )],
        vec![
            // Unsolicited inbound: new, dropped.
            ("uplink", in_udp(40000).build()),
            ("vm", out_udp(40000).build()),
            ("uplink", in_udp(40000).build()),
            ("vm", out_udp(40000).build()),
            ("uplink", in_udp(40001).build()),
            ("vm", syn.build()),
            ("uplink", synack.build()),
            ("vm", ack.build()),
            ("vm", ping.build()),
            ("uplink", pong.build()),
            (
                "vm",
                PacketBuilder::arp_request(VM, ip(192, 168, 10, 5), ip(192, 168, 10, 1)).build(),
            ),
        ],
    )]
}

/// One TCP segment in an Ethernet frame: `tags` are (TPID, VID) pairs, outermost first;
/// checksums computed. (The packet builder has no way to say what the payload holds, and FTP
/// is all about what it holds.)
#[allow(clippy::too_many_arguments)]
fn tcp_seg(
    macs: ([u8; 6], [u8; 6]),
    tags: &[(u16, u16)],
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    use pipeline::wire::checksum::{checksum, finish, sum};
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    let c = finish(sum(sum(0, &pseudo), &t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + t.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&macs.0);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&t);
    f
}

const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const PSHACK: u8 = 0x18;

/// The FTP and TFTP helpers (`ct(commit,alg=ftp)`, `alg=tftp`) between two hosts without NAT:
/// what each packet's ct_state is shows in the TOS it leaves with (4: new related whose
/// ct_tp_dst is the parent's 21 and whose mark is the parent's; 8: new related with the
/// parent's mark; 16: a committed control connection; 20: new, unrelated, not committed; 24:
/// established related), and invalid packets are dropped.
fn ftp_cases() -> Vec<Case> {
    let flows = "\
table=0,priority=10,ip,actions=ct(table=1,zone=5)
table=1,priority=100,ip,ct_state=+trk+inv,actions=drop
table=1,priority=95,ip,ct_state=+trk+new+rel,ct_mark=7,ct_nw_proto=6,ct_tp_dst=21,actions=ct(commit,zone=5),mod_nw_tos:4,resubmit(,2)
table=1,priority=90,ip,ct_state=+trk+new+rel,ct_mark=7,actions=ct(commit,zone=5),mod_nw_tos:8,resubmit(,2)
table=1,priority=85,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=5),mod_nw_tos:12,resubmit(,2)
table=1,priority=80,tcp,tp_dst=21,ct_state=+trk+new-rel,actions=ct(commit,zone=5,alg=ftp,exec(set_field:7->ct_mark)),mod_nw_tos:16,resubmit(,2)
table=1,priority=80,udp,tp_dst=69,ct_state=+trk+new-rel,actions=ct(commit,zone=5,alg=tftp,exec(set_field:7->ct_mark)),mod_nw_tos:16,resubmit(,2)
table=1,priority=70,ip,ct_state=+trk+new-rel,actions=mod_nw_tos:20,resubmit(,2)
table=1,priority=60,ip,ct_state=+trk+est+rel,actions=mod_nw_tos:24,resubmit(,2)
table=1,priority=50,ip,ct_state=+trk+est-rel,actions=resubmit(,2)
table=2,in_port=client,actions=output:server
table=2,in_port=server,actions=output:client
";
    let (c, s) = (ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let (cm, sm) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let to_s = |sp: u16, dp: u16, fl: u8, seq: u32, ack: u32, pl: &[u8]| {
        (
            "client",
            tcp_seg((cm, sm), &[], (c, sp), (s, dp), fl, seq, ack, pl),
        )
    };
    let to_c = |sp: u16, dp: u16, fl: u8, seq: u32, ack: u32, pl: &[u8]| {
        (
            "server",
            tcp_seg((sm, cm), &[], (s, sp), (c, dp), fl, seq, ack, pl),
        )
    };
    let handshake = || {
        vec![
            to_s(40000, 21, SYN, 100, 0, b""),
            to_c(21, 40000, SYNACK, 500, 101, b""),
            to_s(40000, 21, ACK, 101, 501, b""),
        ]
    };
    let bridge_cs = || {
        vec![bridge(
            "brftp",
            vec![Port::io("client", 1), Port::io("server", 2)],
            flows,
        )]
    };

    let mut active = handshake();
    let mut cseq = 101;
    let mut say = |v: &mut Vec<(&'static str, Vec<u8>)>, pl: &[u8]| {
        v.push(to_s(40000, 21, PSHACK, cseq, 501, pl));
        cseq += pl.len() as u32;
    };
    say(&mut active, b"PORT 10,0,0,1,156,65\r\n");
    active.extend([
        to_c(21, 40000, ACK, 501, 123, b""),
        // The data connection: related (and the parent's tuple and mark), in both directions.
        to_c(20, 40001, SYN, 900, 0, b""),
        to_s(40001, 20, SYNACK, 300, 901, b""),
        to_c(20, 40001, PSHACK, 901, 301, b"listing\r\n"),
        // The announcement is not consumed by its first connection.
        to_c(2020, 40001, SYN, 900, 0, b""),
        // Another port is not announced.
        to_c(20, 40002, SYN, 900, 0, b""),
    ]);
    // A port out of range, then a third host's address: both invalid, dropped.
    say(&mut active, b"PORT 10,0,0,1,300,1\r\n");
    say(&mut active, b"PORT 10,0,0,9,1,1\r\n");
    // Lower case is fine.
    say(&mut active, b"port 10,0,0,1,4,1\r\n");
    active.push(to_c(20, 1025, SYN, 900, 0, b""));
    active.push(to_c(20, 2305, SYN, 900, 0, b""));

    let mut passive = handshake();
    passive.extend([
        to_s(40000, 21, PSHACK, 101, 501, b"PASV\r\n"),
        to_c(
            21,
            40000,
            PSHACK,
            501,
            107,
            b"227 Entering Passive Mode (10,0,0,2,100,1).\r\n",
        ),
        to_s(40005, 25601, SYN, 700, 0, b""),
        to_c(25601, 40005, SYNACK, 800, 701, b""),
        to_s(40006, 25602, SYN, 700, 0, b""),
    ]);

    let udp = |from: &'static str, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)| {
        let (smac, dmac) = if from == "client" { (cm, sm) } else { (sm, cm) };
        (
            from,
            PacketBuilder::udp4(smac, dmac, src.0, dst.0, src.1, dst.1)
                .payload_len(12)
                .build(),
        )
    };
    let tftp = vec![
        udp("client", (c, 40000), (s, 69)),
        udp("server", (s, 3333), (c, 40000)),
        udp("client", (c, 40000), (s, 3333)),
        udp("server", (s, 3334), (c, 40000)),
        udp("server", (s, 69), (c, 40000)),
        udp("server", (ip(10, 0, 0, 3), 3335), (c, 40000)),
    ];
    vec![
        case("ftp-active", bridge_cs(), active),
        case("ftp-passive", bridge_cs(), passive),
        case("tftp", bridge_cs(), tftp),
    ]
}

/// FTP through the seed deployment's SNAT (192.168.10.0/24 leaving as 172.22.7.27): the
/// client's PORT names 192.168.10.5 and must reach the server naming 172.22.7.27, one byte
/// shorter, so every later segment of the control connection has its sequence (client to
/// server) or acknowledgement (server to client) number shifted; the server's data connection
/// to 172.22.7.27 is related and translated to the client. Then passive mode through the same
/// SNAT. The client's frames carry two VLAN tags, stripped before `ct()`: Open vSwitch rewrites
/// an FTP payload only when the packet's buffer has room to grow (8 bytes), and a dummy port's
/// buffer has none unless headers were removed from it; two tags are 8 bytes.
fn ftp_snat_case() -> Case {
    let flows = "\
table=0,priority=10,in_port=vm,dl_vlan=10,actions=strip_vlan,strip_vlan,resubmit(,9)
table=0,priority=10,in_port=uplink,ip,actions=ct(table=2,zone=5,nat)
table=9,priority=10,ip,actions=ct(table=1,zone=5,nat)
table=1,priority=100,ip,ct_state=+trk+inv,actions=drop
table=1,priority=90,tcp,tp_dst=21,ct_state=+new+trk,actions=ct(commit,table=3,zone=5,nat(src=172.22.7.27),alg=ftp)
table=1,priority=80,ip,ct_state=+new+trk,nw_src=192.168.10.0/24,actions=ct(commit,table=3,zone=5,nat(src=172.22.7.27))
table=1,priority=70,ip,ct_state=+est+rel+trk,actions=mod_nw_tos:8,output:uplink
table=1,priority=60,ip,ct_state=+est+trk,actions=output:uplink
table=2,priority=100,ip,ct_state=+trk+inv,actions=drop
table=2,priority=90,ip,ct_state=+new+rel+trk,actions=ct(commit,table=4,zone=5,nat)
table=2,priority=70,ip,ct_state=+est+rel+trk,actions=mod_nw_tos:8,output:vm
table=2,priority=60,ip,ct_state=+est+trk,actions=output:vm
table=3,priority=10,actions=output:uplink
table=4,priority=10,actions=mod_nw_tos:12,output:vm
";
    let (vm, srv, public) = (ip(192, 168, 10, 5), ip(8, 8, 8, 8), ip(172, 22, 7, 27));
    let qinq = [(0x88a8, 10), (0x8100, 20)];
    let out = |sp: u16, dp: u16, fl: u8, seq: u32, ack: u32, pl: &[u8]| {
        (
            "vm",
            tcp_seg((VM, ROUTER), &qinq, (vm, sp), (srv, dp), fl, seq, ack, pl),
        )
    };
    let back = |sp: u16, dp: u16, fl: u8, seq: u32, ack: u32, pl: &[u8]| {
        (
            "uplink",
            tcp_seg(
                (EXT, ROUTER),
                &[],
                (srv, sp),
                (public, dp),
                fl,
                seq,
                ack,
                pl,
            ),
        )
    };
    let port = b"PORT 192,168,10,5,156,65\r\n";
    // In the client's numbering the PORT is 26 bytes; the server receives 25.
    let (sent, seen) = (101 + port.len() as u32, 100 + port.len() as u32);
    let frames = vec![
        out(40000, 21, SYN, 100, 0, b""),
        back(21, 40000, SYNACK, 500, 101, b""),
        out(40000, 21, ACK, 101, 501, b""),
        out(40000, 21, PSHACK, 101, 501, port),
        back(21, 40000, ACK, 501, seen, b""),
        back(
            21,
            40000,
            PSHACK,
            501,
            seen,
            b"200 PORT command successful\r\n",
        ),
        out(40000, 21, PSHACK, sent, 530, b"LIST\r\n"),
        back(21, 40000, ACK, 530, seen + 6, b""),
        back(20, 40001, SYN, 900, 0, b""),
        out(40001, 20, SYNACK, 300, 901, b""),
        back(20, 40001, PSHACK, 901, 301, b"listing\r\n"),
        back(
            21,
            40000,
            PSHACK,
            530,
            seen + 6,
            b"227 Entering Passive Mode (8,8,8,8,100,1).\r\n",
        ),
        out(40005, 25601, SYN, 700, 0, b""),
        back(25601, 40005, SYNACK, 800, 701, b""),
        out(40000, 21, PSHACK, sent + 6, 574, b"QUIT\r\n"),
    ];
    Case {
        vlan_limit: Some(2),
        ..case(
            "ftp-snat",
            vec![bridge(
                "brgw",
                vec![Port::io("vm", 1), Port::io("uplink", 2)],
                flows,
            )],
            frames,
        )
    }
}

#[test]
fn hand_written_cases() {
    let Some(mut oracle) = Oracle::start_or_skip() else {
        return;
    };
    let t = std::time::Instant::now();
    let mut cases = vec![seed_tables()];
    cases.extend(vlan_cases());
    cases.extend(conjunction_cases());
    cases.extend(resubmit_register_cases());
    cases.extend(rewrite_cases());
    cases.extend(normal_cases());
    cases.extend(conntrack_cases());
    cases.extend(ftp_cases());
    cases.push(ftp_snat_case());
    let mut fails = Vec::new();
    let mut frames = 0;
    for c in &cases {
        frames += c.frames.len();
        if let Err(m) = check(&mut oracle, c, &no_filter) {
            fails.push(m);
        }
    }
    eprintln!(
        "differential: {} hand-written cases, {frames} frames, {:?}",
        cases.len(),
        t.elapsed()
    );
    report(&fails);
}

// ---------------------------------------------------------------------------------------------
// Generated cases

/// Random but valid OVN-like tables and frames aimed at them, from a seed.
mod gen {
    use super::*;
    use std::fmt::Write as _;

    /// splitmix64: tiny, deterministic, good enough to pick test inputs.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678)
        }
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// True with probability `pct` percent.
        pub fn pct(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
        pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
            v[self.below(v.len() as u64) as usize]
        }
    }

    const MACS: [[u8; 6]; 4] = [
        [0x02, 0, 0, 0, 0, 0x01],
        [0x02, 0, 0, 0, 0, 0x02],
        [0x02, 0, 0, 0, 0, 0x03],
        [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21],
    ];
    const IPS: [[u8; 4]; 5] = [
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        [10, 0, 1, 1],
        [192, 168, 10, 5],
        [172, 22, 7, 27],
    ];
    const TP: [u16; 5] = [53, 80, 443, 1000, 8080];
    const VIDS: [u16; 3] = [10, 20, 2207];
    const N_PORTS: u32 = 4;

    fn mac_s(m: [u8; 6]) -> String {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn ip_s(a: [u8; 4]) -> String {
        Ipv4Addr::from(a).to_string()
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Proto {
        Any,
        Ip,
        Tcp,
        Udp,
        Icmp,
        Arp,
    }

    impl Proto {
        fn is_ip(self) -> bool {
            matches!(self, Proto::Ip | Proto::Tcp | Proto::Udp | Proto::Icmp)
        }
        fn has_ports(self) -> bool {
            matches!(self, Proto::Tcp | Proto::Udp)
        }
    }

    /// What a generated flow matches, kept to aim frames at it.
    #[derive(Clone, Debug)]
    pub struct M {
        pub proto: Proto,
        pub in_port: Option<u32>,
        /// Some(None): untagged; Some(Some(v)): VLAN v.
        pub vlan: Option<Option<u16>>,
        pub dl_src: Option<[u8; 6]>,
        pub dl_dst: Option<[u8; 6]>,
        pub nw_src: Option<([u8; 4], u8)>,
        pub nw_dst: Option<([u8; 4], u8)>,
        pub tp_src: Option<u16>,
        pub tp_dst: Option<u16>,
        pub arp_op: Option<u16>,
    }

    impl M {
        fn empty() -> M {
            M {
                proto: Proto::Any,
                in_port: None,
                vlan: None,
                dl_src: None,
                dl_dst: None,
                nw_src: None,
                nw_dst: None,
                tp_src: None,
                tp_dst: None,
                arp_op: None,
            }
        }

        fn text(&self) -> String {
            let mut v: Vec<String> = Vec::new();
            match self.proto {
                Proto::Any => {}
                Proto::Ip => v.push("ip".into()),
                Proto::Tcp => v.push("tcp".into()),
                Proto::Udp => v.push("udp".into()),
                Proto::Icmp => v.push("icmp".into()),
                Proto::Arp => v.push("arp".into()),
            }
            if let Some(p) = self.in_port {
                v.push(format!("in_port={p}"));
            }
            match self.vlan {
                Some(None) => v.push("vlan_tci=0x0000/0x1fff".into()),
                Some(Some(vid)) => v.push(format!("dl_vlan={vid}")),
                None => {}
            }
            if let Some(m) = self.dl_src {
                v.push(format!("dl_src={}", mac_s(m)));
            }
            if let Some(m) = self.dl_dst {
                v.push(format!("dl_dst={}", mac_s(m)));
            }
            let pfx = |(a, l): ([u8; 4], u8)| format!("{}/{l}", ip_s(a));
            if let Some(n) = self.nw_src {
                v.push(format!("nw_src={}", pfx(n)));
            }
            if let Some(n) = self.nw_dst {
                v.push(format!("nw_dst={}", pfx(n)));
            }
            if let Some(p) = self.tp_src {
                v.push(format!("tp_src={p}"));
            }
            if let Some(p) = self.tp_dst {
                v.push(format!("tp_dst={p}"));
            }
            if let Some(o) = self.arp_op {
                v.push(format!("arp_op={o}"));
            }
            v.join(",")
        }
    }

    fn random_match(r: &mut Rng, table: u8) -> M {
        let mut m = M::empty();
        m.proto = r.pick(&[
            Proto::Any,
            Proto::Any,
            Proto::Ip,
            Proto::Tcp,
            Proto::Udp,
            Proto::Udp,
            Proto::Icmp,
            Proto::Arp,
        ]);
        if r.pct(if table == 0 { 55 } else { 15 }) {
            m.in_port = Some(1 + r.below(N_PORTS as u64) as u32);
        }
        if r.pct(25) {
            m.vlan = Some(if r.pct(35) { None } else { Some(r.pick(&VIDS)) });
        }
        if r.pct(15) {
            m.dl_src = Some(r.pick(&MACS));
        }
        if r.pct(15) {
            m.dl_dst = Some(r.pick(&MACS));
        }
        if m.proto.is_ip() {
            if r.pct(30) {
                m.nw_src = Some((r.pick(&IPS), r.pick(&[32, 32, 24, 16])));
            }
            if r.pct(30) {
                m.nw_dst = Some((r.pick(&IPS), r.pick(&[32, 24, 16])));
            }
        }
        if m.proto.has_ports() {
            if r.pct(40) {
                m.tp_dst = Some(r.pick(&TP));
            }
            if r.pct(15) {
                m.tp_src = Some(r.pick(&TP));
            }
        }
        if m.proto == Proto::Arp && r.pct(40) {
            m.arp_op = Some(r.pick(&[1, 2]));
        }
        m
    }

    /// Register and metadata conditions (not used to aim frames: earlier tables set them).
    fn random_regs(r: &mut Rng) -> String {
        let mut v = Vec::new();
        if r.pct(30) {
            let n = r.below(4);
            if r.pct(50) {
                v.push(format!("reg{n}={:#x}", r.below(4)));
            } else {
                v.push(format!("reg{n}={:#x}/0x1", r.below(2)));
            }
        }
        if r.pct(15) {
            v.push(format!("metadata={:#x}", r.below(4)));
        }
        v.join(",")
    }

    fn random_actions(r: &mut Rng, m: &M, table: u8, n_tables: u8, of13: bool) -> String {
        let mut a: Vec<String> = Vec::new();
        let n = 1 + r.below(4);
        let mut vlan_touched = false;
        // Open vSwitch refuses a flow that could leave more than two tags on a frame its match
        // describes (a frame not matched as tagged counts as untagged).
        let mut pushes_left = if matches!(m.vlan, Some(Some(_))) {
            1
        } else {
            2
        };
        for _ in 0..n {
            match r.below(14) {
                0 => {
                    let reg = r.below(4);
                    if r.pct(50) {
                        a.push(format!("load:{:#x}->NXM_NX_REG{reg}[]", r.below(4)));
                    } else {
                        a.push(format!("load:{:#x}->NXM_NX_REG{reg}[0..3]", r.below(4)));
                    }
                }
                1 => a.push(format!("load:{:#x}->OXM_OF_METADATA[]", r.below(4))),
                2 => a.push(format!("set_field:{:#x}->reg{}", r.below(4), r.below(4))),
                3 => {
                    let (x, y) = (r.below(4), r.below(4));
                    if r.pct(50) {
                        a.push(format!("move:NXM_NX_REG{x}[0..15]->NXM_NX_REG{y}[0..15]"));
                    } else if m.proto.is_ip() {
                        a.push(format!("move:NXM_OF_IP_SRC[]->NXM_NX_REG{y}[]"));
                    } else {
                        a.push("move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]".into());
                    }
                }
                4 => a.push(format!("mod_dl_src:{}", mac_s(r.pick(&MACS)))),
                5 => a.push(format!("mod_dl_dst:{}", mac_s(r.pick(&MACS)))),
                6 | 7 => {
                    // VLAN actions. OpenFlow 1.3 encodes mod_vlan_vid as push+set when the
                    // match does not say the frame is tagged, so in that mode they come as a
                    // push unit, or on a flow that matches a VLAN, before any other VLAN action.
                    let tagged = matches!(m.vlan, Some(Some(_)));
                    if of13 {
                        if tagged && !vlan_touched && r.pct(50) {
                            a.push(
                                r.pick(&["strip_vlan", "mod_vlan_vid:30", "mod_vlan_pcp:3"])
                                    .to_string(),
                            );
                        } else if pushes_left > 0 {
                            pushes_left -= 1;
                            a.push(format!(
                                "push_vlan:{},mod_vlan_vid:{}",
                                r.pick(&["0x8100", "0x8100", "0x88a8"]),
                                r.pick(&VIDS)
                            ));
                        }
                    } else {
                        match r.below(3) {
                            0 => a.push(format!("mod_vlan_vid:{}", r.pick(&VIDS))),
                            1 => a.push(format!("mod_vlan_pcp:{}", r.below(8))),
                            _ => a.push("strip_vlan".into()),
                        }
                    }
                    vlan_touched = true;
                }
                8 if m.proto.is_ip() => match r.below(5) {
                    0 => a.push(format!("mod_nw_src:{}", ip_s(r.pick(&IPS)))),
                    1 => a.push(format!("mod_nw_dst:{}", ip_s(r.pick(&IPS)))),
                    2 => a.push(format!("mod_nw_tos:{}", r.below(64) * 4)),
                    3 => a.push(format!("set_field:{}->nw_ttl", r.below(4))),
                    _ => a.push("dec_ttl".into()),
                },
                9 if m.proto.has_ports() => {
                    let which = if r.pct(50) { "src" } else { "dst" };
                    a.push(format!("mod_tp_{which}:{}", r.pick(&TP)));
                }
                10 | 11 => {
                    let p = 1 + r.below(N_PORTS as u64);
                    a.push(format!("output:{p}"));
                }
                12 => a.push(
                    r.pick(&[
                        "output:in_port",
                        "NORMAL",
                        "FLOOD",
                        "ALL",
                        "output:NXM_NX_REG1[0..15]",
                        "output:LOCAL",
                    ])
                    .to_string(),
                ),
                _ => {
                    if table + 1 < n_tables {
                        let t = table + 1 + r.below((n_tables - table - 1) as u64) as u8;
                        if r.pct(20) {
                            a.push(format!("resubmit({},{t})", 1 + r.below(N_PORTS as u64)));
                        } else {
                            a.push(format!("resubmit(,{t})"));
                        }
                    } else if m.proto.is_ip() {
                        a.push("dec_ttl".into());
                    }
                }
            }
        }
        if r.pct(60) {
            a.push(format!("output:{}", 1 + r.below(N_PORTS as u64)));
        }
        if a.is_empty() {
            "drop".into()
        } else {
            a.join(",")
        }
    }

    /// A frame: random fields from the pools, then the aimed match's fields forced.
    fn frame(r: &mut Rng, aim: Option<&M>) -> (u32, Vec<u8>) {
        let mut proto = r.pick(&[
            Proto::Udp,
            Proto::Udp,
            Proto::Tcp,
            Proto::Tcp,
            Proto::Icmp,
            Proto::Arp,
            Proto::Arp,
            Proto::Ip,
            Proto::Any,
        ]);
        let mut in_port = 1 + r.below(N_PORTS as u64) as u32;
        let mut src = r.pick(&MACS);
        let mut dst = if r.pct(15) { [0xff; 6] } else { r.pick(&MACS) };
        let mut vlan = if r.pct(30) { Some(r.pick(&VIDS)) } else { None };
        let mut sip = r.pick(&IPS);
        let mut dip = r.pick(&IPS);
        let mut sp = r.pick(&TP);
        let mut dp = r.pick(&TP);
        let mut op = r.pick(&[1u16, 2]);
        if let Some(m) = aim {
            if m.proto != Proto::Any && !(m.proto == Proto::Ip && proto.is_ip()) {
                proto = m.proto;
            }
            in_port = m.in_port.unwrap_or(in_port);
            if let Some(v) = m.vlan {
                vlan = v;
            }
            src = m.dl_src.unwrap_or(src);
            dst = m.dl_dst.unwrap_or(dst);
            // A prefix match gets an address inside it, not always the base.
            let inside = |r: &mut Rng, (a, l): ([u8; 4], u8)| {
                let mut a = a;
                if l < 32 {
                    a[3] = r.pick(&[a[3], 7, 200]);
                }
                a
            };
            if let Some(n) = m.nw_src {
                sip = inside(r, n);
            }
            if let Some(n) = m.nw_dst {
                dip = inside(r, n);
            }
            sp = m.tp_src.unwrap_or(sp);
            dp = m.tp_dst.unwrap_or(dp);
            op = m.arp_op.unwrap_or(op);
        }
        let (s4, d4) = (Ipv4Addr::from(sip), Ipv4Addr::from(dip));
        let mut b = match proto {
            Proto::Udp => {
                let b = PacketBuilder::udp4(src, dst, s4, d4, sp, dp);
                if r.pct(10) {
                    b.no_udp_checksum()
                } else {
                    b
                }
            }
            Proto::Tcp => PacketBuilder::tcp4(src, dst, s4, d4, sp, dp)
                .tcp_flags(r.pick(&[0x002, 0x010, 0x012, 0x018, 0x011])),
            Proto::Icmp => PacketBuilder::icmp4_echo(src, dst, s4, d4, r.below(100) as u16, 1),
            Proto::Ip => PacketBuilder::ipv4(src, dst, s4, d4, r.pick(&[47, 89, 132])),
            Proto::Arp => {
                let b = if op == 1 {
                    PacketBuilder::arp_request(src, s4, d4)
                } else {
                    PacketBuilder::arp_reply(src, s4, dst, d4)
                };
                b.arp_op(op)
            }
            Proto::Any => PacketBuilder::ethernet(src, dst, r.pick(&[0x88b5, 0x88cc, 0x86dd])),
        };
        if proto.is_ip() {
            b = b
                .ttl(r.pick(&[64, 64, 64, 2, 1]))
                .tos(r.pick(&[0, 0, 0x10, 0xb9, 0x03]));
        }
        if let Some(v) = vlan {
            let pcp = if r.pct(20) { r.below(8) as u16 } else { 0 };
            b = b.tag(0x8100, (pcp << 13) | v);
        }
        (in_port, b.payload_len(r.below(40) as usize).build())
    }

    /// The case for one seed.
    pub fn case(seed: u64) -> Case {
        let mut r = Rng::new(seed);
        let of13 = r.pct(25);
        let n_tables = 2 + r.below(3) as u8;
        let mut flows = String::new();
        let mut aims: Vec<M> = Vec::new();
        for t in 0..n_tables {
            // Distinct priorities: Open vSwitch leaves the choice between overlapping flows of
            // equal priority undefined.
            let mut prios: Vec<u32> = (1..=20).map(|p| p * 5).collect();
            let n = 3 + r.below(4);
            for _ in 0..n {
                let i = r.below(prios.len() as u64) as usize;
                let prio = prios.swap_remove(i);
                let m = random_match(&mut r, t);
                let regs = if t > 0 {
                    random_regs(&mut r)
                } else {
                    String::new()
                };
                let mt: Vec<String> = [m.text(), regs]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                let acts = random_actions(&mut r, &m, t, n_tables, of13);
                let _ = writeln!(
                    flows,
                    "table={t},priority={prio}{}{},actions={acts}",
                    if mt.is_empty() { "" } else { "," },
                    mt.join(",")
                );
                if t == 0 {
                    aims.push(m);
                }
            }
            // A conjunctive flow now and then: two or three clauses over different fields.
            if t <= 1 && r.pct(35) {
                let i = r.below(prios.len() as u64) as usize;
                let prio = prios.swap_remove(i);
                let id = 100 + t as u32;
                let n_clauses = 2 + r.below(2) as u8;
                let dims = [
                    "ip,nw_src=10.0.0.1",
                    "ip,nw_src=10.0.0.2",
                    "ip,nw_dst=10.0.1.0/24",
                    "tcp,tp_dst=80",
                    "udp,tp_dst=53",
                    "in_port=1",
                    "in_port=2",
                    "dl_vlan=10",
                    "dl_src=02:00:00:00:00:01",
                ];
                let mut used = Vec::new();
                for c in 1..=n_clauses {
                    for _ in 0..1 + r.below(2) {
                        let d = r.pick(&dims);
                        if used.contains(&d) {
                            continue;
                        }
                        used.push(d);
                        let _ = writeln!(
                            flows,
                            "table={t},priority={prio},{d},actions=conjunction({id},{c}/{n_clauses})"
                        );
                    }
                }
                let mut m = M::empty();
                m.proto = Proto::Ip;
                let acts = random_actions(&mut r, &m, t, n_tables, of13);
                let _ = writeln!(
                    flows,
                    "table={t},priority={prio},conj_id={id},ip,actions={acts}"
                );
            }
        }
        let n_frames = 12 + r.below(8);
        let mut frames = Vec::new();
        for _ in 0..n_frames {
            let aim = if !aims.is_empty() && r.pct(60) {
                Some(aims[r.below(aims.len() as u64) as usize].clone())
            } else {
                None
            };
            let (p, f) = frame(&mut r, aim.as_ref());
            frames.push((format!("p{p}"), f));
        }
        Case {
            name: format!("generated seed {seed}"),
            bridges: vec![Bridge {
                name: "br0".into(),
                standalone: false,
                ports: (1..=N_PORTS)
                    .map(|i| Port::io(&format!("p{i}"), i))
                    .collect(),
                flows,
            }],
            frames,
            of13,
            vlan_limit: None,
        }
    }
}

/// Seeds whose mismatch is a known xvs bug, not yet fixed. They still run and print their
/// report; the test fails if one of them starts to agree, so this list cannot go stale.
const KNOWN_XVS_BUGS: &[(u64, &str)] = &[
    // mod_vlan_pcp on an untagged frame makes a priority tag (VID 0, PCP 7); Open vSwitch's
    // NORMAL floods it with that tag kept, xvs's NORMAL strips it.
    (140, "NORMAL strips a priority tag Open vSwitch keeps"),
];

#[test]
fn generated_cases() {
    let Some(mut oracle) = Oracle::start_or_skip() else {
        return;
    };
    let seeds: Vec<u64> = match std::env::var("XVS_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("XVS_DIFF_SEED is a number")],
        Err(_) => {
            let n = std::env::var("XVS_DIFF_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200u64);
            (0..n).collect()
        }
    };
    let t = std::time::Instant::now();
    let mut fails = Vec::new();
    let mut fixed = Vec::new();
    let mut frames = 0;
    for &seed in &seeds {
        let c = gen::case(seed);
        frames += c.frames.len();
        let known = KNOWN_XVS_BUGS.iter().find(|(s, _)| *s == seed);
        match (check(&mut oracle, &c, &no_filter), known) {
            (Err(m), None) => fails.push(m),
            (Err(m), Some((_, why))) => {
                eprintln!("known xvs bug, seed {seed} ({why}):\n{}", m.report)
            }
            (Ok(()), Some(_)) => fixed.push(seed),
            (Ok(()), None) => {}
        }
    }
    assert!(
        fixed.is_empty(),
        "seeds {fixed:?} now agree with Open vSwitch: take them off KNOWN_XVS_BUGS"
    );
    eprintln!(
        "differential: {} generated seeds, {frames} frames, {:?}",
        seeds.len(),
        t.elapsed()
    );
    report(&fails);
}
