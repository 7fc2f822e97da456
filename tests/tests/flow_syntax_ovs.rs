//! Flow syntax against the oracle: a file of varied flows (the reference deployment's seed lines
//! among them) is normalised by xvs, loaded into a private Open vSwitch, and OVS's
//! `dump-flows --no-stats` must equal xvs's normalised text line for line (both sorted). The
//! original file loaded into OVS must dump the same as xvs's normalised file loaded into OVS.

use pipeline::flow::format::{format_flow, FormatOptions};
use pipeline::flow::parse::{parse_flows, ParseContext};
use pipeline::flow::PortNames;
use xvs_tests::ovs::OvsSandbox;

/// The reference deployment's seed excerpt, verbatim (a `dump-flows` with statistics). Its last
/// line's `output: tap2` is rejected by OVS, so OVS gets `output:tap2`; xvs takes both.
const SEED: &str = r#"cookie=0xded6f111, duration=546957.422s, table=0, n_packets=1503868, n_bytes=133529118, priority=100,in_port=tap2 actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,load:0x2712->OXM_OF_METADATA,load:0x2->NXM_NX_REG14,load:0->NXM_NX_REG13[16..31],resubmit(,8)
cookie=0xe070fd17, duration=554898.558s, table=45, n_packets=0, n_bytes=0, idle_age=65534, hard_age=65534, priority=153,ct_state=-trk,ip,reg15=0x2,metadata=0x3,nw_src=192.168.10.0/24 actions=ct(commit,table=46,zone=NXM_NX_REG12[0..15],nat(src=172.22.7.27))
cookie=0xe070fd17, duration=554898.558s, table=45, n_packets=14317, n_bytes=7174010, idle_age=14, hard_age=65534, priority=153,ct_state=-rpl+trk,ip,reg15=0x2,metadata=0x3,nw_src=192.168.10.0/24 actions=ct(commit,table=46,zone=NXM_NX_REG12[0..15],nat(src=172.22.7.27))
cookie=0x8505267a, duration=865834.403s, table=65, n_packets=790622, n_bytes=80049428, idle_age=86, hard_age=65534, priority=100,reg15=0x1,metadata=0x2710 actions=mod_vlan_vid:2207,output:"patch-brAtlas-t",strip_vlan
cookie=0xae04b038, duration=858253.532s, table=0, n_packets=0, n_bytes=0, priority=180,conj_id=100,in_port="patch-brAtlas-t",dl_vlan=2207 actions=strip_vlan,load:0x1->NXM_NX_REG13[0..15],load:0x2->NXM_NX_REG9,load:0x2710->OXM_OF_METADATA,load:0x1->NXM_NX_REG14,load:0->NXM_NX_REG13[16..31],mod_dl_src:e0:19:95:ad:56:d0,resubmit(,8)
cookie=0xae04b038, duration=858253.532s, table=0, n_packets=0, n_bytes=0, priority=180,dl_vlan=2207 actions=conjunction(100,2/2)
cookie=0x8505267a, duration=858253.532s, table=0, n_packets=1145077, n_bytes=1587856890, priority=150,in_port="patch-brAtlas-t",dl_vlan=2207 actions=strip_vlan,load:0x1->NXM_NX_REG13[0..15],load:0x2->NXM_NX_REG9,load:0x2710->OXM_OF_METADATA,load:0x1->NXM_NX_REG14[],load:0->NXM_NX_REG13[16..31],resubmit(,8)
cookie=0xb0f56809, duration=563219.467s, table=13, n_packets=1144683, n_bytes=1606631520, idle_age=72, hard_age=65534, priority=100,ip,reg14=0x2,metadata=0x3,nw_dst=172.22.7.27 actions=ct(table=14,zone=NXM_NX_REG12[0..15],nat)
cookie=0xded6f111, duration=562031.237s, table=65, n_packets=1906863, n_bytes=1491508947, idle_age=75, hard_age=65534, priority=100,reg15=0x2,metadata=0x2712 actions=output: tap2
"#;

