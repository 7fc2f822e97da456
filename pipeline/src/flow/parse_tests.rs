//! Fixtures for the parser and printer: every field and action, good and bad.

use super::*;
use crate::flow::format::{format_flow, FormatOptions};

fn ctx() -> ParseContext {
    let mut p = PortNames::new();
    p.insert("tap2", 4);
    p.insert("patch-brAtlas-to-br-int", 1);
    p.insert("a_b", 5);
    ParseContext::with_ports(p)
}

fn fmt(f: &FlowSpec) -> String {
    format_flow(f, &ctx().ports, FormatOptions::default())
}

/// Parses, checks the printed form, and checks that the printed form is a fixed point.
#[track_caller]
fn norm(input: &str, want: &str) {
    let c = ctx();
    let f = parse_flow(input, &c).unwrap_or_else(|e| panic!("{input}: {e}"));
    let s = fmt(&f);
    assert_eq!(s, want, "input: {input}");
    let again = parse_flow(&s, &c).unwrap_or_else(|e| panic!("re-parse of {s}: {e}"));
    assert_eq!(fmt(&again), s, "not a fixed point: {input}");
}

/// The error's column and a substring of its message.
#[track_caller]
fn bad(input: &str, col: usize, msg: &str) {
    match parse_flow(input, &ctx()) {
        Ok(f) => panic!("accepted {input:?} as {}", fmt(&f)),
        Err(e) => {
            assert_eq!((e.line, e.col), (1, col), "{input}: {e}");
            assert!(
                e.message.contains(msg),
                "{input}: `{}` lacks `{msg}`",
                e.message
            );
        }
    }
}

#[test]
fn flow_fields() {
    norm("actions=drop", "actions=drop");
    norm("priority=32768,actions=drop", "actions=drop");
    norm("table=3,priority=0,cookie=0x10,idle_timeout=5,hard_timeout=6,importance=7,send_flow_rem,check_overlap,actions=drop",
        "cookie=0x10, table=3, idle_timeout=5, hard_timeout=6, priority=0 actions=drop");
    let f = parse_flow(
        "importance=7,send_flow_rem,check_overlap,actions=drop",
        &ctx(),
    )
    .unwrap();
    assert_eq!(f.importance, 7);
    assert!(f.flags.send_flow_rem && f.flags.check_overlap);
    assert_eq!(parse_flow("actions=drop", &ctx()).unwrap().priority, 32768);
    // Dump statistics are accepted and ignored.
    norm("cookie=0x1, duration=1.5s, table=2, n_packets=3, n_bytes=4, idle_age=5, hard_age=6, priority=7 actions=drop",
        "cookie=0x1, table=2, priority=7 actions=drop");
    bad("table=255,actions=drop", 7, "out of range");
    bad("priority=65536,actions=drop", 10, "out of range");
    bad("priority=x,actions=drop", 10, "invalid number");
    bad(
        "cookie=1/1,actions=drop",
        9,
        "only allowed when modifying or deleting",
    );
    bad(
        "out_port=1,actions=drop",
        1,
        "only allowed when modifying or deleting",
    );
    bad("priority=1,priority=2,actions=drop", 12, "given twice");
    bad("send_flow_rem=1,actions=drop", 15, "takes no value");
    bad("duration=abc,actions=drop", 10, "invalid `duration`");
    bad("priority=5", 11, "missing `actions=`");
    bad("priority", 9, "needs a value");
}

#[test]
fn modify_and_delete_forms() {
    let c = ctx();
    let d = parse_flow_mod(
        "cookie=0x5/0xff,out_port=tap2,table=3,priority=4,ip",
        &c,
        FlowModKind::Delete,
    )
    .unwrap();
    assert_eq!(
        (d.cookie, d.cookie_mask, d.out_port, d.table, d.priority),
        (5, 0xff, Some(4), 3, 4)
    );
    assert_eq!(
        parse_flow_mod("ip", &c, FlowModKind::Delete).unwrap().table,
        ALL_TABLES
    );
    let e = parse_flow_mod("ip,actions=drop", &c, FlowModKind::Delete).unwrap_err();
    assert_eq!(e.col, 4);
    let m = parse_flow_mod("cookie=1/1,ip,actions=output:1", &c, FlowModKind::Modify).unwrap();
    assert_eq!(m.actions.len(), 1);
    let m = parse_match("in_port=tap2,tcp,tp_dst=80", &c).unwrap();
    assert_eq!(m.value.in_port(), 4);
    assert!(parse_match("priority=5", &c).is_err());
    assert!(parse_match("tp_dst=80", &c)
        .unwrap_err()
        .message
        .contains("requires"));
}

#[test]
fn l2_fields_and_vlan_semantics() {
    norm("in_port=tap2,actions=drop", "in_port=tap2 actions=drop");
    norm(
        "in_port=\"patch-brAtlas-t\",actions=drop",
        "in_port=\"patch-brAtlas-t\" actions=drop",
    );
    norm("in_port=4,actions=drop", "in_port=tap2 actions=drop");
    norm("in_port=99,actions=drop", "in_port=99 actions=drop");
    norm("in_port=LOCAL,actions=drop", "in_port=LOCAL actions=drop");
    norm("in_port=a_b,actions=drop", "in_port=\"a_b\" actions=drop");
    norm(
        "dl_src=01:00:00:00:00:00/01:00:00:00:00:00,dl_dst=aa:bb:cc:dd:ee:ff,actions=drop",
        "dl_src=01:00:00:00:00:00/01:00:00:00:00:00,dl_dst=aa:bb:cc:dd:ee:ff actions=drop",
    );
    norm(
        "dl_dst=01:00:00:00:00:00/00:00:00:00:00:00,actions=drop",
        "actions=drop",
    );
    norm("dl_type=0x1234,actions=drop", "dl_type=0x1234 actions=drop");
    norm("dl_vlan=2207,actions=drop", "dl_vlan=2207 actions=drop");
    let f = parse_flow("dl_vlan=2207,actions=drop", &ctx()).unwrap();
    assert_eq!(
        (f.matches.value.vlan_tci(), f.matches.mask.vlan_tci()),
        (0x189f, 0x1fff)
    );
    norm(
        "dl_vlan=0xffff,actions=drop",
        "vlan_tci=0x0000 actions=drop",
    );
    norm("dl_vlan_pcp=3,actions=drop", "dl_vlan_pcp=3 actions=drop");
    norm(
        "dl_vlan=5,dl_vlan_pcp=3,actions=drop",
        "dl_vlan=5,dl_vlan_pcp=3 actions=drop",
    );
    norm(
        "vlan_tci=0x1234,actions=drop",
        "dl_vlan=564,dl_vlan_pcp=0 actions=drop",
    );
    norm(
        "vlan_tci=0x1000/0x1000,actions=drop",
        "vlan_tci=0x1000/0x1000 actions=drop",
    );
    norm(
        "vlan_tci=0x0fff/0x0fff,actions=drop",
        "vlan_tci=0x0fff/0x0fff actions=drop",
    );
    norm(
        "vlan_tci=0xb000/0xf000,actions=drop",
        "dl_vlan_pcp=5 actions=drop",
    );
    bad("in_port=nope,actions=drop", 9, "unknown port `nope`");
    bad("in_port=\"nope\",actions=drop", 9, "unknown port `nope`");
    bad("in_port=0,actions=drop", 9, "not a valid port");
    bad(
        "dl_src=01:02:03:04:05,actions=drop",
        8,
        "invalid Ethernet address",
    );
    bad(
        "dl_src=01:02:03:04:05:06/ff,actions=drop",
        26,
        "invalid Ethernet address",
    );
    bad("dl_vlan=4096,actions=drop", 9, "out of range");
    bad("dl_vlan_pcp=8,actions=drop", 13, "out of range");
    bad("dl_type=0x800/0xff,actions=drop", 9, "invalid number");
    bad(
        "dl_src=00:00:00:00:00:01,dl_src=00:00:00:00:00:01,actions=drop",
        26,
        "more than once",
    );
    bad("ip,dl_type=0x86dd,actions=drop", 4, "conflicts");
    bad("bogus=1,actions=drop", 1, "unknown field `bogus`");
    bad("in_port=tap2 junk,actions=drop", 14, "unknown field `junk`");
}