const VARIED: &str = r#"
# comments and blank lines are skipped

table=0,priority=101,in_port=tap2,actions=resubmit(,8)
priority=99,in_port="patch-brAtlas-t",dl_vlan=0xffff,actions=drop
priority=98,in_port=4,dl_src=50:6b:8d:00:00:01,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=NORMAL
priority=97,dl_vlan=5,dl_vlan_pcp=3 actions=strip_vlan,output:1
priority=96,vlan_tci=0x1000/0x1000 actions=FLOOD
priority=95,vlan_tci=0x1234 actions=ALL
priority=94,dl_vlan_pcp=7 actions=LOCAL
priority=93,dl_type=0x1234 actions=IN_PORT
priority=92,ip,nw_src=192.168.10.5/24,nw_dst=10.0.0.0/255.0.255.0,nw_tos=32,nw_ecn=1,nw_ttl=5 actions=output:tap2
priority=91,ip,ip_dscp=8,ip_frag=no actions=1,2
priority=90,ip,ip_frag=first actions=drop
priority=89,ip,ip_frag=later actions=drop
priority=88,ip,ip_frag=not_later actions=drop
priority=87,ip,ip_frag=yes,nw_proto=99 actions=drop
priority=86,tcp,tp_src=80,tp_dst=0x100/0xff00,tcp_flags=+syn-ack actions=mod_tp_src:5,mod_tp_dst:6
priority=85,tcp,tcp_flags=0x012/0x0ff actions=drop
priority=84,tcp6,tcp_flags=0x2 actions=drop
priority=83,udp,tp_dst=53 actions=set_field:5->udp_dst
priority=82,udp6,tp_src=68,tp_dst=67 actions=drop
priority=81,sctp,tp_dst=9 actions=drop
priority=80,icmp,icmp_type=3,icmp_code=1 actions=drop
priority=79,icmp6,icmpv6_type=135,nd_target=fe80::1,nd_sll=00:11:22:33:44:55 actions=drop
priority=78,icmp6,icmpv6_type=136,nd_target=fe80::1/64,nd_tll=00:11:22:33:44:55 actions=drop
priority=77,arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_sha=00:11:22:33:44:55,arp_tha=00:11:22:33:44:55/ff:ff:ff:00:00:00 actions=drop
priority=76,arp,nw_src=10.0.0.1,nw_dst=10.1.0.0/16 actions=drop
priority=75,ipv6,ipv6_src=2001:db8::/32,ipv6_dst=::1,ipv6_label=0x12345 actions=drop
priority=74,ipv6,ipv6_src=2001:db8::/ffff:0:ffff::,ipv6_label=0x5/0xf,nw_proto=99,nw_ttl=3 actions=drop
priority=73,rarp actions=drop
priority=72,reg0=1,reg15=0x5/0xff,xreg3=0x7,metadata=0x5/0xff actions=drop
priority=71,xxreg1=0x1234567890,xreg0=0x5/0xff actions=drop
priority=70,tun_id=0x5/0xff,tun_src=1.1.1.1,tun_dst=2.2.2.0/24,tun_flags=+oam actions=drop
priority=69,tunnel_id=0x7,tun_flags=-oam,tun_metadata0=0x1234 actions=drop
priority=68,ct_state=+trk+est-new,ct_zone=5,ct_mark=0x3/0xf,ct_label=0x1 actions=drop
priority=67,ct_state=0x21,ct_label=0x1234567890abcdef1234567890abcdef/0xffff actions=drop
priority=66,ct_state=+rel-inv+snat+dnat,conj_id=7,pkt_mark=0x8/0xff actions=drop
priority=65,ct_state=0 actions=drop
cookie=0x5,idle_timeout=5,hard_timeout=6,send_flow_rem,check_overlap,priority=64,actions=NORMAL
table=7,priority=0,actions=drop
table=8,actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,set_field:0x2->reg14,load:1->reg3[1],load:1->NXM_OF_ETH_SRC[],load:0->NXM_NX_XXREG0[0..63]
table=9,priority=5,actions=set_field:5/0xff->reg3,set_field:00:11:22:33:44:55->eth_dst,set_field:0x5->metadata,set_field:5/0x0f0f->reg4,set_field:1->tun_metadata0
table=9,priority=6,ip,actions=set_field:1.2.3.4->ip_src,set_field:3->ip_dscp,set_field:5->nw_ttl,mod_nw_ecn:2,mod_nw_ttl:9
table=10,actions=move:NXM_NX_REG13[0..15]->NXM_NX_REG14[16..31],move:reg1->reg2,move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],move:OXM_OF_METADATA[0..31]->NXM_NX_XXREG0[96..127]
table=11,ip,actions=mod_vlan_vid:2207,mod_vlan_pcp:3,strip_vlan,pop_vlan,mod_dl_src:00:11:22:33:44:55,mod_dl_dst:00:11:22:33:44:56,mod_nw_src:1.2.3.4,mod_nw_dst:1.2.3.5,mod_nw_tos:16,dec_ttl,dec_ttl(1,2)
table=12,actions=set_tunnel:0x5,set_tunnel64:0x6,set_tunnel:0x123456789,set_queue:3,pop_queue,exit
table=13,actions=resubmit(,8),resubmit(1,2),resubmit:3,resubmit(in_port,5),resubmit(tap2),goto_table:14
table=14,actions=output:NXM_NX_REG1[0..15],output:reg2,output(port=1,max_len=100),controller,controller:100,controller(reason=no_match,max_len=100,userdata=01.02),controller(reason=invalid_ttl,id=5,pause)
table=15,ip,actions=ct(commit,zone=5,table=3,nat(src=1.1.1.1-1.1.1.5:100-200,random)),ct_clear,ct,ct(table=5,zone=reg3[0..15])
table=15,priority=1,ipv6,actions=ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,hash)),ct(commit,nat(src=fe80::1))
table=15,priority=2,tcp,actions=ct(commit,force,zone=NXM_NX_REG12[0..15],exec(set_field:1->ct_mark,load:0x5->NXM_NX_CT_LABEL[0..31],set_field:0x1/0x1->ct_label),alg=ftp)
table=15,priority=3,ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.9,persistent)),ct(commit,nat(dst=1.1.1.1:80)),ct(nat)
table=16,actions=conjunction(100,2/2),conjunction(5,1/3)
table=17,actions=clone(output:1,set_field:5->reg0),note:01.02.03,write_metadata:0x5/0xff
table=18,actions=note:0102,check_pkt_larger(1500)->NXM_NX_REG0[0],output:1,write_metadata:0x7
table=19,actions=learn(table=10,idle_timeout=5,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],output:NXM_OF_IN_PORT[])
table=20,priority=10,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,in_port=1,dl_type=0x88cc actions=drop
table=20,priority=11,arp,arp_op=2,dl_src=00:00:00:00:00:01 actions=drop
table=20,priority=12,udp,tp_dst=5,dl_vlan=3 actions=drop
table=20,priority=13,ip,nw_src=10.0.0.0/0 actions=drop
table=20,priority=14,dl_dst=01:00:00:00:00:00/ff:ff:ff:ff:ff:ff actions=drop
table=20,priority=15,in_port=LOCAL actions=drop
table=20,priority=16,tun_src=0.0.0.0/0.0.0.1 actions=drop
table=20,priority=17,tcp,tcp_flags=+fin+syn+rst+psh+ack+urg+ece+cwr+ns actions=drop
table=20,priority=18,tcp,tcp_flags=0xfff actions=drop
table=20,priority=19,tcp,tcp_flags=0x800/0x800 actions=drop
table=20,priority=20,vlan_tci=0x1000/0x1fff actions=drop
table=20,priority=21,vlan_tci=0x0fff/0x0fff actions=drop
table=20,priority=22,vlan_tci=0xb000/0xf000 actions=drop
table=20,priority=23,ip,in_port=a_b,actions=output:"a_b",output:Ab9,resubmit("a_b",3)
table=20,priority=24,icmp6,icmp_type=1,icmp_code=2 actions=drop
table=21,priority=1,tcp,ct_state=+trk,actions=set_field:80->tcp_dst,load:0x50->NXM_OF_TCP_SRC[]
table=21,priority=2,udp,actions=move:NXM_OF_UDP_SRC[]->NXM_OF_UDP_DST[],load:1->NXM_OF_UDP_SRC[0..7]
table=21,priority=3,ipv6,actions=set_field:::1->ipv6_src,move:NXM_NX_IPV6_DST[0..31]->NXM_NX_REG0[]
table=21,priority=4,actions=set_field:0x1234->vlan_tci,set_field:1.2.3.4->tun_dst,set_field:0x5->tun_id,set_field:5->pkt_mark
"#;