#[test]
fn l3_l4_fields() {
    norm(
        "ip,nw_src=192.168.10.5/24,nw_dst=10.0.0.1/32,actions=drop",
        "ip,nw_src=192.168.10.0/24,nw_dst=10.0.0.1 actions=drop",
    );
    norm(
        "ip,nw_src=10.0.0.0/255.0.255.0,actions=drop",
        "ip,nw_src=10.0.0.0/255.0.255.0 actions=drop",
    );
    norm("ip,nw_src=10.0.0.0/0,actions=drop", "ip actions=drop");
    norm("dl_type=0x0800,nw_proto=6,actions=drop", "tcp actions=drop");
    norm("ip,nw_proto=99,actions=drop", "ip,nw_proto=99 actions=drop");
    norm("ipv6,nw_proto=58,actions=drop", "icmp6 actions=drop");
    norm(
        "ip,nw_tos=32,nw_ecn=1,nw_ttl=5,actions=drop",
        "ip,nw_tos=32,nw_ecn=1,nw_ttl=5 actions=drop",
    );
    norm("ip,ip_dscp=8,actions=drop", "ip,nw_tos=32 actions=drop");
    for (kw, want) in [
        ("no", "no"),
        ("yes", "yes"),
        ("first", "first"),
        ("later", "later"),
        ("not_later", "not_later"),
    ] {
        norm(
            &format!("ip,ip_frag={kw},actions=drop"),
            &format!("ip,nw_frag={want} actions=drop"),
        );
    }
    norm(
        "tcp,tp_src=80,tp_dst=0x100/0xff00,tcp_flags=+syn-ack,actions=drop",
        "tcp,tp_src=80,tp_dst=0x100/0xff00,tcp_flags=+syn-ack actions=drop",
    );
    norm(
        "tcp,tcp_flags=0x012/0x0ff,actions=drop",
        "tcp,tcp_flags=-fin+syn-rst-psh+ack-urg-ece-cwr actions=drop",
    );
    norm(
        "tcp,tcp_flags=0x2,actions=drop",
        "tcp,tcp_flags=syn actions=drop",
    );
    norm(
        "tcp,tcp_flags=0xfff,actions=drop",
        "tcp,tcp_flags=fin|syn|rst|psh|ack|urg|ece|cwr|ns|[200]|[400]|[800] actions=drop",
    );
    norm(
        "tcp,tcp_flags=0x800/0x800,actions=drop",
        "tcp,tcp_flags=+[800] actions=drop",
    );
    norm(
        "tcp,tcp_flags=0,actions=drop",
        "tcp,tcp_flags=0 actions=drop",
    );
    norm(
        "udp6,tp_src=68,tp_dst=67,actions=drop",
        "udp6,tp_src=68,tp_dst=67 actions=drop",
    );
    norm("sctp,tp_dst=9,actions=drop", "sctp,tp_dst=9 actions=drop");
    norm(
        "icmp,icmp_type=3,icmp_code=1,actions=drop",
        "icmp,icmp_type=3,icmp_code=1 actions=drop",
    );
    norm(
        "icmp6,icmpv6_type=135,nd_target=fe80::1,nd_sll=00:11:22:33:44:55,actions=drop",
        "icmp6,icmp_type=135,nd_target=fe80::1,nd_sll=00:11:22:33:44:55 actions=drop",
    );
    norm(
        "icmp6,icmpv6_type=136,nd_target=fe80::1/64,nd_tll=00:11:22:33:44:55,actions=drop",
        "icmp6,icmp_type=136,nd_target=fe80::/64,nd_tll=00:11:22:33:44:55 actions=drop",
    );
    norm("arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_sha=00:11:22:33:44:55,arp_tha=00:11:22:33:44:55/ff:ff:ff:00:00:00,actions=drop",
        "arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_op=1,arp_sha=00:11:22:33:44:55,arp_tha=00:11:22:00:00:00/ff:ff:ff:00:00:00 actions=drop");
    norm(
        "arp,nw_src=10.0.0.1,nw_dst=10.1.0.0/16,actions=drop",
        "arp,arp_spa=10.0.0.1,arp_tpa=10.1.0.0/16 actions=drop",
    );
    norm(
        "nw_src=10.0.0.1,ip,actions=drop",
        "ip,nw_src=10.0.0.1 actions=drop",
    );
    norm(
        "ipv6,ipv6_src=2001:db8::/32,ipv6_dst=::1,ipv6_label=0x12345,actions=drop",
        "ipv6,ipv6_src=2001:db8::/32,ipv6_dst=::1,ipv6_label=0x12345 actions=drop",
    );
    norm(
        "ipv6,ipv6_src=2001:db8::/ffff:0:ffff::,ipv6_label=0x5/0xf,actions=drop",
        "ipv6,ipv6_src=2001::/ffff:0:ffff::,ipv6_label=0x00005/0x0000f actions=drop",
    );
    norm("rarp,actions=drop", "rarp actions=drop");
    norm("eth,actions=drop", "actions=drop");
    // Prerequisites.
    bad("nw_src=1.2.3.4,actions=drop", 1, "requires `ip` or `arp`");
    bad(
        "ipv6,nw_src=1.2.3.4,actions=drop",
        6,
        "requires `ip` or `arp`",
    );
    bad(
        "ip,tp_dst=80,actions=drop",
        4,
        "requires `tcp`, `udp` or `sctp`",
    );
    bad("udp,tcp_flags=+syn,actions=drop", 5, "requires `tcp`");
    bad("tcp,icmp_type=3,actions=drop", 5, "requires `icmp`");
    bad("ip,arp_op=1,actions=drop", 4, "requires `arp`");
    bad("ip,ipv6_src=::1,actions=drop", 4, "requires `ipv6`");
    bad(
        "icmp6,nd_target=::1,actions=drop",
        7,
        "icmp_type=135 or 136",
    );
    bad("nw_proto=6,actions=drop", 1, "requires `ip` or `ipv6`");
    bad("nw_tos=32,actions=drop", 1, "requires `ip` or `ipv6`");
    // Values.
    bad("ip,nw_src=1.2.3.4/33,actions=drop", 19, "out of range");
    bad("ip,nw_src=1.2.3,actions=drop", 11, "invalid IPv4 address");
    bad("ipv6,ipv6_src=::g,actions=drop", 15, "invalid IPv6 address");
    bad("ip,nw_tos=5,actions=drop", 11, "ECN bits");
    bad("ip,ip_dscp=64,actions=drop", 12, "out of range");
    bad("ip,nw_ecn=4,actions=drop", 11, "out of range");
    bad("ip,nw_proto=256,actions=drop", 13, "out of range");
    bad("ip,nw_ttl=1/1,actions=drop", 12, "does not support masks");
    bad("ip,ip_frag=maybe,actions=drop", 12, "invalid number");
    bad("tcp,tp_dst=65536,actions=drop", 12, "does not fit");
    bad(
        "tcp,tcp_flags=+syn+bogus,actions=drop",
        20,
        "unknown tcp_flags flag `bogus`",
    );
    bad("tcp,tcp_flags=+syn+syn,actions=drop", 20, "given twice");
    bad(
        "tcp,tcp_flags=syn+ack,actions=drop",
        15,
        "unknown tcp_flags flag",
    );
    bad("icmp,icmp_type=256,actions=drop", 16, "does not fit");
    bad("arp,arp_op=65536,actions=drop", 12, "does not fit");
    bad("ipv6,ipv6_label=0x100000,actions=drop", 17, "does not fit");
    bad("tcp,tp_src=80,tp_src=81,actions=drop", 15, "more than once");
    bad("tcp,tp_dst=,actions=drop", 12, "needs a value");
}

#[test]
fn metadata_tunnel_and_ct_fields() {
    norm(
        "reg0=1,reg15=0x5/0xff,xreg3=0x7,metadata=0x5/0xff,actions=drop",
        "reg0=0x1,reg6=0,reg7=0x7,reg15=0x5/0xff,metadata=0x5/0xff actions=drop",
    );
    norm(
        "xxreg1=0x1234567890,xreg0=0x5/0xff,actions=drop",
        "reg1=0x5/0xff,reg4=0,reg5=0,reg6=0x12,reg7=0x34567890 actions=drop",
    );
    norm("tun_id=0x5/0xff,tun_src=1.1.1.1,tun_dst=2.2.2.2/24,tun_flags=+oam,tun_metadata0=0x1234,actions=drop",
        "tun_id=0x5/0xff,tun_src=1.1.1.1,tun_dst=2.2.2.0/24,tun_flags=+oam,tun_metadata0=0x1234 actions=drop");
    norm(
        "tunnel_id=0x7,tun_flags=0,actions=drop",
        "tun_id=0x7,tun_flags=-oam actions=drop",
    );
    norm(
        "tun_metadata7=0x5/0xff,tun_metadata1=1,actions=drop",
        "tun_metadata1=0x1,tun_metadata7=0x5/0xff actions=drop",
    );
    norm(
        "ct_state=+trk+est-new,ct_zone=5,ct_mark=0x3/0xf,ct_label=0x1,actions=drop",
        "ct_state=-new+est+trk,ct_zone=5,ct_mark=0x3/0xf,ct_label=0x1 actions=drop",
    );
    norm(
        "ct_state=0x21/0x21,actions=drop",
        "ct_state=+new+trk actions=drop",
    );
    norm(
        "ct_state=0x21,actions=drop",
        "ct_state=new|trk actions=drop",
    );
    norm("ct_state=0,actions=drop", "ct_state=0 actions=drop");
    norm(
        "ct_state=+snat+dnat-inv+rel,actions=drop",
        "ct_state=+rel-inv+snat+dnat actions=drop",
    );
    norm("ct_state=+trk,ct_nw_src=1.1.1.0/24,ct_nw_dst=2.2.2.2,ct_nw_proto=6,ct_tp_src=5,ct_tp_dst=6,actions=drop",
        "ct_state=+trk,ct_nw_src=1.1.1.0/24,ct_nw_dst=2.2.2.2,ct_nw_proto=6,ct_tp_src=5,ct_tp_dst=6 actions=drop");
    norm(
        "conj_id=7,pkt_mark=0x8/0xff,recirc_id=9,dp_hash=0xa/0xff,actions=drop",
        "pkt_mark=0x8/0xff,recirc_id=0x9,dp_hash=0xa/0xff,conj_id=7 actions=drop",
    );
    norm(
        "NXM_NX_REG3=5,OXM_OF_METADATA=0x1,actions=drop",
        "reg3=0x5,metadata=0x1 actions=drop",
    );
    bad(
        "tun_metadata8=1,actions=drop",
        1,
        "xvs maps tun_metadata0-7, 32 bits each",
    );
    bad("tun_metadata0=0x100000000,actions=drop", 15, "does not fit");
    bad("reg16=1,actions=drop", 1, "unknown field `reg16`");
    bad("reg1=0x100000000,actions=drop", 6, "does not fit");
    bad(
        "ct_state=+trk+bogus,actions=drop",
        15,
        "unknown ct_state flag",
    );
    bad(
        "ct_state=0x100,actions=drop",
        10,
        "unknown ct_state flag bits",
    );
    bad("ct_zone=5/0xff,actions=drop", 10, "does not support masks");
    bad("conj_id=1/1,actions=drop", 10, "does not support masks");
    bad("ct_nw_src=1.1.1.1,actions=drop", 1, "ct_state=+trk");
    bad(
        "tun_flags=+bogus,actions=drop",
        12,
        "unknown tun_flags flag",
    );
    bad("reg0=1,NXM_NX_REG0=2,actions=drop", 8, "more than once");
}