fn ports() -> PortNames {
    let mut p = PortNames::new();
    p.insert("patch-brAtlas-to-br-int", 1);
    p.insert("p2", 2);
    p.insert("p3", 3);
    p.insert("tap2", 4);
    p.insert("a_b", 5);
    p.insert("Ab9", 7);
    p
}

fn input() -> String {
    format!("{}\n{VARIED}", SEED.replace("output: tap2", "output:tap2"))
}

fn normalise(text: &str, ctx: &ParseContext) -> Vec<String> {
    let flows = parse_flows(text, ctx).unwrap_or_else(|errs| {
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        panic!("xvs rejected the fixture:\n{}", all.join("\n"))
    });
    let mut v: Vec<String> = flows
        .iter()
        .map(|f| format_flow(f, &ctx.ports, FormatOptions::default()))
        .collect();
    v.sort();
    v
}

#[test]
fn seed_loads_as_is_with_the_blank_after_output() {
    let ctx = ParseContext::with_ports(ports());
    assert_eq!(
        normalise(SEED, &ctx),
        normalise(&SEED.replace("output: tap2", "output:tap2"), &ctx)
    );
}

#[test]
fn xvs_normalisation_equals_ovs_dump() {
    let Some(ovs) = OvsSandbox::start_or_skip() else {
        return;
    };
    let ctx = ParseContext::with_ports(ports());
    // OVS knows the patch port by its full name; OpenFlow (and xvs) cut it to 15 characters.
    let bridge_ports = [
        ("patch-brAtlas-to-br-int", 1),
        ("p2", 2),
        ("p3", 3),
        ("tap2", 4),
        ("a_b", 5),
        ("Ab9", 7),
    ];
    ovs.add_bridge("br0", &bridge_ports, Some("secure"))
        .unwrap();
    ovs.ofctl(&[
        "add-tlv-map",
        "br0",
        "{class=0x102,type=0x80,len=4}->tun_metadata0",
    ])
    .unwrap();

    let text = input();
    let xvs = normalise(&text, &ctx);
    ovs.add_flows("br0", &(xvs.join("\n") + "\n")).unwrap();
    let dumped = ovs.dump_flows("br0");
    let mismatches: Vec<String> = xvs
        .iter()
        .filter(|l| !dumped.contains(l))
        .map(|l| format!("xvs only: {l}"))
        .chain(
            dumped
                .iter()
                .filter(|l| !xvs.contains(l))
                .map(|l| format!("ovs only: {l}")),
        )
        .collect();
    assert!(
        mismatches.is_empty(),
        "xvs normalisation differs from OVS's dump:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(xvs.len(), dumped.len());

    // The original text, loaded into OVS as it is, dumps the same.
    ovs.del_flows("br0").unwrap();
    ovs.add_flows("br0", &text).unwrap();
    assert_eq!(ovs.dump_flows("br0"), dumped);
}