#[test]
fn output_like_actions() {
    norm("actions=output:tap2,output:\"patch-brAtlas-t\",1,in_port,NORMAL,FLOOD,ALL,LOCAL,tap2",
        "actions=output:tap2,output:\"patch-brAtlas-t\",output:\"patch-brAtlas-t\",IN_PORT,NORMAL,FLOOD,ALL,LOCAL,output:tap2");
    norm("actions=output: tap2", "actions=output:tap2");
    norm("actions=output:65534", "actions=LOCAL");
    norm("actions=output:99", "actions=output:99");
    norm("actions=CONTROLLER,controller:100,controller(reason=no_match,max_len=100,userdata=01.02),controller(reason=invalid_ttl,id=5,pause),controller(reason=action)",
        "actions=CONTROLLER:65535,CONTROLLER:100,controller(reason=no_match,max_len=100,userdata=01.02),controller(reason=invalid_ttl,id=5,pause),CONTROLLER:65535");
    norm("actions=output:NXM_NX_REG1[0..15],output:reg2,output(port=1,max_len=100)",
        "actions=output:NXM_NX_REG1[0..15],output:NXM_NX_REG2[],output(port=\"patch-brAtlas-t\",max_len=100)");
    norm("actions=resubmit(,8),resubmit(1,2),resubmit:3,resubmit(in_port,5),resubmit(tap2),resubmit(,9,ct),goto_table:4",
        "actions=resubmit(,8),resubmit(\"patch-brAtlas-t\",2),resubmit:3,resubmit(,5),resubmit:tap2,resubmit(,9,ct),resubmit(,4)");
    bad("actions=output:nope", 16, "unknown port `nope`");
    bad("actions=output", 15, "needs an argument");
    bad("actions=output:", 16, "needs a value");
    bad("actions=output:TABLE", 16, "cannot output");
    bad("actions=none", 9, "cannot output to port `none`");
    bad("actions=TABLE", 9, "cannot output to port `TABLE`");
    bad("actions=output:70000", 16, "not a valid port");
    bad("actions=nope", 9, "unknown action `nope`");
    bad(
        "actions=controller(reason=bogus)",
        27,
        "unknown controller reason",
    );
    bad("actions=resubmit", 17, "resubmit needs");
    // `resubmit:` with no port, or with in_port and no table, used to parse as "no port, no
    // table" and print as `resubmit(,)`, which does not parse (found by the flow_parser fuzz
    // target). Open vSwitch refuses both, and so does xvs.
    bad("actions=resubmit:", 18, "resubmit needs a port");
    bad("actions=resubmit:in_port", 18, "resubmit needs a port");
    bad("actions=resubmit(in_port,)", 18, "resubmit needs a port");
    bad("actions=resubmit(,,)", 20, "expected `ct`");
    bad("actions=resubmit(,300)", 19, "out of range");
    bad("actions=1,drop", 11, "`drop` must be the only action");
    bad("actions=1,,2", 11, "empty action");
    bad("actions=output(port=1,max_len=x)", 31, "invalid number");
    bad(
        "actions=goto_table:1,output:1",
        22,
        "goto_table must be the last action",
    );
    bad(
        "actions=write_metadata:1,output:1",
        26,
        "write_metadata must come after",
    );
}

#[test]
fn field_actions() {
    norm("actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,load:0x2712->OXM_OF_METADATA[],load:0->reg13[16..31],load:1->NXM_NX_XXREG0[..]",
        "actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9[],load:0x2712->OXM_OF_METADATA[],load:0->NXM_NX_REG13[16..31],load:0x1->NXM_NX_XXREG0[0..63],load:0->NXM_NX_XXREG0[64..127]");
    norm("actions=load:1->reg3[1],load:1->NXM_OF_ETH_SRC[],load:5->NXM_NX_TUN_METADATA0[0..15]",
        "actions=load:0x1->NXM_NX_REG3[1],load:0x1->NXM_OF_ETH_SRC[],load:0x5->NXM_NX_TUN_METADATA0[0..15]");
    norm("actions=set_field:0x2->reg14,set_field:5/0xff->reg3,set_field:00:11:22:33:44:55->eth_dst,set_field:0x5->metadata,set_field:1->tun_metadata0,set_field:5/0x0f0f->reg4",
        "actions=load:0x2->NXM_NX_REG14[],load:0x5->NXM_NX_REG3[0..7],mod_dl_dst:00:11:22:33:44:55,load:0x5->OXM_OF_METADATA[],set_field:0x1->tun_metadata0,load:0x5->NXM_NX_REG4[0..3],load:0->NXM_NX_REG4[8..11]");
    norm("ip,actions=set_field:1.2.3.4->ip_src,set_field:3->ip_dscp,set_field:5->nw_ttl,mod_nw_ecn:2,mod_nw_ttl:9",
        "ip actions=mod_nw_src:1.2.3.4,mod_nw_tos:12,load:0x5->NXM_NX_IP_TTL[],load:0x2->NXM_NX_IP_ECN[],load:0x9->NXM_NX_IP_TTL[]");
    norm(
        "udp,actions=set_field:5->udp_dst,move:NXM_OF_UDP_SRC[]->NXM_OF_UDP_DST[]",
        "udp actions=mod_tp_dst:5,move:NXM_OF_UDP_SRC[]->NXM_OF_UDP_DST[]",
    );
    norm(
        "actions=set_field:0x1234->vlan_tci",
        "actions=mod_vlan_vid:564,mod_vlan_pcp:0",
    );
    norm("actions=move:NXM_NX_REG13[0..15]->NXM_NX_REG14[16..31],move:reg1->reg2,move:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]",
        "actions=move:NXM_NX_REG13[0..15]->NXM_NX_REG14[16..31],move:NXM_NX_REG1[]->NXM_NX_REG2[],move:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]");
    bad(
        "actions=load:5->reg3[1]",
        14,
        "does not fit into the 1 bits",
    );
    bad(
        "actions=load:1->reg3[0..32]",
        22,
        "exceeds `reg3`, which is 32 bits wide",
    );
    bad("actions=load:1->reg3[5..2]", 22, "reversed");
    bad("actions=load:1->reg3[0..3", 21, "expected `]`");
    bad("actions=load:1->bogus[]", 17, "unknown field `bogus`");
    bad("actions=load:1->NXM_NX_CT_STATE[]", 17, "read-only");
    bad("actions=load:1->NXM_OF_ETH_TYPE[]", 17, "read-only");
    bad("actions=load:x->reg1", 14, "invalid load value");
    bad("actions=load:1", 14, "needs `->FIELD`");
    bad(
        "actions=load:1->NXM_NX_CT_MARK[]",
        17,
        "can only be written inside ct(commit,exec",
    );
    bad(
        "actions=set_field:1->ct_mark",
        22,
        "can only be written inside ct",
    );
    bad("actions=set_field:1->reg3[0..7]", 22, "takes a whole field");
    bad(
        "actions=set_field:1->tun_metadata9",
        22,
        "xvs maps tun_metadata0-7",
    );
    bad("actions=set_field:0x100000000->reg3", 19, "does not fit");
    bad("actions=set_field:1.2.3.4->ip_src", 28, "requires `ip`");
    bad(
        "actions=set_field:5->tcp_dst",
        22,
        "requires `tcp`, `udp` or `sctp`",
    );
    bad(
        "actions=move:reg1[0..7]->reg2[0..15]",
        14,
        "8 bits wide but the destination is 16",
    );
    bad("actions=move:reg1->NXM_NX_CT_STATE[]", 20, "read-only");
    bad("actions=move:NXM_OF_IP_SRC[]->reg1", 14, "requires `ip`");
}

#[test]
fn header_actions() {
    norm("ip,actions=mod_vlan_vid:2207,mod_vlan_pcp:3,strip_vlan,pop_vlan,push_vlan:0x8100,mod_dl_src:00:11:22:33:44:55,mod_dl_dst:00:11:22:33:44:56,mod_nw_src:1.2.3.4,mod_nw_dst:1.2.3.5,mod_nw_tos:16,dec_ttl,dec_ttl(1,2)",
        "ip actions=mod_vlan_vid:2207,mod_vlan_pcp:3,strip_vlan,strip_vlan,push_vlan:0x8100,mod_dl_src:00:11:22:33:44:55,mod_dl_dst:00:11:22:33:44:56,mod_nw_src:1.2.3.4,mod_nw_dst:1.2.3.5,mod_nw_tos:16,dec_ttl,dec_ttl(1,2)");
    norm(
        "tcp,actions=mod_tp_src:5,mod_tp_dst:6",
        "tcp actions=mod_tp_src:5,mod_tp_dst:6",
    );
    norm("actions=set_tunnel:0x5,set_tunnel64:0x6,set_tunnel:0x123456789,set_queue:3,pop_queue,exit",
        "actions=set_tunnel:0x5,set_tunnel64:0x6,set_tunnel64:0x123456789,set_queue:3,pop_queue,exit");
    bad("actions=mod_vlan_vid:4096", 22, "out of range");
    bad("actions=mod_vlan_pcp:8", 22, "out of range");
    bad("actions=push_vlan:0x0800", 19, "0x8100 or 0x88a8");
    bad(
        "actions=mod_dl_src:zz:00:00:00:00:00",
        20,
        "invalid Ethernet address",
    );
    bad("actions=mod_nw_src:1.2.3.400", 20, "invalid IPv4 address");
    bad("actions=mod_nw_tos:5", 20, "ECN bits");
    bad("ip,actions=set_field:5->nw_tos", 22, "ECN bits");
    norm("ip,actions=set_field:8->nw_tos", "ip actions=mod_nw_tos:8");
    bad("ip,actions=mod_nw_ecn:4", 23, "out of range");
    bad("actions=mod_nw_ecn:1", 9, "requires `ip` or `ipv6`");
    bad("actions=mod_nw_ttl:1", 9, "requires `ip` or `ipv6`");
    norm(
        "actions=mod_nw_src:1.2.3.4,mod_nw_tos:8,mod_tp_dst:5",
        "actions=mod_nw_src:1.2.3.4,mod_nw_tos:8,mod_tp_dst:5",
    );
    bad("actions=mod_tp_dst:65536", 20, "out of range");
    bad("actions=strip_vlan:1", 19, "takes no argument");
    bad("actions=set_tunnel:0x10000000000000000", 20, "out of range");
}

#[test]
fn ct_and_other_actions() {
    norm("ip,actions=ct(commit,zone=5,table=3,nat(src=1.1.1.1-1.1.1.5:100-200,random)),ct_clear,ct,ct(table=5,zone=reg3[0..15])",
        "ip actions=ct(commit,table=3,zone=5,nat(src=1.1.1.1-1.1.1.5:100-200,random)),ct_clear,ct(),ct(table=5,zone=NXM_NX_REG3[0..15])");
    norm("ipv6,actions=ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,hash)),ct(commit,nat(src=fe80::1))",
        "ipv6 actions=ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,hash)),ct(commit,nat(src=fe80::1))");
    norm("tcp,actions=ct(commit,force,zone=NXM_NX_REG12[0..15],exec(set_field:1->ct_mark,load:0x5->NXM_NX_CT_LABEL[0..31],set_field:0x1/0x1->ct_label),alg=ftp)",
        "tcp actions=ct(commit,force,zone=NXM_NX_REG12[0..15],exec(load:0x1->NXM_NX_CT_MARK[],load:0x5->NXM_NX_CT_LABEL[0..31],load:0x1->NXM_NX_CT_LABEL[0]),alg=ftp)");
    norm("ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.9,persistent)),ct(commit,nat(dst=1.1.1.1:80)),ct(nat)",
        "ip actions=ct(commit,nat(src=10.0.0.1-10.0.0.9,persistent)),ct(commit,nat(dst=1.1.1.1:80)),ct(nat)");
    norm(
        "actions=conjunction(100,2/2),conjunction(5,1/3)",
        "actions=conjunction(100,2/2),conjunction(5,1/3)",
    );
    norm("actions=clone(output:1,set_field:5->reg0),note:01.02.03,write_metadata:0x5/0xff",
        "actions=clone(output:\"patch-brAtlas-t\",load:0x5->NXM_NX_REG0[]),note:01.02.03.00.00.00,write_metadata:0x5/0xff");
    norm("actions=note:0102030405060708,check_pkt_larger(1500)->NXM_NX_REG0[0],write_metadata:0x7",
        "actions=note:01.02.03.04.05.06.07.08.00.00.00.00.00.00,check_pkt_larger(1500)->NXM_NX_REG0[0],write_metadata:0x7");
    norm(
        "actions=learn(table=10,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])",
        "actions=learn(table=10,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])",
    );
    bad("actions=ct(bogus)", 12, "unknown ct argument");
    bad("actions=ct(zone=70000)", 17, "out of range");
    bad("actions=ct(zone=reg3[0..7])", 17, "16 bits wide");
    bad("actions=ct(table=255)", 18, "out of range");
    bad("actions=ct(alg=http)", 16, "unknown ct alg");
    bad("actions=ct(force)", 12, "requires commit");
    bad("actions=ct(nat(src=1.1.1.1))", 12, "requires commit");
    bad(
        "actions=ct(commit,exec(output:1))",
        24,
        "only allows set_field or load",
    );
    bad(
        "actions=ct(commit,exec(set_field:1->reg0))",
        37,
        "may only write ct_mark or ct_label",
    );
    bad(
        "actions=ct(exec(set_field:1->ct_mark))",
        12,
        "requires commit",
    );
    bad(
        "actions=ct(commit,nat(src=1.1.1.5-1.1.1.1))",
        27,
        "reversed",
    );
    bad("actions=ct(commit,nat(src=1.1.1.1:90-80))", 35, "reversed");
    bad(
        "actions=ct(commit,nat(src=1.1.1.1,random,hash))",
        23,
        "random or hash",
    );
    bad(
        "actions=ct(commit,nat(src=1.1.1.x))",
        27,
        "invalid nat address",
    );
    bad("actions=ct(commit", 11, "unbalanced");
    bad("actions=conjunction(1,3/2)", 23, "outside 1..=2");
    bad("actions=conjunction(1,1/1)", 25, "at least 2");
    bad("actions=conjunction(1,1/2),output:1", 28, "cannot be mixed");
    bad("actions=conjunction(1)", 21, "needs `(ID,K/N)`");
    bad("actions=note:123", 14, "hex bytes");
    bad(
        "actions=check_pkt_larger(1500)->reg0[0..1]",
        33,
        "writes one bit",
    );
    bad("actions=check_pkt_larger(1500)", 31, "needs `->FIELD[bit]`");
    bad("actions=clone(bogus)", 15, "unknown action");
}

#[test]
fn unsupported_actions_are_named_as_such() {
    for a in [
        "bundle(eth_src,0,hrw,ofport,members:1)",
        "multipath(eth_src,50,modulo_n,1,0,reg0[])",
        "sample(probability=1)",
        "enqueue:1:2",
        "fin_timeout(idle_timeout=5)",
        "encap(nsh)",
        "decap",
        "meter:1",
        "group:1",
    ] {
        let e = parse_flow(&format!("actions={a}"), &ctx()).unwrap_err();
        assert!(e.message.contains("is not supported by xvs"), "{a}: {e}");
        assert_eq!(e.col, 9);
    }
}

#[test]
fn whole_file_reports_every_bad_line() {
    let text = "# header\n\npriority=1,actions=drop\nbogus=1,actions=drop\n  \nip,tp_dst=1,actions=drop\nactions=output:nowhere\n";
    let errs = parse_flows(text, &ctx()).unwrap_err();
    let got: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(got, vec![(4, 1), (6, 4), (7, 16)]);
    assert_eq!(errs[0].to_string(), "4:1: unknown field `bogus`");
    assert_eq!(parse_flows("# only\n\n", &ctx()).unwrap().len(), 0);
    // Columns count characters, not bytes.
    let e = parse_flow("ip,nw_src=ä,actions=drop", &ctx()).unwrap_err();
    assert_eq!(e.col, 11);
    let e = parse_flows("ip,dl_src=é,in_port=nope,actions=drop", &ctx()).unwrap_err();
    assert_eq!(e[0].col, 11);
    // A multi-byte character right after an action name (found by fuzzing).
    let e = parse_flow("actions=c1loneސutput:1", &ctx()).unwrap_err();
    assert_eq!(e.col, 15);
    assert!(e.message.contains("unexpected `ސ`"), "{}", e.message);
}

#[test]
fn truncated_lines() {
    bad("ip,nw_src=", 11, "needs a value");
    // An empty action list is `drop`, as in Open vSwitch.
    assert!(parse_flow("tcp,tp_dst=80,actions=", &ctx())
        .unwrap()
        .actions
        .is_empty());
    bad("actions=resubmit(,8", 17, "unbalanced");
    bad("actions=load:1->reg1[", 21, "expected `]`");
    bad("actions=ct(commit,nat(src=", 11, "unbalanced");
    bad("in_port=\"tap2,actions=drop", 9, "");
}

#[test]
fn seed_lines_parse_with_names() {
    let seed = "cookie=0xded6f111, duration=546957.422s, table=0, n_packets=1503868, n_bytes=133529118, priority=100,in_port=tap2 actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,load:0x2712->OXM_OF_METADATA,load:0x2->NXM_NX_REG14,load:0->NXM_NX_REG13[16..31],resubmit(,8)";
    norm(seed, "cookie=0xded6f111, priority=100,in_port=tap2 actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9[],load:0x2712->OXM_OF_METADATA[],load:0x2->NXM_NX_REG14[],load:0->NXM_NX_REG13[16..31],resubmit(,8)");
    let f = parse_flow(seed, &ctx()).unwrap();
    assert_eq!(f.matches.value.in_port(), 4);
    assert_eq!(
        f.actions[0],
        Action::Load {
            value: 0x10,
            dst: SubField {
                field: Field::Reg(13),
                ofs: 0,
                n_bits: 16
            }
        }
    );
    norm("cookie=0x8505267a, duration=865834.403s, table=65, n_packets=790622, n_bytes=80049428, idle_age=86, hard_age=65534, priority=100,reg15=0x1,metadata=0x2710 actions=mod_vlan_vid:2207,output:\"patch-brAtlas-t\",strip_vlan",
        "cookie=0x8505267a, table=65, priority=100,reg15=0x1,metadata=0x2710 actions=mod_vlan_vid:2207,output:\"patch-brAtlas-t\",strip_vlan");
    // Without names, ports print as numbers.
    let s = format_flow(&f, &ctx().ports, FormatOptions { names: false });
    assert!(s.contains("in_port=4 "), "{s}");
}

#[test]
fn stats_format() {
    use crate::flow::format::{format_flow_stats, FlowStats};
    let f = parse_flow("table=45,priority=153,ip actions=drop", &ctx()).unwrap();
    let st = FlowStats {
        duration_secs: 1.2345,
        n_packets: 7,
        n_bytes: 8,
        idle_age: Some(3),
        hard_age: None,
    };
    assert_eq!(format_flow_stats(&f, &st, &ctx().ports, FormatOptions::default()),
        "cookie=0x0, duration=1.234s, table=45, n_packets=7, n_bytes=8, idle_age=3, priority=153,ip actions=drop");
}

#[test]
fn spec_round_trip_is_exact_for_canonical_text() {
    // Printed text parses back to the very same FlowSpec (not just the same text).
    let c = ctx();
    for line in [
        "cookie=0xe070fd17, table=45, priority=153,ct_state=-rpl+trk,ip,reg15=0x2,metadata=0x3,nw_src=192.168.10.0/24 actions=ct(commit,table=46,zone=NXM_NX_REG12[0..15],nat(src=172.22.7.27))",
        "priority=180,conj_id=100,in_port=\"patch-brAtlas-t\",dl_vlan=2207 actions=strip_vlan,load:0x1->NXM_NX_REG13[0..15],mod_dl_src:e0:19:95:ad:56:d0,resubmit(,8)",
        "tcp,tp_src=80,tp_dst=0x100/0xff00,tcp_flags=+syn-ack actions=mod_tp_src:5,output:tap2",
        "ipv6,ipv6_src=2001:db8::/32 actions=ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,hash))",
    ] {
        let f = parse_flow(line, &c).unwrap();
        assert_eq!(fmt(&f), line);
        assert_eq!(parse_flow(&fmt(&f), &c).unwrap(), f);
    }
}
